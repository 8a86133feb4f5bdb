#!/usr/bin/env python3
"""Browser calls (WebRTC <-> PSTN): concurrent calls placed from browsers
through the gateway to a G.711 far end, the browsers speaking only Opus
(the gateway transcodes Opus <-> PCMU), next to Janus's SIP plugin bridging
the same kind of calls.

    python3 scripts/bench/browser-calls.py [--quick] [--calls 300] [--step 50]
        [--step 25] [--rate 10] [--step-hold 10] [--hold 60]
        [--only switchboard-opus,switchboard-pcmu,janus-pcmu] [--far-end builtin|sipp]
        [--opus-complexity N] [--opus-bitrate N] [--media-threads N]
        [--bin <target>/release/switchboard] [--webrtcload <target>/release/webrtcload]
        [--out results.md]

Python 3 standard library only; everything runs on 127.0.0.1 in a scratch
directory (kept, and printed). Builds the release binaries of `switchboard`
and `webrtcload` (tests/webrtcload) with CARGO_TARGET_DIR (default
<repo>/target-bench) unless --bin / --webrtcload are given. Installs
Debian's `janus` with apt-get when it is missing (as root).

The load client is `webrtcload`: N "browsers" (str0m peers, full ICE, each
on its own UDP socket, driven by --threads media threads) each place one
call and send a 20 ms packet every 20 ms (pre-encoded Opus of a voice-like
signal, or PCMU); the far end ("PSTN") is built into it by default: a SIP
UAS answering PCMU only, sending its own 20 ms PCMU packets, so that each
direction is counted on its own. With --far-end sipp, SIPp answers
instead (`sipp -sn uas -rtp_echo`) and the browsers count the round trip.

Runs (--only):

- switchboard-opus: `switchboard gateway` (SQLite, log level warn, no
  recording), a trunk whose `address` is the far end; agents (a user and a
  session each) written into its database before it starts. Each browser
  page registers (`POST /v1/softphone`), opens its event stream
  (`/v1/events/ws?ticket=`), places its call (`POST /v1/calls {"to",
  "device_id"}`), answers the gateway's `webrtc.offer` with Opus only
  (`POST /v1/webrtc/legs/{id}/answer`): the gateway transcodes.
- switchboard-pcmu: the same with browsers speaking PCMU: no transcoding.
- janus-pcmu: Janus 1.1.2 (Debian) with its SIP plugin, HTTP API; each
  browser a session with a guest SIP handle calling sip:<number>@<far end>
  with its own offer. Janus's SIP plugin does not transcode, so the
  browsers speak PCMU; `janus-opus` shows what an Opus-only browser gets.

The calls ramp up in steps of --step at --rate calls/s; once a step's
calls are up, all calls are measured for --step-hold seconds, the last
step (--calls) for --hold seconds. Every sender pauses 300 ms at each
window's edges, so that the counters are read with nothing in flight. A window passes when every call is up
and loss is below --loss % in each direction. CPU of the relay (all its
threads), of the load client and of everything else comes from /proc per
window. The Markdown block printed at the end is what docs/benchmarks.md
records.
"""
import argparse
import base64
import datetime
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))

sys.dont_write_bytecode = True
_spec = importlib.util.spec_from_file_location("sip_cps", os.path.join(HERE, "sip-cps.py"))
cps = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cps)
log, sh, stop_process, raise_nofile = cps.log, cps.sh, cps.stop_process, cps.raise_nofile
status_kib, free_tcp_port, check_udp_free = cps.status_kib, cps.free_tcp_port, cps.check_udp_free
HOST = cps.HOST

GW_SIP_PORT = 5560
GW_WEBRTC_PORT = 30000      # the gateway's one WebRTC UDP port, named in the report
FAR_END_PORT = 5090
JANUS_HTTP_PORT = 8088
MAIN_LINE = "+14155550100"
TO_PREFIX = "+1212555"
RUNS = ["switchboard-opus", "switchboard-pcmu", "janus-pcmu", "janus-opus"]


def machine_ip():
    """The machine's own IPv4 address (no packet is sent). Janus (libnice)
    gathers no loopback candidates, so its browsers use this address; the
    traffic stays on the loopback device all the same."""
    import socket
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("10.255.255.255", 1))
        return s.getsockname()[0]


# ---------------------------------------------------------------- setup

