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
use switchboard_e2e::switchboard::{provision_agent, Config};
use switchboard_e2e::wav::{WavSummary, AUDIBLE_RMS};
use switchboard_e2e::{eventually, TestContext};
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

async fn up(ctx: &TestContext) -> anyhow::Result<()> {
    let data_dir = ctx.subdir("data")?;
    let mut phone = Uas::start(ctx, "desk-phone").await?;
    let mut config = Config::new();
    config.set("data_dir", data_dir.display()).set("log.level", "info");
    let sip = config.use_free_gateway_ports()?;

    config.run(ctx, &["migrate"]).await?;
    let agent = provision_agent(&config, ctx, salesforce::AGENT_USER_ID, &phone.contact(), NUMBER).await?;

    // No Salesforce yet: the call works and its events stay in the outbox.
    let mut product = config.spawn(ctx, "up").await?;
    ctx.step("up is ready");
    let run = sipp::uac(ctx, "carrier", Scenario::Builtin("uac_pcap"), DIALLED, sip, 1, Duration::from_secs(45)).await?;
    anyhow::ensure!(run.succeeded(), "the carrier's call failed (SIPp exit {:?}); see the sipp logs", run.status);
    ctx.step("call done");
    product.process().ensure_running()?;
    phone.process().ensure_running()?;

    let database = sqlite_database(&data_dir)?;
    let rows: Vec<OutboxRow> = eventually("the recording event in the outbox", SETTLE, || async {
        let rows = events::read_sqlite_outbox(&database).await?;
        Ok(rows.iter().any(|r| r.kind == "recording.available").then_some(rows))
    })
    .await?;
    ctx.step(format!("outbox: {:?}", rows.iter().map(|r| (r.id, r.kind.as_str())).collect::<Vec<_>>()));
    let call_id = rows[0].call_id.clone();
    anyhow::ensure!(rows.iter().all(|r| r.call_id == call_id), "one call placed, outbox holds several: {rows:?}");
    let call_events: Vec<CallEvent> = rows.iter().map(|r| r.event.clone()).collect();
    anyhow::ensure!(events::kinds(&call_events) == ANSWERED_CALL, "outbox holds {:?}", events::kinds(&call_events));
    events::ensure_in_sequence(&call_events)?;
    for row in &rows {
        anyhow::ensure!(row.sequence as u64 == row.event.sequence, "row {} column sequence {} vs event {}", row.id, row.sequence, row.event.sequence);
        anyhow::ensure!(row.kind == row.event.kind_name(), "row {} kind column {} vs event {}", row.id, row.kind, row.event.kind_name());
        anyhow::ensure!(row.event.call_id == call_id, "row {} carries call {}", row.id, row.event.call_id);
    }

    // The recording sits in the local store, named by its event.
    let recording = events::recording(&call_events).context("no recording event")?.clone();
    let recordings_dir = data_dir.join("recordings");
    let wavs = files_below(&recordings_dir, &|p| p.extension().is_some_and(|e| e == "wav"));
    anyhow::ensure!(wavs.len() == 1, "expected one WAV under {}, found {wavs:?}", recordings_dir.display());
    anyhow::ensure!(
        wavs[0].ends_with(&recording.object_key),
        "WAV at {} but the event names {}",
        wavs[0].display(),
        recording.object_key
    );
    let bytes = std::fs::read(&wavs[0])?;
    let wav = WavSummary::parse(&bytes)?;
    ctx.step(format!("recording {}: {wav:?}", wavs[0].display()));
    anyhow::ensure!(wav.channels == 2, "recording has {} channel(s), expected stereo", wav.channels);
    let talk = events::talk_millis(&call_events).context("no answer/end times")? as f64 / 1000.0;
    anyhow::ensure!((wav.duration.as_secs_f64() - talk).abs() <= 1.5, "recording lasts {:?}, the call's media {talk} s", wav.duration);
    for (channel, rms) in wav.rms.iter().enumerate() {
        anyhow::ensure!(*rms > AUDIBLE_RMS, "channel {channel} is silent (RMS {rms:.0})");
    }

    // Connect an org: the restarted product syncs the backlog into exactly
    // one Task.
    product.stop().await?;
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
    anyhow::ensure!(salesforce::same_id(task["OwnerId"].as_str().unwrap_or(""), salesforce::AGENT_USER_ID), "OwnerId {}", task["OwnerId"]);
    anyhow::ensure!(task["CallDurationInSeconds"].as_f64().unwrap_or(0.0) > 0.0, "CallDurationInSeconds {}", task["CallDurationInSeconds"]);
    anyhow::ensure!(
        task["Description"].as_str().is_some_and(|d| d.contains(&recording.url)),
        "Description {} lacks {}",
        task["Description"],
        recording.url
    );
    anyhow::ensure!(task["Switchboard_Key__c"] == format!("{call_id}:{}", agent.user_id).as_str(), "external id {}", task["Switchboard_Key__c"]);
    Ok(())
}
