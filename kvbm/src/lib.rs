//! A live, **simulated** LLM serving endpoint with KVBM-style KV tiers.
//!
//! It serves the OpenAI API like a Dynamo frontend, runs a modelled engine
//! (continuous batching, a GPU block pool, KVBM's host and disk tiers with
//! v1's policies), writes and reads its disk tier for real with O_DIRECT,
//! and exports KVBM's metric names on a separate port. Nothing it reports is
//! measured on an accelerator: every scrape carries `sparkhost_sim_info`,
//! and [`SimInfo::simulated`] is always true. Formulas and figures, with
//! their sources, are in `kvbm/README.md`.
//!
//! # Layout
//! - `profile`: model/machine profiles, TOML overrides, validation.
//! - `tokens`: prompt text → token ids (heuristic or `tokenizer.json`), chained block hashes.
//! - `engine`: the pure engine model: batching, timing, G1/G2/G3 tiers, counters.
//! - `engine_config`: engine-config templates for real engines (TensorRT-LLM's
//!   KVBM yaml, the Dynamo mocker's engine args) rendered per tier mode;
//!   the templates themselves are in `kvbm/templates/`.
//! - `disk`: the disk tier's cache file, O_DIRECT block reads and writes.
//! - `driver`: the engine's real-time thread and the per-request schedule record.
//! - `metrics`: Prometheus text, Dynamo frontend names and KVBM v1/v2 names.
//! - `server`: HTTP/1.1 endpoint and the KVBM metrics port.
//!
//! # Use
//! ```no_run
//! # async fn f() -> Result<(), sparkhost_kvbm::SimError> {
//! use sparkhost_kvbm::{Profile, SimConfig, Simulator, TierMode};
//! let cfg = SimConfig::new(Profile::builtin("tiny")?, TierMode::B1);
//! let sim = Simulator::start(cfg).await?;
//! println!("endpoint http://{} kvbm http://{:?}", sim.addr(), sim.metrics_addr());
//! sim.shutdown().await;
//! # Ok(()) }
//! ```

pub mod disk;
mod driver;
pub mod engine;
pub mod engine_config;
pub mod metrics;
pub mod profile;
mod server;
pub mod tokens;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use serde::Serialize;
use tokio::sync::watch;

pub use disk::{DiskStats, IoMode};
pub use driver::{MAX_SCHEDULE_RECORDS, ScheduleRecord};
pub use engine::{Counters, Occupancy, TierMode};
pub use metrics::{KvbmView, Lies, Naming};
pub use profile::{Profile, ProfileError};

#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error(transparent)]
    Profile(#[from] ProfileError),
    #[error(transparent)]
    Disk(#[from] disk::DiskError),
    #[error("tier mode B2 needs a cache dir for the disk tier")]
    NoCacheDir,
    #[error("cannot bind {what} to {addr}: {source}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("cannot start the simulator: {0}")]
    Start(std::io::Error),
}

/// How the disk tier's onboard time is found.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, Default, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum DiskTiming {
    /// bytes / `disk_read_gbps` + `disk_latency_us` (the reads still happen).
    #[default]
    Model,
    /// The wall time of the real O_DIRECT reads.
    Measured,
}

#[derive(Debug, Clone)]
pub struct SimConfig {
    pub profile: Profile,
    pub tier_mode: TierMode,
    /// The OpenAI endpoint.
    pub listen: SocketAddr,
    /// KVBM's metrics port (KVBM's default is 6880); None: not served.
    pub metrics_listen: Option<SocketAddr>,
    /// Where B2's cache file goes (KVBM: `DYN_KVBM_DISK_CACHE_DIR`).
    pub cache_dir: Option<PathBuf>,
    pub naming: Naming,
    /// KVBM v2 with GPUDirect Storage: disk hits go G3 → G1 directly.
    /// Without it (DGX Spark: GDS unsupported) they are staged G3 → G2 → G1.
    /// KVBM v1 always counts a disk onboard as `onboard_blocks_d2d`.
    pub gds: bool,
    pub lies: Lies,
    pub disk_timing: DiskTiming,
    /// Use buffered I/O when the filesystem refuses O_DIRECT (recorded in
    /// [`SimInfo::disk_io`]); otherwise starting fails.
    pub allow_buffered_disk: bool,
    /// A Hugging Face `tokenizer.json`; None: the host's heuristic.
    pub tokenizer: Option<PathBuf>,
    /// Largest request body accepted (413 above it).
    pub max_body_bytes: usize,
}

impl SimConfig {
    /// Loopback on ephemeral ports, KVBM v1 names, no lies.
    pub fn new(profile: Profile, tier_mode: TierMode) -> Self {
        let lo = SocketAddr::from(([127, 0, 0, 1], 0));
        SimConfig {
            profile,
            tier_mode,
            listen: lo,
            metrics_listen: Some(lo),
            cache_dir: None,
            naming: Naming::V1,
            gds: false,
            lies: Lies::default(),
            disk_timing: DiskTiming::Model,
            allow_buffered_disk: false,
            tokenizer: None,
            max_body_bytes: 8 << 20,
        }
    }
}

