//! Timing-accurate HTTP dispatch: no wasmtime here.
//!
//! Layout:
//! - [`sse`]: incremental Server-Sent Events parser.
//! - [`openai`]: payloads, streamed chunks, error bodies.
//! - [`client`]: one request, every timestamp, failures as data.
//! - [`h1`]: HTTP/1.1 (and TLS) on pooled connections, read by the request's own task.
//! - [`access`]: extra headers (API key) and TLS trust, shared by both clients.
//! - [`untimed`]: the reqwest client for what is not timed (discovery, probes).
//! - [`pacer`]: open-loop arrival schedules as pure functions.
//! - [`queue`]: the pacing decision (slots, arrivals, sessions) as a pure state machine.
//! - [`runner`]: the scheduler task: executes the queue's decisions, feeds the recorder.
//! - [`models`]: `/v1/models` discovery and readiness, failing fast on 401/403/404.
//! - [`timer`]: sub-millisecond sleeps without spinning.
//! - [`stamp`]: kernel receive timestamps of socket reads.

pub mod access;
pub mod client;
pub mod h1;
pub mod models;
pub mod openai;
pub mod pacer;
pub mod queue;
pub mod runner;
pub mod sse;
pub mod stamp;
pub mod timer;
pub mod untimed;

use std::sync::Arc;

use bytes::Bytes;

use crate::plan::{Api, Arrival};
use crate::prepare::RequestMeta;

/// A request ready to go: payload serialized, identity computed, prompt dropped.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// Run-wide sequence number in planning order.
    pub seq: u64,
    pub api: Api,
    pub stream: bool,
    pub body: Bytes,
    pub arrival: Arrival,
    pub meta: Arc<RequestMeta>,
}
