//! `reuse_verify`: the seed harness's reuse check. One prompt is sent
//! `repeats` times, each in its own phase (`reuse_1`, `reuse_2`, …) at
//! concurrency 1, so that per-phase deltas (summary, KV metrics) belong to
//! exactly one request. The first send is cold; every later one should be
//! served from the prefix cache (`cached_tokens > 0`, lower TTFT).
//!
//! The seed clamped the repeat count to 2..=3; that was an accident of its
//! CLI, so 2..=10 is allowed here. Temperature defaults to 0, as the seed
//! forced, so that repeats differ only in cache state.
//!
//! The algorithm is specified exactly (see [`plan`]) because JavaScript and
//! Python ports must produce byte-identical requests; `workloads/PORTING.md`
//! restates it for porters.
//!
//! # Layout
//!
//! - [`Config`]: params parsed and validated once, in `create`.
//! - [`plan`]: the whole run as request specs, pure given a [`Tokenizer`].
//! - [`ReuseVerify`]: the planner; plans on the first `next_batch`.

use sparkhost_workload::text::{self, FILLER, TOPICS};
use sparkhost_workload::{
    Api, Arrival, Batch, Generation, GenerationDefaults, HostTokenizer, LoadModel, Params, Phase,
    PromptFormat, RequestSpec, Result, SplitMix64, Template, Tokenizer, Workload, WorkloadInfo,
    generation_params, label, message, param, sha256_hex, text::SizeSet,
};

/// The seed's prompt id; the document carries it in its first line.
const PROMPT_ID: &str = "reuse-00000";

/// The validated params of one run.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub repeats: u32,
    pub set: SizeSet,
    pub short_range: (u32, u32),
    pub long_range: (u32, u32),
    pub generation: Generation,
    pub format: PromptFormat,
}

impl Config {
    pub fn from_params(p: &Params) -> Result<Self> {
        let set = match p.get_choice("prompt-set", &["short", "long"])? {
            "short" => SizeSet::Short,
            _ => SizeSet::Long,
        };
        Ok(Self {
            repeats: p.get_u32_in("repeats", 2, 10)?,
            set,
            short_range: p.get_range("short-range")?,
            long_range: p.get_range("long-range")?,
            generation: p.get_generation()?,
            format: PromptFormat::from_params(p)?,
        })
    }
}

fn declared_params() -> Vec<sparkhost_workload::ParamInfo> {
    let mut params = vec![
        param(
            "repeats",
            "How many times the prompt is sent, each in its own phase reuse_1..reuse_N \
             (2 to 10; the seed allowed only 2 or 3).",
            "3",
        ),
        param(
            "prompt-set",
            "Size rule of the prompt: short (from short-range) or long (from long-range).",
            "short",
        ),
        param(
            "short-range",
            "MIN:MAX target user-text tokens for a short prompt. A uniform pick among 512, \
             768, 1024, 1536, 2048 inside the range; uniform in MIN..=MAX when none is inside.",
            "512:2048",
        ),
        param(
            "long-range",
            "MIN:MAX target user-text tokens for a long prompt. A uniform pick among 8192, \
             12288, 16384, 24576, 32768 inside the range; uniform in MIN..=MAX when none is \
             inside. The default does not fit an engine capped at 8192 tokens; use e.g. \
             6000:7600 there.",
            "8192:32768",
        ),
    ];
    params.extend(generation_params(&GenerationDefaults {
        temperature: "0",
        ..GenerationDefaults::SEED
    }));
    params.extend(PromptFormat::params(Api::Completions, Template::Llama3));
    params
}

/// Name of the phase of repeat `k` (1-based).
pub fn phase_name(k: u32) -> String {
    format!("reuse_{k}")
}

