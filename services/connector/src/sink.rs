//! The Task sink: carries planned writes to Salesforce until each is
//! accepted or refused for good.
//!
//! Tasks go out in sObject Collections upserts of up to 200 records with
//! `allOrNone` false, so each record is accepted or refused on its own: a
//! record refused for a passing reason (a locked row) is sent again in the
//! next round, one refused for good comes back as [`SinkOutcome::Rejected`]
//! for the caller to dead-letter, and the others are done. A failure of the
//! whole request (5xx, network, an expired session renewed once) sends the
//! same records again. Transient failures are retried with capped
//! exponential backoff and jitter for as long as the process runs; an
//! exhausted API limit or a refused login waits long between attempts.
//! Every request first waits for the [`Pacer`], which spaces requests out
//! as the org's daily API usage nears its limit. Shutdown interrupts the
//! waiting, and the events are then left uncommitted.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::Rng;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::fold::{CaseWrite, TaskWrite};
use crate::metrics as m;
use crate::pacing::Pacer;
use crate::Progress;
use crate::salesforce::{ErrorClass, SalesforceClient, SalesforceError, UpsertResult, COLLECTION_LIMIT};

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

/// One Task write of a batch, with the call it belongs to (for logs).
#[derive(Debug, Clone, Copy)]
pub struct BatchWrite<'a> {
    /// The call of the Task.
    pub call_id: &'a str,
    /// The upsert.
    pub write: &'a TaskWrite,
}

/// Writes Tasks and Cases through one client with one retry policy and one
/// pacer.
#[derive(Debug, Clone)]
pub struct TaskSink {
    client: SalesforceClient,
    policy: RetryPolicy,
    pacer: Arc<Mutex<Pacer>>,
    progress: Arc<watch::Sender<Progress>>,
    shutdown: CancellationToken,
}

impl TaskSink {
    /// A sink writing through `client`, spacing requests by `pacer` and
    /// showing each wait for it on `progress`; `shutdown` ends its waits.
    pub fn new(
        client: SalesforceClient,
        policy: RetryPolicy,
        pacer: Pacer,
        progress: Arc<watch::Sender<Progress>>,
        shutdown: CancellationToken,
    ) -> Self {
        Self { client, policy, pacer: Arc::new(Mutex::new(pacer)), progress, shutdown }
    }

    /// The shortest time between two requests at the org's last reported
    /// API usage; zero while usage is below the slow-down threshold.
    pub fn spacing(&self) -> Duration {
        self.pacer.lock().unwrap_or_else(|e| e.into_inner()).spacing()
    }

