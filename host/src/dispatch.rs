//! Timing-accurate HTTP dispatch: no wasmtime here.
//!
//! Layout:
//! - [`sse`]: incremental Server-Sent Events parser.
//! - [`openai`]: payloads, streamed chunks, error bodies.
//! - [`client`]: one request, every timestamp, failures as data.
//! - [`h1`]: HTTP/1.1 on pooled connections, read by the request's own task.
//! - [`pacer`]: open-loop arrival schedules as pure functions.
//! - [`runner`]: phases, slots, sessions and arrival times; feeds the recorder.
//! - [`models`]: `/v1/models` discovery and readiness.
//! - [`timer`]: sub-millisecond sleeps without spinning.
//! - [`stamp`]: kernel receive timestamps of socket reads.

pub mod client;
pub mod h1;
pub mod models;
pub mod openai;
pub mod pacer;
pub mod runner;
pub mod sse;
pub mod stamp;
pub mod timer;

use std::sync::Arc;

use bytes::Bytes;
use serde::Serialize;

use crate::plan::{Api, Arrival};
use crate::results::records::RequestMeta;

/// Why a request failed; the stable names appear in `requests.jsonl` and summaries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// Nothing listens on the endpoint's port.
    ConnectRefused,
    /// Any other failure to connect (DNS, unreachable, connect timeout).
    Connect,
    /// The request timeout passed before the response was complete.
    Timeout,
    /// The connection broke after the request was sent.
    ConnectionReset,
    Http429,
    Http4xx,
    Http5xx,
    /// The server reported an error inside a 200 stream.
    StreamError,
    /// Bytes that are not valid SSE or not the expected JSON.
    #[serde(rename = "malformed_response")]
    Malformed,
    /// A stream that ended without `[DONE]`.
    #[serde(rename = "incomplete_stream")]
    Incomplete,
    /// The server refused a prompt longer than its engine allows.
    #[serde(rename = "engine_prompt_limit_exceeded")]
    PromptLimit,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::ConnectRefused => "connect_refused",
            ErrorKind::Connect => "connect",
            ErrorKind::Timeout => "timeout",
            ErrorKind::ConnectionReset => "connection_reset",
            ErrorKind::Http429 => "http_429",
            ErrorKind::Http4xx => "http_4xx",
            ErrorKind::Http5xx => "http_5xx",
            ErrorKind::StreamError => "stream_error",
            ErrorKind::Malformed => "malformed_response",
            ErrorKind::Incomplete => "incomplete_stream",
            ErrorKind::PromptLimit => "engine_prompt_limit_exceeded",
        }
    }
}

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
