//! An inbound call through the production deployment: `switchboard gateway`
//! and `switchboard connector` as two processes over PostgreSQL, Kafka
//! (tansu), S3 (s3s-fs) and Salesforce (the emulator). A carrier (SIPp)
//! calls a number routed to an agent whose desk phone (SIPp, echoing the
//! audio) answers.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use serde_json::Value;
use switchboard_e2e::events::{self, ANSWERED_CALL};
use switchboard_e2e::postgres::PostgresDatabase;
use switchboard_e2e::s3::{self, S3Server};
use switchboard_e2e::salesforce::{self, Salesforce};
use switchboard_e2e::sipp::{self, Scenario, Uas};
use switchboard_e2e::switchboard::{provision_agent, Agent, Config, Service};
use switchboard_e2e::kafka::Broker;
use switchboard_e2e::wav::{WavSummary, AUDIBLE_RMS};
use switchboard_e2e::{eventually, TestContext};
use switchboard_proto::{CallEvent, Kind, Message as _, TaskSyncState, TaskSyncStatus};

const NUMBER: &str = "+14155550100";
const DIALLED: &str = "14155550100";
const TOPIC: &str = "switchboard.call-events";
const DEAD_LETTER_TOPIC: &str = "switchboard.call-events.dead-letter";
const STATUS_TOPIC: &str = "switchboard.task-sync";
const BUCKET: &str = "recordings";
const PREFIX: &str = "recordings/";
/// The uac_pcap scenario talks for 9 s; everything after hangup must follow
/// within this.
const SETTLE: Duration = Duration::from_secs(60);

/// The backends and the two roles of one test.
struct Deployment {
    tansu: Broker,
    s3: S3Server,
    salesforce: Salesforce,
    phone: Uas,
    config: Config,
    agent: Agent,
    sip: SocketAddr,
    gateway: Service,
    connector: Option<Service>,
    _db: PostgresDatabase,
}

impl Deployment {
    async fn start(ctx: &TestContext) -> anyhow::Result<Self> {
        let db = PostgresDatabase::create().await?;
        let tansu = Broker::real(&ctx.subdir("tansu")?).await;
        if let Some(log) = tansu.log() {
            ctx.register_log("tansu", log.to_owned());
        }
        tansu.create_topic(TOPIC, 3).await;
        tansu.create_topic(DEAD_LETTER_TOPIC, 3).await;
        tansu.create_topic(STATUS_TOPIC, 3).await;
        let s3 = S3Server::start(ctx, BUCKET).await?;
        let salesforce = Salesforce::start(ctx).await?;
        let phone = Uas::start(ctx, "desk-phone").await?;

        let mut config = Config::new();
        config
            .set("data_dir", ctx.subdir("data")?.display())
            .set("database.url", db.url())
            .set("recordings.store", "s3")
            .set("recordings.s3.bucket", s3.bucket())
            .set("recordings.s3.endpoint", s3.endpoint())
            .set("recordings.s3.region", s3::REGION)
            .set("recordings.s3.access_key_id", s3.access_key_id())
            .set("recordings.s3.secret_access_key", s3.secret_access_key())
            .set("recordings.s3.prefix", PREFIX)
            .set("recordings.s3.path_style", true)
            .set("events.log", "kafka")
            .set("kafka.brokers", tansu.bootstrap())
            .set("kafka.topic", TOPIC)
            .set("kafka.group_id", "switchboard-connector")
            .set("kafka.dead_letter_topic", DEAD_LETTER_TOPIC)
            .set("kafka.status_topic", STATUS_TOPIC)
            .set("http.admin_token", format!("e2e-admin-{}", switchboard_e2e::random_secret(24)))
            .set("log.level", "info");
        salesforce.configure(&mut config);
        let sip = config.use_free_gateway_ports()?;
        let gateway_http = config.get("http.listen").context("http.listen")?.to_owned();
        config.set("http.public_url", format!("http://{gateway_http}"));

        config.run(ctx, &["migrate"]).await?;
        let agent = provision_agent(&config, ctx, salesforce::AGENT_USER_ID, &phone.contact(), NUMBER).await?;

        let gateway = config.spawn(ctx, "gateway").await?;
        let mut connector_config = config.clone();
        connector_config.use_free_http_port()?;
        let connector = connector_config.spawn(ctx, "connector").await?;
        Ok(Self { tansu, s3, salesforce, phone, config, agent, sip, gateway, connector: Some(connector), _db: db })
    }

