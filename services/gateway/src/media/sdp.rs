//! SDP (RFC 4566) as far as audio anchoring needs it: read the peer's audio
//! address and formats, write the gateway's own description for each leg,
//! and the RFC 3264 offer/answer choices: which codec (G.711 or Opus) and
//! which telephone-event a leg uses, and whether RTCP shares the RTP port
//! (RFC 5761). Sans-IO.

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
    /// `a=rtcp-mux` (RFC 5761): the peer offers or accepts RTCP on the RTP
    /// port.
    pub rtcp_mux: bool,
    /// `a=rtcp:` (RFC 3605): where the peer receives RTCP when that is not
    /// the RTP port + 1.
    pub rtcp: Option<SocketAddr>,
}

impl AudioDescription {
    /// Where the peer receives RTCP: the RTP address with rtcp-mux, else
    /// the `a=rtcp:` address, else the RTP port + 1 (RFC 3550 §11).
    pub fn rtcp_addr(&self) -> SocketAddr {
        if self.rtcp_mux {
            self.rtp
        } else if let Some(rtcp) = self.rtcp {
            rtcp
        } else {
            SocketAddr::new(self.rtp.ip(), self.rtp.port().wrapping_add(1))
        }
    }
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
    let mut rtcp_mux = false;
    let mut rtcp: Option<(u16, Option<IpAddr>)> = None;
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
                    "rtcp-mux" => rtcp_mux = true,
                    "rtcp" => {
                        // `a=rtcp:port [IN IP4 addr]`; unreadable ones are
                        // left out (RTP port + 1 applies).
                        let mut it = val.split_whitespace();
                        if let Some(port) = it.next().and_then(|p| p.parse().ok()) {
                            rtcp = Some((port, it.nth(2).and_then(|a| a.parse().ok())));
                        }
                    }
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
    let rtcp = rtcp.map(|(port, addr)| SocketAddr::new(addr.unwrap_or(ip), port));
    Ok(AudioDescription { rtp: SocketAddr::new(ip, port), formats, direction, ptime, rtcp_mux, rtcp })
}

/// The formats the relay carries between legs without transcoding (G.711
/// and its telephone-event). [`Capabilities`] is what a leg may negotiate
/// with the media bridge, Opus included.
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
    build_with(session_id, version, ip, port, formats, direction, false)
}

/// [`build`], also offering or accepting RTCP on the RTP port
/// (`a=rtcp-mux`, RFC 5761) when `rtcp_mux` is set.
pub fn build_with(session_id: u64, version: u64, ip: IpAddr, port: u16, formats: &[Format], direction: Direction, rtcp_mux: bool) -> String {
    let family = if ip.is_ipv4() { "IP4" } else { "IP6" };
    let mut s = format!(
        "v=0\r\no=switchboard {session_id} {version} IN {family} {ip}\r\ns=Switchboard\r\nc=IN {family} {ip}\r\nt=0 0\r\nm=audio {port} RTP/AVP"
    );
    for f in formats {
        s.push_str(&format!(" {}", f.payload_type));
    }
    s.push_str("\r\n");
    for f in formats {
        // Opus is always described as two channels (RFC 7587 §7).
        let channels = if f.encoding.eq_ignore_ascii_case("opus") { "/2" } else { "" };
        s.push_str(&format!("a=rtpmap:{} {}/{}{}\r\n", f.payload_type, f.encoding, f.clock_rate, channels));
        if let Some(fmtp) = &f.fmtp {
            s.push_str(&format!("a=fmtp:{} {}\r\n", f.payload_type, fmtp));
        }
    }
    s.push_str("a=ptime:20\r\n");
    if rtcp_mux {
        s.push_str("a=rtcp-mux\r\n");
    }
    s.push_str(&format!("a={}\r\n", direction.as_str()));
    s
}

/// The fmtp the gateway gives Opus: no frames under 20 ms, in-band FEC
/// welcome (RFC 7587 §6.1).
pub const OPUS_FMTP: &str = "minptime=20;useinbandfec=1";
/// The events the gateway takes in telephone-event: the 16 DTMF keys.
pub const TELEPHONE_EVENT_FMTP: &str = "0-15";
/// Payload type of the gateway's Opus offer.
pub const OPUS_PT: u8 = 96;
/// Payload type of the gateway's telephone-event/8000 offer.
pub const TELEPHONE_EVENT_PT: u8 = 101;
/// Payload type of the gateway's telephone-event/48000 offer (beside Opus).
pub const TELEPHONE_EVENT_48K_PT: u8 = 102;

