// The whole page as a function of the state.

import { h } from './dom.js';
import { badge, button, note } from './parts.js';
import { callCard, incomingCard } from './call.js';
import { wrapupCard } from './wrapup.js';
import { dialer, directory, parked, recent, recordings, tabBar } from './tabs.js';
import { settingsPanel } from './settings.js';
import { focusedCall, incomingCalls, isFinished, liveCalls, otherName } from '../state.js';

const STREAM = {
  open: ['Online', 'success'],
  connecting: ['Connecting…', 'default'],
  waiting: ['Reconnecting…', 'warning'],
  stopped: ['Offline', 'error'],
  idle: ['Offline', 'default'],
};

function header(state, a) {
  const [label, variant] = STREAM[state.stream.state] ?? STREAM.idle;
  const live = state.stream.state === 'open' && !state.synced ? ['Connecting…', 'default'] : [label, variant];
  return h(
    'header',
    { class: 'sb-header' },
    h('div', { class: 'sb-header__who' }, h('span', { class: 'sb-avatar', 'aria-hidden': 'true' }, initials(state.me?.name)), h('span', { class: 'sb-header__name', 'data-testid': 'agent-name' }, state.me?.name ?? 'Switchboard')),
    h(
      'div',
      { class: 'sb-header__status' },
      state.session ? badge(live[0], live[1], 'stream-status', { 'data-state': state.stream.state, title: state.stream.reason ?? '' }) : null,
      state.session
        ? badge(state.device.registered ? 'Browser phone' : 'No browser phone', state.device.registered ? 'brand' : 'default', 'device-status', {
            'data-state': state.device.registered ? 'registered' : 'unregistered',
            title: state.device.error ?? (state.device.registered ? 'Calls ring in this browser' : ''),
          })
        : null,
      state.session ? button('⚙', { testid: 'settings-button', variant: 'icon', ariaLabel: 'Settings', pressed: state.ui.settingsOpen, onclick: () => a.ui.toggleSettings() }) : null,
    ),
  );
}

function initials(name) {
  if (!name) return '☎';
  return name
    .split(/\s+/)
    .filter(Boolean)
    .slice(0, 2)
    .map((w) => w[0].toUpperCase())
    .join('');
}

function errors(state, a) {
  if (!state.errors.length) return null;
  return h(
    'div',
    { class: 'sb-errors', role: 'alert' },
    state.errors.map((e) =>
      h(
        'div',
        { class: 'sb-alert', key: `err-${e.id}`, 'data-testid': 'error', 'data-code': e.code ?? '' },
        h('span', { class: 'sb-alert__text', 'data-testid': 'error-detail' }, e.detail),
        button('×', { testid: 'error-dismiss', variant: 'icon-inverse', ariaLabel: 'Dismiss', onclick: () => a.ui.dismissError(e.id) }),
      ),
    ),
  );
}

function signin(state, a) {
  return h(
    'section',
    { class: 'sb-card sb-signin', 'data-testid': 'signin' },
    h('h2', {}, 'Phone'),
    h('p', { class: 'sb-text' }, 'Connect your phone account with Salesforce to call and take calls here.'),
    state.signin.error ? h('div', { class: 'sb-alert', role: 'alert', 'data-testid': 'signin-error', 'data-code': state.signin.error }, state.signin.description) : null,
    button('Connect with Salesforce', { testid: 'signin-button', variant: 'brand', stretch: true, onclick: () => a.signIn() }),
  );
}

function otherCalls(state, focused, a) {
  const others = liveCalls(state).filter((c) => c.id !== focused?.id);
  if (!others.length) return null;
  return h(
    'div',
    { class: 'sb-others', 'data-testid': 'other-calls', role: 'group', 'aria-label': 'Your other calls' },
    others.map((c) =>
      button(`${otherName(c)} · ${c.state === 'answered' ? (c.held ? 'on hold' : 'connected') : c.state}`, { testid: 'other-call', small: true, extra: { 'data-call-id': c.id, key: c.id }, onclick: () => a.ui.focus(c.id) }),
    ),
  );
}

function main(state, a) {
  if (!state.session) return signin(state, a);
  if (state.ui.settingsOpen) return settingsPanel(state, a);
  const incoming = incomingCalls(state);
  const focused = focusedCall(state);
  const tab = state.ui.tab;
  const tabs = { dialer, directory, parked, recent, recordings };
  return [
    incoming.map((c) => incomingCard(state, c, a)),
    focused ? (isFinished(state, focused) ? wrapupCard(state, focused, a) : callCard(state, focused, a)) : null,
    otherCalls(state, focused, a),
    focused
      ? null
      : h(
          'div',
          { class: 'sb-card sb-card--tabs' },
          tabBar(state, a),
          h('div', { class: 'sb-tabs__panel', role: 'tabpanel', id: `panel-${tab}`, 'aria-labelledby': `tab-${tab}`, 'data-testid': `panel-${tab}` }, (tabs[tab] ?? dialer)(state, a)),
        ),
    state.synced || state.stream.state !== 'open' ? null : note('Loading your calls…', 'loading-calls'),
  ];
}

export function view(state, a) {
  return h(
    'div',
    { class: 'sb-app', 'data-testid': 'app', 'data-signed-in': state.session ? 'true' : 'false' },
    header(state, a),
    errors(state, a),
    h('div', { class: 'sb-sr-only', 'aria-live': 'polite', 'aria-atomic': 'true', 'data-testid': 'announcer' }, state.announcement.text),
    h('main', { class: 'sb-main', id: 'main' }, main(state, a)),
  );
}
