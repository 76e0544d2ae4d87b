//! Reading finished run directories back: which directories are runs, and
//! the numbers `summarize`, `compare`, `matrix` and `search` need from them.
//!
//! `summary.json` and `config.json` are read as the typed documents of
//! [`crate::results::documents`], whose lenient reading keeps run
//! directories of older sparkhost versions and of the seed harness loading;
//! the collectors' per-phase deltas (`phase_deltas/`, or inline in
//! `summary.json`) are read by field name.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::Serialize;
use serde_json::Value;

use crate::analysis::slo::GoodputSummary;
use crate::plan::LoadModel;
use crate::results::documents::{self, ConfigDoc, PhaseDoc, SummaryDoc};
use crate::results::summary::PhaseSummary;

/// One distribution from `summary.json`, in milliseconds.
pub use crate::results::summary::Stats as Dist;

/// KVBM counter deltas of one phase (`phase_*_kvbm_metrics_delta.json`).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct KvbmDelta {
    pub available: bool,
    pub values: BTreeMap<String, f64>,
}

/// Short names of the KVBM counters that exist in Dynamo (inventory §12.1).
pub const KVBM_COUNTERS: [&str; 6] = [
    "offload_blocks_d2h",
    "offload_blocks_h2d",
    "offload_blocks_d2d",
    "onboard_blocks_h2d",
    "onboard_blocks_d2d",
    "matched_tokens",
];

impl KvbmDelta {
    fn from_json(v: &Value) -> Option<KvbmDelta> {
        let obj = v.as_object()?;
        let mut values = BTreeMap::new();
        for (k, x) in obj {
            if let Some(n) = x.as_f64() {
                values.insert(k.clone(), n);
            }
        }
        Some(KvbmDelta {
            available: obj
                .get("available")
                .and_then(Value::as_bool)
                .unwrap_or(!values.is_empty()),
            values,
        })
    }

    /// A counter delta by short name (`onboard_blocks_d2d`), under the
    /// seed's `kvbm_<name>_delta` key or the shorter `<name>_delta`.
    pub fn get(&self, short: &str) -> Option<f64> {
        if !self.available {
            return None;
        }
        [
            format!("kvbm_{short}_delta"),
            format!("{short}_delta"),
            short.to_owned(),
        ]
        .iter()
        .find_map(|k| self.values.get(k).copied())
    }

    pub fn offload_total(&self) -> Option<f64> {
        self.get("offload_blocks_total").or_else(|| {
            sum_some(&[
                self.get("offload_blocks_d2h"),
                self.get("offload_blocks_h2d"),
                self.get("offload_blocks_d2d"),
            ])
        })
    }

    pub fn onboard_total(&self) -> Option<f64> {
        self.get("onboard_blocks_total").or_else(|| {
            sum_some(&[
                self.get("onboard_blocks_h2d"),
                self.get("onboard_blocks_d2d"),
            ])
        })
    }
}

fn sum_some(xs: &[Option<f64>]) -> Option<f64> {
    if xs.iter().all(Option::is_none) {
        return None;
    }
    Some(xs.iter().flatten().sum())
}

/// Disk and process I/O of one phase (`phase_*_os_io_delta.json`), MiB.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct IoDelta {
    pub device_read_mib: Option<f64>,
    pub device_write_mib: Option<f64>,
    pub process_read_mib: Option<f64>,
    pub process_write_mib: Option<f64>,
}

