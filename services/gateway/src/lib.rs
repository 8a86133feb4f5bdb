//! The gateway role of Switchboard: a SIP B2BUA with anchored media that
//! records calls to object storage and writes every state change, with its
//! call event, to the transactional outbox; a relay publishes the outbox to
//! Kafka. It also serves the admin API, recording playback, health and
//! Prometheus metrics over HTTP.
//!
//! Rooms: `sip` (codec, transports), `media` (SDP, RTP, relay, recorder),
//! `calls` (the B2BUA state machine, its driver, the event writer),
//! `recordings` (spool and object storage), `events` (outbox relay),
//! `directory` (users, devices, numbers), `api` (HTTP).

pub mod api;
pub mod calls;
pub mod config;
pub mod directory;
pub mod events;
pub mod media;
pub mod recordings;
pub mod registrations;
pub mod salesforce;
pub mod sip;
pub mod webrtc;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use switchboard_store::Database;
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::calls::b2bua::Local;
use crate::calls::control::CallControl;
use crate::calls::live::LiveCalls;
use crate::calls::manager::{self, ManagerDeps};
use crate::calls::writer::{CallUpdate, CallWriter};
use crate::config::{EventLogKind, GatewayConfig};
use crate::directory::Directory;
use crate::media::ports::PortAllocator;
use crate::recordings::RecordingSink;
use crate::registrations::Registrations;
use crate::sip::digest::Nonces;
use crate::sip::guard::{AuthGuard, GuardPolicy};
use crate::sip::registrar::Registrar;
use crate::sip::tls::TlsSettings;
use crate::sip::transport::Listen;
use crate::sip::Transport;

/// Entry point of the gateway role.
pub struct Gateway;

/// A started gateway: where it listens, and its tasks.
pub struct RunningGateway {
    pub sip_udp: Option<SocketAddr>,
    pub sip_tcp: Option<SocketAddr>,
    pub sip_tls: Option<SocketAddr>,
    pub http: SocketAddr,
    /// Commands to live calls (hold/resume).
    pub control: CallControl,
    /// Base URL of recording links.
    pub public_url: String,
    /// The live calls and the agents' event streams (`/v1/events`).
    pub live: LiveCalls,
    tasks: JoinSet<()>,
}

