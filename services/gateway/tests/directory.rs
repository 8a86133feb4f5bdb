//! The directory against real databases: SQLite in a temporary directory
//! always, PostgreSQL when `SWITCHBOARD_TEST_POSTGRES_URL` names a server
//! (each test gets a fresh database that is dropped afterwards). Routing
//! decisions that rest on directory data (the admin recording policy) are
//! checked here too, through the real router.

mod support_db;

use support_db::TestDb;
use switchboard_gateway::directory::{
    Device, Directory, DirectoryError, Member, NewDevice, NewGroup, NewUser, RecordingPolicies, User,
};
use switchboard_store::{sqlx, Database};

/// Runs one scenario on SQLite and, when configured, PostgreSQL. Each
/// scenario gets the directory and the database under it, for the checks
/// that go around the directory to the schema itself.
macro_rules! on_both_databases {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    let db = super::TestDb::sqlite().await;
                    super::$name(super::Directory::new(db.database().clone()), db.database()).await;
                    db.finish().await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    let Some(db) = super::TestDb::postgres(stringify!($name)).await else { return };
                    super::$name(super::Directory::new(db.database().clone()), db.database()).await;
                    db.finish().await;
                }
            )*
        }
    };
}

on_both_databases!(
    users_are_created_validated_and_unique,
    devices_belong_to_users,
    numbers_route_to_their_owner,
    groups_are_created_listed_and_deleted,
    group_members_ring_in_order,
    memberships_go_with_their_user_or_group,
    group_numbers_ring_every_member,
    extensions_route_to_users_and_groups,
    extensions_are_unique_across_users_and_groups,
    there_is_at_most_one_main_line,
    a_number_has_one_owner,
    caller_ids_are_own_group_and_main_line_numbers,
    devices_know_their_owner,
    recording_policies_are_set_listed_and_cleared,
    recording_policies_mark_the_routes_they_cover,
    recording_policies_go_with_their_number_or_group,
    the_router_plans_admin_recording,
);

fn ada() -> NewUser {
    NewUser {
        name: "  Ada Lovelace ".into(),
        extension: Some("101".into()),
        salesforce_user_id: Some("005Dn000001AbCdEFG".into()),
        ..Default::default()
    }
}

async fn users_are_created_validated_and_unique(dir: Directory, _db: &Database) {
    let ada = dir.create_user(ada()).await.unwrap();
    assert_eq!(ada.name, "Ada Lovelace");
    assert_eq!(ada.extension.as_deref(), Some("101"));
    assert_eq!(uuid::Uuid::parse_str(&ada.id).unwrap().get_version_num(), 7);
    assert!(ada.created_at > 1_600_000_000_000, "created_at is epoch ms: {}", ada.created_at);

    let same_ext = NewUser { name: "Bob".into(), extension: Some("101".into()), salesforce_user_id: None, ..Default::default() };
    let err = dir.create_user(same_ext).await.unwrap_err();
    assert!(matches!(&err, DirectoryError::Conflict(m) if m.contains("extension 101")), "{err}");

    let same_sf = NewUser { name: "Bob".into(), extension: None, salesforce_user_id: Some("005Dn000001AbCdEFG".into()), ..Default::default() };
    let err = dir.create_user(same_sf).await.unwrap_err();
    assert!(matches!(&err, DirectoryError::Conflict(m) if m.contains(&ada.id)), "{err}");

    let bad_sf = NewUser { name: "Bob".into(), extension: None, salesforce_user_id: Some("001Dn000001AbCd".into()), ..Default::default() };
    let err = dir.create_user(bad_sf).await.unwrap_err();
    assert!(matches!(err, DirectoryError::Invalid { field: "salesforce_user_id", .. }), "{err}");

    let err = dir.create_user(NewUser { name: " ".into(), ..Default::default() }).await.unwrap_err();
    assert!(matches!(err, DirectoryError::Invalid { field: "name", .. }), "{err}");

    // Two users without extension or Salesforce link do not collide on NULL.
    let bob = dir.create_user(NewUser { name: "Bob".into(), ..Default::default() }).await.unwrap();
    let eve = dir.create_user(NewUser { name: "Eve".into(), ..Default::default() }).await.unwrap();

    let listed = dir.list_users().await.unwrap();
    assert_eq!(listed, vec![ada.clone(), bob.clone(), eve]);
    assert_eq!(dir.get_user(&ada.id).await.unwrap(), ada);

    dir.delete_user(&bob.id).await.unwrap();
    let err = dir.get_user(&bob.id).await.unwrap_err();
    assert!(matches!(err, DirectoryError::NotFound { kind: "user", .. }), "{err}");
    let err = dir.delete_user(&bob.id).await.unwrap_err();
    assert!(matches!(err, DirectoryError::NotFound { kind: "user", .. }), "{err}");
}

