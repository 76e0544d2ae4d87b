//! Flags of `stack` and `health`.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::parse_param;

/// Where `stack` keeps `stack.json`, the rendered files and the logs.
pub const DEFAULT_STACK_DIR: &str = "bench/stack";

#[derive(Debug, Args)]
pub struct StackArgs {
    #[command(subcommand)]
    pub action: StackAction,
}

#[derive(Debug, Subcommand)]
pub enum StackAction {
    /// Start the profile's processes or containers in a tier mode and wait
    /// until they are ready and in that mode; prints the endpoint.
    Up(StackUpArgs),
    /// Stop the stack recorded in the state dir (by PID or container id).
    Down(StackDirArgs),
    /// Its processes, the health check and the tier checks.
    Status(StackStatusArgs),
    /// The last lines of each process's log.
    Logs(StackLogsArgs),
    /// Print what `up` would start: argv, environment, rendered files, hashes.
    Render(StackRenderArgs),
}

#[derive(Debug, Args)]
pub struct StackProfileArgs {
    /// A shipped profile (sim, dynamo-mocker, dgx-spark-trtllm) or a profile .toml.
    #[arg(long)]
    pub profile: String,
    /// B0 (GPU only), B1 (+ host tier), B2 (+ host + disk tiers).
    #[arg(long, visible_alias = "kv-mode")]
    pub tier_mode: String,
    /// Override a profile var, NAME=VALUE (repeatable), e.g. `model_profile=llama33_70b_nvfp4`.
    #[arg(long = "var", value_parser = parse_param)]
    pub vars: Vec<(String, String)>,
}

#[derive(Debug, Args)]
pub struct StackDirArgs {
    /// The stack's state dir (`stack.json`, rendered files, logs).
    #[arg(long, default_value = DEFAULT_STACK_DIR)]
    pub state_dir: PathBuf,
}

#[derive(Debug, Args)]
pub struct StackUpArgs {
    #[command(flatten)]
    pub profile: StackProfileArgs,
    #[command(flatten)]
    pub dir: StackDirArgs,
    /// Where process logs go (default: `logs/` in the state dir); a run
    /// directory when a run follows.
    #[arg(long)]
    pub logs: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct StackStatusArgs {
    #[command(flatten)]
    pub dir: StackDirArgs,
    /// Print the status as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct StackLogsArgs {
    #[command(flatten)]
    pub dir: StackDirArgs,
    /// Only this process.
    #[arg(long)]
    pub process: Option<String>,
    /// Lines per process (1..=100000).
    #[arg(long, default_value_t = 40, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub lines: u32,
}

#[derive(Debug, Args)]
pub struct StackRenderArgs {
    #[command(flatten)]
    pub profile: StackProfileArgs,
    /// State dir the paths are rendered for.
    #[arg(long, default_value = DEFAULT_STACK_DIR)]
    pub state_dir: PathBuf,
    /// Also write the rendered files into this directory.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct HealthArgs {
    /// The OpenAI base URL (default: the stack's, with --state-dir).
    #[arg(long)]
    pub endpoint: Option<String>,
    /// Check the stack in this state dir: its endpoint, KVBM, NATS and tier mode.
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// A health URL (default with --endpoint: ENDPOINT/health).
    #[arg(long)]
    pub health_url: Option<String>,
    /// KVBM's metrics URL (e.g. http://127.0.0.1:6880/metrics).
    #[arg(long)]
    pub kvbm_metrics_url: Option<String>,
    /// Require KVBM metrics (B1/B2) or their absence (B0) at --kvbm-metrics-url.
    #[arg(long)]
    pub tier_mode: Option<String>,
    /// NATS client address, host:port (TCP connect).
    #[arg(long)]
    pub nats: Option<String>,
    /// NATS monitor base URL (`/healthz`, `/varz` with JetStream).
    #[arg(long)]
    pub nats_monitor: Option<String>,
    #[arg(long)]
    pub json: bool,
}
