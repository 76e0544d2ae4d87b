#!/usr/bin/env bash
# `make demo-dynamo`: the real Dynamo frontend + mocker on loopback, the
# synthetic workload against it, the summary printed. (`make demo` is the
# Rust-only B0/B1/B2 comparison on the simulated engine, scripts/demo-sim.sh.)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

sparkhost=target/release/sparkhost
export DYNAMO_STATE_DIR="${DYNAMO_STATE_DIR:-target/dynamo-stack-demo}"
export MOCKER_ARGS="${MOCKER_ARGS:---max-model-len 8192}"
port="${DYNAMO_HTTP_PORT:-8000}"
endpoint="http://127.0.0.1:$port"

if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
  echo "demo: something already listens on 127.0.0.1:$port; stop it or set DYNAMO_HTTP_PORT" >&2
  exit 1
fi

trap 'scripts/dynamo/stack.sh stop >/dev/null 2>&1 || true' EXIT
scripts/dynamo/stack.sh start
"$sparkhost" wait-ready --endpoint "$endpoint" --timeout 120s
"$sparkhost" smoke --endpoint "$endpoint"
"$sparkhost" inspect workloads/synthetic.wasm
"$sparkhost" run workloads/synthetic.wasm --endpoint "$endpoint" \
  --tokenizer target/dynamo-model/tiny-llama/tokenizer.json \
  --param set=mixed --param long-range=2048:6000 \
  --concurrency 8 --requests 64 --warmup 8 --max-tokens 64 --stream \
  --kv-mode off --run-id "demo-$(date -u +%Y%m%dT%H%M%SZ)"
