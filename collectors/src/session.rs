//! The host's handle on telemetry for one run: a sampling thread writing
//! timelines, snapshots at phase boundaries, per-phase artifacts, and the
//! run-level NVMe and log captures.
//!
//! Lifecycle: [`Session::start`] → [`Session::snapshot`] before and after each
//! phase → [`Session::phase_deltas`] per phase → [`Session::stop`]. Nothing here
//! fails a run: a source that cannot be read is recorded as unavailable with a
//! reason in `telemetry/telemetry_report.json` and in each file.
//!
//! Timelines under `<run_dir>/telemetry/` (one row per source per interval;
//! rates are over the interval before the row's timestamp):
//! `os_iostat.csv`, `os_pid_io.csv`, `cgroup_io.csv`, `memory.csv`, `gpu.csv`,
//! `gpu_processes.csv`, `kvbm_metrics.csv`, and `phases.csv` (one row per
//! snapshot, to line phases up with the rest).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde::ser::SerializeMap;

use crate::common::{Cell, CsvWriter, round3, utc_now, write_json};
use crate::diskstats::{self, KvDisk};
use crate::logs::Capture;
use crate::nvme::{Identity, SmartDelta};
use crate::phase::{self, PhaseDeltas, Snapshot};
use crate::procio::CgroupTarget;
use crate::source::{
    At, Fill, Finish, GpuTimeline, Opened, Probe, Rows, Sampler, Source, SourceId,
};
use crate::{gpu, kvbm, logs, memory, nvme, procio, prometheus};

/// Which sources run. All on by default; each fails soft when it cannot work.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Collectors {
    off: BTreeSet<SourceId>,
}

impl Collectors {
    /// Only `ids` on (the CLI's `--only`).
    pub fn only(ids: impl IntoIterator<Item = SourceId>) -> Self {
        let on: BTreeSet<SourceId> = ids.into_iter().collect();
        Collectors {
            off: SourceId::ALL
                .into_iter()
                .filter(|id| !on.contains(id))
                .collect(),
        }
    }

    pub fn enabled(&self, id: SourceId) -> bool {
        !self.off.contains(&id)
    }

    pub fn set(&mut self, id: SourceId, on: bool) {
        if on {
            self.off.remove(&id);
        } else {
            self.off.insert(id);
        }
    }
}

/// `{"diskstats": true, …}` in [`SourceId::ALL`] order, as the struct of
/// booleans it replaced wrote it.
impl Serialize for Collectors {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(SourceId::ALL.len()))?;
        for id in SourceId::ALL {
            m.serialize_entry(id.as_str(), &self.enabled(id))?;
        }
        m.end()
    }
}

/// Filesystem roots, replaceable in tests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Roots {
    pub proc: PathBuf,
    pub sys: PathBuf,
    pub dev: PathBuf,
    pub cgroup: PathBuf,
}

impl Default for Roots {
    fn default() -> Self {
        Roots {
            proc: "/proc".into(),
            sys: "/sys".into(),
            dev: "/dev".into(),
            cgroup: "/sys/fs/cgroup".into(),
        }
    }
}

/// Session configuration. [`Config::new`] gives the seed harness's defaults.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    pub run_dir: PathBuf,
    /// Timeline sampling interval (seed: 1 s).
    pub interval: Duration,
    /// Block devices by `/proc/diskstats` name (seed: `nvme0n1`). Empty: every
    /// whole disk except loop/ram/zram.
    pub block_devices: Vec<String>,
    /// Worker processes by cmdline regex (seed: `dynamo\.trtllm`).
    pub process_pattern: Option<String>,
    pub pids: Vec<u32>,
    /// cgroup I/O source; when `None` and `container` is set, the container's cgroup.
    pub cgroup: Option<CgroupTarget>,
    /// Docker container for logs/inspect, cuFile logs and (by default) cgroup I/O.
    pub container: Option<String>,
    /// NVMe controller or namespace (seed: `/dev/nvme0`).
    pub nvme_device: Option<String>,
    /// KVBM metrics (seed: `http://127.0.0.1:6880/metrics`).
    pub kvbm_metrics_url: Option<String>,
    /// Worker system port (seed: `http://127.0.0.1:8081/metrics`).
    pub worker_metrics_url: Option<String>,
    /// Frontend metrics, normally `<endpoint>/metrics`.
    pub frontend_metrics_url: Option<String>,
    /// Per scrape at snapshots (seed: 3 s); timeline scrapes use at most 80% of the interval.
    pub metrics_timeout: Duration,
    /// KVBM disk cache directory (seed: `/mnt/nvme/kvbm`); also names the KV disk.
    pub kv_cache_dir: Option<PathBuf>,
    pub cufile_log_dirs: Vec<PathBuf>,
    pub collectors: Collectors,
    /// Length of top readers/writers lists (seed: 5).
    pub top_n: usize,
    /// Keep each boundary's raw Prometheus text under `phase_deltas/raw/`.
    pub save_raw_scrapes: bool,
    pub docker_timeout: Duration,
    pub roots: Roots,
}

