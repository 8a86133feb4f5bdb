// Wires the softphone together in the browser: configuration from the
// URL, the session, API, event stream, browser phone, Open CTI, ringtone,
// and the view. Everything with logic lives in the modules it imports.

import { readConfig } from './config.js';
import { createSessionStore, parseFragment, POPUP_MESSAGE } from './session.js';
import { createApi } from './api.js';
import { createStream } from './stream.js';
import { createPhone } from './webrtc.js';
import { createRegistration } from './device.js';
import { createCti } from './cti.js';
import { createRingtone } from './ringtone.js';
import { createController } from './controller.js';
import { createStore, initialState, reduce } from './state.js';
import { debounce, randomId } from './util.js';
import { render } from './ui/dom.js';
import { view } from './ui/view.js';

function framed() {
  try {
    return window.top !== window.self;
  } catch {
    return true;
  }
}

/** The sign-in popup's return: hand the session to the page that opened it. */
function handOverToOpener(frag) {
  if (!frag || !window.opener || window.opener === window) return false;
  try {
    window.opener.postMessage({ type: POPUP_MESSAGE, ...frag }, window.location.origin);
  } catch {
    return false;
  }
  document.getElementById('app').textContent = frag.token ? 'Signed in. You can close this window.' : frag.description;
  window.close();
  return true;
}

