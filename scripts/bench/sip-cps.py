#!/usr/bin/env python3
"""SIP calls per second through the gateway, next to Kamailio, and memory
per registration and per idle dialog.

    python3 scripts/bench/sip-cps.py [--quick] [--bin <target>/release/switchboard]
                                     [--only cps,kamailio,memory] [--out results.md]

Needs `sipp` (Debian sip-tester 3.6) and, for the comparison, `kamailio`
(Debian 5.6); Python 3 standard library only. Everything runs on 127.0.0.1
and in a scratch directory (kept, and printed, for inspection).

1. Calls per second. Starts `switchboard gateway` on a fresh SQLite data
   directory (recording off, log level warn), provisions with
   `switchboard admin` one user per SIPp device, a device at that SIPp
   address and a number routed to the user. Then, for each step of the
   ramp, M SIPp callers (scripts/bench/sipp/uac_cps.xml: INVITE with a
   PCMU offer, 100/180/200, ACK, BYE at once) each call their own number
   at rate/M calls per second for the window, and M SIPp devices
   (uas_cps.xml) answer. A step passes when no call failed on either side,
   no unexpected message arrived, and the callers together completed calls
   at 95 % of the target rate or more; the ramp stops at the first step that
   fails and bisects between the last pass and that failure. The load is
   sustained: steps follow each other without waiting for the gateway to
   forget finished calls (it keeps each for 32 s to absorb retransmissions).
   Response times are SIPp's INVITE->200 (and BYE->200) per call from
   -trace_rtt (1 ms resolution). The gateway's CPU (per cent of one core,
   from /proc/<pid>/stat), the whole machine's busy share (/proc/stat) and
   the gateway's peak RSS (VmHWM) are reported.

2. The same ramp against Kamailio configured as a transaction-stateful,
   record-routing proxy (scripts/bench/kamailio.cfg: tm, t_relay), run in
   the foreground with its own runtime directory and stopped afterwards.
   Our CPS is reported as a ratio of Kamailio's.

3. Memory. A fresh gateway on a database holding N devices with digest
   credentials (default 100,000). They are written straight into SQLite,
   because creating them one by one through `switchboard admin` costs a
   process start each: one row in `users` and one in `devices` per device,
   with `sip_username` and the stored secrets `ha1_md5 = md5(user:realm:
   password)` and `ha1_sha256 = sha256(user:realm:password)`, lower-case hex,
   exactly what `Directory::set_device_credentials` stores (directory.rs,
   sip/digest.rs `ha1`); realm is `sip.realm` (default `switchboard`).
   RSS is read, then every device registers with digest authentication
   (REGISTER, 401, REGISTER with Authorization, 200), then RSS is read
   again: (after - before) / N is the memory per registration. The
   registrations are done by a small asyncio client in this script, not by
   SIPp: Debian's SIPp 3.6.1 joins all WWW-Authenticate headers of a 401
   into one and reads the first `algorithm=`, which is the gateway's
   SHA-256 challenge (offered before MD5, RFC 8760); SIPp 3.6 only computes
   MD5, so its [authentication] fails. The client answers the MD5 challenge
   (`--algorithm sha256` for the other). The gateway keeps registrations in
   the database (table `registrations`), not in memory; the database file's
   growth per registration is reported too. Then K calls (default 4,000)
   are set up and held (uac_cps.xml with -d): (RSS with K calls - RSS
   before) / K is the memory per idle dialog, which includes the four RTP
   sockets each call anchors.

The Markdown block printed at the end (machine, date, versions, commands,
tables) is what docs/benchmarks.md records.
"""
import argparse
import asyncio
import csv
import datetime
import glob
import hashlib
import os
import platform
import re
import resource
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
SCENARIOS = os.path.join(HERE, "sipp")
UAC_XML = os.path.join(SCENARIOS, "uac_cps.xml")
UAS_XML = os.path.join(SCENARIOS, "uas_cps.xml")
KAMAILIO_CFG = os.path.join(HERE, "kamailio.cfg")
HOST = "127.0.0.1"
CLK_TCK = os.sysconf("SC_CLK_TCK")

# Fixed local ports, all below the gateway's RTP range and the ephemeral range.
GW_SIP_PORT = 5560
KAM_SIP_PORT = 5570
UAS_PORT = 6000  # + 10 * i
UAC_PORT = 6500  # + 10 * i
UAS_MEDIA = 7000  # + 10 * i
UAC_MEDIA = 7500  # + 10 * i
GW_MEDIA_MIN, GW_MEDIA_MAX = 10_000, 31_999  # 22,000 ports: 5,500 calls of 4


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def command_line(script, local_options):
    """How the run was invoked, as docs/benchmarks.md records it: without
    the options that name paths on this machine (`local_options`)."""
    shown, skip = [], False
    for a in sys.argv[1:]:
        if skip:
            skip = False
        elif a.split("=")[0] in local_options:
            skip = "=" not in a
        else:
            shown.append(a)
    return (f"python3 scripts/bench/{script} " + " ".join(shown)).strip()


def publish(md, out):
    """Prints the Markdown block and writes it to `out` too, if given."""
    print(md)
    if out:
        with open(out, "w") as f:
            f.write(md + "\n")


def free_tcp_port():
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def check_udp_free(port):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind((HOST, port))
        except OSError:
            raise SystemExit(f"UDP port {HOST}:{port} is taken; stop what uses it and rerun")


def number(i):
    """The dialled number of device i; its last digit is i (kamailio.cfg relies on that)."""
    return f"1415555100{i}"


def raise_nofile():
    """Open files up to the hard limit, and as root beyond it: each held call
    takes four RTP sockets in the gateway."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard
    if os.geteuid() == 0:
        try:
            with open("/proc/sys/fs/nr_open") as f:
                want = max(hard, min(int(f.read()), 1 << 20))
        except (OSError, ValueError):
            pass
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, want))
    except (OSError, ValueError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def percentile(sorted_values, p):
    if not sorted_values:
        return float("nan")
    k = max(0, min(len(sorted_values) - 1, int(round(p / 100 * len(sorted_values) + 0.5)) - 1))
    return sorted_values[k]


def kib(n):
    return n / 1024


# ---------------------------------------------------------------- processes

def proc_ticks(pid):
    """utime + stime of a process (all its threads), in clock ticks."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])
    except (OSError, IndexError):
        return 0


