//! Failures a test can make the emulated org produce on demand.
//!
//! Salesforce fails in ways a client must survive: the server is briefly
//! unavailable (503), a row is locked by another transaction, the daily limit
//! runs out, an internal error happens, one record of a batch is refused, or an
//! answer is slow. Faults are queued and consumed in order by the next matching
//! requests, so a test states exactly how many failures happen.

use std::collections::VecDeque;
use std::time::Duration;

use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use crate::errors::{ApiError, RecordError};

/// A failure to inject. Request faults apply to the next REST data requests
/// (under `/services/data/vNN.0/`), after authentication and limit counting;
/// record faults to the next writes of a record with the given external id.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Fault {
    /// 503 `SERVER_UNAVAILABLE` for the next `times` requests.
    ServerUnavailable {
        /// How many requests fail.
        #[serde(default = "one")]
        times: u32,
    },
    /// 400 `UNABLE_TO_LOCK_ROW` for the next `times` requests.
    UnableToLockRow {
        /// How many requests fail.
        #[serde(default = "one")]
        times: u32,
    },
    /// 403 `REQUEST_LIMIT_EXCEEDED` for the next `times` requests, whatever
    /// the usage counter says.
    RequestLimitExceeded {
        /// How many requests fail.
        #[serde(default = "one")]
        times: u32,
    },
    /// 500 `UNKNOWN_EXCEPTION` for the next `times` requests.
    InternalError {
        /// How many requests fail.
        #[serde(default = "one")]
        times: u32,
    },
    /// Any status and error code for the next `times` requests.
    Http {
        /// HTTP status to answer.
        status: u16,
        /// Salesforce `errorCode`.
        error_code: String,
        /// Message of the error.
        message: String,
        /// How many requests fail.
        #[serde(default = "one")]
        times: u32,
    },
    /// The next `times` requests are answered normally, `millis` late.
    Delay {
        /// Added latency in milliseconds.
        millis: u64,
        /// How many requests are slowed.
        #[serde(default = "one")]
        times: u32,
    },
    /// The next `times` writes of the record whose external id equals
    /// `external_id` fail with `error_code`: 400 in single-record calls, a
    /// per-record error in collections.
    RecordError {
        /// External id value of the record to refuse.
        external_id: String,
        /// Salesforce status code, e.g. `UNABLE_TO_LOCK_ROW`.
        error_code: String,
        /// Message of the error.
        message: String,
        /// How many writes fail.
        #[serde(default = "one")]
        times: u32,
    },
    /// The next `times` token requests answer `status` with this OAuth error.
    TokenError {
        /// HTTP status to answer.
        status: u16,
        /// OAuth `error`, e.g. `invalid_grant`.
        error: String,
        /// OAuth `error_description`.
        error_description: String,
        /// How many token requests fail.
        #[serde(default = "one")]
        times: u32,
    },
}

fn one() -> u32 {
    1
}

impl Fault {
    /// A record fault with Salesforce's lock-contention error.
    pub fn locked_record(external_id: impl Into<String>) -> Fault {
        Fault::RecordError {
            external_id: external_id.into(),
            error_code: "UNABLE_TO_LOCK_ROW".to_owned(),
            message: "unable to obtain exclusive access to this record".to_owned(),
            times: 1,
        }
    }

    fn times_mut(&mut self) -> &mut u32 {
        match self {
            Fault::ServerUnavailable { times }
            | Fault::UnableToLockRow { times }
            | Fault::RequestLimitExceeded { times }
            | Fault::InternalError { times }
            | Fault::Http { times, .. }
            | Fault::Delay { times, .. }
            | Fault::RecordError { times, .. }
            | Fault::TokenError { times, .. } => times,
        }
    }

    fn is_request_fault(&self) -> bool {
        !matches!(self, Fault::RecordError { .. } | Fault::TokenError { .. })
    }
}

/// What a request fault does to the request it hits.
#[derive(Debug)]
pub(crate) enum RequestEffect {
    /// Answer this error instead of handling the request.
    Fail(ApiError),
    /// Handle the request after this delay.
    Delay(Duration),
}

/// An OAuth error to answer from the token endpoint.
#[derive(Debug)]
pub(crate) struct TokenFailure {
    pub status: StatusCode,
    pub error: String,
    pub description: String,
}

/// The queue of pending faults, oldest first.
#[derive(Debug, Default)]
pub(crate) struct FaultQueue {
    pending: VecDeque<Fault>,
}

impl FaultQueue {
    /// Queues a fault; one with `times == 0` does nothing.
    pub(crate) fn push(&mut self, fault: Fault) {
        let mut fault = fault;
        if *fault.times_mut() > 0 {
            self.pending.push_back(fault);
        }
    }

