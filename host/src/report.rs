//! Reports of one run, made by a report generator component.
//!
//! The generator (default: `workloads/report-default.wasm`, built by `make
//! workloads`) reads the run directory read-only and returns files; this
//! module finds the generator, runs it in the sandbox
//! ([`crate::sandbox::report`]), checks every returned name and writes the
//! files into the run directory with a `report_manifest.json` saying which
//! generator wrote what. A generator can never replace the run's evidence:
//! only new files, or files an earlier generation wrote, may be written.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Component, Path, PathBuf};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

use crate::digest::sha256_hex;
use crate::sandbox::report::{
    Document, GeneratorInfo, OutputFile, ReportInput, ReportLimits, ReportRuntime,
};
use crate::sandbox::{Limits, Sandbox};
use crate::share::ComponentSource;

/// File name of the default generator, next to the binary or in `workloads/`.
pub const DEFAULT_GENERATOR: &str = "report-default.wasm";
/// Written by the host after every generation.
pub const REPORT_MANIFEST: &str = "report_manifest.json";
/// The run's own artifacts; no generator may write these.
const RESERVED_FILES: &[&str] = &[
    "config.json",
    "manifest.json",
    "summary.json",
    "requests.jsonl",
    "request_manifest.jsonl",
    "prompts_manifest.jsonl",
    "histograms.hlog",
    "verdict.json",
    "kvbm_metrics_snapshots.jsonl",
    "nvme_identity.json",
    "nvme_smart_pre.json",
    "nvme_smart_post.json",
    REPORT_MANIFEST,
];
/// Directories that hold collected evidence.
const RESERVED_DIRS: &[&str] = &["phase_deltas", "telemetry", "io", "responses", "analysis"];
/// Documents handed to the guest as text, when present.
const DOCUMENTS: &[&str] = &[
    "summary.json",
    "config.json",
    "manifest.json",
    "verdict.json",
];
use crate::limits::{
    REPORT_MAX_LISTED_FILES as MAX_LISTED_FILES, REPORT_MAX_NAME_BYTES as MAX_NAME_BYTES,
    REPORT_MAX_NAME_DEPTH as MAX_NAME_DEPTH, REPORT_MAX_OUTPUT_BYTES as MAX_OUTPUT_BYTES,
    REPORT_MAX_OUTPUT_FILES as MAX_OUTPUT_FILES,
};

/// How to run a generator.
#[derive(Debug, Clone, Default)]
pub struct ReportOptions {
    pub cache_dir: Option<PathBuf>,
    pub limits: ReportLimits,
    /// `--param name=value` for the generator.
    pub params: Vec<(String, String)>,
}

impl ReportOptions {
    /// A run's workload limits, raised to a report's larger minimum deadline
    /// and memory ([`ReportLimits::default`]): a workload limit tuned for
    /// planning must not make the report of a long run fail.
    pub fn for_run(cache_dir: Option<PathBuf>, workload: Limits) -> Self {
        let d = ReportLimits::default();
        ReportOptions {
            cache_dir,
            limits: ReportLimits {
                call_timeout: workload.call_timeout.max(d.call_timeout),
                memory_bytes: workload.memory_bytes.max(d.memory_bytes),
            },
            params: Vec::new(),
        }
    }
}

/// What `report_manifest.json` records about one generation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReportManifest {
    pub generator: GeneratorRecord,
    pub created_utc: String,
    pub params: Vec<(String, String)>,
    pub files: Vec<WrittenFile>,
    /// Every file any generation wrote into this directory; these may be replaced.
    #[serde(default)]
    pub all_generated: BTreeSet<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GeneratorRecord {
    /// The generator as given: a path or an `oci://` reference.
    pub path: String,
    pub sha256: String,
    pub wit: String,
    pub name: String,
    pub version: String,
    /// Where an `oci://` generator was pulled from, and its digests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oci: Option<crate::results::documents::OciSourceDoc>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WrittenFile {
    pub name: String,
    pub bytes: usize,
    pub sha256: String,
}

