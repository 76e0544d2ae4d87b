//! Recorded traces end to end: every fixture format of
//! `tests/fixtures/traces/` replayed by `trace_replay` through the real CLI
//! against the in-process simulator, whose prefix cache hashes the prompt's
//! heuristic tokens in 16-token blocks. A request's cached tokens are then
//! exactly the blocks its prompt shares with earlier prompts, so comparing
//! them with what the manifest's hash ids predict checks, block by block,
//! that requests sharing a hash id share exactly those prompt tokens and
//! requests that do not share one share none. Also: the per-run salt.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::{Dirs, dirs, phase, read_json, read_jsonl, repo, sparkhost, text, workload};

fn fixture(name: &str) -> PathBuf {
    repo().join("tests/fixtures/traces").join(name)
}

/// A GPU tier big enough that nothing is evicted: every reusable block is
/// still cached when it is asked for again.
const ROOMY: &str = "gpu_num_blocks=2048";

fn replay(d: &Dirs, trace: &Path, run_id: &str, endpoint: &str, extra: &[&str]) -> PathBuf {
    let wasm = workload("trace_replay");
    let grant = format!("trace=@{}", trace.display());
    let mut args = vec![
        "run",
        wasm.to_str().unwrap(),
        "--param",
        &grant,
        "--param",
        "idle-gap-cap-ms=200",
        "--endpoint",
        endpoint,
        "--kv-mode",
        "off",
        "--no-collector",
        "gpu",
        "--no-collector",
        "nvme",
        "--no-report",
        "--results-root",
        d.results.path().to_str().unwrap(),
        "--run-id",
        run_id,
        "--quiet",
    ];
    if endpoint.starts_with("sim:") {
        args.extend(["--sim-set", ROOMY]);
    }
    args.extend_from_slice(extra);
    let out = sparkhost(&args, d.cache.path());
    assert_eq!(out.status.code(), Some(0), "{run_id}: {}", text(&out));
    d.results.path().join(run_id)
}

/// Per request in planned order: the tokens its hash ids say an earlier
/// request already had (whole prefix of ids, capped at its prompt).
fn predicted(manifest: &[Value]) -> Vec<u64> {
    let mut seen: HashSet<Vec<u64>> = HashSet::new();
    manifest
        .iter()
        .map(|row| {
            let meta = &row["prompt_metadata"];
            let ids: Vec<u64> = meta["hash_ids"]
                .as_str()
                .unwrap()
                .split(',')
                .filter(|s| !s.is_empty())
                .map(|s| s.parse().unwrap())
                .collect();
            let b: u64 = meta["hash_block_tokens"].as_str().unwrap().parse().unwrap();
            let shared = (1..=ids.len())
                .take_while(|k| seen.contains(&ids[..*k]))
                .count() as u64;
            for k in 1..=ids.len() {
                seen.insert(ids[..k].to_vec());
            }
            (shared * b).min(row["prompt_tokens_est"].as_u64().unwrap())
        })
        .collect()
}

fn check_fidelity(dir: &Path, ctx: &str) -> u64 {
    let manifest = read_jsonl(&dir.join("request_manifest.jsonl"));
    let rows = read_jsonl(&dir.join("requests.jsonl"));
    assert_eq!(rows.len(), manifest.len(), "{ctx}");
    let want = predicted(&manifest);
    let mut total = 0;
    for (m, expect) in manifest.iter().zip(&want) {
        let r = rows
            .iter()
            .find(|r| r["prompt_id"] == m["prompt_id"])
            .unwrap();
        let c = &format!("{ctx} {}: {r:#}", m["prompt_id"]);
        assert_eq!(r["ok"], true, "{c}");
        let target = m["prompt_metadata"]["target_tokens"].as_str().unwrap();
        assert_eq!(
            r["prompt_tokens"].as_u64().unwrap().to_string(),
            target,
            "{c}"
        );
        assert_eq!(r["cached_tokens"].as_u64().unwrap_or(0), *expect, "{c}");
        let out = m["prompt_metadata"]["output_length"].as_str().unwrap();
        let out: u64 = out.parse::<u64>().unwrap().max(1);
        assert_eq!(r["output_tokens"].as_u64(), Some(out), "{c}");
        total += expect;
    }
    assert!(total > 0, "{ctx}: the fixture has reuse");
    // The verdict computes the same prediction from the same labels.
    let v = read_json(&dir.join("verdict.json"));
    let h = &v["signals"]["reuse_opportunity"]["hash_ids"];
    assert_eq!(
        h["run"]["reusable_tokens"].as_u64(),
        Some(total),
        "{ctx}: {h:#}"
    );
    assert_eq!(
        h["phases"]["replay"]["reusable_tokens"].as_u64(),
        Some(total),
        "{ctx}"
    );
    assert_eq!(h["complete"], true, "{ctx}");
    total
}

