#!/usr/bin/env bash
# HTTP benchmarks of `wisp serve`, against `wasmtime serve` and a native hyper server.
#
# In one run, on the same guest (target/guests/http-hello.wasm, else
# examples/hello.wasm):
#
# 1. Throughput and latency: starts `wisp serve`, `wasmtime serve` (if installed;
#    see benches/install-peers.sh) and `native-hello` (crates/bench-native), each on
#    its own loopback port; checks each answers `hello from wisp`, warms each up,
#    then runs `wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s --latency` against one
#    at a time (the others idle), $ROUNDS rounds interleaving the servers. Prints
#    the medians of req/s, p50 and p99 latency and of the CPU the server used, and
#    the ratios wisp/wasmtime and wisp/native.
# 2. Start-up: time from process start to the first HTTP 200 (`first-response`,
#    crates/bench-native), median of $STARTS runs, for wisp with a cold code cache
#    (fresh empty WISP_CACHE_DIR) and a warm one (second start, same dir), the same
#    for wasmtime (fresh cache directory via `-C cache-config`, then its default
#    cache warmed up), and native-hello as the floor.
#
# Results go to stdout and target/bench/http-load.txt (raw wrk reports next to it).
# Every server started is killed on exit, by PID. Loopback only.
#
# Environment: DURATION (s, default 10), WARMUP (s, default 3), CONNECTIONS
# (default 32), THREADS (wrk threads, default 1), ROUNDS (default 3), STARTS
# (default 5), PIN=1 to pin each server to CPU 0 and wrk to CPU 1, WISP_LOG
# (default warn), WASMTIME (path to the wasmtime CLI; default: on PATH or
# ~/.cargo/bin), SKIP_BUILD=1 to use the binaries already built.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}

DURATION=${DURATION:-10}
WARMUP=${WARMUP:-3}
CONNECTIONS=${CONNECTIONS:-32}
THREADS=${THREADS:-1}
STARTS=${STARTS:-5}
ROUNDS=${ROUNDS:-3}
START_TIMEOUT=60
EXPECTED_BODY="hello from wisp"

OUT_DIR=$TARGET_DIR/bench
OUT=$OUT_DIR/http-load.txt
ROUNDS_OUT=$OUT_DIR/http-load.rounds.txt
mkdir -p "$OUT_DIR"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/wisp-http-load.XXXXXX")

# PIDs of every server this script started; killed on exit.
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

note() { printf '%s\n' "$*" >&2; }
die() { note "http-load: $*"; exit 1; }
# A line of results: stdout and the results file.
say() { printf '%s\n' "$*" | tee -a "$OUT"; }

for tool in wrk curl awk; do
    command -v "$tool" >/dev/null || die "\`$tool\` is required"
done

# --- Build -------------------------------------------------------------------
if [[ ${SKIP_BUILD:-} != 1 ]]; then
    note "building release wisp and native-hello..."
    cargo build --release --quiet -p wisp -p wisp-bench-native
fi
WISP=$TARGET_DIR/release/wisp
NATIVE=$TARGET_DIR/release/native-hello
FIRST=$TARGET_DIR/release/first-response
for bin in "$WISP" "$NATIVE" "$FIRST"; do
    [[ -x $bin ]] || die "missing $bin"
done

GUEST=$ROOT/target/guests/http-hello.wasm
[[ -f $GUEST ]] || GUEST=$ROOT/examples/hello.wasm
[[ -f $GUEST ]] || die "no guest: build target/guests/http-hello.wasm"

WASMTIME=${WASMTIME:-$(command -v wasmtime || true)}
if [[ -z $WASMTIME && -x $HOME/.cargo/bin/wasmtime ]]; then
    WASMTIME=$HOME/.cargo/bin/wasmtime
fi
if [[ -n $WASMTIME ]] && ! "$WASMTIME" --version >/dev/null 2>&1; then
    WASMTIME=
fi
if [[ -z $WASMTIME ]]; then
    note "wasmtime not found: skipping it (benches/install-peers.sh installs it)"
fi