async fn devices_belong_to_users(dir: Directory, _db: &Database) {
    let ada = dir.create_user(ada()).await.unwrap();
    let bob = dir.create_user(NewUser { name: "Bob".into(), ..Default::default() }).await.unwrap();

    let desk = dir
        .create_device(NewDevice { user_id: ada.id.clone(), name: "desk".into(), contact_uri: "sip:ada@127.0.0.1:5090".into() })
        .await
        .unwrap();
    let mobile = dir
        .create_device(NewDevice { user_id: ada.id.clone(), name: "mobile".into(), contact_uri: "sips:ada@[::1]:5091".into() })
        .await
        .unwrap();
    let bobs = dir
        .create_device(NewDevice { user_id: bob.id.clone(), name: "desk".into(), contact_uri: "sip:bob@127.0.0.1".into() })
        .await
        .unwrap();

    let err = dir
        .create_device(NewDevice { user_id: "nobody".into(), name: "x".into(), contact_uri: "sip:x@127.0.0.1".into() })
        .await
        .unwrap_err();
    assert!(matches!(&err, DirectoryError::NotFound { kind: "user", id } if id == "nobody"), "{err}");
    let err = dir
        .create_device(NewDevice { user_id: ada.id.clone(), name: "x".into(), contact_uri: "http://127.0.0.1".into() })
        .await
        .unwrap_err();
    assert!(matches!(err, DirectoryError::Invalid { field: "contact_uri", .. }), "{err}");

    assert_eq!(dir.list_devices(Some(&ada.id)).await.unwrap(), vec![desk.clone(), mobile.clone()]);
    assert_eq!(dir.list_devices(None).await.unwrap(), vec![desk.clone(), mobile.clone(), bobs.clone()]);
    let err = dir.list_devices(Some("nobody")).await.unwrap_err();
    assert!(matches!(err, DirectoryError::NotFound { kind: "user", .. }), "{err}");

    dir.delete_device(&desk.id).await.unwrap();
    assert_eq!(dir.list_devices(Some(&ada.id)).await.unwrap(), vec![mobile]);
    let err = dir.delete_device(&desk.id).await.unwrap_err();
    assert!(matches!(err, DirectoryError::NotFound { kind: "device", .. }), "{err}");

    // Deleting a user takes its devices with it.
    dir.delete_user(&ada.id).await.unwrap();
    assert_eq!(dir.list_devices(None).await.unwrap(), vec![bobs]);
}

async fn numbers_route_to_their_owner(dir: Directory, _db: &Database) {
    let ada = dir.create_user(ada()).await.unwrap();
    let bob = dir.create_user(NewUser { name: "Bob".into(), ..Default::default() }).await.unwrap();
    let desk = dir
        .create_device(NewDevice { user_id: ada.id.clone(), name: "desk".into(), contact_uri: "sip:ada@127.0.0.1:5090".into() })
        .await
        .unwrap();

    let assigned = dir.assign_number("+1 (415) 555-0100", &ada.id).await.unwrap();
    assert_eq!(assigned.number, "+14155550100");
    assert_eq!(assigned.user_id.as_deref(), Some(ada.id.as_str()));
    assert_eq!((assigned.group_id.as_deref(), assigned.main_line), (None, false));

    // Assigning again to the same owner is idempotent and keeps the record.
    let again = dir.assign_number("14155550100", &ada.id).await.unwrap();
    assert_eq!(again, assigned);

    let err = dir.assign_number("001.415.555.0100", &bob.id).await.unwrap_err();
    assert!(matches!(&err, DirectoryError::Conflict(m) if m.contains("+14155550100") && m.contains(&ada.id)), "{err}");
    let err = dir.assign_number("+14155550199", "nobody").await.unwrap_err();
    assert!(matches!(err, DirectoryError::NotFound { kind: "user", .. }), "{err}");
    let err = dir.assign_number("call-me", &ada.id).await.unwrap_err();
    assert!(matches!(err, DirectoryError::Invalid { field: "number", .. }), "{err}");

    let bobs = dir.assign_number("0044 20 7946 0000", &bob.id).await.unwrap();
    assert_eq!(bobs.number, "+442079460000");
    assert_eq!(dir.list_numbers().await.unwrap(), vec![assigned.clone(), bobs.clone()]);

    // The dialled user part may be spelled any accepted way.
    for dialled in ["+14155550100", "0014155550100", "14155550100", "+1-415-555-0100"] {
        let route = dir.route_number(dialled).await.unwrap().unwrap_or_else(|| panic!("{dialled} routes"));
        assert_eq!(route.number, "+14155550100");
        assert_eq!(route.members, vec![Member { user: ada.clone(), devices: vec![desk.clone()] }]);
        assert_eq!((route.group, route.main_line), (None, false));
    }
    let route = dir.route_number("+442079460000").await.unwrap().unwrap();
    assert_eq!(route.members, vec![Member { user: bob.clone(), devices: vec![] }]);
    assert_eq!(dir.route_number("+14155550101").await.unwrap(), None);
    assert_eq!(dir.route_number("alice").await.unwrap(), None);

    // A deleted owner leaves the number provisioned but unrouted, and it can
    // then be given to someone else.
    dir.delete_user(&ada.id).await.unwrap();
    assert_eq!(dir.route_number("+14155550100").await.unwrap(), None);
    let orphan = dir.list_numbers().await.unwrap().into_iter().find(|n| n.number == "+14155550100").unwrap();
    assert_eq!(orphan.user_id, None);
    let taken_over = dir.assign_number("+14155550100", &bob.id).await.unwrap();
    assert_eq!(taken_over.user_id.as_deref(), Some(bob.id.as_str()));
    assert_eq!(dir.route_number("+14155550100").await.unwrap().unwrap().members[0].user.id, bob.id);

    dir.delete_number("+1 415 555 0100").await.unwrap();
    assert_eq!(dir.list_numbers().await.unwrap(), vec![bobs]);
    let err = dir.delete_number("+14155550100").await.unwrap_err();
    assert!(matches!(err, DirectoryError::NotFound { kind: "number", .. }), "{err}");
}

async fn user(dir: &Directory, name: &str) -> User {
    dir.create_user(NewUser { name: name.into(), ..Default::default() }).await.unwrap()
}

async fn device(dir: &Directory, user: &User, name: &str) -> Device {
    let contact_uri = format!("sip:{}-{name}@127.0.0.1:5090", user.name.to_lowercase());
    dir.create_device(NewDevice { user_id: user.id.clone(), name: name.into(), contact_uri }).await.unwrap()
}

fn group(name: &str, extension: Option<&str>) -> NewGroup {
    NewGroup { name: name.into(), extension: extension.map(str::to_owned) }
}

