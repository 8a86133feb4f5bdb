#!/usr/bin/env python3
"""Media capacity: concurrent bridged G.711 calls with recording through the
gateway, next to rtpengine relaying the same load, and memory per call.

    python3 scripts/bench/media.py [--quick] [--only gateway,rtpengine]
                                   [--levels 250,500,...] [--window 30] [--final 300]
                                   [--bin <target>/release/switchboard] [--rtpload <target>/release/rtpload]
                                   [--out results.md]

Python 3 standard library only; everything runs on 127.0.0.1 in a scratch
directory (kept, and printed). Installs rtpengine-daemon with apt-get when
it is missing (as root), and builds the release binaries of `switchboard`
and `rtpload` unless --bin / --rtpload are given.

The load is made by `rtpload` (tests/rtpload): for each of N calls it plays
the caller and the agent, sending a 20 ms PCMU packet (172 bytes) every
20 ms each way through the relay, and measures loss, one-way delay and
added jitter (each packet's delay minus its stream's minimum). Calls are
started at --rate per second, then all N talk for the level's time, then
media stops and the calls are hung up.

1. Gateway. `switchboard gateway` on a fresh SQLite data directory with
   `recordings.record_all = true` (local store in the scratch directory),
   log level warn, a trunk trusting 127.0.0.1 (as in sip-cps.py) and, through
   `switchboard admin`, one user with one device whose contact is
   rtpload's device socket and a number routed to that user. rtpload calls
   the number from its trunk socket with real SIP (INVITE with SDP, 200
   with the gateway's A port, ACK; it answers the gateway's INVITE to the
   device with 200 and its SDP, so the gateway's B port is in that INVITE;
   BYE at the end).
2. rtpengine (Debian's rtpengine-daemon 10.5) in the foreground, userspace
   only (--table=-1: no kernel forwarding), --num-threads=2, on 127.0.0.1;
   rtpload sets calls up with the ng protocol (offer, answer, delete). No
   recording.

Each system gets a fresh process per level. Levels run in order (default
250, 500, 750, 1000, 1250, 1500, 2000, 2500, 3000, 4000), each for --window
seconds after the ramp, and the search stops at the first level that
fails. A level passes when every call came up and stayed up, packet loss
is below --loss (%) and the added jitter p99 is below --jitter-ms. Then the
best passing level of each system is run again for --final seconds: those
are the figures. Our capacity is reported as a ratio of rtpengine's.

CPU is sampled every second from /proc: the relay (all its threads), the
generator, and the whole machine (the rest is "other": a busy machine
makes the figures worthless, and the report says so). RSS of the relay is
read before the first call and at the end of the sustained part; (after -
before) / calls is the memory per active call; the report also gives RSS
at the end of the ramp. A level is abandoned when the relay's RSS would exceed
--max-rss-gib.

The Markdown block printed at the end (machine, date, versions, command,
tables) is what docs/benchmarks.md records.
"""
import argparse
import datetime
import importlib.util
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))

# The helpers of the SIP benchmark: process and /proc readers, the gateway
# wrapper (config, `switchboard admin`, start/stop), the machine line.
# No bytecode cache is written for it: the scripts directory stays as checked out.
sys.dont_write_bytecode = True
_spec = importlib.util.spec_from_file_location("sip_cps", os.path.join(HERE, "sip-cps.py"))
cps = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cps)
log, sh, stop_process, raise_nofile = cps.log, cps.sh, cps.stop_process, cps.raise_nofile
proc_ticks, status_kib, machine_ticks, udp_rcvbuf_errors = cps.proc_ticks, cps.status_kib, cps.machine_ticks, cps.udp_rcvbuf_errors
HOST, GW_SIP_PORT, CLK_TCK = cps.HOST, cps.GW_SIP_PORT, cps.CLK_TCK

DEVICE_PORT = 6100          # rtpload's device socket: the provisioned contact
NG_PORT = 2223              # rtpengine --listen-ng
MEDIA_MIN, MEDIA_MAX = 10_000, 31_999  # relay ports, below the ephemeral range
NUMBER = "+14155551000"
FULL_LEVELS = [250, 500, 750, 1000, 1250, 1500, 2000, 2500, 3000, 4000]
QUICK_LEVELS = [20, 50]


