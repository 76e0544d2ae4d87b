//! Records the git commit the binary was built from, for `manifest.json`.
//! Local only (no network); outside a git checkout, or without `git`, the
//! commit is "unknown" so a build from a source tarball still works.
//! `SPARKHOST_GIT_SHA` set at build time wins (for packagers who build
//! outside the checkout).

use std::path::{Path, PathBuf};
use std::process::Command;

fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let s = String::from_utf8(out.stdout).ok()?.trim().to_owned();
    (!s.is_empty()).then_some(s)
}

fn main() {
    println!("cargo:rerun-if-env-changed=SPARKHOST_GIT_SHA");
    let dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| ".".into()));
    let sha = std::env::var("SPARKHOST_GIT_SHA")
        .ok()
        .filter(|s| !s.trim().is_empty())
        .or_else(|| git(&dir, &["rev-parse", "HEAD"]))
        // A SHA-1 or SHA-256 object name, nothing else: the value lands in
        // every manifest.
        .filter(|s| (s.len() == 40 || s.len() == 64) && s.bytes().all(|b| b.is_ascii_hexdigit()))
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=SPARKHOST_GIT_SHA={sha}");
    // Rebuild when HEAD moves: HEAD itself (a branch switch), the branch's
    // ref, and packed refs. Worktrees keep HEAD in their own git dir and
    // refs in the common one.
    if let Some(git_dir) = git(&dir, &["rev-parse", "--absolute-git-dir"]) {
        println!("cargo:rerun-if-changed={git_dir}/HEAD");
        let common = git(&dir, &["rev-parse", "--git-common-dir"])
            .map(|c| {
                let p = PathBuf::from(&c);
                if p.is_absolute() { p } else { dir.join(p) }
            })
            .unwrap_or_else(|| PathBuf::from(&git_dir));
        println!(
            "cargo:rerun-if-changed={}",
            common.join("packed-refs").display()
        );
        if let Some(r) = git(&dir, &["symbolic-ref", "-q", "HEAD"]) {
            println!("cargo:rerun-if-changed={}", common.join(r).display());
        }
    }
}
