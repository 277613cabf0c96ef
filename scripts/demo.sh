#!/usr/bin/env bash
# The demo: the seed's seven frames with real VMs. Installs what is missing (Debian packages
# only) and builds ./build, then runs calyx on conf/demo.yaml, puts the far end of its tap
# uplink (calyx-up) in a network namespace that plays the Internet (calyx-internet: router
# 198.51.100.1, a web server on 192.0.2.80), boots a QEMU VM for each of the three instances
# (sockets in /run/calyx) and walks through the frames by configuration reload, printing for
# each one the connections the seed's diagram shows: expected, observed, and why refused.
#
#   scripts/demo.sh            the walkthrough, about 3 minutes; then everything is removed
#   scripts/demo.sh --stay     ... and keep it all running to explore with calyxctl (Ctrl-C ends)
#
# Ctrl-C at any point stops the VMs and calyx and removes the namespace and tap. Logs (calyx,
# the VMs' consoles) stay in /run/calyx/demo. CALYX_BUILD=DIR uses another, already built,
# build directory and skips the setup.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${CALYX_BUILD:-build}
if [[ $build == build ]]; then
  echo "demo: scripts/setup.sh (installs what is missing, builds ./build)"
  scripts/setup.sh >/dev/null
fi
exec /usr/bin/python3 tests/e2e/calyx_e2e.py --demo \
  --calyx "$build/calyx" --calyxctl "$build/calyxctl" --config conf/demo.yaml \
  --cache /var/cache/calyx-e2e "$@"
