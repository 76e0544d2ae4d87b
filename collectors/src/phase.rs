//! Snapshots at phase boundaries and the per-phase artifacts computed from two
//! of them. Everything here is a pure function of the snapshots, except the
//! writer at the end.
//!
//! Files under `<run_dir>/phase_deltas/` (seed names kept):
//! - `phase_<name>_kvbm_metrics_{start,end,delta}.json` ([`crate::kvbm`] says
//!   which seed fields were dropped and why);
//! - `phase_<name>_os_io_{start,end,delta}.json`: the seed's fields
//!   (`block_device`, `block_device_stats`, `block_device_delta`,
//!   `worker_process_pattern`, `worker_process_io[_delta]` with cgroup fields and
//!   top readers/writers) plus every configured device, `iostat`-style averages
//!   over the phase, host-wide top readers/writers and memory/page-cache deltas.
//!   The seed's `docker exec` probe is gone: container processes are visible in
//!   the host's `/proc`, so `source_*` is always `host_proc`;
//! - new: `phase_<name>_nvme_smart_{start,end}.json`, `phase_<name>_nvme_delta.json`,
//!   `phase_<name>_gpu_delta.json`, `phase_<name>_frontend_metrics_delta.json`
//!   (server TTFT/ITL/e2e distributions from bucket deltas),
//!   `phase_<name>_worker_metrics_delta.json`, and raw scrapes under `raw/`.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::common::{Reading, file_safe, write_json};
use crate::diskstats::{self, DiskDelta, DiskStat, IoStat};
use crate::gpu::{GpuPhaseStats, GpuSample, GpuSnapshot};
use crate::kvbm::{KvbmDelta, KvbmSnapshot};
use crate::logs::DirSummary;
use crate::memory::{MemoryDelta, MemorySnapshot};
use crate::nvme::{SmartDelta, SmartLog};
use crate::procio::{CgroupDelta, CgroupIo, ProcIo, ProcIoDelta, ProcSnapshot, TopEntry};
use crate::prometheus::delta::{
    Distribution, SeriesDelta, counter_deltas, histogram_family_delta, merge_deltas,
};
use crate::prometheus::http::Scrape;
use crate::prometheus::{Exposition, MetricType};
use crate::verdict::PhaseEvidence;

/// Everything read at one instant (a phase boundary).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Snapshot {
    pub label: String,
    pub timestamp_utc: String,
    /// Seconds since the session started (monotonic), to line up with timelines.
    pub elapsed_s: f64,
    /// Configured block devices (absent ones listed in `block_device_errors`).
    pub block_devices: Reading<BTreeMap<String, DiskStat>>,
    pub block_device_errors: Vec<String>,
    pub processes: Reading<ProcSnapshot>,
    /// Every process's I/O, for host-wide top readers/writers.
    #[serde(skip)]
    pub host_processes: Reading<Vec<ProcIo>>,
    pub cgroup: Reading<CgroupIo>,
    pub memory: Reading<MemorySnapshot>,
    pub gpu: Reading<GpuSnapshot>,
    pub nvme: Reading<SmartLog>,
    pub kvbm: Option<KvbmSnapshot>,
    pub frontend: Option<Scrape>,
    pub worker: Option<Scrape>,
    pub kv_cache_dir: Reading<DirSummary>,
    /// `MAJ:MIN` → device name, for cgroup per-device tables.
    #[serde(skip)]
    pub device_names: HashMap<String, String>,
}

/// `block_device_stats` in the seed's shape.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SeedBlockStats {
    pub read_ios: u64,
    pub read_sectors: u64,
    pub write_ios: u64,
    pub write_sectors: u64,
    pub timestamp_utc: String,
}

/// `worker_process_io` at a boundary.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct WorkerProcessIo {
    pub available: bool,
    pub reason: Option<String>,
    pub source: String,
    pub attribution_sources: Vec<String>,
    pub matched_pids: Vec<u32>,
    pub read_bytes: u64,
    pub write_bytes: u64,
    pub processes: Vec<ProcIo>,
    pub cgroup: Reading<CgroupIo>,
}

/// `phase_<name>_os_io_{start,end}.json`.
#[derive(Debug, Clone, Serialize)]
pub struct OsIoSnapshot {
    pub phase: String,
    pub label: String,
    pub timestamp_utc: String,
    pub block_device: Option<String>,
    pub block_device_stats: Option<SeedBlockStats>,
    pub block_devices: Reading<BTreeMap<String, DiskStat>>,
    pub block_device_errors: Vec<String>,
    pub worker_process_pattern: Option<String>,
    pub worker_process_io: WorkerProcessIo,
    pub memory: Reading<MemorySnapshot>,
    pub kv_cache_dir: Reading<DirSummary>,
}

