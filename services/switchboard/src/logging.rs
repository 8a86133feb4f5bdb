//! Logs go to standard error through `tracing`, as text or JSON, so
//! standard output stays free for what a command prints (the startup
//! banner, `--json` results, the effective configuration).

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::{ConfigProblem, LogFormat};

/// Installs the global subscriber. `RUST_LOG`, when set, replaces
/// `default_level` (the configured `log.level`, or a quieter level for
/// one-shot commands).
pub fn init(default_level: &str, format: LogFormat) -> Result<(), ConfigProblem> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(directives) if !directives.trim().is_empty() => EnvFilter::try_new(&directives).map_err(|e| {
            ConfigProblem::other(format!("RUST_LOG={directives:?} is not a log filter ({e}); use e.g. info or info,switchboard_gateway=debug"))
        })?,
        _ => EnvFilter::try_new(default_level)
            .map_err(|e| ConfigProblem::invalid("log.level", &format!("a level or filter ({e})")))?,
    };
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    // A subscriber may already be set (tests); keeping it is harmless.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    Ok(())
}
