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

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::common::{Cell, CsvWriter, MIB, Reading, append_jsonl, round3, utc_now, write_json};
use crate::diskstats::{self, BackingDevice, DiskStat};
use crate::gpu::{Gpu, GpuSample};
use crate::kvbm::{CATALOGUE, KvbmSnapshot};
use crate::logs::{self, Capture};
use crate::memory::{self, MemorySnapshot};
use crate::nvme::{self, Identity, NvmeDevice, SmartDelta, SmartLog};
use crate::phase::{self, PhaseDeltas, Snapshot};
use crate::procio::{self, CgroupIo, CgroupTarget, Matcher, ProcSnapshot};
use crate::prometheus::http::scrape;

/// Which sources run. All on by default; each fails soft when it cannot work.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Collectors {
    pub diskstats: bool,
    pub processes: bool,
    pub cgroup: bool,
    pub memory: bool,
    pub gpu: bool,
    pub nvme: bool,
    pub kvbm: bool,
    pub frontend: bool,
    pub worker: bool,
    pub logs: bool,
    pub kv_cache_dir: bool,
}

impl Default for Collectors {
    fn default() -> Self {
        Collectors {
            diskstats: true,
            processes: true,
            cgroup: true,
            memory: true,
            gpu: true,
            nvme: true,
            kvbm: true,
            frontend: true,
            worker: true,
            logs: true,
            kv_cache_dir: true,
        }
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

/// The sampling thread's account of itself.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SamplerReport {
    pub ticks: u64,
    /// Ticks that started more than one interval late (host overloaded).
    pub late_ticks: u64,
    pub rows: BTreeMap<String, u64>,
    /// Per source: (failed reads, first error).
    pub errors: BTreeMap<String, (u64, String)>,
}

/// `telemetry/telemetry_report.json`, returned by [`Session::stop`].
#[derive(Debug, Clone, Serialize)]
pub struct TelemetryReport {
    pub started_utc: String,
    pub stopped_utc: String,
    pub interval_s: f64,
    pub config: Config,
    pub sources: BTreeMap<String, SourceStatus>,
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

struct Shared {
    cfg: Config,
    devices: Vec<String>,
    matcher: Option<Matcher>,
    cgroup: Option<CgroupTarget>,
    nvme: Option<NvmeDevice>,
    gpu: Option<Gpu>,
    started: Instant,
    gpu_timeline: Mutex<Vec<(f64, GpuSample)>>,
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
    sources: BTreeMap<String, SourceStatus>,
    kv_disk_device: Option<String>,
    kv_disk_device_source: String,
    started_utc: String,
    stop_tx: Option<mpsc::Sender<()>>,
    sampler: Option<JoinHandle<SamplerReport>>,
    nvme_identity: Option<Identity>,
    nvme_pre: Option<SmartLog>,
    run_start: Snapshot,
    phases: Mutex<Vec<String>>,
}

fn status(enabled: bool, r: Result<(), String>) -> SourceStatus {
    SourceStatus {
        enabled,
        available: enabled && r.is_ok(),
        reason: if enabled {
            r.err()
        } else {
            Some("disabled".into())
        },
        timeline: None,
    }
}

impl Session {
    /// Probes every source, writes the NVMe identity and pre-run SMART files,
    /// takes the `run_start` snapshot and starts sampling.
    pub fn start(cfg: Config) -> Session {
        let started = Instant::now();
        let started_utc = utc_now();
        let c = cfg.collectors.clone();
        let mut sources = BTreeMap::new();
        let mut warnings = Vec::new();
        if let Err(e) = std::fs::create_dir_all(cfg.telemetry_dir())
            .and_then(|_| std::fs::create_dir_all(cfg.phase_dir()))
        {
            warnings.push(format!("cannot create telemetry directories: {e}"));
        }

        // Block devices; the KV disk is the one under the KV cache dir when it exists.
        let all_disks = diskstats::read(&cfg.roots.proc);
        let mut devices = if cfg.block_devices.is_empty() {
            all_disks
                .as_ref()
                .map(|m| diskstats::default_devices(m, &cfg.roots.sys))
                .unwrap_or_default()
        } else {
            cfg.block_devices.clone()
        };
        let backing: Option<Result<BackingDevice, String>> = cfg
            .kv_cache_dir
            .as_ref()
            .map(|d| diskstats::device_for_path(d, &cfg.roots.sys));
        let (kv_disk_device, kv_disk_device_source) = match &backing {
            Some(Ok(b)) => {
                if !devices.contains(&b.disk) {
                    devices.push(b.disk.clone());
                }
                (
                    Some(b.disk.clone()),
                    format!("backs the KV cache dir ({})", b.name),
                )
            }
            other => {
                if let Some(Err(e)) = other {
                    warnings.push(format!("KV cache dir: {e}"));
                }
                (
                    devices.first().cloned(),
                    "first configured block device".to_string(),
                )
            }
        };
        let disk_check = all_disks.and_then(|m| {
            let (_, missing) = diskstats::select(&m, &devices);
            if missing.len() == devices.len() && !devices.is_empty() {
                Err(missing.join("; "))
            } else {
                if !missing.is_empty() {
                    warnings.extend(missing);
                }
                Ok(())
            }
        });
        sources.insert("diskstats".into(), status(c.diskstats, disk_check));

        let matcher = if c.processes {
            match Matcher::new(cfg.process_pattern.as_deref(), &cfg.pids) {
                Ok(m) if m.is_empty() => {
                    sources.insert(
                        "processes".into(),
                        status(true, Err("no process pattern or PIDs given".into())),
                    );
                    None
                }
                Ok(m) => {
                    sources.insert("processes".into(), status(true, Ok(())));
                    Some(m)
                }
                Err(e) => {
                    sources.insert("processes".into(), status(true, Err(e)));
                    None
                }
            }
        } else {
            sources.insert("processes".into(), status(false, Ok(())));
            None
        };

        let cgroup = cfg
            .cgroup
            .clone()
            .or_else(|| cfg.container.clone().map(CgroupTarget::Container));
        let cg_check = match (&cgroup, c.cgroup) {
            (None, _) => Err("no cgroup path, PID or container given".to_string()),
            (Some(t), true) => {
                procio::read_cgroup(t, &cfg.roots.proc, &cfg.roots.cgroup, cfg.docker_timeout)
                    .map(|_| ())
            }
            (Some(_), false) => Ok(()),
        };
        sources.insert("cgroup".into(), status(c.cgroup, cg_check));

        sources.insert(
            "memory".into(),
            status(c.memory, memory::read(&cfg.roots.proc).map(|_| ())),
        );

        let gpu = if c.gpu {
            match Gpu::open().and_then(|g| g.snapshot().map(|_| g)) {
                Ok(g) => {
                    sources.insert("gpu".into(), status(true, Ok(())));
                    Some(g)
                }
                Err(e) => {
                    sources.insert("gpu".into(), status(true, Err(e)));
                    None
                }
            }
        } else {
            sources.insert("gpu".into(), status(false, Ok(())));
            None
        };

        // NVMe: identity and pre-run SMART now, so the files exist even if the run dies.
        let mut nvme_identity = None;
        let mut nvme_pre = None;
        let nvme_dev = match (&cfg.nvme_device, c.nvme) {
            (Some(d), true) => match nvme::resolve(d, &cfg.roots.dev, &cfg.roots.sys) {
                Ok(dev) => Some(dev),
                Err(e) => {
                    // Same files as a device that failed to answer, so readers need one shape.
                    let v = serde_json::json!({"timestamp_utc": utc_now(), "success": false, "error": e, "device": d});
                    for f in ["nvme_identity.json", "nvme_smart_pre.json"] {
                        if let Err(err) = write_json(&cfg.run_dir.join(f), &v) {
                            warnings.push(format!("{f}: {err}"));
                        }
                    }
                    sources.insert("nvme".into(), status(true, Err(e)));
                    None
                }
            },
            (None, true) => {
                sources.insert(
                    "nvme".into(),
                    status(true, Err("no NVMe device given".into())),
                );
                None
            }
            (_, false) => {
                sources.insert("nvme".into(), status(false, Ok(())));
                None
            }
        };
        let mut nvme_ok = None;
        if let Some(dev) = &nvme_dev {
            let id = nvme::read_identity(dev, &cfg.roots.dev);
            let smart = nvme::read_smart(dev, &cfg.roots.dev);
            let id_file =
                NvmeFile::new(dev, &id, "NVME_IOCTL_ADMIN_CMD Identify Controller (CNS 1)");
            if let Err(e) = write_json(
                &cfg.run_dir.join("nvme_identity.json"),
                &id_file.with("identity", id.as_ref().ok().map(|x| &x.0)),
            ) {
                warnings.push(format!("nvme_identity.json: {e}"));
            }
            let pre = NvmeFile::new(
                dev,
                &smart,
                "NVME_IOCTL_ADMIN_CMD Get Log Page 0x02 (SMART / Health)",
            );
            if let Err(e) = write_json(
                &cfg.run_dir.join("nvme_smart_pre.json"),
                &pre.with("smart", smart.as_ref().ok().map(|x| &x.0)),
            ) {
                warnings.push(format!("nvme_smart_pre.json: {e}"));
            }
            nvme_identity = id.ok().map(|x| x.0);
            let ok = smart.as_ref().map(|_| ()).map_err(|e| e.clone());
            nvme_pre = smart.ok().map(|x| x.0);
            sources.insert("nvme".into(), status(true, ok.clone()));
            nvme_ok = Some(ok.is_ok());
        }
        let nvme_dev = nvme_dev.filter(|_| nvme_ok == Some(true));

        // Probed in parallel: each may take the whole timeout on a hung port.
        let probes: Vec<(&str, Result<(), String>, bool)> = thread::scope(|scope| {
            let handles: Vec<_> = [
                ("kvbm", &cfg.kvbm_metrics_url, c.kvbm),
                ("frontend", &cfg.frontend_metrics_url, c.frontend),
                ("worker", &cfg.worker_metrics_url, c.worker),
            ]
            .into_iter()
            .map(|(name, url, on)| {
                let timeout = cfg.metrics_timeout;
                let h = scope.spawn(move || match (url, on) {
                    (_, false) => Ok(()),
                    (None, true) => Err("no metrics URL given".to_string()),
                    (Some(u), true) => {
                        let s = scrape(u, timeout);
                        if name == "kvbm" {
                            let k = KvbmSnapshot::from_scrape("probe", &s);
                            if k.has_metrics() {
                                Ok(())
                            } else {
                                Err(k.error.unwrap_or_else(|| "no kvbm_* metrics".into()))
                            }
                        } else if s.success {
                            Ok(())
                        } else {
                            Err(s.error.unwrap_or_default())
                        }
                    }
                });
                (name, h, on)
            })
            .collect();
            handles
                .into_iter()
                .map(|(n, h, on)| {
                    (
                        n,
                        h.join().unwrap_or_else(|_| Err("probe panicked".into())),
                        on,
                    )
                })
                .collect()
        });
        for (name, r, on) in probes {
            // Unreachable at start is recorded, but every snapshot scrapes
            // again: the worker may come up after the harness.
            sources.insert(name.into(), status(on, r));
        }
        sources.insert(
            "kv_cache_dir".into(),
            status(
                c.kv_cache_dir,
                match &cfg.kv_cache_dir {
                    Some(d) if d.is_dir() => Ok(()),
                    Some(d) => Err(format!("{}: missing", d.display())),
                    None => Err("no KV cache dir given".into()),
                },
            ),
        );
        sources.insert("logs".into(), status(c.logs, Ok(())));

        let shared = Arc::new(Shared {
            matcher: matcher.filter(|_| c.processes),
            cgroup: cgroup.filter(|_| sources["cgroup"].available),
            devices: if sources["diskstats"].available {
                devices
            } else {
                Vec::new()
            },
            nvme: nvme_dev,
            gpu,
            started,
            gpu_timeline: Mutex::new(Vec::new()),
            warnings: Mutex::new(warnings),
            cfg,
        });

        let mut session = Session {
            shared: shared.clone(),
            sources,
            kv_disk_device,
            kv_disk_device_source,
            started_utc,
            stop_tx: None,
            sampler: None,
            nvme_identity,
            nvme_pre,
            run_start: Snapshot::default(),
            phases: Mutex::new(Vec::new()),
        };
        session.run_start = session.snapshot("run_start");
        let (tx, rx) = mpsc::channel();
        let timelines = Timelines::create(&shared, &mut session.sources);
        session.sampler = Some(
            thread::Builder::new()
                .name("sparkhost-telemetry".into())
                .spawn(move || sample_loop(shared, timelines, rx))
                .expect("spawn telemetry thread"),
        );
        session.stop_tx = Some(tx);
        session
    }

