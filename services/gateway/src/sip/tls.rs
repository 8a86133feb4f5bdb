//! TLS material of SIP over TLS (RFC 3261 §26, RFC 5630): the listener's
//! certificate and key, the CAs inbound clients must be issued by (mutual
//! TLS), the roots outgoing connections trust and the identity they
//! present. Read from the PEM files of `[sip.tls_config]` into rustls
//! configurations; every problem is a [`ConfigError`] naming the key.
//!
//! The crypto provider is rustls' `ring` provider, named explicitly so the
//! choice never depends on which providers other crates enable.

use std::path::Path;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tracing::warn;

use crate::config::{ConfigError, SipConfig};

/// The TLS side of the SIP transports: an acceptor when the TLS listener is
/// configured, and always a connector for outgoing TLS connections.
#[derive(Clone)]
pub struct TlsSettings {
    pub acceptor: Option<TlsAcceptor>,
    pub connector: TlsConnector,
}

impl std::fmt::Debug for TlsSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsSettings").field("listener", &self.acceptor.is_some()).finish_non_exhaustive()
    }
}

impl TlsSettings {
    /// Reads every configured PEM file and builds the rustls configurations.
    /// Without `tls_config.ca`, outgoing connections trust the operating
    /// system's roots.
    pub fn from_config(sip: &SipConfig) -> Result<TlsSettings, ConfigError> {
        build(sip, true)
    }

