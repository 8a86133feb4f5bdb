// The softphone's state: a pure reducer of stream events, API answers and
// UI actions, and the selectors the views read. No DOM, no clock (time
// comes in `tick` actions and in the events' `at_ms`), no I/O.
//
// Calls are the gateway's CallView JSON (`calls/live.rs`) as the stream
// last sent them, plus `extras[id]`: what only this page knows (notes it
// logged, the transfer it is doing, panels it opened, drafts).

import { formatNumber } from './util.js';

export function blankExtras() {
  return {
    placedByMe: false,
    dismissed: false,
    handedOver: false,
    gone: false,
    parkedSlot: null,
    transfer: null, // {mode, label, phase: 'ringing'|'consulting'}
    screenWanted: false,
    notes: [], // {localId, text, state: 'sending'|'logged'|'failed', noteId, detail}
    rating: null, // {score, comment, state: 'sending'|'sent'|'failed'}
    recordings: null, // {state: 'loading'|'loaded'|'failed', items, detail}
    work: null, // {kind, state, records, detail}
    matchesState: null, // 'loading' | null
    answering: false, // the agent clicked Answer; the call has not been answered yet
    taskPopped: false,
    panel: null, // 'keypad' | 'transfer' | 'assign' | 'notes' | 'matches'
    relateTo: null, // a record id to relate the call to once known (click-to-dial from a record)
    drafts: { note: '', transferTo: '', workQuery: '', workKind: null, caseSubject: '', caseDescription: '', ratingScore: 0, ratingComment: '', keypad: '' },
  };
}

export function initialState({ now = 0, instance = null } = {}) {
  return {
    now,
    session: null, // {token, expiresAt}
    signin: { error: null, description: null },
    me: null,
    settings: null,
    settingsSaving: false,
    callerIds: { list: [], default: null },
    selectedCallerId: null,
    stream: { state: 'idle', attempt: 0, retryInMs: null },
    synced: false, // a snapshot arrived on the current session
    lastSeq: null,
    device: { instance, registered: false, deviceId: null, error: null, iceServers: [] },
    calls: {},
    extras: {},
    legs: {},
    busy: {},
    errors: [],
    errorSeq: 0,
    announcement: { text: '', n: 0 },
    parked: { state: 'idle', items: [], detail: null },
    directory: { q: '', state: 'idle', entries: [], nextCursor: null, detail: null },
    inbox: { state: 'idle', items: [], nextCursor: null, detail: null },
    ui: { tab: 'dialer', settingsOpen: false, dialNumber: '', callVia: 'browser', focusCallId: null, sfContext: null },
  };
}

// ---------------------------------------------------------------- selectors

/** The party the agent is on a call, as the gateway mutes it (calls.rs `sides`). */
export function agentParty(call) {
  return call?.direction === 'outbound' ? 'caller' : 'callee';
}

export function isMuted(call) {
  return Array.isArray(call?.muted) && call.muted.includes(agentParty(call));
}

export function isHeld(call) {
  return call?.held != null;
}

/** The customer's (or other party's) number. */
export function otherNumber(call) {
  if (!call) return '';
  return call.direction === 'outbound' ? call.to_number : call.from_number;
}

/** The name to show for the other party. */
export function otherName(call) {
  if (!call) return '';
  if (call.related?.name) return call.related.name;
  const m = call.caller_matches;
  if (m?.status === 'found' && m.matches?.length === 1) return m.matches[0].name;
  if (call.direction !== 'outbound' && call.from_display) return call.from_display;
  return formatNumber(otherNumber(call));
}

/** The agent placed the call (from this page, or as the internal caller). */
export function isMine(state, call) {
  if (!call) return false;
  if (state.extras[call.id]?.placedByMe) return true;
  const ext = state.me?.extension;
  return !!ext && call.direction === 'internal' && call.from_number === ext;
}

export function isFinished(state, call) {
  return !!call && (call.state === 'ended' || !!state.extras[call.id]?.handedOver);
}

