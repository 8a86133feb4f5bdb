//! The daily limit with its header, and injected faults.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use salesforce_emulator::Fault;
use serde_json::json;

use crate::harness::Org;

#[tokio::test]
async fn every_rest_answer_reports_the_usage_of_the_day() {
    let org = Org::start_with(|c| c.daily_api_limit = 3).await;
    let token = org.token().await;
    for n in 1..=3 {
        let answer = org.call(Method::GET, "v62.0/limits", &token, None).await;
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(
            answer.limit_info().as_deref(),
            Some(format!("api-usage={n}/3").as_str())
        );
        assert_eq!(answer.body["DailyApiRequests"]["Remaining"], 3 - n);
    }
    let over = org
        .call(
            Method::PATCH,
            "v62.0/sobjects/Task/Switchboard_Key__c/k",
            &token,
            Some(json!({})),
        )
        .await;
    assert_eq!(over.status, StatusCode::FORBIDDEN);
    assert_eq!(over.error_code(), "REQUEST_LIMIT_EXCEEDED");
    assert_eq!(over.limit_info().as_deref(), Some("api-usage=4/3"));
    assert!(org.emulator.tasks().is_empty());
    assert_eq!(org.emulator.api_calls(), 4);

    org.emulator.set_api_usage(0);
    let again = org.call(Method::GET, "v62.0/limits", &token, None).await;
    assert_eq!(again.limit_info().as_deref(), Some("api-usage=1/3"));
}

#[tokio::test]
async fn errors_carry_the_limit_header_too() {
    let org = Org::start().await;
    let token = org.token().await;
    let answer = org
        .call(Method::GET, "v62.0/sobjects/Task/not-an-id", &token, None)
        .await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    assert_eq!(answer.limit_info().as_deref(), Some("api-usage=1/15000"));
}

#[tokio::test]
async fn injected_request_faults_happen_in_order_then_stop() {
    let org = Org::start().await;
    let token = org.token().await;
    org.emulator
        .inject_fault(Fault::ServerUnavailable { times: 2 });
    org.emulator
        .inject_fault(Fault::UnableToLockRow { times: 1 });
    org.emulator
        .inject_fault(Fault::RequestLimitExceeded { times: 1 });
    org.emulator.inject_fault(Fault::InternalError { times: 1 });
    let path = "v62.0/sobjects/Task/Switchboard_Key__c/retry";
    let mut seen = Vec::new();
    for _ in 0..6 {
        let answer = org
            .call(Method::PATCH, path, &token, Some(json!({"Subject": "x"})))
            .await;
        assert!(answer.limit_info().is_some());
        seen.push((
            answer.status.as_u16(),
            answer.body[0]["errorCode"]
                .as_str()
                .unwrap_or("")
                .to_owned(),
        ));
    }
    let expected: Vec<(u16, String)> = [
        (503, "SERVER_UNAVAILABLE"),
        (503, "SERVER_UNAVAILABLE"),
        (400, "UNABLE_TO_LOCK_ROW"),
        (403, "REQUEST_LIMIT_EXCEEDED"),
        (500, "UNKNOWN_EXCEPTION"),
        (201, ""),
    ]
    .iter()
    .map(|(s, c)| (*s, (*c).to_owned()))
    .collect();
    assert_eq!(seen, expected);
    assert_eq!(org.emulator.tasks().len(), 1);
}

