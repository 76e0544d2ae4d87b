//! `local_copilot_burst`: developers using a local coding assistant on one
//! project (the test plan's workload family A), done properly.
//!
//! `sessions` developers share one project context (an optional shared
//! prefix, identical bytes for everyone) and each has a context of their own
//! (the files they have open). A developer works in bursts: `burst-size`
//! turns in quick succession, each sent `think-time-ms` after the previous
//! answer arrived, then goes quiet for `burst-gap-ms` before the next burst.
//! Sessions start `burst-interval-ms` apart. Every turn carries the
//! session's whole conversation so far: the earlier questions and the
//! model's actual answers (`history=real`, received through `on-response`),
//! so prompts grow turn by turn and each turn's prefix is the previous
//! turn's prompt plus the answer.
//!
//! What the seed got wrong and this fixes: its bursts were not spaced in
//! time (a queue drained them at whatever concurrency was set), its
//! "sessions" were labels only (no history), and all sessions shared the
//! whole context (no per-session part).
//!
//! `history=synthetic` replaces each answer with a fixed sentence, so the
//! whole run can be planned up front and `request_manifest.jsonl` is
//! byte-identical across runs whatever the engine answers; use it for
//! determinism and cross-language checks. With `history=real`, later
//! prompts contain the engine's answers and the planning order follows the
//! order in which answers arrive.
//!
//! The algorithm is specified exactly here (see [`Plan::build`] and
//! [`Plan::next_requests`]) because JavaScript and Python ports must produce
//! byte-identical requests; `workloads/PORTING.md` restates it for porters.
//!
//! # Layout
//!
//! - [`Config`]: params parsed and validated once, in `create`.
//! - [`Turn`]: what is fixed about one request before any answer exists.
//! - [`Plan`]: one phase: its prefix, contexts and turns, and the history
//!   state that decides which turn may be planned next.
//! - [`LocalCopilotBurst`]: the planner; builds its plans on the first
//!   `next_batch` (that is where the host fits texts to token counts).

use std::collections::HashMap;

use sparkhost_workload::text::{self, ACTIONS, FILLER, QUALIFIERS, SUBJECTS, TOPICS};
use sparkhost_workload::{
    Api, Arrival, Batch, ChatMessage, Generation, GenerationDefaults, HostTokenizer, Label,
    LoadModel, ParamInfo, Params, Phase, PromptFormat, RequestSpec, ResponseSummary, Result,
    SplitMix64, Template, Tokenizer, Workload, WorkloadError, WorkloadInfo, generation_params,
    label, message, param, sha256_hex,
};

/// Seed offset of the warmup phase (the seed's).
pub const WARMUP_SEED_OFFSET: u64 = 17;
/// Seed offset of the shared-prefix document (the seed's).
pub const PREFIX_SEED_OFFSET: u64 = 1_000_003;
/// Seed offset of the per-session context documents.
pub const CONTEXT_SEED_OFFSET: u64 = 2_000_003;

/// The first lines of the shared prefix (the seed's).
pub const SHARED_PREFIX_HEADER: &str = "Shared Project Context:\n\
    Repository scope: inference runtime, telemetry, and runbook controls.\n\
    Coding constraints: deterministic outputs, explicit guardrails, and operator-safe defaults.\n\n";
/// Topic of the shared-prefix document (the seed's).
pub const SHARED_PREFIX_TOPIC: &str = "local project copilot baseline context";

/// Where a session's earlier answers come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum History {
    /// The engine's answers, from `on-response`.
    Real,
    /// A fixed sentence per turn ([`synthetic_reply`]).
    Synthetic,
}

/// The validated params of one run.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub requests: u32,
    pub warmup: u32,
    pub sessions: u32,
    pub burst_size: u32,
    /// `None` when the shared prefix is off.
    pub shared_prefix_tokens: Option<u32>,
    /// 0 when sessions have no context of their own.
    pub context_tokens: u32,
    pub burst_interval_ms: u32,
    pub burst_gap_ms: u64,
    pub think_time_ms: u32,
    pub history: History,
    pub generation: Generation,
    pub format: PromptFormat,
}

