import test from 'node:test';
import assert from 'node:assert/strict';
import { createController, transferTarget } from '../app/controller.js';
import { createStore, initialState, reduce, incomingCalls } from '../app/state.js';
import { flush, fakeTimers } from '../test-support/fakes.mjs';

const ME = { user_id: 'u-ada', name: 'Ada', extension: '101', settings: { privacy_mode: false, open_task_after_call: true, call_relation: 'case' } };

function view(id, patch = {}) {
  return { id, direction: 'inbound', state: 'ringing', from_number: '+12125550123', to_number: '+14155550100', agent_user_id: null, started_at_ms: 1000, held: null, muted: [], recording: 'off', screening: false, recording_ids: [], voicemail_id: null, ...patch };
}

/** An API whose methods record their calls and answer from `answers[name]` (a value or a function). */
function fakeApi(answers = {}) {
  const calls = [];
  return new Proxy(
    { calls },
    {
      get(target, name) {
        if (name in target) return target[name];
        if (name === 'loginUrl') return (r) => `https://gw/v1/auth/salesforce/login?return_to=${encodeURIComponent(r)}`;
        return async (...args) => {
          calls.push([name, ...args]);
          const a = answers[name];
          if (typeof a === 'function') return a(...args);
          if (a instanceof Error) throw a;
          return a ?? null;
        };
      },
    },
  );
}

function fakePhone() {
  const calls = [];
  const pending = new Map();
  const legs = new Map();
  return {
    calls,
    pending,
    legs,
    offer: (leg) => {
      calls.push(['offer', leg]);
      if (leg.instance !== 'inst-1') return 'ignored';
      if (!leg.auto_answer) pending.set(leg.call_id, { id: leg.id, callId: leg.call_id });
      return leg.auto_answer ? 'answering' : 'pending';
    },
    answer: async (legId) => {
      calls.push(['answer', legId]);
      return true;
    },
    pendingFor: (callId) => pending.get(callId) ?? null,
    dropPending: (callId) => {
      calls.push(['dropPending', callId]);
      pending.delete(callId);
    },
    close: (legId) => calls.push(['close', legId]),
    endCall: (callId) => calls.push(['endCall', callId]),
    sendDtmf: () => false,
    closeAll: () => calls.push(['closeAll']),
    expect: (callId, on = true) => calls.push(['expect', callId, on]),
  };
}

function setup({ api: answers = {}, signedIn = true, calls = [], device = { registered: true, deviceId: 'dev-browser' } } = {}) {
  const store = createStore(reduce, initialState({ now: 5000, instance: 'inst-1' }));
  const api = fakeApi(answers);
  const phone = fakePhone();
  const log = [];
  const cti = {
    showPanel: async (v) => log.push(['showPanel', v]),
    setLabel: async (l) => log.push(['setLabel', l]),
    screenPop: async (id) => log.push(['screenPop', id]),
  };
  const ringtone = {
    ringing: false,
    start() {
      this.ringing = true;
      log.push(['ring']);
    },
    stop() {
      this.ringing = false;
      log.push(['silence']);
    },
  };
  const stream = { start: () => log.push(['stream.start']), stop: () => log.push(['stream.stop']) };
  const registration = { start: () => log.push(['reg.start']), stop: (o) => log.push(['reg.stop', o]), register: () => {} };
  const saved = [];
  const sessionStore = { save: (s) => saved.push(s), clear: () => saved.push(null), load: () => null };
  const win = { opened: [], open(...a) { this.opened.push(a); return {}; }, location: { assigned: [], assign(u) { this.assigned.push(u); } } };
  const timers = fakeTimers();
  let n = 0;
  const ctl = createController({ store, api, phone, registration, cti, ringtone, stream, sessionStore, config: { returnTo: 'https://gw/softphone/', signin: 'redirect' }, win, timers, newKey: () => `k${++n}` });
  store.subscribe((next, prev) => ctl.afterChange(next, prev));
  if (signedIn) {
    store.dispatch({ type: 'session', session: { token: 't', expiresAt: null } });
    store.dispatch({ type: 'me', me: ME });
    store.dispatch({ type: 'device', device });
    ctl.onEvent({ type: 'snapshot', seq: 1, at_ms: 5000, calls });
  }
  return { store, api, phone, log, ctl, saved, win, ringtone };
}

