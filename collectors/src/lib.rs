//! Telemetry and evidence for sparkhost runs: what the host, its disks, its
//! GPU and the serving stack did while a benchmark ran, cut at phase
//! boundaries, and a verdict on whether the run shows what it claims.
//!
//! Every source fails soft. A missing device, a permission error, no NVIDIA
//! driver or an unreachable metrics port becomes "unavailable" with a reason in
//! the files and in `telemetry/telemetry_report.json`; it never aborts a run.
//!
//! # Layout
//!
//! - [`session`]: the host's API. [`Session::start`] probes every source, writes
//!   the NVMe identity and pre-run SMART, and starts a sampling thread that
//!   writes CSV timelines under `<run_dir>/telemetry/`; [`Session::snapshot`]
//!   reads everything at a phase boundary; [`Session::phase_deltas`] writes
//!   `phase_deltas/phase_<name>_*`; [`Session::stop`] writes the post-run SMART,
//!   captures logs and returns a [`TelemetryReport`].
//! - [`phase`]: snapshots and the per-phase artifacts computed from two of them
//!   (pure functions plus one writer).
//! - [`verdict`]: `verdict.json` as a pure function of the KV mode, per-phase
//!   evidence, error counts and the request manifest's reuse opportunity.
//! - Sources, one module each: [`diskstats`] (`/proc/diskstats`, `iostat -x`
//!   rates), [`procio`] (per-process I/O/CPU/RSS by cmdline regex or PID;
//!   cgroup v2 `io.stat` / v1 `blkio`), [`memory`] (`/proc/meminfo`,
//!   `/proc/vmstat`), [`gpu`] (NVML, feature `nvml`), [`nvme`] (SMART and
//!   Identify through the admin passthrough ioctl — the only `unsafe` in the
//!   crate), [`prometheus`] (text exposition parser, HTTP scrape, aggregation,
//!   counter and histogram deltas), [`kvbm`] (the KVBM metric catalogue and the
//!   seed's delta file), [`logs`] (docker logs/inspect, cuFile logs, KV cache
//!   directory listing).
//! - [`common`]: `Reading<T>` (a value or the reason there is none), JSON and
//!   CSV writers; [`docker`]: the docker CLI with a deadline; [`directio`]:
//!   O_DIRECT reads and writes of a known size (tests and the CLI).
//! - `src/bin/sparkhost-collect.rs`: a small CLI over the same code, used by the
//!   QEMU NVMe test inside the guest and for one-off checks (GPU sampling).

pub mod common;
pub mod directio;
pub mod diskstats;
pub mod docker;
pub mod gpu;
pub mod kvbm;
pub mod logs;
pub mod memory;
pub mod nvme;
pub mod phase;
pub mod procio;
pub mod prometheus;
pub mod session;
pub mod source;
pub mod verdict;

pub use common::Reading;
pub use phase::{PhaseDeltas, Snapshot};
pub use session::{Collectors, Config, Session, SourceStatus, TelemetryReport};
pub use source::{Source, SourceId, UnknownSource};
pub use verdict::{
    KvMode, PhaseEvidence, Policy, ReasonCode, ReuseOpportunity, RunErrors, Verdict, VerdictInput,
    evaluate,
};