impl IoDelta {
    fn from_json(v: &Value) -> Option<IoDelta> {
        v.as_object()?;
        let mib = |obj: Option<&Value>, key: &str, bytes_key: &str| {
            let o = obj?;
            o.get(key)
                .and_then(Value::as_f64)
                .or_else(|| o.get(bytes_key)?.as_f64().map(|b| b / 1_048_576.0))
        };
        let dev = v.get("block_device_delta").filter(|d| d.is_object());
        let dev = dev.or_else(|| v.get("io_delta").filter(|d| d.is_object()));
        let proc_ = v.get("worker_process_io_delta").filter(|d| d.is_object());
        let io = IoDelta {
            device_read_mib: mib(dev, "read_mib_delta", "read_bytes_delta"),
            device_write_mib: mib(dev, "write_mib_delta", "write_bytes_delta"),
            process_read_mib: mib(proc_, "read_mib_delta", "read_bytes_delta"),
            process_write_mib: mib(proc_, "write_mib_delta", "write_bytes_delta"),
        };
        (io != IoDelta::default()).then_some(io)
    }
}

/// One phase (or `overall`) of a run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PhaseStats {
    pub name: String,
    pub include: bool,
    pub requests: u64,
    pub errors: u64,
    pub error_rate: f64,
    pub duration_s: f64,
    pub req_per_s: f64,
    pub output_tokens_per_s: f64,
    pub input_tokens_per_s: f64,
    pub latency: BTreeMap<String, Dist>,
    pub kvbm: Option<KvbmDelta>,
    pub io: Option<IoDelta>,
}

impl PhaseStats {
    fn from_summary(p: &PhaseSummary) -> PhaseStats {
        PhaseStats {
            name: p.phase.clone(),
            include: p.include_in_summary,
            requests: p.total_requests,
            errors: p.error_requests,
            error_rate: p.error_rate,
            duration_s: p.duration_s,
            req_per_s: p.req_per_s,
            output_tokens_per_s: p.output_tokens_per_s,
            input_tokens_per_s: p.input_tokens_per_s,
            latency: {
                let mut l = p.latency_ms.clone();
                if let Some(t) = &p.seed_ttft_ms {
                    l.entry("ttft".into()).or_insert_with(|| t.clone());
                }
                l
            },
            kvbm: None,
            io: None,
        }
    }

    fn from_doc(p: &PhaseDoc) -> PhaseStats {
        let mut stats = PhaseStats::from_summary(&p.stats);
        stats.kvbm = p.kvbm_metrics_delta.as_ref().and_then(KvbmDelta::from_json);
        // The seed kept the phase's I/O under the phase object itself.
        stats.io = p
            .io_delta
            .as_ref()
            .and_then(|io| IoDelta::from_json(&serde_json::json!({ "io_delta": io })));
        stats
    }

    /// A named number: `<metric>_<stat>` for latencies (`ttft_p95`,
    /// `tpot_p99`, `e2e_mean`), or `output_tok_s`, `input_tok_s`, `req_s`,
    /// `error_rate`, `requests`.
    pub fn metric(&self, name: &str) -> Option<f64> {
        match name {
            "output_tok_s" | "tok_s" | "output_tokens_per_s" => Some(self.output_tokens_per_s),
            "input_tok_s" | "input_tokens_per_s" => Some(self.input_tokens_per_s),
            "req_s" | "req_per_s" => Some(self.req_per_s),
            "error_rate" => Some(self.error_rate),
            "requests" => Some(self.requests as f64),
            _ => {
                let (m, s) = name.rsplit_once('_')?;
                self.latency.get(m)?.stat(s)
            }
        }
    }
}

/// The headline facts of one run directory.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RunRecord {
    pub dir: PathBuf,
    pub run_id: String,
    pub created_utc: String,
    pub valid: bool,
    pub invalid_reason: Option<String>,
    pub workload: String,
    pub workload_version: String,
    pub kv_mode: String,
    pub tier_mode: String,
    pub variant_tags: Vec<String>,
    pub params: BTreeMap<String, String>,
    /// `c=4`, `rate=5/s poisson`, or empty when unknown.
    pub load: String,
    pub overall: PhaseStats,
    pub phases: Vec<PhaseStats>,
    /// `summary.json`'s `goodput`, when the run had SLOs.
    pub goodput: Option<GoodputSummary>,
}

fn read_json(p: &Path) -> anyhow::Result<Value> {
    let text = fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not JSON", p.display()))
}

