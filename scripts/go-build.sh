#!/usr/bin/env bash
# Builds commands of one Go module, fetched from the Go module proxy, into
# CACHE/bin (outside the clone) once, and prints that directory; later runs
# only print it. For the tools the tests need that Debian does not package
# (install-containerd2.sh, install-registry.sh).
#
#   bash scripts/go-build.sh CACHE MODULE VERSION NAME=PACKAGE...
#
# GO_BUILD_TAGS: build tags for every package. CGO_ENABLED is Go's own.
set -euo pipefail
[[ $# -ge 4 ]] || { echo "usage: $0 CACHE MODULE VERSION NAME=PACKAGE..." >&2; exit 2; }
cache=$1 module=$2 version=$3
shift 3
log() { printf 'go-build: %s\n' "$*" >&2; }

names=() packages=()
for spec in "$@"; do
    names+=("${spec%%=*}")
    packages+=("${spec#*=}")
done
built=1
for name in "${names[@]}"; do
    [[ -x "$cache/bin/$name" ]] || built=0
done
if [[ $built == 1 ]]; then
    echo "$cache/bin"
    exit 0
fi

go=$(command -v go || echo /usr/local/go/bin/go)
[[ -x "$go" ]] || { log "error: Go is needed to build $module $version"; exit 1; }
work="$cache/src"
rm -rf "$work" && mkdir -p "$work"
cd "$work"
# A wrapper module requiring the one to build: `go install pkg@version`
# refuses modules with replace or exclude directives (containerd's has them).
{
    printf '//go:build tools\n\npackage tools\n\nimport (\n'
    printf '\t_ "%s"\n' "${packages[@]}"
    printf ')\n'
} > tools.go
export GOTOOLCHAIN=local GOFLAGS=-mod=mod
"$go" mod init wisp/tools >/dev/null 2>&1
"$go" mod edit -require="$module@$version"
log "building ${names[*]} from $module $version (a few minutes, once)"
"$go" mod tidy >/dev/null 2>&1
tmp="$cache/bin.tmp"
rm -rf "$tmp" && mkdir -p "$tmp"
for i in "${!names[@]}"; do
    "$go" build -trimpath -tags "${GO_BUILD_TAGS:-}" -o "$tmp/${names[$i]}" "${packages[$i]}"
done
rm -rf "$cache/bin" && mv "$tmp" "$cache/bin"
echo "$cache/bin"