# Wasmtime's cache configuration pointing at a given directory.
wasmtime_cache_config() { # FILE DIR
    printf '[cache]\ndirectory = "%s"\n' "$2" >"$1"
}

# --- Helpers -------------------------------------------------------------------

# Starts a server in the background and waits for its "Serving HTTP on" line.
# Sets ADDR (host:port). Usage: start_server NAME CMD [ARGS...]
start_server() {
    local name=$1 log=$WORK/$1.log i
    shift
    "$@" >"$log" 2>&1 &
    local pid=$!
    PIDS+=("$pid")
    eval "PID_${name//-/_}=$pid"
    for ((i = 0; i < START_TIMEOUT * 100; i++)); do
        ADDR=$(sed -n 's|.*Serving HTTP on http://\([^/]*\)/.*|\1|p' "$log" | head -n1)
        [[ -n $ADDR ]] && break
        kill -0 "$pid" 2>/dev/null || { cat "$log" >&2; die "$name exited before serving"; }
        sleep 0.01
    done
    [[ -n $ADDR ]] || { cat "$log" >&2; die "$name did not report ready within ${START_TIMEOUT}s"; }
    case $ADDR in
        127.* | "[::1]"*) ;;
        *) die "$name listens on $ADDR, not loopback" ;;
    esac
}

# Converts a wrk duration (850.00us, 1.23ms, 2.00s, 1.00m) to milliseconds.
to_ms() {
    awk -v v="$1" 'BEGIN {
        if (v ~ /us$/) { sub(/us$/, "", v); printf "%.3f", v / 1000 }
        else if (v ~ /ms$/) { sub(/ms$/, "", v); printf "%.3f", v }
        else if (v ~ /m$/) { sub(/m$/, "", v); printf "%.3f", v * 60000 }
        else if (v ~ /s$/) { sub(/s$/, "", v); printf "%.3f", v * 1000 }
        else { printf "nan" }
    }'
}

# CPU ticks stolen from this (virtual) machine by the hypervisor so far, all CPUs.
steal_ticks() {
    awk '$1 == "cpu" { print $9 }' /proc/stat
}

# User+system CPU ticks a process has used so far.
cpu_ticks() {
    awk '{ print $14 + $15 }' "/proc/$1/stat"
}
CLK_TCK=$(getconf CLK_TCK)

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else printf "n/a" }'; }

