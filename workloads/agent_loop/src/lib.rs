//! `agent_loop`: multi-turn agent sessions (the test plan's workload family
//! B). Each session is an agent working on a task: every turn it sends the
//! whole conversation so far (a system prompt shared by all agents, its
//! task, and for every earlier turn the model's answer followed by the
//! result of the tool it called), waits for the answer, "runs the tool" for
//! `think-time-ms`, and sends the next turn with that tool's result
//! appended. Prompts grow every turn; each turn's prompt starts with the
//! previous turn's prompt, so the KV cache of a session can be reused turn
//! after turn if it survives the think time.
//!
//! Sessions keep their slot while they think: the phase runs in closed loop
//! with concurrency = `sessions`, and a session never has more than one
//! turn in flight, so a thinking session's slot is never taken by another
//! session (and the host releases its next turn `think-time-ms` after the
//! previous answer ended, via `after-previous-turn`).
//!
//! Tool results are synthetic documents drawn from a per-session PRNG, so
//! they do not depend on the order in which answers arrive; their size is
//! drawn from `observation-range`, or per tool from `tool-result-tokens`
//! (a `read_file` result is larger than a `grep` one). The answers are
//! the model's own (`history=real`), or a fixed sentence (`history=synthetic`,
//! which makes the manifest byte-identical across runs).
//!
//! **Subagents.** With `subagents=K` and `subagent-every=E`, after every
//! E-th turn (but the last) the agent spawns K subagents, one after the
//! other. Subagent `c` starts from the parent's whole conversation so far
//! (so it shares the parent's prefix: system prompt, task, every earlier
//! turn and the spawning answer), adds its own subtask, and runs
//! `subagent-turns` turns of its own history; the parent's next turn then
//! gets, as the result of that turn, every subagent's final answer, so the
//! children return into the parent's context. Subagents run in the parent's
//! slot under the parent's `session_id` (the host orders a session's turns),
//! labelled `subagent=<session>/sub<c>@<turn>`.
//!
//! **Pauses.** With `pause-every=P`, the turn after every P-th turn waits
//! `pause-ms` instead of `think-time-ms`, while the other sessions keep
//! the engine busy: long enough, with enough sessions, for the paused
//! session's KV to leave the GPU tier, so its next turn is served from the
//! CPU or disk tier or recomputed (the case KV offload exists for).
//!
//! `subagents` and `pause-every` default to 0 (off), which keeps the plan
//! of earlier versions byte for byte.
//!
//! # Layout
//!
//! - [`Config`]: params parsed and validated once, in `create`.
//! - [`Step`], [`script`]: the order of a session's requests (its turns
//!   and its subagents' turns).
//! - [`Agent`]: one session: its task, its drawn tool results, its answers.
//! - [`AgentLoop`]: the planner; builds the shared system prompt on the
//!   first `next_batch`, then plans turns as answers arrive.

use std::collections::HashMap;

use sparkhost_workload::text::{self, ACTIONS, FILLER, QUALIFIERS, SUBJECTS, TOPICS};
use sparkhost_workload::{
    Api, Arrival, Batch, ChatMessage, Generation, GenerationDefaults, HostTokenizer, LoadModel,
    ParamInfo, Params, Phase, PromptFormat, RequestSpec, ResponseSummary, Result, SplitMix64,
    Template, Tokenizer, Workload, WorkloadError, WorkloadInfo, generation_params, label, message,
    param, sha256_hex,
};

/// The tools an agent calls; one is drawn per tool result.
pub const TOOLS: [&str; 6] = [
    "read_file",
    "run_tests",
    "grep",
    "list_dir",
    "git_diff",
    "build",
];

/// Opens the shared system prompt.
pub const SYSTEM_HEADER: &str = "You are a coding agent working in a repository. \
    Tools: read_file(path), run_tests(target), grep(pattern), list_dir(path), git_diff(), build(). \
    Each turn, think briefly, then call exactly one tool; its result comes back as the next \
    user message. Stop when the task is solved.\n\nRepository handbook:\n";

/// Seed offset of the system prompt's document.
pub const SYSTEM_SEED_OFFSET: u64 = 1;

/// Where a session's earlier answers come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum History {
    Real,
    Synthetic,
}

/// The validated params of one run.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub sessions: u32,
    pub turns: u32,
    pub think_time_ms: u32,
    pub session_stagger_ms: u32,
    pub system_tokens: u32,
    pub observation_range: (u32, u32),
    /// Per-tool sizes overriding `observation_range`.
    pub tool_sizes: Vec<(&'static str, (u32, u32))>,
    pub subagents: u32,
    pub subagent_every: u32,
    pub subagent_turns: u32,
    pub pause_every: u32,
    pub pause_ms: u32,
    pub history: History,
    pub generation: Generation,
    pub format: PromptFormat,
}