def build(args):
    target = os.environ.get("CARGO_TARGET_DIR") or os.path.join(REPO, "target-bench")
    packages = [p for p, given in (("switchboard", args.bin), ("webrtcload", args.webrtcload)) if not given]
    if packages:
        if not ensure_apt("cmake", "cmake"):
            raise SystemExit("building needs CMake (libopus is built from source): apt-get install cmake")
        # One invocation: the load client links the gateway's library, built once.
        cmd = ["cargo", "build", "--release"] + [x for p in packages for x in ("-p", p)]
        if args.jobs:
            cmd += ["-j", str(args.jobs)]
        log(f"building: CARGO_TARGET_DIR={target} {' '.join(cmd)}")
        if subprocess.run(cmd, cwd=REPO, env=dict(os.environ, CARGO_TARGET_DIR=target)).returncode != 0:
            raise SystemExit("the release build failed")
    args.bin = args.bin or os.path.join(target, "release", "switchboard")
    args.webrtcload = args.webrtcload or os.path.join(target, "release", "webrtcload")
    for path, what in ((args.bin, "--bin"), (args.webrtcload, "--webrtcload")):
        if not os.access(path, os.X_OK):
            raise SystemExit(f"no executable at {path} ({what})")


def ensure_apt(binary, package):
    if shutil.which(binary):
        return True
    if os.geteuid() != 0:
        log(f"{binary} is not installed and this is not root: apt-get install -y {package}, then rerun")
        return False
    log(f"installing {package} (apt-get)")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-q"], env=env, stdout=subprocess.DEVNULL)
    r = subprocess.run(["apt-get", "install", "-y", "-q", "--no-install-recommends", package], env=env, stdout=subprocess.DEVNULL)
    return r.returncode == 0 and shutil.which(binary) is not None


