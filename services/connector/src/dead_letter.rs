//! Dead letters: events the connector cannot apply, set aside with their
//! reason instead of being dropped or blocking the log.
//!
//! In outbox mode they go to the `dead_letters` table; in Kafka mode to the
//! dead-letter topic, with the reason in headers, keyed like the original
//! record. Either way `switchboard replay` can feed them back once the cause
//! is fixed.

use std::time::Duration;

use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use tokio_util::sync::CancellationToken;

use crate::metrics as m;
use crate::sink::ShutdownRequested;
use crate::store::SyncStore;

/// Header with the full reason of a dead-lettered record.
pub const HEADER_REASON: &str = "switchboard-dead-letter-reason";
/// Header with the short label (`undecodable`, `invalid_event`, `salesforce_rejected`).
pub const HEADER_LABEL: &str = "switchboard-dead-letter-label";
/// Header with Salesforce's error code, when Salesforce refused the write.
pub const HEADER_ERROR_CODE: &str = "switchboard-error-code";
/// Header naming where the record was read: `<topic>/<partition>@<offset>`.
pub const HEADER_ORIGIN: &str = "switchboard-origin";

/// An event set aside with the reason it could not be applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// The call the event belongs to (the record key when undecodable).
    pub call_id: String,
    /// The record as received (the encoded `CallEvent`, or whatever bytes
    /// could not be decoded).
    pub payload: Vec<u8>,
    /// Short label: `undecodable`, `invalid_event` or `salesforce_rejected`.
    pub label: &'static str,
    /// Salesforce's error code when Salesforce refused the write.
    pub error_code: Option<String>,
    /// The full reason, for operators and `switchboard replay`.
    pub reason: String,
    /// Where the record was read (outbox row, topic partition and offset).
    pub origin: String,
}

/// Where dead letters go.
#[derive(Clone)]
pub enum DeadLetterQueue {
    /// The `dead_letters` table (outbox mode).
    Table(SyncStore),
    /// A Kafka topic (Kafka mode).
    Topic {
        /// Idempotent producer, so retried sends leave one copy.
        producer: FutureProducer,
        /// The dead-letter topic.
        topic: String,
    },
}

impl std::fmt::Debug for DeadLetterQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeadLetterQueue::Table(_) => f.write_str("DeadLetterQueue::Table"),
            DeadLetterQueue::Topic { topic, .. } => write!(f, "DeadLetterQueue::Topic({topic})"),
        }
    }
}

/// Storing a dead letter failed in a way the caller must handle.
#[derive(Debug, thiserror::Error)]
pub enum DeadLetterError {
    /// The table could not be written; the record is retried.
    #[error("dead letter could not be stored: {0}")]
    Store(#[from] switchboard_store::sqlx::Error),
    /// Shutdown came while the broker did not take the record.
    #[error(transparent)]
    Shutdown(#[from] ShutdownRequested),
}

impl DeadLetterQueue {
    /// Stores `letter`. The topic variant retries until the broker
    /// acknowledges or shutdown is requested: a dead letter is never dropped.
    pub async fn put(&self, letter: &DeadLetter, shutdown: &CancellationToken) -> Result<(), DeadLetterError> {
        match self {
            DeadLetterQueue::Table(store) => store.insert_dead_letter(letter).await?,
            DeadLetterQueue::Topic { producer, topic } => {
                let mut delay = Duration::from_millis(200);
                loop {
                    let mut headers = OwnedHeaders::new()
                        .insert(Header { key: HEADER_REASON, value: Some(letter.reason.as_str()) })
                        .insert(Header { key: HEADER_LABEL, value: Some(letter.label) })
                        .insert(Header { key: HEADER_ORIGIN, value: Some(letter.origin.as_str()) });
                    if let Some(code) = &letter.error_code {
                        headers = headers.insert(Header { key: HEADER_ERROR_CODE, value: Some(code.as_str()) });
                    }
                    let record = FutureRecord::to(topic)
                        .key(letter.call_id.as_str())
                        .payload(letter.payload.as_slice())
                        .headers(headers);
                    let sent = tokio::select! {
                        _ = shutdown.cancelled() => return Err(ShutdownRequested.into()),
                        sent = producer.send(record, Timeout::After(Duration::from_secs(30))) => sent,
                    };
                    match sent {
                        Ok(_) => break,
                        Err((error, _)) => {
                            m::stall("kafka");
                            tracing::error!(call_id = %letter.call_id, topic, %error, "dead-letter topic did not take the record; retrying");
                            tokio::select! {
                                _ = shutdown.cancelled() => return Err(ShutdownRequested.into()),
                                _ = tokio::time::sleep(delay) => {}
                            }
                            delay = (delay * 2).min(Duration::from_secs(30));
                        }
                    }
                }
            }
        }
        m::dead_letter(letter.label);
        tracing::warn!(
            call_id = %letter.call_id,
            label = letter.label,
            error_code = letter.error_code.as_deref().unwrap_or(""),
            origin = %letter.origin,
            reason = %letter.reason,
            "event dead-lettered"
        );
        Ok(())
    }
}
