//! `synthetic`: the seed harness's `standard` scenario as a workload.
//!
//! A warmup phase and a measured `main` phase of single-turn prompts. Each
//! prompt is a synthetic document (see `sparkhost_workload::text`) sized to a
//! target token count drawn from the `short` or `long` size rules.
//!
//! Two defects of the seed are fixed here. The seed sized the *templated*
//! prompt, so trimming could cut off the assistant header and padding could
//! land after it; here the user text is fitted first and the template is
//! added afterwards, intact. And the seed's prompt bytes depended on whether
//! a tokenizer happened to be installed; here they depend only on the seed,
//! the params and the host's tokenizer (whose id the host records).
//!
//! `salt` (default `per-run`) is folded into both phases' seeds and put in
//! front of every document's id (its first line), so a
//! second run on a warm server shares no prompt with the first; `salt=off`
//! gives the seed harness's prompts, byte-identical across runs.
//!
//! `target_tokens` counts the tokens of the user text. The raw Llama-3
//! template (or the server's chat template with `api=chat`) adds its own
//! fixed overhead on top.
//!
//! # Layout
//!
//! - [`Config`]: params parsed and validated once, in `create`.
//! - [`Synthetic`]: the planner; draws lazily, one phase after the other,
//!   with one PRNG per phase so batch sizes never change the output.

use sparkhost_workload::text::{self, FILLER, SizeSet, TOPICS};
use sparkhost_workload::{
    Arrival, Batch, Generation, GenerationDefaults, ParamInfo, Params, Phase, PromptFormat,
    RequestSpec, Result, Salt, SplitMix64, Workload, WorkloadError, WorkloadInfo,
    generation_params, host, label, message, param, salt, salt_param,
};

/// The seed offset its warmup prompts this way, so warmup never repeats a
/// measured prompt.
const WARMUP_SEED_OFFSET: u64 = 999;

/// The validated params of one run.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub set: SizeSet,
    pub requests: u32,
    pub warmup: u32,
    pub short_range: (u32, u32),
    pub long_range: (u32, u32),
    pub generation: Generation,
    pub format: PromptFormat,
    /// Folded into every phase's seed (see `sparkhost_workload::salt`).
    pub salt: Salt,
}

impl Config {
    pub fn from_params(p: &Params) -> Result<Self> {
        let set = match p.get_choice("set", &["short", "long", "mixed"])? {
            "short" => SizeSet::Short,
            "long" => SizeSet::Long,
            _ => SizeSet::Mixed,
        };
        let requests = p.get_u32("requests")?;
        if requests == 0 {
            return Err(invalid("requests", "0", "at least 1 (the measured phase)"));
        }
        // Read apart from `get_generation`, which would word a 0 differently.
        let max_tokens = p.get_u32("max-tokens")?;
        if max_tokens == 0 {
            return Err(invalid("max-tokens", "0", "at least 1"));
        }
        let sampling = p.get_sampling()?;
        let format = PromptFormat::from_params(p)?;
        Ok(Self {
            set,
            requests,
            warmup: p.get_u32("warmup")?,
            short_range: p.get_range("short-range")?,
            long_range: p.get_range("long-range")?,
            generation: sampling.generation(max_tokens, p.get_bool("ignore-eos")?),
            format,
            salt: Salt::from_params(p)?,
        })
    }
}

fn invalid(name: &str, value: &str, expected: &str) -> WorkloadError {
    WorkloadError::InvalidConfig(format!(
        "parameter `{name}`: {value:?} is not valid; expected {expected}"
    ))
}

/// The params, in `describe()` order: sizes, the SDK's generation params,
/// then `api` and `template` (read with [`PromptFormat::from_params`], but
/// described for this workload's single user message).
fn declared_params() -> Vec<ParamInfo> {
    let mut params = vec![
        param(
            "set",
            "Prompt sizes: short (from short-range), long (from long-range), or mixed \
             (a fair coin per prompt).",
            "short",
        ),
        param(
            "requests",
            "Requests in the measured phase `main` (at least 1).",
            "64",
        ),
        param(
            "warmup",
            "Requests in the phase `warmup`, sent first and left out of the summary; \
             0 drops the phase. Uses seed+999, so its prompts differ from main's.",
            "8",
        ),
        param(
            "short-range",
            "MIN:MAX target user-text tokens for short prompts. A uniform pick among \
             512, 768, 1024, 1536, 2048 inside the range; uniform in MIN..=MAX when \
             none is inside.",
            "512:2048",
        ),
        param(
            "long-range",
            "MIN:MAX target user-text tokens for long prompts. A uniform pick among \
             8192, 12288, 16384, 24576, 32768 inside the range; uniform in MIN..=MAX \
             when none is inside. The default does not fit an engine capped at 8192 \
             tokens; use e.g. 6000:7600 there.",
            "8192:32768",
        ),
    ];
    params.extend(generation_params(&GenerationDefaults::SEED));
    params.extend([
        param(
            "api",
            "completions sends a raw prompt to /v1/completions; chat sends one user \
             message to /v1/chat/completions (the server applies its chat template).",
            "completions",
        ),
        param(
            "template",
            "With api=completions: llama3 wraps the user text in the raw Llama-3 chat \
             template, none sends it bare. Must be left unset with api=chat.",
            "llama3",
        ),
        salt_param(salt::PER_RUN),
    ]);
    params
}