/// Most subagents one spawn may start, and most turns each may run.
pub const MAX_SUBAGENTS: u32 = 16;
pub const MAX_SUBAGENT_TURNS: u32 = 64;

/// `TOOL=MIN:MAX,…` with tools from [`TOOLS`].
fn tool_sizes(p: &Params) -> Result<Vec<(&'static str, (u32, u32))>> {
    let bad = |item: &str| {
        WorkloadError::InvalidConfig(format!(
            "parameter `tool-result-tokens`: {item:?} is not valid; expected TOOL=MIN:MAX with \
             TOOL one of {} and whole numbers 1 <= MIN <= MAX",
            TOOLS.join(", ")
        ))
    };
    let mut out: Vec<(&'static str, (u32, u32))> = Vec::new();
    for item in p.get_list("tool-result-tokens")? {
        let (tool, range) = item.split_once('=').ok_or_else(|| bad(&item))?;
        let tool = *TOOLS
            .iter()
            .find(|t| **t == tool)
            .ok_or_else(|| bad(&item))?;
        let (lo, hi) = range
            .split_once(':')
            .and_then(|(a, b)| Some((a.parse::<u32>().ok()?, b.parse::<u32>().ok()?)))
            .filter(|(a, b)| *a >= 1 && a <= b)
            .ok_or_else(|| bad(&item))?;
        if out.iter().any(|(t, _)| *t == tool) {
            return Err(bad(&item));
        }
        out.push((tool, (lo, hi)));
    }
    Ok(out)
}

impl Config {
    pub fn from_params(p: &Params) -> Result<Self> {
        Ok(Self {
            sessions: p.get_u32_min("sessions", 1)?,
            turns: p.get_u32_min("turns", 1)?,
            think_time_ms: p.get_u32("think-time-ms")?,
            session_stagger_ms: p.get_u32("session-stagger-ms")?,
            system_tokens: p.get_u32("system-tokens")?,
            observation_range: p.get_range("observation-range")?,
            tool_sizes: tool_sizes(p)?,
            subagents: p.get_u32_in("subagents", 0, MAX_SUBAGENTS)?,
            subagent_every: p.get_u32("subagent-every")?,
            subagent_turns: p.get_u32_in("subagent-turns", 1, MAX_SUBAGENT_TURNS)?,
            pause_every: p.get_u32("pause-every")?,
            pause_ms: p.get_u32("pause-ms")?,
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
            "sessions",
            "Concurrent agent sessions; the phase runs at this concurrency, so a session keeps \
             its slot while it thinks.",
            "4",
        ),
        param("turns", "Turns (requests) per session.", "6"),
        param(
            "think-time-ms",
            "Tool time: a session's next turn is sent this long after its previous answer \
             ended.",
            "1000",
        ),
        param(
            "session-stagger-ms",
            "Session s sends its first turn s × this many ms after the phase starts; 0 starts \
             all at once.",
            "0",
        ),
        param(
            "system-tokens",
            "Tokens of the system prompt (tool catalog and repository handbook) shared by all \
             sessions; 0 for none.",
            "1024",
        ),
        param(
            "observation-range",
            "MIN:MAX tokens of each tool result, uniform per result.",
            "128:512",
        ),
        param(
            "tool-result-tokens",
            "Per-tool result sizes overriding observation-range, as TOOL=MIN:MAX,… (tools: \
             read_file, run_tests, grep, list_dir, git_diff, build); empty for none.",
            "",
        ),
        param(
            "subagents",
            "Subagents spawned at each spawning turn (0 to 16); 0 for none. Each starts from \
             the parent's whole conversation and returns its final answer into it.",
            "0",
        ),
        param(
            "subagent-every",
            "Spawn subagents after every N-th turn of a session (never after its last); 0 \
             spawns none.",
            "2",
        ),
        param(
            "subagent-turns",
            "Turns each subagent runs (1 to 64), with its own growing history.",
            "2",
        ),
        param(
            "pause-every",
            "After every N-th turn, wait pause-ms instead of think-time-ms before the next \
             one, so the session's KV can leave the GPU tier; 0 for no pauses.",
            "0",
        ),
        param("pause-ms", "The pause, in ms (see pause-every).", "30000"),
        param(
            "history",
            "real: earlier answers are the engine's. synthetic: a fixed sentence per answer, so \
             the manifest is byte-identical across runs.",
            "real",
        ),
    ];
    params.extend(generation_params(&GenerationDefaults::SEED));
    params.extend(PromptFormat::params(Api::Chat, Template::Llama3));
    params
}

/// `agent_001`, … (1-based).
pub fn session_id(s: u32) -> String {
    format!("agent_{:03}", u64::from(s) + 1)
}

/// One request of a session, in the order the host sends them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Turn `turn` (1-based) of the session's own agent.
    Turn(u32),
    /// Turn `turn` of subagent `child` (both 1-based), spawned after the
    /// parent's turn `after`.
    Sub { after: u32, child: u32, turn: u32 },
}

/// A session's steps: each turn, followed, when it spawns, by its
/// subagents' turns, child after child.
pub fn script(c: &Config) -> Vec<Step> {
    let mut out = Vec::new();
    for k in 1..=c.turns {
        out.push(Step::Turn(k));
        if spawns(c, k) {
            for child in 1..=c.subagents {
                for turn in 1..=c.subagent_turns {
                    out.push(Step::Sub {
                        after: k,
                        child,
                        turn,
                    });
                }
            }
        }
    }
    out
}

/// Whether the parent's turn `k` spawned subagents.
fn spawns(c: &Config, k: u32) -> bool {
    c.subagents > 0 && c.subagent_every > 0 && k.is_multiple_of(c.subagent_every) && k < c.turns
}

/// One tool result, drawn when first needed.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    pub tool: &'static str,
    pub tokens: u32,
    pub text: String,
}