pub const DEFAULT_KVBM_URL: &str = "http://127.0.0.1:6880/metrics";
pub const DEFAULT_WORKER_URL: &str = "http://127.0.0.1:8081/metrics";
pub const DEFAULT_PROCESS_PATTERN: &str = r"dynamo\.trtllm";
pub const DEFAULT_BLOCK_DEVICE: &str = "nvme0n1";
pub const DEFAULT_NVME_DEVICE: &str = "/dev/nvme0";
pub const DEFAULT_KV_CACHE_DIR: &str = "/mnt/nvme/kvbm";

impl Config {
    pub fn new(run_dir: impl Into<PathBuf>) -> Self {
        Config {
            run_dir: run_dir.into(),
            interval: Duration::from_secs(1),
            block_devices: vec![DEFAULT_BLOCK_DEVICE.into()],
            process_pattern: Some(DEFAULT_PROCESS_PATTERN.into()),
            pids: Vec::new(),
            cgroup: None,
            container: None,
            nvme_device: Some(DEFAULT_NVME_DEVICE.into()),
            kvbm_metrics_url: Some(DEFAULT_KVBM_URL.into()),
            worker_metrics_url: Some(DEFAULT_WORKER_URL.into()),
            frontend_metrics_url: None,
            metrics_timeout: Duration::from_secs(3),
            kv_cache_dir: Some(DEFAULT_KV_CACHE_DIR.into()),
            cufile_log_dirs: vec!["/var/log/cufile".into()],
            collectors: Collectors::default(),
            top_n: 5,
            save_raw_scrapes: true,
            docker_timeout: Duration::from_secs(10),
            roots: Roots::default(),
        }
    }

    /// `http://host:port` → `http://host:port/metrics` (the frontend serves both on one port).
    pub fn metrics_url_for_endpoint(endpoint: &str) -> String {
        format!("{}/metrics", endpoint.trim_end_matches('/'))
    }

    pub fn telemetry_dir(&self) -> PathBuf {
        self.run_dir.join("telemetry")
    }

    pub fn phase_dir(&self) -> PathBuf {
        self.run_dir.join("phase_deltas")
    }
}

/// What one source did this run.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SourceStatus {
    pub enabled: bool,
    pub available: bool,
    pub reason: Option<String>,
    pub timeline: Option<String>,
}

impl SourceStatus {
    fn new(enabled: bool, r: &Result<(), String>) -> Self {
        SourceStatus {
            enabled,
            available: enabled && r.is_ok(),
            reason: if enabled {
                r.clone().err()
            } else {
                Some(crate::source::DISABLED.into())
            },
            timeline: None,
        }
    }
}

/// The sampling thread's account of itself.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SamplerReport {
    pub ticks: u64,
    /// Ticks that started more than one interval late (host overloaded).
    pub late_ticks: u64,
    /// Rows written, by timeline file name.
    pub rows: BTreeMap<String, u64>,
    /// Per source id or timeline file name: (failed reads or writes, first error).
    pub errors: BTreeMap<String, (u64, String)>,
}

/// `telemetry/telemetry_report.json`, returned by [`Session::stop`].
#[derive(Debug, Clone, Serialize)]
pub struct TelemetryReport {
    pub started_utc: String,
    pub stopped_utc: String,
    pub interval_s: f64,
    pub config: Config,
    pub sources: BTreeMap<SourceId, SourceStatus>,
    /// The block device treated as the KV disk, and how it was chosen.
    pub kv_disk_device: Option<String>,
    pub kv_disk_device_source: String,
    pub sampler: SamplerReport,
    pub phases: Vec<String>,
    pub nvme_identity: Option<Identity>,
    pub nvme_run_delta: Option<SmartDelta>,
    pub captures: Vec<Capture>,
    pub warnings: Vec<String>,
    /// The `run_end` snapshot, for whole-run deltas against [`Session::run_start`].
    #[serde(skip)]
    pub run_end: Snapshot,
}

