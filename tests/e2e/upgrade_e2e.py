#!/usr/bin/env python3
"""e2e-upgrade: two QEMU guests keep their TCP connections across an upgrade of calyx.

calyx runs on conf/demo.yaml (frame 7: every rule of the seed) with two of its instances, each a
QEMU guest (TCG) on vhost-user, one per socket role:
  - default-1 (nat network, calyx is the vhost-user server, QEMU reconnects) streams a counting
    sequence (`seq | nc`) over TCP to the Internet server 192.0.2.80:443, masqueraded to the
    host address;
  - public-1 (public network, QEMU is the vhost-user server, calyx connects) holds an SSH-like
    session: the Internet's client sends a line every 50 ms and waits for its echo (`nc -e cat`
    in the guest) before the next.
Then `calyxctl upgrade`: the running calyx starts the binary it was started from as its child,
which takes over (doc/operations.md "Upgrading and restarting"). Both connections must go on
as the same connections (no reconnect: the Internet side accepts one stream and keeps one
session socket; the stream's source stays the host address and its NAT port), the stream's
numbers without a gap or a repeat, and the guests' sockets reconnected. Measured: the longest
stall of each connection across the upgrade (ms), the bytes the stream did not carry in it at
its rate before, the session's requests delayed.

The guests, calyx and the Internet namespace come from tests/e2e/calyx_e2e.py (its Guest,
Calyx and Internet). Needs root, qemu-system-x86, busybox-static, iproute2, python3-yaml.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import calyx_e2e as e2e  # noqa: E402

STREAM_PORT = 443  # default-sg's egress rule of frame 7 (the nat instance reaches tcp/443)
SESSION_PORT = 443  # public-sg's ingress rule of frame 3 (tcp/443 from anywhere)
REQUEST_EVERY = 0.05  # s: the session's keystroke rhythm
SETTLE = 6.0  # s of traffic before the upgrade (the baseline) and after it


# --------------------------------------------------------------------------------------------
# The Internet's side of both connections (runs inside the namespace: `upgrade_e2e.py traffic`)


class Sequence:
    """The stream's content: decimal numbers one per line, each the previous plus one (`seq`).
    A byte lost, repeated or garbled breaks it."""

    def __init__(self):
        self.partial = b""
        self.expected: int | None = None
        self.numbers = 0
        self.errors: list[str] = []

    def feed(self, data: bytes) -> None:
        *lines, self.partial = (self.partial + data).split(b"\n")
        for line in lines:
            n = int(line) if line.isdigit() else None
            if n is None or (self.expected is not None and n != self.expected):
                if len(self.errors) < 5:
                    self.errors.append(f"expected {self.expected}, came {line[:20]!r}")
            self.expected = (n or 0) + 1
            self.numbers += 1


def traffic(session_address: str) -> int:
    """Accepts the stream on INTERNET_SERVER:443 and checks its numbers; opens the session to
    SESSION_ADDRESS:443 and keeps it going. On 'progress' (stdin) prints the bytes and answers
    so far, on 'stop' one JSON report."""
    t0 = time.monotonic()
    stop = threading.Event()
    stream = {"peers": [], "receipts": [], "bytes": 0, "numbers": 0, "errors": []}
    session = {"requests": [], "errors": [], "connected": None}

    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((e2e.INTERNET_SERVER, STREAM_PORT))
    listener.listen(4)

    def receive_stream():
        conn, peer = listener.accept()
        stream["peers"].append(f"{peer[0]}:{peer[1]}")
        threading.Thread(target=refuse_more, daemon=True).start()
        conn.settimeout(0.5)
        sequence = Sequence()
        stream["sequence_errors"] = sequence.errors  # filled as the stream goes
        while not stop.is_set():
            try:
                data = conn.recv(65536)
            except socket.timeout:
                continue
            except OSError as e:
                stream["errors"].append(f"the stream broke: {e}")
                return
            if not data:
                stream["errors"].append("the stream was closed")
                return
            stream["receipts"].append((time.monotonic(), len(data)))
            stream["bytes"] += len(data)
            sequence.feed(data)
            stream["numbers"] = sequence.numbers

    def refuse_more():
        # A second connection would be a reconnect: recorded, and the check fails.
        while not stop.is_set():
            try:
                listener.settimeout(0.5)
                conn, peer = listener.accept()
            except OSError:
                continue
            stream["peers"].append(f"{peer[0]}:{peer[1]}")
            conn.close()

    def keep_session():
        deadline = time.monotonic() + 60
        while True:
            try:
                s = socket.create_connection((session_address, SESSION_PORT), timeout=2)
                break
            except OSError as e:
                if time.monotonic() > deadline:
                    session["errors"].append(f"no session: {e}")
                    return
                time.sleep(0.5)
        session["connected"] = time.monotonic()
        s.settimeout(None)
        buf = b""
        n = 0
        while not stop.is_set():
            n += 1
            sent = time.monotonic()
            try:
                s.sendall(f"{n}\n".encode())
                while b"\n" not in buf:
                    r, _, _ = select.select([s], [], [], 0.5)
                    if stop.is_set():
                        return
                    if r:
                        chunk = s.recv(4096)
                        if not chunk:
                            session["errors"].append(f"the session was closed after request {n - 1}")
                            return
                        buf += chunk
            except OSError as e:
                session["errors"].append(f"the session broke at request {n}: {e}")
                return
            line, buf = buf.split(b"\n", 1)
            answered = time.monotonic()
            if line != str(n).encode():
                session["errors"].append(f"request {n} answered with {line[:20]!r}")
                return
            session["requests"].append((sent, answered - sent))
            time.sleep(max(0.0, REQUEST_EVERY - (time.monotonic() - sent)))

    threads = [threading.Thread(target=receive_stream, daemon=True),
               threading.Thread(target=keep_session, daemon=True)]
    for t in threads:
        t.start()
    print(f"listening {t0:.3f}", flush=True)
    for line in sys.stdin:
        if line.strip() == "progress":
            print(json.dumps({"bytes": stream["bytes"], "answers": len(session["requests"])}), flush=True)
        if line.strip() == "stop":
            break
    stop.set()
    time.sleep(0.6)
    print(json.dumps({"stream": stream, "session": session}), flush=True)
    return 0


# --------------------------------------------------------------------------------------------
# Measuring


def longest_stall(times: list[float], begin: float, end: float) -> tuple[float, float]:
    """The longest interval between consecutive events that overlaps [begin, end], with its
    start; the events' own end counts as one (a stall not yet over)."""
    best, at = 0.0, begin
    for a, b in zip(times, times[1:] + [end]):
        if b >= begin and a <= end and b - a > best:
            best, at = b - a, a
    return best, at


