//! What the gateway's integration tests share: a gateway on SQLite in a temporary
//! directory, SIPp runs with their traces, baresip softphones registered to
//! it, free ports, and the call events of the outbox. The baresip harness
//! itself and the Kafka-protocol broker come from the workspace's
//! `switchboard-test-support` crate, which the end-to-end tests use too.
//!
//! The programs come from the environment `scripts/test` prepares
//! (`SWITCHBOARD_TEST_SIPP_BIN`, `SWITCHBOARD_TEST_BARESIP_BIN`,
//! `SWITCHBOARD_TEST_SVWAR_BIN`); a test fails with a message saying so when
//! one is missing.

#![allow(dead_code)]

pub mod audio;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

pub use switchboard_test_support::baresip::{Baresip, PhoneAccount};
pub use switchboard_test_support::{ports, read_log, required_program, tail};

use switchboard_gateway::config::{GatewayConfig, TrunkConfig};
use switchboard_gateway::directory::Directory;
use switchboard_gateway::{Gateway, RunningGateway};
use switchboard_proto::{CallEvent, Message};
use switchboard_store::Database;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

/// Where the carrier (SIPp as the trunk) sends from: the gateway trusts
/// INVITEs from this address without authentication.
pub const CARRIER_IP: &str = "127.0.0.1";
// Softphones live on `baresip::PHONE_IP` (127.0.0.2): not a trunk, so
// their INVITEs must authenticate.

pub const SIPP_BIN: &str = "SWITCHBOARD_TEST_SIPP_BIN";
pub const SVWAR_BIN: &str = "SWITCHBOARD_TEST_SVWAR_BIN";

/// A scenario file of the repository's `tests/sipp/`.
pub fn scenario(name: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/sipp").join(name);
    assert!(path.is_file(), "no SIPp scenario {}", path.display());
    path
}

/// A UDP port free on `ip` now (bound, then released), picked below the
/// kernel's ephemeral range, where no other test's gateway or kernel-chosen
/// port can take it before the program the test starts binds it.
pub fn free_udp_port(ip: &str) -> u16 {
    ports::free_udp_range(ip.parse().expect("an IP address"), 1).unwrap()
}

/// A SIPp's media port (`-mp`) on `ip`: an even port free with the three
/// above it (its RTP and RTCP, and the pair two above that `-rtp_echo`
/// and video use).
pub fn sipp_media_port(ip: &str) -> u16 {
    ports::free_udp_range(ip.parse().expect("an IP address"), 4).unwrap()
}

