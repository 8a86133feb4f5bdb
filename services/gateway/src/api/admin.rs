//! The admin HTTP API: provisioning of users, devices, groups and numbers,
//! and the auto-recording policies (F7) on numbers and groups.
//!
//! Mounted by the gateway under `/admin/v1`. Every route sits behind
//! [`AdminAuthLayer`], a tower layer that checks `Authorization: Bearer
//! <http.admin_token>` before any handler runs, so a handler can never forget
//! it. Without a configured token the API is closed (503), never open.
//!
//! Errors are RFC 9457 problems (`application/problem+json`) like the agent
//! API's, with a stable `code` and a `detail`, the status telling the class:
//! 400 bad input, 401 bad credentials, 404 unknown id, 409 duplicate, 503
//! API disabled.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Path, State};
use axum::http::{header, HeaderValue, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, put};
use axum::Router;
use futures::future::{Either, Ready};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tower::{Layer, Service};
use crate::api::problem::Problem;

use crate::directory::{
    Device, Directory, DirectoryError, Group, NewDevice, NewGroup, NewUser, Number, RecordingPolicies, User,
};

/// Builds the admin API over `directory`. `admin_token` is `http.admin_token`;
/// `None` keeps every route answering 503 so an unconfigured gateway is never
/// open to provisioning.
pub fn router(directory: Directory, realm: String, admin_token: Option<String>) -> Router {
    Router::new()
        .route("/users", get(list_users).post(create_user))
        .route("/users/{id}", get(get_user).delete(delete_user))
        .route("/users/{id}/role", put(set_user_role))
        .route("/users/{id}/caller-ids", get(caller_ids))
        .route("/devices", get(list_devices).post(create_device))
        .route("/devices/{id}", delete(delete_device))
        .route("/devices/{id}/credentials", put(set_credentials))
        .route("/groups", get(list_groups).post(create_group))
        .route("/groups/{id}", get(get_group).delete(delete_group))
        .route("/groups/{id}/members/{user_id}", put(add_group_member).delete(remove_group_member))
        .route("/groups/{id}/recording-policy", put(set_group_recording_policy))
        .route("/numbers", get(list_numbers))
        .route("/numbers/{number}", put(assign_number).delete(delete_number))
        .route("/numbers/{number}/recording-policy", put(set_number_recording_policy))
        .route("/recording-policies", get(list_recording_policies))
        .fallback(not_found)
        .with_state(directory)
        .layer(axum::Extension(Realm(realm)))
        .layer(AdminAuthLayer::new(admin_token))
}

/// An API error as the client sees it: an RFC 9457 problem (the agent
/// API's shape, [`Problem`]) with a stable `code` and a `detail` for people:
/// `invalid_argument`, `invalid_json`, `not_found`, `conflict`,
/// `unauthorized`, `admin_api_disabled`…
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into() }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        Problem::new(self.status, self.code, self.message).into_response()
    }
}

impl From<DirectoryError> for ApiError {
    fn from(e: DirectoryError) -> Self {
        match &e {
            DirectoryError::Invalid { .. } => Self::new(StatusCode::BAD_REQUEST, "invalid_argument", e.to_string()),
            DirectoryError::NotFound { .. } => Self::new(StatusCode::NOT_FOUND, "not_found", e.to_string()),
            DirectoryError::Conflict(_) => Self::new(StatusCode::CONFLICT, "conflict", e.to_string()),
            DirectoryError::Store(_) => {
                tracing::error!(error = %e, "admin API: directory store failed");
                metrics::counter!("switchboard_admin_store_errors_total").increment(1);
                Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "the directory store failed; see the gateway log")
            }
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        match r {
            JsonRejection::JsonSyntaxError(_) | JsonRejection::JsonDataError(_) => {
                Self::new(StatusCode::BAD_REQUEST, "invalid_json", r.body_text())
            }
            JsonRejection::MissingJsonContentType(_) => Self::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send the body as JSON with Content-Type: application/json",
            ),
            other => Self::new(other.status(), "invalid_body", other.body_text()),
        }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_query", r.body_text())
    }
}

