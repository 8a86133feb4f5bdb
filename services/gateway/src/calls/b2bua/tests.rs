//! Scenario tests of the B2BUA state machine with a virtual clock. Messages
//! arrive as the transaction layer delivers them: one copy each.

use super::*;
use crate::sip::digest::{expected_response, ha1, Credentials};

const CARRIER: &str = "127.0.0.1:15060";
const PHONE: &str = "127.0.0.1:15090";
const LAPTOP: &str = "127.0.0.1:15092";
const T1: Duration = Duration::from_millis(500);

fn carrier() -> Destination {
    Destination::Udp(CARRIER.parse().unwrap())
}

fn phone() -> Destination {
    Destination::Udp(PHONE.parse().unwrap())
}

fn laptop() -> Destination {
    Destination::Udp(LAPTOP.parse().unwrap())
}

fn offer_sdp(port: u16, direction: &str) -> String {
    format!(
        "v=0\r\no=c 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio {port} RTP/AVP 8 101\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\na={direction}\r\n"
    )
}

fn invite() -> SipMessage {
    let sdp = offer_sdp(16000, "sendrecv");
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

fn caller() -> Presentation {
    Presentation { user: "+12125550123".into(), display: Some("Carrier".into()), ..Presentation::default() }
}

fn new_call() -> Call {
    Call::new("call-1".into(), invite(), carrier(), local(), Timers::default(), Duration::from_secs(30)).unwrap()
}

/// What was sent, as (destination, method or status).
fn sends(actions: &[Action]) -> Vec<(Destination, String)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send(d, m) => Some((*d, m.method().map(str::to_owned).unwrap_or_else(|| m.status().unwrap().to_string()))),
            _ => None,
        })
        .collect()
}

