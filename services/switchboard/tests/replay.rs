//! `switchboard replay` as an operator runs it: dead letters of the outbox
//! fed back to a running connector (a Task Salesforce refused is written
//! once the cause is gone), and letters of the Kafka dead-letter topic
//! produced back to the call-event topic once, against a real broker
//! (`SWITCHBOARD_TEST_KAFKA`, else a tansu broker started from
//! `SWITCHBOARD_TEST_TANSU_BIN`, else librdkafka's mock cluster; see
//! `switchboard_test_support::kafka`).

use std::path::Path;
use std::process::{Output, Stdio};
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::producer::FutureProducer;
use salesforce_emulator::{Emulator, EmulatorConfig, Fault, TestCredentials};
use switchboard_connector::dead_letter::{DeadLetter, DeadLetterQueue};
use switchboard_connector::fold::CallState;
use switchboard_connector::store::SyncStore;
use switchboard_connector::{Connector, ConnectorConfig, Progress, SalesforceConfig, SourceConfig};
use switchboard_proto::v1::{self, call_event::Kind};
use switchboard_proto::{CallEvent, Message as _};
use switchboard_store::sqlx::{self, Row};
use switchboard_store::{Database, Outbox};
use switchboard_test_support::kafka::Broker;
use tokio_util::sync::CancellationToken;

/// Bound on waits for the connector and the broker; the happy path takes far less.
const PATIENCE: Duration = Duration::from_secs(60);

/// Runs the binary in `dir` with none of the caller's `SWITCHBOARD_…` or
/// `RUST_LOG` variables, plus `env`.
async fn run(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_switchboard"));
    for (name, _) in std::env::vars_os() {
        let name_str = name.to_string_lossy();
        if name_str.starts_with("SWITCHBOARD_") || name_str == "RUST_LOG" {
            command.env_remove(&name);
        }
    }
    command.current_dir(dir).stdin(Stdio::null()).args(args).envs(env.iter().copied());
    tokio::time::timeout(PATIENCE, command.output())
        .await
        .unwrap_or_else(|_| panic!("switchboard {args:?} did not finish within {PATIENCE:?}"))
        .expect("run the switchboard binary")
}

/// Runs a command that must succeed and returns what it printed.
async fn ok(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> String {
    let out = run(dir, args, env).await;
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "switchboard {args:?} failed: {}\n{stdout}\n{stderr}", out.status);
    stdout.into_owned()
}

/// The table row of the letter of `call_id`, if the output lists it.
fn row_of<'a>(text: &'a str, call_id: &str) -> Option<&'a str> {
    text.lines().find(|line| line.contains(call_id))
}

/// 2024-03-01T10:00:00Z
const T0: i64 = 1_709_287_200_000;

fn event(call_id: &str, sequence: u64, kind: Kind) -> CallEvent {
    CallEvent {
        event_id: format!("{call_id}-evt-{sequence}"),
        call_id: call_id.into(),
        sequence,
        occurred_at_ms: T0 + sequence as i64 * 1000,
        kind: Some(kind),
    }
}

/// An answered inbound call to `user_id`, ended: one Task write at the end.
fn answered_call(call_id: &str, user_id: &str, salesforce_user_id: &str) -> Vec<CallEvent> {
    let agent = Some(v1::Agent {
        user_id: user_id.into(),
        salesforce_user_id: salesforce_user_id.into(),
        device_id: "desk".into(),
        display_name: "Ann Agent".into(),
        privacy_mode: false,
    });
    vec![
        event(
            call_id,
            1,
            Kind::Started(v1::CallStarted {
                direction: v1::Direction::Inbound as i32,
                from: Some(v1::Party { number: "+14155550100".into(), display_name: "Carla Caller".into() }),
                to: Some(v1::Party { number: "+14155550199".into(), display_name: String::new() }),
                owner: agent.clone(),
            }),
        ),
        event(call_id, 2, Kind::Answered(v1::CallAnswered { agent })),
        event(
            call_id,
            3,
            Kind::Ended(v1::CallEnded {
                reason: v1::EndReason::Completed as i32,
                hangup_by: "caller".into(),
                talk_seconds: 95,
                total_seconds: 101,
                sip_status: 200,
                q850_cause: 16,
            }),
        ),
    ]
}

