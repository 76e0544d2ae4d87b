//! `trace_replay`: replays a recorded request trace, keeping its reuse.
//!
//! Three formats, detected from the file or named by `format`
//! ([`formats`]): Mooncake JSONL, Dynamo's captured request traces (JSONL,
//! plain or gzip) and WEKA KV-cache-tester traces. Each request of the trace
//! carries the hash ids of its prompt's blocks, 64-bit and kept exact.
//!
//! **Blocks.** Each hash id maps to one block of text of `block-size`
//! tokens ([`blocks`]); a prompt is its blocks concatenated (then the
//! request's own tokens where no hash id covers the prompt), fitted to the
//! recorded input length. So requests that share a hash id at a position
//! share exactly that block's tokens, and requests that do not share one
//! share no block. `block-size` must be the trace's own block size
//! (recorded by Dynamo and WEKA; for Mooncake, which records none,
//! `trace-block-size`, else `block-size`, else 512); another size is
//! refused naming both, unless `re-block=true`
//! re-cuts the recorded blocks into blocks of `block-size` with chained
//! derived ids ([`layout`]).
//!
//! **Timing.** Requests are replayed in order of their recorded arrival;
//! each gap to the previous one is capped at `idle-gap-cap-ms` (a session
//! idle for an hour need not stall the replay for an hour), then scaled by
//! `time-scale`. Each asks for exactly its recorded output length
//! (`max_tokens`, with `ignore-eos`; a recorded 0 asks for 1).
//!
//! **Salt.** `salt` (default `per-run`) is folded into every block's seed
//! and written into its first line, so a second run against a warm server
//! inherits no cache hits from the first; `salt=off` makes runs
//! byte-identical.
//!
//! **Manifest.** Every request's labels carry `hash_ids` (the run's block
//! ids, comma-separated decimal), `hash_block_tokens` (the block size),
//! `trace_format`, `trace_record` and `salt`, so the host can compute the
//! reuse the trace predicts from the ids themselves.
//!
//! The file is read through the host's explicit grant: `--param
//! trace=@path/to/trace` mounts that one file read-only at `/data/<name>`.
//!
//! # Layout
//!
//! - [`formats`]: the file formats, detection, gzip and the bounds.
//! - [`layout`]: block-size checks and re-blocking.
//! - [`blocks`]: the hash id → text map, token-exact, with a bounded cache.
//! - this file: [`Config`] (params) and [`TraceReplay`] (the planner, one
//!   phase `replay`).

pub mod blocks;
pub mod formats;
pub mod layout;

use sparkhost_workload::text::FILLER;
use sparkhost_workload::{
    Api, Arrival, Batch, GenerationDefaults, HostTokenizer, LoadModel, ParamInfo, Params, Phase,
    PromptFormat, RequestSpec, Result, Salt, Template, Tokenizer, Workload, WorkloadError,
    WorkloadInfo, data, generation_params, label, message, param, params::Sampling, salt,
    salt_param, sha256_hex,
};

use blocks::Blocks;
use formats::{Format, MAX_BLOCK_SIZE, MAX_TRACE_BYTES, Record};

/// One request as it will be replayed.
#[derive(Debug, Clone, PartialEq)]
pub struct Planned {
    pub record: Record,
    /// The run's block ids (the recorded ones unless re-blocked).
    pub block_ids: Vec<u64>,
    /// Arrival after the phase starts, gaps capped and scaled.
    pub offset_ms: f64,
}

/// The validated params of one run (the trace included).
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub format: Format,
    pub requests: Vec<Planned>,
    /// Tokens per block in this run.
    pub block_size: u32,
    /// The block size the trace was recorded with.
    pub trace_block_size: u32,
    pub reblocked: bool,
    /// Records the trace holds that replay skips.
    pub skipped: usize,
    pub concurrency: u32,
    pub sampling: Sampling,
    pub ignore_eos: bool,
    pub prompt: PromptFormat,
    pub salt: Salt,
}

