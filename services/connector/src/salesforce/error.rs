//! Errors of the Salesforce client and how the connector reacts to each.

use std::path::PathBuf;

use super::response::ApiErrorItem;
use crate::config::SalesforceAuth;

/// What to do about a failed request: the sink's retry policy reads this.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Salesforce or the network is briefly unavailable (5xx,
    /// `UNABLE_TO_LOCK_ROW`, timeouts): retry soon with exponential backoff.
    Retryable,
    /// The session was refused even after one token renewal: retry with
    /// backoff, a later login may succeed.
    Token,
    /// The org's API limit is used up (`REQUEST_LIMIT_EXCEEDED`) or the login
    /// itself is refused (connected app, certificate, user authorisation):
    /// nothing an event can fix, retrying soon only burns requests; wait long.
    Limit,
    /// Salesforce refuses this write for good (other 4xx): dead-letter it.
    Permanent,
}

impl ErrorClass {
    /// Label for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Retryable => "retryable",
            ErrorClass::Token => "token",
            ErrorClass::Limit => "limit",
            ErrorClass::Permanent => "permanent",
        }
    }
}

/// A failure talking to Salesforce.
#[derive(Debug, thiserror::Error)]
pub enum SalesforceError {
    /// The private key of the connected app cannot be read.
    #[error("cannot read the Salesforce private key {path}: {source}")]
    KeyFile {
        /// The configured `salesforce.private_key_file`.
        path: PathBuf,
        /// Why reading failed.
        #[source]
        source: std::io::Error,
    },
    /// The key file holds no usable RSA private key.
    #[error("the Salesforce private key {path} is not a PEM RSA private key: {reason}")]
    Key {
        /// The configured `salesforce.private_key_file`.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The consumer secret of the client credentials flow cannot be read.
    #[error("cannot read the Salesforce client secret from {}: {reason}", secret_source(.path))]
    ClientSecret {
        /// The configured `salesforce.client_secret_file`; `None` for
        /// `salesforce.client_secret`.
        path: Option<PathBuf>,
        /// Why it cannot be used.
        reason: String,
    },
    /// The HTTP client cannot be built (TLS setup).
    #[error("cannot build the HTTP client for Salesforce: {0}")]
    Client(#[source] reqwest::Error),
    /// The token endpoint refused the login (the JWT, or the client
    /// credentials).
    #[error("Salesforce refused the login of {username} ({status} {error}: {description}); {}", login_hint(*.auth))]
    Login {
        /// The login flow that was refused.
        auth: SalesforceAuth,
        /// Who tried to log in: the integration user, or the Run As user of
        /// the connected app ([`crate::config::SalesforceConfig::integration_user`]).
        username: String,
        /// HTTP status of the token answer.
        status: u16,
        /// OAuth `error`, e.g. `invalid_grant`.
        error: String,
        /// OAuth `error_description`.
        description: String,
    },
    /// The request did not complete (connection, TLS, timeout).
    #[error("request to Salesforce failed ({operation}): {source}")]
    Transport {
        /// `token` or `upsert_task`.
        operation: &'static str,
        /// The HTTP client's error.
        #[source]
        source: reqwest::Error,
    },
    /// Salesforce answered with an error status.
    #[error("Salesforce answered {status} to {operation}: {}", summary(.errors, .body))]
    Api {
        /// `token` or `upsert_task`.
        operation: &'static str,
        /// HTTP status of the answer.
        status: u16,
        /// The parsed error entries (empty when the body had none).
        errors: Vec<ApiErrorItem>,
        /// The start of the raw body, for when parsing found nothing.
        body: String,
    },
    /// A 2xx answer that cannot be what Salesforce sends (a token answer
    /// without a token, an instance URL that is not a URL).
    #[error("Salesforce sent an unexpected answer to {operation}: {detail}")]
    Unexpected {
        /// `token` or `upsert_task`.
        operation: &'static str,
        /// What was wrong with the answer.
        detail: String,
    },
}

fn secret_source(path: &Option<PathBuf>) -> String {
    match path {
        Some(path) => path.display().to_string(),
        None => "salesforce.client_secret".to_owned(),
    }
}

/// What to check when the token endpoint refuses a login.
fn login_hint(auth: SalesforceAuth) -> &'static str {
    match auth {
        SalesforceAuth::JwtBearer => {
            "check the connected app's consumer key and certificate, and that the user is pre-authorised for the app"
        }
        SalesforceAuth::ClientCredentials => {
            "check the connected app's consumer key and secret, that it has the client credentials flow enabled with \
             a Run As user, and that salesforce.login_url is the org's My Domain"
        }
    }
}

fn summary(errors: &[ApiErrorItem], body: &str) -> String {
    if errors.is_empty() {
        return if body.is_empty() { "no body".to_owned() } else { body.to_owned() };
    }
    errors
        .iter()
        .map(|e| {
            if e.fields.is_empty() {
                format!("{}: {}", e.error_code, e.message)
            } else {
                format!("{}: {} (fields: {})", e.error_code, e.message, e.fields.join(", "))
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

impl SalesforceError {
    /// How the connector treats this error.
    pub fn class(&self) -> ErrorClass {
        match self {
            SalesforceError::KeyFile { .. }
            | SalesforceError::Key { .. }
            | SalesforceError::ClientSecret { .. }
            | SalesforceError::Client(_) => ErrorClass::Limit,
            SalesforceError::Login { status, .. } if *status >= 500 => ErrorClass::Retryable,
            SalesforceError::Login { .. } => ErrorClass::Limit,
            SalesforceError::Transport { .. } => ErrorClass::Retryable,
            SalesforceError::Unexpected { .. } => ErrorClass::Retryable,
            SalesforceError::Api { status, errors, .. } => classify(*status, errors),
        }
    }

    /// The first error code Salesforce gave, or a synthetic one naming the
    /// status, for dead-letter reasons and logs.
    pub fn error_code(&self) -> String {
        match self {
            SalesforceError::Api { status, errors, .. } => errors
                .iter()
                .map(|e| e.error_code.as_str())
                .find(|c| !c.is_empty())
                .map(str::to_owned)
                .unwrap_or_else(|| match status {
                    300 => "MULTIPLE_CHOICES".to_owned(),
                    s => format!("HTTP_{s}"),
                }),
            SalesforceError::Login { error, .. } => error.clone(),
            SalesforceError::Transport { source, .. } if source.is_timeout() => "TIMEOUT".to_owned(),
            SalesforceError::Transport { .. } => "NETWORK".to_owned(),
            SalesforceError::Unexpected { .. } => "UNEXPECTED_RESPONSE".to_owned(),
            SalesforceError::KeyFile { .. }
            | SalesforceError::Key { .. }
            | SalesforceError::ClientSecret { .. }
            | SalesforceError::Client(_) => "CONFIGURATION".to_owned(),
        }
    }

    /// The error message for dead-letter reasons, without the status prefix.
    pub fn detail(&self) -> String {
        match self {
            SalesforceError::Api { errors, body, .. } => summary(errors, body),
            other => other.to_string(),
        }
    }

    /// The access token is no longer valid: renew it and retry once.
    pub fn is_invalid_session(&self) -> bool {
        matches!(self, SalesforceError::Api { status: 401, .. })
    }

    /// Salesforce refused to set `field` on this write (it is create-only
    /// and the Task already exists, or the org does not allow it).
    pub fn refuses_field(&self, field: &str) -> bool {
        match self {
            SalesforceError::Api { status: 400, errors, .. } => errors.iter().any(|e| {
                e.error_code == "INVALID_FIELD_FOR_INSERT_UPDATE"
                    && (e.fields.iter().any(|f| f == field) || e.message.contains(field))
            }),
            _ => false,
        }
    }

    /// The refusal of one record of an sObject Collections request, read
    /// like the answer of a single-record call would be.
    pub fn record(operation: &'static str, errors: Vec<ApiErrorItem>) -> SalesforceError {
        SalesforceError::Api { operation, status: 400, errors, body: String::new() }
    }
}

/// Classifies an error answer of the REST API by status and error codes.
pub fn classify(status: u16, errors: &[ApiErrorItem]) -> ErrorClass {
    let has = |code: &str| errors.iter().any(|e| e.error_code == code);
    if status == 401 {
        ErrorClass::Token
    } else if has("REQUEST_LIMIT_EXCEEDED") || status == 429 {
        ErrorClass::Limit
    } else if has("UNABLE_TO_LOCK_ROW") || has("SERVER_UNAVAILABLE") || status >= 500 || status == 408 {
        ErrorClass::Retryable
    } else {
        ErrorClass::Permanent
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(code: &str) -> ApiErrorItem {
        ApiErrorItem { error_code: code.into(), message: "m".into(), fields: vec![] }
    }

    #[test]
    fn classification() {
        assert_eq!(classify(503, &[item("SERVER_UNAVAILABLE")]), ErrorClass::Retryable);
        assert_eq!(classify(500, &[]), ErrorClass::Retryable);
        assert_eq!(classify(400, &[item("UNABLE_TO_LOCK_ROW")]), ErrorClass::Retryable);
        assert_eq!(classify(401, &[item("INVALID_SESSION_ID")]), ErrorClass::Token);
        assert_eq!(classify(403, &[item("REQUEST_LIMIT_EXCEEDED")]), ErrorClass::Limit);
        assert_eq!(classify(400, &[item("FIELD_CUSTOM_VALIDATION_EXCEPTION")]), ErrorClass::Permanent);
        assert_eq!(classify(404, &[item("NOT_FOUND")]), ErrorClass::Permanent);
        assert_eq!(classify(300, &[]), ErrorClass::Permanent);
        assert_eq!(classify(403, &[item("INSUFFICIENT_ACCESS")]), ErrorClass::Permanent);
    }

    #[test]
    fn codes_and_field_refusals() {
        let err = SalesforceError::Api {
            operation: "upsert_task",
            status: 400,
            errors: vec![ApiErrorItem {
                error_code: "INVALID_FIELD_FOR_INSERT_UPDATE".into(),
                message: "Unable to create/update fields: TaskSubtype. Please check the security settings of this field and verify that it is read/write for your profile or permission set.".into(),
                fields: vec!["TaskSubtype".into()],
            }],
            body: String::new(),
        };
        assert!(err.refuses_field("TaskSubtype"));
        assert!(!err.refuses_field("Subject"));
        assert_eq!(err.error_code(), "INVALID_FIELD_FOR_INSERT_UPDATE");
        assert!(err.to_string().contains("(fields: TaskSubtype)"), "{err}");

        let multiple = SalesforceError::Api { operation: "upsert_task", status: 300, errors: vec![], body: "[\"/a\",\"/b\"]".into() };
        assert_eq!(multiple.error_code(), "MULTIPLE_CHOICES");
        assert_eq!(multiple.class(), ErrorClass::Permanent);
        assert!(multiple.detail().contains("/a"));

        let login = SalesforceError::Login {
            auth: SalesforceAuth::JwtBearer,
            username: "u".into(),
            status: 400,
            error: "invalid_grant".into(),
            description: "user hasn't approved this consumer".into(),
        };
        assert_eq!(login.class(), ErrorClass::Limit);
        assert_eq!(login.error_code(), "invalid_grant");
        assert!(login.to_string().contains("certificate"), "{login}");

        // A refused client credentials login waits as long as a refused JWT.
        let login = SalesforceError::Login {
            auth: SalesforceAuth::ClientCredentials,
            username: "the Run As user of connected app 3MVG9key".into(),
            status: 400,
            error: "invalid_client".into(),
            description: "invalid client credentials".into(),
        };
        assert_eq!(login.class(), ErrorClass::Limit);
        assert_eq!(login.error_code(), "invalid_client");
        let shown = login.to_string();
        assert!(shown.contains("(400 invalid_client: invalid client credentials)"), "{shown}");
        assert!(shown.contains("client credentials flow enabled with a Run As user"), "{shown}");
        let unavailable = SalesforceError::Login {
            auth: SalesforceAuth::ClientCredentials,
            username: "the Run As user of connected app 3MVG9key".into(),
            status: 503,
            error: "HTTP_503".into(),
            description: "down".into(),
        };
        assert_eq!(unavailable.class(), ErrorClass::Retryable);

        let secret = SalesforceError::ClientSecret { path: Some("/run/secrets/sf".into()), reason: "the file is empty".into() };
        assert_eq!(secret.class(), ErrorClass::Limit);
        assert_eq!(secret.error_code(), "CONFIGURATION");
        assert!(secret.to_string().contains("/run/secrets/sf: the file is empty"), "{secret}");
    }
}
