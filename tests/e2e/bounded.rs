//! Answers without end or without measure, through the real `sparkhost run`
//! against the fault server: each request fails as its own kind at a cap or
//! at the request deadline, its neighbours are measured, every request the
//! server answered has its row, and the client's peak memory stays bounded
//! by the caps, not by what the server sent.

use std::path::Path;

use serde_json::Value;

use super::faults::{
    Behaviour, Dirs, FakeConfig, FakeServer, PEAK_RSS_BOUND, expected_kind, peak_rss, rows_of,
};
use super::{read_json, sparkhost, synthetic, text};

/// `sparkhost run` of `script` (one request per behaviour, in order) with
/// request timeout `timeout`; returns the server, the run directory's
/// rows, the summary, the exit code and the peak RSS.
fn run_script(
    script: &[Behaviour],
    timeout: &str,
    extra: &[&str],
) -> (FakeServer, Dirs, Vec<Value>, Option<i32>, u64) {
    let server = FakeServer::start(FakeConfig {
        script: script.to_vec(),
        ..FakeConfig::default()
    });
    let dirs = Dirs::new();
    let wasm = synthetic();
    let root = dirs.root.path().display().to_string();
    let endpoint = server.endpoint();
    let requests = script.len().to_string();
    let mut args = vec![
        "run",
        wasm.to_str().expect("utf-8 path"),
        "--endpoint",
        &endpoint,
        "--concurrency",
        "1",
        "--requests",
        &requests,
        "--warmup",
        "0",
        "--max-tokens",
        "8",
        "--timeout",
        timeout,
        "--results-root",
        &root,
        "--run-id",
        "r1",
        "--param",
        "set=short",
        "--param",
        "short-range=20:40",
        "--model-resolve-timeout",
        "5s",
        "--kv-mode",
        "off",
        "--max-error-rate",
        "1",
    ];
    args.extend_from_slice(extra);
    let out = sparkhost(&args, dirs.cache.path());
    let rows = rows_of(&dirs.run_dir());
    let rss = peak_rss(&dirs.run_dir());
    assert_eq!(
        server.completions().len(),
        script.len(),
        "the server saw every request: {}",
        text(&out)
    );
    assert_eq!(
        rows.len(),
        script.len(),
        "one row per answered request: {}",
        text(&out)
    );
    (server, dirs, rows, out.status.code(), rss)
}

/// Each row has its behaviour's error kind (rows are in send order at
/// concurrency 1).
fn check_kinds(script: &[Behaviour], rows: &[Value]) {
    for (i, b) in script.iter().enumerate() {
        let id = format!("main-{i:05}");
        let row = rows
            .iter()
            .find(|r| r["prompt_id"] == id.as_str())
            .unwrap_or_else(|| panic!("no row for {id}"));
        assert_eq!(
            row["error_kind"].as_str(),
            expected_kind(*b),
            "{id} ({b:?}): {row:#}"
        );
        if *b == Behaviour::Normal {
            assert_eq!(row["output_tokens"], 8, "{id}: {row:#}");
        }
    }
}

fn summary(dir: &Path) -> Value {
    read_json(&dir.join("summary.json"))
}

#[test]
fn endless_and_giant_streams_end_at_their_caps_with_bounded_memory() {
    use Behaviour::*;
    let script = [
        Normal,
        EndlessSse,
        Normal,
        GiantEvent,
        Normal,
        EndlessHeaders,
        Normal,
        Gzip,
        Normal,
    ];
    // A timeout far past what the caps need: the caps, not the deadline,
    // must end these.
    let (server, dirs, rows, code, rss) = run_script(&script, "60s", &["--stream", "--no-report"]);
    assert_eq!(code, Some(0), "failures are per-request data");
    check_kinds(&script, &rows);
    let endless = &rows[1];
    assert!(
        endless["error"]
            .as_str()
            .is_some_and(|e| e.contains("content chunks")),
        "{endless:#}"
    );
    // What came before the cap is kept.
    assert_eq!(
        endless["chunk_offsets_ms"].as_array().map(Vec::len),
        Some(sparkhost::limits::MAX_RESPONSE_CHUNKS)
    );
    assert!(
        rows[3]["error"]
            .as_str()
            .is_some_and(|e| e.contains("SSE event")),
        "{:#}",
        rows[3]
    );
    assert!(
        rows[7]["error"]
            .as_str()
            .is_some_and(|e| e.contains("Content-Encoding: gzip")),
        "{:#}",
        rows[7]
    );
    let main = &summary(&dirs.run_dir())["phase_summaries"][0];
    assert_eq!(main["errors_by_kind"]["response_too_large"], 3, "{main:#}");
    // The server sent more than the client kept: the flood was real.
    assert!(
        server.completion_bytes() > 32 << 20,
        "{}",
        server.completion_bytes()
    );
    eprintln!("peak RSS {} MiB", rss >> 20);
    assert!(rss < PEAK_RSS_BOUND, "peak RSS {} MiB", rss >> 20);
}

