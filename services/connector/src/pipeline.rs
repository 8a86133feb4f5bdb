//! One record through the connector: decode, fold, persist, write to
//! Salesforce, dead-letter what cannot be applied.
//!
//! Both sources (outbox and Kafka) hand every record to
//! [`Pipeline::handle`] and commit their position only after it returned
//! `Ok`: by then the event is applied and Salesforce accepted the writes it
//! called for, or it is stored as a dead letter with its reason.
//!
//! Crash safety: the folded state is saved before Salesforce is called and
//! each Task status after Salesforce answered (after the dead letter, for a
//! refusal). If the process dies in between, the redelivered event is a
//! duplicate for the fold, but the write still due is derived from the state
//! ([`CallState::plan`] compares with what Salesforce last accepted) and is
//! made then.
//!
//! A new Case an agent asked for is created before the Tasks that link to
//! it, by an upsert on its assignment id; its id is saved before any Task is
//! written. A crash between the two finds the same Case on the retry.

use switchboard_proto::{CallEvent, Message};
use switchboard_store::sqlx;
use tokio_util::sync::CancellationToken;

use crate::dead_letter::{DeadLetter, DeadLetterError, DeadLetterQueue};
use crate::fold::{self, Applied, CallState};
use crate::metrics as m;
use crate::sink::{ShutdownRequested, SinkOutcome, TaskSink};
use crate::store::SyncStore;

/// Why a record could not be handled now; the source retries it or stops.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// The connector's tables are unreachable: retry the same record later.
    #[error("connector state could not be read or written: {0}")]
    Store(#[from] sqlx::Error),
    /// Shutdown interrupted the work: leave the record uncommitted.
    #[error(transparent)]
    Shutdown(#[from] ShutdownRequested),
}

impl From<DeadLetterError> for PipelineError {
    fn from(e: DeadLetterError) -> Self {
        match e {
            DeadLetterError::Store(e) => PipelineError::Store(e),
            DeadLetterError::Shutdown(s) => PipelineError::Shutdown(s),
        }
    }
}

/// One record of the event log, as the source read it.
#[derive(Debug, Clone, Copy)]
pub struct Record<'a> {
    /// The call the log files the record under (outbox column, Kafka key);
    /// names the dead letter when the payload cannot.
    pub call_id: &'a str,
    /// The encoded `CallEvent`.
    pub payload: &'a [u8],
    /// Where it was read, for dead letters and logs.
    pub origin: &'a str,
}

/// What became of one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handled {
    /// Label of the event kind, `unknown` when undecodable.
    pub kind: &'static str,
    /// `applied`, `duplicate`, `ignored`, `invalid` or `undecodable`.
    pub outcome: &'static str,
    /// Dead letters stored for it.
    pub dead_lettered: usize,
}

/// The fold and the sink over the connector's tables.
#[derive(Debug, Clone)]
pub struct Pipeline {
    store: SyncStore,
    sink: TaskSink,
    dead_letters: DeadLetterQueue,
    shutdown: CancellationToken,
}

impl Pipeline {
    /// A pipeline keeping its state in `store`, writing through `sink` and
    /// setting refused events aside in `dead_letters`.
    pub fn new(store: SyncStore, sink: TaskSink, dead_letters: DeadLetterQueue, shutdown: CancellationToken) -> Self {
        Self { store, sink, dead_letters, shutdown }
    }

    /// Handles one record; `Ok` means the source may commit past it.
    pub async fn handle(&self, record: Record<'_>) -> Result<Handled, PipelineError> {
        let event = match CallEvent::decode(record.payload) {
            Ok(event) => event,
            Err(e) => {
                m::event("unknown", "undecodable");
                self.dead_letter(record, record.call_id, "undecodable", None, format!("undecodable CallEvent: {e}")).await?;
                return Ok(Handled { kind: "unknown", outcome: "undecodable", dead_lettered: 1 });
            }
        };
        let kind = event.kind_name();
        let mismatch = !record.call_id.is_empty() && !event.call_id.is_empty() && record.call_id != event.call_id;
        let invalid = fold::validate(&event).err().map(|e| e.to_string()).or_else(|| {
            mismatch.then(|| format!("record filed under call {} carries an event of call {}", record.call_id, event.call_id))
        });
        if let Some(reason) = invalid {
            m::event(kind, "invalid");
            let call_id = if event.call_id.is_empty() { record.call_id } else { event.call_id.as_str() };
            self.dead_letter(record, call_id, "invalid_event", None, reason).await?;
            return Ok(Handled { kind, outcome: "invalid", dead_lettered: 1 });
        }
        self.fold_and_write(record, &event).await
    }

