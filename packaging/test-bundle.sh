#!/usr/bin/env bash
# Build the offline bundle, then install it the way an air-gapped site would: in a network
# namespace with no interfaces but loopback (unshare --net), with pip told --no-index and
# ignoring this machine's pip configuration. Then run the installed daemon and routerctl, and
# check that a tampered wheel is refused.
#
# Usage: packaging/test-bundle.sh [BUNDLE.tar.gz]   (default: build one with build-bundle.sh)
set -euo pipefail
cd "$(dirname "$0")/.."

fail() { echo "test-bundle: FAIL: $*" >&2; exit 1; }
step() { echo "test-bundle: $*" >&2; }

bundle=${1:-$(./packaging/build-bundle.sh)}
[ -f "$bundle" ] || fail "no bundle at $bundle"

tmp=$(mktemp -d /tmp/rdb-XXXXXX)
daemon_pid=""
cleanup() {
    if [ -n "$daemon_pid" ] && kill -0 "$daemon_pid" 2>/dev/null; then kill -KILL "$daemon_pid"; fi
    rm -rf "$tmp"
}
trap cleanup EXIT

# No network at all when we may make a namespace (root, as in CI); --no-index regardless.
offline=()
if unshare --net true 2>/dev/null; then
    offline=(unshare --net)
    step "installing inside a network namespace with no network"
else
    step "cannot unshare the network here; relying on pip --no-index --isolated alone"
fi
# A pip configuration pointing at an index must not matter either.
export PIP_INDEX_URL=http://127.0.0.1:9/simple PIP_FIND_LINKS=/nonexistent
python=$(command -v "python$(tar -xzf "$bundle" -O --wildcards '*/install.sh' \
    | sed -n 's/^python=\${PYTHON:-python\(.*\)}$/\1/p')") || fail "no matching python"

tar -C "$tmp" -xzf "$bundle"
top=$(echo "$tmp"/routerd-offline-*)
step "./install.sh $tmp/prefix"
"${offline[@]}" env PYTHON="$python" "$top/install.sh" "$tmp/prefix" >"$tmp/install.log" 2>&1 \
    || { cat "$tmp/install.log" >&2; fail "install.sh failed"; }
"$tmp/prefix/bin/routerctl" --version >/dev/null || fail "routerctl does not run"

step "the installed daemon serves the installed routerctl"
sock=$tmp/d.sock
env -i PATH=/usr/bin:/bin HOME="$tmp" XDG_CONFIG_HOME="$tmp/xdg" \
    "$tmp/prefix/bin/routerd" --socket "$sock" >"$tmp/daemon.log" 2>&1 &
daemon_pid=$!
for _ in $(seq 200); do [ -S "$sock" ] && break; sleep 0.05; done
ROUTERD_SOCKET=$sock timeout 30 "$tmp/prefix/bin/routerctl" status >/dev/null \
    || { cat "$tmp/daemon.log" >&2; fail "routerctl status failed"; }
kill -TERM "$daemon_pid"
wait "$daemon_pid" || fail "the daemon did not stop cleanly"
daemon_pid=""

step "a wheel that does not match its hash is refused"
cp -r "$top" "$tmp/tampered"
wheel=$(ls "$tmp"/tampered/wheelhouse/routerd-[0-9]*.whl)
printf 'x' >> "$wheel"
set +e
"${offline[@]}" env PYTHON="$python" "$tmp/tampered/install.sh" "$tmp/prefix2" \
    >"$tmp/tampered.log" 2>&1
rc=$?
set -e
[ "$rc" -ne 0 ] || fail "install.sh accepted a tampered wheel"
grep -q "HASHES" "$tmp/tampered.log" || { cat "$tmp/tampered.log" >&2; fail "no hash error"; }
[ ! -e "$tmp/prefix2/bin/routerd" ] || fail "a tampered bundle installed routerd"

step "ok: installed offline, served, and refused a tampered wheel"
echo "test-bundle: 1 passed, 0 failed"
