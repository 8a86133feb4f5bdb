//! The tansu Kafka broker: one per test, in memory, on a free port.
//!
//! tansu speaks the Kafka protocol (produce, fetch, consumer groups, offset
//! commits), so the gateway's relay and the connector talk to it with the
//! same rdkafka code as to Apache Kafka. Its memory storage engine keeps
//! nothing after the process ends, which is what a test wants.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message as _;
use rdkafka::{Offset, TopicPartitionList};

use crate::ports::{free_tcp_port, LOCALHOST};
use crate::process::{run_captured, Process};
use crate::{env, eventually, TestContext};

const KAFKA_TIMEOUT: Duration = Duration::from_secs(10);

/// A running broker.
pub struct Tansu {
    process: Process,
    bin: PathBuf,
    port: u16,
}

/// One record read back from a topic.
#[derive(Debug, Clone)]
pub struct Record {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<String>,
    pub payload: Vec<u8>,
}

impl Tansu {
    /// Starts a broker on a free port and waits until it accepts
    /// connections.
    pub async fn start(ctx: &TestContext) -> anyhow::Result<Self> {
        let bin = env::required_program(env::TANSU_BIN)?;
        let port = free_tcp_port()?;
        let listener = format!("tcp://{LOCALHOST}:{port}");
        let mut command = Command::new(&bin);
        command
            .arg("broker")
            .arg("--listener-url")
            .arg(&listener)
            .arg("--advertised-listener-url")
            .arg(&listener)
            .arg("--storage-engine")
            .arg("memory://tansu/")
            // tansu reads its settings from these variables too; a stray one in
            // the test's environment must not override the flags.
            .env_remove("CLUSTER_ID")
            .env_remove("STORAGE_ENGINE")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT");
        let mut process = Process::spawn(ctx, "tansu", command)?;
        eventually("tansu to accept connections", Duration::from_secs(30), || {
            let up = process.ensure_running().map(|_| std::net::TcpStream::connect((LOCALHOST, port)).is_ok());
            async move { up.map(|ok| ok.then_some(())) }
        })
        .await?;
        Ok(Self { process, bin, port })
    }

    /// `host:port` of the broker, for `bootstrap.servers`.
    pub fn brokers(&self) -> String {
        format!("{LOCALHOST}:{}", self.port)
    }

    /// The broker's process, to check it is still alive.
    pub fn process(&mut self) -> &mut Process {
        &mut self.process
    }

    /// Creates `topic` with `partitions` partitions using tansu's own CLI,
    /// then waits until the topic's metadata lists them all.
    pub async fn create_topic(&self, ctx: &TestContext, topic: &str, partitions: i32) -> anyhow::Result<()> {
        let mut command = Command::new(&self.bin);
        command
            .arg("topic")
            .arg("create")
            .arg("--broker")
            .arg(format!("tcp://{}", self.brokers()))
            .arg("--partitions")
            .arg(partitions.to_string())
            .arg(topic);
        let out = run_captured(ctx, &format!("tansu-topic-create-{topic}"), command, Duration::from_secs(30)).await?;
        if !out.status.success() {
            anyhow::bail!("tansu topic create {topic} failed ({}): {}{}", out.status, out.stdout, out.stderr);
        }
        let brokers = self.brokers();
        let topic_name = topic.to_owned();
        eventually(&format!("topic {topic} to list {partitions} partitions"), Duration::from_secs(20), || {
            let brokers = brokers.clone();
            let topic = topic_name.clone();
            async move {
                let found = tokio::task::spawn_blocking(move || partitions_of(&brokers, &topic)).await??;
                Ok((found.len() == partitions as usize).then_some(()))
            }
        })
        .await
    }

    /// Every record of `topic` from the beginning up to the high watermarks
    /// as they are now, in partition then offset order.
    pub async fn read_all(&self, topic: &str) -> anyhow::Result<Vec<Record>> {
        let brokers = self.brokers();
        let topic = topic.to_owned();
        tokio::task::spawn_blocking(move || read_all_blocking(&brokers, &topic)).await?
    }

