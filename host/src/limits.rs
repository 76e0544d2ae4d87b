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
/// Phases one workload may declare: each holds histograms and telemetry
/// snapshots (~1.7 MB of host memory); the built-in workloads use at most 6.
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
    }
}
