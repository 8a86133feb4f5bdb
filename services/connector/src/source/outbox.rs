//! The outbox as the connector's event log (`switchboard up`, no Kafka).
//!
//! Rows are read in id order after the cursor stored in
//! `connector_cursors`; the cursor moves past a row only once the pipeline
//! handled it. New rows are noticed by polling, which costs one indexed
//! query per interval on an idle SQLite file.
//!
//! The outbox id is a commit-ordered position on SQLite (one writer at a
//! time). On PostgreSQL ids are assigned at insert, not at commit, so a
//! long transaction could commit a row behind a cursor that already moved
//! on: run the outbox source on SQLite, and use Kafka (fed by the relay)
//! with PostgreSQL.

use std::time::Duration;

use switchboard_store::{Database, Outbox};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{pause, stall_delay};
use crate::metrics as m;
use crate::pipeline::{Pipeline, PipelineError, Record};
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
    /// reporting each committed row on `progress`. Database failures stall
    /// the loop (logged, counted, retried); they never skip a row.
    pub async fn run(self, pipeline: Pipeline, progress: watch::Sender<Progress>, shutdown: CancellationToken) {
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
        failures = 0;
        'read: while !shutdown.is_cancelled() {
            let rows = match self.outbox.read_after(cursor, BATCH).await {
                Ok(rows) => rows,
                Err(error) => {
                    tracing::error!(%error, cursor, "cannot read the outbox; retrying");
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
                if !pause(&shutdown, self.poll_interval).await {
                    break;
                }
                continue;
            }
            for row in rows {
                let origin = format!("outbox row {}", row.id);
                loop {
                    let record = Record { call_id: &row.call_id, payload: &row.payload, origin: &origin };
                    let result = match pipeline.handle(record).await {
                        Ok(handled) => self.store.advance(CURSOR, row.id).await.map(|()| handled).map_err(PipelineError::from),
                        Err(e) => Err(e),
                    };
                    match result {
                        Ok(handled) => {
                            failures = 0;
                            progress.send_modify(|p| {
                                p.records += 1;
                                p.dead_letters += handled.dead_lettered as u64;
                                p.outbox_position = Some(row.id);
                            });
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
                cursor = row.id;
            }
        }
        tracing::info!(cursor, "connector stopped reading the outbox");
    }
}