    /// Folds a decoded, valid event and makes the writes it calls for.
    async fn fold_and_write(&self, record: Record<'_>, event: &CallEvent) -> Result<Handled, PipelineError> {
        let call_id = event.call_id.as_str();
        let kind = event.kind_name();
        let mut state = self.store.load(call_id).await?.unwrap_or_else(|| CallState::new(call_id));
        let applied = match state.apply(event) {
            Ok(applied) => applied,
            Err(e) => {
                // Unreachable in practice: validated above, state loaded by call id.
                m::event(kind, "invalid");
                self.dead_letter(record, call_id, "invalid_event", None, e.to_string()).await?;
                return Ok(Handled { kind, outcome: "invalid", dead_lettered: 1 });
            }
        };
        let mut plan = state.plan();
        let mut dead_lettered = 0;
        while let Some(case) = plan.case.take() {
            self.store.save(&state).await?;
            match self.sink.write_case(call_id, &case).await? {
                SinkOutcome::Accepted(result) => match result.id {
                    Some(id) => state.record_case_created(&case.assignment_id, id),
                    // Only an API before 46.0 answers without the id, and
                    // the configuration refuses those.
                    None => state.record_case_rejected(&case.assignment_id, "NO_RECORD_ID", "Salesforce did not answer the Case's id"),
                },
                SinkOutcome::Rejected { error_code, message } => {
                    let reason = format!(
                        "Salesforce refused the new Case of assignment {}: {error_code}: {message}",
                        case.assignment_id
                    );
                    self.dead_letter(record, call_id, "salesforce_rejected", Some(error_code.clone()), reason).await?;
                    dead_lettered += 1;
                    state.record_case_rejected(&case.assignment_id, &error_code, &message);
                }
            }
            self.store.save(&state).await?;
            plan = state.plan();
        }
        for skip in &plan.skipped {
            tracing::info!(call_id, user_id = %skip.user_id, reason = %skip.reason, "no Salesforce Task for this agent");
            m::task_skipped(skip.label);
        }
        if applied != Applied::Duplicate || !plan.skipped.is_empty() {
            self.store.save(&state).await?;
        }
        tracing::debug!(
            call_id,
            sequence = event.sequence,
            kind,
            outcome = applied.as_str(),
            writes = plan.writes.len(),
            "event folded"
        );

        for write in &plan.writes {
            let accepted = match self.sink.write(call_id, write).await? {
                SinkOutcome::Accepted(result) => {
                    state.record_accepted(write, result.id);
                    true
                }
                SinkOutcome::Rejected { error_code, message } => {
                    let reason = format!(
                        "Salesforce refused the Task {} of user {}: {error_code}: {message}",
                        write.external_id, write.user_id
                    );
                    self.dead_letter(record, call_id, "salesforce_rejected", Some(error_code.clone()), reason).await?;
                    dead_lettered += 1;
                    state.record_rejected(write, &error_code, &message);
                    false
                }
            };
            if let Some(sync) = state.tasks.get(&write.user_id) {
                self.store.save_task(call_id, &write.user_id, sync, accepted).await?;
            }
        }
        m::event(kind, applied.as_str());
        Ok(Handled { kind, outcome: applied.as_str(), dead_lettered })
    }

    async fn dead_letter(
        &self,
        record: Record<'_>,
        call_id: &str,
        label: &'static str,
        error_code: Option<String>,
        reason: String,
    ) -> Result<(), PipelineError> {
        let letter = DeadLetter {
            call_id: call_id.to_owned(),
            payload: record.payload.to_vec(),
            label,
            error_code,
            reason,
            origin: record.origin.to_owned(),
        };
        self.dead_letters.put(&letter, &self.shutdown).await?;
        Ok(())
    }
}
