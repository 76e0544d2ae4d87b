//! The plan feed: drives a [`Planner`] on its own thread, validates and
//! prepares what it plans, writes `request_manifest.jsonl`, and hands ready
//! requests to the dispatcher through a bounded look-ahead channel.
//!
//! Everything slow about a request (guest call, tokenizing, JSON encoding,
//! hashing) happens here, before its send time, never on the dispatch path.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::mpsc as std_mpsc;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use crate::dispatch::runner::FeedItem;
use crate::dispatch::{Prepared, openai};
use crate::plan::{Arrival, PhasePlan, PlanError, Planner, Prompt, RequestPlan, ResponseSummary};
use crate::prepare::{RequestIdentity, RequestMeta};
use crate::results::rundir::{JsonlWriter, RunDirError};
use crate::tokenize::TokenCounter;

pub struct FeedConfig {
    pub model: String,
    pub stream: bool,
    pub stream_usage: bool,
    /// Largest batch asked of the planner at once.
    pub batch_max: u32,
    /// The channel's bound, and how many requests are planned before
    /// dispatch may begin (the dispatcher buffers up to as many again).
    pub lookahead: usize,
    /// Refuse prompts that cannot fit the engine (the seed's guardrail).
    pub preflight: Option<Preflight>,
    /// The whole-plan check already failed: plan and record the initial
    /// window as usual, send nothing.
    pub refuse: bool,
}

/// `prompt tokens ≤ engine_max_input_tokens − max_tokens − safety_margin`.
#[derive(
    Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
pub struct Preflight {
    pub engine_max_input_tokens: u32,
    pub input_token_safety_margin: u32,
}

/// What preflight found; `config.json` keeps it.
#[derive(
    Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(default)]
pub struct PreflightReport {
    pub failed: bool,
    pub checked: u64,
    pub failure_count: u64,
    /// The first 20 offending requests.
    pub errors: Vec<String>,
    /// The whole-plan check made before the first send, and what it
    /// guarantees; `None` when preflight was off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub whole_plan: Option<WholePlan>,
}

/// The dry run of the whole plan before anything is sent: a second
/// instance of the workload, same seed and params, planned to its end
/// through the preflight check, keeping nothing but counts and the first
/// offenders (so its memory is bounded whatever the plan's length).
#[derive(
    Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(default)]
pub struct WholePlan {
    /// Requests the dry run planned and checked.
    pub checked: u64,
    pub failure_count: u64,
    /// The dry run reached the plan's end: every request the run will send
    /// was checked before the first send.
    pub complete: bool,
    /// Why it did not (the workload waits for responses, the cap, an error).
    pub stopped: Option<String>,
    /// What the run guarantees, in one sentence.
    pub guarantee: String,
}

/// The preflight rule for one request; the violation's text names it.
fn preflight_violation(
    pf: Preflight,
    id: &str,
    max_tokens: u32,
    prompt_tokens: u32,
) -> Option<String> {
    let ceiling = i64::from(pf.engine_max_input_tokens)
        - i64::from(max_tokens)
        - i64::from(pf.input_token_safety_margin);
    if ceiling <= 0 {
        Some(format!(
            "{id}: max_tokens {max_tokens} + safety margin {} leave no room under the engine's {} input tokens",
            pf.input_token_safety_margin, pf.engine_max_input_tokens
        ))
    } else if i64::from(prompt_tokens) > ceiling {
        Some(format!(
            "{id}: {prompt_tokens} prompt tokens > ceiling {ceiling} (engine {} − max_tokens {max_tokens} − margin {})",
            pf.engine_max_input_tokens, pf.input_token_safety_margin
        ))
    } else {
        None
    }
}

fn prompt_tokens(tokens: &TokenCounter, p: &Prompt) -> u32 {
    match p {
        Prompt::Text(t) => tokens.count(t),
        Prompt::Chat(m) => m.iter().map(|m| tokens.count(&m.content)).sum(),
    }
}

/// Plans the whole run with `planner` (a fresh instance, never sent from)
/// and checks every request against `pf`, up to `max` requests. Into
/// `report` go the failure count and the first 20 offenders.
pub fn check_whole_plan(
    planner: &mut dyn Planner,
    pf: Preflight,
    tokens: &TokenCounter,
    batch_max: u32,
    max: u64,
    report: &mut PreflightReport,
) -> WholePlan {
    let mut w = WholePlan::default();
    let stopped = loop {
        if w.checked >= max {
            break Some(format!(
                "the dry run stopped at its cap of {max} requests (limits::PREFLIGHT_PLAN_MAX)"
            ));
        }
        let batch = match planner.next_batch(batch_max) {
            Ok(b) => b,
            Err(e) => break Some(format!("the workload failed while planning: {e}")),
        };
        let n = batch.requests.len();
        for r in batch.requests {
            w.checked += 1;
            if let Some(m) = invalid(&r) {
                // The run's own feed refuses it the same way, before its send.
                break_invalid(&mut w, m);
                return finish_whole(w, report);
            }
            let pt = prompt_tokens(tokens, &r.prompt);
            if let Some(v) = preflight_violation(pf, &r.id, r.generation.max_tokens, pt) {
                w.failure_count += 1;
                if report.errors.len() < 20 {
                    report.errors.push(v);
                }
            }
        }
        if batch.done {
            break None;
        }
        if n == 0 {
            break Some(format!(
                "after {} requests the workload waits for responses (its next requests depend on answers)",
                w.checked
            ));
        }
    };
    w.complete = stopped.is_none();
    w.stopped = stopped;
    finish_whole(w, report)
}