const state = (t) => t.store.getState();
const apiCalls = (t, name) => t.api.calls.filter(([n]) => n === name);

test('Answer takes the browser offer when one is waiting', async () => {
  const t = setup({ calls: [view('c1')] });
  t.ctl.onEvent({ type: 'webrtc.offer', leg: { id: 'leg-1', call_id: 'c1', instance: 'inst-1', sdp: 'v=0', auto_answer: false } });
  assert.deepEqual(t.log.filter(([k]) => k === 'showPanel').length >= 1, true, 'the panel opens for a ringing browser');
  assert.equal(await t.ctl.answer('c1'), true);
  assert.deepEqual(t.phone.calls.filter(([k]) => k === 'answer'), [['answer', 'leg-1']]);
  assert.equal(apiCalls(t, 'answer').length, 0, 'no API answer: the SDP answer is the answer');
});

test('Answer without an offer asks the gateway to call this browser', async () => {
  const t = setup({ calls: [view('c1')], api: { answer: view('c1') } });
  await t.ctl.answer('c1');
  assert.deepEqual(apiCalls(t, 'answer'), [['answer', 'c1', 'dev-browser', 'k1']]);
  assert.equal(state(t).extras.c1.answering, true, 'waiting for the auto-answer offer');
  const off = setup({ calls: [view('c1')], api: { answer: view('c1') }, device: { registered: false, deviceId: null } });
  await off.ctl.answer('c1');
  assert.equal(apiCalls(off, 'answer')[0][2], undefined, 'unregistered: the gateway picks the device');
});

test('a failed Answer shows the problem and rings again', async () => {
  const err = Object.assign(new Error('x'), { status: 409, code: 'call_state', detail: 'call c1 is not ringing; only a ringing call can be answered' });
  const t = setup({ calls: [view('c1')], api: { answer: err } });
  await t.ctl.answer('c1');
  assert.equal(state(t).errors.at(-1).detail, err.detail);
  assert.equal(state(t).extras.c1.answering, false);
  assert.equal(t.ringtone.ringing, true);
});

test('the ringtone rings for an incoming call and stops when it is answered', () => {
  const t = setup();
  t.ctl.onEvent({ type: 'call.started', seq: 2, at_ms: 6000, call: view('c1') });
  assert.equal(t.ringtone.ringing, true);
  assert.ok(t.log.some(([k, v]) => k === 'showPanel' && v === true), 'Open CTI shows the panel');
  assert.ok(t.log.some(([k, v]) => k === 'setLabel' && v === 'Incoming call'));
  t.ctl.onEvent({ type: 'call.answered', seq: 3, at_ms: 7000, call: view('c1', { state: 'answered', agent_user_id: 'u-ada', answered_at_ms: 7000 }) });
  assert.equal(t.ringtone.ringing, false);
});

test('Decline drops the browser offer and declines the call', async () => {
  const t = setup({ calls: [view('c1')] });
  t.ctl.onEvent({ type: 'webrtc.offer', leg: { id: 'leg-1', call_id: 'c1', instance: 'inst-1', sdp: 'v=0', auto_answer: false } });
  await t.ctl.decline('c1');
  assert.deepEqual(t.phone.calls.filter(([k]) => k === 'dropPending'), [['dropPending', 'c1']]);
  assert.deepEqual(apiCalls(t, 'decline'), [['decline', 'c1', 'k1']]);
});

