// F2: the agent's settings, and sign-out.

import { h } from './dom.js';
import { badge, button, note } from './parts.js';

export function settingsPanel(state, a) {
  const s = state.settings;
  const me = state.me;
  const saving = state.settingsSaving;
  const toggle = (testid, label, hint, key) =>
    h(
      'label',
      { class: 'sb-checkbox' },
      h('input', { type: 'checkbox', 'data-testid': testid, checked: !!s?.[key], disabled: !s || saving, onchange: (e) => a.saveSettings({ [key]: e.target.checked }) }),
      h('span', { class: 'sb-checkbox__label' }, label, h('span', { class: 'sb-checkbox__hint' }, hint)),
    );
  const relation = (value, label) =>
    h(
      'label',
      { class: 'sb-radio' },
      h('input', { type: 'radio', name: 'call-relation', value, 'data-testid': `setting-relation-${value}`, checked: s?.call_relation === value, disabled: !s || saving, onchange: () => a.saveSettings({ call_relation: value }) }),
      h('span', {}, label),
    );
  return h(
    'section',
    { class: 'sb-card sb-settings', 'data-testid': 'settings', 'aria-labelledby': 'settings-title' },
    h('div', { class: 'sb-section-title' }, h('h2', { id: 'settings-title' }, 'Settings'), button('Close', { testid: 'settings-close', small: true, variant: 'text', onclick: () => a.ui.toggleSettings() })),
    me
      ? h(
          'div',
          { class: 'sb-me', 'data-testid': 'me' },
          h('div', { class: 'sb-list__title' }, me.name),
          h('div', { class: 'sb-list__meta' }, [me.extension ? `ext. ${me.extension}` : null, me.role === 'admin' ? 'admin' : null].filter(Boolean).join(' · ')),
          badge(me.salesforce_connected ? 'Salesforce connected' : 'Salesforce not connected', me.salesforce_connected ? 'success' : 'warning', 'salesforce-connected'),
        )
      : null,
    s ? null : note('Loading settings…', 'settings-loading'),
    h(
      'fieldset',
      { class: 'sb-fieldset' },
      h('legend', {}, 'Privacy and Tasks'),
      toggle('setting-privacy', 'Privacy mode', 'Calls are logged without numbers or recording links.', 'privacy_mode'),
      toggle('setting-open-task', 'Open the Task after the call', 'Shows the call’s Task in Salesforce once it is logged.', 'open_task_after_call'),
    ),
    h('fieldset', { class: 'sb-fieldset', role: 'radiogroup' }, h('legend', {}, 'Relate calls to'), relation('none', 'Nothing'), relation('case', 'Cases'), relation('opportunity', 'Opportunities')),
    saving ? note('Saving…', 'settings-saving') : null,
    h(
      'div',
      { class: 'sb-fieldset' },
      h('div', { class: 'sb-list__meta', 'data-testid': 'device-info' }, state.device.registered ? `This browser is one of your phones (device ${state.device.deviceId}).` : (state.device.error ?? 'This browser is not registered as a phone.')),
    ),
    button('Sign out', { testid: 'sign-out', variant: 'destructive', small: true, onclick: () => a.signOut() }),
  );
}
