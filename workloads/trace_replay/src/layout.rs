//! Block layout: which block size the trace was recorded with, whether
//! each record's hash ids agree with it, and re-cutting the blocks when the
//! run asks for another size.
//!
//! A hash id names one block of the trace's block size `T`; record `r`'s
//! block `i` covers prompt tokens `[i·T, min((i+1)·T, input_length))`.
//! Mooncake hashes every block, the last one partial
//! (`ceil(input_length / T)` ids); Dynamo and WEKA may leave a partial last
//! block unhashed (`floor`), whose tokens are then the request's own.

use sparkhost_workload::{Result, SplitMix64};

use crate::formats::{Format, Record, invalid};

/// Checks that `r` has the number of hash ids its input length needs at
/// block size `t`; the error names the record, the sizes its ids would fit,
/// and `t` with where it came from.
pub fn check_count(r: &Record, format: Format, t: u32, t_from: &str) -> Result<()> {
    let n = r.hash_ids.len() as u64;
    let len = u64::from(r.input_length);
    let t64 = u64::from(t);
    let ceil = len.div_ceil(t64);
    let ok = n == ceil || (format != Format::Mooncake && n == len / t64);
    if ok {
        return Ok(());
    }
    let fits = match n {
        0 => "no block size".to_string(),
        1 => format!("a block size of {len} or more"),
        _ => {
            let lo = len.div_ceil(n);
            let hi = (len - 1) / (n - 1);
            if lo > hi {
                "no block size".to_string()
            } else if lo == hi {
                format!("a block size of {lo}")
            } else {
                format!("a block size from {lo} to {hi}")
            }
        }
    };
    Err(invalid(format!(
        "trace {}: input_length {len} with {n} hash ids fits {fits}, not {t} ({t_from}); set \
         `trace-block-size` to the size the trace was recorded with",
        r.source
    )))
}

/// The chained id of a re-cut block, from the previous one and the pieces
/// of recorded blocks it covers: `acc = mix(acc, h)`, `acc = mix(acc,
/// lo << 32 | hi)` per piece (offsets within the recorded block), where
/// `mix(a, x) = SplitMix64(a ^ x).next_u64()`. Chaining makes an id stand
/// for its whole prefix, as the recorded ids do.
fn mix(acc: u64, x: u64) -> u64 {
    SplitMix64::new(acc ^ x).next_u64()
}

/// The first block's chain seed.
const CHAIN_START: u64 = 0x5eed_b10c_0000_0000;

/// `ids` (recorded at block size `t`) re-cut into blocks of `b` tokens.
/// Only whole new blocks inside the hashed part of the prompt get an id;
/// the rest of the prompt is the request's own.
pub fn reblock(ids: &[u64], input_length: u32, t: u32, b: u32) -> Vec<u64> {
    let (t, b) = (u64::from(t), u64::from(b));
    let covered = (ids.len() as u64 * t).min(u64::from(input_length));
    let mut out = Vec::with_capacity((covered / b) as usize);
    let mut acc = CHAIN_START;
    for j in 0..covered / b {
        let (start, end) = (j * b, (j + 1) * b);
        for i in start / t..end.div_ceil(t) {
            let lo = start.max(i * t) - i * t;
            let hi = end.min((i + 1) * t) - i * t;
            acc = mix(acc, ids[i as usize]);
            acc = mix(acc, (lo << 32) | hi);
        }
        out.push(acc);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use sparkhost_workload::WorkloadError;

    fn rec(len: u32, n: usize) -> Record {
        Record {
            source: "line 4".into(),
            session: None,
            arrival_ms: 0.0,
            input_length: len,
            output_length: 1,
            hash_ids: (0..n as u64).collect(),
        }
    }

    fn message(r: Result<()>) -> String {
        match r {
            Err(WorkloadError::InvalidConfig(m)) => m,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn counts_name_both_block_sizes() {
        assert!(check_count(&rec(700, 2), Format::Mooncake, 512, "").is_ok());
        assert!(check_count(&rec(700, 1), Format::Mooncake, 512, "").is_err());
        assert!(
            check_count(&rec(700, 1), Format::Dynamo, 512, "").is_ok(),
            "floor"
        );
        let m = message(check_count(
            &rec(700, 44),
            Format::Mooncake,
            512,
            "the default",
        ));
        assert!(
            m.contains("trace line 4: input_length 700 with 44 hash ids fits a block size of 16")
                && m.contains("not 512 (the default)"),
            "{m}"
        );
        let m = message(check_count(&rec(100, 5), Format::Mooncake, 64, "x"));
        assert!(m.contains("from 20 to 24"), "{m}");
    }

    #[test]
    fn reblocking_keeps_sharing_exact() {
        // Finer blocks: shared recorded blocks give equal new ids, the
        // first differing recorded block changes every id from there on.
        let a = reblock(&[7, 8, 9], 96, 32, 16);
        let b = reblock(&[7, 8, 10], 96, 32, 16);
        assert_eq!(a.len(), 6);
        assert_eq!(a[..4], b[..4]);
        assert!(a[4..].iter().zip(&b[4..]).all(|(x, y)| x != y));
        // Coarser blocks: a new block is shared only when all it covers is.
        let c = reblock(&[7, 8, 9], 96, 32, 64);
        let d = reblock(&[7, 8, 10], 96, 32, 64);
        assert_eq!(c.len(), 1, "the last 32 tokens are not a whole block");
        assert_eq!(c, d);
        let e = reblock(&[7, 11, 9], 96, 32, 64);
        assert_ne!(c, e);
        // A partial last recorded block still counts only up to input_length.
        assert_eq!(reblock(&[1, 2], 40, 32, 16).len(), 2);
        // Same size: ids are re-derived but share exactly as the recorded ones.
        let f = reblock(&[1, 2, 3], 96, 32, 32);
        let g = reblock(&[1, 2, 4], 96, 32, 32);
        assert_eq!(f[..2], g[..2]);
        assert_ne!(f[2], g[2]);
    }
}