async fn groups_are_created_listed_and_deleted(dir: Directory, _db: &Database) {
    let sales = dir.create_group(group("  Sales ", Some(" 200 "))).await.unwrap();
    assert_eq!((sales.name.as_str(), sales.extension.as_deref()), ("Sales", Some("200")));
    assert_eq!(uuid::Uuid::parse_str(&sales.id).unwrap().get_version_num(), 7);
    assert!(sales.created_at > 1_600_000_000_000, "created_at is epoch ms: {}", sales.created_at);
    let support = dir.create_group(group("Support", None)).await.unwrap();
    let night = dir.create_group(group("Night shift", None)).await.unwrap();

    let err = dir.create_group(group(" ", None)).await.unwrap_err();
    assert!(matches!(err, DirectoryError::Invalid { field: "name", .. }), "{err}");
    let err = dir.create_group(group("Billing", Some("2OO"))).await.unwrap_err();
    assert!(matches!(err, DirectoryError::Invalid { field: "extension", .. }), "{err}");
    let err = dir.create_group(group("Billing", Some("200"))).await.unwrap_err();
    assert!(matches!(&err, DirectoryError::Conflict(m) if m.contains("extension 200") && m.contains(&sales.id)), "{err}");

    assert_eq!(dir.list_groups().await.unwrap(), vec![sales.clone(), support.clone(), night.clone()]);
    assert_eq!(dir.get_group(&support.id).await.unwrap(), support);

    dir.delete_group(&support.id).await.unwrap();
    assert_eq!(dir.list_groups().await.unwrap(), vec![sales.clone(), night]);
    let err = dir.get_group(&support.id).await.unwrap_err();
    assert!(matches!(&err, DirectoryError::NotFound { kind: "group", id } if *id == support.id), "{err}");
    let err = dir.delete_group(&support.id).await.unwrap_err();
    assert!(matches!(err, DirectoryError::NotFound { kind: "group", .. }), "{err}");

    // A deleted group's extension is free again, for a group or a user.
    dir.delete_group(&sales.id).await.unwrap();
    let reception = dir.create_user(NewUser { name: "Reception".into(), extension: Some("200".into()), ..Default::default() }).await;
    assert_eq!(reception.unwrap().extension.as_deref(), Some("200"));
}

async fn group_members_ring_in_order(dir: Directory, _db: &Database) {
    let sales = dir.create_group(group("Sales", None)).await.unwrap();
    let other = dir.create_group(group("Other", None)).await.unwrap();
    let (ada, bob, eve) = (user(&dir, "Ada").await, user(&dir, "Bob").await, user(&dir, "Eve").await);
    assert_eq!(dir.group_members(&sales.id).await.unwrap(), vec![]);

    // Ring order is the order of adding, not of the users' creation.
    for u in [&eve, &ada, &bob] {
        dir.add_group_member(&sales.id, &u.id).await.unwrap();
    }
    assert_eq!(dir.group_members(&sales.id).await.unwrap(), vec![eve.clone(), ada.clone(), bob.clone()]);
    // Adding a member again changes nothing.
    dir.add_group_member(&sales.id, &eve.id).await.unwrap();
    assert_eq!(dir.group_members(&sales.id).await.unwrap(), vec![eve.clone(), ada.clone(), bob.clone()]);
    // Groups are independent.
    dir.add_group_member(&other.id, &bob.id).await.unwrap();
    assert_eq!(dir.group_members(&other.id).await.unwrap(), vec![bob.clone()]);

    // Removed from the middle, the others keep their order; added back, last.
    dir.remove_group_member(&sales.id, &ada.id).await.unwrap();
    assert_eq!(dir.group_members(&sales.id).await.unwrap(), vec![eve.clone(), bob.clone()]);
    dir.add_group_member(&sales.id, &ada.id).await.unwrap();
    assert_eq!(dir.group_members(&sales.id).await.unwrap(), vec![eve.clone(), bob.clone(), ada.clone()]);

    let err = dir.add_group_member("nogroup", &ada.id).await.unwrap_err();
    assert!(matches!(&err, DirectoryError::NotFound { kind: "group", id } if id == "nogroup"), "{err}");
    let err = dir.add_group_member(&sales.id, "nobody").await.unwrap_err();
    assert!(matches!(&err, DirectoryError::NotFound { kind: "user", id } if id == "nobody"), "{err}");
    let err = dir.remove_group_member(&other.id, &ada.id).await.unwrap_err();
    assert!(matches!(&err, DirectoryError::NotFound { kind: "group member", id } if *id == ada.id), "{err}");
    let err = dir.remove_group_member("nogroup", &ada.id).await.unwrap_err();
    assert!(matches!(err, DirectoryError::NotFound { kind: "group", .. }), "{err}");
    let err = dir.group_members("nogroup").await.unwrap_err();
    assert!(matches!(err, DirectoryError::NotFound { kind: "group", .. }), "{err}");
}

async fn memberships_go_with_their_user_or_group(dir: Directory, db: &Database) {
    let sales = dir.create_group(group("Sales", None)).await.unwrap();
    let support = dir.create_group(group("Support", None)).await.unwrap();
    let (ada, bob) = (user(&dir, "Ada").await, user(&dir, "Bob").await);
    for g in [&sales, &support] {
        for u in [&ada, &bob] {
            dir.add_group_member(&g.id, &u.id).await.unwrap();
        }
    }
    dir.assign_number_to_group("+14155550200", &sales.id).await.unwrap();

    // Through the directory: a deleted user leaves every group.
    dir.delete_user(&ada.id).await.unwrap();
    assert_eq!(dir.group_members(&sales.id).await.unwrap(), vec![bob.clone()]);
    assert_eq!(dir.group_members(&support.id).await.unwrap(), vec![bob.clone()]);
    // A deleted group takes its memberships, not its members or its number.
    dir.delete_group(&sales.id).await.unwrap();
    assert_eq!(dir.get_user(&bob.id).await.unwrap(), bob);
    let number = dir.list_numbers().await.unwrap().pop().unwrap();
    assert_eq!((number.number.as_str(), number.user_id, number.group_id), ("+14155550200", None, None));
    assert_eq!(dir.route_number("+14155550200").await.unwrap(), None);

    // The schema holds the same rules for writers that bypass the directory.
    let members = |group_id: String| async move {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM group_members WHERE group_id = $1")
            .bind(group_id)
            .fetch_one(db.pool())
            .await
            .unwrap();
        n
    };
    let eve = user(&dir, "Eve").await;
    dir.add_group_member(&support.id, &eve.id).await.unwrap();
    dir.assign_number_to_group("+14155550300", &support.id).await.unwrap();
    assert_eq!(members(support.id.clone()).await, 2);
    sqlx::query("DELETE FROM users WHERE id = $1").bind(&bob.id).execute(db.pool()).await.unwrap();
    assert_eq!(dir.group_members(&support.id).await.unwrap(), vec![eve]);
    sqlx::query("DELETE FROM groups WHERE id = $1").bind(&support.id).execute(db.pool()).await.unwrap();
    assert_eq!(members(support.id.clone()).await, 0);
    let orphan = dir.list_numbers().await.unwrap().into_iter().find(|n| n.number == "+14155550300").unwrap();
    assert_eq!(orphan.group_id, None);
}

