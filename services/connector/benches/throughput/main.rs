//! Connector throughput: call events through a Kafka-protocol broker to the
//! connector and on to the Salesforce emulator.
//!
//! Two runs, each with its own org, PostgreSQL database, topics and
//! consumer group:
//!
//! - **Sustained**: calls arrive at `--cps` per second for `--seconds`,
//!   each producing its events when the gateway would (see `workload`), so
//!   about a thousand calls overlap. The connector has joined its group and
//!   handled one warm-up call before the first measured event. Measured:
//!   Salesforce data API requests (OAuth token requests and the start-up
//!   preflight left out) per logged call; hangup → Task latency, from the
//!   moment the hangup event is handed to the producer to the moment the
//!   org stores the call's Task (the emulator reports every write with its
//!   time, `Emulator::watch_writes`); latency until the Task holds the
//!   recording's link.
//! - **Ceiling**: `--ceiling-calls` complete calls are preloaded into a
//!   fresh topic, then a connector starts on them: the time until every
//!   Task is in the org gives Tasks/s, with API requests per Task. A run
//!   that takes longer than `--ceiling-timeout` seconds is stopped and its
//!   rates are over that time.
//!
//! The connector, the emulator and the producer run in this process, the
//! broker and PostgreSQL in their own; the report gives the CPU each used.
//! The broker is the one `SWITCHBOARD_TEST_KAFKA` names, else a tansu broker
//! started from `SWITCHBOARD_TEST_TANSU_BIN`.
//!
//! Run: `eval "$(scripts/test --print-env)" && cargo bench -p switchboard-connector --bench throughput -- [--cps N]
//! [--seconds N] [--ceiling-calls N] [--ceiling-timeout N] [--partitions N] [--agents N] [--only sustained|ceiling]`;
//! each option can also be given as `SWITCHBOARD_BENCH_<NAME>` (e.g.
//! `SWITCHBOARD_BENCH_CPS=100`). Progress goes to stderr every 5 s, the
//! summary to stdout as markdown.

mod backends;
mod workload;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures::stream::{FuturesUnordered, StreamExt};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use salesforce_emulator::Emulator;
use switchboard_connector::{Connector, ConnectorConfig, KafkaConsumerConfig, Progress, RunningConnector, SourceConfig};
use switchboard_proto::Message;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use backends::{Broker, Org, Postgres, RunDatabase};
use workload::Call;

type BenchResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// Goals the figures are compared with.
const GOAL_REQUESTS_PER_CALL: f64 = 0.02;
const GOAL_P99: Duration = Duration::from_secs(2);
const GOAL_TASKS_PER_SECOND: f64 = 2000.0;

/// How long the sustained run waits for the connector to catch up after
/// the last event was produced.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(60);

struct Settings {
    cps: f64,
    seconds: f64,
    ceiling_calls: usize,
    ceiling_timeout: Duration,
    partitions: i32,
    agents: usize,
    sustained: bool,
    ceiling: bool,
}

/// `--name value` from the command line, else `SWITCHBOARD_BENCH_NAME`.
fn setting<T: std::str::FromStr>(name: &str, default: T) -> BenchResult<T> {
    let args: Vec<String> = std::env::args().collect();
    let flag = format!("--{name}");
    let var = format!("SWITCHBOARD_BENCH_{}", name.to_uppercase().replace('-', "_"));
    let given = args.iter().position(|a| *a == flag).and_then(|i| args.get(i + 1).cloned()).or_else(|| std::env::var(&var).ok());
    match given {
        Some(text) => text.trim().parse().map_err(|_| format!("{flag} / {var}: cannot read {text:?}").into()),
        None => Ok(default),
    }
}

