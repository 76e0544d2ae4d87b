//! Sandbox tests: what `inspect` reports, and how components that are not
//! workloads, target another WIT version, or trap, hang, hog or refuse their
//! config are reported.
//!
//! `spin`, `hog` and `panic` misbehave in `next-batch`, which the host first
//! calls after the run directory exists and the model is resolved; those
//! runs therefore need a `/v1/models` (the fake server of [`super::faults`])
//! and end as invalid runs, not as crashes.

use std::path::Path;
use std::process::Output;

use serde_json::Value;
use sha2::{Digest, Sha256};

use super::faults::{Dirs, FakeConfig, FakeServer, unused_port};
use super::{read_json, read_jsonl, sparkhost, synthetic, test_guest, text};

fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn inspect_json(wasm: &Path, cache: &Path) -> Value {
    let out = sparkhost(&["inspect", "--json", path_str(wasm)], cache);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("inspect --json is not JSON ({e}):\n{}", text(&out)))
}

/// `sparkhost run` of a workload that takes no params.
fn run_guest(wasm: &Path, endpoint: &str, dirs: &Dirs, extra: &[&str]) -> Output {
    let root = dirs.root.path().display().to_string();
    let mut args = vec![
        "run",
        path_str(wasm),
        "--endpoint",
        endpoint,
        "--timeout",
        "2s",
        "--results-root",
        &root,
        "--run-id",
        "r1",
        "--model-resolve-timeout",
        "5s",
        "--model-resolve-poll",
        "200ms",
    ];
    args.extend_from_slice(extra);
    sparkhost(&args, dirs.cache.path())
}

fn assert_no_run_dir(dirs: &Dirs, out: &Output) {
    let entries: Vec<_> = std::fs::read_dir(dirs.root.path())
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(
        entries.is_empty(),
        "a failure before the run must leave no run directory, found {entries:?}\n{}",
        text(out)
    );
}

/// Runs a guest that fails in `next-batch` and returns the run's
/// `invalid_details` joined.
fn run_failing_in_next_batch(guest: &str, extra: &[&str]) -> String {
    let server = FakeServer::start(FakeConfig::default());
    let dirs = Dirs::new();
    let out = run_guest(&test_guest(guest), &server.endpoint(), &dirs, extra);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let summary = read_json(&dirs.run_dir().join("summary.json"));
    assert_eq!(summary["invalid_reason"], "workload_failed", "{summary:#}");
    assert_eq!(summary["dispatch"]["planned"], 0, "{summary:#}");
    assert!(read_jsonl(&dirs.run_dir().join("requests.jsonl")).is_empty());
    assert!(server.completions().is_empty());
    let details: Vec<String> =
        serde_json::from_value(summary["invalid_details"].clone()).expect("details");
    let details = details.join("\n");
    assert!(
        details.contains("`next-batch`"),
        "the failing call is named: {details}"
    );
    details
}

#[test]
fn inspect_describes_the_synthetic_workload() {
    let cache = tempfile::tempdir().unwrap();
    let wasm = synthetic();
    let digest = hex::encode(Sha256::digest(std::fs::read(&wasm).unwrap()));

    let out = sparkhost(&["inspect", path_str(&wasm)], cache.path());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let field = |name: &str| -> String {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}:")))
            .unwrap_or_else(|| panic!("no {name}: line in\n{stdout}"))
            .trim()
            .to_owned()
    };
    assert_eq!(field("name"), "synthetic");
    assert_eq!(field("version"), "0.1.0");
    assert_eq!(field("wit"), "sparkhost:workload@0.1.0");
    let sha = field("sha256");
    assert!(
        sha.len() == 64 && sha.bytes().all(|b| b.is_ascii_hexdigit()),
        "{sha}"
    );
    assert_eq!(sha, digest);
    let json = inspect_json(&wasm, cache.path());
    let params = json["params"].as_array().expect("params");
    assert!(!params.is_empty());
    for p in params {
        let name = p["name"].as_str().unwrap();
        let default = p["default_value"].as_str().unwrap();
        let shown = format!("default {default:?}");
        assert!(
            stdout
                .lines()
                .any(|l| l.trim_start().starts_with(&format!("{name} ")) && l.contains(&shown)),
            "param {name} with {shown} in\n{stdout}"
        );
    }

    assert_eq!(json["name"], "synthetic");
    assert_eq!(json["version"], "0.1.0");
    assert_eq!(json["wit"], "sparkhost:workload@0.1.0");
    assert_eq!(json["sha256"], digest.as_str());
    assert_eq!(json["size_bytes"], std::fs::metadata(&wasm).unwrap().len());
    let requests = params.iter().find(|p| p["name"] == "requests").unwrap();
    assert_eq!(requests["default_value"], "64");
}

