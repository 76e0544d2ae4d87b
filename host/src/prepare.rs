//! What is known about a request once the feed has prepared it: its identity
//! hashes and the rest of its `request_manifest.jsonl` row.
//!
//! These sit on the plan side, below both [`crate::dispatch`] (which carries
//! them with each request) and [`crate::results`] (which writes them out), so
//! neither layer has to reach into the other for them.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::digest::{sha256_hex, sha256_json};
use crate::plan::{Api, Arrival, Generation};

/// The four hashes recorded for every request.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, schemars::JsonSchema)]
pub struct RequestIdentity {
    pub prompt_sha256: String,
    pub generation_params_sha256: String,
    /// Over {model, prompt_sha256, params}: equal for requests the server should treat as identical.
    pub request_identity_sha256: String,
    /// Over the exact payload sent.
    pub request_payload_sha256: String,
}

impl RequestIdentity {
    pub fn compute(model: &str, prompt_bytes: &[u8], params: &Value, payload: &Value) -> Self {
        let prompt_sha256 = sha256_hex(prompt_bytes);
        let identity = serde_json::json!({
            "model": model,
            "prompt_sha256": prompt_sha256,
            "params": params,
        });
        RequestIdentity {
            generation_params_sha256: sha256_json(params),
            request_identity_sha256: sha256_json(&identity),
            request_payload_sha256: sha256_json(payload),
            prompt_sha256,
        }
    }
}

/// Everything known about a request when it is planned: one row of
/// `request_manifest.jsonl`, and the head of its `requests.jsonl` row. Field
/// names follow the seed harness where it had them.
/// One line of `request_manifest.jsonl`.
#[derive(Debug, Clone, serde::Serialize, schemars::JsonSchema)]
pub struct RequestMeta {
    /// Run-wide index in planning order (the seed's `request_index`).
    pub request_index: u64,
    pub phase: String,
    /// 1-based position within the phase.
    pub phase_request_index: u64,
    /// The workload's request id (the seed's `prompt_id`).
    #[serde(rename = "prompt_id")]
    pub id: String,
    pub prompt_set: Option<String>,
    pub prompt_target_tokens: Option<u32>,
    pub prompt_tokens_est: u32,
    pub prompt_chars: usize,
    #[serde(flatten)]
    pub identity: RequestIdentity,
    pub generation_params: Generation,
    pub api: Api,
    pub stream: bool,
    pub arrival: Arrival,
    pub prefix_hash: Option<String>,
    pub session_id: Option<String>,
    /// The workload's free labels.
    pub prompt_metadata: BTreeMap<String, String>,
    /// Planned only after the run had started (session follow-ups).
    pub planned_after_start: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_ignores_key_order_but_not_values() {
        let p1 = serde_json::json!({"max_tokens": 8, "temperature": 0.0});
        let p2: Value = serde_json::from_str(r#"{"temperature":0.0,"max_tokens":8}"#).unwrap();
        let a = RequestIdentity::compute("m", b"hi", &p1, &p1);
        let b = RequestIdentity::compute("m", b"hi", &p2, &p2);
        assert_eq!(a, b);
        let c = RequestIdentity::compute("m", b"hi!", &p1, &p1);
        assert_ne!(a.request_identity_sha256, c.request_identity_sha256);
    }
}