fn sent<'a>(actions: &'a [Action], what: &str) -> &'a SipMessage {
    actions
        .iter()
        .find_map(|a| match a {
            Action::Send(_, m) if m.method() == Some(what) || m.status().map(|s| s.to_string()).as_deref() == Some(what) => Some(m),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no {what} in {actions:?}"))
}

/// A call with one fork per destination; returns the forks' INVITEs.
fn placed(dests: &[Destination], now: Instant) -> (Call, Vec<SipMessage>) {
    let mut call = new_call();
    let targets = dests.iter().map(|d| Target::new(format!("sip:agent@{}", d.addr()), *d)).collect();
    let out = call.place(targets, &caller(), media(), now);
    let invites: Vec<SipMessage> = out
        .iter()
        .map(|a| match a {
            Action::Send(_, m) => m.clone(),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(invites.len(), dests.len());
    (call, invites)
}

fn reply(inv: &SipMessage, code: u16, tag: &str, sdp: Option<u16>) -> SipMessage {
    let mut r = make_response(inv, code, Some(tag), "phone");
    r.push_header("Contact", format!("<sip:agent@{PHONE}>"));
    if let Some(port) = sdp {
        r.set_body(
            "application/sdp",
            format!("v=0\r\no=d 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio {port} RTP/AVP 8\r\na=rtpmap:8 PCMA/8000\r\n"),
        );
    }
    r
}

fn request_on_a(method: &str, cseq: u32, to_tag: Option<&str>) -> SipMessage {
    let base = invite();
    let mut m = SipMessage::request(method, "sip:switchboard@127.0.0.1:5060");
    let to = base.header("To").unwrap().to_owned();
    m.push_header("Via", format!("SIP/2.0/UDP 127.0.0.1:15060;branch=z9hG4bKa{cseq}{method}"))
        .push_header("From", base.header("From").unwrap().to_owned())
        .push_header("To", match to_tag {
            Some(t) => format!("{to};tag={t}"),
            None => to,
        })
        .push_header("Call-ID", "carrier-1")
        .push_header("CSeq", format!("{cseq} {method}"));
    m
}

/// The To tag the gateway gave the caller's dialog.
fn a_tag(actions: &[Action]) -> String {
    let ok = sent(actions, "200");
    NameAddr::parse(ok.header("To").unwrap()).unwrap().tag().unwrap().to_owned()
}

fn request_on_fork(method: &str, fork_invite: &SipMessage, cseq: u32, body: Option<String>) -> SipMessage {
    let mut m = SipMessage::request(method, "sip:switchboard@127.0.0.1:5060");
    m.push_header("Via", format!("SIP/2.0/UDP {PHONE};branch=z9hG4bKp{cseq}"))
        .push_header("From", format!("<{}>;tag=t0", fork_invite.request_uri().unwrap()))
        .push_header("To", fork_invite.header("From").unwrap().to_owned())
        .push_header("Call-ID", fork_invite.header("Call-ID").unwrap().to_owned())
        .push_header("CSeq", format!("{cseq} {method}"))
        .push_header("Contact", format!("<sip:agent@{PHONE}>"));
    if let Some(b) = body {
        m.set_body("application/sdp", b);
    }
    m
}

#[test]
fn forks_ring_together_and_the_first_answer_wins() {
    let t0 = Instant::now();
    let (mut call, inv) = placed(&[phone(), laptop()], t0);
    assert_ne!(inv[0].header("Call-ID"), inv[1].header("Call-ID"), "each fork is its own dialog");
    assert_eq!(inv[0].header("X-Switchboard-Call-ID"), Some("call-1"));
    assert_eq!(sdp::parse_audio(&inv[0].body).unwrap().rtp.port(), 20002, "forks see the gateway's media address");
    assert!(inv[0].header("From").unwrap().starts_with("\"Carrier\" <sip:+12125550123@127.0.0.1>"));

    let out = call.on_callee_message(reply(&inv[0], 180, "t0", None), phone(), t0);
    assert_eq!(sends(&out), vec![(carrier(), "180".into())]);
    assert!(out.contains(&Action::Ringing));
    let out = call.on_callee_message(reply(&inv[1], 180, "t1", None), laptop(), t0);
    assert!(sends(&out).is_empty(), "one 180 towards the caller");

    let out = call.on_callee_message(reply(&inv[1], 200, "t1", Some(17000)), laptop(), t0);
    assert_eq!(sends(&out), vec![(laptop(), "ACK".into()), (phone(), "CANCEL".into()), (carrier(), "200".into())]);
    let cancel = sent(&out, "CANCEL");
    assert_eq!(cancel.header("Via"), inv[0].header("Via"), "CANCEL matches the INVITE's branch");
    assert_eq!(cancel.header("CSeq"), Some("1 CANCEL"));
    assert_eq!(cancel.header("Reason"), Some("SIP;cause=200;text=\"Call completed elsewhere\""));
    let ack = sent(&out, "ACK");
    assert_eq!(ack.request_uri(), Some(format!("sip:agent@{PHONE}").as_str()), "ACK to the answer's Contact");
    assert_eq!(ack.header("CSeq"), Some("1 ACK"));
    assert!(out.contains(&Action::Answered { fork: 1, callee_rtp: "127.0.0.1:17000".parse().unwrap() }));
    let answer = sdp::parse_audio(&sent(&out, "200").body).unwrap();
    assert_eq!(answer.rtp.port(), 20000, "the caller sees the gateway's media address");
    assert_eq!(answer.formats[0].payload_type, 8);

    // A retransmitted 2xx gets the same ACK again; nothing reaches the caller.
    let out = call.on_callee_message(reply(&inv[1], 200, "t1", Some(17000)), laptop(), t0);
    assert_eq!(sends(&out), vec![(laptop(), "ACK".into())]);
    // The cancelled phone answers 487: nothing more happens.
    assert!(call.on_callee_message(reply(&inv[0], 487, "t0", None), phone(), t0).is_empty());
}

#[test]
fn a_fork_still_trying_is_cancelled_only_after_its_provisional() {
    let t0 = Instant::now();
    let (mut call, inv) = placed(&[phone(), laptop()], t0);
    let out = call.on_callee_message(reply(&inv[1], 200, "t1", Some(17000)), laptop(), t0);
    assert!(!sends(&out).iter().any(|(_, m)| m == "CANCEL"), "no CANCEL before a provisional (§9.1)");
    let out = call.on_callee_message(reply(&inv[0], 100, "", None), phone(), t0);
    assert!(out.is_empty());
    let out = call.on_callee_message(reply(&inv[0], 180, "t0", None), phone(), t0);
    assert_eq!(sends(&out), vec![(phone(), "CANCEL".into())]);
}

#[test]
fn a_fork_answering_after_another_won_is_acked_and_hung_up() {
    let t0 = Instant::now();
    let (mut call, inv) = placed(&[phone(), laptop()], t0);
    call.on_callee_message(reply(&inv[0], 180, "t0", None), phone(), t0);
    call.on_callee_message(reply(&inv[1], 200, "t1", Some(17000)), laptop(), t0);
    let out = call.on_callee_message(reply(&inv[0], 200, "t0", Some(17100)), phone(), t0);
    assert_eq!(sends(&out), vec![(phone(), "ACK".into()), (phone(), "BYE".into())]);
    assert_eq!(sent(&out, "BYE").header("CSeq"), Some("2 BYE"));
    assert!(!out.iter().any(|a| matches!(a, Action::Answered { .. })));
}

#[test]
fn all_forks_failing_answer_the_caller_with_the_best_failure_and_a_q850_cause() {
    let t0 = Instant::now();
    let (mut call, inv) = placed(&[phone(), laptop()], t0);
    let out = call.on_callee_message(reply(&inv[0], 480, "t0", None), phone(), t0);
    assert!(out.is_empty(), "the laptop still rings");
    let out = call.on_callee_message(reply(&inv[1], 486, "t1", None), laptop(), t0);
    assert_eq!(sends(&out), vec![(carrier(), "486".into())]);
    assert_eq!(sent(&out, "486").header("Reason"), Some("Q.850;cause=17;text=\"User busy\""));
    assert!(out.contains(&Action::Ended { reason: EndReason::Busy, hangup_by: HangupBy::Callee, sip_status: 486 }));
}

#[test]
fn a_global_failure_from_one_fork_ends_the_call() {
    let t0 = Instant::now();
    let (mut call, inv) = placed(&[phone(), laptop()], t0);
    call.on_callee_message(reply(&inv[1], 180, "t1", None), laptop(), t0);
    let out = call.on_callee_message(reply(&inv[0], 603, "t0", None), phone(), t0);
    assert_eq!(sends(&out), vec![(laptop(), "CANCEL".into()), (carrier(), "603".into())]);
    assert!(out.contains(&Action::Ended { reason: EndReason::Busy, hangup_by: HangupBy::Callee, sip_status: 603 }));
}

#[test]
fn a_timed_out_fork_counts_as_unavailable() {
    let t0 = Instant::now();
    let (mut call, inv) = placed(&[phone()], t0);
    // The transaction layer reports Timer B as a 408.
    let out = call.on_callee_message(make_response(&inv[0], 408, None, ""), phone(), t0 + Duration::from_secs(32));
    assert_eq!(sends(&out), vec![(carrier(), "480".into())]);
    assert!(out.contains(&Action::Ended { reason: EndReason::NoAnswer, hangup_by: HangupBy::Callee, sip_status: 480 }));
}

#[test]
fn caller_cancel_while_ringing_cancels_every_fork() {
    let t0 = Instant::now();
    let (mut call, inv) = placed(&[phone(), laptop()], t0);
    call.on_callee_message(reply(&inv[0], 180, "t0", None), phone(), t0);
    call.on_callee_message(reply(&inv[1], 180, "t1", None), laptop(), t0);
    let out = call.on_caller_request(request_on_a("CANCEL", 1, None), carrier(), t0);
    assert_eq!(
        sends(&out),
        vec![(carrier(), "200".into()), (carrier(), "487".into()), (phone(), "CANCEL".into()), (laptop(), "CANCEL".into())]
    );
    assert!(out.contains(&Action::Ended { reason: EndReason::Cancelled, hangup_by: HangupBy::Caller, sip_status: 487 }));
}

#[test]
fn ring_timeout_cancels_and_answers_480() {
    let t0 = Instant::now();
    let (mut call, inv) = placed(&[phone()], t0);
    call.on_callee_message(reply(&inv[0], 180, "t0", None), phone(), t0);
    assert_eq!(call.next_deadline(), Some(t0 + Duration::from_secs(30)));
    let out = call.on_timer(t0 + Duration::from_secs(30));
    assert_eq!(sends(&out), vec![(phone(), "CANCEL".into()), (carrier(), "480".into())]);
    assert_eq!(sent(&out, "480").header("Reason"), Some("Q.850;cause=19;text=\"No answer from user\""));
    assert!(out.contains(&Action::Ended { reason: EndReason::NoAnswer, hangup_by: HangupBy::System, sip_status: 480 }));
}

#[test]
fn early_media_is_relayed_as_183_and_the_answer_keeps_the_same_sdp() {
    let t0 = Instant::now();
    let (mut call, inv) = placed(&[phone()], t0);
    let out = call.on_callee_message(reply(&inv[0], 183, "t0", Some(17000)), phone(), t0);
    assert_eq!(sends(&out), vec![(carrier(), "183".into())]);
    assert!(out.contains(&Action::EarlyMedia { callee_rtp: "127.0.0.1:17000".parse().unwrap() }));
    let early = sent(&out, "183").body.clone();
    assert_eq!(sdp::parse_audio(&early).unwrap().rtp.port(), 20000);
    let out = call.on_callee_message(reply(&inv[0], 200, "t0", Some(17000)), phone(), t0);
    assert_eq!(sent(&out, "200").body, early, "one answer per offer (RFC 3264)");
}

#[test]
fn the_2xx_to_the_caller_is_retransmitted_until_acked() {
    let t0 = Instant::now();
    let (mut call, inv) = placed(&[phone()], t0);
    let out = call.on_callee_message(reply(&inv[0], 200, "t0", Some(17000)), phone(), t0);
    let tag = a_tag(&out);
    assert_eq!(sends(&call.on_timer(t0 + T1)), vec![(carrier(), "200".into())]);
    assert_eq!(call.next_deadline(), Some(t0 + 3 * T1), "doubling: T1, then 2·T1");
    call.on_caller_request(request_on_a("ACK", 1, Some(&tag)), carrier(), t0 + 2 * T1);
    assert!(sends(&call.on_timer(t0 + 3 * T1)).is_empty());

    let out = call.on_caller_request(request_on_a("BYE", 2, Some(&tag)), carrier(), t0 + Duration::from_secs(10));
    assert_eq!(sends(&out), vec![(carrier(), "200".into()), (phone(), "BYE".into())]);
    assert_eq!(sent(&out, "BYE").header("Reason"), Some("Q.850;cause=16;text=\"Normal call clearing\""));
    assert!(out.contains(&Action::Ended { reason: EndReason::Completed, hangup_by: HangupBy::Caller, sip_status: 200 }));
    assert!(!call.is_finished(t0 + Duration::from_secs(11)));
    assert!(call.is_finished(t0 + Duration::from_secs(10) + LINGER));
}

#[test]
fn a_2xx_never_acked_ends_the_call_after_64_t1() {
    let t0 = Instant::now();
    let (mut call, inv) = placed(&[phone()], t0);
    call.on_callee_message(reply(&inv[0], 200, "t0", Some(17000)), phone(), t0);
    let mut now = t0;
    let mut out = Vec::new();
    while let Some(d) = call.next_deadline() {
        if d > t0 + Duration::from_secs(40) {
            break;
        }
        now = d;
        out = call.on_timer(now);
        if call.has_ended() {
            break;
        }
    }
    assert_eq!(now, t0 + T1 * 64);
    assert_eq!(sends(&out), vec![(carrier(), "BYE".into()), (phone(), "BYE".into())]);
    assert!(out.contains(&Action::Ended { reason: EndReason::Failed, hangup_by: HangupBy::System, sip_status: 408 }));
}

#[test]
fn callee_bye_hangs_up_the_caller_with_a_reason() {
    let t0 = Instant::now();
    let (mut call, inv) = placed(&[phone()], t0);
    call.on_callee_message(reply(&inv[0], 200, "t0", Some(17000)), phone(), t0);
    let out = call.on_callee_message(request_on_fork("BYE", &inv[0], 1, None), phone(), t0);
    assert_eq!(sends(&out), vec![(phone(), "200".into()), (carrier(), "BYE".into())]);
    let bye = sent(&out, "BYE");
    assert_eq!(bye.request_uri(), Some("sip:c@127.0.0.1:15060"), "BYE goes to the caller's Contact");
    assert_eq!(bye.header("CSeq"), Some("1 BYE"));
    assert!(bye.header("From").unwrap().contains(";tag="));
    assert_eq!(bye.header("Reason"), Some("Q.850;cause=16;text=\"Normal call clearing\""));
    assert!(out.contains(&Action::Ended { reason: EndReason::Completed, hangup_by: HangupBy::Callee, sip_status: 200 }));
}

#[test]
fn hold_from_the_phone_is_answered_locally_with_recvonly() {
    let t0 = Instant::now();
    let (mut call, inv) = placed(&[phone()], t0);
    call.on_callee_message(reply(&inv[0], 200, "t0", Some(17000)), phone(), t0);
    let hold = request_on_fork("INVITE", &inv[0], 2, Some(offer_sdp(17000, "sendonly")));
    let out = call.on_callee_message(hold, phone(), t0);
    assert_eq!(sends(&out), vec![(phone(), "200".into())], "the caller's leg is not touched");
    let answer = sdp::parse_audio(&sent(&out, "200").body).unwrap();
    assert_eq!(answer.direction, Direction::RecvOnly);
    assert_eq!(answer.rtp.port(), 20002);
    let resume = request_on_fork("INVITE", &inv[0], 3, Some(offer_sdp(17004, "sendrecv")));
    let out = call.on_callee_message(resume, phone(), t0);
    assert_eq!(sdp::parse_audio(&sent(&out, "200").body).unwrap().direction, Direction::SendRecv);
    assert!(out.contains(&Action::CalleeMedia { rtp: "127.0.0.1:17004".parse().unwrap() }));
    // An older CSeq is refused (§12.2.2).
    let stale = request_on_fork("INVITE", &inv[0], 2, Some(offer_sdp(17000, "sendrecv")));
    assert_eq!(sends(&call.on_callee_message(stale, phone(), t0)), vec![(phone(), "500".into())]);
}

#[test]
fn caller_update_and_reinvite_are_answered_locally() {
    let t0 = Instant::now();
    let (mut call, inv) = placed(&[phone()], t0);
    let out = call.on_callee_message(reply(&inv[0], 200, "t0", Some(17000)), phone(), t0);
    let tag = a_tag(&out);
    let mut update = request_on_a("UPDATE", 2, Some(&tag));
    update.set_body("application/sdp", offer_sdp(16100, "sendrecv"));
    let out = call.on_caller_request(update, carrier(), t0);
    assert_eq!(sends(&out), vec![(carrier(), "200".into())]);
    assert!(out.contains(&Action::CallerMedia { rtp: "127.0.0.1:16100".parse().unwrap() }));
    let mut reinvite = request_on_a("INVITE", 3, Some(&tag));
    reinvite.set_body("application/sdp", offer_sdp(16100, "inactive"));
    let out = call.on_caller_request(reinvite, carrier(), t0);
    assert_eq!(sdp::parse_audio(&sent(&out, "200").body).unwrap().direction, Direction::Inactive);
    assert!(sends(&out).iter().all(|(d, _)| *d == carrier()));
}

#[test]
fn a_trunk_challenge_is_answered_once_with_digest_credentials() {
    let t0 = Instant::now();
    let mut call = new_call();
    let mut target = Target::new("sip:+442071234567@trunk.example.com", carrier());
    target.credentials = Some(AuthCredentials { username: "acct".into(), password: "s3cret".into() });
    target.route = vec!["<sip:edge.trunk.example.com;lr>".into()];
    let out = call.place(vec![target], &caller(), media(), t0);
    let first = sent(&out, "INVITE").clone();
    assert_eq!(first.header("Route"), Some("<sip:edge.trunk.example.com;lr>"));
    let mut challenge = make_response(&first, 407, Some("tr"), "trunk");
    challenge.push_header("Proxy-Authenticate", "Digest realm=\"trunk.example.com\", nonce=\"n1\", qop=\"auth\", algorithm=MD5");
    let out = call.on_callee_message(challenge.clone(), carrier(), t0);
    let second = sent(&out, "INVITE");
    assert_eq!(second.header("CSeq"), Some("2 INVITE"));
    assert_ne!(second.header("Via"), first.header("Via"), "a new transaction");
    assert_eq!(second.header("Call-ID"), first.header("Call-ID"));
    let creds = Credentials::parse(second.header("Proxy-Authorization").unwrap()).unwrap();
    let h1 = ha1(creds.algorithm, "acct", "trunk.example.com", "s3cret");
    let expected = expected_response(
        creds.algorithm,
        &h1,
        "n1",
        "INVITE",
        &creds.uri,
        Some((creds.nc.as_deref().unwrap(), creds.cnonce.as_deref().unwrap())),
    );
    assert_eq!(creds.response, expected);
    // A second challenge means the credentials are wrong: the call fails.
    let mut again = make_response(second, 407, Some("tr"), "trunk");
    again.push_header("Proxy-Authenticate", "Digest realm=\"trunk.example.com\", nonce=\"n2\"");
    let out = call.on_callee_message(again, carrier(), t0);
    assert_eq!(sends(&out), vec![(carrier(), "503".into())]);
}

#[test]
fn presentation_sets_asserted_identity_and_privacy() {
    let t0 = Instant::now();
    let mut call = new_call();
    let who = Presentation {
        user: "+14155550100".into(),
        display: Some("Ada".into()),
        host: Some("trunk.example.com".into()),
        asserted: Some("<sip:+14155550100@trunk.example.com>".into()),
        private: true,
    };
    let out = call.place(vec![Target::new("sip:+442071234567@trunk.example.com", carrier())], &who, media(), t0);
    let inv = sent(&out, "INVITE");
    assert!(inv.header("From").unwrap().starts_with("\"Anonymous\" <sip:anonymous@anonymous.invalid>"));
    assert_eq!(inv.header("P-Asserted-Identity"), Some("<sip:+14155550100@trunk.example.com>"));
    assert_eq!(inv.header("Privacy"), Some("id"));
}

#[test]
fn invite_without_offer_is_refused() {
    let mut inv = invite();
    inv.body = Bytes::new();
    let err = Call::new("c".into(), inv, carrier(), local(), Timers::default(), Duration::from_secs(5)).unwrap_err();
    assert_eq!(err.code, 488);
}

#[test]
fn best_failure_prefers_global_then_busy() {
    assert_eq!(best_failure(&[480, 603, 486]), 603);
    assert_eq!(best_failure(&[480, 408, 486]), 486);
    assert_eq!(best_failure(&[480, 503]), 503);
    assert_eq!(best_failure(&[408, 480]), 408);
}

#[test]
fn hold_sends_a_reinvite_on_one_leg_and_acks_its_answer() {
    let t0 = Instant::now();
    let (mut call, inv) = placed(&[phone()], t0);
    call.on_callee_message(reply(&inv[0], 200, "t0", Some(17000)), phone(), t0);
    let out = call.hold(Leg::Callee, true, t0);
    assert_eq!(sends(&out), vec![(phone(), "INVITE".into())], "only the phone's leg");
    let reinv = sent(&out, "INVITE").clone();
    assert_eq!(reinv.header("CSeq"), Some("2 INVITE"));
    assert_eq!(sdp::parse_audio(&reinv.body).unwrap().direction, Direction::SendOnly);
    let ok = reply(&reinv, 200, "t0", Some(17000));
    let out = call.on_callee_message(ok.clone(), phone(), t0);
    assert_eq!(sends(&out), vec![(phone(), "ACK".into())]);
    assert_eq!(sent(&out, "ACK").header("CSeq"), Some("2 ACK"));
    assert_eq!(sends(&call.on_callee_message(ok, phone(), t0)), vec![(phone(), "ACK".into())], "a retransmitted 2xx is ACKed again");
}

#[test]
fn glare_is_answered_491_and_our_reinvite_retried_after_the_rfc_timer() {
    let t0 = Instant::now();
    let (mut call, inv) = placed(&[phone()], t0);
    let out = call.on_callee_message(reply(&inv[0], 200, "t0", Some(17000)), phone(), t0);
    call.on_caller_request(request_on_a("ACK", 1, Some(&a_tag(&out))), carrier(), t0);
    let ours = sent(&call.hold(Leg::Callee, true, t0), "INVITE").clone();
    // The phone's own re-INVITE crosses ours: 491 for it …
    let theirs = request_on_fork("INVITE", &inv[0], 2, Some(offer_sdp(17000, "sendonly")));
    assert_eq!(sends(&call.on_callee_message(theirs, phone(), t0)), vec![(phone(), "491".into())]);
    // … and the phone answers ours with 491 too.
    assert!(sends(&call.on_callee_message(reply(&ours, 491, "t0", None), phone(), t0)).is_empty());
    // The gateway owns the callee leg's Call-ID: it waits 2.1–4 s (§14.1).
    let retry = call.next_deadline().unwrap();
    assert!(retry >= t0 + Duration::from_millis(2100) && retry <= t0 + Duration::from_millis(4000), "{:?}", retry - t0);
    let out = call.on_timer(retry);
    let again = sent(&out, "INVITE");
    assert_eq!(again.header("CSeq"), Some("3 INVITE"));
    // Meanwhile the phone may re-INVITE again once ours is answered.
    call.on_callee_message(reply(again, 200, "t0", Some(17000)), phone(), retry);
    let later = request_on_fork("INVITE", &inv[0], 3, Some(offer_sdp(17000, "sendrecv")));
    assert_eq!(sends(&call.on_callee_message(later, phone(), retry)), vec![(phone(), "200".into())]);
}

#[test]
fn glare_on_the_caller_leg_retries_within_two_seconds() {
    let t0 = Instant::now();
    let (mut call, inv) = placed(&[phone()], t0);
    let out = call.on_callee_message(reply(&inv[0], 200, "t0", Some(17000)), phone(), t0);
    let tag = a_tag(&out);
    call.on_caller_request(request_on_a("ACK", 1, Some(&tag)), carrier(), t0);
    let ours = sent(&call.hold(Leg::Caller, true, t0), "INVITE").clone();
    assert_eq!(ours.request_uri(), Some("sip:c@127.0.0.1:15060"));
    let mut theirs = request_on_a("INVITE", 2, Some(&tag));
    theirs.set_body("application/sdp", offer_sdp(16000, "sendonly"));
    assert_eq!(sends(&call.on_caller_request(theirs, carrier(), t0)), vec![(carrier(), "491".into())]);
    let mut busy = make_response(&ours, 491, None, "carrier");
    busy.set_header("To", ours.header("To").unwrap());
    call.on_caller_response(busy, t0);
    let retry = call.next_deadline().unwrap();
    assert!(retry <= t0 + Duration::from_millis(2000), "not the Call-ID owner: 0–2 s");
}

fn fmt(pt: u8, encoding: &str, rate: u32) -> Format {
    Format { payload_type: pt, encoding: encoding.into(), clock_rate: rate, fmtp: None }
}

fn pts(formats: &[Format]) -> Vec<(u8, String, u32)> {
    formats.iter().map(|f| (f.payload_type, f.encoding.to_ascii_lowercase(), f.clock_rate)).collect()
}

#[test]
fn the_callee_is_offered_the_callers_codecs_first_then_the_gateways() {
    // A carrier offering A-law and G.729: G.729 is dropped, A-law kept first
    // under its number, then PCMU and Opus (transcoded) with their events.
    let caller = [fmt(8, "PCMA", 8000), fmt(18, "G729", 8000), fmt(101, "telephone-event", 8000)];
    let offer = super::callee_offer(&caller);
    assert_eq!(
        pts(&offer),
        [
            (8, "pcma".into(), 8000),
            (101, "telephone-event".into(), 8000),
            (0, "pcmu".into(), 8000),
            (96, "opus".into(), 48000),
            (102, "telephone-event".into(), 48000)
        ]
    );
    // Numbers the caller already uses are not reused.
    let caller = [fmt(0, "PCMU", 8000), fmt(96, "telephone-event", 8000), fmt(102, "AMR", 8000)];
    let offer = super::callee_offer(&caller);
    let opus = offer.iter().find(|f| f.encoding == "opus").unwrap();
    assert!(![0, 96, 8].contains(&opus.payload_type), "{offer:?}");
    let te48 = offer.iter().find(|f| f.encoding == "telephone-event" && f.clock_rate == 48000).unwrap();
    assert!(offer.iter().filter(|f| f.payload_type == te48.payload_type).count() == 1, "{offer:?}");
}

#[test]
fn the_caller_is_answered_with_one_codec_relayed_or_transcoded() {
    let caller = [fmt(8, "PCMA", 8000), fmt(0, "PCMU", 8000), fmt(101, "telephone-event", 8000)];
    // The callee took PCMU: both legs on PCMU, relayed untouched.
    let answer = super::answer_formats(&caller, &[fmt(0, "PCMU", 8000), fmt(101, "telephone-event", 8000)]);
    assert_eq!(pts(&answer), [(0, "pcmu".into(), 8000), (101, "telephone-event".into(), 8000)]);
    // The callee took Opus, which the caller did not offer: the caller gets
    // its own first codec and the gateway transcodes.
    let answer = super::answer_formats(&caller, &[fmt(111, "opus", 48000), fmt(110, "telephone-event", 48000)]);
    assert_eq!(pts(&answer), [(8, "pcma".into(), 8000), (101, "telephone-event".into(), 8000)]);
}

#[test]
fn the_agent_declines_a_ringing_call_603_or_to_voicemail() {
    let t0 = Instant::now();
    let (mut call, inv) = placed(&[phone()], t0);
    call.on_callee_message(reply(&inv[0], 180, "t0", None), phone(), t0);
    assert!(call.is_ringing());
    let out = call.decline(t0);
    assert_eq!(sends(&out), vec![(phone(), "CANCEL".into()), (carrier(), "603".into())]);
    assert_eq!(sent(&out, "CANCEL").header("Reason"), Some("SIP;cause=603;text=\"Declined\""));
    assert!(out.contains(&Action::Ended { reason: EndReason::Busy, hangup_by: HangupBy::Callee, sip_status: 603 }));
    assert!(call.decline(t0).is_empty(), "once over, a second decline does nothing");

    let (mut call, inv) = placed(&[phone()], t0);
    call.set_voicemail(true);
    call.on_callee_message(reply(&inv[0], 180, "t0", None), phone(), t0);
    let out = call.decline(t0);
    assert_eq!(sends(&out), vec![(phone(), "CANCEL".into()), (carrier(), "200".into())], "the gateway answers for the voicemail");
    assert!(out.contains(&Action::Voicemail));
    assert!(call.in_voicemail() && !call.is_ringing());
    assert!(call.decline(t0).is_empty());

    let (mut call, inv) = placed(&[phone()], t0);
    call.on_callee_message(reply(&inv[0], 200, "t0", Some(17000)), phone(), t0);
    assert!(call.decline(t0).is_empty(), "an answered call is not declined");
}

// ---- leg replacement (decision 0014) ----

const DESK: &str = "127.0.0.1:15094";
const CELL: &str = "127.0.0.1:15096";

fn desk() -> Destination {
    Destination::Udp(DESK.parse().unwrap())
}

fn cell() -> Destination {
    Destination::Udp(CELL.parse().unwrap())
}

/// The INVITEs an action list sends, in order.
fn invites(actions: &[Action]) -> Vec<SipMessage> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send(_, m) if m.method() == Some("INVITE") => Some(m.clone()),
            _ => None,
        })
        .collect()
}

