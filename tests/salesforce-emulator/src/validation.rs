//! Checking one field value the way Salesforce's JSON reader and field
//! validation do.
//!
//! Two kinds of failure exist, as in Salesforce: a value the JSON reader cannot
//! turn into the field's type ("abc" for a number, an object for a text) fails
//! the whole request with `JSON_PARSER_ERROR`; a value of the right type that
//! breaks a rule (too long, not in a restricted picklist, a number with
//! decimals for an integer, a malformed id) fails the record with its own code.

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use serde_json::Value;

use crate::errors::{RecordError, WriteError};
use crate::ids;
use crate::schema::{Field, FieldKind};

/// Salesforce's timestamp format in answers.
pub(crate) const DATETIME_FORMAT: &str = "%Y-%m-%dT%H:%M:%S%.3f%z";

/// Formats a timestamp as Salesforce answers it.
pub(crate) fn format_datetime(at: DateTime<Utc>) -> String {
    at.format(DATETIME_FORMAT).to_string()
}

/// Checks and converts `raw` for `field`. `Null` (and the empty string for
/// text) clears the field and is returned as `Null`. References are only
/// checked for form and object type here; whether the record exists is the
/// store's business.
pub(crate) fn coerce(field: &Field, raw: &Value) -> Result<Value, WriteError> {
    if raw.is_null() {
        return Ok(Value::Null);
    }
    match &field.kind {
        FieldKind::Id => Err(parse_error("id", raw)),
        FieldKind::Text { max } => {
            let text = scalar_text(raw).ok_or_else(|| parse_error("string", raw))?;
            if text.is_empty() {
                return Ok(Value::Null);
            }
            check_length(field, &text, *max)?;
            Ok(Value::String(text))
        }
        FieldKind::Picklist {
            values,
            restricted,
            max,
        } => {
            let text = scalar_text(raw).ok_or_else(|| parse_error("string", raw))?;
            if text.is_empty() {
                return Ok(Value::Null);
            }
            if *restricted && !values.contains(&text.as_str()) {
                return Err(RecordError::new(
                    "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
                    format!(
                        "{}: bad value for restricted picklist field: {}",
                        field.label, text
                    ),
                    &[&field.name],
                )
                .into());
            }
            check_length(field, &text, *max)?;
            Ok(Value::String(text))
        }
        FieldKind::Integer => integer(field, raw),
        FieldKind::Double => match raw {
            Value::Number(n) => Ok(Value::Number(n.clone())),
            Value::String(s) => s
                .trim()
                .parse::<f64>()
                .ok()
                .and_then(serde_json::Number::from_f64)
                .map(Value::Number)
                .ok_or_else(|| parse_error("double", raw)),
            _ => Err(parse_error("double", raw)),
        },
        FieldKind::Boolean => match raw {
            Value::Bool(b) => Ok(Value::Bool(*b)),
            Value::String(s) if s.eq_ignore_ascii_case("true") => Ok(Value::Bool(true)),
            Value::String(s) if s.eq_ignore_ascii_case("false") => Ok(Value::Bool(false)),
            _ => Err(parse_error("boolean", raw)),
        },
        FieldKind::Date => {
            let text = raw.as_str().ok_or_else(|| parse_error("date", raw))?;
            parse_date(text)
                .map(|d| Value::String(d.format("%Y-%m-%d").to_string()))
                .ok_or_else(|| parse_error("date", raw))
        }
        FieldKind::DateTime => {
            let text = raw.as_str().ok_or_else(|| parse_error("datetime", raw))?;
            parse_datetime(text)
                .map(|t| Value::String(format_datetime(t)))
                .ok_or_else(|| parse_error("datetime", raw))
        }
        FieldKind::Reference { targets } => {
            let text = raw.as_str().ok_or_else(|| parse_error("id", raw))?;
            if text.is_empty() {
                return Ok(Value::Null);
            }
            let id = ids::normalize(text).ok_or_else(|| {
                RecordError::new(
                    "MALFORMED_ID",
                    format!("{}: id value of incorrect type: {}", field.label, text),
                    &[&field.name],
                )
            })?;
            let prefix_ok = targets
                .iter()
                .any(|t| reference_prefix(t) == Some(ids::key_prefix(&id)));
            if !prefix_ok {
                return Err(RecordError::new(
                    "FIELD_INTEGRITY_EXCEPTION",
                    format!("{}: id value of incorrect type: {}", field.label, text),
                    &[&field.name],
                )
                .into());
            }
            Ok(Value::String(id))
        }
    }
}

/// Key prefix of the objects references can point to.
fn reference_prefix(object: &str) -> Option<&'static str> {
    Some(match object {
        "Task" => "00T",
        "Case" => "500",
        "Opportunity" => "006",
        "Contact" => "003",
        "Lead" => "00Q",
        "Account" => "001",
        "User" => "005",
        _ => return None,
    })
}

fn integer(field: &Field, raw: &Value) -> Result<Value, WriteError> {
    let number = match raw {
        Value::Number(n) => n.as_f64().ok_or_else(|| parse_error("int", raw))?,
        Value::String(s) => s
            .trim()
            .parse::<f64>()
            .map_err(|_| parse_error("int", raw))?,
        _ => return Err(parse_error("int", raw)),
    };
    if number.fract() != 0.0 {
        return Err(RecordError::new(
            "INVALID_TYPE_ON_FIELD_IN_RECORD",
            format!(
                "{}: value not of required type: {}",
                field.label,
                display(raw)
            ),
            &[&field.name],
        )
        .into());
    }
    if number < f64::from(i32::MIN) || number > f64::from(i32::MAX) {
        return Err(WriteError::Parse(format!(
            "Numeric value ({}) out of range of int (-2147483648 - 2147483647)",
            display(raw)
        )));
    }
    Ok(Value::from(number as i64))
}

