//! Token arithmetic shared by the host and every workload.
//!
//! Workloads call these through the `host` WIT interface, so a prompt fitted
//! to 2,048 tokens is fitted by the same code whatever language the workload
//! is written in. With a Hugging Face `tokenizer.json` the counts are exact;
//! without one a documented heuristic is used and its id says so.

use std::path::Path;

use crate::digest::sha256_hex;

#[derive(Debug, thiserror::Error)]
pub enum TokenizeError {
    #[error("cannot read tokenizer {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is not a Hugging Face tokenizer.json: {message}")]
    Parse { path: String, message: String },
}

/// Counts and fits text in tokens.
pub enum TokenCounter {
    /// Words (`[A-Za-z0-9_]+`, Unicode-aware) and single punctuation marks,
    /// the seed harness's `\w+|[^\w\s]` rule.
    Heuristic,
    Hf {
        tokenizer: Box<tokenizers::Tokenizer>,
        sha256: String,
    },
}

impl std::fmt::Debug for TokenCounter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.id())
    }
}

pub const HEURISTIC_ID: &str = "heuristic:v1";

impl TokenCounter {
    pub fn from_file(path: &Path) -> Result<Self, TokenizeError> {
        let p = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|source| TokenizeError::Read {
            path: p.clone(),
            source,
        })?;
        let tokenizer =
            tokenizers::Tokenizer::from_bytes(&bytes).map_err(|e| TokenizeError::Parse {
                path: p,
                message: e.to_string(),
            })?;
        Ok(TokenCounter::Hf {
            tokenizer: Box::new(tokenizer),
            sha256: sha256_hex(&bytes),
        })
    }

    /// `heuristic:v1` or `sha256:<hex of tokenizer.json>`.
    pub fn id(&self) -> String {
        match self {
            TokenCounter::Heuristic => HEURISTIC_ID.to_owned(),
            TokenCounter::Hf { sha256, .. } => format!("sha256:{sha256}"),
        }
    }

    pub fn count(&self, text: &str) -> u32 {
        match self {
            TokenCounter::Heuristic => HeuristicSpans::new(text).count() as u32,
            TokenCounter::Hf { .. } => self.token_ends(text).len() as u32,
        }
    }

    /// Byte offsets just past each token of `text`.
    fn token_ends(&self, text: &str) -> Vec<usize> {
        match self {
            TokenCounter::Heuristic => HeuristicSpans::new(text).map(|(_, e)| e).collect(),
            TokenCounter::Hf { tokenizer, .. } => match tokenizer.encode(text, false) {
                Ok(enc) => enc.get_offsets().iter().map(|&(_, e)| e).collect(),
                // Encoding plain text does not fail for loaded tokenizers; count nothing if it does.
                Err(_) => Vec::new(),
            },
        }
    }

    /// `text` cut or extended (with `filler`, space-separated) to `target`
    /// tokens. Exact for the heuristic; for real tokenizers the longest cut
    /// that does not exceed `target` after re-tokenization.
    pub fn fit(&self, text: &str, target: u32, filler: &str) -> String {
        let target = target as usize;
        let filler = if filler.trim().is_empty() {
            "lorem"
        } else {
            filler
        };
        if matches!(self, TokenCounter::Heuristic) {
            return fit_heuristic(text, target, filler);
        }
        let mut candidate = text.to_owned();
        let mut ends = self.token_ends(&candidate);
        if ends.len() < target {
            let per = self.count(filler).max(1) as usize;
            let reps = (target - ends.len()).div_ceil(per) + 1;
            for _ in 0..reps {
                if !candidate.is_empty() && !candidate.ends_with(char::is_whitespace) {
                    candidate.push(' ');
                }
                candidate.push_str(filler);
            }
            ends = self.token_ends(&candidate);
        }
        if ends.len() <= target {
            return candidate;
        }
        let cut_at = |k: usize| -> String {
            if k == 0 {
                return String::new();
            }
            let mut e = ends[k - 1].min(candidate.len());
            while !candidate.is_char_boundary(e) {
                e += 1;
            }
            candidate[..e].to_owned()
        };
        // Re-tokenizing a cut can merge or split tokens; search for the longest
        // prefix whose own count is within the target.
        let (mut lo, mut hi) = (0usize, target);
        let mut best = String::new();
        while lo <= hi {
            let mid = (lo + hi) / 2;
            let s = cut_at(mid);
            if self.count(&s) as usize <= target {
                best = s;
                lo = mid + 1;
            } else if mid == 0 {
                break;
            } else {
                hi = mid - 1;
            }
        }
        best
    }
}

