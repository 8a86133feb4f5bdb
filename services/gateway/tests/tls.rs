//! SIP over TLS (RFC 3261 §26, RFC 5630) over real sockets: a CA, server
//! and client certificates made at test time with rcgen; rustls clients and
//! servers on the test's side.
//!
//! Debian's SIPp is built without OpenSSL (`sipp -t l1` answers "To use a
//! TLS transport you must compile SIPp with OpenSSL"), so these tests speak
//! SIP themselves.

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use switchboard_gateway::config::GatewayConfig;
use switchboard_gateway::directory::{Directory, NewDevice, NewUser};
use switchboard_gateway::registrations::Registrations;
use switchboard_gateway::sip::digest::{answer, Challenge};
use switchboard_gateway::sip::message::{frame_length, Frame};
use switchboard_gateway::sip::response::make_response;
use switchboard_gateway::sip::tls::TlsSettings;
use switchboard_gateway::sip::transport::{Inbound, Listen};
use switchboard_gateway::sip::{Destination, SipMessage, Transport};
use switchboard_gateway::{Gateway, RunningGateway};
use switchboard_store::Database;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;
use tokio_rustls::{TlsAcceptor, TlsConnector};
use support::wait_for_metric;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(10);

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A certificate chain file and its key file.
struct Identity {
    cert: PathBuf,
    key: PathBuf,
}

impl Identity {
    fn chain(&self) -> Vec<CertificateDer<'static>> {
        CertificateDer::pem_file_iter(&self.cert).unwrap().map(Result::unwrap).collect()
    }

    fn private_key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::from_pem_file(&self.key).unwrap()
    }
}

/// The test PKI: a CA, a server certificate for `localhost` and 127.0.0.1
/// and a client certificate it issued, and a self-signed stranger.
struct Pki {
    ca: PathBuf,
    server: Identity,
    client: Identity,
    stranger: Identity,
}

fn pki(dir: &Path) -> Pki {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, "Switchboard test CA");
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
    let ca_path = dir.join("ca.pem");
    std::fs::write(&ca_path, ca.pem()).unwrap();
    let issue = |name: &str, sans: &[&str], usage: ExtendedKeyUsagePurpose, issuer: Option<&Issuer<'_, KeyPair>>| {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![usage];
        let cert = match issuer {
            Some(issuer) => params.signed_by(&key, issuer).unwrap(),
            None => params.self_signed(&key).unwrap(),
        };
        let id = Identity { cert: dir.join(format!("{name}.pem")), key: dir.join(format!("{name}.key")) };
        std::fs::write(&id.cert, cert.pem()).unwrap();
        std::fs::write(&id.key, key.serialize_pem()).unwrap();
        id
    };
    Pki {
        server: issue("server", &["localhost", "127.0.0.1"], ExtendedKeyUsagePurpose::ServerAuth, Some(&*ca)),
        client: issue("client", &["client.switchboard.test"], ExtendedKeyUsagePurpose::ClientAuth, Some(&*ca)),
        stranger: issue("stranger", &["localhost", "127.0.0.1"], ExtendedKeyUsagePurpose::Any, None),
        ca: ca_path,
    }
}

fn roots(pki: &Pki) -> RootCertStore {
    let mut roots = RootCertStore::empty();
    roots.add(CertificateDer::from_pem_file(&pki.ca).unwrap()).unwrap();
    roots
}

/// A rustls client trusting the test CA, presenting `identity` if given.
fn client(pki: &Pki, identity: Option<&Identity>) -> TlsConnector {
    let builder = ClientConfig::builder_with_provider(provider()).with_safe_default_protocol_versions().unwrap().with_root_certificates(roots(pki));
    let config = match identity {
        Some(id) => builder.with_client_auth_cert(id.chain(), id.private_key()).unwrap(),
        None => builder.with_no_client_auth(),
    };
    TlsConnector::from(Arc::new(config))
}

/// A rustls server presenting `identity`; with `require_client` it demands a
/// client certificate issued by the test CA.
fn server(pki: &Pki, identity: &Identity, require_client: bool) -> TlsAcceptor {
    let builder = ServerConfig::builder_with_provider(provider()).with_safe_default_protocol_versions().unwrap();
    let builder = if require_client {
        builder.with_client_cert_verifier(WebPkiClientVerifier::builder_with_provider(Arc::new(roots(pki)), provider()).build().unwrap())
    } else {
        builder.with_no_client_auth()
    };
    TlsAcceptor::from(Arc::new(builder.with_single_cert(identity.chain(), identity.private_key()).unwrap()))
}

