//! `sparkhost recover`: the closing documents of a run that was killed
//! before it wrote them (kill -9, a machine that went down). Its rows are on
//! disk whole (the recorder writes whole lines); they are read back into the
//! same accumulators the recorder fills ([`RequestFacts`]) and concluded by
//! the same code as a live run ([`super::finish::conclude`]), labelled
//! `interrupted`.
//!
//! What a killed run cannot give back: telemetry deltas (no closing
//! snapshot), the parser's read-path delays (rows keep only their maximum)
//! and requests that were in flight at the kill (never recorded). The
//! summary says so in `invalid_details`.

use std::io::{BufRead, BufReader};
use std::path::Path;

use anyhow::{Context, bail};
use clap::Parser;
use serde::Deserialize;

use super::finish::{Concluded, Finished, RunFacts, conclude};
use super::plan::{KvModeInfo, ReportPlan};
use crate::dispatch::openai::Usage;
use crate::evidence::{InvalidReason, Validity};
use crate::plan::{ErrorKey, ErrorKind};
use crate::report::ReportOptions;
use crate::results::documents::{self, ConfigDoc, DispatchDoc, KvModeField, ManifestDoc};
use crate::results::recorder::PhaseResult;
use crate::results::rundir::RunDir;
use crate::results::summary::{Accumulator, RequestFacts};
use crate::results::tokens::token_gaps;
use sparkhost_collectors::KvMode;

/// Longest `requests.jsonl` line read back: a row of the most content
/// chunks a response may have (`MAX_RESPONSE_CHUNKS`, ~20 bytes each in
/// two arrays) and its error text fits many times over.
const MAX_ROW_BYTES: usize = 64 << 20;

#[derive(Debug, Clone, Default)]
pub struct RecoverOptions {
    /// Rebuild the documents of a run that already has a `summary.json`.
    pub force: bool,
    pub no_report: bool,
    pub quiet: bool,
    /// Where compiled report generators are cached.
    pub cache_dir: Option<std::path::PathBuf>,
}

/// What `recover` found in `requests.jsonl`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RowsRead {
    pub rows: u64,
    /// A last line without its newline: the write the kill interrupted.
    pub torn: u64,
    /// Whole lines that are not a row (not JSON, or a row of another shape).
    pub unreadable: u64,
}

/// The fields of a `requests.jsonl` row that the accumulators take.
#[derive(Debug, Deserialize)]
struct Row {
    phase: String,
    ok: bool,
    status_code: u16,
    error_kind: Option<String>,
    schedule_lateness_ms: f64,
    latency_ms: f64,
    latency_from_intended_ms: f64,
    ttft_ms: Option<f64>,
    ttft_from_intended_ms: Option<f64>,
    ttfc_ms: Option<f64>,
    #[serde(default)]
    chunk_offsets_ms: Vec<f64>,
    #[serde(default)]
    chunk_tokens: Vec<u32>,
    tpot_ms: Option<f64>,
    #[serde(default)]
    output_tokens_est: u32,
    usage: Option<Usage>,
    sent_offset_ms: f64,
    #[serde(default)]
    stream: bool,
}

fn ns(ms: f64) -> u64 {
    if ms.is_finite() && ms > 0.0 {
        (ms * 1e6).round() as u64
    } else {
        0
    }
}

impl Row {
    fn facts(&self, clock: crate::dispatch::stamp::RxClock) -> RequestFacts {
        let kind = self
            .error_kind
            .as_deref()
            .and_then(|k| ErrorKind::ALL.into_iter().find(|e| e.as_str() == k));
        let error = match (kind, &self.error_kind) {
            // A kind this build does not know is still a failure.
            (None, Some(_)) => Some(ErrorKey::Http(self.status_code)),
            _ => ErrorKey::of(kind, self.ok, self.status_code),
        };
        let mut itl_ms = Vec::new();
        token_gaps(
            self.chunk_offsets_ms
                .iter()
                .copied()
                .zip(self.chunk_tokens.iter().copied()),
            &mut itl_ms,
        );
        RequestFacts {
            ok: self.ok,
            error,
            schedule_lateness_ns: ns(self.schedule_lateness_ms),
            e2e_ns: ns(self.latency_ms),
            e2e_from_intended_ns: ns(self.latency_from_intended_ms),
            ttft_ns: self.ttft_ms.map(ns),
            ttft_from_intended_ns: self.ttft_from_intended_ms.map(ns),
            ttfc_ns: self.ttfc_ms.map(ns),
            itl_ns: itl_ms.into_iter().map(ns).collect(),
            tpot_ns: self.tpot_ms.map(ns),
            // Rows keep only the largest delay; none is invented.
            read_delays: Vec::new(),
            timed_by: (!self.chunk_offsets_ms.is_empty()).then_some(clock),
            tokens_counted: self.output_tokens_est,
            usage: self.usage,
            // A streamed answer's first event sets TTFC; one JSON body has none.
            unary_answer_to_stream: self.stream && self.ttfc_ms.is_none(),
        }
    }
}