/// Every source but diskstats, whose probe also decides the KV disk. Probed
/// in parallel: a hung metrics port or docker call may take a whole timeout each.
const PROBES: [fn(&Probe<'_>) -> Opened; 10] = [
    procio::probe_processes,
    procio::probe_cgroup,
    memory::probe,
    gpu::probe,
    nvme::probe,
    kvbm::probe,
    prometheus::endpoint::probe_frontend,
    prometheus::endpoint::probe_worker,
    logs::probe_logs,
    logs::probe_kv_cache_dir,
];

/// Stands in for a source whose probe panicked, so the others still run.
struct Broken(SourceId);

impl Source for Broken {
    fn id(&self) -> SourceId {
        self.0
    }

    fn read(&self, _at: &At<'_>) -> Fill {
        Box::new(|_| {})
    }
}

struct Shared {
    cfg: Config,
    /// In [`SourceId::ALL`] order.
    sources: Vec<Box<dyn Source>>,
    started: Instant,
    gpu_timeline: GpuTimeline,
    warnings: Mutex<Vec<String>>,
}

impl Shared {
    fn warn(&self, w: String) {
        if let Ok(mut v) = self.warnings.lock() {
            v.push(w);
        }
    }

    fn elapsed(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }
}

pub struct Session {
    shared: Arc<Shared>,
    sources: BTreeMap<SourceId, SourceStatus>,
    kv_disk: KvDisk,
    started_utc: String,
    stop_tx: Option<mpsc::Sender<()>>,
    sampler: Option<JoinHandle<SamplerReport>>,
    run_start: Snapshot,
    phases: Mutex<Vec<String>>,
}

impl Session {
    /// Probes every source (NVMe identity and pre-run SMART are written
    /// here), takes the `run_start` snapshot and starts sampling.
    pub fn start(cfg: Config) -> Session {
        let started = Instant::now();
        let started_utc = utc_now();
        let mut warnings = Vec::new();
        if let Err(e) = std::fs::create_dir_all(cfg.telemetry_dir())
            .and_then(|_| std::fs::create_dir_all(cfg.phase_dir()))
        {
            warnings.push(format!("cannot create telemetry directories: {e}"));
        }
        let gpu_timeline = GpuTimeline::default();
        let probe = Probe {
            cfg: &cfg,
            gpu_timeline: &gpu_timeline,
        };
        let (disks, kv_disk) = diskstats::probe(&probe);
        let mut opened = vec![disks];
        opened.extend(thread::scope(|s| {
            let handles: Vec<_> = PROBES.iter().map(|f| s.spawn(|| f(&probe))).collect();
            handles
                .into_iter()
                .zip(&SourceId::ALL[1..])
                .map(|(h, &id)| {
                    h.join().unwrap_or_else(|_| {
                        Opened::new(Broken(id), true, Err("probe panicked".into()))
                    })
                })
                .collect::<Vec<_>>()
        }));
        let mut statuses = BTreeMap::new();
        let mut sources = Vec::with_capacity(opened.len());
        for o in opened {
            statuses.insert(o.source.id(), SourceStatus::new(o.enabled, &o.result));
            warnings.extend(o.warnings);
            sources.push(o.source);
        }
        let shared = Arc::new(Shared {
            cfg,
            sources,
            started,
            gpu_timeline,
            warnings: Mutex::new(warnings),
        });
        let mut session = Session {
            shared: shared.clone(),
            sources: statuses,
            kv_disk,
            started_utc,
            stop_tx: None,
            sampler: None,
            run_start: Snapshot::default(),
            phases: Mutex::new(Vec::new()),
        };
        session.run_start = session.snapshot("run_start");
        let tracks = open_tracks(&shared, &mut session.sources);
        let (tx, rx) = mpsc::channel();
        session.sampler = Some(
            thread::Builder::new()
                .name("sparkhost-telemetry".into())
                .spawn(move || sample_loop(shared, tracks, rx))
                .expect("spawn telemetry thread"),
        );
        session.stop_tx = Some(tx);
        session
    }

    pub fn sources(&self) -> &BTreeMap<SourceId, SourceStatus> {
        &self.sources
    }

    pub fn run_start(&self) -> &Snapshot {
        &self.run_start
    }

    /// The block device whose bytes count as KV disk I/O.
    pub fn kv_disk_device(&self) -> Option<&str> {
        self.kv_disk.device.as_deref()
    }

    /// Reads every source now, in parallel. Blocks for up to the metrics
    /// timeout; call it from a blocking context. Seed labels: `run_start`,
    /// `before_<phase>`, `after_<phase>`, `run_end`. Also appends to
    /// `kvbm_metrics_snapshots.jsonl` and `telemetry/phases.csv`.
    pub fn snapshot(&self, label: &str) -> Snapshot {
        let sh = &self.shared;
        let cfg = &sh.cfg;
        let at = At {
            cfg,
            label,
            warnings: &sh.warnings,
        };
        let fills: Vec<Fill> = thread::scope(|s| {
            let handles: Vec<_> = sh
                .sources
                .iter()
                .map(|src| s.spawn(|| src.read(&at)))
                .collect();
            // A read that panicked leaves its part at "not collected".
            handles.into_iter().filter_map(|h| h.join().ok()).collect()
        });
        // Stamped after the reads, as the seed did: after the slowest scrape.
        let elapsed_s = round3(sh.elapsed());
        let timestamp_utc = utc_now();
        let mut snap = Snapshot {
            label: label.to_string(),
            timestamp_utc: timestamp_utc.clone(),
            elapsed_s,
            ..Default::default()
        };
        for fill in fills {
            fill(&mut snap);
        }
        let line = format!(
            "{timestamp_utc},{elapsed_s},{}\n",
            label.replace([',', '\n'], "_")
        );
        let p = cfg.telemetry_dir().join("phases.csv");
        let res = (|| -> std::io::Result<()> {
            use std::io::Write;
            let new = !p.exists();
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&p)?;
            if new {
                f.write_all(b"timestamp_utc,elapsed_s,label\n")?;
            }
            f.write_all(line.as_bytes())
        })();
        if let Err(e) = res {
            sh.warn(format!("{}: {e}", p.display()));
        }
        snap
    }

    /// Computes and writes `phase_deltas/phase_<phase>_*` from two snapshots.
    pub fn phase_deltas(&self, phase: &str, start: &Snapshot, end: &Snapshot) -> PhaseDeltas {
        let sh = &self.shared;
        let timeline = sh
            .gpu_timeline
            .lock()
            .map(|g| g.clone())
            .unwrap_or_default();
        let primary = self.kv_disk_device();
        let mut d = phase::compute(phase, start, end, primary, sh.cfg.top_n, &timeline);
        // Host-wide scans skip cmdlines (hundreds of reads); fetch them for the few listed.
        procio::fill_cmdlines(&sh.cfg.roots.proc, &mut d.os_io.host_top_writers);
        procio::fill_cmdlines(&sh.cfg.roots.proc, &mut d.os_io.host_top_readers);
        phase::write(
            &sh.cfg.phase_dir(),
            &mut d,
            start,
            end,
            primary,
            sh.cfg.save_raw_scrapes,
        );
        for e in &d.write_errors {
            sh.warn(e.clone());
        }
        if let Ok(mut p) = self.phases.lock() {
            p.push(phase.to_string());
        }
        d
    }

    /// Stops sampling, takes `run_end`, lets each source finish (post-run
    /// SMART, log captures) and writes `telemetry/telemetry_report.json`.
    pub fn stop(mut self) -> TelemetryReport {
        let sampler = self.halt();
        let end = self.snapshot("run_end");
        let sh = self.shared.clone();
        let cfg = &sh.cfg;
        let mut fin = Finish::default();
        for src in &sh.sources {
            src.finish(cfg, &mut fin);
        }
        for w in fin.warnings {
            sh.warn(w);
        }
        let report = TelemetryReport {
            started_utc: self.started_utc.clone(),
            stopped_utc: utc_now(),
            interval_s: cfg.interval.as_secs_f64(),
            config: cfg.clone(),
            sources: self.sources.clone(),
            kv_disk_device: self.kv_disk.device.clone(),
            kv_disk_device_source: self.kv_disk.source.clone(),
            sampler,
            phases: self.phases.lock().map(|p| p.clone()).unwrap_or_default(),
            nvme_identity: fin.nvme_identity,
            nvme_run_delta: fin.nvme_run_delta,
            captures: fin.captures,
            warnings: sh.warnings.lock().map(|w| w.clone()).unwrap_or_default(),
            run_end: end,
        };
        if let Err(e) = write_json(&cfg.telemetry_dir().join("telemetry_report.json"), &report) {
            eprintln!("sparkhost-collectors: telemetry_report.json: {e}");
        }
        report
    }

    fn halt(&mut self) -> SamplerReport {
        drop(self.stop_tx.take());
        self.sampler
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default()
    }
}

