//! Scenario tests of the B2BUA state machine with a virtual clock.

use super::*;

const CARRIER: &str = "127.0.0.1:15060";
const DEVICE: &str = "127.0.0.1:15090";

fn carrier() -> Destination {
    Destination::Udp(CARRIER.parse().unwrap())
}

fn device() -> Destination {
    Destination::Udp(DEVICE.parse().unwrap())
}

fn invite() -> SipMessage {
    let sdp = "v=0\r\no=c 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 16000 RTP/AVP 8 101\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\n";
    let text = format!(
        "INVITE sip:+14155550100@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:15060;branch=z9hG4bKc1\r\nFrom: \"Carrier\" <sip:+12125550123@127.0.0.1:15060>;tag=ct\r\nTo: <sip:+14155550100@127.0.0.1:5060>\r\nCall-ID: carrier-1\r\nCSeq: 1 INVITE\r\nContact: <sip:c@127.0.0.1:15060>\r\nMax-Forwards: 70\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{}",
        sdp.len(),
        sdp
    );
    SipMessage::parse(text.as_bytes(), 65535).unwrap()
}

fn local() -> Local {
    Local { host: "127.0.0.1".into(), udp_port: Some(5060), tcp_port: Some(5060), tls_port: None, user_agent: "Switchboard/test".into() }
}

fn media() -> MediaPorts {
    MediaPorts { ip: "127.0.0.1".parse().unwrap(), a_port: 20000, b_port: 20002 }
}

fn sends(actions: &[Action]) -> Vec<(Destination, String)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send(d, m) => Some((*d, m.method().map(str::to_owned).unwrap_or_else(|| m.status().unwrap().to_string()))),
            _ => None,
        })
        .collect()
}

fn placed(now: Instant) -> (Call, SipMessage) {
    let mut call = Call::new("call-1".into(), invite(), carrier(), local(), Duration::from_secs(30)).unwrap();
    let out = call.place(Target { request_uri: format!("sip:agent@{DEVICE}"), dest: device() }, media(), now);
    let Action::Send(d, inv) = &out[0] else { panic!("expected INVITE") };
    assert_eq!(*d, device());
    (call, inv.clone())
}

fn device_response(inv: &SipMessage, code: u16, sdp: bool) -> SipMessage {
    let mut r = make_response(inv, code, Some("devtag"), "SIPp");
    r.push_header("Contact", format!("<sip:agent@{DEVICE}>"));
    if sdp {
        r.set_body(
            "application/sdp",
            "v=0\r\no=d 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 17000 RTP/AVP 8\r\na=rtpmap:8 PCMA/8000\r\n",
        );
    }
    r
}

fn request_on_a(method: &str, with_tag: bool) -> SipMessage {
    let base = invite();
    let mut m = SipMessage::request(method, "sip:switchboard@127.0.0.1:5060");
    m.push_header("Via", "SIP/2.0/UDP 127.0.0.1:15060;branch=z9hG4bKc2")
        .push_header("From", base.header("From").unwrap().to_owned())
        .push_header("To", if with_tag { format!("{};tag=x", base.header("To").unwrap()) } else { base.header("To").unwrap().to_owned() })
        .push_header("Call-ID", "carrier-1")
        .push_header("CSeq", format!("{} {}", if method == "CANCEL" { 1 } else { 2 }, method));
    m
}

#[test]
fn answered_call_relays_states_and_hangs_up_both_legs() {
    let t0 = Instant::now();
    let (mut call, inv) = placed(t0);
    assert_eq!(inv.header("X-Switchboard-Call-ID"), Some("call-1"));
    let offer = sdp::parse_audio(&inv.body).unwrap();
    assert_eq!(offer.rtp.port(), 20002, "device sees the gateway's media address, not the carrier's");

    let out = call.on_device_message(device_response(&inv, 180, false), device(), t0);
    assert_eq!(sends(&out), vec![(carrier(), "180".into())]);
    assert!(out.contains(&Action::Ringing));

    let out = call.on_device_message(device_response(&inv, 200, true), device(), t0);
    let s = sends(&out);
    assert_eq!(s[0], (device(), "ACK".into()));
    assert_eq!(s[1], (carrier(), "200".into()));
    assert!(out.contains(&Action::Answered { device_rtp: "127.0.0.1:17000".parse().unwrap() }));
    let Action::Send(_, ok) = &out[1] else { unreachable!() };
    let answer = sdp::parse_audio(&ok.body).unwrap();
    assert_eq!(answer.rtp.port(), 20000, "caller sees the gateway's media address");
    assert_eq!(answer.formats[0].payload_type, 8);

    // Retransmitted 2xx from the device gets a new ACK, nothing towards the caller.
    let out = call.on_device_message(device_response(&inv, 200, true), device(), t0);
    assert_eq!(sends(&out), vec![(device(), "ACK".into())]);

    // Until the caller ACKs, the 200 is retransmitted at T1, 2·T1, …
    let out = call.on_timer(t0 + T1);
    assert_eq!(sends(&out), vec![(carrier(), "200".into())]);
    call.on_caller_request(request_on_a("ACK", true), carrier(), t0 + T1);
    assert!(sends(&call.on_timer(t0 + 3 * T1)).is_empty());

    let out = call.on_caller_request(request_on_a("BYE", true), carrier(), t0 + Duration::from_secs(10));
    let s = sends(&out);
    assert_eq!(s, vec![(carrier(), "200".into()), (device(), "BYE".into())]);
    assert!(out.contains(&Action::Ended { reason: EndReason::Completed, hangup_by: HangupBy::Caller, sip_status: 200 }));
    assert!(!call.is_finished(t0 + Duration::from_secs(11)));
    assert!(call.is_finished(t0 + Duration::from_secs(10) + LINGER));
}

