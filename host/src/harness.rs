//! What running sparkhost itself cost: CPU time, peak memory, and how long
//! after start the first request went out. Reported with every run so a
//! reader can see the client was not the bottleneck.

use std::sync::OnceLock;
use std::time::Instant;

use serde::Serialize;

static PROCESS_START: OnceLock<Instant> = OnceLock::new();

/// Call first thing in `main`; later calls keep the first instant.
pub fn mark_start() -> Instant {
    *PROCESS_START.get_or_init(Instant::now)
}

pub fn process_start() -> Instant {
    mark_start()
}

#[derive(Debug, Clone, Serialize, serde::Deserialize, schemars::JsonSchema, Default)]
#[serde(default)]
pub struct HarnessCost {
    /// User + system CPU at ns resolution (the process CPU clock); the split
    /// below comes from procfs in 10 ms ticks, too coarse for short runs.
    pub cpu_s: Option<f64>,
    pub cpu_user_s: Option<f64>,
    pub cpu_system_s: Option<f64>,
    pub peak_rss_kib: Option<u64>,
    /// From process start to the first request's send.
    pub first_send_after_start_ms: Option<f64>,
    /// Whether the workload's compiled form came from the cache.
    pub workload_from_cache: Option<bool>,
}

/// Reads this process's CPU time and peak RSS.
pub fn measure(first_send: Option<Instant>, workload_from_cache: Option<bool>) -> HarnessCost {
    let cpu = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    let mut c = HarnessCost {
        cpu_s: Some(cpu.tv_sec as f64 + cpu.tv_nsec as f64 / 1e9),
        first_send_after_start_ms: first_send
            .map(|t| t.saturating_duration_since(process_start()).as_secs_f64() * 1e3),
        workload_from_cache,
        ..Default::default()
    };
    if let Ok(me) = procfs::process::Process::myself() {
        let tps = procfs::ticks_per_second() as f64;
        if let Ok(stat) = me.stat() {
            c.cpu_user_s = Some(stat.utime as f64 / tps);
            c.cpu_system_s = Some(stat.stime as f64 / tps);
        }
        if let Ok(status) = me.status() {
            c.peak_rss_kib = status.vmhwm;
        }
    }
    c
}
