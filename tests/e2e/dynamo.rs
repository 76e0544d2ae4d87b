//! Against the real Dynamo 1.6.1 frontend + mocker engine, started per test on
//! loopback ports and stopped when the test's `DynamoStack` drops.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::support::dynamo::{DynamoStack, http_get};
use crate::{
    Dirs, RunCmd, dirs, phase, read_json, read_jsonl, sparkhost, start_stack, synthetic, text,
    tokenizer,
};

/// Runs the synthetic workload; returns the run directory.
fn run(stack: &DynamoStack, d: &Dirs, run_id: &str, extra: &[&str], expect_exit: i32) -> PathBuf {
    RunCmd::new(&synthetic(), &stack.endpoint, d.results.path(), run_id)
        .args(extra)
        .expect_exit(stack, d.cache.path(), expect_exit)
}

fn rows(dir: &Path) -> Vec<Value> {
    read_jsonl(&dir.join("requests.jsonl"))
}

/// Sum of every series of `name` in a Prometheus text exposition.
fn prom_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let metric = series.split('{').next()?;
            (metric == name).then(|| value.parse::<f64>().ok())?
        })
        .sum()
}

#[test]
fn completions_and_chat_streamed_and_unary_with_model_discovery() {
    let stack = start_stack(&[]);
    let d = dirs();
    let wait = sparkhost(
        &[
            "wait-ready",
            "--endpoint",
            &stack.endpoint,
            "--timeout",
            "30s",
        ],
        d.cache.path(),
    );
    assert!(wait.status.success(), "{}", text(&wait));
    assert!(
        String::from_utf8_lossy(&wait.stdout).contains(&stack.model),
        "{}",
        text(&wait)
    );
    let smoke = sparkhost(&["smoke", "--endpoint", &stack.endpoint], d.cache.path());
    assert!(smoke.status.success(), "{}", text(&smoke));

    let common = [
        "--requests",
        "3",
        "--warmup",
        "1",
        "--max-tokens",
        "12",
        "--concurrency",
        "2",
        "--param",
        "set=short",
        "--param",
        "short-range=64:128",
        "--param",
        "ignore-eos=true",
    ];
    for (api, stream) in [
        ("completions", true),
        ("completions", false),
        ("chat", true),
        ("chat", false),
    ] {
        let id = format!("{api}-{stream}");
        let mut extra: Vec<&str> = common.to_vec();
        let api_param = format!("api={api}");
        extra.extend(["--param", &api_param]);
        if stream {
            extra.push("--stream");
        }
        let dir = run(&stack, &d, &id, &extra, 0);
        let summary = read_json(&dir.join("summary.json"));
        assert_eq!(summary["run_valid"], true, "{id}: {summary:#}");
        assert_eq!(
            summary["model_id"],
            stack.model.as_str(),
            "{id}: model discovered"
        );
        let manifest = read_jsonl(&dir.join("request_manifest.jsonl"));
        assert_eq!(manifest.len(), 4, "{id}: warmup + main planned");
        let rows = rows(&dir);
        assert_eq!(rows.len(), 4, "{id}");
        for r in &rows {
            assert_eq!(r["ok"], true, "{id}: {r:#}");
            assert_eq!(r["status_code"], 200);
            assert_eq!(
                r["api"],
                if api == "chat" {
                    "chat_completions"
                } else {
                    "completions"
                }
            );
            assert_eq!(
                r["output_tokens"], 12,
                "{id}: ignore_eos gives exactly max_tokens: {r:#}"
            );
            assert!(r["prompt_tokens"].as_u64().unwrap() >= 64, "{id}: {r:#}");
            assert!(r["schedule_lateness_ms"].as_f64().unwrap() >= 0.0);
            if stream {
                let ttft = r["ttft_ms"]
                    .as_f64()
                    .expect("streamed requests have a TTFT");
                assert!(ttft > 0.0 && ttft <= r["latency_ms"].as_f64().unwrap());
                assert!(r["ttfc_ms"].as_f64().unwrap() <= ttft);
                assert_eq!(
                    r["token_source"], "usage",
                    "{id}: one token per chunk: {r:#}"
                );
                assert_eq!(r["chunk_tokens"].as_array().unwrap().len(), 12);
                assert_eq!(r["done_seen"], true);
            } else {
                assert!(
                    r["ttft_ms"].is_null(),
                    "{id}: unary TTFT is not measurable: {r:#}"
                );
                assert!(r["latency_ms"].as_f64().unwrap() > 0.0);
            }
        }
        let main = phase(&summary, "main");
        assert_eq!(main["total_requests"], 3);
        assert_eq!(main["output_tokens_total"], 36);
        assert_eq!(phase(&summary, "warmup")["include_in_summary"], false);
        assert_eq!(
            summary["overall_summary"]["total_requests"], 3,
            "warmup excluded"
        );
        if stream {
            assert_eq!(
                main["latency_ms"]["itl"]["count"],
                3 * 11,
                "{id}: 11 ITL samples per 12-token stream"
            );
        }
        assert!(dir.join("histograms.hlog").is_file());
        assert_eq!(
            read_json(&dir.join("manifest.json"))["model_id_resolved"],
            stack.model.as_str()
        );
    }
}

