//! A real Chromium, driven from the tests: the softphone as agents use it.
//!
//! The softphone is a web page; what it does with the microphone, WebRTC and
//! Salesforce's Open CTI can only be shown by a browser running it. The tests
//! drive Debian's Chromium through Playwright (npm `playwright-core`), which
//! is a Node library: `tests/browser/driver.mjs` serves Playwright's calls as
//! JSON lines on its stdin and stdout, and this module is its client.
//!
//! Each [`Browser`] is its own Chromium with a fresh profile and its own fake
//! microphone, a WAV file played as the capture device (see [`speech_wav`]),
//! so two of them are two agents on two computers. A [`Page`] is a tab of it:
//! navigation, clicks, typing, waiting for elements or for a condition in the
//! page, JavaScript evaluated in it, screenshots kept for CI under
//! [`artefact_root`], what it logged, and its WebRTC statistics
//! ([`Page::rtc_stats`]).
//!
//! Every command has a timeout, enforced by Playwright and reported as a
//! [`CommandError`] naming the command, the selector and the timeout; the
//! client adds a margin on top so that a hung driver is an error too, never a
//! hung test. The driver's log (its own lines, Chromium's output, and every
//! console message and uncaught error of the pages) is one of the test's logs,
//! printed when the test fails. Dropping the last handle of a browser closes
//! it; no Chromium outlives its test.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, ChildStdin, ChildStdout};
use tokio::sync::oneshot;

use crate::ports::LOCALHOST;
use crate::process::{run_captured, tail};
use crate::wav::{WavSummary, AUDIBLE_RMS};
use crate::TestContext;

/// Path of the Chromium binary (default `/usr/bin/chromium`, Debian's).
pub const CHROMIUM: &str = "SWITCHBOARD_TEST_CHROMIUM";
/// Path of the `node` binary (default: `node` on the PATH); Node 20 or newer.
pub const NODE: &str = "SWITCHBOARD_TEST_NODE";
/// Path of `driver.mjs` (default: `tests/browser/driver.mjs` of this
/// workspace), next to its `node_modules` installed by `npm ci`.
pub const DRIVER: &str = "SWITCHBOARD_TEST_BROWSER_DRIVER";
/// Where screenshots go (default `target/test-artefacts` of this workspace):
/// `<root>/browser/<test name>/`. A directory CI keeps.
pub const ARTEFACTS: &str = "SWITCHBOARD_TEST_ARTEFACTS";

/// Debian's Chromium.
const DEFAULT_CHROMIUM: &str = "/usr/bin/chromium";
/// How long a page command may take unless told otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Starting Chromium takes about a second here; more on a loaded machine.
const LAUNCH_TIMEOUT: Duration = Duration::from_secs(30);
/// Starting Node and loading Playwright.
const PING_TIMEOUT: Duration = Duration::from_secs(20);
/// What the driver gets beyond a command's own timeout to answer: the
/// command's timeout is Playwright's, and its error says more than ours.
const REPLY_MARGIN: Duration = Duration::from_secs(5);
/// How long closing the browsers may take when the handles are dropped
/// before the driver and Chromium are killed.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);

/// A command the driver ran and that failed: Playwright timed out, a selector
/// matched nothing or several elements, the page threw… The message names
/// the command, the selector and the timeout. Reach it with
/// `error.downcast_ref::<CommandError>()`.
#[derive(Debug, Clone)]
pub struct CommandError {
    /// The driver's command, e.g. `wait_for`.
    pub command: String,
    /// What went wrong, as the driver tells it.
    pub message: String,
    /// The command's timeout passed (rather than it failing outright).
    pub timed_out: bool,
}

impl fmt::Display for CommandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "browser: {}", self.message)
    }
}

impl std::error::Error for CommandError {}

/// The state [`Page::wait_for`] waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitState {
    /// In the DOM.
    Attached,
    /// Not in the DOM (any more).
    Detached,
    /// In the DOM, with a non-empty box and not `visibility: hidden`.
    Visible,
    /// Not visible, or not in the DOM.
    Hidden,
}

impl WaitState {
    fn as_str(self) -> &'static str {
        match self {
            WaitState::Attached => "attached",
            WaitState::Detached => "detached",
            WaitState::Visible => "visible",
            WaitState::Hidden => "hidden",
        }
    }
}

// --- the driver process ----------------------------------------------------------

#[derive(Deserialize)]
struct Reply {
    id: Option<u64>,
    ok: bool,
    #[serde(default)]
    value: Value,
    #[serde(default)]
    error: String,
    #[serde(default)]
    timeout: bool,
}

#[derive(Default)]
struct Pending {
    waiting: HashMap<u64, oneshot::Sender<Reply>>,
    /// The driver's stdout has closed: no reply will come any more.
    closed: bool,
}

