//! The benchmark tooling end to end: the ground-truth server and
//! `sparkhost bench` (no timing is asserted; figures go to BENCHMARKS.md).

use crate::{read_json, repo, sparkhost, text};

#[test]
fn bench_fidelity_matches_every_request_and_token_to_the_servers_truth() {
    let results = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let workload = repo().join("workloads/synthetic.wasm");
    let out = sparkhost(
        &[
            "bench",
            "fidelity",
            "planning",
            "--workload",
            workload.to_str().unwrap(),
            "--concurrency",
            "4",
            "--repeats",
            "1",
            "--tokens",
            "5",
            "--ttft",
            "5ms",
            "--itl",
            "2ms",
            "--planning-requests",
            "500",
            "--results-root",
            results.path().to_str().unwrap(),
        ],
        cache.path(),
    );
    assert!(out.status.success(), "{}", text(&out));
    let dir = std::fs::read_dir(results.path())
        .unwrap()
        .filter_map(Result::ok)
        .find(|e| e.file_name().to_string_lossy().starts_with("bench-"))
        .expect("a bench-<time> directory")
        .path();
    let bench = read_json(&dir.join("bench.json"));
    let row = &bench["fidelity"][0];
    assert_eq!(row["concurrency"], 4);
    // 4 streams × 2 rounds; every request matched to the server's own record.
    assert_eq!(row["ttft_samples"], 8, "{bench:#}");
    assert_eq!(row["itl_samples"], 8 * 4, "{bench:#}");
    for k in [
        "ttft_abs_p50_ms",
        "itl_abs_p99_ms",
        "server_lateness_p99_ms",
    ] {
        assert!(row[k]["median"].as_f64().unwrap() >= 0.0, "{k}: {row:#}");
    }
    let planned = bench["planning"][0]["requests_per_s"]["median"]
        .as_f64()
        .unwrap();
    assert!(planned > 0.0, "{bench:#}");
    assert!(bench["machine"]["cpus"].as_u64().unwrap() >= 1);
}
