//! The web-server flow's grants at the token endpoint.
//!
//! `grant_type=authorization_code` exchanges a code from the authorization
//! endpoint ([`crate::authorize`]) for an access token, plus a refresh token
//! when the granted scopes include `refresh_token` or `offline_access`.
//! `grant_type=refresh_token` gets a new access token for a refresh token,
//! and a new refresh token only when the app rotates them. Both add an
//! OpenID Connect ID token when the scopes include `openid`
//! ([`crate::id_token`]). Access tokens act
//! as the user who authorized, against every REST resource; those issued
//! under a refresh token end when it is revoked.
//!
//! The answer is Salesforce's: `access_token`, `refresh_token`, `signature`
//! (Base64 HMAC-SHA256 of `id` followed by `issued_at`, keyed with the
//! consumer secret), `scope` (space-separated), `instance_url`, `id` (the
//! identity URL `{login host}/id/{org id}/{user id}`; the emulator is its own
//! login host), `token_type` `Bearer`, `issued_at` (milliseconds) and
//! `id_token`.
//!
//! Refusals are HTTP 400 with `{"error","error_description"}`, checked in
//! this order:
//!
//! | situation | `error` | `error_description` |
//! |---|---|---|
//! | no connected app has the `client_id` | `invalid_client_id` | `client identifier invalid` |
//! | wrong `client_secret`, or none where the app requires it | `invalid_client` | `invalid client credentials` |
//! | unknown or already used code, or a code of another app | `invalid_grant` | `invalid authorization code` |
//! | code older than its lifetime (15 minutes) | `invalid_grant` | `expired authorization code` |
//! | `redirect_uri` not the one of the authorization request | `redirect_uri_mismatch` | `redirect_uri must match configuration` |
//! | `code_verifier` missing, malformed or not matching the challenge (or given for a code requested without challenge) | `invalid_grant` | `invalid code verifier` |
//! | unknown, revoked, expired or another app's refresh token | `invalid_grant` | `expired access/refresh token` |
//! | the user was deactivated | `inactive_user` | `user is inactive` |
//!
//! A code is spent by the first exchange that presents it with its own
//! `client_id` and the right secret, whether that exchange succeeds or not.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use chrono::Utc;
use hmac::{Hmac, Mac};
use rand::distr::{Alphanumeric, SampleString};
use serde_json::{json, Value};
use sha2::Sha256;

use crate::config::{ConnectedApp, RefreshTokenPolicy};
use crate::id_token::{self, IdTokenClaims};
use crate::identity::User;
use crate::oauth::{issue_access_token, OAuthError};
use crate::state::{Inner, RefreshGrant, Shared};

/// `invalid_grant` for a code that is unknown, spent or another app's.
pub(crate) const INVALID_CODE: &str = "invalid authorization code";
/// `invalid_grant` for a code past its lifetime.
pub(crate) const EXPIRED_CODE: &str = "expired authorization code";
/// `invalid_grant` for a failed PKCE check.
pub(crate) const INVALID_VERIFIER: &str = "invalid code verifier";
/// `invalid_grant` for a refresh token that cannot be used.
pub(crate) const EXPIRED_TOKEN: &str = "expired access/refresh token";

/// The identity URL of a user: `id` of the token answer, `sub` of userinfo.
pub(crate) fn identity_url(shared: &Shared, user_id: &str) -> String {
    format!("{}/id/{}/{user_id}", shared.base_url, shared.org_id)
}

/// The connected app the request names.
fn client(inner: &Inner, params: &HashMap<String, String>) -> Result<ConnectedApp, OAuthError> {
    params
        .get("client_id")
        .and_then(|key| inner.apps.get(key))
        .cloned()
        .ok_or_else(OAuthError::client_id)
}

/// Checks `client_secret`: a wrong one is always refused, a missing one when
/// `required`.
fn check_secret(
    app: &ConnectedApp,
    params: &HashMap<String, String>,
    required: bool,
) -> Result<(), OAuthError> {
    let ok = match params.get("client_secret").filter(|s| !s.is_empty()) {
        Some(secret) => *secret == app.consumer_secret,
        None => !required,
    };
    if ok {
        Ok(())
    } else {
        Err(OAuthError::new(
            "invalid_client",
            "invalid client credentials",
        ))
    }
}

/// The `signature` of a token answer: Base64 HMAC-SHA256 of `id` and
/// `issued_at`, keyed with the consumer secret.
fn signature(consumer_secret: &str, id: &str, issued_at: &str) -> String {
    // HMAC takes keys of any length; the error case cannot happen.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(consumer_secret.as_bytes()) else {
        return String::new();
    };
    mac.update(id.as_bytes());
    mac.update(issued_at.as_bytes());
    STANDARD.encode(mac.finalize().into_bytes())
}

