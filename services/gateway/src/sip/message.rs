//! SIP messages (RFC 3261 §7): parsing from bytes and encoding to bytes.
//!
//! Sans-IO: this module sees byte slices, never sockets. Parsing is lenient
//! about what RFC 3261 allows (header folding, any case, compact names,
//! whitespace around colons) and strict about everything else, in two ways:
//!
//! - bytes that cannot be answered (no blank line ending the headers, a
//!   start line that is neither a request nor a response, any defect in a
//!   response) are an error, and the transport drops them;
//! - a request with a defect the sender must be told about (extra spaces in
//!   the Request-Line, an unsupported SIP version, a bad header line, a bad
//!   or too large Content-Length, headers that are not UTF-8) is returned
//!   with the defect listed in [`SipMessage::flaws`], so that
//!   [`super::response::validate_request`] answers it with 400 or 505
//!   (RFC 3261 §8.2, §18.3; RFC 4475 §3.1.2).
//!
//! Header values are kept as text; the typed views (Via, name-addr, CSeq,
//! URI) live in [`super::headers`].

use std::fmt;

use bytes::Bytes;

/// Why bytes are not a SIP message, or what is wrong with a request that is
/// still answered (see [`SipMessage::flaws`]). The text is safe to put in a
/// 400 reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("message is empty")]
    Empty,
    #[error("message exceeds {0} bytes")]
    TooLarge(usize),
    #[error("no blank line ends the headers")]
    Unterminated,
    #[error("headers are not UTF-8")]
    NotUtf8,
    #[error("bad start line")]
    StartLine,
    #[error("bad Request-URI")]
    RequestUri,
    #[error("unsupported SIP version")]
    Version,
    #[error("bad header line")]
    HeaderLine,
    #[error("bad Content-Length")]
    ContentLength,
    #[error("body is shorter than Content-Length")]
    BodyTruncated,
}

/// The request line or the status line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartLine {
    Request { method: String, uri: String },
    Response { code: u16, reason: String },
}

/// One SIP request or response.
#[derive(Clone, PartialEq, Eq)]
pub struct SipMessage {
    pub start: StartLine,
    /// Headers in wire order, names in canonical long form
    /// (`v` → `Via`), values unfolded and trimmed.
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
    /// Defects of a received request that the parser stepped over so that
    /// the request can still be answered (400, or 505 for the version), in
    /// the order met. Always empty for responses (a defective response is
    /// a parse error) and for messages built here.
    pub flaws: Vec<ParseError>,
}

impl fmt::Debug for SipMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.start {
            StartLine::Request { method, uri } => write!(f, "SipRequest({method} {uri}"),
            StartLine::Response { code, reason } => write!(f, "SipResponse({code} {reason}"),
        }?;
        write!(f, ", call-id={:?}", self.header("Call-ID").unwrap_or("-"))?;
        if !self.flaws.is_empty() {
            write!(f, ", flaws={:?}", self.flaws)?;
        }
        f.write_str(")")
    }
}

/// Compact header forms (RFC 3261 §7.3.3 and later RFCs) → long names.
fn expand_compact(name: &str) -> Option<&'static str> {
    Some(match name {
        "i" | "I" => "Call-ID",
        "m" | "M" => "Contact",
        "e" | "E" => "Content-Encoding",
        "l" | "L" => "Content-Length",
        "c" | "C" => "Content-Type",
        "f" | "F" => "From",
        "s" | "S" => "Subject",
        "k" | "K" => "Supported",
        "t" | "T" => "To",
        "v" | "V" => "Via",
        "o" | "O" => "Event",
        "r" | "R" => "Refer-To",
        "b" | "B" => "Referred-By",
        "x" | "X" => "Session-Expires",
        "u" | "U" => "Allow-Events",
        "a" | "A" => "Accept-Contact",
        "j" | "J" => "Reject-Contact",
        "d" | "D" => "Request-Disposition",
        "y" | "Y" => "Identity",
        _ => return None,
    })
}

