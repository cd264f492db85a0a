#!/usr/bin/env bash
# Build the .deb, install it with dpkg -i, start the installed daemon the way routerd.socket and
# routerd.service would (systemd's own systemd-socket-activate, as the routerd user), talk to it
# with the installed routerctl, then purge the package and check nothing is left.
#
# For CI and for machines without a running systemd (a container): needs root, Debian's
# systemd package (systemd-analyze, systemd-socket-activate) and no routerd package installed.
# Usage: packaging/test-deb.sh [PATH.deb]   (default: build one with packaging/build-deb.sh)
set -euo pipefail
cd "$(dirname "$0")/.."

fail() { echo "test-deb: FAIL: $*" >&2; exit 1; }
step() { echo "test-deb: $*" >&2; }

[ "$(id -u)" -eq 0 ] || fail "needs root (dpkg -i)"
for tool in dpkg systemd-analyze systemd-socket-activate setpriv; do
    command -v "$tool" >/dev/null || fail "$tool is missing (apt-get install systemd)"
done
if dpkg-query -W -f='${Status}' routerd 2>/dev/null | grep -q installed; then
    fail "a routerd package is already installed; remove it first"
fi

deb=${1:-$(./packaging/build-deb.sh)}
[ -f "$deb" ] || fail "no package at $deb"

