//! Typed views of the SIP header values the B2BUA reads: Via, name-addr
//! (From/To/Contact), CSeq and SIP URIs. Each parser returns `None` on bad
//! input; callers turn that into a 400.

use rand::Rng;

/// `;name=value` parameters in order; a flag parameter has no value.
pub type Params = Vec<(String, Option<String>)>;

fn parse_params(s: &str) -> Params {
    s.split(';')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((n, v)) => (n.trim().to_ascii_lowercase(), Some(v.trim().to_owned())),
            None => (p.to_ascii_lowercase(), None),
        })
        .collect()
}

/// The value of a parameter, if present with a value.
pub fn param<'a>(params: &'a Params, name: &str) -> Option<&'a str> {
    params.iter().find(|(n, _)| n == name).and_then(|(_, v)| v.as_deref())
}

/// One Via element: `SIP/2.0/UDP host:port;branch=…`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Via {
    pub transport: String,
    pub host: String,
    pub port: Option<u16>,
    pub params: Params,
}

impl Via {
    pub fn parse(s: &str) -> Option<Via> {
        // Linear white space may surround the slashes of the sent-protocol.
        let compact = collapse_around_slashes(s.trim());
        let (proto, rest) = compact.split_once([' ', '\t']).map(|(a, b)| (a, b.trim()))?;
        let mut parts = proto.split('/');
        let (name, version, transport) = (parts.next()?, parts.next()?, parts.next()?);
        if !name.eq_ignore_ascii_case("SIP") || version != "2.0" || transport.is_empty() || parts.next().is_some() {
            return None;
        }
        let (sent_by, params) = match rest.find(';') {
            Some(i) => (rest[..i].trim(), parse_params(&rest[i + 1..])),
            None => (rest.trim(), Vec::new()),
        };
        let (host, port) = split_host_port(sent_by)?;
        Some(Via { transport: transport.to_ascii_uppercase(), host, port, params })
    }

    pub fn branch(&self) -> Option<&str> {
        param(&self.params, "branch")
    }
}

fn collapse_around_slashes(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for part in s.split('/') {
        if !out.is_empty() {
            while out.ends_with([' ', '\t']) {
                out.pop();
            }
            out.push('/');
            out.push_str(part.trim_start_matches([' ', '\t']));
        } else {
            out.push_str(part);
        }
    }
    out
}

/// Splits `host[:port]`, including `[v6]:port`.
pub fn split_host_port(s: &str) -> Option<(String, Option<u16>)> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    if let Some(rest) = s.strip_prefix('[') {
        let end = rest.find(']')?;
        let host = format!("[{}]", &rest[..end]);
        let after = &rest[end + 1..];
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p.parse().ok()?),
            None if after.is_empty() => None,
            None => return None,
        };
        return Some((host, port));
    }
    match s.rsplit_once(':') {
        Some((h, p)) => Some((h.to_owned(), Some(p.parse().ok()?))),
        None => Some((s.to_owned(), None)),
    }
    .filter(|(h, _)| !h.is_empty() && !h.contains(char::is_whitespace))
}

/// A `sip:`/`sips:` URI: `sip:user@host:port;params`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipUri {
    pub scheme: String,
    pub user: Option<String>,
    pub host: String,
    pub port: Option<u16>,
    pub params: Params,
}

impl SipUri {
    pub fn parse(s: &str) -> Option<SipUri> {
        let (scheme, rest) = s.trim().split_once(':')?;
        let scheme = scheme.to_ascii_lowercase();
        if scheme != "sip" && scheme != "sips" {
            return None;
        }
        // The user part may hold `?` and `;` (RFC 3261 §25.1 user-unreserved),
        // so it is cut off first. URI headers (`?a=b`) are not used by the
        // gateway.
        let (userinfo, hostpart) = match rest.rfind('@') {
            Some(i) => (Some(&rest[..i]), &rest[i + 1..]),
            None => (None, rest),
        };
        let hostpart = hostpart.split('?').next().unwrap_or("");
        let user = userinfo.map(|u| u.split(':').next().unwrap_or("").to_owned());
        let (hostport, params) = match hostpart.find(';') {
            Some(i) => (&hostpart[..i], parse_params(&hostpart[i + 1..])),
            None => (hostpart, Vec::new()),
        };
        let (host, port) = split_host_port(hostport)?;
        Some(SipUri { scheme, user, host, port, params })
    }

