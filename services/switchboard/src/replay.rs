//! `switchboard replay`: feeds the connector's dead letters back to it once
//! the cause that made it set them aside is fixed (decision 0020).
//!
//! Outbox mode reads the `dead_letters` table: in one transaction, each
//! matching letter's event is appended to the outbox again
//! ([`Outbox::insert_replay`]) and the letter is stamped `replayed_at`.
//! Kafka mode reads the dead-letter topic from the replay's own consumer
//! group (`<group_id>.replay`) to its end, produces each matching letter's
//! key and payload to the call-event topic, and after the broker's
//! acknowledgement journals the letter in `dead_letter_replays` and
//! commits the group's offset. The group cannot commit past a letter a
//! filter left out, so the journal keeps the letters behind it from being
//! replayed twice.
//!
//! Either way a replayed event is a duplicate for the connector's fold, and
//! the fold never sends fields Salesforce already refused; for a refused
//! write the refusals recorded for the call are therefore cleared first
//! ([`SyncStore::clear_rejections`]), so the connector writes again.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::util::Timeout;
use rdkafka::{Offset, TopicPartitionList};
use switchboard_connector::dead_letter::{HEADER_ERROR_CODE, HEADER_LABEL, HEADER_ORIGIN, HEADER_REASON};
use switchboard_connector::source::kafka::{consumer_config, producer_config};
use switchboard_connector::store::{ClearedRejections, SyncStore};
use switchboard_connector::{KafkaConsumerConfig, SourceConfig};
use switchboard_gateway::config::EventLogKind;
use switchboard_proto::{CallEvent, Message as _};
use switchboard_store::sqlx::{self, Row};
use switchboard_store::{now_ms, Database, Outbox, StoreError};

use crate::admin::table;
use crate::cli::ReplayArgs;
use crate::config::{env_var, Config};
use crate::roles::open_migrated_database;

/// Label of an event whose bytes are no `CallEvent`.
const UNDECODABLE: &str = "undecodable";
/// Label of an event whose Salesforce write was refused for good.
const SALESFORCE_REJECTED: &str = "salesforce_rejected";
/// Header of a replayed record naming the dead letter it came from
/// (`<topic>/<partition>@<offset>`), next to the relay's `kind`.
const HEADER_REPLAYED_FROM: &str = "switchboard-replayed-from";
/// Longest wait for the broker's metadata before it is called unreachable.
const METADATA_TIMEOUT: Duration = Duration::from_secs(15);
/// Longest silence of the broker before the end of the dead-letter topic;
/// the read ends at the end of every partition, this only stops a hang.
const STALL_LIMIT: Duration = Duration::from_secs(60);
/// How long the broker has to acknowledge a replayed record.
const PRODUCE_TIMEOUT_MS: &str = "30000";

/// Runs `switchboard replay` and prints what it did.
pub async fn run(config: &Config, args: ReplayArgs) -> anyhow::Result<()> {
    let options = Options::from(&args);
    let db = match open_migrated_database(config).await {
        Ok(db) => db,
        Err(e) if matches!(e.downcast_ref::<StoreError>(), Some(StoreError::Connect { .. })) => {
            return Err(e.context(format!(
                "cannot open the database that holds the dead letters and the connector's state; check `database.url` ({})",
                env_var("database.url")
            )));
        }
        Err(e) => return Err(e),
    };
    let report = match config.events.log {
        EventLogKind::Outbox => replay_outbox(&db, &options).await,
        EventLogKind::Kafka => match config.connector().source {
            SourceConfig::Kafka(kafka) => replay_kafka(&kafka, &db, &options).await,
            // `config.connector()` follows `events.log`.
            SourceConfig::Outbox => Err(anyhow!("events.log is kafka but the connector reads the outbox")),
        },
    };
    db.close().await;
    print!("{}", report?.render());
    Ok(())
}

/// The command line, checked.
#[derive(Debug, Clone, Default)]
struct Options {
    filter: Filter,
    dry_run: bool,
    limit: Option<usize>,
}

impl From<&ReplayArgs> for Options {
    fn from(args: &ReplayArgs) -> Self {
        let text = |value: &Option<String>| value.as_deref().map(str::trim).map(str::to_owned);
        Options {
            filter: Filter { call_id: text(&args.call_id), label: text(&args.label), error_code: text(&args.error_code) },
            dry_run: args.dry_run,
            limit: args.limit.map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
        }
    }
}

