//! Devices register with digest authentication and are then reached at the
//! address they registered from, over real UDP sockets.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use switchboard_gateway::config::GatewayConfig;
use switchboard_gateway::directory::{Directory, NewDevice, NewUser};
use switchboard_gateway::sip::digest::{answer, Challenge};
use switchboard_gateway::sip::SipMessage;
use switchboard_gateway::Gateway;
use switchboard_store::Database;
use tokio::net::UdpSocket;
use support::wait_for_metric;
use tokio_util::sync::CancellationToken;

async fn recv(sock: &UdpSocket) -> SipMessage {
    let mut buf = vec![0u8; 65_536];
    let (n, _) = tokio::time::timeout(Duration::from_secs(10), sock.recv_from(&mut buf)).await.expect("a SIP message").unwrap();
    SipMessage::parse(&buf[..n], 65_536).unwrap()
}

/// Receives until a message that is not `100 Trying`.
async fn recv_final(sock: &UdpSocket) -> SipMessage {
    loop {
        let m = recv(sock).await;
        if m.status() != Some(100) {
            return m;
        }
    }
}

fn register(me: SocketAddr, cseq: u32, auth: Option<String>) -> Vec<u8> {
    let auth = auth.map(|a| format!("Authorization: {a}\r\n")).unwrap_or_default();
    format!(
        "REGISTER sip:switchboard SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKr{cseq}\r\nFrom: <sip:ada@switchboard>;tag=r\r\nTo: <sip:ada@switchboard>\r\nCall-ID: reg-ada\r\nCSeq: {cseq} REGISTER\r\nContact: <sip:ada@{me}>\r\nExpires: 600\r\nMax-Forwards: 70\r\n{auth}Content-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

async fn start(dir: &std::path::Path, tune: impl FnOnce(&mut GatewayConfig)) -> (Database, switchboard_gateway::RunningGateway, CancellationToken) {
    let db = Database::connect(&format!("sqlite://{}", dir.join("sb.db").display())).await.unwrap();
    db.migrate().await.unwrap();
    let mut config = GatewayConfig::default();
    // The devices' own answers (486 Busy) must reach the caller: no voicemail.
    config.voicemail.enabled = false;
    // The test's SIPp/sockets on 127.0.0.1 play the carrier.
    config.sip.trunks = vec![switchboard_gateway::config::TrunkConfig {
        name: "test-carrier".into(),
        inbound_from: vec!["127.0.0.1/32".into()],
        ..Default::default()
    }];
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    config.sip.udp = Some(any);
    config.sip.tcp = None;
    config.http.listen = any;
    let base = switchboard_test_support::ports::gateway_media_range(8);
    config.media.port_min = base;
    config.media.port_max = base + 7;
    tune(&mut config);
    let shutdown = CancellationToken::new();
    let gw = Gateway::start(config, dir.to_owned(), db.clone(), shutdown.clone()).await.unwrap();
    (db, gw, shutdown)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registered_device_is_called_where_it_registered_from() {
    let dir = tempfile::tempdir().unwrap();
    let (db, gw, shutdown) = start(dir.path(), |_| {}).await;
    let gw_sip = gw.sip_udp.unwrap();
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();

    let directory = Directory::new(db.clone());
    let user = directory.create_user(NewUser { name: "Ada".into(), ..Default::default() }).await.unwrap();
    // The provisioned contact goes nowhere: only the registration can reach the phone.
    let device = directory
        .create_device(NewDevice { user_id: user.id.clone(), name: "desk".into(), contact_uri: "sip:ada@127.0.0.1:9".into() })
        .await
        .unwrap();
    directory.set_device_credentials(&device.id, "ada", "correct horse battery", "switchboard").await.unwrap();
    directory.assign_number("+14155550111", &user.id).await.unwrap();

    let phone = UdpSocket::bind(any).await.unwrap();
    let me = phone.local_addr().unwrap();
    phone.send_to(&register(me, 1, None), gw_sip).await.unwrap();
    let challenge = recv(&phone).await;
    assert_eq!(challenge.status(), Some(401));
    let offered: Vec<Challenge> = challenge.header_values("WWW-Authenticate").iter().filter_map(|h| Challenge::parse(h)).collect();
    assert_eq!(offered.len(), 2, "SHA-256 and MD5 are offered");

    // A wrong password is refused like a first attempt.
    let wrong = answer(&offered[0], "ada", "guess", "REGISTER", "sip:switchboard", "c0", 1);
    phone.send_to(&register(me, 2, Some(wrong.to_header())), gw_sip).await.unwrap();
    assert_eq!(recv(&phone).await.status(), Some(401));

    for (i, c) in offered.iter().enumerate() {
        let creds = answer(c, "ada", "correct horse battery", "REGISTER", "sip:switchboard", "c1", 1);
        phone.send_to(&register(me, 3 + i as u32, Some(creds.to_header())), gw_sip).await.unwrap();
        let ok = recv(&phone).await;
        assert_eq!(ok.status(), Some(200), "{:?} accepted", c.algorithm);
        assert!(ok.header("Contact").unwrap().contains(&format!("sip:ada@{me}")));
    }

    // A carrier calls the user's number: the INVITE reaches the registered phone.
    let carrier = UdpSocket::bind(any).await.unwrap();
    let c = carrier.local_addr().unwrap();
    let sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n";
    let invite = format!("INVITE sip:+14155550111@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP {c};branch=z9hG4bKinv\r\nFrom: <sip:+1212@carrier>;tag=1\r\nTo: <sip:+14155550111@gw>\r\nCall-ID: reg-call-1\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\nContact: <sip:c@{c}>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}", sdp.len());
    carrier.send_to(invite.as_bytes(), gw_sip).await.unwrap();
    let incoming = recv(&phone).await;
    assert_eq!(incoming.method(), Some("INVITE"));
    assert_eq!(incoming.request_uri(), Some(format!("sip:ada@{me}").as_str()));
    // The phone is busy: the carrier hears 486.
    let busy = switchboard_gateway::sip::response::make_response(&incoming, 486, Some("ph"), "phone");
    phone.send_to(&busy.encode(), gw_sip).await.unwrap();
    assert_eq!(recv_final(&carrier).await.status(), Some(486));

    shutdown.cancel();
    gw.wait().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_guessing_passwords_is_banned_and_others_are_not() {
    let dir = tempfile::tempdir().unwrap();
    let (db, gw, shutdown) = start(dir.path(), |c| {
        c.sip.auth_max_failures = 3;
    })
    .await;
    let gw_sip = gw.sip_udp.unwrap();
    let directory = Directory::new(db.clone());
    let user = directory.create_user(NewUser { name: "Ada".into(), ..Default::default() }).await.unwrap();
    let device = directory
        .create_device(NewDevice { user_id: user.id.clone(), name: "desk".into(), contact_uri: "sip:ada@127.0.0.1:9".into() })
        .await
        .unwrap();
    directory.set_device_credentials(&device.id, "ada", "correct horse battery", "switchboard").await.unwrap();

    let attacker = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let me = attacker.local_addr().unwrap();
    attacker.send_to(&register(me, 1, None), gw_sip).await.unwrap();
    let challenge = Challenge::parse(recv(&attacker).await.header("WWW-Authenticate").unwrap()).unwrap();
    for attempt in 0..2u32 {
        let guess = answer(&challenge, "ada", &format!("guess{attempt}"), "REGISTER", "sip:switchboard", "c", 1);
        attacker.send_to(&register(me, 2 + attempt, Some(guess.to_header())), gw_sip).await.unwrap();
        assert_eq!(recv(&attacker).await.status(), Some(401));
    }
    // The third failure bans the source: no answer, and even the right
    // password is ignored while the ban lasts.
    let guess = answer(&challenge, "ada", "guess2", "REGISTER", "sip:switchboard", "c", 1);
    attacker.send_to(&register(me, 4, Some(guess.to_header())), gw_sip).await.unwrap();
    wait_for_metric(gw.http, "switchboard_sip_auth_bans_total 1").await;
    let right = answer(&challenge, "ada", "correct horse battery", "REGISTER", "sip:switchboard", "c", 1);
    attacker.send_to(&register(me, 5, Some(right.to_header())), gw_sip).await.unwrap();
    wait_for_metric(gw.http, "switchboard_sip_messages_dropped_total{reason=\"banned source\"} 1").await;
    let mut buf = [0u8; 2048];
    assert!(attacker.try_recv_from(&mut buf).is_err(), "the banned source got no answer");

    // Another source address is not affected.
    let phone = UdpSocket::bind("127.0.0.2:0").await.unwrap();
    let p = phone.local_addr().unwrap();
    phone.send_to(&register(p, 1, None), gw_sip).await.unwrap();
    assert_eq!(recv(&phone).await.status(), Some(401));

    shutdown.cancel();
    gw.wait().await.unwrap();
}