# ---------------------------------------------------------------- setup

def cargo_target_dir():
    out = subprocess.run(["cargo", "metadata", "--format-version", "1", "--no-deps"], cwd=REPO,
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"cargo metadata failed: {out.stderr.strip()}")
    return json.loads(out.stdout)["target_directory"]


def build(args):
    """Release builds of what was not given on the command line."""
    packages = []
    if not args.bin:
        packages.append("switchboard")
    if not args.rtpload:
        packages.append("rtpload")
    # One cargo invocation per package: built together, their shared
    # dependencies would get the union of features and differ from (and
    # later be rebuilt for) a plain `cargo build --release -p switchboard`.
    if packages and not shutil.which("cmake"):
        raise SystemExit("building needs CMake (libopus is built from source): apt-get install cmake")
    for package in packages:
        cmd = ["cargo", "build", "--release", "-p", package]
        log(f"building: {' '.join(cmd)}")
        if subprocess.run(cmd, cwd=REPO).returncode != 0:
            raise SystemExit(f"the release build of {package} failed")
    if packages:
        target = cargo_target_dir()
        args.bin = args.bin or os.path.join(target, "release", "switchboard")
        args.rtpload = args.rtpload or os.path.join(target, "release", "rtpload")
    for path, what in ((args.bin, "--bin"), (args.rtpload, "--rtpload")):
        if not os.access(path, os.X_OK):
            raise SystemExit(f"no executable at {path} ({what})")


def ensure_rtpengine():
    if shutil.which("rtpengine"):
        return True
    if os.geteuid() != 0:
        log("rtpengine is not installed and this is not root: apt-get install -y rtpengine-daemon, then rerun")
        return False
    log("installing rtpengine-daemon (apt-get)")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-q"], env=env, stdout=subprocess.DEVNULL)
    r = subprocess.run(["apt-get", "install", "-y", "-q", "--no-install-recommends", "rtpengine-daemon"], env=env,
                       stdout=subprocess.DEVNULL)
    if r.returncode != 0 or not shutil.which("rtpengine"):
        log("installing rtpengine-daemon failed: skipping the comparison")
        return False
    return True


# ---------------------------------------------------------------- relays

class Gateway(cps.Gateway):
    """sip-cps.py's gateway, configured for media: recording on for every
    call into a local store in the scratch directory, one device (rtpload)."""

    def __init__(self, binary, workdir, name):
        super().__init__(binary, workdir, name)
        self.recordings = os.path.join(self.dir, "recordings")
        with open(self.config, "w") as f:
            f.write(f"""data_dir = "{self.dir}/data"

[sip]
udp = "{HOST}:{GW_SIP_PORT}"
tcp = "{HOST}:0"
ring_timeout_secs = 60

# rtpload's trunk socket on {HOST} plays the carrier: a trunk trusted by
# address (and so exempt from the per-source rate limit).
[[sip.trunks]]
name = "bench-carrier"
inbound_from = ["{HOST}/32"]

[media]
bind_ip = "{HOST}"
port_min = {MEDIA_MIN}
port_max = {MEDIA_MAX}

[http]
listen = "{HOST}:{self.http}"

[recordings]
record_all = true
store = "local"
dir = "{self.recordings}"

[log]
level = "warn"
""")

    def provision(self):
        user = json.loads(self.cli("admin", "user", "add", "--name", "Bench Agent"))
        self.cli("admin", "device", "add", "--user", user["id"], "--name", "rtpload",
                 "--contact", f"sip:agent@{HOST}:{DEVICE_PORT}")
        self.cli("admin", "number", "add", NUMBER, "--user", user["id"])

    def pid(self):
        return self.proc.pid

    def version(self):
        return sh(f"{self.binary} --version")

    def clear_data(self):
        """After the gateway stopped: counts the recordings it stored, then
        removes them with the data directory (spool, database). At 32 KB per
        call-second they would fill the disk over a capacity search; the
        gateway's log is kept."""
        n, size = self.stored()
        shutil.rmtree(self.recordings, ignore_errors=True)
        shutil.rmtree(os.path.join(self.dir, "data"), ignore_errors=True)
        return n, size

    def stored(self):
        """(files, bytes) in the local recording store."""
        n = size = 0
        for root, _, files in os.walk(self.recordings):
            for name in files:
                n += 1
                size += os.path.getsize(os.path.join(root, name))
        return n, size

    def wait_stored(self, calls, timeout):
        """Waits until `calls` recordings are in the store (each is written
        after its call's hang-up), so the gateway is not stopped mid-upload."""
        deadline = time.monotonic() + timeout
        while self.stored()[0] < calls and time.monotonic() < deadline and self.proc.poll() is None:
            time.sleep(0.5)