/// Which dead letters to replay; every given part must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Filter {
    call_id: Option<String>,
    label: Option<String>,
    /// Compared ignoring ASCII case.
    error_code: Option<String>,
}

/// What the filter makes of one letter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Replay,
    /// A filter left it out.
    Unmatched,
    /// Undecodable, and `--label undecodable` was not given.
    Undecodable,
}

impl Filter {
    fn verdict(&self, letter: &Letter) -> Verdict {
        let differs = |wanted: &Option<String>, actual: &str| wanted.as_deref().is_some_and(|w| w != actual);
        if differs(&self.call_id, &letter.call_id) || differs(&self.label, &letter.label) {
            return Verdict::Unmatched;
        }
        if let Some(code) = &self.error_code {
            if !letter.error_code.as_deref().is_some_and(|c| c.eq_ignore_ascii_case(code)) {
                return Verdict::Unmatched;
            }
        }
        if self.label.is_none() && letter.label == UNDECODABLE {
            return Verdict::Undecodable;
        }
        Verdict::Replay
    }
}

/// One dead letter, from the table or the topic.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Letter {
    /// The letter itself: its `dead_letters` id, or its place on the
    /// dead-letter topic (`<topic>/<partition>@<offset>`).
    place: String,
    call_id: String,
    label: String,
    error_code: Option<String>,
    reason: String,
    /// Where the connector had read the event.
    origin: String,
}

/// What a run did (or, dry, would do), for the operator.
#[derive(Debug, Default)]
struct Report {
    dry_run: bool,
    /// Where replayed events go, for the summary line.
    destination: String,
    /// The letters replayed, oldest first.
    replayed: Vec<Letter>,
    /// Events fed back: letters of one event (one per refused Task) share one.
    events: usize,
    cleared: ClearedRejections,
    /// Matching undecodable letters left out.
    undecodable: usize,
    /// Kafka: letters of the topic an earlier run replayed already.
    already_replayed: usize,
    /// `--limit` stopped the run before every matching letter.
    limited: bool,
    /// Why nothing could be read at all.
    note: Option<String>,
}

impl Report {
    fn render(&self) -> String {
        let rows: Vec<Vec<String>> = self
            .replayed
            .iter()
            .map(|l| {
                vec![
                    l.place.clone(),
                    l.call_id.clone(),
                    l.label.clone(),
                    l.error_code.clone().unwrap_or_default(),
                    l.origin.clone(),
                    l.reason.replace(['\r', '\n'], " "),
                ]
            })
            .collect();
        let mut out = String::new();
        if let Some(note) = &self.note {
            out.push_str(note);
            out.push('\n');
        }
        if !rows.is_empty() {
            out.push_str(&table(&["LETTER", "CALL ID", "LABEL", "ERROR CODE", "ORIGIN", "REASON"], &rows, ""));
        }
        let n = self.replayed.len();
        let letters = format!("{n} dead letter{}", if n == 1 { "" } else { "s" });
        if n == 0 {
            out.push_str("no dead letters to replay\n");
        } else if self.dry_run {
            out.push_str(&format!("dry run: would replay {letters} to {}; nothing was changed\n", self.destination));
        } else {
            let events = format!("{} event{}", self.events, if self.events == 1 { "" } else { "s" });
            out.push_str(&format!("replayed {letters} to {} ({events})\n", self.destination));
            if self.cleared.tasks + self.cleared.cases > 0 {
                out.push_str(&format!(
                    "cleared the recorded Salesforce refusals of {} Task(s) and {} new Case(s): the connector writes them again\n",
                    self.cleared.tasks, self.cleared.cases
                ));
            }
        }
        if self.already_replayed > 0 {
            out.push_str(&format!("{} dead letter(s) replayed by an earlier run were passed over\n", self.already_replayed));
        }
        if self.undecodable > 0 {
            out.push_str(&format!(
                "{} undecodable dead letter(s) left out: the same bytes only dead-letter again; give --label undecodable to replay them anyway\n",
                self.undecodable
            ));
        }
        if self.limited {
            out.push_str("more matching dead letters wait (--limit): run again to replay them\n");
        }
        out
    }
}

