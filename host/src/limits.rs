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
/// Open loop: requests in flight before sends wait (`--max-in-flight`);
/// protects the client machine's memory and file descriptors.
pub const MAX_IN_FLIGHT: usize = 10_000;

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
