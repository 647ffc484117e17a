#!/usr/bin/env bash
# Rebuilds guests/c/http-hello.c and checks examples/hello.wasm is byte-identical.
exec bash "$(dirname "${BASH_SOURCE[0]}")/build.sh" --check-example
