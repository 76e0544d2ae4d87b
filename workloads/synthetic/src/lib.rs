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
//! `target_tokens` counts the tokens of the user text. The raw Llama-3
//! template (or the server's chat template with `api=chat`) adds its own
//! fixed overhead on top.
//!
//! # Layout
//!
//! - [`Config`]: params parsed and validated once, in `create`.
//! - [`choose_target`]: the seed's size rules.
//! - [`Synthetic`]: the planner; draws lazily, one phase after the other,
//!   with one PRNG per phase so batch sizes never change the output.

use sparkhost_workload::text::{self, FILLER, TOPICS};
use sparkhost_workload::{
    Arrival, Batch, ChatMessage, Generation, Label, Params, Phase, Prompt, RequestSpec, Result,
    SplitMix64, Workload, WorkloadError, WorkloadInfo, host, param,
};

/// Target sizes the `short` rule prefers, as in the seed.
const SHORT_CHOICES: [u32; 5] = [512, 768, 1024, 1536, 2048];
/// Target sizes the `long` rule prefers, as in the seed.
const LONG_CHOICES: [u32; 5] = [8192, 12288, 16384, 24576, 32768];
/// The seed offset its warmup prompts this way, so warmup never repeats a
/// measured prompt.
const WARMUP_SEED_OFFSET: u64 = 999;

/// Which size rule a run uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PromptSet {
    Short,
    Long,
    /// Short or long per prompt, by a fair coin.
    Mixed,
}

/// The endpoint requests go to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    Completions,
    Chat,
}

/// How user text becomes a `/v1/completions` prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Template {
    Llama3,
    None,
}

/// The validated params of one run.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub set: PromptSet,
    pub requests: u32,
    pub warmup: u32,
    pub short_range: (u32, u32),
    pub long_range: (u32, u32),
    pub generation: Generation,
    pub api: Api,
    pub template: Template,
}

impl Config {
    pub fn from_params(p: &Params) -> Result<Self> {
        let set = match p.get_choice("set", &["short", "long", "mixed"])? {
            "short" => PromptSet::Short,
            "long" => PromptSet::Long,
            _ => PromptSet::Mixed,
        };
        let requests = p.get_u32("requests")?;
        if requests == 0 {
            return Err(invalid("requests", "0", "at least 1 (the measured phase)"));
        }
        let max_tokens = p.get_u32("max-tokens")?;
        if max_tokens == 0 {
            return Err(invalid("max-tokens", "0", "at least 1"));
        }
        let temperature = p.get_opt_f64("temperature")?;
        if let Some(t) = temperature.filter(|t| *t < 0.0) {
            return Err(invalid(
                "temperature",
                &t.to_string(),
                "0 or more, or empty",
            ));
        }
        let top_p = p.get_opt_f64("top-p")?;
        if let Some(v) = top_p.filter(|v| *v <= 0.0 || *v > 1.0) {
            return Err(invalid(
                "top-p",
                &v.to_string(),
                "above 0 and at most 1, or empty",
            ));
        }
        let api = match p.get_choice("api", &["completions", "chat"])? {
            "completions" => Api::Completions,
            _ => Api::Chat,
        };
        let template = match p.get_choice("template", &["llama3", "none"])? {
            "llama3" => Template::Llama3,
            _ => Template::None,
        };
        if api == Api::Chat && p.is_set("template")? {
            // The server applies its own chat template; a second one would be ignored
            // silently, which hides a misunderstanding.
            return Err(WorkloadError::InvalidConfig(
                "parameter `template` applies only to api=completions; leave it unset with api=chat"
                    .to_string(),
            ));
        }
        Ok(Self {
            set,
            requests,
            warmup: p.get_u32("warmup")?,
            short_range: p.get_range("short-range")?,
            long_range: p.get_range("long-range")?,
            generation: Generation {
                max_tokens,
                temperature: temperature.map(|t| t as f32),
                top_p: top_p.map(|v| v as f32),
                stop: p.get_list("stop")?,
                seed: p.get_opt_u64("request-seed")?,
                ignore_eos: p.get_bool("ignore-eos")?,
            },
            api,
            template,
        })
    }
}

fn invalid(name: &str, value: &str, expected: &str) -> WorkloadError {
    WorkloadError::InvalidConfig(format!(
        "parameter `{name}`: {value:?} is not valid; expected {expected}"
    ))
}

/// The size class and target token count of the next prompt.
///
/// Draws: `mixed` first draws `next_f64() < 0.5` (short). Then, when some of
/// the class's preferred sizes fall in its range, `pick` among them in
/// ascending order; otherwise `range_u32(min, max)`.
pub fn choose_target(
    set: PromptSet,
    rng: &mut SplitMix64,
    short_range: (u32, u32),
    long_range: (u32, u32),
) -> (&'static str, u32) {
    let short = match set {
        PromptSet::Short => true,
        PromptSet::Long => false,
        PromptSet::Mixed => rng.next_f64() < 0.5,
    };
    if short {
        ("short", sample_target(rng, &SHORT_CHOICES, short_range))
    } else {
        ("long", sample_target(rng, &LONG_CHOICES, long_range))
    }
}

