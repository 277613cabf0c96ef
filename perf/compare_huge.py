#!/usr/bin/env python3
"""Benchmark calyx against dpdk-testpmd io forwarding (the limit of the vhost-user path),
OVS-DPDK and the Linux kernel (Calico's Felix dataplane), with the same traffic generator
(perf/trafficgen.cpp) in the same run.

    perf/compare.py [--build DIR] [--gen FILE] [--reps N] [--duration S] [--scenario NAME ...]
                    [--targets testpmd,ovs,kernel,calyx] [--kernel-pmd af_xdp|af_packet]
                    [--quick] [--json-out FILE]

e.g. `sudo perf/compare.py --json-out compare.json` (about 25 minutes; --quick: 3). Needs
`ninja -C build calyx perf/calyx-trafficgen`, Debian's dpdk and openvswitch-switch-dpdk,
nftables, ethtool and iproute2.

Every DPDK target is the vhost-user server of two sockets (instance A, and instance B or the
uplink); the generator is their client and plays both ends (see perf/trafficgen.cpp). The
kernel has no vhost-user (and this kernel no vhost-net): it routes between veth pairs in a
namespace of its own, and the generator sends and receives on the veths' other ends through
AF_XDP (or AF_PACKET) sockets (see Kernel).
Each (scenario, repetition, target) gets a freshly started target, so no conntrack state
carries over; targets take turns within a repetition so that the machine's noise hits them
alike. Pinning: the target's forwarding core is CPU 1; everything else (generator, main
lcores, OVS's non-PMD threads, this script) CPU 0. DPDK never probes PCI (--no-pci).
Sockets, configurations, logs and the OVS database live in a temp dir; every process,
namespace and hugepage file is removed at the end, also on Ctrl-C or SIGTERM. A failed run
becomes a "failed: reason" cell and the others go on. Prints a markdown table of medians, with
the spread of the repetitions and runs the generator limited marked as lower bounds.

The generator checks every frame it receives (addresses, ports, the translation where the
target masquerades, sampled checksums: see perf/trafficgen.cpp); a run in which any frame
arrived wrong fails, whatever its rate."""
import argparse, contextlib, datetime, glob, json, os, platform, re, shutil, signal, socket, statistics
import subprocess, sys, tempfile, threading, time, urllib.request
from dataclasses import dataclass

import yaml

GW_MAC = "ee:ee:ee:ee:ee:ee"       # calyx's gateway MAC: what A sends to, what A and B see
A_MAC, B_MAC = "52:54:00:00:0a:01", "52:54:00:00:0b:01"
INET_MAC = "02:00:00:00:01:01"     # the generator's "Internet" router behind the uplink
OVS_UPLINK_MAC = "02:00:00:00:00:fe"   # OVS has no uplink port MAC of its own: we pick one
IDLE_NET = "10.3.0.0/24"
A_NET, B_NET, NAT_NET = ("10.1.0.0/24", "10.1.0.5"), ("10.2.0.0/24", "10.2.0.5"), ("10.10.0.0/24", "10.10.0.5")
UPLINK_ADDR, UPLINK_GW, INET_IP, NAT_PORTS = "198.51.100.10", "198.51.100.1", "192.0.2.1", (1024, 65535)
# Destination ports of the flows: 64 ports aligned on 64, so OVS matches them with one masked
# flow (tp_dst=8000/0xffc0) and calyx with one rule; 64 x 64512 source ports = 4M tuples.
PORT_MIN, PORT_MAX = 8000, 8063
OVS_BIN = "/usr/lib/openvswitch-switch-dpdk/ovs-vswitchd-dpdk"
OVS_SCHEMA = "/usr/share/openvswitch/vswitch.ovsschema"
ALL_TARGETS = ("testpmd", "ovs", "kernel", "calyx")


@dataclass
class Scenario:
    name: str
    proto: str
    mode: str            # established | new
    flows: int
    frame: int
    policy: str          # route (allow-all groups) | sg (A egress, B ingress from A's group) | nat
    capacity: int = 1 << 20   # calyx conntrack capacity (OVS: ct-set-maxconns)
    idle_ports: int = 0       # more VMs, connected and silent (targets with idle_ports only)


SCENARIOS = [
    Scenario("route-udp", "udp", "established", 10_000, 64, "route"),
    Scenario("sg-10k", "tcp", "established", 10_000, 64, "sg"),
    Scenario("sg-1m", "tcp", "established", 1_000_000, 64, "sg", capacity=1 << 21),
    Scenario("sg-10k-1500", "tcp", "established", 10_000, 1500, "sg"),
    Scenario("nat-udp", "udp", "established", 10_000, 64, "nat"),
    # route-udp's flows with 100 more VMs on the host, connected and silent: what polling
    # their empty rings costs (compare with route-udp of the same run).
    Scenario("route-udp-idle100", "udp", "established", 10_000, 64, "route", idle_ports=100),
    # new-connection rates: the table must hold every connection of the run (a masqueraded
    # one takes two calyx entries), so --flows stays below the capacity.
    Scenario("new-udp", "udp", "new", 3_500_000, 64, "sg", capacity=1 << 22),
    Scenario("new-nat-udp", "udp", "new", 1_800_000, 64, "nat", capacity=1 << 22),
]


class Failed(Exception):
    """A step failed; the message names it. Fails the current cell, not the run."""


# ---------------------------------------------------------------- processes and cleanup
CHILDREN = []      # Popen of everything started and still running, stopped by pid
PREFIXES = set()   # DPDK --file-prefix values whose hugepage files and run dirs we remove


def start(argv, log, env=None, out=None):
    # Own session: Ctrl-C reaches only this script, which then stops the children in order.
    with open(log, "ab") as err, open(out or log, "ab") as stdout:
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=stdout, stderr=err, env=env,
                             start_new_session=True)
    CHILDREN.append(p)
    return p


def stop(p, grace=10):
    if p.poll() is None:
        p.terminate()
        try:
            p.wait(grace)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)
    if p in CHILDREN:
        CHILDREN.remove(p)


def stop_all():
    while CHILDREN:
        stop(CHILDREN[-1])     # newest first: vswitchd before ovsdb-server
    for prefix in list(PREFIXES):
        remove_prefix(prefix)


def wait_cpu_quiet(cpu, busy_below=0.05, timeout=30):
    """Waits until `cpu` spends less than `busy_below` of 0.5 s outside idle (or `timeout` s)."""
    def ticks():
        f = next(l.split() for l in open("/proc/stat") if l.startswith(f"cpu{cpu} "))
        values = list(map(int, f[1:9]))
        return sum(values), values[3] + values[4]   # all, idle + iowait
    deadline = time.time() + timeout
    while time.time() < deadline:
        all0, idle0 = ticks()
        time.sleep(0.5)
        all1, idle1 = ticks()
        if all1 > all0 and 1 - (idle1 - idle0) / (all1 - all0) < busy_below:
            return


def remove_prefix(prefix):
    mounts = [l.split()[1] for l in open("/proc/mounts") if l.split()[2] == "hugetlbfs"]
    for f in [f for m in mounts for f in glob.glob(f"{m}/{prefix}map_*")]:
        os.unlink(f)
    shutil.rmtree(f"/var/run/dpdk/{prefix}", ignore_errors=True)


def tail(path, n=6):
    try:
        return " | ".join(l.strip() for l in open(path, errors="replace").readlines()[-n:])
    except OSError:
        return ""