/// The gateway's TLS listener with the test server certificate.
fn listener(config: &mut GatewayConfig, pki: &Pki) {
    config.sip.tls = Some("127.0.0.1:0".parse().unwrap());
    config.sip.tls_config.cert = Some(pki.server.cert.clone());
    config.sip.tls_config.key = Some(pki.server.key.clone());
}

async fn start(dir: &Path, tune: impl FnOnce(&mut GatewayConfig)) -> (Database, RunningGateway, CancellationToken) {
    let db = Database::connect(&format!("sqlite://{}", dir.join("sb.db").display())).await.unwrap();
    db.migrate().await.unwrap();
    let mut config = GatewayConfig::default();
    // The devices' own answers (486 Busy) must reach the caller: no voicemail.
    config.voicemail.enabled = false;
    // The test's sockets on 127.0.0.1 play the carrier.
    config.sip.trunks = vec![switchboard_gateway::config::TrunkConfig {
        name: "test-carrier".into(),
        inbound_from: vec!["127.0.0.1/32".into()],
        ..Default::default()
    }];
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    config.sip.udp = Some(any);
    config.sip.tcp = None;
    config.http.listen = any;
    let base = switchboard_test_support::ports::gateway_media_range(8);
    config.media.port_min = base;
    config.media.port_max = base + 7;
    tune(&mut config);
    let shutdown = CancellationToken::new();
    let gw = Gateway::start(config, dir.to_owned(), db.clone(), shutdown.clone()).await.unwrap();
    (db, gw, shutdown)
}

/// What a stream connection yields next.
#[derive(Debug)]
enum Got {
    KeepAlive(Vec<u8>),
    Message(SipMessage),
    /// The peer closed the connection (or it failed: TLS alert, reset).
    Closed,
}

