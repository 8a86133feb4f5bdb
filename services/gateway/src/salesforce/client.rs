//! Salesforce's REST API as one agent: every request carries the agent's
//! own access token, so a search finds only what Salesforce's sharing
//! rules let that agent see. An expired token (401 `INVALID_SESSION_ID`)
//! is refreshed once with the agent's refresh token, the new one sealed
//! back into the session, and the request repeated.

use std::time::Duration;

use reqwest::{StatusCode, Url};
use serde::Deserialize;
use serde_json::Value;
use tracing::{debug, warn};

use crate::api::auth::salesforce::{LoginError, SalesforceLogin};
use crate::api::auth::sessions::{SalesforceGrant, Sessions};

/// Why a request on the agent's behalf failed. Each says what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SalesforceError {
    #[error(
        "this session is not connected with Salesforce; sign in with \"Connect with Salesforce\""
    )]
    NotConnected,
    #[error("Salesforce no longer accepts the agent's tokens ({0}); sign in again with \"Connect with Salesforce\"")]
    Expired(String),
    #[error("Salesforce refused the request ({status} {code}): {message}")]
    Refused {
        status: u16,
        code: String,
        message: String,
    },
    #[error("Salesforce did not answer usably ({0}); try again, and check the gateway's route to the org if it persists")]
    Unavailable(String),
    #[error("the session store failed: {0}")]
    Store(String),
}

/// The agent's tokens for one series of requests, and the session they
/// are stored with (refreshed tokens go back there).
#[derive(Debug, Clone)]
pub struct AgentGrant {
    pub session_id: String,
    pub grant: SalesforceGrant,
}

/// The REST client all agent-side Salesforce requests go through.
#[derive(Debug, Clone)]
pub struct SalesforceApi {
    http: reqwest::Client,
    /// `v62.0`.
    version: String,
    login: Option<SalesforceLogin>,
    sessions: Sessions,
}

#[derive(Deserialize)]
struct ApiErrorBody {
    #[serde(default)]
    message: String,
    #[serde(rename = "errorCode", default)]
    error_code: String,
}

impl SalesforceApi {
    /// `version` as Salesforce writes it (`62.0`); `timeout` bounds each request.
    pub fn new(
        version: &str,
        timeout: Duration,
        login: Option<SalesforceLogin>,
        sessions: Sessions,
    ) -> SalesforceApi {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .pool_idle_timeout(Duration::from_secs(90))
            .build()
            .unwrap_or_default();
        SalesforceApi {
            http,
            version: format!("v{}", version.trim_start_matches('v')),
            login,
            sessions,
        }
    }

    /// The grant of an agent's session (a request the agent made).
    pub async fn for_session(&self, session_id: &str) -> Result<AgentGrant, SalesforceError> {
        match self.sessions.grant(session_id).await {
            Ok(Some(grant)) => Ok(AgentGrant {
                session_id: session_id.to_owned(),
                grant,
            }),
            Ok(None) => Err(SalesforceError::NotConnected),
            Err(e) => Err(SalesforceError::Store(e.to_string())),
        }
    }

    /// The grant of the user's newest connected session (work the gateway
    /// does for the agent, such as matching a caller while it rings).
    pub async fn for_user(&self, user_id: &str) -> Result<AgentGrant, SalesforceError> {
        match self.sessions.latest_grant(user_id).await {
            Ok(Some((session_id, grant))) => Ok(AgentGrant { session_id, grant }),
            Ok(None) => Err(SalesforceError::NotConnected),
            Err(e) => Err(SalesforceError::Store(e.to_string())),
        }
    }