/// The kind name of an event, as the outbox and the relay's `kind` header
/// carry it; `unknown` for bytes that are no `CallEvent`.
fn kind_of(payload: &[u8]) -> &'static str {
    CallEvent::decode(payload).map(|e| e.kind_name()).unwrap_or("unknown")
}

/// Outbox mode: the `dead_letters` table.
async fn replay_outbox(db: &Database, options: &Options) -> anyhow::Result<Report> {
    let mut report = Report { dry_run: options.dry_run, destination: "the outbox".to_owned(), ..Default::default() };
    let rows = sqlx::query(
        "SELECT id, call_id, reason, label, error_code, origin FROM dead_letters WHERE replayed_at IS NULL ORDER BY id",
    )
    .fetch_all(db.pool())
    .await
    .context("cannot read the dead_letters table")?;
    let mut chosen: Vec<(i64, Letter)> = Vec::new();
    for row in rows {
        let id: i64 = row.try_get("id")?;
        let letter = Letter {
            place: id.to_string(),
            call_id: row.try_get("call_id")?,
            label: row.try_get("label")?,
            error_code: row.try_get("error_code")?,
            reason: row.try_get("reason")?,
            origin: row.try_get::<Option<String>, _>("origin")?.unwrap_or_default(),
        };
        match options.filter.verdict(&letter) {
            Verdict::Unmatched => {}
            Verdict::Undecodable => report.undecodable += 1,
            Verdict::Replay if options.limit.is_some_and(|limit| chosen.len() >= limit) => report.limited = true,
            Verdict::Replay => chosen.push((id, letter)),
        }
    }
    if options.dry_run || chosen.is_empty() {
        report.replayed = chosen.into_iter().map(|(_, l)| l).collect();
        return Ok(report);
    }

    let now = now_ms();
    let mut tx = db.pool().begin().await?;
    let mut cleared_calls = HashSet::new();
    let mut appended: HashMap<(String, Vec<u8>), i64> = HashMap::new();
    for (id, letter) in &chosen {
        // The stamp comes first: it takes SQLite's write lock for the whole
        // transaction, and a letter another run stamped meanwhile stops this one.
        let stamped = sqlx::query("UPDATE dead_letters SET replayed_at = $1 WHERE id = $2 AND replayed_at IS NULL")
            .bind(now)
            .bind(*id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if stamped != 1 {
            bail!("dead letter {id} was replayed by another `switchboard replay` meanwhile; nothing was changed, run it again");
        }
        let payload: Vec<u8> = sqlx::query_scalar("SELECT payload FROM dead_letters WHERE id = $1").bind(*id).fetch_one(&mut *tx).await?;
        if letter.label == SALESFORCE_REJECTED && cleared_calls.insert(letter.call_id.clone()) {
            let cleared = SyncStore::clear_rejections(&mut tx, &letter.call_id).await?;
            report.cleared.tasks += cleared.tasks;
            report.cleared.cases += cleared.cases;
        }
        let key = (letter.call_id.clone(), payload);
        if !appended.contains_key(&key) {
            let row = Outbox::insert_replay(&mut tx, &letter.call_id, *id, kind_of(&key.1), &key.1).await?;
            appended.insert(key, row);
        }
    }
    tx.commit().await.context("the replay could not be committed; nothing was changed")?;
    report.events = appended.len();
    report.replayed = chosen.into_iter().map(|(_, l)| l).collect();
    Ok(report)
}

/// How far the letters of one partition are settled: replayed now or
/// before. The group's offset may only move over settled letters.
#[derive(Debug, Default)]
struct Settled {
    /// The offset after the last letter of the unbroken settled run.
    next: Option<i64>,
    /// A letter was left out: nothing after it may be committed.
    broken: bool,
    /// The offset committed last by this run.
    committed: Option<i64>,
}

/// What became of one letter of the topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// Replayed now.
    Replayed,
    /// Needs nothing more: replayed by an earlier run, or (dry run) would be replayed.
    Settled,
    /// A filter left it out; it waits for a later run.
    LeftOut,
}