def wait_for(what, pred, timeout, proc=None, log=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise Failed(f"{what}: process exited with {proc.returncode}: {tail(log)}")
        try:
            if pred():
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise Failed(f"{what}: timed out after {timeout}s" + (f": {tail(log)}" if log else ""))


def run(argv, timeout=30, env=None):
    r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env)
    if r.returncode != 0:
        raise Failed(f"{' '.join(argv[:3])}: exit {r.returncode}: {r.stderr.strip()[-300:]}")
    return r.stdout


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def setup_hugepages(pages=2048):
    # 2 MiB pages: generator + target + calyx's 4M-entry conntrack (~500 MB) fit in 4 GiB.
    if int(open("/proc/sys/vm/nr_hugepages").read()) < pages:
        open("/proc/sys/vm/nr_hugepages", "w").write(str(pages))
    os.makedirs("/dev/hugepages", exist_ok=True)
    if subprocess.run(["mountpoint", "-q", "/dev/hugepages"]).returncode != 0:
        subprocess.run(["mount", "-t", "hugetlbfs", "nodev", "/dev/hugepages"], check=True)
    free = int(re.search(r"HugePages_Free:\s+(\d+)", open("/proc/meminfo").read())[1])
    if free < 1024:
        sys.exit(f"only {free} free hugepages (leftover files in /dev/hugepages?)")


# ---------------------------------------------------------------- targets
class Target:
    """Started per run: start() returns the two server sockets, stop() ends it; sample()
    returns cumulative forwarding-core counters (packets, busy/io/total cycles) or None.
    `routes`: it rewrites MACs (A addresses the gateway MAC) and masquerades the nat
    scenario, which the generator then checks on every frame."""
    name = ""
    routes = True

    @property
    def gateway_mac(self):
        return GW_MAC
    idle_ports = False   # can serve a scenario's idle VMs (see IdlePeers)

    def __init__(self, sc, work, build):
        self.sc, self.work, self.build, self.procs = sc, work, build, []
        self.prefix = f"cmp-{self.name}-{os.getpid()}"
        self.log = f"{work}/{self.name}.log"

    def spawn(self, argv, env=None):
        p = start(argv, self.log, env)
        self.procs.append(p)
        return p

    def stop(self):
        for p in reversed(self.procs):
            stop(p)
        remove_prefix(self.prefix)

    def sample(self): return None

    def extra(self): return {}

    def configure(self, args): pass

    def port_args(self, a, b):   # how the generator reaches the two ends start() returned
        return ["--a-socket", a, "--b-socket", b]

    def generator_prefix(self):  # what the generator's command line runs under
        return []


class Testpmd(Target):
    """io forwarding between two net_vhost ports: forwards without reading the packets, so
    every scenario runs unchanged. No routing, no conntrack: the baseline of the ratios."""
    name = "testpmd"
    routes = False   # io mode rewrites nothing: A addresses B directly, B sees A's own addresses

    @property
    def gateway_mac(self):
        return INET_MAC if self.sc.policy == "nat" else B_MAC

    def start(self):
        a, b = f"{self.work}/tp-a.sock", f"{self.work}/tp-b.sock"
        PREFIXES.add(self.prefix)
        # --stats-period keeps testpmd running without a terminal on stdin.
        p = self.spawn([
            "dpdk-testpmd", "-l", "0,1", "--main-lcore", "0", "--no-pci",
            "--file-prefix", self.prefix, "--vdev", f"net_vhost0,iface={a},queues=1",
            "--vdev", f"net_vhost1,iface={b},queues=1", "--", "--forward-mode=io",
            "--nb-cores=1", "--rxq=1", "--txq=1", "--auto-start", "--stats-period=3600"])
        wait_for("testpmd sockets", lambda: os.path.exists(a) and os.path.exists(b), 30, p, self.log)
        return a, b


class Ovs(Target):
    """ovs-vswitchd-dpdk with its own ovsdb in the temp dir, one PMD on CPU 1, a netdev bridge
    with two dpdkvhostuser ports (OVS creates the sockets in its run dir) and OpenFlow rules
    equivalent to calyx's configuration for the scenario (see ovs_flows)."""
    name = "ovs"

    def start(self):
        d = f"{self.work}/ovs"
        shutil.rmtree(d, ignore_errors=True), os.makedirs(d)
        self.env = dict(os.environ, OVS_RUNDIR=d, OVS_LOGDIR=d, OVS_DBDIR=d, OVS_SYSCONFDIR=d)
        self.ctl, self.mgmt = f"{d}/vswitchd.ctl", f"unix:{d}/br0.mgmt"
        db = f"unix:{d}/db.sock"
        run(["ovsdb-tool", "create", f"{d}/conf.db", OVS_SCHEMA])
        p = self.spawn(["ovsdb-server", f"{d}/conf.db", f"--remote=punix:{d}/db.sock",
                        f"--unixctl={d}/ovsdb.ctl", f"--log-file={d}/ovsdb.log"], self.env)
        wait_for("ovsdb-server socket", lambda: os.path.exists(f"{d}/db.sock"), 15, p, self.log)
        vsctl = ["ovs-vsctl", f"--db={db}", "--timeout=30"]
        PREFIXES.add(self.prefix)
        run(vsctl + ["--no-wait", "init", "--", "set", "Open_vSwitch", ".",
                     "other_config:dpdk-init=true", "other_config:dpdk-lcore-mask=0x1",
                     "other_config:pmd-cpu-mask=0x2",
                     f'other_config:dpdk-extra="--no-pci --file-prefix={self.prefix}"'], env=self.env)
        self.spawn([OVS_BIN, db, f"--unixctl={self.ctl}", f"--log-file={d}/ovs-vswitchd.log"], self.env)
        ports = []
        for i, port in enumerate(("vhu-a", "vhu-b"), 1):
            ports += ["--", "add-port", "br0", port, "--", "set", "Interface", port,
                      "type=dpdkvhostuser", f"ofport_request={i}"]
        # fail_mode=secure: no NORMAL flow ever forwards behind our rules' back.
        run(vsctl + ["add-br", "br0", "--", "set", "bridge", "br0", "datapath_type=netdev",
                     "fail_mode=secure"] + ports, timeout=60, env=self.env)
        a, b = f"{d}/vhu-a", f"{d}/vhu-b"
        wait_for("OVS vhost-user sockets", lambda: os.path.exists(a) and os.path.exists(b), 30,
                 self.procs[-1], f"{d}/ovs-vswitchd.log")
        # OVS logs the EAL arguments it used: the machine's NIC must stay out of DPDK's reach.
        eal = re.search(r"EAL ARGS: (.*)", open(f"{d}/ovs-vswitchd.log").read())
        if not eal or "--no-pci" not in eal[1].split():
            raise Failed(f"OVS's EAL arguments lack --no-pci: {eal[1] if eal else 'not logged'}")
        open(f"{d}/flows.txt", "w").write(ovs_flows(self.sc))
        run(["ovs-ofctl", "del-flows", self.mgmt], env=self.env)
        run(["ovs-ofctl", "add-flows", self.mgmt, f"{d}/flows.txt"], env=self.env)
        run(self.appctl("dpctl/ct-set-maxconns", str(self.sc.capacity)), env=self.env)
        return a, b

    def appctl(self, *args):
        return ["ovs-appctl", "-t", self.ctl, "--timeout=10", *args]

    def sample(self):
        out = run(self.appctl("dpif-netdev/pmd-stats-show"), env=self.env)
        num = lambda key: int(re.search(key + r":\s+(\d+)", out)[1])
        busy = num("processing cycles")
        return {"packets": num("packets received"), "busy": busy, "total": busy + num("idle cycles")}

    def extra(self):   # which rules the packets took, and the connections OVS tracked
        flows = run(["ovs-ofctl", "dump-flows", self.mgmt], env=self.env)
        return {"flows": re.findall(r"table=\d+, n_packets=\d+.*?priority=\S+", flows),
                "conntrack": run(self.appctl("dpctl/ct-stats-show"), env=self.env).split()}


