//! What the connector runs against: PostgreSQL and a Kafka-protocol broker
//! from the environment `scripts/test --print-env` prepares, and the
//! Salesforce emulator in this process.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::FutureProducer;
use salesforce_emulator::{Emulator, EmulatorConfig, TestCredentials};
use switchboard_connector::SalesforceConfig;
use switchboard_store::{sqlx, Database};

use crate::workload::Agent;
use crate::BenchResult;

/// How to get what the benchmark needs, for error messages.
pub const HOW_TO_RUN: &str = "run it as `eval \"$(scripts/test --print-env)\" && cargo bench -p switchboard-connector --bench throughput`";

/// The PostgreSQL server named by `SWITCHBOARD_TEST_POSTGRES_URL`; each run
/// gets a database of its own, dropped afterwards.
pub struct Postgres {
    server: String,
}

/// A fresh, migrated database of one run.
pub struct RunDatabase {
    pub db: Database,
    name: String,
}

impl RunDatabase {
    /// Process ids of the server's backends connected to this database
    /// (empty when they cannot be read).
    pub async fn backend_pids(&self) -> Vec<u32> {
        sqlx::query_scalar::<_, i32>("SELECT pid FROM pg_stat_activity WHERE datname = $1")
            .bind(&self.name)
            .fetch_all(self.db.pool())
            .await
            .map(|pids| pids.into_iter().filter_map(|p| u32::try_from(p).ok()).collect())
            .unwrap_or_default()
    }
}

impl Postgres {
    pub fn from_env() -> BenchResult<Postgres> {
        match std::env::var("SWITCHBOARD_TEST_POSTGRES_URL") {
            Ok(server) if !server.trim().is_empty() => Ok(Postgres { server }),
            _ => Err(format!("SWITCHBOARD_TEST_POSTGRES_URL is not set: the benchmark keeps the connector's state in PostgreSQL, as in production; {HOW_TO_RUN}").into()),
        }
    }

    pub async fn fresh_database(&self, label: &str) -> BenchResult<RunDatabase> {
        let name = format!("sb_bench_{label}_{:08x}", rand::random::<u32>());
        let admin = Database::connect(&self.server).await.map_err(|e| format!("cannot connect to PostgreSQL at {}: {e}", self.server))?;
        sqlx::query(&format!("CREATE DATABASE \"{name}\"")).execute(admin.pool()).await?;
        admin.close().await;
        let mut url = url::Url::parse(&self.server)?;
        url.set_path(&name);
        let db = Database::connect(url.as_str()).await?;
        db.migrate().await?;
        Ok(RunDatabase { db, name })
    }

