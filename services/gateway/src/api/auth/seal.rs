//! Authenticated encryption of secrets the gateway keeps: agents' Salesforce
//! tokens at rest, and the sign-in state that travels through the browser.
//!
//! AES-256-GCM with a random 96-bit nonce per message. A sealed value is
//! text: `v1.` then base64url (no padding) of nonce ‖ ciphertext ‖ tag. The
//! key is 32 bytes, configured as base64 (`auth.token_key`) or read from a
//! file (`auth.token_key_file`); `switchboard up` makes one in its data
//! directory. Associated data binds a value to its purpose, so a sealed
//! token cannot be replayed as a sign-in state or the other way round.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

const PREFIX: &str = "v1.";
const NONCE: usize = 12;

/// Why a sealed value could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error("not a sealed value (expected v1.<base64url>)")]
    Format,
    #[error("the value was sealed with another key or for another purpose, or was changed")]
    Forged,
}

/// Seals and opens with one key.
#[derive(Clone)]
pub struct Sealer {
    cipher: Aes256Gcm,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(..)")
    }
}

impl Sealer {
    pub fn new(key: &[u8; 32]) -> Sealer {
        Sealer { cipher: Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(key)) }
    }

    /// Reads a key given as base64 (standard or URL-safe, padded or not).
    pub fn from_base64(text: &str) -> Result<Sealer, String> {
        let text = text.trim();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text)
            .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(text))
            .or_else(|_| URL_SAFE_NO_PAD.decode(text.trim_end_matches('=')))
            .map_err(|_| "not base64".to_owned())?;
        let key: [u8; 32] = bytes.try_into().map_err(|b: Vec<u8>| format!("{} bytes; the key must be 32 bytes (openssl rand -base64 32)", b.len()))?;
        Ok(Sealer::new(&key))
    }

    /// A new random key, base64.
    pub fn generate_key() -> String {
        base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 32]>())
    }

    /// Encrypts `plain` for `purpose`.
    pub fn seal(&self, purpose: &str, plain: &[u8]) -> String {
        let nonce: [u8; NONCE] = rand::random();
        let sealed = self
            .cipher
            .encrypt(Nonce::from_slice(&nonce), Payload { msg: plain, aad: purpose.as_bytes() })
            .expect("AES-GCM encryption of an in-memory buffer does not fail");
        let mut out = Vec::with_capacity(NONCE + sealed.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(out))
    }

    /// Decrypts what [`Sealer::seal`] made for the same `purpose`.
    pub fn open(&self, purpose: &str, sealed: &str) -> Result<Vec<u8>, SealError> {
        let body = sealed.strip_prefix(PREFIX).ok_or(SealError::Format)?;
        let bytes = URL_SAFE_NO_PAD.decode(body).map_err(|_| SealError::Format)?;
        if bytes.len() < NONCE + 16 {
            return Err(SealError::Format);
        }
        let (nonce, ciphertext) = bytes.split_at(NONCE);
        self.cipher
            .decrypt(Nonce::from_slice(nonce), Payload { msg: ciphertext, aad: purpose.as_bytes() })
            .map_err(|_| SealError::Forged)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_with_the_same_key_and_purpose() {
        let s = Sealer::new(&[7; 32]);
        let sealed = s.seal("sf-tokens", b"00D...!secret");
        assert!(sealed.starts_with("v1."));
        assert!(!sealed.contains("secret"));
        assert_eq!(s.open("sf-tokens", &sealed).unwrap(), b"00D...!secret");
        assert_ne!(s.seal("sf-tokens", b"x"), s.seal("sf-tokens", b"x"), "a fresh nonce each time");
        assert_eq!(s.open("login-state", &sealed), Err(SealError::Forged));
        assert_eq!(Sealer::new(&[8; 32]).open("sf-tokens", &sealed), Err(SealError::Forged));
        // Every single-character change is detected, never accepted or panicking.
        for i in 3..sealed.len() {
            let mut tampered = sealed.clone().into_bytes();
            tampered[i] = if tampered[i] == b'A' { b'B' } else { b'A' };
            let tampered = String::from_utf8(tampered).unwrap();
            assert!(s.open("sf-tokens", &tampered).is_err(), "byte {i}");
        }
        assert_eq!(s.open("sf-tokens", "v1."), Err(SealError::Format));
        assert_eq!(s.open("sf-tokens", "plain"), Err(SealError::Format));
    }

    #[test]
    fn keys_are_read_from_base64_and_must_be_32_bytes() {
        let key = Sealer::generate_key();
        assert!(Sealer::from_base64(&key).is_ok());
        assert!(Sealer::from_base64("c2hvcnQ=").unwrap_err().contains("32 bytes"));
        assert!(Sealer::from_base64("not base64 at all!").is_err());
    }
}
