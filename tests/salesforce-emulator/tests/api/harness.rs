//! A started org with a signed-in client, shared by the API tests.

use std::sync::OnceLock;
use std::time::Duration;

use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use salesforce_emulator::{
    token_request_form, AssertionClaims, Emulator, EmulatorConfig, TestCredentials,
};
use serde_json::Value;

/// One key pair per test binary: generating RSA keys is the slow part.
pub fn credentials() -> &'static TestCredentials {
    static CREDENTIALS: OnceLock<TestCredentials> = OnceLock::new();
    CREDENTIALS.get_or_init(|| TestCredentials::generate().expect("generating test credentials"))
}

/// An answer of the emulator.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    /// The body as JSON, `Null` when empty.
    pub body: Value,
}

impl Answer {
    /// The `Sforce-Limit-Info` header, if any.
    pub fn limit_info(&self) -> Option<String> {
        self.headers
            .get("sforce-limit-info")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    }

    /// The `errorCode` of a single-record error body.
    pub fn error_code(&self) -> &str {
        self.body[0]["errorCode"].as_str().unwrap_or("")
    }
}

/// A running org and an HTTP client.
pub struct Org {
    pub emulator: Emulator,
    pub username: String,
    pub client: reqwest::Client,
}

impl Org {
    /// An org with the default configuration.
    pub async fn start() -> Org {
        Org::start_with(|_| {}).await
    }

    /// An org with a configuration changed by `change`.
    pub async fn start_with(change: impl FnOnce(&mut EmulatorConfig)) -> Org {
        let mut config = EmulatorConfig::new(credentials().certificate_pem.clone());
        change(&mut config);
        let username = config.username.clone();
        let emulator = Emulator::start(config, "127.0.0.1:0".parse().expect("address"))
            .await
            .expect("starting the emulator");
        Org {
            emulator,
            username,
            client: reqwest::Client::new(),
        }
    }

    /// Claims the org accepts, for tests to spoil one at a time.
    pub fn claims(&self) -> AssertionClaims {
        AssertionClaims::new(
            self.emulator.consumer_key(),
            &self.username,
            self.emulator.url(),
            Duration::from_secs(170),
        )
    }

    /// Posts a JWT bearer token request for `assertion`.
    pub async fn token_request(&self, assertion: &str) -> Answer {
        let response = self
            .client
            .post(self.emulator.token_url())
            .header("content-type", "application/x-www-form-urlencoded")
            .body(token_request_form(assertion))
            .send()
            .await
            .expect("token request");
        answer(response).await
    }

    /// Signs valid claims and returns the access token.
    pub async fn token(&self) -> String {
        let assertion = credentials()
            .sign_assertion(&self.claims())
            .expect("signing");
        let answer = self.token_request(&assertion).await;
        assert_eq!(
            answer.status,
            StatusCode::OK,
            "token request failed: {:?}",
            answer.body
        );
        answer.body["access_token"]
            .as_str()
            .expect("access_token")
            .to_owned()
    }

    /// Calls `/services/data/{path}` (path starting with `v62.0/…`).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> Answer {
        let mut request = self
            .client
            .request(
                method,
                format!("{}/services/data/{path}", self.emulator.url()),
            )
            .bearer_auth(token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        answer(request.send().await.expect("REST request")).await
    }

    /// Calls with a raw body.
    pub async fn call_raw(
        &self,
        method: Method,
        path: &str,
        token: &str,
        body: &'static str,
    ) -> Answer {
        let request = self
            .client
            .request(
                method,
                format!("{}/services/data/{path}", self.emulator.url()),
            )
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(body);
        answer(request.send().await.expect("REST request")).await
    }
}

/// Reads a response into an [`Answer`].
pub async fn answer(response: reqwest::Response) -> Answer {
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.bytes().await.expect("body");
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {}",
                String::from_utf8_lossy(&bytes)
            )
        })
    };
    Answer {
        status,
        headers,
        body,
    }
}
