//! The `switchboard` binary under test, configured through `SWITCHBOARD_…`
//! environment variables exactly as an operator would.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use anyhow::Context as _;

use crate::ports::{self, LOCALHOST};
use crate::process::{run_captured, Captured, Process};
use crate::{env, eventually, TestContext};

/// RTP ports the gateway gets: two per leg, two legs per call.
const GATEWAY_MEDIA_PORTS: u16 = 40;
/// How long a one-shot command (`migrate`, `admin …`) may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a role may take to answer `/healthz` after start.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Configuration of the binary as environment variables.
///
/// Keys are written as in the TOML file, dotted (`recordings.s3.bucket`);
/// they become `SWITCHBOARD_RECORDINGS__S3__BUCKET`. Nothing else of the
/// test's own `SWITCHBOARD_…` environment reaches the binary.
#[derive(Debug, Clone, Default)]
pub struct Config {
    values: BTreeMap<String, String>,
}

impl Config {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `key` (dotted TOML path) to `value`.
    pub fn set(&mut self, key: &str, value: impl ToString) -> &mut Self {
        self.values.insert(key.to_owned(), value.to_string());
        self
    }

    /// Removes `key`.
    pub fn unset(&mut self, key: &str) -> &mut Self {
        self.values.remove(key);
        self
    }

    /// The value of `key`, if set.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.values.get(key).map(String::as_str)
    }

    /// Points `sip.udp`, `sip.tcp`, the RTP range (`media.*`) and
    /// `http.listen` at free ports on 127.0.0.1, trusts 127.0.0.1 as a
    /// trunk, and returns the SIP address carriers send to.
    pub fn use_free_gateway_ports(&mut self) -> anyhow::Result<SocketAddr> {
        let sip = SocketAddr::from((LOCALHOST, ports::free_udp_and_tcp_port()?));
        let media = ports::gateway_media_range(GATEWAY_MEDIA_PORTS);
        self.set("sip.udp", sip)
            .set("sip.tcp", sip)
            // SIPp on 127.0.0.1 plays the carrier: a trunk trusted by address.
            .set("sip.trunks", r#"[{ name = "test-carrier", inbound_from = ["127.0.0.1/32"] }]"#)
            .set("media.bind_ip", LOCALHOST)
            .set("media.port_min", media)
            .set("media.port_max", media + GATEWAY_MEDIA_PORTS - 1);
        self.use_free_http_port()?;
        Ok(sip)
    }

    /// Points `http.listen` (health, metrics, API) at a free port; each
    /// process of a test needs its own.
    pub fn use_free_http_port(&mut self) -> anyhow::Result<SocketAddr> {
        let http = SocketAddr::from((LOCALHOST, ports::free_tcp_port()?));
        self.set("http.listen", http);
        Ok(http)
    }

    /// The variable name of a dotted key.
    pub fn variable(key: &str) -> String {
        format!("SWITCHBOARD_{}", key.replace('.', "__").to_uppercase())
    }

    /// A command running the binary with this configuration and `args`.
    pub fn command(&self, args: &[&str]) -> anyhow::Result<Command> {
        let bin = env::required_program(env::SWITCHBOARD_BIN)?;
        let mut command = Command::new(bin);
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("SWITCHBOARD_") {
                command.env_remove(name);
            }
        }
        for (key, value) in &self.values {
            command.env(Self::variable(key), value);
        }
        command.args(args);
        Ok(command)
    }

    /// Runs a one-shot subcommand to completion; an error if it fails.
    pub async fn run(&self, ctx: &TestContext, args: &[&str]) -> anyhow::Result<Captured> {
        let label = format!("switchboard {}", args.join(" "));
        let out = run_captured(ctx, &label, self.command(args)?, COMMAND_TIMEOUT).await?;
        if !out.status.success() {
            anyhow::bail!("`{label}` failed with {}:\nstdout:\n{}\nstderr:\n{}", out.status, out.stdout, out.stderr);
        }
        Ok(out)
    }

    /// Runs `admin … --json` and returns the JSON it prints.
    pub async fn admin_json(&self, ctx: &TestContext, args: &[&str]) -> anyhow::Result<serde_json::Value> {
        let mut all = vec!["admin"];
        all.extend_from_slice(args);
        all.push("--json");
        let out = self.run(ctx, &all).await?;
        serde_json::from_str(out.stdout.trim())
            .with_context(|| format!("`switchboard {}` printed no JSON on stdout: {:?}", all.join(" "), out.stdout))
    }

    /// Starts a long-running role (`gateway`, `connector`, `up`) and waits
    /// until `GET /healthz` on its `http.listen` address answers 200.
    pub async fn spawn(&self, ctx: &TestContext, role: &str) -> anyhow::Result<Service> {
        let listen: SocketAddr = self
            .get("http.listen")
            .context("set http.listen to a free port before starting a role")?
            .parse()
            .context("http.listen is not a socket address")?;
        let mut process = Process::spawn(ctx, &format!("switchboard {role}"), self.command(&[role])?)?;
        let url = format!("http://{listen}/healthz");
        let client = reqwest::Client::builder().timeout(Duration::from_secs(2)).build()?;
        eventually(&format!("switchboard {role} to answer {url}"), READY_TIMEOUT, || {
            let alive = process.ensure_running();
            let request = client.get(&url).send();
            let url = url.clone();
            async move {
                alive?;
                match request.await {
                    Ok(response) if response.status().is_success() => Ok(Some(())),
                    Ok(response) => Err(anyhow::anyhow!("{url} answered {}", response.status())),
                    Err(e) => Err(anyhow::anyhow!("{url}: {e}")),
                }
            }
        })
        .await?;
        Ok(Service { process, listen })
    }
}