daemon_pid=""
tmp=$(mktemp -d)
cleanup() {
    if [ -n "$daemon_pid" ] && kill -0 "$daemon_pid" 2>/dev/null; then
        kill -KILL "$daemon_pid" 2>/dev/null || true
    fi
    if dpkg-query -W routerd >/dev/null 2>&1; then
        dpkg --purge routerd >/dev/null 2>&1 || true
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT

# --- install ------------------------------------------------------------------------------
step "dpkg -i $(basename "$deb")"
dpkg -i "$deb" >"$tmp/dpkg.log" 2>&1 || { cat "$tmp/dpkg.log" >&2; fail "dpkg -i failed"; }

getent passwd routerd >/dev/null || fail "no routerd user"
getent group routerd >/dev/null || fail "no routerd group"
[ "$(getent passwd routerd | cut -d: -f7)" = /usr/sbin/nologin ] || fail "routerd can log in"
[ -L /etc/systemd/system/sockets.target.wants/routerd.socket ] || fail "routerd.socket not enabled"
[ "$(stat -c %G /etc/routerd/config.toml)" = routerd ] || fail "config.toml is not group routerd"
/usr/bin/routerctl --version >/dev/null || fail "routerctl does not run"
[ -f /usr/share/nvim/site/pack/routerd/opt/routerd/plugin/routerd.lua ] \
    && [ -d /usr/share/nvim/site/pack/routerd/opt/routerd/lua/routerd ] \
    || fail "the Neovim plugin is not installed"
[ "$(/usr/sbin/routerd --version)" = "routerd $(dpkg-query -W -f='${Version}' routerd | cut -d- -f1)" ] \
    || fail "routerd --version does not match the package"

step "systemd-analyze verify on the installed units (any output is a failure)"
out=$(systemd-analyze verify /usr/lib/systemd/system/routerd.socket \
      /usr/lib/systemd/system/routerd.service 2>&1) || true
[ -z "$out" ] || fail "verify (system units): $out"
mkdir -m 700 "$tmp/run" "$tmp/home"
out=$(cd /usr/lib/systemd/user && HOME="$tmp/home" XDG_RUNTIME_DIR="$tmp/run" \
      systemd-analyze --user verify ./routerd.socket ./routerd.service 2>&1) || true
[ -z "$out" ] || fail "verify (user units): $out"

# --- run it as its units would ------------------------------------------------------------
unit=/usr/lib/systemd/system/routerd.service
exec_start=$(sed -n 's/^ExecStart=//p' "$unit")
user=$(sed -n 's/^User=//p' "$unit")
group=$(sed -n 's/^Group=//p' "$unit")
listen=$(sed -n 's/^ListenStream=//p' /usr/lib/systemd/system/routerd.socket)
[ "$listen" = /run/routerd/routerd.sock ] || fail "unexpected ListenStream=$listen"
# What systemd does for RuntimeDirectory= and StateDirectory= before it starts the service.
install -d -m 755 -o "$user" -g "$group" /run/routerd
install -d -m 700 -o "$user" -g "$group" /var/lib/routerd

# The environment systemd gives the service: the user's identity from passwd, the
# directories, and the unit's Environment= lines (%t is /run for the system manager).
home=$(getent passwd "$user" | cut -d: -f6)
unit_env=()
while IFS= read -r assignment; do
    unit_env+=(-E "${assignment//%t//run}")
done < <(sed -n 's/^Environment=//p' "$unit")

step "systemd-socket-activate -l $listen ... $exec_start (as $user)"
# Root binds the socket (as systemd does), then setpriv drops to the unit's user and execs
# the daemon in place, so LISTEN_PID is the daemon's pid.
# shellcheck disable=SC2086  # ExecStart is a command line
env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin HOME="$home" \
    systemd-socket-activate --listen "$listen" \
    -E USER="$user" -E LOGNAME="$user" -E SHELL=/usr/sbin/nologin \
    -E STATE_DIRECTORY=/var/lib/routerd -E RUNTIME_DIRECTORY=/run/routerd "${unit_env[@]}" \
    setpriv --reuid="$user" --regid="$group" --init-groups --no-new-privs -- \
    $exec_start >"$tmp/daemon.log" 2>&1 &
daemon_pid=$!
for _ in $(seq 100); do [ -S "$listen" ] && break; sleep 0.1; done
[ -S "$listen" ] || { cat "$tmp/daemon.log" >&2; fail "no socket at $listen"; }
# What SocketGroup= and SocketMode= do.
chgrp routerd "$listen" && chmod 0660 "$listen"

step "the installed routerctl status (this first connection starts the daemon)"
ROUTERD_SOCKET="$listen" timeout 60 /usr/bin/routerctl --json status >"$tmp/status.json" \
    || { cat "$tmp/daemon.log" "$tmp/status.json" >&2; fail "routerctl status failed"; }
/opt/routerd/bin/python - "$tmp/status.json" "$daemon_pid" <<'EOF' || fail "status is wrong"
import json, sys
status = json.load(open(sys.argv[1]))
assert status["pid"] == int(sys.argv[2]), status["pid"]
assert status["socket"] == "/run/routerd/routerd.sock", status["socket"]
assert status["config_path"] == "/etc/routerd/config.toml", status["config_path"]
EOF
[ "$(stat -c %U /proc/"$daemon_pid" 2>/dev/null)" = "$user" ] \
    || { cat "$tmp/daemon.log" >&2; fail "the daemon is not running as $user"; }

step "a member of group routerd may connect; anyone else may not"
setpriv --reuid=nobody --regid=routerd --clear-groups /usr/bin/routerctl status >/dev/null \
    || fail "group routerd cannot use the socket"
set +e
setpriv --reuid=nobody --regid=nogroup --clear-groups /usr/bin/routerctl status >/dev/null 2>&1
rc=$?
set -e
[ "$rc" -eq 3 ] || fail "a user outside group routerd got exit $rc, not 3 (unreachable)"

step "ExecReload: routerctl reload succeeds, and fails on a rejected configuration"
/usr/bin/routerctl reload >/dev/null || fail "reload of the shipped configuration failed"
cp /etc/routerd/config.toml "$tmp/config.toml"
printf '[daemon]\nmax_conections = 3\n' >> /etc/routerd/config.toml
set +e
/usr/bin/routerctl reload >"$tmp/reload.out" 2>&1
rc=$?
set -e
cp "$tmp/config.toml" /etc/routerd/config.toml
[ "$rc" -ne 0 ] || fail "routerctl reload exited 0 on a rejected configuration"
grep -q 'max_conections' "$tmp/reload.out" || fail "reload's error does not name the bad key"

step "SIGTERM: a clean stop"
kill -0 "$daemon_pid" 2>/dev/null || { cat "$tmp/daemon.log" >&2; fail "the daemon died"; }
kill -TERM "$daemon_pid"
set +e
wait "$daemon_pid"
rc=$?
set -e
daemon_pid=""
[ "$rc" -eq 0 ] || { cat "$tmp/daemon.log" >&2; fail "the daemon exited $rc after SIGTERM"; }
grep -q 'using the listening socket passed by systemd' "$tmp/daemon.log" \
    || { cat "$tmp/daemon.log" >&2; fail "the daemon did not use the activated socket"; }
grep -q Traceback "$tmp/daemon.log" && { cat "$tmp/daemon.log" >&2; fail "a traceback in the log"; }
rm -f "$listen"  # routerd.socket's RemoveOnStop=

# --- purge --------------------------------------------------------------------------------
step "dpkg --purge routerd"
dpkg --purge routerd >"$tmp/dpkg.log" 2>&1 || { cat "$tmp/dpkg.log" >&2; fail "purge failed"; }
left=()
for path in /opt/routerd /etc/routerd /var/lib/routerd /run/routerd /usr/bin/routerctl \
        /usr/sbin/routerd /usr/lib/systemd/system/routerd.service \
        /usr/lib/systemd/system/routerd.socket /usr/lib/systemd/user/routerd.service \
        /etc/systemd/system/sockets.target.wants/routerd.socket \
        /etc/systemd/system/routerd.socket /etc/systemd/system/routerd.service \
        /usr/share/doc/routerd /usr/share/nvim/site/pack/routerd; do
    if [ -e "$path" ] || [ -L "$path" ]; then left+=("$path"); fi
done
if [ -n "$(find /var/lib/systemd/deb-systemd-helper-enabled /var/lib/systemd/deb-systemd-helper-masked \
        -name '*routerd*' 2>/dev/null)" ]; then
    left+=("deb-systemd-helper state")
fi
getent passwd routerd >/dev/null && left+=("user routerd")
getent group routerd >/dev/null && left+=("group routerd")
dpkg-query -W routerd >/dev/null 2>&1 && left+=("dpkg's record of routerd")
[ ${#left[@]} -eq 0 ] || fail "left after purge: ${left[*]}"
step "ok: installed, served, reloaded, stopped and purged cleanly"
echo "test-deb: 1 passed, 0 failed"
