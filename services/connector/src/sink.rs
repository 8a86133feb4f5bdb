//! The Task sink: carries one planned write to Salesforce until it is
//! accepted or refused for good.
//!
//! Transient failures are retried with capped exponential backoff and jitter
//! for as long as the process runs; an exhausted API limit or a refused login
//! waits long between attempts. Only a permanent refusal comes back as
//! [`SinkOutcome::Rejected`], for the caller to dead-letter. Shutdown
//! interrupts the waiting, and the event is then left uncommitted.

use std::time::Duration;

use rand::Rng;
use tokio_util::sync::CancellationToken;

use crate::fold::{CaseWrite, TaskWrite};
use crate::metrics as m;
use crate::salesforce::{ErrorClass, SalesforceClient, SalesforceError, UpsertResult};

/// Backoff between attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Delay before the first retry of a transient failure.
    pub initial: Duration,
    /// Cap of the transient-failure delay.
    pub max: Duration,
    /// Delay after `REQUEST_LIMIT_EXCEEDED` or a refused login.
    pub limit: Duration,
}

impl RetryPolicy {
    /// The delay before retry number `attempt` (0-based) of a failure of
    /// `class`: exponential with "equal jitter" (half fixed, half random), so
    /// many connectors do not retry in lockstep and none retries at once.
    pub fn delay(&self, class: ErrorClass, attempt: u32) -> Duration {
        let ceiling = match class {
            ErrorClass::Limit => self.limit,
            _ => {
                let factor = 1u32.checked_shl(attempt.min(20)).unwrap_or(u32::MAX);
                self.initial.saturating_mul(factor).min(self.max)
            }
        };
        let half = ceiling / 2;
        let jitter_ms = rand::rng().random_range(0..=half.as_millis().min(u128::from(u64::MAX)) as u64);
        half + Duration::from_millis(jitter_ms)
    }
}

/// How a write ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SinkOutcome {
    /// Salesforce holds the Task with these fields.
    Accepted(UpsertResult),
    /// Salesforce refuses the write for good.
    Rejected {
        /// Salesforce's error code, e.g. `INVALID_CROSS_REFERENCE_KEY`.
        error_code: String,
        /// Salesforce's message (with the fields it names).
        message: String,
    },
}

/// The process is shutting down; the write did not complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("shutting down before Salesforce accepted the write")]
pub struct ShutdownRequested;

/// Writes Tasks through one client with one retry policy.
#[derive(Debug, Clone)]
pub struct TaskSink {
    client: SalesforceClient,
    policy: RetryPolicy,
    shutdown: CancellationToken,
}

impl TaskSink {
    /// A sink writing through `client`; `shutdown` ends its retry waits.
    pub fn new(client: SalesforceClient, policy: RetryPolicy, shutdown: CancellationToken) -> Self {
        Self { client, policy, shutdown }
    }

    /// Upserts `write`, retrying until Salesforce accepts or refuses it for
    /// good. When Salesforce refuses `TaskSubtype` on a write believed to be
    /// a create (the Task existed after all, or the org locks the field), the
    /// write is retried once without it.
    pub async fn write(&self, call_id: &str, write: &TaskWrite) -> Result<SinkOutcome, ShutdownRequested> {
        let mut include_subtype = write.create;
        let mut attempt: u32 = 0;
        loop {
            if self.shutdown.is_cancelled() {
                return Err(ShutdownRequested);
            }
            let body = write.body(include_subtype);
            // Shutdown may abandon a request in flight: the event stays
            // uncommitted and the upsert is idempotent when it comes again.
            let answer = tokio::select! {
                _ = self.shutdown.cancelled() => return Err(ShutdownRequested),
                answer = self.client.upsert_task(&write.external_id, &body) => answer,
            };
            let error = match answer {
                Ok(result) => {
                    m::task_write(if result.created { "created" } else { "updated" });
                    tracing::info!(
                        call_id,
                        user_id = %write.user_id,
                        salesforce_id = result.id.as_deref().unwrap_or(""),
                        created = result.created,
                        "Task written to Salesforce"
                    );
                    return Ok(SinkOutcome::Accepted(result));
                }
                Err(error) => error,
            };
            let class = error.class();
            if class == ErrorClass::Permanent {
                if include_subtype && error.refuses_field("TaskSubtype") {
                    tracing::info!(call_id, user_id = %write.user_id, "Salesforce refuses TaskSubtype; writing the Task without it");
                    include_subtype = false;
                    continue;
                }
                m::task_write("rejected");
                let error_code = error.error_code();
                tracing::warn!(
                    call_id,
                    user_id = %write.user_id,
                    error_code = %error_code,
                    error = %error,
                    "Salesforce refused the Task for good; dead-lettering the event"
                );
                return Ok(SinkOutcome::Rejected { error_code, message: error.detail() });
            }
            self.wait_to_retry(call_id, &error, &mut attempt).await?;
        }
    }