impl Config {
    pub fn from_params(p: &Params) -> Result<Self> {
        let sessions = p.get_u32_min("sessions", 1)?;
        let burst_interval_ms = p.get_u32("burst-interval-ms")?;
        let burst_gap_ms = match p.get_opt_u32("burst-gap-ms")? {
            Some(ms) => u64::from(ms),
            None => u64::from(sessions) * u64::from(burst_interval_ms),
        };
        let shared_prefix_tokens = p.get_u32_min("shared-prefix-tokens", 1)?;
        Ok(Self {
            requests: p.get_u32_min("requests", 1)?,
            warmup: p.get_u32("warmup")?,
            sessions,
            burst_size: p.get_u32_min("burst-size", 1)?,
            shared_prefix_tokens: p.get_bool("shared-prefix")?.then_some(shared_prefix_tokens),
            context_tokens: p.get_u32("context-tokens")?,
            burst_interval_ms,
            burst_gap_ms,
            think_time_ms: p.get_u32("think-time-ms")?,
            history: match p.get_choice("history", &["real", "synthetic"])? {
                "real" => History::Real,
                _ => History::Synthetic,
            },
            generation: p.get_generation()?,
            format: PromptFormat::from_params(p)?,
        })
    }
}

fn declared_params() -> Vec<ParamInfo> {
    let mut params = vec![
        param(
            "requests",
            "Requests in the measured phase `copilot_burst` (at least 1).",
            "64",
        ),
        param(
            "warmup",
            "Requests in the phase `warmup`, sent first and left out of the summary; 0 drops \
             the phase. Planned the same way with seed+17, so its prefix, sessions and turns \
             differ from the measured phase's.",
            "8",
        ),
        param(
            "sessions",
            "Developers (sessions). Burst b belongs to session b mod sessions. Each phase runs \
             at concurrency = sessions, so a session always has a slot.",
            "8",
        ),
        param(
            "burst-size",
            "Turns per burst: consecutive turns of one session, each sent think-time-ms after \
             the previous answer.",
            "4",
        ),
        param(
            "shared-prefix",
            "true puts one project context, identical for every session, at the start of \
             every prompt (its sha256 is the prefix_hash).",
            "true",
        ),
        param(
            "shared-prefix-tokens",
            "Tokens of the shared project context (fitted exactly with the run's tokenizer).",
            "3072",
        ),
        param(
            "context-tokens",
            "Tokens of each session's own context (its open files), after the shared prefix; \
             0 for none.",
            "1024",
        ),
        param(
            "burst-interval-ms",
            "Session s starts its first burst s × this many ms after the phase starts.",
            "1000",
        ),
        param(
            "burst-gap-ms",
            "Idle time of a session between the answer ending one burst and the first turn of \
             its next burst; empty means sessions × burst-interval-ms, so that bursts of \
             consecutive sessions stay about one interval apart.",
            "",
        ),
        param(
            "think-time-ms",
            "Time between an answer and the next turn of the same burst.",
            "300",
        ),
        param(
            "history",
            "real: earlier answers in the history are the engine's (prompts depend on the \
             answers and on their order). synthetic: a fixed sentence per answer, so the \
             whole run is planned up front and its manifest is byte-identical across runs.",
            "real",
        ),
    ];
    params.extend(generation_params(&GenerationDefaults::SEED));
    params.extend(PromptFormat::params(Api::Chat, Template::Llama3));
    params
}

/// What is fixed about one request before any answer exists.
#[derive(Debug, Clone, PartialEq)]
pub struct Turn {
    /// `<id prefix>-<index:05>`.
    pub id: String,
    /// 0-based session index.
    pub session: usize,
    /// 1-based turn of the session within the phase.
    pub turn: u32,
    /// 0-based burst index.
    pub burst: u32,
    /// 0-based position within the burst.
    pub position: u32,
    pub arrival: Arrival,
    /// The user message of this turn.
    pub user_text: String,
    /// The answer used with `history=synthetic`.
    pub synthetic_reply: String,
}

/// The user message of a turn (the seed's text).
pub fn turn_text(
    session_id: &str,
    burst_id: &str,
    turn: u32,
    subject: &str,
    action: &str,
    topic: &str,
    qualifier: &str,
) -> String {
    format!(
        "Session ID: {session_id}\nBurst ID: {burst_id}\nTurn: {turn}\n\
         Task: In 5 bullets, explain how {} {action} the {topic} pipeline {qualifier}. \
         Call out one concrete risk and one mitigation.",
        subject.to_ascii_lowercase()
    )
}

/// The answer recorded in the history with `history=synthetic`.
pub fn synthetic_reply(
    request_id: &str,
    subject: &str,
    action: &str,
    topic: &str,
    qualifier: &str,
) -> String {
    format!(
        "Reply to {request_id}: five bullets on how {} {action} the {topic} pipeline \
         {qualifier}, one concrete risk, and one mitigation.",
        subject.to_ascii_lowercase()
    )
}

/// `session_01`, `session_02`, … (1-based, as in the seed); the warmup's are
/// `warmup_session_01`, ….
pub fn session_id(session_prefix: &str, session: usize) -> String {
    format!("{session_prefix}{:02}", session + 1)
}