def ovs_flows(sc):
    """OpenFlow tables doing what calyx does for the scenario, as far as OVS can say it.
    Ports: 1 = instance A, 2 = instance B (or the uplink to the Internet for nat)."""
    a_ip, b_ip = (NAT_NET if sc.policy == "nat" else A_NET)[1], B_NET[1]
    nat = f"nat(src={UPLINK_ADDR}:{NAT_PORTS[0]}-{NAT_PORTS[1]})"
    ports = f"tp_dst={PORT_MIN}/0x{0xffff & ~(PORT_MAX - PORT_MIN):x}"
    f = [
        "# table 0 - admission (calyx: classify + anti-spoofing): IPv4 from the instance's own",
        "# MAC and address to the gateway MAC goes through conntrack (ct(nat) for nat: the",
        "# translation of known connections is applied, un-NAT on the way back); the rest drops.",
        f"table=0,priority=100,ip,in_port=1,dl_src={A_MAC},nw_src={a_ip},dl_dst={GW_MAC},actions=ct(table=1{',nat' if sc.policy == 'nat' else ''})",
    ]
    if sc.policy == "nat":
        f.append(f"table=0,priority=100,ip,in_port=2,dl_dst={OVS_UPLINK_MAC},nw_dst={UPLINK_ADDR},actions=ct(table=1,nat)")
    else:
        f.append(f"table=0,priority=100,ip,in_port=2,dl_src={B_MAC},nw_src={b_ip},dl_dst={GW_MAC},actions=ct(table=1)")
    f += ["table=0,priority=0,actions=drop",
          "# table 1 - security groups + conntrack: established (and replies) pass both ways,",
          "# a new connection only where calyx's rules allow it (then committed), else drop.",
          "table=1,priority=100,ct_state=+trk+est-inv,ip,actions=resubmit(,2)"]
    if sc.policy == "route":   # allow-all groups on both instances: any new connection
        f.append("table=1,priority=90,ct_state=+trk+new-inv,ip,actions=ct(commit),resubmit(,2)")
    elif sc.policy == "sg":    # A egress proto; B ingress proto to the flows' ports from A's group
        f.append(f"table=1,priority=90,ct_state=+trk+new-inv,{sc.proto},in_port=1,nw_src={a_ip},nw_dst={b_ip},{ports},actions=ct(commit),resubmit(,2)")
    else:                      # nat network: A egress udp, masqueraded; nothing unsolicited in
        f.append(f"table=1,priority=90,ct_state=+trk+new-inv,{sc.proto},in_port=1,actions=ct(commit,{nat}),resubmit(,2)")
    f += ["table=1,priority=0,actions=drop",
          "# table 2 - routing (calyx: rte_fib LPM, neighbour, TTL): rewrite MACs, dec_ttl, out."]
    if sc.policy == "nat":
        f += [f"table=2,priority=100,ip,in_port=1,actions=mod_dl_src:{OVS_UPLINK_MAC},mod_dl_dst:{INET_MAC},dec_ttl,output:2",
              f"table=2,priority=100,ip,in_port=2,nw_dst={NAT_NET[0]},actions=mod_dl_src:{GW_MAC},mod_dl_dst:{A_MAC},dec_ttl,output:1"]
    else:
        f += [f"table=2,priority=100,ip,nw_dst={B_NET[0]},actions=mod_dl_src:{GW_MAC},mod_dl_dst:{B_MAC},dec_ttl,output:2",
              f"table=2,priority=100,ip,nw_dst={A_NET[0]},actions=mod_dl_src:{GW_MAC},mod_dl_dst:{A_MAC},dec_ttl,output:1"]
    return "\n".join(f + ["table=2,priority=0,actions=drop", ""])


class IdlePeers:
    """VMs that are connected and send nothing: dpdk-testpmd processes on CPU 0, each the
    virtio-user client of up to 25 of the target's vhost-user sockets, without hugepages.
    Interactive, waiting on a silent stdin: its ports are started, its forwarding never is
    (without -i testpmd starts forwarding and busy-polls CPU 0, the generator's)."""
    PER_PROCESS = 25   # a DPDK process has at most RTE_MAX_ETHPORTS (32) ports

    def __init__(self, sockets, work):
        self.sockets, self.work, self.procs = sockets, work, []

    def start(self):
        log = f"{self.work}/idle-peers.log"
        for first in range(0, len(self.sockets), self.PER_PROCESS):
            chunk = self.sockets[first:first + self.PER_PROCESS]
            argv = ["dpdk-testpmd", "--lcores", "0@0,1@0", "--main-lcore", "0", "--no-pci", "--no-huge",
                    "-m", "512", "--file-prefix", f"cmp-idle-{os.getpid()}-{first}", "--log-level", "notice"]
            for i, path in enumerate(chunk):
                argv += ["--vdev", f"net_virtio_user{i},path={path},queues=1,queue_size=256"]
            argv += ["--", "-i", "--total-num-mbufs=16384", "--nb-cores=1"]
            with open(log, "ab") as out:
                p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=out, stderr=out, start_new_session=True)
            CHILDREN.append(p)
            self.procs.append(p)
        # Each process prompts once all its ports are started (every guest connected).
        wait_for("idle VMs connected", lambda: open(log, errors="replace").read().count("testpmd>")
                 >= len(self.procs), 60, self.procs[-1], log)
        return self

    def stop(self):
        for p in reversed(self.procs):
            stop(p)


