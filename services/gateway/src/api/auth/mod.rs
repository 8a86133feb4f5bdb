//! Who is calling the agent API: sessions from "Connect with Salesforce",
//! sealed secrets, and the authentication layer every agent route sits
//! behind.

pub mod salesforce;
pub mod seal;
pub mod sessions;

pub use sessions::{Role, Session, Sessions};

use std::path::Path;

use anyhow::Context;

use crate::config::AuthConfig;
use seal::Sealer;

/// The key that seals agents' Salesforce tokens and sign-in states:
/// `auth.token_key`, else `auth.token_key_file`, else
/// `<data_dir>/secrets/token.key`, made (owner-only) on first start.
pub fn load_sealer(config: &AuthConfig, data_dir: &Path) -> anyhow::Result<Sealer> {
    if let Some(key) = &config.token_key {
        return Sealer::from_base64(key).map_err(|e| anyhow::anyhow!("auth.token_key: {e}"));
    }
    let (path, explicit) = match &config.token_key_file {
        Some(p) => (p.clone(), true),
        None => (data_dir.join("secrets").join("token.key"), false),
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => Sealer::from_base64(&text).map_err(|e| anyhow::anyhow!("auth.token_key_file {}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => {
            let dir = path.parent().expect("a file in a directory");
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            let key = Sealer::generate_key();
            write_private(&path, &key).with_context(|| format!("writing a new token key to {}", path.display()))?;
            tracing::info!(path = %path.display(), "made a new token key for agent sessions; gateways sharing a database need the same key (auth.token_key_file)");
            Sealer::from_base64(&key).map_err(|e| anyhow::anyhow!("{e}"))
        }
        Err(e) => Err(anyhow::anyhow!("auth.token_key_file {}: {e}", path.display())),
    }
}

fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    f.write_all(contents.as_bytes())?;
    f.sync_all()
}

/// The signed-in user of a request, put into the request's extensions by
/// the authentication layer; handlers take it with
/// `Extension<Principal>`, so a route outside the layer cannot compile
/// into using one.
#[derive(Debug, Clone)]
pub struct Principal {
    pub user_id: String,
    pub session_id: String,
    pub role: Role,
    /// When the session ends (epoch ms).
    pub expires_at_ms: i64,
    /// Whether the session holds the agent's Salesforce tokens.
    pub salesforce_connected: bool,
}

impl Principal {
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }
}
