//! The transaction state machines driven by a virtual clock.

use std::time::{Duration, Instant};

use super::*;

const PEER: &str = "192.0.2.10:5060";

fn udp() -> Destination {
    Destination::Udp(PEER.parse().unwrap())
}

fn tcp() -> Destination {
    Destination::Tcp(PEER.parse().unwrap())
}

fn request(method: &str, branch: &str, cseq: u32) -> SipMessage {
    let mut m = SipMessage::request(method, "sip:ada@192.0.2.10");
    m.push_header("Via", format!("SIP/2.0/UDP 198.51.100.1:5060;branch={branch}"))
        .push_header("Max-Forwards", "70")
        .push_header("From", "<sip:gw@198.51.100.1>;tag=f1")
        .push_header("To", "<sip:ada@192.0.2.10>")
        .push_header("Call-ID", "call-1@198.51.100.1")
        .push_header("CSeq", format!("{cseq} {method}"));
    m
}

fn response(req: &SipMessage, code: u16) -> SipMessage {
    make_response(req, code, Some("t9"), "test")
}

/// What went on the wire, encoded (first sends and kept copies alike).
fn sends(out: &[Output]) -> Vec<Vec<u8>> {
    out.iter()
        .filter_map(|o| match o {
            Output::Send(_, m) => Some(m.encode()),
            Output::Resend(_, b) => Some(b.to_vec()),
            Output::Deliver(..) => None,
        })
        .collect()
}

fn delivered(out: &[Output]) -> Vec<&SipMessage> {
    out.iter().filter_map(|o| if let Output::Deliver(m, _) = o { Some(m) } else { None }).collect()
}

/// Runs the clock from `start` to `end` in 10 ms steps, collecting output
/// with the virtual time it was produced at.
fn run(layer: &mut TransactionLayer, start: Instant, end: Instant) -> Vec<(Duration, Output)> {
    let mut out = Vec::new();
    let mut now = start;
    while now <= end {
        if layer.next_deadline().is_some_and(|d| d <= now) {
            for o in layer.on_timer(now) {
                out.push((now - start, o));
            }
        }
        now += Duration::from_millis(10);
    }
    out
}

fn send_times(events: &[(Duration, Output)]) -> Vec<u64> {
    events.iter().filter(|(_, o)| matches!(o, Output::Send(..) | Output::Resend(..))).map(|(t, _)| t.as_millis() as u64).collect()
}

#[test]
fn client_invite_over_udp_retransmits_with_timer_a_and_times_out_with_timer_b() {
    let mut layer = TransactionLayer::new(Timers::default());
    let t0 = Instant::now();
    let invite = request("INVITE", "z9hG4bKa1", 1);
    let out = layer.send(udp(), invite.clone(), t0);
    assert_eq!(sends(&out), vec![invite.encode()]);
    let events = run(&mut layer, t0, t0 + Duration::from_secs(33));
    // Timer A doubles from T1 without limit until Timer B (64·T1 = 32 s).
    assert_eq!(send_times(&events), vec![500, 1500, 3500, 7500, 15500, 31500]);
    let timeouts: Vec<_> = events.iter().filter_map(|(t, o)| if let Output::Deliver(m, _) = o { Some((t, m)) } else { None }).collect();
    assert_eq!(timeouts.len(), 1);
    assert_eq!(timeouts[0].0.as_millis(), 32000);
    assert_eq!(timeouts[0].1.status(), Some(408));
    assert_eq!(timeouts[0].1.header("CSeq"), Some("1 INVITE"));
    assert_eq!(layer.len(), (0, 0));
    assert_eq!(layer.stats().timeouts, 1);
}

#[test]
fn client_invite_over_tcp_is_not_retransmitted_but_still_times_out() {
    let mut layer = TransactionLayer::new(Timers::default());
    let t0 = Instant::now();
    layer.send(tcp(), request("INVITE", "z9hG4bKa2", 1), t0);
    let events = run(&mut layer, t0, t0 + Duration::from_secs(33));
    assert!(send_times(&events).is_empty());
    assert_eq!(events.len(), 1, "only the Timer B timeout: {events:?}");
}

