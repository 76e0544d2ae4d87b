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
