//! A subset of SOQL for `GET /query?q=`: enough for a client to look records
//! up by field values.
//!
//! Supported: `SELECT f1, f2 FROM Object [WHERE f = v [AND f2 != v2 [AND f3 IN
//! (v, …)]]] [ORDER BY f [ASC|DESC]] [LIMIT n]` with values `'text'`,
//! numbers, `true`, `false` and `null`. Keywords and names are
//! case-insensitive and text compares without regard to case, as in SOQL.
//! Anything else answers 400 `MALFORMED_QUERY`.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde_json::{json, Map, Value};

use crate::errors::ApiError;
use crate::schema::ObjectType;
use crate::session::Caller;
use crate::state::Shared;
use crate::store::{attributes, Record};

/// A lexical token of a query.
#[derive(Clone, Debug, PartialEq)]
enum Token {
    Word(String),
    Text(String),
    Number(f64),
    Symbol(&'static str),
}

fn tokenize(query: &str) -> Result<Vec<Token>, String> {
    let chars: Vec<char> = query.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '\'' {
            let mut text = String::new();
            i += 1;
            loop {
                match chars.get(i) {
                    None => return Err("unterminated string literal".to_owned()),
                    Some('\\') => {
                        let escaped = chars.get(i + 1).ok_or("unterminated string literal")?;
                        text.push(match escaped {
                            'n' => '\n',
                            't' => '\t',
                            other => *other,
                        });
                        i += 2;
                    }
                    Some('\'') => {
                        i += 1;
                        break;
                    }
                    Some(other) => {
                        text.push(*other);
                        i += 1;
                    }
                }
            }
            tokens.push(Token::Text(text));
        } else if c == '!' || c == '<' {
            let next = chars.get(i + 1).copied();
            match (c, next) {
                ('!', Some('=')) | ('<', Some('>')) => tokens.push(Token::Symbol("!=")),
                _ => return Err(format!("unexpected token: '{c}'")),
            }
            i += 2;
        } else if let Some(symbol) = ["=", ",", "(", ")"].into_iter().find(|s| s.starts_with(c)) {
            tokens.push(Token::Symbol(symbol));
            i += 1;
        } else if c.is_ascii_digit()
            || (c == '-' && chars.get(i + 1).is_some_and(char::is_ascii_digit))
        {
            let start = i;
            i += 1;
            while chars
                .get(i)
                .is_some_and(|c| c.is_ascii_digit() || *c == '.')
            {
                i += 1;
            }
            let text: String = chars[start..i].iter().collect();
            tokens.push(Token::Number(
                text.parse()
                    .map_err(|_| format!("unexpected token: '{text}'"))?,
            ));
        } else if c.is_alphanumeric() || c == '_' {
            let start = i;
            while chars
                .get(i)
                .is_some_and(|c| c.is_alphanumeric() || *c == '_' || *c == '.')
            {
                i += 1;
            }
            tokens.push(Token::Word(chars[start..i].iter().collect()));
        } else {
            return Err(format!("unexpected token: '{c}'"));
        }
    }
    Ok(tokens)
}

/// One `WHERE` condition.
#[derive(Debug)]
struct Condition {
    field: String,
    negated: bool,
    values: Vec<Value>,
}

/// A parsed query.
#[derive(Debug)]
struct Soql {
    fields: Vec<String>,
    object: String,
    conditions: Vec<Condition>,
    order: Option<(String, bool)>,
    limit: Option<usize>,
}