async fn append(db: &Database, call_id: &str, sequence: i64, kind: &str, payload: &[u8]) -> i64 {
    let mut tx = db.pool().begin().await.unwrap();
    let id = Outbox::insert(&mut tx, call_id, sequence, kind, payload).await.unwrap();
    tx.commit().await.unwrap();
    id
}

async fn count(db: &Database, sql: &str) -> i64 {
    sqlx::query_scalar::<_, i64>(sql).fetch_one(db.pool()).await.unwrap()
}

/// The Tasks of the org whose external id is `<call_id>:<user_id>`.
fn tasks_for(emulator: &Emulator, call_id: &str, user_id: &str) -> usize {
    let key = format!("{call_id}:{user_id}");
    emulator.tasks().iter().filter(|t| t["Switchboard_Key__c"] == key.as_str()).count()
}

/// Waits until the connector's outbox cursor has passed `row`.
async fn until_outbox_position(progress: &tokio::sync::watch::Receiver<Progress>, row: i64) -> Progress {
    let mut waiting = progress.clone();
    let reached = tokio::time::timeout(PATIENCE, waiting.wait_for(|p| p.outbox_position.is_some_and(|pos| pos >= row))).await;
    match reached {
        Ok(Ok(p)) => p.clone(),
        Ok(Err(_)) => panic!("the connector stopped"),
        Err(_) => panic!("the connector did not reach outbox row {row}: {:?}", *progress.borrow()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbox_letters_are_replayed_once_and_the_refused_task_is_written_after_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let env: &[(&str, &str)] = &[("SWITCHBOARD_DATA_DIR", "data")];

    // Refused on an unmigrated database, with the store's advice.
    let out = run(d, &["replay"], env).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("switchboard migrate"), "{out:?}");
    ok(d, &["migrate"], env).await;
    let db = Database::connect(&format!("sqlite://{}", d.join("data/switchboard.db").display())).await.unwrap();

    // An org whose validation rule refuses two Tasks once each.
    let credentials = TestCredentials::generate().unwrap();
    let key_file = d.join("connected-app.key");
    std::fs::write(&key_file, &credentials.private_key_pem).unwrap();
    let config = EmulatorConfig::new(credentials.certificate_pem.clone());
    let username = config.username.clone();
    let emulator = Emulator::start(config, "127.0.0.1:0".parse().unwrap()).await.expect("emulator starts");
    let agent = emulator.add_user("ann.agent@switchboard.test").unwrap();
    let refused = "0193f0a2-eeee-7000-8000-000000000001";
    let other = "0193f0a2-eeee-7000-8000-000000000002";
    let garbage = "0193f0a2-eeee-7000-8000-000000000003";
    let invalid = "0193f0a2-eeee-7000-8000-000000000004";
    emulator.inject_fault(Fault::RecordError {
        external_id: format!("{refused}:u-ann"),
        error_code: "FIELD_CUSTOM_VALIDATION_EXCEPTION".into(),
        message: "Call Result is required".into(),
        times: 1,
    });
    emulator.inject_fault(Fault::RecordError {
        external_id: format!("{other}:u-ann"),
        error_code: "INVALID_FIELD_FOR_INSERT_UPDATE".into(),
        message: "Unable to create/update fields: CallDisposition".into(),
        times: 1,
    });

    // Four dead letters: two refused writes, bytes that are no event, an
    // event with sequence 0.
    for e in answered_call(refused, "u-ann", &agent).iter().chain(&answered_call(other, "u-ann", &agent)) {
        append(&db, &e.call_id, e.sequence as i64, e.kind_name(), &e.encode_to_vec()).await;
    }
    append(&db, garbage, 1, "call.started", b"\xff\xff not a CallEvent").await;
    let mut zero = answered_call(invalid, "u-ann", &agent).remove(0);
    zero.sequence = 0;
    let last = append(&db, invalid, 0, "call.started", &zero.encode_to_vec()).await;

    let mut salesforce = SalesforceConfig::new(emulator.consumer_key(), username, key_file.clone());
    salesforce.login_url = emulator.url();
    salesforce.retry_initial_ms = 10;
    salesforce.retry_max_ms = 100;
    salesforce.batch_update_deadline_ms = salesforce.batch_deadline_ms;
    let connector_config = ConnectorConfig { salesforce: Some(salesforce), source: SourceConfig::Outbox, poll_interval_ms: 10 };
    let shutdown = CancellationToken::new();
    let connector = Connector::start(connector_config, db.clone(), shutdown.clone()).await.expect("connector starts");
    let progress = connector.progress();
    let reached = until_outbox_position(&progress, last).await;
    assert_eq!(reached.dead_letters, 4);
    assert_eq!((tasks_for(&emulator, refused, "u-ann"), tasks_for(&emulator, other, "u-ann")), (0, 0));
    let labels: Vec<(String, String, Option<String>, String)> =
        sqlx::query("SELECT call_id, label, error_code, origin FROM dead_letters ORDER BY id")
            .fetch_all(db.pool())
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get("call_id"), r.get("label"), r.get("error_code"), r.get("origin")))
            .collect();
    let label_of = |call: &str| labels.iter().find(|l| l.0 == call).map(|l| (l.1.as_str(), l.2.as_deref())).unwrap();
    assert_eq!(label_of(refused), ("salesforce_rejected", Some("FIELD_CUSTOM_VALIDATION_EXCEPTION")));
    assert_eq!(label_of(other), ("salesforce_rejected", Some("INVALID_FIELD_FOR_INSERT_UPDATE")));
    assert_eq!(label_of(garbage), ("undecodable", None));
    assert_eq!(label_of(invalid), ("invalid_event", None));
    assert!(labels.iter().all(|l| l.3.starts_with("outbox row ")), "{labels:?}");
    let outbox_rows = count(&db, "SELECT COUNT(*) FROM outbox").await;

    // A dry run lists all but the undecodable letter and changes nothing.
    let text = ok(d, &["replay", "--dry-run"], env).await;
    assert!(text.starts_with("LETTER"), "{text}");
    for call in [refused, other, invalid] {
        assert!(row_of(&text, call).is_some(), "{call} missing:\n{text}");
    }
    assert!(row_of(&text, garbage).is_none(), "{text}");
    let row = row_of(&text, refused).unwrap();
    assert!(row.contains("salesforce_rejected") && row.contains("FIELD_CUSTOM_VALIDATION_EXCEPTION") && row.contains("outbox row"), "{text}");
    assert!(row.contains("Call Result is required"), "the reason is shown: {text}");
    assert!(text.contains("dry run: would replay 3 dead letters to the outbox; nothing was changed"), "{text}");
    assert!(text.contains("1 undecodable dead letter(s) left out") && text.contains("--label undecodable"), "{text}");
    assert_eq!(count(&db, "SELECT COUNT(*) FROM outbox").await, outbox_rows);
    assert_eq!(count(&db, "SELECT COUNT(*) FROM dead_letters WHERE replayed_at IS NOT NULL").await, 0);

    // Filters, each on its own and combined.
    let cases: &[(&[&str], &[&str])] = &[
        (&["--call-id", refused], &[refused]),
        (&["--label", "invalid_event"], &[invalid]),
        (&["--label", "undecodable"], &[garbage]),
        (&["--error-code", "invalid_field_for_insert_update"], &[other]),
        (&["--label", "salesforce_rejected", "--call-id", other], &[other]),
        (&["--label", "salesforce_rejected", "--limit", "1"], &[refused]),
        (&["--error-code", "INVALID_FIELD_FOR_INSERT_UPDATE", "--call-id", refused], &[]),
    ];
    for (args, expected) in cases {
        let mut all = vec!["replay", "--dry-run"];
        all.extend_from_slice(args);
        let text = ok(d, &all, env).await;
        for call in [refused, other, garbage, invalid] {
            assert_eq!(row_of(&text, call).is_some(), expected.contains(&call), "{args:?} and {call}:\n{text}");
        }
        if expected.is_empty() {
            assert!(text.contains("no dead letters to replay"), "{args:?}:\n{text}");
        }
    }
    let text = ok(d, &["replay", "--dry-run", "--limit", "2"], env).await;
    assert!(text.contains("would replay 2 dead letters") && text.contains("more matching dead letters wait"), "{text}");

    // The validation rule is fixed (the fault is spent): the refused letter
    // goes back into the outbox, the refusal is cleared, the Task is written.
    let text = ok(d, &["replay", "--error-code", "FIELD_CUSTOM_VALIDATION_EXCEPTION"], env).await;
    assert!(row_of(&text, refused).is_some() && row_of(&text, other).is_none(), "{text}");
    assert!(text.contains("replayed 1 dead letter to the outbox (1 event)"), "{text}");
    assert!(text.contains("Salesforce refusals of 1 Task(s)"), "{text}");
    let letter: (i64, Vec<u8>) = sqlx::query("SELECT id, payload FROM dead_letters WHERE call_id = $1 AND replayed_at IS NOT NULL")
        .bind(refused)
        .fetch_one(db.pool())
        .await
        .map(|r| (r.get("id"), r.get("payload")))
        .unwrap();
    let replayed: (i64, i64, Vec<u8>) = sqlx::query("SELECT id, sequence, payload FROM outbox WHERE call_id = $1 AND sequence < 0")
        .bind(refused)
        .fetch_one(db.pool())
        .await
        .map(|r| (r.get("id"), r.get("sequence"), r.get("payload")))
        .unwrap();
    assert_eq!((replayed.1, &replayed.2), (-letter.0, &letter.1), "the letter's event, under minus its id");
    let reached = until_outbox_position(&progress, replayed.0).await;
    assert_eq!(tasks_for(&emulator, refused, "u-ann"), 1, "the connector wrote the Task after the replay");
    assert_eq!(reached.dead_letters, 4, "nothing was refused again");
    assert_eq!(count(&db, "SELECT COUNT(*) FROM dead_letters WHERE replayed_at IS NOT NULL").await, 1);

    // A second run finds nothing to replay.
    let text = ok(d, &["replay", "--error-code", "FIELD_CUSTOM_VALIDATION_EXCEPTION"], env).await;
    assert!(text.starts_with("no dead letters to replay"), "{text}");
    assert_eq!(count(&db, "SELECT COUNT(*) FROM outbox").await, outbox_rows + 1);

    // --limit takes the oldest letter (the invalid event, set aside as it
    // was read; the refusals came when its batch was written); the rest
    // waits for the next run.
    let text = ok(d, &["replay", "--limit", "1"], env).await;
    assert!(row_of(&text, invalid).is_some() && row_of(&text, other).is_none(), "{text}");
    assert!(text.contains("replayed 1 dead letter") && text.contains("more matching dead letters wait"), "{text}");
    // (The replayed invalid event is set aside again as a new letter when
    // the connector reads it, so the refusal is picked by its label.)
    let text = ok(d, &["replay", "--label", "salesforce_rejected"], env).await;
    assert!(row_of(&text, other).is_some() && row_of(&text, invalid).is_none(), "{text}");
    assert!(text.contains("replayed 1 dead letter"), "{text}");
    let text = ok(d, &["replay", "--label", "undecodable"], env).await;
    assert!(row_of(&text, garbage).is_some(), "{text}");
    let last = count(&db, "SELECT MAX(id) FROM outbox").await;
    let reached = until_outbox_position(&progress, last).await;
    assert_eq!(tasks_for(&emulator, other, "u-ann"), 1, "the other refused Task is written too");
    // The invalid event and the garbage are set aside again, as new letters.
    assert_eq!(reached.dead_letters, 6);
    assert_eq!(count(&db, "SELECT COUNT(*) FROM dead_letters WHERE replayed_at IS NULL").await, 2);
    assert_eq!(count(&db, "SELECT COUNT(*) FROM outbox").await, outbox_rows + 4);

    shutdown.cancel();
    tokio::time::timeout(PATIENCE, connector.wait()).await.expect("the connector stops").expect("cleanly");
    db.close().await;

    // Usage errors are status 2; an unreachable database names its key.
    for args in [&["replay", "--label", "lost"][..], &["replay", "--limit", "0"]] {
        let out = run(d, args, env).await;
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
    }
    let out = run(d, &["replay"], &[("SWITCHBOARD_DATABASE__URL", "postgres://sb@127.0.0.1:1/sb")]).await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("check `database.url`"), "{out:?}");
}

