//! sparkhost: timing-accurate benchmarks of OpenAI-compatible LLM serving
//! endpoints, with workloads as sandboxed WebAssembly components.
//!
//! Layout:
//! - [`cli`]: clap flags, nothing else.
//! - [`commands`]: `run`, `inspect`, `wait-ready`, `smoke`.
//! - [`plan`]: the host's model of a workload plan (phases, requests, arrivals).
//! - [`sandbox`]: wasmtime engine, limits, compile cache, WIT version check.
//! - [`feed`]: drives a planner on its own thread, ahead of the dispatcher.
//! - [`dispatch`]: HTTP/SSE, pacing and timestamps; free of wasmtime.
//! - [`results`]: records, summaries, histograms and the run directory.
//! - [`evidence`]: run validity and its reasons.
//! - [`tokenize`]: token counting and fitting shared with workloads.

pub mod cli;
pub mod commands;
pub mod dispatch;
pub mod evidence;
pub mod feed;
pub mod plan;
pub mod results;
pub mod sandbox;
pub mod tokenize;
