//! `salesforce-emulator`: serves an emulated Salesforce org for docker-compose
//! and manual runs of Switchboard.
//!
//! `salesforce-emulator credentials --out DIR` writes a throwaway key pair
//! (`private-key.pem`, `certificate.pem`) to configure both sides with; the
//! default command serves the org, trusting `--certificate`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use salesforce_emulator::{
    Browser, ConnectedApp, Emulator, EmulatorConfig, TestCredentials, UserSeed,
};
use tracing_subscriber::EnvFilter;

/// Command line of the emulator.
#[derive(Parser, Debug)]
#[command(
    name = "salesforce-emulator",
    version,
    about = "An emulated Salesforce org (OAuth JWT bearer, client credentials and web-server flows, REST API) for testing Switchboard"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve the emulated org (the default).
    Serve(Box<ServeArgs>),
    /// Write a fresh RSA private key and self-signed certificate to a directory.
    Credentials {
        /// Directory to write private-key.pem and certificate.pem into.
        #[arg(long)]
        out: PathBuf,
    },
}

/// Options of the org to serve.
#[derive(Args, Debug, Clone)]
struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "SF_EMULATOR_LISTEN", default_value = "127.0.0.1:8443")]
    listen: SocketAddr,
    /// URL clients reach the emulator at, when not the listening address.
    #[arg(long, env = "SF_EMULATOR_PUBLIC_URL")]
    public_url: Option<String>,
    /// Consumer key of the connected app (the JWT `iss`).
    #[arg(long, env = "SF_EMULATOR_CONSUMER_KEY")]
    consumer_key: Option<String>,
    /// Username of the integration user (the JWT `sub`).
    #[arg(long, env = "SF_EMULATOR_USERNAME")]
    username: Option<String>,
    /// Id of the integration user (005…).
    #[arg(long, env = "SF_EMULATOR_USER_ID")]
    user_id: Option<String>,
    /// PEM certificate whose public key verifies JWT assertions.
    #[arg(long, env = "SF_EMULATOR_CERTIFICATE")]
    certificate: Option<PathBuf>,
    /// Session lifetime in seconds.
    #[arg(long, env = "SF_EMULATOR_TOKEN_TTL_SECS", default_value_t = 7200)]
    token_ttl_secs: u64,
    /// REST calls allowed per day.
    #[arg(long, env = "SF_EMULATOR_DAILY_API_LIMIT", default_value_t = 15_000)]
    daily_api_limit: u64,
    /// Text(255) external-id field on Task (repeatable).
    #[arg(long = "task-external-id-field", default_values_t = ["Switchboard_Key__c".to_owned()])]
    task_external_id_fields: Vec<String>,
    /// Text(255) external-id field on Case (repeatable).
    #[arg(long = "case-external-id-field", default_values_t = ["Switchboard_Assignment_Id__c".to_owned()])]
    case_external_id_fields: Vec<String>,
    /// Another user who may own records and log in, as USERNAME or USERNAME=005ID (repeatable).
    #[arg(long = "user")]
    users: Vec<String>,
    /// Consumer secret of the connected app (random when not given; logged at start).
    #[arg(long, env = "SF_EMULATOR_CONSUMER_SECRET")]
    consumer_secret: Option<String>,
    /// Callback URL of the connected app for the web-server flow (repeatable).
    #[arg(long = "callback-url")]
    callback_urls: Vec<String>,
    /// Whether the web-server flow's code exchange and refresh need the consumer secret.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    require_secret: bool,
    /// Whether authorization requests need a PKCE code_challenge.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    require_pkce: bool,
    /// Answer each refresh with a new refresh token, invalidating the used one.
    #[arg(long)]
    rotate_refresh_tokens: bool,
    /// Enable the client credentials flow on the connected app, its tokens
    /// acting as this user (the app's "Run As" user; the integration user or
    /// one given with --user).
    #[arg(long, env = "SF_EMULATOR_CLIENT_CREDENTIALS_USER")]
    client_credentials_user: Option<String>,
    /// Username signed in to the emulated browser of the authorization endpoint.
    #[arg(long, env = "SF_EMULATOR_BROWSER_USER")]
    browser_user: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Credentials { out }) => write_credentials(&out),
        Some(Command::Serve(args)) => serve(*args).await,
        None => serve(cli.serve).await,
    }
}

fn write_credentials(out: &PathBuf) -> anyhow::Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let credentials = TestCredentials::generate()?;
    let key = out.join("private-key.pem");
    let certificate = out.join("certificate.pem");
    std::fs::write(&key, &credentials.private_key_pem)
        .with_context(|| format!("writing {}", key.display()))?;
    std::fs::write(&certificate, &credentials.certificate_pem)
        .with_context(|| format!("writing {}", certificate.display()))?;
    println!("{}\n{}", key.display(), certificate.display());
    Ok(())
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let path = args.certificate.context("--certificate <PEM file> is required to serve (make one with `salesforce-emulator credentials --out DIR`)")?;
    let pem = std::fs::read_to_string(&path)
        .with_context(|| format!("reading the certificate {}", path.display()))?;
    let mut config = EmulatorConfig::new(pem);
    if let Some(key) = args.consumer_key {
        config.consumer_key = key;
    }
    if let Some(username) = args.username {
        config.username = username;
    }
    if let Some(id) = args.user_id {
        config.user_id = id;
    }
    config.public_url = args.public_url;
    config.token_ttl = Duration::from_secs(args.token_ttl_secs);
    config.daily_api_limit = args.daily_api_limit;
    config.task_external_id_fields = args.task_external_id_fields;
    config.case_external_id_fields = args.case_external_id_fields;
    config.extra_users = args
        .users
        .iter()
        .map(|u| match u.split_once('=') {
            Some((username, id)) => UserSeed {
                username: username.to_owned(),
                id: Some(id.to_owned()),
            },
            None => UserSeed {
                username: u.clone(),
                id: None,
            },
        })
        .collect();
    let mut app = ConnectedApp::new(config.consumer_key.clone());
    if let Some(secret) = args.consumer_secret {
        app.consumer_secret = secret;
    }
    app.callback_urls = args.callback_urls;
    app.require_secret = args.require_secret;
    app.require_secret_for_refresh = args.require_secret;
    app.require_pkce = args.require_pkce;
    app.rotate_refresh_tokens = args.rotate_refresh_tokens;
    if let Some(run_as) = args.client_credentials_user {
        app = app.with_client_credentials(run_as);
    }
    config.connected_apps = vec![app];
    let consumer_key = config.consumer_key.clone();
    let username = config.username.clone();
    let emulator = Emulator::start(config, args.listen).await?;
    if let Some(user) = args.browser_user {
        emulator.set_browser(Browser {
            username: Some(user),
            deny: false,
        })?;
    }
    tracing::info!(url = %emulator.url(), %consumer_key, consumer_secret = %emulator.consumer_secret(), %username, user_id = %emulator.user_id(), "serving the emulated org; stop with Ctrl-C");
    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    emulator.shutdown().await;
    Ok(())
}