/// Canonical spelling of well-known header names, so lookups and encoding
/// agree whatever case the peer used.
fn canonical(name: &str) -> String {
    if let Some(long) = expand_compact(name) {
        return long.to_owned();
    }
    const KNOWN: &[&str] = &[
        "Accept", "Allow", "Authorization", "Call-ID", "Contact", "Content-Length", "Content-Type", "CSeq", "Expires",
        "From", "Max-Forwards", "Proxy-Authenticate", "Proxy-Authorization", "Proxy-Require", "Reason",
        "Record-Route", "Require", "Route", "Server", "Supported", "To", "Unsupported", "User-Agent", "Via",
        "WWW-Authenticate", "P-Asserted-Identity", "Privacy", "Min-Expires", "Retry-After", "Subject",
    ];
    KNOWN
        .iter()
        .find(|k| k.eq_ignore_ascii_case(name))
        .map(|k| (*k).to_owned())
        .unwrap_or_else(|| name.to_owned())
}

fn is_token_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&c)
}

/// Headers whose values may be comma-separated lists that we split into
/// one entry per element when asked for all values.
const LIST_HEADERS: &[&str] = &["Via", "Route", "Record-Route", "Contact", "Allow", "Supported", "Require"];

impl SipMessage {
    /// Parses one complete message (a UDP datagram, or a frame cut by
    /// [`frame_length`]). Bytes after the body are ignored as RFC 3261 §18.3
    /// demands for datagrams. A request with answerable defects parses,
    /// with the defects in [`SipMessage::flaws`]; a response with any
    /// defect is an error.
    pub fn parse(buf: &[u8], max_size: usize) -> Result<SipMessage, ParseError> {
        // Leading CRLFs are keep-alives and are skipped (RFC 3261 §7.5).
        let start = buf.iter().position(|b| *b != b'\r' && *b != b'\n').ok_or(ParseError::Empty)?;
        let buf = &buf[start..];
        if buf.len() > max_size {
            return Err(ParseError::TooLarge(max_size));
        }
        let head_end = find_head_end(buf).ok_or(ParseError::Unterminated)?;
        let mut flaws = Vec::new();
        let head = match std::str::from_utf8(&buf[..head_end]) {
            Ok(h) => std::borrow::Cow::Borrowed(h),
            Err(_) => {
                flaws.push(ParseError::NotUtf8);
                String::from_utf8_lossy(&buf[..head_end])
            }
        };
        let mut lines = unfold(&head).into_iter();
        let first = lines.next().ok_or(ParseError::StartLine)?;
        let start = parse_start_line(&first, &mut flaws)?;
        let mut headers = Vec::new();
        for line in lines {
            if line.is_empty() {
                continue;
            }
            let Some(colon) = line.find(':') else {
                flaws.push(ParseError::HeaderLine);
                continue;
            };
            let name = line[..colon].trim_end_matches([' ', '\t']);
            if name.is_empty() || !name.bytes().all(is_token_char) {
                flaws.push(ParseError::HeaderLine);
                continue;
            }
            let value = line[colon + 1..].trim_matches([' ', '\t']);
            headers.push((canonical(name), value.to_owned()));
        }
        let body_start = head_end + 4;
        let available = buf.len().saturating_sub(body_start);
        let declared = match content_length(&headers) {
            Ok(Some(n)) if n > available => {
                flaws.push(ParseError::BodyTruncated);
                available
            }
            Ok(Some(n)) => n,
            Ok(None) => available,
            Err(e) => {
                flaws.push(e);
                available
            }
        };
        if let (StartLine::Response { .. }, Some(first)) = (&start, flaws.first()) {
            // RFC 3261 §18.3: a defective response is discarded.
            return Err(first.clone());
        }
        let body = Bytes::copy_from_slice(&buf[body_start..body_start + declared]);
        Ok(SipMessage { start, headers, body, flaws })
    }

    /// A new request with no headers yet.
    pub fn request(method: &str, uri: impl Into<String>) -> Self {
        SipMessage {
            start: StartLine::Request { method: method.to_owned(), uri: uri.into() },
            headers: Vec::new(),
            body: Bytes::new(),
            flaws: Vec::new(),
        }
    }

    /// A new response with no headers yet.
    pub fn response(code: u16, reason: impl Into<String>) -> Self {
        SipMessage {
            start: StartLine::Response { code, reason: reason.into() },
            headers: Vec::new(),
            body: Bytes::new(),
            flaws: Vec::new(),
        }
    }

    pub fn is_request(&self) -> bool {
        matches!(self.start, StartLine::Request { .. })
    }