median() { sort -n | awk '{ v[NR] = $1 } END { if (NR == 0) print "n/a"; else if (NR % 2) print v[(NR + 1) / 2]; else printf "%.6g\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# Checks a server answers the expected body, then warms it up. Usage: warm NAME ADDR
warm() {
    local name=$1 addr=$2 body
    body=$(curl -fsS --max-time 10 "http://$addr/") || die "$name: GET / failed"
    [[ $body == "$EXPECTED_BODY" ]] || die "$name answered '$body', expected '$EXPECTED_BODY'"
    note "$name: warm-up ${WARMUP}s..."
    "${WRK[@]}" -t"$THREADS" -c"$CONNECTIONS" -d"${WARMUP}s" "http://$addr/" >/dev/null
}

# One wrk run; sets RPS P50 P99 CPU CPU_US STEAL ERRS. Usage: measure NAME ADDR PID ROUND
measure() {
    local name=$1 addr=$2 pid=$3 round=$4
    note "$name: measuring ${DURATION}s (round $round of $ROUNDS)..."
    local before after steal0 steal1 report=$OUT_DIR/http-load.$name.$round.wrk.txt
    steal0=$(steal_ticks)
    before=$(cpu_ticks "$pid")
    "${WRK[@]}" -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --timeout 10s --latency "http://$addr/" >"$report"
    after=$(cpu_ticks "$pid")
    steal1=$(steal_ticks)
    RPS=$(awk '/^Requests\/sec:/ { printf "%.0f", $2 }' "$report")
    P50=$(to_ms "$(awk '$1 == "50%" { print $2 }' "$report")")
    P99=$(to_ms "$(awk '$1 == "99%" { print $2 }' "$report")")
    CPU=$(awk -v t=$((after - before)) -v hz="$CLK_TCK" -v d="$DURATION" 'BEGIN { printf "%.2f", t / hz / d }')
    STEAL=$(awk -v t=$((steal1 - steal0)) -v hz="$CLK_TCK" -v d="$DURATION" -v n="$(nproc)" 'BEGIN { printf "%.0f", 100 * t / hz / d / n }')
    CPU_US=$(awk -v c="$CPU" -v r="$RPS" 'BEGIN { if (r > 0) printf "%.1f", c / r * 1e6; else print "nan" }')
    ERRS=$(awk '/Non-2xx or 3xx responses:/ { n += $NF } /Socket errors:/ { gsub(/,/, ""); n += $4 + $6 + $8 + $10 } END { print n + 0 }' "$report")
}

# --- Header ----------------------------------------------------------------------
: >"$OUT"
: >"$ROUNDS_OUT"
say "# Wisp HTTP benchmarks ($(date -u +%Y-%m-%dT%H:%M:%SZ))"
say "machine: $(nproc) CPUs, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1), $(uname -sr)"
say "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
say "wisp: $("$WISP" --version 2>&1 | head -n1)"
say "wasmtime: $([[ -n $WASMTIME ]] && "$WASMTIME" --version || echo 'not installed')"
say "wrk: $(wrk -v 2>&1 | head -n1 | cut -d' ' -f1-2)"
say "guest: ${GUEST#"$ROOT"/} (sha256 $(sha256sum "$GUEST" | cut -c1-16)...)"
say "load: wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s --latency, $ROUNDS rounds (after ${WARMUP}s warm-up), one server at a time; client and server share the machine"
say ""

# --- 1. Throughput and latency ---------------------------------------------------
# PIN=1: servers on CPU 0, wrk on CPU 1 (each gets exactly one core).
SERVER_PREFIX=() WRK=(wrk)
if [[ ${PIN:-} == 1 ]]; then
    command -v taskset >/dev/null || die "PIN=1 needs taskset"
    SERVER_PREFIX=(taskset -c 0) WRK=(taskset -c 1 wrk)
fi
note "starting servers..."
export WISP_LOG=${WISP_LOG:-warn}
start_server wisp "${SERVER_PREFIX[@]}" env WISP_CACHE_DIR="$WORK/wisp-cache-load" "$WISP" serve --listen 127.0.0.1:0 "$GUEST"
ADDR_wisp=$ADDR
if [[ -n $WASMTIME ]]; then
    wasmtime_cache_config "$WORK/wasmtime-cache-load.toml" "$WORK/wasmtime-cache-load"
    start_server wasmtime "${SERVER_PREFIX[@]}" "$WASMTIME" serve -S cli=y -C cache-config="$WORK/wasmtime-cache-load.toml" \
        --addr 127.0.0.1:0 "$GUEST"
    ADDR_wasmtime=$ADDR
fi
start_server native "${SERVER_PREFIX[@]}" "$NATIVE" --listen 127.0.0.1:0
ADDR_native=$ADDR

servers=(wisp)
[[ -n $WASMTIME ]] && servers+=(wasmtime)
servers+=(native)

for s in "${servers[@]}"; do
    addr_var=ADDR_$s
    warm "$s" "${!addr_var}"
done
# Rounds interleave the servers, so drift in the machine's speed hits all alike;
# the table gives the median of the rounds.
declare -A V_RPS V_P50 V_P99 V_CPU V_CPU_US V_STEAL V_ERRS
for ((round = 1; round <= ROUNDS; round++)); do
    for s in "${servers[@]}"; do
        addr_var=ADDR_$s pid_var=PID_$s
        measure "$s" "${!addr_var}" "${!pid_var}" "$round"
        V_RPS[$s]+="$RPS " V_P50[$s]+="$P50 " V_P99[$s]+="$P99 " V_CPU[$s]+="$CPU " V_CPU_US[$s]+="$CPU_US " V_STEAL[$s]+="$STEAL "
        V_ERRS[$s]=$((${V_ERRS[$s]:-0} + ERRS))
        printf '%s\n' "$s round $round: $RPS req/s, p50 $P50 ms, p99 $P99 ms, server CPU ${CPU}c, ${CPU_US} us/req, steal $STEAL%" | tee -a "$ROUNDS_OUT" >&2
    done
done

med() { tr ' ' '\n' <<<"$1" | grep -v '^$' | median; }
lo() { tr ' ' '\n' <<<"$1" | grep -v '^$' | sort -n | head -n1; }
hi() { tr ' ' '\n' <<<"$1" | grep -v '^$' | sort -n | tail -n1; }

say "## Throughput and latency: median of $ROUNDS rounds$([[ ${PIN:-} == 1 ]] && echo ', server pinned to CPU 0, wrk to CPU 1')"
say "$(printf '%-16s %9s %16s %8s %8s %11s %11s %6s %7s' server req/s 'req/s min..max' 'p50 ms' 'p99 ms' 'server CPU' 'CPU us/req' steal errors)"
declare -A R_RPS R_P50 R_P99
for s in "${servers[@]}"; do
    R_RPS[$s]=$(med "${V_RPS[$s]}") R_P50[$s]=$(med "${V_P50[$s]}") R_P99[$s]=$(med "${V_P99[$s]}")
    case $s in
        wisp) label="wisp serve" ;;
        wasmtime) label="wasmtime serve" ;;
        native) label="native-hello" ;;
    esac
    say "$(printf '%-16s %9s %16s %8s %8s %10sc %11s %5s%% %7s' "$label" "${R_RPS[$s]}" "$(lo "${V_RPS[$s]}")..$(hi "${V_RPS[$s]}")" \
        "${R_P50[$s]}" "${R_P99[$s]}" "$(med "${V_CPU[$s]}")" "$(med "${V_CPU_US[$s]}")" "$(hi "${V_STEAL[$s]}")" "${V_ERRS[$s]}")"
