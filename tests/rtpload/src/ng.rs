//! Calls through rtpengine, set up with its ng control protocol: each
//! message is `<cookie> <bencoded dictionary>` in one UDP datagram, and the
//! reply repeats the cookie. Per call:
//!
//! - `offer` with the caller's SDP: the reply is the SDP to forward to the
//!   callee, so it holds the port the *agent* sends to (B);
//! - `answer` with the agent's SDP: the reply is the SDP for the caller,
//!   with the port the *caller* sends to (A);
//! - `delete` at the end.
//!
//! A request is retransmitted with the same cookie until answered
//! (rtpengine answers a repeated cookie from its cache without acting
//! twice).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Instant;

use crate::bencode::{self, Value};
use crate::sdp;
use crate::signalling::{Datagram, Due, Event, Output, Retransmit, Signalling};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Offer,
    Answer,
    Up,
    Delete,
    Done,
}

#[derive(Debug)]
struct Call {
    step: Step,
    cookie: String,
    b: Option<SocketAddr>,
    retransmit: Option<Retransmit>,
}

/// ng signalling towards rtpengine.
pub struct RtpengineNg {
    server: SocketAddr,
    run: u64,
    caller_media: Box<dyn Fn(u32) -> SocketAddr>,
    agent_media: Box<dyn Fn(u32) -> SocketAddr>,
    calls: HashMap<u32, Call>,
    cookies: u64,
}

/// What an ng reply said.
#[derive(Debug, PartialEq, Eq)]
enum Reply {
    Ok { sdp: Option<String> },
    Error(String),
}

fn parse_reply(data: &[u8]) -> Option<(&str, Reply)> {
    let space = data.iter().position(|b| *b == b' ')?;
    let cookie = std::str::from_utf8(&data[..space]).ok()?;
    let (v, _) = bencode::decode(&data[space + 1..]).ok()?;
    let result = v.get("result")?.as_str()?;
    let reply = match result {
        "ok" => Reply::Ok {
            sdp: v.get("sdp").and_then(Value::as_str).map(str::to_owned),
        },
        other => Reply::Error(
            v.get("error-reason")
                .and_then(Value::as_str)
                .map(|r| format!("{other}: {r}"))
                .unwrap_or_else(|| other.to_owned()),
        ),
    };
    Some((cookie, reply))
}

impl RtpengineNg {
    pub fn new(
        server: SocketAddr,
        run: u64,
        caller_media: Box<dyn Fn(u32) -> SocketAddr>,
        agent_media: Box<dyn Fn(u32) -> SocketAddr>,
    ) -> RtpengineNg {
        RtpengineNg {
            server,
            run,
            caller_media,
            agent_media,
            calls: HashMap::new(),
            cookies: 0,
        }
    }

    fn call_id(&self, call: u32) -> String {
        format!("rtpload-{}-{call}", self.run)
    }

    fn request(
        &mut self,
        call: u32,
        command: &str,
        sdp: Option<String>,
        now: Instant,
    ) -> (String, Datagram, Retransmit) {
        self.cookies += 1;
        let cookie = format!("{}_{}", self.run, self.cookies);
        let mut pairs = vec![
            ("command", Value::str(command)),
            ("call-id", Value::str(&self.call_id(call))),
            ("from-tag", Value::str(&format!("caller{call}"))),
        ];
        if command != "offer" {
            pairs.push(("to-tag", Value::str(&format!("agent{call}"))));
        }
        if let Some(sdp) = sdp {
            pairs.push(("sdp", Value::Bytes(sdp.into_bytes())));
            pairs.push((
                "replace",
                Value::List(vec![Value::str("origin"), Value::str("session-connection")]),
            ));
        }
        let mut data = format!("{cookie} ").into_bytes();
        Value::dict(pairs).encode(&mut data);
        let d = Datagram {
            socket: 0,
            to: self.server,
            data,
        };
        (cookie, d.clone(), Retransmit::new(d, now))
    }