/// An inbound call answered by the phone, its 2xx ACKed; answers the call,
/// the phone's fork INVITE and leg A's To tag.
fn answered_by_phone(t0: Instant) -> (Call, SipMessage, String) {
    let (mut call, inv) = placed(&[phone()], t0);
    let out = call.on_callee_message(reply(&inv[0], 200, "t0", Some(17000)), phone(), t0);
    let tag = a_tag(&out);
    call.on_caller_request(request_on_a("ACK", 1, Some(&tag)), carrier(), t0);
    (call, inv[0].clone(), tag)
}

#[test]
fn replacing_the_callee_rings_the_new_targets_and_the_first_answer_takes_the_leg() {
    let t0 = Instant::now();
    let (mut call, phone_inv, _) = answered_by_phone(t0);
    let targets = vec![Target::new(format!("sip:agent@{DESK}"), desk()), Target::new(format!("sip:agent@{CELL}"), cell())];
    let out = call.replace(Leg::Callee, targets, &caller(), t0).unwrap();
    assert_eq!(sends(&out), vec![(desk(), "INVITE".into()), (cell(), "INVITE".into())], "nothing towards the carrier or the phone");
    let new = invites(&out);
    assert_eq!(sdp::parse_audio(&new[0].body).unwrap().rtp.port(), 20002, "the new party gets the callee side's port");
    assert_ne!(new[0].header("Call-ID"), phone_inv.header("Call-ID"), "a new dialog");
    assert_eq!(call.replacing(), Some(Leg::Callee));
    assert_eq!(call.replace(Leg::Callee, vec![Target::new("sip:x@127.0.0.1", desk())], &caller(), t0), Err(ReplaceError::InProgress(Leg::Callee)));

    // Ringing changes nothing for the caller.
    assert!(sends(&call.on_callee_message(reply(&new[0], 180, "d0", None), desk(), t0)).is_empty());
    assert!(sends(&call.on_callee_message(reply(&new[1], 180, "c0", None), cell(), t0)).is_empty());
    // The call still works meanwhile: the phone's INFO is a digit of the callee.
    let info = {
        let mut m = request_on_fork("INFO", &phone_inv, 2, None);
        m.set_body("application/dtmf-relay", "Signal=5\r\nDuration=160\r\n");
        m
    };
    assert!(call.on_callee_message(info, phone(), t0).iter().any(|a| matches!(a, Action::Dtmf { leg: Leg::Callee, digit: '5', .. })));

    let out = call.on_callee_message(reply(&new[1], 200, "c0", Some(17200)), cell(), t0);
    assert_eq!(sends(&out), vec![(cell(), "ACK".into()), (desk(), "CANCEL".into()), (phone(), "BYE".into())], "no message to the carrier");
    let replaced = out.iter().position(|a| matches!(a, Action::Replaced { .. })).unwrap();
    assert_eq!(out[replaced], Action::Replaced { leg: Leg::Callee, fork: 2, rtp: "127.0.0.1:17200".parse().unwrap() });
    let bye = out.iter().position(|a| matches!(a, Action::Send(_, m) if m.method() == Some("BYE"))).unwrap();
    assert!(replaced < bye, "media re-pointed before the old phone is hung up");
    assert!(matches!(&out[replaced - 1], Action::LegFormats { leg: Leg::Callee, .. }));
    assert_eq!(sent(&out, "BYE").header("Call-ID"), phone_inv.header("Call-ID"));
    assert_eq!(call.replacing(), None);

    // The old phone's late messages are its own: 200 to its BYE, nothing else.
    let late_bye = request_on_fork("BYE", &phone_inv, 3, None);
    assert_eq!(sends(&call.on_callee_message(late_bye, phone(), t0)), vec![(phone(), "200".into())]);
    assert!(call.is_answered());
    // The new party is the callee now: its hold and its BYE.
    let hold = request_on_fork("INVITE", &new[1], 2, Some(offer_sdp(17200, "sendonly")));
    let out = call.on_callee_message(hold, cell(), t0);
    assert!(out.contains(&Action::PeerHold { leg: Leg::Callee, on: true }));
    assert_eq!(sdp::parse_audio(&sent(&out, "200").body).unwrap().rtp.port(), 20002);
    let out = call.hold(Leg::Callee, true, t0);
    assert_eq!(sends(&out), vec![(cell(), "INVITE".into())], "the gateway's hold goes to the new party");
    let out = call.on_callee_message(request_on_fork("BYE", &new[1], 3, None), cell(), t0);
    assert_eq!(sends(&out), vec![(cell(), "200".into()), (carrier(), "BYE".into())]);
    assert!(out.contains(&Action::Ended { reason: EndReason::Completed, hangup_by: HangupBy::Callee, sip_status: 200 }));
}

