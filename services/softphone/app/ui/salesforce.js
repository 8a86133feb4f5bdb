// Salesforce context of a call: the caller match tag and chooser (F14,
// F15), Case / Opportunity assignment (F10, F11), and the Task's sync
// status (`call.synced`).

import { h } from './dom.js';
import { badge, button, note, spinner } from './parts.js';
import { objectOfId } from '../util.js';

const RELATABLE = new Set(['Contact', 'Lead', 'Account']);

/** The tag under the number: who the caller is, or how the lookup went. */
export function matchTag(state, call, a) {
  if (call.direction === 'internal') return null;
  const x = state.extras[call.id] ?? {};
  const m = call.caller_matches;
  const children = [];
  if (call.related) {
    children.push(
      button(`${call.related.object} · ${call.related.name}`, {
        testid: 'match-tag',
        variant: 'tag',
        small: true,
        onclick: () => a.openRecord(call.related.record_id),
        ariaLabel: `Open ${call.related.object} ${call.related.name} in Salesforce`,
        extra: { 'data-record-id': call.related.record_id },
      }),
    );
    if (m?.matches?.length > 1) children.push(button('Change', { testid: 'match-choose', variant: 'text', small: true, onclick: () => a.ui.togglePanel(call.id, 'matches') }));
  } else if (!m) {
    children.push(h('span', { class: 'sb-text sb-text--weak', 'data-testid': 'match-pending' }, 'Looking up in Salesforce…'));
  } else if (m.status === 'found' && m.matches.length === 1) {
    const r = m.matches[0];
    children.push(
      button(`${r.object} · ${r.name}`, {
        testid: 'match-tag',
        variant: 'tag',
        small: true,
        onclick: () => a.openRecord(r.id),
        ariaLabel: `Open ${r.object} ${r.name} in Salesforce`,
        extra: { 'data-record-id': r.id },
      }),
    );
  } else if (m.status === 'found') {
    children.push(
      button(`${m.matches.length} matches — choose`, {
        testid: 'match-choose',
        variant: 'tag',
        small: true,
        pressed: x.panel === 'matches',
        onclick: () => a.ui.togglePanel(call.id, 'matches'),
        ariaLabel: `${m.matches.length} Salesforce records have this number; choose the caller`,
      }),
    );
  } else if (m.status === 'not_found') {
    children.push(h('span', { class: 'sb-text sb-text--weak', 'data-testid': 'match-none' }, 'Not in Salesforce'));
  } else if (m.status === 'not_connected') {
    children.push(h('span', { class: 'sb-text sb-text--weak', 'data-testid': 'match-not-connected' }, 'Salesforce not connected: sign in again to see who is calling'));
  } else if (m.status === 'unavailable') {
    children.push(
      h('span', { class: 'sb-text sb-text--weak', 'data-testid': 'match-unavailable' }, 'Salesforce lookup failed '),
      button('Retry', { testid: 'match-retry', variant: 'text', small: true, disabled: x.matchesState === 'loading', onclick: () => a.refreshMatches(call.id) }),
    );
  }
  return h('div', { class: 'sb-match', 'data-testid': 'caller-match', 'data-status': call.related ? 'related' : (m?.status ?? 'pending') }, children);
}

