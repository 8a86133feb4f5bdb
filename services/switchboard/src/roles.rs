//! Starting the roles: `up` (both in one process), `gateway`, `connector`,
//! and `migrate`. This is the only place that wires roles together; each
//! role gets the shared database and the shutdown token and owns the rest.

use std::io::Write;

use anyhow::Context;
use switchboard_connector::{Connector, RunningConnector};
use switchboard_gateway::config::EventLogKind;
use switchboard_gateway::{Gateway, RunningGateway};
use switchboard_store::{Database, Dialect};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::signals;

/// Opens the configured database, creating the directory of a SQLite file
/// first so a fresh `data_dir` just works.
pub async fn open_database(config: &Config) -> anyhow::Result<Database> {
    if let Some(path) = config.sqlite_path() {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create the database directory {}", parent.display()))?;
        }
    }
    Ok(Database::connect(&config.database_url()).await?)
}

/// Opens the database and refuses to go on unless its schema is current,
/// with the store's message telling the operator to run `switchboard migrate`.
pub async fn open_migrated_database(config: &Config) -> anyhow::Result<Database> {
    let db = open_database(config).await?;
    db.check_migrated().await?;
    Ok(db)
}

/// `switchboard migrate`.
pub async fn migrate(config: &Config) -> anyhow::Result<()> {
    let db = open_database(config).await?;
    db.migrate().await?;
    db.close().await;
    println!("database schema is up to date: {}", switchboard_store::redact(&config.database_url()));
    Ok(())
}

/// `switchboard up`: gateway and connector in one process. A SQLite schema
/// is migrated on the spot (the database is this process's own); a
/// PostgreSQL one must have been migrated with `switchboard migrate`.
pub async fn up(config: Config) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data_dir {}", config.data_dir.display()))?;
    let db = open_database(&config).await?;
    if db.dialect() == Dialect::Sqlite {
        db.migrate().await?;
    } else {
        db.check_migrated().await?;
    }
    let shutdown = CancellationToken::new();
    signals::cancel_on_signal(shutdown.clone()).context("cannot install signal handlers")?;

    let gateway = Gateway::start(config.gateway(), config.data_dir.clone(), db.clone(), shutdown.clone()).await?;
    let connector = match Connector::start(config.connector(), db.clone(), shutdown.clone()).await {
        Ok(connector) => connector,
        Err(e) => {
            shutdown.cancel();
            let _ = gateway.wait().await;
            return Err(e.into());
        }
    };
    print_banner(&config, &gateway);
    let result = run_both(gateway, connector, &shutdown).await;
    db.close().await;
    result
}

/// `switchboard gateway`.
pub async fn gateway(config: Config) -> anyhow::Result<()> {
    let db = open_migrated_database(&config).await?;
    let shutdown = CancellationToken::new();
    signals::cancel_on_signal(shutdown.clone()).context("cannot install signal handlers")?;
    let gateway = Gateway::start(config.gateway(), config.data_dir.clone(), db.clone(), shutdown).await?;
    let result = gateway.wait().await;
    db.close().await;
    result
}

/// `switchboard connector`. It also serves `/healthz` and `/metrics` on
/// `http.listen`, so it is probed and scraped like the gateway.
pub async fn connector(config: Config) -> anyhow::Result<()> {
    let db = open_migrated_database(&config).await?;
    let shutdown = CancellationToken::new();
    signals::cancel_on_signal(shutdown.clone()).context("cannot install signal handlers")?;

    let listener = tokio::net::TcpListener::bind(config.http.listen)
        .await
        .with_context(|| format!("cannot listen for HTTP on {}; change http.listen", config.http.listen))?;
    let http = listener.local_addr()?;
    let ops = switchboard_gateway::api::ops_routes();
    let http_shutdown = shutdown.clone();
    let server = tokio::spawn(async move {
        axum::serve(listener, ops).with_graceful_shutdown(http_shutdown.cancelled_owned()).await
    });

    let connector = match Connector::start(config.connector(), db.clone(), shutdown.clone()).await {
        Ok(connector) => connector,
        Err(e) => {
            shutdown.cancel();
            let _ = server.await;
            return Err(e.into());
        }
    };
    tracing::info!(%http, salesforce = config.salesforce.is_some(), "connector ready");
    let result = connector.wait().await;
    shutdown.cancel();
    let served = server.await.context("the HTTP server task failed")?;
    db.close().await;
    result?;
    served.context("the HTTP server failed")?;
    Ok(())
}

/// Waits for both roles; when either stops (shutdown or failure) the other
/// is told to stop too.
async fn run_both(gateway: RunningGateway, connector: RunningConnector, shutdown: &CancellationToken) -> anyhow::Result<()> {
    let (gateway_result, connector_result) = tokio::join!(
        async {
            let r = gateway.wait().await;
            shutdown.cancel();
            r
        },
        async {
            let r = connector.wait().await;
            shutdown.cancel();
            r
        }
    );
    gateway_result.context("the gateway failed")?;
    connector_result.context("the connector failed")?;
    Ok(())
}

/// Tells the person who ran `switchboard up` where everything is, using the
/// addresses the gateway actually bound (port 0 becomes a real port).
fn print_banner(config: &Config, gateway: &RunningGateway) {
    let addr = |a: Option<std::net::SocketAddr>| a.map(|a| a.to_string()).unwrap_or_else(|| "off".to_owned());
    let http = format!("http://{}", gateway.http);
    let admin = match &config.http.admin_token {
        Some(_) => format!("{http}/admin/v1 (bearer token from http.admin_token)"),
        None => "disabled (set http.admin_token to enable it)".to_owned(),
    };
    let database = match config.sqlite_path() {
        Some(path) => format!("{} (SQLite)", path.display()),
        None => switchboard_store::redact(&config.database_url()),
    };
    let events = match config.events.log {
        EventLogKind::Outbox => "outbox table of the database".to_owned(),
        EventLogKind::Kafka => format!("Kafka topic {} at {}", config.kafka.topic, config.kafka.brokers),
    };
    let salesforce = match &config.salesforce {
        Some(sf) => format!("configured: {} as {} ({})", sf.login_url, sf.integration_user(), sf.auth.as_str()),
        None => "not configured: call events are kept and sync once [salesforce] is set".to_owned(),
    };
    let banner = format!(
        "Switchboard {version} is up (gateway + connector)\n\
         \x20 SIP         udp {udp}, tcp {tcp}{tls}\n\
         \x20 HTTP        {http}  (metrics {http}/metrics, health {http}/healthz)\n\
         \x20 Admin API   {admin}\n\
         \x20 Data        {data_dir}\n\
         \x20 Database    {database}\n\
         \x20 Recordings  {recordings}\n\
         \x20 Events      {events}\n\
         \x20 Salesforce  {salesforce}\n\
         Press Ctrl-C to stop.\n",
        version = env!("CARGO_PKG_VERSION"),
        udp = addr(gateway.sip_udp),
        tcp = addr(gateway.sip_tcp),
        // TLS is off by default: named only when it listens.
        tls = gateway.sip_tls.map(|a| format!(", tls {a}")).unwrap_or_default(),
        data_dir = config.data_dir.display(),
        recordings = config.recordings_summary(),
    );
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(banner.as_bytes());
    let _ = out.flush();
}
