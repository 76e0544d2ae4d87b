//! Every cap and tunable of the host, each with the reason for its value.
//! Flags default to these (clap reads the `*_FLAG` spellings, a test checks
//! they parse to the typed value), so `--help` and the code never disagree.
//! Collector defaults live with the collectors (`sparkhost_collectors::session`).

use std::time::Duration;

// --- Sandbox: workloads --------------------------------------------------

/// Longest one workload call may run: planning a batch takes microseconds
/// to milliseconds; a call still running after 30 s is a loop, not work.
pub const WORKLOAD_CALL_TIMEOUT: Duration = Duration::from_secs(30);
pub const WORKLOAD_CALL_TIMEOUT_FLAG: &str = "30s";
/// Memory of one workload instance: the built-in workloads stay under 64
/// MiB; a trace replay holding a large trace needs more, a leak must stop.
pub const WORKLOAD_MEMORY_MIB: u64 = 512;
/// Granularity of call deadlines (wasmtime epoch ticks): fine enough that a
/// deadline fires within 10 ms, coarse enough to cost nothing.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);
/// Largest `--data` file: each is copied into a private directory for the
/// workload (so nothing beside it is reachable), which costs its size on disk.
pub const MAX_DATA_FILE_BYTES: u64 = 8 << 30;
/// Guest stderr kept for error messages: the panic message and a backtrace
/// fit, a guest that floods stderr cannot grow the host.
pub const GUEST_STDERR_BYTES: usize = 64 << 10;

// --- Sandbox: report generators ------------------------------------------

/// A generator reads the whole run (a long run's `requests.jsonl` is
/// hundreds of megabytes), so its floor is larger than a workload's.
pub const REPORT_CALL_TIMEOUT: Duration = Duration::from_secs(120);
pub const REPORT_CALL_TIMEOUT_FLAG: &str = "120s";
pub const REPORT_MEMORY_MIB: u64 = 2048;
/// Files one generation may write, and their total size.
pub const REPORT_MAX_OUTPUT_FILES: usize = 256;
pub const REPORT_MAX_OUTPUT_BYTES: usize = 512 << 20;
/// Longest output file name and deepest path a generator may return.
pub const REPORT_MAX_NAME_BYTES: usize = 200;
pub const REPORT_MAX_NAME_DEPTH: usize = 4;
/// Files of a run directory listed to a generator.
pub const REPORT_MAX_LISTED_FILES: usize = 100_000;

// --- Verdict -------------------------------------------------------------

/// Largest `--kv-block-bytes`: a 70B-class FP16 model's 128-token block is
/// 40 MiB; 1 GiB leaves room for larger blocks and catches a unit slip.
pub const KV_BLOCK_BYTES_MAX: u64 = 1 << 30;
/// Largest `--kvbm-hit-rate-window`: KVBM keeps one entry per request in
/// the window; ten million is far beyond any configured window.
pub const HIT_RATE_WINDOW_MAX: u64 = 10_000_000;

// --- Dispatch --------------------------------------------------------------

