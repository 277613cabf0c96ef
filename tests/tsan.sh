#!/usr/bin/env bash
# The connection-table concurrency test under ThreadSanitizer (the `tsan` suite):
#   tests/tsan.sh SOURCE_DIR TSAN_BUILD_DIR
# configures TSAN_BUILD_DIR once with -Db_sanitize=thread, builds only the test binary (and the
# core library it links, instrumented) and runs it; any data race ThreadSanitizer sees fails it.
set -euo pipefail
src=$1
dir=$2
if [[ ! -f $dir/build.ninja ]]; then
  meson setup "$dir" "$src" --buildtype=debugoptimized -Db_sanitize=thread >/dev/null
fi
ninja -C "$dir" -j2 tests/conntrack_tsan_test
# DPDK's own libraries are not instrumented: what they order with their own atomics is
# invisible to TSan; tests/tsan.supp names the one such case the test meets.
export TSAN_OPTIONS="halt_on_error=1 exitcode=66 suppressions=$src/tests/tsan.supp ${TSAN_OPTIONS:-}"
# One meson test, one result: no gtest XML of its own for scripts/test_summary.py to count.
unset GTEST_OUTPUT
exec "$dir/tests/conntrack_tsan_test" --gtest_brief=1