impl Drop for Session {
    /// A session dropped without `stop` (the host panicked) still ends its thread.
    fn drop(&mut self) {
        self.halt();
    }
}

// ---------------------------------------------------------------- sampler

/// One source's sampler and its open timeline files (`None` where a file
/// could not be created; its rows are dropped).
struct Track {
    id: SourceId,
    sampler: Box<dyn Sampler>,
    writers: Vec<Option<CsvWriter>>,
}

/// Opens every sampler's files and notes them in the source's status.
fn open_tracks(sh: &Shared, sources: &mut BTreeMap<SourceId, SourceStatus>) -> Vec<Track> {
    let dir = sh.cfg.telemetry_dir();
    let mut tracks = Vec::new();
    for src in &sh.sources {
        let Some(sampler) = src.sampler() else {
            continue;
        };
        let id = src.id();
        let mut writers = Vec::new();
        for t in sampler.timelines() {
            let header: Vec<&str> = ["timestamp_utc", "elapsed_s"]
                .into_iter()
                .chain(t.columns.iter().copied())
                .collect();
            writers.push(match CsvWriter::create(&dir.join(t.file), &header) {
                Ok(w) => {
                    if let Some(s) = sources.get_mut(&id) {
                        let p = w.path().display().to_string();
                        s.timeline = Some(match &s.timeline {
                            Some(prev) => format!("{prev}, {p}"),
                            None => p,
                        });
                    }
                    Some(w)
                }
                Err(e) => {
                    sh.warn(format!("{}: {e}", t.file));
                    None
                }
            });
        }
        if writers.iter().any(Option::is_some) {
            tracks.push(Track {
                id,
                sampler,
                writers,
            });
        }
    }
    tracks
}

