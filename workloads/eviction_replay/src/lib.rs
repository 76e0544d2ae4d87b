//! `eviction_replay`: the seed harness's eviction test. A set A of long
//! prompts is sent (`warm_A`), then a larger set B of different long prompts
//! (`pressure_B`, at higher concurrency) pushes A's KV blocks out of the GPU
//! tier, then A is sent again byte for byte (`replay_A`). Without an offload
//! tier the replay recomputes A; with one, it should find A's blocks there.
//! Compare `replay_A` with `warm_A` per phase (cached tokens, TTFT).
//!
//! The seed's defaults and seed offsets are kept: A at the run's seed, B at
//! seed + 100003, the warmup at seed + 7, all from the `long` size rule
//! (only `long-range` applies). The seed also took every concurrency from
//! its global `--concurrency`; the guest cannot see the CLI's load, so that
//! value is the `concurrency` param here, and each phase sets its own load.
//!
//! # Layout
//!
//! - [`Config`]: params parsed and validated once, in `create`.
//! - [`PromptSet`]: one of the seed's prompt streams (warmup, A, B), built
//!   lazily; replaying A rebuilds it from the same seed.
//! - [`EvictionReplay`]: the planner, a [`Sequence`] of the four phases.

use sparkhost_workload::text::{self, FILLER, SizeSet, TOPICS};
use sparkhost_workload::{
    Api, Arrival, Generation, GenerationDefaults, ParamInfo, Params, PromptFormat, RequestSpec,
    Result, Sequence, SequenceWorkload, SplitMix64, Template, Tokenizer, WorkloadInfo,
    closed_phase, counted, generation_params, label, message, param, sha256_hex,
};

/// The seed's offsets from the run's seed.
pub const WARMUP_SEED_OFFSET: u64 = 7;
pub const B_SEED_OFFSET: u64 = 100_003;

/// The validated params of one run.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub a_requests: u32,
    pub b_requests: u32,
    pub warmup: u32,
    pub a_concurrency: u32,
    pub b_concurrency: u32,
    pub long_range: (u32, u32),
    pub generation: Generation,
    pub format: PromptFormat,
}

impl Config {
    pub fn from_params(p: &Params) -> Result<Self> {
        let concurrency = p.get_u32_min("concurrency", 1)?;
        let a_concurrency = p
            .get_opt_u32_min("a-concurrency", 1)?
            .unwrap_or(concurrency);
        let b_concurrency = p
            .get_opt_u32_min("b-concurrency", 1)?
            .unwrap_or_else(|| a_concurrency.max(concurrency.saturating_mul(2)));
        Ok(Self {
            a_requests: p.get_u32_min("a-requests", 1)?,
            b_requests: p.get_u32_min("b-requests", 1)?,
            warmup: p.get_u32("warmup")?,
            a_concurrency,
            b_concurrency,
            long_range: p.get_range("long-range")?,
            generation: p.get_generation()?,
            format: PromptFormat::from_params(p)?,
        })
    }
}

fn declared_params() -> Vec<ParamInfo> {
    let mut params = vec![
        param(
            "a-requests",
            "Prompts in set A (warm_A, then replay_A).",
            "32",
        ),
        param(
            "b-requests",
            "Prompts in set B (pressure_B); choose enough to push A out of the GPU tier.",
            "64",
        ),
        param(
            "warmup",
            "Requests in the phase `warmup` (long prompts at seed+7), sent first and left out \
             of the summary; 0 drops the phase.",
            "8",
        ),
        param(
            "concurrency",
            "The seed's --concurrency, from which the phase concurrencies default.",
            "1",
        ),
        param(
            "a-concurrency",
            "Concurrency of warmup, warm_A and replay_A; empty means `concurrency`.",
            "",
        ),
        param(
            "b-concurrency",
            "Concurrency of pressure_B; empty means max(a-concurrency, 2 × concurrency).",
            "",
        ),
        param(
            "long-range",
            "MIN:MAX target user-text tokens of every prompt. A uniform pick among 8192, \
             12288, 16384, 24576, 32768 inside the range; uniform in MIN..=MAX when none is \
             inside. The default does not fit an engine capped at 8192 tokens; use e.g. \
             6000:7600 there.",
            "8192:32768",
        ),
    ];
    params.extend(generation_params(&GenerationDefaults::SEED));
    params.extend(PromptFormat::params(Api::Completions, Template::Llama3));
    params
}

/// One of the seed's prompt streams: `generate_prompt_set("long", count,
/// seed, prefix)`. Per prompt `i`: the long size rule, `pick(TOPICS)`, a
/// synthetic document `"<prefix>-<i:05>"`, fitted to the target before the
/// template.
#[derive(Debug, Clone)]
pub struct PromptSet {
    rng: SplitMix64,
    prefix: &'static str,
    long_range: (u32, u32),
}

