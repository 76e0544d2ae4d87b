//! Turns finished requests into `requests.jsonl` rows, histogram samples and
//! response summaries for the workload. Runs on its own thread
//! ([`Recorder::run_blocking`]), off the scheduler's path.

use std::sync::Arc;
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};
use tokio::sync::mpsc;

use super::records::RequestRow;
use super::rundir::JsonlWriter;
use super::summary::{Accumulator, RequestFacts};
use super::tokens::{token_times, tokens_per_chunk};
use crate::dispatch::runner::{Event, Finished};
use crate::limits::RECORDER_FLUSH_EVERY as FLUSH_EVERY;
use crate::plan::{ErrorKey, ErrorKind, ResponseSummary};
use crate::tokenize::TokenCounter;

/// One phase's accumulated results.
#[derive(Debug, Clone)]
pub struct PhaseResult {
    pub name: String,
    pub include_in_summary: bool,
    pub start: Option<Instant>,
    pub end: Option<Instant>,
    pub acc: Accumulator,
}

pub struct Recorder {
    rows: JsonlWriter,
    base: Instant,
    wall_base: DateTime<Utc>,
    tokens: Arc<TokenCounter>,
    to_planner: Option<std_mpsc::Sender<ResponseSummary>>,
    /// Told about 404/5xx answers, which may mean the model went away.
    model_alarm: Option<mpsc::UnboundedSender<()>>,
    pub phases: Vec<PhaseResult>,
    pub write_error: Option<String>,
    pub prompt_limit_hits: u64,
    pub recorded: u64,
    /// When the first request of the run was sent.
    pub first_sent: Option<Instant>,
    progress: Option<crate::progress::Progress>,
    /// Told once, at the first failed write, so dispatch stops at once.
    write_alarm: Option<tokio::sync::oneshot::Sender<String>>,
    /// `--store-responses`: where each response's text goes.
    responses: Option<super::responses::ResponseStore>,
}

fn ms(d: Duration) -> f64 {
    (d.as_nanos() as f64 / 1e6 * 1000.0).round() / 1000.0
}

fn ms_between(later: Instant, earlier: Instant) -> f64 {
    if later >= earlier {
        ms(later - earlier)
    } else {
        -ms(earlier - later)
    }
}

impl Recorder {
    pub fn new(
        rows: JsonlWriter,
        base: Instant,
        wall_base: DateTime<Utc>,
        tokens: Arc<TokenCounter>,
        phases: Vec<(String, bool)>,
        to_planner: Option<std_mpsc::Sender<ResponseSummary>>,
        model_alarm: Option<mpsc::UnboundedSender<()>>,
    ) -> Self {
        Recorder {
            rows,
            base,
            wall_base,
            tokens,
            to_planner,
            model_alarm,
            phases: phases
                .into_iter()
                .map(|(name, include_in_summary)| PhaseResult {
                    name,
                    include_in_summary,
                    start: None,
                    end: None,
                    acc: Accumulator::default(),
                })
                .collect(),
            write_error: None,
            prompt_limit_hits: 0,
            recorded: 0,
            first_sent: None,
            progress: None,
            write_alarm: None,
            responses: None,
        }
    }

    /// Stores every response's text (`--store-responses`).
    pub fn with_responses(mut self, store: super::responses::ResponseStore) -> Self {
        self.responses = Some(store);
        self
    }

    /// Sends the first write error to `alarm` (a full results disk must stop
    /// the run, not let it measure what it cannot keep).
    pub fn with_write_alarm(mut self, alarm: tokio::sync::oneshot::Sender<String>) -> Self {
        self.write_alarm = Some(alarm);
        self
    }

    fn write_failed(&mut self, e: String) {
        if let Some(a) = self.write_alarm.take() {
            let _ = a.send(e.clone());
        }
        self.write_error.get_or_insert(e);
    }

    /// Reports every finished request to a live progress display.
    pub fn with_progress(mut self, p: crate::progress::Progress) -> Self {
        self.progress = Some(p);
        self
    }

