//! The JavaScript and Python ports of `reuse_verify` and `local_copilot_burst`
//! (`examples/`, built by `make workloads`) against their Rust originals,
//! through the real binary and the real Dynamo stack:
//!
//! - `describe()` is the same (name, version, description, params);
//! - bad params fail `create` with the same message;
//! - the same params, seed and tokenizer give a byte-identical
//!   `request_manifest.jsonl`;
//! - a compiled JS/Python component comes from the cache the second time.
//!
//! Each component is compiled once per test (the first `inspect`); every
//! later start loads the cached form.

use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::Value;

use crate::support::dynamo::DynamoStack;
use crate::{Dirs, RunCmd, dirs, read_json, read_jsonl, sparkhost, start_stack, text};

const LANGS: [&str; 3] = ["rust", "js", "python"];
const SEED: &str = "7";

fn component(lang: &str, name: &str) -> PathBuf {
    let dir = match lang {
        "rust" => "workloads",
        "js" => "examples/js",
        _ => "examples/python",
    };
    crate::component(dir, name)
}

struct Harness {
    name: &'static str,
    dirs: Dirs,
}

impl Harness {
    fn new(name: &'static str) -> Self {
        Self { name, dirs: dirs() }
    }

    fn sparkhost(&self, args: &[&str]) -> Output {
        sparkhost(args, self.dirs.cache.path())
    }

    /// `inspect --json` twice: the first compiles (and caches) the
    /// component, the second must load it from the cache. Returns the
    /// describe() part.
    fn inspect_twice(&self, lang: &str) -> Value {
        let wasm = component(lang, self.name);
        let mut seen = Vec::new();
        for _ in 0..2 {
            let out = self.sparkhost(&["inspect", "--json", wasm.to_str().unwrap()]);
            assert!(out.status.success(), "{lang}: {}", text(&out));
            let v: Value = serde_json::from_slice(&out.stdout).expect("inspect --json prints JSON");
            seen.push(v);
        }
        assert_eq!(
            seen[0]["compiled_from_cache"], false,
            "{lang}: a fresh cache compiles"
        );
        assert_eq!(
            seen[1]["compiled_from_cache"], true,
            "{lang}: the second start loads the compiled form"
        );
        let v = &seen[1];
        serde_json::json!({
            "name": v["name"],
            "version": v["version"],
            "description": v["description"],
            "params": v["params"],
        })
    }

    /// Runs the component of `lang`; returns the process output and the run
    /// directory.
    fn run(&self, lang: &str, endpoint: &str, run_id: &str, extra: &[&str]) -> (Output, PathBuf) {
        let wasm = component(lang, self.name);
        let cmd = RunCmd::new(&wasm, endpoint, self.dirs.results.path(), run_id)
            .args(&["--seed", SEED])
            .args(extra);
        (cmd.output(self.dirs.cache.path()), cmd.dir())
    }

    fn check_describe(&self) {
        let rust = self.inspect_twice("rust");
        assert_eq!(rust["name"], self.name);
        for lang in ["js", "python"] {
            assert_eq!(
                self.inspect_twice(lang),
                rust,
                "{lang} describe() differs from Rust's"
            );
        }
    }

    /// `create` fails the same way in every language (before any request,
    /// so no endpoint is needed).
    fn check_errors(&self, cases: &[&[&str]]) {
        for (i, extra) in cases.iter().enumerate() {
            let mut outputs = Vec::new();
            for lang in LANGS {
                let id = format!("bad-{i}-{lang}");
                let (out, _) = self.run(lang, "http://127.0.0.1:9", &id, extra);
                assert!(!out.status.success(), "{lang} {extra:?}: {}", text(&out));
                outputs.push((lang, out));
            }
            let (_, rust) = &outputs[0];
            let rust_err = String::from_utf8_lossy(&rust.stderr);
            assert!(
                rust_err.contains("reported an error in `create`: invalid config: "),
                "{extra:?}: {rust_err}"
            );
            for (lang, out) in &outputs[1..] {
                assert_eq!(
                    (out.status.code(), String::from_utf8_lossy(&out.stderr)),
                    (rust.status.code(), rust_err.clone()),
                    "{lang} {extra:?}"
                );
            }
        }
    }

    /// Runs every language with `extra`; asserts the manifests are
    /// byte-identical and returns Rust's run directory.
    fn check_manifests(&self, stack: &DynamoStack, case: &str, extra: &[&str]) -> PathBuf {
        let mut manifests = Vec::new();
        for lang in LANGS {
            let id = format!("{case}-{lang}");
            let (out, dir) = self.run(lang, &stack.endpoint, &id, extra);
            assert_eq!(
                out.status.code(),
                Some(0),
                "{lang} {case}: {}\nstack logs:\n{}",
                text(&out),
                stack.tail_logs()
            );
            let path = dir.join("request_manifest.jsonl");
            let bytes =
                std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
            manifests.push((lang, dir, bytes));
        }
        let (_, rust_dir, rust) = &manifests[0];
        assert!(!rust.is_empty(), "{case}: Rust planned nothing");
        for (lang, dir, bytes) in &manifests[1..] {
            assert!(
                bytes == rust,
                "{case}: {lang}'s request_manifest.jsonl differs from Rust's at line {}\n\
                 rust: {}\n{lang}: {}",
                first_difference(rust, bytes),
                rust_dir.display(),
                dir.display()
            );
        }
        rust_dir.clone()
    }
}

