#!/usr/bin/env bash
# Set up everything, then run the whole check: ruff, mypy (strict on routerd/core and the
# client), and the pytest suite with warnings as errors. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
# Real llama.cpp-based servers with a real small model for the integration tests: built once
# (about 15 minutes on 2 cores) and cached outside the repository, then reused.
./scripts/llama.sh ensure
# The real Serena (serena-agent) with an offline language server, in its own cached venv.
./scripts/serena.sh ensure
echo "== ruff" >&2
.venv/bin/ruff check .
echo "== mypy" >&2
.venv/bin/mypy
echo "== mypy (win32: the whole daemon and the client library, routerctl included)" >&2
.venv/bin/mypy --platform win32 --strict routerd/__main__.py client/routerd_client
echo "== packages" >&2
./packaging/test-bundle.sh
if [ "$(id -u)" -eq 0 ]; then
    ./packaging/test-deb.sh
else
    echo "test.sh: skipping packaging/test-deb.sh (it installs a .deb: needs root)" >&2
fi
echo "== pytest" >&2
set +e
.venv/bin/python -m pytest "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
    echo "pytest collected no tests: that is a failure here" >&2
    exit 1
fi
exit "$rc"