struct Parser {
    tokens: Vec<Token>,
    at: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at)
    }

    fn next(&mut self) -> Option<Token> {
        let token = self.tokens.get(self.at).cloned();
        self.at += 1;
        token
    }

    fn keyword(&mut self, word: &str) -> bool {
        if matches!(self.peek(), Some(Token::Word(w)) if w.eq_ignore_ascii_case(word)) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn expect_keyword(&mut self, word: &str) -> Result<(), String> {
        if self.keyword(word) {
            Ok(())
        } else {
            Err(format!(
                "unexpected token: {}; expecting {word}",
                self.describe_next()
            ))
        }
    }

    fn symbol(&mut self, symbol: &str) -> bool {
        if matches!(self.peek(), Some(Token::Symbol(s)) if *s == symbol) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn name(&mut self) -> Result<String, String> {
        match self.next() {
            Some(Token::Word(w)) => Ok(w),
            _ => {
                self.at -= 1;
                Err(format!("unexpected token: {}", self.describe_next()))
            }
        }
    }

    fn value(&mut self) -> Result<Value, String> {
        match self.next() {
            Some(Token::Text(t)) => Ok(Value::String(t)),
            Some(Token::Number(n)) => Ok(json!(n)),
            Some(Token::Word(w)) if w.eq_ignore_ascii_case("null") => Ok(Value::Null),
            Some(Token::Word(w)) if w.eq_ignore_ascii_case("true") => Ok(Value::Bool(true)),
            Some(Token::Word(w)) if w.eq_ignore_ascii_case("false") => Ok(Value::Bool(false)),
            _ => {
                self.at -= 1;
                Err(format!("unexpected token: {}", self.describe_next()))
            }
        }
    }

    fn describe_next(&self) -> String {
        match self.peek() {
            None => "<EOF>".to_owned(),
            Some(Token::Word(w)) => format!("'{w}'"),
            Some(Token::Text(t)) => format!("'{t}'"),
            Some(Token::Number(n)) => format!("'{n}'"),
            Some(Token::Symbol(s)) => format!("'{s}'"),
        }
    }

    fn parse(mut self) -> Result<Soql, String> {
        self.expect_keyword("SELECT")?;
        let mut fields = vec![self.name()?];
        while self.symbol(",") {
            fields.push(self.name()?);
        }
        self.expect_keyword("FROM")?;
        let object = self.name()?;
        let mut conditions = Vec::new();
        if self.keyword("WHERE") {
            loop {
                let field = self.name()?;
                let condition = if self.symbol("=") {
                    Condition {
                        field,
                        negated: false,
                        values: vec![self.value()?],
                    }
                } else if self.symbol("!=") {
                    Condition {
                        field,
                        negated: true,
                        values: vec![self.value()?],
                    }
                } else if self.keyword("IN") {
                    if !self.symbol("(") {
                        return Err(format!(
                            "unexpected token: {}; expecting '('",
                            self.describe_next()
                        ));
                    }
                    let mut values = vec![self.value()?];
                    while self.symbol(",") {
                        values.push(self.value()?);
                    }
                    if !self.symbol(")") {
                        return Err(format!(
                            "unexpected token: {}; expecting ')'",
                            self.describe_next()
                        ));
                    }
                    Condition {
                        field,
                        negated: false,
                        values,
                    }
                } else {
                    return Err(format!("unexpected token: {}", self.describe_next()));
                };
                conditions.push(condition);
                if !self.keyword("AND") {
                    break;
                }
            }
        }
        let mut order = None;
        if self.keyword("ORDER") {
            self.expect_keyword("BY")?;
            let field = self.name()?;
            let descending = if self.keyword("DESC") {
                true
            } else {
                self.keyword("ASC");
                false
            };
            order = Some((field, descending));
        }
        let mut limit = None;
        if self.keyword("LIMIT") {
            match self.next() {
                Some(Token::Number(n)) if n >= 0.0 && n.fract() == 0.0 => limit = Some(n as usize),
                _ => return Err("LIMIT must be a non-negative integer".to_owned()),
            }
        }
        if self.peek().is_some() {
            return Err(format!("unexpected token: {}", self.describe_next()));
        }
        Ok(Soql {
            fields,
            object,
            conditions,
            order,
            limit,
        })
    }
}

fn invalid_field(name: &str, object: &str) -> ApiError {
    ApiError::plain(
        StatusCode::BAD_REQUEST,
        "INVALID_FIELD",
        format!("No such column '{name}' on entity '{object}'. If you are attempting to use a custom field, be sure to append the '__c' after the custom field name."),
    )
}

/// SOQL equality: text without regard to case, numbers by value.
fn soql_equal(stored: Option<&Value>, wanted: &Value) -> bool {
    match (stored.unwrap_or(&Value::Null), wanted) {
        (Value::Null, Value::Null) => true,
        (Value::String(a), Value::String(b)) => a.eq_ignore_ascii_case(b),
        (Value::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
        (Value::String(a), Value::Number(b)) => a.parse::<f64>().ok() == b.as_f64(),
        (a, b) => a == b,
    }
}

fn compare(a: Option<&Value>, b: Option<&Value>) -> Ordering {
    match (a.unwrap_or(&Value::Null), b.unwrap_or(&Value::Null)) {
        (Value::Null, Value::Null) => Ordering::Equal,
        (Value::Null, _) => Ordering::Less,
        (_, Value::Null) => Ordering::Greater,
        (Value::Number(x), Value::Number(y)) => x
            .as_f64()
            .partial_cmp(&y.as_f64())
            .unwrap_or(Ordering::Equal),
        (Value::String(x), Value::String(y)) => x.to_lowercase().cmp(&y.to_lowercase()),
        (x, y) => x.to_string().cmp(&y.to_string()),
    }
}

/// Resolves a field name of the query against the object.
fn canonical(object: &ObjectType, name: &str) -> Result<String, ApiError> {
    object
        .field(name)
        .map(|f| f.name.clone())
        .ok_or_else(|| invalid_field(name, object.name))
}

/// `GET /query?q=…`.
pub(crate) async fn query(
    State(shared): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let text = params.get("q").ok_or_else(|| {
        ApiError::plain(
            StatusCode::BAD_REQUEST,
            "MALFORMED_QUERY",
            "A query string has to be specified",
        )
    })?;
    let malformed = |m: String| ApiError::plain(StatusCode::BAD_REQUEST, "MALFORMED_QUERY", m);
    let tokens = tokenize(text).map_err(malformed)?;
    let soql = Parser { tokens, at: 0 }.parse().map_err(malformed)?;
    let object = shared.schema.object(&soql.object).ok_or_else(|| {
        ApiError::plain(
            StatusCode::BAD_REQUEST,
            "INVALID_TYPE",
            format!("sObject type '{}' is not supported.", soql.object),
        )
    })?;
    let fields = soql
        .fields
        .iter()
        .map(|f| canonical(object, f))
        .collect::<Result<Vec<_>, _>>()?;
    let conditions = soql
        .conditions
        .iter()
        .map(|c| canonical(object, &c.field).map(|name| (name, c)))
        .collect::<Result<Vec<_>, _>>()?;
    let order = match &soql.order {
        Some((name, descending)) => Some((canonical(object, name)?, *descending)),
        None => None,
    };
    let inner = shared.lock();
    let mut matched: Vec<&Record> = inner
        .store
        .records(object.name)
        .filter(|record| {
            inner.can_read(
                &shared.default_user_id,
                &caller.user_id,
                object.name,
                record,
            )
        })
        .filter(|record| {
            conditions.iter().all(|(name, condition)| {
                let hit = condition
                    .values
                    .iter()
                    .any(|v| soql_equal(record.fields.get(name), v));
                hit != condition.negated
            })
        })
        .collect();
    if let Some((name, descending)) = &order {
        matched.sort_by(|a, b| {
            let ordering = compare(a.fields.get(name), b.fields.get(name));
            if *descending {
                ordering.reverse()
            } else {
                ordering
            }
        });
    }
    if let Some(limit) = soql.limit {
        matched.truncate(limit);
    }
    let records: Vec<Value> = matched
        .iter()
        .map(|record| {
            let mut out = Map::new();
            out.insert(
                "attributes".to_owned(),
                attributes(object.name, record.id(), caller.version),
            );
            for name in &fields {
                out.insert(
                    name.clone(),
                    record.fields.get(name).cloned().unwrap_or(Value::Null),
                );
            }
            Value::Object(out)
        })
        .collect();
    Ok(Json(
        json!({"totalSize": records.len(), "done": true, "records": records}),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Soql, String> {
        Parser {
            tokens: tokenize(text)?,
            at: 0,
        }
        .parse()
    }

    #[test]
    fn parses_the_supported_subset() {
        let q = parse("select Id, Subject from Task where Switchboard_Key__c = 'a\\'b' and Status != null order by CreatedDate desc limit 5")
            .expect("parse");
        assert_eq!(q.fields, ["Id", "Subject"]);
        assert_eq!(q.object, "Task");
        assert_eq!(q.conditions.len(), 2);
        assert_eq!(q.conditions[0].values, [json!("a'b")]);
        assert!(q.conditions[1].negated);
        assert_eq!(q.order, Some(("CreatedDate".to_owned(), true)));
        assert_eq!(q.limit, Some(5));
        let q = parse("SELECT Id FROM Contact WHERE Phone IN ('1', '2')").expect("in");
        assert_eq!(q.conditions[0].values.len(), 2);
    }

    #[test]
    fn rejects_what_it_does_not_know() {
        for bad in [
            "",
            "SELECT FROM Task",
            "SELECT Id Task",
            "SELECT Id FROM Task WHERE Subject LIKE 'x'",
            "SELECT Id FROM Task LIMIT x",
            "SELECT Id FROM Task WHERE Subject = 'open",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
