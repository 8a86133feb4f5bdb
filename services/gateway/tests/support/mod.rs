//! What the gateway's integration tests share: a gateway on SQLite in a temporary
//! directory, SIPp runs with their traces, a baresip softphone driven over
//! its `ctrl_tcp` interface, free ports, and the call events of the outbox.
//!
//! The programs come from the environment `scripts/test` prepares
//! (`SWITCHBOARD_TEST_SIPP_BIN`, `SWITCHBOARD_TEST_BARESIP_BIN`,
//! `SWITCHBOARD_TEST_SVWAR_BIN`); a test fails with a message saying so when
//! one is missing.

#![allow(dead_code)]

pub mod audio;
pub mod kafka;

use std::net::{IpAddr, SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

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
/// Where softphones and scanners live: not a trunk, so their INVITEs must
/// authenticate (Linux answers on all of 127.0.0.0/8).
pub const PHONE_IP: &str = "127.0.0.2";

pub const SIPP_BIN: &str = "SWITCHBOARD_TEST_SIPP_BIN";
pub const BARESIP_BIN: &str = "SWITCHBOARD_TEST_BARESIP_BIN";
pub const SVWAR_BIN: &str = "SWITCHBOARD_TEST_SVWAR_BIN";

/// The program named by environment variable `var`, which must exist.
pub fn required_program(var: &str) -> PathBuf {
    let value = std::env::var(var).unwrap_or_default();
    assert!(
        !value.trim().is_empty(),
        "environment variable {var} is not set: the interop tests run real SIP user agents (SIPp, baresip, \
         SIPVicious svwar); run them through `scripts/test`, or `eval \"$(scripts/test --print-env)\"` first, \
         which installs them and exports SWITCHBOARD_TEST_SIPP_BIN, SWITCHBOARD_TEST_BARESIP_BIN and \
         SWITCHBOARD_TEST_SVWAR_BIN"
    );
    let path = PathBuf::from(value);
    assert!(path.is_file(), "{var}={} does not name a file; run `scripts/test --print-env` to install it", path.display());
    path
}

/// A scenario file of the repository's `tests/sipp/`.
pub fn scenario(name: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/sipp").join(name);
    assert!(path.is_file(), "no SIPp scenario {}", path.display());
    path
}

/// A UDP port free on `ip` now (bound, then released).
pub fn free_udp_port(ip: &str) -> u16 {
    UdpSocket::bind((ip, 0)).unwrap().local_addr().unwrap().port()
}

/// An even UDP port free on `ip` whose odd neighbour is free too (RTP and RTCP).
pub fn free_port_pair(ip: &str) -> u16 {
    loop {
        let s = UdpSocket::bind((ip, 0)).unwrap();
        let p = s.local_addr().unwrap().port();
        if p.is_multiple_of(2) && p < 65_000 && UdpSocket::bind((ip, p + 1)).is_ok() {
            return p;
        }
    }
}

/// A port free on `ip` for UDP and TCP, with the TCP port above it free too
/// (baresip listens on UDP and TCP at its SIP port, and for TLS one above).
pub fn free_sip_port(ip: &str) -> u16 {
    loop {
        let u = UdpSocket::bind((ip, 0)).unwrap();
        let p = u.local_addr().unwrap().port();
        if p >= 65_000 {
            continue;
        }
        if TcpListener::bind((ip, p)).is_ok() && TcpListener::bind((ip, p + 1)).is_ok() && UdpSocket::bind((ip, p + 1)).is_ok() {
            return p;
        }
    }
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

/// Reads a file for a failure message; says so when it is missing.
pub fn read_log(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| format!("({}: {e})", path.display()))
}

/// The last `n` lines of a text.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
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
        let base = 42_000 + (std::process::id() % 400) as u16 * 40;
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
        cmd.args(["-i", run.ip, "-p", &run.port.to_string(), "-mp", &free_port_pair(run.ip).to_string()])
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

// ---- baresip ------------------------------------------------------------------------

/// How a softphone's account is set up.
pub struct PhoneAccount<'a> {
    pub username: &'a str,
    pub password: &'a str,
    /// `auto` answers incoming calls at once, `manual` lets them ring.
    pub answermode: &'a str,
    /// Register (every 600 s) or only place and take calls.
    pub register: bool,
}