fn attribution_sources(s: &Snapshot) -> Vec<String> {
    let mut v = Vec::new();
    if s.processes.get().is_some_and(|p| !p.processes.is_empty()) {
        v.push("host_proc".to_string());
    }
    if s.cgroup.available {
        v.push("cgroup".to_string());
    }
    v
}

pub fn os_io_snapshot(phase: &str, s: &Snapshot, primary: Option<&str>) -> OsIoSnapshot {
    let stats = primary
        .and_then(|d| s.block_devices.get().and_then(|m| m.get(d)))
        .map(|d| SeedBlockStats {
            read_ios: d.reads_completed,
            read_sectors: d.sectors_read,
            write_ios: d.writes_completed,
            write_sectors: d.sectors_written,
            timestamp_utc: s.timestamp_utc.clone(),
        });
    let procs = s.processes.get();
    OsIoSnapshot {
        phase: phase.to_string(),
        label: s.label.clone(),
        timestamp_utc: s.timestamp_utc.clone(),
        block_device: primary.map(str::to_string),
        block_device_stats: stats,
        block_devices: s.block_devices.clone(),
        block_device_errors: s.block_device_errors.clone(),
        worker_process_pattern: procs.and_then(|p| p.pattern.clone()),
        worker_process_io: WorkerProcessIo {
            available: s.processes.available,
            reason: s.processes.reason.clone(),
            source: "host_proc".into(),
            attribution_sources: attribution_sources(s),
            matched_pids: procs.map(|p| p.matched_pids.clone()).unwrap_or_default(),
            read_bytes: procs
                .map(|p| p.processes.iter().filter_map(|x| x.read_bytes).sum())
                .unwrap_or(0),
            write_bytes: procs
                .map(|p| p.processes.iter().filter_map(|x| x.write_bytes).sum())
                .unwrap_or(0),
            processes: procs.map(|p| p.processes.clone()).unwrap_or_default(),
            cgroup: s.cgroup.clone(),
        },
        memory: s.memory.clone(),
        kv_cache_dir: s.kv_cache_dir.clone(),
    }
}

/// The seed's `block_device_delta`, plus phase-average iostat.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BlockDeviceDelta {
    pub read_ios_delta: u64,
    pub write_ios_delta: u64,
    pub read_bytes_delta: u64,
    pub write_bytes_delta: u64,
    pub read_mib_delta: f64,
    pub write_mib_delta: f64,
    pub before: DiskStat,
    pub after: DiskStat,
    pub detail: DiskDelta,
    /// `iostat -x` over the whole phase (averages).
    pub iostat: IoStat,
}

/// The seed's `worker_process_io_delta`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct WorkerProcessIoDelta {
    pub available: bool,
    pub reason: Option<String>,
    pub source_before: String,
    pub source_after: String,
    pub attribution_sources_before: Vec<String>,
    pub attribution_sources_after: Vec<String>,
    pub matched_pids_before: Vec<u32>,
    pub matched_pids_after: Vec<u32>,
    pub read_bytes_delta: u64,
    pub write_bytes_delta: u64,
    pub read_mib_delta: f64,
    pub write_mib_delta: f64,
    pub cgroup_source_before: Option<String>,
    pub cgroup_source_after: Option<String>,
    pub cgroup_read_bytes_delta: Option<u64>,
    pub cgroup_write_bytes_delta: Option<u64>,
    pub cgroup_read_mib_delta: Option<f64>,
    pub cgroup_write_mib_delta: Option<f64>,
    pub cgroup_error: Option<String>,
    pub top_writers: Vec<TopEntry>,
    pub top_readers: Vec<TopEntry>,
    /// CPU, process churn and unreadable processes (see [`ProcIoDelta`]).
    pub process_detail: Option<ProcIoDelta>,
    pub cgroup_detail: Option<CgroupDelta>,
}

/// `phase_<name>_os_io_delta.json`.
#[derive(Debug, Clone, Serialize)]
pub struct OsIoDelta {
    pub phase: String,
    pub duration_s: f64,
    pub block_device: Option<String>,
    pub block_device_delta: Option<BlockDeviceDelta>,
    pub block_devices_delta: BTreeMap<String, BlockDeviceDelta>,
    pub block_device_errors: Vec<String>,
    pub worker_process_pattern: Option<String>,
    pub worker_process_io_delta: WorkerProcessIoDelta,
    /// All processes on the host: I/O the worker did not do shows up here.
    pub host_top_writers: Vec<TopEntry>,
    pub host_top_readers: Vec<TopEntry>,
    pub memory_delta: Option<MemoryDelta>,
    pub kv_cache_dir_before: Option<DirSummary>,
    pub kv_cache_dir_after: Option<DirSummary>,
}