    /// Like [`TlsSettings::from_config`] but without reading the system's
    /// roots: checks the configured files only (configuration validation).
    pub fn check(sip: &SipConfig) -> Result<(), ConfigError> {
        build(sip, false).map(|_| ())
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn build(sip: &SipConfig, system_roots: bool) -> Result<TlsSettings, ConfigError> {
    let c = &sip.tls_config;
    let acceptor = match sip.tls {
        Some(_) => Some(TlsAcceptor::from(Arc::new(server_config(sip)?))),
        None => {
            let set = [("cert", &c.cert), ("key", &c.key), ("client_ca", &c.client_ca)];
            if let Some((leaf, _)) = set.iter().find(|(_, v)| v.is_some()) {
                return Err(ConfigError::new(
                    "sip.tls",
                    format!("a TLS listen address such as 0.0.0.0:5061: sip.tls_config.{leaf} is set but there is no TLS listener; set sip.tls or remove sip.tls_config.{leaf}"),
                ));
            }
            None
        }
    };
    let connector = TlsConnector::from(Arc::new(client_config(sip, system_roots)?));
    Ok(TlsSettings { acceptor, connector })
}

fn server_config(sip: &SipConfig) -> Result<ServerConfig, ConfigError> {
    let c = &sip.tls_config;
    const CERT: &str = "the PEM certificate chain (leaf first) of the TLS listener";
    const KEY: &str = "the PEM private key of sip.tls_config.cert";
    let cert_path = c.cert.as_deref().ok_or_else(|| ConfigError::new("sip.tls_config.cert", format!("{CERT} (sip.tls is set)")))?;
    let key_path = c.key.as_deref().ok_or_else(|| ConfigError::new("sip.tls_config.key", format!("{KEY} (sip.tls is set)")))?;
    let chain = certificates("sip.tls_config.cert", cert_path, CERT)?;
    let key = private_key("sip.tls_config.key", key_path, KEY)?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| ConfigError::new("sip.tls", format!("TLS is unavailable: {e}")))?;
    let builder = match &c.client_ca {
        Some(path) => {
            const CA: &str = "the PEM bundle of the CAs whose client certificates the TLS listener accepts";
            let roots = roots("sip.tls_config.client_ca", path, CA)?;
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .map_err(|e| ConfigError::new("sip.tls_config.client_ca", format!("{}: {e}; set it to {CA}", path.display())))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    builder.with_single_cert(chain, key).map_err(|e| {
        ConfigError::new(
            "sip.tls_config.key",
            format!("{} cannot be used with the certificate in {}: {e}; set it to the private key of that certificate", key_path.display(), cert_path.display()),
        )
    })
}

fn client_config(sip: &SipConfig, system_roots: bool) -> Result<ClientConfig, ConfigError> {
    let c = &sip.tls_config;
    let trusted = match &c.ca {
        Some(path) => roots("sip.tls_config.ca", path, "the PEM bundle of the CAs trusted for outgoing TLS connections (e.g. the trunk's CA)")?,
        None if system_roots => native_roots(),
        None => RootCertStore::empty(),
    };
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| ConfigError::new("sip.tls", format!("TLS is unavailable: {e}")))?;
    // An empty store (validation, or a system without roots) is accepted:
    // every server then fails verification, which is logged per connection.
    let builder = builder.with_root_certificates(trusted);
    const CERT: &str = "the PEM certificate chain the gateway presents to TLS servers that ask for one (mutual TLS)";
    const KEY: &str = "the PEM private key of sip.tls_config.client_cert";
    match (&c.client_cert, &c.client_key) {
        (None, None) => Ok(builder.with_no_client_auth()),
        (Some(_), None) => Err(ConfigError::new("sip.tls_config.client_key", format!("{KEY} (sip.tls_config.client_cert is set)"))),
        (None, Some(_)) => Err(ConfigError::new("sip.tls_config.client_cert", format!("{CERT} (sip.tls_config.client_key is set)"))),
        (Some(cert_path), Some(key_path)) => {
            let chain = certificates("sip.tls_config.client_cert", cert_path, CERT)?;
            let key = private_key("sip.tls_config.client_key", key_path, KEY)?;
            builder.with_client_auth_cert(chain, key).map_err(|e| {
                ConfigError::new(
                    "sip.tls_config.client_key",
                    format!(
                        "{} cannot be used with the certificate in {}: {e}; set it to the private key of that certificate",
                        key_path.display(),
                        cert_path.display()
                    ),
                )
            })
        }
    }
}

/// The operating system's trusted roots (rustls-native-certs). Problems
/// are logged, not fatal: outgoing TLS then fails verification, which is
/// logged per connection.
fn native_roots() -> RootCertStore {
    let found = rustls_native_certs::load_native_certs();
    for e in &found.errors {
        warn!(error = %e, "reading the system's trusted CA certificates");
    }
    let mut store = RootCertStore::empty();
    let (added, ignored) = store.add_parsable_certificates(found.certs);
    if ignored > 0 {
        warn!(ignored, "some system CA certificates cannot be used and are ignored");
    }
    if added == 0 {
        warn!("no trusted CA certificates found on this system: outgoing SIP over TLS will fail; set sip.tls_config.ca");
    }
    store
}

fn read_error(path: &Path, e: rustls_pki_types::pem::Error, what: &str) -> String {
    match e {
        rustls_pki_types::pem::Error::Io(io) => format!("cannot read {}: {io}; set it to {what}", path.display()),
        rustls_pki_types::pem::Error::NoItemsFound => format!("{} holds no PEM item of the expected kind; set it to {what}", path.display()),
        other => format!("{} is not valid PEM ({other}); set it to {what}", path.display()),
    }
}

fn certificates(key: &str, path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| ConfigError::new(key, read_error(path, e, what)))?;
    if certs.is_empty() {
        return Err(ConfigError::new(key, format!("{} holds no PEM certificate; set it to {what}", path.display())));
    }
    Ok(certs)
}

fn private_key(key: &str, path: &Path, what: &str) -> Result<PrivateKeyDer<'static>, ConfigError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| ConfigError::new(key, read_error(path, e, what)))
}

