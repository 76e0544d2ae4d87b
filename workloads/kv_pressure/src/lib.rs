//! `kv_pressure`: a working set sized against a KV tier's capacity, so a run
//! can be aimed at, say, "just past the CPU tier".
//!
//! The user gives the capacities of the tiers (GPU, CPU, disk) in whatever
//! unit they know them, picks a `target-tier` and an `overflow` factor; the
//! workload sizes a working set of unique prefixes to `overflow` × that
//! tier's capacity, sends each prefix once (`populate`), then revisits all
//! of them (`revisit`, `revisit_2`, …) in a chosen order. With overflow > 1
//! the working set cannot fit the target tier, so the revisits must find
//! (part of) it in the next tier down, or recompute it; with overflow < 1
//! it fits and revisits should hit the target tier.
//!
//! # Arithmetic
//!
//! Capacity of a tier, in tokens, from its param (`gpu-capacity`,
//! `cpu-capacity`, `disk-capacity`):
//!
//! | value | tokens |
//! |---|---|
//! | `N` or `Ntokens` | N |
//! | `Nblocks` | N × `block-size` |
//! | `X` + `GB`/`MB` | floor(X × 10^9 (10^6) / `bytes-per-token`) |
//! | `X` + `GiB`/`MiB` | floor(X × 2^30 (2^20) / `bytes-per-token`) |
//!
//! `bytes-per-token` is the KV size of one token: 2 (K and V) × layers ×
//! KV heads × head size × bytes per element; e.g. 131072 for Llama-3.1-8B in
//! bf16 (2 × 32 × 8 × 128 × 2).
//!
//! Capacity the working set is compared with: with `tier-model=inclusive`
//! (the default; KVBM copies blocks down the tiers, so a lower tier holds
//! what the upper one holds) the target tier's own capacity; with
//! `exclusive` the sum of the tiers from GPU down to the target.
//!
//! `working_set_tokens = ceil(overflow × capacity)`,
//! `prefixes = ceil(working_set_tokens / prefix-tokens)`. Only prefix
//! tokens count: each request also has a short question and its output,
//! which are never reused. Choose `prefix-tokens` as a multiple of the
//! engine's block size, since a partial last block cannot be reused.
//! All computed sizes go into every request's labels.
//!
//! Revisit order: `same` (the populate order: with an LRU tier and
//! overflow > 1 every prefix is evicted just before it is needed, the worst
//! case), `reverse` (most recently used first, the best case), or `random`
//! (a fresh shuffle per revisit).
//!
//! # Layout
//!
//! - [`Capacity`], [`parse_capacity`], [`Sizing`]: the arithmetic above.
//! - [`Config`]: params parsed and validated once, in `create`.
//! - [`KvPressure`]: the planner, a [`Sequence`] of populate and revisits.

use std::rc::Rc;

use sparkhost_workload::text::{self, FILLER, TOPICS};
use sparkhost_workload::{
    Api, Arrival, Generation, GenerationDefaults, HostTokenizer, Label, ParamInfo, Params, Phase,
    PromptFormat, RequestSpec, Result, Sequence, SplitMix64, Template, Tokenizer, Workload,
    WorkloadError, WorkloadInfo, counted, generation_params, host, label, message, param,
    sha256_hex,
};

/// More prefixes than this is almost certainly a unit mistake.
pub const MAX_PREFIXES: u64 = 1_000_000;

/// A tier capacity as the user wrote it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Capacity {
    Tokens(u64),
    Blocks(u64),
    Bytes(f64),
}

fn invalid(msg: String) -> WorkloadError {
    WorkloadError::InvalidConfig(msg)
}