#[test]
fn per_token_itl_matches_the_mockers_own_itl() {
    let stack = start_stack(&[]);
    let d = dirs();
    let dir = run(
        &stack,
        &d,
        "itl",
        &[
            "--requests",
            "6",
            "--warmup",
            "0",
            "--max-tokens",
            "64",
            "--concurrency",
            "1",
            "--stream",
            "--param",
            "set=short",
            "--param",
            "short-range=64:64",
            "--param",
            "ignore-eos=true",
        ],
        0,
    );
    let summary = read_json(&dir.join("summary.json"));
    let itl = &phase(&summary, "main")["latency_ms"]["itl"];
    assert_eq!(itl["count"], 6 * 63);
    let client_mean = itl["mean"].as_f64().unwrap();
    let (_, worker) = http_get(&stack.worker_metrics_url).unwrap();
    let sum = prom_sum(&worker, "vllm:inter_token_latency_seconds_sum");
    let count = prom_sum(&worker, "vllm:inter_token_latency_seconds_count");
    assert!(count >= 6.0 * 63.0, "worker saw the tokens: {count}");
    let server_mean = sum / count * 1e3;
    // Tokens cross the frontend and loopback; the client may add at most a
    // little jitter on top of the engine's own spacing.
    assert!(
        (client_mean - server_mean).abs() <= 0.5 + 0.1 * server_mean,
        "client ITL mean {client_mean:.3} ms vs mocker {server_mean:.3} ms"
    );
}

#[test]
fn a_repeated_long_prompt_is_served_from_cache_faster() {
    let stack = start_stack(&[]);
    let d = dirs();
    let args = [
        "--requests",
        "1",
        "--warmup",
        "0",
        "--max-tokens",
        "8",
        "--stream",
        "--param",
        "set=long",
        "--param",
        "long-range=3000:3000",
        // The same bytes twice: no per-run salt.
        "--param",
        "salt=off",
    ];
    let first = rows(&run(&stack, &d, "cold", &args, 0));
    let second = rows(&run(&stack, &d, "warm", &args, 0));
    assert_eq!(
        first[0]["request_identity_sha256"], second[0]["request_identity_sha256"],
        "same request twice"
    );
    // The user text is fitted to 3000 tokens; the template adds a few more.
    assert!(
        first[0]["prompt_tokens"].as_u64().unwrap() >= 3000,
        "{:#}",
        first[0]
    );
    assert_eq!(
        first[0]["cached_tokens"].as_u64().unwrap_or(0),
        0,
        "cold: {:#}",
        first[0]
    );
    let cached = second[0]["cached_tokens"].as_u64().unwrap();
    assert!(
        cached >= 2900,
        "warm request reuses whole blocks: {:#}",
        second[0]
    );
    let (cold, warm) = (
        first[0]["ttft_ms"].as_f64().unwrap(),
        second[0]["ttft_ms"].as_f64().unwrap(),
    );
    assert!(
        warm < cold,
        "cached prefill is faster: cold {cold} ms, warm {warm} ms"
    );
    let summary = read_json(&d.results.path().join("warm/summary.json"));
    assert_eq!(phase(&summary, "main")["requests_with_cache_hit"], 1);
}