test('Screen on a ringing call sends it to voicemail, then listens once it is there', async () => {
  const t = setup({ calls: [view('c1')] });
  await t.ctl.screen('c1');
  assert.equal(apiCalls(t, 'decline').length, 1);
  assert.equal(apiCalls(t, 'screen').length, 0);
  t.ctl.onEvent({ type: 'call.voicemail', seq: 2, at_ms: 6000, call: view('c1', { state: 'voicemail' }) });
  await flush();
  assert.deepEqual(apiCalls(t, 'screen'), [['screen', 'c1', 'k2']]);
  assert.equal(state(t).extras.c1.screenWanted, false);
  await t.ctl.screen('c1');
  assert.equal(apiCalls(t, 'screen').length, 2, 'in voicemail, Screen listens directly');
});

test('dialling from the browser names this device and the chosen caller ID', async () => {
  const placed = view('c9', { direction: 'outbound', from_number: '101', to_number: '+14155550111' });
  const t = setup({ api: { placeCall: placed, relate: { record_id: '003000000000001AAA', object: 'Contact', name: 'Grace' } } });
  t.store.dispatch({ type: 'caller_ids', caller_ids: ['+14155550100', '+14155550200'], default: '+14155550100' });
  t.store.dispatch({ type: 'select_caller_id', number: '+14155550200' });
  t.ctl.ui.setDialNumber('+1 (415) 555-0111');
  await t.ctl.dial();
  assert.deepEqual(apiCalls(t, 'placeCall')[0][1], { to: '+14155550111', caller_id: '+14155550200', device_id: 'dev-browser' });
  assert.equal(state(t).ui.dialNumber, '');
  assert.equal(state(t).extras.c9.placedByMe, true);
  assert.equal(incomingCalls(state(t)).length, 0);

  t.ctl.ui.setCallVia('phones');
  await t.ctl.clickToDial({ number: '(212) 555-0199', recordId: '003000000000001AAA' });
  await flush();
  assert.equal(apiCalls(t, 'placeCall')[1][1].device_id, undefined, 'other phones: every device rings');
  assert.equal(apiCalls(t, 'placeCall')[1][1].to, '2125550199');
  assert.deepEqual(apiCalls(t, 'relate')[0].slice(1, 3), ['c9', '003000000000001AAA'], 'click-to-dial from a Contact relates the call');
  assert.equal(state(t).calls.c9.related.name, 'Grace');
});

test('an undiallable number is refused before the API', async () => {
  const t = setup();
  await t.ctl.dial('hello');
  assert.equal(apiCalls(t, 'placeCall').length, 0);
  assert.match(state(t).errors.at(-1).detail, /number/);
});

test('keypad: in-band on a browser call, else the dtmf endpoint', async () => {
  const answered = view('c1', { state: 'answered', agent_user_id: 'u-ada' });
  const t = setup({ calls: [answered] });
  await t.ctl.dtmf('c1', '7');
  assert.deepEqual(apiCalls(t, 'dtmf'), [['dtmf', 'c1', '7', 'k1']]);
  t.phone.sendDtmf = () => true;
  assert.equal(await t.ctl.dtmf('c1', '8'), 'inband');
  assert.equal(apiCalls(t, 'dtmf').length, 1);
  assert.equal(state(t).extras.c1.drafts.keypad, '78');
});

test('hold and mute toggle from the call’s state and take the answer', async () => {
  const answered = view('c1', { state: 'answered', agent_user_id: 'u-ada' });
  const t = setup({ calls: [answered], api: { hold: { ...answered, held: 'caller' }, mute: { ...answered, held: 'caller', muted: ['callee'] } } });
  await t.ctl.toggleHold('c1');
  assert.deepEqual(apiCalls(t, 'hold')[0].slice(1, 3), ['c1', true]);
  assert.equal(state(t).calls.c1.held, 'caller');
  await t.ctl.toggleMute('c1');
  assert.deepEqual(apiCalls(t, 'mute')[0].slice(1, 3), ['c1', true]);
  assert.equal(state(t).calls.c1.muted[0], 'callee');
  await t.ctl.toggleHold('c1');
  assert.equal(apiCalls(t, 'hold')[1][2], false, 'held: the next click resumes');
  t.ctl.onEvent({ type: 'call.media_state', seq: 5, at_ms: 9000, call: { ...answered, held: null, muted: ['callee'] } });
  await t.ctl.toggleHold('c1');
  assert.equal(apiCalls(t, 'hold')[2][2], true, 'the stream said it is resumed: the next click holds');
});