/// `burst_0001`, … (1-based, as in the seed).
pub fn burst_id(burst: u32) -> String {
    format!("burst_{:04}", u64::from(burst) + 1)
}

/// One phase of the run.
#[derive(Debug)]
pub struct Plan {
    pub phase: &'static str,
    pub include_in_summary: bool,
    session_prefix: &'static str,
    /// The shared prefix text, if on.
    pub shared_prefix: Option<String>,
    /// Per session: the system message (shared prefix and own context), if any.
    pub system: Vec<Option<String>>,
    pub prefix_hash: Vec<Option<String>>,
    pub turns: Vec<Turn>,
    /// Per session: its turns' indices into `turns`, in order.
    by_session: Vec<Vec<usize>>,
    /// Per session: how many of its turns are planned.
    planned: Vec<usize>,
    /// Per session: the answers received so far, in turn order.
    replies: Vec<Vec<String>>,
    /// Per session: a planned turn whose answer has not arrived (real history).
    awaiting: Vec<bool>,
    /// Request id → session, for `on-response`.
    session_of: HashMap<String, usize>,
    labels_common: Vec<Label>,
}

impl Plan {
    /// Builds phase `phase` of `count` requests from `phase_seed`.
    ///
    /// Exact algorithm, every draw from SplitMix64 streams that never mix:
    ///
    /// 1. Shared prefix (if on), `rng = SplitMix64(phase_seed + 1000003)`:
    ///    `doc = synthetic_document(rng, "<id_prefix>-shared-prefix",
    ///    SHARED_PREFIX_TOPIC, shared_prefix_tokens)`, then
    ///    `shared = fit(SHARED_PREFIX_HEADER + doc, shared_prefix_tokens, FILLER)`.
    /// 2. Session contexts (if `context_tokens > 0`), one
    ///    `rng = SplitMix64(phase_seed + 2000003)`, for every session
    ///    `s = 0..sessions` in order: `topic = pick(TOPICS)`,
    ///    `doc = synthetic_document(rng, "<session_id>-context", topic,
    ///    context_tokens)`, `context = fit("Session Context:\nSession:
    ///    <session_id>\nOpen files: the <topic> module and its tests.\n\n" +
    ///    doc, context_tokens, FILLER)`.
    /// 3. Turns, `rng = SplitMix64(phase_seed)`, for request `i = 0..count`:
    ///    `burst b = i / burst_size`, `position j = i % burst_size`,
    ///    `session s = b % sessions`, `turn` = the session's 1-based count;
    ///    draws in the seed's order `topic = pick(TOPICS)`,
    ///    `subject = pick(SUBJECTS)`, `qualifier = pick(QUALIFIERS)`,
    ///    `action = pick(ACTIONS)`. Arrival: `j > 0`: after-previous-turn
    ///    (think_time_ms); `j == 0` and `b < sessions` (the session's first
    ///    burst): at-offset-ms(b × burst_interval_ms); otherwise
    ///    after-previous-turn(burst_gap_ms).
    ///
    /// The system message of session s is the shared prefix and the
    /// session's context joined by `"\n\n"` (whichever exist; none when
    /// neither does). `prefix_hash` is `sha256_hex(shared)`, or without a
    /// shared prefix `sha256_hex(context)`, or none.
    #[allow(clippy::too_many_arguments)]
    pub fn build(
        config: &Config,
        phase: &'static str,
        include_in_summary: bool,
        id_prefix: &str,
        session_prefix: &'static str,
        phase_seed: u64,
        count: u32,
        tok: &dyn Tokenizer,
    ) -> Self {
        let sessions = config.sessions as usize;
        let shared_prefix = config.shared_prefix_tokens.map(|target| {
            let mut rng = SplitMix64::new(phase_seed.wrapping_add(PREFIX_SEED_OFFSET));
            let doc = text::synthetic_document(
                &mut rng,
                &format!("{id_prefix}-shared-prefix"),
                SHARED_PREFIX_TOPIC,
                target,
            );
            tok.fit(&format!("{SHARED_PREFIX_HEADER}{doc}"), target, FILLER)
        });
        let contexts: Vec<Option<String>> = if config.context_tokens > 0 {
            let mut rng = SplitMix64::new(phase_seed.wrapping_add(CONTEXT_SEED_OFFSET));
            (0..sessions)
                .map(|s| {
                    let sid = session_id(session_prefix, s);
                    let topic = rng.pick(&TOPICS);
                    let doc = text::synthetic_document(
                        &mut rng,
                        &format!("{sid}-context"),
                        topic,
                        config.context_tokens,
                    );
                    let context = format!(
                        "Session Context:\nSession: {sid}\nOpen files: the {topic} module and its tests.\n\n{doc}"
                    );
                    Some(tok.fit(&context, config.context_tokens, FILLER))
                })
                .collect()
        } else {
            vec![None; sessions]
        };
        let system = contexts
            .iter()
            .map(|context| {
                let parts: Vec<&str> = [shared_prefix.as_deref(), context.as_deref()]
                    .into_iter()
                    .flatten()
                    .collect();
                (!parts.is_empty()).then(|| parts.join("\n\n"))
            })
            .collect();
        let prefix_hash = contexts
            .iter()
            .map(|context| {
                shared_prefix
                    .as_deref()
                    .or(context.as_deref())
                    .map(sha256_hex)
            })
            .collect();

        let mut rng = SplitMix64::new(phase_seed);
        let mut turns = Vec::with_capacity(count as usize);
        let mut by_session = vec![Vec::new(); sessions];
        for i in 0..count {
            let burst = i / config.burst_size;
            let position = i % config.burst_size;
            let session = (burst % config.sessions) as usize;
            let turn = by_session[session].len() as u32 + 1;
            let topic = rng.pick(&TOPICS);
            let subject = rng.pick(&SUBJECTS);
            let qualifier = rng.pick(&QUALIFIERS);
            let action = rng.pick(&ACTIONS);
            let arrival = if position > 0 {
                Arrival::AfterPreviousTurn(f64::from(config.think_time_ms))
            } else if burst < config.sessions {
                Arrival::AtOffsetMs(u64::from(burst) as f64 * f64::from(config.burst_interval_ms))
            } else {
                Arrival::AfterPreviousTurn(config.burst_gap_ms as f64)
            };
            let id = format!("{id_prefix}-{i:05}");
            let sid = session_id(session_prefix, session);
            turns.push(Turn {
                user_text: turn_text(
                    &sid,
                    &burst_id(burst),
                    turn,
                    subject,
                    action,
                    topic,
                    qualifier,
                ),
                synthetic_reply: synthetic_reply(&id, subject, action, topic, qualifier),
                id,
                session,
                turn,
                burst,
                position,
                arrival,
            });
            by_session[session].push(i as usize);
        }
        let session_of = turns.iter().map(|t| (t.id.clone(), t.session)).collect();
        let mut labels_common = vec![
            label("workload", "local_project_copilot_shared_prefix_burst"),
            label("prompt_set", "local_copilot_burst"),
            label(
                "history",
                match config.history {
                    History::Real => "real",
                    History::Synthetic => "synthetic",
                },
            ),
        ];
        if let Some(n) = config.shared_prefix_tokens {
            labels_common.push(label("shared_prefix_tokens", &n.to_string()));
        }
        if config.context_tokens > 0 {
            labels_common.push(label("context_tokens", &config.context_tokens.to_string()));
        }
        Self {
            phase,
            include_in_summary,
            session_prefix,
            shared_prefix,
            system,
            prefix_hash,
            turns,
            by_session,
            planned: vec![0; sessions],
            replies: vec![Vec::new(); sessions],
            awaiting: vec![false; sessions],
            session_of,
            labels_common,
        }
    }

