//! Command-line flags as typed, then validated into plans by the commands.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{Args, Parser, Subcommand, ValueEnum};
use sparkhost_collectors::session::{
    DEFAULT_KV_CACHE_DIR, DEFAULT_KVBM_URL, DEFAULT_NVME_DEVICE, DEFAULT_PROCESS_PATTERN,
    DEFAULT_WORKER_URL,
};
use sparkhost_collectors::{Config, Policy, SourceId, procio::CgroupTarget, verdict};

pub mod heading;
mod new;
mod reports;
mod seed;
mod share;
mod shell;
mod stack;
pub use new::*;
pub use reports::*;
pub use seed::*;
pub use share::*;
pub use shell::*;
pub use stack::*;

#[derive(Debug, Parser)]
#[command(
    name = "sparkhost",
    version = VERSION,
    about = "Timing-accurate benchmarks of OpenAI-compatible LLM endpoints, with workloads as WebAssembly components",
    propagate_version = true
)]
pub struct Cli {
    /// Log filter (error, warn, info, debug, trace, or a tracing directive).
    #[arg(
        long,
        global = true,
        env = "SPARKHOST_LOG",
        default_value = "warn",
        alias = "log-level"
    )]
    pub log: String,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a workload against an endpoint and write a run directory.
    Run(Box<RunArgs>),
    /// Show what a workload component is: name, version, params, WIT version, digest.
    Inspect(InspectArgs),
    /// Wait until the endpoint lists a model.
    WaitReady(WaitReadyArgs),
    /// Send one request of each kind (completions/chat, unary/streamed) and report.
    Smoke(SmokeArgs),
    /// Serve a ground-truth endpoint that streams on an exact schedule (for benchmarks).
    TruthServer(TruthServerArgs),
    /// Measure sparkhost against the ground-truth server: fidelity, capacity, cost, planning.
    Bench(BenchArgs),
    /// Write report.md and report.html into a run directory (again), with the default or your own generator.
    Report(ReportArgs),
    /// One row per run (validity, latencies, throughput, KVBM and disk deltas): a table and summary.csv.
    Summarize(SummarizeArgs),
    /// Paired differences between two groups of runs, with bootstrap confidence intervals and an order-effect check.
    Compare(CompareArgs),
    /// Run every cell of a matrix.toml into one results tree (resumable), then summarize it.
    #[command(after_help = MATRIX_HELP)]
    Matrix(MatrixArgs),
    /// Find the highest concurrency or rate that meets SLOs, by bracketing and bisection.
    Search(Box<SearchArgs>),
    /// Serve a SIMULATED engine (KV tiers GPU/host/disk, KVBM metrics, real disk I/O) until Ctrl-C.
    Sim(Box<SimArgs>),
    /// Start, check and stop a serving stack from a profile, per tier mode (up, down, status, logs, render).
    Stack(StackArgs),
    /// The seed's health check: /health, /v1/models, KVBM metrics, NATS; for an endpoint or a running stack.
    Health(HealthArgs),
    /// Measure a disk's O_DIRECT read and write bandwidth into a device profile (the KV disk's physical ceiling).
    CalibrateDisk(CalibrateDiskArgs),
    /// Create a workload project (Rust, JavaScript or Python) that builds with one command and tests itself.
    New(NewArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions(CompletionsArgs),
    /// Print the man page (roff) of sparkhost or one of its subcommands.
    Man(ManArgs),
    /// Rebuild summary.json, histograms, verdict and report of a killed run from its rows, labelled interrupted.
    Recover(RecoverArgs),
    /// Push a workload or report generator to an OCI registry (oci://HOST[:PORT]/REPO:TAG) as a Wasm artifact.
    Push(PushArgs),
    /// Pull a component from an OCI registry into the cache (verified by digest), optionally copying it out.
    Pull(PullArgs),
}

/// `sparkhost --version`: the package version and the git commit it was
/// built from (the one `manifest.json` records).
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (git ",
    env!("SPARKHOST_GIT_SHA"),
    ")"
);

/// The documented matrix format (`docs/matrix.example.toml`), which
/// `matrix --help` prints and a test parses.
pub const MATRIX_EXAMPLE: &str = include_str!("../../docs/matrix.example.toml");
const MATRIX_HELP: &str = concat!(
    "The matrix file (TOML), every key shown (docs/matrix.example.toml in the repository):\n\n",
    include_str!("../../docs/matrix.example.toml")
);

#[derive(Debug, Args)]
pub struct CalibrateDiskArgs {
    /// A directory on the disk to measure (the KV cache directory's disk).
    /// A test file is written there and removed; it must allow O_DIRECT.
    #[arg(long)]
    pub dir: PathBuf,
    /// Test file size: bytes or K/M/G/T (binary), 1M..=1T.
    #[arg(long, default_value = "1G", value_parser = parse_bytes)]
    pub size: u64,
    /// Random read/write I/O size, a multiple of 4K up to 64M; set it to
    /// the engine's KV block bytes for the figure a run is compared with.
    #[arg(long, default_value = "1M", value_parser = parse_bytes)]
    pub block_size: u64,
    /// Sequential read/write I/O size, a multiple of 4K up to 64M.
    #[arg(long, default_value = "1M", value_parser = parse_bytes)]
    pub seq_block_size: u64,
    /// I/Os in flight (one thread each), 1..=256.
    #[arg(long, default_value_t = crate::limits::CALIBRATE_QUEUE_DEPTH)]
    pub queue_depth: u32,
    /// Longest each of the four tests runs (1s..=1h); a test stopped early
    /// says so in the profile.
    #[arg(long, default_value = crate::limits::CALIBRATE_TEST_SECS_FLAG, value_parser = parse_duration)]
    pub max_test_time: Duration,
    /// Seeds the random offsets and the written bytes.
    #[arg(long, default_value_t = 1337)]
    pub seed: u64,
    /// Where the device profile (JSON, docs/schema/device_profile.schema.json) is written.
    #[arg(long, short = 'o', default_value = "device-profile.json")]
    pub output: PathBuf,
}

