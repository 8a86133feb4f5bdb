//! The client credentials flow at the token endpoint: the consumer key and
//! secret as form fields or HTTP Basic authentication, the app's "Enable
//! Client Credentials Flow" and "Run As" settings, and tokens acting as the
//! Run As user.

use base64::Engine as _;
use reqwest::{Method, StatusCode};
use salesforce_emulator::{ConnectedApp, CLIENT_CREDENTIALS_GRANT};
use serde_json::{json, Value};

use crate::harness::{answer, Answer, Org};

/// The Run As user of the tests' apps.
const RUN_AS: &str = "run-as@example.com";

/// An org whose default app has the flow enabled with [`RUN_AS`]; the Run
/// As user's id.
async fn org() -> (Org, String) {
    let org = Org::start().await;
    let run_as_id = org.emulator.add_user(RUN_AS).expect("run-as user");
    let app = org
        .emulator
        .connected_app(&org.emulator.consumer_key())
        .expect("default app")
        .with_client_credentials(RUN_AS);
    org.emulator.register_connected_app(app).expect("app");
    (org, run_as_id)
}

/// Posts a token request with `form`, and HTTP Basic credentials if given.
async fn request(org: &Org, form: &[(&str, &str)], basic: Option<(&str, &str)>) -> Answer {
    let mut request = org.client.post(org.emulator.token_url()).form(form);
    if let Some((id, secret)) = basic {
        request = request.basic_auth(id, Some(secret));
    }
    answer(request.send().await.expect("token request")).await
}

/// A request with the credentials as form fields.
async fn with_form(org: &Org, client_id: &str, client_secret: &str) -> Answer {
    request(
        org,
        &[
            ("grant_type", CLIENT_CREDENTIALS_GRANT),
            ("client_id", client_id),
            ("client_secret", client_secret),
        ],
        None,
    )
    .await
}

fn assert_oauth_error(answer: &Answer, error: &str, description: &str) {
    assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{:?}", answer.body);
    assert_eq!(answer.body["error"], error, "{:?}", answer.body);
    assert_eq!(
        answer.body["error_description"], description,
        "{:?}",
        answer.body
    );
}

