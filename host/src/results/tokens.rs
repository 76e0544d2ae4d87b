//! Tokens, not chunks: turns chunk arrival times into per-token timings.
//!
//! A chunk carrying k tokens counts k tokens. Counts come from the server's
//! `usage` when it agrees with the chunks (one token each), otherwise from the
//! host tokenizer, rescaled to the server's total when the server gave one.

use std::time::Instant;

use serde::Serialize;

use crate::dispatch::client::ChunkMark;

/// Where the per-chunk token counts came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenSource {
    /// `usage.completion_tokens` equals the number of content chunks.
    Usage,
    /// Host tokenizer counts rescaled to `usage.completion_tokens`.
    UsageTokenizer,
    /// Host tokenizer (or heuristic) alone: the server gave no usage.
    Tokenizer,
    /// Nothing was generated.
    None,
}

/// Tokens per chunk, in chunk order.
pub fn tokens_per_chunk(
    chunks: &[ChunkMark],
    text: &str,
    usage_completion: Option<u32>,
    count: &dyn Fn(&str) -> u32,
) -> (Vec<u32>, TokenSource) {
    if chunks.is_empty() {
        return (Vec::new(), TokenSource::None);
    }
    if usage_completion == Some(chunks.len() as u32) {
        return (vec![1; chunks.len()], TokenSource::Usage);
    }
    let mut start = 0usize;
    let counted: Vec<u32> = chunks
        .iter()
        .map(|c| {
            let end = c.text_end as usize;
            let piece = text.get(start..end).unwrap_or("");
            start = end;
            // A chunk with text carries at least one token's worth of output.
            count(piece).max(1)
        })
        .collect();
    match usage_completion {
        Some(total) if total > 0 => (rescale(&counted, total), TokenSource::UsageTokenizer),
        _ => (counted, TokenSource::Tokenizer),
    }
}

/// Largest-remainder rescaling so the counts sum exactly to `total`.
fn rescale(counts: &[u32], total: u32) -> Vec<u32> {
    let sum: u64 = counts.iter().map(|&c| u64::from(c)).sum();
    let mut out: Vec<u32> = Vec::with_capacity(counts.len());
    let mut rema: Vec<(u64, usize)> = Vec::with_capacity(counts.len());
    let mut assigned = 0u64;
    for (i, &c) in counts.iter().enumerate() {
        let exact = u64::from(c) * u64::from(total);
        out.push((exact / sum) as u32);
        assigned += exact / sum;
        rema.push((exact % sum, i));
    }
    // Ties go to earlier chunks so the result is deterministic.
    rema.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    for &(_, i) in rema.iter().take((u64::from(total) - assigned) as usize) {
        out[i] += 1;
    }
    out
}

/// Per-token timings of one response.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenTimes {
    pub tokens: u32,
    /// One inter-token latency per token after the first, in nanoseconds.
    pub itl_ns: Vec<u64>,
    /// Mean time per output token after the first.
    pub tpot_ns: Option<u64>,
}

pub fn token_times(chunks: &[ChunkMark], counts: &[u32]) -> TokenTimes {
    let mut itl = Vec::new();
    let mut prev: Option<Instant> = None;
    let mut first: Option<Instant> = None;
    let mut last: Option<Instant> = None;
    let mut tokens = 0u32;
    for (c, &k) in chunks.iter().zip(counts) {
        if k == 0 {
            continue;
        }
        tokens += k;
        match prev {
            // Tokens beyond the first in the first chunk arrived together with it.
            None => itl.extend(std::iter::repeat_n(0, k as usize - 1)),
            Some(p) => {
                let each = c.at.duration_since(p).as_nanos() as u64 / u64::from(k);
                itl.extend(std::iter::repeat_n(each, k as usize));
            }
        }
        first.get_or_insert(c.at);
        last = Some(c.at);
        prev = Some(c.at);
    }
    let tpot_ns = match (first, last) {
        (Some(f), Some(l)) if tokens > 1 => {
            Some(l.duration_since(f).as_nanos() as u64 / u64::from(tokens - 1))
        }
        _ => None,
    };
    TokenTimes {
        tokens,
        itl_ns: itl,
        tpot_ns,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn marks(base: Instant, at_ms: &[u64], text_ends: &[u32]) -> Vec<ChunkMark> {
        at_ms
            .iter()
            .zip(text_ends)
            .map(|(&ms, &e)| ChunkMark {
                at: base + Duration::from_millis(ms),
                text_end: e,
                read_delay_us: None,
                shared_read: false,
            })
            .collect()
    }

    fn words(s: &str) -> u32 {
        s.split_whitespace().count() as u32
    }

    #[test]
    fn usage_matching_chunk_count_means_one_token_each() {
        let b = Instant::now();
        let c = marks(b, &[0, 10, 20], &[2, 4, 6]);
        let (k, src) = tokens_per_chunk(&c, " a b c", Some(3), &words);
        assert_eq!((k, src), (vec![1, 1, 1], TokenSource::Usage));
    }

    #[test]
    fn a_chunk_with_k_tokens_yields_k_itl_samples() {
        let b = Instant::now();
        // 1 token at 0 ms, then 3 tokens in one chunk at 30 ms, 1 token at 40 ms.
        let c = marks(b, &[0, 30, 40], &[2, 8, 10]);
        let text = " a b c d e";
        let (k, src) = tokens_per_chunk(&c, text, Some(5), &words);
        assert_eq!(
            (k.clone(), src),
            (vec![1, 3, 1], TokenSource::UsageTokenizer)
        );
        let t = token_times(&c, &k);
        assert_eq!(t.tokens, 5);
        let ms: Vec<u64> = t.itl_ns.iter().map(|n| n / 1_000_000).collect();
        assert_eq!(ms, vec![10, 10, 10, 10]);
        assert_eq!(t.tpot_ns, Some(10_000_000));
    }

    #[test]
    fn extra_tokens_in_the_first_chunk_arrive_with_it() {
        let b = Instant::now();
        let c = marks(b, &[5, 15], &[4, 6]);
        let (k, _) = tokens_per_chunk(&c, " a b c", None, &words);
        assert_eq!(k, vec![2, 1]);
        let t = token_times(&c, &k);
        assert_eq!(t.itl_ns, vec![0, 10_000_000]);
        assert_eq!(t.tpot_ns, Some(5_000_000));
    }

    #[test]
    fn rescaling_hits_the_server_total_exactly() {
        assert_eq!(rescale(&[1, 1, 1], 4), vec![2, 1, 1]);
        assert_eq!(rescale(&[2, 2, 4], 4), vec![1, 1, 2]);
        assert_eq!(rescale(&[1, 1, 1, 1], 2).iter().sum::<u32>(), 2);
        assert_eq!(rescale(&[3], 7), vec![7]);
    }

    #[test]
    fn no_chunks_no_tokens() {
        let (k, src) = tokens_per_chunk(&[], "", Some(0), &words);
        assert!(k.is_empty());
        assert_eq!(src, TokenSource::None);
        let t = token_times(&[], &[]);
        assert_eq!((t.tokens, t.tpot_ns), (0, None));
    }
}
