import test from 'node:test';
import assert from 'node:assert/strict';
import { h, render, walk, byTestId, textOf } from '../app/ui/dom.js';
import { view } from '../app/ui/view.js';
import { initialState, reduce } from '../app/state.js';
import { fakeDocument } from '../test-support/fakes.mjs';

const ME = { user_id: 'u-ada', name: 'Ada Lovelace', extension: '101', role: 'agent', salesforce_connected: true, settings: { privacy_mode: false, open_task_after_call: true, call_relation: 'case' } };

function call(id, patch = {}) {
  return { id, direction: 'inbound', state: 'ringing', from_number: '+14155550100', from_display: null, to_number: '+14155550199', agent_user_id: null, started_at_ms: 1000, answered_at_ms: null, ended_at_ms: null, held: null, muted: [], recording: 'off', screening: false, end_reason: null, recording_ids: [], voicemail_id: null, ...patch };
}

function stateWith(calls, more = []) {
  let s = initialState({ now: 61_000, instance: 'inst-1' });
  s = reduce(s, { type: 'session', session: { token: 't' } });
  s = reduce(s, { type: 'me', me: ME });
  s = reduce(s, { type: 'device', device: { registered: true, deviceId: 'dev-b' } });
  s = reduce(s, { type: 'stream_status', status: { state: 'open', attempt: 0 } });
  s = reduce(s, { type: 'event', event: { type: 'snapshot', seq: 1, at_ms: 1000, calls } });
  for (const a of more) s = reduce(s, a);
  return s;
}

/** Actions that record what the views call. */
function recorder() {
  const calls = [];
  const fn = (name) => (...args) => calls.push([name, ...args]);
  const a = new Proxy({}, { get: (_, k) => (k === 'ui' ? new Proxy({}, { get: (_, k2) => fn(`ui.${String(k2)}`) }) : fn(String(k))) });
  return { a, calls };
}

const click = (tree, id) => byTestId(tree, id).props.onclick({ preventDefault() {} });

test('a colleague\'s transfer rings with Answer, and Decline only while its browser leg is offered here', () => {
  const { a, calls } = recorder();
  const theirs = call('c2', { state: 'answered', agent_user_id: 'u-bob', answered_at_ms: 2000 });
  const noLeg = byTestId(view(stateWith([theirs]), a), 'incoming-call');
  assert.match(textOf(noLeg), /Transferred call/);
  assert.equal(byTestId(noLeg, 'decline'), null, 'nothing here to decline');
  assert.equal(byTestId(noLeg, 'screen'), null, 'not a call to send to voicemail');
  const tree = view(stateWith([theirs], [{ type: 'leg', leg: { id: 'leg-2', callId: 'c2', state: 'offered' } }]), a);
  const decline = byTestId(byTestId(tree, 'incoming-call'), 'decline');
  assert.equal(decline.props['aria-label'], 'Decline the transfer');
  click(tree, 'decline');
  assert.deepEqual(calls, [['decline', 'c2']]);
});

test('signed out: only the Connect with Salesforce button, which signs in', () => {
  const { a, calls } = recorder();
  let s = initialState({ now: 0 });
  s = reduce(s, { type: 'signin_error', error: 'not_linked', description: 'Salesforce user X is not linked' });
  const tree = view(s, a);
  assert.equal(textOf(byTestId(tree, 'signin-error')), 'Salesforce user X is not linked');
  assert.equal(byTestId(tree, 'dialer'), null);
  click(tree, 'signin-button');
  assert.deepEqual(calls, [['signIn']]);
});

test('an incoming call shows who calls, the match tag, and Answer / Screen / Decline', () => {
  const { a, calls } = recorder();
  const s = stateWith([call('c1', { caller_matches: { number: '+14155550100', status: 'found', matches: [{ id: '003000000000001AAA', object: 'Contact', name: 'Grace Hopper' }] } })]);
  const tree = view(s, a);
  const card = byTestId(tree, 'incoming-call');
  assert.equal(card.props['data-call-id'], 'c1');
  assert.equal(textOf(byTestId(card, 'call-party')), 'Grace Hopper');
  assert.equal(textOf(byTestId(card, 'match-tag')), 'Contact · Grace Hopper');
  click(tree, 'match-tag');
  click(tree, 'answer');
  click(tree, 'screen');
  click(tree, 'decline');
  assert.deepEqual(calls, [['openRecord', '003000000000001AAA'], ['answer', 'c1'], ['screen', 'c1'], ['decline', 'c1']]);
  const order = walk(tree).map((n) => n.props?.['data-testid']).filter((id) => id === 'incoming-call' || id === 'dialer');
  assert.deepEqual(order, ['incoming-call', 'dialer'], 'the notification comes first; the tabs stay reachable below it');
});