fn sample_loop(sh: Arc<Shared>, mut tracks: Vec<Track>, stop: mpsc::Receiver<()>) -> SamplerReport {
    let mut rep = SamplerReport::default();
    let interval = sh.cfg.interval.max(Duration::from_millis(10));
    let mut next = Instant::now();
    let mut rows = Rows::new();
    loop {
        let ts = utc_now();
        let el = round3(sh.elapsed());
        for t in &mut tracks {
            rows.clear();
            // Rows come out even with an error: a failed scrape still has its row.
            let r = t.sampler.sample(&sh.cfg, el, &mut rows);
            for (i, cells) in rows.drain(..) {
                if let Some(Some(w)) = t.writers.get_mut(i) {
                    let line: Vec<Cell> = [Cell::from(ts.as_str()), el.into()]
                        .into_iter()
                        .chain(cells)
                        .collect();
                    write_row(&mut rep, w, &line);
                }
            }
            if let Err(e) = r {
                note(&mut rep, t.id.as_str(), e);
            }
        }
        rep.ticks += 1;
        next += interval;
        let now = Instant::now();
        if next <= now {
            // Overloaded: skip the missed ticks instead of bursting to catch up.
            rep.late_ticks += 1;
            next = now + interval;
        }
        match stop.recv_timeout(next - now) {
            Err(RecvTimeoutError::Timeout) => {}
            _ => break,
        }
    }
    rep
}

fn note(rep: &mut SamplerReport, key: &str, err: String) {
    let e = rep.errors.entry(key.to_string()).or_insert((0, err));
    e.0 += 1;
}

