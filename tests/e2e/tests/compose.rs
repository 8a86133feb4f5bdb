//! docker-compose.yml configures the roles with the same `SWITCHBOARD_…`
//! variables as the native tests. No container engine runs here, so this
//! checks the part that can drift silently: every variable of the shared
//! configuration block is a key the binary accepts with a valid value.

use std::path::Path;
use std::time::Duration;

use switchboard_e2e::process::run_captured;
use switchboard_e2e::switchboard::Config;
use switchboard_e2e::TestContext;

/// The `SWITCHBOARD_…: value` entries of the `x-switchboard-config` block.
fn compose_configuration() -> Vec<(String, String)> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docker-compose.yml");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let mut lines = text.lines().skip_while(|l| !l.starts_with("x-switchboard-config:"));
    assert!(lines.next().is_some(), "docker-compose.yml has no x-switchboard-config block");
    lines
        .take_while(|l| l.starts_with("  "))
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| l.trim().split_once(": "))
        .map(|(name, value)| (name.to_owned(), value.trim_matches('"').to_owned()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compose_configuration_is_accepted_by_the_binary() {
    let ctx = TestContext::new("compose_config");
    let variables = compose_configuration();
    assert!(variables.len() >= 20, "the block lists only {variables:?}");
    assert!(variables.iter().all(|(name, _)| name.starts_with("SWITCHBOARD_")), "{variables:?}");

    let key_dir = ctx.subdir("credentials").unwrap();
    std::fs::write(key_dir.join("private-key.pem"), "placeholder").unwrap();
    let mut command = Config::new().command(&["config", "check"]).unwrap();
    for (name, value) in &variables {
        // The key file lives in a container volume; point at a local stand-in.
        let value = if name == "SWITCHBOARD_SALESFORCE__PRIVATE_KEY_FILE" {
            key_dir.join("private-key.pem").display().to_string()
        } else {
            value.clone()
        };
        command.env(name, value);
    }
    command.env("SWITCHBOARD_DATA_DIR", ctx.subdir("data").unwrap());
    let out = run_captured(&ctx, "switchboard config check", command, Duration::from_secs(30)).await.unwrap();
    assert!(
        out.status.success(),
        "switchboard refuses the configuration of docker-compose.yml ({}):\n{}{}",
        out.status,
        out.stdout,
        out.stderr
    );
    for expected in ["recordings", "switchboard.call-events", "kafka:9092", "http://minio:9000"] {
        assert!(out.stdout.contains(expected), "effective configuration lacks {expected}:\n{}", out.stdout);
    }
}