    /// Places one call from the carrier and checks SIPp saw it through.
    async fn call(&mut self, ctx: &TestContext, label: &str) -> anyhow::Result<()> {
        let run =
            sipp::uac(ctx, label, Scenario::Builtin("uac_pcap"), DIALLED, self.sip, 1, Duration::from_secs(45)).await?;
        anyhow::ensure!(
            run.succeeded(),
            "the carrier's call {label} failed (SIPp exit {:?}); see the sipp logs",
            run.status
        );
        self.gateway.process().ensure_running()?;
        self.phone.process().ensure_running()?;
        Ok(())
    }

    /// Waits until the topic holds `calls` calls whose last event, the
    /// recording, has been published, and returns each call's events.
    async fn published_calls(&self, calls: usize) -> anyhow::Result<Vec<(String, Vec<CallEvent>)>> {
        eventually(&format!("{calls} recorded call(s) on {TOPIC}"), SETTLE, || async {
            let records = self.tansu.read_all(TOPIC).await?;
            let mut out = Vec::new();
            for key in events::keys(&records) {
                let call_events = events::decode_records(&records, &key)?;
                out.push((key, call_events));
            }
            let complete = out.iter().filter(|(_, e)| events::recording(e).is_some()).count();
            Ok((complete >= calls).then_some(out))
        })
        .await
    }

    /// Waits until the org holds a completed Task for `call_id` and returns it.
    /// The call's completed Task once its Description has `link` (the
    /// recording arrives after the hangup, and the Task is updated then).
    async fn completed_task(&self, call_id: &str, link: &str) -> anyhow::Result<Value> {
        eventually(&format!("a completed Task for call {call_id} linking {link}"), SETTLE, || async {
            Ok(self.salesforce.tasks().into_iter().find(|t| {
                t["CallObject"] == call_id && t["Status"] == "Completed" && t["Description"].as_str().is_some_and(|d| d.contains(link))
            }))
        })
        .await
    }
}

/// Checks a call's events as published: order, numbering, one partition,
/// who and what.
fn check_call_events(
    records: &[switchboard_e2e::kafka::Record],
    call_id: &str,
    events: &[CallEvent],
    agent: &Agent,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        events::kinds(events) == ANSWERED_CALL,
        "call {call_id} published {:?}, expected {ANSWERED_CALL:?}",
        events::kinds(events)
    );
    events::ensure_in_sequence(events)?;
    let partitions: Vec<i32> =
        records.iter().filter(|r| r.key.as_deref() == Some(call_id)).map(|r| r.partition).collect();
    anyhow::ensure!(
        partitions.windows(2).all(|w| w[0] == w[1]),
        "events of call {call_id} spread over partitions {partitions:?}"
    );
    let Some(Kind::Started(started)) = &events[0].kind else { unreachable!("kinds checked above") };
    anyhow::ensure!(
        started.direction == switchboard_proto::v1::Direction::Inbound as i32,
        "direction {:?}",
        started.direction
    );
    anyhow::ensure!(started.to.as_ref().is_some_and(|p| p.number == NUMBER), "dialled number {:?}", started.to);
    let owner = started.owner.as_ref().context("call.started names no owner")?;
    anyhow::ensure!(
        owner.user_id == agent.user_id,
        "owner {} is not the provisioned user {}",
        owner.user_id,
        agent.user_id
    );
    anyhow::ensure!(
        salesforce::same_id(&owner.salesforce_user_id, salesforce::AGENT_USER_ID),
        "owner's Salesforce id {:?}",
        owner.salesforce_user_id
    );
    let Some(Kind::Ended(ended)) = &events[3].kind else { unreachable!("kinds checked above") };
    anyhow::ensure!(
        ended.reason == switchboard_proto::v1::EndReason::Completed as i32,
        "end reason {:?}",
        ended.reason
    );
    anyhow::ensure!(ended.sip_status == 200, "final SIP status {}", ended.sip_status);
    Ok(())
}

