// Small helpers shared by the modules; no DOM, no globals at import time.

/** A random id (UUID v4 when the platform has one). */
export function randomId(cryptoImpl = globalThis.crypto) {
  if (cryptoImpl && typeof cryptoImpl.randomUUID === 'function') return cryptoImpl.randomUUID();
  const bytes = new Uint8Array(16);
  if (cryptoImpl && typeof cryptoImpl.getRandomValues === 'function') cryptoImpl.getRandomValues(bytes);
  else for (let i = 0; i < 16; i++) bytes[i] = Math.floor(Math.random() * 256);
  bytes[6] = (bytes[6] & 0x0f) | 0x40;
  bytes[8] = (bytes[8] & 0x3f) | 0x80;
  const hex = Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

/** What the dialler accepts as typed: digits, *, #, a leading + and separators. */
export function cleanDialString(raw) {
  const s = String(raw ?? '').replace(/[\s\-.()]/g, '');
  let out = '';
  for (const [i, c] of [...s].entries()) {
    if (/[0-9*#]/.test(c) || (c === '+' && i === 0)) out += c;
  }
  return out.slice(0, 32);
}

/** Whether the gateway will take `raw` as a number to dial (mirrors `dialable` in calls.rs). */
export function isDialable(raw) {
  const s = String(raw ?? '').replace(/[\s\-.()]/g, '');
  return s.length > 0 && s.length <= 32 && s !== '+' && /^\+?[0-9*#]+$/.test(s);
}

/** A number for people: +1 NANP numbers grouped, everything else as it is. */
export function formatNumber(n) {
  if (!n) return '';
  const m = /^\+1(\d{3})(\d{3})(\d{4})$/.exec(n);
  if (m) return `+1 (${m[1]}) ${m[2]}-${m[3]}`;
  return n;
}

/** m:ss or h:mm:ss. */
export function formatDuration(ms) {
  const total = Math.max(0, Math.floor((ms ?? 0) / 1000));
  const h = Math.floor(total / 3600);
  const m = Math.floor((total % 3600) / 60);
  const s = total % 60;
  const ss = String(s).padStart(2, '0');
  return h > 0 ? `${h}:${String(m).padStart(2, '0')}:${ss}` : `${m}:${ss}`;
}

/** The Salesforce object of a record id, by its key prefix (as context.rs). */
export function objectOfId(id) {
  if (typeof id !== 'string' || !/^[A-Za-z0-9]{15}([A-Za-z0-9]{3})?$/.test(id)) return null;
  return { '003': 'Contact', '00Q': 'Lead', '001': 'Account', '500': 'Case', '006': 'Opportunity', '00T': 'Task' }[id.slice(0, 3)] ?? null;
}

export function debounce(fn, ms, timers = globalThis) {
  let handle = null;
  const wrapped = (...args) => {
    if (handle !== null) timers.clearTimeout(handle);
    handle = timers.setTimeout(() => {
      handle = null;
      fn(...args);
    }, ms);
  };
  wrapped.cancel = () => {
    if (handle !== null) timers.clearTimeout(handle);
    handle = null;
  };
  return wrapped;
}