fn invalid(name: &str, value: &str, expected: &str) -> WorkloadError {
    WorkloadError::InvalidConfig(format!(
        "parameter `{name}`: {value:?} is not valid; expected {expected}"
    ))
}

/// `auto` or a whole number of tokens.
fn block_param(p: &Params, name: &str) -> Result<Option<u32>> {
    let v = p.get_str(name)?;
    if v == "auto" {
        return Ok(None);
    }
    v.parse::<u32>()
        .ok()
        .filter(|n| (1..=MAX_BLOCK_SIZE).contains(n))
        .map(Some)
        .ok_or_else(|| {
            invalid(
                name,
                v,
                &format!("`auto` or tokens from 1 to {MAX_BLOCK_SIZE}"),
            )
        })
}

/// Mooncake's published traces use 512-token blocks, and record no size.
pub const MOONCAKE_BLOCK_SIZE: u32 = 512;

impl Config {
    /// `trace` is the file's bytes (read by the caller, so tests need no
    /// files); gzip is decoded here.
    pub fn new(p: &Params, trace: Vec<u8>) -> Result<Self> {
        let bytes = formats::decode(trace)?;
        let text = String::from_utf8(bytes).map_err(|e| {
            WorkloadError::InvalidConfig(format!(
                "trace: not UTF-8 text (invalid byte at offset {})",
                e.utf8_error().valid_up_to()
            ))
        })?;
        let format = match p.get_choice("format", &["auto", "mooncake", "dynamo", "weka"])? {
            "auto" => formats::detect(&text)?,
            name => Format::from_name(name).expect("a listed choice"),
        };
        let trace = formats::parse(&text, format)?;
        drop(text);

        let given_trace = block_param(p, "trace-block-size")?;
        let given_block = block_param(p, "block-size")?;
        let (trace_block_size, t_from) = match (trace.block_size, given_trace) {
            (Some(rec), Some(given)) if rec != given => {
                return Err(WorkloadError::InvalidConfig(format!(
                    "parameter `trace-block-size`: {given}, but this {} trace records block size \
                     {rec}; leave it `auto`",
                    format.name()
                )));
            }
            (Some(rec), _) => (rec, "the block size the trace records"),
            (None, Some(given)) => (given, "`trace-block-size`"),
            // Mooncake records none: the size the user states is the trace's.
            (None, None) => match given_block {
                Some(b) => (b, "`block-size`, as the trace records none"),
                None => (
                    MOONCAKE_BLOCK_SIZE,
                    "`trace-block-size` auto: Mooncake's 512",
                ),
            },
        };
        for r in &trace.records {
            layout::check_count(r, format, trace_block_size, t_from)?;
        }
        let block_size = given_block.unwrap_or(trace_block_size);
        let reblocked = block_size != trace_block_size;
        if reblocked && !p.get_bool("re-block")? {
            return Err(WorkloadError::InvalidConfig(format!(
                "parameter `block-size`: {block_size}, but the trace was recorded with \
                 {trace_block_size}-token blocks ({t_from}); its hash ids describe \
                 {trace_block_size}-token blocks, so pass `re-block=true` to re-cut them into \
                 {block_size}-token blocks, or leave `block-size` auto"
            )));
        }

        let time_scale = p.get_f64("time-scale")?;
        if time_scale < 0.0 {
            return Err(invalid(
                "time-scale",
                &time_scale.to_string(),
                "0 or more (0 sends everything at once, 1 keeps the trace's pace)",
            ));
        }
        let cap = match p.get_str("idle-gap-cap-ms")? {
            "off" => f64::INFINITY,
            v => v
                .parse::<f64>()
                .ok()
                .filter(|c| c.is_finite() && *c >= 0.0)
                .ok_or_else(|| invalid("idle-gap-cap-ms", v, "`off` or ms, 0 or more"))?,
        };

        let mut records = trace.records;
        // Dynamo writes records as requests end; replay goes by arrival.
        records.sort_by(|a, b| a.arrival_ms.total_cmp(&b.arrival_ms));
        let max = p.get_u32("max-requests")?;
        if max > 0 {
            records.truncate(max as usize);
        }
        let mut offset = 0.0_f64;
        let mut prev: Option<f64> = None;
        let requests = records
            .into_iter()
            .map(|record| {
                if let Some(prev) = prev {
                    offset += (record.arrival_ms - prev).min(cap) * time_scale;
                }
                prev = Some(record.arrival_ms);
                let block_ids = if reblocked {
                    layout::reblock(
                        &record.hash_ids,
                        record.input_length,
                        trace_block_size,
                        block_size,
                    )
                } else {
                    record.hash_ids.clone()
                };
                Planned {
                    record,
                    block_ids,
                    offset_ms: offset,
                }
            })
            .collect();
        Ok(Self {
            format,
            requests,
            block_size,
            trace_block_size,
            reblocked,
            skipped: trace.skipped,
            concurrency: p.get_u32_min("concurrency", 1)?,
            sampling: p.get_sampling()?,
            ignore_eos: p.get_bool("ignore-eos")?,
            prompt: PromptFormat::from_params(p)?,
            salt: Salt::from_params(p)?,
        })
    }
}