/// One `node driver.mjs` and its requests in flight.
struct Driver {
    stdin: tokio::sync::Mutex<Option<ChildStdin>>,
    pending: Arc<Mutex<Pending>>,
    next_id: AtomicU64,
    child: Mutex<Option<Child>>,
    /// The Chromiums it started: their process groups, killed, and their
    /// profiles, removed, if it hangs.
    browsers: Mutex<Vec<(Option<u32>, Option<PathBuf>)>>,
    log: PathBuf,
    reader: tokio::task::JoinHandle<()>,
}

impl Driver {
    async fn start(ctx: &TestContext) -> anyhow::Result<Self> {
        let node = node_binary()?;
        let driver = driver_script()?;
        let (log, file) = ctx.log_file("browser driver")?;
        let mut command = tokio::process::Command::new(&node);
        command
            .arg(&driver)
            .current_dir(driver.parent().unwrap_or(Path::new(".")))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(file));
        let mut child = command
            .spawn()
            .with_context(|| format!("starting the browser driver: {} {}", node.display(), driver.display()))?;
        let stdin = child.stdin.take().context("the driver's stdin")?;
        let stdout = child.stdout.take().context("the driver's stdout")?;
        let pending = Arc::new(Mutex::new(Pending::default()));
        let reader = tokio::spawn(read_replies(stdout, pending.clone()));
        let driver = Self {
            stdin: tokio::sync::Mutex::new(Some(stdin)),
            pending,
            next_id: AtomicU64::new(1),
            child: Mutex::new(Some(child)),
            browsers: Mutex::new(Vec::new()),
            log,
            reader,
        };
        // A driver that cannot start (no playwright-core, an old node) exits
        // at once: say so now, with its log, rather than at the first command.
        driver.request("ping", json!({}), PING_TIMEOUT).await.context("the browser driver did not start")?;
        Ok(driver)
    }

    /// Sends `cmd` with `params` and waits for its reply: the driver's own
    /// `timeout` (milliseconds) is `timeout`; the driver gets a margin beyond
    /// it before the request counts as unanswered.
    async fn request(&self, cmd: &str, mut params: Value, timeout: Duration) -> anyhow::Result<Value> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let fields = params.as_object_mut().expect("request parameters are a JSON object");
        fields.insert("id".into(), id.into());
        fields.insert("cmd".into(), cmd.into());
        fields.entry("timeout").or_insert_with(|| (timeout.as_millis() as u64).into());
        let (tx, rx) = oneshot::channel();
        {
            let mut pending = self.pending.lock().expect("pending requests poisoned");
            if pending.closed {
                return Err(self.exited(cmd));
            }
            pending.waiting.insert(id, tx);
        }
        let mut line = serde_json::to_string(&params)?;
        line.push('\n');
        {
            let mut stdin = self.stdin.lock().await;
            let stdin = stdin.as_mut().context("the browser driver is closed")?;
            if stdin.write_all(line.as_bytes()).await.is_err() || stdin.flush().await.is_err() {
                return Err(self.exited(cmd));
            }
        }
        match tokio::time::timeout(timeout + REPLY_MARGIN, rx).await {
            Ok(Ok(reply)) if reply.ok => Ok(reply.value),
            Ok(Ok(reply)) => {
                Err(CommandError { command: cmd.to_owned(), message: reply.error, timed_out: reply.timeout }.into())
            }
            Ok(Err(_)) => Err(self.exited(cmd)),
            Err(_) => {
                self.pending.lock().expect("pending requests poisoned").waiting.remove(&id);
                anyhow::bail!(
                    "the browser driver did not answer `{cmd}` within {:?}; its log {}:\n{}",
                    timeout + REPLY_MARGIN,
                    self.log.display(),
                    tail(&self.log, 30)
                )
            }
        }
    }

    /// The error for a request the driver can no longer answer.
    fn exited(&self, cmd: &str) -> anyhow::Error {
        let status: Option<ExitStatus> =
            self.child.lock().ok().and_then(|mut c| c.as_mut().and_then(|c| c.try_wait().ok().flatten()));
        let status = status.map(|s| s.to_string()).unwrap_or_else(|| "closed its output".to_owned());
        anyhow::anyhow!(
            "the browser driver {status} before answering `{cmd}`; its log {}:\n{}",
            self.log.display(),
            tail(&self.log, 40)
        )
    }
}

