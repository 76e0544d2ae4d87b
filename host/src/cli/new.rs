//! Flags of `new`.

use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};

#[derive(Debug, Args)]
pub struct NewArgs {
    #[command(subcommand)]
    pub what: NewWhat,
}

#[derive(Debug, Subcommand)]
pub enum NewWhat {
    /// A workload project: the SDK and the WIT copied in, `./build.sh`
    /// builds NAME.wasm, `./test.sh` runs it with `sparkhost run` against
    /// the in-process simulator and checks its rows.
    Workload(NewWorkloadArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum NewLang {
    Rust,
    Js,
    Python,
}

/// A shipped workload a project can start from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum NewFrom {
    #[value(name = "reuse_verify")]
    ReuseVerify,
    #[value(name = "local_copilot_burst")]
    LocalCopilotBurst,
}

#[derive(Debug, Args)]
pub struct NewWorkloadArgs {
    /// The workload's name: 1-64 of a-z 0-9 _ -, starting with a letter
    /// (it names the crate or package, the directory and NAME.wasm).
    pub name: String,
    /// The language of the project.
    #[arg(long, value_enum)]
    pub lang: NewLang,
    /// Start from a shipped workload's source instead of a minimal one.
    #[arg(long, value_enum)]
    pub from: Option<NewFrom>,
    /// Where the project is created (default: ./NAME); it must not exist
    /// or be empty.
    #[arg(long)]
    pub dir: Option<PathBuf>,
}
