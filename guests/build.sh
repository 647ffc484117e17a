#!/usr/bin/env bash
# Builds Wisp's test guests from the sources in guests/ into OUTDIR
# (default: <repo>/target/guests). Installs nothing: run
# guests/install-toolchain.sh first. Idempotent and reproducible: the same
# toolchain gives the same bytes, whatever OUTDIR or temp dir is used.
#
#   guests/build.sh [OUTDIR]          build every guest
#   guests/build.sh --check-example   rebuild http-hello.wasm and compare it
#                                     with examples/hello.wasm (exit 1 if not
#                                     byte-identical)
#   guests/build.sh --update-example  rebuild it and copy it to examples/hello.wasm
#
# Overrides (environment): CLANG, WASI_SYSROOT, WASM_TOOLS, WIT_BINDGEN,
# WISP_GUEST_CACHE, WISP_ADAPTER_DIR, WISP_WASI_WIT_DIR (see versions.sh).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
# shellcheck source=versions.sh
. "$HERE/versions.sh"

die() { printf 'build.sh: error: %s\n' "$*" >&2; exit 1; }
log() { printf 'build.sh: %s\n' "$*" >&2; }

MODE=build
OUTDIR=""
for arg in "$@"; do
    case "$arg" in
        --check-example) MODE=check ;;
        --update-example) MODE=update ;;
        -h|--help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        -*) die "unknown option $arg" ;;
        *) [ -z "$OUTDIR" ] || die "more than one OUTDIR"; OUTDIR="$arg" ;;
    esac
done
OUTDIR="${OUTDIR:-$ROOT/target/guests}"
EXAMPLE="$ROOT/examples/hello.wasm"

# --- locate the toolchain -----------------------------------------------------
missing=()
need() { missing+=("$1"); }

CLANG="${CLANG:-clang-19}"
command -v "$CLANG" >/dev/null 2>&1 || need "$CLANG (apt: clang-19, lld-19)"
WASI_SYSROOT="${WASI_SYSROOT:-/usr}"
for f in lib/wasm32-wasi/libc.a lib/wasm32-wasi/crt1-command.o lib/wasm32-wasi/crt1-reactor.o \
         include/wasm32-wasi/stdio.h; do
    [ -e "$WASI_SYSROOT/$f" ] || { need "wasi-libc sysroot file $WASI_SYSROOT/$f (apt: wasi-libc)"; break; }
done
if command -v "$CLANG" >/dev/null 2>&1; then
    rt="$("$CLANG" --target=wasm32-wasi -print-libgcc-file-name 2>/dev/null || true)"
    [ -e "$rt" ] || need "wasm32 compiler-rt builtins ${rt:-libclang_rt.builtins-wasm32.a} (apt: libclang-rt-19-dev-wasm32)"
    lld="$("$CLANG" --target=wasm32-wasi -print-prog-name=wasm-ld 2>/dev/null || true)"
    { [ -n "$lld" ] && command -v "$lld" >/dev/null 2>&1; } || need "wasm-ld (apt: lld-19)"
fi

