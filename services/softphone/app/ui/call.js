// The incoming-call notification (F13) and the live call with its
// controls (F4, F6, F8, F16) and panels: keypad, transfer, notes (F12),
// assignment (F10, F11), caller chooser (F15).

import { h } from './dom.js';
import { badge, button, note, spinner } from './parts.js';
import { assignmentRow, assignPanel, matchChooser, matchTag } from './salesforce.js';
import { isHeld, isMuted, legFor, onBrowser, otherName, otherNumber } from '../state.js';
import { formatDuration, formatNumber } from '../util.js';

export const KEYS = ['1', '2', '3', '4', '5', '6', '7', '8', '9', '*', '0', '#'];
export const KEY_LETTERS = { 2: 'ABC', 3: 'DEF', 4: 'GHI', 5: 'JKL', 6: 'MNO', 7: 'PQRS', 8: 'TUV', 9: 'WXYZ', 0: '+' };

export function keyTestId(prefix, k) {
  return `${prefix}-${k === '*' ? 'star' : k === '#' ? 'hash' : k}`;
}

function partyHead(call, extra = []) {
  const name = otherName(call);
  const number = formatNumber(otherNumber(call));
  return h(
    'div',
    { class: 'sb-party' },
    h('div', { class: 'sb-party__name', 'data-testid': 'call-party' }, name || number || 'Unknown'),
    name !== number ? h('div', { class: 'sb-party__number', 'data-testid': 'call-number' }, number) : null,
    extra,
  );
}

/** F13: a call ringing for the agent. */
export function incomingCard(state, call, a) {
  const x = state.extras[call.id] ?? {};
  const pending = legFor(state, call.id, ['offered']);
  const answering = x.answering || !!state.busy[`answer:${call.id}`];
  // A colleague's call being transferred here: still theirs.
  const transferred = call.state === 'answered' || !!call.transfer_offer;
  const busy = answering || !!state.busy[`decline:${call.id}`];
  return h(
    'section',
    {
      class: 'sb-card sb-incoming',
      key: `in-${call.id}`,
      'data-testid': 'incoming-call',
      'data-call-id': call.id,
      'data-browser-ringing': pending ? 'true' : 'false',
      role: 'group',
      'aria-label': `Incoming call from ${otherName(call)}`,
    },
    h('div', { class: 'sb-incoming__label' }, transferred ? 'Transferred call' : call.direction === 'internal' ? 'Internal call' : 'Incoming call', call.to_number && !transferred ? h('span', { class: 'sb-text--weak' }, ` to ${formatNumber(call.to_number)}`) : null),
    partyHead(call),
    matchTag(state, call, a),
    x.panel === 'matches' ? matchChooser(state, call, a) : null,
    answering
      ? h('div', { class: 'sb-row', 'data-testid': 'answering' }, spinner('Connecting'), h('span', { class: 'sb-text' }, ' Connecting…'))
      : h(
          'div',
          { class: 'sb-row sb-row--actions' },
          button('Answer', { testid: 'answer', variant: 'success', disabled: busy, onclick: () => a.answer(call.id), ariaLabel: `Answer the call from ${otherName(call)}` }),
          transferred ? null : button('Screen', { testid: 'screen', disabled: busy || x.screenWanted, onclick: () => a.screen(call.id), ariaLabel: 'Screen: send to voicemail and listen in' }),
          transferred && !pending
            ? null
            : button('Decline', { testid: 'decline', variant: 'destructive', disabled: busy, onclick: () => a.decline(call.id), ariaLabel: transferred ? 'Decline the transfer' : 'Decline: send to voicemail' }),
        ),
  );
}

function stateLabel(state, call) {
  const x = state.extras[call.id] ?? {};
  if (x.parkedSlot != null) return ['Parked', 'warning'];
  if (x.transfer?.phase === 'consulting') return ['Consulting', 'warning'];
  if (call.state === 'ringing') return ['Calling…', 'default'];
  if (call.state === 'voicemail') return [call.screening ? 'Screening voicemail' : 'Leaving voicemail', 'warning'];
  if (isHeld(call)) return ['On hold', 'warning'];
  return ['Connected', 'success'];
}

