//! The web-server (authorization code) flow: the authorization endpoint,
//! the code exchange with PKCE, refresh tokens and revocation, driven as the
//! gateway drives them.

use std::collections::HashMap;

use reqwest::redirect::Policy;
use reqwest::{Method, StatusCode};
use salesforce_emulator::{Browser, ConnectedApp, EmulatorConfig, RefreshTokenPolicy};
use serde_json::{json, Value};

use crate::harness::{answer, Answer, Org};

const CALLBACK: &str = "https://gateway.example.com/oauth/callback";
pub const AGENT: &str = "agent@example.com";
/// RFC 7636 Appendix B.
const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
const STATE: &str = "opaque state/with+chars";

/// An org whose app has [`CALLBACK`], an agent signed in to the browser, and
/// a client that does not follow redirects, as a test of the gateway sees it.
pub struct Flow {
    pub org: Org,
    pub browser: reqwest::Client,
    pub key: String,
    pub secret: String,
    pub agent_id: String,
}

impl Flow {
    pub async fn start() -> Flow {
        Flow::start_with(|_| {}).await
    }

    async fn start_with(change: impl FnOnce(&mut EmulatorConfig)) -> Flow {
        let org = Org::start_with(change).await;
        let key = org.emulator.consumer_key();
        org.emulator
            .add_callback_url(&key, CALLBACK)
            .expect("callback URL");
        let agent_id = org.emulator.add_user(AGENT).expect("agent");
        org.emulator.sign_in_browser(AGENT).expect("sign in");
        let secret = org.emulator.consumer_secret();
        Flow {
            org,
            browser: reqwest::Client::builder()
                .redirect(Policy::none())
                .build()
                .expect("client"),
            key,
            secret,
            agent_id,
        }
    }

    /// The gateway's authorization request, with `changes` applied: a pair
    /// with an empty value removes the parameter.
    pub async fn authorize(&self, changes: &[(&str, &str)]) -> reqwest::Response {
        let mut params: Vec<(String, String)> = [
            ("response_type", "code"),
            ("client_id", self.key.as_str()),
            ("redirect_uri", CALLBACK),
            ("scope", "api refresh_token openid"),
            ("code_challenge", CHALLENGE),
            ("code_challenge_method", "S256"),
            ("state", STATE),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
        for (name, value) in changes {
            params.retain(|(k, _)| k.as_str() != *name);
            if !value.is_empty() {
                params.push(((*name).to_owned(), (*value).to_owned()));
            }
        }
        self.browser
            .get(self.org.emulator.authorize_url())
            .query(&params)
            .send()
            .await
            .expect("authorize")
    }

    /// A code for the default request.
    pub async fn code(&self) -> String {
        self.code_for(&[]).await
    }

    pub async fn code_for(&self, changes: &[(&str, &str)]) -> String {
        let back = callback(self.authorize(changes).await);
        assert_eq!(back.get("state").map(String::as_str), Some(STATE));
        back.get("code")
            .cloned()
            .unwrap_or_else(|| panic!("no code: {back:?}"))
    }

    /// Posts a token request: the gateway's exchange of `code`, with
    /// `changes` applied as in [`Flow::authorize`].
    pub async fn exchange(&self, code: &str, changes: &[(&str, &str)]) -> Answer {
        self.token(
            &[
                ("grant_type", "authorization_code"),
                ("code", code),
                ("client_id", self.key.as_str()),
                ("client_secret", self.secret.as_str()),
                ("redirect_uri", CALLBACK),
                ("code_verifier", VERIFIER),
            ],
            changes,
        )
        .await
    }

    pub async fn refresh(&self, refresh_token: &str, changes: &[(&str, &str)]) -> Answer {
        self.token(
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh_token),
                ("client_id", self.key.as_str()),
                ("client_secret", self.secret.as_str()),
            ],
            changes,
        )
        .await
    }

    async fn token(&self, base: &[(&str, &str)], changes: &[(&str, &str)]) -> Answer {
        let mut form: Vec<(&str, &str)> = base.to_vec();
        for (name, value) in changes {
            form.retain(|(k, _)| k != name);
            if !value.is_empty() {
                form.push((*name, *value));
            }
        }
        let response = self
            .browser
            .post(self.org.emulator.token_url())
            .form(&form)
            .send()
            .await
            .expect("token request");
        answer(response).await
    }

    pub async fn revoke(&self, token: &str) -> StatusCode {
        self.browser
            .post(format!(
                "{}/services/oauth2/revoke",
                self.org.emulator.url()
            ))
            .form(&[("token", token)])
            .send()
            .await
            .expect("revoke")
            .status()
    }

    /// A REST call's status with `token`.
    async fn rest_status(&self, token: &str) -> StatusCode {
        self.org
            .call(Method::GET, "v62.0/limits", token, None)
            .await
            .status
    }
}

