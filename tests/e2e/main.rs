//! End-to-end tests through the real `sparkhost` binary.
//!
//! Layout:
//! - [`bench`]: the ground-truth server and `sparkhost bench`.
//! - [`dynamo`]: against the real Dynamo frontend + mocker (started per test).
//! - [`faults`]: against an in-test server that misbehaves on purpose.
//! - [`sandbox`]: workload components that trap, hang, hog or lie.
//! - [`reports`]: report generators, summarize, compare, matrix and search.
//! - [`workloads`]: the workload library against the real mocker.
//! - [`languages`]: JavaScript and Python workloads, byte-identical to Rust.
//!
//! Workload components come from `make workloads` (`workloads/synthetic.wasm`,
//! `target/test-guests/*.wasm`); a missing one fails with that hint.

#[path = "../support/mod.rs"]
mod support;

mod bench;
mod dynamo;
mod faults;
mod languages;
mod reports;
mod sandbox;
mod workloads;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

pub fn synthetic() -> PathBuf {
    let p = repo().join("workloads/synthetic.wasm");
    assert!(
        p.is_file(),
        "{} is missing: run `make workloads`",
        p.display()
    );
    p
}

pub fn test_guest(name: &str) -> PathBuf {
    let p = repo()
        .join("target/test-guests")
        .join(format!("{name}.wasm"));
    assert!(
        p.is_file(),
        "{} is missing: run `make workloads`",
        p.display()
    );
    p
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

pub fn read_json(p: &Path) -> serde_json::Value {
    let s = std::fs::read_to_string(p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()));
    serde_json::from_str(&s).unwrap_or_else(|e| panic!("{} is not JSON: {e}", p.display()))
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
