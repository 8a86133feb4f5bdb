//! The connector under failure, seen from outside: calls go in as
//! `CallEvent` records on a real Kafka-protocol broker, and what comes out
//! is judged only by the Tasks (and Cases) in the Salesforce emulator, the
//! dead-letter topic, the group's committed offsets and the connector's
//! [`Progress`](switchboard_connector::Progress) — never by its tables or
//! its way of batching writes.
//!
//! - a second consumer group replaying the topic from offset 0 changes
//!   nothing in Salesforce and sends it no write;
//! - `kill -9` of the `switchboard connector` process while a Task write is
//!   in flight, then a restart: every Task once, with its final content;
//! - Salesforce down for a minute (first unreachable, then answering 503)
//!   while calls keep coming: nothing is logged or committed past the
//!   first call it could not log, nothing is dead-lettered, and the backlog
//!   drains once it is back.
//!
//! They need a real broker (`SWITCHBOARD_TEST_KAFKA`, or tansu from
//! `SWITCHBOARD_TEST_TANSU_BIN`), and the `kill -9` test PostgreSQL
//! (`SWITCHBOARD_TEST_POSTGRES_URL`) and the `switchboard` binary
//! (`SWITCHBOARD_BIN`, or `cargo build -p switchboard`):
//! `eval "$(scripts/test --print-env)"` provides them all.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::process::{toml_string, ConnectorProcess, PostgresDb};
use common::*;
use rdkafka::producer::FutureProducer;
use salesforce_emulator::{Emulator, Fault};
use serde_json::{json, Value};
use switchboard_connector::{ConnectorConfig, KafkaConsumerConfig, SalesforceConfig, SourceConfig};
use switchboard_proto::v1::{self, call_event::Kind};
use switchboard_proto::CallEvent;
use switchboard_test_support::kafka::{Broker, Placed};

const ANN: &str = "u-ann";
const BOB: &str = "u-bob";

/// The agents of the workload, linked to users of the org.
#[derive(Clone)]
struct Agents {
    ann: String,
    bob: String,
}

impl Agents {
    fn of(world: &World) -> Agents {
        let bob = world.emulator.add_user("bob.agent@switchboard.test").expect("second agent user");
        Agents { ann: world.agent_sf_id.clone(), bob }
    }
}

/// A Task a call must end with, and what it must say.
#[derive(Debug, Clone)]
struct ExpectedTask {
    user_id: &'static str,
    owner_id: String,
    disposition: &'static str,
    talk_seconds: u32,
    /// The recording's link, when the call was recorded: its last event,
    /// so present only if the Task holds the final content.
    recording_url: Option<String>,
    /// `WhatId` and `WhoId` when the call was linked.
    what_id: Option<String>,
    who_id: Option<String>,
}

/// One call of the workload: its events in order and its Tasks.
#[derive(Debug, Clone)]
struct Call {
    id: String,
    events: Vec<CallEvent>,
    tasks: Vec<ExpectedTask>,
}

impl Call {
    /// Call number `n`: every third one is answered by Ann and handed over
    /// to Bob (a Task each), the others answered by Ann alone; every fourth
    /// one is not recorded, so that its last record (`ended`) is the one
    /// that calls for its writes. Talk times differ from call to call.
    #[allow(clippy::manual_is_multiple_of)] // `is_multiple_of` needs Rust 1.87, the workspace 1.85
    fn new(n: usize, agents: &Agents) -> Call {
        Call::build(n, agents, n % 4 != 0, n % 3 == 2)
    }

