//! `rehydrate_replay`: the seed harness's rehydration test. `populate`
//! sends `populate-sessions` sessions × `turns` turns, every session with a
//! long unique prefix; `thrash` sends many single-turn sessions with prefixes
//! of their own to evict that state; `replay` (and `replay_2`, … for
//! `replay-repeats` > 1) sends the populate prompts again, byte for byte.
//! A replay that finds its prefixes in an offload tier rehydrates them
//! instead of recomputing.
//!
//! The seed's text, ids, session ids and PRNG seeds are kept (session topics
//! at the run's seed, prefix documents at seed + 7003, thrash at
//! seed + 19001). One difference: the seed sized nothing here (its prefixes
//! came out at whatever the document's word count gave); here each prefix is
//! fitted to exactly `prefix-tokens` with the run's tokenizer.
//!
//! As in the seed, turns of a session are independent requests (no history)
//! sent as soon as a slot is free; `session_id` and `prefix_hash` label them
//! for reuse accounting.
//!
//! # Layout
//!
//! - [`Config`]: params parsed and validated once, in `create`.
//! - [`populate_source`], [`thrash_source`]: the two prompt streams, built
//!   lazily; every replay rebuilds the populate stream from the same seeds.
//! - [`RehydrateReplay`]: the planner, a [`Sequence`] of the phases.

use sparkhost_workload::text::{self, FILLER, TOPICS};
use sparkhost_workload::{
    Api, Arrival, Generation, GenerationDefaults, ParamInfo, Params, PromptFormat, RequestSpec,
    Result, Sequence, SequenceWorkload, Source, SplitMix64, Template, WorkloadInfo, closed_phase,
    generation_params, label, message, param, sha256_hex,
};

/// The seed's offsets from the run's seed.
pub const PREFIX_SEED_OFFSET: u64 = 7_003;
pub const THRASH_SEED_OFFSET: u64 = 19_001;

/// The validated params of one run.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub populate_sessions: u32,
    pub thrash_sessions: u32,
    pub turns: u32,
    pub prefix_tokens: u32,
    pub populate_concurrency: u32,
    pub thrash_concurrency: u32,
    pub replay_concurrency: u32,
    pub replay_repeats: u32,
    pub generation: Generation,
    pub format: PromptFormat,
}

impl Config {
    pub fn from_params(p: &Params) -> Result<Self> {
        let concurrency = p.get_u32_min("concurrency", 1)?;
        let opt = |name: &str| p.get_opt_u32_min(name, 1);
        let populate_concurrency = opt("populate-concurrency")?.unwrap_or(concurrency);
        let thrash_concurrency = opt("thrash-concurrency")?
            .unwrap_or_else(|| populate_concurrency.max(concurrency.saturating_mul(2)));
        let replay_concurrency = opt("replay-concurrency")?.unwrap_or(populate_concurrency);
        Ok(Self {
            populate_sessions: p.get_u32_min("populate-sessions", 1)?,
            thrash_sessions: p.get_u32("thrash-sessions")?,
            turns: p.get_u32_min("turns", 1)?,
            prefix_tokens: p.get_u32_min("prefix-tokens", 1)?,
            populate_concurrency,
            thrash_concurrency,
            replay_concurrency,
            replay_repeats: p.get_u32_min("replay-repeats", 1)?,
            generation: p.get_generation()?,
            format: PromptFormat::from_params(p)?,
        })
    }
}

fn declared_params() -> Vec<ParamInfo> {
    let mut params = vec![
        param(
            "populate-sessions",
            "Sessions in `populate` (each with its own long prefix) and in every replay.",
            "16",
        ),
        param(
            "thrash-sessions",
            "Single-turn sessions in `thrash`, each with its own prefix; 0 skips the phase.",
            "96",
        ),
        param("turns", "Turns per populate session.", "2"),
        param(
            "prefix-tokens",
            "Tokens of every session prefix (populate and thrash), fitted exactly with the \
             run's tokenizer.",
            "4096",
        ),
        param(
            "concurrency",
            "The seed's --concurrency, from which the phase concurrencies default.",
            "1",
        ),
        param(
            "populate-concurrency",
            "Concurrency of `populate`; empty means `concurrency`.",
            "",
        ),
        param(
            "thrash-concurrency",
            "Concurrency of `thrash`; empty means max(populate-concurrency, 2 × concurrency).",
            "",
        ),
        param(
            "replay-concurrency",
            "Concurrency of every replay phase; empty means populate-concurrency.",
            "",
        ),
        param(
            "replay-repeats",
            "How many times the populate prompts are replayed: phases replay, replay_2, ….",
            "1",
        ),
    ];
    params.extend(generation_params(&GenerationDefaults::SEED));
    params.extend(PromptFormat::params(Api::Completions, Template::Llama3));
    params
}

