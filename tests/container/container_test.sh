#!/usr/bin/env bash
# The container image, built and run for real (meson suite `container`):
#   1. a Debian 12 base image without a registry: debootstrap --variant=minbase, then
#      `podman import` (kept as debian:12 and debian:12-slim for the next run);
#   2. docker/Dockerfile's `prebuilt` target on top of it, from the calyx and calyxctl this
#      build made (no compiler in the image build: the runtime stage's apt-get is the cost);
#   3. two integration suites against calyx running in that image (calyx_in_container.sh):
#      the fixture's VMs are virtio-user ports in the test process on the host, connected
#      through the vhost-user sockets calyx creates in a directory shared with the container;
#      - gateway_test (DHCP, ARP, routing between VMs, ICMP errors, anti-spoofing, reconnects,
#        client mode, multi-queue, SIGTERM) with `--network none`: the sockets are the only way
#        in or out;
#      - uplink_test (the seed's frames 2, 3, 7 through a tap uplink to a namespace playing the
#        Internet, masquerade, ARP poisoning, gateway failover) with the tap recipe
#        `--network host --cap-add NET_ADMIN --device /dev/net/tun`: it needs the image's
#        net_tap PMD, which instance ports (rte_vhost) do not.
#
# Usage: container_test.sh CALYX CALYXCTL GATEWAY_TEST UPLINK_TEST
# Needs root, podman, runc, debootstrap (scripts/setup.sh) and Debian's mirror (for debootstrap
# and the image's apt-get; $CALYX_DEBIAN_MIRROR overrides it).
#
# Hosts like the CI machine need two settings, written to a containers.conf of this run only
# (doc/operations.md, "Running in a container", has the causes):
#   - ulimits no higher than this process's hard limits: podman 4.3 asks for nofile 1048576
#     (and nproc above the 32768 it sets on itself), which needs CAP_SYS_RESOURCE to raise;
#   - runc: crun refuses a hybrid cgroup host whose cgroup2 hierarchy holds a controller.
set -euo pipefail
if (($# != 4)); then
  echo "usage: $0 CALYX CALYXCTL GATEWAY_TEST UPLINK_TEST" >&2
  exit 2
fi
calyx=$(realpath "$1") calyxctl=$(realpath "$2")
gateway_test=$(realpath "$3") uplink_test=$(realpath "$4")
here=$(dirname "$(realpath "$0")")
source_root=$(realpath "$here/../..")
mirror=${CALYX_DEBIAN_MIRROR:-http://deb.debian.org/debian}
image=localhost/calyx:container-test
binaries=localhost/calyx-binaries:container-test

work=$(mktemp -d /tmp/calyx-container-XXXXXX)
cleanup() {
  # A container left behind (its podman killed) would keep busy-polling a CPU.
  local left
  left=$(podman ps -aq --filter label=calyx-container-test 2>/dev/null || true)
  [[ -z $left ]] || podman rm -f $left >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

nproc_limit=$(ulimit -Hu)
[[ $nproc_limit == unlimited || $nproc_limit -gt 32768 ]] && nproc_limit=32768
nofile_limit=$(ulimit -Hn)
[[ $nofile_limit == unlimited ]] && nofile_limit=1048576
cat > "$work/containers.conf" <<EOF
[containers]
default_ulimits = ["nofile=$nofile_limit:$nofile_limit", "nproc=$nproc_limit:$nproc_limit"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
EOF
export CONTAINERS_CONF=$work/containers.conf

step() { printf '[container] %s\n' "$*"; }
seconds() { echo $((SECONDS - $1)); }

t=$SECONDS
if ! podman image exists docker.io/library/debian:12; then
  step "base image: debootstrap --variant=minbase bookworm from $mirror"
  debootstrap --variant=minbase bookworm "$work/rootfs" "$mirror" > "$work/debootstrap.log" 2>&1 \
    || { tail -20 "$work/debootstrap.log"; exit 1; }
  rm -rf "$work"/rootfs/var/cache/apt/archives/*.deb "$work"/rootfs/var/lib/apt/lists/*
  tar -C "$work/rootfs" -c . | podman import --change 'CMD ["/bin/bash"]' - docker.io/library/debian:12 >/dev/null
  rm -rf "$work/rootfs"
fi
podman tag docker.io/library/debian:12 docker.io/library/debian:12-slim
step "base image ready ($(seconds $t) s)"

t=$SECONDS
mkdir "$work/binaries"
cp "$calyx" "$work/binaries/calyx"
cp "$calyxctl" "$work/binaries/calyxctl"
tar -C "$work/binaries" -c calyx calyxctl | podman import - "$binaries" >/dev/null
# --network host: the image build's apt-get uses the host's network, no bridge is created.
podman build --network host --target prebuilt --build-arg BINARIES="$binaries" \
  -f "$source_root/docker/Dockerfile" -t "$image" "$source_root" > "$work/build.log" 2>&1 \
  || { tail -30 "$work/build.log"; exit 1; }
step "image $image built from docker/Dockerfile, target prebuilt ($(seconds $t) s)"

# The image's own check of its configuration: the libraries and PMDs it installed load.
podman run --rm --network none "$image" --config /etc/calyx/calyx.yaml --check
podman run --rm --network none --entrypoint /usr/local/bin/calyxctl "$image" --help >/dev/null

status=0
suite() {  # NAME BINARY CONTAINER_ARGS
  local t=$SECONDS rc=0
  step "$1 against calyx in the container ($3)"
  # No GoogleTest XML: scripts/test.sh matches each file to a binary meson ran (this one counts
  # as the single test `container`), and the integration suite's files of the same binaries
  # must not be overwritten.
  env -u GTEST_OUTPUT CALYX_BIN="$here/calyx_in_container.sh" CALYX_IMAGE="$image" \
    CALYX_CONTAINER_ARGS="$3" "$2" || rc=$?
  step "$1 done ($(seconds $t) s), exit status $rc"
  ((rc == 0)) || status=1
}
suite gateway_test "$gateway_test" "--network none"
suite uplink_test "$uplink_test" "--network host --cap-add NET_ADMIN --device /dev/net/tun"
exit "$status"
