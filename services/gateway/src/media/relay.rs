//! The RTP relay of one call: two legs, each with its own RTP/RTCP sockets;
//! packets from the caller go out of the device leg and back, with the
//! recorder tapping both directions.
//!
//! Symmetric RTP: each leg sends to where its peer's packets come from
//! (latching), which gets media through NATs; until the first packet the
//! address from the peer's SDP is used.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::{debug, warn};

use super::ports::PortPair;
use super::quality::{Reception, ReceptionReport};
use super::recorder::{Channel, Finished, Pushed, Recorder};

/// Longest recording kept in memory before it is cut (4 hours).
pub const MAX_RECORDING: Duration = Duration::from_secs(4 * 3600);

/// Which leg of the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Towards the caller / customer.
    A,
    /// Towards the agent's device.
    B,
}

enum Control {
    Remote(Side, SocketAddr),
    StartRecording,
    Stop(oneshot::Sender<RelayReport>),
}

/// What the relay carried, reported when it stops.
#[derive(Debug, Default)]
pub struct RelayReport {
    pub packets_a_to_b: u64,
    pub packets_b_to_a: u64,
    /// RTP reception from each side (index: `Side as usize`): loss and
    /// jitter of what the caller and the device sent.
    pub reception: [ReceptionReport; 2],
    pub recording: Option<Finished>,
}

/// Handle to a running relay.
#[derive(Debug)]
pub struct MediaRelay {
    pub a_port: u16,
    pub b_port: u16,
    control: mpsc::UnboundedSender<Control>,
}

impl MediaRelay {
    /// Starts relaying between the two legs; `a_remote` is the caller's RTP
    /// address from its offer.
    pub fn start(call_id: String, a: PortPair, b: PortPair, a_remote: SocketAddr) -> MediaRelay {
        let (tx, rx) = mpsc::unbounded_channel();
        let relay = MediaRelay { a_port: a.port, b_port: b.port, control: tx };
        tokio::spawn(run(call_id, a, b, a_remote, rx));
        relay
    }

    /// Sets where a leg's peer receives RTP (from its SDP).
    pub fn set_remote(&self, side: Side, rtp: SocketAddr) {
        let _ = self.control.send(Control::Remote(side, rtp));
    }

    pub fn start_recording(&self) {
        let _ = self.control.send(Control::StartRecording);
    }

    /// Stops the relay, frees its ports and returns the recording, if any.
    pub async fn stop(self) -> RelayReport {
        let (tx, rx) = oneshot::channel();
        if self.control.send(Control::Stop(tx)).is_err() {
            return RelayReport::default();
        }
        rx.await.unwrap_or_default()
    }
}

struct Leg {
    pair: PortPair,
    rtp_remote: Option<SocketAddr>,
    rtcp_remote: Option<SocketAddr>,
    latched: bool,
}