/// Requests planned per guest call: planning 64 at once took ~2 ms of a core
/// in one burst, and at 8,000 req/s that burst alone made the schedule
/// lateness p99 3 ms on a 2-core machine (16: ~1 ms).
pub const PLAN_BATCH_MAX: u32 = 16;
/// Open loop prewarms enough connections for this much of the arrival rate:
/// it covers the in-flight count of short requests; opening connections
/// mid-phase made the first sends of a 10,000 req/s run up to 6 ms late.
pub const PREWARM_OPEN_LOOP: Duration = Duration::from_millis(10);
/// Most connections prewarmed by default: past this, opening them costs
/// more start-up than it saves (and may exceed the server's backlog).
pub const PREWARM_MAX: usize = 1024;
/// Rows the recorder buffers before a flush while events keep coming: one
/// write per burst instead of one per request, and never more than this
/// many rows lost to a crash.
pub const RECORDER_FLUSH_EVERY: usize = 64;
/// Requests buffered ahead of their send time (`--lookahead`).
pub const LOOKAHEAD: usize = 256;
/// Most closed-loop streams `--concurrency` accepts: each holds a socket and
/// ~17 KiB of client memory, so past this the client machine fails first
/// (and `u32::MAX` aborted the process allocating slots).
pub const MAX_CONCURRENCY: u32 = 100_000;
/// Open-loop arrival rates, requests/s: below one per ~17 minutes a phase
/// is not a load test; above a million a second no client machine sends.
pub const RATE_RANGE: std::ops::RangeInclusive<f64> = 0.001..=1_000_000.0;
/// Gamma inter-arrival shapes: outside this the distribution degenerates
/// (all arrivals at once, or a constant rate) and its sampler misbehaves.
pub const GAMMA_SHAPE_RANGE: std::ops::RangeInclusive<f64> = 0.001..=1000.0;
/// Latest planned arrival offset or think time: 7 days.
pub const MAX_ARRIVAL_MS: f64 = 7.0 * 24.0 * 3600.0 * 1000.0;
/// Phases one workload may declare: each holds histograms (grown as values
/// come) and telemetry snapshots; the built-in workloads use at most 6.
pub const MAX_PHASES: usize = 100;
/// Longest phase name: it names files and table rows.
pub const MAX_PHASE_NAME_BYTES: usize = 64;
/// `matrix`: repeats per cell and cells per file. A matrix of more runs
/// than this would take weeks; past it a typo, not a plan, is likelier.
pub const MAX_MATRIX_REPEATS: u32 = 1000;
pub const MAX_MATRIX_CELLS: u64 = 100_000;
/// Open loop: requests in flight before sends wait (`--max-in-flight`);
/// protects the client machine's memory and file descriptors.
pub const MAX_IN_FLIGHT: usize = 10_000;

// --- Responses: every size a server controls --------------------------------
// A server is untrusted (SECURITY.md): what it sends is bounded per request,
// so the client's memory follows the requests in flight, not the bytes others
// choose to send. Each overrun is the request's `response_too_large`; the run
// goes on.

/// Body bytes of one timed response as they come off the wire (chunk
/// framing included), streamed or not (`--max-response-bytes`). A
/// 128k-token stream of Dynamo's ~200-byte chunks is ~26 MB; 64 MiB leaves
/// room for logprobs, and an endless body stops there instead of growing
/// the client until it is killed.
pub const MAX_RESPONSE_BYTES: u64 = 64 << 20;
pub const MAX_RESPONSE_BYTES_FLAG: &str = "64MiB";
/// `--max-response-bytes` range: below 1 KiB not even a head-sized answer
/// fits; past 2 GiB one request could take the machine's memory (and a
/// response's text offsets are 32-bit).
pub const MIN_RESPONSE_BYTES: u64 = 1 << 10;
pub const MAX_RESPONSE_BYTES_LIMIT: u64 = 2 << 30;
/// One SSE event (its `data:` lines joined) or one line of it: real chunks
/// are under 10 KiB, with top-20 logprobs tens of KiB.
pub const MAX_SSE_EVENT_BYTES: usize = 4 << 20;
/// Content chunks recorded for one response: each keeps an arrival time and
/// its text offset (~100 bytes across parser, recorder and row). Every
/// content chunk carries at least one token, and no engine generates a
/// quarter of a million tokens for one request.
pub const MAX_RESPONSE_CHUNKS: usize = 1 << 18;
/// A response head (status line and headers), and its header count: real
/// heads are under 2 KiB with a dozen headers.
pub const MAX_RESPONSE_HEAD_BYTES: usize = 64 << 10;
pub const MAX_RESPONSE_HEADERS: usize = 64;
/// A chunk-size line (with its extensions) or one trailer line.
pub const MAX_CHUNK_LINE_BYTES: usize = 4 << 10;
/// Of a non-2xx answer's body, what is read and kept for its message: an
/// error body is a JSON object of a few hundred bytes.
pub const MAX_ERROR_BODY_BYTES: usize = 64 << 10;

// --- Endpoint access -------------------------------------------------------

/// `--header` flags: auth and routing need a handful; dozens would be a
/// script gone wrong, and each one is written into every request.
pub const MAX_HEADER_FLAGS: usize = 32;
/// A header name: real ones are tens of bytes.
pub const MAX_HEADER_NAME_BYTES: usize = 256;
/// A header value (a JWT is 1-2 KiB); common servers refuse heads over 8 KiB anyway.
pub const MAX_HEADER_VALUE_BYTES: usize = 8192;
/// A body the untimed client reads whole (`/v1/models`, health, `/truth`):
/// a model list of thousands of entries is well under this.
pub const MAX_UNTIMED_BODY: usize = 16 << 20;
/// The untimed client's per-request limit when the command sets none.
pub const UNTIMED_TIMEOUT: Duration = Duration::from_secs(30);

