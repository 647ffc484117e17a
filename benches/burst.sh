#!/usr/bin/env bash
# The burst benchmark: zero to N live instances in one `wisp serve` process,
# and back to zero.
#
# Starts `wisp serve` (release build) on the http-echo guest with the pool and
# limits sized for N, then runs `wisp-load` (crates/load): N connections opened
# from loopback source addresses, then every one sends `GET /sleep?ms=HOLD` at
# once (or over RAMP); each request holds a fresh instance until its hold ends.
# Reports the time from go to N instances alive, back to zero, the server's
# peak and idle memory, errors, and a ping's p50/p99 during the burst.
#
# Then the same burst runs against `native-burst` (crates/bench-native): a plain
# hyper server with no Wasm that holds each request in a timer, the floor that
# this machine and this client set under any server's figures.
#
# Output: stdout and target/bench/burst-N.{txt,json}, and for the floor
# burst-native-N.{txt,json} (the JSON holds every sample, for
# benches/plot.py). Exits non-zero on any error. The servers are killed on
# exit. Loopback only.
#
# Open files: one HTTP/1.1 connection per request needs N files in each of
# the client and the server; where the hard limit is lower (20,000 on the
# project's VMs, which cannot raise it), the requests go as HTTP/2 streams over
# HTTP2 connections (default: 100 when N > 15000).
#
# Memory mappings: each pooled fiber stack has a guard page and each live
# instance's memory is an accessible region in its reserved slot, about 8
# mappings per instance; past the kernel's vm.max_map_count (65530 by
# default) instantiation fails with ENOMEM. Run as root, the script raises it
# for the run and restores it on exit; otherwise it says what to set.
#
# Environment: N (default 100000), HOLD (ms each request holds its instance,
# default 30000: instances start in arrival order, so for all N to be alive
# at once the first must still hold when the last starts, 10 to 20 s at
# 100,000 here), RAMP (e.g. 500ms; default 0s, all at once), THREADS (client
# threads, default 1), WARMUP (requests of a warm-up burst before, default
# 1000; 0 for none), FLOOR=0 to skip the native floor, SKIP_BUILD=1 to use the
# binaries already built.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
N=${N:-100000}
HOLD=${HOLD:-30000}
RAMP=${RAMP:-0s}
THREADS=${THREADS:-1}
WARMUP=${WARMUP:-1000}
FLOOR=${FLOOR:-1}
if [[ -z "${HTTP2:-}" ]] && (( N > 15000 )); then HTTP2=100; fi
HTTP2=${HTTP2:-}
OUT_DIR=$TARGET_DIR/bench
mkdir -p "$OUT_DIR"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/wisp-burst.XXXXXX")
SERVER=""
OLD_MAP_COUNT=""
cleanup() {
    [[ -n "$SERVER" ]] && kill "$SERVER" 2>/dev/null && wait "$SERVER" 2>/dev/null
    if [[ -n "$OLD_MAP_COUNT" ]]; then
        sysctl -qw vm.max_map_count="$OLD_MAP_COUNT" && echo "burst.sh: vm.max_map_count restored to $OLD_MAP_COUNT" >&2
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

need_maps=$((N * 8 + 65536))
have_maps=$(cat /proc/sys/vm/max_map_count)
if (( have_maps < need_maps )); then
    if [[ $(id -u) == 0 ]] && sysctl -qw vm.max_map_count="$need_maps"; then
        OLD_MAP_COUNT=$have_maps
        echo "burst.sh: vm.max_map_count raised from $have_maps to $need_maps for this run" >&2
    else
        echo "burst.sh: $N instances need vm.max_map_count >= $need_maps (it is $have_maps): sysctl -w vm.max_map_count=$need_maps" >&2
        exit 1
    fi
fi

if [[ -z "${SKIP_BUILD:-}" ]]; then
    cargo build --release --locked -p wisp -p wisp-load -p wisp-bench-native >&2
    bash guests/install-toolchain.sh >&2
    bash guests/build.sh "$TARGET_DIR/guests" >&2
fi
APP=$TARGET_DIR/guests/http-echo.wasm
[[ -f "$APP" ]] || { echo "burst.sh: $APP missing (run without SKIP_BUILD)" >&2; exit 1; }

if [[ -n "$HTTP2" ]]; then
    CONNS=$((HTTP2 + 100))
    STREAMS=$((N / HTTP2 + 1))
    LOAD_ARGS=(--http2 "$HTTP2")
    PROTO="HTTP/2 streams over $HTTP2 connections"
else
    CONNS=$((N + 1000))
    STREAMS=1000
    LOAD_ARGS=()
    PROTO="HTTP/1.1, a connection per request"
fi
# Each process raises its own soft limit as far as it needs; say so when the
# hard limit cannot hold the connections.
if (( $(ulimit -Hn) < CONNS + 1024 )); then
    echo "burst.sh: $CONNS connections need $((CONNS + 1024)) open files, the hard limit is $(ulimit -Hn): set HTTP2=<connections>" >&2
    exit 1
fi

# Starts a server (the command in "$@", which prints `Serving HTTP on
# http://ADDR/` on stderr once bound) and sets SERVER and ADDR.
start_server() {
    local log=$WORK/server.log
    "$@" 2> "$log" &
    SERVER=$!
    for _ in $(seq 1 600); do
        grep -q "Serving HTTP on" "$log" && break
        kill -0 "$SERVER" 2>/dev/null || { cat "$log" >&2; exit 1; }
        sleep 0.1
    done
    ADDR=$(sed -n 's#.*Serving HTTP on http://\([^/]*\)/.*#\1#p' "$log" | head -1)
    [[ -n "$ADDR" ]] || { echo "burst.sh: the server never got ready" >&2; cat "$log" >&2; exit 1; }
}

stop_server() {
    kill "$SERVER" 2>/dev/null && wait "$SERVER" 2>/dev/null
    SERVER=""
}

# The burst against the running server; output as NAME-N.{txt,json}.
run_burst() {
    local name=$1 what=$2
    # A warm-up burst of WARMUP requests first: the first burst also grows
    # structures a server keeps (the runtimes' I/O slabs, the code's resident
    # pages), so "idle" is measured after it, as a server that has served before.
    if (( WARMUP > 0 )); then
        "$TARGET_DIR/release/wisp-load" --requests "$WARMUP" --settle-timeout 5s \
            "http://$ADDR/sleep?ms=200" > "$WORK/warmup.txt" || { cat "$WORK/warmup.txt" >&2; exit 1; }
    fi
    {
        echo "# $what burst: N=$N HOLD=${HOLD}ms RAMP=$RAMP, $PROTO, $(nproc) CPUs, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -r), $(git rev-parse --short HEAD)"
        "$TARGET_DIR/release/wisp-load" --requests "$N" --pid "$SERVER" --ramp "$RAMP" \
            --threads "$THREADS" --settle-timeout 20s "${LOAD_ARGS[@]}" \
            --json "$OUT_DIR/$name-$N.json" "http://$ADDR/sleep?ms=$HOLD"
    } | tee "$OUT_DIR/$name-$N.txt"
}

start_server "$TARGET_DIR/release/wisp" serve \
    --listen 127.0.0.1:0 \
    --max-connections "$CONNS" \
    --max-streams-per-connection "$STREAMS" \
    --max-concurrent-requests "$N" \
    --queue-timeout 30s \
    --memory-reservation 16MiB --memory-guard 0 --keep-resident 0 --memory-init copy \
    --backlog 65535 \
    --cache-dir "$WORK/cache" \
    "$APP"
run_burst burst wisp
stop_server

if [[ "$FLOOR" != 0 ]]; then
    echo
    start_server "$TARGET_DIR/release/native-burst" --listen 127.0.0.1:0 --max-streams "$STREAMS"
    run_burst burst-native "native floor (no Wasm)"
    stop_server
fi
