//! A baresip softphone driven over its `ctrl_tcp` interface
//! (netstring-framed JSON commands, responses and events), for tests that
//! need a real SIP user agent on the other end: one registered to the
//! gateway as an agent's phone, or one beyond a trunk answering calls by
//! itself ([`Baresip::far_end`]).
//!
//! Audio goes through baresip's own modules, with no sound device: without
//! a microphone file the phone says back what it hears (`aubridge`); with
//! one it speaks the file (`aufile`) and writes what it hears and what it
//! sends to WAV files (`sndfile`), read back with [`Baresip::heard`] and
//! [`Baresip::sent`].
//!
//! The program comes from `SWITCHBOARD_TEST_BARESIP_BIN` (`scripts/test`
//! installs Debian's baresip and exports it).

use std::net::{IpAddr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

use crate::{read_log, required_program, tail};

/// Where softphones live: not a trunk's address (127.0.0.1), so a gateway
/// makes their INVITEs authenticate (Linux answers on all of 127.0.0.0/8).
pub const PHONE_IP: &str = "127.0.0.2";

/// Path of the baresip binary.
pub const BARESIP_BIN: &str = "SWITCHBOARD_TEST_BARESIP_BIN";

/// A port free on `ip` for UDP and TCP, with the TCP port above it free too
/// (baresip listens on UDP and TCP at its SIP port, and for TLS one above).
pub fn free_sip_port(ip: &str) -> u16 {
    let ip_addr = ip.parse().expect("an IP address");
    loop {
        // Two UDP ports (picked below the kernel's ephemeral range), then TCP on both.
        let p = crate::ports::free_udp_range(ip_addr, 2).unwrap();
        if TcpListener::bind((ip, p)).is_ok() && TcpListener::bind((ip, p + 1)).is_ok() {
            return p;
        }
    }
}

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
/// gateway, or answering calls beyond a trunk, driven through `ctrl_tcp`
/// (netstring-framed JSON commands, responses and events). Without a
/// microphone file its audio goes through the `aubridge` module: what the
/// phone hears it says back, without any sound device. Killed when dropped.
pub struct Baresip {
    child: Child,
    ctrl: tokio::net::TcpStream,
    buf: Vec<u8>,
    /// Every event seen so far, in order.
    pub events: Vec<serde_json::Value>,
    /// Events not yet returned by [`Baresip::event`].
    unclaimed: std::collections::VecDeque<serde_json::Value>,
    /// Where it takes SIP (UDP and TCP).
    pub sip: SocketAddr,
    /// Its configuration, log (`baresip.log`) and audio dumps.
    pub dir: PathBuf,
    next_token: u64,
}

impl Baresip {
    /// Starts baresip with a configuration in `workdir`/baresip-`label`,
    /// its account at `gateway`.
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

    /// A phone beyond a trunk answering calls for `number` by itself,
    /// speaking `microphone` (an 8 kHz mono 16-bit WAV; the call ends when
    /// it runs out) and writing what it hears. It never registers: a
    /// gateway reaches it as its trunk at [`Baresip::sip`](Self::sip).
    pub async fn far_end(workdir: &Path, number: &str, microphone: &Path) -> Baresip {
        let unused: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let account = PhoneAccount { username: number, password: "unused", answermode: "auto", register: false };
        Baresip::start_with_audio(workdir, "far-end", unused, account, microphone).await
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

