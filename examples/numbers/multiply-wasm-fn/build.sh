#!/usr/bin/env bash
# Builds multiply-fn.wasm beside this script: the function-ABI module hkube's
# `multiply-wasm-fn` runs. Needs the target once: rustup target add wasm32-wasip1
set -euo pipefail
cd "$(dirname "$0")"
# Its own target folder, whatever CARGO_TARGET_DIR the caller has set.
cargo build --release --locked --target wasm32-wasip1 --target-dir target
cp target/wasm32-wasip1/release/multiply_fn.wasm multiply-fn.wasm
echo "built $(pwd)/multiply-fn.wasm ($(wc -c < multiply-fn.wasm) bytes)"