/// Kafka mode: the dead-letter topic, read in the replay's consumer group.
async fn replay_kafka(kafka: &KafkaConsumerConfig, db: &Database, options: &Options) -> anyhow::Result<Report> {
    let topic = kafka.dead_letter_topic.as_str();
    let mut report = Report {
        dry_run: options.dry_run,
        destination: format!("the call-event topic {}", kafka.topic),
        ..Default::default()
    };
    let group = format!("{}.replay", kafka.group_id);
    let mut settings = consumer_config(kafka);
    settings
        .set("group.id", &group)
        .set("client.id", format!("{}-replay", kafka.client_id))
        .set("enable.partition.eof", "true");
    let consumer: Arc<StreamConsumer> =
        Arc::new(settings.create().context("cannot create the Kafka consumer; check the [kafka] properties")?);
    let Some(partitions) = dead_letter_partitions(&consumer, kafka).await? else {
        report.note = Some(format!("the dead-letter topic {topic} does not exist: the connector never set a letter aside"));
        return Ok(report);
    };
    let mut assignment = TopicPartitionList::new();
    for partition in &partitions {
        assignment.add_partition_offset(topic, *partition, Offset::Stored)?;
    }
    consumer.assign(&assignment).with_context(|| format!("cannot read the dead-letter topic {topic}"))?;
    let producer: Option<FutureProducer> = if options.dry_run {
        None
    } else {
        let mut settings = producer_config(kafka);
        settings.set("client.id", format!("{}-replay", kafka.client_id)).set("message.timeout.ms", PRODUCE_TIMEOUT_MS);
        Some(settings.create().context("cannot create the Kafka producer; check the [kafka] properties")?)
    };

    let mut open: BTreeSet<i32> = partitions.iter().copied().collect();
    let mut settled: BTreeMap<i32, Settled> = BTreeMap::new();
    let mut sent: HashSet<(Vec<u8>, Vec<u8>)> = HashSet::new();
    let mut cleared_calls = HashSet::new();
    while !open.is_empty() {
        let received = tokio::time::timeout(STALL_LIMIT, consumer.recv()).await.map_err(|_| {
            anyhow!(
                "the broker sent nothing for {} s before the end of the dead-letter topic {topic}; check `kafka.brokers` ({}) \
                 and that the broker runs; what was replayed so far is committed, run it again",
                STALL_LIMIT.as_secs(),
                env_var("kafka.brokers")
            )
        })?;
        let message = match received {
            Ok(message) => message,
            Err(KafkaError::PartitionEOF(partition)) => {
                open.remove(&partition);
                continue;
            }
            Err(e) => {
                return Err(anyhow!(e)).with_context(|| {
                    format!("reading the dead-letter topic {topic} failed; check `kafka.brokers` ({})", env_var("kafka.brokers"))
                });
            }
        };
        let (partition, offset) = (message.partition(), message.offset());
        let key = message.key().map(<[u8]>::to_vec);
        let payload = message.payload().unwrap_or_default().to_vec();
        let letter = letter_of(&message, &payload);
        drop(message);

        let outcome = if journaled(db, &letter.place).await? {
            report.already_replayed += 1;
            Outcome::Settled
        } else {
            match options.filter.verdict(&letter) {
                Verdict::Unmatched => Outcome::LeftOut,
                Verdict::Undecodable => {
                    report.undecodable += 1;
                    Outcome::LeftOut
                }
                Verdict::Replay if options.limit.is_some_and(|limit| report.replayed.len() >= limit) => {
                    report.limited = true;
                    break;
                }
                Verdict::Replay => {
                    let outcome = match &producer {
                        Some(producer) => {
                            if letter.label == SALESFORCE_REJECTED && cleared_calls.insert(letter.call_id.clone()) {
                                let mut tx = db.pool().begin().await?;
                                let cleared = SyncStore::clear_rejections(&mut tx, &letter.call_id).await?;
                                tx.commit().await?;
                                report.cleared.tasks += cleared.tasks;
                                report.cleared.cases += cleared.cases;
                            }
                            let key = key.unwrap_or_else(|| letter.call_id.clone().into_bytes());
                            if sent.insert((key.clone(), payload.clone())) {
                                produce(producer, kafka, &letter, &key, &payload).await?;
                                report.events += 1;
                            }
                            journal(db, &letter).await?;
                            Outcome::Replayed
                        }
                        None => Outcome::Settled,
                    };
                    report.replayed.push(letter);
                    outcome
                }
            }
        };
        let progress = settled.entry(partition).or_default();
        match outcome {
            Outcome::LeftOut => progress.broken = true,
            Outcome::Settled | Outcome::Replayed if !progress.broken => {
                progress.next = Some(offset + 1);
                // A replayed letter is committed at once, so a failure later
                // in the run does not feed it back again.
                if outcome == Outcome::Replayed {
                    commit(&consumer, topic, &mut settled).await?;
                }
            }
            Outcome::Settled | Outcome::Replayed => {}
        }
    }
    if producer.is_some() {
        commit(&consumer, topic, &mut settled).await?;
    }
    Ok(report)
}