/// A prompt's user text and what it was sized to.
#[derive(Debug, Clone, PartialEq)]
pub struct Drawn {
    pub prompt_id: String,
    pub target: u32,
    pub user_text: String,
}

impl PromptSet {
    pub fn new(seed: u64, prefix: &'static str, long_range: (u32, u32)) -> Self {
        Self {
            rng: SplitMix64::new(seed),
            prefix,
            long_range,
        }
    }

    pub fn draw(&mut self, i: u32, tok: &dyn Tokenizer) -> Drawn {
        let (_, target) =
            text::choose_target(SizeSet::Long, &mut self.rng, (1, 1), self.long_range);
        let topic = self.rng.pick(&TOPICS);
        let prompt_id = format!("{}-{i:05}", self.prefix);
        let document = text::synthetic_document(&mut self.rng, &prompt_id, topic, target);
        Drawn {
            prompt_id,
            target,
            user_text: tok.fit(&document, target, FILLER),
        }
    }
}

/// One phase's requests from a prompt stream.
///
/// `prompt_set` is the seed's label (`long` for warmup, `replay_a`,
/// `replay_b`); `id_suffix` keeps replayed ids unique while the prompt,
/// and so its `prefix_hash`, stays the same.
#[allow(clippy::too_many_arguments)]
fn phase_source(
    config: &Config,
    seed: u64,
    set_prefix: &'static str,
    phase: &'static str,
    count: u32,
    prompt_set: &'static str,
    intent: &'static str,
    id_suffix: &'static str,
) -> sparkhost_workload::Source {
    let mut set = PromptSet::new(seed, set_prefix, config.long_range);
    let (format, generation) = (config.format, config.generation.clone());
    counted(count, move |i, tok| {
        let d = set.draw(i, tok);
        let mut labels = vec![
            label("prompt_set", prompt_set),
            label("target_tokens", &d.target.to_string()),
            label("phase_intent", intent),
        ];
        if !id_suffix.is_empty() {
            labels.push(label("replay_of", &d.prompt_id));
        }
        Ok(RequestSpec {
            id: format!("{}{id_suffix}", d.prompt_id),
            phase: phase.to_string(),
            session_id: None,
            prefix_hash: Some(sha256_hex(&d.user_text)),
            prompt: format.render(&[message("user", &d.user_text)]),
            generation: generation.clone(),
            arrival: Arrival::Asap,
            labels,
        })
    })
}

/// The planner, exported as [`Sequenced<EvictionReplay>`](sparkhost_workload::Sequenced).
pub struct EvictionReplay;

impl EvictionReplay {
    /// Phases: `warmup` (if any; excluded), `warm_A`, `pressure_B`,
    /// `replay_A`, with their concurrencies.
    pub fn sequence(config: &Config, seed: u64) -> Sequence {
        let (a, b) = (config.a_concurrency, config.b_concurrency);
        let mut seq = Sequence::new();
        if config.warmup > 0 {
            seq.push(
                closed_phase("warmup", false, a),
                phase_source(
                    config,
                    seed.wrapping_add(WARMUP_SEED_OFFSET),
                    "warmup",
                    "warmup",
                    config.warmup,
                    "long",
                    "warmup",
                    "",
                ),
            );
        }
        seq.push(
            closed_phase("warm_A", true, a),
            phase_source(
                config,
                seed,
                "A",
                "warm_A",
                config.a_requests,
                "replay_a",
                "warm",
                "",
            ),
        );
        seq.push(
            closed_phase("pressure_B", true, b),
            phase_source(
                config,
                seed.wrapping_add(B_SEED_OFFSET),
                "B",
                "pressure_B",
                config.b_requests,
                "replay_b",
                "pressure",
                "",
            ),
        );
        seq.push(
            closed_phase("replay_A", true, a),
            phase_source(
                config,
                seed,
                "A",
                "replay_A",
                config.a_requests,
                "replay_a",
                "replay",
                "-replay",
            ),
        );
        seq
    }
}

impl SequenceWorkload for EvictionReplay {
    fn describe() -> WorkloadInfo {
        WorkloadInfo {
            name: "eviction_replay".to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            description: "Warm a set A of long prompts (warm_A), push it out of the GPU KV tier \
                          with a larger set B (pressure_B, higher concurrency), then resend A \
                          byte for byte (replay_A): replay_A's cache hits show whether evicted \
                          blocks come back from an offload tier (the seed harness's \
                          eviction_replay scenario)."
                .to_string(),
            params: declared_params(),
        }
    }

    fn plan(params: &Params, seed: u64) -> Result<Sequence> {
        Ok(Self::sequence(&Config::from_params(params)?, seed))
    }
}

sparkhost_workload::export_workload!(sparkhost_workload::Sequenced<EvictionReplay>);

#[cfg(test)]
mod tests {
    use super::*;
    use sparkhost_workload::{LoadModel, WordTokenizer, WorkloadError};

    fn config(pairs: &[(&str, &str)]) -> Result<Config> {
        Config::from_params(&Params::from_pairs(&declared_params(), pairs)?)
    }