/** F15: several records share the number; the agent picks the caller. */
export function matchChooser(state, call, a) {
  const m = call.caller_matches;
  const ctx = state.ui.sfContext;
  const current = ctx?.recordId && RELATABLE.has(ctx.objectType ?? objectOfId(ctx.recordId)) ? ctx : null;
  const busy = !!state.busy[`relate:${call.id}`];
  return h(
    'div',
    { class: 'sb-panel', 'data-testid': 'match-chooser', role: 'group', 'aria-label': 'Choose the caller' },
    h('h4', { class: 'sb-panel__title' }, 'Who is calling?'),
    h(
      'ul',
      { class: 'sb-list' },
      (m?.matches ?? []).map((r) =>
        h(
          'li',
          { class: 'sb-list__item', key: r.id, 'data-testid': 'match-option', 'data-record-id': r.id },
          h('div', { class: 'sb-list__main' }, h('span', { class: 'sb-list__title' }, r.name), h('span', { class: 'sb-list__meta' }, [r.object, r.company, r.phone].filter(Boolean).join(' · '))),
          h(
            'div',
            { class: 'sb-list__actions' },
            button('Open', { testid: 'match-open', small: true, variant: 'text', onclick: () => a.openRecord(r.id), ariaLabel: `Open ${r.name}` }),
            button(call.related?.record_id === r.id ? 'Chosen' : 'Choose', {
              testid: 'match-pick',
              small: true,
              variant: call.related?.record_id === r.id ? 'success' : 'brand',
              disabled: busy,
              onclick: () => a.relate(call.id, r.id),
              ariaLabel: `${r.name} is the caller`,
            }),
          ),
        ),
      ),
    ),
    current && !m?.matches?.some((r) => r.id === current.recordId)
      ? button(`Use the open ${current.objectType ?? 'record'}: ${current.recordName ?? current.recordId}`, { testid: 'relate-current', small: true, disabled: busy, onclick: () => a.relate(call.id, current.recordId) })
      : null,
  );
}

function assignButtonLabel(relation) {
  if (relation === 'case') return 'Assign to Case';
  if (relation === 'opportunity') return 'Assign to Opportunity';
  return 'Assign';
}

/** The assignment as it stands, and the button that opens the panel. */
export function assignmentRow(state, call, a) {
  const x = state.extras[call.id] ?? {};
  const as = call.assignment;
  return h(
    'div',
    { class: 'sb-row sb-row--wrap' },
    as
      ? button(`${as.object} · ${as.name}${as.record_id ? '' : ' (new)'}`, {
          testid: 'assignment',
          variant: 'tag',
          small: true,
          onclick: as.record_id ? () => a.openRecord(as.record_id) : null,
          disabled: !as.record_id,
          ariaLabel: as.record_id ? `Open ${as.object} ${as.name}` : `New Case ${as.name}, created when the call is logged`,
        })
      : null,
    button(as ? 'Change' : assignButtonLabel(state.settings?.call_relation), {
      testid: 'assign-toggle',
      small: true,
      pressed: x.panel === 'assign',
      onclick: () => a.ui.togglePanel(call.id, 'assign'),
    }),
  );
}

