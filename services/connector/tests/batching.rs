//! Task writes in batches: many calls in one sObject Collections request,
//! records refused one by one, and requests spaced out as the org's daily
//! API usage nears its limit.

mod common;

use std::time::Duration;

use common::*;
use salesforce_emulator::Fault;

fn call_id(n: usize) -> String {
    format!("0193f0a2-bbbb-7000-8000-{n:012}")
}

#[tokio::test]
async fn calls_are_written_two_hundred_tasks_a_request() {
    let world = World::new().await;
    let calls = 450;
    let mut last = 0;
    for n in 0..calls {
        last = world.write_outbox(&call_events(&call_id(n), "u-ann", &world.agent_sf_id)).await;
    }
    let mut config = world.outbox_config();
    if let Some(sf) = config.salesforce.as_mut() {
        // Only a full batch is written before the end: the deadline is far.
        sf.batch_deadline_ms = 20_000;
        sf.batch_update_deadline_ms = 20_000;
    }

    let mut running = Running::start(config, &world.db).await;
    assert_eq!(world.emulator.api_calls(), PREFLIGHT_API_CALLS);
    running.until_outbox_position(last).await;
    running.stop().await;

    assert_eq!(world.emulator.tasks().len(), calls, "one Task per call");
    for n in [0, 199, 200, 449] {
        let tasks = tasks_for(&world.emulator, &call_id(n), "u-ann");
        assert_eq!(tasks.len(), 1);
        let description = tasks[0]["Description"].as_str().unwrap();
        assert!(description.contains("recordings/"), "call {n}: the recording after the hang-up is in: {description}");
    }
    // 450 ended calls fill two batches of 200 and leave 50 for the last;
    // a recording that came after its batch was written is one more update
    // at most per batch boundary.
    let writes = world.emulator.api_calls() - PREFLIGHT_API_CALLS;
    assert!((3..=5).contains(&writes), "{writes} requests for {calls} calls");
    assert!(world.dead_letters().await.is_empty());
    let unsynced = world.scalar_i64("SELECT COUNT(*) FROM sync_tasks WHERE last_synced_at IS NULL OR salesforce_id IS NULL").await;
    assert_eq!(unsynced, 0);
}

#[tokio::test]
async fn a_refused_record_is_dead_lettered_alone_and_a_locked_one_is_sent_again() {
    let world = World::new().await;
    let locked = call_id(1);
    let invalid = call_id(2);
    let fine = call_id(3);
    world.emulator.inject_fault(Fault::locked_record(format!("{locked}:u-ann")));
    world.emulator.inject_fault(Fault::RecordError {
        external_id: format!("{invalid}:u-ann"),
        error_code: "FIELD_CUSTOM_VALIDATION_EXCEPTION".to_owned(),
        message: "Calls to this number must name a reason".to_owned(),
        times: 10,
    });
    let mut last = 0;
    for call in [&locked, &invalid, &fine] {
        let mut events = call_events(call, "u-ann", &world.agent_sf_id);
        events.truncate(4);
        last = world.write_outbox(&events).await;
    }

    let mut running = Running::start(world.outbox_config(), &world.db).await;
    let progress = running.until_outbox_position(last).await;
    running.stop().await;

    assert_eq!(tasks_for(&world.emulator, &locked, "u-ann").len(), 1, "the locked record is written on the second round");
    assert_eq!(tasks_for(&world.emulator, &fine, "u-ann").len(), 1);
    assert!(tasks_for(&world.emulator, &invalid, "u-ann").is_empty());
    assert_eq!(progress.dead_letters, 1);
    let letters = world.dead_letters().await;
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0].0, invalid);
    assert!(letters[0].1.contains("FIELD_CUSTOM_VALIDATION_EXCEPTION"), "{}", letters[0].1);
    assert!(letters[0].1.contains("must name a reason"), "{}", letters[0].1);
    // One request for the three, one more for the locked record alone.
    assert_eq!(world.emulator.api_calls(), PREFLIGHT_API_CALLS + 2);
    let status = world
        .scalar_i64(&format!("SELECT COUNT(*) FROM sync_tasks WHERE call_id = '{invalid}' AND state LIKE '%FIELD_CUSTOM_VALIDATION_EXCEPTION%'"))
        .await;
    assert_eq!(status, 1, "the refusal is in the Task's sync status");
}

