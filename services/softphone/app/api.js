// A thin client of the gateway's agent API under /v1.
//
// Every error becomes an ApiError carrying the RFC 9457 problem's stable
// `code` and its `detail` (what the agent is shown). POST and PUT carry an
// `Idempotency-Key`: one per user action, reused by the retries of that
// action, so a retried request never acts twice. Network failures, 503s
// and 429s with a short Retry-After and 409 `request_in_progress` are
// retried a couple of times with the same key. Housekeeping POSTs
// (stream tickets, the browser phone's registration, sign-out) carry none.

import { randomId } from './util.js';

export class ApiError extends Error {
  constructor({ status = 0, code = 'error', detail = '', title = '', retryAfterSecs = null } = {}) {
    super(detail || title || code);
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
    this.detail = detail || title || code;
    this.title = title;
    this.retryAfterSecs = retryAfterSecs;
  }
}

/** Statuses worth another try with the same key. */
function retryable(err) {
  if (err.code === 'network') return true;
  if (err.code === 'request_in_progress') return true;
  if (err.status === 429 || err.status === 503) return (err.retryAfterSecs ?? 1) <= 5;
  return false;
}

async function problemOf(response) {
  const status = response.status;
  const retryHeader = Number(response.headers?.get?.('retry-after'));
  const contentType = response.headers?.get?.('content-type') ?? '';
  let body = null;
  if (/json/i.test(contentType)) {
    try {
      body = await response.json();
    } catch {
      body = null;
    }
  }
  if (body && typeof body === 'object') {
    return new ApiError({
      status,
      code: typeof body.code === 'string' ? body.code : `http_${status}`,
      detail: typeof body.detail === 'string' ? body.detail : '',
      title: typeof body.title === 'string' ? body.title : response.statusText ?? '',
      retryAfterSecs: typeof body.retry_after_secs === 'number' ? body.retry_after_secs : Number.isFinite(retryHeader) && retryHeader > 0 ? retryHeader : null,
    });
  }
  const reason = response.statusText || 'error';
  return new ApiError({
    status,
    code: `http_${status}`,
    detail: `The gateway answered ${status} ${reason}.`,
    title: reason,
    retryAfterSecs: Number.isFinite(retryHeader) && retryHeader > 0 ? retryHeader : null,
  });
}

/**
 * @param {object} o
 * @param {string} o.base the gateway's base URL (no trailing slash)
 * @param {typeof fetch} o.fetch
 * @param {() => string|null} o.getToken
 * @param {(err: ApiError) => void} [o.onUnauthorized] called on any 401
 * @param {() => string} [o.newKey] makes Idempotency-Keys
 * @param {(ms: number) => Promise<void>} [o.sleep]
 * @param {number} [o.retries]
 */
