//! The admin HTTP API end to end through the router (no socket): auth,
//! provisioning round trips, and the JSON error shape of every failure.

mod support_db;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use serde_json::{json, Value};
use support_db::TestDb;
use switchboard_gateway::api::admin;
use switchboard_gateway::directory::Directory;
use tower::ServiceExt;

const TOKEN: &str = "correct-horse-battery-staple";

struct Api {
    router: Router,
    _db: TestDb,
}

impl Api {
    async fn new(token: Option<&str>) -> Self {
        let db = TestDb::sqlite().await;
        let router = admin::router(Directory::new(db.database().clone()), "switchboard".to_owned(), token.map(str::to_owned));
        Self { router, _db: db }
    }

    /// Sends a request with the right token; `body` is sent as JSON.
    async fn call(&self, method: Method, uri: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut req = Request::builder().method(method).uri(uri).header(header::AUTHORIZATION, format!("Bearer {TOKEN}"));
        let body = match body {
            Some(v) => {
                req = req.header(header::CONTENT_TYPE, "application/json");
                Body::from(v.to_string())
            }
            None => Body::empty(),
        };
        self.send(req.body(body).unwrap()).await
    }

    async fn send(&self, req: Request<Body>) -> (StatusCode, Value) {
        let response = self.router.clone().oneshot(req).await.unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
        let value = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap() };
        (status, value)
    }
}

fn error_code(body: &Value) -> &str {
    body["code"].as_str().unwrap_or_else(|| panic!("error body: {body}"))
}

#[tokio::test]
async fn without_a_token_configured_the_api_is_disabled() {
    let api = Api::new(None).await;
    let (status, body) = api.call(Method::GET, "/users", None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        body,
        json!({
            "type": "/problems/admin_api_disabled",
            "title": "Service Unavailable",
            "status": 503,
            "code": "admin_api_disabled",
            "detail": "set http.admin_token to enable the admin API"
        })
    );
}

#[tokio::test]
async fn wrong_or_missing_credentials_get_401_with_a_challenge() {
    let api = Api::new(Some(TOKEN)).await;
    let attempts = [
        None,
        Some(format!("Bearer {TOKEN}x")),
        Some("Bearer correct-horse".to_owned()),
        Some(format!("Basic {TOKEN}")),
        Some(TOKEN.to_owned()),
        Some("Bearer ".to_owned()),
    ];
    for auth in attempts {
        let mut req = Request::builder().uri("/users");
        if let Some(a) = &auth {
            req = req.header(header::AUTHORIZATION, a);
        }
        let response = api.router.clone().oneshot(req.body(Body::empty()).unwrap()).await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{auth:?}");
        assert_eq!(response.headers()[header::WWW_AUTHENTICATE], "Bearer", "{auth:?}");
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
        let body: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(error_code(&body), "unauthorized");
    }
    // Unknown routes are behind the same gate: no probing without the token.
    let req = Request::builder().uri("/no-such-thing").body(Body::empty()).unwrap();
    assert_eq!(api.send(req).await.0, StatusCode::UNAUTHORIZED);
    // The scheme name is case-insensitive.
    let req = Request::builder().uri("/users").header(header::AUTHORIZATION, format!("bearer {TOKEN}")).body(Body::empty()).unwrap();
    assert_eq!(api.send(req).await.0, StatusCode::OK);
}

