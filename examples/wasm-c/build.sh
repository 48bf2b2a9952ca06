#!/usr/bin/env bash
# Builds the two C modules of docs/wasm.md with clang's wasm32-wasi target and wasi-libc:
# multiply.wasm (a WASI command) from multiply.c, and multiply-fn.wasm (hkube's function ABI,
# a WASI reactor) from multiply-fn.c.
# Debian: apt-get install clang lld wasi-libc libclang-rt-14-dev-wasm32
set -euo pipefail
cd "$(dirname "$0")"
clang --target=wasm32-wasi -O2 -s -o multiply.wasm multiply.c
clang --target=wasm32-wasi -mexec-model=reactor -O2 -s -o multiply-fn.wasm multiply-fn.c
echo "built $(pwd)/multiply.wasm ($(wc -c < multiply.wasm) bytes) and multiply-fn.wasm ($(wc -c < multiply-fn.wasm) bytes)"
