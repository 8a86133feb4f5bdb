//! Test control of the emulated org, in process (through
//! [`Emulator`](crate::Emulator)) and over HTTP under `/__emulator/` for the
//! binary: seed and inspect records, add users, register connected apps and
//! their callback URLs, sign a user in to the emulated browser of the
//! authorization endpoint (or make them deny access), end sessions, queue
//! faults, read and set the call counters, watch record writes (in process
//! only). Not part of Salesforce's API: nothing here needs a token.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use chrono::Utc;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::config::ConnectedApp;
use crate::emulator::EmulatorError;
use crate::errors::WriteError;
use crate::faults::Fault;
use crate::ids;
use crate::state::{Browser, Shared};
use crate::store::Writer;

/// Counters of the org, for assertions.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Authenticated REST data calls since start.
    pub api_calls: u64,
    /// Token endpoint requests since start.
    pub token_calls: u64,
    /// REST calls counted today (the `N` of `api-usage=N/M`).
    pub api_usage: u64,
    /// The daily limit (the `M`).
    pub daily_api_limit: u64,
    /// Access tokens currently valid.
    pub active_sessions: usize,
    /// Authorization codes issued and not yet exchanged (expired ones
    /// included for an hour).
    #[serde(default)]
    pub authorization_codes: usize,
    /// Refresh tokens not revoked.
    #[serde(default)]
    pub refresh_tokens: usize,
}

/// A record the org created or changed, as
/// [`Emulator::watch_writes`](crate::Emulator::watch_writes) reports it.
#[derive(Clone, Debug, PartialEq)]
pub struct RecordWrite {
    /// The object, e.g. `Task`.
    pub sobject: String,
    /// The record's 18-character id.
    pub id: String,
    /// Whether this write created the record (else it changed it).
    pub created: bool,
    /// When the org stored the write, on this process's monotonic clock
    /// (`LastModifiedDate` is the wall-clock time the request arrived).
    pub at: std::time::Instant,
    /// The record as the write left it, shaped as the API reads it
    /// (`attributes`, every field, `null` where unset).
    pub record: Value,
}

/// Checks a connected app's settings: a consumer key and secret, and
/// callback URLs that are absolute URLs.
pub(crate) fn check_app(app: &ConnectedApp) -> Result<(), EmulatorError> {
    if app.consumer_key.is_empty() || app.consumer_secret.is_empty() {
        return Err(EmulatorError::Config(
            "a connected app needs a consumer key and a consumer secret".to_owned(),
        ));
    }
    for url in &app.callback_urls {
        check_callback_url(url)?;
    }
    Ok(())
}

fn check_callback_url(url: &str) -> Result<(), EmulatorError> {
    url::Url::parse(url).map(|_| ()).map_err(|e| {
        EmulatorError::Config(format!("callback URL {url:?} is not an absolute URL: {e}"))
    })
}

impl Shared {
    /// The newest served API version, used for record URLs in inspection.
    fn newest_version(&self) -> u32 {
        self.api_versions.iter().copied().max().unwrap_or(62)
    }

    /// All records of an object as the API reads them.
    pub(crate) fn records_json(&self, sobject: &str) -> Result<Vec<Value>, EmulatorError> {
        let object = self
            .schema
            .object(sobject)
            .ok_or_else(|| EmulatorError::UnknownObject(sobject.to_owned()))?;
        let version = self.newest_version();
        let inner = self.lock();
        Ok(inner
            .store
            .records(object.name)
            .map(|r| r.to_json(object, version))
            .collect())
    }

    /// Creates a record with the org's rules, owned by the integration user.
    pub(crate) fn insert_record(
        &self,
        sobject: &str,
        fields: &Value,
    ) -> Result<String, EmulatorError> {
        let object = self
            .schema
            .object(sobject)
            .ok_or_else(|| EmulatorError::UnknownObject(sobject.to_owned()))?;
        let body: &Map<String, Value> =
            fields.as_object().ok_or_else(|| EmulatorError::Rejected {
                code: "JSON_PARSER_ERROR".to_owned(),
                message: "a record must be a JSON object".to_owned(),
            })?;
        let writer = Writer {
            user_id: &self.default_user_id,
            now: Utc::now(),
        };
        let result = self.lock().store.create(&self.schema, object, body, writer);
        self.report_writes();
        result.map_err(rejected)
    }

