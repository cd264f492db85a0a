# Shared by scripts/llama.sh and scripts/serena.sh (sourced, not run): logging, build stamps,
# and the choice of the cache directory. The sourcing script sets SCRIPT_NAME and PY, and
# defines complete_in DIR (is everything it caches already built in DIR?).

log() { echo "$SCRIPT_NAME: $*" >&2; }
die() { log "error: $*"; exit 1; }

elapsed() { # seconds -> "3m07s"
    printf '%dm%02ds' $(($1 / 60)) $(($1 % 60))
}

py_minor() { "$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])'; }

stamp_ok() { [ -f "$1" ] && [ "$(cat "$1")" = "$2" ]; }

writable_dir() { mkdir -p "$1" 2>/dev/null && [ -w "$1" ]; }

# The cache in use: an explicit ROUTERD_CACHE, else the first candidate that is already
# complete (so a root-built /var/cache serves other users read-only), else the first writable.
pick_cache() {
    if [ -n "${ROUTERD_CACHE:-}" ]; then
        echo "$ROUTERD_CACHE"
        return
    fi
    local candidates=(/var/cache/routerd-dev "${XDG_CACHE_HOME:-$HOME/.cache}/routerd-dev")
    local c
    for c in "${candidates[@]}"; do
        if complete_in "$c"; then echo "$c"; return; fi
    done
    for c in "${candidates[@]}"; do
        if writable_dir "$c"; then echo "$c"; return; fi
    done
    die "no writable cache directory (tried ${candidates[*]}; set ROUTERD_CACHE)"
}

# run_logged LOGFILE CMD...: run quietly; on failure show the log's tail and stop.
run_logged() {
    local logf=$1
    shift
    if ! "$@" >>"$logf" 2>&1; then
        tail -n 40 "$logf" >&2
        die "command failed: $* (full log: $logf)"
    fi
}