#[test]
fn inspect_reuses_the_compiled_component() {
    let cache = tempfile::tempdir().unwrap();
    let wasm = synthetic();
    let first = inspect_json(&wasm, cache.path());
    assert_eq!(first["compiled_from_cache"], false, "{first:#}");
    let second = inspect_json(&wasm, cache.path());
    assert_eq!(second["compiled_from_cache"], true, "{second:#}");
    assert_eq!(first["sha256"], second["sha256"]);
    let cwasm: Vec<_> = std::fs::read_dir(cache.path().join("components"))
        .expect("components/ in the cache dir")
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "cwasm"))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(cwasm.len(), 1, "{cwasm:?}");
    // Keyed by the wasm digest, so a rebuilt workload never loads stale code.
    assert!(
        cwasm[0].starts_with(first["sha256"].as_str().unwrap()),
        "{cwasm:?}"
    );
}

#[test]
fn an_unsupported_wit_version_is_refused_by_name() {
    let wasm = test_guest("future_version");
    let dirs = Dirs::new();
    let check = |out: &Output| {
        assert_eq!(out.status.code(), Some(1), "{}", text(out));
        let e = stderr(out);
        assert!(e.contains("sparkhost:workload@0.9.0"), "{}", text(out));
        assert!(e.contains("supported: 0.1.0"), "{}", text(out));
    };
    check(&sparkhost(&["inspect", path_str(&wasm)], dirs.cache.path()));
    let endpoint = format!("http://127.0.0.1:{}", unused_port());
    let out = run_guest(&wasm, &endpoint, &dirs, &[]);
    check(&out);
    assert_no_run_dir(&dirs, &out);
}

#[test]
fn files_that_are_not_components_are_refused_clearly() {
    let dirs = Dirs::new();
    let tmp = tempfile::tempdir().unwrap();

    let not_wasm = tmp.path().join("notes.wasm");
    std::fs::write(&not_wasm, "this is a text file\n").unwrap();
    let out = sparkhost(&["inspect", path_str(&not_wasm)], dirs.cache.path());
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        stderr(&out).contains(&format!("{} is not a WebAssembly file", not_wasm.display())),
        "{}",
        text(&out)
    );

    let core = tmp.path().join("core.wasm");
    std::fs::write(&core, b"\0asm\x01\0\0\0").unwrap();
    let out = sparkhost(&["inspect", path_str(&core)], dirs.cache.path());
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let e = stderr(&out);
    assert!(
        e.contains("is a core WebAssembly module, not a component"),
        "{}",
        text(&out)
    );
    assert!(e.contains("wasm32-wasip2"), "the fix is named: {e}");

    let missing = tmp.path().join("missing.wasm");
    let out = sparkhost(&["inspect", path_str(&missing)], dirs.cache.path());
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        stderr(&out).contains("cannot read workload"),
        "{}",
        text(&out)
    );

    let endpoint = format!("http://127.0.0.1:{}", unused_port());
    let out = run_guest(&core, &endpoint, &dirs, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(stderr(&out).contains("not a component"), "{}", text(&out));
    assert_no_run_dir(&dirs, &out);
}

#[test]
fn a_spinning_guest_hits_its_deadline() {
    let details = run_failing_in_next_batch("spin", &["--workload-call-timeout", "1s"]);
    assert!(details.contains("deadline"), "{details}");
    assert!(details.contains("test-spin 0.1.0"), "{details}");
    assert!(details.contains("--workload-call-timeout"), "{details}");
}

#[test]
fn a_hogging_guest_hits_its_memory_cap() {
    let details = run_failing_in_next_batch("hog", &["--workload-memory-mib", "64"]);
    assert!(details.contains("memory cap of 64 MiB"), "{details}");
    assert!(details.contains("test-hog 0.1.0"), "{details}");
}

#[test]
fn a_panicking_guest_is_reported_with_its_message() {
    let details = run_failing_in_next_batch("panic", &[]);
    assert!(details.contains("test-panic 0.1.0 trapped"), "{details}");
    // The guest's own words, from its stderr.
    assert!(
        details.contains("sparkhost test guest: deliberate panic in next-batch"),
        "{details}"
    );
}

#[test]
fn a_config_the_guest_refuses_stops_before_the_run() {
    let dirs = Dirs::new();
    let endpoint = format!("http://127.0.0.1:{}", unused_port());
    let out = run_guest(&test_guest("bad_config"), &endpoint, &dirs, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let e = stderr(&out);
    assert!(
        e.contains(
            "invalid config: bad-config test guest: parameter `answer`: \"41\" is not valid; expected 42"
        ),
        "{}",
        text(&out)
    );
    assert!(e.contains("test-bad-config 0.1.0"), "{}", text(&out));
    assert!(e.contains("`create`"), "{}", text(&out));
    assert_no_run_dir(&dirs, &out);
}

#[test]
fn an_unknown_param_lists_the_known_ones() {
    let dirs = Dirs::new();
    let wasm = synthetic();
    let known: Vec<String> = inspect_json(&wasm, dirs.cache.path())["params"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_owned())
        .collect();
    let endpoint = format!("http://127.0.0.1:{}", unused_port());
    let out = run_guest(&wasm, &endpoint, &dirs, &["--param", "nosuch=1"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let e = stderr(&out);
    assert!(e.contains("\"nosuch\""), "{}", text(&out));
    assert!(e.contains("synthetic 0.1.0"), "{}", text(&out));
    assert!(e.contains(&known.join(", ")), "{}", text(&out));
    assert_no_run_dir(&dirs, &out);
}