#[test]
fn every_trace_format_shares_exactly_the_blocks_its_hash_ids_share() {
    let d = dirs();
    for (name, extra) in [
        ("mooncake.jsonl", &["--param", "trace-block-size=64"][..]),
        ("dynamo.jsonl", &[][..]),
        ("dynamo.jsonl.gz", &[][..]),
        ("weka.json", &["--param", "time-scale=0.2"][..]),
    ] {
        let run_id = name.replace('.', "-");
        let dir = replay(&d, &fixture(name), &run_id, "sim:tiny", extra);
        check_fidelity(&dir, name);
        let s = read_json(&dir.join("summary.json"));
        let c = read_json(&dir.join("config.json"));
        let salt = c["params"]["salt"].as_str().unwrap().to_owned();
        assert!(
            salt.len() == 16 && salt.bytes().all(|b| b.is_ascii_hexdigit()),
            "a fresh per-run salt: {salt}"
        );
        for row in read_jsonl(&dir.join("request_manifest.jsonl")) {
            assert_eq!(row["prompt_metadata"]["salt"], salt.as_str(), "{name}");
        }
        let planned = read_jsonl(&dir.join("request_manifest.jsonl")).len() as u64;
        assert_eq!(
            phase(&s, "replay")["total_requests"].as_u64(),
            Some(planned),
            "{name}"
        );
    }
    // Re-blocked to the engine's 16 tokens, Mooncake's 64-token blocks
    // still predict the cache exactly.
    let dir = replay(
        &d,
        &fixture("mooncake.jsonl"),
        "reblocked",
        "sim:tiny",
        &[
            "--param",
            "trace-block-size=64",
            "--param",
            "block-size=16",
            "--param",
            "re-block=true",
        ],
    );
    check_fidelity(&dir, "re-blocked");
}

#[test]
fn a_block_size_the_trace_was_not_recorded_with_is_refused_naming_both() {
    let d = dirs();
    let wasm = workload("trace_replay");
    let grant = format!("trace=@{}", fixture("dynamo.jsonl.gz").display());
    let out = sparkhost(
        &[
            "run",
            wasm.to_str().unwrap(),
            "--param",
            &grant,
            "--param",
            "block-size=32",
            "--endpoint",
            "sim:tiny",
            "--kv-mode",
            "off",
            "--no-telemetry",
            "--no-report",
            "--results-root",
            d.results.path().to_str().unwrap(),
            "--quiet",
        ],
        d.cache.path(),
    );
    assert_ne!(out.status.code(), Some(0));
    let err = text(&out);
    assert!(
        err.contains("`block-size`: 32")
            && err.contains("16-token blocks")
            && err.contains("re-block=true"),
        "{err}"
    );
}

/// Two runs against one warm server: with the default per-run salt the
/// second inherits no cache hit from the first; with `salt=off` it does,
/// and the manifests are byte-identical.
#[test]
fn the_per_run_salt_keeps_a_warm_server_from_inflating_the_second_run() {
    let d = dirs();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_sparkhost"))
        .args([
            "sim",
            "--profile",
            "tiny",
            "--tier-mode",
            "B0",
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
            "--set",
            ROOMY,
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let stdout = child.stdout.take().unwrap();
    let _child = Kill(child);
    let mut banner = String::new();
    for l in std::io::BufRead::lines(std::io::BufReader::new(stdout)) {
        let l = l.unwrap();
        banner.push_str(&l);
        banner.push('\n');
        if l.starts_with("Ctrl-C") {
            break;
        }
    }
    let url = banner
        .split_whitespace()
        .find(|w| w.starts_with("http://127.0.0.1:") && !w.ends_with("/metrics"))
        .unwrap_or_else(|| panic!("no URL in {banner}"))
        .to_owned();
    let trace = fixture("dynamo.jsonl");
    let first_cached = |dir: &Path| -> u64 {
        let rows = read_jsonl(&dir.join("requests.jsonl"));
        let r = rows
            .iter()
            .find(|r| r["prompt_id"] == "trace-000000")
            .unwrap();
        r["cached_tokens"].as_u64().unwrap_or(0)
    };
    let a = replay(&d, &trace, "salted-1", &url, &[]);
    let b = replay(&d, &trace, "salted-2", &url, &[]);
    assert_eq!(first_cached(&a), 0);
    assert_eq!(first_cached(&b), 0, "a fresh salt: nothing from run 1");
    let salt = |dir: &Path| read_json(&dir.join("config.json"))["params"]["salt"].clone();
    assert_ne!(salt(&a), salt(&b));
    let off = ["--param", "salt=off"];
    let c = replay(&d, &trace, "plain-1", &url, &off);
    let e = replay(&d, &trace, "plain-2", &url, &off);
    assert_eq!(first_cached(&c), 0, "nothing unsalted was sent before");
    assert!(first_cached(&e) > 0, "run 2 reuses run 1's first prompt");
    let bytes = |dir: &Path| std::fs::read(dir.join("request_manifest.jsonl")).unwrap();
    assert_eq!(bytes(&c), bytes(&e), "salt=off: byte-identical manifests");
    // A recorded salt replays its run byte for byte.
    let again = format!("salt={}", salt(&a).as_str().unwrap());
    let f = replay(&d, &trace, "salted-again", &url, &["--param", &again]);
    assert_eq!(bytes(&a), bytes(&f));
}