/// A running role of the binary.
pub struct Service {
    process: Process,
    listen: SocketAddr,
}

impl Service {
    /// Base URL of its HTTP server.
    pub fn http_url(&self) -> String {
        format!("http://{}", self.listen)
    }

    /// The process, to check it is alive or stop it.
    pub fn process(&mut self) -> &mut Process {
        &mut self.process
    }

    /// Stops the role the way an operator does (SIGTERM) and waits for it.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.process.stop(Duration::from_secs(20)).await?;
        Ok(())
    }
}

/// `127.0.0.1:<port>` as a string, for socket-address keys.
pub fn local(port: u16) -> String {
    SocketAddr::from((LOCALHOST, port)).to_string()
}

/// The id in the JSON `admin … add --json` prints: `{"id": …}` or the id of
/// a nested object such as `{"user": {"id": …}}`.
pub fn json_id(value: &serde_json::Value) -> anyhow::Result<String> {
    if let Some(id) = value.get("id").and_then(|v| v.as_str()) {
        return Ok(id.to_owned());
    }
    if let Some(object) = value.as_object() {
        for nested in object.values() {
            if let Some(id) = nested.get("id").and_then(|v| v.as_str()) {
                return Ok(id.to_owned());
            }
        }
    }
    anyhow::bail!("no `id` in the admin command's JSON: {value}")
}

/// Ids of the agent a test provisions.
#[derive(Debug, Clone)]
pub struct Agent {
    pub user_id: String,
    pub device_id: String,
}

/// Provisions one agent the way an operator does, with `switchboard admin`:
/// a user linked to `salesforce_user_id`, its desk phone at `contact`, and
/// `number` routed to it.
pub async fn provision_agent(
    config: &Config,
    ctx: &TestContext,
    salesforce_user_id: &str,
    contact: &str,
    number: &str,
) -> anyhow::Result<Agent> {
    let user = config
        .admin_json(ctx, &["user", "add", "--name", "Ada Agent", "--salesforce-user-id", salesforce_user_id])
        .await?;
    let user_id = json_id(&user)?;
    let device =
        config.admin_json(ctx, &["device", "add", "--user", &user_id, "--name", "desk", "--contact", contact]).await?;
    let device_id = json_id(&device)?;
    config.admin_json(ctx, &["number", "add", number, "--user", &user_id]).await?;
    Ok(Agent { user_id, device_id })
}
