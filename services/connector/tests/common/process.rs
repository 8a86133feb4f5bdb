//! The connector as an operator runs it: the `switchboard` binary's
//! `connector` role in a process of its own, configured by a TOML file,
//! on a PostgreSQL database of its own.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use switchboard_store::{sqlx, Database};

/// Path of the built `switchboard` binary (`scripts/test` exports it).
pub const SWITCHBOARD_BIN_VAR: &str = "SWITCHBOARD_BIN";
/// A PostgreSQL server where tests may create databases.
pub const POSTGRES_URL_VAR: &str = "SWITCHBOARD_TEST_POSTGRES_URL";

/// The `switchboard` binary: `SWITCHBOARD_BIN`, else the one cargo built
/// into the target directory this test runs from (`target/debug/switchboard`
/// beside `target/debug/deps/<test>`). It must be built from the same tree
/// (`cargo build -p switchboard`, which `scripts/test` runs): a binary older
/// than a source file of the connector, the store or the binary itself
/// fails the test rather than test old code.
pub fn switchboard_bin() -> PathBuf {
    let bin = match std::env::var(SWITCHBOARD_BIN_VAR) {
        Ok(bin) if !bin.trim().is_empty() => {
            let bin = PathBuf::from(bin);
            assert!(bin.is_file(), "{SWITCHBOARD_BIN_VAR}={} names no file; run `cargo build -p switchboard`", bin.display());
            bin
        }
        _ => {
            let exe = std::env::current_exe().expect("the test's own path");
            match exe.parent().and_then(Path::parent).map(|dir| dir.join("switchboard")) {
                Some(bin) if bin.is_file() => bin,
                _ => panic!(
                    "no switchboard binary: set {SWITCHBOARD_BIN_VAR}, or build it into this target directory with \
                     `cargo build -p switchboard` (looked beside {})",
                    exe.display()
                ),
            }
        }
    };
    let built = std::fs::metadata(&bin).and_then(|m| m.modified()).expect("the binary's modification time");
    let services = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("services/");
    for crate_dir in ["connector", "store", "switchboard"] {
        if let Some(newer) = newer_file(&services.join(crate_dir).join("src"), built) {
            panic!(
                "{} is older than {}: rebuild it with `cargo build -p switchboard` so that this test runs the code under test",
                bin.display(),
                newer.display()
            );
        }
    }
    bin
}

/// A file under `dir` modified after `than`, if any.
fn newer_file(dir: &Path, than: std::time::SystemTime) -> Option<PathBuf> {
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        let meta = entry.metadata().ok()?;
        if meta.is_dir() {
            if let Some(newer) = newer_file(&path, than) {
                return Some(newer);
            }
        } else if meta.modified().is_ok_and(|m| m > than) {
            return Some(path);
        }
    }
    None
}

/// A database created for one test on the server named by
/// `SWITCHBOARD_TEST_POSTGRES_URL`, migrated, and dropped with the handle
/// (also when the test fails).
pub struct PostgresDb {
    pub db: Database,
    pub url: String,
    server: String,
    name: String,
}

impl PostgresDb {
    /// Creates and migrates a fresh database; panics, saying how to get a
    /// server, when the variable is not set.
    pub async fn create(label: &str) -> PostgresDb {
        let server = std::env::var(POSTGRES_URL_VAR).unwrap_or_else(|_| {
            panic!(
                "this test needs PostgreSQL: set {POSTGRES_URL_VAR} to a server where it may create databases \
                 (`eval \"$(scripts/test --print-env)\"` starts one and exports it)"
            )
        });
        let name = format!("sb_connector_{label}_{}", uuid::Uuid::now_v7().simple());
        let admin = Database::connect(&server).await.expect("PostgreSQL test server");
        sqlx::query(&format!("CREATE DATABASE \"{name}\"")).execute(admin.pool()).await.expect("CREATE DATABASE");
        admin.close().await;
        let mut url = url::Url::parse(&server).expect("SWITCHBOARD_TEST_POSTGRES_URL is a URL");
        url.set_path(&name);
        let url = url.to_string();
        let db = Database::connect(&url).await.expect("the new database");
        db.migrate().await.expect("migrations");
        PostgresDb { db, url, server, name }
    }
}