/// A baresip softphone on [`PHONE_IP`], registered (or registering) to the
/// gateway, driven through `ctrl_tcp` (netstring-framed JSON commands,
/// responses and events). Audio goes through the `aubridge` module: what
/// the phone hears it says back, without any sound device.
pub struct Baresip {
    child: Child,
    ctrl: tokio::net::TcpStream,
    buf: Vec<u8>,
    /// Every event seen so far, in order.
    pub events: Vec<serde_json::Value>,
    /// Events not yet returned by [`Baresip::event`].
    unclaimed: std::collections::VecDeque<serde_json::Value>,
    pub sip: SocketAddr,
    pub dir: PathBuf,
    next_token: u64,
}

impl Baresip {
    /// Starts baresip with a configuration in `workdir`/baresip-`label`.
    pub async fn start(workdir: &Path, label: &str, gateway: SocketAddr, account: PhoneAccount<'_>) -> Baresip {
        Baresip::launch(workdir, label, gateway, account, None, "PCMU,PCMA").await
    }

    /// Starts baresip speaking `microphone` (an 8 kHz mono 16-bit WAV,
    /// played once) and writing what it hears and what it sends to
    /// [`Baresip::heard`] and [`Baresip::sent`] (the `sndfile` module).
    pub async fn start_with_audio(workdir: &Path, label: &str, gateway: SocketAddr, account: PhoneAccount<'_>, microphone: &Path) -> Baresip {
        Baresip::launch(workdir, label, gateway, account, Some(microphone), "PCMU,PCMA").await
    }

    /// Like [`Baresip::start_with_audio`], speaking only `codecs` (e.g. `opus`).
    pub async fn start_with_codecs(
        workdir: &Path,
        label: &str,
        gateway: SocketAddr,
        account: PhoneAccount<'_>,
        microphone: &Path,
        codecs: &str,
    ) -> Baresip {
        Baresip::launch(workdir, label, gateway, account, Some(microphone), codecs).await
    }

    /// The audio the phone played to its user in its last call (decoded).
    pub fn heard(&self) -> PathBuf {
        self.dump("dec")
    }

    /// The audio the phone sent in its last call (before encoding).
    pub fn sent(&self) -> PathBuf {
        self.dump("enc")
    }