/// `axum::Json` whose rejections are JSON errors in this API's shape.
#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
struct JsonBody<T>(T);

/// `axum::extract::Query` whose rejections are JSON errors in this API's shape.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
struct QueryParams<T>(T);

/// `GET /users`.
#[derive(Debug, Serialize, Deserialize)]
pub struct UserList {
    /// Oldest first.
    pub users: Vec<User>,
}

/// `GET /devices`.
#[derive(Debug, Serialize, Deserialize)]
pub struct DeviceList {
    /// Oldest first.
    pub devices: Vec<Device>,
}

/// `GET /numbers`.
#[derive(Debug, Serialize, Deserialize)]
pub struct NumberList {
    /// In lexical order of the number.
    pub numbers: Vec<Number>,
}

/// `GET /groups`.
#[derive(Debug, Serialize, Deserialize)]
pub struct GroupList {
    /// Oldest first.
    pub groups: Vec<Group>,
}

/// `GET /groups/{id}` and `PUT /groups/{id}/members/{user_id}`: the group's
/// fields and its members.
#[derive(Debug, Serialize, Deserialize)]
pub struct GroupDetail {
    /// The group (its fields sit at the top level of the JSON object).
    #[serde(flatten)]
    pub group: Group,
    /// The members in ring order.
    pub members: Vec<User>,
}

/// `GET /users/{id}/caller-ids`.
#[derive(Debug, Serialize, Deserialize)]
pub struct CallerIdList {
    /// The numbers the user may present: own numbers, then the numbers of
    /// the user's groups, then the main line. The first is the default.
    pub caller_ids: Vec<String>,
}

/// Body of `PUT /numbers/{number}`: exactly one owner, `user_id` or
/// `group_id`, and optionally whether the number is the company main line
/// (left as it is when absent). `{"main_line": …}` alone changes only the
/// main line flag of a provisioned number.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssignNumber {
    /// The user the number routes to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// The group the number routes to (every member rings).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_id: Option<String>,
    /// `true` makes this the main line (any other stops being it);
    /// `false` stops it being the main line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub main_line: Option<bool>,
}

/// Body of `PUT /numbers/{number}/recording-policy` and
/// `PUT /groups/{id}/recording-policy`: the admin auto-recording policy.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetRecordingPolicy {
    /// `true`: every call on the number, or for the group, is recorded for
    /// admins only; `false` ends the policy. Required.
    pub record_calls: bool,
}

/// Query of `GET /devices`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeviceFilter {
    user_id: Option<String>,
}

type ApiResult<T> = Result<T, ApiError>;

async fn create_user(State(dir): State<Directory>, JsonBody(new): JsonBody<NewUser>) -> ApiResult<Response> {
    let user = dir.create_user(new).await?;
    Ok(created(format!("users/{}", user.id), user))
}

async fn list_users(State(dir): State<Directory>) -> ApiResult<axum::Json<UserList>> {
    Ok(axum::Json(UserList { users: dir.list_users().await? }))
}

async fn get_user(State(dir): State<Directory>, Path(id): Path<String>) -> ApiResult<axum::Json<User>> {
    Ok(axum::Json(dir.get_user(&id).await?))
}

/// Body of `PUT /users/{id}/role`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetRole {
    /// `admin` or `agent`.
    pub role: crate::directory::Role,
}

async fn set_user_role(State(dir): State<Directory>, Path(id): Path<String>, JsonBody(body): JsonBody<SetRole>) -> ApiResult<axum::Json<User>> {
    Ok(axum::Json(dir.set_role(&id, body.role).await?))
}