impl Settings {
    fn read() -> BenchResult<Settings> {
        let only: String = setting("only", String::new())?;
        let settings = Settings {
            cps: setting("cps", 50.0)?,
            seconds: setting("seconds", 60.0)?,
            ceiling_calls: setting("ceiling-calls", 20_000)?,
            ceiling_timeout: Duration::from_secs(setting("ceiling-timeout", 90)?),
            partitions: setting("partitions", 3)?,
            agents: setting("agents", 200)?,
            sustained: only.is_empty() || only == "sustained",
            ceiling: only.is_empty() || only == "ceiling",
        };
        if !(settings.sustained || settings.ceiling) {
            return Err(format!("--only must be sustained or ceiling, not {only:?}").into());
        }
        if settings.cps <= 0.0 || settings.seconds <= 0.0 || settings.ceiling_calls == 0 || settings.partitions < 1 || settings.agents == 0 {
            return Err("--cps, --seconds, --ceiling-calls, --partitions and --agents must be positive".into());
        }
        Ok(settings)
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if let Err(e) = run().await {
        eprintln!("connector throughput benchmark failed: {e}");
        std::process::exit(1);
    }
}

async fn run() -> BenchResult<()> {
    let settings = Settings::read()?;
    let postgres = Postgres::from_env()?;
    let scratch = tempfile::tempdir()?;
    let broker = Broker::from_env(scratch.path()).await?;
    eprintln!("broker: {}", broker.describe());

    let mut report = vec![machine()];
    if settings.sustained {
        report.push(sustained(&settings, &postgres, &broker, scratch.path()).await?);
    }
    if settings.ceiling {
        report.push(ceiling(&settings, &postgres, &broker, scratch.path()).await?);
    }
    broker.stop().await;
    println!("\n{}", report.join("\n"));
    Ok(())
}

/// One run's org, database, topics and connector.
struct Stage {
    org: Org,
    database: RunDatabase,
    topic: String,
    config: ConnectorConfig,
}

impl Stage {
    async fn prepare(label: &str, settings: &Settings, postgres: &Postgres, broker: &Broker, scratch: &std::path::Path) -> BenchResult<Stage> {
        let org = Org::start(settings.agents, scratch).await?;
        let database = postgres.fresh_database(label).await?;
        let suffix = uuid::Uuid::now_v7().simple().to_string();
        let topic = format!("bench-{label}-call-events-{suffix}");
        let dead_letters = format!("bench-{label}-dead-letters-{suffix}");
        broker.create_topic(&topic, settings.partitions).await?;
        broker.create_topic(&dead_letters, 1).await?;
        let mut kafka = KafkaConsumerConfig::new(broker.brokers(), &topic, &dead_letters);
        kafka.group_id = format!("bench-{label}-{suffix}");
        // As the connector's Kafka test does: with librdkafka's default
        // session timeout (45 s) tansu holds a new group's first join for
        // about 20 s.
        kafka.properties.insert("session.timeout.ms".into(), "6000".into());
        kafka.properties.insert("heartbeat.interval.ms".into(), "500".into());
        let config = ConnectorConfig { salesforce: Some(org.salesforce.clone()), source: SourceConfig::Kafka(kafka), ..Default::default() };
        Ok(Stage { org, database, topic, config })
    }

    async fn start_connector(&self, shutdown: &CancellationToken) -> BenchResult<RunningConnector> {
        Ok(Connector::start(self.config.clone(), self.database.db.clone(), shutdown.clone()).await?)
    }

    async fn finish(self, running: RunningConnector, shutdown: CancellationToken, postgres: &Postgres) -> BenchResult<()> {
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(30), running.wait()).await.map_err(|_| "the connector did not stop within 30 s")??;
        self.org.emulator.shutdown().await;
        postgres.drop_database(self.database).await
    }
}

/// What the org stored of each call's Task, from its write reports.
struct Observed {
    /// When the call's Task was first stored.
    first: Vec<Option<Instant>>,
    /// When the Task first held the recording's link (recorded calls).
    linked: Vec<Option<Instant>>,
    /// Task writes stored.
    writes: u64,
}

/// Counts of Tasks and linked recordings seen so far.
#[derive(Clone, Copy, Default)]
struct Seen {
    tasks: usize,
    links: usize,
}

/// Follows the org's Task writes for `calls` until stopped.
struct Observer {
    seen: watch::Receiver<Seen>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<Observed>,
}

