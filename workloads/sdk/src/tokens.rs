//! Token counting and fitting behind a trait, so planning logic can be unit
//! tested natively.
//!
//! Inside a component, [`HostTokenizer`] forwards to the host's imports (the
//! run's `--tokenizer` or the host's documented heuristic). Native tests have
//! no host, so they plan with [`WordTokenizer`] instead, which counts
//! whitespace-separated words; it is a test double, not a model of any real
//! tokenizer.

use crate::host;

/// Counts and fits text to token budgets.
pub trait Tokenizer {
    /// Number of tokens in `text`, without special tokens.
    fn count(&self, text: &str) -> u32;

    /// `text` cut or extended (by repeating `filler`) to exactly `target`
    /// tokens where the tokenizer allows it. Cutting keeps a prefix of
    /// `text`; extending keeps all of `text` and appends.
    fn fit(&self, text: &str, target: u32, filler: &str) -> String;
}

/// The host's tokenizer; only works inside a component.
#[derive(Debug, Clone, Copy, Default)]
pub struct HostTokenizer;

impl Tokenizer for HostTokenizer {
    fn count(&self, text: &str) -> u32 {
        host::count_tokens(text)
    }

    fn fit(&self, text: &str, target: u32, filler: &str) -> String {
        host::fit_to_tokens(text, target, filler)
    }
}

/// A test double: one token per run of non-whitespace.
///
/// Fitting keeps the original bytes up to the end of the `target`-th word
/// (so a fitted text is always a prefix of the text, or the text plus
/// filler), which is the property planners rely on for shared prefixes.
#[derive(Debug, Clone, Copy, Default)]
pub struct WordTokenizer;

impl Tokenizer for WordTokenizer {
    fn count(&self, text: &str) -> u32 {
        text.split_whitespace().count() as u32
    }

    fn fit(&self, text: &str, target: u32, filler: &str) -> String {
        let mut out = text.to_string();
        // A filler without words could never reach the target.
        if filler.split_whitespace().next().is_some() {
            while self.count(&out) < target {
                out.push_str(filler);
            }
        }
        cut_after_words(&out, target as usize).to_string()
    }
}

/// The prefix of `text` that ends right after its `n`-th word.
fn cut_after_words(text: &str, n: usize) -> &str {
    if n == 0 {
        return "";
    }
    let mut words = 0;
    let mut in_word = false;
    for (i, c) in text.char_indices() {
        if c.is_whitespace() {
            if in_word {
                words += 1;
                if words == n {
                    return &text[..i];
                }
            }
            in_word = false;
        } else {
            in_word = true;
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn word_tokenizer_cuts_after_the_nth_word() {
        let t = WordTokenizer;
        assert_eq!(t.count("a  b\nc "), 3);
        assert_eq!(t.fit("a  b\nc d", 2, " x"), "a  b");
        assert_eq!(t.fit("a b", 0, " x"), "");
        assert_eq!(t.fit("a b", 2, " x"), "a b");
    }

    #[test]
    fn word_tokenizer_extends_with_filler() {
        let t = WordTokenizer;
        assert_eq!(t.fit("a", 4, " x y"), "a x y x");
        assert_eq!(t.fit("a", 4, "  "), "a", "a blank filler cannot extend");
    }
}
