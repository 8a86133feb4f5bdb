//! The built `switchboard` binary as an operator runs it: help texts,
//! configuration errors and their exit status, `config check`, migrations
//! and provisioning on SQLite, and `switchboard up` with its banner and
//! graceful shutdown.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

/// Generous bounds for a loaded CI machine; the happy path takes far less.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);

/// The binary with none of the caller's `SWITCHBOARD_…` or `RUST_LOG`
/// variables, run in `dir`.
fn switchboard(dir: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_switchboard"));
    for (name, _) in std::env::vars_os() {
        let name_str = name.to_string_lossy();
        if name_str.starts_with("SWITCHBOARD_") || name_str == "RUST_LOG" {
            command.env_remove(&name);
        }
    }
    command.current_dir(dir).stdin(Stdio::null());
    command
}

fn run(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = switchboard(dir);
    command.args(args).envs(env.iter().copied());
    command.output().expect("run the switchboard binary")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs a command that must succeed and returns what it printed.
fn ok(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> String {
    let out = run(dir, args, env);
    assert!(out.status.success(), "switchboard {args:?} failed: {}\n{}", out.status, stderr(&out));
    stdout(&out)
}

fn json(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Value {
    let text = ok(dir, args, env);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("switchboard {args:?} printed no JSON ({e}): {text}"))
}

#[test]
fn help_lists_every_subcommand_and_option() {
    let dir = tempfile::tempdir().unwrap();
    let cases: &[(&[&str], &[&str])] = &[
        (&["--help"], &["up", "gateway", "connector", "migrate", "admin", "replay", "config", "--config", "SWITCHBOARD_CONFIG", "--version"]),
        (&["replay", "--help"], &["--call-id", "--label", "salesforce_rejected", "--error-code", "--dry-run", "--limit", "<kafka.group_id>.replay", "--config"]),
        (&["up", "--help"], &["--sip", "--http", "--data-dir", "--config"]),
        (&["gateway", "--help"], &["--config"]),
        (&["connector", "--help"], &["--config", "/healthz"]),
        (&["migrate", "--help"], &["--config"]),
        (&["config", "--help"], &["check"]),
        (&["config", "check", "--help"], &["--config", "redacted"]),
        (&["admin", "--help"], &["user", "device", "group", "number", "recording-policy", "--json"]),
        (&["admin", "user", "--help"], &["add", "list", "remove"]),
        (&["admin", "user", "add", "--help"], &["--name", "--extension", "--salesforce-user-id", "--json"]),
        (&["admin", "user", "list", "--help"], &["--json"]),
        (&["admin", "user", "remove", "--help"], &["<ID>", "--json"]),
        (&["admin", "device", "--help"], &["add", "list", "remove"]),
        (&["admin", "device", "add", "--help"], &["--user", "--name", "--contact", "--json"]),
        (&["admin", "device", "list", "--help"], &["--user", "--json"]),
        (&["admin", "device", "remove", "--help"], &["<ID>"]),
        (&["admin", "number", "--help"], &["add", "list", "remove"]),
        (&["admin", "group", "--help"], &["add", "list", "remove", "member"]),
        (&["admin", "group", "add", "--help"], &["--name", "--extension", "--json"]),
        (&["admin", "group", "list", "--help"], &["--json"]),
        (&["admin", "group", "remove", "--help"], &["<ID>"]),
        (&["admin", "group", "member", "--help"], &["add", "list", "remove"]),
        (&["admin", "group", "member", "add", "--help"], &["<GROUP>", "<USER>", "--json"]),
        (&["admin", "group", "member", "list", "--help"], &["<GROUP>", "--json"]),
        (&["admin", "group", "member", "remove", "--help"], &["<GROUP>", "<USER>"]),
        (&["admin", "number", "add", "--help"], &["<NUMBER>", "--user", "--group", "--main-line", "--json"]),
        (&["admin", "number", "list", "--help"], &["--json"]),
        (&["admin", "number", "remove", "--help"], &["<NUMBER>"]),
        (&["admin", "recording-policy", "--help"], &["set", "clear", "list", "admins only"]),
        (&["admin", "recording-policy", "set", "--help"], &["--number", "--group", "<ID_OR_NAME>", "--json"]),
        (&["admin", "recording-policy", "clear", "--help"], &["--number", "--group", "--json"]),
        (&["admin", "recording-policy", "list", "--help"], &["--json"]),
    ];
    for (args, expected) in cases {
        let text = ok(dir.path(), args, &[]);
        for needle in *expected {
            assert!(text.contains(needle), "`switchboard {}` does not mention {needle}:\n{text}", args.join(" "));
        }
    }
    // A usage error is status 2 as well, like a configuration error.
    let out = run(dir.path(), &["up", "--sip", "not-an-address"], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--sip"), "{}", stderr(&out));
}

#[test]
fn bad_configuration_exits_2_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        std::fs::write(dir.path().join(name), text).unwrap();
        name.to_owned()
    };
    let unknown = write("unknown.toml", "[sip]\nudpp = \"127.0.0.1:5060\"\n");
    let odd_port = write("odd.toml", "[media]\nport_min = 20001\n");
    let syntax = write("syntax.toml", "[media\nport_min = 1\n");
    let bad_enum = write("enum.toml", "[events]\nlog = \"rabbitmq\"\n");

    /// Arguments, environment, and words the error must contain.
    type Case<'a> = (Vec<&'a str>, Vec<(&'a str, &'a str)>, Vec<&'a str>);
    let cases: Vec<Case> = vec![
        (vec!["config", "check"], vec![("SWITCHBOARD_MEDIA__PORT_MIN", "abc")], vec!["media.port_min", "SWITCHBOARD_MEDIA__PORT_MIN"]),
        (vec!["--config", &unknown, "config", "check"], vec![], vec!["sip.udpp", "unknown key", "unknown.toml"]),
        (vec!["--config", &odd_port, "gateway"], vec![], vec!["media.port_min", "even"]),
        (vec!["--config", &syntax, "migrate"], vec![], vec!["syntax.toml"]),
        (vec!["--config", &bad_enum, "config", "check"], vec![], vec!["events.log", "rabbitmq"]),
        (vec!["config", "check"], vec![("SWITCHBOARD_SIP__TRANSPORT", "udp")], vec!["sip.transport", "SWITCHBOARD_SIP__TRANSPORT"]),
        (vec!["config", "check"], vec![("SWITCHBOARD_SIPP__UDP", "127.0.0.1:5060")], vec!["sipp", "SWITCHBOARD_SIPP"]),
        (vec!["connector"], vec![("SWITCHBOARD_SALESFORCE__USERNAME", "int@example.com")], vec!["salesforce.consumer_key"]),
        (
            vec!["connector"],
            vec![
                ("SWITCHBOARD_SALESFORCE__AUTH", "client_credentials"),
                ("SWITCHBOARD_SALESFORCE__LOGIN_URL", "https://acme.my.salesforce.com"),
                ("SWITCHBOARD_SALESFORCE__CONSUMER_KEY", "key"),
            ],
            vec!["salesforce.client_secret_file", "SWITCHBOARD_SALESFORCE__CLIENT_SECRET_FILE"],
        ),
        (vec!["config", "check"], vec![("SWITCHBOARD_SALESFORCE__AUTH", "password")], vec!["salesforce.auth", "client_credentials"]),
        (
            vec!["config", "check"],
            vec![("SWITCHBOARD_EVENTS__LOG", "kafka"), ("SWITCHBOARD_KAFKA__DEAD_LETTER_TOPIC", "switchboard.call-events")],
            vec!["kafka.dead_letter_topic"],
        ),
        (vec!["config", "check"], vec![("SWITCHBOARD_DATABASE__URL", "mysql://db/sb")], vec!["database.url"]),
        (vec!["config", "check"], vec![("SWITCHBOARD_LOG__LEVEL", "very-loud!")], vec!["log.level"]),
        (vec!["admin", "user", "list"], vec![("SWITCHBOARD_CONFIG", "missing.toml")], vec!["missing.toml", "does not exist"]),
    ];
    for (args, env, needles) in cases {
        let out = run(dir.path(), &args, &env);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "switchboard {args:?} with {env:?}: {err}");
        for needle in needles {
            assert!(err.contains(needle), "switchboard {args:?} with {env:?} should mention {needle:?}: {err}");
        }
    }
    // Nothing was created on the way out.
    assert!(!dir.path().join("switchboard-data").exists());
}

