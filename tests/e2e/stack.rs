//! `sparkhost stack` and `health` through the real CLI: the simulator stack
//! in B0/B1/B2 (up, status, health, a run with `--stack`, down), a stack
//! mislabelled on purpose caught as `tier_mode_mismatch`, the Dynamo mocker
//! in B0 and B1 with B2 refused, and the DGX Spark profile rendered per mode.
//! Every stack is stopped by `stack down`, and a guard stops it again if an
//! assertion fails first.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::{dirs, read_json, repo, sparkhost, text, workload};

/// Runs `stack down` on drop, so a failed assertion leaves no process.
struct Up {
    state: PathBuf,
    cache: PathBuf,
}

impl Drop for Up {
    fn drop(&mut self) {
        if self.state.join("stack.json").exists() {
            let _ = sparkhost(
                &["stack", "down", "--state-dir", self.state.to_str().unwrap()],
                &self.cache,
            );
        }
    }
}

fn up(state: &Path, cache: &Path, profile: &str, mode: &str, vars: &[String]) -> (Up, String) {
    let mut args: Vec<String> = [
        "stack",
        "up",
        "--profile",
        profile,
        "--tier-mode",
        mode,
        "--state-dir",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.push(state.display().to_string());
    for v in vars {
        args.extend(["--var".into(), v.clone()]);
    }
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = sparkhost(&a, cache);
    let guard = Up {
        state: state.to_path_buf(),
        cache: cache.to_path_buf(),
    };
    assert!(out.status.success(), "{profile} {mode}: {}", text(&out));
    let endpoint = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(endpoint.starts_with("http://127.0.0.1:"), "{endpoint}");
    (guard, endpoint)
}

fn pids(state: &Path) -> Vec<u32> {
    let s = read_json(&state.join("stack.json"));
    s["processes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["pid"].as_u64().unwrap() as u32)
        .collect()
}

fn down(state: &Path, cache: &Path) {
    let ps = pids(state);
    let out = sparkhost(
        &["stack", "down", "--state-dir", state.to_str().unwrap()],
        cache,
    );
    assert!(out.status.success(), "{}", text(&out));
    for p in ps {
        assert!(
            !Path::new(&format!("/proc/{p}")).exists()
                || std::fs::read_to_string(format!("/proc/{p}/stat"))
                    .is_ok_and(|s| s.contains(") Z")),
            "pid {p} still runs after stack down"
        );
    }
    assert!(!state.join("stack.json").exists());
}

fn status_json(state: &Path, cache: &Path) -> (bool, Value) {
    let out = sparkhost(
        &[
            "stack",
            "status",
            "--json",
            "--state-dir",
            state.to_str().unwrap(),
        ],
        cache,
    );
    let v: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("status --json: {e}: {}", text(&out)));
    (out.status.success(), v)
}

/// The simulator profile of tests/e2e/sim.rs, small enough that
/// eviction_replay's pressure phase spills the host tier to disk in B2.
const SIM_PROFILE: &str = r#"base = "tiny"
name = "stack-evidence"
num_layers = 8
max_model_len = 1024
max_num_batched_tokens = 2048
gpu_num_blocks = 96
cpu_num_blocks = 48
disk_num_blocks = 2048
prefill_us_per_token = 50.0
disable_disk_offload_filter = true
"#;

fn run_on_stack(
    state: &Path,
    results: &Path,
    cache: &Path,
    run_id: &str,
    label: &str,
) -> (Option<i32>, PathBuf, String) {
    let wasm = workload("eviction_replay");
    let out = sparkhost(
        &[
            "run",
            wasm.to_str().unwrap(),
            "--stack",
            state.to_str().unwrap(),
            "--tier-mode",
            label,
            "--results-root",
            results.to_str().unwrap(),
            "--run-id",
            run_id,
            "--stream",
            "--max-tokens",
            "8",
            "-p",
            "a-requests=4",
            "-p",
            "b-requests=8",
            "-p",
            "warmup=0",
            "-p",
            "long-range=480:480",
            "--model-resolve-timeout",
            "10s",
            "--no-collector",
            "gpu",
            "--no-collector",
            "nvme",
            "--quiet",
        ],
        cache,
    );
    (out.status.code(), results.join(run_id), text(&out))
}

#[test]
fn sim_stack_up_status_health_run_down_in_every_mode() {
    let d = dirs();
    let profile = d.results.path().join("sim.toml");
    std::fs::write(&profile, SIM_PROFILE).unwrap();
    let sim_profile = format!("sim_profile={}", profile.display());
    for mode in ["B0", "B1", "B2"] {
        let state = d.results.path().join(format!("stack-{mode}"));
        let (_guard, endpoint) = up(
            &state,
            d.cache.path(),
            "sim",
            mode,
            std::slice::from_ref(&sim_profile),
        );
        let (ok, st) = status_json(&state, d.cache.path());
        assert!(ok, "{mode}: {st:#}");
        assert_eq!(st["stack"]["tier_mode"], mode);
        assert_eq!(st["stack"]["endpoint"], endpoint.as_str());
        assert_eq!(
            st["health"]["kvbm_answered"],
            mode != "B0",
            "{mode}: {st:#}"
        );
        assert_eq!(st["tier_mode_mismatch"], serde_json::json!([]));
        let pid = pids(&state)[0];
        assert!(Path::new(&format!("/proc/{pid}")).exists());
        let h = sparkhost(
            &["health", "--state-dir", state.to_str().unwrap()],
            d.cache.path(),
        );
        assert!(h.status.success(), "{}", text(&h));
        let h = sparkhost(&["health", "--endpoint", &endpoint], d.cache.path());
        assert!(
            h.status.success() && String::from_utf8_lossy(&h.stdout).contains("healthy"),
            "{}",
            text(&h)
        );

        if mode == "B1" {
            let (code, dir, out) =
                run_on_stack(&state, d.results.path(), d.cache.path(), "b1", "B1");
            assert_eq!(code, Some(0), "{out}");
            let m = read_json(&dir.join("manifest.json"));
            assert_eq!(m["stack"]["config_sha256"], st["stack"]["config_sha256"]);
            assert_eq!(m["stack"]["profile"], "sim");
            assert_eq!(m["tier_mode"], "B1");
            assert_eq!(m["base_url"], endpoint.as_str());
            // A label that disagrees with the stack is refused before anything is sent.
            let (code, dir, out) =
                run_on_stack(&state, d.results.path(), d.cache.path(), "b1-as-b2", "B2");
            assert_eq!(code, Some(1), "{out}");
            assert!(out.contains("disagrees with --stack"), "{out}");
            assert!(!dir.exists());
        }
        down(&state, d.cache.path());
    }
}

/// The stack says B1, but its engine runs B2 (`sim_tier` set apart on
/// purpose): KVBM offloads to disk, and the run is invalid with
/// `tier_mode_mismatch` naming the counter and phase.
#[test]
fn a_mislabelled_stack_is_caught_as_tier_mode_mismatch() {
    let d = dirs();
    let profile = d.results.path().join("sim.toml");
    std::fs::write(&profile, SIM_PROFILE).unwrap();
    let state = d.results.path().join("stack");
    let (_guard, _) = up(
        &state,
        d.cache.path(),
        "sim",
        "B1",
        &[
            format!("sim_profile={}", profile.display()),
            "sim_tier=B2".into(),
        ],
    );
    let (code, dir, out) = run_on_stack(
        &state,
        d.results.path(),
        d.cache.path(),
        "mislabelled",
        "B1",
    );
    assert_eq!(code, Some(2), "{out}");
    let v = read_json(&dir.join("verdict.json"));
    assert_eq!(v["run_valid"], false);
    assert_eq!(v["invalid_reason"], "tier_mode_mismatch", "{v:#}");
    let detail = v["details"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .find(|s| s.starts_with("tier_mode_mismatch"))
        .unwrap()
        .to_string();
    assert!(
        detail.contains("B1 has the disk tier off") && detail.contains("kvbm_offload_blocks_"),
        "{detail}"
    );
    let s = read_json(&dir.join("summary.json"));
    assert_eq!(s["invalid_reason"], "tier_mode_mismatch", "{s:#}");
    // The stack's own check sees the same once traffic moved blocks.
    let (ok, st) = status_json(&state, d.cache.path());
    assert!(!ok);
    assert!(
        st["tier_mode_mismatch"][0]
            .as_str()
            .unwrap()
            .contains("offloaded to disk"),
        "{st:#}"
    );
    down(&state, d.cache.path());
}

#[test]
fn mocker_stack_b0_and_b1_run_and_b2_is_refused() {
    let venv = std::env::var("SPARKHOST_DYNAMO_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|_| repo().join(".venv-dynamo"));
    let model = std::env::var("SPARKHOST_DYNAMO_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|_| repo().join("target/dynamo-model/tiny-llama"));
    assert!(
        venv.join("bin/python").exists(),
        "no Dynamo venv at {}; run `make dynamo`",
        venv.display()
    );
    let vars = vec![
        format!("venv={}", venv.display()),
        format!("model_dir={}", model.display()),
        format!(
            "broker_script={}",
            repo().join("scripts/dynamo/zmq_broker.py").display()
        ),
    ];
    let d = dirs();
    for mode in ["B0", "B1"] {
        let state = d.results.path().join(format!("mocker-{mode}"));
        let (_guard, endpoint) = up(&state, d.cache.path(), "dynamo-mocker", mode, &vars);
        let (ok, st) = status_json(&state, d.cache.path());
        assert!(ok, "{mode}: {st:#}");
        assert_eq!(st["health"]["models"], serde_json::json!(["tiny-llama"]));
        let engine: Value = serde_json::from_str(
            &std::fs::read_to_string(state.join("mocker_engine_args.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(
            engine["engine"].get("native_host_offload").is_some(),
            mode == "B1",
            "{engine:#}"
        );
        let smoke = sparkhost(&["smoke", "--endpoint", &endpoint], d.cache.path());
        assert!(smoke.status.success(), "{}", text(&smoke));
        assert_eq!(pids(&state).len(), 3);
        down(&state, d.cache.path());
    }
    let state = d.results.path().join("mocker-B2");
    let mut args = vec![
        "stack",
        "up",
        "--profile",
        "dynamo-mocker",
        "--tier-mode",
        "B2",
        "--state-dir",
    ];
    let s = state.display().to_string();
    args.push(&s);
    let out = sparkhost(&args, d.cache.path());
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no live disk tier"),
        "{}",
        text(&out)
    );
    assert!(!state.join("stack.json").exists());
}

#[test]
fn dgx_spark_profile_renders_per_mode() {
    let d = dirs();
    let mut configs = Vec::new();
    for mode in ["B0", "B1", "B2"] {
        let out = sparkhost(
            &[
                "stack",
                "render",
                "--profile",
                "dgx-spark-trtllm",
                "--tier-mode",
                mode,
                "--var",
                "model_profile=llama33_70b_nvfp4",
            ],
            d.cache.path(),
        );
        assert!(out.status.success(), "{}", text(&out));
        let o = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            o.contains("--extra-engine-args /etc/sparkhost/kvbm_llm_api_config.yaml"),
            "{o}"
        );
        assert!(o.contains("nvidia/Llama-3.3-70B-Instruct-NVFP4"), "{o}");
        assert!(o.contains("free_gpu_memory_fraction: 0.60"), "{o}");
        assert_eq!(o.contains("kv_connector_config:"), mode != "B0", "{o}");
        assert_eq!(
            o.contains("env DYN_KVBM_DISK_CACHE_GB=32"),
            mode == "B2",
            "{o}"
        );
        assert_eq!(o.contains("env DYN_KVBM_METRICS=true"), mode != "B0", "{o}");
        assert_eq!(
            o.contains("unset: DYN_KVBM_DISK_CACHE_GB"),
            mode != "B2",
            "{o}"
        );
        let hash = o
            .lines()
            .find_map(|l| l.trim().strip_prefix("config sha256 "))
            .unwrap()
            .to_string();
        configs.push(hash);
    }
    configs.dedup();
    assert_eq!(configs.len(), 3, "each mode has its own config hash");
}
