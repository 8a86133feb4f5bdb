//! Account enumeration: a scanner must not learn which SIP usernames exist.
//!
//! SIPVicious' `svwar` (the tool attackers use to find extensions before
//! guessing their passwords) scans a gateway that has devices `1001`,
//! `1005` and `alice`, with REGISTER and with INVITE, over a numeric range
//! and a dictionary that contain the real usernames; it must report
//! nothing. Then, over plain UDP sockets, the answers for a known user with
//! a wrong password and for an unknown user are compared header by header,
//! and the brute-force ban is shown to treat both alike.
//!
//! Needs `SWITCHBOARD_TEST_SVWAR_BIN` (`scripts/test` installs a pinned
//! SIPVicious in a virtualenv and exports it).

mod support;

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use switchboard_gateway::directory::{NewDevice, NewUser};
use switchboard_gateway::sip::digest::{answer, Challenge};
use switchboard_gateway::sip::{SipMessage, StartLine};
use support::{free_udp_port, required_program, TestGateway, SVWAR_BIN};
use tokio::net::UdpSocket;
use tokio::process::Command;

const REALM: &str = "switchboard";
const USERS: [&str; 3] = ["1001", "1005", "alice"];
const PASSWORD: &str = "a-long-and-secret-password";

/// A gateway whose devices authenticate as [`USERS`], each with a number.
async fn gateway(tune: impl FnOnce(&mut switchboard_gateway::config::GatewayConfig)) -> TestGateway {
    let gw = TestGateway::start(tune).await;
    let directory = gw.directory();
    for (i, name) in USERS.iter().enumerate() {
        let user = directory.create_user(NewUser { name: format!("User {name}"), ..Default::default() }).await.unwrap();
        let device = directory
            .create_device(NewDevice { user_id: user.id.clone(), name: "desk".into(), contact_uri: format!("sip:{name}@127.0.0.1:9") })
            .await
            .unwrap();
        directory.set_device_credentials(&device.id, name, PASSWORD, REALM).await.unwrap();
        directory.assign_number(&format!("+1415555{:04}", 1000 + i), &user.id).await.unwrap();
    }
    gw
}

/// Runs svwar against the gateway and returns its exit code and output.
/// svwar binds to any address (its -b is not used by the scanner), so it
/// sends from 127.0.0.1: the gateway of these tests trusts another address
/// as its trunk (see [`untrusted_loopback`]).
async fn svwar(gw: &TestGateway, method: &str, targets: &[&str]) -> (i32, String) {
    let bin = required_program(SVWAR_BIN);
    let home = gw.subdir(&format!("svwar-{method}-{}", targets.join("-").replace('/', "_")));
    let mut cmd = Command::new(bin);
    cmd.args(targets)
        .args(["-m", method])
        // The gateway challenges every REGISTER and INVITE, known user or
        // not; svwar refuses to scan such a server unless forced, and
        // forced it compares every answer with the one for a random name.
        .arg("--force")
        .args(["-P", &free_udp_port("0.0.0.0").to_string(), "-p", &gw.sip.port().to_string()])
        // -vvv: debug output, which names every extension tried.
        .args(["--maximumtime", "5", "-v", "-v", "-v"])
        .arg(gw.sip.ip().to_string())
        // svwar keeps sessions under $HOME/.sipvicious.
        .env("HOME", &home)
        .current_dir(&home)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(120), cmd.output()).await.expect("svwar finishes within 120 s").unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

/// Asserts that a scan ran against the gateway, tried `probed`, and
/// reported no extension.
fn assert_found_nothing(what: &str, code: i32, output: &str, probed: &[&str]) {
    assert!(output.contains("Ok SIP device found"), "{what}: svwar did not get to scan\n{output}");
    for name in probed {
        assert!(output.contains(&format!("sending request for {name}\n")), "{what}: svwar did not try {name}\n{output}");
    }
    assert!(
        !output.contains("exists") && !output.contains("Extension") && output.contains("found nothing"),
        "{what}: svwar enumerated extensions\n{output}"
    );
    // svwar exits with 40 once it believes an extension exists.
    assert_ne!(code, 40, "{what}: svwar exit code 40 (found something)\n{output}");
    for user in USERS {
        assert!(!output.contains(&format!("extension '{user}'")), "{what}: svwar reports {user}\n{output}");
    }
}

