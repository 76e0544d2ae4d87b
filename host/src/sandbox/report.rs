//! Report generators: components of the `sparkhost:report@0.1.0` world.
//!
//! They share the workload sandbox's engine, epoch ticker and compile cache,
//! and its rules (frozen clock, seeded randomness, no network, no environment,
//! a memory cap and a deadline); what differs is the world and that the run
//! directory is visible read-only at [`RUN_DIR`]. Generators return files;
//! writing them is the caller's job ([`crate::report`]), after it checked the
//! names.

use std::path::{Path, PathBuf};
use std::time::Duration;

use wasmtime::Store;
use wasmtime::component::{HasSelf, Linker};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;

use super::{Sandbox, SandboxError, file_label, guest_wasi, read_component, ticks};
use crate::digest::sha256_hex;

mod bindings {
    #![allow(missing_docs, clippy::all)]
    wasmtime::component::bindgen!({
        world: "report-generator",
        path: "../wit/report@0.1.0",
    });
}

use bindings::sparkhost::report::{host as wit_host, types as wit};

/// WIT package versions of `sparkhost:report` this host can run.
pub const SUPPORTED_REPORT_WIT_VERSIONS: &[&str] = &["0.1.0"];
const GENERATOR_EXPORT: &str = "sparkhost:report/generator@";
/// Where the run directory appears inside the guest.
pub const RUN_DIR: &str = "/run";

/// Deadline and memory cap of one generator call.
#[derive(Debug, Clone, Copy)]
pub struct ReportLimits {
    pub call_timeout: Duration,
    pub memory_bytes: u64,
}

impl Default for ReportLimits {
    /// Larger than a workload's: a generator reads the whole run, and a long
    /// run's `requests.jsonl` is hundreds of megabytes.
    fn default() -> Self {
        ReportLimits {
            call_timeout: crate::limits::REPORT_CALL_TIMEOUT,
            memory_bytes: crate::limits::REPORT_MEMORY_MIB << 20,
        }
    }
}

/// A report generator's store: no host services beyond `log`.
pub type ReportState = super::GuestState<()>;

impl wit::Host for ReportState {}

impl wit_host::Host for ReportState {
    fn log(&mut self, level: wit_host::Level, message: String) {
        let level = match level {
            wit_host::Level::Trace => tracing::Level::TRACE,
            wit_host::Level::Debug => tracing::Level::DEBUG,
            wit_host::Level::Info => tracing::Level::INFO,
            wit_host::Level::Warn => tracing::Level::WARN,
            wit_host::Level::Error => tracing::Level::ERROR,
        };
        super::GuestState::log(self, level, &message);
    }
}

/// The guest's self-description.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct GeneratorInfo {
    pub name: String,
    pub version: String,
    pub description: String,
    pub params: Vec<super::ParamInfo>,
}

/// A file the generator wants written (not yet checked).
#[derive(Debug, Clone, PartialEq)]
pub struct OutputFile {
    pub name: String,
    pub bytes: Vec<u8>,
}

/// A small document handed to the guest as text.
#[derive(Debug, Clone)]
pub struct Document {
    pub name: String,
    pub text: String,
}

/// Everything the guest is told about the run besides what it reads at `/run`.
#[derive(Debug, Clone, Default)]
pub struct ReportInput {
    pub run_id: String,
    pub files: Vec<String>,
    pub documents: Vec<Document>,
    pub params: Vec<(String, String)>,
}

/// A compiled, version-checked report generator.
pub struct LoadedGenerator {
    pub path: PathBuf,
    pub digest: String,
    pub wit_version: String,
    pub from_cache: bool,
    pre: bindings::ReportGeneratorPre<ReportState>,
}

/// The report world linked on a [`Sandbox`]'s engine.
pub struct ReportRuntime<'a> {
    sandbox: &'a Sandbox,
    linker: Linker<ReportState>,
    limits: ReportLimits,
}

impl<'a> ReportRuntime<'a> {
    pub fn new(sandbox: &'a Sandbox, limits: ReportLimits) -> Result<Self, SandboxError> {
        let mut linker = Linker::<ReportState>::new(sandbox.engine());
        let link_err = |e: wasmtime::Error| SandboxError::Compile {
            path: PathBuf::new(),
            message: format!("cannot link report host functions: {e}"),
        };
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(link_err)?;
        bindings::ReportGenerator::add_to_linker::<ReportState, HasSelf<ReportState>>(
            &mut linker,
            |s| s,
        )
        .map_err(link_err)?;
        Ok(ReportRuntime {
            sandbox,
            linker,
            limits,
        })
    }

