//! `matrix.toml`: workloads × params × loads × repeats, one run each, into
//! one results tree with its own index.
//!
//! ```toml
//! name = "short"                       # names the tree and tags every run
//! results_root = "bench/matrix/short"  # default: bench/matrix/<name>
//! repeats = 3
//! concurrency = [1, 4, 8]              # closed-loop axis; and/or
//! rate = [2.0, 5.0]                    # open-loop axis (requests/s)
//! args = ["--stream", "--endpoint", "http://127.0.0.1:8000"]  # every run
//!
//! [params]                              # swept for every workload: cartesian product
//! max-tokens = [32, 128]
//!
//! [[workload]]
//! path = "workloads/synthetic.wasm"     # relative to the current directory, or oci://HOST/REPO:TAG|@sha256:…
//! sha256 = "…"                          # optional pin: the component's sha256; a mismatch runs nothing
//! label = "synthetic"                   # default: the file stem (the repository's last part for oci://)
//! params = { set = "short" }            # fixed (a list here sweeps too)
//! args = ["--tokenizer", "tok.json"]   # this workload's runs only
//! ```
//!
//! Cells run repeat by repeat (all cells of repeat 1, then of repeat 2…), so
//! slow drift of the server spreads over every cell instead of piling onto
//! the last ones. A cell's run directory is `<results_root>/<cell id>`; a
//! cell whose directory has a `summary.json` (other than an interrupted one)
//! is done and skipped when the matrix is started again.
//!
//! An `oci://` workload's tag is resolved once, before the first cell, and
//! every cell runs that digest: a tag moved mid-matrix cannot mix two
//! components into one comparison.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

use super::launch::sanitize;
use crate::digest::sha256_hex;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatrixFile {
    pub name: Option<String>,
    pub results_root: Option<PathBuf>,
    #[serde(default = "one")]
    pub repeats: u32,
    #[serde(default)]
    pub concurrency: Vec<u32>,
    #[serde(default)]
    pub rate: Vec<f64>,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub params: BTreeMap<String, toml::Value>,
    #[serde(rename = "workload", default)]
    pub workloads: Vec<MatrixWorkload>,
}

fn one() -> u32 {
    1
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatrixWorkload {
    pub path: PathBuf,
    /// The component's sha256 (64 hex digits, `sha256:` optional).
    pub sha256: Option<String>,
    pub label: Option<String>,
    #[serde(default)]
    pub params: BTreeMap<String, toml::Value>,
    #[serde(default)]
    pub args: Vec<String>,
}

/// How a cell offers load.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum CellLoad {
    /// The workload's and the args' own choice.
    Default,
    Concurrency {
        concurrency: u32,
    },
    Rate {
        rate: f64,
    },
}

impl CellLoad {
    fn tag(&self) -> String {
        match self {
            CellLoad::Default => String::new(),
            CellLoad::Concurrency { concurrency } => format!("c{concurrency}"),
            CellLoad::Rate { rate } => format!("r{rate}"),
        }
    }