async fn delete_user(State(dir): State<Directory>, Path(id): Path<String>) -> ApiResult<StatusCode> {
    dir.delete_user(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn caller_ids(State(dir): State<Directory>, Path(id): Path<String>) -> ApiResult<axum::Json<CallerIdList>> {
    Ok(axum::Json(CallerIdList { caller_ids: dir.entitled_numbers(&id).await? }))
}

async fn create_group(State(dir): State<Directory>, JsonBody(new): JsonBody<NewGroup>) -> ApiResult<Response> {
    let group = dir.create_group(new).await?;
    Ok(created(format!("groups/{}", group.id), group))
}

async fn list_groups(State(dir): State<Directory>) -> ApiResult<axum::Json<GroupList>> {
    Ok(axum::Json(GroupList { groups: dir.list_groups().await? }))
}

async fn get_group(State(dir): State<Directory>, Path(id): Path<String>) -> ApiResult<axum::Json<GroupDetail>> {
    Ok(axum::Json(group_detail(&dir, &id).await?))
}

async fn delete_group(State(dir): State<Directory>, Path(id): Path<String>) -> ApiResult<StatusCode> {
    dir.delete_group(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn add_group_member(
    State(dir): State<Directory>,
    Path((id, user_id)): Path<(String, String)>,
) -> ApiResult<axum::Json<GroupDetail>> {
    dir.add_group_member(&id, &user_id).await?;
    Ok(axum::Json(group_detail(&dir, &id).await?))
}

async fn remove_group_member(
    State(dir): State<Directory>,
    Path((id, user_id)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    dir.remove_group_member(&id, &user_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn group_detail(dir: &Directory, id: &str) -> Result<GroupDetail, DirectoryError> {
    let group = dir.get_group(id).await?;
    let members = dir.group_members(id).await?;
    Ok(GroupDetail { group, members })
}

async fn create_device(State(dir): State<Directory>, JsonBody(new): JsonBody<NewDevice>) -> ApiResult<Response> {
    let device = dir.create_device(new).await?;
    Ok(created(format!("devices/{}", device.id), device))
}

async fn list_devices(
    State(dir): State<Directory>,
    QueryParams(filter): QueryParams<DeviceFilter>,
) -> ApiResult<axum::Json<DeviceList>> {
    Ok(axum::Json(DeviceList { devices: dir.list_devices(filter.user_id.as_deref()).await? }))
}

/// The digest realm device credentials are bound to (`sip.realm`).
#[derive(Clone)]
struct Realm(String);

/// Body of `PUT /devices/{id}/credentials`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetCredentials {
    /// The SIP username the device authenticates as; unique.
    pub sip_username: String,
    /// The password; 12 characters or more. Only its hashes are stored.
    pub sip_password: String,
}

async fn set_credentials(
    State(dir): State<Directory>,
    axum::Extension(Realm(realm)): axum::Extension<Realm>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<SetCredentials>,
) -> ApiResult<StatusCode> {
    dir.set_device_credentials(&id, &body.sip_username, &body.sip_password, &realm).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn delete_device(State(dir): State<Directory>, Path(id): Path<String>) -> ApiResult<StatusCode> {
    dir.delete_device(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn assign_number(
    State(dir): State<Directory>,
    Path(number): Path<String>,
    JsonBody(body): JsonBody<AssignNumber>,
) -> ApiResult<axum::Json<Number>> {
    let mut number_now = match (&body.user_id, &body.group_id) {
        (Some(_), Some(_)) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_argument",
                "give user_id or group_id, not both: a number has one owner",
            ))
        }
        (Some(user_id), None) => Some(dir.assign_number(&number, user_id).await?),
        (None, Some(group_id)) => Some(dir.assign_number_to_group(&number, group_id).await?),
        (None, None) => None,
    };
    if let Some(main_line) = body.main_line {
        number_now = Some(dir.set_main_line(&number, main_line).await?);
    }
    number_now.map(axum::Json).ok_or_else(|| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_argument",
            "user_id or group_id is required: the user or group the number routes to",
        )
    })
}

/// Answers the number as `GET /numbers` lists it.
async fn set_number_recording_policy(
    State(dir): State<Directory>,
    Path(number): Path<String>,
    JsonBody(body): JsonBody<SetRecordingPolicy>,
) -> ApiResult<axum::Json<Number>> {
    Ok(axum::Json(dir.set_number_recording_policy(&number, body.record_calls).await?))
}

/// Answers the group as `GET /groups/{id}` does.
async fn set_group_recording_policy(
    State(dir): State<Directory>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<SetRecordingPolicy>,
) -> ApiResult<axum::Json<GroupDetail>> {
    dir.set_group_recording_policy(&id, body.record_calls).await?;
    Ok(axum::Json(group_detail(&dir, &id).await?))
}

async fn list_recording_policies(State(dir): State<Directory>) -> ApiResult<axum::Json<RecordingPolicies>> {
    Ok(axum::Json(dir.recording_policies().await?))
}

async fn list_numbers(State(dir): State<Directory>) -> ApiResult<axum::Json<NumberList>> {
    Ok(axum::Json(NumberList { numbers: dir.list_numbers().await? }))
}

async fn delete_number(State(dir): State<Directory>, Path(number): Path<String>) -> ApiResult<StatusCode> {
    dir.delete_number(&number).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such admin API route")
}

/// 201 with a `Location` relative to the API root (`/admin/v1/`).
fn created<T: Serialize>(location: String, body: T) -> Response {
    let mut response = (StatusCode::CREATED, axum::Json(body)).into_response();
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

/// Tower layer guarding the admin API with the configured bearer token.
///
/// The token is kept only as its SHA-256 digest and the presented token is
/// hashed the same way before a constant-time comparison, so neither the
/// content nor the length of the secret leaks through response timing.
#[derive(Clone)]
pub struct AdminAuthLayer {
    expected: Option<Arc<[u8; 32]>>,
}

impl AdminAuthLayer {
    /// `None` disables the API: every request gets 503 `admin_api_disabled`.
    pub fn new(admin_token: Option<String>) -> Self {
        Self { expected: admin_token.map(|t| Arc::new(digest(t.as_bytes()))) }
    }
}

impl<S> Layer<S> for AdminAuthLayer {
    type Service = AdminAuth<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AdminAuth { inner, expected: self.expected.clone() }
    }
}

/// The service [`AdminAuthLayer`] wraps around the routes.
#[derive(Clone)]
pub struct AdminAuth<S> {
    inner: S,
    expected: Option<Arc<[u8; 32]>>,
}

impl<S, B> Service<Request<B>> for AdminAuth<S>
where
    S: Service<Request<B>, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Either<Ready<Result<Response, Infallible>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        match check(self.expected.as_deref(), request.headers().get(header::AUTHORIZATION)) {
            Ok(()) => Either::Right(self.inner.call(request)),
            Err(rejection) => Either::Left(futures::future::ready(Ok(rejection.into_response()))),
        }
    }
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// Compares two digests without an early exit.
fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let diff = a.iter().zip(b.iter()).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// Why [`AdminAuth`] turned a request away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rejection {
    /// No admin token is configured.
    Disabled,
    /// No bearer token, or the wrong one.
    Unauthorized,
}

impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        match self {
            Rejection::Disabled => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "admin_api_disabled",
                "set http.admin_token to enable the admin API",
            )
            .into_response(),
            Rejection::Unauthorized => {
                let mut response = ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "send the admin token as Authorization: Bearer <http.admin_token>",
                )
                .into_response();
                response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                response
            }
        }
    }
}

fn check(expected: Option<&[u8; 32]>, authorization: Option<&HeaderValue>) -> Result<(), Rejection> {
    let Some(expected) = expected else {
        metrics::counter!("switchboard_admin_requests_rejected_total", "reason" => "disabled").increment(1);
        return Err(Rejection::Disabled);
    };
    let presented = authorization
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    match presented {
        Some(token) if constant_time_eq(&digest(token.as_bytes()), expected) => Ok(()),
        other => {
            let reason = if other.is_some() { "bad_token" } else { "no_token" };
            metrics::counter!("switchboard_admin_requests_rejected_total", "reason" => reason).increment(1);
            tracing::warn!(reason, "admin API request rejected");
            Err(Rejection::Unauthorized)
        }
    }
}
