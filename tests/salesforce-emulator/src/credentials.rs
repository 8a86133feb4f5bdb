//! Throwaway connected-app credentials for tests and local runs.
//!
//! The JWT bearer flow needs an RSA key pair: the client signs assertions with
//! the private key, the org verifies them with a certificate holding the public
//! key. Tests make a fresh pair in memory instead of committing keys; the
//! binary writes one to disk for docker-compose and manual runs.

use std::time::Duration;

use chrono::Utc;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rcgen::{
    CertificateParams, DistinguishedName, DnType, PublicKeyData, SerialNumber, SignatureAlgorithm,
    SigningKey,
};
use rsa::pkcs1::EncodeRsaPublicKey;
use rsa::pkcs1v15;
use rsa::pkcs8::{EncodePrivateKey, LineEnding};
use rsa::rand_core::OsRng;
use rsa::sha2::Sha256;
use rsa::signature::{SignatureEncoding, Signer};
use rsa::RsaPrivateKey;
use serde::{Deserialize, Serialize};

use crate::oauth::JWT_BEARER_GRANT;

/// Why credentials could not be made or used.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    /// Generating the RSA key failed (no system randomness?).
    #[error("generating an RSA key failed: {0}")]
    Key(String),
    /// Building the self-signed certificate failed.
    #[error("building the self-signed certificate failed: {0}")]
    Certificate(#[from] rcgen::Error),
    /// Signing a JWT failed, e.g. because the private key PEM is not RSA.
    #[error("signing the JWT assertion failed: {0}")]
    Sign(#[from] jsonwebtoken::errors::Error),
}

/// An RSA private key and a self-signed certificate for its public key, both
/// PEM: the pair a Salesforce admin makes before uploading the certificate to
/// a connected app.
#[derive(Clone, Debug)]
pub struct TestCredentials {
    /// PKCS#8 PEM private key (`-----BEGIN PRIVATE KEY-----`).
    pub private_key_pem: String,
    /// PEM X.509 certificate to give the emulator (`EmulatorConfig::new`).
    pub certificate_pem: String,
}

/// The claims of a JWT bearer assertion.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AssertionClaims {
    /// Consumer key of the connected app.
    pub iss: String,
    /// Username of the user to act as.
    pub sub: String,
    /// Login host, e.g. `https://login.salesforce.com` or the emulator's URL.
    pub aud: String,
    /// Expiry, seconds since the epoch; Salesforce wants it within 3 minutes.
    pub exp: i64,
}

impl AssertionClaims {
    /// Claims expiring `valid_for` from now.
    pub fn new(
        iss: impl Into<String>,
        sub: impl Into<String>,
        aud: impl Into<String>,
        valid_for: Duration,
    ) -> Self {
        let seconds = i64::try_from(valid_for.as_secs()).unwrap_or(i64::MAX / 2);
        AssertionClaims {
            iss: iss.into(),
            sub: sub.into(),
            aud: aud.into(),
            exp: Utc::now().timestamp() + seconds,
        }
    }
}

/// The rsa crate's key in the shape rcgen signs certificates with.
struct RsaSigner {
    key: pkcs1v15::SigningKey<Sha256>,
    public_der: Vec<u8>,
}

impl PublicKeyData for RsaSigner {
    fn der_bytes(&self) -> &[u8] {
        &self.public_der
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        &rcgen::PKCS_RSA_SHA256
    }
}

impl SigningKey for RsaSigner {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        self.key
            .try_sign(msg)
            .map(|s| s.to_vec())
            .map_err(|_| rcgen::Error::RemoteKeyError)
    }
}

impl TestCredentials {
    /// Makes a 2048-bit RSA key and a self-signed certificate for it
    /// (common name `switchboard-salesforce-emulator`).
    pub fn generate() -> Result<TestCredentials, CredentialsError> {
        let private = RsaPrivateKey::new(&mut OsRng, 2048)
            .map_err(|e| CredentialsError::Key(e.to_string()))?;
        let private_key_pem = private
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(|e| CredentialsError::Key(e.to_string()))?
            .to_string();
        let public_der = private
            .to_public_key()
            .to_pkcs1_der()
            .map_err(|e| CredentialsError::Key(e.to_string()))?
            .as_bytes()
            .to_vec();
        let signer = RsaSigner {
            key: pkcs1v15::SigningKey::<Sha256>::new(private),
            public_der,
        };
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, "switchboard-salesforce-emulator");
        params.distinguished_name = name;
        // A positive serial of up to 63 random bits, unique enough for tests.
        params.serial_number = Some(SerialNumber::from(rand::random::<u64>() >> 1 | 1));
        let certificate_pem = params.self_signed(&signer)?.pem();
        Ok(TestCredentials {
            private_key_pem,
            certificate_pem,
        })
    }

    /// Signs claims as an RS256 JWT assertion with the private key.
    pub fn sign_assertion(&self, claims: &AssertionClaims) -> Result<String, CredentialsError> {
        sign_assertion(&self.private_key_pem, claims)
    }
}

/// Signs claims as an RS256 JWT assertion with a PEM RSA private key.
pub fn sign_assertion(
    private_key_pem: &str,
    claims: &AssertionClaims,
) -> Result<String, CredentialsError> {
    let key = EncodingKey::from_rsa_pem(private_key_pem.as_bytes())?;
    Ok(jsonwebtoken::encode(
        &Header::new(Algorithm::RS256),
        claims,
        &key,
    )?)
}

/// The form body of a JWT bearer token request for `assertion`.
pub fn token_request_form(assertion: &str) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .append_pair("grant_type", JWT_BEARER_GRANT)
        .append_pair("assertion", assertion)
        .finish()
}
