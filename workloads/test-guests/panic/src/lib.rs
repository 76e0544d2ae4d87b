//! Test guest `panic`: `next-batch` panics.
//!
//! The host's tests use it to check that a guest panic becomes a trap that is
//! reported with the guest's message, separately from a `workload-error`.
//!
//! # Layout
//!
//! One file: a [`Workload`] whose `next_batch` panics with [`MESSAGE`].

use sparkhost_workload::{Batch, Params, Phase, Result, Workload, WorkloadInfo};

/// What the panic says; host tests look for it in the guest's stderr.
pub const MESSAGE: &str = "sparkhost test guest: deliberate panic in next-batch";

pub struct Panic;

impl Workload for Panic {
    fn describe() -> WorkloadInfo {
        WorkloadInfo {
            name: "test-panic".to_string(),
            version: "0.1.0".to_string(),
            description: "Test guest: next-batch panics.".to_string(),
            params: Vec::new(),
        }
    }

    fn create(_params: &Params, _seed: u64) -> Result<Self> {
        Ok(Panic)
    }

    fn phases(&self) -> Vec<Phase> {
        vec![Phase {
            name: "main".to_string(),
            include_in_summary: true,
            load: None,
        }]
    }

    fn next_batch(&mut self, _max: u32) -> Result<Batch> {
        panic!("{MESSAGE}");
    }
}

sparkhost_workload::export_workload!(Panic);
