//! Who a token acts for: the OpenID Connect UserInfo endpoint,
//! `GET`/`POST /services/oauth2/userinfo`, and the identity URL of the token
//! answers' `id`, `GET /id/{org id}/{user id}`.
//!
//! Both take the access token as `Authorization: Bearer …` (or `OAuth …`) or
//! as the `oauth_token` parameter, and answer JSON in Salesforce's shapes:
//! UserInfo with the OpenID Connect claims (`sub` is the identity URL) plus
//! `user_id`, `organization_id` (18 characters), `urls`, `active`,
//! `user_type` and the rest; the identity URL with Salesforce's own names
//! (`id`, `username`, `display_name`, `first_name`…). The optional `version`
//! parameter (`62.0` or `latest`) fills the `{version}` of the `urls`.
//!
//! Errors are those the identity service documents: the status and the bare
//! error name as plain text.
//!
//! | status | body | situation |
//! |---|---|---|
//! | 403 | `Missing_OAuth_Token` | no token |
//! | 403 | `Bad_OAuth_Token` | unknown, expired or revoked token |
//! | 403 | `Wrong_Org` | identity URL of another org |
//! | 404 | `Bad_Id` | identity URL whose user id is malformed or no user's |
//! | 404 | `Inactive` | the user is deactivated |
//! | 404 | `No_Access` | identity URL of another user, with a token without `api` or `full` |
//! | 406 | `Invalid_Version` | a `version` the org does not serve |
//!
//! Unlike Salesforce, the emulator does not check that the token has an
//! identity scope (`id`, `openid`, `profile`…): any valid token may ask.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use crate::ids;
use crate::oauth::parameters;
use crate::session::bearer;
use crate::state::{Session, Shared};
use crate::store::Record;
use crate::validation::DATETIME_FORMAT;
use crate::web_server::identity_url;

