#!/usr/bin/env bash
# Runs the whole test suite: unit tests (no EAL devices), then integration tests that start
# the real calyx binary with virtio-user "VMs". Installs and builds what is missing first.
# Needs root (vhost-user sockets under the test's temp dir, EAL memory).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh

status=0
meson test -C build --print-errorlogs --num-processes 1 "$@" || status=$?

# One closing line any CI can read, from meson's own log.
python3 - <<'PY'
import json
passed = failed = skipped = 0
with open("build/meson-logs/testlog.json") as log:
    for line in log:
        result = json.loads(line)["result"]
        if result in ("OK", "EXPECTEDFAIL"):
            passed += 1
        elif result == "SKIP":
            skipped += 1
        else:
            failed += 1
print(f"tests: {passed} passed, {failed} failed, {skipped} skipped")
PY
exit $status