#[test]
fn config_check_prints_the_effective_configuration_without_secrets() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("sb.toml"),
        "data_dir = \"/srv/sb\"\n[sip]\nudp = \"127.0.0.1:5070\"\n[http]\nadmin_token = \"file-admin-token-0123456789\"\n\
         [salesforce]\nconsumer_key = \"key\"\nusername = \"int@example.com\"\nprivate_key_file = \"/etc/sb/sf.pem\"\n",
    )
    .unwrap();
    let text = ok(
        dir.path(),
        &["config", "check"],
        &[
            ("SWITCHBOARD_CONFIG", "sb.toml"),
            ("SWITCHBOARD_SIP__UDP", "0.0.0.0:5060"),
            ("SWITCHBOARD_SIP__TCP", ""),
            ("SWITCHBOARD_MEDIA__PORT_MIN", "24000"),
            ("SWITCHBOARD_RECORDINGS__RECORD_ALL", "false"),
            ("SWITCHBOARD_SALESFORCE__API_VERSION", "61.0"),
            ("SWITCHBOARD_DATABASE__URL", "postgres://sb:hunter2@db.internal/sb"),
            // Variables of other tools that share the prefix are not configuration.
            ("SWITCHBOARD_TEST_POSTGRES_URL", "postgres://other"),
            ("SWITCHBOARD_CACHE", "/root/.cache/switchboard"),
            ("SWITCHBOARD_BIN", "/usr/local/bin/switchboard"),
        ],
    );
    assert!(!text.contains("hunter2") && !text.contains("file-admin-token"), "secret printed:\n{text}");
    let body: String = text.lines().filter(|l| !l.starts_with('#')).collect::<Vec<_>>().join("\n");
    let effective: toml::Table = toml::from_str(&body).unwrap_or_else(|e| panic!("not TOML ({e}):\n{text}"));
    assert_eq!(effective["sip"]["udp"].as_str(), Some("0.0.0.0:5060"), "the variable wins over the file");
    assert_eq!(effective["data_dir"].as_str(), Some("/srv/sb"));
    assert_eq!(effective["database"]["url"].as_str(), Some("postgres://sb:***@db.internal/sb"));
    assert_eq!(effective["sip"].get("tcp"), None, "an empty variable unsets an optional key");
    assert_eq!(effective["media"]["port_min"].as_integer(), Some(24000));
    assert_eq!(effective["recordings"]["record_all"].as_bool(), Some(false));
    assert_eq!(effective["salesforce"]["api_version"].as_str(), Some("61.0"), "a number-like text stays text");
    assert_eq!(effective["salesforce"]["login_url"].as_str(), Some("https://login.salesforce.com"), "defaults are filled in");
    assert_eq!(effective["salesforce"]["username"].as_str(), Some("int@example.com"), "the file's values stay");

    // An all-digit secret from the environment is still a string.
    let text = ok(dir.path(), &["config", "check"], &[("SWITCHBOARD_HTTP__ADMIN_TOKEN", "12345678901234567890")]);
    assert!(text.contains("admin_token = \"<redacted>\""), "{text}");

    // The client credentials flow, its secret from the environment.
    let text = ok(
        dir.path(),
        &["config", "check"],
        &[
            ("SWITCHBOARD_SALESFORCE__AUTH", "client_credentials"),
            ("SWITCHBOARD_SALESFORCE__LOGIN_URL", "https://acme.my.salesforce.com"),
            ("SWITCHBOARD_SALESFORCE__CONSUMER_KEY", "3MVG9key"),
            ("SWITCHBOARD_SALESFORCE__CLIENT_SECRET", "0123456789ABCDEF0123456789ABCDEF"),
        ],
    );
    assert!(!text.contains("0123456789ABCDEF"), "secret printed:\n{text}");
    let body: String = text.lines().filter(|l| !l.starts_with('#')).collect::<Vec<_>>().join("\n");
    let effective: toml::Table = toml::from_str(&body).unwrap_or_else(|e| panic!("not TOML ({e}):\n{text}"));
    assert_eq!(effective["salesforce"]["auth"].as_str(), Some("client_credentials"));
    assert_eq!(effective["salesforce"]["client_secret"].as_str(), Some("<redacted>"));
    assert_eq!(effective["salesforce"].get("username"), None, "no JWT keys are shown");

    // Without a file the database defaults to a SQLite file in data_dir.
    let text = ok(dir.path(), &["config", "check"], &[("SWITCHBOARD_DATA_DIR", "/var/lib/sb")]);
    assert!(text.contains("sqlite:///var/lib/sb/switchboard.db"), "{text}");
}

