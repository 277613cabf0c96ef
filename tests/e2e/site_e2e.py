#!/usr/bin/env python3
"""The seed's seven frames across a site of two compute hosts, with real QEMU guests: the demo
(`scripts/demo.sh --site`) and the e2e test (`e2e-site`).

The topology is integration-site-bgp's (tests/integration/site_test.cpp), with QEMU guests
instead of virtio-user peers:

  fabric     a bridge (the uplink segment 198.51.100.0/24) and 198.51.100.1 on it: a bird2 route
             reflector on conf/bird/route-reflector.conf that is also the Internet's router (it
             installs the public instances' routes it learns), and the Internet's web server
             192.0.2.80:80,443 that answers with the address it saw
  compute-1  a network namespace running calyx on conf/site/compute-1.yaml (its uplink tap in
             the fabric's bridge, workers that sleep when idle) and bird2 on conf/bird/bird.conf
             behind calyx's host interface; the seed's nat instance
  compute-2  likewise; the seed's public and private instances

The site file both hosts include is conf/demo.yaml's networks, security groups and instances,
each instance given the host it runs on. Each frame rewrites it with that frame's rules and
reloads both hosts; after each, every connection of the seed's diagram is tried from the
guests and the Internet, and judged as on one host (calyx_e2e.py), with `calyxctl explain` on
every host that decides: egress rules on the source's host, ingress rules on the destination's,
where a refusal is then counted. What the site adds, and checks after the frames: a private
instance reaches an instance of the other host with its source unchanged; a refusal is counted
as sg_no_ingress_rule on the destination host; the Internet reaches the public instance on
compute-2 by the route its host announced by BGP; the nat instance on compute-1 is masqueraded
to compute-1's address towards the Internet, and not towards compute-2's public instance.

  site_e2e.py --demo   human tables, files in /run/calyx/site-demo, sockets in /run/calyx
  site_e2e.py          the test: temp dir, unique names, exit 1 on any mismatch
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import calyx_e2e as e2e  # noqa: E402
from calyx_e2e import INTERNET, INTERNET_SERVER, NS_ROUTER, Failure, log, run, wait_for  # noqa: E402

REPO = e2e.REPO

# Where the seed's instances run, by the kind of their network. nat alone on compute-1, whose
# address it is masqueraded to; private and public on compute-2: the seed's own connections
# then cross the hosts both ways (public -> nat tcp/80 refused on compute-1 until frame 4,
# nat -> public tcp/3333, private -> nat tcp/4545, the Internet -> public by BGP).
PLACEMENT = {"nat": "compute-1", "public": "compute-2", "private": "compute-2"}
HOSTS = ["compute-1", "compute-2"]
SITE_SECTIONS = ("networks", "security_groups", "instances")
# A bridge takes the lowest MAC of its ports unless given one: with calyx's taps coming and
# going, the router's MAC would change under the hosts' pinned gateway entries.
FABRIC_MAC = "02:00:5e:00:00:01"
SITE_AS = 64512


def site_text(demo_text: str, host_of_instance: dict[str, str]) -> str:
    """The site file: conf/demo.yaml's networks, security groups and instances, with their
    comments and frame tags, every instance given the host it runs on."""
    chunks: dict[str, list[str]] = {}
    pending: list[str] = []  # comments and blank lines: they belong to the next section
    key = None
    for line in demo_text.splitlines():
        m = re.match(r"^([A-Za-z_]+):", line)
        if m:
            key = m.group(1)
            chunks[key] = pending + [line]
            pending = []
        elif key is None or (not line.strip() or line.startswith("#")):
            pending.append(line)
        else:
            chunks[key].extend(pending + [line])
            pending = []
    missing = [k for k in SITE_SECTIONS if k not in chunks]
    if missing:
        raise Failure(f"the demo configuration has no {', '.join(missing)}")
    out = ["# The site of scripts/demo.sh --site (written by tests/e2e/site_e2e.py from conf/demo.yaml):",
           "# the same file on every host; each calyx serves the instances whose host is its own."]
    for k in SITE_SECTIONS:
        lines = chunks[k]
        while lines and not lines[-1].strip():
            lines.pop()
        while lines and not lines[0].strip():
            lines.pop(0)
        out += [""] + lines
    text = "\n".join(out) + "\n"
    placed = set()

    def add_host(m: re.Match) -> str:
        name = m.group(2)
        if name not in host_of_instance:
            return m.group(0)
        placed.add(name)
        return f"{m.group(0)}\n{m.group(1)}  host: {host_of_instance[name]}"

    start = text.index("\ninstances:")
    text = text[:start] + re.sub(r"^(\s*)- name: (\S+)$", add_host, text[start:], flags=re.M)
    if placed != set(host_of_instance):
        raise Failure(f"instances not found in the demo configuration: {sorted(set(host_of_instance) - placed)}")
    return text


@dataclass
class SiteHost(e2e.Host):
    """A compute host in its own network namespace: calyx, BIRD, their files."""
    ns: str = ""
    config: Path | None = None
    tap: str = ""
    control_socket: str = ""
    prefix_len: int = 24
    gateway: str = ""
    export_table: int = 0
    import_table: int = 0
    eal_prefix: str = ""
    bird: subprocess.Popen | None = None


class Fabric(e2e.Internet):
    """The uplink segment: a bridge in a namespace of its own, the Internet's router and web
    server on it; calyx's uplink taps are plugged into the bridge."""

    def __init__(self, ns: str, workdir: Path):
        super().__init__(ns, tap="", host_address="", prefix_len=24, site_prefixes=[], workdir=workdir)

    def create(self) -> None:
        super().create()
        # IPv4 only, as calyx: no IPv6 neighbour discovery noise in its drop counters.
        for conf in ("all", "default"):
            self.exec(["sysctl", "-qw", f"net.ipv6.conf.{conf}.disable_ipv6=1"])
        self.ip("link", "set", "lo", "up")
        self.ip("link", "add", "br0", "address", FABRIC_MAC, "type", "bridge")
        self.ip("addr", "add", f"{NS_ROUTER}/24", "dev", "br0")
        self.ip("addr", "add", f"{INTERNET_SERVER}/32", "dev", "lo")
        self.ip("link", "set", "br0", "up")

    def plug(self, host: SiteHost, timeout: float) -> None:
        """Moves host's uplink tap from its namespace into the bridge, once calyx started the
        port (moved earlier, nothing is received)."""

        def tap_up():
            r = run(["ip", "-n", host.ns, "-o", "link", "show", host.tap], check=False)
            return r.returncode == 0 and re.search(r"<[^>]*\bUP\b", r.stdout)

        wait_for(f"the uplink tap {host.tap} of {host.name}", tap_up, timeout)
        run(["ip", "-n", host.ns, "link", "set", host.tap, "netns", self.ns])
        self.exec(["sysctl", "-qw", f"net.ipv6.conf.{host.tap}.disable_ipv6=1"])
        self.ip("link", "set", host.tap, "master", "br0", "up")

    def destroy(self) -> None:
        if self.server and self.server.poll() is None:
            self.server.kill()
            self.server.wait()
        if self.created:
            run(["ip", "netns", "del", self.ns], check=False)
            self.created = False