/// `rehydrate_session_0001`, … (1-based, as in the seed).
pub fn populate_session_id(i: u32) -> String {
    format!("rehydrate_session_{:04}", u64::from(i) + 1)
}

/// `thrash_session_0001`, ….
pub fn thrash_session_id(i: u32) -> String {
    format!("thrash_session_{:04}", u64::from(i) + 1)
}

/// Name of replay `k` (1-based): `replay`, `replay_2`, ….
pub fn replay_phase(k: u32) -> String {
    if k == 1 {
        "replay".to_string()
    } else {
        format!("replay_{k}")
    }
}

/// The populate prompts of `phase`, in session order, turns within.
///
/// Per session `i`: `topic = pick(TOPICS)` from `SplitMix64(seed)`; the
/// prefix document `"rehydrate-populate-<i:04>"` (topic `"rehydrate
/// baseline <topic>"`) from `SplitMix64(seed + 7003)`; the prefix is the
/// seed's header plus that document, fitted to `prefix-tokens`. Turn `t`
/// appends the seed's user query. `replay` > 0 marks a replay: ids get
/// `-<phase>` appended, prompts stay byte-identical.
pub fn populate_source(config: &Config, seed: u64, phase: String, replay: u32) -> Source {
    let mut session_rng = SplitMix64::new(seed);
    let mut prefix_rng = SplitMix64::new(seed.wrapping_add(PREFIX_SEED_OFFSET));
    let (sessions, turns, prefix_tokens) =
        (config.populate_sessions, config.turns, config.prefix_tokens);
    let (format, generation) = (config.format, config.generation.clone());
    // The current session's (index, topic, prefix, hash); a prefix is fitted
    // once and shared by the session's turns.
    let mut current: Option<(u32, &'static str, String, String)> = None;
    let mut next = 0u32;
    Box::new(move |tok| {
        if next == sessions * turns {
            return Ok(None);
        }
        let (i, t) = (next / turns, next % turns + 1);
        next += 1;
        if current.as_ref().is_none_or(|c| c.0 != i) {
            let sid = populate_session_id(i);
            let topic = *session_rng.pick(&TOPICS);
            let doc = text::synthetic_document(
                &mut prefix_rng,
                &format!("rehydrate-populate-{i:04}"),
                &format!("rehydrate baseline {topic}"),
                prefix_tokens,
            );
            let prefix = tok.fit(
                &format!(
                    "Session Context:\nSession: {sid}\nGoal: preserve reusable project context \
                     across pressure and replay.\n\n{doc}"
                ),
                prefix_tokens,
                FILLER,
            );
            let hash = sha256_hex(&prefix);
            current = Some((i, topic, prefix, hash));
        }
        let (_, topic, prefix, hash) = current.as_ref().expect("set above");
        let user = format!(
            "{prefix}\n\nUser Query:\nTurn {t}: summarize the key deltas for {topic}, call out \
             one risk, and propose one mitigation."
        );
        let base_id = format!("rehydrate_populate_{i:04}_t{t:02}");
        let mut labels = vec![
            label("workload", "rehydrate_replay"),
            label("prompt_set", "rehydrate_populate"),
            label(
                "phase_intent",
                if replay == 0 { "populate" } else { "replay" },
            ),
            label("session_turn_index", &t.to_string()),
            label("turn", &t.to_string()),
            label("prefix_tokens", &prefix_tokens.to_string()),
        ];
        let id = if replay == 0 {
            base_id
        } else {
            labels.push(label("replay_of", &base_id));
            labels.push(label("replay_pass", &replay.to_string()));
            format!("{base_id}-{phase}")
        };
        Ok(Some(RequestSpec {
            id,
            phase: phase.clone(),
            session_id: Some(populate_session_id(i)),
            prefix_hash: Some(hash.clone()),
            prompt: format.render(&[message("user", &user)]),
            generation: generation.clone(),
            arrival: Arrival::Asap,
            labels,
        }))
    })
}

/// The thrash prompts: per session `i`, from one `SplitMix64(seed +
/// 19001)`, `topic = pick(TOPICS)` then the document
/// `"rehydrate-thrash-<i:04>"` (topic `"thrash pressure <topic>"`).
pub fn thrash_source(config: &Config, seed: u64) -> Source {
    let mut rng = SplitMix64::new(seed.wrapping_add(THRASH_SEED_OFFSET));
    let prefix_tokens = config.prefix_tokens;
    let (format, generation) = (config.format, config.generation.clone());
    sparkhost_workload::counted(config.thrash_sessions, move |i, tok| {
        let sid = thrash_session_id(i);
        let topic = *rng.pick(&TOPICS);
        let doc = text::synthetic_document(
            &mut rng,
            &format!("rehydrate-thrash-{i:04}"),
            &format!("thrash pressure {topic}"),
            prefix_tokens,
        );
        let prefix = tok.fit(
            &format!(
                "Thrash Context:\nSession: {sid}\nGoal: generate unique cache pressure to evict \
                 prior KV state.\n\n{doc}"
            ),
            prefix_tokens,
            FILLER,
        );
        let user = format!(
            "{prefix}\n\nUser Query:\nProvide a compact remediation checklist for {topic}."
        );
        Ok(RequestSpec {
            id: format!("rehydrate_thrash_{i:04}"),
            phase: "thrash".to_string(),
            prefix_hash: Some(sha256_hex(&prefix)),
            session_id: Some(sid),
            prompt: format.render(&[message("user", &user)]),
            generation: generation.clone(),
            arrival: Arrival::Asap,
            labels: vec![
                label("workload", "rehydrate_replay"),
                label("prompt_set", "rehydrate_thrash"),
                label("phase_intent", "thrash"),
                label("session_turn_index", "1"),
                label("turn", "1"),
                label("prefix_tokens", &prefix_tokens.to_string()),
            ],
        })
    })
}

/// The planner, exported as [`Sequenced<RehydrateReplay>`](sparkhost_workload::Sequenced).
pub struct RehydrateReplay;

impl RehydrateReplay {
    /// Phases: `populate`, `thrash` (unless 0 sessions), `replay`,
    /// `replay_2`, …; all in the summary, each with its concurrency.
    pub fn sequence(config: &Config, seed: u64) -> Sequence {
        let phase = |name: &str, concurrency: u32| closed_phase(name, true, concurrency);
        let mut seq = Sequence::new();
        seq.push(
            phase("populate", config.populate_concurrency),
            populate_source(config, seed, "populate".to_string(), 0),
        );
        if config.thrash_sessions > 0 {
            seq.push(
                phase("thrash", config.thrash_concurrency),
                thrash_source(config, seed),
            );
        }
        for k in 1..=config.replay_repeats {
            let name = replay_phase(k);
            seq.push(
                phase(&name, config.replay_concurrency),
                populate_source(config, seed, name.clone(), k),
            );
        }
        seq
    }
}

impl SequenceWorkload for RehydrateReplay {
    fn describe() -> WorkloadInfo {
        WorkloadInfo {
            name: "rehydrate_replay".to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            description: "Populate sessions with long unique prefixes (populate), evict them \
                          with many single-turn sessions (thrash), then resend the populate \
                          prompts byte for byte (replay, replay_2, …): the replays show whether \
                          KV state is rehydrated from an offload tier (the seed harness's \
                          rehydrate_replay scenario)."
                .to_string(),
            params: declared_params(),
        }
    }

    fn plan(params: &Params, seed: u64) -> Result<Sequence> {
        Ok(Self::sequence(&Config::from_params(params)?, seed))
    }
}

sparkhost_workload::export_workload!(sparkhost_workload::Sequenced<RehydrateReplay>);

#[cfg(test)]
mod tests {
    use super::*;
    use sparkhost_workload::{Prompt, Tokenizer, WordTokenizer};

    fn config(pairs: &[(&str, &str)]) -> Result<Config> {
        Config::from_params(&Params::from_pairs(&declared_params(), pairs)?)
    }

    fn all(pairs: &[(&str, &str)], seed: u64) -> Vec<RequestSpec> {
        RehydrateReplay::sequence(&config(pairs).unwrap(), seed)
            .drain(&WordTokenizer)
            .unwrap()
    }

    fn text_of(r: &RequestSpec) -> &str {
        match &r.prompt {
            Prompt::Text(t) => t,
            Prompt::Chat(_) => panic!("completions by default"),
        }
    }

    const SMALL: [(&str, &str); 5] = [
        ("populate-sessions", "2"),
        ("thrash-sessions", "3"),
        ("turns", "2"),
        ("prefix-tokens", "300"),
        ("replay-repeats", "2"),
    ];

    #[test]
    fn defaults_match_the_seed() {
        let c = config(&[]).unwrap();
        assert_eq!(
            (c.populate_sessions, c.thrash_sessions, c.turns),
            (16, 96, 2)
        );
        assert_eq!((c.prefix_tokens, c.replay_repeats), (4096, 1));
        assert_eq!(
            (
                c.populate_concurrency,
                c.thrash_concurrency,
                c.replay_concurrency
            ),
            (1, 2, 1)
        );
        let c = config(&[("concurrency", "2"), ("populate-concurrency", "3")]).unwrap();
        assert_eq!((c.thrash_concurrency, c.replay_concurrency), (4, 3));
        assert!(config(&[("turns", "0")]).is_err());
        assert!(config(&[("replay-concurrency", "0")]).is_err());
    }

    #[test]
    fn phases_ids_and_byte_identical_replays() {
        let reqs = all(&SMALL, 1337);
        let ids: Vec<(&str, &str)> = reqs
            .iter()
            .map(|r| (r.phase.as_str(), r.id.as_str()))
            .collect();
        assert_eq!(
            ids,
            [
                ("populate", "rehydrate_populate_0000_t01"),
                ("populate", "rehydrate_populate_0000_t02"),
                ("populate", "rehydrate_populate_0001_t01"),
                ("populate", "rehydrate_populate_0001_t02"),
                ("thrash", "rehydrate_thrash_0000"),
                ("thrash", "rehydrate_thrash_0001"),
                ("thrash", "rehydrate_thrash_0002"),
                ("replay", "rehydrate_populate_0000_t01-replay"),
                ("replay", "rehydrate_populate_0000_t02-replay"),
                ("replay", "rehydrate_populate_0001_t01-replay"),
                ("replay", "rehydrate_populate_0001_t02-replay"),
                ("replay_2", "rehydrate_populate_0000_t01-replay_2"),
                ("replay_2", "rehydrate_populate_0000_t02-replay_2"),
                ("replay_2", "rehydrate_populate_0001_t01-replay_2"),
                ("replay_2", "rehydrate_populate_0001_t02-replay_2"),
            ]
        );
        for k in 0..4 {
            assert_eq!(reqs[k].prompt, reqs[7 + k].prompt);
            assert_eq!(reqs[k].prompt, reqs[11 + k].prompt);
            assert_eq!(reqs[k].session_id, reqs[7 + k].session_id);
            assert!(reqs[11 + k].labels.contains(&label("replay_pass", "2")));
        }
        assert_eq!(
            reqs[0].prefix_hash, reqs[1].prefix_hash,
            "turns share the session prefix"
        );
        assert_ne!(reqs[0].prefix_hash, reqs[2].prefix_hash);
        assert_ne!(reqs[0].prompt, reqs[1].prompt, "turns differ in the query");
        assert_eq!(
            reqs[2].session_id.as_deref(),
            Some("rehydrate_session_0002")
        );
        assert_eq!(reqs[4].session_id.as_deref(), Some("thrash_session_0001"));
    }

    #[test]
    fn prompts_have_the_seed_text_and_fitted_prefixes() {
        let reqs = all(&SMALL, 1337);
        let t = text_of(&reqs[1]);
        let user = t
            .strip_prefix(text::LLAMA3_USER_PREFIX)
            .and_then(|t| t.strip_suffix(text::LLAMA3_ASSISTANT_PREFIX))
            .unwrap();
        let (prefix, query) = user.split_once("\n\nUser Query:\n").unwrap();
        assert!(prefix.starts_with("Session Context:\nSession: rehydrate_session_0001\nGoal: preserve reusable project context across pressure and replay.\n\nDocument ID: rehydrate-populate-0000\nTopic: rehydrate baseline "));
        assert_eq!(WordTokenizer.count(prefix), 300);
        assert_eq!(
            reqs[1].prefix_hash.as_deref(),
            Some(sha256_hex(prefix).as_str())
        );
        assert!(query.starts_with("Turn 2: summarize the key deltas for "));
        assert!(query.ends_with(", call out one risk, and propose one mitigation."));
        let thrash = text_of(&reqs[4]);
        assert!(thrash.contains("Thrash Context:\nSession: thrash_session_0001\n"));
        assert!(thrash.contains("\n\nUser Query:\nProvide a compact remediation checklist for "));
    }

    #[test]
    fn thrash_can_be_skipped_and_seeds_are_independent() {
        let with = all(&SMALL, 9);
        let mut pairs = SMALL.to_vec();
        pairs[1] = ("thrash-sessions", "0");
        let without = all(&pairs, 9);
        assert_eq!(without.len(), with.len() - 3);
        assert_eq!(without[..4], with[..4]);
        assert!(without.iter().all(|r| r.phase != "thrash"));
        assert_ne!(all(&SMALL, 10)[0].prompt, with[0].prompt);
    }
}
