//! The WebAssembly sandbox workloads run in.
//!
//! Layout:
//! - [`bindings`]: `bindgen!` output for `sparkhost:workload@0.1.0`, and nothing else.
//! - [`cache`]: compiled components on disk, keyed by wasm digest + engine.
//! - [`report`]: the `sparkhost:report@0.1.0` world: report generators over a
//!   read-only run directory.
//! - this module: engine with epoch deadlines, memory caps, WASI with no
//!   filesystem, network, environment or real clock, version detection, and
//!   the [`WorkloadInstance`] that turns guest calls into host plan types.

pub mod bindings;
pub mod cache;
pub mod report;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use wasmtime::component::{Component, HasSelf, Linker, ResourceAny, ResourceTable};
use wasmtime::{Engine, Store, StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use self::bindings::sparkhost::workload::{host as wit_host, types as wit};
use crate::digest::sha256_hex;
use crate::plan;
use crate::tokenize::TokenCounter;

/// WIT package versions of `sparkhost:workload` this host can run.
pub const SUPPORTED_WIT_VERSIONS: &[&str] = &["0.1.0"];
const PLANNER_EXPORT: &str = "sparkhost:workload/planner@";
use crate::limits::EPOCH_TICK as TICK;
/// The wasmtime this host was built with (from the dependency itself).
pub const WASMTIME_VERSION: &str = wasmtime_environ::VERSION;

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("cannot read workload {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a WebAssembly file")]
    NotWasm { path: PathBuf },
    #[error(
        "{path} is a core WebAssembly module, not a component: build it for wasm32-wasip2 (or wrap it with `wasm-tools component new`)"
    )]
    CoreModule { path: PathBuf },
    #[error("cannot compile {path}: {message}")]
    Compile { path: PathBuf, message: String },
    #[error(
        "{path} is not a sparkhost workload: it exports no `sparkhost:workload/planner` interface (exports: {exports})"
    )]
    NotAWorkload { path: PathBuf, exports: String },
    #[error(
        "{path} targets sparkhost:workload@{found}, which this host does not support (supported: {supported}); rebuild it against a supported WIT version or upgrade sparkhost"
    )]
    UnsupportedVersion {
        path: PathBuf,
        found: String,
        supported: String,
    },
    #[error("cannot instantiate {path}: {message}")]
    Instantiate { path: PathBuf, message: String },
    #[error(
        "workload {workload} exceeded its {limit:?} deadline in `{call}` (raise --workload-call-timeout if it is legitimately slow)"
    )]
    Deadline {
        workload: String,
        call: &'static str,
        limit: Duration,
    },
    #[error(
        "workload {workload} exceeded its memory cap of {limit_mib} MiB in `{call}` (raise --workload-memory-mib if it needs more)"
    )]
    MemoryCap {
        workload: String,
        call: &'static str,
        limit_mib: u64,
    },
    #[error("workload {workload} trapped in `{call}`{stderr}\ntrap: {message}")]
    Trap {
        workload: String,
        call: &'static str,
        message: String,
        stderr: String,
    },
    #[error("workload {workload} reported an error in `{call}`: {error}")]
    Guest {
        workload: String,
        call: &'static str,
        error: GuestError,
    },
    #[error("workload {workload} returned invalid output from `{call}`: {message}")]
    BadOutput {
        workload: String,
        call: &'static str,
        message: String,
    },
    #[error("workload {workload} was used after a trap; it cannot be called again")]
    Poisoned { workload: String },
    #[error("cannot grant data file {path} to the workload: {message}")]
    Data { path: PathBuf, message: String },
}

/// Where granted data files appear inside the guest.
pub const DATA_DIR: &str = "/data";

/// Files granted read-only to a workload, by explicit request only.
#[derive(Debug, Clone, Default)]
pub struct DataGrants {
    files: Vec<PathBuf>,
}

