//! What call setup looks like to the driver, whatever the relay: a sans-IO
//! state machine per system (SIP towards the gateway, the ng protocol
//! towards rtpengine) that is told to start and hang up calls, fed the
//! datagrams that arrive on its sockets and the time, and answers with
//! datagrams to send and events: a call is up (with the relay's RTP
//! address for each side), failed, or ended.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// A datagram to send from signalling socket `socket`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Datagram {
    pub socket: usize,
    pub to: SocketAddr,
    pub data: Vec<u8>,
}

/// What became of a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Media can flow: the caller sends to `a`, the agent to `b`.
    Up {
        call: u32,
        a: SocketAddr,
        b: SocketAddr,
    },
    /// The call could not be set up; `reason` says what the relay answered.
    Failed { call: u32, reason: String },
    /// The hang-up completed (`clean`: the relay confirmed it).
    Ended { call: u32, clean: bool },
}

/// Datagrams and events produced by one step of a state machine.
#[derive(Debug, Default)]
pub struct Output {
    pub send: Vec<Datagram>,
    pub events: Vec<Event>,
}

/// Call setup and teardown for one system, sans-IO.
pub trait Signalling {
    /// How many UDP sockets it talks on (bound by the driver, in order).
    fn sockets(&self) -> usize;
    /// Starts setting up call `call`.
    fn start(&mut self, call: u32, now: Instant, out: &mut Output);
    /// Hangs up an established call.
    fn hang_up(&mut self, call: u32, now: Instant, out: &mut Output);
    /// A datagram arrived on signalling socket `socket`.
    fn on_datagram(
        &mut self,
        socket: usize,
        from: SocketAddr,
        data: &[u8],
        now: Instant,
        out: &mut Output,
    );
    /// Retransmissions and give-ups that are due.
    fn on_timer(&mut self, now: Instant, out: &mut Output);
    /// When `on_timer` next has something to do.
    fn next_timer(&self) -> Option<Instant>;
}

/// A request sent over UDP until answered: RFC 3261 timer A/E style,
/// doubling from `T1` up to `T2`, given up after `GIVE_UP`.
#[derive(Debug, Clone)]
pub struct Retransmit {
    pub datagram: Datagram,
    pub next: Instant,
    interval: Duration,
    deadline: Instant,
}

pub const T1: Duration = Duration::from_millis(500);
pub const T2: Duration = Duration::from_secs(4);
pub const GIVE_UP: Duration = Duration::from_secs(32);

/// What a due retransmission timer asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Due {
    Resend,
    GiveUp,
}

impl Retransmit {
    pub fn new(datagram: Datagram, now: Instant) -> Retransmit {
        Retransmit {
            datagram,
            next: now + T1,
            interval: T1,
            deadline: now + GIVE_UP,
        }
    }

    /// Called when `now >= self.next`: either send again (and schedule the
    /// next one) or give up.
    pub fn fire(&mut self, now: Instant) -> Due {
        if now >= self.deadline {
            return Due::GiveUp;
        }
        self.interval = (self.interval * 2).min(T2);
        self.next = (now + self.interval).min(self.deadline);
        Due::Resend
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retransmissions_double_up_to_t2_then_give_up() {
        let t0 = Instant::now();
        let d = Datagram {
            socket: 0,
            to: "127.0.0.1:5060".parse().unwrap(),
            data: vec![1],
        };
        let mut r = Retransmit::new(d, t0);
        assert_eq!(r.next, t0 + T1);
        let mut gaps = Vec::new();
        let mut now = r.next;
        while r.fire(now) == Due::Resend {
            gaps.push(r.next - now);
            now = r.next;
        }
        assert_eq!(
            &gaps[..4],
            &[Duration::from_secs(1), Duration::from_secs(2), T2, T2]
        );
        assert_eq!(now, t0 + GIVE_UP);
    }
}
