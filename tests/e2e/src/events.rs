//! Call events read back from where the gateway put them: the Kafka topic or
//! the SQLite outbox of `switchboard up`.

use std::path::Path;

use anyhow::Context as _;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions as _, Row as _};
use switchboard_proto::{CallEvent, Kind, Message as _};

use crate::kafka::Record;

/// The kinds, in order, an answered and recorded inbound call produces.
pub const ANSWERED_CALL: [&str; 6] =
    ["call.started", "call.ringing", "call.answered", "call.ended", "call.quality", "recording.available"];

/// Decodes the records of one call (those keyed by `call_id`), checking that
/// each payload is a `CallEvent` of that call.
pub fn decode_records(records: &[Record], call_id: &str) -> anyhow::Result<Vec<CallEvent>> {
    records
        .iter()
        .filter(|r| r.key.as_deref() == Some(call_id))
        .map(|r| {
            let event = CallEvent::decode(r.payload.as_slice()).with_context(|| {
                format!("record at partition {} offset {} is not a CallEvent", r.partition, r.offset)
            })?;
            anyhow::ensure!(
                event.call_id == call_id,
                "record keyed {call_id} carries an event of call {} (offset {})",
                event.call_id,
                r.offset
            );
            Ok(event)
        })
        .collect()
}

/// The distinct record keys of a topic, in order of first appearance.
pub fn keys(records: &[Record]) -> Vec<String> {
    let mut keys: Vec<String> = Vec::new();
    for key in records.iter().filter_map(|r| r.key.clone()) {
        if !keys.contains(&key) {
            keys.push(key);
        }
    }
    keys
}

/// The kind names of `events`, in their order.
pub fn kinds(events: &[CallEvent]) -> Vec<&'static str> {
    events.iter().map(CallEvent::kind_name).collect()
}

/// Checks that `events` are the events of one call numbered 1, 2, 3, … in
/// the order given.
pub fn ensure_in_sequence(events: &[CallEvent]) -> anyhow::Result<()> {
    for (i, event) in events.iter().enumerate() {
        anyhow::ensure!(
            event.sequence == i as u64 + 1,
            "event {} of the call has sequence {} (expected {}); kinds in order: {:?}",
            i + 1,
            event.sequence,
            i + 1,
            kinds(events)
        );
    }
    Ok(())
}

/// The `recording.available` payload of a call's events.
pub fn recording(events: &[CallEvent]) -> Option<&switchboard_proto::v1::RecordingAvailable> {
    events.iter().find_map(|e| match &e.kind {
        Some(Kind::RecordingAvailable(r)) => Some(r),
        _ => None,
    })
}

/// Milliseconds from the `call.answered` to the `call.ended` event: how long
/// media flowed between the parties.
pub fn talk_millis(events: &[CallEvent]) -> Option<i64> {
    let at = |wanted: &str| events.iter().find(|e| e.kind_name() == wanted).map(|e| e.occurred_at_ms);
    Some(at("call.ended")? - at("call.answered")?)
}

/// One row of the outbox table.
#[derive(Debug, Clone)]
pub struct OutboxRow {
    pub id: i64,
    pub call_id: String,
    pub sequence: i64,
    pub kind: String,
    pub event: CallEvent,
}

/// Every row of the outbox of the SQLite database at `path`, in id order,
/// opened read-only so the running product is not disturbed.
pub async fn read_sqlite_outbox(path: &Path) -> anyhow::Result<Vec<OutboxRow>> {
    let mut conn = SqliteConnectOptions::new()
        .filename(path)
        .read_only(true)
        .connect()
        .await
        .with_context(|| format!("opening {}", path.display()))?;
    let rows = sqlx::query("SELECT id, call_id, sequence, kind, payload FROM outbox ORDER BY id")
        .fetch_all(&mut conn)
        .await
        .context("reading the outbox table")?;
    rows.into_iter()
        .map(|row| {
            let payload: Vec<u8> = row.try_get("payload")?;
            let id: i64 = row.try_get("id")?;
            Ok(OutboxRow {
                id,
                call_id: row.try_get("call_id")?,
                sequence: row.try_get("sequence")?,
                kind: row.try_get("kind")?,
                event: CallEvent::decode(payload.as_slice())
                    .with_context(|| format!("outbox row {id} is not a CallEvent"))?,
            })
        })
        .collect()
}

/// The connector's read positions in the outbox (`connector_cursors`), by
/// cursor name.
pub async fn read_sqlite_cursors(path: &Path) -> anyhow::Result<Vec<(String, i64)>> {
    let mut conn = SqliteConnectOptions::new().filename(path).read_only(true).connect().await?;
    let rows = sqlx::query("SELECT name, position FROM connector_cursors").fetch_all(&mut conn).await?;
    rows.into_iter().map(|r| Ok((r.try_get("name")?, r.try_get("position")?))).collect()
}
