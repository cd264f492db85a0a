#!/usr/bin/env bash
# The real Serena MCP server (PyPI distribution serena-agent) with an offline Python language
# server, for integration tests, benchmarks and demos. Installed once into its own virtual
# environment, cached outside the repository: serena-agent pins mcp==2.2.0 and many other
# versions, so it can never share routerd's environment; routerd runs it as a child process.
#
#   scripts/serena.sh ensure    create the venv when missing or stale, verify it otherwise
#   scripts/serena.sh env       print ROUTERD_SERENA=..., ROUTERD_SERENA_JEDI=... (eval-able;
#                               tests and bench/serena.py read these)
#
# What is cached, under $ROUTERD_CACHE (default /var/cache/routerd-dev, or
# ~/.cache/routerd-dev when that is not writable):
#   serena-<ver>/venv    serena-agent and jedi-language-server (Serena's "python_jedi"
#                        language needs no download at run time, unlike its default pyright)
# The venv holds a .stamp with its key (versions + Python minor); a different key rebuilds.
# Needs python3 with venv and a package registry (first run only).
set -euo pipefail
cd "$(dirname "$0")/.."

SERENA_VERSION=2.1.0
JEDI_LS_VERSION=0.47.0
PY=${PYTHON:-python3}

SCRIPT_NAME=serena.sh
# shellcheck source=scripts/cache-lib.sh
. scripts/cache-lib.sh

venv_key() {
    echo "serena-agent=$SERENA_VERSION jedi-language-server=$JEDI_LS_VERSION python=$(py_minor)"
}

serena_dir() { echo "$1/serena-$SERENA_VERSION"; }

complete_in() { # is the venv already made in cache dir $1?
    local venv
    venv="$(serena_dir "$1")/venv"
    stamp_ok "$venv/.stamp" "$(venv_key)" && [ -x "$venv/bin/serena" ] &&
        [ -x "$venv/bin/jedi-language-server" ]
}



# The installed versions must be exactly the pinned ones, and both programs must start.
venv_works() {
    local venv=$1 got
    got=$("$venv/bin/python" - <<'EOF' 2>/dev/null
from importlib.metadata import version
print(version("serena-agent"), version("jedi-language-server"))
EOF
    ) || return 1
    [ "$got" = "$SERENA_VERSION $JEDI_LS_VERSION" ] || return 1
    # Serena writes into $SERENA_HOME even for --help: keep that inside the cache, and never
    # let it report usage (it would try the network).
    SERENA_HOME="$venv/.serena-home" SERENA_USAGE_REPORTING=false \
        "$venv/bin/serena" --help >/dev/null 2>&1 &&
        "$venv/bin/jedi-language-server" --version >/dev/null 2>&1
}

cmd_ensure() {
    local t0=$SECONDS
    CACHE=$(pick_cache)
    local d venv
    d=$(serena_dir "$CACHE")
    venv="$d/venv"
    writable_dir "$CACHE" || {
        # A complete cache we cannot write: verify it read-only and stop there.
        complete_in "$CACHE" && venv_works "$venv" || die "$venv is neither usable nor writable"
        log "using the read-only cache $CACHE (verified)"
        return
    }
    mkdir -p "$CACHE/logs"
    local logs="$CACHE/logs"
    exec 9>"$CACHE/.serena.lock"
    if ! flock -n 9; then
        log "another ensure holds $CACHE/.serena.lock; waiting for it"
        flock 9
        t0=$SECONDS
    fi
    if stamp_ok "$venv/.stamp" "$(venv_key)" && venv_works "$venv"; then
        log "serena-agent $SERENA_VERSION ok: $venv"
        exec 9>&-
        return
    fi
    log "installing serena-agent $SERENA_VERSION and jedi-language-server $JEDI_LS_VERSION" \
        "(a few minutes; log: $logs/serena.log)"
    rm -rf "$venv"
    mkdir -p "$d"
    : >"$logs/serena.log"
    run_logged "$logs/serena.log" "$PY" -m venv "$venv"
    run_logged "$logs/serena.log" "$venv/bin/pip" --disable-pip-version-check install -q \
        "serena-agent==$SERENA_VERSION" "jedi-language-server==$JEDI_LS_VERSION"
    venv_works "$venv" || die "serena or jedi-language-server does not run from $venv"
    venv_key >"$venv/.stamp"
    exec 9>&-
    log "serena venv made in $(elapsed $((SECONDS - t0))): $venv"
}

cmd_env() {
    local c venv
    c=$(pick_cache)
    venv="$(serena_dir "$c")/venv"
    printf 'ROUTERD_SERENA=%q\n' "$venv/bin/serena"
    printf 'ROUTERD_SERENA_JEDI=%q\n' "$venv/bin/jedi-language-server"
    complete_in "$c" || log "not installed yet in $c: run scripts/serena.sh ensure"
}

case ${1:-} in
    ensure) shift; [ $# -eq 0 ] || die "ensure takes no arguments"; cmd_ensure ;;
    env) shift; [ $# -eq 0 ] || die "env takes no arguments"; cmd_env ;;
    *) echo "usage: $0 ensure | env" >&2; exit 2 ;;
esac