/** The live call: state, caller, controls, and the open panel. */
export function callCard(state, call, a) {
  const x = state.extras[call.id];
  const [label, variant] = stateLabel(state, call);
  const answered = call.state === 'answered';
  const here = onBrowser(state, call.id);
  const pendingHere = legFor(state, call.id, ['offered']);
  const mine = !state.me || call.agent_user_id === state.me.user_id;
  const parked = x.parkedSlot != null;
  const busy = (k) => !!state.busy[`${k}:${call.id}`];
  const since = call.answered_at_ms ?? call.started_at_ms;
  const controls = [];
  if (answered && !parked) {
    controls.push(
      button(isMuted(call) ? 'Unmute' : 'Mute', { testid: 'mute', pressed: isMuted(call), disabled: busy('mute'), onclick: () => a.toggleMute(call.id) }),
      button(isHeld(call) ? 'Resume' : 'Hold', { testid: 'hold', pressed: isHeld(call), disabled: busy('hold') || !!x.transfer, onclick: () => a.toggleHold(call.id) }),
      button('Keypad', { testid: 'keypad-toggle', pressed: x.panel === 'keypad', onclick: () => a.ui.togglePanel(call.id, 'keypad') }),
      call.recording === 'off'
        ? button('Record', { testid: 'record', disabled: busy('record'), onclick: () => a.record(call.id, 'start'), ariaLabel: 'Start recording' })
        : button('Stop rec.', { testid: 'record', pressed: true, disabled: busy('record'), onclick: () => a.record(call.id, 'stop'), ariaLabel: 'Stop recording' }),
      call.recording === 'recording'
        ? button('Pause rec.', { testid: 'record-pause', disabled: busy('record'), onclick: () => a.record(call.id, 'pause'), ariaLabel: 'Pause recording' })
        : call.recording === 'paused'
          ? button('Resume rec.', { testid: 'record-pause', pressed: true, disabled: busy('record'), onclick: () => a.record(call.id, 'resume'), ariaLabel: 'Resume recording' })
          : button('Pause rec.', { testid: 'record-pause', disabled: true, ariaLabel: 'Pause recording (not recording)' }),
      mine ? button('Transfer', { testid: 'transfer-toggle', pressed: x.panel === 'transfer', onclick: () => a.ui.togglePanel(call.id, 'transfer') }) : null,
      mine ? button('Park', { testid: 'park', disabled: busy('park') || !!x.transfer, onclick: () => a.park(call.id) }) : null,
      button('Notes', { testid: 'notes-toggle', pressed: x.panel === 'notes', onclick: () => a.ui.togglePanel(call.id, 'notes') }),
    );
  }
  return h(
    'section',
    { class: 'sb-card sb-call', key: `call-${call.id}`, 'data-testid': 'call', 'data-call-id': call.id, 'data-state': call.state, 'aria-label': `Call with ${otherName(call)}` },
    h(
      'div',
      { class: 'sb-call__head' },
      partyHead(call),
      h(
        'div',
        { class: 'sb-call__status' },
        badge(label, variant, 'call-state', { 'data-state': call.state }),
        h('span', { class: 'sb-timer', 'data-testid': 'call-timer', 'aria-label': 'Call duration' }, formatDuration((state.now || since) - since)),
      ),
    ),
    h(
      'div',
      { class: 'sb-row sb-row--wrap sb-call__meta' },
      answered ? badge(here ? 'Audio in this browser' : 'Audio on another phone', here ? 'brand' : 'default', 'call-audio', { 'data-where': here ? 'browser' : 'device' }) : null,
      call.recording !== 'off' ? badge(call.recording === 'paused' ? 'Recording paused' : '● Recording', call.recording === 'paused' ? 'warning' : 'error', 'recording-state', { 'data-state': call.recording }) : null,
      state.legs && Object.values(state.legs).some((l) => l.callId === call.id && l.state === 'reconnecting') ? badge('Reconnecting audio…', 'warning', 'audio-reconnecting') : null,
    ),
    matchTag(state, call, a),
    x.panel === 'matches' ? matchChooser(state, call, a) : null,
    pendingHere ? button('Answer here', { testid: 'answer-offer', variant: 'success', stretch: true, onclick: () => a.answer(call.id), ariaLabel: 'Take this call in the browser' }) : null,
    call.state === 'voicemail'
      ? h(
          'div',
          { class: 'sb-row sb-row--actions' },
          call.screening ? null : button('Listen', { testid: 'screen', disabled: busy('screen'), onclick: () => a.screen(call.id), ariaLabel: 'Screen: listen to the voicemail being left' }),
          button('Pick up', { testid: 'pick-up', variant: 'success', disabled: busy('pickup'), onclick: () => a.pickUp(call.id), ariaLabel: 'Pick up: talk with the caller' }),
        )
      : null,
    parked
      ? h(
          'div',
          { class: 'sb-panel', 'data-testid': 'parked-status' },
          h('p', { class: 'sb-text' }, typeof x.parkedSlot === 'number' ? `Parked in slot ${x.parkedSlot}. Any agent can retrieve it.` : 'Parked.'),
          typeof x.parkedSlot === 'number' ? button('Retrieve', { testid: 'retrieve-own', variant: 'brand', small: true, disabled: !!state.busy[`retrieve:${x.parkedSlot}`], onclick: () => a.retrieve(x.parkedSlot) }) : null,
        )
      : null,
    x.transfer ? transferStatus(state, call, a) : null,
    controls.length ? h('div', { class: 'sb-controls', 'data-testid': 'call-controls', role: 'toolbar', 'aria-label': 'Call controls' }, controls) : null,
    answered && !parked && mine && !here
      ? button('Call in Salesforce', {
          testid: 'move-here',
          stretch: true,
          disabled: busy('move') || !state.device.registered,
          onclick: () => a.moveHere(call.id),
          ariaLabel: 'Call in Salesforce: move this call to the browser',
          title: state.device.registered ? 'Move this call from your other phone into the browser' : (state.device.error ?? 'The browser phone is not registered'),
        })
      : null,
    busy('move') ? note('Ringing this browser…', 'moving') : null,
    answered && !parked ? assignmentRow(state, call, a) : null,
    x.panel === 'keypad' && answered ? keypadPanel(state, call, a) : null,
    x.panel === 'transfer' && answered && !x.transfer ? transferPanel(state, call, a) : null,
    x.panel === 'notes' ? notesPanel(state, call, a) : null,
    x.panel === 'assign' ? assignPanel(state, call, a) : null,
    parked ? null : button(call.state === 'ringing' ? 'Cancel call' : 'Hang up', { testid: 'hangup', variant: 'destructive', stretch: true, disabled: busy('hangup'), onclick: () => a.hangup(call.id) }),
  );
}

