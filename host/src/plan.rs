//! The host's own model of a workload plan.
//!
//! These types mirror the WIT records but belong to the host, so the dispatch
//! path never sees wasmtime types and other plan sources (tests, future trace
//! readers) can feed the dispatcher directly.

use std::fmt;

use serde::Serialize;

use crate::sandbox::SandboxError;

/// One chat turn.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

/// Text goes to `/v1/completions`, messages to `/v1/chat/completions`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "value")]
pub enum Prompt {
    Text(String),
    Chat(Vec<ChatMessage>),
}

impl Prompt {
    /// The bytes that identify the prompt: the text, or the canonical JSON of the messages.
    pub fn identity_bytes(&self) -> Vec<u8> {
        match self {
            Prompt::Text(t) => t.as_bytes().to_vec(),
            Prompt::Chat(m) => {
                crate::digest::canonical_json(&serde_json::to_value(m).unwrap_or_default())
                    .into_bytes()
            }
        }
    }

    /// Characters of user-visible prompt text (all message contents for chat).
    pub fn char_len(&self) -> usize {
        match self {
            Prompt::Text(t) => t.chars().count(),
            Prompt::Chat(m) => m.iter().map(|m| m.content.chars().count()).sum(),
        }
    }

    pub fn api(&self) -> Api {
        match self {
            Prompt::Text(_) => Api::Completions,
            Prompt::Chat(_) => Api::ChatCompletions,
        }
    }
}

/// Which OpenAI-compatible route a request uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Api {
    Completions,
    ChatCompletions,
}

impl Api {
    pub fn path(self) -> &'static str {
        match self {
            Api::Completions => "/v1/completions",
            Api::ChatCompletions => "/v1/chat/completions",
        }
    }
}

/// Generation parameters; `None` leaves a field out of the payload.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct Generation {
    pub max_tokens: u32,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub stop: Vec<String>,
    pub seed: Option<u64>,
    pub ignore_eos: bool,
}

/// When a request may be sent.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case", tag = "kind", content = "ms")]
pub enum Arrival {
    /// When the phase's load model allows.
    Asap,
    /// Not before this offset from the phase start.
    AtOffsetMs(f64),
    /// After the session's previous request finished, plus think time.
    AfterPreviousTurn(f64),
}

/// One planned request.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RequestPlan {
    pub id: String,
    pub phase: String,
    pub session_id: Option<String>,
    pub prefix_hash: Option<String>,
    pub prompt: Prompt,
    pub generation: Generation,
    pub arrival: Arrival,
    pub labels: Vec<(String, String)>,
}

/// How a phase offers load.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, serde::Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum LoadModel {
    /// At most this many requests in flight.
    Closed { concurrency: u32 },
    /// Open loop at a fixed interval.
    Constant { rate: f64 },
    /// Open loop, exponential inter-arrival times.
    Poisson { rate: f64 },
    /// Open loop, gamma inter-arrival times with the given shape.
    Gamma { rate: f64, shape: f64 },
}

impl LoadModel {
    /// The one range check for a load, whether a flag, a matrix cell or a
    /// guest declared it: what the pacer can turn into times without
    /// overflowing (a rate of 1e-300 req/s once panicked it).
    pub fn validate(&self) -> Result<(), String> {
        use crate::limits::{GAMMA_SHAPE_RANGE, MAX_CONCURRENCY, RATE_RANGE};
        let rate_ok = |r: f64| r.is_finite() && RATE_RANGE.contains(&r);
        match *self {
            LoadModel::Closed { concurrency } if !(1..=MAX_CONCURRENCY).contains(&concurrency) => {
                Err(format!(
                    "closed-loop concurrency must be in 1..={MAX_CONCURRENCY}, got {concurrency}"
                ))
            }
            LoadModel::Constant { rate }
            | LoadModel::Poisson { rate }
            | LoadModel::Gamma { rate, .. }
                if !rate_ok(rate) =>
            {
                Err(format!(
                    "arrival rate must be in {}..={} requests/s, got {rate:e}",
                    RATE_RANGE.start(),
                    RATE_RANGE.end()
                ))
            }
            LoadModel::Gamma { shape, .. }
                if !(shape.is_finite() && GAMMA_SHAPE_RANGE.contains(&shape)) =>
            {
                Err(format!(
                    "gamma shape must be in {}..={}, got {shape:e}",
                    GAMMA_SHAPE_RANGE.start(),
                    GAMMA_SHAPE_RANGE.end()
                ))
            }
            _ => Ok(()),
        }
    }
}