async fn group_numbers_ring_every_member(dir: Directory, _db: &Database) {
    let sales = dir.create_group(group("Sales", Some("200"))).await.unwrap();
    let (ada, bob, eve) = (user(&dir, "Ada").await, user(&dir, "Bob").await, user(&dir, "Eve").await);
    let ada_desk = device(&dir, &ada, "desk").await;
    let ada_mobile = device(&dir, &ada, "mobile").await;
    let eve_desk = device(&dir, &eve, "desk").await;
    let _bob_desk = device(&dir, &bob, "desk").await;

    let number = dir.assign_number_to_group("+1 415 555 0200", &sales.id).await.unwrap();
    assert_eq!(number.number, "+14155550200");
    assert_eq!((number.user_id.as_deref(), number.group_id.as_deref()), (None, Some(sales.id.as_str())));
    // Idempotent for the same group.
    assert_eq!(dir.assign_number_to_group("14155550200", &sales.id).await.unwrap(), number);

    // A group without members rings nobody: no route.
    assert_eq!(dir.route_number("+14155550200").await.unwrap(), None);

    dir.add_group_member(&sales.id, &eve.id).await.unwrap();
    dir.add_group_member(&sales.id, &ada.id).await.unwrap();
    let route = dir.route_number("0014155550200").await.unwrap().expect("the group's number routes");
    assert_eq!(route.number, "+14155550200");
    assert_eq!(route.group, Some(sales.clone()));
    assert!(!route.main_line);
    // Every member with every device, in ring order; Bob is no member.
    assert_eq!(
        route.members,
        vec![
            Member { user: eve.clone(), devices: vec![eve_desk] },
            Member { user: ada.clone(), devices: vec![ada_desk, ada_mobile] },
        ]
    );

    // The route says when the number is the main line.
    dir.set_main_line("+14155550200", true).await.unwrap();
    assert!(dir.route_number("+14155550200").await.unwrap().unwrap().main_line);

    // A group's number is not a user's to take, nor another group's.
    let err = dir.assign_number("+14155550200", &bob.id).await.unwrap_err();
    assert!(matches!(&err, DirectoryError::Conflict(m) if m.contains(&format!("group {}", sales.id))), "{err}");
    let support = dir.create_group(group("Support", None)).await.unwrap();
    let err = dir.assign_number_to_group("+14155550200", &support.id).await.unwrap_err();
    assert!(matches!(&err, DirectoryError::Conflict(m) if m.contains(&sales.id)), "{err}");
    // Nor the other way round.
    dir.assign_number("+14155550100", &bob.id).await.unwrap();
    let err = dir.assign_number_to_group("+14155550100", &support.id).await.unwrap_err();
    assert!(matches!(&err, DirectoryError::Conflict(m) if m.contains(&format!("user {}", bob.id))), "{err}");

    let err = dir.assign_number_to_group("+14155550299", "nogroup").await.unwrap_err();
    assert!(matches!(&err, DirectoryError::NotFound { kind: "group", id } if id == "nogroup"), "{err}");
    let err = dir.assign_number_to_group("sales", &support.id).await.unwrap_err();
    assert!(matches!(err, DirectoryError::Invalid { field: "number", .. }), "{err}");

    // Once the group is gone the number is unassigned, keeps being the main
    // line, and can be given to someone else.
    dir.delete_group(&sales.id).await.unwrap();
    assert_eq!(dir.route_number("+14155550200").await.unwrap(), None);
    let taken = dir.assign_number("+14155550200", &bob.id).await.unwrap();
    assert_eq!((taken.user_id.as_deref(), taken.group_id, taken.main_line), (Some(bob.id.as_str()), None, true));
    let route = dir.route_number("+14155550200").await.unwrap().unwrap();
    assert_eq!((route.group, route.members.len(), route.members[0].user.id.as_str()), (None, 1, bob.id.as_str()));
}

