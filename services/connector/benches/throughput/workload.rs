//! The calls of a run and their events, as the gateway emits them, on one
//! timeline.
//!
//! Calls arrive as a Poisson process at the configured rate and overlap:
//! each rings and talks for some seconds, so at 50 calls/s about a
//! thousand are up at once. The mix (fixed, seeded, so every run offers
//! the same work):
//!
//! - 60 % inbound, 40 % outbound;
//! - 85 % answered: started, ringing, answered, ended after 4–30 s of talk,
//!   the quality report 20–150 ms after hangup; 80 % of them recorded
//!   (recording available 0.3–1 s after hangup), 25 % get a note 3–12 s
//!   after hangup, 10 % a rating 1–8 s after hangup;
//! - 10 % missed: started, ringing, ended (cancelled or not answered;
//!   busy for some outbound calls) after 3–15 s;
//! - 5 % voicemail (inbound): started, ringing, ended after the message,
//!   voicemail available 0.3–1 s later.
//!
//! Each call has one agent (its owner, who answers), so one Task.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use switchboard_proto::v1::{self, call_event::Kind};
use switchboard_proto::CallEvent;

/// One event of a call, due `at` after the start of the run. Its
/// `occurred_at_ms` is set when it is produced.
#[derive(Debug, Clone)]
pub struct Timed {
    pub at: Duration,
    pub event: CallEvent,
}

/// One call: its id and events in sequence order.
#[derive(Debug, Clone)]
pub struct Call {
    pub id: String,
    pub events: Vec<Timed>,
    /// Index in `events` of the hangup (`call.ended`).
    pub hangup: usize,
    /// Index in `events` of the recording (`call.recording_available`), and
    /// the link the Task shows once the connector applied it.
    pub recording: Option<(usize, String)>,
}

/// The agents calls are spread over: Switchboard user id and Salesforce
/// user id.
#[derive(Debug, Clone)]
pub struct Agent {
    pub user_id: String,
    pub salesforce_user_id: String,
}

/// Builds `count` calls arriving at `calls_per_second` from time zero.
pub fn calls(count: usize, calls_per_second: f64, agents: &[Agent], seed: u64) -> Vec<Call> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut start = 0.0f64;
    (0..count)
        .map(|i| {
            // Exponential gaps: a Poisson process of arrivals.
            start += -(1.0 - rng.random::<f64>()).ln() / calls_per_second;
            let agent = &agents[i % agents.len()];
            call(&mut rng, uuid::Uuid::now_v7().to_string(), agent, start)
        })
        .collect()
}

/// Every event of `calls`, in the order they are due: `(call index, event index)`.
pub fn timeline(calls: &[Call]) -> Vec<(usize, usize)> {
    let mut order: Vec<(usize, usize)> =
        calls.iter().enumerate().flat_map(|(c, call)| (0..call.events.len()).map(move |e| (c, e))).collect();
    order.sort_by_key(|&(c, e)| (calls[c].events[e].at, c, e));
    order
}

/// How a generated call goes.
enum Outcome {
    Answered { recorded: bool, note: bool, rating: bool },
    Missed,
    Voicemail,
}

