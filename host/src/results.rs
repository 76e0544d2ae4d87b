//! What a run leaves behind, and the numbers computed from it.
//!
//! Layout:
//! - [`records`]: the row type of `requests.jsonl`.
//! - [`tokens`]: per-token arrival times from chunks (ITL, TPOT).
//! - [`summary`]: HdrHistogram accumulators and `summary.json` statistics.
//! - [`recorder`]: finished requests → rows, histograms, workload feedback.
//! - [`responses`]: `--store-responses`: response texts under `responses/`, bounded.
//! - [`rundir`]: the run directory: never overwritten, line-atomic JSONL.

pub mod documents;
pub mod recorder;
pub mod records;
pub mod responses;
pub mod rundir;
pub mod summary;
pub mod tokens;
