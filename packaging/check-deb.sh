#!/usr/bin/env bash
# Builds photoseg's .deb with `cargo deb` and checks that each file lands where the desktop looks for
# it, that the files agree with each other (bus name, object paths, unit name, desktop id) and that
# they are valid (desktop-file-validate, systemd-analyze verify --user, a loadable eog plugin file).
#
#   packaging/check-deb.sh             release build, as users get it (slow: LTO)
#   PHOTOSEG_DEB_PROFILE=dev packaging/check-deb.sh
#                                      packs the binary `cargo test` already built (CI: seconds)
#
# Needs cargo-deb (`cargo install cargo-deb --locked`) and dpkg-deb; desktop-file-validate and
# systemd-analyze are used when present (CI installs them). Prints one line per check and
# "check-deb: N passed, 0 failed"; exits non-zero on the first failure.
set -euo pipefail
cd "$(dirname "$0")/.."

profile=${PHOTOSEG_DEB_PROFILE:-release}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
passed=0
ok() { echo "ok: $*"; passed=$((passed + 1)); }
fail() { echo "FAIL: $*"; echo "check-deb: $passed passed, 1 failed"; exit 1; }

command -v cargo-deb >/dev/null || fail "cargo-deb is not installed (cargo install cargo-deb --locked)"
start=$(date +%s)
if [ "$profile" = release ]; then
    cargo deb --locked --output "$work/out" >"$work/build.log" 2>&1 || { cat "$work/build.log"; fail "cargo deb"; }
else
    cargo build --locked --profile "$profile" --bin photoseg >"$work/build.log" 2>&1 || { cat "$work/build.log"; fail "cargo build --profile $profile"; }
    cargo deb --no-build --profile "$profile" --output "$work/out" >>"$work/build.log" 2>&1 || { cat "$work/build.log"; fail "cargo deb --no-build"; }