    pub fn load(&self, path: &Path) -> Result<LoadedGenerator, SandboxError> {
        let bytes = read_component(path)?;
        let digest = sha256_hex(&bytes);
        let engine = self.sandbox.engine();
        let (component, from_cache) = self
            .sandbox
            .component_cache()
            .load_or_compile(engine, &bytes, &digest)
            .map_err(|message| SandboxError::Compile {
                path: path.to_owned(),
                message,
            })?;
        let names: Vec<String> = component
            .component_type()
            .exports(engine)
            .map(|(name, _)| name.to_owned())
            .collect();
        let Some(wit_version) = names
            .iter()
            .find_map(|n| n.strip_prefix(GENERATOR_EXPORT))
            .map(str::to_owned)
        else {
            return Err(SandboxError::Instantiate {
                path: path.to_owned(),
                message: format!(
                    "it is not a sparkhost report generator: it exports no `sparkhost:report/generator` interface (exports: {})",
                    if names.is_empty() {
                        "none".to_owned()
                    } else {
                        names.join(", ")
                    }
                ),
            });
        };
        if !SUPPORTED_REPORT_WIT_VERSIONS.contains(&wit_version.as_str()) {
            return Err(SandboxError::Instantiate {
                path: path.to_owned(),
                message: format!(
                    "it targets sparkhost:report@{wit_version}, which this host does not support (supported: {})",
                    SUPPORTED_REPORT_WIT_VERSIONS.join(", ")
                ),
            });
        }
        let pre = self
            .linker
            .instantiate_pre(&component)
            .and_then(bindings::ReportGeneratorPre::new)
            .map_err(|e| SandboxError::Instantiate {
                path: path.to_owned(),
                message: format!("{e:#}"),
            })?;
        Ok(LoadedGenerator {
            path: path.to_owned(),
            digest,
            wit_version,
            from_cache,
            pre,
        })
    }

    /// A fresh store and instance; `run_dir` is preopened read-only when given.
    fn instantiate(
        &self,
        g: &LoadedGenerator,
        run_dir: Option<&Path>,
    ) -> Result<Instance, SandboxError> {
        let stderr = MemoryOutputPipe::new(64 << 10);
        let seed = sha256_hex(b"sparkhost-report").into_bytes();
        let wasi = guest_wasi(run_dir.map(|dir| (dir, RUN_DIR)), &stderr, seed, 0)?;
        let label = file_label(&g.path);
        let state = ReportState::new(wasi, self.limits.memory_bytes, label.clone(), ());
        let mut store = Store::new(self.sandbox.engine(), state);
        store.limiter(|s| &mut s.limits);
        store.set_epoch_deadline(ticks(self.limits.call_timeout));
        let bindings = g
            .pre
            .instantiate(&mut store)
            .map_err(|e| SandboxError::Instantiate {
                path: g.path.clone(),
                message: format!("{e:#}"),
            })?;
        Ok(Instance {
            store,
            bindings,
            label,
            stderr,
            limits: self.limits,
        })
    }

    pub fn describe(&self, g: &LoadedGenerator) -> Result<GeneratorInfo, SandboxError> {
        let mut inst = self.instantiate(g, None)?;
        let r = inst
            .bindings
            .sparkhost_report_generator()
            .call_describe(&mut inst.store);
        let info = r.map_err(|e| inst.trap("describe", e))?;
        Ok(GeneratorInfo {
            name: info.name,
            version: info.version,
            description: info.description,
            params: info
                .params
                .into_iter()
                .map(|p| super::ParamInfo {
                    name: p.name,
                    description: p.description,
                    default_value: p.default_value,
                })
                .collect(),
        })
    }

    /// Runs `generate` over `run_dir`; the files are returned unchecked.
    pub fn generate(
        &self,
        g: &LoadedGenerator,
        run_dir: &Path,
        input: &ReportInput,
    ) -> Result<Vec<OutputFile>, SandboxError> {
        let mut inst = self.instantiate(g, Some(run_dir))?;
        let request = wit::ReportRequest {
            run_dir: RUN_DIR.to_owned(),
            run_id: input.run_id.clone(),
            files: input.files.clone(),
            documents: input
                .documents
                .iter()
                .map(|d| wit::Document {
                    name: d.name.clone(),
                    text: d.text.clone(),
                })
                .collect(),
            params: input
                .params
                .iter()
                .map(|(n, v)| wit::Param {
                    name: n.clone(),
                    value: v.clone(),
                })
                .collect(),
        };
        let r = inst
            .bindings
            .sparkhost_report_generator()
            .call_generate(&mut inst.store, &request);
        match r.map_err(|e| inst.trap("generate", e))? {
            Ok(files) => Ok(files
                .into_iter()
                .map(|f| OutputFile {
                    name: f.name,
                    bytes: match f.content {
                        wit::Content::Text(t) => t.into_bytes(),
                        wit::Content::Bytes(b) => b,
                    },
                })
                .collect()),
            Err(e) => Err(SandboxError::BadOutput {
                workload: inst.label.clone(),
                call: "generate",
                message: match e {
                    wit::ReportError::MissingInput(m) => format!("missing input: {m}"),
                    wit::ReportError::InvalidInput(m) => format!("invalid input: {m}"),
                    wit::ReportError::InvalidParam(m) => format!("invalid param: {m}"),
                    wit::ReportError::Internal(m) => format!("internal error: {m}"),
                },
            }),
        }
    }
}

struct Instance {
    store: Store<ReportState>,
    bindings: bindings::ReportGenerator,
    label: String,
    stderr: MemoryOutputPipe,
    limits: ReportLimits,
}

impl Instance {
    /// Same classification as workload traps: deadline, memory cap, other.
    fn trap(&mut self, call: &'static str, e: wasmtime::Error) -> SandboxError {
        let limits = super::Limits {
            call_timeout: self.limits.call_timeout,
            memory_bytes: self.limits.memory_bytes,
        };
        super::classify_trap(
            format!("report generator {}", self.label),
            call,
            e,
            limits,
            &self.stderr,
        )
    }
}
