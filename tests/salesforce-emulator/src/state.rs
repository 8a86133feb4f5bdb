//! The state one emulated org shares between its HTTP handlers and the
//! [`Emulator`](crate::Emulator) handle: fixed facts (schema, the JWT app's
//! certificate, versions) outside the lock, changing data (records, connected
//! apps, sessions, codes, refresh tokens, usage, pending faults) inside one
//! mutex that is never held across an await.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use chrono::{NaiveDate, Utc};
use jsonwebtoken::DecodingKey;

use crate::config::ConnectedApp;
use crate::faults::FaultQueue;
use crate::pkce::Challenge;
use crate::schema::Schema;
use crate::store::Store;

/// An issued access token.
#[derive(Clone, Debug)]
pub(crate) struct Session {
    /// The user the token acts for.
    pub user_id: String,
    /// When the session times out.
    pub expires_at: Instant,
    /// The granted scopes; the REST API needs `api` or `full`.
    pub scopes: Vec<String>,
    /// The refresh grant the token was issued under: revoking the grant's
    /// refresh token revokes the token too.
    pub grant: Option<u64>,
}

impl Session {
    /// Whether the token may call the REST API.
    pub(crate) fn rest_allowed(&self) -> bool {
        self.scopes.iter().any(|s| s == "api" || s == "full")
    }
}

/// An authorization code waiting for its exchange, bound to what the
/// authorization request said.
#[derive(Clone, Debug)]
pub(crate) struct AuthorizationCode {
    pub client_id: String,
    pub redirect_uri: String,
    pub challenge: Option<Challenge>,
    pub user_id: String,
    pub scopes: Vec<String>,
    /// The OpenID Connect `nonce`, echoed in the ID token.
    pub nonce: Option<String>,
    pub expires_at: Instant,
}

/// A refresh token's grant: who authorized which app for what.
#[derive(Clone, Debug)]
pub(crate) struct RefreshGrant {
    /// Shared by the access tokens issued under it and, with rotation, by
    /// the refresh tokens that replace this one.
    pub grant: u64,
    pub client_id: String,
    pub user_id: String,
    pub scopes: Vec<String>,
    pub issued_at: Instant,
    pub last_used: Instant,
}

/// The emulated browser at the authorization endpoint: who is signed in
/// to Salesforce there and whether they press "Deny".
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Browser {
    /// Username of the signed-in user; `None` shows the login page.
    #[serde(default)]
    pub username: Option<String>,
    /// The user denies access on the approval page.
    #[serde(default)]
    pub deny: bool,
}

/// The daily REST call counter behind `Sforce-Limit-Info`.
#[derive(Debug)]
pub(crate) struct Usage {
    day: NaiveDate,
    used: u64,
    pub limit: u64,
}

impl Usage {
    fn new(limit: u64) -> Usage {
        Usage {
            day: Utc::now().date_naive(),
            used: 0,
            limit,
        }
    }

    /// Counts one call (starting afresh on a new UTC day) and returns the
    /// calls of the day including this one.
    pub(crate) fn count(&mut self) -> u64 {
        self.roll_day();
        self.used += 1;
        self.used
    }

    /// Calls of the day so far.
    pub(crate) fn used(&mut self) -> u64 {
        self.roll_day();
        self.used
    }

    /// Sets the calls of the day, to test limits without making them.
    pub(crate) fn set_used(&mut self, used: u64) {
        self.roll_day();
        self.used = used;
    }

    fn roll_day(&mut self) {
        let today = Utc::now().date_naive();
        if today != self.day {
            self.day = today;
            self.used = 0;
        }
    }
}

/// The changing part of the org.
#[derive(Debug)]
pub(crate) struct Inner {
    pub store: Store,
    pub sessions: HashMap<String, Session>,
    /// Connected apps by consumer key.
    pub apps: BTreeMap<String, ConnectedApp>,
    /// Unexchanged authorization codes.
    pub codes: HashMap<String, AuthorizationCode>,
    /// Usable refresh tokens.
    pub refresh_tokens: HashMap<String, RefreshGrant>,
    /// Number of the next refresh grant.
    pub next_grant: u64,
    pub browser: Browser,
    pub usage: Usage,
    pub faults: FaultQueue,
    /// Authenticated REST data calls since start.
    pub api_calls: u64,
    /// Requests to the token endpoint since start.
    pub token_calls: u64,
    /// Objects whose organization-wide default is Private: a user reads
    /// only the records it owns, except the integration user, who has
    /// "View All Data" as a system administrator does.
    pub private_objects: std::collections::HashSet<String>,
    /// Receivers of [`Emulator::watch_writes`](crate::Emulator::watch_writes).
    pub write_watchers: Vec<tokio::sync::mpsc::UnboundedSender<crate::RecordWrite>>,
}

impl Inner {
    /// A fresh org state around `store`.
    pub(crate) fn new(store: Store, daily_api_limit: u64) -> Inner {
        Inner {
            store,
            sessions: HashMap::new(),
            apps: BTreeMap::new(),
            codes: HashMap::new(),
            refresh_tokens: HashMap::new(),
            next_grant: 1,
            browser: Browser::default(),
            usage: Usage::new(daily_api_limit),
            faults: FaultQueue::default(),
            api_calls: 0,
            token_calls: 0,
            private_objects: std::collections::HashSet::new(),
            write_watchers: Vec::new(),
        }
    }
}

/// How long an expired code is kept, to answer `expired authorization code`
/// rather than `invalid authorization code`.
const EXPIRED_CODE_MEMORY: Duration = Duration::from_secs(60 * 60);

impl Inner {
    /// Whether `user_id` may read `record` of `object` under the sharing
    /// settings (`admin_id` sees everything).
    pub(crate) fn can_read(
        &self,
        admin_id: &str,
        user_id: &str,
        object: &str,
        record: &crate::store::Record,
    ) -> bool {
        if !self.private_objects.contains(object) || same_user(admin_id, user_id) {
            return true;
        }
        record
            .fields
            .get("OwnerId")
            .and_then(serde_json::Value::as_str)
            .is_some_and(|owner| same_user(owner, user_id))
    }

    /// Forgets codes that expired long ago.
    pub(crate) fn purge_codes(&mut self, now: Instant) {
        self.codes
            .retain(|_, c| c.expires_at + EXPIRED_CODE_MEMORY > now);
    }
}

/// Whether two user ids (15 or 18 characters) name the same user.
fn same_user(a: &str, b: &str) -> bool {
    a.get(..15).is_some_and(|x| Some(x) == b.get(..15))
}

/// Everything the handlers of one org share.
pub(crate) struct Shared {
    pub schema: Schema,
    pub consumer_key: String,
    pub verifying_key: DecodingKey,
    pub org_id: String,
    /// The integration user, owner of records created by the handle.
    pub default_user_id: String,
    /// Served API versions, as major numbers (`62` for `62.0`).
    pub api_versions: Vec<u32>,
    pub token_ttl: Duration,
    /// How long an authorization code can be exchanged.
    pub code_ttl: Duration,
    /// Base URL clients reach the emulator at: login host and instance URL.
    pub base_url: String,
    /// The changing part; use [`Shared::lock`].
    pub inner: Mutex<Inner>,
}

impl Shared {
    /// Locks the changing state. A panic in another holder cannot leave the
    /// data half-written (every change is made on a copy or in one step), so a
    /// poisoned lock is taken over rather than propagated.
    pub(crate) fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
