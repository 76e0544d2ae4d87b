//! The benchmark tooling end to end: the ground-truth server and
//! `sparkhost bench` (no timing is asserted; figures go to BENCHMARKS.md).

use std::path::PathBuf;

use serde_json::Value;

use crate::{read_json, repo, sparkhost, text};

/// Runs `sparkhost bench` with `args` (plus the synthetic workload and a
/// private results root), asserts it succeeded, and returns its
/// `bench-<time>` directory and `bench.json`. The temporary directories live
/// as long as the returned guard.
fn bench(args: &[&str]) -> (tempfile::TempDir, PathBuf, Value) {
    let results = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let workload = repo().join("workloads/synthetic.wasm");
    let mut all = vec!["bench", "--workload", workload.to_str().unwrap()];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--results-root", results.path().to_str().unwrap()]);
    let out = sparkhost(&all, cache.path());
    assert!(out.status.success(), "{}", text(&out));
    let dir = std::fs::read_dir(results.path())
        .unwrap()
        .filter_map(Result::ok)
        .find(|e| e.file_name().to_string_lossy().starts_with("bench-"))
        .expect("a bench-<time> directory")
        .path();
    let json = read_json(&dir.join("bench.json"));
    (results, dir, json)
}

#[test]
fn bench_fidelity_matches_every_request_and_token_to_the_servers_truth() {
    let (_results, dir, bench) = bench(&[
        "fidelity",
        "capacity",
        "planning",
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
        "--rates",
        "100",
        "--capacity-duration",
        "300ms",
    ]);
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
    // The default run timed arrivals with kernel stamps; the application-clock
    // run reports its own read-path delay, the error its figures carry.
    assert!(
        row["chunks_sharing_a_read"]["median"].is_number(),
        "{row:#}"
    );
    for k in ["ttft_abs_p99_ms", "reported_read_path_delay_p99_ms"] {
        assert!(
            row["application_clock"][k]["median"].as_f64().unwrap() >= 0.0,
            "{k}: {row:#}"
        );
    }
    for (clock, want) in [("kernel", "kernel"), ("application", "application")] {
        let run = dir.join(format!("fidelity-{clock}-c4-r0"));
        let summary = read_json(&run.join("summary.json"));
        let budget = &summary["timing_error_budget"];
        // Stamping is switched on lazily by the kernel, so the very first
        // reads of a machine may be unstamped: then the run says "mixed".
        let got = budget["arrival_clock"].as_str().unwrap();
        assert!(
            got == want || (clock == "kernel" && got == "mixed"),
            "{budget:#}"
        );
        let stamped = budget["chunks_kernel_stamped"].as_u64().unwrap();
        assert!(stamped > 0 && stamped <= 40, "{budget:#}");
        assert_eq!(
            budget["read_path_delay_ms"]["count"].as_u64(),
            Some(stamped)
        );
        let config = read_json(&run.join("config.json"));
        assert_eq!(
            config["client_request_parameters"]["arrival_clock"], clock,
            "{config:#}"
        );
    }
    // Capacity: one rate, every request sent and none failed; the truth
    // server's ceiling is measured with wrk or says why it was skipped.
    let step = &bench["capacity"]["steps"][0];
    assert_eq!(step["errors"], 0, "{step:#}");
    assert!(
        step["achieved_rate"]["median"].as_f64().unwrap() > 0.0,
        "{step:#}"
    );
    let ceiling = &bench["capacity"]["truth_server_ceiling"];
    assert!(
        ceiling["requests_per_s"].as_f64().is_some_and(|r| r > 0.0)
            || ceiling["skipped"].is_string(),
        "{ceiling:#}"
    );
    let planned = bench["planning"][0]["requests_per_s"]["median"]
        .as_f64()
        .unwrap();
    assert!(planned > 0.0, "{bench:#}");
    assert!(bench["machine"]["cpus"].as_u64().unwrap() >= 1);
}

#[test]
fn bench_cost_sets_sparkhost_against_the_floor_on_the_same_streams() {
    // The floor fails the command unless it received every token
    // (4 streams × 2 rounds × 5), so success already says it streamed.
    let (_results, _, bench) = bench(&[
        "cost",
        "--cost-concurrency",
        "4",
        "--repeats",
        "1",
        "--rounds",
        "2",
        "--tokens",
        "5",
        "--ttft",
        "5ms",
        "--itl",
        "2ms",
    ]);
    let cost = &bench["cost"];
    assert_eq!(cost["concurrency"], 4, "{cost:#}");
    let median = |v: &Value| v["median"].as_f64().unwrap();
    let ours = median(&cost["cpu_s_per_1000_tokens_incl_startup"]);
    let floor = median(&cost["floor"]["cpu_s_per_1000_tokens"]);
    assert!(ours > 0.0 && floor > 0.0, "{cost:#}");
    assert!(
        (median(&cost["sparkhost_over_floor"]) - ours / floor).abs() < 1e-9,
        "{cost:#}"
    );
    // One read per token at least at these gaps, plus the response heads.
    assert!(median(&cost["floor"]["reads_per_token"]) >= 1.0, "{cost:#}");
    for k in [
        "first_send_after_start_ms_cold_cache",
        "first_send_after_start_ms_cached",
        "peak_rss_kib",
    ] {
        assert!(median(&cost[k]) > 0.0, "{k}: {cost:#}");
    }
}