impl Arrival {
    /// Offsets and think times a guest may plan: finite, not negative, and
    /// within [`crate::limits::MAX_ARRIVAL_MS`] (1e300 ms once panicked the
    /// dispatcher converting it to a `Duration`).
    pub fn validate(&self) -> Result<(), String> {
        let max = crate::limits::MAX_ARRIVAL_MS;
        match *self {
            Arrival::Asap => Ok(()),
            Arrival::AtOffsetMs(ms) | Arrival::AfterPreviousTurn(ms)
                if !(ms.is_finite() && (0.0..=max).contains(&ms)) =>
            {
                Err(format!("arrival time must be in 0..={max} ms, got {ms:e}"))
            }
            _ => Ok(()),
        }
    }
}

/// Checks the phases a workload declared: how many, their names (they name
/// files and table rows) and their loads.
pub fn validate_phases(phases: &[PhasePlan]) -> Result<(), String> {
    use crate::limits::{MAX_PHASE_NAME_BYTES, MAX_PHASES};
    if phases.len() > MAX_PHASES {
        return Err(format!(
            "{} phases declared; at most {MAX_PHASES} are allowed",
            phases.len()
        ));
    }
    let mut seen = std::collections::HashSet::new();
    for p in phases {
        if p.name.is_empty() || p.name.len() > MAX_PHASE_NAME_BYTES {
            return Err(format!(
                "phase name {:?} must be 1..={MAX_PHASE_NAME_BYTES} bytes",
                p.name
            ));
        }
        if p.name.chars().any(char::is_control) {
            return Err(format!(
                "phase name {:?} contains control characters",
                p.name
            ));
        }
        if !seen.insert(p.name.as_str()) {
            return Err(format!("phase name {:?} is declared twice", p.name));
        }
        if let Some(l) = &p.load {
            l.validate()
                .map_err(|e| format!("phase {:?}: {e}", p.name))?;
        }
    }
    Ok(())
}

/// A phase as declared by the workload.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PhasePlan {
    pub name: String,
    pub include_in_summary: bool,
    /// `None` uses the command line's load model.
    pub load: Option<LoadModel>,
}

/// Why a request failed; the stable names appear in `requests.jsonl`,
/// summaries and the workload's response summaries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ErrorKind {
    /// Nothing listens on the endpoint's port.
    ConnectRefused,
    /// Any other failure to connect (DNS, unreachable, connect timeout).
    Connect,
    /// The request timeout passed before the response was complete.
    Timeout,
    /// The connection broke after the request was sent.
    ConnectionReset,
    /// A redirect (3xx): an OpenAI endpoint does not redirect, so the base
    /// URL is likely wrong; not followed, and not a server error.
    Http3xx,
    Http429,
    Http4xx,
    Http5xx,
    /// This machine ran out of file descriptors or memory for sockets: the
    /// client's failure, not the server's.
    ClientResources,
    /// The server reported an error inside a 200 stream.
    StreamError,
    /// Bytes that are not valid SSE or not the expected JSON.
    Malformed,
    /// A stream that ended without `[DONE]`.
    Incomplete,
    /// The server refused a prompt longer than its engine allows.
    PromptLimit,
    /// The response passed one of the caps on what a server may send
    /// (head, SSE event, body bytes, content chunks; `limits`): reading
    /// stopped there, so an endless or giant answer cannot grow the client.
    ResponseTooLarge,
    /// The body came compressed (`Content-Encoding`) although the request
    /// asked for `identity`: chunk arrivals of a compressed stream are not
    /// token arrivals, so it is not decoded.
    UnsupportedContentEncoding,
}

impl ErrorKind {
    pub const ALL: [ErrorKind; 15] = [
        ErrorKind::ConnectRefused,
        ErrorKind::Connect,
        ErrorKind::Timeout,
        ErrorKind::ConnectionReset,
        ErrorKind::Http3xx,
        ErrorKind::Http429,
        ErrorKind::Http4xx,
        ErrorKind::Http5xx,
        ErrorKind::ClientResources,
        ErrorKind::StreamError,
        ErrorKind::Malformed,
        ErrorKind::Incomplete,
        ErrorKind::PromptLimit,
        ErrorKind::ResponseTooLarge,
        ErrorKind::UnsupportedContentEncoding,
    ];

