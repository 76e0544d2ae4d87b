//! `sparkhost new workload`: a workload project in Rust, JavaScript or
//! Python that builds with one command (`./build.sh`) and tests itself
//! against `sparkhost run` (`./test.sh`, the in-process simulator).
//!
//! A project is self-contained: the SDK, the WIT and the pinned tool
//! versions are copied in from what this binary embeds ([`embedded`]), so
//! it needs neither this repository nor a registry of sparkhost packages.
//!
//! Layout:
//! - this file: [`Options`], the file set of a project ([`files`]) and
//!   writing it ([`create`]).
//! - [`embedded`]: the SDKs, the WIT, the templates and the shipped
//!   workloads, embedded at build time.

pub mod embedded;

use std::path::{Path, PathBuf};

use embedded::{origin, template};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    Rust,
    Js,
    Python,
}

impl Lang {
    pub fn as_str(self) -> &'static str {
        match self {
            Lang::Rust => "rust",
            Lang::Js => "js",
            Lang::Python => "python",
        }
    }
}

/// A shipped workload a project starts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    ReuseVerify,
    LocalCopilotBurst,
}

impl Origin {
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::ReuseVerify => "reuse_verify",
            Origin::LocalCopilotBurst => "local_copilot_burst",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Options {
    pub name: String,
    pub lang: Lang,
    pub from: Option<Origin>,
    pub dir: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum ScaffoldError {
    #[error(
        "workload name {0:?}: use 1-{max} of a-z 0-9 _, starting with a letter (it names the crate or package, the directory and the .wasm file)",
        max = crate::limits::NEW_WORKLOAD_NAME_MAX
    )]
    BadName(String),
    #[error("{0} exists and is not an empty directory; pick another --dir or name")]
    Exists(PathBuf),
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// One file of a project.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct File {
    /// Relative to the project directory.
    pub path: &'static str,
    pub text: String,
    pub executable: bool,
}

/// Names become a crate, a package, a Python-importable file stem and a
/// file name: one spelling that is valid as all of them.
pub fn validate_name(name: &str) -> Result<(), ScaffoldError> {
    let ok = (1..=crate::limits::NEW_WORKLOAD_NAME_MAX).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(ScaffoldError::BadName(name.to_owned()))
    }
}

/// `run` flags for `test.sh` that keep each starting point's run small and
/// inside the tiny simulator's limits.
fn test_args(from: Option<Origin>) -> &'static str {
    match from {
        None => "--requests 4 --max-tokens 8",
        Some(Origin::ReuseVerify) => "--param repeats=2 --param short-range=64:128 --max-tokens 8",
        Some(Origin::LocalCopilotBurst) => {
            "--requests 6 --warmup 2 --param sessions=2 --param burst-size=2 \\\n    \
             --param shared-prefix-tokens=128 --param context-tokens=32 \\\n    \
             --param burst-interval-ms=0 --param think-time-ms=0 --max-tokens 8"
        }
    }
}

/// The workload's source: the minimal template, or a shipped workload with
/// its `describe()` name replaced by the project's.
fn source(opts: &Options) -> String {
    let (text, named) = match (opts.lang, opts.from) {
        (Lang::Rust, None) => return template::RUST_LIB.replace("{{name}}", &opts.name),
        (Lang::Js, None) => return template::JS_APP.replace("{{name}}", &opts.name),
        (Lang::Python, None) => return template::PYTHON_APP.replace("{{name}}", &opts.name),
        (Lang::Rust, Some(Origin::ReuseVerify)) => (origin::RUST_REUSE_VERIFY, "name: \"%\""),
        (Lang::Rust, Some(Origin::LocalCopilotBurst)) => {
            (origin::RUST_LOCAL_COPILOT_BURST, "name: \"%\"")
        }
        (Lang::Js, Some(Origin::ReuseVerify)) => (origin::JS_REUSE_VERIFY, "name: '%'"),
        (Lang::Js, Some(Origin::LocalCopilotBurst)) => {
            (origin::JS_LOCAL_COPILOT_BURST, "name: '%'")
        }
        (Lang::Python, Some(Origin::ReuseVerify)) => (origin::PYTHON_REUSE_VERIFY, "name=\"%\""),
        (Lang::Python, Some(Origin::LocalCopilotBurst)) => {
            (origin::PYTHON_LOCAL_COPILOT_BURST, "name=\"%\"")
        }
    };
    let from = opts.from.map_or("", Origin::as_str);
    let old = named.replace('%', from);
    let new = named.replace('%', &opts.name);
    // A test checks that every shipped source names itself exactly once.
    let body = text.replacen(&old, &new, 1);
    let note = format!(
        "Started from sparkhost's {from} workload (`sparkhost new workload {} --from {from}`).",
        opts.name
    );
    match opts.lang {
        Lang::Rust | Lang::Js => format!("// {note}\n{body}"),
        Lang::Python => format!("# {note}\n{body}"),
    }
}