    /// Consumes events until the dispatcher hangs up, on the calling thread
    /// (its own: row serialization and file writes, which can block in the
    /// file system, never hold up a runtime worker that is about to send).
    /// Rows are flushed whenever the recorder has caught up with the
    /// dispatcher (and at least every `FLUSH_EVERY` rows): one write per
    /// burst instead of one per request, and a row is on disk as soon as
    /// nothing else is waiting.
    pub fn run_blocking(mut self, mut events: mpsc::UnboundedReceiver<Event>) -> Self {
        while let Some(ev) = events.blocking_recv() {
            self.handle(ev);
            let mut n = 1;
            while let Ok(ev) = events.try_recv() {
                self.handle(ev);
                n += 1;
                if n % FLUSH_EVERY == 0 {
                    self.flush_rows();
                }
            }
            self.flush_rows();
        }
        self.flush_rows();
        if let Some(e) = &mut self.write_error {
            let lost = self.recorded.saturating_sub(self.rows.durable_lines());
            if lost > 0 {
                e.push_str(&format!(
                    "; {lost} measured requests have no row (their statistics are in the summary)"
                ));
            }
        }
        // What `requests.jsonl` really holds.
        self.recorded = self.rows.durable_lines();
        if let Some(r) = self.responses.as_ref().filter(|r| r.skipped > 0) {
            // Their rows say so too (`response_path` is null).
            eprintln!(
                "warning: --store-responses: {} responses were not stored (first: {})",
                r.skipped,
                crate::terminal::safe(r.first_skip.as_deref().unwrap_or_default())
            );
        }
        self.to_planner = None;
        self
    }

    fn flush_rows(&mut self) {
        if let Err(e) = self.rows.flush() {
            self.write_failed(e.to_string());
        }
    }

    fn wall(&self, t: Instant) -> String {
        let off = t.saturating_duration_since(self.base);
        let ts = self.wall_base + chrono::Duration::from_std(off).unwrap_or_default();
        ts.to_rfc3339_opts(SecondsFormat::Millis, true)
    }

    /// Buffers the rows it records; [`Recorder::run_blocking`] flushes them.
    pub fn handle(&mut self, ev: Event) {
        match ev {
            Event::PhaseStart { index, at } => {
                self.phases[index].start = Some(at);
                if let Some(p) = &self.progress {
                    p.set_phase(&self.phases[index].name);
                }
            }
            Event::PhaseEnd { index, at } => {
                let p = &mut self.phases[index];
                p.end = Some(at);
                p.acc.duration = at.saturating_duration_since(p.start.unwrap_or(at));
            }
            Event::Finished(f) => self.finished(*f),
        }
    }

