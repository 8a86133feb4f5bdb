//! The `salesforce-emulator` binary: writes credentials, serves an org that
//! trusts them, and logs its URL.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use reqwest::StatusCode;
use salesforce_emulator::{sign_assertion, token_request_form, AssertionClaims};

const BINARY: &str = env!("CARGO_BIN_EXE_salesforce-emulator");

/// Kills the child when the test ends, however it ends.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn the_binary_serves_an_org_trusting_its_generated_certificate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let made = Command::new(BINARY)
        .args(["credentials", "--out"])
        .arg(dir.path())
        .output()
        .expect("credentials");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let key = std::fs::read_to_string(dir.path().join("private-key.pem")).expect("key");

    let mut child = Child(
        Command::new(BINARY)
            .args([
                "--listen",
                "127.0.0.1:0",
                "--consumer-key",
                "ck-bin",
                "--username",
                "bin@example.com",
                "--daily-api-limit",
                "10",
            ])
            .arg("--certificate")
            .arg(dir.path().join("certificate.pem"))
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .spawn()
            .expect("serve"),
    );
    let stdout = child.0.stdout.take().expect("stdout");
    // The URL is known once the server logs it: read log lines until then.
    let url = tokio::task::spawn_blocking(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .find_map(|line| {
                let start = line.find("url=http://")? + 4;
                Some(line[start..].split_whitespace().next()?.to_owned())
            })
    })
    .await
    .expect("reader")
    .expect("the emulator logged no URL");

    let claims = AssertionClaims::new(
        "ck-bin",
        "bin@example.com",
        url.clone(),
        Duration::from_secs(60),
    );
    let assertion = sign_assertion(&key, &claims).expect("sign");
    let client = reqwest::Client::new();
    let token = client
        .post(format!("{url}/services/oauth2/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(token_request_form(&assertion))
        .send()
        .await
        .expect("token");
    assert_eq!(token.status(), StatusCode::OK);
    let token: serde_json::Value = token.json().await.expect("json");
    let limits = client
        .get(format!("{url}/services/data/v62.0/limits"))
        .bearer_auth(token["access_token"].as_str().expect("access token"))
        .send()
        .await
        .expect("limits");
    assert_eq!(limits.status(), StatusCode::OK);
    assert_eq!(limits.headers()["sforce-limit-info"], "api-usage=1/10");
    drop(child);
}