/// The query of a 302 to the gateway (at [`CALLBACK`] or another of its
/// registered callback URLs).
fn callback(response: reqwest::Response) -> HashMap<String, String> {
    assert_eq!(response.status(), StatusCode::FOUND);
    let location = response.headers()[reqwest::header::LOCATION]
        .to_str()
        .expect("ASCII location")
        .to_owned();
    assert!(
        location.starts_with("https://gateway.example.com/"),
        "{location}"
    );
    url::Url::parse(&location)
        .expect("location URL")
        .query_pairs()
        .into_owned()
        .collect()
}

/// An error redirect's `error` and `error_description`, with `state`.
fn redirected_error(response: reqwest::Response) -> (String, String) {
    let back = callback(response);
    assert_eq!(
        back.get("state").map(String::as_str),
        Some(STATE),
        "{back:?}"
    );
    assert!(!back.contains_key("code"), "{back:?}");
    (
        back.get("error").cloned().unwrap_or_default(),
        back.get("error_description").cloned().unwrap_or_default(),
    )
}

/// An error page: 400, HTML, no redirect.
async fn error_page(response: reqwest::Response) -> String {
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(response.headers().get(reqwest::header::LOCATION).is_none());
    assert!(response.headers()[reqwest::header::CONTENT_TYPE]
        .to_str()
        .is_ok_and(|t| t.starts_with("text/html")));
    response.text().await.expect("page")
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

pub fn field<'a>(answer: &'a Answer, name: &str) -> &'a str {
    answer.body[name]
        .as_str()
        .unwrap_or_else(|| panic!("no {name}: {:?}", answer.body))
}

