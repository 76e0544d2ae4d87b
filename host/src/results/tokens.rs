//! Tokens, not chunks: turns chunk arrival times into per-token timings.
//!
//! A chunk carrying k tokens counts k tokens. Counts come from the server's
//! `usage` when it agrees with the chunks (one token each), otherwise from the
//! host tokenizer, rescaled to the server's total when the server gave one.

use std::time::Instant;

use serde::Serialize;

use crate::dispatch::client::ChunkMark;

/// Where the per-chunk token counts came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
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
    let mut itl_ns = Vec::new();
    token_gaps(
        chunks.iter().map(|c| c.at).zip(counts.iter().copied()),
        &mut itl_ns,
    );
    let mut with_tokens = chunks.iter().zip(counts).filter(|&(_, &k)| k > 0);
    let first = with_tokens.next();
    let last = with_tokens.next_back().or(first);
    let tokens: u32 = counts.iter().take(chunks.len()).sum();
    let tpot_ns = match (first, last) {
        (Some((f, _)), Some((l, _))) if tokens > 1 => {
            Some(l.at.duration_since(f.at).as_nanos() as u64 / u64::from(tokens - 1))
        }
        _ => None,
    };
    TokenTimes {
        tokens,
        itl_ns,
        tpot_ns,
    }
}

/// A point on a response's timeline, in whatever unit the caller keeps.
pub trait TokenClock: Copy {
    type Gap: Copy;
    const NO_GAP: Self::Gap;
    /// Time from `earlier` to `self`, shared evenly by `tokens` tokens.
    fn per_token_since(self, earlier: Self, tokens: u32) -> Self::Gap;
}

/// Live, while recording: arrival instants, gaps in nanoseconds.
impl TokenClock for Instant {
    type Gap = u64;
    const NO_GAP: u64 = 0;
    fn per_token_since(self, earlier: Self, tokens: u32) -> u64 {
        self.duration_since(earlier).as_nanos() as u64 / u64::from(tokens)
    }
}

/// Read back from `requests.jsonl`: chunk offsets and gaps in milliseconds.
impl TokenClock for f64 {
    type Gap = f64;
    const NO_GAP: f64 = 0.0;
    fn per_token_since(self, earlier: Self, tokens: u32) -> f64 {
        (self - earlier) / f64::from(tokens)
    }
}

/// The per-token ITL rule, the only copy on the host: extra tokens of the
/// first chunk arrive with it (gap 0); a later chunk of k tokens gives k
/// gaps of (its time − the previous chunk's time) / k; chunks without
/// tokens are skipped. Appends one gap per token after the first to `out`.
pub fn token_gaps<T: TokenClock>(
    chunks: impl IntoIterator<Item = (T, u32)>,
    out: &mut Vec<T::Gap>,
) {
    let mut prev: Option<T> = None;
    for (at, k) in chunks {
        if k == 0 {
            continue;
        }
        match prev {
            None => out.extend(std::iter::repeat_n(T::NO_GAP, k as usize - 1)),
            Some(p) => out.extend(std::iter::repeat_n(at.per_token_since(p, k), k as usize)),
        }
        prev = Some(at);
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
    fn live_and_read_back_timelines_follow_one_rule() {
        let b = Instant::now();
        let at = [5, 15, 15, 45];
        let counts = [2, 1, 0, 3];
        let live = marks(b, &at, &[1, 2, 2, 3]);
        let t = token_times(&live, &counts);
        let mut read_back = Vec::new();
        token_gaps(
            at.map(|ms| ms as f64).into_iter().zip(counts),
            &mut read_back,
        );
        assert_eq!(read_back, vec![0.0, 10.0, 10.0, 10.0, 10.0]);
        let live_ms: Vec<f64> = t.itl_ns.iter().map(|&n| n as f64 / 1e6).collect();
        assert_eq!(live_ms, read_back);
        assert_eq!(t.tokens, 6);
        assert_eq!(t.tpot_ns, Some(8_000_000));
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
