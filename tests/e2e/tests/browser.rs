//! The browser harness itself, against pages the tests serve: Chromium
//! starts with its fake microphone, WebRTC carries that microphone's audio,
//! init scripts stand in for Salesforce, screenshots land where CI keeps
//! them, and a command that cannot succeed fails with a clear error instead
//! of hanging. No part of Switchboard is involved, so when a softphone test
//! fails these tell whether the page or the test bed is at fault.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde::Deserialize;
use serde_json::{json, Value};
use switchboard_e2e::browser::{
    speech_wav, Browser, CommandError, RtcAudioStats, StaticSite, WaitState, OPENCTI_STAND_IN,
};
use switchboard_e2e::{eventually, TestContext};

const HTML: &str = "text/html; charset=utf-8";

/// How long audio may take to flow once the peers are connected.
const MEDIA_TIMEOUT: Duration = Duration::from_secs(20);

/// A page that connects two RTCPeerConnections to each other, the
/// microphone feeding the first one; the second one's audio plays in an
/// `<audio>` element (Chromium decodes, and measures, received audio only
/// when something plays it). It also exposes the steps of a connection
/// between two browsers, whose descriptions the test carries across.
const PEER_PAGE: &str = r#"<!doctype html>
<html>
<head><title>peer</title></head>
<body>
<p id="state">idle</p>
<audio id="remote" autoplay></audio>
<script>
  const state = (text) => { document.getElementById('state').textContent = text; };
  const play = (event) => {
    const audio = document.getElementById('remote');
    audio.srcObject = event.streams[0];
    audio.play().catch((e) => console.error('cannot play', e));
  };
  // Without trickle ICE: a description is complete once gathering is.
  const gathered = (pc) => new Promise((resolve) => {
    if (pc.iceGatheringState === 'complete') return resolve();
    pc.addEventListener('icegatheringstatechange', () => {
      if (pc.iceGatheringState === 'complete') resolve();
    });
  });
  async function peer() {
    const stream = await navigator.mediaDevices.getUserMedia({ audio: true });
    const pc = new RTCPeerConnection();
    stream.getTracks().forEach((track) => pc.addTrack(track, stream));
    pc.ontrack = play;
    pc.onconnectionstatechange = () => state(pc.connectionState);
    window.pc = pc;
    return pc;
  }

  window.loopback = async () => {
    const stream = await navigator.mediaDevices.getUserMedia({ audio: true });
    const sender = new RTCPeerConnection();
    const receiver = new RTCPeerConnection();
    sender.onicecandidate = (e) => e.candidate && receiver.addIceCandidate(e.candidate);
    receiver.onicecandidate = (e) => e.candidate && sender.addIceCandidate(e.candidate);
    receiver.ontrack = play;
    receiver.onconnectionstatechange = () => state(receiver.connectionState);
    stream.getTracks().forEach((track) => sender.addTrack(track, stream));
    await sender.setLocalDescription(await sender.createOffer());
    await receiver.setRemoteDescription(sender.localDescription);
    await receiver.setLocalDescription(await receiver.createAnswer());
    await sender.setRemoteDescription(receiver.localDescription);
    window.sender = sender;
    window.receiver = receiver;
  };
  window.offer = async () => {
    const pc = await peer();
    await pc.setLocalDescription(await pc.createOffer());
    await gathered(pc);
    return pc.localDescription.sdp;
  };
  window.answer = async (sdp) => {
    const pc = await peer();
    await pc.setRemoteDescription({ type: 'offer', sdp });
    await pc.setLocalDescription(await pc.createAnswer());
    await gathered(pc);
    return pc.localDescription.sdp;
  };
  window.accept = (sdp) => window.pc.setRemoteDescription({ type: 'answer', sdp });
</script>
</body>
</html>
"#;

