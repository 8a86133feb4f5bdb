//! Building responses and checking requests (RFC 3261 §8.2, §8.2.6).
//!
//! [`validate_request`] is the gate every received request passes before
//! the call manager acts on it; what it refuses is answered statelessly.
//! Its choices follow RFC 4475 (the SIP torture tests), which
//! `tests/torture.rs` replays against the whole gateway.

use super::headers::{CSeq, NameAddr, SipUri, Via};
use super::message::{split_list, ParseError, SipMessage};

/// The option tags (RFC 3261 §19.2) this gateway implements, for `Require`.
/// None: every `Require`d extension is answered with 420.
pub const SUPPORTED_EXTENSIONS: &[&str] = &[];

/// The body types the gateway accepts in an INVITE and sends in answers.
pub const ACCEPTED_BODY: &str = "application/sdp";

/// Standard reason phrases for the codes the gateway sends.
pub fn reason_phrase(code: u16) -> &'static str {
    match code {
        100 => "Trying",
        180 => "Ringing",
        183 => "Session Progress",
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        406 => "Not Acceptable",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        415 => "Unsupported Media Type",
        416 => "Unsupported URI Scheme",
        420 => "Bad Extension",
        423 => "Interval Too Brief",
        480 => "Temporarily Unavailable",
        481 => "Call/Transaction Does Not Exist",
        483 => "Too Many Hops",
        484 => "Address Incomplete",
        486 => "Busy Here",
        487 => "Request Terminated",
        491 => "Request Pending",
        488 => "Not Acceptable Here",
        500 => "Server Internal Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        505 => "Version Not Supported",
        513 => "Message Too Large",
        600 => "Busy Everywhere",
        603 => "Decline",
        604 => "Does Not Exist Anywhere",
        _ => "Unknown",
    }
}

/// A response to `request` with the headers RFC 3261 §8.2.6.2 copies
/// (Via, From, To, Call-ID, CSeq). `to_tag` is added to To unless To
/// already carries a tag (in-dialog) or the code is 100. A 415 lists the
/// accepted body type (Accept, §8.2.3) and a 420 the `Require`d options
/// the gateway lacks (Unsupported, §8.2.2.3).
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
    match code {
        415 => {
            r.push_header("Accept", ACCEPTED_BODY);
        }
        420 => {
            let missing = unsupported_options(request);
            if !missing.is_empty() {
                r.push_header("Unsupported", missing.join(", "));
            }
        }
        _ => {}
    }
    r.push_header("Server", server.to_owned());
    r
}

/// The option tags of the request's `Require` that the gateway lacks.
fn unsupported_options(request: &SipMessage) -> Vec<&str> {
    request
        .header_values("Require")
        .into_iter()
        .filter(|tag| !SUPPORTED_EXTENSIONS.iter().any(|s| s.eq_ignore_ascii_case(tag)))
        .collect()
}

/// Why a request is not acceptable, as the status code and reason to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub code: u16,
    pub reason: String,
}

/// Headers that may appear once only (RFC 3261 §7.3.1, §20).
const SINGLE_VALUED: &[&str] = &["Call-ID", "CSeq", "From", "To", "Max-Forwards", "Content-Length", "Content-Type"];