/// Accepts `4096`, `4K`, `1M`, `1G`, `1T` (binary units; `KiB` etc. too).
/// `--max-response-bytes`: at least one SSE event's worth, at most what
/// one request may sensibly hold in memory.
fn parse_response_bytes(s: &str) -> Result<u64, String> {
    let n = parse_bytes(s)?;
    let range = crate::limits::MIN_RESPONSE_BYTES..=crate::limits::MAX_RESPONSE_BYTES_LIMIT;
    if !range.contains(&n) {
        return Err(format!(
            "{n} bytes is outside {}..={} (1 KiB..2 GiB)",
            range.start(),
            range.end()
        ));
    }
    Ok(n)
}

pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size like 4096, 64K, 1M or 2G"))?;
    let shift = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        "T" | "TB" | "TIB" => 40,
        _ => return Err(format!("{s:?}: unknown unit; use K, M, G or T")),
    };
    n.checked_mul(1u64 << shift)
        .ok_or_else(|| format!("{s:?} is larger than 2^64 bytes"))
}

/// Cache hygiene around a run: a KV reset before it, a warm-up that primes
/// the tiers, and the disk ceiling to compare with.
#[derive(Debug, Clone, Args)]
pub struct HygieneArgs {
    /// POST this URL before the first phase to empty the KV cache (a 2xx
    /// answer is required; its status and body go into summary.json).
    #[arg(help_heading = heading::HYGIENE, long, conflicts_with_all = ["kv_reset_command", "kv_reset_sim"])]
    pub kv_reset_url: Option<String>,
    /// Run this command (`sh -c`) before the first phase to empty the KV
    /// cache, e.g. a stack profile's reset; exit status 0 is required.
    #[arg(help_heading = heading::HYGIENE, long, conflicts_with = "kv_reset_sim")]
    pub kv_reset_command: Option<String>,
    /// Empty the simulator's KV tiers (`POST /reset`) before the first
    /// phase: the in-process one (`--endpoint sim…`) or a `sparkhost sim`
    /// at --endpoint.
    #[arg(help_heading = heading::HYGIENE, long)]
    pub kv_reset_sim: bool,
    /// Longest a KV reset may take (1s..=1h).
    #[arg(help_heading = heading::HYGIENE, long, default_value = crate::limits::KV_RESET_TIMEOUT_FLAG, value_parser = parse_duration)]
    pub kv_reset_timeout: Duration,
    /// Warm-up before the measured phases: send distinct filler prompts
    /// (never the workload's) totalling this many prompt tokens, so the KV
    /// tiers start at steady pressure instead of empty. Size it past the
    /// tiers' capacity. Not in requests.jsonl; summary.json's `prime` says
    /// what was sent. 0 = off; at most 100,000,000.
    #[arg(help_heading = heading::HYGIENE, long, default_value_t = 0)]
    pub prime_tokens: u64,
    /// Prompt tokens per warm-up request (1..=1,048,576).
    #[arg(help_heading = heading::HYGIENE, long, default_value_t = crate::limits::PRIME_PROMPT_TOKENS)]
    pub prime_prompt_tokens: u32,
    /// Warm-up requests in flight (1..=1024).
    #[arg(help_heading = heading::HYGIENE, long, default_value_t = crate::limits::PRIME_CONCURRENCY)]
    pub prime_concurrency: u32,
    /// A `sparkhost calibrate-disk` profile of the KV disk: summary.json's
    /// `disk_ceiling` sets each phase's disk read bandwidth against it, and
    /// a simulator endpoint takes its disk bandwidths from it.
    #[arg(help_heading = heading::DISK_CEILING, long)]
    pub device_profile: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BenchKind {
    Fidelity,
    Capacity,
    Cost,
    Planning,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// What to measure (default: all).
    #[arg(value_enum)]
    pub kind: Vec<BenchKind>,
    /// The workload used for the client runs (its `short-range`, `requests`,
    /// `warmup` and `ignore-eos` params are set).
    #[arg(long, default_value = "workloads/synthetic.wasm")]
    pub workload: PathBuf,
    /// Closed-loop stream counts for fidelity.
    #[arg(long, value_delimiter = ',', default_value = "16,64,256,512")]
    pub concurrency: Vec<u32>,
    /// Tokens per streamed response (N).
    #[arg(long, default_value_t = 100)]
    pub tokens: u32,
    /// Server's time to first token (T).
    #[arg(long, default_value = "50ms", value_parser = parse_duration)]
    pub ttft: Duration,
    /// Server's time between tokens (I).
    #[arg(long, default_value = "10ms", value_parser = parse_duration)]
    pub itl: Duration,
    /// Requests per stream in fidelity and cost runs.
    #[arg(long, default_value_t = 2)]
    pub rounds: u64,
    /// Repeats per figure (the median and min–max are reported).
    #[arg(long, default_value_t = 3)]
    pub repeats: usize,
    /// Open-loop rates tried for capacity, requests/s.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "1000,2000,4000,6000,8000,10000,12000",
        value_parser = parse_positive
    )]
    pub rates: Vec<f64>,
    /// Length of each capacity step.
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    pub capacity_duration: Duration,
    /// Tokens per response in capacity steps (short responses).
    #[arg(long, default_value_t = 4)]
    pub capacity_tokens: u32,
    /// Streams for the cost measurement.
    #[arg(long, default_value_t = 512)]
    pub cost_concurrency: u32,
    /// More workloads whose planning speed to measure.
    #[arg(long = "planning-workload")]
    pub planning_workloads: Vec<PathBuf>,
    /// Requests planned per planning measurement.
    #[arg(long, default_value_t = 20_000)]
    pub planning_requests: u64,
    /// Extra NAME=VALUE params for the planning measurement (repeatable), e.g.
    /// `history=synthetic` for session workloads that otherwise wait for answers.
    #[arg(long = "planning-param", value_parser = parse_param)]
    pub planning_params: Vec<(String, String)>,
    /// Where bench-<time>/ with every run and bench.json is written.
    #[arg(long, default_value = "bench/results")]
    pub results_root: PathBuf,
}

