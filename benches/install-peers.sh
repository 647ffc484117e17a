#!/usr/bin/env bash
# Installs the peers the HTTP benchmarks compare against: `wasmtime` (the CLI, for
# `wasmtime serve`) at the wasmtime version Wisp embeds. Idempotent: does nothing
# when `wasmtime --version` already reports that version. Benchmarks only; CI does
# not run this. Takes 15-25 minutes on 2 cores.
#
# Also expected on PATH (from the distribution): wrk, curl. E.g. on Debian:
#   apt-get install wrk curl
set -euo pipefail

WASMTIME_VERSION=48.0.8

if command -v wasmtime >/dev/null 2>&1 &&
    wasmtime --version 2>/dev/null | grep -q "wasmtime ${WASMTIME_VERSION}\b"; then
    echo "wasmtime ${WASMTIME_VERSION} already installed: $(command -v wasmtime)"
else
    echo "installing wasmtime-cli ${WASMTIME_VERSION} (cargo install; slow)..."
    nice -n 10 cargo install wasmtime-cli --version "${WASMTIME_VERSION}" --locked
fi

for tool in wrk curl; do
    command -v "$tool" >/dev/null 2>&1 || echo "note: \`$tool\` is not on PATH; benches/http-load.sh needs it" >&2
done
