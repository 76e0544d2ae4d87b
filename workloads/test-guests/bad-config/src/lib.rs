//! Test guest `bad-config`: `create` always fails with `invalid-config`.
//!
//! The host's tests use it to check that a workload's config error reaches
//! the user as a message (and the documented exit code), not as a trap.
//!
//! # Layout
//!
//! One file: a [`Workload`] whose `create` returns [`MESSAGE`].

use sparkhost_workload::{Batch, Params, Phase, Result, Workload, WorkloadError, WorkloadInfo};

/// The `invalid-config` text; host tests compare it verbatim.
pub const MESSAGE: &str =
    "bad-config test guest: parameter `answer`: \"41\" is not valid; expected 42";

pub struct BadConfig;

impl Workload for BadConfig {
    fn describe() -> WorkloadInfo {
        WorkloadInfo {
            name: "test-bad-config".to_string(),
            version: "0.1.0".to_string(),
            description: "Test guest: create always fails with invalid-config.".to_string(),
            params: vec![sparkhost_workload::param(
                "answer",
                "Ignored; create fails whatever its value.",
                "41",
            )],
        }
    }

    fn create(_params: &Params, _seed: u64) -> Result<Self> {
        Err(WorkloadError::InvalidConfig(MESSAGE.to_string()))
    }

    fn phases(&self) -> Vec<Phase> {
        Vec::new()
    }

    fn next_batch(&mut self, _max: u32) -> Result<Batch> {
        Err(WorkloadError::Internal(
            "bad-config test guest: next-batch reached although create always fails".to_string(),
        ))
    }
}

sparkhost_workload::export_workload!(BadConfig);