    /// The high watermark (next offset) of each partition of `topic`.
    pub async fn high_watermarks(&self, topic: &str) -> anyhow::Result<Vec<(i32, i64)>> {
        let brokers = self.brokers();
        let topic = topic.to_owned();
        tokio::task::spawn_blocking(move || {
            let consumer = reader(&brokers, &format!("switchboard-e2e-watermarks-{}", uuid::Uuid::now_v7()))?;
            partitions_of(&brokers, &topic)?
                .into_iter()
                .map(|p| Ok((p, consumer.fetch_watermarks(&topic, p, KAFKA_TIMEOUT)?.1)))
                .collect()
        })
        .await?
    }

    /// The offsets consumer group `group` has committed on each partition of
    /// `topic` (`None` where it committed nothing).
    pub async fn committed_offsets(&self, group: &str, topic: &str) -> anyhow::Result<Vec<(i32, Option<i64>)>> {
        let brokers = self.brokers();
        let topic = topic.to_owned();
        let group = group.to_owned();
        tokio::task::spawn_blocking(move || {
            let consumer = reader(&brokers, &group)?;
            let mut list = TopicPartitionList::new();
            for p in partitions_of(&brokers, &topic)? {
                list.add_partition(&topic, p);
            }
            let committed = consumer.committed_offsets(list, KAFKA_TIMEOUT).context("fetching committed offsets")?;
            Ok(committed
                .elements()
                .iter()
                .map(|e| {
                    (
                        e.partition(),
                        match e.offset() {
                            Offset::Offset(o) => Some(o),
                            _ => None,
                        },
                    )
                })
                .collect())
        })
        .await?
    }

    /// True once `group` has committed, on every partition of `topic`, an
    /// offset at the partition's current high watermark: it has consumed
    /// (and, for the connector, written to Salesforce) everything.
    pub async fn group_caught_up(&self, group: &str, topic: &str) -> anyhow::Result<bool> {
        let high = self.high_watermarks(topic).await?;
        let committed = self.committed_offsets(group, topic).await?;
        Ok(high
            .iter()
            .all(|(p, hw)| *hw == 0 || committed.iter().any(|(cp, off)| cp == p && off.is_some_and(|o| o >= *hw))))
    }
}

/// A consumer used only for reading back and metadata; it never subscribes,
/// so it never joins the group it names.
fn reader(brokers: &str, group: &str) -> anyhow::Result<BaseConsumer> {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .context("creating a Kafka consumer")
}

fn partitions_of(brokers: &str, topic: &str) -> anyhow::Result<Vec<i32>> {
    let consumer = reader(brokers, "switchboard-e2e-metadata")?;
    let metadata = consumer.fetch_metadata(Some(topic), KAFKA_TIMEOUT).context("fetching topic metadata")?;
    let mut partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic && t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    partitions.sort_unstable();
    Ok(partitions)
}

fn read_all_blocking(brokers: &str, topic: &str) -> anyhow::Result<Vec<Record>> {
    let consumer = reader(brokers, &format!("switchboard-e2e-reader-{}", uuid::Uuid::now_v7()))?;
    let mut remaining = Vec::new();
    let mut assignment = TopicPartitionList::new();
    for p in partitions_of(brokers, topic)? {
        let (low, high) = consumer.fetch_watermarks(topic, p, KAFKA_TIMEOUT)?;
        if high > low {
            assignment.add_partition_offset(topic, p, Offset::Offset(low))?;
            remaining.push((p, high));
        }
    }
    let mut records = Vec::new();
    if remaining.is_empty() {
        return Ok(records);
    }
    consumer.assign(&assignment)?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !remaining.is_empty() {
        if Instant::now() >= deadline {
            anyhow::bail!("reading {topic}: partitions {remaining:?} not read up to their high watermark in 30 s");
        }
        let Some(message) = consumer.poll(Duration::from_millis(200)) else { continue };
        let message = message.context("consuming")?;
        records.push(Record {
            partition: message.partition(),
            offset: message.offset(),
            key: message.key().map(|k| String::from_utf8_lossy(k).into_owned()),
            payload: message.payload().unwrap_or_default().to_vec(),
        });
        remaining.retain(|(p, high)| !(*p == message.partition() && message.offset() + 1 >= *high));
    }
    records.sort_by_key(|r| (r.partition, r.offset));
    Ok(records)
}