/// A SIP stream (plain or TLS) framed by Content-Length on the test side.
struct Conn<S> {
    stream: S,
    buf: Vec<u8>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Conn<S> {
    fn new(stream: S) -> Self {
        Conn { stream, buf: Vec::new() }
    }

    /// Writes `bytes` as one TLS record (one write, then flush).
    async fn send(&mut self, bytes: impl AsRef<[u8]>) -> std::io::Result<()> {
        self.stream.write_all(bytes.as_ref()).await?;
        self.stream.flush().await
    }

    async fn next(&mut self) -> Got {
        loop {
            match frame_length(&self.buf, 65_535) {
                Frame::KeepAlive(k) => return Got::KeepAlive(self.buf.drain(..k).collect()),
                Frame::Message(n) => {
                    let frame: Vec<u8> = self.buf.drain(..n).collect();
                    return Got::Message(SipMessage::parse(&frame, 65_535).unwrap());
                }
                Frame::Incomplete => {}
                Frame::Invalid(e) => panic!("the gateway sent bytes that cannot be framed: {e}"),
            }
            let mut chunk = [0u8; 16_384];
            match tokio::time::timeout(WAIT, self.stream.read(&mut chunk)).await.expect("the peer neither sent nor closed within 10 s") {
                Ok(0) | Err(_) => return Got::Closed,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// The next SIP message, skipping `100 Trying`.
    async fn message(&mut self) -> SipMessage {
        loop {
            match self.next().await {
                Got::Message(m) if m.status() == Some(100) => continue,
                Got::Message(m) => return m,
                other => panic!("expected a SIP message, got {other:?}"),
            }
        }
    }
}

async fn connect(addr: SocketAddr, connector: &TlsConnector) -> std::io::Result<Conn<tokio_rustls::client::TlsStream<TcpStream>>> {
    let tcp = TcpStream::connect(addr).await?;
    Ok(Conn::new(connector.connect(ServerName::try_from("localhost").unwrap(), tcp).await?))
}

fn local_addr(conn: &Conn<tokio_rustls::client::TlsStream<TcpStream>>) -> SocketAddr {
    conn.stream.get_ref().0.local_addr().unwrap()
}

fn options(me: SocketAddr, call_id: &str) -> String {
    format!(
        "OPTIONS sip:ping@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TLS {me};branch=z9hG4bK{call_id}\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:ping@c>\r\nCall-ID: {call_id}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_over_tls_are_framed_and_answered_on_the_same_connection() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    let (_db, gw, shutdown) = start(dir.path(), |c| listener(c, &pki)).await;

    // Plain SIP on the TLS port is a failed handshake: closed and counted.
    let mut plain = Conn::new(TcpStream::connect(gw.sip_tls.unwrap()).await.unwrap());
    let me = plain.stream.local_addr().unwrap();
    plain.send(options(me, "plain")).await.unwrap();
    assert!(matches!(plain.next().await, Got::Closed), "plain text on the TLS port is not served");
    wait_for_metric(gw.http, "switchboard_sip_tls_handshake_failures_total{direction=\"inbound\"} 1").await;

    let mut conn = connect(gw.sip_tls.unwrap(), &client(&pki, None)).await.unwrap();
    let me = local_addr(&conn);

    conn.send(options(me, "tls-1")).await.unwrap();
    let ok = conn.message().await;
    assert_eq!(ok.status(), Some(200));
    assert_eq!(ok.header("Call-ID"), Some("tls-1"));

    // Two requests in one TLS record.
    conn.send([options(me, "tls-2"), options(me, "tls-3")].concat()).await.unwrap();
    assert_eq!(conn.message().await.header("Call-ID"), Some("tls-2"));
    assert_eq!(conn.message().await.header("Call-ID"), Some("tls-3"));

    // One request in three records, cut inside the blank line that ends the
    // header and inside the body.
    let body = "hello, split";
    let split = format!(
        "OPTIONS sip:ping@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TLS {me};branch=z9hG4bKs\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:ping@c>\r\nCall-ID: tls-4\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let head_end = split.find("\r\n\r\n").unwrap();
    for part in [&split[..head_end + 2], &split[head_end + 2..head_end + 8], &split[head_end + 8..]] {
        conn.send(part).await.unwrap();
    }
    let ok = conn.message().await;
    assert_eq!((ok.status(), ok.header("Call-ID")), (Some(200), Some("tls-4")));

    // CRLFCRLF ping, CRLF pong (RFC 5626 §3.5.1); the connection goes on.
    conn.send(b"\r\n\r\n").await.unwrap();
    match conn.next().await {
        Got::KeepAlive(pong) => assert_eq!(pong, b"\r\n"),
        other => panic!("expected a CRLF pong, got {other:?}"),
    }
    conn.send(options(me, "tls-5")).await.unwrap();
    assert_eq!(conn.message().await.header("Call-ID"), Some("tls-5"));

    // A message announcing more than sip.max_message_bytes ends the connection.
    conn.send("OPTIONS sip:ping@127.0.0.1 SIP/2.0\r\nCall-ID: huge\r\nContent-Length: 100000\r\n\r\n").await.unwrap();
    assert!(matches!(conn.next().await, Got::Closed), "the connection is closed");

    shutdown.cancel();
    gw.wait().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_client_ca_only_clients_with_a_certificate_it_issued_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    let (_db, gw, shutdown) = start(dir.path(), |c| {
        listener(c, &pki);
        c.sip.tls_config.client_ca = Some(pki.ca.clone());
    })
    .await;
    let addr = gw.sip_tls.unwrap();

    // No certificate, then one the CA did not issue: no answer, and the
    // failed handshakes are counted. (With TLS 1.3 the client finishes its
    // side of the handshake before the server refuses it.)
    for (n, identity) in [None, Some(&pki.stranger)].into_iter().enumerate() {
        if let Ok(mut conn) = connect(addr, &client(&pki, identity)).await {
            let me = local_addr(&conn);
            let _ = conn.send(options(me, "refused")).await;
            let got = conn.next().await;
            assert!(matches!(got, Got::Closed), "a client with {:?} got {got:?}", identity.map(|i| &i.cert));
        }
        wait_for_metric(gw.http, &format!("switchboard_sip_tls_handshake_failures_total{{direction=\"inbound\"}} {}", n + 1)).await;
    }

    let mut conn = connect(addr, &client(&pki, Some(&pki.client))).await.unwrap();
    let me = local_addr(&conn);
    conn.send(options(me, "mtls-1")).await.unwrap();
    let ok = conn.message().await;
    assert_eq!((ok.status(), ok.header("Call-ID")), (Some(200), Some("mtls-1")));

    shutdown.cancel();
    gw.wait().await.unwrap();
}

fn register(me: SocketAddr, cseq: u32, auth: Option<String>) -> String {
    let auth = auth.map(|a| format!("Authorization: {a}\r\n")).unwrap_or_default();
    format!(
        "REGISTER sips:switchboard SIP/2.0\r\nVia: SIP/2.0/TLS {me};branch=z9hG4bKr{cseq}\r\nFrom: <sips:ada@switchboard>;tag=r\r\nTo: <sips:ada@switchboard>\r\nCall-ID: reg-tls\r\nCSeq: {cseq} REGISTER\r\nContact: <sips:ada@{me}>\r\nExpires: 600\r\nMax-Forwards: 70\r\n{auth}Content-Length: 0\r\n\r\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_registered_over_tls_is_called_on_its_tls_connection() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    let (db, gw, shutdown) = start(dir.path(), |c| listener(c, &pki)).await;
    let tls_port = gw.sip_tls.unwrap().port();
    let directory = Directory::new(db.clone());
    let user = directory.create_user(NewUser { name: "Ada".into(), ..Default::default() }).await.unwrap();
    // The provisioned contact goes nowhere: only the registration reaches the phone.
    let device = directory
        .create_device(NewDevice { user_id: user.id.clone(), name: "desk".into(), contact_uri: "sip:ada@127.0.0.1:9".into() })
        .await
        .unwrap();
    directory.set_device_credentials(&device.id, "ada", "correct horse battery", "switchboard").await.unwrap();
    directory.assign_number("+14155550122", &user.id).await.unwrap();

    let mut phone = connect(gw.sip_tls.unwrap(), &client(&pki, None)).await.unwrap();
    let me = local_addr(&phone);
    phone.send(register(me, 1, None)).await.unwrap();
    let challenge = phone.message().await;
    assert_eq!(challenge.status(), Some(401));
    let offered = Challenge::parse(challenge.header("WWW-Authenticate").unwrap()).unwrap();
    let creds = answer(&offered, "ada", "correct horse battery", "REGISTER", "sips:switchboard", "c1", 1);
    phone.send(register(me, 2, Some(creds.to_header()))).await.unwrap();
    let ok = phone.message().await;
    assert_eq!(ok.status(), Some(200), "{ok:?}");

    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let bindings = Registrations::new(db.clone()).bindings(&device.id, now).await.unwrap();
    assert_eq!(bindings.len(), 1);
    assert_eq!(bindings[0].source, Destination::Tls(me), "stored as a tls: binding");
    assert_eq!(bindings[0].contact, format!("sips:ada@{me}"));

    // A carrier calls over UDP: the INVITE comes down the phone's TLS connection.
    let carrier = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let c = carrier.local_addr().unwrap();
    let sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n";
    let invite = format!("INVITE sip:+14155550122@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP {c};branch=z9hG4bKinv\r\nFrom: <sip:+1212@carrier>;tag=1\r\nTo: <sip:+14155550122@gw>\r\nCall-ID: tls-call-1\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\nContact: <sip:c@{c}>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}", sdp.len());
    carrier.send_to(invite.as_bytes(), gw.sip_udp.unwrap()).await.unwrap();
    let incoming = phone.message().await;
    assert_eq!(incoming.method(), Some("INVITE"));
    assert_eq!(incoming.request_uri(), Some(format!("sips:ada@{me}").as_str()));
    let via = incoming.header("Via").unwrap();
    assert!(via.starts_with(&format!("SIP/2.0/TLS 127.0.0.1:{tls_port};")), "{via}");
    assert_eq!(incoming.header("Contact"), Some(format!("<sips:switchboard@127.0.0.1:{tls_port}>").as_str()));

    // The phone is busy: the carrier hears 486, and the phone gets its ACK.
    phone.send(make_response(&incoming, 486, Some("ph"), "phone").encode()).await.unwrap();
    let mut buf = vec![0u8; 65_536];
    loop {
        let (n, _) = tokio::time::timeout(WAIT, carrier.recv_from(&mut buf)).await.expect("a response to the carrier").unwrap();
        let r = SipMessage::parse(&buf[..n], 65_536).unwrap();
        if r.status() != Some(100) {
            assert_eq!(r.status(), Some(486));
            break;
        }
    }
    assert_eq!(phone.message().await.method(), Some("ACK"));

    shutdown.cancel();
    gw.wait().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_calls_a_sips_contact_over_mutual_tls() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    // No TLS listener: outgoing TLS needs only the trust and the identity.
    let (db, gw, shutdown) = start(dir.path(), |c| {
        c.sip.tls_config.ca = Some(pki.ca.clone());
        c.sip.tls_config.client_cert = Some(pki.client.cert.clone());
        c.sip.tls_config.client_key = Some(pki.client.key.clone());
    })
    .await;
    assert_eq!(gw.sip_tls, None);

    // The far end (a trunk or a device) demands a client certificate from the test CA.
    let far = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let far_addr = far.local_addr().unwrap();
    let directory = Directory::new(db.clone());
    let user = directory.create_user(NewUser { name: "Ada".into(), ..Default::default() }).await.unwrap();
    directory
        .create_device(NewDevice { user_id: user.id.clone(), name: "desk".into(), contact_uri: format!("sips:agent@{far_addr}") })
        .await
        .unwrap();
    directory.assign_number("+14155550133", &user.id).await.unwrap();

    let carrier = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let c = carrier.local_addr().unwrap();
    let sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n";
    let invite = format!("INVITE sip:+14155550133@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP {c};branch=z9hG4bKinv\r\nFrom: <sip:+1212@carrier>;tag=1\r\nTo: <sip:+14155550133@gw>\r\nCall-ID: tls-out-1\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\nContact: <sip:c@{c}>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}", sdp.len());
    carrier.send_to(invite.as_bytes(), gw.sip_udp.unwrap()).await.unwrap();

    let (tcp, _) = tokio::time::timeout(WAIT, far.accept()).await.expect("the gateway connects").unwrap();
    let tls = server(&pki, &pki.server, true).accept(tcp).await.expect("the handshake succeeds: the gateway trusts the CA and presents its certificate");
    let presented = tls.get_ref().1.peer_certificates().expect("a client certificate").to_vec();
    assert_eq!(presented, pki.client.chain());
    let mut device = Conn::new(tls);
    let incoming = device.message().await;
    assert_eq!(incoming.method(), Some("INVITE"));
    assert_eq!(incoming.request_uri(), Some(format!("sips:agent@{far_addr}").as_str()));
    assert!(incoming.header("Via").unwrap().starts_with("SIP/2.0/TLS "), "{:?}", incoming.header("Via"));
    assert!(incoming.header("Contact").unwrap().starts_with("<sips:switchboard@"), "{:?}", incoming.header("Contact"));

    device.send(make_response(&incoming, 486, Some("far"), "far").encode()).await.unwrap();
    let mut buf = vec![0u8; 65_536];
    loop {
        let (n, _) = tokio::time::timeout(WAIT, carrier.recv_from(&mut buf)).await.expect("a response to the carrier").unwrap();
        let r = SipMessage::parse(&buf[..n], 65_536).unwrap();
        if r.status() != Some(100) {
            assert_eq!(r.status(), Some(486));
            break;
        }
    }

    shutdown.cancel();
    gw.wait().await.unwrap();
}

/// A TLS server on a fresh port: the outcome of the handshake with the
/// first client, and the first SIP message if it succeeded.
fn far_end(acceptor: TlsAcceptor, listener: TcpListener) -> tokio::task::JoinHandle<Result<SipMessage, String>> {
    tokio::spawn(async move {
        let (tcp, _) = tokio::time::timeout(WAIT, listener.accept()).await.map_err(|_| "no connection".to_owned())?.map_err(|e| e.to_string())?;
        let tls = acceptor.accept(tcp).await.map_err(|e| e.to_string())?;
        Ok(Conn::new(tls).message().await)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outgoing_tls_verifies_the_server_by_name_or_ip_address() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    let mut sip = GatewayConfig::default().sip;
    sip.tls_config.ca = Some(pki.ca.clone());
    let tls = TlsSettings::from_config(&sip).unwrap();
    let (tx, _rx) = mpsc::channel::<Inbound>(8);
    let transport = Transport::bind(Listen::default(), Some(tls), 65_535, tx, CancellationToken::new()).await.unwrap();
    let msg = |id: &str| {
        let mut m = SipMessage::request("OPTIONS", "sips:far@127.0.0.1");
        m.push_header("Call-ID", id);
        m
    };
    let listen = || async { TcpListener::bind("127.0.0.1:0").await.unwrap() };

    // By name: the certificate is for localhost.
    let l = listen().await;
    let addr = l.local_addr().unwrap();
    let far = far_end(server(&pki, &pki.server, false), l);
    transport.send_tls(addr, "localhost", &msg("by-name")).await;
    assert_eq!(far.await.unwrap().unwrap().header("Call-ID"), Some("by-name"));

    // Without a name: the certificate must carry the IP address.
    let l = listen().await;
    let addr = l.local_addr().unwrap();
    let far = far_end(server(&pki, &pki.server, false), l);
    transport.send(Destination::Tls(addr), &msg("by-ip")).await;
    assert_eq!(far.await.unwrap().unwrap().header("Call-ID"), Some("by-ip"));

    // A name the certificate does not carry: the gateway aborts the handshake.
    let l = listen().await;
    let addr = l.local_addr().unwrap();
    let far = far_end(server(&pki, &pki.server, false), l);
    transport.send_tls(addr, "sip.example.com", &msg("wrong-name")).await;
    let refused = far.await.unwrap().expect_err("the gateway refuses a certificate for another name");
    assert!(refused.contains("alert"), "{refused}");

    // A certificate from an issuer it does not trust.
    let l = listen().await;
    let addr = l.local_addr().unwrap();
    let far = far_end(server(&pki, &pki.stranger, false), l);
    transport.send(Destination::Tls(addr), &msg("stranger")).await;
    let refused = far.await.unwrap().expect_err("the gateway refuses an unknown issuer");
    assert!(refused.contains("alert"), "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_trunk_is_kept_alive_over_mutual_tls_verified_by_its_name() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    // The trunk demands a client certificate from the test CA; its own
    // certificate is for `localhost`, the name in the trunk's address.
    let trunk = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = trunk.local_addr().unwrap().port();
    let (_db, gw, shutdown) = start(dir.path(), |c| {
        c.sip.tls_config.ca = Some(pki.ca.clone());
        c.sip.tls_config.client_cert = Some(pki.client.cert.clone());
        c.sip.tls_config.client_key = Some(pki.client.key.clone());
        c.sip.trunk_options_interval_secs = 1;
        c.sip.trunks.push(switchboard_gateway::config::TrunkConfig {
            name: "tls-carrier".into(),
            address: Some(format!("localhost:{port}")),
            transport: "tls".into(),
            ..Default::default()
        });
    })
    .await;
    let (tcp, _) = tokio::time::timeout(WAIT, trunk.accept()).await.expect("the gateway connects to the trunk").unwrap();
    let tls = server(&pki, &pki.server, true).accept(tcp).await.expect("mutual TLS handshake with the trunk");
    assert_eq!(tls.get_ref().1.peer_certificates().expect("a client certificate").to_vec(), pki.client.chain());
    assert_eq!(tls.get_ref().1.server_name(), Some("localhost"), "SNI and verification by the trunk's name");
    let mut conn = Conn::new(tls);
    let options = conn.message().await;
    assert_eq!(options.method(), Some("OPTIONS"));
    assert_eq!(options.request_uri(), Some(format!("sip:localhost:{port};transport=tls").as_str()));
    assert!(options.header("Via").unwrap().starts_with("SIP/2.0/TLS "));
    conn.send(make_response(&options, 200, Some("trunk"), "trunk").encode()).await.unwrap();
    wait_for_metric(gw.http, "switchboard_sip_trunk_up{trunk=\"tls-carrier\"} 1").await;
    shutdown.cancel();
    gw.wait().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_that_never_handshake_cannot_pile_up() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    let (_db, gw, shutdown) = start(dir.path(), |c| listener(c, &pki)).await;
    let addr = gw.sip_tls.unwrap();
    // 256 connections that never send a ClientHello hold every handshake slot …
    let mut idle = Vec::new();
    for _ in 0..256 {
        idle.push(TcpStream::connect(addr).await.unwrap());
    }
    // … so the next one is closed at once, and counted.
    let mut extra = TcpStream::connect(addr).await.unwrap();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(5), extra.read(&mut buf)).await.expect("closed well before the 10 s handshake timeout").unwrap_or(0);
    assert_eq!(n, 0);
    wait_for_metric(gw.http, "switchboard_sip_connections_refused_total{reason=\"handshakes pending\"} 1").await;
    drop(idle);
    shutdown.cancel();
}
