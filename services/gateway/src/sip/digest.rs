//! HTTP Digest authentication for SIP (RFC 3261 §22, RFC 7616 hashing,
//! RFC 8760 SHA-256 for SIP), sans-IO: challenges, stateless nonces with
//! expiry, verification of a device's credentials, and answering a trunk's
//! challenge.
//!
//! Nonces are self-validating: `base64(issued_at ‖ HMAC-SHA256(secret,
//! issued_at ‖ realm))`, so any gateway instance with the same secret
//! accepts them and nothing is stored per challenge. An expired but
//! authentic nonce is reported as stale so the client retries without
//! asking the user again (`stale=true`).

use std::fmt::Write as _;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use md5::Md5;
use sha2::{Digest, Sha256};

/// Digest hash algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Md5,
    Sha256,
}

impl Algorithm {
    pub fn token(self) -> &'static str {
        match self {
            Algorithm::Md5 => "MD5",
            Algorithm::Sha256 => "SHA-256",
        }
    }

    pub fn parse(s: &str) -> Option<Algorithm> {
        match s.to_ascii_uppercase().as_str() {
            "MD5" => Some(Algorithm::Md5),
            "SHA-256" => Some(Algorithm::Sha256),
            _ => None,
        }
    }

    /// Lower-case hex digest of `data`.
    pub fn hash(self, data: &str) -> String {
        match self {
            Algorithm::Md5 => hex(&Md5::digest(data.as_bytes())),
            Algorithm::Sha256 => hex(&Sha256::digest(data.as_bytes())),
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Parses `Digest k=v, k="v", …` into lower-case keys and unquoted values.
pub fn parse_params(header: &str) -> Option<Vec<(String, String)>> {
    let rest = header.trim();
    let (scheme, rest) = rest.split_once(|c: char| c.is_ascii_whitespace())?;
    if !scheme.eq_ignore_ascii_case("Digest") {
        return None;
    }
    let mut out = Vec::new();
    let mut chars = rest.char_indices().peekable();
    let bytes = rest;
    loop {
        // Skip separators.
        while let Some((_, c)) = chars.peek() {
            if *c == ',' || c.is_ascii_whitespace() {
                chars.next();
            } else {
                break;
            }
        }
        let Some((start, _)) = chars.peek().copied() else { break };
        let mut eq = None;
        while let Some((i, c)) = chars.peek().copied() {
            if c == '=' {
                eq = Some(i);
                chars.next();
                break;
            }
            if c == ',' {
                break;
            }
            chars.next();
        }
        let eq = eq?;
        let key = bytes[start..eq].trim().to_ascii_lowercase();
        while chars.peek().is_some_and(|(_, c)| c.is_ascii_whitespace()) {
            chars.next();
        }
        let value = if chars.peek().is_some_and(|(_, c)| *c == '"') {
            chars.next();
            let mut v = String::new();
            let mut closed = false;
            while let Some((_, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, e)) = chars.next() {
                            v.push(e);
                        }
                    }
                    '"' => {
                        closed = true;
                        break;
                    }
                    c => v.push(c),
                }
            }
            if !closed {
                return None;
            }
            v
        } else {
            let mut v = String::new();
            while let Some((_, c)) = chars.peek().copied() {
                if c == ',' {
                    break;
                }
                v.push(c);
                chars.next();
            }
            v.trim().to_owned()
        };
        if key.is_empty() {
            return None;
        }
        out.push((key, value));
    }
    Some(out)
}

fn get<'a>(params: &'a [(String, String)], key: &str) -> Option<&'a str> {
    params.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// A challenge the gateway sends in WWW-Authenticate / Proxy-Authenticate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    pub realm: String,
    pub nonce: String,
    pub algorithm: Algorithm,
    pub opaque: Option<String>,
    /// `qop="auth"` offered.
    pub qop_auth: bool,
    pub stale: bool,
}

impl Challenge {
    /// The header value.
    pub fn to_header(&self) -> String {
        let mut s = format!("Digest realm=\"{}\", nonce=\"{}\", algorithm={}", self.realm, self.nonce, self.algorithm.token());
        if self.qop_auth {
            s.push_str(", qop=\"auth\"");
        }
        if let Some(o) = &self.opaque {
            let _ = write!(s, ", opaque=\"{o}\"");
        }
        if self.stale {
            s.push_str(", stale=true");
        }
        s
    }