/// Parses `N`, `Ntokens`, `Nblocks`, `X GB`, `X GiB`, `X MB`, `X MiB`
/// (units case-insensitive, spaces allowed); `None` for an empty value.
pub fn parse_capacity(name: &str, value: &str) -> Result<Option<Capacity>> {
    let v = value.trim();
    if v.is_empty() {
        return Ok(None);
    }
    let split = v
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(v.len());
    let (number, unit) = (v[..split].trim(), v[split..].trim().to_ascii_lowercase());
    let bad = || {
        invalid(format!(
            "parameter `{name}`: {value:?} is not valid; expected a capacity such as 65536, \
             65536tokens, 1024blocks, 8GB or 8GiB"
        ))
    };
    let whole = || number.parse::<u64>().map_err(|_| bad());
    let bytes = |scale: f64| {
        number
            .parse::<f64>()
            .ok()
            .filter(|x| x.is_finite() && *x >= 0.0)
            .map(|x| Capacity::Bytes(x * scale))
            .ok_or_else(bad)
    };
    let cap = match unit.as_str() {
        "" | "tokens" | "token" => Capacity::Tokens(whole()?),
        "blocks" | "block" => Capacity::Blocks(whole()?),
        "gb" => bytes(1e9)?,
        "mb" => bytes(1e6)?,
        "gib" => bytes(1_073_741_824.0)?,
        "mib" => bytes(1_048_576.0)?,
        _ => return Err(bad()),
    };
    Ok(Some(cap))
}

/// Which tier the working set is sized against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Tier {
    Gpu,
    Cpu,
    Disk,
}

impl Tier {
    pub fn name(self) -> &'static str {
        match self {
            Tier::Gpu => "gpu",
            Tier::Cpu => "cpu",
            Tier::Disk => "disk",
        }
    }
}

/// The revisit order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    Same,
    Reverse,
    Random,
}

/// The computed sizes of a run.
#[derive(Debug, Clone, PartialEq)]
pub struct Sizing {
    pub capacity_tokens: u64,
    pub working_set_tokens: u64,
    pub prefixes: u64,
}

/// The validated params of one run.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub target: Tier,
    pub overflow: f64,
    pub exclusive: bool,
    pub prefix_tokens: u32,
    pub revisits: u32,
    pub order: Order,
    pub sizing: Sizing,
    pub generation: Generation,
    pub format: PromptFormat,
}

impl Config {
    pub fn from_params(p: &Params) -> Result<Self> {
        let target = match p.get_choice("target-tier", &["gpu", "cpu", "disk"])? {
            "gpu" => Tier::Gpu,
            "cpu" => Tier::Cpu,
            _ => Tier::Disk,
        };
        let overflow = p.get_f64("overflow")?;
        if overflow <= 0.0 {
            return Err(invalid(format!(
                "parameter `overflow`: {overflow} is not valid; expected a factor above 0 such as 1.2"
            )));
        }
        let exclusive = p.get_choice("tier-model", &["inclusive", "exclusive"])? == "exclusive";
        let block_size = p.get_opt_u32("block-size")?;
        let bytes_per_token = p.get_opt_f64("bytes-per-token")?;
        let tokens_of = |tier: Tier| -> Result<u64> {
            let name = format!("{}-capacity", tier.name());
            let Some(cap) = parse_capacity(&name, p.get_str(&name)?)? else {
                return Err(invalid(format!(
                    "parameter `{name}` is empty; target-tier={}{} needs it",
                    target.name(),
                    if exclusive {
                        " with tier-model=exclusive"
                    } else {
                        ""
                    }
                )));
            };
            match cap {
                Capacity::Tokens(n) => Ok(n),
                Capacity::Blocks(n) => match block_size.filter(|b| *b > 0) {
                    Some(b) => Ok(n.saturating_mul(u64::from(b))),
                    None => Err(invalid(format!(
                        "parameter `{name}` is given in blocks; set `block-size` (tokens per \
                         KV block, e.g. 32 for TensorRT-LLM, 64 for vLLM)"
                    ))),
                },
                Capacity::Bytes(b) => match bytes_per_token.filter(|v| *v > 0.0) {
                    Some(bpt) => Ok((b / bpt).floor() as u64),
                    None => Err(invalid(format!(
                        "parameter `{name}` is given in bytes; set `bytes-per-token` (KV bytes \
                         of one token, e.g. 131072 for Llama-3.1-8B in bf16)"
                    ))),
                },
            }
        };
        let capacity_tokens = if exclusive {
            [Tier::Gpu, Tier::Cpu, Tier::Disk]
                .into_iter()
                .filter(|t| *t <= target)
                .map(tokens_of)
                .sum::<Result<u64>>()?
        } else {
            tokens_of(target)?
        };
        if capacity_tokens == 0 {
            return Err(invalid(format!(
                "the {} tier's capacity comes to 0 tokens; check its value and unit",
                target.name()
            )));
        }
        let prefix_tokens = p.get_u32_min("prefix-tokens", 1)?;
        let working_set_tokens = (overflow * capacity_tokens as f64).ceil() as u64;
        let prefixes = working_set_tokens.div_ceil(u64::from(prefix_tokens)).max(1);
        if prefixes > MAX_PREFIXES {
            return Err(invalid(format!(
                "the working set of {working_set_tokens} tokens needs {prefixes} prefixes of \
                 {prefix_tokens} tokens, more than {MAX_PREFIXES}; check the capacity units or \
                 raise prefix-tokens"
            )));
        }
        Ok(Self {
            target,
            overflow,
            exclusive,
            prefix_tokens,
            revisits: p.get_u32_min("revisits", 1)?,
            order: match p.get_choice("replay-order", &["same", "reverse", "random"])? {
                "same" => Order::Same,
                "reverse" => Order::Reverse,
                _ => Order::Random,
            },
            sizing: Sizing {
                capacity_tokens,
                working_set_tokens,
                prefixes,
            },
            generation: p.get_generation()?,
            format: PromptFormat::from_params(p)?,
        })
    }
}

