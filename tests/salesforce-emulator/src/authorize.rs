//! The authorization endpoint of the web-server flow,
//! `GET`/`POST /services/oauth2/authorize`.
//!
//! Salesforce checks a request in two stages. Until the client and its
//! callback URL are known to be good it cannot send anything back to the
//! client, so an unknown `client_id`, or a `redirect_uri` that is missing or
//! not one of the app's callback URLs, gets an error page (here: HTTP 400,
//! `text/html`, showing `error=…` and `error_description=…`). From then on
//! every answer is a 302 to the callback URL carrying `state` as given: with
//! `code` on success, or with `error` and `error_description`:
//!
//! | situation | `error` | `error_description` |
//! |---|---|---|
//! | `response_type` other than `code` | `unsupported_response_type` | `response type not supported` |
//! | `code_challenge_method` other than `S256` or `plain` | `invalid_request` | `unsupported code challenge method` |
//! | `code_challenge` not 43–128 URL-safe characters | `invalid_request` | `invalid code challenge` |
//! | no `code_challenge` while the app requires PKCE (or with a method) | `invalid_request` | `missing required code challenge` |
//! | a `scope` the app has not selected | `invalid_scope` | `requested scope is invalid, unknown, or malformed` |
//! | the user denies access | `access_denied` | `end-user denied authorization` |
//!
//! Without a `scope` parameter the app's selected scopes are granted.
//!
//! There is no person to sign in and approve, so the test decides. The
//! signed-in user is the one named by `login_hint` (Salesforce takes it to
//! prefill the login page's username; the emulator signs that user in), or
//! else the user of the emulated browser session ([`crate::Browser`], set over the
//! control API). Without either, or when that user is unknown or inactive,
//! the answer is Salesforce's login page (200, `text/html`), not a redirect.
//! The user approves the app unless the browser's `deny` switch is on.
//!
//! A code is valid once, for 15 minutes (configurable), and only together
//! with the `client_id`, `redirect_uri` and PKCE verifier of its request.
//! Like Salesforce's, it ends in `==`, so a client must decode the callback's
//! query string to use it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode, Uri};
use axum::response::{Html, IntoResponse, Response};
use base64::engine::general_purpose::URL_SAFE;
use base64::Engine as _;

use crate::oauth::parameters;
use crate::pkce::{self, Challenge, Method};
use crate::state::{AuthorizationCode, Shared};

/// `GET`/`POST /services/oauth2/authorize`.
pub(crate) async fn authorize(
    State(shared): State<Arc<Shared>>,
    uri: Uri,
    body: Bytes,
) -> Response {
    let params = parameters(&uri, &body);
    match decide(&shared, &params) {
        Outcome::ErrorPage { error, description } => error_page(error, description),
        Outcome::LoginPage => login_page(),
        Outcome::Redirect {
            redirect_uri,
            pairs,
        } => redirect(&redirect_uri, &pairs, params.get("state")),
    }
}