done
say "(server CPU: cores the server process used while loaded, of $(nproc); CPU us/req: its CPU time per"
say " request; steal: worst round's CPU time taken by the hypervisor, % of all CPUs; errors: non-2xx"
say " plus socket errors, all rounds; per-round figures: target/bench/http-load.rounds.txt)"
say ""
say "## Ratios of the medians (req/s: higher is better for wisp; latency: lower is better)"
say "$(printf '%-16s %9s %9s %9s' '' req/s p50 p99)"
for peer in wasmtime native; do
    [[ -n ${R_RPS[$peer]:-} ]] || continue
    say "$(printf '%-16s %9s %9s %9s' "wisp / $peer" "$(ratio "${R_RPS[wisp]}" "${R_RPS[$peer]}")" \
        "$(ratio "${R_P50[wisp]}" "${R_P50[$peer]}")" "$(ratio "${R_P99[wisp]}" "${R_P99[$peer]}")")"
done
say ""

# For benches/plot.py: the medians as grouped bars (req/s in thousands, ms).
{
    printf '{"kind": "bars", "title": "wrk -c%s, median of %s rounds: req/s (thousands) and latency (ms)", "unit": "", ' \
        "$CONNECTIONS" "$ROUNDS"
    printf '"metrics": ["req/s (k)", "p50 ms", "p99 ms"], "series": {'
    sep=""
    for s in "${servers[@]}"; do
        case $s in
            wisp) label="wisp serve" ;;
            wasmtime) label="wasmtime serve" ;;
            native) label="native hyper" ;;
        esac
        printf '%s"%s": {"req/s (k)": %s, "p50 ms": %s, "p99 ms": %s}' "$sep" "$label" \
            "$(awk -v r="${R_RPS[$s]}" 'BEGIN { printf "%.1f", r / 1000 }')" "${R_P50[$s]}" "${R_P99[$s]}"
        sep=", "
    done
    printf '}}\n'
} > "$OUT_DIR/http-load.json"

# The load servers are done; stop them so the start-up runs have the machine.
for pid in "${PIDS[@]}"; do
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
done
PIDS=()