class Calyx(Target):
    """build/calyx on a generated configuration: instance A (and B) as vhost-user servers, or
    for nat the uplink over vhost-user; one worker on lcore 1."""
    name = "calyx"
    idle_ports = True

    def config(self, a, b):
        sc, port = self.sc, {"type": "vhost-user", "mode": "server"}
        inst = lambda name, net, mac, ip, sock, sg: {
            "name": name, "network": net, "mac": mac, "ipv4": ip,
            "security_groups": [sg], "port": dict(port, socket=sock)}
        net = lambda name, kind, cidr: {"name": name, "kind": kind, "cidr": cidr,
                                        "gateway": cidr.replace(".0/24", ".1")}
        cfg = {"dataplane": {"workers": [1], "eal_args": ["--file-prefix", self.prefix],
                             "conntrack": {"capacity": sc.capacity}, "state_file": self.state_file()},
               "control": {"socket": f"{self.work}/calyx.ctl"},
               "metrics": {"listen": f"127.0.0.1:{self.metrics_port}"},
               # One client VM opens every flow: the per-instance limits (65536 connections,
               # 50000 new a second by default) would measure the tenant's budget, not the
               # router (new-udp lost 98 % to limit_connections). As high as the config allows;
               # the limits are still checked for every new connection.
               "limits": {"connections": sc.capacity, "new_connections_per_second": 1_000_000_000,
                          "nat_ports": 65535}}
        if sc.policy == "nat":
            cfg["security_groups"] = [{"name": "sg-a", "rules": [{"direction": "egress", "protocol": sc.proto}]}]
            cfg["networks"] = [net("net-nat", "nat", NAT_NET[0])]
            cfg["instances"] = [inst("a", "net-nat", A_MAC, NAT_NET[1], a, "sg-a")]
            cfg["uplink"] = {"port": {"type": "vhost-user", "socket": b},
                             "address": f"{UPLINK_ADDR}/24", "gateway": UPLINK_GW,
                             "nat_ports": f"{NAT_PORTS[0]}-{NAT_PORTS[1]}"}
        else:
            if sc.policy == "route":   # allow-all, still stateful
                allow = lambda: [{"direction": d, "protocol": "any"} for d in ("ingress", "egress")]
                groups = [{"name": "sg-a", "rules": allow()}, {"name": "sg-b", "rules": allow()}]
            else:
                groups = [{"name": "sg-a", "rules": [{"direction": "egress", "protocol": sc.proto}]},
                          {"name": "sg-b", "rules": [{"direction": "ingress", "protocol": sc.proto,
                                                      "ports": f"{PORT_MIN}-{PORT_MAX}", "remote_group": "sg-a"}]}]
            cfg["security_groups"] = groups
            cfg["networks"] = [net("net-a", "public", A_NET[0]), net("net-b", "public", B_NET[0])]
            cfg["instances"] = [inst("a", "net-a", A_MAC, A_NET[1], a, "sg-a"),
                                inst("b", "net-b", B_MAC, B_NET[1], b, "sg-b")]
        if sc.idle_ports:   # a network of their own, in A's group (their rules are compiled)
            cfg["networks"].append(net("net-idle", "public", IDLE_NET))
            cfg["instances"] += [inst(f"idle-{i}", "net-idle", f"52:54:00:00:0c:{i:02x}",
                                      IDLE_NET.replace(".0/24", f".{10 + i}"), self.idle_socket(i), "sg-a")
                                 for i in range(sc.idle_ports)]
        return cfg

    def idle_socket(self, i):
        return f"{self.work}/calyx-idle-{i}.sock"

    def state_file(self):
        # In memory, as in production (/run is tmpfs), and new for every run: on a disk's file
        # system the kernel writes back every page that new connections dirty (new-udp fell to
        # a fifth), and a file left by the previous run would be restored into this one.
        return f"/dev/hugepages/{self.prefix}.state"

    def remove_state(self):
        for f in glob.glob(f"{self.state_file()}*"):
            os.unlink(f)

    def stop(self):
        super().stop()
        self.remove_state()

    def start(self):
        a, b = f"{self.work}/calyx-a.sock", f"{self.work}/calyx-b.sock"
        self.metrics_port = free_port()
        path = f"{self.work}/calyx-{self.sc.name}.yaml"
        with open(path, "w") as f:
            yaml.safe_dump(self.config(a, b), f, sort_keys=False)
        PREFIXES.add(self.prefix)
        self.remove_state()
        p = self.spawn([f"{self.work}/calyx", "--config", path])
        wait_for("calyx sockets and /metrics", lambda: os.path.exists(a) and os.path.exists(b)
                 and self.scrape() is not None, 60, p, self.log)
        if self.sc.idle_ports:
            sockets = [self.idle_socket(i) for i in range(self.sc.idle_ports)]
            wait_for("calyx's idle sockets", lambda: all(map(os.path.exists, sockets)), 30, p, self.log)
            self.idle = IdlePeers(sockets, self.work).start()
            self.procs += self.idle.procs
            connected = lambda: sum(v for k, v in self.scrape().items()
                                    if k.startswith("calyx_port_up") and "idle-" in k)
            wait_for("calyx sees the idle VMs connected", lambda: connected() >= self.sc.idle_ports, 30, p, self.log)
        return a, b

    def scrape(self):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=2) as r:
            lines = r.read().decode().splitlines()
        return {k: float(v) for k, _, v in (l.rpartition(" ") for l in lines if l and l[0] != "#")}

    def sample(self):
        m = self.scrape()
        get = lambda name: m.get(f'{name}{{lcore="1"}}')
        s = {"packets": get("calyx_lcore_packets_total"), "busy": get("calyx_lcore_busy_cycles_total"),
             "io": get("calyx_lcore_io_cycles_total"), "total": get("calyx_lcore_cycles_total")}
        s["drops"] = {k: v for k, v in m.items() if k.startswith("calyx_port_drops_total") and v}
        return s


KERNEL_NS, KERNEL_GEN_NS = "calyx-cmp-router", "calyx-cmp-gen"
KERNEL_A, KERNEL_B = "cmp-a", "cmp-b"          # the router's ends; the generator's: <name>-gen
SG_MEMBERS = 10_000                            # members of A's group in the kernel's set


