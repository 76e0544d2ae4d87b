//! The per-run salt that keeps repeated runs on a warm server from
//! inheriting each other's cache hits.
//!
//! A workload that declares [`salt_param`] gets one value for the whole
//! run: every prompt it builds depends on it ([`Salt::mix`] for seeds,
//! [`Salt::doc_id`] for the first line of each document), so requests of one run still
//! share what the workload means them to share, while a second run against
//! the same server (same seed, same params) shares nothing with the first.
//!
//! The value `per-run` (the default where cache-busting matters) asks the
//! host for a fresh value: sparkhost replaces it before `create` with 16 hex
//! digits it draws per run and records in `config.json`, so passing that
//! value back (`--param salt=…`) reproduces the run byte for byte. `off`
//! turns salting off (for replays that must be byte-identical across runs);
//! any other value of 1 to 64 letters, digits, `-` or `_` is used as given.

use crate::{ParamInfo, Params, Result, WorkloadError, param};

/// The param's name; the host looks for it.
pub const SALT_PARAM: &str = "salt";
/// The value that asks the host for a fresh salt per run.
pub const PER_RUN: &str = "per-run";
/// The value that turns salting off.
pub const OFF: &str = "off";
/// Longest salt accepted.
pub const MAX_SALT_BYTES: usize = 64;

/// The `salt` param, with `default` either [`PER_RUN`] or [`OFF`].
pub fn salt_param(default: &str) -> ParamInfo {
    param(
        SALT_PARAM,
        "Per-run salt mixed into every prompt so repeated runs on a warm server share no \
         cache hits: `per-run` (the host draws a fresh value and records it in config.json), \
         `off` (byte-identical across runs), or a value of 1-64 letters, digits, `-`, `_` \
         (reproduces a run that recorded it).",
        default,
    )
}

/// The run's salt: `None` when off.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Salt(Option<String>);

impl Salt {
    pub fn off() -> Self {
        Self(None)
    }

    /// A given salt value (validated as the param is).
    pub fn new(value: &str) -> Result<Self> {
        parse(value)
    }

    pub fn from_params(p: &Params) -> Result<Self> {
        parse(p.get_str(SALT_PARAM)?)
    }

    pub fn value(&self) -> Option<&str> {
        self.0.as_deref()
    }

    /// `seed` with the salt folded in (unchanged when off): the first 8
    /// bytes of `sha256(salt)`, big-endian, XORed into it.
    pub fn mix(&self, seed: u64) -> u64 {
        match &self.0 {
            None => seed,
            Some(s) => {
                let hex = crate::sha256_hex(s);
                seed ^ u64::from_str_radix(&hex[..16], 16).unwrap_or(0)
            }
        }
    }

    /// A document id with the salt in front (unchanged when off). Folding
    /// the salt into a seed alone is not enough: a synthetic document's
    /// first line is its id and the next ones are fixed text, so two
    /// salts would still share a first KV block; the salt in the first
    /// line makes the very first block differ.
    pub fn doc_id(&self, id: &str) -> String {
        match &self.0 {
            None => id.to_string(),
            Some(s) => format!("{s}-{id}"),
        }
    }

    /// The manifest label's value: the salt, or `off`.
    pub fn label_value(&self) -> &str {
        self.0.as_deref().unwrap_or(OFF)
    }
}

fn parse(value: &str) -> Result<Salt> {
    if value == OFF {
        return Ok(Salt(None));
    }
    if value == PER_RUN {
        return Err(WorkloadError::InvalidConfig(format!(
            "parameter `{SALT_PARAM}`: `{PER_RUN}` needs a host that draws a fresh salt per \
             run (sparkhost does); pass `{SALT_PARAM}=off` or a salt value instead"
        )));
    }
    let ok = !value.is_empty()
        && value.len() <= MAX_SALT_BYTES
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !ok {
        return Err(WorkloadError::InvalidConfig(format!(
            "parameter `{SALT_PARAM}`: {value:?} is not valid; expected `{PER_RUN}`, `{OFF}`, \
             or 1 to {MAX_SALT_BYTES} letters, digits, `-` or `_`"
        )));
    }
    Ok(Salt(Some(value.to_string())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(r: Result<Salt>) -> String {
        match r {
            Err(WorkloadError::InvalidConfig(m)) => m,
            other => panic!("expected InvalidConfig, got {other:?}"),
        }
    }

    #[test]
    fn values_off_and_errors() {
        assert_eq!(Salt::new("off").unwrap(), Salt::off());
        assert_eq!(Salt::off().mix(7), 7);
        assert_eq!(Salt::off().label_value(), "off");
        let a = Salt::new("a1b2").unwrap();
        assert_eq!(a.value(), Some("a1b2"));
        assert_ne!(a.mix(7), 7);
        assert_eq!(a.mix(7), Salt::new("a1b2").unwrap().mix(7));
        assert_ne!(a.mix(7), Salt::new("a1b3").unwrap().mix(7));
        assert_eq!(a.doc_id("block-1"), "a1b2-block-1");
        assert_eq!(Salt::off().doc_id("block-1"), "block-1");
        assert!(message(Salt::new("per-run")).contains("draws a fresh salt"));
        for bad in ["", "a b", "é", &"x".repeat(65)] {
            assert!(
                message(Salt::new(bad)).contains("parameter `salt`"),
                "{bad}"
            );
        }
        let p = Params::from_pairs(&[salt_param(PER_RUN)], &[("salt", "abc")]).unwrap();
        assert_eq!(Salt::from_params(&p).unwrap().value(), Some("abc"));
    }
}