fn declared_params() -> Vec<ParamInfo> {
    let mut params = vec![
        param(
            "trace",
            "Path of the trace inside the sandbox; pass it as `--param trace=@FILE`, which \
             grants that one file read-only. Mooncake or Dynamo JSONL (`.jsonl.gz` too) or a \
             WEKA JSON trace.",
            "",
        ),
        param(
            "format",
            "`auto` (from the file), `mooncake`, `dynamo` or `weka`.",
            "auto",
        ),
        param(
            "block-size",
            "Tokens per hash-id block in the prompts; `auto`: the trace's block size. Another \
             size than the trace's is refused unless `re-block=true`.",
            "auto",
        ),
        param(
            "trace-block-size",
            "The block size the trace was recorded with; `auto`: what the trace records \
             (Dynamo `trace_block_size`, WEKA `block_size`); Mooncake records none, so \
             `block-size` if given, else 512. Each request's hash id count is checked \
             against it.",
            "auto",
        ),
        param(
            "re-block",
            "Re-cut the trace's blocks into `block-size` blocks with chained derived ids, \
             instead of refusing a `block-size` that is not the trace's.",
            "false",
        ),
        param(
            "time-scale",
            "Recorded gaps × this; 0.5 replays twice as fast, 0 sends everything at once.",
            "1.0",
        ),
        param(
            "idle-gap-cap-ms",
            "Longest recorded gap between two arrivals kept, in ms, before `time-scale`; `off` \
             keeps every gap.",
            "60000",
        ),
        param(
            "max-requests",
            "Replay only the first N requests (by arrival); 0 for all.",
            "0",
        ),
        param(
            "concurrency",
            "Most requests in flight; arrivals wait only when this many are outstanding.",
            "256",
        ),
        salt_param(salt::PER_RUN),
    ];
    params.extend(
        generation_params(&GenerationDefaults {
            max_tokens: "1",
            temperature: "",
            top_p: "",
            stop: "",
            ignore_eos: "true",
        })
        .into_iter()
        // max_tokens comes from each record's output length.
        .filter(|p| p.name != "max-tokens"),
    );
    params.extend(PromptFormat::params(Api::Completions, Template::None));
    params
}

/// The planner of one run.
pub struct TraceReplay {
    config: Config,
    blocks: Blocks,
    next: usize,
}

impl TraceReplay {
    pub fn new(config: Config, seed: u64) -> Self {
        Self {
            blocks: Blocks::new(seed, config.salt.clone(), config.block_size),
            config,
            next: 0,
        }
    }