/// A refresh token in Salesforce's shape: `5Aep861` and 80 more characters.
fn new_refresh_token() -> String {
    format!(
        "5Aep861{}",
        Alphanumeric.sample_string(&mut rand::rng(), 80)
    )
}

/// Whether a refresh token's grant asks for one.
fn wants_refresh_token(scopes: &[String]) -> bool {
    scopes
        .iter()
        .any(|s| s == "refresh_token" || s == "offline_access")
}

/// A successful grant: the JSON answer, and the ID token to sign into it
/// (signing waits for the key, so it happens once the org is unlocked).
pub(crate) struct Issued {
    pub body: Value,
    pub id_token: Option<IdTokenClaims>,
}

/// The ID token claims of a grant, if its scopes include `openid`.
fn id_token_claims(
    shared: &Shared,
    inner: &Inner,
    app: &ConnectedApp,
    user_id: &str,
    scopes: &[String],
    nonce: Option<&str>,
    access_token: &str,
) -> Option<IdTokenClaims> {
    let user = inner.store.get("User", user_id).map(User::from_record)?;
    id_token::claims(
        shared,
        &app.consumer_key,
        &user,
        scopes,
        nonce,
        access_token,
    )
}

/// The JSON answer of a successful grant.
pub(crate) fn answer(
    shared: &Shared,
    app: &ConnectedApp,
    user_id: &str,
    scopes: &[String],
    access_token: String,
    refresh_token: Option<String>,
) -> Value {
    let id = identity_url(shared, user_id);
    let issued_at = Utc::now().timestamp_millis().to_string();
    let mut answer = json!({
        "access_token": access_token,
        "signature": signature(&app.consumer_secret, &id, &issued_at),
        "scope": scopes.join(" "),
        "instance_url": shared.base_url,
        "id": id,
        "token_type": "Bearer",
        "issued_at": issued_at,
    });
    if let (Some(token), Some(map)) = (refresh_token, answer.as_object_mut()) {
        map.insert("refresh_token".to_owned(), Value::String(token));
    }
    answer
}

/// `grant_type=authorization_code`.
pub(crate) fn authorization_code(
    shared: &Shared,
    params: &HashMap<String, String>,
) -> Result<Issued, OAuthError> {
    let mut inner = shared.lock();
    let now = Instant::now();
    inner.purge_codes(now);
    let app = client(&inner, params)?;
    check_secret(&app, params, app.require_secret)?;

    let presented = params.get("code").map(String::as_str).unwrap_or("");
    let belongs = inner
        .codes
        .get(presented)
        .is_some_and(|c| c.client_id == app.consumer_key);
    if !belongs {
        return Err(OAuthError::grant(INVALID_CODE));
    }
    let Some(code) = inner.codes.remove(presented) else {
        return Err(OAuthError::grant(INVALID_CODE));
    };
    if now >= code.expires_at {
        return Err(OAuthError::grant(EXPIRED_CODE));
    }
    if params.get("redirect_uri") != Some(&code.redirect_uri) {
        return Err(OAuthError::new(
            "redirect_uri_mismatch",
            "redirect_uri must match configuration",
        ));
    }
    let verifier = params
        .get("code_verifier")
        .map(String::as_str)
        .filter(|v| !v.is_empty());
    let proven = match (&code.challenge, verifier) {
        (Some(challenge), Some(verifier)) => challenge.verify(verifier),
        (None, None) => true,
        _ => false,
    };
    if !proven {
        return Err(OAuthError::grant(INVALID_VERIFIER));
    }
    if !inner.store.user_is_active(&code.user_id) {
        return Err(OAuthError::new("inactive_user", "user is inactive"));
    }

    let grant = wants_refresh_token(&code.scopes).then(|| {
        let grant = inner.next_grant;
        inner.next_grant += 1;
        grant
    });
    let access_token = issue_access_token(shared, &mut inner, &code.user_id, &code.scopes, grant);
    let refresh_token = grant.map(|grant| {
        let token = new_refresh_token();
        inner.refresh_tokens.insert(
            token.clone(),
            RefreshGrant {
                grant,
                client_id: app.consumer_key.clone(),
                user_id: code.user_id.clone(),
                scopes: code.scopes.clone(),
                issued_at: now,
                last_used: now,
            },
        );
        token
    });
    let id_token = id_token_claims(
        shared,
        &inner,
        &app,
        &code.user_id,
        &code.scopes,
        code.nonce.as_deref(),
        &access_token,
    );
    drop(inner);
    Ok(Issued {
        body: answer(
            shared,
            &app,
            &code.user_id,
            &code.scopes,
            access_token,
            refresh_token,
        ),
        id_token,
    })
}

