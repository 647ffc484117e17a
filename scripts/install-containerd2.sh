#!/usr/bin/env bash
# containerd 2.x (and its ctr) built from the Go module proxy, for the
# containerd tier's 2.x tests: on 2.x, unpacking skips raw Wasm layers, so
# `ctr run` takes the runwasi and Spin image shapes directly (1.6.20 cannot).
# Builds once into $WISP_CACHE/containerd-$VERSION/bin (outside the clone) and
# prints that directory; later runs only print it.
set -euo pipefail
VERSION="${CONTAINERD2_VERSION:-v2.1.4}"
cache="${WISP_CACHE:-$HOME/.cache/wisp}/containerd-$VERSION"
log() { printf 'install-containerd2: %s\n' "$*" >&2; }

if [[ -x "$cache/bin/containerd" && -x "$cache/bin/ctr" ]]; then
    echo "$cache/bin"
    exit 0
fi
go=$(command -v go || echo /usr/local/go/bin/go)
[[ -x "$go" ]] || { log "error: Go is needed to build containerd $VERSION"; exit 1; }
bash "$(dirname "${BASH_SOURCE[0]}")/apt-install.sh" gcc libc6-dev
work="$cache/src"
rm -rf "$work" && mkdir -p "$work"
cd "$work"
# A wrapper module: containerd's own go.mod has exclude directives, which
# `go install pkg@version` refuses.
cat > tools.go <<'GO'
//go:build tools

package tools

import (
	_ "github.com/containerd/containerd/v2/cmd/containerd"
	_ "github.com/containerd/containerd/v2/cmd/ctr"
)
GO
export GOTOOLCHAIN=local GOFLAGS=-mod=mod
"$go" mod init wisp/containerd2 >/dev/null 2>&1
"$go" mod edit -require="github.com/containerd/containerd/v2@$VERSION"
log "building containerd $VERSION (a few minutes, once)"
"$go" mod tidy >/dev/null 2>&1
tmp="$cache/bin.tmp"
rm -rf "$tmp" && mkdir -p "$tmp"
"$go" build -trimpath -tags "no_btrfs no_devmapper no_zfs" -o "$tmp/containerd" github.com/containerd/containerd/v2/cmd/containerd
"$go" build -trimpath -o "$tmp/ctr" github.com/containerd/containerd/v2/cmd/ctr
rm -rf "$cache/bin" && mv "$tmp" "$cache/bin"
echo "$cache/bin"