export function createApi({ base, fetch, getToken, onUnauthorized = () => {}, newKey = () => randomId(), sleep = (ms) => new Promise((r) => setTimeout(r, ms)), retries = 2 }) {
  function url(path, query) {
    let u = `${base}${path}`;
    if (query) {
      const qs = new URLSearchParams();
      for (const [k, v] of Object.entries(query)) {
        if (v !== undefined && v !== null && v !== '') qs.set(k, String(v));
      }
      const s = qs.toString();
      if (s) u += `?${s}`;
    }
    return u;
  }

  /**
   * One request. `body` undefined sends no body; `key` is the
   * Idempotency-Key (made here for POST/PUT when not given).
   */
  async function request(method, path, { body, query, key, keepalive = false, auth = true, retry = true, idempotent = true } = {}) {
    const headers = { Accept: 'application/json, application/problem+json' };
    if (auth) {
      const token = getToken();
      if (token) headers.Authorization = `Bearer ${token}`;
    }
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    if ((method === 'POST' || method === 'PUT') && idempotent) headers['Idempotency-Key'] = key ?? newKey();
    const init = { method, headers, keepalive };
    if (body !== undefined) init.body = JSON.stringify(body);
    const target = url(path, query);
    for (let attempt = 0; ; attempt++) {
      let err;
      try {
        const response = await fetch(target, init);
        if (response.ok) {
          if (response.status === 204) return null;
          const text = await response.text();
          if (!text) return null;
          try {
            return JSON.parse(text);
          } catch {
            return text;
          }
        }
        err = await problemOf(response);
      } catch (e) {
        err = e instanceof ApiError ? e : new ApiError({ status: 0, code: 'network', detail: 'The gateway could not be reached; check the network connection.' });
      }
      if (err.status === 401) {
        onUnauthorized(err);
        throw err;
      }
      if (!retry || attempt >= retries || !retryable(err)) throw err;
      const waitMs = err.retryAfterSecs ? err.retryAfterSecs * 1000 : 500 * 2 ** attempt;
      await sleep(waitMs);
    }
  }

  const enc = encodeURIComponent;
  const post = (path, body, key) => request('POST', path, { body, key });

  return {
    request,
    /** Where "Connect with Salesforce" sends the browser. */
    loginUrl: (returnTo) => url('/v1/auth/salesforce/login', { return_to: returnTo }),
    logout: () => request('POST', '/v1/auth/logout', { idempotent: false, retry: false }),

    me: () => request('GET', '/v1/me'),
    settings: () => request('GET', '/v1/me/settings'),
    putSettings: (s, key) =>
      request('PUT', '/v1/me/settings', { body: { privacy_mode: !!s.privacy_mode, open_task_after_call: !!s.open_task_after_call, call_relation: s.call_relation }, key }),
    callerIds: () => request('GET', '/v1/me/caller-ids'),
    directory: (q, cursor, limit = 50) => request('GET', '/v1/directory', { query: { q: q ?? '', cursor, limit } }),
    streamTicket: () => request('POST', '/v1/stream-tickets', { idempotent: false }),

    calls: () => request('GET', '/v1/calls'),
    call: (id) => request('GET', `/v1/calls/${enc(id)}`),
    placeCall: ({ to, caller_id, device_id }, key) => post('/v1/calls', { to, ...(caller_id ? { caller_id } : {}), ...(device_id ? { device_id } : {}) }, key),
    answer: (id, deviceId, key) => post(`/v1/calls/${enc(id)}/answer`, deviceId ? { device_id: deviceId } : {}, key),
    decline: (id, key) => post(`/v1/calls/${enc(id)}/decline`, undefined, key),
    screen: (id, key) => post(`/v1/calls/${enc(id)}/screen`, undefined, key),
    pickUp: (id, key) => post(`/v1/calls/${enc(id)}/pick-up`, undefined, key),
    hangup: (id, key) => post(`/v1/calls/${enc(id)}/hangup`, undefined, key),
    hold: (id, on, key) => post(`/v1/calls/${enc(id)}/hold`, { on: !!on }, key),
    mute: (id, on, key) => post(`/v1/calls/${enc(id)}/mute`, { on: !!on }, key),
    dtmf: (id, digits, key) => post(`/v1/calls/${enc(id)}/dtmf`, { digits }, key),
    recording: (id, action, key) => post(`/v1/calls/${enc(id)}/recording`, { action }, key),
    move: (id, deviceId, key) => post(`/v1/calls/${enc(id)}/move`, deviceId ? { device_id: deviceId } : {}, key),
    transfer: (id, to, mode, key) => post(`/v1/calls/${enc(id)}/transfer`, { to, mode }, key),
    completeTransfer: (id, key) => post(`/v1/calls/${enc(id)}/transfer/complete`, undefined, key),
    cancelTransfer: (id, key) => post(`/v1/calls/${enc(id)}/transfer/cancel`, undefined, key),
    park: (id, key) => post(`/v1/calls/${enc(id)}/park`, undefined, key),
    parked: () => request('GET', '/v1/parked'),
    retrieve: (slot, key) => post(`/v1/parked/${enc(slot)}/retrieve`, undefined, key),
    rate: (id, score, comment, key) => post(`/v1/calls/${enc(id)}/rating`, { score, comment: comment ?? '' }, key),
    addNote: (id, text, key) => post(`/v1/calls/${enc(id)}/notes`, { text }, key),

    matches: (id) => request('GET', `/v1/calls/${enc(id)}/matches`),
    relate: (id, recordId, key) => request('PUT', `/v1/calls/${enc(id)}/related`, { body: { record_id: recordId }, key }),
    assign: (id, body, key) => request('PUT', `/v1/calls/${enc(id)}/assignment`, { body, key }),
    cases: (query) => request('GET', '/v1/salesforce/cases', { query }),
    opportunities: (query) => request('GET', '/v1/salesforce/opportunities', { query }),

    recordings: (query) => request('GET', '/v1/recordings', { query }),

    // The browser phone (WebRTC); see README "WebRTC contract".
    registerSoftphone: (instance) => request('POST', '/v1/softphone', { body: { instance }, idempotent: false, retry: false }),
    unregisterSoftphone: (instance) => request('DELETE', `/v1/softphone/${enc(instance)}`, { keepalive: true, retry: false }),
    answerLeg: (legId, sdp, key) => post(`/v1/webrtc/legs/${enc(legId)}/answer`, { sdp }, key),
    offerLeg: (legId, sdp, key) => post(`/v1/webrtc/legs/${enc(legId)}/offer`, { sdp }, key),
    declineLeg: (legId, key) => post(`/v1/webrtc/legs/${enc(legId)}/decline`, undefined, key),
  };
}
