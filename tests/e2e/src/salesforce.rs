//! The Salesforce emulator, in-process, with a throwaway signing key.
//!
//! The connector signs in with the OAuth JWT bearer flow: it signs an
//! assertion with a private key whose certificate the connected app holds.
//! Each test makes its own RSA key and self-signed certificate with the
//! `openssl` CLI in its scratch directory; no key is ever committed.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::Context as _;
use salesforce_emulator::{Emulator, EmulatorConfig, UserSeed};

use crate::ports::{free_tcp_port, LOCALHOST};
use crate::process::run_captured;
use crate::switchboard::Config;
use crate::TestContext;

/// The connected app's consumer key in every test org.
pub const CONSUMER_KEY: &str = "3MVG9switchboard.e2e.consumer";
/// The integration user the connector signs in as.
pub const USERNAME: &str = "integration@switchboard.e2e";
/// The integration user's id.
pub const INTEGRATION_USER_ID: &str = "0055g00000E2eIn";
/// The agent's Salesforce user id, linked to the Switchboard user the test
/// provisions; the call's Task must be owned by it.
pub const AGENT_USER_ID: &str = "0055g00000E2eAg";
/// The agent's Salesforce login.
pub const AGENT_USERNAME: &str = "agent@switchboard.e2e";
/// A colleague of the agent's (transfers between agents).
pub const COLLEAGUE_USER_ID: &str = "0055g00000E2eCo";
/// The colleague's Salesforce login.
pub const COLLEAGUE_USERNAME: &str = "colleague@switchboard.e2e";

/// A key pair for the JWT bearer flow.
pub struct SigningKey {
    pub private_key_file: PathBuf,
    pub certificate_pem: String,
}

impl SigningKey {
    /// Generates an RSA key and a self-signed certificate valid for a day.
    pub async fn generate(ctx: &TestContext) -> anyhow::Result<Self> {
        let dir = ctx.subdir("salesforce-key")?;
        let private_key_file = dir.join("connector.key");
        let certificate_file = dir.join("connector.crt");
        let mut command = Command::new("openssl");
        command
            .args([
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-sha256",
                "-days",
                "1",
                "-subj",
                "/CN=switchboard-e2e",
            ])
            .arg("-keyout")
            .arg(&private_key_file)
            .arg("-out")
            .arg(&certificate_file);
        let out = run_captured(ctx, "openssl req", command, Duration::from_secs(60))
            .await
            .context("running the openssl CLI (Debian package openssl)")?;
        anyhow::ensure!(out.status.success(), "openssl req failed: {}", out.stderr);
        let certificate_pem =
            std::fs::read_to_string(&certificate_file).context("reading the generated certificate")?;
        Ok(Self { private_key_file, certificate_pem })
    }
}

/// A running emulated org.
pub struct Salesforce {
    emulator: Emulator,
    key: SigningKey,
}

impl Salesforce {
    /// Starts an org whose connected app trusts a fresh key, with the
    /// integration user and the agent user.
    pub async fn start(ctx: &TestContext) -> anyhow::Result<Self> {
        let key = SigningKey::generate(ctx).await?;
        let mut config = EmulatorConfig::new(key.certificate_pem.clone());
        config.consumer_key = CONSUMER_KEY.to_owned();
        config.username = USERNAME.to_owned();
        config.user_id = INTEGRATION_USER_ID.to_owned();
        config.extra_users.push(UserSeed { username: AGENT_USERNAME.to_owned(), id: Some(AGENT_USER_ID.to_owned()) });
        config.extra_users.push(UserSeed { username: COLLEAGUE_USERNAME.to_owned(), id: Some(COLLEAGUE_USER_ID.to_owned()) });
        let addr = SocketAddr::from((LOCALHOST, free_tcp_port()?));
        let emulator = Emulator::start(config, addr).await.context("starting the Salesforce emulator")?;
        Ok(Self { emulator, key })
    }

    /// The login URL (`salesforce.login_url`).
    pub fn url(&self) -> String {
        self.emulator.url().to_string()
    }

    /// Every Task record of the org, as the REST API would return it.
    pub fn tasks(&self) -> Vec<serde_json::Value> {
        self.emulator.tasks()
    }

    /// Adds the `[salesforce]` keys the connector needs to `config`.
    pub fn configure(&self, config: &mut Config) {
        config
            .set("salesforce.login_url", self.url())
            .set("salesforce.consumer_key", CONSUMER_KEY)
            .set("salesforce.username", USERNAME)
            .set("salesforce.private_key_file", self.key.private_key_file.display())
            // Updates of written Tasks (recording links) without waiting
            // for a hang-up to share a request with.
            .set("salesforce.batch_update_deadline_ms", 1_500);
    }
}

impl Salesforce {
    /// Adds the `[auth.salesforce]` keys of "Connect with Salesforce" for a
    /// gateway at `public_url` (its callback registered with the connected
    /// app), and has the org's login page sign the agent user in at once,
    /// as a browser with a Salesforce session would.
    pub fn configure_agent_login(&self, config: &mut Config, public_url: &str) -> anyhow::Result<()> {
        self.emulator
            .add_callback_url(CONSUMER_KEY, &format!("{public_url}/v1/auth/salesforce/callback"))
            .context("registering the gateway's callback URL")?;
        self.browser_signs_in_as(AGENT_USERNAME)?;
        config
            .set("auth.salesforce.login_url", self.url())
            .set("auth.salesforce.client_id", CONSUMER_KEY)
            .set("auth.salesforce.client_secret", self.emulator.consumer_secret())
            .set("auth.salesforce.organization_id", self.emulator.org_id());
        Ok(())
    }

    /// The org's login page signs `username` in at once from now on.
    pub fn browser_signs_in_as(&self, username: &str) -> anyhow::Result<()> {
        self.emulator
            .set_browser(salesforce_emulator::Browser { username: Some(username.to_owned()), deny: false })
            .with_context(|| format!("signing {username} in at the org"))
    }
}

/// True when two Salesforce ids name the same record: the 15-character
/// case-sensitive prefix of an 18-character id is the same id.
pub fn same_id(a: &str, b: &str) -> bool {
    a.len() >= 15 && b.len() >= 15 && a[..15] == b[..15]
}