/// One agent session.
#[derive(Debug)]
pub struct Agent {
    pub index: u32,
    pub id: String,
    rng: SplitMix64,
    pub topic: &'static str,
    pub task: String,
    /// Tool results after turns 1, 2, …, drawn in turn order.
    pub observations: Vec<Observation>,
    /// Subagent tool results by (spawning turn, child), in turn order.
    pub sub_observations: HashMap<(u32, u32), (SplitMix64, Vec<Observation>)>,
    session_seed: u64,
    /// Answers to the session's steps ([`script`] order), as they arrive.
    pub answers: Vec<String>,
    /// Turns planned so far.
    pub planned: u32,
    pub awaiting: bool,
}

impl Agent {
    /// Session `index` with its own PRNG (`session_seed`); draws the task:
    /// `topic`, `subject`, `action`, `qualifier`.
    pub fn new(index: u32, session_seed: u64) -> Self {
        let mut rng = SplitMix64::new(session_seed);
        let topic = *rng.pick(&TOPICS);
        let subject = rng.pick(&SUBJECTS).to_ascii_lowercase();
        let action = *rng.pick(&ACTIONS);
        let qualifier = *rng.pick(&QUALIFIERS);
        let id = session_id(index);
        let task = format!(
            "Task for {id}: the {topic} tests fail {qualifier}. Find out why {subject} no longer \
             {action} the {topic} state correctly, fix it, and show that the tests pass."
        );
        Self {
            index,
            id,
            rng,
            topic,
            task,
            observations: Vec::new(),
            sub_observations: HashMap::new(),
            session_seed,
            answers: Vec::new(),
            planned: 0,
            awaiting: false,
        }
    }

    /// The result of the tool called after turn `turn` (1-based), drawing
    /// every earlier one first: `pick(TOOLS)`, `range_u32(min, max)` tokens,
    /// then a synthetic document fitted to that many tokens.
    /// A tool's size comes from `sizes` when listed there, else `range`.
    pub fn observation(
        &mut self,
        turn: u32,
        sizes: &Sizes<'_>,
        tok: &dyn Tokenizer,
    ) -> &Observation {
        while self.observations.len() < turn as usize {
            let n = self.observations.len() + 1;
            let name = format!("{}-{{tool}}-{n}", self.id);
            let o = draw_observation(&mut self.rng, &name, n, self.topic, sizes, tok);
            self.observations.push(o);
        }
        &self.observations[turn as usize - 1]
    }

    /// Tool result `turn` of subagent `child` spawned after turn `after`,
    /// from that subagent's own PRNG: `SplitMix64(session_seed ^ (after <<
    /// 32 | child) × 0x9E3779B97F4A7C15)`.
    pub fn sub_observation(
        &mut self,
        after: u32,
        child: u32,
        turn: u32,
        sizes: &Sizes<'_>,
        tok: &dyn Tokenizer,
    ) -> &Observation {
        let seed = self.session_seed
            ^ ((u64::from(after) << 32) | u64::from(child)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let (rng, list) = self
            .sub_observations
            .entry((after, child))
            .or_insert_with(|| (SplitMix64::new(seed), Vec::new()));
        while list.len() < turn as usize {
            let n = list.len() + 1;
            let name = format!("{}-sub{child}@{after}-{{tool}}-{n}", self.id);
            list.push(draw_observation(rng, &name, n, self.topic, sizes, tok));
        }
        &list[turn as usize - 1]
    }
}

/// Tool result sizes: `range` unless the tool is listed in `tools`.
#[derive(Debug, Clone, Copy)]
pub struct Sizes<'a> {
    pub range: (u32, u32),
    pub tools: &'a [(&'static str, (u32, u32))],
}