    /// Call number `n`, recorded (the recording is its last event) or not,
    /// handed over from Ann to Bob or not.
    fn build(n: usize, agents: &Agents, recorded: bool, transferred: bool) -> Call {
        let id = uuid::Uuid::now_v7().to_string();
        let talk_seconds = 30 + n as u32;
        let mut events = call_events(&id, ANN, &agents.ann);
        for e in &mut events {
            if let Some(Kind::Ended(ended)) = &mut e.kind {
                ended.talk_seconds = talk_seconds;
                ended.total_seconds = talk_seconds + 6;
            }
        }
        if !recorded {
            events.retain(|e| !matches!(e.kind, Some(Kind::RecordingAvailable(_))));
        }
        let recording_url = recorded.then(|| format!("https://switchboard.example.com/recordings/{id}"));
        let mut tasks = vec![ExpectedTask {
            user_id: ANN,
            owner_id: agents.ann.clone(),
            disposition: "answered",
            talk_seconds,
            recording_url: recording_url.clone(),
            what_id: None,
            who_id: None,
        }];
        if transferred {
            // started, ringing, answered | transferred | ended[, recording]
            let transferred = event(
                &id,
                4,
                Kind::Transferred(v1::CallTransferred {
                    from: agent(ANN, &agents.ann),
                    to: agent(BOB, &agents.bob),
                    kind: v1::TransferKind::Blind as i32,
                    to_number: String::new(),
                }),
            );
            events.insert(3, transferred);
            // Answered at 3 s, handed over 10 s later, ended when the
            // call's talk time is up: Ann talked 10 s, Bob the rest.
            let answered_at = T0 + 3_000;
            for (i, e) in events.iter_mut().enumerate() {
                e.sequence = i as u64 + 1;
                e.event_id = format!("{id}-evt-{}", e.sequence);
                e.occurred_at_ms = match e.kind {
                    Some(Kind::Transferred(_)) => answered_at + 10_000,
                    Some(Kind::Ended(_)) => answered_at + i64::from(talk_seconds) * 1000,
                    Some(Kind::RecordingAvailable(_)) => answered_at + i64::from(talk_seconds) * 1000 + 1_000,
                    _ => T0 + e.sequence as i64 * 1000,
                };
            }
            tasks[0].disposition = "transferred";
            tasks[0].talk_seconds = 10;
            tasks.push(ExpectedTask {
                user_id: BOB,
                owner_id: agents.bob.clone(),
                disposition: "answered",
                talk_seconds: talk_seconds - 10,
                recording_url,
                what_id: None,
                who_id: None,
            });
        }
        Call { id, events, tasks }
    }

    /// Links the call to `contact` after it ended, and has Ann ask for a
    /// new Case for it: the Case is created first, the Task points at it.
    fn with_new_case(mut self, contact: &str, assignment_id: &str) -> Call {
        let next = self.events.len() as u64 + 1;
        self.events.push(event(
            &self.id,
            next,
            Kind::Related(v1::CallRelated {
                user_id: ANN.into(),
                record_id: contact.into(),
                object_type: "Contact".into(),
                name: "Carla Caller".into(),
            }),
        ));
        self.events.push(event(
            &self.id,
            next + 1,
            Kind::Assigned(v1::CallAssigned {
                assignment_id: assignment_id.into(),
                user_id: ANN.into(),
                object_type: "Case".into(),
                record_id: String::new(),
                subject: "Handset hums".into(),
                description: "Hums on every call since Monday".into(),
                name: String::new(),
            }),
        ));
        for task in &mut self.tasks {
            task.who_id = Some(contact.to_owned());
        }
        self
    }
}

fn calls(numbers: std::ops::Range<usize>, agents: &Agents) -> Vec<Call> {
    numbers.map(|n| Call::new(n, agents)).collect()
}

fn record_count(calls: &[Call]) -> u64 {
    calls.iter().map(|c| c.events.len() as u64).sum()
}

fn task_count(calls: &[Call]) -> usize {
    calls.iter().map(|c| c.tasks.len()).sum()
}

/// Produces every event of `calls`, call after call; returns where each
/// record landed, by call id.
async fn produce_calls(producer: &FutureProducer, topic: &str, calls: &[Call]) -> BTreeMap<String, Vec<Placed>> {
    let mut placed = BTreeMap::new();
    for call in calls {
        placed.insert(call.id.clone(), produce_events(producer, topic, &call.events).await);
    }
    placed
}

