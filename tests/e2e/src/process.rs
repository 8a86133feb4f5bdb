//! Child processes of a test: logged to a file, stopped on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;

use crate::TestContext;

/// A running program started by a test.
///
/// Its stdout and stderr go to one log file registered with the test's
/// [`TestContext`]. Dropping the handle kills the process (SIGKILL) and
/// reaps it, so no server outlives its test, even when the test panics.
pub struct Process {
    label: String,
    child: Option<Child>,
    log: PathBuf,
}

impl Process {
    /// Starts `command` with its output going to a new log file named after
    /// `label`. The command's stdin is closed.
    pub fn spawn(ctx: &TestContext, label: &str, mut command: Command) -> anyhow::Result<Self> {
        let (log, file) = ctx.log_file(label)?;
        let stderr = file.try_clone().context("duplicating the log file handle")?;
        command.stdin(Stdio::null()).stdout(Stdio::from(file)).stderr(Stdio::from(stderr));
        let child = command.spawn().with_context(|| format!("starting {label}: {command:?}"))?;
        Ok(Self { label: label.to_owned(), child: Some(child), log })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    /// The log file of the process.
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// An error if the process has already exited: used while waiting for a
    /// server to become ready, so that a crash is reported at once with the
    /// end of its log instead of as a timeout.
    pub fn ensure_running(&mut self) -> anyhow::Result<()> {
        let child = self.child.as_mut().context("process already stopped")?;
        if let Some(status) = child.try_wait()? {
            anyhow::bail!(
                "{} exited early with {status}; log {}:\n{}",
                self.label,
                self.log.display(),
                tail(&self.log, 40)
            );
        }
        Ok(())
    }

    /// Waits up to `timeout` for the process to exit by itself and returns
    /// its status; on timeout the process is killed and an error returned.
    pub async fn wait(&mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            let child = self.child.as_mut().context("process already stopped")?;
            if let Some(status) = child.try_wait()? {
                self.child = None;
                return Ok(status);
            }
            if Instant::now() >= deadline {
                self.kill();
                anyhow::bail!("{} did not finish within {timeout:?}; log {}", self.label, self.log.display());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Asks the process to stop (SIGTERM) and waits up to `timeout` for it;
    /// kills it if it does not. Returns its exit status when it stopped by
    /// itself.
    pub async fn stop(&mut self, timeout: Duration) -> anyhow::Result<Option<ExitStatus>> {
        let Some(child) = self.child.as_mut() else { return Ok(None) };
        if child.try_wait()?.is_none() {
            let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
        }
        match self.wait(timeout).await {
            Ok(status) => Ok(Some(status)),
            Err(_) => Ok(None),
        }
    }

    /// Kills the process and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs `command` to completion (at most `timeout`) with its output in a log
/// file of the test, and returns its status and output.
pub async fn run(
    ctx: &TestContext,
    label: &str,
    command: Command,
    timeout: Duration,
) -> anyhow::Result<(ExitStatus, String)> {
    let mut process = Process::spawn(ctx, label, command)?;
    let status = process.wait(timeout).await?;
    let output = std::fs::read_to_string(process.log()).unwrap_or_default();
    Ok((status, output))
}

/// The result of a command run to completion with its streams kept apart.
pub struct Captured {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `command` to completion (at most `timeout`) keeping stdout and
/// stderr apart (stdout of `switchboard admin … --json` is parsed); both are
/// also written to a log file of the test.
pub async fn run_captured(
    ctx: &TestContext,
    label: &str,
    command: Command,
    timeout: Duration,
) -> anyhow::Result<Captured> {
    let (log, _) = ctx.log_file(label)?;
    let description = format!("{command:?}");
    let mut command = tokio::process::Command::from(command);
    command.stdin(Stdio::null()).kill_on_drop(true);
    let output = tokio::time::timeout(timeout, command.output())
        .await
        .with_context(|| format!("{label} did not finish within {timeout:?}: {description}"))?
        .with_context(|| format!("starting {label}: {description}"))?;
    let captured = Captured {
        status: output.status,
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    };
    let record = format!(
        "$ {description}\n{}\n--- stdout ---\n{}\n--- stderr ---\n{}\n",
        captured.status, captured.stdout, captured.stderr
    );
    std::fs::write(&log, record).with_context(|| format!("writing {}", log.display()))?;
    Ok(captured)
}

/// The last `lines` lines of a log file, for error messages.
pub fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