/// `pick(TOOLS)`, `range_u32(min, max)` tokens, then a synthetic document
/// named `name` (with `{tool}` replaced) fitted to that many tokens.
fn draw_observation(
    rng: &mut SplitMix64,
    name: &str,
    n: usize,
    topic: &str,
    sizes: &Sizes<'_>,
    tok: &dyn Tokenizer,
) -> Observation {
    let tool = *rng.pick(&TOOLS);
    let (lo, hi) = sizes
        .tools
        .iter()
        .find(|(t, _)| *t == tool)
        .map_or(sizes.range, |(_, r)| *r);
    let tokens = rng.range_u32(lo, hi);
    let doc = text::synthetic_document(rng, &name.replace("{tool}", tool), topic, tokens);
    let text = tok.fit(
        &format!("Tool result ({tool}, call {n}):\n{doc}"),
        tokens,
        FILLER,
    );
    Observation { tool, tokens, text }
}

/// The answer recorded with `history=synthetic`.
pub fn synthetic_answer(session: &str, turn: u32, tool: &str) -> String {
    format!("Turn {turn} of {session}: the evidence so far is not conclusive; calling {tool} next.")
}

/// The planner of one run.
pub struct AgentLoop {
    config: Config,
    seed: u64,
    /// Built on the first `next_batch` (it needs the host's tokenizer).
    system: Option<Option<String>>,
    agents: Vec<Agent>,
    index_of: HashMap<String, usize>,
    /// Every session's steps (the same for all).
    script: Vec<Step>,
}

impl AgentLoop {
    /// Session seeds are drawn in order from `SplitMix64(seed)`, so a
    /// session's text never depends on the others.
    pub fn new(config: Config, seed: u64) -> Self {
        let mut master = SplitMix64::new(seed);
        let agents: Vec<Agent> = (0..config.sessions)
            .map(|s| Agent::new(s, master.next_u64()))
            .collect();
        let index_of = agents
            .iter()
            .enumerate()
            .map(|(i, a)| (a.id.clone(), i))
            .collect();
        Self {
            script: script(&config),
            config,
            seed,
            system: None,
            agents,
            index_of,
        }
    }

    /// The shared system prompt: header plus a handbook document from
    /// `SplitMix64(seed + 1)`, fitted to `system-tokens`.
    pub fn system_prompt(config: &Config, seed: u64, tok: &dyn Tokenizer) -> Option<String> {
        (config.system_tokens > 0).then(|| {
            let mut rng = SplitMix64::new(seed.wrapping_add(SYSTEM_SEED_OFFSET));
            let doc = text::synthetic_document(
                &mut rng,
                "agent-handbook",
                "agent tool catalog",
                config.system_tokens,
            );
            tok.fit(
                &format!("{SYSTEM_HEADER}{doc}"),
                config.system_tokens,
                FILLER,
            )
        })
    }

    fn done(&self) -> bool {
        let steps = self.script.len() as u32;
        self.agents.iter().all(|a| a.planned == steps)
    }

    /// Up to `max` turns. A session's next turn may be planned once its
    /// previous answer is in (always with `history=synthetic`); among those,
    /// the lowest (turn, session) goes first, so sessions advance together.
    pub fn next_requests(&mut self, max: usize, tok: &dyn Tokenizer) -> Vec<RequestSpec> {
        let system = self
            .system
            .get_or_insert_with(|| Self::system_prompt(&self.config, self.seed, tok))
            .clone();
        let mut out = Vec::new();
        while out.len() < max {
            let steps = self.script.len() as u32;
            let next = self
                .agents
                .iter()
                .filter(|a| !a.awaiting && a.planned < steps)
                .min_by_key(|a| (a.planned, a.index))
                .map(|a| a.index as usize);
            let Some(s) = next else { break };
            out.push(self.request(s, system.as_deref(), tok));
            let agent = &mut self.agents[s];
            agent.planned += 1;
            if self.config.history == History::Real {
                agent.awaiting = true;
            }
        }
        out
    }