    /// `GET /services/data/vXX.X/{path}` with `query`, as the agent.
    pub async fn get(
        &self,
        who: &mut AgentGrant,
        path: &str,
        query: &[(&str, &str)],
    ) -> Result<Value, SalesforceError> {
        let mut refreshed = false;
        loop {
            let url = self.url(&who.grant, path)?;
            let started = std::time::Instant::now();
            let response = self
                .http
                .get(url)
                .bearer_auth(&who.grant.access_token)
                .query(query)
                .send()
                .await;
            metrics::histogram!("switchboard_salesforce_request_seconds")
                .record(started.elapsed().as_secs_f64());
            let response = response.map_err(|e| {
                metrics::counter!("switchboard_salesforce_requests_total", "result" => "unreachable").increment(1);
                SalesforceError::Unavailable(e.without_url().to_string())
            })?;
            let status = response.status();
            let body = response
                .bytes()
                .await
                .map_err(|e| SalesforceError::Unavailable(e.without_url().to_string()))?;
            if status.is_success() {
                metrics::counter!("switchboard_salesforce_requests_total", "result" => "ok")
                    .increment(1);
                return serde_json::from_slice(&body).map_err(|_| {
                    SalesforceError::Unavailable(format!("a {status} answer that is not JSON"))
                });
            }
            let (code, message) = match serde_json::from_slice::<Vec<ApiErrorBody>>(&body) {
                Ok(errors) if !errors.is_empty() => {
                    (errors[0].error_code.clone(), errors[0].message.clone())
                }
                _ => (
                    String::new(),
                    String::from_utf8_lossy(&body).chars().take(200).collect(),
                ),
            };
            if status == StatusCode::UNAUTHORIZED && !refreshed {
                metrics::counter!("switchboard_salesforce_requests_total", "result" => "expired")
                    .increment(1);
                self.refresh(who).await?;
                refreshed = true;
                continue;
            }
            metrics::counter!("switchboard_salesforce_requests_total", "result" => "refused")
                .increment(1);
            if status == StatusCode::UNAUTHORIZED {
                return Err(SalesforceError::Expired(code));
            }
            if status.is_server_error() || status == StatusCode::SERVICE_UNAVAILABLE {
                return Err(SalesforceError::Unavailable(format!("{status} {code}")));
            }
            return Err(SalesforceError::Refused {
                status: status.as_u16(),
                code,
                message,
            });
        }
    }

    fn url(&self, grant: &SalesforceGrant, path: &str) -> Result<Url, SalesforceError> {
        let base = Url::parse(&grant.instance_url)
            .map_err(|_| SalesforceError::Expired("the stored instance URL is unusable".into()))?;
        let full = format!(
            "{}/services/data/{}/{}",
            base.as_str().trim_end_matches('/'),
            self.version,
            path.trim_start_matches('/')
        );
        Url::parse(&full)
            .map_err(|_| SalesforceError::Unavailable(format!("`{path}` makes no URL")))
    }

    async fn refresh(&self, who: &mut AgentGrant) -> Result<(), SalesforceError> {
        let Some(login) = &self.login else {
            return Err(SalesforceError::Expired(
                "no connected app is configured to refresh tokens with".into(),
            ));
        };
        match login.refresh(&who.grant).await {
            Ok(grant) => {
                debug!(session_id = %who.session_id, "refreshed an agent's Salesforce token");
                metrics::counter!("switchboard_salesforce_token_refreshes_total", "result" => "ok")
                    .increment(1);
                if let Err(e) = self.sessions.update_grant(&who.session_id, &grant).await {
                    // The new token works for this request; the next one
                    // refreshes again.
                    warn!(error = %e, "a refreshed Salesforce token could not be stored");
                }
                who.grant = grant;
                Ok(())
            }
            Err(LoginError::Refused { error, .. }) => {
                metrics::counter!("switchboard_salesforce_token_refreshes_total", "result" => "refused").increment(1);
                Err(SalesforceError::Expired(error))
            }
            Err(e) => {
                metrics::counter!("switchboard_salesforce_token_refreshes_total", "result" => "failed").increment(1);
                Err(SalesforceError::Unavailable(e.to_string()))
            }
        }
    }
}