    /// Adds an active user; `id` must be a `005` id when given.
    pub(crate) fn add_user(
        &self,
        username: &str,
        id: Option<&str>,
    ) -> Result<String, EmulatorError> {
        let object = self
            .schema
            .object("User")
            .ok_or_else(|| EmulatorError::UnknownObject("User".to_owned()))?;
        let id = match id {
            Some(given) => ids::normalize(given)
                .filter(|id| ids::key_prefix(id) == "005")
                .ok_or_else(|| {
                    EmulatorError::Config(format!(
                        "user id {given:?} is not a 15- or 18-character 005 id"
                    ))
                })?,
            None => self.lock().store.allocate_id(object.key_prefix),
        };
        let last_name = username.split('@').next().unwrap_or(username);
        let body = json!({"Username": username, "LastName": last_name, "Email": username});
        let body = body.as_object().cloned().unwrap_or_default();
        let writer = Writer {
            user_id: &id,
            now: Utc::now(),
        };
        let mut inner = self.lock();
        if inner.store.get("User", &id).is_some() {
            return Err(EmulatorError::Config(format!(
                "user id {id} exists already"
            )));
        }
        let taken = inner.store.records("User").any(|u| {
            u.fields
                .get("Username")
                .and_then(Value::as_str)
                .is_some_and(|n| n.eq_ignore_ascii_case(username))
        });
        if taken {
            return Err(EmulatorError::Config(format!(
                "username {username} exists already"
            )));
        }
        let result = inner
            .store
            .create_with_id(&self.schema, object, &body, id.clone(), writer);
        drop(inner);
        self.report_writes();
        result.map_err(rejected)
    }

    /// Ends every session: all issued tokens answer 401 from now on.
    /// Refresh tokens stay valid, as after a session timeout.
    pub(crate) fn expire_tokens(&self) {
        self.lock().sessions.clear();
    }

    /// Adds or replaces a connected app.
    pub(crate) fn register_app(&self, app: ConnectedApp) -> Result<(), EmulatorError> {
        check_app(&app)?;
        self.check_run_as(&app)?;
        self.lock().apps.insert(app.consumer_key.clone(), app);
        Ok(())
    }

    /// Checks that an app's Run As user of the client credentials flow, if
    /// it names one, is a user of the org, as Setup's lookup field only
    /// offers existing users.
    pub(crate) fn check_run_as(&self, app: &ConnectedApp) -> Result<(), EmulatorError> {
        match &app.client_credentials_user {
            Some(name) if self.lock().store.user_by_username(name).is_none() => {
                Err(EmulatorError::Config(format!(
                    "the Run As user {name:?} of connected app {} is no user of the org",
                    app.consumer_key
                )))
            }
            _ => Ok(()),
        }
    }

    /// Adds a callback URL to an app (once).
    pub(crate) fn add_callback_url(
        &self,
        consumer_key: &str,
        url: &str,
    ) -> Result<(), EmulatorError> {
        check_callback_url(url)?;
        let mut inner = self.lock();
        let app = inner.apps.get_mut(consumer_key).ok_or_else(|| {
            EmulatorError::Config(format!(
                "no connected app has the consumer key {consumer_key:?}"
            ))
        })?;
        if !app.callback_urls.iter().any(|u| u == url) {
            app.callback_urls.push(url.to_owned());
        }
        Ok(())
    }

    /// Sets the emulated browser; its user must exist.
    pub(crate) fn set_browser(&self, browser: Browser) -> Result<(), EmulatorError> {
        let mut inner = self.lock();
        if let Some(name) = &browser.username {
            if inner.store.user_by_username(name).is_none() {
                return Err(EmulatorError::Config(format!(
                    "no user has the username {name:?}"
                )));
            }
        }
        inner.browser = browser;
        Ok(())
    }

    /// A new receiver of every record write from now on.
    pub(crate) fn watch_writes(&self) -> tokio::sync::mpsc::UnboundedReceiver<RecordWrite> {
        let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
        let mut inner = self.lock();
        inner.write_watchers.push(sender);
        inner.store.keep_journal(true);
        receiver
    }

    /// Hands the writes made since the last call to the watchers; called
    /// once a request that may have written is done.
    pub(crate) fn report_writes(&self) {
        let (written, watchers) = {
            let mut inner = self.lock();
            if inner.write_watchers.is_empty() {
                return;
            }
            inner.write_watchers.retain(|w| !w.is_closed());
            if inner.write_watchers.is_empty() {
                inner.store.keep_journal(false);
                return;
            }
            (inner.store.take_journal(), inner.write_watchers.clone())
        };
        let version = self.newest_version();
        for w in written {
            let Some(object) = self.schema.object(w.object) else {
                continue;
            };
            let write = RecordWrite {
                sobject: w.object.to_owned(),
                id: w.record.id().to_owned(),
                created: w.created,
                at: w.at,
                record: w.record.to_json(object, version),
            };
            for watcher in &watchers {
                // A receiver dropped meanwhile is removed on the next report.
                let _ = watcher.send(write.clone());
            }
        }
    }