    /// The answer to step `i` of agent `s`: the engine's, or the synthetic
    /// sentence.
    fn answer(&self, s: usize, i: usize, tool: &str) -> String {
        let a = &self.agents[s];
        match self.config.history {
            History::Real => a.answers[i].clone(),
            History::Synthetic => match self.script[i] {
                Step::Turn(k) => synthetic_answer(&a.id, k, tool),
                Step::Sub { after, child, turn } => {
                    synthetic_answer(&format!("{}/sub{child}@{after}", a.id), turn, tool)
                }
            },
        }
    }

    fn step_index(&self, step: Step) -> usize {
        self.script
            .iter()
            .position(|s| *s == step)
            .expect("a step of the script")
    }

    /// The parent's conversation up to (not including) its turn `turn`:
    /// system (if any), the task, then per earlier turn k the answer
    /// (`assistant`) and k's result (`user`): tool result k, or, when k
    /// spawned subagents, their final answers.
    fn parent_messages(
        &mut self,
        s: usize,
        turn: u32,
        system: Option<&str>,
        tok: &dyn Tokenizer,
    ) -> Vec<ChatMessage> {
        let c = self.config.clone();
        let sizes = Sizes {
            range: c.observation_range,
            tools: &c.tool_sizes,
        };
        let mut messages: Vec<ChatMessage> = Vec::new();
        if let Some(system) = system {
            messages.push(message("system", system));
        }
        messages.push(message("user", &self.agents[s].task));
        for k in 1..turn {
            let tool = self.agents[s].observation(k, &sizes, tok).tool;
            let i = self.step_index(Step::Turn(k));
            let answer = if spawns(&c, k) {
                self.answer(s, i, "spawn_subagents")
            } else {
                self.answer(s, i, tool)
            };
            messages.push(message("assistant", &answer));
            let result = if spawns(&c, k) {
                let mut r = String::from("Subagent results:\n");
                for child in 1..=c.subagents {
                    let last = self.step_index(Step::Sub {
                        after: k,
                        child,
                        turn: c.subagent_turns,
                    });
                    let tool = self.agents[s]
                        .sub_observation(k, child, c.subagent_turns, &sizes, tok)
                        .tool;
                    let id = &self.agents[s].id;
                    r.push_str(&format!("[{id}/sub{child}] "));
                    r.push_str(&self.answer(s, last, tool));
                    r.push('\n');
                }
                r
            } else {
                self.agents[s].observation(k, &sizes, tok).text.clone()
            };
            messages.push(message("user", &result));
        }
        messages
    }

    /// The request for agent `s`'s next step.
    fn request(&mut self, s: usize, system: Option<&str>, tok: &dyn Tokenizer) -> RequestSpec {
        let c = self.config.clone();
        let sizes = Sizes {
            range: c.observation_range,
            tools: &c.tool_sizes,
        };
        let index = self.agents[s].planned as usize;
        let step = self.script[index];
        let (messages, id, extra, last_observation) = match step {
            Step::Turn(turn) => {
                let m = self.parent_messages(s, turn, system, tok);
                let last = if turn > 1 && !spawns(&c, turn - 1) {
                    self.agents[s].observations[turn as usize - 2]
                        .tokens
                        .to_string()
                } else {
                    "0".to_string()
                };
                (m, format!("{}-t{turn:02}", self.agents[s].id), None, last)
            }
            Step::Sub { after, child, turn } => {
                let mut m = self.parent_messages(s, after, system, tok);
                let spawn = self.step_index(Step::Turn(after));
                m.push(message(
                    "assistant",
                    &self.answer(s, spawn, "spawn_subagents"),
                ));
                let a = &self.agents[s];
                m.push(message(
                    "user",
                    &format!(
                        "Subagent {}/sub{child}: investigate part {child} of the task above on \
                         your own, calling one tool per turn, and report what you found in \
                         your last answer.",
                        a.id
                    ),
                ));
                for v in 1..turn {
                    let tool = self.agents[s]
                        .sub_observation(after, child, v, &sizes, tok)
                        .tool;
                    let i = self.step_index(Step::Sub {
                        after,
                        child,
                        turn: v,
                    });
                    m.push(message("assistant", &self.answer(s, i, tool)));
                    let text = self.agents[s]
                        .sub_observation(after, child, v, &sizes, tok)
                        .text
                        .clone();
                    m.push(message("user", &text));
                }
                let last = if turn > 1 {
                    self.agents[s].sub_observations[&(after, child)].1[turn as usize - 2]
                        .tokens
                        .to_string()
                } else {
                    "0".to_string()
                };
                let a = &self.agents[s];
                let label_value = format!("{}/sub{child}@{after}", a.id);
                (
                    m,
                    format!("{}-t{after:02}-s{child}-{turn:02}", a.id),
                    Some((label_value, turn)),
                    last,
                )
            }
        };
        let agent = &self.agents[s];
        // The turn after every `pause-every`-th parent turn waits longer.
        let paused = match (index.checked_sub(1).map(|i| self.script[i]), step) {
            (Some(Step::Turn(k)), Step::Turn(_))
            | (Some(Step::Sub { after: k, .. }), Step::Turn(_)) => {
                c.pause_every > 0 && k.is_multiple_of(c.pause_every)
            }
            _ => false,
        };
        let wait = if paused { c.pause_ms } else { c.think_time_ms };
        let arrival = if index > 0 {
            Arrival::AfterPreviousTurn(f64::from(wait))
        } else if c.session_stagger_ms > 0 {
            Arrival::AtOffsetMs(f64::from(agent.index) * f64::from(c.session_stagger_ms))
        } else {
            Arrival::Asap
        };
        let turn = match step {
            Step::Turn(t) => t,
            Step::Sub { after, .. } => after,
        };
        let mut labels = vec![
            label("prompt_set", "agent_loop"),
            label("turn", &turn.to_string()),
            label("session_turn_index", &(index + 1).to_string()),
            label("history_messages", &(messages.len() - 1).to_string()),
            label("observation_tokens", &last_observation),
            label(
                "history",
                match c.history {
                    History::Real => "real",
                    History::Synthetic => "synthetic",
                },
            ),
        ];
        if let Some((sub, sub_turn)) = extra {
            labels.push(label("subagent", &sub));
            labels.push(label("subagent_turn", &sub_turn.to_string()));
        }
        if paused {
            labels.push(label("pause_ms", &wait.to_string()));
        }
        RequestSpec {
            id,
            phase: "agent".to_string(),
            session_id: Some(agent.id.clone()),
            prefix_hash: system.map(sha256_hex),
            prompt: c.format.render(&messages),
            generation: c.generation.clone(),
            arrival,
            labels,
        }
    }

