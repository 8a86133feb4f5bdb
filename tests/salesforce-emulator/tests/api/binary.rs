//! The `salesforce-emulator` binary: writes credentials, serves an org that
//! trusts them, and logs its URL; its connected app and browser options make
//! the web-server and client credentials flows work without control calls.

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
                "--user",
                "agent@example.com=0055g00000AgEnT",
                "--callback-url",
                "https://gw.example.com/cb",
                "--consumer-secret",
                "s3cr3t",
                "--require-pkce",
                "false",
                "--browser-user",
                "agent@example.com",
                "--client-credentials-user",
                "agent@example.com",
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
    // The URL is known once the server logs it. The log keeps being read
    // to its end so that the server never writes into a closed pipe.
    let (found, url) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(start) = line.find("url=http://") {
                let url = line[start + 4..].split_whitespace().next().unwrap_or("");
                let _ = found.send(url.to_owned());
            }
        }
    });
    let url = tokio::task::spawn_blocking(move || url.recv())
        .await
        .expect("reader")
        .expect("the emulator logged no URL");

    let client = reqwest::Client::new();
    let agent = AssertionClaims::new(
        "ck-bin",
        "agent@example.com",
        url.clone(),
        Duration::from_secs(60),
    );
    let agent_token = client
        .post(format!("{url}/services/oauth2/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(token_request_form(
            &sign_assertion(&key, &agent).expect("sign"),
        ))
        .send()
        .await
        .expect("agent token");
    let agent_token: serde_json::Value = agent_token.json().await.expect("json");
    assert!(
        agent_token["id"]
            .as_str()
            .is_some_and(|id| id.contains("0055g00000AgEnT")),
        "{agent_token}"
    );

    let claims = AssertionClaims::new(
        "ck-bin",
        "bin@example.com",
        url.clone(),
        Duration::from_secs(60),
    );
    let assertion = sign_assertion(&key, &claims).expect("sign");
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

    // The web-server flow with the app and browser of the command line.
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let authorized = browser
        .get(format!("{url}/services/oauth2/authorize"))
        .query(&[
            ("response_type", "code"),
            ("client_id", "ck-bin"),
            ("redirect_uri", "https://gw.example.com/cb"),
        ])
        .send()
        .await
        .expect("authorize");
    assert_eq!(authorized.status(), StatusCode::FOUND);
    let location = authorized.headers()["location"].to_str().expect("location");
    let code = url::Url::parse(location)
        .expect("url")
        .query_pairs()
        .find(|(k, _)| k == "code")
        .map(|(_, v)| v.into_owned())
        .expect("code");
    let exchanged = browser
        .post(format!("{url}/services/oauth2/token"))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("client_id", "ck-bin"),
            ("client_secret", "s3cr3t"),
            ("redirect_uri", "https://gw.example.com/cb"),
        ])
        .send()
        .await
        .expect("exchange");
    assert_eq!(exchanged.status(), StatusCode::OK);
    let exchanged: serde_json::Value = exchanged.json().await.expect("json");
    assert!(
        exchanged["id"]
            .as_str()
            .is_some_and(|id| id.contains("0055g00000AgEnT")),
        "{exchanged}"
    );
    assert!(exchanged["refresh_token"].is_string(), "{exchanged}");

    // The client credentials flow, its Run As user from the command line.
    let server_to_server = client
        .post(format!("{url}/services/oauth2/token"))
        .form(&[("grant_type", "client_credentials")])
        .basic_auth("ck-bin", Some("s3cr3t"))
        .send()
        .await
        .expect("client credentials");
    assert_eq!(server_to_server.status(), StatusCode::OK);
    let server_to_server: serde_json::Value = server_to_server.json().await.expect("json");
    assert!(
        server_to_server["id"]
            .as_str()
            .is_some_and(|id| id.contains("0055g00000AgEnT")),
        "{server_to_server}"
    );
    drop(child);
}
