//! Call events after the outbox: the relay that publishes them to Kafka.

pub mod relay;
