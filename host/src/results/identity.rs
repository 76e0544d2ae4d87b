//! Request identity: sha256 over canonical JSON (sorted keys, compact
//! separators, non-ASCII kept), the same rule as the seed harness so hashes
//! of identical requests match across both tools.

use serde_json::Value;
use sha2::{Digest, Sha256};

/// Compact JSON with object keys sorted (serde_json's map is ordered by key).
pub fn canonical_json(v: &Value) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

pub fn sha256_json(v: &Value) -> String {
    sha256_hex(canonical_json(v).as_bytes())
}

/// The four hashes recorded for every request.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_form_sorts_keys_and_keeps_unicode() {
        let v = serde_json::json!({"b": 1, "a": {"d": "é", "c": [1, 2]}});
        assert_eq!(canonical_json(&v), r#"{"a":{"c":[1,2],"d":"é"},"b":1}"#);
    }

    #[test]
    fn sha256_matches_a_known_vector() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

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
