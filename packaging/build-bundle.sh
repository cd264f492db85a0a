#!/usr/bin/env bash
# Build dist/routerd-offline-<version>-<platform>.tar.gz: everything an air-gapped machine needs
# to install routerd with no package index. Inside, routerd-offline-<version>/ holds
#   wheelhouse/        every wheel: routerd, routerd-client, each dependency, and pip itself
#   requirements.txt   each of them pinned with its sha256 (pip's --require-hashes mode)
#   install.sh         the one install command: ./install.sh [PREFIX]
#   systemd/           the units (system and user), config.example.toml, docs
# The wheels are built for this machine's Python minor version and architecture; the target
# needs the same (install.sh checks).
set -euo pipefail
cd "$(dirname "$0")/.."

version=$(.venv/bin/python -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')
pytag=$(.venv/bin/python -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
pyver=$(.venv/bin/python -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
platform="linux-$(uname -m)-$pytag"
house=$(./packaging/wheelhouse.sh)

name=routerd-offline-$version
work=build/bundle
top=$work/$name
rm -rf "$work"
mkdir -p "$top/wheelhouse" "$top/systemd/user" "$top/doc"
cp "$house"/*.whl "$top/wheelhouse/"

# requirements.txt: one pinned, hashed line per wheel (pip hash computes the sha256).
.venv/bin/python - "$top" <<'EOF'
import pathlib, re, subprocess, sys

top = pathlib.Path(sys.argv[1])
lines = ["# Every wheel in wheelhouse/, pinned by version and sha256 (pip --require-hashes)."]
for wheel in sorted((top / "wheelhouse").glob("*.whl")):
    project, version = wheel.name.split("-")[:2]
    project = re.sub(r"[-_.]+", "-", project).lower()
    out = subprocess.run(
        [sys.executable, "-m", "pip", "hash", "--algorithm", "sha256", str(wheel)],
        check=True, capture_output=True, text=True,
    ).stdout
    digest = re.search(r"--hash=sha256:([0-9a-f]{64})", out)
    if digest is None:
        sys.exit(f"pip hash gave no sha256 for {wheel.name}")
    lines.append(f"{project}=={version} --hash=sha256:{digest.group(1)}")
(top / "requirements.txt").write_text("\n".join(lines) + "\n")
EOF

sed "s/@PYVER@/$pyver/g; s/@VERSION@/$version/g" packaging/bundle-install.sh > "$top/install.sh"
chmod 755 "$top/install.sh"
cp systemd/routerd.service systemd/routerd.socket "$top/systemd/"
cp systemd/user/routerd.service systemd/user/routerd.socket "$top/systemd/user/"
cp packaging/config.example.toml "$top/"
cp docs/*.md "$top/doc/"

mkdir -p dist
out="$(pwd)/dist/$name-$platform.tar.gz"
tar -C "$work" --owner=0 --group=0 --numeric-owner -czf "$out" "$name"
echo "$out"
