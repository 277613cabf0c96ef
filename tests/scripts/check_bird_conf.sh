#!/usr/bin/env bash
# conf/bird/bird.conf with its example host and peer files, and route-reflector.conf with its
# example site and client files, as an operator installs them, must parse in Debian's bird2
# (`bird -p`: parse only, starts nothing). Missing bird fails the test.
set -euo pipefail
conf_dir=$1
command -v bird >/dev/null || { echo "bird not found: install bird2 (scripts/setup.sh)"; exit 1; }
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
cp "$conf_dir/bird.conf" "$dir/"
cp "$conf_dir/calyx-host.conf.example" "$dir/calyx-host.conf"
cp "$conf_dir/calyx-peers.conf.example" "$dir/calyx-peers.conf"
bird -p -c "$dir/bird.conf"
# Without the host file it must not parse: bird.conf takes its constants from there.
rm "$dir/calyx-host.conf"
if bird -p -c "$dir/bird.conf" 2>/dev/null; then echo "bird.conf parsed without calyx-host.conf"; exit 1; fi
echo "conf/bird/bird.conf parses"
# The route reflector / border router of the test fabrics, with its example site files.
cp "$conf_dir/route-reflector.conf" "$dir/"
cp "$conf_dir/route-reflector-site.conf.example" "$dir/route-reflector-site.conf"
cp "$conf_dir/route-reflector-clients.conf.example" "$dir/route-reflector-clients.conf"
bird -p -c "$dir/route-reflector.conf"
echo "conf/bird/route-reflector.conf parses"