test('transfers: blind hands over, warm consults then completes or cancels', async () => {
  const answered = view('c1', { state: 'answered', agent_user_id: 'u-ada' });
  const t = setup({ calls: [answered], api: { transfer: answered, completeTransfer: answered, cancelTransfer: answered } });
  t.ctl.ui.setDraft('c1', { transferTo: '204' });
  await t.ctl.transfer('c1', 'warm');
  assert.deepEqual(apiCalls(t, 'transfer')[0].slice(1, 4), ['c1', { number: '204' }, 'warm']);
  assert.equal(state(t).extras.c1.transfer.phase, 'consulting');
  await t.ctl.cancelTransfer('c1');
  assert.equal(state(t).extras.c1.transfer, null);
  await t.ctl.transfer('c1', 'warm', { kind: 'user', id: 'u-bob', name: 'Bob' });
  assert.deepEqual(apiCalls(t, 'transfer')[1][2], { user_id: 'u-bob' });
  await t.ctl.completeTransfer('c1');
  assert.equal(state(t).extras.c1.handedOver, true);

  const b = setup({ calls: [answered], api: { transfer: answered } });
  await b.ctl.transfer('c1', 'blind', { kind: 'group', id: 'g1', name: 'Sales', extension: '200', numbers: [] });
  assert.deepEqual(apiCalls(b, 'transfer')[0].slice(2, 4), [{ number: '200' }, 'blind']);
  assert.equal(state(b).extras.c1.handedOver, true);
  b.ctl.onEvent({ type: 'call.transferred', seq: 2, at_ms: 6000, call: { ...answered, agent_user_id: 'u-sales' } });
  assert.ok(state(b).calls.c1, 'kept for wrap-up');
});

test('a transfer the target did not take shows the gateway’s detail and keeps the call', async () => {
  const answered = view('c1', { state: 'answered', agent_user_id: 'u-ada' });
  const err = Object.assign(new Error('x'), { status: 409, code: 'transfer_failed', detail: 'the target did not answer' });
  const t = setup({ calls: [answered], api: { transfer: err } });
  await t.ctl.transfer('c1', 'blind', null);
  assert.equal(apiCalls(t, 'transfer').length, 0, 'no target typed: nothing sent');
  t.ctl.ui.setDraft('c1', { transferTo: '+44 20 7123 4567' });
  await t.ctl.transfer('c1', 'blind');
  assert.equal(state(t).errors.at(-1).detail, 'the target did not answer');
  assert.equal(state(t).extras.c1.transfer, null);
  assert.equal(state(t).extras.c1.handedOver, false);
});

test('transfer targets: users by id, Salesforce users, numbers', () => {
  assert.deepEqual(transferTarget({ kind: 'user', id: 'u1' }), { user_id: 'u1' });
  assert.deepEqual(transferTarget('005000000000001AAA'), { salesforce_user_id: '005000000000001AAA' });
  assert.deepEqual(transferTarget(' 204 '), { number: '204' });
  assert.equal(transferTarget('Bob'), null);
});