#[test]
fn over_long_prompts_are_errors_and_the_run_goes_on() {
    let stack = start_stack(&["--max-model-len", "1024"]);
    let d = dirs();
    for stream in [false, true] {
        let id = format!("overlong-{stream}");
        let mut args = vec![
            "--requests",
            "10",
            "--warmup",
            "0",
            "--max-tokens",
            "8",
            "--concurrency",
            "2",
            "--param",
            "set=mixed",
            "--param",
            "short-range=64:128",
            "--param",
            "long-range=2000:2000",
            // Half the requests fail on purpose; the error-rate gate is tested elsewhere.
            "--max-error-rate",
            "1",
        ];
        if stream {
            args.push("--stream");
        }
        let dir = run(&stack, &d, &id, &args, 0);
        let rows = rows(&dir);
        assert_eq!(rows.len(), 10, "{id}: every request recorded");
        let (long, short): (Vec<&Value>, Vec<&Value>) =
            rows.iter().partition(|r| r["prompt_set"] == "long");
        assert!(
            !long.is_empty() && !short.is_empty(),
            "{id}: seed gives both kinds"
        );
        for r in &short {
            assert_eq!(r["ok"], true, "{id}: {r:#}");
        }
        for r in &long {
            assert_eq!(r["ok"], false, "{id}: {r:#}");
            if stream {
                assert_eq!(
                    r["status_code"], 200,
                    "{id}: streamed errors come inside a 200"
                );
                assert_eq!(r["error_kind"], "stream_error", "{id}: {r:#}");
            } else {
                assert_eq!(r["status_code"], 500, "{id}: {r:#}");
                assert_eq!(r["error_kind"], "http_5xx", "{id}: {r:#}");
            }
            assert!(
                r["error"]
                    .as_str()
                    .unwrap()
                    .contains("Internal server error"),
                "{r:#}"
            );
        }
        let summary = read_json(&dir.join("summary.json"));
        let kind = if stream { "stream_error" } else { "http_5xx" };
        assert_eq!(phase(&summary, "main")["errors_by_kind"][kind], long.len());
    }
}

#[test]
fn same_workload_params_seed_and_tokenizer_give_a_byte_identical_manifest() {
    let stack = start_stack(&[]);
    let d = dirs();
    let args = [
        "--requests",
        "6",
        "--warmup",
        "2",
        "--max-tokens",
        "4",
        "--concurrency",
        "3",
        "--param",
        "set=mixed",
        "--param",
        "short-range=64:256",
        "--param",
        "long-range=600:900",
        "--param",
        "salt=off",
    ];
    let a = run(&stack, &d, "a", &args, 0);
    let b = run(&stack, &d, "b", &args, 0);
    let mut other_seed = args.to_vec();
    other_seed.extend(["--seed", "7"]);
    let c = run(&stack, &d, "c", &other_seed, 0);
    let bytes = |dir: &Path, f: &str| std::fs::read(dir.join(f)).unwrap();
    for f in ["request_manifest.jsonl", "prompts_manifest.jsonl"] {
        assert!(!bytes(&a, f).is_empty(), "{f}");
        assert_eq!(
            bytes(&a, f),
            bytes(&b, f),
            "{f} differs between identical runs"
        );
        assert_ne!(
            bytes(&a, f),
            bytes(&c, f),
            "{f}: another seed must give other prompts"
        );
    }
    let tokenizer_id = read_json(&a.join("manifest.json"))["tokenizer"].clone();
    assert!(
        tokenizer_id.as_str().unwrap().starts_with("sha256:"),
        "{tokenizer_id}"
    );
    // With a real tokenizer the user text is fitted exactly to its target.
    for row in read_jsonl(&a.join("request_manifest.jsonl")) {
        let target = row["prompt_target_tokens"].as_u64().unwrap();
        assert!(target >= 64, "{row:#}");
        assert_eq!(row["prompt_metadata"]["target_tokens"], target.to_string());
    }
}

