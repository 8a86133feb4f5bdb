//! The connector role: consumes call events and keeps one Salesforce Task
//! per (call, agent) in step with them.
//!
//! The rooms, from input to output:
//! - [`source`]: the event log, either the outbox table or the Kafka topic;
//! - [`pipeline`]: records folded one at a time, written in batches;
//! - [`fold`]: the pure state machine deciding what each Task holds;
//! - [`store`]: the folded state, cursors and dead letters in the database;
//! - [`sink`]: sObject Collections upserts of a batch's Tasks, retried
//!   record by record until Salesforce accepts or refuses each;
//! - [`pacing`]: spaces requests out as the org's daily API usage nears its limit;
//! - [`salesforce`]: the REST client (JWT bearer or client credentials login,
//!   upsert, describe, error bodies);
//! - [`preflight`]: the start-up check that the org can take the writes;
//! - [`dead_letter`]: where refused events go;
//! - [`status`]: each Task's sync status on the status topic, for the gateway.
//!
//! The binary calls [`Connector::start`] with its [`ConnectorConfig`] and
//! waits on the [`RunningConnector`].

#![warn(missing_docs)]

pub mod config;
pub mod dead_letter;
pub mod fold;
pub mod metrics;
pub mod pacing;
pub mod pipeline;
pub mod preflight;
pub mod salesforce;
pub mod sink;
pub mod source;
pub mod status;
pub mod store;

use std::sync::Arc;
use std::time::Duration;

use switchboard_store::{Database, StoreError};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use config::{ConfigError, ConnectorConfig, KafkaConsumerConfig, SalesforceAuth, SalesforceConfig, Secret, SourceConfig};

use crate::dead_letter::DeadLetterQueue;
use crate::pacing::{Pacer, PacingPolicy};
use crate::pipeline::{BatchPolicy, Pipeline};
use crate::salesforce::{SalesforceClient, SalesforceError};
use crate::sink::{RetryPolicy, TaskSink};
use crate::source::kafka::KafkaSource;
use crate::source::outbox::OutboxSource;
use crate::status::StatusPublisher;
use crate::store::SyncStore;

/// Why the connector could not start or stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    /// A configuration value is wrong; the message names the key.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The database is unreachable or its schema is not current.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The Salesforce client cannot be set up (private key, TLS).
    #[error(transparent)]
    Salesforce(#[from] SalesforceError),
    /// The org cannot take the connector's writes (an external id field is
    /// missing or not an external id, a written field is not writable by the
    /// integration user); the message lists every problem and the fix.
    #[error("Salesforce preflight failed: {0}")]
    Preflight(String),
    /// The Kafka clients cannot be created (bad librdkafka setting).
    #[error("cannot set up the Kafka consumer: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// The connector's task ended by a panic or was aborted.
    #[error("the connector task failed: {0}")]
    Crashed(String),
}

/// Entry point of the connector role.
#[derive(Debug)]
pub struct Connector;

/// A started connector; resolves when it has stopped.
#[derive(Debug)]
pub struct RunningConnector {
    task: JoinHandle<()>,
    progress: watch::Receiver<Progress>,
}

/// How far the connector got since it started: for readiness reporting,
/// and for tests that await a position instead of sleeping.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Progress {
    /// The connector reads its log (false while no Salesforce org is configured).
    pub consuming: bool,
    /// Records handled and committed since start (applied, duplicate or
    /// dead-lettered), counted when the batch holding them is written.
    pub records: u64,
    /// Dead letters stored since start.
    pub dead_letters: u64,
    /// The outbox cursor (outbox source only): every row up to it is handled.
    pub outbox_position: Option<i64>,
    /// The wait before the next Salesforce request while the org's daily
    /// API usage is near its limit; `None` when requests are not held back.
    pub pacing: Option<Duration>,
}

