//! Proof Key for Code Exchange (RFC 7636), as the web-server flow checks it.
//!
//! The client makes a random `code_verifier`, sends its hash as
//! `code_challenge` with the authorization request, and the verifier itself
//! with the code exchange; the org answers a token only if the verifier
//! hashes to the challenge the code was issued for. Salesforce documents the
//! `S256` method; `plain` (and an absent method, which RFC 7636 makes
//! `plain`) is accepted as the RFC allows it.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use sha2::{Digest, Sha256};

/// A code challenge of an authorization request, kept with its code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Challenge {
    pub method: Method,
    pub value: String,
}

/// How the challenge is derived from the verifier.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Method {
    /// `BASE64URL(SHA256(verifier))` without padding.
    S256,
    /// The verifier itself.
    Plain,
}

impl Method {
    /// Parses `code_challenge_method`; absent means `plain` (RFC 7636 4.3).
    pub(crate) fn parse(method: Option<&str>) -> Option<Method> {
        match method {
            Some("S256") => Some(Method::S256),
            Some("plain") | None => Some(Method::Plain),
            Some(_) => None,
        }
    }
}

/// Whether `text` has the syntax of a verifier or challenge: 43 to 128
/// characters of `A-Z a-z 0-9 - . _ ~` (RFC 7636 4.1).
pub(crate) fn well_formed(text: &str) -> bool {
    (43..=128).contains(&text.len())
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

/// The `S256` challenge of a verifier.
pub(crate) fn s256(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

impl Challenge {
    /// Whether `verifier` proves possession: well formed and deriving the
    /// challenge.
    pub(crate) fn verify(&self, verifier: &str) -> bool {
        if !well_formed(verifier) {
            return false;
        }
        let derived = match self.method {
            Method::S256 => s256(verifier),
            Method::Plain => verifier.to_owned(),
        };
        constant_time_eq(derived.as_bytes(), self.value.as_bytes())
    }
}

/// Compares without stopping at the first difference.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7636 Appendix B.
    const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

    #[test]
    fn s256_matches_rfc_7636_appendix_b() {
        assert_eq!(s256(VERIFIER), CHALLENGE);
        let challenge = Challenge {
            method: Method::S256,
            value: CHALLENGE.to_owned(),
        };
        assert!(challenge.verify(VERIFIER));
        let mut wrong = VERIFIER.to_owned();
        wrong.replace_range(0..1, "e");
        assert!(!challenge.verify(&wrong));
        // The challenge itself is no verifier of itself under S256.
        assert!(!challenge.verify(CHALLENGE));
    }

    #[test]
    fn plain_compares_the_verifier_itself() {
        let challenge = Challenge {
            method: Method::Plain,
            value: VERIFIER.to_owned(),
        };
        assert!(challenge.verify(VERIFIER));
        assert!(!challenge.verify(CHALLENGE));
    }

    #[test]
    fn verifiers_outside_the_rfc_syntax_never_verify() {
        let short = "a".repeat(42);
        let challenge = Challenge {
            method: Method::Plain,
            value: short.clone(),
        };
        assert!(!challenge.verify(&short));
        assert!(!well_formed(&"a".repeat(129)));
        assert!(well_formed(&"a".repeat(128)));
        assert!(!well_formed(&format!("{}+", "a".repeat(42))));
        assert!(well_formed(&format!("{}~._-", "a".repeat(39))));
    }

    #[test]
    fn methods_parse_as_rfc_7636_names_them() {
        assert_eq!(Method::parse(Some("S256")), Some(Method::S256));
        assert_eq!(Method::parse(Some("plain")), Some(Method::Plain));
        assert_eq!(Method::parse(None), Some(Method::Plain));
        assert_eq!(Method::parse(Some("s256")), None);
        assert_eq!(Method::parse(Some("RS256")), None);
    }
}