impl DataGrants {
    /// Adds a file; returns the path the guest sees it at (`/data/<file name>`).
    pub fn add(&mut self, path: &Path) -> Result<String, SandboxError> {
        let err = |message: String| SandboxError::Data {
            path: path.to_owned(),
            message,
        };
        if !path.is_file() {
            return Err(err("it is not a readable file".into()));
        }
        // A kernel file is not data: `/proc/self/environ` would hand the
        // host's environment (API keys) to the guest, `/dev/zero` never ends.
        let real = std::fs::canonicalize(path).map_err(|e| err(e.to_string()))?;
        if let Some(root) = ["/proc", "/sys", "/dev"]
            .iter()
            .find(|r| real.starts_with(r))
        {
            return Err(err(format!(
                "it is under {root} ({}): kernel files are never granted to a workload",
                real.display()
            )));
        }
        let len = std::fs::metadata(&real)
            .map_err(|e| err(e.to_string()))?
            .len();
        let max = crate::limits::MAX_DATA_FILE_BYTES;
        if len > max {
            return Err(err(format!(
                "it is {len} bytes; data files are copied for the workload and may be at most {max} bytes"
            )));
        }
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| err("it has no file name".into()))?;
        if self.files.iter().any(|f| f.file_name() == path.file_name()) {
            if self.files.iter().any(|f| f == path) {
                return Ok(format!("{DATA_DIR}/{name}"));
            }
            return Err(err(format!("another granted file is also named {name:?}")));
        }
        self.files.push(path.to_owned());
        Ok(format!("{DATA_DIR}/{name}"))
    }

    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// Copies the files into a private directory the guest may read; a copy,
    /// not a link, so nothing beside the file is reachable from the guest.
    fn materialize(&self) -> Result<Option<tempfile::TempDir>, SandboxError> {
        if self.files.is_empty() {
            return Ok(None);
        }
        let dir = tempfile::Builder::new()
            .prefix("sparkhost-data-")
            .tempdir()
            .map_err(|e| SandboxError::Data {
                path: PathBuf::new(),
                message: format!("cannot create a private directory: {e}"),
            })?;
        for f in &self.files {
            let dest = dir.path().join(f.file_name().unwrap_or_default());
            std::fs::copy(f, &dest).map_err(|e| SandboxError::Data {
                path: f.clone(),
                message: e.to_string(),
            })?;
        }
        Ok(Some(dir))
    }
}

/// The guest's own error variants.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GuestError {
    #[error("invalid config: {0}")]
    InvalidConfig(String),
    #[error("unsupported: {0}")]
    Unsupported(String),
    #[error("internal: {0}")]
    Internal(String),
}

impl From<wit::WorkloadError> for GuestError {
    fn from(e: wit::WorkloadError) -> Self {
        match e {
            wit::WorkloadError::InvalidConfig(m) => GuestError::InvalidConfig(m),
            wit::WorkloadError::Unsupported(m) => GuestError::Unsupported(m),
            wit::WorkloadError::Internal(m) => GuestError::Internal(m),
        }
    }
}

/// Resource limits for each guest call.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub call_timeout: Duration,
    pub memory_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            call_timeout: crate::limits::WORKLOAD_CALL_TIMEOUT,
            memory_bytes: crate::limits::WORKLOAD_MEMORY_MIB << 20,
        }
    }
}

/// Per-store state of every guest, workload or report generator: the WASI
/// context [`guest_wasi`] made, the memory cap, the guest's label for logs,
/// and what its world's host services need (`H`).
pub struct GuestState<H> {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(crate) limits: StoreLimits,
    pub(crate) label: String,
    host: H,
}

impl<H> GuestState<H> {
    pub(crate) fn new(wasi: WasiCtx, memory_bytes: u64, label: String, host: H) -> Self {
        GuestState {
            wasi,
            table: ResourceTable::new(),
            limits: memory_cap(memory_bytes),
            label,
            host,
        }
    }

    /// A guest's `log` import, whichever world it came through.
    pub(crate) fn log(&self, level: tracing::Level, message: &str) {
        let g = &self.label;
        match level {
            tracing::Level::TRACE => tracing::trace!(guest = %g, "{message}"),
            tracing::Level::DEBUG => tracing::debug!(guest = %g, "{message}"),
            tracing::Level::INFO => tracing::info!(guest = %g, "{message}"),
            tracing::Level::WARN => tracing::warn!(guest = %g, "{message}"),
            tracing::Level::ERROR => tracing::error!(guest = %g, "{message}"),
        }
    }
}

impl<H: Send> WasiView for GuestState<H> {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// A workload's store: its host services count tokens with the run's tokenizer.
pub type State = GuestState<Arc<TokenCounter>>;

impl wit::Host for State {}

impl wit_host::Host for State {
    fn log(&mut self, level: wit_host::Level, message: String) {
        let level = match level {
            wit_host::Level::Trace => tracing::Level::TRACE,
            wit_host::Level::Debug => tracing::Level::DEBUG,
            wit_host::Level::Info => tracing::Level::INFO,
            wit_host::Level::Warn => tracing::Level::WARN,
            wit_host::Level::Error => tracing::Level::ERROR,
        };
        GuestState::log(self, level, &message);
    }