#[derive(Debug, Args)]
pub struct TruthServerArgs {
    /// Address to listen on; port 0 picks a free port (printed on stdout).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: String,
    /// Time from reading a request to its first token.
    #[arg(long, default_value = "50ms", value_parser = parse_duration)]
    pub ttft: Duration,
    /// Time between tokens.
    #[arg(long, default_value = "10ms", value_parser = parse_duration)]
    pub itl: Duration,
}

/// A number in `lo..=hi`; NaN and infinities are refused (a NaN
/// `--max-error-rate` once switched the validity gate off).
fn finite_in(s: &str, lo: f64, hi: f64) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(x) if x.is_finite() && (lo..=hi).contains(&x) => Ok(x),
        Ok(_) => Err(format!("{s:?} is not in {lo}..={hi}")),
        Err(e) => Err(format!("{s:?} is not a number: {e}")),
    }
}

/// A run id names one directory under `--results-root`: `../x` once wrote
/// outside it.
pub fn parse_run_id(s: &str) -> Result<String, String> {
    let ok = !s.is_empty()
        && s.len() <= 128
        && s != "."
        && s != ".."
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(s.to_owned())
    } else {
        Err(format!(
            "{s:?} is not a run id: 1-128 of A-Z a-z 0-9 . _ -, not `.` or `..`"
        ))
    }
}

/// A fraction, 0..=1.
pub fn parse_fraction(s: &str) -> Result<f64, String> {
    finite_in(s, 0.0, 1.0)
}

/// A confidence level, strictly between 0 and 1.
pub fn parse_level(s: &str) -> Result<f64, String> {
    match finite_in(s, 0.0, 1.0)? {
        x if x > 0.0 && x < 1.0 => Ok(x),
        _ => Err(format!("{s:?} must be strictly between 0 and 1")),
    }
}

/// A size label in GB, 0..=1,000,000.
pub fn parse_gb(s: &str) -> Result<f64, String> {
    finite_in(s, 0.0, 1e6)
}

/// A positive, finite number (loads, growth factors).
pub fn parse_positive(s: &str) -> Result<f64, String> {
    match finite_in(s, 0.0, 1e9)? {
        x if x > 0.0 => Ok(x),
        _ => Err(format!("{s:?} must be greater than 0")),
    }
}

/// A sampling temperature or top-p, 0..=100: servers define the useful
/// range; sparkhost only refuses what no server could mean.
fn parse_sampling(s: &str) -> Result<f32, String> {
    finite_in(s, 0.0, 100.0).map(|x| x as f32)
}

/// Accepts `180s`, `500ms`, `2m`, or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    if let Ok(secs) = s.parse::<f64>() {
        // `try_`: 1e300 s once overflowed `Duration` and panicked the host.
        if secs.is_finite() && secs >= 0.0 {
            return Duration::try_from_secs_f64(secs)
                .map_err(|_| format!("{s:?} is longer than any duration this host can wait"));
        }
        return Err(format!("{s:?} is not a non-negative duration"));
    }
    humantime::parse_duration(s)
        .map_err(|e| format!("{s:?} is not a duration like 30s, 500ms or 2m: {e}"))
}

fn parse_run_duration(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    let range = Duration::from_secs(1)..=Duration::from_secs(7 * 24 * 3600);
    if !range.contains(&d) {
        return Err(format!("{s:?}: a run's duration must be 1s..=7d"));
    }
    Ok(d)
}

/// A sha256 pin: 64 lowercase hex digits, `sha256:` optional; kept bare.
pub(crate) fn parse_sha256(s: &str) -> Result<String, String> {
    let hex = s.strip_prefix("sha256:").unwrap_or(s);
    if crate::share::reference::is_sha256_hex(hex) {
        Ok(hex.to_owned())
    } else {
        Err(format!(
            "{s:?} is not a sha256 digest (64 lowercase hex digits, `sha256:` optional)"
        ))
    }
}

fn parse_param(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_owned(), v.to_owned())),
        _ => Err(format!("{s:?} is not NAME=VALUE")),
    }
}

pub const DEFAULT_ENDPOINT: &str = "http://127.0.0.1:8000";

#[derive(Debug, Clone, Args)]
pub struct EndpointArgs {
    /// Base URL of the OpenAI-compatible server, or `sim[:PROFILE]` for an
    /// in-process simulated engine (a built-in profile or a profile .toml;
    /// default spark-llama31-8b-fp8) that lives as long as the command.
    /// `http://h:p`, `http://h:p/v1` and `http://h:p/prefix/v1` all name the
    /// same API root (a trailing `/v1` is the OpenAI base-URL convention);
    /// `https://` is verified against the system's roots and `--ca-cert`.
    #[arg(help_heading = heading::ENDPOINT, long, alias = "base-url", default_value = DEFAULT_ENDPOINT, env = "SPARKHOST_ENDPOINT")]
    pub endpoint: String,
    /// `--endpoint` was given on the command line (not its default or the
    /// environment's); set by `main` from clap's value source.
    #[arg(skip)]
    pub endpoint_given: bool,
    /// API key, sent as `Authorization: Bearer KEY` on every request; never
    /// written to the run directory.
    #[arg(help_heading = heading::ENDPOINT, long, env = "OPENAI_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Extra request header `Name: value` (repeatable, at most 32); values
    /// are redacted in the run directory.
    #[arg(help_heading = heading::ENDPOINT, long = "header", value_name = "NAME: VALUE")]
    pub headers: Vec<String>,
    /// PEM file of CA certificates to trust for `https://`, besides the
    /// system's roots.
    #[arg(help_heading = heading::ENDPOINT, long, value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,
    /// Accept any server certificate (self-signed test servers): the
    /// connection is encrypted but the server is not authenticated.
    #[arg(help_heading = heading::ENDPOINT, long)]
    pub insecure: bool,
}

impl EndpointArgs {
    /// The validated headers and TLS trust.
    pub fn access(
        &self,
    ) -> Result<crate::dispatch::access::Access, crate::dispatch::access::AccessError> {
        crate::dispatch::access::Access::new(
            self.api_key.as_deref(),
            &self.headers,
            crate::dispatch::access::TlsTrust {
                ca_cert: self.ca_cert.clone(),
                insecure: self.insecure,
            },
        )
    }

