import test from 'node:test';
import assert from 'node:assert/strict';
import { createStream, backoffDelay, DEFAULT_BACKOFF } from '../app/stream.js';
import { fakeTimers, fakeWebSocketClass, flush } from '../test-support/fakes.mjs';

function setup({ ticket } = {}) {
  const timers = fakeTimers(0);
  const { FakeWebSocket, sockets } = fakeWebSocketClass();
  const events = [];
  const statuses = [];
  let tickets = 0;
  const stream = createStream({
    connectUrl: ticket ?? (async () => `wss://gw/v1/events/ws?ticket=t${++tickets}`),
    WebSocket: FakeWebSocket,
    onEvent: (e) => events.push(e),
    onStatus: (s) => statuses.push(s),
    isFatal: (err) => err?.status === 401,
    timers,
    now: timers.now,
    random: () => 0.5, // no jitter
  });
  return { stream, timers, sockets, events, statuses };
}

test('backoff doubles from 500 ms up to 30 s, with bounded jitter', () => {
  assert.equal(backoffDelay(1, DEFAULT_BACKOFF, () => 0.5), 500);
  assert.equal(backoffDelay(2, DEFAULT_BACKOFF, () => 0.5), 1000);
  assert.equal(backoffDelay(4, DEFAULT_BACKOFF, () => 0.5), 4000);
  assert.equal(backoffDelay(20, DEFAULT_BACKOFF, () => 0.5), 30_000);
  assert.equal(backoffDelay(1, DEFAULT_BACKOFF, () => 0), 400);
  assert.equal(backoffDelay(1, DEFAULT_BACKOFF, () => 0.999999), 600);
});

test('opens with a fresh ticket, passes events on, ignores pongs', async () => {
  const { stream, sockets, events, statuses } = setup();
  stream.start();
  await flush();
  assert.equal(sockets.length, 1);
  assert.equal(sockets[0].url, 'wss://gw/v1/events/ws?ticket=t1');
  sockets[0].serverOpen();
  sockets[0].serverSend({ type: 'snapshot', seq: 3, at_ms: 1, calls: [] });
  sockets[0].serverSend({ type: 'pong' });
  sockets[0].serverSend('not json');
  sockets[0].serverSend({ type: 'call.started', seq: 4, call: { id: 'c1' } });
  assert.deepEqual(events.map((e) => e.type), ['snapshot', 'call.started']);
  assert.equal(statuses.at(-1).state, 'open');
});

test('reconnects with growing backoff after drops, and resets once a snapshot arrives', async () => {
  const { stream, sockets, timers, statuses } = setup();
  stream.start();
  await flush();
  sockets[0].serverOpen();
  sockets[0].serverClose(1006);
  assert.equal(statuses.at(-1).state, 'waiting');
  assert.equal(statuses.at(-1).retryInMs, 500);
  timers.advance(499);
  await flush();
  assert.equal(sockets.length, 1, 'not before the delay');
  timers.advance(1);
  await flush();
  assert.equal(sockets.length, 2);
  assert.equal(sockets[1].url, 'wss://gw/v1/events/ws?ticket=t2', 'a new ticket per connection');
  sockets[1].serverClose(1006);
  assert.equal(statuses.at(-1).retryInMs, 1000);
  timers.advance(1000);
  await flush();
  assert.equal(sockets.length, 3);
  sockets[2].serverOpen();
  sockets[2].serverSend({ type: 'snapshot', seq: 1, calls: [] });
  sockets[2].serverClose(1001);
  assert.equal(statuses.at(-1).retryInMs, 500, 'backoff reset after a snapshot');
});

test('a failed ticket is retried; a 401 stops the stream', async () => {
  let calls = 0;
  const failing = async () => {
    calls++;
    if (calls === 1) throw Object.assign(new Error('offline'), { status: 0 });
    throw Object.assign(new Error('unauthorized'), { status: 401 });
  };
  const { stream, timers, sockets, statuses } = setup({ ticket: failing });
  stream.start();
  await flush();
  assert.equal(statuses.at(-1).state, 'waiting');
  timers.advance(500);
  await flush();
  assert.equal(calls, 2);
  assert.equal(statuses.at(-1).state, 'stopped');
  timers.advance(120_000);
  await flush();
  assert.equal(calls, 2, 'no more attempts once unauthorized');
  assert.equal(sockets.length, 0);
});

test('pings every 25 s and replaces a socket silent for 60 s', async () => {
  const { stream, sockets, timers } = setup();
  stream.start();
  await flush();
  sockets[0].serverOpen();
  timers.advance(25_000);
  assert.deepEqual(sockets[0].sent, ['{"type":"ping"}']);
  sockets[0].serverSend({ type: 'pong' });
  timers.advance(25_000);
  assert.equal(sockets[0].sent.length, 2);
  assert.equal(sockets[0].closedWith, null, 'heard from 25 s ago: alive');
  timers.advance(50_000); // silent since t=25 s; the check at t=75 s… and t=100 s finds 75 s
  assert.notEqual(sockets[0].closedWith, null, 'closed as dead');
  timers.advance(1000);
  await flush();
  assert.equal(sockets.length, 2, 'and replaced');
});

test('stop closes the socket and never reconnects; reconnectNow skips the wait', async () => {
  const { stream, sockets, timers } = setup();
  stream.start();
  await flush();
  sockets[0].serverOpen();
  sockets[0].serverClose(1006);
  stream.reconnectNow();
  await flush();
  assert.equal(sockets.length, 2, 'online: connected at once');
  stream.stop();
  assert.equal(sockets[1].closedWith, 1000);
  sockets[1].serverClose(1000);
  timers.advance(60_000);
  await flush();
  assert.equal(sockets.length, 2);
  assert.equal(stream.status.state, 'stopped');
});
