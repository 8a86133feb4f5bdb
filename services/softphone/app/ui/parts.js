// Small building blocks in the look of the Lightning Design System.

import { h } from './dom.js';

/**
 * A button. `variant`: neutral (default), brand, destructive, success, text.
 * Toggles pass `pressed` (rendered as aria-pressed).
 */
export function button(label, { testid, onclick, variant = 'neutral', disabled = false, pressed, ariaLabel, title, small = false, stretch = false, type = 'button', extra = {} } = {}) {
  const { class: extraClass, ...rest } = extra;
  const cls = ['sb-button', `sb-button--${variant}`, small ? 'sb-button--small' : '', stretch ? 'sb-button--stretch' : '', pressed ? 'is-pressed' : '', extraClass ?? ''].filter(Boolean).join(' ');
  return h(
    'button',
    {
      type,
      class: cls,
      'data-testid': testid,
      onclick: disabled ? null : onclick,
      disabled,
      'aria-pressed': pressed === undefined ? null : String(!!pressed),
      'aria-label': ariaLabel ?? null,
      title: title ?? ariaLabel ?? null,
      ...rest,
    },
    label,
  );
}

/** A badge: default, success, warning, error, inverse, brand. */
export function badge(text, variant = 'default', testid, extra = {}) {
  return h('span', { class: `sb-badge sb-badge--${variant}`, 'data-testid': testid, ...extra }, text);
}

/** A labelled form row. */
export function field(label, control, { id, hint } = {}) {
  return h('div', { class: 'sb-field' }, h('label', { class: 'sb-field__label', for: id }, label), control, hint ? h('div', { class: 'sb-field__hint' }, hint) : null);
}

export function spinner(label = 'Loading') {
  return h('span', { class: 'sb-spinner', role: 'status', 'aria-label': label });
}

export function sectionTitle(text, extra = null) {
  return h('div', { class: 'sb-section-title' }, h('h3', {}, text), extra);
}

/** An empty-state or inline message. */
export function note(text, testid, variant = 'weak') {
  return h('p', { class: `sb-text sb-text--${variant}`, 'data-testid': testid }, text);
}