    fn finished(&mut self, f: Finished) {
        let Finished {
            phase_index,
            request,
            outcome,
        } = f;
        let meta = &request.meta;
        if self.first_sent.is_none_or(|t| outcome.sent < t) {
            self.first_sent = Some(outcome.sent);
        }
        let counter = |s: &str| self.tokens.count(s);
        let completion = outcome.usage.and_then(|u| u.completion_tokens);
        let (chunk_tokens, token_source) =
            tokens_per_chunk(&outcome.chunks, &outcome.text, completion, &counter);
        let times = token_times(&outcome.chunks, &chunk_tokens);
        let ok = outcome.error.is_none() && (200..400).contains(&outcome.status);
        let since_sent = |t: Option<Instant>| t.map(|t| ms_between(t, outcome.sent));
        let ttft = since_sent(outcome.first_token);
        let error_kind = outcome.error.as_ref().map(|e| e.kind);
        let error_key = ErrorKey::of(error_kind, ok, outcome.status);
        if error_kind == Some(ErrorKind::PromptLimit) {
            self.prompt_limit_hits += 1;
        }
        let ns = |a: Instant, b: Instant| a.saturating_duration_since(b).as_nanos() as u64;
        self.phases[phase_index].acc.record_request(&RequestFacts {
            ok,
            error: error_key,
            schedule_lateness_ns: ns(outcome.sent, outcome.intended),
            e2e_ns: ns(outcome.end, outcome.sent),
            e2e_from_intended_ns: ns(outcome.end, outcome.intended),
            ttft_ns: outcome.first_token.map(|t| ns(t, outcome.sent)),
            ttft_from_intended_ns: outcome.first_token.map(|t| ns(t, outcome.intended)),
            ttfc_ns: outcome.first_chunk.map(|t| ns(t, outcome.sent)),
            itl_ns: times.itl_ns.clone(),
            tpot_ns: times.tpot_ns,
            read_delays: outcome
                .chunks
                .iter()
                .filter_map(|c| c.read_delay_us.map(|us| (us, c.shared_read)))
                .collect(),
            timed_by: (!outcome.chunks.is_empty()).then_some(outcome.clock),
            tokens_counted: times.tokens,
            usage: outcome.usage,
            unary_answer_to_stream: meta.stream && !outcome.streamed,
        });
        if matches!(outcome.status, 404 | 500..=599)
            && let Some(a) = &self.model_alarm
        {
            let _ = a.send(());
        }

        let itl_ms: Vec<f64> = times.itl_ns.iter().map(|&n| n as f64 / 1e6).collect();
        let response_path = self
            .responses
            .as_mut()
            .and_then(|r| r.store(meta, &outcome.text));
        let row = RequestRow {
            meta,
            start_ts: self.wall(outcome.sent),
            end_ts: self.wall(outcome.end),
            intended_offset_ms: ms_between(outcome.intended, self.base),
            sent_offset_ms: ms_between(outcome.sent, self.base),
            schedule_lateness_ms: ms_between(outcome.sent, outcome.intended),
            headers_ms: since_sent(outcome.headers),
            first_byte_ms: since_sent(outcome.first_byte),
            ttfc_ms: since_sent(outcome.first_chunk),
            ttft_ms: ttft,
            ttft_from_intended_ms: outcome.first_token.map(|t| ms_between(t, outcome.intended)),
            latency_ms: ms_between(outcome.end, outcome.sent),
            latency_from_intended_ms: ms_between(outcome.end, outcome.intended),
            tpot_ms: times.tpot_ns.map(|n| (n as f64 / 1e3).round() / 1e3),
            itl_mean_ms: (!itl_ms.is_empty())
                .then(|| (itl_ms.iter().sum::<f64>() / itl_ms.len() as f64 * 1e3).round() / 1e3),
            itl_max_ms: itl_ms
                .iter()
                .copied()
                .reduce(f64::max)
                .map(|v| (v * 1e3).round() / 1e3),
            chunk_offsets_ms: outcome
                .chunks
                .iter()
                .map(|c| ms_between(c.at, outcome.sent))
                .collect(),
            chunk_tokens: chunk_tokens.clone(),
            read_path_delay_max_ms: outcome
                .chunks
                .iter()
                .filter_map(|c| c.read_delay_us)
                .max()
                .map(|us| f64::from(us) / 1e3),
            chunks_sharing_a_read: outcome.chunks.iter().filter(|c| c.shared_read).count() as u32,
            token_source,
            status_code: outcome.status,
            ok,
            error_kind,
            error: outcome.error.as_ref().map(|e| e.message.clone()),
            request_id: outcome.server_request_id.clone(),
            response_id: outcome.response_id.clone(),
            finish_reason: outcome.finish_reason.clone(),
            done_seen: outcome.done_seen,
            usage: outcome.usage,
            prompt_tokens: outcome.usage.and_then(|u| u.prompt_tokens),
            output_tokens: completion,
            cached_tokens: outcome.usage.and_then(|u| u.cached_tokens),
            output_len_chars: outcome.text.chars().count(),
            output_tokens_est: times.tokens,
            max_tokens_effective: meta.generation_params.max_tokens,
            response_path,
        };
        if let Some(p) = &self.progress {
            p.on_finished(ok, ttft);
        }
        match self.rows.append_unflushed(&row) {
            Ok(()) => self.recorded += 1,
            Err(e) => self.write_failed(e.to_string()),
        }

        if let Some(tx) = &self.to_planner {
            let summary = ResponseSummary {
                id: meta.id.clone(),
                phase: meta.phase.clone(),
                session_id: meta.session_id.clone(),
                ok,
                status: outcome.status,
                error_kind: error_key,
                text: outcome.text,
                prompt_tokens: outcome.usage.and_then(|u| u.prompt_tokens),
                completion_tokens: completion,
                cached_tokens: outcome.usage.and_then(|u| u.cached_tokens),
                ttft_ms: ttft,
                e2e_ms: ms_between(outcome.end, outcome.sent),
            };
            if tx.send(summary).is_err() {
                self.to_planner = None;
            }
        }
    }
}
