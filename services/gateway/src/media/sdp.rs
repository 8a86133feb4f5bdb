//! SDP (RFC 4566) as far as audio anchoring needs it: read the peer's audio
//! address and formats, write the gateway's own description for each leg
//! (RFC 3264 offer/answer). Sans-IO.

use std::net::{IpAddr, SocketAddr};

/// Why an SDP body is unusable; becomes a 488 or 400.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SdpError {
    #[error("SDP is not UTF-8")]
    NotUtf8,
    #[error("SDP has no audio stream")]
    NoAudio,
    #[error("SDP audio stream has no connection address")]
    NoConnection,
    #[error("SDP line is malformed: {0}")]
    Malformed(String),
    #[error("no audio format in common")]
    NoCommonFormat,
}

/// One payload format of the audio stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Format {
    pub payload_type: u8,
    /// Encoding name as in rtpmap, e.g. `PCMU`, `telephone-event`.
    pub encoding: String,
    pub clock_rate: u32,
    pub fmtp: Option<String>,
}

/// Media direction attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    SendRecv,
    SendOnly,
    RecvOnly,
    Inactive,
}

impl Direction {
    fn as_str(self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        }
    }
}

/// The audio part of a session description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudioDescription {
    /// Where the peer wants to receive RTP.
    pub rtp: SocketAddr,
    pub formats: Vec<Format>,
    pub direction: Direction,
    pub ptime: Option<u32>,
}

/// Static payload types of RFC 3551 that the gateway understands.
fn static_format(pt: u8) -> Option<(&'static str, u32)> {
    match pt {
        0 => Some(("PCMU", 8000)),
        8 => Some(("PCMA", 8000)),
        9 => Some(("G722", 8000)),
        18 => Some(("G729", 8000)),
        _ => None,
    }
}

/// Reads the first audio stream of an SDP body.
pub fn parse_audio(body: &[u8]) -> Result<AudioDescription, SdpError> {
    let text = std::str::from_utf8(body).map_err(|_| SdpError::NotUtf8)?;
    let mut session_ip: Option<IpAddr> = None;
    let mut media_ip: Option<IpAddr> = None;
    let mut in_audio = false;
    let mut seen_audio = false;
    let mut port = 0u16;
    let mut pts: Vec<u8> = Vec::new();
    let mut rtpmaps: Vec<(u8, String, u32)> = Vec::new();
    let mut fmtps: Vec<(u8, String)> = Vec::new();
    let mut direction = Direction::SendRecv;
    let mut session_direction = None;
    let mut ptime = None;
    for line in text.lines() {
        let line = line.trim_end_matches('\r');
        if line.len() < 2 || line.as_bytes()[1] != b'=' {
            if line.trim().is_empty() {
                continue;
            }
            return Err(SdpError::Malformed(line.chars().take(40).collect()));
        }
        let (kind, value) = (&line[..1], &line[2..]);
        match kind {
            "m" => {
                if seen_audio {
                    in_audio = false;
                    continue;
                }
                let mut it = value.split_whitespace();
                let media = it.next().unwrap_or("");
                in_audio = media == "audio";
                if in_audio {
                    seen_audio = true;
                    port = it
                        .next()
                        .and_then(|p| p.split('/').next())
                        .and_then(|p| p.parse().ok())
                        .ok_or_else(|| SdpError::Malformed(line.to_owned()))?;
                    let _proto = it.next().ok_or_else(|| SdpError::Malformed(line.to_owned()))?;
                    for f in it {
                        pts.push(f.parse().map_err(|_| SdpError::Malformed(line.to_owned()))?);
                    }
                }
            }
            "c" => {
                let addr = value.split_whitespace().nth(2).ok_or_else(|| SdpError::Malformed(line.to_owned()))?;
                let ip: IpAddr = addr
                    .split('/')
                    .next()
                    .unwrap_or("")
                    .parse()
                    .map_err(|_| SdpError::Malformed(line.to_owned()))?;
                if in_audio {
                    media_ip = Some(ip);
                } else if !seen_audio {
                    session_ip = Some(ip);
                }
            }
            "a" if in_audio || !seen_audio => {
                let (name, val) = value.split_once(':').unwrap_or((value, ""));
                let dir = match name {
                    "sendrecv" => Some(Direction::SendRecv),
                    "sendonly" => Some(Direction::SendOnly),
                    "recvonly" => Some(Direction::RecvOnly),
                    "inactive" => Some(Direction::Inactive),
                    _ => None,
                };
                if let Some(d) = dir {
                    if in_audio {
                        direction = d;
                    } else {
                        session_direction = Some(d);
                    }
                    continue;
                }
                if !in_audio {
                    continue;
                }
                match name {
                    "rtpmap" => {
                        let (pt, enc) = val.split_once(' ').ok_or_else(|| SdpError::Malformed(line.to_owned()))?;
                        let pt: u8 = pt.trim().parse().map_err(|_| SdpError::Malformed(line.to_owned()))?;
                        let mut e = enc.trim().split('/');
                        let name = e.next().unwrap_or("").to_owned();
                        let rate = e.next().and_then(|r| r.parse().ok()).unwrap_or(8000);
                        rtpmaps.push((pt, name, rate));
                    }
                    "fmtp" => {
                        if let Some((pt, params)) = val.split_once(' ') {
                            if let Ok(pt) = pt.trim().parse() {
                                fmtps.push((pt, params.trim().to_owned()));
                            }
                        }
                    }
                    "ptime" => ptime = val.trim().parse().ok(),
                    _ => {}
                }
            }
            _ => {}
        }
    }
    if !seen_audio {
        return Err(SdpError::NoAudio);
    }
    let ip = media_ip.or(session_ip).ok_or(SdpError::NoConnection)?;
    if media_ip.is_none() && session_direction.is_some() && direction == Direction::SendRecv {
        direction = session_direction.unwrap_or(Direction::SendRecv);
    }
    let formats = pts
        .iter()
        .filter_map(|pt| {
            let (encoding, clock_rate) = match rtpmaps.iter().find(|(p, _, _)| p == pt) {
                Some((_, e, r)) => (e.clone(), *r),
                None => {
                    let (e, r) = static_format(*pt)?;
                    (e.to_owned(), r)
                }
            };
            let fmtp = fmtps.iter().find(|(p, _)| p == pt).map(|(_, f)| f.clone());
            Some(Format { payload_type: *pt, encoding, clock_rate, fmtp })
        })
        .collect();
    Ok(AudioDescription { rtp: SocketAddr::new(ip, port), formats, direction, ptime })
}