async fn read_replies(stdout: ChildStdout, pending: Arc<Mutex<Pending>>) {
    let mut lines = BufReader::new(stdout).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        match serde_json::from_str::<Reply>(&line) {
            Ok(reply) => {
                let waiting = reply.id.and_then(|id| pending.lock().ok()?.waiting.remove(&id));
                match waiting {
                    Some(tx) => {
                        let _ = tx.send(reply);
                    }
                    // A request given up on (timed out) or a reply to a line
                    // the driver could not read.
                    None => eprintln!("browser driver: unexpected reply {line}"),
                }
            }
            Err(e) => eprintln!("browser driver: not a reply ({e}): {line}"),
        }
    }
    // Dropping the senders tells every waiting request the driver is gone.
    let mut pending = pending.lock().unwrap_or_else(|e| e.into_inner());
    pending.closed = true;
    pending.waiting.clear();
}

impl Drop for Driver {
    fn drop(&mut self) {
        // The end of its input tells the driver to close every browser
        // (Playwright waits for Chromium to exit) and to exit itself.
        drop(self.stdin.get_mut().take());
        let child = self.child.get_mut().map(Option::take).unwrap_or_else(|e| e.into_inner().take());
        if let Some(mut child) = child {
            // Drop cannot await: poll the exit, with a deadline.
            let deadline = Instant::now() + SHUTDOWN_TIMEOUT;
            let exited = loop {
                match child.try_wait() {
                    Ok(Some(_)) => break true,
                    Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
                    _ => break false,
                }
            };
            if !exited {
                eprintln!(
                    "browser driver did not exit within {SHUTDOWN_TIMEOUT:?} of its input closing; \
                     killing it and its browsers (log {})",
                    self.log.display()
                );
                let _ = child.start_kill();
                // Chromium runs in process groups of its own, which killing
                // Node does not reach.
                for (group, profile) in self.browsers.get_mut().map(std::mem::take).unwrap_or_default() {
                    if let Some(group) = group {
                        let _ = std::process::Command::new("kill").args(["-KILL", "--", &format!("-{group}")]).status();
                    }
                    if let Some(profile) = profile {
                        let _ = std::fs::remove_dir_all(profile);
                    }
                }
                let deadline = Instant::now() + SHUTDOWN_TIMEOUT;
                while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
        self.reader.abort();
    }
}

fn node_binary() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os(NODE).filter(|v| !v.is_empty()) {
        let path = PathBuf::from(path);
        anyhow::ensure!(path.is_file(), "{NODE}={} does not name an existing file", path.display());
        return Ok(path);
    }
    on_path("node").with_context(|| {
        format!(
            "node is not on the PATH: the browser tests need Node 20 or newer \
             (set {NODE}, or run them with `scripts/test`)"
        )
    })
}

fn driver_script() -> anyhow::Result<PathBuf> {
    let path = match std::env::var_os(DRIVER).filter(|v| !v.is_empty()) {
        Some(path) => PathBuf::from(path),
        None => workspace_root().join("tests/browser/driver.mjs"),
    };
    anyhow::ensure!(path.is_file(), "the browser driver {} does not exist (set {DRIVER})", path.display());
    let playwright = path.with_file_name("node_modules/playwright-core/package.json");
    anyhow::ensure!(
        playwright.is_file(),
        "{} is missing: run `npm ci` in {} (`scripts/test` does)",
        playwright.display(),
        path.parent().unwrap_or(Path::new(".")).display()
    );
    Ok(path)
}

fn chromium_binary() -> anyhow::Result<PathBuf> {
    match std::env::var_os(CHROMIUM).filter(|v| !v.is_empty()) {
        Some(path) => {
            let path = PathBuf::from(path);
            anyhow::ensure!(path.is_file(), "{CHROMIUM}={} does not name an existing file", path.display());
            Ok(path)
        }
        None => {
            let path = PathBuf::from(DEFAULT_CHROMIUM);
            anyhow::ensure!(
                path.is_file(),
                "{DEFAULT_CHROMIUM} is missing and {CHROMIUM} is not set: \
                 `apt-get install chromium` (`scripts/test` does)"
            );
            Ok(path)
        }
    }
}

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .and_then(|paths| std::env::split_paths(&paths).map(|p| p.join(name)).find(|p| p.is_file()))
}

fn workspace_root() -> PathBuf {
    // tests/e2e → the workspace.
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().and_then(Path::parent).unwrap_or(manifest).to_path_buf()
}

/// Where the tests keep files for after the run (screenshots): `$`[`ARTEFACTS`]
/// or `target/test-artefacts` of the workspace. Outside the scratch
/// directory, which a passing test removes.
pub fn artefact_root() -> PathBuf {
    match std::env::var_os(ARTEFACTS).filter(|v| !v.is_empty()) {
        Some(path) => PathBuf::from(path),
        None => workspace_root().join("target/test-artefacts"),
    }
}