async fn run(call_id: String, a: PortPair, b: PortPair, a_remote: SocketAddr, mut control: mpsc::UnboundedReceiver<Control>) {
    let mut legs = [
        Leg { pair: a, rtp_remote: Some(a_remote), rtcp_remote: Some(rtcp_of(a_remote)), latched: false },
        Leg { pair: b, rtp_remote: None, rtcp_remote: None, latched: false },
    ];
    let mut recorder: Option<(Recorder, Instant)> = None;
    let mut report = RelayReport::default();
    let epoch = Instant::now();
    // G.711 runs at 8 kHz; the clock rate of the timestamps jitter is in.
    let mut reception = [Reception::new(8000), Reception::new(8000)];
    let mut bufs = [vec![0u8; 2048], vec![0u8; 2048], vec![0u8; 2048], vec![0u8; 2048]];
    let [ba, bb, ca, cb] = &mut bufs;
    loop {
        let (from_side, is_rtp, n, src) = tokio::select! {
            c = control.recv() => match c {
                Some(Control::Remote(side, addr)) => {
                    let leg = &mut legs[side as usize];
                    if !leg.latched {
                        leg.rtp_remote = Some(addr);
                        leg.rtcp_remote = Some(rtcp_of(addr));
                    }
                    continue;
                }
                Some(Control::StartRecording) => {
                    if recorder.is_none() {
                        recorder = Some((Recorder::new(MAX_RECORDING), Instant::now()));
                    }
                    continue;
                }
                Some(Control::Stop(reply)) => {
                    report.reception = [reception[0].report(), reception[1].report()];
                    if let Some((rec, started)) = recorder.take() {
                        match rec.finish(started.elapsed()) {
                            Ok(f) => report.recording = Some(f),
                            Err(e) => warn!(call_id, error = %e, "writing the recording failed"),
                        }
                    }
                    let _ = reply.send(report);
                    return;
                }
                None => return,
            },
            r = legs[0].pair.rtp.recv_from(ba) => match r { Ok((n, s)) => (Side::A, true, n, s), Err(_) => continue },
            r = legs[1].pair.rtp.recv_from(bb) => match r { Ok((n, s)) => (Side::B, true, n, s), Err(_) => continue },
            r = legs[0].pair.rtcp.recv_from(ca) => match r { Ok((n, s)) => (Side::A, false, n, s), Err(_) => continue },
            r = legs[1].pair.rtcp.recv_from(cb) => match r { Ok((n, s)) => (Side::B, false, n, s), Err(_) => continue },
        };
        let data: &[u8] = match (from_side, is_rtp) {
            (Side::A, true) => &ba[..n],
            (Side::B, true) => &bb[..n],
            (Side::A, false) => &ca[..n],
            (Side::B, false) => &cb[..n],
        };
        let (from, to) = match from_side {
            Side::A => (0, 1),
            Side::B => (1, 0),
        };
        if is_rtp {
            if let Some(p) = super::rtp::parse(data) {
                reception[from].packet(p.ssrc, p.sequence, p.timestamp, epoch.elapsed());
            }
        }
        // Latch: the peer's real address is where its packets come from.
        if is_rtp {
            if legs[from].rtp_remote != Some(src) {
                debug!(call_id, side = ?from_side, %src, "RTP source latched");
            }
            legs[from].rtp_remote = Some(src);
            legs[from].latched = true;
        } else {
            legs[from].rtcp_remote = Some(src);
        }
        let target = if is_rtp { legs[to].rtp_remote } else { legs[to].rtcp_remote };
        if let Some(target) = target {
            let sock = if is_rtp { &legs[to].pair.rtp } else { &legs[to].pair.rtcp };
            let _ = sock.send_to(data, target).await;
            if is_rtp {
                match from_side {
                    Side::A => report.packets_a_to_b += 1,
                    Side::B => report.packets_b_to_a += 1,
                }
            }
        }
        if is_rtp {
            if let Some((rec, started)) = recorder.as_mut() {
                let channel = match from_side {
                    Side::A => Channel::Customer,
                    Side::B => Channel::Agent,
                };
                if rec.push(channel, started.elapsed(), data) == Pushed::Overflow {
                    metrics::counter!("switchboard_recording_overflow_packets_total").increment(1);
                }
            }
        }
    }
}

fn rtcp_of(rtp: SocketAddr) -> SocketAddr {
    SocketAddr::new(rtp.ip(), rtp.port().wrapping_add(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::{ports::PortAllocator, rtp};
    use tokio::net::UdpSocket;

    #[tokio::test]
    async fn relays_both_ways_and_records() {
        let ports = PortAllocator::new("127.0.0.1".parse().unwrap(), 42_000, 42_099);
        let caller = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let device = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let relay = MediaRelay::start(
            "t".into(),
            ports.allocate().await.unwrap(),
            ports.allocate().await.unwrap(),
            caller.local_addr().unwrap(),
        );
        relay.set_remote(Side::B, device.local_addr().unwrap());
        relay.start_recording();
        let a_addr: SocketAddr = format!("127.0.0.1:{}", relay.a_port).parse().unwrap();
        let b_addr: SocketAddr = format!("127.0.0.1:{}", relay.b_port).parse().unwrap();
        let mut buf = [0u8; 2048];
        for i in 0..10u16 {
            caller.send_to(&rtp::build(0, i, 160 * i as u32, 1, &[0x10; 160]), a_addr).await.unwrap();
            let (n, from) = device.recv_from(&mut buf).await.unwrap();
            assert_eq!(from, b_addr, "the device sees the gateway, not the caller");
            assert_eq!(rtp::parse(&buf[..n]).unwrap().sequence, i);
            device.send_to(&buf[..n], b_addr).await.unwrap();
            let (n, from) = caller.recv_from(&mut buf).await.unwrap();
            assert_eq!(from, a_addr);
            assert_eq!(n, 172);
        }
        let report = relay.stop().await;
        assert_eq!((report.packets_a_to_b, report.packets_b_to_a), (10, 10));
        assert_eq!((report.reception[0].received, report.reception[0].lost), (10, 0), "the caller's stream, measured");
        assert_eq!(report.reception[1].received, 10);
        let rec = report.recording.expect("recording");
        let mut r = hound::WavReader::new(std::io::Cursor::new(rec.wav)).unwrap();
        let samples: Vec<i16> = r.samples::<i16>().map(|s| s.unwrap()).collect();
        assert!(samples.iter().step_by(2).any(|s| *s != 0), "customer channel has audio");
        assert!(samples.iter().skip(1).step_by(2).any(|s| *s != 0), "agent channel has audio");
    }
}