#[tokio::test]
async fn record_faults_hit_only_their_record() {
    let org = Org::start().await;
    let token = org.token().await;
    org.emulator.inject_fault(Fault::locked_record("busy"));
    let single = org
        .call(
            Method::PATCH,
            "v62.0/sobjects/Task/Switchboard_Key__c/busy",
            &token,
            Some(json!({})),
        )
        .await;
    assert_eq!(single.status, StatusCode::BAD_REQUEST);
    assert_eq!(single.error_code(), "UNABLE_TO_LOCK_ROW");

    org.emulator.inject_fault(Fault::RecordError {
        external_id: "busy".to_owned(),
        error_code: "UNABLE_TO_LOCK_ROW".to_owned(),
        message: "unable to obtain exclusive access to this record".to_owned(),
        times: 1,
    });
    let body = json!({"records": [
        {"attributes": {"type": "Task"}, "Switchboard_Key__c": "busy"},
        {"attributes": {"type": "Task"}, "Switchboard_Key__c": "free"},
    ]});
    let batch = org
        .call(
            Method::PATCH,
            "v62.0/composite/sobjects/Task/Switchboard_Key__c",
            &token,
            Some(body.clone()),
        )
        .await;
    assert_eq!(batch.status, StatusCode::OK);
    assert_eq!(
        batch.body[0]["errors"][0]["statusCode"],
        "UNABLE_TO_LOCK_ROW"
    );
    assert_eq!(batch.body[1]["success"], true);
    let retry = org
        .call(
            Method::PATCH,
            "v62.0/composite/sobjects/Task/Switchboard_Key__c",
            &token,
            Some(body),
        )
        .await;
    assert_eq!(retry.body[0]["created"], true);
    assert_eq!(retry.body[1]["created"], false);
}

#[tokio::test]
async fn delays_and_token_errors_can_be_injected() {
    let org = Org::start().await;
    let token = org.token().await;
    org.emulator.inject_fault(Fault::Delay {
        millis: 300,
        times: 1,
    });
    let started = Instant::now();
    let answer = org.call(Method::GET, "v62.0/limits", &token, None).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert!(started.elapsed() >= Duration::from_millis(300));

    org.emulator.inject_fault(Fault::TokenError {
        status: 503,
        error: "temporarily_unavailable".to_owned(),
        error_description: "try later".to_owned(),
        times: 1,
    });
    let assertion = crate::harness::credentials()
        .sign_assertion(&org.claims())
        .expect("sign");
    let refused = org.token_request(&assertion).await;
    assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(refused.body["error"], "temporarily_unavailable");
    assert_eq!(org.token_request(&assertion).await.status, StatusCode::OK);
}

#[tokio::test]
async fn a_suspended_org_refuses_connections_and_comes_back_as_it_was() {
    let org = Org::start().await;
    let token = org.token().await;
    let key = "v62.0/sobjects/Task/Switchboard_Key__c/outage";
    let body = json!({"Subject": "before the outage", "OwnerId": org.emulator.user_id()});
    let created = org.call(Method::PATCH, key, &token, Some(body)).await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    let addr = org.emulator.local_addr();
    assert_eq!(org.emulator.url(), format!("http://{addr}"));

    org.emulator.suspend().await;
    let refused = tokio::net::TcpStream::connect(addr).await;
    assert!(refused.is_err(), "the suspended org still accepts connections");
    let failed = org
        .client
        .get(format!("{}/services/data/v62.0/limits", org.emulator.url()))
        .bearer_auth(&token)
        .send()
        .await;
    assert!(failed.is_err(), "a request reached the suspended org: {failed:?}");
    // Steering and inspection go on meanwhile.
    org.emulator.inject_fault(Fault::ServerUnavailable { times: 1 });
    assert_eq!(org.emulator.tasks().len(), 1);
    let calls = org.emulator.api_calls();

    org.emulator.resume().await.expect("serving again");
    org.emulator.resume().await.expect("resuming a served org does nothing");
    assert_eq!(org.emulator.local_addr(), addr);
    // Same token, same records, the queued fault first.
    let unavailable = org.call(Method::GET, "v62.0/limits", &token, None).await;
    assert_eq!(unavailable.status, StatusCode::SERVICE_UNAVAILABLE);
    let body = json!({"Subject": "after the outage"});
    let updated = org.call(Method::PATCH, key, &token, Some(body)).await;
    assert_eq!(updated.status, StatusCode::OK, "{:?}", updated.body);
    let tasks = org.emulator.tasks();
    assert_eq!(tasks.len(), 1);
    assert_eq!(tasks[0]["Subject"], "after the outage");
    assert_eq!(org.emulator.api_calls(), calls + 2);
}