/// The trunk sends from 127.0.0.3, so 127.0.0.1 (where svwar's requests
/// come from) is an untrusted source like any on the internet.
fn untrusted_loopback(c: &mut switchboard_gateway::config::GatewayConfig) {
    c.sip.trunks[0].inbound_from = vec!["127.0.0.3/32".into()];
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn svwar_enumerates_nothing_with_register_or_invite() {
    let gw = gateway(untrusted_loopback).await;
    let words = ["admin", "alice", "bob", "operator", "1001", "1005", "support", "test"];
    let dictionary = gw.dir.path().join("dictionary.txt");
    std::fs::write(&dictionary, words.join("\n") + "\n").unwrap();
    let dictionary = dictionary.display().to_string();
    let alice_only = gw.dir.path().join("alice.txt");
    std::fs::write(&alice_only, "alice\n").unwrap();
    let alice_only = alice_only.display().to_string();

    for method in ["REGISTER", "INVITE"] {
        // svwar first asks for a random name to learn what "no such user"
        // looks like, then compares every answer with it. It stops at the
        // first name whose answer is a challenge just like the random
        // name's ("unknown response": it has no rule for a server that
        // challenges everyone alike), so each real username also gets a
        // scan of its own, as the first and only name tried.
        let (code, output) = svwar(&gw, method, &["-e", "1000-1010"]).await;
        assert_found_nothing(&format!("{method} over 1000-1010"), code, &output, &["1000"]);
        let (code, output) = svwar(&gw, method, &["-d", &dictionary]).await;
        assert_found_nothing(&format!("{method} with a dictionary"), code, &output, &["admin"]);
        for user in ["1001", "1005"] {
            let (code, output) = svwar(&gw, method, &["-e", user]).await;
            assert_found_nothing(&format!("{method} for {user}"), code, &output, &[user]);
        }
        let (code, output) = svwar(&gw, method, &["-d", &alice_only]).await;
        assert_found_nothing(&format!("{method} for alice"), code, &output, &["alice"]);
    }

    // Nothing counted as a failed password, so the scanner was not banned
    // for probing: it is still answered.
    let mut scanner = Client::new("127.0.0.1", gw.sip).await;
    assert_eq!(scanner.request("REGISTER", "1001", None, Duration::from_secs(10)).await.and_then(|r| r.status()), Some(401));
    gw.stop().await;
}

// ---- the answers themselves ------------------------------------------------------

struct Client {
    sock: UdpSocket,
    me: SocketAddr,
    gw: SocketAddr,
    seq: u32,
}

impl Client {
    async fn new(ip: &str, gw: SocketAddr) -> Client {
        let sock = UdpSocket::bind((ip, 0)).await.unwrap();
        let me = sock.local_addr().unwrap();
        Client { sock, me, gw, seq: 0 }
    }

    /// Sends a REGISTER (or an INVITE) for `user`, with `auth` as its
    /// Authorization (Proxy-Authorization) header, and returns the final
    /// answer, or `None` when none comes within `wait`.
    async fn request(&mut self, method: &str, user: &str, auth: Option<String>, wait: Duration) -> Option<SipMessage> {
        let seq = self.send(method, user, auth).await;
        self.response(seq, wait).await
    }

    /// Sends a request; returns its CSeq number.
    async fn send(&mut self, method: &str, user: &str, auth: Option<String>) -> u32 {
        self.seq += 1;
        let (seq, me) = (self.seq, self.me);
        let (uri, to, auth_header) = match method {
            "REGISTER" => (format!("sip:{REALM}"), format!("<sip:{user}@{REALM}>"), "Authorization"),
            _ => ("sip:+14155559999@127.0.0.1".to_owned(), "<sip:+14155559999@127.0.0.1>".to_owned(), "Proxy-Authorization"),
        };
        let auth = auth.map(|a| format!("{auth_header}: {a}\r\n")).unwrap_or_default();
        let sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n";
        let (ctype, body) = if method == "INVITE" { ("Content-Type: application/sdp\r\n", sdp) } else { ("", "") };
        let text = format!(
            "{method} {uri} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKenum{seq}\r\nFrom: <sip:{user}@{REALM}>;tag=t{seq}\r\nTo: {to}\r\n\
             Call-ID: enum-{user}-{seq}@{me}\r\nCSeq: {seq} {method}\r\nContact: <sip:{user}@{me}>\r\nMax-Forwards: 70\r\n{auth}{ctype}Content-Length: {}\r\n\r\n{body}",
            body.len()
        );
        self.sock.send_to(text.as_bytes(), self.gw).await.unwrap();
        seq
    }

    /// The final response to request `seq`, or `None` when none comes within `wait`.
    async fn response(&mut self, seq: u32, wait: Duration) -> Option<SipMessage> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut buf = vec![0u8; 65_536];
        loop {
            let (n, _) = match tokio::time::timeout_at(deadline, self.sock.recv_from(&mut buf)).await {
                Ok(r) => r.unwrap(),
                Err(_) => return None,
            };
            let m = SipMessage::parse(&buf[..n], 65_536).unwrap();
            if m.status().is_some_and(|s| s >= 200) && m.header("CSeq").is_some_and(|c| c.starts_with(&format!("{seq} "))) {
                return Some(m);
            }
        }
    }

    /// The first challenge of a REGISTER or INVITE without credentials.
    async fn challenge(&mut self, method: &str, user: &str) -> Challenge {
        let r = self.request(method, user, None, Duration::from_secs(10)).await.expect("a challenge");
        let header = if method == "REGISTER" { "WWW-Authenticate" } else { "Proxy-Authenticate" };
        // The strongest offered (SHA-256 comes first).
        Challenge::parse(r.header(header).unwrap_or_else(|| panic!("{header} in {r:?}"))).unwrap()
    }

    /// Credentials for `user` with `password`, answering `challenge`.
    fn credentials(method: &str, challenge: &Challenge, user: &str, password: &str) -> String {
        let uri = if method == "REGISTER" { format!("sip:{REALM}") } else { "sip:+14155559999@127.0.0.1".to_owned() };
        answer(challenge, user, password, method, &uri, "0a4f113b", 1).to_header()
    }
}