    fn send(&mut self, call: u32, step: Step, now: Instant, out: &mut Output) {
        let (command, sdp) = match step {
            Step::Offer => (
                "offer",
                Some(sdp::pcmu(u64::from(call), (self.caller_media)(call))),
            ),
            Step::Answer => (
                "answer",
                Some(sdp::pcmu(u64::from(call), (self.agent_media)(call))),
            ),
            Step::Delete => ("delete", None),
            Step::Up | Step::Done => return,
        };
        let (cookie, d, r) = self.request(call, command, sdp, now);
        out.send.push(d);
        let b = self.calls.get(&call).and_then(|c| c.b);
        self.calls.insert(
            call,
            Call {
                step,
                cookie,
                b,
                retransmit: Some(r),
            },
        );
    }
}

impl Signalling for RtpengineNg {
    fn sockets(&self) -> usize {
        1
    }

    fn start(&mut self, call: u32, now: Instant, out: &mut Output) {
        self.send(call, Step::Offer, now, out);
    }

    fn hang_up(&mut self, call: u32, now: Instant, out: &mut Output) {
        if self.calls.get(&call).is_some_and(|c| c.step == Step::Up) {
            self.send(call, Step::Delete, now, out);
        }
    }

    fn on_datagram(
        &mut self,
        _socket: usize,
        _from: SocketAddr,
        data: &[u8],
        now: Instant,
        out: &mut Output,
    ) {
        let Some((cookie, reply)) = parse_reply(data) else {
            return;
        };
        // Cookies are `<run>_<n>`; find the call still waiting for this one.
        let Some((&call, c)) = self
            .calls
            .iter_mut()
            .find(|(_, c)| c.cookie == cookie && c.retransmit.is_some())
        else {
            return;
        };
        c.retransmit = None;
        let step = c.step;
        match (step, reply) {
            (Step::Offer, Reply::Ok { sdp }) => match sdp.as_deref().and_then(sdp::audio_addr) {
                Some(b) => {
                    c.b = Some(b);
                    self.send(call, Step::Answer, now, out);
                }
                None => {
                    c.step = Step::Done;
                    out.events.push(Event::Failed {
                        call,
                        reason: "rtpengine's offer reply has no usable SDP audio address".into(),
                    });
                }
            },
            (Step::Answer, Reply::Ok { sdp }) => {
                c.step = Step::Up;
                match (sdp.as_deref().and_then(sdp::audio_addr), c.b) {
                    (Some(a), Some(b)) => out.events.push(Event::Up { call, a, b }),
                    _ => out.events.push(Event::Failed {
                        call,
                        reason: "rtpengine's answer reply has no usable SDP audio address".into(),
                    }),
                }
            }
            (Step::Delete, reply) => {
                c.step = Step::Done;
                out.events.push(Event::Ended {
                    call,
                    clean: matches!(reply, Reply::Ok { .. }),
                });
            }
            (step, Reply::Error(e)) => {
                c.step = Step::Done;
                out.events.push(Event::Failed {
                    call,
                    reason: format!("rtpengine refused the {step:?}: {e}"),
                });
            }
            _ => {}
        }
    }

    fn on_timer(&mut self, now: Instant, out: &mut Output) {
        for (call, c) in self.calls.iter_mut() {
            let Some(r) = c.retransmit.as_mut().filter(|r| r.next <= now) else {
                continue;
            };
            match r.fire(now) {
                Due::Resend => out.send.push(r.datagram.clone()),
                Due::GiveUp => {
                    c.retransmit = None;
                    let step = std::mem::replace(&mut c.step, Step::Done);
                    out.events.push(match step {
                        Step::Delete => Event::Ended {
                            call: *call,
                            clean: false,
                        },
                        _ => Event::Failed {
                            call: *call,
                            reason: format!("no reply from rtpengine to the {step:?} within 32 s"),
                        },
                    });
                }
            }
        }
    }

