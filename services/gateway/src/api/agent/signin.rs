//! "Connect with Salesforce" (F1) and sign-out.
//!
//! `GET /v1/auth/salesforce/login?return_to=…` sends the browser to the
//! org's login page; Salesforce sends it back to
//! `GET /v1/auth/salesforce/callback`, which links the Salesforce user to
//! the Switchboard user with that Salesforce user id, opens a session and
//! redirects to `return_to` with `#session=<token>&expires_at=<ms>` in the
//! fragment (never in a query string, so it reaches no server log). When
//! the sign-in fails, the redirect carries `#error=<code>&error_description=…`
//! instead, so the softphone can show the reason. `return_to` must be on
//! the gateway itself or one of `auth.allowed_origins`: the token is never
//! handed to another site.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use serde::Deserialize;
use utoipa::IntoParams;

use super::AgentApi;
use crate::api::auth::salesforce::{LoginError, SalesforceLogin};
use crate::api::auth::Principal;
use crate::api::problem::{Problem, Query};

/// Query of `GET /v1/auth/salesforce/login`.
#[derive(Debug, Deserialize, IntoParams)]
pub struct LoginQuery {
    /// Where the browser lands after signing in (the softphone page). The
    /// gateway's own URL or one of `auth.allowed_origins`; defaults to the
    /// gateway's softphone page.
    pub return_to: Option<String>,
}

/// Query of the callback Salesforce redirects to.
#[derive(Debug, Deserialize, IntoParams)]
pub struct CallbackQuery {
    pub code: Option<String>,
    pub state: Option<String>,
    pub error: Option<String>,
    pub error_description: Option<String>,
}

/// Starts "Connect with Salesforce": redirects to the org's authorization page.
#[utoipa::path(get, path = "/v1/auth/salesforce/login", tag = "sign-in", params(LoginQuery),
    responses(
        (status = 302, description = "to the Salesforce login page"),
        (status = 400, description = "`return_to` is not an allowed origin", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "no connected app is configured (`auth.salesforce`)", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn login(State(api): State<AgentApi>, Query(q): Query<LoginQuery>) -> Result<Response, Problem> {
    let login = configured(&api)?;
    let return_to = q.return_to.unwrap_or_else(|| format!("{}/softphone/", api.public_url));
    if !api.may_return_to(&return_to) {
        return Err(Problem::bad_request(
            "return_to_not_allowed",
            format!("`{return_to}` is not this gateway or one of auth.allowed_origins; an admin adds the softphone's origin there"),
        ));
    }
    Ok(redirect(&login.authorize_url(&return_to)))
}

/// Where Salesforce sends the browser back: opens the session.
#[utoipa::path(get, path = "/v1/auth/salesforce/callback", tag = "sign-in", params(CallbackQuery),
    responses(
        (status = 302, description = "to `return_to`, with `#session=…&expires_at=…` or `#error=…&error_description=…`"),
        (status = 400, description = "the state is missing, forged or expired", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn callback(State(api): State<AgentApi>, Query(q): Query<CallbackQuery>) -> Result<Response, Problem> {
    let login = configured(&api)?;
    let state = q.state.as_deref().unwrap_or_default();
    // Without a valid state there is nowhere safe to send the browser.
    let Some(return_to) = login.return_to(state) else {
        metrics::counter!("switchboard_api_signins_total", "outcome" => "bad_state").increment(1);
        return Err(Problem::bad_request("invalid_state", LoginError::State.to_string()));
    };
    let fail = |code: &str, detail: String| {
        tracing::warn!(code, detail, "agent sign-in failed");
        metrics::counter!("switchboard_api_signins_total", "outcome" => code.to_owned()).increment(1);
        Ok(redirect(&format!("{return_to}#error={code}&error_description={}", urlencode(&detail))))
    };
    if let Some(error) = &q.error {
        return fail("access_denied", SalesforceLogin::denied(error, q.error_description.as_deref()).to_string());
    }
    let Some(code) = q.code.as_deref() else {
        return fail("invalid_callback", "Salesforce sent neither a code nor an error".to_owned());
    };
    let signed_in = match login.finish(code, state).await {
        Ok(s) => s,
        Err(e @ LoginError::WrongOrg { .. }) => return fail("wrong_org", e.to_string()),
        Err(e @ (LoginError::Unreachable { .. } | LoginError::Unexpected { .. })) => return fail("salesforce_unavailable", e.to_string()),
        Err(e) => return fail("salesforce_refused", e.to_string()),
    };
    let identity = &signed_in.identity;
    let user = match api.directory.user_by_salesforce_id(&identity.user_id).await {
        Ok(Some(u)) => u,
        Ok(None) => {
            let who = identity.name.clone().unwrap_or_else(|| identity.user_id.clone());
            return fail(
                "not_linked",
                format!(
                    "Salesforce user {who} ({}) is not linked to a Switchboard user; an admin sets salesforce_user_id on the agent's user (admin API or `switchboard admin user`)",
                    identity.user_id
                ),
            );
        }
        Err(e) => return Err(Problem::internal("looking up the signed-in user failed", &e)),
    };
    let (token, session) = api.sessions.create(&user.id, Some(signed_in.grant)).await.map_err(|e| Problem::internal("opening the session failed", &e))?;
    tracing::info!(user_id = %user.id, session_id = %session.id, "agent signed in with Salesforce");
    metrics::counter!("switchboard_api_signins_total", "outcome" => "ok").increment(1);
    Ok(redirect(&format!("{}#session={token}&expires_at={}", signed_in.return_to, session.expires_at_ms)))
}

/// Ends the session of the request's token.
#[utoipa::path(post, path = "/v1/auth/logout", tag = "sign-in", security(("session" = [])),
    responses((status = 204, description = "signed out"), (status = 401, body = Problem, content_type = "application/problem+json")))]
pub async fn logout(State(api): State<AgentApi>, Extension(me): Extension<Principal>) -> Result<StatusCode, Problem> {
    api.sessions.revoke(&me.session_id).await.map_err(|e| Problem::internal("ending the session failed", &e))?;
    tracing::info!(user_id = %me.user_id, session_id = %me.session_id, "agent signed out");
    Ok(StatusCode::NO_CONTENT)
}

fn configured(api: &AgentApi) -> Result<&SalesforceLogin, Problem> {
    api.login.as_ref().ok_or_else(|| {
        Problem::unavailable(
            "signin_not_configured",
            "Connect with Salesforce is not configured: set [auth.salesforce] client_id (and login_url) to the connected app's values",
        )
    })
}

fn redirect(to: &str) -> Response {
    (StatusCode::FOUND, [(header::LOCATION, to.to_owned()), (header::CACHE_CONTROL, "no-store".to_owned())]).into_response()
}

/// Percent-encodes for a URL fragment value.
fn urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