/// Every request of the run, in order.
///
/// With `rng = SplitMix64(seed)`, drawn in this order:
///
/// 1. `(class, target) = text::choose_target(set, rng, short_range, long_range)`
/// 2. `topic = rng.pick(TOPICS)`
/// 3. `document = text::synthetic_document(rng, "reuse-00000", topic, target)`
///
/// then `user_text = fit_to_tokens(document, target, FILLER)` and the prompt
/// is one user message with `user_text`, rendered by the `api`/`template`
/// params. Repeat `k` in `1..=repeats` is request `reuse-00000-r{k}` of phase
/// `reuse_{k}`, arrival `asap`, no session, `prefix_hash =
/// sha256_hex(user_text)`, labels (in this order) `prompt_set` = class,
/// `target_tokens`, `reuse_prompt_id` = `reuse-00000`, `repeat` = k,
/// `repeats`.
pub fn plan(config: &Config, seed: u64, tok: &dyn Tokenizer) -> Vec<RequestSpec> {
    let mut rng = SplitMix64::new(seed);
    let (class, target) =
        text::choose_target(config.set, &mut rng, config.short_range, config.long_range);
    let topic = rng.pick(&TOPICS);
    let document = text::synthetic_document(&mut rng, PROMPT_ID, topic, target);
    let user_text = tok.fit(&document, target, FILLER);
    let prompt = config.format.render(&[message("user", &user_text)]);
    let prefix_hash = sha256_hex(&user_text);
    (1..=config.repeats)
        .map(|k| RequestSpec {
            id: format!("{PROMPT_ID}-r{k}"),
            phase: phase_name(k),
            session_id: None,
            prefix_hash: Some(prefix_hash.clone()),
            prompt: prompt.clone(),
            generation: config.generation.clone(),
            arrival: Arrival::Asap,
            labels: vec![
                label("prompt_set", class),
                label("target_tokens", &target.to_string()),
                label("reuse_prompt_id", PROMPT_ID),
                label("repeat", &k.to_string()),
                label("repeats", &config.repeats.to_string()),
            ],
        })
        .collect()
}

/// The planner of one run.
#[derive(Debug)]
pub struct ReuseVerify {
    config: Config,
    seed: u64,
    /// Planned on the first `next_batch`, so `create` makes no host calls;
    /// handed out front to back.
    pending: Option<std::vec::IntoIter<RequestSpec>>,
}

impl Workload for ReuseVerify {
    fn describe() -> WorkloadInfo {
        WorkloadInfo {
            name: "reuse_verify".to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            description: "One synthetic prompt sent `repeats` times, each in its own phase \
                          (reuse_1, reuse_2, …) at concurrency 1, temperature 0 by default: \
                          the first send is cold, the others should hit the prefix cache. \
                          Every repeat has the same prompt bytes and prefix_hash (the seed \
                          harness's reuse_verify scenario)."
                .to_string(),
            params: declared_params(),
        }
    }

    fn create(params: &Params, seed: u64) -> Result<Self> {
        Ok(Self {
            config: Config::from_params(params)?,
            seed,
            pending: None,
        })
    }

    fn phases(&self) -> Vec<Phase> {
        (1..=self.config.repeats)
            .map(|k| Phase {
                name: phase_name(k),
                include_in_summary: true,
                load: Some(LoadModel::Closed(1)),
            })
            .collect()
    }

    fn next_batch(&mut self, max: u32) -> Result<Batch> {
        let (config, seed) = (&self.config, self.seed);
        let pending = self
            .pending
            .get_or_insert_with(|| plan(config, seed, &HostTokenizer).into_iter());
        let requests: Vec<RequestSpec> = pending.by_ref().take(max as usize).collect();
        Ok(Batch {
            requests,
            done: pending.len() == 0,
        })
    }
}

sparkhost_workload::export_workload!(ReuseVerify);

#[cfg(test)]
mod tests {
    use super::*;
    use sparkhost_workload::{Prompt, WordTokenizer, WorkloadError};

    fn config(pairs: &[(&str, &str)]) -> Result<Config> {
        Config::from_params(&Params::from_pairs(&declared_params(), pairs)?)
    }

    fn requests(pairs: &[(&str, &str)], seed: u64) -> Vec<RequestSpec> {
        plan(&config(pairs).unwrap(), seed, &WordTokenizer)
    }

