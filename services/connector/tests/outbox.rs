//! The connector end to end on `switchboard up`'s defaults: call events in
//! the SQLite outbox, Tasks in a Salesforce emulator.

mod common;

use common::*;
use salesforce_emulator::Fault;
use switchboard_connector::source::outbox::CURSOR;
use switchboard_connector::ConnectorConfig;

#[tokio::test]
async fn an_ended_call_becomes_one_task_and_a_replay_adds_none() {
    let world = World::new().await;
    let call = "0193f0a2-1111-7000-8000-000000000001";
    let last = world.write_outbox(&call_events(call, "u-ann", &world.agent_sf_id)).await;

    let mut running = Running::start(world.outbox_config(), &world.db).await;
    let progress = running.until_outbox_position(last).await;
    assert_eq!(progress.records, 5);
    assert_eq!(progress.dead_letters, 0);
    running.stop().await;

    let tasks = tasks_for(&world.emulator, call, "u-ann");
    assert_eq!(tasks.len(), 1, "{tasks:#?}");
    let task = &tasks[0];
    assert_eq!(task["Subject"], "Inbound call from +14155550100");
    assert_eq!(task["Type"], "Call");
    assert_eq!(task["TaskSubtype"], "Call");
    assert_eq!(task["CallType"], "Inbound");
    assert_eq!(task["CallDurationInSeconds"], 125);
    assert_eq!(task["CallDisposition"], "answered");
    assert_eq!(task["CallObject"], call);
    assert_eq!(task["Status"], "Completed");
    assert_eq!(task["ActivityDate"], "2024-03-01");
    assert_eq!(task["OwnerId"], world.agent_sf_id.as_str());
    let description = task["Description"].as_str().unwrap();
    assert!(description.contains(&format!("https://switchboard.example.com/recordings/{call}")), "{description}");
    assert!(description.contains("talk time 2m 05s"), "{description}");
    assert_eq!(world.emulator.tasks().len(), 1);

    // The sync state remembers the Task.
    let synced = world
        .scalar_i64(&format!(
            "SELECT COUNT(*) FROM sync_tasks WHERE call_id = '{call}' AND user_id = 'u-ann' AND salesforce_id IS NOT NULL AND last_synced_at IS NOT NULL"
        ))
        .await;
    assert_eq!(synced, 1);

    // Replay: the cursor goes back to the start. Every event is a duplicate,
    // so Salesforce sees no request besides the start-up preflight.
    let api_calls = world.emulator.api_calls();
    world.execute(&format!("UPDATE connector_cursors SET position = 0 WHERE name = '{CURSOR}'")).await;
    let mut running = Running::start(world.outbox_config(), &world.db).await;
    let progress = running.until_outbox_position(last).await;
    assert_eq!(progress.records, 5);
    running.stop().await;
    assert_eq!(world.emulator.api_calls(), api_calls + PREFLIGHT_API_CALLS, "a replay makes no Salesforce request");
    assert_eq!(world.emulator.tasks().len(), 1);

    // Replay after losing the sync state: the upserts find the Task by its
    // external id; TaskSubtype, refused on update, is dropped on retry.
    world.execute("DELETE FROM sync_tasks").await;
    world.execute("DELETE FROM sync_calls").await;
    world.execute(&format!("UPDATE connector_cursors SET position = 0 WHERE name = '{CURSOR}'")).await;
    let mut running = Running::start(world.outbox_config(), &world.db).await;
    running.until_outbox_position(last).await;
    running.stop().await;
    let tasks = tasks_for(&world.emulator, call, "u-ann");
    assert_eq!(world.emulator.tasks().len(), 1, "still exactly one Task");
    assert_eq!(tasks[0]["Id"], task["Id"]);
    assert!(world.dead_letters().await.is_empty());
}

#[tokio::test]
async fn an_expired_session_is_renewed_and_the_write_retried() {
    let world = World::new().await;
    let mut running = Running::start(world.outbox_config(), &world.db).await;

    let first = "0193f0a2-2222-7000-8000-000000000001";
    let last = world.write_outbox(&call_events(first, "u-ann", &world.agent_sf_id)).await;
    running.until_outbox_position(last).await;
    assert_eq!(world.emulator.token_calls(), 1);

    world.emulator.expire_tokens();
    let second = "0193f0a2-2222-7000-8000-000000000002";
    let last = world.write_outbox(&call_events(second, "u-ann", &world.agent_sf_id)).await;
    running.until_outbox_position(last).await;
    running.stop().await;

    assert_eq!(world.emulator.token_calls(), 2, "one renewal");
    assert_eq!(tasks_for(&world.emulator, second, "u-ann").len(), 1);
    assert!(world.dead_letters().await.is_empty());
}

