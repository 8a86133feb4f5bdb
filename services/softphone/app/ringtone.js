// The incoming-call ring, made with WebAudio: the North American ring
// (440 Hz + 480 Hz, 2 s on, 4 s off), soft attack and release, no files.
// Browsers only let audio start after a user gesture: `unlock()` is called
// on the first click or key press of the page.

export const CADENCE = { onMs: 2000, offMs: 4000, tones: [440, 480], gain: 0.12 };

export function createRingtone({ AudioContext: AC = globalThis.AudioContext ?? globalThis.webkitAudioContext, timers = globalThis, cadence = CADENCE } = {}) {
  let ctx = null;
  let ringing = false;
  let timer = null;
  let nodes = [];

  function context() {
    if (!AC) return null;
    if (!ctx) {
      try {
        ctx = new AC();
      } catch {
        return null;
      }
    }
    return ctx;
  }

  function burst() {
    const c = context();
    if (!c || !ringing) return;
    const t0 = c.currentTime + 0.02;
    const t1 = t0 + cadence.onMs / 1000;
    const gain = c.createGain();
    gain.gain.setValueAtTime(0, t0);
    gain.gain.linearRampToValueAtTime(cadence.gain, t0 + 0.03);
    gain.gain.setValueAtTime(cadence.gain, t1 - 0.03);
    gain.gain.linearRampToValueAtTime(0, t1);
    gain.connect(c.destination);
    const oscs = cadence.tones.map((f) => {
      const o = c.createOscillator();
      o.type = 'sine';
      o.frequency.value = f;
      o.connect(gain);
      o.start(t0);
      o.stop(t1 + 0.05);
      return o;
    });
    nodes = [gain, ...oscs];
  }

  function loop() {
    if (!ringing) return;
    burst();
    timer = timers.setTimeout(loop, cadence.onMs + cadence.offMs);
  }

  return {
    get ringing() {
      return ringing;
    },
    /** Call from a user gesture: browsers keep audio suspended until one. */
    unlock() {
      const c = context();
      if (c && c.state === 'suspended') c.resume?.().catch?.(() => {});
    },
    start() {
      if (ringing) return;
      ringing = true;
      const c = context();
      if (c && c.state === 'suspended') c.resume?.().catch?.(() => {});
      loop();
    },
    stop() {
      ringing = false;
      if (timer !== null) timers.clearTimeout(timer);
      timer = null;
      for (const n of nodes) {
        try {
          if (typeof n.stop === 'function') n.stop();
          n.disconnect?.();
        } catch {
          // already stopped
        }
      }
      nodes = [];
    },
  };
}
