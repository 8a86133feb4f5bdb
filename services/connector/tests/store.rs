//! The connector's tables on both databases: SQLite always, PostgreSQL when
//! `SWITCHBOARD_TEST_POSTGRES_URL` names a server (each test in a database
//! of its own, dropped afterwards).

use switchboard_connector::dead_letter::DeadLetter;
use switchboard_connector::fold::{CallState, CaseSync};
use switchboard_connector::store::{ClearedRejections, SyncStore};
use switchboard_proto::v1::{self, call_event::Kind};
use switchboard_proto::CallEvent;
use switchboard_store::sqlx::{self, Row};
use switchboard_store::Database;

const CALL: &str = "0193f0a2-bbbb-7000-8000-000000000001";

/// A migrated database; `cleanup` drops a PostgreSQL one.
struct TestDatabase {
    db: Database,
    _dir: Option<tempfile::TempDir>,
    postgres: Option<(String, String)>,
}

impl TestDatabase {
    async fn sqlite() -> TestDatabase {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::connect(&format!("sqlite://{}", dir.path().join("c.db").display())).await.unwrap();
        db.migrate().await.unwrap();
        TestDatabase { db, _dir: Some(dir), postgres: None }
    }

    async fn postgres(test: &str) -> Option<TestDatabase> {
        let Ok(server) = std::env::var("SWITCHBOARD_TEST_POSTGRES_URL") else {
            println!("{test}: PostgreSQL part skipped because SWITCHBOARD_TEST_POSTGRES_URL is not set");
            return None;
        };
        let name = format!("sb_connector_{test}_{:08x}", rand::random::<u32>());
        let admin = Database::connect(&server).await.expect("PostgreSQL test server");
        sqlx::query(&format!("CREATE DATABASE \"{name}\"")).execute(admin.pool()).await.unwrap();
        admin.close().await;
        let mut url = url::Url::parse(&server).unwrap();
        url.set_path(&name);
        let db = Database::connect(url.as_str()).await.unwrap();
        db.migrate().await.unwrap();
        Some(TestDatabase { db, _dir: None, postgres: Some((server, name)) })
    }

    async fn cleanup(self) {
        self.db.close().await;
        if let Some((server, name)) = self.postgres {
            let admin = Database::connect(&server).await.unwrap();
            sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)")).execute(admin.pool()).await.unwrap();
            admin.close().await;
        }
    }
}

fn ended_call() -> CallState {
    let agent = Some(v1::Agent {
        user_id: "u1".into(),
        salesforce_user_id: "005000000000001AAA".into(),
        device_id: String::new(),
        display_name: "Ann".into(),
        privacy_mode: false,
    });
    let events = [
        Kind::Started(v1::CallStarted {
            direction: v1::Direction::Outbound as i32,
            from: Some(v1::Party { number: "+14155550100".into(), display_name: String::new() }),
            to: Some(v1::Party { number: "+442071234567".into(), display_name: String::new() }),
            owner: agent,
        }),
        Kind::Ended(v1::CallEnded { reason: v1::EndReason::Completed as i32, talk_seconds: 61, ..Default::default() }),
    ];
    let mut state = CallState::new(CALL);
    for (i, kind) in events.into_iter().enumerate() {
        let event = CallEvent {
            event_id: format!("e{i}"),
            call_id: CALL.into(),
            sequence: i as u64 + 1,
            occurred_at_ms: 1_709_287_200_000,
            kind: Some(kind),
        };
        state.apply(&event).unwrap();
    }
    state
}

