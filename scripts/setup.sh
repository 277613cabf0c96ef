#!/usr/bin/env bash
# Installs what calyx needs to build and test (Debian 12 packages only) and builds it into
# ./build. Safe to run again: installs only what is missing, reconfigures only when needed.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(
  build-essential pkg-config meson ninja-build ccache
  dpdk dpdk-dev libdpdk-dev
  libyaml-cpp-dev libfmt-dev prometheus-cpp-dev libboost-program-options-dev nlohmann-json3-dev
  libcurl4-openssl-dev etcd-server etcd-client
  libgtest-dev libbenchmark-dev libmnl-dev
  libsystemd-dev systemd
  iproute2 iputils-ping python3 util-linux prometheus openvswitch-switch-dpdk
  qemu-system-x86 linux-image-amd64 busybox-static cpio python3-yaml
  clang-16 libclang-rt-16-dev
  nftables conntrack ethtool
  podman runc debootstrap
  bird2
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if [[ ! -f build/build.ninja ]]; then
  meson setup build --buildtype=debugoptimized >/dev/null
fi
ninja -C build