    fn all(pairs: &[(&str, &str)], seed: u64) -> Vec<RequestSpec> {
        EvictionReplay::sequence(&config(pairs).unwrap(), seed)
            .drain(&WordTokenizer)
            .unwrap()
    }

    const SMALL: [(&str, &str); 4] = [
        ("a-requests", "3"),
        ("b-requests", "4"),
        ("warmup", "2"),
        ("long-range", "300:400"),
    ];

    #[test]
    fn defaults_match_the_seed() {
        let c = config(&[]).unwrap();
        assert_eq!((c.a_requests, c.b_requests, c.warmup), (32, 64, 8));
        assert_eq!((c.a_concurrency, c.b_concurrency), (1, 2));
        assert_eq!(c.long_range, (8192, 32768));
        let c = config(&[("concurrency", "4"), ("a-concurrency", "6")]).unwrap();
        assert_eq!((c.a_concurrency, c.b_concurrency), (6, 8));
        let c = config(&[("concurrency", "4"), ("a-concurrency", "12")]).unwrap();
        assert_eq!(c.b_concurrency, 12);
        assert_eq!(config(&[("b-concurrency", "3")]).unwrap().b_concurrency, 3);
        for bad in [
            &[("a-requests", "0")][..],
            &[("concurrency", "0")],
            &[("b-concurrency", "0")],
        ] {
            assert!(
                matches!(config(bad), Err(WorkloadError::InvalidConfig(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn phases_and_loads() {
        let seq = EvictionReplay::sequence(&config(&[("concurrency", "2")]).unwrap(), 1);
        let phases: Vec<(String, bool, Option<LoadModel>)> = seq
            .phases()
            .into_iter()
            .map(|p| (p.name, p.include_in_summary, p.load))
            .collect();
        assert_eq!(
            phases,
            [
                ("warmup".to_string(), false, Some(LoadModel::Closed(2))),
                ("warm_A".to_string(), true, Some(LoadModel::Closed(2))),
                ("pressure_B".to_string(), true, Some(LoadModel::Closed(4))),
                ("replay_A".to_string(), true, Some(LoadModel::Closed(2))),
            ]
        );
        let seq = EvictionReplay::sequence(&config(&[("warmup", "0")]).unwrap(), 1);
        assert_eq!(seq.phases()[0].name, "warm_A");
    }

    #[test]
    fn replay_is_byte_identical_to_warm() {
        let reqs = all(&SMALL, 1337);
        let ids: Vec<&str> = reqs.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "warmup-00000",
                "warmup-00001",
                "A-00000",
                "A-00001",
                "A-00002",
                "B-00000",
                "B-00001",
                "B-00002",
                "B-00003",
                "A-00000-replay",
                "A-00001-replay",
                "A-00002-replay"
            ]
        );
        for k in 0..3 {
            let (warm, replay) = (&reqs[2 + k], &reqs[9 + k]);
            assert_eq!(warm.prompt, replay.prompt);
            assert_eq!(warm.prefix_hash, replay.prefix_hash);
            assert_eq!(replay.phase, "replay_A");
            assert!(replay.labels.contains(&label("replay_of", &warm.id)));
            assert!(replay.labels.contains(&label("prompt_set", "replay_a")));
        }
        let hashes: std::collections::HashSet<_> =
            reqs[..9].iter().map(|r| r.prefix_hash.clone()).collect();
        assert_eq!(hashes.len(), 9, "warmup, A and B prompts all differ");
        assert!(reqs[5].labels.contains(&label("prompt_set", "replay_b")));
    }

    #[test]
    fn prompts_follow_the_long_rule_and_seed_offsets() {
        let reqs = all(&SMALL, 1337);
        let target: u32 = reqs[2].labels[1].value.parse().unwrap();
        assert!((300..=400).contains(&target));
        // A at seed: identical to a run whose B and warmup differ.
        let other = all(
            &[
                ("a-requests", "3"),
                ("b-requests", "1"),
                ("warmup", "0"),
                ("long-range", "300:400"),
            ],
            1337,
        );
        assert_eq!(other[0].prompt, reqs[2].prompt);
        // B is the A stream of seed + 100003, renamed.
        let b_as_a = all(
            &[
                ("a-requests", "1"),
                ("b-requests", "1"),
                ("warmup", "0"),
                ("long-range", "300:400"),
            ],
            1337 + B_SEED_OFFSET,
        );
        assert_eq!(b_as_a[0].labels[1], reqs[5].labels[1], "same target");
    }

    #[test]
    fn batches_respect_max() {
        let mut seq = EvictionReplay::sequence(&config(&SMALL).unwrap(), 3);
        let b = seq.next_batch(4, &WordTokenizer).unwrap();
        assert_eq!(b.requests.len(), 4);
        assert!(!b.done);
        assert_eq!(seq.drain(&WordTokenizer).unwrap().len(), 8);
    }
}
