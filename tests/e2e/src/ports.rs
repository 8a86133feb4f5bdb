//! Free ports for the servers and user agents a test starts.
//!
//! Tests run in parallel (one process each under nextest), so every server
//! gets ports that were free a moment ago. TCP ports come from the kernel
//! (bind to port 0). RTP needs runs of consecutive UDP ports (SIPp's echo
//! uses its port and the one two above; the gateway hands out even/odd
//! pairs), which the kernel does not allocate: those are picked at random
//! below the kernel's ephemeral range and checked by binding each one.

use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};

use anyhow::Context as _;
use rand::Rng as _;

/// The loopback address every test server listens on.
pub const LOCALHOST: Ipv4Addr = Ipv4Addr::LOCALHOST;

/// A TCP port on 127.0.0.1 that was free when asked.
pub fn free_tcp_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind((LOCALHOST, 0)).context("binding a TCP port on 127.0.0.1")?;
    Ok(listener.local_addr()?.port())
}

/// A port free for both UDP and TCP on 127.0.0.1 (SIP listens on both).
pub fn free_udp_and_tcp_port() -> anyhow::Result<u16> {
    for _ in 0..200 {
        let udp = UdpSocket::bind((LOCALHOST, 0)).context("binding a UDP port on 127.0.0.1")?;
        let port = udp.local_addr()?.port();
        if TcpListener::bind((LOCALHOST, port)).is_ok() {
            return Ok(port);
        }
    }
    anyhow::bail!("found no port free for both UDP and TCP on 127.0.0.1")
}

/// The first of `count` consecutive UDP ports on 127.0.0.1, all free; the
/// first one is even.
pub fn free_udp_range(count: u16) -> anyhow::Result<u16> {
    let mut rng = rand::rng();
    'candidate: for _ in 0..500 {
        // 10000..32000 stays below Linux's default ephemeral range (32768+),
        // where the kernel's own choices would race with ours.
        let base = rng.random_range(5_000u16..16_000 - count) * 2;
        let mut held = Vec::with_capacity(count as usize);
        for port in base..base + count {
            match UdpSocket::bind(SocketAddr::from((LOCALHOST, port))) {
                Ok(socket) => held.push(socket),
                Err(_) => continue 'candidate,
            }
        }
        return Ok(base);
    }
    anyhow::bail!("found no {count} consecutive free UDP ports on 127.0.0.1")
}