export function keypadPanel(state, call, a) {
  const x = state.extras[call.id];
  return h(
    'div',
    { class: 'sb-panel', 'data-testid': 'keypad', role: 'group', 'aria-label': 'Keypad' },
    h('output', { class: 'sb-keypad__digits', 'data-testid': 'keypad-digits', 'aria-live': 'polite' }, x.drafts.keypad || ' '),
    h('div', { class: 'sb-pad' }, KEYS.map((k) => button(padLabel(k), { testid: keyTestId('keypad-key', k), onclick: () => a.dtmf(call.id, k), ariaLabel: `Send ${k}`, extra: { class: 'sb-pad__key' } }))),
  );
}

export function padLabel(k) {
  return [h('span', { class: 'sb-pad__digit' }, k), h('span', { class: 'sb-pad__letters', 'aria-hidden': 'true' }, KEY_LETTERS[k] ?? ' ')];
}

function transferStatus(state, call, a) {
  const t = state.extras[call.id].transfer;
  const consulting = t.phase === 'consulting';
  return h(
    'div',
    { class: 'sb-panel sb-panel--info', 'data-testid': 'transfer-status', 'data-phase': t.phase, 'data-mode': t.mode, role: 'status' },
    h('p', { class: 'sb-text' }, consulting ? `Talking with ${t.label}; the caller is on hold.` : `${t.mode === 'warm' ? 'Calling' : 'Transferring to'} ${t.label}…`),
    h(
      'div',
      { class: 'sb-row sb-row--actions' },
      consulting ? button('Complete transfer', { testid: 'transfer-complete', variant: 'brand', small: true, disabled: !!state.busy[`transfer-complete:${call.id}`], onclick: () => a.completeTransfer(call.id) }) : null,
      button(consulting ? 'Back to caller' : 'Cancel', { testid: 'transfer-cancel', small: true, disabled: !!state.busy[`transfer-cancel:${call.id}`], onclick: () => a.cancelTransfer(call.id) }),
    ),
  );
}