// --- Evidence: disk ceiling, cache hygiene, whole-plan preflight ------
/// `calibrate-disk`: the test file's size. 1 MiB is the least that still
/// holds many blocks; past 1 TiB a calibration takes hours. The default,
/// 1 GiB, is larger than most drives' DRAM cache, not their SLC cache
/// (peers-2026 §6: a long write is needed to see past that; raise --size).
pub const CALIBRATE_MIN_FILE_BYTES: u64 = 1 << 20;
pub const CALIBRATE_MAX_FILE_BYTES: u64 = 1 << 40;
pub const CALIBRATE_FILE_BYTES: u64 = 1 << 30;
/// I/O sizes: O_DIRECT needs 4 KiB alignment; 64 MiB is past any KV block.
pub const CALIBRATE_MIN_BLOCK_BYTES: u64 = 4096;
pub const CALIBRATE_MAX_BLOCK_BYTES: u64 = 64 << 20;
/// The sequential I/O size peers-2026 §6 suggests for a drive's ceiling.
pub const CALIBRATE_SEQ_BLOCK_BYTES: u64 = 1 << 20;
/// The random I/O size: a KV block of an 8B model at FP8 with 32-token
/// blocks is 2 MiB; 1 MiB sits between small and large blocks. Set it to
/// the engine's block bytes for the figure a run is compared with.
pub const CALIBRATE_BLOCK_BYTES: u64 = 1 << 20;
/// Queue depth = I/O threads: 8 is what peers-2026 §6 names (QD ≥ 8);
/// 256 threads is past any NVMe's useful depth.
pub const CALIBRATE_QUEUE_DEPTH: u32 = 8;
pub const CALIBRATE_MAX_QUEUE_DEPTH: u32 = 256;
/// Longest one of the four tests runs before it stops early (recorded).
pub const CALIBRATE_MAX_TEST_SECS: u64 = 3600;
pub const CALIBRATE_TEST_SECS_FLAG: &str = "60s";
/// A device profile is a few KiB; anything larger is not one.
pub const DEVICE_PROFILE_MAX_BYTES: u64 = 1 << 20;

/// `--kv-reset-*`: how long a reset may take (a cache flush on a real
/// engine can take seconds; an hour is a hung command).
pub const KV_RESET_TIMEOUT_FLAG: &str = "60s";
pub const KV_RESET_MAX_TIMEOUT: Duration = Duration::from_secs(3600);
/// Output of a reset command or body of a reset answer kept in summary.json.
pub const KV_RESET_OUTPUT_BYTES: usize = 4096;

/// `--prime-tokens`: most prompt tokens a warm-up may send (a 1M-token
/// budget is ~8x the KV a DGX Spark can hold for an 8B model at FP8).
pub const PRIME_MAX_TOKENS: u64 = 100_000_000;
pub const PRIME_PROMPT_TOKENS: u32 = 1024;
pub const PRIME_MAX_PROMPT_TOKENS: u32 = 1 << 20;
pub const PRIME_CONCURRENCY: u32 = 4;
pub const PRIME_MAX_CONCURRENCY: u32 = 1024;

/// Whole-plan preflight: most requests the dry run plans before it says
/// the rest is checked as it is planned. Bounded so a workload that plans
/// without end cannot stall a run's start; 10 million requests is hours of
/// serving on any engine.
pub const PREFLIGHT_PLAN_MAX: u64 = 10_000_000;

/// Server build info (`GET /version`): how long to wait, and how much of
/// the answer goes into manifest.json.
pub const SERVER_INFO_TIMEOUT: Duration = Duration::from_secs(3);
pub const SERVER_INFO_BYTES: usize = 4096;

/// `/v1/models` probe for a local model directory to take the tokenizer
/// from, when `--tokenizer` is not given.
pub const MODEL_DIR_PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Cross-run prompt reuse check: distinct prompt digests read per run.
/// A run with more is checked on its first this many (recorded).
pub const REUSE_CHECK_MAX_PROMPTS: usize = 1_000_000;
// --- Stack control (`sparkhost stack`, `health`) ---------------------------