/// The gateway's Prometheus page at `http`.
pub async fn metrics_page(http: SocketAddr) -> String {
    let mut s = tokio::net::TcpStream::connect(http).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

/// Polls /metrics until `line` appears exactly (metrics have no event to
/// await); fails after 20 s showing the page.
pub async fn wait_for_metric(http: SocketAddr, line: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let m = metrics_page(http).await;
        if m.lines().any(|l| l == line) {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "no `{line}` in the metrics:\n{m}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The `-trace_msg` logs SIPp wrote into `dir`, for failure messages.
pub fn sipp_traces(dir: &Path) -> String {
    let mut out = String::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with("_messages.log") {
            out.push_str(&format!("==== {name}\n{}\n", read_log(&entry.path())));
        }
    }
    out
}

// ---- the gateway ----------------------------------------------------------------

/// A gateway on SQLite in a temporary directory: SIP over UDP on
/// 127.0.0.1, a trunk whose calls come from [`CARRIER_IP`], no Kafka.
pub struct TestGateway {
    pub dir: tempfile::TempDir,
    pub db: Database,
    pub sip: SocketAddr,
    pub http: SocketAddr,
    running: Option<RunningGateway>,
    shutdown: CancellationToken,
}

impl TestGateway {
    /// Starts a gateway; `tune` adjusts the configuration first.
    pub async fn start(tune: impl FnOnce(&mut GatewayConfig)) -> TestGateway {
        // The gateway's own logs, with call ids, when a test is run with
        // SWITCHBOARD_TEST_LOG=debug (or any filter).
        if let Ok(filter) = std::env::var("SWITCHBOARD_TEST_LOG") {
            let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
        }
        let dir = tempfile::tempdir().unwrap();
        let db = Database::connect(&format!("sqlite://{}", dir.path().join("sb.db").display())).await.unwrap();
        db.migrate().await.unwrap();
        let mut config = GatewayConfig::default();
        config.sip.trunks = vec![TrunkConfig {
            name: "test-carrier".into(),
            inbound_from: vec![format!("{CARRIER_IP}/32")],
            ..Default::default()
        }];
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        config.sip.udp = Some(any);
        config.sip.tcp = None;
        config.http.listen = any;
        // Ports the gateway's allocator skips when something else holds them.
        let base = ports::gateway_media_range(40);
        config.media.port_min = base;
        config.media.port_max = base + 39;
        config.recordings.record_all = false;
        // Failures reach the caller as they are; the media tests turn voicemail on.
        config.voicemail.enabled = false;
        tune(&mut config);
        let shutdown = CancellationToken::new();
        let running = Gateway::start(config, dir.path().to_owned(), db.clone(), shutdown.clone()).await.unwrap();
        let sip = running.sip_udp.expect("SIP over UDP");
        let http = running.http;
        TestGateway { dir, db, sip, http, running: Some(running), shutdown }
    }

    pub fn directory(&self) -> Directory {
        Directory::new(self.db.clone())
    }

    /// The handle that controls live calls (what the call-control API uses).
    pub fn control(&self) -> switchboard_gateway::calls::control::CallControl {
        self.running.as_ref().expect("gateway running").control.clone()
    }

    /// The live calls and agents' event hub (what `/v1/events` serves).
    pub fn live(&self) -> switchboard_gateway::calls::live::LiveCalls {
        self.running.as_ref().expect("gateway running").live.clone()
    }

    /// A fresh directory inside the gateway's temporary directory.
    pub fn subdir(&self, name: &str) -> PathBuf {
        let d = self.dir.path().join(name);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// Stops the gateway and waits for its tasks.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(r) = self.running.take() {
            r.wait().await.unwrap();
        }
    }

    /// The Prometheus page.
    pub async fn metrics(&self) -> String {
        metrics_page(self.http).await
    }

    /// The value of a metric line (`name{labels}` exactly as exported), 0 when absent.
    pub async fn metric(&self, series: &str) -> f64 {
        let page = self.metrics().await;
        page.lines()
            .filter_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
            .filter_map(|v| v.trim().parse::<f64>().ok())
            .next()
            .unwrap_or(0.0)
    }

    /// The call events in the outbox once `count` calls have ended (the
    /// writer commits on its own task, so this polls, for at most 30 s).
    pub async fn events_after_calls_ended(&self, count: usize) -> Vec<(String, CallEvent)> {
        self.events_once("call.ended", count).await
    }

    /// The call events in the outbox once `count` events of `kind` are there
    /// (polled, for at most 30 s).
    pub async fn events_once(&self, kind: &str, count: usize) -> Vec<(String, CallEvent)> {
        let outbox = self.db.outbox();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let rows = outbox.read_after(0, 1000).await.unwrap();
            if rows.iter().filter(|r| r.kind == kind).count() >= count {
                return rows.iter().map(|r| (r.kind.clone(), CallEvent::decode(r.payload.as_slice()).unwrap())).collect();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no {count} {kind} event(s) within 30 s; events so far: {:?}",
                rows.iter().map(|r| &r.kind).collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

// ---- SIPp ---------------------------------------------------------------------------

/// One SIPp process running a scenario file for exactly one call, with its
/// traces in a directory of its own.
pub struct Sipp {
    pub label: String,
    child: Child,
    dir: PathBuf,
}

/// How a SIPp run is set up.
pub struct SippRun<'a> {
    pub label: &'a str,
    pub scenario: &'a str,
    /// Local address SIPp binds.
    pub ip: &'a str,
    /// `Some(gateway)` for a UAC (it calls), `None` for a UAS (it waits).
    pub remote: Option<SocketAddr>,
    /// The number a UAC dials (`-s`).
    pub service: Option<&'a str>,
    pub port: u16,
}

impl Sipp {
    /// Starts SIPp in `workdir`; the scenario must finish within 60 s.
    pub fn spawn(workdir: &Path, run: SippRun<'_>) -> Sipp {
        let bin = required_program(SIPP_BIN);
        let dir = workdir.join(format!("sipp-{}", run.label));
        std::fs::create_dir_all(&dir).unwrap();
        if !dir.join("pcap").exists() {
            std::os::unix::fs::symlink("/usr/share/sip-tester", dir.join("pcap")).unwrap();
        }
        let mut cmd = Command::new(bin);
        // `builtin:uac_pcap` runs one of SIPp's own scenarios.
        match run.scenario.strip_prefix("builtin:") {
            Some(name) => cmd.args(["-sn", name]),
            None => cmd.arg("-sf").arg(scenario(run.scenario)),
        };
        if let Some(remote) = run.remote {
            cmd.arg(remote.to_string());
        }
        if let Some(s) = run.service {
            cmd.args(["-s", s]);
        }
        cmd.args(["-i", run.ip, "-p", &run.port.to_string(), "-mp", &sipp_media_port(run.ip).to_string()])
            .args(["-m", "1", "-nostdin", "-timeout", "60s", "-timeout_error", "-recv_timeout", "30000"])
            .args(["-trace_msg", "-message_file"])
            .arg(dir.join("messages.log"))
            .args(["-trace_err", "-error_file"])
            .arg(dir.join("errors.log"))
            .args(["-trace_logs", "-log_file"])
            .arg(dir.join("actions.log"))
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("stderr.log")).unwrap())
            .kill_on_drop(true);
        let child = cmd.spawn().expect("SIPp starts");
        Sipp { label: run.label.to_owned(), child, dir }
    }

    /// Waits for SIPp to exit (at most 90 s) and returns its status.
    pub async fn wait(&mut self) -> ExitStatus {
        match tokio::time::timeout(Duration::from_secs(90), self.child.wait()).await {
            Ok(status) => status.unwrap(),
            Err(_) => panic!("SIPp {} did not finish within 90 s\n{}", self.label, self.report()),
        }
    }

    /// Waits for SIPp and asserts that its call succeeded (exit status 0:
    /// every expected message came, nothing unexpected did).
    pub async fn succeeds(mut self) -> Sipp {
        let status = self.wait().await;
        assert!(status.success(), "SIPp {} failed ({status})\n{}", self.label, self.report());
        self
    }

    /// What the scenario's `<log>` actions wrote.
    pub fn action_log(&self) -> String {
        read_log(&self.dir.join("actions.log"))
    }

    /// Every message SIPp sent and received.
    pub fn messages(&self) -> String {
        read_log(&self.dir.join("messages.log"))
    }

    /// The traces, for a failure message.
    pub fn report(&self) -> String {
        format!(
            "--- {label} stderr ---\n{}\n--- {label} errors ---\n{}\n--- {label} messages (last 150 lines) ---\n{}",
            tail(&read_log(&self.dir.join("stderr.log")), 30),
            tail(&read_log(&self.dir.join("errors.log")), 60),
            tail(&self.messages(), 150),
            label = self.label
        )
    }
}

// ---- call events --------------------------------------------------------------------

/// The events of one call (by the gateway's call id), in order.
pub fn events_of<'a>(events: &'a [(String, CallEvent)], call_id: &str) -> Vec<&'a (String, CallEvent)> {
    events.iter().filter(|(_, e)| e.call_id == call_id).collect()
}

