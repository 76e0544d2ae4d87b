//! The reuse a trace's hash ids predict, from `request_manifest.jsonl`.
//!
//! Trace workloads label each request with `hash_ids` (its prompt's block
//! ids, comma-separated decimal u64) and `hash_block_tokens` (tokens per
//! block). A block is reusable when an earlier request of the run had the
//! same ids up to and including it: a KV cache can only reuse a prefix, so
//! the ids are chained (`c₀ = mix(START, h₀)`, `cₖ = mix(cₖ₋₁, hₖ)`, with
//! `mix(a, x) = splitmix64(a ^ x)`), which also keeps right the formats
//! whose ids name a block's content rather than its whole prefix. Counts
//! are per phase and for the run; earlier phases count as earlier requests.
//! This is an upper bound: what the server evicted in between is not
//! reusable, which is what comparing it with the measured cached tokens
//! shows.

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};

/// Block chains remembered before counting stops (the set's memory stays
/// bounded, ~16 bytes each, whatever the manifest's length).
pub const MAX_TRACKED_BLOCKS: usize = 20_000_000;

/// Hash-id block counts of one phase or of the run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default)]
pub struct HashBlockCounts {
    /// Requests that carried hash ids.
    pub requests: u64,
    pub blocks: u64,
    /// Blocks whose whole prefix of ids an earlier request already had.
    pub reusable_blocks: u64,
    /// Requests with at least one reusable block.
    pub requests_with_reuse: u64,
    /// Σ min(reusable blocks × block tokens, the request's prompt tokens).
    pub reusable_tokens: u64,
    /// Σ the prompt tokens of these requests (`prompt_tokens_est`).
    pub prompt_tokens: u64,
    /// `reusable_tokens / prompt_tokens`.
    pub reusable_token_rate: f64,
}

/// What the hash ids predict, for the run and per phase.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default)]
pub struct HashReuse {
    /// Tokens per block, when every request gave the same size.
    pub block_tokens: Option<u64>,
    pub run: HashBlockCounts,
    pub phases: BTreeMap<String, HashBlockCounts>,
    /// Rows whose `hash_ids` or `hash_block_tokens` label did not parse
    /// (left out of the counts).
    pub malformed_rows: u64,
    /// False when more than [`MAX_TRACKED_BLOCKS`] chains were seen and
    /// counting stopped.
    pub complete: bool,
}

#[derive(Debug)]
pub(crate) struct HashReuseCounter {
    seen: HashSet<u64>,
    r: HashReuse,
    any: bool,
    mixed_sizes: bool,
}

impl Default for HashReuseCounter {
    fn default() -> Self {
        Self {
            seen: HashSet::new(),
            r: HashReuse {
                complete: true,
                ..HashReuse::default()
            },
            any: false,
            mixed_sizes: false,
        }
    }
}

const CHAIN_START: u64 = 0x6861_7368_5f69_6473;

fn mix(a: u64, x: u64) -> u64 {
    let mut z = (a ^ x).wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl HashReuseCounter {
    /// One manifest row. Returns whether the row had hash ids, and if so,
    /// whether any block was reusable.
    pub(crate) fn add(
        &mut self,
        phase: &str,
        hash_ids: Option<&str>,
        block_tokens: Option<&str>,
        prompt_tokens: Option<u64>,
    ) -> Option<bool> {
        let ids = hash_ids?;
        self.any = true;
        let parsed = ids
            .split(',')
            .filter(|s| !s.is_empty())
            .map(|s| s.parse::<u64>())
            .collect::<Result<Vec<u64>, _>>();
        let size = block_tokens.map(|b| b.parse::<u64>());
        let (Ok(ids), Some(Ok(size))) = (parsed, size) else {
            self.r.malformed_rows += 1;
            return None;
        };
        match self.r.block_tokens {
            None if !self.mixed_sizes => self.r.block_tokens = Some(size),
            Some(b) if b != size => {
                self.r.block_tokens = None;
                self.mixed_sizes = true;
            }
            _ => {}
        }
        if !self.r.complete {
            return None;
        }
        let mut chain = CHAIN_START;
        let mut reusable = 0u64;
        let mut prefix_alive = true;
        let mut chains = Vec::with_capacity(ids.len());
        for h in &ids {
            chain = mix(chain, *h);
            prefix_alive = prefix_alive && self.seen.contains(&chain);
            reusable += u64::from(prefix_alive);
            chains.push(chain);
        }
        if self.seen.len() + chains.len() > MAX_TRACKED_BLOCKS {
            self.r.complete = false;
            return None;
        }
        self.seen.extend(chains);
        let prompt = prompt_tokens.unwrap_or(ids.len() as u64 * size);
        let tokens = (reusable * size).min(prompt);
        for c in [
            &mut self.r.run,
            self.r.phases.entry(phase.to_owned()).or_default(),
        ] {
            c.requests += 1;
            c.blocks += ids.len() as u64;
            c.reusable_blocks += reusable;
            c.requests_with_reuse += u64::from(reusable > 0);
            c.reusable_tokens += tokens;
            c.prompt_tokens += prompt;
        }
        Some(reusable > 0)
    }

    pub(crate) fn finish(self) -> Option<HashReuse> {
        if !self.any {
            return None;
        }
        let mut r = self.r;
        for c in std::iter::once(&mut r.run).chain(r.phases.values_mut()) {
            c.reusable_token_rate = if c.prompt_tokens > 0 {
                crate::common::round6(c.reusable_tokens as f64 / c.prompt_tokens as f64)
            } else {
                0.0
            };
        }
        Some(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_count_per_phase_and_run() {
        let mut c = HashReuseCounter::default();
        assert_eq!(c.add("a", Some("1,2,3"), Some("16"), Some(48)), Some(false));
        // Shares 1,2; block 4 is new, so 3 after it is not a shared prefix.
        assert_eq!(
            c.add("a", Some("1,2,4,3"), Some("16"), Some(60)),
            Some(true)
        );
        // A block id seen only at another position is no prefix.
        assert_eq!(c.add("b", Some("3,1"), Some("16"), Some(32)), Some(false));
        assert_eq!(c.add("b", Some("1,2,3"), Some("16"), Some(40)), Some(true));
        assert_eq!(c.add("b", None, None, None), None);
        assert_eq!(c.add("b", Some("x"), Some("16"), None), None);
        let r = c.finish().unwrap();
        assert_eq!(r.block_tokens, Some(16));
        assert_eq!(r.malformed_rows, 1);
        assert!(r.complete);
        let a = &r.phases["a"];
        assert_eq!((a.requests, a.blocks, a.reusable_blocks), (2, 7, 2));
        assert_eq!((a.reusable_tokens, a.prompt_tokens), (32, 108));
        let b = &r.phases["b"];
        // 3 blocks reusable but only 40 prompt tokens.
        assert_eq!(
            (b.reusable_blocks, b.reusable_tokens, b.requests_with_reuse),
            (3, 40, 1)
        );
        assert_eq!(r.run.reusable_blocks, 5);
        assert_eq!(r.run.reusable_token_rate, 0.4);
        // 64-bit ids that agree in their low 32 bits stay apart.
        let mut c = HashReuseCounter::default();
        c.add("p", Some("42"), Some("16"), None);
        assert_eq!(
            c.add("p", Some("4294967338"), Some("16"), None),
            Some(false)
        );
        assert_eq!(
            c.add("p", Some("18446744073709551615"), Some("16"), None),
            Some(false)
        );
        assert!(HashReuseCounter::default().finish().is_none());
    }
}
