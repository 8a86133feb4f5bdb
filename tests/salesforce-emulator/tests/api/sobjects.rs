//! Single-record resources: upsert by external id, create, read, update,
//! delete, field validation and the session and version checks.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::harness::Org;

const UPSERT: &str = "sobjects/Task/Switchboard_Key__c";

#[tokio::test]
async fn upsert_creates_then_updates_on_current_api() {
    let org = Org::start().await;
    let token = org.token().await;
    let body = json!({"Subject": "Inbound call", "TaskSubtype": "Call", "Type": "Call", "CallType": "Inbound", "CallDurationInSeconds": 42, "Status": "Completed", "ActivityDate": "2024-05-01"});
    let created = org
        .call(
            Method::PATCH,
            &format!("v62.0/{UPSERT}/call-1:agent-1"),
            &token,
            Some(body),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    assert_eq!(created.body["success"], true);
    assert_eq!(created.body["created"], true);
    assert_eq!(created.body["errors"], json!([]));
    let id = created.body["id"].as_str().expect("id").to_owned();
    assert_eq!(id.len(), 18);
    assert!(id.starts_with("00T"));

    let updated = org
        .call(
            Method::PATCH,
            &format!("v62.0/{UPSERT}/call-1:agent-1"),
            &token,
            Some(json!({"CallDisposition": "Resolved"})),
        )
        .await;
    assert_eq!(updated.status, StatusCode::OK, "{:?}", updated.body);
    assert_eq!(
        updated.body,
        json!({"id": id, "success": true, "errors": [], "created": false})
    );

    let tasks = org.emulator.tasks();
    assert_eq!(tasks.len(), 1);
    let task = &tasks[0];
    assert_eq!(task["Id"], id.as_str());
    assert_eq!(task["Switchboard_Key__c"], "call-1:agent-1");
    assert_eq!(task["Subject"], "Inbound call");
    assert_eq!(task["CallDisposition"], "Resolved");
    assert_eq!(task["CallDurationInSeconds"], 42);
    assert_eq!(task["TaskSubtype"], "Call");
    assert_eq!(task["OwnerId"], org.emulator.user_id().as_str());
    assert_eq!(task["WhoId"], Value::Null);
    assert_eq!(task["attributes"]["type"], "Task");
}

#[tokio::test]
async fn a_case_upserted_twice_by_its_assignment_id_is_created_once() {
    let org = Org::start().await;
    let token = org.token().await;
    let contact = org
        .emulator
        .insert("Contact", json!({"LastName": "Caller"}))
        .expect("contact");
    let body = json!({"Subject": "Broken phone", "Description": "It hums", "Origin": "Phone", "ContactId": contact});
    let path = "v62.0/sobjects/Case/Switchboard_Assignment_Id__c/assignment-1";
    let first = org
        .call(Method::PATCH, path, &token, Some(body.clone()))
        .await;
    assert_eq!(first.status, StatusCode::CREATED, "{:?}", first.body);
    let again = org.call(Method::PATCH, path, &token, Some(body)).await;
    assert_eq!(again.status, StatusCode::OK, "{:?}", again.body);
    assert_eq!(again.body["created"], false);
    assert_eq!(again.body["id"], first.body["id"]);
    let id = first.body["id"].as_str().expect("id");
    assert!(id.starts_with("500"), "{id}");

    let cases = org.emulator.records("Case");
    assert_eq!(cases.len(), 1, "{cases:#?}");
    assert_eq!(cases[0]["Switchboard_Assignment_Id__c"], "assignment-1");
    assert_eq!(cases[0]["Origin"], "Phone");
    assert_eq!(cases[0]["ContactId"], contact.as_str());
    assert_eq!(cases[0]["Status"], "New");
}

#[tokio::test]
async fn upsert_update_before_api_46_answers_204_without_body() {
    let org = Org::start().await;
    let token = org.token().await;
    let created = org
        .call(
            Method::PATCH,
            &format!("v45.0/{UPSERT}/k45"),
            &token,
            Some(json!({"Subject": "a"})),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED);
    assert!(created.body.get("created").is_none(), "{:?}", created.body);
    let updated = org
        .call(
            Method::PATCH,
            &format!("v45.0/{UPSERT}/k45"),
            &token,
            Some(json!({"Subject": "b"})),
        )
        .await;
    assert_eq!(updated.status, StatusCode::NO_CONTENT);
    assert_eq!(updated.body, Value::Null);
    assert_eq!(org.emulator.tasks()[0]["Subject"], "b");
}

#[tokio::test]
async fn task_subtype_is_create_only() {
    let org = Org::start().await;
    let token = org.token().await;
    let path = format!("v62.0/{UPSERT}/sub-1");
    org.call(
        Method::PATCH,
        &path,
        &token,
        Some(json!({"TaskSubtype": "Call"})),
    )
    .await;
    let answer = org
        .call(
            Method::PATCH,
            &path,
            &token,
            Some(json!({"TaskSubtype": "Call", "Subject": "x"})),
        )
        .await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert_eq!(answer.error_code(), "INVALID_FIELD_FOR_INSERT_UPDATE");
    assert!(answer.body[0]["message"]
        .as_str()
        .is_some_and(|m| m.contains("TaskSubtype")));
    assert_eq!(answer.body[0]["fields"], json!(["TaskSubtype"]));
    assert_eq!(
        org.emulator.tasks()[0]["Subject"],
        Value::Null,
        "a refused write changes nothing"
    );
}

#[tokio::test]
async fn read_only_fields_are_described_so_and_refused_on_write() {
    let org = Org::start_with(|config| {
        config.read_only_fields = vec![
            "Task.CallType".to_owned(),
            "Case.Switchboard_Assignment_Id__c".to_owned(),
        ];
    })
    .await;
    let token = org.token().await;
    let describe = org
        .call(Method::GET, "v62.0/sobjects/Task/describe", &token, None)
        .await;
    let call_type = describe.body["fields"]
        .as_array()
        .expect("fields")
        .iter()
        .find(|f| f["name"] == "CallType")
        .cloned()
        .expect("CallType");
    assert_eq!(
        (&call_type["createable"], &call_type["updateable"]),
        (&json!(false), &json!(false))
    );

    let path = format!("v62.0/{UPSERT}/ro-1");
    let refused = org
        .call(
            Method::PATCH,
            &path,
            &token,
            Some(json!({"Subject": "x", "CallType": "Inbound"})),
        )
        .await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    assert_eq!(refused.error_code(), "INVALID_FIELD_FOR_INSERT_UPDATE");
    assert_eq!(refused.body[0]["fields"], json!(["CallType"]));
    assert!(
        org.emulator.tasks().is_empty(),
        "a refused write creates nothing"
    );
    let created = org
        .call(Method::PATCH, &path, &token, Some(json!({"Subject": "x"})))
        .await;
    assert_eq!(created.status, StatusCode::CREATED);
    let update = org
        .call(
            Method::PATCH,
            &path,
            &token,
            Some(json!({"CallType": "Inbound"})),
        )
        .await;
    assert_eq!(update.error_code(), "INVALID_FIELD_FOR_INSERT_UPDATE");

    // A read-only external id cannot key a new record.
    let case = org
        .call(
            Method::PATCH,
            "v62.0/sobjects/Case/Switchboard_Assignment_Id__c/a-1",
            &token,
            Some(json!({"Subject": "x"})),
        )
        .await;
    assert_eq!(case.status, StatusCode::BAD_REQUEST);
    assert_eq!(case.error_code(), "INVALID_FIELD_FOR_INSERT_UPDATE");
    assert_eq!(
        case.body[0]["fields"],
        json!(["Switchboard_Assignment_Id__c"])
    );
    assert!(org.emulator.records("Case").is_empty());
}

#[tokio::test]
async fn upsert_errors_have_salesforce_codes() {
    let org = Org::start().await;
    let token = org.token().await;
    let not_ext = org
        .call(
            Method::PATCH,
            "v62.0/sobjects/Task/Subject/x",
            &token,
            Some(json!({})),
        )
        .await;
    assert_eq!(not_ext.status, StatusCode::NOT_FOUND);
    assert_eq!(not_ext.error_code(), "NOT_FOUND");
    let unknown = org
        .call(
            Method::PATCH,
            "v62.0/sobjects/Widget/Switchboard_Key__c/x",
            &token,
            Some(json!({})),
        )
        .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);

    let cases: Vec<(Value, &str, Option<&str>)> = vec![
        (
            json!({"Subject": "x".repeat(256)}),
            "STRING_TOO_LONG",
            Some("Subject"),
        ),
        (
            json!({"CallDisposition": "x".repeat(256)}),
            "STRING_TOO_LONG",
            Some("CallDisposition"),
        ),
        (
            json!({"CallObject": "x".repeat(256)}),
            "STRING_TOO_LONG",
            Some("CallObject"),
        ),
        (
            json!({"Description": "x".repeat(32001)}),
            "STRING_TOO_LONG",
            Some("Description"),
        ),
        (
            json!({"CallType": "Sideways"}),
            "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
            Some("CallType"),
        ),
        (
            json!({"CallDurationInSeconds": 1.5}),
            "INVALID_TYPE_ON_FIELD_IN_RECORD",
            Some("CallDurationInSeconds"),
        ),
        (
            json!({"CallDurationInSeconds": "long"}),
            "JSON_PARSER_ERROR",
            None,
        ),
        (
            json!({"ActivityDate": "01/05/2024"}),
            "JSON_PARSER_ERROR",
            None,
        ),
        (json!({"Colour": "red"}), "INVALID_FIELD", None),
        (
            json!({"OwnerId": "0055g00000NoOne"}),
            "INVALID_CROSS_REFERENCE_KEY",
            Some("OwnerId"),
        ),
        (
            json!({"OwnerId": "not-an-id"}),
            "MALFORMED_ID",
            Some("OwnerId"),
        ),
        (
            json!({"WhoId": "0015g00000AcctX"}),
            "FIELD_INTEGRITY_EXCEPTION",
            Some("WhoId"),
        ),
        (
            json!({"Switchboard_Key__c": "another"}),
            "INVALID_FIELD",
            Some("Switchboard_Key__c"),
        ),
    ];
    for (body, code, field) in cases {
        let answer = org
            .call(
                Method::PATCH,
                &format!("v62.0/{UPSERT}/bad"),
                &token,
                Some(body.clone()),
            )
            .await;
        assert_eq!(
            answer.status,
            StatusCode::BAD_REQUEST,
            "{body}: {:?}",
            answer.body
        );
        assert_eq!(answer.error_code(), code, "{body}: {:?}", answer.body);
        if let Some(field) = field {
            assert_eq!(answer.body[0]["fields"], json!([field]), "{body}");
        }
    }
    let malformed = org
        .call_raw(
            Method::PATCH,
            &format!("v62.0/{UPSERT}/bad"),
            &token,
            "{\"Subject\": ",
        )
        .await;
    assert_eq!(malformed.status, StatusCode::BAD_REQUEST);
    assert_eq!(malformed.error_code(), "JSON_PARSER_ERROR");
    assert!(org.emulator.tasks().is_empty());
}

