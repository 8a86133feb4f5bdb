//! Interop with a real softphone: baresip (Debian's baresip-core) registers
//! to the gateway with digest credentials, is called at the address it
//! registered from, calls a number through the gateway (answering the 407
//! challenge), and loses a forked call to another device. baresip runs
//! headless on 127.0.0.2 (not a trunk address, so its INVITEs must
//! authenticate) and is driven and observed through its ctrl_tcp module;
//! SIPp on 127.0.0.1 plays the carrier and the other devices.
//!
//! The calls that do not depend on digest authentication are also run with
//! baresip as a provisioned device (its contact URI in the directory, no
//! REGISTER), so that ringing, answering, hanging up and cancelling are
//! covered whatever happens to authentication.
//!
//! Needs `SWITCHBOARD_TEST_BARESIP_BIN` and `SWITCHBOARD_TEST_SIPP_BIN`
//! (`scripts/test` installs both and exports them).

mod support;

use switchboard_gateway::config::GatewayConfig;
use switchboard_gateway::directory::{NewDevice, NewUser};
use switchboard_gateway::registrations::Registrations;
use switchboard_gateway::sip::Destination;
use switchboard_proto::v1::{Direction, EndReason};
use switchboard_proto::Kind;
use support::{free_udp_port, Baresip, PhoneAccount, Sipp, SippRun, TestGateway, CARRIER_IP};

const ADA_NUMBER: &str = "+14155550111";
const BOB_NUMBER: &str = "+14155550222";
const ADA_PASSWORD: &str = "correct-horse-battery-staple";

/// Ada: a user whose softphone authenticates as `ada`, owning [`ADA_NUMBER`].
/// Returns (user id, softphone device id).
async fn provision_ada(gw: &TestGateway) -> (String, String) {
    let directory = gw.directory();
    let user = directory.create_user(NewUser { name: "Ada".into(), ..Default::default() }).await.unwrap();
    // The provisioned contact goes nowhere (discard port): only the
    // registration can reach the softphone.
    let device = directory
        .create_device(NewDevice { user_id: user.id.clone(), name: "softphone".into(), contact_uri: "sip:ada@127.0.0.1:9".into() })
        .await
        .unwrap();
    directory.set_device_credentials(&device.id, "ada", ADA_PASSWORD, "switchboard").await.unwrap();
    directory.assign_number(ADA_NUMBER, &user.id).await.unwrap();
    (user.id, device.id)
}

/// Starts baresip as Ada's softphone and waits until it is registered.
async fn registered_softphone(gw: &TestGateway, answermode: &str) -> Baresip {
    let mut phone =
        Baresip::start(gw.dir.path(), "ada", gw.sip, PhoneAccount { username: "ada", password: ADA_PASSWORD, answermode, register: true }).await;
    let outcome = phone.first_of(&["REGISTER_OK", "REGISTER_FAIL"], 20).await;
    if outcome["type"] != "REGISTER_OK" {
        phone.fail(&format!("baresip could not register: {}{}", outcome["param"], auth_diagnosis(&phone.log())));
    }
    phone
}

/// Starts baresip as a device of `user` that does not register: the
/// directory holds its contact URI. Returns the phone and the device id.
async fn provisioned_softphone(gw: &TestGateway, user: &str, answermode: &str) -> (Baresip, String) {
    let phone = unregistered_softphone(gw, answermode).await;
    let device = gw
        .directory()
        .create_device(NewDevice { user_id: user.to_owned(), name: "softphone (static)".into(), contact_uri: format!("sip:ada@{}", phone.sip) })
        .await
        .unwrap();
    (phone, device.id)
}

/// Starts baresip with Ada's credentials, without registering.
async fn unregistered_softphone(gw: &TestGateway, answermode: &str) -> Baresip {
    Baresip::start(gw.dir.path(), "ada", gw.sip, PhoneAccount { username: "ada", password: ADA_PASSWORD, answermode, register: false }).await
}

