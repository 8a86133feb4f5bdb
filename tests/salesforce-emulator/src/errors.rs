//! The two error shapes of the Salesforce REST API.
//!
//! Single-record resources answer an HTTP error status with a JSON array of
//! `{"message","errorCode","fields"}`; sObject Collections answer 200 and put
//! `{"statusCode","message","fields"}` in each failed record's `errors`. The
//! same validation failure ([`RecordError`]) is rendered in either shape.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

/// A failure of one record's write: Salesforce's status code (`STRING_TOO_LONG`,
/// `FIELD_INTEGRITY_EXCEPTION`…), its message and the fields concerned.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct RecordError {
    pub code: String,
    pub message: String,
    pub fields: Vec<String>,
}

impl RecordError {
    pub(crate) fn new(code: &str, message: impl Into<String>, fields: &[&str]) -> RecordError {
        RecordError {
            code: code.to_owned(),
            message: message.into(),
            fields: fields.iter().map(|f| (*f).to_owned()).collect(),
        }
    }

    /// The entry of a collection result's `errors` array.
    pub(crate) fn collection_entry(&self) -> Value {
        json!({"statusCode": self.code, "message": self.message, "fields": self.fields})
    }
}

/// Why a write did not happen.
#[derive(Clone, Debug)]
pub(crate) enum WriteError {
    /// The body could not be read as the record (`JSON_PARSER_ERROR`); fails a
    /// whole collection request, not one record.
    Parse(String),
    /// The record was refused; in a collection only this record fails.
    Record(RecordError),
    /// The record addressed by id does not exist.
    NotFound,
    /// Several records carry the external id value (HTTP 300).
    MultipleMatches(Vec<String>),
}

impl From<RecordError> for WriteError {
    fn from(e: RecordError) -> WriteError {
        WriteError::Record(e)
    }
}

/// An HTTP error answer in the single-record shape.
#[derive(Debug)]
pub(crate) struct ApiError {
    pub status: StatusCode,
    pub body: Value,
}

impl ApiError {
    /// An error without `fields` (session, limit, routing errors).
    pub(crate) fn plain(status: StatusCode, code: &str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            body: json!([{"message": message.into(), "errorCode": code}]),
        }
    }

    /// A 400 answer for a refused record.
    pub(crate) fn record(error: &RecordError) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            body: json!([{"message": error.message, "errorCode": error.code, "fields": error.fields}]),
        }
    }

    /// 401 for a missing, unknown, expired or revoked token.
    pub(crate) fn invalid_session() -> ApiError {
        ApiError::plain(
            StatusCode::UNAUTHORIZED,
            "INVALID_SESSION_ID",
            "Session expired or invalid",
        )
    }

    /// 404 for a resource or record that does not exist.
    pub(crate) fn not_found() -> ApiError {
        ApiError::plain(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            "The requested resource does not exist",
        )
    }

    /// 400 for a body that is not the JSON the resource expects.
    pub(crate) fn json_parser(message: impl Into<String>) -> ApiError {
        ApiError::plain(StatusCode::BAD_REQUEST, "JSON_PARSER_ERROR", message)
    }

    /// Renders a failed write of a single-record resource.
    pub(crate) fn from_write(error: WriteError, version: u32, sobject: &str) -> ApiError {
        match error {
            WriteError::Parse(message) => ApiError::json_parser(message),
            WriteError::Record(e) => ApiError::record(&e),
            WriteError::NotFound => ApiError::not_found(),
            WriteError::MultipleMatches(ids) => ApiError {
                status: StatusCode::MULTIPLE_CHOICES,
                body: Value::Array(
                    ids.iter()
                        .map(|id| {
                            Value::String(format!(
                                "/services/data/v{version}.0/sobjects/{sobject}/{id}"
                            ))
                        })
                        .collect(),
                ),
            },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body)).into_response()
    }
}