#[test]
fn cancel_while_ringing() {
    let t0 = Instant::now();
    let (mut call, inv) = placed(t0);
    call.on_device_message(device_response(&inv, 180, false), device(), t0);
    let out = call.on_caller_request(request_on_a("CANCEL", false), carrier(), t0);
    assert_eq!(sends(&out), vec![(carrier(), "200".into()), (carrier(), "487".into()), (device(), "CANCEL".into())]);
    assert!(out.contains(&Action::Ended { reason: EndReason::Cancelled, hangup_by: HangupBy::Caller, sip_status: 487 }));
    // The device then answers 487 to its INVITE: ACKed, nothing more to the caller.
    let out = call.on_device_message(device_response(&inv, 487, false), device(), t0);
    assert_eq!(sends(&out), vec![(device(), "ACK".into())]);
}

#[test]
fn busy_device_maps_to_486() {
    let t0 = Instant::now();
    let (mut call, inv) = placed(t0);
    let out = call.on_device_message(device_response(&inv, 486, false), device(), t0);
    assert_eq!(sends(&out), vec![(device(), "ACK".into()), (carrier(), "486".into())]);
    assert!(out.contains(&Action::Ended { reason: EndReason::Busy, hangup_by: HangupBy::Callee, sip_status: 486 }));
}

#[test]
fn ring_timeout_cancels_and_answers_480() {
    let t0 = Instant::now();
    let (mut call, inv) = placed(t0);
    call.on_device_message(device_response(&inv, 180, false), device(), t0);
    let deadline = call.next_deadline().unwrap();
    assert!(deadline <= t0 + Duration::from_secs(30));
    let out = call.on_timer(t0 + Duration::from_secs(30));
    assert_eq!(sends(&out), vec![(device(), "CANCEL".into()), (carrier(), "480".into())]);
    assert!(out.contains(&Action::Ended { reason: EndReason::NoAnswer, hangup_by: HangupBy::System, sip_status: 480 }));
}

#[test]
fn invite_is_retransmitted_until_a_provisional() {
    let t0 = Instant::now();
    let (mut call, inv) = placed(t0);
    assert_eq!(sends(&call.on_timer(t0 + T1)), vec![(device(), "INVITE".into())]);
    assert_eq!(sends(&call.on_timer(t0 + T1 + 2 * T1)), vec![(device(), "INVITE".into())]);
    call.on_device_message(device_response(&inv, 100, false), device(), t0 + 4 * T1);
    assert!(sends(&call.on_timer(t0 + 20 * T1)).is_empty());
}

#[test]
fn device_bye_hangs_up_caller() {
    let t0 = Instant::now();
    let (mut call, inv) = placed(t0);
    call.on_device_message(device_response(&inv, 200, true), device(), t0);
    let mut bye = SipMessage::request("BYE", "sip:switchboard@127.0.0.1:5060");
    bye.push_header("Via", "SIP/2.0/UDP 127.0.0.1:15090;branch=z9hG4bKd")
        .push_header("From", format!("<sip:agent@{DEVICE}>;tag=devtag"))
        .push_header("To", inv.header("From").unwrap().to_owned())
        .push_header("Call-ID", call.device_call_id().unwrap().to_owned())
        .push_header("CSeq", "1 BYE");
    let out = call.on_device_message(bye, device(), t0);
    let s = sends(&out);
    assert_eq!(s, vec![(device(), "200".into()), (carrier(), "BYE".into())]);
    let Action::Send(_, b) = &out[1] else { unreachable!() };
    assert_eq!(b.request_uri(), Some("sip:c@127.0.0.1:15060"), "BYE goes to the caller's Contact");
    assert!(b.header("From").unwrap().contains(";tag="));
}

#[test]
fn invite_without_offer_is_refused() {
    let mut inv = invite();
    inv.body = Bytes::new();
    assert_eq!(Call::new("c".into(), inv, carrier(), local(), Duration::from_secs(5)).unwrap_err().code, 488);
}
