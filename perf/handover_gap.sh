#!/bin/sh
# The gap of a hand-over (`calyx --take-over`) and of a crash (kill -9, then a start) with a full
# connection table, while every VM streams (issue 17): runs the integration tests
# RestartAtScaleTest.*, which fill the state file of a killed calyx with N established
# connections, start calyx on it (restoring them), then hand over to a second calyx (or kill it
# and start another) and print, per VM, the packets lost and for how long, the time until the new
# one is ready, and calyx's own figure ("the data plane stood still for ... ms").
#
# Usage: perf/handover_gap.sh [BUILD_DIR [CONNECTIONS [BASELINE_CALYX]]]
#   BUILD_DIR       default build
#   CONNECTIONS     default 1000000
#   BASELINE_CALYX  another calyx binary (e.g. one built from an older commit) measured the same
#                   way first, for an A/B in one run; its run fails the test's check that the
#                   table was restored before the old process stopped if it predates that.
# Needs root (namespaces, a tap) and the shared lock that every DPDK run here takes.
set -u
build=${1:-build}
connections=${2:-1000000}
baseline=${3:-}
test_bin="$build/tests/integration/restart_test"
[ -x "$test_bin" ] || { echo "no $test_bin: build first (ninja -C $build)" >&2; exit 2; }
run() {
    echo "== $1"
    CALYX_HANDOVER_CONNECTIONS=$connections CALYX_BIN=$1 flock /tmp/calyx-heavy.lock \
        "$test_bin" --gtest_filter='RestartAtScaleTest.*' 2>&1 |
        grep -E '^(hand-over|crash).* with|^  (the data plane|calyx: ready|ready|[a-z]+-1:)|^\[  (PASSED|FAILED)'
}
[ -n "$baseline" ] && run "$baseline"
run "$build/calyx"
