//! SOQL lookups and the SOSL phone search.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::harness::Org;

fn encode(q: &str) -> String {
    url::form_urlencoded::byte_serialize(q.as_bytes()).collect()
}

#[tokio::test]
async fn soql_finds_records_by_field() {
    let org = Org::start().await;
    let token = org.token().await;
    let id = org
        .emulator
        .insert(
            "Task",
            json!({"Switchboard_Key__c": "q-1", "Subject": "First"}),
        )
        .expect("task");
    org.emulator
        .insert(
            "Task",
            json!({"Switchboard_Key__c": "q-2", "Subject": "Second"}),
        )
        .expect("task");
    let q = encode("SELECT Id, Subject FROM Task WHERE Switchboard_Key__c = 'Q-1'");
    let answer = org
        .call(Method::GET, &format!("v62.0/query?q={q}"), &token, None)
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
    assert_eq!(answer.body["totalSize"], 1);
    assert_eq!(answer.body["done"], true);
    assert_eq!(answer.body["records"][0]["Id"], id.as_str());
    assert_eq!(answer.body["records"][0]["Subject"], "First");

    let q = encode("SELECT Subject FROM Task ORDER BY Subject DESC LIMIT 1");
    let answer = org
        .call(Method::GET, &format!("v62.0/query?q={q}"), &token, None)
        .await;
    assert_eq!(answer.body["records"][0]["Subject"], "Second");

    let bad = org
        .call(
            Method::GET,
            &format!("v62.0/query?q={}", encode("SELECT FROM")),
            &token,
            None,
        )
        .await;
    assert_eq!(
        (bad.status, bad.error_code()),
        (StatusCode::BAD_REQUEST, "MALFORMED_QUERY")
    );
    let field = org
        .call(
            Method::GET,
            &format!("v62.0/query?q={}", encode("SELECT Colour FROM Task")),
            &token,
            None,
        )
        .await;
    assert_eq!(field.error_code(), "INVALID_FIELD");
    let object = org
        .call(
            Method::GET,
            &format!("v62.0/query?q={}", encode("SELECT Id FROM Widget")),
            &token,
            None,
        )
        .await;
    assert_eq!(object.error_code(), "INVALID_TYPE");
}

#[tokio::test]
async fn phone_search_matches_the_digits_as_stored() {
    let org = Org::start().await;
    let token = org.token().await;
    let contact = org
        .emulator
        .insert(
            "Contact",
            json!({"FirstName": "Ada", "LastName": "Byron", "Phone": "(415) 555-0100"}),
        )
        .expect("c");
    let lead = org
        .emulator
        .insert(
            "Lead",
            json!({"LastName": "Doe", "Company": "Acme", "MobilePhone": "+1 415 555 0100"}),
        )
        .expect("l");
    let search = |terms: &str| {
        encode(&format!(
            "FIND {{{terms}}} IN PHONE FIELDS RETURNING Contact(Id, Name), Lead(Id, Name)"
        ))
    };

    let national = org
        .call(
            Method::GET,
            &format!("v62.0/search?q={}", search(r"415\-555\-0100")),
            &token,
            None,
        )
        .await;
    assert_eq!(national.status, StatusCode::OK, "{:?}", national.body);
    let found = national.body["searchRecords"].as_array().expect("records");
    assert_eq!(found.len(), 1);
    assert_eq!(found[0]["Id"], contact.as_str());
    assert_eq!(found[0]["Name"], "Ada Byron");
    assert_eq!(found[0]["attributes"]["type"], "Contact");

    let both = org
        .call(
            Method::GET,
            &format!("v62.0/search?q={}", search(r"4155550100 OR \+14155550100")),
            &token,
            None,
        )
        .await;
    let ids: Vec<&str> = both.body["searchRecords"]
        .as_array()
        .expect("records")
        .iter()
        .filter_map(|r| r["Id"].as_str())
        .collect();
    assert_eq!(ids, [contact.as_str(), lead.as_str()]);

    let none = org
        .call(
            Method::GET,
            &format!("v62.0/search?q={}", search("4155559999")),
            &token,
            None,
        )
        .await;
    assert_eq!(none.body["searchRecords"], json!([]));
    let bad = org
        .call(
            Method::GET,
            &format!("v62.0/search?q={}", encode("FIND 415")),
            &token,
            None,
        )
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
}