    /// The one list of stable names; serialization goes through it.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::ConnectRefused => "connect_refused",
            ErrorKind::Connect => "connect",
            ErrorKind::Timeout => "timeout",
            ErrorKind::ConnectionReset => "connection_reset",
            ErrorKind::Http3xx => "http_3xx",
            ErrorKind::Http429 => "http_429",
            ErrorKind::Http4xx => "http_4xx",
            ErrorKind::Http5xx => "http_5xx",
            ErrorKind::ClientResources => "client_resources_exhausted",
            ErrorKind::StreamError => "stream_error",
            ErrorKind::Malformed => "malformed_response",
            ErrorKind::Incomplete => "incomplete_stream",
            ErrorKind::PromptLimit => "engine_prompt_limit_exceeded",
            ErrorKind::ResponseTooLarge => "response_too_large",
            ErrorKind::UnsupportedContentEncoding => "unsupported_content_encoding",
        }
    }
}

impl Serialize for ErrorKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl schemars::JsonSchema for ErrorKind {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "ErrorKind".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let names: Vec<&str> = ErrorKind::ALL.iter().map(|k| k.as_str()).collect();
        schemars::json_schema!({ "type": "string", "enum": names })
    }
}

/// What a failed request is counted under: its [`ErrorKind`], or, when it
/// ended without one on a status that is not a success, `http_<status>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ErrorKey {
    Kind(ErrorKind),
    Http(u16),
}

impl ErrorKey {
    /// The key of a finished request; `None` when it succeeded.
    pub fn of(kind: Option<ErrorKind>, ok: bool, status: u16) -> Option<Self> {
        match kind {
            Some(k) => Some(ErrorKey::Kind(k)),
            None => (!ok).then_some(ErrorKey::Http(status)),
        }
    }
}

impl fmt::Display for ErrorKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ErrorKey::Kind(k) => f.write_str(k.as_str()),
            ErrorKey::Http(status) => write!(f, "http_{status}"),
        }
    }
}

/// What a request ended as, handed back to the workload for follow-ups.
#[derive(Debug, Clone, PartialEq)]
pub struct ResponseSummary {
    pub id: String,
    pub phase: String,
    pub session_id: Option<String>,
    pub ok: bool,
    pub status: u16,
    pub error_kind: Option<ErrorKey>,
    pub text: String,
    pub prompt_tokens: Option<u32>,
    pub completion_tokens: Option<u32>,
    pub cached_tokens: Option<u32>,
    pub ttft_ms: Option<f64>,
    pub e2e_ms: f64,
}

/// A batch from a planner: `done` means nothing will follow; an empty,
/// not-done batch means the planner waits for responses.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanBatch {
    pub requests: Vec<RequestPlan>,
    pub done: bool,
}

/// Why planning stopped. It stays typed through the feed and the dispatcher
/// and becomes text only in the run's documents.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// The sandboxed workload failed: a trap, a limit, or its own error.
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    /// The workload planned something the host refuses to send.
    #[error("{0}")]
    Invalid(String),
    /// Prompts of the plan cannot fit the engine.
    #[error(
        "prompt preflight failed for {failures} of {planned} planned requests: {}",
        .errors.join("; ")
    )]
    Preflight {
        failures: u64,
        planned: u64,
        /// The first offenders.
        errors: Vec<String>,
    },
    #[error(
        "the workload waits for responses, but none of its requests are outstanding (it returned an empty batch without `done`)"
    )]
    Stalled,
    /// `request_manifest.jsonl` or `prompts_manifest.jsonl` could not be written.
    #[error(transparent)]
    Write(std::io::Error),
}