/// `<topic>/<partition>@<offset>`, like the connector's origin header.
fn place(topic: &str, partition: i32, offset: i64) -> String {
    format!("{topic}/{partition}@{offset}")
}

/// A record of the dead-letter topic as a letter: the call id is the key
/// (else the event's), the rest comes from the connector's headers.
fn letter_of(message: &impl Message, payload: &[u8]) -> Letter {
    let header = |name: &str| {
        message.headers().and_then(|headers| {
            headers.iter().find(|h| h.key == name).and_then(|h| h.value).map(|v| String::from_utf8_lossy(v).into_owned())
        })
    };
    let call_id = match message.key().map(String::from_utf8_lossy) {
        Some(key) if !key.is_empty() => key.into_owned(),
        _ => CallEvent::decode(payload).map(|e| e.call_id).unwrap_or_default(),
    };
    let label = header(HEADER_LABEL).unwrap_or_else(|| {
        if CallEvent::decode(payload).is_err() { UNDECODABLE.to_owned() } else { "invalid_event".to_owned() }
    });
    Letter {
        place: place(message.topic(), message.partition(), message.offset()),
        call_id,
        label,
        error_code: header(HEADER_ERROR_CODE).filter(|c| !c.is_empty()),
        reason: header(HEADER_REASON).unwrap_or_default(),
        origin: header(HEADER_ORIGIN).unwrap_or_default(),
    }
}

/// The partitions of the dead-letter topic, `None` when it does not exist.
async fn dead_letter_partitions(consumer: &Arc<StreamConsumer>, kafka: &KafkaConsumerConfig) -> anyhow::Result<Option<Vec<i32>>> {
    let asking = consumer.clone();
    let topic = kafka.dead_letter_topic.clone();
    let metadata = tokio::task::spawn_blocking(move || asking.fetch_metadata(Some(&topic), METADATA_TIMEOUT))
        .await
        .context("the metadata request did not run")?
        .map_err(|e| {
            anyhow!(
                "cannot reach the Kafka broker at {}: {e}; check `kafka.brokers` ({}) and that the broker runs",
                kafka.brokers,
                env_var("kafka.brokers")
            )
        })?;
    let Some(found) = metadata.topics().iter().find(|t| t.name() == kafka.dead_letter_topic) else {
        return Ok(None);
    };
    match found.error().map(RDKafkaErrorCode::from) {
        None => {}
        Some(RDKafkaErrorCode::UnknownTopicOrPartition) => return Ok(None),
        Some(code) => bail!(
            "the broker cannot describe the dead-letter topic {}: {code}; check `kafka.dead_letter_topic` ({}) and the client's rights",
            kafka.dead_letter_topic,
            env_var("kafka.dead_letter_topic")
        ),
    }
    let partitions: Vec<i32> = found.partitions().iter().map(|p| p.id()).collect();
    Ok((!partitions.is_empty()).then_some(partitions))
}

/// Produces a letter's record to the call-event topic and waits for the
/// broker's acknowledgement.
async fn produce(producer: &FutureProducer, kafka: &KafkaConsumerConfig, letter: &Letter, key: &[u8], payload: &[u8]) -> anyhow::Result<()> {
    let headers = OwnedHeaders::new()
        .insert(Header { key: "kind", value: Some(kind_of(payload)) })
        .insert(Header { key: HEADER_REPLAYED_FROM, value: Some(letter.place.as_str()) });
    let record = FutureRecord::to(&kafka.topic).key(key).payload(payload).headers(headers);
    producer.send(record, Timeout::After(Duration::from_secs(30))).await.map_err(|(e, _)| {
        anyhow!(
            "the call-event topic {} did not take dead letter {}: {e}; check `kafka.brokers` ({}) and `kafka.topic`; \
             the letters replayed before it are committed, run it again",
            kafka.topic,
            letter.place,
            env_var("kafka.brokers")
        )
    })?;
    Ok(())
}

