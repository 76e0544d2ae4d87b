//! The evidence chain end to end against the simulated engine
//! (`--endpoint sim:PROFILE`, in-process): KVBM deltas, disk I/O on the KV
//! disk in the same phase, the latency users see, and the verdict, for B0,
//! B1 and B2, and a verdict that names each lie the simulator can tell.
//!
//! The disk tier lives on a loop device each test makes (ext4 on a file),
//! so `/proc/diskstats` shows its I/O and nothing else's; a [`LoopDisk`]
//! removes mount, device and image even when an assertion fails. Without
//! root those tests say so and pass without running.
//!
//! Sizes (profile [`PROFILE`]): 2 KiB of KV per token, 16-token blocks of
//! 32 KiB, a 96-block GPU tier. A prompt of ~480 tokens is ~30 blocks, so
//! eviction_replay's A (4 prompts) and B (8) and rehydrate_replay's thrash
//! overflow the GPU; B1's host tier (1024 blocks) holds everything, B2's
//! (48) does not, so B2's replay must come from disk. Prefill is slow
//! (50 µs/token) next to a disk onboard (~0.5 ms per prompt), so the TTFT
//! order is far outside scheduling noise.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

use crate::{Dirs, dirs, phase, read_json, sparkhost, text, workload};

const PROFILE: &str = r#"base = "tiny"
name = "evidence"
num_layers = 8
max_model_len = 1024
max_num_batched_tokens = 2048
gpu_num_blocks = 96
cpu_num_blocks = 1024
disk_num_blocks = 2048
prefill_us_per_token = 50.0
"#;

/// B2's host tier: smaller than the pressure phases, so A leaves it.
const B2_HOST_BLOCKS: &str = "cpu_num_blocks=48";

/// eviction_replay's A is seen once before its replay: KVBM's seen-twice
/// disk filter would keep it off disk, so these runs turn the filter off.
const EVICTION: [&str; 10] = [
    "--sim-set",
    "disable_disk_offload_filter=true",
    "-p",
    "a-requests=4",
    "-p",
    "b-requests=8",
    "-p",
    "warmup=0",
    "-p",
    "long-range=480:480",
];

/// ext4 on a loop device, mounted in a temp dir; all of it undone on drop.
struct LoopDisk {
    dir: tempfile::TempDir,
    dev: Option<String>,
    mounted: bool,
}

