//! Canonical JSON and sha256, the seed harness's rule (sorted keys, compact
//! separators, non-ASCII kept), so hashes of identical requests match across
//! both tools. A leaf: everything that hashes depends on this, it on nothing.

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
}
