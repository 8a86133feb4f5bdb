//! The softphone page in Debian's Chromium against `switchboard up`: the
//! agent connects with Salesforce (the emulator signs it in), the page
//! registers as the agent's browser phone, a carrier (SIPp, playing
//! recorded speech) calls the agent's number, the page rings and the agent
//! answers it, and audio goes both ways over WebRTC: the page receives the
//! carrier's audio, and the call's recording holds the page's fake
//! microphone on the agent's channel. The Open CTI calls the page makes
//! are recorded by a stand-in for `sforce.opencti`. Screenshots of the
//! main states are kept under `target/test-artefacts/browser/`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use switchboard_e2e::browser::{speech_wav, Browser, WaitState, OPENCTI_STAND_IN};
use switchboard_e2e::salesforce::{self, Salesforce};
use switchboard_e2e::sipp::{self, Scenario};
use switchboard_e2e::switchboard::{provision_agent, Config};
use switchboard_e2e::wav::{WavSummary, AUDIBLE_RMS};
use switchboard_e2e::{eventually, TestContext};

const NUMBER: &str = "+14155550123";
const DIALLED: &str = "14155550123";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_softphone_page_rings_answers_and_carries_audio_both_ways() {
    let ctx = TestContext::new("softphone_inbound");
    let result = inbound(&ctx).await;
    ctx.check(result).unwrap();
}

async fn inbound(ctx: &TestContext) -> anyhow::Result<()> {
    let salesforce = Salesforce::start(ctx).await?;
    let data = ctx.subdir("data")?;
    let mut config = Config::new();
    config.set("data_dir", data.display()).set("recordings.record_all", true).set("log.level", "info");
    let sip = config.use_free_gateway_ports()?;
    let http = config.get("http.listen").context("http.listen")?.to_owned();
    let public_url = format!("http://{http}");
    config.set("http.public_url", &public_url);
    salesforce.configure(&mut config);
    salesforce.configure_agent_login(&mut config, &public_url)?;
    config.run(ctx, &["migrate"]).await?;
    // A desk phone that never answers: the call is the browser's to take.
    provision_agent(&config, ctx, salesforce::AGENT_USER_ID, "sip:desk@127.0.0.1:9", NUMBER).await?;
    let mut up = config.spawn(ctx, "up").await?;
    ctx.step("switchboard up");

    let microphone = speech_wav(ctx, "Good morning, this is the browser speaking. How can I help you today?").await?;
    let browser = Browser::launch(ctx, &microphone).await?;
    browser.add_init_script(OPENCTI_STAND_IN).await?;
    let page = browser.new_page(&format!("{public_url}/softphone/")).await?;
    page.wait_for("[data-testid=signin-button]", WaitState::Visible, Duration::from_secs(15)).await?;
    page.screenshot("01-signed-out").await?;
    page.click("[data-testid=signin-button]").await?;
    page.wait_for_function::<bool>("window.switchboard?.state?.device?.registered === true", Duration::from_secs(20))
        .await
        .context("the page signs in and registers as the browser phone")?;
    page.wait_for("[data-testid=dialer]", WaitState::Visible, Duration::from_secs(10)).await?;
    page.screenshot("02-ready").await?;
    ctx.step("signed in, registered");

    // The carrier calls while the test answers in the page.
    let carrier = sipp::uac(ctx, "carrier", Scenario::Builtin("uac_pcap"), DIALLED, sip, 1, Duration::from_secs(60));
    let answer = async {
        page.wait_for("[data-testid=incoming-call]", WaitState::Visible, Duration::from_secs(20)).await.context("the page rings")?;
        page.screenshot("03-ringing").await?;
        page.click("[data-testid=incoming-call] [data-testid=answer]").await?;
        page.wait_for_function::<bool>(
            "[...window.switchboard.peerConnections.values()].some(pc => pc.connectionState === 'connected')",
            Duration::from_secs(15),
        )
        .await
        .context("the browser leg connects (ICE, DTLS)")?;
        page.wait_for("[data-testid=call-controls]", WaitState::Visible, Duration::from_secs(10)).await?;
        // Half way through the carrier's nine seconds of speech.
        let stats = eventually("150 packets of the carrier's audio at the browser", Duration::from_secs(20), || async {
            let stats = page.rtc_stats("[...window.switchboard.peerConnections.values()][0]").await?;
            let enough = stats.inbound.as_ref().is_some_and(|i| i.packets_received >= 150);
            Ok(enough.then_some(stats))
        })
        .await?;
        page.screenshot("04-in-call").await?;
        anyhow::Ok(stats)
    };
    let (run, stats) = tokio::join!(carrier, answer);
    let (run, stats) = (run?, stats?);
    anyhow::ensure!(run.succeeded(), "the carrier's call failed (SIPp exit {:?})", run.status);
    ctx.step(format!("call answered in the browser: {stats:?}"));
    let inbound = stats.inbound.context("no inbound audio stats")?;
    let outbound = stats.outbound.context("no outbound audio stats")?;
    anyhow::ensure!(inbound.packets_received >= 150, "{inbound:?}");
    anyhow::ensure!(inbound.total_audio_energy.unwrap_or(0.0) > 0.0, "the carrier's audio is sound, not silence: {inbound:?}");
    anyhow::ensure!(outbound.packets_sent >= 150, "{outbound:?}");
    anyhow::ensure!(inbound.codec.as_deref().is_some_and(|c| c.eq_ignore_ascii_case("audio/PCMA")), "A-law passes through untranscoded: {inbound:?}");

    // The carrier hung up: the page shows the call ended.
    page.wait_for("[data-testid=wrapup]", WaitState::Visible, Duration::from_secs(20)).await.context("the page shows the ended call")?;
    page.wait_for_function::<bool>("window.switchboard.peerConnections.size === 0", Duration::from_secs(10))
        .await
        .context("the browser leg is closed (webrtc.ended)")?;
    page.screenshot("05-wrap-up").await?;

    // The recording: the carrier on one channel, the browser's speech on the other.
    let wav = eventually("the call's recording", Duration::from_secs(30), || async { Ok(find_wav(&data)) }).await?;
    let summary = WavSummary::parse(&std::fs::read(&wav)?)?;
    anyhow::ensure!(summary.channels == 2, "{summary:?}");
    anyhow::ensure!(summary.rms.iter().all(|&rms| rms > AUDIBLE_RMS), "both sides are audible in the recording: {summary:?}");

    // Open CTI: click-to-dial enabled and the panel shown for the call.
    let calls = page.opencti_calls().await?;
    let methods: Vec<&str> = calls.iter().map(|c| c.method.as_str()).collect();
    anyhow::ensure!(methods.contains(&"enableClickToDial"), "Open CTI calls: {methods:?}");
    anyhow::ensure!(
        calls.iter().any(|c| c.method == "setSoftphonePanelVisibility" && c.args["visible"] == true),
        "the panel is shown for the incoming call: {methods:?}"
    );
    let console = page.console().await?;
    anyhow::ensure!(console.errors.is_empty(), "the page had errors: {}", console.lines());
    browser.close().await?;
    up.process().ensure_running()?;
    up.stop().await?;
    Ok(())
}

/// The first WAV file under `dir` (the local recordings store).
fn find_wav(dir: &Path) -> Option<PathBuf> {
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).ok()?.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "wav") && !path.to_string_lossy().contains("spool") {
                return Some(path);
            }
        }
    }
    None
}