test('several matches: the chooser relates the call to the one picked', () => {
  const { a, calls } = recorder();
  const matches = { number: '+14155550100', status: 'found', matches: [{ id: '003000000000001AAA', object: 'Contact', name: 'Grace' }, { id: '003000000000002AAA', object: 'Contact', name: 'Ada' }] };
  let s = stateWith([call('c1', { state: 'answered', agent_user_id: 'u-ada', answered_at_ms: 2000, caller_matches: matches })]);
  assert.equal(textOf(byTestId(view(s, a), 'match-choose')), '2 matches — choose');
  s = reduce(s, { type: 'call_extras', callId: 'c1', patch: { panel: 'matches' } });
  const tree = view(s, a);
  const options = walk(tree).filter((n) => n.props?.['data-testid'] === 'match-option');
  assert.deepEqual(options.map((o) => o.props['data-record-id']), ['003000000000001AAA', '003000000000002AAA']);
  byTestId(options[1], 'match-pick').props.onclick();
  assert.deepEqual(calls.at(-1), ['relate', 'c1', '003000000000002AAA']);
});

test('the live call shows its state and every control, pressed ones marked', () => {
  const { a, calls } = recorder();
  const s = stateWith([call('c1', { state: 'answered', agent_user_id: 'u-ada', answered_at_ms: 1000, held: 'caller', muted: ['callee'], recording: 'recording' })]);
  const tree = view(s, a);
  assert.equal(byTestId(tree, 'call').props['data-state'], 'answered');
  assert.equal(textOf(byTestId(tree, 'call-state')), 'On hold');
  assert.equal(textOf(byTestId(tree, 'call-timer')), '1:00');
  assert.equal(byTestId(tree, 'mute').props['aria-pressed'], 'true');
  assert.equal(byTestId(tree, 'hold').props['aria-pressed'], 'true');
  assert.equal(byTestId(tree, 'recording-state').props['data-state'], 'recording');
  assert.equal(byTestId(tree, 'call-audio').props['data-where'], 'device');
  for (const id of ['mute', 'hold', 'record', 'record-pause', 'park', 'move-here', 'hangup']) click(tree, id);
  assert.deepEqual(calls.map((c) => c[0] + (c[2] ? `:${c[2]}` : '')), ['toggleMute', 'toggleHold', 'record:stop', 'record:pause', 'park', 'moveHere', 'hangup']);
  for (const id of ['keypad-toggle', 'transfer-toggle', 'notes-toggle', 'assign-toggle']) assert.ok(byTestId(tree, id), id);
});

test('a call in this browser has no “Call in Salesforce”; one being consulted offers complete and cancel', () => {
  const { a, calls } = recorder();
  const s = stateWith(
    [call('c1', { state: 'answered', agent_user_id: 'u-ada', answered_at_ms: 1000 })],
    [
      { type: 'leg', leg: { id: 'leg-1', callId: 'c1', state: 'connected' } },
      { type: 'call_extras', callId: 'c1', patch: { transfer: { mode: 'warm', label: 'Bob', phase: 'consulting' } } },
    ],
  );
  const tree = view(s, a);
  assert.equal(byTestId(tree, 'move-here'), null);
  assert.equal(byTestId(tree, 'call-audio').props['data-where'], 'browser');
  assert.equal(byTestId(tree, 'transfer-status').props['data-phase'], 'consulting');
  click(tree, 'transfer-complete');
  click(tree, 'transfer-cancel');
  assert.deepEqual(calls, [['completeTransfer', 'c1'], ['cancelTransfer', 'c1']]);
});

