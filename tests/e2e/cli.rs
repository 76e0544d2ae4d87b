//! The command line itself: `run --help` under the README's headings,
//! `matrix --help`'s file format, completions and man pages, `--version`,
//! the seed harness's flags, `--store-responses`, a closed stdout, and the
//! design card's `sparkhost run workloads/copilot.wasm` with and without a
//! server. Servers here are the in-process simulator (`--endpoint sim:tiny`)
//! or a port nothing listens on.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

use crate::{dirs, read_json, read_jsonl, repo, sparkhost, text, workload};

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_sparkhost"));
    c.env("SPARKHOST_LOG", "warn")
        .env_remove("SPARKHOST_ENDPOINT");
    c
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A small run of `wasm` on the tiny simulator into `root/id`.
fn sim_run(wasm: &Path, root: &Path, id: &str, extra: &[&str], cache: &Path) -> Output {
    let mut args = vec![
        "run",
        wasm.to_str().unwrap(),
        "--endpoint",
        "sim:tiny",
        "--kv-mode",
        "off",
        "--no-telemetry",
        "--no-report",
        "--max-tokens",
        "4",
        "--results-root",
        root.to_str().unwrap(),
        "--run-id",
        id,
        "--quiet",
    ];
    args.extend_from_slice(extra);
    sparkhost(&args, cache)
}

const SYNTHETIC_SMALL: [&str; 6] = [
    "--requests",
    "3",
    "--warmup",
    "1",
    "--param",
    "short-range=16:32",
];

