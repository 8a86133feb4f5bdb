//! The handle of a running emulated org: start it on a port, point a client at
//! its URL, and inspect or steer it from the test.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use chrono::Utc;
use jsonwebtoken::DecodingKey;
use serde_json::{json, Value};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::public_key::PublicKey;

use crate::config::{ConnectedApp, EmulatorConfig};
use crate::control::{check_app, RecordWrite, Stats};
use crate::faults::Fault;
use crate::ids;
use crate::schema::Schema;
use crate::state::{Browser, Inner, Shared};
use crate::store::{Store, Writer};

/// Why the emulator could not start or refused a control request.
#[derive(Debug, thiserror::Error)]
pub enum EmulatorError {
    /// The configuration cannot describe an org (bad certificate, version,
    /// user id, custom field…).
    #[error("invalid emulator configuration: {0}")]
    Config(String),
    /// The listening address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The operating system's reason.
        source: std::io::Error,
    },
    /// The sObject type does not exist in the emulated org.
    #[error("unknown sObject type {0:?}")]
    UnknownObject(String),
    /// The org refused the record, with Salesforce's error code.
    #[error("{code}: {message}")]
    Rejected {
        /// Salesforce status code, e.g. `REQUIRED_FIELD_MISSING`.
        code: String,
        /// Salesforce's message.
        message: String,
    },
}

/// The running server task and the signal that stops it.
struct Server {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

/// A running emulated org. Cloning is cheap; all clones control the same org.
#[derive(Clone)]
pub struct Emulator {
    shared: Arc<Shared>,
    server: Arc<Mutex<Option<Server>>>,
    /// The address the server is bound to, bound again by
    /// [`Emulator::resume`].
    bound: SocketAddr,
}

/// Serves `shared` on `listener` in a background task until stopped.
fn serve(listener: tokio::net::TcpListener, shared: Arc<Shared>) -> Server {
    let router = crate::router::build(shared);
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let serve = axum::serve(listener, router).with_graceful_shutdown(async move {
            let _ = stopped.await;
        });
        if let Err(e) = serve.await {
            tracing::error!(error = %e, "the Salesforce emulator stopped serving");
        }
    });
    Server { stop, task }
}

/// Stops `server`: no new connection is accepted, requests in progress are
/// answered, idle connections are closed.
async fn stop(server: Server) {
    let _ = server.stop.send(());
    if let Err(e) = server.task.await {
        tracing::error!(error = %e, "the Salesforce emulator task failed");
    }
}

impl std::fmt::Debug for Emulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Emulator")
            .field("url", &self.shared.base_url)
            .finish()
    }
}

/// Reads the RSA public key of a PEM certificate as a JWT verifying key.
fn verifying_key(certificate_pem: &str) -> Result<DecodingKey, EmulatorError> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(certificate_pem.as_bytes())
        .map_err(|e| EmulatorError::Config(format!("the certificate is not PEM: {e}")))?;
    let (_, certificate) = X509Certificate::from_der(&pem.contents)
        .map_err(|e| EmulatorError::Config(format!("the certificate is not X.509: {e}")))?;
    match certificate.public_key().parsed() {
        Ok(PublicKey::RSA(rsa)) => Ok(DecodingKey::from_rsa_raw_components(
            rsa.modulus,
            rsa.exponent,
        )),
        Ok(_) => Err(EmulatorError::Config(
            "the certificate's key is not RSA; Salesforce verifies RS256".to_owned(),
        )),
        Err(e) => Err(EmulatorError::Config(format!(
            "the certificate's public key cannot be read: {e}"
        ))),
    }
}

/// Parses `"62.0"` into 62.
fn parse_versions(versions: &[String]) -> Result<Vec<u32>, EmulatorError> {
    if versions.is_empty() {
        return Err(EmulatorError::Config(
            "at least one API version is needed".to_owned(),
        ));
    }
    versions
        .iter()
        .map(|v| {
            v.strip_suffix(".0")
                .and_then(|major| major.parse::<u32>().ok())
                .ok_or_else(|| {
                    EmulatorError::Config(format!("API version {v:?} must look like \"62.0\""))
                })
        })
        .collect()
}

