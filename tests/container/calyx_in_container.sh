#!/usr/bin/env bash
# calyx inside the container image, as the integration tests start it: container_test.sh points
# CALYX_BIN here, so the fixture's `calyx --config DIR/calyx.yaml ...` runs this instead.
#
# The test's directory (config, vhost-user sockets, control socket) is shared at the same path,
# so the sockets calyx creates inside are the ones the test's virtio-user "VMs" connect to on
# the host. `--network none` unless CALYX_CONTAINER_ARGS says otherwise (the uplink tests give
# `--network host` and what a tap needs): frames reach calyx only through the sockets. exec: the test's
# signals (SIGHUP reload, SIGUSR1 counters, SIGTERM) reach podman, whose --sig-proxy (the
# default) passes them on to calyx, and calyx's exit status becomes podman's.
# Needs CALYX_IMAGE; podman's runtime and ulimits come from $CONTAINERS_CONF.
set -euo pipefail
: "${CALYX_IMAGE:?CALYX_IMAGE names the calyx image to run}"

config=""
args=("$@")
for ((i = 0; i + 1 < ${#args[@]}; i++)); do
  [[ ${args[i]} == --config ]] && config=${args[i + 1]}
done
[[ -n $config ]] || { echo "calyx_in_container: no --config FILE in: $*" >&2; exit 2; }
dir=$(dirname "$(realpath "$config")")

read -r -a run_args <<< "${CALYX_CONTAINER_ARGS:---network none}"
exec podman run --rm --label calyx-container-test "${run_args[@]}" \
  --volume "$dir:$dir" "$CALYX_IMAGE" "$@"