/// The kinds of a list of events.
pub fn kinds(events: &[&(String, CallEvent)]) -> Vec<String> {
    events.iter().map(|(k, _)| k.clone()).collect()
}

// ---- softphones ----------------------------------------------------------------

/// Creates a user with an extension and a softphone account; returns its id.
pub async fn softphone_user(gw: &TestGateway, name: &str, extension: &str, login: &str, password: &str) -> String {
    let directory = gw.directory();
    let user = directory.create_user(switchboard_gateway::directory::NewUser { name: name.into(), extension: Some(extension.into()), ..Default::default() }).await.unwrap();
    let device = directory
        .create_device(switchboard_gateway::directory::NewDevice {
            user_id: user.id.clone(),
            name: "softphone".into(),
            contact_uri: format!("sip:{login}@127.0.0.1:9"),
        })
        .await
        .unwrap();
    directory.set_device_credentials(&device.id, login, password, "switchboard").await.unwrap();
    user.id
}

/// A baresip softphone registered as `login` that speaks `mic` and answers by itself.
pub async fn softphone(gw: &TestGateway, login: &str, password: &str, mic: &std::path::Path) -> Baresip {
    let mut p = Baresip::start_with_audio(
        gw.dir.path(),
        login,
        gw.sip,
        PhoneAccount { username: login, password, answermode: "auto", register: true },
        mic,
    )
    .await;
    let outcome = p.first_of(&["REGISTER_OK", "REGISTER_FAIL"], 20).await;
    if outcome["type"] != "REGISTER_OK" {
        p.fail(&format!("baresip could not register: {}", outcome["param"]));
    }
    p
}

/// Digits a phone reported receiving, in order.
pub fn digits_received(phone: &Baresip) -> String {
    phone.events.iter().filter(|e| e["type"] == "CALL_DTMF_START").filter_map(|e| e["param"].as_str()).collect()
}

/// Configures the outbound trunk to `address` (calls from 127.0.0.1 are
/// trusted as the trunk's), without keep-alives, so every request the far
/// end gets is a call's: for a far end started with [`Baresip::far_end`].
pub fn trunk_to(config: &mut GatewayConfig, address: String) {
    config.sip.trunks = vec![TrunkConfig { name: "carrier".into(), address: Some(address), inbound_from: vec!["127.0.0.1/32".into()], ..Default::default() }];
    config.sip.trunk_options_interval_secs = 0;
}
