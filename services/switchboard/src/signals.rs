//! Graceful shutdown: SIGINT or SIGTERM cancels the token every role
//! watches; a second signal ends the process at once for an operator who
//! does not want to wait for calls to be hung up.

use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;

/// Exit status after a second, forcing signal (128 + SIGINT).
const FORCED_EXIT: i32 = 130;

/// Starts listening for SIGINT and SIGTERM. The handlers are registered
/// before this returns, so a signal sent right after startup is never lost
/// to the default action (which would kill the process without cleanup).
pub fn cancel_on_signal(shutdown: CancellationToken) -> std::io::Result<()> {
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    tokio::spawn(async move {
        let name = tokio::select! {
            _ = interrupt.recv() => "SIGINT",
            _ = terminate.recv() => "SIGTERM",
        };
        tracing::info!(signal = name, "shutting down; send the signal again to stop immediately");
        shutdown.cancel();
        tokio::select! {
            _ = interrupt.recv() => {},
            _ = terminate.recv() => {},
        }
        tracing::warn!("second signal: stopping immediately");
        std::process::exit(FORCED_EXIT);
    });
    Ok(())
}
