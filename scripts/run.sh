#!/usr/bin/env bash
# Set up everything, then run the daemon in the foreground with the default configuration
# (or the file named by ROUTERD_CONFIG / --config). Arguments go to routerd.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
exec .venv/bin/routerd "$@"
