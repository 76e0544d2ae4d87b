//! Embedded sources of `sparkhost new`: the SDKs, the WIT and the shipped
//! workloads a project can start from, copied from the repository at build
//! time, so a project made by this binary matches the WIT it speaks. The
//! tests next to this list check it against the directories it copies.

/// `wit/workload@0.1.0/workload.wit`.
pub const WIT: &str = include_str!("../../../wit/workload@0.1.0/workload.wit");

/// The Rust SDK (`workloads/sdk`), as the project's `sdk/`.
pub const RUST_SDK: &[(&str, &str)] = &[
    (
        "sdk/Cargo.toml",
        include_str!("../../../workloads/sdk/Cargo.toml"),
    ),
    (
        "sdk/src/data.rs",
        include_str!("../../../workloads/sdk/src/data.rs"),
    ),
    (
        "sdk/src/hash.rs",
        include_str!("../../../workloads/sdk/src/hash.rs"),
    ),
    (
        "sdk/src/host.rs",
        include_str!("../../../workloads/sdk/src/host.rs"),
    ),
    (
        "sdk/src/lib.rs",
        include_str!("../../../workloads/sdk/src/lib.rs"),
    ),
    (
        "sdk/src/params.rs",
        include_str!("../../../workloads/sdk/src/params.rs"),
    ),
    (
        "sdk/src/plan.rs",
        include_str!("../../../workloads/sdk/src/plan.rs"),
    ),
    (
        "sdk/src/prompt.rs",
        include_str!("../../../workloads/sdk/src/prompt.rs"),
    ),
    (
        "sdk/src/rng.rs",
        include_str!("../../../workloads/sdk/src/rng.rs"),
    ),
    (
        "sdk/src/salt.rs",
        include_str!("../../../workloads/sdk/src/salt.rs"),
    ),
    (
        "sdk/src/text.rs",
        include_str!("../../../workloads/sdk/src/text.rs"),
    ),
    (
        "sdk/src/tokens.rs",
        include_str!("../../../workloads/sdk/src/tokens.rs"),
    ),
];

/// The guest workspace's lock file: the versions sparkhost's own workloads
/// build with. Cargo drops the entries a project does not use.
pub const RUST_LOCK: &str = include_str!("../../../workloads/Cargo.lock");

/// The guest workspace's manifest, which the project's must agree with
/// (checked by a test).
#[cfg(test)]
pub const RUST_WORKSPACE: &str = include_str!("../../../workloads/Cargo.toml");

/// The JavaScript SDK (`examples/js/lib`).
pub const JS_SDK: &[(&str, &str)] = &[
    (
        "lib/host.js",
        include_str!("../../../examples/js/lib/host.js"),
    ),
    (
        "lib/params.js",
        include_str!("../../../examples/js/lib/params.js"),
    ),
    (
        "lib/prompt.js",
        include_str!("../../../examples/js/lib/prompt.js"),
    ),
    (
        "lib/rng.js",
        include_str!("../../../examples/js/lib/rng.js"),
    ),
    (
        "lib/rust-escapes.js",
        include_str!("../../../examples/js/lib/rust-escapes.js"),
    ),
    (
        "lib/rust.js",
        include_str!("../../../examples/js/lib/rust.js"),
    ),
    (
        "lib/sha256.js",
        include_str!("../../../examples/js/lib/sha256.js"),
    ),
    (
        "lib/sparkhost.js",
        include_str!("../../../examples/js/lib/sparkhost.js"),
    ),
    (
        "lib/text.js",
        include_str!("../../../examples/js/lib/text.js"),
    ),
    (
        "lib/tokens.js",
        include_str!("../../../examples/js/lib/tokens.js"),
    ),
];

/// componentize-js and its shim, pinned.
pub const JS_LOCK: &str = include_str!("../../../examples/js/package-lock.json");

#[cfg(test)]
pub const JS_PACKAGE: &str = include_str!("../../../examples/js/package.json");