test('park keeps the slot; retrieve takes the call back and refreshes the list', async () => {
  const answered = view('c1', { state: 'answered', agent_user_id: 'u-ada' });
  const t = setup({ calls: [answered], api: { park: { slot: 3, call_id: 'c1', customer_number: '+1212', parked_by: 'u-ada', parked_at_ms: 1 }, parked: { parked: [] }, retrieve: answered } });
  await t.ctl.park('c1');
  assert.equal(state(t).extras.c1.parkedSlot, 3);
  await flush();
  assert.equal(apiCalls(t, 'parked').length, 1);
  await t.ctl.retrieve(3);
  assert.deepEqual(apiCalls(t, 'retrieve')[0].slice(1, 2), [3]);
  assert.equal(state(t).extras.c1.parkedSlot, null);
  assert.equal(state(t).ui.focusCallId, 'c1');
});

test('Call in Salesforce moves the call to this browser', async () => {
  const answered = view('c1', { state: 'answered', agent_user_id: 'u-ada' });
  const t = setup({ calls: [answered], api: { move: answered } });
  await t.ctl.moveHere('c1');
  assert.deepEqual(apiCalls(t, 'move')[0].slice(1, 3), ['c1', 'dev-browser']);
  const expects = t.phone.calls.filter((c) => c[0] === 'expect');
  assert.deepEqual(expects, [['expect', 'c1', true], ['expect', 'c1', false]], 'the offer that follows is answered at once, only while the move is asked');
  const off = setup({ calls: [answered], device: { registered: false, deviceId: null, error: 'no WebRTC' } });
  await off.ctl.moveHere('c1');
  assert.equal(apiCalls(off, 'move').length, 0);
  assert.equal(state(off).errors.at(-1).detail, 'no WebRTC');
});

test('stream events drive the phone: offers, ended legs, ended calls', () => {
  const t = setup({ calls: [view('c1', { state: 'answered', agent_user_id: 'u-ada' })] });
  t.ctl.onEvent({ type: 'webrtc.offer', leg: { id: 'leg-2', call_id: 'c1', instance: 'inst-1', sdp: 'v=0', auto_answer: true } });
  t.ctl.onEvent({ type: 'webrtc.ended', leg: { id: 'leg-2', call_id: 'c1' } });
  t.ctl.onEvent({ type: 'call.ended', seq: 9, at_ms: 9000, call: view('c1', { state: 'ended', agent_user_id: 'u-ada', end_reason: 'completed' }) });
  assert.deepEqual(t.phone.calls.map(([k, v]) => [k, typeof v === 'object' ? v.id : v]), [['offer', 'leg-2'], ['close', 'leg-2'], ['endCall', 'c1']]);
});

test('after the call: the Task opens once it is logged, if the setting says so', () => {
  const ended = view('c1', { state: 'ended', agent_user_id: 'u-ada', answered_at_ms: 2000, ended_at_ms: 3000, end_reason: 'completed' });
  const t = setup({ calls: [ended] });
  t.ctl.onEvent({ type: 'call.synced', seq: 2, at_ms: 6000, call: { ...ended, salesforce_sync: { state: 'synced', task_id: '00T000000000001AAA' } } });
  t.ctl.onEvent({ type: 'call.synced', seq: 3, at_ms: 6001, call: { ...ended, salesforce_sync: { state: 'synced', task_id: '00T000000000001AAA' } } });
  assert.deepEqual(t.log.filter(([k]) => k === 'screenPop'), [['screenPop', '00T000000000001AAA']]);
});

test('recordings of the call on screen are listed after it ends, and again when a new one is stored', async () => {
  const ended = view('c1', { state: 'ended', agent_user_id: 'u-ada', answered_at_ms: 2000, ended_at_ms: 3000, end_reason: 'completed', recording_ids: ['r1'] });
  const t = setup({ calls: [ended], api: { recordings: { recordings: [{ id: 'r1', call_id: 'c1', kind: 'recording', playback_url: 'https://gw/v1/recordings/r1/audio?token=x', duration_ms: 1000 }] } } });
  await flush();
  assert.deepEqual(apiCalls(t, 'recordings')[0][1], { call_id: 'c1', limit: 20 });
  assert.equal(state(t).extras.c1.recordings.items[0].id, 'r1');
  t.ctl.onEvent({ type: 'call.recording_available', seq: 2, at_ms: 6000, call: { ...ended, recording_ids: ['r1', 'r2'] }, recording_id: 'r2' });
  await flush();
  assert.equal(apiCalls(t, 'recordings').length, 2);
});