/// A profile is a hand-written TOML of a few kilobytes; anything near this is
/// not a profile.
pub const STACK_PROFILE_MAX_BYTES: u64 = 256 << 10;
/// The seed's largest stack has four components (NATS, worker, frontend,
/// router); 16 leaves room without letting a profile fork-bomb the machine.
pub const STACK_MAX_PROCESSES: usize = 16;
pub const STACK_MAX_FILES: usize = 16;
pub const STACK_MAX_VARS: usize = 256;
/// Arguments of one process, and the longest rendered string (an argument,
/// an env value, a URL).
pub const STACK_MAX_ARGS: usize = 256;
pub const STACK_MAX_VALUE_BYTES: usize = 4096;
/// Longest grace between SIGTERM and SIGKILL: a TRT-LLM worker releasing
/// its GPU memory takes tens of seconds; beyond two minutes it is hung.
pub const STACK_MAX_STOP_GRACE_S: u64 = 120;
/// Longest readiness wait: a 70B NVFP4 engine loads in minutes; an hour is
/// a stuck container pull, not a start.
pub const STACK_MAX_READY_TIMEOUT: Duration = Duration::from_secs(3600);
/// Readiness poll period: fast enough that the sim is ready in a fraction
/// of a second, slow enough to cost nothing.
pub const STACK_READY_POLL: Duration = Duration::from_millis(200);
/// Timeout of one readiness or health probe.
pub const STACK_PROBE_TIMEOUT: Duration = Duration::from_secs(3);
/// Free ports for `auto` vars: below Linux's default ephemeral range
/// (32768..) and within Dynamo 1.6.1's i16 system port.
pub const STACK_AUTO_PORTS: std::ops::RangeInclusive<u16> = 20000..=32767;
/// Log lines `stack logs` and start-up failures show per process.
pub const STACK_LOG_TAIL_LINES: usize = 40;

// --- --store-responses ---------------------------------------------------

/// Response text a run may store under `responses/`: the answers are the
/// server's text, not measurements, and a long run must not fill the
/// results disk with them.
pub const RESPONSES_MAX_BYTES: u64 = 1 << 30;
/// Response files a run may store: one directory with more is slow to list
/// for every tool that reads it.
pub const RESPONSES_MAX_FILES: u64 = 1_000_000;

// --- `sparkhost new` -----------------------------------------------------

/// Longest workload name `sparkhost new` takes: it names a crate, a
/// package, a directory and a `.wasm` file.
pub const NEW_WORKLOAD_NAME_MAX: usize = 64;

// --- Sharing: OCI registries ---------------------------------------------

/// Largest manifest pulled: a Wasm artifact's manifest is about a kilobyte;
/// distribution's own limit is 4 MiB.
pub const OCI_MANIFEST_MAX_BYTES: u64 = 4 << 20;
/// Largest Wasm config pulled: it lists the component's imports and
/// exports, a few kilobytes.
pub const OCI_CONFIG_MAX_BYTES: u64 = 1 << 20;
/// Largest component pulled: interpreter-based JavaScript and Python
/// workloads are 12–18 MB; ten times that is not a workload.
pub const OCI_LAYER_MAX_BYTES: u64 = 256 << 20;
/// Connecting to a registry: a loopback or LAN registry answers in
/// milliseconds; a silent one must not hang a run before it starts.
pub const REGISTRY_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Between two reads of a registry response (not the whole transfer, so a
/// large component on a slow link still arrives).
pub const REGISTRY_READ_TIMEOUT: Duration = Duration::from_secs(60);
/// Largest `SPARKHOST_REGISTRY_CA_CERT` file: a CA bundle is kilobytes; the
/// whole Mozilla set is about 200 KB.
pub const REGISTRY_CA_MAX_BYTES: u64 = 1 << 20;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::parse_duration;

    #[test]
    fn flag_spellings_parse_to_the_typed_values() {
        assert_eq!(
            parse_duration(WORKLOAD_CALL_TIMEOUT_FLAG),
            Ok(WORKLOAD_CALL_TIMEOUT)
        );
        assert_eq!(
            parse_duration(REPORT_CALL_TIMEOUT_FLAG),
            Ok(REPORT_CALL_TIMEOUT)
        );
        assert_eq!(
            crate::cli::parse_bytes(MAX_RESPONSE_BYTES_FLAG),
            Ok(MAX_RESPONSE_BYTES)
        );
    }
}