/// Runs the report generator over `run_dir` and writes its files there.
///
/// `generator = None` uses the default generator ([`default_generator`]).
/// Returns the paths written (the manifest last). This is what `sparkhost
/// run` calls at the end and `sparkhost report` calls offline.
pub fn generate_report(
    run_dir: &Path,
    generator: Option<&ComponentSource>,
    opts: &ReportOptions,
) -> anyhow::Result<Vec<PathBuf>> {
    // WASI's synchronous filesystem calls drive their own small runtime and
    // panic inside a tokio runtime; a thread of its own keeps this callable
    // from `sparkhost run`'s async code as well as from plain code.
    std::thread::scope(|s| {
        s.spawn(|| generate_on_this_thread(run_dir, generator, opts))
            .join()
            .unwrap_or_else(|_| Err(anyhow::anyhow!("the report generator thread panicked")))
    })
}

fn generate_on_this_thread(
    run_dir: &Path,
    generator: Option<&ComponentSource>,
    opts: &ReportOptions,
) -> anyhow::Result<Vec<PathBuf>> {
    if !run_dir.is_dir() {
        bail!("{} is not a run directory", run_dir.display());
    }
    let source = match generator {
        Some(g) => g.clone(),
        None => ComponentSource::local(&default_generator()?),
    };
    let path = source.path.clone();
    let sandbox = Sandbox::new(opts.cache_dir.clone(), Limits::default())?;
    let rt = ReportRuntime::new(&sandbox, opts.limits)?;
    let g = rt
        .load(&path)
        .with_context(|| format!("loading report generator {}", source.given))?;
    let info = rt.describe(&g)?;
    check_params(&info, &opts.params)?;
    let input = read_input(run_dir, &opts.params)?;
    let files = rt.generate(&g, run_dir, &input)?;
    let record = GeneratorRecord {
        path: source.given.clone(),
        sha256: g.digest.clone(),
        wit: format!("sparkhost:report@{}", g.wit_version),
        name: info.name,
        version: info.version,
        oci: source.oci.clone(),
    };
    write_outputs(run_dir, files, record, &opts.params)
}

/// The generator's name, version and params, without running it on a run.
pub fn describe_generator(
    generator: Option<&Path>,
    opts: &ReportOptions,
) -> anyhow::Result<(PathBuf, String, GeneratorInfo)> {
    std::thread::scope(|s| {
        s.spawn(|| describe_on_this_thread(generator, opts))
            .join()
            .unwrap_or_else(|_| Err(anyhow::anyhow!("the report generator thread panicked")))
    })
}

fn describe_on_this_thread(
    generator: Option<&Path>,
    opts: &ReportOptions,
) -> anyhow::Result<(PathBuf, String, GeneratorInfo)> {
    let path = match generator {
        Some(p) => p.to_owned(),
        None => default_generator()?,
    };
    let sandbox = Sandbox::new(opts.cache_dir.clone(), Limits::default())?;
    let rt = ReportRuntime::new(&sandbox, opts.limits)?;
    let g = rt.load(&path)?;
    let info = rt.describe(&g)?;
    Ok((path, g.digest, info))
}

