// What the softphone does: the agent's actions (from the views) and the
// stream's events, turned into API calls, phone (WebRTC) operations and
// Open CTI calls, with the outcome dispatched to the store. Every
// dependency is injected, so the flows are tested with fakes.

import {
  focusedCall,
  incomingCalls,
  isFinished,
  isHeld,
  isMuted,
  needsWrapUp,
  newIncomingIds,
  pendingTaskPops,
  ringingFor,
} from './state.js';
import { cleanDialString, isDialable, objectOfId, randomId } from './util.js';

const RELATABLE = new Set(['Contact', 'Lead', 'Account']);

/** The `to` of a transfer from what the agent typed or picked in the directory. */
export function transferTarget(input) {
  if (input && typeof input === 'object') {
    if (input.kind === 'user' && input.id) return { user_id: input.id };
    const n = input.extension || input.numbers?.[0];
    return n ? { number: n } : null;
  }
  const text = String(input ?? '').trim();
  if (/^005[A-Za-z0-9]{12}([A-Za-z0-9]{3})?$/.test(text)) return { salesforce_user_id: text };
  return isDialable(text) ? { number: cleanDialString(text) } : null;
}

/**
 * @param {object} d
 * @param {{getState: Function, dispatch: Function, subscribe: Function}} d.store
 * @param {object} d.api from api.js
 * @param {object} d.phone from webrtc.js
 * @param {object} d.registration from device.js
 * @param {object} d.cti from cti.js
 * @param {object} d.ringtone from ringtone.js
 * @param {object} d.stream from stream.js
 * @param {object} d.sessionStore from session.js
 * @param {object} d.config from config.js
 * @param {object} [d.win] window (open, location)
 * @param {object} [d.timers]
 * @param {() => string} [d.newKey]
 */
