//! Single-record REST resources under `/services/data/vNN.0/`: the version
//! list and resource directory, limits, describe, create, read, update and
//! delete by id, and read and upsert by external id.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use chrono::Utc;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::errors::{ApiError, WriteError};
use crate::ids;
use crate::schema::ObjectType;
use crate::session::Caller;
use crate::state::Shared;
use crate::store::Writer;

/// First API version whose upsert answers an update with 200 and `created`.
pub(crate) const UPSERT_CREATED_FLAG_SINCE: u32 = 46;

/// Reads a request body that must be one JSON object (a record).
pub(crate) fn parse_object(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    match parse_json(body)? {
        Value::Object(map) => Ok(map),
        other => Err(ApiError::json_parser(format!(
            "Cannot deserialize instance of SObject from {} value or request may be missing a required field",
            token_name(&other)
        ))),
    }
}

/// Reads a JSON request body, answering `JSON_PARSER_ERROR` as Salesforce does.
pub(crate) fn parse_json(body: &[u8]) -> Result<Value, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::json_parser(
            "No content to map due to end-of-input at [line:1, column:0]",
        ));
    }
    serde_json::from_slice(body).map_err(|e| {
        ApiError::json_parser(format!(
            "Unexpected character in the request body at [line:{}, column:{}]",
            e.line(),
            e.column()
        ))
    })
}

fn token_name(value: &Value) -> &'static str {
    match value {
        Value::Array(_) => "START_ARRAY",
        Value::Object(_) => "START_OBJECT",
        Value::String(_) => "VALUE_STRING",
        Value::Number(_) => "VALUE_NUMBER_INT",
        Value::Bool(_) => "VALUE_TRUE",
        Value::Null => "VALUE_NULL",
    }
}

/// Looks an object up for a URL, answering 404 `NOT_FOUND` for unknown names.
pub(crate) fn object<'a>(shared: &'a Shared, name: &str) -> Result<&'a ObjectType, ApiError> {
    shared.schema.object(name).ok_or_else(ApiError::not_found)
}

/// 404 for an upsert or read by a field that is not an external id.
fn not_external_id(field: &str) -> ApiError {
    ApiError::plain(
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
        format!("Provided external ID field does not exist or is not accessible: {field}"),
    )
}

/// Checks that every external id value in a body is free of injected record
/// faults; the first one found fails the write.
pub(crate) fn record_fault(
    shared: &Shared,
    object: &ObjectType,
    body: &Map<String, Value>,
) -> Option<WriteError> {
    let mut inner = shared.lock();
    body.iter()
        .filter(|(name, _)| object.field(name).is_some_and(|f| f.external_id))
        .filter_map(|(_, v)| external_id_text(v))
        .find_map(|value| inner.faults.take_record_error(&value))
        .map(WriteError::Record)
}

/// An external id value from a body as the text used to match faults.
pub(crate) fn external_id_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// `GET /services/data/`: the versions the org serves.
pub(crate) async fn versions(State(shared): State<Arc<Shared>>) -> Json<Value> {
    let list: Vec<Value> = shared
        .api_versions
        .iter()
        .map(|v| json!({"label": release_label(*v), "url": format!("/services/data/v{v}.0"), "version": format!("{v}.0")}))
        .collect();
    Json(Value::Array(list))
}

/// The release name of an API version: 45.0 was Spring '19, and three
/// releases (Spring, Summer, Winter of the next year) follow per year.
fn release_label(version: u32) -> String {
    let step = i64::from(version) - 45;
    let season = ["Spring", "Summer", "Winter"][step.rem_euclid(3) as usize];
    let year = 19 + step.div_euclid(3) + i64::from(season == "Winter");
    format!("{season} '{:02}", year.rem_euclid(100))
}

/// `GET /services/data/vNN.0/`: the resource directory.
pub(crate) async fn resources(Extension(caller): Extension<Caller>) -> Json<Value> {
    let base = format!("/services/data/v{}.0", caller.version);
    Json(json!({
        "sobjects": format!("{base}/sobjects"),
        "query": format!("{base}/query"),
        "search": format!("{base}/search"),
        "composite": format!("{base}/composite"),
        "limits": format!("{base}/limits"),
    }))
}

/// `GET /services/data/vNN.0/limits`.
pub(crate) async fn limits(State(shared): State<Arc<Shared>>) -> Json<Value> {
    let mut inner = shared.lock();
    let used = inner.usage.used();
    let max = inner.usage.limit;
    Json(json!({"DailyApiRequests": {"Max": max, "Remaining": max.saturating_sub(used)}}))
}