/// A prompt before the host sizes it.
#[derive(Debug, Clone, PartialEq)]
pub struct Draft {
    pub id: String,
    pub class: &'static str,
    pub target_tokens: u32,
    pub document: String,
}

/// One phase's prompts, drawn on demand.
#[derive(Debug)]
struct PhasePlan {
    name: &'static str,
    include_in_summary: bool,
    count: u32,
    drawn: u32,
    rng: SplitMix64,
}

impl PhasePlan {
    fn new(name: &'static str, include_in_summary: bool, count: u32, seed: u64) -> Self {
        Self {
            name,
            include_in_summary,
            count,
            drawn: 0,
            rng: SplitMix64::new(seed),
        }
    }

    /// Per prompt: target (see [`text::choose_target`]), then `pick(TOPICS)`, then
    /// the document's own draws.
    fn next_draft(&mut self, config: &Config) -> Option<Draft> {
        if self.drawn == self.count {
            return None;
        }
        let id = format!("{}-{:05}", self.name, self.drawn);
        self.drawn += 1;
        let (class, target_tokens) = text::choose_target(
            config.set,
            &mut self.rng,
            config.short_range,
            config.long_range,
        );
        let topic = self.rng.pick(&TOPICS);
        let doc_id = config.salt.doc_id(&id);
        let document = text::synthetic_document(&mut self.rng, &doc_id, topic, target_tokens);
        Some(Draft {
            id,
            class,
            target_tokens,
            document,
        })
    }
}

/// The planner of one run.
#[derive(Debug)]
pub struct Synthetic {
    config: Config,
    /// Run order; a phase with no requests is left out.
    phases: Vec<PhasePlan>,
}

impl Synthetic {
    fn new(config: Config, seed: u64) -> Self {
        let seed = config.salt.mix(seed);
        let warmup = PhasePlan::new(
            "warmup",
            false,
            config.warmup,
            seed.wrapping_add(WARMUP_SEED_OFFSET),
        );
        let main = PhasePlan::new("main", true, config.requests, seed);
        let phases = [warmup, main].into_iter().filter(|p| p.count > 0).collect();
        Self { config, phases }
    }

    fn next_draft(&mut self) -> Option<(&'static str, Draft)> {
        let config = &self.config;
        self.phases
            .iter_mut()
            .find_map(|p| p.next_draft(config).map(|d| (p.name, d)))
    }

    fn remaining(&self) -> bool {
        self.phases.iter().any(|p| p.drawn < p.count)
    }

    fn request(&self, phase: &str, draft: Draft) -> RequestSpec {
        let user_text = host::fit_to_tokens(&draft.document, draft.target_tokens, FILLER);
        let prompt = self.config.format.render(&[message("user", &user_text)]);
        RequestSpec {
            id: draft.id,
            phase: phase.to_string(),
            session_id: None,
            prefix_hash: None,
            prompt,
            generation: self.config.generation.clone(),
            arrival: Arrival::Asap,
            labels: vec![
                label("prompt_set", draft.class),
                label("target_tokens", &draft.target_tokens.to_string()),
                label("salt", self.config.salt.label_value()),
            ],
        }
    }
}

impl Workload for Synthetic {
    fn describe() -> WorkloadInfo {
        WorkloadInfo {
            name: "synthetic".to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            description: "Single-turn synthetic documents sized to a target token count: a \
                          warmup phase, then a measured `main` phase (the seed harness's \
                          `standard` scenario). The user text is fitted to the target with \
                          the run's tokenizer before any template is applied."
                .to_string(),
            params: declared_params(),
        }
    }

    fn create(params: &Params, seed: u64) -> Result<Self> {
        Ok(Self::new(Config::from_params(params)?, seed))
    }

    fn phases(&self) -> Vec<Phase> {
        self.phases
            .iter()
            .map(|p| Phase {
                name: p.name.to_string(),
                include_in_summary: p.include_in_summary,
                load: None,
            })
            .collect()
    }

    fn next_batch(&mut self, max: u32) -> Result<Batch> {
        let mut requests = Vec::new();
        while requests.len() < max as usize {
            let Some((phase, draft)) = self.next_draft() else {
                break;
            };
            requests.push(self.request(phase, draft));
        }
        Ok(Batch {
            requests,
            done: !self.remaining(),
        })
    }
}

sparkhost_workload::export_workload!(Synthetic);

#[cfg(test)]
mod tests {
    use super::*;
    use sparkhost_workload::{Api, Template};

