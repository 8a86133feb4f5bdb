//! Who and What on the Task (F10, F11, F14, F15): the record an agent
//! related the call to and the Case or Opportunity it assigned the call to,
//! end to end through the outbox into the Salesforce emulator.

mod common;

use common::*;
use serde_json::json;
use switchboard_connector::source::outbox::CURSOR;
use switchboard_proto::v1::{self, call_event::Kind};
use switchboard_proto::CallEvent;

fn related(call_id: &str, sequence: u64, object_type: &str, record_id: &str) -> CallEvent {
    event(
        call_id,
        sequence,
        Kind::Related(v1::CallRelated {
            user_id: "u-ann".into(),
            record_id: record_id.into(),
            object_type: object_type.into(),
            name: "Carla Caller".into(),
        }),
    )
}

fn assigned(call_id: &str, sequence: u64, assignment_id: &str, object_type: &str, record_id: &str) -> CallEvent {
    let new_case = record_id.is_empty();
    event(
        call_id,
        sequence,
        Kind::Assigned(v1::CallAssigned {
            assignment_id: assignment_id.into(),
            user_id: "u-ann".into(),
            object_type: object_type.into(),
            record_id: record_id.into(),
            subject: if new_case { "Handset hums".into() } else { String::new() },
            description: if new_case { "Hums on every call since Monday".into() } else { String::new() },
            name: if new_case { String::new() } else { "00001001".into() },
        }),
    )
}

/// The stored sync state of the Task of `u-ann` in `call`.
async fn task_state(world: &World, call: &str) -> serde_json::Value {
    let text: String =
        switchboard_store::sqlx::query_scalar("SELECT state FROM sync_tasks WHERE call_id = $1 AND user_id = 'u-ann'")
            .bind(call)
            .fetch_one(world.db.pool())
            .await
            .unwrap();
    serde_json::from_str(&text).unwrap()
}

#[tokio::test]
async fn a_related_contact_and_an_existing_case_become_who_and_what() {
    let world = World::new().await;
    let contact = world.emulator.insert("Contact", json!({"LastName": "Caller", "FirstName": "Carla"})).unwrap();
    let case = world.emulator.insert("Case", json!({"Subject": "Earlier trouble"})).unwrap();
    let call = "0193f0a2-aaaa-7000-8000-000000000001";
    // The assignment comes before `started`, the related Contact after the end.
    let mut events = vec![assigned(call, 7, "asg-existing", "Case", &case)];
    events.extend(call_events(call, "u-ann", &world.agent_sf_id));
    events.push(related(call, 6, "Contact", &contact));
    let last = world.write_outbox(&events).await;

    let mut running = Running::start(world.outbox_config(), &world.db).await;
    running.until_outbox_position(last).await;
    running.stop().await;

    let tasks = tasks_for(&world.emulator, call, "u-ann");
    assert_eq!(tasks.len(), 1, "{tasks:#?}");
    assert_eq!(tasks[0]["WhoId"], contact.as_str());
    assert_eq!(tasks[0]["WhatId"], case.as_str());
    assert_eq!(world.emulator.records("Case").len(), 1, "no Case is created for an existing one");
    assert!(task_state(&world, call).await.get("note").is_none());
    assert!(world.dead_letters().await.is_empty());
}

#[tokio::test]
async fn a_new_case_is_created_once_however_often_the_events_come() {
    let world = World::new().await;
    let contact = world.emulator.insert("Contact", json!({"LastName": "Caller"})).unwrap();
    let call = "0193f0a2-bbbb-7000-8000-000000000001";
    let mut events = call_events(call, "u-ann", &world.agent_sf_id);
    events.push(related(call, 6, "Contact", &contact));
    events.push(assigned(call, 7, "0190b7c4-6a1e-7cc0-8f5e-2b1a4d2e9f10", "Case", ""));
    let last = world.write_outbox(&events).await;

    let mut running = Running::start(world.outbox_config(), &world.db).await;
    running.until_outbox_position(last).await;
    running.stop().await;

    let cases = world.emulator.records("Case");
    assert_eq!(cases.len(), 1, "{cases:#?}");
    let case = &cases[0];
    assert_eq!(case["Switchboard_Assignment_Id__c"], "0190b7c4-6a1e-7cc0-8f5e-2b1a4d2e9f10");
    assert_eq!(case["Origin"], "Phone");
    assert_eq!(case["Subject"], "Handset hums");
    assert_eq!(case["Description"], "Hums on every call since Monday");
    assert_eq!(case["ContactId"], contact.as_str());
    assert_eq!(case["OwnerId"], world.agent_sf_id.as_str());
    let tasks = tasks_for(&world.emulator, call, "u-ann");
    assert_eq!(tasks.len(), 1);
    assert_eq!(tasks[0]["WhatId"], case["Id"]);
    assert_eq!(tasks[0]["WhoId"], contact.as_str());

    // Every event delivered again (the cursor back at the start, the sync
    // state kept): all duplicates, no request to Salesforce but the
    // start-up preflight's.
    let api_calls = world.emulator.api_calls();
    world.execute(&format!("UPDATE connector_cursors SET position = 0 WHERE name = '{CURSOR}'")).await;
    let mut running = Running::start(world.outbox_config(), &world.db).await;
    let progress = running.until_outbox_position(last).await;
    running.stop().await;
    assert_eq!(progress.records, events.len() as u64);
    assert_eq!(world.emulator.api_calls(), api_calls + PREFLIGHT_API_CALLS, "no request besides the start-up preflight");
    assert_eq!(world.emulator.records("Case").len(), 1);

    // Replay from the start after losing every sync state, as after a crash
    // between creating the Case and storing its id: the upsert by the
    // assignment id finds the same Case.
    world.execute("DELETE FROM sync_tasks").await;
    world.execute("DELETE FROM sync_calls").await;
    world.execute(&format!("UPDATE connector_cursors SET position = 0 WHERE name = '{CURSOR}'")).await;
    let mut running = Running::start(world.outbox_config(), &world.db).await;
    running.until_outbox_position(last).await;
    running.stop().await;

    let cases = world.emulator.records("Case");
    assert_eq!(cases.len(), 1, "still one Case: {cases:#?}");
    assert_eq!(cases[0]["Id"], case["Id"]);
    let tasks = tasks_for(&world.emulator, call, "u-ann");
    assert_eq!(tasks.len(), 1);
    assert_eq!(tasks[0]["WhatId"], case["Id"]);
    assert!(world.dead_letters().await.is_empty());
}