#[test]
fn a_failed_replacement_leaves_the_call_as_it_was() {
    let t0 = Instant::now();
    let (mut call, phone_inv, _) = answered_by_phone(t0);
    let out = call.replace(Leg::Callee, vec![Target::new(format!("sip:agent@{DESK}"), desk())], &caller(), t0).unwrap();
    let new = invites(&out);
    let out = call.on_callee_message(reply(&new[0], 486, "d0", None), desk(), t0);
    assert_eq!(out, vec![Action::ReplaceFailed { leg: Leg::Callee, status: 486 }], "nothing sent to anyone");
    assert!(call.is_answered() && call.replacing().is_none());
    // The phone is still the callee.
    let out = call.on_callee_message(request_on_fork("BYE", &phone_inv, 2, None), phone(), t0);
    assert_eq!(sends(&out), vec![(phone(), "200".into()), (carrier(), "BYE".into())]);
}

#[test]
fn a_replacement_nobody_answers_is_cancelled_after_the_ring_timeout() {
    let t0 = Instant::now();
    let (mut call, _, _) = answered_by_phone(t0);
    let out = call.replace(Leg::Callee, vec![Target::new(format!("sip:agent@{DESK}"), desk())], &caller(), t0).unwrap();
    let new = invites(&out);
    call.on_callee_message(reply(&new[0], 180, "d0", None), desk(), t0);
    let due = t0 + Duration::from_secs(30);
    assert_eq!(call.next_deadline(), Some(due));
    let out = call.on_timer(due);
    assert_eq!(sends(&out), vec![(desk(), "CANCEL".into())]);
    assert!(out.contains(&Action::ReplaceFailed { leg: Leg::Callee, status: 480 }));
    assert!(call.is_answered(), "the call goes on");
    // A late answer from the cancelled target is hung up.
    let out = call.on_callee_message(reply(&new[0], 200, "d0", Some(17300)), desk(), due);
    assert_eq!(sends(&out), vec![(desk(), "ACK".into()), (desk(), "BYE".into())]);
    assert!(!out.iter().any(|a| matches!(a, Action::Replaced { .. })));
}

