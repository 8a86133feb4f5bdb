//! Trunks over real UDP sockets: who may place a call without
//! authentication, and the OPTIONS keep-alive that tells operators whether a
//! trunk is reachable.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use switchboard_gateway::config::{GatewayConfig, TrunkConfig};
use switchboard_gateway::sip::SipMessage;
use switchboard_gateway::Gateway;
use switchboard_store::Database;
use tokio::net::UdpSocket;
use support::wait_for_metric;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(10);

async fn recv(sock: &UdpSocket) -> (SipMessage, SocketAddr) {
    let mut buf = vec![0u8; 65_536];
    let (n, from) = tokio::time::timeout(WAIT, sock.recv_from(&mut buf)).await.expect("a SIP message").unwrap();
    (SipMessage::parse(&buf[..n], 65_536).unwrap(), from)
}

async fn recv_final(sock: &UdpSocket) -> SipMessage {
    loop {
        let (m, _) = recv(sock).await;
        if m.status() != Some(100) {
            return m;
        }
    }
}

async fn start(dir: &std::path::Path, trunks: Vec<TrunkConfig>, keep_alive_secs: u64) -> (switchboard_gateway::RunningGateway, CancellationToken) {
    let db = Database::connect(&format!("sqlite://{}", dir.join("sb.db").display())).await.unwrap();
    db.migrate().await.unwrap();
    let mut config = GatewayConfig::default();
    config.sip.trunks = trunks;
    config.sip.trunk_options_interval_secs = keep_alive_secs;
    // 64·T1 = 3.2 s: a silent trunk is noticed quickly.
    config.sip.timer_t1_ms = 50;
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    config.sip.udp = Some(any);
    config.sip.tcp = None;
    config.http.listen = any;
    let base = switchboard_test_support::ports::gateway_media_range(8);
    config.media.port_min = base;
    config.media.port_max = base + 7;
    let shutdown = CancellationToken::new();
    let gw = Gateway::start(config, dir.to_owned(), db, shutdown.clone()).await.unwrap();
    (gw, shutdown)
}

fn invite(me: SocketAddr, call_id: &str) -> Vec<u8> {
    let sdp = "v=0\r\no=c 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 16000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";
    format!(
        "INVITE sip:+14155550100@switchboard SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK{call_id}\r\nFrom: <sip:+12125550123@{me}>;tag=c\r\nTo: <sip:+14155550100@switchboard>\r\nCall-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: <sip:c@{me}>\r\nMax-Forwards: 70\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    )
    .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_trunk_network_places_calls_without_authentication() {
    let dir = tempfile::tempdir().unwrap();
    // The trunk's outbound side: nothing may ever arrive here from a stranger.
    let pstn = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let trunk = TrunkConfig {
        name: "carrier".into(),
        inbound_from: vec!["127.0.0.1/32".into()],
        address: Some(pstn.local_addr().unwrap().to_string()),
        ..Default::default()
    };
    let (gw, shutdown) = start(dir.path(), vec![trunk], 0).await;
    let gw_sip = gw.sip_udp.unwrap();

    // From the trunk's network: processed (the number is not provisioned).
    let carrier = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    carrier.send_to(&invite(carrier.local_addr().unwrap(), "from-trunk"), gw_sip).await.unwrap();
    assert_eq!(recv_final(&carrier).await.status(), Some(404));

    // From anywhere else: a digest challenge, never the call.
    let stranger = UdpSocket::bind("127.0.0.2:0").await.unwrap();
    stranger.send_to(&invite(stranger.local_addr().unwrap(), "from-stranger"), gw_sip).await.unwrap();
    let r = recv_final(&stranger).await;
    assert_eq!(r.status(), Some(407));
    assert!(r.header("Proxy-Authenticate").is_some_and(|c| c.starts_with("Digest ")));
    // Credentials for nobody get the same answer again.
    let mut forged = String::from_utf8(invite(stranger.local_addr().unwrap(), "from-stranger-2")).unwrap();
    forged = forged.replacen(
        "Max-Forwards: 70\r\n",
        "Max-Forwards: 70\r\nProxy-Authorization: Digest username=\"mallory\", realm=\"switchboard\", nonce=\"x\", uri=\"sip:+14155550100@switchboard\", response=\"00000000000000000000000000000000\"\r\n",
        1,
    );
    stranger.send_to(forged.as_bytes(), gw_sip).await.unwrap();
    assert_eq!(recv_final(&stranger).await.status(), Some(407));
    // The refusals were final: nothing was sent towards the trunk.
    let mut buf = [0u8; 2048];
    assert!(pstn.try_recv_from(&mut buf).is_err(), "an unauthenticated call reached the trunk");
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trunks_get_options_keep_alives_and_their_reachability_is_exported() {
    let dir = tempfile::tempdir().unwrap();
    let carrier = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = carrier.local_addr().unwrap();
    let trunk = TrunkConfig { name: "carrier".into(), address: Some(addr.to_string()), ..Default::default() };
    let (gw, shutdown) = start(dir.path(), vec![trunk], 1).await;
    let http = gw.http;

    let (options, from) = recv(&carrier).await;
    assert_eq!(options.method(), Some("OPTIONS"));
    assert_eq!(options.request_uri(), Some(format!("sip:{addr}").as_str()));
    assert_eq!(from, gw.sip_udp.unwrap(), "sent from the gateway's SIP port");
    let ok = switchboard_gateway::sip::response::make_response(&options, 200, Some("trunk"), "carrier");
    carrier.send_to(&ok.encode(), from).await.unwrap();
    wait_for_metric(http, "switchboard_sip_trunk_up{trunk=\"carrier\"} 1").await;

    // The trunk goes silent: the next keep-alive is retransmitted, then
    // times out, and the gauge drops.
    // (A copy of the first keep-alive, sent before our 200 reached the
    // gateway on a busy machine, is not the next one.)
    let first = options.header("Call-ID").map(str::to_owned);
    let next = loop {
        let (m, _) = recv(&carrier).await;
        if m.header("Call-ID").map(str::to_owned) != first {
            break m;
        }
    };
    assert_eq!(next.method(), Some("OPTIONS"));
    let (copy, _) = recv(&carrier).await;
    assert_eq!(copy.header("Call-ID"), next.header("Call-ID"), "retransmitted over UDP (Timer E)");
    wait_for_metric(http, "switchboard_sip_trunk_up{trunk=\"carrier\"} 0").await;
    shutdown.cancel();
}