/// Anything that plans requests: a sandboxed workload, or a test double
/// (`ScriptedPlanner` in the feed's tests). Calls happen on a dedicated
/// thread, never on the dispatch path.
pub trait Planner: Send {
    fn phases(&mut self) -> Result<Vec<PhasePlan>, PlanError>;
    fn next_batch(&mut self, max: u32) -> Result<PlanBatch, PlanError>;
    fn on_response(&mut self, summary: ResponseSummary) -> Result<(), PlanError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_and_flag_values_that_once_crashed_the_host_are_refused_by_name() {
        // Each of these panicked or aborted the host before it was checked.
        let bad_loads = [
            (
                LoadModel::Closed {
                    concurrency: u32::MAX,
                },
                "concurrency",
            ),
            (LoadModel::Closed { concurrency: 0 }, "concurrency"),
            (LoadModel::Poisson { rate: 1e-300 }, "arrival rate"),
            (LoadModel::Constant { rate: f64::NAN }, "arrival rate"),
            (
                LoadModel::Gamma {
                    rate: 5.0,
                    shape: f64::INFINITY,
                },
                "gamma shape",
            ),
        ];
        for (l, what) in bad_loads {
            let e = l.validate().unwrap_err();
            assert!(e.contains(what), "{l:?}: {e}");
        }
        assert!(
            LoadModel::Gamma {
                rate: 5.0,
                shape: 0.5
            }
            .validate()
            .is_ok()
        );
        for a in [
            Arrival::AtOffsetMs(1e300),
            Arrival::AfterPreviousTurn(-1.0),
            Arrival::AtOffsetMs(f64::NAN),
        ] {
            assert!(a.validate().unwrap_err().contains("arrival time"), "{a:?}");
        }
        assert!(Arrival::AtOffsetMs(1500.0).validate().is_ok());
        let phase = |name: &str| PhasePlan {
            name: name.into(),
            include_in_summary: true,
            load: None,
        };
        let many: Vec<PhasePlan> = (0..2000).map(|i| phase(&format!("p{i}"))).collect();
        assert!(validate_phases(&many).unwrap_err().contains("at most 100"));
        assert!(
            validate_phases(&[phase("a"), phase("a")])
                .unwrap_err()
                .contains("twice")
        );
        assert!(
            validate_phases(&[phase("\u{1b}[2J")])
                .unwrap_err()
                .contains("control")
        );
        assert!(validate_phases(&[phase(&"x".repeat(65))]).is_err());
        assert!(validate_phases(&[phase("warmup"), phase("a/b"), phase("a b")]).is_ok());
    }

    #[test]
    fn error_kinds_keep_their_stable_names() {
        let name = |k: ErrorKind| serde_json::to_value(k).unwrap();
        assert_eq!(name(ErrorKind::Malformed), "malformed_response");
        assert_eq!(name(ErrorKind::PromptLimit), "engine_prompt_limit_exceeded");
        assert_eq!(name(ErrorKind::Http429), "http_429");
        assert_eq!(
            ErrorKey::of(Some(ErrorKind::Incomplete), false, 200).map(|k| k.to_string()),
            Some("incomplete_stream".into())
        );
        assert_eq!(
            ErrorKey::of(None, false, 302).map(|k| k.to_string()),
            Some("http_302".into())
        );
        assert_eq!(ErrorKey::of(None, true, 200), None);
    }

    mod props {
        //! Property tests (FUZZING.md): any load or arrival a guest may
        //! return is refused or safe to schedule.
        use super::*;
        use proptest::prelude::*;

        fn any_f64() -> impl Strategy<Value = f64> {
            prop_oneof![
                any::<f64>(),
                Just(f64::NAN),
                Just(f64::INFINITY),
                Just(1e-300),
                Just(1e300),
                0.0..2e6,
            ]
        }

        fn load() -> impl Strategy<Value = LoadModel> {
            prop_oneof![
                any::<u32>().prop_map(|concurrency| LoadModel::Closed { concurrency }),
                any_f64().prop_map(|rate| LoadModel::Constant { rate }),
                any_f64().prop_map(|rate| LoadModel::Poisson { rate }),
                (any_f64(), any_f64()).prop_map(|(rate, shape)| LoadModel::Gamma { rate, shape }),
            ]
        }

        proptest! {
            #[test]
            fn a_load_that_validates_schedules_without_panicking(
                l in load(),
                seed in any::<u64>(),
                n in 0u64..10_000,
            ) {
                if l.validate().is_ok()
                    && let Some(mut s) = crate::dispatch::pacer::Schedule::new(l, seed)
                {
                    let _ = s.offset(n);
                }
            }

            #[test]
            fn an_arrival_that_validates_is_a_duration(ms in any_f64(), after in any::<bool>()) {
                let a = if after { Arrival::AfterPreviousTurn(ms) } else { Arrival::AtOffsetMs(ms) };
                if a.validate().is_ok() {
                    prop_assert!(std::time::Duration::try_from_secs_f64(ms / 1e3).is_ok());
                }
            }
        }
    }
}