class Rtpengine:
    def __init__(self, workdir, name, threads):
        self.dir = os.path.join(workdir, name)
        os.makedirs(self.dir, exist_ok=True)
        self.cmd = ["rtpengine", "--config-file=none", "--foreground", "--log-stderr", "--table=-1",
                    f"--interface={HOST}", f"--listen-ng={HOST}:{NG_PORT}", f"--port-min={MEDIA_MIN}",
                    f"--port-max={MEDIA_MAX}", f"--num-threads={threads}", "--log-level=5", "--delete-delay=0",
                    f"--pidfile={os.path.join(self.dir, 'rtpengine.pid')}"]
        self.proc = None

    def start(self):
        cps.check_udp_free(NG_PORT)
        self.log = open(os.path.join(self.dir, "rtpengine.log"), "ab")
        self.proc = subprocess.Popen(self.cmd, stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     preexec_fn=raise_nofile)
        deadline = time.monotonic() + 15
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(0.2)
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise SystemExit(f"rtpengine exited with {self.proc.returncode}; see {self.dir}/rtpengine.log")
                try:
                    s.sendto(b"ping1 d7:command4:pinge", (HOST, NG_PORT))
                    if b"pong" in s.recv(1000):
                        return
                except OSError:
                    time.sleep(0.1)
        raise SystemExit("rtpengine did not answer an ng ping within 15 s")

    def pid(self):
        return self.proc.pid

    def rss_kib(self):
        return status_kib(self.proc.pid, "VmRSS")

    def version(self):
        return sh("rtpengine --version 2>&1 | head -1").replace("Version: ", "rtpengine ")

    def stop(self):
        if self.proc:
            stop_process(self.proc, grace=15)
            self.log.close()


# ---------------------------------------------------------------- one level

class Sampler(threading.Thread):
    """Every second: wall time, CPU ticks of the relay and of the generator,
    the relay's RSS, and the machine's busy/idle ticks."""

    def __init__(self, relay_pid, gen_pid, max_rss_kib, on_rss_cap):
        super().__init__(daemon=True)
        self.relay_pid, self.gen_pid = relay_pid, gen_pid
        self.max_rss_kib, self.on_rss_cap = max_rss_kib, on_rss_cap
        self.samples = []
        self.stopped = threading.Event()
        self.rss_capped = False

    def sample(self):
        total, idle = machine_ticks()
        s = {"t": time.time(), "relay": proc_ticks(self.relay_pid), "gen": proc_ticks(self.gen_pid),
             "rss": status_kib(self.relay_pid, "VmRSS") if os.path.exists(f"/proc/{self.relay_pid}") else 0,
             "total": total, "idle": idle}
        self.samples.append(s)
        return s

    def run(self):
        while not self.stopped.wait(1.0):
            s = self.sample()
            if s["rss"] > self.max_rss_kib and not self.rss_capped:
                self.rss_capped = True
                self.on_rss_cap()

    def stop(self):
        self.stopped.set()
        self.join()
        self.sample()

    def nearest(self, t):
        return min(self.samples, key=lambda s: abs(s["t"] - t))

    def cpu(self, t0, t1):
        """(relay %, generator %, other %) of one core between the samples nearest t0 and t1."""
        a, b = self.nearest(t0), self.nearest(t1)
        wall = b["t"] - a["t"]
        if wall <= 0:
            return 0.0, 0.0, 0.0
        relay = (b["relay"] - a["relay"]) / CLK_TCK / wall * 100
        gen = (b["gen"] - a["gen"]) / CLK_TCK / wall * 100
        total, idle = b["total"] - a["total"], b["idle"] - a["idle"]
        busy = (os.cpu_count() or 1) * 100 * (total - idle) / total if total else 0.0
        return relay, gen, max(0.0, busy - relay - gen)


