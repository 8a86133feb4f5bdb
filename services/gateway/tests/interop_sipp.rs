//! Interop with SIPp scenarios: SIPp on 127.0.0.1 is the carrier (the trunk)
//! and the agents' devices. Each scenario fails — SIPp exits non-zero — on a
//! missing or unexpected message, so a test passes only when the gateway
//! sends exactly what the scenario expects on both legs.
//!
//! Needs `SWITCHBOARD_TEST_SIPP_BIN` (`scripts/test` installs Debian's
//! sip-tester and exports it).

mod support;

use switchboard_gateway::directory::{NewDevice, NewUser};
use switchboard_proto::v1::EndReason;
use switchboard_proto::Kind;
use support::{events_of, free_udp_port, kinds, Sipp, SippRun, TestGateway, CARRIER_IP};

const NUMBER: &str = "+14155550100";
const DIALLED: &str = "14155550100";

/// A user owning [`NUMBER`] with one device per SIP port (provisioned
/// contacts on 127.0.0.1, where SIPp plays the phones), in that fork order.
async fn provision(gw: &TestGateway, device_ports: &[u16]) -> (String, Vec<String>) {
    let directory = gw.directory();
    let user = directory
        .create_user(NewUser { name: "Ada Agent".into(), extension: Some("101".into()), salesforce_user_id: Some("005000000000001AAA".into()), ..Default::default() })
        .await
        .unwrap();
    let mut devices = Vec::new();
    for (i, port) in device_ports.iter().enumerate() {
        let d = directory
            .create_device(NewDevice { user_id: user.id.clone(), name: format!("phone {i}"), contact_uri: format!("sip:ada{i}@127.0.0.1:{port}") })
            .await
            .unwrap();
        devices.push(d.id);
    }
    directory.assign_number(NUMBER, &user.id).await.unwrap();
    (user.id, devices)
}

fn device(gw: &TestGateway, label: &str, scenario: &str, port: u16) -> Sipp {
    Sipp::spawn(gw.dir.path(), SippRun { label, scenario, ip: "127.0.0.1", remote: None, service: None, port })
}

fn carrier(gw: &TestGateway, scenario: &str) -> Sipp {
    Sipp::spawn(
        gw.dir.path(),
        SippRun { label: "carrier", scenario, ip: CARRIER_IP, remote: Some(gw.sip), service: Some(DIALLED), port: free_udp_port(CARRIER_IP) },
    )
}