    /// The user text of request `i`: its blocks, then its own tokens where
    /// no block covers the prompt, fitted to the recorded input length.
    pub fn prompt_text(&mut self, i: usize, tok: &dyn Tokenizer) -> (String, Option<String>) {
        let p = &self.config.requests[i];
        let len = p.record.input_length;
        let mut joined = String::new();
        let mut first = None;
        for &h in &p.block_ids {
            let t = self.blocks.text(h, tok);
            joined.push_str(&t);
            first.get_or_insert_with(|| sha256_hex(&t));
        }
        let covered = p.block_ids.len() as u64 * u64::from(self.config.block_size);
        if covered < u64::from(len) {
            joined.push_str(&self.blocks.tail(i, len - covered as u32, tok));
        }
        (tok.fit(&joined, len, FILLER), first)
    }

    /// Request `i` of the replay.
    pub fn request(&mut self, i: usize, tok: &dyn Tokenizer) -> RequestSpec {
        let (text, prefix_hash) = self.prompt_text(i, tok);
        let c = &self.config;
        let p = &c.requests[i];
        let r = &p.record;
        let ids: Vec<String> = p.block_ids.iter().map(u64::to_string).collect();
        let mut labels = vec![
            label("prompt_set", "trace_replay"),
            label("target_tokens", &r.input_length.to_string()),
            label("output_length", &r.output_length.to_string()),
            label("timestamp_ms", &r.arrival_ms.to_string()),
            label("trace_format", c.format.name()),
            label("trace_record", &r.source),
            label("blocks", &p.block_ids.len().to_string()),
            label("first_hash_id", ids.first().map_or("", String::as_str)),
            label("hash_ids", &ids.join(",")),
            label("hash_block_tokens", &c.block_size.to_string()),
            label("salt", c.salt.label_value()),
        ];
        if let Some(line) = r.source.strip_prefix("line ") {
            labels.push(label("trace_line", line));
        }
        if c.reblocked {
            labels.push(label("re_blocked_from", &c.trace_block_size.to_string()));
        }
        RequestSpec {
            id: format!("trace-{i:06}"),
            phase: "replay".to_string(),
            session_id: r.session.clone(),
            prefix_hash,
            prompt: c.prompt.render(&[message("user", &text)]),
            generation: c.sampling.generation(r.output_length.max(1), c.ignore_eos),
            arrival: Arrival::AtOffsetMs(p.offset_ms),
            labels,
        }
    }

    pub fn next_requests(&mut self, max: usize, tok: &dyn Tokenizer) -> Batch {
        let end = (self.next + max).min(self.config.requests.len());
        let requests = (self.next..end).map(|i| self.request(i, tok)).collect();
        self.next = end;
        Batch {
            requests,
            done: self.next == self.config.requests.len(),
        }
    }
}

impl Workload for TraceReplay {
    fn describe() -> WorkloadInfo {
        WorkloadInfo {
            name: "trace_replay".to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            description: "Replays a recorded trace (Mooncake JSONL, Dynamo captured request \
                          traces .jsonl/.jsonl.gz, WEKA JSON): requests sharing a hash id share \
                          exactly that prompt block, arrivals keep the recorded gaps (capped by \
                          idle-gap-cap-ms, × time-scale), and each asks for exactly its recorded \
                          output length. Pass the file with `--param trace=@FILE`."
                .to_string(),
            params: declared_params(),
        }
    }

    fn create(params: &Params, seed: u64) -> Result<Self> {
        let trace = data::read_bytes("trace", params.get_str("trace")?, MAX_TRACE_BYTES)?;
        let config = Config::new(params, trace)?;
        if config.skipped > 0 {
            sparkhost_workload::host::info(&format!(
                "trace_replay: {} records of the trace are not requests with replay \
                     hashes and are skipped",
                config.skipped
            ));
        }
        Ok(Self::new(config, seed))
    }

    fn phases(&self) -> Vec<Phase> {
        vec![Phase {
            name: "replay".to_string(),
            include_in_summary: true,
            load: Some(LoadModel::Closed(self.config.concurrency)),
        }]
    }

    fn next_batch(&mut self, max: u32) -> Result<Batch> {
        Ok(self.next_requests(max as usize, &HostTokenizer))
    }
}

sparkhost_workload::export_workload!(TraceReplay);

#[cfg(test)]
mod tests;