impl Drop for PostgresDb {
    fn drop(&mut self) {
        // Dropped outside any guarantee of a running runtime: a thread of
        // its own with a runtime of its own drops the database.
        let (server, name) = (self.server.clone(), self.name.clone());
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
            runtime.block_on(async {
                let admin = Database::connect(&server).await.ok()?;
                let sql = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
                let result = sqlx::query(&sql).execute(admin.pool()).await;
                admin.close().await;
                result.ok()
            })
        })
        .join();
        if !matches!(dropped, Ok(Some(_))) {
            eprintln!("note: could not drop test database {}", self.name);
        }
    }
}

/// A TOML basic string holding `value`.
pub fn toml_string(value: &str) -> String {
    // JSON's string escapes are all valid in TOML basic strings.
    serde_json::to_string(value).expect("a string serialises")
}

/// A running `switchboard connector`, killed when dropped; its output goes
/// to a log file whose tail is printed if the test fails.
pub struct ConnectorProcess {
    child: Option<Child>,
    log: PathBuf,
}

impl ConnectorProcess {
    /// Starts `switchboard --config <config> connector`, logging to
    /// `<dir>/<label>.log`, and waits until `GET /healthz` on `http` answers.
    pub async fn start(config: &Path, http: SocketAddr, dir: &Path, label: &str) -> ConnectorProcess {
        let bin = switchboard_bin();
        let log = dir.join(format!("{label}.log"));
        let file = std::fs::File::create(&log).expect("connector log file");
        let mut command = Command::new(&bin);
        // Only the file configures it: none of the test's SWITCHBOARD_…
        // variables reach the process.
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("SWITCHBOARD_") || name == "RUST_LOG" {
                command.env_remove(name);
            }
        }
        let child = command
            .arg("--config")
            .arg(config)
            .arg("connector")
            .stdin(Stdio::null())
            .stdout(Stdio::from(file.try_clone().expect("log handle")))
            .stderr(Stdio::from(file))
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()));
        let mut process = ConnectorProcess { child: Some(child), log };
        let client = reqwest::Client::builder().timeout(Duration::from_secs(2)).build().unwrap();
        let url = format!("http://{http}/healthz");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = process.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("{label} exited with {status} before answering {url}:\n{}", process.tail(40));
            }
            if client.get(&url).send().await.is_ok_and(|r| r.status().is_success()) {
                return process;
            }
            assert!(tokio::time::Instant::now() < deadline, "{label} does not answer {url}:\n{}", process.tail(40));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Panics with the log's tail if the process has exited.
    pub fn assert_running(&mut self) {
        if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
            panic!("the connector exited with {status}:\n{}", self.tail(40));
        }
    }

    /// SIGKILL, as `kill -9`: no shutdown code runs. Reaps the process.
    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("the connector runs");
        child.kill().expect("SIGKILL"); // std's kill is SIGKILL on Unix
        let status = child.wait().expect("reaping the connector");
        assert_eq!(std::os::unix::process::ExitStatusExt::signal(&status), Some(9), "killed by SIGKILL: {status}");
    }

    /// SIGTERM, as an operator stops it, and waits for a clean exit.
    pub async fn stop(mut self) {
        let mut child = self.child.take().expect("the connector runs");
        let sent = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status().expect("kill -TERM");
        assert!(sent.success(), "kill -TERM failed");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if tokio::time::Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the connector did not stop within 30 s of SIGTERM:\n{}", self.tail(40));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert!(status.success(), "the connector exited with {status}:\n{}", self.tail(40));
    }

    /// The last `lines` lines of its log.
    pub fn tail(&self, lines: usize) -> String {
        super::tail(&self.log, lines)
    }
}

impl Drop for ConnectorProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!("--- tail of {} ---\n{}", self.log.display(), self.tail(60));
        }
    }
}