/// The URL clients reach a listener at (loopback for a wildcard address).
fn local_url(addr: SocketAddr) -> String {
    let ip = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    format!("http://{}", SocketAddr::new(ip, addr.port()))
}

impl Emulator {
    /// Starts an org on `listen` (port 0 picks a free port) and serves it in
    /// the background until [`Emulator::shutdown`].
    pub async fn start(
        config: EmulatorConfig,
        listen: SocketAddr,
    ) -> Result<Emulator, EmulatorError> {
        let key = verifying_key(&config.certificate_pem)?;
        let api_versions = parse_versions(&config.api_versions)?;
        let user_id = ids::normalize(&config.user_id)
            .filter(|id| ids::key_prefix(id) == "005")
            .ok_or_else(|| {
                EmulatorError::Config(format!(
                    "user id {:?} is not a 15- or 18-character 005 id",
                    config.user_id
                ))
            })?;
        if config.consumer_key.is_empty() || config.username.is_empty() {
            return Err(EmulatorError::Config(
                "the consumer key and username must not be empty".to_owned(),
            ));
        }
        let schema = Schema::new(
            &config.task_external_id_fields,
            &config.case_external_id_fields,
            &config.custom_fields,
            &config.read_only_fields,
        )
        .map_err(EmulatorError::Config)?;
        let mut apps = BTreeMap::new();
        for app in &config.connected_apps {
            check_app(app)?;
            if apps.insert(app.consumer_key.clone(), app.clone()).is_some() {
                return Err(EmulatorError::Config(format!(
                    "two connected apps have the consumer key {}",
                    app.consumer_key
                )));
            }
        }
        apps.entry(config.consumer_key.clone())
            .or_insert_with(|| ConnectedApp::new(config.consumer_key.clone()));

        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|source| EmulatorError::Bind {
                addr: listen,
                source,
            })?;
        let bound = listener
            .local_addr()
            .map_err(|source| EmulatorError::Bind {
                addr: listen,
                source,
            })?;
        let base_url = config
            .public_url
            .clone()
            .map(|u| u.trim_end_matches('/').to_owned())
            .unwrap_or_else(|| local_url(bound));

        let org_id = ids::make("00D", 1);
        let shared = Arc::new(Shared {
            schema,
            consumer_key: config.consumer_key.clone(),
            verifying_key: key,
            org_id,
            default_user_id: user_id.clone(),
            api_versions,
            token_ttl: config.token_ttl,
            code_ttl: config.authorization_code_ttl,
            base_url,
            inner: Mutex::new(Inner::new(Store::new(), config.daily_api_limit)),
        });
        shared.lock().apps = apps;
        let user_type = shared
            .schema
            .object("User")
            .ok_or_else(|| EmulatorError::Config("no User object".to_owned()))?;
        let integration = json!({"Username": config.username, "LastName": "Integration", "FirstName": "Switchboard", "Email": config.username});
        let integration = integration.as_object().cloned().unwrap_or_default();
        let writer = Writer {
            user_id: &user_id,
            now: Utc::now(),
        };
        shared
            .lock()
            .store
            .create_with_id(
                &shared.schema,
                user_type,
                &integration,
                user_id.clone(),
                writer,
            )
            .map_err(|e| {
                EmulatorError::Config(format!("the integration user cannot be created: {e:?}"))
            })?;
        for seed in &config.extra_users {
            shared.add_user(&seed.username, seed.id.as_deref())?;
        }
        for app in &config.connected_apps {
            shared.check_run_as(app)?;
        }