fn declared_params() -> Vec<ParamInfo> {
    let capacity = |tier: &str| {
        format!(
            "Capacity of the {tier} KV tier: N or Ntokens, Nblocks (needs block-size), or X \
             with GB, GiB, MB, MiB (needs bytes-per-token). Needed for the target tier (and the \
             tiers above it with tier-model=exclusive)."
        )
    };
    let mut params = vec![
        param(
            "target-tier",
            "The tier the working set is sized against: gpu, cpu or disk.",
            "cpu",
        ),
        param(
            "overflow",
            "Working set = overflow × the target tier's capacity (e.g. 1.2: just past it; 0.8: \
             fits).",
            "1.2",
        ),
        param("gpu-capacity", &capacity("GPU"), ""),
        param("cpu-capacity", &capacity("CPU (host memory)"), ""),
        param("disk-capacity", &capacity("disk"), ""),
        param(
            "block-size",
            "Tokens per KV block, for capacities in blocks.",
            "",
        ),
        param(
            "bytes-per-token",
            "KV bytes of one token (2 × layers × KV heads × head size × bytes per element), for \
             capacities in bytes.",
            "",
        ),
        param(
            "tier-model",
            "inclusive: a lower tier also holds what the upper ones hold (KVBM), so the \
             capacity is the target tier's own; exclusive: the capacities of the GPU tier down \
             to the target add up.",
            "inclusive",
        ),
        param(
            "prefix-tokens",
            "Tokens of each unique prefix of the working set; best a multiple of the engine's \
             block size.",
            "2048",
        ),
        param(
            "revisits",
            "How many times the whole working set is revisited after populate: phases \
             revisit, revisit_2, ….",
            "1",
        ),
        param(
            "replay-order",
            "Revisit order: same (populate order; worst case for LRU), reverse (most recent \
             first), random (a new shuffle per revisit).",
            "same",
        ),
    ];
    params.extend(generation_params(&GenerationDefaults {
        max_tokens: "16",
        ..GenerationDefaults::SEED
    }));
    params.extend(PromptFormat::params(Api::Completions, Template::None));
    params
}

/// Name of pass `pass`: `populate` (0), `revisit`, `revisit_2`, ….
pub fn phase_name(pass: u32) -> String {
    match pass {
        0 => "populate".to_string(),
        1 => "revisit".to_string(),
        k => format!("revisit_{k}"),
    }
}