/// Whether an earlier run replayed the letter at `place`.
async fn journaled(db: &Database, place: &str) -> anyhow::Result<bool> {
    let found: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM dead_letter_replays WHERE position = $1")
        .bind(place)
        .fetch_one(db.pool())
        .await
        .context("cannot read the dead_letter_replays table")?;
    Ok(found > 0)
}

/// Notes that `letter` was replayed.
async fn journal(db: &Database, letter: &Letter) -> anyhow::Result<()> {
    sqlx::query(
        "INSERT INTO dead_letter_replays (position, call_id, replayed_at) VALUES ($1, $2, $3) ON CONFLICT (position) DO NOTHING",
    )
    .bind(letter.place.as_str())
    .bind(letter.call_id.as_str())
    .bind(now_ms())
    .execute(db.pool())
    .await
    .context("the letter was replayed but cannot be noted in dead_letter_replays")?;
    Ok(())
}

/// Commits the replay group's offset of every partition whose settled run
/// grew, and waits for the broker's answer.
async fn commit(consumer: &Arc<StreamConsumer>, topic: &str, settled: &mut BTreeMap<i32, Settled>) -> anyhow::Result<()> {
    let mut offsets = TopicPartitionList::new();
    let mut moved = Vec::new();
    for (partition, progress) in settled.iter() {
        if let Some(next) = progress.next.filter(|n| progress.committed != Some(*n)) {
            offsets.add_partition_offset(topic, *partition, Offset::Offset(next))?;
            moved.push((*partition, next));
        }
    }
    if moved.is_empty() {
        return Ok(());
    }
    let committing = consumer.clone();
    tokio::task::spawn_blocking(move || committing.commit(&offsets, CommitMode::Sync))
        .await
        .context("the offset commit did not run")?
        .with_context(|| {
            format!(
                "the replay group's offsets on {topic} could not be committed; the replayed letters are journaled and will not be replayed again; check `kafka.brokers` ({})",
                env_var("kafka.brokers")
            )
        })?;
    for (partition, next) in moved {
        if let Some(progress) = settled.get_mut(&partition) {
            progress.committed = Some(next);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn letter(call_id: &str, label: &str, error_code: Option<&str>) -> Letter {
        Letter { call_id: call_id.into(), label: label.into(), error_code: error_code.map(str::to_owned), ..Default::default() }
    }

    #[test]
    fn filters_combine_and_undecodable_letters_need_their_label() {
        let refused = letter("c1", SALESFORCE_REJECTED, Some("FIELD_CUSTOM_VALIDATION_EXCEPTION"));
        let garbage = letter("c2", UNDECODABLE, None);
        let all = Filter::default();
        assert_eq!(all.verdict(&refused), Verdict::Replay);
        assert_eq!(all.verdict(&garbage), Verdict::Undecodable);
        let by_label = Filter { label: Some(UNDECODABLE.into()), ..Default::default() };
        assert_eq!((by_label.verdict(&garbage), by_label.verdict(&refused)), (Verdict::Replay, Verdict::Unmatched));
        let by_code = Filter { error_code: Some("field_custom_validation_exception".into()), ..Default::default() };
        assert_eq!((by_code.verdict(&refused), by_code.verdict(&garbage)), (Verdict::Replay, Verdict::Unmatched));
        let by_call = Filter { call_id: Some("c1".into()), error_code: Some("INVALID_FIELD".into()), ..Default::default() };
        assert_eq!(by_call.verdict(&refused), Verdict::Unmatched, "every given part must match");
    }

    #[test]
    fn the_summary_counts_and_says_what_was_left_out() {
        let mut report = Report { destination: "the outbox".into(), undecodable: 2, limited: true, ..Default::default() };
        assert!(report.render().starts_with("no dead letters to replay\n"), "{}", report.render());
        report.replayed = vec![Letter { place: "7".into(), reason: "two\nlines".into(), ..letter("c1", SALESFORCE_REJECTED, Some("X")) }];
        report.events = 1;
        let text = report.render();
        assert!(text.starts_with("LETTER"), "{text}");
        assert!(text.contains("replayed 1 dead letter to the outbox (1 event)"), "{text}");
        assert!(text.contains("two lines") && text.contains("--label undecodable") && text.contains("--limit"), "{text}");
        report.dry_run = true;
        assert!(report.render().contains("dry run: would replay 1 dead letter to the outbox; nothing was changed"));
    }
}
