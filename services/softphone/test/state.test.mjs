import test from 'node:test';
import assert from 'node:assert/strict';
import {
  reduce,
  initialState,
  incomingCalls,
  liveCalls,
  finishedCalls,
  focusedCall,
  isMuted,
  isHeld,
  pendingTaskPops,
  ringingFor,
  newIncomingIds,
  onBrowser,
  needsWrapUp,
  createStore,
} from '../app/state.js';

const ME = { user_id: 'u-ada', name: 'Ada Lovelace', extension: '101', settings: { privacy_mode: false, open_task_after_call: true, call_relation: 'case' } };

function view(id, patch = {}) {
  return {
    id,
    direction: 'inbound',
    state: 'ringing',
    from_number: '+12125550123',
    from_display: 'Carrier',
    to_number: '+14155550100',
    agent_user_id: null,
    started_at_ms: 1000,
    answered_at_ms: null,
    ended_at_ms: null,
    held: null,
    muted: [],
    recording: 'off',
    screening: false,
    end_reason: null,
    recording_ids: [],
    voicemail_id: null,
    ...patch,
  };
}

function signedIn(calls = [], seq = 10) {
  let s = initialState({ now: 5000, instance: 'inst-1' });
  s = reduce(s, { type: 'session', session: { token: 't', expiresAt: null } });
  s = reduce(s, { type: 'me', me: ME });
  return reduce(s, { type: 'event', event: { type: 'snapshot', seq, at_ms: 5000, calls } });
}

const ev = (type, seq, call, extra = {}) => ({ type: 'event', event: { type, seq, at_ms: 6000, call, ...extra } });

test('a snapshot replaces the calls and events it already includes are dropped', () => {
  let s = signedIn([view('c1')], 10);
  assert.deepEqual(Object.keys(s.calls), ['c1']);
  assert.equal(s.lastSeq, 10);
  assert.equal(s.synced, true);
  const stale = reduce(s, ev('call.answered', 9, view('c1', { state: 'answered', agent_user_id: 'u-ada' })));
  assert.equal(stale, s, 'seq 9 ≤ snapshot seq 10: ignored');
  s = reduce(s, ev('call.answered', 11, view('c1', { state: 'answered', agent_user_id: 'u-ada', answered_at_ms: 6000 })));
  assert.equal(s.calls.c1.state, 'answered');
  assert.equal(s.lastSeq, 11);
});

test('incoming calls are those ringing for the agent, not the ones it placed', () => {
  const s = signedIn([
    view('in', {}),
    view('out', { direction: 'outbound', from_number: '101', to_number: '+14155550111' }),
    view('internal-mine', { direction: 'internal', from_number: '101', to_number: '102' }),
    view('internal-theirs', { direction: 'internal', from_number: '102', to_number: '101', started_at_ms: 900 }),
    view('transfer-to-me', { state: 'answered', agent_user_id: 'u-bob', started_at_ms: 800 }),
  ]);
  assert.deepEqual(incomingCalls(s).map((c) => c.id), ['transfer-to-me', 'internal-theirs', 'in']);
  assert.deepEqual(liveCalls(s).map((c) => c.id).sort(), ['internal-mine', 'out']);
  const placed = reduce(s, { type: 'call_view', call: view('in'), placed: true });
  assert.ok(!incomingCalls(placed).some((c) => c.id === 'in'), 'a call this page placed never rings as incoming');
});

test('a colleague answering a group call removes it; the agent answering announces it', () => {
  const s = signedIn([view('g1'), view('g2', { started_at_ms: 1001 })]);
  const taken = reduce(s, ev('call.answered', 11, view('g1', { state: 'answered', agent_user_id: 'u-bob' })));
  assert.equal(taken.calls.g1, undefined);
  assert.match(taken.announcement.text, /colleague/);
  let mine = reduce(s, { type: 'call_extras', callId: 'g2', patch: { answering: true } });
  mine = reduce(mine, ev('call.answered', 12, view('g2', { state: 'answered', agent_user_id: 'u-ada', answered_at_ms: 6000 })));
  assert.equal(mine.extras.g2.answering, false);
  assert.match(mine.announcement.text, /Call connected/);
  assert.equal(focusedCall(mine).id, 'g2');
});

test('mute and hold are read from the agent’s side of the bridge', () => {
  const inbound = view('a', { state: 'answered', muted: ['callee'], held: 'caller' });
  const outbound = view('b', { direction: 'outbound', state: 'answered', muted: ['callee'], held: null });
  assert.equal(isMuted(inbound), true);
  assert.equal(isHeld(inbound), true);
  assert.equal(isMuted(outbound), false, 'on an outbound call the agent is the caller');
  assert.equal(isHeld(outbound), false);
});