/// A page that uses Open CTI the way a softphone does: it enables
/// click-to-dial, listens for it, pops the caller's record, and logs a call
/// typed into its form.
const OPENCTI_PAGE: &str = r#"<!doctype html>
<html>
<head><title>open cti</title></head>
<body>
<p id="found">unknown</p>
<p id="click-to-dial">pending</p>
<p id="dialled"></p>
<form id="log">
  <input id="subject" name="subject">
  <button id="save" type="submit">Save</button>
</form>
<script>
  const cti = window.sforce && window.sforce.opencti;
  // Recorded when the page's own script runs: the init script came first.
  document.getElementById('found').textContent = cti ? 'opencti before the page' : 'no opencti';
  cti.enableClickToDial({
    callback: (response) => {
      document.getElementById('click-to-dial').textContent = response.success ? 'enabled' : 'failed';
    },
  });
  cti.onClickToDial({
    listener: (payload) => {
      document.getElementById('dialled').textContent = payload.number;
      cti.screenPop({ type: cti.SCREENPOP_TYPE.SOBJECT, params: { recordId: payload.recordId } });
    },
  });
  document.getElementById('log').addEventListener('submit', (event) => {
    event.preventDefault();
    cti.saveLog({ value: { entityApiName: 'Task', Subject: document.getElementById('subject').value } });
  });
</script>
</body>
</html>
"#;

/// A page that logs, fails on purpose, and answers `fetch('/ping')` while
/// the browser is online.
const PLAIN_PAGE: &str = r#"<!doctype html>
<html>
<head><title>plain</title></head>
<body>
<h1 id="heading">Browser harness</h1>
<p id="later" hidden>shown later</p>
<script>
  console.log('page script ran');
  console.warn('a warning');
  setTimeout(() => { throw new Error('uncaught on purpose'); }, 0);
  window.ping = () => fetch('/ping').then((r) => r.text(), (e) => 'failed: ' + e.message);
</script>
</body>
</html>
"#;

async fn site() -> anyhow::Result<StaticSite> {
    StaticSite::serve(vec![
        ("/peer.html", HTML, PEER_PAGE.into()),
        ("/opencti.html", HTML, OPENCTI_PAGE.into()),
        ("/plain.html", HTML, PLAIN_PAGE.into()),
        ("/ping", "text/plain", b"pong".to_vec()),
    ])
    .await
}

/// A 48 kHz mono WAV of silence: a microphone that hears nothing.
fn silent_wav(ctx: &TestContext) -> anyhow::Result<std::path::PathBuf> {
    let path = ctx.subdir("fake-microphone")?.join("silence.wav");
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 48_000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut writer = hound::WavWriter::create(&path, spec)?;
    for _ in 0..48_000 * 2 {
        writer.write_sample(0i16)?;
    }
    writer.finalize()?;
    Ok(path)
}