def group_pids(pgid):
    pids = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                if os.getpgid(int(d)) == pgid:
                    pids.append(int(d))
            except OSError:
                pass
    return pids


def machine_ticks():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + v[4]
    return sum(v[:8]), idle


def udp_rcvbuf_errors():
    """Datagrams the kernel dropped for a full socket receive buffer (all sockets)."""
    with open("/proc/net/snmp") as f:
        rows = [line.split() for line in f if line.startswith("Udp:")]
    return int(dict(zip(rows[0], rows[1])).get("RcvbufErrors", 0))


def status_kib(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


class CpuMeter:
    """CPU used by a process (or a whole process group) and by the machine
    between start() and stop(), in per cent of one core. Ticks of processes
    that exit meanwhile are lost, which does not happen to the servers
    measured here."""

    def __init__(self, pid=None, pgid=None):
        self.pid, self.pgid = pid, pgid

    def _ticks(self):
        if self.pgid is not None:
            return sum(proc_ticks(p) for p in group_pids(self.pgid))
        return proc_ticks(self.pid)

    def start(self):
        self.t0, self.p0, self.m0 = time.monotonic(), self._ticks(), machine_ticks()

    def stop(self):
        """(server % of one core, machine busy % of one core)."""
        wall = time.monotonic() - self.t0
        p1, m1 = self._ticks(), machine_ticks()
        proc = (p1 - self.p0) / CLK_TCK / wall * 100
        total, idle = m1[0] - self.m0[0], m1[1] - self.m0[1]
        busy = (os.cpu_count() or 1) * 100 * (total - idle) / total if total else 0.0
        return proc, busy


def wait_quiet(threshold, max_wait=180):
    """Waits until the whole machine uses less than `threshold` % of one core
    over 3 s (nothing of ours is running then), at most `max_wait` s."""
    deadline = time.monotonic() + max_wait
    while True:
        m0 = machine_ticks()
        time.sleep(3)
        m1 = machine_ticks()
        total, idle = m1[0] - m0[0], m1[1] - m0[1]
        busy = (os.cpu_count() or 1) * 100 * (total - idle) / total if total else 0.0
        if busy < threshold or time.monotonic() > deadline:
            log(f"machine busy {busy:.0f} % of a core")
            return busy


def stop_process(p, sig=signal.SIGTERM, grace=10):
    if p.poll() is not None:
        return
    try:
        p.send_signal(sig)
        p.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()


# ---------------------------------------------------------------- SIPp

class Sipp:
    """One SIPp process in its own directory (so its trace files are its own)."""

    def __init__(self, workdir, args, name):
        self.dir = os.path.join(workdir, name)
        os.makedirs(self.dir, exist_ok=True)
        self.name = name
        cmd = ["sipp"] + args + ["-nostdin", "-buff_size", "4194304",
                                 "-trace_stat", "-fd", "1", "-trace_screen", "-trace_err", "-trace_rtt", "-rtt_freq", "100"]
        self.cmd = cmd
        self.out = open(os.path.join(self.dir, "stdout.log"), "wb")
        self.proc = subprocess.Popen(cmd, cwd=self.dir, stdout=self.out, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, preexec_fn=raise_nofile)

    def wait(self, timeout):
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self):
        # SIGUSR1 is SIPp's soft quit (like 'q'): it writes its final statistics.
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGUSR1)
            if self.wait(5) is None:
                self.proc.send_signal(signal.SIGUSR1)  # second 'q' forces the exit
                if self.wait(5) is None:
                    self.proc.kill()
                    self.proc.wait()
        self.out.close()

    def _file(self, pattern):
        found = sorted(glob.glob(os.path.join(self.dir, pattern)))
        return found[-1] if found else None

    def stats(self):
        """The last (cumulative) line of the -trace_stat CSV, as a dict."""
        path = self._file("*_[0-9]*_.csv")
        if not path:
            return {}
        with open(path, newline="", errors="replace") as f:
            rows = list(csv.reader(f, delimiter=";"))
        if len(rows) < 2:
            return {}
        return dict(zip(rows[0], rows[-1]))

    def rtts(self):
        """[(date_ms, ms)] of INVITE->200 and of BYE->200 from -trace_rtt."""
        path = self._file("*_rtt.csv")
        inv, bye = [], []
        if path:
            with open(path, errors="replace") as f:
                for line in f:
                    parts = line.strip().split(";")
                    if len(parts) != 3 or parts[0] == "Date_ms":
                        continue
                    (inv if parts[2] == "invite" else bye).append((float(parts[0]), float(parts[1])))
        return inv, bye

    def errors(self, limit=3):
        """The distinct events of the -trace_err file, most frequent first;
        messages for calls already over ("Dead call") only if nothing else."""
        path = self._file("*_errors.log")
        if not path:
            return []
        with open(path, errors="replace") as f:
            text = f.read()
        counts = {}
        for ev in re.split(r"(?=\d{4}-\d\d-\d\d\t[\d:.]+\t[\d.]+: )", text):
            m = re.match(r"\d{4}-\d\d-\d\d\t[\d:.]+\t[\d.]+: (.*)", ev, re.S)
            if not m:
                continue
            lines = m.group(1).splitlines()
            key = lines[0] if lines else ""
            if "received '" in key and len(key.split("received '", 1)[1]) < 3 and len(lines) > 1:
                key += lines[1]
            key = re.sub(r"\S+@127\.0\.0\.1", "…", key)
            key = re.sub(r"call\s*\d+", "call …", key)
            counts[key] = counts.get(key, 0) + 1
        items = sorted(counts.items(), key=lambda kv: -kv[1])
        live = [kv for kv in items if not kv[0].startswith("Dead call")]
        return [f"{n}x {k[:160]}" for k, n in (live or items)[:limit]]

    def screen_failures(self):
        """Rows of the final screen's message table with timeouts or unexpected messages."""
        path = self._file("*_screen.log")
        out = []
        if not path:
            return out
        with open(path, errors="replace") as f:
            for line in f:
                m = re.match(r"\s*(?:(<-+|-+>)\s+(\S+)|(\S+)\s+(<-+|-+>))\s+(?:[BE]-RTD\d\s+)?(\d+)\s+(\d+)(?:\s+(\d+))?(?:\s+(\d+))?", line)
                if m:
                    a1, m1, m2, a2, n, retrans, timeout, unexpected = m.groups()
                    msg, arrow = m1 or m2, a1 or a2
                    timeout, unexpected = int(timeout or 0), int(unexpected or 0)
                    if timeout or unexpected:
                        sent = arrow.endswith(">") if m2 else arrow.startswith("<")
                        what = "sent" if sent else "awaited"
                        out.append(f"{msg} ({what}): {timeout} timeouts, {unexpected} unexpected")
                if line.startswith("---") and out:
                    break
        return out


