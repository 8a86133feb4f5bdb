//! The `switchboard` binary: reads the configuration, then runs one role or
//! operator task. It holds no telephony or Salesforce logic; it only wires
//! the gateway and connector crates to the store and to the process
//! (configuration, logging, signals, exit status).
//!
//! Exit status: 0 on success or after a graceful shutdown, 2 for a bad
//! command line or configuration, 1 for any other failure.

mod admin;
mod cli;
mod config;
mod logging;
mod replay;
mod roles;
mod signals;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command, ConfigCommand};
use crate::config::{Config, ConfigProblem};

/// Status for configuration errors, the same clap uses for usage errors.
const EXIT_CONFIG: u8 = 2;
/// Status for every other failure.
const EXIT_FAILURE: u8 = 1;

/// Log level of one-shot commands (`migrate`, `admin`, `replay`, `config`) unless
/// RUST_LOG says otherwise: their output is what they print.
const ONE_SHOT_LOG_LEVEL: &str = "warn";

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            if error.downcast_ref::<ConfigProblem>().is_some() {
                ExitCode::from(EXIT_CONFIG)
            } else {
                ExitCode::from(EXIT_FAILURE)
            }
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let mut config = config::load(cli.config.as_deref())?;
    if let Command::Up(args) = &cli.command {
        if let Some(sip) = args.sip {
            config.sip.udp = Some(sip);
            config.sip.tcp = Some(sip);
        }
        if let Some(http) = args.http {
            config.http.listen = http;
        }
        if let Some(dir) = &args.data_dir {
            config.data_dir = dir.clone();
        }
    }
    config.validate()?;

    let role = matches!(cli.command, Command::Up(_) | Command::Gateway | Command::Connector);
    let level = if role { config.log.level.clone() } else { ONE_SHOT_LOG_LEVEL.to_owned() };
    logging::init(&level, config.log.format)?;

    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        match cli.command {
            Command::Up(_) => roles::up(config).await,
            Command::Gateway => roles::gateway(config).await,
            Command::Connector => roles::connector(config).await,
            Command::Migrate => roles::migrate(&config).await,
            Command::Admin(args) => admin::run(&config, args).await,
            Command::Replay(args) => replay::run(&config, args).await,
            Command::Config { command: ConfigCommand::Check } => config_check(&config),
        }
    })
}

/// `switchboard config check`: the configuration is valid (or `run` has
/// already failed with status 2); print what is in effect.
fn config_check(config: &Config) -> anyhow::Result<()> {
    let text = config.to_redacted_toml()?;
    println!("# The configuration is valid. Effective values, secrets redacted:\n");
    print!("{text}");
    Ok(())
}
