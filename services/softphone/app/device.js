// Registers this page as the agent's browser phone: `POST /v1/softphone`
// now and every 25 s (the registration lives 60 s), `DELETE
// /v1/softphone/{instance}` when the page goes away. While registered,
// the agent's calls ring here too and `device_id` names this browser in
// `POST /v1/calls`, `…/answer` and `…/move`.

export const REFRESH_MS = 25_000;

/**
 * @param {object} o
 * @param {object} o.api registerSoftphone, unregisterSoftphone
 * @param {string} o.instance
 * @param {(device: object) => void} o.onChange {registered, deviceId, error, iceServers}
 */
export function createRegistration({ api, instance, onChange = () => {}, timers = globalThis, everyMs = REFRESH_MS }) {
  let interval = null;
  let current = { registered: false, deviceId: null, error: null, iceServers: [] };
  let running = false;

  function set(next) {
    current = { ...current, ...next };
    onChange(current);
  }

  async function register() {
    if (!running) return current;
    try {
      const r = await api.registerSoftphone(instance);
      if (!running) return current;
      if (!r || typeof r.device_id !== 'string') throw Object.assign(new Error('the gateway did not name this browser phone'), { detail: 'the gateway did not name this browser phone (no device_id)' });
      set({ registered: true, deviceId: r.device_id, error: null, iceServers: Array.isArray(r.ice_servers) ? r.ice_servers : current.iceServers });
    } catch (err) {
      if (!running) return current;
      const missing = err?.status === 404 || err?.status === 405;
      set({
        registered: false,
        error: missing ? 'This gateway has no browser phone (POST /v1/softphone); calls ring on your other phones.' : (err?.detail ?? err?.message ?? 'registration failed'),
      });
    }
    return current;
  }

  function start() {
    if (running) return;
    running = true;
    register();
    interval = timers.setInterval(register, everyMs);
  }

  /** Stops refreshing; with `unregister`, tells the gateway (keepalive DELETE). */
  function stop({ unregister = true } = {}) {
    const was = running;
    running = false;
    if (interval !== null) timers.clearInterval(interval);
    interval = null;
    if (unregister && was) {
      try {
        const p = api.unregisterSoftphone(instance);
        p?.catch?.(() => {});
      } catch {
        // the page is going away; nothing else to do
      }
    }
    current = { registered: false, deviceId: null, error: null, iceServers: current.iceServers };
    onChange(current);
  }

  return { start, stop, register, get device() { return current; } };
}