def stat_int(stats, key):
    try:
        return int(float(stats.get(key, "0") or 0))
    except ValueError:
        return 0


# ---------------------------------------------------------------- the gateway

class Gateway:
    def __init__(self, binary, workdir, name, log_level="warn"):
        self.binary = binary
        self.dir = os.path.join(workdir, name)
        os.makedirs(self.dir, exist_ok=True)
        self.http = free_tcp_port()
        self.config = os.path.join(self.dir, "switchboard.toml")
        self.db = os.path.join(self.dir, "data", "switchboard.db")
        with open(self.config, "w") as f:
            f.write(f"""data_dir = "{self.dir}/data"

[sip]
udp = "{HOST}:{GW_SIP_PORT}"
tcp = "{HOST}:0"
ring_timeout_secs = 60

# SIPp callers on {HOST} play the carrier: a trunk trusted by address (and
# so exempt from the per-source rate limit, like a real carrier).
[[sip.trunks]]
name = "bench-carrier"
inbound_from = ["{HOST}/32"]

[media]
bind_ip = "{HOST}"
port_min = {GW_MEDIA_MIN}
port_max = {GW_MEDIA_MAX}

[http]
listen = "{HOST}:{self.http}"

[recordings]
record_all = false

[log]
level = "{log_level}"
""")
        self.proc = None

    def cli(self, *args):
        cmd = [self.binary, "--config", self.config] + list(args) + ["--json"]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed ({r.returncode}): {r.stderr.strip()}")
        return r.stdout

    def migrate(self):
        subprocess.run([self.binary, "--config", self.config, "migrate"], check=True, capture_output=True)

    def provision_devices(self, count):
        """One user, device (at SIPp device i) and number per i, through `switchboard admin`."""
        import json
        for i in range(count):
            user = json.loads(self.cli("admin", "user", "add", "--name", f"Bench Agent {i}"))
            self.cli("admin", "device", "add", "--user", user["id"], "--name", f"sipp-{i}",
                     "--contact", f"sip:device@{HOST}:{UAS_PORT + 10 * i}")
            self.cli("admin", "number", "add", "+" + number(i), "--user", user["id"])

    def start(self):
        check_udp_free(GW_SIP_PORT)
        self.stderr = open(os.path.join(self.dir, "gateway.log"), "wb")
        self.proc = subprocess.Popen([self.binary, "--config", self.config, "gateway"], stdout=self.stderr,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, preexec_fn=raise_nofile)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"switchboard gateway exited with {self.proc.returncode}; see {self.dir}/gateway.log")
            try:
                with urllib.request.urlopen(f"http://{HOST}:{self.http}/healthz", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.05)
        raise SystemExit("switchboard gateway not ready within 30 s")

    def metric(self, name):
        try:
            with urllib.request.urlopen(f"http://{HOST}:{self.http}/metrics", timeout=5) as r:
                for line in r.read().decode().splitlines():
                    if line.startswith(name + " ") or line.startswith(name + "{"):
                        return float(line.rsplit(" ", 1)[1])
        except OSError:
            pass
        return None

    def rss_kib(self):
        return status_kib(self.proc.pid, "VmRSS")

    def hwm_kib(self):
        return status_kib(self.proc.pid, "VmHWM")

    def warnings(self, limit=3):
        path = os.path.join(self.dir, "gateway.log")
        counts = {}
        with open(path, errors="replace") as f:
            for line in f:
                if " WARN " in line or " ERROR " in line:
                    key = re.sub(r"^\S+\s+", "", line.strip())
                    key = re.sub(r"call_id=\S+|sip_call_id=\S+|[0-9a-f]{8}-[0-9a-f-]{27}", "…", key)
                    counts[key] = counts.get(key, 0) + 1
        return [f"{n}x {k[:200]}" for k, n in sorted(counts.items(), key=lambda kv: -kv[1])[:limit]]

    def stop(self):
        if self.proc:
            stop_process(self.proc, grace=20)
            self.stderr.close()


