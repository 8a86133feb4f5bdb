//! The scratch space of one test and the report of its failure.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use anyhow::Context as _;

/// Set to 1 to keep the scratch directory of a passing test.
pub const KEEP_VAR: &str = "SWITCHBOARD_E2E_KEEP";

/// How many trailing lines of each log a failure prints.
const LOG_TAIL_LINES: usize = 150;

/// One test's directory, the log files of the processes it started, and
/// whether it failed.
///
/// Declare it first in a test so that it is dropped last: by then every
/// process of the test has been stopped and its log is complete. On drop, a
/// failed test (a panic, or [`TestContext::check`] given an error) keeps the
/// directory and prints where it is and the tail of each log; a passing test
/// removes it.
pub struct TestContext {
    name: String,
    started: std::time::Instant,
    dir: Option<tempfile::TempDir>,
    logs: Mutex<Vec<(String, PathBuf)>>,
    failed: AtomicBool,
}

impl TestContext {
    /// Creates the scratch directory of the test called `name`.
    pub fn new(name: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix(&format!("switchboard-e2e-{name}-"))
            .tempdir()
            .expect("cannot create the test's scratch directory under the temp dir");
        Self {
            name: name.to_owned(),
            started: std::time::Instant::now(),
            dir: Some(dir),
            logs: Mutex::new(Vec::new()),
            failed: AtomicBool::new(false),
        }
    }

    /// The scratch directory; everything the test writes goes below it.
    pub fn dir(&self) -> &Path {
        self.dir.as_ref().expect("scratch directory present until drop").path()
    }

    /// Creates (if needed) and returns `<scratch>/<name>`.
    pub fn subdir(&self, name: &str) -> anyhow::Result<PathBuf> {
        let path = self.dir().join(name);
        std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(path)
    }

    /// Opens a new log file for a process called `label` and registers it
    /// for the failure report. Labels may repeat (a restarted process); each
    /// call gets its own file.
    pub fn log_file(&self, label: &str) -> anyhow::Result<(PathBuf, File)> {
        let logs_dir = self.subdir("logs")?;
        let mut logs = self.logs.lock().expect("log registry poisoned");
        let safe: String = label.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).collect();
        let path = logs_dir.join(format!("{:02}-{safe}.log", logs.len()));
        let file = File::create(&path).with_context(|| format!("creating log file {}", path.display()))?;
        logs.push((label.to_owned(), path.clone()));
        Ok((path, file))
    }

    /// Registers a log file written by a program itself (SIPp's traces, say)
    /// so that a failure prints it too.
    pub fn register_log(&self, label: &str, path: PathBuf) {
        self.logs.lock().expect("log registry poisoned").push((label.to_owned(), path));
    }

    /// Notes progress with the time since the test started; the runner
    /// shows these lines with a failure, which tells where the time went.
    pub fn step(&self, what: impl std::fmt::Display) {
        eprintln!("[{} +{:6.1}s] {what}", self.name, self.started.elapsed().as_secs_f64());
    }

    /// Marks the test failed when `result` is an error and returns it
    /// unchanged; use it on the result of a test body that returns
    /// `anyhow::Result` so the logs are printed for errors as for panics.
    pub fn check<T>(&self, result: anyhow::Result<T>) -> anyhow::Result<T> {
        if result.is_err() {
            self.failed.store(true, Ordering::SeqCst);
        }
        result
    }

    fn report(&self) {
        let logs = self.logs.lock().map(|l| l.clone()).unwrap_or_default();
        eprintln!("\n===== test `{}` failed; its logs follow =====", self.name);
        for (label, path) in logs {
            eprintln!("----- {label}: {} (last {LOG_TAIL_LINES} lines) -----", path.display());
            match File::open(&path) {
                Ok(f) => {
                    let lines: Vec<String> = BufReader::new(f).lines().map_while(Result::ok).collect();
                    let start = lines.len().saturating_sub(LOG_TAIL_LINES);
                    for line in &lines[start..] {
                        eprintln!("{line}");
                    }
                }
                Err(e) => eprintln!("(cannot read: {e})"),
            }
        }
    }
}

impl Drop for TestContext {
    fn drop(&mut self) {
        let failed = std::thread::panicking() || self.failed.load(Ordering::SeqCst);
        if failed {
            self.report();
        }
        // SWITCHBOARD_E2E_KEEP=1 keeps the directory of passing tests too,
        // to read the logs of a run that worked.
        if failed || std::env::var_os(KEEP_VAR).is_some_and(|v| v == "1") {
            if let Some(dir) = self.dir.take() {
                let kept = dir.keep();
                eprintln!("===== scratch directory of `{}` kept at {} =====", self.name, kept.display());
            }
        }
    }
}
