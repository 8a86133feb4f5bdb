// The tabs shown between calls: dialer (F3, F5), directory (F3), parked
// calls (F4), recent calls, and recorded calls / voicemails (F6, F9).

import { h } from './dom.js';
import { badge, button, field, note, spinner } from './parts.js';
import { KEYS, keyTestId, padLabel } from './call.js';
import { recordingsBlock, endLabel } from './wrapup.js';
import { finishedCalls, otherName, otherNumber } from '../state.js';
import { formatDuration, formatNumber, isDialable } from '../util.js';

export const TABS = [
  ['dialer', 'Dial'],
  ['directory', 'Directory'],
  ['parked', 'Parked'],
  ['recent', 'Recent'],
  ['recordings', 'Recorded'],
];

export function tabBar(state, a) {
  const onKey = (e) => {
    const i = TABS.findIndex(([id]) => id === state.ui.tab);
    let j = null;
    if (e.key === 'ArrowRight') j = (i + 1) % TABS.length;
    if (e.key === 'ArrowLeft') j = (i - 1 + TABS.length) % TABS.length;
    if (j === null) return;
    e.preventDefault();
    a.ui.setTab(TABS[j][0]);
    globalThis.document?.querySelector?.(`[data-testid="tab-${TABS[j][0]}"]`)?.focus?.();
  };
  return h(
    'div',
    { class: 'sb-tabs', role: 'tablist', 'aria-label': 'Phone', onkeydown: onKey },
    TABS.map(([id, label]) =>
      h(
        'button',
        {
          type: 'button',
          role: 'tab',
          id: `tab-${id}`,
          class: `sb-tabs__item${state.ui.tab === id ? ' is-active' : ''}`,
          'aria-selected': String(state.ui.tab === id),
          'aria-controls': `panel-${id}`,
          tabindex: state.ui.tab === id ? '0' : '-1',
          'data-testid': `tab-${id}`,
          onclick: () => a.ui.setTab(id),
        },
        label,
      ),
    ),
  );
}

export function dialer(state, a) {
  const ids = state.callerIds.list;
  const number = state.ui.dialNumber;
  const registered = state.device.registered;
  const call = (e) => {
    e?.preventDefault?.();
    a.dial();
  };
  return h(
    'form',
    { class: 'sb-dialer', 'data-testid': 'dialer', onsubmit: call },
    h(
      'div',
      { class: 'sb-grid-2' },
      field(
        'Caller ID',
        h(
          'select',
          { class: 'sb-select', id: 'caller-id', 'data-testid': 'caller-id', disabled: !ids.length, onchange: (e) => a.ui.selectCallerId(e.target.value) },
          ids.length ? ids.map((n) => h('option', { value: n, selected: n === state.selectedCallerId, key: n }, `${formatNumber(n)}${n === state.callerIds.default ? ' (default)' : ''}`)) : h('option', { value: '' }, 'Default'),
        ),
        { id: 'caller-id' },
      ),
      field(
        'Call using',
        h(
          'select',
          { class: 'sb-select', id: 'call-via', 'data-testid': 'call-via', onchange: (e) => a.ui.setCallVia(e.target.value) },
          h('option', { value: 'browser', selected: state.ui.callVia === 'browser', disabled: !registered }, registered ? 'This browser' : 'This browser (not ready)'),
          h('option', { value: 'phones', selected: state.ui.callVia === 'phones' || !registered }, 'My other phones'),
        ),
        { id: 'call-via' },
      ),
    ),
    h(
      'div',
      { class: 'sb-dialer__entry' },
      h('input', {
        class: 'sb-input sb-input--number',
        id: 'dial-input',
        type: 'tel',
        inputmode: 'tel',
        autocomplete: 'off',
        'data-testid': 'dial-input',
        'aria-label': 'Number or extension to call',
        placeholder: 'Number or extension',
        value: number,
        oninput: (e) => a.ui.setDialNumber(e.target.value),
      }),
      button('⌫', { testid: 'dial-backspace', variant: 'text', ariaLabel: 'Delete the last digit', disabled: !number, onclick: () => a.ui.backspace() }),
    ),
    h('div', { class: 'sb-pad' }, KEYS.map((k) => button(padLabel(k), { testid: keyTestId('dial-key', k), ariaLabel: `Dial ${k}`, onclick: () => a.ui.pressDialKey(k), extra: { class: 'sb-pad__key' } }))),
    button(state.busy.dial ? 'Calling…' : 'Call', { testid: 'dial-call', variant: 'success', stretch: true, type: 'submit', disabled: !isDialable(number) || !!state.busy.dial, onclick: call }),
  );
}

