//! The Salesforce REST client of the connector.
//!
//! One client per org: it logs in with the JWT bearer or client credentials
//! flow (`salesforce.auth`), caches the access token, renews it once when
//! Salesforce answers 401 and retries the request, and records every
//! request and the org's API usage as metrics.
//! It makes exactly one attempt per call otherwise; retry policy lives in the
//! sink, which knows about shutdown and dead letters.

mod auth;
mod describe;
mod error;
mod response;

use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{HeaderMap, AUTHORIZATION, CONTENT_TYPE};
use tokio::sync::Mutex;

pub use auth::{AccessToken, Credentials, JwtSigner, CLIENT_CREDENTIALS_GRANT, JWT_BEARER_GRANT};
pub use describe::{FieldDescribe, ObjectDescribe};
pub use error::{classify, ErrorClass, SalesforceError};
pub use response::{parse_collection_body, parse_error_body, parse_limit_info, parse_upsert_body, ApiErrorItem, RecordResult, UpsertResult};

use crate::config::SalesforceConfig;
use crate::metrics as m;

const UPSERT_CASE: &str = "upsert_case";
const UPSERT_TASKS: &str = "upsert_tasks";

/// Records one sObject Collections request may carry.
pub const COLLECTION_LIMIT: usize = 200;
const DESCRIBE: &str = "describe";
const TOKEN: &str = "token";

/// A logged-in (or ready to log in) connection to one Salesforce org.
#[derive(Clone, Debug)]
pub struct SalesforceClient {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    http: reqwest::Client,
    config: SalesforceConfig,
    credentials: Credentials,
    token_url: url::Url,
    /// The cached session; the lock also makes concurrent renewals log in once.
    token: Mutex<Option<Arc<AccessToken>>>,
    /// The org's API usage as the last data answer reported it.
    usage: std::sync::Mutex<Option<ApiUsage>>,
}

/// The org's API requests in its 24-hour window, from `Sforce-Limit-Info`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiUsage {
    /// Requests used.
    pub used: u64,
    /// Requests allowed.
    pub limit: u64,
}