    #[test]
    fn defaults_match_the_seed() {
        let c = config(&[]).unwrap();
        assert_eq!((c.repeats, c.set), (3, SizeSet::Short));
        assert_eq!((c.short_range, c.long_range), ((512, 2048), (8192, 32768)));
        assert_eq!(c.generation.max_tokens, 256);
        assert_eq!(c.generation.temperature, Some(0.0));
        assert_eq!(c.generation.stop, ["<|eot_id|>"]);
        assert_eq!(c.format.api, Api::Completions);
    }

    #[test]
    fn bad_params_are_invalid_config() {
        for pairs in [
            &[("repeats", "1")][..],
            &[("repeats", "11")],
            &[("prompt-set", "mixed")],
            &[("api", "chat"), ("template", "none")],
        ] {
            assert!(
                matches!(config(pairs), Err(WorkloadError::InvalidConfig(_))),
                "{pairs:?}"
            );
        }
        assert_eq!(config(&[("repeats", "10")]).unwrap().repeats, 10);
    }

    #[test]
    fn every_repeat_is_the_same_request_in_its_own_phase() {
        let all = requests(&[("repeats", "4")], 1337);
        assert_eq!(all.len(), 4);
        for (i, r) in all.iter().enumerate() {
            let k = i + 1;
            assert_eq!(r.id, format!("reuse-00000-r{k}"));
            assert_eq!(r.phase, format!("reuse_{k}"));
            assert_eq!(r.prompt, all[0].prompt);
            assert_eq!(r.prefix_hash, all[0].prefix_hash);
            assert_eq!(r.generation, all[0].generation);
            assert!(r.labels.contains(&label("repeat", &k.to_string())));
        }
        let Prompt::Text(text) = &all[0].prompt else {
            panic!("completions by default")
        };
        assert!(text.starts_with("<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nDocument ID: reuse-00000\n"));
    }

    #[test]
    fn the_prompt_is_fitted_before_the_template() {
        let all = requests(&[("short-range", "700:700")], 5);
        let Prompt::Text(text) = &all[0].prompt else {
            panic!()
        };
        let user = text
            .strip_prefix(text::LLAMA3_USER_PREFIX)
            .and_then(|t| t.strip_suffix(text::LLAMA3_ASSISTANT_PREFIX))
            .unwrap();
        assert_eq!(WordTokenizer.count(user), 700);
        assert_eq!(
            all[0].prefix_hash.as_deref(),
            Some(sha256_hex(user).as_str())
        );
        assert!(all[0].labels.contains(&label("target_tokens", "700")));
    }

    #[test]
    fn same_seed_same_plan() {
        assert_eq!(requests(&[], 9), requests(&[], 9));
        assert_ne!(requests(&[], 9)[0].prompt, requests(&[], 10)[0].prompt);
    }

    #[test]
    fn phases_are_serial_and_counted() {
        let w = ReuseVerify {
            config: config(&[("repeats", "2")]).unwrap(),
            seed: 1,
            pending: None,
        };
        let phases = w.phases();
        assert_eq!(phases.len(), 2);
        assert!(phases.iter().all(|p| p.include_in_summary));
        assert!(phases.iter().all(|p| p.load == Some(LoadModel::Closed(1))));
    }

    // Test vectors for ports (workloads/PORTING.md): the document before
    // the host fits it, so they hold whatever the tokenizer.
    #[test]
    fn porting_vectors_seed_1337() {
        for (set, long_range, class, target, len, sha) in [
            (
                SizeSet::Short,
                (8192, 32768),
                "short",
                512,
                2871,
                "55c71e25536ad2b134bc4cc06bd92bdab16e578cd2cbb7790b84c54e20df337c",
            ),
            (
                SizeSet::Long,
                (6000, 7600),
                "long",
                7120,
                35063,
                "21024d1532efdb18221dcc022892296c964329be6d59faec417019f5dcc56109",
            ),
        ] {
            let mut rng = SplitMix64::new(1337);
            let got = text::choose_target(set, &mut rng, (512, 2048), long_range);
            assert_eq!(got, (class, target));
            let topic = rng.pick(&TOPICS);
            assert_eq!(*topic, "cache eviction workflow");
            let doc = text::synthetic_document(&mut rng, PROMPT_ID, topic, target);
            assert_eq!((doc.len(), sha256_hex(&doc).as_str()), (len, sha));
        }
    }
}
