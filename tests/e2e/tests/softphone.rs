//! The softphone page in Debian's Chromium against `switchboard up`: the
//! agent connects with Salesforce (the emulator signs it in), the page
//! registers as the agent's browser phone, a carrier (SIPp, playing
//! recorded speech) calls the agent's number, the page rings and the agent
//! answers it, and audio goes both ways over WebRTC: the page receives the
//! carrier's audio, and the call's recording holds the page's fake
//! microphone on the agent's channel. The Open CTI calls the page makes
//! are recorded by a stand-in for `sforce.opencti`. A second test makes
//! the browser relay-only: the media then goes through coturn with the
//! TURN credentials the gateway hands the page. Calls the agent places go
//! out through the trunk to SIPp, or to baresip where what the far end
//! heard is analysed (hold music). Screenshots of the main states are kept
//! under `target/test-artefacts/browser/`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use switchboard_e2e::baresip::Baresip;
use switchboard_e2e::browser::{speech_wav, Browser, Page, RtcAudioStats, WaitState, OPENCTI_STAND_IN};
use switchboard_e2e::salesforce::{self, Salesforce};
use switchboard_e2e::sipp::{self, Scenario, Uas};
use switchboard_e2e::switchboard::{provision_agent, Config, Service};
use switchboard_e2e::turn::TurnServer;
use switchboard_e2e::wav::{self, WavSummary, AUDIBLE_RMS};
use switchboard_e2e::{eventually, TestContext};

const NUMBER: &str = "+14155550123";
const DIALLED: &str = "14155550123";

/// `switchboard up` (SQLite, every call recorded) with the org's agent
/// able to connect with Salesforce, and the page open in Chromium.
struct Softphone {
    salesforce: Salesforce,
    config: Config,
    public_url: String,
    up: Service,
    sip: SocketAddr,
    http: String,
    data: PathBuf,
    browser: Browser,
    page: Page,
}

impl Softphone {
    /// Starts everything; `tune` adjusts the configuration, `init` runs in
    /// the page before its scripts (after the Open CTI stand-in).
    async fn start(ctx: &TestContext, desk_phone: &str, tune: impl FnOnce(&mut Config), init: Option<&str>) -> anyhow::Result<Self> {
        Self::start_with(ctx, desk_phone, tune, init, &[]).await
    }

    /// [`start`](Self::start) with more Chromium switches.
    async fn start_with(ctx: &TestContext, desk_phone: &str, tune: impl FnOnce(&mut Config), init: Option<&str>, chromium_args: &[&str]) -> anyhow::Result<Self> {
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
        tune(&mut config);
        config.run(ctx, &["migrate"]).await?;
        provision_agent(&config, ctx, salesforce::AGENT_USER_ID, desk_phone, NUMBER).await?;
        let up = config.spawn(ctx, "up").await?;
        ctx.step("switchboard up");

        let (browser, page) = open_page(ctx, &public_url, init, "Good morning, this is the browser speaking. How can I help you today?", chromium_args).await?;
        Ok(Self { salesforce, config, public_url, up, sip, http, data, browser, page })
    }

