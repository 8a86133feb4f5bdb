//! The directory against real databases: SQLite in a temporary directory
//! always, PostgreSQL when `SWITCHBOARD_TEST_POSTGRES_URL` names a server
//! (each test gets a fresh database that is dropped afterwards).

mod support_db;

use support_db::TestDb;
use switchboard_gateway::directory::{Directory, DirectoryError, NewDevice, NewUser};

/// Runs one scenario on SQLite and, when configured, PostgreSQL.
macro_rules! on_both_databases {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    let db = super::TestDb::sqlite().await;
                    super::$name(super::Directory::new(db.database().clone())).await;
                    db.finish().await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    let Some(db) = super::TestDb::postgres(stringify!($name)).await else { return };
                    super::$name(super::Directory::new(db.database().clone())).await;
                    db.finish().await;
                }
            )*
        }
    };
}

on_both_databases!(users_are_created_validated_and_unique, devices_belong_to_users, numbers_route_to_their_owner);

fn ada() -> NewUser {
    NewUser {
        name: "  Ada Lovelace ".into(),
        extension: Some("101".into()),
        salesforce_user_id: Some("005Dn000001AbCdEFG".into()),
    }
}

async fn users_are_created_validated_and_unique(dir: Directory) {
    let ada = dir.create_user(ada()).await.unwrap();
    assert_eq!(ada.name, "Ada Lovelace");
    assert_eq!(ada.extension.as_deref(), Some("101"));
    assert_eq!(uuid::Uuid::parse_str(&ada.id).unwrap().get_version_num(), 7);
    assert!(ada.created_at > 1_600_000_000_000, "created_at is epoch ms: {}", ada.created_at);

    let same_ext = NewUser { name: "Bob".into(), extension: Some("101".into()), salesforce_user_id: None };
    let err = dir.create_user(same_ext).await.unwrap_err();
    assert!(matches!(&err, DirectoryError::Conflict(m) if m.contains("extension 101")), "{err}");

    let same_sf = NewUser { name: "Bob".into(), extension: None, salesforce_user_id: Some("005Dn000001AbCdEFG".into()) };
    let err = dir.create_user(same_sf).await.unwrap_err();
    assert!(matches!(&err, DirectoryError::Conflict(m) if m.contains(&ada.id)), "{err}");

    let bad_sf = NewUser { name: "Bob".into(), extension: None, salesforce_user_id: Some("001Dn000001AbCd".into()) };
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

async fn devices_belong_to_users(dir: Directory) {
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

async fn numbers_route_to_their_owner(dir: Directory) {
    let ada = dir.create_user(ada()).await.unwrap();
    let bob = dir.create_user(NewUser { name: "Bob".into(), ..Default::default() }).await.unwrap();
    let desk = dir
        .create_device(NewDevice { user_id: ada.id.clone(), name: "desk".into(), contact_uri: "sip:ada@127.0.0.1:5090".into() })
        .await
        .unwrap();

    let assigned = dir.assign_number("+1 (415) 555-0100", &ada.id).await.unwrap();
    assert_eq!(assigned.number, "+14155550100");
    assert_eq!(assigned.user_id.as_deref(), Some(ada.id.as_str()));

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
        assert_eq!(route.user, ada);
        assert_eq!(route.devices, vec![desk.clone()]);
    }
    let route = dir.route_number("+442079460000").await.unwrap().unwrap();
    assert_eq!((route.user.id, route.devices.len()), (bob.id.clone(), 0));
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
    assert_eq!(dir.route_number("+14155550100").await.unwrap().unwrap().user.id, bob.id);

    dir.delete_number("+1 415 555 0100").await.unwrap();
    assert_eq!(dir.list_numbers().await.unwrap(), vec![bobs]);
    let err = dir.delete_number("+14155550100").await.unwrap_err();
    assert!(matches!(err, DirectoryError::NotFound { kind: "number", .. }), "{err}");
}
