//! The little SDP the generator needs: a PCMU-only audio description of
//! one of its media sockets, and the RTP address in a relay's SDP.

use std::net::{IpAddr, SocketAddr};

/// A PCMU-only SDP body for media at `addr`.
pub fn pcmu(session: u64, addr: SocketAddr) -> String {
    let ip = addr.ip();
    let family = if ip.is_ipv4() { "IP4" } else { "IP6" };
    format!(
        "v=0\r\no=rtpload {session} 1 IN {family} {ip}\r\ns=-\r\nc=IN {family} {ip}\r\nt=0 0\r\n\
         m=audio {} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=ptime:20\r\na=sendrecv\r\n",
        addr.port()
    )
}

/// The RTP address of the first audio stream: its `c=` line (media level,
/// else session level) and the port of `m=audio`. `None` if either is
/// missing or the port is 0 (a rejected stream).
pub fn audio_addr(sdp: &str) -> Option<SocketAddr> {
    let mut session_ip: Option<IpAddr> = None;
    let mut media_ip: Option<IpAddr> = None;
    let mut port: Option<u16> = None;
    let mut in_audio = false;
    for line in sdp.lines().map(str::trim_end) {
        if let Some(rest) = line.strip_prefix("m=") {
            if port.is_some() {
                break; // past the first audio stream
            }
            in_audio = rest.starts_with("audio ");
            if in_audio {
                port = rest.split_whitespace().nth(1).and_then(|p| p.parse().ok());
            }
        } else if let Some(rest) = line.strip_prefix("c=") {
            let ip = rest
                .split_whitespace()
                .nth(2)
                .and_then(|a| a.split('/').next()?.parse().ok());
            if in_audio {
                media_ip = ip;
            } else if port.is_none() {
                session_ip = ip;
            }
        }
    }
    let port = port.filter(|p| *p != 0)?;
    Some(SocketAddr::new(media_ip.or(session_ip)?, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_back_what_it_writes() {
        let addr: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        assert_eq!(audio_addr(&pcmu(7, addr)), Some(addr));
    }

    #[test]
    fn media_level_connection_wins_and_a_rejected_stream_has_no_address() {
        let sdp = "v=0\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\nm=audio 30000 RTP/AVP 0\r\nc=IN IP4 10.0.0.2\r\nm=video 30002 RTP/AVP 96\r\nc=IN IP4 10.0.0.3\r\n";
        assert_eq!(audio_addr(sdp), Some("10.0.0.2:30000".parse().unwrap()));
        let session_only = "v=0\nc=IN IP4 10.0.0.1\nm=audio 30000 RTP/AVP 0\n";
        assert_eq!(
            audio_addr(session_only),
            Some("10.0.0.1:30000".parse().unwrap())
        );
        assert_eq!(
            audio_addr("v=0\r\nc=IN IP4 10.0.0.1\r\nm=audio 0 RTP/AVP 0\r\n"),
            None
        );
        assert_eq!(
            audio_addr("v=0\r\nm=audio 30000 RTP/AVP 0\r\n"),
            None,
            "no address at all"
        );
        assert_eq!(audio_addr("garbage"), None);
    }
}
