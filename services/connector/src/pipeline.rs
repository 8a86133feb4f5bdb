//! Records through the connector in batches: decode and fold each record
//! as it comes, then write the batch's Tasks to Salesforce together, store
//! the folded state and let the source commit past the whole batch.
//!
//! Both sources (outbox and Kafka) hand every record to
//! [`Pipeline::handle`], which folds it into the state of its call, kept in
//! memory until the batch is written. Once the batch
//! [`is_due`](Pipeline::is_due) (as many ended calls as one sObject
//! Collections request takes, or its deadline passed) the source calls
//! [`Pipeline::start_write`], which writes it in a task of its own while
//! the source reads and folds the next batch. At most one batch is written
//! at a time, and the source commits its position (offsets, cursor) past a
//! batch only once [`Pipeline::written`] returned it: by then every event
//! of the batch is applied and Salesforce accepted the writes they called
//! for, or they are stored as dead letters with the reason. Batches are
//! thus committed in order.
//!
//! A record of the next batch whose call is in the batch being written is
//! decoded and checked at once but folded only when the write returns the
//! call's state (as stored): loading it from the tables before would miss
//! what the write records, and the write would miss the record.
//!
//! Crash safety: nothing is committed before the batch is written, so a
//! crash redelivers every event of an unfinished batch. The events a
//! stored state already holds are duplicates for the fold, but the writes
//! still due are derived from the state ([`CallState::plan`] compares with
//! what Salesforce last accepted), and upserts by external id make a write
//! repeated after a crash update the same Task.
//!
//! A new Case an agent asked for is created before the Tasks that link to
//! it, by an upsert on its assignment id: a crash between the two finds the
//! same Case on the retry.

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use switchboard_proto::{CallEvent, Message};
use switchboard_store::{now_ms, sqlx};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::dead_letter::{DeadLetter, DeadLetterError, DeadLetterQueue};
use crate::fold::{self, CallState, TaskWrite};
use crate::metrics as m;
use crate::sink::{BatchWrite, ShutdownRequested, SinkOutcome, TaskSink};
use crate::status::{self, StatusPublisher};
use crate::source::{pause, stall_delay};
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

/// When a batch is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchPolicy {
    /// Ended calls (each with at least one Task to write) that fill a batch.
    pub max_calls: usize,
    /// How long after its first hang-up a batch is written at the latest.
    pub deadline: Duration,
    /// How long after its first record a batch is written at the latest
    /// (records that only update Tasks already written wait this long for
    /// a hang-up to share a request with).
    pub update_deadline: Duration,
}

impl BatchPolicy {
    /// When a batch opened at `opened_at` whose first hang-up came at
    /// `ended_at` is due.
    fn deadline_of(&self, opened_at: Option<Instant>, ended_at: Option<Instant>) -> Option<Instant> {
        let updates = opened_at.map(|at| at + self.update_deadline);
        let ended = ended_at.map(|at| at + self.deadline);
        match (updates, ended) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// Calls of any state a batch holds at most, bounding its memory while
/// long calls are only in progress.
const MAX_OPEN_CALLS: usize = 10_000;

/// What a written batch amounted to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Flushed {
    /// Records of the batch, now all handled: the source may commit them.
    pub records: u64,
    /// Dead letters stored for them.
    pub dead_lettered: u64,
    /// Task writes Salesforce accepted.
    pub tasks: usize,
}

/// The state of one call of the batch, with the record that last touched
/// it (set aside with the reason if Salesforce refuses the call's writes).
#[derive(Debug)]
struct Open {
    state: CallState,
    payload: Vec<u8>,
    origin: String,
}

/// The calls one batch touched and what its records amounted to so far.
#[derive(Debug, Default)]
struct Batch {
    /// Calls touched by the batch's records, by call id.
    open: BTreeMap<String, Open>,
    /// Calls [`Pipeline::prefetch`] found no stored state for.
    unseen: HashSet<String>,
    /// How many of the open calls have ended.
    ended: usize,
    /// When the first record of the batch was handled.
    opened_at: Option<Instant>,
    /// When the first hang-up of the batch was folded: its Task is due.
    ended_at: Option<Instant>,
    /// Records of the batch.
    records: u64,
    /// Dead letters stored for them so far.
    dead_lettered: u64,
}

/// A record of the batch in hand whose call is in the batch being
/// written: folded once that write returns the call's state.
#[derive(Debug)]
struct Deferred {
    event: CallEvent,
    payload: Vec<u8>,
    origin: String,
}

/// The batch being written, in a task of its own while the next one is
/// folded.
#[derive(Debug)]
struct InFlight {
    /// Its calls: records of these wait for their states to come back.
    calls: HashSet<String>,
    /// Records of the batch in hand waiting for them, in arrival order.
    deferred: Vec<Deferred>,
    /// The write; gives the batch back with its states as stored, and
    /// `None` when shutdown stopped it.
    task: JoinHandle<(Batch, Option<Flushed>)>,
}

/// What writes a batch: the sink, the state tables, the dead letters and
/// the status topic.
#[derive(Debug, Clone)]
struct Writer {
    store: SyncStore,
    sink: TaskSink,
    dead_letters: DeadLetterQueue,
    statuses: StatusPublisher,
    shutdown: CancellationToken,
}

/// The fold and the sink over the connector's tables.
#[derive(Debug)]
pub struct Pipeline {
    store: SyncStore,
    dead_letters: DeadLetterQueue,
    policy: BatchPolicy,
    shutdown: CancellationToken,
    writer: Writer,
    /// The batch in hand: records folded since the last write started.
    batch: Batch,
    /// The batch being written, if any: at most one at a time.
    in_flight: Option<InFlight>,
}

impl Pipeline {
    /// A pipeline keeping its state in `store`, writing through `sink` in
    /// batches by `policy`, setting refused events aside in `dead_letters`
    /// and telling `statuses` each Task's new sync status.
    pub fn new(
        store: SyncStore,
        sink: TaskSink,
        dead_letters: DeadLetterQueue,
        statuses: StatusPublisher,
        policy: BatchPolicy,
        shutdown: CancellationToken,
    ) -> Self {
        let writer = Writer { store: store.clone(), sink, dead_letters: dead_letters.clone(), statuses, shutdown: shutdown.clone() };
        Self { store, dead_letters, policy, shutdown, writer, batch: Batch::default(), in_flight: None }
    }