test('notes: each has its own key, and a retry reuses it', async () => {
  let fail = true;
  const t = setup({
    calls: [view('c1', { state: 'answered', agent_user_id: 'u-ada' })],
    api: {
      addNote: () => {
        if (fail) throw Object.assign(new Error('x'), { status: 0, code: 'network', detail: 'offline' });
        return { note_id: 'n-1', call_id: 'c1' };
      },
    },
  });
  t.ctl.ui.setDraft('c1', { note: '  Wants the March invoice  ' });
  assert.equal(await t.ctl.addNote('c1'), false);
  const [note] = state(t).extras.c1.notes;
  assert.equal(note.state, 'failed');
  assert.equal(note.text, 'Wants the March invoice');
  assert.equal(state(t).extras.c1.drafts.note, '');
  fail = false;
  assert.equal(await t.ctl.retryNote('c1', note.localId), true);
  const sent = apiCalls(t, 'addNote');
  assert.equal(sent[0][3], sent[1][3], 'same Idempotency-Key');
  assert.equal(state(t).extras.c1.notes[0].state, 'logged');
  assert.equal(await t.ctl.addNote('c1'), false, 'an empty draft logs nothing');
  assert.equal(apiCalls(t, 'addNote').length, 2);
});

test('rating, assignment and a new Case go to their endpoints', async () => {
  const ended = view('c1', { state: 'ended', agent_user_id: 'u-ada', answered_at_ms: 2000, ended_at_ms: 3000, related: { record_id: '003000000000001AAA', object: 'Contact', name: 'Grace' } });
  const t = setup({ calls: [ended], api: { rate: null, cases: { records: [{ id: '500000000000001AAA', object: 'Case', name: '00001001' }] }, assign: (id, body) => ({ assignment_id: 'a1', object: 'Case', record_id: body.case_id ?? null, name: body.case_id ? '00001001' : body.new_case.subject }) } });
  assert.equal(await t.ctl.rate('c1'), false, 'no stars picked');
  t.ctl.ui.setDraft('c1', { ratingScore: 4, ratingComment: 'slight echo' });
  assert.equal(await t.ctl.rate('c1'), true);
  assert.deepEqual(apiCalls(t, 'rate')[0].slice(1, 4), ['c1', 4, 'slight echo']);
  assert.equal(state(t).extras.c1.rating.state, 'sent');

  await t.ctl.searchWork('c1', 'case');
  assert.deepEqual(apiCalls(t, 'cases')[0][1], { limit: 20, contact_id: '003000000000001AAA' }, 'no words: the related Contact’s Cases');
  t.ctl.ui.setDraft('c1', { workQuery: 'invoice' });
  await t.ctl.searchWork('c1', 'case');
  assert.deepEqual(apiCalls(t, 'cases')[1][1], { limit: 20, q: 'invoice' });
  await t.ctl.assign('c1', { case_id: '500000000000001AAA' });
  assert.equal(state(t).calls.c1.assignment.name, '00001001');
  t.ctl.ui.setDraft('c1', { caseSubject: 'Invoice missing', caseDescription: 'March' });
  await t.ctl.newCase('c1');
  assert.deepEqual(apiCalls(t, 'assign')[1][2], { new_case: { subject: 'Invoice missing', description: 'March' } });
});

