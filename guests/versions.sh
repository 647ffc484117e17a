# Sourced by install-toolchain.sh and build.sh: pinned tool versions and the
# cache locations (each can be overridden from the environment).
WASMTIME_VERSION="48.0.8"            # adapters and wasi WIT must match the host
WASI_VERSION="0.2.12"                # what wasmtime-wasi-http 48.0.8's wit/ holds
WASM_TOOLS_VERSION="1.262.0"
WASM_TOOLS_PYPI_VERSION="1.262.0.0"
WIT_BINDGEN_VERSION="0.63.0"

CARGO_BIN="${CARGO_HOME:-$HOME/.cargo}/bin"
WISP_GUEST_CACHE="${WISP_GUEST_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/wisp}"
WISP_WASM_TOOLS_VENV="${WISP_WASM_TOOLS_VENV:-$WISP_GUEST_CACHE/wasm-tools-$WASM_TOOLS_VERSION}"
WISP_ADAPTER_DIR="${WISP_ADAPTER_DIR:-$WISP_GUEST_CACHE/adapters-$WASMTIME_VERSION}"
WISP_WASI_WIT_DIR="${WISP_WASI_WIT_DIR:-$WISP_GUEST_CACHE/wasi-http-wit-$WASMTIME_VERSION}"