fn block_delta(b: &DiskStat, a: &DiskStat, secs: f64) -> BlockDeviceDelta {
    let d = diskstats::delta(b, a);
    BlockDeviceDelta {
        read_ios_delta: d.read_ios_delta,
        write_ios_delta: d.write_ios_delta,
        read_bytes_delta: d.read_bytes_delta,
        write_bytes_delta: d.write_bytes_delta,
        read_mib_delta: d.read_mib_delta,
        write_mib_delta: d.write_mib_delta,
        before: b.clone(),
        after: a.clone(),
        detail: d,
        iostat: diskstats::iostat(b, a, secs),
    }
}

pub fn os_io_delta(
    phase: &str,
    b: &Snapshot,
    a: &Snapshot,
    primary: Option<&str>,
    top_n: usize,
) -> OsIoDelta {
    let secs = (a.elapsed_s - b.elapsed_s).max(0.0);
    let mut devs = BTreeMap::new();
    if let (Some(bm), Some(am)) = (b.block_devices.get(), a.block_devices.get()) {
        for (name, ad) in am {
            if let Some(bd) = bm.get(name) {
                devs.insert(name.clone(), block_delta(bd, ad, secs));
            }
        }
    }
    let mut errors = a.block_device_errors.clone();
    if let Some(r) = a.block_devices.reason.clone() {
        errors.push(r);
    }
    let mut w = WorkerProcessIoDelta {
        source_before: "host_proc".into(),
        source_after: "host_proc".into(),
        attribution_sources_before: attribution_sources(b),
        attribution_sources_after: attribution_sources(a),
        ..Default::default()
    };
    match (b.processes.get(), a.processes.get()) {
        (Some(pb), Some(pa)) => {
            let d = crate::procio::delta(pb, pa, top_n);
            w.available = true;
            w.matched_pids_before = d.matched_pids_before.clone();
            w.matched_pids_after = d.matched_pids_after.clone();
            w.read_bytes_delta = d.read_bytes_delta;
            w.write_bytes_delta = d.write_bytes_delta;
            w.read_mib_delta = d.read_mib_delta;
            w.write_mib_delta = d.write_mib_delta;
            w.top_writers = d.top_writers.clone();
            w.top_readers = d.top_readers.clone();
            w.process_detail = Some(d);
        }
        _ => {
            w.reason = a
                .processes
                .reason
                .clone()
                .or_else(|| b.processes.reason.clone());
        }
    }
    match (b.cgroup.get(), a.cgroup.get()) {
        (Some(cb), Some(ca)) => {
            let names = if a.device_names.is_empty() {
                &b.device_names
            } else {
                &a.device_names
            };
            let d = crate::procio::cgroup_delta(cb, ca, names);
            w.cgroup_source_before = Some(cb.source.clone());
            w.cgroup_source_after = Some(ca.source.clone());
            w.cgroup_read_bytes_delta = Some(d.read_bytes_delta);
            w.cgroup_write_bytes_delta = Some(d.write_bytes_delta);
            w.cgroup_read_mib_delta = Some(d.read_mib_delta);
            w.cgroup_write_mib_delta = Some(d.write_mib_delta);
            w.cgroup_detail = Some(d);
        }
        _ => w.cgroup_error = a.cgroup.reason.clone().or_else(|| b.cgroup.reason.clone()),
    }
    let (host_top_writers, host_top_readers) =
        match (b.host_processes.get(), a.host_processes.get()) {
            (Some(hb), Some(ha)) => crate::procio::top_tables(hb, ha, top_n),
            _ => (Vec::new(), Vec::new()),
        };
    OsIoDelta {
        phase: phase.to_string(),
        duration_s: crate::common::round3(secs),
        block_device: primary.map(str::to_string),
        block_device_delta: primary.and_then(|p| devs.get(p).cloned()),
        block_devices_delta: devs,
        block_device_errors: errors,
        worker_process_pattern: a.processes.get().and_then(|p| p.pattern.clone()),
        worker_process_io_delta: w,
        host_top_writers,
        host_top_readers,
        memory_delta: match (b.memory.get(), a.memory.get()) {
            (Some(mb), Some(ma)) => Some(crate::memory::delta(mb, ma)),
            _ => None,
        },
        kv_cache_dir_before: b.kv_cache_dir.get().cloned(),
        kv_cache_dir_after: a.kv_cache_dir.get().cloned(),
    }
}

