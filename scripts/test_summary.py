#!/usr/bin/env python3
"""The test run's closing line and its exit status, from one set of counts.

Inputs: meson's log of this run (JSON lines), the XML each GoogleTest binary wrote, and
meson's exit status. A gtest binary counts case by case; its meson result adds a failure only
when the XML does not already show one (a crash or a timeout after the last case). The run is
green only when at least one test passed, none failed, no gtest binary ran zero cases, and
meson itself succeeded; the closing line says why when it is not.
"""
import argparse
import glob
import json
import os
import re
import sys
import xml.etree.ElementTree as ET

OK_RESULTS = ("OK", "EXPECTEDFAIL")


def gtest_counts(path):
    passed = failed = skipped = 0
    for case in ET.parse(path).getroot().iter("testcase"):
        if case.find("failure") is not None or case.find("error") is not None:
            failed += 1
        elif case.get("result") == "skipped" or case.find("skipped") is not None:
            skipped += 1
        else:
            passed += 1
    return passed, failed, skipped


def summarize(results_dir, log_path, meson_status):
    passed = failed = skipped = 0
    problems = []
    entries = []
    if os.path.exists(log_path):
        with open(log_path) as log:
            entries = [json.loads(line) for line in log if line.strip()]
    if not entries:
        problems.append("no test ran" + (f" (meson exited {meson_status})" if meson_status else ""))
    binaries = {os.path.basename((e.get("command") or [""])[0]) for e in entries}
    # One binary may run in several meson tests (other arguments or environment): GoogleTest
    # then writes NAME.xml, NAME_1.xml, ... Its counts are the sum of its files.
    gtest = {}  # binary name -> [(passed, failed, skipped) of each file]
    for path in sorted(glob.glob(os.path.join(results_dir, "*.xml"))):
        name = os.path.basename(path)[:-4]
        again = re.fullmatch(r"(.+)_(\d+)", name)
        if name not in binaries and again and again.group(1) in binaries:
            name = again.group(1)
        try:
            counts = gtest_counts(path)
        except ET.ParseError as e:
            problems.append(f"{name}: unreadable results ({e})")
            counts = (0, 1, 0)
        gtest.setdefault(name, []).append(counts)
    seen_gtest = set()
    runs = {}  # binary name -> meson tests that ran it
    for entry in entries:
        binary = os.path.basename((entry.get("command") or [""])[0])
        if binary in gtest:
            runs.setdefault(binary, []).append(entry)
            continue
        result = entry["result"]
        if result in OK_RESULTS:
            passed += 1
        elif result == "SKIP":
            skipped += 1
        else:
            failed += 1
            problems.append(f"{entry['name']}: {result}")
    for binary, tests in runs.items():
        seen_gtest.add(binary)
        files = gtest[binary]
        p = sum(c[0] for c in files)
        f = sum(c[1] for c in files)
        s = sum(c[2] for c in files)
        passed, failed, skipped = passed + p, failed + f, skipped + s
        empty = sum(1 for c in files if c[0] + c[1] + c[2] == 0) + max(0, len(tests) - len(files))
        if empty:
            failed += empty
            names = ", ".join(t["name"] for t in tests)
            problems.append(f"{names}: ran no test case (GTEST_FILTER set?)")
        for t in tests:
            if t["result"] not in OK_RESULTS and f == 0:
                failed += 1  # the binary failed beyond its cases: a crash, a timeout
                problems.append(f"{t['name']}: {t['result']}")
    for name in sorted(set(gtest) - seen_gtest):
        problems.append(f"{name}: results from a binary meson did not run")
        failed += 1
    if meson_status != 0 and failed == 0:
        failed += 1
        if entries:
            problems.append(f"meson exited {meson_status}")
    if failed == 0 and passed == 0 and entries:
        problems.append("nothing passed")
    green = failed == 0 and passed > 0 and not problems
    line = f"tests: {passed} passed, {failed} failed, {skipped} skipped"
    if problems:
        line += " (" + "; ".join(problems) + ")"
    return green, line


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--results", required=True, help="folder of GoogleTest XML files")
    parser.add_argument("--log", required=True, help="meson's testlog.json of this run")
    parser.add_argument("--meson-status", type=int, required=True)
    args = parser.parse_args()
    green, line = summarize(args.results, args.log, args.meson_status)
    print(line)
    return 0 if green else 1


if __name__ == "__main__":
    sys.exit(main())