fn break_invalid(w: &mut WholePlan, m: String) {
    w.stopped = Some(format!("the workload planned an invalid request: {m}"));
}

fn finish_whole(mut w: WholePlan, report: &mut PreflightReport) -> WholePlan {
    w.guarantee = if w.complete {
        format!(
            "every one of the {} planned requests was checked before the first send",
            w.checked
        )
    } else {
        format!(
            "the first {} planned requests were checked before the first send ({}); each later one is checked when it is planned, and the first that cannot fit stops the run (prompt_preflight_failed) with what was sent before it kept",
            w.checked,
            w.stopped.as_deref().unwrap_or("")
        )
    };
    if w.failure_count > 0 {
        report.failed = true;
        report.failure_count = report.failure_count.max(w.failure_count);
        report.checked = report.checked.max(w.checked);
    }
    report.whole_plan = Some(w.clone());
    w
}

/// The state of planning when dispatch may begin.
#[derive(Debug, Clone, Copy, Default)]
pub struct Initial {
    pub planned: u64,
    /// Preflight refused prompts of the initial plan: nothing may be sent.
    pub preflight_failed: bool,
}

/// The dispatcher's side of the feed.
pub struct Feed {
    pub requests: mpsc::Receiver<FeedItem>,
    pub responses: std_mpsc::Sender<ResponseSummary>,
    /// Fires once the initial plan is in the manifest (all of it, or the
    /// look-ahead window, or up to the first wait for responses).
    pub initial: oneshot::Receiver<Initial>,
    pub thread: std::thread::JoinHandle<FeedReport>,
}

#[derive(Debug, Default)]
pub struct FeedReport {
    pub planned: u64,
    /// Why planning stopped early; the dispatcher got the same error.
    pub error: Option<Arc<PlanError>>,
    pub preflight: PreflightReport,
}

pub fn spawn(
    mut planner: Box<dyn Planner>,
    phases: Vec<PhasePlan>,
    cfg: FeedConfig,
    tokens: Arc<TokenCounter>,
    mut manifest: JsonlWriter,
    mut prompts: JsonlWriter,
) -> Feed {
    let (tx, rx) = mpsc::channel(cfg.lookahead.max(1));
    let (resp_tx, resp_rx) = std_mpsc::channel::<ResponseSummary>();
    let (init_tx, init_rx) = oneshot::channel();
    let thread = std::thread::Builder::new()
        .name("plan-feed".into())
        .spawn(move || {
            let refuse = cfg.refuse;
            let mut state = FeedState {
                cfg,
                tokens,
                phase_index: phases
                    .iter()
                    .enumerate()
                    .map(|(i, p)| (p.name.clone(), i))
                    .collect(),
                current_phase: 0,
                per_phase: HashMap::new(),
                ids: HashSet::new(),
                seq: 0,
                started: false,
                preflight: PreflightReport {
                    failed: refuse,
                    ..Default::default()
                },
                prompts_seen: HashSet::new(),
            };
            let mut init = Some(init_tx);
            let mut report = FeedReport::default();
            let result = state.run(
                &mut *planner,
                &tx,
                &resp_rx,
                &mut manifest,
                &mut prompts,
                &mut init,
            );
            report.planned = state.seq;
            report.preflight = state.preflight.clone();
            if let Some(i) = init.take() {
                let _ = i.send(Initial {
                    planned: state.seq,
                    preflight_failed: state.preflight.failed,
                });
            }
            match result {
                Ok(()) => {
                    let _ = tx.blocking_send(FeedItem::Done);
                }
                Err(e) => {
                    let e = Arc::new(e);
                    report.error = Some(e.clone());
                    let _ = tx.blocking_send(FeedItem::Failed(e));
                }
            }
            report
        })
        .expect("spawning a thread only fails when the OS is out of resources");
    Feed {
        requests: rx,
        responses: resp_tx,
        initial: init_rx,
        thread,
    }
}