def run_level(args, workdir, system, calls, window, label):
    """One level: a fresh relay, rtpload with `calls` calls held `window`
    seconds; returns the result dict."""
    d = os.path.join(workdir, f"{system}-{label}-{calls}")
    os.makedirs(d, exist_ok=True)
    if system == "gateway":
        relay = Gateway(args.bin, workdir, f"gateway-{label}-{calls}")
        relay.migrate()
        relay.provision()
        relay.start()
        target = ["gateway", "--sip", f"{HOST}:{GW_SIP_PORT}", "--number", NUMBER, "--device", f"{HOST}:{DEVICE_PORT}"]
    else:
        relay = Rtpengine(workdir, f"rtpengine-{label}-{calls}", args.rtpengine_threads)
        relay.start()
        target = ["rtpengine", "--ng", f"{HOST}:{NG_PORT}"]
    result = {"system": system, "calls": calls, "window": window, "dir": d}
    try:
        time.sleep(2)  # let start-up allocations settle before the baseline
        result["rss_before"] = relay.rss_kib()
        result["version"] = relay.version()
        out = os.path.join(d, "rtpload.json")
        # The generator is the clock of the measurement; --generator-nice can
        # run it above the relay's priority (it made no difference here).
        prefix = ["nice", "-n", str(args.generator_nice)] if args.generator_nice else []
        cmd = prefix + [args.rtpload] + target + ["--calls", str(calls), "--duration", str(window), "--rate", str(args.rate),
                                         "--sockets", str(args.sockets), "--rx-poll-us", str(args.rx_poll_us),
                                         "--json", out, "--progress", "10"]
        drops0 = udp_rcvbuf_errors()
        log(f"{system}: {calls} calls for {window} s (ramp {calls / args.rate:.1f} s): {' '.join(cmd)}")
        with open(os.path.join(d, "rtpload.log"), "wb") as gen_log:
            gen = subprocess.Popen(cmd, stdout=gen_log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   preexec_fn=raise_nofile)
            sampler = Sampler(relay.pid(), gen.pid, args.max_rss_gib * 1024 * 1024, lambda: gen.send_signal(signal.SIGTERM))
            sampler.sample()
            sampler.start()
            try:
                gen.wait(timeout=calls / args.rate + window + 120)
            except subprocess.TimeoutExpired:
                gen.kill()
                gen.wait()
            sampler.stop()
        result["udp_drops"] = udp_rcvbuf_errors() - drops0
        result["relay_alive"] = relay.proc.poll() is None
        if sampler.rss_capped:
            result.update(passed=False, reason=f"relay RSS passed --max-rss-gib {args.max_rss_gib}: level abandoned")
            return result
        if gen.returncode != 0 or not os.path.exists(out):
            with open(os.path.join(d, "rtpload.log"), errors="replace") as f:
                tail = f.read().strip().splitlines()[-3:]
            result.update(passed=False, reason=f"rtpload exited with {gen.returncode}: {' / '.join(tail)}")
            return result
        with open(out) as f:
            r = json.load(f)
        result["report"] = r
        t = r["times"]
        result["cpu_relay"], result["cpu_gen"], result["cpu_other"] = sampler.cpu(t["ramp_end"], t["sustain_end"])
        result["rss_ramp_end"] = sampler.nearest(t["ramp_end"])["rss"]
        result["rss_full"] = max(s["rss"] for s in sampler.samples if s["t"] <= t["sustain_end"] + 0.5)
        up = max(r["calls_up"], 1)
        result["rss_per_call"] = (result["rss_full"] - result["rss_before"]) * 1024 / up
        if system == "gateway":
            relay.wait_stored(r["calls_up"], timeout=60 + r["calls_up"] / 20)
        judge(args, result)
        log_level(result)
        return result
    finally:
        relay.stop()
        if system == "gateway":
            result["recordings"], result["recording_bytes"] = relay.clear_data()


