// Fakes shared by the unit tests: timers, WebSocket, fetch, RTCPeerConnection, a tiny DOM.

export function fakeTimers(start = 0) {
  let now = start;
  let next = 1;
  const tasks = new Map();
  const t = {
    now: () => now,
    setTimeout(fn, ms = 0) {
      const id = next++;
      tasks.set(id, { fn, at: now + ms, every: null });
      return id;
    },
    clearTimeout(id) {
      tasks.delete(id);
    },
    setInterval(fn, ms) {
      const id = next++;
      tasks.set(id, { fn, at: now + ms, every: ms });
      return id;
    },
    clearInterval(id) {
      tasks.delete(id);
    },
    /** Moves time on, running what falls due in order. */
    advance(ms) {
      const end = now + ms;
      for (;;) {
        let due = null;
        for (const [id, task] of tasks) if (task.at <= end && (!due || task.at < due[1].at)) due = [id, task];
        if (!due) break;
        const [id, task] = due;
        now = task.at;
        if (task.every) task.at += task.every;
        else tasks.delete(id);
        task.fn();
      }
      now = end;
    },
    pending: () => tasks.size,
  };
  return t;
}

/** Lets pending promise callbacks run. */
export async function flush(times = 10) {
  for (let i = 0; i < times; i++) await Promise.resolve();
  await new Promise((r) => setImmediate(r));
}

export function fakeWebSocketClass() {
  const sockets = [];
  class FakeWebSocket {
    constructor(url) {
      this.url = url;
      this.readyState = 0;
      this.sent = [];
      this.closedWith = null;
      sockets.push(this);
    }
    send(data) {
      this.sent.push(data);
    }
    close(code) {
      this.closedWith = code ?? 1005;
      this.readyState = 3;
    }
    // test side
    serverOpen() {
      this.readyState = 1;
      this.onopen?.({});
    }
    serverSend(obj) {
      this.onmessage?.({ data: typeof obj === 'string' ? obj : JSON.stringify(obj) });
    }
    serverClose(code = 1006) {
      this.readyState = 3;
      this.onclose?.({ code });
    }
  }
  return { FakeWebSocket, sockets };
}

/** A Response-like object. */
export function response(status, body, { contentType, headers = {} } = {}) {
  const text = body === undefined ? '' : typeof body === 'string' ? body : JSON.stringify(body);
  const h = { 'content-type': contentType ?? (typeof body === 'object' ? 'application/json' : 'text/plain'), ...headers };
  return {
    ok: status >= 200 && status < 300,
    status,
    statusText: { 200: 'OK', 201: 'Created', 204: 'No Content', 401: 'Unauthorized', 404: 'Not Found', 409: 'Conflict', 502: 'Bad Gateway', 503: 'Service Unavailable' }[status] ?? '',
    headers: { get: (k) => h[k.toLowerCase()] ?? null },
    text: async () => text,
    json: async () => JSON.parse(text),
  };
}

/** A fetch that answers from a queue of (request) => Response functions and records requests. */
export function fakeFetch(...answers) {
  const requests = [];
  const fetch = async (url, init = {}) => {
    const req = { url, method: init.method ?? 'GET', headers: init.headers ?? {}, body: init.body === undefined ? undefined : JSON.parse(init.body), keepalive: init.keepalive };
    requests.push(req);
    const next = answers.length > 1 ? answers.shift() : answers[0];
    if (!next) throw new Error('no answer queued');
    return next(req);
  };
  return { fetch, requests };
}

export class FakeTrack {
  constructor(kind = 'audio') {
    this.kind = kind;
    this.stopped = false;
  }
  stop() {
    this.stopped = true;
  }
}

export class FakeStream {
  constructor(tracks = [new FakeTrack()]) {
    this.tracks = tracks;
  }
  getTracks() {
    return this.tracks;
  }
  getAudioTracks() {
    return this.tracks.filter((t) => t.kind === 'audio');
  }
}

export function fakePeerConnectionClass({ gathering = 'complete' } = {}) {
  const instances = [];
  class FakePC {
    constructor(config) {
      this.config = config;
      this.senders = [];
      this.listeners = {};
      this.iceGatheringState = 'new';
      this.iceConnectionState = 'new';
      this.connectionState = 'new';
      this.localDescription = null;
      this.remoteDescription = null;
      this.closed = false;
      this.calls = [];
      instances.push(this);
    }
    addTrack(track) {
      // Like the browser's: insertDTMF replaces what is still queued.
      const dtmf = { canInsertDTMF: true, toneBuffer: '', inserted: [], insertDTMF(d, dur, gap) { this.inserted.push([d, dur, gap]); this.toneBuffer = d; } };
      const sender = { track, dtmf };
      this.senders.push(sender);
      return sender;
    }
    getSenders() {
      return this.senders;
    }
    getTransceivers() {
      return [];
    }
    async setRemoteDescription(d) {
      this.calls.push(['setRemoteDescription', d]);
      this.remoteDescription = d;
    }
    async createAnswer() {
      this.calls.push(['createAnswer']);
      return { type: 'answer', sdp: 'v=0\r\na=answer\r\n' };
    }
    async createOffer(opts) {
      this.calls.push(['createOffer', opts]);
      return { type: 'offer', sdp: 'v=0\r\na=restart-offer\r\n' };
    }
    async setLocalDescription(d) {
      this.calls.push(['setLocalDescription', d]);
      this.localDescription = { type: d.type, sdp: `${d.sdp}a=candidate:1\r\n` };
      this.iceGatheringState = gathering;
    }
    addEventListener(type, fn) {
      (this.listeners[type] ??= []).push(fn);
    }
    removeEventListener(type, fn) {
      this.listeners[type] = (this.listeners[type] ?? []).filter((f) => f !== fn);
    }
    emit(type, event = {}) {
      for (const fn of this.listeners[type] ?? []) fn(event);
    }
    close() {
      this.closed = true;
    }
  }
  return { FakePC, instances };
}

// ------------------------------------------------------------- tiny DOM

class FakeNode {
  constructor(nodeType, nodeName, ns = null) {
    this.nodeType = nodeType;
    this.nodeName = nodeName;
    this.namespaceURI = ns;
    this.childNodes = [];
    this.parentNode = null;
    this.attributes = new Map();
    this.nodeValue = null;
  }
  get lastChild() {
    return this.childNodes[this.childNodes.length - 1] ?? null;
  }
  appendChild(n) {
    n.parentNode = this;
    this.childNodes.push(n);
    return n;
  }
  replaceChild(n, old) {
    const i = this.childNodes.indexOf(old);
    n.parentNode = this;
    this.childNodes[i] = n;
    old.parentNode = null;
    return old;
  }
  removeChild(n) {
    this.childNodes.splice(this.childNodes.indexOf(n), 1);
    n.parentNode = null;
    return n;
  }
  setAttribute(k, v) {
    this.attributes.set(k, String(v));
  }
  getAttribute(k) {
    return this.attributes.has(k) ? this.attributes.get(k) : null;
  }
  hasAttribute(k) {
    return this.attributes.has(k);
  }
  removeAttribute(k) {
    this.attributes.delete(k);
  }
  get textContent() {
    return this.nodeType === 3 ? this.nodeValue : this.childNodes.map((c) => c.textContent).join('');
  }
}

export function fakeDocument() {
  return {
    createElement: (tag) => new FakeNode(1, tag.toUpperCase()),
    createElementNS: (ns, tag) => new FakeNode(1, tag, ns),
    createTextNode: (text) => {
      const n = new FakeNode(3, '#text');
      n.nodeValue = text;
      return n;
    },
  };
}