    /// Reads a challenge received from a trunk.
    pub fn parse(header: &str) -> Option<Challenge> {
        let p = parse_params(header)?;
        let algorithm = match get(&p, "algorithm") {
            Some(a) => Algorithm::parse(a)?,
            None => Algorithm::Md5,
        };
        Some(Challenge {
            realm: get(&p, "realm")?.to_owned(),
            nonce: get(&p, "nonce")?.to_owned(),
            algorithm,
            opaque: get(&p, "opaque").map(str::to_owned),
            qop_auth: get(&p, "qop").is_some_and(|q| q.split(',').any(|t| t.trim().eq_ignore_ascii_case("auth"))),
            stale: get(&p, "stale").is_some_and(|s| s.eq_ignore_ascii_case("true")),
        })
    }
}

/// Credentials from an Authorization / Proxy-Authorization header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub realm: String,
    pub nonce: String,
    pub uri: String,
    pub response: String,
    pub algorithm: Algorithm,
    pub cnonce: Option<String>,
    pub nc: Option<String>,
    pub qop: Option<String>,
    pub opaque: Option<String>,
}

impl Credentials {
    pub fn parse(header: &str) -> Option<Credentials> {
        let p = parse_params(header)?;
        let algorithm = match get(&p, "algorithm") {
            Some(a) => Algorithm::parse(a)?,
            None => Algorithm::Md5,
        };
        Some(Credentials {
            username: get(&p, "username")?.to_owned(),
            realm: get(&p, "realm")?.to_owned(),
            nonce: get(&p, "nonce")?.to_owned(),
            uri: get(&p, "uri")?.to_owned(),
            response: get(&p, "response")?.to_ascii_lowercase(),
            algorithm,
            cnonce: get(&p, "cnonce").map(str::to_owned),
            nc: get(&p, "nc").map(str::to_owned),
            qop: get(&p, "qop").map(str::to_owned),
            opaque: get(&p, "opaque").map(str::to_owned),
        })
    }

    /// The header value.
    pub fn to_header(&self) -> String {
        let mut s = format!(
            "Digest username=\"{}\", realm=\"{}\", nonce=\"{}\", uri=\"{}\", response=\"{}\", algorithm={}",
            self.username, self.realm, self.nonce, self.uri, self.response, self.algorithm.token()
        );
        if let (Some(q), Some(nc), Some(c)) = (&self.qop, &self.nc, &self.cnonce) {
            let _ = write!(s, ", qop={q}, nc={nc}, cnonce=\"{c}\"");
        }
        if let Some(o) = &self.opaque {
            let _ = write!(s, ", opaque=\"{o}\"");
        }
        s
    }
}

/// HA1 = H(username:realm:password); what a registrar may store instead of
/// the password.
pub fn ha1(algorithm: Algorithm, username: &str, realm: &str, password: &str) -> String {
    algorithm.hash(&format!("{username}:{realm}:{password}"))
}

/// The expected `response` value (RFC 7616 §3.4.1, qop=auth or none).
pub fn expected_response(
    algorithm: Algorithm,
    ha1: &str,
    nonce: &str,
    method: &str,
    uri: &str,
    qop: Option<(&str, &str)>, // (nc, cnonce) when qop=auth
) -> String {
    let ha2 = algorithm.hash(&format!("{method}:{uri}"));
    match qop {
        Some((nc, cnonce)) => algorithm.hash(&format!("{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}")),
        None => algorithm.hash(&format!("{ha1}:{nonce}:{ha2}")),
    }
}