/// Waits until `pc` (a JavaScript expression) has received `packets` audio
/// packets and sent as many, and returns its statistics then.
async fn flowing(page: &switchboard_e2e::browser::Page, pc: &str, packets: u64) -> anyhow::Result<RtcAudioStats> {
    eventually(&format!("{packets} audio packets each way on {pc}"), MEDIA_TIMEOUT, || async {
        let stats = page.rtc_stats(pc).await?;
        let received = stats.inbound.as_ref().map_or(0, |s| s.packets_received);
        let sent = stats.outbound.as_ref().map_or(0, |s| s.packets_sent);
        Ok((received >= packets && sent >= packets).then_some(stats))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fake_microphone_audio_flows_through_an_in_page_webrtc_loopback() {
    let ctx = TestContext::new("browser_loopback");
    let result = loopback(&ctx).await;
    ctx.check(result).unwrap();
}

async fn loopback(ctx: &TestContext) -> anyhow::Result<()> {
    let site = site().await?;
    let wav = speech_wav(ctx, "Thank you for calling. Your call is important to us.").await?;
    let browser = Browser::launch(ctx, &wav).await?;
    let page = browser.new_page(&site.url("/peer.html")).await?;
    page.evaluate::<Value>("loopback()").await?;
    page.wait_for_function::<bool>("document.getElementById('state').textContent === 'connected'", MEDIA_TIMEOUT)
        .await
        .context("the two peer connections did not connect")?;
    ctx.step("loopback connected");

    // 100 packets of 20 ms: two seconds of audio, the spoken sentence is in it.
    let stats = page.rtc_stats("window.receiver").await?;
    assert!(stats.outbound.is_none(), "the receiving side sends nothing: {stats:?}");
    let received = eventually("100 audio packets with sound at the receiver", MEDIA_TIMEOUT, || async {
        let stats = page.rtc_stats("window.receiver").await?;
        Ok(stats.inbound.filter(|s| s.packets_received >= 100 && s.total_audio_energy.unwrap_or(0.0) > 0.0))
    })
    .await?;
    ctx.step(format!("received: {received:?}"));
    assert_eq!(received.codec.as_deref(), Some("audio/opus"), "{received:?}");
    assert!(received.bytes_received > 100 * 12, "{received:?}");
    assert!(received.packets_lost <= 5, "loss on loopback: {received:?}");
    assert!(received.jitter < 0.1, "{received:?}");

    let sent = page.rtc_stats("window.sender").await?.outbound.context("the sender has no outbound audio")?;
    ctx.step(format!("sent: {sent:?}"));
    assert!(sent.packets_sent >= received.packets_received, "{sent:?} / {received:?}");
    assert!(sent.total_audio_energy.unwrap_or(0.0) > 0.0, "the microphone track carries no sound: {sent:?}");

    // Speech has pauses, so the instantaneous level is not always above 0:
    // some sample within a few seconds must be.
    let level = eventually("a non-zero audio level at the receiver", MEDIA_TIMEOUT, || async {
        let level = page.rtc_stats("window.receiver").await?.inbound.and_then(|s| s.audio_level).unwrap_or(0.0);
        Ok((level > 0.0).then_some(level))
    })
    .await?;
    ctx.step(format!("audio level {level}"));

    let console = page.console().await?;
    assert!(console.errors.is_empty(), "the page threw:\n{}", console.lines());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_browsers_each_hear_the_other_ones_own_microphone() {
    let ctx = TestContext::new("browser_two_agents");
    let result = two_agents(&ctx).await;
    ctx.check(result).unwrap();
}

/// Two agents: one speaks, the other's microphone hears silence. Each one
/// must receive exactly what the other one's microphone plays, which shows
/// that every browser has its own fake device.
async fn two_agents(ctx: &TestContext) -> anyhow::Result<()> {
    let site = site().await?;
    let speaking = speech_wav(ctx, "Hello, this is Alice from support.").await?;
    let silent = silent_wav(ctx)?;
    let (alice_browser, bob_browser) =
        tokio::try_join!(Browser::launch(ctx, &speaking), Browser::launch(ctx, &silent))?;
    let url = site.url("/peer.html");
    let (alice, bob) = tokio::try_join!(alice_browser.new_page(&url), bob_browser.new_page(&url))?;

    let offer: String = alice.evaluate("offer()").await?;
    let answer: String = bob.evaluate_with("return await answer(arg);", &offer).await?;
    alice.evaluate_with::<Value, _>("await accept(arg);", &answer).await?;
    let connected = "document.getElementById('state').textContent === 'connected'";
    tokio::try_join!(
        alice.wait_for_function::<bool>(connected, MEDIA_TIMEOUT),
        bob.wait_for_function::<bool>(connected, MEDIA_TIMEOUT)
    )
    .context("the browsers did not connect")?;
    ctx.step("connected");

    let (at_alice, at_bob) = tokio::try_join!(flowing(&alice, "window.pc", 150), flowing(&bob, "window.pc", 150))?;
    ctx.step(format!("alice: {at_alice:?}"));
    ctx.step(format!("bob: {at_bob:?}"));
    let energy = |stats: &RtcAudioStats| stats.inbound.as_ref().and_then(|s| s.total_audio_energy).unwrap_or(0.0);
    let heard_by_bob = energy(&at_bob);
    let heard_by_alice = energy(&at_alice);
    assert!(heard_by_bob > 0.0, "Bob hears nothing of Alice's speech: {at_bob:?}");
    assert!(
        heard_by_alice < heard_by_bob / 100.0,
        "Alice hears sound from Bob's silent microphone ({heard_by_alice} against {heard_by_bob}): {at_alice:?}"
    );
    Ok(())
}

#[derive(Debug, Deserialize)]
struct Dialled {
    number: String,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_init_script_stands_in_for_opencti_and_records_the_calls() {
    let ctx = TestContext::new("browser_opencti");
    let result = opencti(&ctx).await;
    ctx.check(result).unwrap();
}

async fn opencti(ctx: &TestContext) -> anyhow::Result<()> {
    let site = site().await?;
    let wav = speech_wav(ctx, "Open CTI").await?;
    let browser = Browser::launch(ctx, &wav).await?;
    browser.add_init_script(OPENCTI_STAND_IN).await?;
    let page = browser.new_page(&site.url("/opencti.html")).await?;

    assert_eq!(page.text("#found").await?, "opencti before the page");
    // The callback comes asynchronously, as Salesforce's does.
    let enabled = "document.getElementById('click-to-dial').textContent === 'enabled'";
    page.wait_for_function::<bool>(enabled, Duration::from_secs(5)).await?;
    let calls = page.opencti_calls().await?;
    let methods: Vec<&str> = calls.iter().map(|c| c.method.as_str()).collect();
    assert_eq!(methods, ["enableClickToDial", "onClickToDial"], "{calls:?}");
    assert_eq!(calls[0].args, json!({ "callback": "[function]" }));

    // Salesforce's click-to-dial reaches the listener the page registered.
    let payload = json!({ "number": "+14155550123", "recordId": "003000000000001AAA", "objectType": "Contact" });
    assert_eq!(page.opencti_fire("onClickToDial", &payload).await?, 1);
    assert_eq!(page.text("#dialled").await?, "+14155550123");

    // Typing and submitting the form through the keyboard.
    page.fill("#subject", "Renewal call").await?;
    page.press("#subject", "Enter").await?;
    let calls = eventually("the call log saved", Duration::from_secs(5), || async {
        let calls = page.opencti_calls().await?;
        Ok((calls.len() >= 4).then_some(calls))
    })
    .await?;
    assert_eq!(calls[2].method, "screenPop");
    assert_eq!(calls[2].args, json!({ "type": "sobject", "params": { "recordId": "003000000000001AAA" } }));
    assert_eq!(calls[3].method, "saveLog");
    assert_eq!(calls[3].args, json!({ "value": { "entityApiName": "Task", "Subject": "Renewal call" } }));

    // The recorder is plain page state: evaluate reads it too.
    let dialled: Dialled =
        page.evaluate_with("return { number: document.getElementById(arg).textContent };", "dialled").await?;
    assert_eq!(dialled.number, "+14155550123");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_screenshot_is_a_png_in_the_test_artefacts() {
    let ctx = TestContext::new("browser_screenshot");
    let result = screenshot(&ctx).await;
    ctx.check(result).unwrap();
}

async fn screenshot(ctx: &TestContext) -> anyhow::Result<()> {
    let site = site().await?;
    let wav = speech_wav(ctx, "Screenshot").await?;
    let browser = Browser::launch(ctx, &wav).await?;
    let page = browser.new_page(&site.url("/plain.html")).await?;
    let path = page.screenshot("plain page").await?;
    ctx.step(format!("screenshot at {}", path.display()));
    let dir = browser.artefact_dir();
    assert!(path.starts_with(dir), "{} is outside {}", path.display(), dir.display());
    assert!(browser.artefact_dir().ends_with("browser/browser_screenshot"), "{}", browser.artefact_dir().display());
    assert!(!path.starts_with(ctx.dir()), "a passing test removes its scratch directory: {}", path.display());
    let png = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
    // The IHDR chunk: width and height of the viewport.
    let width = u32::from_be_bytes(png[16..20].try_into()?);
    let height = u32::from_be_bytes(png[20..24].try_into()?);
    assert_eq!((width, height), (400, 640), "the utility bar's size, as the browser was launched");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_command_is_a_clear_error_and_the_driver_carries_on() {
    let ctx = TestContext::new("browser_errors");
    let result = errors(&ctx).await;
    ctx.check(result).unwrap();
}

async fn errors(ctx: &TestContext) -> anyhow::Result<()> {
    let site = site().await?;
    let wav = speech_wav(ctx, "Errors").await?;
    let browser = Browser::launch(ctx, &wav).await?;
    let mut page = browser.new_page(&site.url("/plain.html")).await?;

    // A selector that never appears: a timeout error naming it, in time.
    let started = Instant::now();
    let err = page.wait_for("#never", WaitState::Visible, Duration::from_millis(500)).await.unwrap_err();
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_secs(4), "the wait took {elapsed:?}");
    let failed = err.downcast_ref::<CommandError>().with_context(|| format!("not a command error: {err:#}"))?;
    assert!(failed.timed_out, "{failed:?}");
    assert_eq!(failed.command, "wait_for");
    let message = err.to_string();
    assert!(message.contains("#never") && message.contains("500 ms") && message.contains("visible"), "{message}");

    // An element that exists but stays hidden: the same for a click.
    page.set_timeout(Duration::from_millis(300));
    let err = page.click("#later").await.unwrap_err();
    assert!(err.to_string().contains("click \"#later\": timed out after 300 ms"), "{err:#}");
    page.set_timeout(Duration::from_secs(10));

    // Script errors, bad function bodies and unknown ids are errors, not crashes.
    let err = page.evaluate::<Value>("Promise.reject(new Error('rejected on purpose'))").await.unwrap_err();
    assert!(err.to_string().contains("rejected on purpose"), "{err:#}");
    let err = page.evaluate_with::<Value, _>("return (", &()).await.unwrap_err();
    assert!(err.to_string().contains("does not compile"), "{err:#}");
    let err = page.evaluate::<u32>("'not a number'").await.unwrap_err();
    assert!(format!("{err:#}").contains("not a number"), "{err:#}");

    // The driver still serves the page.
    assert_eq!(page.text("#heading").await?, "Browser harness");
    page.wait_for("#later", WaitState::Hidden, Duration::from_secs(1)).await?;
    page.wait_for("#heading", WaitState::Visible, Duration::from_secs(1)).await?;

    // What the page logged and threw, in order.
    let console = page.console().await?;
    let logged: Vec<(&str, &str)> = console.messages.iter().map(|m| (m.kind.as_str(), m.text.as_str())).collect();
    assert_eq!(logged, [("log", "page script ran"), ("warning", "a warning")], "{}", console.lines());
    assert_eq!(console.errors.len(), 1, "{}", console.lines());
    assert!(console.errors[0].contains("uncaught on purpose"), "{}", console.lines());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_browser_cannot_reach_the_server_until_it_is_back_online() {
    let ctx = TestContext::new("browser_offline");
    let result = offline(&ctx).await;
    ctx.check(result).unwrap();
}

async fn offline(ctx: &TestContext) -> anyhow::Result<()> {
    let site = site().await?;
    let wav = speech_wav(ctx, "Offline").await?;
    let browser = Browser::launch(ctx, &wav).await?;
    let page = browser.new_page(&site.url("/plain.html")).await?;
    assert_eq!(page.evaluate::<String>("ping()").await?, "pong");
    browser.set_offline(true).await?;
    let cut = page.evaluate::<String>("ping()").await?;
    assert!(cut.starts_with("failed"), "{cut}");
    assert!(!page.evaluate::<bool>("navigator.onLine").await?);
    browser.set_offline(false).await?;
    assert_eq!(page.evaluate::<String>("ping()").await?, "pong");
    browser.close().await?;
    Ok(())
}