    /// Whether every turn of the phase is planned.
    pub fn finished(&self) -> bool {
        self.planned
            .iter()
            .zip(&self.by_session)
            .all(|(n, all)| *n == all.len())
    }

    /// Up to `max` further requests.
    ///
    /// A session's next turn may be planned once the answer to its previous
    /// turn is in (always, with `history=synthetic`). Among the sessions
    /// that may, turns go out in ascending request index; with
    /// `history=synthetic` that is plain index order.
    pub fn next_requests(&mut self, config: &Config, max: usize) -> Vec<RequestSpec> {
        let mut out = Vec::new();
        while out.len() < max {
            let next = (0..self.by_session.len())
                .filter(|&s| !self.awaiting[s])
                .filter_map(|s| self.by_session[s].get(self.planned[s]).copied())
                .min();
            let Some(index) = next else { break };
            out.push(self.request(config, index));
            let s = self.turns[index].session;
            self.planned[s] += 1;
            if config.history == History::Real {
                self.awaiting[s] = true;
            }
        }
        out
    }

    /// The request of turn `index`; every earlier turn of its session must
    /// have its answer.
    ///
    /// Messages: the system message (if any), then for every earlier turn of
    /// the session its user text and its answer (`assistant`), then this
    /// turn's user text.
    fn request(&self, config: &Config, index: usize) -> RequestSpec {
        let turn = &self.turns[index];
        let s = turn.session;
        let mut messages: Vec<ChatMessage> = Vec::new();
        if let Some(system) = &self.system[s] {
            messages.push(message("system", system));
        }
        for (k, &earlier) in self.by_session[s][..self.planned[s]].iter().enumerate() {
            let earlier = &self.turns[earlier];
            let reply = match config.history {
                History::Real => self.replies[s][k].as_str(),
                History::Synthetic => earlier.synthetic_reply.as_str(),
            };
            messages.push(message("user", &earlier.user_text));
            messages.push(message("assistant", reply));
        }
        messages.push(message("user", &turn.user_text));
        let mut labels = self.labels_common.clone();
        labels.extend([
            label("session_turn_index", &turn.turn.to_string()),
            label("turn", &turn.turn.to_string()),
            label("burst_id", &burst_id(turn.burst)),
            label("burst_index", &(u64::from(turn.burst) + 1).to_string()),
            label("burst_position", &(turn.position + 1).to_string()),
            label("history_turns", &(turn.turn - 1).to_string()),
        ]);
        RequestSpec {
            id: turn.id.clone(),
            phase: self.phase.to_string(),
            session_id: Some(session_id(self.session_prefix, s)),
            prefix_hash: self.prefix_hash[s].clone(),
            prompt: config.format.render(&messages),
            generation: config.generation.clone(),
            arrival: turn.arrival,
            labels,
        }
    }

