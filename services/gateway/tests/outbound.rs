//! Calls placed by devices, with real SIPp user agents: a desk phone
//! (SIPp on 127.0.0.2, digest credentials) calls a public number; the
//! gateway authenticates it, normalises the number to E.164, picks a caller
//! ID the agent is entitled to, and sends the call through the trunk (SIPp
//! on 127.0.0.1), answering the trunk's own 407 challenge.
//!
//! Needs `sipp` (Debian package sip-tester); `SWITCHBOARD_TEST_SIPP_BIN`
//! overrides the path.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use switchboard_gateway::config::{GatewayConfig, TrunkConfig};
use switchboard_gateway::directory::{Directory, NewDevice, NewUser};
use switchboard_gateway::Gateway;
use switchboard_proto::{CallEvent, Kind, Message};
use switchboard_store::Database;
use tokio::process::Command;
use support::{free_udp_port, required_program, scenario, sipp_media_port, sipp_traces, SIPP_BIN};
use tokio_util::sync::CancellationToken;

const REALM: &str = "switchboard";

async fn start(dir: &Path, trunk_port: u16) -> (Database, switchboard_gateway::RunningGateway, CancellationToken) {
    let db = Database::connect(&format!("sqlite://{}", dir.join("sb.db").display())).await.unwrap();
    db.migrate().await.unwrap();
    let mut config = GatewayConfig::default();
    config.sip.realm = REALM.into();
    // SIPp answers only the first challenge, and only MD5.
    config.sip.digest_algorithms = vec!["MD5".into()];
    config.sip.trunks = vec![TrunkConfig {
        name: "carrier".into(),
        address: Some(format!("127.0.0.1:{trunk_port}")),
        inbound_from: vec!["127.0.0.1/32".into()],
        username: Some("acct".into()),
        password: Some("trunk-secret".into()),
        from_domain: Some("trunk.example".into()),
        // North American dialling: 011 for international calls.
        ..Default::default()
    }];
    config.sip.trunk_options_interval_secs = 0;
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    config.sip.udp = Some(any);
    config.sip.tcp = None;
    config.http.listen = any;
    let base = switchboard_test_support::ports::gateway_media_range(8);
    config.media.port_min = base;
    config.media.port_max = base + 7;
    let shutdown = CancellationToken::new();
    let gw = Gateway::start(config, dir.to_owned(), db.clone(), shutdown.clone()).await.unwrap();
    (db, gw, shutdown)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_calls_out_through_a_trunk_that_challenges_with_407() {
    call_out_through("trunk_uas_407.xml").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_calls_out_through_a_trunk_that_checks_the_digest_itself() {
    call_out_through("trunk_uas_401.xml").await;
}

/// One call from the phone to +44 20 7123 4567 (dialled the North American
/// way), through a trunk playing `trunk_scenario`.
async fn call_out_through(trunk_scenario: &str) {
    // The gateway's log, shown by the test runner when the test fails.
    let _ = tracing_subscriber::fmt().with_env_filter("switchboard_gateway=debug").with_test_writer().try_init();
    let dir = tempfile::tempdir().unwrap();
    let trunk_port = free_udp_port("127.0.0.1");
    let (db, gw, shutdown) = start(dir.path(), trunk_port).await;
    let gw_sip = gw.sip_udp.unwrap();

    let directory = Directory::new(db.clone());
    let ada = directory
        .create_user(NewUser { name: "Ada Agent".into(), extension: Some("101".into()), salesforce_user_id: Some("005000000000001AAA".into()), ..Default::default() })
        .await
        .unwrap();
    let phone = directory
        .create_device(NewDevice { user_id: ada.id.clone(), name: "desk".into(), contact_uri: "sip:ada@127.0.0.2:5999".into() })
        .await
        .unwrap();
    directory.set_device_credentials(&phone.id, "ada", "phone-secret", REALM).await.unwrap();
    directory.assign_number("+14155550100", &ada.id).await.unwrap();
    // Someone else's number: asking to present it must not work.
    let grace = directory.create_user(NewUser { name: "Grace".into(), extension: Some("102".into()), salesforce_user_id: None, ..Default::default() }).await.unwrap();
    directory.assign_number("+14155550199", &grace.id).await.unwrap();

    let mut trunk = Command::new(required_program(SIPP_BIN))
        .args(["-sf", scenario(trunk_scenario).to_str().unwrap(), "-i", "127.0.0.1", "-p", &trunk_port.to_string()])
        .args(["-mp", &sipp_media_port("127.0.0.1").to_string(), "-m", "1", "-nostdin", "-timeout", "30", "-timeout_error", "-trace_msg"])
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("sipp must be installed (apt-get install sip-tester)");
    let device = Command::new(required_program(SIPP_BIN))
        .args(["-sf", scenario("device_uac_auth.xml").to_str().unwrap(), &gw_sip.to_string(), "-s", "011 44 20 7123 4567".replace(' ', "").as_str()])
        .args(["-au", "ada", "-ap", "phone-secret", "-i", "127.0.0.2", "-p", &free_udp_port("127.0.0.2").to_string()])
        .args(["-mp", &sipp_media_port("127.0.0.2").to_string(), "-m", "1", "-nostdin", "-timeout", "30", "-timeout_error", "-trace_msg"])
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output()
        .await
        .unwrap();
    let trunk_status = tokio::time::timeout(Duration::from_secs(40), trunk.wait()).await.unwrap().unwrap();
    assert!(device.status.success(), "the phone's call failed: {}\n{}", String::from_utf8_lossy(&device.stderr), sipp_traces(dir.path()));
    assert!(trunk_status.success(), "the trunk saw a wrong INVITE (credentials, E.164 number or caller ID)\n{}", sipp_traces(dir.path()));

    // The call is logged as outbound, for Ada, to the E.164 number.
    let outbox = db.outbox();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let rows = loop {
        let rows = outbox.read_after(0, 100).await.unwrap();
        if rows.iter().any(|r| r.kind == "call.ended") {
            break rows;
        }
        assert!(tokio::time::Instant::now() < deadline, "no call.ended; events so far: {:?}", rows.iter().map(|r| &r.kind).collect::<Vec<_>>());
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let events: Vec<CallEvent> = rows.iter().map(|r| CallEvent::decode(r.payload.as_slice()).unwrap()).collect();
    let Some(Kind::Started(started)) = &events[0].kind else { panic!("first event is call.started") };
    assert_eq!(started.direction, switchboard_proto::v1::Direction::Outbound as i32);
    assert_eq!(started.to.as_ref().unwrap().number, "+442071234567");
    assert_eq!(started.from.as_ref().unwrap().number, "+14155550100", "the entitled number, not the one asked for");
    assert_eq!(started.owner.as_ref().unwrap().salesforce_user_id, "005000000000001AAA");
    assert!(events.iter().any(|e| matches!(e.kind, Some(Kind::Answered(_)))));
    let ended = events
        .iter()
        .find_map(|e| match &e.kind {
            Some(Kind::Ended(x)) => Some(x),
            _ => None,
        })
        .unwrap();
    assert_eq!(ended.hangup_by, "caller");
    shutdown.cancel();
}
