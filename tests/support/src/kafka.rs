//! A Kafka-protocol broker for one test, and the producing, topic,
//! watermark, offset and read-back look-ups tests make on it.
//!
//! Where the broker comes from, in order:
//! - `SWITCHBOARD_TEST_KAFKA`: the bootstrap address of a running broker
//!   that lets a test create topics;
//! - `SWITCHBOARD_TEST_TANSU_BIN` (exported by `scripts/test`): a tansu
//!   broker started for the test on a free port, in memory, killed with its
//!   handle;
//! - for [`Broker::any`] only, when neither is set, librdkafka's
//!   in-process mock cluster (it listens on TCP too).
//!
//! tansu speaks the Kafka protocol (produce, fetch, consumer groups, offset
//! commits, topic creation), so the gateway's relay and the connector talk
//! to it with the same rdkafka code as to Apache Kafka. Its memory storage
//! engine keeps nothing after the process ends, which is what a test wants.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers as _, Message as _};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{DefaultProducerContext, FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

use crate::{configured, read_log, required_program, tail};

/// Bootstrap address of a running broker to use instead of starting one.
pub const KAFKA: &str = "SWITCHBOARD_TEST_KAFKA";
/// Path of the tansu binary (`scripts/test` installs it and exports this).
pub const TANSU_BIN: &str = "SWITCHBOARD_TEST_TANSU_BIN";

/// Bound on one request to the broker.
const KAFKA_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on tansu's start and on a topic's partitions being listed.
const PATIENCE: Duration = Duration::from_secs(30);

/// The broker of one test.
pub enum Broker {
    /// Named by `SWITCHBOARD_TEST_KAFKA`.
    External(String),
    /// Started by this test.
    Tansu(Tansu),
    /// librdkafka's in-process mock cluster.
    Mock(MockCluster<'static, DefaultProducerContext>),
}

impl Broker {
    /// A real broker when the environment offers one (as [`Broker::real`]),
    /// else librdkafka's in-process mock cluster: for tests of Kafka code
    /// that can do without a real broker.
    pub async fn any(dir: &Path) -> Broker {
        if configured(KAFKA).is_some() || configured(TANSU_BIN).is_some() {
            return Broker::real(dir).await;
        }
        println!("neither {KAFKA} nor {TANSU_BIN} is set: using librdkafka's in-process mock cluster");
        Broker::Mock(MockCluster::new(1).expect("librdkafka's mock cluster"))
    }

    /// A real Kafka-protocol broker: the one named by `SWITCHBOARD_TEST_KAFKA`,
    /// else a tansu broker started for this test, logging to
    /// `dir/tansu.log`. Panics, saying how to get one, when neither is
    /// configured.
    pub async fn real(dir: &Path) -> Broker {
        if let Some(bootstrap) = configured(KAFKA) {
            println!("using the Kafka broker at {bootstrap} ({KAFKA})");
            return Broker::External(bootstrap);
        }
        assert!(
            configured(TANSU_BIN).is_some(),
            "this test needs a real Kafka-protocol broker: set {KAFKA} to the bootstrap address of one that lets \
             the test create topics, or {TANSU_BIN} to the tansu binary (`eval \"$(scripts/test --print-env)\"` \
             installs tansu and exports it)"
        );
        Broker::tansu(dir).await
    }

    /// A tansu broker started for this test whatever else is configured
    /// (for tests of the broker's own life: it stops with its handle).
    pub async fn tansu(dir: &Path) -> Broker {
        Broker::Tansu(Tansu::start(&required_program(TANSU_BIN), dir).await)
    }

    /// `host:port` for `bootstrap.servers`.
    pub fn bootstrap(&self) -> String {
        match self {
            Broker::External(b) => b.clone(),
            Broker::Tansu(t) => t.bootstrap(),
            Broker::Mock(m) => m.bootstrap_servers(),
        }
    }

    /// The log of a tansu started here, for a test's failure report.
    pub fn log(&self) -> Option<&Path> {
        match self {
            Broker::Tansu(t) => Some(&t.log),
            _ => None,
        }
    }

