//! `sparkhost new workload` in each language, built and tested the way a
//! user would: `./build.sh`, then `./test.sh` (which runs `sparkhost run`
//! against the in-process simulator and checks the rows), in a temporary
//! directory outside the repository.
//!
//! Tool caches, so CI builds each template's tools once: Rust projects share
//! `target/new-workload/` as CARGO_TARGET_DIR; JavaScript and Python
//! projects link the repository's `examples/js/node_modules` and
//! `examples/python/.venv` (made by `make examples`, pinned to the same
//! versions) when they are there, and otherwise install from the registries
//! as a user's first build does.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::{read_json, repo, text};

fn sparkhost_new(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sparkhost"))
        .args(["new", "workload"])
        .args(args)
        .output()
        .unwrap()
}

/// The repository's tool directory for `lang`, linked into the project.
fn link_tools(lang: &str, project: &Path) {
    let (from, to) = match lang {
        "js" => ("examples/js/node_modules", "node_modules"),
        "python" => ("examples/python/.venv", ".venv"),
        _ => return,
    };
    let src = repo().join(from);
    if src.join(".sparkhost-stamp").is_file() {
        std::os::unix::fs::symlink(src.canonicalize().unwrap(), project.join(to)).unwrap();
    }
}

fn script(project: &Path, name: &str, cache: &Path) -> Output {
    Command::new(project.join(name))
        .current_dir(project)
        .env("SPARKHOST", env!("CARGO_BIN_EXE_sparkhost"))
        .env("SPARKHOST_CACHE_DIR", cache)
        .env("SPARKHOST_LOG", "warn")
        .env("CARGO_TARGET_DIR", repo().join("target/new-workload"))
        .env_remove("SPARKHOST_ENDPOINT")
        .output()
        .unwrap()
}

/// Creates, builds and tests one project; returns its directory's run.
fn new_build_test(lang: &str, from: Option<&str>) {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let name = format!("my_{lang}_{}", from.unwrap_or("minimal"));
    let project: PathBuf = tmp.path().join(&name);
    let mut args = vec![
        name.as_str(),
        "--lang",
        lang,
        "--dir",
        project.to_str().unwrap(),
    ];
    if let Some(f) = from {
        args.extend(["--from", f]);
    }
    let out = sparkhost_new(&args);
    assert!(out.status.success(), "{lang} {from:?}: {}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("./build.sh"),
        "{}",
        text(&out)
    );
    // A second `new` into the same directory changes nothing.
    let again = sparkhost_new(&args);
    assert_eq!(again.status.code(), Some(1), "{}", text(&again));
    assert!(String::from_utf8_lossy(&again.stderr).contains("not an empty directory"));

    link_tools(lang, &project);
    let out = script(&project, "build.sh", cache.path());
    assert!(
        out.status.success(),
        "{lang} {from:?} build: {}",
        text(&out)
    );
    let wasm = project.join(format!("{name}.wasm"));
    assert!(wasm.is_file(), "{}", wasm.display());

    let out = Command::new(env!("CARGO_BIN_EXE_sparkhost"))
        .args(["inspect", "--json", wasm.to_str().unwrap()])
        .env("SPARKHOST_CACHE_DIR", cache.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(info["name"], name.as_str(), "describe() names the project");

    let out = script(&project, "test.sh", cache.path());
    assert!(out.status.success(), "{lang} {from:?} test: {}", text(&out));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("test.sh: ok:"), "{}", text(&out));
    // The run test.sh checked is a valid run of this component.
    let runs = project.join("target/test-runs");
    let run = std::fs::read_dir(&runs)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let s = read_json(&run.join("summary.json"));
    assert_eq!(s["run_valid"], true, "{s:#}");
    let m = read_json(&run.join("manifest.json"));
    assert_eq!(m["workload"]["name"], name.as_str(), "{m:#}");
}

#[test]
fn rust_projects_build_and_pass_their_own_test() {
    for from in [None, Some("reuse_verify"), Some("local_copilot_burst")] {
        new_build_test("rust", from);
    }
}

#[test]
fn js_projects_build_and_pass_their_own_test() {
    for from in [None, Some("local_copilot_burst")] {
        new_build_test("js", from);
    }
}

#[test]
fn python_projects_build_and_pass_their_own_test() {
    for from in [None, Some("reuse_verify")] {
        new_build_test("python", from);
    }
}
