#!/usr/bin/env bash
# Builds calyx and runs it on conf/demo.yaml: the seed's three instances (public,
# default-v4-nat, private), each waiting for its VM on a vhost-user socket under /run/calyx.
# Ctrl-C stops it; calyx removes its sockets on the way out.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh >/dev/null
build/calyx --config conf/demo.yaml --check
exec build/calyx --config conf/demo.yaml