    fn next_timer(&self) -> Option<Instant> {
        self.calls
            .values()
            .filter_map(|c| c.retransmit.as_ref().map(|r| r.next))
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ng() -> RtpengineNg {
        RtpengineNg::new(
            "127.0.0.1:2223".parse().unwrap(),
            5,
            Box::new(|_| "127.0.0.1:7000".parse().unwrap()),
            Box::new(|_| "127.0.0.1:7002".parse().unwrap()),
        )
    }

    /// Splits a request into its cookie and dictionary.
    fn request(d: &Datagram) -> (String, Value) {
        let space = d.data.iter().position(|b| *b == b' ').unwrap();
        (
            String::from_utf8(d.data[..space].to_vec()).unwrap(),
            bencode::decode(&d.data[space + 1..]).unwrap().0,
        )
    }

    fn reply(cookie: &str, dict: Value) -> Vec<u8> {
        let mut out = format!("{cookie} ").into_bytes();
        dict.encode(&mut out);
        out
    }

    fn ok_sdp(port: u16) -> Value {
        Value::dict([
            ("result", Value::str("ok")),
            (
                "sdp",
                Value::str(&sdp::pcmu(1, SocketAddr::from(([127, 0, 0, 1], port)))),
            ),
        ])
    }

    #[test]
    fn offer_gives_the_agent_port_answer_the_caller_port() {
        let now = Instant::now();
        let from: SocketAddr = "127.0.0.1:2223".parse().unwrap();
        let mut s = ng();
        let mut out = Output::default();
        s.start(4, now, &mut out);
        let (cookie, offer) = request(&out.send[0]);
        assert_eq!(offer.get("command").and_then(Value::as_str), Some("offer"));
        assert_eq!(
            offer.get("call-id").and_then(Value::as_str),
            Some("rtpload-5-4")
        );
        assert_eq!(
            offer
                .get("sdp")
                .and_then(Value::as_str)
                .and_then(sdp::audio_addr),
            Some("127.0.0.1:7000".parse().unwrap())
        );

        let mut out = Output::default();
        s.on_datagram(0, from, &reply(&cookie, ok_sdp(30002)), now, &mut out);
        let (cookie2, answer) = request(&out.send[0]);
        assert_ne!(cookie, cookie2);
        assert_eq!(
            answer.get("command").and_then(Value::as_str),
            Some("answer")
        );
        assert_eq!(answer.get("to-tag").and_then(Value::as_str), Some("agent4"));
        assert_eq!(
            answer
                .get("sdp")
                .and_then(Value::as_str)
                .and_then(sdp::audio_addr),
            Some("127.0.0.1:7002".parse().unwrap())
        );
        // A late duplicate of the offer reply changes nothing.
        let mut dup = Output::default();
        s.on_datagram(0, from, &reply(&cookie, ok_sdp(30002)), now, &mut dup);
        assert!(dup.send.is_empty() && dup.events.is_empty());

        let mut out = Output::default();
        s.on_datagram(0, from, &reply(&cookie2, ok_sdp(30000)), now, &mut out);
        assert_eq!(
            out.events,
            vec![Event::Up {
                call: 4,
                a: "127.0.0.1:30000".parse().unwrap(),
                b: "127.0.0.1:30002".parse().unwrap()
            }]
        );

        let mut out = Output::default();
        s.hang_up(4, now, &mut out);
        let (cookie3, delete) = request(&out.send[0]);
        assert_eq!(
            delete.get("command").and_then(Value::as_str),
            Some("delete")
        );
        let mut out = Output::default();
        s.on_datagram(
            0,
            from,
            &reply(&cookie3, Value::dict([("result", Value::str("ok"))])),
            now,
            &mut out,
        );
        assert_eq!(
            out.events,
            vec![Event::Ended {
                call: 4,
                clean: true
            }]
        );
    }

    #[test]
    fn errors_and_silence_fail_the_call() {
        let now = Instant::now();
        let mut s = ng();
        let mut out = Output::default();
        s.start(0, now, &mut out);
        s.start(1, now, &mut out);
        let (cookie, _) = request(&out.send[0]);
        let err = Value::dict([
            ("result", Value::str("error")),
            ("error-reason", Value::str("Ran out of ports")),
        ]);
        let mut out = Output::default();
        s.on_datagram(
            0,
            "127.0.0.1:2223".parse().unwrap(),
            &reply(&cookie, err),
            now,
            &mut out,
        );
        assert!(
            matches!(&out.events[..], [Event::Failed { call: 0, reason }] if reason.contains("Ran out of ports"))
        );
        let mut out = Output::default();
        s.on_datagram(
            0,
            "127.0.0.1:2223".parse().unwrap(),
            b"garbage",
            now,
            &mut out,
        );
        assert!(out.events.is_empty());
        while let Some(t) = s.next_timer() {
            s.on_timer(t, &mut out);
        }
        assert!(out.send.len() > 3, "retransmitted with the same cookie");
        assert!(out.send.iter().all(|d| d.data.starts_with(b"5_2 ")));
        assert!(matches!(&out.events[..], [Event::Failed { call: 1, .. }]));
    }
}
