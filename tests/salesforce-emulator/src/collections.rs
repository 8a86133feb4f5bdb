//! sObject Collections: up to 200 records per request, each with its own
//! result. `POST /composite/sobjects` creates, `PATCH /composite/sobjects`
//! updates by id, and `PATCH /composite/sobjects/{SObject}/{ExtIdField}`
//! (API 46.0 and later) upserts by external id.
//!
//! A well-formed request answers 200 with one result per record, in order;
//! failed records carry `errors` entries with `statusCode` (not `errorCode`).
//! With `allOrNone` a single failure rolls every record back and the records
//! that would have succeeded report `ALL_OR_NONE_OPERATION_ROLLED_BACK`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use chrono::Utc;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::errors::{ApiError, RecordError, WriteError};
use crate::ids;
use crate::rest::{external_id_text, object, parse_object, record_fault};
use crate::schema::ObjectType;
use crate::session::Caller;
use crate::state::Shared;
use crate::store::{Store, Writer};

/// Most records one collection request may carry.
pub const MAX_RECORDS: usize = 200;

/// First API version with collection create and update.
const COLLECTIONS_SINCE: u32 = 42;

/// First API version with collection upsert.
const UPSERT_SINCE: u32 = 46;

/// The outcome of one record.
enum Outcome {
    Ok { id: String, created: Option<bool> },
    Failed(RecordError),
}

/// A parsed collection request.
struct CollectionRequest {
    all_or_none: bool,
    records: Vec<Map<String, Value>>,
}

fn parse_request(body: &[u8]) -> Result<CollectionRequest, ApiError> {
    let body = parse_object(body)?;
    let all_or_none = match body.get("allOrNone") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(other) => {
            return Err(ApiError::json_parser(format!(
                "Cannot deserialize instance of boolean from {other} value or request may be missing a required field"
            )))
        }
    };
    let records = match body.get("records") {
        Some(Value::Array(items)) => items,
        _ => {
            return Err(ApiError::plain(
                StatusCode::BAD_REQUEST,
                "INVALID_INPUT",
                "An sObject Collections request needs a records array",
            ))
        }
    };
    if records.len() > MAX_RECORDS {
        return Err(ApiError::plain(
            StatusCode::BAD_REQUEST,
            "EXCEEDED_ID_LIMIT",
            format!("record limit reached. cannot submit more than {MAX_RECORDS} records into this call"),
        ));
    }
    let records = records
        .iter()
        .map(|r| match r {
            Value::Object(map) => Ok(map.clone()),
            other => Err(ApiError::json_parser(format!(
                "Cannot deserialize instance of SObject from {other} value or request may be missing a required field"
            ))),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(CollectionRequest {
        all_or_none,
        records,
    })
}

/// The `attributes.type` of a record, required on every record.
fn record_type(record: &Map<String, Value>) -> Result<&str, ApiError> {
    record
        .get("attributes")
        .and_then(|a| a.get("type"))
        .and_then(Value::as_str)
        .ok_or_else(|| {
            ApiError::plain(
                StatusCode::BAD_REQUEST,
                "INVALID_INPUT",
                "Each record of an sObject Collections request needs attributes with a type",
            )
        })
}

/// Runs `apply` for every record on a copy of the store, then commits the
/// copy unless a record could not be read (400 for the whole request) or
/// `allOrNone` is set and a record failed.
fn run(
    shared: &Shared,
    request: &CollectionRequest,
    mut apply: impl FnMut(&mut Store, &Map<String, Value>) -> Result<(String, Option<bool>), WriteError>,
    pre_failed: &HashMap<usize, RecordError>,
) -> Result<Json<Value>, ApiError> {
    let mut inner = shared.lock();
    let mut work = inner.store.clone();
    let mut outcomes = Vec::with_capacity(request.records.len());
    for (index, record) in request.records.iter().enumerate() {
        if let Some(error) = pre_failed.get(&index) {
            outcomes.push(Outcome::Failed(error.clone()));
            continue;
        }
        let outcome = match apply(&mut work, record) {
            Ok((id, created)) => Outcome::Ok { id, created },
            Err(WriteError::Parse(message)) => return Err(ApiError::json_parser(message)),
            Err(WriteError::Record(e)) => Outcome::Failed(e),
            Err(WriteError::NotFound) => Outcome::Failed(RecordError::new(
                "INVALID_CROSS_REFERENCE_KEY",
                "invalid cross reference id",
                &[],
            )),
            Err(WriteError::MultipleMatches(ids)) => Outcome::Failed(RecordError::new(
                "DUPLICATE_EXTERNAL_ID",
                format!(
                    "more than one record found for external id field: [{}]",
                    ids.join(", ")
                ),
                &[],
            )),
        };
        outcomes.push(outcome);
    }
    let any_failed = outcomes.iter().any(|o| matches!(o, Outcome::Failed(_)));
    let rolled_back = request.all_or_none && any_failed;
    if !rolled_back {
        inner.store = work;
    }
    let results: Vec<Value> = outcomes
        .into_iter()
        .map(|outcome| match outcome {
            Outcome::Ok { .. } if rolled_back => json!({
                "success": false,
                "errors": [RecordError::new(
                    "ALL_OR_NONE_OPERATION_ROLLED_BACK",
                    "Record rolled back because not all records were valid and the request was using AllOrNone header",
                    &[],
                ).collection_entry()],
            }),
            Outcome::Ok { id, created: Some(created) } => {
                json!({"id": id, "success": true, "errors": [], "created": created})
            }
            Outcome::Ok { id, created: None } => json!({"id": id, "success": true, "errors": []}),
            Outcome::Failed(e) => json!({"success": false, "errors": [e.collection_entry()]}),
        })
        .collect();
    Ok(Json(Value::Array(results)))
}

/// Record faults for the external id values in a record, taken before the
/// store is locked for the batch.
fn take_faults(
    shared: &Shared,
    request: &CollectionRequest,
) -> Result<HashMap<usize, RecordError>, ApiError> {
    let mut failed = HashMap::new();
    for (index, record) in request.records.iter().enumerate() {
        let object = object(shared, record_type(record)?)?;
        if let Some(WriteError::Record(e)) = record_fault(shared, object, record) {
            failed.insert(index, e);
        }
    }
    Ok(failed)
}

/// `POST /composite/sobjects`: creates up to 200 records of any objects.
pub(crate) async fn create(
    State(shared): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    if caller.version < COLLECTIONS_SINCE {
        return Err(ApiError::not_found());
    }
    let request = parse_request(&body)?;
    let pre_failed = take_faults(&shared, &request)?;
    let writer = Writer {
        user_id: &caller.user_id,
        now: Utc::now(),
    };
    let schema = &shared.schema;
    run(
        &shared,
        &request,
        |store, record| {
            let object = schema
                .object(record_type(record).unwrap_or(""))
                .ok_or_else(unknown_type)?;
            if record.keys().any(|k| k.eq_ignore_ascii_case("Id")) {
                return Err(RecordError::new(
                    "INVALID_FIELD",
                    "cannot specify Id in an insert call",
                    &["Id"],
                )
                .into());
            }
            store
                .create(schema, object, record, writer)
                .map(|id| (id, None))
        },
        &pre_failed,
    )
}

/// `PATCH /composite/sobjects`: updates up to 200 records by their `id`.
pub(crate) async fn update(
    State(shared): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    if caller.version < COLLECTIONS_SINCE {
        return Err(ApiError::not_found());
    }
    let request = parse_request(&body)?;
    let pre_failed = take_faults(&shared, &request)?;
    let writer = Writer {
        user_id: &caller.user_id,
        now: Utc::now(),
    };
    let schema = &shared.schema;
    run(
        &shared,
        &request,
        |store, record| {
            let object = schema
                .object(record_type(record).unwrap_or(""))
                .ok_or_else(unknown_type)?;
            let given = record
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("Id"))
                .and_then(|(_, v)| v.as_str());
            let Some(given) = given else {
                return Err(RecordError::new(
                    "MISSING_ARGUMENT",
                    "Id not specified in an update call",
                    &[],
                )
                .into());
            };
            let id = ids::normalize(given).ok_or_else(|| {
                RecordError::new("MALFORMED_ID", format!("malformed id {given}"), &[])
            })?;
            let mut fields = record.clone();
            fields.retain(|k, _| !k.eq_ignore_ascii_case("Id"));
            store
                .update(schema, object, &id, &fields, writer)
                .map(|()| (id, None))
        },
        &pre_failed,
    )
}

