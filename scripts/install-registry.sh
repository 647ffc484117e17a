#!/usr/bin/env bash
# The CNCF Distribution registry (distribution/distribution, what Docker Hub,
# GHCR and Harbor build on), built from the Go module proxy, for the CLI's
# push/pull tests against a real registry on loopback. Builds once into
# $WISP_CACHE/registry-$VERSION/bin (outside the clone) and prints that
# directory; later runs only print it.
set -euo pipefail
VERSION="${REGISTRY_VERSION:-v3.0.0}"
cache="${WISP_CACHE:-$HOME/.cache/wisp}/registry-$VERSION"
CGO_ENABLED=0 exec bash "$(dirname "${BASH_SOURCE[0]}")/go-build.sh" "$cache" \
    github.com/distribution/distribution/v3 "$VERSION" \
    registry=github.com/distribution/distribution/v3/cmd/registry