#[test]
fn provisional_response_stops_retransmission_and_is_delivered_once_per_copy() {
    let mut layer = TransactionLayer::new(Timers::default());
    let t0 = Instant::now();
    let invite = request("INVITE", "z9hG4bKa3", 1);
    layer.send(udp(), invite.clone(), t0);
    let out = layer.receive(response(&invite, 180), udp(), t0 + Duration::from_millis(100));
    assert_eq!(delivered(&out).len(), 1);
    let events = run(&mut layer, t0, t0 + Duration::from_secs(40));
    assert!(send_times(&events).is_empty(), "no retransmission after a provisional: {events:?}");
    assert!(events.is_empty(), "Timer B does not apply in Proceeding");
    // Timer C eventually reports a peer that never answers.
    let later = run(&mut layer, t0 + TIMER_C, t0 + TIMER_C + Duration::from_secs(1));
    assert_eq!(later.len(), 1);
    assert!(matches!(&later[0].1, Output::Deliver(m, _) if m.status() == Some(408)));
}

#[test]
fn failure_response_is_acked_by_the_transaction_and_retransmissions_absorbed() {
    let mut layer = TransactionLayer::new(Timers::default());
    let t0 = Instant::now();
    let mut invite = request("INVITE", "z9hG4bKa4", 7);
    invite.push_header("Route", "<sip:edge.example.com;lr>");
    layer.send(udp(), invite.clone(), t0);
    let busy = response(&invite, 486);
    let out = layer.receive(busy.clone(), udp(), t0 + Duration::from_millis(50));
    let acks: Vec<&SipMessage> = out.iter().filter_map(|o| if let Output::Send(_, m) = o { Some(m) } else { None }).collect();
    assert_eq!(acks.len(), 1);
    let ack = acks[0];
    assert_eq!(ack.method(), Some("ACK"));
    assert_eq!(ack.request_uri(), invite.request_uri());
    assert_eq!(ack.header("Via"), invite.header("Via"), "same branch as the INVITE");
    assert_eq!(ack.header("To"), busy.header("To"), "To with the response's tag");
    assert_eq!(ack.header("CSeq"), Some("7 ACK"));
    assert_eq!(ack.header("Route"), Some("<sip:edge.example.com;lr>"));
    assert_eq!(delivered(&out), vec![&busy]);
    // A retransmitted 486 is answered with the same ACK and not delivered.
    let again = layer.receive(busy.clone(), udp(), t0 + Duration::from_secs(1));
    assert_eq!(sends(&again), vec![ack.encode()]);
    assert!(delivered(&again).is_empty());
    // Timer D ends the transaction; a copy after that is a stray.
    run(&mut layer, t0, t0 + Duration::from_secs(33));
    assert_eq!(layer.len(), (0, 0));
    assert!(layer.receive(busy, udp(), t0 + Duration::from_secs(34)).is_empty());
    assert_eq!(layer.stats().stray_responses, 1);
}

#[test]
fn every_2xx_to_an_invite_reaches_the_user_even_after_the_transaction() {
    let mut layer = TransactionLayer::new(Timers::default());
    let t0 = Instant::now();
    let invite = request("INVITE", "z9hG4bKa5", 1);
    layer.send(udp(), invite.clone(), t0);
    let ok = response(&invite, 200);
    for i in 0..3 {
        let out = layer.receive(ok.clone(), udp(), t0 + Duration::from_millis(100 * (i + 1)));
        assert_eq!(delivered(&out), vec![&ok], "copy {i}");
        assert!(sends(&out).is_empty(), "the user sends the ACK for a 2xx");
    }
    run(&mut layer, t0, t0 + Duration::from_secs(33)); // Timer M
    assert_eq!(layer.len(), (0, 0));
    assert_eq!(delivered(&layer.receive(ok.clone(), udp(), t0 + Duration::from_secs(40))), vec![&ok]);
}

#[test]
fn non_invite_client_retransmits_up_to_t2_then_times_out() {
    let mut layer = TransactionLayer::new(Timers::default());
    let t0 = Instant::now();
    layer.send(udp(), request("BYE", "z9hG4bKb1", 2), t0);
    let events = run(&mut layer, t0, t0 + Duration::from_secs(33));
    // Timer E: 0.5, 1, 2, then every 4 s (T2) until Timer F at 32 s.
    assert_eq!(send_times(&events), vec![500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500]);
    let last = events.last().unwrap();
    assert_eq!(last.0.as_millis(), 32000);
    assert!(matches!(&last.1, Output::Deliver(m, _) if m.status() == Some(408) && m.header("CSeq") == Some("2 BYE")));
}