    /// The method of a request, or `None` for a response.
    pub fn method(&self) -> Option<&str> {
        match &self.start {
            StartLine::Request { method, .. } => Some(method),
            StartLine::Response { .. } => None,
        }
    }

    /// The status code of a response, or `None` for a request.
    pub fn status(&self) -> Option<u16> {
        match &self.start {
            StartLine::Response { code, .. } => Some(*code),
            StartLine::Request { .. } => None,
        }
    }

    pub fn request_uri(&self) -> Option<&str> {
        match &self.start {
            StartLine::Request { uri, .. } => Some(uri),
            StartLine::Response { .. } => None,
        }
    }

    /// The first value of a header (case-insensitive name, compact forms
    /// accepted).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = canonical(name);
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(&name)).map(|(_, v)| v.as_str())
    }

    /// Every value of a header in order, with comma-separated lists of
    /// list-valued headers (Via, Route, Contact, …) split into elements.
    pub fn header_values(&self, name: &str) -> Vec<&str> {
        let name = canonical(name);
        let split = LIST_HEADERS.iter().any(|h| h.eq_ignore_ascii_case(&name));
        let mut out = Vec::new();
        for (n, v) in &self.headers {
            if n.eq_ignore_ascii_case(&name) {
                if split {
                    out.extend(split_list(v));
                } else {
                    out.push(v.as_str());
                }
            }
        }
        out
    }

    /// Appends a header.
    pub fn push_header(&mut self, name: &str, value: impl Into<String>) -> &mut Self {
        self.headers.push((canonical(name), value.into()));
        self
    }

    /// Replaces every value of a header by one value.
    pub fn set_header(&mut self, name: &str, value: impl Into<String>) -> &mut Self {
        self.remove_header(name);
        self.push_header(name, value)
    }

    pub fn remove_header(&mut self, name: &str) {
        let name = canonical(name);
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(&name));
    }

    /// Sets the body and its Content-Type.
    pub fn set_body(&mut self, content_type: &str, body: impl Into<Bytes>) -> &mut Self {
        self.body = body.into();
        self.set_header("Content-Type", content_type)
    }

    /// The bytes on the wire. Content-Length is always written from the
    /// actual body (any stored value is replaced).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = String::with_capacity(512 + self.body.len());
        match &self.start {
            StartLine::Request { method, uri } => {
                out.push_str(method);
                out.push(' ');
                out.push_str(uri);
                out.push_str(" SIP/2.0\r\n");
            }
            StartLine::Response { code, reason } => {
                out.push_str("SIP/2.0 ");
                out.push_str(&code.to_string());
                out.push(' ');
                out.push_str(reason);
                out.push_str("\r\n");
            }
        }
        for (n, v) in &self.headers {
            if n == "Content-Length" {
                continue;
            }
            out.push_str(n);
            out.push_str(": ");
            out.push_str(v);
            out.push_str("\r\n");
        }
        out.push_str("Content-Length: ");
        out.push_str(&self.body.len().to_string());
        out.push_str("\r\n\r\n");
        let mut bytes = out.into_bytes();
        bytes.extend_from_slice(&self.body);
        bytes
    }
}

/// Result of looking for one message at the front of a stream buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// Keep-alive CRLFs to discard (this many bytes).
    KeepAlive(usize),
    /// A whole message of this many bytes (including its leading CRLFs).
    Message(usize),
    /// More bytes are needed.
    Incomplete,
    /// The stream cannot be framed any more; close it.
    Invalid(ParseError),
}

