#!/usr/bin/env bash
# The CNCF Distribution registry (distribution/distribution, what Docker Hub,
# GHCR and Harbor build on), built from the Go module proxy, for the CLI's
# push/pull tests against a real registry on loopback. Builds once into
# $WISP_CACHE/registry-$VERSION/bin (outside the clone) and prints that
# directory; later runs only print it.
set -euo pipefail
VERSION="${REGISTRY_VERSION:-v3.0.0}"
cache="${WISP_CACHE:-$HOME/.cache/wisp}/registry-$VERSION"
log() { printf 'install-registry: %s\n' "$*" >&2; }

if [[ -x "$cache/bin/registry" ]]; then
    echo "$cache/bin"
    exit 0
fi
go=$(command -v go || echo /usr/local/go/bin/go)
[[ -x "$go" ]] || { log "error: Go is needed to build the registry $VERSION"; exit 1; }
work="$cache/src"
rm -rf "$work" && mkdir -p "$work"
cd "$work"
# A wrapper module, as for containerd 2: `go install pkg@version` refuses
# modules with replace or exclude directives.
cat > tools.go <<'GO'
//go:build tools

package tools

import (
	_ "github.com/distribution/distribution/v3/cmd/registry"
)
GO
export GOTOOLCHAIN=local GOFLAGS=-mod=mod
"$go" mod init wisp/registry >/dev/null 2>&1
"$go" mod edit -require="github.com/distribution/distribution/v3@$VERSION"
log "building the registry $VERSION (about two minutes, once)"
"$go" mod tidy >/dev/null 2>&1
tmp="$cache/bin.tmp"
rm -rf "$tmp" && mkdir -p "$tmp"
CGO_ENABLED=0 "$go" build -trimpath -o "$tmp/registry" github.com/distribution/distribution/v3/cmd/registry
rm -rf "$cache/bin" && mv "$tmp" "$cache/bin"
echo "$cache/bin"
