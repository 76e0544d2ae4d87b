//! One `sparkhost run`, from flags to a finished run directory.
//!
//! Layout:
//! - [`plan`]: [`RunPlan`], everything resolved once from the flags and the
//!   workload before the run directory exists.
//! - [`loads`]: the rule for which load each phase runs (flag, workload,
//!   workload param or override), so a load flag is never silently ignored.
//! - [`execute`]: the threads and tasks of a run (model wait, whole-plan
//!   preflight, plan feed, KV reset and warm-up, recorder, dispatcher, model
//!   watcher, Ctrl-C); returns one [`RunOutcome`](execute::RunOutcome).
//! - [`finish`]: telemetry closed, the verdict, the run's validity, the disk
//!   ceiling, `summary.json`, histograms, goodput, the report and the table.
//! - [`recover`]: the same closing documents for a killed run, from its rows.

pub mod execute;
pub mod finish;
pub mod loads;
pub mod plan;
pub mod recover;

pub use plan::{Resolved, RunPlan};