#[tokio::test]
async fn a_lead_in_who_id_allows_no_what_id() {
    let org = Org::start().await;
    let token = org.token().await;
    let lead = org
        .emulator
        .insert(
            "Lead",
            json!({"LastName": "Doe", "Company": "Acme", "Phone": "+1 415 555 0100"}),
        )
        .expect("lead");
    let account = org
        .emulator
        .insert("Account", json!({"Name": "Acme"}))
        .expect("account");
    let contact = org
        .emulator
        .insert("Contact", json!({"LastName": "Roe", "AccountId": account}))
        .expect("contact");
    let case = org
        .emulator
        .insert(
            "Case",
            json!({"Subject": "Help", "ContactId": contact, "Origin": "Phone"}),
        )
        .expect("case");
    assert!(
        lead.starts_with("00Q")
            && account.starts_with("001")
            && contact.starts_with("003")
            && case.starts_with("500")
    );

    let refused = org
        .call(
            Method::PATCH,
            &format!("v62.0/{UPSERT}/lead-1"),
            &token,
            Some(json!({"WhoId": lead, "WhatId": account})),
        )
        .await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    assert_eq!(refused.error_code(), "FIELD_INTEGRITY_EXCEPTION");

    let with_lead = org
        .call(
            Method::PATCH,
            &format!("v62.0/{UPSERT}/lead-1"),
            &token,
            Some(json!({"WhoId": lead})),
        )
        .await;
    assert_eq!(with_lead.status, StatusCode::CREATED);
    let with_contact = org
        .call(
            Method::PATCH,
            &format!("v62.0/{UPSERT}/contact-1"),
            &token,
            Some(json!({"WhoId": &contact[..15], "WhatId": case})),
        )
        .await;
    assert_eq!(
        with_contact.status,
        StatusCode::CREATED,
        "{:?}",
        with_contact.body
    );
    let task = org
        .emulator
        .tasks()
        .into_iter()
        .find(|t| t["Switchboard_Key__c"] == "contact-1")
        .expect("task");
    assert_eq!(
        task["WhoId"],
        contact.as_str(),
        "15-character ids are stored in their 18-character form"
    );
    assert_eq!(task["WhatId"], case.as_str());
}