/// Checks a request before anything acts on it, and says how to refuse it:
/// 505 for a SIP version other than 2.0, 400 for a malformed request
/// (defects the parser stepped over, a missing or repeated or unparsable
/// mandatory header, a start line and CSeq that disagree), 483 for an
/// INVITE that has run out of hops, 416 for a Request-URI scheme other
/// than sip, sips and tel, 420 for a `Require`d extension, 415 and 406 for
/// an INVITE whose body or `Accept` is not SDP. Returns the typed top Via
/// and CSeq on success.
///
/// Liberal where RFC 4475 allows it and the gateway does not use the
/// value: a Date in another zone than GMT, out-of-range Expires (treated as
/// absent by the registrar), a Via branch without the RFC 3261 cookie
/// (RFC 2543 peers), a missing From tag or Max-Forwards.
pub fn validate_request(m: &SipMessage) -> Result<(Via, CSeq), Rejection> {
    let bad = |why: &str| Rejection { code: 400, reason: format!("Bad Request ({why})") };
    if let Some(flaw) = m.flaws.first() {
        return Err(match flaw {
            ParseError::Version => Rejection { code: 505, reason: reason_phrase(505).into() },
            other => bad(&other.to_string()),
        });
    }
    let method = m.method().ok_or_else(|| bad("not a request"))?;
    let uri = m.request_uri().unwrap_or("");
    for h in SINGLE_VALUED {
        if m.headers.iter().filter(|(n, _)| n == h).count() > 1 {
            return Err(bad(&format!("more than one {h}")));
        }
    }
    // Every Via element must be well formed, not only the top one we use.
    let vias: Option<Vec<Via>> =
        m.header_values("Via").into_iter().map(|v| Via::parse(v).filter(|_| params_well_formed(v))).collect();
    let via = vias.and_then(|v| v.into_iter().next()).ok_or_else(|| bad("Via"))?;
    if via.branch() == Some("z9hG4bK") {
        // The RFC 3261 cookie promises a unique branch, and none follows.
        return Err(bad("Via branch has no transaction identifier"));
    }
    let cseq = m.header("CSeq").and_then(CSeq::parse).ok_or_else(|| bad("CSeq"))?;
    if !cseq.method.eq(method) {
        return Err(bad("CSeq method differs from the request method"));
    }
    if m.header("Call-ID").is_none_or(|c| c.is_empty()) {
        return Err(bad("Call-ID"));
    }
    for h in ["From", "To"] {
        let v = m.header(h).ok_or_else(|| bad(h))?;
        strict_name_addr(v).ok_or_else(|| bad(h))?;
    }
    for contact in m.header_values("Contact") {
        if contact != "*" {
            strict_name_addr(contact).ok_or_else(|| bad("Contact"))?;
        }
    }
    if let Some(mf) = m.header("Max-Forwards") {
        let mf: u8 = mf.trim().parse().map_err(|_| bad("Max-Forwards"))?;
        // Only an INVITE is relayed (as the device leg), so only an INVITE
        // can loop; OPTIONS, REGISTER and in-dialog requests end here and are
        // processed whatever their Max-Forwards (RFC 4475 §3.3.11).
        if mf == 0 && method == "INVITE" {
            return Err(Rejection { code: 483, reason: reason_phrase(483).into() });
        }
    }
    let scheme = uri_scheme(uri).ok_or_else(|| bad("Request-URI"))?.to_ascii_lowercase();
    match scheme.as_str() {
        "sip" | "sips" => {
            SipUri::parse(uri).ok_or_else(|| bad("Request-URI"))?;
            if uri_has_headers(uri) {
                // RFC 3261 §19.1.5: headers are not allowed in a Request-URI.
                return Err(bad("Request-URI has headers"));
            }
        }
        "tel" => {}
        _ => return Err(Rejection { code: 416, reason: reason_phrase(416).into() }),
    }
    if method == "REGISTER" {
        // The address of record is a SIP or SIPS URI (RFC 3261 §10.2).
        let aor = m.header("To").and_then(NameAddr::parse).map(|n| n.uri).unwrap_or_default();
        if !matches!(uri_scheme(&aor).map(str::to_ascii_lowercase).as_deref(), Some("sip" | "sips")) {
            return Err(bad("the address of record in To is not a SIP URI"));
        }
    }
    if method != "ACK" && method != "CANCEL" && !unsupported_options(m).is_empty() {
        return Err(Rejection { code: 420, reason: reason_phrase(420).into() });
    }
    if method == "INVITE" {
        if let Some(ct) = m.header("Content-Type").filter(|_| !m.body.is_empty()) {
            if !media_type(ct).eq_ignore_ascii_case(ACCEPTED_BODY) {
                return Err(Rejection { code: 415, reason: reason_phrase(415).into() });
            }
        }
        let accept: Vec<&str> = m.header_values("Accept").into_iter().flat_map(split_list).collect();
        if !accept.is_empty() && !accept.iter().any(|range| admits_sdp(media_type(range))) {
            return Err(Rejection { code: 406, reason: reason_phrase(406).into() });
        }
    }
    Ok((via, cseq))
}

/// The scheme of a URI if it is well formed (RFC 3986 §3.1:
/// `ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )` before the colon).
fn uri_scheme(uri: &str) -> Option<&str> {
    let (scheme, _) = uri.split_once(':')?;
    let mut chars = scheme.chars();
    let first_alpha = chars.next().is_some_and(|c| c.is_ascii_alphabetic());
    (first_alpha && chars.all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))).then_some(scheme)
}

