//! A Kafka-protocol broker for the connector's tests, and the producing,
//! offset and watermark look-ups they make on it.
//!
//! Where the broker comes from, in order:
//! - `SWITCHBOARD_TEST_KAFKA`: the bootstrap address of a running broker;
//! - `SWITCHBOARD_TEST_TANSU_BIN` (exported by `scripts/test`): a tansu
//!   broker started for the test on a free port, in memory, killed with it;
//! - for [`Broker::any`] only, when neither is set, librdkafka's in-process
//!   mock cluster.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use switchboard_proto::{CallEvent, Message as _};

/// Bootstrap address of a running broker to use instead of starting one.
pub const KAFKA_VAR: &str = "SWITCHBOARD_TEST_KAFKA";
/// Path of the tansu binary (`scripts/test` installs it and exports this).
pub const TANSU_BIN_VAR: &str = "SWITCHBOARD_TEST_TANSU_BIN";

const KAFKA_TIMEOUT: Duration = Duration::from_secs(10);

/// The broker of one test.
pub enum Broker {
    /// Named by `SWITCHBOARD_TEST_KAFKA`.
    External(String),
    /// Started by this test.
    Tansu(Tansu),
    /// librdkafka's in-process mock cluster.
    Mock(MockCluster<'static, rdkafka::producer::DefaultProducerContext>),
}

impl Broker {
    /// A real broker when the environment offers one (as [`Broker::real`]),
    /// else librdkafka's in-process mock cluster: for tests of the
    /// connector's Kafka code that can do without a real broker.
    pub async fn any(dir: &Path) -> Broker {
        if configured(KAFKA_VAR).is_some() || configured(TANSU_BIN_VAR).is_some() {
            return Broker::real(dir).await;
        }
        println!("neither {KAFKA_VAR} nor {TANSU_BIN_VAR} is set: using librdkafka's in-process mock cluster");
        Broker::Mock(MockCluster::new(1).expect("mock cluster"))
    }

    /// A real Kafka-protocol broker: the one named by `SWITCHBOARD_TEST_KAFKA`,
    /// else a tansu broker started for this test (logging into `dir`).
    /// Panics, saying how to get one, when neither is configured.
    pub async fn real(dir: &Path) -> Broker {
        if let Some(bootstrap) = configured(KAFKA_VAR) {
            println!("using the Kafka broker at {bootstrap} ({KAFKA_VAR})");
            return Broker::External(bootstrap);
        }
        match configured(TANSU_BIN_VAR) {
            Some(bin) => Broker::Tansu(Tansu::start(Path::new(&bin), dir).await),
            None => panic!(
                "this test needs a real Kafka-protocol broker: set {KAFKA_VAR} to a broker's bootstrap address, or \
                 {TANSU_BIN_VAR} to the tansu binary (`eval \"$(scripts/test --print-env)\"` installs tansu and exports it)"
            ),
        }
    }

    /// `host:port` for `bootstrap.servers`.
    pub fn bootstrap(&self) -> String {
        match self {
            Broker::External(b) => b.clone(),
            Broker::Tansu(t) => t.bootstrap(),
            Broker::Mock(m) => m.bootstrap_servers(),
        }
    }

