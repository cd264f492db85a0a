#!/usr/bin/env bash
# Idempotent set-up for a fresh machine: Debian packages, a virtual environment in .venv,
# and both distributions installed in editable mode with pinned dependency versions.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "setup: routerd needs Python 3.11 or newer as '$PY' (set PYTHON=...)" >&2
    exit 1
fi

# systemd-python builds from source against libsystemd; systemd brings systemd-analyze and
# systemd-socket-activate for the service tests; python3.11 is what the .deb's venv runs on;
# neovim runs the Lua client's tests.
apt_pkgs=(libsystemd-dev pkg-config gcc systemd python3.11 neovim)
missing=()
if command -v dpkg >/dev/null 2>&1; then
    for p in "${apt_pkgs[@]}"; do
        dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
    done
fi
if [ ${#missing[@]} -gt 0 ]; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    echo "setup: installing Debian packages: ${missing[*]}" >&2
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
stamp=.venv/.routerd-setup
want=$(cat constraints.txt pyproject.toml client/pyproject.toml | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    .venv/bin/python -m pip install -q --disable-pip-version-check -c constraints.txt -e "./client[trio]" -e ".[dev]"
    echo "$want" > "$stamp"
fi