def measure(report: dict, upgrade_begin: float, upgrade_end: float, end: float) -> dict:
    stream, session = report["stream"], report["session"]
    receipts = [t for t, _ in stream["receipts"]]
    before = [(t, n) for t, n in stream["receipts"] if t < upgrade_begin]
    rate = 0.0
    if len(before) > 1:
        rate = sum(n for _, n in before[1:]) / (before[-1][0] - before[0][0])
    stall, stall_at = longest_stall(receipts, upgrade_begin, end)
    baseline_stall, _ = longest_stall([t for t, _ in before], before[0][0] if before else 0, upgrade_begin)
    sent = [t for t, _ in session["requests"]]
    answered = [t + rtt for t, rtt in session["requests"]]
    rtts_before = sorted(rtt for t, rtt in session["requests"] if t + rtt < upgrade_begin)
    session_stall, session_at = longest_stall(answered, upgrade_begin, end)
    slow = [rtt for t, rtt in session["requests"] if t >= upgrade_begin - 1 and rtt > 0.2]
    return {
        "stream_bytes": stream["bytes"],
        "stream_rate": rate,
        "stream_stall_ms": stall * 1000,
        "stream_stall_from_upgrade_ms": (stall_at - upgrade_begin) * 1000,
        "stream_baseline_stall_ms": baseline_stall * 1000,
        "stream_bytes_not_carried": int(rate * max(0.0, stall - baseline_stall)),
        "stream_after": sum(n for t, n in stream["receipts"] if t > upgrade_end),
        "session_requests": len(sent),
        "session_after": sum(1 for t in answered if t > upgrade_end),
        "session_stall_ms": session_stall * 1000,
        "session_stall_from_upgrade_ms": (session_at - upgrade_begin) * 1000,
        "session_rtt_median_ms": rtts_before[len(rtts_before) // 2] * 1000 if rtts_before else 0,
        "session_max_rtt_ms": max((rtt for _, rtt in session["requests"]), default=0) * 1000,
        "session_slow_requests": len(slow),
    }


def connection_verdicts(report: dict, m: dict, host_address: str) -> list[str]:
    """What is wrong with the two connections across the upgrade (empty: nothing)."""
    stream, session = report["stream"], report["session"]
    f = []
    if len(stream["peers"]) != 1:
        f.append(f"the stream reconnected or never came: connections from {stream['peers']}")
    elif not stream["peers"][0].startswith(host_address + ":"):
        f.append(f"the stream came from {stream['peers'][0]}, not masqueraded to {host_address}")
    f.extend(f"stream: {e}" for e in stream["errors"] + stream.get("sequence_errors", []))
    f.extend(f"session: {e}" for e in session["errors"])
    if session["connected"] is None:
        f.append("the session never connected")
    if m["stream_after"] == 0:
        f.append("the stream carried nothing after the upgrade")
    if m["session_after"] == 0:
        f.append("the session answered nothing after the upgrade")
    return f


# --------------------------------------------------------------------------------------------
# The calyx that took over


class Adopted:
    """The new calyx: started by the old one, this driver's child once the old one exited (the
    driver is a child subreaper). What Calyx uses of a Popen."""

    def __init__(self, pid: int):
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                self.returncode = -1
                return self.returncode
            if pid == self.pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, sig)

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(str(self.pid), timeout)
            time.sleep(0.05)
        return self.returncode

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