impl Observer {
    fn start(emulator: &Emulator, calls: &[Call]) -> Observer {
        let mut writes = emulator.watch_writes();
        let index: HashMap<String, usize> = calls.iter().enumerate().map(|(i, c)| (c.id.clone(), i)).collect();
        let links: Vec<Option<String>> = calls.iter().map(|c| c.recording.as_ref().map(|(_, url)| url.clone())).collect();
        let (seen_tx, seen) = watch::channel(Seen::default());
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        let task = tokio::spawn(async move {
            let mut observed = Observed { first: vec![None; links.len()], linked: vec![None; links.len()], writes: 0 };
            loop {
                let write = tokio::select! {
                    write = writes.recv() => write,
                    _ = stopped.cancelled() => writes.try_recv().ok(),
                };
                let Some(write) = write else { break };
                if write.sobject != "Task" {
                    continue;
                }
                let key = write.record["Switchboard_Key__c"].as_str().unwrap_or_default();
                let Some(&call) = key.split_once(':').and_then(|(call_id, _)| index.get(call_id)) else { continue };
                observed.writes += 1;
                if observed.first[call].is_none() {
                    observed.first[call] = Some(write.at);
                    seen_tx.send_modify(|s| s.tasks += 1);
                }
                let description = write.record["Description"].as_str().unwrap_or_default();
                if observed.linked[call].is_none() && links[call].as_deref().is_some_and(|url| description.contains(url)) {
                    observed.linked[call] = Some(write.at);
                    seen_tx.send_modify(|s| s.links += 1);
                }
            }
            observed
        });
        Observer { seen, stop, task }
    }

    async fn finish(self) -> BenchResult<Observed> {
        self.stop.cancel();
        Ok(self.task.await?)
    }
}

/// Waits until the connector handled `records` records and the org holds
/// `tasks` Tasks and `links` recording links, or `deadline` passes; true
/// when everything arrived.
async fn until_done(progress: &mut watch::Receiver<Progress>, observer: &Observer, records: u64, tasks: usize, links: usize, deadline: Instant) -> bool {
    let mut seen = observer.seen.clone();
    let done = async {
        if progress.wait_for(|p| p.records >= records).await.is_err() {
            return false;
        }
        seen.wait_for(|s| s.tasks >= tasks && s.links >= links).await.is_ok()
    };
    tokio::time::timeout_at(deadline.into(), done).await.unwrap_or(false)
}

/// Prints how far the connector got every 5 s on stderr, until dropped.
struct Ticker(CancellationToken);

