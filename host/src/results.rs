//! What a run leaves behind, and the numbers computed from it.
//!
//! Layout:
//! - [`records`]: row types of `request_manifest.jsonl` and `requests.jsonl`.
//! - [`identity`]: canonical JSON and the sha256 request identity hashes.
//! - [`tokens`]: per-token arrival times from chunks (ITL, TPOT).
//! - [`summary`]: HdrHistogram accumulators and `summary.json` statistics.
//! - [`recorder`]: finished requests → rows, histograms, workload feedback.
//! - [`rundir`]: the run directory: never overwritten, line-atomic JSONL.

pub mod documents;
pub mod identity;
pub mod recorder;
pub mod records;
pub mod rundir;
pub mod summary;
pub mod tokens;
