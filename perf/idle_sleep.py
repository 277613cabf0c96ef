#!/usr/bin/env python3
"""What idle sleep (dataplane.idle_sleep_us) saves and costs, against pure polling, in one run.

    perf/idle_sleep.py [--build DIR] [--sleep-us 0,100] [--reps N] [--pings N] [--quick]
                       [--json-out FILE]

For every setting of dataplane.idle_sleep_us (0, pure polling, is the baseline), the settings
taking turns within each repetition so that the machine's noise hits them alike:
  idle CPU    calyx with two instances and a tap uplink, no traffic: the CPU time it uses
              (/proc/PID/stat, all threads) over --idle-seconds, in % of one core.
  latency     a low-rate ping-pong: ping every 10 ms from a network namespace (the tap's far
              end) to the uplink address, which calyx's worker answers itself; p50 and p99 of
              the round-trip times. The kernel's part of the path is the same for every setting.
  throughput  compare.py's route-udp scenario (10k UDP flows between two virtio-user VMs,
              64-byte frames, allow-all security groups): Mpps delivered and loss.
Pinning as in compare.py: calyx's worker on CPU 1, everything else on CPU 0. Needs root,
iproute2, ping, and `ninja -C build calyx perf/calyx-trafficgen`. Prints a markdown table of
medians; every process, namespace and hugepage file it made is removed at the end.
"""
import argparse, json, os, re, shutil, signal, statistics, subprocess, sys, tempfile, time

import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import compare  # noqa: E402  (processes, cleanup, the route-udp measurement)

UPLINK_ADDR, UPLINK_GW = "198.51.100.10", "198.51.100.1"


def cpu_seconds(pid):
    """utime + stime of every thread of `pid`, in seconds."""
    fields = open(f"/proc/{pid}/stat").read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class SleepingCalyx(compare.Calyx):
    """compare.py's calyx with dataplane.idle_sleep_us set (class attribute `sleep_us`)."""
    sleep_us = 0

    def config(self, a, b):
        cfg = super().config(a, b)
        cfg["dataplane"]["idle_sleep_us"] = self.sleep_us
        return cfg


def target_for(sleep_us):
    name = f"calyx-sleep{sleep_us}"
    compare.TARGETS[name] = type(name, (SleepingCalyx,), {"name": name, "sleep_us": sleep_us})
    return name