test('settings are saved, and put back when the gateway refuses', async () => {
  const refused = Object.assign(new Error('x'), { status: 400, code: 'invalid_json', detail: 'unknown field' });
  let answer = (s) => s;
  const t = setup({ api: { putSettings: (s) => answer(s) } });
  await t.ctl.saveSettings({ privacy_mode: true });
  assert.equal(state(t).settings.privacy_mode, true);
  answer = () => {
    throw refused;
  };
  await t.ctl.saveSettings({ call_relation: 'opportunity' });
  assert.equal(state(t).settings.call_relation, 'case');
  assert.equal(state(t).errors.at(-1).detail, 'unknown field');
});

test('sign-in redirects (or pops up) to the gateway’s login with return_to', () => {
  const t = setup({ signedIn: false });
  assert.equal(t.ctl.signIn(), 'redirect');
  assert.deepEqual(t.win.location.assigned, ['https://gw/v1/auth/salesforce/login?return_to=https%3A%2F%2Fgw%2Fsoftphone%2F']);
});

test('a session starts the stream and the browser phone; losing it tears them down', async () => {
  const t = setup({ signedIn: false, api: { me: ME, callerIds: { caller_ids: ['+14155550100'], default: '+14155550100' } } });
  await t.ctl.acceptSession({ token: 'sbs_1', expiresAt: null });
  await flush();
  assert.deepEqual(t.saved, [{ token: 'sbs_1', expiresAt: null }]);
  assert.ok(t.log.some(([k]) => k === 'stream.start'));
  assert.ok(t.log.some(([k]) => k === 'reg.start'));
  assert.equal(state(t).me.name, 'Ada');
  assert.equal(state(t).selectedCallerId, '+14155550100');
  t.ctl.endSession('Your session ended; sign in again.');
  assert.equal(state(t).session, null);
  assert.equal(state(t).signin.description, 'Your session ended; sign in again.');
  assert.ok(t.log.some(([k]) => k === 'stream.stop'));
  assert.deepEqual(t.log.find(([k]) => k === 'reg.stop'), ['reg.stop', { unregister: true }]);
  assert.equal(t.saved.at(-1), null, 'the stored token is dropped');
});

test('click-to-dial while signed out asks the agent to sign in', async () => {
  const t = setup({ signedIn: false });
  await t.ctl.clickToDial({ number: '415-555-0100', recordId: null });
  assert.equal(apiCalls(t, 'placeCall').length, 0);
  assert.equal(state(t).ui.dialNumber, '4155550100');
  assert.match(state(t).errors.at(-1).detail, /Connect with Salesforce/);
});

test('cancelling a ringing transfer does not report the transfer request’s expected failure', async () => {
  const answered = view('c1', { state: 'answered', agent_user_id: 'u-ada' });
  let rejectTransfer;
  const t = setup({
    calls: [answered],
    api: {
      transfer: () => new Promise((_, reject) => (rejectTransfer = reject)),
      cancelTransfer: answered,
    },
  });
  t.ctl.ui.setDraft('c1', { transferTo: '204' });
  const pending = t.ctl.transfer('c1', 'blind');
  await flush();
  assert.equal(state(t).extras.c1.transfer.phase, 'ringing');
  await t.ctl.cancelTransfer('c1');
  rejectTransfer(Object.assign(new Error('x'), { status: 409, code: 'transfer_failed', detail: 'the transfer was cancelled' }));
  await pending;
  assert.deepEqual(state(t).errors, []);
  assert.equal(state(t).extras.c1.transfer, null);
  assert.equal(state(t).extras.c1.handedOver, false);
});

test('a dismissed call opens again from Recent', () => {
  const ended = view('c1', { state: 'ended', agent_user_id: 'u-ada', answered_at_ms: 2000, ended_at_ms: 3000 });
  const t = setup({ calls: [ended] });
  t.ctl.ui.dismiss('c1');
  assert.equal(state(t).extras.c1.dismissed, true);
  t.ctl.ui.focus('c1');
  assert.equal(state(t).extras.c1.dismissed, false);
  assert.equal(state(t).ui.focusCallId, 'c1');
});