#[tokio::test]
async fn owners_must_be_known_users() {
    let org = Org::start().await;
    let token = org.token().await;
    let agent = org.emulator.add_user("agent@example.com").expect("user");
    let answer = org
        .call(
            Method::PATCH,
            &format!("v62.0/{UPSERT}/owned"),
            &token,
            Some(json!({"OwnerId": agent})),
        )
        .await;
    assert_eq!(answer.status, StatusCode::CREATED, "{:?}", answer.body);
    assert_eq!(org.emulator.tasks()[0]["OwnerId"], agent.as_str());
}

#[tokio::test]
async fn several_matching_records_answer_300_with_their_urls() {
    let org = Org::start().await;
    let token = org.token().await;
    let a = org
        .emulator
        .insert("Task", json!({"Switchboard_Key__c": "twin"}))
        .expect("a");
    let b = org
        .emulator
        .insert("Task", json!({"Switchboard_Key__c": "twin"}))
        .expect("b");
    let answer = org
        .call(
            Method::PATCH,
            &format!("v62.0/{UPSERT}/twin"),
            &token,
            Some(json!({"Subject": "x"})),
        )
        .await;
    assert_eq!(answer.status, StatusCode::MULTIPLE_CHOICES);
    assert_eq!(
        answer.body,
        json!([
            format!("/services/data/v62.0/sobjects/Task/{a}"),
            format!("/services/data/v62.0/sobjects/Task/{b}")
        ])
    );
}

