#!/bin/sh
# Builds {{name}}.wasm with componentize-js (needs node and npm; the
# versions are pinned in package-lock.json). `-d stdio random clocks http
# fetch-event`: a component with no WASI imports, as sparkhost links none.
set -eu
cd "$(dirname "$0")"
[ -x node_modules/.bin/componentize-js ] || npm ci --no-audit --no-fund
node_modules/.bin/componentize-js --wit wit/workload@0.1.0 -n workload \
    -d stdio random clocks http fetch-event -o {{name}}.tmp.wasm src/app.js
mv {{name}}.tmp.wasm {{name}}.wasm
echo "built {{name}}.wasm"
