#!/usr/bin/env bash
# Set up everything, then run the whole check: ruff, mypy (strict on routerd/core and the
# client), and the pytest suite with warnings as errors. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
# Real llama.cpp-based servers with a real small model for the integration tests: built once
# (about 15 minutes on 2 cores) and cached outside the repository, then reused.
./scripts/llama.sh ensure
echo "== ruff" >&2
.venv/bin/ruff check .
echo "== mypy" >&2
.venv/bin/mypy
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