    /// Records handled into the batch in hand.
    pub fn pending(&self) -> u64 {
        self.batch.records
    }

    /// The batch in hand holds as many ended calls (or calls at all) as it
    /// takes.
    pub fn is_full(&self) -> bool {
        self.batch.ended >= self.policy.max_calls || self.batch.open.len() >= MAX_OPEN_CALLS
    }

    /// When the batch in hand must be written: `deadline` after its first
    /// hang-up, `update_deadline` after its first record at the latest;
    /// `None` when there is none.
    pub fn deadline(&self) -> Option<Instant> {
        self.policy.deadline_of(self.batch.opened_at, self.batch.ended_at)
    }

    /// The batch in hand has records and is full or past its deadline.
    pub fn is_due(&self) -> bool {
        self.pending() > 0 && (self.is_full() || self.deadline().is_some_and(|at| at <= Instant::now()))
    }

    /// A batch is being written.
    pub fn is_writing(&self) -> bool {
        self.in_flight.is_some()
    }

    /// The batch being written is written (or failed): [`written`](Self::written)
    /// returns at once.
    pub fn write_finished(&self) -> bool {
        self.in_flight.as_ref().is_some_and(|f| f.task.is_finished())
    }

    /// Starts writing the batch in hand in a task of its own; the source
    /// goes on reading and folding the next batch and commits this one's
    /// records once [`written`](Self::written) returns it. Records of its
    /// calls that arrive meanwhile wait for their states to come back.
    ///
    /// # Panics
    /// When a batch is being written already: wait for it first.
    pub fn start_write(&mut self) {
        assert!(self.in_flight.is_none(), "one batch is written at a time");
        let mut batch = std::mem::take(&mut self.batch);
        let calls = batch.open.keys().cloned().collect();
        let writer = self.writer.clone();
        let task = tokio::spawn(async move {
            let flushed = writer.write_until_done(&mut batch).await;
            (batch, flushed)
        });
        self.in_flight = Some(InFlight { calls, deferred: Vec::new(), task });
    }

