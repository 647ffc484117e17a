#!/usr/bin/env bash
# What the containerd and CRI test tiers (crates/shim/tests/{containerd,cri})
# need, from Debian: containerd 1.6 + ctr, runc, the CNI plugins (the CRI
# tier's bridge network), busybox-static (the Linux test image), iproute2
# (test network namespaces), protoc, and gcc + libc6-dev (the CRI tier
# compiles a static pause binary).
# Idempotent: installs only what is missing. The tests run a private
# containerd of their own and never touch a system one.
set -euo pipefail
log() { printf 'install-containerd: %s\n' "$*" >&2; }

bash "$(dirname "${BASH_SOURCE[0]}")/apt-install.sh" \
    containerd runc containernetworking-plugins busybox-static iproute2 protobuf-compiler \
    gcc libc6-dev
for bin in containerd ctr runc busybox ip cc; do
    command -v "$bin" >/dev/null || { log "error: $bin not found after install"; exit 1; }
done
