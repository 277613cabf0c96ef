#!/usr/bin/env bash
# Builds the e2e guests' boot files from Debian packages only, into a cache directory:
#   - the kernel: Debian's linux-image-amd64 (/boot/vmlinuz-VERSION), used as it is;
#   - an initramfs: busybox-static (sh, ip, udhcpc, httpd, wget, ping, nc), the virtio-net
#     modules of that kernel, and tests/e2e/guest/ (init, console agent, DHCP script, CGI).
# Nothing is downloaded. The initramfs is rebuilt only when one of its inputs changed.
#
#   tests/e2e/build-guest.sh CACHE_DIR
# prints two lines: KERNEL=/boot/vmlinuz-... and INITRD=CACHE_DIR/initrd-<hash>.gz
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cache=${1:?usage: build-guest.sh CACHE_DIR}
mkdir -p "$cache"

die() { echo "build-guest: $*" >&2; exit 1; }

# The newest installed Debian kernel that has its modules.
kernel='' kver=''
for k in $(printf '%s\n' /boot/vmlinuz-* | sort -V -r); do
    v=${k#/boot/vmlinuz-}
    if [[ -d /lib/modules/$v/kernel/drivers/net ]]; then kernel=$k kver=$v; break; fi
done
[[ -n $kernel ]] || die "no kernel with modules in /boot (apt-get install linux-image-amd64)"
[[ -r $kernel ]] || die "$kernel is not readable"

busybox=/bin/busybox
dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q "install ok installed" ||
    die "busybox-static is not installed (apt-get install busybox-static)"
if ldd "$busybox" >/dev/null 2>&1; then die "$busybox is not static"; fi

# The virtio-net stack in load order (guest/init inserts them so): each needs the ones before.
modules=(virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci
         failover net_failover virtio_net)
declare -A module_path
for m in "${modules[@]}"; do
    p=$(find "/lib/modules/$kver/kernel" -name "$m.ko" -o -name "$m.ko.xz" -o -name "$m.ko.zst" | head -n1)
    if [[ -z $p ]]; then
        # Built into this kernel: nothing to load (init's insmod of the missing file only logs).
        grep -q "/$m.ko" "/lib/modules/$kver/modules.builtin" 2>/dev/null ||
            die "module $m not found for $kver"
        continue
    fi
    module_path[$m]=$p
done

key=$( {
    echo "$kver"
    sha256sum "$busybox" | cut -d' ' -f1
    for m in "${modules[@]}"; do echo "$m ${module_path[$m]:-builtin}"; done
    cat "$here"/guest/* "$0"
} | sha256sum | cut -c1-16)
initrd=$cache/initrd-$key.gz

if [[ ! -s $initrd ]]; then
    stage=$(mktemp -d "$cache/stage.XXXXXX")
    trap 'rm -rf "$stage"' EXIT
    mkdir -p "$stage"/{bin,dev,proc,sys,tmp,run,etc,lib/modules,www/cgi-bin}
    cp "$busybox" "$stage/bin/busybox"
    ln -s busybox "$stage/bin/sh"
    # The kernel opens /dev/console for init before anything is mounted.
    mknod -m 600 "$stage/dev/console" c 5 1
    for m in "${modules[@]}"; do
        p=${module_path[$m]:-}
        [[ -n $p ]] || continue
        case $p in
            *.xz) xz -dc "$p" >"$stage/lib/modules/$m.ko" ;;
            *.zst) zstd -qdc "$p" >"$stage/lib/modules/$m.ko" ;;
            *) cp "$p" "$stage/lib/modules/$m.ko" ;;
        esac
    done
    install -m 755 "$here/guest/init" "$stage/init"
    install -m 755 "$here/guest/agent" "$stage/bin/agent"
    mkdir -p "$stage/etc/udhcpc"
    install -m 755 "$here/guest/udhcpc.script" "$stage/etc/udhcpc/default.script"
    install -m 755 "$here/guest/who.cgi" "$stage/www/cgi-bin/who"
    echo "guest" >"$stage/www/index.html"
    (cd "$stage" && find . -print0 | cpio --null -o -H newc --quiet) | gzip -1 >"$initrd.tmp"
    mv "$initrd.tmp" "$initrd"
    # Older builds of other inputs are of no further use.
    find "$cache" -maxdepth 1 -name 'initrd-*.gz' ! -name "initrd-$key.gz" -delete
fi
echo "KERNEL=$kernel"
echo "INITRD=$initrd"
