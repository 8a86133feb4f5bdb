// The browser phone's media: one RTCPeerConnection per leg the gateway
// offers on the event stream (`webrtc.offer`), answered with the
// microphone, closed on `webrtc.ended`, ICE-restarted when the network
// moves. See README "WebRTC contract" for the wire side.
//
// Leg bookkeeping is reported through `onLeg({id, callId, state, autoAnswer, error})`
// with state `offered` (waiting for the agent's Answer), `answering`,
// `connected`, `reconnecting`, `failed`, or `closed` (gone).

/** Resolves once ICE gathering is complete, or after `ms`. */
export function waitForIceGathering(pc, ms, timers = globalThis) {
  if (pc.iceGatheringState === 'complete') return Promise.resolve('complete');
  return new Promise((resolve) => {
    let done = false;
    const finish = (why) => {
      if (done) return;
      done = true;
      timers.clearTimeout(timer);
      pc.removeEventListener?.('icegatheringstatechange', onState);
      pc.removeEventListener?.('icecandidate', onCandidate);
      resolve(why);
    };
    const onState = () => {
      if (pc.iceGatheringState === 'complete') finish('complete');
    };
    const onCandidate = (e) => {
      if (!e.candidate) finish('complete');
    };
    const timer = timers.setTimeout(() => finish('timeout'), ms);
    pc.addEventListener('icegatheringstatechange', onState);
    pc.addEventListener('icecandidate', onCandidate);
  });
}

/** Whether an SDP offers RFC 4733 telephone-events (so in-band DTMF can be sent). */
export function offersTelephoneEvent(sdp) {
  return /^a=rtpmap:\d+ telephone-event\/\d+/im.test(sdp ?? '');
}