/// Whether the app's refresh token policy still accepts a refresh token.
fn policy_accepts(policy: RefreshTokenPolicy, grant: &RefreshGrant, now: Instant) -> bool {
    let within = |since: Instant, secs: u64| {
        now.checked_duration_since(since)
            .is_none_or(|age| age < Duration::from_secs(secs))
    };
    match policy {
        RefreshTokenPolicy::ValidUntilRevoked => true,
        RefreshTokenPolicy::Immediately => false,
        RefreshTokenPolicy::ExpireAfter { secs } => within(grant.issued_at, secs),
        RefreshTokenPolicy::ExpireIfNotUsedFor { secs } => within(grant.last_used, secs),
    }
}

/// `grant_type=refresh_token`.
pub(crate) fn refresh_token(
    shared: &Shared,
    params: &HashMap<String, String>,
) -> Result<Issued, OAuthError> {
    let mut inner = shared.lock();
    let now = Instant::now();
    let app = client(&inner, params)?;
    check_secret(&app, params, app.require_secret_for_refresh)?;

    let presented = params
        .get("refresh_token")
        .map(String::as_str)
        .unwrap_or("");
    let Some(grant) = inner
        .refresh_tokens
        .get(presented)
        .filter(|g| g.client_id == app.consumer_key)
        .cloned()
    else {
        return Err(OAuthError::grant(EXPIRED_TOKEN));
    };
    if !policy_accepts(app.refresh_token_policy, &grant, now) {
        inner.refresh_tokens.remove(presented);
        return Err(OAuthError::grant(EXPIRED_TOKEN));
    }
    if !inner.store.user_is_active(&grant.user_id) {
        return Err(OAuthError::new("inactive_user", "user is inactive"));
    }

    let access_token = issue_access_token(
        shared,
        &mut inner,
        &grant.user_id,
        &grant.scopes,
        Some(grant.grant),
    );
    let rotated = if app.rotate_refresh_tokens {
        inner.refresh_tokens.remove(presented);
        let token = new_refresh_token();
        inner.refresh_tokens.insert(
            token.clone(),
            RefreshGrant {
                issued_at: now,
                last_used: now,
                ..grant.clone()
            },
        );
        Some(token)
    } else {
        if let Some(used) = inner.refresh_tokens.get_mut(presented) {
            used.last_used = now;
        }
        None
    };
    let id_token = id_token_claims(
        shared,
        &inner,
        &app,
        &grant.user_id,
        &grant.scopes,
        None,
        &access_token,
    );
    drop(inner);
    Ok(Issued {
        body: answer(
            shared,
            &app,
            &grant.user_id,
            &grant.scopes,
            access_token,
            rotated,
        ),
        id_token,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_hmac_sha256_of_id_and_issued_at() {
        // RFC 4231 test case 2 (key "Jefe"), its data split in two.
        assert_eq!(
            signature("Jefe", "what do ya want ", "for nothing?"),
            "W9zBRr9gdU5qBCQmCJV1x1oAPwidJzmDnexYuWTsOEM="
        );
    }

    #[test]
    fn refresh_token_policies_expire_as_configured() {
        let now = Instant::now();
        let grant = RefreshGrant {
            grant: 1,
            client_id: "ck".to_owned(),
            user_id: "005".to_owned(),
            scopes: Vec::new(),
            issued_at: now,
            last_used: now,
        };
        let later = now + Duration::from_secs(100);
        assert!(policy_accepts(
            RefreshTokenPolicy::ValidUntilRevoked,
            &grant,
            later
        ));
        assert!(!policy_accepts(
            RefreshTokenPolicy::Immediately,
            &grant,
            now
        ));
        assert!(policy_accepts(
            RefreshTokenPolicy::ExpireAfter { secs: 101 },
            &grant,
            later
        ));
        assert!(!policy_accepts(
            RefreshTokenPolicy::ExpireAfter { secs: 100 },
            &grant,
            later
        ));
        let used = RefreshGrant {
            last_used: now + Duration::from_secs(90),
            ..grant.clone()
        };
        assert!(policy_accepts(
            RefreshTokenPolicy::ExpireIfNotUsedFor { secs: 20 },
            &used,
            later
        ));
        assert!(!policy_accepts(
            RefreshTokenPolicy::ExpireAfter { secs: 20 },
            &used,
            later
        ));
    }

    #[test]
    fn refresh_tokens_come_with_refresh_token_or_offline_access() {
        let scopes = |list: &[&str]| list.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert!(wants_refresh_token(&scopes(&["api", "refresh_token"])));
        assert!(wants_refresh_token(&scopes(&["offline_access"])));
        assert!(!wants_refresh_token(&scopes(&["api", "openid"])));
    }
}