def judge(args, result):
    r = result["report"]
    m = r["media"]
    reasons = []
    if r["calls_up"] < r["calls"]:
        top = "; ".join(f"{n}x {why}" for why, n in r["failure_reasons"][:2])
        reasons.append(f"{r['calls'] - r['calls_up']} of {r['calls']} calls not set up ({top})")
    if r["dropped"]:
        reasons.append(f"{r['dropped']} calls ended by the relay")
    if m["loss_pct"] >= args.loss:
        reasons.append(f"loss {m['loss_pct']:.3f} % ≥ {args.loss} %")
    if m["added_jitter_us"]["p99"] >= args.jitter_ms * 1000:
        reasons.append(f"added jitter p99 {m['added_jitter_us']['p99'] / 1000:.2f} ms ≥ {args.jitter_ms} ms")
    if not result["relay_alive"]:
        reasons.append("the relay process died")
    notes = []
    g = r["generator"]
    if g["send_lateness_us"]["p99"] > 5000 or g["send_errors"]:
        notes.append(f"generator behind (send lateness p99 {g['send_lateness_us']['p99'] / 1000:.1f} ms, "
                     f"{g['send_errors']} send errors): the figure may be the generator's limit")
    if result["cpu_other"] > args.contended:
        notes.append(f"other processes used {result['cpu_other']:.0f} % of a core")
    result["passed"] = not reasons
    result["reason"] = "; ".join(reasons)
    result["notes"] = notes


def log_level(res):
    r = res["report"]
    m = r["media"]
    log(f"{res['system']} {res['calls']}: {'pass' if res['passed'] else 'FAIL: ' + res['reason']}; "
        f"up {r['calls_up']}/{r['calls']}, loss {m['loss_pct']:.4f} %, added jitter p50/p99/max "
        f"{m['added_jitter_us']['p50'] / 1000:.2f}/{m['added_jitter_us']['p99'] / 1000:.2f}/{m['added_jitter_us']['max'] / 1000:.1f} ms, "
        f"CPU relay/generator/other {res['cpu_relay']:.0f}/{res['cpu_gen']:.0f}/{res['cpu_other']:.0f} %, "
        f"RSS {res['rss_before'] / 1024:.1f} -> {res['rss_full'] / 1024:.1f} MiB ({res['rss_per_call'] / 1024:.1f} KiB/call), "
        f"UDP drops {res['udp_drops']}")
    for n in res.get("notes", []):
        log(f"    note: {n}")


def search(args, workdir, system):
    """Levels in order until one fails; returns (all results, best passing)."""
    results, best = [], None
    for calls in args.levels:
        res = run_level(args, workdir, system, calls, args.window, "search")
        results.append(res)
        if not res["passed"]:
            if "report" not in res:
                log(f"{system} {calls}: FAIL: {res['reason']}")
            break
        best = res
    return results, best


# ---------------------------------------------------------------- report

def machine():
    model = ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) / 1024 / 1024
    osname = sh(". /etc/os-release && echo $PRETTY_NAME")
    return f"{os.cpu_count()} cores (nproc), {model}, {mem:.0f} GiB, {osname}, Linux {platform.release()}"


def ms(us):
    return f"{us / 1000:.2f}"