test('panels: keypad sends digits, transfer offers both modes, notes log', () => {
  const { a, calls } = recorder();
  const base = stateWith([call('c1', { state: 'answered', agent_user_id: 'u-ada', answered_at_ms: 1000 })]);
  let tree = view(reduce(base, { type: 'call_extras', callId: 'c1', patch: { panel: 'keypad' } }), a);
  click(tree, 'keypad-key-hash');
  click(tree, 'keypad-key-5');
  assert.deepEqual(calls.splice(0), [['dtmf', 'c1', '#'], ['dtmf', 'c1', '5']]);

  let s = reduce(base, { type: 'call_extras', callId: 'c1', patch: { panel: 'transfer' } });
  s = reduce(s, { type: 'draft', callId: 'c1', patch: { transferTo: '204' } });
  tree = view(s, a);
  click(tree, 'transfer-blind');
  click(tree, 'transfer-warm');
  assert.deepEqual(calls.splice(0), [['transfer', 'c1', 'blind'], ['transfer', 'c1', 'warm']]);

  s = reduce(base, { type: 'call_extras', callId: 'c1', patch: { panel: 'notes' } });
  s = reduce(s, { type: 'draft', callId: 'c1', patch: { note: 'hello' } });
  s = reduce(s, { type: 'note', callId: 'c1', note: { localId: 'n0', text: 'first', state: 'failed', detail: 'offline' } });
  tree = view(s, a);
  assert.equal(byTestId(tree, 'note-input').props.value, 'hello');
  assert.equal(byTestId(tree, 'note').props['data-state'], 'failed');
  click(tree, 'note-log');
  click(tree, 'note-retry');
  assert.deepEqual(calls, [['addNote', 'c1'], ['retryNote', 'c1', 'n0']]);
});

test('after the call: sync status, Task, recordings, rating and Done', () => {
  const { a, calls } = recorder();
  const s = stateWith(
    [call('c1', { state: 'ended', agent_user_id: 'u-ada', answered_at_ms: 1000, ended_at_ms: 31_000, end_reason: 'completed', recording_ids: ['r1'], salesforce_sync: { state: 'synced', task_id: '00T000000000001AAA' } })],
    [
      { type: 'call_extras', callId: 'c1', patch: { recordings: { state: 'loaded', items: [{ id: 'r1', call_id: 'c1', kind: 'recording', playback_url: 'https://gw/v1/recordings/r1/audio?token=x', duration_ms: 30_000 }] } } },
      { type: 'draft', callId: 'c1', patch: { ratingScore: 3 } },
    ],
  );
  const tree = view(s, a);
  assert.equal(byTestId(tree, 'wrapup').props['data-call-id'], 'c1');
  assert.equal(byTestId(tree, 'end-reason').props['data-reason'], 'completed');
  assert.equal(textOf(byTestId(tree, 'call-duration')), '0:30');
  assert.equal(byTestId(tree, 'sync-status').props['data-state'], 'synced');
  assert.equal(byTestId(tree, 'recording-audio').props.src, 'https://gw/v1/recordings/r1/audio?token=x');
  assert.equal(byTestId(tree, 'rating-star-3').props['aria-checked'], 'true');
  assert.equal(byTestId(tree, 'rating-star-4').props['aria-checked'], 'false');
  click(tree, 'open-task');
  click(tree, 'rating-star-5');
  click(tree, 'rating-send');
  click(tree, 'wrapup-done');
  assert.deepEqual(calls, [['openRecord', '00T000000000001AAA'], ['ui.setDraft', 'c1', { ratingScore: 5 }], ['rate', 'c1'], ['ui.dismiss', 'c1']]);
});

test('sync states each have their indicator', () => {
  const { a } = recorder();
  for (const st of ['pending', 'failed', 'skipped']) {
    const s = stateWith([call('c1', { state: 'ended', agent_user_id: 'u-ada', answered_at_ms: 1000, ended_at_ms: 2000, salesforce_sync: { state: st, detail: st === 'failed' ? 'FIELD_CUSTOM_VALIDATION_EXCEPTION: no' : undefined } })]);
    const tree = view(s, a);
    assert.equal(byTestId(tree, 'sync-status').props['data-state'], st);
    assert.equal(byTestId(tree, 'open-task'), null);
    if (st === 'failed') assert.match(textOf(byTestId(tree, 'sync-detail')), /VALIDATION/);
  }
});