fn readme(opts: &Options) -> String {
    let (lang_name, needs, layout) = match opts.lang {
        Lang::Rust => (
            "Rust",
            "Rust >= 1.95 with the wasm32-wasip2 target",
            "- `src/lib.rs`: the workload (a `Workload` impl, exported with\n  \
             `export_workload!`).\n\
             - `sdk/`: the `sparkhost-workload` SDK, a copy of sparkhost's\n  \
             `workloads/sdk`; `Cargo.lock` pins what it builds with.",
        ),
        Lang::Js => (
            "JavaScript",
            "node and npm; componentize-js is pinned in package-lock.json",
            "- `src/app.js`: the workload (a class exported with `exportWorkload`).\n\
             - `lib/`: the JavaScript SDK, a port of sparkhost's Rust SDK.",
        ),
        Lang::Python => (
            "Python",
            "python3 with venv; componentize-py is pinned in requirements.txt",
            "- `src/app.py`: the workload (a class exported with\n  \
             `sparkhost.export_workload`).\n\
             - `lib/`: the Python SDK, a port of sparkhost's Rust SDK\n  \
             (`lib/planner.py` hands componentize-py the exported class).",
        ),
    };
    let from_flag = opts
        .from
        .map_or(String::new(), |f| format!(" --from {}", f.as_str()));
    template::README
        .replace("{{lang_name}}", lang_name)
        .replace("{{lang}}", opts.lang.as_str())
        .replace("{{from_flag}}", &from_flag)
        .replace("{{needs}}", needs)
        .replace("{{layout}}", layout)
        .replace("{{name}}", &opts.name)
}

/// Every file of the project `opts` describes.
pub fn files(opts: &Options) -> Vec<File> {
    let name = |s: &str| s.replace("{{name}}", &opts.name);
    let plain = |path: &'static str, text: String| File {
        path,
        text,
        executable: false,
    };
    let script = |path: &'static str, text: String| File {
        path,
        text,
        executable: true,
    };
    let test_sh = template::TEST_SH
        .replace("{{test_args}}", test_args(opts.from))
        .replace("{{name}}", &opts.name);
    let mut out = vec![
        plain("README.md", readme(opts)),
        plain("wit/workload@0.1.0/workload.wit", embedded::WIT.to_owned()),
        script("test.sh", test_sh),
    ];
    let sdk: &[(&str, &str)] = match opts.lang {
        Lang::Rust => {
            out.push(plain("Cargo.toml", name(template::RUST_CARGO)));
            out.push(plain("Cargo.lock", embedded::RUST_LOCK.to_owned()));
            out.push(plain("src/lib.rs", source(opts)));
            out.push(script("build.sh", name(template::RUST_BUILD)));
            out.push(plain(".gitignore", template::RUST_GITIGNORE.to_owned()));
            embedded::RUST_SDK
        }
        Lang::Js => {
            out.push(plain("package.json", name(template::JS_PACKAGE)));
            out.push(plain(
                "package-lock.json",
                embedded::JS_LOCK.replace(
                    "\"name\": \"sparkhost-examples-js\"",
                    &format!("\"name\": \"{}\"", opts.name),
                ),
            ));
            out.push(plain("src/app.js", source(opts)));
            out.push(script("build.sh", name(template::JS_BUILD)));
            out.push(plain(".gitignore", template::JS_GITIGNORE.to_owned()));
            embedded::JS_SDK
        }
        Lang::Python => {
            out.push(plain(
                "requirements.txt",
                embedded::PYTHON_REQUIREMENTS.to_owned(),
            ));
            out.push(plain("src/app.py", source(opts)));
            out.push(script("build.sh", name(template::PYTHON_BUILD)));
            out.push(plain(".gitignore", template::PYTHON_GITIGNORE.to_owned()));
            embedded::PYTHON_SDK
        }
    };
    for &(path, text) in sdk {
        let text = if path == "sdk/src/lib.rs" {
            // In the repository the SDK reads the WIT two levels up; in a
            // project, one.
            text.replace(
                "path: \"../../wit/workload@0.1.0\"",
                "path: \"../wit/workload@0.1.0\"",
            )
        } else {
            text.to_owned()
        };
        out.push(plain(path, text));
    }
    out
}

/// What [`create`] made.
#[derive(Debug, Clone)]
pub struct Created {
    pub dir: PathBuf,
    pub files: usize,
}

fn write_err(path: &Path) -> impl FnOnce(std::io::Error) -> ScaffoldError + '_ {
    move |source| ScaffoldError::Write {
        path: path.to_owned(),
        source,
    }
}

