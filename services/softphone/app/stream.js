// The agent's event stream over a WebSocket (`GET /v1/events/ws?ticket=`),
// kept open: a fresh ticket for every connection, reconnection with
// exponential backoff and jitter after a drop, and a liveness check.
//
// The gateway pings every 20 s (browsers answer by themselves) and closes
// a socket it has heard nothing from for a minute; it answers a text frame
// `{"type":"ping"}` with `{"type":"pong"}`. This client sends that ping
// every `pingEveryMs` and treats a socket that has been silent for
// `silenceMs` as dead: it closes it and connects again. The first frame of
// every connection is a `snapshot`; the backoff is reset once it arrives.

export const DEFAULT_BACKOFF = { initialMs: 500, factor: 2, maxMs: 30_000, jitter: 0.2 };

/** Delay before reconnection attempt `attempt` (1-based), with jitter from `random()` in [0, 1). */
export function backoffDelay(attempt, { initialMs, factor, maxMs, jitter } = DEFAULT_BACKOFF, random = Math.random) {
  const base = Math.min(maxMs, initialMs * factor ** Math.max(0, attempt - 1));
  const spread = base * jitter;
  return Math.max(0, Math.round(base - spread + random() * 2 * spread));
}

/**
 * @param {object} o
 * @param {() => Promise<string>} o.connectUrl resolves to the ws:// URL to open (with a fresh ticket)
 * @param {typeof WebSocket} o.WebSocket
 * @param {(event: object) => void} o.onEvent every JSON frame but pongs
 * @param {(status: object) => void} [o.onStatus]
 * @param {(err: any) => boolean} [o.isFatal] a connectUrl failure that stops reconnecting (e.g. 401)
 * @param {{setTimeout: Function, clearTimeout: Function, setInterval: Function, clearInterval: Function}} [o.timers]
 * @param {() => number} [o.now]
 * @param {() => number} [o.random]
 */
export function createStream({
  connectUrl,
  WebSocket: WS,
  onEvent,
  onStatus = () => {},
  isFatal = () => false,
  timers = globalThis,
  now = () => Date.now(),
  random = Math.random,
  backoff = DEFAULT_BACKOFF,
  pingEveryMs = 25_000,
  silenceMs = 60_000,
}) {
  let socket = null;
  let stopped = true;
  let attempt = 0;
  let retryTimer = null;
  let pingTimer = null;
  let lastHeard = 0;
  let generation = 0;
  let status = { state: 'idle', attempt: 0, retryInMs: null };

  function setStatus(s) {
    status = { ...s };
    onStatus(status);
  }

  function clearTimers() {
    if (retryTimer !== null) timers.clearTimeout(retryTimer);
    retryTimer = null;
    if (pingTimer !== null) timers.clearInterval(pingTimer);
    pingTimer = null;
  }

  function scheduleRetry(reason) {
    if (stopped) return;
    clearTimers();
    attempt += 1;
    const delay = backoffDelay(attempt, backoff, random);
    setStatus({ state: 'waiting', attempt, retryInMs: delay, reason });
    retryTimer = timers.setTimeout(() => {
      retryTimer = null;
      open();
    }, delay);
  }

  function drop(reason) {
    const s = socket;
    socket = null;
    if (s) {
      s.onopen = s.onmessage = s.onclose = s.onerror = null;
      try {
        s.close();
      } catch {
        // already closed
      }
    }
    scheduleRetry(reason);
  }

  async function open() {
    if (stopped) return;
    const mine = ++generation;
    setStatus({ state: 'connecting', attempt, retryInMs: null });
    let target;
    try {
      target = await connectUrl();
    } catch (err) {
      if (mine !== generation || stopped) return;
      if (isFatal(err)) {
        stop('unauthorized');
        return;
      }
      scheduleRetry(err?.detail ?? err?.message ?? 'no ticket');
      return;
    }
    if (mine !== generation || stopped) return;
    let ws;
    try {
      ws = new WS(target);
    } catch (err) {
      scheduleRetry(err?.message ?? 'cannot open');
      return;
    }
    socket = ws;
    lastHeard = now();
    ws.onopen = () => {
      lastHeard = now();
      setStatus({ state: 'open', attempt, retryInMs: null });
    };
    ws.onmessage = (message) => {
      lastHeard = now();
      let event;
      try {
        event = JSON.parse(typeof message.data === 'string' ? message.data : '');
      } catch {
        return;
      }
      if (!event || typeof event !== 'object' || event.type === 'pong') return;
      if (event.type === 'snapshot' && attempt !== 0) {
        attempt = 0;
        setStatus({ state: 'open', attempt: 0, retryInMs: null });
      }
      onEvent(event);
    };
    ws.onclose = (e) => {
      if (socket !== ws) return;
      socket = null;
      scheduleRetry(`closed (${e?.code ?? 'no code'})`);
    };
    ws.onerror = () => {
      // A close event follows; nothing to do here.
    };
    pingTimer = timers.setInterval(() => {
      if (socket !== ws) return;
      if (now() - lastHeard >= silenceMs) {
        drop('silent');
        return;
      }
      if (ws.readyState === 1) {
        try {
          ws.send('{"type":"ping"}');
        } catch {
          drop('send failed');
        }
      }
    }, pingEveryMs);
  }

  function start() {
    if (!stopped) return;
    stopped = false;
    attempt = 0;
    open();
  }

  function stop(reason = 'stopped') {
    stopped = true;
    generation++;
    clearTimers();
    const s = socket;
    socket = null;
    if (s) {
      s.onopen = s.onmessage = s.onclose = s.onerror = null;
      try {
        s.close(1000);
      } catch {
        // already closed
      }
    }
    setStatus({ state: 'stopped', attempt: 0, retryInMs: null, reason });
  }

  /** The network is back (the `online` event): skip the rest of the wait. */
  function reconnectNow() {
    if (stopped || socket) return;
    clearTimers();
    open();
  }

  return { start, stop, reconnectNow, get status() { return status; } };
}