fn check_params(info: &GeneratorInfo, params: &[(String, String)]) -> anyhow::Result<()> {
    for (k, _) in params {
        if !info.params.iter().any(|p| &p.name == k) {
            bail!(
                "report generator {} {} has no param {k:?} (its params: {})",
                info.name,
                info.version,
                if info.params.is_empty() {
                    "none".to_owned()
                } else {
                    info.params
                        .iter()
                        .map(|p| p.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            );
        }
    }
    Ok(())
}

/// Where the default generator is looked for, in order:
/// `$SPARKHOST_REPORT_GENERATOR`; `report-default.wasm` next to the binary;
/// `workloads/report-default.wasm` in the directories above the binary (a
/// `target/release/sparkhost` inside the repository); the repository this
/// binary was built from.
pub fn default_generator_candidates() -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Some(p) = std::env::var_os("SPARKHOST_REPORT_GENERATOR") {
        out.push(PathBuf::from(p));
        return out;
    }
    if let Ok(exe) = std::env::current_exe() {
        let exe = exe.canonicalize().unwrap_or(exe);
        if let Some(dir) = exe.parent() {
            out.push(dir.join(DEFAULT_GENERATOR));
            for anc in dir.ancestors().skip(1).take(4) {
                out.push(anc.join("workloads").join(DEFAULT_GENERATOR));
            }
        }
    }
    out.push(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join("workloads")
            .join(DEFAULT_GENERATOR),
    );
    out
}

pub fn default_generator() -> anyhow::Result<PathBuf> {
    let candidates = default_generator_candidates();
    if let Some(p) = candidates.iter().find(|p| p.is_file()) {
        return Ok(p.clone());
    }
    bail!(
        "no report generator found (looked at {}); build it with `make workloads`, or pass --generator FILE.wasm",
        candidates
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// The file list and documents handed to the guest.
pub fn read_input(run_dir: &Path, params: &[(String, String)]) -> anyhow::Result<ReportInput> {
    let mut files = Vec::new();
    list_files(run_dir, run_dir, 0, &mut files)?;
    files.sort();
    let mut documents = Vec::new();
    for name in DOCUMENTS {
        let p = run_dir.join(name);
        let Ok(meta) = fs::symlink_metadata(&p) else {
            continue;
        };
        if !meta.is_file() || meta.len() > 64 << 20 {
            continue;
        }
        let text = fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
        documents.push(Document {
            name: (*name).to_owned(),
            text,
        });
    }
    let run_id = run_dir
        .canonicalize()
        .ok()
        .and_then(|p| p.file_name().map(|f| f.to_string_lossy().into_owned()))
        .unwrap_or_default();
    Ok(ReportInput {
        run_id,
        files,
        documents,
        params: params.to_vec(),
    })
}

fn list_files(root: &Path, dir: &Path, depth: usize, out: &mut Vec<String>) -> anyhow::Result<()> {
    if depth > 8 {
        return Ok(());
    }
    for entry in fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let entry = entry?;
        let ft = entry.file_type()?;
        let path = entry.path();
        if ft.is_dir() {
            list_files(root, &path, depth + 1, out)?;
        } else if ft.is_file() {
            if out.len() >= MAX_LISTED_FILES {
                return Ok(());
            }
            if let Ok(rel) = path.strip_prefix(root) {
                out.push(
                    rel.components()
                        .map(|c| c.as_os_str().to_string_lossy())
                        .collect::<Vec<_>>()
                        .join("/"),
                );
            }
        }
    }
    Ok(())
}

/// Checks a name a generator returned; the result is relative and plain.
pub fn check_output_name(name: &str) -> Result<PathBuf, String> {
    if name.is_empty() || name.len() > MAX_NAME_BYTES {
        return Err(format!(
            "{name:?}: names must have 1 to {MAX_NAME_BYTES} bytes"
        ));
    }
    if name.starts_with('/') || name.contains('\\') || name.contains(':') {
        return Err(format!(
            "{name:?}: absolute paths, drive letters and backslashes are not allowed"
        ));
    }
    let parts: Vec<&str> = name.split('/').collect();
    if parts.len() > MAX_NAME_DEPTH {
        return Err(format!(
            "{name:?}: at most {MAX_NAME_DEPTH} path components"
        ));
    }
    for p in &parts {
        if p.is_empty() || *p == "." || *p == ".." {
            return Err(format!(
                "{name:?}: empty, `.` or `..` components are not allowed"
            ));
        }
        if p.starts_with('.') {
            return Err(format!("{name:?}: hidden names are not allowed"));
        }
        if !p
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '+'))
        {
            return Err(format!(
                "{name:?}: only ASCII letters, digits and . _ - + are allowed"
            ));
        }
    }
    if RESERVED_FILES.contains(&name) || RESERVED_DIRS.contains(&parts[0]) {
        return Err(format!("{name:?} belongs to the run's own evidence"));
    }
    if name.ends_with(".jsonl") || name.ends_with(".hlog") || name.ends_with(".tmp") {
        return Err(format!(
            "{name:?}: .jsonl, .hlog and .tmp are reserved for run data"
        ));
    }
    let path = PathBuf::from(name);
    debug_assert!(path.components().all(|c| matches!(c, Component::Normal(_))));
    Ok(path)
}

