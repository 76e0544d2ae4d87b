//! The workload library (`workloads/<name>.wasm`, from `make workloads`)
//! through the real binary against the real Dynamo frontend + mocker.
//!
//! The mocker emits random tokens but keeps a real prefix cache (GPU blocks,
//! optionally a host tier), so these tests assert on phases, labels, token
//! counts, cache hits and timing order, never on text.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::support::dynamo::DynamoStack;
use crate::{Dirs, RunCmd, dirs, phase, read_json, read_jsonl, repo, start_stack, workload};

/// Runs workload `name` (streamed, with the mocker's tokenizer); returns
/// the run directory after checking the exit code is 0.
fn run(stack: &DynamoStack, d: &Dirs, name: &str, run_id: &str, extra: &[&str]) -> PathBuf {
    let dir = RunCmd::new(&workload(name), &stack.endpoint, d.results.path(), run_id)
        .args(&["--stream"])
        .args(extra)
        .expect_exit(stack, d.cache.path(), 0);
    let summary = read_json(&dir.join("summary.json"));
    assert_eq!(summary["run_valid"], true, "{name}: {summary:#}");
    dir
}

fn rows(dir: &Path) -> Vec<Value> {
    let mut rows = read_jsonl(&dir.join("requests.jsonl"));
    rows.sort_by_key(|r| r["request_index"].as_u64());
    for r in &rows {
        assert_eq!(r["ok"], true, "{r:#}");
    }
    rows
}

fn summary(dir: &Path) -> Value {
    read_json(&dir.join("summary.json"))
}

fn phase_names(summary: &Value) -> Vec<String> {
    summary["phase_summaries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["phase"].as_str().unwrap().to_string())
        .collect()
}

fn label<'a>(row: &'a Value, key: &str) -> &'a str {
    row["prompt_metadata"][key]
        .as_str()
        .unwrap_or_else(|| panic!("label {key} missing: {row:#}"))
}