#[test]
fn a_replacement_is_cancelled_on_request_and_when_the_call_ends() {
    let t0 = Instant::now();
    let (mut call, _, tag) = answered_by_phone(t0);
    let out = call.replace(Leg::Callee, vec![Target::new(format!("sip:agent@{DESK}"), desk())], &caller(), t0).unwrap();
    let new = invites(&out);
    call.on_callee_message(reply(&new[0], 180, "d0", None), desk(), t0);
    let out = call.cancel_replacement(t0);
    assert_eq!(sends(&out), vec![(desk(), "CANCEL".into())]);
    assert!(out.contains(&Action::ReplaceFailed { leg: Leg::Callee, status: 487 }));
    assert!(call.cancel_replacement(t0).is_empty(), "nothing left to cancel");

    let out = call.replace(Leg::Callee, vec![Target::new(format!("sip:agent@{CELL}"), cell())], &caller(), t0).unwrap();
    let new = invites(&out);
    call.on_callee_message(reply(&new[0], 180, "c0", None), cell(), t0);
    let out = call.on_caller_request(request_on_a("BYE", 2, Some(&tag)), carrier(), t0);
    assert_eq!(sends(&out), vec![(carrier(), "200".into()), (phone(), "BYE".into()), (cell(), "CANCEL".into())]);
    let failed = out.iter().position(|a| matches!(a, Action::ReplaceFailed { status: 487, .. })).unwrap();
    let ended = out.iter().position(|a| matches!(a, Action::Ended { .. })).unwrap();
    assert!(failed < ended, "the replacement is reported over before the call");
}

#[test]
fn only_an_answered_call_can_have_a_leg_replaced() {
    let t0 = Instant::now();
    let (mut call, inv) = placed(&[phone()], t0);
    call.on_callee_message(reply(&inv[0], 180, "t0", None), phone(), t0);
    let target = || vec![Target::new(format!("sip:agent@{DESK}"), desk())];
    assert_eq!(call.replace(Leg::Callee, target(), &caller(), t0), Err(ReplaceError::NotAnswered));
    call.on_callee_message(reply(&inv[0], 200, "t0", Some(17000)), phone(), t0);
    assert_eq!(call.replace(Leg::Callee, Vec::new(), &caller(), t0), Err(ReplaceError::NoTargets));
    call.terminate(t0);
    assert_eq!(call.replace(Leg::Callee, target(), &caller(), t0), Err(ReplaceError::NotAnswered));
}

/// An agent's outbound call: leg A is the agent's phone (here at the
/// carrier's test address), the fork is the far end. Moving the agent's
/// side makes a UAC dialog carry leg A.
#[test]
fn replacing_the_caller_side_moves_leg_a_to_a_new_uac_dialog() {
    let t0 = Instant::now();
    let (mut call, far_inv, tag) = answered_by_phone(t0);
    let out = call.replace(Leg::Caller, vec![Target::new(format!("sip:agent@{DESK}"), desk())], &caller(), t0).unwrap();
    let new = invites(&out);
    assert_eq!(sdp::parse_audio(&new[0].body).unwrap().rtp.port(), 20000, "the new party gets leg A's port");
    let out = call.on_callee_message(reply(&new[0], 200, "d0", Some(17400)), desk(), t0);
    assert_eq!(sends(&out), vec![(desk(), "ACK".into()), (carrier(), "BYE".into())], "the far end hears nothing");
    assert!(out.contains(&Action::Replaced { leg: Leg::Caller, fork: 1, rtp: "127.0.0.1:17400".parse().unwrap() }));
    let bye = sent(&out, "BYE");
    assert_eq!(bye.header("Call-ID"), Some("carrier-1"), "the replaced dialog is the one hung up");
    assert_eq!(bye.header("Reason"), Some("Q.850;cause=16;text=\"Call transferred\""));

    // The old dialog is gone: its BYE is confirmed, anything else is 481,
    // and neither touches the call.
    let out = call.on_caller_request(request_on_a("BYE", 2, Some(&tag)), carrier(), t0);
    assert_eq!(sends(&out), vec![(carrier(), "200".into())]);
    let out = call.on_caller_request(request_on_a("INFO", 3, Some(&tag)), carrier(), t0);
    assert_eq!(sends(&out), vec![(carrier(), "481".into())]);
    assert!(call.is_answered());

    // The new dialog is leg A: its re-INVITE, its digits, the gateway's hold.
    let reinvite = request_on_fork("INVITE", &new[0], 2, Some(offer_sdp(17500, "sendrecv")));
    let out = call.on_callee_message(reinvite, desk(), t0);
    assert!(out.contains(&Action::CallerMedia { rtp: "127.0.0.1:17500".parse().unwrap() }));
    assert!(out.contains(&Action::PeerHold { leg: Leg::Caller, on: false }));
    assert_eq!(sdp::parse_audio(&sent(&out, "200").body).unwrap().rtp.port(), 20000, "answered on leg A's port");
    let mut info = request_on_fork("INFO", &new[0], 3, None);
    info.set_body("application/dtmf-relay", "Signal=#\r\nDuration=160\r\n");
    assert!(call.on_callee_message(info, desk(), t0).iter().any(|a| matches!(a, Action::Dtmf { leg: Leg::Caller, digit: '#', .. })));
    let out = call.hold(Leg::Caller, true, t0);
    assert_eq!(sends(&out), vec![(desk(), "INVITE".into())]);
    let ours = sent(&out, "INVITE").clone();
    assert_eq!(sdp::parse_audio(&ours.body).unwrap().rtp.port(), 20000);
    let out = call.on_callee_message(reply(&ours, 200, "d0", Some(17500)), desk(), t0);
    assert_eq!(sends(&out), vec![(desk(), "ACK".into())]);

    // Its BYE ends the call: the far end gets the BYE, the caller side hung up.
    let out = call.on_callee_message(request_on_fork("BYE", &new[0], 4, None), desk(), t0);
    assert_eq!(sends(&out), vec![(desk(), "200".into()), (phone(), "BYE".into())]);
    assert!(out.contains(&Action::Ended { reason: EndReason::Completed, hangup_by: HangupBy::Caller, sip_status: 200 }));
    let _ = far_inv;
}