    /// The page with a far end beyond the trunk (SIPp answering, echoing
    /// what it hears when `echo`), for calls the agent places.
    async fn with_far_end(ctx: &TestContext, echo: bool) -> anyhow::Result<(Self, Uas)> {
        let pstn = Uas::start_scenario(ctx, "pstn", Scenario::Builtin("uas"), echo).await?;
        let trunk = format!(r#"[{{ name = "test-carrier", inbound_from = ["127.0.0.1/32"], address = "127.0.0.1:{}" }}]"#, pstn.sip_port());
        let phone = Self::start(ctx, SILENT_DESK_PHONE, |c| {
            c.set("sip.trunks", &trunk);
        }, None)
        .await?;
        Ok((phone, pstn))
    }

    /// Dials the far end from the page's dialer and waits until it answers.
    async fn dial_out(&self) -> anyhow::Result<()> {
        self.page.fill("[data-testid=dial-input]", "+1 415 555 0199").await?;
        self.page.click("[data-testid=dial-call]").await?;
        self.page.wait_for("[data-testid=call-controls]", WaitState::Visible, Duration::from_secs(20)).await.context("the far end answers")
    }

    /// Another agent's page in a browser of its own, signed in as
    /// `username` at the org.
    async fn colleague_page(&self, ctx: &TestContext, username: &str) -> anyhow::Result<(Browser, Page)> {
        self.salesforce.browser_signs_in_as(username)?;
        open_page(ctx, &self.public_url, None, "Hello, colleague here, I can take that call.", &[]).await
    }

    /// The carrier calls the agent's number with nine seconds of recorded
    /// speech while the agent answers in the page; returns the browser
    /// leg's audio statistics once 150 packets came in.
    async fn answer_carrier_call(&self, ctx: &TestContext) -> anyhow::Result<AnsweredCall> {
        let page = &self.page;
        let carrier = sipp::uac(ctx, "carrier", Scenario::Builtin("uac_pcap"), DIALLED, self.sip, 1, Duration::from_secs(60));
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
                let stats = page.rtc_stats(FIRST_PC).await?;
                let enough = stats.inbound.as_ref().is_some_and(|i| i.packets_received >= 150);
                Ok(enough.then_some(stats))
            })
            .await?;
            page.screenshot("04-in-call").await?;
            let (local_candidate, local_protocol): (String, String) = page
                .evaluate(&format!(
                    "(async () => {{ const s = [...(await {FIRST_PC}.getStats()).values()]; \
                       const pair = s.find(r => r.type === 'candidate-pair' && r.nominated && r.state === 'succeeded'); \
                       const local = pair && s.find(r => r.id === pair.localCandidateId); \
                       return local ? [local.candidateType, local.protocol] : ['none', 'none']; }})()"
                ))
                .await?;
            anyhow::Ok(AnsweredCall { stats, local_candidate, local_protocol })
        };
        let (run, call) = tokio::join!(carrier, answer);
        let (run, call) = (run?, call?);
        anyhow::ensure!(run.succeeded(), "the carrier's call failed (SIPp exit {:?})", run.status);
        ctx.step(format!("call answered in the browser over a {} candidate: {:?}", call.local_candidate, call.stats));
        let inbound = call.stats.inbound.as_ref().context("no inbound audio stats")?;
        let outbound = call.stats.outbound.as_ref().context("no outbound audio stats")?;
        anyhow::ensure!(inbound.total_audio_energy.unwrap_or(0.0) > 0.0, "the carrier's audio is sound, not silence: {inbound:?}");
        anyhow::ensure!(outbound.packets_sent >= 150, "{outbound:?}");
        Ok(call)
    }

    /// After the carrier hung up: the page shows the ended call and the
    /// browser leg is gone.
    async fn call_ended(&self) -> anyhow::Result<()> {
        self.page.wait_for("[data-testid=wrapup]", WaitState::Visible, Duration::from_secs(20)).await.context("the page shows the ended call")?;
        self.page
            .wait_for_function::<bool>("window.switchboard.peerConnections.size === 0", Duration::from_secs(10))
            .await
            .context("the browser leg is closed (webrtc.ended)")?;
        self.page.screenshot("05-wrap-up").await?;
        Ok(())
    }

    /// A sample of the gateway's `/metrics` (0 when absent).
    async fn metric(&self, series: &str) -> anyhow::Result<f64> {
        let text = reqwest::get(format!("http://{}/metrics", self.http)).await?.text().await?;
        Ok(text.lines().find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok())).unwrap_or(0.0))
    }

    async fn stop(mut self) -> anyhow::Result<()> {
        let console = self.page.console().await?;
        anyhow::ensure!(console.errors.is_empty(), "the page had errors: {}", console.lines());
        self.browser.close().await?;
        self.up.process().ensure_running()?;
        self.up.stop().await
    }
}

/// Chromium with a fake microphone speaking `speech`, the Open CTI
/// stand-in (and `init`), on the softphone page, signed in through the org
/// and registered as the browser phone.
async fn open_page(ctx: &TestContext, public_url: &str, init: Option<&str>, speech: &str, args: &[&str]) -> anyhow::Result<(Browser, Page)> {
    let microphone = speech_wav(ctx, speech).await?;
    let browser = Browser::launch_with_args(ctx, &microphone, args).await?;
    browser.add_init_script(OPENCTI_STAND_IN).await?;
    if let Some(init) = init {
        browser.add_init_script(init).await?;
    }
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
    Ok((browser, page))
}

/// A call answered in the page, seen from the browser half way through.
struct AnsweredCall {
    stats: RtcAudioStats,
    /// `candidateType` of the browser's side of the selected pair: `host`,
    /// `srflx`, `prflx` or `relay`.
    local_candidate: String,
    /// Its transport: `udp` or `tcp`.
    local_protocol: String,
}

/// A desk phone that never answers: the call is the browser's to take.
const SILENT_DESK_PHONE: &str = "sip:desk@127.0.0.1:9";

/// The page's first (only) peer connection.
const FIRST_PC: &str = "[...window.switchboard.peerConnections.values()][0]";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_softphone_page_rings_answers_and_carries_audio_both_ways() {
    let ctx = TestContext::new("softphone_inbound");
    let result = inbound(&ctx).await;
    ctx.check(result).unwrap();
}

async fn inbound(ctx: &TestContext) -> anyhow::Result<()> {
    let phone = Softphone::start(ctx, SILENT_DESK_PHONE, |_| {}, None).await?;
    let call = phone.answer_carrier_call(ctx).await?;
    anyhow::ensure!(call.local_candidate != "relay", "no relay without TURN");
    let inbound = call.stats.inbound.context("no inbound audio stats")?;
    anyhow::ensure!(inbound.codec.as_deref().is_some_and(|c| c.eq_ignore_ascii_case("audio/PCMA")), "A-law passes through untranscoded: {inbound:?}");
    phone.call_ended().await?;

    // The recording: the carrier on one channel, the browser's speech on the other.
    let wav = eventually("the call's recording", Duration::from_secs(30), || async { Ok(find_wav(&phone.data)) }).await?;
    let summary = WavSummary::parse(&std::fs::read(&wav)?)?;
    anyhow::ensure!(summary.channels == 2, "{summary:?}");
    anyhow::ensure!(summary.rms.iter().all(|&rms| rms > AUDIBLE_RMS), "both sides are audible in the recording: {summary:?}");

    // Open CTI: click-to-dial enabled and the panel shown for the call.
    let calls = phone.page.opencti_calls().await?;
    let methods: Vec<&str> = calls.iter().map(|c| c.method.as_str()).collect();
    anyhow::ensure!(methods.contains(&"enableClickToDial"), "Open CTI calls: {methods:?}");
    anyhow::ensure!(
        calls.iter().any(|c| c.method == "setSoftphonePanelVisibility" && c.args["visible"] == true),
        "the panel is shown for the incoming call: {methods:?}"
    );
    phone.stop().await
}