/// What baresip's log says about a failed digest authentication.
fn auth_diagnosis(log: &str) -> String {
    match log.lines().find(|l| l.contains("Function not implemented")) {
        Some(line) => format!(
            "\nbaresip gave up with ENOSYS (`{}`): this baresip/libre aborts digest authentication on the first \
             challenge whose algorithm is not MD5 instead of ignoring it and using the MD5 one (RFC 8760 §2.5), \
             and the gateway challenges with algorithm=SHA-256 and algorithm=MD5",
            line.trim()
        ),
        None => String::new(),
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

/// The SIP messages of baresip's trace (`-s`) that start with `start_line_prefix`.
fn traced(log: &str, start_line_prefix: &str) -> Vec<String> {
    // Each traced message follows a "UDP a -> b" line and ends at a blank line.
    let mut out = Vec::new();
    let lines: Vec<&str> = log.lines().collect();
    for (i, l) in lines.iter().enumerate() {
        if l.starts_with(start_line_prefix) && i > 0 && lines[i - 1].contains(" -> ") {
            let msg: Vec<&str> = lines[i..].iter().take_while(|l| !l.trim().is_empty()).copied().collect();
            out.push(msg.join("\n"));
        }
    }
    out
}


/// Debian 12's baresip (libre 1.1.0) gives up on a challenge list that
/// contains any algorithm but MD5, against RFC 8760 §2.5; operators of such
/// phones offer MD5 only, which is what `sip.digest_algorithms` is for.
fn md5_only(config: &mut GatewayConfig) {
    config.sip.digest_algorithms = vec!["MD5".into()];
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baresip_registers_with_digest_credentials() {
    let gw = TestGateway::start(md5_only).await;
    let (_, device) = provision_ada(&gw).await;

    let phone = registered_softphone(&gw, "auto").await;

    // REGISTER_OK comes with the 200, which the gateway sends after storing
    // the binding: it is there now, pointing at the softphone.
    let bindings = Registrations::new(gw.db.clone()).bindings(&device, unix_now()).await.unwrap();
    assert_eq!(bindings.len(), 1, "one binding: {bindings:?}");
    assert_eq!(bindings[0].source, Destination::Udp(phone.sip), "reached where the REGISTER came from");
    assert!(bindings[0].contact.contains(&phone.sip.to_string()), "contact {} is the softphone's", bindings[0].contact);
    assert!(bindings[0].expires_at > unix_now() + 500, "registered for the 600 s asked");

    // It got there through the challenge: 401 first, then an Authorization.
    let log = phone.log();
    let challenges = traced(&log, "SIP/2.0 401 ");
    assert!(!challenges.is_empty(), "the first REGISTER is challenged\n{log}");
    assert!(challenges[0].contains("WWW-Authenticate: Digest"), "{}", challenges[0]);
    let registers = traced(&log, "REGISTER sip:");
    assert!(registers.iter().any(|r| r.contains("Authorization: Digest") && r.contains("username=\"ada\"")), "{registers:?}");
    // (Metrics are per process: at least this registration.)
    assert!(gw.metric("switchboard_sip_register_total{auth=\"accepted\"}").await >= 1.0);

    phone.quit().await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_carrier_call_reaches_baresip_where_it_registered() {
    let gw = TestGateway::start(md5_only).await;
    let (user, device) = provision_ada(&gw).await;
    let mut phone = registered_softphone(&gw, "auto").await;

    // The carrier calls Ada's number; the softphone answers by itself and
    // the carrier hangs up after its ACK.
    let carrier = Sipp::spawn(
        gw.dir.path(),
        SippRun {
            label: "carrier",
            scenario: "interop_uac_call_hang_up.xml",
            ip: CARRIER_IP,
            remote: Some(gw.sip),
            service: Some(&ADA_NUMBER[1..]),
            port: free_udp_port(CARRIER_IP),
        },
    );
    // Answering by itself, baresip reports no CALL_INCOMING, only the answer.
    let established = phone.event("CALL_ESTABLISHED", 20).await;
    assert_eq!(established["direction"], "incoming");
    phone.event("CALL_CLOSED", 30).await;
    carrier.succeeds().await;

    // The INVITE went to the registered contact, not to the provisioned one.
    let invites = traced(&phone.log(), "INVITE sip:");
    assert_eq!(invites.len(), 1, "{invites:?}");
    let bindings = Registrations::new(gw.db.clone()).bindings(&device, unix_now()).await.unwrap();
    assert!(invites[0].starts_with(&format!("INVITE {} SIP/2.0", bindings[0].contact)), "{}", invites[0]);
    // The softphone heard the BYE.
    assert_eq!(traced(&phone.log(), "BYE sip:").len(), 1);

    // A call.quality follows the end only when RTP flowed before the
    // carrier's BYE, which in a call this short is down to timing; what
    // this test is about is the rest.
    let events: Vec<_> = gw.events_after_calls_ended(1).await.into_iter().filter(|(k, _)| k != "call.quality").collect();
    let kinds: Vec<&str> = events.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(kinds, ["call.started", "call.ringing", "call.answered", "call.ended"]);
    let Some(Kind::Answered(answered)) = &events[2].1.kind else { panic!("call.answered") };
    let agent = answered.agent.clone().unwrap();
    assert_eq!((agent.user_id.as_str(), agent.device_id.as_str()), (user.as_str(), device.as_str()));
    let Some(Kind::Ended(ended)) = &events[3].1.kind else { panic!("call.ended") };
    assert_eq!(ended.reason(), EndReason::Completed);
    assert_eq!(ended.hangup_by, "caller");

    phone.quit().await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_carrier_call_reaches_baresip_at_its_provisioned_contact_and_audio_flows_both_ways() {
    let gw = TestGateway::start(|c| {
        md5_only(c);
        c.recordings.record_all = true;
    }).await;
    let directory = gw.directory();
    let user = directory.create_user(NewUser { name: "Ada".into(), ..Default::default() }).await.unwrap();
    directory.assign_number(ADA_NUMBER, &user.id).await.unwrap();
    let (mut phone, device) = provisioned_softphone(&gw, &user.id, "auto").await;

    // The carrier talks for 3 s (recorded speech) and hangs up; the
    // softphone, through aubridge, says back what it hears.
    let carrier = Sipp::spawn(
        gw.dir.path(),
        SippRun {
            label: "carrier",
            scenario: "interop_uac_call_talk_hang_up.xml",
            ip: CARRIER_IP,
            remote: Some(gw.sip),
            service: Some(&ADA_NUMBER[1..]),
            port: free_udp_port(CARRIER_IP),
        },
    );
    // Answering by itself, baresip reports no CALL_INCOMING, only the answer.
    let established = phone.event("CALL_ESTABLISHED", 20).await;
    assert_eq!(established["direction"], "incoming");
    phone.event("CALL_CLOSED", 30).await;
    carrier.succeeds().await;
    assert!(phone.events.iter().any(|e| e["type"] == "CALL_RTPESTAB"), "baresip received RTP: {:?}", phone.events);

    let log = phone.log();
    let invites = traced(&log, "INVITE sip:");
    assert_eq!(invites.len(), 1, "{invites:?}");
    assert!(invites[0].starts_with(&format!("INVITE sip:ada@{} SIP/2.0", phone.sip)), "{}", invites[0]);
    assert!(invites[0].contains("Content-Type: application/sdp"), "the gateway offers SDP: {}", invites[0]);
    // baresip saw the carrier's hangup as the gateway's BYE.
    assert_eq!(traced(&log, "BYE sip:").len(), 1, "{}", support::tail(&log, 200));

    let events = gw.events_once("recording.available", 1).await;
    let kinds: Vec<&str> = events.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(kinds, ["call.started", "call.ringing", "call.answered", "call.ended", "call.quality", "recording.available"]);
    let Some(Kind::Answered(answered)) = &events[2].1.kind else { panic!("call.answered") };
    assert_eq!(answered.agent.as_ref().unwrap().device_id, device);
    let Some(Kind::Ended(ended)) = &events[3].1.kind else { panic!("call.ended") };
    assert_eq!(ended.reason(), EndReason::Completed);
    assert_eq!(ended.hangup_by, "caller");

    // The recording has the carrier's speech on the customer channel and
    // the softphone's echo of it on the agent channel.
    let Some(Kind::RecordingAvailable(rec)) = &events[5].1.kind else { panic!("recording.available") };
    let wav = std::fs::read(gw.dir.path().join("recordings").join(&rec.object_key)).unwrap();
    let mut reader = hound::WavReader::new(std::io::Cursor::new(wav)).unwrap();
    assert_eq!(reader.spec().channels, 2);
    let samples: Vec<i16> = reader.samples::<i16>().map(|s| s.unwrap()).collect();
    let rms = |ch: usize| {
        let v: Vec<f64> = samples.iter().skip(ch).step_by(2).map(|s| *s as f64).collect();
        (v.iter().map(|x| x * x).sum::<f64>() / v.len().max(1) as f64).sqrt()
    };
    assert!(samples.len() / 2 > 8000, "at least a second recorded: {} frames", samples.len() / 2);
    assert!(rms(0) > 100.0, "customer channel is silent (rms {})", rms(0));
    assert!(rms(1) > 100.0, "agent channel (baresip's echo) is silent (rms {})", rms(1));

    phone.quit().await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baresip_calls_a_number_through_the_gateway_after_a_407_challenge() {
    let gw = TestGateway::start(md5_only).await;
    provision_ada(&gw).await;
    // Bob owns the number Ada dials; his desk phone is SIPp, which answers
    // and hangs up once its 200 is ACKed.
    let directory = gw.directory();
    let bob = directory.create_user(NewUser { name: "Bob".into(), ..Default::default() }).await.unwrap();
    let desk_port = free_udp_port("127.0.0.1");
    let desk_device = directory
        .create_device(NewDevice { user_id: bob.id.clone(), name: "desk".into(), contact_uri: format!("sip:bob@127.0.0.1:{desk_port}") })
        .await
        .unwrap();
    directory.assign_number(BOB_NUMBER, &bob.id).await.unwrap();
    let desk = Sipp::spawn(
        gw.dir.path(),
        SippRun { label: "bob-desk", scenario: "interop_uas_answer_hang_up.xml", ip: "127.0.0.1", remote: None, service: None, port: desk_port },
    );

    // baresip need not be registered to place a call: the INVITE is
    // authenticated on its own (407).
    let mut phone = unregistered_softphone(&gw, "auto").await;
    phone.command("dial", &format!("sip:{BOB_NUMBER}@{}", gw.sip)).await;
    let first = phone.first_of(&["CALL_ESTABLISHED", "CALL_CLOSED"], 20).await;
    if first["type"] == "CALL_CLOSED" {
        phone.fail(&format!("the call was closed before it was established: {}{}", first["param"], auth_diagnosis(&phone.log())));
    }
    assert_eq!(first["direction"], "outgoing");
    phone.event("CALL_CLOSED", 30).await;
    let desk = desk.succeeds().await;

    // The gateway challenged the INVITE and took the answer.
    let log = phone.log();
    let challenges = traced(&log, "SIP/2.0 407 ");
    assert_eq!(challenges.len(), 1, "one 407 challenge\n{}", support::tail(&log, 200));
    assert!(challenges[0].contains("Proxy-Authenticate: Digest"), "{}", challenges[0]);
    let invites = traced(&log, "INVITE sip:");
    assert_eq!(invites.len(), 2, "the INVITE and its authenticated retry: {invites:?}");
    assert!(!invites[0].contains("Proxy-Authorization:"));
    assert!(invites[1].contains("Proxy-Authorization: Digest") && invites[1].contains("username=\"ada\""), "{}", invites[1]);
    assert!(gw.metric("switchboard_sip_invite_auth_total{auth=\"accepted\"}").await >= 1.0);
    // Bob's phone was called from Ada: her number (she has no extension)
    // and her name, whatever her phone put in From.
    let desk_messages = desk.messages();
    assert!(
        desk_messages.contains(&format!("From: \"Ada\" <sip:{ADA_NUMBER}@")),
        "the desk phone sees the caller as the directory knows her\n{desk_messages}"
    );
    // The softphone heard the BYE of the desk phone's hangup.
    assert_eq!(traced(&log, "BYE sip:").len(), 1);

    // As in the carrier call above: a call.quality after the end depends on whether RTP
    // flowed before the hang-up.
    let events: Vec<_> = gw.events_after_calls_ended(1).await.into_iter().filter(|(k, _)| k != "call.quality").collect();
    let kinds: Vec<&str> = events.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(kinds, ["call.started", "call.ringing", "call.answered", "call.ended"]);
    let Some(Kind::Started(started)) = &events[0].1.kind else { panic!("call.started") };
    assert_eq!(started.to.as_ref().unwrap().number, BOB_NUMBER);
    assert_eq!(started.owner.as_ref().unwrap().user_id, bob.id);
    // From one user's device to another user: neither in nor out.
    assert_eq!(started.direction(), Direction::Internal, "a call between two users of the company");
    let Some(Kind::Answered(answered)) = &events[2].1.kind else { panic!("call.answered") };
    assert_eq!(answered.agent.as_ref().unwrap().device_id, desk_device.id);
    let Some(Kind::Ended(ended)) = &events[3].1.kind else { panic!("call.ended") };
    assert_eq!(ended.reason(), EndReason::Completed);
    assert_eq!(ended.hangup_by, "callee");

    phone.quit().await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forked_call_answered_on_the_desk_phone_cancels_baresip_with_reason_200() {
    let gw = TestGateway::start(md5_only).await;
    let directory = gw.directory();
    let user = directory.create_user(NewUser { name: "Ada".into(), ..Default::default() }).await.unwrap();
    directory.assign_number(ADA_NUMBER, &user.id).await.unwrap();
    let user = user.id;
    // Ada's softphone rings until told otherwise.
    let (mut phone, _softphone) = provisioned_softphone(&gw, &user, "manual").await;
    // Ada's second device: a desk phone (SIPp) that answers at once.
    let desk_port = free_udp_port("127.0.0.1");
    let desk_device = gw
        .directory()
        .create_device(NewDevice { user_id: user.clone(), name: "desk".into(), contact_uri: format!("sip:ada-desk@127.0.0.1:{desk_port}") })
        .await
        .unwrap();
    let desk = Sipp::spawn(
        gw.dir.path(),
        SippRun { label: "desk", scenario: "interop_uas_answer_wait_bye.xml", ip: "127.0.0.1", remote: None, service: None, port: desk_port },
    );
    let carrier = Sipp::spawn(
        gw.dir.path(),
        SippRun {
            label: "carrier",
            scenario: "interop_uac_call_hang_up.xml",
            ip: CARRIER_IP,
            remote: Some(gw.sip),
            service: Some(&ADA_NUMBER[1..]),
            port: free_udp_port(CARRIER_IP),
        },
    );
    phone.event("CALL_INCOMING", 20).await;
    phone.event("CALL_CLOSED", 30).await;
    carrier.succeeds().await;
    desk.succeeds().await;
    assert!(!phone.events.iter().any(|e| e["type"] == "CALL_ESTABLISHED"), "the softphone never answered: {:?}", phone.events);

    // The softphone was cancelled, with the reason that the call was
    // answered elsewhere (RFC 3326), which phones show as "answered
    // elsewhere" instead of a missed call.
    let log = phone.log();
    let cancels = traced(&log, "CANCEL sip:");
    assert_eq!(cancels.len(), 1, "one CANCEL\n{}", support::tail(&log, 200));
    assert!(cancels[0].contains("Reason: SIP;cause=200"), "{}", cancels[0]);

    let events = gw.events_after_calls_ended(1).await;
    let answered: Vec<String> = events
        .iter()
        .filter_map(|(_, e)| match &e.kind {
            Some(Kind::Answered(a)) => Some(a.agent.as_ref().unwrap().device_id.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(answered, [desk_device.id]);

    phone.quit().await;
    gw.stop().await;
}