fi
deb=$(ls "$work"/out/*.deb)
ok "built $(basename "$deb") ($profile profile) in $(( $(date +%s) - start )) s"

dpkg-deb -c "$deb" | awk '{print $6 " " $1}' | sed 's#^\./#/#' >"$work/list"
# path, mode: where each desktop looks for it.
while read -r path mode why; do
    line=$(grep -E "^$path " "$work/list" || true)
    [ -n "$line" ] || fail "$path is not in the package ($why)"
    [ "${line#* }" = "$mode" ] || fail "$path has mode ${line#* }, expected $mode"
    ok "$path ($why)"
done <<'EOF'
/usr/bin/photoseg -rwxr-xr-x the command, ExecStart and Exec below
/usr/lib/systemd/user/photoseg.service -rw-r--r-- systemd's user unit directory
/usr/share/dbus-1/services/org.photoseg.Photoseg1.service -rw-r--r-- the session bus's activation directory
/usr/share/dbus-1/interfaces/org.photoseg.Photoseg1.xml -rw-r--r-- D-Bus interface descriptions
/usr/share/applications/photoseg.desktop -rw-r--r-- desktop entries, the search provider's DesktopId
/usr/share/gnome-shell/search-providers/photoseg-search-provider.ini -rw-r--r-- GNOME Shell's search providers
/usr/share/krunner/dbusplugins/photoseg-krunner.desktop -rw-r--r-- KRunner's D-Bus runners
/usr/lib/x86_64-linux-gnu/eog/plugins/photoseg.plugin -rw-r--r-- Debian eog's plugin directory
/usr/lib/x86_64-linux-gnu/eog/plugins/photoseg.py -rw-r--r-- Debian eog's plugin directory
/usr/share/nautilus-python/extensions/photoseg-nautilus.py -rw-r--r-- nautilus-python's extension directory
EOF

# Where the installed programs really look, when they are installed here.
if dpkg -s eog >/dev/null 2>&1; then
    eog_dir=$(dpkg -L eog | grep -E '/eog/plugins$' | head -1)
    [ "$eog_dir" = /usr/lib/x86_64-linux-gnu/eog/plugins ] || fail "this eog keeps its plugins in $eog_dir"
    ok "installed eog's plugins are in $eog_dir too"
fi
if [ -f /usr/share/pkgconfig/nautilus-python.pc ]; then
    ext_dir=$(sed -n 's/^pythondir=\${datadir}/\/usr\/share/p' /usr/share/pkgconfig/nautilus-python.pc)
    [ "$ext_dir" = /usr/share/nautilus-python/extensions ] || fail "nautilus-python loads extensions from $ext_dir"
    ok "installed nautilus-python loads extensions from $ext_dir"
fi

root="$work/root"
dpkg-deb -x "$deb" "$root"
"$root/usr/bin/photoseg" --version >/dev/null || fail "the packaged binary does not run"
ok "the packaged binary runs ($("$root/usr/bin/photoseg" --version))"

key() { sed -n "s/^$2=//p" "$root$1"; }
unit=/usr/lib/systemd/user/photoseg.service
act=/usr/share/dbus-1/services/org.photoseg.Photoseg1.service
ini=/usr/share/gnome-shell/search-providers/photoseg-search-provider.ini
kr=/usr/share/krunner/dbusplugins/photoseg-krunner.desktop
schema_name=$(sed -n 's/^ *Bus name: *//p' schema/org.photoseg.Photoseg1.xml)
[ "$schema_name" = org.photoseg.Photoseg1 ] || fail "cannot read the bus name from the schema"
[ "$(key $unit Type)" = dbus ] || fail "unit Type is not dbus"
[ "$(key $unit BusName)" = "$schema_name" ] || fail "unit BusName differs from the schema's bus name"
[ "$(key $unit ExecStart)" = "/usr/bin/photoseg daemon" ] || fail "unit ExecStart"
ok "unit: Type=dbus, BusName=$schema_name, ExecStart=/usr/bin/photoseg daemon"
[ "$(key $act Name)" = "$schema_name" ] || fail "activation file Name"
[ "$(key $act SystemdService)" = "$(basename $unit)" ] || fail "activation file SystemdService is not the unit"
[ "$(key $act Exec)" = "/usr/bin/photoseg daemon" ] || fail "activation file Exec"
ok "activation file: Name=$schema_name, SystemdService=$(basename $unit)"
[ -f "$root/usr/share/applications/$(key $ini DesktopId)" ] || fail "search provider DesktopId $(key $ini DesktopId) is not in the package"
[ "$(key $ini BusName)" = "$schema_name" ] || fail "search provider BusName"
[ "$(key $ini ObjectPath)" = /org/photoseg/SearchProvider ] || fail "search provider ObjectPath"
[ "$(key $ini Version)" = 2 ] || fail "search provider Version"
ok "search provider: DesktopId, BusName, ObjectPath=/org/photoseg/SearchProvider, Version=2"
[ "$(key $kr X-Plasma-API)" = DBus ] || fail "KRunner X-Plasma-API"
[ "$(key $kr X-Plasma-DBusRunner-Service)" = "$schema_name" ] || fail "KRunner service"
[ "$(key $kr X-Plasma-DBusRunner-Path)" = /org/photoseg/krunner ] || fail "KRunner path"
ok "KRunner: X-Plasma-API=DBus, service $schema_name, path /org/photoseg/krunner"
eog_plugin=/usr/lib/x86_64-linux-gnu/eog/plugins/photoseg.plugin
[ "$(key $eog_plugin Loader)" = python3 ] && [ "$(key $eog_plugin Module)" = photoseg ] || fail "eog .plugin Loader/Module"
ok "eog plugin: Loader=python3, Module=photoseg (photoseg.py beside it)"

if command -v desktop-file-validate >/dev/null; then
    out=$(desktop-file-validate "$root/usr/share/applications/photoseg.desktop" 2>&1) || fail "desktop-file-validate: $out"
    [ -z "$out" ] || fail "desktop-file-validate: $out"
    ok "desktop-file-validate photoseg.desktop"
else
    echo "note: desktop-file-validate not installed; photoseg.desktop not validated"
fi
if command -v systemd-analyze >/dev/null; then
    # Offline: a private runtime dir, and the unit pointed at the extracted binary (--root does not
    # work for user units). Any output is a finding (systemd warns and goes on with rc 0).
    mkdir -m 700 "$work/run"
    sed "s#/usr/bin/photoseg#$root/usr/bin/photoseg#" "$root$unit" >"$work/run/photoseg.service"
    out=$(cd "$work" && XDG_RUNTIME_DIR="$work/run" systemd-analyze verify --user "$work/run/photoseg.service" 2>&1) \
        || fail "systemd-analyze verify: $out"
    [ -z "$out" ] || fail "systemd-analyze verify: $out"
    ok "systemd-analyze verify --user photoseg.service"
else
    echo "note: systemd-analyze not installed; the unit not verified"
fi
if command -v dbus-daemon >/dev/null; then
    # The activation file parses: a bus whose only service dir is the package's lists the name.
    mkdir "$work/bus"
    cat >"$work/bus/session.conf" <<EOF
<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig><type>session</type><listen>unix:tmpdir=$work/bus</listen><auth>EXTERNAL</auth>
<servicedir>$root/usr/share/dbus-1/services</servicedir>
<policy context="default"><allow send_destination="*" eavesdrop="true"/><allow eavesdrop="true"/><allow own="*"/></policy></busconfig>
EOF
    names=$(dbus-run-session --config-file="$work/bus/session.conf" -- gdbus call --session -d org.freedesktop.DBus \
        -o /org/freedesktop/DBus -m org.freedesktop.DBus.ListActivatableNames 2>/dev/null || true)
    case "$names" in *"'$schema_name'"*) ok "the session bus reads the activation file: $schema_name is activatable" ;;
        *) fail "a session bus with the package's service dir does not list $schema_name: $names" ;; esac
fi

echo "check-deb: $passed passed, 0 failed"