class SiteScenario(e2e.Scenario):
    # The refusals of frame 7 explained at the end; public -> nat tcp/4545 crosses the hosts:
    # compute-2 lets it out (public-1's egress), compute-1 refuses it (default-1's ingress).
    EXPLAINED = e2e.Scenario.EXPLAINED + [("public", "nat", 4545)]

    def __init__(self, args):
        super().__init__(args)
        self.history: list[tuple[int, e2e.Outcome]] = []
        self.bird_reflector: subprocess.Popen | None = None
        self.namespaces: list[str] = []
        self.convergence: dict[str, float] = {}
        self.check_lines: list[str] = []  # each host's `calyx --check`

    # ---- setup ---------------------------------------------------------------------------

    def prepare(self) -> None:
        a = self.args
        self.binary = Path(a.calyx).resolve()
        self.ctl = Path(a.calyxctl).resolve() if a.calyxctl else None
        e2e.require_tools(self.binary, ["qemu-system-x86_64", "ip", "ping", "bird", "birdc"])
        if not self.ctl or not self.ctl.exists():
            raise Failure("the site needs calyxctl (explain on each host, reload)")
        demo_cfg = e2e.load_yaml(Path(a.config).read_text())
        self.roles = e2e.seed_roles(demo_cfg)
        self.role_host = dict(PLACEMENT)
        text = site_text(Path(a.config).read_text(),
                         {self.roles[role][0]["name"]: host for role, host in PLACEMENT.items()})
        host_texts = {h: (Path(a.hosts) / f"{h}.yaml").read_text() for h in HOSTS}
        pid = os.getpid()
        if self.demo:
            self.workdir = Path(a.workdir or "/run/calyx/site-demo")
            self.workdir.mkdir(parents=True, exist_ok=True)
            ns_names = {"fabric": "calyx-fabric", **{h: f"calyx-{h}" for h in HOSTS}}
        else:
            self.workdir = Path(tempfile.mkdtemp(prefix="calyx-e2e-site-"))
            # Everything that could collide with another calyx on this machine gets its own name.
            text = text.replace("/run/calyx/", f"{self.workdir}/")
            for n, h in enumerate(HOSTS, 1):
                t = host_texts[h].replace("/run/calyx/", f"{self.workdir}/")
                t = t.replace(f'"calyx-{h}"', f'"calyx-e2e-{pid}-{n}"')
                t = re.sub(r"(name: )calyx-up\d\b", rf"\g<1>cxs{pid % 100000}u{n}", t)
                t = re.sub(r"127\.0\.0\.1:\d+", f"127.0.0.1:{e2e.free_port(pid + n)}", t)
                host_texts[h] = t
            ns_names = {"fabric": f"cxs-{pid}-fab", **{h: f"cxs-{pid}-h{n}" for n, h in enumerate(HOSTS, 1)}}
        self.ns_name = ns_names["fabric"]
        self.pids_file = self.workdir / "pids"
        self.base_text = text
        self.cfg = e2e.load_yaml(text)
        self.roles = e2e.seed_roles(self.cfg)  # with this run's socket paths
        for h in HOSTS:
            c = e2e.load_yaml(host_texts[h])
            if c.get("host") != h:
                raise Failure(f"{a.hosts}/{h}.yaml is not the file of host {h}: host: {c.get('host')}")
            up = c["uplink"]
            if up["port"]["type"] != "tap":
                raise Failure(f"{h}: the site demo needs a tap uplink")
            address, plen = up["address"].split("/")
            eal = c["dataplane"].get("eal_args", [])
            self.hosts[h] = SiteHost(
                h, address, ns=ns_names[h], tap=up["port"]["name"], control_socket=c["control"]["socket"],
                prefix_len=int(plen), gateway=up["gateway"], export_table=int(c["routing"]["export_table"]),
                import_table=int(c["routing"]["import_table"]),
                eal_prefix=eal[eal.index("--file-prefix") + 1] if "--file-prefix" in eal else "")
            if up["gateway"] != NS_ROUTER:
                raise Failure(f"{h}: the fabric's router is {NS_ROUTER}, the uplink's gateway {up['gateway']}")
        if self.demo:
            self.kill_leftovers()
            for f in self.workdir.iterdir():
                if f.is_file() or f.is_socket():
                    f.unlink()
        for h in HOSTS:
            self.hosts[h].config = self.workdir / f"{h}.yaml"
            self.hosts[h].config.write_text(host_texts[h])
        self.frame_files = e2e.write_frames(self.workdir, self.base_text, "site")
        self.config_path = self.workdir / "site.yaml"
        shutil.copyfile(self.frame_files[1], self.config_path)
        for h in self.hosts.values():
            r = run([str(self.binary), "--config", str(h.config), "--check"], check=False)
            if r.returncode != 0:
                raise Failure(f"{h.name}: calyx --check: {r.stdout}{r.stderr}")
            self.check_lines.append(f"{h.name}: {r.stdout.strip()}")
        self.write_bird_files()
        self.kernel, self.initrd = e2e.guest_boot_files(Path(a.cache))

    def kill_leftovers(self) -> None:
        """A demo killed hard leaves its processes (the BIRDs' command lines name their files in
        the demo's directory) and namespaces: take them away."""
        self.kill_recorded()
        for ns in [self.ns_name] + [h.ns for h in self.hosts.values()]:
            run(["ip", "netns", "del", ns], check=False)

    def site_networks(self) -> list[str]:
        return [n["cidr"] for n in self.cfg["networks"]]

    def write_bird_files(self) -> None:
        """The reflector's directory (conf/bird/route-reflector.conf and its two site files) and
        each host's (conf/bird/bird.conf and its host and peers files), from the site's files."""
        bird_dir = REPO / "conf" / "bird"
        nets = self.site_networks()
        hosts32 = ", ".join(f"{n}{{32,32}}" for n in nets)
        public32 = ", ".join(f"{n['cidr']}{{32,32}}" for n in self.cfg["networks"] if n["kind"] == "public")
        segment = str(ipaddress.ip_interface(f"{NS_ROUTER}/{next(iter(self.hosts.values())).prefix_len}").network)
        d = self.workdir / "bird-fabric"
        d.mkdir(exist_ok=True)
        shutil.copyfile(bird_dir / "route-reflector.conf", d / "bird.conf")
        (d / "route-reflector-site.conf").write_text(
            f"router id {NS_ROUTER};\ndefine CALYX_AS = {SITE_AS};\ndefine CALYX_SEGMENT = {segment};\n"
            f"define CALYX_PUBLIC_HOSTS = [{public32}];\n")
        (d / "route-reflector-clients.conf").write_text("".join(
            f"protocol bgp {h.name.replace('-', '_')} from calyx_host {{ neighbor {h.address} as CALYX_AS; }}\n"
            for h in self.hosts.values()))
        for h in self.hosts.values():
            d = self.workdir / f"bird-{h.name}"
            d.mkdir(exist_ok=True)
            shutil.copyfile(bird_dir / "bird.conf", d / "bird.conf")
            (d / "calyx-host.conf").write_text(
                f"router id {h.address};\ndefine CALYX_AS = {SITE_AS};\n"
                f"define CALYX_EXPORT_TABLE = {h.export_table};\ndefine CALYX_IMPORT_TABLE = {h.import_table};\n"
                f"define CALYX_SITE_NETWORKS = [{', '.join(nets)}];\ndefine CALYX_SITE_HOSTS = [{hosts32}];\n")
            (d / "calyx-peers.conf").write_text(
                f"protocol bgp rr1 from calyx_peer {{ neighbor {h.gateway} as {SITE_AS}; }}\n")

    def bird_dir(self, name: str) -> Path:
        return self.workdir / f"bird-{name}"

    def start_bird(self, name: str, ns: str) -> subprocess.Popen:
        d = self.bird_dir(name)
        with open(self.workdir / f"bird-{name}.log", "ab") as blog:
            return subprocess.Popen(["ip", "netns", "exec", ns, "bird", "-f", "-c", str(d / "bird.conf"),
                                     "-s", str(d / "bird.ctl")],
                                    stdin=subprocess.DEVNULL, stdout=blog, stderr=subprocess.STDOUT,
                                    start_new_session=True)

    def birdc(self, name: str, command: str) -> str:
        r = run(["birdc", "-s", str(self.bird_dir(name) / "bird.ctl"), *command.split()], check=False, timeout=20)
        return r.stdout + r.stderr

    def record_pids(self) -> None:
        super().record_pids()
        birds = [b.pid for b in [self.bird_reflector] + [h.bird for h in self.hosts.values()] if b]
        with open(self.pids_file, "a") as f:
            f.write(" ".join(map(str, birds)) + "\n")

    # ---- steps ---------------------------------------------------------------------------

    def start(self) -> None:
        self.heading("Starting the site: a fabric with the route reflector and the Internet, two compute "
                     "hosts each with calyx and BIRD, three VMs")
        for line in self.check_lines:
            self.say(f"  {line}")
        self.internet = Fabric(self.ns_name, self.workdir)
        self.internet.create()
        self.namespaces.append(self.ns_name)
        self.internet.start_server()
        self.record_pids()
        self.say(f"  fabric: namespace {self.ns_name}, bridge br0, router {NS_ROUTER}; "
                 f"web server {INTERNET_SERVER}:80,443")
        for h in self.hosts.values():
            run(["ip", "netns", "del", h.ns], check=False)  # a leftover of a killed run
            run(["ip", "netns", "add", h.ns])
            self.namespaces.append(h.ns)
            run(["ip", "-n", h.ns, "link", "set", "lo", "up"])
            h.calyx = e2e.Calyx(self.binary, self.ctl, h.config, self.workdir / f"calyx-{h.name}.log",
                                h.control_socket, netns=h.ns)
            h.calyx.start(ready_timeout=60)
            self.record_pids()
            self.internet.plug(h, timeout=30)
            wait_for(f"ping from the fabric to {h.name}",
                     lambda h=h: self.internet.exec(["ping", "-c", "1", "-W", "1", h.address]).returncode == 0, 20)
            placed = ", ".join(self.name(r) for r, at in self.role_host.items() if at == h.name)
            self.say(f"  {h.name}: namespace {h.ns}, calyx pid {h.calyx.proc.pid} (uplink {h.address} on "
                     f"{h.tap} in the bridge, host interface with BIRD behind it): {placed}")
        self.start_routing()
        self.boot_guests()

    def instances(self):
        """(role, instance, its host) of every instance of the site."""
        for role, (inst, _) in self.roles.items():
            yield role, inst, self.host_of(role)

    def start_routing(self) -> None:
        """The three BIRDs; then the wait until each host routes the other's instances and the
        fabric the public ones, by BGP: the site's convergence at start."""
        t0 = time.monotonic()
        self.bird_reflector = self.start_bird("fabric", self.ns_name)
        for h in self.hosts.values():
            h.bird = self.start_bird(h.name, h.ns)
        self.record_pids()
        routes = []  # (namespace, table, instance address, via)
        for role, inst, at in self.instances():
            for h in self.hosts.values():
                if h is not at:
                    routes.append((h.ns, f"table {h.import_table}", inst["ipv4"], at.address))
            if role == "public":
                routes.append((self.ns_name, "", inst["ipv4"], at.address))

        def routed():
            for ns, table, ip, via in routes:
                r = run(["ip", "-n", ns, "route", "show", *table.split(), f"{ip}/32"], check=False)
                if f"via {via} " not in r.stdout + " " or "proto bird" not in r.stdout:
                    return False
            return True

        wait_for("BGP: every host routing the other's instances, the fabric the public ones", routed, 90, 0.05)
        self.convergence["bgp_start_until_routed_s"] = time.monotonic() - t0
        # An upstream that routes the site's other addresses to their hosts anyway (careless or
        # hostile): the Internet's attempts on the nat and private instances then reach calyx,
        # which must refuse them, as on one host.
        for role, inst, at in self.instances():
            if role != "public":
                self.internet.ip("route", "add", f"{inst['ipv4']}/32", "via", at.address)
        self.say(f"  BGP: sessions up and every host routing the other's instances, the fabric the public ones, "
                 f"{self.convergence['bgp_start_until_routed_s']:.1f} s after the BIRDs started")
        for h in self.hosts.values():
            table = run(["ip", "-n", h.ns, "route", "show", "table", str(h.import_table)], check=False).stdout
            for line in table.strip().splitlines():
                self.say(f"    {h.name} table {h.import_table}: {line.strip()}")
        self.say(f"    fabric (the Internet's router): {self.fabric_route(self.roles['public'][0]['ipv4']).strip()}")

    def apply_frame(self, k: int) -> str:
        """The site file of frame k, reloaded by both hosts."""
        shutil.copyfile(self.frame_files[k], self.config_path)
        if k == 1:
            return "the site file both calyx started with"
        for h in self.hosts.values():
            h.calyx.reload()
        return f"the site file rewritten; calyxctl reload on {' and '.join(self.hosts)}"

    def run_frame(self, k: int, checks: list[e2e.Check]) -> list[e2e.Outcome]:
        outcomes = super().run_frame(k, checks)
        self.history.extend((k, o) for o in outcomes)
        return outcomes

    def configure_guests(self) -> None:
        super().configure_guests()
        self.say("On a site, 'why' also says where: egress rules are checked on the source's host, ingress\n"
                 "rules on the destination's, and a refusal is counted on the host that refused it.")

    # ---- what the site adds ----------------------------------------------------------------

    def fabric_route(self, address: str) -> str:
        """The route of the fabric (the Internet's router) to `address`."""
        return run(["ip", "-n", self.ns_name, "route", "show", f"{address}/32"], check=False).stdout

    def site_checks(self) -> None:
        """What a site must show, each proven by an outcome of the frames (so that a changed
        placement cannot quietly stop proving it)."""
        self.heading("The site: what the frames showed across the two hosts")
        public, nat = self.roles["public"][0], self.roles["nat"][0]
        nat_host = self.host_of("nat")

        def across(o: e2e.Outcome) -> bool:
            c = o.check
            return INTERNET not in (c.src, c.dst) and self.host_of(c.src) is not self.host_of(c.dst)

        def ok(o: e2e.Outcome) -> bool:
            return not o.problems

        fabric_route = self.fabric_route(public["ipv4"])
        claims = [
            ("a private instance reaches an instance of the other host, its source unchanged",
             lambda o: ok(o) and across(o) and o.check.src == "private" and o.connected
             and o.seen == self.address("private", False)),
            ("a refusal is counted as sg_no_ingress_rule on the destination host",
             lambda o: ok(o) and across(o) and not o.connected and o.reason == "sg_no_ingress_rule"
             and o.counted > 0 and o.counted_on == self.where(self.host_of(o.check.dst), "uplink")),
            (f"the Internet reaches {public['name']} on {self.role_host['public']} by its BGP route "
             f"({fabric_route.strip()})",
             lambda o: ok(o) and o.check.src == INTERNET and o.check.dst == "public" and o.connected
             and f"via {self.host_of('public').address} " in fabric_route and "proto bird" in fabric_route),
            (f"{nat['name']} on {nat_host.name} is masqueraded to {nat_host.name}'s address {nat_host.address}",
             lambda o: ok(o) and o.check.src == "nat" and o.check.dst == INTERNET and o.connected
             and o.seen == nat_host.address),
            (f"... and not towards an instance of the other host (the destination sees {nat['ipv4']})",
             lambda o: ok(o) and across(o) and o.check.src == "nat" and o.connected and o.seen == nat["ipv4"]),
        ]
        for claim, proves in claims:
            proof = next(((k, o) for k, o in self.history if proves(o)), None)
            if proof is None:
                self.say(f"  MISSING  {claim}")
                self.fail(f"the site: no outcome of the frames shows that {claim}")
                continue
            k, o = proof
            c = o.check
            what = f"{c.proto}/{c.port}" if c.port is not None else "ping"
            evidence = o.detail if o.connected else f"{o.reason}, {o.counted} dropped on {o.counted_on}"
            self.say(f"  ok  {claim}\n        frame {k}: {self.name(c.src)} -> {self.name(c.dst)} {what}: {evidence}")

    def report_convergence(self) -> None:
        self.heading("Convergence")
        self.say(f"  BIRDs started until both hosts route each other's instances and the fabric the public "
                 f"one: {self.convergence['bgp_start_until_routed_s']:.1f} s")

    def stay(self) -> None:
        self.heading("Everything keeps running; Ctrl-C stops it and cleans up")
        for h in self.hosts.values():
            self.say(f"  {h.name}:  {self.ctl} --socket {h.control_socket} status | routes | drops | explain ...")
            self.say(f"              birdc -s {self.bird_dir(h.name)}/bird.ctl show route; "
                     f"ip netns exec {h.ns} ip route show table {h.import_table}")
        self.say(f"  the Internet:  ip netns exec {self.ns_name} ping {self.roles['public'][0]['ipv4']}")
        self.say(f"  logs:          {self.workdir}")
        while all(g.proc and g.proc.poll() is None for g in self.guests.values()) and all(
                h.calyx.alive() for h in self.hosts.values()):
            time.sleep(1)
        self.fail("a VM or calyx stopped")

    # ---- reporting, cleanup ------------------------------------------------------------------

    def diagnostics(self) -> None:
        super().diagnostics()
        for name in ["fabric"] + list(self.hosts):
            log(f"--- BIRD of {name}: birdc show protocols")
            with contextlib.suppress(Exception):
                log(self.birdc(name, "show protocols"))
            with contextlib.suppress(OSError):
                log("\n".join((self.workdir / f"bird-{name}.log").read_text(errors="replace").splitlines()[-20:]))
        for h in self.hosts.values():
            with contextlib.suppress(Exception):
                log(f"--- {h.name} table {h.import_table}:\n" +
                    run(["ip", "-n", h.ns, "route", "show", "table", str(h.import_table)], check=False).stdout)

    def cleanup(self) -> None:
        for g in self.guests.values():
            with contextlib.suppress(Exception):
                g.stop()
        for b in [self.bird_reflector] + [h.bird for h in self.hosts.values()]:
            if b and b.poll() is None:
                b.terminate()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    b.wait(10)
                if b.poll() is None:
                    b.kill()
                    b.wait()
        for h in self.hosts.values():
            if h.calyx:
                with contextlib.suppress(Exception):
                    h.calyx.stop()
            if h.eal_prefix:
                shutil.rmtree(f"/var/run/dpdk/{h.eal_prefix}", ignore_errors=True)
        if self.internet:
            with contextlib.suppress(Exception):
                self.internet.destroy()
        for ns in self.namespaces:
            run(["ip", "netns", "del", ns], check=False)
        self.remove_files()


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    e2e.common_arguments(p, str(REPO / "conf" / "demo.yaml"))
    p.add_argument("--hosts", default=str(REPO / "conf" / "site"),
                   help="the directory of the hosts' own files, compute-1.yaml and compute-2.yaml")
    args = e2e.parse_arguments(p, argv)
    if os.geteuid() != 0:
        log("site_e2e: needs root (network namespaces, vhost-user sockets, EAL)")
        return 1

    s = SiteScenario(args)

    def steps():
        s.prepare()
        s.start()
        s.configure_guests()
        checks = e2e.seed_checks()
        for k in range(1, 8):
            s.run_frame(k, checks)
        s.explain_examples()
        s.site_checks()
        s.report_convergence()
        if args.stay and not s.failures:
            s.stay()

    return e2e.drive(s, steps, "All seven frames across two hosts as the seed says")


if __name__ == "__main__":
    sys.exit(main(sys.argv))