#[test]
fn migrate_and_provision_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let env: &[(&str, &str)] = &[("SWITCHBOARD_DATA_DIR", "data")];

    // Roles and admin refuse an unmigrated database with the store's advice.
    for args in [&["admin", "user", "list"][..], &["gateway"][..], &["connector"][..]] {
        let out = run(d, args, env);
        assert_eq!(out.status.code(), Some(1), "switchboard {args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains("switchboard migrate"), "switchboard {args:?}: {}", stderr(&out));
    }

    let text = ok(d, &["migrate"], env);
    assert!(text.contains("switchboard.db"), "{text}");
    ok(d, &["migrate"], env); // idempotent
    assert!(d.join("data/switchboard.db").is_file());

    let ada = json(
        d,
        &["admin", "user", "add", "--name", "Ada Lovelace", "--extension", "101", "--salesforce-user-id", "005000000000001", "--json"],
        env,
    );
    let ada_id = ada["id"].as_str().expect("user id").to_owned();
    assert_eq!(ada["salesforce_user_id"], "005000000000001");

    let device = json(
        d,
        &["admin", "--json", "device", "add", "--user", &ada_id, "--name", "desk", "--contact", "sip:ada@127.0.0.1:5090"],
        env,
    );
    assert_eq!(device["user_id"], ada_id.as_str());

    // Digest credentials: the password from standard input, a weak one refused.
    let device_id = device["id"].as_str().expect("device id").to_owned();
    let mut set = switchboard(d);
    set.args(["admin", "device", "credentials", &device_id, "--username", "ada-desk", "--password-stdin", "--json"])
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = set.spawn().unwrap();
    {
        use std::io::Write as _;
        child.stdin.take().unwrap().write_all(b"correct horse battery\n").unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let set: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((set["sip_username"].as_str(), set["realm"].as_str()), (Some("ada-desk"), Some("switchboard")));
    let weak = run(d, &["admin", "device", "credentials", &device_id, "--username", "ada-desk", "--password", "short"], env);
    assert!(!weak.status.success());
    assert!(stderr(&weak).contains("at least 12 characters"), "{}", stderr(&weak));

    let number = json(d, &["admin", "number", "add", "+1 (415) 555-0100", "--user", &ada_id, "--json"], env);
    assert_eq!(number["number"], "+14155550100");

    let users = json(d, &["admin", "user", "list", "--json"], env);
    assert_eq!(users["users"], serde_json::json!([ada.clone()]));
    let devices = json(d, &["admin", "device", "list", "--user", &ada_id, "--json"], env);
    assert_eq!(devices["devices"], serde_json::json!([device.clone()]));
    let numbers = json(d, &["admin", "number", "list", "--json"], env);
    assert_eq!(numbers["numbers"], serde_json::json!([number.clone()]));

    // The table names the columns and shows the user's name next to a number.
    let table = ok(d, &["admin", "number", "list"], env);
    assert!(table.starts_with("NUMBER"), "{table}");
    assert!(table.contains("+14155550100") && table.contains("Ada Lovelace"), "{table}");

    // Bad input is refused with the directory's message and status 1.
    let out = run(d, &["admin", "user", "add", "--name", "Bob", "--extension", "101"], env);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("extension 101 is already taken"), "{}", stderr(&out));
    let out = run(d, &["admin", "device", "add", "--user", &ada_id, "--name", "x", "--contact", "ada@host"], env);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("contact_uri"), "{}", stderr(&out));

    let removed = json(d, &["admin", "number", "remove", "001 415 555 0100", "--json"], env);
    assert_eq!(removed["removed"]["id"], "+14155550100");
    let removed = json(d, &["admin", "user", "remove", &ada_id, "--json"], env);
    assert_eq!(removed["removed"]["kind"], "user");
    assert_eq!(json(d, &["admin", "device", "list", "--json"], env)["devices"], serde_json::json!([]));
    assert_eq!(ok(d, &["admin", "user", "list"], env), "no users\n");
}

