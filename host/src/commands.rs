//! One module per subcommand; each returns the process exit status.

pub mod bench;
pub mod calibrate_disk;
pub mod compare;
pub mod health;
pub mod inspect;
pub mod matrix;
pub mod new;
pub mod pull;
pub mod push;
pub mod recover;
pub mod report;
pub mod run;
pub mod search;
pub mod shell;
pub mod sim;
pub mod smoke;
pub mod stack;
pub mod summarize;
pub mod truth_server;
pub mod wait_ready;

/// The process exit contract (same as the seed harness).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// The run is valid (or the command succeeded).
    Ok = 0,
    /// The command failed before producing results.
    Crashed = 1,
    /// The run is invalid; its artifacts were written.
    Invalid = 2,
}