function boot() {
  const config = readConfig(window.location.href, { framed: framed() });
  const frag = parseFragment(window.location.hash);
  if (frag) window.history.replaceState(null, '', `${window.location.pathname}${window.location.search}`);
  if (handOverToOpener(frag)) return;

  const instance = randomId();
  const store = createStore(reduce, initialState({ now: Date.now(), instance }));
  const { dispatch } = store;
  const sessionStore = createSessionStore(window.sessionStorage);
  let controller = null;
  let clockOffset = 0; // gateway time − local time, from the last snapshot

  const api = createApi({
    base: config.gateway,
    fetch: (...args) => window.fetch(...args),
    getToken: () => store.getState().session?.token ?? null,
    onUnauthorized: () => controller?.endSession('Your session ended or was revoked; sign in again.'),
  });

  const webrtcSupported = typeof window.RTCPeerConnection === 'function' && !!navigator.mediaDevices?.getUserMedia;
  const registration = webrtcSupported
    ? createRegistration({ api, instance, onChange: (device) => dispatch({ type: 'device', device }) })
    : {
        start: () => dispatch({ type: 'device', device: { registered: false, error: 'This browser cannot take calls (no WebRTC); calls ring on your other phones.' } }),
        stop: () => {},
        register: () => {},
      };

  // Remote audio lives outside the rendered tree so re-renders never touch it.
  const audioRoot = document.getElementById('remote-audio');
  const blockedAudio = new Set();
  function attachRemote(legId, stream, track) {
    let el = audioRoot.querySelector(`audio[data-leg-id="${CSS.escape(legId)}"]`);
    if (!el) {
      el = document.createElement('audio');
      el.autoplay = true;
      el.dataset.legId = legId;
      el.dataset.testid = 'remote-audio';
      audioRoot.appendChild(el);
    }
    el.srcObject = stream ?? new MediaStream([track]);
    el.play?.().catch(() => {
      blockedAudio.add(el);
      dispatch({ type: 'error', detail: 'The browser held back the call audio; click anywhere in the phone to hear it.', code: 'autoplay_blocked' });
    });
  }
  function detachRemote(legId) {
    const el = audioRoot.querySelector(`audio[data-leg-id="${CSS.escape(legId)}"]`);
    if (el) {
      el.srcObject = null;
      blockedAudio.delete(el);
      el.remove();
    }
  }

  const phone = createPhone({
    api,
    instance,
    RTCPeerConnection: window.RTCPeerConnection,
    getUserMedia: (c) => navigator.mediaDevices.getUserMedia(c),
    iceServers: () => {
      const s = store.getState();
      return s.device.iceServers?.length ? s.device.iceServers : (s.me?.settings?.ice_servers ?? []);
    },
    onLeg: (leg) => dispatch({ type: 'leg', leg }),
    attachRemote,
    detachRemote,
    onWarning: (detail) => dispatch({ type: 'error', detail, code: 'webrtc' }),
  });

  const stream = createStream({
    connectUrl: async () => {
      const t = await api.streamTicket();
      return `${config.wsBase}/v1/events/ws?ticket=${encodeURIComponent(t.ticket)}`;
    },
    WebSocket: window.WebSocket,
    onEvent: (e) => {
      if (e.type === 'snapshot' && typeof e.at_ms === 'number') clockOffset = e.at_ms - Date.now();
      controller.onEvent(e);
    },
    onStatus: (status) => dispatch({ type: 'stream_status', status }),
    isFatal: (err) => err?.status === 401,
  });

  const cti = createCti({ win: window, sfdcIframeOrigin: config.sfdcIframeOrigin, salesforceUrl: config.salesforceUrl });
  const ringtone = createRingtone();

  controller = createController({ store, api, phone, registration, cti, ringtone, stream, sessionStore, config, win: window });
  for (const p of config.problems) dispatch({ type: 'error', detail: p, code: 'config' });

  // Rendering: once per burst of changes.
  const root = document.getElementById('app');
  root.textContent = '';
  const actions = { ...controller, searchSoon: debounce((q) => controller.searchDirectory(q), 250) };
  let scheduled = false;
  const paint = () => {
    scheduled = false;
    render(root, view(store.getState(), actions));
  };
  store.subscribe((next, prev) => {
    controller.afterChange(next, prev);
    if (!scheduled) {
      scheduled = true;
      queueMicrotask(paint);
    }
  });
  paint();

  setInterval(() => dispatch({ type: 'tick', now: Date.now() + clockOffset }), 1000);

  // Open CTI: click-to-dial, and the record the agent has open.
  cti.ready.then((mode) => {
    dispatch({ type: 'ui', patch: { ctiMode: mode } });
    cti.enableClickToDial((p) => controller.clickToDial(p)).catch((err) => dispatch({ type: 'error', detail: `Click-to-dial could not be enabled: ${err?.message ?? err}`, code: 'opencti' }));
    cti.onNavigationChange((p) => dispatch({ type: 'ui', patch: { sfContext: p.recordId ? p : null } })).catch(() => {});
  });

  // Sign-in popup's answer.
  window.addEventListener('message', (e) => {
    if (e.origin !== window.location.origin || e.data?.type !== POPUP_MESSAGE) return;
    if (e.data.token) controller.acceptSession({ token: e.data.token, expiresAt: e.data.expiresAt ?? null });
    else if (e.data.error) dispatch({ type: 'signin_error', error: e.data.error, description: e.data.description });
  });

  // Audio may only start after a gesture.
  const unlock = () => {
    ringtone.unlock();
    for (const el of blockedAudio) el.play?.().then(() => blockedAudio.delete(el), () => {});
  };
  window.addEventListener('pointerdown', unlock, true);
  window.addEventListener('keydown', unlock, true);

  window.addEventListener('online', () => {
    stream.reconnectNow();
    phone.restartAll();
    registration.register();
  });
  window.addEventListener('pagehide', () => registration.stop({ unregister: true }));
  window.addEventListener('pageshow', (e) => {
    if (e.persisted && store.getState().session) {
      registration.start();
      stream.stop();
      stream.start();
    }
  });

  window.switchboard = {
    get state() {
      return store.getState();
    },
    peerConnections: phone.peerConnections,
    instance,
    config,
    store,
    controller,
  };

  if (frag?.token) controller.acceptSession(frag);
  else if (frag?.error) dispatch({ type: 'signin_error', error: frag.error, description: frag.description });
  else {
    const saved = sessionStore.load();
    if (saved) {
      dispatch({ type: 'session', session: saved });
      controller.start();
    }
  }
}

boot();
