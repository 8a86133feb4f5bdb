//! The outbox relay: publishes committed call events to the Kafka topic
//! with an idempotent producer, keyed by call id so each call's events stay
//! in order on one partition, then stamps them as published.
//!
//! At-least-once: a crash between the broker's acknowledgement and the
//! stamp republishes those rows; consumers deduplicate by event id/sequence.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use switchboard_store::Outbox;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::KafkaProducerConfig;

/// The relay could not be created.
#[derive(Debug, thiserror::Error)]
#[error("cannot create the Kafka producer for {brokers}: {source}; check kafka.brokers and kafka.properties")]
pub struct RelayError {
    brokers: String,
    #[source]
    source: rdkafka::error::KafkaError,
}

/// Most rows published per round.
const BATCH: i64 = 500;

/// Builds the idempotent producer.
pub fn producer(cfg: &KafkaProducerConfig) -> Result<FutureProducer, RelayError> {
    cfg.client()
        .set("bootstrap.servers", &cfg.brokers)
        .set("client.id", &cfg.client_id)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("message.timeout.ms", "30000")
        .create()
        .map_err(|source| RelayError { brokers: cfg.brokers.clone(), source })
}

/// Publishes outbox rows until shutdown. Waits on `committed` when idle,
/// with a periodic sweep as a safety net.
pub async fn run(outbox: Outbox, producer: FutureProducer, topic: String, committed: Arc<Notify>, shutdown: CancellationToken) {
    info!(topic, "outbox relay started");
    let mut backoff = Duration::from_millis(200);
    loop {
        if shutdown.is_cancelled() {
            break;
        }
        let rows = match outbox.unpublished(BATCH).await {
            Ok(r) => r,
            Err(e) => {
                warn!(error = %e, "reading the outbox failed; retrying");
                tokio::select! { _ = shutdown.cancelled() => break, _ = tokio::time::sleep(backoff) => {} }
                backoff = (backoff * 2).min(Duration::from_secs(10));
                continue;
            }
        };
        if let Ok(n) = outbox.backlog().await {
            metrics::gauge!("switchboard_outbox_backlog").set(n as f64);
        }
        if rows.is_empty() {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = committed.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            continue;
        }
        // Send the batch in order; the idempotent producer keeps per-partition
        // order and removes duplicates from its own retries.
        let sends: Vec<_> = rows
            .iter()
            .map(|r| {
                producer.send(
                    FutureRecord::to(&topic).key(r.call_id.as_str()).payload(r.payload.as_slice()).headers(
                        rdkafka::message::OwnedHeaders::new()
                            .insert(rdkafka::message::Header { key: "kind", value: Some(r.kind.as_str()) }),
                    ),
                    Duration::from_secs(30),
                )
            })
            .collect();
        let mut published = Vec::with_capacity(rows.len());
        let mut failed = false;
        for (row, send) in rows.iter().zip(sends) {
            match send.await {
                Ok(_) => published.push(row.id),
                Err((e, _)) => {
                    warn!(call_id = %row.call_id, error = %e, "publishing a call event failed; it will be retried (is the broker up?)");
                    failed = true;
                    break;
                }
            }
        }
        if !published.is_empty() {
            metrics::counter!("switchboard_outbox_published_total").increment(published.len() as u64);
            if let Err(e) = outbox.mark_published(&published).await {
                warn!(error = %e, "stamping published events failed; they will be published again");
            }
        }
        if failed {
            metrics::counter!("switchboard_outbox_publish_errors_total").increment(1);
            tokio::select! { _ = shutdown.cancelled() => break, _ = tokio::time::sleep(backoff) => {} }
            backoff = (backoff * 2).min(Duration::from_secs(10));
        } else {
            backoff = Duration::from_millis(200);
        }
    }
    let _ = producer.flush(Duration::from_secs(5));
    info!("outbox relay stopped");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kafka_properties_reach_both_clients() {
        let mut cfg = KafkaProducerConfig::default();
        let _producer = producer(&cfg).expect("a producer; it connects only when it sends");
        cfg.properties.insert("security.protocol".into(), "carrier-pigeon".into());
        let e = producer(&cfg).err().expect("refused").to_string();
        assert!(e.contains("security.protocol") && e.contains("kafka.properties"), "{e}");
        let e = crate::salesforce::sync_topic::consumer(&cfg).err().expect("refused").to_string();
        assert!(e.contains("security.protocol") && e.contains("kafka.properties"), "{e}");
    }
}