    /// Waits for the batch being written (never resolves when none is) and
    /// folds the records that waited for its states. `Some` means its
    /// records may be committed; `None` means shutdown stopped the write
    /// and nothing may be. Cancel-safe: dropped before the write ended, it
    /// leaves the write in flight.
    pub async fn written(&mut self) -> Option<Flushed> {
        let Some(in_flight) = self.in_flight.as_mut() else { return std::future::pending().await };
        let joined = (&mut in_flight.task).await;
        let in_flight = self.in_flight.take()?;
        let (mut written, flushed) = match joined {
            Ok(done) => done,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => return None,
        };
        for deferred in in_flight.deferred {
            let call_id = deferred.event.call_id.clone();
            let open = match self.batch.open.entry(call_id) {
                Entry::Occupied(entry) => entry.into_mut(),
                Entry::Vacant(entry) => {
                    let open = written.open.remove(entry.key()).unwrap_or_else(|| Open {
                        state: CallState::new(entry.key()),
                        payload: Vec::new(),
                        origin: String::new(),
                    });
                    if open.state.ended.is_some() {
                        self.batch.ended += 1;
                    }
                    entry.insert(open)
                }
            };
            let kind = deferred.event.kind_name();
            let was_ended = open.state.ended.is_some();
            match open.state.apply(&deferred.event) {
                Ok(applied) => {
                    open.payload = deferred.payload;
                    open.origin = deferred.origin;
                    if !was_ended && open.state.ended.is_some() {
                        self.batch.ended += 1;
                        self.batch.ended_at.get_or_insert_with(Instant::now);
                    }
                    m::event(kind, applied.as_str());
                }
                // Unreachable: validated when handled, state of its call.
                Err(e) => tracing::error!(call_id = %deferred.event.call_id, error = %e, "a deferred event did not apply"),
            }
        }
        flushed
    }

    /// Writes the batch in hand and waits for it (after the one being
    /// written, if any); `None` means shutdown came first.
    pub async fn flush(&mut self) -> Option<Flushed> {
        let mut flushed = Flushed::default();
        if self.is_writing() {
            flushed = flushed.and(self.written().await?);
        }
        if self.pending() > 0 {
            self.start_write();
            flushed = flushed.and(self.written().await?);
        }
        Some(flushed)
    }

    /// Loads the stored states of the calls of `call_ids` (the keys of
    /// records about to be handled) that the batch does not hold yet, in one
    /// round trip instead of one per call.
    pub async fn prefetch(&mut self, call_ids: &[&str]) -> Result<(), PipelineError> {
        let in_flight = self.in_flight.as_ref().map(|f| &f.calls);
        let batch = &self.batch;
        let mut wanted: Vec<&str> = call_ids
            .iter()
            .copied()
            .filter(|id| !id.is_empty() && !batch.open.contains_key(*id) && !batch.unseen.contains(*id))
            .filter(|id| !in_flight.is_some_and(|calls| calls.contains(*id)))
            .collect();
        wanted.sort_unstable();
        wanted.dedup();
        if wanted.is_empty() {
            return Ok(());
        }
        let mut found = self.store.load_many(&wanted).await?;
        for call_id in wanted {
            match found.remove(call_id) {
                Some(state) => {
                    if state.ended.is_some() {
                        self.batch.ended += 1;
                    }
                    self.batch.open.insert(call_id.to_owned(), Open { state, payload: Vec::new(), origin: String::new() });
                }
                None => {
                    self.batch.unseen.insert(call_id.to_owned());
                }
            }
        }
        Ok(())
    }

    /// Folds one record into the batch; `Ok` means it is part of the batch
    /// and will be committed with it. Records that cannot be applied are
    /// dead-lettered at once.
    pub async fn handle(&mut self, record: Record<'_>) -> Result<Handled, PipelineError> {
        let handled = self.fold(record).await?;
        self.batch.records += 1;
        self.batch.dead_lettered += handled.dead_lettered as u64;
        self.batch.opened_at.get_or_insert_with(Instant::now);
        Ok(handled)
    }

    async fn fold(&mut self, record: Record<'_>) -> Result<Handled, PipelineError> {
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
        if !self.batch.open.contains_key(&event.call_id) {
            if let Some(in_flight) = self.in_flight.as_mut().filter(|f| f.calls.contains(&event.call_id)) {
                tracing::trace!(call_id = %event.call_id, sequence = event.sequence, kind, "event waits for its call's batch to be written");
                in_flight.deferred.push(Deferred { event, payload: record.payload.to_vec(), origin: record.origin.to_owned() });
                return Ok(Handled { kind, outcome: "deferred", dead_lettered: 0 });
            }
        }
        let call_id = event.call_id.as_str();
        let open = match self.batch.open.entry(call_id.to_owned()) {
            Entry::Occupied(entry) => entry.into_mut(),
            Entry::Vacant(entry) => {
                let stored = if self.batch.unseen.contains(call_id) { None } else { self.store.load(call_id).await? };
                let state = stored.unwrap_or_else(|| CallState::new(call_id));
                if state.ended.is_some() {
                    self.batch.ended += 1;
                }
                entry.insert(Open { state, payload: Vec::new(), origin: String::new() })
            }
        };
        let was_ended = open.state.ended.is_some();
        let applied = match open.state.apply(&event) {
            Ok(applied) => applied,
            Err(e) => {
                // Unreachable in practice: validated above, state loaded by call id.
                m::event(kind, "invalid");
                self.dead_letter(record, call_id, "invalid_event", None, e.to_string()).await?;
                return Ok(Handled { kind, outcome: "invalid", dead_lettered: 1 });
            }
        };
        open.payload = record.payload.to_vec();
        open.origin = record.origin.to_owned();
        if !was_ended && open.state.ended.is_some() {
            self.batch.ended += 1;
            self.batch.ended_at.get_or_insert_with(Instant::now);
        }
        tracing::debug!(call_id, sequence = event.sequence, kind, outcome = applied.as_str(), "event folded");
        m::event(kind, applied.as_str());
        Ok(Handled { kind, outcome: applied.as_str(), dead_lettered: 0 })
    }