    /// The transport parameter, upper-cased (`UDP` when absent).
    pub fn transport(&self) -> String {
        param(&self.params, "transport").map(|t| t.to_ascii_uppercase()).unwrap_or_else(|| "UDP".to_owned())
    }
}

impl std::fmt::Display for SipUri {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:", self.scheme)?;
        if let Some(u) = &self.user {
            write!(f, "{u}@")?;
        }
        write!(f, "{}", self.host)?;
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        for (n, v) in &self.params {
            match v {
                Some(v) => write!(f, ";{n}={v}")?,
                None => write!(f, ";{n}")?,
            }
        }
        Ok(())
    }
}

/// `"Display" <uri>;params` or `uri;params` (From, To, Contact).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameAddr {
    pub display: Option<String>,
    pub uri: String,
    pub params: Params,
}

impl NameAddr {
    pub fn parse(s: &str) -> Option<NameAddr> {
        let s = s.trim();
        if let Some(lt) = find_unquoted(s, '<') {
            let gt = s[lt..].find('>')? + lt;
            let display = unquote(s[..lt].trim());
            let display = display.trim();
            let params = parse_params(s[gt + 1..].trim_start().strip_prefix(';').unwrap_or(""));
            if !s[gt + 1..].trim().is_empty() && !s[gt + 1..].trim_start().starts_with(';') {
                return None;
            }
            let uri = s[lt + 1..gt].trim().to_owned();
            if !uri.contains(':') {
                return None;
            }
            return Some(NameAddr { display: (!display.is_empty()).then(|| display.to_owned()), uri, params });
        }
        // addr-spec form: parameters after the URI belong to the header.
        let (uri, params) = match s.find(';') {
            Some(i) => (s[..i].trim_end(), parse_params(&s[i + 1..])),
            None => (s, Vec::new()),
        };
        if !uri.contains(':') || uri.contains(char::is_whitespace) {
            return None;
        }
        Some(NameAddr { display: None, uri: uri.to_owned(), params })
    }

    pub fn tag(&self) -> Option<&str> {
        param(&self.params, "tag")
    }

    /// The user part of the URI (the number, for telephony URIs).
    pub fn user(&self) -> Option<String> {
        SipUri::parse(&self.uri).and_then(|u| u.user).or_else(|| {
            self.uri.strip_prefix("tel:").map(|t| t.split(';').next().unwrap_or("").to_owned())
        })
    }
}

impl std::fmt::Display for NameAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(d) = &self.display {
            f.write_str("\"")?;
            for c in d.chars().filter(|c| *c != '\r' && *c != '\n') {
                // quoted-pair for what a quoted-string cannot hold as is.
                if c == '"' || c == '\\' || c.is_ascii_control() {
                    f.write_str("\\")?;
                }
                write!(f, "{c}")?;
            }
            f.write_str("\" ")?;
        }
        write!(f, "<{}>", self.uri)?;
        for (n, v) in &self.params {
            match v {
                Some(v) => write!(f, ";{n}={v}")?,
                None => write!(f, ";{n}")?,
            }
        }
        Ok(())
    }
}

/// The text of a display name: a quoted-string loses its quotes and its
/// quoted-pairs their backslash (`"A \"B\""` → `A "B"`); a run of tokens is
/// kept as it is.
fn unquote(s: &str) -> String {
    let Some(inner) = s.strip_prefix('"') else {
        return s.to_owned();
    };
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.extend(chars.next()),
            '"' => break,
            c => out.push(c),
        }
    }
    out
}

/// Decodes the `%HH` escapes of a URI component once (RFC 3261 §19.1.2,
/// RFC 3986 §2.1), to bytes: an escaped NUL is a byte of the result like
/// any other and does not end it, and a `%` that is not followed by two
/// hex digits is kept as it is.
pub fn unescape(s: &str) -> Vec<u8> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1).copied().and_then(hex), bytes.get(i + 2).copied().and_then(hex)) {
            (b'%', Some(hi), Some(lo)) => {
                out.push((hi * 16 + lo) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

fn find_unquoted(s: &str, needle: char) -> Option<usize> {
    let mut in_quotes = false;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' if in_quotes => escaped = true,
            '"' => in_quotes = !in_quotes,
            c if c == needle && !in_quotes => return Some(i),
            _ => {}
        }
    }
    None
}

/// `CSeq: 314159 INVITE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CSeq {
    pub seq: u32,
    pub method: String,
}