fn u(v: &Value) -> u64 {
    v.as_u64()
        .unwrap_or_else(|| panic!("not a whole number: {v}"))
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

/// Rows of each session, in planning order.
fn by_session(rows: &[Value]) -> HashMap<String, Vec<&Value>> {
    let mut map: HashMap<String, Vec<&Value>> = HashMap::new();
    for r in rows {
        map.entry(r["session_id"].as_str().unwrap().to_string())
            .or_default()
            .push(r);
    }
    map
}

/// Each turn after the first went out no earlier than the previous turn's
/// end plus `think_ms` (1 ms of slack for rounding), and carried more
/// prompt tokens, since the history grows.
fn assert_turns_follow(session: &[&Value], think_ms: f64) {
    for w in session.windows(2) {
        let (a, b) = (w[0], w[1]);
        let end = f(&a["sent_offset_ms"]) + f(&a["latency_ms"]);
        assert!(
            f(&b["sent_offset_ms"]) + 1.0 >= end + think_ms,
            "{} sent before {} ended + {think_ms} ms: {a:#} {b:#}",
            b["prompt_id"],
            a["prompt_id"]
        );
        assert!(
            u(&b["prompt_tokens"]) > u(&a["prompt_tokens"]),
            "history grows: {} then {}",
            a["prompt_tokens"],
            b["prompt_tokens"]
        );
    }
}

#[test]
fn reuse_verify_hits_the_cache_and_is_faster_on_repeats() {
    let stack = start_stack(&[]);
    let d = dirs();
    let dir = run(
        &stack,
        &d,
        "reuse_verify",
        "reuse",
        &[
            "--max-tokens",
            "4",
            "--param",
            "repeats=3",
            "--param",
            "short-range=3000:3000",
        ],
    );
    let s = summary(&dir);
    assert_eq!(phase_names(&s), ["reuse_1", "reuse_2", "reuse_3"]);
    let rows = rows(&dir);
    assert_eq!(rows.len(), 3);
    for r in &rows {
        assert_eq!(
            r["prompt_sha256"], rows[0]["prompt_sha256"],
            "identical prompt"
        );
        assert_eq!(
            r["request_identity_sha256"],
            rows[0]["request_identity_sha256"]
        );
        assert_eq!(r["prefix_hash"], rows[0]["prefix_hash"]);
        assert_eq!(label(r, "reuse_prompt_id"), "reuse-00000");
        assert_eq!(label(r, "target_tokens"), "3000");
        assert_eq!(r["generation_params"]["temperature"], 0.0);
    }
    assert_eq!(u(&phase(&s, "reuse_1")["cached_tokens_total"]), 0, "cold");
    let cold_ttft = f(&phase(&s, "reuse_1")["latency_ms"]["ttft"]["mean"]);
    for k in ["reuse_2", "reuse_3"] {
        let p = phase(&s, k);
        assert_eq!(p["requests_with_cache_hit"], 1, "{k}: {p:#}");
        assert!(u(&p["cached_tokens_total"]) >= 2900, "{k}: {p:#}");
        let ttft = f(&p["latency_ms"]["ttft"]["mean"]);
        assert!(
            ttft < cold_ttft,
            "{k}: TTFT {ttft} ms vs cold {cold_ttft} ms"
        );
    }
}

/// A's 4 prompts of ~530 tokens need 36 of the 48 GPU blocks (64 tokens
/// each); B's 8 prompts need 72 more, so A is evicted before the replay.
const EVICTION_MOCKER: [&str; 4] = ["--num-gpu-blocks-override", "48", "--block-size", "64"];
const EVICTION_ARGS: [&str; 10] = [
    "--max-tokens",
    "8",
    "--param",
    "a-requests=4",
    "--param",
    "b-requests=8",
    "--param",
    "warmup=0",
    "--param",
    "long-range=512:512",
];

#[test]
fn eviction_replay_loses_its_hits_without_a_host_tier_and_keeps_them_with_one() {
    let d = dirs();
    for (host_blocks, run_id) in [(None, "gpu-only"), (Some("512"), "with-host")] {
        let mut mocker = EVICTION_MOCKER.to_vec();
        if let Some(n) = host_blocks {
            mocker.extend(["--num-host-blocks", n]);
        }
        let stack = start_stack(&mocker);
        let dir = run(&stack, &d, "eviction_replay", run_id, &EVICTION_ARGS);
        let s = summary(&dir);
        assert_eq!(phase_names(&s), ["warm_A", "pressure_B", "replay_A"]);
        let rows = rows(&dir);
        let warm: Vec<&Value> = rows.iter().filter(|r| r["phase"] == "warm_A").collect();
        let replay: Vec<&Value> = rows.iter().filter(|r| r["phase"] == "replay_A").collect();
        assert_eq!((warm.len(), replay.len()), (4, 4));
        for r in &replay {
            let source = warm
                .iter()
                .find(|w| w["prompt_id"].as_str() == Some(label(r, "replay_of")))
                .unwrap();
            assert_eq!(
                r["prompt_sha256"], source["prompt_sha256"],
                "byte-identical A"
            );
            assert_eq!(label(r, "prompt_set"), "replay_a");
        }
        assert_eq!(u(&phase(&s, "warm_A")["cached_tokens_total"]), 0);
        let replay_phase = phase(&s, "replay_A");
        match host_blocks {
            None => {
                assert_eq!(
                    replay_phase["requests_with_cache_hit"], 0,
                    "{replay_phase:#}"
                );
                assert_eq!(u(&replay_phase["cached_tokens_total"]), 0);
            }
            Some(_) => {
                assert_eq!(
                    replay_phase["requests_with_cache_hit"], 4,
                    "{replay_phase:#}"
                );
                assert!(u(&replay_phase["cached_tokens_total"]) >= 4 * 448);
            }
        }
    }
}

#[test]
fn local_copilot_burst_spaces_bursts_and_grows_history() {
    let stack = start_stack(&[]);
    let d = dirs();
    let dir = run(
        &stack,
        &d,
        "local_copilot_burst",
        "copilot",
        &[
            "--max-tokens",
            "16",
            "--param",
            "requests=12",
            "--param",
            "warmup=2",
            "--param",
            "sessions=3",
            "--param",
            "burst-size=2",
            "--param",
            "burst-interval-ms=200",
            "--param",
            "think-time-ms=50",
            "--param",
            "shared-prefix-tokens=512",
            "--param",
            "context-tokens=128",
        ],
    );
    let s = summary(&dir);
    assert_eq!(phase_names(&s), ["warmup", "copilot_burst"]);
    assert_eq!(phase(&s, "warmup")["include_in_summary"], false);
    assert_eq!(u(&s["overall_summary"]["total_requests"]), 12);
    let rows = rows(&dir);
    let main: Vec<Value> = rows
        .iter()
        .filter(|r| r["phase"] == "copilot_burst")
        .cloned()
        .collect();
    assert_eq!(main.len(), 12);
    let prefix = main[0]["prefix_hash"].as_str().unwrap();
    assert_eq!(prefix.len(), 64);
    for r in &main {
        assert_eq!(r["prefix_hash"], prefix, "one shared project prefix");
        for key in ["turn", "burst_id", "burst_index", "session_turn_index"] {
            label(r, key);
        }
    }
    let sessions = by_session(&main);
    assert_eq!(sessions.len(), 3);
    for (id, turns) in &sessions {
        assert_eq!(turns.len(), 4, "{id}");
        assert_turns_follow(&turns[..2], 50.0);
        // The second burst waits burst-gap-ms (3 × 200) after the first.
        assert_turns_follow(&turns[1..3], 600.0);
    }
    // First bursts start one interval apart.
    let mut starts: Vec<f64> = sessions
        .values()
        .map(|t| f(&t[0]["intended_offset_ms"]))
        .collect();
    starts.sort_by(f64::total_cmp);
    for w in starts.windows(2) {
        assert!((w[1] - w[0] - 200.0).abs() < 1.0, "{starts:?}");
    }
    assert!(
        main.iter()
            .filter(|r| label(r, "turn") != "1")
            .all(|r| u(&r["cached_tokens"]) > 0),
        "later turns reuse the session's earlier prompt"
    );
}

#[test]
fn agent_loop_sessions_grow_and_think() {
    let stack = start_stack(&[]);
    let d = dirs();
    let dir = run(
        &stack,
        &d,
        "agent_loop",
        "agent",
        &[
            "--max-tokens",
            "16",
            "--param",
            "sessions=2",
            "--param",
            "turns=3",
            "--param",
            "think-time-ms=100",
            "--param",
            "system-tokens=256",
            "--param",
            "observation-range=64:128",
        ],
    );
    assert_eq!(phase_names(&summary(&dir)), ["agent"]);
    let rows = rows(&dir);
    assert_eq!(rows.len(), 6);
    let sessions = by_session(&rows);
    assert_eq!(sessions.len(), 2);
    for turns in sessions.values() {
        let labels: Vec<&str> = turns.iter().map(|r| label(r, "turn")).collect();
        assert_eq!(labels, ["1", "2", "3"]);
        assert_turns_follow(turns, 100.0);
        assert!(
            label(turns[2], "observation_tokens")
                .parse::<u32>()
                .unwrap()
                >= 64
        );
    }
}

#[test]
fn rehydrate_replay_resends_the_populate_prompts() {
    let stack = start_stack(&[]);
    let d = dirs();
    let dir = run(
        &stack,
        &d,
        "rehydrate_replay",
        "rehydrate",
        &[
            "--max-tokens",
            "4",
            "--param",
            "populate-sessions=2",
            "--param",
            "thrash-sessions=3",
            "--param",
            "prefix-tokens=256",
            "--param",
            "replay-repeats=2",
            "--param",
            "concurrency=2",
        ],
    );
    let s = summary(&dir);
    assert_eq!(
        phase_names(&s),
        ["populate", "thrash", "replay", "replay_2"]
    );
    let rows = rows(&dir);
    assert_eq!(rows.len(), 4 + 3 + 4 + 4);
    let populate: HashMap<&str, &Value> = rows
        .iter()
        .filter(|r| r["phase"] == "populate")
        .map(|r| (r["prompt_id"].as_str().unwrap(), r))
        .collect();
    for r in rows.iter().filter(|r| label(r, "phase_intent") == "replay") {
        let source = populate[label(r, "replay_of")];
        assert_eq!(r["prompt_sha256"], source["prompt_sha256"]);
        assert_eq!(r["session_id"], source["session_id"]);
        assert_eq!(r["prefix_hash"], source["prefix_hash"]);
    }
    assert_eq!(phase(&s, "replay")["requests_with_cache_hit"], 4);
}

#[test]
fn rag_summarize_reuses_documents() {
    let stack = start_stack(&[]);
    let d = dirs();
    let dir = run(
        &stack,
        &d,
        "rag_summarize",
        "rag",
        &[
            "--max-tokens",
            "8",
            "--concurrency",
            "2",
            "--param",
            "requests=8",
            "--param",
            "warmup=1",
            "--param",
            "doc-range=800:1200",
            "--param",
            "reuse-ratio=0.5",
        ],
    );
    assert_eq!(phase_names(&summary(&dir)), ["warmup", "main"]);
    let rows = rows(&dir);
    let main: Vec<&Value> = rows.iter().filter(|r| r["phase"] == "main").collect();
    assert_eq!(main.len(), 8);
    let reused: Vec<&&Value> = main
        .iter()
        .filter(|r| label(r, "doc_reused") == "true")
        .collect();
    assert!(!reused.is_empty(), "seed 1337 reuses some documents");
    for r in &main {
        let target: u64 = label(r, "target_tokens").parse().unwrap();
        assert!((800..=1200).contains(&target));
        assert!(u(&r["prompt_tokens"]) > target, "document plus instruction");
    }
    for r in reused {
        let first = main
            .iter()
            .find(|o| label(o, "doc_id") == label(r, "doc_id"))
            .unwrap();
        assert_eq!(first["prefix_hash"], r["prefix_hash"]);
        // RFC 3339 timestamps in one format compare as text.
        let (first_end, sent) = (first["end_ts"].as_str(), r["start_ts"].as_str());
        if first["prompt_id"] != r["prompt_id"] && first_end < sent {
            assert!(u(&r["cached_tokens"]) >= 512, "{r:#}");
        }
    }
}

#[test]
fn kv_pressure_sizes_the_working_set_against_the_gpu_tier() {
    let stack = start_stack(&EVICTION_MOCKER);
    let d = dirs();
    let common = [
        "--max-tokens",
        "4",
        "--param",
        "target-tier=gpu",
        "--param",
        "gpu-capacity=48blocks",
        "--param",
        "block-size=64",
        "--param",
        "prefix-tokens=512",
    ];
    // 48 × 64 = 3072 tokens: 0.5 × → 3 prefixes that fit; 2 × → 12 that
    // cannot, revisited in populate order, so LRU evicts each before reuse.
    for (overflow, seed, prefixes, hits) in [("0.5", "1", 3, true), ("2", "2", 12, false)] {
        let mut args = common.to_vec();
        let o = format!("overflow={overflow}");
        args.extend(["--param", &o, "--seed", seed]);
        let dir = run(&stack, &d, "kv_pressure", &format!("kvp-{overflow}"), &args);
        let s = summary(&dir);
        assert_eq!(phase_names(&s), ["populate", "revisit"]);
        let rows = rows(&dir);
        assert_eq!(rows.len(), 2 * prefixes);
        let r = &rows[0];
        assert_eq!(label(r, "capacity_tokens"), "3072");
        assert_eq!(label(r, "prefixes"), prefixes.to_string());
        assert_eq!(label(r, "target_tier"), "gpu");
        label(r, "working_set_tokens");
        let revisit = phase(&s, "revisit");
        if hits {
            assert_eq!(
                u(&revisit["requests_with_cache_hit"]),
                prefixes as u64,
                "{revisit:#}"
            );
        } else {
            assert_eq!(u(&revisit["cached_tokens_total"]), 0, "{revisit:#}");
        }
    }
}

#[test]
fn trace_replay_follows_the_example_trace() {
    let stack = start_stack(&[]);
    let d = dirs();
    let trace = repo().join("workloads/trace_replay/example_trace.jsonl");
    let grant = format!("trace=@{}", trace.display());
    let dir = run(
        &stack,
        &d,
        "trace_replay",
        "trace",
        &["--param", &grant, "--param", "time-scale=0.1"],
    );
    assert_eq!(phase_names(&summary(&dir)), ["replay"]);
    let lines: Vec<Value> = read_jsonl(&trace);
    let rows = rows(&dir);
    assert_eq!(rows.len(), lines.len());
    let first_ts = f(&lines[0]["timestamp"]);
    let start = f(&rows[0]["intended_offset_ms"]);
    for (r, l) in rows.iter().zip(&lines) {
        assert_eq!(u(&r["prompt_tokens"]), u(&l["input_length"]), "{r:#}");
        assert_eq!(u(&r["output_tokens"]), u(&l["output_length"]), "{r:#}");
        let offset = f(&r["intended_offset_ms"]) - start;
        let expected = (f(&l["timestamp"]) - first_ts) * 0.1;
        assert!((offset - expected).abs() < 1.0, "{offset} vs {expected}");
    }
    let shared_hits = rows
        .iter()
        .zip(&lines)
        .enumerate()
        .filter(|(i, (_, l))| {
            lines[..*i]
                .iter()
                .any(|e| e["hash_ids"][0] == l["hash_ids"][0])
        })
        .filter(|(_, (r, _))| u(&r["cached_tokens"]) > 0)
        .count();
    assert!(shared_hits > 0, "requests sharing hash ids hit the cache");
}