fn sample_target(rng: &mut SplitMix64, preferred: &[u32], (min, max): (u32, u32)) -> u32 {
    let in_range: Vec<u32> = preferred
        .iter()
        .copied()
        .filter(|v| (min..=max).contains(v))
        .collect();
    if in_range.is_empty() {
        rng.range_u32(min, max)
    } else {
        *rng.pick(&in_range)
    }
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

    /// Per prompt: target (see [`choose_target`]), then `pick(TOPICS)`, then
    /// the document's own draws.
    fn next_draft(&mut self, config: &Config) -> Option<Draft> {
        if self.drawn == self.count {
            return None;
        }
        let id = format!("{}-{:05}", self.name, self.drawn);
        self.drawn += 1;
        let (class, target_tokens) = choose_target(
            config.set,
            &mut self.rng,
            config.short_range,
            config.long_range,
        );
        let topic = self.rng.pick(&TOPICS);
        let document = text::synthetic_document(&mut self.rng, &id, topic, target_tokens);
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
        let prompt = match (self.config.api, self.config.template) {
            (Api::Chat, _) => Prompt::Chat(vec![ChatMessage {
                role: "user".to_string(),
                content: user_text,
            }]),
            (Api::Completions, Template::Llama3) => {
                Prompt::Text(text::llama3_completion_prompt(&user_text))
            }
            (Api::Completions, Template::None) => Prompt::Text(user_text),
        };
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
            ],
        }
    }
}

fn label(key: &str, value: &str) -> Label {
    Label {
        key: key.to_string(),
        value: value.to_string(),
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
            params: vec![
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
                param(
                    "max-tokens",
                    "max_tokens sent with every request (at least 1).",
                    "256",
                ),
                param(
                    "temperature",
                    "temperature sent with every request; empty leaves it out.",
                    "0.7",
                ),
                param(
                    "top-p",
                    "top_p sent with every request, in (0, 1]; empty leaves it out.",
                    "1.0",
                ),
                param(
                    "stop",
                    "Comma-separated stop strings; empty sends none. Strings cannot contain \
                     a comma.",
                    "<|eot_id|>",
                ),
                param(
                    "request-seed",
                    "Sampling seed sent as `seed` with every request; empty leaves it out.",
                    "",
                ),
                param(
                    "ignore-eos",
                    "true asks the server to generate exactly max-tokens tokens.",
                    "false",
                ),
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
            ],
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

    fn params(pairs: &[(&str, &str)]) -> Result<Params> {
        Params::from_pairs(&Synthetic::describe().params, pairs)
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
        assert_eq!(c.set, PromptSet::Short);
        assert_eq!((c.requests, c.warmup), (64, 8));
        assert_eq!((c.short_range, c.long_range), ((512, 2048), (8192, 32768)));
        assert_eq!(c.generation.max_tokens, 256);
        assert_eq!(c.generation.temperature, Some(0.7));
        assert_eq!(c.generation.top_p, Some(1.0));
        assert_eq!(c.generation.stop, ["<|eot_id|>"]);
        assert_eq!(c.generation.seed, None);
        assert!(!c.generation.ignore_eos);
        assert_eq!((c.api, c.template), (Api::Completions, Template::Llama3));
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
        assert_eq!(config(&[("api", "chat")]).unwrap().api, Api::Chat);
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
    fn size_rules_follow_the_seed() {
        let mut rng = SplitMix64::new(3);
        for _ in 0..200 {
            let (class, t) = choose_target(PromptSet::Short, &mut rng, (512, 2048), (1, 1));
            assert_eq!(class, "short");
            assert!(SHORT_CHOICES.contains(&t));
            let (_, t) = choose_target(PromptSet::Short, &mut rng, (600, 1000), (1, 1));
            assert_eq!(t, 768);
            let (class, t) = choose_target(PromptSet::Long, &mut rng, (1, 1), (6000, 7600));
            assert_eq!(class, "long");
            assert!((6000..=7600).contains(&t));
        }
        let classes: Vec<&str> = (0..200)
            .map(|_| choose_target(PromptSet::Mixed, &mut rng, (512, 2048), (8192, 32768)).0)
            .collect();
        assert!(classes.contains(&"short") && classes.contains(&"long"));
    }

    #[test]
    fn same_seed_same_plan() {
        let pairs = [("set", "mixed"), ("long-range", "6000:7600")];
        assert_eq!(drafts(&pairs, 9), drafts(&pairs, 9));
        assert_ne!(drafts(&pairs, 9), drafts(&pairs, 10));
    }
}