    /// Records an answer; `false` when the id is not one of this phase's.
    ///
    /// A failed request's text (often empty) is recorded like any other:
    /// the session goes on, as a user would after an error.
    pub fn record(&mut self, summary: &ResponseSummary) -> bool {
        let Some(&s) = self.session_of.get(&summary.id) else {
            return false;
        };
        self.replies[s].push(summary.text.clone());
        self.awaiting[s] = false;
        true
    }
}

/// The planner of one run.
#[derive(Debug)]
pub struct LocalCopilotBurst {
    config: Config,
    seed: u64,
    /// Built on the first `next_batch`; in run order, empty phases left out.
    plans: Option<Vec<Plan>>,
}

impl LocalCopilotBurst {
    /// The phases' plans: `warmup` (seed + 17, `copilot_warmup-…`,
    /// `warmup_session_…`, if any) then `copilot_burst` (seed,
    /// `copilot_main-…`, `session_…`).
    pub fn build(config: &Config, seed: u64, tok: &dyn Tokenizer) -> Vec<Plan> {
        let mut plans = Vec::new();
        if config.warmup > 0 {
            plans.push(Plan::build(
                config,
                "warmup",
                false,
                "copilot_warmup",
                "warmup_session_",
                seed.wrapping_add(WARMUP_SEED_OFFSET),
                config.warmup,
                tok,
            ));
        }
        plans.push(Plan::build(
            config,
            "copilot_burst",
            true,
            "copilot_main",
            "session_",
            seed,
            config.requests,
            tok,
        ));
        plans
    }

    /// Plans phase after phase: a later phase starts only once every turn
    /// of the earlier one is planned, as the host requires.
    fn next(plans: &mut [Plan], config: &Config, max: usize) -> Batch {
        let mut requests = Vec::new();
        for plan in plans.iter_mut() {
            if requests.len() == max {
                break;
            }
            requests.extend(plan.next_requests(config, max - requests.len()));
            if !plan.finished() {
                break;
            }
        }
        Batch {
            requests,
            done: plans.iter().all(Plan::finished),
        }
    }
}

impl Workload for LocalCopilotBurst {
    fn describe() -> WorkloadInfo {
        WorkloadInfo {
            name: "local_copilot_burst".to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            description: "Developers on one project using a local copilot (test-plan family A): \
                          each session has an optional shared project prefix plus its own \
                          context, works in bursts of turns spaced in time with think time \
                          between turns, and sends its whole conversation each turn, the \
                          model's real answers included. Phases: warmup (excluded), \
                          copilot_burst."
                .to_string(),
            params: declared_params(),
        }
    }

    fn create(params: &Params, seed: u64) -> Result<Self> {
        Ok(Self {
            config: Config::from_params(params)?,
            seed,
            plans: None,
        })
    }

    fn phases(&self) -> Vec<Phase> {
        let mut phases = Vec::new();
        if self.config.warmup > 0 {
            phases.push(("warmup", false));
        }
        phases.push(("copilot_burst", true));
        phases
            .into_iter()
            .map(|(name, include_in_summary)| Phase {
                name: name.to_string(),
                include_in_summary,
                // At most one turn per session is in flight, so this never
                // delays a turn: every session keeps its slot while it thinks.
                load: Some(LoadModel::Closed(self.config.sessions)),
            })
            .collect()
    }