/// `phase_<name>_nvme_delta.json`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NvmeDelta {
    pub available: bool,
    pub reason: Option<String>,
    pub delta: Option<SmartDelta>,
}

pub fn nvme_delta(b: &Snapshot, a: &Snapshot) -> NvmeDelta {
    match (b.nvme.get(), a.nvme.get()) {
        (Some(x), Some(y)) => NvmeDelta {
            available: true,
            reason: None,
            delta: Some(crate::nvme::smart_delta(x, y)),
        },
        _ => NvmeDelta {
            reason: a.nvme.reason.clone().or_else(|| b.nvme.reason.clone()),
            ..Default::default()
        },
    }
}

/// `phase_<name>_gpu_delta.json`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct GpuDelta {
    pub available: bool,
    pub reason: Option<String>,
    pub devices: Vec<GpuPhaseStats>,
    /// Max GPU memory per PID seen during the phase.
    pub process_memory_max_bytes: BTreeMap<u32, u64>,
}

pub fn gpu_delta(b: &Snapshot, a: &Snapshot, timeline: &[(f64, GpuSample)]) -> GpuDelta {
    let (Some(gb), Some(ga)) = (b.gpu.get(), a.gpu.get()) else {
        return GpuDelta {
            reason: a.gpu.reason.clone().or_else(|| b.gpu.reason.clone()),
            ..Default::default()
        };
    };
    let inside: Vec<&GpuSample> = timeline
        .iter()
        .filter(|(t, _)| *t >= b.elapsed_s && *t <= a.elapsed_s)
        .map(|(_, s)| s)
        .chain(gb.devices.iter())
        .chain(ga.devices.iter())
        .collect();
    let mut procs: BTreeMap<u32, u64> = BTreeMap::new();
    for s in &inside {
        for p in &s.processes {
            if let Some(m) = p.used_memory_bytes {
                let e = procs.entry(p.pid).or_insert(0);
                *e = (*e).max(m);
            }
        }
    }
    GpuDelta {
        available: true,
        reason: None,
        devices: ga
            .devices
            .iter()
            .map(|d| {
                let start = gb.devices.iter().find(|x| x.index == d.index);
                crate::gpu::phase_stats(&inside, start, Some(d), d.index)
            })
            .collect(),
        process_memory_max_bytes: procs,
    }
}

/// Generic counter and histogram deltas for one Prometheus endpoint.
#[derive(Debug, Clone, Default, Serialize)]
pub struct MetricsDelta {
    pub available: bool,
    pub reason: Option<String>,
    pub url: Option<String>,
    pub counters: Vec<SeriesDelta>,
    /// Family → label key → distribution in the family's own unit.
    pub histograms: BTreeMap<String, BTreeMap<String, Distribution>>,
    pub counter_resets: Vec<String>,
}

/// The expositions before and after, and the URL of the one after; or why
/// there is no pair.
fn scrape_pair<'a>(
    b: &'a Option<Scrape>,
    a: &'a Option<Scrape>,
) -> Result<(&'a Exposition, &'a Exposition, &'a str), String> {
    let (Some(x), Some(y)) = (b, a) else {
        return Err("not scraped".into());
    };
    match (&x.expo, &y.expo) {
        (Some(eb), Some(ea)) if x.success && y.success => Ok((eb, ea, y.url.as_str())),
        _ => Err(y
            .error
            .clone()
            .or_else(|| x.error.clone())
            .unwrap_or_else(|| "scrape failed".into())),
    }
}

pub fn metrics_delta(b: &Option<Scrape>, a: &Option<Scrape>) -> MetricsDelta {
    let (eb, ea, url) = match scrape_pair(b, a) {
        Ok(p) => p,
        Err(reason) => {
            return MetricsDelta {
                reason: Some(reason),
                url: a.as_ref().map(|s| s.url.clone()),
                ..Default::default()
            };
        }
    };
    let counters = counter_deltas(eb, ea);
    let mut histograms = BTreeMap::new();
    for f in ea
        .families
        .iter()
        .filter(|f| f.kind == MetricType::Histogram)
    {
        let per: BTreeMap<String, Distribution> = histogram_family_delta(eb, ea, &f.name)
            .into_iter()
            .map(|d| (d.labels.key(), d.distribution(1.0)))
            .collect();
        histograms.insert(f.name.clone(), per);
    }
    MetricsDelta {
        available: true,
        reason: None,
        url: Some(url.to_string()),
        counter_resets: counters
            .iter()
            .filter(|c| c.reset)
            .map(|c| format!("{}{{{}}}", c.name, c.labels.key()))
            .collect(),
        counters,
        histograms,
    }
}