/// The test's name, as given to [`TestContext::new`]: the context keeps it
/// to itself, but its scratch directory is `switchboard-e2e-<name>-<random>`.
fn test_name(ctx: &TestContext) -> String {
    let dir = ctx.dir().file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let name = dir.strip_prefix("switchboard-e2e-").and_then(|rest| rest.rsplit_once('-')).map(|(name, _)| name);
    match name {
        Some(name) if !name.is_empty() => name.to_owned(),
        _ => "unnamed-test".to_owned(),
    }
}

// --- browsers and pages -------------------------------------------------------------

/// A Chromium of its own, with a fresh profile and a fake microphone.
///
/// Dropping the handle (and every [`Page`] of it) closes the browser.
pub struct Browser {
    driver: Arc<Driver>,
    id: u64,
    version: String,
    artefacts: PathBuf,
}

impl Browser {
    /// Starts a headless Chromium whose microphone plays `fake_mic_wav` (a
    /// 48 kHz mono WAV, e.g. from [`speech_wav`]) in a loop, and which grants
    /// pages the microphone without asking and lets them play audio
    /// unprompted. Its screenshots go to `<`[`artefact_root`]`>/browser/<test
    /// name>/`.
    pub async fn launch(ctx: &TestContext, fake_mic_wav: &Path) -> anyhow::Result<Self> {
        Self::launch_with_args(ctx, fake_mic_wav, &[]).await
    }

    /// [`launch`](Self::launch) with more Chromium switches, e.g.
    /// `--webrtc-ip-handling-policy=disable_non_proxied_udp` for a browser
    /// whose WebRTC may only use TCP.
    pub async fn launch_with_args(ctx: &TestContext, fake_mic_wav: &Path, args: &[&str]) -> anyhow::Result<Self> {
        let wav = std::fs::canonicalize(fake_mic_wav)
            .with_context(|| format!("the fake microphone WAV {} does not exist", fake_mic_wav.display()))?;
        let chromium = chromium_binary()?;
        let driver = Driver::start(ctx).await?;
        // The page is made for Lightning's utility bar: screenshots show it
        // at that size.
        let params = json!({ "fake_audio": wav, "executable": chromium, "args": args, "viewport": { "width": 400, "height": 640 } });
        let launched = driver.request("launch", params, LAUNCH_TIMEOUT).await?;
        let id = launched["browser"].as_u64().context("`launch` answered no browser id")?;
        let group = launched["process_group"].as_u64().map(|g| g as u32);
        let profile = launched["user_data_dir"].as_str().map(PathBuf::from);
        driver.browsers.lock().expect("browser list poisoned").push((group, profile));
        let version = launched["version"].as_str().unwrap_or_default().to_owned();
        ctx.step(format!("Chromium {version} started, microphone {}", wav.display()));
        let artefacts = artefact_root().join("browser").join(test_name(ctx));
        Ok(Self { driver: Arc::new(driver), id, version, artefacts })
    }

    /// Chromium's version, e.g. `156.0.8078.108`.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Where this test's screenshots go.
    pub fn artefact_dir(&self) -> &Path {
        &self.artefacts
    }

    /// Opens a tab at `url` and waits for its `load` event.
    pub async fn new_page(&self, url: &str) -> anyhow::Result<Page> {
        let value = self.driver.request("new_page", json!({ "browser": self.id, "url": url }), DEFAULT_TIMEOUT).await?;
        let id = value["page"].as_u64().context("`new_page` answered no page id")?;
        Ok(Page { driver: self.driver.clone(), id, timeout: DEFAULT_TIMEOUT, artefacts: self.artefacts.clone() })
    }

    /// Runs `source` in every document the browser loads from now on, before
    /// any script of the document: stand-ins for what the page expects from
    /// its host, e.g. [`OPENCTI_STAND_IN`].
    pub async fn add_init_script(&self, source: &str) -> anyhow::Result<()> {
        self.driver.request("add_init_script", json!({ "browser": self.id, "source": source }), DEFAULT_TIMEOUT).await?;
        Ok(())
    }

    /// Cuts the browser off the network, or reconnects it: HTTP requests and
    /// WebSockets fail as when the cable is pulled. WebRTC media flows on.
    pub async fn set_offline(&self, offline: bool) -> anyhow::Result<()> {
        self.driver.request("set_offline", json!({ "browser": self.id, "offline": offline }), DEFAULT_TIMEOUT).await?;
        Ok(())
    }

    /// Closes the browser now and waits for it (dropping it does the same,
    /// blocking).
    pub async fn close(self) -> anyhow::Result<()> {
        self.driver.request("close", json!({ "browser": self.id }), LAUNCH_TIMEOUT).await?;
        Ok(())
    }
}

/// A tab of a [`Browser`].
pub struct Page {
    driver: Arc<Driver>,
    id: u64,
    timeout: Duration,
    artefacts: PathBuf,
}