    /// A client for `base` (the endpoint, or a simulator standing in for it)
    /// with these flags' headers and trust.
    pub fn client_for(
        &self,
        base: &str,
        timeout: Duration,
        clock: crate::dispatch::stamp::RxClock,
    ) -> anyhow::Result<crate::dispatch::client::Client> {
        use anyhow::Context;
        let access = self.access()?;
        crate::dispatch::client::Client::with_access(base, timeout, clock, &access)
            .context("--endpoint")
    }

    /// The API root of `--endpoint` (less a trailing `/v1`), where the
    /// frontend's `/metrics` lives; the flag as given when it is no URL.
    pub fn api_root(&self) -> String {
        crate::dispatch::h1::Endpoint::parse(&self.endpoint)
            .map_or_else(|_| self.endpoint.clone(), |e| e.root())
    }
}

/// A simulator lie switch (each makes the simulator misreport on purpose).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LieArg {
    /// KVBM disk counters advance, no disk I/O happens.
    MetricsWithoutIo,
    /// Disk I/O happens, every KVBM counter and gauge reads 0.
    IoWithoutMetrics,
    /// Hit-rate gauges stay at 0 while the counters advance.
    StaleGauges,
    /// Responses report 0 cached tokens; the frontend metrics count them.
    UsageWithoutCachedTokens,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum NamingArg {
    V1,
    V2,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DiskTimingArg {
    /// bytes / disk_read_gbps + disk_latency_us.
    Model,
    /// The wall time of the real O_DIRECT reads.
    Measured,
}

/// How an in-process simulator (`--endpoint sim[:PROFILE]`) is set up
/// beyond its profile; the tier mode is the run's.
#[derive(Debug, Clone, Args)]
pub struct SimEndpointArgs {
    /// Directory of the simulator's disk tier (B2); default: `sim-cache/`
    /// in the run directory. Must allow O_DIRECT (not tmpfs).
    #[arg(help_heading = heading::SIMULATOR, long)]
    pub sim_cache_dir: Option<PathBuf>,
    /// Override a profile field, KEY=VALUE (repeatable), e.g. gpu_num_blocks=32.
    #[arg(help_heading = heading::SIMULATOR, long = "sim-set", value_parser = parse_param)]
    pub sim_set: Vec<(String, String)>,
    /// Make the simulator lie on purpose (repeatable), to test the verdict.
    #[arg(help_heading = heading::SIMULATOR, long = "sim-lie", value_enum)]
    pub sim_lies: Vec<LieArg>,
    /// KVBM metric names the simulator exports.
    #[arg(help_heading = heading::SIMULATOR, long, value_enum, default_value_t = NamingArg::V1)]
    pub sim_kvbm_naming: NamingArg,
    /// How the simulator times disk onboarding.
    #[arg(help_heading = heading::SIMULATOR, long, value_enum, default_value_t = DiskTimingArg::Model)]
    pub sim_disk_timing: DiskTimingArg,
}

#[derive(Debug, Args)]
pub struct SimArgs {
    /// A built-in profile (tiny, spark-llama31-8b-fp8, spark-llama33-70b-nvfp4) or a profile .toml.
    #[arg(long, default_value = "spark-llama31-8b-fp8")]
    pub profile: String,
    /// B0 (GPU only), B1 (+ host), B2 (+ host + disk).
    #[arg(long, default_value = "B2")]
    pub tier_mode: String,
    /// The OpenAI endpoint's address (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:8000")]
    pub listen: String,
    /// KVBM's metrics port (KVBM's default is 6880); `none` serves none.
    #[arg(long, default_value = "127.0.0.1:6880")]
    pub metrics_listen: String,
    /// Directory of the disk tier's cache file (B2; must allow O_DIRECT, so
    /// not tmpfs). Created if missing; the file is removed on exit.
    #[arg(long, default_value = "bench/sim-cache")]
    pub cache_dir: PathBuf,
    #[arg(long, value_enum, default_value_t = NamingArg::V1)]
    pub kvbm_naming: NamingArg,
    /// Make the simulator lie on purpose (repeatable), to test a verdict.
    #[arg(long = "lie", value_enum)]
    pub lies: Vec<LieArg>,
    #[arg(long, value_enum, default_value_t = DiskTimingArg::Model)]
    pub disk_timing: DiskTimingArg,
    /// Override a profile field, KEY=VALUE (repeatable), e.g. disk_read_gbps=3.2.
    #[arg(long = "set", value_parser = parse_param)]
    pub sets: Vec<(String, String)>,
    /// KVBM v2 with GPUDirect Storage (disk hits onboard G3 → G1 directly).
    #[arg(long)]
    pub gds: bool,
    /// Use buffered I/O where the filesystem refuses O_DIRECT (recorded).
    #[arg(long)]
    pub allow_buffered_disk: bool,
    /// Hugging Face tokenizer.json for prompt tokens (default: heuristic).
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// A `sparkhost calibrate-disk` profile: the disk tier's read and write
    /// bandwidth become its measured block-sized random figures (an explicit
    /// --set wins).
    #[arg(long)]
    pub device_profile: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ArrivalKind {
    Constant,
    Poisson,
    Gamma,
}

/// One KV-mode type for the CLI, the run documents and the verdict.
pub use sparkhost_collectors::KvMode;

fn kv_modes() -> impl TypedValueParser<Value = KvMode> {
    PossibleValuesParser::new(KvMode::ALL.map(KvMode::as_str)).try_map(|s| s.parse::<KvMode>())
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The workload component (.wasm).
    pub workload: PathBuf,
    /// Workload parameter NAME=VALUE (repeatable; `sparkhost inspect` lists them).
    #[arg(help_heading = heading::WORKLOAD, long = "param", short = 'p', value_parser = parse_param)]
    pub params: Vec<(String, String)>,
    #[command(flatten)]
    pub endpoint: EndpointArgs,
    /// A running stack's state dir (`sparkhost stack up --state-dir`): its
    /// endpoint, tier mode, KVBM metrics URL and disk cache dir, and its
    /// config hashes in manifest.json.
    #[arg(help_heading = heading::ENDPOINT, long, value_name = "STATE_DIR")]
    pub stack: Option<PathBuf>,
    /// Model id, or `auto` for the first one `/v1/models` lists.
    #[arg(help_heading = heading::ENDPOINT, long, alias = "model-id", default_value = "auto")]
    pub model: String,
    /// How long to wait for the model to be listed.
    #[arg(help_heading = heading::ENDPOINT, long, alias = "model-resolve-timeout-s", default_value = "180s", value_parser = parse_duration)]
    pub model_resolve_timeout: Duration,
    /// Poll interval while waiting for the model.
    #[arg(help_heading = heading::ENDPOINT, long, alias = "model-resolve-poll-s", default_value = "2s", value_parser = parse_duration)]
    pub model_resolve_poll: Duration,

    /// Closed loop: requests in flight at most (default 1). Applies to every
    /// phase whose load the workload leaves to the command line; a workload
    /// with a `concurrency` param gets it there; a phase with a fixed load
    /// of its own refuses the run unless --override-phase-loads.
    #[arg(help_heading = heading::LOAD, long, short = 'c',
          value_parser = clap::value_parser!(u32).range(1..=crate::limits::MAX_CONCURRENCY as i64))]
    pub concurrency: Option<u32>,
    /// Run every phase at --concurrency/--rate, replacing the loads the
    /// workload's phases set themselves (recorded per phase in config.json).
    #[arg(help_heading = heading::LOAD, long)]
    pub override_phase_loads: bool,
    /// Open loop: requests per second (replaces closed-loop concurrency).
    #[arg(help_heading = heading::LOAD, long, value_parser = parse_positive)]
    pub rate: Option<f64>,
    /// Open-loop inter-arrival distribution.
    #[arg(help_heading = heading::LOAD, long, value_enum, default_value_t = ArrivalKind::Poisson, requires = "rate")]
    pub arrival: ArrivalKind,
    /// Shape of gamma inter-arrivals (1 = Poisson, <1 burstier).
    #[arg(help_heading = heading::LOAD, long, default_value_t = 1.0, value_parser = parse_positive)]
    pub gamma_shape: f64,

    /// Shorthand for `--param requests=N`.
    #[arg(help_heading = heading::WORKLOAD, long)]
    pub requests: Option<u64>,
    /// Shorthand for `--param warmup=N`.
    #[arg(help_heading = heading::WORKLOAD, long)]
    pub warmup: Option<u64>,
    /// Shorthand for `--param max-tokens=N`.
    #[arg(help_heading = heading::WORKLOAD, long)]
    pub max_tokens: Option<u32>,
    /// Shorthand for `--param temperature=X`.
    #[arg(help_heading = heading::WORKLOAD, long, value_parser = parse_sampling)]
    pub temperature: Option<f32>,
    /// Shorthand for `--param top-p=X`.
    #[arg(help_heading = heading::WORKLOAD, long, value_parser = parse_sampling)]
    pub top_p: Option<f32>,
    /// Shorthand for `--param request-seed=N` (sent to the server as `seed`).
    #[arg(help_heading = heading::WORKLOAD, long)]
    pub request_seed: Option<u64>,

    /// Stream responses (SSE) and measure every token.
    #[arg(help_heading = heading::TRANSPORT, long)]
    pub stream: bool,
    /// Do not ask for `stream_options.include_usage` (for servers that reject it).
    #[arg(help_heading = heading::TRANSPORT, long)]
    pub no_stream_usage: bool,
    /// Stop sending this long after the first phase starts (e.g. 10m): the
    /// requests in flight finish and are recorded, later phases are not
    /// run, and the run stays valid (`summary.json` → `dispatch`
    /// `stopped_by_duration`, `unsent`). 1s..=7d.
    #[arg(help_heading = heading::LOAD, long, value_parser = parse_run_duration)]
    pub duration: Option<Duration>,
    /// Per-request limit, from send to the last byte.
    #[arg(help_heading = heading::ENDPOINT, long, alias = "timeout-s", default_value = "600s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Most body bytes one response may bring (as sent, chunk framing
    /// included; K/M/G, KiB/MiB/GiB); past it the request fails as
    /// `response_too_large` and the run goes on.
    #[arg(help_heading = heading::ENDPOINT, long, default_value = crate::limits::MAX_RESPONSE_BYTES_FLAG, value_parser = parse_response_bytes)]
    pub max_response_bytes: u64,
    /// Where chunk arrival times come from: `kernel` receive timestamps
    /// (SO_TIMESTAMPNS; the parser's own delay is then reported as the
    /// read-path delay instead of skewing TTFT/ITL) or `application`, the
    /// parser's clock, as other harnesses measure.
    #[arg(help_heading = heading::TRANSPORT, long, value_enum, default_value = "kernel")]
    pub arrival_clock: crate::dispatch::stamp::RxClock,
    /// Seed handed to the workload and the open-loop schedule.
    #[arg(help_heading = heading::WORKLOAD, long, default_value_t = 1337)]
    pub seed: u64,
    /// Hugging Face tokenizer.json, or a model directory holding one (its
    /// tokenizer_config.json's chat template is recorded), for token counting
    /// and fitting. Default: the model directory when the server's
    /// /v1/models names a local path that has a tokenizer.json; else a
    /// heuristic (its id says so).
    #[arg(help_heading = heading::WORKLOAD, long)]
    pub tokenizer: Option<PathBuf>,
    /// Grant this file read-only to the workload at /data/<file name> (repeatable).
    /// `--param NAME=@FILE` grants a file and passes its guest path as the value.
    #[arg(help_heading = heading::WORKLOAD, long = "data")]
    pub data: Vec<PathBuf>,
    /// Preflight: the engine's input limit in tokens; prompts that cannot fit
    /// fail the run. The whole plan is checked before anything is sent
    /// (a second workload instance plans it to its end); where the plan
    /// waits for responses, the rest is checked as it is planned and the
    /// first offender stops the run (summary.json's preflight.whole_plan
    /// says which). 0 turns preflight off.
    #[arg(help_heading = heading::PREFLIGHT, long, default_value_t = 8192)]
    pub engine_max_input_tokens: u32,
    /// Preflight: tokens kept free for special tokens and the chat template.
    #[arg(help_heading = heading::PREFLIGHT, long, default_value_t = 256)]
    pub input_token_safety_margin: u32,

    /// Where run directories are created.
    #[arg(help_heading = heading::OUTPUT, long, default_value = "bench/results")]
    pub results_root: PathBuf,
    /// Run directory name (default: UTC time, YYYYMMDDTHHMMSSZ): letters,
    /// digits, `.`, `_`, `-`; one path component inside --results-root.
    #[arg(help_heading = heading::OUTPUT, long, value_parser = parse_run_id)]
    pub run_id: Option<String>,

    /// KV offload mode the server runs: off (B0), cpu_only (B1), cpu_disk
    /// (B2) or unspecified. A B1/B2 run without KVBM metrics is invalid
    /// (the seed's rule). Default: the stack's or simulator's mode (the
    /// simulator runs B2), else `unspecified`: KVBM is scraped and recorded
    /// if it answers, nothing is required and no tier claim is made.
    #[arg(help_heading = heading::LABELS, long, value_parser = kv_modes())]
    pub kv_mode: Option<KvMode>,
    /// Tier label B0|B1|B2 (overrides --kv-mode: B0=off, B1=cpu_only, B2=cpu_disk).
    #[arg(help_heading = heading::LABELS, long)]
    pub tier_mode: Option<String>,
    /// CPU KV cache size label (default 8 for B1/B2).
    #[arg(help_heading = heading::LABELS, long, value_parser = parse_gb)]
    pub kv_cpu_cache_gb: Option<f64>,
    /// Disk KV cache size label (default 32 for B2).
    #[arg(help_heading = heading::LABELS, long, value_parser = parse_gb)]
    pub kv_disk_cache_gb: Option<f64>,
    /// Free tag recorded with the run (repeatable).
    #[arg(help_heading = heading::LABELS, long = "variant-tag")]
    pub variant_tags: Vec<String>,

    /// Requests planned ahead of their send time. Dispatch begins once this many are
    /// planned; the scheduler then buffers up to this many and the plan feed's channel
    /// holds up to as many again, so up to about twice this many (plus one planner
    /// batch) can be planned and not yet sent.
    #[arg(help_heading = heading::LOAD, long, default_value_t = crate::limits::LOOKAHEAD)]
    pub lookahead: usize,
    /// Open loop: most requests in flight before sends wait (and show as lateness).
    #[arg(help_heading = heading::LOAD, long, default_value_t = crate::limits::MAX_IN_FLIGHT)]
    pub max_in_flight: usize,
    /// Keep-alive connections opened before the first phase (default: the
    /// largest closed-loop concurrency or 10 ms of open-loop arrivals, at
    /// most 1024; 0 opens none).
    #[arg(help_heading = heading::LOAD, long)]
    pub prewarm_connections: Option<usize>,
    #[command(flatten)]
    pub sim: SimEndpointArgs,
    #[command(flatten)]
    pub hygiene: HygieneArgs,
    #[command(flatten)]
    pub sandbox: SandboxArgs,
    #[command(flatten)]
    pub telemetry: TelemetryArgs,
    /// Print nothing but errors.
    #[arg(help_heading = heading::OUTPUT, long, short = 'q')]
    pub quiet: bool,
    /// SLOs whose goodput and attainment go into summary.json, e.g. ttft_p95=500ms,tpot_p99=50ms,error_rate=0.01.
    #[arg(help_heading = heading::REPORTS, long, value_parser = crate::analysis::slo::Slo::parse)]
    pub slo: Option<crate::analysis::slo::Slo>,
    /// Report generator run at the end (default: report-default.wasm).
    #[arg(help_heading = heading::REPORTS, long)]
    pub report_generator: Option<PathBuf>,
    /// Write no report.md / report.html.
    #[arg(help_heading = heading::REPORTS, long)]
    pub no_report: bool,
    /// Write each response's text to responses/<phase>_<index>_<id>.txt
    /// (the seed's layout; rows name it in `response_path`). At most 1 GiB
    /// and 1,000,000 files per run; responses past that get no file.
    #[arg(help_heading = heading::OUTPUT, long)]
    pub store_responses: bool,
    /// The seed harness's flags: refused, naming what to use instead.
    #[command(flatten)]
    pub seed_flags: SeedFlags,
    /// Refuse to run unless the workload's sha256 is this (64 hex digits,
    /// `sha256:` optional): pins a path or a tag to one component.
    #[arg(help_heading = heading::SANDBOX, long, value_parser = parse_sha256)]
    pub workload_sha256: Option<String>,
}