fn unknown_type() -> WriteError {
    RecordError::new("INVALID_TYPE", "sObject type is not supported", &[]).into()
}

/// Path of `/composite/sobjects/{sobject}/{field}`.
#[derive(Deserialize)]
pub(crate) struct UpsertPath {
    sobject: String,
    field: String,
}

/// `PATCH /composite/sobjects/{sobject}/{field}`: upserts up to 200 records
/// of one object by external id.
pub(crate) async fn upsert(
    State(shared): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    Path(path): Path<UpsertPath>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    if caller.version < UPSERT_SINCE {
        return Err(ApiError::not_found());
    }
    let object: &ObjectType = object(&shared, &path.sobject)?;
    let field = object
        .field(&path.field)
        .filter(|f| f.external_id)
        .ok_or_else(|| {
            ApiError::plain(
                StatusCode::NOT_FOUND,
                "NOT_FOUND",
                format!(
                    "Provided external ID field does not exist or is not accessible: {}",
                    path.field
                ),
            )
        })?;
    let request = parse_request(&body)?;
    for record in &request.records {
        let named = record_type(record)?;
        if !named.eq_ignore_ascii_case(object.name) {
            return Err(ApiError::plain(
                StatusCode::BAD_REQUEST,
                "INVALID_INPUT",
                format!(
                    "Every record must be of type {}; found {named}",
                    object.name
                ),
            ));
        }
    }
    let key_of = |record: &Map<String, Value>| {
        record
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(&field.name))
            .and_then(|(_, v)| external_id_text(v))
    };
    let mut pre_failed = HashMap::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for record in &request.records {
        if let Some(key) = key_of(record) {
            *seen.entry(key.to_lowercase()).or_default() += 1;
        }
    }
    for (index, record) in request.records.iter().enumerate() {
        let error = match key_of(record) {
            None => Some(RecordError::new(
                "MISSING_ARGUMENT",
                format!("{} not specified", field.name),
                &[],
            )),
            Some(key) if seen.get(&key.to_lowercase()).copied().unwrap_or(0) > 1 => {
                Some(RecordError::new(
                    "DUPLICATE_EXTERNAL_ID",
                    format!("Duplicate external id specified: {key}"),
                    &[&field.name],
                ))
            }
            Some(key) => shared.lock().faults.take_record_error(&key),
        };
        if let Some(error) = error {
            pre_failed.insert(index, error);
        }
    }
    let writer = Writer {
        user_id: &caller.user_id,
        now: Utc::now(),
    };
    let schema = &shared.schema;
    run(
        &shared,
        &request,
        |store, record| {
            let key = key_of(record).unwrap_or_default();
            store
                .upsert(schema, object, &field.name, &key, record, writer)
                .map(|(id, created)| (id, Some(created)))
        },
        &pre_failed,
    )
}