/// Describes a load model: `c=4`, `rate=5/s poisson`.
pub fn describe_load(load: &LoadModel) -> String {
    match load {
        LoadModel::Closed { concurrency } => format!("c={concurrency}"),
        LoadModel::Constant { rate } => format!("rate={rate}/s constant"),
        LoadModel::Poisson { rate } => format!("rate={rate}/s poisson"),
        LoadModel::Gamma { rate, .. } => format!("rate={rate}/s gamma"),
    }
}

/// The loads the run's summarized phases really ran, each once in order
/// (`c=4`, or `c=4,c=8` when phases differ); the run-level flag only for a
/// config without phases.
fn run_load(config: &ConfigDoc) -> String {
    let counted: Vec<_> = config
        .phases
        .iter()
        .filter(|p| p.include_in_overall)
        .collect();
    let phases = if counted.is_empty() {
        config.phases.iter().collect()
    } else {
        counted
    };
    let mut seen: Vec<String> = Vec::new();
    for l in phases.iter().filter_map(|p| p.load.as_ref()) {
        let d = describe_load(l);
        if !seen.contains(&d) {
            seen.push(d);
        }
    }
    if seen.is_empty() {
        return config.load.map(|l| describe_load(&l)).unwrap_or_default();
    }
    seen.join(",")
}

impl RunRecord {
    pub fn load(dir: &Path) -> anyhow::Result<RunRecord> {
        let summary: SummaryDoc = documents::read(&dir.join("summary.json"))?;
        // An absent or unreadable config only costs the params and load.
        let config: ConfigDoc = documents::read(&dir.join("config.json")).unwrap_or_default();
        let mut overall = summary
            .overall()
            .map(PhaseStats::from_summary)
            .unwrap_or_default();
        overall.name = "overall".into();
        let mut phases: Vec<PhaseStats> = summary
            .phase_summaries
            .iter()
            .map(PhaseStats::from_doc)
            .collect();
        let include: BTreeMap<&str, bool> = config
            .phases
            .iter()
            .map(|p| (p.name.as_str(), p.include_in_overall))
            .collect();
        for p in &mut phases {
            if let Some(&inc) = include.get(p.name.as_str()) {
                p.include = inc;
            }
            let deltas = dir.join("phase_deltas");
            if p.kvbm.is_none() {
                let f = deltas.join(format!(
                    "phase_{}_kvbm_metrics_delta.json",
                    sparkhost_collectors::common::file_safe(&p.name)
                ));
                p.kvbm = read_json(&f).ok().as_ref().and_then(KvbmDelta::from_json);
            }
            if p.io.is_none() {
                let f = deltas.join(format!(
                    "phase_{}_os_io_delta.json",
                    sparkhost_collectors::common::file_safe(&p.name)
                ));
                p.io = read_json(&f).ok().as_ref().and_then(IoDelta::from_json);
            }
        }
        let run_id = if summary.run_id.is_empty() {
            dir.file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default()
        } else {
            summary.run_id.clone()
        };
        let workload = if summary.workload.name.is_empty() {
            summary.scenario.clone()
        } else {
            summary.workload.name.clone()
        };
        let tier_mode = if summary.tier_mode.is_empty() {
            summary.kv_mode.tier_mode().unwrap_or_default().to_owned()
        } else {
            summary.tier_mode.clone()
        };
        Ok(RunRecord {
            dir: dir.to_owned(),
            run_id,
            created_utc: summary.created_utc.clone(),
            valid: summary.run_valid,
            invalid_reason: summary
                .invalid_reason
                .as_ref()
                .map(|r| r.as_str().to_owned()),
            workload,
            workload_version: summary.workload.version.clone(),
            kv_mode: summary.kv_mode.mode().to_owned(),
            tier_mode,
            variant_tags: summary.variant_tags.clone(),
            params: config.params.clone(),
            load: run_load(&config),
            overall,
            phases,
            goodput: summary.goodput.clone(),
        })
    }

