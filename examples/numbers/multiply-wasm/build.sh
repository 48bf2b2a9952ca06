#!/usr/bin/env bash
# Builds multiply.wasm beside this script: the WASI command hkube's `multiply-wasm` runs.
# Needs the target once: rustup target add wasm32-wasip1
set -euo pipefail
cd "$(dirname "$0")"
# Its own target folder, whatever CARGO_TARGET_DIR the caller has set.
cargo build --release --locked --target wasm32-wasip1 --target-dir target
cp target/wasm32-wasip1/release/multiply.wasm multiply.wasm
echo "built $(pwd)/multiply.wasm ($(wc -c < multiply.wasm) bytes)"