struct FeedState {
    cfg: FeedConfig,
    tokens: Arc<TokenCounter>,
    phase_index: HashMap<String, usize>,
    current_phase: usize,
    per_phase: HashMap<String, u64>,
    ids: HashSet<String>,
    seq: u64,
    started: bool,
    preflight: PreflightReport,
    /// Prompt hashes already in `prompts_manifest.jsonl`.
    prompts_seen: HashSet<String>,
}

/// The seed's `prompts_manifest.jsonl` row: one per distinct prompt.
#[derive(serde::Serialize)]
struct PromptRow<'a> {
    prompt_id: &'a str,
    prompt_set: Option<&'a str>,
    target_tokens: Option<u32>,
    prompt_tokens_est: u32,
    prompt_chars: usize,
    prompt_sha256: &'a str,
    metadata: &'a BTreeMap<String, String>,
    prefix_hash: Option<&'a str>,
    session_id: Option<&'a str>,
}

impl FeedState {
    fn run(
        &mut self,
        planner: &mut dyn Planner,
        tx: &mpsc::Sender<FeedItem>,
        responses: &std_mpsc::Receiver<ResponseSummary>,
        manifest: &mut JsonlWriter,
        prompts: &mut JsonlWriter,
        init: &mut Option<oneshot::Sender<Initial>>,
    ) -> Result<(), PlanError> {
        let mut outstanding: u64 = 0;
        loop {
            while let Ok(s) = responses.try_recv() {
                outstanding = outstanding.saturating_sub(1);
                planner.on_response(s)?;
            }
            let batch = planner.next_batch(self.cfg.batch_max)?;
            let n = batch.requests.len();
            // Rows of the whole batch are written and flushed once, before any
            // of its requests is handed on: every request is in the manifest
            // before it can be sent, for one write instead of one per row.
            let mut ready = Vec::with_capacity(n);
            for r in batch.requests {
                let (p, violation) = self.prepare(r)?;
                manifest.append_unflushed(&*p.meta)?;
                self.write_prompt(&p.meta, prompts)?;
                self.seq += 1;
                if let Some(v) = violation {
                    self.preflight.failed = true;
                    self.preflight.failure_count += 1;
                    if self.preflight.errors.len() < 20 {
                        self.preflight.errors.push(v);
                    }
                }
                ready.push(p);
            }
            manifest.flush()?;
            prompts.flush()?;
            if self.preflight.failed {
                // Keep planning the initial window so the report lists every
                // offender, but send nothing; mid-run, stop at once.
                if self.started || self.seq as usize >= self.cfg.lookahead.max(1) * 4 {
                    return Err(self.preflight_error());
                }
                ready.clear();
            }
            for p in ready {
                // `seq` is 0-based: request `seq` is the (seq + 1)-th planned.
                if p.seq as usize + 1 >= self.cfg.lookahead {
                    self.signal(init);
                }
                if tx.blocking_send(FeedItem::Request(p)).is_err() {
                    return Ok(()); // dispatcher stopped
                }
                outstanding += 1;
            }
            if self.preflight.failed && (batch.done || n == 0) {
                return Err(self.preflight_error());
            }
            if batch.done {
                return Ok(());
            }
            if n == 0 {
                self.signal(init);
                if outstanding == 0 {
                    return Err(PlanError::Stalled);
                }
                match responses.recv() {
                    Ok(s) => {
                        outstanding -= 1;
                        planner.on_response(s)?;
                    }
                    Err(_) => return Ok(()), // run is over
                }
            }
        }
    }

    fn signal(&mut self, init: &mut Option<oneshot::Sender<Initial>>) {
        if self.preflight.failed {
            return;
        }
        if let Some(i) = init.take() {
            let _ = i.send(Initial {
                planned: self.seq,
                preflight_failed: false,
            });
            self.started = true;
        }
    }

    fn preflight_error(&self) -> PlanError {
        PlanError::Preflight {
            failures: self.preflight.failure_count,
            planned: self.seq,
            errors: self.preflight.errors.clone(),
        }
    }

    fn write_prompt(
        &mut self,
        m: &RequestMeta,
        prompts: &mut JsonlWriter,
    ) -> Result<(), PlanError> {
        if !self.prompts_seen.insert(m.identity.prompt_sha256.clone()) {
            return Ok(());
        }
        prompts.append_unflushed(&PromptRow {
            prompt_id: &m.id,
            prompt_set: m.prompt_set.as_deref(),
            target_tokens: m.prompt_target_tokens,
            prompt_tokens_est: m.prompt_tokens_est,
            prompt_chars: m.prompt_chars,
            prompt_sha256: &m.identity.prompt_sha256,
            metadata: &m.prompt_metadata,
            prefix_hash: m.prefix_hash.as_deref(),
            session_id: m.session_id.as_deref(),
        })?;
        Ok(())
    }