/// Makes every peer connection of the page relay-only, as a browser on a
/// network that lets nothing but the TURN server through.
const RELAY_ONLY: &str = r#"(() => {
  const Native = window.RTCPeerConnection;
  const Relayed = function (config, ...rest) { return new Native({ ...(config || {}), iceTransportPolicy: 'relay' }, ...rest); };
  Relayed.prototype = Native.prototype;
  window.RTCPeerConnection = Relayed;
})();"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_that_can_only_relay_reaches_the_gateway_through_turn() {
    let ctx = TestContext::new("softphone_turn");
    let result = through_turn(&ctx).await;
    ctx.check(result).unwrap();
}

async fn through_turn(ctx: &TestContext) -> anyhow::Result<()> {
    let secret = switchboard_e2e::random_secret(24);
    let mut turn = TurnServer::start(ctx, &secret).await?;
    let url = turn.url();
    let phone = Softphone::start(ctx, SILENT_DESK_PHONE, |c| {
        c.set("media.turn_urls", format!("[\"{url}\"]")).set("media.turn_secret", &secret);
    }, Some(RELAY_ONLY))
    .await?;
    let servers: serde_json::Value = phone.page.evaluate("window.switchboard.state.device.iceServers").await?;
    anyhow::ensure!(servers[0]["urls"][0] == url.as_str() && servers[0]["credential"].as_str().is_some_and(|c| !c.is_empty()), "the registration hands out TURN credentials: {servers}");
    let call = phone.answer_carrier_call(ctx).await?;
    let local = call.local_candidate;
    anyhow::ensure!(local == "relay", "the media goes through the TURN relay, not {local}");
    phone.call_ended().await?;
    turn.process().ensure_running()?;
    phone.stop().await
}

/// Takes G.711 (and its telephone-event) out of every offer the page's
/// peer connections are given, as for a browser that has Opus only: the
/// answer, and what the browser sends, are then Opus.
const OPUS_ONLY: &str = r#"(() => {
  const setRemote = RTCPeerConnection.prototype.setRemoteDescription;
  RTCPeerConnection.prototype.setRemoteDescription = function (desc, ...rest) {
    if (desc && desc.type === 'offer' && desc.sdp) {
      const lines = desc.sdp.split('\r\n');
      const drop = new Set(lines.map((l) => /^a=rtpmap:(\d+) (PCMU|PCMA|telephone-event)\/8000/i.exec(l)).filter(Boolean).map((m) => m[1]));
      const sdp = lines
        .filter((l) => { const m = /^a=(rtpmap|fmtp|rtcp-fb):(\d+) /.exec(l); return !(m && drop.has(m[2])); })
        .map((l) => (l.startsWith('m=audio ') ? l.split(' ').filter((t, i) => i < 3 || !drop.has(t)).join(' ') : l))
        .join('\r\n');
      desc = { type: desc.type, sdp };
    }
    return setRemote.call(this, desc, ...rest);
  };
})();"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_speaking_only_opus_is_transcoded_and_sends_narrowband() {
    let ctx = TestContext::new("softphone_opus");
    let result = opus_only(&ctx).await;
    ctx.check(result).unwrap();
}

