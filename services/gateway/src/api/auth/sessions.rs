//! Agent sessions: what "Connect with Salesforce" ends in. A session is an
//! opaque bearer token (`sbs_` + 43 characters) that expires; the database
//! keeps only its SHA-256, so a leaked table is no key. The agent's
//! Salesforce tokens ride along sealed (see `seal`), for searches made on
//! the agent's behalf, and are replaced when refreshed.

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use switchboard_store::sqlx::{self, Row};
use switchboard_store::{now_ms, Database};

use super::seal::Sealer;
pub use crate::directory::Role;

const TOKEN_PREFIX: &str = "sbs_";
/// Associated data of sealed Salesforce grants.
const GRANT_PURPOSE: &str = "salesforce-grant";

/// The agent's Salesforce authorization, kept sealed with its session.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SalesforceGrant {
    pub instance_url: String,
    pub access_token: String,
    #[serde(default)]
    pub refresh_token: Option<String>,
    /// The Salesforce user (18 characters) and org.
    pub user_id: String,
    pub organization_id: String,
}

impl std::fmt::Debug for SalesforceGrant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SalesforceGrant")
            .field("instance_url", &self.instance_url)
            .field("user_id", &self.user_id)
            .field("organization_id", &self.organization_id)
            .finish_non_exhaustive()
    }
}

/// A live session.
#[derive(Debug, Clone)]
pub struct Session {
    pub id: String,
    pub user_id: String,
    pub role: Role,
    pub expires_at_ms: i64,
    pub salesforce: Option<SalesforceGrant>,
}

/// Why a session operation failed.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("the session store failed: {0}")]
    Store(#[from] sqlx::Error),
}

/// The session store.
#[derive(Debug, Clone)]
pub struct Sessions {
    db: Database,
    sealer: Sealer,
    ttl: Duration,
}

