//! Test guest `hog`: `next-batch` allocates memory until allocation fails.
//!
//! The host's memory-cap tests use it to check that a guest over its limit
//! fails cleanly instead of taking the host's memory.
//!
//! # Layout
//!
//! One file: a [`Workload`] whose `next_batch` keeps 16 MiB blocks alive.

use sparkhost_workload::{Batch, Params, Phase, Result, Workload, WorkloadInfo};

/// Small enough that any cap is crossed gradually, so memory growth is really
/// exercised before the failure, rather than one oversized request failing.
const BLOCK_BYTES: usize = 16 << 20;

pub struct Hog;

impl Workload for Hog {
    fn describe() -> WorkloadInfo {
        WorkloadInfo {
            name: "test-hog".to_string(),
            version: "0.1.0".to_string(),
            description: "Test guest: next-batch allocates 16 MiB blocks until allocation fails."
                .to_string(),
            params: Vec::new(),
        }
    }

    fn create(_params: &Params, _seed: u64) -> Result<Self> {
        Ok(Hog)
    }

    fn phases(&self) -> Vec<Phase> {
        vec![Phase {
            name: "main".to_string(),
            include_in_summary: true,
            load: None,
        }]
    }

    fn next_batch(&mut self, _max: u32) -> Result<Batch> {
        let mut hoard: Vec<Vec<u8>> = Vec::new();
        loop {
            // Non-zero bytes and `black_box` make every page really written
            // and keep the allocations from being optimized away. Allocation
            // failure aborts the guest, which the host sees as a trap.
            hoard.push(vec![0xA5; BLOCK_BYTES]);
            std::hint::black_box(&hoard);
        }
    }
}

sparkhost_workload::export_workload!(Hog);
