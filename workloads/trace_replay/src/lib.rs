//! `trace_replay`: replays a Mooncake-style request trace.
//!
//! The trace is JSON Lines, one request per line:
//!
//! ```text
//! {"timestamp": 27482, "input_length": 6955, "output_length": 52, "hash_ids": [46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 2353, 2354]}
//! ```
//!
//! `timestamp` is the arrival in ms, `input_length` and `output_length` are
//! token counts, and `hash_ids` name the prompt's blocks of `block-size`
//! tokens (512 in Mooncake's traces): two requests whose `hash_ids` start
//! alike share that prompt prefix. Other fields are ignored; blank lines are
//! skipped.
//!
//! Each hash id maps to one block of text: a synthetic document from a PRNG
//! seeded by (run seed, hash id), fitted to `block-size` tokens. A prompt is
//! its blocks concatenated, then fitted to `input_length` tokens (which cuts
//! the last block, or pads when the tokenizer merged across block
//! boundaries), so prompts that share hash ids share those bytes. Requests
//! arrive at `(timestamp − first timestamp) × time-scale` ms after the phase
//! starts and ask for exactly `output_length` tokens (`ignore-eos`).
//!
//! The file is read through the host's explicit grant: `--param
//! trace=@path/to/trace.jsonl` mounts that one file read-only at
//! `/data/<name>` and sets the param to that path.
//!
//! # Layout
//!
//! - [`parse_trace`]: the JSONL parser, with errors naming the line.
//! - [`Blocks`]: the hash id → text map, with a bounded cache.
//! - [`Config`], [`TraceReplay`]: params and the planner, one phase `replay`.

use std::collections::HashMap;
use std::rc::Rc;

use serde_json::Value;
use sparkhost_workload::text::{self, FILLER, TOPICS};
use sparkhost_workload::{
    Api, Arrival, Batch, GenerationDefaults, HostTokenizer, LoadModel, ParamInfo, Params, Phase,
    PromptFormat, RequestSpec, Result, SplitMix64, Template, Tokenizer, Workload, WorkloadError,
    WorkloadInfo, data, generation_params, label, message, param, params::Sampling, sha256_hex,
};

/// One request of the trace.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceLine {
    /// 1-based line number in the file.
    pub line: usize,
    pub timestamp_ms: f64,
    pub input_length: u32,
    pub output_length: u32,
    pub hash_ids: Vec<u64>,
}

fn line_error(line: usize, what: String) -> WorkloadError {
    WorkloadError::InvalidConfig(format!("trace line {line}: {what}"))
}

/// Parses a whole trace. Every line must be an object with the four fields,
/// and `hash_ids` must have exactly `ceil(input_length / block_size)`
/// entries (what Mooncake's traces have), or the prompt cannot be built as
/// the trace describes it.
pub fn parse_trace(text: &str, block_size: u32) -> Result<Vec<TraceLine>> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        if raw.trim().is_empty() {
            continue;
        }
        let value: Value = serde_json::from_str(raw)
            .map_err(|e| line_error(line, format!("not valid JSON ({e})")))?;
        let Value::Object(obj) = value else {
            return Err(line_error(line, "expected a JSON object".to_string()));
        };
        let field = |name: &str| {
            obj.get(name)
                .ok_or_else(|| line_error(line, format!("`{name}` is missing")))
        };
        let timestamp_ms = field("timestamp")?
            .as_f64()
            .filter(|t| t.is_finite() && *t >= 0.0)
            .ok_or_else(|| {
                line_error(
                    line,
                    "`timestamp` must be a number of ms, 0 or more".to_string(),
                )
            })?;
        let whole = |name: &str| -> Result<u32> {
            field(name)?
                .as_u64()
                .filter(|n| *n >= 1)
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| {
                    line_error(
                        line,
                        format!("`{name}` must be a whole number from 1 to 4294967295"),
                    )
                })
        };
        let input_length = whole("input_length")?;
        let output_length = whole("output_length")?;
        let hash_ids = field("hash_ids")?
            .as_array()
            .and_then(|ids| ids.iter().map(Value::as_u64).collect::<Option<Vec<u64>>>())
            .ok_or_else(|| {
                line_error(
                    line,
                    "`hash_ids` must be an array of whole numbers".to_string(),
                )
            })?;
        let needed = input_length.div_ceil(block_size) as usize;
        if hash_ids.len() != needed {
            return Err(line_error(
                line,
                format!(
                    "input_length {input_length} needs {needed} blocks of {block_size} tokens, \
                     but hash_ids has {}; set `block-size` to the trace's block size",
                    hash_ids.len()
                ),
            ));
        }
        out.push(TraceLine {
            line,
            timestamp_ms,
            input_length,
            output_length,
            hash_ids,
        });
    }
    if out.is_empty() {
        return Err(WorkloadError::InvalidConfig(
            "the trace has no requests (every line is blank)".to_string(),
        ));
    }
    Ok(out)
}

