//! Flags of the commands that read runs back: `report`, `summarize`,
//! `compare`, `matrix`, `search`.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};

use super::parse_duration;
use crate::analysis::compare::GroupBy;
use crate::analysis::slo::Slo;

fn parse_kv(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_owned(), v.to_owned())),
        _ => Err(format!("{s:?} is not NAME=VALUE")),
    }
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// The run directory to write the reports into.
    pub run_dir: PathBuf,
    /// Report generator component (default: report-default.wasm, found next to
    /// the binary, in the repository's workloads/, or via $SPARKHOST_REPORT_GENERATOR).
    #[arg(long)]
    pub generator: Option<PathBuf>,
    /// Generator option NAME=VALUE (repeatable; `--describe` lists them).
    #[arg(long = "param", short = 'p', value_parser = parse_kv)]
    pub params: Vec<(String, String)>,
    /// Print the generator's name, version and options, and write nothing.
    #[arg(long)]
    pub describe: bool,
    /// Longest the generator may run.
    #[arg(long, default_value = crate::limits::REPORT_CALL_TIMEOUT_FLAG, value_parser = parse_duration)]
    pub timeout: Duration,
    /// Memory cap of the generator, MiB.
    #[arg(long, default_value_t = crate::limits::REPORT_MEMORY_MIB)]
    pub memory_mib: u64,
    /// Cache for compiled components (as for `run`).
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
    /// Fetch an oci:// generator over plain HTTP (loopback registries only).
    #[arg(long)]
    pub plain_http: bool,
}

#[derive(Debug, Args)]
pub struct RecoverArgs {
    /// The run directory of a run that was killed before its summary.
    pub run_dir: PathBuf,
    /// Rebuild the documents of a run that already finished (from its rows).
    #[arg(long)]
    pub force: bool,
    /// Do not render the report.
    #[arg(long)]
    pub no_report: bool,
    /// Do not print the table.
    #[arg(long)]
    pub quiet: bool,
    /// Cache for compiled components (as for `run`).
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct SummarizeArgs {
    /// Run directories, directories holding runs (searched 3 levels deep), or glob patterns.
    #[arg(required = true)]
    pub runs: Vec<String>,
    /// Directory `summary.csv` is written to.
    #[arg(long, default_value = ".")]
    pub out: PathBuf,
    /// Print the table only; write no CSV.
    #[arg(long)]
    pub no_csv: bool,
    /// Compute goodput and SLO attainment for every run, e.g. ttft_p95=500ms,error_rate=0.01.
    #[arg(long, value_parser = Slo::parse)]
    pub slo: Option<Slo>,
}

#[derive(Debug, Args)]
pub struct CompareArgs {
    /// Run directories, directories holding runs, or glob patterns.
    #[arg(required = true)]
    pub runs: Vec<String>,
    /// What splits the runs into baseline and treatment: kv_mode, tier_mode or
    /// label:<key> (a `--variant-tag key=value`, else the workload param).
    #[arg(long, default_value = "kv_mode", value_parser = |s: &str| s.parse::<GroupBy>())]
    pub group_by: GroupBy,
    /// The baseline group's value (A); default: the lower tier, else the first by name.
    #[arg(long)]
    pub baseline: Option<String>,
    /// The treatment group's value (B).
    #[arg(long)]
    pub treatment: Option<String>,
    /// Compare this phase instead of the overall (measured) summary.
    #[arg(long)]
    pub phase: Option<String>,
    /// Metric to compare (repeatable): <latency>_<stat> (ttft_p95, tpot_p99,
    /// e2e_mean…), output_tok_s, req_s, error_rate. Default: TTFT and TPOT
    /// p50/p95/p99, output tok/s, req/s.
    #[arg(long = "metric")]
    pub metrics: Vec<String>,
    /// The metric the verdict sentence is about.
    #[arg(long, default_value = "ttft_p95")]
    pub primary: String,
    /// Bootstrap resamples.
    #[arg(long, default_value_t = 10_000)]
    pub resamples: usize,
    /// Seed of the bootstrap's random stream.
    #[arg(long, default_value_t = 20_260_210)]
    pub seed: u64,
    /// Confidence level of the intervals.
    #[arg(long, default_value_t = 0.95, value_parser = super::parse_level)]
    pub level: f64,
    /// Directory compare.json and compare.html are written to.
    #[arg(long, default_value = ".")]
    pub out: PathBuf,
}

#[derive(Debug, Args)]
pub struct MatrixArgs {
    /// The matrix file (TOML; its format is below, and in docs/matrix.example.toml).
    pub file: PathBuf,
    /// Results tree (overrides the file's `results_root`).
    #[arg(long)]
    pub results_root: Option<PathBuf>,
    /// List the cells and what each would run; run nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Stop at the first cell that fails to run (exit 1); invalid runs do not stop it.
    #[arg(long)]
    pub fail_fast: bool,
    /// Add goodput for these SLOs to the final summary.
    #[arg(long, value_parser = Slo::parse)]
    pub slo: Option<Slo>,
    /// Fetch oci:// workloads over plain HTTP (loopback registries only);
    /// passed on to every run.
    #[arg(long)]
    pub plain_http: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SearchAxis {
    Concurrency,
    Rate,
}

#[derive(Debug, Args)]
pub struct SearchArgs {
    /// The workload component (.wasm).
    pub workload: PathBuf,
    /// Objectives every run must meet, e.g. ttft_p95=500ms,tpot_p99=50ms,error_rate=0.01.
    #[arg(long, value_parser = Slo::parse)]
    pub slo: Slo,
    /// What to raise: closed-loop concurrency or open-loop rate (req/s).
    #[arg(long, value_enum, default_value_t = SearchAxis::Concurrency)]
    pub axis: SearchAxis,
    /// First load tried.
    #[arg(long, default_value_t = 1.0, value_parser = super::parse_positive)]
    pub start: f64,
    /// Lowest load tried.
    #[arg(long, default_value_t = 1.0, value_parser = super::parse_positive)]
    pub min: f64,
    /// Highest load tried.
    #[arg(long, default_value_t = 256.0, value_parser = super::parse_positive)]
    pub max: f64,
    /// Growth (and shrink) factor while bracketing.
    #[arg(long, default_value_t = 2.0, value_parser = super::parse_positive)]
    pub factor: f64,
    /// Stop when the bracket is this narrow: absolute for concurrency
    /// (default 1), a fraction of the failing rate for rates (default 0.05).
    #[arg(long, value_parser = super::parse_positive)]
    pub tolerance: Option<f64>,
    /// Most runs the search may make.
    #[arg(long, default_value_t = 16)]
    pub max_runs: usize,
    /// Where the search's runs, search.json and summary.csv go
    /// (default: bench/search/<UTC time>).
    #[arg(long)]
    pub results_root: Option<PathBuf>,
    /// `sparkhost run` flags for every run, after `--` (not --concurrency,
    /// --rate, --results-root or --run-id, which the search sets).
    #[arg(last = true)]
    pub run_args: Vec<String>,
}