/// The order prefixes are visited in pass `pass`, by `order`.
///
/// `random` is a Fisher-Yates shuffle with `SplitMix64(shuffle_seed)`: for
/// `i` from `n - 1` down to 1, swap `i` with `range_u32(0, i)`.
pub fn visit_order(n: u32, pass: u32, order: Order, shuffle_seed: u64) -> Vec<u32> {
    let mut v: Vec<u32> = (0..n).collect();
    if pass == 0 {
        return v;
    }
    match order {
        Order::Same => {}
        Order::Reverse => v.reverse(),
        Order::Random => {
            let mut rng = SplitMix64::new(shuffle_seed);
            for i in (1..n).rev() {
                let j = rng.range_u32(0, i);
                v.swap(i as usize, j as usize);
            }
        }
    }
    v
}

/// The text of prefix `i`: a synthetic document `"kvp-<i:06>"` from the
/// prefix's own seed, fitted to `prefix-tokens`.
pub fn prefix_text(i: u32, prefix_seed: u64, prefix_tokens: u32, tok: &dyn Tokenizer) -> String {
    let mut rng = SplitMix64::new(prefix_seed);
    let topic = rng.pick(&TOPICS);
    let doc = text::synthetic_document(&mut rng, &format!("kvp-{i:06}"), topic, prefix_tokens);
    tok.fit(&doc, prefix_tokens, FILLER)
}

/// The planner of one run.
pub struct KvPressure {
    config: Config,
    seq: Sequence,
    logged: bool,
}

impl KvPressure {
    /// Seeds come from `SplitMix64(seed)`: one per prefix, in order, then
    /// one shuffle seed per revisit.
    pub fn sequence(config: &Config, seed: u64) -> Sequence {
        let n = config.sizing.prefixes as u32;
        let mut master = SplitMix64::new(seed);
        let prefix_seeds: Rc<Vec<u64>> = Rc::new((0..n).map(|_| master.next_u64()).collect());
        let common: Rc<Vec<Label>> = Rc::new(vec![
            label("prompt_set", "kv_pressure"),
            label("target_tokens", &config.prefix_tokens.to_string()),
            label("target_tier", config.target.name()),
            label(
                "tier_model",
                if config.exclusive {
                    "exclusive"
                } else {
                    "inclusive"
                },
            ),
            label("overflow", &config.overflow.to_string()),
            label(
                "capacity_tokens",
                &config.sizing.capacity_tokens.to_string(),
            ),
            label(
                "working_set_tokens",
                &config.sizing.working_set_tokens.to_string(),
            ),
            label("prefixes", &n.to_string()),
            label(
                "replay_order",
                match config.order {
                    Order::Same => "same",
                    Order::Reverse => "reverse",
                    Order::Random => "random",
                },
            ),
        ]);
        let mut seq = Sequence::new();
        for pass in 0..=config.revisits {
            let shuffle_seed = if pass > 0 { master.next_u64() } else { 0 };
            let order = visit_order(n, pass, config.order, shuffle_seed);
            let name = phase_name(pass);
            let (seeds, common) = (Rc::clone(&prefix_seeds), Rc::clone(&common));
            let (format, generation, prefix_tokens) = (
                config.format,
                config.generation.clone(),
                config.prefix_tokens,
            );
            let phase = name.clone();
            seq.push(
                Phase {
                    name,
                    include_in_summary: true,
                    load: None,
                },
                counted(n, move |k, tok| {
                    let i = order[k as usize];
                    let prefix = prefix_text(i, seeds[i as usize], prefix_tokens, tok);
                    let user = format!(
                        "{prefix}\n\nQuestion (pass {pass}): name the three controls in the \
                         document above that matter most, in one line each."
                    );
                    let mut labels = (*common).clone();
                    labels.push(label("prefix_index", &i.to_string()));
                    labels.push(label("pass", &pass.to_string()));
                    Ok(RequestSpec {
                        id: if pass == 0 {
                            format!("kvp-{i:06}")
                        } else {
                            format!("kvp-{i:06}-r{pass}")
                        },
                        phase: phase.clone(),
                        session_id: None,
                        prefix_hash: Some(sha256_hex(&prefix)),
                        prompt: format.render(&[message("user", &user)]),
                        generation: generation.clone(),
                        arrival: Arrival::Asap,
                        labels,
                    })
                }),
            );
        }
        seq
    }
}