    /// Upserts every write of `writes` in sObject Collections requests of up
    /// to 200 records, retrying what failed for a passing reason, until each
    /// is accepted or refused for good; the outcomes come in the order of
    /// `writes`. A record believed new whose `TaskSubtype` Salesforce refuses
    /// (the Task existed after all, or the org locks the field) is sent
    /// again without it.
    pub async fn write_tasks(&self, writes: &[BatchWrite<'_>]) -> Result<Vec<SinkOutcome>, ShutdownRequested> {
        let mut outcomes: Vec<Option<SinkOutcome>> = vec![None; writes.len()];
        let mut include_subtype: Vec<bool> = writes.iter().map(|w| w.write.create).collect();
        let mut todo: Vec<usize> = (0..writes.len()).collect();
        let mut attempt: u32 = 0;
        while !todo.is_empty() {
            let mut again = Vec::new();
            let mut failure: Option<(String, SalesforceError)> = None;
            for chunk in todo.chunks(COLLECTION_LIMIT) {
                let records: Vec<(&str, serde_json::Value)> = chunk
                    .iter()
                    .map(|&i| (writes[i].write.external_id.as_str(), writes[i].write.body(include_subtype[i])))
                    .collect();
                self.pace().await?;
                let answer = tokio::select! {
                    _ = self.shutdown.cancelled() => return Err(ShutdownRequested),
                    answer = self.client.upsert_tasks(&records) => answer,
                };
                self.observe_usage();
                let results = match answer {
                    Ok(results) => results,
                    Err(error) if error.class() == ErrorClass::Permanent => {
                        // The request as a whole is refused (no record was
                        // written): each of its writes is refused with it.
                        for &i in chunk {
                            outcomes[i] = Some(self.rejected(writes[i], &error));
                        }
                        continue;
                    }
                    Err(error) => {
                        again.extend_from_slice(chunk);
                        failure = Some((writes[chunk[0]].call_id.to_owned(), error));
                        continue;
                    }
                };
                for (&i, result) in chunk.iter().zip(results) {
                    let BatchWrite { call_id, write } = writes[i];
                    if result.success {
                        m::task_write(if result.created { "created" } else { "updated" });
                        tracing::info!(
                            call_id,
                            user_id = %write.user_id,
                            salesforce_id = result.id.as_deref().unwrap_or(""),
                            created = result.created,
                            "Task written to Salesforce"
                        );
                        outcomes[i] = Some(SinkOutcome::Accepted(UpsertResult { id: result.id, created: result.created }));
                        continue;
                    }
                    let error = SalesforceError::record("upsert_tasks", result.errors);
                    if error.class() == ErrorClass::Permanent {
                        if include_subtype[i] && error.refuses_field("TaskSubtype") {
                            tracing::info!(call_id, user_id = %write.user_id, "Salesforce refuses TaskSubtype; writing the Task without it");
                            include_subtype[i] = false;
                            again.push(i);
                        } else {
                            outcomes[i] = Some(self.rejected(writes[i], &error));
                        }
                    } else {
                        again.push(i);
                        failure = Some((call_id.to_owned(), error));
                    }
                }
            }
            if let Some((call_id, error)) = failure {
                self.wait_to_retry(&call_id, &error, &mut attempt).await?;
            }
            todo = again;
        }
        Ok(outcomes.into_iter().map(|o| o.unwrap_or(SinkOutcome::Rejected { error_code: "NOT_WRITTEN".to_owned(), message: String::new() })).collect())
    }

    fn rejected(&self, write: BatchWrite<'_>, error: &SalesforceError) -> SinkOutcome {
        m::task_write("rejected");
        let error_code = error.error_code();
        tracing::warn!(
            call_id = write.call_id,
            user_id = %write.write.user_id,
            error_code = %error_code,
            error = %error,
            "Salesforce refused the Task for good; dead-lettering the event"
        );
        SinkOutcome::Rejected { error_code, message: error.detail() }
    }

    /// Waits until the pacer lets the next request go, then books it.
    async fn pace(&self) -> Result<(), ShutdownRequested> {
        loop {
            let now = Instant::now();
            let next = {
                let mut pacer = self.pacer.lock().unwrap_or_else(|e| e.into_inner());
                match pacer.next_allowed(now) {
                    None => {
                        pacer.sent(now);
                        m::pacing_wait(Duration::ZERO);
                        self.progress.send_if_modified(|p| p.pacing.take().is_some());
                        return Ok(());
                    }
                    Some(at) => at,
                }
            };
            let wait = next - now;
            m::pacing_wait(wait);
            self.progress.send_modify(|p| p.pacing = Some(wait));
            tracing::warn!(
                wait_ms = wait.as_millis() as u64,
                "the org's daily API usage is near its limit; spacing Salesforce requests out (calls are logged later, in bigger batches)"
            );
            tokio::select! {
                _ = self.shutdown.cancelled() => return Err(ShutdownRequested),
                _ = tokio::time::sleep_until(next.into()) => {}
            }
        }
    }

    fn observe_usage(&self) {
        if let Some(usage) = self.client.api_usage() {
            self.pacer.lock().unwrap_or_else(|e| e.into_inner()).observe(usage);
        }
    }

    /// Upserts the new Case of `write` by its assignment id, retrying like
    /// [`TaskSink::write_tasks`] until Salesforce accepts or refuses it for good.
    /// An accepted upsert that was no create means an earlier attempt (before
    /// a crash, or a replay) had created the Case: it is the same Case.
    pub async fn write_case(&self, call_id: &str, write: &CaseWrite) -> Result<SinkOutcome, ShutdownRequested> {
        let body = write.body();
        let mut attempt: u32 = 0;
        loop {
            if self.shutdown.is_cancelled() {
                return Err(ShutdownRequested);
            }
            self.pace().await?;
            let answer = tokio::select! {
                _ = self.shutdown.cancelled() => return Err(ShutdownRequested),
                answer = self.client.upsert_case(&write.assignment_id, &body) => answer,
            };
            self.observe_usage();
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