    /// Unsalted unless the test says otherwise (`per-run` needs a host).
    fn params(pairs: &[(&str, &str)]) -> Result<Params> {
        let mut all = pairs.to_vec();
        if !pairs.iter().any(|(k, _)| *k == "salt") {
            all.push(("salt", "off"));
        }
        Params::from_pairs(&Synthetic::describe().params, &all)
    }

    fn config(pairs: &[(&str, &str)]) -> Result<Config> {
        Config::from_params(&params(pairs)?)
    }

    fn drafts(pairs: &[(&str, &str)], seed: u64) -> Vec<(&'static str, Draft)> {
        let mut planner = Synthetic::new(config(pairs).unwrap(), seed);
        std::iter::from_fn(|| planner.next_draft()).collect()
    }

    #[test]
    fn defaults_match_the_seed() {
        let c = config(&[]).unwrap();
        assert_eq!(c.set, SizeSet::Short);
        assert_eq!((c.requests, c.warmup), (64, 8));
        assert_eq!((c.short_range, c.long_range), ((512, 2048), (8192, 32768)));
        assert_eq!(c.generation.max_tokens, 256);
        assert_eq!(c.generation.temperature, Some(0.7));
        assert_eq!(c.generation.top_p, Some(1.0));
        assert_eq!(c.generation.stop, ["<|eot_id|>"]);
        assert_eq!(c.generation.seed, None);
        assert!(!c.generation.ignore_eos);
        assert_eq!(
            (c.format.api, c.format.template),
            (Api::Completions, Template::Llama3)
        );
    }

    #[test]
    fn bad_params_are_invalid_config() {
        for pairs in [
            &[("set", "huge")][..],
            &[("requests", "0")],
            &[("max-tokens", "0")],
            &[("temperature", "-0.1")],
            &[("top-p", "0")],
            &[("top-p", "1.5")],
            &[("long-range", "7600:6000")],
            &[("api", "chat"), ("template", "llama3")],
            &[("nope", "1")],
        ] {
            assert!(
                matches!(config(pairs), Err(WorkloadError::InvalidConfig(_))),
                "{pairs:?}"
            );
        }
        let c = config(&[("temperature", ""), ("top-p", ""), ("stop", "")]).unwrap();
        assert_eq!((c.generation.temperature, c.generation.top_p), (None, None));
        assert!(c.generation.stop.is_empty());
        assert_eq!(config(&[("api", "chat")]).unwrap().format.api, Api::Chat);
    }

    #[test]
    fn phases_run_warmup_then_main_with_their_ids() {
        let all = drafts(&[("warmup", "2"), ("requests", "3")], 1337);
        let ids: Vec<(&str, &str)> = all.iter().map(|(p, d)| (*p, d.id.as_str())).collect();
        assert_eq!(
            ids,
            [
                ("warmup", "warmup-00000"),
                ("warmup", "warmup-00001"),
                ("main", "main-00000"),
                ("main", "main-00001"),
                ("main", "main-00002"),
            ]
        );
        let planner = Synthetic::new(config(&[("warmup", "0")]).unwrap(), 1);
        let names: Vec<&str> = planner.phases.iter().map(|p| p.name).collect();
        assert_eq!(names, ["main"]);
    }

    #[test]
    fn main_prompts_ignore_the_warmup_count() {
        let with = drafts(&[("warmup", "5"), ("requests", "4")], 42);
        let without = drafts(&[("warmup", "0"), ("requests", "4")], 42);
        assert_eq!(with[5..], without[..]);
    }

    #[test]
    fn warmup_uses_seed_plus_999() {
        let warm = drafts(&[("warmup", "1"), ("requests", "1")], 1)[0]
            .1
            .clone();
        let main = drafts(&[("warmup", "0"), ("requests", "1")], 1000)[0]
            .1
            .clone();
        assert_eq!(warm.target_tokens, main.target_tokens);
        assert_eq!(
            warm.document.replace("warmup-00000", "main-00000"),
            main.document
        );
    }

    #[test]
    fn a_salt_changes_every_prompt_and_is_labelled() {
        let pairs = [("requests", "3"), ("warmup", "1")];
        let salted = |s: &str| {
            let mut p = pairs.to_vec();
            p.push(("salt", s));
            drafts(&p, 9)
        };
        assert_eq!(salted("off"), drafts(&pairs, 9));
        assert_eq!(salted("r1"), salted("r1"));
        let (a, b) = (salted("r1"), salted("r2"));
        assert!(a.iter().zip(&b).all(|(x, y)| x.1.document != y.1.document));
        assert!(
            a[0].1
                .document
                .starts_with("Document ID: r1-warmup-00000\n")
        );
        let c = config(&[("salt", "r1")]).unwrap();
        assert_eq!(c.salt.label_value(), "r1");
        assert!(config(&[("salt", "bad salt")]).is_err());
    }

    #[test]
    fn same_seed_same_plan() {
        let pairs = [("set", "mixed"), ("long-range", "6000:7600")];
        assert_eq!(drafts(&pairs, 9), drafts(&pairs, 9));
        assert_ne!(drafts(&pairs, 9), drafts(&pairs, 10));
    }
}