#[test]
fn preflight_refuses_prompts_that_cannot_fit_before_anything_is_sent() {
    let stack = start_stack(&[]);
    let d = dirs();
    // The seed's default long range (8192..32768) cannot fit an 8k engine.
    let dir = run(
        &stack,
        &d,
        "pf",
        &["--requests", "4", "--warmup", "0", "--param", "set=long"],
        2,
    );
    let summary = read_json(&dir.join("summary.json"));
    assert_eq!(
        summary["invalid_reason"], "prompt_preflight_failed",
        "{summary:#}"
    );
    let details = summary["invalid_details"].to_string();
    assert!(
        details.contains("main-00000") && details.contains("ceiling 7680"),
        "{details}"
    );
    assert_eq!(summary["dispatch"]["recorded"], 0);
    let config = read_json(&dir.join("config.json"));
    assert_eq!(config["preflight"]["result"]["failed"], true);
    assert_eq!(config["preflight"]["result"]["failure_count"], 4);
    assert_eq!(
        config["preflight"]["settings"]["engine_max_input_tokens"],
        8192
    );
    assert_eq!(
        read_jsonl(&dir.join("request_manifest.jsonl")).len(),
        4,
        "the plan is still recorded"
    );
    // Nothing reached the server: the frontend counted no completions.
    let (_, metrics) = http_get(&stack.frontend_metrics_url).unwrap();
    assert_eq!(
        prom_sum(&metrics, "dynamo_frontend_requests_total"),
        0.0,
        "{metrics}"
    );

    // The same plan with a limit that fits runs.
    run(
        &stack,
        &d,
        "pf-ok",
        &[
            "--requests",
            "1",
            "--warmup",
            "0",
            "--max-tokens",
            "4",
            "--param",
            "set=long",
            "--param",
            "long-range=3000:3000",
            "--engine-max-input-tokens",
            "4096",
        ],
        0,
    );
}

#[test]
fn every_phase_is_bracketed_by_telemetry_with_the_servers_own_view() {
    let stack = start_stack(&[]);
    let d = dirs();
    let dir = run(
        &stack,
        &d,
        "telemetry",
        &[
            "--requests",
            "6",
            "--warmup",
            "2",
            "--max-tokens",
            "8",
            "--concurrency",
            "2",
            "--stream",
            "--param",
            "set=short",
            "--param",
            "short-range=64:128",
            "--worker-metrics-url",
            &stack.worker_metrics_url,
            "--telemetry-interval",
            "200ms",
        ],
        0,
    );
    for phase in ["warmup", "main"] {
        for kind in ["kvbm_metrics", "os_io"] {
            for part in ["start", "end", "delta"] {
                let f = dir.join(format!("phase_deltas/phase_{phase}_{kind}_{part}.json"));
                assert!(f.is_file(), "{} missing", f.display());
            }
        }
    }
    let summary = read_json(&dir.join("summary.json"));
    let main = phase(&summary, "main");
    // The frontend's own histograms, for exactly this phase's requests.
    let server = &main["server_side_ms"];
    assert_eq!(server["available"], true, "{server:#}");
    assert_eq!(server["ttft"]["count"], 6.0, "{server:#}");
    assert_eq!(server["request_duration"]["count"], 6.0, "{server:#}");
    let client_p50 = main["latency_ms"]["ttft"]["p50"].as_f64().unwrap();
    let server_p50 = server["ttft"]["p50"].as_f64().unwrap();
    assert!(client_p50 > 0.0 && server_p50 > 0.0);
    assert_eq!(
        phase(&summary, "warmup")["server_side_ms"]["ttft"]["count"],
        2.0
    );
    let verdict = read_json(&dir.join("verdict.json"));
    assert_eq!(verdict["run_valid"], true, "{verdict:#}");
    assert_eq!(summary["verdict"]["run_valid"], true);
    assert!(dir.join("telemetry/telemetry_report.json").is_file());
    assert!(
        dir.join("nvme_smart_pre.json").is_file() && dir.join("nvme_smart_post.json").is_file()
    );
    let sources = &summary["telemetry"]["sources"];
    assert_eq!(sources["frontend"]["available"], true, "{sources:#}");
    // No NVMe controller on this machine: recorded as unavailable, run still valid.
    assert_eq!(sources["nvme"]["available"], false, "{sources:#}");
}

