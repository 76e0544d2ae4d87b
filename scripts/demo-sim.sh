#!/usr/bin/env bash
# `make demo`: the product's point in a few minutes, with nothing but Rust.
# rehydrate_replay in B0 (GPU only), B1 (+ host) and B2 (+ host + disk)
# against sparkhost's SIMULATED engine in-process (`--endpoint sim:...`,
# DGX Spark / Llama 3.1 8B FP8 profile, tiers shrunk so the working set
# overflows the GPU and the host tier), then `sparkhost compare` B0→B1 and
# B0→B2, and the HTML reports. Every result says SIMULATED.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

sparkhost=target/release/sparkhost
root="${DEMO_RESULTS:-bench/results/demo-sim-$(date -u +%Y%m%dT%H%M%SZ)}"
mkdir -p "$root"

# 8 sessions with 4096-token prefixes, each seen twice (two turns: KVBM's
# disk filter lets them through), then 24 other prefixes push them out of
# the GPU (1024 blocks) and out of the host tier (2048 blocks); the disk
# tier (the profile's 64 GB) keeps them. The cache file goes in each run's
# directory (it must not be tmpfs: the disk tier uses O_DIRECT).
sim=(--sim-set gpu_num_blocks=1024 --sim-set cpu_num_blocks=2048 --sim-set max_model_len=16384)
workload=(-p populate-sessions=8 -p thrash-sessions=24 -p turns=2 -p prefix-tokens=4096
          -p concurrency=4 --max-tokens 16 --stream)

for tier in B0 B1 B2; do
  echo "== $tier =="
  "$sparkhost" run workloads/rehydrate_replay.wasm --endpoint sim:spark-llama31-8b-fp8 \
    --tier-mode "$tier" "${sim[@]}" "${workload[@]}" \
    --no-collector gpu --no-collector nvme \
    --results-root "$root" --run-id "$tier"
done

for t in B1 B2; do
  echo "== compare B0 → $t (replay phase) =="
  "$sparkhost" compare "$root/B0" "$root/$t" --group-by tier_mode --baseline B0 --treatment "$t" \
    --phase replay --out "$root/compare-B0-$t" --resamples 2000
done

cat <<MSG

demo: SIMULATED results (no model ran; latencies come from kvbm/README.md's model) in $root
  per run:   $root/B{0,1,2}/report.html   (report.md, summary.json, verdict.json)
  compared:  $root/compare-B0-B1/compare.html  $root/compare-B0-B2/compare.html
  look at:   the replay phase's TTFT, kvbm_onboard_blocks_d2d and the KV disk's reads in B2,
             and each verdict's signals (ssd_rehydrate_signal only in B2). The KV disk here is
             whatever holds $root; when other work shares it, the verdict says so
             (IO_WITHOUT_KVBM_DELTAS: disk I/O KVBM's counters do not explain).
MSG