async fn extensions_route_to_users_and_groups(dir: Directory, _db: &Database) {
    let ada = dir.create_user(NewUser { name: "Ada".into(), extension: Some("101".into()), ..Default::default() }).await.unwrap();
    let bob = user(&dir, "Bob").await;
    let ada_desk = device(&dir, &ada, "desk").await;
    let bob_desk = device(&dir, &bob, "desk").await;
    let sales = dir.create_group(group("Sales", Some("200"))).await.unwrap();
    dir.add_group_member(&sales.id, &bob.id).await.unwrap();
    dir.add_group_member(&sales.id, &ada.id).await.unwrap();
    // A number on the same digits does not get in the way of extensions.
    dir.assign_number("+101", &bob.id).await.unwrap();

    let route = dir.route_extension(" 101 ").await.unwrap().expect("Ada's extension routes");
    assert_eq!(route.number, "101");
    assert_eq!((route.group, route.main_line), (None, false));
    assert_eq!(route.members, vec![Member { user: ada.clone(), devices: vec![ada_desk.clone()] }]);

    let route = dir.route_extension("200").await.unwrap().expect("the group's extension routes");
    assert_eq!(route.number, "200");
    assert_eq!(route.group, Some(sales.clone()));
    assert_eq!(
        route.members,
        vec![Member { user: bob.clone(), devices: vec![bob_desk] }, Member { user: ada.clone(), devices: vec![ada_desk] }]
    );

    for nothing in ["102", "", "+101", "alice", "2OO"] {
        assert_eq!(dir.route_extension(nothing).await.unwrap(), None, "{nothing:?}");
    }
    // A group without members routes nowhere.
    let empty = dir.create_group(group("Empty", Some("300"))).await.unwrap();
    assert_eq!(dir.route_extension("300").await.unwrap(), None);
    dir.delete_group(&empty.id).await.unwrap();
    assert_eq!(dir.route_extension("300").await.unwrap(), None);
}

async fn extensions_are_unique_across_users_and_groups(dir: Directory, _db: &Database) {
    let ada = dir.create_user(NewUser { name: "Ada".into(), extension: Some("101".into()), ..Default::default() }).await.unwrap();
    let sales = dir.create_group(group("Sales", Some("200"))).await.unwrap();

    let err = dir.create_group(group("Support", Some("101"))).await.unwrap_err();
    assert!(
        matches!(&err, DirectoryError::Conflict(m) if m.contains("extension 101 is already taken") && m.contains(&format!("user {}", ada.id))),
        "{err}"
    );
    let err = dir
        .create_user(NewUser { name: "Bob".into(), extension: Some("200".into()), ..Default::default() })
        .await
        .unwrap_err();
    assert!(
        matches!(&err, DirectoryError::Conflict(m) if m.contains("extension 200 is already taken") && m.contains(&format!("group {}", sales.id))),
        "{err}"
    );
    // Nothing was written by the refused requests.
    assert_eq!(dir.list_users().await.unwrap(), vec![ada]);
    assert_eq!(dir.list_groups().await.unwrap(), vec![sales]);
}

async fn there_is_at_most_one_main_line(dir: Directory, db: &Database) {
    let ada = user(&dir, "Ada").await;
    let sales = dir.create_group(group("Sales", None)).await.unwrap();
    dir.assign_number("+14155550100", &ada.id).await.unwrap();
    dir.assign_number_to_group("+14155550200", &sales.id).await.unwrap();
    let main_lines = || async { dir.list_numbers().await.unwrap().into_iter().filter(|n| n.main_line).map(|n| n.number).collect::<Vec<_>>() };
    assert_eq!(main_lines().await, Vec::<String>::new());

    let set = dir.set_main_line("+1 415 555 0200", true).await.unwrap();
    assert_eq!((set.number.as_str(), set.main_line, set.group_id.as_deref()), ("+14155550200", true, Some(sales.id.as_str())));
    assert_eq!(main_lines().await, vec!["+14155550200"]);
    // Idempotent.
    dir.set_main_line("+14155550200", true).await.unwrap();
    assert_eq!(main_lines().await, vec!["+14155550200"]);
    // Making another number the main line moves it there.
    dir.set_main_line("+14155550100", true).await.unwrap();
    assert_eq!(main_lines().await, vec!["+14155550100"]);
    // Assigning the number again keeps the flag.
    assert!(dir.assign_number("+14155550100", &ada.id).await.unwrap().main_line);

    let unset = dir.set_main_line("+14155550100", false).await.unwrap();
    assert!(!unset.main_line);
    assert_eq!(main_lines().await, Vec::<String>::new());
    // Clearing a number that is not the main line is harmless.
    dir.set_main_line("+14155550200", false).await.unwrap();

    let err = dir.set_main_line("+14155550999", true).await.unwrap_err();
    assert!(matches!(&err, DirectoryError::NotFound { kind: "number", id } if id == "+14155550999"), "{err}");
    let err = dir.set_main_line("main", true).await.unwrap_err();
    assert!(matches!(err, DirectoryError::Invalid { field: "number", .. }), "{err}");
    assert_eq!(main_lines().await, Vec::<String>::new());

    // An unowned number may be the main line too.
    sqlx::query("INSERT INTO numbers (number, created_at) VALUES ('+14155550300', 1)").execute(db.pool()).await.unwrap();
    dir.set_main_line("+14155550300", true).await.unwrap();
    // The schema refuses a second main line written around the directory,
    // and any flag but 0 or 1.
    let second = sqlx::query("UPDATE numbers SET main_line = 1 WHERE number = '+14155550100'").execute(db.pool()).await;
    assert!(matches!(&second, Err(sqlx::Error::Database(d)) if d.is_unique_violation()), "{second:?}");
    let odd = sqlx::query("UPDATE numbers SET main_line = 2 WHERE number = '+14155550100'").execute(db.pool()).await;
    assert!(matches!(&odd, Err(sqlx::Error::Database(d)) if d.is_check_violation()), "{odd:?}");
    assert_eq!(main_lines().await, vec!["+14155550300"]);
}

async fn a_number_has_one_owner(dir: Directory, db: &Database) {
    let ada = user(&dir, "Ada").await;
    let sales = dir.create_group(group("Sales", None)).await.unwrap();
    dir.assign_number("+14155550100", &ada.id).await.unwrap();
    // The schema refuses a second owner written around the directory.
    let both = sqlx::query("UPDATE numbers SET group_id = $1 WHERE number = '+14155550100'")
        .bind(&sales.id)
        .execute(db.pool())
        .await;
    assert!(matches!(&both, Err(sqlx::Error::Database(d)) if d.is_check_violation()), "{both:?}");
    let number = dir.list_numbers().await.unwrap().pop().unwrap();
    assert_eq!((number.user_id.as_deref(), number.group_id), (Some(ada.id.as_str()), None));
}