export function createController({ store, api, phone, registration, cti, ringtone, stream, sessionStore, config, win = null, timers = globalThis, newKey = () => randomId() }) {
  const { dispatch, getState } = store;
  let expiryTimer = null;
  let started = false;

  const call = (id) => getState().calls[id];
  const extras = (id) => getState().extras[id];

  function report(err, fallback = 'Something went wrong') {
    const detail = err?.detail ?? err?.message ?? fallback;
    dispatch({ type: 'error', detail, code: err?.code ?? null });
  }

  /** Runs an action once at a time per busy key, reporting its problem to the agent. */
  async function run(busyKey, fn, { quiet = () => false } = {}) {
    if (getState().busy[busyKey]) return undefined;
    dispatch({ type: 'busy', key: busyKey, on: true });
    try {
      return await fn();
    } catch (err) {
      if (err?.status === 401) return undefined; // signed out already
      if (!quiet(err)) report(err);
      return undefined;
    } finally {
      dispatch({ type: 'busy', key: busyKey, on: false });
    }
  }

  // ------------------------------------------------------------- session

  function signIn() {
    const url = api.loginUrl(config.returnTo);
    if (config.signin === 'popup' && win?.open) {
      const popup = win.open(url, 'switchboard-signin', 'popup,width=520,height=680');
      if (popup) return 'popup';
      dispatch({ type: 'signin_error', error: 'popup_blocked', description: 'The browser blocked the sign-in window; allow pop-ups for this page and try again.' });
      return 'blocked';
    }
    win?.location?.assign?.(url);
    return 'redirect';
  }

  async function acceptSession(session) {
    sessionStore.save(session);
    dispatch({ type: 'session', session });
    await start();
  }

  async function start() {
    const session = getState().session;
    if (!session || started) return;
    started = true;
    if (session.expiresAt) {
      const left = session.expiresAt - Date.now();
      if (expiryTimer !== null) timers.clearTimeout(expiryTimer);
      expiryTimer = timers.setTimeout(() => endSession('Your session ended; sign in again.'), Math.max(0, Math.min(left, 2 ** 31 - 1)));
    }
    try {
      const me = await api.me();
      dispatch({ type: 'me', me });
    } catch (err) {
      if (err?.status === 401) return;
      report(err);
    }
    if (!getState().session) return;
    stream.start();
    registration.start();
    api.callerIds().then((r) => dispatch({ type: 'caller_ids', caller_ids: r?.caller_ids ?? [], default: r?.default ?? null }), (err) => err?.status !== 401 && report(err));
  }

  function teardown() {
    started = false;
    if (expiryTimer !== null) timers.clearTimeout(expiryTimer);
    expiryTimer = null;
    stream.stop();
    registration.stop({ unregister: true });
    phone.closeAll();
    ringtone.stop();
  }

  /** The gateway refused the token (401), or it expired. */
  function endSession(description = 'Your session ended; sign in again.') {
    if (!getState().session) return;
    teardown();
    sessionStore.clear();
    dispatch({ type: 'signed_out', error: 'session_ended', description });
  }

  async function signOut() {
    const had = getState().session;
    teardown(); // unregisters the browser phone while the token still works
    if (had) await api.logout().catch(() => {});
    sessionStore.clear();
    dispatch({ type: 'signed_out' });
  }

  // --------------------------------------------------------------- calls

  async function dial(number = getState().ui.dialNumber, { relateTo = null } = {}) {
    const to = cleanDialString(number);
    if (!isDialable(to)) {
      dispatch({ type: 'error', detail: 'Enter a number or extension to call.', code: 'invalid_number' });
      return null;
    }
    const s = getState();
    const device = s.ui.callVia === 'browser' && s.device.registered ? s.device.deviceId : null;
    const key = newKey();
    const placed = await run('dial', () => api.placeCall({ to, caller_id: s.selectedCallerId ?? undefined, device_id: device ?? undefined }, key));
    if (!placed?.id) return null;
    dispatch({ type: 'call_view', call: placed, placed: true, focus: true, relateTo });
    dispatch({ type: 'ui', patch: { dialNumber: '' } });
    if (relateTo && RELATABLE.has(objectOfId(relateTo))) {
      api.relate(placed.id, relateTo).then((related) => related && dispatch({ type: 'call_view', call: { id: placed.id, related } }), () => {});
    }
    return placed;
  }

  /** Open CTI click-to-dial: show the panel and call the number. */
  function clickToDial({ number, recordId }) {
    cti.showPanel(true).catch(() => {});
    if (!number) return null;
    if (!getState().session) {
      dispatch({ type: 'ui', patch: { dialNumber: cleanDialString(number), tab: 'dialer' } });
      dispatch({ type: 'error', detail: 'Connect with Salesforce first, then call again.', code: 'signed_out' });
      return null;
    }
    dispatch({ type: 'ui', patch: { dialNumber: number, tab: 'dialer' } });
    return dial(number, { relateTo: recordId });
  }

  async function answer(callId) {
    dispatch({ type: 'call_extras', callId, patch: { answering: true } });
    dispatch({ type: 'ui', patch: { focusCallId: callId } });
    const ok = await run(`answer:${callId}`, async () => {
      const pending = phone.pendingFor(callId);
      if (pending) return phone.answer(pending.id);
      const deviceId = getState().device.registered ? getState().device.deviceId : null;
      const view = await api.answer(callId, deviceId ?? undefined, newKey());
      return !!view;
    });
    if (!ok) dispatch({ type: 'call_extras', callId, patch: { answering: false } });
    return !!ok;
  }

  async function decline(callId) {
    const c = call(callId);
    const me = getState().me?.user_id;
    const colleagues = c && (c.transfer_offer || (c.state === 'answered' && c.agent_user_id && c.agent_user_id !== me));
    if (colleagues && phone.pendingFor(callId)) {
      // A colleague's transfer: not this agent's call yet, so only its leg
      // here can be declined (the transfer fails back to the colleague).
      const leg = phone.pendingFor(callId);
      phone.dropPending(callId);
      dispatch({ type: 'drop_offer', callId });
      return leg ? run(`decline:${callId}`, () => api.declineLeg(leg.id, newKey())) : undefined;
    }
    phone.dropPending(callId);
    return run(`decline:${callId}`, () => api.decline(callId, newKey()));
  }

  /** Screen: listen to the voicemail; on a ringing call, send it to voicemail first. */
  async function screen(callId) {
    const c = call(callId);
    if (!c) return undefined;
    if (c.state === 'voicemail') return run(`screen:${callId}`, () => api.screen(callId, newKey()));
    dispatch({ type: 'call_extras', callId, patch: { screenWanted: true } });
    phone.dropPending(callId);
    const r = await run(`decline:${callId}`, () => api.decline(callId, newKey()));
    if (r === undefined) dispatch({ type: 'call_extras', callId, patch: { screenWanted: false } });
    return r;
  }

  const pickUp = (callId) => run(`pickup:${callId}`, () => api.pickUp(callId, newKey()));

  async function hangup(callId) {
    const view = await run(`hangup:${callId}`, () => api.hangup(callId, newKey()));
    if (view?.id) dispatch({ type: 'call_view', call: view });
    return view;
  }

  async function toggleHold(callId) {
    const on = !isHeld(call(callId));
    const view = await run(`hold:${callId}`, () => api.hold(callId, on, newKey()));
    if (view?.id) dispatch({ type: 'call_view', call: view });
  }

  async function toggleMute(callId) {
    const on = !isMuted(call(callId));
    const view = await run(`mute:${callId}`, () => api.mute(callId, on, newKey()));
    if (view?.id) dispatch({ type: 'call_view', call: view });
  }

  async function record(callId, action) {
    const view = await run(`record:${callId}`, () => api.recording(callId, action, newKey()));
    if (view?.id) dispatch({ type: 'call_view', call: view });
  }

  /** A keypad digit during a call: in-band on a browser call, else through the gateway. */
  async function dtmf(callId, digit) {
    const x = extras(callId);
    dispatch({ type: 'draft', callId, patch: { keypad: `${x?.drafts.keypad ?? ''}${digit}`.slice(-24) } });
    if (phone.sendDtmf(callId, digit)) return 'inband';
    try {
      await api.dtmf(callId, digit, newKey());
    } catch (err) {
      if (err?.status !== 401) report(err);
    }
    return 'api';
  }

  /** F16: pull the call from another device into this browser. */
  async function moveHere(callId) {
    const d = getState().device;
    if (!d.registered || !d.deviceId) {
      dispatch({ type: 'error', detail: d.error ?? 'This browser is not registered as your phone yet; try again in a moment.', code: 'no_browser_phone' });
      return undefined;
    }
    phone.expect(callId);
    try {
      const view = await run(`move:${callId}`, () => api.move(callId, d.deviceId, newKey()));
      if (view?.id) dispatch({ type: 'call_view', call: view });
      return view;
    } finally {
      phone.expect(callId, false);
    }
  }

  /** Calls whose transfer the agent cancelled: the transfer request's 409 is expected then. */
  const cancelledTransfers = new Set();

  async function transfer(callId, mode, picked = null) {
    const x = extras(callId);
    const to = transferTarget(picked ?? x?.drafts.transferTo);
    if (!to) {
      dispatch({ type: 'error', detail: 'Enter an extension or number, or pick someone from the directory.', code: 'invalid_transfer_target' });
      return undefined;
    }
    const label = picked?.name ?? (to.number || to.salesforce_user_id || to.user_id);
    cancelledTransfers.delete(callId);
    dispatch({ type: 'call_extras', callId, patch: { transfer: { mode, label, phase: 'ringing' } } });
    const view = await run(`transfer:${callId}`, () => api.transfer(callId, to, mode, newKey()), {
      quiet: (err) => err?.code === 'transfer_failed' && cancelledTransfers.has(callId),
    });
    if (!view) {
      dispatch({ type: 'call_extras', callId, patch: { transfer: null } });
      return undefined;
    }
    if (mode === 'warm') {
      dispatch({ type: 'call_extras', callId, patch: { transfer: { mode, label, phase: 'consulting' } } });
      dispatch({ type: 'call_view', call: view });
    } else {
      dispatch({ type: 'call_extras', callId, patch: { transfer: null, handedOver: true, panel: null } });
    }
    return view;
  }

  async function completeTransfer(callId) {
    const view = await run(`transfer-complete:${callId}`, () => api.completeTransfer(callId, newKey()));
    if (view) dispatch({ type: 'call_extras', callId, patch: { transfer: null, handedOver: true, panel: null } });
    return view;
  }

  async function cancelTransfer(callId) {
    cancelledTransfers.add(callId);
    const view = await run(`transfer-cancel:${callId}`, () => api.cancelTransfer(callId, newKey()));
    if (view) {
      dispatch({ type: 'call_extras', callId, patch: { transfer: null } });
      dispatch({ type: 'call_view', call: view });
    }
    return view;
  }

  async function park(callId) {
    const parked = await run(`park:${callId}`, () => api.park(callId, newKey()));
    if (parked) {
      dispatch({ type: 'call_extras', callId, patch: { parkedSlot: parked.slot ?? true, panel: null } });
      loadParked();
    }
    return parked;
  }

  async function retrieve(slot) {
    const view = await run(`retrieve:${slot}`, () => api.retrieve(slot, newKey()));
    if (view?.id) {
      dispatch({ type: 'call_view', call: view, focus: true });
      dispatch({ type: 'call_extras', callId: view.id, patch: { parkedSlot: null, handedOver: false, dismissed: false } });
    }
    loadParked();
    return view;
  }

  async function loadParked() {
    dispatch({ type: 'parked', parked: { state: 'loading' } });
    try {
      const r = await api.parked();
      dispatch({ type: 'parked', parked: { state: 'loaded', items: r?.parked ?? [], detail: null } });
    } catch (err) {
      dispatch({ type: 'parked', parked: { state: 'failed', detail: err?.detail ?? String(err) } });
    }
  }

  // ------------------------------------------------------ Salesforce context

  const openRecord = (recordId) => cti.screenPop(recordId).catch((err) => report(err, 'Salesforce could not open the record'));

  async function relate(callId, recordId) {
    const related = await run(`relate:${callId}`, () => api.relate(callId, recordId, newKey()));
    if (related) {
      dispatch({ type: 'call_view', call: { id: callId, related } });
      dispatch({ type: 'call_extras', callId, patch: { panel: null } });
    }
    return related;
  }

  async function refreshMatches(callId) {
    dispatch({ type: 'call_extras', callId, patch: { matchesState: 'loading' } });
    try {
      const m = await api.matches(callId);
      dispatch({ type: 'call_view', call: { id: callId, caller_matches: m } });
    } catch (err) {
      if (err?.status !== 401) report(err);
    } finally {
      dispatch({ type: 'call_extras', callId, patch: { matchesState: null } });
    }
  }

  /** Case or Opportunity search (F10, F11); with no words, the caller's newest ones. */
  async function searchWork(callId, kind) {
    const c = call(callId);
    const x = extras(callId);
    const q = (x?.drafts.workQuery ?? '').trim();
    const query = { limit: 20 };
    if (q) query.q = q;
    else {
      const rec = c?.related ?? (c?.caller_matches?.matches?.length === 1 ? { record_id: c.caller_matches.matches[0].id, object: c.caller_matches.matches[0].object, account_id: c.caller_matches.matches[0].account_id } : null);
      const object = rec?.object ?? objectOfId(rec?.record_id);
      if (kind === 'case' && object === 'Contact') query.contact_id = rec.record_id;
      else if (object === 'Account') query.account_id = rec.record_id;
      else if (rec?.account_id) query.account_id = rec.account_id;
      else {
        dispatch({ type: 'call_extras', callId, patch: { work: { kind, state: 'idle', records: [], detail: 'Type words of the subject, number or name to search.' } } });
        return [];
      }
    }
    dispatch({ type: 'call_extras', callId, patch: { work: { kind, state: 'loading', records: [], detail: null } } });
    try {
      const r = kind === 'opportunity' ? await api.opportunities(query) : await api.cases(query);
      dispatch({ type: 'call_extras', callId, patch: { work: { kind, state: 'loaded', records: r?.records ?? [], detail: null } } });
      return r?.records ?? [];
    } catch (err) {
      dispatch({ type: 'call_extras', callId, patch: { work: { kind, state: 'failed', records: [], detail: err?.detail ?? String(err) } } });
      return [];
    }
  }

  async function assign(callId, body) {
    const a = await run(`assign:${callId}`, () => api.assign(callId, body, newKey()));
    if (a) {
      dispatch({ type: 'call_view', call: { id: callId, assignment: a } });
      dispatch({ type: 'call_extras', callId, patch: (x) => ({ ...x, panel: null, work: null, drafts: { ...x.drafts, workQuery: '', caseSubject: '', caseDescription: '' } }) });
    }
    return a;
  }

  function newCase(callId) {
    const d = extras(callId)?.drafts ?? {};
    const subject = (d.caseSubject ?? '').trim();
    if (!subject) {
      dispatch({ type: 'error', detail: 'A new Case needs a subject.', code: 'invalid_assignment' });
      return Promise.resolve(undefined);
    }
    return assign(callId, { new_case: { subject, description: d.caseDescription ?? '' } });
  }

  // ------------------------------------------------- notes, rating, audio

  async function sendNote(callId, note) {
    dispatch({ type: 'note', callId, note: { ...note, state: 'sending', detail: null } });
    try {
      const r = await api.addNote(callId, note.text, note.key);
      dispatch({ type: 'note', callId, note: { localId: note.localId, state: 'logged', noteId: r?.note_id ?? null } });
      return true;
    } catch (err) {
      dispatch({ type: 'note', callId, note: { localId: note.localId, state: 'failed', detail: err?.detail ?? String(err) } });
      return false;
    }
  }

  /** F12: logs the note draft (each note its own Idempotency-Key, reused by its retries). */
  function addNote(callId) {
    const text = (extras(callId)?.drafts.note ?? '').trim();
    if (!text) return Promise.resolve(false);
    dispatch({ type: 'draft', callId, patch: { note: '' } });
    return sendNote(callId, { localId: randomId(), key: newKey(), text });
  }

  function retryNote(callId, localId) {
    const note = extras(callId)?.notes.find((n) => n.localId === localId);
    return note ? sendNote(callId, note) : Promise.resolve(false);
  }

  async function rate(callId) {
    const d = extras(callId)?.drafts ?? {};
    const score = Number(d.ratingScore);
    if (!(score >= 1 && score <= 5)) {
      dispatch({ type: 'error', detail: 'Pick 1 to 5 stars.', code: 'invalid_rating' });
      return false;
    }
    const comment = (d.ratingComment ?? '').slice(0, 1000);
    dispatch({ type: 'call_extras', callId, patch: { rating: { score, comment, state: 'sending' } } });
    try {
      await api.rate(callId, score, comment, newKey());
      dispatch({ type: 'call_extras', callId, patch: { rating: { score, comment, state: 'sent' } } });
      return true;
    } catch (err) {
      dispatch({ type: 'call_extras', callId, patch: { rating: { score, comment, state: 'failed', detail: err?.detail ?? String(err) } } });
      return false;
    }
  }

  async function loadRecordings(callId) {
    const old = extras(callId)?.recordings;
    dispatch({ type: 'call_extras', callId, patch: { recordings: { state: 'loading', items: old?.items ?? [] } } });
    try {
      const r = await api.recordings({ call_id: callId, limit: 20 });
      dispatch({ type: 'call_extras', callId, patch: { recordings: { state: 'loaded', items: r?.recordings ?? [] } } });
    } catch (err) {
      dispatch({ type: 'call_extras', callId, patch: { recordings: { state: 'failed', items: old?.items ?? [], detail: err?.detail ?? String(err) } } });
    }
  }

  async function loadInbox({ more = false } = {}) {
    const cur = getState().inbox;
    dispatch({ type: 'inbox', inbox: { state: 'loading' } });
    try {
      const r = await api.recordings({ limit: 20, cursor: more ? cur.nextCursor : undefined });
      const items = more ? [...cur.items, ...(r?.recordings ?? [])] : (r?.recordings ?? []);
      dispatch({ type: 'inbox', inbox: { state: 'loaded', items, nextCursor: r?.next_cursor ?? null, detail: null } });
    } catch (err) {
      dispatch({ type: 'inbox', inbox: { state: 'failed', detail: err?.detail ?? String(err) } });
    }
  }

  // ------------------------------------------------- settings, directory

  async function saveSettings(patch) {
    const before = getState().settings;
    if (!before) return undefined;
    const next = { ...before, ...patch };
    dispatch({ type: 'settings', settings: next });
    dispatch({ type: 'settings_saving', saving: true });
    try {
      const saved = await api.putSettings(next, newKey());
      dispatch({ type: 'settings', settings: { ...next, ...saved } });
      return saved;
    } catch (err) {
      dispatch({ type: 'settings', settings: before });
      if (err?.status !== 401) report(err);
      return undefined;
    }
  }

  let directorySeq = 0;
  async function searchDirectory(q = getState().directory.q, { more = false } = {}) {
    const mine = ++directorySeq;
    const cur = getState().directory;
    dispatch({ type: 'directory', directory: { q, state: 'loading', detail: null } });
    try {
      const r = await api.directory(q, more ? cur.nextCursor : undefined);
      if (mine !== directorySeq) return;
      const entries = more ? [...cur.entries, ...(r?.entries ?? [])] : (r?.entries ?? []);
      dispatch({ type: 'directory', directory: { state: 'loaded', entries, nextCursor: r?.next_cursor ?? null } });
    } catch (err) {
      if (mine !== directorySeq) return;
      dispatch({ type: 'directory', directory: { state: 'failed', detail: err?.detail ?? String(err) } });
    }
  }

  // ------------------------------------------------------------ UI state

  const ui = {
    setTab(tab) {
      dispatch({ type: 'ui', patch: { tab, settingsOpen: false } });
      if (tab === 'parked') loadParked();
      if (tab === 'directory' && getState().directory.state === 'idle') searchDirectory('');
      if (tab === 'recordings') loadInbox();
    },
    toggleSettings() {
      dispatch({ type: 'ui', patch: { settingsOpen: !getState().ui.settingsOpen } });
    },
    setDialNumber(v) {
      dispatch({ type: 'ui', patch: { dialNumber: String(v ?? '').slice(0, 40) } });
    },
    pressDialKey(k) {
      dispatch({ type: 'ui', patch: { dialNumber: `${getState().ui.dialNumber}${k}`.slice(0, 40) } });
    },
    backspace() {
      dispatch({ type: 'ui', patch: { dialNumber: getState().ui.dialNumber.slice(0, -1) } });
    },
    setCallVia(v) {
      dispatch({ type: 'ui', patch: { callVia: v === 'phones' ? 'phones' : 'browser' } });
    },
    selectCallerId(n) {
      dispatch({ type: 'select_caller_id', number: n });
    },
    focus(callId) {
      if (extras(callId)?.dismissed) dispatch({ type: 'call_extras', callId, patch: { dismissed: false } });
      dispatch({ type: 'ui', patch: { focusCallId: callId } });
    },
    dismiss(callId) {
      dispatch({ type: 'dismiss_call', callId });
    },
    togglePanel(callId, panel) {
      const cur = extras(callId)?.panel;
      dispatch({ type: 'call_extras', callId, patch: { panel: cur === panel ? null : panel } });
      if (panel === 'assign' && cur !== panel) {
        const rel = getState().settings?.call_relation;
        const kind = extras(callId)?.drafts.workKind ?? (rel === 'opportunity' ? 'opportunity' : 'case');
        dispatch({ type: 'draft', callId, patch: { workKind: kind } });
      }
    },
    setDraft(callId, patch) {
      dispatch({ type: 'draft', callId, patch });
    },
    dismissError(id) {
      dispatch({ type: 'dismiss_error', id });
    },
    setDirectoryQuery(q) {
      dispatch({ type: 'directory', directory: { q } });
    },
  };

  // ------------------------------------------------------- stream events

  function onEvent(e) {
    const prevCall = e?.call?.id ? call(e.call.id) : null;
    dispatch({ type: 'event', event: e });
    const s = getState();
    const id = e?.call?.id;
    switch (e?.type) {
      case 'snapshot': {
        if (!s.me) api.me().then((me) => dispatch({ type: 'me', me }), () => {});
        const live = new Set((e.calls ?? []).filter((c) => c.state !== 'ended').map((c) => c.id));
        for (const leg of [...phone.legs.values()]) if (!live.has(leg.callId)) phone.close(leg.id);
        break;
      }
      case 'webrtc.offer': {
        const r = phone.offer(e.leg);
        if (r === 'pending') {
          // A colleague's transfer rings here before the call is this
          // agent's (the stream shows it once handed over): ring it from
          // the offer alone, which says who calls.
          if (!s.calls[e.leg.call_id]) {
            dispatch({ type: 'call_view', call: { id: e.leg.call_id, direction: 'inbound', state: 'ringing', from_number: e.leg.caller_number ?? '', from_display: e.leg.caller_name ?? null, to_number: '', agent_user_id: null, started_at_ms: Date.now(), held: null, muted: [], recording: 'off', screening: false, recording_ids: [], voicemail_id: null, transfer_offer: true } });
          }
          cti.showPanel(true).catch(() => {});
        }
        break;
      }
      case 'webrtc.ended':
        if (e.leg?.id) phone.close(e.leg.id);
        if (e.leg?.call_id) dispatch({ type: 'drop_offer', callId: e.leg.call_id });
        break;
      case 'call.answered':
        // Answered on another device (or by a colleague): the offer here is moot.
        if (!s.calls[id] || phone.pendingFor(id)) phone.dropPending(id);
        break;
      case 'call.ended':
        phone.endCall(id);
        break;
      case 'call.transferred':
        if (!s.calls[id] || isFinished(s, s.calls[id])) phone.endCall(id);
        if (s.parked.state !== 'idle') loadParked();
        break;
      case 'call.parked':
        if (s.parked.state !== 'idle') loadParked();
        break;
      case 'call.voicemail':
        if (s.extras[id]?.screenWanted) {
          dispatch({ type: 'call_extras', callId: id, patch: { screenWanted: false } });
          run(`screen:${id}`, () => api.screen(id, newKey()));
        }
        break;
      // call.recording_available / call.voicemail_available mark the call's
      // links stale; afterChange fetches them again for the call on screen.
      default:
        break;
    }
    return prevCall;
  }

  // ------------------------------------------------ effects of the state

  function afterChange(next, prev) {
    if (ringingFor(next).length > 0) {
      if (!ringtone.ringing) ringtone.start();
    } else if (ringtone.ringing) ringtone.stop();

    const fresh = newIncomingIds(prev, next);
    if (fresh.length) {
      cti.showPanel(true).catch(() => {});
      cti.setLabel?.('Incoming call')?.catch?.(() => {});
    } else if (incomingCalls(prev).length && !incomingCalls(next).length) {
      cti.setLabel?.('Phone')?.catch?.(() => {});
    }

    for (const { callId, taskId } of pendingTaskPops(next)) {
      dispatch({ type: 'call_extras', callId, patch: { taskPopped: true } });
      cti.screenPop(taskId).catch(() => {});
    }

    const f = focusedCall(next);
    if (f && isFinished(next, f) && needsWrapUp(next, f) && ((f.recording_ids?.length ?? 0) > 0 || f.voicemail_id)) {
      const r = next.extras[f.id]?.recordings;
      if (!r || (r.stale && r.state !== 'loading')) loadRecordings(f.id);
    }
  }

  return {
    signIn,
    acceptSession,
    start,
    signOut,
    endSession,
    dial,
    clickToDial,
    answer,
    decline,
    screen,
    pickUp,
    hangup,
    toggleHold,
    toggleMute,
    record,
    dtmf,
    moveHere,
    transfer,
    completeTransfer,
    cancelTransfer,
    park,
    retrieve,
    loadParked,
    openRecord,
    relate,
    refreshMatches,
    searchWork,
    assign,
    newCase,
    addNote,
    retryNote,
    rate,
    loadRecordings,
    loadInbox,
    saveSettings,
    searchDirectory,
    ui,
    onEvent,
    afterChange,
  };
}