impl Ticker {
    fn start(label: &'static str, progress: watch::Receiver<Progress>, observer: &Observer, emulator: Emulator) -> Ticker {
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        let seen = observer.seen.clone();
        tokio::spawn(async move {
            let start = Instant::now();
            let mut every = tokio::time::interval_at(tokio::time::Instant::now() + Duration::from_secs(5), Duration::from_secs(5));
            loop {
                tokio::select! {
                    _ = stopped.cancelled() => break,
                    _ = every.tick() => {}
                }
                let (records, tasks) = (progress.borrow().records, seen.borrow().tasks);
                eprintln!(
                    "{label} {:>4.0} s: {records} events handled, {tasks} Tasks, {} API requests",
                    start.elapsed().as_secs_f64(),
                    emulator.api_calls()
                );
            }
        });
        Ticker(stop)
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

/// When the hangup and the recording of each call were handed to the producer.
struct Produced {
    hangup: Vec<Option<Instant>>,
    recording: Vec<Option<Instant>>,
    events: u64,
    /// How far behind its schedule the producer was at worst.
    max_late: Duration,
}

/// Produces every event at its time on the timeline, keyed by call id as
/// the gateway's relay does; delivery is checked in the background.
async fn produce_live(producer: &FutureProducer, topic: &str, calls: &[Call]) -> BenchResult<Produced> {
    let (deliveries_tx, mut deliveries_rx) = mpsc::unbounded_channel::<DeliveryFuture>();
    let checker = tokio::spawn(async move {
        let mut failed = 0u64;
        while let Some(delivery) = deliveries_rx.recv().await {
            if !matches!(delivery.await, Ok(Ok(_))) {
                failed += 1;
            }
        }
        failed
    });
    let mut produced =
        Produced { hangup: vec![None; calls.len()], recording: vec![None; calls.len()], events: 0, max_late: Duration::ZERO };
    let start = tokio::time::Instant::now();
    for (c, e) in workload::timeline(calls) {
        let call = &calls[c];
        let due = start + call.events[e].at;
        tokio::time::sleep_until(due).await;
        produced.max_late = produced.max_late.max(tokio::time::Instant::now().saturating_duration_since(due));
        let mut event = call.events[e].event.clone();
        event.occurred_at_ms = chrono::Utc::now().timestamp_millis();
        let payload = event.encode_to_vec();
        let at = Instant::now();
        let delivery = producer
            .send_result(FutureRecord::to(topic).key(&call.id).payload(&payload))
            .map_err(|(error, _)| format!("producing to {topic} failed: {error}"))?;
        deliveries_tx.send(delivery)?;
        produced.events += 1;
        if e == call.hangup {
            produced.hangup[c] = Some(at);
        }
        if call.recording.as_ref().is_some_and(|(r, _)| *r == e) {
            produced.recording[c] = Some(at);
        }
    }
    drop(deliveries_tx);
    let failed = checker.await?;
    if failed > 0 {
        return Err(format!("{failed} events were not delivered to {topic}").into());
    }
    Ok(produced)
}

/// Produces every event of `calls` as fast as the broker takes them, in
/// timeline order (so each call's events keep their order in its
/// partition); returns the number of events.
async fn produce_all(producer: &FutureProducer, topic: &str, calls: &[Call]) -> BenchResult<u64> {
    let base_ms = chrono::Utc::now().timestamp_millis();
    let mut pending = FuturesUnordered::new();
    let mut events = 0u64;
    let delivered = |result: Option<Result<rdkafka::producer::future_producer::OwnedDeliveryResult, _>>| match result {
        Some(Ok(Ok(_))) | None => Ok(()),
        Some(Ok(Err((error, _)))) => Err(format!("producing to {topic} failed: {error}")),
        Some(Err(_)) => Err(format!("producing to {topic} was cancelled")),
    };
    for (c, e) in workload::timeline(calls) {
        let call = &calls[c];
        let mut event = call.events[e].event.clone();
        event.occurred_at_ms = base_ms + call.events[e].at.as_millis() as i64;
        let payload = event.encode_to_vec();
        let mut record = FutureRecord::to(topic).key(&call.id).payload(&payload);
        loop {
            match producer.send_result(record) {
                Ok(delivery) => {
                    pending.push(delivery);
                    break;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    delivered(pending.next().await)?;
                }
                Err((error, _)) => return Err(format!("producing to {topic} failed: {error}").into()),
            }
        }
        events += 1;
    }
    while !pending.is_empty() {
        delivered(pending.next().await)?;
    }
    Ok(events)
}

async fn sustained(settings: &Settings, postgres: &Postgres, broker: &Broker, scratch: &std::path::Path) -> BenchResult<String> {
    let stage = Stage::prepare("sustained", settings, postgres, broker, scratch).await?;
    let count = (settings.cps * settings.seconds).round() as usize;
    let calls = workload::calls(count, settings.cps, &stage.org.agents, 1);
    let total_events: usize = calls.iter().map(|c| c.events.len()).sum();
    let recorded = calls.iter().filter(|c| c.recording.is_some()).count();
    eprintln!(
        "sustained: {count} calls at {} calls/s over {} s ({total_events} events, {recorded} recorded), {} partitions",
        settings.cps, settings.seconds, settings.partitions
    );

    let observer = Observer::start(&stage.org.emulator, &calls);
    let shutdown = CancellationToken::new();
    let running = stage.start_connector(&shutdown).await?;
    let mut progress = running.progress();
    let _ticker = Ticker::start("sustained", progress.clone(), &observer, stage.org.emulator.clone());
    let producer = broker.producer()?;
    // One call first: the measured calls start once the connector has
    // joined its consumer group and handled it, as a connector that has
    // been running for a while.
    let warmup = workload::calls(1, settings.cps, &stage.org.agents, 0);
    let warmup_events = produce_all(&producer, &stage.topic, &warmup).await?;
    tokio::time::timeout(Duration::from_secs(60), progress.wait_for(|p| p.records >= warmup_events))
        .await
        .map_err(|_| "the connector did not handle the warm-up call within 60 s")??;

    let requests_before = stage.org.emulator.api_calls();
    let cpu = Cpu::start(broker, &stage.database).await;
    let produced = produce_live(&producer, &stage.topic, &calls).await?;
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    let complete = until_done(&mut progress, &observer, warmup_events + produced.events, count, recorded, deadline).await;
    let cpu = cpu.stop(&stage.database).await;
    let requests = stage.org.emulator.api_calls() - requests_before;
    let handled = progress.borrow().records - warmup_events;
    let observed = observer.finish().await?;
    stage.finish(running, shutdown, postgres).await?;

    let logged = observed.first.iter().filter(|t| t.is_some()).count();
    let created = latencies(&produced.hangup, &observed.first);
    let linked = latencies(&produced.recording, &observed.linked);
    let recorded_hangups: Vec<Option<Instant>> = calls.iter().zip(&produced.hangup).map(|(c, h)| h.filter(|_| c.recording.is_some())).collect();
    let hangup_to_link = latencies(&recorded_hangups, &observed.linked);
    let per_call = requests as f64 / logged.max(1) as f64;
    let mut out = String::new();
    out += &format!(
        "### Sustained: {} calls/s for {} s\n\n{count} calls, {total_events} events ({:.1} per call), {recorded} recorded; topic of {} partitions; \
         producer at most {} behind its schedule. {}\n\n",
        settings.cps,
        settings.seconds,
        total_events as f64 / count as f64,
        settings.partitions,
        ms(produced.max_late),
        if complete {
            "Every Task and recording link arrived.".to_owned()
        } else {
            format!(
                "**Incomplete**: {} s after the last event the connector had handled {handled} of {total_events} events, \
                 the org held {logged} of {count} Tasks and {} of {recorded} recording links; latencies count the missing ones as longer than any.",
                DRAIN_TIMEOUT.as_secs(),
                observed.linked.iter().flatten().count()
            )
        }
    );
    out += "| figure | value | goal |\n|---|---|---|\n";
    out += &format!(
        "| Salesforce API requests per logged call | {per_call:.2} ({requests} requests, {logged} calls logged) | ≤ {GOAL_REQUESTS_PER_CALL} {} |\n",
        verdict(per_call <= GOAL_REQUESTS_PER_CALL)
    );
    out += &format!("| Task writes stored per call | {:.2} | |\n", observed.writes as f64 / logged.max(1) as f64);
    out += &format!(
        "| hangup → Task stored, p50 / p95 / p99 / max | {} | p99 < {} s {} |\n",
        created.row(),
        GOAL_P99.as_secs(),
        verdict(created.percentile(0.99).is_some_and(|p| p < GOAL_P99))
    );
    out += &format!("| recording ready → link in Task, p50 / p95 / p99 / max | {} | |\n", linked.row());
    out += &format!("| hangup → link in Task, p50 / p95 / p99 / max | {} | |\n", hangup_to_link.row());
    out += &format!("| CPU, % of one core: this process (connector, emulator, producer) / broker / PostgreSQL / other processes | {} | |\n", cpu.row());
    Ok(out)
}

async fn ceiling(settings: &Settings, postgres: &Postgres, broker: &Broker, scratch: &std::path::Path) -> BenchResult<String> {
    let stage = Stage::prepare("ceiling", settings, postgres, broker, scratch).await?;
    let count = settings.ceiling_calls;
    let calls = workload::calls(count, settings.cps, &stage.org.agents, 2);
    let producer = broker.producer()?;
    let preload = Instant::now();
    let events = produce_all(&producer, &stage.topic, &calls).await?;
    let preload = preload.elapsed();
    eprintln!("ceiling: {count} calls ({events} events) preloaded in {:.1} s; starting the connector", preload.as_secs_f64());

    let observer = Observer::start(&stage.org.emulator, &calls);
    let shutdown = CancellationToken::new();
    let cpu = Cpu::start(broker, &stage.database).await;
    let started = Instant::now();
    let running = stage.start_connector(&shutdown).await?;
    let requests_before = stage.org.emulator.api_calls();
    let mut progress = running.progress();
    let _ticker = Ticker::start("ceiling", progress.clone(), &observer, stage.org.emulator.clone());
    let first_event = {
        let mut progress = progress.clone();
        tokio::spawn(async move { progress.wait_for(|p| p.records > 0).await.ok().map(|_| Instant::now()) })
    };
    let deadline = started + settings.ceiling_timeout;
    let complete = until_done(&mut progress, &observer, events, count, 0, deadline).await;
    let elapsed = started.elapsed();
    let cpu = cpu.stop(&stage.database).await;
    let requests = stage.org.emulator.api_calls() - requests_before;
    let handled = progress.borrow().records;
    let observed = observer.finish().await?;
    first_event.abort();
    let first_event = first_event.await.ok().flatten();
    stage.finish(running, shutdown, postgres).await?;

    let tasks = observed.first.iter().filter(|t| t.is_some()).count();
    // Until every Task was stored, or until the run was stopped.
    let end = match observed.first.iter().flatten().max() {
        Some(last) if tasks == count => last.duration_since(started),
        _ => elapsed,
    };
    let rate_from = |from: Instant| tasks as f64 / (started + end).duration_since(from).as_secs_f64();
    let per_task = requests as f64 / tasks.max(1) as f64;
    let mut out = String::new();
    out += &format!(
        "### Ceiling: {count} calls preloaded\n\n{count} calls, {events} events, preloaded in {:.1} s into a topic of {} partitions; \
         then a connector started on a fresh consumer group and database. {}\n\n",
        preload.as_secs_f64(),
        settings.partitions,
        if complete {
            "Every event was handled and every Task arrived.".to_owned()
        } else {
            format!(
                "**Stopped after {} s** with {handled} of {events} events handled and {tasks} of {count} Tasks in the org; rates are over that time.",
                settings.ceiling_timeout.as_secs()
            )
        }
    );
    out += "| figure | value | goal |\n|---|---|---|\n";
    if let Some(first) = first_event {
        let rate = rate_from(first);
        out += &format!(
            "| Tasks per second, first event handled → {} | {rate:.0} | ≥ {GOAL_TASKS_PER_SECOND:.0} {} |\n",
            if complete { "every Task stored" } else { "stop" },
            verdict(complete && rate >= GOAL_TASKS_PER_SECOND)
        );
        out += &format!("| start → first event handled (login, preflight, joining the group) | {} | |\n", ms(first.duration_since(started)));
    }
    out += &format!("| Tasks per second, start → {} | {:.0} | |\n", if complete { "every Task stored" } else { "stop" }, rate_from(started));
    if complete {
        out += &format!("| start → every Task stored | {:.1} s | |\n", end.as_secs_f64());
    }
    out += &format!("| events handled per second | {:.0} | |\n", handled as f64 / elapsed.as_secs_f64());
    out += &format!("| Salesforce API requests per Task | {per_task:.2} ({requests} requests, {tasks} Tasks) | |\n");
    out += &format!("| Task writes stored per Task | {:.2} | |\n", observed.writes as f64 / tasks.max(1) as f64);
    out += &format!("| CPU, % of one core: this process (connector, emulator) / broker / PostgreSQL / other processes | {} | |\n", cpu.row());
    Ok(out)
}

/// `to - from` for every call that has a `from`; a missing `to` counts as
/// longer than any.
fn latencies(from: &[Option<Instant>], to: &[Option<Instant>]) -> Latencies {
    let mut sorted: Vec<Duration> = from.iter().zip(to).filter_map(|(f, t)| Some(t.as_ref()?.saturating_duration_since(*f.as_ref()?))).collect();
    sorted.sort();
    let missing = from.iter().zip(to).filter(|(f, t)| f.is_some() && t.is_none()).count();
    Latencies { sorted, missing }
}

struct Latencies {
    sorted: Vec<Duration>,
    /// Calls whose `to` never came.
    missing: usize,
}

impl Latencies {
    /// `None` when the percentile falls among the missing ones.
    fn percentile(&self, p: f64) -> Option<Duration> {
        let n = self.sorted.len() + self.missing;
        let rank = ((n as f64 * p).ceil() as usize).clamp(1, n.max(1));
        self.sorted.get(rank - 1).copied()
    }

    fn row(&self) -> String {
        if self.sorted.is_empty() && self.missing == 0 {
            return "none measured".to_owned();
        }
        let show = |d: Option<Duration>| d.map(ms).unwrap_or_else(|| "never".to_owned());
        let max = if self.missing > 0 { None } else { self.sorted.last().copied() };
        let mut row = format!(
            "{} / {} / {} / {} (n = {})",
            show(self.percentile(0.50)),
            show(self.percentile(0.95)),
            show(self.percentile(0.99)),
            show(max),
            self.sorted.len() + self.missing
        );
        if self.missing > 0 {
            row += &format!(", {} never arrived", self.missing);
        }
        row
    }
}

fn ms(d: Duration) -> String {
    if d >= Duration::from_secs(10) {
        format!("{:.1} s", d.as_secs_f64())
    } else {
        format!("{:.0} ms", d.as_secs_f64() * 1000.0)
    }
}

fn verdict(met: bool) -> &'static str {
    if met {
        "(met)"
    } else {
        "(**missed**)"
    }
}

/// CPU time over a run, from `/proc` (in USER_HZ = 100 ticks per second on
/// Linux): this process, the broker when the benchmark started it, the
/// PostgreSQL backends serving the run's database, and everything else on
/// the machine (other processes share the cores).
struct Cpu {
    broker: Option<u32>,
    at: Instant,
    start: CpuTimes,
    postgres: HashMap<u32, f64>,
}

/// CPU seconds at the start of a run, or per cent of one core over it.
#[derive(Clone, Copy)]
struct CpuTimes {
    own: Option<f64>,
    broker: Option<f64>,
    postgres: Option<f64>,
    machine: Option<f64>,
}

/// User plus system CPU seconds of a process (`/proc/<pid>/stat`).
fn process_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

/// Busy CPU seconds of all cores (`/proc/stat`: user, nice, system, irq,
/// softirq, steal).
fn machine_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let ticks: Vec<u64> = stat.lines().next()?.split_whitespace().skip(1).map(|t| t.parse().unwrap_or(0)).collect();
    let busy = [0, 1, 2, 5, 6, 7].iter().map(|&i| ticks.get(i).copied().unwrap_or(0)).sum::<u64>();
    Some(busy as f64 / 100.0)
}