    /// Records an answer; a failed turn's text (often empty) is kept, and
    /// the agent goes on.
    pub fn record(&mut self, summary: &ResponseSummary) -> Result<()> {
        let s = summary
            .session_id
            .as_deref()
            .and_then(|sid| self.index_of.get(sid))
            .copied()
            .ok_or_else(|| {
                WorkloadError::Internal(format!(
                    "response for unknown request {:?} (session {:?})",
                    summary.id, summary.session_id
                ))
            })?;
        let agent = &mut self.agents[s];
        agent.answers.push(summary.text.clone());
        agent.awaiting = false;
        Ok(())
    }
}

impl Workload for AgentLoop {
    fn describe() -> WorkloadInfo {
        WorkloadInfo {
            name: "agent_loop".to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            description: "Multi-turn agent sessions (test-plan family B): each turn sends the \
                          whole growing conversation (shared system prompt, task, the model's \
                          answers and synthetic tool results), then waits think-time-ms after \
                          the answer before the next turn. The phase `agent` runs at \
                          concurrency = sessions, so a session keeps its slot while it thinks."
                .to_string(),
            params: declared_params(),
        }
    }

    fn create(params: &Params, seed: u64) -> Result<Self> {
        Ok(Self::new(Config::from_params(params)?, seed))
    }

    fn phases(&self) -> Vec<Phase> {
        vec![Phase {
            name: "agent".to_string(),
            include_in_summary: true,
            load: Some(LoadModel::Closed(self.config.sessions)),
        }]
    }

    fn next_batch(&mut self, max: u32) -> Result<Batch> {
        let requests = self.next_requests(max as usize, &HostTokenizer);
        Ok(Batch {
            requests,
            done: self.done(),
        })
    }

    fn on_response(&mut self, summary: ResponseSummary) -> Result<()> {
        self.record(&summary)
    }
}

sparkhost_workload::export_workload!(AgentLoop);

#[cfg(test)]
mod tests {
    use super::*;
    use sparkhost_workload::{Prompt, WordTokenizer};

    fn config(pairs: &[(&str, &str)]) -> Result<Config> {
        Config::from_params(&Params::from_pairs(&declared_params(), pairs)?)
    }

    fn planner(pairs: &[(&str, &str)], seed: u64) -> AgentLoop {
        AgentLoop::new(config(pairs).unwrap(), seed)
    }