#[test]
fn too_many_errors_invalidate_the_run_and_a_kv_tier_needs_kvbm_metrics() {
    let stack = start_stack(&["--max-model-len", "1024"]);
    let d = dirs();
    let dir = run(
        &stack,
        &d,
        "errors",
        &[
            "--requests",
            "6",
            "--warmup",
            "0",
            "--max-tokens",
            "8",
            "--param",
            "set=mixed",
            "--param",
            "short-range=64:128",
            "--param",
            "long-range=2000:2000",
        ],
        2,
    );
    let summary = read_json(&dir.join("summary.json"));
    assert_eq!(
        summary["invalid_reason"], "error_rate_above_threshold",
        "{summary:#}"
    );
    assert!(
        read_json(&dir.join("verdict.json"))["reason_codes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c == "ERROR_RATE_ABOVE_THRESHOLD")
    );

    // Two tiny runs that differ only in the mode they name (none for `None`).
    let tok = tokenizer();
    let workload = synthetic();
    let labelled = |run_id: &str, tier: Option<&str>| {
        let mut args = vec![
            "run",
            workload.to_str().unwrap(),
            "--endpoint",
            &stack.endpoint,
            "--requests",
            "2",
            "--warmup",
            "0",
            "--max-tokens",
            "4",
            "--param",
            "short-range=64:64",
            "--tokenizer",
            tok.to_str().unwrap(),
            "--results-root",
            d.results.path().to_str().unwrap(),
            "--run-id",
            run_id,
            "--quiet",
        ];
        if let Some(t) = tier {
            args.extend(["--tier-mode", t]);
        }
        sparkhost(&args, d.cache.path())
    };

    // The seed's rule: a KV tier (B2) with no KVBM metrics is not a valid run.
    let out = labelled("b2", Some("B2"));
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let summary = read_json(&d.results.path().join("b2/summary.json"));
    assert_eq!(
        summary["invalid_reason"], "kvbm_metrics_unavailable",
        "{summary:#}"
    );
    assert_eq!(summary["kv_mode"]["mode"], "cpu_disk");

    // No mode given: the first run against a server without KVBM (the
    // mocker) is valid, labelled `unspecified`, and claims no tier.
    let out = labelled("unspecified", None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let dir = d.results.path().join("unspecified");
    let summary = read_json(&dir.join("summary.json"));
    assert_eq!(summary["kv_mode"]["mode"], "unspecified", "{summary:#}");
    assert_eq!(summary["kv_mode"]["kvbm_enabled"], false);
    let verdict = read_json(&dir.join("verdict.json"));
    assert_eq!(verdict["run_valid"], true, "{verdict:#}");
    assert_eq!(verdict["decision_grade"], false);
    assert_eq!(
        verdict["reason_codes"],
        serde_json::json!(["KV_MODE_UNSPECIFIED"])
    );
    assert_eq!(verdict["signals"]["kv_mode"], "unspecified");
    // KVBM was asked (and did not answer), not skipped.
    assert_eq!(
        summary["telemetry"]["sources"]["kvbm"]["available"], false,
        "{:#}",
        summary["telemetry"]["sources"]
    );
}

/// A run against a model the frontend lists by a local directory (the
/// mocker serving the model dir under its own path) counts tokens with that
/// directory's tokenizer without `--tokenizer`, chat template digest and all.
#[test]
fn a_model_listed_by_its_local_directory_gives_the_tokenizer() {
    let model_dir = tokenizer().parent().unwrap().canonicalize().unwrap();
    let stack = DynamoStack::start(crate::support::dynamo::StackOptions {
        model_name: model_dir.display().to_string(),
        ..Default::default()
    })
    .unwrap_or_else(|e| panic!("starting the Dynamo stack: {e}"));
    let d = dirs();
    let wasm = synthetic();
    let run_id = "model-dir";
    let out = sparkhost(
        &[
            "run",
            wasm.to_str().unwrap(),
            "--endpoint",
            &stack.endpoint,
            "--results-root",
            d.results.path().to_str().unwrap(),
            "--run-id",
            run_id,
            "--model-resolve-timeout",
            "30s",
            "--kv-mode",
            "off",
            "--requests",
            "2",
            "--warmup",
            "0",
            "--max-tokens",
            "4",
            "--param",
            "short-range=16:32",
            "--no-report",
            "--quiet",
        ],
        d.cache.path(),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let c = read_json(&d.results.path().join(run_id).join("config.json"));
    let tok = c["tokenizer"].as_str().unwrap();
    let digest = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(std::fs::read(tokenizer()).unwrap()))
    };
    assert!(
        tok.starts_with(&format!("sha256:{digest}+chat_template:sha256:")),
        "{tok}"
    );
}
