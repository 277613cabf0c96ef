#!/usr/bin/env bash
# Runs the whole test suite: unit tests (no EAL devices), then integration tests that start
# the real calyx binary with virtio-user "VMs". Installs and builds what is missing first.
# Needs root (vhost-user sockets under the test's temp dir, EAL memory).
# Arguments go to `meson test` (e.g. `--suite unit`). The closing line and the exit status
# come from one decision (scripts/test_summary.py): green only when tests ran and none failed.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh

# Every GoogleTest binary also writes its results as XML here, so the closing line counts
# test cases, not binaries. Meson writes its log only when it runs tests: a log left by an
# earlier run must never be read as this one's.
results=build/test-results
log=build/meson-logs/testlog.json
rm -rf "$results" "$log" && mkdir -p "$results"
export GTEST_OUTPUT="xml:$PWD/$results/"

status=0
meson test -C build --print-errorlogs --num-processes 1 "$@" || status=$?
exec python3 scripts/test_summary.py --results "$results" --log "$log" --meson-status "$status"