    /// A variant tag `key=value`'s value, else the workload param `key`.
    pub fn label(&self, key: &str) -> Option<String> {
        self.variant_tags
            .iter()
            .find_map(|t| {
                t.split_once('=')
                    .filter(|(k, _)| k.trim() == key)
                    .map(|(_, v)| v.trim().to_owned())
            })
            .or_else(|| self.params.get(key).cloned())
    }

    /// The phase named `name`, or the overall summary for `None`/`overall`.
    pub fn phase(&self, name: Option<&str>) -> Option<&PhaseStats> {
        match name {
            None | Some("overall") => Some(&self.overall),
            Some(n) => self.phases.iter().find(|p| p.name == n),
        }
    }

    /// Phases that replay earlier content: the ones KV-tier evidence is about.
    pub fn replay_phases(&self) -> impl Iterator<Item = &PhaseStats> {
        self.phases.iter().filter(|p| is_replay_phase(&p.name))
    }
}

pub fn is_replay_phase(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    n.contains("replay") || n.contains("rehydrate")
}

/// Run directories named by `inputs`: a run directory (one with
/// `summary.json`), a directory holding run directories (searched three
/// levels deep), or a glob pattern of either. Order is kept, duplicates
/// dropped.
pub fn discover(inputs: &[String]) -> anyhow::Result<Vec<PathBuf>> {
    let mut out: Vec<PathBuf> = Vec::new();
    let push = |p: PathBuf, out: &mut Vec<PathBuf>| {
        if !out.contains(&p) {
            out.push(p);
        }
    };
    for input in inputs {
        let path = Path::new(input);
        let mut roots = Vec::new();
        if path.exists() {
            roots.push(path.to_owned());
        } else if input.contains(['*', '?', '[']) {
            for m in glob::glob(input).with_context(|| format!("bad glob pattern {input:?}"))? {
                roots.push(m?);
            }
            if roots.is_empty() {
                bail!("{input:?} matches nothing");
            }
        } else {
            bail!("{input}: no such run directory");
        }
        for r in roots {
            let before = out.len();
            let mut found = Vec::new();
            let mut unfinished = Vec::new();
            find_runs(&r, 0, &mut found, &mut unfinished);
            unfinished.sort();
            // Never left out silently: a killed run has rows but no summary.
            for u in &unfinished {
                eprintln!(
                    "warning: skipping {}: no summary.json (a killed or unfinished run; its rows are in requests.jsonl)",
                    u.display()
                );
            }
            found.sort();
            for f in found {
                push(f, &mut out);
            }
            if out.len() == before && path.exists() && !r.join("summary.json").is_file() {
                tracing::warn!("{} holds no run directory", r.display());
            }
        }
    }
    Ok(out)
}

/// Run directories under `dir` into `out`; directories that a run began
/// (its `config.json` or `requests.jsonl`) but never summarized into
/// `unfinished`.
fn find_runs(dir: &Path, depth: usize, out: &mut Vec<PathBuf>, unfinished: &mut Vec<PathBuf>) {
    if !dir.is_dir() {
        return;
    }
    if dir.join("summary.json").is_file() {
        out.push(dir.to_owned());
        return;
    }
    if dir.join("config.json").is_file() || dir.join("requests.jsonl").is_file() {
        unfinished.push(dir.to_owned());
        return;
    }
    if depth >= 3 {
        return;
    }
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                find_runs(&e.path(), depth + 1, out, unfinished);
            }
        }
    }
}