/// Whether a SIP URI carries headers (`?name=value` after the host; a `?`
/// in the user part is not one).
fn uri_has_headers(uri: &str) -> bool {
    let after_user = uri.rfind('@').map_or(uri, |i| &uri[i + 1..]);
    after_user.contains('?')
}

/// The `type/subtype` of a media type or range, without parameters.
fn media_type(value: &str) -> &str {
    value.split(';').next().unwrap_or("").trim()
}

fn admits_sdp(range: &str) -> bool {
    let (kind, sub) = range.split_once('/').unwrap_or((range, ""));
    (kind == "*" && sub == "*")
        || (kind.eq_ignore_ascii_case("application") && (sub == "*" || sub.eq_ignore_ascii_case("sdp")))
}

/// `;`-separated parameters after the first one are all present: no
/// `;;`, no trailing `;` (quoted strings are skipped).
fn params_well_formed(value: &str) -> bool {
    let (mut in_quotes, mut escaped, mut last_was_semicolon) = (false, false, false);
    for c in value.chars() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' if in_quotes => escaped = true,
            '"' => in_quotes = !in_quotes,
            ';' if !in_quotes => {
                if last_was_semicolon {
                    return false;
                }
                last_was_semicolon = true;
                continue;
            }
            c if c.is_whitespace() => continue,
            _ => {}
        }
        last_was_semicolon = false;
    }
    !last_was_semicolon && !in_quotes
}

/// A From, To or Contact value as RFC 3261 §20.10 spells it, stricter than
/// [`NameAddr::parse`] (which the call legs use on whatever peers send):
/// an unquoted display name is tokens only (RFC 4475 §3.1.2.15), the URI
/// in angle brackets has no white space (§3.1.2.14), a bare addr-spec has
/// no `?` or `,` (§3.1.2.13, RFC 3261 §20), and no parameter is empty
/// (§3.1.2.1).
fn strict_name_addr(value: &str) -> Option<NameAddr> {
    let parsed = NameAddr::parse(value)?;
    let value = value.trim();
    let uri_in_brackets = |rest: &str| -> Option<usize> {
        let gt = rest.find('>')?;
        (!rest[..gt].contains(char::is_whitespace)).then_some(gt)
    };
    let after_uri = if value.starts_with('"') {
        let close = closing_quote(value)?;
        let rest = value[close + 1..].trim_start().strip_prefix('<')?;
        &rest[uri_in_brackets(rest)? + 1..]
    } else if let Some(lt) = value.find('<') {
        if !value[..lt].chars().all(|c| c.is_whitespace() || !c.is_ascii() || is_token(c)) {
            return None;
        }
        let rest = &value[lt + 1..];
        &rest[uri_in_brackets(rest)? + 1..]
    } else {
        if parsed.uri.contains(['?', ',']) {
            return None;
        }
        &value[parsed.uri.len()..]
    };
    params_well_formed(after_uri).then_some(parsed)
}

/// The byte index of the quote that closes the quoted-string `s` starts with.
fn closing_quote(s: &str) -> Option<usize> {
    let mut escaped = false;
    for (i, c) in s.char_indices().skip(1) {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => return Some(i),
            _ => {}
        }
    }
    None
}