    fn count_tokens(&mut self, text: String) -> u32 {
        self.host.count(&text)
    }

    fn fit_to_tokens(&mut self, text: String, target: u32, filler: String) -> String {
        self.host.fit(&text, target, &filler)
    }

    fn tokenizer_id(&mut self) -> String {
        self.host.id()
    }
}

/// A frozen clock: guests get no wall clock, so their output cannot depend on when they run.
struct FrozenClock;

impl wasmtime_wasi::HostWallClock for FrozenClock {
    fn resolution(&self) -> Duration {
        Duration::from_secs(1)
    }
    fn now(&self) -> Duration {
        Duration::ZERO
    }
}

impl wasmtime_wasi::HostMonotonicClock for FrozenClock {
    fn resolution(&self) -> u64 {
        1_000_000_000
    }
    fn now(&self) -> u64 {
        0
    }
}

/// One engine, one linker, one epoch ticker for the process.
pub struct Sandbox {
    engine: Engine,
    linker: Linker<State>,
    cache: cache::ComponentCache,
    limits: Limits,
    ticker_stop: Arc<AtomicBool>,
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
    }
}

/// A compiled, version-checked workload component.
pub struct LoadedWorkload {
    pub path: PathBuf,
    pub digest: String,
    pub wit_version: String,
    pub size_bytes: usize,
    pub from_cache: bool,
    pre: bindings::WorkloadPre<State>,
}

impl Sandbox {
    /// Shared with the report runtime ([`report`]), which links its own world.
    pub(crate) fn engine(&self) -> &Engine {
        &self.engine
    }

    pub(crate) fn component_cache(&self) -> &cache::ComponentCache {
        &self.cache
    }