/** F10 / F11: search a Case or an Opportunity, or create a Case. */
export function assignPanel(state, call, a) {
  const x = state.extras[call.id];
  const d = x.drafts;
  const kind = d.workKind ?? 'case';
  const work = x.work?.kind === kind ? x.work : null;
  const busy = !!state.busy[`assign:${call.id}`];
  const ctx = state.ui.sfContext;
  const currentType = ctx?.objectType ?? objectOfId(ctx?.recordId);
  const current = ctx?.recordId && ((kind === 'case' && currentType === 'Case') || (kind === 'opportunity' && currentType === 'Opportunity')) ? ctx : null;
  const search = (e) => {
    e?.preventDefault?.();
    a.searchWork(call.id, kind);
  };
  return h(
    'div',
    { class: 'sb-panel', 'data-testid': 'assign-panel', role: 'group', 'aria-label': 'Assign the call' },
    h(
      'div',
      { class: 'sb-segmented', role: 'radiogroup', 'aria-label': 'Assign to' },
      button('Case', { testid: 'assign-kind-case', small: true, pressed: kind === 'case', onclick: () => a.ui.setDraft(call.id, { workKind: 'case' }) }),
      button('Opportunity', { testid: 'assign-kind-opportunity', small: true, pressed: kind === 'opportunity', onclick: () => a.ui.setDraft(call.id, { workKind: 'opportunity' }) }),
    ),
    current ? button(`Assign to the open ${currentType}: ${current.recordName ?? current.recordId}`, { testid: 'assign-current', small: true, disabled: busy, onclick: () => a.assign(call.id, kind === 'case' ? { case_id: current.recordId } : { opportunity_id: current.recordId }) }) : null,
    h(
      'form',
      { class: 'sb-row', onsubmit: search, role: 'search' },
      h('input', {
        class: 'sb-input',
        type: 'search',
        'data-testid': 'assign-search',
        'aria-label': kind === 'case' ? 'Search Cases' : 'Search Opportunities',
        placeholder: kind === 'case' ? 'Case number or subject' : 'Opportunity name',
        value: d.workQuery,
        oninput: (e) => a.ui.setDraft(call.id, { workQuery: e.target.value }),
      }),
      button('Search', { testid: 'assign-search-button', small: true, type: 'submit', onclick: search }),
    ),
    work?.state === 'loading' ? spinner('Searching') : null,
    work?.detail ? note(work.detail, 'assign-message') : null,
    work?.state === 'loaded' && !work.records.length ? note('Nothing found.', 'assign-empty') : null,
    work?.records?.length
      ? h(
          'ul',
          { class: 'sb-list' },
          work.records.map((r) =>
            h(
              'li',
              { class: 'sb-list__item', key: r.id, 'data-testid': 'assign-result', 'data-record-id': r.id },
              h('div', { class: 'sb-list__main' }, h('span', { class: 'sb-list__title' }, r.name), h('span', { class: 'sb-list__meta' }, [r.subject, r.status].filter(Boolean).join(' · '))),
              h(
                'div',
                { class: 'sb-list__actions' },
                button('Assign', {
                  testid: 'assign-pick',
                  small: true,
                  variant: 'brand',
                  disabled: busy,
                  onclick: () => a.assign(call.id, r.object === 'Opportunity' ? { opportunity_id: r.id } : { case_id: r.id }),
                  ariaLabel: `Assign to ${r.object} ${r.name}`,
                }),
              ),
            ),
          ),
        )
      : null,
    kind === 'case'
      ? h(
          'details',
          { class: 'sb-details', 'data-testid': 'new-case' },
          h('summary', {}, 'New Case'),
          h('input', { class: 'sb-input', 'data-testid': 'new-case-subject', 'aria-label': 'New Case subject', placeholder: 'Subject', maxlength: '255', value: d.caseSubject, oninput: (e) => a.ui.setDraft(call.id, { caseSubject: e.target.value }) }),
          h('textarea', { class: 'sb-textarea', 'data-testid': 'new-case-description', 'aria-label': 'New Case description', placeholder: 'Description', rows: '2', value: d.caseDescription, oninput: (e) => a.ui.setDraft(call.id, { caseDescription: e.target.value }) }),
          button('Create and assign', { testid: 'new-case-create', small: true, variant: 'brand', disabled: busy || !d.caseSubject.trim(), onclick: () => a.newCase(call.id) }),
        )
      : null,
  );
}

const SYNC_LABEL = { pending: 'Logging in Salesforce…', synced: 'Logged in Salesforce', failed: 'Not logged in Salesforce', skipped: 'Not logged' };
const SYNC_VARIANT = { pending: 'default', synced: 'success', failed: 'error', skipped: 'warning' };

/** Where the agent's Task of the call is (`call.synced`). */
export function syncStatus(call, a) {
  const s = call.salesforce_sync;
  const state = s?.state ?? 'none';
  return h(
    'div',
    { class: 'sb-sync', 'data-testid': 'sync-status', 'data-state': state },
    badge(s ? SYNC_LABEL[state] ?? state : 'Waiting to be logged', s ? SYNC_VARIANT[state] ?? 'default' : 'default', 'sync-badge'),
    s?.task_id ? button('Open Task', { testid: 'open-task', small: true, variant: 'text', onclick: () => a.openRecord(s.task_id), extra: { 'data-task-id': s.task_id } }) : null,
    s?.detail ? h('div', { class: 'sb-text sb-text--weak', 'data-testid': 'sync-detail' }, s.detail) : null,
    s?.note ? h('div', { class: 'sb-text sb-text--weak', 'data-testid': 'sync-note' }, s.note) : null,
  );
}