def become_subreaper() -> None:
    PR_SET_CHILD_SUBREAPER = 36
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise e2e.Failure(f"prctl(PR_SET_CHILD_SUBREAPER): {os.strerror(ctypes.get_errno())}")


# --------------------------------------------------------------------------------------------
# The Internet, behind an uplink that outlives calyx


class Provider:
    """The Internet in a network namespace behind calyx's uplink, an af_packet port on a veth
    pair: like a NIC, and unlike a tap (which goes with the process that created it), the pair
    outlives every calyx process, so the Internet's side keeps its addresses through the upgrade.
    Its router is NS_ROUTER; INTERNET_SERVER is on its loopback."""

    def __init__(self, ns: str, host_end: str, host_address: str, prefix_len: int, site_prefixes: list[str]):
        self.ns = ns
        self.host_end = host_end
        self.far_end = host_end + "i"
        self.host_address = host_address
        self.prefix_len = prefix_len
        self.site_prefixes = site_prefixes
        self.created = False

    def ip(self, *args: str) -> None:
        e2e.run(["ip", "-n", self.ns, *args])

    def exec(self, cmd: list[str]) -> subprocess.CompletedProcess:
        return e2e.run(["ip", "netns", "exec", self.ns, *cmd], check=False)

    def create(self) -> None:
        e2e.run(["ip", "netns", "del", self.ns], check=False)
        e2e.run(["ip", "link", "del", self.host_end], check=False)
        e2e.run(["ip", "netns", "add", self.ns])
        self.created = True
        e2e.run(["ip", "link", "add", self.host_end, "type", "veth", "peer", "name", self.far_end,
                 "netns", self.ns])
        # IPv4 only, as calyx: no IPv6 chatter in its drop counters.
        e2e.run(["sysctl", "-qw", f"net.ipv6.conf.{self.host_end}.disable_ipv6=1"])
        self.exec(["sysctl", "-qw", f"net.ipv6.conf.{self.far_end}.disable_ipv6=1"])
        e2e.run(["ip", "link", "set", self.host_end, "up"])
        # The kernel hands af_packet partial checksums unless the veth computes them.
        if self.exec(["ethtool", "-K", self.far_end, "tx", "off"]).returncode != 0:
            raise e2e.Failure("ethtool -K tx off failed (scripts/setup.sh installs ethtool)")
        self.ip("link", "set", "lo", "up")
        self.ip("addr", "add", f"{e2e.NS_ROUTER}/{self.prefix_len}", "dev", self.far_end)
        self.ip("addr", "add", f"{e2e.INTERNET_SERVER}/32", "dev", "lo")
        self.ip("link", "set", self.far_end, "up")
        for prefix in self.site_prefixes:  # the provider routes the site's networks to the host
            self.ip("route", "add", prefix, "via", self.host_address)

    def reach_host(self) -> None:
        # The router asks for the host address: calyx answers and learns the router's MAC.
        e2e.wait_for("ping from the Internet to the host address",
                     lambda: self.exec(["ping", "-c", "1", "-W", "1", self.host_address]).returncode == 0, 20)

    def destroy(self) -> None:
        if self.created:
            e2e.run(["ip", "netns", "del", self.ns], check=False)
            e2e.run(["ip", "link", "del", self.host_end], check=False)
            self.created = False