/// Writes the project into `opts.dir`, which must not exist or be empty:
/// nothing of the user's is ever overwritten.
pub fn create(opts: &Options) -> Result<Created, ScaffoldError> {
    use std::os::unix::fs::PermissionsExt;
    validate_name(&opts.name)?;
    let dir = &opts.dir;
    match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(ScaffoldError::Exists(dir.clone()));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir).map_err(write_err(dir))?;
        }
        Err(_) => return Err(ScaffoldError::Exists(dir.clone())),
    }
    let files = files(opts);
    for f in &files {
        let path = dir.join(f.path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(write_err(parent))?;
        }
        std::fs::write(&path, &f.text).map_err(write_err(&path))?;
        if f.executable {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
                .map_err(write_err(&path))?;
        }
    }
    Ok(Created {
        dir: dir.clone(),
        files: files.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(lang: Lang, from: Option<Origin>) -> Options {
        Options {
            name: "my_load".into(),
            lang,
            from,
            dir: PathBuf::from("unused"),
        }
    }

    const LANGS: [Lang; 3] = [Lang::Rust, Lang::Js, Lang::Python];
    const FROMS: [Option<Origin>; 3] = [
        None,
        Some(Origin::ReuseVerify),
        Some(Origin::LocalCopilotBurst),
    ];

    #[test]
    fn names_are_one_safe_spelling() {
        for ok in ["a", "my_load", "w2"] {
            assert!(validate_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "2w", "My", "a-b", "a b", "../x", "é", &"a".repeat(65)] {
            let e = validate_name(bad).unwrap_err().to_string();
            assert!(e.contains("a-z 0-9 _"), "{bad}: {e}");
        }
    }

    /// Every placeholder is filled, the workload names itself by the
    /// project's name (and only a shipped source's own name is replaced).
    #[test]
    fn every_project_is_filled_in_and_named() {
        for lang in LANGS {
            for from in FROMS {
                let o = opts(lang, from);
                let fs = files(&o);
                // The SDKs are copied as they are (one has `{{` of its own).
                let sdk = |p: &str| p.starts_with("lib/") || p.starts_with("sdk/");
                for f in fs.iter().filter(|f| !sdk(f.path)) {
                    assert!(!f.text.contains("{{"), "{lang:?} {from:?} {}", f.path);
                }
                let src = fs.iter().find(|f| f.path.starts_with("src/")).unwrap();
                let named = match lang {
                    Lang::Rust => "name: \"my_load\"",
                    Lang::Js => "name: 'my_load'",
                    Lang::Python => "name=\"my_load\"",
                };
                assert_eq!(src.text.matches(named).count(), 1, "{lang:?} {from:?}");
                if let Some(f) = from {
                    let old = named.replace("my_load", f.as_str());
                    assert!(!src.text.contains(&old), "{lang:?} {from:?}");
                }
                let scripts: Vec<&str> =
                    fs.iter().filter(|f| f.executable).map(|f| f.path).collect();
                assert_eq!(scripts, ["test.sh", "build.sh"], "{lang:?}");
                let build = fs.iter().find(|f| f.path == "build.sh").unwrap();
                assert!(build.text.contains("my_load.wasm"), "{lang:?}");
            }
        }
    }

    #[test]
    fn the_rust_sdk_reads_the_projects_wit() {
        let fs = files(&opts(Lang::Rust, None));
        let lib = fs.iter().find(|f| f.path == "sdk/src/lib.rs").unwrap();
        assert!(lib.text.contains("path: \"../wit/workload@0.1.0\""));
        assert!(
            fs.iter()
                .any(|f| f.path == "wit/workload@0.1.0/workload.wit")
        );
    }

    /// The project's dependency versions are the guest workspace's.
    #[test]
    fn pinned_versions_follow_the_repository() {
        let repo: toml::Table = toml::from_str(embedded::RUST_WORKSPACE).unwrap();
        let tmpl: toml::Table = toml::from_str(template::RUST_CARGO).unwrap();
        for dep in ["wit-bindgen", "sha2"] {
            assert_eq!(
                tmpl["workspace"]["dependencies"][dep], repo["workspace"]["dependencies"][dep],
                "{dep}"
            );
        }
        for key in ["edition", "rust-version"] {
            assert_eq!(
                tmpl["workspace"]["package"][key],
                repo["workspace"]["package"][key]
            );
        }
        let ex: serde_json::Value = serde_json::from_str(embedded::JS_PACKAGE).unwrap();
        let pj: serde_json::Value = serde_json::from_str(template::JS_PACKAGE).unwrap();
        assert_eq!(pj["devDependencies"], ex["devDependencies"]);
        let lock = files(&opts(Lang::Js, None))
            .into_iter()
            .find(|f| f.path == "package-lock.json")
            .unwrap();
        let lock: serde_json::Value = serde_json::from_str(&lock.text).unwrap();
        assert_eq!(lock["name"], "my_load");
        assert_eq!(lock["packages"][""]["name"], "my_load");
        assert_eq!(
            lock["packages"][""]["devDependencies"],
            ex["devDependencies"]
        );
    }

    #[test]
    fn create_refuses_a_directory_with_anything_in_it() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("mine.txt"), "keep").unwrap();
        let mut o = opts(Lang::Python, None);
        o.dir = tmp.path().to_owned();
        assert!(matches!(create(&o), Err(ScaffoldError::Exists(_))));
        assert_eq!(
            std::fs::read_to_string(tmp.path().join("mine.txt")).unwrap(),
            "keep"
        );
        o.dir = tmp.path().join("fresh");
        let made = create(&o).unwrap();
        assert_eq!(made.files, files(&o).len());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(o.dir.join("build.sh"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o111, 0o111);
    }
}