impl Workload for KvPressure {
    fn describe() -> WorkloadInfo {
        WorkloadInfo {
            name: "kv_pressure".to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            description: "A working set of unique prefixes sized to overflow × a KV tier's \
                          capacity (given in tokens, blocks or bytes), sent once (populate) and \
                          then revisited (revisit, revisit_2, …; same, reverse or random order), \
                          so reuse must come from the tier below the target. The computed sizes \
                          are in every request's labels. Load from the command line."
                .to_string(),
            params: declared_params(),
        }
    }

    fn create(params: &Params, seed: u64) -> Result<Self> {
        let config = Config::from_params(params)?;
        let seq = Self::sequence(&config, seed);
        Ok(Self {
            config,
            seq,
            logged: false,
        })
    }

    fn phases(&self) -> Vec<Phase> {
        self.seq.phases()
    }

    fn next_batch(&mut self, max: u32) -> Result<sparkhost_workload::Batch> {
        if !self.logged {
            self.logged = true;
            let s = &self.config.sizing;
            host::info(&format!(
                "{} tier: {} tokens; working set {} tokens (overflow {}) = {} prefixes of {} tokens",
                self.config.target.name(),
                s.capacity_tokens,
                s.working_set_tokens,
                self.config.overflow,
                s.prefixes,
                self.config.prefix_tokens
            ));
        }
        self.seq.next_batch(max, &HostTokenizer)
    }
}

sparkhost_workload::export_workload!(KvPressure);

#[cfg(test)]
mod tests {
    use super::*;
    use sparkhost_workload::{Prompt, WordTokenizer};

    fn config(pairs: &[(&str, &str)]) -> Result<Config> {
        Config::from_params(&Params::from_pairs(&declared_params(), pairs)?)
    }

    fn sizing(pairs: &[(&str, &str)]) -> Sizing {
        config(pairs).unwrap().sizing
    }

    fn message_of(r: Result<Config>) -> String {
        match r {
            Err(WorkloadError::InvalidConfig(m)) => m,
            other => panic!("expected InvalidConfig, got {other:?}"),
        }
    }