/// Whether the org holds exactly the Tasks of `calls` (and no other), each
/// once and with its final content; the first difference otherwise.
fn check_tasks(emulator: &Emulator, calls: &[Call]) -> Result<(), String> {
    let tasks = emulator.tasks();
    let mut keys = BTreeMap::<String, usize>::new();
    for task in &tasks {
        *keys.entry(task["Switchboard_Key__c"].as_str().unwrap_or("<no key>").to_owned()).or_default() += 1;
    }
    if let Some((key, n)) = keys.iter().find(|(_, n)| **n > 1) {
        return Err(format!("{n} Tasks share the external id {key}"));
    }
    for call in calls {
        for want in &call.tasks {
            let key = format!("{}:{}", call.id, want.user_id);
            let Some(task) = tasks.iter().find(|t| t["Switchboard_Key__c"] == key.as_str()) else {
                return Err(format!("no Task {key} (of {} Tasks)", tasks.len()));
            };
            let description = task["Description"].as_str().unwrap_or("");
            let recording = match &want.recording_url {
                Some(url) => description.contains(url.as_str()),
                None => !description.contains("Recording"),
            };
            let differences: Vec<String> = [
                ("CallObject", task["CallObject"] == call.id.as_str()),
                ("OwnerId", task["OwnerId"] == want.owner_id.as_str()),
                ("CallDisposition", task["CallDisposition"] == want.disposition),
                ("CallDurationInSeconds", task["CallDurationInSeconds"] == want.talk_seconds),
                ("Status", task["Status"] == "Completed"),
                ("Description (recording link)", recording),
                ("WhatId", task["WhatId"].as_str() == want.what_id.as_deref()),
                ("WhoId", task["WhoId"].as_str() == want.who_id.as_deref()),
            ]
            .into_iter()
            .filter(|(_, ok)| !ok)
            .map(|(field, _)| field.to_owned())
            .collect();
            if !differences.is_empty() {
                return Err(format!("Task {key} differs in {differences:?}: {task:#}"));
            }
        }
    }
    let expected = task_count(calls);
    if tasks.len() != expected {
        let known: BTreeSet<String> =
            calls.iter().flat_map(|c| c.tasks.iter().map(move |t| format!("{}:{}", c.id, t.user_id))).collect();
        let extra: Vec<&Value> = tasks.iter().filter(|t| !known.contains(t["Switchboard_Key__c"].as_str().unwrap_or(""))).collect();
        return Err(format!("{} Tasks, {expected} expected; not expected: {extra:#?}", tasks.len()));
    }
    Ok(())
}

/// Waits until the org holds exactly the Tasks of `calls` with their final
/// content.
async fn until_tasks(emulator: &Emulator, calls: &[Call], timeout: Duration) {
    await_condition(&format!("the {} Tasks of {} calls", task_count(calls), calls.len()), timeout, || async {
        check_tasks(emulator, calls)
    })
    .await
}

/// The call-event topic and its dead-letter topic, fresh for one test.
struct Topics {
    events: String,
    dead_letters: String,
}

impl Topics {
    async fn create(broker: &Broker, partitions: i32) -> Topics {
        let suffix = uuid::Uuid::now_v7().simple().to_string();
        let topics = Topics { events: format!("call-events-{suffix}"), dead_letters: format!("call-events-dead-letters-{suffix}") };
        broker.create_topic(&topics.events, partitions).await;
        broker.create_topic(&topics.dead_letters, 1).await;
        topics
    }

    fn consumer(&self, broker: &Broker, group: &str) -> KafkaConsumerConfig {
        let mut kafka = KafkaConsumerConfig::new(broker.bootstrap(), &self.events, &self.dead_letters);
        kafka.group_id = group.to_owned();
        kafka.properties.extend(broker.consumer_properties());
        kafka
    }
}

fn kafka_config(salesforce: SalesforceConfig, kafka: KafkaConsumerConfig) -> ConnectorConfig {
    ConnectorConfig { salesforce: Some(salesforce), source: SourceConfig::Kafka(kafka), poll_interval_ms: 200 }
}