fn previous_manifest(run_dir: &Path) -> Option<ReportManifest> {
    let text = fs::read_to_string(run_dir.join(REPORT_MANIFEST)).ok()?;
    serde_json::from_str(&text).ok()
}

/// Checks every file first (nothing is written if one is refused), then
/// writes each atomically and the manifest last.
pub fn write_outputs(
    run_dir: &Path,
    files: Vec<OutputFile>,
    generator: GeneratorRecord,
    params: &[(String, String)],
) -> anyhow::Result<Vec<PathBuf>> {
    if files.len() > MAX_OUTPUT_FILES {
        bail!(
            "report generator {} returned {} files; at most {MAX_OUTPUT_FILES} are accepted",
            generator.name,
            files.len()
        );
    }
    let total: usize = files.iter().map(|f| f.bytes.len()).sum();
    if total > MAX_OUTPUT_BYTES {
        bail!(
            "report generator {} returned {total} bytes; at most {MAX_OUTPUT_BYTES} are accepted",
            generator.name
        );
    }
    let previous = previous_manifest(run_dir);
    let mut generated: BTreeSet<String> = previous
        .as_ref()
        .map(|m| {
            let mut s = m.all_generated.clone();
            s.extend(m.files.iter().map(|f| f.name.clone()));
            s
        })
        .unwrap_or_default();
    let mut seen = BTreeSet::new();
    let mut checked = Vec::with_capacity(files.len());
    for f in files {
        let rel = check_output_name(&f.name).map_err(|e| {
            anyhow::anyhow!(
                "report generator {} returned a bad file name: {e}",
                generator.name
            )
        })?;
        if !seen.insert(f.name.clone()) {
            bail!(
                "report generator {} returned {:?} twice",
                generator.name,
                f.name
            );
        }
        let target = run_dir.join(&rel);
        match fs::symlink_metadata(&target) {
            Ok(m) if m.is_dir() => bail!(
                "report generator {} wants to write {:?}, which is a directory",
                generator.name,
                f.name
            ),
            Ok(_) if !generated.contains(&f.name) => bail!(
                "report generator {} wants to replace {:?}, which no report generator wrote; refusing to overwrite run data",
                generator.name,
                f.name
            ),
            _ => {}
        }
        checked.push((f, rel));
    }
    let mut written = Vec::with_capacity(checked.len() + 1);
    let mut records = Vec::with_capacity(checked.len());
    for (f, rel) in checked {
        let target = run_dir.join(&rel);
        ensure_parent(run_dir, &rel)?;
        write_atomic(&target, &f.bytes)?;
        records.push(WrittenFile {
            name: f.name.clone(),
            bytes: f.bytes.len(),
            sha256: sha256_hex(&f.bytes),
        });
        generated.insert(f.name);
        written.push(target);
    }
    let manifest = ReportManifest {
        generator,
        created_utc: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        params: params.to_vec(),
        files: records,
        all_generated: generated,
    };
    let mut bytes = serde_json::to_vec_pretty(&manifest)?;
    bytes.push(b'\n');
    let mp = run_dir.join(REPORT_MANIFEST);
    write_atomic(&mp, &bytes)?;
    written.push(mp);
    Ok(written)
}