class Kernel(Target):
    """The Linux kernel routing between two veth pairs in a namespace of its own, set up as
    Calico's Felix sets up a compute host: each VM's host-side veth with MAC ee:ee:ee:ee:ee:ee,
    proxy ARP and strict reverse-path filtering, a /32 route and a permanent neighbour per VM,
    forwarding on, and the security groups as nftables chains (conntrack established/related
    accepted first, a new connection only through the sender's egress chain and the receiver's
    ingress chain, a remote group as a set of its members, as Felix's ipsets; MASQUERADE for
    the nat network). RPS puts the receive processing of the router's veths on CPU 1, the
    other targets' forwarding core. The generator runs in a namespace of its own on the veths'
    other ends (net_af_packet or net_af_xdp ports, --kernel-pmd): there is no vhost-net here.
    Cycles: the kernel's time on CPU 1 (/proc/stat system + irq + softirq: the router's
    work, user processes excluded) in TSC cycles, per packet the router transmitted."""
    name = "kernel"

    def __init__(self, sc, work, build):
        super().__init__(sc, work, build)
        self.pmd, self.queues, self.conntrack_max = "af_xdp", 1, None

    def configure(self, args):
        self.pmd, self.queues = args.kernel_pmd, args.kernel_queues

    def port_args(self, a, b):
        return ["--a-iface", a, "--b-iface", b, "--iface-pmd", self.pmd, "--queues", str(self.queues)]

    def generator_prefix(self):
        return ["ip", "netns", "exec", KERNEL_GEN_NS]

    def start(self):
        sc, nat = self.sc, self.sc.policy == "nat"
        self.stop_namespaces()
        ns = lambda *cmd: run(["ip", "netns", "exec", KERNEL_NS, *cmd])
        gen = lambda *cmd: run(["ip", "netns", "exec", KERNEL_GEN_NS, *cmd])
        for n in (KERNEL_NS, KERNEL_GEN_NS):
            run(["ip", "netns", "add", n])
            # No IPv6 (router solicitations, MLD): only the measured traffic crosses the veths.
            run(["ip", "netns", "exec", n, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1",
                 "net.ipv6.conf.default.disable_ipv6=1"])
        # The connection table is global: it must hold every connection of the run.
        self.conntrack_max = int(open("/proc/sys/net/netfilter/nf_conntrack_max").read())
        if self.conntrack_max < sc.capacity:
            open("/proc/sys/net/netfilter/nf_conntrack_max", "w").write(str(sc.capacity))
        b_mac = INET_MAC if nat else B_MAC
        for dev, peer_mac, router_mac in ((KERNEL_A, A_MAC, GW_MAC),
                                          (KERNEL_B, b_mac, OVS_UPLINK_MAC if nat else GW_MAC)):
            q = str(self.queues)
            run(["ip", "-n", KERNEL_NS, "link", "add", dev, "numtxqueues", q, "numrxqueues", q,
                 "address", router_mac, "type", "veth", "peer", "name", f"{dev}-gen", "netns",
                 KERNEL_GEN_NS, "numtxqueues", q, "numrxqueues", q, "address", peer_mac])
            # Every checksum complete: veth would hand af_packet partial ones.
            ns("ethtool", "-K", dev, "tx", "off")
            gen("ethtool", "-K", f"{dev}-gen", "tx", "off")
            rps = "; ".join(f"echo 2 > /sys/class/net/{dev}/queues/rx-{i}/rps_cpus" for i in range(self.queues))
            ns("sh", "-c", rps)
            if dev == KERNEL_A or not nat:   # a VM's veth: proxy ARP, strict RPF (Felix)
                ns("sysctl", "-qw", f"net.ipv4.conf.{dev}.proxy_arp=1", f"net.ipv4.conf.{dev}.rp_filter=1")
            ns("ip", "link", "set", dev, "up")
            gen("ip", "link", "set", f"{dev}-gen", "up")
        ns("sysctl", "-qw", "net.ipv4.ip_forward=1")
        a_ip = (NAT_NET if nat else A_NET)[1]
        vms = [(a_ip, A_MAC, KERNEL_A)] + ([] if nat else [(B_NET[1], B_MAC, KERNEL_B)])
        for ip, mac, dev in vms:
            ns("ip", "route", "add", f"{ip}/32", "dev", dev, "scope", "link")
            ns("ip", "neigh", "replace", ip, "lladdr", mac, "dev", dev, "nud", "permanent")
        if nat:   # the uplink: the host's address, a default route, the gateway's MAC known
            ns("ip", "addr", "add", f"{UPLINK_ADDR}/24", "dev", KERNEL_B)
            ns("ip", "route", "add", "default", "via", UPLINK_GW, "dev", KERNEL_B)
            ns("ip", "neigh", "replace", UPLINK_GW, "lladdr", INET_MAC, "dev", KERNEL_B, "nud", "permanent")
        path = f"{self.work}/kernel-{sc.name}.nft"
        open(path, "w").write(kernel_ruleset(sc))
        ns("nft", "-f", path)
        # The generator's ends: the "VM" consumes a frame once its socket has it (packet
        # sockets see it before ingress), so the generator namespace's own stack does no work.
        open(f"{self.work}/kernel-gen.nft", "w").write(
            "table netdev calyx_cmp_vm {\n" + "".join(
                f"  chain {d} {{ type filter hook ingress device \"{d}-gen\" priority 0; policy drop; }}\n"
                for d in (KERNEL_A, KERNEL_B)) + "}\n")
        gen("nft", "-f", f"{self.work}/kernel-gen.nft")
        if self.pmd == "af_xdp":
            os.makedirs("/sys/fs/bpf", exist_ok=True)
            if subprocess.run(["mountpoint", "-q", "/sys/fs/bpf"]).returncode != 0:
                run(["mount", "-t", "bpf", "bpf", "/sys/fs/bpf"])
        self.hz, self.softnet_start = tsc_hz(), self.softnet_dropped()
        return f"{KERNEL_A}-gen", f"{KERNEL_B}-gen"

    def stop_namespaces(self):
        for n in (KERNEL_GEN_NS, KERNEL_NS):   # deleting a namespace deletes its veths
            subprocess.run(["ip", "netns", "del", n], capture_output=True)

    def stop(self):
        super().stop()
        self.stop_namespaces()
        if self.conntrack_max is not None:
            with contextlib.suppress(OSError):
                open("/proc/sys/net/netfilter/nf_conntrack_max", "w").write(str(self.conntrack_max))
        # A deleted namespace's millions of conntrack entries are freed afterwards by kernel
        # workers, also on CPU 1: the next target's run would pay for them (calyx's new-udp
        # after the kernel's: 1.8 instead of 3.0 M new conn/s).
        wait_cpu_quiet(1)

    def link_stats(self):
        out = json.loads(run(["ip", "-n", KERNEL_NS, "-j", "-s", "link", "show"]))
        return {l["ifname"]: l["stats64"] for l in out if l["ifname"] in (KERNEL_A, KERNEL_B)}

    def sample(self):
        cpu1 = next(l.split() for l in open("/proc/stat") if l.startswith("cpu1 "))
        user, nice, system, idle, iowait, irq, softirq, steal = map(int, cpu1[1:9])
        per_tick = self.hz / os.sysconf("SC_CLK_TCK")
        stats = self.link_stats()
        return {"packets": sum(s["tx"]["packets"] for s in stats.values()),
                "busy": (system + irq + softirq) * per_tick,
                "total": (user + nice + system + idle + iowait + irq + softirq + steal) * per_tick,
                "user": (user + nice) * per_tick, "steal": steal * per_tick,
                "drops": {f"veth_dropped{{{d} {k}}}": s[k]["dropped"] for d, s in stats.items() for k in ("rx", "tx")}}

    @staticmethod
    def softnet_dropped():   # per CPU: frames dropped because its backlog was full
        return [int(l.split()[1], 16) for l in open("/proc/net/softnet_stat")]

    def extra(self):   # what the kernel tracked and dropped during the run
        return {"conntrack": run(["ip", "netns", "exec", KERNEL_NS, "sh", "-c",
                                  "cat /proc/sys/net/netfilter/nf_conntrack_count"]).strip(),
                "softnet_dropped": [n - n0 for n, n0 in zip(self.softnet_dropped(), self.softnet_start)]}


def tsc_hz():
    """The TSC's frequency (what the DPDK targets count cycles in): the kernel's calibration."""
    out = subprocess.run(["dmesg"], capture_output=True, text=True).stdout
    if m := re.search(r"tsc: Refined TSC clocksource calibration: ([\d.]+) MHz", out) or \
            re.search(r"tsc: Detected ([\d.]+) MHz", out):
        return float(m[1]) * 1e6
    return float(re.search(r"cpu MHz\s*:\s*([\d.]+)", open("/proc/cpuinfo").read())[1]) * 1e6


def kernel_ruleset(sc):
    """nftables doing what calyx's security groups do, in Felix's shape: the forward chain
    accepts established and related traffic first, drops invalid, and sends a new connection
    through the egress chain of the interface it came from and the ingress chain of the one it
    goes to (Felix: cali-fw-<iface>, cali-tw-<iface>); an allowed one returns, else drop."""
    nat = sc.policy == "nat"
    a_ip = (NAT_NET if nat else A_NET)[1]
    if sc.policy == "route":     # allow-all groups, still stateful
        chains = {"egress_a": ["return"], "ingress_a": ["return"],
                  "egress_b": ["return"], "ingress_b": ["return"]}
    elif sc.policy == "sg":      # A egress proto; B ingress proto to the ports from A's group
        chains = {"egress_a": [f"meta l4proto {sc.proto} return"], "ingress_a": [],
                  "egress_b": [], "ingress_b": [f"ip saddr @sg_a {sc.proto} dport {PORT_MIN}-{PORT_MAX} return"]}
    else:                        # nat: A egress udp; nothing unsolicited from the uplink
        chains = {"egress_a": [f"meta l4proto {sc.proto} return"], "ingress_a": []}
    # A's group with as many members as a large group has (A first): Felix's ipset.
    members = [a_ip] + [f"10.{64 + i // 65536}.{i // 256 % 256}.{i % 256}" for i in range(SG_MEMBERS - 1)]
    lines = ["table inet calyx_cmp {",
             f"  set sg_a {{ type ipv4_addr; elements = {{ {', '.join(members)} }} }}",
             "  chain forward {",
             "    type filter hook forward priority filter; policy drop;",
             "    ct state established,related accept",
             "    ct state invalid drop",
             f'    iifname "{KERNEL_A}" jump egress_a',
             f'    iifname "{KERNEL_B}" ' + ("drop" if nat else "jump egress_b"),
             f'    oifname "{KERNEL_A}" jump ingress_a']
    if not nat:
        lines.append(f'    oifname "{KERNEL_B}" jump ingress_b')
    lines += ["    accept", "  }"]
    for name, rules in chains.items():
        lines += [f"  chain {name} {{"] + [f"    {r}" for r in rules] + ["    drop", "  }"]
    lines.append("}")
    if nat:   # masquerade to the uplink's address (Felix: MASQUERADE for natOutgoing pools)
        lines += ["table ip calyx_cmp_nat {", "  chain postrouting {",
                  "    type nat hook postrouting priority srcnat;",
                  f'    oifname "{KERNEL_B}" ip saddr {NAT_NET[0]} meta l4proto {{ tcp, udp }} '
                  f'masquerade to :{NAT_PORTS[0]}-{NAT_PORTS[1]}',
                  f'    oifname "{KERNEL_B}" ip saddr {NAT_NET[0]} masquerade',
                  "  }", "}"]
    return "\n".join(lines) + "\n"


