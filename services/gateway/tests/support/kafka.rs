//! A Kafka-protocol broker for the gateway's tests: the one named by
//! `SWITCHBOARD_TEST_KAFKA` (bootstrap address) when set, else a tansu
//! broker of the test's own, in memory on a free port, from
//! `SWITCHBOARD_TEST_TANSU_BIN` (which `scripts/test` installs). A test fails
//! with a message saying so when neither is there.

use std::net::TcpListener;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio::process::{Child, Command};

pub const KAFKA: &str = "SWITCHBOARD_TEST_KAFKA";
pub const TANSU_BIN: &str = "SWITCHBOARD_TEST_TANSU_BIN";

/// A broker for one test; a tansu started here stops with it.
pub struct Broker {
    bootstrap: String,
    _tansu: Option<Child>,
}

impl Broker {
    /// The broker of `SWITCHBOARD_TEST_KAFKA`, or a tansu started in `dir`
    /// (its log goes to `dir/tansu.log`).
    pub async fn start(dir: &Path) -> Broker {
        if let Ok(bootstrap) = std::env::var(KAFKA) {
            if !bootstrap.trim().is_empty() {
                return Broker { bootstrap, _tansu: None };
            }
        }
        let bin = std::env::var(TANSU_BIN).unwrap_or_default();
        assert!(
            !bin.trim().is_empty(),
            "neither {KAFKA} (the bootstrap address of a Kafka-protocol broker that may create topics) nor {TANSU_BIN} \
             (a tansu broker to start) is set: run the test through `scripts/test`, or `eval \"$(scripts/test --print-env)\"` \
             first, which installs tansu and exports {TANSU_BIN}"
        );
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let listener = format!("tcp://127.0.0.1:{port}");
        let log = std::fs::File::create(dir.join("tansu.log")).unwrap();
        let mut tansu = Command::new(&bin)
            .args(["broker", "--listener-url", &listener, "--advertised-listener-url", &listener, "--storage-engine", "memory://tansu/"])
            // tansu reads its settings from these too; a stray one must not override the flags.
            .env_remove("CLUSTER_ID")
            .env_remove("STORAGE_ENGINE")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("starting tansu ({TANSU_BIN}={bin}): {e}"));
        // A listening port has no event to await: try to connect until it answers.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            if let Some(status) = tansu.try_wait().unwrap() {
                panic!("tansu exited with {status} before it listened: {}", super::read_log(&dir.join("tansu.log")));
            }
            assert!(tokio::time::Instant::now() < deadline, "tansu does not listen on {port} after 30 s: {}", super::read_log(&dir.join("tansu.log")));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Broker { bootstrap: format!("127.0.0.1:{port}"), _tansu: Some(tansu) }
    }

    /// `host:port` for `bootstrap.servers`.
    pub fn bootstrap(&self) -> String {
        self.bootstrap.clone()
    }

    /// Creates `name` with `partitions` partitions and waits until the
    /// broker lists them all.
    pub async fn create_topic(&self, name: &str, partitions: i32) {
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new().set("bootstrap.servers", &self.bootstrap).create().expect("admin client");
        let results = admin
            .create_topics(&[NewTopic::new(name, partitions, TopicReplication::Fixed(1))], &AdminOptions::new())
            .await
            .expect("create topics");
        for result in results {
            result.unwrap_or_else(|(topic, code)| panic!("creating topic {topic} failed: {code}"));
        }
        let (bootstrap, topic) = (self.bootstrap.clone(), name.to_owned());
        tokio::task::spawn_blocking(move || {
            let metadata: BaseConsumer = ClientConfig::new().set("bootstrap.servers", &bootstrap).create().expect("metadata client");
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            loop {
                // Metadata has no event to await: ask until it lists them.
                let listed = metadata
                    .fetch_metadata(Some(&topic), Duration::from_secs(5))
                    .map(|m| m.topics().iter().filter(|t| t.name() == topic && t.error().is_none()).map(|t| t.partitions().len()).sum::<usize>())
                    .unwrap_or(0);
                if listed == partitions as usize {
                    return;
                }
                assert!(std::time::Instant::now() < deadline, "topic {topic} lists {listed} of {partitions} partitions after 20 s");
                std::thread::sleep(Duration::from_millis(100));
            }
        })
        .await
        .unwrap();
    }

    /// A producer for the test's own records.
    pub fn producer(&self) -> FutureProducer {
        ClientConfig::new().set("bootstrap.servers", &self.bootstrap).create().expect("test producer")
    }
}

/// Produces one record and waits for the broker's acknowledgement.
pub async fn produce(producer: &FutureProducer, topic: &str, key: &str, payload: &[u8]) {
    producer
        .send(FutureRecord::to(topic).key(key).payload(payload), Duration::from_secs(10))
        .await
        .unwrap_or_else(|(e, _)| panic!("producing to {topic} failed: {e}"));
}