class Kamailio:
    def __init__(self, workdir, devices, children):
        self.dir = os.path.join(workdir, "kamailio")
        os.makedirs(self.dir, exist_ok=True)
        self.cmd = ["kamailio", "-f", KAMAILIO_CFG, "-DD", "-E", "-Y", self.dir, "-P", os.path.join(self.dir, "kamailio.pid"),
                    "-m", "1024", "-M", "16",
                    "-A", f"LISTEN=udp:{HOST}:{KAM_SIP_PORT}", "-A", f"UAS_BASE={UAS_PORT}", "-A", "UAS_STEP=10",
                    "-A", f"CHILDREN={children}"]

    def start(self):
        check_udp_free(KAM_SIP_PORT)
        self.log = open(os.path.join(self.dir, "kamailio.log"), "wb")
        self.proc = subprocess.Popen(self.cmd, stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     start_new_session=True)
        time.sleep(1.5)
        if self.proc.poll() is not None:
            raise SystemExit(f"kamailio exited with {self.proc.returncode}; see {self.dir}/kamailio.log")
        self.pgid = os.getpgid(self.proc.pid)

    def stop(self):
        if self.proc.poll() is None:
            os.killpg(self.pgid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.pgid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()


# ---------------------------------------------------------------- the ramp

class Devices:
    """The SIPp devices (uas_cps.xml), one per caller, kept running across
    steps like real phones, so that late retransmissions of one step are
    absorbed by the call they belong to. Per-step figures are differences
    of their cumulative -trace_stat counters (written every second)."""

    def __init__(self, workdir, count, label):
        self.workdir, self.count, self.label, self.generation = workdir, count, label, 0
        self.procs = []

    def start(self):
        self.generation += 1
        d = os.path.join(self.workdir, f"{self.label}-devices-{self.generation}")
        for i in range(self.count):
            check_udp_free(UAS_PORT + 10 * i)
        self.procs = [Sipp(d, ["-sf", UAS_XML, "-i", HOST, "-p", str(UAS_PORT + 10 * i), "-mp", str(UAS_MEDIA + 10 * i),
                               "-default_behaviors", "all,-abortunexp"], f"uas{i}") for i in range(self.count)]
        time.sleep(0.5)
        for p in self.procs:
            if p.proc.poll() is not None:
                raise SystemExit(f"SIPp device exited at start; see {p.dir}/stdout.log")

    def counters(self):
        total = {"ok": 0, "failed": 0, "retrans": 0}
        for p in self.procs:
            st = p.stats()
            total["ok"] += stat_int(st, "SuccessfulCall(C)")
            total["failed"] += stat_int(st, "FailedCall(C)")
            total["retrans"] += stat_int(st, "Retransmissions(C)")
        return total

    def settled(self, expected_ok, timeout=15):
        """Waits until the devices report `expected_ok` completed calls (or timeout); returns counters."""
        deadline = time.monotonic() + timeout
        while True:
            c = self.counters()
            if c["ok"] >= expected_ok or time.monotonic() > deadline:
                time.sleep(1.2)  # one more statistics period
                return self.counters()
            time.sleep(0.5)

    def stop(self):
        """Stops the devices; returns the rows of their final screens with unexpected messages or timeouts."""
        for p in self.procs:
            p.stop()
        notes = []
        for p in self.procs:
            notes += [f"{p.name}: {line}" for line in p.screen_failures()]
        self.procs = []
        return notes


def run_step(workdir, target_port, rate, window, uacs, meter, label, devices):
    """One step: `uacs` callers at rate/uacs each for `window` seconds; returns a result dict."""
    per = rate // uacs
    calls = per * window
    step_dir = os.path.join(workdir, f"{label}-{rate}")
    for i in range(uacs):
        check_udp_free(UAC_PORT + 10 * i)
    dev0 = devices.counters()
    drops0 = udp_rcvbuf_errors()
    dev_ticks0 = sum(proc_ticks(p.proc.pid) for p in devices.procs)
    meter.start()
    uac = [Sipp(step_dir, ["-sf", UAC_XML, f"{HOST}:{target_port}", "-s", number(i), "-i", HOST,
                           "-p", str(UAC_PORT + 10 * i), "-mp", str(UAC_MEDIA + 10 * i),
                           "-r", str(per), "-rp", "1000", "-m", str(calls), "-recv_timeout", "10000",
                           "-timeout", str(window + 60), "-timeout_error"], f"uac{i}") for i in range(uacs)]
    uac_ticks = [0] * len(uac)
    deadline = time.monotonic() + window + 90
    while time.monotonic() < deadline and any(u.proc.poll() is None for u in uac):
        for k, u in enumerate(uac):
            if u.proc.poll() is None:
                uac_ticks[k] = max(uac_ticks[k], proc_ticks(u.proc.pid))
        time.sleep(0.2)
    cpu, busy = meter.stop()
    wall = time.monotonic() - meter.t0
    sipp = (sum(uac_ticks) + sum(proc_ticks(p.proc.pid) for p in devices.procs) - dev_ticks0) / CLK_TCK / wall * 100
    for u in uac:
        u.stop()

    r = {"target": per * uacs, "calls": calls * uacs, "cpu": cpu, "busy": busy, "sipp": sipp,
         "other": max(0.0, busy - cpu - sipp), "dir": step_dir,
         "drops": udp_rcvbuf_errors() - drops0}
    uac_stats = [u.stats() for u in uac]
    r["ok"] = sum(stat_int(s, "SuccessfulCall(C)") for s in uac_stats)
    dev1 = devices.settled(dev0["ok"] + r["ok"])
    r["failed"] = sum(stat_int(s, "FailedCall(C)") for s in uac_stats)
    r["uas_ok"] = dev1["ok"] - dev0["ok"]
    r["uas_failed"] = dev1["failed"] - dev0["failed"]
    r["unexpected"] = sum(stat_int(s, "FailedUnexpectedMessage(C)") for s in uac_stats)
    r["retrans"] = sum(stat_int(s, "Retransmissions(C)") for s in uac_stats) + dev1["retrans"] - dev0["retrans"]
    inv, bye = [], []
    achieved = 0.0
    for u in uac:
        i, b = u.rtts()
        inv += [ms for _, ms in i]
        bye += [ms for _, ms in b]
        if len(i) > 1 and i[-1][0] > i[0][0]:
            achieved += (len(i) - 1) / ((i[-1][0] - i[0][0]) / 1000)
    inv.sort()
    bye.sort()
    r["achieved"] = achieved
    r["inv"] = {p: percentile(inv, p) for p in (50, 90, 99, 100)}
    r["bye"] = {p: percentile(bye, p) for p in (50, 90, 99, 100)}
    reasons = []
    if r["failed"] or r["uas_failed"]:
        reasons.append(f"{r['failed']} failed calls at the callers, {r['uas_failed']} at the devices")
    if r["ok"] < r["calls"]:
        reasons.append(f"{r['calls'] - r['ok']} of {r['calls']} calls not completed")
    elif r["uas_ok"] < r["ok"]:
        reasons.append(f"devices completed {r['uas_ok']} of {r['ok']} calls")
    if r["unexpected"]:
        reasons.append(f"{r['unexpected']} unexpected messages at the callers")
    if achieved < 0.95 * r["target"]:
        reasons.append(f"rate reached {achieved:.0f}/s of {r['target']}/s")
    details = []
    for u in uac:
        for line in u.screen_failures():
            details.append(f"{u.name}: {line}")
        for line in u.errors():
            details.append(f"{u.name}: {line}")
    r["passed"] = not reasons
    r["reason"] = "; ".join(reasons)
    r["details"] = details[:8]
    return r


def ramp(workdir, target_port, args, meter, label, quiesce):
    """Steps up from --start by --step until a step fails (or --max), then
    bisects between the last pass and the first failure. After a failure the
    server is left to quiesce (`quiesce()`) and the devices are restarted."""
    results, notes = [], []
    devices = Devices(workdir, args.uacs, label)
    devices.start()

    def step(rate):
        log(f"{label}: {rate} calls/s for {args.window} s ...")
        r = run_step(workdir, target_port, rate, args.window, args.uacs, meter, label, devices)
        results.append(r)
        log(f"{label}: {rate}/s -> {'pass' if r['passed'] else 'FAIL'}: achieved {r['achieved']:.0f}/s, "
            f"ok {r['ok']}/{r['calls']} (devices {r['uas_ok']}), INVITE->200 p50/p90/p99 "
            f"{r['inv'][50]:.0f}/{r['inv'][90]:.0f}/{r['inv'][99]:.0f} ms, cpu {r['cpu']:.0f}% sipp {r['sipp']:.0f}% other {r['other']:.0f}% "
            f"retrans {r['retrans']} drops {r['drops']} {r['reason']}")
        for d in r["details"]:
            log(f"    {d}")
        return r

    def contended_retry(r):
        """A step that failed while other processes took much of the machine
        is run once more after the machine quiets down; both rows are kept."""
        if r["passed"] or r["other"] < args.contended or r.get("retried"):
            return r
        r["reason"] += f"; other processes used {r['other']:.0f} % of a core: retried"
        log(f"{label}: the machine was busy with other work; waiting for it to quiet down, then retrying {r['target']}/s")
        notes.extend(devices.stop())
        quiesce()
        wait_quiet(args.contended / 2)
        devices.start()
        again = step(r["target"])
        again["retried"] = True
        return again

    last_pass, first_fail = None, None
    try:
        rate = args.start
        while rate <= args.max:
            rate -= rate % args.uacs
            r = contended_retry(step(rate))
            if not r["passed"]:
                first_fail = r
                break
            last_pass = r
            rate += args.step
            time.sleep(args.pause)
        lo = last_pass["target"] if last_pass else 0
        hi = first_fail["target"] if first_fail else None
        for _ in range(args.bisect if hi else 0):
            mid = (lo + hi) // 2
            mid -= mid % args.uacs
            if hi - lo < max(2 * args.uacs, args.step // 8) or mid <= lo:
                break
            notes += devices.stop()
            quiesce()
            devices.start()
            r = contended_retry(step(mid))
            if r["passed"]:
                lo, last_pass = mid, r
            else:
                hi = mid
    finally:
        notes += devices.stop()
    return results, last_pass, notes


# ---------------------------------------------------------------- registrations

def bulk_devices(db_path, count, realm, start_index=0):
    """Writes `count` users and devices with digest credentials straight into
    the gateway's SQLite database: the rows `Directory::create_user`,
    `create_device` and `set_device_credentials` would write, with
    ha1_md5 = md5("user:realm:password") and ha1_sha256 = sha256(same), hex."""
    now = int(time.time() * 1000)
    con = sqlite3.connect(db_path)
    users, devices = [], []
    for i in range(start_index, start_index + count):
        user_id, device_id = str(uuid.uuid4()), str(uuid.uuid4())
        username, password = reg_user(i), reg_password(i)
        a1 = f"{username}:{realm}:{password}".encode()
        users.append((user_id, f"Registrant {i}", None, None, now))
        devices.append((device_id, user_id, "bench phone", f"sip:{username}@{HOST}:9", now, username,
                        hashlib.md5(a1).hexdigest(), hashlib.sha256(a1).hexdigest()))
    with con:
        con.executemany("INSERT INTO users (id, name, extension, salesforce_user_id, created_at) VALUES (?, ?, ?, ?, ?)", users)
        con.executemany("INSERT INTO devices (id, user_id, name, contact_uri, created_at, sip_username, ha1_md5, ha1_sha256) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)", devices)
    con.close()


def reg_user(i):
    return f"bench{i:06d}"


def reg_password(i):
    return f"bench password {i:06d}"


def parse_challenges(text):
    out = []
    for line in text.split("\r\n"):
        name, _, value = line.partition(":")
        if name.strip().lower() == "www-authenticate":
            params = dict((k.lower(), v.strip('"')) for k, v in re.findall(r'(\w+)=("[^"]*"|[^,\s]+)', value))
            out.append(params)
    return out


class Registrant(asyncio.DatagramProtocol):
    """Registers devices over one UDP socket with digest authentication."""

    def __init__(self, gw, realm, algorithm):
        self.gw, self.realm, self.algorithm = gw, realm, algorithm
        self.pending = {}  # call-id -> (future)

    def connection_made(self, transport):
        self.transport = transport
        self.port = transport.get_extra_info("sockname")[1]

    def datagram_received(self, data, addr):
        text = data.decode(errors="replace")
        m = re.search(r"\r\nCall-ID:\s*(\S+)", text, re.I)
        if m and m.group(1) in self.pending:
            fut = self.pending[m.group(1)]
            code = int(text[8:11]) if text.startswith("SIP/2.0 ") else 0
            if code >= 200 and not fut.done():
                fut.set_result((code, text))

    def request(self, user, call_id, cseq, auth):
        branch = "z9hG4bK" + secrets.token_hex(8)
        lines = [
            f"REGISTER sip:{self.realm} SIP/2.0",
            f"Via: SIP/2.0/UDP {HOST}:{self.port};branch={branch};rport",
            f"From: <sip:{user}@{self.realm}>;tag={call_id[:8]}",
            f"To: <sip:{user}@{self.realm}>",
            f"Call-ID: {call_id}",
            f"CSeq: {cseq} REGISTER",
            f"Contact: <sip:{user}@{HOST}:{self.port}>",
            "Expires: 3600",
            "Max-Forwards: 70",
            "User-Agent: sip-cps-bench",
        ]
        if auth:
            lines.append(f"Authorization: {auth}")
        lines.append("Content-Length: 0")
        return ("\r\n".join(lines) + "\r\n\r\n").encode()

    async def transact(self, user, call_id, cseq, auth):
        loop = asyncio.get_running_loop()
        msg = self.request(user, call_id, cseq, auth)
        for wait in (1.0, 2.0, 4.0, 4.0):
            fut = loop.create_future()
            self.pending[call_id] = fut
            self.transport.sendto(msg, self.gw)
            try:
                return await asyncio.wait_for(fut, wait)
            except asyncio.TimeoutError:
                continue
            finally:
                self.pending.pop(call_id, None)
        return 0, "timeout"

    async def register(self, i):
        user, password = reg_user(i), reg_password(i)
        call_id = uuid.uuid4().hex
        code, text = await self.transact(user, call_id, 1, None)
        if code != 401:
            return f"first REGISTER answered {code or 'nothing'}"
        want = {"md5": "MD5", "sha256": "SHA-256"}[self.algorithm]
        ch = next((c for c in parse_challenges(text) if c.get("algorithm", "MD5").upper() == want), None)
        if not ch:
            return f"no {want} challenge"
        h = hashlib.md5 if want == "MD5" else hashlib.sha256
        uri = f"sip:{self.realm}"
        cnonce, nc = secrets.token_hex(8), "00000001"
        ha1 = h(f"{user}:{ch['realm']}:{password}".encode()).hexdigest()
        ha2 = h(f"REGISTER:{uri}".encode()).hexdigest()
        resp = h(f"{ha1}:{ch['nonce']}:{nc}:{cnonce}:auth:{ha2}".encode()).hexdigest()
        auth = (f'Digest username="{user}", realm="{ch["realm"]}", nonce="{ch["nonce"]}", uri="{uri}", '
                f'response="{resp}", algorithm={want}, qop=auth, nc={nc}, cnonce="{cnonce}"')
        code, _ = await self.transact(user, call_id, 2, auth)
        return None if code == 200 else f"authenticated REGISTER answered {code or 'nothing'}"


async def register_all(count, realm, algorithm, sockets=16, in_flight=256, progress=None):
    loop = asyncio.get_running_loop()
    gw = (HOST, GW_SIP_PORT)
    clients = []
    for _ in range(sockets):
        _, proto = await loop.create_datagram_endpoint(lambda: Registrant(gw, realm, algorithm), local_addr=(HOST, 0))
        clients.append(proto)
    failures = {}
    next_i = 0
    done = 0

    async def worker(w):
        nonlocal next_i, done
        client = clients[w % sockets]
        while next_i < count:
            i = next_i
            next_i += 1
            err = await client.register(i)
            if err:
                failures[err] = failures.get(err, 0) + 1
            done += 1
            if progress and done % 20_000 == 0:
                progress(done)

    await asyncio.gather(*(worker(w) for w in range(in_flight)))
    for c in clients:
        c.transport.close()
    return failures


# ---------------------------------------------------------------- phases

def phase_cps(args, workdir, report):
    gw = Gateway(args.bin, workdir, "gateway-cps")
    gw.migrate()
    gw.provision_devices(args.uacs)
    gw.start()
    log(f"gateway pid {gw.proc.pid}, SIP udp {HOST}:{GW_SIP_PORT}, data {gw.dir}; load average {loadavg()}")
    report["gw_load"] = loadavg()

    def quiesce():
        # Finished calls stay 32 s to absorb retransmissions; wait until none is left.
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            active = gw.metric("switchboard_calls_active")
            if active is not None and active == 0:
                return
            time.sleep(1)
        log("gateway: calls still active after 90 s of quiet")

    try:
        wait_quiet(args.contended / 2, max_wait=120)
        meter = CpuMeter(pid=gw.proc.pid)
        results, best, notes = ramp(workdir, GW_SIP_PORT, args, meter, "gateway", quiesce)
        report["gw_steps"], report["gw_best"], report["gw_notes"] = results, best, notes
        report["gw_hwm"] = gw.hwm_kib()
        if args.perf:
            quiesce()
            rate = best["target"] if best else args.start
            report["perf"] = perf_profile(gw, workdir, rate, args)
            report["perf_rate"] = rate
        report["gw_warnings"] = gw.warnings()
    finally:
        gw.stop()


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def perf_profile(gw, workdir, rate, args):
    """`perf record` of the gateway during a step at `rate`; returns the top symbols by self time."""
    if not shutil.which("perf"):
        log("perf not installed: no profile")
        return None
    out = os.path.join(workdir, "perf.data")
    rec = subprocess.Popen(["perf", "record", "-e", "cpu-clock", "-F", "499", "-g", "-p", str(gw.proc.pid), "-o", out],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log(f"perf: profiling the gateway at {rate} calls/s")
    devices = Devices(workdir, args.uacs, "perf")
    devices.start()
    try:
        run_step(workdir, GW_SIP_PORT, rate, min(args.window, 15), args.uacs, CpuMeter(pid=gw.proc.pid), "perf", devices)
    finally:
        devices.stop()
    rec.send_signal(signal.SIGINT)
    rec.wait()
    rep = subprocess.run(["perf", "report", "-i", out, "--no-children", "--stdio", "-g", "none", "--sort", "dso,symbol",
                          "--percent-limit", "1"], capture_output=True, text=True)
    lines = [l for l in rep.stdout.splitlines() if re.match(r"\s+\d+\.\d+%", l)]
    return [re.sub(r"\s+", " ", l.strip()).removesuffix(" - -") for l in lines[:20]]


def phase_kamailio(args, workdir, report):
    if not shutil.which("kamailio"):
        log("kamailio not installed (apt-get install -y kamailio): skipping the comparison")
        return
    k = Kamailio(workdir, args.uacs, args.kamailio_children)
    k.start()
    log(f"kamailio pid {k.proc.pid}, SIP udp {HOST}:{KAM_SIP_PORT}, children {args.kamailio_children}; load average {loadavg()}")
    report["k_load"] = loadavg()
    try:
        wait_quiet(args.contended / 2, max_wait=120)
        meter = CpuMeter(pgid=k.pgid)
        # tm keeps a transaction at most fr_inv_timer (120 s) but each of
        # these ends within seconds; 35 s covers its wait and retransmission timers.
        results, best, notes = ramp(workdir, KAM_SIP_PORT, args, meter, "kamailio", lambda: time.sleep(35))
        report["k_steps"], report["k_best"], report["k_notes"] = results, best, notes
    finally:
        k.stop()


def phase_memory(args, workdir, report):
    gw = Gateway(args.bin, workdir, "gateway-memory")
    gw.migrate()
    gw.provision_devices(1)  # the number the idle dialogs call
    t0 = time.monotonic()
    bulk_devices(gw.db, args.registrations, "switchboard")
    report["mem_insert_s"] = time.monotonic() - t0
    log(f"memory: {args.registrations} devices with credentials written in {report['mem_insert_s']:.1f} s")
    gw.start()
    try:
        time.sleep(3)
        before = gw.rss_kib()
        db_before = db_size(gw.db)
        log(f"memory: gateway RSS {before} KiB before registering")
        t0 = time.monotonic()
        failures = asyncio.run(register_all(args.registrations, "switchboard", args.algorithm,
                                            progress=lambda n: log(f"memory: {n} registered")))
        took = time.monotonic() - t0
        time.sleep(3)
        after = gw.rss_kib()
        con = sqlite3.connect(gw.db)
        live = con.execute("SELECT count(*) FROM registrations").fetchone()[0]
        con.close()
        db_after = db_size(gw.db)
        report["reg"] = {"n": args.registrations, "before": before, "after": after, "took": took, "failures": failures,
                         "live": live, "db_growth": db_after - db_before, "hwm": gw.hwm_kib()}
        log(f"memory: {live} registrations stored in {took:.1f} s ({args.registrations / took:.0f}/s); RSS {after} KiB; "
            f"failures {failures or 'none'}")
        if args.dialogs:
            report["dlg"] = idle_dialogs(gw, workdir, args.dialogs)
    finally:
        gw.stop()


def db_size(path):
    return sum(os.path.getsize(p) for p in (path, path + "-wal") if os.path.exists(p))


def idle_dialogs(gw, workdir, k):
    before = gw.rss_kib()
    d = os.path.join(workdir, "dialogs")
    rate = 250
    uas = Sipp(d, ["-sf", UAS_XML, "-i", HOST, "-p", str(UAS_PORT), "-mp", str(UAS_MEDIA), "-m", str(k)], "uas0")
    time.sleep(0.5)
    uac = Sipp(d, ["-sf", UAC_XML, f"{HOST}:{GW_SIP_PORT}", "-s", number(0), "-i", HOST, "-p", str(UAC_PORT),
                   "-mp", str(UAC_MEDIA), "-r", str(rate), "-rp", "1000", "-m", str(k), "-l", str(k),
                   "-d", "3600000", "-recv_timeout", "20000"], "uac0")
    log(f"memory: setting up {k} calls at {rate}/s and holding them")
    deadline = time.monotonic() + k / rate + 120
    answered = 0
    while time.monotonic() < deadline:
        time.sleep(2)
        s = uac.stats()
        answered = sum(stat_int(s, c) for c in s if c.startswith("ResponseTimeRepartitioninvite_"))
        if answered >= k or stat_int(s, "FailedCall(C)") or uac.proc.poll() is not None:
            break
    time.sleep(5)  # the 32 s linger of setups is not involved: nothing has ended
    active = gw.metric("switchboard_calls_active")
    after = gw.rss_kib()
    s = uac.stats()
    failed = stat_int(s, "FailedCall(C)")
    log(f"memory: {answered} calls up ({active} active at the gateway, {failed} failed); RSS {before} -> {after} KiB")
    uac.proc.kill()
    uas.proc.kill()
    uac.stop()
    uas.stop()
    return {"k": k, "answered": answered, "active": active, "failed": failed, "before": before, "after": after}


# ---------------------------------------------------------------- report

def sh(cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, shell=True).stdout.strip()
    except OSError:
        return ""


def machine():
    model = sh("lscpu | sed -n 's/^Model name:[[:space:]]*//p'")
    cores = os.cpu_count()
    mem = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) / 1024 / 1024
    osname = sh(". /etc/os-release && echo $PRETTY_NAME")
    return f"{cores} vCPU {model}, {mem:.0f} GiB, {osname}, Linux {platform.release()}"


def step_table(steps):
    rows = ["| target/s | achieved/s | calls ok | failed | unexpected | retrans | UDP drops | INVITE→200 p50 / p90 / p99 / max (ms) | CPU server / SIPp / other | result |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for r in steps:
        inv = r["inv"]
        rows.append(f"| {r['target']} | {r['achieved']:.0f} | {r['ok']}/{r['calls']} | {r['failed'] + r['uas_failed']} | {r['unexpected']} | "
                    f"{r['retrans']} | {r['drops']} | {inv[50]:.0f} / {inv[90]:.0f} / {inv[99]:.0f} / {inv[100]:.0f} | {r['cpu']:.0f} / {r['sipp']:.0f} / {r['other']:.0f} % | "
                    f"{'pass' if r['passed'] else 'fail: ' + r['reason']} |")
    return "\n".join(rows)


def markdown(args, report, cmdline):
    out = []
    date = datetime.date.today().isoformat()
    sipp_v = sh("sipp -v 2>&1 | grep -o 'v[0-9][^ ]*' | head -1")
    kam_v = sh("kamailio -v 2>/dev/null | head -1 | sed 's/^version: *//'") or "kamailio not installed"
    sb_v = sh(f"{args.bin} --version")
    commit = sh(f"git -C {HERE} rev-parse --short HEAD")
    out.append(f"Run {date} on {machine()}; SIPp {sipp_v}, {kam_v}, `{sb_v}` (release build given with --bin); "
               f"benchmark scripts at commit {commit}.")
    out.append("")
    out.append(f"Command: `{cmdline}` — {args.uacs} SIPp callers and {args.uacs} SIPp devices, {args.window} s per step, "
               f"ramp from {args.start}/s by {args.step}/s, pass = 0 failed calls, 0 unexpected messages at the callers, "
               f"≥ 95 % of the target rate. Response times are SIPp's, 1 ms resolution. CPU is in per cent of one core "
               f"(the machine has {os.cpu_count()} cores): the server under test, all SIPp processes, and everything else "
               f"on the machine (other processes, kernel work not charged to these).")
    out.append("")
    gb, kb = report.get("gw_best"), report.get("k_best")
    if "gw_steps" in report:
        out.append("Gateway (`switchboard gateway`, SQLite, recording off, log level warn):")
        out.append("")
        out.append(step_table(report["gw_steps"]))
        out.append("")
        out.append(f"Gateway peak RSS over the ramp: {kib(report.get('gw_hwm', 0)):.0f} MiB; load average when it started: "
                   f"{report.get('gw_load')}.")
        out.append("")
        for d in [d for r in report["gw_steps"] if not r["passed"] for d in r["details"]][:6]:
            out.append(f"- {d}")
        for d in report.get("gw_notes", [])[:4]:
            out.append(f"- devices: {d}")
        for w in report.get("gw_warnings", []):
            out.append(f"- gateway log: {w}")
        out.append("")
    if "k_steps" in report:
        out.append(f"Kamailio (scripts/bench/kamailio.cfg: tm t_relay, record_route; {args.kamailio_children} UDP children):")
        out.append("")
        out.append(step_table(report["k_steps"]))
        out.append("")
        out.append(f"Load average when Kamailio started: {report.get('k_load')}.")
        out.append("")
        for d in [d for r in report["k_steps"] if not r["passed"] for d in r["details"]][:6]:
            out.append(f"- {d}")
        for d in report.get("k_notes", [])[:4]:
            out.append(f"- devices: {d}")
        out.append("")
    if "gw_steps" in report or "k_steps" in report:
        out.append("| | max CPS (0 failures) | INVITE→200 p50 / p90 / p99 at that rate |")
        out.append("|---|---|---|")
        for name, b in (("gateway", gb), ("Kamailio 5.6", kb)):
            if b is not None or (name == "gateway" and "gw_steps" in report) or (name != "gateway" and "k_steps" in report):
                if b:
                    out.append(f"| {name} | {b['achieved']:.0f} (step {b['target']}/s) | {b['inv'][50]:.0f} / {b['inv'][90]:.0f} / {b['inv'][99]:.0f} ms |")
                else:
                    out.append(f"| {name} | below {args.start}/s | — |")
        if gb and kb:
            out.append(f"| ratio gateway / Kamailio | {gb['achieved'] / kb['achieved']:.2f} | |")
        out.append("")
    if report.get("perf"):
        out.append(f"Where the gateway spends its CPU at {report.get('perf_rate')} calls/s (`perf record -e cpu-clock`, self time):")
        out.append("")
        out.append("```")
        out.extend(report["perf"])
        out.append("```")
        out.append("")
    reg = report.get("reg")
    if reg:
        n = reg["n"]
        per = (reg["after"] - reg["before"]) * 1024 / n
        out.append("| memory | value |")
        out.append("|---|---|")
        out.append(f"| registrations | {reg['live']} stored of {n} devices, {sum(reg['failures'].values())} failed, "
                   f"{n / reg['took']:.0f} registrations/s ({args.algorithm.upper()} digest) |")
        out.append(f"| gateway RSS before / after | {kib(reg['before']):.1f} MiB / {kib(reg['after']):.1f} MiB |")
        out.append(f"| RSS per registration | {per:.0f} bytes ({per / 1024:.2f} KiB) |")
        out.append(f"| database growth per registration | {reg['db_growth'] / n:.0f} bytes (SQLite file + WAL) |")
        dlg = report.get("dlg")
        if dlg:
            per_d = (dlg["after"] - dlg["before"]) * 1024 / max(dlg["answered"], 1)
            out.append(f"| idle dialogs held | {dlg['answered']} of {dlg['k']} answered, {dlg['failed']} failed, "
                       f"{dlg['active']:.0f} active at the gateway |" if dlg["active"] is not None else
                       f"| idle dialogs held | {dlg['answered']} of {dlg['k']} |")
            out.append(f"| RSS per idle dialog | {per_d:.0f} bytes ({per_d / 1024:.1f} KiB), RSS {kib(dlg['before']):.1f} → {kib(dlg['after']):.1f} MiB |")
        out.append("")
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", default=os.environ.get("SWITCHBOARD_BIN") or os.path.join(
        os.environ.get("CARGO_TARGET_DIR", "target"), "release", "switchboard"))
    ap.add_argument("--quick", action="store_true", help="short steps and fewer registrations: a smoke run")
    ap.add_argument("--only", default="cps,kamailio,memory", help="comma-separated phases: cps, kamailio, memory")
    ap.add_argument("--uacs", type=int, default=2, help="SIPp callers (and devices), at most 10")
    ap.add_argument("--start", type=int, help="first step, calls/s (default 250; --quick 300)")
    ap.add_argument("--step", type=int, help="increment between steps, calls/s (default 250; --quick 300)")
    ap.add_argument("--max", type=int, default=4000, help="highest step tried")
    ap.add_argument("--window", type=int, help="seconds per step (default 30; --quick 6)")
    ap.add_argument("--pause", type=float, default=2, help="seconds between steps")
    ap.add_argument("--bisect", type=int, help="bisection steps after the first failure (default 2; --quick 1)")
    ap.add_argument("--contended", type=float, default=40,
                    help="a failing step during which other processes used more than this %% of a core is retried once "
                         "after the machine quiets down (default 40)")
    ap.add_argument("--kamailio-children", type=int, default=4)
    ap.add_argument("--registrations", type=int, help="devices registered for the memory figure (default 100000; --quick 10000)")
    ap.add_argument("--dialogs", type=int, help="idle dialogs held for the per-dialog figure, 0 skips (default 4000: each takes 4 RTP sockets, "
                         "and the open-file limit of this machine is 20000; --quick 500)")
    ap.add_argument("--algorithm", choices=["md5", "sha256"], default="md5", help="digest algorithm the registering devices answer with")
    ap.add_argument("--perf", action="store_true", help="perf record the gateway at its max rate")
    ap.add_argument("--workdir", help="scratch directory (default: a new one under /tmp, kept)")
    ap.add_argument("--out", help="also write the Markdown block to this file")
    args = ap.parse_args()
    defaults = {"start": (250, 300), "step": (250, 300), "window": (30, 6), "bisect": (2, 1),
                "registrations": (100_000, 10_000), "dialogs": (4_000, 500)}
    for key, (full, quick) in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, quick if args.quick else full)
    if not 1 <= args.uacs <= 10:
        raise SystemExit("--uacs must be between 1 and 10")
    if not os.access(args.bin, os.X_OK):
        raise SystemExit(f"no switchboard binary at {args.bin}: cargo build --release -p switchboard, then --bin")
    if not shutil.which("sipp"):
        raise SystemExit("sipp not found: apt-get install -y sip-tester")
    raise_nofile()
    workdir = args.workdir or tempfile.mkdtemp(prefix="sb-sip-cps-")
    os.makedirs(workdir, exist_ok=True)
    log(f"scratch directory {workdir}")
    phases = set(args.only.split(","))
    report = {}
    t0 = time.monotonic()
    if "cps" in phases:
        phase_cps(args, workdir, report)
    if "kamailio" in phases:
        phase_kamailio(args, workdir, report)
    if "memory" in phases:
        phase_memory(args, workdir, report)
    log(f"done in {(time.monotonic() - t0) / 60:.1f} min")
    shown, skip = [], False
    for a in sys.argv[1:]:
        if skip:
            skip = False
        elif a.split("=")[0] in ("--bin", "--workdir", "--out"):
            skip = "=" not in a
        else:
            shown.append(a)
    cmdline = "python3 scripts/bench/sip-cps.py " + " ".join(shown)
    md = markdown(args, report, cmdline.strip())
    print(md)
    if args.out:
        with open(args.out, "w") as f:
            f.write(md + "\n")


if __name__ == "__main__":
    main()