/// 1-based line number of the first differing line.
fn first_difference(a: &[u8], b: &[u8]) -> usize {
    let (a, b) = (String::from_utf8_lossy(a), String::from_utf8_lossy(b));
    a.lines()
        .zip(b.lines())
        .position(|(x, y)| x != y)
        .unwrap_or_else(|| a.lines().count().min(b.lines().count()))
        + 1
}

fn manifest_rows(dir: &Path) -> Vec<Value> {
    read_jsonl(&dir.join("request_manifest.jsonl"))
}

#[test]
fn reuse_verify_in_js_and_python_matches_rust() {
    let h = Harness::new("reuse_verify");
    h.check_describe();
    h.check_errors(&[
        &["-p", "repeats=ab\u{301}\"x"],
        &["-p", "repeats=11"],
        &["-p", "temperature=-1e-7"],
        &["-p", "top-p=-0"],
        &["-p", "api=chat", "-p", "template=none"],
        &["-p", "short-range=\t5:1"],
        &["-p", "request-seed=\u{200b}1"],
    ]);

    let stack = start_stack(&[]);
    let defaults = h.check_manifests(&stack, "defaults", &["--max-tokens", "8"]);
    let rows = manifest_rows(&defaults);
    assert_eq!(rows.len(), 3, "three repeats by default");
    assert!(
        rows.iter()
            .all(|r| r["prompt_sha256"] == rows[0]["prompt_sha256"])
    );
    h.check_manifests(
        &stack,
        "long-chat",
        &[
            "--max-tokens",
            "8",
            "--stream",
            "-p",
            "prompt-set=long",
            "-p",
            "long-range=700:900",
            "-p",
            "api=chat",
            "-p",
            "repeats=2",
            "-p",
            "temperature=0.3",
            "-p",
            "top-p=0.9",
            "-p",
            "stop=a,b",
            "-p",
            "request-seed=42",
        ],
    );
}

#[test]
fn local_copilot_burst_in_js_and_python_matches_rust() {
    let h = Harness::new("local_copilot_burst");
    h.check_describe();
    h.check_errors(&[
        &["-p", "sessions=0"],
        &["-p", "history=fake"],
        &["-p", "burst-gap-ms=-1"],
        // `sessions` is read first, so it is the one reported.
        &["-p", "shared-prefix-tokens=0", "-p", "sessions=x"],
        &["-p", "temperature=-1e21"],
    ]);

    let stack = start_stack(&[]);
    let common = [
        "--max-tokens",
        "8",
        "-p",
        "history=synthetic",
        "-p",
        "burst-interval-ms=40",
        "-p",
        "think-time-ms=10",
    ];
    let chat = [
        "-p",
        "requests=12",
        "-p",
        "warmup=3",
        "-p",
        "sessions=3",
        "-p",
        "burst-size=2",
        "-p",
        "shared-prefix-tokens=256",
        "-p",
        "context-tokens=128",
    ];
    let dir = h.check_manifests(&stack, "chat", &[&common[..], &chat[..]].concat());
    let rows = manifest_rows(&dir);
    assert_eq!(rows.len(), 15, "warmup 3 + 12");
    assert_eq!(rows[0]["phase"], "warmup");
    let completions = [
        "--stream",
        "-p",
        "api=completions",
        "-p",
        "template=none",
        "-p",
        "requests=6",
        "-p",
        "warmup=0",
        "-p",
        "sessions=2",
        "-p",
        "shared-prefix=false",
        "-p",
        "context-tokens=100",
        "-p",
        "burst-gap-ms=7",
        "-p",
        "temperature=",
        "-p",
        "stop=",
    ];
    h.check_manifests(
        &stack,
        "completions",
        &[&common[..], &completions[..]].concat(),
    );

    // history=real: prompts carry the mocker's random answers, so bytes
    // differ by design; every language must still plan every turn, in
    // sessions that wait for their answers.
    let real = [
        "--max-tokens",
        "4",
        "-p",
        "requests=6",
        "-p",
        "warmup=0",
        "-p",
        "sessions=2",
        "-p",
        "burst-size=2",
        "-p",
        "shared-prefix-tokens=64",
        "-p",
        "context-tokens=32",
        "-p",
        "burst-interval-ms=20",
        "-p",
        "think-time-ms=5",
    ];
    let mut ids = Vec::new();
    for lang in LANGS {
        let (out, dir) = h.run(lang, &stack.endpoint, &format!("real-{lang}"), &real);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{lang}: {}\nstack logs:\n{}",
            text(&out),
            stack.tail_logs()
        );
        assert_eq!(
            read_json(&dir.join("summary.json"))["run_valid"],
            true,
            "{lang}"
        );
        let rows = manifest_rows(&dir);
        let mut got: Vec<String> = rows
            .iter()
            .map(|r| r["prompt_id"].as_str().unwrap().to_string())
            .collect();
        got.sort();
        assert!(
            rows.iter()
                .filter(|r| r["prompt_metadata"]["history_turns"] != "0")
                .all(|r| r["planned_after_start"] == true),
            "{lang}: later turns wait for answers"
        );
        ids.push((lang, got));
    }
    assert_eq!(ids[0].1.len(), 6);
    for (lang, got) in &ids[1..] {
        assert_eq!(got, &ids[0].1, "{lang}");
    }
}
