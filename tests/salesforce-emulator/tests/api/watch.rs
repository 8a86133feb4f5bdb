//! Write watchers: every stored write is reported once, in order, with its
//! time and the record as it left it; rolled-back writes are not.

use std::time::Instant;

use reqwest::{Method, StatusCode};
use salesforce_emulator::RecordWrite;
use serde_json::json;
use tokio::sync::mpsc::UnboundedReceiver;

use crate::harness::Org;

/// The writes reported so far, without waiting: a request's writes are
/// reported before its answer is sent.
fn reported(writes: &mut UnboundedReceiver<RecordWrite>) -> Vec<RecordWrite> {
    let mut out = Vec::new();
    while let Ok(write) = writes.try_recv() {
        out.push(write);
    }
    out
}

#[tokio::test]
async fn writes_are_reported_with_their_time_and_content() {
    let org = Org::start().await;
    let token = org.token().await;
    let mut writes = org.emulator.watch_writes();
    let before = Instant::now();

    let contact = org
        .emulator
        .insert("Contact", json!({"LastName": "Roe"}))
        .expect("seed");
    let seeded = reported(&mut writes);
    assert_eq!(seeded.len(), 1);
    assert_eq!(
        (
            seeded[0].sobject.as_str(),
            seeded[0].id.as_str(),
            seeded[0].created
        ),
        ("Contact", contact.as_str(), true)
    );

    let path = "v62.0/sobjects/Task/Switchboard_Key__c/call-1:u1";
    let created = org
        .call(
            Method::PATCH,
            path,
            &token,
            Some(json!({"Subject": "Call"})),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    let updated = org
        .call(
            Method::PATCH,
            path,
            &token,
            Some(json!({"Subject": "Call, noted"})),
        )
        .await;
    assert_eq!(updated.status, StatusCode::OK, "{:?}", updated.body);
    let tasks = reported(&mut writes);
    assert_eq!(tasks.len(), 2);
    assert!(tasks
        .iter()
        .all(|w| w.sobject == "Task" && w.id == created.body["id"]));
    assert_eq!((tasks[0].created, tasks[1].created), (true, false));
    assert_eq!(tasks[0].record["Subject"], "Call");
    assert_eq!(tasks[1].record["Subject"], "Call, noted");
    assert_eq!(tasks[1].record["Switchboard_Key__c"], "call-1:u1");
    assert!(before <= seeded[0].at && seeded[0].at <= tasks[0].at && tasks[0].at <= tasks[1].at);
    assert!(tasks[1].at <= Instant::now());

    // A rolled-back collection reports nothing; a partial one its successes.
    let upsert = "v62.0/composite/sobjects/Task/Switchboard_Key__c";
    let task = |key: &str, call_type: &str| json!({"attributes": {"type": "Task"}, "Switchboard_Key__c": key, "CallType": call_type});
    let rolled_back = json!({"allOrNone": true, "records": [task("call-2:u1", "Inbound"), task("call-3:u1", "Sideways")]});
    assert_eq!(
        org.call(Method::PATCH, upsert, &token, Some(rolled_back))
            .await
            .status,
        StatusCode::OK
    );
    assert!(reported(&mut writes).is_empty());
    let partial = json!({"allOrNone": false, "records": [task("call-2:u1", "Inbound"), task("call-3:u1", "Sideways")]});
    assert_eq!(
        org.call(Method::PATCH, upsert, &token, Some(partial))
            .await
            .status,
        StatusCode::OK
    );
    let stored = reported(&mut writes);
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].record["Switchboard_Key__c"], "call-2:u1");
    assert_eq!(stored[0].record["CallType"], "Inbound");

    // Without a receiver the org keeps working and keeps no copies.
    drop(writes);
    let again = org
        .call(
            Method::PATCH,
            path,
            &token,
            Some(json!({"Subject": "Call, again"})),
        )
        .await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(org.emulator.tasks().len(), 2);
}