/// What the endpoint answers.
enum Outcome {
    /// Salesforce's error page: the callback URL cannot be trusted.
    ErrorPage {
        error: &'static str,
        description: &'static str,
    },
    /// No user could sign in.
    LoginPage,
    /// Back to the client with these query parameters (and `state`).
    Redirect {
        redirect_uri: String,
        pairs: Vec<(&'static str, String)>,
    },
}

fn redirect_error(redirect_uri: &str, error: &'static str, description: &'static str) -> Outcome {
    Outcome::Redirect {
        redirect_uri: redirect_uri.to_owned(),
        pairs: vec![
            ("error", error.to_owned()),
            ("error_description", description.to_owned()),
        ],
    }
}

fn decide(shared: &Shared, params: &HashMap<String, String>) -> Outcome {
    let get = |name: &str| {
        params
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    };
    let mut inner = shared.lock();
    let Some(app) = get("client_id")
        .and_then(|key| inner.apps.get(key))
        .cloned()
    else {
        return Outcome::ErrorPage {
            error: "invalid_client_id",
            description: "client identifier invalid",
        };
    };
    let Some(redirect_uri) = get("redirect_uri") else {
        return Outcome::ErrorPage {
            error: "redirect_uri_missing",
            description: "redirect_uri not provided",
        };
    };
    if !app.callback_urls.iter().any(|u| u == redirect_uri) {
        return Outcome::ErrorPage {
            error: "redirect_uri_mismatch",
            description: "redirect_uri must match configuration",
        };
    }

    if get("response_type") != Some("code") {
        return redirect_error(
            redirect_uri,
            "unsupported_response_type",
            "response type not supported",
        );
    }
    let method_given = get("code_challenge_method");
    let Some(method) = Method::parse(method_given) else {
        return redirect_error(
            redirect_uri,
            "invalid_request",
            "unsupported code challenge method",
        );
    };
    let challenge = match get("code_challenge") {
        Some(value) if pkce::well_formed(value) => Some(Challenge {
            method,
            value: value.to_owned(),
        }),
        Some(_) => {
            return redirect_error(redirect_uri, "invalid_request", "invalid code challenge");
        }
        None if app.require_pkce || method_given.is_some() => {
            return redirect_error(
                redirect_uri,
                "invalid_request",
                "missing required code challenge",
            );
        }
        None => None,
    };
    let scopes: Vec<String> = match get("scope") {
        Some(scope) => scope.split_whitespace().map(str::to_owned).collect(),
        None => app.scopes.clone(),
    };
    if scopes.is_empty() || !scopes.iter().all(|s| app.scopes.contains(s)) {
        return redirect_error(
            redirect_uri,
            "invalid_scope",
            "requested scope is invalid, unknown, or malformed",
        );
    }

    let username = get("login_hint")
        .map(str::to_owned)
        .or_else(|| inner.browser.username.clone());
    let Some(user_id) = username
        .and_then(|name| inner.store.user_by_username(&name))
        .filter(|u| u.is_active_user())
        .map(|u| u.id().to_owned())
    else {
        return Outcome::LoginPage;
    };
    if inner.browser.deny {
        return redirect_error(
            redirect_uri,
            "access_denied",
            "end-user denied authorization",
        );
    }

    let now = Instant::now();
    inner.purge_codes(now);
    let code = new_code();
    inner.codes.insert(
        code.clone(),
        AuthorizationCode {
            client_id: app.consumer_key.clone(),
            redirect_uri: redirect_uri.to_owned(),
            challenge,
            user_id,
            scopes,
            nonce: get("nonce").map(str::to_owned),
            expires_at: now + shared.code_ttl,
        },
    );
    Outcome::Redirect {
        redirect_uri: redirect_uri.to_owned(),
        pairs: vec![("code", code)],
    }
}

/// An authorization code in Salesforce's shape: `aPrx`, URL-safe Base64 and
/// `==` padding.
fn new_code() -> String {
    let bytes: [u8; 49] = std::array::from_fn(|_| rand::random::<u8>());
    format!("aPrx{}", URL_SAFE.encode(bytes))
}

/// A 302 to the callback URL with the pairs and `state` added to its query.
fn redirect(
    redirect_uri: &str,
    pairs: &[(&'static str, String)],
    state: Option<&String>,
) -> Response {
    let Ok(mut url) = url::Url::parse(redirect_uri) else {
        // Callback URLs are checked when registered; this is for safety.
        return error_page(
            "redirect_uri_mismatch",
            "redirect_uri must match configuration",
        );
    };
    {
        let mut query = url.query_pairs_mut();
        for (name, value) in pairs {
            query.append_pair(name, value);
        }
        if let Some(state) = state {
            query.append_pair("state", state);
        }
    }
    match HeaderValue::from_str(url.as_str()) {
        Ok(location) => (
            StatusCode::FOUND,
            [
                (header::LOCATION, location),
                (
                    header::CACHE_CONTROL,
                    HeaderValue::from_static("no-cache, no-store"),
                ),
            ],
        )
            .into_response(),
        Err(_) => error_page(
            "redirect_uri_mismatch",
            "redirect_uri must match configuration",
        ),
    }
}

/// The page shown instead of a redirect when the callback URL is not known
/// to be the client's. Only fixed texts are put into it.
fn error_page(error: &'static str, description: &'static str) -> Response {
    let body = format!(
        "<!DOCTYPE html>\n<html><head><title>Error | Salesforce</title></head><body>\n\
         <h1>OAuth Error</h1>\n\
         <p>The app's authorization request was refused.</p>\n\
         <p>error={error}</p>\n<p>error_description={description}</p>\n\
         </body></html>\n"
    );
    (StatusCode::BAD_REQUEST, Html(body)).into_response()
}

/// The login page Salesforce shows when nobody is signed in.
fn login_page() -> Response {
    Html(
        "<!DOCTYPE html>\n<html><head><title>Login | Salesforce</title></head><body>\n\
         <h1>Log In</h1>\n\
         <p>Salesforce emulator: no active user is signed in. Name one with the \
         login_hint parameter or PUT /__emulator/browser {\"username\": …}.</p>\n\
         </body></html>\n",
    )
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_look_like_salesforce_codes_and_need_decoding() {
        let code = new_code();
        assert!(code.starts_with("aPrx"));
        assert!(code.ends_with("=="));
        assert_ne!(code, new_code());
        let mut url = url::Url::parse("https://app.example.com/cb?x=1").expect("url");
        url.query_pairs_mut().append_pair("code", &code);
        assert!(url.as_str().ends_with("%3D%3D"), "{url}");
    }
}
