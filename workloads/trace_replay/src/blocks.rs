//! The text of hash-id blocks, token-exact.
//!
//! Block `h` is a synthetic document from a PRNG seeded by (the run's
//! salted seed, `h`), fitted to the block size and ended with a newline:
//! `seed_h = SplitMix64(salt.mix(seed) ^ h).next_u64()`; with `rng =
//! SplitMix64(seed_h)`, `topic = pick(TOPICS)`, document
//! `salt.doc_id("block-<h>")` (`<salt>-block-<h>`, or `block-<h>` unsalted).
//! The newline is why blocks stay exact when concatenated: no tokenizer
//! the host offers merges a word across it (the heuristic and the word
//! stand-in split on whitespace; BPE tokenizers keep a newline apart from
//! the next word), so a prompt made of blocks counts as their sum and its
//! `k`-th block of tokens is exactly block `k`. When the newline is a
//! token of its own, the document is fitted one token shorter.

use std::collections::HashMap;
use std::rc::Rc;

use sparkhost_workload::text::{self, FILLER, TOPICS};
use sparkhost_workload::{Salt, SplitMix64, Tokenizer};

/// Texts of hash-id blocks, with a bounded cache.
pub struct Blocks {
    seed: u64,
    salt: Salt,
    block_size: u32,
    /// Bounded so long traces with many unique blocks fit in guest memory;
    /// it only saves host calls, the text is the same either way.
    cache: HashMap<u64, Rc<String>>,
}

/// Blocks kept before the cache starts over.
const BLOCK_CACHE: usize = 4096;

/// Seeds the unhashed tail of a request apart from every block.
const TAIL_SEED: u64 = 0x7a11_0000_0000_0000;

impl Blocks {
    /// `seed` is the run's seed; the salt is folded into it and named in
    /// every document's id ([`Salt::doc_id`]).
    pub fn new(seed: u64, salt: Salt, block_size: u32) -> Self {
        Self {
            seed: salt.mix(seed),
            salt,
            block_size,
            cache: HashMap::new(),
        }
    }

    pub fn block_size(&self) -> u32 {
        self.block_size
    }

    pub fn text(&mut self, h: u64, tok: &dyn Tokenizer) -> Rc<String> {
        if let Some(t) = self.cache.get(&h) {
            return Rc::clone(t);
        }
        if self.cache.len() >= BLOCK_CACHE {
            self.cache.clear();
        }
        let mut rng = SplitMix64::new(SplitMix64::new(self.seed ^ h).next_u64());
        let topic = rng.pick(&TOPICS);
        let doc = text::synthetic_document(
            &mut rng,
            &self.salt.doc_id(&format!("block-{h}")),
            topic,
            self.block_size,
        );
        let t = Rc::new(exact(&doc, self.block_size, tok));
        self.cache.insert(h, Rc::clone(&t));
        t
    }

    /// `tokens` tokens that belong to request `index` alone (the part of
    /// its prompt no hash id covers).
    pub fn tail(&self, index: usize, tokens: u32, tok: &dyn Tokenizer) -> String {
        let mut rng =
            SplitMix64::new(SplitMix64::new(self.seed ^ TAIL_SEED ^ index as u64).next_u64());
        let topic = rng.pick(&TOPICS);
        let doc = text::synthetic_document(
            &mut rng,
            &self.salt.doc_id(&format!("tail-{index}")),
            topic,
            tokens,
        );
        tok.fit(&doc, tokens, FILLER)
    }
}

/// `doc` fitted to `n` tokens ending in a newline (see the module doc).
fn exact(doc: &str, n: u32, tok: &dyn Tokenizer) -> String {
    let t = tok.fit(doc, n, FILLER) + "\n";
    if tok.count(&t) == n || n < 2 {
        return t;
    }
    tok.fit(doc, n - 1, FILLER) + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;
    use sparkhost_workload::WordTokenizer;

    #[test]
    fn blocks_are_exact_and_seeded() {
        let mut b = Blocks::new(5, Salt::off(), 64);
        let a = b.text(7, &WordTokenizer);
        assert_eq!(WordTokenizer.count(&a), 64);
        assert!(a.starts_with("Document ID: block-7\n") && a.ends_with('\n'));
        let c = b.text(8, &WordTokenizer);
        assert_eq!(WordTokenizer.count(&format!("{a}{c}")), 128);
        assert_eq!(a, Blocks::new(5, Salt::off(), 64).text(7, &WordTokenizer));
        assert_ne!(a, Blocks::new(6, Salt::off(), 64).text(7, &WordTokenizer));
        let salted = Blocks::new(5, Salt::new("s1").unwrap(), 64).text(7, &WordTokenizer);
        assert!(salted.starts_with("Document ID: s1-block-7\n"), "{salted}");
        assert_eq!(WordTokenizer.count(&b.tail(3, 10, &WordTokenizer)), 10);
        assert_ne!(b.tail(3, 10, &WordTokenizer), b.tail(4, 10, &WordTokenizer));
    }
}