        let server = serve(listener, shared.clone());
        tracing::info!(url = %shared.base_url, "Salesforce emulator listening");
        Ok(Emulator {
            shared,
            server: Arc::new(Mutex::new(Some(server))),
            bound,
        })
    }

    /// Base URL of the org: the login host for the token request and the
    /// `instance_url` of REST calls, e.g. `http://127.0.0.1:38211`.
    pub fn url(&self) -> String {
        self.shared.base_url.clone()
    }

    /// The URL of the token endpoint.
    pub fn token_url(&self) -> String {
        format!("{}/services/oauth2/token", self.shared.base_url)
    }

    /// The 18-character id of the integration user.
    pub fn user_id(&self) -> String {
        self.shared.default_user_id.clone()
    }

    /// The 18-character org id (`00D…`).
    pub fn org_id(&self) -> String {
        self.shared.org_id.clone()
    }

    /// The connected app's consumer key, the `iss` assertions must carry.
    pub fn consumer_key(&self) -> String {
        self.shared.consumer_key.clone()
    }

    /// The consumer secret of the [`consumer_key`](Self::consumer_key) app.
    pub fn consumer_secret(&self) -> String {
        self.connected_app(&self.shared.consumer_key)
            .map(|app| app.consumer_secret)
            .unwrap_or_default()
    }

    /// The URL of the authorization endpoint of the web-server flow.
    pub fn authorize_url(&self) -> String {
        format!("{}/services/oauth2/authorize", self.shared.base_url)
    }

    /// The URL of the OpenID Connect UserInfo endpoint.
    pub fn userinfo_url(&self) -> String {
        format!("{}/services/oauth2/userinfo", self.shared.base_url)
    }

    /// A connected app's current settings.
    pub fn connected_app(&self, consumer_key: &str) -> Option<ConnectedApp> {
        self.shared.lock().apps.get(consumer_key).cloned()
    }

    /// Adds a connected app, or replaces the one with its consumer key.
    /// Callback URLs must be absolute URLs, and a Run As user of the client
    /// credentials flow a user of the org.
    pub fn register_connected_app(&self, app: ConnectedApp) -> Result<(), EmulatorError> {
        self.shared.register_app(app)
    }

    /// Adds a callback URL to a connected app.
    pub fn add_callback_url(&self, consumer_key: &str, url: &str) -> Result<(), EmulatorError> {
        self.shared.add_callback_url(consumer_key, url)
    }

    /// Sets the emulated browser at the authorization endpoint: who is
    /// signed in (an existing username, or `None` for the login page) and
    /// whether they deny access.
    pub fn set_browser(&self, browser: Browser) -> Result<(), EmulatorError> {
        self.shared.set_browser(browser)
    }

    /// Signs a user in to the emulated browser, who then approves apps.
    pub fn sign_in_browser(&self, username: &str) -> Result<(), EmulatorError> {
        self.set_browser(Browser {
            username: Some(username.to_owned()),
            deny: false,
        })
    }

    /// All Task records, oldest first, with `Id` and every field (`null`
    /// where unset) as the API reads them.
    pub fn tasks(&self) -> Vec<Value> {
        self.records("Task")
    }

    /// All records of an object, oldest first; empty for an unknown object.
    pub fn records(&self, sobject: &str) -> Vec<Value> {
        self.shared.records_json(sobject).unwrap_or_default()
    }

    /// Creates a record (seed data: Contacts, Leads, Accounts, Cases,
    /// Opportunities…) with the same validation as the REST API, owned by
    /// the integration user unless `OwnerId` says otherwise. Returns its id.
    pub fn insert(&self, sobject: &str, fields: Value) -> Result<String, EmulatorError> {
        self.shared.insert_record(sobject, &fields)
    }

    /// Adds an active user who can own records and log in (JWT bearer or
    /// web-server flow); returns the new user's id.
    pub fn add_user(&self, username: &str) -> Result<String, EmulatorError> {
        self.shared.add_user(username, None)
    }

    /// Sets an object's organization-wide default: `private` lets each user
    /// read only the records it owns (the integration user still reads
    /// all, as an administrator with "View All Data"); otherwise every user
    /// reads every record (Public Read Only / Read/Write).
    pub fn set_sharing(&self, sobject: &str, private: bool) {
        let mut inner = self.shared.lock();
        if private {
            inner.private_objects.insert(sobject.to_owned());
        } else {
            inner.private_objects.remove(sobject);
        }
    }

    /// Ends every session: each issued token answers 401 `INVALID_SESSION_ID`
    /// until the client gets a new one.
    pub fn expire_tokens(&self) {
        self.shared.expire_tokens();
    }

    /// Queues a fault for the next matching request(s).
    pub fn inject_fault(&self, fault: Fault) {
        self.shared.lock().faults.push(fault);
    }

    /// Drops every queued fault.
    pub fn clear_faults(&self) {
        self.shared.lock().faults.clear();
    }

    /// Reports every record created or changed from now on (through the
    /// REST API, sObject Collections included, or this handle), in the
    /// order the org stored them, each with the time it was stored and the
    /// record as the write left it. Writes of one request are delivered once
    /// the request has been handled, before its answer is sent; a write an
    /// `allOrNone` request rolled back is never reported. Deletes are not
    /// reported. The org keeps copies for reporting only while a receiver
    /// is alive.
    pub fn watch_writes(&self) -> tokio::sync::mpsc::UnboundedReceiver<RecordWrite> {
        self.shared.watch_writes()
    }

    /// Authenticated REST data calls since start (token calls not included).
    pub fn api_calls(&self) -> u64 {
        self.shared.lock().api_calls
    }

    /// Requests to the token endpoint since start.
    pub fn token_calls(&self) -> u64 {
        self.shared.lock().token_calls
    }

    /// All counters at once.
    pub fn stats(&self) -> Stats {
        self.shared.stats()
    }

    /// Sets today's REST call count, to reach the daily limit without making
    /// thousands of calls.
    pub fn set_api_usage(&self, used: u64) {
        self.shared.lock().usage.set_used(used);
    }

    /// The address the org is served on.
    pub fn local_addr(&self) -> SocketAddr {
        self.bound
    }

    /// Takes the org off the network, as a Salesforce that is down: its
    /// port refuses connections until [`Emulator::resume`]. Requests in
    /// progress are answered first and idle connections closed. Records,
    /// sessions, usage counters and queued faults are kept; the handle stays
    /// usable for inspection and steering.
    pub async fn suspend(&self) {
        let server = self.server.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(server) = server {
            stop(server).await;
        }
        tracing::info!(url = %self.shared.base_url, "Salesforce emulator stopped serving");
    }

    /// Serves the same org again on the same address after
    /// [`Emulator::suspend`]; nothing is lost, issued tokens stay valid.
    /// Binding is retried for up to 10 s, in case a socket of a client
    /// briefly holds the port. Does nothing while the org is served.
    pub async fn resume(&self) -> Result<(), EmulatorError> {
        if self.server.lock().unwrap_or_else(|p| p.into_inner()).is_some() {
            return Ok(());
        }
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        let listener = loop {
            match tokio::net::TcpListener::bind(self.bound).await {
                Ok(listener) => break listener,
                Err(source) if tokio::time::Instant::now() >= deadline => {
                    return Err(EmulatorError::Bind {
                        addr: self.bound,
                        source,
                    })
                }
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
            }
        };
        let server = serve(listener, self.shared.clone());
        *self.server.lock().unwrap_or_else(|p| p.into_inner()) = Some(server);
        tracing::info!(url = %self.shared.base_url, "Salesforce emulator serving again");
        Ok(())
    }

    /// Stops serving and waits for the server task to end. Other clones of
    /// the handle stay usable for inspection.
    pub async fn shutdown(self) {
        self.suspend().await;
    }
}