#[test]
fn groups_and_the_main_line_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let env: &[(&str, &str)] = &[("SWITCHBOARD_DATA_DIR", "data")];
    ok(d, &["migrate"], env);
    let ada = json(d, &["admin", "user", "add", "--name", "Ada Lovelace", "--extension", "101", "--json"], env);
    let bob = json(d, &["admin", "user", "add", "--name", "Bob", "--json"], env);
    let (ada_id, bob_id) = (ada["id"].as_str().unwrap(), bob["id"].as_str().unwrap());

    let sales = json(d, &["admin", "group", "add", "--name", "Sales", "--extension", "200", "--json"], env);
    let sales_id = sales["id"].as_str().expect("group id");
    assert_eq!((&sales["name"], &sales["extension"]), (&serde_json::json!("Sales"), &serde_json::json!("200")));
    assert_eq!(ok(d, &["admin", "group", "member", "list", sales_id], env), "group Sales has no members
");

    // Members print in ring order, as the admin API's group object.
    json(d, &["admin", "group", "member", "add", sales_id, bob_id, "--json"], env);
    let detail = json(d, &["admin", "group", "member", "add", sales_id, ada_id, "--json"], env);
    assert_eq!(detail["id"], sales_id);
    assert_eq!(detail["members"], serde_json::json!([bob.clone(), ada.clone()]));
    let table = ok(d, &["admin", "group", "member", "list", sales_id], env);
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("ORDER") && lines[1].starts_with("1 ") && lines[1].contains("Bob"), "{table}");
    assert!(lines[2].starts_with("2 ") && lines[2].contains("Ada Lovelace"), "{table}");
    assert_eq!(json(d, &["admin", "group", "list", "--json"], env)["groups"], serde_json::json!([sales.clone()]));
    let table = ok(d, &["admin", "group", "list"], env);
    assert!(table.starts_with("ID") && table.contains("Bob, Ada Lovelace"), "{table}");

    // A number for the group that is the main line; one for Ada.
    let number = json(d, &["admin", "number", "add", "+1 415 555 0200", "--group", sales_id, "--main-line", "--json"], env);
    assert_eq!((&number["group_id"], &number["user_id"], &number["main_line"]), (&serde_json::json!(sales_id), &Value::Null, &serde_json::json!(true)));
    let number = json(d, &["admin", "number", "add", "+14155550100", "--user", ada_id, "--json"], env);
    assert_eq!(number["main_line"], false);
    let table = ok(d, &["admin", "number", "list"], env);
    let row = table.lines().find(|l| l.starts_with("+14155550200")).unwrap_or_else(|| panic!("{table}"));
    assert!(row.contains(&format!("group {sales_id}")) && row.contains("Sales") && row.contains("yes"), "{table}");
    let row = table.lines().find(|l| l.starts_with("+14155550100")).unwrap_or_else(|| panic!("{table}"));
    assert!(row.contains(&format!("user {ada_id}")) && !row.contains("yes"), "{table}");

    // --main-line on another number moves the main line there.
    json(d, &["admin", "number", "add", "+14155550100", "--user", ada_id, "--main-line", "--json"], env);
    let numbers = json(d, &["admin", "number", "list", "--json"], env);
    let flags: Vec<bool> = numbers["numbers"].as_array().unwrap().iter().map(|n| n["main_line"].as_bool().unwrap()).collect();
    assert_eq!(flags, vec![true, false], "{numbers}");

    // Refusals: one owner exactly, extensions unique across users and groups.
    let out = run(d, &["admin", "number", "add", "+14155550300"], env);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--user") && stderr(&out).contains("--group"), "{}", stderr(&out));
    let out = run(d, &["admin", "number", "add", "+14155550300", "--user", ada_id, "--group", sales_id], env);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let out = run(d, &["admin", "group", "add", "--name", "Support", "--extension", "101"], env);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains(&format!("extension 101 is already taken by user {ada_id}")), "{}", stderr(&out));
    let out = run(d, &["admin", "user", "add", "--name", "Eve", "--extension", "200"], env);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains(&format!("extension 200 is already taken by group {sales_id}")), "{}", stderr(&out));
    let out = run(d, &["admin", "number", "add", "+14155550200", "--user", bob_id], env);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains(&format!("assigned to group {sales_id}")), "{}", stderr(&out));

    let removed = json(d, &["admin", "group", "member", "remove", sales_id, bob_id, "--json"], env);
    assert_eq!((&removed["removed"]["kind"], &removed["removed"]["id"]), (&serde_json::json!("group member"), &serde_json::json!(bob_id)));
    let out = run(d, &["admin", "group", "member", "remove", sales_id, bob_id], env);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("group member"), "{}", stderr(&out));
    assert_eq!(json(d, &["admin", "group", "member", "list", sales_id, "--json"], env)["members"], serde_json::json!([ada.clone()]));

    assert_eq!(ok(d, &["admin", "group", "remove", sales_id], env), format!("removed group {sales_id}
"));
    assert_eq!(ok(d, &["admin", "group", "list"], env), "no groups
");
    let numbers = json(d, &["admin", "number", "list", "--json"], env);
    assert_eq!((&numbers["numbers"][1]["number"], &numbers["numbers"][1]["group_id"]), (&serde_json::json!("+14155550200"), &Value::Null));
}

#[test]
fn recording_policies_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let env: &[(&str, &str)] = &[("SWITCHBOARD_DATA_DIR", "data")];
    ok(d, &["migrate"], env);
    let ada = json(d, &["admin", "user", "add", "--name", "Ada Lovelace", "--json"], env);
    let ada_id = ada["id"].as_str().unwrap();
    let sales = json(d, &["admin", "group", "add", "--name", "Sales", "--extension", "200", "--json"], env);
    let sales_id = sales["id"].as_str().unwrap();
    assert_eq!(sales["record_calls"], false);
    json(d, &["admin", "group", "member", "add", sales_id, ada_id, "--json"], env);
    json(d, &["admin", "number", "add", "+14155550000", "--user", ada_id, "--main-line", "--json"], env);
    json(d, &["admin", "number", "add", "+14155550200", "--group", sales_id, "--json"], env);
    assert_eq!(ok(d, &["admin", "recording-policy", "list"], env), "no recording policies\n");

    // The main line by number, in another spelling; the group by name.
    let main = json(d, &["admin", "recording-policy", "set", "--number", "+1 415 555 0000", "--json"], env);
    assert_eq!((&main["number"], &main["main_line"], &main["record_calls"]), (&json_of("+14155550000"), &json_of(true), &json_of(true)));
    let text = ok(d, &["admin", "recording-policy", "set", "--group", "sales"], env);
    assert_eq!(text, format!("calls for group Sales ({sales_id}) are recorded for admins only\n"));
    let policies = json(d, &["admin", "recording-policy", "list", "--json"], env);
    assert_eq!(policies["numbers"], serde_json::json!([main.clone()]));
    assert_eq!((policies["groups"][0]["id"].as_str(), &policies["groups"][0]["record_calls"]), (Some(sales_id), &json_of(true)));
    let table = ok(d, &["admin", "recording-policy", "list"], env);
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("SCOPE"), "{table}");
    assert!(lines[1].starts_with("number") && lines[1].contains("+14155550000") && lines[1].contains("Ada Lovelace") && lines[1].contains("yes"), "{table}");
    assert!(lines[2].starts_with("group") && lines[2].contains(sales_id) && lines[2].contains("Sales"), "{table}");
    // The number and group listings show the flag.
    let numbers = ok(d, &["admin", "number", "list"], env);
    assert!(numbers.lines().next().unwrap().contains("ADMIN RECORDING"), "{numbers}");
    let group_number = numbers.lines().find(|l| l.starts_with("+14155550200")).unwrap_or_else(|| panic!("{numbers}"));
    assert!(!group_number.contains("yes"), "the group's number has no policy of its own: {numbers}");

    // Refusals: status 1 with the directory's message, 2 for usage errors.
    let out = run(d, &["admin", "recording-policy", "set", "--number", "+14155550999"], env);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("number \"+14155550999\" not found"), "{}", stderr(&out));
    let out = run(d, &["admin", "recording-policy", "set", "--group", "Support"], env);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("no group has the id or name \"Support\""), "{}", stderr(&out));
    let other_sales = json(d, &["admin", "group", "add", "--name", "SALES", "--json"], env);
    let out = run(d, &["admin", "recording-policy", "clear", "--group", "Sales"], env);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("2 groups are named") && err.contains(other_sales["id"].as_str().unwrap()), "{err}");
    for args in [&["admin", "recording-policy", "set"][..], &["admin", "recording-policy", "set", "--number", "+14155550000", "--group", sales_id]] {
        let out = run(d, args, env);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
    }

    // Cleared by id and by number: nothing left.
    let cleared = json(d, &["admin", "recording-policy", "clear", "--group", sales_id, "--json"], env);
    assert_eq!((&cleared["record_calls"], &cleared["members"]), (&json_of(false), &serde_json::json!([ada.clone()])));
    let text = ok(d, &["admin", "recording-policy", "clear", "--number", "+14155550000"], env);
    assert_eq!(text, "calls on number +14155550000 (the main line) are no longer recorded for admins\n");
    assert_eq!(json(d, &["admin", "recording-policy", "list", "--json"], env), serde_json::json!({"numbers": [], "groups": []}));
}