/// Cuts a stream (TCP/TLS) into messages using Content-Length, which is
/// mandatory on streams (RFC 3261 §18.3). A missing, unreadable or
/// ambiguous (given twice with different values) Content-Length cannot be
/// recovered from: the stream is [`Frame::Invalid`] and must be closed.
pub fn frame_length(buf: &[u8], max_size: usize) -> Frame {
    let skip = buf.iter().take_while(|b| **b == b'\r' || **b == b'\n').count();
    if skip > 0 {
        return Frame::KeepAlive(skip);
    }
    let Some(head_end) = find_head_end(buf) else {
        return if buf.len() > max_size { Frame::Invalid(ParseError::TooLarge(max_size)) } else { Frame::Incomplete };
    };
    // Framing needs only Content-Length; other bytes that are not UTF-8 are
    // for the parser to judge.
    let head = String::from_utf8_lossy(&buf[..head_end]);
    let mut length = None;
    for line in unfold(&head).into_iter().skip(1) {
        if let Some(colon) = line.find(':') {
            let name = line[..colon].trim();
            if name.eq_ignore_ascii_case("Content-Length") || name.eq_ignore_ascii_case("l") {
                match line[colon + 1..].trim().parse::<usize>() {
                    Ok(n) if length.is_none_or(|l| l == n) => length = Some(n),
                    _ => return Frame::Invalid(ParseError::ContentLength),
                }
            }
        }
    }
    let Some(length) = length else {
        return Frame::Invalid(ParseError::ContentLength);
    };
    let Some(total) = (head_end + 4).checked_add(length).filter(|t| *t <= max_size) else {
        return Frame::Invalid(ParseError::TooLarge(max_size));
    };
    if buf.len() < total {
        Frame::Incomplete
    } else {
        Frame::Message(total)
    }
}

fn find_head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n")
}

/// Splits the header block into logical lines, joining folded continuation
/// lines (starting with SP or HTAB) with a single space.
fn unfold(head: &str) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    for raw in head.split("\r\n") {
        if raw.starts_with([' ', '\t']) {
            if let Some(last) = lines.last_mut() {
                last.push(' ');
                last.push_str(raw.trim_start_matches([' ', '\t']));
                continue;
            }
        }
        lines.push(raw.to_owned());
    }
    lines
}

/// Parses the start line. A response line must be exact. A request line
/// only needs to be recognisable as `Method SP Request-URI SP SIP/x.y`:
/// extra or trailing white space, white space inside the Request-URI and
/// a version other than 2.0 are recorded in `flaws` (RFC 4475 §3.1.2.8–10,
/// §3.1.2.16) so the request can be answered.
fn parse_start_line(line: &str, flaws: &mut Vec<ParseError>) -> Result<StartLine, ParseError> {
    if line.get(..4).is_some_and(|p| p.eq_ignore_ascii_case("SIP/")) {
        let mut parts = line[4..].splitn(3, ' ');
        let version = parts.next().ok_or(ParseError::StartLine)?;
        if version != "2.0" {
            return Err(ParseError::Version);
        }
        let code = parts.next().ok_or(ParseError::StartLine)?;
        if code.len() != 3 {
            return Err(ParseError::StartLine);
        }
        let code: u16 = code.parse().map_err(|_| ParseError::StartLine)?;
        if !(100..=699).contains(&code) {
            return Err(ParseError::StartLine);
        }
        let reason = parts.next().unwrap_or("").to_owned();
        return Ok(StartLine::Response { code, reason });
    }
    // Request-Line = Method SP Request-URI SP SIP-Version (single spaces).
    let (method, rest) = line.split_once(' ').ok_or(ParseError::StartLine)?;
    if method.is_empty() || !method.bytes().all(is_token_char) {
        return Err(ParseError::StartLine);
    }
    let trimmed = rest.trim_matches([' ', '\t']);
    let (uri, version) = trimmed.rsplit_once([' ', '\t']).ok_or(ParseError::StartLine)?;
    let uri = uri.trim_matches([' ', '\t']);
    if uri.is_empty() || !version.get(..4).is_some_and(|p| p.eq_ignore_ascii_case("SIP/")) {
        return Err(ParseError::StartLine);
    }
    if rest != format!("{uri} {version}") {
        flaws.push(ParseError::StartLine);
    }
    if uri.contains(|c: char| c.is_ascii_whitespace()) {
        flaws.push(ParseError::RequestUri);
    }
    if !version[4..].eq("2.0") {
        flaws.push(ParseError::Version);
    }
    Ok(StartLine::Request { method: method.to_owned(), uri: uri.to_owned() })
}

fn content_length(headers: &[(String, String)]) -> Result<Option<usize>, ParseError> {
    let mut found = None;
    for (n, v) in headers {
        if n == "Content-Length" {
            let n: usize = v.trim().parse().map_err(|_| ParseError::ContentLength)?;
            if found.is_some_and(|f| f != n) {
                return Err(ParseError::ContentLength);
            }
            found = Some(n);
        }
    }
    Ok(found)
}