/// The formats the gateway can carry between legs without transcoding.
pub fn supported(format: &Format) -> bool {
    let e = format.encoding.to_ascii_uppercase();
    matches!(e.as_str(), "PCMU" | "PCMA" | "TELEPHONE-EVENT") && format.clock_rate == 8000
}

/// Keeps the offered formats the gateway supports, in the offer's order.
pub fn filter_supported(formats: &[Format]) -> Vec<Format> {
    formats.iter().filter(|f| supported(f)).cloned().collect()
}

/// Builds the gateway's session description for one leg.
pub fn build(session_id: u64, version: u64, ip: IpAddr, port: u16, formats: &[Format], direction: Direction) -> String {
    let family = if ip.is_ipv4() { "IP4" } else { "IP6" };
    let mut s = format!(
        "v=0\r\no=switchboard {session_id} {version} IN {family} {ip}\r\ns=Switchboard\r\nc=IN {family} {ip}\r\nt=0 0\r\nm=audio {port} RTP/AVP"
    );
    for f in formats {
        s.push_str(&format!(" {}", f.payload_type));
    }
    s.push_str("\r\n");
    for f in formats {
        s.push_str(&format!("a=rtpmap:{} {}/{}\r\n", f.payload_type, f.encoding, f.clock_rate));
        if let Some(fmtp) = &f.fmtp {
            s.push_str(&format!("a=fmtp:{} {}\r\n", f.payload_type, fmtp));
        }
    }
    s.push_str("a=ptime:20\r\n");
    s.push_str(&format!("a={}\r\n", direction.as_str()));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFFER: &str = "v=0\r\no=user1 53655765 2353687637 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 6000 RTP/AVP 8 0 18 101\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-11,16\r\n";

    #[test]
    fn reads_audio_stream() {
        let a = parse_audio(OFFER.as_bytes()).unwrap();
        assert_eq!(a.rtp, "127.0.0.1:6000".parse().unwrap());
        assert_eq!(a.formats.len(), 4);
        assert_eq!(a.formats[1].encoding, "PCMU", "static payload type without rtpmap");
        assert_eq!(a.formats[3].fmtp.as_deref(), Some("0-11,16"));
        let kept = filter_supported(&a.formats);
        assert_eq!(kept.iter().map(|f| f.payload_type).collect::<Vec<_>>(), vec![8, 0, 101]);
    }

    #[test]
    fn builds_and_reads_back() {
        let a = parse_audio(OFFER.as_bytes()).unwrap();
        let ours = build(1, 1, "10.0.0.1".parse().unwrap(), 20000, &filter_supported(&a.formats), Direction::SendRecv);
        let back = parse_audio(ours.as_bytes()).unwrap();
        assert_eq!(back.rtp, "10.0.0.1:20000".parse().unwrap());
        assert_eq!(back.formats.len(), 3);
    }

    #[test]
    fn rejects_garbage() {
        assert_eq!(parse_audio(b"v=0\r\nm=video 1 RTP/AVP 31\r\nc=IN IP4 1.2.3.4\r\n"), Err(SdpError::NoAudio));
        assert!(parse_audio(b"v=0\r\nm=audio x RTP/AVP 0\r\n").is_err());
        assert_eq!(parse_audio(b"v=0\r\nm=audio 5 RTP/AVP 0\r\n"), Err(SdpError::NoConnection));
        assert!(parse_audio(&[0xff, 0xfe]).is_err());
    }

    #[test]
    fn never_panics_on_mutated_input() {
        let base = OFFER.as_bytes();
        let mut state: u32 = 0x9e37_79b9;
        for i in 0..20_000 {
            let mut m = base[..base.len() - (i % 7)].to_vec();
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            let pos = state as usize % m.len();
            m[pos] = (state >> 8) as u8;
            if i % 3 == 0 {
                m.insert(pos, 0xc3); // start of a two-byte UTF-8 character
                m.insert(pos + 1, 0xa9);
            }
            let _ = parse_audio(&m);
        }
    }
}
