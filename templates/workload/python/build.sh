#!/bin/sh
# Builds {{name}}.wasm with componentize-py (needs python3 with venv; the
# version is pinned in requirements.txt and installed into .venv).
set -eu
cd "$(dirname "$0")"
if [ ! -x .venv/bin/componentize-py ]; then
    python3 -m venv .venv
    .venv/bin/pip install --quiet -r requirements.txt
fi
.venv/bin/componentize-py -d wit/workload@0.1.0 -w workload componentize \
    -p src -p lib app -o {{name}}.tmp.wasm
mv {{name}}.tmp.wasm {{name}}.wasm
echo "built {{name}}.wasm"
