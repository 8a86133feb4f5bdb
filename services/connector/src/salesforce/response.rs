//! Reading Salesforce's answers: upsert results, both error-body shapes and
//! the API usage header.
//!
//! Pure functions over bytes and header values, so each documented shape is
//! tested with a fixture instead of a server.

use serde_json::Value;

/// One error entry of a REST answer, whichever shape it came in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiErrorItem {
    /// `errorCode` of single-record calls or `statusCode` of sObject
    /// Collections, e.g. `INVALID_FIELD_FOR_INSERT_UPDATE`.
    pub error_code: String,
    /// Salesforce's explanation.
    pub message: String,
    /// Fields the error is about, when Salesforce names them.
    pub fields: Vec<String>,
}

/// Parses an error body. Single-record calls answer
/// `[{"message","errorCode","fields"}]`; sObject Collections answer
/// `[{"id","success":false,"errors":[{"statusCode","message","fields"}]}]`.
/// A lone object of either kind is accepted too. Returns an empty list when
/// the body holds no recognisable error (the caller then reports the raw body).
pub fn parse_error_body(body: &[u8]) -> Vec<ApiErrorItem> {
    let Ok(value) = serde_json::from_slice::<Value>(body) else {
        return Vec::new();
    };
    let mut items = Vec::new();
    match &value {
        Value::Array(entries) => {
            for entry in entries {
                collect(entry, &mut items);
            }
        }
        Value::Object(_) => collect(&value, &mut items),
        _ => {}
    }
    items
}

fn collect(entry: &Value, items: &mut Vec<ApiErrorItem>) {
    let Some(object) = entry.as_object() else {
        return;
    };
    if let Some(Value::Array(nested)) = object.get("errors") {
        for error in nested {
            collect(error, items);
        }
        return;
    }
    let code = object
        .get("errorCode")
        .or_else(|| object.get("statusCode"))
        .and_then(Value::as_str)
        .unwrap_or_default();
    let message = object.get("message").and_then(Value::as_str).unwrap_or_default();
    if code.is_empty() && message.is_empty() {
        return;
    }
    let fields = object
        .get("fields")
        .and_then(Value::as_array)
        .map(|f| f.iter().filter_map(Value::as_str).map(str::to_owned).collect())
        .unwrap_or_default();
    items.push(ApiErrorItem { error_code: code.to_owned(), message: message.to_owned(), fields });
}

/// What a successful upsert reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpsertResult {
    /// The Task's record id; absent on a 204 answer (API before 46.0).
    pub id: Option<String>,
    /// The upsert inserted a new Task rather than updating one.
    pub created: bool,
}

/// Interprets a 2xx upsert answer: 201 with `created:true`, 200 with
/// `created:false`, or 204 without a body. The status decides when the body
/// is missing or odd: the write was accepted either way.
pub fn parse_upsert_body(status: u16, body: &[u8]) -> UpsertResult {
    let value = serde_json::from_slice::<Value>(body).ok();
    let id = value.as_ref().and_then(|v| v.get("id")).and_then(Value::as_str).map(str::to_owned);
    let created = value
        .as_ref()
        .and_then(|v| v.get("created"))
        .and_then(Value::as_bool)
        .unwrap_or(status == 201);
    UpsertResult { id, created }
}

/// The outcome of one record of an sObject Collections request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordResult {
    /// The record's id; Salesforce leaves it null for a refused record.
    pub id: Option<String>,
    /// Salesforce wrote the record.
    pub success: bool,
    /// An upsert inserted the record rather than updating one.
    pub created: bool,
    /// Why the record was refused (empty on success).
    pub errors: Vec<ApiErrorItem>,
}

/// Reads a 200 answer of sObject Collections: one result per record, in
/// the order of the request. `None` when the body is not that array, which
/// the caller reports as an unexpected answer (nothing is known written).
pub fn parse_collection_body(body: &[u8]) -> Option<Vec<RecordResult>> {
    let Ok(Value::Array(entries)) = serde_json::from_slice::<Value>(body) else {
        return None;
    };
    entries
        .iter()
        .map(|entry| {
            let object = entry.as_object()?;
            let success = object.get("success").and_then(Value::as_bool)?;
            let mut errors = Vec::new();
            collect(entry, &mut errors);
            if !success && errors.is_empty() {
                errors.push(ApiErrorItem { error_code: "UNKNOWN_ERROR".to_owned(), message: "Salesforce refused the record without a reason".to_owned(), fields: Vec::new() });
            }
            Some(RecordResult {
                id: object.get("id").and_then(Value::as_str).map(str::to_owned),
                success,
                created: object.get("created").and_then(Value::as_bool).unwrap_or(false),
                errors: if success { Vec::new() } else { errors },
            })
        })
        .collect()
}

/// Reads `Sforce-Limit-Info: api-usage=N/M` into `(used, limit)`.
pub fn parse_limit_info(header: &str) -> Option<(u64, u64)> {
    header.split(',').find_map(|part| {
        let (name, value) = part.trim().split_once('=')?;
        if name.trim() != "api-usage" {
            return None;
        }
        let (used, limit) = value.trim().split_once('/')?;
        Some((used.trim().parse().ok()?, limit.trim().parse().ok()?))
    })
}

