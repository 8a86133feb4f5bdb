//! The `/__emulator` control API the binary is steered with.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::harness::{answer, credentials, Org};

#[tokio::test]
async fn seed_inspect_fault_and_expire_over_http() {
    let org = Org::start().await;
    let base = format!("{}/__emulator", org.emulator.url());
    let client = &org.client;

    let seeded = answer(
        client
            .post(format!("{base}/sobjects/Contact"))
            .json(&json!({"LastName": "Roe"}))
            .send()
            .await
            .expect("seed"),
    )
    .await;
    assert_eq!(seeded.status, StatusCode::CREATED);
    assert!(seeded.body["id"]
        .as_str()
        .is_some_and(|id| id.starts_with("003")));
    let refused = answer(
        client
            .post(format!("{base}/sobjects/Contact"))
            .json(&json!({"FirstName": "X"}))
            .send()
            .await
            .expect("seed"),
    )
    .await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    assert_eq!(refused.body["errorCode"], "REQUIRED_FIELD_MISSING");

    let user = answer(
        client
            .post(format!("{base}/users"))
            .json(&json!({"username": "agent2@example.com"}))
            .send()
            .await
            .expect("user"),
    )
    .await;
    assert_eq!(user.status, StatusCode::CREATED);
    let mut claims = org.claims();
    claims.sub = "agent2@example.com".to_owned();
    let login = org
        .token_request(&credentials().sign_assertion(&claims).expect("sign"))
        .await;
    assert_eq!(login.status, StatusCode::OK);

    let token = org.token().await;
    let faults = json!([{"kind": "server_unavailable", "times": 1}, {"kind": "http", "status": 502, "error_code": "BAD_GATEWAY", "message": "upstream"}]);
    let queued = client
        .post(format!("{base}/faults"))
        .json(&faults)
        .send()
        .await
        .expect("faults");
    assert_eq!(queued.status(), StatusCode::NO_CONTENT);
    let pending: Value = client
        .get(format!("{base}/faults"))
        .send()
        .await
        .expect("pending")
        .json()
        .await
        .expect("json");
    assert_eq!(pending.as_array().map(Vec::len), Some(2));
    let path = "v62.0/sobjects/Task/Switchboard_Key__c/http-1";
    assert_eq!(
        org.call(Method::PATCH, path, &token, Some(json!({})))
            .await
            .status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(
        org.call(Method::PATCH, path, &token, Some(json!({})))
            .await
            .status,
        StatusCode::BAD_GATEWAY
    );
    assert_eq!(
        org.call(Method::PATCH, path, &token, Some(json!({})))
            .await
            .status,
        StatusCode::CREATED
    );

    let tasks: Value = client
        .get(format!("{base}/sobjects/Task"))
        .send()
        .await
        .expect("tasks")
        .json()
        .await
        .expect("json");
    assert_eq!(tasks[0]["Switchboard_Key__c"], "http-1");

    let stats: Value = client
        .get(format!("{base}/stats"))
        .send()
        .await
        .expect("stats")
        .json()
        .await
        .expect("json");
    assert_eq!(stats["api_calls"], 3);
    assert_eq!(stats["token_calls"], 2);
    assert_eq!(stats["active_sessions"], 2);

    let expired = client
        .post(format!("{base}/expire-tokens"))
        .send()
        .await
        .expect("expire");
    assert_eq!(expired.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        org.call(Method::GET, "v62.0/limits", &token, None)
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );

    let usage = client
        .put(format!("{base}/api-usage"))
        .json(&json!({"used": 14999}))
        .send()
        .await
        .expect("usage");
    assert_eq!(usage.status(), StatusCode::NO_CONTENT);
    let fresh = org.token().await;
    let limited = org.call(Method::GET, "v62.0/limits", &fresh, None).await;
    assert_eq!(
        limited.limit_info().as_deref(),
        Some("api-usage=15000/15000")
    );
    let over = org.call(Method::GET, "v62.0/limits", &fresh, None).await;
    assert_eq!(over.status, StatusCode::FORBIDDEN);

    let bad = client
        .post(format!("{base}/faults"))
        .json(&json!({"kind": "meteor"}))
        .send()
        .await
        .expect("bad fault");
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
}
