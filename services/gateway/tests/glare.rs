//! Re-INVITE glare with real SIPp user agents: the gateway puts the agent's
//! phone on hold while the phone sends a re-INVITE of its own. Both sides
//! answer 491, the gateway retries after the RFC 3261 §14.1 timer, and the
//! carrier's leg never sees any of it.
//!
//! Needs `sipp` (Debian package sip-tester); `SWITCHBOARD_TEST_SIPP_BIN`
//! overrides the path.

mod support;

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use switchboard_gateway::calls::control::Leg;
use switchboard_gateway::config::{GatewayConfig, TrunkConfig};
use switchboard_gateway::directory::{Directory, NewDevice, NewUser};
use switchboard_gateway::Gateway;
use switchboard_proto::{CallEvent, Kind, Message};
use switchboard_store::Database;
use tokio::process::Command;
use support::{free_udp_port, required_program, scenario, sipp_media_port, sipp_traces, SIPP_BIN};
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hold_meets_glare_and_is_retried_after_the_rfc_timer() {
    let _ = tracing_subscriber::fmt().with_env_filter("switchboard_gateway=debug").with_test_writer().try_init();
    let dir = tempfile::tempdir().unwrap();
    let db = Database::connect(&format!("sqlite://{}", dir.path().join("sb.db").display())).await.unwrap();
    db.migrate().await.unwrap();
    let mut config = GatewayConfig::default();
    config.sip.trunks = vec![TrunkConfig { name: "carrier".into(), inbound_from: vec!["127.0.0.1/32".into()], ..Default::default() }];
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    config.sip.udp = Some(any);
    config.sip.tcp = None;
    config.http.listen = any;
    let base = switchboard_test_support::ports::gateway_media_range(8);
    config.media.port_min = base;
    config.media.port_max = base + 7;
    let shutdown = CancellationToken::new();
    let gw = Gateway::start(config, dir.path().to_owned(), db.clone(), shutdown.clone()).await.unwrap();

    let phone_port = free_udp_port("127.0.0.1");
    let directory = Directory::new(db.clone());
    let ada = directory.create_user(NewUser { name: "Ada".into(), extension: None, salesforce_user_id: None, ..Default::default() }).await.unwrap();
    directory
        .create_device(NewDevice { user_id: ada.id.clone(), name: "desk".into(), contact_uri: format!("sip:ada@127.0.0.1:{phone_port}") })
        .await
        .unwrap();
    directory.assign_number("+14155550100", &ada.id).await.unwrap();

    let mut phone = Command::new(required_program(SIPP_BIN))
        .args(["-sf", scenario("device_uas_glare.xml").to_str().unwrap(), "-i", "127.0.0.1", "-p", &phone_port.to_string()])
        .args(["-mp", &sipp_media_port("127.0.0.1").to_string(), "-m", "1", "-nostdin", "-timeout", "60", "-timeout_error", "-trace_msg"])
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("sipp must be installed (apt-get install sip-tester)");
    let mut carrier = Command::new(required_program(SIPP_BIN))
        .args(["-sf", scenario("carrier_uac_long_call.xml").to_str().unwrap(), &gw.sip_udp.unwrap().to_string(), "-s", "14155550100"])
        .args(["-d", "12000", "-i", "127.0.0.1", "-p", &free_udp_port("127.0.0.1").to_string(), "-mp", &sipp_media_port("127.0.0.1").to_string()])
        .args(["-m", "1", "-nostdin", "-timeout", "60", "-timeout_error", "-trace_msg"])
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();

    // Once the call is answered, put the phone's leg on hold.
    let outbox = db.outbox();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let call_id = loop {
        let rows = outbox.read_after(0, 100).await.unwrap();
        if let Some(row) = rows.iter().find(|r| r.kind == "call.answered") {
            break CallEvent::decode(row.payload.as_slice()).unwrap().call_id;
        }
        assert!(tokio::time::Instant::now() < deadline, "the call was not answered\n{}", sipp_traces(dir.path()));
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(gw.control.hold("no-such-call", Leg::Callee, true).await.unwrap_err().to_string(), "no live call no-such-call");
    gw.control.hold(&call_id, Leg::Callee, true).await.unwrap();

    let phone_status = tokio::time::timeout(Duration::from_secs(60), phone.wait()).await.unwrap().unwrap();
    let carrier_status = tokio::time::timeout(Duration::from_secs(60), carrier.wait()).await.unwrap().unwrap();
    assert!(phone_status.success(), "the phone's side of the glare failed\n{}", sipp_traces(dir.path()));
    assert!(carrier_status.success(), "the carrier saw something of the phone's leg\n{}", sipp_traces(dir.path()));

    // The writer commits on its own task: wait for the call's end to land.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let ended = loop {
        let rows = outbox.read_after(0, 100).await.unwrap();
        let ended = rows
            .iter()
            .filter_map(|r| match CallEvent::decode(r.payload.as_slice()).unwrap().kind {
                Some(Kind::Ended(e)) => Some(e),
                _ => None,
            })
            .next();
        if let Some(e) = ended {
            break e;
        }
        assert!(tokio::time::Instant::now() < deadline, "no call.ended event within 30 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(ended.hangup_by, "caller");
    shutdown.cancel();
}