/// `GET /services/data/vNN.0/sobjects`: the global describe.
pub(crate) async fn sobjects(
    State(shared): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
) -> Json<Value> {
    let list: Vec<Value> = shared
        .schema
        .objects()
        .iter()
        .map(|o| {
            json!({
                "name": o.name, "label": o.label, "keyPrefix": o.key_prefix, "custom": false,
                "createable": true, "updateable": true, "queryable": true,
                "urls": {"sobject": format!("/services/data/v{}.0/sobjects/{}", caller.version, o.name)},
            })
        })
        .collect();
    Json(json!({"encoding": "UTF-8", "maxBatchSize": 200, "sobjects": list}))
}

/// Path of `/sobjects/{sobject}`.
#[derive(Deserialize)]
pub(crate) struct ObjectPath {
    sobject: String,
}

/// `GET /sobjects/{sobject}`: basic information.
pub(crate) async fn object_info(
    State(shared): State<Arc<Shared>>,
    Path(path): Path<ObjectPath>,
) -> Result<Json<Value>, ApiError> {
    let object = object(&shared, &path.sobject)?;
    let info = json!({"name": object.name, "label": object.label, "keyPrefix": object.key_prefix});
    Ok(Json(json!({"objectDescribe": info, "recentItems": []})))
}

/// `POST /sobjects/{sobject}`: creates a record; 201 with its id.
pub(crate) async fn create(
    State(shared): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    Path(path): Path<ObjectPath>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let object = object(&shared, &path.sobject)?;
    let body = parse_object(&body)?;
    if let Some(e) = record_fault(&shared, object, &body) {
        return Err(ApiError::from_write(e, caller.version, object.name));
    }
    let writer = Writer {
        user_id: &caller.user_id,
        now: Utc::now(),
    };
    let result = shared
        .lock()
        .store
        .create(&shared.schema, object, &body, writer);
    let id = result.map_err(|e| ApiError::from_write(e, caller.version, object.name))?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"id": id, "success": true, "errors": []})),
    )
        .into_response())
}

/// Path of `/sobjects/{sobject}/{id}`.
#[derive(Deserialize)]
pub(crate) struct RecordPath {
    sobject: String,
    id: String,
}

/// `?fields=A,B` on reads.
#[derive(Deserialize)]
pub(crate) struct FieldsQuery {
    fields: Option<String>,
}

/// `GET /sobjects/{sobject}/{id}` (and `/sobjects/{sobject}/describe`).
pub(crate) async fn read(
    State(shared): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    Path(path): Path<RecordPath>,
    Query(query): Query<FieldsQuery>,
) -> Result<Json<Value>, ApiError> {
    let object = object(&shared, &path.sobject)?;
    if path.id == "describe" {
        return Ok(Json(object.describe()));
    }
    let id = ids::normalize(&path.id).ok_or_else(|| not_external_id(&path.id))?;
    let inner = shared.lock();
    let record = inner
        .store
        .get(object.name, &id)
        .filter(|r| inner.can_read(&shared.default_user_id, &caller.user_id, object.name, r))
        .ok_or_else(ApiError::not_found)?;
    select_fields(
        object,
        record.to_json(object, caller.version),
        query.fields.as_deref(),
    )
    .map(Json)
}

/// Keeps only the `fields` a read asked for (plus `attributes`).
fn select_fields(
    object: &ObjectType,
    record: Value,
    fields: Option<&str>,
) -> Result<Value, ApiError> {
    let Some(list) = fields.filter(|f| !f.trim().is_empty()) else {
        return Ok(record);
    };
    let Value::Object(full) = record else {
        return Ok(record);
    };
    let mut out = Map::new();
    if let Some(attributes) = full.get("attributes") {
        out.insert("attributes".to_owned(), attributes.clone());
    }
    for name in list.split(',').map(str::trim) {
        let field = object.field(name).ok_or_else(|| {
            ApiError::plain(
                StatusCode::BAD_REQUEST,
                "INVALID_FIELD",
                format!("No such column '{name}' on sobject of type {}", object.name),
            )
        })?;
        out.insert(
            field.name.clone(),
            full.get(&field.name).cloned().unwrap_or(Value::Null),
        );
    }
    Ok(Value::Object(out))
}