/// An audio codec the media bridge handles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    Pcmu,
    Pcma,
    Opus,
}

impl Codec {
    /// The codec a format describes, if it is one of ours.
    pub fn of(format: &Format) -> Option<Codec> {
        let e = format.encoding.as_str();
        match format.clock_rate {
            8000 if e.eq_ignore_ascii_case("PCMU") => Some(Codec::Pcmu),
            8000 if e.eq_ignore_ascii_case("PCMA") => Some(Codec::Pcma),
            48000 if e.eq_ignore_ascii_case("opus") => Some(Codec::Opus),
            _ => None,
        }
    }

    pub fn clock_rate(self) -> u32 {
        match self {
            Codec::Pcmu | Codec::Pcma => 8000,
            Codec::Opus => 48000,
        }
    }

    /// The payload type the gateway offers it with.
    pub fn payload_type(self) -> u8 {
        match self {
            Codec::Pcmu => 0,
            Codec::Pcma => 8,
            Codec::Opus => OPUS_PT,
        }
    }

    /// How the gateway describes it under payload type `pt`.
    pub fn format(self, pt: u8) -> Format {
        let (encoding, fmtp) = match self {
            Codec::Pcmu => ("PCMU", None),
            Codec::Pcma => ("PCMA", None),
            Codec::Opus => ("opus", Some(OPUS_FMTP.to_owned())),
        };
        Format { payload_type: pt, encoding: encoding.to_owned(), clock_rate: self.clock_rate(), fmtp }
    }
}

fn is_telephone_event(f: &Format) -> bool {
    f.encoding.eq_ignore_ascii_case("telephone-event")
}

fn telephone_event(pt: u8, clock_rate: u32) -> Format {
    Format { payload_type: pt, encoding: "telephone-event".to_owned(), clock_rate, fmtp: Some(TELEPHONE_EVENT_FMTP.to_owned()) }
}

/// What the gateway may use on a leg.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capabilities {
    /// Codecs in the gateway's order of preference.
    pub codecs: Vec<Codec>,
    /// RFC 4733 DTMF at the rate of each codec.
    pub telephone_event: bool,
    /// RTCP on the RTP port when the peer offers it.
    pub rtcp_mux: bool,
}

impl Default for Capabilities {
    /// PCMU, PCMA, Opus, telephone-event and rtcp-mux.
    fn default() -> Capabilities {
        Capabilities { codecs: vec![Codec::Pcmu, Codec::Pcma, Codec::Opus], telephone_event: true, rtcp_mux: true }
    }
}

impl Capabilities {
    fn allows(&self, f: &Format) -> Option<Codec> {
        Codec::of(f).filter(|c| self.codecs.contains(c))
    }
}

/// The outcome of an offer/answer exchange on one leg.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    /// The formats of the answer (what the leg may carry), in the
    /// offerer's order and with the offerer's payload type numbers.
    pub formats: Vec<Format>,
    /// The codec to send: its payload type, encoding and clock rate.
    pub send: Format,
    /// The telephone-event payload type at the send codec's clock rate.
    pub dtmf_pt: Option<u8>,
    /// RTCP shares the RTP port.
    pub rtcp_mux: bool,
}

/// Answers an offer (RFC 3264 §6.1): the offered codecs the gateway can
/// use, in the offerer's order and under its payload type numbers; the
/// first of them is the one to send. Each kept codec brings the offered
/// telephone-event of its clock rate (RFC 4733 §7.1.1); rtcp-mux is
/// echoed when offered and allowed. Telephone-event alone is no codec.
pub fn negotiate(offer: &AudioDescription, caps: &Capabilities) -> Result<Negotiated, SdpError> {
    let mut formats: Vec<Format> = offer
        .formats
        .iter()
        .filter_map(|f| {
            let codec = caps.allows(f)?;
            Some(Format { encoding: f.encoding.clone(), ..codec.format(f.payload_type) })
        })
        .collect();
    let send = formats.first().cloned().ok_or(SdpError::NoCommonFormat)?;
    let mut dtmf_pt = None;
    if caps.telephone_event {
        let mut rates: Vec<u32> = formats.iter().map(|f| f.clock_rate).collect();
        rates.dedup();
        let mut events = Vec::new();
        for rate in rates {
            if events.iter().any(|e: &Format| e.clock_rate == rate) {
                continue;
            }
            if let Some(te) = offer.formats.iter().find(|f| is_telephone_event(f) && f.clock_rate == rate) {
                if rate == send.clock_rate {
                    dtmf_pt = Some(te.payload_type);
                }
                events.push(telephone_event(te.payload_type, rate));
            }
        }
        formats.extend(events);
    }
    Ok(Negotiated { formats, send, dtmf_pt, rtcp_mux: offer.rtcp_mux && caps.rtcp_mux })
}

