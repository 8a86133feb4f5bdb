//! The transactional outbox of call events.
//!
//! The gateway inserts an event in the same transaction as the call-state
//! change it describes ([`Outbox::insert`] takes the open transaction). The
//! relay publishes unpublished rows in id order and stamps them; on
//! `switchboard up` the in-process connector reads the table as its event log
//! ([`Outbox::read_after`]).

use sqlx::{Any, AnyPool, Row, Transaction};

use crate::now_ms;

/// One stored event: the encoded protobuf `CallEvent` and its position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxRow {
    /// Position in the log: strictly increasing in commit order on SQLite.
    pub id: i64,
    pub call_id: String,
    pub sequence: i64,
    pub kind: String,
    pub payload: Vec<u8>,
    pub created_at: i64,
}

#[derive(Clone, Debug)]
pub struct Outbox {
    pool: AnyPool,
}

impl Outbox {
    pub(crate) fn new(pool: AnyPool) -> Self {
        Self { pool }
    }

    /// Appends one event inside the caller's transaction.
    pub async fn insert(
        tx: &mut Transaction<'_, Any>,
        call_id: &str,
        sequence: i64,
        kind: &str,
        payload: &[u8],
    ) -> Result<i64, sqlx::Error> {
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO outbox (call_id, sequence, kind, payload, created_at) VALUES ($1, $2, $3, $4, $5) RETURNING id",
        )
        .bind(call_id)
        .bind(sequence)
        .bind(kind)
        .bind(payload.to_vec())
        .bind(now_ms())
        .fetch_one(&mut **tx)
        .await?;
        Ok(id)
    }

    /// Appends a dead-lettered event again, inside the caller's transaction,
    /// for the connector to read like a new row (`switchboard replay`).
    ///
    /// The event's own sequence is already taken in the outbox by the row
    /// it was first read from, so the row's `sequence` is minus
    /// `dead_letter_id` (unique per letter, never a gateway sequence, which
    /// counts from 1); the payload keeps the event, with its own sequence,
    /// which is what the connector reads.
    pub async fn insert_replay(
        tx: &mut Transaction<'_, Any>,
        call_id: &str,
        dead_letter_id: i64,
        kind: &str,
        payload: &[u8],
    ) -> Result<i64, sqlx::Error> {
        Self::insert(tx, call_id, dead_letter_id.saturating_neg(), kind, payload).await
    }

    /// The oldest rows not yet published to the broker, in id order.
    pub async fn unpublished(&self, limit: i64) -> Result<Vec<OutboxRow>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT id, call_id, sequence, kind, payload, created_at FROM outbox WHERE published_at IS NULL ORDER BY id LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(row_to_event).collect())
    }

    /// Stamps rows as published after the broker acknowledged them.
    pub async fn mark_published(&self, ids: &[i64]) -> Result<(), sqlx::Error> {
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        for id in ids {
            sqlx::query("UPDATE outbox SET published_at = $1 WHERE id = $2")
                .bind(now)
                .bind(*id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await
    }

    /// Rows after `position`, in id order: the outbox read as an event log.
    pub async fn read_after(&self, position: i64, limit: i64) -> Result<Vec<OutboxRow>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT id, call_id, sequence, kind, payload, created_at FROM outbox WHERE id > $1 ORDER BY id LIMIT $2",
        )
        .bind(position)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(row_to_event).collect())
    }

    /// Number of rows waiting for the relay, for the backlog gauge.
    pub async fn backlog(&self) -> Result<i64, sqlx::Error> {
        sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE published_at IS NULL")
            .fetch_one(&self.pool)
            .await
    }
}

fn row_to_event(row: &sqlx::any::AnyRow) -> OutboxRow {
    OutboxRow {
        id: row.get("id"),
        call_id: row.get("call_id"),
        sequence: row.get("sequence"),
        kind: row.get("kind"),
        payload: row.get("payload"),
        created_at: row.get("created_at"),
    }
}

#[cfg(test)]
mod tests {
    use crate::Database;

    #[tokio::test]
    async fn sqlite_outbox_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let db = Database::connect(&url).await.unwrap();
        db.migrate().await.unwrap();
        db.check_migrated().await.unwrap();
        let mut tx = db.pool().begin().await.unwrap();
        let a = super::Outbox::insert(&mut tx, "c1", 1, "call.started", b"\x01\x02").await.unwrap();
        let b = super::Outbox::insert(&mut tx, "c1", 2, "call.ended", b"").await.unwrap();
        tx.commit().await.unwrap();
        assert!(b > a);
        let outbox = db.outbox();
        let rows = outbox.unpublished(10).await.unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].payload, vec![1, 2]);
        outbox.mark_published(&[a]).await.unwrap();
        assert_eq!(outbox.backlog().await.unwrap(), 1);
        assert_eq!(outbox.read_after(a, 10).await.unwrap()[0].sequence, 2);
        // The same sequence of a call cannot be written twice.
        let mut tx = db.pool().begin().await.unwrap();
        assert!(super::Outbox::insert(&mut tx, "c1", 2, "call.ended", b"").await.is_err());
        drop(tx);
        // A replayed event goes in again, under minus its dead letter's id.
        let mut tx = db.pool().begin().await.unwrap();
        let replayed = super::Outbox::insert_replay(&mut tx, "c1", 7, "call.ended", b"\x03").await.unwrap();
        tx.commit().await.unwrap();
        let rows = outbox.read_after(b, 10).await.unwrap();
        assert_eq!((rows.len(), rows[0].id, rows[0].sequence, rows[0].payload.as_slice()), (1, replayed, -7, &b"\x03"[..]));
    }
}