# --------------------------------------------------------------------------------------------
# The scenario


def without_instance(text: str, name: str) -> str:
    """The configuration without instance `name` (its list entry, up to the next entry or the
    next top-level key)."""
    lines = text.splitlines()
    out, skipping = [], False
    for line in lines:
        if re.match(rf"^  - name: {re.escape(name)}\s*$", line):
            skipping = True
            continue
        if skipping and (line.startswith("  - ") or (line and not line.startswith(" "))):
            skipping = False
        if not skipping:
            out.append(line)
    return "\n".join(out) + "\n"


class Upgrade:
    def __init__(self, args):
        self.args = args
        self.failures: list[str] = []
        self.guests: dict[str, e2e.Guest] = {}
        self.calyx: e2e.Calyx | None = None
        self.internet: Provider | None = None
        self.traffic: subprocess.Popen | None = None
        self.started = time.monotonic()

    def say(self, text: str) -> None:
        e2e.log(text)

    def prepare(self) -> None:
        a = self.args
        self.binary = Path(a.calyx).resolve()
        self.ctl = Path(a.calyxctl).resolve()
        e2e.require_tools(self.binary, ["qemu-system-x86_64", "ip", "ping", "ethtool"])
        self.workdir = Path(tempfile.mkdtemp(prefix="calyx-upgrade-"))
        pid = os.getpid()
        text = Path(a.config).read_text().replace("/run/calyx/", f"{self.workdir}/")
        # A successor runs beside calyx for the hand-over: no shared EAL runtime files (the
        # demo's file prefix would make the upgrade refuse).
        text = re.sub(r',\s*"--file-prefix",\s*"calyx-demo"', "", text)
        self.uplink_end = f"cxu{pid % 100000}"
        text = text.replace("port: {type: tap, name: calyx-up}", f"port: {{type: af_packet, iface: {self.uplink_end}}}")
        text = text.replace("127.0.0.1:9469", f"127.0.0.1:{e2e.free_port(pid + 1)}")
        # Two guests, one per vhost-user role: public-1's QEMU is the server (calyx connects).
        text = without_instance(text, "private-1")
        text = text.replace(f"socket: {self.workdir}/public-1.sock, mode: server}}",
                            f"socket: {self.workdir}/public-1.sock, mode: client}}")
        self.config_path = self.workdir / "calyx.yaml"
        self.config_path.write_text(text)
        cfg = e2e.load_yaml(text)
        nets = {n["name"]: n for n in cfg["networks"]}
        self.instances = {i["name"]: (i, nets[i["network"]]) for i in cfg["instances"]}
        if set(self.instances) != {"public-1", "default-1"} or \
                self.instances["public-1"][0]["port"].get("mode") != "client":
            raise e2e.Failure(f"the test's configuration is not what it expects:\n{text}")
        up = cfg["uplink"]
        if up["port"].get("iface") != self.uplink_end:
            raise e2e.Failure(f"the uplink is not the test's veth: {up['port']}")
        self.host_address, plen = up["address"].split("/")
        self.uplink_prefix_len = int(plen)
        self.control_socket = cfg["control"]["socket"]
        self.kernel, self.initrd = e2e.guest_boot_files(Path(a.cache))

    def start(self) -> None:
        self.say("== Starting calyx (frame 7 of conf/demo.yaml, public-1 and default-1, an af_packet uplink), "
                 "the Internet, two VMs")
        become_subreaper()
        self.internet = Provider(f"calyx-upg-{os.getpid()}", self.uplink_end, self.host_address,
                                 self.uplink_prefix_len, [n["cidr"] for _, n in self.instances.values()])
        self.internet.create()
        self.calyx = e2e.Calyx(self.binary, self.ctl, self.config_path, self.workdir / "calyx.log",
                               self.control_socket)
        self.calyx.start(ready_timeout=60)
        self.internet.reach_host()
        t0 = time.monotonic()
        for name, (inst, net) in self.instances.items():
            self.guests[name] = e2e.Guest(name, inst, net, self.workdir, self.kernel, self.initrd)
            self.guests[name].start()
        for g in self.guests.values():
            g.wait_ready(self.args.boot_timeout)
        self.say(f"  2 VMs booted in {time.monotonic() - t0:.0f} s")
        for g in self.guests.values():
            rc, out = g.sh("udhcpc -i eth0 -t 10 -T 2 -A 1 -n -q", 60)
            if rc != 0 or "lease:" not in out:
                raise e2e.Failure(f"{g.name}: no DHCP lease: {out}")
            mode = "QEMU is the vhost-user server, calyx connects" if g.client_mode else \
                "calyx is the vhost-user server, QEMU reconnects"
            self.say(f"    {g.name:<10} {g.ip:<14} {mode}")

    def start_traffic(self) -> None:
        public, nat = self.guests["public-1"], self.guests["default-1"]
        rc, out = public.sh(f"nc -l -p {SESSION_PORT} -e /bin/cat </dev/null >/dev/null 2>&1 &")
        if rc != 0:
            raise e2e.Failure(f"public-1: nc -l: {out}")
        self.traffic = subprocess.Popen(
            ["ip", "netns", "exec", self.internet.ns, sys.executable, str(Path(__file__).resolve()),
             "traffic", public.ip],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            start_new_session=True)
        line = self.traffic.stdout.readline()
        if not line.startswith("listening"):
            raise e2e.Failure(f"the Internet's side did not start: {line}{self.traffic.stdout.read()}")
        rc, out = nat.sh(f"seq 1 2000000000 | nc {e2e.INTERNET_SERVER} {STREAM_PORT} >/dev/null 2>&1 &")
        if rc != 0:
            raise e2e.Failure(f"default-1: seq | nc: {out}")
        self.say(f"== Traffic: default-1 streams to {e2e.INTERNET_SERVER}:{STREAM_PORT} (masqueraded); "
                 f"the Internet holds a session with public-1:{SESSION_PORT}, a line every "
                 f"{REQUEST_EVERY * 1000:.0f} ms")

    def upgrade(self) -> tuple[float, float, int, int]:
        old = self.calyx.proc
        begin = time.monotonic()
        binary = ["--binary", self.args.upgrade_binary] if self.args.upgrade_binary else []
        r = e2e.run([str(self.ctl), "--socket", self.control_socket, "upgrade", *binary], check=False, timeout=120)
        end = time.monotonic()
        out = (r.stdout + r.stderr).strip()
        self.say(f"== $ calyxctl upgrade   ({(end - begin) * 1000:.0f} ms)\n  {out}")
        m = re.search(r"handed over to pid (\d+)", out)
        if r.returncode != 0 or not m:
            raise e2e.Failure(f"calyxctl upgrade: exit {r.returncode}: {out}")
        new_pid = int(m.group(1))
        try:
            old.wait(15)
        except subprocess.TimeoutExpired:
            raise e2e.Failure("the old calyx did not exit after the hand-over") from None
        if old.returncode != 0:
            self.failures.append(f"the old calyx exited with {old.returncode}")
        self.calyx.proc = Adopted(new_pid)
        if self.calyx.proc.poll() is not None:
            raise e2e.Failure(f"the new calyx (pid {new_pid}) is not running")
        return begin, end, old.pid, new_pid

    def judge(self, report: dict, m: dict, old_pid: int, new_pid: int) -> None:
        stream = report["stream"]
        f = self.failures
        f.extend(connection_verdicts(report, m, self.host_address))
        log = self.calyx.log_text()
        if f"took over from pid {old_pid}" not in log:
            f.append(f"calyx's log has no 'took over from pid {old_pid}'")
        restored = re.search(r"restored (\d+) connections \((\d+) masqueraded\)", log)
        if not restored or int(restored.group(1)) < 2 or int(restored.group(2)) < 1:
            f.append(f"the new calyx did not restore both connections: {restored.group(0) if restored else 'no line'}")
        counters = self.calyx.counters()
        for name in self.guests:
            if not counters.up.get(name):
                f.append(f"{name}'s vhost-user port is not up after the upgrade")
        gap = re.search(r"the data plane stood still for ([\d.]+) ms", log)
        self.say("== Across the upgrade")
        self.say(f"  calyx pid {old_pid} -> {new_pid}; "
                 f"{restored.group(0) if restored else 'no restore line'}; "
                 f"data plane stood still {gap.group(1) if gap else '?'} ms (calyx's own figure)")
        self.say(f"  stream   {stream['peers'][0] if stream['peers'] else '-'} (one connection), "
                 f"{m['stream_bytes']} bytes, {m['stream_rate'] / 1e3:.0f} kB/s before; numbers "
                 f"{'in sequence' if not stream.get('sequence_errors') else 'BROKEN'}; longest stall "
                 f"{m['stream_stall_ms']:.0f} ms (starting {m['stream_stall_from_upgrade_ms']:+.0f} ms from the "
                 f"upgrade command; {m['stream_baseline_stall_ms']:.0f} ms before it); "
                 f"{m['stream_bytes_not_carried']} bytes not carried in it at the rate before; "
                 f"{'no byte lost or repeated' if not stream.get('sequence_errors') else 'BYTES LOST OR REPEATED'}")
        self.say(f"  session  {m['session_requests']} requests, median round trip "
                 f"{m['session_rtt_median_ms']:.0f} ms before; longest wait for an answer "
                 f"{m['session_stall_ms']:.0f} ms (starting {m['session_stall_from_upgrade_ms']:+.0f} ms); "
                 f"{m['session_slow_requests']} requests answered after more than 200 ms; "
                 f"{'every answer right, in order' if not report['session']['errors'] else 'BROKEN'}")
        for name, g in self.guests.items():
            self.say(f"  {name:<10} port {'up' if counters.up.get(name) else 'DOWN'} "
                     f"({'calyx reconnected to QEMU' if g.client_mode else 'QEMU reconnected to calyx'})")
        print("E2E_UPGRADE_RESULT " + json.dumps({k: round(v, 1) if isinstance(v, float) else v
                                                  for k, v in m.items()}), flush=True)

    def run(self) -> None:
        self.prepare()
        self.start()
        self.start_traffic()
        time.sleep(SETTLE)
        begin, end, old_pid, new_pid = self.upgrade()
        # Both connections carry again (TCP retransmits on its backoff; QEMU reconnects within
        # a second), then some more traffic.
        at_upgrade = self.progress()
        resumed = time.monotonic() + 60
        while time.monotonic() < resumed:
            now = self.progress()
            if now["bytes"] > at_upgrade["bytes"] and now["answers"] > at_upgrade["answers"]:
                break
            time.sleep(0.5)
        time.sleep(SETTLE / 2)
        stop = time.monotonic()
        self.traffic.stdin.write("stop\n")
        self.traffic.stdin.flush()
        out, _ = self.traffic.communicate(timeout=30)
        report = json.loads(out.strip().splitlines()[-1])
        self.judge(report, measure(report, begin, end, stop), old_pid, new_pid)

    def progress(self) -> dict:
        self.traffic.stdin.write("progress\n")
        self.traffic.stdin.flush()
        line = self.traffic.stdout.readline()
        try:
            return json.loads(line)
        except json.JSONDecodeError:
            raise e2e.Failure(f"the Internet's side stopped: {line}{self.traffic.stdout.read()}") from None

    def diagnostics(self) -> None:
        e2e.log("\n== Diagnostics")
        for g in self.guests.values():
            e2e.log(f"--- console of {g.name}, last lines:\n{g.console_tail(30)}")
        if self.calyx:
            lines = [l for l in self.calyx.log_text().splitlines() if "read message" not in l]
            e2e.log("--- calyx's log, last lines:\n" + "\n".join(lines[-80:]))

    def cleanup(self) -> None:
        if self.traffic and self.traffic.poll() is None:
            self.traffic.kill()
            self.traffic.wait()
        for g in self.guests.values():
            with contextlib.suppress(Exception):
                g.stop()
        if self.calyx:
            with contextlib.suppress(Exception):
                self.calyx.stop()
        if self.internet:
            with contextlib.suppress(Exception):
                self.internet.destroy()
        if hasattr(self, "workdir") and not self.args.keep:
            shutil.rmtree(self.workdir, ignore_errors=True)


