#!/usr/bin/env bash
# A first run that shows something real: a real small model server (SmolLM2 on llama.cpp's
# llama-server) and routerd beside it, with a configuration pointing at it.
#
#   scripts/demo.sh            set up (once), start both, show `routerctl services`, then keep
#                              running until Ctrl-C (which stops both)
#
# Environment: ROUTERD_DEMO_PORT (the model server's port; default 8080, or a free one if
# 8080 is taken), ROUTERD_DEMO_DIR (where the config, socket and logs go; default a fresh
# directory under /tmp). The first run builds the model server (about 15 minutes on 2 cores,
# cached afterwards: see scripts/llama.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

log() { echo "demo: $*" >&2; }

./scripts/setup.sh
./scripts/llama.sh ensure

PY=.venv/bin/python
port_free() { "$PY" - "$1" <<'EOF'
import socket, sys
s = socket.socket()
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError:
    sys.exit(1)
EOF
}
free_port() { "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

PORT=${ROUTERD_DEMO_PORT:-8080}
if ! port_free "$PORT"; then
    [ -z "${ROUTERD_DEMO_PORT:-}" ] || { log "port $PORT is taken (ROUTERD_DEMO_PORT)"; exit 1; }
    PORT=$(free_port)
    log "port 8080 is taken; the model server gets port $PORT"
fi

DIR=${ROUTERD_DEMO_DIR:-$(mktemp -d /tmp/routerd-demo.XXXXXX)}
mkdir -p "$DIR"
SOCK="$DIR/routerd.sock"
cat >"$DIR/config.toml" <<EOF
# routerd demo configuration: the llama.cpp server started by scripts/demo.sh, plus the
# usual ports of every other kind of model server (shown offline unless you run one).
[services.llamacpp]
endpoint = "http://127.0.0.1:$PORT"

[discovery]
interval = 2.0
EOF

pids=()
cleanup() {
    trap - EXIT INT TERM
    log "stopping"
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

log "starting the model server on 127.0.0.1:$PORT (log: $DIR/model-server.log)"
./scripts/llama.sh serve --kind server --port "$PORT" >"$DIR/model-server.log" 2>&1 &
pids+=($!)
log "starting routerd on $SOCK (log: $DIR/routerd.log)"
.venv/bin/routerd --config "$DIR/config.toml" --socket "$SOCK" >"$DIR/routerd.log" 2>&1 &
pids+=($!)

export ROUTERD_SOCKET="$SOCK"
ctl=.venv/bin/routerctl
for _ in $(seq 1 120); do
    if "$ctl" --json services 2>/dev/null | "$PY" -c '
import json, sys
services = json.load(sys.stdin).get("services", [])  # an error until routerd listens
sys.exit(0 if any(s["name"] == "llamacpp" and s["state"] == "online" for s in services) else 1)
'; then
        break
    fi
    for pid in "${pids[@]}"; do
        kill -0 "$pid" 2>/dev/null || {
            log "a process exited early; the logs:"
            tail -n 20 "$DIR/model-server.log" "$DIR/routerd.log" >&2
            exit 1
        }
    done
    sleep 0.5
done

"$ctl" services
echo
"$ctl" models --available
cat <<EOF

routerd is running with a real model server beside it. In another terminal:

    export ROUTERD_SOCKET=$SOCK
    $PWD/$ctl services        # every model server routerd probes, and its state
    $PWD/$ctl models          # the models they offer, with context lengths
    $PWD/$ctl watch           # changes as they happen (stop the model server to see one)

Ctrl-C here stops both.
EOF
wait -n "${pids[@]}"