fn is_token(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-.!%*_+`'~".contains(c)
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

    fn code(extra: &str) -> Option<u16> {
        validate_request(&req(extra)).err().map(|r| r.code)
    }

    #[test]
    fn rejects_malformed_headers_with_400() {
        assert_eq!(code("Call-ID: c2\r\n"), Some(400), "a second Call-ID");
        assert_eq!(code("Via: SIP/2.0/UDP 5.6.7.8;;branch=z9hG4bKa\r\n"), Some(400), "an empty Via parameter");
        assert_eq!(code("Contact: <sip:a@b>;;\r\n"), Some(400), "an empty Contact parameter");
        assert_eq!(code("Contact: sip:a@b?Route=%3Csip:c%3E\r\n"), Some(400), "headers in a bare addr-spec");
        assert_eq!(code("Contact: Bell, Alexander <sip:a@b>\r\n"), Some(400), "a comma in an unquoted display name");
        assert_eq!(code("Contact: \"Bell, A.\" < sip:a@b >\r\n"), Some(400), "white space inside <>");
        assert_eq!(code("Contact: \"Bell, A.\"<sip:a@b>;q=0.5, caller<sip:c@d>, *\r\n"), None);
        assert_eq!(code("Contact: sip:a@b ; expires = 60\r\n"), None);
        assert_eq!(code("Max-Forwards: 70\r\n"), Some(400), "a second Max-Forwards");
        let mut m = req("");
        m.set_header("Max-Forwards", "256");
        assert_eq!(validate_request(&m).unwrap_err().code, 400);
        let mut m = req("");
        m.set_header("Via", "SIP/2.0/UDP 1.2.3.4;branch=z9hG4bK");
        assert_eq!(validate_request(&m).unwrap_err().code, 400, "the cookie alone is no branch");
        m.set_header("Via", "SIP/2.0/UDP 1.2.3.4;branch=rfc2543style");
        assert!(validate_request(&m).is_ok(), "an RFC 2543 branch is accepted");
        let flawed = SipMessage::parse(b"OPTIONS sip:a@b SIP/2.1\r\n\r\n", 100).unwrap();
        assert_eq!(validate_request(&flawed).unwrap_err().code, 505);
        let flawed = SipMessage::parse(b"OPTIONS sip:a@b  SIP/2.0\r\n\r\n", 100).unwrap();
        assert_eq!(validate_request(&flawed).unwrap_err().code, 400);
    }

    #[test]
    fn request_uri_schemes_and_forms() {
        let with_uri = |uri: &str| {
            let mut m = req("");
            m.start = crate::sip::StartLine::Request { method: "INVITE".into(), uri: uri.into() };
            validate_request(&m).err().map(|r| r.code)
        };
        assert_eq!(with_uri("tel:+14155550100"), None);
        assert_eq!(with_uri("SIP:+1@gw"), None);
        assert_eq!(with_uri("sip:a?b@gw"), None, "a ? in the user part is not a header");
        assert_eq!(with_uri("sip:a@gw?Route=x"), Some(400));
        assert_eq!(with_uri("<sip:a@gw>"), Some(400));
        assert_eq!(with_uri("soap.beep://192.0.2.1:3002"), Some(416));
        assert_eq!(with_uri("x-unheard-of:opaque"), Some(416));
    }

    #[test]
    fn invite_extensions_bodies_and_accept() {
        assert_eq!(code("Require: 100rel\r\n"), Some(420));
        let r = make_response(&req("Require: 100rel, timer\r\n"), 420, None, "S");
        assert_eq!(r.header("Unsupported"), Some("100rel, timer"));
        assert_eq!(code("Proxy-Require: foo\r\n"), None, "Proxy-Require is for proxies");
        assert_eq!(code("Content-Type: text/plain\r\nContent-Length: 2\r\n\r\nhi"), Some(415));
        assert_eq!(make_response(&req(""), 415, None, "S").header("Accept"), Some("application/sdp"));
        assert_eq!(code("Content-Type: Application/SDP;x=1\r\nContent-Length: 2\r\n\r\nhi"), None);
        assert_eq!(code("Accept: text/plain\r\n"), Some(406));
        assert_eq!(code("Accept: text/plain, application/*;q=0.1\r\n"), None);
        assert_eq!(code("Accept: */*\r\n"), None);
        let mut m = req("");
        m.start = crate::sip::StartLine::Request { method: "OPTIONS".into(), uri: "sip:gw".into() };
        m.set_header("CSeq", "1 OPTIONS").set_header("Max-Forwards", "0");
        assert!(validate_request(&m).is_ok(), "an OPTIONS for the gateway itself is answered at 0 hops");
        m.set_header("Accept", "text/plain");
        assert!(validate_request(&m).is_ok(), "Accept matters for INVITE only");
        let mut m = req("");
        m.start = crate::sip::StartLine::Request { method: "REGISTER".into(), uri: "sip:gw".into() };
        m.set_header("CSeq", "1 REGISTER").set_header("To", "<isbn:2983792873>");
        assert_eq!(validate_request(&m).unwrap_err().code, 400, "an address of record is a SIP URI");
    }
}