async fn caller_ids_are_own_group_and_main_line_numbers(dir: Directory, _db: &Database) {
    let (ada, bob, eve) = (user(&dir, "Ada").await, user(&dir, "Bob").await, user(&dir, "Eve").await);
    let sales = dir.create_group(group("Sales", None)).await.unwrap();
    let support = dir.create_group(group("Support", None)).await.unwrap();
    let billing = dir.create_group(group("Billing", None)).await.unwrap();
    dir.add_group_member(&sales.id, &ada.id).await.unwrap();
    dir.add_group_member(&support.id, &ada.id).await.unwrap();
    dir.add_group_member(&billing.id, &bob.id).await.unwrap();

    // Nothing assigned and no main line: nothing to present.
    assert_eq!(dir.entitled_numbers(&ada.id).await.unwrap(), Vec::<String>::new());
    assert_eq!(dir.default_caller_id(&ada.id).await.unwrap(), None);

    dir.assign_number("+14155550101", &ada.id).await.unwrap();
    dir.assign_number("+14155550102", &ada.id).await.unwrap();
    dir.assign_number("+14155550199", &bob.id).await.unwrap();
    dir.assign_number_to_group("+14155550201", &sales.id).await.unwrap();
    dir.assign_number_to_group("+14155550301", &support.id).await.unwrap();
    dir.assign_number_to_group("+14155550401", &billing.id).await.unwrap();
    dir.assign_number("+14155550000", &eve.id).await.unwrap();
    dir.set_main_line("+14155550000", true).await.unwrap();

    // Own numbers first, then the groups', then the main line; never Bob's
    // number nor the number of a group Ada is not in.
    assert_eq!(
        dir.entitled_numbers(&ada.id).await.unwrap(),
        vec!["+14155550101", "+14155550102", "+14155550201", "+14155550301", "+14155550000"]
    );
    assert_eq!(dir.default_caller_id(&ada.id).await.unwrap().as_deref(), Some("+14155550101"));
    assert_eq!(dir.entitled_numbers(&bob.id).await.unwrap(), vec!["+14155550199", "+14155550401", "+14155550000"]);
    // The main line's owner sees it once.
    assert_eq!(dir.entitled_numbers(&eve.id).await.unwrap(), vec!["+14155550000"]);
    // A user with no number of their own presents a group's number first.
    let zed = user(&dir, "Zed").await;
    dir.add_group_member(&support.id, &zed.id).await.unwrap();
    assert_eq!(dir.default_caller_id(&zed.id).await.unwrap().as_deref(), Some("+14155550301"));
    assert_eq!(dir.entitled_numbers(&zed.id).await.unwrap(), vec!["+14155550301", "+14155550000"]);

    // Leaving a group, or the group's number going, ends the entitlement.
    dir.remove_group_member(&sales.id, &ada.id).await.unwrap();
    dir.delete_number("+14155550301").await.unwrap();
    assert_eq!(dir.entitled_numbers(&ada.id).await.unwrap(), vec!["+14155550101", "+14155550102", "+14155550000"]);
    assert_eq!(dir.default_caller_id(&zed.id).await.unwrap().as_deref(), Some("+14155550000"));

    let err = dir.entitled_numbers("nobody").await.unwrap_err();
    assert!(matches!(&err, DirectoryError::NotFound { kind: "user", id } if id == "nobody"), "{err}");
    let err = dir.default_caller_id("nobody").await.unwrap_err();
    assert!(matches!(err, DirectoryError::NotFound { kind: "user", .. }), "{err}");
}

async fn devices_know_their_owner(dir: Directory, _db: &Database) {
    let (ada, bob) = (user(&dir, "Ada").await, user(&dir, "Bob").await);
    let ada_desk = device(&dir, &ada, "desk").await;
    let bob_desk = device(&dir, &bob, "desk").await;
    assert_eq!(dir.device_owner(&ada_desk.id).await.unwrap(), Some(ada.clone()));
    assert_eq!(dir.device_owner(&bob_desk.id).await.unwrap(), Some(bob));
    assert_eq!(dir.device_owner("nodevice").await.unwrap(), None);
    dir.delete_device(&ada_desk.id).await.unwrap();
    assert_eq!(dir.device_owner(&ada_desk.id).await.unwrap(), None);
}

