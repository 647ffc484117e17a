#!/usr/bin/env bash
# Kubernetes (kube-apiserver, kube-controller-manager, kube-scheduler, kubelet,
# kubectl) built from upstream sources through the Go module proxy, for the
# cluster tier. Debian ships no Kubernetes server.
#
# Builds once into $WISP_CACHE/kubernetes-$VERSION/bin (outside the clone) and
# prints that directory; later runs only print it. The first build takes
# 20-35 minutes on 2 cores and about 3 GB of Go caches.
#
# k8s.io/kubernetes requires its ~30 staging modules at v0.0.0 and replaces
# them with ./staging/..., which a dependent module cannot use
# (kubernetes#79384): a wrapper module replaces each with its published
# v0.Y.Z instead.
set -euo pipefail
VERSION="${KUBERNETES_VERSION:-v1.34.4}"
cache="${WISP_CACHE:-$HOME/.cache/wisp}/kubernetes-$VERSION"
bins=(kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl)
log() { printf 'build-kubernetes: %s\n' "$*" >&2; }

have_all() {
    for b in "${bins[@]}"; do [[ -x "$cache/bin/$b" ]] || return 1; done
}
if have_all; then
    echo "$cache/bin"
    exit 0
fi
go=$(command -v go || echo /usr/local/go/bin/go)
[[ -x "$go" ]] || { log "error: Go is needed to build Kubernetes $VERSION"; exit 1; }
bash "$(dirname "${BASH_SOURCE[0]}")/apt-install.sh" gcc libc6-dev
export GOTOOLCHAIN=local GOFLAGS=-mod=mod

# 1. The staging modules, from that version's own go.mod.
gomod=$(cd / && "$go" mod download -json "k8s.io/kubernetes@$VERSION" |
    sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",*$/\1/p')
[[ -f "$gomod" ]] || { log "error: no go.mod for k8s.io/kubernetes@$VERSION"; exit 1; }
mapfile -t staging < <(sed -n 's#^[[:space:]]*\(k8s.io/[^ ]*\) => ./staging/src/.*#\1#p' "$gomod" | sort -u)
(( ${#staging[@]} > 10 )) || { log "error: found ${#staging[@]} staging modules in $gomod"; exit 1; }
minor=${VERSION#v1.}
staging_version="v0.$minor"

# 2. The wrapper module.
work="$cache/src"
rm -rf "$work" && mkdir -p "$work"
cd "$work"
"$go" mod init wisp/kubernetes >/dev/null 2>&1
"$go" mod edit -require="k8s.io/kubernetes@$VERSION"
for m in "${staging[@]}"; do
    "$go" mod edit -replace="$m=$m@$staging_version"
done
{
    printf '//go:build tools\n\npackage tools\n\nimport (\n'
    for b in "${bins[@]}"; do printf '\t_ "k8s.io/kubernetes/cmd/%s"\n' "$b"; done
    printf ')\n'
} > tools.go
log "resolving modules for Kubernetes $VERSION"
"$go" mod tidy >/dev/null

# 3. The binaries, version-stamped (unstamped ones say v0.0.0-master and fail
# version-skew checks).
major=1
minor_only=${minor%%.*}
pkg=k8s.io/component-base/version
ldflags="-s -w -X $pkg.gitVersion=$VERSION -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor_only"
ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
ldflags+=" -X k8s.io/client-go/pkg/version.gitVersion=$VERSION"
tmp="$cache/bin.tmp"
rm -rf "$tmp" && mkdir -p "$tmp"
for b in "${bins[@]}"; do
    log "building $b $VERSION (once)"
    CGO_ENABLED=0 "$go" build -trimpath -ldflags "$ldflags" -o "$tmp/$b" "k8s.io/kubernetes/cmd/$b"
done
rm -rf "$cache/bin" && mv "$tmp" "$cache/bin"
echo "$cache/bin"