/// A response with what legitimately differs between two requests blanked:
/// the echoed Via, From, Call-ID and CSeq, the user in To, and each
/// challenge's nonce (fresh per challenge). Everything else — status,
/// reason phrase, which headers in which order, To tag, realm, algorithm,
/// qop, stale, opaque, body — must be identical.
fn normalised(m: &SipMessage, user: &str) -> Vec<String> {
    let mut out = vec![match &m.start {
        StartLine::Response { code, reason } => format!("{code} {reason}"),
        StartLine::Request { method, .. } => format!("request {method}"),
    }];
    for (name, value) in &m.headers {
        let value = match name.as_str() {
            "Via" | "From" | "Call-ID" | "CSeq" => "(echoed)".to_owned(),
            "To" => value.replace(&format!("sip:{user}@"), "sip:USER@"),
            "WWW-Authenticate" | "Proxy-Authenticate" => {
                let c = Challenge::parse(value).unwrap_or_else(|| panic!("unparsable challenge {value}"));
                format!("realm={} algorithm={:?} qop_auth={} stale={} opaque={:?}", c.realm, c.algorithm, c.qop_auth, c.stale, c.opaque)
            }
            _ => value.clone(),
        };
        out.push(format!("{name}: {value}"));
    }
    out.push(format!("body: {:?}", m.body));
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_and_an_unknown_user_get_the_same_answers() {
    // No ban in the way of the comparisons.
    let gw = gateway(|c| c.sip.auth_max_failures = 1000).await;
    let mut client = Client::new("127.0.0.4", gw.sip).await;
    let wait = Duration::from_secs(10);

    for method in ["REGISTER", "INVITE"] {
        // The first challenge, before any credentials.
        let known = client.request(method, "alice", None, wait).await.unwrap();
        let unknown = client.request(method, "mallory", None, wait).await.unwrap();
        assert_eq!(normalised(&known, "alice"), normalised(&unknown, "mallory"), "{method}: first challenge");

        // A wrong password for a real user, and any password for a user
        // that does not exist, answering the same kind of challenge.
        let challenge = client.challenge(method, "alice").await;
        let wrong = Client::credentials(method, &challenge, "alice", "not-the-password");
        let known = client.request(method, "alice", Some(wrong), wait).await.unwrap();
        let challenge = client.challenge(method, "mallory").await;
        let made_up = Client::credentials(method, &challenge, "mallory", "not-the-password");
        let unknown = client.request(method, "mallory", Some(made_up), wait).await.unwrap();
        let expected = if method == "REGISTER" { 401 } else { 407 };
        assert_eq!(known.status(), Some(expected), "{method}: {known:?}");
        assert_eq!(normalised(&known, "alice"), normalised(&unknown, "mallory"), "{method}: wrong password vs unknown user");

        // A numeric username too (svwar's favourite).
        let challenge = client.challenge(method, "1001").await;
        let wrong = Client::credentials(method, &challenge, "1001", "not-the-password");
        let known = client.request(method, "1001", Some(wrong), wait).await.unwrap();
        let challenge = client.challenge(method, "1002").await;
        let made_up = Client::credentials(method, &challenge, "1002", "not-the-password");
        let unknown = client.request(method, "1002", Some(made_up), wait).await.unwrap();
        assert_eq!(normalised(&known, "1001"), normalised(&unknown, "1002"), "{method}: 1001 vs 1002");
    }

    // The right password is accepted, so the comparisons above were made
    // against a working account.
    let challenge = client.challenge("REGISTER", "alice").await;
    let right = Client::credentials("REGISTER", &challenge, "alice", PASSWORD);
    assert_eq!(client.request("REGISTER", "alice", Some(right), wait).await.unwrap().status(), Some(200));
    gw.stop().await;
}

/// Polls the metrics until `series` has `value` (at most 20 s).
async fn wait_for_metric(gw: &TestGateway, series: &str, value: f64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let now = gw.metric(series).await;
        if now == value {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "{series} is {now}, not {value}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ban_does_not_tell_known_users_from_unknown_ones() {
    let gw = gateway(|c| c.sip.auth_max_failures = 3).await;
    let wait = Duration::from_secs(10);
    // Metrics are per process (other tests of this file may run in it).
    let bans_before = gw.metric("switchboard_sip_auth_bans_total").await;
    let drops_before = gw.metric("switchboard_sip_messages_dropped_total{reason=\"banned source\"}").await;
    // One source guesses a real user's password, another a made-up user's:
    // both are answered twice and banned, silently, at the third failure.
    let mut known = Client::new("127.0.0.5", gw.sip).await;
    let mut unknown = Client::new("127.0.0.6", gw.sip).await;
    for (bans, (client, user)) in [(&mut known, "alice"), (&mut unknown, "mallory")].into_iter().enumerate() {
        let challenge = client.challenge("REGISTER", user).await;
        for attempt in 0..2 {
            let guess = Client::credentials("REGISTER", &challenge, user, &format!("guess-{attempt}"));
            let r = client.request("REGISTER", user, Some(guess), wait).await;
            assert_eq!(r.as_ref().and_then(SipMessage::status), Some(401), "{user}: failure {} is answered", attempt + 1);
        }
        let guess = Client::credentials("REGISTER", &challenge, user, "guess-2");
        client.send("REGISTER", user, Some(guess)).await;
        wait_for_metric(&gw, "switchboard_sip_auth_bans_total", bans_before + bans as f64 + 1.0).await;
    }
    // Banned, both are ignored alike, even with a request that needs no
    // password check at all.
    known.send("REGISTER", "alice", None).await;
    unknown.send("REGISTER", "mallory", None).await;
    wait_for_metric(&gw, "switchboard_sip_messages_dropped_total{reason=\"banned source\"}", drops_before + 2.0).await;
    let mut buf = [0u8; 4096];
    for (client, user) in [(&known, "alice"), (&unknown, "mallory")] {
        assert!(client.sock.try_recv_from(&mut buf).is_err(), "{user}: a banned source got an answer");
    }
    // A third source is not affected.
    let mut bystander = Client::new("127.0.0.7", gw.sip).await;
    assert_eq!(bystander.request("REGISTER", "alice", None, wait).await.and_then(|r| r.status()), Some(401));
    gw.stop().await;
}

/// Challenges carry the reason phrases of RFC 3261 §21.4, as phones and
/// scanners print them (`401 Unknown` looks like a broken server).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn challenges_carry_the_standard_reason_phrases() {
    let gw = gateway(|_| {}).await;
    let mut client = Client::new("127.0.0.8", gw.sip).await;
    let wait = Duration::from_secs(10);
    let phrase = |m: &SipMessage| match &m.start {
        StartLine::Response { code, reason } => format!("{code} {reason}"),
        StartLine::Request { .. } => panic!("not a response"),
    };
    let register = client.request("REGISTER", "alice", None, wait).await.unwrap();
    let invite = client.request("INVITE", "alice", None, wait).await.unwrap();
    assert_eq!(
        [phrase(&register), phrase(&invite)],
        ["401 Unauthorized".to_owned(), "407 Proxy Authentication Required".to_owned()]
    );
    gw.stop().await;
}
