#!/bin/sh
# Install routerd @VERSION@ from this offline bundle. No network, no package index, no pip or
# python3-venv needed on this machine: only Python @PYVER@.
#
#   ./install.sh [PREFIX]      default: /opt/routerd as root, else ~/.local/share/routerd
#
# PREFIX becomes a virtual environment holding routerd and routerctl (PREFIX/bin/). Every
# wheel is checked against its sha256 in requirements.txt before anything is installed.
# (packaging/bundle-install.sh in the routerd repository; build-bundle.sh fills in @...@.)
set -eu

here=$(cd "$(dirname "$0")" && pwd)
if [ "$(id -u)" -eq 0 ]; then default=/opt/routerd; else default="$HOME/.local/share/routerd"; fi
prefix=${1:-$default}
python=${PYTHON:-python@PYVER@}

if ! command -v "$python" >/dev/null 2>&1; then
    echo "install.sh: $python not found; this bundle's wheels need Python @PYVER@ (set PYTHON=...)" >&2
    exit 1
fi
if ! "$python" -c 'import sys; sys.exit(f"{sys.version_info[0]}.{sys.version_info[1]}" != "@PYVER@")'; then
    echo "install.sh: $python is not Python @PYVER@; this bundle's wheels need @PYVER@" >&2
    exit 1
fi

if [ ! -x "$prefix/bin/python" ]; then
    "$python" -m venv --without-pip "$prefix"
fi
# pip runs straight from its wheel; --isolated ignores any pip configuration on this machine.
"$prefix/bin/python" "$(ls "$here"/wheelhouse/pip-*.whl)/pip" install --isolated --no-index \
    --disable-pip-version-check --no-cache-dir --find-links "$here/wheelhouse" \
    --require-hashes --only-binary :all: -r "$here/requirements.txt"

"$prefix/bin/routerd" --version >/dev/null
echo "routerd @VERSION@ installed in $prefix"
if [ "$(id -u)" -ne 0 ] && [ -z "${1:-}" ]; then
    # The user units (systemd/user/) run ~/.local/bin/routerd, as after pipx.
    mkdir -p "$HOME/.local/bin"
    for cmd in routerd routerctl; do
        ln -sfn "$prefix/bin/$cmd" "$HOME/.local/bin/$cmd"
    done
    echo "  linked:    ~/.local/bin/routerd and ~/.local/bin/routerctl"
fi
echo "  run:       $prefix/bin/routerd          client: $prefix/bin/routerctl status"
echo "  systemd:   see systemd/ here and doc/operations.md (section \"Under systemd\")"