function byStart(a, b) {
  return (a.started_at_ms ?? 0) - (b.started_at_ms ?? 0) || String(a.id).localeCompare(String(b.id));
}

/**
 * Calls ringing for the agent, oldest first: a call to it (not one it
 * placed), or a colleague's call being transferred to it (answered by
 * someone else, yet shown to this agent).
 */
export function incomingCalls(state) {
  const me = state.me?.user_id;
  return Object.values(state.calls)
    .filter((c) => {
      if (isFinished(state, c) || isMine(state, c)) return false;
      if (c.state === 'ringing') return c.direction !== 'outbound';
      return c.state === 'answered' && !!me && !!c.agent_user_id && c.agent_user_id !== me;
    })
    .sort(byStart);
}

/** Live calls that are not ringing for the agent: placed, answered, in voicemail, parked. */
export function liveCalls(state) {
  const incoming = new Set(incomingCalls(state).map((c) => c.id));
  return Object.values(state.calls)
    .filter((c) => !isFinished(state, c) && !incoming.has(c.id))
    .sort(byStart);
}

/** Ended (or handed over) calls the agent has not dismissed, newest first. */
export function finishedCalls(state) {
  return Object.values(state.calls)
    .filter((c) => isFinished(state, c))
    .sort((a, b) => byStart(b, a));
}

/** A finished call with something to wrap up: the agent talked on it, placed it, or got a voicemail. */
export function needsWrapUp(state, call) {
  const x = state.extras[call.id];
  if (!call || x?.dismissed) return false;
  const me = state.me?.user_id;
  return !!(x?.handedOver || x?.placedByMe || (call.answered_at_ms && (!me || call.agent_user_id === me || !call.agent_user_id)) || call.voicemail_id);
}

/** The call the main card shows: the focused one, else the latest answered live call, else a call to wrap up. */
export function focusedCall(state) {
  const f = state.ui.focusCallId && state.calls[state.ui.focusCallId];
  if (f && !state.extras[f.id]?.dismissed && !incomingCalls(state).some((c) => c.id === f.id)) return f;
  const live = liveCalls(state);
  if (live.length) {
    return [...live].sort((a, b) => (b.answered_at_ms ?? 0) - (a.answered_at_ms ?? 0) || byStart(b, a))[0];
  }
  return finishedCalls(state).find((c) => needsWrapUp(state, c)) ?? null;
}

/** The browser leg of a call, if any (`offered` ones wait for the agent's Answer). */
export function legFor(state, callId, states = ['offered', 'answering', 'connected', 'reconnecting']) {
  return Object.values(state.legs).find((l) => l.callId === callId && states.includes(l.state)) ?? null;
}

/** Whether the call's audio is in this page. */
export function onBrowser(state, callId) {
  return !!legFor(state, callId, ['answering', 'connected', 'reconnecting']);
}

/** Incoming calls the ringtone should ring for: nobody is answering them yet. */
export function ringingFor(state) {
  return incomingCalls(state).filter((c) => !state.busy[`answer:${c.id}`] && !state.extras[c.id]?.answering && !onBrowser(state, c.id));
}

/** Calls whose Task should open now (setting on, synced, not yet opened). */
export function pendingTaskPops(state) {
  if (!state.settings?.open_task_after_call) return [];
  return finishedCalls(state)
    .filter((c) => {
      const x = state.extras[c.id];
      const sync = c.salesforce_sync;
      return sync?.state === 'synced' && sync.task_id && !x?.taskPopped && needsWrapUp(state, c);
    })
    .map((c) => ({ callId: c.id, taskId: c.salesforce_sync.task_id }));
}

/** Ids of calls that are incoming in `next` and were not in `prev`. */
export function newIncomingIds(prev, next) {
  const before = new Set(incomingCalls(prev).map((c) => c.id));
  return incomingCalls(next).map((c) => c.id).filter((id) => !before.has(id));
}

// ------------------------------------------------------------------ reducer

