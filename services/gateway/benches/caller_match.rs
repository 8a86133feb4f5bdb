//! Caller matching latency (F14: matches in under 300 ms p95 from ring).
//!
//! What one ringing call costs the gateway: finding the agent's connected
//! session, reading the caller in every format, one SOSL search with the
//! agent's token against the Salesforce emulator holding `--records`
//! Contacts (plus Leads and Accounts), and reading the answer — first for
//! `--callers` distinct callers (cache misses, `--concurrency` at once, as
//! a burst of calls), then for the same callers again (cache hits).
//! `--salesforce-ms` adds latency to every Salesforce answer, to stand for
//! a real org across the internet.
//!
//! Run: `cargo bench -p switchboard-gateway --bench caller_match -- [--records N]
//! [--callers N] [--concurrency N] [--salesforce-ms N]`

use std::sync::Arc;
use std::time::{Duration, Instant};

use salesforce_emulator::{Browser, Emulator, EmulatorConfig, Fault, TestCredentials};
use serde_json::json;
use switchboard_gateway::api::auth::salesforce::SalesforceLogin;
use switchboard_gateway::api::auth::seal::Sealer;
use switchboard_gateway::api::auth::Sessions;
use switchboard_gateway::directory::{Directory, NewUser};
use switchboard_gateway::salesforce::{numbers, MatchStatus, SalesforceApi, SalesforceContext};
use switchboard_store::Database;

const KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The ways people type a number into Salesforce.
fn typed(n: u64) -> String {
    let (a, b) = (n / 10_000 % 1000, n % 10_000);
    match n % 4 {
        0 => format!("(415) {a:03}-{b:04}"),
        1 => format!("+1 415 {a:03} {b:04}"),
        2 => format!("415.{a:03}.{b:04}"),
        _ => format!("1415{a:03}{b:04}"),
    }
}

fn e164(n: u64) -> String {
    format!("+1415{:03}{:04}", n / 10_000 % 1000, n % 10_000)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let (records, callers, concurrency, delay) = (arg("--records", 10_000), arg("--callers", 400), arg("--concurrency", 20), arg("--salesforce-ms", 0));

    let credentials = TestCredentials::generate().unwrap();
    let emulator = Emulator::start(EmulatorConfig::new(credentials.certificate_pem.clone()), "127.0.0.1:0".parse().unwrap()).await.unwrap();
    let agent_sf = emulator.add_user("agent@acme.example").unwrap();
    // Numbers 2_000_000 + i: every third has a Contact, every seventh a
    // Lead too, every eleventh an Account; callers are half known.
    for i in 0..records {
        let n = 2_000_000 + i;
        emulator.insert("Contact", json!({"FirstName": "Caller", "LastName": format!("No {i}"), "Phone": typed(n), "OwnerId": agent_sf})).unwrap();
        if i % 7 == 0 {
            emulator.insert("Lead", json!({"LastName": format!("Lead {i}"), "Company": "Prospect", "MobilePhone": typed(n + 1)})).unwrap();
        }
        if i % 11 == 0 {
            emulator.insert("Account", json!({"Name": format!("Account {i}"), "Phone": typed(n + 2)})).unwrap();
        }
    }

    let dir = tempfile::tempdir().unwrap();
    let db = Database::connect(&format!("sqlite://{}", dir.path().join("bench.db").display())).await.unwrap();
    db.migrate().await.unwrap();
    let user = Directory::new(db.clone()).create_user(NewUser { name: "Agent".into(), salesforce_user_id: Some(agent_sf.clone()), ..Default::default() }).await.unwrap();
    let sealer = Sealer::from_base64(KEY).unwrap();
    let callback = "http://127.0.0.1:9/v1/auth/salesforce/callback";
    emulator.add_callback_url(&emulator.consumer_key(), callback).unwrap();
    let login =
        SalesforceLogin::new(&emulator.url(), emulator.consumer_key(), Some(emulator.consumer_secret()), callback.into(), None, sealer.clone()).unwrap();
    // The agent connects with Salesforce, as in the browser.
    emulator.set_browser(Browser { username: Some("agent@acme.example".into()), deny: false }).unwrap();
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let answer = http.get(login.authorize_url("http://127.0.0.1:9/")).send().await.unwrap();
    let back = reqwest::Url::parse(answer.headers()["location"].to_str().unwrap()).unwrap();
    let param = |k: &str| back.query_pairs().find(|(n, _)| n == k).map(|(_, v)| v.into_owned()).unwrap();
    let signed_in = login.finish(&param("code"), &param("state")).await.unwrap();
    let sessions = Sessions::new(db.clone(), sealer, Duration::from_secs(3600));
    sessions.create(&user.id, Some(signed_in.grant)).await.unwrap();

    let context = SalesforceContext::new(
        SalesforceApi::new("62.0", Duration::from_secs(5), Some(login), sessions),
        numbers::region("US").unwrap(),
        Duration::from_secs(300),
        100_000,
    );
    if delay > 0 {
        emulator.inject_fault(Fault::Delay { millis: delay, times: u32::MAX });
    }
    // Callers: odd ones are in the org, even ones are not.
    let numbers: Vec<String> = (0..callers).map(|i| if i % 2 == 1 { e164(2_000_000 + (i * 7919) % records) } else { e164(9_000_000 + i) }).collect();

    println!("records: {records} Contacts, {} Leads, {} Accounts; callers: {callers}; concurrency: {concurrency}; added Salesforce latency: {delay} ms", records / 7 + 1, records / 11 + 1);
    println!("| pass | lookups | found | p50 | p95 | p99 | max | lookups/s |");
    println!("|---|---|---|---|---|---|---|---|");
    for pass in ["cold (cache miss)", "warm (cache hit)"] {
        let started = Instant::now();
        let semaphore = Arc::new(tokio::sync::Semaphore::new(concurrency as usize));
        let mut tasks = tokio::task::JoinSet::new();
        for number in numbers.clone() {
            let (context, user_id, permit) = (context.clone(), user.id.clone(), semaphore.clone().acquire_owned().await.unwrap());
            tasks.spawn(async move {
                let t0 = Instant::now();
                let grant = context.api().for_user(&user_id).await.expect("connected");
                let matches = context.match_caller(&grant, &number).await;
                drop(permit);
                (t0.elapsed(), matches.status)
            });
        }
        let mut latencies = Vec::new();
        let mut found = 0;
        while let Some(done) = tasks.join_next().await {
            let (latency, status) = done.unwrap();
            assert!(matches!(status, MatchStatus::Found | MatchStatus::NotFound), "a lookup failed: {status:?}");
            found += usize::from(status == MatchStatus::Found);
            latencies.push(latency);
        }
        let wall = started.elapsed();
        latencies.sort();
        println!(
            "| {pass} | {} | {found} | {} | {} | {} | {} | {:.0} |",
            latencies.len(),
            ms(percentile(&latencies, 0.50)),
            ms(percentile(&latencies, 0.95)),
            ms(percentile(&latencies, 0.99)),
            ms(*latencies.last().unwrap()),
            latencies.len() as f64 / wall.as_secs_f64()
        );
    }
    emulator.shutdown().await;
}