impl Connector {
    /// Checks the configuration and the schema, sets up the Salesforce
    /// client, checks the org can take the writes ([`preflight`]: a
    /// misconfigured org fails the start, an unreachable one does not) and
    /// the source, and starts consuming in a background task
    /// that stops when `shutdown` is cancelled, after the record in hand is
    /// committed or left for redelivery.
    ///
    /// Without a Salesforce org configured nothing is consumed: events stay
    /// in the log (outbox rows, topic) and the backlog syncs from the start
    /// once the connector is restarted with an org.
    pub async fn start(
        config: ConnectorConfig,
        db: Database,
        shutdown: CancellationToken,
    ) -> Result<RunningConnector, ConnectorError> {
        config.validate()?;
        metrics::describe();
        db.check_migrated().await?;

        let (progress_tx, progress) = watch::channel(Progress::default());
        let Some(salesforce) = config.salesforce else {
            tracing::info!(
                "no Salesforce org configured: call events are kept in the log and will sync once an org is configured"
            );
            let task = tokio::spawn(async move {
                shutdown.cancelled().await;
                drop(progress_tx);
            });
            return Ok(RunningConnector { task, progress });
        };

        let policy = RetryPolicy {
            initial: Duration::from_millis(salesforce.retry_initial_ms),
            max: Duration::from_millis(salesforce.retry_max_ms),
            limit: Duration::from_secs(salesforce.limit_backoff_secs),
        };
        let pacer = Pacer::new(PacingPolicy {
            slow_down_at: f64::from(salesforce.slow_down_at_percent) / 100.0,
            reserve: f64::from(salesforce.limit_reserve_percent) / 100.0,
            max_spacing: Duration::from_secs(salesforce.limit_backoff_secs),
        });
        let batching = BatchPolicy {
            max_calls: salesforce.batch_max_tasks,
            deadline: Duration::from_millis(salesforce.batch_deadline_ms),
            update_deadline: Duration::from_millis(salesforce.batch_update_deadline_ms),
        };
        let client = SalesforceClient::new(salesforce)?;
        match preflight::run(&client, preflight::TIMEOUT).await {
            preflight::Verdict::Ready => tracing::info!("Salesforce preflight passed: Task and Case take the connector's writes"),
            preflight::Verdict::Misconfigured(message) => return Err(ConnectorError::Preflight(message)),
            preflight::Verdict::Unchecked(reason) => tracing::warn!(
                reason = %reason,
                "Salesforce preflight skipped: the org could not be asked; starting anyway, writes are retried until Salesforce answers"
            ),
        }
        let progress_tx = Arc::new(progress_tx);
        let sink = TaskSink::new(client, policy, pacer, progress_tx.clone(), shutdown.clone());
        let store = SyncStore::new(db.clone());

        let task = match config.source {
            SourceConfig::Outbox => {
                let pipeline = Pipeline::new(store.clone(), sink, DeadLetterQueue::Table(store), StatusPublisher::Table, batching, shutdown.clone());
                let source = OutboxSource::new(&db, Duration::from_millis(config.poll_interval_ms));
                tokio::spawn(source.run(pipeline, progress_tx, shutdown))
            }
            SourceConfig::Kafka(kafka) => {
                let (source, producer) = KafkaSource::connect(&kafka)?;
                let statuses = StatusPublisher::Topic { producer: producer.clone(), topic: kafka.status_topic.clone() };
                let dead_letters = DeadLetterQueue::Topic { producer, topic: kafka.dead_letter_topic.clone() };
                let pipeline = Pipeline::new(store, sink, dead_letters, statuses, batching, shutdown.clone());
                tokio::spawn(source.run(pipeline, progress_tx, shutdown))
            }
        };
        Ok(RunningConnector { task, progress })
    }
}

impl RunningConnector {
    /// A receiver of the connector's progress, updated after every
    /// committed record.
    pub fn progress(&self) -> watch::Receiver<Progress> {
        self.progress.clone()
    }

    /// Waits until the connector has stopped (after shutdown was requested).
    pub async fn wait(self) -> Result<(), ConnectorError> {
        self.task.await.map_err(|e| ConnectorError::Crashed(e.to_string()))
    }
}