pick() { # first executable among the arguments
    local c
    for c in "$@"; do
        [ -n "$c" ] || continue
        if [ -x "$c" ]; then printf '%s' "$c"; return 0; fi
        if [[ "$c" != */* ]] && command -v "$c" >/dev/null 2>&1; then command -v "$c"; return 0; fi
    done
    return 1
}
WASM_TOOLS="$(pick "${WASM_TOOLS:-}" "$WISP_WASM_TOOLS_VENV/bin/wasm-tools" "$CARGO_BIN/wasm-tools" wasm-tools)" \
    || need "wasm-tools (expected $WISP_WASM_TOOLS_VENV/bin/wasm-tools)"
WIT_BINDGEN="$(pick "${WIT_BINDGEN:-}" "$CARGO_BIN/wit-bindgen" wit-bindgen)" \
    || need "wit-bindgen (expected $CARGO_BIN/wit-bindgen)"
for k in command proxy; do
    [ -s "$WISP_ADAPTER_DIR/wasi_snapshot_preview1.$k.wasm" ] \
        || need "WASI preview1 $k adapter $WISP_ADAPTER_DIR/wasi_snapshot_preview1.$k.wasm"
done
[ -s "$WISP_WASI_WIT_DIR/deps/http.wit" ] \
    || need "wasi:http WIT of wasmtime-wasi-http $WASMTIME_VERSION in $WISP_WASI_WIT_DIR/deps"

if ((${#missing[@]})); then
    {
        echo "build.sh: missing toolchain parts:"
        printf '  - %s\n' "${missing[@]}"
        echo "run: bash guests/install-toolchain.sh"
    } >&2
    exit 1
fi

# Different tool versions give different bytes; say so rather than fail.
check_version() { # NAME BIN WANT
    local got
    got="$("$2" --version 2>/dev/null | awk '{print $2}')"
    [ "$got" = "$3" ] || log "warning: $1 is $got, pinned $3: output may differ from examples/hello.wasm"
}
check_version wasm-tools "$WASM_TOOLS" "$WASM_TOOLS_VERSION"
check_version wit-bindgen "$WIT_BINDGEN" "$WIT_BINDGEN_VERSION"

# --- build helpers ------------------------------------------------------------
TMP="$(mktemp -d "${TMPDIR:-/tmp}/wisp-guests.XXXXXX")"
trap 'rm -rf "$TMP"' EXIT

CFLAGS=(--target=wasm32-wasi "--sysroot=$WASI_SYSROOT" -O2 -Wall -Wextra
        -Wno-unused-parameter "-ffile-prefix-map=$TMP=." "-ffile-prefix-map=$HERE=guests")
# No DWARF (libc.a carries some with absolute paths); keep the name section.
LDFLAGS=(-Wl,--strip-debug)

# p1 command module from one C file
build_command() { # NAME
    "$CLANG" "${CFLAGS[@]}" "${LDFLAGS[@]}" "$HERE/c/$1.c" -o "$TMP/out/$1.wasm"
}

# WASI 0.2 command component from a p1 command
build_command_component() { # NAME SOURCE_C
    "$CLANG" "${CFLAGS[@]}" "${LDFLAGS[@]}" "$HERE/c/$2.c" -o "$TMP/$1.core.wasm"
    "$WASM_TOOLS" component new "$TMP/$1.core.wasm" \
        --adapt "wasi_snapshot_preview1=$WISP_ADAPTER_DIR/wasi_snapshot_preview1.command.wasm" \
        -o "$TMP/out/$1.wasm"
}

# wasi:http/proxy component: WORLD is in guests/wit/guests.wit
WIT_READY=""
build_http_component() { # NAME WORLD
    local name="$1" world="$2" gen="$TMP/gen/$1" cname
    if [ -z "$WIT_READY" ]; then
        mkdir -p "$TMP/wit"
        cp "$HERE"/wit/*.wit "$TMP/wit/"
        cp -r "$WISP_WASI_WIT_DIR/deps" "$TMP/wit/deps"
        WIT_READY=1
    fi
    mkdir -p "$gen"
    "$WIT_BINDGEN" c --world "$world" --out-dir "$gen" "$TMP/wit" >"$gen.log" 2>&1 \
        || { cat "$gen.log" >&2; die "wit-bindgen failed for world $world"; }
    cname="${world//-/_}"
    "$CLANG" "${CFLAGS[@]}" "${LDFLAGS[@]}" -mexec-model=reactor -I "$gen" \
        "$HERE/c/$name.c" "$gen/$cname.c" "$gen/${cname}_component_type.o" \
        -o "$TMP/$name.core.wasm"
    "$WASM_TOOLS" component new "$TMP/$name.core.wasm" \
        --adapt "wasi_snapshot_preview1=$WISP_ADAPTER_DIR/wasi_snapshot_preview1.proxy.wasm" \
        -o "$TMP/out/$name.wasm"
}

# Sanity checks on each output: valid, right shape, no build paths inside.
verify() { # FILE KIND(module|component)
    local f="$1" imports wat
    "$WASM_TOOLS" validate "$f" || die "$f does not validate"
    if grep -aqF -e "$TMP" -e "$HERE" -e "$ROOT" "$f"; then
        die "$f contains an absolute build path"
    fi
    if [ "$2" = module ]; then
        wat="$("$WASM_TOOLS" print "$f")"
        grep -q '(export "_start"' <<<"$wat" || die "$f does not export _start"
        imports="$(grep -o '(import "[^"]*"' <<<"$wat" | sort -u)"
        [ "$imports" = '(import "wasi_snapshot_preview1"' ] || die "$f imports more than wasi_snapshot_preview1: $imports"
    else
        "$WASM_TOOLS" component wit "$f" >/dev/null || die "$f is not a component"
    fi
}

mkdir -p "$TMP/out"

case "$MODE" in
check|update)
    build_http_component http-hello http-hello
    verify "$TMP/out/http-hello.wasm" component
    if [ "$MODE" = update ]; then
        mkdir -p "$(dirname "$EXAMPLE")"
        cp "$TMP/out/http-hello.wasm" "$EXAMPLE"
        chmod 644 "$EXAMPLE"
        log "updated $EXAMPLE"
        exit 0
    fi
    [ -f "$EXAMPLE" ] || die "$EXAMPLE does not exist (create it with guests/build.sh --update-example)"
    if cmp -s "$TMP/out/http-hello.wasm" "$EXAMPLE"; then
        log "examples/hello.wasm matches a fresh build of guests/c/http-hello.c"
        exit 0
    fi
    {
        echo "build.sh: examples/hello.wasm differs from a fresh build of guests/c/http-hello.c"
        echo "  committed: $(wc -c < "$EXAMPLE") bytes, sha256 $(sha256sum < "$EXAMPLE" | cut -c1-16)"
        echo "  rebuilt:   $(wc -c < "$TMP/out/http-hello.wasm") bytes, sha256 $(sha256sum < "$TMP/out/http-hello.wasm" | cut -c1-16)"
        echo "  either the source/toolchain changed (then run guests/build.sh --update-example and commit)"
        echo "  or the toolchain is not the pinned one (run guests/install-toolchain.sh)"
    } >&2
    exit 1
    ;;
esac

build_command hello
build_command echo
build_command wagi-echo
build_command wagi-hello
build_command_component echo-component echo
build_http_component http-hello http-hello
build_http_component http-echo http-echo

for m in hello echo wagi-echo wagi-hello; do verify "$TMP/out/$m.wasm" module; done
for c in echo-component http-hello http-echo; do verify "$TMP/out/$c.wasm" component; done

chmod 644 "$TMP"/out/*.wasm
mkdir -p "$OUTDIR"
for f in "$TMP"/out/*.wasm; do
    dest="$OUTDIR/$(basename "$f")"
    cmp -s "$f" "$dest" 2>/dev/null || cp -p "$f" "$dest"
done
log "built into $OUTDIR:"
(cd "$TMP/out" && for f in *.wasm; do printf '  %-22s %8d bytes\n' "$f" "$(wc -c < "$f")"; done) >&2