    fn next_batch(&mut self, max: u32) -> Result<Batch> {
        let (config, seed) = (&self.config, self.seed);
        let plans = self
            .plans
            .get_or_insert_with(|| Self::build(config, seed, &HostTokenizer));
        Ok(Self::next(plans, config, max as usize))
    }

    fn on_response(&mut self, summary: ResponseSummary) -> Result<()> {
        let recorded = self
            .plans
            .iter_mut()
            .flatten()
            .any(|plan| plan.record(&summary));
        if recorded {
            Ok(())
        } else {
            Err(WorkloadError::Internal(format!(
                "response for unknown request {:?}",
                summary.id
            )))
        }
    }
}

sparkhost_workload::export_workload!(LocalCopilotBurst);

#[cfg(test)]
mod tests {
    use super::*;
    use sparkhost_workload::{Prompt, WordTokenizer};

    fn config(pairs: &[(&str, &str)]) -> Result<Config> {
        Config::from_params(&Params::from_pairs(&declared_params(), pairs)?)
    }

    fn plans(pairs: &[(&str, &str)], seed: u64) -> (Config, Vec<Plan>) {
        let c = config(pairs).unwrap();
        let p = LocalCopilotBurst::build(&c, seed, &WordTokenizer);
        (c, p)
    }

    fn response(id: &str, text: &str) -> ResponseSummary {
        ResponseSummary {
            id: id.to_string(),
            phase: String::new(),
            session_id: None,
            ok: true,
            status: 200,
            error_kind: None,
            text: text.to_string(),
            prompt_tokens: None,
            completion_tokens: None,
            cached_tokens: None,
            ttft_ms: None,
            e2e_ms: 1.0,
        }
    }

    fn messages(r: &RequestSpec) -> &[ChatMessage] {
        match &r.prompt {
            Prompt::Chat(m) => m,
            Prompt::Text(_) => panic!("chat by default"),
        }
    }

