//! End-to-end tests through the real `sparkhost` binary.
//!
//! Layout:
//! - [`bench`]: the ground-truth server and `sparkhost bench`.
//! - [`endpoints`]: TLS, API keys and headers, base URLs and hosts, exit codes and pipes, against an in-test server.
//! - [`dynamo`]: against the real Dynamo frontend + mocker (started per test).
//! - [`faults`]: against an in-test server that misbehaves on purpose.
//! - [`bounded`]: endless and giant answers end within caps, in memory and time.
//! - [`sandbox`]: workload components that trap, hang, hog or lie.
//! - [`reports`]: report generators, summarize, compare, matrix and search.
//! - [`registry`]: push, pull, run and report from a real OCI registry (`docker-registry`), pinning.
//! - [`workloads`]: the workload library against the real mocker.
//! - [`sim`]: the evidence chain against the simulated engine, the disk tier on a loop device.
//! - [`languages`]: JavaScript and Python workloads, byte-identical to Rust.
//! - [`loads`]: `--concurrency`/`--rate` against every kind of phase load.
//! - [`cli`]: help headings, completions, man pages, `--version`, the seed's
//!   flags, `--store-responses`, and `sparkhost run workloads/copilot.wasm`.
//! - [`new_workload`]: `sparkhost new workload` projects built and tested.
//! - [`traces`]: every trace format replayed against the simulator, block-exact reuse, the per-run salt.
//!
//! Workload components come from `make workloads` (`workloads/synthetic.wasm`,
//! `target/test-guests/*.wasm`); a missing one fails with that hint.
//!
//! Shared here: paths to built components and the mocker's tokenizer,
//! [`start_stack`], [`Dirs`] (a test's results root and component cache)
//! and [`RunCmd`], the `sparkhost run` command line of the tests that run a
//! workload against a live endpoint.

#[path = "../support/mod.rs"]
mod support;

mod bench;
mod bounded;
mod cli;
mod disk_full;
mod dynamo;
mod endpoints;
mod faults;
mod languages;
mod loads;
mod new_workload;
mod registry;
mod reports;
mod sandbox;
mod signals;
mod sim;
mod stack;
mod traces;
mod workloads;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;
use tempfile::TempDir;

use crate::support::dynamo::{DynamoStack, StackOptions};

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `<dir>/<name>.wasm` under the repository, which `make workloads` builds.
pub fn component(dir: &str, name: &str) -> PathBuf {
    let p = repo().join(dir).join(format!("{name}.wasm"));
    assert!(
        p.is_file(),
        "{} is missing: run `make workloads`",
        p.display()
    );
    p
}

/// `workloads/<name>.wasm`.
pub fn workload(name: &str) -> PathBuf {
    component("workloads", name)
}

pub fn synthetic() -> PathBuf {
    workload("synthetic")
}

pub fn test_guest(name: &str) -> PathBuf {
    component("target/test-guests", name)
}

/// The mocker model's tokenizer, from `make dynamo`.
pub fn tokenizer() -> PathBuf {
    let p = repo().join("target/dynamo-model/tiny-llama/tokenizer.json");
    assert!(p.is_file(), "{} is missing: run `make dynamo`", p.display());
    p
}

/// The real Dynamo frontend + mocker, with extra mocker flags.
pub fn start_stack(mocker_args: &[&str]) -> DynamoStack {
    DynamoStack::start(StackOptions::with_mocker_args(mocker_args.iter().copied()))
        .unwrap_or_else(|e| panic!("starting the Dynamo stack: {e}"))
}

/// A test's own results root and component cache, removed when dropped.
pub struct Dirs {
    pub results: TempDir,
    pub cache: TempDir,
}

pub fn dirs() -> Dirs {
    Dirs {
        results: tempfile::tempdir().unwrap(),
        cache: tempfile::tempdir().unwrap(),
    }
}

/// `sparkhost run` of a workload against a live endpoint, with the mocker's
/// tokenizer and no KV tier:
///
/// ```text
/// run WASM --endpoint E --results-root R --run-id ID --tokenizer T
///     --model-resolve-timeout 30s --kv-mode off --quiet [more args]
/// ```
pub struct RunCmd {
    args: Vec<String>,
    dir: PathBuf,
}

