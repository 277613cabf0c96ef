#!/usr/bin/env bash
# Runs the whole test suite: unit tests (no EAL devices), then integration tests that start
# the real calyx binary with virtio-user "VMs". Installs and builds what is missing first.
# Needs root (vhost-user sockets under the test's temp dir, EAL memory).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh

# Every GoogleTest binary also writes its results as XML here, so the closing line counts
# test cases, not binaries.
results=build/test-results
rm -rf "$results" && mkdir -p "$results"
export GTEST_OUTPUT="xml:$PWD/$results/"

status=0
meson test -C build --print-errorlogs --num-processes 1 "$@" || status=$?

# One closing line any CI can read: gtest cases from their XML, other tests from meson's log.
python3 - "$results" <<'PY'
import glob, json, sys
import xml.etree.ElementTree as ET
passed = failed = skipped = 0
gtest_binaries = set()
for path in glob.glob(sys.argv[1] + "/*.xml"):
    gtest_binaries.add(path.rsplit("/", 1)[1][:-4])
    for case in ET.parse(path).getroot().iter("testcase"):
        if case.find("failure") is not None or case.find("error") is not None:
            failed += 1
        elif case.get("result") == "skipped" or case.find("skipped") is not None:
            skipped += 1
        else:
            passed += 1
with open("build/meson-logs/testlog.json") as log:
    for line in log:
        entry = json.loads(line)
        binary = entry.get("cmd", [""])[0].rsplit("/", 1)[-1]
        result = entry["result"]
        if binary in gtest_binaries and result in ("OK", "EXPECTEDFAIL"):
            continue  # counted case by case above
        if result in ("OK", "EXPECTEDFAIL"):
            passed += 1
        elif result == "SKIP":
            skipped += 1
        else:
            failed += 1  # a crash or timeout of a gtest binary counts here too
print(f"tests: {passed} passed, {failed} failed, {skipped} skipped")
PY
exit $status