fn is_word(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// [`TokenCounter::fit`] for the heuristic, whose tokens are independent
/// spans: a cut after token k has exactly k tokens, so the text is scanned
/// only as far as token `target + 1`, and no search is needed.
fn fit_heuristic(text: &str, target: usize, filler: &str) -> String {
    // The end of token `target` when the text has more than `target` tokens.
    let cut = |t: &str| -> Option<usize> {
        let mut end = 0;
        for (n, (_, e)) in HeuristicSpans::new(t).enumerate() {
            if n == target {
                return Some(end);
            }
            end = e;
        }
        None
    };
    if let Some(e) = cut(text) {
        return text[..e].to_owned();
    }
    let have = HeuristicSpans::new(text).count();
    if have == target {
        return text.to_owned();
    }
    let per = HeuristicSpans::new(filler).count().max(1);
    let reps = (target - have).div_ceil(per) + 1;
    let mut candidate = String::with_capacity(text.len() + reps * (filler.len() + 1));
    candidate.push_str(text);
    for _ in 0..reps {
        if !candidate.is_empty() && !candidate.ends_with(char::is_whitespace) {
            candidate.push(' ');
        }
        candidate.push_str(filler);
    }
    match cut(&candidate) {
        Some(e) => candidate[..e].to_owned(),
        None => candidate,
    }
}

/// The heuristic's tokens, lazily: a word (alphanumerics and `_`) or any
/// other non-space character. Lazy so that counting allocates nothing and a
/// fit stops scanning at its target.
struct HeuristicSpans<'a> {
    len: usize,
    chars: std::str::CharIndices<'a>,
    /// A punctuation token that ended the word just returned.
    pending: Option<(usize, usize)>,
}

impl<'a> HeuristicSpans<'a> {
    fn new(text: &'a str) -> Self {
        HeuristicSpans {
            len: text.len(),
            chars: text.char_indices(),
            pending: None,
        }
    }
}

impl Iterator for HeuristicSpans<'_> {
    type Item = (usize, usize);

    fn next(&mut self) -> Option<(usize, usize)> {
        if let Some(p) = self.pending.take() {
            return Some(p);
        }
        let mut word_start: Option<usize> = None;
        loop {
            let Some((i, c)) = self.chars.next() else {
                return word_start.map(|s| (s, self.len));
            };
            if is_word(c) {
                word_start.get_or_insert(i);
                continue;
            }
            let own = (!c.is_whitespace()).then(|| (i, i + c.len_utf8()));
            if let Some(s) = word_start {
                self.pending = own;
                return Some((s, i));
            }
            if own.is_some() {
                return own;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heuristic_counts_words_and_punctuation() {
        let t = TokenCounter::Heuristic;
        assert_eq!(t.count("Hello, world! it's 2026."), 9);
        assert_eq!(t.count("  "), 0);
        assert_eq!(t.count("naïve_café"), 1);
        assert_eq!(t.id(), "heuristic:v1");
    }

    #[test]
    fn heuristic_fit_is_exact_both_ways() {
        let t = TokenCounter::Heuristic;
        let text = "one two, three four.";
        for target in 0..40 {
            let f = t.fit(text, target, "pad words here");
            assert_eq!(t.count(&f), target, "target {target}: {f:?}");
        }
        assert_eq!(t.fit(text, 3, "x"), "one two,");
        assert_eq!(t.fit("a", 3, "b"), "a b b");
    }

    /// The eager definition the lazy spans replaced, kept as the reference.
    fn reference_spans(text: &str) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        let mut word_start: Option<usize> = None;
        for (i, c) in text.char_indices() {
            if is_word(c) {
                word_start.get_or_insert(i);
                continue;
            }
            if let Some(s) = word_start.take() {
                out.push((s, i));
            }
            if !c.is_whitespace() {
                out.push((i, i + c.len_utf8()));
            }
        }
        if let Some(s) = word_start {
            out.push((s, text.len()));
        }
        out
    }

    #[test]
    fn lazy_spans_match_the_reference_and_fit_is_exact() {
        let alphabet = [
            'a', 'Z', '9', '_', ' ', '\n', ',', '.', '!', 'é', '日', '🙂', '\'',
        ];
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let t = TokenCounter::Heuristic;
        for _ in 0..2000 {
            let len = (state % 24) as usize;
            let text: String = (0..len)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    alphabet[(state % alphabet.len() as u64) as usize]
                })
                .collect();
            let want = reference_spans(&text);
            assert_eq!(
                HeuristicSpans::new(&text).collect::<Vec<_>>(),
                want,
                "{text:?}"
            );
            let target = (state % 12) as u32;
            let fitted = t.fit(&text, target, "x, y");
            assert_eq!(t.count(&fitted), target, "{text:?} → {fitted:?}");
            assert!(fitted.starts_with(text.trim_end()) || text.starts_with(&fitted));
        }
    }

    #[test]
    fn fit_is_deterministic() {
        let t = TokenCounter::Heuristic;
        assert_eq!(
            t.fit("alpha beta", 100, "gamma."),
            t.fit("alpha beta", 100, "gamma.")
        );
    }

    #[test]
    fn bad_tokenizer_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("tokenizer.json");
        std::fs::write(&p, "{}").unwrap();
        let e = TokenCounter::from_file(&p).unwrap_err().to_string();
        assert!(e.contains("is not a Hugging Face tokenizer.json"), "{e}");
        let missing = TokenCounter::from_file(&dir.path().join("nope.json")).unwrap_err();
        assert!(missing.to_string().starts_with("cannot read tokenizer"));
    }
}
