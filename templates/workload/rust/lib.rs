//! `{{name}}`: a sparkhost workload. It decides *what* is sent and in which
//! phases; sparkhost decides *when*, sends it and measures it.
//!
//! This one sends `requests` short prompts in one phase whose load is left
//! to the command line (`--concurrency`, `--rate`). Edit [`plan`] to send
//! something of your own; `sparkhost inspect {{name}}.wasm` shows what
//! `describe()` says.

use sparkhost_workload::text::TOPICS;
use sparkhost_workload::{
    Api, Arrival, Batch, Generation, GenerationDefaults, Params, Phase, PromptFormat, RequestSpec,
    Result, SplitMix64, Template, Workload, WorkloadInfo, generation_params, label, message,
    param,
};

/// The validated params of one run.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub requests: u32,
    pub generation: Generation,
    pub format: PromptFormat,
}

impl Config {
    pub fn from_params(p: &Params) -> Result<Self> {
        Ok(Self {
            requests: p.get_u32_in("requests", 1, 1_000_000)?,
            generation: p.get_generation()?,
            format: PromptFormat::from_params(p)?,
        })
    }
}

fn declared_params() -> Vec<sparkhost_workload::ParamInfo> {
    let mut params = vec![param(
        "requests",
        "How many requests phase `main` sends (1 to 1,000,000).",
        "8",
    )];
    params.extend(generation_params(&GenerationDefaults::SEED));
    params.extend(PromptFormat::params(Api::Completions, Template::Llama3));
    params
}

/// Every request of the run, in order: request `i` asks about a topic
/// drawn from `SplitMix64(seed)`, so one seed always gives the same run.
pub fn plan(config: &Config, seed: u64) -> Vec<RequestSpec> {
    let mut rng = SplitMix64::new(seed);
    (0..config.requests)
        .map(|i| {
            let topic = rng.pick(&TOPICS);
            let text = format!("Write two sentences about {topic}.");
            RequestSpec {
                id: format!("{{name}}-{i:05}"),
                phase: "main".to_string(),
                session_id: None,
                prefix_hash: None,
                prompt: config.format.render(&[message("user", &text)]),
                generation: config.generation.clone(),
                arrival: Arrival::Asap,
                labels: vec![label("topic", topic)],
            }
        })
        .collect()
}

/// The planner of one run.
#[derive(Debug)]
pub struct MyWorkload {
    config: Config,
    seed: u64,
    /// Planned on the first `next_batch`; handed out front to back.
    pending: Option<std::vec::IntoIter<RequestSpec>>,
}

impl Workload for MyWorkload {
    fn describe() -> WorkloadInfo {
        WorkloadInfo {
            name: "{{name}}".to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            description: "Short prompts on synthetic topics, one phase (`main`) whose load \
                          is left to the command line."
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
        vec![Phase {
            name: "main".to_string(),
            include_in_summary: true,
            // None: `--concurrency` / `--rate` decide.
            load: None,
        }]
    }

    fn next_batch(&mut self, max: u32) -> Result<Batch> {
        let (config, seed) = (&self.config, self.seed);
        let pending = self
            .pending
            .get_or_insert_with(|| plan(config, seed).into_iter());
        let requests: Vec<RequestSpec> = pending.by_ref().take(max as usize).collect();
        Ok(Batch {
            requests,
            done: pending.len() == 0,
        })
    }
}

sparkhost_workload::export_workload!(MyWorkload);