def main(argv: list[str]) -> int:
    if len(argv) > 2 and argv[1] == "traffic":
        return traffic(argv[2])
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--calyx", default=str(e2e.REPO / "build" / "calyx"))
    p.add_argument("--calyxctl", default=None, help="default: next to --calyx")
    p.add_argument("--config", default=str(e2e.REPO / "conf" / "demo.yaml"))
    p.add_argument("--cache", default="/var/cache/calyx-e2e", help="where the guests' initramfs is kept")
    p.add_argument("--boot-timeout", type=float, default=240)
    p.add_argument("--keep", action="store_true", help="keep the temp dir")
    p.add_argument("--upgrade-binary", default=None,
                   help="the binary `calyxctl upgrade --binary` starts (default: the running calyx's own)")
    args = p.parse_args(argv[1:])
    if args.calyxctl is None:
        args.calyxctl = str(Path(args.calyx).parent / "calyxctl")
    if os.geteuid() != 0:
        e2e.log("upgrade_e2e: needs root (network namespaces, vhost-user sockets, EAL)")
        return 1
    u = Upgrade(args)

    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    status = 0
    completed = False
    try:
        u.run()
        completed = True
    except KeyboardInterrupt:
        e2e.log("\ninterrupted: cleaning up")
        status = 130
    except e2e.Failure as e:
        u.failures.append(str(e))
    except Exception as e:  # noqa: BLE001 - a bug of this driver fails the run, with its trace
        import traceback
        u.failures.append(f"unexpected {type(e).__name__}: {e}\n{traceback.format_exc()}")
    finally:
        if status == 0 and not completed and not u.failures:
            u.failures.append("the scenario stopped before its end")
        if u.failures and status == 0:
            status = 1
            e2e.log("\n== FAILED")
            for f in u.failures:
                e2e.log(f"  {f}")
            u.diagnostics()
        elif status == 0:
            e2e.log(f"\n== Both connections went on across the upgrade ({time.monotonic() - u.started:.0f} s)")
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        u.cleanup()
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv))
