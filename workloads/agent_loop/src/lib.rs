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
//! they do not depend on the order in which answers arrive. The answers are
//! the model's own (`history=real`), or a fixed sentence (`history=synthetic`,
//! which makes the manifest byte-identical across runs).
//!
//! # Layout
//!
//! - [`Config`]: params parsed and validated once, in `create`.
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
    pub history: History,
    pub generation: Generation,
    pub format: PromptFormat,
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
    /// Answers to turns 1, 2, …, as they arrive.
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
            answers: Vec::new(),
            planned: 0,
            awaiting: false,
        }
    }

    /// The result of the tool called after turn `turn` (1-based), drawing
    /// every earlier one first: `pick(TOOLS)`, `range_u32(min, max)` tokens,
    /// then a synthetic document fitted to that many tokens.
    pub fn observation(
        &mut self,
        turn: u32,
        range: (u32, u32),
        tok: &dyn Tokenizer,
    ) -> &Observation {
        while self.observations.len() < turn as usize {
            let n = self.observations.len() + 1;
            let tool = *self.rng.pick(&TOOLS);
            let tokens = self.rng.range_u32(range.0, range.1);
            let doc = text::synthetic_document(
                &mut self.rng,
                &format!("{}-{tool}-{n}", self.id),
                self.topic,
                tokens,
            );
            let text = tok.fit(
                &format!("Tool result ({tool}, call {n}):\n{doc}"),
                tokens,
                FILLER,
            );
            self.observations.push(Observation { tool, tokens, text });
        }
        &self.observations[turn as usize - 1]
    }
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
        self.agents.iter().all(|a| a.planned == self.config.turns)
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
            let turns = self.config.turns;
            let next = self
                .agents
                .iter()
                .filter(|a| !a.awaiting && a.planned < turns)
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

    /// Messages: system (if any), the task, then per earlier turn k the
    /// answer (`assistant`) and tool result k (`user`).
    fn request(&mut self, s: usize, system: Option<&str>, tok: &dyn Tokenizer) -> RequestSpec {
        let (range, history, think, stagger) = (
            self.config.observation_range,
            self.config.history,
            self.config.think_time_ms,
            self.config.session_stagger_ms,
        );
        let agent = &mut self.agents[s];
        let turn = agent.planned + 1;
        let mut messages: Vec<ChatMessage> = Vec::new();
        if let Some(system) = system {
            messages.push(message("system", system));
        }
        messages.push(message("user", &agent.task));
        for k in 1..turn {
            let tool = agent.observation(k, range, tok).tool;
            let answer = match history {
                History::Real => agent.answers[k as usize - 1].clone(),
                History::Synthetic => synthetic_answer(&agent.id, k, tool),
            };
            messages.push(message("assistant", &answer));
            messages.push(message("user", &agent.observation(k, range, tok).text));
        }
        let arrival = if turn > 1 {
            Arrival::AfterPreviousTurn(f64::from(think))
        } else if stagger > 0 {
            Arrival::AtOffsetMs(f64::from(agent.index) * f64::from(stagger))
        } else {
            Arrival::Asap
        };
        let last_observation = if turn > 1 {
            agent.observations[turn as usize - 2].tokens.to_string()
        } else {
            "0".to_string()
        };
        RequestSpec {
            id: format!("{}-t{turn:02}", agent.id),
            phase: "agent".to_string(),
            session_id: Some(agent.id.clone()),
            prefix_hash: system.map(sha256_hex),
            prompt: self.config.format.render(&messages),
            generation: self.config.generation.clone(),
            arrival,
            labels: vec![
                label("prompt_set", "agent_loop"),
                label("turn", &turn.to_string()),
                label("session_turn_index", &turn.to_string()),
                label("history_messages", &(messages.len() - 1).to_string()),
                label("observation_tokens", &last_observation),
                label(
                    "history",
                    match history {
                        History::Real => "real",
                        History::Synthetic => "synthetic",
                    },
                ),
            ],
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
}