    pub async fn drop_database(&self, run: RunDatabase) -> BenchResult<()> {
        run.db.close().await;
        let admin = Database::connect(&self.server).await?;
        sqlx::query(&format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", run.name)).execute(admin.pool()).await?;
        admin.close().await;
        Ok(())
    }
}

/// The broker: the one `SWITCHBOARD_TEST_KAFKA` names, else a tansu broker
/// (in memory, on a free port) started from `SWITCHBOARD_TEST_TANSU_BIN`
/// and stopped with this value.
pub struct Broker {
    brokers: String,
    tansu: Option<tokio::process::Child>,
}

impl Broker {
    pub async fn from_env(scratch: &Path) -> BenchResult<Broker> {
        if let Ok(brokers) = std::env::var("SWITCHBOARD_TEST_KAFKA") {
            if !brokers.trim().is_empty() {
                return Ok(Broker { brokers, tansu: None });
            }
        }
        let bin = match std::env::var("SWITCHBOARD_TEST_TANSU_BIN") {
            Ok(bin) if Path::new(&bin).is_file() => PathBuf::from(bin),
            _ => {
                return Err(format!(
                    "neither SWITCHBOARD_TEST_KAFKA (a broker's bootstrap address) nor SWITCHBOARD_TEST_TANSU_BIN (the tansu binary) is set: {HOW_TO_RUN}"
                )
                .into())
            }
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let listener = format!("tcp://127.0.0.1:{port}");
        let log = std::fs::File::create(scratch.join("tansu.log"))?;
        let child = tokio::process::Command::new(&bin)
            .args(["broker", "--listener-url", &listener, "--advertised-listener-url", &listener, "--storage-engine", "memory://tansu/"])
            // tansu reads its settings from these too; stray ones must not win.
            .env_remove("CLUSTER_ID")
            .env_remove("STORAGE_ENGINE")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start tansu ({}): {e}", bin.display()))?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            if Instant::now() > deadline {
                return Err(format!("tansu did not accept connections on port {port} within 30 s; see {}", scratch.join("tansu.log").display()).into());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(Broker { brokers: format!("127.0.0.1:{port}"), tansu: Some(child) })
    }

    pub fn brokers(&self) -> &str {
        &self.brokers
    }

    /// The broker process's id when this benchmark started it.
    pub fn pid(&self) -> Option<u32> {
        self.tansu.as_ref().and_then(|c| c.id())
    }

    pub fn describe(&self) -> String {
        match &self.tansu {
            Some(_) => format!("tansu (memory storage) at {}, started by the benchmark", self.brokers),
            None => format!("{} (SWITCHBOARD_TEST_KAFKA)", self.brokers),
        }
    }

    /// Creates `topic` and waits until its metadata lists every partition.
    pub async fn create_topic(&self, topic: &str, partitions: i32) -> BenchResult<()> {
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new().set("bootstrap.servers", &self.brokers).create()?;
        for result in admin.create_topics(&[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))], &AdminOptions::new()).await? {
            result.map_err(|(topic, code)| format!("creating topic {topic} failed: {code}"))?;
        }
        let consumer: BaseConsumer = ClientConfig::new().set("bootstrap.servers", &self.brokers).create()?;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(5))?;
            let listed = metadata.topics().iter().filter(|t| t.name() == topic && t.error().is_none()).map(|t| t.partitions().len()).sum::<usize>();
            if listed == partitions as usize {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("topic {topic} lists {listed} of {partitions} partitions after 20 s").into());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A producer set up as the gateway's outbox relay sets up its own.
    pub fn producer(&self) -> BenchResult<FutureProducer> {
        Ok(ClientConfig::new()
            .set("bootstrap.servers", &self.brokers)
            .set("client.id", "switchboard-bench")
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5")
            .set("message.timeout.ms", "30000")
            .create()?)
    }

    pub async fn stop(mut self) {
        if let Some(mut child) = self.tansu.take() {
            let _ = child.kill().await;
        }
    }
}

/// An emulated org with `agents` users, and the connector's credentials
/// for it.
pub struct Org {
    pub emulator: Emulator,
    pub agents: Vec<Agent>,
    pub salesforce: SalesforceConfig,
}

impl Org {
    pub async fn start(agents: usize, scratch: &Path) -> BenchResult<Org> {
        let credentials = TestCredentials::generate()?;
        let key_file = scratch.join("connected-app.key");
        std::fs::write(&key_file, &credentials.private_key_pem)?;
        let mut config = EmulatorConfig::new(credentials.certificate_pem.clone());
        // A day's worth of requests of a large org: the default (15,000)
        // would make the org refuse a long run with REQUEST_LIMIT_EXCEEDED.
        config.daily_api_limit = 100_000_000;
        let username = config.username.clone();
        let emulator = Emulator::start(config, "127.0.0.1:0".parse()?).await?;
        let agents = (0..agents)
            .map(|i| {
                let salesforce_user_id = emulator.add_user(&format!("agent{i}@switchboard.test"))?;
                Ok(Agent { user_id: format!("agent-{i}"), salesforce_user_id })
            })
            .collect::<BenchResult<Vec<_>>>()?;
        // The connector's documented defaults (retries, timeouts) but the login host.
        let mut salesforce = SalesforceConfig::new(emulator.consumer_key(), username, key_file);
        salesforce.login_url = emulator.url();
        Ok(Org { emulator, agents, salesforce })
    }
}