/// Checks the recording object against the call: stored where the event
/// says, a stereo WAV as long as the call, with sound on both sides.
async fn check_recording(ctx: &TestContext, s3: &S3Server, events: &[CallEvent]) -> anyhow::Result<()> {
    let recording = events::recording(events).context("no recording.available event")?;
    anyhow::ensure!(
        recording.object_key.starts_with(PREFIX),
        "object key {} lacks the prefix {PREFIX}",
        recording.object_key
    );
    let keys = s3.list_keys().await?;
    anyhow::ensure!(
        keys.contains(&recording.object_key),
        "{} not in the bucket, which holds {keys:?}",
        recording.object_key
    );
    let bytes = s3.get(&recording.object_key).await?;
    anyhow::ensure!(
        bytes.len() as u64 == recording.size_bytes,
        "object has {} bytes, event says {}",
        bytes.len(),
        recording.size_bytes
    );
    let wav = WavSummary::parse(&bytes)?;
    ctx.step(format!("recording {}: {wav:?}", recording.object_key));
    anyhow::ensure!(wav.channels == 2, "recording has {} channel(s), expected stereo", wav.channels);
    anyhow::ensure!(
        wav.sample_rate == recording.sample_rate_hz,
        "WAV at {} Hz, event says {}",
        wav.sample_rate,
        recording.sample_rate_hz
    );
    let talk = Duration::from_millis(events::talk_millis(events).context("no answer/end times")?.max(0) as u64);
    anyhow::ensure!(
        talk >= Duration::from_secs(8) && talk <= Duration::from_secs(15),
        "answer to hangup took {talk:?}; SIPp talks for 9 s"
    );
    let off = wav.duration.as_secs_f64() - talk.as_secs_f64();
    anyhow::ensure!(off.abs() <= 1.5, "recording lasts {:?} but the call's media lasted {talk:?}", wav.duration);
    let reported = Duration::from_millis(recording.duration_ms);
    anyhow::ensure!(
        (reported.as_secs_f64() - wav.duration.as_secs_f64()).abs() <= 0.25,
        "event says {reported:?}, WAV holds {:?}",
        wav.duration
    );
    for (channel, rms) in wav.rms.iter().enumerate() {
        anyhow::ensure!(
            *rms > AUDIBLE_RMS,
            "channel {channel} is silent (RMS {rms:.0}); RMS per channel {:?}",
            wav.rms
        );
    }
    Ok(())
}

