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
#   scripts/demo.sh --site     the same seven frames across a site of two compute hosts: the
#                              namespaces calyx-fabric (a bridge, a bird2 route reflector that is
#                              also the Internet's router, the web server), calyx-compute-1 (the
#                              nat instance) and calyx-compute-2 (the public and private ones),
#                              each host with calyx (conf/site/compute-N.yaml) and bird2 behind
#                              its host interface; where each refusal is counted, and what the
#                              site shows across the hosts. Files in /run/calyx/site-demo.
#                              About 2 minutes; --stay works here too. doc/site.md explains it.
#
# Ctrl-C at any point stops the VMs, calyx (and BIRD) and removes the namespaces and taps. Logs
# (calyx, the VMs' consoles) stay in /run/calyx/demo (/run/calyx/site-demo). CALYX_BUILD=DIR
# uses another, already built, build directory and skips the setup.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${CALYX_BUILD:-build}
driver=tests/e2e/calyx_e2e.py
site=()
if [[ ${1:-} == --site ]]; then
  shift
  driver=tests/e2e/site_e2e.py
  site=(--hosts conf/site)
fi
if [[ $build == build ]]; then
  echo "demo: scripts/setup.sh (installs what is missing, builds ./build)"
  scripts/setup.sh >/dev/null
fi
exec /usr/bin/python3 "$driver" --demo \
  --calyx "$build/calyx" --calyxctl "$build/calyxctl" --config conf/demo.yaml "${site[@]}" \
  --cache /var/cache/calyx-e2e "$@"
