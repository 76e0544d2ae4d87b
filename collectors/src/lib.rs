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
//! - [`session`]: the host's API and the loop over sources. [`Session::start`]
//!   probes every source (in parallel), takes the `run_start` snapshot and
//!   starts a sampling thread that writes each source's CSV timelines under
//!   `<run_dir>/telemetry/`; [`Session::snapshot`] reads every source at a
//!   phase boundary; [`Session::phase_deltas`] writes
//!   `phase_deltas/phase_<name>_*`; [`Session::stop`] lets each source finish
//!   (post-run SMART, log captures) and returns a [`TelemetryReport`].
//! - [`source`]: the [`Source`] trait every source implements, its
//!   [`Sampler`](source::Sampler) for timelines, and [`SourceId`] (the names
//!   in reports and `--no-collector`).
//! - [`phase`]: snapshots and the per-phase artifacts computed from two of them
//!   (pure functions plus one writer).
//! - [`verdict`]: `verdict.json` as a pure function of the [`KvMode`], per-phase
//!   evidence (with the client's per-phase usage the host adds), error counts
//!   and the request manifest's reuse opportunity; the per-phase three-way
//!   cross-checks of reuse and disk bytes; findings are [`ReasonCode`]s.
//! - [`hash_reuse`]: the reuse a trace's hash ids predict (chained block
//!   ids from the manifest's `hash_ids` labels), per phase and for the run;
//!   part of the verdict's reuse opportunity.
//! - Sources, one module each, each owning its probe, snapshot part, timeline
//!   columns and rows: [`diskstats`] (`/proc/diskstats`, `iostat -x` rates; also
//!   picks the KV disk), [`procio`] (the `processes` source: per-process
//!   I/O/CPU/RSS by cmdline regex or PID; the `cgroup` source: v2 `io.stat` /
//!   v1 `blkio`), [`memory`] (`/proc/meminfo`, `/proc/vmstat`), [`gpu`] (NVML,
//!   feature `nvml`), [`nvme`] (SMART and Identify through the admin
//!   passthrough ioctl — the only `unsafe` in the crate — and the
//!   `nvme_*.json` files), [`kvbm`] (the KVBM metric catalogue, the seed's
//!   delta file, the `kvbm` source), [`prometheus`] (text exposition parser,
//!   HTTP scrape, aggregation, counter and histogram deltas; the `frontend`
//!   and `worker` sources in `prometheus::endpoint`), [`logs`] (the `logs`
//!   source: docker logs/inspect, cuFile logs; the `kv-cache-dir` source:
//!   directory listings).
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
pub mod hash_reuse;
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
