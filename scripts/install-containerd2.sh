#!/usr/bin/env bash
# containerd 2.x (and its ctr) built from the Go module proxy, for the
# containerd tier's 2.x tests: on 2.x, unpacking skips raw Wasm layers, so
# `ctr run` takes the runwasi and Spin image shapes directly (1.6.20 cannot).
# Builds once into $WISP_CACHE/containerd-$VERSION/bin (outside the clone) and
# prints that directory; later runs only print it.
set -euo pipefail
VERSION="${CONTAINERD2_VERSION:-v2.1.4}"
cache="${WISP_CACHE:-$HOME/.cache/wisp}/containerd-$VERSION"
dir="$(dirname "${BASH_SOURCE[0]}")"
if [[ ! -x "$cache/bin/containerd" || ! -x "$cache/bin/ctr" ]]; then
    # containerd links with cgo.
    bash "$dir/apt-install.sh" gcc libc6-dev
fi
GO_BUILD_TAGS="no_btrfs no_devmapper no_zfs" exec bash "$dir/go-build.sh" "$cache" \
    github.com/containerd/containerd/v2 "$VERSION" \
    containerd=github.com/containerd/containerd/v2/cmd/containerd \
    ctr=github.com/containerd/containerd/v2/cmd/ctr
