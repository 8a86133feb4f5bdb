//! The gate every REST data request passes: the bearer token (whose scopes
//! must include `api` or `full`), the API version, the daily call count with
//! its `Sforce-Limit-Info` header, and injected request faults. Written as one
//! middleware layer so that handlers only see authenticated, counted requests
//! for a served version; once a handler is done, the records it wrote are
//! reported to the write watchers.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::errors::ApiError;
use crate::faults::RequestEffect;
use crate::state::Shared;

/// The authenticated caller of a data request, for handlers.
#[derive(Clone, Debug)]
pub(crate) struct Caller {
    /// The user the token acts for.
    pub user_id: String,
    /// The API version of the URL, as its major number.
    pub version: u32,
}

/// The bearer token of a request, if it has one.
pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    (scheme.eq_ignore_ascii_case("bearer") || scheme.eq_ignore_ascii_case("oauth"))
        .then(|| token.trim())
}

/// Parses `v62.0` into 62.
fn parse_version(segment: &str) -> Option<u32> {
    segment.strip_prefix('v')?.strip_suffix(".0")?.parse().ok()
}

/// Middleware over `/services/data/…` (paths seen without that prefix).
pub(crate) async fn gate(
    State(shared): State<Arc<Shared>>,
    mut request: Request,
    next: Next,
) -> Response {
    let first_segment = request
        .uri()
        .path()
        .trim_start_matches('/')
        .split('/')
        .next()
        .unwrap_or("")
        .to_owned();
    if first_segment.is_empty() {
        // The version list needs no session, as in Salesforce.
        return next.run(request).await;
    }
    let token = bearer(request.headers()).map(str::to_owned);
    let (user_id, used, limit, effect) = {
        let mut inner = shared.lock();
        let now = Instant::now();
        inner.sessions.retain(|_, s| s.expires_at > now);
        let Some(session) = token.as_deref().and_then(|t| inner.sessions.get(t)) else {
            return ApiError::invalid_session().into_response();
        };
        if !session.rest_allowed() {
            // A token granted without `api` (or `full`), e.g. for `openid` only.
            return ApiError::plain(
                StatusCode::UNAUTHORIZED,
                "INVALID_SESSION_ID",
                "This session is not valid for use with the REST API",
            )
            .into_response();
        }
        let user_id = session.user_id.clone();
        inner.api_calls += 1;
        let used = inner.usage.count();
        let limit = inner.usage.limit;
        let effect = if used > limit {
            None
        } else {
            inner.faults.take_request_effect()
        };
        (user_id, used, limit, effect)
    };
    let limit_info = HeaderValue::from_str(&format!("api-usage={used}/{limit}")).ok();
    let with_limit_info = |mut response: Response| {
        if let Some(value) = limit_info.clone() {
            response.headers_mut().insert("sforce-limit-info", value);
        }
        response
    };

    let Some(version) = parse_version(&first_segment).filter(|v| shared.api_versions.contains(v))
    else {
        return with_limit_info(ApiError::not_found().into_response());
    };
    if used > limit {
        return with_limit_info(
            ApiError::plain(
                StatusCode::FORBIDDEN,
                "REQUEST_LIMIT_EXCEEDED",
                "TotalRequests Limit exceeded.",
            )
            .into_response(),
        );
    }
    match effect {
        Some(RequestEffect::Fail(error)) => return with_limit_info(error.into_response()),
        Some(RequestEffect::Delay(delay)) => tokio::time::sleep(delay).await,
        None => {}
    }
    request.extensions_mut().insert(Caller { user_id, version });
    let response = next.run(request).await;
    shared.report_writes();
    with_limit_info(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_and_bearer_tokens_parse() {
        assert_eq!(parse_version("v62.0"), Some(62));
        assert_eq!(parse_version("v62"), None);
        assert_eq!(parse_version("62.0"), None);
        let mut headers = HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer 00D!abc"),
        );
        assert_eq!(bearer(&headers), Some("00D!abc"));
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic xyz"));
        assert_eq!(bearer(&headers), None);
    }
}