impl SalesforceClient {
    /// Prepares the client: loads and checks the private key (or reads the
    /// client secret), builds the HTTP client. Does not contact Salesforce,
    /// so the connector starts while Salesforce is unreachable and catches
    /// up later.
    pub fn new(config: SalesforceConfig) -> Result<Self, SalesforceError> {
        let credentials = Credentials::from_config(&config)?;
        let token_url = url::Url::parse(&format!("{}/services/oauth2/token", config.login_url.trim_end_matches('/')))
            .map_err(|e| SalesforceError::Unexpected { operation: TOKEN, detail: format!("login_url: {e}") })?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(config.request_timeout_secs))
            .connect_timeout(Duration::from_secs(config.request_timeout_secs.min(10)))
            .user_agent(concat!("switchboard-connector/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(SalesforceError::Client)?;
        Ok(Self { inner: Arc::new(Inner { http, config, credentials, token_url, token: Mutex::new(None), usage: std::sync::Mutex::new(None) }) })
    }

    /// The configuration the client was built from.
    pub fn config(&self) -> &SalesforceConfig {
        &self.inner.config
    }

    /// Upserts the Case whose external id field (from the configuration)
    /// holds `external_id` (an assignment id), with `body` as its fields: the
    /// first call creates the Case, a retry finds the same one.
    pub async fn upsert_case(&self, external_id: &str, body: &serde_json::Value) -> Result<UpsertResult, SalesforceError> {
        let field = self.inner.config.case_external_id_field.clone();
        self.upsert(UPSERT_CASE, "Case", &field, external_id, body).await
    }

    /// Upserts up to [`COLLECTION_LIMIT`] Tasks by their external id field
    /// (from the configuration) in one sObject Collections request,
    /// `allOrNone` false: each record is written or refused on its own.
    /// `records` pair each external id with the Task's fields. The results
    /// come in the records' order.
    pub async fn upsert_tasks(&self, records: &[(&str, serde_json::Value)]) -> Result<Vec<RecordResult>, SalesforceError> {
        let field = self.inner.config.task_external_id_field.clone();
        let records: Vec<serde_json::Value> = records
            .iter()
            .map(|(external_id, fields)| {
                let mut record = fields.clone();
                if let Some(map) = record.as_object_mut() {
                    map.insert("attributes".to_owned(), serde_json::json!({"type": "Task"}));
                    map.insert(field.clone(), serde_json::Value::from(*external_id));
                }
                record
            })
            .collect();
        let body = serde_json::json!({"allOrNone": false, "records": records});
        let expected = records.len();
        self.with_session(|token| {
            let (field, body) = (&field, &body);
            async move { self.try_upsert_collection(&token, "Task", field, body, expected).await }
        })
        .await
    }

    /// The org's API usage as Salesforce last reported it, if it did.
    pub fn api_usage(&self) -> Option<ApiUsage> {
        *self.inner.usage.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn try_upsert_collection(
        &self,
        token: &AccessToken,
        sobject: &str,
        field: &str,
        body: &serde_json::Value,
        expected: usize,
    ) -> Result<Vec<RecordResult>, SalesforceError> {
        let config = &self.inner.config;
        let mut url = token.instance_url.clone();
        url.path_segments_mut()
            .map_err(|_| SalesforceError::Unexpected { operation: UPSERT_TASKS, detail: "instance_url cannot be a base".into() })?
            .pop_if_empty()
            .extend(["services", "data", &format!("v{}", config.api_version), "composite", "sobjects", sobject, field]);
        let request = self.patch_json(token, url, body);
        let (status, bytes) = self.exchange(UPSERT_TASKS, request).await?;
        if status != 200 {
            return Err(SalesforceError::Api {
                operation: UPSERT_TASKS,
                status,
                errors: parse_error_body(&bytes),
                body: response::snippet(&bytes, 500),
            });
        }
        match parse_collection_body(&bytes) {
            Some(results) if results.len() == expected => Ok(results),
            Some(results) => Err(SalesforceError::Unexpected {
                operation: UPSERT_TASKS,
                detail: format!("{} results for {expected} records", results.len()),
            }),
            None => Err(SalesforceError::Unexpected {
                operation: UPSERT_TASKS,
                detail: format!("the answer is not a list of record results: {}", response::snippet(&bytes, 200)),
            }),
        }
    }

    async fn upsert(
        &self,
        operation: &'static str,
        sobject: &str,
        field: &str,
        external_id: &str,
        body: &serde_json::Value,
    ) -> Result<UpsertResult, SalesforceError> {
        self.with_session(|token| async move { self.try_upsert(&token, operation, sobject, field, external_id, body).await })
            .await
    }

    /// The describe of `sobject` as the integration user sees it: its
    /// fields, whether each is an external id and whether the user may set
    /// it on create and on update.
    pub async fn describe(&self, sobject: &str) -> Result<ObjectDescribe, SalesforceError> {
        self.with_session(|token| async move { self.try_describe(&token, sobject).await }).await
    }

    /// Runs `attempt` with the cached session (logging in first if there is
    /// none); when Salesforce answers 401, logs in again once and retries.
    async fn with_session<T, F, Fut>(&self, attempt: F) -> Result<T, SalesforceError>
    where
        F: Fn(Arc<AccessToken>) -> Fut,
        Fut: std::future::Future<Output = Result<T, SalesforceError>>,
    {
        let token = self.token().await?;
        match attempt(token.clone()).await {
            Err(e) if e.is_invalid_session() => {
                tracing::info!("Salesforce session expired, logging in again");
                self.forget(&token).await;
                let token = self.token().await?;
                attempt(token).await
            }
            other => other,
        }
    }

    async fn try_describe(&self, token: &AccessToken, sobject: &str) -> Result<ObjectDescribe, SalesforceError> {
        let config = &self.inner.config;
        let mut url = token.instance_url.clone();
        url.path_segments_mut()
            .map_err(|_| SalesforceError::Unexpected { operation: DESCRIBE, detail: "instance_url cannot be a base".into() })?
            .pop_if_empty()
            .extend(["services", "data", &format!("v{}", config.api_version), "sobjects", sobject, "describe"]);
        let (status, bytes) = self.exchange(DESCRIBE, self.inner.http.get(url).header(AUTHORIZATION, format!("Bearer {}", token.access_token))).await?;
        if status != 200 {
            return Err(SalesforceError::Api {
                operation: DESCRIBE,
                status,
                errors: parse_error_body(&bytes),
                body: response::snippet(&bytes, 500),
            });
        }
        serde_json::from_slice(&bytes).map_err(|e| SalesforceError::Unexpected {
            operation: DESCRIBE,
            detail: format!("the describe of {sobject} is not the documented JSON ({e}): {}", response::snippet(&bytes, 200)),
        })
    }

    async fn try_upsert(
        &self,
        token: &AccessToken,
        operation: &'static str,
        sobject: &str,
        field: &str,
        external_id: &str,
        body: &serde_json::Value,
    ) -> Result<UpsertResult, SalesforceError> {
        let config = &self.inner.config;
        let mut url = token.instance_url.clone();
        {
            let mut segments = url
                .path_segments_mut()
                .map_err(|_| SalesforceError::Unexpected { operation, detail: "instance_url cannot be a base".into() })?;
            segments.pop_if_empty().extend(["services", "data", &format!("v{}", config.api_version), "sobjects", sobject, field]);
        }
        // The external id goes in as one strictly encoded path segment.
        let url = url::Url::parse(&format!("{}/{}", url.as_str(), encode_segment(external_id)))
            .map_err(|e| SalesforceError::Unexpected { operation, detail: e.to_string() })?;
        let request = self.patch_json(token, url, body);
        let (status, bytes) = self.exchange(operation, request).await?;
        match status {
            200 | 201 | 204 => Ok(parse_upsert_body(status, &bytes)),
            _ => Err(SalesforceError::Api {
                operation,
                status,
                errors: parse_error_body(&bytes),
                body: response::snippet(&bytes, 500),
            }),
        }
    }

    /// The cached session, or a new one.
    async fn token(&self) -> Result<Arc<AccessToken>, SalesforceError> {
        let mut slot = self.inner.token.lock().await;
        if let Some(token) = slot.as_ref() {
            return Ok(token.clone());
        }
        let token = Arc::new(self.login().await?);
        *slot = Some(token.clone());
        Ok(token)
    }

    /// Drops `stale` from the cache unless another task already replaced it.
    async fn forget(&self, stale: &Arc<AccessToken>) {
        let mut slot = self.inner.token.lock().await;
        if slot.as_ref().is_some_and(|t| Arc::ptr_eq(t, stale)) {
            *slot = None;
        }
    }

    /// Trades a fresh JWT (or the client credentials) for an access token.
    pub async fn login(&self) -> Result<AccessToken, SalesforceError> {
        let config = &self.inner.config;
        let form = self
            .inner
            .credentials
            .token_form()
            .map_err(|reason| SalesforceError::Key { path: config.private_key_file.clone(), reason })?;
        let request = self.inner.http.post(self.inner.token_url.clone()).form(&form);
        let (status, bytes) = send(TOKEN, request).await.map(|(status, _, bytes)| (status, bytes))?;
        if status != 200 {
            let answer: auth::TokenError = serde_json::from_slice(&bytes).unwrap_or_default();
            return Err(SalesforceError::Login {
                auth: config.auth,
                username: config.integration_user(),
                status,
                error: if answer.error.is_empty() { format!("HTTP_{status}") } else { answer.error },
                description: if answer.error_description.is_empty() {
                    response::snippet(&bytes, 300)
                } else {
                    answer.error_description
                },
            });
        }
        let answer: auth::TokenAnswer = serde_json::from_slice(&bytes).map_err(|e| SalesforceError::Unexpected {
            operation: TOKEN,
            detail: format!("token answer is not the documented JSON ({e}): {}", response::snippet(&bytes, 200)),
        })?;
        let (Some(access_token), Some(instance_url)) = (answer.access_token, answer.instance_url) else {
            return Err(SalesforceError::Unexpected {
                operation: TOKEN,
                detail: "token answer lacks access_token or instance_url".into(),
            });
        };
        let instance_url = url::Url::parse(&instance_url).map_err(|e| SalesforceError::Unexpected {
            operation: TOKEN,
            detail: format!("instance_url {instance_url:?} is not a URL: {e}"),
        })?;
        tracing::info!(instance_url = %instance_url, user = %config.integration_user(), auth = config.auth.as_str(), "logged in to Salesforce");
        Ok(AccessToken { access_token, instance_url })
    }
}

impl SalesforceClient {
    /// A `PATCH` of `body` as JSON to `url` in the session of `token`.
    fn patch_json(&self, token: &AccessToken, url: url::Url, body: &serde_json::Value) -> reqwest::RequestBuilder {
        self.inner
            .http
            .patch(url)
            .header(AUTHORIZATION, format!("Bearer {}", token.access_token))
            .header(CONTENT_TYPE, "application/json")
            .json(body)
    }

    /// Sends one data request and reads its answer whole; remembers the
    /// org's API usage the answer reports (`Sforce-Limit-Info`).
    async fn exchange(&self, operation: &'static str, request: reqwest::RequestBuilder) -> Result<(u16, Vec<u8>), SalesforceError> {
        let (status, headers, bytes) = send(operation, request).await?;
        if let Some((used, limit)) = headers.get("Sforce-Limit-Info").and_then(|v| v.to_str().ok()).and_then(parse_limit_info) {
            m::api_usage(used, limit);
            *self.inner.usage.lock().unwrap_or_else(|e| e.into_inner()) = Some(ApiUsage { used, limit });
        }
        Ok((status, bytes))
    }
}

/// Sends one request to Salesforce and reads its answer whole, counting it
/// by `operation` and status (or `timeout`/`network` when there is none).
async fn send(operation: &'static str, request: reqwest::RequestBuilder) -> Result<(u16, HeaderMap, Vec<u8>), SalesforceError> {
    let response = match request.send().await {
        Ok(r) => r,
        Err(source) => {
            m::salesforce_request(operation, if source.is_timeout() { "timeout" } else { "network" });
            return Err(SalesforceError::Transport { operation, source });
        }
    };
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    m::salesforce_request(operation, &status.to_string());
    let bytes = response.bytes().await.map_err(|source| SalesforceError::Transport { operation, source })?;
    Ok((status, headers, bytes.to_vec()))
}

/// Percent-encodes everything but RFC 3986 unreserved characters, so an
/// external id with `/`, `?`, `#`, `:` or spaces stays one path segment.
pub fn encode_segment(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn external_ids_are_one_segment() {
        assert_eq!(encode_segment("0193-ab:u1"), "0193-ab%3Au1");
        assert_eq!(encode_segment("a/b?c#d e"), "a%2Fb%3Fc%23d%20e");
        assert_eq!(encode_segment("é"), "%C3%A9");
    }
}