    pub fn new(cache_dir: Option<PathBuf>, limits: Limits) -> Result<Self, SandboxError> {
        let mut cfg = wasmtime::Config::new();
        cfg.epoch_interruption(true);
        cfg.wasm_component_model(true);
        let engine = Engine::new(&cfg).map_err(|e| SandboxError::Compile {
            path: PathBuf::new(),
            message: format!("cannot create the wasm engine: {e}"),
        })?;
        let mut linker = Linker::<State>::new(&engine);
        let link_err = |e: wasmtime::Error| SandboxError::Compile {
            path: PathBuf::new(),
            message: format!("cannot link host functions: {e}"),
        };
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(link_err)?;
        bindings::Workload::add_to_linker::<State, HasSelf<State>>(&mut linker, |s| s)
            .map_err(link_err)?;
        let ticker_stop = Arc::new(AtomicBool::new(false));
        {
            let engine = engine.clone();
            let stop = ticker_stop.clone();
            std::thread::Builder::new()
                .name("wasm-epoch".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(TICK);
                        engine.increment_epoch();
                    }
                })
                .map_err(|e| SandboxError::Compile {
                    path: PathBuf::new(),
                    message: format!("cannot start the epoch thread: {e}"),
                })?;
        }
        let cache = cache::ComponentCache::new(cache_dir, &engine);
        Ok(Sandbox {
            engine,
            linker,
            cache,
            limits,
            ticker_stop,
        })
    }

    /// Reads, checks, compiles (or loads from cache) and pre-links a workload.
    pub fn load(&self, path: &Path) -> Result<LoadedWorkload, SandboxError> {
        let bytes = read_component(path)?;
        let digest = sha256_hex(&bytes);
        if bytes.len() > (1 << 20) && !self.cache.contains(&digest) {
            // Interpreter-based guests take 10–20 s to compile; say why we are quiet.
            eprintln!(
                "sparkhost: compiling {} ({:.1} MB) once; later runs load it from the cache",
                path.display(),
                bytes.len() as f64 / 1e6
            );
        }
        let (component, from_cache) = self
            .cache
            .load_or_compile(&self.engine, &bytes, &digest)
            .map_err(|message| SandboxError::Compile {
                path: path.to_owned(),
                message,
            })?;
        let wit_version = detect_version(&self.engine, &component, path)?;
        let pre = self
            .linker
            .instantiate_pre(&component)
            .and_then(bindings::WorkloadPre::new)
            .map_err(|e| SandboxError::Instantiate {
                path: path.to_owned(),
                message: format!("{e:#}"),
            })?;
        Ok(LoadedWorkload {
            path: path.to_owned(),
            digest,
            wit_version,
            size_bytes: bytes.len(),
            from_cache,
            pre,
        })
    }

    /// The interfaces the component at `path` imports and exports, by
    /// their WIT names (`wasi:cli/environment@0.2.0`), from its type.
    pub fn interfaces(&self, path: &Path) -> Result<(Vec<String>, Vec<String>), SandboxError> {
        let bytes = read_component(path)?;
        let digest = sha256_hex(&bytes);
        let (component, _) = self
            .cache
            .load_or_compile(&self.engine, &bytes, &digest)
            .map_err(|message| SandboxError::Compile {
                path: path.to_owned(),
                message,
            })?;
        let ty = component.component_type();
        let imports = ty
            .imports(&self.engine)
            .map(|(n, _)| n.to_owned())
            .collect();
        let exports = ty
            .exports(&self.engine)
            .map(|(n, _)| n.to_owned())
            .collect();
        Ok((imports, exports))
    }

    /// A fresh instance of `w` (its own store, memory and limits).
    pub fn instantiate(
        &self,
        w: &LoadedWorkload,
        tokens: Arc<TokenCounter>,
        seed: u64,
        data: &DataGrants,
    ) -> Result<WorkloadInstance, SandboxError> {
        let stderr = MemoryOutputPipe::new(crate::limits::GUEST_STDERR_BYTES);
        let data_dir = data.materialize()?;
        let mut seed_bytes = sha256_hex(&seed.to_le_bytes()).into_bytes();
        seed_bytes.truncate(32);
        let wasi = guest_wasi(
            data_dir.as_ref().map(|d| (d.path(), DATA_DIR)),
            &stderr,
            seed_bytes,
            u128::from(seed),
        )?;
        let label = file_label(&w.path);
        let state = State::new(wasi, self.limits.memory_bytes, label.clone(), tokens);
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limits);
        store.set_epoch_deadline(ticks(self.limits.call_timeout));
        let bindings = w
            .pre
            .instantiate(&mut store)
            .map_err(|e| SandboxError::Instantiate {
                path: w.path.clone(),
                message: format!("{e:#}"),
            })?;
        let mut inst = WorkloadInstance {
            store,
            bindings,
            generator: None,
            name: label,
            limits: self.limits,
            stderr,
            poisoned: false,
            _data_dir: data_dir,
        };
        let info = inst.describe()?;
        inst.name = format!("{} {}", info.name, info.version);
        Ok(inst)
    }
}

/// The bytes of the component at `path`, refused unless they are one.
pub(crate) fn read_component(path: &Path) -> Result<Vec<u8>, SandboxError> {
    let bytes = std::fs::read(path).map_err(|source| SandboxError::Read {
        path: path.to_owned(),
        source,
    })?;
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err(SandboxError::NotWasm {
            path: path.to_owned(),
        });
    }
    // Byte 6-7: layer; 0 is a core module, 1 a component.
    if bytes[6..8] == [0, 0] {
        return Err(SandboxError::CoreModule {
            path: path.to_owned(),
        });
    }
    Ok(bytes)
}

/// The WASI context of every guest: stdout discarded, stderr kept in
/// `stderr`, the [`FrozenClock`], randomness from `random_seed` (and
/// `insecure_seed`), no network, and no filesystem but `preopen`, a host
/// directory granted read-only at a guest path.
pub(crate) fn guest_wasi(
    preopen: Option<(&Path, &str)>,
    stderr: &MemoryOutputPipe,
    random_seed: Vec<u8>,
    insecure_seed: u128,
) -> Result<WasiCtx, SandboxError> {
    let mut builder = WasiCtx::builder();
    if let Some((dir, guest_path)) = preopen {
        // cap-std confines the guest to this directory: `..` and symbolic
        // links that lead outside it are refused.
        builder
            .preopened_dir(dir, guest_path, wasmtime_wasi::FsPerms::ReadOnly)
            .map_err(|e| SandboxError::Data {
                path: dir.to_owned(),
                message: format!("{e:#}"),
            })?;
    }
    Ok(builder
        .stdout(wasmtime_wasi::p2::pipe::SinkOutputStream)
        .stderr(stderr.clone())
        .wall_clock(FrozenClock)
        .monotonic_clock(FrozenClock)
        .secure_random(wasmtime_wasi::Deterministic::new(random_seed.clone()))
        .insecure_random(wasmtime_wasi::Deterministic::new(random_seed))
        .insecure_random_seed(insecure_seed)
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false)
        .build())
}