    async fn dead_letter(
        &self,
        record: Record<'_>,
        call_id: &str,
        label: &'static str,
        error_code: Option<String>,
        reason: String,
    ) -> Result<(), PipelineError> {
        dead_letter(&self.dead_letters, &self.shutdown, record, call_id, label, error_code, reason).await
    }
}

impl Flushed {
    fn and(self, other: Flushed) -> Flushed {
        Flushed {
            records: self.records + other.records,
            dead_lettered: self.dead_lettered + other.dead_lettered,
            tasks: self.tasks + other.tasks,
        }
    }
}

impl Writer {
    /// Writes `batch`, retrying while the connector's own database fails;
    /// `None` means shutdown came first and nothing may be committed.
    async fn write_until_done(&self, batch: &mut Batch) -> Option<Flushed> {
        let mut failures = 0u32;
        loop {
            match self.write(batch).await {
                Ok(flushed) => return Some(flushed),
                Err(PipelineError::Shutdown(_)) => return None,
                Err(PipelineError::Store(error)) => {
                    tracing::error!(%error, "connector database failed while writing a batch; retrying the batch");
                    m::stall("store");
                    if !pause(&self.shutdown, stall_delay(failures)).await {
                        return None;
                    }
                    failures = failures.saturating_add(1);
                }
            }
        }
    }

    /// Writes the batch: the new Cases it calls for, then every Task whose
    /// fields changed, together; stores the folded state and each Task's
    /// status; dead-letters what Salesforce refused for good. `Ok` means
    /// the source may commit every record of the batch. After an error
    /// the batch is unchanged as far as it was not written, and may be
    /// written again.
    async fn write(&self, batch: &mut Batch) -> Result<Flushed, PipelineError> {
        let started = batch.opened_at.unwrap_or_else(Instant::now);
        let mut dead_lettered = 0u64;
        let logged_before: HashSet<String> =
            batch.open.iter().filter(|(_, o)| o.state.tasks.values().any(|t| t.created)).map(|(id, _)| id.clone()).collect();

        let before = status::snapshot(batch.open.values().map(|o| &o.state));
        let call_ids: Vec<String> = batch.open.keys().cloned().collect();
        let mut writes: Vec<(String, TaskWrite)> = Vec::new();
        for call_id in &call_ids {
            dead_lettered += self.write_cases(batch, call_id).await?;
            let Some(open) = batch.open.get_mut(call_id) else { continue };
            let plan = open.state.plan();
            for skip in &plan.skipped {
                tracing::info!(call_id = %call_id, user_id = %skip.user_id, reason = %skip.reason, "no Salesforce Task for this agent");
                m::task_skipped(skip.label);
            }
            writes.extend(plan.writes.into_iter().map(|w| (call_id.clone(), w)));
        }

        let mut accepted: HashSet<(String, String)> = HashSet::new();
        if !writes.is_empty() {
            let requests: Vec<BatchWrite<'_>> = writes.iter().map(|(call_id, write)| BatchWrite { call_id, write }).collect();
            let outcomes = self.sink.write_tasks(&requests).await?;
            for ((call_id, write), outcome) in writes.iter().zip(outcomes) {
                match outcome {
                    SinkOutcome::Accepted(result) => {
                        if let Some(open) = batch.open.get_mut(call_id) {
                            open.state.record_accepted(write, result.id);
                        }
                        accepted.insert((call_id.clone(), write.user_id.clone()));
                    }
                    SinkOutcome::Rejected { error_code, message } => {
                        let reason = format!(
                            "Salesforce refused the Task {} of user {}: {error_code}: {message}",
                            write.external_id, write.user_id
                        );
                        self.dead_letter_call(batch, call_id, "salesforce_rejected", Some(error_code.clone()), reason).await?;
                        dead_lettered += 1;
                        if let Some(open) = batch.open.get_mut(call_id) {
                            open.state.record_rejected(write, &error_code, &message);
                        }
                    }
                }
            }
        }
        self.store.save_batch(batch.open.values().map(|o| &o.state), &accepted).await?;
        self.statuses.publish_changes(&before, status::snapshot(batch.open.values().map(|o| &o.state)), now_ms()).await;

        let logged = batch
            .open
            .iter()
            .filter(|(id, o)| !logged_before.contains(*id) && o.state.tasks.values().any(|t| t.created))
            .count();
        m::calls_logged(logged as u64);
        m::batch(writes.len(), started.elapsed());
        batch.dead_lettered += dead_lettered;
        let flushed = Flushed { records: batch.records, dead_lettered: batch.dead_lettered, tasks: accepted.len() };
        if !writes.is_empty() {
            tracing::debug!(records = flushed.records, calls = batch.open.len(), tasks = writes.len(), "batch written");
        }
        Ok(flushed)
    }