    /// The org's counters.
    pub(crate) fn stats(&self) -> Stats {
        let mut inner = self.lock();
        let api_usage = inner.usage.used();
        Stats {
            api_calls: inner.api_calls,
            token_calls: inner.token_calls,
            api_usage,
            daily_api_limit: inner.usage.limit,
            active_sessions: inner.sessions.len(),
            authorization_codes: inner.codes.len(),
            refresh_tokens: inner.refresh_tokens.len(),
        }
    }
}

fn rejected(error: WriteError) -> EmulatorError {
    match error {
        WriteError::Parse(message) => EmulatorError::Rejected {
            code: "JSON_PARSER_ERROR".to_owned(),
            message,
        },
        WriteError::Record(e) => EmulatorError::Rejected {
            code: e.code,
            message: e.message,
        },
        WriteError::NotFound => EmulatorError::Rejected {
            code: "NOT_FOUND".to_owned(),
            message: "record not found".to_owned(),
        },
        WriteError::MultipleMatches(ids) => EmulatorError::Rejected {
            code: "DUPLICATE_EXTERNAL_ID".to_owned(),
            message: format!("several records match: {}", ids.join(", ")),
        },
    }
}

/// A control error as JSON.
fn control_error(status: StatusCode, error: &EmulatorError) -> Response {
    let body = match error {
        EmulatorError::Rejected { code, message } => json!({"errorCode": code, "message": message}),
        other => json!({"errorCode": "EMULATOR_ERROR", "message": other.to_string()}),
    };
    (status, Json(body)).into_response()
}

fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, (StatusCode, Json<Value>)> {
    serde_json::from_slice(body).map_err(|e| {
        (
            StatusCode::BAD_REQUEST,
            Json(json!({"errorCode": "JSON_PARSER_ERROR", "message": e.to_string()})),
        )
    })
}

async fn list_records(State(shared): State<Arc<Shared>>, Path(sobject): Path<String>) -> Response {
    match shared.records_json(&sobject) {
        Ok(records) => Json(records).into_response(),
        Err(e) => control_error(StatusCode::NOT_FOUND, &e),
    }
}

async fn insert_record(
    State(shared): State<Arc<Shared>>,
    Path(sobject): Path<String>,
    body: Bytes,
) -> Response {
    let fields: Value = match parse_body(&body) {
        Ok(v) => v,
        Err(r) => return r.into_response(),
    };
    match shared.insert_record(&sobject, &fields) {
        Ok(id) => (StatusCode::CREATED, Json(json!({"id": id}))).into_response(),
        Err(e @ EmulatorError::UnknownObject(_)) => control_error(StatusCode::NOT_FOUND, &e),
        Err(e) => control_error(StatusCode::BAD_REQUEST, &e),
    }
}

/// Body of `POST /__emulator/users`.
#[derive(Deserialize)]
struct NewUser {
    username: String,
    #[serde(default)]
    id: Option<String>,
}

async fn add_user(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let user: NewUser = match parse_body(&body) {
        Ok(u) => u,
        Err(r) => return r.into_response(),
    };
    match shared.add_user(&user.username, user.id.as_deref()) {
        Ok(id) => (
            StatusCode::CREATED,
            Json(json!({"id": id, "username": user.username})),
        )
            .into_response(),
        Err(e) => control_error(StatusCode::BAD_REQUEST, &e),
    }
}

async fn expire_tokens(State(shared): State<Arc<Shared>>) -> StatusCode {
    shared.expire_tokens();
    StatusCode::NO_CONTENT
}

/// Body of `POST /__emulator/faults`: one fault or a list.
#[derive(Deserialize)]
#[serde(untagged)]
enum FaultBody {
    Many(Vec<Fault>),
    One(Fault),
}

async fn add_faults(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let faults = match parse_body(&body) {
        Ok(FaultBody::Many(list)) => list,
        Ok(FaultBody::One(fault)) => vec![fault],
        Err(r) => return r.into_response(),
    };
    let mut inner = shared.lock();
    for fault in faults {
        inner.faults.push(fault);
    }
    StatusCode::NO_CONTENT.into_response()
}

async fn pending_faults(State(shared): State<Arc<Shared>>) -> Json<Vec<Fault>> {
    Json(shared.lock().faults.pending())
}