impl Gateway {
    /// Binds every listener and starts the gateway's tasks; returns once it
    /// is ready to take calls. `shutdown` stops it (live calls are hung up).
    pub async fn start(config: GatewayConfig, data_dir: PathBuf, db: Database, shutdown: CancellationToken) -> anyhow::Result<RunningGateway> {
        config.validate()?;
        db.check_migrated().await?;
        // Install the metrics recorder before anything records.
        api::metrics_handle();
        let (inbound_tx, inbound_rx) = mpsc::channel(8192);
        let tls = TlsSettings::from_config(&config.sip)?;
        let listen = Listen { udp: config.sip.udp, tcp: config.sip.tcp, tls: config.sip.tls };
        let transport = Transport::bind(listen, Some(tls), config.sip.max_message_bytes, inbound_tx, shutdown.clone()).await?;
        let sip_ip = config.sip.udp.or(config.sip.tcp).or(config.sip.tls).map(|a| a.ip()).unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
        let host = match &config.sip.advertised_host {
            Some(h) => h.clone(),
            None if sip_ip.is_unspecified() => {
                warn!("SIP listens on an unspecified address and sip.advertised_host is not set; advertising 127.0.0.1, which remote peers cannot reach");
                "127.0.0.1".to_owned()
            }
            None => sip_ip.to_string(),
        };
        let media_ip = match config.media.advertised_ip {
            Some(ip) => ip,
            None if config.media.bind_ip.is_unspecified() => {
                warn!("media.bind_ip is unspecified and media.advertised_ip is not set; advertising 127.0.0.1 in SDP");
                IpAddr::V4(Ipv4Addr::LOCALHOST)
            }
            None => config.media.bind_ip,
        };
        let listener = tokio::net::TcpListener::bind(config.http.listen)
            .await
            .with_context(|| format!("cannot listen for HTTP on {}; change http.listen", config.http.listen))?;
        let http = listener.local_addr()?;
        // Without http.public_url, links name the address actually bound
        // (http.listen may ask for port 0).
        let public_url = match &config.http.public_url {
            Some(_) => config.public_url(),
            None => format!("http://{http}"),
        };
        let recordings = RecordingSink::from_config(&config.recordings, &data_dir, &public_url, shutdown.clone())?;
        let directory = Directory::new(db.clone());
        let committed = Arc::new(Notify::new());
        let mut tasks = JoinSet::new();
        // Agents' event streams end when the gateway stops (so that the
        // HTTP server's graceful shutdown does not wait for them).
        let live = LiveCalls::new();
        tasks.spawn({
            let (live, shutdown) = (live.clone(), shutdown.clone());
            async move {
                shutdown.cancelled().await;
                live.close();
            }
        });

        // Datagrams between the gateway's own sockets (a browser leg's and
        // its call's bridge) go in memory; the bridge is told to browsers'
        // legs at `media_ip`, its sockets are bound to `bind_ip`.
        let local_net = crate::media::local::LocalNet::new(vec![(media_ip, config.media.bind_ip)]);
        let deps = ManagerDeps {
            transport: transport.clone(),
            directory: directory.clone(),
            ports: PortAllocator::new(config.media.bind_ip, config.media.port_min, config.media.port_max),
            media_ip,
            local: Local {
                host,
                udp_port: transport.udp_addr().map(|a| a.port()),
                tcp_port: transport.tcp_addr().map(|a| a.port()),
                tls_port: transport.tls_addr().map(|a| a.port()),
                user_agent: config.sip.user_agent.clone(),
            },
            db: db.clone(),
            recordings: recordings.clone(),
            record_all: config.recordings.record_all,
            recording_format: config.recordings.format,
            media_threads: crate::media::threads::MediaThreads::start_with(config.media.threads, local_net.clone())
                .context("starting the media threads")?,
            opus: crate::media::codec::OpusSettings { complexity: config.media.opus_complexity, bitrate: config.media.opus_bitrate },
            hold_music: Arc::new(match &config.media.hold_music {
                Some(path) => crate::media::player::Prompt::load(path)?,
                None => crate::media::player::Prompt::bundled_hold_music(),
            }),
            voicemail: match &config.voicemail {
                v if v.enabled => Some(crate::calls::manager::VoicemailDeps {
                    settings: crate::media::voicemail::VoicemailSettings {
                        max_length: Duration::from_secs(v.max_length_secs.max(1)),
                        end_on_silence: Duration::from_secs(v.end_on_silence_secs.max(1)),
                        format: v.format,
                        ..Default::default()
                    },
                    default_greeting: Arc::new(match &v.default_greeting {
                        Some(path) => crate::media::player::Prompt::load(path)?,
                        None => crate::media::player::Prompt::bundled_voicemail_greeting(),
                    }),
                    greetings_dir: v.greetings_dir.clone().unwrap_or_else(|| data_dir.join("greetings")),
                }),
                _ => None,
            },
            registrar: Arc::new(Registrar {
                realm: config.sip.realm.clone(),
                // Nonces are valid for five minutes and only for this process;
                // after a restart devices are simply challenged again.
                nonces: Nonces::new(rand::random(), 300),
                user_agent: config.sip.user_agent.clone(),
                algorithms: config.sip.digest_algorithms.iter().filter_map(|a| crate::sip::digest::Algorithm::parse(a)).collect(),
            }),
            registrations: Registrations::new(db.clone()),
            guard: Arc::new(std::sync::Mutex::new(AuthGuard::new(GuardPolicy {
                max_failures: config.sip.auth_max_failures,
                window_secs: config.sip.auth_failure_window_secs,
                ban_secs: config.sip.auth_ban_secs,
                max_tracked: 100_000,
            }))),
            ring_timeout: Duration::from_secs(config.sip.ring_timeout_secs),
            park_timeout: Duration::from_secs(config.sip.park_timeout_secs),
            timers: crate::sip::transaction::Timers {
                t1: Duration::from_millis(config.sip.timer_t1_ms),
                ..crate::sip::transaction::Timers::default()
            },
            trunks: crate::calls::trunks::Trunks::from_config(&config.sip.trunks),
            trunk_options_interval: Duration::from_secs(config.sip.trunk_options_interval_secs),
            rate_limit: crate::sip::ratelimit::RatePolicy {
                per_second: f64::from(config.sip.rate_limit_per_source),
                burst: f64::from(config.sip.rate_limit_burst),
                max_tracked: 100_000,
            },
            committed: committed.clone(),
            live: live.clone(),
            shutdown: shutdown.clone(),
        };
        let (control, commands) = CallControl::new();
        tasks.spawn(manager::run(deps, inbound_rx, commands));

        // Recordings an earlier run spooled but did not upload, finished or
        // cut short by a crash (those are kept as recorded).
        let pending = recordings.pending();
        if !pending.is_empty() {
            let unfinished = pending.iter().filter(|p| !p.complete()).count();
            info!(count = pending.len(), unfinished, "uploading recordings left in the spool by an earlier run");
            let (sink, db, committed) = (recordings.clone(), db.clone(), committed.clone());
            tasks.spawn(async move {
                for spooled in pending {
                    let call_id = spooled.call_id().to_owned();
                    if let Some(stored) = sink.upload(spooled).await {
                        let admin_only = stored.admin_only;
                        let update = match (stored.kind, stored.mailbox.clone()) {
                            (crate::recordings::RecordingKind::Voicemail, Some(user_id)) => {
                                CallUpdate::VoicemailAvailable { stored, user_id, ended_by: "recovered".into() }
                            }
                            _ => CallUpdate::recording_available(stored, admin_only),
                        };
                        CallWriter::spawn(db.clone(), call_id, committed.clone()).record(update);
                    }
                }
            });
        }

        if config.events.log == EventLogKind::Kafka {
            let producer = events::relay::producer(&config.events.kafka)?;
            tasks.spawn(events::relay::run(db.outbox(), producer, config.events.kafka.topic.clone(), committed.clone(), shutdown.clone()));
        }

        let sealer = api::auth::load_sealer(&config.auth, &data_dir)?;
        let login = match &config.auth.salesforce {
            Some(sf) => Some(
                api::auth::salesforce::SalesforceLogin::new(
                    &sf.login_url,
                    sf.client_id.clone(),
                    sf.client_secret.clone(),
                    format!("{public_url}/v1/auth/salesforce/callback"),
                    sf.organization_id.clone(),
                    sealer.clone(),
                )
                .map_err(|e| anyhow::anyhow!("auth.salesforce.login_url: {e}"))?,
            ),
            None => None,
        };
        let sessions = api::auth::Sessions::new(db.clone(), sealer.clone(), Duration::from_secs(config.auth.session_ttl_secs));
        let sf = &config.lookup;
        let salesforce = salesforce::SalesforceContext::new(
            salesforce::SalesforceApi::new(&sf.api_version, Duration::from_millis(sf.request_timeout_ms), login.clone(), sessions.clone()),
            salesforce::numbers::region(&sf.region).context("lookup.region")?,
            Duration::from_secs(sf.match_cache_secs),
            sf.match_cache_entries,
        );
        tasks.spawn(salesforce::matcher::run(live.clone(), salesforce.clone(), shutdown.clone()));
        // The Task sync status comes the way the call events go: on the
        // connector's status topic with Kafka, else from `sync_tasks`.
        if config.events.log == EventLogKind::Kafka {
            let consumer = salesforce::sync_topic::consumer(&config.events.kafka)?;
            tasks.spawn(salesforce::sync_topic::run(consumer, config.events.kafka.status_topic.clone(), live.clone(), shutdown.clone()));
        } else {
            tasks.spawn(salesforce::sync::run(db.clone(), live.clone(), Duration::from_secs(1), shutdown.clone()));
        }
        // Browser phones: reached through the SIP UDP listener.
        let phones = match (config.media.webrtc, transport.udp_addr()) {
            (true, Some(_)) => {
                let turn = config.media.turn_secret.clone().filter(|_| !config.media.turn_urls.is_empty()).map(|secret| webrtc::turn::Turn {
                    urls: config.media.turn_urls.clone(),
                    secret,
                    ttl_secs: config.media.turn_ttl_secs,
                });
                let listen = std::net::SocketAddr::new(config.media.bind_ip, config.media.webrtc_port);
                let announce_ip = config.media.advertised_ip.unwrap_or(media_ip);
                let phones = webrtc::BrowserPhones::start(listen, Some(std::net::SocketAddr::new(announce_ip, config.media.webrtc_port)), directory.clone(), Registrations::new(db.clone()), live.clone(), turn, local_net.clone(), shutdown.clone())
                    .await
                    .with_context(|| format!("cannot listen for browser media on UDP {listen}; change media.webrtc_port or set media.webrtc = false"))?;
                Some(phones)
            }
            (true, None) => {
                tracing::warn!("browser phones are off: they are reached over SIP on UDP, and sip.udp is not set");
                None
            }
            (false, _) => None,
        };
        let agent_api = api::agent::AgentApi::new(
            sessions,
            login,
            salesforce,
            directory.clone(),
            control.clone(),
            live.clone(),
            db.clone(),
            recordings.clone(),
            public_url.clone(),
            config.auth.allowed_origins.clone(),
            config.http.max_body_bytes,
            sealer,
            config.auth.rate_limit_per_minute,
        );
        let agent_api = agent_api.with_phones(phones);
        tasks.spawn(api::agent::housekeeping(agent_api.clone(), shutdown.clone()));
        let app = api::ops_routes()
            .merge(api::agent::router(agent_api))
            .merge(api::page::router())
            .nest("/admin/v1", api::admin::router(directory, config.sip.realm.clone(), config.http.admin_token.clone()))
            .merge(api::recordings::router(db.clone(), recordings.store(), config.http.admin_token.clone()))
            .layer(tower_http::trace::TraceLayer::new_for_http());
        let http_shutdown = shutdown.clone();
        tasks.spawn(async move {
            if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(http_shutdown.cancelled_owned()).await {
                warn!(error = %e, "HTTP server stopped with an error");
            }
        });
        if config.sip.trunks.is_empty() {
            tracing::warn!("no sip.trunks configured: only authenticated devices can place calls; add a [[sip.trunks]] with inbound_from to take calls from a carrier");
        }
        info!(sip_udp = ?transport.udp_addr(), sip_tcp = ?transport.tcp_addr(), sip_tls = ?transport.tls_addr(), %http, "gateway ready");
        Ok(RunningGateway { sip_udp: transport.udp_addr(), sip_tcp: transport.tcp_addr(), sip_tls: transport.tls_addr(), http, control, public_url, live, tasks })
    }
}

impl RunningGateway {
    /// Waits until every task of the gateway has stopped (after shutdown).
    pub async fn wait(mut self) -> anyhow::Result<()> {
        while let Some(r) = self.tasks.join_next().await {
            if let Err(e) = r {
                if e.is_panic() {
                    anyhow::bail!("a gateway task panicked: {e}");
                }
            }
        }
        Ok(())
    }
}
