import test from 'node:test';
import assert from 'node:assert/strict';
import { createApi, ApiError } from '../app/api.js';
import { fakeFetch, response } from '../test-support/fakes.mjs';

function client(fetch, extra = {}) {
  let n = 0;
  const sleeps = [];
  const unauthorized = [];
  const api = createApi({
    base: 'https://gw.example.com',
    fetch,
    getToken: () => 'sbs_token',
    newKey: () => `key-${++n}`,
    sleep: async (ms) => sleeps.push(ms),
    onUnauthorized: (e) => unauthorized.push(e),
    ...extra,
  });
  return { api, sleeps, unauthorized };
}

test('GETs carry the bearer token and parse JSON', async () => {
  const { fetch, requests } = fakeFetch(() => response(200, { user_id: 'u1', name: 'Ada' }));
  const { api } = client(fetch);
  const me = await api.me();
  assert.equal(me.name, 'Ada');
  assert.equal(requests[0].url, 'https://gw.example.com/v1/me');
  assert.equal(requests[0].method, 'GET');
  assert.equal(requests[0].headers.Authorization, 'Bearer sbs_token');
  assert.equal(requests[0].headers['Idempotency-Key'], undefined, 'no key on GET');
});

test('call-control POSTs carry a JSON body and an Idempotency-Key', async () => {
  const { fetch, requests } = fakeFetch(() => response(201, { id: 'c1', state: 'ringing' }));
  const { api } = client(fetch);
  const call = await api.placeCall({ to: '+14155550100', caller_id: '+14155550199', device_id: 'dev-1' });
  assert.equal(call.id, 'c1');
  assert.equal(requests[0].url, 'https://gw.example.com/v1/calls');
  assert.equal(requests[0].method, 'POST');
  assert.deepEqual(requests[0].body, { to: '+14155550100', caller_id: '+14155550199', device_id: 'dev-1' });
  assert.equal(requests[0].headers['Content-Type'], 'application/json');
  assert.equal(requests[0].headers['Idempotency-Key'], 'key-1');
});

test('a retry after a network failure reuses the same Idempotency-Key', async () => {
  const { fetch, requests } = fakeFetch(
    () => {
      throw new TypeError('Failed to fetch');
    },
    () => response(200, { id: 'c1', held: 'caller' }),
  );
  const { api, sleeps } = client(fetch);
  const view = await api.hold('c1', true);
  assert.equal(view.held, 'caller');
  assert.equal(requests.length, 2);
  assert.equal(requests[0].headers['Idempotency-Key'], requests[1].headers['Idempotency-Key']);
  assert.deepEqual(requests[1].body, { on: true });
  assert.deepEqual(sleeps, [500]);
});

test('problem+json answers become ApiErrors with code and detail', async () => {
  const problem = { type: '/problems/call_not_found', title: 'Not Found', status: 404, code: 'call_not_found', detail: 'no call c9 of yours is live; it may have ended' };
  const { fetch } = fakeFetch(() => response(404, problem, { contentType: 'application/problem+json' }));
  const { api } = client(fetch);
  await assert.rejects(api.hangup('c9'), (err) => {
    assert.ok(err instanceof ApiError);
    assert.equal(err.status, 404);
    assert.equal(err.code, 'call_not_found');
    assert.equal(err.detail, problem.detail);
    return true;
  });
});

test('a 503 with a short Retry-After is retried; a 409 conflict is not', async () => {
  const { fetch, requests } = fakeFetch(
    () => response(503, { code: 'shutting_down', detail: 'restarting', retry_after_secs: 1 }, { contentType: 'application/problem+json' }),
    () => response(200, { id: 'c1' }),
  );
  const { api, sleeps } = client(fetch);
  await api.park('c1');
  assert.equal(requests.length, 2);
  assert.deepEqual(sleeps, [1000]);

  const conflict = fakeFetch(() => response(409, { code: 'call_state', detail: 'not answered' }, { contentType: 'application/problem+json' }));
  const c2 = client(conflict.fetch);
  await assert.rejects(c2.api.mute('c1', true), /not answered/);
  assert.equal(conflict.requests.length, 1);
});

test('401 signs out at once and is not retried', async () => {
  const { fetch, requests } = fakeFetch(() => response(401, { code: 'unauthorized', detail: 'a valid session token is needed' }, { contentType: 'application/problem+json' }));
  const { api, unauthorized } = client(fetch);
  await assert.rejects(api.calls(), (e) => e.status === 401);
  assert.equal(requests.length, 1);
  assert.equal(unauthorized.length, 1);
});