/// Texts of hash-id blocks.
///
/// Block `h`: `seed_h = SplitMix64(seed ^ h).next_u64()`; with
/// `rng = SplitMix64(seed_h)`, `topic = pick(TOPICS)`, document
/// `"block-<h>"` of `block-size` tokens, fitted to exactly that.
pub struct Blocks {
    seed: u64,
    block_size: u32,
    /// Bounded so long traces with many unique blocks fit in guest memory;
    /// it only saves host calls, the text is the same either way.
    cache: HashMap<u64, Rc<String>>,
}

/// Blocks kept before the cache starts over (~2.5 KB each at 512 tokens).
const BLOCK_CACHE: usize = 4096;

impl Blocks {
    pub fn new(seed: u64, block_size: u32) -> Self {
        Self {
            seed,
            block_size,
            cache: HashMap::new(),
        }
    }

    pub fn text(&mut self, h: u64, tok: &dyn Tokenizer) -> Rc<String> {
        if let Some(t) = self.cache.get(&h) {
            return Rc::clone(t);
        }
        if self.cache.len() >= BLOCK_CACHE {
            self.cache.clear();
        }
        let mut rng = SplitMix64::new(SplitMix64::new(self.seed ^ h).next_u64());
        let topic = rng.pick(&TOPICS);
        let doc = text::synthetic_document(&mut rng, &format!("block-{h}"), topic, self.block_size);
        let t = Rc::new(tok.fit(&doc, self.block_size, FILLER));
        self.cache.insert(h, Rc::clone(&t));
        t
    }
}

/// The validated params of one run (the trace included).
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub lines: Vec<TraceLine>,
    pub block_size: u32,
    pub time_scale: f64,
    pub concurrency: u32,
    pub sampling: Sampling,
    pub ignore_eos: bool,
    pub format: PromptFormat,
}

impl Config {
    /// `trace_text` is the file's content (read by the caller, so tests need
    /// no files).
    pub fn new(p: &Params, trace_text: &str) -> Result<Self> {
        let block_size = p.get_u32_min("block-size", 1)?;
        let time_scale = p.get_f64("time-scale")?;
        if time_scale < 0.0 {
            return Err(WorkloadError::InvalidConfig(format!(
                "parameter `time-scale`: {time_scale} is not valid; expected 0 or more (0 sends \
                 everything at once, 1 keeps the trace's pace)"
            )));
        }
        let mut lines = parse_trace(trace_text, block_size)?;
        let max = p.get_u32("max-requests")?;
        if max > 0 {
            lines.truncate(max as usize);
        }
        Ok(Self {
            lines,
            block_size,
            time_scale,
            concurrency: p.get_u32_min("concurrency", 1)?,
            sampling: p.get_sampling()?,
            ignore_eos: p.get_bool("ignore-eos")?,
            format: PromptFormat::from_params(p)?,
        })
    }
}

fn declared_params() -> Vec<ParamInfo> {
    let mut params = vec![
        param(
            "trace",
            "Path of the JSONL trace inside the sandbox; pass it as `--param \
             trace=@FILE`, which grants that one file read-only.",
            "",
        ),
        param(
            "block-size",
            "Tokens per hash-id block, as the trace was made with (Mooncake: 512).",
            "512",
        ),
        param(
            "time-scale",
            "Arrival = (timestamp − first timestamp) × this, in ms; 0.5 replays twice as \
             fast, 0 sends everything at once.",
            "1.0",
        ),
        param(
            "max-requests",
            "Replay only the first N requests; 0 for all.",
            "0",
        ),
        param(
            "concurrency",
            "Most requests in flight; arrivals wait only when this many are outstanding.",
            "256",
        ),
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
        // max_tokens comes from each line's output_length.
        .filter(|p| p.name != "max-tokens"),
    );
    params.extend(PromptFormat::params(Api::Completions, Template::None));
    params
}

/// The planner of one run.
pub struct TraceReplay {
    config: Config,
    blocks: Blocks,
    first_ms: f64,
    next: usize,
}

impl TraceReplay {
    pub fn new(config: Config, seed: u64) -> Self {
        let first_ms = config
            .lines
            .iter()
            .map(|l| l.timestamp_ms)
            .fold(f64::INFINITY, f64::min);
        Self {
            blocks: Blocks::new(seed, config.block_size),
            config,
            first_ms,
            next: 0,
        }
    }