// --- 1. replay ------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_consumer_group_replaying_the_topic_from_offset_zero_changes_nothing() {
    let world = World::new().await;
    let agents = Agents::of(&world);
    let contact = world.emulator.insert("Contact", json!({"LastName": "Caller", "FirstName": "Carla"})).unwrap();
    let broker = Broker::real(world.dir.path()).await;
    let topics = Topics::create(&broker, 3).await;
    let producer = broker.producer();

    let assignment_id = uuid::Uuid::now_v7().to_string();
    let mut workload = calls(0..12, &agents);
    workload[0] = workload[0].clone().with_new_case(&contact, &assignment_id);
    produce_calls(&producer, &topics.events, &workload).await;
    let records = record_count(&workload);

    let config = kafka_config(world.salesforce(), topics.consumer(&broker, "connector-first"));
    let mut running = Running::start(config, &world.db).await;
    let progress = running.until_records(records).await;
    running.stop().await;
    assert_eq!(progress.dead_letters, 0);
    let cases = world.emulator.records("Case");
    assert_eq!(cases.len(), 1, "one new Case: {cases:#?}");
    assert_eq!(cases[0]["Switchboard_Assignment_Id__c"], assignment_id.as_str());
    for task in &mut workload[0].tasks {
        task.what_id = cases[0]["Id"].as_str().map(str::to_owned);
    }
    check_tasks(&world.emulator, &workload).unwrap();

    let tasks = world.emulator.tasks();
    let before = serde_json::to_string_pretty(&tasks).unwrap();
    let cases_before = serde_json::to_string_pretty(&cases).unwrap();
    let stats = world.emulator.stats();

    // Same database, same org, a group that never committed: it reads the
    // topic from offset 0.
    let config = kafka_config(world.salesforce(), topics.consumer(&broker, "connector-replay"));
    let mut replay = Running::start(config, &world.db).await;
    let progress = replay.until_records(records).await;
    replay.stop().await;
    assert_eq!(progress.records, records, "the whole topic was read again");
    assert_eq!(progress.dead_letters, 0);
    assert!(broker.caught_up("connector-replay", &topics.events).await.unwrap(), "the replay committed the whole topic");

    let after = serde_json::to_string_pretty(&world.emulator.tasks()).unwrap();
    assert!(before == after, "the replay changed the Tasks:\nbefore: {before}\nafter: {after}");
    let cases_after = serde_json::to_string_pretty(&world.emulator.records("Case")).unwrap();
    assert!(cases_before == cases_after, "the replay changed the Cases:\nbefore: {cases_before}\nafter: {cases_after}");
    let replayed = world.emulator.stats();
    assert_eq!(
        replayed.api_calls - stats.api_calls,
        PREFLIGHT_API_CALLS,
        "the replay made no request to Salesforce but the start-up preflight: the state says Salesforce holds every Task"
    );
    assert_eq!(broker.record_count(&topics.dead_letters).await.unwrap(), 0, "no dead letter");
}

// --- 2. kill -9 -------------------------------------------------------------------

