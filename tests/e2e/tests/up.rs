//! `switchboard up`: both roles in one process on the embedded defaults
//! (SQLite, the outbox as event log, recordings in a local directory). A call
//! works with no Salesforce configured; its events wait in the outbox, and
//! the Task appears once an org is connected.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use switchboard_e2e::events::{self, OutboxRow, ANSWERED_CALL};
use switchboard_e2e::salesforce::{self, Salesforce};
use switchboard_e2e::sipp::{self, Scenario, Uas};
use switchboard_e2e::switchboard::{provision_agent, Agent, Config, Service};
use switchboard_e2e::wav::{self, WavSummary, AUDIBLE_RMS};
use switchboard_e2e::{eventually, TestContext};
use switchboard_proto::v1::ChannelRole;
use switchboard_proto::CallEvent;

const NUMBER: &str = "+14155550100";
const DIALLED: &str = "14155550100";
const SETTLE: Duration = Duration::from_secs(60);

/// Files below `dir` (recursively) for which `wanted` holds.
fn files_below(dir: &Path, wanted: &dyn Fn(&Path) -> bool) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else if wanted(&path) {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

/// The SQLite database `up` keeps in its data directory, found by its file
/// header so the test does not depend on the file's name.
fn sqlite_database(data_dir: &Path) -> anyhow::Result<PathBuf> {
    let databases = files_below(data_dir, &|p| {
        std::fs::read(p).map(|bytes| bytes.starts_with(b"SQLite format 3\0")).unwrap_or(false)
    });
    match databases.as_slice() {
        [one] => Ok(one.clone()),
        [] => anyhow::bail!("no SQLite database in {}", data_dir.display()),
        many => anyhow::bail!("several SQLite databases in {}: {many:?}", data_dir.display()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_records_a_call_keeps_its_events_and_syncs_them_once_salesforce_is_connected() {
    let ctx = TestContext::new("up");
    let result = up(&ctx).await;
    ctx.check(result).unwrap();
}

/// `switchboard up` on free ports over a fresh data directory, with one
/// agent whose desk phone is `phone`, and no Salesforce.
struct Product {
    data_dir: PathBuf,
    config: Config,
    sip: std::net::SocketAddr,
    agent: Agent,
    service: Service,
}

impl Product {
    async fn start(ctx: &TestContext, phone: &Uas) -> anyhow::Result<Self> {
        let data_dir = ctx.subdir("data")?;
        let mut config = Config::new();
        config.set("data_dir", data_dir.display()).set("log.level", "info");
        let sip = config.use_free_gateway_ports()?;
        config.run(ctx, &["migrate"]).await?;
        let agent = provision_agent(&config, ctx, salesforce::AGENT_USER_ID, &phone.contact(), NUMBER).await?;
        let service = config.spawn(ctx, "up").await?;
        ctx.step("up is ready");
        Ok(Self { data_dir, config, sip, agent, service })
    }

    /// Places the carrier's call (SIPp `uac_pcap`) and waits until its
    /// recording is announced in the outbox; returns the outbox then.
    async fn call(&mut self, ctx: &TestContext, phone: &mut Uas) -> anyhow::Result<Vec<OutboxRow>> {
        let run =
            sipp::uac(ctx, "carrier", Scenario::Builtin("uac_pcap"), DIALLED, self.sip, 1, Duration::from_secs(45))
                .await?;
        anyhow::ensure!(run.succeeded(), "the carrier's call failed (SIPp exit {:?}); see the sipp logs", run.status);
        ctx.step("call done");
        self.service.process().ensure_running()?;
        phone.process().ensure_running()?;
        let database = sqlite_database(&self.data_dir)?;
        eventually("the recording event in the outbox", SETTLE, || async {
            let rows = events::read_sqlite_outbox(&database).await?;
            Ok(rows.iter().any(|r| r.kind == "recording.available").then_some(rows))
        })
        .await
    }

    /// The one WAV file under `<data_dir>/recordings`, checked to be the
    /// object the event names.
    fn recording_file(&self, object_key: &str) -> anyhow::Result<PathBuf> {
        let recordings_dir = self.data_dir.join("recordings");
        let wavs = files_below(&recordings_dir, &|p| p.extension().is_some_and(|e| e == "wav"));
        anyhow::ensure!(wavs.len() == 1, "expected one WAV under {}, found {wavs:?}", recordings_dir.display());
        anyhow::ensure!(wavs[0].ends_with(object_key), "WAV at {} but the event names {object_key}", wavs[0].display());
        Ok(wavs[0].clone())
    }
}

async fn up(ctx: &TestContext) -> anyhow::Result<()> {
    let mut phone = Uas::start(ctx, "desk-phone").await?;
    // No Salesforce yet: the call works and its events stay in the outbox.
    let mut product = Product::start(ctx, &phone).await?;
    let rows = product.call(ctx, &mut phone).await?;
    let (data_dir, config, agent) = (product.data_dir.clone(), product.config.clone(), product.agent.clone());
    let database = sqlite_database(&data_dir)?;
    ctx.step(format!("outbox: {:?}", rows.iter().map(|r| (r.id, r.kind.as_str())).collect::<Vec<_>>()));
    let call_id = rows[0].call_id.clone();
    anyhow::ensure!(rows.iter().all(|r| r.call_id == call_id), "one call placed, outbox holds several: {rows:?}");
    let call_events: Vec<CallEvent> = rows.iter().map(|r| r.event.clone()).collect();
    anyhow::ensure!(events::kinds(&call_events) == ANSWERED_CALL, "outbox holds {:?}", events::kinds(&call_events));
    events::ensure_in_sequence(&call_events)?;
    for row in &rows {
        anyhow::ensure!(
            row.sequence as u64 == row.event.sequence,
            "row {} column sequence {} vs event {}",
            row.id,
            row.sequence,
            row.event.sequence
        );
        anyhow::ensure!(
            row.kind == row.event.kind_name(),
            "row {} kind column {} vs event {}",
            row.id,
            row.kind,
            row.event.kind_name()
        );
        anyhow::ensure!(row.event.call_id == call_id, "row {} carries call {}", row.id, row.event.call_id);
    }

    // The recording sits in the local store, named by its event.
    let recording = events::recording(&call_events).context("no recording event")?.clone();
    let file = product.recording_file(&recording.object_key)?;
    let bytes = std::fs::read(&file)?;
    let wav = WavSummary::parse(&bytes)?;
    ctx.step(format!("recording {}: {wav:?}", file.display()));
    anyhow::ensure!(wav.channels == 2, "recording has {} channel(s), expected stereo", wav.channels);
    let talk = events::talk_millis(&call_events).context("no answer/end times")? as f64 / 1000.0;
    anyhow::ensure!(
        (wav.duration.as_secs_f64() - talk).abs() <= 1.5,
        "recording lasts {:?}, the call's media {talk} s",
        wav.duration
    );
    for (channel, rms) in wav.rms.iter().enumerate() {
        anyhow::ensure!(*rms > AUDIBLE_RMS, "channel {channel} is silent (RMS {rms:.0})");
    }

    // Connect an org: the restarted product syncs the backlog into exactly
    // one Task.
    product.service.stop().await?;
    let org = Salesforce::start(ctx).await?;
    anyhow::ensure!(org.tasks().is_empty(), "a fresh org holds Tasks");
    let mut connected = config.clone();
    org.configure(&mut connected);
    let _product = connected.spawn(ctx, "up").await?;
    ctx.step("up with Salesforce is ready");
    let last_id = rows.iter().map(|r| r.id).max().unwrap_or(0);
    eventually("the connector to read the whole outbox", SETTLE, || async {
        let cursors = events::read_sqlite_cursors(&database).await?;
        Ok(cursors.iter().any(|(_, position)| *position >= last_id).then_some(()))
    })
    .await?;
    let task = eventually("a completed Task for the call", SETTLE, || async {
        Ok(org.tasks().into_iter().find(|t| t["CallObject"] == call_id.as_str() && t["Status"] == "Completed"))
    })
    .await?;
    ctx.step(format!("task: {task}"));
    let tasks = org.tasks();
    anyhow::ensure!(tasks.len() == 1, "one call, {} Tasks: {tasks:#?}", tasks.len());
    anyhow::ensure!(task["Type"] == "Call" && task["CallType"] == "Inbound", "Task {task:#}");
    anyhow::ensure!(
        salesforce::same_id(task["OwnerId"].as_str().unwrap_or(""), salesforce::AGENT_USER_ID),
        "OwnerId {}",
        task["OwnerId"]
    );
    anyhow::ensure!(
        task["CallDurationInSeconds"].as_f64().unwrap_or(0.0) > 0.0,
        "CallDurationInSeconds {}",
        task["CallDurationInSeconds"]
    );
    anyhow::ensure!(
        task["Description"].as_str().is_some_and(|d| d.contains(&recording.url)),
        "Description {} lacks {}",
        task["Description"],
        recording.url
    );
    anyhow::ensure!(
        task["Switchboard_Key__c"] == format!("{call_id}:{}", agent.user_id).as_str(),
        "external id {}",
        task["Switchboard_Key__c"]
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_records_the_caller_and_the_agent_on_separate_channels() {
    let ctx = TestContext::new("up_channels");
    let result = separate_channels(&ctx).await;
    ctx.check(result).unwrap();
}

/// The agent's phone plays a 1 kHz tone and does not echo the caller, so
/// each party's channel must hold its own sound only: the caller's speech
/// on the customer channel, the tone on the agent channel.
async fn separate_channels(ctx: &TestContext) -> anyhow::Result<()> {
    const TONE_HZ: f64 = 1_000.0;
    sipp::write_tone_pcap(&sipp::tone_pcap_path(ctx, "tone-phone")?, TONE_HZ, Duration::from_secs(8))?;
    let scenario = Scenario::File(sipp::scenario_dir().join("uas_tone.xml"));
    let mut phone = Uas::start_scenario(ctx, "tone-phone", scenario, false).await?;
    let mut product = Product::start(ctx, &phone).await?;
    let rows = product.call(ctx, &mut phone).await?;
    let call_events: Vec<CallEvent> = rows.iter().map(|r| r.event.clone()).collect();
    let recording = events::recording(&call_events).context("no recording event")?.clone();
    let roles = [ChannelRole::Customer as i32, ChannelRole::Agent as i32];
    anyhow::ensure!(
        recording.channels == roles,
        "channel roles {:?}, expected customer then agent",
        recording.channels
    );

    let bytes = std::fs::read(product.recording_file(&recording.object_key)?)?;
    let wav = WavSummary::parse(&bytes)?;
    let shares = wav::tone_share(&bytes, TONE_HZ)?;
    ctx.step(format!("recording {wav:?}, share of energy at {TONE_HZ} Hz per channel {shares:?}"));
    anyhow::ensure!(wav.channels == 2, "recording has {} channel(s), expected stereo", wav.channels);
    for (channel, rms) in wav.rms.iter().enumerate() {
        anyhow::ensure!(
            *rms > AUDIBLE_RMS,
            "channel {channel} is silent (RMS {rms:.0}); RMS per channel {:?}",
            wav.rms
        );
    }
    anyhow::ensure!(shares[0] < 0.2, "the customer channel holds the agent's tone ({:.2} of its energy)", shares[0]);
    anyhow::ensure!(
        shares[1] > 0.7,
        "the agent channel does not hold the agent's tone (only {:.2} of its energy)",
        shares[1]
    );
    Ok(())
}
