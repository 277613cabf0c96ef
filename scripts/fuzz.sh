#!/usr/bin/env bash
# Fuzzing (doc/fuzzing.md): builds the libFuzzer targets with clang into build-fuzz/ (only the
# core library and the targets, instrumented with -fsanitize=fuzzer,address,undefined) and runs
# each for SECONDS on a fresh copy of its seed corpus (tests/fuzz/corpus/TARGET). A crash, an
# ASan or UBSan report, a leak, a timeout or a broken invariant fails the run; the input that
# did it is written to build-fuzz/artifacts/ (turn it into a regression test, then fix).
#
#   scripts/fuzz.sh [--seconds N] [TARGET...]     TARGET: instance uplink dhcp config (all)
#
# CI runs it with --seconds 60 (the 'fuzz' meson suite). A longer run: --seconds 3600, or
# libFuzzer by hand on build-fuzz/tests/fuzz/calyx_fuzz_TARGET (see doc/fuzzing.md).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=60
targets=()
while (($#)); do
  case "$1" in
    --seconds) seconds="$2"; shift 2 ;;
    *) targets+=("$1"); shift ;;
  esac
done
((${#targets[@]})) || targets=(instance uplink dhcp config)

# Debian 12's clang 14 cannot compile calyx (libstdc++ 12's std::expected needs P0848, which
# clang implements from version 16).
clang=clang++-16
command -v "$clang" >/dev/null || { echo "fuzz: $clang is missing (scripts/setup.sh installs clang-16)" >&2; exit 1; }
if [[ ! -f build-fuzz/build.ninja ]]; then
  CXX="$clang" CC=clang-16 meson setup build-fuzz -Dfuzzing=true --buildtype=debugoptimized >/dev/null
fi
start=$(date +%s)
if ! ninja -C build-fuzz -j2 $(printf 'tests/fuzz/calyx_fuzz_%s ' "${targets[@]}") >build-fuzz/build.log 2>&1; then
  echo "fuzz: the build failed (build-fuzz/build.log):" >&2
  grep -E 'error|FAILED' build-fuzz/build.log | head -20 >&2
  exit 1
fi
echo "fuzz: built in $(($(date +%s) - start)) s"

mkdir -p build-fuzz/artifacts
status=0
for t in "${targets[@]}"; do
  work="build-fuzz/corpus/$t"
  rm -rf "$work" && mkdir -p "$work"
  log="build-fuzz/$t.log"
  # New inputs go to $work; the kept seeds are read only. -timeout: a single input running
  # longer than 10 s is a hang. Leak detection stays on.
  if build-fuzz/tests/fuzz/calyx_fuzz_"$t" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=4096 \
      -print_final_stats=1 -artifact_prefix="build-fuzz/artifacts/$t-" "$work" "tests/fuzz/corpus/$t" >"$log" 2>&1; then
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1)
    echo "fuzz: $t: $runs executions in ${seconds} s, $cov, no crash"
  else
    status=1
    echo "fuzz: $t: FAILED (build-fuzz/$t.log; the input is in build-fuzz/artifacts/):"
    grep -E 'ERROR|invariant broken|SUMMARY|runtime error|Test unit written' "$log" | head -20
  fi
done
exit $status
