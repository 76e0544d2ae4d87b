//! The row type of `requests.jsonl` (finished requests; the planned ones'
//! [`RequestMeta`] heads it). Field names follow the seed harness where it
//! had them, so existing scripts keep working; everything new is additive.

use serde::Serialize;

use super::tokens::TokenSource;
use crate::dispatch::openai::Usage;
use crate::plan::ErrorKind;
use crate::prepare::RequestMeta;

/// One line of `requests.jsonl`. Times are milliseconds; `*_offset_ms` are
/// from the run's start, the others from the actual send unless named
/// `*_from_intended_ms`.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct RequestRow<'a> {
    #[serde(flatten)]
    pub meta: &'a RequestMeta,
    pub start_ts: String,
    pub end_ts: String,
    pub intended_offset_ms: f64,
    pub sent_offset_ms: f64,
    /// Actual minus intended send time: the harness's own scheduling error.
    pub schedule_lateness_ms: f64,
    pub headers_ms: Option<f64>,
    pub first_byte_ms: Option<f64>,
    /// First SSE event with data.
    pub ttfc_ms: Option<f64>,
    /// First generated text; null for unary requests (not measurable).
    pub ttft_ms: Option<f64>,
    pub ttft_from_intended_ms: Option<f64>,
    /// End-to-end from the actual send (the seed's `latency_ms`).
    pub latency_ms: f64,
    pub latency_from_intended_ms: f64,
    pub tpot_ms: Option<f64>,
    pub itl_mean_ms: Option<f64>,
    pub itl_max_ms: Option<f64>,
    /// Arrival of each content chunk, ms from the actual send.
    pub chunk_offsets_ms: Vec<f64>,
    /// Most any chunk's parser time trailed its kernel arrival; null when
    /// arrivals were timed by the parser.
    pub read_path_delay_max_ms: Option<f64>,
    /// Chunks stamped with a later chunk's arrival because one read held both.
    pub chunks_sharing_a_read: u32,
    pub chunk_tokens: Vec<u32>,
    pub token_source: TokenSource,
    pub status_code: u16,
    pub ok: bool,
    pub error_kind: Option<ErrorKind>,
    pub error: Option<String>,
    pub request_id: Option<String>,
    pub response_id: Option<String>,
    pub finish_reason: Option<String>,
    pub done_seen: bool,
    pub usage: Option<Usage>,
    pub prompt_tokens: Option<u32>,
    pub output_tokens: Option<u32>,
    pub cached_tokens: Option<u32>,
    pub output_len_chars: usize,
    /// Tokens counted by the host (the seed's estimate, now tokenizer-backed).
    pub output_tokens_est: u32,
    pub max_tokens_effective: u32,
    /// With `--store-responses`: the response's text file, relative to the
    /// run directory (the seed's field); null otherwise, or when the store's
    /// bounds left it out.
    pub response_path: Option<String>,
}
