//! "Connect with Salesforce" (F1): the OAuth 2.0 authorization-code flow
//! with PKCE (RFC 7636, S256) against the org's login host, then the
//! user's identity from `/services/oauth2/userinfo`.
//!
//! The flow is stateless on the gateway: the PKCE verifier, where to send
//! the agent afterwards and an expiry travel in `state`, sealed (AES-GCM),
//! so any gateway behind a load balancer can finish a sign-in another one
//! started, and nobody can forge or read it. Salesforce codes are single
//! use, so a replayed callback fails at the token endpoint.

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::distr::{Alphanumeric, SampleString};
use reqwest::Url;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use switchboard_store::now_ms;

use super::seal::Sealer;
use super::sessions::SalesforceGrant;

const STATE_PURPOSE: &str = "salesforce-login-state";
/// How long a started sign-in may take.
const STATE_TTL: Duration = Duration::from_secs(600);
/// What the gateway asks for: REST API access for searches, a refresh
/// token so the agent is not sent back to Salesforce every two hours, and
/// the OpenID `userinfo`.
const SCOPES: &str = "api refresh_token openid";

/// The connected app the agents sign in through.
#[derive(Clone)]
pub struct SalesforceLogin {
    http: reqwest::Client,
    /// `https://login.salesforce.com`, `https://test.salesforce.com` or the
    /// org's My Domain login URL.
    login_url: Url,
    client_id: String,
    client_secret: Option<String>,
    /// The gateway's callback, registered in the connected app.
    callback_url: String,
    /// When set, identities of other orgs are refused.
    organization_id: Option<String>,
    sealer: Sealer,
}

impl std::fmt::Debug for SalesforceLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SalesforceLogin").field("login_url", &self.login_url.as_str()).field("client_id", &self.client_id).finish_non_exhaustive()
    }
}

/// The Salesforce user who signed in.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct Identity {
    /// 18 characters.
    pub user_id: String,
    pub organization_id: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub email: Option<String>,
}

/// A finished sign-in.
#[derive(Debug)]
pub struct SignedIn {
    pub identity: Identity,
    pub grant: SalesforceGrant,
    /// Where the agent's browser goes next (checked when the sign-in started).
    pub return_to: String,
}

/// Why a sign-in failed; each says what to do.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    #[error("the sign-in link is invalid or older than 10 minutes; start again with Connect with Salesforce")]
    State,
    #[error("Salesforce did not grant access ({error}: {description}); the agent must allow the connected app, or an admin must pre-authorise it for the agent's profile")]
    Denied { error: String, description: String },
    #[error("Salesforce refused the sign-in ({error}: {description}); start again, and check the connected app's consumer key, secret and callback URL")]
    Refused { error: String, description: String },
    #[error("Salesforce cannot be reached at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("Salesforce answered {status} from {url}, which is not an OAuth answer")]
    Unexpected { url: String, status: u16 },
    #[error("this Salesforce user belongs to org {got}, not to the org this gateway serves ({want})")]
    WrongOrg { got: String, want: String },
}

#[derive(Serialize, Deserialize)]
struct State {
    /// PKCE code verifier.
    v: String,
    /// Return URL.
    r: String,
    /// Expiry, epoch ms.
    e: i64,
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    #[serde(default)]
    refresh_token: Option<String>,
    instance_url: String,
}

#[derive(Deserialize, Default)]
struct OAuthError {
    #[serde(default)]
    error: String,
    #[serde(default)]
    error_description: String,
}

/// The S256 code challenge of a verifier.
pub fn challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