/// Checks the Task the connector wrote for the call.
fn check_task(task: &Value, call_id: &str, agent: &Agent, recording_url: &str) -> anyhow::Result<()> {
    let field = |name: &str| task[name].clone();
    anyhow::ensure!(field("Type") == "Call", "Type {}", field("Type"));
    anyhow::ensure!(field("CallType") == "Inbound", "CallType {}", field("CallType"));
    anyhow::ensure!(field("Status") == "Completed", "Status {}", field("Status"));
    let owner = field("OwnerId");
    anyhow::ensure!(salesforce::same_id(owner.as_str().unwrap_or(""), salesforce::AGENT_USER_ID), "OwnerId {owner}");
    let duration = field("CallDurationInSeconds").as_f64().unwrap_or(0.0);
    anyhow::ensure!(duration > 0.0, "CallDurationInSeconds {}", field("CallDurationInSeconds"));
    let description = field("Description");
    anyhow::ensure!(
        description.as_str().is_some_and(|d| d.contains(recording_url)),
        "Description {description} lacks the recording link {recording_url}"
    );
    let key = format!("{call_id}:{}", agent.user_id);
    anyhow::ensure!(
        field("Switchboard_Key__c") == key.as_str(),
        "Switchboard_Key__c {} (expected {key})",
        field("Switchboard_Key__c")
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbound_call_is_recorded_published_and_logged_as_one_task() {
    let ctx = TestContext::new("inbound_call");
    let result = inbound_call(&ctx).await;
    ctx.check(result).unwrap();
}

async fn inbound_call(ctx: &TestContext) -> anyhow::Result<()> {
    let mut deployment = Deployment::start(ctx).await?;
    ctx.step("deployment up");

    // First call: every artefact of it.
    deployment.call(ctx, "call-1").await?;
    ctx.step("call 1 done");
    let calls = deployment.published_calls(1).await?;
    ctx.step("call 1 published");
    anyhow::ensure!(
        calls.len() == 1,
        "one call placed, {} call ids on the topic: {:?}",
        calls.len(),
        calls.iter().map(|c| &c.0).collect::<Vec<_>>()
    );
    let (first_call, first_events) = &calls[0];
    let records = deployment.tansu.read_all(TOPIC).await?;
    check_call_events(&records, first_call, first_events, &deployment.agent)?;
    check_recording(ctx, &deployment.s3, first_events).await?;
    let first_url = events::recording(first_events).map(|r| r.url.clone()).unwrap_or_default();
    let task = deployment.completed_task(first_call, &first_url).await?;
    ctx.step(format!("task of call 1: {task}"));
    check_task(&task, first_call, &deployment.agent, &first_url)?;
    let tasks = deployment.salesforce.tasks();
    anyhow::ensure!(tasks.len() == 1, "one call, {} Tasks: {tasks:#?}", tasks.len());
    // The connector published the Task's status for the gateway.
    let task_id = task["Id"].as_str().unwrap_or_default().to_owned();
    eventually("the Task's sync status on the status topic", SETTLE, || async {
        let statuses = deployment.tansu.read_all(STATUS_TOPIC).await?;
        Ok(statuses.iter().find_map(|r| {
            let status = TaskSyncStatus::decode(r.payload.as_slice()).ok()?;
            (r.key.as_deref() == Some(first_call.as_str()) && status.state() == TaskSyncState::Synced && status.task_id == task_id).then_some(())
        }))
    })
    .await?;

    // Second call: a second Task.
    deployment.call(ctx, "call-2").await?;
    ctx.step("call 2 done");
    let calls = deployment.published_calls(2).await?;
    ctx.step("call 2 published");
    anyhow::ensure!(calls.len() == 2, "two calls placed, {} call ids on the topic", calls.len());
    let (second_call, second_events) = calls.iter().find(|(id, _)| id != first_call).context("second call missing")?;
    let records = deployment.tansu.read_all(TOPIC).await?;
    check_call_events(&records, second_call, second_events, &deployment.agent)?;
    check_recording(ctx, &deployment.s3, second_events).await?;
    let second_url = events::recording(second_events).map(|r| r.url.clone()).unwrap_or_default();
    let task = deployment.completed_task(second_call, &second_url).await?;
    ctx.step("task of call 2 completed");
    check_task(&task, second_call, &deployment.agent, &second_url)?;
    eventually("the connector to commit everything it consumed", SETTLE, || async {
        Ok(deployment.tansu.caught_up("switchboard-connector", TOPIC).await?.then_some(()))
    })
    .await?;
    ctx.step("connector committed everything");
    let tasks = deployment.salesforce.tasks();
    anyhow::ensure!(tasks.len() == 2, "two calls, {} Tasks: {tasks:#?}", tasks.len());

    // A new consumer group replays the topic from the start: every write is
    // an upsert by external id, so no third Task appears.
    deployment.connector.take().context("connector running")?.stop().await?;
    let mut replay = deployment.config.clone();
    replay.set("kafka.group_id", "switchboard-connector-replay");
    replay.use_free_http_port()?;
    let _replaying = replay.spawn(ctx, "connector").await?;
    ctx.step("replaying connector up");
    eventually("the replaying connector to consume the whole topic", SETTLE, || async {
        Ok(deployment.tansu.caught_up("switchboard-connector-replay", TOPIC).await?.then_some(()))
    })
    .await?;
    ctx.step("replaying connector caught up");
    let tasks = deployment.salesforce.tasks();
    anyhow::ensure!(tasks.len() == 2, "after replay {} Tasks (expected 2): {tasks:#?}", tasks.len());
    for (call, url) in [(first_call, &first_url), (second_call, &second_url)] {
        let task = tasks.iter().find(|t| t["CallObject"] == call.as_str()).context("a Task vanished")?;
        check_task(task, call, &deployment.agent, url)?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_to_an_unknown_number_is_refused_with_404() {
    let ctx = TestContext::new("unknown_number");
    let result = unknown_number(&ctx).await;
    ctx.check(result).unwrap();
}

async fn unknown_number(ctx: &TestContext) -> anyhow::Result<()> {
    let deployment = Deployment::start(ctx).await?;
    let scenario = Scenario::File(sipp::scenario_dir().join("uac_expect_404.xml"));
    let run = sipp::uac(ctx, "carrier", scenario, "14155550199", deployment.sip, 1, Duration::from_secs(20)).await?;
    anyhow::ensure!(
        run.succeeded(),
        "the gateway did not answer 404 to an unknown number (SIPp exit {:?})",
        run.status
    );
    anyhow::ensure!(run.messages.contains("SIP/2.0 404"), "no 404 in SIPp's trace");
    Ok(())
}