    fn get<'a>(r: &'a RequestSpec, key: &str) -> &'a str {
        &r.labels.iter().find(|l| l.key == key).unwrap().value
    }

    const SMALL: [(&str, &str); 6] = [
        ("requests", "10"),
        ("warmup", "0"),
        ("sessions", "2"),
        ("burst-size", "3"),
        ("shared-prefix-tokens", "300"),
        ("context-tokens", "200"),
    ];

    #[test]
    fn defaults_match_the_seed() {
        let c = config(&[]).unwrap();
        assert_eq!(
            (c.requests, c.warmup, c.sessions, c.burst_size),
            (64, 8, 8, 4)
        );
        assert_eq!(c.shared_prefix_tokens, Some(3072));
        assert_eq!(c.burst_gap_ms, 8000, "sessions × interval");
        assert_eq!(c.history, History::Real);
        assert_eq!(c.format.api, Api::Chat);
        assert_eq!(c.generation.temperature, Some(0.7));
        assert_eq!(
            config(&[("shared-prefix", "false")])
                .unwrap()
                .shared_prefix_tokens,
            None
        );
        assert_eq!(config(&[("burst-gap-ms", "5")]).unwrap().burst_gap_ms, 5);
        for bad in [
            &[("sessions", "0")][..],
            &[("burst-size", "0")],
            &[("history", "fake")],
        ] {
            assert!(config(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn bursts_sessions_turns_and_arrivals() {
        let (c, mut p) = plans(&SMALL, 1);
        let t = &p[0].turns;
        let shape: Vec<(usize, u32, u32, u32)> = t
            .iter()
            .map(|t| (t.session, t.turn, t.burst, t.position))
            .collect();
        assert_eq!(
            shape,
            [
                (0, 1, 0, 0),
                (0, 2, 0, 1),
                (0, 3, 0, 2),
                (1, 1, 1, 0),
                (1, 2, 1, 1),
                (1, 3, 1, 2),
                (0, 4, 2, 0),
                (0, 5, 2, 1),
                (0, 6, 2, 2),
                (1, 4, 3, 0),
            ]
        );
        assert_eq!(t[0].arrival, Arrival::AtOffsetMs(0.0));
        assert_eq!(t[1].arrival, Arrival::AfterPreviousTurn(300.0));
        assert_eq!(t[3].arrival, Arrival::AtOffsetMs(1000.0));
        assert_eq!(t[6].arrival, Arrival::AfterPreviousTurn(2000.0));
        let first = p[0].next_requests(&c, 100);
        assert_eq!(
            first.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
            ["copilot_main-00000", "copilot_main-00003"],
            "one turn per session until its answer arrives"
        );
        assert_eq!(first[1].session_id.as_deref(), Some("session_02"));
        assert_eq!(get(&first[1], "burst_id"), "burst_0002");
    }

    #[test]
    fn history_grows_with_the_real_answers() {
        let (c, mut p) = plans(&SMALL, 1);
        let plan = &mut p[0];
        let first = plan.next_requests(&c, 100);
        assert!(
            plan.next_requests(&c, 100).is_empty(),
            "waiting for answers"
        );
        assert!(plan.record(&response(&first[1].id, "answer B1")));
        assert!(plan.record(&response(&first[0].id, "answer A1")));
        let second = plan.next_requests(&c, 100);
        assert_eq!(second[0].id, "copilot_main-00001");
        assert_eq!(second[1].id, "copilot_main-00004");
        let m = messages(&second[0]);
        let roles: Vec<&str> = m.iter().map(|m| m.role.as_str()).collect();
        assert_eq!(roles, ["system", "user", "assistant", "user"]);
        assert_eq!(m[2].content, "answer A1");
        assert_eq!(
            m[..2],
            messages(&first[0])[..],
            "the previous prompt is a prefix"
        );
        assert!(m[3].content.starts_with("Session ID: session_01\nBurst ID: burst_0001\nTurn: 2\nTask: In 5 bullets, explain how the "));
        assert_eq!(get(&second[0], "history_turns"), "1");
        assert!(!plan.record(&response("nope", "")));
    }

    #[test]
    fn prefix_is_shared_and_contexts_are_per_session() {
        let (c, mut p) = plans(
            &[
                ("history", "synthetic"),
                SMALL[0],
                SMALL[1],
                SMALL[2],
                SMALL[3],
                SMALL[4],
                SMALL[5],
            ],
            7,
        );
        let plan = &mut p[0];
        let shared = plan.shared_prefix.clone().unwrap();
        assert!(shared.starts_with(SHARED_PREFIX_HEADER));
        assert_eq!(WordTokenizer.count(&shared), 300);
        let all = plan.next_requests(&c, 100);
        assert_eq!(all.len(), 10, "synthetic history plans everything at once");
        assert!(plan.finished());
        let hash = sha256_hex(&shared);
        for r in &all {
            assert_eq!(r.prefix_hash.as_deref(), Some(hash.as_str()));
            assert!(
                messages(r)[0]
                    .content
                    .starts_with(&format!("{shared}\n\nSession Context:\nSession: "))
            );
        }
        let (a, b) = (&messages(&all[0])[0].content, &messages(&all[3])[0].content);
        assert_ne!(a, b);
        let context = a.strip_prefix(&format!("{shared}\n\n")).unwrap();
        assert_eq!(WordTokenizer.count(context), 200);
        let last = messages(&all[9]);
        assert_eq!(
            last.len(),
            1 + 2 * 3 + 1,
            "turn 4 of session 2 carries 3 earlier turns"
        );
        assert!(
            last[2]
                .content
                .starts_with("Reply to copilot_main-00003: five bullets on how the ")
        );
    }

    #[test]
    fn without_prefix_or_context_there_is_no_system_message() {
        let (c, mut p) = plans(
            &[
                ("shared-prefix", "false"),
                ("context-tokens", "0"),
                ("history", "synthetic"),
                ("warmup", "0"),
                ("requests", "2"),
            ],
            3,
        );
        let all = p[0].next_requests(&c, 10);
        assert_eq!(messages(&all[0]).len(), 1);
        assert_eq!(all[0].prefix_hash, None);
        let (_, p) = plans(&[("shared-prefix", "false"), ("warmup", "0")], 3);
        assert_eq!(
            p[0].prefix_hash[0],
            Some(sha256_hex(p[0].system[0].as_ref().unwrap()))
        );
    }

    #[test]
    fn warmup_comes_first_and_differs() {
        let (c, mut p) = plans(
            &[
                ("history", "synthetic"),
                ("requests", "4"),
                ("warmup", "2"),
                ("shared-prefix-tokens", "50"),
                ("context-tokens", "0"),
            ],
            5,
        );
        assert_eq!(p.len(), 2);
        let batch = LocalCopilotBurst::next(&mut p, &c, 100);
        assert!(batch.done);
        let ids: Vec<&str> = batch.requests.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "copilot_warmup-00000",
                "copilot_warmup-00001",
                "copilot_main-00000",
                "copilot_main-00001",
                "copilot_main-00002",
                "copilot_main-00003"
            ]
        );
        assert_eq!(
            batch.requests[0].session_id.as_deref(),
            Some("warmup_session_01")
        );
        assert_ne!(batch.requests[0].prefix_hash, batch.requests[2].prefix_hash);
    }

    #[test]
    fn a_later_phase_waits_until_the_earlier_is_planned() {
        let (c, mut p) = plans(
            &[
                ("requests", "2"),
                ("warmup", "2"),
                ("burst-size", "2"),
                ("shared-prefix-tokens", "50"),
                ("context-tokens", "0"),
            ],
            5,
        );
        let b = LocalCopilotBurst::next(&mut p, &c, 100);
        assert_eq!(b.requests.len(), 1);
        assert!(!b.done);
        assert!(p[0].record(&response("copilot_warmup-00000", "x")));
        let b = LocalCopilotBurst::next(&mut p, &c, 100);
        let ids: Vec<&str> = b.requests.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["copilot_warmup-00001", "copilot_main-00000"]);
    }

    #[test]
    fn same_seed_same_plan() {
        let pairs = [
            ("history", "synthetic"),
            ("requests", "6"),
            ("shared-prefix-tokens", "80"),
            ("context-tokens", "40"),
        ];
        let run = |seed| {
            let (c, mut p) = plans(&pairs, seed);
            LocalCopilotBurst::next(&mut p, &c, 1000).requests
        };
        assert_eq!(run(11), run(11));
        assert_ne!(run(11), run(12));
    }

    #[test]
    fn completions_render_the_llama3_history() {
        let (c, mut p) = plans(
            &[
                ("api", "completions"),
                ("history", "synthetic"),
                ("warmup", "0"),
                ("requests", "2"),
                ("shared-prefix-tokens", "20"),
                ("context-tokens", "0"),
            ],
            5,
        );
        let all = p[0].next_requests(&c, 10);
        let Prompt::Text(t) = &all[1].prompt else {
            panic!()
        };
        assert!(t.starts_with("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nShared Project Context:\n"));
        assert!(t.contains("<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nReply to copilot_main-00000: "));
        assert!(t.ends_with("<|start_header_id|>assistant<|end_header_id|>\n\n"));
    }

    // Test vectors for ports (workloads/PORTING.md): texts before the host
    // fits them, so they hold whatever the tokenizer.
    #[test]
    fn porting_vectors_seed_1337() {
        let mut rng = SplitMix64::new(1337 + PREFIX_SEED_OFFSET);
        let doc = text::synthetic_document(
            &mut rng,
            "copilot_main-shared-prefix",
            SHARED_PREFIX_TOPIC,
            3072,
        );
        assert_eq!(
            (doc.len(), sha256_hex(&doc).as_str()),
            (
                16055,
                "add7e5d4487a85f0e5b3da4715db6fb8485f2bbef7a4bba193195fae559277e8"
            )
        );
        let mut rng = SplitMix64::new(1337 + CONTEXT_SEED_OFFSET);
        let topic = rng.pick(&TOPICS);
        assert_eq!(*topic, "service degradation playbook");
        let doc = text::synthetic_document(&mut rng, "session_01-context", topic, 1024);
        assert_eq!(
            (doc.len(), sha256_hex(&doc).as_str()),
            (
                5647,
                "7d4f71e84c747563ed7541d3861cd46da1f3df1ec8fc3904dc039d6d201badf8"
            )
        );
        let (_, p) = plans(&[("history", "synthetic")], 1337);
        let main = &p[1].turns;
        assert_eq!(
            main[0].user_text,
            "Session ID: session_01\nBurst ID: burst_0001\nTurn: 1\nTask: In 5 bullets, \
             explain how the policy engine prioritizes the tenant isolation controls pipeline \
             under bursty traffic. Call out one concrete risk and one mitigation."
        );
        assert_eq!(
            main[0].synthetic_reply,
            "Reply to copilot_main-00000: five bullets on how the policy engine prioritizes \
             the tenant isolation controls pipeline under bursty traffic, one concrete risk, \
             and one mitigation."
        );
        assert_eq!(
            main[5].user_text,
            "Session ID: session_02\nBurst ID: burst_0002\nTurn: 2\nTask: In 5 bullets, \
             explain how the telemetry worker describes the token budget policy pipeline \
             under constrained memory tiers. Call out one concrete risk and one mitigation."
        );
        assert!(p[0].turns[0].user_text.starts_with(
            "Session ID: warmup_session_01\nBurst ID: burst_0001\nTurn: 1\nTask: In 5 \
             bullets, explain how the batch scheduler re-evaluates the fault tolerance and \
             retries pipeline under bursty traffic."
        ));
    }
}
