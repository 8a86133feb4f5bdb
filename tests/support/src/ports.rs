//! Free ports for the servers and user agents a test starts.
//!
//! Tests run in parallel (one process each under nextest), so every server
//! gets ports that were free a moment ago. TCP ports come from the kernel
//! (bind to port 0). UDP ports come from two zones that never meet:
//!
//! - a port a program must be told before it starts (SIPp, baresip,
//!   coturn's relays) is picked at random *below* the kernel's ephemeral
//!   range and checked by binding it ([`free_udp_range`]). A port the
//!   kernel chose would be free again once released, and the kernel, or a
//!   gateway taking media ports, could hand it to someone else before the
//!   program binds it;
//! - a gateway under test takes its media ports *inside* the ephemeral
//!   range ([`gateway_media_range`]): it binds them only when a call needs
//!   them and skips any that something else holds, so sharing that zone
//!   with the kernel's choices costs nothing.
//!
//! Runs of consecutive ports start on an even port (RTP and RTCP pairs,
//! SIPp's echo on its port and the one two above). Decision 0031.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::ops::Range;

use anyhow::Context as _;
use rand::Rng as _;

/// The loopback address every test server listens on.
pub const LOCALHOST: Ipv4Addr = Ipv4Addr::LOCALHOST;

/// Where picked UDP ports lie: above the well-known and registered
/// services most machines run, below Linux's default ephemeral range
/// (32768–60999), where the kernel's own choices would race with ours.
const PICKED: Range<u16> = 10_000..32_000;

/// Where test gateways take media ports: inside the ephemeral range.
const GATEWAY_MEDIA: Range<u16> = 33_000..60_000;

/// A TCP port on 127.0.0.1 that was free when asked.
pub fn free_tcp_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind((LOCALHOST, 0)).context("binding a TCP port on 127.0.0.1")?;
    Ok(listener.local_addr()?.port())
}

/// A port free for both UDP and TCP on 127.0.0.1 (SIP listens on both).
pub fn free_udp_and_tcp_port() -> anyhow::Result<u16> {
    for _ in 0..200 {
        let base = free_udp_range(LOCALHOST.into(), 1)?;
        if TcpListener::bind((LOCALHOST, base)).is_ok() {
            return Ok(base);
        }
    }
    anyhow::bail!("found no port free for both UDP and TCP on 127.0.0.1")
}

/// The first of `count` consecutive UDP ports on `ip`, all free when
/// asked; the first one is even.
pub fn free_udp_range(ip: IpAddr, count: u16) -> anyhow::Result<u16> {
    free_run(ip, PICKED, count)
}

/// The first of `count` consecutive ports for a test gateway's media
/// (`media.port_min`, with `media.port_max` = it + `count` - 1), free on
/// 127.0.0.1 when asked.
pub fn gateway_media_range(count: u16) -> u16 {
    free_run(LOCALHOST.into(), GATEWAY_MEDIA, count).expect("free ports for the gateway's media")
}

fn free_run(ip: IpAddr, zone: Range<u16>, count: u16) -> anyhow::Result<u16> {
    anyhow::ensure!(count > 0 && count < 1_000, "asked for {count} consecutive UDP ports");
    let mut rng = rand::rng();
    'candidate: for _ in 0..500 {
        let base = rng.random_range(zone.start / 2..(zone.end - count) / 2) * 2;
        let mut held = Vec::with_capacity(count as usize);
        for port in base..base + count {
            match UdpSocket::bind(SocketAddr::new(ip, port)) {
                Ok(socket) => held.push(socket),
                Err(_) => continue 'candidate,
            }
        }
        return Ok(base);
    }
    anyhow::bail!("found no {count} consecutive free UDP ports on {ip} between {} and {}", zone.start, zone.end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_picked_range_is_free_even_and_below_the_ephemeral_ports() {
        for count in [1, 2, 40] {
            let base = free_udp_range(LOCALHOST.into(), count).unwrap();
            assert_eq!(base % 2, 0);
            assert!(PICKED.contains(&base) && base + count <= PICKED.end, "{base}+{count}");
            // Free: all of them bind now.
            let held: Vec<_> = (base..base + count).map(|p| UdpSocket::bind((LOCALHOST, p)).unwrap()).collect();
            assert_eq!(held.len(), count as usize);
        }
    }

    #[test]
    fn a_gateways_media_ports_lie_in_the_ephemeral_range_apart_from_picked_ones() {
        let base = gateway_media_range(40);
        assert_eq!(base % 2, 0);
        assert!(GATEWAY_MEDIA.contains(&base) && base + 40 <= GATEWAY_MEDIA.end, "{base}");
        assert!(PICKED.end <= GATEWAY_MEDIA.start);
    }
}