function withExtras(state, id, patch) {
  const old = state.extras[id] ?? blankExtras();
  const next = typeof patch === 'function' ? patch(old) : { ...old, ...patch };
  return { ...state, extras: { ...state.extras, [id]: next } };
}

function announce(state, text) {
  if (!text) return state;
  return { ...state, announcement: { text, n: state.announcement.n + 1 } };
}

function upsertCall(state, view) {
  const old = state.calls[view.id];
  // The stream's view is authoritative; keep fields a partial answer may lack.
  const merged = old ? { ...old, ...view } : { ...view };
  // A call rung from a transfer's offer alone is the stream's from its
  // first view on.
  if (old?.transfer_offer && !view.transfer_offer) delete merged.transfer_offer;
  let s = { ...state, calls: { ...state.calls, [view.id]: merged } };
  if (!s.extras[view.id]) s = { ...s, extras: { ...s.extras, [view.id]: blankExtras() } };
  return s;
}

function removeCall(state, id) {
  const calls = { ...state.calls };
  const extras = { ...state.extras };
  delete calls[id];
  delete extras[id];
  const ui = state.ui.focusCallId === id ? { ...state.ui, focusCallId: null } : state.ui;
  return { ...state, calls, extras, ui };
}

function applySnapshot(state, e) {
  const me = state.me?.user_id;
  const calls = {};
  const extras = {};
  for (const v of Array.isArray(e.calls) ? e.calls : []) {
    if (!v?.id) continue;
    calls[v.id] = state.calls[v.id] ? { ...state.calls[v.id], ...v } : v;
    extras[v.id] = state.extras[v.id] ?? blankExtras();
  }
  for (const [id, old] of Object.entries(state.calls)) {
    if (calls[id]) continue;
    const x = state.extras[id] ?? blankExtras();
    if (x.dismissed) continue;
    if (old.state === 'ended' || x.handedOver) {
      calls[id] = old; // still being wrapped up here
      extras[id] = x;
    } else if (me && old.agent_user_id === me) {
      // It ended while the stream was down: keep it for notes and rating.
      calls[id] = { ...old, state: 'ended', ended_at_ms: old.ended_at_ms ?? e.at_ms ?? state.now, held: null, muted: [], recording: 'off' };
      extras[id] = { ...x, gone: true, transfer: null };
    }
  }
  const focus = state.ui.focusCallId && calls[state.ui.focusCallId] ? state.ui.focusCallId : null;
  return { ...state, calls, extras, lastSeq: typeof e.seq === 'number' ? e.seq : null, synced: true, ui: { ...state.ui, focusCallId: focus } };
}

function describe(state, call) {
  const name = otherName(call) || 'unknown caller';
  return name;
}