def idle_and_latency(sleep_us, rep, args, work):
    """Idle CPU and ping round-trip times of one calyx with a tap uplink moved into a netns."""
    tag = f"{os.getpid() % 100000}"
    ns, tap = f"calyx-idle-{tag}", f"cxidle{tag}"
    prefix = f"idle-{tag}"
    cfg = {"dataplane": {"workers": [1], "idle_sleep_us": sleep_us,
                         "eal_args": ["--no-huge", "-m", "256", "--file-prefix", prefix],
                         "conntrack": {"capacity": 4096}},
           "control": {"socket": f"{work}/idle.ctl"},
           "metrics": {"listen": f"127.0.0.1:{compare.free_port()}"},
           "uplink": {"port": {"type": "tap", "name": tap}, "address": f"{UPLINK_ADDR}/24",
                      "gateway": UPLINK_GW},
           "security_groups": [],
           "networks": [{"name": "a", "kind": "public", "cidr": "10.1.0.0/24", "gateway": "10.1.0.1"},
                        {"name": "b", "kind": "public", "cidr": "10.2.0.0/24", "gateway": "10.2.0.1"}],
           "instances": [{"name": "a", "network": "a", "mac": compare.A_MAC, "ipv4": "10.1.0.5",
                          "port": {"type": "vhost-user", "socket": f"{work}/idle-a.sock"}},
                         {"name": "b", "network": "b", "mac": compare.B_MAC, "ipv4": "10.2.0.5",
                          "port": {"type": "vhost-user", "socket": f"{work}/idle-b.sock"}}]}
    path = f"{work}/idle-{sleep_us}.yaml"
    with open(path, "w") as f:
        yaml.safe_dump(cfg, f, sort_keys=False)
    log = f"{work}/idle-{sleep_us}-{rep}.log"  # a fresh one: its ready line is this run's
    compare.PREFIXES.add(prefix)
    p = compare.start([f"{work}/calyx", "--config", path], log)
    try:
        compare.wait_for("calyx ready", lambda: "calyx: ready" in open(log, errors="replace").read(), 30, p, log)
        compare.run(["ip", "netns", "add", ns])
        compare.run(["ip", "link", "set", tap, "netns", ns])
        for cmd in (["link", "set", "lo", "up"], ["addr", "add", f"{UPLINK_GW}/24", "dev", tap],
                    ["link", "set", tap, "up"]):
            compare.run(["ip", "-n", ns] + cmd)
        # calyx resolves its gateway and answers ARP: one ping proves the path.
        compare.wait_for("first ping", lambda: subprocess.run(
            ["ip", "netns", "exec", ns, "ping", "-c", "1", "-W", "1", UPLINK_ADDR],
            capture_output=True).returncode == 0, 20, p, log)
        time.sleep(1)
        t0, c0 = time.monotonic(), cpu_seconds(p.pid)
        time.sleep(args.idle_seconds)
        idle_cpu = 100 * (cpu_seconds(p.pid) - c0) / (time.monotonic() - t0)
        out = compare.run(["ip", "netns", "exec", ns, "ping", "-n", "-i", "0.01", "-c", str(args.pings),
                           "-W", "1", UPLINK_ADDR], timeout=args.pings * 0.05 + 30)
        rtts = sorted(float(x) * 1000 for x in re.findall(r"time=([\d.]+) ms", out))
        if len(rtts) < args.pings * 0.99:
            raise compare.Failed(f"only {len(rtts)} of {args.pings} pings answered")
        q = statistics.quantiles(rtts, n=100)
        return {"idle_cpu_percent": idle_cpu, "rtt_p50_us": q[49], "rtt_p99_us": q[98],
                "rtt_max_us": rtts[-1], "pings": len(rtts)}
    finally:
        compare.stop(p)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        compare.remove_prefix(prefix)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build", default="build")
    ap.add_argument("--gen", help="generator binary (default BUILD/perf/calyx-trafficgen)")
    ap.add_argument("--sleep-us", default="0,100", help="settings to compare; 0 is the baseline")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--pings", type=int, default=2000)
    ap.add_argument("--idle-seconds", type=float, default=10)
    ap.add_argument("--duration", type=float, default=5, help="throughput seconds per run")
    ap.add_argument("--warmup", type=float, default=1)
    ap.add_argument("--quick", action="store_true", help="1 rep, 500 pings, 3 s idle, 2 s throughput")
    ap.add_argument("--json-out")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("idle_sleep.py needs root (namespaces, taps, hugepages, vhost-user)")
    if args.quick:
        args.reps, args.pings, args.idle_seconds, args.duration, args.warmup = 1, 500, 3, 2, 0.5
    args.build = os.path.abspath(args.build)
    args.gen = os.path.abspath(args.gen or f"{args.build}/perf/calyx-trafficgen")
    settings = [int(s) for s in args.sleep_us.split(",")]
    for f in (f"{args.build}/calyx", args.gen):
        if not os.access(f, os.X_OK):
            sys.exit(f"missing {f}; build: ninja -C {args.build} calyx perf/calyx-trafficgen")
    os.sched_setaffinity(0, {0})
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    compare.setup_hugepages()
    work = tempfile.mkdtemp(prefix="calyx-idle-")
    shutil.copy2(f"{args.build}/calyx", f"{work}/calyx")
    scenario = next(s for s in compare.SCENARIOS if s.name == "route-udp")
    results = {s: [] for s in settings}
    try:
        for rep in range(args.reps):
            for s in settings:
                r = {"rep": rep}
                try:
                    r.update(idle_and_latency(s, rep, args, work))
                except (compare.Failed, OSError, subprocess.SubprocessError) as e:
                    r["error"] = str(e)
                t = compare.measure(scenario, target_for(s), args, work)
                if "error" in t:
                    r["throughput_error"] = t["error"]
                else:
                    r["mpps"] = t["gen"]["measure"]["delivered_mpps"]
                    r["loss"] = t["gen"]["measure"]["loss"]
                results[s].append(r)
                print(f"rep {rep + 1}/{args.reps} idle_sleep_us {s}: " + ", ".join(
                    f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in r.items() if k != "rep"),
                    file=sys.stderr, flush=True)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
    finally:
        compare.stop_all()
        shutil.rmtree(work, ignore_errors=True)

    def med(s, key):
        v = [r[key] for r in results[s] if key in r]
        return statistics.median(v) if v else None
    rows = [("idle CPU, % of a core", "idle_cpu_percent", "{:.1f}"), ("ping RTT p50, us", "rtt_p50_us", "{:.0f}"),
            ("ping RTT p99, us", "rtt_p99_us", "{:.0f}"), ("route-udp Mpps", "mpps", "{:.3f}"),
            ("route-udp loss", "loss", "{:.2%}")]
    print(f"\nidle_sleep_us against pure polling (0), medians of {args.reps} rep(s); {args.pings} pings "
          f"every 10 ms; idle over {args.idle_seconds:g} s; throughput {args.duration:g} s\n")
    print("| | " + " | ".join(f"idle_sleep_us {s}" for s in settings) + " |")
    print("|---|" + "---|" * len(settings))
    for label, key, form in rows:
        print(f"| {label} | " + " | ".join(
            form.format(m) if (m := med(s, key)) is not None else "failed" for s in settings) + " |")
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump({"args": vars(args), "results": results}, f, indent=1)
    return 0 if all("error" not in r and "throughput_error" not in r for v in results.values() for r in v) else 1


if __name__ == "__main__":
    sys.exit(main())