impl RunCmd {
    pub fn new(wasm: &Path, endpoint: &str, results_root: &Path, run_id: &str) -> Self {
        let tok = tokenizer();
        let args = [
            "run",
            wasm.to_str().unwrap(),
            "--endpoint",
            endpoint,
            "--results-root",
            results_root.to_str().unwrap(),
            "--run-id",
            run_id,
            "--tokenizer",
            tok.to_str().unwrap(),
            "--model-resolve-timeout",
            "30s",
            "--kv-mode",
            "off",
            "--quiet",
        ];
        Self {
            args: args.iter().map(|a| a.to_string()).collect(),
            dir: results_root.join(run_id),
        }
    }

    /// Appends arguments.
    pub fn args(mut self, more: &[&str]) -> Self {
        self.args.extend(more.iter().map(|a| a.to_string()));
        self
    }

    /// The run directory.
    pub fn dir(&self) -> PathBuf {
        self.dir.clone()
    }

    /// Runs it with component cache `cache`.
    pub fn output(&self, cache: &Path) -> Output {
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        sparkhost(&args, cache)
    }

    /// Runs it against `stack` and asserts the exit code (showing the
    /// output and the stack's logs otherwise); returns the run directory.
    pub fn expect_exit(&self, stack: &DynamoStack, cache: &Path, code: i32) -> PathBuf {
        let out = self.output(cache);
        assert_eq!(
            out.status.code(),
            Some(code),
            "{}: {}\nstack logs:\n{}",
            self.dir.display(),
            text(&out),
            stack.tail_logs()
        );
        self.dir()
    }
}

/// Runs the real binary with a private component cache.
pub fn sparkhost(args: &[&str], cache: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sparkhost"))
        .args(args)
        .env("SPARKHOST_CACHE_DIR", cache)
        .env("SPARKHOST_LOG", "warn")
        .output()
        .expect("sparkhost binary runs")
}

pub fn text(o: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Reads a JSON file. A run document (`summary.json`, `config.json`,
/// `manifest.json`) must also read as its typed document and write back
/// unchanged: the types every reader uses cover everything the run wrote.
pub fn read_json(p: &Path) -> serde_json::Value {
    use sparkhost::results::documents::{ConfigDoc, ManifestDoc, SummaryDoc};
    let s = std::fs::read_to_string(p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()));
    let v: Value =
        serde_json::from_str(&s).unwrap_or_else(|e| panic!("{} is not JSON: {e}", p.display()));
    let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    let typed = match name {
        "summary.json" => Some(round_trip::<SummaryDoc>(&v)),
        "config.json" => Some(round_trip::<ConfigDoc>(&v)),
        "manifest.json" => Some(round_trip::<ManifestDoc>(&v)),
        _ => None,
    };
    if let Some(typed) = typed {
        let typed =
            typed.unwrap_or_else(|e| panic!("{} is not its document type: {e}", p.display()));
        kept(&v, &typed, &mut String::new()).unwrap_or_else(|at| {
            panic!("{}: {at} does not survive its document type", p.display())
        });
    }
    v
}

/// Every value of `written` is in `typed` (which may add defaults).
fn kept(written: &Value, typed: &Value, at: &mut String) -> Result<(), String> {
    match (written, typed) {
        (Value::Object(w), Value::Object(t)) => {
            for (k, wv) in w {
                let len = at.len();
                at.push('.');
                at.push_str(k);
                match t.get(k) {
                    Some(tv) => kept(wv, tv, at)?,
                    None => return Err(at.clone()),
                }
                at.truncate(len);
            }
            Ok(())
        }
        (Value::Array(w), Value::Array(t)) if w.len() == t.len() => {
            for (i, (wv, tv)) in w.iter().zip(t).enumerate() {
                let len = at.len();
                at.push_str(&format!("[{i}]"));
                kept(wv, tv, at)?;
                at.truncate(len);
            }
            Ok(())
        }
        (w, t) if w == t => Ok(()),
        (Value::Number(w), Value::Number(t)) if w.as_f64() == t.as_f64() => Ok(()),
        _ => Err(format!("{at} ({written} became {typed})")),
    }
}

fn round_trip<T: serde::de::DeserializeOwned + serde::Serialize>(
    v: &Value,
) -> Result<Value, serde_json::Error> {
    serde_json::to_value(serde_json::from_value::<T>(v.clone())?)
}

/// The summary of phase `name` in a `summary.json`.
pub fn phase<'a>(summary: &'a Value, name: &str) -> &'a Value {
    summary["phase_summaries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["phase"] == name)
        .unwrap_or_else(|| panic!("no phase {name} in {summary:#}"))
}

pub fn read_jsonl(p: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(p)
        .unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
        .lines()
        .map(|l| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("bad line in {}: {e}: {l}", p.display()))
        })
        .collect()
}
