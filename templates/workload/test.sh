#!/bin/sh
# Runs {{name}}.wasm (build it first: ./build.sh) with `sparkhost run` against
# sparkhost's in-process SIMULATED engine and checks the run: exit 0 (a valid
# run), every planned request sent, every one answered without an error.
# sparkhost comes from PATH, or SPARKHOST=/path/to/sparkhost.
set -eu
cd "$(dirname "$0")"
sparkhost="${SPARKHOST:-sparkhost}"
if ! command -v "$sparkhost" >/dev/null 2>&1; then
    echo "test.sh: no sparkhost: put it on PATH or set SPARKHOST=/path/to/sparkhost" >&2
    exit 1
fi
if [ ! -f {{name}}.wasm ]; then
    echo "test.sh: {{name}}.wasm is missing: run ./build.sh first" >&2
    exit 1
fi
root=target/test-runs
id="test-$(date -u +%Y%m%dT%H%M%SZ)-$$"
"$sparkhost" run {{name}}.wasm --endpoint sim:tiny \
    {{test_args}} \
    --kv-mode off --no-telemetry --no-report --quiet \
    --results-root "$root" --run-id "$id"
dir="$root/$id"
planned=$(wc -l < "$dir/request_manifest.jsonl")
rows=$(wc -l < "$dir/requests.jsonl")
ok=$(grep -c '"ok":true' "$dir/requests.jsonl" || true)
if [ "$planned" -eq 0 ] || [ "$rows" -ne "$planned" ] || [ "$ok" -ne "$rows" ]; then
    echo "test.sh: FAILED: $planned requests planned, $rows sent, $ok answered without an error ($dir)" >&2
    exit 1
fi
echo "test.sh: ok: $rows requests planned, sent and answered ($dir)"
