// After the call: how it ended, its Task's sync status, recordings to
// play back (F6, F9), notes (F12), assignment (F10, F11), the rating
// (F17), and Done.

import { h } from './dom.js';
import { badge, button, note, spinner } from './parts.js';
import { notesPanel } from './call.js';
import { assignmentRow, assignPanel, matchChooser, matchTag, syncStatus } from './salesforce.js';
import { otherName, otherNumber } from '../state.js';
import { formatDuration, formatNumber } from '../util.js';

const END_LABEL = {
  completed: 'Call ended',
  cancelled: 'Caller hung up',
  no_answer: 'No answer',
  busy: 'Busy or declined',
  failed: 'Call failed',
  voicemail: 'Voicemail',
};

export function endLabel(state, call) {
  const x = state.extras[call.id] ?? {};
  if (x.handedOver) return 'Transferred';
  if (x.gone && !call.end_reason) return 'Call ended';
  return END_LABEL[call.end_reason] ?? 'Call ended';
}

export function recordingsBlock(items, { testid = 'recordings', onExpired } = {}) {
  return h(
    'ul',
    { class: 'sb-list', 'data-testid': testid },
    items.map((r) =>
      h(
        'li',
        { class: 'sb-list__item sb-list__item--stack', key: r.id, 'data-testid': 'recording', 'data-recording-id': r.id, 'data-kind': r.kind },
        h('div', { class: 'sb-list__meta' }, `${r.kind === 'voicemail' ? 'Voicemail' : 'Recording'} · ${formatDuration(r.duration_ms)}`),
        h('audio', {
          class: 'sb-audio',
          controls: true,
          preload: 'none',
          src: r.playback_url,
          'data-testid': 'recording-audio',
          'aria-label': `${r.kind === 'voicemail' ? 'Voicemail' : 'Recording'}, ${formatDuration(r.duration_ms)}`,
          onerror: onExpired ? () => onExpired(r) : null,
        }),
      ),
    ),
  );
}

function ratingBlock(state, call, a) {
  const x = state.extras[call.id];
  const sent = x.rating?.state === 'sent';
  const score = sent ? x.rating.score : Number(x.drafts.ratingScore) || 0;
  return h(
    'div',
    { class: 'sb-panel', 'data-testid': 'rating', 'data-state': x.rating?.state ?? 'none' },
    h('h4', { class: 'sb-panel__title', id: `rate-${call.id}` }, sent ? 'Thanks for rating the call' : 'How was the call quality?'),
    h(
      'div',
      { class: 'sb-stars', role: 'radiogroup', 'aria-labelledby': `rate-${call.id}` },
      [1, 2, 3, 4, 5].map((n) =>
        h(
          'button',
          {
            type: 'button',
            class: `sb-star${n <= score ? ' is-on' : ''}`,
            role: 'radio',
            'aria-checked': String(n === score),
            'aria-label': `${n} star${n > 1 ? 's' : ''}`,
            'data-testid': `rating-star-${n}`,
            disabled: sent,
            onclick: sent ? null : () => a.ui.setDraft(call.id, { ratingScore: n }),
          },
          n <= score ? '★' : '☆',
        ),
      ),
    ),
    sent
      ? x.rating.comment
        ? note(x.rating.comment, 'rating-comment-sent')
        : null
      : [
          h('input', { class: 'sb-input', 'data-testid': 'rating-comment', 'aria-label': 'Comment on the call quality (optional)', placeholder: 'Comment (optional)', maxlength: '1000', value: x.drafts.ratingComment, oninput: (e) => a.ui.setDraft(call.id, { ratingComment: e.target.value }) }),
          button(x.rating?.state === 'sending' ? 'Sending…' : 'Send rating', { testid: 'rating-send', small: true, variant: 'brand', disabled: !score || x.rating?.state === 'sending', onclick: () => a.rate(call.id) }),
          x.rating?.state === 'failed' ? note(x.rating.detail ?? 'The rating was not saved.', 'rating-error', 'error') : null,
        ],
  );
}

export function wrapupCard(state, call, a) {
  const x = state.extras[call.id];
  const talk = call.answered_at_ms && call.ended_at_ms ? call.ended_at_ms - call.answered_at_ms : null;
  const recs = x.recordings;
  const hasAudio = (call.recording_ids?.length ?? 0) > 0 || !!call.voicemail_id;
  const number = otherNumber(call);
  return h(
    'section',
    { class: 'sb-card sb-wrapup', key: `wrap-${call.id}`, 'data-testid': 'wrapup', 'data-call-id': call.id, 'aria-label': `After the call with ${otherName(call)}` },
    h(
      'div',
      { class: 'sb-call__head' },
      h('div', { class: 'sb-party' }, h('div', { class: 'sb-party__name', 'data-testid': 'call-party' }, otherName(call)), h('div', { class: 'sb-party__number', 'data-testid': 'call-number' }, formatNumber(number))),
      h('div', { class: 'sb-call__status' }, badge(endLabel(state, call), 'default', 'end-reason', { 'data-reason': x.handedOver ? 'transferred' : (call.end_reason ?? 'unknown') }), talk !== null ? h('span', { class: 'sb-timer', 'data-testid': 'call-duration' }, formatDuration(talk)) : null),
    ),
    matchTag(state, call, a),
    x.panel === 'matches' ? matchChooser(state, call, a) : null,
    syncStatus(call, a),
    hasAudio || recs
      ? h(
          'div',
          { class: 'sb-section' },
          h('h4', { class: 'sb-panel__title' }, 'Recordings'),
          recs?.state === 'loading' && !recs.items.length ? spinner('Loading recordings') : null,
          recs?.state === 'failed' ? h('div', {}, note(recs.detail ?? 'The recordings could not be listed.', 'recordings-error', 'error'), button('Retry', { testid: 'recordings-retry', small: true, variant: 'text', onclick: () => a.loadRecordings(call.id) })) : null,
          recs?.items?.length ? recordingsBlock(recs.items, { onExpired: () => a.loadRecordings(call.id) }) : recs?.state === 'loaded' ? note('The recording is being stored…', 'recordings-empty') : null,
        )
      : null,
    notesPanel(state, call, a),
    assignmentRow(state, call, a),
    x.panel === 'assign' ? assignPanel(state, call, a) : null,
    ratingBlock(state, call, a),
    h(
      'div',
      { class: 'sb-row sb-row--actions' },
      number && number !== 'anonymous' ? button('Call back', { testid: 'call-back', small: true, onclick: () => a.dial(number) }) : null,
      button('Done', { testid: 'wrapup-done', variant: 'brand', small: true, onclick: () => a.ui.dismiss(call.id) }),
    ),
  );
}