#[tokio::test]
async fn a_lead_keeps_the_who_and_the_case_is_left_out_with_the_reason() {
    let world = World::new().await;
    let lead = world.emulator.insert("Lead", json!({"LastName": "Caller", "Company": "Acme"})).unwrap();
    let case = world.emulator.insert("Case", json!({"Subject": "Earlier trouble"})).unwrap();
    let call = "0193f0a2-cccc-7000-8000-000000000001";
    let mut events = call_events(call, "u-ann", &world.agent_sf_id);
    events.push(related(call, 6, "Lead", &lead));
    events.push(assigned(call, 7, "asg-lead", "Case", &case));
    let last = world.write_outbox(&events).await;

    let mut running = Running::start(world.outbox_config(), &world.db).await;
    running.until_outbox_position(last).await;
    running.stop().await;

    let tasks = tasks_for(&world.emulator, call, "u-ann");
    assert_eq!(tasks.len(), 1);
    assert_eq!(tasks[0]["WhoId"], lead.as_str());
    assert_eq!(tasks[0]["WhatId"], serde_json::Value::Null);
    let state = task_state(&world, call).await;
    let note = state["note"].as_str().expect("the reason is stored");
    assert!(note.contains(&case) && note.contains(&lead), "{note}");
    assert!(state["created"] == true && state["skipped"].is_null() && state["rejected"].is_null(), "{state}");
    assert!(world.dead_letters().await.is_empty(), "nothing was refused");
}

#[tokio::test]
async fn the_task_names_the_related_caller_and_carries_notes_quality_and_rating() {
    let world = World::new().await;
    let contact = world.emulator.insert("Contact", json!({"LastName": "Hopper", "FirstName": "Grace"})).unwrap();
    let call = "0193f0a2-aaaa-7000-8000-000000000009";
    // 40,000 characters, some outside the BMP: more than Description holds.
    let long: String = "é中😀".repeat(13_334).chars().take(40_000).collect();
    let note = |sequence, note_id: &str, text: &str| {
        event(call, sequence, Kind::Note(v1::CallNote { note_id: note_id.into(), user_id: "u-ann".into(), text: text.into() }))
    };
    let mut events = call_events(call, "u-ann", &world.agent_sf_id);
    let mut grace = related(call, 6, "Contact", &contact);
    if let Some(Kind::Related(r)) = &mut grace.kind {
        r.name = "Grace Hopper".into();
    }
    events.extend([
        grace,
        note(7, "n1", "Wants the invoice again"),
        event(
            call,
            8,
            Kind::Quality(v1::QualityReport {
                legs: vec![
                    v1::LegQuality { leg: v1::Leg::Caller as i32, mos: 4.1, ..Default::default() },
                    v1::LegQuality { leg: v1::Leg::Callee as i32, mos: 3.7, ..Default::default() },
                ],
            }),
        ),
        event(call, 9, Kind::Rating(v1::QualityRating { user_id: "u-ann".into(), score: 3, comment: "echo".into() })),
        // The first note replayed under a new sequence, then a long one.
        note(10, "n1", "Wants the invoice again"),
        note(11, "n2", &long),
    ]);
    let last = world.write_outbox(&events).await;

    let mut running = Running::start(world.outbox_config(), &world.db).await;
    running.until_outbox_position(last).await;
    running.stop().await;

    let tasks = tasks_for(&world.emulator, call, "u-ann");
    assert_eq!(tasks.len(), 1, "{tasks:#?}");
    assert_eq!(tasks[0]["Subject"], "Inbound call from Grace Hopper (+14155550100)");
    assert_eq!(tasks[0]["CallDisposition"], "answered");
    let description = tasks[0]["Description"].as_str().unwrap();
    let head: String = description.chars().take(500).collect();
    assert!(description.encode_utf16().count() <= 32_000);
    assert!(description.contains("Measured quality (MOS): caller 4.1, callee 3.7"), "{head}");
    assert!(description.contains("Agent's rating of the audio: 3/5 (echo)"), "{head}");
    assert!(description.contains(&format!("https://switchboard.example.com/recordings/{call}")));
    assert_eq!(description.matches("Wants the invoice again").count(), 1, "{head}");
    let tail: String = description.chars().rev().take(100).collect::<Vec<_>>().into_iter().rev().collect();
    assert!(description.ends_with("… [cut: the full notes are in Switchboard]"), "{tail}");
    assert!(world.dead_letters().await.is_empty());
}