async fn clear_faults(State(shared): State<Arc<Shared>>) -> StatusCode {
    shared.lock().faults.clear();
    StatusCode::NO_CONTENT
}

async fn stats(State(shared): State<Arc<Shared>>) -> Json<Stats> {
    Json(shared.stats())
}

/// Body of `PUT /__emulator/api-usage`.
#[derive(Deserialize)]
struct ApiUsage {
    used: u64,
}

async fn set_api_usage(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    match parse_body::<ApiUsage>(&body) {
        Ok(usage) => {
            shared.lock().usage.set_used(usage.used);
            StatusCode::NO_CONTENT.into_response()
        }
        Err(r) => r.into_response(),
    }
}

async fn list_apps(State(shared): State<Arc<Shared>>) -> Json<Vec<ConnectedApp>> {
    Json(shared.lock().apps.values().cloned().collect())
}

/// `PUT /__emulator/connected-apps/{consumer_key}`: the body is a connected
/// app whose `consumer_key` may be left out; unset settings take
/// Salesforce's defaults. Answers the app as stored.
async fn put_app(
    State(shared): State<Arc<Shared>>,
    Path(consumer_key): Path<String>,
    body: Bytes,
) -> Response {
    let mut fields: Value = match parse_body(&body) {
        Ok(v) => v,
        Err(r) => return r.into_response(),
    };
    let Some(map) = fields.as_object_mut() else {
        return control_error(
            StatusCode::BAD_REQUEST,
            &EmulatorError::Config("a connected app must be a JSON object".to_owned()),
        );
    };
    let body_key = map
        .get("consumer_key")
        .and_then(Value::as_str)
        .map(str::to_owned);
    if let Some(key) = body_key.filter(|key| *key != consumer_key) {
        return control_error(
            StatusCode::BAD_REQUEST,
            &EmulatorError::Config(format!(
                "the body's consumer_key {key:?} is not the one of the URL"
            )),
        );
    }
    map.insert("consumer_key".to_owned(), Value::String(consumer_key));
    let app: ConnectedApp = match serde_json::from_value(fields) {
        Ok(app) => app,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({"errorCode": "JSON_PARSER_ERROR", "message": e.to_string()})),
            )
                .into_response()
        }
    };
    match shared.register_app(app.clone()) {
        Ok(()) => Json(app).into_response(),
        Err(e) => control_error(StatusCode::BAD_REQUEST, &e),
    }
}

/// Body of `POST /__emulator/connected-apps/{consumer_key}/callback-urls`.
#[derive(Deserialize)]
struct CallbackUrl {
    url: String,
}

async fn add_callback_url(
    State(shared): State<Arc<Shared>>,
    Path(consumer_key): Path<String>,
    body: Bytes,
) -> Response {
    let callback: CallbackUrl = match parse_body(&body) {
        Ok(c) => c,
        Err(r) => return r.into_response(),
    };
    if !shared.lock().apps.contains_key(&consumer_key) {
        return control_error(
            StatusCode::NOT_FOUND,
            &EmulatorError::Config(format!(
                "no connected app has the consumer key {consumer_key:?}"
            )),
        );
    }
    match shared.add_callback_url(&consumer_key, &callback.url) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => control_error(StatusCode::BAD_REQUEST, &e),
    }
}

async fn get_browser(State(shared): State<Arc<Shared>>) -> Json<Browser> {
    Json(shared.lock().browser.clone())
}

async fn put_browser(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let browser: Browser = match parse_body(&body) {
        Ok(b) => b,
        Err(r) => return r.into_response(),
    };
    match shared.set_browser(browser) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => control_error(StatusCode::BAD_REQUEST, &e),
    }
}

/// The `/__emulator` routes.
pub(crate) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route(
            "/__emulator/sobjects/{sobject}",
            get(list_records).post(insert_record),
        )
        .route("/__emulator/users", post(add_user))
        .route("/__emulator/expire-tokens", post(expire_tokens))
        .route(
            "/__emulator/faults",
            post(add_faults).get(pending_faults).delete(clear_faults),
        )
        .route("/__emulator/connected-apps", get(list_apps))
        .route("/__emulator/connected-apps/{consumer_key}", put(put_app))
        .route(
            "/__emulator/connected-apps/{consumer_key}/callback-urls",
            post(add_callback_url),
        )
        .route("/__emulator/browser", get(get_browser).put(put_browser))
        .route("/__emulator/stats", get(stats))
        .route("/__emulator/api-usage", put(set_api_usage))
}