TARGETS = {"testpmd": Testpmd, "ovs": Ovs, "kernel": Kernel, "calyx": Calyx}


# ---------------------------------------------------------------- one measurement
class Sampler(threading.Thread):
    """Samples the target's forwarding-core counters every 0.5 s during the generator's run,
    so that cycles/packet comes from the traffic's steady phase, not setup and teardown."""
    def __init__(self, target):
        super().__init__(daemon=True)
        self.target, self.samples, self.done, self.error = target, [], threading.Event(), None

    def run(self):
        while True:
            try:
                s = self.target.sample()
                if s is None or s.get("packets") is None:
                    return
                self.samples.append((time.monotonic(), s))
            except Exception as e:   # a failed scrape costs the cycles figure, not the run
                self.error = str(e)
            if self.done.wait(0.5):
                return


def steady_cycles(samples, since):
    """Cycles per packet over the sampling intervals after `since` (the setup of established
    flows is over) that moved at least half the peak packet rate (not link-up or drain)."""
    iv = [(t1 - t0, {k: s1[k] - s0[k] for k in ("packets", "busy", "io", "total") if s1.get(k) is not None})
          for (t0, s0), (t1, s1) in zip(samples, samples[1:]) if t0 >= since]
    if not iv:
        return {}
    peak = max(d["packets"] / dt for dt, d in iv)
    keep = [(dt, d) for dt, d in iv if peak > 0 and d["packets"] / dt >= peak / 2]
    tot = {k: sum(d[k] for _, d in keep) for k in keep[0][1]} if keep else {}
    if not tot.get("packets"):
        return {}
    out = {"cycles_per_packet": tot["busy"] / tot["packets"],
           "busy_ratio": tot["busy"] / tot["total"] if tot.get("total") else None,
           "hz": tot["total"] / sum(dt for dt, _ in keep) if tot.get("total") else None}
    if "io" in tot:
        out["own_cycles_per_packet"] = (tot["busy"] - tot["io"]) / tot["packets"]
    return out


def generator_args(sc, t, a, b, args, prefix, prime=False):
    nat = sc.policy == "nat"
    gateway_mac = t.gateway_mac
    g = [*t.generator_prefix(), args.gen, *t.port_args(a, b), "--b-role", "internet" if nat else "vm",
         "--a-mac", A_MAC, "--a-ip", (NAT_NET if nat else A_NET)[1],
         "--b-mac", INET_MAC if nat else B_MAC, "--b-ip", INET_IP if nat else B_NET[1],
         "--gateway-mac", gateway_mac, "--proto", sc.proto, "--mode", sc.mode,
         "--flows", str(sc.flows), "--dst-port-min", str(PORT_MIN), "--dst-port-max", str(PORT_MAX),
         "--frame-size", str(sc.frame), "--duration", str(args.duration), "--warmup", str(args.warmup),
         "--cpu", "0", "--file-prefix", prefix, "--json"]
    if prime:   # one UDP exchange on a tuple of its own (port 7999), before the measured run
        g[g.index("--mode") + 1: g.index("--frame-size")] = [
            "established", "--flows", "1", "--dst-port-min", "7999", "--dst-port-max", "7999"]
        g[g.index("--proto") + 1] = "udp"
        g[g.index("--duration") + 1: g.index("--cpu")] = ["0.1", "--warmup", "0"]
    if args.checksum_every:
        g += ["--checksum-every", str(args.checksum_every)]
    # B must see the translation (a masquerading target) or A's own address and ports.
    translated = ["--translated-ip", UPLINK_ADDR, "--translated-ports", f"{NAT_PORTS[0]}-{NAT_PORTS[1]}"]
    return g + (["--remote-count", "64"] + (translated if t.routes else []) if nat else [])


def prime_uplink(sc, t, a, b, args, prefix, log):
    """A router learns the uplink gateway's MAC by ARP (calyx asks as soon as the uplink's
    link comes up) and drops until then. Unmeasured exchanges first (every target alike)
    until one passes, so that the measured run, a new-connection burst above all, does not
    measure ARP resolution instead."""
    for _ in range(10):
        p = start(generator_args(sc, t, a, b, args, prefix, prime=True), log)
        try:
            ok = p.wait(40) == 0
        except subprocess.TimeoutExpired:
            ok = False
        stop(p)
        remove_prefix(prefix)
        if ok:
            return True
    return False


def measure(sc, target_name, args, work):
    """One run: start the target, run the generator against it, stop the target."""
    t = TARGETS[target_name](sc, work, args.build)
    t.configure(args)
    result = {"scenario": sc.name, "target": target_name}
    began = time.monotonic()
    sampler = None
    try:
        a, b = t.start()
        prefix = f"cmp-gen-{os.getpid()}"
        PREFIXES.add(prefix)
        log = f"{work}/gen.log"
        if sc.policy == "nat" and not prime_uplink(sc, t, a, b, args, prefix, log):
            result["prime"] = f"failed: {tail(log, 2)}"
        sampler = Sampler(t)
        sampler.start()
        out = f"{work}/gen.json"
        for f in (log, out):
            open(f, "w").close()
        gen = start(generator_args(sc, t, a, b, args, prefix), log, out=out)
        # link up (10 s) + TCP/UDP setup (the generator gives up after 120 s) + the runs
        timeout = 30 + args.warmup + args.duration + (130 if sc.mode == "established" else 0)
        try:
            gen.wait(timeout)
        except subprocess.TimeoutExpired:
            raise Failed(f"generator did not finish within {timeout:.0f}s: {tail(log)}")
        finally:
            stop(gen)
            remove_prefix(prefix)
            sampler.done.set()
            sampler.join(5)
        # Warmup and measurement (same traffic) end with the generator; the setup before them.
        since = time.monotonic() - args.duration - args.warmup - 0.7 if sc.mode == "established" else 0
        with contextlib.suppress(Exception):   # the counters after the drain, for the drops
            if sampler.samples:
                sampler.samples.append((time.monotonic(), t.sample()))
        lines = [l for l in open(out, errors="replace") if l.startswith("{")]
        if gen.returncode != 0 or not lines:
            raise Failed(f"generator exit {gen.returncode}: {tail(log, 3)}")
        result["gen"] = json.loads(lines[-1])
        # A frame with a wrong checksum, address or port is no delivery: the target failed.
        bad = result["gen"].get("bad_frames")
        if bad is None:
            raise Failed("the generator reported no bad_frames count")
        if bad["checksum"] or bad["header"]:
            first = [l.strip() for l in open(log, errors="replace") if "bad frames" in l]
            raise Failed(f"{bad['checksum']} frames with bad checksums, {bad['header']} with wrong "
                         f"addresses or ports: {first[-1] if first else ''}")
        for p in t.procs:
            if p.poll() is not None:
                raise Failed(f"{target_name} exited during the run ({p.returncode}): {tail(t.log)}")
        result["cycles"] = steady_cycles(sampler.samples, since)
        if sampler.samples and "drops" in sampler.samples[-1][1]:
            d0, d1 = sampler.samples[0][1]["drops"], sampler.samples[-1][1]["drops"]
            result["drops"] = {k: v - d0.get(k, 0) for k, v in d1.items() if v - d0.get(k, 0)}
        if sampler.error:
            result["sample_error"] = sampler.error
        result.update(t.extra())
    except (Failed, OSError, subprocess.SubprocessError) as e:
        result["error"] = str(e) or type(e).__name__
    finally:
        if sampler:
            sampler.done.set()
        t.stop()
        result["elapsed"] = time.monotonic() - began   # what the run cost, start to stop
    return result