/// A fresh database on the PostgreSQL server of
/// `SWITCHBOARD_TEST_POSTGRES_URL`, dropped when the test ends.
struct PostgresDb {
    server: String,
    name: String,
    url: String,
}

impl PostgresDb {
    async fn create(server: &str) -> Self {
        let name = format!("sb_replay_{}", uuid::Uuid::now_v7().simple());
        admin_sql(server, &format!("CREATE DATABASE \"{name}\"")).await;
        let (without_query, query) = match server.split_once('?') {
            Some((base, q)) => (base, format!("?{q}")),
            None => (server, String::new()),
        };
        let base = without_query.rsplit_once('/').map(|(b, _)| b).expect("the URL names a database");
        let url = format!("{base}/{name}{query}");
        Self { server: server.to_owned(), name, url }
    }

    async fn drop_database(self) {
        admin_sql(&self.server, &format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name)).await;
    }
}

async fn admin_sql(server: &str, sql: &str) {
    let db = Database::connect(server).await.expect("connect to the PostgreSQL test server");
    sqlx::query(sql).execute(db.pool()).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    db.close().await;
}

#[tokio::test]
async fn outbox_replay_on_postgres_feeds_an_event_back_once_for_all_its_letters() {
    let Ok(server) = std::env::var("SWITCHBOARD_TEST_POSTGRES_URL") else {
        println!("outbox_replay_on_postgres_feeds_an_event_back_once_for_all_its_letters: skipped because SWITCHBOARD_TEST_POSTGRES_URL is not set");
        return;
    };
    let pg = PostgresDb::create(&server).await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let env: &[(&str, &str)] = &[("SWITCHBOARD_DATABASE__URL", &pg.url)];
    ok(d, &["migrate"], env).await;
    let db = Database::connect(&pg.url).await.unwrap();
    let store = SyncStore::new(db.clone());

    // One ended call whose two Tasks Salesforce refused: two letters of one
    // event, and the refusals recorded in the connector's state.
    let call = "0193f0a2-dddd-7000-8000-000000000001";
    let mut events = answered_call(call, "u-ann", "005000000000001AAA");
    let bob = v1::Agent { user_id: "u-bob".into(), salesforce_user_id: "005000000000002AAA".into(), ..Default::default() };
    events.push(event(call, 4, Kind::Answered(v1::CallAnswered { agent: Some(bob) })));
    let mut state = CallState::new(call);
    for e in &events {
        state.apply(e).unwrap();
    }
    let writes = state.plan().writes;
    assert_eq!(writes.len(), 2);
    let ended = events[2].encode_to_vec();
    for write in &writes {
        state.record_rejected(write, "INVALID_FIELD_FOR_INSERT_UPDATE", "Unable to create/update fields: CallDisposition");
        let letter = DeadLetter {
            call_id: call.into(),
            payload: ended.clone(),
            label: "salesforce_rejected",
            error_code: Some("INVALID_FIELD_FOR_INSERT_UPDATE".into()),
            reason: format!("Salesforce refused the Task {}", write.external_id),
            origin: "outbox row 5".into(),
        };
        store.insert_dead_letter(&letter).await.unwrap();
    }
    store.save(&state).await.unwrap();
    let garbage = DeadLetter {
        call_id: "0193f0a2-dddd-7000-8000-000000000002".into(),
        payload: vec![0xff, 0xff, 0x00],
        label: "undecodable",
        error_code: None,
        reason: "undecodable CallEvent: test".into(),
        origin: "outbox row 6".into(),
    };
    store.insert_dead_letter(&garbage).await.unwrap();

    let text = ok(d, &["replay", "--dry-run"], env).await;
    assert_eq!(text.lines().filter(|l| l.contains(call)).count(), 2, "{text}");
    assert!(text.contains("would replay 2 dead letters") && text.contains("1 undecodable dead letter(s) left out"), "{text}");
    assert_eq!(count(&db, "SELECT COUNT(*) FROM outbox").await, 0);

    let text = ok(d, &["replay"], env).await;
    assert!(text.contains("replayed 2 dead letters to the outbox (1 event)"), "{text}");
    assert!(text.contains("Salesforce refusals of 2 Task(s)"), "{text}");
    let first_letter = count(&db, "SELECT MIN(id) FROM dead_letters").await;
    let rows: Vec<(String, i64, String, Vec<u8>)> = sqlx::query("SELECT call_id, sequence, kind, payload FROM outbox")
        .fetch_all(db.pool())
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get("call_id"), r.get("sequence"), r.get("kind"), r.get("payload")))
        .collect();
    assert_eq!(rows, vec![(call.to_owned(), -first_letter, "call.ended".to_owned(), ended)]);
    assert_eq!(count(&db, "SELECT COUNT(*) FROM dead_letters WHERE replayed_at IS NOT NULL").await, 2);
    assert_eq!(store.load(call).await.unwrap().unwrap().plan().writes.len(), 2, "both Tasks are due again");

    let text = ok(d, &["replay"], env).await;
    assert!(text.starts_with("no dead letters to replay"), "{text}");
    assert_eq!(count(&db, "SELECT COUNT(*) FROM outbox").await, 1);
    db.close().await;
    pg.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_letters_are_produced_back_to_the_call_event_topic_once() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let broker = Broker::any(d).await;
    let bootstrap = broker.bootstrap();
    let suffix = uuid::Uuid::now_v7().simple().to_string();
    let topic = format!("replay-call-events-{suffix}");
    let dead_letter_topic = format!("replay-dead-letters-{suffix}");
    let group = format!("connector-{suffix}");
    let env: Vec<(&str, &str)> = vec![
        ("SWITCHBOARD_DATA_DIR", "data"),
        ("SWITCHBOARD_EVENTS__LOG", "kafka"),
        ("SWITCHBOARD_KAFKA__BROKERS", &bootstrap),
        ("SWITCHBOARD_KAFKA__TOPIC", &topic),
        ("SWITCHBOARD_KAFKA__DEAD_LETTER_TOPIC", &dead_letter_topic),
        ("SWITCHBOARD_KAFKA__GROUP_ID", &group),
    ];
    ok(d, &["migrate"], &env).await;

    // Before the connector ever set a letter aside, the topic is missing.
    let text = ok(d, &["replay"], &env).await;
    assert!(text.contains("does not exist") && text.contains("no dead letters to replay"), "{text}");

    broker.create_topic(&topic, 1).await;
    broker.create_topic(&dead_letter_topic, 2).await;

    // The connector's state of a call whose Task Salesforce refused.
    let db = Database::connect(&format!("sqlite://{}", d.join("data/switchboard.db").display())).await.unwrap();
    let store = SyncStore::new(db.clone());
    let refused = "0193f0a2-ffff-7000-8000-000000000001";
    let invalid = "0193f0a2-ffff-7000-8000-000000000002";
    let garbage = "0193f0a2-ffff-7000-8000-000000000003";
    let other = "0193f0a2-ffff-7000-8000-000000000004";
    let events = answered_call(refused, "u-ann", "005000000000001AAA");
    let mut state = CallState::new(refused);
    for e in &events {
        state.apply(e).unwrap();
    }
    let write = state.plan().writes.remove(0);
    state.record_rejected(&write, "FIELD_CUSTOM_VALIDATION_EXCEPTION", "Call Result is required");
    store.save(&state).await.unwrap();
    assert!(store.load(refused).await.unwrap().unwrap().plan().writes.is_empty(), "a refusal is not retried by itself");

    // Letters as the connector writes them.
    let producer: FutureProducer = ClientConfig::new().set("bootstrap.servers", &bootstrap).create().unwrap();
    let queue = DeadLetterQueue::Topic { producer, topic: dead_letter_topic.clone() };
    let mut zero = answered_call(invalid, "u-ann", "005000000000001AAA").remove(0);
    zero.sequence = 0;
    let letters = [
        (refused, events[2].encode_to_vec(), "salesforce_rejected", Some("FIELD_CUSTOM_VALIDATION_EXCEPTION")),
        (invalid, zero.encode_to_vec(), "invalid_event", None),
        (garbage, b"\xff\xff not a CallEvent".to_vec(), "undecodable", None),
        (other, answered_call(other, "u-ann", "005000000000001AAA")[2].encode_to_vec(), "salesforce_rejected", Some("INVALID_FIELD_FOR_INSERT_UPDATE")),
    ];
    for (i, (call_id, payload, label, code)) in letters.iter().enumerate() {
        let letter = DeadLetter {
            call_id: (*call_id).into(),
            payload: payload.clone(),
            label: *label,
            error_code: code.map(str::to_owned),
            reason: format!("{label} letter {i}"),
            origin: format!("{topic}/0@{i}"),
        };
        queue.put(&letter, &CancellationToken::new()).await.expect("dead letter stored");
    }
    // The replay group cannot commit past a letter a filter leaves out, so
    // a letter replayed alone behind another one of its partition is read
    // again by the next run, which must pass it over: pick such a letter
    // (with four letters on two partitions there always is one besides the
    // undecodable letter).
    let layout = broker.read_all(&dead_letter_topic).await.unwrap();
    assert_eq!(layout.len(), 4);
    let first_of = |partition: i32| layout.iter().find(|r| r.partition == partition).and_then(|r| r.key.as_deref());
    let first = layout
        .iter()
        .find(|r| r.key.as_deref() != Some(garbage) && first_of(r.partition) != r.key.as_deref())
        .map(|r| letters.iter().find(|l| Some(l.0) == r.key.as_deref()).unwrap().0)
        .expect("a letter behind another in its partition");

    // A dry run lists them and produces nothing.
    let text = ok(d, &["replay", "--dry-run"], &env).await;
    for call in [refused, invalid, other] {
        assert!(row_of(&text, call).is_some(), "{call} missing:\n{text}");
    }
    assert!(row_of(&text, garbage).is_none(), "{text}");
    let row = row_of(&text, refused).unwrap();
    assert!(row.contains("FIELD_CUSTOM_VALIDATION_EXCEPTION") && row.contains(&format!("{topic}/0@0")), "code and origin are shown: {text}");
    assert!(text.contains("would replay 3 dead letters") && text.contains("1 undecodable dead letter(s) left out"), "{text}");
    let text = ok(d, &["replay", "--dry-run", "--error-code", "invalid_field_for_insert_update"], &env).await;
    assert!(row_of(&text, other).is_some() && text.contains("would replay 1 dead letter"), "{text}");
    assert!(broker.read_all(&topic).await.unwrap().is_empty(), "a dry run produces nothing");

    // That letter first, then the rest: each letter once.
    let text = ok(d, &["replay", "--call-id", first], &env).await;
    assert!(row_of(&text, first).is_some() && text.contains("replayed 1 dead letter to the call-event topic"), "{text}");
    let text = ok(d, &["replay"], &env).await;
    for call in [refused, invalid, other] {
        assert_eq!(row_of(&text, call).is_some(), call != first, "{call}:\n{text}");
    }
    assert!(text.contains("replayed 2 dead letters"), "{text}");
    assert!(text.contains("1 dead letter(s) replayed by an earlier run were passed over"), "{text}");
    let text = ok(d, &["replay"], &env).await;
    assert!(text.contains("no dead letters to replay"), "{text}");

    let replayed = broker.read_all(&topic).await.unwrap();
    let mut keys: Vec<&str> = replayed.iter().filter_map(|r| r.key.as_deref()).collect();
    keys.sort_unstable();
    let mut expected = vec![refused, invalid, other];
    expected.sort_unstable();
    assert_eq!(keys, expected, "each letter once");
    for record in &replayed {
        let (key, headers) = (record.key.as_deref().unwrap_or_default(), &record.headers);
        let letter = letters.iter().find(|l| l.0 == key).unwrap();
        assert_eq!(record.payload, letter.1, "{key}: the payload as dead-lettered");
        assert!(headers.get("switchboard-replayed-from").is_some_and(|h| h.starts_with(&format!("{dead_letter_topic}/"))), "{headers:?}");
        assert!(headers.contains_key("kind"), "{headers:?}");
    }
    let refused_record = replayed.iter().find(|r| r.key.as_deref() == Some(refused)).unwrap();
    assert_eq!(refused_record.headers["kind"], "call.ended");

    // The refusal is cleared: the replayed event makes the write again.
    assert_eq!(store.load(refused).await.unwrap().unwrap().plan().writes.len(), 1);

    // The undecodable letter only on demand; afterwards the replay group
    // has committed the whole topic.
    let text = ok(d, &["replay", "--label", "undecodable"], &env).await;
    assert!(row_of(&text, garbage).is_some() && text.contains("replayed 1 dead letter"), "{text}");
    assert_eq!(broker.read_all(&topic).await.unwrap().len(), 4);
    let committed = broker.committed_offsets(&format!("{group}.replay"), &dead_letter_topic).await.unwrap();
    let ends = broker.high_watermarks(&dead_letter_topic).await.unwrap();
    assert_eq!(ends.len(), 2, "{ends:?}");
    for (partition, end) in &ends {
        let offset = committed.iter().find(|(p, _)| p == partition).and_then(|(_, o)| *o);
        assert!(offset == Some(*end) || (*end == 0 && offset.is_none()), "partition {partition}: committed {offset:?}, end {end}");
    }
    assert_eq!(ends.iter().map(|(_, end)| end).sum::<i64>(), 4);
    db.close().await;

    // An unreachable broker names its key.
    let mut unreachable = env.clone();
    unreachable[2] = ("SWITCHBOARD_KAFKA__BROKERS", "127.0.0.1:1");
    let out = run(d, &["replay"], &unreachable).await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("check `kafka.brokers`"), "{out:?}");
}
