#!/usr/bin/env python3
"""The seed's seven frames with real QEMU VMs, as the demo and as the e2e test.

calyx runs on conf/demo.yaml (frame 1: every security-group rule removed). Three VMs boot from
Debian's kernel and an initramfs of busybox-static (tests/e2e/build-guest.sh), QEMU in TCG mode,
each with one virtio-net NIC over vhost-user: public-1 and default-1 with calyx as the
vhost-user server, private-1 with QEMU as the server and calyx connecting (`mode: client`).
The tap uplink's far end goes into a network namespace that plays the Internet: its router
198.51.100.1 and a web server on 192.0.2.80 that answers with the address it sees.

Each VM takes its address by DHCP (busybox udhcpc) and runs busybox httpd on the ports the seed
opens; the host drives it over its serial console (tests/e2e/guest/agent). Then the frames:
each one is a reload of the configuration with that frame's rules added, and after each every
connection of the seed's diagram is tried, what must connect must connect and what must not is
refused. A refusal is explained by `calyxctl explain` (when calyxctl is there) and found in
calyx's drop counters (SIGUSR1). Also: a second NIC for an instance is refused by `calyx
--check`; a VM that reboots, and one whose QEMU restarts, get their address back and work.

  calyx_e2e.py --demo   human tables, sockets in /run/calyx (scripts/demo.sh runs this)
  calyx_e2e.py          the test: temp dir, unique names, exit 1 on any mismatch with the
                        guests' consoles and calyx's counters printed
"""

from __future__ import annotations

import argparse
import contextlib
import http.server
import os
import re
import shutil
import signal
import socket
import socketserver
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent

NS_ROUTER = "198.51.100.1"  # the Internet's router, on the tap inside the namespace
INTERNET_SERVER = "192.0.2.80"  # a web server on the Internet (ports 80 and 443)
INTERNET = "Internet"

# What the seed's frames add, in its words (shortened).
FRAME_TEXT = {
    1: "No instance is in a group with rules: none can communicate with anyone.",
    2: "Egress rule on the public instance: any IPv4 Internet address, any port.",
    3: "Ingress rule on the public instance: tcp/443 from any IPv4 Internet address.",
    4: "Ingress rule on the nat (default) instance: tcp/80 from the public instance "
       "(its egress rule of frame 2 already lets it out; no second 'leg' needed).",
    5: "The public instance accepts tcp/3333 from the nat instance, and the nat instance "
       "gets the egress rule it needs for that.",
    6: "The nat instance accepts tcp/4545 from the private instance, whose egress is wide "
       "open; yet the private instance still reaches no Internet address.",
    7: "Egress tcp/443 for the nat instance: it reaches the Internet, masqueraded to the "
       "compute host's public address.",
}


class Failure(Exception):
    """The scenario cannot go on (a VM does not boot, calyx does not start, ...)."""


def log(msg: str) -> None:
    print(msg, flush=True)


def run(cmd: list[str], check: bool = True, timeout: float = 60, **kw) -> subprocess.CompletedProcess:
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
    if check and r.returncode != 0:
        raise Failure(f"{' '.join(cmd)}: exit {r.returncode}: {r.stdout}{r.stderr}")
    return r


