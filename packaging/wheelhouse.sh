#!/usr/bin/env bash
# Build the wheels of both distributions into dist/, and a wheelhouse of every runtime
# dependency into build/wheelhouse/ (versions from constraints.txt; systemd-python is built
# from source against libsystemd). The .deb and the offline bundle both install from it.
#
# Reuses build/wheelhouse when nothing it depends on changed. Prints the wheelhouse path.
# Needs the project's .venv (scripts/setup.sh) and, for this step only, a package index.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=.venv/bin/python
[ -x "$PY" ] || { echo "wheelhouse: run scripts/setup.sh first" >&2; exit 1; }
house=build/wheelhouse
stamp=$house/.stamp
# Everything that goes into the wheels: the sources of both distributions and the pins.
want=$( { cat constraints.txt pyproject.toml client/pyproject.toml
          find routerd client/routerd_client -type f ! -path '*/__pycache__/*' -print0 \
              | sort -z | xargs -0 sha256sum
        } | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && ls dist/routerd-*.whl >/dev/null 2>&1; then
    echo "$house"
    exit 0
fi

# The machine's pip configuration may name local mirrors that lack a project: pip says so per
# project, which is noise here.
pip() { "$PY" -m pip "$@" 2> >(grep -v 'is ignored: it is neither' >&2) >&2; }

rm -rf "$house" dist/routerd-*.whl dist/routerd_client-*.whl
mkdir -p "$house" dist
echo "wheelhouse: building the wheels of routerd and routerd-client" >&2
pip wheel -q --no-deps -w dist ./client .
# Leave no in-tree build leftovers (setuptools writes build/lib and *.egg-info).
rm -rf build/lib build/bdist.* client/build

echo "wheelhouse: collecting every runtime dependency" >&2
pip wheel -q -c constraints.txt --find-links dist -w "$house" \
    dist/routerd_client-*.whl dist/routerd-*.whl
# pip itself, so an install needs no pip (and no python3-venv) on the target machine.
pip download -q --no-deps -d "$house" "pip==$("$PY" -m pip --version | cut -d' ' -f2)"
echo "$want" > "$stamp"
echo "$house"