/// The Python SDK (`examples/python/lib`).
pub const PYTHON_SDK: &[(&str, &str)] = &[
    (
        "lib/planner.py",
        include_str!("../../../examples/python/lib/planner.py"),
    ),
    (
        "lib/sparkhost/__init__.py",
        include_str!("../../../examples/python/lib/sparkhost/__init__.py"),
    ),
    (
        "lib/sparkhost/host.py",
        include_str!("../../../examples/python/lib/sparkhost/host.py"),
    ),
    (
        "lib/sparkhost/params.py",
        include_str!("../../../examples/python/lib/sparkhost/params.py"),
    ),
    (
        "lib/sparkhost/prompt.py",
        include_str!("../../../examples/python/lib/sparkhost/prompt.py"),
    ),
    (
        "lib/sparkhost/rng.py",
        include_str!("../../../examples/python/lib/sparkhost/rng.py"),
    ),
    (
        "lib/sparkhost/rust.py",
        include_str!("../../../examples/python/lib/sparkhost/rust.py"),
    ),
    (
        "lib/sparkhost/rust_escapes.py",
        include_str!("../../../examples/python/lib/sparkhost/rust_escapes.py"),
    ),
    (
        "lib/sparkhost/text.py",
        include_str!("../../../examples/python/lib/sparkhost/text.py"),
    ),
    (
        "lib/sparkhost/tokens.py",
        include_str!("../../../examples/python/lib/sparkhost/tokens.py"),
    ),
];

/// componentize-py, pinned.
pub const PYTHON_REQUIREMENTS: &str = include_str!("../../../examples/python/requirements.txt");

/// The project templates (`templates/workload/`).
pub mod template {
    pub const README: &str = include_str!("../../../templates/workload/README.md");
    pub const TEST_SH: &str = include_str!("../../../templates/workload/test.sh");
    pub const RUST_CARGO: &str = include_str!("../../../templates/workload/rust/Cargo.toml");
    pub const RUST_LIB: &str = include_str!("../../../templates/workload/rust/lib.rs");
    pub const RUST_BUILD: &str = include_str!("../../../templates/workload/rust/build.sh");
    pub const RUST_GITIGNORE: &str = include_str!("../../../templates/workload/rust/gitignore");
    pub const JS_PACKAGE: &str = include_str!("../../../templates/workload/js/package.json");
    pub const JS_APP: &str = include_str!("../../../templates/workload/js/app.js");
    pub const JS_BUILD: &str = include_str!("../../../templates/workload/js/build.sh");
    pub const JS_GITIGNORE: &str = include_str!("../../../templates/workload/js/gitignore");
    pub const PYTHON_APP: &str = include_str!("../../../templates/workload/python/app.py");
    pub const PYTHON_BUILD: &str = include_str!("../../../templates/workload/python/build.sh");
    pub const PYTHON_GITIGNORE: &str = include_str!("../../../templates/workload/python/gitignore");
}

/// The shipped workloads a project can start from, per language.
pub mod origin {
    pub const RUST_REUSE_VERIFY: &str = include_str!("../../../workloads/reuse_verify/src/lib.rs");
    pub const RUST_LOCAL_COPILOT_BURST: &str =
        include_str!("../../../workloads/local_copilot_burst/src/lib.rs");
    pub const JS_REUSE_VERIFY: &str = include_str!("../../../examples/js/reuse_verify/app.js");
    pub const JS_LOCAL_COPILOT_BURST: &str =
        include_str!("../../../examples/js/local_copilot_burst/app.js");
    pub const PYTHON_REUSE_VERIFY: &str =
        include_str!("../../../examples/python/reuse_verify/app.py");
    pub const PYTHON_LOCAL_COPILOT_BURST: &str =
        include_str!("../../../examples/python/local_copilot_burst/app.py");
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// Files with `ext` directly in `dir` (relative to the repository).
    fn listed(dir: &str, ext: &str) -> Vec<String> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(dir);
        let mut v: Vec<String> = std::fs::read_dir(&root)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(ext))
            .collect();
        v.sort();
        v
    }

    fn embedded(list: &[(&str, &str)], dir: &str) -> Vec<String> {
        let mut v: Vec<String> = list
            .iter()
            .filter_map(|(p, _)| p.strip_prefix(dir))
            .filter_map(|p| p.strip_prefix('/'))
            .filter(|p| !p.contains('/'))
            .map(str::to_owned)
            .collect();
        v.sort();
        v
    }

    /// A file added to an SDK must be added to the list, or projects would
    /// not build.
    #[test]
    fn every_sdk_file_is_embedded() {
        assert_eq!(
            embedded(RUST_SDK, "sdk/src"),
            listed("workloads/sdk/src", ".rs")
        );
        assert_eq!(embedded(JS_SDK, "lib"), listed("examples/js/lib", ".js"));
        assert_eq!(
            embedded(PYTHON_SDK, "lib/sparkhost"),
            listed("examples/python/lib/sparkhost", ".py")
        );
        assert_eq!(
            embedded(PYTHON_SDK, "lib"),
            listed("examples/python/lib", ".py")
        );
    }
}