impl Cpu {
    async fn start(broker: &Broker, database: &RunDatabase) -> Cpu {
        let broker = broker.pid();
        let postgres = database.backend_pids().await.into_iter().filter_map(|pid| Some((pid, process_seconds(&pid.to_string())?))).collect();
        let start = CpuTimes {
            own: process_seconds("self"),
            broker: broker.and_then(|p| process_seconds(&p.to_string())),
            postgres: None,
            machine: machine_seconds(),
        };
        Cpu { broker, at: Instant::now(), start, postgres }
    }

    /// Per cent of one core each used since the start.
    async fn stop(self, database: &RunDatabase) -> CpuTimes {
        let wall = self.at.elapsed().as_secs_f64();
        // Backends are the database's pooled connections; one opened during
        // the run counts from its start.
        let postgres: f64 = database
            .backend_pids()
            .await
            .into_iter()
            .filter_map(|pid| Some(process_seconds(&pid.to_string())? - self.postgres.get(&pid).copied().unwrap_or(0.0)))
            .sum();
        let share = |before: Option<f64>, now: Option<f64>| Some((now? - before?) / wall * 100.0);
        let own = share(self.start.own, process_seconds("self"));
        let broker = share(self.start.broker, self.broker.and_then(|p| process_seconds(&p.to_string())));
        let postgres = Some(postgres / wall * 100.0);
        let machine = share(self.start.machine, machine_seconds());
        let others = machine.map(|m| (m - [own, broker, postgres].iter().flatten().sum::<f64>()).max(0.0));
        CpuTimes { own, broker, postgres, machine: others }
    }
}