#[tokio::test]
async fn transient_failures_are_retried_until_accepted() {
    let world = World::new().await;
    // The faults are for the writes, not the start-up preflight: injected
    // after the start, before the events.
    let mut running = Running::start(world.outbox_config(), &world.db).await;
    assert_eq!(world.emulator.api_calls(), PREFLIGHT_API_CALLS);
    world.emulator.inject_fault(Fault::ServerUnavailable { times: 2 });
    world.emulator.inject_fault(Fault::locked_record(format!("{}:u-ann", "0193f0a2-3333-7000-8000-000000000001")));
    world.emulator.inject_fault(Fault::RequestLimitExceeded { times: 1 });
    let call = "0193f0a2-3333-7000-8000-000000000001";
    let last = world.write_outbox(&call_events(call, "u-ann", &world.agent_sf_id)).await;
    running.until_outbox_position(last).await;
    running.stop().await;

    let tasks = tasks_for(&world.emulator, call, "u-ann");
    assert_eq!(tasks.len(), 1);
    assert!(tasks[0]["Description"].as_str().unwrap().contains("recordings/"));
    assert!(world.dead_letters().await.is_empty());
    // The writes (end and recording, in one batch or two) plus the failed
    // attempts: 2 × 503, one locked record, one limit answer.
    assert!(world.emulator.api_calls() >= PREFLIGHT_API_CALLS + 5, "api calls: {}", world.emulator.api_calls());
}

#[tokio::test]
async fn a_permanent_refusal_is_dead_lettered_and_the_log_moves_on() {
    let world = World::new().await;
    // A Salesforce user id that is well formed but names no user of the org.
    let ghost = "005000000000999AAA";
    let refused = "0193f0a2-4444-7000-8000-000000000001";
    let fine = "0193f0a2-4444-7000-8000-000000000002";
    let mut events = call_events(refused, "u-ghost", ghost);
    events.truncate(4);
    world.write_outbox(&events).await;
    let last = world.write_outbox(&call_events(fine, "u-ann", &world.agent_sf_id)).await;

    let mut running = Running::start(world.outbox_config(), &world.db).await;
    let progress = running.until_outbox_position(last).await;
    running.stop().await;

    assert_eq!(progress.dead_letters, 1);
    let letters = world.dead_letters().await;
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0].0, refused);
    assert!(letters[0].1.contains("INVALID_CROSS_REFERENCE_KEY"), "{}", letters[0].1);
    assert!(letters[0].1.contains(&format!("{refused}:u-ghost")), "{}", letters[0].1);
    assert!(tasks_for(&world.emulator, refused, "u-ghost").is_empty());
    assert_eq!(tasks_for(&world.emulator, fine, "u-ann").len(), 1);

    // The stored payload is the event itself, ready for replay.
    let payload_len = world.scalar_i64("SELECT LENGTH(payload) FROM dead_letters").await;
    assert!(payload_len > 10);
}

#[tokio::test]
async fn bad_rows_are_dead_lettered_with_their_reason() {
    let world = World::new().await;
    let garbage = world.write_raw("0193f0a2-5555-7000-8000-000000000001", 1, b"\xff\xff\xff not protobuf").await;
    let mut zero = call_events("0193f0a2-5555-7000-8000-000000000002", "u-ann", &world.agent_sf_id).remove(0);
    zero.sequence = 0;
    world.write_raw(&zero.call_id, 0, &switchboard_proto::Message::encode_to_vec(&zero)).await;
    let fine = "0193f0a2-5555-7000-8000-000000000003";
    let last = world.write_outbox(&call_events(fine, "u-ann", &world.agent_sf_id)).await;
    assert!(last > garbage);

    let mut running = Running::start(world.outbox_config(), &world.db).await;
    let progress = running.until_outbox_position(last).await;
    running.stop().await;

    assert_eq!(progress.dead_letters, 2);
    let letters = world.dead_letters().await;
    assert!(letters[0].1.starts_with("undecodable CallEvent"), "{:?}", letters[0]);
    assert_eq!(letters[0].0, "0193f0a2-5555-7000-8000-000000000001");
    assert!(letters[1].1.contains("sequence 0"), "{:?}", letters[1]);
    assert_eq!(tasks_for(&world.emulator, fine, "u-ann").len(), 1);
}

#[tokio::test]
async fn an_unlinked_agent_gets_no_task_and_the_reason_is_kept() {
    let world = World::new().await;
    let call = "0193f0a2-6666-7000-8000-000000000001";
    let last = world.write_outbox(&call_events(call, "u-unlinked", "")).await;
    let mut running = Running::start(world.outbox_config(), &world.db).await;
    running.until_outbox_position(last).await;
    running.stop().await;

    assert!(world.emulator.tasks().is_empty());
    assert_eq!(world.emulator.api_calls(), PREFLIGHT_API_CALLS, "no request besides the start-up preflight");
    let skipped = world
        .scalar_i64(&format!(
            "SELECT COUNT(*) FROM sync_tasks WHERE call_id = '{call}' AND user_id = 'u-unlinked' AND state LIKE '%not linked to a Salesforce user%'"
        ))
        .await;
    assert_eq!(skipped, 1);
    assert!(world.dead_letters().await.is_empty());
}