async fn recording_policies_are_set_listed_and_cleared(dir: Directory, db: &Database) {
    let ada = user(&dir, "Ada").await;
    let sales = dir.create_group(group("Sales", Some("200"))).await.unwrap();
    let support = dir.create_group(group("Support", None)).await.unwrap();
    assert!(!sales.record_calls, "a new group has no policy");
    let adas = dir.assign_number("+14155550100", &ada.id).await.unwrap();
    assert!(!adas.record_calls, "a new number has no policy");
    dir.assign_number_to_group("+14155550200", &sales.id).await.unwrap();
    dir.set_main_line("+14155550200", true).await.unwrap();
    assert_eq!(dir.recording_policies().await.unwrap(), RecordingPolicies::default());

    // Numbers in any accepted spelling, the main line like any other.
    let main = dir.set_number_recording_policy("+1 (415) 555-0200", true).await.unwrap();
    assert_eq!((main.number.as_str(), main.record_calls, main.main_line), ("+14155550200", true, true));
    assert_eq!(main.group_id.as_deref(), Some(sales.id.as_str()), "the owner stays");
    let adas = dir.set_number_recording_policy("0014155550100", true).await.unwrap();
    assert!(adas.record_calls);
    // Idempotent.
    assert_eq!(dir.set_number_recording_policy("+14155550100", true).await.unwrap(), adas);
    let support = dir.set_group_recording_policy(&support.id, true).await.unwrap();
    assert!(support.record_calls);
    assert_eq!(dir.get_group(&support.id).await.unwrap(), support);

    let policies = dir.recording_policies().await.unwrap();
    assert_eq!(policies, RecordingPolicies { numbers: vec![adas.clone(), main.clone()], groups: vec![support.clone()] });
    // The flags show in the ordinary listings too.
    let flagged: Vec<(String, bool)> = dir.list_numbers().await.unwrap().into_iter().map(|n| (n.number, n.record_calls)).collect();
    assert_eq!(flagged, vec![("+14155550100".to_owned(), true), ("+14155550200".to_owned(), true)]);
    assert_eq!(dir.list_groups().await.unwrap(), vec![sales.clone(), support.clone()]);

    // Clearing.
    let cleared = dir.set_number_recording_policy("+14155550100", false).await.unwrap();
    assert!(!cleared.record_calls);
    let support_cleared = dir.set_group_recording_policy(&support.id, false).await.unwrap();
    assert!(!support_cleared.record_calls);
    assert_eq!(dir.recording_policies().await.unwrap(), RecordingPolicies { numbers: vec![main.clone()], groups: vec![] });
    // Clearing what has no policy is harmless.
    assert!(!dir.set_group_recording_policy(&sales.id, false).await.unwrap().record_calls);

    // Unknown or malformed targets are refused and change nothing.
    let err = dir.set_number_recording_policy("+14155550999", true).await.unwrap_err();
    assert!(matches!(&err, DirectoryError::NotFound { kind: "number", id } if id == "+14155550999"), "{err}");
    let err = dir.set_number_recording_policy("main line", true).await.unwrap_err();
    assert!(matches!(err, DirectoryError::Invalid { field: "number", .. }), "{err}");
    let err = dir.set_group_recording_policy("nogroup", true).await.unwrap_err();
    assert!(matches!(&err, DirectoryError::NotFound { kind: "group", id } if id == "nogroup"), "{err}");
    assert_eq!(dir.recording_policies().await.unwrap(), RecordingPolicies { numbers: vec![main], groups: vec![] });

    // The schema refuses any flag but 0 or 1 written around the directory.
    for sql in [
        "UPDATE numbers SET record_calls = 2 WHERE number = '+14155550100'",
        "UPDATE groups SET record_calls = -1",
    ] {
        let odd = sqlx::query(sql).execute(db.pool()).await;
        assert!(matches!(&odd, Err(sqlx::Error::Database(d)) if d.is_check_violation()), "{sql}: {odd:?}");
    }
}

async fn recording_policies_mark_the_routes_they_cover(dir: Directory, _db: &Database) {
    let ada = dir.create_user(NewUser { name: "Ada".into(), extension: Some("101".into()), ..Default::default() }).await.unwrap();
    let bob = user(&dir, "Bob").await;
    let sales = dir.create_group(group("Sales", Some("200"))).await.unwrap();
    let support = dir.create_group(group("Support", Some("300"))).await.unwrap();
    for g in [&sales, &support] {
        dir.add_group_member(&g.id, &bob.id).await.unwrap();
    }
    dir.assign_number("+14155550100", &ada.id).await.unwrap();
    dir.assign_number("+14155550101", &bob.id).await.unwrap();
    dir.assign_number_to_group("+14155550200", &sales.id).await.unwrap();
    dir.assign_number_to_group("+14155550300", &support.id).await.unwrap();
    dir.assign_number("+14155550000", &ada.id).await.unwrap();
    dir.set_main_line("+14155550000", true).await.unwrap();

    let by_number = |n: &'static str| {
        let dir = dir.clone();
        async move { dir.route_number(n).await.unwrap().unwrap_or_else(|| panic!("{n} routes")).admin_recording }
    };
    let by_extension = |e: &'static str| {
        let dir = dir.clone();
        async move { dir.route_extension(e).await.unwrap().unwrap_or_else(|| panic!("{e} routes")).admin_recording }
    };
    let every_route = || async {
        (
            [
                by_number("+14155550100").await,
                by_number("+14155550101").await,
                by_number("+14155550200").await,
                by_number("+14155550300").await,
                by_number("+14155550000").await,
            ],
            [by_extension("101").await, by_extension("200").await, by_extension("300").await],
        )
    };
    let on_number = |n: &'static str| {
        let dir = dir.clone();
        async move { dir.admin_recording_for_number(n).await.unwrap() }
    };
    // No policy: nothing is admin-recorded.
    assert_eq!(every_route().await, ([false; 5], [false; 3]));

    // A number's policy covers calls to that number only.
    dir.set_number_recording_policy("+14155550100", true).await.unwrap();
    assert_eq!(every_route().await, ([true, false, false, false, false], [false; 3]), "not Ada's extension");
    // The main line's covers calls to the main line.
    dir.set_number_recording_policy("+14155550000", true).await.unwrap();
    assert_eq!(every_route().await, ([true, false, false, false, true], [false; 3]));
    dir.set_number_recording_policy("+14155550100", false).await.unwrap();
    dir.set_number_recording_policy("+14155550000", false).await.unwrap();

    // A group's policy covers its numbers and its extension, not its
    // members' own numbers nor other groups.
    dir.set_group_recording_policy(&sales.id, true).await.unwrap();
    assert_eq!(every_route().await, ([false, false, true, false, false], [false, true, false]));
    // A group number with a policy of its own is covered without the group's.
    dir.set_group_recording_policy(&sales.id, false).await.unwrap();
    dir.set_number_recording_policy("+14155550300", true).await.unwrap();
    assert_eq!(every_route().await, ([false, false, false, true, false], [false; 3]), "the number's, not the group's extension");

    // The same rule judged by caller ID, for outbound calls.
    assert!(on_number("+1 415 555 0300").await);
    assert!(!on_number("+14155550200").await);
    dir.set_group_recording_policy(&sales.id, true).await.unwrap();
    assert!(on_number("+14155550200").await, "a group's number, through the group");
    assert!(!on_number("+14155550100").await);
    assert!(!on_number("+14155550999").await, "not provisioned");
    assert!(!on_number("anonymous").await, "not a number");
}