#[test]
fn a_replaced_caller_side_is_hung_up_by_the_gateway_with_the_call() {
    let t0 = Instant::now();
    let (mut call, _, _) = answered_by_phone(t0);
    let out = call.replace(Leg::Caller, vec![Target::new(format!("sip:agent@{DESK}"), desk())], &caller(), t0).unwrap();
    let new = invites(&out);
    call.on_callee_message(reply(&new[0], 200, "d0", Some(17400)), desk(), t0);
    // Twice in a row: the caller side can be replaced again (a fork by a fork).
    let out = call.replace(Leg::Caller, vec![Target::new(format!("sip:agent@{CELL}"), cell())], &caller(), t0).unwrap();
    let again = invites(&out);
    let out = call.on_callee_message(reply(&again[0], 200, "c0", Some(17600)), cell(), t0);
    assert_eq!(sends(&out), vec![(cell(), "ACK".into()), (desk(), "BYE".into())]);
    let out = call.hang_up(t0);
    assert_eq!(sends(&out), vec![(cell(), "BYE".into()), (phone(), "BYE".into())]);
    assert!(out.contains(&Action::Ended { reason: EndReason::Completed, hangup_by: HangupBy::System, sip_status: 200 }));
}

// ---- warm transfer: consulting the target on the consultation's ports ----

const CONSULT: ConsultPorts = ConsultPorts { agent_port: 21000, target_port: 21002 };

fn sdp_port(m: &SipMessage) -> u16 {
    sdp::parse_audio(&m.body).unwrap().rtp.port()
}

/// A consultation of the desk by the phone (the agent, callee side) of an
/// answered inbound call, its re-INVITE answered; answers the call, the
/// phone's INVITE, the desk's INVITE and leg A's tag.
fn consulting_desk(t0: Instant) -> (Call, SipMessage, SipMessage, String) {
    let (mut call, phone_inv, tag) = answered_by_phone(t0);
    let out = call.consult(Leg::Callee, vec![Target::new(format!("sip:agent@{DESK}"), desk())], &caller(), CONSULT, t0).unwrap();
    let desk_inv = invites(&out).remove(0);
    assert_eq!(sdp_port(&desk_inv), 21002, "the target is offered the consultation's port");
    assert!(!call.consulting());
    let out = call.on_callee_message(reply(&desk_inv, 200, "d0", Some(17300)), desk(), t0);
    assert_eq!(sends(&out), vec![(desk(), "ACK".into()), (phone(), "INVITE".into())], "nothing towards the carrier");
    let consulting = out.iter().find(|a| matches!(a, Action::Consulting { .. })).unwrap();
    let Action::Consulting { leg, agent, target } = consulting else { unreachable!() };
    assert_eq!(*leg, Leg::Callee);
    assert_eq!((agent.rtp, target.rtp), ("127.0.0.1:17000".parse().unwrap(), "127.0.0.1:17300".parse().unwrap()));
    assert_eq!(agent.formats[0].encoding, "PCMA", "the agent's codec as its leg uses it");
    let reanchor = sent(&out, "INVITE").clone();
    assert_eq!(sdp_port(&reanchor), 21000, "the agent is moved to the consultation's port");
    assert_eq!(sends(&call.on_callee_message(reply(&reanchor, 200, "t0", Some(17000)), phone(), t0)), vec![(phone(), "ACK".into())]);
    assert!(call.consulting() && call.is_answered());
    (call, phone_inv, desk_inv, tag)
}

#[test]
fn a_warm_transfer_consults_the_target_on_its_own_ports_then_hands_it_the_leg() {
    let t0 = Instant::now();
    let (mut call, phone_inv, desk_inv, _) = consulting_desk(t0);
    // No ring timeout once the target answered: the consultation lasts.
    assert!(call.on_timer(t0 + Duration::from_secs(60)).iter().all(|a| !matches!(a, Action::ReplaceFailed { .. })));
    // The agent's phone answers a re-offer on the consultation's port.
    let reoffer = request_on_fork("INVITE", &phone_inv, 2, Some(offer_sdp(17000, "sendrecv")));
    assert_eq!(sdp_port(sent(&call.on_callee_message(reoffer, phone(), t0), "200")), 21000);

    let out = call.complete_consult(t0).unwrap();
    assert_eq!(sends(&out), vec![(desk(), "INVITE".into()), (phone(), "BYE".into())], "nothing towards the carrier");
    assert_eq!(sdp_port(sent(&out, "INVITE")), 20002, "the target moves onto the callee side's port");
    let replaced = out.iter().position(|a| matches!(a, Action::Replaced { .. })).unwrap();
    assert_eq!(out[replaced], Action::Replaced { leg: Leg::Callee, fork: 1, rtp: "127.0.0.1:17300".parse().unwrap() });
    assert!(out.contains(&Action::ConsultEnded));
    assert!(!call.consulting());
    assert_eq!(call.complete_consult(t0), Err(ReplaceError::NotConsulting));
    // The desk is the callee now: its BYE ends the call.
    let out = call.on_callee_message(request_on_fork("BYE", &desk_inv, 2, None), desk(), t0);
    assert_eq!(sends(&out), vec![(desk(), "200".into()), (carrier(), "BYE".into())]);
    assert!(out.contains(&Action::Ended { reason: EndReason::Completed, hangup_by: HangupBy::Callee, sip_status: 200 }));
}

#[test]
fn a_consultation_cancelled_or_left_by_the_target_takes_the_agent_back() {
    let t0 = Instant::now();
    let (mut call, phone_inv, _, _) = consulting_desk(t0);
    let out = call.cancel_replacement(t0);
    assert_eq!(sends(&out), vec![(desk(), "BYE".into()), (phone(), "INVITE".into())]);
    assert_eq!(sdp_port(sent(&out, "INVITE")), 20002, "the agent goes back to its own port");
    assert!(out.contains(&Action::ConsultEnded) && out.contains(&Action::ReplaceFailed { leg: Leg::Callee, status: 487 }));
    let back = sent(&out, "INVITE").clone();
    call.on_callee_message(reply(&back, 200, "t0", Some(17000)), phone(), t0);

    // Again, and this time the target hangs up by itself.
    let out = call.consult(Leg::Callee, vec![Target::new(format!("sip:agent@{CELL}"), cell())], &caller(), CONSULT, t0).unwrap();
    let cell_inv = invites(&out).remove(0);
    let out = call.on_callee_message(reply(&cell_inv, 200, "c0", Some(17600)), cell(), t0);
    let reanchor = sent(&out, "INVITE").clone();
    call.on_callee_message(reply(&reanchor, 200, "t0", Some(17000)), phone(), t0);
    let out = call.on_callee_message(request_on_fork("BYE", &cell_inv, 1, None), cell(), t0);
    assert_eq!(sends(&out), vec![(cell(), "200".into()), (phone(), "INVITE".into())]);
    assert!(out.contains(&Action::ConsultEnded) && out.contains(&Action::ReplaceFailed { leg: Leg::Callee, status: 200 }));
    assert!(call.is_answered() && !call.consulting());
    // The phone is still the callee.
    let _ = phone_inv;
}