test('a transfer offered before the call is this agent\'s rings from the offer alone, with who calls', () => {
  const t = setup();
  t.ctl.onEvent({ type: 'webrtc.offer', leg: { id: 'leg-9', call_id: 'c9', instance: 'inst-1', sdp: 'v=0', auto_answer: false, caller_number: '+14155550123', caller_name: 'Ada Lovelace' } });
  const call = state(t).calls.c9;
  assert.ok(call, 'the call is shown');
  assert.equal(call.state, 'ringing');
  assert.equal(call.from_number, '+14155550123');
  assert.equal(call.from_display, 'Ada Lovelace');
  assert.ok(t.log.some(([k, v]) => k === 'showPanel' && v === true), 'the panel opens');
});

test('declining a transfer\'s offer declines its leg and forgets the call; an offer that ends does too', async () => {
  const t = setup();
  t.ctl.onEvent({ type: 'webrtc.offer', leg: { id: 'leg-9', call_id: 'c9', instance: 'inst-1', sdp: 'v=0', auto_answer: false, caller_number: '+14155550123' } });
  await t.ctl.decline('c9');
  assert.deepEqual(apiCalls(t, 'declineLeg').map((c) => c[1]), ['leg-9'], 'the leg, not the call (not this agent\'s yet)');
  assert.equal(apiCalls(t, 'decline').length, 0);
  assert.equal(state(t).calls.c9, undefined, 'no longer shown');

  t.ctl.onEvent({ type: 'webrtc.offer', leg: { id: 'leg-10', call_id: 'c10', instance: 'inst-1', sdp: 'v=0', auto_answer: false } });
  assert.ok(state(t).calls.c10);
  t.ctl.onEvent({ type: 'webrtc.ended', leg: { id: 'leg-10', call_id: 'c10', instance: 'inst-1' } });
  assert.equal(state(t).calls.c10, undefined, 'the colleague cancelled: it stops ringing');

  // Handed over: the stream's view makes it an ordinary call, which an
  // ended leg no longer removes.
  t.ctl.onEvent({ type: 'webrtc.offer', leg: { id: 'leg-11', call_id: 'c11', instance: 'inst-1', sdp: 'v=0', auto_answer: false } });
  t.ctl.onEvent({ type: 'call.transferred', seq: 5, at_ms: 6000, call: view('c11', { state: 'answered', agent_user_id: 'u-ada' }) });
  assert.equal(state(t).calls.c11.transfer_offer, undefined);
  t.ctl.onEvent({ type: 'webrtc.ended', leg: { id: 'leg-11', call_id: 'c11', instance: 'inst-1' } });
  assert.ok(state(t).calls.c11, 'still shown');
});

test('a colleague\'s transfer on the stream: it rings as theirs, its leg is what Decline refuses, and call.withdrawn takes it away', async () => {
  const t = setup();
  const theirs = view('c12', { state: 'answered', agent_user_id: 'u-bob' });
  t.ctl.onEvent({ type: 'call.ringing', seq: 2, at_ms: 6000, call: theirs });
  t.ctl.onEvent({ type: 'webrtc.offer', leg: { id: 'leg-12', call_id: 'c12', instance: 'inst-1', sdp: 'v=0', auto_answer: false } });
  assert.deepEqual(incomingCalls(state(t)).map((c) => c.id), ['c12'], 'rings for Ada');
  await t.ctl.decline('c12');
  assert.deepEqual(apiCalls(t, 'declineLeg').map((c) => c[1]), ['leg-12']);
  assert.equal(apiCalls(t, 'decline').length, 0, 'not a call of Ada\'s to decline');
  t.ctl.onEvent({ type: 'call.withdrawn', seq: 3, at_ms: 6100, call: theirs });
  assert.equal(state(t).calls.c12, undefined, 'gone once the gateway says so');
});