/// `PATCH /sobjects/{sobject}/{id}`: updates a record; 204.
pub(crate) async fn update(
    State(shared): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    Path(path): Path<RecordPath>,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    let object = object(&shared, &path.sobject)?;
    let id = ids::normalize(&path.id).ok_or_else(|| not_external_id(&path.id))?;
    let body = parse_object(&body)?;
    if let Some(e) = record_fault(&shared, object, &body) {
        return Err(ApiError::from_write(e, caller.version, object.name));
    }
    let writer = Writer {
        user_id: &caller.user_id,
        now: Utc::now(),
    };
    let result = shared
        .lock()
        .store
        .update(&shared.schema, object, &id, &body, writer);
    result.map_err(|e| ApiError::from_write(e, caller.version, object.name))?;
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE /sobjects/{sobject}/{id}`: 204.
pub(crate) async fn delete(
    State(shared): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    Path(path): Path<RecordPath>,
) -> Result<StatusCode, ApiError> {
    let object = object(&shared, &path.sobject)?;
    let id = ids::normalize(&path.id).ok_or_else(ApiError::not_found)?;
    let result = shared.lock().store.delete(object, &id);
    result.map_err(|e| ApiError::from_write(e, caller.version, object.name))?;
    Ok(StatusCode::NO_CONTENT)
}

/// Path of `/sobjects/{sobject}/{field}/{value}` (the router names the field
/// segment `id`, as the by-id route has a parameter in the same place).
#[derive(Deserialize)]
pub(crate) struct ExternalIdPath {
    sobject: String,
    #[serde(rename = "id")]
    field: String,
    value: String,
}

/// `GET /sobjects/{sobject}/{field}/{value}`: reads by external id.
pub(crate) async fn read_by_external_id(
    State(shared): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    Path(path): Path<ExternalIdPath>,
    Query(query): Query<FieldsQuery>,
) -> Result<Json<Value>, ApiError> {
    let object = object(&shared, &path.sobject)?;
    let field = object
        .field(&path.field)
        .filter(|f| f.external_id)
        .ok_or_else(|| not_external_id(&path.field))?;
    let inner = shared.lock();
    let matches =
        inner
            .store
            .find_by_field(object.name, &field.name, &Value::String(path.value.clone()));
    match matches.as_slice() {
        [] => Err(ApiError::not_found()),
        [id] => {
            let record = inner
                .store
                .get(object.name, id)
                .ok_or_else(ApiError::not_found)?;
            select_fields(
                object,
                record.to_json(object, caller.version),
                query.fields.as_deref(),
            )
            .map(Json)
        }
        _ => Err(ApiError::from_write(
            WriteError::MultipleMatches(matches),
            caller.version,
            object.name,
        )),
    }
}

/// `PATCH /sobjects/{sobject}/{field}/{value}`: upsert by external id. 201
/// with `created: true` on create; on update 200 with `created: false` from
/// API 46.0, 204 without body before.
pub(crate) async fn upsert(
    State(shared): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    Path(path): Path<ExternalIdPath>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let object = object(&shared, &path.sobject)?;
    let field = object
        .field(&path.field)
        .filter(|f| f.external_id)
        .ok_or_else(|| not_external_id(&path.field))?;
    let body = parse_object(&body)?;
    let fault = shared.lock().faults.take_record_error(&path.value);
    if let Some(e) = fault {
        return Err(ApiError::record(&e));
    }
    let writer = Writer {
        user_id: &caller.user_id,
        now: Utc::now(),
    };
    let result = shared.lock().store.upsert(
        &shared.schema,
        object,
        &field.name,
        &path.value,
        &body,
        writer,
    );
    let (id, created) = result.map_err(|e| ApiError::from_write(e, caller.version, object.name))?;
    let modern = caller.version >= UPSERT_CREATED_FLAG_SINCE;
    let response = match (created, modern) {
        (true, true) => (
            StatusCode::CREATED,
            Json(json!({"id": id, "success": true, "errors": [], "created": true})),
        )
            .into_response(),
        (true, false) => (
            StatusCode::CREATED,
            Json(json!({"id": id, "success": true, "errors": []})),
        )
            .into_response(),
        (false, true) => (
            StatusCode::OK,
            Json(json!({"id": id, "success": true, "errors": [], "created": false})),
        )
            .into_response(),
        (false, false) => StatusCode::NO_CONTENT.into_response(),
    };
    Ok(response)
}

/// Answer for a path under `/services/data` that names no resource.
pub(crate) async fn no_resource() -> ApiError {
    ApiError::not_found()
}

/// Answer for a known resource called with a method it does not support.
pub(crate) async fn method_not_allowed(method: Method) -> ApiError {
    ApiError::plain(
        StatusCode::METHOD_NOT_ALLOWED,
        "METHOD_NOT_ALLOWED",
        format!("HTTP Method '{method}' not allowed."),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn release_labels_follow_salesforce_naming() {
        assert_eq!(release_label(45), "Spring '19");
        assert_eq!(release_label(47), "Winter '20");
        assert_eq!(release_label(60), "Spring '24");
        assert_eq!(release_label(62), "Winter '25");
    }

    #[test]
    fn bodies_must_be_json_objects() {
        assert!(parse_object(br#"{"Subject":"x"}"#).is_ok());
        for bad in [&b""[..], b"  ", b"{", b"[1]", b"\"s\""] {
            let err = parse_object(bad).expect_err("must fail");
            assert_eq!(err.body[0]["errorCode"], "JSON_PARSER_ERROR");
        }
    }
}