const DTMF_RE = /^[0-9A-D#*,]+$/i;

/**
 * @param {object} o
 * @param {object} o.api the API client (answerLeg, offerLeg)
 * @param {string} o.instance this page load's softphone instance id
 * @param {typeof RTCPeerConnection} o.RTCPeerConnection
 * @param {(constraints: object) => Promise<MediaStream>} o.getUserMedia
 * @param {() => RTCIceServer[]} [o.iceServers]
 * @param {(leg: object) => void} [o.onLeg]
 * @param {(legId: string, stream: MediaStream|null, track: MediaStreamTrack) => void} [o.attachRemote]
 * @param {(legId: string) => void} [o.detachRemote]
 * @param {(message: string) => void} [o.onWarning]
 */
export function createPhone({
  api,
  instance,
  RTCPeerConnection: PC,
  getUserMedia,
  iceServers = () => [],
  onLeg = () => {},
  attachRemote = () => {},
  detachRemote = () => {},
  onWarning = () => {},
  timers = globalThis,
  iceGatherMs = 2000,
}) {
  /** leg id → RTCPeerConnection (exposed as window.switchboard.peerConnections). */
  const peerConnections = new Map();
  /** leg id → {id, callId, autoAnswer, sdp, state, streams, restarting} */
  const legs = new Map();

  function report(leg, extra = {}) {
    onLeg({ id: leg.id, callId: leg.callId, state: leg.state, autoAnswer: leg.autoAnswer, ...extra });
  }

  function setState(leg, state, extra) {
    if (leg.state === state && !extra) return;
    leg.state = state;
    report(leg, extra);
  }

  /**
   * A `webrtc.offer` event's `leg`. Offers for other instances are ignored.
   * @returns {'ignored'|'pending'|'answering'}
   */
  function offer(raw) {
    if (!raw || raw.instance !== instance || !raw.id || !raw.sdp) return 'ignored';
    const existing = legs.get(raw.id);
    if (existing && existing.state !== 'offered') return 'ignored'; // a replayed offer of a leg already answered
    // The agent asked for this call here (moved or retrieved it from this
    // page): answered at once even when the gateway rings it like a phone.
    const asked = expected.has(raw.call_id);
    const leg = { id: raw.id, callId: raw.call_id, autoAnswer: !!raw.auto_answer || asked, sdp: raw.sdp, state: 'offered', streams: [], restarting: false };
    legs.set(leg.id, leg);
    if (leg.autoAnswer) {
      answer(leg.id);
      return 'answering';
    }
    report(leg);
    return 'pending';
  }

  /** Calls the agent asked to bring here; their offers are answered at once. */
  const expected = new Set();

  /** The agent asked for `callId` in this browser (move, retrieve): until
   * `expect(callId, false)`, an offer for it is answered without ringing. */
  function expect(callId, on = true) {
    if (on) expected.add(callId);
    else expected.delete(callId);
  }

  /** The offered (not yet answered) leg of a call. */
  function pendingFor(callId) {
    for (const leg of legs.values()) if (leg.callId === callId && leg.state === 'offered') return leg;
    return null;
  }

  /** The leg carrying a call's audio here. */
  function activeFor(callId) {
    for (const leg of legs.values()) if (leg.callId === callId && ['answering', 'connected', 'reconnecting'].includes(leg.state)) return leg;
    return null;
  }

  async function microphone() {
    try {
      return await getUserMedia({ audio: { echoCancellation: true, noiseSuppression: true }, video: false });
    } catch (err) {
      onWarning(`The microphone is not available (${err?.name ?? err}); allow microphone access for this page. The call is connected without it.`);
      return null;
    }
  }

  /** Answers an offered leg: microphone, SDP answer, POST …/answer. */
  async function answer(legId) {
    const leg = legs.get(legId);
    if (!leg || leg.state !== 'offered') return false;
    setState(leg, 'answering');
    let pc;
    try {
      pc = new PC({ bundlePolicy: 'max-bundle', rtcpMuxPolicy: 'require', iceServers: iceServers() ?? [] });
    } catch (err) {
      fail(leg, `The browser could not start the call's audio: ${err?.message ?? err}`);
      return false;
    }
    peerConnections.set(leg.id, pc);
    pc.ontrack = (e) => attachRemote(leg.id, e.streams?.[0] ?? null, e.track);
    pc.addEventListener?.('iceconnectionstatechange', () => onIceState(leg, pc));
    pc.addEventListener?.('connectionstatechange', () => {
      if (pc.connectionState === 'connected' && legs.get(leg.id) === leg) setState(leg, 'connected');
    });
    const mic = await microphone();
    if (legs.get(leg.id) !== leg) {
      // Ended while the agent was asked for the microphone.
      mic?.getTracks?.().forEach((t) => t.stop());
      return false;
    }
    if (mic) {
      leg.streams.push(mic);
      for (const track of mic.getAudioTracks?.() ?? mic.getTracks()) pc.addTrack(track, mic);
    }
    try {
      await pc.setRemoteDescription({ type: 'offer', sdp: leg.sdp });
      if (!mic) for (const t of pc.getTransceivers?.() ?? []) if (t.receiver?.track?.kind === 'audio') t.direction = 'recvonly';
      const local = await pc.createAnswer();
      await pc.setLocalDescription(local);
      await waitForIceGathering(pc, iceGatherMs, timers);
      if (legs.get(leg.id) !== leg) return false;
      await api.answerLeg(leg.id, pc.localDescription.sdp);
    } catch (err) {
      if (legs.get(leg.id) === leg) fail(leg, `Answering the call in the browser failed: ${err?.detail ?? err?.message ?? err}`);
      return false;
    }
    if (legs.get(leg.id) !== leg) return false;
    const connected = pc.connectionState === 'connected' || pc.iceConnectionState === 'connected' || pc.iceConnectionState === 'completed';
    setState(leg, connected ? 'connected' : 'answering');
    // Nothing reports "connected" on browsers without connectionState: the answer is taken as connected.
    if (!connected && pc.connectionState === undefined) setState(leg, 'connected');
    return true;
  }

  function onIceState(leg, pc) {
    if (legs.get(leg.id) !== leg) return;
    const s = pc.iceConnectionState;
    if (s === 'connected' || s === 'completed') {
      setState(leg, 'connected');
    } else if (s === 'disconnected' || s === 'failed') {
      restartIce(leg.id);
    }
  }

  /** ICE restart: new offer, POST …/offer, the gateway's answer. */
  async function restartIce(legId) {
    const leg = legs.get(legId);
    const pc = peerConnections.get(legId);
    if (!leg || !pc || leg.restarting || !['connected', 'reconnecting', 'answering'].includes(leg.state)) return false;
    if (!pc.localDescription) return false; // not answered yet
    leg.restarting = true;
    setState(leg, 'reconnecting');
    try {
      const offer = await pc.createOffer({ iceRestart: true });
      await pc.setLocalDescription(offer);
      await waitForIceGathering(pc, iceGatherMs, timers);
      if (legs.get(legId) !== leg) return false;
      const answer = await api.offerLeg(legId, pc.localDescription.sdp);
      if (legs.get(legId) !== leg) return false;
      await pc.setRemoteDescription({ type: 'answer', sdp: answer.sdp });
      const s = pc.iceConnectionState;
      if (s === 'connected' || s === 'completed' || s === undefined) setState(leg, 'connected');
      return true;
    } catch (err) {
      if (legs.get(legId) === leg) onWarning(`Reconnecting the call's audio failed: ${err?.detail ?? err?.message ?? err}`);
      return false;
    } finally {
      leg.restarting = false;
    }
  }

  /** The network came back (`online`): restart ICE on every live leg. */
  function restartAll() {
    return Promise.all([...legs.values()].filter((l) => l.state === 'connected' || l.state === 'reconnecting').map((l) => restartIce(l.id)));
  }

  function fail(leg, message) {
    onWarning(message);
    close(leg.id, 'failed');
  }

  /** Closes a leg (`webrtc.ended`, or failure). */
  function close(legId, finalState = 'closed') {
    const leg = legs.get(legId);
    const pc = peerConnections.get(legId);
    peerConnections.delete(legId);
    legs.delete(legId);
    if (pc) {
      try {
        pc.close();
      } catch {
        // closed already
      }
    }
    if (leg) {
      for (const s of leg.streams) s.getTracks?.().forEach((t) => t.stop());
      detachRemote(legId);
      leg.state = 'closed';
      report(leg, finalState === 'failed' ? { failed: true } : {});
    }
    return !!leg;
  }

  /** Forgets a call's offered leg (declined, answered elsewhere, ended). */
  function dropPending(callId) {
    const leg = pendingFor(callId);
    if (leg) close(leg.id);
  }

  /** A call ended: close whatever this page had for it. */
  function endCall(callId) {
    for (const leg of [...legs.values()]) if (leg.callId === callId) close(leg.id);
  }

  /**
   * Sends DTMF in-band (RFC 4733) on the call's browser leg.
   * @returns {boolean} false when the call has no browser leg able to (the caller then uses the API)
   */
  function sendDtmf(callId, digits) {
    if (!DTMF_RE.test(digits ?? '')) return false;
    const leg = activeFor(callId);
    const pc = leg && peerConnections.get(leg.id);
    if (!pc) return false;
    const sender = pc.getSenders?.().find((s) => s.track?.kind === 'audio' || s.dtmf);
    const dtmf = sender?.dtmf;
    if (!dtmf || dtmf.canInsertDTMF === false) return false;
    // insertDTMF replaces the tones still queued: keys pressed faster than
    // they play are queued behind them, not lost.
    dtmf.insertDTMF(`${dtmf.toneBuffer ?? ''}${digits}`, 100, 70);
    return true;
  }

  function closeAll() {
    for (const id of [...legs.keys()]) close(id);
  }

  return { peerConnections, legs, offer, answer, expect, pendingFor, activeFor, restartIce, restartAll, close, dropPending, endCall, sendDtmf, closeAll };
}