    fn args(&self) -> Vec<String> {
        match self {
            CellLoad::Default => vec![],
            CellLoad::Concurrency { concurrency } => {
                vec!["--concurrency".into(), concurrency.to_string()]
            }
            CellLoad::Rate { rate } => vec!["--rate".into(), rate.to_string()],
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Cell {
    pub id: String,
    pub repeat: u32,
    pub label: String,
    pub workload: PathBuf,
    pub params: BTreeMap<String, String>,
    pub load: CellLoad,
    /// Flags after the workload, without `--results-root`/`--run-id`.
    pub args: Vec<String>,
}

fn value_text(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn axis(v: &toml::Value) -> Vec<String> {
    match v {
        toml::Value::Array(a) => a.iter().map(value_text).collect(),
        other => vec![value_text(other)],
    }
}

/// All combinations of the axes, in key order, first key slowest.
fn product(axes: &BTreeMap<String, Vec<String>>) -> Vec<BTreeMap<String, String>> {
    let mut out = vec![BTreeMap::new()];
    for (k, vals) in axes {
        let mut next = Vec::with_capacity(out.len() * vals.len().max(1));
        for combo in &out {
            for v in vals {
                let mut c = combo.clone();
                c.insert(k.clone(), v.clone());
                next.push(c);
            }
        }
        out = next;
    }
    out
}

const RESERVED_ARGS: [&str; 5] = [
    "--results-root",
    "--run-id",
    "--concurrency",
    "--rate",
    "--workload-sha256",
];

impl MatrixFile {
    pub fn parse(text: &str) -> anyhow::Result<MatrixFile> {
        let m: MatrixFile = toml::from_str(text)?;
        if m.workloads.is_empty() {
            bail!("the matrix has no [[workload]]");
        }
        let mut m = m;
        for w in &mut m.workloads {
            if let Some(pin) = &w.sha256 {
                w.sha256 =
                    Some(crate::cli::parse_sha256(pin).map_err(|e| {
                        anyhow::anyhow!("workload {}: sha256 = {e}", w.path.display())
                    })?);
            }
            if let Some(text) = w.path.to_str().filter(|t| crate::share::is_oci(t)) {
                crate::share::OciRef::parse(text)?;
            }
        }
        if m.repeats == 0 {
            bail!("repeats must be at least 1");
        }
        if m.concurrency.contains(&0) {
            bail!("concurrency values must be at least 1");
        }
        if m.rate.iter().any(|r| !r.is_finite() || *r <= 0.0) {
            bail!("rate values must be positive");
        }
        for a in m
            .args
            .iter()
            .chain(m.workloads.iter().flat_map(|w| &w.args))
        {
            if RESERVED_ARGS
                .iter()
                .any(|r| a == r || a.starts_with(&format!("{r}=")))
            {
                bail!(
                    "{a} is set by the matrix itself; use results_root, concurrency, rate or a workload's sha256 instead"
                );
            }
        }
        m.check_axes()?;
        Ok(m)
    }

    /// Axes without repeated values (a duplicate counted a cell twice in the
    /// comparison) and a bounded number of cells (an absurd `repeats` once
    /// made a matrix that never ends).
    fn check_axes(&self) -> anyhow::Result<()> {
        use crate::limits::{MAX_MATRIX_CELLS, MAX_MATRIX_REPEATS};
        if self.repeats > MAX_MATRIX_REPEATS {
            bail!(
                "repeats = {} is more than the {MAX_MATRIX_REPEATS} allowed",
                self.repeats
            );
        }
        fn no_duplicates(what: &str, vals: &[String]) -> anyhow::Result<()> {
            let mut seen = std::collections::HashSet::new();
            if let Some(d) = vals.iter().find(|v| !seen.insert(v.as_str())) {
                bail!("{what} lists {d} twice");
            }
            Ok(())
        }
        let conc: Vec<String> = self.concurrency.iter().map(u32::to_string).collect();
        no_duplicates("concurrency", &conc)?;
        let rates: Vec<String> = self.rate.iter().map(f64::to_string).collect();
        no_duplicates("rate", &rates)?;
        for c in &self.concurrency {
            crate::plan::LoadModel::Closed { concurrency: *c }
                .validate()
                .map_err(|e| anyhow::anyhow!("concurrency: {e}"))?;
        }
        for r in &self.rate {
            crate::plan::LoadModel::Poisson { rate: *r }
                .validate()
                .map_err(|e| anyhow::anyhow!("rate: {e}"))?;
        }
        let loads = (self.concurrency.len() + self.rate.len()).max(1);
        let mut cells = u64::from(self.repeats).saturating_mul(loads as u64);
        let mut per_workload = 0u64;
        for w in &self.workloads {
            let mut axes: BTreeMap<&String, Vec<String>> =
                self.params.iter().map(|(k, v)| (k, axis(v))).collect();
            for (k, v) in &w.params {
                axes.insert(k, axis(v));
            }
            let mut combos = 1u64;
            for (k, vals) in &axes {
                no_duplicates(&format!("param {k:?}"), vals)?;
                combos = combos.saturating_mul(vals.len().max(1) as u64);
            }
            per_workload = per_workload.saturating_add(combos);
        }
        cells = cells.saturating_mul(per_workload);
        if cells > MAX_MATRIX_CELLS {
            bail!(
                "the matrix has {cells} cells; at most {MAX_MATRIX_CELLS} are allowed (split it)"
            );
        }
        Ok(())
    }

    pub fn name(&self, file: &Path) -> String {
        self.name.clone().unwrap_or_else(|| {
            file.file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "matrix".into())
        })
    }

    /// Every cell, in the order they run.
    pub fn cells(&self, name: &str) -> Vec<Cell> {
        let mut loads: Vec<CellLoad> = self
            .concurrency
            .iter()
            .map(|&c| CellLoad::Concurrency { concurrency: c })
            .collect();
        loads.extend(self.rate.iter().map(|&r| CellLoad::Rate { rate: r }));
        if loads.is_empty() {
            loads.push(CellLoad::Default);
        }
        let mut cells = Vec::new();
        for repeat in 1..=self.repeats {
            for w in &self.workloads {
                let label = w.label.clone().unwrap_or_else(|| default_label(&w.path));
                let mut axes: BTreeMap<String, Vec<String>> = self
                    .params
                    .iter()
                    .map(|(k, v)| (k.clone(), axis(v)))
                    .collect();
                for (k, v) in &w.params {
                    axes.insert(k.clone(), axis(v));
                }
                let swept: Vec<&String> = axes
                    .iter()
                    .filter(|(_, v)| v.len() > 1)
                    .map(|(k, _)| k)
                    .collect();
                for combo in product(&axes) {
                    for load in &loads {
                        let mut parts = vec![sanitize(&label)];
                        for k in &swept {
                            parts.push(sanitize(&format!("{k}-{}", combo[*k])));
                        }
                        let lt = load.tag();
                        if !lt.is_empty() {
                            parts.push(lt);
                        }
                        parts.push(format!("rep{repeat}"));
                        let mut id = parts.join("__");
                        if id.len() > 120 {
                            let h = sha256_hex(id.as_bytes());
                            id = format!("{}-{}", &id[..100], &h[..10]);
                        }
                        let mut args: Vec<String> = Vec::new();
                        for (k, v) in &combo {
                            args.push("--param".into());
                            args.push(format!("{k}={v}"));
                        }
                        args.extend(load.args());
                        args.extend(self.args.iter().cloned());
                        args.extend(w.args.iter().cloned());
                        if let Some(pin) = &w.sha256 {
                            args.push("--workload-sha256".into());
                            args.push(pin.clone());
                        }
                        for t in [
                            format!("matrix={name}"),
                            format!("cell={id}"),
                            format!("repeat={repeat}"),
                        ] {
                            args.push("--variant-tag".into());
                            args.push(t);
                        }
                        cells.push(Cell {
                            id,
                            repeat,
                            label: label.clone(),
                            workload: w.path.clone(),
                            params: combo.clone(),
                            load: *load,
                            args,
                        });
                    }
                }
            }
        }
        cells
    }
}

/// The file stem, or an `oci://` reference's last repository part.
fn default_label(path: &Path) -> String {
    if let Some(r) = path
        .to_str()
        .and_then(|t| crate::share::OciRef::parse(t).ok())
    {
        return r
            .repository
            .rsplit('/')
            .next()
            .unwrap_or("workload")
            .to_owned();
    }
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "workload".into())
}

/// One cell's state in `matrix_index.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CellRecord {
    pub id: String,
    pub repeat: u32,
    pub label: String,
    pub workload: String,
    pub params: BTreeMap<String, String>,
    pub load: serde_json::Value,
    pub run_dir: String,
    /// `pending`, `valid`, `invalid`, `failed` or `interrupted`.
    pub status: String,
    pub invalid_reason: Option<String>,
    pub exit_code: Option<i32>,
    /// Done in an earlier invocation of the matrix.
    pub resumed: bool,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MatrixIndex {
    pub name: String,
    pub matrix_file: String,
    pub matrix_sha256: String,
    pub results_root: String,
    pub updated_utc: String,
    pub cells: Vec<CellRecord>,
    /// Prompts a later cell resent after an earlier one without a KV reset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_reuse_across_runs: Option<super::reuse::CrossRunReuse>,
}

impl MatrixIndex {
    pub fn write(&self, root: &Path) -> anyhow::Result<()> {
        let path = root.join("matrix_index.json");
        let mut bytes = serde_json::to_vec_pretty(self)?;
        bytes.push(b'\n');
        crate::results::rundir::write_atomic(&path, &bytes)
            .with_context(|| format!("writing {}", path.display()))
    }
}

/// What a cell's directory says about it now.
pub fn cell_state(run_dir: &Path) -> Option<(bool, Option<String>)> {
    let summary: crate::results::documents::SummaryDoc =
        crate::results::documents::read(&run_dir.join("summary.json")).ok()?;
    Some((
        summary.run_valid,
        summary.invalid_reason.map(|r| r.as_str().to_owned()),
    ))
}

/// Moves an unfinished cell directory aside (kept as evidence) so the cell
/// can run again under its id; returns where it went.
pub fn set_aside(run_dir: &Path) -> anyhow::Result<PathBuf> {
    let name = run_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    for k in 1..10_000 {
        let dest = run_dir.with_file_name(format!("{name}.incomplete-{k}"));
        if !dest.exists() {
            std::fs::rename(run_dir, &dest)
                .with_context(|| format!("moving {} aside", run_dir.display()))?;
            return Ok(dest);
        }
    }
    bail!("too many incomplete copies of {}", run_dir.display())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `matrix --help` prints docs/matrix.example.toml: it must stay a
    /// file the parser takes, with every top-level key in use.
    #[test]
    fn the_documented_example_parses() {
        let m = MatrixFile::parse(crate::cli::MATRIX_EXAMPLE).unwrap();
        assert_eq!(m.name.as_deref(), Some("short"));
        assert_eq!((m.repeats, m.concurrency.len(), m.rate.len()), (3, 3, 2));
        assert!(!m.args.is_empty() && !m.params.is_empty());
        assert_eq!(m.workloads.len(), 2);
        assert_eq!(m.cells("short").len(), 2 * 2 * (3 + 2) * 3);
    }

    const EXAMPLE: &str = r#"
name = "t"
repeats = 2
concurrency = [1, 4]
args = ["--stream"]
[params]
max-tokens = [16, 32]
requests = 8
[[workload]]
path = "w/synthetic.wasm"
params = { set = "short" }
[[workload]]
path = "w/other.wasm"
label = "o"
"#;

    #[test]
    fn cells_cover_the_product_repeat_by_repeat() {
        let m = MatrixFile::parse(EXAMPLE).unwrap();
        let cells = m.cells("t");
        // 2 repeats × 2 workloads × 2 max-tokens × 2 concurrencies
        assert_eq!(cells.len(), 16);
        assert!(cells[..8].iter().all(|c| c.repeat == 1));
        assert_eq!(cells[0].id, "synthetic__max-tokens-16__c1__rep1");
        assert_eq!(cells[15].id, "o__max-tokens-32__c4__rep2");
        let ids: std::collections::BTreeSet<_> = cells.iter().map(|c| &c.id).collect();
        assert_eq!(ids.len(), 16, "ids are unique");
        let a = &cells[0].args;
        for want in [
            "--param",
            "max-tokens=16",
            "requests=8",
            "set=short",
            "--concurrency",
            "--stream",
            "cell=synthetic__max-tokens-16__c1__rep1",
        ] {
            assert!(a.iter().any(|x| x == want), "{want} missing from {a:?}");
        }
    }

    #[test]
    fn bad_matrices_are_refused() {
        assert!(MatrixFile::parse("repeats = 1").is_err());
    }

    #[test]
    fn workloads_may_be_registry_references_pinned_by_sha256() {
        let pin = "ab".repeat(32);
        let m = MatrixFile::parse(&format!(
            "[[workload]]\npath = \"oci://127.0.0.1:5000/team/synthetic:1\"\nsha256 = \"sha256:{pin}\"\n"
        ))
        .unwrap();
        assert_eq!(m.workloads[0].sha256.as_deref(), Some(pin.as_str()));
        let cells = m.cells("m");
        assert_eq!(cells[0].label, "synthetic", "the repository's last part");
        let at = cells[0].args.iter().position(|a| a == "--workload-sha256");
        assert_eq!(
            at.map(|i| cells[0].args[i + 1].as_str()),
            Some(pin.as_str())
        );
        let err = |t: &str| MatrixFile::parse(t).unwrap_err().to_string();
        assert!(err("[[workload]]\npath = \"w.wasm\"\nsha256 = \"xyz\"\n").contains("sha256"));
        assert!(err("[[workload]]\npath = \"oci://h/Bad:1\"\n").contains("lowercase"));
        assert!(
            err("args = [\"--workload-sha256\", \"x\"]\n[[workload]]\npath = \"w.wasm\"\n")
                .contains("set by the matrix")
        );
    }

    #[test]
    fn absurd_or_duplicate_axes_are_refused() {
        let w = "[[workload]]\npath = \"w.wasm\"\n";
        let err = |t: &str| {
            MatrixFile::parse(&format!("{t}\n{w}"))
                .unwrap_err()
                .to_string()
        };
        assert!(
            err("repeats = 4000000000").contains("repeats"),
            "{}",
            err("repeats = 4000000000")
        );
        assert!(err("concurrency = [4, 8, 4]").contains("lists 4 twice"));
        assert!(err("rate = [1.5, 1.5]").contains("twice"));
        assert!(err("rate = [1e-300]").contains("arrival rate"));
        assert!(err("[params]\nmax-tokens = [16, 16]").contains("param"));
        // 1000 repeats × 100 values × 100 values is past the cell cap.
        let big = format!(
            "repeats = 1000\n[params]\na = [{}]\nb = [{}]",
            (0..100)
                .map(|i| i.to_string())
                .collect::<Vec<_>>()
                .join(","),
            (0..100)
                .map(|i| i.to_string())
                .collect::<Vec<_>>()
                .join(",")
        );
        assert!(err(&big).contains("cells"), "{}", err(&big));
        assert!(MatrixFile::parse(&format!("repeats = 3\nconcurrency = [1, 2]\n{w}")).is_ok());
        assert!(MatrixFile::parse("[[workload]]\npath='a'\nbogus=1").is_err());
        assert!(MatrixFile::parse("concurrency=[0]\n[[workload]]\npath='a'").is_err());
        assert!(MatrixFile::parse("args=['--run-id','x']\n[[workload]]\npath='a'").is_err());
        let m = MatrixFile::parse("[[workload]]\npath='a/b.wasm'").unwrap();
        let c = m.cells("x");
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].id, "b__rep1");
        assert_eq!(c[0].load, CellLoad::Default);
    }
}
