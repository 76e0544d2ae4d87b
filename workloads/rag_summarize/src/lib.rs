//! `rag_summarize`: offline RAG-style summarization, prefill-heavy (the test
//! plan's workload family C). Each request is one long retrieved document
//! followed by a short summarization instruction, and asks for a short
//! answer (`max-tokens` 128), so time goes into prefill and KV footprint
//! into the prompt.
//!
//! With `reuse-ratio` > 0 a fraction of requests summarize a document sent
//! earlier (with a different focus), as when several questions hit the same
//! retrieved document: the document comes first in the prompt, so its KV
//! blocks are a reusable prefix and `prefix_hash` is the document's hash.
//!
//! The default document range, 6000:7600 tokens, plus the instruction,
//! template and 128 output tokens fits an engine capped at 8192 tokens
//! (Dataset S); use e.g. `doc-range=30000:32000` for Dataset L.
//!
//! # Layout
//!
//! - [`Config`]: params parsed and validated once, in `create`.
//! - [`DocStream`]: one phase's requests; remembers each document's own
//!   seed (not its text) so a reused document is rebuilt byte for byte.
//! - [`RagSummarize`]: the planner, a [`Sequence`] of warmup and main.

use sparkhost_workload::text::{self, FILLER, TOPICS};
use sparkhost_workload::{
    Api, Arrival, Generation, GenerationDefaults, ParamInfo, Params, Phase, PromptFormat,
    RequestSpec, Result, Sequence, SequenceWorkload, SplitMix64, Template, Tokenizer,
    WorkloadError, WorkloadInfo, counted, generation_params, label, message, param, sha256_hex,
};

/// Seed offset of the warmup phase (as `synthetic`'s warmup).
pub const WARMUP_SEED_OFFSET: u64 = 999;

/// What a summary should focus on; one is drawn per request.
pub const FOCUS: [&str; 8] = [
    "the ordered actions an operator must take",
    "the constraints and their rationale",
    "risks and their mitigations",
    "what changed between sections",
    "timeouts, retries and failure handling",
    "capacity and latency limits",
    "the checks that verify correct behavior",
    "open questions for the owning team",
];

/// The validated params of one run.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub requests: u32,
    pub warmup: u32,
    pub doc_range: (u32, u32),
    pub reuse_ratio: f64,
    pub generation: Generation,
    pub format: PromptFormat,
}

impl Config {
    pub fn from_params(p: &Params) -> Result<Self> {
        let reuse_ratio = p.get_f64("reuse-ratio")?;
        if !(0.0..=1.0).contains(&reuse_ratio) {
            return Err(WorkloadError::InvalidConfig(format!(
                "parameter `reuse-ratio`: {reuse_ratio} is not valid; expected a fraction from 0 to 1"
            )));
        }
        Ok(Self {
            requests: p.get_u32_min("requests", 1)?,
            warmup: p.get_u32("warmup")?,
            doc_range: p.get_range("doc-range")?,
            reuse_ratio,
            generation: p.get_generation()?,
            format: PromptFormat::from_params(p)?,
        })
    }
}

fn declared_params() -> Vec<ParamInfo> {
    let mut params = vec![
        param(
            "requests",
            "Requests in the measured phase `main` (at least 1).",
            "32",
        ),
        param(
            "warmup",
            "Requests in the phase `warmup` (own documents, seed+999), sent first and left out \
             of the summary; 0 drops the phase.",
            "2",
        ),
        param(
            "doc-range",
            "MIN:MAX tokens of a document, uniform per document. The default fits an engine \
             capped at 8192 tokens with max-tokens 128.",
            "6000:7600",
        ),
        param(
            "reuse-ratio",
            "Fraction (0 to 1) of requests after the first that summarize an earlier document \
             of the phase again (uniformly chosen), with another focus; their document prefix \
             can come from the KV cache.",
            "0",
        ),
    ];
    params.extend(generation_params(&GenerationDefaults {
        max_tokens: "128",
        ..GenerationDefaults::SEED
    }));
    params.extend(PromptFormat::params(Api::Completions, Template::Llama3));
    params
}

/// The documents of one phase and the PRNG that chooses among them.
#[derive(Debug, Clone)]
pub struct DocStream {
    rng: SplitMix64,
    doc_prefix: &'static str,
    doc_range: (u32, u32),
    reuse_ratio: f64,
    /// Each document's own seed, in creation order.
    doc_seeds: Vec<u64>,
    uses: Vec<u32>,
}

/// A request's document and instruction.
#[derive(Debug, Clone, PartialEq)]
pub struct Drawn {
    pub doc_id: String,
    pub doc_tokens: u32,
    pub document: String,
    pub reused: bool,
    pub uses: u32,
    pub focus: &'static str,
}