#[test]
fn the_agent_hanging_up_while_consulting_hands_the_call_over_and_the_caller_ending_it_ends_all() {
    let t0 = Instant::now();
    let (mut call, phone_inv, desk_inv, tag) = consulting_desk(t0);
    let out = call.on_callee_message(request_on_fork("BYE", &phone_inv, 2, None), phone(), t0);
    assert_eq!(sends(&out), vec![(phone(), "200".into()), (desk(), "INVITE".into())], "no BYE to the carrier, none back to the phone");
    assert!(out.contains(&Action::Replaced { leg: Leg::Callee, fork: 1, rtp: "127.0.0.1:17300".parse().unwrap() }));
    assert!(call.is_answered());
    let moved = sent(&out, "INVITE").clone();
    call.on_callee_message(reply(&moved, 200, "d0", Some(17300)), desk(), t0);
    let out = call.on_caller_request(request_on_a("BYE", 2, Some(&tag)), carrier(), t0);
    assert_eq!(sends(&out), vec![(carrier(), "200".into()), (desk(), "BYE".into())]);
    let _ = desk_inv;

    // The customer hangs up while the agent consults: everyone is hung up.
    let (mut call, _, _, tag) = consulting_desk(t0);
    let out = call.on_caller_request(request_on_a("BYE", 2, Some(&tag)), carrier(), t0);
    assert_eq!(sends(&out), vec![(carrier(), "200".into()), (phone(), "BYE".into()), (desk(), "BYE".into())]);
    let ended = out.iter().position(|a| matches!(a, Action::Ended { .. })).unwrap();
    let over = out.iter().position(|a| *a == Action::ConsultEnded).unwrap();
    assert!(over < ended && out.contains(&Action::ReplaceFailed { leg: Leg::Callee, status: 487 }));
}

// ---- park (F4): a leg left empty, then given a party ----

#[test]
fn a_parked_leg_is_hung_up_and_a_retrieval_gives_it_a_new_party() {
    let t0 = Instant::now();
    let (mut call, phone_inv, tag) = answered_by_phone(t0);
    let out = call.park(Leg::Callee, t0).unwrap();
    assert_eq!(sends(&out), vec![(phone(), "BYE".into())], "the agent's phone is hung up, the carrier hears nothing");
    assert_eq!(sent(&out, "BYE").header("Reason"), Some("Q.850;cause=16;text=\"Call parked\""));
    assert_eq!(call.parked(), Some(Leg::Callee));
    assert!(call.is_answered());
    assert_eq!(call.park(Leg::Callee, t0), Err(ReplaceError::Parked));
    assert!(call.hold(Leg::Callee, true, t0).is_empty(), "nobody to hold on the parked side");
    // The parked phone's crossing BYE changes nothing.
    let out = call.on_callee_message(request_on_fork("BYE", &phone_inv, 2, None), phone(), t0);
    assert_eq!(sends(&out), vec![(phone(), "200".into())]);
    assert!(call.is_answered());
    // Only the parked side can be given a party, and not by consulting.
    let target = || vec![Target::new(format!("sip:agent@{DESK}"), desk())];
    assert_eq!(call.replace(Leg::Caller, target(), &caller(), t0), Err(ReplaceError::Parked));
    assert_eq!(call.consult(Leg::Callee, target(), &caller(), CONSULT, t0), Err(ReplaceError::Parked));

    // A retrieval nobody answers leaves the call parked.
    let out = call.replace(Leg::Callee, target(), &caller(), t0).unwrap();
    let first = invites(&out).remove(0);
    assert!(call.on_callee_message(reply(&first, 480, "d0", None), desk(), t0).contains(&Action::ReplaceFailed { leg: Leg::Callee, status: 480 }));
    assert_eq!(call.parked(), Some(Leg::Callee));
    // One that is answered takes the leg; nobody is hung up.
    let out = call.replace(Leg::Callee, vec![Target::new(format!("sip:agent@{CELL}"), cell())], &caller(), t0).unwrap();
    let retrieve = invites(&out).remove(0);
    assert_eq!(sdp_port(&retrieve), 20002);
    let out = call.on_callee_message(reply(&retrieve, 200, "c0", Some(17600)), cell(), t0);
    assert_eq!(sends(&out), vec![(cell(), "ACK".into())]);
    assert!(out.contains(&Action::Replaced { leg: Leg::Callee, fork: 2, rtp: "127.0.0.1:17600".parse().unwrap() }));
    assert_eq!(call.parked(), None);
    // The caller's BYE now reaches the retriever.
    let out = call.on_caller_request(request_on_a("BYE", 2, Some(&tag)), carrier(), t0);
    assert_eq!(sends(&out), vec![(carrier(), "200".into()), (cell(), "BYE".into())]);
}

#[test]
fn a_parked_caller_side_is_released_and_the_far_end_ending_the_call_hangs_up_nobody_else() {
    let t0 = Instant::now();
    let (mut call, phone_inv, tag) = answered_by_phone(t0);
    // An outbound call: the agent is leg A (here at the carrier's address).
    let out = call.park(Leg::Caller, t0).unwrap();
    assert_eq!(sends(&out), vec![(carrier(), "BYE".into())]);
    let out = call.on_caller_request(request_on_a("INFO", 2, Some(&tag)), carrier(), t0);
    assert_eq!(sends(&out), vec![(carrier(), "481".into())], "the parked dialog is gone");
    // The far end hangs up while parked: nothing to BYE on the parked side.
    let out = call.on_callee_message(request_on_fork("BYE", &phone_inv, 2, None), phone(), t0);
    assert_eq!(sends(&out), vec![(phone(), "200".into())]);
    assert!(out.contains(&Action::Ended { reason: EndReason::Completed, hangup_by: HangupBy::Callee, sip_status: 200 }));
}

// ---- calls the gateway originates (click-to-dial, F3) ----

fn trunk() -> Destination {
    Destination::Udp("127.0.0.1:15070".parse().unwrap())
}

/// An originated call ringing the agent's desk and cell phones (with the
/// auto-answer hints); returns their INVITEs.
fn originated(t0: Instant) -> (Call, Vec<SipMessage>) {
    let mut call = Call::originate("call-9".into(), local(), Timers::default(), Duration::from_secs(30));
    let targets = [desk(), cell()].iter().map(|d| Target::new(format!("sip:agent@{}", d.addr()), *d).auto_answer("127.0.0.1")).collect();
    let who = Presentation { user: "+442071234567".into(), display: Some("Call to +442071234567".into()), ..Presentation::default() };
    let out = call.ring_agent(targets, &who, media(), t0);
    let inv = invites(&out);
    assert_eq!(inv.len(), 2);
    (call, inv)
}

fn far_end() -> Vec<Target> {
    vec![Target::new("sip:+442071234567@127.0.0.1:15070", trunk())]
}

#[test]
fn an_originated_call_rings_the_agent_first_with_auto_answer_hints_then_the_far_end() {
    let t0 = Instant::now();
    let (mut call, inv) = originated(t0);
    assert!(call.is_originated() && call.agent_ringing() && call.is_ringing());
    assert!(call.trying().is_none(), "no caller's INVITE to answer");
    assert_eq!(inv[0].header("Call-Info"), Some("<sip:127.0.0.1>;answer-after=0"));
    assert_eq!(inv[0].header("Alert-Info"), Some("<http://127.0.0.1/>;info=alert-autoanswer"));
    assert_eq!(sdp_port(&inv[0]), 20000, "the agent is offered leg A's port");
    assert_eq!(call.caller_call_id(), inv[0].header("Call-ID").unwrap());
    // The agent's phone ringing is not the call ringing: nothing is reported.
    let out = call.on_callee_message(reply(&inv[0], 180, "d", None), desk(), t0);
    assert!(out.is_empty(), "{out:?}");

    let out = call.on_callee_message(reply(&inv[1], 200, "c", Some(17000)), cell(), t0);
    assert_eq!(sends(&out), vec![(cell(), "ACK".into()), (desk(), "CANCEL".into())]);
    let rtp: SocketAddr = "127.0.0.1:17000".parse().unwrap();
    let at = out.iter().position(|a| *a == Action::AgentAnswered { fork: 1, rtp }).expect("the agent answered");
    assert!(matches!(&out[at + 1], Action::LegFormats { leg: Leg::Caller, formats, .. } if formats[0].payload_type == 8), "{out:?}");
    assert!(!out.iter().any(|a| matches!(a, Action::Answered { .. } | Action::Ringing)), "the call is not answered yet");
    assert!(!call.agent_ringing());

    // Now the far end, as if the phone had dialled it; offered the agent's codec first.
    let out = call.place(far_end(), &caller(), media(), t0);
    let far = invites(&out);
    assert_eq!(far.len(), 1);
    assert_eq!(far[0].header("Call-Info"), None, "no hints towards the far end");
    assert_eq!(sdp_port(&far[0]), 20002);
    assert_eq!(sdp::parse_audio(&far[0].body).unwrap().formats[0].payload_type, 8);
    let out = call.on_callee_message(reply(&far[0], 180, "f", None), trunk(), t0);
    assert_eq!(out, vec![Action::Ringing], "ringing reported, no SIP towards the agent");
    let out = call.on_callee_message(reply(&far[0], 200, "f", Some(18000)), trunk(), t0);
    assert_eq!(sends(&out), vec![(trunk(), "ACK".into())], "the agent's phone hears nothing of it in SIP");
    assert!(out.contains(&Action::Answered { fork: 2, callee_rtp: "127.0.0.1:18000".parse().unwrap() }));
    assert!(!out.iter().any(|a| matches!(a, Action::LegFormats { leg: Leg::Caller, .. })), "the agent keeps its codec");
    assert!(call.is_answered());

    // An ordinary call afterwards: hold goes to the agent's fork, BYE from it ends the call.
    let out = call.hold(Leg::Caller, true, t0);
    assert_eq!(sends(&out), vec![(cell(), "INVITE".into())]);
    let out = call.on_callee_message(request_on_fork("BYE", &inv[1], 2, None), cell(), t0);
    assert_eq!(sends(&out), vec![(cell(), "200".into()), (trunk(), "BYE".into())]);
    assert!(out.contains(&Action::Ended { reason: EndReason::Completed, hangup_by: HangupBy::Caller, sip_status: 200 }));
}