impl SalesforceLogin {
    pub fn new(
        login_url: &str,
        client_id: String,
        client_secret: Option<String>,
        callback_url: String,
        organization_id: Option<String>,
        sealer: Sealer,
    ) -> Result<SalesforceLogin, String> {
        let login_url = Url::parse(login_url).map_err(|e| format!("not a URL: {e}"))?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(15))
            .build()
            .map_err(|e| format!("HTTP client: {e}"))?;
        Ok(SalesforceLogin { http, login_url, client_id, client_secret, callback_url, organization_id, sealer })
    }

    fn endpoint(&self, base: &Url, path: &str) -> Url {
        let mut url = base.clone();
        url.set_path(path);
        url.set_query(None);
        url
    }

    /// The authorization URL to send the agent's browser to; `return_to` is
    /// where it lands afterwards (checked by the caller).
    pub fn authorize_url(&self, return_to: &str) -> String {
        let verifier = Alphanumeric.sample_string(&mut rand::rng(), 64);
        let state = State { v: verifier.clone(), r: return_to.to_owned(), e: now_ms() + STATE_TTL.as_millis() as i64 };
        let state = self.sealer.seal(STATE_PURPOSE, &serde_json::to_vec(&state).expect("state serialises"));
        let mut url = self.endpoint(&self.login_url, "/services/oauth2/authorize");
        url.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", &self.client_id)
            .append_pair("redirect_uri", &self.callback_url)
            .append_pair("scope", SCOPES)
            .append_pair("code_challenge", &challenge(&verifier))
            .append_pair("code_challenge_method", "S256")
            .append_pair("state", &state);
        url.into()
    }

    /// Where a sealed `state` said to return, if it is valid (for error pages).
    pub fn return_to(&self, state: &str) -> Option<String> {
        self.open_state(state).ok().map(|s| s.r)
    }

    fn open_state(&self, state: &str) -> Result<State, LoginError> {
        let plain = self.sealer.open(STATE_PURPOSE, state).map_err(|_| LoginError::State)?;
        let state: State = serde_json::from_slice(&plain).map_err(|_| LoginError::State)?;
        if state.e < now_ms() {
            return Err(LoginError::State);
        }
        Ok(state)
    }

    /// Finishes a sign-in from the callback's `code` and `state`.
    pub async fn finish(&self, code: &str, state: &str) -> Result<SignedIn, LoginError> {
        let st = self.open_state(state)?;
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("client_id", self.client_id.as_str()),
            ("redirect_uri", self.callback_url.as_str()),
            ("code_verifier", st.v.as_str()),
        ];
        if let Some(secret) = &self.client_secret {
            form.push(("client_secret", secret));
        }
        let token: TokenAnswer = self.token_request(&form).await?;
        let identity = self.userinfo(&token.instance_url, &token.access_token).await?;
        if let Some(want) = &self.organization_id {
            if !same_id(want, &identity.organization_id) {
                return Err(LoginError::WrongOrg { got: identity.organization_id, want: want.clone() });
            }
        }
        let grant = SalesforceGrant {
            instance_url: token.instance_url,
            access_token: token.access_token,
            refresh_token: token.refresh_token,
            user_id: identity.user_id.clone(),
            organization_id: identity.organization_id.clone(),
        };
        Ok(SignedIn { identity, grant, return_to: st.r })
    }

    /// A new access token for a grant with a refresh token.
    pub async fn refresh(&self, grant: &SalesforceGrant) -> Result<SalesforceGrant, LoginError> {
        let Some(refresh) = &grant.refresh_token else {
            return Err(LoginError::Refused { error: "no_refresh_token".into(), description: "the session has no refresh token".into() });
        };
        let mut form = vec![("grant_type", "refresh_token"), ("refresh_token", refresh.as_str()), ("client_id", self.client_id.as_str())];
        if let Some(secret) = &self.client_secret {
            form.push(("client_secret", secret));
        }
        let token: TokenAnswer = self.token_request(&form).await?;
        Ok(SalesforceGrant {
            instance_url: token.instance_url,
            access_token: token.access_token,
            // Salesforce keeps the refresh token unless rotation is on.
            refresh_token: token.refresh_token.or_else(|| grant.refresh_token.clone()),
            ..grant.clone()
        })
    }

    async fn token_request(&self, form: &[(&str, &str)]) -> Result<TokenAnswer, LoginError> {
        let url = self.endpoint(&self.login_url, "/services/oauth2/token");
        let response = self
            .http
            .post(url.clone())
            .form(form)
            .send()
            .await
            .map_err(|e| LoginError::Unreachable { url: url.to_string(), reason: e.to_string() })?;
        let status = response.status();
        let body = response.bytes().await.map_err(|e| LoginError::Unreachable { url: url.to_string(), reason: e.to_string() })?;
        if status.is_success() {
            return serde_json::from_slice(&body).map_err(|_| LoginError::Unexpected { url: url.to_string(), status: status.as_u16() });
        }
        match serde_json::from_slice::<OAuthError>(&body) {
            Ok(e) if !e.error.is_empty() => Err(LoginError::Refused { error: e.error, description: e.error_description }),
            _ => Err(LoginError::Unexpected { url: url.to_string(), status: status.as_u16() }),
        }
    }

    async fn userinfo(&self, instance_url: &str, access_token: &str) -> Result<Identity, LoginError> {
        let base = Url::parse(instance_url).unwrap_or_else(|_| self.login_url.clone());
        let url = self.endpoint(&base, "/services/oauth2/userinfo");
        let response = self
            .http
            .get(url.clone())
            .bearer_auth(access_token)
            .send()
            .await
            .map_err(|e| LoginError::Unreachable { url: url.to_string(), reason: e.to_string() })?;
        let status = response.status();
        if !status.is_success() {
            return Err(LoginError::Unexpected { url: url.to_string(), status: status.as_u16() });
        }
        response.json().await.map_err(|_| LoginError::Unexpected { url: url.to_string(), status: status.as_u16() })
    }

    /// The error a callback carried instead of a code.
    pub fn denied(error: &str, description: Option<&str>) -> LoginError {
        LoginError::Denied { error: error.to_owned(), description: description.unwrap_or_default().to_owned() }
    }
}