fn check_length(field: &Field, text: &str, max: usize) -> Result<(), WriteError> {
    if text.chars().count() > max {
        let shown: String = text.chars().take(80).collect();
        let ellipsis = if text.chars().count() > 80 { "..." } else { "" };
        return Err(RecordError::new(
            "STRING_TOO_LONG",
            format!(
                "{}: data value too large: {shown}{ellipsis} (max length={max})",
                field.label
            ),
            &[&field.name],
        )
        .into());
    }
    Ok(())
}

/// A JSON scalar as the text Salesforce stores (numbers and booleans are
/// accepted for text fields and stored as written).
fn scalar_text(raw: &Value) -> Option<String> {
    match raw {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn parse_error(target: &str, raw: &Value) -> WriteError {
    let token = match raw {
        Value::String(_) => "VALUE_STRING",
        Value::Number(n) if n.is_f64() => "VALUE_NUMBER_FLOAT",
        Value::Number(_) => "VALUE_NUMBER_INT",
        Value::Bool(true) => "VALUE_TRUE",
        Value::Bool(false) => "VALUE_FALSE",
        Value::Array(_) => "START_ARRAY",
        Value::Object(_) => "START_OBJECT",
        Value::Null => "VALUE_NULL",
    };
    WriteError::Parse(format!(
        "Cannot deserialize instance of {target} from {token} value {} or request may be missing a required field",
        display(raw)
    ))
}

fn display(raw: &Value) -> String {
    match raw {
        Value::String(s) => s.clone(),
        Value::Array(_) => "[".to_owned(),
        Value::Object(_) => "{".to_owned(),
        other => other.to_string(),
    }
}

/// Parses a date as Salesforce's JSON reader does: `YYYY-MM-DD`, or a
/// timestamp whose date part is taken.
pub(crate) fn parse_date(text: &str) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .or_else(|| parse_datetime(text).map(|t| t.date_naive()))
}

/// Parses an ISO 8601 timestamp with `Z`, `+hh:mm` or `+hhmm` offset, or
/// without offset (taken as UTC).
pub(crate) fn parse_datetime(text: &str) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Some(t.with_timezone(&Utc));
    }
    if let Ok(t) = DateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f%z") {
        return Some(t.with_timezone(&Utc));
    }
    NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f")
        .ok()
        .map(|t| t.and_utc())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::schema::Schema;

    fn task_field(name: &str) -> Field {
        let schema = Schema::new(&[], &[], &[], &[]).expect("schema");
        schema
            .object("Task")
            .and_then(|t| t.field(name))
            .cloned()
            .expect("field")
    }

    fn record_code(result: Result<Value, WriteError>) -> String {
        match result {
            Err(WriteError::Record(e)) => e.code,
            other => panic!("expected a record error, got {other:?}"),
        }
    }

    #[test]
    fn text_length_is_checked_in_characters() {
        let subject = task_field("Subject");
        assert_eq!(
            coerce(&subject, &json!("é".repeat(255))).ok(),
            Some(json!("é".repeat(255)))
        );
        let err = coerce(&subject, &json!("x".repeat(256)));
        assert_eq!(record_code(err), "STRING_TOO_LONG");
        assert_eq!(coerce(&subject, &json!("")).ok(), Some(Value::Null));
        assert!(matches!(
            coerce(&subject, &json!({"a": 1})),
            Err(WriteError::Parse(_))
        ));
    }

    #[test]
    fn integers_reject_fractions_and_words() {
        let duration = task_field("CallDurationInSeconds");
        assert_eq!(coerce(&duration, &json!(42)).ok(), Some(json!(42)));
        assert_eq!(coerce(&duration, &json!("42")).ok(), Some(json!(42)));
        assert_eq!(
            record_code(coerce(&duration, &json!(4.5))),
            "INVALID_TYPE_ON_FIELD_IN_RECORD"
        );
        assert!(matches!(
            coerce(&duration, &json!("abc")),
            Err(WriteError::Parse(_))
        ));
        assert!(matches!(
            coerce(&duration, &json!(1e12)),
            Err(WriteError::Parse(_))
        ));
    }

    #[test]
    fn restricted_picklist_and_dates() {
        let call_type = task_field("CallType");
        assert_eq!(
            coerce(&call_type, &json!("Inbound")).ok(),
            Some(json!("Inbound"))
        );
        assert_eq!(
            record_code(coerce(&call_type, &json!("Sideways"))),
            "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST"
        );
        let date = task_field("ActivityDate");
        assert_eq!(
            coerce(&date, &json!("2024-02-29")).ok(),
            Some(json!("2024-02-29"))
        );
        assert!(matches!(
            coerce(&date, &json!("2023-02-29")),
            Err(WriteError::Parse(_))
        ));
        assert!(matches!(
            coerce(&date, &json!(20240101)),
            Err(WriteError::Parse(_))
        ));
    }

    #[test]
    fn references_check_form_and_object() {
        let who = task_field("WhoId");
        let contact = crate::ids::make("003", 7);
        assert_eq!(
            coerce(&who, &json!(&contact[..15])).ok(),
            Some(json!(contact))
        );
        assert_eq!(
            record_code(coerce(&who, &json!("nonsense"))),
            "MALFORMED_ID"
        );
        assert_eq!(
            record_code(coerce(&who, &json!(crate::ids::make("001", 7)))),
            "FIELD_INTEGRITY_EXCEPTION"
        );
    }
}