def wait_http(url, proc, what, timeout=30, data=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(urllib.request.Request(url, data=data), timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"{what} not ready within {timeout} s")


# ---------------------------------------------------------------- relays

class Gateway:
    """`switchboard gateway` on a fresh SQLite data directory; a trunk to the far end."""

    def __init__(self, binary, workdir, name, far_port, opus_complexity=None, opus_bitrate=None, media_threads=None):
        self.binary = binary
        complexity = "" if opus_complexity is None else f"opus_complexity = {opus_complexity}\n"
        complexity += "" if opus_bitrate is None else f"opus_bitrate = {opus_bitrate}\n"
        complexity += "" if media_threads is None else f"threads = {media_threads}\n"
        self.dir = os.path.join(workdir, name)
        os.makedirs(self.dir, exist_ok=True)
        self.http = free_tcp_port()
        self.config = os.path.join(self.dir, "switchboard.toml")
        self.db = os.path.join(self.dir, "data", "switchboard.db")
        self.token_key = base64.b64encode(os.urandom(32)).decode()
        with open(self.config, "w") as f:
            f.write(f"""data_dir = "{self.dir}/data"

[sip]
udp = "{HOST}:{GW_SIP_PORT}"
tcp = "{HOST}:0"
ring_timeout_secs = 60

# The far end ("PSTN"): every outside number leaves through this trunk.
[[sip.trunks]]
name = "pstn"
address = "{HOST}:{far_port}"
inbound_from = ["{HOST}/32"]

[media]
bind_ip = "{HOST}"
port_min = 20000
port_max = 29999
webrtc = true
webrtc_port = {GW_WEBRTC_PORT}
{complexity}
[http]
listen = "{HOST}:{self.http}"

[auth]
token_key = "{self.token_key}"

[recordings]
record_all = false

[log]
level = "warn"
""")
        self.proc = None

    def prepare(self, webrtcload, agents):
        subprocess.run([self.binary, "--config", self.config, "migrate"], check=True, capture_output=True)
        self.agents = os.path.join(self.dir, "agents.json")
        r = subprocess.run([webrtcload, "provision", "--db", f"sqlite://{self.db}", "--token-key", self.token_key,
                            "--agents", str(agents), "--main-line", MAIN_LINE, "--out", self.agents],
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise SystemExit(f"webrtcload provision failed: {r.stderr.strip()}")

    def start(self):
        check_udp_free(GW_SIP_PORT)
        self.log = open(os.path.join(self.dir, "gateway.log"), "wb")
        self.proc = subprocess.Popen([self.binary, "--config", self.config, "gateway"], stdout=self.log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, preexec_fn=raise_nofile)
        wait_http(f"http://{HOST}:{self.http}/healthz", self.proc, "switchboard gateway")

    def client_args(self):
        return ["switchboard", "--http", f"http://{HOST}:{self.http}", "--agents", self.agents]

    def version(self):
        return sh(f"{self.binary} --version")

    def stop(self):
        if self.proc:
            stop_process(self.proc, grace=20)
            self.log.close()


class Janus:
    """Debian's janus with the configuration of scripts/bench/janus/."""

    def __init__(self, workdir, name, event_loops):
        self.dir = os.path.join(workdir, name)
        os.makedirs(self.dir, exist_ok=True)
        self.ip = machine_ip()
        subst = {"@DIR@": self.dir, "@EVENT_LOOPS@": str(event_loops), "@ICE_IP@": self.ip, "@HTTP_PORT@": str(JANUS_HTTP_PORT)}
        for name in ("janus.jcfg", "janus.plugin.sip.jcfg", "janus.transport.http.jcfg"):
            with open(os.path.join(HERE, "janus", name)) as f:
                text = f.read()
            for k, v in subst.items():
                text = text.replace(k, v)
            with open(os.path.join(self.dir, name), "w") as f:
                f.write(text)
        self.proc = None

    def prepare(self, webrtcload, agents):
        pass

    def start(self):
        self.log = open(os.path.join(self.dir, "janus.log"), "wb")
        self.proc = subprocess.Popen(["janus", "-C", os.path.join(self.dir, "janus.jcfg"), "-F", self.dir, "-o"],
                                     stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     preexec_fn=raise_nofile)
        wait_http(f"http://{HOST}:{JANUS_HTTP_PORT}/janus", self.proc, "janus",
                  data=b'{"janus":"info","transaction":"ready"}')

    def client_args(self):
        return ["janus", "--janus", f"http://{HOST}:{JANUS_HTTP_PORT}/janus", "--ip", self.ip]

    def version(self):
        return f"Janus {sh('dpkg-query -W -f=' + chr(39) + '${Version}' + chr(39) + ' janus')} (Debian)"

    def stop(self):
        if self.proc:
            stop_process(self.proc, grace=20)
            self.log.close()


class Sipp:
    """SIPp as the far end, echoing RTP (`-rtp_echo`)."""

    def __init__(self, workdir, name):
        self.dir = os.path.join(workdir, name)
        os.makedirs(self.dir, exist_ok=True)
        self.proc = None

    def start(self):
        check_udp_free(FAR_END_PORT)
        self.log = open(os.path.join(self.dir, "sipp.log"), "wb")
        self.proc = subprocess.Popen(["sipp", "-sn", "uas", "-i", HOST, "-p", str(FAR_END_PORT), "-mi", HOST, "-rtp_echo",
                                      "-nostdin", "-trace_err", "-max_socket", "4096"],
                                     cwd=self.dir, stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     preexec_fn=raise_nofile)
        time.sleep(1)
        if self.proc.poll() is not None:
            raise SystemExit(f"sipp exited with {self.proc.returncode}; see {self.dir}/sipp.log")

    def stop(self):
        if self.proc:
            stop_process(self.proc, grace=5)
            self.log.close()


# ---------------------------------------------------------------- one run

class RssSampler(threading.Thread):
    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid, self.samples, self.stopped = pid, [], threading.Event()

    def run(self):
        while not self.stopped.wait(1.0):
            try:
                self.samples.append(status_kib(self.pid, "VmRSS"))
            except OSError:
                pass

    def stop(self):
        self.stopped.set()
        self.join()


def run_one(args, workdir, run):
    system, codec = run.split("-")
    calls = args.calls if run != "janus-opus" else min(args.calls, 5)
    d = os.path.join(workdir, run)
    os.makedirs(d, exist_ok=True)
    far_port = FAR_END_PORT
    relay = Gateway(args.bin, workdir, f"{run}-relay", far_port, args.opus_complexity, args.opus_bitrate, args.media_threads) if system == "switchboard" else Janus(workdir, f"{run}-relay", args.janus_event_loops)
    sipp = Sipp(workdir, f"{run}-sipp") if args.far_end == "sipp" else None
    result = {"run": run, "system": system, "codec": codec, "calls": calls, "dir": d}
    try:
        relay.prepare(args.webrtcload, calls)
        relay.start()
        if sipp:
            sipp.start()
        time.sleep(2)
        result["version"] = relay.version()
        result["rss_before_kib"] = status_kib(relay.proc.pid, "VmRSS")
        out = os.path.join(d, "webrtcload.json")
        step = args.step if run != "janus-opus" else calls
        cmd = [args.webrtcload] + relay.client_args() + [
            "--calls", str(calls), "--step", str(step), "--rate", str(args.rate),
            "--step-hold", str(args.step_hold), "--hold", str(args.hold if run != "janus-opus" else 5),
            "--codec", codec, "--threads", str(args.threads), "--far-end", f"{HOST}:{far_port}",
            "--to-prefix", TO_PREFIX, "--loss", str(args.loss), "--jitter-ms", str(args.jitter_ms),
            "--watch-pid", str(relay.proc.pid), "--json", out]
        if args.client_nice:
            cmd = ["nice", "-n", str(args.client_nice)] + cmd
        if sipp:
            cmd.append("--echo")
        log(f"{run}: {' '.join(cmd)}")
        rss = RssSampler(relay.proc.pid)
        rss.start()
        drops0 = cps.udp_rcvbuf_errors()
        with open(os.path.join(d, "webrtcload.log"), "wb") as gen_log:
            gen = subprocess.Popen(cmd, stderr=subprocess.STDOUT, stdout=gen_log, stdin=subprocess.DEVNULL, preexec_fn=raise_nofile)
            tee = threading.Thread(target=tail_log, args=(os.path.join(d, "webrtcload.log"), gen), daemon=True)
            tee.start()
            limit = calls / args.rate + (calls // max(step, 1)) * (args.step_hold + 30) + args.hold + 300
            try:
                gen.wait(timeout=limit)
            except subprocess.TimeoutExpired:
                gen.kill()
                gen.wait()
            tee.join(timeout=2)
        rss.stop()
        result["udp_drops"] = cps.udp_rcvbuf_errors() - drops0
        result["relay_alive"] = relay.proc.poll() is None
        result["rss_max_kib"] = max(rss.samples or [0])
        if gen.returncode != 0 or not os.path.exists(out):
            result["error"] = f"webrtcload exited with {gen.returncode}; see {d}/webrtcload.log"
            return result
        with open(out) as f:
            result["report"] = json.load(f)
        return result
    finally:
        if sipp:
            sipp.stop()
        relay.stop()


def tail_log(path, proc):
    """Shows the load client's progress lines while it runs."""
    with open(path, errors="replace") as f:
        while True:
            line = f.readline()
            if line:
                print("    " + line.rstrip(), file=sys.stderr, flush=True)
            elif proc.poll() is not None:
                return
            else:
                time.sleep(0.5)


# ---------------------------------------------------------------- report

def machine():
    model = ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem = next(int(l.split()[1]) for l in f if l.startswith("MemTotal:")) / 1024 / 1024
    osname = sh(". /etc/os-release && echo $PRETTY_NAME")
    return f"{os.cpu_count()} cores (nproc), {model}, {mem:.0f} GiB, {osname}, Linux {platform.release()}"


def ms(us):
    return f"{us / 1000:.2f}"


def capacity(res, key="passed"):
    """(calls at the last passing window, whether a window failed)."""
    r = res.get("report")
    if not r:
        return 0, True
    best = 0
    for w in r["windows"]:
        if not w[key]:
            return best, True
        best = w["calls_target"]
    return best, False


def window_table(res):
    r = res["report"]
    echo = r["echo"]
    head = "| window | calls up | browser → far end: sent / received (loss %) | far end → browser: sent / received (loss %) | added jitter p50 / p99 (ms), to far end · to browser | RFC 3550 jitter p99 (ms), to far end · to browser | CPU relay / client / other (% of a core) | relay CPU per call | UDP drops at relay / client sockets | send lateness p99 (ms) | result |"
    if echo:
        head = head.replace("far end → browser", "round trip (SIPp echo)")
    rows = [head, "|---|---|---|---|---|---|---|---|---|---|---|"]
    for w in r["windows"] + [r["totals"]]:
        tf, tb = w["to_far"], w["to_browser"]
        label = "total (senders stopped, drained)" if w["label"] == "total" else f"{w['label']} {w['calls_target']}, {w['seconds']:.0f} s"
        far = "—" if echo else f"{tf['sent']} / {tf['received']} ({tf['loss_pct']:.4f})"
        cpu = "" if w["label"] == "total" else f"{w['cpu_target_pct']:.0f} / {w['cpu_client_pct']:.0f} / {w['cpu_other_pct']:.0f}"
        per_call = "" if w["label"] == "total" or not w["calls_up"] else f"{w['cpu_target_pct'] / w['calls_up']:.2f} %"
        jf = "—" if echo else f"{ms(tf['added_jitter_us']['p50'])} / {ms(tf['added_jitter_us']['p99'])}"
        jit = "" if w["label"] == "total" else f"{jf} · {ms(tb['added_jitter_us']['p50'])} / {ms(tb['added_jitter_us']['p99'])}"
        rf = "—" if echo else ms(tf['rfc3550_jitter_p99_us'])
        rfc = "" if w["label"] == "total" else f"{rf} · {ms(tb['rfc3550_jitter_p99_us'])}"
        late = "" if w["label"] == "total" else ms(w["send_lateness_us"]["p99"])
        drops = "" if w["label"] == "total" else f"{w['udp_drops_relay']} / {w['udp_drops_client']}"
        rows.append(f"| {label} | {w['calls_up']} | {far} | {tb['sent']} / {tb['received']} ({tb['loss_pct']:.4f}) | {jit} | {rfc} | {cpu} | {per_call} | {drops} | {late} | {w['verdict']} |")
    return "\n".join(rows)


TITLES = {
    "switchboard-opus": "Switchboard, browsers Opus only (transcoded to PCMU)",
    "switchboard-pcmu": "Switchboard, browsers PCMU (passed through)",
    "janus-pcmu": "Janus SIP plugin, browsers PCMU (relayed; Janus does not transcode)",
    "janus-opus": "Janus SIP plugin, browsers Opus only",
}


def markdown(args, results, cmdline):
    out = []
    commit = sh(f"git -C {HERE} rev-parse --short HEAD")
    dirty = sh(f"git -C {REPO} status --porcelain -- services proto Cargo.lock | wc -l").strip()
    tree = f"commit {commit}" + (f" plus {dirty} uncommitted changes under services/" if dirty not in ("", "0") else "")
    versions = "; ".join(sorted({r["version"] for r in results if r.get("version")}))
    out.append(f"Run {datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')} on {machine()}; {versions}; "
               f"built from the working tree at {tree}.")
    out.append("")
    far = ("the built-in far end of webrtcload (SIP UAS on UDP answering PCMU only, sending its own 20 ms PCMU packets)"
           if args.far_end == "builtin" else "SIPp 3.6 `-sn uas -rtp_echo` (loss is the round trip)")
    out.append(f"Command: `{cmdline}` — {args.calls} calls in steps of {args.step} at {args.rate:g} calls/s, each step "
               f"measured {args.step_hold:g} s once its calls are up, the last held {args.hold:g} s; far end: {far}; "
               f"{args.threads} media threads in the load client (nice {args.client_nice}). Pass: every call up, loss < {args.loss} % each way, "
               f"and the load client sent at least 99 % of its packets (else the machine, not the relay, is the limit); the "
               f"last column adds added jitter p99 < {args.jitter_ms:g} ms each way. "
               f"CPU in % of one core (the machine has {os.cpu_count()}); \"other\" is everything else on the machine.")
    out.append("")
    for res in results:
        title = TITLES.get(res['run'], res['run'])
        if res["run"] == "switchboard-opus":
            chosen = [f"media.opus_complexity {args.opus_complexity}" if args.opus_complexity is not None else None,
                      f"media.opus_bitrate {args.opus_bitrate}" if args.opus_bitrate is not None else None,
                      f"media.threads {args.media_threads}" if args.media_threads is not None else None]
            chosen = [c for c in chosen if c]
            title = title[:-1] + (f", the gateway with {' and '.join(chosen)})" if chosen
                                  else ", Opus at the gateway's defaults: media.opus_complexity 0, media.opus_bitrate 24000)")
        out.append(f"{title}:")
        out.append("")
        if "report" not in res:
            out.append(f"Failed: {res.get('error', 'no report')}.")
            out.append("")
            continue
        r = res["report"]
        out.append(window_table(res))
        out.append("")
        extra = [f"{r['calls_up']} of {r['calls']} calls up, set-up p50/p99 {r['setup_ms']['p50']}/{r['setup_ms']['p99']} ms "
                 f"(from the request to media both ways)",
                 f"relay RSS {res['rss_before_kib'] / 1024:.1f} MiB before, {res['rss_max_kib'] / 1024:.1f} MiB at most"]
        hold = r["windows"][-1] if r["windows"] else None
        if hold:
            tf, tb = hold["to_far"], hold["to_browser"]
            ts = []
            if not r["echo"]:
                ts.append(f"{tf['rtp_ts_per_packet']:.0f} per 20 ms packet at the far end (PCMU: {tf['rtp_ts_expected']})")
            ts.append(f"{tb['rtp_ts_per_packet']:.0f} at the browsers ({r['codec'].upper()}: {tb['rtp_ts_expected']})")
            extra.append("RTP timestamp units " + ", ".join(ts))
        for w in r["windows"]:
            if w["calls_target"] == capacity(res)[0] or w is r["windows"][-1]:
                threads = ", ".join(f"{name.strip() or '?'} ×{n} {p:.0f}" for name, n, p in w["relay_threads"][:6])
                extra.append(f"relay threads at {w['calls_target']} calls (name × threads, % of a core): {threads}")
                if w["relay_drop_ports"]:
                    ports = ", ".join(f"{'the WebRTC port ' if port == GW_WEBRTC_PORT and res['system'] == 'switchboard' else 'port '}{port}: {d}" for port, d in w["relay_drop_ports"])
                    extra.append(f"relay sockets dropping most at {w['calls_target']} calls: {ports}")
        if hold and hold["stalls"]:
            stalls = ", ".join(f"{t} s ({f:.0f} · {b:.0f})" for t, f, b in hold["stalls"][:12])
            more = f" and {len(hold['stalls']) - 12} more" if len(hold["stalls"]) > 12 else ""
            extra.append(f"seconds of the hold with a packet ≥ {args.jitter_ms:g} ms late (peak ms at the far end · at the browsers): {stalls}{more}")
        if r["failures"]:
            extra.append("failures: " + "; ".join(f"{n}× {why}" for why, n in r["failures"][:3]))
        if r.get("far_end"):
            fe = r["far_end"]
            extra.append(f"far end: {fe['invites']} INVITEs, {fe['answered']} answered, {fe['refused_codec']} refused for want of PCMU, {fe['byes']} BYEs")
        out.append("; ".join(extra) + ".")
        out.append("")
    out.append("| run | calls at < " + f"{args.loss} % loss" + " | relay CPU at that step (% of a core) | relay CPU per call | added jitter p99 at that step, to far end · to browser (ms) | first failing step | calls also at added jitter p99 < " + f"{args.jitter_ms:g} ms |")
    out.append("|---|---|---|---|---|---|---|")
    caps = {}
    for res in results:
        n, failed = capacity(res)
        caps[res["run"]] = (n, failed)
        r = res.get("report")
        w = next((w for w in (r["windows"] if r else []) if w["calls_target"] == n), None)
        cpu = f"{w['cpu_target_pct']:.0f}" if w else ""
        per = f"{w['cpu_target_pct'] / max(w['calls_up'], 1):.2f} %" if w else ""
        jit = f"{ms(w['to_far']['added_jitter_us']['p99'])} · {ms(w['to_browser']['added_jitter_us']['p99'])}" if w else ""
        first = r["first_failing_step"] if r and r.get("first_failing_step") else ("—" if r else "no report")
        nj, failed_j = capacity(res, "passed_with_jitter")
        out.append(f"| {res['run']} | {n}{'' if failed else ' (all steps passed)'} | {cpu} | {per} | {jit} | {first} | {nj}{'' if failed_j else ' (all steps passed)'} |")
    for a, b in (("switchboard-opus", "janus-pcmu"), ("switchboard-pcmu", "janus-pcmu")):
        if a in caps and b in caps and caps[b][0]:
            ratio = caps[a][0] / caps[b][0]
            a_open, b_open = not caps[a][1], not caps[b][1]
            if a_open and b_open:
                text = f"{ratio:.2f} (neither failed up to {args.calls} calls: not known)"
            elif b_open:
                text = f"≤ {ratio:.2f} ({b} did not fail up to {args.calls} calls)"
            elif a_open:
                text = f"≥ {ratio:.2f} ({a} did not fail up to {args.calls} calls)"
            else:
                text = f"{ratio:.2f}"
            out.append(f"| ratio {a} / {b}, calls at < {args.loss} % loss | {text} | | | | | |")
    same = [res for res in results if res.get("report") and capacity(res)[0]]
    if len(same) > 1:
        # The largest step every run passed: CPU per call of calls that all work.
        n = min(capacity(res)[0] for res in same)
        row = []
        for res in same:
            w = next((w for w in res["report"]["windows"] if w["calls_target"] == n), None)
            if w and w["calls_up"]:
                row.append(f"{res['run']} {w['cpu_target_pct'] / w['calls_up']:.2f} %")
        out.append(f"| relay CPU per call at {n} calls (every run passing) | {', '.join(row)} | | | | | |")
    out.append("")
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", help="switchboard binary (default: built)")
    ap.add_argument("--webrtcload", help="webrtcload binary (default: built)")
    ap.add_argument("--jobs", type=int, help="cargo -j (e.g. 1 on a shared machine)")
    ap.add_argument("--quick", action="store_true", help="a smoke run: 20 calls in steps of 10, 5 s windows, 10 s hold")
    ap.add_argument("--only", default="switchboard-opus,switchboard-pcmu,janus-pcmu", help=f"comma-separated, of {', '.join(RUNS)}")
    ap.add_argument("--calls", type=int, default=300)
    ap.add_argument("--step", type=int, default=25)
    ap.add_argument("--rate", type=float, default=10, help="calls placed per second during the ramp")
    ap.add_argument("--step-hold", type=float, default=10, help="seconds each intermediate step is measured")
    ap.add_argument("--hold", type=float, default=60, help="seconds the last step is held and measured")
    ap.add_argument("--loss", type=float, default=0.1, help="pass: loss below this %% each way")
    ap.add_argument("--jitter-ms", type=float, default=50, help="second verdict: added jitter p99 below this each way as well")
    ap.add_argument("--client-nice", type=int, default=None,
                    help="nice value of the load client (default -10 as root, else 0): the client is the instrument, "
                         "and a relay with hundreds of busy threads would otherwise starve its two media threads")
    ap.add_argument("--threads", type=int, default=2, help="media threads of the load client")
    ap.add_argument("--opus-complexity", type=int, default=None,
                    help="the gateway's media.opus_complexity (default: not set, the gateway's default)")
    ap.add_argument("--opus-bitrate", type=int, default=None,
                    help="the gateway's media.opus_bitrate (default: not set, the gateway's default)")
    ap.add_argument("--media-threads", type=int, default=None,
                    help="the gateway's media.threads (default: not set, two per CPU)")
    ap.add_argument("--far-end", choices=["builtin", "sipp"], default="builtin")
    ap.add_argument("--janus-event-loops", type=int, default=0, help="janus.jcfg event_loops (0: a thread per handle, the default)")
    ap.add_argument("--workdir", help="scratch directory (default: a new one under /tmp, kept)")
    ap.add_argument("--out", help="also write the Markdown block to this file")
    args = ap.parse_args()
    if args.quick:
        args.calls, args.step, args.step_hold, args.hold = 20, 10, 5, 10
    if args.client_nice is None:
        args.client_nice = -10 if os.geteuid() == 0 else 0
    runs = [r for r in args.only.split(",") if r]
    for r in runs:
        if r not in RUNS:
            raise SystemExit(f"--only: unknown run {r}")
    if any(r.startswith("janus") for r in runs) and not ensure_apt("janus", "janus"):
        runs = [r for r in runs if not r.startswith("janus")]
    if args.far_end == "sipp" and not ensure_apt("sipp", "sip-tester"):
        raise SystemExit("--far-end sipp needs SIPp (apt-get install sip-tester)")
    build(args)
    raise_nofile()
    workdir = args.workdir or tempfile.mkdtemp(prefix="sb-browser-calls-")
    os.makedirs(workdir, exist_ok=True)
    log(f"scratch directory {workdir}")
    results = []
    for run in runs:
        res = run_one(args, workdir, run)
        if "error" in res:
            log(f"{run}: {res['error']}")
        results.append(res)
    with open(os.path.join(workdir, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    cmdline = cps.command_line("browser-calls.py", ("--bin", "--webrtcload", "--workdir", "--out", "--jobs"))
    cps.publish(markdown(args, results, cmdline), args.out)


if __name__ == "__main__":
    main()