test('errors without a problem body still say what happened', async () => {
  const { fetch } = fakeFetch(() => response(502, '<html>bad gateway</html>', { contentType: 'text/html' }));
  const { api } = client(fetch, { retries: 0 });
  await assert.rejects(api.me(), (e) => e.code === 'http_502' && /502/.test(e.detail));
});

test('204 answers resolve to null', async () => {
  const { fetch, requests } = fakeFetch(() => response(204));
  const { api } = client(fetch);
  assert.equal(await api.rate('c1', 4, 'slight echo'), null);
  assert.deepEqual(requests[0].body, { score: 4, comment: 'slight echo' });
  assert.equal(requests[0].url, 'https://gw.example.com/v1/calls/c1/rating');
});

test('query parameters are encoded and empty ones left out', async () => {
  const { fetch, requests } = fakeFetch(() => response(200, { entries: [] }));
  const { api } = client(fetch);
  await api.directory('Ada & co', 'cur/1');
  assert.equal(requests[0].url, 'https://gw.example.com/v1/directory?q=Ada+%26+co&cursor=cur%2F1&limit=50');
  await api.cases({ q: '', contact_id: '003000000000001AAA', limit: 20 });
  assert.equal(requests[1].url, 'https://gw.example.com/v1/salesforce/cases?contact_id=003000000000001AAA&limit=20');
});

test('settings are sent with exactly the three fields the gateway accepts', async () => {
  const { fetch, requests } = fakeFetch((req) => response(200, req.body));
  const { api } = client(fetch);
  await api.putSettings({ privacy_mode: true, open_task_after_call: false, call_relation: 'case', ice_servers: [] });
  assert.equal(requests[0].method, 'PUT');
  assert.deepEqual(requests[0].body, { privacy_mode: true, open_task_after_call: false, call_relation: 'case' });
  assert.ok(requests[0].headers['Idempotency-Key']);
});

test('the browser phone registers without a key and unregisters with a keepalive DELETE', async () => {
  const { fetch, requests } = fakeFetch(() => response(200, { device_id: 'd1', instance: 'i1', expires_in_secs: 60 }), () => response(204));
  const { api } = client(fetch);
  const r = await api.registerSoftphone('i1');
  assert.equal(r.device_id, 'd1');
  assert.deepEqual(requests[0].body, { instance: 'i1' });
  assert.equal(requests[0].headers['Idempotency-Key'], undefined);
  await api.unregisterSoftphone('i 1');
  assert.equal(requests[1].method, 'DELETE');
  assert.equal(requests[1].url, 'https://gw.example.com/v1/softphone/i%201');
  assert.equal(requests[1].keepalive, true);
});

test('answer, move and the WebRTC leg endpoints use the documented paths and bodies', async () => {
  const { fetch, requests } = fakeFetch((req) => response(req.url.endsWith('/offer') ? 200 : 204, req.url.endsWith('/offer') ? { sdp: 'answer-sdp' } : undefined));
  const { api } = client(fetch);
  await api.answer('c1');
  await api.answer('c1', 'dev-9');
  await api.move('c1', 'dev-9');
  await api.answerLeg('leg-1', 'v=0');
  const restarted = await api.offerLeg('leg-1', 'v=0 offer');
  await api.transfer('c1', { number: '204' }, 'warm');
  await api.retrieve(3);
  assert.deepEqual(
    requests.map((r) => [r.method, r.url.replace('https://gw.example.com', ''), r.body]),
    [
      ['POST', '/v1/calls/c1/answer', {}],
      ['POST', '/v1/calls/c1/answer', { device_id: 'dev-9' }],
      ['POST', '/v1/calls/c1/move', { device_id: 'dev-9' }],
      ['POST', '/v1/webrtc/legs/leg-1/answer', { sdp: 'v=0' }],
      ['POST', '/v1/webrtc/legs/leg-1/offer', { sdp: 'v=0 offer' }],
      ['POST', '/v1/calls/c1/transfer', { to: { number: '204' }, mode: 'warm' }],
      ['POST', '/v1/parked/3/retrieve', undefined],
    ],
  );
  assert.equal(restarted.sdp, 'answer-sdp');
  assert.equal(api.loginUrl('https://gw.example.com/softphone/?a=1'), 'https://gw.example.com/v1/auth/salesforce/login?return_to=https%3A%2F%2Fgw.example.com%2Fsoftphone%2F%3Fa%3D1');
});