/// What a page logged to its console and the errors it did not catch.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ConsoleLog {
    pub messages: Vec<ConsoleMessage>,
    /// Uncaught exceptions and rejections (with their stacks), and crashes.
    pub errors: Vec<String>,
}

/// One console call of a page.
#[derive(Debug, Clone, Deserialize)]
pub struct ConsoleMessage {
    /// `log`, `info`, `warning`, `error`, `debug`…
    #[serde(rename = "type")]
    pub kind: String,
    pub text: String,
    /// `url:line` of the call, when known.
    #[serde(default)]
    pub location: String,
}

impl ConsoleLog {
    /// Every message and error, one per line, for assertion messages.
    pub fn lines(&self) -> String {
        let messages = self.messages.iter().map(|m| format!("[{}] {}", m.kind, m.text));
        messages.chain(self.errors.iter().map(|e| format!("[uncaught] {e}"))).collect::<Vec<_>>().join("\n")
    }
}

impl Page {
    /// The timeout of the commands that take none, [`DEFAULT_TIMEOUT`] at
    /// first.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    async fn command(&self, cmd: &str, mut params: Value, timeout: Duration) -> anyhow::Result<Value> {
        params["page"] = self.id.into();
        self.driver.request(cmd, params, timeout).await
    }

    /// Navigates to `url` and waits for its `load` event; returns the HTTP
    /// status of the document, if it came over HTTP.
    pub async fn goto(&self, url: &str) -> anyhow::Result<Option<u16>> {
        let value = self.command("goto", json!({ "url": url }), self.timeout).await?;
        Ok(value["status"].as_u64().map(|s| s as u16))
    }

    /// Clicks the one element `selector` matches (a CSS selector or any of
    /// Playwright's, e.g. `text=Answer`) once it is visible, enabled and
    /// still.
    pub async fn click(&self, selector: &str) -> anyhow::Result<()> {
        self.command("click", json!({ "selector": selector }), self.timeout).await?;
        Ok(())
    }

    /// Replaces the value of the input `selector` matches with `value`.
    pub async fn fill(&self, selector: &str, value: &str) -> anyhow::Result<()> {
        self.command("fill", json!({ "selector": selector, "value": value }), self.timeout).await?;
        Ok(())
    }

    /// Presses `key` (e.g. `Enter`, `Digit5`, `Control+a`) in the element
    /// `selector` matches.
    pub async fn press(&self, selector: &str, key: &str) -> anyhow::Result<()> {
        self.command("press", json!({ "selector": selector, "key": key }), self.timeout).await?;
        Ok(())
    }

    /// Waits up to `timeout` for the element `selector` matches to reach
    /// `state`; a [`CommandError`] with `timed_out` if it does not.
    pub async fn wait_for(&self, selector: &str, state: WaitState, timeout: Duration) -> anyhow::Result<()> {
        let params = json!({ "selector": selector, "state": state.as_str(), "timeout": timeout.as_millis() as u64 });
        self.command("wait_for", params, timeout).await?;
        Ok(())
    }

    /// The rendered text (`innerText`) of the one element `selector`
    /// matches, once it exists.
    pub async fn text(&self, selector: &str) -> anyhow::Result<String> {
        let value = self.command("text", json!({ "selector": selector }), self.timeout).await?;
        value.as_str().map(str::to_owned).context("`text` answered no string")
    }

    /// Evaluates the JavaScript `expression` in the page (awaiting it if it
    /// is a promise) and returns its value as JSON; `undefined` is `null`.
    pub async fn evaluate<T: DeserializeOwned>(&self, expression: &str) -> anyhow::Result<T> {
        let value = self.command("evaluate", json!({ "expression": expression }), self.timeout).await?;
        decode(value, &format!("`{expression}`"))
    }

    /// Runs `function_body`, the body of an async function of one parameter
    /// `arg`, in the page with `arg` (as JSON), and returns what it returns:
    /// `page.evaluate_with("return document.querySelectorAll(arg).length", &"li")`.
    pub async fn evaluate_with<T: DeserializeOwned, A: Serialize + ?Sized>(
        &self,
        function_body: &str,
        arg: &A,
    ) -> anyhow::Result<T> {
        let params = json!({ "function": function_body, "arg": serde_json::to_value(arg)? });
        let value = self.command("evaluate", params, self.timeout).await?;
        decode(value, "the function")
    }

    /// Waits up to `timeout` for the JavaScript `predicate` (an expression,
    /// polled in the page at every frame) to be truthy, and returns its
    /// value.
    pub async fn wait_for_function<T: DeserializeOwned>(
        &self,
        predicate: &str,
        timeout: Duration,
    ) -> anyhow::Result<T> {
        let params = json!({ "expression": predicate, "timeout": timeout.as_millis() as u64 });
        let value = self.command("wait_for_function", params, timeout).await?;
        decode(value, &format!("`{predicate}`"))
    }

    /// Saves a PNG of the whole page as `<`[`Browser::artefact_dir`]`>/<name>.png`
    /// and returns its path.
    pub async fn screenshot(&self, name: &str) -> anyhow::Result<PathBuf> {
        let file: String =
            name.chars().map(|c| if c.is_ascii_alphanumeric() || "-_.".contains(c) { c } else { '_' }).collect();
        let path = self.artefacts.join(format!("{}.png", file.trim_end_matches(".png")));
        self.command("screenshot", json!({ "path": path }), self.timeout).await?;
        Ok(path)
    }

    /// Everything the page logged and threw since it opened.
    pub async fn console(&self) -> anyhow::Result<ConsoleLog> {
        let value = self.command("console", json!({}), self.timeout).await?;
        Ok(serde_json::from_value(value)?)
    }

    /// Like [`Browser::add_init_script`], for this tab only.
    pub async fn add_init_script(&self, source: &str) -> anyhow::Result<()> {
        self.command("add_init_script", json!({ "source": source }), self.timeout).await?;
        Ok(())
    }

    /// Closes the tab.
    pub async fn close(self) -> anyhow::Result<()> {
        self.command("close", json!({}), self.timeout).await?;
        Ok(())
    }

    /// The audio statistics of the `RTCPeerConnection` that the JavaScript
    /// expression `peer_connection` yields (e.g. `window.softphone.pc`), from
    /// its `getStats()`.
    pub async fn rtc_stats(&self, peer_connection: &str) -> anyhow::Result<RtcAudioStats> {
        let body = format!("const pc = ({peer_connection});\n{RTC_STATS_JS}");
        let stats: RtcAudioStats = self
            .evaluate_with(&body, &peer_connection)
            .await
            .with_context(|| format!("reading the WebRTC statistics of `{peer_connection}`"))?;
        Ok(stats)
    }

    /// The Open CTI calls the page made, in order, when the browser runs
    /// [`OPENCTI_STAND_IN`].
    pub async fn opencti_calls(&self) -> anyhow::Result<Vec<OpenCtiCall>> {
        let calls: Option<Vec<OpenCtiCall>> =
            self.evaluate("window.__openctiRecorder ? window.__openctiRecorder.calls : null").await?;
        calls.context("the page has no Open CTI stand-in (add OPENCTI_STAND_IN as an init script)")
    }

    /// Calls the listeners the page registered with `sforce.opencti.<method>`
    /// (e.g. `onClickToDial`) with `payload`, as Salesforce would; returns
    /// how many there were.
    pub async fn opencti_fire<P: Serialize + ?Sized>(&self, method: &str, payload: &P) -> anyhow::Result<usize> {
        let arg = json!({ "method": method, "payload": payload });
        self.evaluate_with("return window.__openctiRecorder.fire(arg.method, arg.payload);", &arg).await
    }
}

