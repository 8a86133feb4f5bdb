//! The media bridge with real user agents, asserting on the audio itself:
//! two baresip softphones speaking espeak-ng WAVs to each other through the
//! gateway, held (music on hold), muted, sending DTMF both ways, recorded
//! with pause and resume; and SIPp's `uac_pcap` carrier playing its bundled
//! G.711 and RFC 2833 captures to a softphone.
//!
//! Each phone writes what it hears (baresip's `sndfile` module); the tests
//! compare stretches of it with what the other side spoke, with the hold
//! music, or with silence, by the correlation of loudness envelopes
//! (`support::audio::similarity`), always against a control that must not
//! match.
//!
//! Needs baresip, SIPp, espeak-ng and sox (`scripts/test` installs them).

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use switchboard_gateway::calls::control::{MediaCommand, RecordCommand, RecordingState, Side};
use switchboard_gateway::config::GatewayConfig;
use switchboard_gateway::directory::NewUser;
use switchboard_gateway::media::player::Prompt;
use switchboard_proto::v1::RecordingState as PbRecordingState;
use switchboard_proto::Kind;
use support::audio::{pcap_alaw, read_mono, read_stereo, rms, similarity, speech, speech_between_silences, window};
use support::{digits_received, softphone as phone, softphone_user as user, Baresip, PhoneAccount, Sipp, SippRun, TestGateway, CARRIER_IP};

const ADA_PASSWORD: &str = "ada-media-secret";
const BOB_PASSWORD: &str = "bob-media-secret";
const BOB_NUMBER: &str = "+14155550333";
/// Below this RMS a stretch of decoded G.711 counts as silence.
const SILENT: f64 = 60.0;
/// Above this envelope correlation two stretches of audio match.
const MATCHES: f64 = 0.6;

fn media_config(config: &mut GatewayConfig) {
    // Debian 12's baresip reads MD5 challenges only (see interop_baresip.rs).
    config.sip.digest_algorithms = vec!["MD5".into()];
    config.recordings.record_all = false;
    config.voicemail.enabled = true;
}

/// The Switchboard call id of the only call so far.
async fn call_id(gw: &TestGateway) -> String {
    let events = gw.events_once("call.answered", 1).await;
    events.iter().find(|(k, _)| k == "call.answered").map(|(_, e)| e.call_id.clone()).unwrap()
}

/// The first event of a kind among `(kind, event)` pairs, which must be there.
macro_rules! first {
    ($events:expr, $kind:ident) => {
        $events
            .iter()
            .find_map(|(_, e)| match &e.kind {
                Some(Kind::$kind(v)) => Some(v.clone()),
                _ => None,
            })
            .expect(concat!("a ", stringify!($kind), " event"))
    };
}

/// SIPp's own `uac_pcap` as the carrier calling Bob's number: 8 s of A-law
/// speech (`g711a.pcap`), then DTMF 1 as RFC 2833, then BYE.
fn carrier_pcap(gw: &TestGateway) -> Sipp {
    Sipp::spawn(
        gw.dir.path(),
        SippRun {
            label: "carrier",
            scenario: "builtin:uac_pcap",
            ip: CARRIER_IP,
            remote: Some(gw.sip),
            service: Some("14155550333"),
            port: support::free_udp_port(CARRIER_IP),
        },
    )
}

