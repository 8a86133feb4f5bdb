#!/usr/bin/env python3
"""How long `switchboard up` takes from exec to taking requests.

Starts `switchboard up` on free ports in a fresh data directory (so each run
also creates and migrates the SQLite database), polls GET /healthz until it
answers, stops the process with SIGTERM, and repeats. Prints min, median,
p90 and max in milliseconds.

    scripts/bench/up-startup.py [--runs 20] [--bin target/release/switchboard]
"""
import argparse
import os
import shutil
import signal
import socket
import statistics
import subprocess
import tempfile
import time
import urllib.request


def free_port(kind=socket.SOCK_STREAM):
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def one_run(binary):
    data = tempfile.mkdtemp(prefix="sb-bench-")
    sip, http = free_port(socket.SOCK_DGRAM), free_port()
    env = dict(os.environ, RUST_LOG="warn")
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [binary, "up", "--sip", f"127.0.0.1:{sip}", "--http", f"127.0.0.1:{http}", "--data-dir", data],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        deadline = t0 + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{http}/healthz", timeout=1) as r:
                    if r.status == 200:
                        return (time.perf_counter() - t0) * 1000
            except OSError:
                pass
            if proc.poll() is not None:
                raise SystemExit(f"switchboard up exited with {proc.returncode}")
            if time.perf_counter() > deadline:
                raise SystemExit("not ready within 30 s")
            time.sleep(0.002)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        shutil.rmtree(data, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--bin", default=os.environ.get("SWITCHBOARD_BIN", "target/release/switchboard"))
    a = ap.parse_args()
    times = sorted(one_run(a.bin) for _ in range(a.runs))
    p90 = times[min(len(times) - 1, int(round(0.9 * (len(times) - 1))))]
    print(f"runs={len(times)} min={times[0]:.1f}ms median={statistics.median(times):.1f}ms "
          f"p90={p90:.1f}ms max={times[-1]:.1f}ms")


if __name__ == "__main__":
    main()