test('a call handed over by the agent goes to wrap-up; one handed to the agent becomes its own', () => {
  const answered = view('c1', { state: 'answered', agent_user_id: 'u-ada', answered_at_ms: 2000 });
  let s = signedIn([answered]);
  s = reduce(s, ev('call.transferred', 11, { ...answered, agent_user_id: 'u-bob' }));
  assert.equal(s.extras.c1.handedOver, true);
  assert.deepEqual(liveCalls(s), []);
  assert.deepEqual(finishedCalls(s).map((c) => c.id), ['c1']);
  assert.ok(needsWrapUp(s, s.calls.c1));
  assert.equal(focusedCall(s).id, 'c1');

  let t = signedIn([view('c2', { state: 'answered', agent_user_id: 'u-bob' })]);
  assert.equal(incomingCalls(t).length, 1, 'ringing for the agent as a transfer target');
  t = reduce(t, ev('call.transferred', 11, view('c2', { state: 'answered', agent_user_id: 'u-ada' })));
  assert.equal(incomingCalls(t).length, 0);
  assert.deepEqual(liveCalls(t).map((c) => c.id), ['c2']);
});

test('a reconnect snapshot keeps calls being wrapped up and ends the agent’s calls that vanished', () => {
  let s = signedIn([
    view('ended', { state: 'ended', agent_user_id: 'u-ada', answered_at_ms: 1500, ended_at_ms: 2000, end_reason: 'completed' }),
    view('talking', { state: 'answered', agent_user_id: 'u-ada', answered_at_ms: 1500 }),
    view('ringing-group', {}),
  ]);
  s = reduce(s, { type: 'draft', callId: 'talking', patch: { note: 'half typed' } });
  s = reduce(s, { type: 'event', event: { type: 'snapshot', seq: 3, at_ms: 90_000, calls: [] } });
  assert.equal(s.lastSeq, 3, 'a restarted gateway starts seq again');
  assert.ok(s.calls.ended, 'wrap-up kept');
  assert.equal(s.calls.talking.state, 'ended');
  assert.equal(s.calls.talking.ended_at_ms, 90_000);
  assert.equal(s.extras.talking.gone, true);
  assert.equal(s.extras.talking.drafts.note, 'half typed', 'the agent’s draft survives');
  assert.equal(s.calls['ringing-group'], undefined);
});

test('the Task opens once after the call when the setting asks for it', () => {
  const ended = view('c1', { state: 'ended', agent_user_id: 'u-ada', answered_at_ms: 1500, ended_at_ms: 2000, end_reason: 'completed' });
  let s = signedIn([ended]);
  assert.deepEqual(pendingTaskPops(s), []);
  s = reduce(s, { type: 'event', event: { type: 'call.synced', seq: 11, at_ms: 7000, call: { ...ended, salesforce_sync: { state: 'pending' } } } });
  assert.deepEqual(pendingTaskPops(s), []);
  s = reduce(s, { type: 'event', event: { type: 'call.synced', seq: 12, at_ms: 8000, call: { ...ended, salesforce_sync: { state: 'synced', task_id: '00T000000000001AAA' } } } });
  assert.deepEqual(pendingTaskPops(s), [{ callId: 'c1', taskId: '00T000000000001AAA' }]);
  assert.match(s.announcement.text, /logged in Salesforce/i);
  const popped = reduce(s, { type: 'call_extras', callId: 'c1', patch: { taskPopped: true } });
  assert.deepEqual(pendingTaskPops(popped), []);
  const off = reduce(s, { type: 'settings', settings: { ...ME.settings, open_task_after_call: false } });
  assert.deepEqual(pendingTaskPops(off), []);
});

test('the ring stops once the agent answers or the browser has the call', () => {
  let s = signedIn([view('c1')]);
  assert.equal(ringingFor(s).length, 1);
  const busy = reduce(s, { type: 'busy', key: 'answer:c1', on: true });
  assert.equal(ringingFor(busy).length, 0);
  s = reduce(s, { type: 'leg', leg: { id: 'leg-1', callId: 'c1', state: 'offered', autoAnswer: false } });
  assert.equal(ringingFor(s).length, 1, 'an offer waiting for Answer still rings');
  assert.equal(onBrowser(s, 'c1'), false);
  s = reduce(s, { type: 'leg', leg: { id: 'leg-1', callId: 'c1', state: 'answering' } });
  assert.equal(onBrowser(s, 'c1'), true);
  assert.equal(ringingFor(s).length, 0);
  s = reduce(s, { type: 'leg', leg: { id: 'leg-1', callId: 'c1', state: 'closed' } });
  assert.deepEqual(s.legs, {});
});