async fn exercise(db: &Database) {
    let store = SyncStore::new(db.clone());
    assert_eq!(store.load(CALL).await.unwrap(), None);

    let mut state = ended_call();
    let write = state.plan().writes.remove(0);
    store.save(&state).await.unwrap();
    let loaded = store.load(CALL).await.unwrap().unwrap();
    assert_eq!(loaded, state, "facts and (empty) task status survive");

    state.record_accepted(&write, Some("00T000000000001AAA".into()));
    store.save_task(CALL, "u1", &state.tasks["u1"], true).await.unwrap();
    // A later save of the whole state (no id change) keeps the columns.
    store.save(&state).await.unwrap();
    let mut loaded = store.load(CALL).await.unwrap().unwrap();
    assert_eq!(loaded, state);
    assert!(loaded.plan().writes.is_empty(), "nothing left to write after reloading");
    let row = sqlx::query("SELECT salesforce_id, last_synced_at FROM sync_tasks WHERE call_id = $1 AND user_id = $2")
        .bind(CALL)
        .bind("u1")
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(row.get::<Option<String>, _>("salesforce_id").as_deref(), Some("00T000000000001AAA"));
    assert!(row.get::<Option<i64>, _>("last_synced_at").is_some());

    // Cursors start at 0 and move.
    assert_eq!(store.cursor("outbox").await.unwrap(), 0);
    store.advance("outbox", 41).await.unwrap();
    store.advance("outbox", 42).await.unwrap();
    assert_eq!(store.cursor("outbox").await.unwrap(), 42);

    // Dead letters keep their bytes exactly.
    let payload = vec![0u8, 255, 1, 2, 0xC3, 0x28];
    let letter = DeadLetter {
        call_id: CALL.into(),
        payload: payload.clone(),
        label: "undecodable",
        error_code: None,
        reason: "undecodable CallEvent: test".into(),
        origin: "outbox row 9".into(),
    };
    store.insert_dead_letter(&letter).await.unwrap();
    let row = sqlx::query("SELECT payload, reason, label, error_code, origin, replayed_at FROM dead_letters")
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(row.get::<Vec<u8>, _>("payload"), payload);
    assert_eq!(row.get::<String, _>("reason"), "undecodable CallEvent: test");
    assert_eq!(row.get::<String, _>("label"), "undecodable");
    assert_eq!(row.get::<Option<String>, _>("error_code"), None);
    assert_eq!(row.get::<Option<String>, _>("origin").as_deref(), Some("outbox row 9"));
    assert_eq!(row.get::<Option<i64>, _>("replayed_at"), None);
    store
        .insert_dead_letter(&DeadLetter { label: "salesforce_rejected", error_code: Some("INVALID_FIELD".into()), ..letter })
        .await
        .unwrap();
    let code: Option<String> = sqlx::query_scalar("SELECT error_code FROM dead_letters WHERE label = $1")
        .bind("salesforce_rejected")
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert_eq!(code.as_deref(), Some("INVALID_FIELD"));

    // Recorded refusals are forgotten on demand, in the caller's transaction,
    // so the refused Task and new Case are due again.
    let mut refused = ended_call();
    let write = refused.plan().writes.remove(0);
    refused.record_rejected(&write, "FIELD_CUSTOM_VALIDATION_EXCEPTION", "Subject required");
    let case = CaseSync { salesforce_id: None, error_code: Some("REQUIRED_FIELD_MISSING".into()), message: Some("Product".into()) };
    refused.cases.insert("assignment-1".into(), case);
    let created = CaseSync { salesforce_id: Some("500000000000001AAA".into()), ..Default::default() };
    refused.cases.insert("assignment-0".into(), created.clone());
    store.save(&refused).await.unwrap();
    assert!(store.load(CALL).await.unwrap().unwrap().plan().writes.is_empty(), "a refusal is not retried by itself");
    let mut tx = db.pool().begin().await.unwrap();
    let cleared = SyncStore::clear_rejections(&mut tx, CALL).await.unwrap();
    tx.rollback().await.unwrap();
    assert_eq!(cleared, ClearedRejections { tasks: 1, cases: 1 });
    assert!(store.load(CALL).await.unwrap().unwrap().plan().writes.is_empty(), "rolled back with the caller's transaction");
    let mut tx = db.pool().begin().await.unwrap();
    SyncStore::clear_rejections(&mut tx, CALL).await.unwrap();
    tx.commit().await.unwrap();
    let mut reloaded = store.load(CALL).await.unwrap().unwrap();
    assert_eq!(reloaded.tasks["u1"].rejected, None);
    assert_eq!(reloaded.cases["assignment-1"], CaseSync::default());
    assert_eq!(reloaded.cases["assignment-0"], created, "a Case Salesforce holds stays");
    assert_eq!(reloaded.plan().writes.len(), 1, "the refused fields are due again");
    let mut tx = db.pool().begin().await.unwrap();
    assert_eq!(SyncStore::clear_rejections(&mut tx, CALL).await.unwrap(), ClearedRejections::default());
    assert_eq!(SyncStore::clear_rejections(&mut tx, "no-such-call").await.unwrap(), ClearedRejections::default());
    tx.commit().await.unwrap();

    // A state row that no longer parses is rebuilt, not fatal.
    sqlx::query("UPDATE sync_calls SET state = $1 WHERE call_id = $2")
        .bind("{not json")
        .bind(CALL)
        .execute(db.pool())
        .await
        .unwrap();
    assert_eq!(store.load(CALL).await.unwrap(), None);

    // An unparsable task row loses only that task's status.
    store.save(&state).await.unwrap();
    sqlx::query("UPDATE sync_tasks SET state = $1").bind("[]").execute(db.pool()).await.unwrap();
    let loaded = store.load(CALL).await.unwrap().unwrap();
    assert!(loaded.tasks.is_empty());
}

#[tokio::test]
async fn connector_tables_on_sqlite() {
    let db = TestDatabase::sqlite().await;
    exercise(&db.db).await;
    db.cleanup().await;
}

#[tokio::test]
async fn connector_tables_on_postgres() {
    let Some(db) = TestDatabase::postgres("connector_tables").await else {
        return;
    };
    exercise(&db.db).await;
    db.cleanup().await;
}