    fn dump(&self, which: &str) -> PathBuf {
        let mut dumps: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .unwrap()
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("dump-") && n.ends_with(&format!("-{which}.wav"))))
            .collect();
        dumps.sort();
        dumps.pop().unwrap_or_else(|| self.fail(&format!("baresip wrote no {which} dump in {}", self.dir.display())))
    }

    async fn launch(
        workdir: &Path,
        label: &str,
        gateway: SocketAddr,
        account: PhoneAccount<'_>,
        microphone: Option<&Path>,
        codecs: &str,
    ) -> Baresip {
        let bin = required_program(BARESIP_BIN);
        // Debian: /usr/bin/baresip and /usr/lib/baresip/modules.
        let modules = bin.parent().and_then(Path::parent).map(|p| p.join("lib/baresip/modules")).unwrap();
        assert!(modules.join("ctrl_tcp.so").is_file(), "baresip's modules are not in {}", modules.display());
        let dir = workdir.join(format!("baresip-{label}"));
        std::fs::create_dir_all(&dir).unwrap();
        let sip_port = free_sip_port(PHONE_IP);
        let ctrl_port = {
            let l = TcpListener::bind((PHONE_IP, 0)).unwrap();
            l.local_addr().unwrap().port()
        };
        // Without a microphone file, what the phone hears it says back.
        let audio = match microphone {
            None => "audio_player\t\taubridge,echo\naudio_source\t\taubridge,echo\n".to_owned(),
            Some(mic) => format!(
                "audio_player\t\taubridge,speaker-{label}\naudio_source\t\taufile,{}\nmodule\t\t\taufile.so\nmodule\t\t\tsndfile.so\nmodule\t\t\topus.so\nsnd_path\t\t{}\nausrc_srate\t\t8000\nauplay_srate\t\t8000\nausrc_channels\t\t1\nauplay_channels\t\t1\n",
                mic.display(),
                dir.display()
            ),
        };
        let config = format!(
            "poll_method\t\tepoll\n\
             sip_listen\t\t{PHONE_IP}:{sip_port}\n\
             net_interface\t\t{PHONE_IP}\n\
             call_local_timeout\t120\n\
             call_max_calls\t\t4\n\
             {audio}\
             audio_alert\t\taubridge,alert\n\
             module_path\t\t{modules}\n\
             {g711}\
             module\t\t\taubridge.so\n\
             module\t\t\tctrl_tcp.so\n\
             module_tmp\t\taccount.so\n\
             module_app\t\tmenu.so\n\
             ctrl_tcp_listen\t\t{PHONE_IP}:{ctrl_port}\n",
            modules = modules.display(),
            // A phone limited to other codecs does not even load G.711.
            g711 = if codecs.to_ascii_uppercase().contains("PCM") { "module\t\t\tg711.so\n" } else { "" },
        );
        std::fs::write(dir.join("config"), config).unwrap();
        // The account is added once the control connection is up (`uanew`),
        // so that no event of its registration is missed.
        std::fs::write(dir.join("accounts"), "").unwrap();
        // -s: a SIP trace of every message, into the log with everything else.
        let log = std::fs::File::create(dir.join("baresip.log")).unwrap();
        let child = Command::new(bin)
            .arg("-f")
            .arg(&dir)
            .arg("-s")
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("baresip starts");
        // The control socket opens once baresip has read its configuration.
        let ctrl_addr: SocketAddr = (PHONE_IP.parse::<IpAddr>().unwrap(), ctrl_port).into();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        let ctrl = loop {
            match tokio::net::TcpStream::connect(ctrl_addr).await {
                Ok(s) => break s,
                Err(e) => {
                    assert!(
                        tokio::time::Instant::now() < deadline,
                        "baresip's ctrl_tcp at {ctrl_addr} did not open within 15 s ({e})\n{}",
                        tail(&read_log(&dir.join("baresip.log")), 60)
                    );
                    tokio::time::sleep(Duration::from_millis(25)).await;
                }
            }
        };
        let mut phone = Baresip {
            child,
            ctrl,
            buf: Vec::new(),
            events: Vec::new(),
            unclaimed: Default::default(),
            sip: (PHONE_IP.parse::<IpAddr>().unwrap(), sip_port).into(),
            dir,
            next_token: 1,
        };
        let account = format!(
            "<sip:{user}@{gateway}>;auth_user={user};auth_pass={password};answermode={answermode};regint={regint};audio_codecs={codecs}",
            user = account.username,
            password = account.password,
            answermode = account.answermode,
            regint = if account.register { 600 } else { 0 },
        );
        phone.command("uanew", &account).await;
        phone
    }

    /// baresip's output: its log and the SIP trace.
    pub fn log(&self) -> String {
        read_log(&self.dir.join("baresip.log"))
    }

    fn failure(&self, what: &str) -> String {
        format!(
            "{what}\nevents so far: {}\n--- baresip log (last 200 lines) ---\n{}",
            serde_json::to_string(&self.events).unwrap(),
            tail(&self.log(), 200)
        )
    }

    /// The next netstring message from ctrl_tcp.
    async fn read_message(&mut self, deadline: tokio::time::Instant) -> Option<serde_json::Value> {
        loop {
            if let Some(colon) = self.buf.iter().position(|b| *b == b':') {
                let len: usize = std::str::from_utf8(&self.buf[..colon]).ok().and_then(|s| s.parse().ok()).expect("netstring length");
                if self.buf.len() > colon + len + 1 {
                    let body = self.buf[colon + 1..colon + 1 + len].to_vec();
                    assert_eq!(self.buf[colon + 1 + len], b',', "netstring terminator");
                    self.buf.drain(..colon + 2 + len);
                    return Some(serde_json::from_slice(&body).expect("ctrl_tcp sends JSON"));
                }
            }
            let mut chunk = [0u8; 8192];
            let n = match tokio::time::timeout_at(deadline, self.ctrl.read(&mut chunk)).await {
                Ok(Ok(n)) => n,
                Ok(Err(e)) => panic!("{}", self.failure(&format!("reading ctrl_tcp failed: {e}"))),
                Err(_) => return None,
            };
            if n == 0 {
                panic!("{}", self.failure("baresip closed its control connection"));
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Waits (at most `secs`) for the first event of type `kind` not
    /// returned before, and returns it. Every event is also kept in
    /// [`Baresip::events`].
    pub async fn event(&mut self, kind: &str, secs: u64) -> serde_json::Value {
        self.first_of(&[kind], secs).await
    }

    /// Waits (at most `secs`) for the first event of any of `kinds` not
    /// returned before.
    pub async fn first_of(&mut self, kinds: &[&str], secs: u64) -> serde_json::Value {
        match self.try_first_of(kinds, secs).await {
            Some(e) => e,
            None => self.fail(&format!("no {kinds:?} event from baresip within {secs} s")),
        }
    }

    /// Like [`Baresip::first_of`], but `None` when none came in time.
    pub async fn try_first_of(&mut self, kinds: &[&str], secs: u64) -> Option<serde_json::Value> {
        let wanted = |e: &serde_json::Value| kinds.iter().any(|k| e["type"] == *k);
        if let Some(i) = self.unclaimed.iter().position(wanted) {
            return self.unclaimed.remove(i);
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            match self.read_message(deadline).await {
                Some(m) if m.get("event").is_some() => {
                    self.events.push(m.clone());
                    if wanted(&m) {
                        return Some(m);
                    }
                    self.unclaimed.push_back(m);
                }
                Some(_) => {} // a response to a command
                None => return None,
            }
        }
    }

    /// Panics with `what`, the events and the log.
    pub fn fail(&self, what: &str) -> ! {
        panic!("{}", self.failure(what))
    }

    /// Runs a command (e.g. `dial`, `hangup`) and returns its response.
    pub async fn command(&mut self, command: &str, params: &str) -> serde_json::Value {
        let token = self.next_token.to_string();
        self.next_token += 1;
        let body = serde_json::json!({ "command": command, "params": params, "token": token }).to_string();
        let frame = format!("{}:{},", body.len(), body);
        self.ctrl.write_all(frame.as_bytes()).await.unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            match self.read_message(deadline).await {
                Some(m) if m.get("response").is_some() && m["token"] == token.as_str() => {
                    assert_eq!(m["ok"], true, "{}", self.failure(&format!("baresip refused `{command} {params}`: {m}")));
                    return m;
                }
                Some(m) if m.get("event").is_some() => {
                    self.events.push(m.clone());
                    self.unclaimed.push_back(m);
                }
                Some(_) => {}
                None => panic!("{}", self.failure(&format!("no response to `{command}` within 10 s"))),
            }
        }
    }

    /// Asks baresip to quit and waits for it (killed after 10 s).
    pub async fn quit(mut self) {
        let body = serde_json::json!({ "command": "quit", "params": "", "token": "quit" }).to_string();
        let _ = self.ctrl.write_all(format!("{}:{},", body.len(), body).as_bytes()).await;
        if tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await.is_err() {
            let _ = self.child.kill().await;
        }
    }
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


/// A phone beyond the trunk answering calls for `number` by itself (it never
/// registers; the gateway reaches it as the trunk, see [`trunk_to`]).
pub async fn far_end_phone(workdir: &Path, number: &str, mic: &Path) -> Baresip {
    let unused: SocketAddr = "127.0.0.1:9".parse().unwrap();
    Baresip::start_with_audio(workdir, "far-end", unused, PhoneAccount { username: number, password: "unused", answermode: "auto", register: false }, mic).await
}

/// Configures the outbound trunk to `address` (calls from 127.0.0.1 are
/// trusted as the trunk's), without keep-alives, so every request the far
/// end gets is a call's.
pub fn trunk_to(config: &mut GatewayConfig, address: String) {
    config.sip.trunks = vec![TrunkConfig { name: "carrier".into(), address: Some(address), inbound_from: vec!["127.0.0.1/32".into()], ..Default::default() }];
    config.sip.trunk_options_interval_secs = 0;
}