impl CpuTimes {
    /// `this process / broker / PostgreSQL / others`, after [`Cpu::stop`].
    fn row(&self) -> String {
        let show = |v: Option<f64>| v.map(|v| format!("{v:.0} %")).unwrap_or_else(|| "–".to_owned());
        format!("{} / {} / {} / {}", show(self.own), show(self.broker), show(self.postgres), show(self.machine))
    }
}

/// The machine and date line of the report.
fn machine() -> String {
    let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
    let cpuinfo = read("/proc/cpuinfo");
    let model = cpuinfo.lines().find_map(|l| l.strip_prefix("model name")).and_then(|l| l.split_once(':')).map(|(_, m)| m.trim().to_owned()).unwrap_or_default();
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let memory_kib: u64 = read("/proc/meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|l| l.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    let os = read("/etc/os-release").lines().find_map(|l| l.strip_prefix("PRETTY_NAME=")).unwrap_or_default().trim_matches('"').to_owned();
    let kernel = read("/proc/sys/kernel/osrelease").trim().to_owned();
    let commit = std::process::Command::new("git")
        .args(["describe", "--always", "--dirty"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "unknown".to_owned());
    format!(
        "## Connector throughput, {}\n\n{cores} cores ({model}), {:.0} GiB, {os}, Linux {kernel}; code at {commit}, {} build.\n",
        chrono::Utc::now().format("%Y-%m-%d %H:%M UTC"),
        memory_kib as f64 / 1024.0 / 1024.0,
        if cfg!(debug_assertions) { "debug" } else { "release" },
    )
}