/// `phase_<name>_frontend_metrics_delta.json`: the frontend's view of the phase,
/// to set beside the client's. Latencies in ms, merged over models (each model
/// also listed); quantiles are bucket estimates.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FrontendDelta {
    pub available: bool,
    pub reason: Option<String>,
    pub url: Option<String>,
    pub requests_delta: Option<f64>,
    pub requests_by_status_delta: BTreeMap<String, f64>,
    pub output_tokens_delta: Option<f64>,
    pub ttft_ms: Option<Distribution>,
    pub itl_ms: Option<Distribution>,
    pub request_duration_ms: Option<Distribution>,
    pub input_sequence_tokens: Option<Distribution>,
    pub output_sequence_tokens: Option<Distribution>,
    pub cached_tokens: Option<Distribution>,
    /// `dynamo_frontend_model_kv_cache_block_size` at the phase end (the
    /// largest over models): turns KVBM's block counts into tokens.
    pub kv_block_size_tokens: Option<f64>,
    pub per_model: BTreeMap<String, BTreeMap<String, Distribution>>,
    pub counter_resets: Vec<String>,
    pub errors: Vec<String>,
}

pub const FRONTEND_HISTOGRAMS: &[(&str, &str, f64)] = &[
    (
        "ttft_ms",
        "dynamo_frontend_time_to_first_token_seconds",
        1000.0,
    ),
    (
        "itl_ms",
        "dynamo_frontend_inter_token_latency_seconds",
        1000.0,
    ),
    (
        "request_duration_ms",
        "dynamo_frontend_request_duration_seconds",
        1000.0,
    ),
    (
        "input_sequence_tokens",
        "dynamo_frontend_input_sequence_tokens",
        1.0,
    ),
    (
        "output_sequence_tokens",
        "dynamo_frontend_output_sequence_tokens",
        1.0,
    ),
    ("cached_tokens", "dynamo_frontend_cached_tokens", 1.0),
];

pub fn frontend_delta(b: &Option<Scrape>, a: &Option<Scrape>) -> FrontendDelta {
    let (eb, ea, url) = match scrape_pair(b, a) {
        Ok(p) => p,
        Err(reason) => {
            return FrontendDelta {
                reason: Some(reason),
                url: a.as_ref().map(|s| s.url.clone()),
                ..Default::default()
            };
        }
    };
    let mut out = FrontendDelta {
        available: true,
        url: Some(url.to_string()),
        ..Default::default()
    };
    let counters = counter_deltas(eb, ea);
    let req: Vec<&SeriesDelta> = counters
        .iter()
        .filter(|c| c.name == "dynamo_frontend_requests_total")
        .collect();
    if !req.is_empty() {
        out.requests_delta = Some(req.iter().map(|c| c.delta).sum());
        for c in &req {
            *out.requests_by_status_delta
                .entry(c.labels.get("status").unwrap_or("").to_string())
                .or_insert(0.0) += c.delta;
        }
    }
    let tok: Vec<&SeriesDelta> = counters
        .iter()
        .filter(|c| c.name == "dynamo_frontend_output_tokens_total")
        .collect();
    if !tok.is_empty() {
        out.output_tokens_delta = Some(tok.iter().map(|c| c.delta).sum());
    }
    out.kv_block_size_tokens = ea
        .samples()
        .filter(|(_, s)| s.name == "dynamo_frontend_model_kv_cache_block_size")
        .map(|(_, s)| s.value)
        .reduce(f64::max);
    out.counter_resets = counters
        .iter()
        .filter(|c| c.reset && c.name.starts_with("dynamo_frontend_"))
        .map(|c| format!("{}{{{}}}", c.name, c.labels.key()))
        .collect();
    for (key, family, scale) in FRONTEND_HISTOGRAMS {
        let ds = histogram_family_delta(eb, ea, family);
        for d in &ds {
            let model = d.labels.get("model").unwrap_or("").to_string();
            out.per_model
                .entry(model)
                .or_default()
                .insert(key.to_string(), d.distribution(*scale));
        }
        let merged = match merge_deltas(&ds) {
            Ok(m) => m.map(|m| m.distribution(*scale)),
            Err(e) => {
                out.errors.push(e);
                None
            }
        };
        match *key {
            "ttft_ms" => out.ttft_ms = merged,
            "itl_ms" => out.itl_ms = merged,
            "request_duration_ms" => out.request_duration_ms = merged,
            "input_sequence_tokens" => out.input_sequence_tokens = merged,
            "output_sequence_tokens" => out.output_sequence_tokens = merged,
            _ => out.cached_tokens = merged,
        }
    }
    out
}