function applyCallEvent(state, e) {
  if (typeof e.seq === 'number' && typeof state.lastSeq === 'number' && e.seq <= state.lastSeq) return state;
  let s = typeof e.seq === 'number' ? { ...state, lastSeq: e.seq } : state;
  const view = e.call;
  if (!view || typeof view.id !== 'string') return s;
  const me = s.me?.user_id;
  const before = s.calls[view.id];
  s = upsertCall(s, view);
  const call = s.calls[view.id];
  const id = view.id;
  switch (e.type) {
    case 'call.started':
    case 'call.ringing': {
      if (!before && incomingCalls(s).some((c) => c.id === id)) s = announce(s, `Incoming call from ${describe(s, call)}`);
      break;
    }
    case 'call.answered': {
      if (me && call.agent_user_id && call.agent_user_id !== me && !isMine(s, call)) {
        // A colleague took the group's call: it leaves this agent's list.
        return announce(removeCall(s, id), `Call from ${describe(s, call)} answered by a colleague`);
      }
      s = withExtras(s, id, (x) => ({ ...x, screenWanted: false, answering: false }));
      s = announce(s, `Call connected: ${describe(s, call)}`);
      break;
    }
    case 'call.voicemail':
      s = announce(s, `${describe(s, call)} is leaving a voicemail`);
      break;
    case 'call.screening':
      if (call.screening) s = announce(s, 'Listening to the voicemail');
      break;
    case 'call.media_state': {
      const wasHeld = isHeld(before);
      const wasMuted = isMuted(before);
      if (isHeld(call) !== wasHeld) s = announce(s, isHeld(call) ? 'Call on hold' : 'Call resumed');
      else if (isMuted(call) !== wasMuted) s = announce(s, isMuted(call) ? 'Microphone muted' : 'Microphone on');
      break;
    }
    case 'call.recording_state':
      s = announce(s, { recording: 'Recording', paused: 'Recording paused', off: 'Recording stopped' }[call.recording] ?? '');
      break;
    case 'call.ended':
      s = withExtras(s, id, (x) => ({ ...x, transfer: null, screenWanted: false, answering: false, parkedSlot: null, panel: x.panel === 'keypad' || x.panel === 'transfer' ? null : x.panel }));
      s = announce(s, `Call ended: ${describe(s, call)}`);
      break;
    case 'call.withdrawn':
      // A colleague's transfer that rang here ended without this agent.
      return isMine(s, call) ? s : announce(removeCall(s, id), `Transfer of the call from ${describe(s, call)} withdrawn`);
    case 'call.transferred': {
      const wasMine = before?.agent_user_id === me;
      if (me && call.agent_user_id === me) {
        s = withExtras(s, id, (x) => ({ ...x, handedOver: false, parkedSlot: null, transfer: null }));
        s = announce(s, `Call from ${describe(s, call)} is now yours`);
      } else if (me && (wasMine || s.extras[id]?.transfer || s.extras[id]?.parkedSlot != null)) {
        s = withExtras(s, id, (x) => ({ ...x, handedOver: true, transfer: null, parkedSlot: null, panel: null }));
        s = announce(s, 'Call transferred');
      } else if (me && call.agent_user_id !== me && !isMine(s, call)) {
        return removeCall(s, id);
      }
      break;
    }
    case 'call.parked':
      s = withExtras(s, id, (x) => ({ ...x, parkedSlot: x.parkedSlot ?? true, panel: null }));
      s = announce(s, 'Call parked');
      break;
    case 'call.rated':
      if (e.rating && (!me || e.rating.user_id === me)) {
        s = withExtras(s, id, (x) => ({ ...x, rating: { score: e.rating.score, comment: e.rating.comment ?? '', state: 'sent' } }));
      }
      break;
    case 'call.recording_available':
    case 'call.voicemail_available':
      // Links are fetched again (they expire): the old list is stale.
      s = withExtras(s, id, (x) => ({ ...x, recordings: x.recordings ? { ...x.recordings, stale: true } : null }));
      break;
    case 'call.synced': {
      const st = call.salesforce_sync?.state;
      if (st === 'synced') s = announce(s, 'Call logged in Salesforce');
      else if (st === 'failed') s = announce(s, 'Logging the call in Salesforce failed');
      break;
    }
    default:
      break;
  }
  return s;
}

