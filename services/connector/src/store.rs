//! The connector's own tables: folded call state (`sync_calls`), Task sync
//! status per (call, agent) (`sync_tasks`), the read position in logs it
//! owns no offsets in (`connector_cursors`) and refused events
//! (`dead_letters`).
//!
//! Queries are written once for SQLite and PostgreSQL (`$1` placeholders,
//! `ON CONFLICT … DO UPDATE`), like the rest of the store.

use std::collections::{HashMap, HashSet};

use switchboard_store::sqlx::{self, Row};
use switchboard_store::{now_ms, Database};

use crate::dead_letter::DeadLetter;
use crate::fold::{CallState, TaskSync};

/// Access to the connector's tables.
#[derive(Debug, Clone)]
pub struct SyncStore {
    db: Database,
}

impl SyncStore {
    /// The connector's tables in `db`.
    pub fn new(db: Database) -> Self {
        Self { db }
    }

    /// The stored state of `call_id` with its Tasks, or `None` for a call
    /// never seen. A row that no longer parses (edited by hand, written by a
    /// newer build) is logged and treated as absent: the state is rebuilt
    /// from the events, and the upserts are idempotent.
    pub async fn load(&self, call_id: &str) -> Result<Option<CallState>, sqlx::Error> {
        Ok(self.load_many(&[call_id]).await?.remove(call_id))
    }

    /// The stored states of the calls of `call_ids` that were seen before,
    /// with their Tasks, by call id, in two queries; see [`SyncStore::load`].
    pub async fn load_many(&self, call_ids: &[&str]) -> Result<HashMap<String, CallState>, sqlx::Error> {
        let mut states = HashMap::new();
        if call_ids.is_empty() {
            return Ok(states);
        }
        let pool = self.db.pool();
        let placeholders = (1..=call_ids.len()).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ");
        let sql = format!("SELECT call_id, state FROM sync_calls WHERE call_id IN ({placeholders})");
        let mut query = sqlx::query(&sql);
        for call_id in call_ids {
            query = query.bind(*call_id);
        }
        for row in query.fetch_all(pool).await? {
            let call_id: String = row.try_get("call_id")?;
            let text: String = row.try_get("state")?;
            match serde_json::from_str::<CallState>(&text) {
                Ok(mut state) => {
                    state.call_id = call_id.clone();
                    states.insert(call_id, state);
                }
                Err(e) => tracing::error!(call_id, error = %e, "stored call state does not parse; rebuilding it from the events"),
            }
        }
        if states.is_empty() {
            return Ok(states);
        }
        let sql = format!("SELECT call_id, user_id, state FROM sync_tasks WHERE call_id IN ({placeholders})");
        let mut query = sqlx::query(&sql);
        for call_id in call_ids {
            query = query.bind(*call_id);
        }
        for row in query.fetch_all(pool).await? {
            let call_id: String = row.try_get("call_id")?;
            let user_id: String = row.try_get("user_id")?;
            let text: String = row.try_get("state")?;
            let Some(state) = states.get_mut(&call_id) else { continue };
            match serde_json::from_str::<TaskSync>(&text) {
                Ok(sync) => {
                    state.tasks.insert(user_id, sync);
                }
                Err(e) => {
                    tracing::error!(call_id, user_id, error = %e, "stored Task state does not parse; the Task will be written again");
                }
            }
        }
        Ok(states)
    }

    /// Stores the call facts and every Task status of `state` in one
    /// transaction.
    pub async fn save(&self, state: &CallState) -> Result<(), sqlx::Error> {
        self.save_batch(std::iter::once(state), &HashSet::new()).await
    }