    /// Drops every pending fault.
    pub(crate) fn clear(&mut self) {
        self.pending.clear();
    }

    /// Pending faults, for inspection.
    pub(crate) fn pending(&self) -> Vec<Fault> {
        self.pending.iter().cloned().collect()
    }

    /// Consumes one use of the oldest request fault, if any.
    pub(crate) fn take_request_effect(&mut self) -> Option<RequestEffect> {
        let fault = self.consume(Fault::is_request_fault)?;
        let effect = match fault {
            Fault::ServerUnavailable { .. } => RequestEffect::Fail(ApiError::plain(
                StatusCode::SERVICE_UNAVAILABLE,
                "SERVER_UNAVAILABLE",
                "Server temporarily unavailable, please retry your request",
            )),
            Fault::UnableToLockRow { .. } => RequestEffect::Fail(ApiError::record(&RecordError::new(
                "UNABLE_TO_LOCK_ROW",
                "unable to obtain exclusive access to this record",
                &[],
            ))),
            Fault::RequestLimitExceeded { .. } => RequestEffect::Fail(ApiError::plain(
                StatusCode::FORBIDDEN,
                "REQUEST_LIMIT_EXCEEDED",
                "TotalRequests Limit exceeded.",
            )),
            Fault::InternalError { .. } => RequestEffect::Fail(ApiError::plain(
                StatusCode::INTERNAL_SERVER_ERROR,
                "UNKNOWN_EXCEPTION",
                "An unexpected error occurred. Please include this ErrorId if you contact support: 1234567890-12345 (-1234567890)",
            )),
            Fault::Http { status, error_code, message, .. } => RequestEffect::Fail(ApiError::plain(
                StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                &error_code,
                message,
            )),
            Fault::Delay { millis, .. } => RequestEffect::Delay(Duration::from_millis(millis)),
            Fault::RecordError { .. } | Fault::TokenError { .. } => return None,
        };
        Some(effect)
    }

    /// Consumes one use of the oldest record fault for this external id value.
    pub(crate) fn take_record_error(&mut self, external_id: &str) -> Option<RecordError> {
        let fault = self.consume(
            |f| matches!(f, Fault::RecordError { external_id: e, .. } if e == external_id),
        )?;
        match fault {
            Fault::RecordError {
                error_code,
                message,
                ..
            } => Some(RecordError::new(&error_code, message, &[])),
            _ => None,
        }
    }

    /// Consumes one use of the oldest token fault.
    pub(crate) fn take_token_failure(&mut self) -> Option<TokenFailure> {
        match self.consume(|f| matches!(f, Fault::TokenError { .. }))? {
            Fault::TokenError {
                status,
                error,
                error_description,
                ..
            } => Some(TokenFailure {
                status: StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
                error,
                description: error_description,
            }),
            _ => None,
        }
    }

    /// Finds the oldest fault matching `wanted`, uses it once and returns it.
    fn consume(&mut self, wanted: impl Fn(&Fault) -> bool) -> Option<Fault> {
        let index = self.pending.iter().position(wanted)?;
        let fault = self.pending.get_mut(index)?;
        let copy = fault.clone();
        let times = fault.times_mut();
        *times -= 1;
        if *times == 0 {
            self.pending.remove(index);
        }
        Some(copy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_are_used_in_order_and_counted() {
        let mut queue = FaultQueue::default();
        queue.push(Fault::ServerUnavailable { times: 2 });
        queue.push(Fault::locked_record("k1"));
        queue.push(Fault::InternalError { times: 1 });
        let status = |e: Option<RequestEffect>| match e {
            Some(RequestEffect::Fail(err)) => Some(err.status.as_u16()),
            Some(RequestEffect::Delay(_)) => Some(0),
            None => None,
        };
        assert_eq!(status(queue.take_request_effect()), Some(503));
        assert!(queue.take_record_error("k2").is_none());
        assert_eq!(
            queue.take_record_error("k1").map(|e| e.code).as_deref(),
            Some("UNABLE_TO_LOCK_ROW")
        );
        assert!(queue.take_record_error("k1").is_none());
        assert_eq!(status(queue.take_request_effect()), Some(503));
        assert_eq!(status(queue.take_request_effect()), Some(500));
        assert_eq!(status(queue.take_request_effect()), None);
    }

    #[test]
    fn faults_read_from_json_with_default_times() {
        let fault: Fault = serde_json::from_str(r#"{"kind":"server_unavailable"}"#).expect("json");
        assert_eq!(fault, Fault::ServerUnavailable { times: 1 });
        let fault: Fault =
            serde_json::from_str(r#"{"kind":"delay","millis":50,"times":3}"#).expect("json");
        assert_eq!(
            fault,
            Fault::Delay {
                millis: 50,
                times: 3
            }
        );
    }
}