    pub fn sources(&self) -> &BTreeMap<String, SourceStatus> {
        &self.sources
    }

    pub fn run_start(&self) -> &Snapshot {
        &self.run_start
    }

    /// The block device whose bytes count as KV disk I/O.
    pub fn kv_disk_device(&self) -> Option<&str> {
        self.kv_disk_device.as_deref()
    }

    /// Reads every source now. Blocks for up to the metrics timeout (scrapes run
    /// in parallel); call it from a blocking context. Seed labels:
    /// `run_start`, `before_<phase>`, `after_<phase>`, `run_end`. Also appends
    /// to `kvbm_metrics_snapshots.jsonl` and `telemetry/phases.csv`.
    pub fn snapshot(&self, label: &str) -> Snapshot {
        let sh = &self.shared;
        let cfg = &sh.cfg;
        let c = &cfg.collectors;
        let t = cfg.metrics_timeout;
        let (kvbm, frontend, worker) = thread::scope(|s| {
            let go = |on: bool, url: &Option<String>| {
                let url = url.clone().filter(|_| on);
                s.spawn(move || url.map(|u| scrape(&u, t)))
            };
            let k = go(c.kvbm, &cfg.kvbm_metrics_url);
            let f = go(c.frontend, &cfg.frontend_metrics_url);
            let w = go(c.worker, &cfg.worker_metrics_url);
            (
                k.join().ok().flatten(),
                f.join().ok().flatten(),
                w.join().ok().flatten(),
            )
        });
        let elapsed_s = round3(sh.elapsed());
        let timestamp_utc = utc_now();
        let mut snap = Snapshot {
            label: label.to_string(),
            timestamp_utc: timestamp_utc.clone(),
            elapsed_s,
            kvbm: kvbm.as_ref().map(|s| KvbmSnapshot::from_scrape(label, s)),
            frontend,
            worker,
            ..Default::default()
        };
        if !c.kvbm {
            snap.kvbm = None;
        } else if snap.kvbm.is_none() {
            snap.kvbm = Some(KvbmSnapshot::unavailable(
                label,
                "no KVBM metrics URL given",
            ));
        }
        let reason = |name: &str| {
            self.sources
                .get(name)
                .and_then(|s| s.reason.clone())
                .unwrap_or_else(|| "unavailable".into())
        };
        snap.block_devices = if sh.devices.is_empty() {
            Reading::unavailable(reason("diskstats"))
        } else {
            match diskstats::read(&cfg.roots.proc) {
                Ok(all) => {
                    let (found, missing) = diskstats::select(&all, &sh.devices);
                    snap.block_device_errors = missing;
                    snap.device_names = all
                        .values()
                        .map(|d| (format!("{}:{}", d.major, d.minor), d.name.clone()))
                        .collect();
                    Reading::ok(found)
                }
                Err(e) => Reading::unavailable(e),
            }
        };
        snap.processes = match &sh.matcher {
            Some(m) => Reading::from_result(procio::scan(&cfg.roots.proc, m)),
            None => Reading::unavailable(reason("processes")),
        };
        if c.processes {
            snap.host_processes = Reading::from_result(procio::scan_all(&cfg.roots.proc));
        }
        snap.cgroup = match &sh.cgroup {
            Some(t) => Reading::from_result(procio::read_cgroup(
                t,
                &cfg.roots.proc,
                &cfg.roots.cgroup,
                cfg.docker_timeout,
            )),
            None => Reading::unavailable(reason("cgroup")),
        };
        snap.memory = if c.memory {
            Reading::from_result(memory::read(&cfg.roots.proc))
        } else {
            Reading::unavailable("disabled")
        };
        snap.gpu = match &sh.gpu {
            Some(g) => Reading::from_result(g.snapshot()),
            None => Reading::unavailable(reason("gpu")),
        };
        snap.nvme = match &sh.nvme {
            Some(d) => Reading::from_result(nvme::read_smart(d, &cfg.roots.dev).map(|x| x.0)),
            None => Reading::unavailable(reason("nvme")),
        };
        snap.kv_cache_dir = match (&cfg.kv_cache_dir, c.kv_cache_dir) {
            (Some(d), true) if d.is_dir() => {
                let (summary, files) = logs::dir_snapshot(d, 5, 100_000);
                let out = cfg
                    .telemetry_dir()
                    .join(format!("kvbm_dir_{}.txt", crate::common::file_safe(label)));
                if let Err(e) = logs::write_listing(&out, &summary, &files) {
                    sh.warn(format!("{}: {e}", out.display()));
                }
                Reading::ok(summary)
            }
            _ => Reading::unavailable(reason("kv_cache_dir")),
        };
        if let Some(k) = &snap.kvbm
            && let Err(e) = append_jsonl(&cfg.run_dir.join("kvbm_metrics_snapshots.jsonl"), k)
        {
            sh.warn(format!("kvbm_metrics_snapshots.jsonl: {e}"));
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
        let primary = self.kv_disk_device.as_deref();
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

    /// Stops sampling, takes `run_end`, writes `nvme_smart_post.json` (with the
    /// run's SMART delta), captures logs and writes `telemetry/telemetry_report.json`.
    pub fn stop(mut self) -> TelemetryReport {
        let sampler = self.halt();
        let end = self.snapshot("run_end");
        let sh = self.shared.clone();
        let cfg = &sh.cfg;
        let mut nvme_run_delta = None;
        if let (Some(dev), true) = (&sh.nvme, cfg.collectors.nvme) {
            let post = nvme::read_smart(dev, &cfg.roots.dev);
            nvme_run_delta = match (&self.nvme_pre, &post) {
                (Some(a), Ok((b, _))) => Some(nvme::smart_delta(a, b)),
                _ => None,
            };
            let f = NvmeFile::new(
                dev,
                &post,
                "NVME_IOCTL_ADMIN_CMD Get Log Page 0x02 (SMART / Health)",
            )
            .with("smart", post.as_ref().ok().map(|x| &x.0));
            let mut v = serde_json::to_value(&f).unwrap_or_default();
            v["delta_from_pre"] = serde_json::to_value(&nvme_run_delta).unwrap_or_default();
            if let Err(e) = write_json(&cfg.run_dir.join("nvme_smart_post.json"), &v) {
                sh.warn(format!("nvme_smart_post.json: {e}"));
            }
            if let Some(d) = &nvme_run_delta
                && let Err(e) = write_json(&cfg.run_dir.join("nvme_smart_delta.json"), d)
            {
                sh.warn(format!("nvme_smart_delta.json: {e}"));
            }
        } else if let Some(pre) = self
            .sources
            .get("nvme")
            .filter(|s| s.enabled && !s.available)
        {
            // Pre was written when the device was found; post says why there is no data.
            let v = serde_json::json!({
                "timestamp_utc": utc_now(),
                "success": false,
                "error": pre.reason,
                "device": cfg.nvme_device,
            });
            let _ = write_json(&cfg.run_dir.join("nvme_smart_post.json"), &v);
        }
        let mut captures = Vec::new();
        if cfg.collectors.logs {
            let tdir = cfg.telemetry_dir();
            if let Some(cname) = &cfg.container {
                captures.extend(logs::capture_docker(cname, &tdir, cfg.docker_timeout));
            }
            captures.extend(logs::capture_cufile(
                &cfg.cufile_log_dirs,
                cfg.container.as_deref(),
                &tdir,
                cfg.docker_timeout,
            ));
        }
        let report = TelemetryReport {
            started_utc: self.started_utc.clone(),
            stopped_utc: utc_now(),
            interval_s: cfg.interval.as_secs_f64(),
            config: cfg.clone(),
            sources: self.sources.clone(),
            kv_disk_device: self.kv_disk_device.clone(),
            kv_disk_device_source: self.kv_disk_device_source.clone(),
            sampler,
            phases: self.phases.lock().map(|p| p.clone()).unwrap_or_default(),
            nvme_identity: self.nvme_identity.clone(),
            nvme_run_delta,
            captures,
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

/// `nvme_identity.json` / `nvme_smart_{pre,post}.json` envelope.
#[derive(Serialize)]
struct NvmeFile {
    timestamp_utc: String,
    success: bool,
    error: Option<String>,
    device: String,
    device_used: Option<String>,
    controller: String,
    namespace_block_device: Option<String>,
    method: &'static str,
    #[serde(flatten)]
    payload: BTreeMap<&'static str, serde_json::Value>,
}

impl NvmeFile {
    fn new<T>(dev: &NvmeDevice, r: &Result<(T, PathBuf), String>, method: &'static str) -> Self {
        NvmeFile {
            timestamp_utc: utc_now(),
            success: r.is_ok(),
            error: r.as_ref().err().cloned(),
            device: dev.requested.clone(),
            device_used: r.as_ref().ok().map(|(_, p)| p.display().to_string()),
            controller: dev.controller.display().to_string(),
            namespace_block_device: dev.namespace.clone(),
            method,
            payload: BTreeMap::new(),
        }
    }

    fn with<T: Serialize>(mut self, key: &'static str, v: Option<&T>) -> Self {
        self.payload
            .insert(key, serde_json::to_value(v).unwrap_or_default());
        self
    }
}

// ---------------------------------------------------------------- sampler

struct Timelines {
    iostat: Option<CsvWriter>,
    pid: Option<CsvWriter>,
    cgroup: Option<CsvWriter>,
    memory: Option<CsvWriter>,
    gpu: Option<CsvWriter>,
    gpu_procs: Option<CsvWriter>,
    kvbm: Option<CsvWriter>,
}

impl Timelines {
    fn create(sh: &Shared, sources: &mut BTreeMap<String, SourceStatus>) -> Timelines {
        let dir = sh.cfg.telemetry_dir();
        let mut open = |source: &str, file: &str, header: &[&str], on: bool| -> Option<CsvWriter> {
            if !on {
                return None;
            }
            match CsvWriter::create(&dir.join(file), header) {
                Ok(w) => {
                    if let Some(s) = sources.get_mut(source) {
                        let t = w.path().display().to_string();
                        s.timeline = Some(match &s.timeline {
                            Some(prev) => format!("{prev}, {t}"),
                            None => t,
                        });
                    }
                    Some(w)
                }
                Err(e) => {
                    sh.warn(format!("{file}: {e}"));
                    None
                }
            }
        };
        let c = &sh.cfg.collectors;
        let kvbm_header: Vec<&str> = ["timestamp_utc", "elapsed_s", "success"]
            .into_iter()
            .chain(CATALOGUE.iter().map(|m| m.name))
            .collect();
        Timelines {
            iostat: open(
                "diskstats",
                "os_iostat.csv",
                &[
                    "timestamp_utc",
                    "elapsed_s",
                    "device",
                    "r_s",
                    "w_s",
                    "rmb_s",
                    "wmb_s",
                    "rkb_s",
                    "wkb_s",
                    "rrqm_s",
                    "wrqm_s",
                    "r_await_ms",
                    "w_await_ms",
                    "await_ms",
                    "rareq_sz_kb",
                    "wareq_sz_kb",
                    "aqu_sz",
                    "util_pct",
                ],
                !sh.devices.is_empty(),
            ),
            pid: open(
                "processes",
                "os_pid_io.csv",
                &[
                    "timestamp_utc",
                    "elapsed_s",
                    "pid",
                    "comm",
                    "read_bytes_s",
                    "write_bytes_s",
                    "rchar_s",
                    "wchar_s",
                    "cpu_pct",
                    "rss_mib",
                ],
                sh.matcher.is_some(),
            ),
            cgroup: open(
                "cgroup",
                "cgroup_io.csv",
                &[
                    "timestamp_utc",
                    "elapsed_s",
                    "device",
                    "read_bytes_s",
                    "write_bytes_s",
                    "read_ios_s",
                    "write_ios_s",
                ],
                sh.cgroup.is_some(),
            ),
            memory: open(
                "memory",
                "memory.csv",
                &[
                    "timestamp_utc",
                    "elapsed_s",
                    "mem_total_mib",
                    "mem_available_mib",
                    "cached_mib",
                    "dirty_mib",
                    "writeback_mib",
                    "buffers_mib",
                    "swap_used_mib",
                    "pgpgin_kib_s",
                    "pgpgout_kib_s",
                    "pswpin_s",
                    "pswpout_s",
                    "pgmajfault_s",
                ],
                c.memory,
            ),
            gpu: open(
                "gpu",
                "gpu.csv",
                &[
                    "timestamp_utc",
                    "elapsed_s",
                    "index",
                    "name",
                    "util_gpu_pct",
                    "util_mem_pct",
                    "mem_used_mib",
                    "mem_total_mib",
                    "power_w",
                    "energy_j",
                    "clock_graphics_mhz",
                    "clock_sm_mhz",
                    "clock_mem_mhz",
                    "temp_c",
                    "processes",
                ],
                sh.gpu.is_some(),
            ),
            gpu_procs: open(
                "gpu",
                "gpu_processes.csv",
                &[
                    "timestamp_utc",
                    "elapsed_s",
                    "index",
                    "pid",
                    "kind",
                    "used_mib",
                ],
                sh.gpu.is_some(),
            ),
            kvbm: open(
                "kvbm",
                "kvbm_metrics.csv",
                &kvbm_header,
                c.kvbm && sh.cfg.kvbm_metrics_url.is_some(),
            ),
        }
    }
}

#[derive(Default)]
struct Prev {
    disks: Option<(Instant, BTreeMap<String, DiskStat>)>,
    procs: Option<(Instant, ProcSnapshot)>,
    cgroup: Option<(Instant, CgroupIo)>,
    memory: Option<(Instant, MemorySnapshot)>,
}

fn mibf(b: Option<u64>) -> Cell {
    Cell::F(b.map(|v| round3(v as f64 / MIB)))
}

fn sample_loop(sh: Arc<Shared>, mut tl: Timelines, stop: mpsc::Receiver<()>) -> SamplerReport {
    let mut rep = SamplerReport::default();
    let mut prev = Prev::default();
    let interval = sh.cfg.interval.max(Duration::from_millis(10));
    let mut next = Instant::now();
    loop {
        tick(&sh, &mut tl, &mut prev, &mut rep);
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

fn note(rep: &mut SamplerReport, source: &str, err: String) {
    let e = rep.errors.entry(source.to_string()).or_insert((0, err));
    e.0 += 1;
}

fn row(rep: &mut SamplerReport, w: &mut CsvWriter, cells: &[Cell]) {
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

fn tick(sh: &Shared, tl: &mut Timelines, prev: &mut Prev, rep: &mut SamplerReport) {
    let cfg = &sh.cfg;
    let ts = utc_now();
    let el = round3(sh.elapsed());
    let head = || -> Vec<Cell> { vec![ts.clone().into(), el.into()] };

    if let Some(w) = tl.iostat.as_mut() {
        match diskstats::read(&cfg.roots.proc) {
            Ok(all) => {
                let now = Instant::now();
                let (found, _) = diskstats::select(&all, &sh.devices);
                if let Some((t0, before)) = &prev.disks {
                    let secs = now.duration_since(*t0).as_secs_f64();
                    for (name, a) in &found {
                        if let Some(b) = before.get(name) {
                            let s = diskstats::iostat(b, a, secs);
                            let mut c = head();
                            c.extend([
                                Cell::from(name.as_str()),
                                s.r_s.into(),
                                s.w_s.into(),
                                s.rmb_s.into(),
                                s.wmb_s.into(),
                                s.rkb_s.into(),
                                s.wkb_s.into(),
                                s.rrqm_s.into(),
                                s.wrqm_s.into(),
                                s.r_await_ms.into(),
                                s.w_await_ms.into(),
                                s.await_ms.into(),
                                s.rareq_sz_kb.into(),
                                s.wareq_sz_kb.into(),
                                s.aqu_sz.into(),
                                s.util_pct.into(),
                            ]);
                            row(rep, w, &c);
                        }
                    }
                }
                prev.disks = Some((now, found));
            }
            Err(e) => note(rep, "diskstats", e),
        }
    }

    if let (Some(w), Some(m)) = (tl.pid.as_mut(), &sh.matcher) {
        match procio::scan(&cfg.roots.proc, m) {
            Ok(snap) => {
                let now = Instant::now();
                if let Some((t0, before)) = &prev.procs {
                    for r in procio::rates(before, &snap, now.duration_since(*t0).as_secs_f64()) {
                        let mut c = head();
                        c.extend([
                            Cell::from(u64::from(r.pid)),
                            r.comm.clone().into(),
                            r.read_bytes_s.into(),
                            r.write_bytes_s.into(),
                            r.rchar_s.into(),
                            r.wchar_s.into(),
                            r.cpu_pct.into(),
                            mibf(r.rss_bytes),
                        ]);
                        row(rep, w, &c);
                    }
                }
                prev.procs = Some((now, snap));
            }
            Err(e) => note(rep, "processes", e),
        }
    }

    if let (Some(w), Some(t)) = (tl.cgroup.as_mut(), &sh.cgroup) {
        match procio::read_cgroup(t, &cfg.roots.proc, &cfg.roots.cgroup, cfg.docker_timeout) {
            Ok(cg) => {
                let now = Instant::now();
                if let Some((t0, before)) = &prev.cgroup {
                    let secs = now.duration_since(*t0).as_secs_f64().max(1e-9);
                    for (dev, a) in &cg.devices {
                        let b = before.devices.get(dev).cloned().unwrap_or_default();
                        let r = |x: u64, y: u64| {
                            round3(crate::common::counter_delta(x, y).0 as f64 / secs)
                        };
                        let mut c = head();
                        c.extend([
                            Cell::from(dev.as_str()),
                            r(b.rbytes, a.rbytes).into(),
                            r(b.wbytes, a.wbytes).into(),
                            r(b.rios, a.rios).into(),
                            r(b.wios, a.wios).into(),
                        ]);
                        row(rep, w, &c);
                    }
                }
                prev.cgroup = Some((now, cg));
            }
            Err(e) => note(rep, "cgroup", e),
        }
    }

    if let Some(w) = tl.memory.as_mut() {
        match memory::read(&cfg.roots.proc) {
            Ok(m) => {
                let now = Instant::now();
                let rates = prev
                    .memory
                    .as_ref()
                    .map(|(t0, b)| memory::rates(b, &m, now.duration_since(*t0).as_secs_f64()))
                    .unwrap_or_default();
                let swap_used = match (m.mem("SwapTotal"), m.mem("SwapFree")) {
                    (Some(t), Some(f)) => Some(t.saturating_sub(f)),
                    _ => None,
                };
                let mut c = head();
                c.extend([
                    mibf(m.mem("MemTotal")),
                    mibf(m.mem("MemAvailable")),
                    mibf(m.mem("Cached")),
                    mibf(m.mem("Dirty")),
                    mibf(m.mem("Writeback")),
                    mibf(m.mem("Buffers")),
                    mibf(swap_used),
                    rates.pgpgin_kib_s.into(),
                    rates.pgpgout_kib_s.into(),
                    rates.pswpin_s.into(),
                    rates.pswpout_s.into(),
                    rates.pgmajfault_s.into(),
                ]);
                row(rep, w, &c);
                prev.memory = Some((now, m));
            }
            Err(e) => note(rep, "memory", e),
        }
    }

    if let Some(g) = &sh.gpu {
        match g.snapshot() {
            Ok(snap) => {
                for d in &snap.devices {
                    if let Some(w) = tl.gpu.as_mut() {
                        let mut c = head();
                        c.extend([
                            Cell::from(u64::from(d.index)),
                            d.name.clone().unwrap_or_default().into(),
                            d.utilization_gpu_pct.into(),
                            d.utilization_memory_pct.into(),
                            mibf(d.memory_used_bytes),
                            mibf(d.memory_total_bytes),
                            d.power_w.into(),
                            Cell::F(d.energy_mj.map(|e| e as f64 / 1000.0)),
                            d.clock_graphics_mhz.into(),
                            d.clock_sm_mhz.into(),
                            d.clock_memory_mhz.into(),
                            d.temperature_c.into(),
                            Cell::U(Some(d.processes.len() as u64)),
                        ]);
                        row(rep, w, &c);
                    }
                    if let Some(w) = tl.gpu_procs.as_mut() {
                        for p in &d.processes {
                            let mut c = head();
                            c.extend([
                                Cell::from(u64::from(d.index)),
                                Cell::from(u64::from(p.pid)),
                                p.kind.clone().into(),
                                mibf(p.used_memory_bytes),
                            ]);
                            row(rep, w, &c);
                        }
                    }
                }
                if let Ok(mut t) = sh.gpu_timeline.lock() {
                    t.extend(snap.devices.into_iter().map(|d| (el, d)));
                }
            }
            Err(e) => note(rep, "gpu", e),
        }
    }

    if let (Some(w), Some(url)) = (tl.kvbm.as_mut(), &cfg.kvbm_metrics_url) {
        let timeout = cfg
            .metrics_timeout
            .min(cfg.interval.mul_f64(0.8))
            .max(Duration::from_millis(50));
        let k = KvbmSnapshot::from_scrape("timeline", &scrape(url, timeout));
        if let Some(e) = &k.error {
            note(rep, "kvbm", e.clone());
        }
        let mut c = head();
        c.push(Cell::U(Some(u64::from(k.has_metrics()))));
        c.extend(
            CATALOGUE
                .iter()
                .map(|m| Cell::F(k.metrics.get(m.name).copied())),
        );
        row(rep, w, &c);
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
}