test('every tab, the settings and each call state render controls with names and test ids', () => {
  const { a } = recorder();
  const states = [];
  const base = stateWith([]);
  for (const tab of ['dialer', 'directory', 'parked', 'recent', 'recordings']) {
    let s = reduce(base, { type: 'ui', patch: { tab } });
    s = reduce(s, { type: 'directory', directory: { state: 'loaded', entries: [{ id: 'u2', kind: 'user', name: 'Bob', extension: '102', numbers: [], groups: [] }] } });
    s = reduce(s, { type: 'parked', parked: { state: 'loaded', items: [{ slot: 1, call_id: 'p1', customer_number: '+1212', parked_by: 'u-bob', parked_at_ms: 1000 }] } });
    states.push(s);
  }
  states.push(reduce(base, { type: 'ui', patch: { settingsOpen: true } }));
  states.push(stateWith([call('v1', { state: 'voicemail', screening: true })]));
  states.push(stateWith([call('c1', { state: 'answered', agent_user_id: 'u-ada', answered_at_ms: 1000 })], [{ type: 'call_extras', callId: 'c1', patch: { panel: 'assign' } }]));
  states.push(stateWith([call('c1', { direction: 'outbound', from_number: '101', state: 'ringing' })], [{ type: 'call_extras', callId: 'c1', patch: { placedByMe: true } }]));
  states.push(reduce(stateWith([]), { type: 'error', detail: 'boom', code: 'x' }));
  let buttons = 0;
  for (const s of states) {
    for (const n of walk(view(s, a))) {
      if (!n.tag || !['button', 'input', 'select', 'textarea'].includes(n.tag)) continue;
      buttons++;
      assert.ok(n.props['data-testid'], `${n.tag} without data-testid: ${JSON.stringify(n.props)}`);
      if (n.tag === 'button') assert.ok(n.props['aria-label'] || textOf(n).trim(), `button ${n.props['data-testid']} has no name`);
      else if (n.props.type !== 'checkbox' && n.props.type !== 'radio' && !n.props.id) assert.ok(n.props['aria-label'], `${n.props['data-testid']} has no label`);
    }
  }
  assert.ok(buttons > 80, `checked ${buttons} controls`);
});

test('the parked tab retrieves by slot; the dialer pad types digits', () => {
  const { a, calls } = recorder();
  let s = reduce(stateWith([]), { type: 'parked', parked: { state: 'loaded', items: [{ slot: 7, call_id: 'p1', customer_number: '+14155550100', parked_by: 'u-ada', parked_at_ms: 1000 }] } });
  s = reduce(s, { type: 'ui', patch: { tab: 'parked' } });
  let tree = view(s, a);
  assert.equal(byTestId(tree, 'parked-call').props['data-slot'], '7');
  click(tree, 'retrieve');
  s = reduce(s, { type: 'ui', patch: { tab: 'dialer', dialNumber: '10' } });
  tree = view(s, a);
  click(tree, 'dial-key-star');
  click(tree, 'dial-call');
  assert.deepEqual(calls, [['retrieve', 7], ['ui.pressDialKey', '*'], ['dial']]);
  assert.equal(byTestId(tree, 'tab-dialer').props['aria-selected'], 'true');
  assert.equal(byTestId(tree, 'tab-parked').props['aria-selected'], 'false');
});

test('the announcer is a polite live region with the latest call news', () => {
  const { a } = recorder();
  const s = stateWith([], [{ type: 'event', event: { type: 'call.started', seq: 2, at_ms: 2000, call: call('c1') } }]);
  const live = byTestId(view(s, a), 'announcer');
  assert.equal(live.props['aria-live'], 'polite');
  assert.match(textOf(live), /Incoming call from/);
});

test('render patches the DOM in place: same elements, new attributes, text and handlers', () => {
  globalThis.document = fakeDocument();
  try {
    const root = globalThis.document.createElement('div');
    const first = () => 1;
    const second = () => 2;
    render(root, h('div', { class: 'a', 'data-testid': 'x' }, h('input', { value: 'abc', oninput: first }), 'hello', h('span', { key: 'k1' }, 'one')));
    const div = root.childNodes[0];
    const input = div.childNodes[0];
    const span = div.childNodes[2];
    assert.equal(input.value, 'abc');
    assert.equal(div.getAttribute('class'), 'a');
    render(root, h('div', { class: 'b' }, h('input', { value: 'abcd', oninput: second, disabled: true }), 'bye', h('span', { key: 'k2' }, 'two')));
    assert.equal(root.childNodes[0], div, 'the element is kept');
    assert.equal(div.childNodes[0], input, 'the input is kept (focus survives)');
    assert.equal(input.value, 'abcd');
    assert.equal(input.oninput, second);
    assert.equal(input.getAttribute('disabled'), '');
    assert.equal(div.getAttribute('class'), 'b');
    assert.equal(div.hasAttribute('data-testid'), false, 'dropped attributes are removed');
    assert.equal(div.childNodes[1].nodeValue, 'bye');
    assert.notEqual(div.childNodes[2], span, 'a new key makes a new element');
    assert.equal(div.textContent, 'byetwo');
    render(root, h('div', {}, h('svg', { viewBox: '0 0 1 1' }, h('path', { d: 'M0 0' }))));
    assert.equal(div.childNodes.length, 1);
    assert.equal(div.childNodes[0].namespaceURI, 'http://www.w3.org/2000/svg');
    assert.equal(div.childNodes[0].childNodes[0].namespaceURI, 'http://www.w3.org/2000/svg');
  } finally {
    delete globalThis.document;
  }
});