impl From<&SandboxArgs> for crate::sandbox::Limits {
    fn from(a: &SandboxArgs) -> Self {
        crate::sandbox::Limits {
            call_timeout: a.workload_call_timeout,
            memory_bytes: a.workload_memory_mib << 20,
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct SandboxArgs {
    /// Longest a single workload call may run.
    #[arg(help_heading = heading::SANDBOX, long, default_value = crate::limits::WORKLOAD_CALL_TIMEOUT_FLAG, value_parser = parse_duration)]
    pub workload_call_timeout: Duration,
    /// Memory cap of a workload instance, MiB.
    #[arg(help_heading = heading::SANDBOX, long, default_value_t = crate::limits::WORKLOAD_MEMORY_MIB)]
    pub workload_memory_mib: u64,
    /// Cache for compiled components (default: $SPARKHOST_CACHE_DIR, $XDG_CACHE_HOME/sparkhost or ~/.cache/sparkhost).
    #[arg(help_heading = heading::SANDBOX, long)]
    pub cache_dir: Option<PathBuf>,
    /// Fetch oci:// components over plain HTTP (loopback registries only).
    #[arg(help_heading = heading::SANDBOX, long)]
    pub plain_http: bool,
}

impl SandboxArgs {
    pub fn registry(&self) -> crate::share::RegistryOptions {
        crate::share::RegistryOptions {
            plain_http: self.plain_http,
            cache_dir: self.cache_dir.clone(),
        }
    }
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    pub workload: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub sandbox: SandboxArgs,
}

#[derive(Debug, Args)]
pub struct WaitReadyArgs {
    #[command(flatten)]
    pub endpoint: EndpointArgs,
    /// Give up after this long.
    #[arg(long, default_value = "180s", value_parser = parse_duration)]
    pub timeout: Duration,
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub poll: Duration,
    /// Successful polls in a row required (a registering worker can flap).
    #[arg(long, default_value_t = 2)]
    pub consecutive: u32,
    /// Wait for this model id instead of any.
    #[arg(long)]
    pub model: Option<String>,
}

#[derive(Debug, Args)]
pub struct SmokeArgs {
    #[command(flatten)]
    pub endpoint: EndpointArgs,
    #[arg(long, default_value = "auto")]
    pub model: String,
    #[arg(long, default_value_t = 16)]
    pub max_tokens: u32,
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub timeout: Duration,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_accept_units_and_bare_seconds() {
        assert_eq!(parse_duration("180s").unwrap(), Duration::from_secs(180));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("1.5").unwrap(), Duration::from_millis(1500));
        assert!(parse_duration("-1").is_err());
        assert!(
            parse_duration("soon")
                .unwrap_err()
                .contains("not a duration")
        );
    }

    #[test]
    fn sizes_take_binary_units_and_refuse_the_rest() {
        assert_eq!(parse_bytes("4096"), Ok(4096));
        assert_eq!(parse_bytes("64K"), Ok(64 << 10));
        assert_eq!(parse_bytes("1MiB"), Ok(1 << 20));
        assert_eq!(parse_bytes("2g"), Ok(2 << 30));
        assert!(parse_bytes("1.5G").is_err());
        assert!(parse_bytes("1X").unwrap_err().contains("unknown unit"));
        assert!(parse_bytes("99999999999T").unwrap_err().contains("2^64"));
    }

    #[test]
    fn params_are_name_value() {
        assert_eq!(
            parse_param("set=mixed").unwrap(),
            ("set".into(), "mixed".into())
        );
        assert_eq!(
            parse_param("stop=a=b").unwrap(),
            ("stop".into(), "a=b".into())
        );
        assert!(parse_param("novalue").is_err());
    }

    #[test]
    fn clap_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}

/// Telemetry and evidence (defaults are the seed harness's).
#[derive(Debug, Clone, Args)]
pub struct TelemetryArgs {
    /// Collect nothing: no timelines, phase deltas, NVMe SMART or verdict.
    #[arg(help_heading = heading::TELEMETRY, long)]
    pub no_telemetry: bool,
    /// Turn one collector off (repeatable).
    #[arg(help_heading = heading::TELEMETRY, long = "no-collector", value_name = "NAME", value_parser = source_ids())]
    pub no_collectors: Vec<SourceId>,
    /// Timeline sampling interval.
    #[arg(help_heading = heading::TELEMETRY, long, alias = "telemetry-interval-s", default_value = "1s", value_parser = parse_duration)]
    pub telemetry_interval: Duration,
    /// Block devices to watch, by /proc/diskstats name (repeatable; default nvme0n1).
    #[arg(help_heading = heading::TELEMETRY, long = "block-device", alias = "phase-io-device")]
    pub block_devices: Vec<String>,
    /// Worker processes by command-line regex.
    #[arg(help_heading = heading::TELEMETRY, long, alias = "worker-proc-pattern", default_value = DEFAULT_PROCESS_PATTERN)]
    pub process_regex: String,
    /// Worker processes by PID (repeatable).
    #[arg(help_heading = heading::TELEMETRY, long = "pid")]
    pub pids: Vec<u32>,
    /// cgroup v2 path whose io.stat is the worker's I/O.
    #[arg(help_heading = heading::TELEMETRY, long)]
    pub cgroup: Option<PathBuf>,
    /// Docker container: logs, inspect, cuFile logs, and its cgroup when --cgroup is absent.
    #[arg(help_heading = heading::TELEMETRY, long, alias = "container-name")]
    pub container: Option<String>,
    /// NVMe controller or namespace for identity and SMART.
    #[arg(help_heading = heading::TELEMETRY, long, default_value = DEFAULT_NVME_DEVICE)]
    pub nvme_device: String,
    /// KVBM metrics endpoint.
    #[arg(help_heading = heading::TELEMETRY, long, default_value = DEFAULT_KVBM_URL)]
    pub kvbm_metrics_url: String,
    /// Worker system-port metrics endpoint.
    #[arg(help_heading = heading::TELEMETRY, long, alias = "metrics-system-url", default_value = DEFAULT_WORKER_URL)]
    pub worker_metrics_url: String,
    /// Frontend metrics endpoint (default: <endpoint>/metrics).
    #[arg(help_heading = heading::TELEMETRY, long)]
    pub frontend_metrics_url: Option<String>,
    /// Per-scrape timeout at phase boundaries.
    #[arg(help_heading = heading::TELEMETRY, long, alias = "kvbm-metrics-timeout-s", default_value = "3s", value_parser = parse_duration)]
    pub metrics_timeout: Duration,
    /// KVBM disk cache directory; its block device is the KV disk.
    #[arg(help_heading = heading::TELEMETRY, long, default_value = DEFAULT_KV_CACHE_DIR)]
    pub kv_cache_dir: PathBuf,
    /// cuFile log directories to copy (repeatable; default /var/log/cufile).
    #[arg(help_heading = heading::TELEMETRY, long = "cufile-log-dir")]
    pub cufile_log_dirs: Vec<PathBuf>,
    /// Error rate above which the run is invalid.
    #[arg(help_heading = heading::VERDICT, long, default_value_t = verdict::DEFAULT_MAX_ERROR_RATE, value_parser = parse_fraction)]
    pub max_error_rate: f64,
    /// Missing KVBM metrics only demote the run instead of invalidating it.
    #[arg(help_heading = heading::VERDICT, long)]
    pub allow_missing_kvbm_metrics: bool,
    /// Bytes of one KV block (KV bytes per token × tokens per block), so the
    /// verdict can set KVBM's block counts beside disk and process bytes
    /// (set from the simulator with --endpoint sim).
    #[arg(help_heading = heading::VERDICT, long, value_parser = clap::value_parser!(u64).range(1..=crate::limits::KV_BLOCK_BYTES_MAX))]
    pub kv_block_bytes: Option<u64>,
    /// The server's DYN_KVBM_CACHE_STATS_MAX_REQUESTS: the request window of
    /// KVBM's hit-rate gauges.
    #[arg(help_heading = heading::VERDICT, long, default_value_t = sparkhost_collectors::verdict::DEFAULT_HIT_RATE_WINDOW,
          value_parser = clap::value_parser!(u64).range(1..=crate::limits::HIT_RATE_WINDOW_MAX))]
    pub kvbm_hit_rate_window: u64,
    /// Do not keep raw Prometheus scrapes under phase_deltas/raw/.
    #[arg(help_heading = heading::TELEMETRY, long)]
    pub no_raw_scrapes: bool,
}