    /// Stores the states of a written batch, with every Task status, in
    /// one transaction; the Tasks in `accepted` (call id, user id) get
    /// `last_synced_at` stamped.
    pub async fn save_batch<'a>(
        &self,
        states: impl Iterator<Item = &'a CallState>,
        accepted: &HashSet<(String, String)>,
    ) -> Result<(), sqlx::Error> {
        let now = now_ms();
        let states: Vec<&CallState> = states.collect();
        let tasks: Vec<(&str, &str, &TaskSync)> =
            states.iter().flat_map(|s| s.tasks.iter().map(|(user_id, sync)| (s.call_id.as_str(), user_id.as_str(), sync))).collect();
        let mut tx = self.db.pool().begin().await?;
        // Many rows a statement: one round trip per ROWS rows, not per row.
        for chunk in states.chunks(ROWS) {
            let sql = format!(
                "INSERT INTO sync_calls (call_id, state, updated_at) VALUES {} \
                 ON CONFLICT (call_id) DO UPDATE SET state = excluded.state, updated_at = excluded.updated_at",
                values(chunk.len(), 3)
            );
            let mut query = sqlx::query(&sql);
            for state in chunk {
                query = query.bind(state.call_id.as_str()).bind(to_json(*state)).bind(now);
            }
            query.execute(&mut *tx).await?;
        }
        for chunk in tasks.chunks(ROWS) {
            let sql = format!(
                "INSERT INTO sync_tasks (call_id, user_id, state, salesforce_id, last_synced_at, updated_at) VALUES {} {TASK_CONFLICT}",
                values(chunk.len(), 6)
            );
            let mut query = sqlx::query(&sql);
            for (call_id, user_id, sync) in chunk {
                let synced_at = accepted.contains(&((*call_id).to_owned(), (*user_id).to_owned())).then_some(now);
                query = query.bind(*call_id).bind(*user_id).bind(to_json(*sync)).bind(sync.salesforce_id.clone()).bind(synced_at).bind(now);
            }
            query.execute(&mut *tx).await?;
        }
        tx.commit().await
    }

    /// Stores the status of one Task after Salesforce answered; `accepted`
    /// stamps `last_synced_at`.
    pub async fn save_task(&self, call_id: &str, user_id: &str, sync: &TaskSync, accepted: bool) -> Result<(), sqlx::Error> {
        let now = now_ms();
        let mut tx = self.db.pool().begin().await?;
        save_task(&mut tx, call_id, user_id, sync, now, accepted.then_some(now)).await?;
        tx.commit().await
    }

    /// The position stored under `name`, 0 when the log was never read.
    pub async fn cursor(&self, name: &str) -> Result<i64, sqlx::Error> {
        let position: Option<i64> = sqlx::query_scalar("SELECT position FROM connector_cursors WHERE name = $1")
            .bind(name)
            .fetch_optional(self.db.pool())
            .await?;
        Ok(position.unwrap_or(0))
    }

    /// Moves cursor `name` to `position`: every event up to it is applied
    /// (or dead-lettered) and is not read again.
    pub async fn advance(&self, name: &str, position: i64) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO connector_cursors (name, position) VALUES ($1, $2) \
             ON CONFLICT (name) DO UPDATE SET position = excluded.position",
        )
        .bind(name)
        .bind(position)
        .execute(self.db.pool())
        .await?;
        Ok(())
    }

    /// Sets `letter` aside in the `dead_letters` table for `switchboard replay`.
    pub async fn insert_dead_letter(&self, letter: &DeadLetter) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO dead_letters (call_id, payload, reason, label, error_code, origin, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(letter.call_id.as_str())
        .bind(letter.payload.clone())
        .bind(letter.reason.as_str())
        .bind(letter.label)
        .bind(letter.error_code.clone())
        .bind(letter.origin.as_str())
        .bind(now_ms())
        .execute(self.db.pool())
        .await?;
        Ok(())
    }

    /// Forgets the refusals recorded for `call_id`: the Task fields
    /// Salesforce refused for good ([`TaskSync::rejected`]) and the new
    /// Cases it refused. The fold does not send refused fields again
    /// ([`CallState::plan`]), so once the cause is fixed in the org this
    /// makes the next event of the call (a replayed dead letter, or a
    /// duplicate of any event) write them again. Runs in the caller's
    /// transaction, so `switchboard replay` clears and re-queues the event
    /// at once. States that do not parse are left alone; the connector
    /// rebuilds them from the events anyway.
    pub async fn clear_rejections(
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        call_id: &str,
    ) -> Result<ClearedRejections, sqlx::Error> {
        let now = now_ms();
        let mut cleared = ClearedRejections::default();
        let rows = sqlx::query("SELECT user_id, state FROM sync_tasks WHERE call_id = $1")
            .bind(call_id)
            .fetch_all(&mut **tx)
            .await?;
        for row in rows {
            let user_id: String = row.try_get("user_id")?;
            let text: String = row.try_get("state")?;
            let Ok(mut sync) = serde_json::from_str::<TaskSync>(&text) else { continue };
            if sync.rejected.take().is_none() {
                continue;
            }
            // updated_at moves so the agent's softphone hears the Task is pending again.
            sqlx::query("UPDATE sync_tasks SET state = $1, updated_at = $2 WHERE call_id = $3 AND user_id = $4")
                .bind(to_json(&sync))
                .bind(now)
                .bind(call_id)
                .bind(user_id.as_str())
                .execute(&mut **tx)
                .await?;
            cleared.tasks += 1;
        }
        let text: Option<String> = sqlx::query_scalar("SELECT state FROM sync_calls WHERE call_id = $1")
            .bind(call_id)
            .fetch_optional(&mut **tx)
            .await?;
        if let Some(mut state) = text.and_then(|t| serde_json::from_str::<CallState>(&t).ok()) {
            for case in state.cases.values_mut().filter(|c| c.salesforce_id.is_none() && c.error_code.is_some()) {
                case.error_code = None;
                case.message = None;
                cleared.cases += 1;
            }
            if cleared.cases > 0 {
                sqlx::query("UPDATE sync_calls SET state = $1, updated_at = $2 WHERE call_id = $3")
                    .bind(to_json(&state))
                    .bind(now)
                    .bind(call_id)
                    .execute(&mut **tx)
                    .await?;
            }
        }
        Ok(cleared)
    }
}