/// Creates the directories above `rel`, refusing to pass through a symbolic
/// link (which could lead out of the run directory).
fn ensure_parent(run_dir: &Path, rel: &Path) -> anyhow::Result<()> {
    let mut cur = run_dir.to_owned();
    let comps: Vec<_> = rel.components().collect();
    for c in &comps[..comps.len().saturating_sub(1)] {
        cur.push(c);
        match fs::symlink_metadata(&cur) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => bail!(
                "{} is not a plain directory; refusing to write reports through it",
                cur.display()
            ),
            Err(_) => {
                fs::create_dir(&cur).with_context(|| format!("creating {}", cur.display()))?
            }
        }
    }
    Ok(())
}

fn write_atomic(target: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    crate::results::rundir::write_atomic(target, bytes)
        .with_context(|| format!("writing {}", target.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec() -> GeneratorRecord {
        GeneratorRecord {
            path: "g.wasm".into(),
            sha256: "0".into(),
            wit: "sparkhost:report@0.1.0".into(),
            name: "g".into(),
            version: "1".into(),
            oci: None,
        }
    }

    fn file(name: &str, text: &str) -> OutputFile {
        OutputFile {
            name: name.into(),
            bytes: text.as_bytes().to_vec(),
        }
    }

    #[test]
    fn names_are_plain_relative_paths() {
        for ok in [
            "report.md",
            "report.html",
            "figures/ttft.svg",
            "a/b/c+d-e_f.csv",
        ] {
            assert!(check_output_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a//b",
            "./a",
            ".hidden",
            "a\\b",
            "C:x",
            "a b",
            "summary.json",
            "requests.jsonl",
            "phase_deltas/x.json",
            "telemetry/gpu0.csv",
            "x.jsonl",
            "report_manifest.json",
            "a/b/c/d/e",
        ] {
            assert!(check_output_name(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn outputs_never_replace_run_data_but_replace_earlier_reports() {
        let d = tempfile::tempdir().unwrap();
        fs::write(d.path().join("notes.txt"), "mine").unwrap();
        let err = write_outputs(d.path(), vec![file("notes.txt", "x")], rec(), &[]).unwrap_err();
        assert!(err.to_string().contains("refusing to overwrite"), "{err}");
        assert_eq!(
            fs::read_to_string(d.path().join("notes.txt")).unwrap(),
            "mine"
        );

        let w = write_outputs(
            d.path(),
            vec![file("report.md", "one"), file("fig/a.svg", "<svg/>")],
            rec(),
            &[],
        )
        .unwrap();
        assert_eq!(w.len(), 3);
        let w = write_outputs(d.path(), vec![file("report.md", "two")], rec(), &[]).unwrap();
        assert_eq!(w.len(), 2);
        assert_eq!(
            fs::read_to_string(d.path().join("report.md")).unwrap(),
            "two"
        );
        let m = previous_manifest(d.path()).unwrap();
        assert!(m.all_generated.contains("fig/a.svg"));
        assert_eq!(m.files.len(), 1);
    }

    #[test]
    fn one_bad_name_writes_nothing() {
        let d = tempfile::tempdir().unwrap();
        let err = write_outputs(
            d.path(),
            vec![file("report.md", "x"), file("../escape.md", "x")],
            rec(),
            &[],
        )
        .unwrap_err();
        assert!(err.to_string().contains("bad file name"), "{err}");
        assert!(!d.path().join("report.md").exists());
        assert!(!d.path().join(REPORT_MANIFEST).exists());
    }

    #[test]
    fn symlinked_directories_are_not_followed() {
        let d = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), d.path().join("fig")).unwrap();
        let err = write_outputs(d.path(), vec![file("fig/a.svg", "x")], rec(), &[]).unwrap_err();
        assert!(err.to_string().contains("not a plain directory"), "{err}");
        assert!(!outside.path().join("a.svg").exists());
    }
}