    /// Creates the new Case the call's latest assignment asks for, if any,
    /// before its Tasks are planned; returns the dead letters stored.
    async fn write_cases(&self, batch: &mut Batch, call_id: &str) -> Result<u64, PipelineError> {
        let mut dead_lettered = 0;
        loop {
            let Some(open) = batch.open.get_mut(call_id) else { return Ok(dead_lettered) };
            let Some(case) = open.state.case_to_create() else { return Ok(dead_lettered) };
            match self.sink.write_case(call_id, &case).await? {
                SinkOutcome::Accepted(result) => {
                    let Some(open) = batch.open.get_mut(call_id) else { return Ok(dead_lettered) };
                    match result.id {
                        Some(id) => open.state.record_case_created(&case.assignment_id, id),
                        // Only an API before 46.0 answers without the id, and
                        // the configuration refuses those.
                        None => open.state.record_case_rejected(&case.assignment_id, "NO_RECORD_ID", "Salesforce did not answer the Case's id"),
                    }
                }
                SinkOutcome::Rejected { error_code, message } => {
                    let reason = format!(
                        "Salesforce refused the new Case of assignment {}: {error_code}: {message}",
                        case.assignment_id
                    );
                    self.dead_letter_call(batch, call_id, "salesforce_rejected", Some(error_code.clone()), reason).await?;
                    dead_lettered += 1;
                    if let Some(open) = batch.open.get_mut(call_id) {
                        open.state.record_case_rejected(&case.assignment_id, &error_code, &message);
                    }
                }
            }
        }
    }

    /// Sets aside the record that last touched `call_id` in `batch`.
    async fn dead_letter_call(
        &self,
        batch: &Batch,
        call_id: &str,
        label: &'static str,
        error_code: Option<String>,
        reason: String,
    ) -> Result<(), PipelineError> {
        let (payload, origin) = match batch.open.get(call_id) {
            Some(open) => (open.payload.as_slice(), open.origin.as_str()),
            None => (&[][..], ""),
        };
        let record = Record { call_id, payload, origin };
        dead_letter(&self.dead_letters, &self.shutdown, record, call_id, label, error_code, reason).await
    }
}

/// Stores `record` in `queue` as a dead letter of `call_id` with the reason.
async fn dead_letter(
    queue: &DeadLetterQueue,
    shutdown: &CancellationToken,
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
    queue.put(&letter, shutdown).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hang_up_makes_the_batch_due_sooner_than_updates_alone() {
        let policy = BatchPolicy { max_calls: 200, deadline: Duration::from_millis(1_500), update_deadline: Duration::from_secs(5) };
        let opened = Instant::now();
        assert_eq!(policy.deadline_of(None, None), None);
        // Only updates of written Tasks: they wait for a hang-up to ride with.
        assert_eq!(policy.deadline_of(Some(opened), None), Some(opened + Duration::from_secs(5)));
        // A hang-up two seconds in: due 1.5 s later.
        let hang_up = opened + Duration::from_secs(2);
        assert_eq!(policy.deadline_of(Some(opened), Some(hang_up)), Some(hang_up + Duration::from_millis(1_500)));
        // A hang-up late in the batch does not hold the updates back longer.
        let late = opened + Duration::from_secs(4);
        assert_eq!(policy.deadline_of(Some(opened), Some(late)), Some(opened + Duration::from_secs(5)));
    }
}
