//! The connector's two server-to-server logins, neither with a stored
//! password or refresh token:
//!
//! - the OAuth 2.0 JWT bearer flow (the default): the connector signs a
//!   short-lived RS256 JWT with the connected app's private key and trades it
//!   for an access token of the pre-authorised integration user;
//! - the OAuth 2.0 client credentials flow: the connector sends the
//!   connected app's consumer key and secret and gets an access token of the
//!   app's Run As user.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::{Deserialize, Serialize};

use super::SalesforceError;
use crate::config::{SalesforceAuth, SalesforceConfig, Secret};

/// The grant type of the JWT bearer flow.
pub const JWT_BEARER_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// The grant type of the client credentials flow.
pub const CLIENT_CREDENTIALS_GRANT: &str = "client_credentials";

/// What the client logs in with, loaded and checked once at start so that a
/// missing or unusable key or secret is reported before the first event.
/// Its `Debug` shows neither the key nor the secret.
#[derive(Debug)]
pub enum Credentials {
    /// `salesforce.auth = "jwt_bearer"`.
    JwtBearer(JwtSigner),
    /// `salesforce.auth = "client_credentials"`.
    ClientCredentials {
        /// The consumer key, sent as `client_id`.
        client_id: String,
        /// The consumer secret, sent as `client_secret`.
        client_secret: Secret,
    },
}

impl Credentials {
    /// Loads what `config.auth` needs: the private key, or the consumer
    /// secret (from `client_secret_file`, else `client_secret`).
    pub fn from_config(config: &SalesforceConfig) -> Result<Self, SalesforceError> {
        match config.auth {
            SalesforceAuth::JwtBearer => Ok(Credentials::JwtBearer(JwtSigner::from_key_file(
                &config.private_key_file,
                &config.consumer_key,
                &config.username,
                &config.login_url,
            )?)),
            SalesforceAuth::ClientCredentials => {
                let client_secret = match (&config.client_secret_file, &config.client_secret) {
                    (Some(path), _) => read_secret_file(path)?,
                    (None, Some(secret)) if !secret.expose().trim().is_empty() => {
                        Secret::new(secret.expose().trim())
                    }
                    (None, _) => {
                        return Err(SalesforceError::ClientSecret {
                            path: None,
                            reason: "salesforce.client_secret_file or salesforce.client_secret must be set".to_owned(),
                        })
                    }
                };
                Ok(Credentials::ClientCredentials { client_id: config.consumer_key.clone(), client_secret })
            }
        }
    }

    /// The form of one token request: a freshly signed assertion, or the
    /// consumer key and secret.
    pub fn token_form(&self) -> Result<Vec<(&'static str, String)>, String> {
        match self {
            Credentials::JwtBearer(signer) => {
                Ok(vec![("grant_type", JWT_BEARER_GRANT.to_owned()), ("assertion", signer.assertion()?)])
            }
            Credentials::ClientCredentials { client_id, client_secret } => Ok(vec![
                ("grant_type", CLIENT_CREDENTIALS_GRANT.to_owned()),
                ("client_id", client_id.clone()),
                ("client_secret", client_secret.expose().to_owned()),
            ]),
        }
    }
}

/// Reads a consumer secret file: its text without surrounding whitespace
/// (a trailing newline is usual), which must not be empty.
fn read_secret_file(path: &Path) -> Result<Secret, SalesforceError> {
    let secret_error = |reason: String| SalesforceError::ClientSecret { path: Some(path.to_owned()), reason };
    let text = std::fs::read_to_string(path).map_err(|e| secret_error(e.to_string()))?;
    let secret = text.trim();
    if secret.is_empty() {
        return Err(secret_error("the file is empty".to_owned()));
    }
    Ok(Secret::new(secret))
}

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
