//! The OAuth 2.0 JWT bearer flow: a server-to-server login without a stored
//! password or refresh token. The connector signs a short-lived RS256 JWT with
//! the connected app's private key and trades it for an access token.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::{Deserialize, Serialize};

use super::SalesforceError;

/// The grant type of the JWT bearer flow.
pub const JWT_BEARER_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// Salesforce accepts assertions that expire within three minutes.
const ASSERTION_LIFETIME_SECS: u64 = 180;

/// Signs login assertions for one integration user.
pub struct JwtSigner {
    key: EncodingKey,
    consumer_key: String,
    username: String,
    audience: String,
}

impl std::fmt::Debug for JwtSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtSigner")
            .field("consumer_key", &self.consumer_key)
            .field("username", &self.username)
            .field("audience", &self.audience)
            .finish_non_exhaustive()
    }
}

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    exp: u64,
}

impl JwtSigner {
    /// Loads the PEM RSA key (PKCS#1 or PKCS#8) and proves it can sign, so a
    /// wrong file is reported at start and not at the first call.
    pub fn from_key_file(path: &Path, consumer_key: &str, username: &str, audience: &str) -> Result<Self, SalesforceError> {
        let pem = std::fs::read(path).map_err(|source| SalesforceError::KeyFile { path: path.to_owned(), source })?;
        let key = EncodingKey::from_rsa_pem(&pem)
            .map_err(|e| SalesforceError::Key { path: path.to_owned(), reason: e.to_string() })?;
        let signer = Self {
            key,
            consumer_key: consumer_key.to_owned(),
            username: username.to_owned(),
            audience: audience.trim_end_matches('/').to_owned(),
        };
        signer.assertion().map_err(|reason| SalesforceError::Key { path: path.to_owned(), reason })?;
        Ok(signer)
    }

    /// A fresh signed assertion: `iss` = consumer key, `sub` = username,
    /// `aud` = login URL, `exp` = now + 3 minutes.
    pub fn assertion(&self) -> Result<String, String> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let claims = Claims {
            iss: &self.consumer_key,
            sub: &self.username,
            aud: &self.audience,
            exp: now + ASSERTION_LIFETIME_SECS,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims, &self.key).map_err(|e| e.to_string())
    }
}

/// A session of the integration user.
#[derive(Clone, PartialEq, Eq)]
pub struct AccessToken {
    /// Bearer token for REST calls.
    pub access_token: String,
    /// Base URL of the org's REST API, from the token answer.
    pub instance_url: url::Url,
}

impl std::fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessToken")
            .field("access_token", &"***")
            .field("instance_url", &self.instance_url.as_str())
            .finish()
    }
}

/// The token endpoint's answer; the JWT flow returns no refresh token.
#[derive(Deserialize)]
pub(super) struct TokenAnswer {
    pub access_token: Option<String>,
    pub instance_url: Option<String>,
}

/// The token endpoint's error answer.
#[derive(Deserialize, Default)]
pub(super) struct TokenError {
    #[serde(default)]
    pub error: String,
    #[serde(default)]
    pub error_description: String,
}