/// `value` as the test's type, or an error that shows the value.
fn decode<T: DeserializeOwned>(value: Value, what: &str) -> anyhow::Result<T> {
    serde_json::from_value(value.clone())
        .with_context(|| format!("the value of {what} is not what the test expects: {value}"))
}

// --- WebRTC -----------------------------------------------------------------------

/// The first audio stream each way of a peer connection, as its
/// `getStats()` tells. A side is `None` until the connection has it.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RtcAudioStats {
    pub inbound: Option<InboundAudio>,
    pub outbound: Option<OutboundAudio>,
}

/// Audio received (`inbound-rtp`).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct InboundAudio {
    pub packets_received: u64,
    pub bytes_received: u64,
    /// Cumulative; negative when duplicates outnumber losses.
    pub packets_lost: i64,
    /// Seconds.
    pub jitter: f64,
    /// Loudness of the last received audio, 0 to 1 (absent before any).
    pub audio_level: Option<f64>,
    /// Sum over the received audio of level² × duration: above 0 once any
    /// sound came.
    pub total_audio_energy: Option<f64>,
    /// e.g. `audio/opus`, `audio/PCMU`.
    pub codec: Option<String>,
}

/// Audio sent (`outbound-rtp`, with its `media-source` and what the far end
/// reported in RTCP, `remote-inbound-rtp`).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct OutboundAudio {
    pub packets_sent: u64,
    pub bytes_sent: u64,
    /// Loudness of the microphone track, 0 to 1.
    pub audio_level: Option<f64>,
    pub total_audio_energy: Option<f64>,
    pub codec: Option<String>,
    /// Packets the far end reports lost (RTCP receiver reports).
    pub remote_packets_lost: Option<i64>,
    /// Jitter the far end reports, seconds.
    pub remote_jitter: Option<f64>,
    /// Round-trip time from RTCP, seconds.
    pub round_trip_time: Option<f64>,
}