impl DocStream {
    pub fn new(seed: u64, doc_prefix: &'static str, config: &Config) -> Self {
        Self {
            rng: SplitMix64::new(seed),
            doc_prefix,
            doc_range: config.doc_range,
            reuse_ratio: config.reuse_ratio,
            doc_seeds: Vec::new(),
            uses: Vec::new(),
        }
    }

    /// Draws, in order: for every request after the first when
    /// `reuse-ratio` > 0, `next_f64() < ratio` (reuse); on reuse
    /// `range_u32(0, documents - 1)`, otherwise a new document's seed
    /// `next_u64()`; then `pick(FOCUS)`. A document's own PRNG draws its size
    /// `range_u32(min, max)`, its topic, then its text.
    pub fn draw(&mut self, tok: &dyn Tokenizer) -> Drawn {
        let reuse = !self.doc_seeds.is_empty()
            && self.reuse_ratio > 0.0
            && self.rng.next_f64() < self.reuse_ratio;
        let k = if reuse {
            self.rng.range_u32(0, self.doc_seeds.len() as u32 - 1) as usize
        } else {
            self.doc_seeds.push(self.rng.next_u64());
            self.uses.push(0);
            self.doc_seeds.len() - 1
        };
        self.uses[k] += 1;
        let focus = *self.rng.pick(&FOCUS);
        let mut doc_rng = SplitMix64::new(self.doc_seeds[k]);
        let tokens = doc_rng.range_u32(self.doc_range.0, self.doc_range.1);
        let topic = doc_rng.pick(&TOPICS);
        let doc_id = format!("{}-{k:05}", self.doc_prefix);
        let raw = text::synthetic_document(&mut doc_rng, &doc_id, topic, tokens);
        Drawn {
            document: tok.fit(&raw, tokens, FILLER),
            doc_id,
            doc_tokens: tokens,
            reused: reuse,
            uses: self.uses[k],
            focus,
        }
    }
}

/// The user text: the document, then the instruction.
pub fn user_text(d: &Drawn) -> String {
    format!(
        "{}\n\nInstruction: Summarize the document above in at most five sentences for an \
         on-call engineer, focusing on {}.",
        d.document, d.focus
    )
}

fn phase_source(
    config: &Config,
    seed: u64,
    phase: &'static str,
    count: u32,
) -> sparkhost_workload::Source {
    let doc_prefix = if phase == "warmup" {
        "warmup-doc"
    } else {
        "doc"
    };
    let mut stream = DocStream::new(seed, doc_prefix, config);
    let (format, generation) = (config.format, config.generation.clone());
    counted(count, move |i, tok| {
        let d = stream.draw(tok);
        Ok(RequestSpec {
            id: format!("{phase}-{i:05}"),
            phase: phase.to_string(),
            session_id: None,
            prefix_hash: Some(sha256_hex(&d.document)),
            prompt: format.render(&[message("user", &user_text(&d))]),
            generation: generation.clone(),
            arrival: Arrival::Asap,
            labels: vec![
                label("prompt_set", "rag_summarize"),
                label("target_tokens", &d.doc_tokens.to_string()),
                label("doc_id", &d.doc_id),
                label("doc_reused", if d.reused { "true" } else { "false" }),
                label("doc_uses", &d.uses.to_string()),
            ],
        })
    })
}

/// The planner, exported as [`Sequenced<RagSummarize>`](sparkhost_workload::Sequenced).
pub struct RagSummarize;

impl RagSummarize {
    /// Phases `warmup` (if any; excluded) and `main`, at the CLI's load.
    pub fn sequence(config: &Config, seed: u64) -> Sequence {
        let mut seq = Sequence::new();
        if config.warmup > 0 {
            seq.push(
                Phase {
                    name: "warmup".to_string(),
                    include_in_summary: false,
                    load: None,
                },
                phase_source(
                    config,
                    seed.wrapping_add(WARMUP_SEED_OFFSET),
                    "warmup",
                    config.warmup,
                ),
            );
        }
        seq.push(
            Phase {
                name: "main".to_string(),
                include_in_summary: true,
                load: None,
            },
            phase_source(config, seed, "main", config.requests),
        );
        seq
    }
}

impl SequenceWorkload for RagSummarize {
    fn describe() -> WorkloadInfo {
        WorkloadInfo {
            name: "rag_summarize".to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            description: "Prefill-heavy summarization (test-plan family C): a long document \
                          followed by a short instruction, short answers; optionally a fraction \
                          of requests reuse an earlier document (prefix_hash = the document's \
                          hash). Phases: warmup (excluded), main; load from the command line."
                .to_string(),
            params: declared_params(),
        }
    }