fn call(rng: &mut StdRng, call_id: String, agent: &Agent, start: f64) -> Call {
    let roll = rng.random::<f64>();
    let outcome = if roll < 0.85 {
        Outcome::Answered { recorded: rng.random_bool(0.8), note: rng.random_bool(0.25), rating: rng.random_bool(0.10) }
    } else if roll < 0.95 {
        Outcome::Missed
    } else {
        Outcome::Voicemail
    };
    let inbound = matches!(outcome, Outcome::Voicemail) || rng.random_bool(0.6);
    let customer = v1::Party {
        number: format!("+1415{:07}", rng.random_range(0..10_000_000u32)),
        display_name: if inbound { "Carla Caller".into() } else { String::new() },
    };
    let line = v1::Party { number: "+14155550199".into(), display_name: String::new() };
    let (from, to) = if inbound { (customer, line) } else { (line, customer) };
    let who = v1::Agent {
        user_id: agent.user_id.clone(),
        salesforce_user_id: agent.salesforce_user_id.clone(),
        device_id: format!("{}-browser", agent.user_id),
        display_name: format!("Agent {}", agent.user_id),
        privacy_mode: false,
    };

    let mut kinds: Vec<(f64, Kind)> = Vec::new();
    let direction = if inbound { v1::Direction::Inbound } else { v1::Direction::Outbound };
    kinds.push((0.0, Kind::Started(v1::CallStarted { direction: direction as i32, from: Some(from), to: Some(to), owner: Some(who.clone()) })));
    kinds.push((rng.random_range(0.02..0.15), Kind::Ringing(v1::CallRinging { agent: Some(who.clone()) })));
    match outcome {
        Outcome::Answered { recorded, note, rating } => {
            let ring = rng.random_range(1.0..6.0);
            let talk = rng.random_range(4.0..30.0);
            let hangup = ring + talk;
            kinds.push((ring, Kind::Answered(v1::CallAnswered { agent: Some(who.clone()) })));
            kinds.push((hangup, ended(v1::EndReason::Completed, if rng.random_bool(0.5) { "caller" } else { "callee" }, talk, hangup, 200)));
            kinds.push((hangup + rng.random_range(0.02..0.15), quality(rng, talk)));
            if recorded {
                let duration_ms = (talk * 1000.0) as u64;
                kinds.push((
                    hangup + rng.random_range(0.3..1.0),
                    Kind::RecordingAvailable(v1::RecordingAvailable {
                        recording_id: format!("{call_id}-rec"),
                        object_key: format!("recordings/{call_id}.wav"),
                        url: format!("https://switchboard.example.com/recordings/{call_id}"),
                        format: "wav/pcm_s16le".into(),
                        duration_ms,
                        size_bytes: 44 + duration_ms * 32,
                        sample_rate_hz: 8000,
                        channels: vec![v1::ChannelRole::Customer as i32, v1::ChannelRole::Agent as i32],
                        admin_only: false,
                    }),
                ));
            }
            if rating {
                kinds.push((
                    hangup + rng.random_range(1.0..8.0),
                    Kind::Rating(v1::QualityRating { user_id: who.user_id.clone(), score: rng.random_range(2..=5), comment: String::new() }),
                ));
            }
            if note {
                kinds.push((
                    hangup + rng.random_range(3.0..12.0),
                    Kind::Note(v1::CallNote {
                        note_id: uuid::Uuid::now_v7().to_string(),
                        user_id: who.user_id.clone(),
                        text: "Customer asked about the renewal; sending the quote by email.".into(),
                    }),
                ));
            }
        }
        Outcome::Missed => {
            let ring = rng.random_range(3.0..15.0);
            let (reason, by, status) = match (inbound, rng.random_bool(0.5)) {
                (true, true) => (v1::EndReason::Cancelled, "caller", 487),
                (true, false) => (v1::EndReason::NoAnswer, "system", 480),
                (false, true) => (v1::EndReason::Busy, "callee", 486),
                (false, false) => (v1::EndReason::NoAnswer, "caller", 487),
            };
            kinds.push((ring, ended(reason, by, 0.0, ring, status)));
        }
        Outcome::Voicemail => {
            let hangup = rng.random_range(20.0..40.0);
            kinds.push((hangup, ended(v1::EndReason::Voicemail, "caller", 0.0, hangup, 200)));
            let message_ms = (rng.random_range(5.0..20.0) * 1000.0) as u64;
            kinds.push((
                hangup + rng.random_range(0.3..1.0),
                Kind::VoicemailAvailable(v1::VoicemailAvailable {
                    recording_id: format!("{call_id}-vm"),
                    object_key: format!("voicemail/{call_id}.wav"),
                    url: format!("https://switchboard.example.com/voicemail/{call_id}"),
                    format: "wav/pcm_s16le".into(),
                    duration_ms: message_ms,
                    size_bytes: 44 + message_ms * 16,
                    user_id: who.user_id.clone(),
                    ended_by: "caller_hung_up".into(),
                }),
            ));
        }
    }

    kinds.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut hangup = 0;
    let mut recording = None;
    let events = kinds
        .into_iter()
        .enumerate()
        .map(|(i, (offset, kind))| {
            match &kind {
                Kind::Ended(_) => hangup = i,
                Kind::RecordingAvailable(r) => recording = Some((i, r.url.clone())),
                _ => {}
            }
            let sequence = i as u64 + 1;
            Timed {
                at: Duration::from_secs_f64(start + offset),
                event: CallEvent {
                    event_id: uuid::Uuid::now_v7().to_string(),
                    call_id: call_id.clone(),
                    sequence,
                    occurred_at_ms: 0,
                    kind: Some(kind),
                },
            }
        })
        .collect();
    Call { id: call_id, events, hangup, recording }
}

fn ended(reason: v1::EndReason, hangup_by: &str, talk: f64, total: f64, sip_status: u32) -> Kind {
    Kind::Ended(v1::CallEnded {
        reason: reason as i32,
        hangup_by: hangup_by.into(),
        talk_seconds: talk as u32,
        total_seconds: total as u32,
        sip_status,
        q850_cause: if sip_status == 200 { 16 } else { 0 },
    })
}

/// The quality report of `talk` seconds of 20 ms packets each way.
fn quality(rng: &mut StdRng, talk: f64) -> Kind {
    let packets = (talk * 50.0) as u64;
    let mut leg = |leg: v1::Leg| {
        let loss = rng.random_range(0.0..0.01);
        v1::LegQuality {
            leg: leg as i32,
            packets_received: packets,
            packets_lost: (packets as f64 * loss) as u64,
            loss_ratio: loss,
            jitter_ms: rng.random_range(1.0..15.0),
            rtt_ms: rng.random_range(20.0..120.0),
            remote_loss_ratio: loss,
            remote_jitter_ms: rng.random_range(1.0..15.0),
            mos: rng.random_range(3.6..4.4),
        }
    };
    Kind::Quality(v1::QualityReport { legs: vec![leg(v1::Leg::Caller), leg(v1::Leg::Callee)] })
}
