//! The outbox as the connector's event log (`switchboard up`, no Kafka).
//!
//! Rows are read in id order after the cursor stored in
//! `connector_cursors`; the cursor moves past a row only once the pipeline
//! wrote the batch holding it. New rows are noticed by polling, which costs one indexed
//! query per interval on an idle SQLite file.
//!
//! The outbox id is a commit-ordered position on SQLite (one writer at a
//! time). On PostgreSQL ids are assigned at insert, not at commit, so a
//! long transaction could commit a row behind a cursor that already moved
//! on: run the outbox source on SQLite, and use Kafka (fed by the relay)
//! with PostgreSQL.

use std::sync::Arc;
use std::time::Duration;

use switchboard_store::{Database, Outbox};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{pause, stall_delay, until};
use crate::metrics as m;
use crate::pipeline::{Flushed, Pipeline, PipelineError, Record};
use crate::store::SyncStore;
use crate::Progress;

/// Name of the outbox cursor in `connector_cursors`.
pub const CURSOR: &str = "outbox";
/// Rows read per query.
const BATCH: i64 = 100;

/// Reads the outbox of one database.
#[derive(Debug, Clone)]
pub struct OutboxSource {
    outbox: Outbox,
    store: SyncStore,
    poll_interval: Duration,
}

impl OutboxSource {
    /// A source over `db`'s outbox, polling every `poll_interval` when drained.
    pub fn new(db: &Database, poll_interval: Duration) -> Self {
        Self { outbox: db.outbox(), store: SyncStore::new(db.clone()), poll_interval }
    }

    /// Feeds every row after the cursor to `pipeline` until `shutdown`,
    /// having a batch written when it is full or due (while the next one is
    /// read) and then moving the cursor past its rows, reporting them on
    /// `progress`. Database failures stall the loop (logged, counted,
    /// retried); they never skip a row.
    pub async fn run(self, mut pipeline: Pipeline, progress: Arc<watch::Sender<Progress>>, shutdown: CancellationToken) {
        let mut failures = 0u32;
        let mut cursor = loop {
            match self.store.cursor(CURSOR).await {
                Ok(position) => break position,
                Err(error) => {
                    tracing::error!(%error, "cannot read the outbox cursor; retrying");
                    m::stall("store");
                    if !pause(&shutdown, stall_delay(failures)).await {
                        return;
                    }
                    failures += 1;
                }
            }
        };
        tracing::info!(cursor, "connector reading call events from the outbox");
        progress.send_modify(|p| {
            p.consuming = true;
            p.outbox_position = Some(cursor);
        });
        // The last row folded into the batch in hand (the cursor until one
        // is), and the last row of the batch being written.
        let mut read = cursor;
        let mut writing_to = cursor;
        failures = 0;
        'read: while !shutdown.is_cancelled() {
            if pipeline.is_writing() && (pipeline.is_due() || pipeline.write_finished()) {
                let Some(flushed) = pipeline.written().await else { break };
                if !self.written(flushed, writing_to, &progress, &shutdown).await {
                    break;
                }
                cursor = writing_to;
                continue;
            }
            if !pipeline.is_writing() && pipeline.is_due() {
                pipeline.start_write();
                writing_to = read;
                continue;
            }
            let rows = match self.outbox.read_after(read, BATCH).await {
                Ok(rows) => rows,
                Err(error) => {
                    tracing::error!(%error, cursor = read, "cannot read the outbox; retrying");
                    m::stall("store");
                    if !pause(&shutdown, stall_delay(failures)).await {
                        break;
                    }
                    failures += 1;
                    continue;
                }
            };
            failures = 0;
            if rows.is_empty() {
                let (deadline, writing) = (pipeline.deadline(), pipeline.is_writing());
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(self.poll_interval) => {}
                    _ = until(deadline), if !writing => {}
                    flushed = pipeline.written(), if writing => {
                        let Some(flushed) = flushed else { break };
                        if !self.written(flushed, writing_to, &progress, &shutdown).await {
                            break;
                        }
                        cursor = writing_to;
                    }
                }
                continue;
            }
            let keys: Vec<&str> = rows.iter().map(|row| row.call_id.as_str()).collect();
            if let Err(error) = pipeline.prefetch(&keys).await {
                // Each record loads its own state then.
                tracing::warn!(%error, "loading the states of the next outbox rows failed");
            }
            for row in rows {
                let origin = format!("outbox row {}", row.id);
                loop {
                    let record = Record { call_id: &row.call_id, payload: &row.payload, origin: &origin };
                    match pipeline.handle(record).await {
                        Ok(_) => {
                            failures = 0;
                            break;
                        }
                        Err(PipelineError::Shutdown(_)) => break 'read,
                        Err(PipelineError::Store(error)) => {
                            tracing::error!(%error, call_id = %row.call_id, row = row.id, "connector database failed; retrying the row");
                            m::stall("store");
                            if !pause(&shutdown, stall_delay(failures)).await {
                                break 'read;
                            }
                            failures += 1;
                        }
                    }
                }
                read = row.id;
                if pipeline.is_full() {
                    // Written at the top of the loop before more is read.
                    break;
                }
            }
        }
        // A write still in flight ends soon once shut down; its rows are
        // passed if it got through.
        if pipeline.is_writing() {
            if let Some(flushed) = pipeline.written().await {
                if self.written(flushed, writing_to, &progress, &shutdown).await {
                    cursor = writing_to;
                }
            }
        }
        tracing::info!(cursor, "connector stopped reading the outbox");
    }

    /// Moves the cursor past a written batch ending at row `position` and
    /// reports it; `false` means shutdown came first.
    async fn written(&self, flushed: Flushed, position: i64, progress: &watch::Sender<Progress>, shutdown: &CancellationToken) -> bool {
        if !self.advance(position, shutdown).await {
            return false;
        }
        progress.send_modify(|p| {
            p.records += flushed.records;
            p.dead_letters += flushed.dead_lettered;
            p.outbox_position = Some(position);
        });
        true
    }

    /// Moves the stored cursor to `position`, retrying while the database
    /// fails; `false` means shutdown came first.
    async fn advance(&self, position: i64, shutdown: &CancellationToken) -> bool {
        let mut failures = 0u32;
        loop {
            match self.store.advance(CURSOR, position).await {
                Ok(()) => return true,
                Err(error) => {
                    tracing::error!(%error, position, "cannot move the outbox cursor; retrying");
                    m::stall("store");
                    if !pause(shutdown, stall_delay(failures)).await {
                        return false;
                    }
                    failures += 1;
                }
            }
        }
    }
}