/// Splits a header value on commas that are outside quotes and angle
/// brackets.
pub fn split_list(value: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut in_quotes, mut in_angle, mut escaped) = (false, false, false);
    let mut start = 0;
    for (i, c) in value.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' if in_quotes => escaped = true,
            '"' => in_quotes = !in_quotes,
            '<' if !in_quotes => in_angle = true,
            '>' if !in_quotes => in_angle = false,
            ',' if !in_quotes && !in_angle => {
                let part = value[start..i].trim();
                if !part.is_empty() {
                    out.push(part);
                }
                start = i + 1;
            }
            _ => {}
        }
    }
    let part = value[start..].trim();
    if !part.is_empty() {
        out.push(part);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const INVITE: &str = "INVITE sip:+14155550100@gw.example.com SIP/2.0\r\n\
v: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK776asdhds , SIP/2.0/UDP 192.0.2.9;branch=z9hG4bKx\r\n\
Max-Forwards: 70\r\n\
t: <sip:+14155550100@gw.example.com>\r\n\
f: \"Carrier, Inc\" <sip:+12125550123@carrier.example.com>;tag=1928301774\r\n\
i: a84b4c76e66710@pc33.example.com\r\n\
CSeq: 314159\r\n INVITE\r\n\
l: 4\r\n\
\r\n\
v=0\r\nextra";

    #[test]
    fn parses_compact_folded_and_lists() {
        let m = SipMessage::parse(INVITE.as_bytes(), 65_535).unwrap();
        assert_eq!(m.method(), Some("INVITE"));
        assert_eq!(m.header("call-id"), Some("a84b4c76e66710@pc33.example.com"));
        assert_eq!(m.header("CSeq"), Some("314159 INVITE"));
        assert_eq!(m.header_values("Via").len(), 2);
        assert_eq!(m.header_values("From").len(), 1, "comma inside quotes is not a list separator");
        assert_eq!(&m.body[..], b"v=0\r");
    }

    #[test]
    fn encode_round_trips() {
        let m = SipMessage::parse(INVITE.as_bytes(), 65_535).unwrap();
        let again = SipMessage::parse(&m.encode(), 65_535).unwrap();
        assert_eq!(m, again);
    }

    #[test]
    fn rejects_structural_errors() {
        assert_eq!(SipMessage::parse(b"", 100), Err(ParseError::Empty));
        assert_eq!(SipMessage::parse(b"INVITE sip:a SIP/2.0\r\nVia: x\r\n", 100), Err(ParseError::Unterminated));
        assert_eq!(SipMessage::parse(b"INVITE\r\n\r\n", 100), Err(ParseError::StartLine));
        assert_eq!(SipMessage::parse(b"GET / HTTP/1.1\r\n\r\n", 100), Err(ParseError::StartLine));
        assert_eq!(SipMessage::parse(b"SIP/2.0 99 Odd\r\n\r\n", 100), Err(ParseError::StartLine));
        assert_eq!(SipMessage::parse(b"SIP/3.0 200 OK\r\n\r\n", 100), Err(ParseError::Version));
        // Any defect of a response is fatal: it cannot be answered.
        assert_eq!(SipMessage::parse(b"SIP/2.0 200 OK\r\nNoColon\r\n\r\n", 100), Err(ParseError::HeaderLine));
        assert_eq!(SipMessage::parse(b"SIP/2.0 200 OK\r\nl: 9\r\n\r\nabc", 100), Err(ParseError::BodyTruncated));
        assert_eq!(SipMessage::parse(b"SIP/2.0 200 OK\r\nl: -1\r\n\r\n", 100), Err(ParseError::ContentLength));
    }

    #[test]
    fn requests_keep_answerable_defects_as_flaws() {
        let flaws = |raw: &[u8]| SipMessage::parse(raw, 200).map(|m| m.flaws);
        assert_eq!(flaws(b"INVITE sip:a SIP/7.0\r\n\r\n"), Ok(vec![ParseError::Version]));
        assert_eq!(flaws(b"INVITE  sip:a  SIP/2.0\r\n\r\n"), Ok(vec![ParseError::StartLine]));
        assert_eq!(flaws(b"INVITE sip:a SIP/2.0 \r\n\r\n"), Ok(vec![ParseError::StartLine]));
        assert_eq!(flaws(b"INVITE sip:a; lr SIP/2.0\r\n\r\n"), Ok(vec![ParseError::RequestUri]));
        assert_eq!(flaws(b"OPTIONS sip:a SIP/2.0\r\nNoColon\r\n\r\n"), Ok(vec![ParseError::HeaderLine]));
        assert_eq!(flaws(b"OPTIONS sip:a SIP/2.0\r\nBad Name: x\r\n\r\n"), Ok(vec![ParseError::HeaderLine]));
        assert_eq!(flaws(b"OPTIONS sip:a SIP/2.0\r\nContent-Length: 9\r\n\r\nabc"), Ok(vec![ParseError::BodyTruncated]));
        assert_eq!(flaws(b"OPTIONS sip:a SIP/2.0\r\nl: -3\r\n\r\nabc"), Ok(vec![ParseError::ContentLength]));
        assert_eq!(flaws(b"OPTIONS sip:a SIP/2.0\r\nl: 1\r\nl: 2\r\n\r\nabc"), Ok(vec![ParseError::ContentLength]));
        assert_eq!(flaws(b"OPTIONS sip:a SIP/2.0\r\nSubject: \xff\r\n\r\n"), Ok(vec![ParseError::NotUtf8]));
        assert_eq!(flaws(b"OPTIONS sip:a sip/2.0\r\nl: 3\r\n\r\nabcdef"), Ok(vec![]));
        let m = SipMessage::parse(b"OPTIONS sip:a SIP/2.0\r\nl: 9\r\n\r\nabc", 200).unwrap();
        assert_eq!(&m.body[..], b"abc", "a truncated body is kept as received");
    }

    #[test]
    fn frames_a_stream() {
        let one = b"OPTIONS sip:a SIP/2.0\r\nl: 3\r\n\r\nabc";
        let mut stream = b"\r\n\r\n".to_vec();
        assert_eq!(frame_length(&stream, 1000), Frame::KeepAlive(4));
        stream.clear();
        stream.extend_from_slice(one);
        stream.extend_from_slice(b"OPTIONS");
        assert_eq!(frame_length(&stream, 1000), Frame::Message(one.len()));
        assert_eq!(frame_length(&one[..10], 1000), Frame::Incomplete);
        assert!(matches!(frame_length(b"OPTIONS sip:a SIP/2.0\r\n\r\n", 1000), Frame::Invalid(_)));
        let invalid = |raw: &[u8]| frame_length(raw, 1000) == Frame::Invalid(ParseError::ContentLength);
        assert!(invalid(b"OPTIONS sip:a SIP/2.0\r\nl: -4\r\n\r\n"), "negative");
        assert!(invalid(b"OPTIONS sip:a SIP/2.0\r\nl: 4\r\nContent-Length: 5\r\n\r\n"), "ambiguous");
        assert_eq!(frame_length(b"OPTIONS sip:a SIP/2.0\r\nl: 1\r\nl : 1\r\n\r\nxy", 1000), Frame::Message(39));
        assert_eq!(
            frame_length(b"OPTIONS sip:a SIP/2.0\r\nl: 18446744073709551615\r\n\r\n", 1000),
            Frame::Invalid(ParseError::TooLarge(1000))
        );
    }

    #[test]
    fn never_panics_on_mutated_input() {
        // Every truncation and a deterministic spread of byte flips of a valid
        // message must give Ok or Err, never a panic, and an Ok must encode.
        let base = INVITE.as_bytes();
        for cut in 0..base.len() {
            if let Ok(m) = SipMessage::parse(&base[..cut], 65_535) {
                let _ = m.encode();
            }
            let _ = frame_length(&base[..cut], 65_535);
        }
        let mut state: u32 = 0x1234_5678;
        for _ in 0..20_000 {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            let mut m = base.to_vec();
            let pos = state as usize % m.len();
            m[pos] = (state >> 8) as u8;
            let pos2 = (state >> 3) as usize % m.len();
            m[pos2] = b"\r\n:;,<>\" \t\x00\xff"[(state >> 16) as usize % 12];
            if let Ok(msg) = SipMessage::parse(&m, 65_535) {
                let _ = SipMessage::parse(&msg.encode(), 65_535);
                let _ = crate::sip::response::validate_request(&msg);
            }
            let _ = frame_length(&m, 65_535);
        }
    }
}