/// The first `max` characters of a body, for error messages.
pub fn snippet(body: &[u8], max: usize) -> String {
    let text = String::from_utf8_lossy(body);
    let mut out: String = text.chars().take(max).collect();
    if text.chars().count() > max {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_record_error_shape() {
        let body = br#"[{"message":"Unable to create/update fields: TaskSubtype.","errorCode":"INVALID_FIELD_FOR_INSERT_UPDATE","fields":["TaskSubtype"]}]"#;
        let items = parse_error_body(body);
        assert_eq!(
            items,
            vec![ApiErrorItem {
                error_code: "INVALID_FIELD_FOR_INSERT_UPDATE".into(),
                message: "Unable to create/update fields: TaskSubtype.".into(),
                fields: vec!["TaskSubtype".into()],
            }]
        );
    }

    #[test]
    fn collections_error_shape() {
        let body = br#"[{"id":null,"success":false,"errors":[{"statusCode":"REQUIRED_FIELD_MISSING","message":"Required fields are missing: [Subject]","fields":["Subject"]}]},
                        {"id":null,"success":false,"errors":[{"statusCode":"ALL_OR_NONE_OPERATION_ROLLED_BACK","message":"Record rolled back because not all records were valid and the request was using AllOrNone header","fields":[]}]}]"#;
        let items = parse_error_body(body);
        assert_eq!(items.len(), 2);
        assert_eq!(items[0].error_code, "REQUIRED_FIELD_MISSING");
        assert_eq!(items[0].fields, vec!["Subject".to_string()]);
        assert_eq!(items[1].error_code, "ALL_OR_NONE_OPERATION_ROLLED_BACK");
        assert!(items[1].fields.is_empty());
    }

    #[test]
    fn odd_error_bodies_yield_nothing_not_a_panic() {
        assert!(parse_error_body(b"").is_empty());
        assert!(parse_error_body(b"<html>Service Unavailable</html>").is_empty());
        assert!(parse_error_body(b"[1, \"x\", null, {}]").is_empty());
        assert!(parse_error_body(b"{\"errorCode\": 5}").is_empty());
        let lone = parse_error_body(br#"{"errorCode":"NOT_FOUND","message":"The requested resource does not exist"}"#);
        assert_eq!(lone[0].error_code, "NOT_FOUND");
    }

    #[test]
    fn upsert_answers() {
        let created = parse_upsert_body(201, br#"{"id":"00T5g00000AbCdEFGH","success":true,"errors":[],"created":true}"#);
        assert_eq!(created, UpsertResult { id: Some("00T5g00000AbCdEFGH".into()), created: true });
        let updated = parse_upsert_body(200, br#"{"id":"00T5g00000AbCdEFGH","success":true,"errors":[],"created":false}"#);
        assert!(!updated.created);
        assert_eq!(parse_upsert_body(204, b""), UpsertResult { id: None, created: false });
        assert_eq!(parse_upsert_body(201, b"garbage"), UpsertResult { id: None, created: true });
    }

    #[test]
    fn collection_answers() {
        let body = br#"[{"id":"00T5g00000AbCdEFGH","success":true,"errors":[],"created":true},
                        {"id":"00T5g00000AbCdEFGI","success":true,"errors":[],"created":false},
                        {"id":null,"success":false,"errors":[{"statusCode":"UNABLE_TO_LOCK_ROW","message":"unable to obtain exclusive access to this record","fields":[]}]},
                        {"success":false}]"#;
        let results = parse_collection_body(body).expect("a collection answer");
        assert_eq!(results.len(), 4);
        assert_eq!(results[0], RecordResult { id: Some("00T5g00000AbCdEFGH".into()), success: true, created: true, errors: vec![] });
        assert!(results[1].success && !results[1].created);
        assert!(!results[2].success && results[2].id.is_none());
        assert_eq!(results[2].errors[0].error_code, "UNABLE_TO_LOCK_ROW");
        assert_eq!(results[3].errors[0].error_code, "UNKNOWN_ERROR");
        assert_eq!(parse_collection_body(b"{}"), None);
        assert_eq!(parse_collection_body(b"[1]"), None);
        assert_eq!(parse_collection_body(br#"[{"id":"x"}]"#), None);
        assert_eq!(parse_collection_body(b"[]"), Some(vec![]));
    }

    #[test]
    fn limit_info_header() {
        assert_eq!(parse_limit_info("api-usage=25/15000"), Some((25, 15000)));
        assert_eq!(parse_limit_info("per-app-api-usage=1/100, api-usage=7/5000"), Some((7, 5000)));
        assert_eq!(parse_limit_info("api-usage=x/5000"), None);
        assert_eq!(parse_limit_info(""), None);
    }

    #[test]
    fn snippets_are_cut() {
        assert_eq!(snippet(b"abcdef", 3), "abc…");
        assert_eq!(snippet(b"ab", 3), "ab");
    }
}
