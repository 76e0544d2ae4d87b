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
    #[error(
        "{path} is a directory without tokenizer.json; give a tokenizer.json or a model directory holding one"
    )]
    NoTokenizerInDir { path: String },
    #[error("{path}: {message}")]
    Config { path: String, message: String },
}

/// A model directory's tokenizer_config.json larger than this is not one.
const TOKENIZER_CONFIG_MAX_BYTES: u64 = 16 << 20;

/// Counts and fits text in tokens.
pub enum TokenCounter {
    /// Words (`[A-Za-z0-9_]+`, Unicode-aware) and single punctuation marks,
    /// the seed harness's `\w+|[^\w\s]` rule.
    Heuristic,
    Hf {
        tokenizer: Box<tokenizers::Tokenizer>,
        sha256: String,
        /// sha256 of the model directory's chat template
        /// (tokenizer_config.json's `chat_template`), when loaded from one.
        chat_template_sha256: Option<String>,
    },
}

impl std::fmt::Debug for TokenCounter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.id())
    }
}

pub const HEURISTIC_ID: &str = "heuristic:v1";

impl TokenCounter {
    /// A tokenizer.json, or a model directory holding one (and, optionally,
    /// a tokenizer_config.json whose chat template's digest is recorded).
    ///
    /// The template is not rendered: counts are of the message contents,
    /// and the template's own tokens are what `--input-token-safety-margin`
    /// keeps room for.
    pub fn from_path(path: &Path) -> Result<Self, TokenizeError> {
        if !path.is_dir() {
            return Self::from_file(path);
        }
        let file = path.join("tokenizer.json");
        if !file.is_file() {
            return Err(TokenizeError::NoTokenizerInDir {
                path: path.display().to_string(),
            });
        }
        let mut t = Self::from_file(&file)?;
        let cfg = path.join("tokenizer_config.json");
        if cfg.is_file() {
            let template = chat_template(&cfg)?;
            if let TokenCounter::Hf {
                chat_template_sha256,
                ..
            } = &mut t
            {
                *chat_template_sha256 = template.map(|t| sha256_hex(t.as_bytes()));
            }
        }
        Ok(t)
    }

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
            chat_template_sha256: None,
        })
    }

    /// `heuristic:v1`, `sha256:<hex of tokenizer.json>`, and from a model
    /// directory with a chat template
    /// `sha256:<tokenizer.json>+chat_template:sha256:<template>`.
    pub fn id(&self) -> String {
        match self {
            TokenCounter::Heuristic => HEURISTIC_ID.to_owned(),
            TokenCounter::Hf {
                sha256,
                chat_template_sha256: None,
                ..
            } => format!("sha256:{sha256}"),
            TokenCounter::Hf {
                sha256,
                chat_template_sha256: Some(t),
                ..
            } => format!("sha256:{sha256}+chat_template:sha256:{t}"),
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

/// tokenizer_config.json's `chat_template`: a string, or (newer models) a
/// list of `{name, template}` of which `default` is the one used.
fn chat_template(cfg: &Path) -> Result<Option<String>, TokenizeError> {
    let p = cfg.display().to_string();
    let err = |message: String| TokenizeError::Config {
        path: p.clone(),
        message,
    };
    let len = std::fs::metadata(cfg)
        .map_err(|source| TokenizeError::Read {
            path: p.clone(),
            source,
        })?
        .len();
    if len > TOKENIZER_CONFIG_MAX_BYTES {
        return Err(err(format!(
            "{len} bytes; a tokenizer_config.json is at most {TOKENIZER_CONFIG_MAX_BYTES}"
        )));
    }
    let bytes = std::fs::read(cfg).map_err(|source| TokenizeError::Read {
        path: p.clone(),
        source,
    })?;
    let v: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| err(format!("not JSON: {e}")))?;
    Ok(match v.get("chat_template") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(s)) => Some(s.clone()),
        Some(serde_json::Value::Array(list)) => list
            .iter()
            .find(|e| e.get("name").and_then(|n| n.as_str()) == Some("default"))
            .or_else(|| list.first())
            .and_then(|e| e.get("template"))
            .and_then(|t| t.as_str())
            .map(str::to_owned),
        Some(_) => {
            return Err(err(
                "chat_template is neither a string nor a list of {name, template}".into(),
            ));
        }
    })
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

    const WORD_LEVEL: &str = r#"{"version":"1.0","truncation":null,"padding":null,"added_tokens":[],"normalizer":null,"pre_tokenizer":{"type":"Whitespace"},"post_processor":null,"decoder":null,"model":{"type":"WordLevel","vocab":{"[UNK]":0,"hello":1,"world":2},"unk_token":"[UNK]"}}"#;

    #[test]
    fn a_model_directory_gives_its_tokenizer_and_chat_template_digest() {
        let d = tempfile::tempdir().unwrap();
        let e = TokenCounter::from_path(d.path()).unwrap_err().to_string();
        assert!(e.contains("without tokenizer.json"), "{e}");
        std::fs::write(d.path().join("tokenizer.json"), WORD_LEVEL).unwrap();
        let plain = TokenCounter::from_path(d.path()).unwrap();
        let file = TokenCounter::from_path(&d.path().join("tokenizer.json")).unwrap();
        assert_eq!(
            plain.id(),
            file.id(),
            "no tokenizer_config.json: the file's id"
        );
        assert_eq!(plain.count("hello world hello"), 3);
        std::fs::write(
            d.path().join("tokenizer_config.json"),
            r#"{"chat_template":[{"name":"tool_use","template":"x"},{"name":"default","template":"{{ messages }}"}]}"#,
        )
        .unwrap();
        let t = TokenCounter::from_path(d.path()).unwrap();
        assert_eq!(
            t.id(),
            format!(
                "{}+chat_template:sha256:{}",
                file.id(),
                sha256_hex(b"{{ messages }}")
            )
        );
        std::fs::write(
            d.path().join("tokenizer_config.json"),
            r#"{"chat_template":3}"#,
        )
        .unwrap();
        let e = TokenCounter::from_path(d.path()).unwrap_err().to_string();
        assert!(e.contains("chat_template is neither"), "{e}");
    }
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