/// What a run must record about the simulator it ran against.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct SimInfo {
    /// Always true: nothing here was measured on a serving engine.
    pub simulated: bool,
    pub profile: Profile,
    pub tier_mode: TierMode,
    pub naming: Naming,
    pub gds: bool,
    pub staged_disk_onboard: bool,
    pub lies: Lies,
    pub disk_timing: DiskTiming,
    /// None when there is no disk I/O (B0, B1, or `metrics_without_io`).
    pub disk_io: Option<IoMode>,
    pub disk_cache_file: Option<PathBuf>,
    pub disk_byte_scale: f64,
    pub disk_slot_bytes: u64,
    pub kv_bytes_per_token: u64,
    pub block_bytes: u64,
    pub gpu_blocks: u64,
    pub host_blocks: u64,
    pub disk_blocks: u64,
    pub tokenizer: String,
}

pub struct Simulator;

/// A running simulator. Dropping it without [`SimHandle::shutdown`] stops
/// the engine thread too (its command channel closes).
pub struct SimHandle {
    addr: SocketAddr,
    metrics_addr: Option<SocketAddr>,
    info: SimInfo,
    state: Arc<server::State>,
    stop: watch::Sender<bool>,
    engine: Option<std::thread::JoinHandle<()>>,
    disk_stats: Option<Arc<Mutex<DiskStats>>>,
}

impl Simulator {
    /// Starts the engine thread and both listeners on the current tokio runtime.
    pub async fn start(cfg: SimConfig) -> Result<SimHandle, SimError> {
        let p = cfg.profile.clone();
        p.validate()?;
        let staged = cfg.naming == Naming::V2 && !cfg.gds;
        let tokenizer: Box<dyn tokens::Tokenize> = match &cfg.tokenizer {
            Some(path) => {
                Box::new(tokens::HfTokenizer::from_file(path).map_err(SimError::Tokenizer)?)
            }
            None => Box::new(tokens::Heuristic),
        };
        let disk_blocks = if cfg.tier_mode == TierMode::B2 {
            p.disk_blocks()
        } else {
            0
        };
        let (store, disk_io, disk_file, disk_stats): (Box<dyn disk::BlockStore>, _, _, _) =
            if disk_blocks > 0 && !cfg.lies.metrics_without_io {
                let dir = cfg.cache_dir.as_ref().ok_or(SimError::NoCacheDir)?;
                let s = disk::DiskStore::create(
                    dir,
                    disk_blocks,
                    p.disk_slot_bytes(),
                    cfg.allow_buffered_disk,
                )?;
                let (mode, path, stats) = (s.mode(), s.path().to_owned(), s.stats_handle());
                (Box::new(s), Some(mode), Some(path), Some(stats))
            } else {
                (Box::new(disk::NullStore), None, None, None)
            };
        let listener = bind("endpoint", cfg.listen).await?;
        let addr = listener.local_addr().map_err(SimError::Start)?;
        let (mlistener, metrics_addr) = match cfg.metrics_listen {
            Some(a) => {
                let l = bind("KVBM metrics port", a).await?;
                let a = l.local_addr().map_err(SimError::Start)?;
                (Some(l), Some(a))
            }
            None => (None, None),
        };
        let info = SimInfo {
            simulated: true,
            tier_mode: cfg.tier_mode,
            naming: cfg.naming,
            gds: cfg.gds,
            staged_disk_onboard: staged,
            lies: cfg.lies,
            disk_timing: cfg.disk_timing,
            disk_io,
            disk_cache_file: disk_file,
            disk_byte_scale: p.disk_byte_scale,
            disk_slot_bytes: p.disk_slot_bytes(),
            kv_bytes_per_token: p.kv_bytes_per_token(),
            block_bytes: p.block_bytes(),
            gpu_blocks: p.gpu_blocks(),
            host_blocks: if cfg.tier_mode == TierMode::B0 {
                0
            } else {
                p.cpu_blocks()
            },
            disk_blocks,
            tokenizer: tokenizer.id(),
            profile: p.clone(),
        };
        let engine = engine::Engine::new(
            p.clone(),
            engine::EngineOptions {
                mode: cfg.tier_mode,
                staged_disk_onboard: staged,
                measured_disk_timing: cfg.disk_timing == DiskTiming::Measured,
            },
            store,
        );
        let shared = Arc::new(driver::Shared {
            epoch: std::time::Instant::now(),
            view: Mutex::default(),
            schedule: Mutex::default(),
        });
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = driver::spawn(engine, shared.clone(), rx).map_err(SimError::Start)?;
        let sim_labels = format!(
            "disk_io=\"{}\",naming=\"{}\",profile=\"{}\",tier_mode=\"{:?}\"",
            match (disk_io, cfg.lies.metrics_without_io) {
                (_, true) => "none (metrics_without_io)",
                (Some(IoMode::Direct), _) => "o_direct",
                (Some(IoMode::Buffered), _) => "buffered",
                (None, _) => "none",
            },
            match cfg.naming {
                Naming::V1 => "v1",
                Naming::V2 => "v2",
            },
            p.name,
            cfg.tier_mode
        );
        let created = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let state = Arc::new(server::State {
            model_info: metrics::ModelInfo {
                model: p.model.clone(),
                total_kv_blocks: p.gpu_blocks(),
                block_size: p.block_size,
                context_length: p.max_model_len,
                max_num_seqs: p.max_num_seqs,
                max_num_batched_tokens: p.max_num_batched_tokens,
                sim_labels,
            },
            info_json: serde_json::to_string(&info).unwrap_or_default(),
            profile: p,
            tokenizer,
            cmd: Mutex::new(tx),
            shared,
            frontend: Mutex::default(),
            next_id: AtomicU64::new(1),
            naming: cfg.naming,
            lies: cfg.lies,
            staged,
            max_body: cfg.max_body_bytes,
            created,
        });
        let (stop, stop_rx) = watch::channel(false);
        tokio::spawn(server::serve(
            state.clone(),
            listener,
            server::Port::Api,
            stop_rx.clone(),
        ));
        if let Some(l) = mlistener {
            tokio::spawn(server::serve(state.clone(), l, server::Port::Kvbm, stop_rx));
        }
        Ok(SimHandle {
            addr,
            metrics_addr,
            info,
            state,
            stop,
            engine: Some(thread),
            disk_stats,
        })
    }