# ---------------------------------------------------------------- report
def metrics_of(sc, r):
    """The figures compared for one run, by row name."""
    m, g = {}, r.get("gen", {})
    meas, setup = g.get("measure", {}), g.get("setup")
    if sc.mode == "new":
        m["new conn/s (M)"] = meas.get("new_per_second", 0) / 1e6
        if meas.get("sent_a"):
            m["loss"] = 1 - meas.get("received_b", 0) / meas["sent_a"]
    else:
        m["Mpps delivered"] = meas.get("delivered_mpps")
        if sc.frame >= 1000:
            m["Gbps delivered"] = meas.get("gbps")
        m["loss"] = meas.get("loss")
        if sc.proto == "tcp" and setup:
            m["setup conn/s (M)"] = setup.get("per_second", 0) / 1e6
    c = r.get("cycles", {})
    m["cycles/pkt incl. I/O"] = c.get("cycles_per_packet")
    m["cycles/pkt excl. I/O"] = c.get("own_cycles_per_packet")
    return {k: v for k, v in m.items() if v is not None}


THROUGHPUT_ROWS = ("Mpps delivered", "Gbps delivered", "new conn/s (M)")


def generator_bound(sc, r):
    """True when the target kept up with everything the generator offered in this run, so its
    rate is the generator's, a lower bound of the target's. A vhost-user target that is the
    limit fills its rings and refuses part of the generator's bursts; the kernel refuses
    nothing (veth and AF_XDP drop instead), so there: no loss and the forwarding CPU not busy."""
    m = r.get("gen", {}).get("measure", {})
    if r["target"] == "kernel":
        loss = m.get("loss", 1 - m.get("received_b", 0) / m["sent_a"] if m.get("sent_a") else 0)
        return loss < 0.01 and r.get("cycles", {}).get("busy_ratio", 1) < 0.9
    return bool(m.get("bursts_a")) and m.get("bursts_a_refused", 0) < 0.05 * m["bursts_a"]


def fmt(row, v):
    if row == "loss":
        return f"{100 * v:.2f}%"
    return f"{v:.0f}" if "cycles" in row else f"{v:.3f}" if v < 10 else f"{v:.1f}"


@dataclass
class Cell:
    """One target's figure for a row: the median of the runs that count, how it bounds the
    truth ('' exact, '>=' a lower bound: the generator was the limit in every run), the
    spread of those runs, how many of the repetitions it rests on."""
    value: float
    bound: str = ""
    low: float = None
    high: float = None
    used: int = 1
    reps: int = 1

    def text(self, row):
        t = ("≥ " if self.bound else "") + fmt(row, self.value)
        if self.used > 1 and self.low is not None and self.high > self.low:
            t += f" ({fmt(row, self.low)}-{fmt(row, self.high)})"
        if self.used < self.reps:
            t += f" [{self.used}/{self.reps} runs]"
        return t


def cell_of(sc, row, runs):
    """Median of a row over a target's good runs. Throughput: runs where the generator was
    the limit are left out when others show the target's own limit; if every run was
    generator-bound, the figure is the highest of them, marked as a lower bound."""
    good = [(r, metrics_of(sc, r).get(row)) for r in runs if "error" not in r]
    good = [(r, v) for r, v in good if v is not None]
    if not good:
        return None
    if row in THROUGHPUT_ROWS:
        own = [v for r, v in good if not generator_bound(sc, r)]
        if not own:
            vs = [v for _, v in good]
            return Cell(max(vs), ">=", min(vs), max(vs), len(vs), len(runs))
        vs = own
    else:
        vs = [v for _, v in good]
    return Cell(statistics.median(vs), "", min(vs), max(vs), len(vs), len(runs))


def ratio(row, calyx, other):
    """calyx / other, with what a bound on either side makes of it."""
    if not calyx or not other or row == "loss" or not other.value:
        return ""
    q = calyx.value / other.value
    if calyx.bound and other.bound:
        return "?"
    return ("≥ " if calyx.bound else "≤ " if other.bound else "") + f"{q:.2f}"


def table(results, scenarios, targets):
    others = [t for t in ALL_TARGETS if t != "calyx"]
    lines = ["| scenario | metric | " + " | ".join(ALL_TARGETS) + " | " +
             " | ".join(f"calyx/{o}" for o in others) + " |",
             "|---|---|" + "---|" * (len(ALL_TARGETS) + len(others))]
    for sc in scenarios:
        runs = {t: [r for r in results if r["scenario"] == sc.name and r["target"] == t] for t in targets}
        rows = list(dict.fromkeys(row for t in targets for r in runs[t] if "error" not in r
                                  for row in metrics_of(sc, r)))
        for i, row in enumerate(rows or ["(no result)"]):
            cells = {t: cell_of(sc, row, runs[t]) for t in targets if runs[t]}
            texts = []
            for t in ALL_TARGETS:
                errors = [r["error"] for r in runs.get(t, []) if "error" in r]
                if t not in targets or not runs.get(t):
                    texts.append("-")
                elif cells.get(t):
                    texts.append(cells[t].text(row))
                elif errors and i == 0:
                    texts.append("failed: " + errors[0][:70].replace("|", "/"))
                else:
                    texts.append("")
            lines.append(f"| {sc.name} | {row} | " + " | ".join(texts) + " | " +
                         " | ".join(ratio(row, cells.get("calyx"), cells.get(o)) for o in others) + " |")
    return "\n".join(lines)


def idle_ports_summary(results, scenarios):
    """calyx with idle VMs against calyx without them, same flows, same run."""
    out = []
    for sc in scenarios:
        if not sc.idle_ports:
            continue
        base = next((b for b in SCENARIOS if b.name == sc.name.rsplit("-idle", 1)[0]), None)
        get = lambda name, row: cell_of(base if name == base.name else sc, row,
                                        [r for r in results if r["scenario"] == name and r["target"] == "calyx"])
        busy, quiet = get(sc.name, "Mpps delivered"), get(base.name, "Mpps delivered") if base else None
        if busy and quiet and quiet.value:
            own = [get(n, "cycles/pkt excl. I/O") for n in (base.name, sc.name)]
            out.append(f"{sc.name}: calyx delivers {busy.value / quiet.value:.0%} of {base.name}'s rate "
                       f"({fmt('Mpps delivered', busy.value)} vs {fmt('Mpps delivered', quiet.value)} Mpps) with "
                       f"{sc.idle_ports} idle VMs connected" + (
                           f"; own cycles/pkt {own[1].value:.0f} vs {own[0].value:.0f}" if all(own) else ""))
    return out