#[tokio::test]
async fn without_an_org_events_wait_and_sync_once_configured() {
    let world = World::new().await;
    let call = "0193f0a2-7777-7000-8000-000000000001";
    let last = world.write_outbox(&call_events(call, "u-ann", &world.agent_sf_id)).await;

    let config = ConnectorConfig { salesforce: None, ..world.outbox_config() };
    let running = Running::start(config, &world.db).await;
    // No reader exists in this mode: nothing can have moved.
    assert!(!running.progress.borrow().consuming);
    assert_eq!(world.scalar_i64("SELECT COUNT(*) FROM connector_cursors").await, 0);
    running.stop().await;
    assert_eq!(world.emulator.token_calls(), 0);

    let mut running = Running::start(world.outbox_config(), &world.db).await;
    running.until_outbox_position(last).await;
    running.stop().await;
    assert_eq!(tasks_for(&world.emulator, call, "u-ann").len(), 1);
}

#[tokio::test]
async fn shutdown_during_retries_leaves_the_event_for_the_next_run() {
    let world = World::new().await;
    let running = Running::start(world.outbox_config(), &world.db).await;
    world.emulator.inject_fault(Fault::ServerUnavailable { times: 1_000_000 });
    let call = "0193f0a2-8888-7000-8000-000000000001";
    let mut events = call_events(call, "u-ann", &world.agent_sf_id);
    events.truncate(4);
    let last = world.write_outbox(&events).await;

    let emulator = world.emulator.clone();
    eventually("the connector retries the write", || emulator.api_calls() >= PREFLIGHT_API_CALLS + 3).await;
    running.stop().await;
    // The batch holding `ended` was not committed.
    assert!(world.scalar_i64(&format!("SELECT COALESCE(MAX(position), 0) FROM connector_cursors WHERE name = '{CURSOR}'")).await < last);
    assert!(world.emulator.tasks().is_empty());

    world.emulator.clear_faults();
    let mut running = Running::start(world.outbox_config(), &world.db).await;
    running.until_outbox_position(last).await;
    running.stop().await;
    assert_eq!(tasks_for(&world.emulator, call, "u-ann").len(), 1);
}

#[tokio::test]
async fn a_refused_login_stalls_instead_of_dead_lettering() {
    let world = World::new().await;
    // Refused twice: the start-up preflight's login (the connector starts
    // anyway) and the first login of the writes.
    world.emulator.inject_fault(Fault::TokenError {
        status: 400,
        error: "invalid_grant".into(),
        error_description: "user hasn't approved this consumer".into(),
        times: 2,
    });
    let call = "0193f0a2-9999-7000-8000-000000000001";
    let last = world.write_outbox(&call_events(call, "u-ann", &world.agent_sf_id)).await;
    let mut running = Running::start(world.outbox_config(), &world.db).await;
    assert_eq!(world.emulator.token_calls(), 1, "the preflight's login was refused and the start went on");
    running.until_outbox_position(last).await;
    running.stop().await;
    assert_eq!(world.emulator.token_calls(), 3, "the refused login of the writes was retried");
    assert_eq!(tasks_for(&world.emulator, call, "u-ann").len(), 1);
    assert!(world.dead_letters().await.is_empty());
}

#[tokio::test]
async fn shutdown_abandons_a_slow_request_without_committing() {
    let world = World::new().await;
    let mut config = world.outbox_config();
    config.salesforce.as_mut().unwrap().request_timeout_secs = 300;
    let running = Running::start(config.clone(), &world.db).await;
    // The slow answer is the upsert's, not the start-up preflight's.
    world.emulator.inject_fault(Fault::Delay { millis: 120_000, times: 1 });
    let call = "0193f0a2-dddd-7000-8000-000000000001";
    let mut events = call_events(call, "u-ann", &world.agent_sf_id);
    events.truncate(4);
    let last = world.write_outbox(&events).await;

    let emulator = world.emulator.clone();
    eventually("the upsert reaches Salesforce", || emulator.api_calls() > PREFLIGHT_API_CALLS).await;
    let stopping = std::time::Instant::now();
    running.stop().await;
    assert!(stopping.elapsed() < std::time::Duration::from_secs(5), "stopped in {:?}", stopping.elapsed());
    assert!(world.scalar_i64(&format!("SELECT COALESCE(MAX(position), 0) FROM connector_cursors WHERE name = '{CURSOR}'")).await < last);

    let mut running = Running::start(config, &world.db).await;
    running.until_outbox_position(last).await;
    running.stop().await;
    assert_eq!(tasks_for(&world.emulator, call, "u-ann").len(), 1);
}