/// Store limits that cap linear memory at `memory_bytes`; growing past it traps.
pub(crate) fn memory_cap(memory_bytes: u64) -> StoreLimits {
    StoreLimitsBuilder::new()
        .memory_size(memory_bytes as usize)
        .trap_on_grow_failure(true)
        .build()
}

/// A component's file name, for messages and log fields.
pub(crate) fn file_label(path: &Path) -> String {
    path.file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Deadline, memory cap, or another trap (with what the guest wrote to
/// stderr first: a panic message reads better than a wasm backtrace).
pub(crate) fn classify_trap(
    workload: String,
    call: &'static str,
    e: wasmtime::Error,
    limits: Limits,
    stderr: &MemoryOutputPipe,
) -> SandboxError {
    if e.downcast_ref::<wasmtime::Trap>() == Some(&wasmtime::Trap::Interrupt) {
        return SandboxError::Deadline {
            workload,
            call,
            limit: limits.call_timeout,
        };
    }
    let message = format!("{e:#}");
    if message.contains("forcing trap when growing memory") {
        return SandboxError::MemoryCap {
            workload,
            call,
            limit_mib: limits.memory_bytes >> 20,
        };
    }
    let captured = String::from_utf8_lossy(&stderr.contents())
        .trim()
        .to_owned();
    let stderr = if captured.is_empty() {
        String::new()
    } else {
        format!(", its stderr says:\n{captured}")
    };
    SandboxError::Trap {
        workload,
        call,
        message,
        stderr,
    }
}

pub(crate) fn ticks(d: Duration) -> u64 {
    (d.as_millis() / TICK.as_millis()).max(1) as u64
}

/// Reads the WIT version from the planner interface the component exports.
fn detect_version(engine: &Engine, c: &Component, path: &Path) -> Result<String, SandboxError> {
    let names: Vec<String> = c
        .component_type()
        .exports(engine)
        .map(|(name, _)| name.to_owned())
        .collect();
    let Some(version) = names
        .iter()
        .find_map(|n| n.strip_prefix(PLANNER_EXPORT))
        .map(str::to_owned)
    else {
        return Err(SandboxError::NotAWorkload {
            path: path.to_owned(),
            exports: if names.is_empty() {
                "none".into()
            } else {
                names.join(", ")
            },
        });
    };
    if !SUPPORTED_WIT_VERSIONS.contains(&version.as_str()) {
        return Err(SandboxError::UnsupportedVersion {
            path: path.to_owned(),
            found: version,
            supported: SUPPORTED_WIT_VERSIONS.join(", "),
        });
    }
    Ok(version)
}

/// The workload's self-description.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct WorkloadInfo {
    pub name: String,
    pub version: String,
    pub description: String,
    pub params: Vec<ParamInfo>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ParamInfo {
    pub name: String,
    pub description: String,
    pub default_value: String,
}

/// A live workload: one store, at most one generator.
pub struct WorkloadInstance {
    store: Store<State>,
    bindings: bindings::Workload,
    generator: Option<ResourceAny>,
    name: String,
    limits: Limits,
    stderr: MemoryOutputPipe,
    poisoned: bool,
    /// Keeps the granted files alive as long as the guest can read them.
    _data_dir: Option<tempfile::TempDir>,
}

impl WorkloadInstance {
    /// "name version", for messages.
    pub fn label(&self) -> &str {
        &self.name
    }

    fn begin(&mut self) -> Result<(), SandboxError> {
        if self.poisoned {
            return Err(SandboxError::Poisoned {
                workload: self.name.clone(),
            });
        }
        self.store
            .set_epoch_deadline(ticks(self.limits.call_timeout));
        Ok(())
    }

    /// Classifies a failed call: deadline, memory cap or other trap.
    fn trap(&mut self, call: &'static str, e: wasmtime::Error) -> SandboxError {
        self.poisoned = true;
        classify_trap(self.name.clone(), call, e, self.limits, &self.stderr)
    }

    pub fn describe(&mut self) -> Result<WorkloadInfo, SandboxError> {
        self.begin()?;
        let r = {
            let b = &self.bindings;
            b.sparkhost_workload_planner()
                .call_describe(&mut self.store)
        };
        let info = r.map_err(|e| self.trap("describe", e))?;
        Ok(WorkloadInfo {
            name: info.name,
            version: info.version,
            description: info.description,
            params: info
                .params
                .into_iter()
                .map(|p| ParamInfo {
                    name: p.name,
                    description: p.description,
                    default_value: p.default_value,
                })
                .collect(),
        })
    }

    /// Builds the generator; call once before planning.
    pub fn create(&mut self, params: &[(String, String)], seed: u64) -> Result<(), SandboxError> {
        self.begin()?;
        let wit_params: Vec<wit::Param> = params
            .iter()
            .map(|(n, v)| wit::Param {
                name: n.clone(),
                value: v.clone(),
            })
            .collect();
        let r = {
            let b = &self.bindings;
            b.sparkhost_workload_planner().generator().call_create(
                &mut self.store,
                &wit_params,
                seed,
            )
        };
        match r.map_err(|e| self.trap("create", e))? {
            Ok(g) => {
                self.generator = Some(g);
                Ok(())
            }
            Err(e) => Err(self.guest("create", e)),
        }
    }

    fn guest(&self, call: &'static str, e: wit::WorkloadError) -> SandboxError {
        SandboxError::Guest {
            workload: self.name.clone(),
            call,
            error: e.into(),
        }
    }

    fn generator(&self, call: &'static str) -> Result<ResourceAny, SandboxError> {
        self.generator.ok_or_else(|| SandboxError::BadOutput {
            workload: self.name.clone(),
            call,
            message: "called before `create`".into(),
        })
    }

    pub fn phases(&mut self) -> Result<Vec<plan::PhasePlan>, SandboxError> {
        self.begin()?;
        let g = self.generator("phases")?;
        let r = {
            let b = &self.bindings;
            b.sparkhost_workload_planner()
                .generator()
                .call_phases(&mut self.store, g)
        };
        let phases: Vec<plan::PhasePlan> = r
            .map_err(|e| self.trap("phases", e))?
            .into_iter()
            .map(convert::phase)
            .collect();
        plan::validate_phases(&phases).map_err(|message| SandboxError::BadOutput {
            workload: self.name.clone(),
            call: "phases",
            message,
        })?;
        Ok(phases)
    }

    pub fn next_batch(&mut self, max: u32) -> Result<plan::PlanBatch, SandboxError> {
        self.begin()?;
        let g = self.generator("next-batch")?;
        let r = {
            let b = &self.bindings;
            b.sparkhost_workload_planner()
                .generator()
                .call_next_batch(&mut self.store, g, max)
        };
        match r.map_err(|e| self.trap("next-batch", e))? {
            Ok(batch) => {
                if batch.requests.len() > max as usize {
                    return Err(SandboxError::BadOutput {
                        workload: self.name.clone(),
                        call: "next-batch",
                        message: format!(
                            "asked for at most {max} requests, got {}",
                            batch.requests.len()
                        ),
                    });
                }
                let requests: Vec<plan::RequestPlan> =
                    batch.requests.into_iter().map(convert::request).collect();
                // Guest output is validated here, at the boundary, so nothing
                // downstream converts an absurd time into a panic.
                if let Some((r, e)) = requests
                    .iter()
                    .find_map(|r| r.arrival.validate().err().map(|e| (r, e)))
                {
                    return Err(SandboxError::BadOutput {
                        workload: self.name.clone(),
                        call: "next-batch",
                        message: format!("request {:?}: arrival: {e}", r.id),
                    });
                }
                Ok(plan::PlanBatch {
                    requests,
                    done: batch.done,
                })
            }
            Err(e) => Err(self.guest("next-batch", e)),
        }
    }

    pub fn on_response(&mut self, s: plan::ResponseSummary) -> Result<(), SandboxError> {
        self.begin()?;
        let g = self.generator("on-response")?;
        let summary = convert::summary(s);
        let r = {
            let b = &self.bindings;
            b.sparkhost_workload_planner().generator().call_on_response(
                &mut self.store,
                g,
                &summary,
            )
        };
        match r.map_err(|e| self.trap("on-response", e))? {
            Ok(()) => Ok(()),
            Err(e) => Err(self.guest("on-response", e)),
        }
    }
}

impl Drop for WorkloadInstance {
    fn drop(&mut self) {
        if let (Some(g), false) = (self.generator.take(), self.poisoned) {
            let _ = g.resource_drop(&mut self.store);
        }
    }
}

impl plan::Planner for WorkloadInstance {
    fn phases(&mut self) -> Result<Vec<plan::PhasePlan>, plan::PlanError> {
        Ok(WorkloadInstance::phases(self)?)
    }
    fn next_batch(&mut self, max: u32) -> Result<plan::PlanBatch, plan::PlanError> {
        Ok(WorkloadInstance::next_batch(self, max)?)
    }
    fn on_response(&mut self, s: plan::ResponseSummary) -> Result<(), plan::PlanError> {
        Ok(WorkloadInstance::on_response(self, s)?)
    }
}

/// WIT records ⇄ host plan types.
mod convert {
    use super::wit;
    use crate::plan;

    pub fn phase(p: wit::Phase) -> plan::PhasePlan {
        plan::PhasePlan {
            name: p.name,
            include_in_summary: p.include_in_summary,
            load: p.load.map(|l| match l {
                wit::LoadModel::Closed(c) => plan::LoadModel::Closed { concurrency: c },
                wit::LoadModel::Constant(rate) => plan::LoadModel::Constant { rate },
                wit::LoadModel::Poisson(rate) => plan::LoadModel::Poisson { rate },
                wit::LoadModel::Gamma(g) => plan::LoadModel::Gamma {
                    rate: g.rate,
                    shape: g.shape,
                },
            }),
        }
    }

    pub fn request(r: wit::RequestSpec) -> plan::RequestPlan {
        plan::RequestPlan {
            id: r.id,
            phase: r.phase,
            session_id: r.session_id,
            prefix_hash: r.prefix_hash,
            prompt: match r.prompt {
                wit::Prompt::Text(t) => plan::Prompt::Text(t),
                wit::Prompt::Chat(m) => plan::Prompt::Chat(
                    m.into_iter()
                        .map(|m| plan::ChatMessage {
                            role: m.role,
                            content: m.content,
                        })
                        .collect(),
                ),
            },
            generation: plan::Generation {
                max_tokens: r.generation.max_tokens,
                temperature: r.generation.temperature,
                top_p: r.generation.top_p,
                stop: r.generation.stop,
                seed: r.generation.seed,
                ignore_eos: r.generation.ignore_eos,
            },
            arrival: match r.arrival {
                wit::Arrival::Asap => plan::Arrival::Asap,
                wit::Arrival::AtOffsetMs(ms) => plan::Arrival::AtOffsetMs(ms),
                wit::Arrival::AfterPreviousTurn(ms) => plan::Arrival::AfterPreviousTurn(ms),
            },
            labels: r.labels.into_iter().map(|l| (l.key, l.value)).collect(),
        }
    }

    pub fn summary(s: plan::ResponseSummary) -> wit::ResponseSummary {
        wit::ResponseSummary {
            id: s.id,
            phase: s.phase,
            session_id: s.session_id,
            ok: s.ok,
            status: s.status,
            error_kind: s.error_kind.map(|k| k.to_string()),
            text: s.text,
            prompt_tokens: s.prompt_tokens,
            completion_tokens: s.completion_tokens,
            cached_tokens: s.cached_tokens,
            ttft_ms: s.ttft_ms,
            e2e_ms: s.e2e_ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::DataGrants;

    #[test]
    fn kernel_files_are_never_granted() {
        for p in [
            "/proc/self/environ",
            "/proc/self/cmdline",
            "/sys/kernel/mm/transparent_hugepage/enabled",
        ] {
            let path = std::path::Path::new(p);
            if !path.exists() {
                continue;
            }
            let e = DataGrants::default().add(path).unwrap_err().to_string();
            assert!(e.contains("kernel files are never granted"), "{p}: {e}");
        }
        // Through a symbolic link too.
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("innocent.txt");
        std::os::unix::fs::symlink("/proc/self/environ", &link).unwrap();
        let e = DataGrants::default().add(&link).unwrap_err().to_string();
        assert!(e.contains("/proc"), "{e}");
        let ok = dir.path().join("ok.txt");
        std::fs::write(&ok, "x").unwrap();
        assert_eq!(DataGrants::default().add(&ok).unwrap(), "/data/ok.txt");
    }
}