/// Reads `path` line by line into `phases` (by phase name), bounded per
/// line; returns the counts and each phase's span of sent-to-end offsets.
fn read_rows(
    path: &Path,
    phases: &mut [PhaseResult],
    clock: crate::dispatch::stamp::RxClock,
) -> anyhow::Result<RowsRead> {
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(RowsRead::default()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let mut r = BufReader::new(file);
    let mut read = RowsRead::default();
    let mut spans: Vec<Option<(f64, f64)>> = vec![None; phases.len()];
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = std::io::Read::take(&mut r, MAX_ROW_BYTES as u64 + 1)
            .read_until(b'\n', &mut line)
            .with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            break;
        }
        if !line.ends_with(b"\n") {
            if line.len() > MAX_ROW_BYTES {
                bail!(
                    "{}: a line longer than {MAX_ROW_BYTES} bytes is not a row",
                    path.display()
                );
            }
            read.torn += 1;
            break;
        }
        let Ok(row) = serde_json::from_slice::<Row>(&line) else {
            read.unreadable += 1;
            continue;
        };
        let Some(i) = phases.iter().position(|p| p.name == row.phase) else {
            read.unreadable += 1;
            continue;
        };
        phases[i].acc.record_request(&row.facts(clock));
        let end = row.sent_offset_ms + row.latency_ms.max(0.0);
        let span = spans[i].get_or_insert((row.sent_offset_ms, end));
        span.0 = span.0.min(row.sent_offset_ms);
        span.1 = span.1.max(end);
        read.rows += 1;
    }
    // A phase lasted, as far as its rows show, from its first send to its
    // last end: what the rates are computed over.
    for (p, span) in phases.iter_mut().zip(spans) {
        if let Some((a, b)) = span {
            p.acc.duration = std::time::Duration::from_secs_f64(((b - a) / 1e3).max(0.0));
        }
    }
    Ok(read)
}

/// Lines of a JSON Lines file (whole ones), without holding it.
fn count_lines(path: &Path) -> u64 {
    let Ok(f) = std::fs::File::open(path) else {
        return 0;
    };
    BufReader::new(f)
        .split(b'\n')
        .filter(|l| l.as_ref().is_ok_and(|l| !l.is_empty()))
        .count() as u64
}

/// The run's flags, parsed again from its command line as recorded: the
/// SLO, verdict policy and report generator it asked for.
fn run_args(config: &ConfigDoc) -> Option<crate::cli::RunArgs> {
    match crate::cli::Cli::try_parse_from(&config.args).ok()?.command {
        crate::cli::Command::Run(args) => Some(*args),
        _ => None,
    }
}

fn kv_info(field: &KvModeField) -> KvModeInfo {
    let mode = KvMode::ALL
        .into_iter()
        .find(|m| m.as_str() == field.mode())
        .unwrap_or(KvMode::Unspecified);
    let (cpu, disk) = match field {
        KvModeField::Labels(d) => (d.cpu_cache_gb, d.disk_cache_gb),
        KvModeField::Name(_) => (0.0, 0.0),
    };
    KvModeInfo {
        mode,
        cpu_cache_gb: cpu,
        disk_cache_gb: disk,
    }
}