/// The `call.ended` payload of the only call.
fn only_call_ended(events: &[(String, switchboard_proto::CallEvent)]) -> switchboard_proto::v1::CallEnded {
    let ended: Vec<_> = events
        .iter()
        .filter_map(|(_, e)| match &e.kind {
            Some(Kind::Ended(x)) => Some(x.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(ended.len(), 1, "one call ended: {events:?}");
    ended[0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_while_the_device_rings_is_answered_487_and_cancels_the_device() {
    let gw = TestGateway::start(|_| {}).await;
    let phone_port = free_udp_port("127.0.0.1");
    provision(&gw, &[phone_port]).await;

    let phone = device(&gw, "phone", "interop_uas_ring_expect_cancel.xml", phone_port);
    let carrier = carrier(&gw, "interop_uac_cancel_ringing.xml");
    carrier.succeeds().await;
    let phone = phone.succeeds().await;
    // The caller's CANCEL is passed on as a CANCEL with the reason 487.
    assert!(
        phone.action_log().contains("CANCEL Reason: SIP;cause=487"),
        "the device's CANCEL carries Reason: SIP;cause=487\n{}",
        phone.report()
    );

    let events = gw.events_after_calls_ended(1).await;
    let call = events_of(&events, &events[0].1.call_id);
    assert_eq!(kinds(&call), ["call.started", "call.ringing", "call.ended"]);
    let ended = only_call_ended(&events);
    assert_eq!(ended.reason(), EndReason::Cancelled);
    assert_eq!(ended.hangup_by, "caller");
    assert_eq!(ended.sip_status, 487);
    assert_eq!(ended.talk_seconds, 0);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hold_and_resume_from_the_device_are_answered_locally() {
    let gw = TestGateway::start(|_| {}).await;
    let phone_port = free_udp_port("127.0.0.1");
    provision(&gw, &[phone_port]).await;

    // The phone answers, re-INVITEs sendonly (expects recvonly) and sendrecv
    // (expects sendrecv), then hangs up; the carrier's scenario fails if
    // either re-INVITE reaches it.
    let phone = device(&gw, "phone", "interop_uas_hold_resume.xml", phone_port);
    let carrier = carrier(&gw, "interop_uac_call_wait_bye.xml");
    let carrier = carrier.succeeds().await;
    phone.succeeds().await;
    assert_eq!(carrier.messages().matches("INVITE sip:").count(), 1, "the carrier sent one INVITE and received none");

    let events = gw.events_after_calls_ended(1).await;
    let call = events_of(&events, &events[0].1.call_id);
    // The phone's hold put the carrier on hold music, and its resume took it off.
    assert_eq!(kinds(&call), ["call.started", "call.ringing", "call.answered", "call.media_state", "call.media_state", "call.ended"]);
    let held: Vec<i32> = call
        .iter()
        .filter_map(|(_, e)| match &e.kind {
            Some(switchboard_proto::Kind::MediaState(m)) => Some(m.held),
            _ => None,
        })
        .collect();
    assert_eq!(held, [switchboard_proto::v1::Leg::Caller as i32, switchboard_proto::v1::Leg::Unspecified as i32]);
    let ended = only_call_ended(&events);
    assert_eq!(ended.reason(), EndReason::Completed);
    assert_eq!(ended.hangup_by, "callee");
    assert_eq!(ended.sip_status, 200);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hold_and_resume_from_the_carrier_are_answered_locally() {
    let gw = TestGateway::start(|_| {}).await;
    let phone_port = free_udp_port("127.0.0.1");
    provision(&gw, &[phone_port]).await;

    // The phone's scenario fails on any request but the final BYE.
    let phone = device(&gw, "phone", "interop_uas_answer_wait_bye.xml", phone_port);
    let carrier = carrier(&gw, "interop_uac_hold_resume.xml");
    carrier.succeeds().await;
    phone.succeeds().await;

    let events = gw.events_after_calls_ended(1).await;
    let ended = only_call_ended(&events);
    assert_eq!(ended.reason(), EndReason::Completed);
    assert_eq!(ended.hangup_by, "caller");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_dialog_options_and_update_from_the_carrier_are_answered() {
    let gw = TestGateway::start(|_| {}).await;
    let phone_port = free_udp_port("127.0.0.1");
    provision(&gw, &[phone_port]).await;

    let phone = device(&gw, "phone", "interop_uas_answer_wait_bye.xml", phone_port);
    let carrier = carrier(&gw, "interop_uac_options_update.xml");
    carrier.succeeds().await;
    phone.succeeds().await;

    let events = gw.events_after_calls_ended(1).await;
    let ended = only_call_ended(&events);
    assert_eq!(ended.reason(), EndReason::Completed);
    assert_eq!(ended.hangup_by, "caller");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_forked_to_two_devices_is_answered_on_one_and_cancelled_on_the_other() {
    let gw = TestGateway::start(|_| {}).await;
    let (answering_port, ringing_port) = (free_udp_port("127.0.0.1"), free_udp_port("127.0.0.1"));
    let (_, devices) = provision(&gw, &[ringing_port, answering_port]).await;

    let ringing = device(&gw, "ringing-phone", "interop_uas_ring_expect_cancel.xml", ringing_port);
    let answering = device(&gw, "answering-phone", "interop_uas_answer_wait_bye.xml", answering_port);
    let carrier = carrier(&gw, "interop_uac_call_hang_up.xml");
    carrier.succeeds().await;
    answering.succeeds().await;
    let ringing = ringing.succeeds().await;
    assert!(
        ringing.action_log().contains("CANCEL Reason: SIP;cause=200"),
        "the device that lost the race is cancelled with Reason: SIP;cause=200 (RFC 3326)\n{}",
        ringing.report()
    );

    let events = gw.events_after_calls_ended(1).await;
    let answered: Vec<_> = events
        .iter()
        .filter_map(|(_, e)| match &e.kind {
            Some(Kind::Answered(a)) => Some(a.agent.clone().unwrap().device_id),
            _ => None,
        })
        .collect();
    assert_eq!(answered, [devices[1].clone()], "the answer is credited to the device that answered");
    let ended = only_call_ended(&events);
    assert_eq!(ended.reason(), EndReason::Completed);
    gw.stop().await;
}
