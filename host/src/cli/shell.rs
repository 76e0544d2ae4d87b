//! Flags of `completions` and `man`.

use clap::Args;

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell, e.g. `sparkhost completions bash > /etc/bash_completion.d/sparkhost`.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[derive(Debug, Args)]
pub struct ManArgs {
    /// A subcommand's page (e.g. `run`) instead of sparkhost's; `man -l -`
    /// shows it: `sparkhost man run | man -l -`.
    pub command: Option<String>,
}
