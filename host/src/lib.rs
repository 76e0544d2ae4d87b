//! sparkhost: timing-accurate benchmarks of OpenAI-compatible LLM serving
//! endpoints, with workloads as sandboxed WebAssembly components.
//!
//! Layout:
//! - [`cli`]: clap flags, nothing else.
//! - [`commands`]: one short driver per subcommand.
//! - [`run`]: one run: the resolved [`run::RunPlan`], the threads and tasks
//!   that execute it, and the documents that finish it.
//! - [`limits`]: every cap and tunable with its reason; clap defaults read it.
//! - [`plan`]: the host's model of a workload plan (phases, requests, arrivals).
//! - [`sandbox`]: wasmtime engine, limits, compile cache, WIT version check.
//! - [`feed`]: drives a planner on its own thread, ahead of the dispatcher.
//! - [`prepare`]: a prepared request's identity hashes and manifest row.
//! - [`digest`]: canonical JSON and sha256, the seed harness's hashing rule.
//! - [`dispatch`]: HTTP/SSE, pacing and timestamps; free of wasmtime.
//! - [`results`]: records, summaries, histograms, the run directory and the
//!   typed run documents with their schemas.
//! - [`evidence`]: run validity and its reasons.
//! - [`telemetry`]: collectors wired into a run: boundary snapshots, deltas, verdict.
//! - [`terminal`]: untrusted text made safe to print.
//! - [`tokenize`]: token counting and fitting shared with workloads.
//! - [`report`]: report generators (Wasm components) over a run directory.
//! - [`analysis`]: runs read back: summarize, compare, matrix, search, SLOs.
//! - [`progress`]: the live progress line of `run`.
//! - [`signals`]: SIGINT, SIGTERM and SIGHUP as one "stop, keep what was measured".
//! - [`truth`]: a ground-truth server that streams on an exact schedule (benchmarks).
//! - [`simulate`]: the simulated engine (`sparkhost-kvbm`) for `sim` and `--endpoint sim[:PROFILE]`.
//! - [`stack`]: serving stacks from TOML profiles per tier mode: render,
//!   start, health and tier checks, stop (`stack`, `health`).
//! - [`harness`]: what sparkhost itself cost (CPU, memory, start-up).
//! - [`devprofile`]: `calibrate-disk`'s O_DIRECT measurement of a disk, the
//!   device profile, and a run's disk bandwidth as a fraction of it.
//! - [`hygiene`]: around a run: the KV reset before it, the warm-up that
//!   primes the tiers, the server's build info, reuse_verify's identity verdict.
//! - [`scaffold`]: `sparkhost new workload`: projects in Rust, JavaScript or
//!   Python from the embedded SDKs, WIT and templates (`templates/workload/`).
//! - [`share`]: components through OCI registries: `push`, `pull`, and
//!   `oci://` references resolved to verified, digest-cached files.

pub mod analysis;
pub mod cli;
pub mod commands;
pub mod devprofile;
pub mod digest;
pub mod dispatch;
pub mod evidence;
pub mod feed;
pub mod harness;
pub mod hygiene;
pub mod limits;
pub mod plan;
pub mod prepare;
pub mod progress;
pub mod report;
pub mod results;
pub mod run;
pub mod sandbox;
pub mod scaffold;
pub mod share;
pub mod signals;
pub mod simulate;
pub mod stack;
pub mod telemetry;
pub mod terminal;
pub mod tokenize;
pub mod truth;
