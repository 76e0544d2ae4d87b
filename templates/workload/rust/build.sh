#!/bin/sh
# Builds {{name}}.wasm, a WebAssembly component (needs Rust >= 1.95 and its
# wasm32-wasip2 target: `rustup target add wasm32-wasip2`).
set -eu
cd "$(dirname "$0")"
if command -v rustup >/dev/null 2>&1 && ! rustup target list --installed | grep -qx wasm32-wasip2; then
    rustup target add wasm32-wasip2
fi
cargo build --release --target wasm32-wasip2
cp "${CARGO_TARGET_DIR:-target}/wasm32-wasip2/release/{{name}}.wasm" {{name}}.wasm
echo "built {{name}}.wasm"