    /// [`Simulator::start`] on a runtime of its own, on its own thread.
    pub fn start_blocking(cfg: SimConfig) -> Result<BlockingSim, SimError> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("kvbm-sim-io")
            .enable_all()
            .build()
            .map_err(SimError::Start)?;
        let handle = rt.block_on(Simulator::start(cfg))?;
        Ok(BlockingSim {
            rt: Some(rt),
            handle: Some(handle),
        })
    }
}

async fn bind(what: &'static str, addr: SocketAddr) -> Result<tokio::net::TcpListener, SimError> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| SimError::Bind { what, addr, source })
}

impl SimHandle {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }
    pub fn info(&self) -> &SimInfo {
        &self.info
    }
    /// The instant every `*_ns` time in the schedule record counts from, so
    /// an in-process client can timestamp what it receives on the same clock.
    pub fn epoch(&self) -> std::time::Instant {
        self.state.shared.epoch
    }
    /// The engine's schedule and the write times, per request, oldest first.
    pub fn schedule(&self) -> Vec<ScheduleRecord> {
        self.state
            .shared
            .schedule
            .lock()
            .map(|l| l.all())
            .unwrap_or_default()
    }
    /// The KVBM counters and gauges as they really are (lies not applied).
    pub fn kvbm_view(&self) -> KvbmView {
        self.state
            .shared
            .view
            .lock()
            .map(|g| g.0.clone())
            .unwrap_or_default()
    }
    pub fn occupancy(&self) -> Occupancy {
        self.state
            .shared
            .view
            .lock()
            .map(|g| g.1.clone())
            .unwrap_or_default()
    }
    /// Bytes the disk tier wrote and read; None without disk I/O.
    pub fn disk_stats(&self) -> Option<DiskStats> {
        self.disk_stats
            .as_ref()
            .and_then(|s| s.lock().ok().map(|g| *g))
    }

    /// Stops the listeners and the engine thread, and removes the cache file.
    pub async fn shutdown(mut self) {
        self.stop_all();
        if let Some(t) = self.engine.take() {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
    }

    fn stop_all(&self) {
        let _ = self.stop.send(true);
        if let Ok(tx) = self.state.cmd.lock() {
            let _ = tx.send(driver::Cmd::Shutdown);
        }
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        self.stop_all();
    }
}

/// A simulator on its own runtime, for callers without one.
pub struct BlockingSim {
    rt: Option<tokio::runtime::Runtime>,
    handle: Option<SimHandle>,
}

impl BlockingSim {
    pub fn handle(&self) -> Option<&SimHandle> {
        self.handle.as_ref()
    }
    pub fn addr(&self) -> Option<SocketAddr> {
        self.handle.as_ref().map(SimHandle::addr)
    }
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.handle.as_ref().and_then(SimHandle::metrics_addr)
    }
    pub fn shutdown(mut self) {
        if let (Some(rt), Some(h)) = (self.rt.take(), self.handle.take()) {
            rt.block_on(h.shutdown());
            rt.shutdown_background();
        }
    }
}
