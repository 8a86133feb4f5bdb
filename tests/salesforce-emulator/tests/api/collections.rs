//! sObject Collections: per-record results with `statusCode`, allOrNone
//! rollback, the 200-record limit.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::harness::Org;

const UPSERT: &str = "v62.0/composite/sobjects/Task/Switchboard_Key__c";

fn task(key: &str, extra: Value) -> Value {
    let mut record = json!({"attributes": {"type": "Task"}, "Switchboard_Key__c": key});
    if let (Some(record), Some(extra)) = (record.as_object_mut(), extra.as_object()) {
        record.extend(extra.clone());
    }
    record
}

#[tokio::test]
async fn partial_success_reports_each_record() {
    let org = Org::start().await;
    let token = org.token().await;
    org.emulator
        .insert(
            "Task",
            json!({"Switchboard_Key__c": "old", "Subject": "before"}),
        )
        .expect("seed");
    let body = json!({"allOrNone": false, "records": [
        task("new", json!({"Subject": "fresh"})),
        task("too-long", json!({"Subject": "x".repeat(300)})),
        task("old", json!({"Subject": "after"})),
    ]});
    let answer = org.call(Method::PATCH, UPSERT, &token, Some(body)).await;
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
    let results = answer.body.as_array().expect("array");
    assert_eq!(results.len(), 3);
    assert_eq!(results[0]["success"], true);
    assert_eq!(results[0]["created"], true);
    assert!(results[0]["id"]
        .as_str()
        .is_some_and(|id| id.starts_with("00T")));
    assert_eq!(results[1]["success"], false);
    let error = &results[1]["errors"][0];
    assert_eq!(error["statusCode"], "STRING_TOO_LONG");
    assert!(error.get("errorCode").is_none());
    assert_eq!(error["fields"], json!(["Subject"]));
    assert_eq!(results[2]["success"], true);
    assert_eq!(results[2]["created"], false);

    let tasks = org.emulator.tasks();
    assert_eq!(tasks.len(), 2);
    assert!(tasks
        .iter()
        .any(|t| t["Switchboard_Key__c"] == "old" && t["Subject"] == "after"));
    assert!(tasks.iter().any(|t| t["Switchboard_Key__c"] == "new"));
}

#[tokio::test]
async fn all_or_none_rolls_every_record_back() {
    let org = Org::start().await;
    let token = org.token().await;
    let body = json!({"allOrNone": true, "records": [
        task("a", json!({"Subject": "ok"})),
        task("b", json!({"CallType": "Sideways"})),
        task("c", json!({"Subject": "ok too"})),
    ]});
    let answer = org.call(Method::PATCH, UPSERT, &token, Some(body)).await;
    assert_eq!(answer.status, StatusCode::OK);
    let codes: Vec<&str> = answer
        .body
        .as_array()
        .expect("array")
        .iter()
        .map(|r| r["errors"][0]["statusCode"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        codes,
        [
            "ALL_OR_NONE_OPERATION_ROLLED_BACK",
            "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
            "ALL_OR_NONE_OPERATION_ROLLED_BACK"
        ]
    );
    assert!(answer
        .body
        .as_array()
        .is_some_and(|r| r.iter().all(|r| r["success"] == false)));
    assert!(org.emulator.tasks().is_empty());
}

#[tokio::test]
async fn malformed_requests_fail_as_a_whole() {
    let org = Org::start().await;
    let token = org.token().await;
    let many: Vec<Value> = (0..201)
        .map(|i| task(&format!("k{i}"), json!({})))
        .collect();
    let answer = org
        .call(
            Method::PATCH,
            UPSERT,
            &token,
            Some(json!({"records": many})),
        )
        .await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert_eq!(answer.error_code(), "EXCEEDED_ID_LIMIT");

    let unreadable = json!({"records": [task("fine", json!({})), task("words", json!({"CallDurationInSeconds": "long"}))]});
    let answer = org
        .call(Method::PATCH, UPSERT, &token, Some(unreadable))
        .await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert_eq!(answer.error_code(), "JSON_PARSER_ERROR");

    let untyped = json!({"records": [{"Switchboard_Key__c": "k"}]});
    let answer = org.call(Method::PATCH, UPSERT, &token, Some(untyped)).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert!(org.emulator.tasks().is_empty());

    let old_api = org
        .call(
            Method::PATCH,
            "v45.0/composite/sobjects/Task/Switchboard_Key__c",
            &token,
            Some(json!({"records": []})),
        )
        .await;
    assert_eq!(old_api.status, StatusCode::NOT_FOUND);
    let not_ext = org
        .call(
            Method::PATCH,
            "v62.0/composite/sobjects/Task/Subject",
            &token,
            Some(json!({"records": []})),
        )
        .await;
    assert_eq!(not_ext.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn duplicate_and_missing_keys_fail_their_records() {
    let org = Org::start().await;
    let token = org.token().await;
    let body = json!({"records": [
        task("dup", json!({})),
        task("DUP", json!({})),
        {"attributes": {"type": "Task"}, "Subject": "no key"},
        task("single", json!({})),
    ]});
    let answer = org.call(Method::PATCH, UPSERT, &token, Some(body)).await;
    assert_eq!(answer.status, StatusCode::OK);
    let codes: Vec<&str> = answer
        .body
        .as_array()
        .expect("array")
        .iter()
        .map(|r| r["errors"][0]["statusCode"].as_str().unwrap_or("ok"))
        .collect();
    assert_eq!(
        codes,
        [
            "DUPLICATE_EXTERNAL_ID",
            "DUPLICATE_EXTERNAL_ID",
            "MISSING_ARGUMENT",
            "ok"
        ]
    );
    assert_eq!(org.emulator.tasks().len(), 1);
}

#[tokio::test]
async fn collection_create_and_update_by_id() {
    let org = Org::start().await;
    let token = org.token().await;
    let body = json!({"allOrNone": false, "records": [
        {"attributes": {"type": "Account"}, "Name": "Acme"},
        {"attributes": {"type": "Contact"}, "FirstName": "No", "Email": "x@example.com"},
        {"attributes": {"type": "Lead"}, "LastName": "Doe", "Company": "Acme"},
    ]});
    let answer = org
        .call(Method::POST, "v62.0/composite/sobjects", &token, Some(body))
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
    let results = answer.body.as_array().expect("array");
    assert_eq!(results[0]["success"], true);
    assert!(results[0].get("created").is_none());
    assert_eq!(
        results[1]["errors"][0]["statusCode"],
        "REQUIRED_FIELD_MISSING"
    );
    assert_eq!(results[2]["success"], true);
    let account = results[0]["id"].as_str().expect("id").to_owned();

    let update = json!({"records": [{"attributes": {"type": "Account"}, "id": account, "Phone": "+1 415 555 0100"}]});
    let answer = org
        .call(
            Method::PATCH,
            "v62.0/composite/sobjects",
            &token,
            Some(update),
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
    assert_eq!(answer.body[0]["success"], true);
    assert_eq!(
        org.emulator.records("Account")[0]["Phone"],
        "+1 415 555 0100"
    );
}
