#!/usr/bin/env python3
"""Compares two builds of calyx's Google benchmarks in one run: A (a baseline, e.g. main) and
B (a change), alternately, so both see the same machine state.

    perf/ab_bench.py --a ../main/build --b build --bench stage_bench \
        --filter 'BM_OneHotFlow|BM_Established/10000/0|BM_NewConnection' --rounds 5

Each round runs A then B (B then A on odd rounds) with --benchmark_min_time, pinned to one CPU
(--cpu); the table gives per benchmark the median items per second of each build over the
rounds, B/A, and cycles per item: the benchmark's own TSC count where it reports one
(cycles_per_packet), else derived from its CPU time and the clock the benchmark library
reports (marked ~). A benchmark only one build has is listed with "-" for the other. A run in
which any benchmark reports an error (the benchmarks verify what they measure) fails. Run it
under the shared lock on a quiet machine: `flock /tmp/calyx-heavy.lock perf/ab_bench.py ...`.
"""
import argparse
import json
import statistics
import subprocess
import sys


def run(binary, bench_filter, min_time, cpu):
    cmd = ["taskset", "-c", str(cpu), binary, f"--benchmark_filter={bench_filter}",
           f"--benchmark_min_time={min_time}", "--benchmark_format=json"]
    out = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
    mhz = out.get("context", {}).get("mhz_per_cpu")
    results = {}
    for b in out["benchmarks"]:
        if b.get("run_type", "iteration") != "iteration":
            continue
        if b.get("error_occurred"):
            sys.exit(f"{binary}: {b['name']}: {b.get('error_message', 'error')}")
        per_second = b.get("items_per_second", 0.0)
        cycles = b.get("cycles_per_packet")
        derived = cycles is None and mhz and per_second
        if derived:
            cycles = mhz * 1e6 / per_second
        results[b["name"]] = (per_second, cycles, bool(derived))
    return results


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--a", required=True, help="build directory of the baseline")
    p.add_argument("--b", required=True, help="build directory of the change")
    p.add_argument("--bench", required=True, help="benchmark binary under perf/, e.g. stage_bench")
    p.add_argument("--filter", default=".", help="--benchmark_filter regex")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--min-time", default="0.5")
    p.add_argument("--cpu", type=int, default=1)
    args = p.parse_args()

    samples = {"A": {}, "B": {}}
    for r in range(args.rounds):
        order = ["A", "B"] if r % 2 == 0 else ["B", "A"]
        for which in order:
            build = args.a if which == "A" else args.b
            for name, value in run(f"{build}/perf/{args.bench}", args.filter, args.min_time, args.cpu).items():
                samples[which].setdefault(name, []).append(value)

    print(f"{args.bench}: {args.rounds} rounds, medians; A = {args.a}, B = {args.b}")
    print(f"{'benchmark':<48} {'A items/s':>12} {'B items/s':>12} {'B/A':>6} {'A cyc':>8} {'B cyc':>8}")

    def median_of(which, name):
        runs = samples[which].get(name)
        if not runs:
            return None, f"{'-':>8}"
        rate = statistics.median(v[0] for v in runs)
        cycles = [v[1] for v in runs if v[1] is not None]
        mark = "~" if any(v[2] for v in runs) else " "
        return rate, (f"{mark}{statistics.median(cycles):7.1f}" if cycles else f"{'-':>8}")

    names = list(samples["A"]) + [n for n in samples["B"] if n not in samples["A"]]
    for name in names:
        a, a_cyc = median_of("A", name)
        b, b_cyc = median_of("B", name)
        ratio = f"{b / a:6.3f}" if a and b else f"{'-':>6}"
        a_txt = f"{a:12.4g}" if a is not None else f"{'-':>12}"
        b_txt = f"{b:12.4g}" if b is not None else f"{'-':>12}"
        print(f"{name:<48} {a_txt} {b_txt} {ratio} {a_cyc} {b_cyc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