#[test]
fn an_originated_call_nobody_answers_ends_before_the_far_end_is_called() {
    let t0 = Instant::now();
    let (mut call, inv) = originated(t0);
    call.on_callee_message(reply(&inv[0], 180, "d", None), desk(), t0);
    call.on_callee_message(reply(&inv[1], 180, "c", None), cell(), t0);
    let deadline = call.next_deadline().unwrap();
    assert_eq!(deadline, t0 + Duration::from_secs(30));
    let out = call.on_timer(deadline);
    assert_eq!(sends(&out), vec![(desk(), "CANCEL".into()), (cell(), "CANCEL".into())]);
    assert!(out.contains(&Action::Ended { reason: EndReason::NoAnswer, hangup_by: HangupBy::System, sip_status: 480 }));
    assert!(call.place(far_end(), &caller(), media(), deadline).is_empty(), "the far end is never called");
}

#[test]
fn the_agents_phone_declining_its_own_call_cancels_it() {
    let t0 = Instant::now();
    let (mut call, inv) = originated(t0);
    call.on_callee_message(reply(&inv[1], 180, "c", None), cell(), t0);
    assert!(call.on_callee_message(reply(&inv[0], 486, "d", None), desk(), t0).iter().all(|a| !matches!(a, Action::Ended { .. })), "the cell still rings");
    let out = call.on_callee_message(reply(&inv[1], 603, "c", None), cell(), t0);
    assert!(out.contains(&Action::Ended { reason: EndReason::Cancelled, hangup_by: HangupBy::Caller, sip_status: 603 }), "{out:?}");
}

#[test]
fn the_far_end_failing_hangs_up_the_agents_phone_with_the_cause() {
    let t0 = Instant::now();
    let (mut call, inv) = originated(t0);
    call.on_callee_message(reply(&inv[0], 200, "d", Some(17000)), desk(), t0);
    let far = invites(&call.place(far_end(), &caller(), media(), t0));
    // The cancelled cell answering 487 changes nothing.
    assert!(call.on_callee_message(reply(&inv[1], 487, "c", None), cell(), t0).iter().all(|a| !matches!(a, Action::Ended { .. })));
    let out = call.on_callee_message(reply(&far[0], 486, "f", None), trunk(), t0);
    assert_eq!(sends(&out), vec![(desk(), "BYE".into())]);
    assert_eq!(sent(&out, "BYE").header("Reason"), Some("Q.850;cause=17;text=\"User busy\""));
    assert!(out.contains(&Action::Ended { reason: EndReason::Busy, hangup_by: HangupBy::Callee, sip_status: 486 }));
}

#[test]
fn the_far_end_not_answering_or_the_agent_giving_up_ends_an_originated_call() {
    let t0 = Instant::now();
    let (mut call, inv) = originated(t0);
    call.on_callee_message(reply(&inv[0], 200, "d", Some(17000)), desk(), t0);
    let far = invites(&call.place(far_end(), &caller(), media(), t0));
    call.on_callee_message(reply(&far[0], 180, "f", None), trunk(), t0);
    let t1 = t0 + Duration::from_secs(30);
    let out = call.on_timer(t1);
    assert_eq!(sends(&out), vec![(trunk(), "CANCEL".into()), (desk(), "BYE".into())]);
    assert!(out.contains(&Action::Ended { reason: EndReason::NoAnswer, hangup_by: HangupBy::System, sip_status: 480 }));

    // The agent hangs up its phone while the far end rings: the far end is cancelled.
    let (mut call, inv) = originated(t0);
    call.on_callee_message(reply(&inv[0], 200, "d", Some(17000)), desk(), t0);
    let far = invites(&call.place(far_end(), &caller(), media(), t0));
    call.on_callee_message(reply(&far[0], 180, "f", None), trunk(), t0);
    let out = call.on_callee_message(request_on_fork("BYE", &inv[0], 2, None), desk(), t0);
    assert_eq!(sends(&out), vec![(desk(), "200".into()), (trunk(), "CANCEL".into())]);
    assert!(out.contains(&Action::Ended { reason: EndReason::Cancelled, hangup_by: HangupBy::Caller, sip_status: 487 }));

    // Or gives up from the softphone.
    let (mut call, inv) = originated(t0);
    call.on_callee_message(reply(&inv[0], 200, "d", Some(17000)), desk(), t0);
    let far = invites(&call.place(far_end(), &caller(), media(), t0));
    call.on_callee_message(reply(&far[0], 183, "f", Some(18000)), trunk(), t0);
    let out = call.hang_up(t0);
    assert_eq!(sends(&out), vec![(trunk(), "CANCEL".into()), (desk(), "BYE".into())]);
    assert!(out.contains(&Action::Ended { reason: EndReason::Cancelled, hangup_by: HangupBy::Caller, sip_status: 487 }));
}

#[test]
fn early_media_of_the_far_end_reaches_the_agent_without_sip() {
    let t0 = Instant::now();
    let (mut call, inv) = originated(t0);
    call.on_callee_message(reply(&inv[0], 200, "d", Some(17000)), desk(), t0);
    let far = invites(&call.place(far_end(), &caller(), media(), t0));
    let out = call.on_callee_message(reply(&far[0], 183, "f", Some(18000)), trunk(), t0);
    assert!(sends(&out).is_empty(), "{out:?}");
    assert!(out.contains(&Action::EarlyMedia { callee_rtp: "127.0.0.1:18000".parse().unwrap() }));
    assert!(out.contains(&Action::Ringing));
    assert!(!out.iter().any(|a| matches!(a, Action::LegFormats { leg: Leg::Caller, .. })));
}

#[test]
fn answering_from_the_softphone_cancels_the_ringing_forks_and_invites_the_chosen_device_to_answer_by_itself() {
    let t0 = Instant::now();
    let (mut call, inv) = placed(&[phone(), laptop()], t0);
    call.on_callee_message(reply(&inv[0], 180, "t0", None), phone(), t0);
    let t1 = t0 + Duration::from_secs(10);
    let out = call.answer_on(Target::new(format!("sip:agent@{DESK}"), desk()).auto_answer("127.0.0.1"), t1);
    assert_eq!(sends(&out), vec![(phone(), "CANCEL".into()), (desk(), "INVITE".into())], "the laptop, still trying, is cancelled once it rings (§9.1)");
    let again = sent(&out, "INVITE");
    assert_eq!(again.header("Call-Info"), Some("<sip:127.0.0.1>;answer-after=0"));
    assert!(again.header("From").unwrap().starts_with("\"Carrier\" <sip:+12125550123@"), "the same caller is shown");
    assert_eq!(sdp_port(again), 20002);
    assert!(call.next_deadline().unwrap() >= t1 + Duration::from_secs(30), "a full ring time for the chosen device");
    // The laptop is cancelled once it rings.
    let cancels = sends(&call.on_callee_message(reply(&inv[1], 180, "t1", None), laptop(), t1));
    assert_eq!(cancels, vec![(laptop(), "CANCEL".into())]);
    assert!(call.on_callee_message(reply(&inv[0], 487, "t0", None), phone(), t1).is_empty());
    assert!(call.on_callee_message(reply(&inv[1], 487, "t1", None), laptop(), t1).is_empty(), "the call still rings on the desk");
    let out = call.on_callee_message(reply(again, 200, "dk", Some(17200)), desk(), t1);
    assert!(out.contains(&Action::Answered { fork: 2, callee_rtp: "127.0.0.1:17200".parse().unwrap() }));
    assert_eq!(sends(&out), vec![(desk(), "ACK".into()), (carrier(), "200".into())]);
    // Not once the call is answered, nor for a call the gateway placed.
    assert!(call.answer_on(Target::new(format!("sip:agent@{DESK}"), desk()), t1).is_empty());
    let (mut mine, _) = originated(t0);
    assert!(mine.answer_on(Target::new(format!("sip:agent@{DESK}"), desk()), t0).is_empty());
}
