#!/usr/bin/env bash
# The project's test command: what the README says and what CI runs (.ci/run).
# On a fresh machine it installs what the tests need (idempotently, caches
# outside the repository), builds the test guests, then runs the gates:
# rustfmt, clippy -D warnings, the layer check (scripts/check-layers.py), the
# example's reproducibility, and every test.
#
#   bash scripts/test.sh            everything
#   SKIP_LINT=1 bash scripts/test.sh   tests only
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
log() { printf '\n== %s\n' "$*" >&2; }

# --- what the tests need --------------------------------------------------------
log "toolchain for test guests (apt, wasm-tools, wit-bindgen, adapters)"
bash guests/install-toolchain.sh

log "containerd, runc and friends for the shim's containerd tier"
bash scripts/install-containerd.sh
WISP_CONTAINERD2_BIN="$(bash scripts/install-containerd2.sh)"
export WISP_CONTAINERD2_BIN

log "the Distribution registry for the CLI's push/pull tests"
WISP_REGISTRY_BIN="$(bash scripts/install-registry.sh)"
export WISP_REGISTRY_BIN

log "Kubernetes from upstream sources, etcd and openssl for the cluster tier"
bash scripts/apt-install.sh etcd-server openssl
# The first build takes 30-45 minutes on 2 cores; later runs reuse it.
WISP_K8S_BIN="$(bash scripts/build-kubernetes.sh)"
export WISP_K8S_BIN

if ! rustup component list --installed 2>/dev/null | grep -q '^clippy'; then
    rustup component add clippy rustfmt
fi

# --- guests ---------------------------------------------------------------------
target_dir="${CARGO_TARGET_DIR:-$ROOT/target}"
export WISP_GUESTS_DIR="${WISP_GUESTS_DIR:-$target_dir/guests}"
log "building test guests into $WISP_GUESTS_DIR"
bash guests/build.sh "$WISP_GUESTS_DIR"
log "checking examples/hello.wasm is reproducible from guests/"
bash guests/build.sh --check-example

# --- gates ----------------------------------------------------------------------
if [ -z "${SKIP_LINT:-}" ]; then
    log "rustfmt"
    cargo fmt --all -- --check
    log "clippy"
    cargo clippy --workspace --all-targets --locked -- -D warnings
    log "layers: no import cycle in any crate, no source file over 800 lines"
    python3 scripts/check-layers.py
fi

log "tests"
results="$(mktemp)"
trap 'rm -f "$results"' EXIT
set +e
# The tests spawn servers and guests with deadlines; two test threads per core
# keep them from starving each other on small machines. --no-fail-fast: a
# failing binary does not hide the tiers after it (the cluster tier is last).
cargo test --workspace --locked --no-fail-fast -- --test-threads="${TEST_THREADS:-4}" 2>&1 | tee "$results"
status=${PIPESTATUS[0]}
set -e
# One closing line for all test binaries (cargo prints one per binary, the last
# often being an empty doc-test run), and the name of every failed test.
awk '/^test result:/ { p += $4; f += $6; i += $8 }
     END { printf "tests: %d passed, %d failed, %d skipped\n", p, f, i }' "$results"
grep -E '^test .* \.\.\. FAILED$' "$results" | sed -E 's/^test (.*) \.\.\. FAILED$/failed: \1/' || true
exit "$status"
