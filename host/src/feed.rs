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
use crate::plan::{Arrival, PhasePlan, Planner, Prompt, RequestPlan, ResponseSummary};
use crate::results::identity::RequestIdentity;
use crate::results::records::RequestMeta;
use crate::results::rundir::JsonlWriter;
use crate::tokenize::TokenCounter;

pub struct FeedConfig {
    pub model: String,
    pub stream: bool,
    pub stream_usage: bool,
    /// Largest batch asked of the planner at once.
    pub batch_max: u32,
    /// Requests planned ahead of the dispatcher.
    pub lookahead: usize,
}

/// The dispatcher's side of the feed.
pub struct Feed {
    pub requests: mpsc::Receiver<FeedItem>,
    pub responses: std_mpsc::Sender<ResponseSummary>,
    /// Fires once the initial plan is in the manifest (all of it, or the
    /// look-ahead window, or up to the first wait for responses).
    pub initial: oneshot::Receiver<u64>,
    pub thread: std::thread::JoinHandle<FeedReport>,
}

#[derive(Debug, Default)]
pub struct FeedReport {
    pub planned: u64,
    pub error: Option<String>,
}

pub fn spawn(
    mut planner: Box<dyn Planner>,
    phases: Vec<PhasePlan>,
    cfg: FeedConfig,
    tokens: Arc<TokenCounter>,
    mut manifest: JsonlWriter,
) -> Feed {
    let (tx, rx) = mpsc::channel(cfg.lookahead.max(1));
    let (resp_tx, resp_rx) = std_mpsc::channel::<ResponseSummary>();
    let (init_tx, init_rx) = oneshot::channel();
    let thread = std::thread::Builder::new()
        .name("plan-feed".into())
        .spawn(move || {
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
            };
            let mut init = Some(init_tx);
            let mut report = FeedReport::default();
            let result = state.run(&mut *planner, &tx, &resp_rx, &mut manifest, &mut init);
            report.planned = state.seq;
            if let Some(i) = init.take() {
                let _ = i.send(state.seq);
            }
            match result {
                Ok(()) => {
                    let _ = tx.blocking_send(FeedItem::Done);
                }
                Err(e) => {
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
}

impl FeedState {
    fn run(
        &mut self,
        planner: &mut dyn Planner,
        tx: &mpsc::Sender<FeedItem>,
        responses: &std_mpsc::Receiver<ResponseSummary>,
        manifest: &mut JsonlWriter,
        init: &mut Option<oneshot::Sender<u64>>,
    ) -> Result<(), String> {
        let mut outstanding: u64 = 0;
        loop {
            while let Ok(s) = responses.try_recv() {
                outstanding = outstanding.saturating_sub(1);
                planner.on_response(s)?;
            }
            let batch = planner.next_batch(self.cfg.batch_max)?;
            let n = batch.requests.len();
            for r in batch.requests {
                let p = self.prepare(r)?;
                manifest.append(&*p.meta).map_err(|e| e.to_string())?;
                self.seq += 1;
                if self.seq as usize >= self.cfg.lookahead {
                    self.signal(init);
                }
                if tx.blocking_send(FeedItem::Request(p)).is_err() {
                    return Ok(()); // dispatcher stopped
                }
                outstanding += 1;
            }
            if batch.done {
                return Ok(());
            }
            if n == 0 {
                self.signal(init);
                if outstanding == 0 {
                    return Err("the workload waits for responses, but none of its requests are outstanding (it returned an empty batch without `done`)".into());
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

    fn signal(&mut self, init: &mut Option<oneshot::Sender<u64>>) {
        if let Some(i) = init.take() {
            let _ = i.send(self.seq);
            self.started = true;
        }
    }

    fn prepare(&mut self, r: RequestPlan) -> Result<Prepared, String> {
        validate(&r)?;
        let Some(&pi) = self.phase_index.get(&r.phase) else {
            let mut known: Vec<&String> = self.phase_index.keys().collect();
            known.sort();
            return Err(format!(
                "request {:?} names phase {:?}, which the workload did not declare (phases: {known:?})",
                r.id, r.phase
            ));
        };
        if pi < self.current_phase {
            return Err(format!(
                "request {:?} of phase {:?} came after a request of a later phase; workloads must plan phases in order",
                r.id, r.phase
            ));
        }
        self.current_phase = pi;
        if !self.ids.insert(r.id.clone()) {
            return Err(format!(
                "request id {:?} is used twice; ids must be unique in a run",
                r.id
            ));
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
        let prompt_tokens_est = match &r.prompt {
            Prompt::Text(t) => self.tokens.count(t),
            Prompt::Chat(m) => m.iter().map(|m| self.tokens.count(&m.content)).sum(),
        };
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
        let body = serde_json::to_vec(&payload).map_err(|e| e.to_string())?;
        Ok(Prepared {
            seq: self.seq,
            api: r.prompt.api(),
            stream: self.cfg.stream,
            body: Bytes::from(body),
            arrival: r.arrival,
            meta: Arc::new(meta),
        })
    }
}

fn validate(r: &RequestPlan) -> Result<(), String> {
    let id = &r.id;
    if id.is_empty() {
        return Err("a request has an empty id".into());
    }
    match &r.prompt {
        Prompt::Text(t) if t.is_empty() => {
            return Err(format!("request {id:?} has an empty prompt"));
        }
        Prompt::Chat(m) if m.is_empty() => {
            return Err(format!("request {id:?} has no chat messages"));
        }
        _ => {}
    }
    if r.generation.max_tokens == 0 {
        return Err(format!("request {id:?} asks for max_tokens 0"));
    }
    let finite = |v: Option<f32>| v.is_none_or(f32::is_finite);
    if !finite(r.generation.temperature) || !finite(r.generation.top_p) {
        return Err(format!(
            "request {id:?} has a non-finite temperature or top_p"
        ));
    }
    match r.arrival {
        Arrival::AtOffsetMs(ms) | Arrival::AfterPreviousTurn(ms)
            if !(ms.is_finite() && ms >= 0.0) =>
        {
            Err(format!(
                "request {id:?} has an arrival time of {ms} ms; it must be a finite number ≥ 0"
            ))
        }
        Arrival::AfterPreviousTurn(_) if r.session_id.is_none() => Err(format!(
            "request {id:?} arrives after the previous turn of its session but has no session id"
        )),
        _ => Ok(()),
    }
}