/// The rest of the function body of [`Page::rtc_stats`], after `pc` is bound.
const RTC_STATS_JS: &str = r#"
if (!pc || typeof pc.getStats !== 'function') throw new Error(`${arg} is not an RTCPeerConnection`);
const report = await pc.getStats();
const stats = [...report.values()];
const audio = (type) => stats.find((s) => s.type === type && (s.kind ?? s.mediaType) === 'audio');
const codec = (s) => (s && s.codecId && report.get(s.codecId) ? report.get(s.codecId).mimeType : null);
const inbound = audio('inbound-rtp');
const outbound = audio('outbound-rtp');
const remote = outbound && stats.find((s) => s.type === 'remote-inbound-rtp' && s.localId === outbound.id);
const source = outbound && outbound.mediaSourceId ? report.get(outbound.mediaSourceId) : null;
return {
  inbound: inbound ? {
    packets_received: inbound.packetsReceived ?? 0,
    bytes_received: inbound.bytesReceived ?? 0,
    packets_lost: inbound.packetsLost ?? 0,
    jitter: inbound.jitter ?? 0,
    audio_level: inbound.audioLevel ?? null,
    total_audio_energy: inbound.totalAudioEnergy ?? null,
    codec: codec(inbound),
  } : null,
  outbound: outbound ? {
    packets_sent: outbound.packetsSent ?? 0,
    bytes_sent: outbound.bytesSent ?? 0,
    audio_level: source?.audioLevel ?? null,
    total_audio_energy: source?.totalAudioEnergy ?? null,
    codec: codec(outbound),
    remote_packets_lost: remote?.packetsLost ?? null,
    remote_jitter: remote?.jitter ?? null,
    round_trip_time: remote?.roundTripTime ?? null,
  } : null,
};
"#;

// --- Salesforce Open CTI -------------------------------------------------------------

/// A stand-in for Salesforce's Open CTI library (`window.sforce.opencti`,
/// Lightning flavour) that records every call, for a page that runs outside
/// Salesforce. Install it with [`Browser::add_init_script`] before opening
/// the page; read the calls with [`Page::opencti_calls`].
///
/// Every method exists and records `{method, args}` (functions in the
/// arguments become `"[function]"`). A `callback` is called asynchronously
/// with `{success: true, returnValue: null, errors: null}`, or with
/// `window.__openctiRecorder.responses[method]` when a test set one (from a
/// second init script, to be in place before the page asks). A `listener`
/// (`onClickToDial`, `onNavigationChange`…) is kept, and
/// [`Page::opencti_fire`] calls it. `SCREENPOP_TYPE` and `CALL_TYPE` hold
/// Salesforce's values.
pub const OPENCTI_STAND_IN: &str = r#"(() => {
  const recorder = { calls: [], listeners: {}, responses: {} };
  const plain = (value) => JSON.parse(JSON.stringify(value === undefined ? null : value,
    (key, v) => (typeof v === 'function' ? '[function]' : v)));
  recorder.fire = (method, payload) => {
    const listeners = recorder.listeners[method] || [];
    listeners.forEach((listener) => listener(payload));
    return listeners.length;
  };
  const constants = {
    SCREENPOP_TYPE: { SOBJECT: 'sobject', URL: 'url', OBJECTHOME: 'objecthome', LIST: 'list',
      SEARCH: 'search', NEW_RECORD_MODAL: 'newRecord', FLOW: 'flow' },
    CALL_TYPE: { INBOUND: 'inbound', OUTBOUND: 'outbound', INTERNAL: 'internal' },
  };
  const method = (name) => (options) => {
    recorder.calls.push({ method: name, args: plain(options) });
    if (options && typeof options.listener === 'function') {
      (recorder.listeners[name] = recorder.listeners[name] || []).push(options.listener);
    }
    if (options && typeof options.callback === 'function') {
      const response = name in recorder.responses
        ? recorder.responses[name]
        : { success: true, returnValue: null, errors: null };
      setTimeout(() => options.callback(response), 0);
    }
  };
  // Not a thenable, not a JSON value: only method names make methods.
  const notMethods = new Set(['then', 'toJSON', 'constructor']);
  const opencti = new Proxy(constants, {
    get: (target, name) => (typeof name !== 'string' || notMethods.has(name) ? undefined
      : name in target ? target[name] : method(name)),
  });
  window.sforce = Object.assign(window.sforce || {}, { opencti });
  window.__openctiRecorder = recorder;
})();"#;