/// Everything computed for one phase; what `Session::phase_deltas` returns.
#[derive(Debug, Clone, Serialize)]
pub struct PhaseDeltas {
    pub phase: String,
    pub start_label: String,
    pub end_label: String,
    pub duration_s: f64,
    pub kvbm: KvbmDelta,
    pub os_io: OsIoDelta,
    pub nvme: NvmeDelta,
    pub gpu: GpuDelta,
    pub frontend: FrontendDelta,
    pub worker: MetricsDelta,
    /// Files written, and any that could not be.
    pub files: Vec<PathBuf>,
    pub write_errors: Vec<String>,
}

/// Computes a phase's deltas. `primary_device` is the KV disk's block device;
/// its bytes become the verdict's disk evidence.
pub fn compute(
    phase: &str,
    start: &Snapshot,
    end: &Snapshot,
    primary_device: Option<&str>,
    top_n: usize,
    gpu_timeline: &[(f64, GpuSample)],
) -> PhaseDeltas {
    PhaseDeltas {
        phase: phase.to_string(),
        start_label: start.label.clone(),
        end_label: end.label.clone(),
        duration_s: crate::common::round3((end.elapsed_s - start.elapsed_s).max(0.0)),
        kvbm: crate::kvbm::delta(start.kvbm.as_ref(), end.kvbm.as_ref()),
        os_io: os_io_delta(phase, start, end, primary_device, top_n),
        nvme: nvme_delta(start, end),
        gpu: gpu_delta(start, end, gpu_timeline),
        frontend: frontend_delta(&start.frontend, &end.frontend),
        worker: metrics_delta(&start.worker, &end.worker),
        files: Vec::new(),
        write_errors: Vec::new(),
    }
}

impl PhaseDeltas {
    /// The verdict's view of this phase. Disk bytes are the primary block
    /// device's (the KV disk); SMART bytes stand in when diskstats has none.
    pub fn evidence(&self) -> PhaseEvidence {
        let k = &self.kvbm;
        let dev = self.os_io.block_device_delta.as_ref();
        let smart = self.nvme.delta.as_ref();
        let proc = &self.os_io.worker_process_io_delta;
        // No matched process reads as 0 bytes, which is not the worker's I/O.
        let worker = proc.available && !proc.matched_pids_after.is_empty();
        let f = &self.frontend;
        PhaseEvidence {
            phase: self.phase.clone(),
            kvbm_available: k.available,
            offload_d2h: k.kvbm_offload_blocks_d2h_delta,
            offload_h2d: k.kvbm_offload_blocks_h2d_delta,
            offload_d2d: k.kvbm_offload_blocks_d2d_delta,
            onboard_h2d: k.kvbm_onboard_blocks_h2d_delta,
            onboard_d2d: k.kvbm_onboard_blocks_d2d_delta,
            onboard_d2h: k.kvbm_onboard_blocks_d2h_delta,
            naming: k.naming,
            matched_tokens: k.kvbm_matched_tokens_delta,
            host_hit_rate_after: k.kvbm_host_cache_hit_rate_after,
            disk_hit_rate_after: k.kvbm_disk_cache_hit_rate_after,
            device_read_bytes: dev.map(|d| d.read_bytes_delta),
            device_write_bytes: dev.map(|d| d.write_bytes_delta),
            nvme_read_bytes: smart.map(|d| d.bytes_read_delta),
            nvme_write_bytes: smart.map(|d| d.bytes_written_delta),
            process_read_bytes: worker.then_some(proc.read_bytes_delta),
            process_write_bytes: worker.then_some(proc.write_bytes_delta),
            cgroup_read_bytes: proc.cgroup_read_bytes_delta,
            cgroup_write_bytes: proc.cgroup_write_bytes_delta,
            frontend_cached_tokens: f.cached_tokens.as_ref().and_then(|d| d.sum),
            frontend_input_tokens: f.input_sequence_tokens.as_ref().and_then(|d| d.sum),
            kv_block_size_tokens: f.kv_block_size_tokens,
            client: None,
        }
    }
}

/// NVMe SMART at a boundary (`phase_<name>_nvme_smart_{start,end}.json`).
#[derive(Debug, Clone, Serialize)]
pub struct NvmeBoundary<'a> {
    pub phase: &'a str,
    pub label: &'a str,
    pub timestamp_utc: &'a str,
    pub smart: &'a Reading<SmartLog>,
}