    /// Request `i` of the trace.
    pub fn request(&mut self, i: usize, tok: &dyn Tokenizer) -> RequestSpec {
        let l = &self.config.lines[i];
        let mut joined = String::new();
        let mut first_block = None;
        for &h in &l.hash_ids {
            let t = self.blocks.text(h, tok);
            joined.push_str(&t);
            first_block.get_or_insert(t);
        }
        let prompt_text = tok.fit(&joined, l.input_length, FILLER);
        RequestSpec {
            id: format!("trace-{i:06}"),
            phase: "replay".to_string(),
            session_id: None,
            prefix_hash: first_block.map(|t| sha256_hex(&t)),
            prompt: self.config.format.render(&[message("user", &prompt_text)]),
            generation: self
                .config
                .sampling
                .generation(l.output_length, self.config.ignore_eos),
            arrival: Arrival::AtOffsetMs((l.timestamp_ms - self.first_ms) * self.config.time_scale),
            labels: vec![
                label("prompt_set", "trace_replay"),
                label("target_tokens", &l.input_length.to_string()),
                label("output_length", &l.output_length.to_string()),
                label("timestamp_ms", &l.timestamp_ms.to_string()),
                label("trace_line", &l.line.to_string()),
                label("blocks", &l.hash_ids.len().to_string()),
                label(
                    "first_hash_id",
                    &l.hash_ids.first().map(u64::to_string).unwrap_or_default(),
                ),
            ],
        }
    }

    pub fn next_requests(&mut self, max: usize, tok: &dyn Tokenizer) -> Batch {
        let end = (self.next + max).min(self.config.lines.len());
        let requests = (self.next..end).map(|i| self.request(i, tok)).collect();
        self.next = end;
        Batch {
            requests,
            done: self.next == self.config.lines.len(),
        }
    }
}

impl Workload for TraceReplay {
    fn describe() -> WorkloadInfo {
        WorkloadInfo {
            name: "trace_replay".to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            description: "Replays a Mooncake-style JSONL trace (timestamp, input_length, \
                          output_length, hash_ids per line): requests sharing hash ids share \
                          those prompt blocks, arrivals follow the timestamps × time-scale, and \
                          each asks for exactly output_length tokens. Pass the file with \
                          `--param trace=@FILE`."
                .to_string(),
            params: declared_params(),
        }
    }