fn hash(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

impl Sessions {
    pub fn new(db: Database, sealer: Sealer, ttl: Duration) -> Sessions {
        Sessions { db, sealer, ttl }
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Opens a session for `user_id`; answers the bearer token (shown once,
    /// never stored) and the session.
    pub async fn create(&self, user_id: &str, grant: Option<SalesforceGrant>) -> Result<(String, Session), SessionError> {
        let token = format!("{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>()));
        let now = now_ms();
        let expires_at_ms = now + self.ttl.as_millis() as i64;
        let id = uuid::Uuid::now_v7().to_string();
        let sealed = grant.as_ref().map(|g| self.seal(g));
        sqlx::query("INSERT INTO agent_sessions (id, token_hash, user_id, created_at, expires_at, salesforce) VALUES ($1, $2, $3, $4, $5, $6)")
            .bind(&id)
            .bind(hash(&token))
            .bind(user_id)
            .bind(now)
            .bind(expires_at_ms)
            .bind(sealed)
            .execute(self.db.pool())
            .await?;
        let role = self.role(user_id).await?;
        metrics::counter!("switchboard_api_sessions_created_total").increment(1);
        Ok((token, Session { id, user_id: user_id.to_owned(), role, expires_at_ms, salesforce: grant }))
    }

    async fn role(&self, user_id: &str) -> Result<Role, SessionError> {
        let row = sqlx::query("SELECT role FROM users WHERE id = $1").bind(user_id).fetch_optional(self.db.pool()).await?;
        Ok(row.map(|r| Role::parse(&r.get::<String, _>("role"))).unwrap_or(Role::Agent))
    }

    /// The live session a bearer token belongs to; `None` for an unknown,
    /// expired or revoked token (callers answer all three the same way).
    pub async fn authenticate(&self, token: &str) -> Result<Option<Session>, SessionError> {
        if !token.starts_with(TOKEN_PREFIX) || token.len() > 128 {
            return Ok(None);
        }
        let row = sqlx::query(
            "SELECT s.id AS id, s.user_id AS user_id, s.expires_at AS expires_at, s.salesforce AS salesforce, u.role AS role \
             FROM agent_sessions s JOIN users u ON u.id = s.user_id \
             WHERE s.token_hash = $1 AND s.revoked_at IS NULL AND s.expires_at > $2",
        )
        .bind(hash(token))
        .bind(now_ms())
        .fetch_optional(self.db.pool())
        .await?;
        let Some(row) = row else { return Ok(None) };
        let sealed: Option<String> = row.try_get("salesforce")?;
        let salesforce = sealed.and_then(|s| self.open(&s));
        Ok(Some(Session {
            id: row.try_get("id")?,
            user_id: row.try_get("user_id")?,
            role: Role::parse(&row.try_get::<String, _>("role")?),
            expires_at_ms: row.try_get("expires_at")?,
            salesforce,
        }))
    }

    /// The Salesforce grant of a live session, if it has one.
    pub async fn grant(&self, session_id: &str) -> Result<Option<SalesforceGrant>, SessionError> {
        let row = sqlx::query("SELECT salesforce FROM agent_sessions WHERE id = $1 AND revoked_at IS NULL AND expires_at > $2")
            .bind(session_id)
            .bind(now_ms())
            .fetch_optional(self.db.pool())
            .await?;
        Ok(row.and_then(|r| r.try_get::<Option<String>, _>("salesforce").ok().flatten()).and_then(|s| self.open(&s)))
    }

    /// The Salesforce grant of the user's most recent live session that
    /// has one, with that session's id (searches made for the agent when
    /// no request of its own is at hand, e.g. caller matching at ring time).
    pub async fn latest_grant(&self, user_id: &str) -> Result<Option<(String, SalesforceGrant)>, SessionError> {
        let rows = sqlx::query(
            "SELECT id, salesforce FROM agent_sessions \
             WHERE user_id = $1 AND revoked_at IS NULL AND expires_at > $2 AND salesforce IS NOT NULL \
             ORDER BY created_at DESC LIMIT 5",
        )
        .bind(user_id)
        .bind(now_ms())
        .fetch_all(self.db.pool())
        .await?;
        for row in rows {
            let sealed: Option<String> = row.try_get("salesforce")?;
            if let Some(grant) = sealed.and_then(|s| self.open(&s)) {
                return Ok(Some((row.try_get("id")?, grant)));
            }
        }
        Ok(None)
    }

    fn open(&self, sealed: &str) -> Option<SalesforceGrant> {
        match self.sealer.open(GRANT_PURPOSE, sealed) {
            Ok(plain) => serde_json::from_slice(&plain).ok(),
            Err(e) => {
                // A changed auth.token_key: the session stays, searches ask
                // the agent to connect with Salesforce again.
                tracing::warn!(error = %e, "an agent's sealed Salesforce tokens cannot be opened (was auth.token_key changed?)");
                None
            }
        }
    }

    /// Replaces a session's Salesforce grant (after a token refresh).
    pub async fn update_grant(&self, session_id: &str, grant: &SalesforceGrant) -> Result<(), SessionError> {
        sqlx::query("UPDATE agent_sessions SET salesforce = $1 WHERE id = $2")
            .bind(self.seal(grant))
            .bind(session_id)
            .execute(self.db.pool())
            .await?;
        Ok(())
    }

    /// Ends a session (sign-out).
    pub async fn revoke(&self, session_id: &str) -> Result<(), SessionError> {
        sqlx::query("UPDATE agent_sessions SET revoked_at = $1, salesforce = NULL WHERE id = $2 AND revoked_at IS NULL")
            .bind(now_ms())
            .bind(session_id)
            .execute(self.db.pool())
            .await?;
        Ok(())
    }

    /// Deletes sessions that ended more than a day ago; answers how many.
    pub async fn purge(&self) -> Result<u64, SessionError> {
        let cutoff = now_ms() - 86_400_000;
        let done = sqlx::query("DELETE FROM agent_sessions WHERE expires_at < $1 OR revoked_at < $1")
            .bind(cutoff)
            .execute(self.db.pool())
            .await?;
        Ok(done.rows_affected())
    }

    fn seal(&self, grant: &SalesforceGrant) -> String {
        self.sealer.seal(GRANT_PURPOSE, &serde_json::to_vec(grant).expect("a grant serialises"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_stored_as_their_hash_and_grants_never_print_tokens() {
        assert_eq!(hash("sbs_x").len(), 64);
        assert_ne!(hash("sbs_x"), hash("sbs_y"));
        let g = SalesforceGrant {
            instance_url: "https://example.my.salesforce.com".into(),
            access_token: "00Dxx!SECRET".into(),
            refresh_token: Some("5Aep-REFRESH".into()),
            user_id: "005000000000001AAA".into(),
            organization_id: "00D000000000001AAA".into(),
        };
        let printed = format!("{g:?}");
        assert!(!printed.contains("SECRET") && !printed.contains("REFRESH"), "{printed}");
    }
}