#[test]
fn non_invite_client_in_proceeding_retransmits_every_t2_and_completes() {
    let mut layer = TransactionLayer::new(Timers::default());
    let t0 = Instant::now();
    let bye = request("BYE", "z9hG4bKb2", 2);
    layer.send(udp(), bye.clone(), t0);
    layer.receive(response(&bye, 100), udp(), t0 + Duration::from_millis(100));
    let events = run(&mut layer, t0, t0 + Duration::from_secs(9));
    assert_eq!(send_times(&events), vec![4100, 8100]);
    let ok = response(&bye, 200);
    assert_eq!(delivered(&layer.receive(ok.clone(), udp(), t0 + Duration::from_secs(9))).len(), 1);
    assert!(layer.receive(ok, udp(), t0 + Duration::from_secs(10)).is_empty(), "absorbed in Completed");
    run(&mut layer, t0 + Duration::from_secs(9), t0 + Duration::from_secs(15)); // Timer K = T4
    assert_eq!(layer.len(), (0, 0));
}

#[test]
fn server_invite_absorbs_retransmissions_and_repeats_the_last_provisional() {
    let mut layer = TransactionLayer::new(Timers::default());
    let t0 = Instant::now();
    let invite = request("INVITE", "z9hG4bKc1", 1);
    let out = layer.receive(invite.clone(), udp(), t0);
    assert_eq!(delivered(&out), vec![&invite]);
    assert!(layer.receive(invite.clone(), udp(), t0).is_empty(), "nothing sent yet, nothing to repeat");
    let ringing = response(&invite, 180);
    assert_eq!(sends(&layer.send(udp(), ringing.clone(), t0)), vec![ringing.encode()]);
    let out = layer.receive(invite.clone(), udp(), t0 + Duration::from_millis(500));
    assert_eq!(sends(&out), vec![ringing.encode()]);
    assert!(delivered(&out).is_empty());
}

#[test]
fn server_invite_failure_is_retransmitted_with_timer_g_until_acked() {
    let mut layer = TransactionLayer::new(Timers::default());
    let t0 = Instant::now();
    let invite = request("INVITE", "z9hG4bKc2", 1);
    layer.receive(invite.clone(), udp(), t0);
    let busy = response(&invite, 486);
    layer.send(udp(), busy.clone(), t0);
    let events = run(&mut layer, t0, t0 + Duration::from_secs(10));
    // Timer G: T1 doubling up to T2.
    assert_eq!(send_times(&events), vec![500, 1500, 3500, 7500]);
    // The INVITE retransmitted meanwhile gets the final response again.
    assert_eq!(sends(&layer.receive(invite.clone(), udp(), t0 + Duration::from_secs(10))), vec![busy.encode()]);
    // The ACK (same branch) is absorbed and stops Timer G.
    let mut ack = request("ACK", "z9hG4bKc2", 1);
    ack.set_header("To", busy.header("To").unwrap());
    assert!(layer.receive(ack.clone(), udp(), t0 + Duration::from_secs(10)).is_empty());
    assert!(layer.receive(ack, udp(), t0 + Duration::from_secs(11)).is_empty(), "absorbed in Confirmed");
    let events = run(&mut layer, t0 + Duration::from_secs(10), t0 + Duration::from_secs(20));
    assert!(events.is_empty(), "no retransmission after the ACK: {events:?}");
    assert_eq!(layer.len(), (0, 0), "Timer I ended the transaction");
}

#[test]
fn server_invite_failure_without_ack_ends_with_timer_h() {
    let mut layer = TransactionLayer::new(Timers::default());
    let t0 = Instant::now();
    let invite = request("INVITE", "z9hG4bKc3", 1);
    layer.receive(invite.clone(), udp(), t0);
    layer.send(udp(), response(&invite, 603), t0);
    let events = run(&mut layer, t0, t0 + Duration::from_secs(33));
    assert_eq!(send_times(&events), vec![500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500]);
    assert_eq!(layer.len(), (0, 0));
}

#[test]
fn server_invite_accepted_lets_the_user_retransmit_2xx_and_delivers_the_ack() {
    let mut layer = TransactionLayer::new(Timers::default());
    let t0 = Instant::now();
    let invite = request("INVITE", "z9hG4bKc4", 1);
    layer.receive(invite.clone(), udp(), t0);
    let ok = response(&invite, 200);
    assert_eq!(sends(&layer.send(udp(), ok.clone(), t0)).len(), 1);
    assert!(run(&mut layer, t0, t0 + Duration::from_secs(2)).is_empty(), "the layer does not retransmit a 2xx");
    assert!(layer.receive(invite.clone(), udp(), t0 + Duration::from_secs(1)).is_empty(), "INVITE copies absorbed");
    assert_eq!(sends(&layer.send(udp(), ok.clone(), t0 + Duration::from_secs(1))).len(), 1, "the user's 2xx copies pass");
    let ack = request("ACK", "z9hG4bKother", 1);
    assert_eq!(delivered(&layer.receive(ack.clone(), udp(), t0 + Duration::from_secs(2))), vec![&ack]);
    run(&mut layer, t0, t0 + Duration::from_secs(33)); // Timer L
    assert_eq!(layer.len(), (0, 0));
}