/// Loads every discovered run; unreadable ones are reported and skipped.
pub fn load_all(inputs: &[String]) -> anyhow::Result<Vec<RunRecord>> {
    let dirs = discover(inputs)?;
    let mut runs = Vec::with_capacity(dirs.len());
    for d in dirs {
        match RunRecord::load(&d) {
            Ok(r) => runs.push(r),
            Err(e) => eprintln!("warning: skipping {}: {e:#}", d.display()),
        }
    }
    Ok(runs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_load_column_is_what_the_counted_phases_ran() {
        let config: ConfigDoc = serde_json::from_value(json!({
            "load": {"kind": "closed", "concurrency": 1},
            "phases": [
                {"name": "warmup", "include_in_overall": false, "load": {"kind": "closed", "concurrency": 2}},
                {"name": "warm_A", "include_in_overall": true, "load": {"kind": "closed", "concurrency": 4}},
                {"name": "pressure_B", "include_in_overall": true, "load": {"kind": "closed", "concurrency": 8}},
                {"name": "replay_A", "include_in_overall": true, "load": {"kind": "closed", "concurrency": 4}}
            ]
        }))
        .unwrap();
        assert_eq!(run_load(&config), "c=4,c=8");
        let bare: ConfigDoc =
            serde_json::from_value(json!({"load": {"kind": "poisson", "rate": 5.0}})).unwrap();
        assert_eq!(run_load(&bare), "rate=5/s poisson");
    }

    #[test]
    fn killed_runs_are_found_as_unfinished_not_dropped() {
        let root = tempfile::tempdir().unwrap();
        for (run, files) in [
            ("done", &["config.json", "summary.json"][..]),
            ("killed", &["config.json", "requests.jsonl"][..]),
            ("other", &["notes.txt"][..]),
        ] {
            std::fs::create_dir(root.path().join(run)).unwrap();
            for f in files {
                std::fs::write(root.path().join(run).join(f), "{}").unwrap();
            }
        }
        let (mut done, mut unfinished) = (Vec::new(), Vec::new());
        find_runs(root.path(), 0, &mut done, &mut unfinished);
        assert_eq!(done, [root.path().join("done")]);
        assert_eq!(unfinished, [root.path().join("killed")]);
    }

    #[test]
    fn kvbm_deltas_accept_seed_and_short_names() {
        let d = KvbmDelta::from_json(&json!({
            "available": true,
            "kvbm_onboard_blocks_d2d_delta": 4.0,
            "onboard_blocks_h2d_delta": 2,
            "kvbm_matched_tokens_delta": 128,
        }))
        .unwrap();
        assert_eq!(d.get("onboard_blocks_d2d"), Some(4.0));
        assert_eq!(d.get("onboard_blocks_h2d"), Some(2.0));
        assert_eq!(d.onboard_total(), Some(6.0));
        assert_eq!(d.offload_total(), None);
        let off = KvbmDelta::from_json(&json!({"available": false, "reason": "x"})).unwrap();
        assert_eq!(off.get("matched_tokens"), None);
    }

    #[test]
    fn io_deltas_read_seed_layout() {
        let io = IoDelta::from_json(&json!({
            "block_device_delta": {"read_mib_delta": 1.5, "write_bytes_delta": 2097152},
            "worker_process_io_delta": {"available": true, "read_mib_delta": 0.5, "write_mib_delta": 0.25},
        }))
        .unwrap();
        assert_eq!(io.device_read_mib, Some(1.5));
        assert_eq!(io.device_write_mib, Some(2.0));
        assert_eq!(io.process_write_mib, Some(0.25));
        assert!(IoDelta::from_json(&json!({"phase": "x"})).is_none());
    }

    #[test]
    fn metrics_by_name() {
        let doc: PhaseDoc = serde_json::from_value(json!({
            "phase": "main", "req_per_s": 2.0, "output_tokens_per_s": 40.0,
            "latency_ms": {"ttft": {"count": 3, "p95": 12.5, "p99.9": 20.0}},
        }))
        .unwrap();
        let p = PhaseStats::from_doc(&doc);
        assert_eq!(p.metric("ttft_p95"), Some(12.5));
        assert_eq!(p.metric("ttft_p99.9"), Some(20.0));
        assert_eq!(p.metric("tpot_p95"), None);
        assert_eq!(p.metric("output_tok_s"), Some(40.0));
        assert_eq!(p.metric("req_s"), Some(2.0));
    }
}