def wait_for(what: str, predicate, timeout: float, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise Failure(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def free_port(seed: int) -> int:
    """A TCP port on 127.0.0.1 nobody listens on, below Linux's ephemeral range (32768-60999)
    so that no outgoing connection takes it before calyx listens."""
    for i in range(200):
        port = 10000 + (seed * 7 + i * 101) % 22000
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue
    raise Failure("no free port for calyx's metrics")


# --------------------------------------------------------------------------------------------
# Configuration: conf/demo.yaml, per frame


RULE_LINE = re.compile(r"^\s*-\s*\{.*\}\s*#\s*frame\s+(\d+)\b")
RULES_HEADER = re.compile(r"^(\s*)rules:\s*(#.*)?$")


def frame_config(text: str, frame: int) -> str:
    """conf/demo.yaml with the rules of later frames removed (a group left without rules gets
    `rules: []`). Every rule line must carry its frame tag."""
    lines = text.splitlines()
    out: list[str] = []
    i = 0
    while i < len(lines):
        m = RULES_HEADER.match(lines[i])
        if not m:
            out.append(lines[i])
            i += 1
            continue
        indent = len(m.group(1))
        header = lines[i]
        i += 1
        body: list[str] = []
        kept_rules = 0
        while i < len(lines):
            line = lines[i]
            stripped = line.strip()
            if stripped and not stripped.startswith("#") and len(line) - len(line.lstrip()) <= indent:
                break
            if stripped.startswith("- "):
                tag = RULE_LINE.match(line)
                if not tag:
                    raise Failure(f"rule without a '# frame N' tag: {line.strip()}")
                if int(tag.group(1)) > frame:
                    i += 1
                    continue
                kept_rules += 1
            body.append(line)
            i += 1
        if kept_rules == 0:
            header = header.replace("rules:", "rules: []", 1)
        out.append(header)
        out.extend(body)
    return "\n".join(out) + "\n"


def rules_of_frame(text: str, frame: int) -> list[tuple[str, str]]:
    """(group, rule) for every rule line tagged with exactly `frame`."""
    group = ""
    out = []
    for line in text.splitlines():
        m = re.match(r"^\s*- name: (\S+)", line)
        if m:
            group = m.group(1)
        tag = RULE_LINE.match(line)
        if tag and int(tag.group(1)) == frame:
            out.append((group, line.split("#", 1)[0].strip().removeprefix("- ")))
    return out


def second_nic_config(text: str, instance: dict, network: dict, socket_dir: str) -> str:
    """The configuration with `instance` listed again with a second port: a second NIC."""
    base = network["cidr"].split("/")[0].rsplit(".", 1)[0]
    return text.rstrip("\n") + f"""
  # {instance['name']} again, with a second interface on {network['name']}
  - name: {instance['name']}
    network: {network['name']}
    mac: 52:54:00:00:09:09
    ipv4: {base}.99
    port: {{type: vhost-user, socket: {socket_dir}/{instance['name']}-eth1.sock, mode: server}}
"""


# --------------------------------------------------------------------------------------------
# calyx


@dataclass
class Counters:
    ports: dict[str, dict[str, int]] = field(default_factory=dict)  # port -> reason -> count
    up: dict[str, bool] = field(default_factory=dict)
    text: str = ""

    def minus(self, before: "Counters") -> dict[str, dict[str, int]]:
        delta: dict[str, dict[str, int]] = {}
        for port, reasons in self.ports.items():
            for reason, n in reasons.items():
                d = n - before.ports.get(port, {}).get(reason, 0)
                if d > 0:
                    delta.setdefault(port, {})[reason] = d
        return delta


def parse_counters(block: str) -> Counters:
    c = Counters(text=block)
    port = None
    for line in block.splitlines():
        m = re.match(r"^port (\S+) \((\w+)\):", line)
        if m:
            port = m.group(1)
            c.ports.setdefault(port, {})
            c.up[port] = m.group(2) == "up"
            continue
        m = re.match(r"^  drop (\S+) (\d+)$", line)
        if m and port:
            c.ports[port][m.group(1)] = int(m.group(2))
        elif not line.startswith("  "):
            port = None
    return c


class Calyx:
    def __init__(self, binary: Path, ctl: Path | None, config: Path, log_path: Path, control_socket: str,
                 netns: str | None = None):
        self.binary = binary
        self.netns = netns  # started with `ip netns exec NETNS` (its taps and netlink are there)
        self.ctl = ctl
        self.config = config
        self.log_path = log_path
        self.control_socket = control_socket
        self.proc: subprocess.Popen | None = None
        self.use_ctl = False
        self.last_counters = ""

    def check(self, path: Path) -> subprocess.CompletedProcess:
        return run([str(self.binary), "--config", str(path), "--check"], check=False)

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def start(self, ready_timeout: float) -> None:
        logf = open(self.log_path, "ab")
        inside = ["ip", "netns", "exec", self.netns] if self.netns else []  # it execs: the pid is calyx's
        self.proc = subprocess.Popen([*inside, str(self.binary), "--config", str(self.config)],
                                     stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     start_new_session=True)
        logf.close()

        def ready():
            if self.proc.poll() is not None:
                raise Failure(f"calyx exited with {self.proc.returncode}:\n{self.log_text()}")
            return "calyx: ready:" in self.log_text()

        wait_for("calyx to start", ready, ready_timeout, 0.2)
        if self.ctl and self.ctl.exists():
            r = self.calyxctl("status")
            self.use_ctl = r.returncode == 0

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def calyxctl(self, *args: str) -> subprocess.CompletedProcess:
        return run([str(self.ctl), "--socket", self.control_socket, *args], check=False, timeout=40)

    def reload(self) -> str:
        """Reload (calyxctl reload, else SIGHUP) and wait until it is applied."""
        if self.use_ctl:
            r = self.calyxctl("reload")
            if r.returncode != 0:
                raise Failure(f"calyxctl reload: exit {r.returncode}: {r.stdout}{r.stderr}")
            return "calyxctl reload: " + r.stdout.strip()
        before = self.log_text().count("calyx: reloaded: generation")
        self.proc.send_signal(signal.SIGHUP)

        def done():
            text = self.log_text()
            if "calyx: reload rejected" in text[-4000:] or "calyx: reload failed" in text[-4000:]:
                raise Failure("reload refused:\n" + text[-4000:])
            return text.count("calyx: reloaded: generation") > before

        wait_for("the reload", done, 30)
        return "SIGHUP: " + re.findall(r"calyx: reloaded: generation \d+", self.log_text())[-1]

    def counters(self) -> Counters:
        """SIGUSR1, then the block calyx prints to its log."""
        if not self.alive():
            return parse_counters(self.last_counters)
        before = self.log_text().count("calyx: counters\n")
        self.proc.send_signal(signal.SIGUSR1)

        def block():
            text = self.log_text()
            if text.count("calyx: counters\n") <= before:
                return None
            tail = text[text.rindex("calyx: counters\n"):]
            end = re.search(r"^conntrack: .*$", tail, re.M)
            return tail[: end.end()] if end else None

        text = wait_for("calyx's counters", block, 10, 0.05)
        self.last_counters = text
        return parse_counters(text)

    def explain(self, src: str, dst: str, proto: str, port: int | None) -> tuple[bool, str, str] | None:
        """(allowed, drop reason, the explanation) from `calyxctl explain`, or None."""
        if not self.use_ctl:
            return None
        args = ["explain", "--from", src, "--to", dst, "--proto", proto]
        if port is not None:
            args += ["--port", str(port)]
        r = self.calyxctl(*args)
        if r.returncode not in (0, 1):
            # 0 allowed, 1 denied; anything else is calyxctl failing, never a verdict to skip.
            raise Failure(f"calyxctl {' '.join(args)}: exit {r.returncode}: {r.stdout}{r.stderr}")
        reason = ""
        m = re.search(r"^\s*dropped as (\S+?):", r.stdout, re.M)
        if m:
            reason = m.group(1)
        return r.returncode == 0, reason, r.stdout.rstrip()

    def stop(self) -> None:
        if not self.proc or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# --------------------------------------------------------------------------------------------
# Guests


class Guest:
    """One QEMU VM (TCG) with one virtio-net NIC on a calyx vhost-user port; driven over its
    serial console through the agent baked into the initramfs."""

    def __init__(self, name: str, inst: dict, net: dict, workdir: Path, kernel: str, initrd: str):
        self.name = name
        self.inst = inst
        self.net = net
        self.ip = inst["ipv4"]
        self.mac = inst["mac"]
        self.vhost_socket = inst["port"]["socket"]
        self.client_mode = inst["port"].get("mode", "server") == "client"  # calyx connects
        self.console_path = workdir / f"{name}.console"
        self.log_path = workdir / f"{name}.console.log"
        self.qemu_log_path = workdir / f"{name}.qemu.log"
        self.kernel = kernel
        self.initrd = initrd
        self.proc: subprocess.Popen | None = None
        self.sock: socket.socket | None = None
        self.lines: list[str] = []
        self.cond = threading.Condition()
        self.cmd_lock = threading.Lock()
        self.seq = 0
        self.boots = 0

    def qemu_command(self) -> list[str]:
        if self.client_mode:  # QEMU is the vhost-user server; calyx connects (and reconnects)
            vhost = f"socket,id=vu,path={self.vhost_socket},server=on,wait=off"
        else:
            vhost = f"socket,id=vu,path={self.vhost_socket},reconnect=1"
        return [
            "qemu-system-x86_64", "-accel", "tcg", "-m", "256", "-smp", "1",
            "-nodefaults", "-no-user-config", "-display", "none",
            "-object", "memory-backend-memfd,id=mem,size=256M,share=on",
            "-machine", "pc,memory-backend=mem",
            "-chardev", f"socket,id=con,path={self.console_path},server=on,wait=on,"
                        f"logfile={self.log_path},logappend=on",
            "-serial", "chardev:con",
            "-chardev", vhost,
            "-netdev", "vhost-user,id=n0,chardev=vu",
            # vectors=0: QEMU 7.2 under TCG crashes in vhost_net_start with MSI-X.
            "-device", f"virtio-net-pci,netdev=n0,mac={self.mac},romfile=,vectors=0",
            "-kernel", self.kernel, "-initrd", self.initrd,
            "-append", f"console=ttyS0 quiet loglevel=3 panic=-1 ipv6.disable=1 calyx.name={self.name}",
        ]

    def start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.console_path.unlink()
        if self.client_mode:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.vhost_socket)
        mark = self.mark()
        with open(self.qemu_log_path, "ab") as qlog:
            self.proc = subprocess.Popen(self.qemu_command(), stdin=subprocess.DEVNULL,
                                         stdout=qlog, stderr=subprocess.STDOUT, start_new_session=True)
        self.boots += 1

        def console():
            if self.proc.poll() is not None:
                raise Failure(f"{self.name}: QEMU exited with {self.proc.returncode}: {self.qemu_output()}")
            if not self.console_path.exists():
                return None
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                s.connect(str(self.console_path))
            except OSError:
                s.close()
                return None
            return s

        self.sock = wait_for(f"{self.name}'s console", console, 30)
        threading.Thread(target=self._reader, args=(self.sock,), daemon=True).start()
        self._boot_mark = mark

    def _reader(self, sock: socket.socket) -> None:
        buf = b""
        while True:
            try:
                data = sock.recv(4096)
            except OSError:
                data = b""
            if not data:
                return
            buf += data
            *complete, buf = buf.split(b"\n")
            if complete:
                with self.cond:
                    for raw in complete:
                        self.lines.append(raw.decode(errors="replace").rstrip("\r"))
                    self.cond.notify_all()

    def mark(self) -> int:
        with self.cond:
            return len(self.lines)

    def wait_line(self, pattern: re.Pattern, since: int, timeout: float) -> tuple[int, re.Match]:
        deadline = time.monotonic() + timeout
        with self.cond:
            i = since
            while True:
                while i < len(self.lines):
                    m = pattern.search(self.lines[i])
                    if m:
                        return i, m
                    i += 1
                left = deadline - time.monotonic()
                if left <= 0:
                    raise Failure(f"{self.name}: no '{pattern.pattern}' on the console within {timeout:.0f} s")
                if self.proc and self.proc.poll() is not None:
                    raise Failure(f"{self.name}: QEMU exited with {self.proc.returncode}: {self.qemu_output()}")
                self.cond.wait(min(left, 0.5))

    def wait_ready(self, timeout: float, since: int | None = None) -> None:
        self.wait_line(re.compile(rf"^@@READY {re.escape(self.name)}$"),
                       self._boot_mark if since is None else since, timeout)

    def send_line(self, line: str) -> None:
        self.sock.sendall(line.encode() + b"\n")

    def sh(self, cmd: str, timeout: float = 30) -> tuple[int, str]:
        """Run `cmd` with sh -c in the guest: (exit status, output)."""
        with self.cmd_lock:
            self.seq += 1
            cid = f"c{self.boots}x{self.seq}"
            since = self.mark()
            self.send_line(f"{cid} {cmd}")
            begin, _ = self.wait_line(re.compile(rf"^@@BEGIN {cid}$"), since, timeout)
            end, m = self.wait_line(re.compile(rf"^@@END {cid} (\d+)$"), begin, timeout)
            with self.cond:
                out = "\n".join(self.lines[begin + 1 : end])
            return int(m.group(1)), out

    def sh_parallel(self, cmds: list[str], timeout: float) -> list[tuple[int, str]]:
        """Run several commands at once in the guest; each one's (status, one-line output)."""
        parts = []
        for i, c in enumerate(cmds):
            parts.append(f"{{ {c} ; }} >/tmp/p{i} 2>&1; echo $? >/tmp/p{i}.rc &")
        collect = "; ".join(
            f"echo \"@@R {i} $(cat /tmp/p{i}.rc) $(tr '\\n' ' ' </tmp/p{i})\"" for i in range(len(cmds)))
        _, out = self.sh(" ".join(parts) + " wait; " + collect, timeout)
        results: dict[int, tuple[int, str]] = {}
        for line in out.splitlines():
            m = re.match(r"^@@R (\d+) (\d+) ?(.*)$", line)
            if m:
                results[int(m.group(1))] = (int(m.group(2)), m.group(3).strip())
        return [results.get(i, (255, "no result")) for i in range(len(cmds))]

    def reboot(self) -> None:
        """`reboot -f` in the guest: the machine resets, the NIC with it."""
        mark = self.mark()
        with self.cmd_lock:
            self.send_line("reboot reboot -f")
        self._boot_mark = mark
        self.boots += 1

    def stop(self, timeout: float = 10) -> None:
        if self.sock:
            with contextlib.suppress(OSError):
                self.sock.close()
            self.sock = None
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def qemu_output(self) -> str:
        try:
            return self.qemu_log_path.read_text(errors="replace").strip()
        except OSError:
            return ""

    def console_tail(self, n: int = 60) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no console log)"
        return "\n".join(lines[-n:])