/// One call the page made to the Open CTI stand-in.
#[derive(Debug, Clone, Deserialize)]
pub struct OpenCtiCall {
    /// e.g. `screenPop`, `saveLog`, `enableClickToDial`.
    pub method: String,
    /// Its argument (Open CTI methods take one object), `null` when none.
    pub args: Value,
}

// --- the fake microphone -------------------------------------------------------------

/// A WAV of `text` spoken by espeak-ng, 48 kHz mono 16-bit (what Chromium's
/// fake capture device plays without resampling), with half a second of
/// silence after it so that a looped file has pauses like speech. Made once
/// per test and text, in the test's scratch directory.
pub async fn speech_wav(ctx: &TestContext, text: &str) -> anyhow::Result<PathBuf> {
    use std::hash::{Hash as _, Hasher as _};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut hasher);
    let dir = ctx.subdir("fake-microphone")?;
    let out = dir.join(format!("speech-{:016x}.wav", hasher.finish()));
    if out.is_file() {
        return Ok(out);
    }
    let espeak =
        on_path("espeak-ng").context("espeak-ng is not on the PATH: apt-get install espeak-ng (`scripts/test` does)")?;
    let sox = on_path("sox").context("sox is not on the PATH: apt-get install sox (`scripts/test` does)")?;
    let raw = dir.join(format!("speech-{:016x}-espeak.wav", hasher.finish()));
    let mut command = std::process::Command::new(espeak);
    command.arg("-w").arg(&raw).arg(text);
    let spoken = run_captured(ctx, "espeak-ng", command, Duration::from_secs(30)).await?;
    anyhow::ensure!(spoken.status.success(), "espeak-ng failed ({}): {}", spoken.status, spoken.stderr);
    // Written under another name and renamed, so that a file by the final
    // name is always complete.
    let partial = out.with_extension("partial.wav");
    let mut command = std::process::Command::new(sox);
    command.arg(&raw).args(["-r", "48000", "-c", "1", "-b", "16"]).arg(&partial).args(["pad", "0", "0.5"]);
    let converted = run_captured(ctx, "sox", command, Duration::from_secs(30)).await?;
    anyhow::ensure!(converted.status.success(), "sox failed ({}): {}", converted.status, converted.stderr);
    let summary = WavSummary::parse(&std::fs::read(&partial)?)?;
    anyhow::ensure!(
        summary.sample_rate == 48_000 && summary.channels == 1 && summary.rms[0] > AUDIBLE_RMS,
        "the spoken WAV is not 48 kHz mono speech: {summary:?}"
    );
    std::fs::rename(&partial, &out)?;
    Ok(out)
}

// --- pages for the browser -------------------------------------------------------------

/// A minimal HTTP server on 127.0.0.1 serving fixed files, for pages a test
/// writes itself. (A page must come from a secure context to use the
/// microphone: `http://127.0.0.1` is one, `file://` and `data:` are not.)
/// It stops when dropped.
pub struct StaticSite {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl StaticSite {
    /// Serves each `(path, content type, body)`, e.g.
    /// `("/index.html", "text/html; charset=utf-8", html)`; any other path
    /// is a 404, but for an empty `/favicon.ico`.
    pub async fn serve(files: Vec<(&str, &str, Vec<u8>)>) -> anyhow::Result<Self> {
        let files: Arc<HashMap<String, (String, Vec<u8>)>> =
            Arc::new(files.into_iter().map(|(path, kind, body)| (path.to_owned(), (kind.to_owned(), body))).collect());
        let listener = TcpListener::bind((LOCALHOST, 0)).await.context("binding the test site to 127.0.0.1")?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve_one(stream, files.clone()));
            }
        });
        Ok(Self { addr, task })
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

impl Drop for StaticSite {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Answers one request on `stream` and closes it.
async fn serve_one(mut stream: TcpStream, files: Arc<HashMap<String, (String, Vec<u8>)>>) {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 64 * 1024 {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let head = String::from_utf8_lossy(&head);
    let mut request_line = head.lines().next().unwrap_or_default().split(' ');
    let (method, target) = (request_line.next().unwrap_or_default(), request_line.next().unwrap_or_default());
    let path = target.split(['?', '#']).next().unwrap_or_default();
    let (status, kind, body) = match files.get(path) {
        Some((kind, body)) if method == "GET" || method == "HEAD" => ("200 OK", kind.as_str(), body.as_slice()),
        // Chromium asks for one with every page; a 404 would be an error
        // in the page's console, where tests look for the page's own.
        None if path == "/favicon.ico" => ("204 No Content", "image/x-icon", &b""[..]),
        _ => ("404 Not Found", "text/plain", &b"not found"[..]),
    };
    let header = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(header.as_bytes()).await;
    if method != "HEAD" {
        let _ = stream.write_all(body).await;
    }
    let _ = stream.shutdown().await;
}