/// Seconds since `t0`.
fn since(t0: Instant) -> f64 {
    t0.elapsed().as_secs_f64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn softphones_hear_each_other_hold_music_mute_dtmf_and_a_paused_recording() {
    let gw = TestGateway::start(media_config).await;
    let audio = gw.subdir("audio");
    let ada_mic = speech(&audio, "ada", "Hello, this is Ada from accounts. I am calling about the invoice for March.", 6);
    let bob_mic = speech(&audio, "bob", "Bob speaking. Let me pull up the customer record and read it back to you.", 6);
    user(&gw, "Ada", "201", "ada", ADA_PASSWORD).await;
    user(&gw, "Bob", "202", "bob", BOB_PASSWORD).await;
    let mut ada = phone(&gw, "ada", ADA_PASSWORD, &ada_mic).await;
    let mut bob = phone(&gw, "bob", BOB_PASSWORD, &bob_mic).await;

    ada.command("dial", &format!("sip:202@{}", gw.sip)).await;
    let first = ada.first_of(&["CALL_ESTABLISHED", "CALL_CLOSED"], 20).await;
    assert_eq!(first["type"], "CALL_ESTABLISHED", "the call failed: {first}");
    bob.event("CALL_ESTABLISHED", 10).await;
    let t0 = Instant::now();
    let id = call_id(&gw).await;
    let control = gw.control();

    // 0–3 s: talking; recording from the start.
    let state = control.media(&id, MediaCommand::Record(RecordCommand::Start { admin_only: false })).await.unwrap();
    assert_eq!(state.recording, RecordingState::Recording);
    let rec_start = since(t0);
    tokio::time::sleep(Duration::from_secs(3)).await;

    // 3–6 s: Bob is held: he hears the music, Ada hears nothing.
    let hold_at = since(t0);
    let state = control.media(&id, MediaCommand::Hold { side: Side::B, on: true }).await.unwrap();
    assert_eq!(state.held, Some(Side::B));
    tokio::time::sleep(Duration::from_secs(3)).await;
    control.media(&id, MediaCommand::Hold { side: Side::B, on: false }).await.unwrap();
    let resume_at = since(t0);

    // 6–8.5 s: Ada is muted: Bob hears silence, Ada still hears Bob.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mute_at = since(t0);
    let state = control.media(&id, MediaCommand::Mute { side: Side::A, on: true }).await.unwrap();
    assert!(state.muted[Side::A as usize]);
    tokio::time::sleep(Duration::from_secs(2)).await;
    control.media(&id, MediaCommand::Mute { side: Side::A, on: false }).await.unwrap();
    let unmute_at = since(t0);

    // 8.5–10 s: recording paused while both talk.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pause_at = since(t0);
    let state = control.media(&id, MediaCommand::Record(RecordCommand::Pause)).await.unwrap();
    assert_eq!(state.recording, RecordingState::Paused);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    control.media(&id, MediaCommand::Record(RecordCommand::Resume)).await.unwrap();
    let resume_rec_at = since(t0);

    // DTMF both ways: Ada presses keys, the gateway plays a digit to her.
    for key in ["1", "5", "#"] {
        ada.command("sndcode", key).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    control.media(&id, MediaCommand::Dtmf { to: Side::A, digits: "7".into() }).await.unwrap();
    for _ in 0..3 {
        bob.event("CALL_DTMF_START", 10).await;
    }
    ada.event("CALL_DTMF_START", 10).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let state = control.media(&id, MediaCommand::Record(RecordCommand::Stop)).await.unwrap();
    assert_eq!(state.recording, RecordingState::Off);
    let rec_stop = since(t0);

    ada.command("hangup", "").await;
    bob.event("CALL_CLOSED", 10).await;
    ada.event("CALL_CLOSED", 10).await;

    // DTMF arrived once each, in order, and nothing else.
    assert_eq!(digits_received(&bob), "15#", "{}", bob.log());
    assert_eq!(digits_received(&ada), "7", "{}", ada.log());

    // What each phone heard.
    let bob_heard = read_mono(&bob.heard());
    let ada_heard = read_mono(&ada.heard());
    let ada_said = read_mono(&ada_mic);
    let bob_said = read_mono(&bob_mic);
    let music: Vec<i16> = Prompt::bundled_hold_music().samples().to_vec();
    let talk = |s: &[i16]| window(s, 0.8, hold_at - 0.3).to_vec();
    assert!(similarity(&talk(&bob_heard), &ada_said) > MATCHES, "Bob hears Ada: {:.2}", similarity(&talk(&bob_heard), &ada_said));
    assert!(similarity(&talk(&ada_heard), &bob_said) > MATCHES, "Ada hears Bob: {:.2}", similarity(&talk(&ada_heard), &bob_said));
    let held = window(&bob_heard, hold_at + 0.5, resume_at - 0.3);
    let (held_music, held_ada) = (similarity(held, &music), similarity(held, &ada_said));
    assert!(held_music > MATCHES && held_music > held_ada + 0.2, "held Bob hears the music ({held_music:.2}), not Ada ({held_ada:.2})");
    // baresip writes what it decodes: while Bob was held Ada was sent
    // nothing at all, so her recording of the call is shorter by the hold
    // and holds none of the music.
    let held_for = resume_at - hold_at;
    let ada_secs = ada_heard.len() as f64 / 8000.0;
    let bob_secs = bob_heard.len() as f64 / 8000.0;
    assert!((bob_secs - ada_secs - held_for).abs() < 0.6, "Ada received nothing during the hold: she heard {ada_secs:.2} s, Bob {bob_secs:.2} s");
    let ada_music = similarity(window(&ada_heard, hold_at - 1.0, hold_at + 1.0), &music);
    assert!(ada_music < held_music - 0.2, "Ada never hears the music ({ada_music:.2})");
    assert!(rms(window(&bob_heard, mute_at + 0.5, unmute_at - 0.3)) < SILENT, "Bob hears silence while Ada is muted");
    // (Ada's recording runs `held_for` behind: the hold is missing from it.)
    let muted_ada_hears = window(&ada_heard, mute_at + 0.5 - held_for, unmute_at - 0.3 - held_for);
    assert!(rms(muted_ada_hears) > 4.0 * SILENT, "muted Ada still hears Bob (rms {:.0})", rms(muted_ada_hears));

    // The recording: customer (the caller, Ada) left, agent (Bob) right,
    // as long as it ran, with the pause and the hold kept as silence.
    let events = gw.events_once("recording.available", 1).await;
    let states: Vec<i32> = events
        .iter()
        .filter_map(|(_, e)| match &e.kind {
            Some(Kind::RecordingState(s)) => Some(s.state),
            _ => None,
        })
        .collect();
    assert_eq!(
        states,
        [PbRecordingState::Recording as i32, PbRecordingState::Paused as i32, PbRecordingState::Recording as i32, PbRecordingState::Off as i32]
    );
    let media_states = events.iter().filter(|(k, _)| k == "call.media_state").count();
    assert_eq!(media_states, 4, "hold, resume, mute, unmute");
    let rec = first!(events, RecordingAvailable);
    let bytes = std::fs::read(gw.dir.path().join("recordings").join(&rec.object_key)).unwrap();
    let (left, right, spec) = read_stereo(&bytes);
    assert_eq!(spec.sample_rate, 8000);
    let length = left.len() as f64 / 8000.0;
    assert!((length - (rec_stop - rec_start)).abs() < 0.5, "recording is {length:.2} s, recorded for {:.2} s", rec_stop - rec_start);
    assert!((rec.duration_ms as f64 / 1000.0 - length).abs() < 0.05);
    let at = |t: f64| t - rec_start;
    let left_talk = window(&left, 0.8, at(hold_at) - 0.3);
    let right_talk = window(&right, 0.8, at(hold_at) - 0.3);
    assert!(similarity(left_talk, &ada_said) > MATCHES, "left is Ada: {:.2}", similarity(left_talk, &ada_said));
    assert!(similarity(right_talk, &bob_said) > MATCHES, "right is Bob: {:.2}", similarity(right_talk, &bob_said));
    assert!(similarity(left_talk, &ada_said) > similarity(left_talk, &bob_said), "channels are not swapped");
    assert!(rms(window(&left, at(hold_at) + 0.3, at(resume_at) - 0.3)) < SILENT, "hold is silence in the recording");
    assert!(rms(window(&left, at(mute_at) + 0.3, at(unmute_at) - 0.3)) < SILENT, "muted Ada is silent in the recording");
    assert!(rms(window(&right, at(mute_at) + 0.3, at(unmute_at) - 0.3)) > 4.0 * SILENT, "Bob is recorded while Ada is muted");
    for (name, ch) in [("left", &left), ("right", &right)] {
        assert!(rms(window(ch, at(pause_at) + 0.3, at(resume_rec_at) - 0.3)) < SILENT, "{name} is silent while paused");
    }
    assert!(rms(window(&right, at(resume_rec_at) + 0.3, at(resume_rec_at) + 1.0)) > 4.0 * SILENT, "recording resumed");

    ada.quit().await;
    bob.quit().await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn carrier_pcap_audio_and_rfc2833_digit_reach_a_softphone_and_the_recording() {
    let gw = TestGateway::start(|c| {
        media_config(c);
        c.recordings.record_all = true;
    })
    .await;
    let audio = gw.subdir("audio");
    let bob_mic = speech(&audio, "bob", "Support desk, Bob speaking. How can I help you today?", 6);
    let bob_id = user(&gw, "Bob", "202", "bob", BOB_PASSWORD).await;
    gw.directory().assign_number(BOB_NUMBER, &bob_id).await.unwrap();
    let mut bob = phone(&gw, "bob", BOB_PASSWORD, &bob_mic).await;

    // SIPp's own uac_pcap: 8 s of A-law speech, then DTMF 1 as RFC 2833.
    let carrier = carrier_pcap(&gw);
    bob.event("CALL_ESTABLISHED", 20).await;
    carrier.succeeds().await;
    bob.event("CALL_CLOSED", 20).await;

    assert_eq!(digits_received(&bob), "1", "the carrier's digit arrives once\n{}", bob.log());
    let spoken = pcap_alaw(Path::new("/usr/share/sip-tester/g711a.pcap"));
    let heard = read_mono(&bob.heard());
    let stretch = window(&heard, 1.0, 6.0);
    let (s_pcap, s_bob) = (similarity(stretch, &spoken), similarity(stretch, &read_mono(&bob_mic)));
    assert!(s_pcap > MATCHES && s_pcap > s_bob + 0.2, "Bob hears the carrier's capture ({s_pcap:.2}), not himself ({s_bob:.2})");

    let events = gw.events_once("recording.available", 1).await;
    let rec = first!(events, RecordingAvailable);
    let bytes = std::fs::read(gw.dir.path().join("recordings").join(&rec.object_key)).unwrap();
    let (left, right, _) = read_stereo(&bytes);
    let l = window(&left, 1.0, 6.0);
    assert!(similarity(l, &spoken) > MATCHES, "customer channel is the carrier: {:.2}", similarity(l, &spoken));
    let r = window(&right, 1.0, 6.0);
    assert!(similarity(r, &read_mono(&bob_mic)) > MATCHES, "agent channel is Bob: {:.2}", similarity(r, &read_mono(&bob_mic)));
    assert_eq!(gw.metric("switchboard_dtmf_digits_total{via=\"rfc4733\"}").await, 1.0, "one digit detected, not one per packet");

    // The quality summary of both legs at hangup.
    let quality = first!(events, Quality);
    assert_eq!(quality.legs.len(), 2);
    for leg in &quality.legs {
        assert!(leg.packets_received > 100 && leg.loss_ratio < 0.01 && leg.mos > 4.0, "{leg:?}");
    }

    bob.quit().await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declined_call_goes_to_voicemail_greeting_beep_message_ended_by_silence() {
    let gw = TestGateway::start(|c| {
        media_config(c);
        c.voicemail.end_on_silence_secs = 2;
    })
    .await;
    let audio = gw.subdir("audio");
    // Ada listens to the greeting, says one thing after the beep, then nothing.
    let ada_mic = speech_between_silences(&audio, "ada", "Hi Bob, it is Ada. Please call me back about the renewal.", 7, 30);
    let spoken_secs = read_mono(&audio.join("ada-spoken.wav")).len() as f64 / 8000.0;
    user(&gw, "Ada", "201", "ada", ADA_PASSWORD).await;
    let bob_id = user(&gw, "Bob", "202", "bob", BOB_PASSWORD).await;
    // Bob's desk phone declines.
    let desk_port = support::free_udp_port(CARRIER_IP);
    gw.directory()
        .create_device(switchboard_gateway::directory::NewDevice {
            user_id: bob_id.clone(),
            name: "desk".into(),
            contact_uri: format!("sip:bob@{CARRIER_IP}:{desk_port}"),
        })
        .await
        .unwrap();
    let desk = Sipp::spawn(
        gw.dir.path(),
        SippRun { label: "desk", scenario: "device_uas_decline.xml", ip: CARRIER_IP, remote: None, service: None, port: desk_port },
    );
    let mut ada = phone(&gw, "ada", ADA_PASSWORD, &ada_mic).await;

    ada.command("dial", &format!("sip:202@{}", gw.sip)).await;
    let first = ada.first_of(&["CALL_ESTABLISHED", "CALL_CLOSED"], 20).await;
    assert_eq!(first["type"], "CALL_ESTABLISHED", "the gateway answers for the voicemail: {first}");
    desk.succeeds().await;
    // The gateway hangs up once Ada has been silent for two seconds.
    let closed = ada.event("CALL_CLOSED", 60).await;
    assert!(closed["param"].as_str().is_some_and(|p| !p.is_empty()), "{closed}");

    // Ada heard the greeting first.
    let heard = read_mono(&ada.heard());
    let greeting = Prompt::bundled_voicemail_greeting();
    let g = similarity(window(&heard, 0.3, 4.5), greeting.samples());
    assert!(g > MATCHES, "the caller hears the greeting ({g:.2})");

    let events = gw.events_once("voicemail.available", 1).await;
    let ended = first!(events, Ended);
    assert_eq!(ended.reason(), switchboard_proto::v1::EndReason::Voicemail);
    assert_eq!(ended.hangup_by, "system");
    assert!(!events.iter().any(|(k, _)| k == "call.answered"), "nobody answered");
    let vm = first!(events, VoicemailAvailable);
    assert_eq!(vm.user_id, bob_id);
    assert_eq!(vm.ended_by, "silence");
    assert_eq!(vm.format, "mp3");
    // From the beep to half a second after her last word: the silence she
    // left before speaking (7 s from the answer, less greeting and beep),
    // her words, and half a second.
    let secs = vm.duration_ms as f64 / 1000.0;
    let lead = 7.0 - (greeting.len() as f64 / 8000.0 + 0.4);
    let expected = lead + spoken_secs + 0.5;
    assert!((secs - expected).abs() < 0.8, "the message is {secs:.2} s; expected about {expected:.2} s");

    // The MP3 holds what Ada said.
    let mp3 = std::fs::read(gw.dir.path().join("recordings").join(&vm.object_key)).unwrap();
    let decoded = support::audio::decode_mp3(&mp3);
    let s = similarity(&decoded, &read_mono(&ada_mic));
    assert!(s > MATCHES, "the message is Ada's speech ({s:.2})");
    let rows: Vec<(String, String)> =
        switchboard_store::sqlx::query_as("SELECT kind, user_id FROM recordings").fetch_all(gw.db.pool()).await.unwrap();
    assert_eq!(rows, [("voicemail".to_owned(), bob_id.clone())]);

    ada.quit().await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_opus_softphone_takes_an_a_law_carrier_call_through_the_transcoder() {
    let gw = TestGateway::start(|c| {
        media_config(c);
        c.recordings.record_all = true;
    })
    .await;
    let audio = gw.subdir("audio");
    let bob_mic = speech(&audio, "bob", "Bob here, on the browser codec. Go ahead please.", 6);
    let bob_id = user(&gw, "Bob", "202", "bob", BOB_PASSWORD).await;
    gw.directory().assign_number(BOB_NUMBER, &bob_id).await.unwrap();
    let mut bob = Baresip::start_with_codecs(
        gw.dir.path(),
        "bob",
        gw.sip,
        PhoneAccount { username: "bob", password: BOB_PASSWORD, answermode: "auto", register: true },
        &bob_mic,
        "opus",
    )
    .await;
    let outcome = bob.first_of(&["REGISTER_OK", "REGISTER_FAIL"], 20).await;
    assert_eq!(outcome["type"], "REGISTER_OK");

    // The carrier offers A-law only; Bob's phone speaks Opus only.
    let carrier = carrier_pcap(&gw);
    bob.event("CALL_ESTABLISHED", 20).await;
    let carrier = carrier.succeeds().await;
    bob.event("CALL_CLOSED", 20).await;

    // The carrier was answered with A-law, Bob's phone took Opus.
    let carrier_log = carrier.messages();
    assert!(carrier_log.contains("a=rtpmap:8 PCMA/8000"), "{carrier_log}");
    let bob_log = bob.log();
    assert!(bob_log.contains("Set audio decoder: opus"), "baresip decodes Opus\n{}", support::tail(&bob_log, 80));
    // What Bob heard went A-law → PCM → Opus and is still the carrier's speech.
    let spoken = pcap_alaw(Path::new("/usr/share/sip-tester/g711a.pcap"));
    let heard = read_mono(&bob.heard());
    let s = similarity(window(&heard, 1.0, 6.0), &spoken);
    assert!(s > MATCHES, "Bob hears the carrier through the transcoder ({s:.2})");
    assert_eq!(digits_received(&bob), "1", "the carrier's digit crosses from 8 kHz to 48 kHz events once\n{}", bob.log());

    // The recording decodes Opus for the agent's channel.
    let events = gw.events_once("recording.available", 1).await;
    let rec = first!(events, RecordingAvailable);
    let bytes = std::fs::read(gw.dir.path().join("recordings").join(&rec.object_key)).unwrap();
    let (left, right, _) = read_stereo(&bytes);
    let l = similarity(window(&left, 1.0, 6.0), &spoken);
    let r = similarity(window(&right, 1.0, 6.0), &read_mono(&bob_mic));
    assert!(l > MATCHES && r > MATCHES, "customer {l:.2}, agent (from Opus) {r:.2}");

    bob.quit().await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_line_with_an_admin_policy_is_recorded_admin_only_and_the_agent_rates_the_call() {
    // Agents record nothing by default here; the line's policy records anyway.
    let gw = TestGateway::start(media_config).await;
    let audio = gw.subdir("audio");
    let bob_mic = speech(&audio, "bob", "Sales line, Bob speaking.", 6);
    let bob_id = user(&gw, "Bob", "202", "bob", BOB_PASSWORD).await;
    let directory = gw.directory();
    directory.assign_number(BOB_NUMBER, &bob_id).await.unwrap();
    directory.set_number_recording_policy(BOB_NUMBER, true).await.unwrap();
    let mut bob = phone(&gw, "bob", BOB_PASSWORD, &bob_mic).await;

    let carrier = carrier_pcap(&gw);
    bob.event("CALL_ESTABLISHED", 20).await;
    let id = call_id(&gw).await;
    // The agent's own controls see no recording of theirs.
    let state = gw.control().media(&id, MediaCommand::Record(RecordCommand::Pause)).await.unwrap();
    assert_eq!(state.recording, RecordingState::Off, "the admin recording is not the agent's");
    gw.control().media(&id, MediaCommand::Record(RecordCommand::Resume)).await.unwrap();
    carrier.succeeds().await;
    bob.event("CALL_CLOSED", 20).await;

    let events = gw.events_once("recording.available", 1).await;
    let recordings: Vec<_> = events
        .iter()
        .filter_map(|(_, e)| match &e.kind {
            Some(Kind::RecordingAvailable(r)) => Some(r.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(recordings.len(), 1, "one recording: the administrator's");
    assert!(recordings[0].admin_only, "flagged admin-only in the event");
    let flags: Vec<i64> = switchboard_store::sqlx::query_scalar("SELECT admin_only FROM recordings").fetch_all(gw.db.pool()).await.unwrap();
    assert_eq!(flags, [1], "and in the database");
    let bytes = std::fs::read(gw.dir.path().join("recordings").join(&recordings[0].object_key)).unwrap();
    let (left, _, _) = read_stereo(&bytes);
    let spoken = pcap_alaw(Path::new("/usr/share/sip-tester/g711a.pcap"));
    assert!(similarity(window(&left, 1.0, 6.0), &spoken) > MATCHES, "the whole call is in it");

    // After the call, Bob rates its audio; nonsense is refused.
    let control = gw.control();
    assert!(control.rate(&id, &bob_id, 7, "").await.is_err(), "scores are 1 to 5");
    assert!(control.rate("no-such-call", &bob_id, 3, "").await.is_err());
    control.rate(&id, &bob_id, 4, "a little echo").await.unwrap();
    let events = gw.events_once("call.rating", 1).await;
    let rating = first!(events, Rating);
    assert_eq!((rating.score, rating.user_id.as_str(), rating.comment.as_str()), (4, bob_id.as_str(), "a little echo"));

    bob.quit().await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_screens_a_voicemail_listening_unheard_then_picks_up() {
    let gw = TestGateway::start(|c| {
        media_config(c);
        c.recordings.record_all = true;
    })
    .await;
    let audio = gw.subdir("audio");
    // Ada waits for the beep, then leaves her message.
    let ada_mic = speech_between_silences(&audio, "ada", "Hi Bob, it is Ada. I need the signed contract by Friday.", 7, 40);
    let bob_mic = speech(&audio, "bob", "Bob here, I heard you, I am picking up now.", 8);
    user(&gw, "Ada", "201", "ada", ADA_PASSWORD).await;
    user(&gw, "Bob", "202", "bob", BOB_PASSWORD).await;
    let mut ada = phone(&gw, "ada", ADA_PASSWORD, &ada_mic).await;
    let mut bob = Baresip::start_with_audio(
        gw.dir.path(),
        "bob",
        gw.sip,
        PhoneAccount { username: "bob", password: BOB_PASSWORD, answermode: "manual", register: true },
        &bob_mic,
    )
    .await;
    assert_eq!(bob.first_of(&["REGISTER_OK", "REGISTER_FAIL"], 20).await["type"], "REGISTER_OK");

    // Bob declines; Ada gets his voicemail.
    ada.command("dial", &format!("sip:202@{}", gw.sip)).await;
    bob.event("CALL_INCOMING", 20).await;
    bob.command("hangup", "").await;
    assert_eq!(ada.first_of(&["CALL_ESTABLISHED", "CALL_CLOSED"], 20).await["type"], "CALL_ESTABLISHED");
    let answered_at = Instant::now();
    bob.event("CALL_CLOSED", 10).await;
    let id = gw.events_once("call.started", 1).await[0].1.call_id.clone();

    // Bob screens: his phone rings again, he answers and listens.
    let control = gw.control();
    assert!(control.pick_up(&id).await.is_err(), "nothing to pick up before screening");
    control.screen(&id).await.unwrap();
    bob.event("CALL_INCOMING", 20).await;
    bob.command("accept", "").await;
    bob.event("CALL_ESTABLISHED", 10).await;
    let screening_from = Instant::now();
    // Ada speaks from 7 s after the answer, for a few seconds.
    tokio::time::sleep(Duration::from_secs(12).saturating_sub(answered_at.elapsed())).await;
    let screened_secs = screening_from.elapsed().as_secs_f64();
    control.pick_up(&id).await.unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    ada.command("hangup", "").await;
    bob.event("CALL_CLOSED", 10).await;

    // While screening, Bob heard Ada's message; Ada heard nothing of Bob
    // until he picked up, then his voice.
    let bob_heard = read_mono(&bob.heard());
    // (Her microphone file as the reference: the silence before her words too.)
    let ada_said = read_mono(&ada_mic);
    let s = similarity(window(&bob_heard, 0.5, screened_secs - 0.3), &ada_said);
    assert!(s > MATCHES, "the screening agent hears the caller's message ({s:.2})");
    let ada_heard = read_mono(&ada.heard());
    let greeting_secs = Prompt::bundled_voicemail_greeting().len() as f64 / 8000.0 + 0.4;
    // Ada's phone decoded the greeting and beep, nothing while Bob listened
    // (he was not sent to her), then Bob after the pick-up.
    let after = window(&ada_heard, greeting_secs + 0.3, ada_heard.len() as f64 / 8000.0);
    let s = similarity(after, &read_mono(&bob_mic));
    assert!(s > MATCHES, "after picking up, Ada hears Bob ({s:.2})");
    let after_secs = after.len() as f64 / 8000.0;
    assert!(after_secs < 4.0, "Ada was sent nothing of Bob before he picked up: {after_secs:.1} s of audio after the beep");

    let events = gw.events_once("voicemail.available", 1).await;
    let screening: Vec<bool> = events
        .iter()
        .filter_map(|(_, e)| match &e.kind {
            Some(Kind::Screening(s)) => Some(s.picked_up),
            _ => None,
        })
        .collect();
    assert_eq!(screening, [false, true]);
    assert!(events.iter().any(|(k, _)| k == "call.answered"), "picking up answers the call");
    let vm = first!(events, VoicemailAvailable);
    assert_eq!(vm.ended_by, "picked_up", "the partial message is kept");
    assert!(vm.duration_ms > 3000, "{} ms", vm.duration_ms);
    // Once picked up it is an answered call: recorded like any other, from then on.
    let events = gw.events_once("recording.available", 1).await;
    let rec = first!(events, RecordingAvailable);
    let secs = rec.duration_ms as f64 / 1000.0;
    assert!((2.0..5.0).contains(&secs), "recorded from the pick-up to the hangup: {secs:.2} s");

    ada.quit().await;
    bob.quit().await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_for_a_user_with_nothing_that_can_ring_goes_straight_to_voicemail() {
    let gw = TestGateway::start(|c| {
        media_config(c);
        c.voicemail.format = switchboard_gateway::media::encode::RecordingFormat::Wav;
    })
    .await;
    // Bob has a number but no device at all.
    let bob = gw.directory().create_user(NewUser { name: "Bob".into(), ..Default::default() }).await.unwrap();
    gw.directory().assign_number(BOB_NUMBER, &bob.id).await.unwrap();

    // The carrier plays 8 s of speech, then a digit, then hangs up: the
    // greeting takes the first 5.6 s, the message gets the rest.
    let carrier = carrier_pcap(&gw);
    carrier.succeeds().await;

    let events = gw.events_once("voicemail.available", 1).await;
    let kinds: Vec<&str> = events.iter().map(|(k, _)| k.as_str()).collect();
    assert!(!kinds.contains(&"call.ringing") && !kinds.contains(&"call.answered"), "{kinds:?}");
    let ended = first!(events, Ended);
    assert_eq!(ended.reason(), switchboard_proto::v1::EndReason::Voicemail);
    let vm = first!(events, VoicemailAvailable);
    assert_eq!((vm.user_id.as_str(), vm.ended_by.as_str(), vm.format.as_str()), (bob.id.as_str(), "caller_hung_up", "wav/pcm_s16le"));
    let secs = vm.duration_ms as f64 / 1000.0;
    assert!((2.5..6.0).contains(&secs), "the message is what followed the beep: {secs:.2} s");
    let wav = std::fs::read(gw.dir.path().join("recordings").join(&vm.object_key)).unwrap();
    let message = read_mono_bytes(&wav);
    let spoken = pcap_alaw(Path::new("/usr/share/sip-tester/g711a.pcap"));
    let s = similarity(window(&message, 0.1, 2.0), &spoken);
    assert!(s > MATCHES, "the message holds the end of the carrier's speech ({s:.2})");

    gw.stop().await;
}

fn read_mono_bytes(wav: &[u8]) -> Vec<i16> {
    let mut r = hound::WavReader::new(std::io::Cursor::new(wav)).expect("a WAV");
    assert_eq!(r.spec().channels, 1, "a voicemail is mono");
    r.samples::<i16>().map(|s| s.unwrap()).collect()
}