impl CSeq {
    pub fn parse(s: &str) -> Option<CSeq> {
        let mut it = s.split_whitespace();
        let seq = it.next()?.parse::<u32>().ok()?;
        let method = it.next()?.to_owned();
        if it.next().is_some() || seq >= 1 << 31 {
            return None;
        }
        Some(CSeq { seq, method })
    }
}

/// A fresh Via branch with the RFC 3261 magic cookie.
pub fn new_branch() -> String {
    format!("z9hG4bK{}", random_token(16))
}

/// A fresh From/To tag.
pub fn new_tag() -> String {
    random_token(12)
}

/// A fresh Call-ID for a leg the gateway originates.
pub fn new_call_id(host: &str) -> String {
    format!("{}@{}", random_token(20), host)
}

fn random_token(len: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..len).map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn via_with_spaces_and_params() {
        let v = Via::parse("SIP / 2.0 / UDP 192.0.2.1:5060 ;branch=z9hG4bKx;rport").unwrap();
        assert_eq!(v.transport, "UDP");
        assert_eq!(v.host, "192.0.2.1");
        assert_eq!(v.port, Some(5060));
        assert_eq!(v.branch(), Some("z9hG4bKx"));
        assert!(Via::parse("SIP/2.0 host").is_none());
        assert!(Via::parse("SIP/2.0/UDP [::1]:5060").is_some());
    }

    #[test]
    fn name_addr_forms() {
        let n = NameAddr::parse("\"A <b>, c\" <sip:+1415@x.example;user=phone>;tag=abc").unwrap();
        assert_eq!(n.display.as_deref(), Some("A <b>, c"));
        assert_eq!(n.tag(), Some("abc"));
        assert_eq!(n.user().as_deref(), Some("+1415"));
        let n = NameAddr::parse("sip:bob@example.com;tag=1").unwrap();
        assert_eq!(n.uri, "sip:bob@example.com");
        assert_eq!(n.tag(), Some("1"));
        assert!(NameAddr::parse("<sip:x").is_none());
        // Folding leaves white space before the parameters of an addr-spec.
        let n = NameAddr::parse("sip:bob@example.com ;  tag = 7").unwrap();
        assert_eq!((n.uri.as_str(), n.tag()), ("sip:bob@example.com", Some("7")));
        // Quoted-pairs in a display name: an escaped backslash, then an escaped quote.
        let n = NameAddr::parse(r#""J \\ R \"" <sip:j@example.com>;tag=1"#).unwrap();
        assert_eq!(n.display.as_deref(), Some(r#"J \ R ""#));
        assert_eq!(n.to_string(), r#""J \\ R \"" <sip:j@example.com>;tag=1"#);
        assert_eq!(NameAddr::parse(&n.to_string()), Some(n));
    }

    #[test]
    fn uri_and_cseq() {
        let u = SipUri::parse("sip:agent@127.0.0.1:5090;transport=tcp").unwrap();
        assert_eq!((u.user.as_deref(), u.host.as_str(), u.port), (Some("agent"), "127.0.0.1", Some(5090)));
        assert_eq!(u.transport(), "TCP");
        assert_eq!(u.to_string(), "sip:agent@127.0.0.1:5090;transport=tcp");
        assert!(SipUri::parse("http://x").is_none());
        let odd = SipUri::parse("sip:a?b;c=d:pw@example.com;lr?Route=x").unwrap();
        assert_eq!((odd.user.as_deref(), odd.host.as_str()), (Some("a?b;c=d"), "example.com"));
        assert_eq!(unescape("null-%00-null%2b%zz%4"), b"null-\0-null+%zz%4");
        assert_eq!(CSeq::parse("0009 INVITE").unwrap().seq, 9);
        assert!(CSeq::parse("x INVITE").is_none());
        assert!(CSeq::parse("4294967296 INVITE").is_none());
    }
}
