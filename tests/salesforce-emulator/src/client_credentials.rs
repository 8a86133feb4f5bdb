//! The client credentials flow at the token endpoint:
//! `grant_type=client_credentials`.
//!
//! A server-to-server login with the connected app's own credentials, as
//! Salesforce documents it: the consumer key and secret come as the form
//! fields `client_id` and `client_secret`, or as HTTP Basic authentication
//! (`Authorization: Basic base64(client_id:client_secret)`, each part
//! form-urlencoded first as RFC 6749 §2.3.1 says; when the header is there
//! it is the one used). The app must have "Enable Client Credentials Flow"
//! on and a "Run As" user set ([`ConnectedApp::client_credentials_enabled`],
//! [`ConnectedApp::client_credentials_user`]); the access token then acts as
//! that user. The answer is the web-server flow's without refresh or ID
//! token: `access_token`, `signature`, `scope`, `instance_url`, `id`,
//! `token_type` `Bearer`, `issued_at`.
//!
//! Refusals are HTTP 400 with `{"error","error_description"}`, checked in
//! this order:
//!
//! | situation | `error` | `error_description` |
//! |---|---|---|
//! | no `client_id`, or no connected app has it | `invalid_client_id` | `client identifier invalid` |
//! | no or a wrong `client_secret`, or an unreadable Basic header | `invalid_client` | `invalid client credentials` |
//! | the flow is not enabled, or no Run As user is set (or it no longer exists) | `invalid_grant` | `no client credentials user enabled` |
//! | the Run As user was deactivated | `invalid_grant` | `user is inactive` |

use std::collections::HashMap;

use axum::http::{header, HeaderMap};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

use crate::config::ConnectedApp;
use crate::oauth::{issue_access_token, OAuthError};
use crate::state::Shared;
use crate::web_server::{self, Issued};

/// The grant type of the client credentials flow.
pub const CLIENT_CREDENTIALS_GRANT: &str = "client_credentials";

/// `invalid_grant` when the app has no usable Run As user.
pub(crate) const NO_USER: &str = "no client credentials user enabled";

/// `invalid_client`: a missing or wrong secret.
fn invalid_client() -> OAuthError {
    OAuthError::new("invalid_client", "invalid client credentials")
}

/// The client's `(client_id, client_secret)`: from `Authorization: Basic`
/// when the request has one, else from the form fields.
fn presented(
    headers: &HeaderMap,
    params: &HashMap<String, String>,
) -> Result<(Option<String>, Option<String>), OAuthError> {
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, rest) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("basic").then(|| rest.trim())
        });
    if let Some(encoded) = basic {
        let decoded = STANDARD
            .decode(encoded)
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .ok_or_else(invalid_client)?;
        let (id, secret) = decoded.split_once(':').ok_or_else(invalid_client)?;
        return Ok((Some(form_decode(id)), Some(form_decode(secret))));
    }
    Ok((
        params.get("client_id").cloned(),
        params.get("client_secret").cloned(),
    ))
}

/// Undoes `application/x-www-form-urlencoded` encoding: `+` is a space,
/// `%XX` a byte; a malformed escape stays as it is.
fn form_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(byte) => {
                        out.push(byte);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            other => out.push(other),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `grant_type=client_credentials`.
pub(crate) fn client_credentials(
    shared: &Shared,
    headers: &HeaderMap,
    params: &HashMap<String, String>,
) -> Result<Issued, OAuthError> {
    let (client_id, client_secret) = presented(headers, params)?;
    let mut inner = shared.lock();
    let app: ConnectedApp = client_id
        .filter(|id| !id.is_empty())
        .and_then(|id| inner.apps.get(&id).cloned())
        .ok_or_else(OAuthError::client_id)?;
    if client_secret.as_deref() != Some(app.consumer_secret.as_str()) {
        return Err(invalid_client());
    }
    let run_as = app
        .client_credentials_user
        .as_deref()
        .filter(|_| app.client_credentials_enabled)
        .ok_or_else(|| OAuthError::grant(NO_USER))?;
    let (user_id, active) = inner
        .store
        .user_by_username(run_as)
        .map(|u| (u.id().to_owned(), u.is_active_user()))
        .ok_or_else(|| OAuthError::grant(NO_USER))?;
    if !active {
        return Err(OAuthError::grant("user is inactive"));
    }
    // No refresh token comes with this flow, so neither do its scopes.
    let scopes: Vec<String> = app
        .scopes
        .iter()
        .filter(|s| *s != "refresh_token" && *s != "offline_access")
        .cloned()
        .collect();
    let access_token = issue_access_token(shared, &mut inner, &user_id, &scopes, None);
    drop(inner);
    Ok(Issued {
        body: web_server::answer(shared, &app, &user_id, &scopes, access_token, None),
        id_token: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_decoding_reads_plus_and_escapes() {
        assert_eq!(form_decode("a+b%3Ac%2f"), "a b:c/");
        assert_eq!(form_decode("100%"), "100%");
        assert_eq!(form_decode("%zz"), "%zz");
        assert_eq!(form_decode("3MVG9.key_1"), "3MVG9.key_1");
    }

    #[test]
    fn basic_credentials_win_over_form_fields() {
        let mut headers = HeaderMap::new();
        let encoded = STANDARD.encode("basic-id:basic%3Asecret");
        headers.insert(
            header::AUTHORIZATION,
            format!("Basic {encoded}").parse().expect("header"),
        );
        let params: HashMap<String, String> = [
            ("client_id".to_owned(), "form-id".to_owned()),
            ("client_secret".to_owned(), "form-secret".to_owned()),
        ]
        .into_iter()
        .collect();
        let (id, secret) = presented(&headers, &params).expect("credentials");
        assert_eq!(id.as_deref(), Some("basic-id"));
        assert_eq!(secret.as_deref(), Some("basic:secret"));
        let (id, secret) = presented(&HeaderMap::new(), &params).expect("credentials");
        assert_eq!(
            (id.as_deref(), secret.as_deref()),
            (Some("form-id"), Some("form-secret"))
        );
        headers.insert(header::AUTHORIZATION, "Basic !!!".parse().expect("header"));
        assert_eq!(
            presented(&headers, &params).expect_err("unreadable").error,
            "invalid_client"
        );
    }
}