#[tokio::test]
async fn provisioning_round_trip() {
    let api = Api::new(Some(TOKEN)).await;

    let (status, ada) = api
        .call(
            Method::POST,
            "/users",
            Some(json!({"name": "Ada", "extension": "101", "salesforce_user_id": "005000000000001"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{ada}");
    let ada_id = ada["id"].as_str().unwrap().to_owned();
    assert_eq!(ada["salesforce_user_id"], "005000000000001");

    let (status, got) = api.call(Method::GET, &format!("/users/{ada_id}"), None).await;
    assert_eq!((status, &got), (StatusCode::OK, &ada));
    let (status, list) = api.call(Method::GET, "/users", None).await;
    assert_eq!((status, list), (StatusCode::OK, json!({"users": [ada.clone()]})));

    let (status, device) = api
        .call(Method::POST, "/devices", Some(json!({"user_id": ada_id, "name": "desk", "contact_uri": "sip:ada@127.0.0.1:5090"})))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{device}");
    let (status, devices) = api.call(Method::GET, &format!("/devices?user_id={ada_id}"), None).await;
    assert_eq!((status, devices), (StatusCode::OK, json!({"devices": [device.clone()]})));

    // Digest credentials: accepted once, a weak password and a second
    // device with the same username refused.
    let creds_uri = format!("/devices/{}/credentials", device["id"].as_str().unwrap());
    let (status, body) = api.call(Method::PUT, &creds_uri, Some(json!({"sip_username": "ada", "sip_password": "correct horse battery"}))).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let (status, body) = api.call(Method::PUT, &creds_uri, Some(json!({"sip_username": "ada", "sip_password": "short"}))).await;
    assert_eq!((status, error_code(&body)), (StatusCode::BAD_REQUEST, "invalid_argument"));
    let (_, other) = api
        .call(Method::POST, "/devices", Some(json!({"user_id": ada_id, "name": "mobile", "contact_uri": "sip:ada@127.0.0.1:5092"})))
        .await;
    let (status, body) = api
        .call(Method::PUT, &format!("/devices/{}/credentials", other["id"].as_str().unwrap()), Some(json!({"sip_username": "ada", "sip_password": "another long secret"})))
        .await;
    assert_eq!((status, error_code(&body)), (StatusCode::CONFLICT, "conflict"));
    let (status, _) = api.call(Method::DELETE, &format!("/devices/{}", other["id"].as_str().unwrap()), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);

    // `+` written literally or percent-encoded in the path; spaces encoded.
    let (status, number) = api.call(Method::PUT, "/numbers/+1%20415%20555%200100", Some(json!({"user_id": ada_id}))).await;
    assert_eq!(status, StatusCode::OK, "{number}");
    assert_eq!(number["number"], "+14155550100");
    assert_eq!(number["user_id"], ada_id.as_str());
    let (status, numbers) = api.call(Method::GET, "/numbers", None).await;
    assert_eq!((status, numbers), (StatusCode::OK, json!({"numbers": [number]})));

    let (status, _) = api.call(Method::DELETE, "/numbers/%2B14155550100", None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = api.call(Method::DELETE, &format!("/devices/{}", device["id"].as_str().unwrap()), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = api.call(Method::DELETE, &format!("/users/{ada_id}"), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = api.call(Method::GET, &format!("/users/{ada_id}"), None).await;
    assert_eq!((status, error_code(&body)), (StatusCode::NOT_FOUND, "not_found"));
}

#[tokio::test]
async fn failures_have_the_right_status_and_a_json_error() {
    let api = Api::new(Some(TOKEN)).await;
    let (_, ada) = api.call(Method::POST, "/users", Some(json!({"name": "Ada", "extension": "101"}))).await;
    let ada_id = ada["id"].as_str().unwrap();

    /// Request, expected status and code, and a word the message must contain.
    type Case<'a> = (Method, String, Option<Value>, StatusCode, &'a str, &'a str);
    let cases: Vec<Case> = vec![
        (Method::POST, "/users".into(), Some(json!({"name": "Bob", "extension": "101"})), StatusCode::CONFLICT, "conflict", "extension 101"),
        (
            Method::POST,
            "/users".into(),
            Some(json!({"name": "Bob", "salesforce_user_id": "001000000000001"})),
            StatusCode::BAD_REQUEST,
            "invalid_argument",
            "salesforce_user_id",
        ),
        (Method::POST, "/users".into(), Some(json!({"extension": "102"})), StatusCode::BAD_REQUEST, "invalid_json", "name"),
        (Method::POST, "/users".into(), Some(json!({"name": "Bob", "rank": "admin"})), StatusCode::BAD_REQUEST, "invalid_json", "rank"),
        (
            Method::POST,
            "/devices".into(),
            Some(json!({"user_id": ada_id, "name": "desk", "contact_uri": "ada@127.0.0.1"})),
            StatusCode::BAD_REQUEST,
            "invalid_argument",
            "contact_uri",
        ),
        (
            Method::POST,
            "/devices".into(),
            Some(json!({"user_id": "nobody", "name": "desk", "contact_uri": "sip:ada@127.0.0.1"})),
            StatusCode::NOT_FOUND,
            "not_found",
            "nobody",
        ),
        (Method::GET, "/devices?user_id=nobody".into(), None, StatusCode::NOT_FOUND, "not_found", "nobody"),
        (Method::GET, "/devices?owner=x".into(), None, StatusCode::BAD_REQUEST, "invalid_query", "owner"),
        (Method::PUT, "/numbers/call-me".into(), Some(json!({"user_id": ada_id})), StatusCode::BAD_REQUEST, "invalid_argument", "number"),
        (Method::DELETE, "/numbers/+14155550100".into(), None, StatusCode::NOT_FOUND, "not_found", "+14155550100"),
        (Method::DELETE, "/devices/nope".into(), None, StatusCode::NOT_FOUND, "not_found", "nope"),
        (Method::GET, "/nowhere".into(), None, StatusCode::NOT_FOUND, "not_found", "route"),
    ];
    for (method, uri, body, status, code, needle) in cases {
        let (got_status, got) = api.call(method.clone(), &uri, body).await;
        assert_eq!(got_status, status, "{method} {uri}: {got}");
        assert_eq!(error_code(&got), code, "{method} {uri}: {got}");
        let message = got["detail"].as_str().unwrap();
        assert!(message.contains(needle), "{method} {uri}: {message:?} should mention {needle:?}");
    }

    // Assigning a number someone else owns.
    let (_, bob) = api.call(Method::POST, "/users", Some(json!({"name": "Bob"}))).await;
    let (status, _) = api.call(Method::PUT, "/numbers/+14155550100", Some(json!({"user_id": ada_id}))).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = api.call(Method::PUT, "/numbers/+14155550100", Some(json!({"user_id": bob["id"]}))).await;
    assert_eq!((status, error_code(&body)), (StatusCode::CONFLICT, "conflict"));
}

#[tokio::test]
async fn malformed_json_is_a_400_with_a_message() {
    let api = Api::new(Some(TOKEN)).await;
    let req = Request::builder()
        .method(Method::POST)
        .uri("/users")
        .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from("{\"name\": \"Ada\""))
        .unwrap();
    let (status, body) = api.send(req).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error_code(&body), "invalid_json");
    assert!(body["detail"].as_str().unwrap().contains("JSON"), "{body}");

    let req = Request::builder()
        .method(Method::POST)
        .uri("/users")
        .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
        .body(Body::from("{\"name\": \"Ada\"}"))
        .unwrap();
    let (status, body) = api.send(req).await;
    assert_eq!((status, error_code(&body)), (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"));
}

#[tokio::test]
async fn group_and_caller_id_routes_are_behind_the_token() {
    let api = Api::new(Some(TOKEN)).await;
    let requests = [
        (Method::GET, "/groups"),
        (Method::POST, "/groups"),
        (Method::GET, "/groups/g1"),
        (Method::DELETE, "/groups/g1"),
        (Method::PUT, "/groups/g1/members/u1"),
        (Method::DELETE, "/groups/g1/members/u1"),
        (Method::GET, "/users/u1/caller-ids"),
    ];
    for (method, uri) in &requests {
        for auth in [None, Some(format!("Bearer {TOKEN}-not"))] {
            let mut req = Request::builder().method(method.clone()).uri(*uri);
            if let Some(a) = &auth {
                req = req.header(header::AUTHORIZATION, a);
            }
            let (status, body) = api.send(req.body(Body::empty()).unwrap()).await;
            assert_eq!((status, error_code(&body)), (StatusCode::UNAUTHORIZED, "unauthorized"), "{method} {uri} {auth:?}");
        }
    }
    let disabled = Api::new(None).await;
    for (method, uri) in &requests {
        let (status, body) = disabled.call(method.clone(), uri, None).await;
        assert_eq!((status, error_code(&body)), (StatusCode::SERVICE_UNAVAILABLE, "admin_api_disabled"), "{method} {uri}");
    }
    // Nothing was created by the refused requests.
    assert_eq!(api.call(Method::GET, "/groups", None).await, (StatusCode::OK, json!({"groups": []})));
}

#[tokio::test]
async fn groups_numbers_and_caller_ids_round_trip() {
    let api = Api::new(Some(TOKEN)).await;
    let (_, ada) = api.call(Method::POST, "/users", Some(json!({"name": "Ada", "extension": "101"}))).await;
    let (_, bob) = api.call(Method::POST, "/users", Some(json!({"name": "Bob"}))).await;
    let (ada_id, bob_id) = (ada["id"].as_str().unwrap(), bob["id"].as_str().unwrap());

    let req = Request::builder()
        .method(Method::POST)
        .uri("/groups")
        .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(json!({"name": " Sales ", "extension": "200"}).to_string()))
        .unwrap();
    let response = api.router.clone().oneshot(req).await.unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let location = response.headers()[header::LOCATION].to_str().unwrap().to_owned();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
    let sales: Value = serde_json::from_slice(&bytes).unwrap();
    let sales_id = sales["id"].as_str().unwrap().to_owned();
    assert_eq!(location, format!("groups/{sales_id}"));
    assert_eq!((&sales["name"], &sales["extension"]), (&json!("Sales"), &json!("200")));
    assert_eq!(api.call(Method::GET, "/groups", None).await, (StatusCode::OK, json!({"groups": [sales.clone()]})));

    // Members in ring order; adding again keeps the order. PUT answers the
    // group as GET does.
    let with_members = |members: Value| {
        let mut detail = sales.clone();
        detail["members"] = members;
        detail
    };
    let members_uri = |user: &str| format!("/groups/{sales_id}/members/{user}");
    assert_eq!(api.call(Method::PUT, &members_uri(bob_id), None).await, (StatusCode::OK, with_members(json!([bob.clone()]))));
    assert_eq!(api.call(Method::PUT, &members_uri(ada_id), None).await.1, with_members(json!([bob.clone(), ada.clone()])));
    assert_eq!(api.call(Method::PUT, &members_uri(bob_id), None).await.1, with_members(json!([bob.clone(), ada.clone()])));
    assert_eq!(
        api.call(Method::GET, &format!("/groups/{sales_id}"), None).await,
        (StatusCode::OK, with_members(json!([bob.clone(), ada.clone()])))
    );

    // A number for the group that is also the main line, and one for Ada.
    let (status, group_number) =
        api.call(Method::PUT, "/numbers/+1%20415%20555%200200", Some(json!({"group_id": sales_id, "main_line": true}))).await;
    assert_eq!(status, StatusCode::OK, "{group_number}");
    assert_eq!(
        (&group_number["number"], &group_number["user_id"], &group_number["group_id"], &group_number["main_line"]),
        (&json!("+14155550200"), &Value::Null, &json!(sales_id), &json!(true))
    );
    let (status, adas_number) = api.call(Method::PUT, "/numbers/+14155550100", Some(json!({"user_id": ada_id}))).await;
    assert_eq!(status, StatusCode::OK, "{adas_number}");
    assert_eq!((&adas_number["group_id"], &adas_number["main_line"]), (&Value::Null, &json!(false)));

    let caller_ids = |user: &str| format!("/users/{user}/caller-ids");
    assert_eq!(
        api.call(Method::GET, &caller_ids(ada_id), None).await,
        (StatusCode::OK, json!({"caller_ids": ["+14155550100", "+14155550200"]}))
    );
    assert_eq!(api.call(Method::GET, &caller_ids(bob_id), None).await.1, json!({"caller_ids": ["+14155550200"]}));

    // `main_line` alone moves the main line and keeps the owner.
    let (status, moved) = api.call(Method::PUT, "/numbers/+14155550100", Some(json!({"main_line": true}))).await;
    assert_eq!(status, StatusCode::OK, "{moved}");
    assert_eq!((&moved["user_id"], &moved["main_line"]), (&json!(ada_id), &json!(true)));
    let (_, numbers) = api.call(Method::GET, "/numbers", None).await;
    let flags: Vec<(&str, bool)> = numbers["numbers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| (n["number"].as_str().unwrap(), n["main_line"].as_bool().unwrap()))
        .collect();
    assert_eq!(flags, vec![("+14155550100", true), ("+14155550200", false)]);
    assert_eq!(
        api.call(Method::GET, &caller_ids(bob_id), None).await.1,
        json!({"caller_ids": ["+14155550200", "+14155550100"]})
    );

    // Leaving the group ends the entitlement to its number.
    assert_eq!(api.call(Method::DELETE, &members_uri(bob_id), None).await.0, StatusCode::NO_CONTENT);
    assert_eq!(api.call(Method::GET, &format!("/groups/{sales_id}"), None).await.1, with_members(json!([ada.clone()])));
    assert_eq!(api.call(Method::GET, &caller_ids(bob_id), None).await.1, json!({"caller_ids": ["+14155550100"]}));

    // A deleted group leaves its number provisioned and unassigned.
    assert_eq!(api.call(Method::DELETE, &format!("/groups/{sales_id}"), None).await.0, StatusCode::NO_CONTENT);
    let (status, body) = api.call(Method::GET, &format!("/groups/{sales_id}"), None).await;
    assert_eq!((status, error_code(&body)), (StatusCode::NOT_FOUND, "not_found"));
    let (_, numbers) = api.call(Method::GET, "/numbers", None).await;
    assert_eq!(numbers["numbers"][1]["number"], "+14155550200");
    assert_eq!((&numbers["numbers"][1]["group_id"], &numbers["numbers"][1]["user_id"]), (&Value::Null, &Value::Null));
    assert_eq!(api.call(Method::GET, "/groups", None).await.1, json!({"groups": []}));
}

#[tokio::test]
async fn group_and_number_failures_have_the_right_status_and_a_json_error() {
    let api = Api::new(Some(TOKEN)).await;
    let (_, ada) = api.call(Method::POST, "/users", Some(json!({"name": "Ada", "extension": "101"}))).await;
    let ada_id = ada["id"].as_str().unwrap();
    let (_, sales) = api.call(Method::POST, "/groups", Some(json!({"name": "Sales", "extension": "200"}))).await;
    let sales_id = sales["id"].as_str().unwrap();
    let (status, _) = api.call(Method::PUT, "/numbers/+14155550200", Some(json!({"group_id": sales_id}))).await;
    assert_eq!(status, StatusCode::OK);

    /// Request, expected status and code, and words the message must contain.
    type Case<'a> = (Method, String, Option<Value>, StatusCode, &'a str, Vec<&'a str>);
    let cases: Vec<Case> = vec![
        (Method::POST, "/groups".into(), Some(json!({"name": "Support", "extension": "101"})), StatusCode::CONFLICT, "conflict", vec!["extension 101", ada_id]),
        (Method::POST, "/groups".into(), Some(json!({"name": "Support", "extension": "200"})), StatusCode::CONFLICT, "conflict", vec!["extension 200", sales_id]),
        (Method::POST, "/users".into(), Some(json!({"name": "Bob", "extension": "200"})), StatusCode::CONFLICT, "conflict", vec!["extension 200", "group"]),
        (Method::POST, "/groups".into(), Some(json!({"name": "Support", "extension": "2OO"})), StatusCode::BAD_REQUEST, "invalid_argument", vec!["extension"]),
        (Method::POST, "/groups".into(), Some(json!({"name": "  "})), StatusCode::BAD_REQUEST, "invalid_argument", vec!["name"]),
        (Method::POST, "/groups".into(), Some(json!({"extension": "300"})), StatusCode::BAD_REQUEST, "invalid_json", vec!["name"]),
        (Method::POST, "/groups".into(), Some(json!({"name": "Support", "members": []})), StatusCode::BAD_REQUEST, "invalid_json", vec!["members"]),
        (Method::GET, "/groups/nogroup".into(), None, StatusCode::NOT_FOUND, "not_found", vec!["group", "nogroup"]),
        (Method::DELETE, "/groups/nogroup".into(), None, StatusCode::NOT_FOUND, "not_found", vec!["nogroup"]),
        (Method::PUT, format!("/groups/nogroup/members/{ada_id}"), None, StatusCode::NOT_FOUND, "not_found", vec!["group", "nogroup"]),
        (Method::PUT, format!("/groups/{sales_id}/members/nobody"), None, StatusCode::NOT_FOUND, "not_found", vec!["user", "nobody"]),
        (Method::DELETE, format!("/groups/{sales_id}/members/{ada_id}"), None, StatusCode::NOT_FOUND, "not_found", vec!["group member", ada_id]),
        (Method::GET, "/users/nobody/caller-ids".into(), None, StatusCode::NOT_FOUND, "not_found", vec!["user", "nobody"]),
        (
            Method::PUT,
            "/numbers/+14155550100".into(),
            Some(json!({"user_id": ada_id, "group_id": sales_id})),
            StatusCode::BAD_REQUEST,
            "invalid_argument",
            vec!["user_id", "group_id", "not both"],
        ),
        (Method::PUT, "/numbers/+14155550100".into(), Some(json!({})), StatusCode::BAD_REQUEST, "invalid_argument", vec!["user_id or group_id"]),
        (Method::PUT, "/numbers/+14155550100".into(), Some(json!({"group_id": "nogroup"})), StatusCode::NOT_FOUND, "not_found", vec!["nogroup"]),
        (Method::PUT, "/numbers/+14155550100".into(), Some(json!({"main_line": true})), StatusCode::NOT_FOUND, "not_found", vec!["number", "+14155550100"]),
        (Method::PUT, "/numbers/+14155550100".into(), Some(json!({"user_id": ada_id, "main_line": "yes"})), StatusCode::BAD_REQUEST, "invalid_json", vec!["main_line"]),
        (Method::PUT, "/numbers/+14155550100".into(), Some(json!({"owner": ada_id})), StatusCode::BAD_REQUEST, "invalid_json", vec!["owner"]),
        (Method::PUT, "/numbers/main".into(), Some(json!({"group_id": sales_id})), StatusCode::BAD_REQUEST, "invalid_argument", vec!["number"]),
        (Method::PUT, "/numbers/+14155550200".into(), Some(json!({"user_id": ada_id})), StatusCode::CONFLICT, "conflict", vec!["+14155550200", sales_id]),
    ];
    for (method, uri, body, status, code, needles) in cases {
        let (got_status, got) = api.call(method.clone(), &uri, body).await;
        assert_eq!(got_status, status, "{method} {uri}: {got}");
        assert_eq!(error_code(&got), code, "{method} {uri}: {got}");
        let message = got["detail"].as_str().unwrap();
        for needle in &needles {
            assert!(message.contains(needle), "{method} {uri}: {message:?} should mention {needle:?}");
        }
    }
    // None of the refused requests changed anything.
    let (_, numbers) = api.call(Method::GET, "/numbers", None).await;
    assert_eq!(numbers["numbers"].as_array().unwrap().len(), 1, "{numbers}");
    assert_eq!(numbers["numbers"][0]["group_id"], sales_id);
    assert_eq!(api.call(Method::GET, "/groups", None).await.1, json!({"groups": [sales.clone()]}));
    assert_eq!(api.call(Method::GET, "/users", None).await.1, json!({"users": [ada.clone()]}));
}

#[tokio::test]
async fn recording_policy_routes_are_behind_the_token() {
    let api = Api::new(Some(TOKEN)).await;
    let (_, sales) = api.call(Method::POST, "/groups", Some(json!({"name": "Sales"}))).await;
    let sales_id = sales["id"].as_str().unwrap();
    let (status, _) = api.call(Method::PUT, "/numbers/+14155550200", Some(json!({"group_id": sales_id}))).await;
    assert_eq!(status, StatusCode::OK);

    let on = json!({"record_calls": true}).to_string();
    let requests = [
        (Method::PUT, "/numbers/+14155550200/recording-policy".to_owned(), Some(on.clone())),
        (Method::PUT, format!("/groups/{sales_id}/recording-policy"), Some(on.clone())),
        (Method::GET, "/recording-policies".to_owned(), None),
    ];
    for (method, uri, body) in &requests {
        for auth in [None, Some(format!("Bearer {TOKEN}-not")), Some(format!("Basic {TOKEN}"))] {
            let mut req = Request::builder().method(method.clone()).uri(uri);
            if let Some(a) = &auth {
                req = req.header(header::AUTHORIZATION, a);
            }
            let body = match body {
                Some(b) => {
                    req = req.header(header::CONTENT_TYPE, "application/json");
                    Body::from(b.clone())
                }
                None => Body::empty(),
            };
            let (status, got) = api.send(req.body(body).unwrap()).await;
            assert_eq!((status, error_code(&got)), (StatusCode::UNAUTHORIZED, "unauthorized"), "{method} {uri} {auth:?}");
        }
    }
    let disabled = Api::new(None).await;
    for (method, uri, _) in &requests {
        let (status, body) = disabled.call(method.clone(), uri, Some(json!({"record_calls": true}))).await;
        assert_eq!((status, error_code(&body)), (StatusCode::SERVICE_UNAVAILABLE, "admin_api_disabled"), "{method} {uri}");
    }
    // The refused requests set no policy.
    assert_eq!(api.call(Method::GET, "/recording-policies", None).await, (StatusCode::OK, json!({"numbers": [], "groups": []})));
}

#[tokio::test]
async fn recording_policies_round_trip() {
    let api = Api::new(Some(TOKEN)).await;
    let (_, ada) = api.call(Method::POST, "/users", Some(json!({"name": "Ada"}))).await;
    let ada_id = ada["id"].as_str().unwrap();
    let (_, sales) = api.call(Method::POST, "/groups", Some(json!({"name": "Sales", "extension": "200"}))).await;
    let sales_id = sales["id"].as_str().unwrap();
    assert_eq!(sales["record_calls"], false, "{sales}");
    assert_eq!(api.call(Method::PUT, &format!("/groups/{sales_id}/members/{ada_id}"), None).await.0, StatusCode::OK);
    let (_, main) = api.call(Method::PUT, "/numbers/+14155550000", Some(json!({"user_id": ada_id, "main_line": true}))).await;
    assert_eq!(main["record_calls"], false, "{main}");
    let (_, adas) = api.call(Method::PUT, "/numbers/+14155550100", Some(json!({"user_id": ada_id}))).await;
    assert_eq!(api.call(Method::GET, "/recording-policies", None).await, (StatusCode::OK, json!({"numbers": [], "groups": []})));

    // The main line, named in another spelling, percent-encoded.
    let (status, main_recorded) =
        api.call(Method::PUT, "/numbers/%2B1%20415%20555%200000/recording-policy", Some(json!({"record_calls": true}))).await;
    assert_eq!(status, StatusCode::OK, "{main_recorded}");
    let mut expected = main.clone();
    expected["record_calls"] = json!(true);
    assert_eq!(main_recorded, expected, "only the flag changed");

    // A group: answered with its members, as GET /groups/{id} does.
    let (status, sales_recorded) =
        api.call(Method::PUT, &format!("/groups/{sales_id}/recording-policy"), Some(json!({"record_calls": true}))).await;
    assert_eq!(status, StatusCode::OK, "{sales_recorded}");
    assert_eq!((&sales_recorded["record_calls"], &sales_recorded["members"]), (&json!(true), &json!([ada.clone()])));
    assert_eq!(api.call(Method::GET, &format!("/groups/{sales_id}"), None).await, (StatusCode::OK, sales_recorded.clone()));
    // Idempotent.
    let again = api.call(Method::PUT, &format!("/groups/{sales_id}/recording-policy"), Some(json!({"record_calls": true}))).await;
    assert_eq!(again, (StatusCode::OK, sales_recorded.clone()));

    let mut sales_now = sales.clone();
    sales_now["record_calls"] = json!(true);
    assert_eq!(
        api.call(Method::GET, "/recording-policies", None).await,
        (StatusCode::OK, json!({"numbers": [main_recorded.clone()], "groups": [sales_now.clone()]}))
    );
    // The ordinary listings show the flags.
    assert_eq!(api.call(Method::GET, "/numbers", None).await.1, json!({"numbers": [main_recorded.clone(), adas.clone()]}));
    assert_eq!(api.call(Method::GET, "/groups", None).await.1, json!({"groups": [sales_now]}));

    // Cleared: gone from the list.
    let (status, main_cleared) = api.call(Method::PUT, "/numbers/+14155550000/recording-policy", Some(json!({"record_calls": false}))).await;
    assert_eq!((status, main_cleared), (StatusCode::OK, main.clone()));
    let (status, sales_cleared) =
        api.call(Method::PUT, &format!("/groups/{sales_id}/recording-policy"), Some(json!({"record_calls": false}))).await;
    assert_eq!((status, &sales_cleared["record_calls"]), (StatusCode::OK, &json!(false)));
    assert_eq!(api.call(Method::GET, "/recording-policies", None).await, (StatusCode::OK, json!({"numbers": [], "groups": []})));
}

#[tokio::test]
async fn recording_policy_failures_have_the_right_status_and_a_json_error() {
    let api = Api::new(Some(TOKEN)).await;
    let (_, ada) = api.call(Method::POST, "/users", Some(json!({"name": "Ada"}))).await;
    let ada_id = ada["id"].as_str().unwrap();
    assert_eq!(api.call(Method::PUT, "/numbers/+14155550100", Some(json!({"user_id": ada_id}))).await.0, StatusCode::OK);
    let (_, sales) = api.call(Method::POST, "/groups", Some(json!({"name": "Sales"}))).await;
    let sales_id = sales["id"].as_str().unwrap();
    let number_uri = "/numbers/+14155550100/recording-policy".to_owned();
    let group_uri = format!("/groups/{sales_id}/recording-policy");

    /// Request, expected status and code, and words the message must contain.
    type Case<'a> = (Method, String, Option<Value>, StatusCode, &'a str, Vec<&'a str>);
    let on = || Some(json!({"record_calls": true}));
    let cases: Vec<Case> = vec![
        (Method::PUT, "/numbers/+14155550999/recording-policy".into(), on(), StatusCode::NOT_FOUND, "not_found", vec!["number", "+14155550999"]),
        (Method::PUT, "/numbers/main/recording-policy".into(), on(), StatusCode::BAD_REQUEST, "invalid_argument", vec!["number", "main"]),
        (Method::PUT, "/groups/nogroup/recording-policy".into(), on(), StatusCode::NOT_FOUND, "not_found", vec!["group", "nogroup"]),
        (Method::PUT, number_uri.clone(), Some(json!({})), StatusCode::BAD_REQUEST, "invalid_json", vec!["record_calls"]),
        (Method::PUT, group_uri.clone(), Some(json!({"record_calls": "yes"})), StatusCode::BAD_REQUEST, "invalid_json", vec!["record_calls"]),
        (Method::PUT, group_uri.clone(), Some(json!({"record_calls": true, "scope": "queue"})), StatusCode::BAD_REQUEST, "invalid_json", vec!["scope"]),
        (Method::GET, number_uri.clone(), None, StatusCode::METHOD_NOT_ALLOWED, "", vec![]),
        (Method::POST, "/recording-policies".into(), on(), StatusCode::METHOD_NOT_ALLOWED, "", vec![]),
    ];
    for (method, uri, body, status, code, needles) in cases {
        let (got_status, got) = api.call(method.clone(), &uri, body).await;
        assert_eq!(got_status, status, "{method} {uri}: {got}");
        if code.is_empty() {
            continue;
        }
        assert_eq!(error_code(&got), code, "{method} {uri}: {got}");
        let message = got["detail"].as_str().unwrap();
        for needle in &needles {
            assert!(message.contains(needle), "{method} {uri}: {message:?} should mention {needle:?}");
        }
    }
    // A body that is not declared JSON.
    let req = Request::builder()
        .method(Method::PUT)
        .uri(&number_uri)
        .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
        .body(Body::from("{\"record_calls\": true}"))
        .unwrap();
    let (status, body) = api.send(req).await;
    assert_eq!((status, error_code(&body)), (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"));
    // None of the refused requests set a policy.
    assert_eq!(api.call(Method::GET, "/recording-policies", None).await, (StatusCode::OK, json!({"numbers": [], "groups": []})));
}

#[tokio::test]
async fn a_user_is_made_an_admin_and_an_agent_again() {
    let api = Api::new(Some(TOKEN)).await;
    let (status, ada) = api.call(Method::POST, "/users", Some(json!({"name": "Ada"}))).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(ada["role"], "agent", "users are agents unless said otherwise");
    let id = ada["id"].as_str().unwrap();
    let (status, ada) = api.call(Method::PUT, &format!("/users/{id}/role"), Some(json!({"role": "admin"}))).await;
    assert_eq!((status, &ada["role"]), (StatusCode::OK, &json!("admin")));
    let (_, listed) = api.call(Method::GET, &format!("/users/{id}"), None).await;
    assert_eq!(listed["role"], "admin");
    let (status, ada) = api.call(Method::PUT, &format!("/users/{id}/role"), Some(json!({"role": "agent"}))).await;
    assert_eq!((status, &ada["role"]), (StatusCode::OK, &json!("agent")));
    let (status, body) = api.call(Method::PUT, &format!("/users/{id}/role"), Some(json!({"role": "root"}))).await;
    assert_eq!((status, error_code(&body)), (StatusCode::BAD_REQUEST, "invalid_json"));
    let (status, body) = api.call(Method::PUT, "/users/nobody/role", Some(json!({"role": "admin"}))).await;
    assert_eq!((status, error_code(&body)), (StatusCode::NOT_FOUND, "not_found"));
}