/// Rebuilds `summary.json`, `histograms.hlog`, `verdict.json` and (unless
/// `no_report`) the report of the killed run in `dir`.
pub fn recover(dir: &Path, opts: &RecoverOptions) -> anyhow::Result<(Finished, RowsRead)> {
    let config_path = dir.join("config.json");
    let manifest_path = dir.join("manifest.json");
    if !config_path.is_file() || !manifest_path.is_file() {
        bail!(
            "{} has no config.json and manifest.json: not a run directory",
            dir.display()
        );
    }
    if dir.join("summary.json").exists() && !opts.force {
        bail!(
            "{} already has a summary.json: the run finished (--force rebuilds its documents from its rows)",
            dir.display()
        );
    }
    let config: ConfigDoc = documents::read(&config_path)?;
    let manifest: ManifestDoc = documents::read(&manifest_path)?;
    let args = run_args(&config);
    let mut phases: Vec<PhaseResult> = manifest
        .phases
        .iter()
        .map(|p| PhaseResult {
            name: p.name.clone(),
            include_in_summary: p.include_in_overall,
            start: None,
            end: None,
            acc: Accumulator::default(),
        })
        .collect();
    let read = read_rows(
        &dir.join("requests.jsonl"),
        &mut phases,
        config.client_request_parameters.arrival_clock,
    )?;
    let planned = count_lines(&dir.join("request_manifest.jsonl"));

    let mut validity = Validity::default();
    let mut detail = format!(
        "recovered by `sparkhost recover` after the run was killed: {} rows read back",
        read.rows
    );
    if read.torn > 0 {
        detail.push_str(&format!(
            ", {} torn last line left out (the write the kill interrupted)",
            read.torn
        ));
    }
    if read.unreadable > 0 {
        detail.push_str(&format!(", {} unreadable lines left out", read.unreadable));
    }
    detail.push_str(
        "; requests in flight at the kill have no row, and telemetry deltas and read-path delays are not recoverable",
    );
    if args.is_none() {
        detail.push_str(
            "; its command line did not parse, so default SLO and verdict settings were used",
        );
    }
    validity.invalidate(InvalidReason::Interrupted, detail);

    // The generator the run named, resolved again (an `oci://` one from the
    // digest cache when the registry is gone).
    let generator = match args.as_ref().filter(|_| !opts.no_report).and_then(|a| {
        a.report_generator
            .as_ref()
            .map(|g| (g, a.sandbox.registry()))
    }) {
        Some((g, registry)) => Some(
            crate::share::resolve(g, &registry)
                .with_context(|| format!("the run's report generator {}", g.display()))?,
        ),
        None => None,
    };
    let report = (!opts.no_report).then(|| ReportPlan {
        generator,
        options: ReportOptions {
            cache_dir: opts.cache_dir.clone(),
            ..ReportOptions::default()
        },
    });
    let facts = RunFacts {
        run_id: manifest.run_id.clone(),
        created_utc: manifest.created_utc.clone(),
        workload: manifest.workload.clone(),
        stream: config.client_request_parameters.stream,
        kv: kv_info(&manifest.kv_mode),
        variant_tags: manifest.variant_tags.clone(),
        tokenizer_id: manifest.tokenizer.clone(),
        verdict_policy: args
            .as_ref()
            .map(|a| a.telemetry.policy())
            .unwrap_or_default(),
        slo: args.as_ref().and_then(|a| a.slo.clone()),
        // The ceiling is a fraction of telemetry's disk reads, which a
        // killed run did not close.
        device_profile: None,
        report,
        quiet: opts.quiet,
    };
    let started = chrono::DateTime::parse_from_rfc3339(&manifest.created_utc)
        .ok()
        .map(|t| (std::time::SystemTime::from(t), std::time::Instant::now()));
    let rd = RunDir::open(dir);
    // The space a live run keeps for its closing documents.
    rd.release_closing_space();
    let finished = conclude(
        &facts,
        &rd,
        Concluded {
            model: manifest.model_id_resolved.clone(),
            phases,
            started,
            dispatch: DispatchDoc {
                planned,
                initially_planned: planned,
                recorded: read.rows,
                unsent: planned.saturating_sub(read.rows),
                ..DispatchDoc::default()
            },
            preflight: None,
            validity,
            telemetry: Default::default(),
            simulator: None,
            kv_reset: None,
            prime: None,
            harness: None,
        },
    )?;
    Ok((finished, read))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn phase(name: &str) -> PhaseResult {
        PhaseResult {
            name: name.into(),
            include_in_summary: true,
            start: None,
            end: None,
            acc: Accumulator::default(),
        }
    }

    fn row(phase: &str, ok: bool, kind: Option<&str>) -> String {
        serde_json::json!({
            "phase": phase, "ok": ok, "status_code": if ok { 200 } else { 500 },
            "error_kind": kind, "schedule_lateness_ms": 0.01, "latency_ms": 12.5,
            "latency_from_intended_ms": 12.6, "ttft_ms": 2.0, "ttft_from_intended_ms": 2.1,
            "ttfc_ms": 1.9, "chunk_offsets_ms": [2.0, 4.0, 8.0], "chunk_tokens": [1, 1, 2],
            "tpot_ms": 2.0, "output_tokens_est": 4, "sent_offset_ms": 100.0,
            "usage": {"prompt_tokens": 10, "completion_tokens": 4},
        })
        .to_string()
    }

    #[test]
    fn rows_fill_the_phases_and_a_torn_last_line_is_counted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("requests.jsonl");
        let mut f = std::fs::File::create(&path).unwrap();
        writeln!(f, "{}", row("main", true, None)).unwrap();
        writeln!(f, "{}", row("main", false, Some("http_5xx"))).unwrap();
        writeln!(f, "{}", row("warmup", true, None)).unwrap();
        writeln!(f, "not a row").unwrap();
        write!(f, "{}", &row("main", true, None)[..40]).unwrap();
        drop(f);
        let mut phases = vec![phase("warmup"), phase("main")];
        let read = read_rows(&path, &mut phases, crate::dispatch::stamp::RxClock::Kernel).unwrap();
        assert_eq!(
            read,
            RowsRead {
                rows: 3,
                torn: 1,
                unreadable: 1
            }
        );
        let main = &phases[1].acc;
        assert_eq!((main.requests, main.ok), (2, 1));
        assert_eq!(
            main.errors_by_kind().get("http_5xx").copied(),
            Some(1),
            "{:?}",
            main.errors
        );
        assert_eq!(main.prompt_tokens, 20);
        // ITL per token from the offsets: 2 ms, then a 2-token chunk 4 ms later.
        let itl = main.hist(crate::results::summary::Metric::Itl);
        assert_eq!(itl.len(), 3);
        assert_eq!(main.output_tokens_counted, 4);
        assert_eq!(phases[0].acc.requests, 1);
        assert!(phases[1].acc.duration > std::time::Duration::ZERO);
    }
}