/// `--no-collector` takes exactly the collectors' source names, so `--help`
/// lists them and a typo is a usage error.
fn source_ids() -> impl TypedValueParser<Value = SourceId> {
    PossibleValuesParser::new(SourceId::names()).try_map(|s| s.parse::<SourceId>())
}

impl TelemetryArgs {
    /// The collectors' configuration for a run directory and endpoint.
    /// `kvbm_expected: false` (B0) leaves KVBM unasked: asking would only
    /// record a misleading failure.
    pub fn collectors_config(&self, run_dir: &Path, endpoint: &str, kvbm_expected: bool) -> Config {
        let mut c = Config::new(run_dir);
        c.interval = self.telemetry_interval;
        if !self.block_devices.is_empty() {
            c.block_devices = self.block_devices.clone();
        }
        c.process_pattern = (!self.process_regex.is_empty()).then(|| self.process_regex.clone());
        c.pids = self.pids.clone();
        c.cgroup = self.cgroup.clone().map(CgroupTarget::Path);
        c.container = self.container.clone();
        c.nvme_device = Some(self.nvme_device.clone());
        c.kvbm_metrics_url = Some(self.kvbm_metrics_url.clone());
        c.worker_metrics_url = Some(self.worker_metrics_url.clone());
        c.frontend_metrics_url = Some(
            self.frontend_metrics_url
                .clone()
                .unwrap_or_else(|| Config::metrics_url_for_endpoint(endpoint)),
        );
        c.metrics_timeout = self.metrics_timeout;
        c.kv_cache_dir = Some(self.kv_cache_dir.clone());
        if !self.cufile_log_dirs.is_empty() {
            c.cufile_log_dirs = self.cufile_log_dirs.clone();
        }
        c.save_raw_scrapes = !self.no_raw_scrapes;
        c.collectors.set(SourceId::Kvbm, kvbm_expected);
        for &id in &self.no_collectors {
            c.collectors.set(id, false);
        }
        c
    }