#[test]
fn run_help_groups_every_flag_under_the_readme_headings() {
    let out = bin().args(["run", "--help"]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let help = stdout(&out);
    let headings: Vec<&str> = sparkhost::cli::heading::ALL.to_vec();
    // Each heading once, in the README's order.
    let mut at = Vec::new();
    for h in &headings {
        let line = format!("\n{h}:\n");
        assert_eq!(help.matches(&line).count(), 1, "{h}:\n{help}");
        at.push(help.find(&line).unwrap());
    }
    assert!(at.windows(2).all(|w| w[0] < w[1]), "{at:?}\n{help}");
    // A flag sits in its group's section.
    // A section runs to the next heading (a line at column 0 ending in ':').
    let section = |h: &str| {
        let start = help.find(&format!("\n{h}:\n")).unwrap() + h.len() + 3;
        help[start..]
            .lines()
            .take_while(|l| l.starts_with(' ') || l.is_empty())
            .collect::<Vec<_>>()
            .join("\n")
    };
    for (h, flag) in [
        ("Endpoint", "--api-key"),
        ("Endpoint", "--model-resolve-timeout"),
        ("Load", "--concurrency"),
        ("Workload", "--param"),
        ("Preflight", "--engine-max-input-tokens"),
        ("Cache hygiene", "--kv-reset-url"),
        ("Disk ceiling", "--device-profile"),
        ("Transport", "--stream"),
        ("Labels", "--tier-mode"),
        ("Simulator (--endpoint sim)", "--sim-set"),
        ("Sandbox", "--workload-memory-mib"),
        ("Telemetry", "--no-collector"),
        ("Verdict", "--max-error-rate"),
        ("Reports", "--slo"),
        ("Output", "--store-responses"),
    ] {
        assert!(section(h).contains(flag), "{flag} not under {h}:\n{help}");
    }
    // Nothing of `run`'s own is left under the generic heading.
    let options = section("Options");
    for line in options.lines().filter(|l| l.trim_start().starts_with('-')) {
        let l = line.trim_start();
        assert!(
            l.starts_with("--log") || l.starts_with("-h") || l.starts_with("-V"),
            "{line:?} has no heading:\n{help}"
        );
    }
    // The seed's refused flags stay out of the help.
    assert!(!help.contains("--scenario"), "{help}");
    // The README's table has the same groups in the same order.
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let table = readme
        .split("| group | flags |\n|---|---|\n")
        .nth(1)
        .unwrap();
    let groups: Vec<String> = table
        .lines()
        .take_while(|l| l.starts_with("| "))
        .map(|l| l.split('|').nth(1).unwrap().trim().to_owned())
        .collect();
    let want: Vec<String> = headings
        .iter()
        .map(|h| h.trim_end_matches(" (--endpoint sim)").to_lowercase())
        .collect();
    assert_eq!(groups, want);
}

#[test]
fn matrix_help_prints_the_documented_file_format() {
    let out = bin().args(["matrix", "--help"]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let help = stdout(&out);
    let doc = std::fs::read_to_string(repo().join("docs/matrix.example.toml")).unwrap();
    assert!(help.contains("docs/matrix.example.toml"), "{help}");
    for line in doc.lines().filter(|l| !l.trim().is_empty()) {
        assert!(help.contains(line.trim_end()), "{line:?} missing:\n{help}");
    }
}

#[test]
fn bash_completion_loads_and_man_pages_render() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let out = bin().args(["completions", shell]).output().unwrap();
        assert!(out.status.success(), "{shell}: {}", text(&out));
        let s = stdout(&out);
        assert!(
            s.contains("store-responses"),
            "{shell}: run's flags are listed"
        );
    }
    // bash itself loads the script and registers the completion.
    let d = tempfile::tempdir().unwrap();
    let script = d.path().join("sparkhost.bash");
    let out = bin().args(["completions", "bash"]).output().unwrap();
    std::fs::write(&script, &out.stdout).unwrap();
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "source {} && complete -p sparkhost",
            script.display()
        ))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(stdout(&out).contains("sparkhost"), "{}", text(&out));

    let out = bin().arg("man").output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let page = stdout(&out);
    assert!(
        page.starts_with(".ie") || page.contains(".TH sparkhost"),
        "{page}"
    );
    assert!(page.contains("completions"), "subcommands are listed");
    let out = bin().args(["man", "run"]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let run_page = stdout(&out);
    assert!(run_page.contains(".TH sparkhost-run"), "{run_page}");
    assert!(run_page.contains("concurrency"), "{run_page}");
    let out = bin().args(["man", "no-such"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("one of: run"));
    // Where groff is installed, the page formats cleanly (`-k`: UTF-8
    // input through preconv, as man does).
    if Command::new("groff").arg("--version").output().is_ok() {
        let mut child = Command::new("groff")
            .args(["-k", "-man", "-Tutf8", "-ww"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(run_page.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", text(&out));
        assert!(out.stderr.is_empty(), "{}", text(&out));
        assert!(stdout(&out).contains("concurrency"), "{}", text(&out));
    }
}

#[test]
fn version_names_the_git_commit_the_manifest_records() {
    let out = bin().arg("--version").output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let sha = env!("SPARKHOST_GIT_SHA");
    assert_eq!(
        stdout(&out),
        format!("sparkhost {} (git {sha})\n", env!("CARGO_PKG_VERSION"))
    );
    // A test build is made in a git checkout (CI: a fresh clone).
    assert!(
        sha.len() == 40 && sha.bytes().all(|b| b.is_ascii_hexdigit()),
        "{sha}"
    );
    let d = dirs();
    let out = sim_run(
        &workload("synthetic"),
        d.results.path(),
        "v",
        &SYNTHETIC_SMALL,
        d.cache.path(),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let m = read_json(&d.results.path().join("v/manifest.json"));
    assert!(m.to_string().contains(sha), "{m:#}");
}

#[test]
fn seed_flags_are_aliases_or_refused_naming_the_equivalent() {
    let d = dirs();
    let wasm = workload("synthetic");
    let w = wasm.to_str().unwrap();
    for (flags, says) in [
        (
            vec!["--scenario", "local_copilot_burst"],
            "sparkhost run workloads/copilot.wasm",
        ),
        (vec!["--scenario", "standard"], "workloads/synthetic.wasm"),
        (vec!["--prompt-set", "long"], "--param set=long"),
        (
            vec!["--long-range", "6000:7600"],
            "--param long-range=6000:7600",
        ),
    ] {
        let mut args = vec!["run", w, "--endpoint", "sim:tiny"];
        args.extend_from_slice(&flags);
        let out = sparkhost(&args, d.cache.path());
        assert_eq!(out.status.code(), Some(1), "{flags:?}: {}", text(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{flags:?}: {err}");
        assert!(err.contains("seed harness"), "{flags:?}: {err}");
    }
    let out = sparkhost(
        &["run", w, "--collect-telemetry", "--no-telemetry"],
        d.cache.path(),
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));

    // The one-to-one flags run as their sparkhost spellings.
    let root = d.results.path();
    let mut args = vec![
        "run",
        w,
        "--base-url",
        "sim:tiny",
        "--model-id",
        "auto",
        "--model-resolve-timeout-s",
        "20",
        "--model-resolve-poll-s",
        "0.5",
        "--timeout-s",
        "45",
        "--telemetry-interval-s",
        "2",
        "--kvbm-metrics-timeout-s",
        "2",
        "--collect-telemetry",
        "--log-level",
        "INFO",
        "--kv-mode",
        "off",
        "--no-report",
        "--max-tokens",
        "4",
        "--results-root",
        root.to_str().unwrap(),
        "--run-id",
        "seed",
        "--quiet",
    ];
    args.extend_from_slice(&SYNTHETIC_SMALL);
    let out = sparkhost(&args, d.cache.path());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let c = read_json(&root.join("seed/config.json"));
    assert_eq!(c["client_request_parameters"]["timeout_s"], 45.0, "{c:#}");
    let m = read_json(&root.join("seed/manifest.json"));
    assert!(m["simulator"]["simulated"].as_bool().unwrap(), "{m:#}");
    // --log-level INFO reached the log filter: info lines on stderr.
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("INFO"), "{err}");
}

#[test]
fn store_responses_writes_the_seeds_layout_and_is_off_by_default() {
    let d = dirs();
    let wasm = workload("synthetic");
    let root = d.results.path();
    let mut extra = vec!["--store-responses"];
    extra.extend_from_slice(&SYNTHETIC_SMALL);
    let out = sim_run(&wasm, root, "on", &extra, d.cache.path());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let dir = root.join("on");
    let rows = read_jsonl(&dir.join("requests.jsonl"));
    assert_eq!(rows.len(), 4);
    let mut names = Vec::new();
    for r in &rows {
        let path = r["response_path"].as_str().expect("every response stored");
        let want = format!(
            "responses/{}_{:06}_{}.txt",
            r["phase"].as_str().unwrap(),
            r["phase_request_index"].as_u64().unwrap(),
            r["prompt_id"].as_str().or(r["id"].as_str()).unwrap()
        );
        assert_eq!(path, want, "{r}");
        let body = std::fs::read_to_string(dir.join(path)).unwrap();
        assert!(!body.is_empty(), "{path}");
        assert_eq!(
            body.chars().count() as u64,
            r["output_len_chars"].as_u64().unwrap(),
            "{path}"
        );
        names.push(path.to_owned());
    }
    let on_disk = std::fs::read_dir(dir.join("responses")).unwrap().count();
    assert_eq!(on_disk, names.len());

    let out = sim_run(&wasm, root, "off", &SYNTHETIC_SMALL, d.cache.path());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(!root.join("off/responses").exists());
    for r in read_jsonl(&root.join("off/requests.jsonl")) {
        assert_eq!(r["response_path"], Value::Null, "{r}");
    }
}

/// `run` writes its messages to stderr: a reader of stdout that went away
/// does not stop a run that is measuring.
#[test]
fn run_with_a_closed_stdout_finishes_its_run() {
    let d = dirs();
    let wasm = workload("synthetic");
    let root = d.results.path().to_str().unwrap().to_owned();
    let mut child = bin()
        .args([
            "run",
            wasm.to_str().unwrap(),
            "--endpoint",
            "sim:tiny",
            "--kv-mode",
            "off",
            "--no-telemetry",
            "--no-report",
            "--max-tokens",
            "4",
            "--results-root",
            &root,
            "--run-id",
            "pipe",
        ])
        .args(SYNTHETIC_SMALL)
        .env("SPARKHOST_CACHE_DIR", d.cache.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let s = read_json(&d.results.path().join("pipe/summary.json"));
    assert_eq!(s["run_valid"], true, "{s:#}");
}

/// A port on 127.0.0.1 that nothing listens on (bound, then closed).
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// Kills `child` if it outlives `limit`: the behaviour under test is "does
/// not wait for the model-resolve timeout", so a hang must fail, not stall.
fn wait_bounded(mut child: std::process::Child, limit: std::time::Duration) -> Output {
    let start = std::time::Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!("still waiting after {limit:?}: {}", text(&out));
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// The design card's command, as written, from the repository root:
/// `sparkhost run workloads/copilot.wasm`. Nothing listens at the default
/// endpoint (pointed at a closed port through SPARKHOST_ENDPOINT): the run
/// says so at once and suggests the simulator, though discovery would
/// otherwise wait 10 minutes. A typed `--endpoint` keeps polling (a server
/// may be starting there).
#[test]
fn copilot_wasm_with_nothing_listening_says_so_and_suggests_sim() {
    let d = dirs();
    let port = closed_port();
    let root = d.results.path().to_str().unwrap().to_owned();
    let child = bin()
        .current_dir(repo())
        .args(["run", "workloads/copilot.wasm"])
        .args([
            "--model-resolve-timeout",
            "600s",
            "--no-telemetry",
            "--no-report",
        ])
        .args(["--results-root", &root, "--run-id", "closed"])
        .env("SPARKHOST_ENDPOINT", format!("http://127.0.0.1:{port}"))
        .env("SPARKHOST_CACHE_DIR", d.cache.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = wait_bounded(child, std::time::Duration::from_secs(120));
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("nothing answered at http://127.0.0.1:{port}")),
        "{err}"
    );
    assert!(err.contains("--endpoint sim"), "{err}");
    let s = read_json(&d.results.path().join("closed/summary.json"));
    assert_eq!(s["invalid_reason"], "model_unavailable", "{s:#}");
    assert!(
        s.to_string().contains("refused"),
        "the reason names the refusal: {s:#}"
    );

    // Typed, the same closed port is polled until the timeout.
    let out = sparkhost(
        &[
            "run",
            workload("copilot").to_str().unwrap(),
            "--endpoint",
            &format!("http://127.0.0.1:{port}"),
            "--model-resolve-timeout",
            "1s",
            "--model-resolve-poll",
            "200ms",
            "--no-telemetry",
            "--no-report",
            "--results-root",
            &root,
            "--run-id",
            "typed",
            "--quiet",
        ],
        d.cache.path(),
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let s = read_json(&d.results.path().join("typed/summary.json"));
    assert!(
        s.to_string().contains("did not list any model within"),
        "{s:#}"
    );
}

/// `make wasm` makes workloads/copilot.wasm: the local-copilot workload,
/// whose manifests keep the seed's scenario name.
#[test]
fn copilot_wasm_is_local_copilot_burst() {
    let d = dirs();
    let wasm = workload("copilot");
    let out = sparkhost(
        &["inspect", "--json", wasm.to_str().unwrap()],
        d.cache.path(),
    );
    assert!(out.status.success(), "{}", text(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["name"], "local_copilot_burst");
    let out = sim_run(
        &wasm,
        d.results.path(),
        "copilot",
        &[
            "--requests",
            "4",
            "--warmup",
            "0",
            "--param",
            "sessions=2",
            "--param",
            "shared-prefix-tokens=64",
            "--param",
            "context-tokens=16",
            "--param",
            "burst-interval-ms=0",
            "--param",
            "think-time-ms=0",
        ],
        d.cache.path(),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let dir = d.results.path().join("copilot");
    let m = read_json(&dir.join("manifest.json"));
    assert!(
        m.to_string().contains("\"local_copilot_burst\""),
        "the scenario name stays: {m:#}"
    );
    assert_eq!(read_jsonl(&dir.join("requests.jsonl")).len(), 4);
}