fn write_row(rep: &mut SamplerReport, w: &mut CsvWriter, cells: &[Cell]) {
    let name = w
        .path()
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    match w.row(cells) {
        Ok(()) => *rep.rows.entry(name).or_insert(0) += 1,
        Err(e) => note(rep, &name, e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_can_be_shared_with_blocking_tasks() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<Session>();
        send_sync::<Snapshot>();
        send_sync::<PhaseDeltas>();
    }

    #[test]
    fn defaults_match_the_seed() {
        let c = Config::new("/tmp/x");
        assert_eq!(c.block_devices, vec!["nvme0n1"]);
        assert_eq!(c.process_pattern.as_deref(), Some(r"dynamo\.trtllm"));
        assert_eq!(
            c.kvbm_metrics_url.as_deref(),
            Some("http://127.0.0.1:6880/metrics")
        );
        assert_eq!(
            c.worker_metrics_url.as_deref(),
            Some("http://127.0.0.1:8081/metrics")
        );
        assert_eq!(c.nvme_device.as_deref(), Some("/dev/nvme0"));
        assert_eq!(c.interval, Duration::from_secs(1));
        assert_eq!(
            Config::metrics_url_for_endpoint("http://127.0.0.1:8000/"),
            "http://127.0.0.1:8000/metrics"
        );
    }

    #[test]
    fn collectors_serialize_as_the_struct_of_flags_did() {
        let mut c = Collectors::default();
        c.set(SourceId::Gpu, false);
        assert!(!c.enabled(SourceId::Gpu) && c.enabled(SourceId::Nvme));
        assert_eq!(
            serde_json::to_string(&c).unwrap(),
            r#"{"diskstats":true,"processes":true,"cgroup":true,"memory":true,"gpu":false,"nvme":true,"kvbm":true,"frontend":true,"worker":true,"logs":true,"kv-cache-dir":true}"#
        );
        c.set(SourceId::Gpu, true);
        assert_eq!(c, Collectors::default());
        let only = Collectors::only([SourceId::Memory]);
        assert_eq!(
            SourceId::ALL
                .into_iter()
                .filter(|&id| only.enabled(id))
                .collect::<Vec<_>>(),
            [SourceId::Memory]
        );
    }

    /// Every source is probed once, in `ALL` order, under its own id.
    #[test]
    fn probes_cover_every_source_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = Config::new(dir.path());
        cfg.collectors = Collectors::only([]);
        let gpu_timeline = GpuTimeline::default();
        let p = Probe {
            cfg: &cfg,
            gpu_timeline: &gpu_timeline,
        };
        let mut ids = vec![diskstats::probe(&p).0.source.id()];
        ids.extend(PROBES.iter().map(|f| f(&p).source.id()));
        assert_eq!(ids, SourceId::ALL);
    }

    fn csv_fields(line: &str) -> usize {
        let mut n = 1;
        let mut quoted = false;
        for c in line.chars() {
            match c {
                '"' => quoted = !quoted,
                ',' if !quoted => n += 1,
                _ => {}
            }
        }
        n
    }

    /// Each timeline's rows have as many cells as its header has columns.
    #[test]
    fn timeline_rows_match_their_headers() {
        let run = tempfile::tempdir().unwrap();
        let mut cfg = Config::new(run.path());
        cfg.interval = Duration::from_millis(20);
        cfg.block_devices = Vec::new(); // every whole disk on this machine
        cfg.process_pattern = None;
        cfg.pids = vec![std::process::id()];
        cfg.cgroup = Some(CgroupTarget::Pid(std::process::id()));
        cfg.kvbm_metrics_url = Some("http://127.0.0.1:1/metrics".into()); // refused: rows with success 0
        cfg.worker_metrics_url = None;
        cfg.metrics_timeout = Duration::from_millis(200);
        cfg.nvme_device = None;
        cfg.kv_cache_dir = None;
        cfg.collectors.set(SourceId::Gpu, false);
        cfg.collectors.set(SourceId::Logs, false);
        let s = Session::start(cfg);
        thread::sleep(Duration::from_millis(150));
        let report = s.stop();
        let tel = run.path().join("telemetry");
        let mut checked = Vec::new();
        for f in [
            "os_iostat.csv",
            "os_pid_io.csv",
            "memory.csv",
            "kvbm_metrics.csv",
            "cgroup_io.csv",
        ] {
            let Ok(text) = std::fs::read_to_string(tel.join(f)) else {
                continue;
            };
            let mut lines = text.lines();
            let width = csv_fields(lines.next().unwrap());
            for l in lines {
                assert_eq!(csv_fields(l), width, "{f}: {l}");
            }
            checked.push(f);
        }
        // These need nothing but /proc and a refused port.
        for f in ["os_pid_io.csv", "memory.csv", "kvbm_metrics.csv"] {
            assert!(checked.contains(&f), "{f}: {:?}", report.sources);
            assert!(report.sampler.rows.get(f).copied().unwrap_or(0) > 0, "{f}");
        }
        assert!(report.sampler.errors.contains_key("kvbm"));
        assert_eq!(
            report.sources[&SourceId::Logs].reason.as_deref(),
            Some("disabled")
        );
    }
}