#[tokio::test]
async fn authorize_exchange_use_refresh_and_revoke() {
    let flow = Flow::start().await;
    let emulator = &flow.org.emulator;
    let response = flow.authorize(&[]).await;
    assert_eq!(response.status(), StatusCode::FOUND);
    let location = response.headers()[reqwest::header::LOCATION]
        .to_str()
        .expect("location")
        .to_owned();
    // The code ends in "==", sent encoded: the client must decode it.
    assert!(location.contains("%3D%3D"), "{location}");
    let back = callback(response);
    assert_eq!(back["state"], STATE);
    let code = &back["code"];

    let tokens = flow.exchange(code, &[]).await;
    assert_eq!(tokens.status, StatusCode::OK, "{:?}", tokens.body);
    assert_eq!(tokens.headers["cache-control"], "no-store");
    let org_id = emulator.org_id();
    let id = format!("{}/id/{org_id}/{}", emulator.url(), flow.agent_id);
    assert_eq!(field(&tokens, "id"), id);
    assert_eq!(field(&tokens, "instance_url"), emulator.url());
    assert_eq!(field(&tokens, "token_type"), "Bearer");
    assert_eq!(field(&tokens, "scope"), "api refresh_token openid");
    let issued_at = field(&tokens, "issued_at");
    assert!(issued_at.parse::<i64>().is_ok());
    assert_eq!(
        field(&tokens, "signature"),
        signature(&flow.secret, &id, issued_at)
    );
    let access = field(&tokens, "access_token").to_owned();
    let refresh = field(&tokens, "refresh_token").to_owned();
    assert!(access.starts_with(&format!("{}!", &org_id[..15])));

    // The token acts as the agent who authorized.
    let created = flow
        .org
        .call(
            Method::POST,
            "v62.0/sobjects/Contact",
            &access,
            Some(json!({"LastName": "Roe"})),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    let contact = emulator.records("Contact");
    assert_eq!(contact[0]["OwnerId"], flow.agent_id.as_str());
    assert_eq!(contact[0]["CreatedById"], flow.agent_id.as_str());
    let query = flow
        .org
        .call(
            Method::GET,
            "v62.0/query?q=SELECT%20Id%20FROM%20Contact",
            &access,
            None,
        )
        .await;
    assert_eq!(query.status, StatusCode::OK, "{:?}", query.body);

    // Refresh: a new access token, no new refresh token, the old one kept.
    let refreshed = flow.refresh(&refresh, &[]).await;
    assert_eq!(refreshed.status, StatusCode::OK, "{:?}", refreshed.body);
    assert!(refreshed.body.get("refresh_token").is_none());
    assert_eq!(field(&refreshed, "id"), id);
    assert_eq!(field(&refreshed, "scope"), "api refresh_token openid");
    let second = field(&refreshed, "access_token").to_owned();
    assert_ne!(second, access);
    assert_eq!(flow.rest_status(&second).await, StatusCode::OK);
    assert_eq!(flow.rest_status(&access).await, StatusCode::OK);
    let stats = emulator.stats();
    assert_eq!(stats.refresh_tokens, 1);
    assert_eq!(stats.authorization_codes, 0);

    // Revoking the refresh token revokes the access tokens issued under it.
    assert_eq!(flow.revoke(&refresh).await, StatusCode::OK);
    assert_eq!(flow.rest_status(&access).await, StatusCode::UNAUTHORIZED);
    assert_eq!(flow.rest_status(&second).await, StatusCode::UNAUTHORIZED);
    assert_oauth_error(
        &flow.refresh(&refresh, &[]).await,
        "invalid_grant",
        "expired access/refresh token",
    );
    assert_eq!(emulator.stats().refresh_tokens, 0);
}

/// Base64 HMAC-SHA256 of `id` and `issued_at` keyed with the secret.
fn signature(secret: &str, id: &str, issued_at: &str) -> String {
    use base64::Engine as _;
    use hmac::Mac as _;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC key");
    mac.update(id.as_bytes());
    mac.update(issued_at.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

#[tokio::test]
async fn revoking_an_access_token_leaves_the_refresh_token() {
    let flow = Flow::start().await;
    let tokens = flow.exchange(&flow.code().await, &[]).await;
    let access = field(&tokens, "access_token");
    let refresh = field(&tokens, "refresh_token");
    assert_eq!(flow.revoke(access).await, StatusCode::OK);
    assert_eq!(flow.rest_status(access).await, StatusCode::UNAUTHORIZED);
    let refreshed = flow.refresh(refresh, &[]).await;
    assert_eq!(refreshed.status, StatusCode::OK, "{:?}", refreshed.body);
    // A token revoked twice is unknown the second time.
    assert_eq!(flow.revoke(access).await, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn a_code_is_spent_by_its_first_exchange() {
    let flow = Flow::start().await;
    let code = flow.code().await;
    assert_eq!(flow.exchange(&code, &[]).await.status, StatusCode::OK);
    assert_oauth_error(
        &flow.exchange(&code, &[]).await,
        "invalid_grant",
        "invalid authorization code",
    );
    // Also when the first exchange failed on the verifier.
    let code = flow.code().await;
    let wrong = "x".repeat(43);
    assert_oauth_error(
        &flow
            .exchange(&code, &[("code_verifier", wrong.as_str())])
            .await,
        "invalid_grant",
        "invalid code verifier",
    );
    assert_oauth_error(
        &flow.exchange(&code, &[]).await,
        "invalid_grant",
        "invalid authorization code",
    );
    for unknown in ["aPrxNotACode==", ""] {
        assert_oauth_error(
            &flow.exchange(unknown, &[]).await,
            "invalid_grant",
            "invalid authorization code",
        );
    }
}

#[tokio::test]
async fn codes_expire() {
    let flow = Flow::start_with(|c| c.authorization_code_ttl = std::time::Duration::ZERO).await;
    let code = flow.code().await;
    assert_oauth_error(
        &flow.exchange(&code, &[]).await,
        "invalid_grant",
        "expired authorization code",
    );
}

#[tokio::test]
async fn the_verifier_must_match_the_challenge() {
    let flow = Flow::start().await;
    let other = "A".repeat(43);
    for verifier in [
        other.as_str(),
        "",                   // missing
        "dBjftJeZ4CVP-mB92K", // too short
        CHALLENGE,            // the challenge is no verifier
    ] {
        let code = flow.code().await;
        assert_oauth_error(
            &flow.exchange(&code, &[("code_verifier", verifier)]).await,
            "invalid_grant",
            "invalid code verifier",
        );
    }
    // `plain` compares the verifier itself.
    let code = flow
        .code_for(&[
            ("code_challenge", VERIFIER),
            ("code_challenge_method", "plain"),
        ])
        .await;
    assert_eq!(flow.exchange(&code, &[]).await.status, StatusCode::OK);
}

#[tokio::test]
async fn without_required_pkce_a_verifier_needs_a_challenge() {
    let flow = Flow::start().await;
    let mut app = flow.org.emulator.connected_app(&flow.key).expect("app");
    app.require_pkce = false;
    flow.org.emulator.register_connected_app(app).expect("app");
    let code = flow
        .code_for(&[("code_challenge", ""), ("code_challenge_method", "")])
        .await;
    assert_oauth_error(
        &flow.exchange(&code, &[]).await,
        "invalid_grant",
        "invalid code verifier",
    );
    let code = flow
        .code_for(&[("code_challenge", ""), ("code_challenge_method", "")])
        .await;
    let tokens = flow.exchange(&code, &[("code_verifier", "")]).await;
    assert_eq!(tokens.status, StatusCode::OK, "{:?}", tokens.body);
}

#[tokio::test]
async fn the_redirect_uri_must_be_the_one_of_the_authorization() {
    let flow = Flow::start().await;
    let other = "https://gateway.example.com/other";
    flow.org
        .emulator
        .add_callback_url(&flow.key, other)
        .expect("callback");
    for redirect_uri in [other, "", "https://gateway.example.com/oauth/callback/"] {
        let code = flow.code().await;
        assert_oauth_error(
            &flow
                .exchange(&code, &[("redirect_uri", redirect_uri)])
                .await,
            "redirect_uri_mismatch",
            "redirect_uri must match configuration",
        );
    }
    // The other registered callback works when the authorization used it.
    let code = flow.code_for(&[("redirect_uri", other)]).await;
    let tokens = flow.exchange(&code, &[("redirect_uri", other)]).await;
    assert_eq!(tokens.status, StatusCode::OK, "{:?}", tokens.body);
}

#[tokio::test]
async fn the_client_is_checked_at_the_token_endpoint() {
    let flow = Flow::start().await;
    let code = flow.code().await;
    for client_id in ["someone-else", ""] {
        assert_oauth_error(
            &flow.exchange(&code, &[("client_id", client_id)]).await,
            "invalid_client_id",
            "client identifier invalid",
        );
    }
    for secret in ["wrong", ""] {
        assert_oauth_error(
            &flow.exchange(&code, &[("client_secret", secret)]).await,
            "invalid_client",
            "invalid client credentials",
        );
    }
    // The refusals above did not spend the code.
    assert_eq!(flow.exchange(&code, &[]).await.status, StatusCode::OK);

    // A code of one app is nothing to another app.
    let other = ConnectedApp::new("3MVG9other.app").with_callback_url(CALLBACK);
    let other_secret = other.consumer_secret.clone();
    flow.org
        .emulator
        .register_connected_app(other)
        .expect("other app");
    let code = flow.code().await;
    assert_oauth_error(
        &flow
            .exchange(
                &code,
                &[
                    ("client_id", "3MVG9other.app"),
                    ("client_secret", other_secret.as_str()),
                ],
            )
            .await,
        "invalid_grant",
        "invalid authorization code",
    );
    assert_eq!(flow.exchange(&code, &[]).await.status, StatusCode::OK);
}

#[tokio::test]
async fn a_public_client_exchanges_without_secret_but_not_with_a_wrong_one() {
    let flow = Flow::start_with(|c| {
        let mut app = ConnectedApp::new(c.consumer_key.clone());
        app.require_secret = false;
        app.require_secret_for_refresh = false;
        c.connected_apps.push(app);
    })
    .await;
    let code = flow.code().await;
    let tokens = flow.exchange(&code, &[("client_secret", "")]).await;
    assert_eq!(tokens.status, StatusCode::OK, "{:?}", tokens.body);
    let refresh = field(&tokens, "refresh_token");
    assert_eq!(
        flow.refresh(refresh, &[("client_secret", "")]).await.status,
        StatusCode::OK
    );
    assert_oauth_error(
        &flow.refresh(refresh, &[("client_secret", "wrong")]).await,
        "invalid_client",
        "invalid client credentials",
    );
}

#[tokio::test]
async fn authorization_errors_before_the_callback_is_trusted_are_pages() {
    let flow = Flow::start().await;
    for client_id in ["unknown-app", ""] {
        let page = error_page(flow.authorize(&[("client_id", client_id)]).await).await;
        assert!(page.contains("error=invalid_client_id"), "{page}");
        assert!(page.contains("client identifier invalid"), "{page}");
    }
    let page = error_page(
        flow.authorize(&[("redirect_uri", "https://evil.example.com/cb")])
            .await,
    )
    .await;
    assert!(page.contains("error=redirect_uri_mismatch"), "{page}");
    let page = error_page(flow.authorize(&[("redirect_uri", "")]).await).await;
    assert!(page.contains("error=redirect_uri_missing"), "{page}");
    // A bare request, and one with bytes that are no UTF-8.
    let bare = flow
        .browser
        .get(flow.org.emulator.authorize_url())
        .send()
        .await
        .expect("bare");
    error_page(bare).await;
    let garbage = flow
        .browser
        .get(format!(
            "{}?client_id=%FF%FE&redirect_uri=%C3%28",
            flow.org.emulator.authorize_url()
        ))
        .send()
        .await
        .expect("garbage");
    error_page(garbage).await;
}

/// Changes to the authorization request, and the error they get.
type Case<'a> = (&'a [(&'a str, &'a str)], &'a str, &'a str);

#[tokio::test]
async fn authorization_errors_after_the_callback_is_trusted_are_redirected() {
    let flow = Flow::start().await;
    let cases: &[Case] = &[
        (
            &[("response_type", "token")],
            "unsupported_response_type",
            "response type not supported",
        ),
        (
            &[("response_type", "")],
            "unsupported_response_type",
            "response type not supported",
        ),
        (
            &[("code_challenge_method", "S512")],
            "invalid_request",
            "unsupported code challenge method",
        ),
        (
            &[("code_challenge", "")],
            "invalid_request",
            "missing required code challenge",
        ),
        (
            &[("code_challenge", "short")],
            "invalid_request",
            "invalid code challenge",
        ),
        (
            &[("scope", "api chatter_api")],
            "invalid_scope",
            "requested scope is invalid, unknown, or malformed",
        ),
    ];
    for (changes, error, description) in cases {
        let (got_error, got_description) = redirected_error(flow.authorize(changes).await);
        assert_eq!(
            (got_error.as_str(), got_description.as_str()),
            (*error, *description),
            "{changes:?}"
        );
    }
    assert_eq!(flow.org.emulator.stats().authorization_codes, 0);
}

#[tokio::test]
async fn a_user_who_denies_access_is_redirected_with_access_denied() {
    let flow = Flow::start().await;
    flow.org
        .emulator
        .set_browser(Browser {
            username: Some(AGENT.to_owned()),
            deny: true,
        })
        .expect("browser");
    let response = flow.authorize(&[]).await;
    let location = response.headers()[reqwest::header::LOCATION]
        .to_str()
        .expect("location")
        .to_owned();
    assert!(
        location.contains("error=access_denied&error_description=end-user+denied+authorization"),
        "{location}"
    );
    let (error, description) = redirected_error(response);
    assert_eq!(error, "access_denied");
    assert_eq!(description, "end-user denied authorization");
}

#[tokio::test]
async fn login_hint_or_the_browser_session_chooses_the_user() {
    let flow = Flow::start().await;
    let emulator = &flow.org.emulator;
    let other_id = emulator.add_user("other@example.com").expect("user");

    // login_hint wins over the browser's user.
    let code = flow.code_for(&[("login_hint", "OTHER@example.com")]).await;
    let tokens = flow.exchange(&code, &[]).await;
    assert!(
        field(&tokens, "id").ends_with(&other_id),
        "{:?}",
        tokens.body
    );

    // Nobody signed in: Salesforce's login page, no redirect, no code.
    emulator.set_browser(Browser::default()).expect("sign out");
    let response = flow.authorize(&[]).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers().get(reqwest::header::LOCATION).is_none());
    assert!(response.text().await.expect("page").contains("Log In"));
    // Nor for a username nobody has.
    let response = flow
        .authorize(&[("login_hint", "nobody@example.com")])
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(emulator.stats().authorization_codes, 0);
    // The browser only signs in users who exist.
    assert!(emulator.sign_in_browser("nobody@example.com").is_err());
}

#[tokio::test]
async fn refresh_tokens_follow_the_app_policy() {
    let flow = Flow::start().await;
    let emulator = &flow.org.emulator;
    let refresh = field(
        &flow.exchange(&flow.code().await, &[]).await,
        "refresh_token",
    )
    .to_owned();

    let mut app = emulator.connected_app(&flow.key).expect("app");
    app.rotate_refresh_tokens = true;
    emulator.register_connected_app(app.clone()).expect("app");
    let rotated = flow.refresh(&refresh, &[]).await;
    assert_eq!(rotated.status, StatusCode::OK, "{:?}", rotated.body);
    let next = field(&rotated, "refresh_token").to_owned();
    assert_ne!(next, refresh);
    assert_oauth_error(
        &flow.refresh(&refresh, &[]).await,
        "invalid_grant",
        "expired access/refresh token",
    );
    let third = field(&flow.refresh(&next, &[]).await, "refresh_token").to_owned();
    assert_ne!(third, next);

    app.rotate_refresh_tokens = false;
    app.refresh_token_policy = RefreshTokenPolicy::ExpireAfter { secs: 0 };
    emulator.register_connected_app(app.clone()).expect("app");
    let refresh = field(
        &flow.exchange(&flow.code().await, &[]).await,
        "refresh_token",
    )
    .to_owned();
    assert_oauth_error(
        &flow.refresh(&refresh, &[]).await,
        "invalid_grant",
        "expired access/refresh token",
    );

    app.refresh_token_policy = RefreshTokenPolicy::Immediately;
    emulator.register_connected_app(app).expect("app");
    let refresh = field(
        &flow.exchange(&flow.code().await, &[]).await,
        "refresh_token",
    )
    .to_owned();
    assert_oauth_error(
        &flow.refresh(&refresh, &[]).await,
        "invalid_grant",
        "expired access/refresh token",
    );
}

#[tokio::test]
async fn refresh_requests_are_checked_like_code_exchanges() {
    let flow = Flow::start().await;
    let refresh = field(
        &flow.exchange(&flow.code().await, &[]).await,
        "refresh_token",
    )
    .to_owned();
    assert_oauth_error(
        &flow.refresh(&refresh, &[("client_id", "")]).await,
        "invalid_client_id",
        "client identifier invalid",
    );
    assert_oauth_error(
        &flow.refresh(&refresh, &[("client_secret", "")]).await,
        "invalid_client",
        "invalid client credentials",
    );
    for unknown in ["5Aep861nothing", ""] {
        assert_oauth_error(
            &flow.refresh(unknown, &[]).await,
            "invalid_grant",
            "expired access/refresh token",
        );
    }
    // Another app cannot use the refresh token.
    let other = ConnectedApp::new("3MVG9other.app");
    let other_secret = other.consumer_secret.clone();
    flow.org
        .emulator
        .register_connected_app(other)
        .expect("app");
    assert_oauth_error(
        &flow
            .refresh(
                &refresh,
                &[
                    ("client_id", "3MVG9other.app"),
                    ("client_secret", other_secret.as_str()),
                ],
            )
            .await,
        "invalid_grant",
        "expired access/refresh token",
    );
    assert_eq!(flow.refresh(&refresh, &[]).await.status, StatusCode::OK);
}

#[tokio::test]
async fn scopes_decide_refresh_tokens_and_rest_access() {
    let flow = Flow::start().await;
    let tokens = flow
        .exchange(&flow.code_for(&[("scope", "openid")]).await, &[])
        .await;
    assert_eq!(tokens.status, StatusCode::OK, "{:?}", tokens.body);
    assert!(tokens.body.get("refresh_token").is_none());
    let call = flow
        .org
        .call(
            Method::GET,
            "v62.0/limits",
            field(&tokens, "access_token"),
            None,
        )
        .await;
    assert_eq!(call.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        call.body[0]["message"],
        "This session is not valid for use with the REST API"
    );

    // Without a scope parameter the app's scopes are granted.
    let tokens = flow
        .exchange(&flow.code_for(&[("scope", "")]).await, &[])
        .await;
    let app = flow.org.emulator.connected_app(&flow.key).expect("app");
    assert_eq!(field(&tokens, "scope"), app.scopes.join(" "));
    assert!(tokens.body.get("refresh_token").is_some());
}

#[tokio::test]
async fn malformed_token_requests_get_oauth_errors() {
    let flow = Flow::start().await;
    let post = |body: &'static [u8]| {
        flow.browser
            .post(flow.org.emulator.token_url())
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
    };
    let garbage = answer(post(b"\xff\xfe&&==&grant_type").await.expect("post")).await;
    assert_oauth_error(
        &garbage,
        "unsupported_grant_type",
        "grant type not supported",
    );
    let bare = answer(post(b"grant_type=authorization_code").await.expect("post")).await;
    assert_oauth_error(&bare, "invalid_client_id", "client identifier invalid");
    let bare = answer(post(b"grant_type=refresh_token").await.expect("post")).await;
    assert_oauth_error(&bare, "invalid_client_id", "client identifier invalid");
}

#[tokio::test]
async fn connected_apps_and_the_browser_are_steered_over_http() {
    let flow = Flow::start().await;
    let base = format!("{}/__emulator", flow.org.emulator.url());
    let client = &flow.browser;

    let put = answer(
        client
            .put(format!("{base}/connected-apps/3MVG9http.app"))
            .json(&json!({"callback_urls": [CALLBACK], "require_secret": false, "require_pkce": false}))
            .send()
            .await
            .expect("put app"),
    )
    .await;
    assert_eq!(put.status, StatusCode::OK, "{:?}", put.body);
    assert_eq!(put.body["consumer_key"], "3MVG9http.app");
    assert_eq!(put.body["require_secret_for_refresh"], true);
    assert_eq!(
        put.body["refresh_token_policy"]["kind"],
        "valid_until_revoked"
    );
    assert_eq!(put.body["consumer_secret"].as_str().map(str::len), Some(64));
    let added = client
        .post(format!("{base}/connected-apps/3MVG9http.app/callback-urls"))
        .json(&json!({"url": "http://localhost:9000/cb"}))
        .send()
        .await
        .expect("callback");
    assert_eq!(added.status(), StatusCode::NO_CONTENT);
    let unknown = client
        .post(format!("{base}/connected-apps/nope/callback-urls"))
        .json(&json!({"url": "http://localhost:9000/cb"}))
        .send()
        .await
        .expect("callback");
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    let relative = client
        .post(format!("{base}/connected-apps/3MVG9http.app/callback-urls"))
        .json(&json!({"url": "/cb"}))
        .send()
        .await
        .expect("callback");
    assert_eq!(relative.status(), StatusCode::BAD_REQUEST);
    let apps: Value = client
        .get(format!("{base}/connected-apps"))
        .send()
        .await
        .expect("apps")
        .json()
        .await
        .expect("json");
    let http_app = apps
        .as_array()
        .and_then(|a| a.iter().find(|app| app["consumer_key"] == "3MVG9http.app"))
        .cloned()
        .expect("the app is listed");
    assert_eq!(
        http_app["callback_urls"],
        json!([CALLBACK, "http://localhost:9000/cb"])
    );

    // A public client without PKCE, the user chosen over HTTP.
    let browser = client
        .put(format!("{base}/browser"))
        .json(&json!({"username": "integration@switchboard.test"}))
        .send()
        .await
        .expect("browser");
    assert_eq!(browser.status(), StatusCode::NO_CONTENT);
    let response = client
        .get(flow.org.emulator.authorize_url())
        .query(&[
            ("response_type", "code"),
            ("client_id", "3MVG9http.app"),
            ("redirect_uri", "http://localhost:9000/cb"),
            ("scope", "api"),
        ])
        .send()
        .await
        .expect("authorize");
    assert_eq!(response.status(), StatusCode::FOUND);
    let location = response.headers()[reqwest::header::LOCATION]
        .to_str()
        .expect("location")
        .to_owned();
    let code = url::Url::parse(&location)
        .expect("url")
        .query_pairs()
        .find(|(k, _)| k == "code")
        .map(|(_, v)| v.into_owned())
        .expect("code");
    let tokens = answer(
        client
            .post(flow.org.emulator.token_url())
            .form(&[
                ("grant_type", "authorization_code"),
                ("code", code.as_str()),
                ("client_id", "3MVG9http.app"),
                ("redirect_uri", "http://localhost:9000/cb"),
            ])
            .send()
            .await
            .expect("token"),
    )
    .await;
    assert_eq!(tokens.status, StatusCode::OK, "{:?}", tokens.body);
    assert!(field(&tokens, "id").ends_with(&flow.org.emulator.user_id()));

    // Deny, over HTTP; an unknown user is refused.
    let deny = client
        .put(format!("{base}/browser"))
        .json(&json!({"username": AGENT, "deny": true}))
        .send()
        .await
        .expect("deny");
    assert_eq!(deny.status(), StatusCode::NO_CONTENT);
    let (error, _) = redirected_error(flow.authorize(&[]).await);
    assert_eq!(error, "access_denied");
    let state: Value = client
        .get(format!("{base}/browser"))
        .send()
        .await
        .expect("browser")
        .json()
        .await
        .expect("json");
    assert_eq!(state, json!({"username": AGENT, "deny": true}));
    let nobody = client
        .put(format!("{base}/browser"))
        .json(&json!({"username": "nobody@example.com"}))
        .send()
        .await
        .expect("browser");
    assert_eq!(nobody.status(), StatusCode::BAD_REQUEST);

    let stats: Value = client
        .get(format!("{base}/stats"))
        .send()
        .await
        .expect("stats")
        .json()
        .await
        .expect("json");
    assert_eq!(stats["refresh_tokens"], 0);
    assert_eq!(stats["active_sessions"], 1);
}