/// Answers a trunk's challenge for an outgoing request.
pub fn answer(challenge: &Challenge, username: &str, password: &str, method: &str, uri: &str, cnonce: &str, nc: u32) -> Credentials {
    let h1 = ha1(challenge.algorithm, username, &challenge.realm, password);
    let nc = format!("{nc:08x}");
    let response = if challenge.qop_auth {
        expected_response(challenge.algorithm, &h1, &challenge.nonce, method, uri, Some((&nc, cnonce)))
    } else {
        expected_response(challenge.algorithm, &h1, &challenge.nonce, method, uri, None)
    };
    Credentials {
        username: username.to_owned(),
        realm: challenge.realm.clone(),
        nonce: challenge.nonce.clone(),
        uri: uri.to_owned(),
        response,
        algorithm: challenge.algorithm,
        cnonce: challenge.qop_auth.then(|| cnonce.to_owned()),
        nc: challenge.qop_auth.then_some(nc),
        qop: challenge.qop_auth.then(|| "auth".to_owned()),
        opaque: challenge.opaque.clone(),
    }
}

/// What a nonce turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonceState {
    Fresh,
    /// Authentic but older than the lifetime: challenge again with stale=true.
    Stale,
    /// Not issued by us (or tampered with).
    Forged,
}

/// Issues and checks stateless nonces.
#[derive(Clone)]
pub struct Nonces {
    secret: [u8; 32],
    lifetime_secs: u64,
}

impl std::fmt::Debug for Nonces {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Nonces").field("lifetime_secs", &self.lifetime_secs).finish_non_exhaustive()
    }
}

type HmacSha256 = Hmac<Sha256>;

impl Nonces {
    pub fn new(secret: [u8; 32], lifetime_secs: u64) -> Nonces {
        Nonces { secret, lifetime_secs }
    }