fn json_of<T: serde::Serialize>(value: T) -> Value {
    serde_json::to_value(value).unwrap()
}

/// A running `switchboard up`, killed if the test fails before stopping it.
struct Up {
    child: Option<Child>,
}

impl Up {
    fn child(&mut self) -> &mut Child {
        self.child.as_mut().expect("still owned by the test")
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn http_get(addr: SocketAddr, path: &str) -> String {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(10)).expect("connect to the HTTP listener");
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

fn field<'a>(banner: &'a str, label: &str) -> &'a str {
    banner
        .lines()
        .find_map(|l| l.trim_start().strip_prefix(label))
        .unwrap_or_else(|| panic!("no {label} line in the banner:\n{banner}"))
        .trim()
}

#[test]
fn up_prints_where_everything_is_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut command = switchboard(dir.path());
    command
        .args(["up", "--sip", "127.0.0.1:0", "--http", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .env("SWITCHBOARD_MEDIA__PORT_MIN", "31000")
        .env("SWITCHBOARD_MEDIA__PORT_MAX", "31099")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(dir.path().join("up.log")).unwrap());
    let mut up = Up { child: Some(command.spawn().expect("start switchboard up")) };

    // Read the banner line by line until its last line, with a deadline.
    let (tx, rx) = mpsc::channel();
    let out = up.child().stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            if tx.send(line.unwrap_or_default()).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    let mut banner = String::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                banner.push_str(&line);
                banner.push('\n');
                if line.starts_with("Press Ctrl-C") {
                    break;
                }
            }
            Err(_) => {
                let _ = up.child().kill();
                let err = std::fs::read_to_string(dir.path().join("up.log")).unwrap_or_default();
                panic!("no complete banner from `switchboard up`:\n{banner}\nstderr:\n{err}");
            }
        }
    }

    // SIP: real, non-zero ports for both transports.
    let sip = field(&banner, "SIP");
    let ports: Vec<u16> = sip
        .split(", ")
        .map(|part| part.rsplit(':').next().unwrap().parse().unwrap_or_else(|_| panic!("SIP line: {sip}")))
        .collect();
    assert!(sip.starts_with("udp 127.0.0.1:") && sip.contains("tcp 127.0.0.1:"), "{banner}");
    assert!(ports.len() == 2 && ports.iter().all(|p| *p != 0), "{banner}");

    // HTTP: the printed address answers /healthz and /metrics.
    let http: SocketAddr = field(&banner, "HTTP")
        .strip_prefix("http://")
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("HTTP line: {banner}"));
    assert_ne!(http.port(), 0);
    assert!(http_get(http, "/healthz").starts_with("HTTP/1.1 200"), "healthz");
    assert!(http_get(http, "/metrics").starts_with("HTTP/1.1 200"), "metrics");
    assert!(banner.contains(&format!("http://{http}/metrics")), "{banner}");

    // Data: the SQLite file (migrated on the spot) and the recordings dir.
    let db_file = data.join("switchboard.db");
    assert!(field(&banner, "Database").contains(&db_file.display().to_string()), "{banner}");
    assert!(field(&banner, "Recordings").contains(&data.join("recordings").display().to_string()), "{banner}");
    assert!(field(&banner, "Salesforce").starts_with("not configured"), "{banner}");
    let users = json(dir.path(), &["admin", "user", "list", "--json"], &[("SWITCHBOARD_DATA_DIR", data.to_str().unwrap())]);
    assert_eq!(users["users"], serde_json::json!([]));

    // SIGTERM stops it gracefully with status 0.
    let pid = up.child().id().to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status().expect("run kill");
    assert!(killed.success());
    let (done_tx, done_rx) = mpsc::channel();
    let mut child = up.child.take().unwrap();
    std::thread::spawn(move || {
        let _ = done_tx.send(child.wait());
    });
    let status = done_rx
        .recv_timeout(SHUTDOWN_TIMEOUT)
        .unwrap_or_else(|_| panic!("switchboard up did not stop within {SHUTDOWN_TIMEOUT:?} of SIGTERM"))
        .unwrap();
    assert_eq!(status.code(), Some(0), "exit status after SIGTERM");
}