/// What [`SyncStore::clear_rejections`] forgot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClearedRejections {
    /// Tasks whose refused fields will be written again.
    pub tasks: usize,
    /// New Cases that will be created again.
    pub cases: usize,
}

/// Rows written by one statement of [`SyncStore::save_batch`].
const ROWS: usize = 100;

/// What an upsert of `sync_tasks` does to a row already there: the new
/// state, keeping the Task id and the last sync time when the new row has none.
const TASK_CONFLICT: &str = "ON CONFLICT (call_id, user_id) DO UPDATE SET state = excluded.state, \
     salesforce_id = COALESCE(excluded.salesforce_id, sync_tasks.salesforce_id), \
     last_synced_at = COALESCE(excluded.last_synced_at, sync_tasks.last_synced_at), \
     updated_at = excluded.updated_at";

/// `($1, $2, …), (…)`: `rows` tuples of `columns` numbered placeholders.
fn values(rows: usize, columns: usize) -> String {
    (0..rows)
        .map(|r| format!("({})", (1..=columns).map(|c| format!("${}", r * columns + c)).collect::<Vec<_>>().join(", ")))
        .collect::<Vec<_>>()
        .join(", ")
}

async fn save_task(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    call_id: &str,
    user_id: &str,
    sync: &TaskSync,
    now: i64,
    synced_at: Option<i64>,
) -> Result<(), sqlx::Error> {
    let sql = format!("INSERT INTO sync_tasks (call_id, user_id, state, salesforce_id, last_synced_at, updated_at) VALUES {} {TASK_CONFLICT}", values(1, 6));
    sqlx::query(&sql)
    .bind(call_id)
    .bind(user_id)
    .bind(to_json(sync))
    .bind(sync.salesforce_id.clone())
    .bind(synced_at)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

fn to_json<T: serde::Serialize>(value: &T) -> String {
    // The state types are plain data (strings, numbers, maps with string
    // keys); serialising them cannot fail.
    serde_json::to_string(value).unwrap_or_else(|_| "{}".to_owned())
}