/// The 18-character form of a Salesforce id (15-character ids get their
/// case-safe suffix); other lengths are returned as they are.
pub fn id18(id: &str) -> String {
    if id.len() != 15 || !id.is_ascii() {
        return id.to_owned();
    }
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ012345";
    let mut suffix = String::with_capacity(3);
    for chunk in id.as_bytes().chunks(5) {
        let mut bits = 0usize;
        for (i, c) in chunk.iter().enumerate() {
            if c.is_ascii_uppercase() {
                bits |= 1 << i;
            }
        }
        suffix.push(ALPHABET[bits] as char);
    }
    format!("{id}{suffix}")
}

/// Whether two Salesforce ids name the same record (15 or 18 characters).
pub fn same_id(a: &str, b: &str) -> bool {
    id18(a) == id18(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn login() -> SalesforceLogin {
        SalesforceLogin::new(
            "https://login.example.test",
            "3MVG9.client".into(),
            None,
            "https://gw.example.test/v1/auth/salesforce/callback".into(),
            None,
            Sealer::new(&[1; 32]),
        )
        .unwrap()
    }

    #[test]
    fn the_authorize_url_carries_pkce_and_a_sealed_state() {
        let l = login();
        let url = Url::parse(&l.authorize_url("https://org.lightning.force.com/x")).unwrap();
        assert_eq!(url.path(), "/services/oauth2/authorize");
        let q: std::collections::HashMap<_, _> = url.query_pairs().into_owned().collect();
        assert_eq!(q["response_type"], "code");
        assert_eq!(q["code_challenge_method"], "S256");
        assert_eq!(q["redirect_uri"], "https://gw.example.test/v1/auth/salesforce/callback");
        let state = l.open_state(&q["state"]).unwrap();
        assert_eq!(challenge(&state.v), q["code_challenge"]);
        assert_eq!(state.r, "https://org.lightning.force.com/x");
        assert!(matches!(l.open_state("v1.AAAA"), Err(LoginError::State)));
        let other = SalesforceLogin { sealer: Sealer::new(&[2; 32]), ..l.clone() };
        assert!(other.return_to(&q["state"]).is_none(), "another key cannot read the state");
    }

    #[test]
    fn rfc7636_appendix_b_challenge() {
        assert_eq!(challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"), "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM");
    }

    #[test]
    fn fifteen_character_ids_get_their_case_safe_suffix() {
        assert_eq!(id18("001000000000001"), "001000000000001AAA");
        assert_eq!(id18("001A0000006Vm9r"), "001A0000006Vm9rIAC");
        assert!(same_id("005Dn000001AbCd", &id18("005Dn000001AbCd")));
        assert!(!same_id("005Dn000001AbCd", "005Dn000001abcd"));
        assert_eq!(id18("short"), "short");
    }
}
