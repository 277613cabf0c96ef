#!/usr/bin/env bash
# conf/calyx.service as systemd reads it: `systemd-analyze verify` (Debian's systemd package; no
# systemd needs to run as PID 1) on a copy whose /usr/bin/calyx and /usr/bin/calyxctl are the
# binaries just built, so that it also checks every Exec line names an executable. verify
# returns 0 even for an unknown key or a misspelt value (it only warns), so any output fails.
# The directives the upgrade path depends on are checked by name.
#   check_systemd_unit.sh UNIT CALYX CALYXCTL
set -euo pipefail
unit=${1:?usage: check_systemd_unit.sh UNIT CALYX CALYXCTL} calyx=${2:?} calyxctl=${3:?}
command -v systemd-analyze >/dev/null || { echo "systemd-analyze is missing (scripts/setup.sh installs systemd)"; exit 1; }
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
sed -e "s#/usr/bin/calyxctl\\b#$calyxctl#g" -e "s#/usr/bin/calyx\\b#$calyx#g" "$unit" >"$dir/calyx.service"
out=$(cd "$dir" && SYSTEMD_LOG_COLOR=0 systemd-analyze verify --man=no "$dir/calyx.service" 2>&1) || {
    echo "systemd-analyze verify failed:"; echo "$out"; exit 1; }
if [[ -n $out ]]; then echo "systemd-analyze verify warns:"; echo "$out"; exit 1; fi
status=0
for line in Type=notify NotifyAccess=all "ExecReload=/usr/bin/calyxctl reload" Restart=on-failure \
            RuntimeDirectoryPreserve=yes; do
    grep -qx "$line" "$unit" || { echo "$unit: no line '$line'"; status=1; }
done
[[ $status -eq 0 ]] && echo "$unit: systemd-analyze verify: no warning; Type=notify, NotifyAccess=all, reload, restart ok"
exit $status