/// A fresh database on the PostgreSQL server of
/// `SWITCHBOARD_TEST_POSTGRES_URL`, dropped when the test ends.
struct PostgresDb {
    server: String,
    name: String,
    url: String,
}

impl PostgresDb {
    fn create(server: &str) -> Self {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
        let name = format!("sb_cli_{}_{nanos}", std::process::id());
        admin_sql(server, &format!("CREATE DATABASE \"{name}\""));
        let (without_query, query) = match server.split_once('?') {
            Some((base, q)) => (base, format!("?{q}")),
            None => (server, String::new()),
        };
        let base = without_query.rsplit_once('/').map(|(b, _)| b).expect("the URL names a database");
        let url = format!("{base}/{name}{query}");
        Self { server: server.to_owned(), name, url }
    }
}

impl Drop for PostgresDb {
    fn drop(&mut self) {
        admin_sql(&self.server, &format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name));
    }
}

fn admin_sql(server: &str, sql: &str) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let db = switchboard_store::Database::connect(server).await.expect("connect to the PostgreSQL test server");
        switchboard_store::sqlx::query(sql).execute(db.pool()).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
        db.close().await;
    });
}

#[test]
fn migrate_and_provision_on_postgres() {
    let Ok(server) = std::env::var("SWITCHBOARD_TEST_POSTGRES_URL") else {
        println!("migrate_and_provision_on_postgres: skipped because SWITCHBOARD_TEST_POSTGRES_URL is not set");
        return;
    };
    let pg = PostgresDb::create(&server);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let env: &[(&str, &str)] = &[("SWITCHBOARD_DATABASE__URL", &pg.url)];

    let out = run(d, &["gateway"], env);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("switchboard migrate"), "{}", stderr(&out));

    ok(d, &["migrate"], env);
    ok(d, &["migrate"], env);
    let user = json(d, &["admin", "user", "add", "--name", "Ada", "--salesforce-user-id", "005000000000001AAA", "--json"], env);
    let user_id = user["id"].as_str().unwrap();
    json(d, &["admin", "number", "add", "0044 20 7946 0000", "--user", user_id, "--json"], env);
    let numbers = json(d, &["admin", "number", "list", "--json"], env);
    assert_eq!(numbers["numbers"][0]["number"], "+442079460000");
    assert_eq!(numbers["numbers"][0]["user_id"], user_id);
    assert_eq!(json(d, &["admin", "user", "list", "--json"], env)["users"], serde_json::json!([user]));
    let group = json(d, &["admin", "group", "add", "--name", "Sales", "--json"], env);
    let group_id = group["id"].as_str().unwrap();
    let detail = json(d, &["admin", "group", "member", "add", group_id, user_id, "--json"], env);
    assert_eq!(detail["members"], serde_json::json!([user]));
    let number = json(d, &["admin", "number", "add", "+14155550200", "--group", group_id, "--main-line", "--json"], env);
    assert_eq!((&number["group_id"], &number["main_line"]), (&serde_json::json!(group_id), &serde_json::json!(true)));
    let recorded = json(d, &["admin", "recording-policy", "set", "--group", group_id, "--json"], env);
    assert_eq!(recorded["record_calls"], true);
    json(d, &["admin", "recording-policy", "set", "--number", "+14155550200", "--json"], env);
    let policies = json(d, &["admin", "recording-policy", "list", "--json"], env);
    assert_eq!((policies["numbers"][0]["number"].as_str(), policies["groups"][0]["id"].as_str()), (Some("+14155550200"), Some(group_id)));
    // Nothing was written to a SQLite file on the side.
    assert!(!d.join("switchboard-data").exists());
}