fn roots(key: &str, path: &Path, what: &str) -> Result<RootCertStore, ConfigError> {
    let mut store = RootCertStore::empty();
    for cert in certificates(key, path, what)? {
        store
            .add(cert)
            .map_err(|e| ConfigError::new(key, format!("{} holds a certificate that cannot be a trust anchor ({e}); set it to {what}", path.display())))?;
    }
    Ok(store)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    use std::path::PathBuf;

    /// A CA, a certificate it issued for 127.0.0.1, that certificate's key
    /// and an unrelated key, as PEM files in `dir`.
    struct Files {
        ca: PathBuf,
        cert: PathBuf,
        key: PathBuf,
        other_key: PathBuf,
    }

    fn files(dir: &Path) -> Files {
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap().signed_by(&key, &*ca).unwrap();
        let f = Files { ca: dir.join("ca.pem"), cert: dir.join("cert.pem"), key: dir.join("key.pem"), other_key: dir.join("other.pem") };
        std::fs::write(&f.ca, ca.pem()).unwrap();
        std::fs::write(&f.cert, cert.pem()).unwrap();
        std::fs::write(&f.key, key.serialize_pem()).unwrap();
        std::fs::write(&f.other_key, KeyPair::generate().unwrap().serialize_pem()).unwrap();
        f
    }

    fn listener(f: &Files) -> SipConfig {
        let mut sip = SipConfig { tls: Some("127.0.0.1:0".parse().unwrap()), ..SipConfig::default() };
        sip.tls_config.cert = Some(f.cert.clone());
        sip.tls_config.key = Some(f.key.clone());
        sip
    }

    #[test]
    fn a_complete_configuration_builds_both_directions() {
        let dir = tempfile::tempdir().unwrap();
        let f = files(dir.path());
        let mut sip = listener(&f);
        sip.tls_config.client_ca = Some(f.ca.clone());
        sip.tls_config.ca = Some(f.ca.clone());
        sip.tls_config.client_cert = Some(f.cert.clone());
        sip.tls_config.client_key = Some(f.key.clone());
        let tls = TlsSettings::from_config(&sip).unwrap();
        assert!(tls.acceptor.is_some());
        // Without a listener there is only the connector.
        assert!(TlsSettings::from_config(&SipConfig::default()).unwrap().acceptor.is_none());
    }

    #[test]
    fn an_unreadable_certificate_names_the_key_the_file_and_what_to_set() {
        let dir = tempfile::tempdir().unwrap();
        let f = files(dir.path());
        let mut sip = listener(&f);
        sip.tls_config.cert = Some(PathBuf::from("/nonexistent/x.pem"));
        let e = TlsSettings::check(&sip).unwrap_err();
        assert_eq!(e.key, "sip.tls_config.cert");
        assert!(e.expected.starts_with("cannot read /nonexistent/x.pem: No such file"), "{}", e.expected);
        assert!(e.expected.ends_with("set it to the PEM certificate chain (leaf first) of the TLS listener"), "{}", e.expected);
    }

    #[test]
    fn the_listener_needs_a_certificate_and_its_key() {
        let dir = tempfile::tempdir().unwrap();
        let f = files(dir.path());
        let mut sip = listener(&f);
        sip.tls_config.cert = None;
        assert_eq!(TlsSettings::check(&sip).unwrap_err().key, "sip.tls_config.cert");
        let mut sip = listener(&f);
        sip.tls_config.key = Some(f.other_key.clone());
        let e = TlsSettings::check(&sip).unwrap_err();
        assert_eq!(e.key, "sip.tls_config.key");
        assert!(e.expected.contains("set it to the private key of that certificate"), "{}", e.expected);
        // A key where the certificate belongs: no certificate in it.
        let mut sip = listener(&f);
        sip.tls_config.cert = Some(f.key.clone());
        let e = TlsSettings::check(&sip).unwrap_err();
        assert_eq!(e.key, "sip.tls_config.cert");
        assert!(e.expected.contains("holds no PEM"), "{}", e.expected);
    }

    #[test]
    fn listener_files_without_a_listener_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let f = files(dir.path());
        let mut sip = listener(&f);
        sip.tls = None;
        let e = TlsSettings::check(&sip).unwrap_err();
        assert_eq!(e.key, "sip.tls");
        assert!(e.expected.contains("sip.tls_config.cert is set but there is no TLS listener"), "{}", e.expected);
    }

    #[test]
    fn a_client_identity_needs_both_certificate_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let f = files(dir.path());
        let mut sip = SipConfig::default();
        sip.tls_config.client_cert = Some(f.cert.clone());
        assert_eq!(TlsSettings::check(&sip).unwrap_err().key, "sip.tls_config.client_key");
        sip.tls_config.client_cert = None;
        sip.tls_config.client_key = Some(f.key.clone());
        assert_eq!(TlsSettings::check(&sip).unwrap_err().key, "sip.tls_config.client_cert");
        sip.tls_config.client_cert = Some(f.cert.clone());
        sip.tls_config.ca = Some(f.key.clone());
        assert_eq!(TlsSettings::check(&sip).unwrap_err().key, "sip.tls_config.ca", "a key file is no CA bundle");
        sip.tls_config.ca = Some(f.ca.clone());
        TlsSettings::check(&sip).unwrap();
    }
}