/// Base64 HMAC-SHA256 of `id` and `issued_at` keyed with the secret.
fn signature(secret: &str, id: &str, issued_at: &str) -> String {
    use hmac::Mac as _;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC key");
    mac.update(id.as_bytes());
    mac.update(issued_at.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

#[tokio::test]
async fn form_credentials_get_a_token_acting_as_the_run_as_user() {
    let (org, run_as_id) = org().await;
    let secret = org.emulator.consumer_secret();
    let answer = with_form(&org, &org.emulator.consumer_key(), &secret).await;
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
    let body = &answer.body;
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["instance_url"], org.emulator.url());
    let id = format!(
        "{}/id/{}/{run_as_id}",
        org.emulator.url(),
        org.emulator.org_id()
    );
    assert_eq!(body["id"], id.as_str());
    let issued_at = body["issued_at"].as_str().expect("issued_at");
    assert!(issued_at.parse::<i64>().is_ok(), "{issued_at}");
    assert_eq!(body["signature"], signature(&secret, &id, issued_at));
    assert!(body.get("refresh_token").is_none(), "{body}");
    assert!(body.get("id_token").is_none(), "{body}");
    let scopes: Vec<&str> = body["scope"].as_str().expect("scope").split(' ').collect();
    assert!(scopes.contains(&"api"), "{scopes:?}");
    assert!(
        !scopes.contains(&"refresh_token") && !scopes.contains(&"offline_access"),
        "{scopes:?}"
    );
    assert_eq!(answer.headers["cache-control"], "no-store");

    // The token acts as the Run As user: what it creates, that user owns.
    let token = body["access_token"].as_str().expect("access_token");
    let created = org
        .call(
            Method::POST,
            "v62.0/sobjects/Contact",
            token,
            Some(json!({"LastName": "Client Credentials"})),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    let contacts = org.emulator.records("Contact");
    let contact = contacts
        .iter()
        .find(|c| c["Id"] == created.body["id"])
        .expect("the new Contact");
    assert_eq!(contact["OwnerId"], run_as_id.as_str());
    assert_eq!(org.emulator.token_calls(), 1);
}

#[tokio::test]
async fn basic_credentials_are_accepted_and_checked_like_form_fields() {
    let (org, run_as_id) = org().await;
    let key = org.emulator.consumer_key();
    let secret = org.emulator.consumer_secret();
    let grant = [("grant_type", CLIENT_CREDENTIALS_GRANT)];

    let basic = request(&org, &grant, Some((&key, &secret))).await;
    assert_eq!(basic.status, StatusCode::OK, "{:?}", basic.body);
    assert!(basic.body["id"]
        .as_str()
        .is_some_and(|id| id.ends_with(&run_as_id)));
    let token = basic.body["access_token"].as_str().expect("token");
    let limits = org.call(Method::GET, "v62.0/limits", token, None).await;
    assert_eq!(limits.status, StatusCode::OK);

    let wrong = request(&org, &grant, Some((&key, "not-the-secret"))).await;
    assert_oauth_error(&wrong, "invalid_client", "invalid client credentials");
    let stranger = request(&org, &grant, Some(("3MVG9nobody", &secret))).await;
    assert_oauth_error(&stranger, "invalid_client_id", "client identifier invalid");

    // The header is what counts when both are sent.
    let both = request(
        &org,
        &[
            ("grant_type", CLIENT_CREDENTIALS_GRANT),
            ("client_id", &key),
            ("client_secret", &secret),
        ],
        Some((&key, "not-the-secret")),
    )
    .await;
    assert_oauth_error(&both, "invalid_client", "invalid client credentials");

    let garbled = answer(
        org.client
            .post(org.emulator.token_url())
            .header("authorization", "Basic ***")
            .form(&grant)
            .send()
            .await
            .expect("token request"),
    )
    .await;
    assert_oauth_error(&garbled, "invalid_client", "invalid client credentials");
    assert_eq!(org.emulator.stats().active_sessions, 1);
}

#[tokio::test]
async fn a_wrong_or_missing_secret_is_invalid_client() {
    let (org, _) = org().await;
    let key = org.emulator.consumer_key();
    assert_oauth_error(
        &with_form(&org, &key, "0123456789ABCDEF").await,
        "invalid_client",
        "invalid client credentials",
    );
    assert_oauth_error(
        &with_form(&org, &key, "").await,
        "invalid_client",
        "invalid client credentials",
    );
    let no_secret = request(
        &org,
        &[
            ("grant_type", CLIENT_CREDENTIALS_GRANT),
            ("client_id", &key),
        ],
        None,
    )
    .await;
    assert_oauth_error(&no_secret, "invalid_client", "invalid client credentials");
    assert_oauth_error(
        &with_form(&org, "3MVG9nobody", &org.emulator.consumer_secret()).await,
        "invalid_client_id",
        "client identifier invalid",
    );
    let bare = request(&org, &[("grant_type", CLIENT_CREDENTIALS_GRANT)], None).await;
    assert_oauth_error(&bare, "invalid_client_id", "client identifier invalid");
    assert_eq!(org.emulator.stats().active_sessions, 0);
}

#[tokio::test]
async fn the_flow_must_be_enabled_on_the_app() {
    let (org, _) = org().await;
    let key = org.emulator.consumer_key();
    let secret = org.emulator.consumer_secret();
    let mut app = org.emulator.connected_app(&key).expect("app");
    app.client_credentials_enabled = false;
    org.emulator.register_connected_app(app).expect("app");
    assert_oauth_error(
        &with_form(&org, &key, &secret).await,
        "invalid_grant",
        "no client credentials user enabled",
    );

    // A new app has the flow off, as Salesforce makes them.
    let fresh = Org::start().await;
    let app = fresh
        .emulator
        .connected_app(&fresh.emulator.consumer_key())
        .expect("app");
    assert!(!app.client_credentials_enabled);
    assert_eq!(app.client_credentials_user, None);
    assert_oauth_error(
        &with_form(&fresh, &app.consumer_key, &app.consumer_secret).await,
        "invalid_grant",
        "no client credentials user enabled",
    );
}

#[tokio::test]
async fn the_app_needs_a_run_as_user() {
    let (org, _) = org().await;
    let key = org.emulator.consumer_key();
    let secret = org.emulator.consumer_secret();
    let mut app = org.emulator.connected_app(&key).expect("app");
    app.client_credentials_user = None;
    assert!(app.client_credentials_enabled);
    org.emulator
        .register_connected_app(app.clone())
        .expect("app");
    assert_oauth_error(
        &with_form(&org, &key, &secret).await,
        "invalid_grant",
        "no client credentials user enabled",
    );

    // Only a user of the org can be the Run As user.
    app.client_credentials_user = Some("nobody@example.com".to_owned());
    let err = org
        .emulator
        .register_connected_app(app)
        .expect_err("unknown Run As user");
    assert!(err.to_string().contains("nobody@example.com"), "{err}");
}

#[tokio::test]
async fn a_deactivated_run_as_user_is_refused() {
    let (org, run_as_id) = org().await;
    let admin = org.token().await;
    let deactivated = org
        .call(
            Method::PATCH,
            &format!("v62.0/sobjects/User/{run_as_id}"),
            &admin,
            Some(json!({"IsActive": false})),
        )
        .await;
    assert_eq!(
        deactivated.status,
        StatusCode::NO_CONTENT,
        "{:?}",
        deactivated.body
    );
    assert_oauth_error(
        &with_form(
            &org,
            &org.emulator.consumer_key(),
            &org.emulator.consumer_secret(),
        )
        .await,
        "invalid_grant",
        "user is inactive",
    );
}

#[tokio::test]
async fn the_settings_are_steered_over_http() {
    let org = Org::start().await;
    let base = format!("{}/__emulator", org.emulator.url());
    let put = |body: Value| {
        let client = org.client.clone();
        let url = format!("{base}/connected-apps/3MVG9cc.app");
        async move { answer(client.put(url).json(&body).send().await.expect("put app")).await }
    };

    let defaults = put(json!({"consumer_secret": "cc-secret"})).await;
    assert_eq!(defaults.status, StatusCode::OK, "{:?}", defaults.body);
    assert_eq!(defaults.body["client_credentials_enabled"], false);
    assert_eq!(defaults.body["client_credentials_user"], Value::Null);

    let unknown = put(json!({"client_credentials_enabled": true, "client_credentials_user": "nobody@example.com"})).await;
    assert_eq!(
        unknown.status,
        StatusCode::BAD_REQUEST,
        "{:?}",
        unknown.body
    );

    let enabled = put(json!({
        "consumer_secret": "cc-secret",
        "client_credentials_enabled": true,
        "client_credentials_user": org.username,
    }))
    .await;
    assert_eq!(enabled.status, StatusCode::OK, "{:?}", enabled.body);
    let token = with_form(&org, "3MVG9cc.app", "cc-secret").await;
    assert_eq!(token.status, StatusCode::OK, "{:?}", token.body);
    assert!(token.body["id"]
        .as_str()
        .is_some_and(|id| id.ends_with(&org.emulator.user_id())));

    // The JWT bearer flow of the default app is not affected.
    org.token().await;
    let app = ConnectedApp::new("3MVG9other").with_client_credentials(org.username.clone());
    org.emulator.register_connected_app(app).expect("app");
}
