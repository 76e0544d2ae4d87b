//! Test guest `future-version`: exports `sparkhost:workload/planner@0.9.0`.
//!
//! The host's version tests use it to check that a component built against
//! an unsupported API version is refused with a clear message before any
//! call. It uses wit-bindgen directly because the SDK only speaks 0.1.0.
//!
//! # Layout
//!
//! - `wit/workload.wit`: the 0.1.0 WIT with the package version bumped.
//! - this file: a well-behaved planner with no requests, so a host that
//!   wrongly accepts it would run it without error and the test would notice
//!   only through the version check.

mod bindings {
    wit_bindgen::generate!({
        world: "workload",
        path: "wit",
    });
}

use bindings::exports::sparkhost::workload::planner::{Generator, Guest, GuestGenerator};
use bindings::sparkhost::workload::types::{
    Batch, Param, Phase, ResponseSummary, WorkloadError, WorkloadInfo,
};

struct FutureVersion;

impl Guest for FutureVersion {
    type Generator = Planner;

    fn describe() -> WorkloadInfo {
        WorkloadInfo {
            name: "test-future-version".to_string(),
            version: "0.1.0".to_string(),
            description: "Test guest: exports planner@0.9.0, which no host supports.".to_string(),
            params: Vec::new(),
        }
    }
}

struct Planner;

impl GuestGenerator for Planner {
    fn create(_params: Vec<Param>, _seed: u64) -> Result<Generator, WorkloadError> {
        Ok(Generator::new(Planner))
    }

    fn phases(&self) -> Vec<Phase> {
        vec![Phase {
            name: "main".to_string(),
            include_in_summary: true,
            load: None,
        }]
    }

    fn next_batch(&self, _max: u32) -> Result<Batch, WorkloadError> {
        Ok(Batch {
            requests: Vec::new(),
            done: true,
        })
    }

    fn on_response(&self, _summary: ResponseSummary) -> Result<(), WorkloadError> {
        Ok(())
    }
}

// The export glue defines `unsafe extern "C"` entry points; the workspace
// denies unsafe code so that hand-written code stays safe.
#[allow(unsafe_code)]
const _: () = {
    bindings::export!(FutureVersion with_types_in bindings);
};