    fn answer(r: &RequestSpec, text: &str) -> ResponseSummary {
        ResponseSummary {
            id: r.id.clone(),
            phase: r.phase.clone(),
            session_id: r.session_id.clone(),
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

    const SMALL: [(&str, &str); 4] = [
        ("sessions", "2"),
        ("turns", "3"),
        ("system-tokens", "100"),
        ("observation-range", "20:40"),
    ];

    #[test]
    fn defaults_and_validation() {
        let c = config(&[]).unwrap();
        assert_eq!((c.sessions, c.turns, c.think_time_ms), (4, 6, 1000));
        assert_eq!((c.system_tokens, c.observation_range), (1024, (128, 512)));
        assert_eq!((c.history, c.format.api), (History::Real, Api::Chat));
        assert!(config(&[("sessions", "0")]).is_err());
        assert!(config(&[("observation-range", "5:1")]).is_err());
    }

    #[test]
    fn turns_wait_for_answers_and_history_grows() {
        let mut p = planner(&SMALL, 1);
        let t1 = p.next_requests(10, &WordTokenizer);
        assert_eq!(
            t1.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
            ["agent_001-t01", "agent_002-t01"]
        );
        assert!(t1.iter().all(|r| r.arrival == Arrival::Asap));
        assert!(p.next_requests(10, &WordTokenizer).is_empty());
        assert!(!p.done());
        p.record(&answer(&t1[1], "B says hi")).unwrap();
        let t2 = p.next_requests(10, &WordTokenizer);
        assert_eq!(t2.len(), 1);
        assert_eq!(t2[0].id, "agent_002-t02");
        assert_eq!(t2[0].arrival, Arrival::AfterPreviousTurn(1000.0));
        let m = messages(&t2[0]);
        assert_eq!(
            m.iter().map(|m| m.role.as_str()).collect::<Vec<_>>(),
            ["system", "user", "assistant", "user"]
        );
        assert_eq!(
            m[..2],
            messages(&t1[1])[..],
            "the previous prompt is a prefix"
        );
        assert_eq!(m[2].content, "B says hi");
        assert!(m[3].content.starts_with("Tool result ("));
        let n = WordTokenizer.count(&m[3].content);
        assert!((20..=40).contains(&n), "{n}");
        assert_eq!(
            t2[0]
                .labels
                .iter()
                .find(|l| l.key == "observation_tokens")
                .unwrap()
                .value,
            n.to_string()
        );
        assert!(
            p.record(&ResponseSummary {
                session_id: Some("nobody".into()),
                ..answer(&t2[0], "")
            })
            .is_err()
        );
    }

    #[test]
    fn synthetic_history_plans_everything_turn_major() {
        let mut p = planner(
            &[
                ("history", "synthetic"),
                SMALL[0],
                SMALL[1],
                SMALL[2],
                SMALL[3],
            ],
            5,
        );
        let all = p.next_requests(100, &WordTokenizer);
        assert!(p.done());
        let ids: Vec<&str> = all.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "agent_001-t01",
                "agent_002-t01",
                "agent_001-t02",
                "agent_002-t02",
                "agent_001-t03",
                "agent_002-t03"
            ]
        );
        let sizes: Vec<u32> = all
            .iter()
            .map(|r| {
                messages(r)
                    .iter()
                    .map(|m| WordTokenizer.count(&m.content))
                    .sum()
            })
            .collect();
        assert!(sizes[0] < sizes[2] && sizes[2] < sizes[4], "{sizes:?}");
        assert!(
            messages(&all[4])[2]
                .content
                .starts_with("Turn 1 of agent_001: ")
        );
        let hash = all[0].prefix_hash.clone().unwrap();
        assert!(
            all.iter()
                .all(|r| r.prefix_hash.as_deref() == Some(hash.as_str()))
        );
        assert_eq!(WordTokenizer.count(&messages(&all[0])[0].content), 100);
        assert_ne!(messages(&all[0])[1], messages(&all[1])[1], "tasks differ");
    }

    #[test]
    fn observations_do_not_depend_on_answer_order() {
        let run = |first: usize| {
            let mut p = planner(&SMALL, 3);
            let t1 = p.next_requests(10, &WordTokenizer);
            p.record(&answer(&t1[first], "x")).unwrap();
            p.record(&answer(&t1[1 - first], "x")).unwrap();
            let mut t2 = p.next_requests(10, &WordTokenizer);
            t2.sort_by(|a, b| a.id.cmp(&b.id));
            t2
        };
        assert_eq!(run(0), run(1));
    }

    #[test]
    fn stagger_and_no_system() {
        let mut p = planner(
            &[
                ("session-stagger-ms", "250"),
                ("system-tokens", "0"),
                ("sessions", "3"),
                ("turns", "1"),
            ],
            1,
        );
        let all = p.next_requests(10, &WordTokenizer);
        assert_eq!(all[2].arrival, Arrival::AtOffsetMs(500.0));
        assert_eq!(all[0].prefix_hash, None);
        assert_eq!(messages(&all[0]).len(), 1);
        assert!(p.done());
    }