    /// Prepares a request; the second value is a preflight violation, if any.
    fn prepare(&mut self, r: RequestPlan) -> Result<(Prepared, Option<String>), PlanError> {
        validate(&r)?;
        let Some(&phase_index) = self.phase_index.get(&r.phase) else {
            let mut known: Vec<&String> = self.phase_index.keys().collect();
            known.sort();
            return Err(PlanError::Invalid(format!(
                "request {:?} names phase {:?}, which the workload did not declare (phases: {known:?})",
                r.id, r.phase
            )));
        };
        if phase_index < self.current_phase {
            return Err(PlanError::Invalid(format!(
                "request {:?} of phase {:?} came after a request of a later phase; workloads must plan phases in order",
                r.id, r.phase
            )));
        }
        self.current_phase = phase_index;
        if !self.ids.insert(r.id.clone()) {
            return Err(PlanError::Invalid(format!(
                "request id {:?} is used twice; ids must be unique in a run",
                r.id
            )));
        }
        let payload = openai::payload(
            &self.cfg.model,
            &r.prompt,
            &r.generation,
            self.cfg.stream,
            self.cfg.stream_usage,
        );
        let mut params = payload.clone();
        if let Some(o) = params.as_object_mut() {
            for k in ["model", "prompt", "messages", "stream_options"] {
                o.remove(k);
            }
        }
        let identity = RequestIdentity::compute(
            &self.cfg.model,
            &r.prompt.identity_bytes(),
            &params,
            &payload,
        );
        let prompt_tokens_est = prompt_tokens(&self.tokens, &r.prompt);
        let violation = self.cfg.preflight.and_then(|pf| {
            self.preflight.checked += 1;
            preflight_violation(pf, &r.id, r.generation.max_tokens, prompt_tokens_est)
        });
        let labels: BTreeMap<String, String> = r.labels.iter().cloned().collect();
        let counter = self.per_phase.entry(r.phase.clone()).or_default();
        *counter += 1;
        let meta = RequestMeta {
            request_index: self.seq,
            phase: r.phase.clone(),
            phase_request_index: *counter,
            id: r.id.clone(),
            prompt_set: labels.get("prompt_set").cloned(),
            prompt_target_tokens: labels.get("target_tokens").and_then(|v| v.parse().ok()),
            prompt_tokens_est,
            prompt_chars: r.prompt.char_len(),
            identity,
            generation_params: r.generation.clone(),
            api: r.prompt.api(),
            stream: self.cfg.stream,
            arrival: r.arrival,
            prefix_hash: r.prefix_hash.clone(),
            session_id: r.session_id.clone(),
            prompt_metadata: labels,
            planned_after_start: self.started,
        };
        // A `Value` has string keys and finite numbers only, so it always encodes.
        let body = serde_json::to_vec(&payload).expect("a JSON value encodes");
        Ok((
            Prepared {
                seq: self.seq,
                api: r.prompt.api(),
                stream: self.cfg.stream,
                body: Bytes::from(body),
                arrival: r.arrival,
                meta: Arc::new(meta),
            },
            violation,
        ))
    }
}

fn validate(r: &RequestPlan) -> Result<(), PlanError> {
    invalid(r).map_or(Ok(()), |m| Err(PlanError::Invalid(m)))
}

/// What is wrong with a planned request, if anything.
fn invalid(r: &RequestPlan) -> Option<String> {
    let id = &r.id;
    if id.is_empty() {
        return Some("a request has an empty id".into());
    }
    match &r.prompt {
        Prompt::Text(t) if t.is_empty() => {
            return Some(format!("request {id:?} has an empty prompt"));
        }
        Prompt::Chat(m) if m.is_empty() => {
            return Some(format!("request {id:?} has no chat messages"));
        }
        _ => {}
    }
    if r.generation.max_tokens == 0 {
        return Some(format!("request {id:?} asks for max_tokens 0"));
    }
    let finite = |v: Option<f32>| v.is_none_or(f32::is_finite);
    if !finite(r.generation.temperature) || !finite(r.generation.top_p) {
        return Some(format!(
            "request {id:?} has a non-finite temperature or top_p"
        ));
    }
    match r.arrival {
        Arrival::AtOffsetMs(ms) | Arrival::AfterPreviousTurn(ms)
            if !(ms.is_finite() && ms >= 0.0) =>
        {
            Some(format!(
                "request {id:?} has an arrival time of {ms} ms; it must be a finite number ≥ 0"
            ))
        }
        Arrival::AfterPreviousTurn(_) if r.session_id.is_none() => Some(format!(
            "request {id:?} arrives after the previous turn of its session but has no session id"
        )),
        _ => None,
    }
}

/// The manifests are the feed's only files; their write errors stop planning.
impl From<RunDirError> for PlanError {
    fn from(e: RunDirError) -> Self {
        PlanError::Write(std::io::Error::other(e))
    }
}

#[cfg(test)]
mod tests;