export function directory(state, a) {
  const d = state.directory;
  return h(
    'div',
    { class: 'sb-directory', 'data-testid': 'directory' },
    h('input', {
      class: 'sb-input',
      type: 'search',
      'data-testid': 'directory-search',
      'aria-label': 'Search the directory: name, extension, number or group',
      placeholder: 'Name, extension, number or group',
      value: d.q,
      oninput: (e) => {
        a.ui.setDirectoryQuery(e.target.value);
        a.searchSoon(e.target.value);
      },
    }),
    d.state === 'loading' && !d.entries.length ? spinner('Searching') : null,
    d.state === 'failed' ? note(d.detail, 'directory-error', 'error') : null,
    d.state === 'loaded' && !d.entries.length ? note('Nobody found.', 'directory-empty') : null,
    h(
      'ul',
      { class: 'sb-list' },
      d.entries.map((e) => {
        const target = e.extension || e.numbers?.[0];
        return h(
          'li',
          { class: 'sb-list__item', key: e.id, 'data-testid': 'directory-entry', 'data-id': e.id, 'data-kind': e.kind },
          h(
            'div',
            { class: 'sb-list__main' },
            h('span', { class: 'sb-list__title' }, e.name, ' ', e.kind === 'group' ? badge('Group', 'default') : null),
            h('span', { class: 'sb-list__meta' }, [e.extension ? `ext. ${e.extension}` : null, ...(e.numbers ?? []).map(formatNumber), e.groups?.length ? e.groups.join(', ') : null].filter(Boolean).join(' · ')),
          ),
          h('div', { class: 'sb-list__actions' }, target ? button('Call', { testid: 'directory-call', small: true, variant: 'success', onclick: () => a.dial(target), ariaLabel: `Call ${e.name}` }) : null),
        );
      }),
    ),
    d.nextCursor ? button('More', { testid: 'directory-more', small: true, variant: 'text', onclick: () => a.searchDirectory(d.q, { more: true }) }) : null,
  );
}

export function parked(state, a) {
  const p = state.parked;
  return h(
    'div',
    { class: 'sb-parked', 'data-testid': 'parked' },
    h('div', { class: 'sb-section-title' }, h('h3', {}, 'Parked calls'), button('Refresh', { testid: 'parked-refresh', small: true, variant: 'text', onclick: () => a.loadParked() })),
    p.state === 'loading' && !p.items.length ? spinner('Loading parked calls') : null,
    p.state === 'failed' ? note(p.detail, 'parked-error', 'error') : null,
    p.state === 'loaded' && !p.items.length ? note('No call is parked.', 'parked-empty') : null,
    h(
      'ul',
      { class: 'sb-list' },
      p.items.map((c) =>
        h(
          'li',
          { class: 'sb-list__item', key: String(c.slot), 'data-testid': 'parked-call', 'data-slot': String(c.slot), 'data-call-id': c.call_id },
          h(
            'div',
            { class: 'sb-list__main' },
            h('span', { class: 'sb-list__title' }, `Slot ${c.slot} · ${formatNumber(c.customer_number)}`),
            h('span', { class: 'sb-list__meta' }, `${c.parked_by && c.parked_by === state.me?.user_id ? 'Parked by you' : 'Parked'} · ${formatDuration((state.now || c.parked_at_ms) - c.parked_at_ms)}`),
          ),
          h('div', { class: 'sb-list__actions' }, button('Retrieve', { testid: 'retrieve', small: true, variant: 'brand', disabled: !!state.busy[`retrieve:${c.slot}`], onclick: () => a.retrieve(c.slot), ariaLabel: `Retrieve the call parked in slot ${c.slot}` })),
        ),
      ),
    ),
  );
}

export function recent(state, a) {
  const calls = finishedCalls(state);
  return h(
    'div',
    { class: 'sb-recent', 'data-testid': 'recent' },
    calls.length ? null : note('Calls of this session show here.', 'recent-empty'),
    h(
      'ul',
      { class: 'sb-list' },
      calls.map((c) =>
        h(
          'li',
          { class: 'sb-list__item', key: c.id, 'data-testid': 'recent-call', 'data-call-id': c.id },
          h(
            'div',
            { class: 'sb-list__main' },
            h('span', { class: 'sb-list__title' }, otherName(c)),
            h('span', { class: 'sb-list__meta' }, `${c.direction === 'outbound' ? 'Outgoing' : 'Incoming'} · ${endLabel(state, c)}${c.salesforce_sync ? ` · ${c.salesforce_sync.state}` : ''}`),
          ),
          h(
            'div',
            { class: 'sb-list__actions' },
            button('Details', { testid: 'recent-open', small: true, variant: 'text', onclick: () => a.ui.focus(c.id) }),
            otherNumber(c) && otherNumber(c) !== 'anonymous' ? button('Call', { testid: 'recent-call-back', small: true, variant: 'success', onclick: () => a.dial(otherNumber(c)) }) : null,
          ),
        ),
      ),
    ),
  );
}

export function recordings(state, a) {
  const r = state.inbox;
  return h(
    'div',
    { class: 'sb-inbox', 'data-testid': 'inbox' },
    h('div', { class: 'sb-section-title' }, h('h3', {}, 'Recorded calls and voicemail'), button('Refresh', { testid: 'inbox-refresh', small: true, variant: 'text', onclick: () => a.loadInbox() })),
    r.state === 'loading' && !r.items.length ? spinner('Loading recordings') : null,
    r.state === 'failed' ? note(r.detail, 'inbox-error', 'error') : null,
    r.state === 'loaded' && !r.items.length ? note('No recordings yet.', 'inbox-empty') : null,
    r.items.length ? recordingsBlock(r.items, { testid: 'inbox-list', onExpired: () => a.loadInbox() }) : null,
    r.nextCursor ? button('More', { testid: 'inbox-more', small: true, variant: 'text', onclick: () => a.loadInbox({ more: true }) }) : null,
  );
}