    fn label_of<'a>(r: &'a RequestSpec, key: &str) -> Option<&'a str> {
        r.labels
            .iter()
            .find(|l| l.key == key)
            .map(|l| l.value.as_str())
    }

    #[test]
    fn subagents_share_the_parents_prefix_and_return_into_it() {
        let mut p = planner(
            &[
                ("history", "synthetic"),
                ("sessions", "1"),
                ("turns", "3"),
                ("system-tokens", "50"),
                ("observation-range", "20:30"),
                ("subagents", "2"),
                ("subagent-every", "1"),
                ("subagent-turns", "2"),
            ],
            4,
        );
        let all = p.next_requests(100, &WordTokenizer);
        assert!(p.done());
        let ids: Vec<&str> = all.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "agent_001-t01",
                "agent_001-t01-s1-01",
                "agent_001-t01-s1-02",
                "agent_001-t01-s2-01",
                "agent_001-t01-s2-02",
                "agent_001-t02",
                "agent_001-t02-s1-01",
                "agent_001-t02-s1-02",
                "agent_001-t02-s2-01",
                "agent_001-t02-s2-02",
                "agent_001-t03",
            ]
        );
        assert!(
            all.iter()
                .all(|r| r.session_id.as_deref() == Some("agent_001"))
        );
        let parent1 = messages(&all[0]);
        let child = messages(&all[2]);
        // The child starts with the parent's whole prompt, then the spawn.
        assert_eq!(child[..parent1.len()], parent1[..]);
        assert!(child[parent1.len()].content.contains("spawn_subagents"));
        assert!(
            child[parent1.len() + 1]
                .content
                .starts_with("Subagent agent_001/sub1:")
        );
        assert_eq!(label_of(&all[2], "subagent"), Some("agent_001/sub1@1"));
        assert_eq!(label_of(&all[2], "subagent_turn"), Some("2"));
        // The parent's next turn gets both children's final answers.
        let parent2 = messages(&all[5]);
        assert_eq!(parent2[..parent1.len()], parent1[..]);
        let results = &parent2.last().unwrap().content;
        assert!(results.starts_with("Subagent results:\n"), "{results}");
        assert!(
            results.contains("Turn 2 of agent_001/sub1@1")
                && results.contains("Turn 2 of agent_001/sub2@1"),
            "{results}"
        );
        // Children of one spawn do not share each other's history.
        assert_ne!(
            messages(&all[3])[parent1.len() + 1],
            child[parent1.len() + 1]
        );
        // The last turn spawns nothing.
        assert_eq!(all.len(), 11);
        assert!(
            all[1..]
                .iter()
                .all(|r| matches!(r.arrival, Arrival::AfterPreviousTurn(_)))
        );
    }

    #[test]
    fn pauses_and_per_tool_result_sizes() {
        let mut p = planner(
            &[
                ("history", "synthetic"),
                ("sessions", "1"),
                ("turns", "5"),
                ("pause-every", "2"),
                ("pause-ms", "45000"),
                ("observation-range", "20:30"),
                (
                    "tool-result-tokens",
                    "read_file=300:300,run_tests=300:300,grep=300:300,list_dir=300:300,git_diff=300:300,build=300:300",
                ),
            ],
            2,
        );
        let all = p.next_requests(100, &WordTokenizer);
        let waits: Vec<Arrival> = all.iter().map(|r| r.arrival).collect();
        assert_eq!(
            waits,
            [
                Arrival::Asap,
                Arrival::AfterPreviousTurn(1000.0),
                Arrival::AfterPreviousTurn(45000.0),
                Arrival::AfterPreviousTurn(1000.0),
                Arrival::AfterPreviousTurn(45000.0),
            ]
        );
        assert_eq!(label_of(&all[2], "pause_ms"), Some("45000"));
        assert_eq!(label_of(&all[1], "pause_ms"), None);
        assert_eq!(label_of(&all[1], "observation_tokens"), Some("300"));
        for bad in [
            "read_file",
            "nope=1:2",
            "grep=0:5",
            "grep=5:1",
            "grep=1:2,grep=1:2",
        ] {
            assert!(config(&[("tool-result-tokens", bad)]).is_err(), "{bad}");
        }
        assert!(config(&[("subagents", "17")]).is_err());
        assert!(config(&[("subagent-turns", "0")]).is_err());
    }

    #[test]
    fn defaults_keep_the_plan_without_subagents_or_pauses() {
        let c = config(&[]).unwrap();
        assert_eq!((c.subagents, c.pause_every), (0, 0));
        assert_eq!(script(&c), (1..=6).map(Step::Turn).collect::<Vec<_>>());
    }
}