/// The configuration file of a `switchboard connector` process.
fn connector_toml(database_url: &str, http: SocketAddr, kafka: &KafkaConsumerConfig, salesforce: &SalesforceConfig) -> String {
    let properties: String =
        kafka.properties.iter().map(|(key, value)| format!("{} = {}\n", toml_string(key), toml_string(value))).collect();
    format!(
        r#"[database]
url = {database_url}

[http]
listen = {http}

[events]
log = "kafka"

[kafka]
brokers = {brokers}
topic = {topic}
group_id = {group_id}
dead_letter_topic = {dead_letter_topic}

[kafka.properties]
{properties}
[salesforce]
login_url = {login_url}
consumer_key = {consumer_key}
username = {username}
private_key_file = {private_key_file}
request_timeout_secs = {request_timeout_secs}
retry_initial_ms = {retry_initial_ms}
retry_max_ms = {retry_max_ms}
limit_backoff_secs = {limit_backoff_secs}

[log]
level = "info,switchboard_connector=debug"
"#,
        database_url = toml_string(database_url),
        http = toml_string(&http.to_string()),
        brokers = toml_string(&kafka.brokers),
        topic = toml_string(&kafka.topic),
        group_id = toml_string(&kafka.group_id),
        dead_letter_topic = toml_string(&kafka.dead_letter_topic),
        login_url = toml_string(&salesforce.login_url),
        consumer_key = toml_string(&salesforce.consumer_key),
        username = toml_string(&salesforce.username),
        private_key_file = toml_string(&salesforce.private_key_file.display().to_string()),
        request_timeout_secs = salesforce.request_timeout_secs,
        retry_initial_ms = salesforce.retry_initial_ms,
        retry_max_ms = salesforce.retry_max_ms,
        limit_backoff_secs = salesforce.limit_backoff_secs,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connector_killed_with_sigkill_mid_write_loses_nothing_and_duplicates_nothing() {
    let world = World::new().await;
    let agents = Agents::of(&world);
    let postgres = PostgresDb::create("kill9").await;
    let broker = Broker::real(world.dir.path()).await;
    let topics = Topics::create(&broker, 3).await;
    let producer = broker.producer();
    let group = "connector-kill9";

    let http: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut salesforce = world.salesforce();
    // Longer than the injected delay: the killed write is in flight, not
    // timed out.
    salesforce.request_timeout_secs = 10;
    let config_file = world.dir.path().join("connector.toml");
    let toml = connector_toml(&postgres.url, http, &topics.consumer(&broker, group), &salesforce);
    std::fs::write(&config_file, toml).unwrap();

    let mut connector = ConnectorProcess::start(&config_file, http, world.dir.path(), "connector-1").await;
    println!("switchboard connector running as pid {}", connector.pid());

    // The first calls go through at full speed.
    let workload = calls(0..60, &agents);
    let (first, second) = workload.split_at(20);
    produce_calls(&producer, &topics.events, first).await;
    until_tasks(&world.emulator, first, Duration::from_secs(60)).await;
    connector.assert_running();

    // Salesforce slows down: every request is answered 5 s late. The next
    // call is one whose last record (`ended`) calls for its two writes, so
    // committing that record before Salesforce took them would lose its
    // Tasks for good. Once its first write is in the org's hands, the rest
    // of the calls pile up behind it, and the process is killed.
    let (in_flight, backlog) = second.split_first().unwrap();
    assert!(matches!(in_flight.events.last().unwrap().kind, Some(Kind::Ended(_))) && in_flight.tasks.len() == 2);
    world.emulator.inject_fault(Fault::Delay { millis: 5_000, times: 1_000_000 });
    let calls_before = world.emulator.api_calls();
    produce_calls(&producer, &topics.events, std::slice::from_ref(in_flight)).await;
    await_condition("a Task write in flight", Duration::from_secs(30), || async {
        let calls = world.emulator.api_calls();
        if calls > calls_before {
            Ok(())
        } else {
            Err(format!("{calls} REST calls"))
        }
    })
    .await;
    produce_calls(&producer, &topics.events, backlog).await;
    connector.kill9();
    let written = [ANN, BOB].iter().map(|user| tasks_for(&world.emulator, &in_flight.id, user).len()).sum::<usize>();
    assert_eq!(written, 0, "the write was no longer in flight when the process was killed");
    let logged_at_kill = world.emulator.tasks().len();
    println!(
        "killed with a write in flight; {logged_at_kill} of {} Tasks logged, {} REST calls",
        task_count(&workload),
        world.emulator.api_calls()
    );
    assert!(logged_at_kill < task_count(&workload), "the kill came after everything was logged");
    world.emulator.clear_faults();
    // The killed process's request is still being delayed by the org. Let
    // the org finish with it (suspending waits for requests in progress)
    // so that it cannot land after a write of the new process.
    world.emulator.suspend().await;
    world.emulator.resume().await.expect("the org listens again");

    // The same configuration again: same group, same database.
    let connector = ConnectorProcess::start(&config_file, http, world.dir.path(), "connector-2").await;
    until_tasks(&world.emulator, &workload, Duration::from_secs(60)).await;
    await_condition("the group to commit the whole topic", Duration::from_secs(30), || async {
        if broker.caught_up(group, &topics.events).await.unwrap() {
            Ok(())
        } else {
            Err(format!("committed {:?}", broker.committed_offsets(group, &topics.events).await.unwrap()))
        }
    })
    .await;
    connector.stop().await;

    // Everything consumed: still exactly one Task per (call, agent), final.
    check_tasks(&world.emulator, &workload).unwrap();
    assert_eq!(world.emulator.tasks().len(), task_count(&workload));
    assert!(world.emulator.records("Case").is_empty(), "no Case was asked for");
    assert_eq!(broker.record_count(&topics.dead_letters).await.unwrap(), 0, "no dead letter");
    let stored: i64 = switchboard_store::sqlx::query_scalar("SELECT COUNT(*) FROM dead_letters")
        .fetch_one(postgres.db.pool())
        .await
        .unwrap();
    assert_eq!(stored, 0, "no dead letter in the database either");
    postgres.db.close().await;
}

// --- 3. Salesforce down for a minute ----------------------------------------------

/// Produces a new call every `every` until `until`, numbering them from
/// `next`; returns them with where their records landed. (The pace is the
/// workload's, not a wait for the connector.)
async fn keep_calling(
    producer: &FutureProducer,
    topic: &str,
    agents: &Agents,
    next: &mut usize,
    every: Duration,
    until: tokio::time::Instant,
) -> (Vec<Call>, BTreeMap<String, Vec<Placed>>) {
    let mut produced = Vec::new();
    let mut placed = BTreeMap::new();
    loop {
        let call = Call::new(*next, agents);
        *next += 1;
        placed.extend(produce_calls(producer, topic, std::slice::from_ref(&call)).await);
        produced.push(call);
        let at = tokio::time::Instant::now() + every;
        if at >= until {
            break;
        }
        tokio::time::sleep_until(at).await;
    }
    tokio::time::sleep_until(until).await;
    (produced, placed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn salesforce_down_for_a_minute_holds_the_calls_back_and_loses_none() {
    const UNREACHABLE: Duration = Duration::from_secs(30);
    const UNAVAILABLE: Duration = Duration::from_secs(30);
    const PACE: Duration = Duration::from_secs(5);

    // The org listens below the ephemeral port range, so that while it is
    // down no outgoing connection takes its port.
    let world = World::listening_on(address_outside_ephemeral_range(), |_| {}).await;
    let agents = Agents::of(&world);
    let broker = Broker::real(world.dir.path()).await;
    let topics = Topics::create(&broker, 3).await;
    let producer = broker.producer();
    let mut salesforce = world.salesforce();
    // Retries back off to 2 s, as they would against a real outage.
    salesforce.retry_initial_ms = 100;
    salesforce.retry_max_ms = 2_000;
    let config = kafka_config(salesforce, topics.consumer(&broker, "connector-outage"));
    let mut running = Running::start(config, &world.db).await;

    // Before the outage calls are logged at once.
    let mut next = 0;
    let before = calls(0..6, &agents);
    next += before.len();
    produce_calls(&producer, &topics.events, &before).await;
    running.until_records(record_count(&before)).await;
    check_tasks(&world.emulator, &before).unwrap();
    let tasks_before = serde_json::to_string_pretty(&world.emulator.tasks()).unwrap();
    // A call in progress when Salesforce goes down: it ends during the outage.
    let straddling = Call::build(next, &agents, true, true);
    next += 1;
    let (started, rest) = straddling.events.split_at(3);
    let mut placed = BTreeMap::<String, Vec<Placed>>::new();
    placed.insert(straddling.id.clone(), produce_events(&producer, &topics.events, started).await);

    // Down, part 1: the org refuses connections.
    let outage = tokio::time::Instant::now();
    world.emulator.suspend().await;
    placed.get_mut(&straddling.id).unwrap().extend(produce_events(&producer, &topics.events, rest).await);
    let (mut during, more) =
        keep_calling(&producer, &topics.events, &agents, &mut next, PACE, outage + UNREACHABLE).await;
    placed.extend(more);
    assert_eq!(world.emulator.tasks().len(), before.iter().map(|c| c.tasks.len()).sum::<usize>());

    // Down, part 2: the org answers again, but every REST call with 503
    // SERVER_UNAVAILABLE.
    world.emulator.inject_fault(Fault::ServerUnavailable { times: u32::MAX });
    world.emulator.resume().await.expect("the org listens again");
    let calls_at_503 = world.emulator.api_calls();
    // A call that ends now; its recording comes only after the outage.
    let late = Call::build(next, &agents, true, false);
    next += 1;
    let (late_events, late_recording) = late.events.split_at(late.events.len() - 1);
    placed.insert(late.id.clone(), produce_events(&producer, &topics.events, late_events).await);
    during.push(late.clone());
    let (more_calls, more) =
        keep_calling(&producer, &topics.events, &agents, &mut next, PACE, outage + UNREACHABLE + UNAVAILABLE).await;
    during.extend(more_calls);
    placed.extend(more);
    println!("outage over after {:?}; {} calls made during it", outage.elapsed(), during.len() + 1);

    // Nothing was logged during the outage: the Tasks are as before it.
    let tasks_at_end = serde_json::to_string_pretty(&world.emulator.tasks()).unwrap();
    assert!(tasks_at_end == tasks_before, "Tasks changed while Salesforce was down:\n{tasks_at_end}");
    let attempts = world.emulator.api_calls() - calls_at_503;
    assert!(attempts > 0, "the connector kept trying while Salesforce answered 503");
    // Nothing given up on: no dead letter.
    let progress = running.progress.borrow().clone();
    assert_eq!(progress.dead_letters, 0, "{progress:?}");
    assert_eq!(broker.record_count(&topics.dead_letters).await.unwrap(), 0, "no dead letter");
    // Nothing committed past a call that is not logged: in each partition
    // the committed offset stays at or before the first `ended` record of
    // a call that ended during the outage (its Task could not be written).
    let mut unlogged = BTreeMap::<i32, i64>::new();
    for call in std::iter::once(&straddling).chain(&during) {
        let ended = call.events.iter().position(|e| matches!(e.kind, Some(Kind::Ended(_)))).unwrap();
        let at = placed[&call.id][ended];
        let first = unlogged.entry(at.partition).or_insert(at.offset);
        *first = (*first).min(at.offset);
    }
    let high = broker.high_watermarks(&topics.events).await.unwrap();
    let committed = broker.committed_offsets("connector-outage", &topics.events).await.unwrap();
    let mut committable = 0;
    for (partition, high) in &high {
        let bound = unlogged.get(partition).copied().unwrap_or(*high);
        committable += bound;
        let offset = committed.iter().find(|(p, _)| p == partition).and_then(|(_, o)| *o).unwrap_or(0);
        assert!(
            offset <= bound,
            "partition {partition}: offset {offset} committed past the unlogged call at {bound} (committed {committed:?})"
        );
    }
    assert!(
        progress.records <= committable as u64,
        "{} records reported handled, at most {committable} can be: {progress:?}",
        progress.records
    );

    // Back: the backlog drains, in order per call.
    world.emulator.clear_faults();
    let back = Instant::now();
    produce_events(&producer, &topics.events, late_recording).await;
    let mut all = before.clone();
    all.push(straddling.clone());
    all.extend(during.iter().cloned());
    until_tasks(&world.emulator, &all, Duration::from_secs(30)).await;
    let progress = running.until_records(record_count(&all)).await;
    println!("backlog drained {:?} after Salesforce came back", back.elapsed());
    running.stop().await;

    check_tasks(&world.emulator, &all).unwrap();
    assert_eq!(progress.dead_letters, 0);
    assert_eq!(broker.record_count(&topics.dead_letters).await.unwrap(), 0, "no dead letter");
    // The calls logged before the outage were not written again.
    let tasks = world.emulator.tasks();
    let before_keys: BTreeSet<String> =
        before.iter().flat_map(|c| c.tasks.iter().map(move |t| format!("{}:{}", c.id, t.user_id))).collect();
    let unchanged: Vec<&Value> =
        tasks.iter().filter(|t| before_keys.contains(t["Switchboard_Key__c"].as_str().unwrap_or(""))).collect();
    assert_eq!(serde_json::to_string_pretty(&unchanged).unwrap(), tasks_before);
}
