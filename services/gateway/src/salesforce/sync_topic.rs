//! The Salesforce sync status of calls from the connector's status topic
//! (`events.log = "kafka"`): after every batch it writes, the connector
//! publishes one `TaskSyncStatus` per (call, agent) whose Task status
//! changed, keyed by call id; each record becomes the agent's `call.synced`
//! ([`view_of_status`], then [`LiveCalls::set_sync`]).
//!
//! Every gateway must see every status, because the agent of a call may be
//! signed in to any of them. So the reader joins no consumer group: it
//! assigns itself all partitions of the topic (looked up again every
//! [`PARTITIONS_EVERY`], so partitions added later are read too) and
//! commits nothing. librdkafka's consumer takes a `group.id` even so; the
//! one set here is never joined and holds no offsets.
//!
//! Where it starts: a status only matters while its call is on a softphone,
//! that is live or ended less than [`ENDED_GRACE_MS`] ago, and calls live in
//! this process only. Each partition is read from the first record
//! published at or after the gateway's start less that grace period (the
//! broker's offset for that time; the `sync_tasks` poller starts from the
//! same moment), or from its end when it has none; a partition found later
//! (the broker was down at start, or the topic was created or grown since)
//! is read from the same moment, so nothing published while the gateway
//! waited for it is missed. Statuses of one call share a partition and
//! arrive in order, and the latest one is what the agent keeps.
//!
//! A record that is not a status is counted
//! (`switchboard_sync_status_unreadable_total`), logged and skipped. A
//! broker that is down is retried by librdkafka; the reader logs and waits,
//! and the gateway keeps running.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{Offset, TopicPartitionList};
use switchboard_store::now_ms;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::sync::view_of_status;
use crate::calls::live::{LiveCalls, ENDED_GRACE_MS};
use crate::config::KafkaProducerConfig;

/// How often the topic's partitions are looked up: until the first are
/// found (the broker or the topic may not be there yet), then to find
/// partitions added since.
pub const PARTITIONS_EVERY: Duration = Duration::from_secs(10);

/// Longest wait for one metadata or offset request to the broker.
const BROKER_TIMEOUT: Duration = Duration::from_secs(5);

/// The reader of the status topic could not be created.
#[derive(Debug, thiserror::Error)]
#[error("cannot create the Kafka consumer of the status topic {topic} at {brokers}: {source}; check kafka.brokers, kafka.status_topic and kafka.properties")]
pub struct StatusTopicError {
    topic: String,
    brokers: String,
    #[source]
    source: Box<KafkaError>,
}

/// The consumer of the status topic. The broker need not be reachable yet.
pub fn consumer(cfg: &KafkaProducerConfig) -> Result<StreamConsumer, StatusTopicError> {
    cfg.client()
        .set("bootstrap.servers", &cfg.brokers)
        .set("client.id", format!("{}-task-sync", cfg.client_id))
        // Never joined (no subscribe) and never committed to: see the module.
        .set("group.id", format!("{}-task-sync", cfg.client_id))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false")
        // Only when a start offset is gone (retention): what comes next is what matters.
        .set("auto.offset.reset", "latest")
        .create()
        .map_err(|source| StatusTopicError { topic: cfg.status_topic.clone(), brokers: cfg.brokers.clone(), source: Box::new(source) })
}

/// Reads the status topic until `shutdown` and shows each agent its Task's
/// status.
pub async fn run(consumer: StreamConsumer, topic: String, live: LiveCalls, shutdown: CancellationToken) {
    let consumer = Arc::new(consumer);
    let since_ms = now_ms() - ENDED_GRACE_MS;
    let mut assigned: BTreeSet<i32> = BTreeSet::new();
    let mut trouble: Option<String> = None;
    let mut look = tokio::time::interval(PARTITIONS_EVERY);
    look.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failures = 0u32;
    info!(topic, "reading the Salesforce sync status of calls from the status topic");
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = look.tick() => {
                let (c, t, known) = (consumer.clone(), topic.clone(), assigned.clone());
                let found = tokio::select! {
                    _ = shutdown.cancelled() => break,
                    found = tokio::task::spawn_blocking(move || new_partitions(&c, &t, since_ms, &known)) => found,
                };
                let found = found.unwrap_or_else(|e| Err(format!("the partition look-up stopped: {e}")));
                match found.and_then(|start| assign(&consumer, &topic, start)) {
                    Ok(added) => {
                        if !added.is_empty() {
                            info!(topic, partitions = ?added, "reading Task sync statuses from these partitions");
                            assigned.extend(added);
                        }
                        trouble = None;
                    }
                    Err(why) if assigned.is_empty() => {
                        if trouble.as_ref() != Some(&why) {
                            warn!(topic, reason = %why, "cannot read the status topic yet; agents see their Tasks' sync status once it can be read (check kafka.brokers, and that the connector's status topic exists)");
                        }
                        trouble = Some(why);
                    }
                    // Already reading: only partitions added since wait.
                    Err(why) => debug!(topic, reason = %why, "looking for new partitions of the status topic failed"),
                }
            }
            received = consumer.recv() => match received {
                Ok(message) => {
                    failures = 0;
                    show(&live, &message);
                }
                Err(error) => {
                    warn!(topic, %error, "reading the status topic failed; retrying (is the broker up?)");
                    let pause = Duration::from_millis(200 * 2u64.pow(failures.min(6))).min(Duration::from_secs(10));
                    failures = failures.saturating_add(1);
                    tokio::select! { _ = shutdown.cancelled() => break, _ = tokio::time::sleep(pause) => {} }
                }
            },
        }
    }
    info!(topic, "stopped reading the status topic");
}