    fn mac(&self, issued: u64, realm: &str) -> [u8; 32] {
        let mut mac = HmacSha256::new_from_slice(&self.secret).expect("HMAC takes any key length");
        mac.update(&issued.to_be_bytes());
        mac.update(realm.as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// A nonce for `realm` issued at `now` (Unix seconds).
    pub fn issue(&self, realm: &str, now: u64) -> String {
        let mut raw = Vec::with_capacity(40);
        raw.extend_from_slice(&now.to_be_bytes());
        raw.extend_from_slice(&self.mac(now, realm));
        URL_SAFE_NO_PAD.encode(raw)
    }

    pub fn check(&self, nonce: &str, realm: &str, now: u64) -> NonceState {
        let Ok(raw) = URL_SAFE_NO_PAD.decode(nonce) else { return NonceState::Forged };
        if raw.len() != 40 {
            return NonceState::Forged;
        }
        let issued = u64::from_be_bytes(raw[..8].try_into().expect("8 bytes"));
        let expected = self.mac(issued, realm);
        let diff = expected.iter().zip(&raw[8..]).fold(0u8, |acc, (a, b)| acc | (a ^ b));
        if diff != 0 || issued > now + 5 {
            return NonceState::Forged;
        }
        if now - issued.min(now) > self.lifetime_secs {
            NonceState::Stale
        } else {
            NonceState::Fresh
        }
    }
}

/// Outcome of checking a request's credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Accepted,
    /// Right password, old nonce: re-challenge with stale=true.
    Stale,
    /// Wrong password, unknown user, forged nonce or malformed: re-challenge
    /// exactly as for a first attempt (no user enumeration).
    Rejected,
}

/// Verifies `creds` for `method` given the stored HA1 of the claimed user
/// (`None` when the user does not exist: the work done is the same).
pub fn verify(creds: &Credentials, method: &str, realm: &str, stored_ha1: Option<&str>, nonces: &Nonces, now: u64) -> Verdict {
    if creds.realm != realm {
        return Verdict::Rejected;
    }
    let nonce_state = nonces.check(&creds.nonce, realm, now);
    let qop = match (&creds.qop, &creds.nc, &creds.cnonce) {
        (Some(q), Some(nc), Some(c)) if q.eq_ignore_ascii_case("auth") => Some((nc.as_str(), c.as_str())),
        (None, _, _) => None,
        _ => return Verdict::Rejected,
    };
    // Compute even for unknown users so timing does not tell them apart.
    let dummy = ha1(creds.algorithm, &creds.username, realm, "\u{0}no-such-user");
    let h1 = stored_ha1.unwrap_or(&dummy);
    let expected = expected_response(creds.algorithm, h1, &creds.nonce, method, &creds.uri, qop);
    let same = expected.len() == creds.response.len()
        && expected.bytes().zip(creds.response.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0;
    match (same && stored_ha1.is_some(), nonce_state) {
        (true, NonceState::Fresh) => Verdict::Accepted,
        (true, NonceState::Stale) => Verdict::Stale,
        _ => Verdict::Rejected,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_2617_md5_example() {
        let h1 = ha1(Algorithm::Md5, "Mufasa", "testrealm@host.com", "Circle Of Life");
        let r = expected_response(Algorithm::Md5, &h1, "dcd98b7102dd2f0e8b11d0f600bfb0c093", "GET", "/dir/index.html", Some(("00000001", "0a4f113b")));
        assert_eq!(r, "6629fae49393a05397450978507c4ef1");
    }

    #[test]
    fn rfc_7616_sha256_example() {
        let h1 = ha1(Algorithm::Sha256, "Mufasa", "http-auth@example.org", "Circle of Life");
        let r = expected_response(
            Algorithm::Sha256,
            &h1,
            "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
            "GET",
            "/dir/index.html",
            Some(("00000001", "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ")),
        );
        assert_eq!(r, "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1");
    }

    #[test]
    fn challenge_answer_verify_round_trip() {
        let nonces = Nonces::new([7; 32], 300);
        for alg in [Algorithm::Md5, Algorithm::Sha256] {
            let c = Challenge { realm: "sb".into(), nonce: nonces.issue("sb", 1000), algorithm: alg, opaque: None, qop_auth: true, stale: false };
            let parsed = Challenge::parse(&c.to_header()).unwrap();
            assert_eq!(parsed, c);
            let creds = answer(&parsed, "ada", "s3cret", "REGISTER", "sip:sb", "abc", 1);
            let back = Credentials::parse(&creds.to_header()).unwrap();
            assert_eq!(back, creds);
            let stored = ha1(alg, "ada", "sb", "s3cret");
            assert_eq!(verify(&back, "REGISTER", "sb", Some(&stored), &nonces, 1010), Verdict::Accepted);
            assert_eq!(verify(&back, "INVITE", "sb", Some(&stored), &nonces, 1010), Verdict::Rejected, "method is covered");
            assert_eq!(verify(&back, "REGISTER", "sb", Some(&stored), &nonces, 1400), Verdict::Stale);
            let wrong = ha1(alg, "ada", "sb", "guess");
            assert_eq!(verify(&back, "REGISTER", "sb", Some(&wrong), &nonces, 1010), Verdict::Rejected);
            assert_eq!(verify(&back, "REGISTER", "sb", None, &nonces, 1010), Verdict::Rejected);
        }
    }

    #[test]
    fn forged_and_malformed_nonces() {
        let nonces = Nonces::new([1; 32], 300);
        let good = nonces.issue("sb", 50);
        assert_eq!(nonces.check(&good, "sb", 60), NonceState::Fresh);
        assert_eq!(nonces.check(&good, "other", 60), NonceState::Forged);
        assert_eq!(Nonces::new([2; 32], 300).check(&good, "sb", 60), NonceState::Forged);
        assert_eq!(nonces.check("!!!", "sb", 60), NonceState::Forged);
        assert_eq!(nonces.check(&nonces.issue("sb", 10_000), "sb", 60), NonceState::Forged, "issued in the future");
    }

    #[test]
    fn parses_quoting_and_rejects_garbage() {
        let p = parse_params(r#"Digest realm="a, \"b\"", nonce=xyz ,qop="auth,auth-int""#).unwrap();
        assert_eq!(get(&p, "realm"), Some(r#"a, "b""#));
        assert_eq!(get(&p, "nonce"), Some("xyz"));
        assert!(Challenge::parse(r#"Digest realm="r", nonce="n", qop="auth,auth-int""#).unwrap().qop_auth);
        assert!(parse_params("Basic abc").is_none());
        assert!(parse_params(r#"Digest realm="unterminated"#).is_none());
        assert!(Credentials::parse(r#"Digest username="u""#).is_none());
        assert!(Challenge::parse(r#"Digest realm="r", nonce="n", algorithm=SHA-512-256"#).is_none());
    }
}