/// The carrier speaks A-law, the browser only Opus: the gateway transcodes
/// both ways, and since the call is narrowband its offer asks the browser
/// for narrowband Opus, which Chromium sends.
async fn opus_only(ctx: &TestContext) -> anyhow::Result<()> {
    let phone = Softphone::start(ctx, SILENT_DESK_PHONE, |_| {}, Some(OPUS_ONLY)).await?;
    let call = phone.answer_carrier_call(ctx).await?;
    let inbound = call.stats.inbound.context("no inbound audio stats")?;
    let outbound = call.stats.outbound.context("no outbound audio stats")?;
    let opus = |c: &Option<String>| c.as_deref().is_some_and(|c| c.eq_ignore_ascii_case("audio/opus"));
    anyhow::ensure!(opus(&inbound.codec) && opus(&outbound.codec), "the browser speaks Opus both ways: {inbound:?} {outbound:?}");
    phone.call_ended().await?;

    // What the gateway decoded from the browser: narrowband, nothing wider.
    let narrowband = eventually("the browser's Opus counted at the gateway", Duration::from_secs(10), || async {
        let n = phone.metric("switchboard_opus_packets_decoded_total{bandwidth=\"narrowband\"}").await?;
        Ok((n > 0.0).then_some(n))
    })
    .await?;
    let mut wider = 0.0;
    for bandwidth in ["mediumband", "wideband", "superwideband", "fullband"] {
        wider += phone.metric(&format!("switchboard_opus_packets_decoded_total{{bandwidth=\"{bandwidth}\"}}")).await?;
    }
    ctx.step(format!("Opus packets decoded from the browser: {narrowband} narrowband, {wider} wider"));
    anyhow::ensure!(narrowband >= 150.0 && wider == 0.0, "Chromium honours maxplaybackrate=8000: {narrowband} narrowband, {wider} wider");

    // Transcoded both ways: the recording (G.711 side) hears both parties.
    let wav = eventually("the call's recording", Duration::from_secs(30), || async { Ok(find_wav(&phone.data)) }).await?;
    let summary = WavSummary::parse(&std::fs::read(&wav)?)?;
    anyhow::ensure!(summary.rms.iter().all(|&rms| rms > AUDIBLE_RMS), "both sides are audible in the recording: {summary:?}");
    phone.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_that_may_not_use_udp_reaches_the_gateway_over_tcp() {
    let ctx = TestContext::new("softphone_tcp");
    let result = over_tcp(&ctx).await;
    ctx.check(result).unwrap();
}

/// A network that lets no UDP out: Chromium uses the passive TCP
/// candidate of the gateway's offer (RFC 6544) and the call carries audio
/// both ways over one TCP connection.
async fn over_tcp(ctx: &TestContext) -> anyhow::Result<()> {
    let phone = Softphone::start_with(ctx, SILENT_DESK_PHONE, |_| {}, None, &["--webrtc-ip-handling-policy=disable_non_proxied_udp"]).await?;
    let call = phone.answer_carrier_call(ctx).await?;
    anyhow::ensure!(call.local_protocol == "tcp", "the media goes over TCP, not {}", call.local_protocol);
    phone.call_ended().await?;
    phone.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_in_salesforce_moves_a_call_from_the_desk_phone_to_the_browser() {
    let ctx = TestContext::new("softphone_move");
    let result = move_here(&ctx).await;
    ctx.check(result).unwrap();
}

/// F16: the desk phone (SIPp, echoing) answers the carrier's call; the
/// agent clicks "Call in Salesforce" in the page, the browser takes the
/// call over and the carrier's dialog goes on to its normal end.
async fn move_here(ctx: &TestContext) -> anyhow::Result<()> {
    let mut desk = Uas::start(ctx, "desk-phone").await?;
    let phone = Softphone::start(ctx, &desk.contact(), |_| {}, None).await?;
    let page = &phone.page;
    let carrier = sipp::uac(ctx, "carrier", Scenario::Builtin("uac_pcap"), DIALLED, phone.sip, 1, Duration::from_secs(60));
    let take_over = async {
        page.wait_for("[data-testid=move-here]", WaitState::Visible, Duration::from_secs(20))
            .await
            .context("the page offers to take the call answered on the desk phone")?;
        anyhow::ensure!(page.evaluate::<usize>("window.switchboard.peerConnections.size").await? == 0, "no browser leg while the desk phone has the call");
        page.screenshot("03-on-the-desk-phone").await?;
        page.click("[data-testid=move-here]").await?;
        page.wait_for_function::<bool>(
            "[...window.switchboard.peerConnections.values()].some(pc => pc.connectionState === 'connected')",
            Duration::from_secs(15),
        )
        .await
        .context("the browser takes the call (auto-answered offer)")?;
        let stats = eventually("100 packets of the carrier's audio at the browser", Duration::from_secs(10), || async {
            let stats = page.rtc_stats(FIRST_PC).await?;
            Ok(stats.inbound.as_ref().filter(|i| i.packets_received >= 100).map(|_| stats.clone()))
        })
        .await?;
        page.screenshot("04-moved-here").await?;
        anyhow::Ok(stats)
    };
    let (run, stats) = tokio::join!(carrier, take_over);
    let (run, stats) = (run?, stats?);
    anyhow::ensure!(run.succeeded(), "the carrier's call ended badly after the move (SIPp exit {:?})", run.status);
    let inbound = stats.inbound.context("no inbound audio stats")?;
    anyhow::ensure!(inbound.total_audio_energy.unwrap_or(0.0) > 0.0, "the carrier's speech reaches the browser after the move: {inbound:?}");
    phone.call_ended().await?;
    desk.process().ensure_running()?;
    phone.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn click_to_dial_places_a_browser_call_and_the_keypad_sends_each_digit_once() {
    let ctx = TestContext::new("softphone_click_to_dial");
    let result = click_to_dial(&ctx).await;
    ctx.check(result).unwrap();
}

/// F3 through Open CTI: Salesforce's click-to-dial event makes the page
/// place the call from the browser; the far end beyond the trunk (SIPp)
/// answers; the keypad's digits go in band (RFC 4733) and the gateway
/// takes each once; the agent hangs up in the page.
async fn click_to_dial(ctx: &TestContext) -> anyhow::Result<()> {
    let (phone, mut pstn) = Softphone::with_far_end(ctx, false).await?;
    let page = &phone.page;
    let listeners = page.opencti_fire("onClickToDial", &serde_json::json!({ "number": "(415) 555-0199", "objectType": "Contact", "recordId": "0035g00000E2eCt" })).await?;
    anyhow::ensure!(listeners == 1, "the page listens for click-to-dial ({listeners} listeners)");
    page.wait_for_function::<bool>(
        "[...window.switchboard.peerConnections.values()].some(pc => pc.connectionState === 'connected')",
        Duration::from_secs(20),
    )
    .await
    .context("the browser leg of the placed call connects")?;
    page.wait_for("[data-testid=call-controls]", WaitState::Visible, Duration::from_secs(20)).await.context("the far end answers")?;
    let stats = eventually("100 packets of the browser's audio sent", Duration::from_secs(10), || async {
        let stats = page.rtc_stats(FIRST_PC).await?;
        Ok(stats.outbound.as_ref().filter(|o| o.packets_sent >= 100).map(|_| stats.clone()))
    })
    .await?;
    page.screenshot("03-placed-call").await?;
    ctx.step(format!("placed call up: {stats:?}"));

    let digits = "switchboard_dtmf_digits_total{via=\"rfc4733\"}";
    let before = phone.metric(digits).await?;
    page.click("[data-testid=keypad-toggle]").await?;
    for key in ["1", "2", "3"] {
        page.click(&format!("[data-testid=keypad-key-{key}]")).await?;
    }
    anyhow::ensure!(page.text("[data-testid=keypad-digits]").await?.contains("123"), "the keypad shows what was sent");
    page.screenshot("04-keypad").await?;
    let arrived = eventually("three digits at the gateway", Duration::from_secs(10), || async {
        let now = phone.metric(digits).await?;
        Ok((now >= before + 3.0).then_some(()))
    })
    .await;
    if arrived.is_err() {
        let text = reqwest::get(format!("http://{}/metrics", phone.http)).await?.text().await?;
        let relevant: Vec<&str> = text.lines().filter(|l| !l.starts_with('#') && (l.contains("dtmf") || l.contains("webrtc"))).collect();
        let senders: serde_json::Value = page
            .evaluate(&format!("(() => {{ const pc = {FIRST_PC}; return pc.getSenders().map(s => ({{ kind: s.track && s.track.kind, dtmf: !!s.dtmf, can: s.dtmf && s.dtmf.canInsertDTMF, buffer: s.dtmf && s.dtmf.toneBuffer }})); }})()"))
            .await?;
        let sdp: String = page.evaluate(&format!("{FIRST_PC}.currentRemoteDescription.sdp")).await?;
        anyhow::bail!("no digits at the gateway: metrics {relevant:?}, senders {senders}, gateway offer:\n{sdp}");
    }
    page.click("[data-testid=hangup]").await?;
    phone.call_ended().await?;
    let after = phone.metric(digits).await?;
    anyhow::ensure!(after == before + 3.0, "each digit once: {before} → {after}");
    pstn.process().ensure_running()?;
    phone.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mute_in_the_page_silences_what_the_far_end_hears() {
    let ctx = TestContext::new("softphone_mute");
    let result = mute(&ctx).await;
    ctx.check(result).unwrap();
}

/// The agent dials from the page's dialer; the far end beyond the trunk
/// (SIPp) echoes what it hears, so the browser hears what the far end
/// heard: its own speech, and nothing while the agent is muted.
async fn mute(ctx: &TestContext) -> anyhow::Result<()> {
    let (phone, mut pstn) = Softphone::with_far_end(ctx, true).await?;
    let page = &phone.page;
    phone.dial_out().await?;
    // Energy of what the browser hears over the next 200 packets (4 s).
    let heard = || async {
        let start = page.rtc_stats(FIRST_PC).await?.inbound.unwrap_or_default();
        let end = eventually("200 more packets at the browser", Duration::from_secs(15), || async {
            let now = page.rtc_stats(FIRST_PC).await?.inbound.unwrap_or_default();
            Ok((now.packets_received >= start.packets_received + 200).then_some(now))
        })
        .await?;
        anyhow::Ok(end.total_audio_energy.unwrap_or(0.0) - start.total_audio_energy.unwrap_or(0.0))
    };
    let speaking = heard().await?;
    page.click("[data-testid=mute]").await?;
    page.wait_for("[data-testid=mute][aria-pressed=true]", WaitState::Visible, Duration::from_secs(5)).await?;
    page.screenshot("03-muted").await?;
    let muted = heard().await?;
    ctx.step(format!("energy heard back: {speaking:.4} speaking, {muted:.4} muted"));
    anyhow::ensure!(speaking > 0.001, "the far end hears the browser's speech (echoed back): {speaking}");
    anyhow::ensure!(muted < speaking / 20.0, "muted, the far end hears (almost) nothing: {muted} against {speaking}");
    page.click("[data-testid=hangup]").await?;
    phone.call_ended().await?;
    pstn.process().ensure_running()?;
    phone.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hold_in_the_page_plays_music_to_the_far_end_and_resumes() {
    let ctx = TestContext::new("softphone_hold");
    let result = hold(&ctx).await;
    ctx.check(result).unwrap();
}

/// The gateway's hold music in [`hold`]: a pure tone of this frequency.
const HOLD_TONE_HZ: f64 = 600.0;
/// What the far end speaks in [`hold`]: another tone, far from the music's.
const FAR_END_TONE_HZ: f64 = 400.0;

/// The agent dials out from the page to a far end beyond the trunk
/// (baresip, answering by itself, speaking a tone and writing what it
/// hears), talks, holds the call in the page, resumes it and talks again.
/// Second by second, the far end heard the agent's speech, then the hold
/// music (a 600 Hz tone configured as `media.hold_music`) for as long as
/// the hold lasted, then the agent again; while held the browser heard
/// (almost) nothing of the far end, as the bridge cuts both directions.
/// The browser's own packets sent are the test's clock.
async fn hold(ctx: &TestContext) -> anyhow::Result<()> {
    let audio = ctx.subdir("audio")?;
    let music = audio.join("hold-tone.wav");
    write_tone(&music, HOLD_TONE_HZ, 10)?;
    // baresip ends the call when its microphone file runs out: longer than the test.
    let far_end_speech = audio.join("far-end-tone.wav");
    write_tone(&far_end_speech, FAR_END_TONE_HZ, 180)?;
    let mut far_end = Baresip::far_end(&ctx.subdir("far-end")?, "+14155550199", &far_end_speech).await;
    ctx.register_log("far-end baresip", far_end.dir.join("baresip.log"));
    let trunk = format!(r#"[{{ name = "test-carrier", inbound_from = ["127.0.0.1/32"], address = "{}" }}]"#, far_end.sip);
    let phone = Softphone::start(ctx, SILENT_DESK_PHONE, |c| {
        // No OPTIONS keep-alives: every request the far end gets is the call's.
        c.set("sip.trunks", &trunk).set("sip.trunk_options_interval_secs", 0).set("media.hold_music", music.display());
    }, None)
    .await?;
    let page = &phone.page;

    phone.dial_out().await?;
    far_end.event("CALL_ESTABLISHED", 20).await;
    let answered = Instant::now();
    // What the browser hears of the far end while it sends `packets` more
    // of its own (20 ms each): energy and packets received.
    let heard_while_sending = |packets: u64| async move {
        let start = page.rtc_stats(FIRST_PC).await?;
        let sent = start.outbound.as_ref().map_or(0, |o| o.packets_sent);
        let end = eventually(&format!("{packets} more packets sent by the browser"), Duration::from_secs(20), || async {
            let now = page.rtc_stats(FIRST_PC).await?;
            Ok(now.outbound.as_ref().is_some_and(|o| o.packets_sent >= sent + packets).then_some(now))
        })
        .await?;
        let (before, after) = (start.inbound.unwrap_or_default(), end.inbound.unwrap_or_default());
        anyhow::Ok((
            after.total_audio_energy.unwrap_or(0.0) - before.total_audio_energy.unwrap_or(0.0),
            after.packets_received.saturating_sub(before.packets_received),
        ))
    };
    let talking = heard_while_sending(250).await?;
    page.screenshot("03-talking").await?;

    page.click("[data-testid=hold]").await?;
    page.wait_for("[data-testid=hold][aria-pressed=true]", WaitState::Visible, Duration::from_secs(5)).await.context("the page shows the call held")?;
    let held_at = Instant::now();
    page.screenshot("04-held").await?;
    // The browser conceals the last packets it got for a moment; then it
    // hears what the gateway sends it while held.
    heard_while_sending(50).await?;
    let held = heard_while_sending(250).await?;
    page.click("[data-testid=hold]").await?;
    page.wait_for("[data-testid=hold][aria-pressed=false]", WaitState::Visible, Duration::from_secs(5)).await.context("the page shows the call resumed")?;
    let resumed_at = Instant::now();
    page.screenshot("05-resumed").await?;
    let resumed = heard_while_sending(250).await?;
    page.click("[data-testid=hangup]").await?;
    far_end.event("CALL_CLOSED", 20).await;
    let hung_up = Instant::now();
    phone.call_ended().await?;
    ctx.step(format!("browser heard of the far end (energy, packets): talking {talking:?}, held {held:?}, resumed {resumed:?}"));

    // The browser: the far end's tone before and after, (almost) nothing while held.
    anyhow::ensure!(talking.0 > 0.001 && resumed.0 > 0.001, "the browser hears the far end before and after the hold: {talking:?}, {resumed:?}");
    anyhow::ensure!(held.0 < talking.0.min(resumed.0) / 20.0, "held, the browser hears (almost) nothing of the far end: {held:?} against {talking:?}");
    anyhow::ensure!(held.1 < 50, "held, (almost) no packets of the far end reach the browser: {held:?}");

    // The far end, second by second: speech, the tone while held, speech.
    // baresip writes what it decodes, so its file has no time where no
    // packet came (before the browser's audio flowed); it ends when the
    // call closed, which places it on the test's clock.
    let heard = std::fs::read(far_end.heard())?;
    let seconds = wav::windows(&heard, HOLD_TONE_HZ, Duration::from_secs(1))?;
    let (hold_from, hold_to) = ((held_at - answered).as_secs_f64(), (resumed_at - answered).as_secs_f64());
    let end = (hung_up - answered).as_secs_f64();
    let offset = end - WavSummary::parse(&heard)?.duration.as_secs_f64();
    let table: Vec<String> = seconds.iter().map(|w| format!("{:5.1}s rms {:6.0} tone {:.2}", w.start + offset, w.rms, w.tone_share)).collect();
    ctx.step(format!("the far end heard (call {end:.1} s, file from {offset:.1} s; hold {hold_from:.1}–{hold_to:.1} s):\n{}", table.join("\n")));
    // A second counts for a phase when it lies within it, a margin away
    // from the clicks (the page's request, the bridge's next packet).
    const MARGIN: f64 = 1.0;
    let within = |w: &&wav::Window, from: f64, to: f64| w.start + offset >= from + MARGIN && w.start + offset + 1.0 <= to - MARGIN;
    let before: Vec<&wav::Window> = seconds.iter().filter(|w| within(w, 0.0, hold_from)).collect();
    let during: Vec<&wav::Window> = seconds.iter().filter(|w| within(w, hold_from, hold_to)).collect();
    let after: Vec<&wav::Window> = seconds.iter().filter(|w| within(w, hold_to, end)).collect();
    anyhow::ensure!(before.len() >= 2 && during.len() >= 3 && after.len() >= 2, "too few whole seconds in a phase: {} before, {} held, {} after\n{}", before.len(), during.len(), after.len(), table.join("\n"));
    for w in &during {
        anyhow::ensure!(w.tone_share > 0.7 && w.rms > AUDIBLE_RMS, "held, the far end hears the music at {:.0} s: {w:?}\n{}", w.start, table.join("\n"));
    }
    for (phase, windows) in [("before the hold", &before), ("after resuming", &after)] {
        for w in windows.iter() {
            anyhow::ensure!(w.tone_share < 0.3, "{phase}, the far end hears no music at {:.0} s: {w:?}\n{}", w.start, table.join("\n"));
        }
        // Speech has pauses: most seconds are audible.
        let audible = windows.iter().filter(|w| w.rms > AUDIBLE_RMS).count();
        anyhow::ensure!(audible * 3 >= windows.len() * 2, "{phase}, the far end hears the agent: {audible} of {} seconds audible\n{}", windows.len(), table.join("\n"));
    }
    far_end.quit().await;
    phone.stop().await
}

/// Writes `seconds` of a pure tone at `frequency` as an 8 kHz mono 16-bit
/// WAV (the format of `media.hold_music`, and what baresip speaks).
fn write_tone(path: &Path, frequency: f64, seconds: u32) -> anyhow::Result<()> {
    let spec = hound::WavSpec { channels: 1, sample_rate: 8_000, bits_per_sample: 16, sample_format: hound::SampleFormat::Int };
    let mut writer = hound::WavWriter::create(path, spec)?;
    for i in 0..seconds * 8_000 {
        writer.write_sample((8_000.0 * (2.0 * std::f64::consts::PI * frequency * i as f64 / 8_000.0).sin()) as i16)?;
    }
    writer.finalize()?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_reload_the_page_shows_the_call_again_and_takes_it_back() {
    let ctx = TestContext::new("softphone_reload");
    let result = reload(&ctx).await;
    ctx.check(result).unwrap();
}

/// The agent reloads the page in the middle of a call it placed from the
/// browser: the page comes back signed in, shows the call from the
/// stream's snapshot, and "Call in Salesforce" brings the audio back to
/// the new page while the far end stays on the line.
async fn reload(ctx: &TestContext) -> anyhow::Result<()> {
    let (phone, mut pstn) = Softphone::with_far_end(ctx, true).await?;
    let page = &phone.page;
    phone.dial_out().await?;
    let call_id: String = page.evaluate("Object.keys(window.switchboard.state.calls)[0]").await?;
    eventually("the far end's echo at the page", Duration::from_secs(15), || async {
        let stats = page.rtc_stats(FIRST_PC).await.ok();
        Ok(stats.filter(|s| s.inbound.as_ref().is_some_and(|i| i.packets_received >= 50)).map(|_| ()))
    })
    .await?;

    // The reload closes the page's peer connection (DTLS close_notify):
    // the call waits for the agent instead of ending.
    let url: String = page.evaluate("location.href.split('#')[0]").await?;
    page.goto(&url).await?;
    page.wait_for_function::<bool>("window.switchboard?.state?.device?.registered === true", Duration::from_secs(20))
        .await
        .context("the reloaded page is signed in and registered again")?;
    page.wait_for("[data-testid=move-here]", WaitState::Visible, Duration::from_secs(15)).await.context("the page shows the call again")?;
    let shown: bool = page.evaluate(&format!("!!window.switchboard.state.calls[{}]", serde_json::to_string(&call_id)?)).await?;
    anyhow::ensure!(shown, "the same call {call_id} is shown after the reload");
    page.screenshot("03-after-reload").await?;
    page.click("[data-testid=move-here]").await?;
    let stats = eventually("the far end's echo at the reloaded page", Duration::from_secs(20), || async {
        let stats = page.rtc_stats(FIRST_PC).await.ok();
        Ok(stats.filter(|s| s.inbound.as_ref().is_some_and(|i| i.packets_received >= 100 && i.total_audio_energy.unwrap_or(0.0) > 0.0)))
    })
    .await?;
    ctx.step(format!("audio back after the reload: {stats:?}"));
    page.screenshot("04-taken-back").await?;
    page.click("[data-testid=hangup]").await?;
    phone.call_ended().await?;
    pstn.process().ensure_running()?;
    phone.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_transfer_hands_the_call_to_a_colleagues_browser() {
    let ctx = TestContext::new("softphone_warm_transfer");
    let result = warm_transfer(&ctx).await;
    ctx.check(result).unwrap();
}

/// F8 between two browser agents: Ada answers a carrier's call in her
/// page, consults Bob (his page rings, he answers and hears her), then
/// completes the transfer: the call is Bob's, Ada's leg is gone, and the
/// carrier's dialog went on untouched (its scenario fails on any request
/// from the gateway) until it hangs up.
async fn warm_transfer(ctx: &TestContext) -> anyhow::Result<()> {
    let phone = Softphone::start(ctx, SILENT_DESK_PHONE, |_| {}, None).await?;
    phone
        .config
        .admin_json(ctx, &["user", "add", "--name", "Bob Colleague", "--extension", "202", "--salesforce-user-id", salesforce::COLLEAGUE_USER_ID])
        .await?;
    let (bob_browser, bob) = phone.colleague_page(ctx, salesforce::COLLEAGUE_USERNAME).await?;
    let ada = &phone.page;
    let scenario = Scenario::File(sipp::scenario_dir().join("carrier_uac_long_call.xml"));
    let carrier = sipp::uac_with(ctx, "carrier", scenario, DIALLED, phone.sip, 1, Duration::from_secs(90), &["-d", "25000"]);
    let connected = "[...window.switchboard.peerConnections.values()].some(pc => pc.connectionState === 'connected')";
    let flow = async {
        ada.wait_for("[data-testid=incoming-call]", WaitState::Visible, Duration::from_secs(20)).await.context("Ada's page rings")?;
        ada.click("[data-testid=incoming-call] [data-testid=answer]").await?;
        ada.wait_for_function::<bool>(connected, Duration::from_secs(15)).await.context("Ada's browser takes the call")?;
        ada.click("[data-testid=transfer-toggle]").await?;
        ada.fill("[data-testid=transfer-input]", "Bob").await?;
        ada.wait_for("[data-testid=transfer-entry]", WaitState::Visible, Duration::from_secs(10)).await.context("the directory finds Bob")?;
        ada.screenshot("03-transfer-to-bob").await?;
        ada.click("[data-testid=transfer-entry] [data-testid=transfer-entry-warm]").await?;
        bob.wait_for("[data-testid=incoming-call]", WaitState::Visible, Duration::from_secs(20)).await.context("Bob's page rings")?;
        bob.screenshot("03-bob-ringing").await?;
        let party = bob.text("[data-testid=incoming-call] [data-testid=call-party]").await?;
        let label = bob.text("[data-testid=incoming-call]").await?;
        ctx.step(format!("Bob's page rings: {label:?}"));
        anyhow::ensure!(label.to_lowercase().contains("transferred call"), "Bob sees a colleague's call being transferred: {label:?}");
        anyhow::ensure!(!party.is_empty() && party != "Unknown", "Bob sees who calls: {party:?}");
        bob.click("[data-testid=incoming-call] [data-testid=answer]").await?;
        bob.wait_for_function::<bool>(connected, Duration::from_secs(15)).await.context("Bob's browser answers the consultation")?;
        let consulting = eventually("Ada's voice at Bob's browser", Duration::from_secs(15), || async {
            let stats = bob.rtc_stats(FIRST_PC).await?;
            Ok(stats.inbound.filter(|i| i.packets_received >= 50 && i.total_audio_energy.unwrap_or(0.0) > 0.0))
        })
        .await?;
        ctx.step(format!("consulting: Bob hears Ada: {consulting:?}"));
        ada.wait_for("[data-testid=transfer-complete]", WaitState::Visible, Duration::from_secs(10)).await?;
        ada.screenshot("04-consulting").await?;
        ada.click("[data-testid=transfer-complete]").await?;
        ada.wait_for_function::<bool>("window.switchboard.peerConnections.size === 0", Duration::from_secs(15))
            .await
            .context("Ada's browser leg ends once Bob has the call")?;
        bob.wait_for("[data-testid=call-controls]", WaitState::Visible, Duration::from_secs(10)).await?;
        anyhow::ensure!(bob.evaluate::<bool>(connected).await?, "Bob's leg carries the call");
        bob.screenshot("05-bob-has-the-call").await?;
        // The carrier hangs up at the end of its call: Bob's page shows it.
        bob.wait_for("[data-testid=wrapup]", WaitState::Visible, Duration::from_secs(40)).await.context("Bob's page shows the ended call")?;
        anyhow::Ok(())
    };
    let (run, flow) = tokio::join!(carrier, flow);
    flow?;
    let run = run?;
    anyhow::ensure!(run.succeeded(), "the carrier's dialog was disturbed by the transfer (SIPp exit {:?})", run.status);
    let console = bob.console().await?;
    anyhow::ensure!(console.errors.is_empty(), "Bob's page had errors: {}", console.lines());
    bob_browser.close().await?;
    phone.stop().await
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
