//! The gateway alone with real SIP user agents: SIPp as the carrier
//! (`uac_pcap`, plays G.711 audio) calls a provisioned number; SIPp
//! `uas -rtp_echo` is the agent's device. Runs on SQLite and a local
//! recordings directory.
//!
//! Needs `sipp` (Debian package sip-tester); `SWITCHBOARD_TEST_SIPP_BIN`
//! overrides the path.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use switchboard_gateway::config::GatewayConfig;
use switchboard_gateway::directory::{Directory, NewDevice, NewUser};
use switchboard_gateway::Gateway;
use switchboard_proto::{CallEvent, Kind, Message};
use switchboard_store::Database;
use tokio::process::Command;
use support::{free_udp_port, metrics_page, required_program, sipp_media_port, SIPP_BIN};
use tokio_util::sync::CancellationToken;

async fn start(dir: &Path) -> (Database, switchboard_gateway::RunningGateway, CancellationToken) {
    let db = Database::connect(&format!("sqlite://{}", dir.join("sb.db").display())).await.unwrap();
    db.migrate().await.unwrap();
    let mut config = GatewayConfig::default();
    // The test's SIPp/sockets on 127.0.0.1 play the carrier.
    config.sip.trunks = vec![switchboard_gateway::config::TrunkConfig {
        name: "test-carrier".into(),
        inbound_from: vec!["127.0.0.1/32".into()],
        ..Default::default()
    }];
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    config.sip.udp = Some(any);
    config.sip.tcp = Some(any);
    config.http.listen = any;
    let base = switchboard_test_support::ports::gateway_media_range(20);
    config.media.port_min = base;
    config.media.port_max = base + 19;
    let shutdown = CancellationToken::new();
    let gw = Gateway::start(config, dir.to_owned(), db.clone(), shutdown.clone()).await.unwrap();
    (db, gw, shutdown)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn carrier_call_is_bridged_recorded_and_logged_as_events() {
    let dir = tempfile::tempdir().unwrap();
    let (db, gw, shutdown) = start(dir.path()).await;
    let gw_sip = gw.sip_udp.unwrap();

    let uas_port = free_udp_port("127.0.0.1");
    let uas_media = sipp_media_port("127.0.0.1");
    let directory = Directory::new(db.clone());
    let user = directory
        .create_user(NewUser { name: "Ada Agent".into(), extension: Some("101".into()), salesforce_user_id: Some("005000000000001AAA".into()), ..Default::default() })
        .await
        .unwrap();
    directory
        .create_device(NewDevice { user_id: user.id.clone(), name: "desk".into(), contact_uri: format!("sip:agent@127.0.0.1:{uas_port}") })
        .await
        .unwrap();
    directory.assign_number("+1 415 555 0100", &user.id).await.unwrap();

    let work = dir.path().join("sipp");
    std::fs::create_dir_all(&work).unwrap();
    std::os::unix::fs::symlink("/usr/share/sip-tester", work.join("pcap")).unwrap();

    let mut uas = Command::new(required_program(SIPP_BIN))
        .args(["-sn", "uas", "-rtp_echo", "-i", "127.0.0.1", "-p", &uas_port.to_string(), "-mp", &uas_media.to_string(), "-m", "1", "-nostdin", "-timeout", "60"])
        .current_dir(&work)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("sipp must be installed (apt-get install sip-tester)");
    let uac = Command::new(required_program(SIPP_BIN))
        .args([
            "-sn", "uac_pcap", &gw_sip.to_string(), "-s", "14155550100", "-i", "127.0.0.1",
            "-p", &free_udp_port("127.0.0.1").to_string(), "-mp", &sipp_media_port("127.0.0.1").to_string(), "-m", "1", "-nostdin", "-timeout", "60",
        ])
        .current_dir(&work)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output()
        .await
        .unwrap();
    if !uac.status.success() {
        // What the device side said too: a device that never answered is the usual cause.
        let _ = uas.start_kill();
        let device = uas.wait_with_output().await.unwrap();
        panic!(
            "SIPp carrier call failed: {}\n--- the device (SIPp uas) said ---\n{}",
            String::from_utf8_lossy(&uac.stderr),
            String::from_utf8_lossy(&device.stderr)
        );
    }
    let uas_status = tokio::time::timeout(Duration::from_secs(30), uas.wait()).await.unwrap().unwrap();
    assert!(uas_status.success(), "SIPp device side failed");

    // Wait for the recording event (the last event of the call).
    let outbox = db.outbox();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let rows = loop {
        let rows = outbox.read_after(0, 100).await.unwrap();
        if rows.iter().any(|r| r.kind == "recording.available") {
            break rows;
        }
        assert!(tokio::time::Instant::now() < deadline, "no recording event; events so far: {:?}", rows.iter().map(|r| &r.kind).collect::<Vec<_>>());
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let kinds: Vec<&str> = rows.iter().map(|r| r.kind.as_str()).collect();
    assert_eq!(kinds, ["call.started", "call.ringing", "call.answered", "call.ended", "call.quality", "recording.available"]);
    let events: Vec<CallEvent> = rows.iter().map(|r| CallEvent::decode(r.payload.as_slice()).unwrap()).collect();
    assert!(events.iter().enumerate().all(|(i, e)| e.sequence == i as u64 + 1 && e.call_id == events[0].call_id));
    let Some(Kind::Started(started)) = &events[0].kind else { panic!("first event is call.started") };
    assert_eq!(started.to.as_ref().unwrap().number, "+14155550100");
    assert_eq!(started.owner.as_ref().unwrap().salesforce_user_id, "005000000000001AAA");
    let Some(Kind::Ended(ended)) = &events[3].kind else { panic!("call.ended") };
    assert_eq!(ended.hangup_by, "caller");
    let Some(Kind::RecordingAvailable(rec)) = &events[5].kind else { panic!("recording.available") };

    // The WAV is stereo, as long as the call was connected, with audio on both sides.
    let wav = std::fs::read(dir.path().join("recordings").join(&rec.object_key)).unwrap();
    let mut reader = hound::WavReader::new(std::io::Cursor::new(wav)).unwrap();
    assert_eq!(reader.spec().channels, 2);
    let samples: Vec<i16> = reader.samples::<i16>().map(|s| s.unwrap()).collect();
    let rms = |ch: usize| {
        let v: Vec<f64> = samples.iter().skip(ch).step_by(2).map(|s| *s as f64).collect();
        (v.iter().map(|x| x * x).sum::<f64>() / v.len() as f64).sqrt()
    };
    let seconds = samples.len() as f64 / 2.0 / 8000.0;
    assert!((seconds - rec.duration_ms as f64 / 1000.0).abs() < 0.05);
    assert!(seconds > 5.0, "the call lasted {seconds} s");
    assert!(rms(0) > 100.0, "customer channel is silent (rms {})", rms(0));
    assert!(rms(1) > 100.0, "agent channel is silent (rms {})", rms(1));

    // The relay measured both directions of a clean local call: no loss,
    // next to no jitter, so the E-model's MOS is near G.711's best (4.41).
    let page = metrics_page(gw.http).await;
    for from in ["caller", "callee"] {
        let value = |name: &str| -> f64 {
            let prefix = format!("{name}{{leg=\"{from}\"}} ");
            page.lines().find_map(|l| l.strip_prefix(&prefix)).and_then(|v| v.trim().parse().ok()).unwrap_or_else(|| panic!("no {prefix} in\n{page}"))
        };
        // (Other tests of this file may share the process under `cargo test`:
        // judge the average.)
        let calls = value("switchboard_media_mos_count");
        assert!(calls >= 1.0);
        assert!(value("switchboard_media_mos_sum") / calls > 4.2, "MOS of the {from}'s audio");
        assert!(value("switchboard_media_loss_ratio_sum") / calls < 0.01, "loss of the {from}'s audio");
    }

    shutdown.cancel();
    gw.wait().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_number_gets_404_and_garbage_is_survived() {
    let dir = tempfile::tempdir().unwrap();
    let (_db, gw, shutdown) = start(dir.path()).await;
    let gw_sip = gw.sip_udp.unwrap();
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    // Garbage, then a malformed request (bad CSeq), then an INVITE to nobody.
    sock.send_to(b"\x00\x01garbage that is not SIP", gw_sip).await.unwrap();
    let me = sock.local_addr().unwrap();
    let bad = format!("OPTIONS sip:x@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKbad\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:x@c>\r\nCall-ID: bad-1\r\nCSeq: nine OPTIONS\r\nContent-Length: 0\r\n\r\n");
    sock.send_to(bad.as_bytes(), gw_sip).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let (n, _) = sock.recv_from(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("SIP/2.0 400 "), "{}", String::from_utf8_lossy(&buf[..n]));
    let sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n";
    let invite = format!("INVITE sip:+19995550000@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKinv\r\nFrom: <sip:+1212@b>;tag=1\r\nTo: <sip:+19995550000@c>\r\nCall-ID: nobody-1\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\nContact: <sip:c@{me}>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}", sdp.len());
    sock.send_to(invite.as_bytes(), gw_sip).await.unwrap();
    let mut codes = Vec::new();
    while !codes.contains(&404) {
        let (n, _) = tokio::time::timeout(Duration::from_secs(10), sock.recv_from(&mut buf)).await.expect("a final response").unwrap();
        let text = String::from_utf8_lossy(&buf[..n]).to_string();
        let code = text.get(8..11).and_then(|c| c.parse::<u16>().ok());
        codes.push(code.unwrap_or_else(|| panic!("not a response: {text}")));
    }
    assert_eq!(codes.first(), Some(&100));
    shutdown.cancel();
    gw.wait().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_requests_are_framed_and_answered_on_the_same_connection() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let (_db, gw, shutdown) = start(dir.path()).await;
    let mut stream = tokio::net::TcpStream::connect(gw.sip_tcp.unwrap()).await.unwrap();
    let me = stream.local_addr().unwrap();
    let options = format!("OPTIONS sip:ping@127.0.0.1 SIP/2.0\r\nv: SIP/2.0/TCP {me};branch=z9hG4bKtcp\r\nf: <sip:a@b>;tag=1\r\nt: <sip:ping@c>\r\ni: tcp-1\r\nCSeq: 1 OPTIONS\r\nl: 0\r\n\r\n");
    // A keep-alive, then the request split across two writes.
    stream.write_all(b"\r\n\r\n").await.unwrap();
    let (first, second) = options.split_at(40);
    stream.write_all(first.as_bytes()).await.unwrap();
    stream.flush().await.unwrap();
    stream.write_all(second.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let mut buf = vec![0u8; 4096];
    while !(got.ends_with(b"\r\n\r\n") && String::from_utf8_lossy(&got).contains("Call-ID: tcp-1")) {
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf)).await.unwrap().unwrap();
        assert!(n > 0, "connection closed after {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    // The CRLFCRLF ping is answered with a CRLF pong (RFC 5626), then the request.
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("\r\nSIP/2.0 200 OK\r\n"), "{text:?}");
    shutdown.cancel();
    gw.wait().await.unwrap();
}
