#!/usr/bin/env python3
"""Writes the bundled music on hold, services/gateway/assets/hold-music.wav.

A slow arpeggio over four chords, synthesised here so that the file carries
no third-party rights. 8 kHz, 16-bit, mono: what the gateway plays without
resampling. Operators replace it with `media.hold_music` in the config.

    python3 scripts/make-hold-music.py [out.wav]
"""
import math
import struct
import sys
import wave

RATE = 8000
NOTE = 0.25  # seconds per note
# C major, A minor, F major, G major; each chord's notes rise and fall.
CHORDS = [
    [261.63, 329.63, 392.00, 523.25],
    [220.00, 261.63, 329.63, 440.00],
    [174.61, 220.00, 261.63, 349.23],
    [196.00, 246.94, 293.66, 392.00],
]


def note(freq, seconds, amplitude=6000):
    n = int(RATE * seconds)
    out = []
    for i in range(n):
        t = i / RATE
        # Soft attack and exponential decay, a touch of the octave for warmth.
        env = min(1.0, t / 0.02) * math.exp(-3.0 * t)
        v = math.sin(2 * math.pi * freq * t) + 0.3 * math.sin(4 * math.pi * freq * t)
        out.append(int(amplitude * env * v / 1.3))
    return out


def main():
    path = sys.argv[1] if len(sys.argv) > 1 else "services/gateway/assets/hold-music.wav"
    samples = []
    for _ in range(2):
        for chord in CHORDS:
            for f in chord + chord[-2:0:-1]:
                samples.extend(note(f, NOTE))
    with wave.open(path, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(b"".join(struct.pack("<h", s) for s in samples))
    print(f"{path}: {len(samples) / RATE:.1f} s")


if __name__ == "__main__":
    main()