# --- 2. Start-up -------------------------------------------------------------------
# A port below the kernel's ephemeral range (32768+ by default), so no client
# socket of wrk or of anything else holds it; the listener check rules out servers.
free_port() {
    local p i
    for ((i = 0; i < 200; i++)); do
        p=$((20000 + RANDOM % 12000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            echo "$p"
            return
        fi
    done
    die "no free port found"
}

# One start-to-first-200 measurement in ms. Usage: first PORT CMD [ARGS...]
first() {
    local port=$1 log=$WORK/start.log
    shift
    if ! "$FIRST" --port "$port" --timeout "$START_TIMEOUT" --log "$log" -- "$@"; then
        note "start-up measurement failed: $*"
        cat "$log" >&2
        exit 1
    fi
}

# Prints "median (min..max)" of the numbers on stdin.
summary() {
    local vals
    vals=$(cat)
    printf '%s (min %s, max %s)' "$(median <<<"$vals")" "$(sort -n <<<"$vals" | head -n1)" "$(sort -n <<<"$vals" | tail -n1)"
}

note "start-up: $STARTS runs each..."
wisp_cold=() wisp_warm=() wt_cold=() wt_warm=() wt_default=() native_start=()
for ((run = 0; run < STARTS; run++)); do
    cache=$WORK/wisp-cache-start-$run
    port=$(free_port)
    wisp_cold+=("$(first "$port" env WISP_CACHE_DIR="$cache" "$WISP" serve --listen "127.0.0.1:$port" "$GUEST")")
    port=$(free_port)
    wisp_warm+=("$(first "$port" env WISP_CACHE_DIR="$cache" "$WISP" serve --listen "127.0.0.1:$port" "$GUEST")")
    if [[ -n $WASMTIME ]]; then
        cfg=$WORK/wasmtime-cache-start-$run.toml
        wasmtime_cache_config "$cfg" "$WORK/wasmtime-cache-start-$run"
        port=$(free_port)
        wt_cold+=("$(first "$port" "$WASMTIME" serve -S cli=y -C cache-config="$cfg" --addr "127.0.0.1:$port" "$GUEST")")
        port=$(free_port)
        wt_warm+=("$(first "$port" "$WASMTIME" serve -S cli=y -C cache-config="$cfg" --addr "127.0.0.1:$port" "$GUEST")")
    fi
    port=$(free_port)
    native_start+=("$(first "$port" "$NATIVE" --listen "127.0.0.1:$port")")
done
if [[ -n $WASMTIME ]]; then
    # Its default cache (~/.cache/wasmtime), primed by one untimed start.
    port=$(free_port)
    first "$port" "$WASMTIME" serve -S cli=y --addr "127.0.0.1:$port" "$GUEST" >/dev/null
    for ((run = 0; run < STARTS; run++)); do
        port=$(free_port)
        wt_default+=("$(first "$port" "$WASMTIME" serve -S cli=y --addr "127.0.0.1:$port" "$GUEST")")
    done
fi

say "## Start-up: process start to first HTTP 200, ms, median of $STARTS (min, max)"
say "$(printf '%-44s %s' 'wisp serve, cold cache (fresh dir)' "$(printf '%s\n' "${wisp_cold[@]}" | summary)")"
say "$(printf '%-44s %s' 'wisp serve, warm cache (same dir, 2nd start)' "$(printf '%s\n' "${wisp_warm[@]}" | summary)")"
if [[ -n $WASMTIME ]]; then
    say "$(printf '%-44s %s' 'wasmtime serve, cold cache (fresh dir)' "$(printf '%s\n' "${wt_cold[@]}" | summary)")"
    say "$(printf '%-44s %s' 'wasmtime serve, warm cache (same dir)' "$(printf '%s\n' "${wt_warm[@]}" | summary)")"
    say "$(printf '%-44s %s' 'wasmtime serve, default cache (warm)' "$(printf '%s\n' "${wt_default[@]}" | summary)")"
fi
say "$(printf '%-44s %s' 'native-hello (floor)' "$(printf '%s\n' "${native_start[@]}" | summary)")"
say "(first-response polls connect + GET / every 200us; wasmtime's fresh dir is set with -C cache-config)"
say ""
say "results: ${OUT#"$ROOT"/}"