async fn recording_policies_go_with_their_number_or_group(dir: Directory, _db: &Database) {
    let (ada, bob) = (user(&dir, "Ada").await, user(&dir, "Bob").await);
    let sales = dir.create_group(group("Sales", None)).await.unwrap();
    dir.add_group_member(&sales.id, &ada.id).await.unwrap();
    dir.assign_number_to_group("+14155550200", &sales.id).await.unwrap();
    dir.assign_number("+14155550100", &ada.id).await.unwrap();
    dir.set_group_recording_policy(&sales.id, true).await.unwrap();
    dir.set_number_recording_policy("+14155550100", true).await.unwrap();

    // A number's policy stays with the line when it changes hands.
    dir.delete_user(&ada.id).await.unwrap();
    let taken = dir.assign_number("+14155550100", &bob.id).await.unwrap();
    assert!(taken.record_calls);
    assert!(dir.route_number("+14155550100").await.unwrap().unwrap().admin_recording);

    // A group's policy goes with the group: its number, now unassigned and
    // given to Bob, is no longer covered.
    dir.delete_group(&sales.id).await.unwrap();
    let policies = dir.recording_policies().await.unwrap();
    assert_eq!((policies.numbers.len(), policies.groups.len()), (1, 0), "{policies:?}");
    let given = dir.assign_number("+14155550200", &bob.id).await.unwrap();
    assert!(!given.record_calls);
    assert!(!dir.route_number("+14155550200").await.unwrap().unwrap().admin_recording);

    // A deleted and provisioned-again number starts without a policy.
    dir.delete_number("+14155550100").await.unwrap();
    assert_eq!(dir.recording_policies().await.unwrap(), RecordingPolicies::default());
    assert!(!dir.assign_number("+14155550100", &bob.id).await.unwrap().record_calls);
}

/// Routing end to end over the directory: the plan of a call says whether a
/// policy records it, for inbound, internal and outbound calls.
async fn the_router_plans_admin_recording(dir: Directory, db: &Database) {
    use switchboard_gateway::calls::routing::{CallerInfo, Origin, RouteOutcome, Router};
    use switchboard_gateway::calls::trunks::Trunks;
    use switchboard_gateway::config::TrunkConfig;
    use switchboard_gateway::media::ports::PortAllocator;
    use switchboard_gateway::registrations::Registrations;

    let ada = dir.create_user(NewUser { name: "Ada".into(), extension: Some("101".into()), ..Default::default() }).await.unwrap();
    let bob = dir.create_user(NewUser { name: "Bob".into(), extension: Some("102".into()), ..Default::default() }).await.unwrap();
    let _ada_desk = device(&dir, &ada, "desk").await;
    let bob_desk = device(&dir, &bob, "desk").await;
    let sales = dir.create_group(group("Sales", Some("200"))).await.unwrap();
    dir.add_group_member(&sales.id, &ada.id).await.unwrap();
    dir.assign_number("+14155550100", &ada.id).await.unwrap();
    dir.assign_number("+14155550101", &bob.id).await.unwrap();
    dir.assign_number_to_group("+14155550200", &sales.id).await.unwrap();
    dir.assign_number("+14155550000", &bob.id).await.unwrap();
    dir.set_main_line("+14155550000", true).await.unwrap();
    dir.set_number_recording_policy("+14155550000", true).await.unwrap();
    dir.set_group_recording_policy(&sales.id, true).await.unwrap();

    let trunk = TrunkConfig {
        name: "carrier".into(),
        address: Some("127.0.0.1:5999".into()),
        inbound_from: vec!["127.0.0.1/32".into()],
        country_code: "1".into(),
        ..TrunkConfig::default()
    };
    let router = Router {
        directory: dir.clone(),
        registrations: Registrations::new(db.clone()),
        trunks: Trunks::from_config(&[trunk]),
        // Taken ports are skipped, so a wide range suits parallel tests.
        ports: PortAllocator::new("127.0.0.1".parse().unwrap(), 42_000, 59_999),
    };
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let plan = |origin: Origin, dialled: &'static str, caller: &'static str| {
        let router = router.clone();
        async move {
            let info = CallerInfo { user: caller.into(), ..CallerInfo::default() };
            match router.route(&origin, dialled, &info, now).await {
                RouteOutcome::Ready(plan) => (plan.started.direction, plan.admin_recording),
                RouteOutcome::Refused { code, why } => panic!("{dialled} refused with {code}: {why}"),
                RouteOutcome::Unreachable { .. } => panic!("{dialled} is unreachable"),
            }
        }
    };
    use switchboard_proto::v1::Direction::{Inbound, Internal, Outbound};
    let carrier = || Origin::Trunk("carrier".into());
    let bobs_phone = || Origin::Device(bob_desk.id.clone());

    // From the carrier: the main line and the group's number are covered,
    // Ada's own number is not.
    assert_eq!(plan(carrier(), "+14155550000", "+12025550123").await, (Inbound, true));
    assert_eq!(plan(carrier(), "%2B14155550200", "+12025550123").await, (Inbound, true));
    assert_eq!(plan(carrier(), "+14155550100", "+12025550123").await, (Inbound, false));
    // Internal: the group by extension or number is covered, Ada's extension not.
    assert_eq!(plan(bobs_phone(), "200", "102").await, (Internal, true));
    assert_eq!(plan(bobs_phone(), "+14155550200", "102").await, (Internal, true));
    assert_eq!(plan(bobs_phone(), "101", "102").await, (Internal, false));
    // Outbound: judged by the caller ID presented.
    assert_eq!(plan(bobs_phone(), "+12025550123", "+14155550000").await, (Outbound, true), "the main line");
    assert_eq!(plan(bobs_phone(), "+12025550123", "+14155550101").await, (Outbound, false), "Bob's own number");
}