    /// Creates `name` with `partitions` partitions and waits until the
    /// broker's metadata lists them all.
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
            .expect("create topics");
        for result in results {
            result.unwrap_or_else(|(topic, code)| panic!("creating topic {topic} failed: {code}"));
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let found = self.partitions(name).await;
            if found.len() == partitions as usize {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "topic {name} lists partitions {found:?}, not {partitions}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// librdkafka settings for the connector's consumer: a session timeout
    /// short enough for a test (the default makes a restarted member wait
    /// for the old one's session to expire).
    pub fn consumer_properties(&self) -> Vec<(String, String)> {
        vec![("session.timeout.ms".into(), "6000".into()), ("heartbeat.interval.ms".into(), "500".into())]
    }

    /// An idempotent producer, as the gateway's relay uses.
    pub fn producer(&self) -> FutureProducer {
        ClientConfig::new()
            .set("bootstrap.servers", self.bootstrap())
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("message.timeout.ms", "10000")
            .create()
            .expect("test producer")
    }

    /// The partition ids of `topic`, sorted.
    pub async fn partitions(&self, topic: &str) -> Vec<i32> {
        let bootstrap = self.bootstrap();
        let topic = topic.to_owned();
        tokio::task::spawn_blocking(move || partitions_of(&bootstrap, &topic)).await.unwrap()
    }

    /// The high watermark (next offset) of each partition of `topic`.
    pub async fn high_watermarks(&self, topic: &str) -> Vec<(i32, i64)> {
        let bootstrap = self.bootstrap();
        let topic = topic.to_owned();
        tokio::task::spawn_blocking(move || {
            let consumer = reader(&bootstrap, &format!("watermarks-{}", uuid::Uuid::now_v7().simple()));
            partitions_of(&bootstrap, &topic)
                .into_iter()
                .map(|p| (p, consumer.fetch_watermarks(&topic, p, KAFKA_TIMEOUT).expect("watermarks").1))
                .collect()
        })
        .await
        .unwrap()
    }

    /// Records on `topic` (e.g. the dead-letter topic), all partitions.
    pub async fn record_count(&self, topic: &str) -> i64 {
        self.high_watermarks(topic).await.iter().map(|(_, high)| high).sum()
    }

    /// The offset `group` committed on each partition of `topic` (`None`
    /// where it committed nothing).
    pub async fn committed_offsets(&self, group: &str, topic: &str) -> Vec<(i32, Option<i64>)> {
        let bootstrap = self.bootstrap();
        let topic = topic.to_owned();
        let group = group.to_owned();
        tokio::task::spawn_blocking(move || {
            // Never subscribes, so it never joins the group it names.
            let consumer = reader(&bootstrap, &group);
            let mut list = TopicPartitionList::new();
            for p in partitions_of(&bootstrap, &topic) {
                list.add_partition(&topic, p);
            }
            let committed = consumer.committed_offsets(list, KAFKA_TIMEOUT).expect("committed offsets");
            committed
                .elements()
                .iter()
                .map(|e| {
                    let offset = match e.offset() {
                        Offset::Offset(o) => Some(o),
                        _ => None,
                    };
                    (e.partition(), offset)
                })
                .collect()
        })
        .await
        .unwrap()
    }

    /// True once `group` has committed, on every partition of `topic`, the
    /// partition's current high watermark: it consumed everything.
    pub async fn caught_up(&self, group: &str, topic: &str) -> bool {
        let high = self.high_watermarks(topic).await;
        let committed = self.committed_offsets(group, topic).await;
        high.iter().all(|(p, hw)| *hw == 0 || committed.iter().any(|(cp, off)| cp == p && off.is_some_and(|o| o >= *hw)))
    }
}

/// The value of the variable `name`, unless unset or blank.
fn configured(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
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

/// Produces `events` in order, each keyed by its call id, as the gateway's
/// relay does; returns where each landed.
pub async fn produce_events(producer: &FutureProducer, topic: &str, events: &[CallEvent]) -> Vec<Placed> {
    let mut placed = Vec::with_capacity(events.len());
    for e in events {
        placed.push(produce(producer, topic, &e.call_id, &e.encode_to_vec()).await);
    }
    placed
}

/// A consumer used only for look-ups; it never subscribes.
fn reader(bootstrap: &str, group: &str) -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .create()
        .expect("Kafka look-up consumer")
}

fn partitions_of(bootstrap: &str, topic: &str) -> Vec<i32> {
    let consumer = reader(bootstrap, "metadata");
    let metadata = consumer.fetch_metadata(Some(topic), KAFKA_TIMEOUT).expect("topic metadata");
    let mut partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic && t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    partitions.sort_unstable();
    partitions
}

/// A tansu broker started for one test: in memory, on a free port, killed
/// when dropped.
pub struct Tansu {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Tansu {
    async fn start(bin: &Path, dir: &Path) -> Tansu {
        assert!(bin.is_file(), "{TANSU_BIN_VAR}={} names no file; rerun `scripts/test --print-env`", bin.display());
        let port = super::free_port();
        let listener = format!("tcp://127.0.0.1:{port}");
        let log = dir.join("tansu.log");
        let file = std::fs::File::create(&log).expect("tansu log file");
        let child = Command::new(bin)
            .args(["broker", "--listener-url", &listener, "--advertised-listener-url", &listener])
            .args(["--storage-engine", "memory://tansu/"])
            // tansu reads its settings from these too; a stray one must not
            // override the flags.
            .env_remove("CLUSTER_ID")
            .env_remove("STORAGE_ENGINE")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .stdin(Stdio::null())
            .stdout(Stdio::from(file.try_clone().expect("log handle")))
            .stderr(Stdio::from(file))
            .spawn()
            .unwrap_or_else(|e| panic!("starting tansu ({}): {e}", bin.display()));
        let mut tansu = Tansu { child, port, log };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            if let Ok(Some(status)) = tansu.child.try_wait() {
                panic!("tansu exited with {status}:\n{}", super::tail(&tansu.log, 30));
            }
            assert!(tokio::time::Instant::now() < deadline, "tansu does not listen on {port}:\n{}", super::tail(&tansu.log, 30));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tansu
    }

    fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- tail of {} ---\n{}", self.log.display(), super::tail(&self.log, 40));
        }
    }
}