    fn plan(params: &Params, seed: u64) -> Result<Sequence> {
        Ok(Self::sequence(&Config::from_params(params)?, seed))
    }
}

sparkhost_workload::export_workload!(sparkhost_workload::Sequenced<RagSummarize>);

#[cfg(test)]
mod tests {
    use super::*;
    use sparkhost_workload::{Prompt, WordTokenizer};

    fn config(pairs: &[(&str, &str)]) -> Result<Config> {
        Config::from_params(&Params::from_pairs(&declared_params(), pairs)?)
    }

    fn all(pairs: &[(&str, &str)], seed: u64) -> Vec<RequestSpec> {
        RagSummarize::sequence(&config(pairs).unwrap(), seed)
            .drain(&WordTokenizer)
            .unwrap()
    }

    fn get<'a>(r: &'a RequestSpec, key: &str) -> &'a str {
        &r.labels.iter().find(|l| l.key == key).unwrap().value
    }

    #[test]
    fn defaults_fit_an_8k_engine() {
        let c = config(&[]).unwrap();
        assert_eq!((c.requests, c.warmup, c.doc_range), (32, 2, (6000, 7600)));
        assert_eq!(c.generation.max_tokens, 128);
        assert_eq!(c.reuse_ratio, 0.0);
        assert!(c.doc_range.1 + c.generation.max_tokens + 256 + 64 <= 8192);
        for bad in ["-0.1", "1.5", "x"] {
            assert!(config(&[("reuse-ratio", bad)]).is_err(), "{bad}");
        }
    }

    #[test]
    fn documents_come_first_and_are_sized() {
        let reqs = all(
            &[("requests", "3"), ("warmup", "1"), ("doc-range", "300:400")],
            1,
        );
        let ids: Vec<&str> = reqs.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(
            ids,
            ["warmup-00000", "main-00000", "main-00001", "main-00002"]
        );
        for r in &reqs {
            let Prompt::Text(t) = &r.prompt else { panic!() };
            let user = t
                .strip_prefix(text::LLAMA3_USER_PREFIX)
                .and_then(|t| t.strip_suffix(text::LLAMA3_ASSISTANT_PREFIX))
                .unwrap();
            let (doc, instruction) = user.split_once("\n\nInstruction: Summarize").unwrap();
            assert!(doc.starts_with("Document ID: "));
            let n = WordTokenizer.count(doc);
            assert_eq!(n.to_string(), get(r, "target_tokens"));
            assert!((300..=400).contains(&n));
            assert!(instruction.contains("focusing on "));
            assert_eq!(r.prefix_hash.as_deref(), Some(sha256_hex(doc).as_str()));
            assert_eq!(get(r, "doc_reused"), "false");
        }
        assert_eq!(get(&reqs[0], "doc_id"), "warmup-doc-00000");
        assert_eq!(get(&reqs[3], "doc_id"), "doc-00002");
    }

    #[test]
    fn reuse_repeats_earlier_documents_byte_for_byte() {
        let reqs = all(
            &[
                ("requests", "40"),
                ("warmup", "0"),
                ("doc-range", "50:80"),
                ("reuse-ratio", "0.5"),
            ],
            7,
        );
        let reused: Vec<&RequestSpec> = reqs
            .iter()
            .filter(|r| get(r, "doc_reused") == "true")
            .collect();
        assert!((10..=30).contains(&reused.len()), "{}", reused.len());
        for r in reused {
            let first = reqs
                .iter()
                .find(|f| get(f, "doc_id") == get(r, "doc_id"))
                .unwrap();
            assert_eq!(get(first, "doc_reused"), "false");
            assert_eq!(first.prefix_hash, r.prefix_hash);
        }
        let all_new = all(
            &[
                ("requests", "5"),
                ("warmup", "0"),
                ("doc-range", "50:80"),
                ("reuse-ratio", "0"),
            ],
            7,
        );
        assert!(all_new.iter().all(|r| get(r, "doc_uses") == "1"));
        let everything = all(
            &[
                ("requests", "5"),
                ("warmup", "0"),
                ("doc-range", "50:80"),
                ("reuse-ratio", "1"),
            ],
            7,
        );
        assert!(
            everything[1..]
                .iter()
                .all(|r| get(r, "doc_id") == "doc-00000")
        );
    }

    #[test]
    fn same_seed_same_plan() {
        let pairs = [
            ("requests", "6"),
            ("doc-range", "60:90"),
            ("reuse-ratio", "0.3"),
        ];
        assert_eq!(all(&pairs, 3), all(&pairs, 3));
        assert_ne!(all(&pairs, 3), all(&pairs, 4));
    }
}