fn sh(cmd: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .map_err(|e| format!("{cmd}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

impl LoopDisk {
    /// `None` (with a message) when not root.
    fn create(test: &str) -> Option<LoopDisk> {
        if !is_root() {
            eprintln!(
                "SKIPPED {test}: needs root to create a loop device for the KV disk (losetup, mkfs.ext4, mount)"
            );
            return None;
        }
        let mut d = LoopDisk {
            dir: tempfile::tempdir().unwrap(),
            dev: None,
            mounted: false,
        };
        let image = d.dir.path().join("kv.img");
        let mnt = d.mnt();
        std::fs::create_dir(&mnt).unwrap();
        sh("truncate", &["-s", "96M", image.to_str().unwrap()]).unwrap();
        d.dev = Some(sh("losetup", &["-f", "--show", image.to_str().unwrap()]).unwrap());
        // Eager init: a lazily initialised ext4 writes its inode tables in
        // the background, I/O no phase's KV could explain.
        sh(
            "mkfs.ext4",
            &[
                "-q",
                "-F",
                "-E",
                "lazy_itable_init=0,lazy_journal_init=0",
                d.dev.as_deref().unwrap(),
            ],
        )
        .unwrap();
        sh("mount", &[d.dev.as_deref().unwrap(), mnt.to_str().unwrap()]).unwrap();
        d.mounted = true;
        Some(d)
    }

    fn mnt(&self) -> PathBuf {
        self.dir.path().join("mnt")
    }

    /// `loopN`, as `/proc/diskstats` names it.
    fn name(&self) -> String {
        self.dev
            .as_deref()
            .unwrap()
            .trim_start_matches("/dev/")
            .to_owned()
    }
}

impl Drop for LoopDisk {
    fn drop(&mut self) {
        if self.mounted {
            let _ = sh("umount", &[self.mnt().to_str().unwrap()]);
        }
        if let Some(dev) = &self.dev {
            let _ = sh("losetup", &["-d", dev]);
        }
    }
}

struct Sim<'a> {
    d: &'a Dirs,
    disk: &'a LoopDisk,
    profile: PathBuf,
}

impl Sim<'_> {
    /// `sparkhost run` of `name` against the simulator in `tier`; returns
    /// the run directory after checking the exit code is 0.
    fn run(&self, name: &str, tier: &str, run_id: &str, extra: &[&str]) -> PathBuf {
        let cache = self.disk.mnt().join(run_id);
        let wasm = workload(name);
        let mut args: Vec<String> = [
            "run",
            wasm.to_str().unwrap(),
            "--endpoint",
            &format!("sim:{}", self.profile.display()),
            "--tier-mode",
            tier,
            "--sim-cache-dir",
            cache.to_str().unwrap(),
            "--block-device",
            &self.disk.name(),
            "--results-root",
            self.d.results.path().to_str().unwrap(),
            "--run-id",
            run_id,
            "--stream",
            "--max-tokens",
            "8",
            "--model-resolve-timeout",
            "10s",
            "--no-collector",
            "gpu",
            "--no-collector",
            "nvme",
            "--quiet",
        ]
        .iter()
        .map(|a| a.to_string())
        .collect();
        if tier == "B2" {
            args.extend(["--sim-set".into(), B2_HOST_BLOCKS.into()]);
        }
        args.extend(extra.iter().map(|a| a.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = sparkhost(&args, self.d.cache.path());
        let dir = self.d.results.path().join(run_id);
        assert_eq!(out.status.code(), Some(0), "{run_id}: {}", text(&out));
        assert!(
            std::fs::read_dir(&cache).map_or(true, |mut e| e.next().is_none()),
            "{run_id}: the simulator left its cache file in {}",
            cache.display()
        );
        dir
    }
}

fn kvbm(p: &Value, counter: &str) -> f64 {
    p["kvbm_metrics_delta"][format!("kvbm_{counter}_delta")]
        .as_f64()
        .unwrap_or(0.0)
}

fn disk_read(p: &Value) -> u64 {
    p["io_delta"]["block_device_delta"]["read_bytes_delta"]
        .as_u64()
        .unwrap_or(0)
}

/// The mean, not a percentile: half of rehydrate_replay's requests (each
/// session's second turn) hit the GPU in every tier, so a median can land
/// on either half.
fn ttft_mean(p: &Value) -> f64 {
    p["latency_ms"]["ttft"]["mean"].as_f64().unwrap()
}

fn cached(p: &Value) -> u64 {
    p["cached_tokens_total"].as_u64().unwrap_or(0)
}

fn codes(v: &Value) -> Vec<String> {
    v["reason_codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect()
}

fn setup(test: &str) -> Option<(Dirs, LoopDisk, PathBuf)> {
    let disk = LoopDisk::create(test)?;
    let d = dirs();
    let profile = d.results.path().join("evidence.toml");
    std::fs::write(&profile, PROFILE).unwrap();
    Some((d, disk, profile))
}

/// B0, B1, B2 of one workload; asserts the chain on phase `replay` against
/// the first pass `first`. `None`: skipped (not root).
fn chain(name: &str, first: &str, replay: &str, extra: &[&str]) -> Option<()> {
    let (d, disk, profile) = setup(name)?;
    let sim = Sim {
        d: &d,
        disk: &disk,
        profile,
    };
    let mut replay_ttft = Vec::new();
    for tier in ["B0", "B1", "B2"] {
        let dir = sim.run(name, tier, &format!("{name}-{tier}"), extra);
        let s = read_json(&dir.join("summary.json"));
        let m = read_json(&dir.join("manifest.json"));
        let v = read_json(&dir.join("verdict.json"));
        let sig = &v["signals"];
        let (p1, pr) = (phase(&s, first), phase(&s, replay));
        assert_eq!(s["run_valid"], true, "{tier}: {s:#}");
        // Simulated, prominently, everywhere a result is read.
        assert_eq!(s["simulator"]["simulated"], true, "{tier}");
        assert_eq!(m["simulator"]["simulated"], true, "{tier}");
        assert_eq!(m["simulator"]["tier_mode"], tier);
        let report = std::fs::read_to_string(dir.join("report.md")).unwrap();
        assert!(report.contains("**SIMULATED RUN"), "{tier}: {report}");
        replay_ttft.push(ttft_mean(pr));
        let ctx = format!("{name} {tier}: replay {pr:#}\nverdict {v:#}");
        // What the replay found beyond what its first pass found within
        // itself, allowing each request the chat template's shared block.
        let slack = pr["total_requests"].as_u64().unwrap() * 16;
        let reused_from_before = cached(pr) > cached(p1) + slack;
        match tier {
            "B0" => {
                // No KVBM at all: nothing offloaded, the replay recomputes.
                assert_eq!(sig["ssd_rehydrate_signal"], false, "{ctx}");
                assert_eq!(sig["host_onboard_signal"], false, "{ctx}");
                assert!(
                    sig["offload_d2h_total"].as_f64().unwrap_or(0.0) == 0.0,
                    "{ctx}"
                );
                assert!(!reused_from_before, "{ctx}");
            }
            "B1" => {
                assert!(kvbm(pr, "onboard_blocks_h2d") > 0.0, "{ctx}");
                assert_eq!(kvbm(pr, "onboard_blocks_d2d"), 0.0, "{ctx}");
                assert_eq!(sig["host_onboard_signal"], true, "{ctx}");
                assert_eq!(sig["ssd_rehydrate_signal"], false, "{ctx}");
                assert_eq!(sig["ssd_write_signal"], false, "{ctx}");
                assert!(reused_from_before, "{ctx}");
            }
            _ => {
                assert!(kvbm(pr, "onboard_blocks_d2d") > 0.0, "{ctx}");
                assert!(disk_read(pr) > 0, "{ctx}");
                assert_eq!(pr["io_delta"]["block_device"], disk.name(), "{ctx}");
                assert_eq!(sig["ssd_rehydrate_signal"], true, "{ctx}");
                let sources = sig["ssd_rehydrate_sources"].as_array().unwrap();
                assert!(
                    sources.iter().any(|x| x == "kvbm_onboard_blocks_d2d"),
                    "{ctx}"
                );
                assert_eq!(v["decision_grade"], true, "{ctx}");
                assert!(reused_from_before, "{ctx}");
            }
        }
    }
    assert!(
        replay_ttft[2] < replay_ttft[0],
        "{name}: B2 replay TTFT mean {} ms is not below B0's {} ms",
        replay_ttft[2],
        replay_ttft[0]
    );
    Some(())
}

#[test]
fn eviction_replay_evidence_chain_b0_b1_b2() {
    chain("eviction_replay", "warm_A", "replay_A", &EVICTION);
}

#[test]
fn rehydrate_replay_evidence_chain_b0_b1_b2() {
    // Two turns per session: each prefix is seen twice, so it passes the
    // disk filter as KVBM's own policy has it.
    chain(
        "rehydrate_replay",
        "populate",
        "replay",
        &[
            "-p",
            "populate-sessions=4",
            "-p",
            "thrash-sessions=8",
            "-p",
            "turns=2",
            "-p",
            "prefix-tokens=480",
        ],
    );
}

/// Each lie trips its codes, and each cross-check disagreement in
/// `verdict.json` names its figures and tolerance. One more run, honest but
/// in KVBM v2's names (no GDS, so disk hits are staged disk→host→GPU): its
/// replay's disk evidence is `onboard_blocks_d2h`, and it is not host reuse.
/// A Dynamo-format trace (written here as Dynamo's request-trace sink
/// writes it): session A's first turn, eight other sessions whose prompts
/// fill the 96-block GPU tier, then A's second turn, which extends the
/// first. Its hash ids predict that the second turn reuses the first's 10
/// blocks (160 tokens) and that nothing else reuses anything.
fn pressure_trace(path: &std::path::Path) -> u64 {
    let rec = |t: u64, session: &str, ids: Vec<u64>| {
        let n = ids.len() * 16;
        serde_json::json!({
            "schema": "dynamo.request.trace.v1", "event_type": "request_end",
            "event_time_unix_ms": 1_764_600_000_000u64 + t + 50,
            "agent_context": {"session_id": session},
            "request": {"request_id": format!("{session}-{t}"), "input_tokens": n, "output_tokens": 2,
                        "request_received_ms": 1_764_600_000_000u64 + t,
                        "replay": {"trace_block_size": 16, "input_length": n, "input_sequence_hashes": ids}}
        })
        .to_string()
            + "\n"
    };
    let a: Vec<u64> = (0..12).map(|i| 0xA000_0000_0000_0000 + i).collect();
    let mut text = rec(0, "a", a[..10].to_vec());
    for p in 0..8u64 {
        let ids = (0..12).map(|i| (p + 1) << 56 | i).collect();
        text.push_str(&rec(100 + 50 * p, &format!("p{p}"), ids));
    }
    text.push_str(&rec(1000, "a", a.clone()));
    std::fs::write(path, text).unwrap();
    160
}

/// Item 6 of issue 20: the trace's hash ids predict A's reuse; B0 loses it
/// to GPU eviction, B2 brings it back from its CPU and disk tiers, and
/// summary and verdict say both, per phase.
#[test]
fn a_dynamo_trace_shows_the_reuse_its_hash_ids_predict_in_b0_and_b2() {
    let Some((d, disk, profile)) = setup("dynamo trace B0/B2") else {
        return;
    };
    let trace = d.results.path().join("pressure.jsonl");
    let predicted = pressure_trace(&trace);
    let wasm = workload("trace_replay");
    let grant = format!("trace=@{}", trace.display());
    let mut cached_a2 = Vec::new();
    for tier in ["B0", "B2"] {
        let run_id = format!("trace-{tier}");
        let cache = disk.mnt().join(&run_id);
        let endpoint = format!("sim:{}", profile.display());
        let dev = disk.name();
        let mut args = vec![
            "run",
            wasm.to_str().unwrap(),
            "--param",
            &grant,
            "--endpoint",
            &endpoint,
            "--tier-mode",
            tier,
            "--sim-cache-dir",
            cache.to_str().unwrap(),
            "--sim-set",
            "disable_disk_offload_filter=true",
            "--block-device",
            &dev,
            "--results-root",
            d.results.path().to_str().unwrap(),
            "--run-id",
            &run_id,
            "--model-resolve-timeout",
            "10s",
            "--no-collector",
            "gpu",
            "--no-collector",
            "nvme",
            "--no-report",
            "--quiet",
        ];
        if tier == "B2" {
            args.extend(["--sim-set", B2_HOST_BLOCKS]);
        }
        let out = sparkhost(&args, d.cache.path());
        assert_eq!(out.status.code(), Some(0), "{tier}: {}", text(&out));
        let dir = d.results.path().join(&run_id);
        let s = read_json(&dir.join("summary.json"));
        let v = read_json(&dir.join("verdict.json"));
        let ctx = format!("{tier}: {v:#}");
        // The prediction, per phase, in the verdict and in the summary's copy of it.
        for doc in [&v, &s["verdict"]] {
            let h = &doc["signals"]["reuse_opportunity"]["hash_ids"]["phases"]["replay"];
            assert_eq!(h["reusable_tokens"].as_u64(), Some(predicted), "{ctx}");
            assert_eq!(h["requests_with_reuse"].as_u64(), Some(1), "{ctx}");
            assert_eq!(h["requests"].as_u64(), Some(10), "{ctx}");
        }
        let rows = crate::read_jsonl(&dir.join("requests.jsonl"));
        let a2 = rows
            .iter()
            .find(|r| r["prompt_id"] == "trace-000009")
            .unwrap();
        let c = a2["cached_tokens"].as_u64().unwrap_or(0);
        // Nothing but A's second turn could reuse anything.
        assert_eq!(cached(phase(&s, "replay")), c, "{ctx}");
        cached_a2.push(c);
    }
    eprintln!("A's second turn, cached tokens in B0 and B2: {cached_a2:?}; predicted {predicted}");
    assert!(
        cached_a2[0] < predicted,
        "B0 evicted A from the GPU: {cached_a2:?}"
    );
    assert_eq!(
        cached_a2[1], predicted,
        "B2 reuses all that was predicted: {cached_a2:?}"
    );
}

#[test]
fn each_lie_makes_the_verdict_name_the_mismatch() {
    let Some((d, disk, profile)) = setup("lies") else {
        return;
    };
    let sim = Sim {
        d: &d,
        disk: &disk,
        profile,
    };
    for (lie, want) in [
        (
            "metrics-without-io",
            &[
                "DISK_TIER_NO_DISK_IO",
                "KVBM_DISK_BYTES_NOT_ON_DEVICE",
                "WORKER_IO_BELOW_KVBM",
            ][..],
        ),
        (
            "io-without-metrics",
            &["IO_WITHOUT_KVBM_DELTAS", "DEVICE_BYTES_NOT_FROM_KVBM"],
        ),
        ("stale-gauges", &["HIT_RATE_GAUGE_STALE"]),
        (
            "usage-without-cached-tokens",
            &["REUSE_CLIENT_FRONTEND_MISMATCH"],
        ),
    ] {
        let dir = sim.run(
            "eviction_replay",
            "B2",
            &format!("lie-{lie}"),
            &[&["--sim-lie", lie][..], &EVICTION].concat(),
        );
        let v = read_json(&dir.join("verdict.json"));
        let got = codes(&v);
        for code in want {
            assert!(got.contains(&code.to_string()), "{lie}: {code} {v:#}");
        }
        assert_eq!(v["decision_grade"], false, "{lie}: {v:#}");
        let report = std::fs::read_to_string(dir.join("report.md")).unwrap();
        assert!(report.contains("## Cross-checks"), "{lie}: {report}");
        for c in v["cross_checks"]["phases"].as_array().unwrap() {
            for x in c["disagreements"].as_array().unwrap() {
                let code = x["code"].as_str().unwrap();
                assert!(
                    want.contains(&code),
                    "{lie}: an honest source disagreed: {x:#}"
                );
                assert!(x["tolerance"]["absolute"].as_f64().unwrap() > 0.0);
                assert!(report.contains(&format!("`{code}` in ")), "{lie}: {report}");
            }
        }
        let s = read_json(&dir.join("summary.json"));
        assert_eq!(s["simulator"]["lies"][lie.replace('-', "_")], true);
    }

    let dir = sim.run(
        "eviction_replay",
        "B2",
        "kvbm-v2",
        &[&["--sim-kvbm-naming", "v2"][..], &EVICTION].concat(),
    );
    let v = read_json(&dir.join("verdict.json"));
    let s = read_json(&dir.join("summary.json"));
    let replay = phase(&s, "replay_A");
    let ctx = format!("{v:#}\n{replay:#}");
    assert_eq!(v["decision_grade"], true, "{ctx}");
    assert_eq!(kvbm(replay, "onboard_blocks_d2d"), 0.0, "{ctx}");
    let staged = kvbm(replay, "onboard_blocks_d2h");
    assert!(staged > 0.0, "{ctx}");
    let sig = &v["signals"];
    assert!(
        sig["ssd_rehydrate_sources"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x == "kvbm_onboard_blocks_d2h"),
        "{ctx}"
    );
    let check = v["cross_checks"]["phases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["phase"] == "replay_A")
        .unwrap();
    let h2d = kvbm(replay, "onboard_blocks_h2d");
    assert_eq!(
        check["reuse"]["host_only_onboarded_blocks"]
            .as_f64()
            .unwrap(),
        h2d - staged,
        "{ctx}"
    );
    assert_eq!(
        check["reuse"]["disk_onboarded_blocks"].as_f64(),
        Some(staged)
    );
    // Three sources of reuse and three of disk reads, measured, agreeing.
    let r = &check["reuse"];
    assert_eq!(
        r["client_cached_tokens"].as_f64(),
        r["frontend_cached_tokens"].as_f64(),
        "{ctx}"
    );
    assert!(r["kvbm_matched_tokens"].as_f64().unwrap() > 0.0, "{ctx}");
    let k = &check["disk"];
    assert!(k["device_read_bytes"].as_u64().unwrap() > 0, "{ctx}");
    assert!(k["process_read_bytes"].as_u64().unwrap() > 0, "{ctx}");
    assert!(
        check["disagreements"].as_array().unwrap().is_empty(),
        "{ctx}"
    );
}

#[test]
fn sim_command_serves_until_sigterm_and_removes_its_cache() {
    let Some(disk) = LoopDisk::create("sim command") else {
        return;
    };
    let cache = disk.mnt().join("kv");
    let mut child = Command::new(env!("CARGO_BIN_EXE_sparkhost"))
        .args([
            "sim",
            "--profile",
            "tiny",
            "--tier-mode",
            "B2",
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
            "--cache-dir",
            cache.to_str().unwrap(),
            "--set",
            "gpu_num_blocks=32",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Killed on any failure below, so no simulator outlives the test.
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let stdout = child.stdout.take().unwrap();
    let mut child = Kill(child);
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stdout));
    let mut banner = String::new();
    for l in lines.by_ref() {
        let l = l.unwrap();
        banner.push_str(&l);
        banner.push('\n');
        if l.starts_with("Ctrl-C") {
            break;
        }
    }
    assert!(banner.contains("SIMULATED"), "{banner}");
    let url = banner
        .split_whitespace()
        .find(|w| w.starts_with("http://127.0.0.1:") && !w.ends_with("/metrics"))
        .unwrap()
        .to_owned();
    assert!(
        std::fs::read_dir(&cache).unwrap().count() == 1,
        "the disk tier's file"
    );
    let d = dirs();
    let out = sparkhost(&["smoke", "--endpoint", &url], d.cache.path());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    sh("kill", &["-TERM", &child.0.id().to_string()]).unwrap();
    let status = child.0.wait().unwrap();
    assert!(status.success(), "{status:?}");
    assert!(
        !cache.exists(),
        "the cache file and the directory the simulator made are removed"
    );
}

#[test]
fn sim_flags_are_validated_by_name() {
    let d = dirs();
    for (args, want) in [
        (vec!["sim", "--tier-mode", "B7"], "--tier-mode"),
        (vec!["sim", "--listen", "nowhere"], "--listen"),
        (vec!["sim", "--metrics-listen", "1.2.3"], "--metrics-listen"),
        (vec!["sim", "--profile", "nope"], "--profile"),
        (vec!["sim", "--set", "bogus=1"], "--set bogus=1"),
        (vec!["sim", "--set", "block_size=0"], "block_size"),
        (vec!["sim", "--lie", "sometimes"], "--lie"),
        (vec!["sim", "--kvbm-naming", "v3"], "--kvbm-naming"),
        (vec!["sim", "--disk-timing", "guess"], "--disk-timing"),
        (vec!["sim", "--set", "novalue"], "--set"),
    ] {
        let out = sparkhost(&args, d.cache.path());
        assert_ne!(out.status.code(), Some(0), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "{args:?}: {err}");
    }
    let wasm = workload("synthetic");
    let w = wasm.to_str().unwrap();
    for (args, want) in [
        (vec!["run", w, "--endpoint", "sim:nope"], "--endpoint sim:"),
        (
            vec!["run", w, "--endpoint", "sim:tiny", "--sim-set", "x=1"],
            "--sim-set x=1",
        ),
        (
            vec!["run", w, "--sim-cache-dir", "/tmp"],
            "--sim-cache-dir only applies with --endpoint sim",
        ),
    ] {
        let mut args = args;
        args.extend(["--results-root", d.results.path().to_str().unwrap()]);
        let out = sparkhost(&args, d.cache.path());
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", text(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "{args:?}: {err}");
        assert!(
            std::fs::read_dir(d.results.path())
                .unwrap()
                .next()
                .is_none(),
            "a flag error makes no run directory"
        );
    }
}

#[test]
fn nothing_at_the_endpoint_points_at_endpoint_sim() {
    let d = dirs();
    // A port nothing listens on: bind one, then let it go.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let out = sparkhost(
        &[
            "run",
            workload("synthetic").to_str().unwrap(),
            "--endpoint",
            &endpoint,
            "--model-resolve-timeout",
            "1s",
            "--model-resolve-poll",
            "200ms",
            "--kv-mode",
            "off",
            "--no-telemetry",
            "--results-root",
            d.results.path().to_str().unwrap(),
            "--run-id",
            "nothing",
        ],
        d.cache.path(),
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("nothing answered") && err.contains("--endpoint sim"),
        "{err}"
    );
    let s = read_json(&d.results.path().join("nothing/summary.json"));
    assert!(s.get("simulator").is_none());
}

#[test]
fn smoke_against_endpoint_sim() {
    let d = dirs();
    let out = sparkhost(&["smoke", "--endpoint", "sim:tiny"], d.cache.path());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("SIMULATED"), "{stdout}");
    assert_eq!(stdout.matches("  ok ").count(), 4, "{stdout}");
}

/// Bytes read from `dev` so far, by `/proc/diskstats` (512-byte sectors).
fn device_read_bytes(dev: &str) -> u64 {
    std::fs::read_to_string("/proc/diskstats")
        .unwrap()
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.get(2) == Some(&dev))
        .map(|f| f[5].parse::<u64>().unwrap() * 512)
        .unwrap()
}

/// The physical ceiling end to end: `calibrate-disk` measures the loop
/// device with O_DIRECT (its reads reach the device: no page cache), a
/// B2 run given the profile takes its disk bandwidth from it, starts from
/// an emptied cache (`--kv-reset-sim`), and reports its disk reads as a
/// fraction of the measured figure, in summary.json and report.md.
#[test]
fn calibrate_disk_sets_the_ceiling_a_b2_run_is_measured_against() {
    let Some((d, disk, profile)) = setup("calibrate-disk") else {
        return;
    };
    let cal = disk.mnt().join("calibrate");
    std::fs::create_dir(&cal).unwrap();
    let out_file = d.results.path().join("device-profile.json");
    let before = device_read_bytes(&disk.name());
    let out = sparkhost(
        &[
            "calibrate-disk",
            "--dir",
            cal.to_str().unwrap(),
            "--size",
            "16M",
            "--block-size",
            "32K",
            "--queue-depth",
            "4",
            "--max-test-time",
            "30s",
            "--output",
            out_file.to_str().unwrap(),
        ],
        d.cache.path(),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let read = device_read_bytes(&disk.name()) - before;
    assert!(
        read >= 32 << 20,
        "seq_read + rand_read of a 16 MiB file read {read} bytes from the device: the page cache served them"
    );
    assert_eq!(
        std::fs::read_dir(&cal).unwrap().count(),
        0,
        "test file removed"
    );
    let p = read_json(&out_file);
    assert_eq!(p["kind"], "sparkhost-device-profile");
    assert_eq!(p["block_device"], disk.name().as_str());
    assert_eq!(p["o_direct"], true);
    let names: Vec<&str> = p["tests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["seq_write", "seq_read", "rand_read", "rand_write"]);
    let rand = p["tests"][2]["gbps"].as_f64().unwrap();
    assert!(rand > 0.0);
    assert_eq!(p["tests"][2]["block_size_bytes"], 32 << 10);

    let sim = Sim {
        d: &d,
        disk: &disk,
        profile,
    };
    let extra = [
        &EVICTION[..],
        &[
            "--device-profile",
            out_file.to_str().unwrap(),
            "--kv-reset-sim",
        ],
    ]
    .concat();
    let dir = sim.run("eviction_replay", "B2", "ceiling-B2", &extra);
    let s = read_json(&dir.join("summary.json"));
    let m = read_json(&dir.join("manifest.json"));
    let c = &s["disk_ceiling"];
    assert_eq!(c["same_device"], true, "{c:#}");
    assert_eq!(c["random_read_gbps"].as_f64(), Some(rand));
    assert_eq!(c["simulated"], true);
    let statement = c["statement"].as_str().unwrap();
    let best = &c["best"];
    match best["achieved_read_gbps"].as_f64() {
        Some(achieved) => {
            assert!(achieved > 0.0, "{c:#}");
            let frac = best["fraction_of_random_read"].as_f64().unwrap();
            assert!((frac - achieved / rand).abs() < 1e-9, "{c:#}");
            assert!(
                statement.starts_with(&format!(
                    "the SSD tier delivered {achieved:.2} GB/s of {rand:.2} GB/s measured"
                )),
                "{statement}"
            );
        }
        // A few MiB from a loop device whose image is in the page cache can
        // take under one 1 ms io_ticks tick: then no bandwidth is claimed.
        None => {
            let p = &c["phases"][0];
            assert!(p["read_bytes"].as_u64().unwrap() > 0, "{c:#}");
            assert_eq!(p["busy_s"], 0.0, "{c:#}");
            assert!(statement.contains("too briefly"), "{statement}");
        }
    }
    assert!(c["host_tier_note"].as_str().unwrap().contains("LPDDR5x"));
    // The simulator's disk bandwidth is the measured one.
    assert_eq!(
        m["simulator"]["profile"]["disk_read_gbps"].as_f64(),
        Some(rand)
    );
    let digest = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(std::fs::read(&out_file).unwrap()))
    };
    assert_eq!(m["device_profile_sha256"], digest.as_str());
    assert_eq!(m["stack_config_sha256"], Value::Null);
    // The simulator exposes no build info: recorded as not seen.
    assert_eq!(m["server_build"], Value::Null);
    let sha = m["sparkhost_git_sha"].as_str().unwrap();
    assert!(
        sha == "unknown" || (sha.len() == 40 && sha.bytes().all(|b| b.is_ascii_hexdigit())),
        "{sha}"
    );
    let r = &s["kv_reset"];
    assert_eq!(
        (r["method"].as_str(), r["ok"].as_bool()),
        (Some("sim"), Some(true)),
        "{r}"
    );
    assert_eq!(r["status"], 200);
    let md = std::fs::read_to_string(dir.join("report.md")).unwrap();
    assert!(
        md.contains("## Disk Ceiling") && md.contains("LPDDR5x"),
        "{md}"
    );
    assert!(md.contains(statement), "{md}");
    assert!(md.contains("KV reset before the first phase: sim"), "{md}");
}

/// Request 35 of 40 is too long for the engine; with `--lookahead 8` the
/// look-ahead window alone would have sent 34 requests before finding it.
/// The whole plan is checked first: nothing is sent.
#[test]
fn a_late_over_long_prompt_is_refused_before_anything_is_sent() {
    let d = dirs();
    let trace = d.results.path().join("trace.jsonl");
    let rows: String = (0..40)
        .map(|i| {
            // 64-token blocks: one for a short prompt, 47 for the long one.
            let (len, blocks) = if i == 34 { (3000, 47) } else { (64, 1) };
            let ids: Vec<String> = (0..blocks).map(|k| (i * 1000 + k).to_string()).collect();
            format!(
                "{{\"timestamp\": {}, \"input_length\": {len}, \"output_length\": 4, \"hash_ids\": [{}]}}\n",
                i * 5,
                ids.join(", ")
            )
        })
        .collect();
    std::fs::write(&trace, rows).unwrap();
    let wasm = workload("trace_replay");
    let out = sparkhost(
        &[
            "run",
            wasm.to_str().unwrap(),
            "--param",
            &format!("trace=@{}", trace.display()),
            "--param",
            "block-size=64",
            "--endpoint",
            "sim:tiny",
            "--kv-mode",
            "off",
            "--lookahead",
            "8",
            "--engine-max-input-tokens",
            "1024",
            "--input-token-safety-margin",
            "16",
            "--no-telemetry",
            "--no-report",
            "--results-root",
            d.results.path().to_str().unwrap(),
            "--run-id",
            "late",
            "--quiet",
        ],
        d.cache.path(),
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let dir = d.results.path().join("late");
    let s = read_json(&dir.join("summary.json"));
    assert_eq!(s["invalid_reason"], "prompt_preflight_failed", "{s:#}");
    assert_eq!(s["dispatch"]["recorded"], 0);
    assert_eq!(s["dispatch"]["unsent"], 40);
    let w = &s["preflight"]["whole_plan"];
    assert_eq!(
        (w["checked"].as_u64(), w["failure_count"].as_u64()),
        (Some(40), Some(1)),
        "{w}"
    );
    assert_eq!(w["complete"], true);
    assert!(
        s["preflight"]["errors"][0]
            .as_str()
            .unwrap()
            .starts_with("trace-000034: "),
        "{s:#}"
    );
    let rows = std::fs::read_to_string(dir.join("requests.jsonl")).unwrap_or_default();
    assert!(rows.trim().is_empty(), "nothing may be sent: {rows}");
    let c = read_json(&dir.join("config.json"));
    assert_eq!(c["preflight"]["result"]["whole_plan"]["complete"], true);
}

/// `--tokenizer` takes a model directory (its chat template's digest goes
/// into the tokenizer id), and a simulator whose model is that directory
/// is counted with it without the flag.
#[test]
fn a_model_directory_is_the_tokenizer() {
    let tok = crate::tokenizer();
    let model_dir = tok.parent().unwrap().canonicalize().unwrap();
    let d = dirs();
    let run = |id: &str, extra: &[&str]| {
        let wasm = workload("synthetic");
        let mut args = vec![
            "run",
            wasm.to_str().unwrap(),
            "--endpoint",
            "sim:tiny",
            "--kv-mode",
            "off",
            "--requests",
            "2",
            "--warmup",
            "0",
            "--param",
            "short-range=16:32",
            "--max-tokens",
            "4",
            "--no-telemetry",
            "--no-report",
            "--results-root",
            d.results.path().to_str().unwrap(),
            "--run-id",
            id,
            "--quiet",
        ];
        args.extend_from_slice(extra);
        let out = sparkhost(&args, d.cache.path());
        assert_eq!(out.status.code(), Some(0), "{id}: {}", text(&out));
        read_json(&d.results.path().join(id).join("config.json"))["tokenizer"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let file_id = run("file", &["--tokenizer", tok.to_str().unwrap()]);
    let dir_id = run("dir", &["--tokenizer", model_dir.to_str().unwrap()]);
    assert!(
        file_id.starts_with("sha256:") && !file_id.contains('+'),
        "{file_id}"
    );
    assert!(
        dir_id.starts_with(&format!("{file_id}+chat_template:sha256:")),
        "{dir_id}"
    );
    let set = format!("model={}", model_dir.display());
    let auto = run("auto", &["--sim-set", &set]);
    assert_eq!(auto, dir_id, "the simulator's model directory was not used");
    assert_eq!(run("none", &[]), "heuristic:v1");
}