    /// Creates `name` with `partitions` partitions (through the Kafka admin
    /// API) and waits until the broker's metadata lists them all.
    pub async fn create_topic(&self, name: &str, partitions: i32) {
        if let Broker::Mock(m) = self {
            m.create_topic(name, partitions, 1).expect("mock topic");
            return;
        }
        let admin: AdminClient<DefaultClientContext> =
            ClientConfig::new().set("bootstrap.servers", self.bootstrap()).create().expect("admin client");
        let results = admin
            .create_topics(&[NewTopic::new(name, partitions, TopicReplication::Fixed(1))], &AdminOptions::new())
            .await
            .unwrap_or_else(|e| panic!("creating topic {name}: {e}"));
        for result in results {
            result.unwrap_or_else(|(topic, code)| panic!("creating topic {topic} failed: {code}"));
        }
        // Metadata has no event to await: ask until it lists them.
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let found = self.partitions(name).await.unwrap_or_default();
            if found.len() == partitions as usize {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "topic {name} lists partitions {found:?}, not {partitions}, after {PATIENCE:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// librdkafka settings for a consumer group member under test: a session
    /// timeout short enough for a test (the default makes a restarted member
    /// wait for the old one's session to expire).
    pub fn consumer_properties(&self) -> Vec<(String, String)> {
        vec![("session.timeout.ms".into(), "6000".into()), ("heartbeat.interval.ms".into(), "500".into())]
    }

    /// An idempotent producer that waits for every replica, as the gateway's
    /// relay uses.
    pub fn producer(&self) -> FutureProducer {
        ClientConfig::new()
            .set("bootstrap.servers", self.bootstrap())
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("message.timeout.ms", "10000")
            .create()
            .expect("test producer")
    }

    /// The partition ids of `topic`, sorted (none while it does not exist).
    pub async fn partitions(&self, topic: &str) -> anyhow::Result<Vec<i32>> {
        let bootstrap = self.bootstrap();
        let topic = topic.to_owned();
        tokio::task::spawn_blocking(move || partitions_of(&bootstrap, &topic)).await?
    }

    /// The high watermark (next offset) of each partition of `topic`.
    pub async fn high_watermarks(&self, topic: &str) -> anyhow::Result<Vec<(i32, i64)>> {
        let bootstrap = self.bootstrap();
        let topic = topic.to_owned();
        tokio::task::spawn_blocking(move || {
            let consumer = reader(&bootstrap, &format!("switchboard-test-watermarks-{}", uuid::Uuid::now_v7().simple()))?;
            partitions_of(&bootstrap, &topic)?
                .into_iter()
                .map(|p| Ok((p, consumer.fetch_watermarks(&topic, p, KAFKA_TIMEOUT).context("fetching watermarks")?.1)))
                .collect()
        })
        .await?
    }

    /// How many records `topic` has taken, all partitions.
    pub async fn record_count(&self, topic: &str) -> anyhow::Result<i64> {
        Ok(self.high_watermarks(topic).await?.iter().map(|(_, high)| high).sum())
    }

    /// The offset consumer group `group` has committed on each partition of
    /// `topic` (`None` where it committed nothing).
    pub async fn committed_offsets(&self, group: &str, topic: &str) -> anyhow::Result<Vec<(i32, Option<i64>)>> {
        let bootstrap = self.bootstrap();
        let topic = topic.to_owned();
        let group = group.to_owned();
        tokio::task::spawn_blocking(move || {
            // Never subscribes, so it never joins the group it names.
            let consumer = reader(&bootstrap, &group)?;
            let mut list = TopicPartitionList::new();
            for p in partitions_of(&bootstrap, &topic)? {
                list.add_partition(&topic, p);
            }
            let committed = consumer.committed_offsets(list, KAFKA_TIMEOUT).context("fetching committed offsets")?;
            Ok(committed
                .elements()
                .iter()
                .map(|e| {
                    let offset = match e.offset() {
                        Offset::Offset(o) => Some(o),
                        _ => None,
                    };
                    (e.partition(), offset)
                })
                .collect())
        })
        .await?
    }

    /// True once `group` has committed, on every partition of `topic`, an
    /// offset at the partition's current high watermark: it has consumed
    /// (and, for the connector, written to Salesforce) everything.
    pub async fn caught_up(&self, group: &str, topic: &str) -> anyhow::Result<bool> {
        let high = self.high_watermarks(topic).await?;
        let committed = self.committed_offsets(group, topic).await?;
        Ok(high.iter().all(|(p, hw)| *hw == 0 || committed.iter().any(|(cp, off)| cp == p && off.is_some_and(|o| o >= *hw))))
    }

    /// Every record of `topic` from the beginning up to the high watermarks
    /// as they are now, in partition then offset order.
    pub async fn read_all(&self, topic: &str) -> anyhow::Result<Vec<Record>> {
        let bootstrap = self.bootstrap();
        let topic = topic.to_owned();
        tokio::task::spawn_blocking(move || read_all_blocking(&bootstrap, &topic)).await?
    }
}

/// One record as read back.
#[derive(Debug, Clone)]
pub struct Record {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<String>,
    pub payload: Vec<u8>,
    /// Its headers, values as text.
    pub headers: BTreeMap<String, String>,
}

/// Where a produced record landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Placed {
    pub partition: i32,
    pub offset: i64,
}

/// Produces one record keyed by `key` and waits for the broker's ack.
pub async fn produce(producer: &FutureProducer, topic: &str, key: &str, payload: &[u8]) -> Placed {
    let delivery = producer
        .send(FutureRecord::to(topic).key(key).payload(payload), Duration::from_secs(10))
        .await
        .unwrap_or_else(|(e, _)| panic!("producing to {topic} failed: {e}"));
    Placed { partition: delivery.partition, offset: delivery.offset }
}

/// A tansu broker started for one test: in memory, on a free port of
/// 127.0.0.1, its output in `tansu.log` of the test's directory, killed
/// when dropped (the log's tail is printed then if the test is failing).
pub struct Tansu {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Tansu {
    /// Starts `bin` logging into `dir` and waits until it accepts
    /// connections.
    pub async fn start(bin: &Path, dir: &Path) -> Tansu {
        let port = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port").local_addr().unwrap().port();
        let listener = format!("tcp://127.0.0.1:{port}");
        std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        let log = dir.join("tansu.log");
        let file = std::fs::File::create(&log).unwrap_or_else(|e| panic!("creating {}: {e}", log.display()));
        let child = Command::new(bin)
            .args(["broker", "--listener-url", &listener, "--advertised-listener-url", &listener])
            .args(["--storage-engine", "memory://tansu/"])
            // tansu reads its settings from these variables too; a stray one
            // in the test's environment must not override the flags.
            .env_remove("CLUSTER_ID")
            .env_remove("STORAGE_ENGINE")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .stdin(Stdio::null())
            .stdout(Stdio::from(file.try_clone().expect("log handle")))
            .stderr(Stdio::from(file))
            .spawn()
            .unwrap_or_else(|e| panic!("starting tansu ({}): {e}", bin.display()));
        let mut tansu = Tansu { child, port, log };
        // A listening port has no event to await: try to connect until it answers.
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            if let Ok(Some(status)) = tansu.child.try_wait() {
                panic!("tansu exited with {status} before it listened:\n{}", tail(&read_log(&tansu.log), 30));
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "tansu does not listen on {port} after {PATIENCE:?}:\n{}",
                tail(&read_log(&tansu.log), 30)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        println!("using a tansu broker at 127.0.0.1:{port}");
        tansu
    }

    /// `host:port` for `bootstrap.servers`.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Its log file.
    pub fn log(&self) -> &Path {
        &self.log
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- tail of {} ---\n{}", self.log.display(), tail(&read_log(&self.log), 40));
        }
    }
}

/// A consumer used only for look-ups and reading back; it never
/// subscribes, so it never joins the group it names.
fn reader(bootstrap: &str, group: &str) -> anyhow::Result<BaseConsumer> {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .context("creating a Kafka consumer")
}

fn partitions_of(bootstrap: &str, topic: &str) -> anyhow::Result<Vec<i32>> {
    let consumer = reader(bootstrap, "switchboard-test-metadata")?;
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

fn read_all_blocking(bootstrap: &str, topic: &str) -> anyhow::Result<Vec<Record>> {
    let consumer = reader(bootstrap, &format!("switchboard-test-reader-{}", uuid::Uuid::now_v7().simple()))?;
    let mut remaining = Vec::new();
    let mut assignment = TopicPartitionList::new();
    for p in partitions_of(bootstrap, topic)? {
        let (low, high) = consumer.fetch_watermarks(topic, p, KAFKA_TIMEOUT).context("fetching watermarks")?;
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
    let deadline = Instant::now() + PATIENCE;
    while !remaining.is_empty() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "reading {topic}: partitions {remaining:?} not read up to their high watermark in {PATIENCE:?}"
        );
        let Some(message) = consumer.poll(Duration::from_millis(200)) else { continue };
        let message = message.context("consuming")?;
        let headers = message
            .headers()
            .map(|h| h.iter().map(|h| (h.key.to_owned(), String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned())).collect())
            .unwrap_or_default();
        records.push(Record {
            partition: message.partition(),
            offset: message.offset(),
            key: message.key().map(|k| String::from_utf8_lossy(k).into_owned()),
            payload: message.payload().unwrap_or_default().to_vec(),
            headers,
        });
        remaining.retain(|(p, high)| !(*p == message.partition() && message.offset() + 1 >= *high));
    }
    records.sort_by_key(|r| (r.partition, r.offset));
    Ok(records)
}
