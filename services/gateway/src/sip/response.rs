//! Building responses and checking requests (RFC 3261 §8.2, §8.2.6).

use super::headers::{CSeq, NameAddr, Via};
use super::message::SipMessage;

/// Standard reason phrases for the codes the gateway sends.
pub fn reason_phrase(code: u16) -> &'static str {
    match code {
        100 => "Trying",
        180 => "Ringing",
        183 => "Session Progress",
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        416 => "Unsupported URI Scheme",
        480 => "Temporarily Unavailable",
        481 => "Call/Transaction Does Not Exist",
        483 => "Too Many Hops",
        486 => "Busy Here",
        487 => "Request Terminated",
        488 => "Not Acceptable Here",
        500 => "Server Internal Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        603 => "Decline",
        _ => "Unknown",
    }
}

/// A response to `request` with the headers RFC 3261 §8.2.6.2 copies
/// (Via, From, To, Call-ID, CSeq). `to_tag` is added to To unless To
/// already carries a tag (in-dialog) or the code is 100.
pub fn make_response(request: &SipMessage, code: u16, to_tag: Option<&str>, server: &str) -> SipMessage {
    let mut r = SipMessage::response(code, reason_phrase(code));
    for (n, v) in &request.headers {
        if n == "Via" {
            r.push_header("Via", v.clone());
        }
    }
    if let Some(from) = request.header("From") {
        r.push_header("From", from.to_owned());
    }
    if let Some(to) = request.header("To") {
        let has_tag = NameAddr::parse(to).is_some_and(|n| n.tag().is_some());
        match (to_tag, has_tag, code) {
            (Some(tag), false, c) if c > 100 => r.push_header("To", format!("{to};tag={tag}")),
            _ => r.push_header("To", to.to_owned()),
        };
    }
    if let Some(id) = request.header("Call-ID") {
        r.push_header("Call-ID", id.to_owned());
    }
    if let Some(cseq) = request.header("CSeq") {
        r.push_header("CSeq", cseq.to_owned());
    }
    r.push_header("Server", server.to_owned());
    r
}

/// Why a request is not acceptable, as the status code and reason to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub code: u16,
    pub reason: String,
}

/// Checks the mandatory headers of a request (RFC 3261 §8.1.1) and that
/// they parse. Returns the typed top Via and CSeq on success.
pub fn validate_request(m: &SipMessage) -> Result<(Via, CSeq), Rejection> {
    let bad = |why: &str| Rejection { code: 400, reason: format!("Bad Request ({why})") };
    let method = m.method().ok_or_else(|| bad("not a request"))?;
    let uri = m.request_uri().unwrap_or("");
    let scheme = uri.split(':').next().unwrap_or("").to_ascii_lowercase();
    let via = m.header_values("Via").first().and_then(|v| Via::parse(v)).ok_or_else(|| bad("Via"))?;
    let cseq = m.header("CSeq").and_then(CSeq::parse).ok_or_else(|| bad("CSeq"))?;
    if !cseq.method.eq(method) {
        return Err(bad("CSeq method differs from the request method"));
    }
    if m.header("Call-ID").is_none_or(|c| c.is_empty()) {
        return Err(bad("Call-ID"));
    }
    for h in ["From", "To"] {
        let v = m.header(h).ok_or_else(|| bad(h))?;
        NameAddr::parse(v).ok_or_else(|| bad(h))?;
    }
    if let Some(mf) = m.header("Max-Forwards") {
        let mf: u32 = mf.trim().parse().map_err(|_| bad("Max-Forwards"))?;
        if mf == 0 && method != "ACK" && method != "CANCEL" {
            return Err(Rejection { code: 483, reason: "Too Many Hops".into() });
        }
    }
    if !uri.contains(':') {
        return Err(bad("Request-URI"));
    }
    if scheme != "sip" && scheme != "sips" && scheme != "tel" {
        return Err(Rejection { code: 416, reason: "Unsupported URI Scheme".into() });
    }
    Ok((via, cseq))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(extra: &str) -> SipMessage {
        let text = format!(
            "INVITE sip:+1@gw SIP/2.0\r\nVia: SIP/2.0/UDP 1.2.3.4;branch=z9hG4bK1\r\nFrom: <sip:a@b>;tag=x\r\nTo: <sip:+1@gw>\r\nCall-ID: c1\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\n{extra}\r\n"
        );
        SipMessage::parse(text.as_bytes(), 65535).unwrap()
    }

    #[test]
    fn response_copies_and_tags() {
        let r = make_response(&req(""), 180, Some("t1"), "S");
        assert_eq!(r.header("To"), Some("<sip:+1@gw>;tag=t1"));
        assert_eq!(r.header("CSeq"), Some("1 INVITE"));
        let trying = make_response(&req(""), 100, Some("t1"), "S");
        assert_eq!(trying.header("To"), Some("<sip:+1@gw>"));
    }

    #[test]
    fn validation() {
        assert!(validate_request(&req("")).is_ok());
        let mut m = req("");
        m.set_header("CSeq", "1 BYE");
        assert_eq!(validate_request(&m).unwrap_err().code, 400);
        let mut m = req("");
        m.start = crate::sip::StartLine::Request { method: "INVITE".into(), uri: "http://x".into() };
        assert_eq!(validate_request(&m).unwrap_err().code, 416);
        let mut m = req("");
        m.set_header("Max-Forwards", "0");
        assert_eq!(validate_request(&m).unwrap_err().code, 483);
        let mut m = req("");
        m.remove_header("Call-ID");
        assert_eq!(validate_request(&m).unwrap_err().code, 400);
    }
}
