//! Where call events come from: the outbox table (`switchboard up`) or the
//! Kafka topic (production). Both read in order, hand each record to the
//! [`Pipeline`](crate::pipeline::Pipeline), have it written in batches (one
//! being written while the next is read), and move their position (cursor
//! row, committed offset) only past records of a written batch.

pub mod kafka;
pub mod outbox;

use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

/// Delay before retrying after the connector's own database or broker
/// failed: 200 ms doubling to 10 s.
pub(crate) fn stall_delay(attempt: u32) -> Duration {
    let ms = 200u64.saturating_mul(1u64 << attempt.min(6));
    Duration::from_millis(ms.min(10_000))
}

/// Resolves at `deadline`, or never when there is none.
pub(crate) async fn until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// Sleeps `delay` unless shutdown comes first; `false` means shut down.
pub(crate) async fn pause(shutdown: &CancellationToken, delay: Duration) -> bool {
    tokio::select! {
        _ = shutdown.cancelled() => false,
        _ = tokio::time::sleep(delay) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stall_delays_are_capped() {
        assert_eq!(stall_delay(0), Duration::from_millis(200));
        assert_eq!(stall_delay(2), Duration::from_millis(800));
        assert_eq!(stall_delay(40), Duration::from_secs(10));
    }
}