/// An identity service error: a status and its name as the body.
struct IdentityError(StatusCode, &'static str);

impl IntoResponse for IdentityError {
    fn into_response(self) -> Response {
        (
            self.0,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            self.1,
        )
            .into_response()
    }
}

/// The facts of a user both answers (and ID tokens) are made of.
pub(crate) struct User {
    pub id: String,
    pub username: String,
    pub first_name: Option<String>,
    pub last_name: String,
    pub name: String,
    pub email: String,
    pub active: bool,
    /// `LastModifiedDate`.
    pub modified: Option<DateTime<Utc>>,
}

impl User {
    pub(crate) fn from_record(record: &Record) -> User {
        let text = |name: &str| {
            record
                .fields
                .get(name)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        };
        let username = text("Username").unwrap_or_default();
        User {
            id: record.id().to_owned(),
            first_name: text("FirstName"),
            last_name: text("LastName").unwrap_or_default(),
            name: text("Name").unwrap_or_else(|| username.clone()),
            email: text("Email").unwrap_or_else(|| username.clone()),
            active: record.is_active_user(),
            modified: text("LastModifiedDate")
                .and_then(|raw| DateTime::parse_from_str(&raw, DATETIME_FORMAT).ok())
                .map(|at| at.with_timezone(&Utc)),
            username,
        }
    }

    /// The nickname Salesforce derives from the username.
    pub(crate) fn nickname(&self) -> &str {
        self.username.split('@').next().unwrap_or(&self.username)
    }
}

/// The caller's session, from the header or the `oauth_token` parameter.
fn session(
    shared: &Shared,
    headers: &HeaderMap,
    params: &HashMap<String, String>,
) -> Result<Session, IdentityError> {
    let token = bearer(headers)
        .map(str::to_owned)
        .or_else(|| params.get("oauth_token").cloned())
        .filter(|t| !t.is_empty())
        .ok_or(IdentityError(StatusCode::FORBIDDEN, "Missing_OAuth_Token"))?;
    let now = Instant::now();
    shared
        .lock()
        .sessions
        .get(&token)
        .filter(|s| s.expires_at > now)
        .cloned()
        .ok_or(IdentityError(StatusCode::FORBIDDEN, "Bad_OAuth_Token"))
}

/// The `version` parameter as the text to put into `urls`.
fn version(shared: &Shared, params: &HashMap<String, String>) -> Result<String, IdentityError> {
    let newest = shared.api_versions.iter().copied().max().unwrap_or(62);
    match params.get("version").map(String::as_str) {
        None | Some("") => Ok("{version}".to_owned()),
        Some("latest") => Ok(format!("{newest}.0")),
        Some(v) => v
            .strip_suffix(".0")
            .and_then(|major| major.parse::<u32>().ok())
            .filter(|major| shared.api_versions.contains(major))
            .map(|major| format!("{major}.0"))
            .ok_or(IdentityError(StatusCode::NOT_ACCEPTABLE, "Invalid_Version")),
    }
}

/// The user of `id`, active.
fn user(shared: &Shared, id: &str) -> Result<User, IdentityError> {
    let inner = shared.lock();
    let record = ids::normalize(id)
        .and_then(|id| inner.store.get("User", &id))
        .ok_or(IdentityError(StatusCode::NOT_FOUND, "Bad_Id"))?;
    let user = User::from_record(record);
    if user.active {
        Ok(user)
    } else {
        Err(IdentityError(StatusCode::NOT_FOUND, "Inactive"))
    }
}

/// The `urls` map: the org's API endpoints for this user.
fn urls(shared: &Shared, user_id: &str, version: &str) -> Value {
    let base = &shared.base_url;
    let org = &shared.org_id;
    json!({
        "enterprise": format!("{base}/services/Soap/c/{version}/{org}"),
        "metadata": format!("{base}/services/Soap/m/{version}/{org}"),
        "partner": format!("{base}/services/Soap/u/{version}/{org}"),
        "rest": format!("{base}/services/data/v{version}/"),
        "sobjects": format!("{base}/services/data/v{version}/sobjects/"),
        "search": format!("{base}/services/data/v{version}/search/"),
        "query": format!("{base}/services/data/v{version}/query/"),
        "recent": format!("{base}/services/data/v{version}/recent/"),
        "tooling_soap": format!("{base}/services/Soap/T/{version}/{org}"),
        "tooling_rest": format!("{base}/services/data/v{version}/tooling/"),
        "profile": format!("{base}/{user_id}"),
        "feeds": format!("{base}/services/data/v{version}/chatter/feeds"),
        "groups": format!("{base}/services/data/v{version}/chatter/groups"),
        "users": format!("{base}/services/data/v{version}/chatter/users"),
        "feed_items": format!("{base}/services/data/v{version}/chatter/feed-items"),
        "feed_elements": format!("{base}/services/data/v{version}/chatter/feed-elements"),
        "custom_domain": base,
    })
}

fn photos(shared: &Shared) -> Value {
    json!({
        "picture": format!("{}/profilephoto/005/F", shared.base_url),
        "thumbnail": format!("{}/profilephoto/005/T", shared.base_url),
    })
}

/// `GET`/`POST /services/oauth2/userinfo`.
pub(crate) async fn userinfo(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
) -> Response {
    let params = parameters(&uri, &body);
    let answer = || -> Result<Value, IdentityError> {
        let session = session(&shared, &headers, &params)?;
        let version = version(&shared, &params)?;
        let user = user(&shared, &session.user_id)?;
        let photos = photos(&shared);
        Ok(json!({
            "sub": identity_url(&shared, &user.id),
            "user_id": user.id,
            "organization_id": shared.org_id,
            "preferred_username": user.username,
            "nickname": user.nickname(),
            "name": user.name,
            "email": user.email,
            "email_verified": true,
            "given_name": user.first_name,
            "family_name": user.last_name,
            "zoneinfo": "America/Los_Angeles",
            "photos": photos,
            "profile": format!("{}/{}", shared.base_url, user.id),
            "picture": photos["picture"],
            "address": {},
            "is_salesforce_integration_user": false,
            "urls": urls(&shared, &user.id, &version),
            "active": true,
            "user_type": "STANDARD",
            "language": "en_US",
            "locale": "en_US",
            "utcOffset": -28_800_000,
            "updated_at": user.modified.map(|at| at.format("%Y-%m-%dT%H:%M:%SZ").to_string()),
            "is_app_installed": true,
        }))
    };
    match answer() {
        Ok(body) => Json(body).into_response(),
        Err(e) => e.into_response(),
    }
}

/// `GET /id/{org id}/{user id}`.
pub(crate) async fn identity(
    State(shared): State<Arc<Shared>>,
    Path((org, user_id)): Path<(String, String)>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    let params = parameters(&uri, &[]);
    let answer = || -> Result<Value, IdentityError> {
        let session = session(&shared, &headers, &params)?;
        if ids::normalize(&org).as_deref() != Some(shared.org_id.as_str()) {
            return Err(IdentityError(StatusCode::FORBIDDEN, "Wrong_Org"));
        }
        let version = version(&shared, &params)?;
        let user = user(&shared, &user_id)?;
        if user.id != session.user_id && !session.rest_allowed() {
            return Err(IdentityError(StatusCode::NOT_FOUND, "No_Access"));
        }
        let asserted = user.id == session.user_id;
        Ok(json!({
            "id": identity_url(&shared, &user.id),
            "asserted_user": asserted,
            "user_id": user.id,
            "organization_id": shared.org_id,
            "username": user.username,
            "nick_name": user.nickname(),
            "display_name": user.name,
            "email": user.email,
            "email_verified": true,
            "first_name": user.first_name,
            "last_name": user.last_name,
            "timezone": "America/Los_Angeles",
            "photos": photos(&shared),
            "addr_street": null,
            "addr_city": null,
            "addr_state": null,
            "addr_country": null,
            "addr_zip": null,
            "mobile_phone": null,
            "mobile_phone_verified": false,
            "is_lightning_login_user": false,
            "status": {"created_date": null, "body": null},
            "urls": urls(&shared, &user.id, &version),
            "active": true,
            "user_type": "STANDARD",
            "language": "en_US",
            "locale": "en_US",
            "utcOffset": -28_800_000,
            "last_modified_date": user.modified.map(|at| at.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()),
            "is_app_installed": true,
        }))
    };
    match answer() {
        Ok(body) => Json(body).into_response(),
        Err(e) => e.into_response(),
    }
}