/// The formats of the gateway's offer to a leg: `preferred_first` (the
/// codec the other leg uses, so no transcoding is needed when this leg
/// takes it) if the gateway may use it, then the other codecs in the
/// gateway's order, with telephone-event/8000 (101) beside G.711 and
/// telephone-event/48000 (102) beside Opus.
pub fn offer_formats(preferred_first: Option<&Format>, caps: &Capabilities) -> Vec<Format> {
    let mut codecs: Vec<Codec> = preferred_first.and_then(|f| caps.allows(f)).into_iter().collect();
    for c in &caps.codecs {
        if !codecs.contains(c) {
            codecs.push(*c);
        }
    }
    let mut formats: Vec<Format> = codecs.iter().map(|c| c.format(c.payload_type())).collect();
    if caps.telephone_event {
        if codecs.iter().any(|c| c.clock_rate() == 8000) {
            formats.push(telephone_event(TELEPHONE_EVENT_PT, 8000));
        }
        if codecs.contains(&Codec::Opus) {
            formats.push(telephone_event(TELEPHONE_EVENT_48K_PT, 48000));
        }
    }
    formats
}

/// What the peer chose in its answer to `our_offer`: the codecs it kept
/// that we offered, under the answer's payload type numbers (those it
/// receives with), the first being the one to send; the telephone-event at
/// that codec's rate; rtcp-mux as answered.
pub fn answer_choice(answer: &AudioDescription, our_offer: &[Format]) -> Result<Negotiated, SdpError> {
    let offered = |f: &Format| our_offer.iter().any(|o| o.encoding.eq_ignore_ascii_case(&f.encoding) && o.clock_rate == f.clock_rate);
    let mut formats: Vec<Format> = answer.formats.iter().filter(|f| Codec::of(f).is_some() && offered(f)).cloned().collect();
    let send = formats.first().cloned().ok_or(SdpError::NoCommonFormat)?;
    let events: Vec<Format> = answer
        .formats
        .iter()
        .filter(|f| is_telephone_event(f) && offered(f) && formats.iter().any(|a| a.clock_rate == f.clock_rate))
        .cloned()
        .collect();
    let dtmf_pt = events.iter().find(|e| e.clock_rate == send.clock_rate).map(|e| e.payload_type);
    formats.extend(events);
    Ok(Negotiated { formats, send, dtmf_pt, rtcp_mux: answer.rtcp_mux })
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

    fn offer(m: &str, attrs: &str) -> AudioDescription {
        let sdp = format!("v=0\r\no=- 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\nm=audio 4000 RTP/AVP {m}\r\n{attrs}");
        parse_audio(sdp.as_bytes()).unwrap()
    }

    fn pts(formats: &[Format]) -> Vec<u8> {
        formats.iter().map(|f| f.payload_type).collect()
    }

    #[test]
    fn negotiate_keeps_the_offerers_order_and_payload_types() {
        let a = parse_audio(OFFER.as_bytes()).unwrap(); // 8 0 18 101
        let n = negotiate(&a, &Capabilities::default()).unwrap();
        assert_eq!(pts(&n.formats), vec![8, 0, 101], "G.729 dropped, PCMA first as offered");
        assert_eq!((n.send.payload_type, n.send.encoding.as_str(), n.send.clock_rate), (8, "PCMA", 8000));
        assert_eq!(n.dtmf_pt, Some(101));
        assert!(!n.rtcp_mux);
        // A gateway limited to PCMU answers PCMU even though PCMA came first.
        let caps = Capabilities { codecs: vec![Codec::Pcmu], ..Capabilities::default() };
        let n = negotiate(&a, &caps).unwrap();
        assert_eq!((pts(&n.formats), n.send.payload_type), (vec![0, 101], 0));
        // Without telephone-event allowed, none is answered.
        let n = negotiate(&a, &Capabilities { telephone_event: false, ..Capabilities::default() }).unwrap();
        assert_eq!((pts(&n.formats), n.dtmf_pt), (vec![8, 0], None));
    }

    #[test]
    fn negotiate_opus_only_with_its_48k_telephone_event() {
        let a = offer(
            "111 110",
            "a=rtpmap:111 opus/48000/2\r\na=fmtp:111 minptime=10;useinbandfec=1\r\na=rtpmap:110 telephone-event/48000\r\na=fmtp:110 0-16\r\n",
        );
        let n = negotiate(&a, &Capabilities::default()).unwrap();
        assert_eq!((n.send.payload_type, n.send.encoding.as_str(), n.send.clock_rate), (111, "opus", 48000));
        assert_eq!(n.send.fmtp.as_deref(), Some(OPUS_FMTP), "our own Opus parameters in the answer");
        assert_eq!(n.dtmf_pt, Some(110));
        assert_eq!(n.formats[1], telephone_event(110, 48000));
        // The answer writes Opus as two channels and reads back the same.
        let body = build(1, 1, "10.0.0.1".parse().unwrap(), 30000, &n.formats, Direction::SendRecv);
        assert!(body.contains("a=rtpmap:111 opus/48000/2\r\n"), "{body}");
        assert_eq!(parse_audio(body.as_bytes()).unwrap().formats, n.formats);
        // Opus without the gateway's permission: nothing in common.
        let caps = Capabilities { codecs: vec![Codec::Pcmu, Codec::Pcma], ..Capabilities::default() };
        assert_eq!(negotiate(&a, &caps), Err(SdpError::NoCommonFormat));
    }

    #[test]
    fn telephone_event_goes_with_the_codec_of_its_clock_rate() {
        let a = offer(
            "111 0 101 110",
            "a=rtpmap:111 opus/48000/2\r\na=rtpmap:101 telephone-event/8000\r\na=rtpmap:110 telephone-event/48000\r\n",
        );
        let n = negotiate(&a, &Capabilities::default()).unwrap();
        assert_eq!(pts(&n.formats), vec![111, 0, 110, 101]);
        assert_eq!((n.send.payload_type, n.dtmf_pt), (111, Some(110)));
        // Only an 8 kHz telephone-event offered beside Opus: no DTMF for it.
        let a = offer("111 101", "a=rtpmap:111 opus/48000/2\r\na=rtpmap:101 telephone-event/8000\r\n");
        let n = negotiate(&a, &Capabilities::default()).unwrap();
        assert_eq!((pts(&n.formats), n.dtmf_pt), (vec![111], None));
        // PCMU first: the 8 kHz one.
        let a = offer("0 111 110 101", "a=rtpmap:111 opus/48000/2\r\na=rtpmap:110 telephone-event/48000\r\na=rtpmap:101 telephone-event/8000\r\n");
        let n = negotiate(&a, &Capabilities::default()).unwrap();
        assert_eq!((n.send.payload_type, n.dtmf_pt), (0, Some(101)));
        assert_eq!(pts(&n.formats), vec![0, 111, 101, 110]);
    }

    #[test]
    fn nothing_in_common() {
        assert_eq!(negotiate(&offer("18", ""), &Capabilities::default()), Err(SdpError::NoCommonFormat), "G.729 only");
        let te_only = offer("101", "a=rtpmap:101 telephone-event/8000\r\n");
        assert_eq!(negotiate(&te_only, &Capabilities::default()), Err(SdpError::NoCommonFormat));
        // PCMU at a clock rate that is not G.711's is not PCMU.
        assert_eq!(negotiate(&offer("97", "a=rtpmap:97 PCMU/16000\r\n"), &Capabilities::default()), Err(SdpError::NoCommonFormat));
    }

    #[test]
    fn rtcp_mux_and_rtcp_address() {
        let a = offer("0", "a=rtcp-mux\r\na=rtcp:4001 IN IP4 192.0.2.99\r\n");
        assert!(a.rtcp_mux);
        assert_eq!(a.rtcp, Some("192.0.2.99:4001".parse().unwrap()));
        assert_eq!(a.rtcp_addr(), "192.0.2.10:4000".parse().unwrap(), "muxed: the RTP address");
        assert!(negotiate(&a, &Capabilities::default()).unwrap().rtcp_mux);
        assert!(!negotiate(&a, &Capabilities { rtcp_mux: false, ..Capabilities::default() }).unwrap().rtcp_mux);
        let b = offer("0", "a=rtcp:5009\r\n");
        assert_eq!((b.rtcp_mux, b.rtcp_addr()), (false, "192.0.2.10:5009".parse().unwrap()));
        let c = offer("0", "a=rtcp:junk\r\n");
        assert_eq!((c.rtcp, c.rtcp_addr()), (None, "192.0.2.10:4001".parse().unwrap()));
        // The gateway's own description with and without rtcp-mux.
        let fs = offer_formats(None, &Capabilities::default());
        let muxed = build_with(1, 1, "10.0.0.1".parse().unwrap(), 20000, &fs, Direction::SendRecv, true);
        assert!(parse_audio(muxed.as_bytes()).unwrap().rtcp_mux);
        let plain = build(1, 1, "10.0.0.1".parse().unwrap(), 20000, &fs, Direction::SendRecv);
        assert!(!plain.contains("rtcp-mux"));
    }

    #[test]
    fn the_gateways_offer_puts_the_other_legs_codec_first() {
        let caps = Capabilities::default();
        let fs = offer_formats(None, &caps);
        assert_eq!(pts(&fs), vec![0, 8, 96, 101, 102]);
        assert_eq!(fs[2], Codec::Opus.format(96));
        assert_eq!((fs[3].clock_rate, fs[4].clock_rate), (8000, 48000));
        let opus_leg = Format { payload_type: 111, encoding: "OPUS".into(), clock_rate: 48000, fmtp: None };
        assert_eq!(pts(&offer_formats(Some(&opus_leg), &caps)), vec![96, 0, 8, 101, 102]);
        let pcma = Format { payload_type: 8, encoding: "PCMA".into(), clock_rate: 8000, fmtp: None };
        assert_eq!(pts(&offer_formats(Some(&pcma), &caps)), vec![8, 0, 96, 101, 102]);
        let g729 = Format { payload_type: 18, encoding: "G729".into(), clock_rate: 8000, fmtp: None };
        assert_eq!(pts(&offer_formats(Some(&g729), &caps)), vec![0, 8, 96, 101, 102], "a codec we cannot use is not offered");
        let g711 = Capabilities { codecs: vec![Codec::Pcma], ..caps.clone() };
        assert_eq!(pts(&offer_formats(Some(&opus_leg), &g711)), vec![8, 101]);
        let opus = Capabilities { codecs: vec![Codec::Opus], telephone_event: true, rtcp_mux: true };
        assert_eq!(pts(&offer_formats(None, &opus)), vec![96, 102]);
        assert_eq!(pts(&offer_formats(None, &Capabilities { telephone_event: false, ..caps })), vec![0, 8, 96]);
    }

    #[test]
    fn reading_the_peers_answer_to_our_offer() {
        let ours = offer_formats(None, &Capabilities::default());
        let n = answer_choice(&offer("8 101", "a=rtpmap:101 telephone-event/8000\r\n"), &ours).unwrap();
        assert_eq!((n.send.payload_type, n.send.encoding.as_str(), n.dtmf_pt, n.rtcp_mux), (8, "PCMA", Some(101), false));
        // The peer renumbered Opus and its telephone-event (it receives with
        // those numbers, so we send with them) and accepted rtcp-mux.
        let n = answer_choice(
            &offer("109 100", "a=rtpmap:109 opus/48000/2\r\na=rtpmap:100 telephone-event/48000\r\na=rtcp-mux\r\n"),
            &ours,
        )
        .unwrap();
        assert_eq!((n.send.payload_type, n.send.clock_rate, n.dtmf_pt, n.rtcp_mux), (109, 48000, Some(100), true));
        // A telephone-event at the wrong rate for the chosen codec is no DTMF.
        let n = answer_choice(&offer("0 102", "a=rtpmap:102 telephone-event/48000\r\n"), &ours).unwrap();
        assert_eq!((pts(&n.formats), n.dtmf_pt), (vec![0], None));
        // Something we never offered.
        assert_eq!(answer_choice(&offer("18", ""), &ours), Err(SdpError::NoCommonFormat));
        let g711_only = offer_formats(None, &Capabilities { codecs: vec![Codec::Pcmu], ..Capabilities::default() });
        assert_eq!(answer_choice(&offer("96", "a=rtpmap:96 opus/48000/2\r\n"), &g711_only), Err(SdpError::NoCommonFormat));
    }
}