    /// Upserts the new Case of `write` by its assignment id, retrying like
    /// [`TaskSink::write`] until Salesforce accepts or refuses it for good.
    /// An accepted upsert that was no create means an earlier attempt (before
    /// a crash, or a replay) had created the Case: it is the same Case.
    pub async fn write_case(&self, call_id: &str, write: &CaseWrite) -> Result<SinkOutcome, ShutdownRequested> {
        let body = write.body();
        let mut attempt: u32 = 0;
        loop {
            if self.shutdown.is_cancelled() {
                return Err(ShutdownRequested);
            }
            let answer = tokio::select! {
                _ = self.shutdown.cancelled() => return Err(ShutdownRequested),
                answer = self.client.upsert_case(&write.assignment_id, &body) => answer,
            };
            let error = match answer {
                Ok(result) => {
                    m::case_write(if result.created { "created" } else { "found" });
                    tracing::info!(
                        call_id,
                        assignment_id = %write.assignment_id,
                        salesforce_id = result.id.as_deref().unwrap_or(""),
                        created = result.created,
                        "new Case written to Salesforce"
                    );
                    return Ok(SinkOutcome::Accepted(result));
                }
                Err(error) => error,
            };
            if error.class() == ErrorClass::Permanent {
                m::case_write("rejected");
                let error_code = error.error_code();
                tracing::warn!(
                    call_id,
                    assignment_id = %write.assignment_id,
                    error_code = %error_code,
                    error = %error,
                    "Salesforce refused the new Case for good; dead-lettering the event"
                );
                return Ok(SinkOutcome::Rejected { error_code, message: error.detail() });
            }
            self.wait_to_retry(call_id, &error, &mut attempt).await?;
        }
    }

    /// Waits before retrying after a transient `error`, or returns when the
    /// process shuts down.
    async fn wait_to_retry(
        &self,
        call_id: &str,
        error: &SalesforceError,
        attempt: &mut u32,
    ) -> Result<(), ShutdownRequested> {
        let class = error.class();
        let delay = self.policy.delay(class, *attempt);
        *attempt = attempt.saturating_add(1);
        m::retry(class.as_str());
        if class == ErrorClass::Limit {
            tracing::error!(call_id, error_code = %error.error_code(), error = %error, retry_in_ms = delay.as_millis() as u64, "Salesforce cannot take writes now; waiting");
        } else {
            tracing::warn!(call_id, error_code = %error.error_code(), error = %error, attempt = *attempt, retry_in_ms = delay.as_millis() as u64, "Salesforce write failed; retrying");
        }
        tokio::select! {
            _ = self.shutdown.cancelled() => Err(ShutdownRequested),
            _ = tokio::time::sleep(delay) => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_are_capped_and_jittered() {
        let policy = RetryPolicy {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(5),
            limit: Duration::from_secs(600),
        };
        for _ in 0..50 {
            let first = policy.delay(ErrorClass::Retryable, 0);
            assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100), "{first:?}");
            let third = policy.delay(ErrorClass::Retryable, 2);
            assert!(third >= Duration::from_millis(200) && third <= Duration::from_millis(400), "{third:?}");
            let late = policy.delay(ErrorClass::Token, 1_000);
            assert!(late >= Duration::from_millis(2500) && late <= Duration::from_secs(5), "{late:?}");
            let limit = policy.delay(ErrorClass::Limit, 0);
            assert!(limit >= Duration::from_secs(300) && limit <= Duration::from_secs(600), "{limit:?}");
        }
    }
}
