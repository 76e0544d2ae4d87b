//! Test guest `spin`: `next-batch` never returns.
//!
//! The host's deadline tests use it to check that a stuck guest is
//! interrupted (epoch deadline) instead of hanging the run.
//!
//! # Layout
//!
//! One file: a [`Workload`] whose `next_batch` loops forever.

use sparkhost_workload::{Batch, Params, Phase, Result, Workload, WorkloadInfo};

pub struct Spin;

impl Workload for Spin {
    fn describe() -> WorkloadInfo {
        WorkloadInfo {
            name: "test-spin".to_string(),
            version: "0.1.0".to_string(),
            description: "Test guest: next-batch loops forever.".to_string(),
            params: Vec::new(),
        }
    }

    fn create(_params: &Params, _seed: u64) -> Result<Self> {
        Ok(Spin)
    }

    fn phases(&self) -> Vec<Phase> {
        vec![Phase {
            name: "main".to_string(),
            include_in_summary: true,
            load: None,
        }]
    }

    fn next_batch(&mut self, _max: u32) -> Result<Batch> {
        // `black_box` keeps the loop body opaque so the optimizer cannot
        // reason about the loop and drop it.
        let mut turns = 0u64;
        loop {
            turns = std::hint::black_box(turns.wrapping_add(1));
        }
    }
}

sparkhost_workload::export_workload!(Spin);