#[test]
fn server_non_invite_repeats_its_final_response_until_timer_j() {
    let mut layer = TransactionLayer::new(Timers::default());
    let t0 = Instant::now();
    let bye = request("BYE", "z9hG4bKd1", 5);
    assert_eq!(delivered(&layer.receive(bye.clone(), udp(), t0)).len(), 1);
    assert!(layer.receive(bye.clone(), udp(), t0).is_empty(), "Trying: copies dropped");
    let ok = response(&bye, 200);
    layer.send(udp(), ok.clone(), t0);
    assert_eq!(sends(&layer.receive(bye.clone(), udp(), t0 + Duration::from_secs(5))), vec![ok.encode()]);
    run(&mut layer, t0, t0 + Duration::from_secs(33));
    assert_eq!(layer.len(), (0, 0));
    assert_eq!(delivered(&layer.receive(bye, udp(), t0 + Duration::from_secs(34))).len(), 1, "a new transaction after J");
}

#[test]
fn server_non_invite_over_tcp_ends_at_once() {
    let mut layer = TransactionLayer::new(Timers::default());
    let t0 = Instant::now();
    let opts = request("OPTIONS", "z9hG4bKd2", 1);
    layer.receive(opts.clone(), tcp(), t0);
    layer.send(tcp(), response(&opts, 200), t0);
    run(&mut layer, t0, t0 + Duration::from_millis(20));
    assert_eq!(layer.len(), (0, 0));
}

#[test]
fn a_user_that_never_answers_does_not_leak_the_transaction() {
    let mut layer = TransactionLayer::new(Timers::default());
    let t0 = Instant::now();
    layer.receive(request("OPTIONS", "z9hG4bKd3", 1), udp(), t0);
    layer.receive(request("INVITE", "z9hG4bKd4", 1), udp(), t0);
    run(&mut layer, t0, t0 + Duration::from_secs(33));
    assert_eq!(layer.len(), (0, 1));
    run(&mut layer, t0 + Duration::from_secs(599), t0 + Duration::from_secs(601));
    assert_eq!(layer.len(), (0, 0));
}

#[test]
fn requests_from_rfc_2543_peers_are_matched_without_a_magic_cookie() {
    let mut layer = TransactionLayer::new(Timers::default());
    let t0 = Instant::now();
    let mut opts = request("OPTIONS", "x", 1);
    opts.set_header("Via", "SIP/2.0/UDP 198.51.100.7:5060");
    assert_eq!(delivered(&layer.receive(opts.clone(), udp(), t0)).len(), 1);
    layer.send(udp(), response(&opts, 200), t0);
    assert_eq!(sends(&layer.receive(opts, udp(), t0)).len(), 1, "the copy gets the response again");
}

#[test]
fn same_branch_from_another_sent_by_is_another_transaction() {
    let mut layer = TransactionLayer::new(Timers::default());
    let t0 = Instant::now();
    let a = request("OPTIONS", "z9hG4bKsame", 1);
    let mut b = a.clone();
    b.set_header("Via", "SIP/2.0/UDP 203.0.113.9:5060;branch=z9hG4bKsame");
    assert_eq!(delivered(&layer.receive(a, udp(), t0)).len(), 1);
    assert_eq!(delivered(&layer.receive(b, udp(), t0)).len(), 1);
}

#[test]
fn cancel_finds_its_invite_transaction() {
    let mut layer = TransactionLayer::new(Timers::default());
    let t0 = Instant::now();
    let invite = request("INVITE", "z9hG4bKe1", 1);
    layer.receive(invite, udp(), t0);
    assert!(layer.has_invite_for(&request("CANCEL", "z9hG4bKe1", 1)));
    assert!(!layer.has_invite_for(&request("CANCEL", "z9hG4bKe2", 1)));
}

#[test]
fn next_deadline_skips_stale_entries() {
    let mut layer = TransactionLayer::new(Timers::default());
    let t0 = Instant::now();
    let invite = request("INVITE", "z9hG4bKf1", 1);
    layer.send(udp(), invite.clone(), t0);
    assert_eq!(layer.next_deadline(), Some(t0 + Duration::from_millis(500)));
    layer.receive(response(&invite, 180), udp(), t0);
    assert_eq!(layer.next_deadline(), Some(t0 + TIMER_C));
}