test('new incoming calls are told apart from ones already ringing', () => {
  const a = signedIn([view('c1')]);
  const b = reduce(a, ev('call.started', 11, view('c2', { started_at_ms: 2000 })));
  assert.deepEqual(newIncomingIds(a, b), ['c2']);
  assert.deepEqual(newIncomingIds(b, b), []);
  assert.match(b.announcement.text, /Incoming call from Carrier/);
});

test('events change hold, recording, parking and rating', () => {
  const base = view('c1', { state: 'answered', agent_user_id: 'u-ada', answered_at_ms: 1500 });
  let s = signedIn([base]);
  s = reduce(s, ev('call.media_state', 11, { ...base, held: 'caller' }));
  assert.equal(s.announcement.text, 'Call on hold');
  s = reduce(s, ev('call.recording_state', 12, { ...base, held: 'caller', recording: 'paused' }));
  assert.equal(s.calls.c1.recording, 'paused');
  assert.equal(s.announcement.text, 'Recording paused');
  s = reduce(s, ev('call.parked', 13, base));
  assert.equal(s.extras.c1.parkedSlot, true);
  s = reduce(s, ev('call.rated', 14, base, { rating: { user_id: 'u-ada', score: 4, comment: 'echo' } }));
  assert.deepEqual(s.extras.c1.rating, { score: 4, comment: 'echo', state: 'sent' });
  s = reduce(s, ev('call.rated', 15, base, { rating: { user_id: 'u-bob', score: 1, comment: '' } }));
  assert.equal(s.extras.c1.rating.score, 4, 'another agent’s rating is not this agent’s');
});

test('webrtc events are the phone’s, not the reducer’s', () => {
  const s = signedIn([view('c1')]);
  assert.equal(reduce(s, { type: 'event', event: { type: 'webrtc.offer', leg: { id: 'l', call_id: 'c1', instance: 'inst-1', sdp: 'v=0' } } }), s);
});

test('caller IDs: the default is selected, a choice must be one of them', () => {
  let s = signedIn();
  s = reduce(s, { type: 'caller_ids', caller_ids: ['+14155550101', '+14155550100'], default: '+14155550101' });
  assert.equal(s.selectedCallerId, '+14155550101');
  s = reduce(s, { type: 'select_caller_id', number: '+14155550100' });
  assert.equal(s.selectedCallerId, '+14155550100');
  assert.equal(reduce(s, { type: 'select_caller_id', number: '+19999999999' }).selectedCallerId, '+14155550100');
});

test('notes are added and updated by their local id; dismissing leaves wrap-up', () => {
  const ended = view('c1', { state: 'ended', agent_user_id: 'u-ada', answered_at_ms: 1500, ended_at_ms: 2000 });
  let s = signedIn([ended]);
  s = reduce(s, { type: 'note', callId: 'c1', note: { localId: 'n1', text: 'hello', state: 'sending' } });
  s = reduce(s, { type: 'note', callId: 'c1', note: { localId: 'n1', state: 'logged', noteId: 'srv-1' } });
  assert.deepEqual(s.extras.c1.notes, [{ localId: 'n1', text: 'hello', state: 'logged', noteId: 'srv-1' }]);
  assert.equal(focusedCall(s).id, 'c1');
  s = reduce(s, { type: 'dismiss_call', callId: 'c1' });
  assert.equal(focusedCall(s), null);
});

test('signing out forgets everything but the page instance', () => {
  const s = reduce(signedIn([view('c1')]), { type: 'signed_out', error: 'session_ended', description: 'sign in again' });
  assert.equal(s.session, null);
  assert.deepEqual(s.calls, {});
  assert.equal(s.device.instance, 'inst-1');
  assert.equal(s.signin.description, 'sign in again');
});

test('the store tells subscribers about changes only', () => {
  const store = createStore(reduce, initialState({ now: 0 }));
  const seen = [];
  store.subscribe((next, prev, action) => seen.push([action.type, next !== prev]));
  store.dispatch({ type: 'tick', now: 5 });
  store.dispatch({ type: 'unknown' });
  assert.deepEqual(seen, [['tick', true]]);
  assert.equal(store.getState().now, 5);
});