    pub fn policy(&self) -> Policy {
        Policy {
            max_error_rate: self.max_error_rate,
            allow_missing_kvbm_metrics: self.allow_missing_kvbm_metrics,
            kv_block_bytes: self.kv_block_bytes,
            hit_rate_window_requests: self.kvbm_hit_rate_window,
            ..Policy::default()
        }
    }
}

#[cfg(test)]
mod telemetry_args_tests {
    use super::*;

    #[derive(Debug, Parser)]
    struct T {
        #[command(flatten)]
        t: TelemetryArgs,
        #[arg(long, default_value_t = KvMode::CpuDisk, value_parser = kv_modes())]
        kv_mode: KvMode,
    }

    fn parse(args: &[&str]) -> Result<T, clap::Error> {
        T::try_parse_from(std::iter::once("t").chain(args.iter().copied()))
    }

    #[test]
    fn no_collector_takes_source_names_only() {
        let t = parse(&["--no-collector", "gpu", "--no-collector", "kv-cache-dir"]).unwrap();
        assert_eq!(t.t.no_collectors, [SourceId::Gpu, SourceId::KvCacheDir]);
        let c =
            t.t.collectors_config(Path::new("/tmp/r"), "http://h:1/", true);
        assert!(!c.collectors.enabled(SourceId::Gpu));
        assert!(!c.collectors.enabled(SourceId::KvCacheDir));
        assert!(c.collectors.enabled(SourceId::Kvbm));
        assert_eq!(
            c.frontend_metrics_url.as_deref(),
            Some("http://h:1/metrics")
        );
        let e = parse(&["--no-collector", "kv_cache_dir"]).unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::InvalidValue);
        assert!(e.to_string().contains("kv-cache-dir"), "{e}");
    }

    #[test]
    fn help_lists_the_collectors() {
        use clap::CommandFactory;
        let help = T::command().render_help().to_string();
        let names: Vec<&str> = SourceId::names().collect();
        assert!(
            help.contains(&format!("[possible values: {}]", names.join(", "))),
            "{help}"
        );
        assert!(
            help.contains("[possible values: off, cpu_only, cpu_disk, unspecified]"),
            "{help}"
        );
    }

    #[test]
    fn defaults_are_the_collectors_defaults() {
        let t = parse(&[]).unwrap();
        assert_eq!(t.kv_mode, KvMode::CpuDisk);
        let c =
            t.t.collectors_config(Path::new("/tmp/r"), "http://h:1", false);
        let d = Config::new("/tmp/r");
        assert_eq!(c.process_pattern, d.process_pattern);
        assert_eq!(c.nvme_device, d.nvme_device);
        assert_eq!(c.kvbm_metrics_url, d.kvbm_metrics_url);
        assert_eq!(c.worker_metrics_url, d.worker_metrics_url);
        assert_eq!(c.kv_cache_dir, d.kv_cache_dir);
        assert_eq!(c.interval, d.interval);
        assert_eq!(c.metrics_timeout, d.metrics_timeout);
        assert_eq!(c.block_devices, d.block_devices);
        // B0: KVBM is not asked.
        assert!(!c.collectors.enabled(SourceId::Kvbm));
        assert_eq!(t.t.policy(), Policy::default());
        assert_eq!(
            parse(&["--kv-mode", "cpu_only"]).unwrap().kv_mode,
            KvMode::CpuOnly
        );
        assert!(
            parse(&["--kv-mode", "B1"]).is_err(),
            "tier labels go to --tier-mode"
        );
    }
}