# --------------------------------------------------------------------------------------------
# The Internet: a network namespace behind the tap uplink


class Internet:
    def __init__(self, ns: str, tap: str, host_address: str, prefix_len: int, site_prefixes: list[str],
                 workdir: Path):
        self.ns = ns
        self.tap = tap
        self.host_address = host_address
        self.prefix_len = prefix_len
        self.site_prefixes = site_prefixes
        self.workdir = workdir
        self.server: subprocess.Popen | None = None
        self.created = False

    def ip(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return run(["ip", "-n", self.ns, *args], check=check)

    def create(self) -> None:
        run(["ip", "netns", "del", self.ns], check=False)  # a leftover of a killed run
        run(["ip", "netns", "add", self.ns])
        self.created = True

    def attach(self, timeout: float) -> None:
        """Move calyx's tap into the namespace once the PMD started it (earlier, nothing is
        received), address it as the Internet's router and route the site to calyx."""

        def tap_up():
            r = run(["ip", "-o", "link", "show", self.tap], check=False)
            return r.returncode == 0 and re.search(r"<[^>]*\bUP\b", r.stdout)

        wait_for(f"the uplink tap {self.tap}", tap_up, timeout)
        run(["ip", "link", "set", self.tap, "netns", self.ns])
        self.ip("link", "set", "lo", "up")
        # IPv4 only, as calyx: no IPv6 neighbour discovery noise in its drop counters.
        self.exec(["sysctl", "-qw", f"net.ipv6.conf.{self.tap}.disable_ipv6=1"])
        self.ip("addr", "add", f"{NS_ROUTER}/{self.prefix_len}", "dev", self.tap)
        self.ip("addr", "add", f"{INTERNET_SERVER}/32", "dev", "lo")
        self.ip("link", "set", self.tap, "up")
        for prefix in self.site_prefixes:  # the provider routes the site's networks to the host
            self.ip("route", "add", prefix, "via", self.host_address)
        self.start_server()
        # The router asks for the host address: calyx answers and learns the router's MAC.
        wait_for("ping from the Internet to the host address",
                 lambda: self.exec(["ping", "-c", "1", "-W", "1", self.host_address]).returncode == 0, 20)

    def start_server(self) -> None:
        """The web server on INTERNET_SERVER (on the namespace's loopback), ports 80 and 443."""
        self.server = subprocess.Popen(
            ["ip", "netns", "exec", self.ns, sys.executable, str(Path(__file__).resolve()),
             "internet-server", INTERNET_SERVER, "80", "443"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            start_new_session=True)
        line = self.server.stdout.readline().decode()
        if "serving" not in line:
            raise Failure(f"the Internet's web server did not start: {line}")

    def exec(self, cmd: list[str], timeout: float = 60) -> subprocess.CompletedProcess:
        return run(["ip", "netns", "exec", self.ns, *cmd], check=False, timeout=timeout)

    def get(self, url: str, timeout: float) -> tuple[int, str]:
        r = self.exec([sys.executable, str(Path(__file__).resolve()), "internet-get", url, str(timeout)],
                      timeout=timeout + 30)
        return r.returncode, (r.stdout + r.stderr).strip()

    def destroy(self) -> None:
        if self.server and self.server.poll() is None:
            self.server.kill()
            self.server.wait()
        if self.created:
            run(["ip", "-n", self.ns, "link", "del", self.tap], check=False)
            run(["ip", "netns", "del", self.ns], check=False)
            self.created = False


class WhoHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = f"Internet saw {self.client_address[0]}:{self.client_address[1]}\n".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def internet_server(address: str, ports: list[str]) -> None:
    """Runs inside the namespace: a web server per port answering with the peer it sees."""

    class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
        daemon_threads = True
        allow_reuse_address = True

    servers = [Server((address, int(p)), WhoHandler) for p in ports]
    for s in servers[1:]:
        threading.Thread(target=s.serve_forever, daemon=True).start()
    print(f"serving on {address} ports {' '.join(ports)}", flush=True)
    servers[0].serve_forever()


def internet_get(url: str, timeout: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=float(timeout)) as r:
            print(r.read().decode().strip())
        return 0
    except Exception as e:  # noqa: BLE001 - the kind of failure is the output
        print(f"no connection: {e}")
        return 1


# --------------------------------------------------------------------------------------------
# The seed's diagram: the connections tried after every frame


@dataclass
class Check:
    src: str  # a role: public, nat, private, or INTERNET
    dst: str
    proto: str  # tcp or icmp
    port: int | None
    opens: int | None  # the frame from which it connects; None: never


def seed_checks() -> list[Check]:
    return [
        Check("public", INTERNET, "tcp", 443, 2),
        Check("public", INTERNET, "tcp", 80, 2),
        Check("public", INTERNET, "icmp", None, 2),
        Check(INTERNET, "public", "tcp", 443, 3),
        Check(INTERNET, "public", "tcp", 22, None),
        Check("public", "nat", "tcp", 80, 4),
        Check("nat", "public", "tcp", 3333, 5),
        Check("private", "nat", "tcp", 4545, 6),
        Check("public", "private", "tcp", 22, None),
        Check("private", INTERNET, "tcp", 443, None),
        Check("nat", INTERNET, "tcp", 443, 7),
        Check("nat", INTERNET, "tcp", 80, None),
        Check(INTERNET, "nat", "tcp", 80, None),
        Check(INTERNET, "private", "tcp", 22, None),
    ]


# The ports each role's VM serves (busybox httpd), so that a refusal is calyx's, never a
# closed port's.
SERVED_PORTS = {"public": [443, 3333, 22], "nat": [80, 4545], "private": [22]}


@dataclass
class Outcome:
    check: Check
    expected: bool
    connected: bool
    detail: str  # who saw whom, or the client's error
    seen: str = ""  # the source address the destination saw
    reason: str = ""  # refused: the drop reason (calyxctl explain, else the counters)
    explain_allowed: bool | None = None
    counted: int = 0  # drops under `reason` where it was refused, during the frame
    counted_on: str = ""  # that port (and its host, in a site of several)
    problems: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------------------------
# The scenario


@dataclass
class Host:
    """A compute host of the scenario: its calyx, and the uplink address its nat instances are
    masqueraded to. The single-host demo has one; the site (site_e2e.py) two."""
    name: str
    address: str
    calyx: Calyx | None = None


def require_tools(binary: Path, tools: list[str]) -> None:
    if not binary.exists():
        raise Failure(f"no calyx binary at {binary}")
    for tool in tools:
        if not shutil.which(tool):
            raise Failure(f"{tool} is missing (scripts/setup.sh installs it)")
    try:
        import yaml  # noqa: F401 - Debian's python3-yaml
    except ImportError as e:
        raise Failure(f"python3-yaml is missing ({sys.executable}): {e}") from e


def load_yaml(text: str) -> dict:
    import yaml
    # Every scalar a string: YAML 1.1 would read a MAC such as 52:54:00:00:01:01 as a
    # base-60 integer.
    return yaml.load(text, Loader=yaml.BaseLoader)


def seed_roles(cfg: dict) -> dict[str, tuple[dict, dict]]:
    """The seed's three instances by the kind of their network: role -> (instance, network)."""
    nets = {n["name"]: n for n in cfg["networks"]}
    roles: dict[str, tuple[dict, dict]] = {}
    for inst in cfg["instances"]:
        net = nets[inst["network"]]
        role = net["kind"]
        if role in roles:
            raise Failure(f"the seed has one instance per network kind; {inst['name']} is a second {role}")
        roles[role] = (inst, net)
    if set(roles) != {"public", "nat", "private"}:
        raise Failure(f"need one instance on a public, a nat and a private network, got {sorted(roles)}")
    return roles


def write_frames(workdir: Path, text: str, stem: str) -> dict[int, Path]:
    """The seven frames' versions of `text` (WORKDIR/STEM-frameK.yaml), checked before anything
    starts: frame 7 must be the text itself."""
    files = {}
    for k in range(1, 8):
        p = workdir / f"{stem}-frame{k}.yaml"
        p.write_text(frame_config(text, k))
        files[k] = p
    if files[7].read_text() != text.rstrip("\n") + "\n":
        raise Failure("frame 7 must be the configuration itself: a rule line without its frame tag?")
    return files


def guest_boot_files(cache: Path) -> tuple[str, str]:
    """The guests' kernel and initramfs, from Debian packages, cached (build-guest.sh)."""
    r = run([str(HERE / "build-guest.sh"), str(cache)], timeout=300)
    files = dict(line.split("=", 1) for line in r.stdout.split())
    return files["KERNEL"], files["INITRD"]


class Scenario:
    def __init__(self, args):
        self.args = args
        self.demo = args.demo
        self.failures: list[str] = []
        self.guests: dict[str, Guest] = {}  # by role
        self.calyx: Calyx | None = None  # the single host's (self.hosts has it too)
        self.hosts: dict[str, Host] = {}  # by name
        self.role_host: dict[str, str] = {}  # role -> the name of the host its instance runs on
        self.internet: Internet | None = None
        self.started = time.monotonic()
        self.hugepage_prefix = ""
        self.extra_files: list[Path] = []

    # ---- setup ---------------------------------------------------------------------------

    def prepare(self) -> None:
        a = self.args
        self.binary = Path(a.calyx).resolve()
        self.ctl = Path(a.calyxctl).resolve() if a.calyxctl else None
        require_tools(self.binary, ["qemu-system-x86_64", "ip", "ping"])

        demo_text = Path(a.config).read_text()
        if self.demo:
            self.workdir = Path(a.workdir or "/run/calyx/demo")
            self.workdir.mkdir(parents=True, exist_ok=True)
            self.base_text = demo_text
            self.ns_name = "calyx-internet"
        else:
            self.workdir = Path(tempfile.mkdtemp(prefix="calyx-e2e-"))
            pid = os.getpid()
            # Everything that could collide with another calyx on this machine gets its own name.
            text = demo_text.replace("/run/calyx/", f"{self.workdir}/")
            text = text.replace('"calyx-demo"', f'"calyx-e2e-{pid}"')
            text = re.sub(r"(name: )calyx-up\b", rf"\g<1>cxe{pid % 100000}", text)
            text = text.replace("127.0.0.1:9469", f"127.0.0.1:{free_port(pid)}")
            self.base_text = text
            self.ns_name = f"calyx-e2e-{pid}"
        self.pids_file = self.workdir / "pids"

        cfg = load_yaml(self.base_text)
        self.cfg = cfg
        self.roles = seed_roles(cfg)
        up = cfg.get("uplink")
        if not up or up["port"]["type"] != "tap":
            raise Failure("the configuration needs a tap uplink")
        self.tap = up["port"]["name"]
        self.host_address, plen = up["address"].split("/")
        self.uplink_prefix_len = int(plen)
        host = Host(cfg.get("host", "this host"), self.host_address)
        self.hosts = {host.name: host}
        self.role_host = {role: host.name for role in self.roles}
        self.control_socket = cfg["control"]["socket"]
        eal = cfg["dataplane"].get("eal_args", [])
        if "--file-prefix" in eal:
            self.hugepage_prefix = eal[eal.index("--file-prefix") + 1]

        if self.demo:
            self.kill_leftovers()
            for f in self.workdir.iterdir():
                if f.is_file() or f.is_socket():
                    f.unlink()

        self.frame_files = write_frames(self.workdir, self.base_text, "calyx")
        self.config_path = self.workdir / "calyx.yaml"
        shutil.copyfile(self.frame_files[1], self.config_path)
        self.kernel, self.initrd = guest_boot_files(Path(a.cache))

    def kill_recorded(self) -> None:
        """Kills what an earlier demo recorded in its pids file (it was killed hard), if a pid
        is still one of its processes."""
        pids = self.workdir / "pids"
        if pids.exists():
            for word in pids.read_text().split():
                with contextlib.suppress(ValueError, OSError):
                    pid = int(word)
                    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
                    if str(self.workdir) in cmdline or "calyx" in cmdline:
                        os.kill(pid, signal.SIGKILL)
            pids.unlink()

    def kill_leftovers(self) -> None:
        """A demo killed hard leaves its processes, namespace and tap: take them away."""
        self.kill_recorded()
        run(["ip", "netns", "del", self.ns_name], check=False)
        run(["ip", "link", "del", self.tap], check=False)

    def record_pids(self) -> None:
        pids = []
        for h in self.hosts.values():
            if h.calyx and h.calyx.proc:
                pids.append(h.calyx.proc.pid)
        for g in self.guests.values():
            if g.proc:
                pids.append(g.proc.pid)
        if self.internet and self.internet.server:
            pids.append(self.internet.server.pid)
        self.pids_file.write_text(" ".join(map(str, pids)) + "\n")

    def name(self, role: str) -> str:
        return INTERNET if role == INTERNET else self.roles[role][0]["name"]

    def address(self, role: str, as_destination: bool) -> str:
        if role == INTERNET:
            return INTERNET_SERVER if as_destination else NS_ROUTER
        return self.roles[role][0]["ipv4"]

    # ---- steps ---------------------------------------------------------------------------

    def start(self) -> None:
        self.heading("Starting calyx, the Internet and three VMs")
        r = run([str(self.binary), "--config", str(self.config_path), "--check"], check=False)
        self.say(f"  {r.stdout.strip() or r.stderr.strip()}")
        self.internet = Internet(self.ns_name, self.tap, self.host_address, self.uplink_prefix_len,
                                 [n["cidr"] for n in self.cfg["networks"]], self.workdir)
        self.internet.create()
        self.calyx = Calyx(self.binary, self.ctl, self.config_path, self.workdir / "calyx.log",
                           self.control_socket)
        self.calyx.start(ready_timeout=60)
        for h in self.hosts.values():
            h.calyx = self.calyx
        self.record_pids()
        self.say(f"  calyx pid {self.calyx.proc.pid} on frame 1 "
                 f"(log {self.calyx.log_path}; calyxctl: {'yes' if self.calyx.use_ctl else 'no, SIGHUP and SIGUSR1'})")
        self.internet.attach(timeout=30)
        self.record_pids()
        self.say(f"  Internet: namespace {self.ns_name}, router {NS_ROUTER} on {self.tap}, "
                 f"web server {INTERNET_SERVER}:80,443; calyx's uplink address {self.host_address}")
        self.boot_guests()

    def boot_guests(self) -> None:
        for role in ("public", "nat", "private"):
            inst, net = self.roles[role]
            self.guests[role] = Guest(inst["name"], inst, net, self.workdir, self.kernel, self.initrd)
        t0 = time.monotonic()
        for g in self.guests.values():
            g.start()
        self.record_pids()
        for g in self.guests.values():
            g.wait_ready(self.args.boot_timeout)
        self.say(f"  3 VMs booted in {time.monotonic() - t0:.0f} s (QEMU TCG, Debian kernel, busybox initramfs)")
        for role, g in self.guests.items():
            mode = "QEMU is the vhost-user server, calyx connects" if g.client_mode else "calyx is the vhost-user server"
            where = f"on {self.role_host[role]}, " if len(self.hosts) > 1 else ""
            self.say(f"    {g.name:<10} {g.mac}  {g.vhost_socket}  ({where}{mode})")

    def dhcp(self, g: Guest, boot: str) -> list[str]:
        """udhcpc in the guest; the address, MTU and routes must be the configuration's."""
        net = g.net
        problems = []
        rc, out = g.sh("udhcpc -i eth0 -O mtu -O staticroutes -t 10 -T 2 -A 1 -n -q", 60)
        if rc != 0 or "lease:" not in out:
            return [f"{g.name}: no DHCP lease ({boot}): {out}"]
        plen = net["cidr"].split("/")[1]
        mtu = int(net.get("mtu", 1500))
        _, addr = g.sh("ip -o -4 addr show dev eth0")
        _, link_mtu = g.sh("cat /sys/class/net/eth0/mtu")
        _, routes = g.sh("ip -4 route show dev eth0")
        m = re.search(r"inet (\S+)", addr)
        got_addr = m.group(1) if m else "none"
        if got_addr != f"{g.ip}/{plen}":
            problems.append(f"{g.name}: address {got_addr}, configured {g.ip}/{plen}")
        if link_mtu.strip() != str(mtu):
            problems.append(f"{g.name}: MTU {link_mtu.strip()}, configured {mtu}")
        want_routes = ["default"] + list(net.get("routes", []))
        for dst in want_routes:
            if not re.search(rf"^{re.escape(dst)} via {re.escape(net['gateway'])}\b", routes, re.M):
                problems.append(f"{g.name}: no route {dst} via {net['gateway']}: {routes!r}")
        if problems:
            problems.append(f"{g.name}: udhcpc said: {out}")
        rc, _ = g.sh(f"ping -c 1 -W 3 {net['gateway']}", 30)
        if rc != 0:
            problems.append(f"{g.name}: its gateway {net['gateway']} does not answer ping")
        extra = f", routes {' '.join(want_routes[1:])}" if len(want_routes) > 1 else ""
        self.say(f"    {g.name:<10} {boot}: {got_addr} mtu {link_mtu.strip()} default via {net['gateway']}{extra}"
                 f"{'' if not problems else '   MISMATCH'}")
        return problems

    def start_servers(self, role: str) -> None:
        g = self.guests[role]
        cmds = "; ".join(f"httpd -p {p} -h /www" for p in SERVED_PORTS[role])
        rc, out = g.sh(cmds)
        if rc != 0:
            raise Failure(f"{g.name}: httpd: {out}")

    def configure_guests(self) -> None:
        self.heading("DHCP: each VM takes its address, MTU and routes from calyx")
        results: dict[str, list[str]] = {}

        def one(role):
            results[role] = self.dhcp(self.guests[role], "boot")
            self.start_servers(role)

        self.parallel(one, list(self.guests))
        for role in self.guests:
            self.fail_all(results.get(role, [f"{role}: DHCP did not finish"]))
        ports = ", ".join(f"{self.name(r)} {'/'.join(map(str, p))}" for r, p in SERVED_PORTS.items())
        self.say(f"  web servers (busybox httpd) listening: {ports}")
        self.say("\nThe tables: 'connects' is a completed TCP connection (busybox wget in a VM, or the\n"
                 "Internet's client, to a web server that answers with the address it saw) or a ping\n"
                 f"answered; 'refused' is nothing within {self.args.refuse_timeout} s. 'why' is who saw whom, or the drop\n"
                 "reason (calyxctl explain) and how many packets calyx counted under it during the frame\n"
                 "on the port they came in by (SIGUSR1 counters).")

    def second_nic(self) -> None:
        inst, _ = self.roles["public"]
        _, nat_net = self.roles["nat"]
        p = self.workdir / "second-nic.yaml"
        p.write_text(second_nic_config(self.config_path.read_text(), inst, nat_net,
                                       str(Path(inst["port"]["socket"]).parent)))
        r = self.calyx.check(p)
        out = (r.stdout + r.stderr).strip()
        self.say(f"  A second NIC for {inst['name']} on {nat_net['name']} (the 'second leg' the seed warns about):")
        self.say(f"    $ calyx --config second-nic.yaml --check   -> exit {r.returncode}")
        for line in out.splitlines():
            self.say(f"    {line.replace(str(self.workdir) + '/', '')}")
        if r.returncode != 1 or "one instance, one interface" not in out:
            self.fail(f"a second NIC was not refused with the explanation: exit {r.returncode}: {out}")

    # ---- connectivity --------------------------------------------------------------------

    def try_checks(self, checks: list[Check], frame: int) -> list[Outcome]:
        """Every check at once, grouped by source: each VM runs its clients in parallel, the
        namespace one process each. Expected connections get a long timeout, refusals a short
        one (a refusal is a timeout: calyx drops the SYN)."""
        results: dict[int, tuple[bool, str]] = {}
        by_src: dict[str, list[int]] = {}
        for i, c in enumerate(checks):
            by_src.setdefault(c.src, []).append(i)

        def timeout(c: Check) -> int:
            return self.args.connect_timeout if self.expected(c, frame) else self.args.refuse_timeout

        def url(c: Check) -> str:
            host = self.address(c.dst, True)
            return f"http://{host}:{c.port}/cgi-bin/who"

        def run_src(src: str):
            idx = by_src[src]
            if src == INTERNET:
                out: dict[int, tuple[int, str]] = {}

                def one(i):
                    out[i] = self.internet.get(url(checks[i]), timeout(checks[i]))

                self.parallel(one, idx)
                for i in idx:
                    rc, text = out[i]
                    results[i] = (rc == 0 and " saw " in text, text)
                return
            g = self.guests[src]
            cmds = []
            for i in idx:
                c = checks[i]
                t = timeout(c)
                if c.proto == "icmp":
                    cmds.append(f"ping -c 1 -W {t} {self.address(c.dst, True)} | grep 'bytes from'")
                else:
                    cmds.append(f"timeout {t} wget -q -O - {url(c)}")
            res = g.sh_parallel(cmds, timeout=max(timeout(checks[i]) for i in idx) + 60)
            for i, (rc, text) in zip(idx, res):
                ok = rc == 0 and (" saw " in text or "bytes from" in text)
                results[i] = (ok, text if text else f"exit {rc}")

        self.parallel(run_src, list(by_src))
        outcomes = []
        for i, c in enumerate(checks):
            ok, text = results[i]
            o = Outcome(c, self.expected(c, frame), ok, text)
            m = re.search(r" saw (\d+\.\d+\.\d+\.\d+):", text)
            if m:
                o.seen = m.group(1)
            outcomes.append(o)
        return outcomes

    @staticmethod
    def expected(c: Check, frame: int) -> bool:
        return c.opens is not None and frame >= c.opens

    def expected_seen(self, c: Check) -> str:
        """The source address the destination must see: the source's own, except a nat
        instance going out (the host's address)."""
        if c.src == INTERNET:
            return NS_ROUTER
        if c.src == "nat" and c.dst == INTERNET:
            return self.hosts[self.role_host["nat"]].address  # its own host's
        return self.address(c.src, False)

    def host_of(self, role: str) -> Host:
        return self.hosts[self.role_host[role]]

    def enforcing(self, c: Check) -> list[tuple[Host, str]]:
        """The hosts that decide on a connection, in the order its first packet meets them, each
        with the port a refusal there is counted on: the source's host checks its egress rules
        (and, on one host, the destination's ingress rules too); another host, the
        destination's, checks its ingress rules on what arrives by its uplink."""
        steps = []
        if c.src != INTERNET:
            steps.append((self.host_of(c.src), self.name(c.src)))
        if c.dst != INTERNET and (c.src == INTERNET or self.host_of(c.dst) is not self.host_of(c.src)):
            steps.append((self.host_of(c.dst), "uplink"))
        return steps

    def where(self, host: Host, port: str) -> str:
        return port if len(self.hosts) == 1 else f"{host.name} {port}"

    def counters(self) -> dict[str, Counters]:
        return {name: h.calyx.counters() for name, h in self.hosts.items()}

    @staticmethod
    def deltas(before: dict[str, Counters], after: dict[str, Counters]) -> dict[str, dict[str, dict[str, int]]]:
        return {name: after[name].minus(before[name]) for name in after}

    def judge(self, outcomes: list[Outcome], deltas: dict[str, dict[str, dict[str, int]]]) -> None:
        """Each outcome against the seed, `calyxctl explain` on every host that decides (the
        first refusal is the verdict) and the drops counted where it refused."""
        for o in outcomes:
            c = o.check
            src_name = self.address(c.src, False) if c.src == INTERNET else self.name(c.src)
            dst_name = self.address(c.dst, True) if c.dst == INTERNET else self.name(c.dst)
            steps = self.enforcing(c)
            decided = steps[0]
            for host, port in steps:
                ex = host.calyx.explain(src_name, dst_name, c.proto, c.port)
                if ex is None:
                    break
                decided = (host, port)
                o.explain_allowed, o.reason, _ = ex
                if not o.explain_allowed:
                    break
            o.counted_on = self.where(*decided)
            if o.explain_allowed is None:
                # No calyxctl: the reasons counted where it could have been refused.
                port_delta: dict[str, int] = {}
                for host, port in steps:
                    for reason, n in deltas[host.name].get(port, {}).items():
                        port_delta[reason] = port_delta.get(reason, 0) + n
            else:
                port_delta = deltas[decided[0].name].get(decided[1], {})
                if o.explain_allowed != o.expected:
                    o.problems.append(f"calyxctl explain says {'allowed' if o.explain_allowed else 'denied'}")
            counted_on = o.counted_on
            if o.connected != o.expected:
                o.problems.append("connected" if o.connected else "refused")
            if o.connected and c.proto == "tcp":
                want = self.expected_seen(c)
                if o.seen != want:
                    o.problems.append(f"the destination saw {o.seen or 'nothing'}, expected {want}")
            if not o.connected:
                if o.reason:
                    o.counted = port_delta.get(o.reason, 0)
                    if o.counted == 0 and not o.expected:
                        o.problems.append(f"no {o.reason} drop counted on port {counted_on}")
                elif port_delta:
                    # No calyxctl: the reasons counted on the source's port during the frame.
                    o.reason = ",".join(sorted(port_delta))
                    o.counted = sum(port_delta.values())
                elif not o.expected:
                    o.problems.append(f"no drop counted on port {counted_on}")

    def table(self, title: str, outcomes: list[Outcome]) -> int:
        rows = []
        for o in outcomes:
            c = o.check
            what = f"{c.proto}/{c.port}" if c.port is not None else "ping"
            conn = f"{self.name(c.src)} -> {self.name(c.dst)} {what}"
            exp = "connects" if o.expected else "refused"
            obs = "connects" if o.connected else "refused"
            if o.connected:
                detail = o.detail if c.proto == "tcp" else "echo reply"
            else:
                detail = f"{o.reason or '?'}" + (f" ({o.counted} dropped on {o.counted_on})" if o.counted else "")
            mark = "ok" if not o.problems else "MISMATCH: " + "; ".join(o.problems)
            rows.append((conn, exp, obs, detail, mark))
        w = [max(len(r[i]) for r in rows + [("connection", "expected", "observed", "why", "")]) for i in range(4)]
        self.say(title)
        self.say(f"  {'connection':<{w[0]}}  {'expected':<{w[1]}}  {'observed':<{w[2]}}  why".rstrip())
        for r in rows:
            self.say(f"  {r[0]:<{w[0]}}  {r[1]:<{w[1]}}  {r[2]:<{w[2]}}  {r[3]:<{w[3]}}  {r[4]}")
        bad = sum(1 for o in outcomes if o.problems)
        return bad

    def apply_frame(self, k: int) -> str:
        """Frame k's configuration in place, reloaded: how it was applied."""
        shutil.copyfile(self.frame_files[k], self.config_path)
        return self.calyx.reload() if k > 1 else "the configuration calyx started with"

    def run_frame(self, k: int, checks: list[Check]) -> list[Outcome]:
        how = self.apply_frame(k)
        self.heading(f"Frame {k}: {FRAME_TEXT[k]}")
        for group, rule in rules_of_frame(self.base_text, k):
            self.say(f"  + {group}: {rule}")
        self.say(f"  ({how})")
        before = self.counters()
        outcomes = self.try_checks(checks, k)
        self.judge(outcomes, self.deltas(before, self.counters()))
        bad = self.table("", outcomes)
        self.say(f"  frame {k}: {len(outcomes) - bad} of {len(outcomes)} as the seed says")
        for o in outcomes:
            if o.problems:
                c = o.check
                self.fail(f"frame {k}: {self.name(c.src)} -> {self.name(c.dst)} {c.proto}/{c.port}: "
                          f"{'; '.join(o.problems)} ({o.detail})")
        return outcomes

    def reboot_and_restart(self, checks: list[Check]) -> None:
        self.heading("Reboots: public-1's guest reboots (reboot -f); private-1's QEMU is killed "
                     "and started again (calyx, the vhost-user client, reconnects)")
        public, private = self.guests["public"], self.guests["private"]
        problems: list[str] = []

        def reboot_public():
            public.reboot()
            public.wait_ready(self.args.boot_timeout)
            problems.extend(self.dhcp(public, "after reboot"))
            self.start_servers("public")

        def restart_private():
            private.stop()
            private.start()
            self.record_pids()
            private.wait_ready(self.args.boot_timeout)
            problems.extend(self.dhcp(private, "new QEMU"))
            self.start_servers("private")

        self.parallel(lambda f: f(), [reboot_public, restart_private])
        self.fail_all(problems)
        involved = [c for c in checks if "public" in (c.src, c.dst) or "private" in (c.src, c.dst)]
        before = self.counters()
        outcomes = self.try_checks(involved, 7)
        self.judge(outcomes, self.deltas(before, self.counters()))
        bad = self.table("  Frame 7 again, for every connection of the two VMs:", outcomes)
        self.say(f"  after the reboots: {len(outcomes) - bad} of {len(outcomes)} as the seed says")
        for o in outcomes:
            if o.problems:
                c = o.check
                self.fail(f"after reboot: {self.name(c.src)} -> {self.name(c.dst)} {c.proto}/{c.port}: "
                          f"{'; '.join(o.problems)} ({o.detail})")

    def stay(self) -> None:
        ctl = f"{self.ctl} --socket {self.control_socket}" if self.ctl else "(no calyxctl)"
        self.heading("Everything keeps running; Ctrl-C stops it and cleans up")
        self.say(f"  calyxctl:      {ctl} status | ports | conntrack | nat | drops | explain ...")
        self.say(f"  the Internet:  ip netns exec {self.ns_name} ping {self.roles['public'][0]['ipv4']}")
        self.say(f"  consoles:      {self.workdir}/*.console.log; calyx's log {self.calyx.log_path}")
        while all(g.proc and g.proc.poll() is None for g in self.guests.values()) and self.calyx.alive():
            time.sleep(1)
        self.fail("a VM or calyx stopped")

    # Refusals of frame 7 that explain_examples() shows: (source, destination, port).
    EXPLAINED = [("private", INTERNET, 443), (INTERNET, "nat", 80), ("public", "private", 22)]

    def explain_examples(self) -> None:
        if not all(h.calyx.use_ctl for h in self.hosts.values()):
            return
        self.heading(f"Why: calyxctl explain, for {len(self.EXPLAINED)} refusals of frame 7")
        for src, dst, port in self.EXPLAINED:
            c = Check(src, dst, "tcp", port, None)
            args = [self.address(src, False) if src == INTERNET else self.name(src),
                    self.address(dst, True) if dst == INTERNET else self.name(dst), "tcp", port]
            for host, _ in self.enforcing(c):  # each host that decides, in the packet's order
                ex = host.calyx.explain(*args)
                on = f" (on {host.name})" if len(self.hosts) > 1 else ""
                self.say(f"  $ calyxctl explain --from {args[0]} --to {args[1]} --proto tcp --port {port}{on}")
                for line in (ex[2] if ex else "(no answer)").splitlines():
                    self.say(f"    {line.replace(str(self.workdir) + '/', '')}")
                if ex and not ex[0]:
                    break

    # ---- reporting -----------------------------------------------------------------------

    def heading(self, text: str) -> None:
        self.say(f"\n== {text} [{time.monotonic() - self.started:.0f} s]")

    def say(self, text: str) -> None:
        log(text)

    def fail(self, msg: str) -> None:
        self.failures.append(msg)

    def fail_all(self, msgs: list[str]) -> None:
        self.failures.extend(msgs)

    @staticmethod
    def parallel(fn, items) -> None:
        errors: list[BaseException] = []

        def wrap(x):
            try:
                fn(x)
            except BaseException as e:  # noqa: BLE001 - re-raised below
                errors.append(e)

        threads = [threading.Thread(target=wrap, args=(x,), daemon=True) for x in items]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise errors[0]

    def diagnostics(self) -> None:
        log("\n== Diagnostics")
        for g in self.guests.values():
            log(f"--- console of {g.name} ({g.log_path}), last lines:")
            log(g.console_tail())
        for h in self.hosts.values():
            if not h.calyx:
                continue
            of = f"calyx's of {h.name}" if len(self.hosts) > 1 else "calyx's"
            counters = ""
            with contextlib.suppress(Exception):
                counters = h.calyx.counters().text
            log(f"--- {of} counters (SIGUSR1):")
            log(counters or h.calyx.last_counters or "(none)")
            log(f"--- {of} log ({h.calyx.log_path}), last lines:")
            lines = [l for l in h.calyx.log_text().splitlines() if "read message" not in l]
            log("\n".join(lines[-60:]))

    def cleanup(self) -> None:
        for g in self.guests.values():
            with contextlib.suppress(Exception):
                g.stop()
        if self.calyx:
            with contextlib.suppress(Exception):
                self.calyx.stop()
        if self.internet:
            with contextlib.suppress(Exception):
                self.internet.destroy()
        # Normally calyx removed its tap on the way out; after a crash it may still be here.
        run(["ip", "link", "del", self.tap], check=False) if hasattr(self, "tap") else None
        if self.hugepage_prefix:
            for f in Path("/dev/hugepages").glob(f"{self.hugepage_prefix}*"):
                with contextlib.suppress(OSError):
                    f.unlink()
            shutil.rmtree(f"/var/run/dpdk/{self.hugepage_prefix}", ignore_errors=True)
        self.remove_files()

    def remove_files(self) -> None:
        """The sockets and the pids file; the test's whole directory (the demo keeps its logs)."""
        if not hasattr(self, "workdir"):
            return
        for g in self.guests.values():
            for p in (g.console_path, Path(g.vhost_socket) if g.client_mode else None):
                if p:
                    with contextlib.suppress(OSError):
                        p.unlink()
        with contextlib.suppress(OSError):
            self.pids_file.unlink()
        if not self.demo and not self.args.keep:
            shutil.rmtree(self.workdir, ignore_errors=True)


def common_arguments(p: argparse.ArgumentParser, config: str) -> None:
    """The options the single-host driver and the site's (site_e2e.py) share."""
    p.add_argument("--demo", action="store_true", help="the demo: tables for people, /run/calyx")
    p.add_argument("--calyx", default=str(REPO / "build" / "calyx"))
    p.add_argument("--calyxctl", default=None, help="default: next to --calyx, if it is there")
    p.add_argument("--config", default=config)
    p.add_argument("--cache", default="/var/cache/calyx-e2e", help="where the guests' initramfs is kept")
    p.add_argument("--workdir", default=None, help="demo: default /run/calyx/demo")
    p.add_argument("--boot-timeout", type=float, default=240)
    p.add_argument("--connect-timeout", type=int, default=15,
                   help="seconds a connection that must work may take")
    p.add_argument("--refuse-timeout", type=int, default=3,
                   help="seconds after which a connection that must not work counts as refused")
    p.add_argument("--keep", action="store_true", help="test: keep the temp dir")
    p.add_argument("--stay", action="store_true",
                   help="demo: after the frames, keep calyx, the VMs and the Internet running until Ctrl-C")


def parse_arguments(p: argparse.ArgumentParser, argv: list[str]):
    args = p.parse_args(argv[1:])
    if args.calyxctl is None:
        ctl = Path(args.calyx).parent / "calyxctl"
        args.calyxctl = str(ctl) if ctl.exists() else ""
    return args


def drive(s, steps, success: str) -> int:
    """Runs `steps` (the scenario's, in order), then always cleans up. The success line is
    printed only when every step ran to its end with no failure; Ctrl-C (SIGINT, SIGTERM,
    SIGHUP) stops the run and cleans up too. The exit status: 0, 1 on any failure, 130."""
    # calyx, QEMU and the Internet's server run in sessions of their own: Ctrl-C reaches only
    # this driver, which then stops them in order.
    interrupted = []

    def on_signal(signum, _frame):
        interrupted.append(signum)
        raise KeyboardInterrupt(f"signal {signum}")

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    status = 0
    completed = False  # every step ran to its end: the only way to the success line
    try:
        steps()
        completed = True
    except KeyboardInterrupt:
        log("\ninterrupted: cleaning up")
        status = 130
    except Failure as e:
        if interrupted:
            log("\ninterrupted: cleaning up")
            status = 130
        else:
            s.fail(str(e))
    except Exception as e:  # noqa: BLE001 - a bug of this driver fails the run, with its trace
        s.fail(f"unexpected {type(e).__name__}: {e}\n{traceback.format_exc()}")
    finally:
        if status == 0 and not completed and not s.failures:
            s.fail("the scenario stopped before its end")
        if s.failures and status == 0:
            status = 1
            log("\n== FAILED")
            for f in s.failures:
                log(f"  {f}")
            s.diagnostics()
        elif status == 0:
            total = time.monotonic() - s.started
            log(f"\n== {success} ({total:.0f} s)")
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)  # the cleanup runs to its end
        s.cleanup()
    return status


def main(argv: list[str]) -> int:
    if len(argv) > 1 and argv[1] == "internet-server":
        internet_server(argv[2], argv[3:])
        return 0
    if len(argv) > 1 and argv[1] == "internet-get":
        return internet_get(argv[2], argv[3])

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common_arguments(p, str(REPO / "conf" / "demo.yaml"))
    args = parse_arguments(p, argv)
    if os.geteuid() != 0:
        log("calyx_e2e: needs root (network namespaces, vhost-user sockets, EAL)")
        return 1

    s = Scenario(args)

    def steps():
        s.prepare()
        s.start()
        s.configure_guests()
        checks = seed_checks()
        for k in range(1, 8):
            s.run_frame(k, checks)
            if k == 4:
                s.second_nic()
        s.explain_examples()
        s.reboot_and_restart(checks)
        if args.stay and not s.failures:
            s.stay()

    return drive(s, steps, "All seven frames as the seed says")


if __name__ == "__main__":
    sys.exit(main(sys.argv))
