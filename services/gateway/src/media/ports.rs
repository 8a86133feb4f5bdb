//! RTP port allocation: each leg takes an even port for RTP and the odd port
//! above for RTCP, bound before the port is written into any SDP.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use std::net::UdpSocket;

/// A leg's bound RTP and RTCP sockets (non-blocking, for a media thread's
/// event loop).
#[derive(Debug)]
pub struct PortPair {
    pub rtp: UdpSocket,
    pub rtcp: UdpSocket,
    pub port: u16,
}

/// Hands out port pairs from the configured range, round-robin, skipping
/// ports that are in use.
#[derive(Debug, Clone)]
pub struct PortAllocator {
    ip: IpAddr,
    min: u16,
    pairs: u32,
    next: Arc<AtomicU32>,
}

/// Why no port pair could be bound.
#[derive(Debug, thiserror::Error)]
pub enum PortsExhausted {
    #[error("no free RTP port pair between {min} and {max}; widen media.port_min/media.port_max")]
    Range { min: u16, max: u16 },
    /// Binding failed because the process may open no more files: each call
    /// leg holds two sockets, so this looks like a full range but is not.
    #[error("out of file descriptors while binding RTP ports (each call leg holds two sockets); raise the open-file limit (ulimit -n, systemd LimitNOFILE)")]
    Descriptors,
}

/// EMFILE or ENFILE: the process or the system may open no more files.
fn out_of_descriptors(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(23) | Some(24))
}

impl PortAllocator {
    pub fn new(ip: IpAddr, min: u16, max: u16) -> PortAllocator {
        let min = min + min % 2;
        let pairs = (max.saturating_sub(min) as u32).div_ceil(2);
        PortAllocator { ip, min, pairs: pairs.max(1), next: Arc::new(AtomicU32::new(0)) }
    }

    /// Binds the next free pair.
    pub async fn allocate(&self) -> Result<PortPair, PortsExhausted> {
        for _ in 0..self.pairs {
            let i = self.next.fetch_add(1, Ordering::Relaxed) % self.pairs;
            let port = self.min + (i * 2) as u16;
            let bound = || {
                let rtp = UdpSocket::bind(SocketAddr::new(self.ip, port))?;
                let rtcp = UdpSocket::bind(SocketAddr::new(self.ip, port + 1))?;
                rtp.set_nonblocking(true)?;
                rtcp.set_nonblocking(true)?;
                Ok::<_, std::io::Error>((rtp, rtcp))
            };
            match bound() {
                Ok((rtp, rtcp)) => return Ok(PortPair { rtp, rtcp, port }),
                Err(e) if out_of_descriptors(&e) => {
                    metrics::counter!("switchboard_media_port_exhausted_total", "reason" => "descriptors").increment(1);
                    return Err(PortsExhausted::Descriptors);
                }
                Err(_) => continue, // in use: try the next pair
            }
        }
        metrics::counter!("switchboard_media_port_exhausted_total", "reason" => "range").increment(1);
        Err(PortsExhausted::Range { min: self.min, max: self.min + (self.pairs * 2) as u16 - 1 })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn pairs_are_even_and_distinct_and_exhaust() {
        let a = PortAllocator::new("127.0.0.1".parse().unwrap(), 41_000, 41_003);
        let p1 = a.allocate().await.unwrap();
        let p2 = a.allocate().await.unwrap();
        assert_eq!(p1.port % 2, 0);
        assert_ne!(p1.port, p2.port);
        assert!(a.allocate().await.is_err(), "both pairs are held");
        drop(p1);
        assert!(a.allocate().await.is_ok(), "a released pair is reused");
    }

    #[test]
    fn running_out_of_descriptors_is_told_apart_from_a_full_range() {
        assert!(out_of_descriptors(&std::io::Error::from_raw_os_error(24)));
        assert!(!out_of_descriptors(&std::io::Error::from_raw_os_error(98)), "EADDRINUSE is a taken port");
        assert!(PortsExhausted::Descriptors.to_string().contains("open-file limit"));
    }
}