    #[test]
    fn capacities_parse_in_every_unit() {
        let p = |v| parse_capacity("x", v).unwrap();
        assert_eq!(p(""), None);
        assert_eq!(p("65536"), Some(Capacity::Tokens(65536)));
        assert_eq!(p("100 tokens"), Some(Capacity::Tokens(100)));
        assert_eq!(p("1024blocks"), Some(Capacity::Blocks(1024)));
        assert_eq!(p("8GB"), Some(Capacity::Bytes(8e9)));
        assert_eq!(p("2 GiB"), Some(Capacity::Bytes(2_147_483_648.0)));
        assert_eq!(p("1.5mib"), Some(Capacity::Bytes(1_572_864.0)));
        for bad in ["8TB", "1.5blocks", "GB", "-3", "x"] {
            assert!(parse_capacity("x", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn working_set_arithmetic() {
        // 8 GB at 131072 B/token = 61035 tokens; × 1.2 = 73242 → 36 prefixes of 2048.
        let s = sizing(&[("cpu-capacity", "8GB"), ("bytes-per-token", "131072")]);
        assert_eq!(
            s,
            Sizing {
                capacity_tokens: 61035,
                working_set_tokens: 73242,
                prefixes: 36
            }
        );
        let s = sizing(&[
            ("target-tier", "gpu"),
            ("gpu-capacity", "100blocks"),
            ("block-size", "64"),
            ("overflow", "0.5"),
            ("prefix-tokens", "512"),
        ]);
        assert_eq!(
            (s.capacity_tokens, s.working_set_tokens, s.prefixes),
            (6400, 3200, 7)
        );
        let s = sizing(&[
            ("tier-model", "exclusive"),
            ("gpu-capacity", "1000"),
            ("cpu-capacity", "3000"),
            ("overflow", "1"),
            ("prefix-tokens", "1000"),
        ]);
        assert_eq!((s.capacity_tokens, s.prefixes), (4000, 4));
    }

    #[test]
    fn missing_units_and_capacities_are_explained() {
        let m = message_of(config(&[]));
        assert!(m.contains("`cpu-capacity` is empty"), "{m}");
        let m = message_of(config(&[("cpu-capacity", "10blocks")]));
        assert!(m.contains("block-size"), "{m}");
        let m = message_of(config(&[("cpu-capacity", "1GiB")]));
        assert!(m.contains("bytes-per-token"), "{m}");
        let m = message_of(config(&[
            ("tier-model", "exclusive"),
            ("cpu-capacity", "10"),
        ]));
        assert!(m.contains("`gpu-capacity` is empty"), "{m}");
        let m = message_of(config(&[("cpu-capacity", "0")]));
        assert!(m.contains("0 tokens"), "{m}");
        let m = message_of(config(&[
            ("cpu-capacity", "4000000000"),
            ("prefix-tokens", "1"),
        ]));
        assert!(m.contains("more than"), "{m}");
        assert!(config(&[("cpu-capacity", "10"), ("overflow", "0")]).is_err());
    }

    #[test]
    fn visit_orders() {
        assert_eq!(visit_order(4, 0, Order::Reverse, 1), [0, 1, 2, 3]);
        assert_eq!(visit_order(4, 1, Order::Same, 1), [0, 1, 2, 3]);
        assert_eq!(visit_order(4, 2, Order::Reverse, 1), [3, 2, 1, 0]);
        let mut r = visit_order(50, 1, Order::Random, 9);
        assert_ne!(r, (0..50).collect::<Vec<_>>());
        r.sort();
        assert_eq!(r, (0..50).collect::<Vec<_>>());
    }

    #[test]
    fn populate_then_revisits_reuse_each_prefix() {
        let c = config(&[
            ("cpu-capacity", "1000"),
            ("overflow", "1.2"),
            ("prefix-tokens", "300"),
            ("revisits", "2"),
            ("replay-order", "reverse"),
        ])
        .unwrap();
        assert_eq!(c.sizing.prefixes, 4);
        let mut seq = KvPressure::sequence(&c, 5);
        let names: Vec<String> = seq.phases().into_iter().map(|p| p.name).collect();
        assert_eq!(names, ["populate", "revisit", "revisit_2"]);
        let all = seq.drain(&WordTokenizer).unwrap();
        let ids: Vec<&str> = all.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(
            &ids[..5],
            [
                "kvp-000000",
                "kvp-000001",
                "kvp-000002",
                "kvp-000003",
                "kvp-000003-r1"
            ]
        );
        assert_eq!(all.len(), 12);
        let Prompt::Text(first) = &all[0].prompt else {
            panic!()
        };
        let (prefix, question) = first.split_once("\n\nQuestion (pass 0): ").unwrap();
        assert_eq!(WordTokenizer.count(prefix), 300);
        assert!(prefix.starts_with("Document ID: kvp-000000\n"));
        assert!(!question.is_empty());
        let revisit = all.iter().find(|r| r.id == "kvp-000000-r2").unwrap();
        assert_eq!(revisit.prefix_hash, all[0].prefix_hash);
        let Prompt::Text(t) = &revisit.prompt else {
            panic!()
        };
        assert!(t.starts_with(prefix) && t != first);
        for key in [
            "capacity_tokens",
            "working_set_tokens",
            "prefixes",
            "target_tier",
            "pass",
        ] {
            assert!(revisit.labels.iter().any(|l| l.key == key), "{key}");
        }
        assert!(
            revisit
                .labels
                .contains(&label("working_set_tokens", "1200"))
        );
    }
}
