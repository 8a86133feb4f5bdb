//! The call-event topic, consumed in a consumer group (production).
//!
//! Automatic commits are off: the offsets after a batch's records are
//! committed only once the pipeline wrote the batch (every event applied and
//! its writes accepted by Salesforce, or dead-lettered). Records of one call
//! share a key, hence a partition, and are folded in offset order. A record
//! that does not decode goes to the dead-letter topic and is committed with
//! its batch, so one bad record never blocks a partition.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::FutureExt;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::FutureProducer;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{pause, stall_delay, until};
use crate::config::KafkaConsumerConfig;
use crate::metrics as m;
use crate::pipeline::{Pipeline, PipelineError, Record};
use crate::Progress;

/// Records taken from the consumer at once when it already holds them.
const PREFETCH: usize = 500;

/// A consumer subscribed to the call-event topic.
pub struct KafkaSource {
    consumer: Arc<StreamConsumer>,
    topic: String,
}

impl std::fmt::Debug for KafkaSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSource").field("topic", &self.topic).finish_non_exhaustive()
    }
}

/// The librdkafka settings of the consumer.
pub fn consumer_config(config: &KafkaConsumerConfig) -> ClientConfig {
    let mut client = ClientConfig::new();
    for (key, value) in &config.properties {
        client.set(key, value);
    }
    client
        .set("bootstrap.servers", &config.brokers)
        .set("group.id", &config.group_id)
        .set("client.id", &config.client_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false");
    client
}

/// The librdkafka settings of the dead-letter producer: idempotent, so a
/// retried send does not duplicate a dead letter.
pub fn producer_config(config: &KafkaConsumerConfig) -> ClientConfig {
    let mut client = ClientConfig::new();
    for (key, value) in &config.properties {
        // Consumer-only settings would only produce librdkafka warnings here.
        if !is_consumer_only(key) {
            client.set(key, value);
        }
    }
    client
        .set("bootstrap.servers", &config.brokers)
        .set("client.id", format!("{}-dead-letters", config.client_id))
        .set("enable.idempotence", "true")
        .set("acks", "all");
    client
}

fn is_consumer_only(key: &str) -> bool {
    key.starts_with("session.")
        || key.starts_with("heartbeat.")
        || key.starts_with("fetch.")
        || key.starts_with("max.poll.")
        || key.starts_with("partition.assignment")
        || key.starts_with("group.")
        || key.starts_with("auto.")
        || key.starts_with("isolation.")
}

impl KafkaSource {
    /// Creates the consumer and the dead-letter producer and subscribes to
    /// the topic. The broker need not be reachable yet: librdkafka keeps
    /// trying, and the connector waits.
    pub fn connect(config: &KafkaConsumerConfig) -> Result<(Self, FutureProducer), KafkaError> {
        let consumer: StreamConsumer = consumer_config(config).create()?;
        consumer.subscribe(&[config.topic.as_str()])?;
        let producer: FutureProducer = producer_config(config).create()?;
        Ok((Self { consumer: Arc::new(consumer), topic: config.topic.clone() }, producer))
    }

    /// Feeds every record to `pipeline` until `shutdown`, having a batch
    /// written when it is full or due (while the next one is read) and then
    /// committing the offsets after its records and reporting them on
    /// `progress`; on the way out the last committed offsets are committed
    /// again synchronously.
    pub async fn run(self, mut pipeline: Pipeline, progress: Arc<watch::Sender<Progress>>, shutdown: CancellationToken) {
        tracing::info!(topic = %self.topic, "connector consuming call events from Kafka");
        progress.send_modify(|p| p.consuming = true);
        // Offsets after the records of the batch in hand, of the batch being
        // written, and of written batches.
        let mut in_batch: BTreeMap<(String, i32), i64> = BTreeMap::new();
        let mut writing: BTreeMap<(String, i32), i64> = BTreeMap::new();
        let mut committed: BTreeMap<(String, i32), i64> = BTreeMap::new();
        let mut failures = 0u32;
        'consume: loop {
            if !pipeline.is_writing() && pipeline.is_due() {
                pipeline.start_write();
                writing = std::mem::take(&mut in_batch);
                continue;
            }
            // While a batch is written the next one is read until it is due
            // as well; then only the write is awaited.
            let read = !(pipeline.is_writing() && pipeline.is_due());
            let (deadline, writing_now) = (pipeline.deadline(), pipeline.is_writing());
            let received = tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                flushed = pipeline.written() => {
                    let Some(flushed) = flushed else { break };
                    self.commit(&writing);
                    committed.append(&mut writing);
                    progress.send_modify(|p| {
                        p.records += flushed.records;
                        p.dead_letters += flushed.dead_lettered;
                    });
                    continue;
                }
                _ = until(deadline), if !writing_now => continue,
                received = self.consumer.recv(), if read => received,
            };
            let message = match received {
                Ok(message) => message,
                Err(error) => {
                    tracing::warn!(%error, "Kafka consumer error");
                    m::stall("kafka");
                    if !pause(&shutdown, stall_delay(failures)).await {
                        break;
                    }
                    failures = failures.saturating_add(1);
                    continue;
                }
            };
            failures = 0;
            // What else the consumer already holds goes with it, so the
            // states of their calls are loaded in one round trip.
            let mut messages = vec![message];
            while messages.len() < PREFETCH {
                match self.consumer.recv().now_or_never() {
                    Some(Ok(message)) => messages.push(message),
                    Some(Err(error)) => {
                        tracing::warn!(%error, "Kafka consumer error");
                        break;
                    }
                    None => break,
                }
            }
            let keys: Vec<String> = messages.iter().map(|m| m.key().map(String::from_utf8_lossy).unwrap_or_default().into_owned()).collect();
            let key_refs: Vec<&str> = keys.iter().map(String::as_str).collect();
            if let Err(error) = pipeline.prefetch(&key_refs).await {
                // Each record loads its own state then.
                tracing::warn!(%error, "loading the states of the next records' calls failed");
            }
            for (message, key) in messages.iter().zip(&keys) {
                let payload = message.payload().unwrap_or_default();
                let origin = format!("{}/{}@{}", message.topic(), message.partition(), message.offset());
                let mut attempts = 0u32;
                loop {
                    let record = Record { call_id: key, payload, origin: &origin };
                    match pipeline.handle(record).await {
                        Ok(handled) => {
                            tracing::trace!(call_id = %key, origin, outcome = handled.outcome, "record handled");
                            break;
                        }
                        Err(PipelineError::Shutdown(_)) => break 'consume,
                        Err(PipelineError::Store(error)) => {
                            tracing::error!(%error, call_id = %key, origin, "connector database failed; retrying the record");
                            m::stall("store");
                            if !pause(&shutdown, stall_delay(attempts)).await {
                                break 'consume;
                            }
                            attempts = attempts.saturating_add(1);
                        }
                    }
                }
                in_batch.insert((message.topic().to_owned(), message.partition()), message.offset() + 1);
            }
        }
        // A write still in flight ends soon once shut down; committed if it
        // got through.
        if pipeline.is_writing() && pipeline.written().await.is_some() {
            committed.append(&mut writing);
        }
        self.commit_final(committed).await;
        tracing::info!(topic = %self.topic, "connector stopped consuming");
    }

    /// Commits `offsets` without waiting: a lost commit only means the
    /// records are delivered again, and they are idempotent.
    fn commit(&self, offsets: &BTreeMap<(String, i32), i64>) {
        if offsets.is_empty() {
            return;
        }
        let mut list = TopicPartitionList::new();
        for ((topic, partition), offset) in offsets {
            let _ = list.add_partition_offset(topic, *partition, Offset::Offset(*offset));
        }
        if let Err(error) = self.consumer.commit(&list, CommitMode::Async) {
            tracing::warn!(%error, "offset commit failed; the batch's records may be delivered again");
        }
    }

    /// Commits the offsets after the last handled records and waits for the
    /// broker's answer, so a restart resumes exactly there.
    async fn commit_final(&self, handled: BTreeMap<(String, i32), i64>) {
        if handled.is_empty() {
            return;
        }
        let mut offsets = TopicPartitionList::new();
        for ((topic, partition), offset) in &handled {
            let _ = offsets.add_partition_offset(topic, *partition, Offset::Offset(*offset));
        }
        let consumer = self.consumer.clone();
        let committed = tokio::task::spawn_blocking(move || consumer.commit(&offsets, CommitMode::Sync)).await;
        match committed {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::warn!(%error, "final offset commit failed; the last records may be delivered again"),
            Err(error) => tracing::warn!(%error, "final offset commit did not run"),
        }
    }
}