#[tokio::test]
async fn create_read_update_delete_by_id() {
    let org = Org::start().await;
    let token = org.token().await;
    let created = org
        .call(
            Method::POST,
            "v62.0/sobjects/Case",
            &token,
            Some(json!({"Subject": "Caller needs help", "Origin": "Phone"})),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    assert_eq!(created.body["success"], true);
    let id = created.body["id"].as_str().expect("id").to_owned();
    assert!(id.starts_with("500"));

    let read = org
        .call(
            Method::GET,
            &format!("v62.0/sobjects/Case/{id}"),
            &token,
            None,
        )
        .await;
    assert_eq!(read.status, StatusCode::OK);
    assert_eq!(read.body["Status"], "New");
    assert_eq!(read.body["Origin"], "Phone");
    assert!(read.body["CaseNumber"]
        .as_str()
        .is_some_and(|n| n.len() == 8));
    assert_eq!(
        read.body["attributes"]["url"],
        format!("/services/data/v62.0/sobjects/Case/{id}")
    );

    let some = org
        .call(
            Method::GET,
            &format!("v62.0/sobjects/Case/{}?fields=Subject,status", &id[..15]),
            &token,
            None,
        )
        .await;
    assert_eq!(some.status, StatusCode::OK);
    assert_eq!(
        some.body.as_object().map(|o| o.len()),
        Some(3),
        "{:?}",
        some.body
    );
    assert_eq!(some.body["Status"], "New");

    let update = org
        .call(
            Method::PATCH,
            &format!("v62.0/sobjects/Case/{id}"),
            &token,
            Some(json!({"Status": "Working"})),
        )
        .await;
    assert_eq!(update.status, StatusCode::NO_CONTENT);
    assert_eq!(org.emulator.records("Case")[0]["Status"], "Working");

    let delete = org
        .call(
            Method::DELETE,
            &format!("v62.0/sobjects/Case/{id}"),
            &token,
            None,
        )
        .await;
    assert_eq!(delete.status, StatusCode::NO_CONTENT);
    let gone = org
        .call(
            Method::GET,
            &format!("v62.0/sobjects/Case/{id}"),
            &token,
            None,
        )
        .await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
    assert_eq!(gone.error_code(), "NOT_FOUND");

    let missing_required = org
        .call(
            Method::POST,
            "v62.0/sobjects/Contact",
            &token,
            Some(json!({"FirstName": "A"})),
        )
        .await;
    assert_eq!(missing_required.status, StatusCode::BAD_REQUEST);
    assert_eq!(missing_required.error_code(), "REQUIRED_FIELD_MISSING");
    assert_eq!(missing_required.body[0]["fields"], json!(["LastName"]));
}

#[tokio::test]
async fn describe_lists_the_external_id() {
    let org = Org::start().await;
    let token = org.token().await;
    let describe = org
        .call(Method::GET, "v62.0/sobjects/Task/describe", &token, None)
        .await;
    assert_eq!(describe.status, StatusCode::OK);
    let fields = describe.body["fields"].as_array().expect("fields");
    let key = fields
        .iter()
        .find(|f| f["name"] == "Switchboard_Key__c")
        .expect("key field");
    assert_eq!(key["externalId"], true);
    let subtype = fields
        .iter()
        .find(|f| f["name"] == "TaskSubtype")
        .expect("subtype");
    assert_eq!(
        (
            subtype["createable"].as_bool(),
            subtype["updateable"].as_bool()
        ),
        (Some(true), Some(false))
    );
}

#[tokio::test]
async fn sessions_and_versions_are_checked() {
    let org = Org::start().await;
    let token = org.token().await;
    let no_token = org.call(Method::GET, "v62.0/limits", "", None).await;
    assert_eq!(no_token.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        no_token.body,
        json!([{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}])
    );
    let forged = org
        .call(Method::GET, "v62.0/limits", "00Dxx!forged", None)
        .await;
    assert_eq!(forged.status, StatusCode::UNAUTHORIZED);

    let old = org.call(Method::GET, "v20.0/sobjects", &token, None).await;
    assert_eq!(old.status, StatusCode::NOT_FOUND);
    assert_eq!(old.error_code(), "NOT_FOUND");
    let nothing = org
        .call(Method::GET, "v62.0/nothing/here", &token, None)
        .await;
    assert_eq!(nothing.status, StatusCode::NOT_FOUND);
    let wrong_method = org
        .call(
            Method::PUT,
            "v62.0/sobjects/Task/Switchboard_Key__c/k",
            &token,
            Some(json!({})),
        )
        .await;
    assert_eq!(wrong_method.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(wrong_method.error_code(), "METHOD_NOT_ALLOWED");

    org.emulator.expire_tokens();
    let expired = org.call(Method::GET, "v62.0/limits", &token, None).await;
    assert_eq!(expired.status, StatusCode::UNAUTHORIZED);
    assert_eq!(expired.error_code(), "INVALID_SESSION_ID");
    let fresh = org.token().await;
    assert_eq!(
        org.call(Method::GET, "v62.0/limits", &fresh, None)
            .await
            .status,
        StatusCode::OK
    );

    let versions = org
        .client
        .get(format!("{}/services/data/", org.emulator.url()))
        .send()
        .await
        .expect("versions");
    assert_eq!(versions.status(), StatusCode::OK);
    let list: Value = versions.json().await.expect("json");
    assert_eq!(list.as_array().map(Vec::len), Some(18));
    assert!(list.as_array().is_some_and(|l| l
        .iter()
        .any(|v| v["version"] == "62.0" && v["label"] == "Winter '25")));
    let bare = org
        .client
        .get(format!("{}/services/data", org.emulator.url()))
        .send()
        .await
        .expect("versions");
    assert_eq!(bare.status(), StatusCode::OK);
}

#[tokio::test]
async fn sessions_time_out_after_the_token_ttl() {
    let org = Org::start_with(|c| c.token_ttl = std::time::Duration::ZERO).await;
    let token = org.token().await;
    let answer = org.call(Method::GET, "v62.0/limits", &token, None).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert_eq!(answer.error_code(), "INVALID_SESSION_ID");
    assert_eq!(
        org.emulator.api_calls(),
        0,
        "rejected sessions are not counted"
    );
}