def machine(results):
    cpu = re.search(r"model name\s*:\s*(.*)", open("/proc/cpuinfo").read())
    ver = lambda argv, pat: (re.search(pat, subprocess.run(argv, capture_output=True, text=True).stdout or "") or [None, "?"])[1]
    hz = [r["cycles"]["hz"] for r in results if r.get("cycles", {}).get("hz")]   # TSC ticks per second
    return {"cpu": cpu[1] if cpu else "?", "cores": os.cpu_count(), "kernel": platform.release(),
            "dpdk": ver(["pkg-config", "--modversion", "libdpdk"], r"(\S+)"),
            "ovs": ver([OVS_BIN, "--version"], r"\) (\S+)"),
            "tsc_ghz": round(statistics.median(hz) / 1e9, 3) if hz else None,
            "date": datetime.datetime.now().isoformat(timespec="seconds")}


# ---------------------------------------------------------------- main
def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build", default="build", help="calyx build dir (default build)")
    ap.add_argument("--gen", help="generator binary (default BUILD/perf/calyx-trafficgen)")
    ap.add_argument("--reps", type=int, help="repetitions (default 3, --quick 1)")
    ap.add_argument("--duration", type=float, default=5, help="measurement seconds per run")
    ap.add_argument("--warmup", type=float, default=1)
    ap.add_argument("--scenario", nargs="+", choices=[s.name for s in SCENARIOS])
    ap.add_argument("--targets", default=",".join(ALL_TARGETS))
    ap.add_argument("--kernel-pmd", choices=("af_packet", "af_xdp"), default="af_xdp",
                    help="the generator's ports on the kernel target's veths")
    ap.add_argument("--kernel-queues", type=int, default=1,
                    help="queues per veth and generator port on the kernel target (RPS: all to CPU 1)")
    ap.add_argument("--quick", action="store_true",
                    help="1 rep of 2 s, flow counts of sg-1m and the new-connection runs / 10")
    ap.add_argument("--json-out", help="write every run's raw results here")
    ap.add_argument("--checksum-every", type=int,
                    help="the generator verifies checksums of every Nth frame (default: its own)")
    ap.add_argument("--max-loss", type=float,
                    help="exit 1 if any run lost more than this fraction (the test suite's smoke run)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("compare.py needs root (hugepages, vhost-user, OVS)")
    args.build = os.path.abspath(args.build)
    args.gen = os.path.abspath(args.gen or f"{args.build}/perf/calyx-trafficgen")
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    if bad := [t for t in targets if t not in TARGETS]:
        sys.exit(f"unknown targets {bad}; known: {','.join(TARGETS)}")
    scenarios = [s for s in SCENARIOS if not args.scenario or s.name in args.scenario]
    args.reps = args.reps or (1 if args.quick else 3)
    if args.quick:
        args.reps, args.duration, args.warmup = args.reps or 1, 2, 0.5
        for s in scenarios:
            s.flows = s.flows // 10 if s.flows > 100_000 else s.flows
    need = {"generator": args.gen, **({"calyx": f"{args.build}/calyx"} if "calyx" in targets else {})}
    if missing := [f"{k} ({v})" for k, v in need.items() if not os.access(v, os.X_OK)]:
        sys.exit("missing: " + ", ".join(missing) + f"; build: ninja -C {args.build} calyx perf/calyx-trafficgen")

    # Everything not a forwarding core stays on CPU 0, this script included.
    os.sched_setaffinity(0, {0})
    # SIGINT too: a shell that starts us in the background ignores it, and we want cleanup.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    interrupted = False
    setup_hugepages()
    work = tempfile.mkdtemp(prefix="calyx-cmp-")
    if "calyx" in targets:   # a snapshot: a rebuild during the run must not change or break it
        shutil.copy2(f"{args.build}/calyx", f"{work}/calyx")
    results = []
    load_before = os.getloadavg()
    try:
        for sc in scenarios:
            for rep in range(args.reps):
                for t in targets:
                    if sc.idle_ports and not TARGETS[t].idle_ports:
                        continue
                    r = measure(sc, t, args, work)
                    r["rep"] = rep
                    results.append(r)
                    m = metrics_of(sc, r)
                    print(f"{sc.name} rep {rep + 1}/{args.reps} {t}: " + (
                        f"FAILED: {r['error']}" if "error" in r else
                        ", ".join(f"{k} {fmt(k, v)}" for k, v in m.items())) + "".join(
                        f"; drops {k.split('{')[1][:-1]} {v:.0f}" for k, v in r.get("drops", {}).items()),
                        file=sys.stderr, flush=True)
    except KeyboardInterrupt:
        print("interrupted: stopping everything", file=sys.stderr)
        interrupted = True
    finally:
        stop_all()
        shutil.rmtree(work, ignore_errors=True)
    mach = machine(results)
    mach["load_before"], mach["load_after"] = load_before, os.getloadavg()
    print(f"\nMachine: {mach['cpu']}, {mach['cores']} cores, Linux {mach['kernel']}, DPDK {mach['dpdk']}, "
          f"OVS {mach['ovs']}, TSC {mach['tsc_ghz']} GHz, {mach['date']}; medians of {args.reps} "
          f"run(s) of {args.duration:g} s; forwarding core CPU 1, generator CPU 0; load average "
          f"{load_before[0]:.2f} before the first run (1 min; {load_before[1]:.2f} over 5), "
          f"kernel target: {args.kernel_pmd} generator ports\n")
    print(table(results, scenarios, targets))
    for line in idle_ports_summary(results, scenarios):
        print("\n" + line)
    print("\nMedians over the repetitions, (lowest-highest) of the runs when they differ. ≥: the target "
          "kept up with all the generator offered in every run (a vhost-user target refused none of its "
          "bursts; the kernel lost nothing and its CPU had time left), so the figure is the generator's "
          "limit, the highest run, a lower bound of the target's; runs like that are left out of a "
          "target's median when others show its own limit ([n/reps runs]). Ratios with a bound are "
          "bounds too. Mpps/Gbps: frames delivered to A and B per second; loss: "
          "1 - received/sent; setup conn/s: TCP handshakes (or first UDP exchanges) completed; "
          "cycles/pkt: TSC cycles of the forwarding core's busy iterations per received packet, "
          "incl. vhost I/O (OVS: pmd-stats-show), excl. I/O (calyx only), steady phase; kernel: its "
          "system, irq and softirq time on CPU 1 (/proc/stat) per packet it forwarded, at the offered "
          "load; lower is better.")
    for r in results:
        if "error" in r:
            print(f"failed: {r['scenario']} rep {r['rep'] + 1} {r['target']}: {r['error']}")
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump({"machine": mach, "args": vars(args), "results": results}, f, indent=1)
    lossy = [r for r in results if args.max_loss is not None and "error" not in r
             and r["gen"]["measure"].get("loss", 0) > args.max_loss]
    for r in lossy:
        print(f"too lossy: {r['scenario']} rep {r['rep'] + 1} {r['target']}: "
              f"{r['gen']['measure'].get('loss', 0):.2%} > {args.max_loss:.2%}")
    ok = results and not lossy and all("error" not in r for r in results)
    return 130 if interrupted else 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