    fn create(params: &Params, seed: u64) -> Result<Self> {
        let trace = data::read_text("trace", params.get_str("trace")?)?;
        Ok(Self::new(Config::new(params, &trace)?, seed))
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
mod tests {
    use super::*;
    use sparkhost_workload::{Prompt, WordTokenizer};

    fn params(pairs: &[(&str, &str)]) -> Params {
        Params::from_pairs(&declared_params(), pairs).unwrap()
    }

    fn error(text: &str) -> String {
        match parse_trace(text, 512) {
            Err(WorkloadError::InvalidConfig(m)) => m,
            other => panic!("expected InvalidConfig, got {other:?}"),
        }
    }

    const TRACE: &str = r#"{"timestamp": 1000, "input_length": 700, "output_length": 5, "hash_ids": [1, 2]}

{"timestamp": 1500, "input_length": 1024, "output_length": 7, "hash_ids": [1, 3], "extra": "ignored"}
{"timestamp": 3000, "input_length": 100, "output_length": 1, "hash_ids": [9]}
"#;

    fn text_of(r: &RequestSpec) -> &str {
        match &r.prompt {
            Prompt::Text(t) => t,
            Prompt::Chat(_) => panic!("completions by default"),
        }
    }

    #[test]
    fn parses_lines_and_skips_blanks() {
        let lines = parse_trace(TRACE, 512).unwrap();
        assert_eq!(lines.len(), 3);
        assert_eq!(
            lines[1],
            TraceLine {
                line: 3,
                timestamp_ms: 1500.0,
                input_length: 1024,
                output_length: 7,
                hash_ids: vec![1, 3]
            }
        );
    }

    #[test]
    fn malformed_lines_name_the_line_and_the_problem() {
        let ok = r#"{"timestamp": 0, "input_length": 10, "output_length": 1, "hash_ids": [1]}"#;
        for (bad, expected) in [
            ("{not json", "line 2: not valid JSON"),
            ("[1, 2]", "line 2: expected a JSON object"),
            (
                r#"{"input_length": 10, "output_length": 1, "hash_ids": [1]}"#,
                "`timestamp` is missing",
            ),
            (
                r#"{"timestamp": -1, "input_length": 10, "output_length": 1, "hash_ids": [1]}"#,
                "`timestamp` must be",
            ),
            (
                r#"{"timestamp": 0, "input_length": 0, "output_length": 1, "hash_ids": []}"#,
                "`input_length` must be",
            ),
            (
                r#"{"timestamp": 0, "input_length": 10, "output_length": 1.5, "hash_ids": [1]}"#,
                "`output_length` must be",
            ),
            (
                r#"{"timestamp": 0, "input_length": 10, "output_length": 1, "hash_ids": ["a"]}"#,
                "`hash_ids` must be",
            ),
            (
                r#"{"timestamp": 0, "input_length": 600, "output_length": 1, "hash_ids": [1]}"#,
                "needs 2 blocks of 512 tokens, but hash_ids has 1",
            ),
        ] {
            let m = error(&format!("{ok}\n{bad}\n"));
            assert!(m.starts_with("trace line 2: "), "{m}");
            assert!(m.contains(expected), "{m} lacks {expected}");
        }
        assert!(error("\n  \n").contains("no requests"));
    }

    #[test]
    fn shared_hash_ids_share_prompt_bytes() {
        let c = Config::new(&params(&[]), TRACE).unwrap();
        let mut t = TraceReplay::new(c, 42);
        let b = t.next_requests(10, &WordTokenizer);
        assert!(b.done);
        let r = &b.requests;
        let (a, bb) = (text_of(&r[0]), text_of(&r[1]));
        assert_eq!(WordTokenizer.count(a), 700);
        assert_eq!(WordTokenizer.count(bb), 1024);
        let block1 = t.blocks.text(1, &WordTokenizer);
        assert!(a.starts_with(block1.as_str()) && bb.starts_with(block1.as_str()));
        assert!(block1.starts_with("Document ID: block-1\n"));
        assert_eq!(WordTokenizer.count(&block1), 512);
        assert_ne!(a[block1.len()..][..100], bb[block1.len()..][..100]);
        assert_eq!(r[0].prefix_hash, r[1].prefix_hash);
        assert_ne!(r[0].prefix_hash, r[2].prefix_hash);
    }

    #[test]
    fn arrivals_lengths_and_labels() {
        let c = Config::new(
            &params(&[("time-scale", "0.5"), ("max-requests", "2")]),
            TRACE,
        )
        .unwrap();
        assert_eq!(c.lines.len(), 2);
        let mut t = TraceReplay::new(c, 1);
        let r = t.next_requests(1, &WordTokenizer);
        assert!(!r.done);
        let r2 = t.next_requests(5, &WordTokenizer);
        assert!(r2.done);
        assert_eq!(r.requests[0].arrival, Arrival::AtOffsetMs(0.0));
        assert_eq!(r2.requests[0].arrival, Arrival::AtOffsetMs(250.0));
        let g = &r2.requests[0].generation;
        assert_eq!((g.max_tokens, g.ignore_eos), (7, true));
        assert_eq!((g.temperature, g.stop.len()), (None, 0));
        assert!(r2.requests[0].labels.contains(&label("trace_line", "3")));
        assert!(
            r2.requests[0]
                .labels
                .contains(&label("target_tokens", "1024"))
        );
        assert_eq!(r2.requests[0].id, "trace-000001");
    }

    #[test]
    fn params_are_checked() {
        assert!(Config::new(&params(&[("time-scale", "-1")]), TRACE).is_err());
        assert!(Config::new(&params(&[("block-size", "0")]), TRACE).is_err());
        let m = match Config::new(&params(&[("block-size", "256")]), TRACE) {
            Err(WorkloadError::InvalidConfig(m)) => m,
            other => panic!("{other:?}"),
        };
        assert!(
            m.contains("trace line 1") && m.contains("block-size"),
            "{m}"
        );
    }

    #[test]
    fn the_example_trace_is_valid() {
        let text = include_str!("../example_trace.jsonl");
        let lines = parse_trace(text, 512).unwrap();
        assert!((40..=60).contains(&lines.len()), "{}", lines.len());
        let shared = lines
            .iter()
            .filter(|l| {
                lines
                    .iter()
                    .any(|o| o.line != l.line && o.hash_ids[0] == l.hash_ids[0])
            })
            .count();
        assert!(
            shared > lines.len() / 2,
            "most requests share a first block"
        );
    }

    #[test]
    fn same_seed_same_blocks() {
        let a = Blocks::new(5, 64).text(7, &WordTokenizer);
        let b = Blocks::new(5, 64).text(7, &WordTokenizer);
        let c = Blocks::new(6, 64).text(7, &WordTokenizer);
        assert_eq!(a, b);
        assert_ne!(a, c);
    }
}