/** F8: who to, then "Transfer now" (blind) or "Talk first" (warm). */
export function transferPanel(state, call, a) {
  const x = state.extras[call.id];
  const dir = state.directory;
  const q = x.drafts.transferTo;
  const entries = q.trim() && dir.q === q ? dir.entries.slice(0, 6) : [];
  const busy = !!state.busy[`transfer:${call.id}`];
  return h(
    'div',
    { class: 'sb-panel', 'data-testid': 'transfer-panel', role: 'group', 'aria-label': 'Transfer' },
    h('input', {
      class: 'sb-input',
      type: 'text',
      'data-testid': 'transfer-input',
      'aria-label': 'Transfer to: extension, number or name',
      placeholder: 'Extension, number or name',
      value: q,
      oninput: (e) => {
        a.ui.setDraft(call.id, { transferTo: e.target.value });
        a.ui.setDirectoryQuery(e.target.value);
        a.searchSoon(e.target.value);
      },
    }),
    entries.length
      ? h(
          'ul',
          { class: 'sb-list' },
          entries.map((e) =>
            h(
              'li',
              { class: 'sb-list__item', key: e.id, 'data-testid': 'transfer-entry', 'data-id': e.id },
              h('div', { class: 'sb-list__main' }, h('span', { class: 'sb-list__title' }, e.name), h('span', { class: 'sb-list__meta' }, [e.kind === 'group' ? 'Group' : null, e.extension ? `ext. ${e.extension}` : null].filter(Boolean).join(' · '))),
              h(
                'div',
                { class: 'sb-list__actions' },
                button('Now', { testid: 'transfer-entry-blind', small: true, disabled: busy, onclick: () => a.transfer(call.id, 'blind', e), ariaLabel: `Transfer now to ${e.name}` }),
                button('Talk first', { testid: 'transfer-entry-warm', small: true, disabled: busy, onclick: () => a.transfer(call.id, 'warm', e), ariaLabel: `Talk to ${e.name} first` }),
              ),
            ),
          ),
        )
      : null,
    h(
      'div',
      { class: 'sb-row sb-row--actions' },
      button('Transfer now', { testid: 'transfer-blind', variant: 'brand', small: true, disabled: busy || !q.trim(), onclick: () => a.transfer(call.id, 'blind') }),
      button('Talk first', { testid: 'transfer-warm', small: true, disabled: busy || !q.trim(), onclick: () => a.transfer(call.id, 'warm') }),
    ),
  );
}

/** F12: notes, during or after the call. */
export function notesPanel(state, call, a) {
  const x = state.extras[call.id];
  const log = (e) => {
    e?.preventDefault?.();
    a.addNote(call.id);
  };
  return h(
    'div',
    { class: 'sb-panel', 'data-testid': 'notes', role: 'group', 'aria-label': 'Notes' },
    x.notes.length
      ? h(
          'ul',
          { class: 'sb-notes' },
          x.notes.map((n) =>
            h(
              'li',
              { class: `sb-notes__item is-${n.state}`, key: n.localId, 'data-testid': 'note', 'data-state': n.state },
              h('span', { class: 'sb-notes__text' }, n.text),
              n.state === 'logged' ? badge('Logged', 'success') : n.state === 'sending' ? badge('Saving…', 'default') : null,
              n.state === 'failed'
                ? h('span', {}, badge('Not saved', 'error', null, { title: n.detail ?? '' }), button('Retry', { testid: 'note-retry', small: true, variant: 'text', onclick: () => a.retryNote(call.id, n.localId) }))
                : null,
            ),
          ),
        )
      : null,
    h(
      'form',
      { class: 'sb-notes__form', onsubmit: log },
      h('textarea', {
        class: 'sb-textarea',
        rows: '2',
        'data-testid': 'note-input',
        'aria-label': 'Note for this call',
        placeholder: 'A note for the call’s Task',
        maxlength: '32000',
        value: x.drafts.note,
        oninput: (e) => a.ui.setDraft(call.id, { note: e.target.value }),
        onkeydown: (e) => {
          if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) log(e);
        },
      }),
      button('Log', { testid: 'note-log', variant: 'brand', small: true, type: 'submit', disabled: !x.drafts.note.trim(), onclick: log }),
    ),
  );
}