export function reduce(state, action) {
  switch (action.type) {
    case 'tick':
      return { ...state, now: action.now };
    case 'session':
      return { ...state, session: action.session, signin: { error: null, description: null } };
    case 'signin_error':
      return { ...state, session: null, signin: { error: action.error, description: action.description ?? action.error } };
    case 'signed_out': {
      const fresh = initialState({ now: state.now, instance: state.device.instance });
      return { ...fresh, signin: { error: action.error ?? null, description: action.description ?? null } };
    }
    case 'me':
      return { ...state, me: action.me, settings: action.me?.settings ?? state.settings };
    case 'settings':
      return { ...state, settings: action.settings, settingsSaving: false };
    case 'settings_saving':
      return { ...state, settingsSaving: !!action.saving };
    case 'caller_ids': {
      const list = Array.isArray(action.caller_ids) ? action.caller_ids : [];
      const selected = list.includes(state.selectedCallerId) ? state.selectedCallerId : (action.default ?? list[0] ?? null);
      return { ...state, callerIds: { list, default: action.default ?? null }, selectedCallerId: selected };
    }
    case 'select_caller_id':
      return state.callerIds.list.includes(action.number) ? { ...state, selectedCallerId: action.number } : state;
    case 'stream_status': {
      const synced = action.status.state === 'open' ? state.synced : false;
      return { ...state, stream: { ...action.status }, synced };
    }
    case 'device':
      return { ...state, device: { ...state.device, ...action.device } };
    case 'event': {
      const e = action.event;
      if (!e || typeof e.type !== 'string') return state;
      if (e.type === 'snapshot') return applySnapshot(state, e);
      if (e.type.startsWith('call.')) return applyCallEvent(state, e);
      return state; // webrtc.* are the phone's (webrtc.js), reported back as `leg` actions
    }
    case 'call_view': {
      // An API answer: the call after the operation. The stream's copy follows.
      const v = action.call;
      if (!v?.id) return state;
      let s = upsertCall(state, v);
      if (action.placed) s = withExtras(s, v.id, (x) => ({ ...x, placedByMe: true, relateTo: action.relateTo ?? x.relateTo }));
      if (action.focus) s = { ...s, ui: { ...s.ui, focusCallId: v.id } };
      return s;
    }
    case 'busy': {
      const busy = { ...state.busy };
      if (action.on) busy[action.key] = true;
      else delete busy[action.key];
      return { ...state, busy };
    }
    case 'error': {
      const id = state.errorSeq + 1;
      const errors = [...state.errors, { id, detail: action.detail, code: action.code ?? null }].slice(-3);
      return { ...state, errors, errorSeq: id };
    }
    case 'dismiss_error':
      return { ...state, errors: state.errors.filter((e) => e.id !== action.id) };
    case 'leg': {
      const l = action.leg;
      const legs = { ...state.legs };
      if (l.state === 'closed') delete legs[l.id];
      else legs[l.id] = { ...(legs[l.id] ?? {}), ...l };
      return { ...state, legs };
    }
    case 'ui':
      return { ...state, ui: { ...state.ui, ...action.patch } };
    case 'call_extras':
      return state.calls[action.callId] || state.extras[action.callId] ? withExtras(state, action.callId, action.patch) : state;
    case 'draft':
      return withExtras(state, action.callId, (x) => ({ ...x, drafts: { ...x.drafts, ...action.patch } }));
    case 'note': {
      // {callId, note: {localId, ...}}: adds or updates one note of this page.
      return withExtras(state, action.callId, (x) => {
        const i = x.notes.findIndex((n) => n.localId === action.note.localId);
        const notes = i < 0 ? [...x.notes, action.note] : x.notes.map((n, j) => (j === i ? { ...n, ...action.note } : n));
        return { ...x, notes };
      });
    }
    case 'drop_offer':
      // A transfer's offer is over (declined, cancelled, taken elsewhere)
      // before the stream ever showed the call.
      return state.calls[action.callId]?.transfer_offer ? removeCall(state, action.callId) : state;
    case 'dismiss_call': {
      let s = withExtras(state, action.callId, { dismissed: true, panel: null });
      if (s.ui.focusCallId === action.callId) s = { ...s, ui: { ...s.ui, focusCallId: null } };
      return s;
    }
    case 'parked':
      return { ...state, parked: { ...state.parked, ...action.parked } };
    case 'directory':
      return { ...state, directory: { ...state.directory, ...action.directory } };
    case 'inbox':
      return { ...state, inbox: { ...state.inbox, ...action.inbox } };
    default:
      return state;
  }
}

/** A minimal store: getState, dispatch, subscribe(listener(next, prev, action)). */
export function createStore(reducer, initial) {
  let state = initial;
  const listeners = new Set();
  return {
    getState: () => state,
    dispatch(action) {
      const prev = state;
      state = reducer(state, action);
      if (state !== prev) for (const l of listeners) l(state, prev, action);
      return action;
    },
    subscribe(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
  };
}