def level_table(results):
    rows = ["| calls | up | packets sent / received | relayed packets/s | loss % | added jitter p50 / p99 / max (ms) | delay p99 (ms) | RFC 3550 jitter p99 (ms) "
            "| CPU relay / generator / other (% of a core) | RSS per call | UDP drops | result |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for res in results:
        if "report" not in res:
            rows.append(f"| {res['calls']} | — | — | — | — | — | — | — | — | — | — | fail: {res['reason']} |")
            continue
        r = res["report"]
        m = r["media"]
        a = m["added_jitter_us"]
        verdict = "pass" if res["passed"] else "fail: " + res["reason"]
        if res.get("notes"):
            verdict += " (" + "; ".join(res["notes"]) + ")"
        rows.append(f"| {res['calls']} | {r['calls_up']} | {m['sent']} / {m['received']} | {r['received_pps']:.0f} | {m['loss_pct']:.4f} | {ms(a['p50'])} / {ms(a['p99'])} / {ms(a['max'])} "
                    f"| {ms(m['delay_us']['p99'])} | {ms(m['rfc3550_jitter_us']['p99'])} "
                    f"| {res['cpu_relay']:.0f} / {res['cpu_gen']:.0f} / {res['cpu_other']:.0f} "
                    f"| {res['rss_per_call'] / 1024:.1f} KiB | {res['udp_drops']} | {verdict} |")
    return "\n".join(rows)


def markdown(args, report, cmdline):
    out = []
    commit = sh(f"git -C {HERE} rev-parse --short HEAD")
    versions = ", ".join(v for v in (report.get("gateway_version"), report.get("rtpengine_version")) if v)
    out.append(f"Run {datetime.date.today().isoformat()} on {machine()}; {versions}; benchmark scripts at commit {commit}.")
    out.append("")
    out.append(f"Command: `{cmdline}` — levels {', '.join(map(str, args.levels))} calls, ramp {args.rate:g} calls/s, "
               f"{args.window} s per level after the ramp, then the best passing level for {args.final} s. Each call: "
               f"PCMU 20 ms (172-byte packets, 50/s) each way; {args.sockets} rtpload socket(s) per side. Pass: every "
               f"call up, loss < {args.loss} %, added jitter p99 < {args.jitter_ms} ms. Added jitter = one-way delay "
               f"minus the stream's minimum delay (kernel receive timestamps), to 0.1 % (three significant figures). CPU in % of one "
               f"core (the machine has {os.cpu_count()}), over the sustained part.")
    out.append("")
    titles = {"gateway": "Gateway (`switchboard gateway`, recording every call, SQLite, log level warn)",
              "rtpengine": f"rtpengine (userspace, --table=-1, --num-threads={args.rtpengine_threads}, no recording)"}
    for system in ("gateway", "rtpengine"):
        if system in report:
            out.append(f"{titles[system]}, search ({args.window} s per level):")
            out.append("")
            out.append(level_table(report[system]["search"]))
            out.append("")
            final = report[system].get("final")
            if final:
                out.append(f"Sustained {args.final} s at its best level:")
                out.append("")
                out.append(level_table([final]))
                out.append("")
    out.append("| | concurrent calls (passing) | loss % | added jitter p99 (ms) | relay CPU (% of a core) | CPU per 100 calls | RSS before → at full load | RSS per call |")
    out.append("|---|---|---|---|---|---|---|---|")
    capacity = {}
    for system, name in (("gateway", "gateway, recording"), ("rtpengine", "rtpengine 10.5, userspace")):
        if system not in report:
            continue
        best = report[system].get("final") or report[system].get("best")
        if not best:
            out.append(f"| {name} | below {args.levels[0]} | | | | | | |")
            continue
        if not best["passed"]:
            out.append(f"| {name} | {best['calls']} failed when held {best['window']} s: {best['reason']} | | | | | | |")
            continue
        capacity[system] = best["calls"]
        m = best["report"]["media"]
        more = "" if report[system]["search"][-1]["passed"] is False else " (did not fail up to the highest level)"
        out.append(f"| {name} | {best['calls']}{more} | {m['loss_pct']:.4f} | {ms(m['added_jitter_us']['p99'])} | {best['cpu_relay']:.0f} "
                   f"| {best['cpu_relay'] / best['calls'] * 100:.1f} | {best['rss_before'] / 1024:.1f} → {best['rss_full'] / 1024:.1f} MiB "
                   f"| {best['rss_per_call'] / 1024:.1f} KiB |")
    if "gateway" in capacity and "rtpengine" in capacity:
        reached = {s: report[s]["search"][-1]["passed"] is False for s in capacity}
        ratio = capacity["gateway"] / capacity["rtpengine"]
        if not reached["rtpengine"] and not reached["gateway"]:
            text = "not known: neither failed a level; add higher --levels"
        elif not reached["rtpengine"]:
            text = f"≤ {ratio:.2f} (rtpengine passed every level; add higher --levels)"
        elif not reached["gateway"]:
            text = f"≥ {ratio:.2f} (the gateway passed every level)"
        else:
            text = f"{ratio:.2f}"
        out.append(f"| ratio gateway / rtpengine, same pass criteria | {text} | | | | | | |")
    out.append("")
    g = report.get("gateway", {})
    best = g.get("final") or g.get("best")
    if best and "report" in best:
        out.append(f"Gateway RSS with {best['report']['calls_up']} recorded calls: {best['rss_before'] / 1024:.1f} MiB before the "
                   f"first call, {best['rss_ramp_end'] / 1024:.1f} MiB when the last call was up, {best['rss_full'] / 1024:.1f} MiB "
                   f"at the end of the {best['window']} s; {best.get('recordings', 0)} recordings stored after hang-up "
                   f"({best.get('recording_bytes', 0) / 1024 / 1024:.1f} MiB).")
        out.append("")
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", help="switchboard binary (default: cargo build --release -p switchboard)")
    ap.add_argument("--rtpload", help="rtpload binary (default: cargo build --release -p rtpload)")
    ap.add_argument("--quick", action="store_true", help="a smoke run: levels 20 and 50, 10 s each, 10 s final")
    ap.add_argument("--only", default="gateway,rtpengine", help="comma-separated: gateway, rtpengine")
    ap.add_argument("--levels", help="comma-separated call counts (default 250,500,750,1000,1250,1500,2000,2500,3000,4000)")
    ap.add_argument("--window", type=int, help="seconds each search level is held after its ramp (default 30; --quick 10)")
    ap.add_argument("--final", type=int, help="seconds the best level is held for the final figures, 0 skips (default 300; --quick 10)")
    ap.add_argument("--rate", type=float, default=100, help="calls started per second during a ramp (default 100)")
    ap.add_argument("--loss", type=float, default=0.1, help="pass: loss below this %% (default 0.1)")
    ap.add_argument("--jitter-ms", type=float, default=5, help="pass: added jitter p99 below this (default 5 ms)")
    ap.add_argument("--sockets", type=int, default=1, help="rtpload media sockets per side (default 1)")
    ap.add_argument("--generator-nice", type=int, default=0,
                    help="nice value of the generator (default 0: as any process; negative runs it above the relay)")
    ap.add_argument("--rx-poll-us", type=int, default=1000,
                    help="rtpload polls its receive sockets this often instead of sleeping in them, so the relay's sends "
                         "do not pay for waking the generator on loopback; 0 blocks (default 1000)")
    ap.add_argument("--rtpengine-threads", type=int, default=2, help="rtpengine --num-threads (default 2)")
    ap.add_argument("--max-rss-gib", type=float, help="abandon a level when the relay's RSS passes this (default: half the available memory)")
    ap.add_argument("--contended", type=float, default=40, help="flag levels during which other processes used more than this %% of a core")
    ap.add_argument("--workdir", help="scratch directory (default: a new one under /tmp, kept)")
    ap.add_argument("--out", help="also write the Markdown block to this file")
    args = ap.parse_args()
    args.levels = [int(x) for x in args.levels.split(",")] if args.levels else (QUICK_LEVELS if args.quick else FULL_LEVELS)
    if args.window is None:
        args.window = 10 if args.quick else 30
    if args.final is None:
        args.final = 10 if args.quick else 300
    if args.max_rss_gib is None:
        with open("/proc/meminfo") as f:
            avail = next(int(l.split()[1]) for l in f if l.startswith("MemAvailable:"))
        args.max_rss_gib = round(avail / 1024 / 1024 / 2, 1)
    systems = [s for s in args.only.split(",") if s]
    if "rtpengine" in systems and not ensure_rtpengine():
        systems.remove("rtpengine")
    build(args)
    raise_nofile()
    workdir = args.workdir or tempfile.mkdtemp(prefix="sb-media-")
    os.makedirs(workdir, exist_ok=True)
    log(f"scratch directory {workdir}; relay RSS cap {args.max_rss_gib} GiB")
    report = {}
    t0 = time.monotonic()
    for system in systems:
        results, best = search(args, workdir, system)
        report[system] = {"search": results, "best": best}
        if best is not None and args.final > 0:
            log(f"{system}: final run at {best['calls']} calls for {args.final} s")
            report[system]["final"] = run_level(args, workdir, system, best["calls"], args.final, "final")
        picked = report[system].get("final") or best
        if picked and picked.get("version"):
            report[f"{system}_version"] = picked["version"]
    log(f"done in {(time.monotonic() - t0) / 60:.1f} min")
    with open(os.path.join(workdir, "results.json"), "w") as f:
        json.dump(report, f, indent=1, default=str)
    cmdline = cps.command_line("media.py", ("--bin", "--rtpload", "--workdir", "--out"))
    cps.publish(markdown(args, report, cmdline), args.out)


if __name__ == "__main__":
    main()
