//! Prompt text to token ids, and token ids to chained block hashes.

use std::path::Path;

/// Turns prompt text into token ids. Ids only need to be stable: they feed
/// the block hashes, never a model.
pub trait Tokenize: Send + Sync {
    fn encode(&self, text: &str) -> Vec<u32>;
    /// `heuristic:v1` or `hf:<path>`, recorded with results.
    fn id(&self) -> String;
}

/// The host's heuristic (`host/src/tokenize.rs`): words (Unicode
/// alphanumerics and `_`) and single non-space marks, the seed harness's
/// `\w+|[^\w\s]` rule, so the simulator counts prompts as sparkhost does.
#[derive(Debug, Default, Clone, Copy)]
pub struct Heuristic;

fn is_word(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

impl Tokenize for Heuristic {
    fn encode(&self, text: &str) -> Vec<u32> {
        let mut out = Vec::with_capacity(text.len() / 4 + 1);
        let mut word: Option<usize> = None;
        for (i, c) in text.char_indices() {
            if is_word(c) {
                word.get_or_insert(i);
                continue;
            }
            if let Some(s) = word.take() {
                out.push(span_id(&text[s..i]));
            }
            if !c.is_whitespace() {
                out.push(span_id(&text[i..i + c.len_utf8()]));
            }
        }
        if let Some(s) = word {
            out.push(span_id(&text[s..]));
        }
        out
    }

    fn id(&self) -> String {
        "heuristic:v1".into()
    }
}

/// Words of the generated filler text: deterministic, and each one a single
/// heuristic token, so a prompt that repeats an earlier answer hashes like
/// the blocks the engine generated for it.
const FILLER: [&str; 16] = [
    "alpha", "block", "cache", "delta", "engine", "frame", "gamma", "host", "index", "kernel",
    "layer", "metric", "node", "offload", "prefix", "queue",
];

/// The text of generated token `index` (with its leading space).
pub fn filler_text(index: u32) -> &'static str {
    const SPACED: [&str; 16] = [
        " alpha", " block", " cache", " delta", " engine", " frame", " gamma", " host", " index",
        " kernel", " layer", " metric", " node", " offload", " prefix", " queue",
    ];
    SPACED[index as usize % SPACED.len()]
}

/// The id the heuristic gives generated token `index`.
pub fn filler_token(index: u32) -> u32 {
    span_id(FILLER[index as usize % FILLER.len()])
}

/// FNV-1a of the token's text: the same word always gets the same id.
fn span_id(s: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in s.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

/// A Hugging Face `tokenizer.json`.
pub struct HfTokenizer {
    inner: tokenizers::Tokenizer,
    path: String,
}

impl HfTokenizer {
    pub fn from_file(path: &Path) -> Result<Self, String> {
        let inner = tokenizers::Tokenizer::from_file(path)
            .map_err(|e| format!("cannot load tokenizer {}: {e}", path.display()))?;
        Ok(HfTokenizer {
            inner,
            path: path.display().to_string(),
        })
    }
}

impl Tokenize for HfTokenizer {
    fn encode(&self, text: &str) -> Vec<u32> {
        match self.inner.encode(text, false) {
            Ok(e) => e.get_ids().to_vec(),
            // An unencodable prompt still has to be served; the heuristic
            // keeps its length plausible.
            Err(_) => Heuristic.encode(text),
        }
    }

    fn id(&self) -> String {
        format!("hf:{}", self.path)
    }
}

/// The chained hash of a block: a block's identity includes every block
/// before it, so a block matches only if its whole prefix matches. The mixer
/// is splitmix64's finaliser over a multiply-xor fold: fast, 64-bit, and
/// stable across builds (std's hashers are not).
pub fn block_hash(parent: u64, tokens: &[u32]) -> u64 {
    let mut h = mix(parent ^ 0x9e37_79b9_7f4a_7c15);
    for &t in tokens {
        h = mix(h ^ u64::from(t));
    }
    mix(h ^ tokens.len() as u64)
}

fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Chained hashes of every full block of `tokens`; a trailing partial block
/// has no hash (it is never shared).
pub fn block_hashes(tokens: &[u32], block_size: usize) -> Vec<u64> {
    let mut parent = 0u64;
    tokens
        .chunks_exact(block_size.max(1))
        .map(|b| {
            parent = block_hash(parent, b);
            parent
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heuristic_matches_the_host_rule() {
        let t = Heuristic;
        assert_eq!(t.encode("Hello, world! it's 2026.").len(), 9);
        assert_eq!(t.encode("  ").len(), 0);
        assert_eq!(t.encode("naïve_café").len(), 1);
        for i in 0..20 {
            assert_eq!(t.encode(filler_text(i)), vec![filler_token(i)]);
        }
        assert_eq!(t.encode("a b a"), {
            let v = t.encode("a b");
            vec![v[0], v[1], v[0]]
        });
    }

    #[test]
    fn a_tokenizer_json_is_used_when_given() {
        let dir = tempfile::Builder::new()
            .prefix("kvbm-tok-")
            .tempdir_in(concat!(env!("CARGO_MANIFEST_DIR"), "/../target"))
            .unwrap();
        let path = dir.path().join("tokenizer.json");
        std::fs::write(
            &path,
            r#"{"version":"1.0","truncation":null,"padding":null,"added_tokens":[],"normalizer":null,
               "pre_tokenizer":{"type":"Whitespace"},"post_processor":null,"decoder":null,
               "model":{"type":"WordLevel","vocab":{"hello":0,"world":1,"[UNK]":2},"unk_token":"[UNK]"}}"#,
        )
        .unwrap();
        let t = HfTokenizer::from_file(&path).unwrap();
        assert_eq!(t.encode("hello world zzz"), vec![0, 1, 2]);
        assert!(t.id().starts_with("hf:"));
        assert!(HfTokenizer::from_file(&dir.path().join("missing.json")).is_err());
    }

    #[test]
    fn hashes_chain_over_the_prefix() {
        let a: Vec<u32> = (0..64).collect();
        let mut b = a.clone();
        b[3] = 999; // differs in block 0 only
        let ha = block_hashes(&a, 16);
        let hb = block_hashes(&b, 16);
        assert_eq!(ha.len(), 4);
        // Blocks 1..3 have the same tokens but a different parent.
        assert!(ha.iter().zip(&hb).all(|(x, y)| x != y));
        assert_eq!(block_hashes(&a[..40], 16), ha[..2]);
    }
}