/// Writes the phase's files; failures are collected, not raised.
pub fn write(
    dir: &Path,
    d: &mut PhaseDeltas,
    start: &Snapshot,
    end: &Snapshot,
    primary: Option<&str>,
    raw: bool,
) {
    let base = format!("phase_{}", file_safe(&d.phase));
    let mut out: Vec<(PathBuf, std::io::Result<()>)> = Vec::new();
    let mut put = |name: String, r: std::io::Result<()>| out.push((dir.join(name), r));
    let ks = |s: &Snapshot, lbl: &str| {
        s.kvbm
            .clone()
            .unwrap_or_else(|| KvbmSnapshot::unavailable(lbl, "kvbm metrics collection is off"))
    };
    put(
        format!("{base}_kvbm_metrics_start.json"),
        write_json(
            &dir.join(format!("{base}_kvbm_metrics_start.json")),
            &ks(start, &start.label),
        ),
    );
    put(
        format!("{base}_kvbm_metrics_end.json"),
        write_json(
            &dir.join(format!("{base}_kvbm_metrics_end.json")),
            &ks(end, &end.label),
        ),
    );
    put(
        format!("{base}_kvbm_metrics_delta.json"),
        write_json(
            &dir.join(format!("{base}_kvbm_metrics_delta.json")),
            &d.kvbm,
        ),
    );
    put(
        format!("{base}_os_io_start.json"),
        write_json(
            &dir.join(format!("{base}_os_io_start.json")),
            &os_io_snapshot(&d.phase, start, primary),
        ),
    );
    put(
        format!("{base}_os_io_end.json"),
        write_json(
            &dir.join(format!("{base}_os_io_end.json")),
            &os_io_snapshot(&d.phase, end, primary),
        ),
    );
    put(
        format!("{base}_os_io_delta.json"),
        write_json(&dir.join(format!("{base}_os_io_delta.json")), &d.os_io),
    );
    for (s, suffix) in [(start, "start"), (end, "end")] {
        let b = NvmeBoundary {
            phase: &d.phase,
            label: &s.label,
            timestamp_utc: &s.timestamp_utc,
            smart: &s.nvme,
        };
        put(
            format!("{base}_nvme_smart_{suffix}.json"),
            write_json(&dir.join(format!("{base}_nvme_smart_{suffix}.json")), &b),
        );
    }
    put(
        format!("{base}_nvme_delta.json"),
        write_json(&dir.join(format!("{base}_nvme_delta.json")), &d.nvme),
    );
    put(
        format!("{base}_gpu_delta.json"),
        write_json(&dir.join(format!("{base}_gpu_delta.json")), &d.gpu),
    );
    put(
        format!("{base}_frontend_metrics_delta.json"),
        write_json(
            &dir.join(format!("{base}_frontend_metrics_delta.json")),
            &d.frontend,
        ),
    );
    put(
        format!("{base}_worker_metrics_delta.json"),
        write_json(
            &dir.join(format!("{base}_worker_metrics_delta.json")),
            &d.worker,
        ),
    );
    if raw {
        for (src, b, a) in [
            ("frontend", start.frontend.as_ref(), end.frontend.as_ref()),
            ("worker", start.worker.as_ref(), end.worker.as_ref()),
        ] {
            for (s, suffix) in [(b, "start"), (a, "end")] {
                if let Some(body) = s.and_then(|s| s.body.as_ref()) {
                    let name = format!("raw/{base}_{src}_{suffix}.prom");
                    let p = dir.join(&name);
                    let r = p
                        .parent()
                        .map(std::fs::create_dir_all)
                        .transpose()
                        .and_then(|_| std::fs::write(&p, body));
                    put(name, r);
                }
            }
        }
        for (s, suffix) in [(start, "start"), (end, "end")] {
            if let Some(body) = s.kvbm.as_ref().and_then(|k| k.raw.as_ref()) {
                let name = format!("raw/{base}_kvbm_{suffix}.prom");
                let p = dir.join(&name);
                let r = p
                    .parent()
                    .map(std::fs::create_dir_all)
                    .transpose()
                    .and_then(|_| std::fs::write(&p, body));
                put(name, r);
            }
        }
    }
    for (p, r) in out {
        match r {
            Ok(()) => d.files.push(p),
            Err(e) => d.write_errors.push(format!("{}: {e}", p.display())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prometheus::parse;

    fn scrape(text: &str) -> Option<Scrape> {
        Some(Scrape {
            url: "http://127.0.0.1:8000/metrics".into(),
            success: true,
            expo: Some(parse(text).unwrap()),
            body: Some(text.into()),
            ..Default::default()
        })
    }

    fn hist(name: &str, model: &str, n1: u32, n2: u32, sum: f64) -> String {
        format!(
            "# TYPE {name} histogram\n{name}_bucket{{model=\"{model}\",le=\"0.1\"}} {n1}\n{name}_bucket{{model=\"{model}\",le=\"1\"}} {n2}\n{name}_bucket{{model=\"{model}\",le=\"+Inf\"}} {n2}\n{name}_sum{{model=\"{model}\"}} {sum}\n{name}_count{{model=\"{model}\"}} {n2}\n"
        )
    }

    #[test]
    fn frontend_phase_distribution_comes_from_bucket_deltas() {
        let ttft = "dynamo_frontend_time_to_first_token_seconds";
        let b = scrape(
            &(hist(ttft, "m", 10, 10, 0.5)
                + "# TYPE dynamo_frontend_requests_total counter\ndynamo_frontend_requests_total{model=\"m\",status=\"success\"} 10\n"),
        );
        let a = scrape(
            &(hist(ttft, "m", 10, 30, 10.5)
                + "# TYPE dynamo_frontend_requests_total counter\ndynamo_frontend_requests_total{model=\"m\",status=\"success\"} 28\ndynamo_frontend_requests_total{model=\"m\",status=\"error\"} 2\n"),
        );
        let d = frontend_delta(&b, &a);
        assert!(d.available);
        assert_eq!(d.requests_delta, Some(20.0));
        assert_eq!(d.requests_by_status_delta["error"], 2.0);
        let t = d.ttft_ms.unwrap();
        assert_eq!(t.count, 20.0);
        assert_eq!(t.mean, Some(500.0));
        assert_eq!(t.p50, Some(550.0)); // all 20 new in (100, 1000] ms
        assert!(d.per_model["m"].contains_key("ttft_ms"));
        let none = frontend_delta(&b, &None);
        assert!(!none.available);
    }

    #[test]
    fn real_fixture_frontend_delta_against_itself_is_empty() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/fixtures/dynamo/frontend_metrics.prom"
        ))
        .unwrap();
        let s = scrape(&text);
        let d = frontend_delta(&s, &s);
        assert_eq!(d.requests_delta, Some(0.0));
        assert_eq!(d.ttft_ms.as_ref().unwrap().count, 0.0);
        assert!(d.errors.is_empty(), "{:?}", d.errors);
        let w = metrics_delta(&s, &s);
        assert!(w.available && w.counters.iter().all(|c| c.delta == 0.0));
        assert!(
            w.histograms
                .contains_key("dynamo_frontend_request_duration_seconds")
        );
    }

    #[test]
    fn evidence_uses_primary_device_and_smart() {
        let mut a = Snapshot {
            label: "before_x".into(),
            ..Default::default()
        };
        let mut b = Snapshot {
            label: "after_x".into(),
            elapsed_s: 10.0,
            ..Default::default()
        };
        let dev = |w| DiskStat {
            name: "nvme0n1".into(),
            sectors_written: w,
            ..Default::default()
        };
        a.block_devices = Reading::ok(BTreeMap::from([("nvme0n1".to_string(), dev(0))]));
        b.block_devices = Reading::ok(BTreeMap::from([("nvme0n1".to_string(), dev(2048))]));
        let d = compute("x", &a, &b, Some("nvme0n1"), 5, &[]);
        let e = d.evidence();
        assert_eq!(e.device_write_bytes, Some(2048 * 512));
        assert_eq!(e.nvme_write_bytes, None);
        assert!(!e.kvbm_available);
        assert_eq!(
            d.os_io.block_device_delta.as_ref().unwrap().iostat.wkb_s,
            102.4
        );
        let dir = tempfile::tempdir().unwrap();
        let mut d = d;
        write(dir.path(), &mut d, &a, &b, Some("nvme0n1"), true);
        assert!(d.write_errors.is_empty(), "{:?}", d.write_errors);
        for f in [
            "phase_x_kvbm_metrics_start.json",
            "phase_x_kvbm_metrics_delta.json",
            "phase_x_os_io_end.json",
            "phase_x_os_io_delta.json",
            "phase_x_nvme_delta.json",
            "phase_x_gpu_delta.json",
            "phase_x_frontend_metrics_delta.json",
        ] {
            assert!(dir.path().join(f).exists(), "{f}");
        }
        let seed: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(dir.path().join("phase_x_os_io_delta.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(seed["block_device_delta"]["write_bytes_delta"], 2048 * 512);
        assert_eq!(seed["block_device_delta"]["write_mib_delta"], 1.0);
        assert_eq!(seed["worker_process_io_delta"]["available"], false);
    }
}