#[test]
fn a_giant_unary_body_ends_at_the_byte_cap_and_the_flag_moves_it() {
    use Behaviour::*;
    let script = [Normal, GiantUnary, Normal, Gzip, Normal];
    let (_server, _dirs, rows, code, rss) = run_script(&script, "60s", &["--no-report"]);
    assert_eq!(code, Some(0));
    check_kinds(&script, &rows);
    assert!(
        rows[1]["error"]
            .as_str()
            .is_some_and(|e| e.contains(&format!("{} bytes", 64 << 20))),
        "{:#}",
        rows[1]
    );
    eprintln!("peak RSS {} MiB", rss >> 20);
    assert!(rss < PEAK_RSS_BOUND, "peak RSS {} MiB", rss >> 20);

    // A smaller cap: normal answers still fit, the giant one ends sooner.
    let (_server, dirs, rows, code, _) = run_script(
        &script,
        "60s",
        &["--max-response-bytes", "64KiB", "--no-report"],
    );
    assert_eq!(code, Some(0));
    check_kinds(&script, &rows);
    assert!(
        rows[1]["error"]
            .as_str()
            .is_some_and(|e| e.contains("65536 bytes")),
        "{:#}",
        rows[1]
    );
    let config = read_json(&dirs.run_dir().join("config.json"));
    assert_eq!(
        config["client_request_parameters"]["max_response_bytes"], 65536,
        "{config:#}"
    );
}

#[test]
fn slow_drip_heads_and_bodies_end_at_the_request_deadline() {
    use Behaviour::*;
    let script = [Normal, SlowHeaders, Normal, SlowBody, Normal];
    let (_server, _dirs, rows, code, rss) = run_script(&script, "1s", &["--stream", "--no-report"]);
    assert_eq!(code, Some(0));
    check_kinds(&script, &rows);
    for i in [1, 3] {
        // Reported, not asserted: how far past the deadline each ended.
        eprintln!("{:?}: latency {} ms", script[i], rows[i]["latency_ms"]);
    }
    eprintln!("peak RSS {} MiB", rss >> 20);
    assert!(rss < PEAK_RSS_BOUND, "peak RSS {} MiB", rss >> 20);
}

#[test]
fn out_of_range_response_caps_are_refused() {
    let dirs = Dirs::new();
    for bad in ["0", "1000", "3GiB", "lots"] {
        let wasm = synthetic();
        let out = sparkhost(
            &["run", wasm.to_str().unwrap(), "--max-response-bytes", bad],
            dirs.cache.path(),
        );
        assert_eq!(out.status.code(), Some(1), "{bad}: {}", text(&out));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("--max-response-bytes"),
            "{bad}: {}",
            text(&out)
        );
    }
}

/// A streamed run answered with one JSON body is measured as unary (no
/// TTFT claimed) and says so in `verdict.json` and the report; a TTFT bound
/// on a run that did not stream is not applicable, not missed.
#[test]
fn unary_answers_to_a_stream_are_flagged_and_ttft_slos_on_unary_runs_do_not_apply() {
    use Behaviour::*;
    let script = [Normal, Unary, Normal];
    let (_server, dirs, rows, code, _) = run_script(&script, "10s", &["--stream"]);
    assert_eq!(code, Some(0));
    check_kinds(&script, &rows);
    assert_eq!(rows[1]["ok"], true);
    assert_eq!(rows[1]["ttft_ms"], Value::Null, "{:#}", rows[1]);
    assert!(rows[0]["ttft_ms"].is_f64());
    let verdict = read_json(&dirs.run_dir().join("verdict.json"));
    assert!(
        verdict["reason_codes"]
            .as_array()
            .unwrap()
            .contains(&Value::from("STREAM_ANSWERED_UNARY")),
        "{verdict:#}"
    );
    assert_eq!(verdict["decision_grade"], false);
    assert!(
        verdict["details"].to_string().contains("1 of 3 requests"),
        "{verdict:#}"
    );
    let report = std::fs::read_to_string(dirs.run_dir().join("report.md")).unwrap();
    assert!(report.contains("STREAM_ANSWERED_UNARY"), "{report}");

    let script = [Normal, Normal];
    let (_server, dirs, _rows, code, _) =
        run_script(&script, "10s", &["--slo", "ttft_p95=100ms,e2e_p50=10s"]);
    assert_eq!(code, Some(0));
    let s = summary(&dirs.run_dir());
    let checks = &s["goodput"]["checks"];
    assert_eq!(checks[0]["name"], "ttft_p95", "{s:#}");
    assert_eq!(checks[0]["applicable"], false, "{s:#}");
    assert_eq!(checks[1]["applicable"], true, "{s:#}");
    assert_eq!(s["goodput"]["slo_met"], true, "{s:#}");
    assert_eq!(s["goodput"]["good_requests"], 2, "{s:#}");
    let report = std::fs::read_to_string(dirs.run_dir().join("report.md")).unwrap();
    assert!(report.contains("Not applicable"), "{report}");
}