/// Shows one record to the agent it names; counts and skips what is not a
/// status.
fn show(live: &LiveCalls, message: &BorrowedMessage<'_>) {
    let origin = format!("{}/{}@{}", message.topic(), message.partition(), message.offset());
    match view_of_status(message.payload().unwrap_or_default()) {
        Ok((call_id, user_id, view)) => {
            debug!(%call_id, %user_id, state = ?view.state, origin, "Task sync status");
            live.set_sync(&call_id, &user_id, view);
        }
        Err(why) => {
            metrics::counter!("switchboard_sync_status_unreadable_total").increment(1);
            let call_id = message.key().map(String::from_utf8_lossy).unwrap_or_default();
            warn!(%call_id, origin, reason = %why, "skipped a record of the status topic that is no Task sync status this gateway can read; the agent is not told about this Task until a readable status follows");
        }
    }
}

/// The partitions of `topic` not in `known`, each with where to start
/// reading it: the first record at or after `since_ms`, else its end.
/// Blocking (librdkafka requests); an error says why in a log line.
fn new_partitions(consumer: &StreamConsumer, topic: &str, since_ms: i64, known: &BTreeSet<i32>) -> Result<TopicPartitionList, String> {
    let metadata = consumer.fetch_metadata(Some(topic), BROKER_TIMEOUT).map_err(|e| format!("no answer from the broker: {e}"))?;
    let listed = metadata.topics().iter().find(|t| t.name() == topic).ok_or_else(|| format!("the broker does not list topic {topic}"))?;
    if let Some(e) = listed.error() {
        return Err(format!("topic {topic}: {}", rdkafka::types::RDKafkaErrorCode::from(e)));
    }
    let fresh: Vec<i32> = listed.partitions().iter().map(|p| p.id()).filter(|p| !known.contains(p)).collect();
    let mut start = TopicPartitionList::new();
    if fresh.is_empty() {
        return Ok(start);
    }
    let mut times = TopicPartitionList::new();
    for &p in &fresh {
        times.add_partition_offset(topic, p, Offset::Offset(since_ms)).map_err(|e| e.to_string())?;
    }
    let by_time = consumer
        .offsets_for_times(times, BROKER_TIMEOUT)
        .inspect_err(|e| debug!(topic, error = %e, "the broker could not find offsets by time; reading new partitions from their end"))
        .ok();
    for p in fresh {
        let found = by_time.as_ref().and_then(|t| t.find_partition(topic, p)).filter(|e| e.error().is_ok()).map(|e| e.offset());
        let offset = match found {
            Some(Offset::Offset(o)) if o >= 0 => o,
            // Nothing that recent: from the end as it is now, so a record
            // published from here on is read.
            _ => consumer.fetch_watermarks(topic, p, BROKER_TIMEOUT).map_err(|e| format!("partition {p}: no end offset: {e}"))?.1,
        };
        start.add_partition_offset(topic, p, Offset::Offset(offset)).map_err(|e| e.to_string())?;
    }
    Ok(start)
}

/// Adds `start` to what the consumer reads; the partitions added.
fn assign(consumer: &StreamConsumer, topic: &str, start: TopicPartitionList) -> Result<Vec<i32>, String> {
    if start.count() == 0 {
        return Ok(Vec::new());
    }
    consumer.incremental_assign(&start).map_err(|e| format!("cannot assign the partitions of {topic}: {e}"))?;
    Ok(start.elements_for_topic(topic).iter().map(|e| e.partition()).collect())
}