#[tokio::test]
async fn near_the_daily_limit_requests_are_spaced_out_and_nothing_is_lost() {
    let world = World::new().await;
    let first = call_id(10);
    let second = call_id(11);
    // 14,000 of 15,000 used: past the 90 % the connector may use.
    world.emulator.set_api_usage(14_000);
    let mut config = world.outbox_config();
    if let Some(sf) = config.salesforce.as_mut() {
        sf.limit_backoff_secs = 3_600;
    }
    let mut running = Running::start(config.clone(), &world.db).await;

    // The first request goes: the connector learns the usage from its answer.
    let last = world.write_outbox(&call_events(&first, "u-ann", &world.agent_sf_id)[..4]).await;
    running.until_outbox_position(last).await;
    assert_eq!(tasks_for(&world.emulator, &first, "u-ann").len(), 1);
    let requests = world.emulator.api_calls();

    // The next waits: the connector holds the write back, by an hour here.
    world.write_outbox(&call_events(&second, "u-ann", &world.agent_sf_id)[..4]).await;
    let mut progress = running.progress.clone();
    let held = tokio::time::timeout(Duration::from_secs(30), progress.wait_for(|p| p.pacing.is_some()))
        .await
        .expect("the connector reports that it holds requests back")
        .expect("the connector runs")
        .clone();
    let wait = held.pacing.unwrap();
    assert!(wait > Duration::from_secs(3_000), "waits about limit_backoff_secs: {wait:?}");
    assert_eq!(world.emulator.api_calls(), requests, "no request while held back");
    assert!(tasks_for(&world.emulator, &second, "u-ann").is_empty());
    running.stop().await;

    // The window frees up; a restarted connector writes what was held back:
    // its events were never committed.
    world.emulator.set_api_usage(100);
    let mut running = Running::start(config, &world.db).await;
    running.until_outbox_position(last + 4).await;
    running.stop().await;
    assert_eq!(tasks_for(&world.emulator, &second, "u-ann").len(), 1);
    assert_eq!(world.emulator.tasks().len(), 2);
    assert!(world.dead_letters().await.is_empty());
}

#[tokio::test]
async fn events_arriving_while_their_calls_batch_is_written_go_into_the_next_one() {
    let world = World::new().await;
    let early = call_id(20);
    let late = call_id(21);
    let mut running = Running::start(world.outbox_config(), &world.db).await;

    // The first batch's request is answered two seconds late ...
    world.emulator.inject_fault(Fault::Delay { millis: 2_000, times: 1 });
    let events = call_events(&early, "u-ann", &world.agent_sf_id);
    world.write_outbox(&events[..4]).await;
    await_condition("the first batch's request reaches the org", Duration::from_secs(20), || async {
        let calls = world.emulator.api_calls();
        (calls > PREFLIGHT_API_CALLS).then_some(()).ok_or(format!("{calls} requests"))
    })
    .await;
    // ... and meanwhile the call's recording and another call come in.
    world.write_outbox(&events[4..]).await;
    let last = world.write_outbox(&call_events(&late, "u-ann", &world.agent_sf_id)).await;
    running.until_outbox_position(last).await;
    running.stop().await;

    // The recording was folded onto the state the first write left (the
    // Task known as created), not onto the state stored before it: one more
    // request updates the Task and creates the other call's.
    assert_eq!(world.emulator.api_calls() - PREFLIGHT_API_CALLS, 2);
    let tasks = tasks_for(&world.emulator, &early, "u-ann");
    assert_eq!(tasks.len(), 1);
    let description = tasks[0]["Description"].as_str().unwrap();
    assert!(description.contains(&format!("recordings/{early}")), "{description}");
    assert_eq!(tasks_for(&world.emulator, &late, "u-ann").len(), 1);
    assert!(world.dead_letters().await.is_empty());
    let unsynced = world.scalar_i64("SELECT COUNT(*) FROM sync_tasks WHERE last_synced_at IS NULL OR salesforce_id IS NULL").await;
    assert_eq!(unsynced, 0);
    let stored = world.scalar_i64("SELECT COUNT(*) FROM sync_calls").await;
    assert_eq!(stored, 2);
}
