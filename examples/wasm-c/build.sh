#!/usr/bin/env bash
# Builds multiply.wasm from multiply.c with clang's wasm32-wasi target and wasi-libc.
# Debian: apt-get install clang lld wasi-libc libclang-rt-14-dev-wasm32
set -euo pipefail
cd "$(dirname "$0")"
clang --target=wasm32-wasi -O2 -s -o multiply.wasm multiply.c
echo "built $(pwd)/multiply.wasm ($(wc -c < multiply.wasm) bytes)"
