//! The run directory's JSON documents as types: `config.json` (what was
//! asked), `manifest.json` (what ran: component, host, versions) and
//! `summary.json` (what was measured), and `calibrate-disk`'s
//! `device-profile.json`. The run writes each once, and every
//! reader (summarize, compare, matrix, search, goodput, bench, tests)
//! deserializes the same types.
//!
//! Reading is lenient on purpose: every field has a default and older
//! spellings are aliases, so run directories written by earlier sparkhost
//! versions and by the seed harness still load (`kv_mode` as a bare string,
//! `*_per_s_est`, `invalid_reason` names sparkhost never wrote). Sub-documents
//! owned by the collectors crate (verdict, phase deltas, telemetry) are kept as
//! JSON values here: their schema is that crate's.
//!
//! [`schemas`] generates a JSON Schema per document and per JSONL row; the
//! committed copies under `docs/schema/` are checked against them by a test.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::evidence::InvalidReason;
use crate::feed::{Preflight, PreflightReport};
use crate::harness::HarnessCost;
use crate::plan::LoadModel;
use crate::results::summary::{PhaseSummary, TimingBudget};

/// A reason a run is invalid: one sparkhost knows, or a name another version
/// (or the seed harness: `runtime_exception`, `ttfc_sanity_failed`) wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum ReasonName {
    Known(InvalidReason),
    Other(String),
}

impl ReasonName {
    pub fn as_str(&self) -> &str {
        match self {
            ReasonName::Known(r) => r.as_str(),
            ReasonName::Other(s) => s,
        }
    }
}

/// The KV tier labels of a run, as the seed recorded them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct KvModeDoc {
    /// `off`, `cpu_only` or `cpu_disk`.
    pub mode: String,
    /// `B0`, `B1` or `B2`.
    pub tier_mode: String,
    pub kvbm_enabled: bool,
    pub cpu_cache_gb: f64,
    pub disk_cache_gb: f64,
}

/// `kv_mode` as written: an object (sparkhost, the seed's `summary.json`) or
/// a bare mode name (the seed's `config.json` and older tools).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum KvModeField {
    Labels(KvModeDoc),
    Name(String),
}

impl Default for KvModeField {
    fn default() -> Self {
        KvModeField::Name(String::new())
    }
}

impl KvModeField {
    pub fn mode(&self) -> &str {
        match self {
            KvModeField::Labels(k) => &k.mode,
            KvModeField::Name(n) => n,
        }
    }

    pub fn tier_mode(&self) -> Option<&str> {
        match self {
            KvModeField::Labels(k) if !k.tier_mode.is_empty() => Some(&k.tier_mode),
            _ => None,
        }
    }
}

/// Where a phase's load came from (`config.json` → `phases[].load_source`; the
/// rule is `run::loads`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LoadSource {
    /// No flag, no load of the phase's own: closed loop at 1.
    Default,
    /// `--concurrency` or `--rate`, for a phase that leaves its load to it.
    CommandLine,
    /// The phase's own load, no flag given.
    Workload,
    /// The phase's own load, derived by the workload from its `concurrency`
    /// param, which `--concurrency` set.
    WorkloadParam,
    /// `--override-phase-loads`: the flag's load replaced the phase's own.
    Override,
}

/// A phase as declared, with the load it ran under.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct PhaseDecl {
    pub name: String,
    pub include_in_overall: bool,
    /// The load the phase really ran.
    pub load: Option<LoadModel>,
    /// Where that load came from; absent in older run directories.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_source: Option<LoadSource>,
}

/// Client settings that shape every request.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct ClientParams {
    pub stream: bool,
    pub stream_usage: bool,
    pub timeout_s: f64,
    pub arrival_clock: crate::dispatch::stamp::RxClock,
    /// `--max-response-bytes`; 0 in runs from before the flag.
    pub max_response_bytes: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct PreflightDoc {
    /// `None` when preflight was off (`--engine-max-input-tokens 0`).
    pub settings: Option<Preflight>,
    /// The initial plan's check, made before anything was sent; the whole
    /// run's check is `summary.json`'s `preflight`.
    pub result: Option<PreflightReport>,
}

/// A file granted read-only to the workload.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct DataFile {
    pub path: String,
    pub guest_path: String,
    pub sha256: String,
    pub bytes: u64,
}

/// `config.json`: what the run was asked to do, resolved. Written once,
/// after the model is resolved and the initial plan preflighted.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct ConfigDoc {
    pub run_id: String,
    pub created_utc: String,
    pub base_url: String,
    /// The resolved model, or the requested one when it never resolved.
    pub model_id: String,
    pub scenario: String,
    pub tokenizer: String,
    pub tier_mode: String,
    pub kv_mode: KvModeField,
    pub client_request_parameters: ClientParams,
    /// `--concurrency`/`--rate` (closed loop at 1 without either); each
    /// phase's real load is in `phases`.
    pub load: Option<LoadModel>,
    /// `--duration` in seconds: sending stopped this long after the first
    /// phase started.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_s: Option<f64>,
    /// Effective workload params (defaults filled in).
    pub params: BTreeMap<String, String>,
    pub phases: Vec<PhaseDecl>,
    pub preflight: PreflightDoc,
    pub data_files: Vec<DataFile>,
    /// The command line, as typed.
    pub args: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct HostInfo {
    pub hostname: String,
    pub os: String,
    pub arch: String,
    pub kernel: Option<String>,
    pub cpus: Option<usize>,
}

impl HostInfo {
    pub fn current() -> Self {
        HostInfo {
            hostname: gethostname::gethostname().to_string_lossy().into_owned(),
            os: std::env::consts::OS.into(),
            arch: std::env::consts::ARCH.into(),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .ok()
                .map(|s| s.trim().to_owned()),
            cpus: std::thread::available_parallelism().map(|n| n.get()).ok(),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct WorkloadDoc {
    pub path: String,
    pub name: String,
    pub version: String,
    pub sha256: String,
    /// `sparkhost:workload@<version>`.
    pub wit: String,
    /// Present when the workload was given as an `oci://` reference: the
    /// digest its tag resolved to, and the reference that pulls exactly it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oci: Option<OciSourceDoc>,
}

/// A component pulled from an OCI registry, as it was resolved.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct OciSourceDoc {
    /// The reference as given (`oci://host/repo:tag`).
    pub reference: String,
    /// `host[:port]`.
    pub registry: String,
    pub repository: String,
    /// The tag that was resolved, `None` when a digest was given alone.
    pub tag: Option<String>,
    /// `sha256:…` of the manifest the reference resolved to.
    pub manifest_digest: String,
    /// `sha256:…` of the component layer: the component's own sha256.
    pub layer_digest: String,
    /// `oci://host/repo@sha256:…`: pulls exactly this component again.
    pub pinned: String,
}

/// `manifest.json`: what ran, for reproducing it. Written once, with
/// `config.json`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct ManifestDoc {
    pub run_id: String,
    pub created_utc: String,
    pub sparkhost_version: String,
    /// The git commit sparkhost was built from (`build.rs`), or `unknown`
    /// for a build outside a git checkout.
    pub sparkhost_git_sha: String,
    pub wasmtime_version: String,
    pub host: HostInfo,
    /// What the server said about its own build, or `None` when it said
    /// nothing (no `/version`, no `Server` header).
    pub server_build: Option<ServerBuildDoc>,
    /// sha256 of the stack profile's rendered engine config, when the run
    /// was started through a stack profile.
    pub stack_config_sha256: Option<String>,
    /// sha256 of the `--device-profile` file the run compared its disk
    /// bandwidth with.
    pub device_profile_sha256: Option<String>,
    pub workload: WorkloadDoc,
    /// Present when the run's `--report-generator` was an `oci://` reference.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub report_generator_oci: Option<OciSourceDoc>,
    pub scenario: String,
    pub params: BTreeMap<String, String>,
    pub seed: u64,
    pub tokenizer: String,
    pub data_files: Vec<DataFile>,
    pub tier_mode: String,
    pub kv_mode: KvModeField,
    pub variant_tags: Vec<String>,
    pub model_id_requested: String,
    pub model_id_resolved: Option<String>,
    pub base_url: String,
    pub phases: Vec<PhaseDecl>,
    pub args: Vec<String>,
    /// Present when the endpoint was sparkhost's SIMULATED engine
    /// (`--endpoint sim[:PROFILE]`): nothing in the run was measured on a
    /// serving engine.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub simulator: Option<sparkhost_kvbm::SimInfo>,
    /// Present when the run went to a stack started by `sparkhost stack up`
    /// (`run --stack DIR`): which one, in which mode, and the hashes of its
    /// rendered engine config and environment.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stack: Option<StackDoc>,
}

/// The stack a run was measured on (`stack.json`, less the PIDs).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct StackDoc {
    pub profile: String,
    /// `builtin:NAME` or the profile file as given.
    pub source: String,
    pub tier_mode: String,
    /// Whether KVBM runs in that mode.
    pub kvbm: bool,
    /// The engine is a simulation (sparkhost sim, the Dynamo mocker).
    pub simulated: bool,
    /// sha256 over the rendered files, argv and set environment, with free
    /// ports and paths as placeholders: equal iff the same stack ran.
    pub config_sha256: String,
    pub env_sha256: String,
    pub files: Vec<StackFileDoc>,
    pub started_utc: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct StackFileDoc {
    pub name: String,
    pub sha256: String,
}

/// What the server exposed about its build, as seen, bounded in size.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct ServerBuildDoc {
    /// The `Server` response header of `GET /v1/models`.
    pub server_header: Option<String>,
    /// HTTP status of `GET /version`, when it answered at all.
    pub version_status: Option<u16>,
    /// The body of a 2xx `GET /version`: JSON when it parsed as JSON, else
    /// the text, cut to a few KiB.
    pub version: Option<Value>,
}

/// One I/O test of `sparkhost calibrate-disk`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct DiskTestDoc {
    /// `seq_write`, `seq_read`, `rand_read` or `rand_write`.
    pub name: String,
    pub block_size_bytes: u64,
    pub queue_depth: u32,
    pub bytes: u64,
    pub ios: u64,
    /// Wall time of the test, a final `fdatasync` included for writes.
    pub elapsed_s: f64,
    /// Decimal GB/s (10^9 bytes per second), the unit drive specs use.
    pub gbps: f64,
    pub iops: f64,
    /// Stopped at `--max-test-time` before it covered the test file.
    pub stopped_early: bool,
}

/// `device-profile.json`: a disk's O_DIRECT bandwidth as `sparkhost
/// calibrate-disk` measured it, for `run --device-profile` to compare a KV
/// tier's achieved bandwidth with.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct DeviceProfileDoc {
    /// Always `sparkhost-device-profile`.
    pub kind: String,
    /// Format version, 1.
    pub version: u32,
    pub created_utc: String,
    pub sparkhost_version: String,
    pub sparkhost_git_sha: String,
    pub host: HostInfo,
    /// The directory the test file was written in.
    pub dir: String,
    /// Its block device as `/proc/diskstats` names it (a partition or a
    /// whole disk), when it has one.
    pub block_device: Option<String>,
    /// The whole disk that device belongs to.
    pub disk: Option<String>,
    /// Why the block device is unknown (overlay, tmpfs, …).
    pub block_device_error: Option<String>,
    /// Always true: every test used O_DIRECT (no page cache).
    pub o_direct: bool,
    pub file_bytes: u64,
    /// Seeds the random offsets and the written bytes.
    pub seed: u64,
    pub tests: Vec<DiskTestDoc>,
}

impl DeviceProfileDoc {
    pub const KIND: &'static str = "sparkhost-device-profile";
    pub const VERSION: u32 = 1;

    pub fn test(&self, name: &str) -> Option<&DiskTestDoc> {
        self.tests.iter().find(|t| t.name == name)
    }
}

/// One phase's disk reads next to the device profile's ceiling.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct DiskPhaseBandwidth {
    pub phase: String,
    pub block_device: String,
    pub read_bytes: u64,
    /// Device-busy time in the phase (`/proc/diskstats` io_ticks delta).
    pub busy_s: f64,
    /// `read_bytes / busy_s`, decimal GB/s: what the device delivered while
    /// it was working (a lower bound when writes shared the busy time).
    pub achieved_read_gbps: Option<f64>,
    pub fraction_of_random_read: Option<f64>,
    pub fraction_of_sequential_read: Option<f64>,
}

/// `summary.json`'s `disk_ceiling`: the KV disk's achieved read bandwidth
/// as a fraction of what `calibrate-disk` measured on it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct DiskCeilingDoc {
    pub device_profile_sha256: String,
    /// The device the profile measured, and the one the run's phase deltas
    /// are of; a comparison across devices is flagged.
    pub profile_block_device: Option<String>,
    pub run_block_device: Option<String>,
    pub same_device: Option<bool>,
    pub random_read_gbps: f64,
    pub random_read_block_bytes: u64,
    pub sequential_read_gbps: f64,
    pub queue_depth: u32,
    pub phases: Vec<DiskPhaseBandwidth>,
    /// The phase with the highest achieved read bandwidth.
    pub best: Option<DiskPhaseBandwidth>,
    /// One sentence: "the SSD tier delivered X GB/s of Y GB/s measured".
    pub statement: String,
    /// Where the host tier lives on a DGX Spark (the GPU's own LPDDR5x).
    pub host_tier_note: String,
    /// The endpoint was the simulator: its disk reads are real, the engine
    /// around them is modelled.
    pub simulated: bool,
}

/// How the KV cache was reset before the run (`--kv-reset-*`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct KvResetDoc {
    /// `url` (POST), `command` or `sim` (the simulator's `POST /reset`).
    pub method: String,
    /// The URL or the command line.
    pub target: String,
    pub ok: bool,
    /// HTTP status, or the command's exit code.
    pub status: Option<i64>,
    pub elapsed_ms: f64,
    /// The answer's body or the command's output, cut to a few KiB.
    pub output: String,
    pub error: Option<String>,
}

/// The warm-up that primed the KV tiers before the measured phases
/// (`--prime-tokens`): distinct filler prompts, never the workload's, so
/// nothing it leaves in the cache can be hit by a measured request.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct PrimeDoc {
    pub target_prompt_tokens: u64,
    pub prompt_tokens_per_request: u32,
    pub concurrency: u32,
    pub requests: u64,
    pub ok: u64,
    pub failed: u64,
    /// Prompt tokens sent, by the run's tokenizer.
    pub prompt_tokens_sent: u64,
    pub elapsed_s: f64,
    /// The first failures, for diagnosis.
    pub errors: Vec<String>,
}

/// reuse_verify's identity verdict (the seed's `reuse_verify_identity`):
/// `identical_inputs_confirmed` when ≥ 2 requests of the `reuse*` phases
/// share one request identity, one prompt and one generation-params hash;
/// else `identity_mismatch_detected`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct ReuseIdentityDoc {
    pub verdict: String,
    pub reuse_requests: u64,
    pub unique_request_identity_sha256: u64,
    pub unique_prompt_sha256: u64,
    pub unique_generation_params_sha256: u64,
}

/// How dispatch went: what was planned, sent and left unsent.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct DispatchDoc {
    /// Keep-alive connections opened before the first request.
    pub prewarmed_connections: u64,
    pub planned: u64,
    pub initially_planned: u64,
    pub recorded: u64,
    /// Planned requests that have no row and were never sent.
    pub unsent: u64,
    pub phases_completed: u64,
    /// Sent requests with no row: a second stop signal gave up on them.
    pub abandoned_in_flight: u64,
    /// `--duration` ran out before the workload did (`unsent` were never sent).
    pub stopped_by_duration: bool,
}

/// The server's own view of a phase, next to the client's.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct ServerSide {
    pub source: Option<String>,
    pub available: bool,
    pub ttft: Value,
    pub itl: Value,
    pub request_duration: Value,
}

/// One phase of `summary.json`: the client's statistics and, with
/// telemetry, the phase's deltas.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct PhaseDoc {
    #[serde(flatten)]
    pub stats: PhaseSummary,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kvbm_metrics_delta: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub io_delta: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nvme_delta: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gpu_delta: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_side_ms: Option<ServerSide>,
    /// The name the phase's `phase_deltas/phase_<stem>_*.json` files use
    /// (the phase name, made file-safe and unique); readers use it rather
    /// than re-deriving it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phase_deltas_stem: Option<String>,
}

/// `overall_summary`: the measured statistics, or (seed layout) an exclusion
/// record when the run is invalid.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum OverallSummary {
    Excluded(Excluded),
    Measured(Box<PhaseSummary>),
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
pub struct Excluded {
    #[serde(default)]
    pub phase: String,
    #[serde(default)]
    pub scenario: String,
    /// Always true; what tells this record from measured statistics.
    pub excluded: bool,
    #[serde(default)]
    pub reason: Option<ReasonName>,
    #[serde(default)]
    pub details: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct WorkloadId {
    pub name: String,
    pub version: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct TelemetryDoc {
    pub enabled: bool,
    pub sources: Option<Value>,
    pub kv_disk_device: Option<String>,
}

/// `summary.json`: what was measured, and whether it can be trusted.
/// Written once, at the end of the run.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct SummaryDoc {
    pub run_id: String,
    pub created_utc: String,
    pub run_valid: bool,
    pub invalid_reason: Option<ReasonName>,
    pub invalid_details: Vec<String>,
    pub model_id: Option<String>,
    pub scenario: String,
    pub workload: WorkloadId,
    pub stream: bool,
    pub tier_mode: String,
    pub kv_mode: KvModeField,
    pub variant_tags: Vec<String>,
    pub tokenizer: String,
    pub request_manifest_path: String,
    pub dispatch: DispatchDoc,
    /// The whole run's preflight (the initial plan's is in `config.json`).
    pub preflight: Option<PreflightReport>,
    pub phase_summaries: Vec<PhaseDoc>,
    pub overall_summary: Option<OverallSummary>,
    /// The included phases' statistics, also when the run is invalid.
    pub overall_measured: Option<PhaseSummary>,
    pub timing_error_budget: Option<TimingBudget>,
    /// `verdict.json`'s content, as the collectors write it.
    pub verdict: Option<sparkhost_collectors::Verdict>,
    pub telemetry: TelemetryDoc,
    pub harness: HarnessCost,
    /// Present when the run had `--slo`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub goodput: Option<crate::analysis::slo::GoodputSummary>,
    pub notes: Vec<String>,
    /// Present when the endpoint was sparkhost's SIMULATED engine: its
    /// latencies come from a model, not an accelerator.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub simulator: Option<sparkhost_kvbm::SimInfo>,
    /// Present with `--device-profile`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disk_ceiling: Option<DiskCeilingDoc>,
    /// Present with `--kv-reset-*`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kv_reset: Option<KvResetDoc>,
    /// Present with `--prime-tokens`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prime: Option<PrimeDoc>,
    /// Present for the reuse_verify workload.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reuse_verify_identity: Option<ReuseIdentityDoc>,
}

impl SummaryDoc {
    /// The overall statistics to report: measured ones, or (seed layout) a
    /// non-excluded `overall_summary`.
    pub fn overall(&self) -> Option<&PhaseSummary> {
        self.overall_measured
            .as_ref()
            .or(match &self.overall_summary {
                Some(OverallSummary::Measured(m)) => Some(m),
                _ => None,
            })
    }
}

/// Reads one document; the error names the file.
pub fn read<T: serde::de::DeserializeOwned>(path: &std::path::Path) -> anyhow::Result<T> {
    use anyhow::Context;
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text)
        .with_context(|| format!("{} is not a valid document", path.display()))
}

/// The JSON Schema of every document and row, by file name under
/// `docs/schema/`.
pub fn schemas() -> Vec<(&'static str, schemars::Schema)> {
    vec![
        ("config.schema.json", schemars::schema_for!(ConfigDoc)),
        ("manifest.schema.json", schemars::schema_for!(ManifestDoc)),
        ("summary.schema.json", schemars::schema_for!(SummaryDoc)),
        (
            "device_profile.schema.json",
            schemars::schema_for!(DeviceProfileDoc),
        ),
        (
            "requests.row.schema.json",
            schemars::schema_for!(crate::results::records::RequestRow<'static>),
        ),
        (
            "request_manifest.row.schema.json",
            schemars::schema_for!(crate::prepare::RequestMeta),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn schema_dir() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/schema")
    }

    /// The committed schemas are the contract other tools read; a change to
    /// a document type must show up as a change to them.
    /// `SPARKHOST_UPDATE_SCHEMA=1 cargo test schemas` rewrites them.
    #[test]
    fn committed_schemas_match_the_types() {
        let dir = schema_dir();
        let update = std::env::var_os("SPARKHOST_UPDATE_SCHEMA").is_some();
        let mut stale = Vec::new();
        for (name, schema) in schemas() {
            let mut text = serde_json::to_string_pretty(&schema).unwrap();
            text.push('\n');
            let path = dir.join(name);
            if update {
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::write(&path, &text).unwrap();
            } else if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
                stale.push(name);
            }
        }
        assert!(
            stale.is_empty(),
            "docs/schema/ disagrees with the document types for {stale:?}; \
             run `SPARKHOST_UPDATE_SCHEMA=1 cargo test --release -p sparkhost --lib schemas` and commit the result"
        );
    }

    fn fixture(name: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures")
            .join(name)
    }

    #[test]
    fn a_run_directory_of_this_version_reads_back() {
        let dir = fixture("run-basic");
        let s: SummaryDoc = read(&dir.join("summary.json")).unwrap();
        assert!(s.run_valid);
        assert_eq!(s.kv_mode.mode(), "cpu_disk");
        assert_eq!(s.kv_mode.tier_mode(), Some("B2"));
        assert_eq!(s.phase_summaries.len(), 3);
        assert!(s.overall().unwrap().total_requests > 0);
        let c: ConfigDoc = read(&dir.join("config.json")).unwrap();
        assert_eq!(c.phases.len(), 3);
        let m: ManifestDoc = read(&dir.join("manifest.json")).unwrap();
        assert!(!m.workload.sha256.is_empty());
    }

    #[test]
    fn seed_documents_still_read() {
        let dir = fixture("seed-run");
        let s: SummaryDoc = read(&dir.join("summary.json")).unwrap();
        assert!(!s.run_valid);
        assert_eq!(
            s.invalid_reason,
            Some(ReasonName::Other("runtime_exception".into()))
        );
        assert!(matches!(
            s.overall_summary,
            Some(OverallSummary::Excluded(Excluded { excluded: true, .. }))
        ));
        assert_eq!(s.kv_mode.mode(), "cpu_disk");
        let p = &s.phase_summaries[0].stats;
        assert_eq!(p.phase, "warmup");
        assert_eq!(
            p.output_tokens_per_s, 41.5,
            "read from the seed's _est name"
        );
        let c: ConfigDoc = read(&dir.join("config.json")).unwrap();
        assert_eq!(c.kv_mode.mode(), "cpu_disk");
        assert_eq!(c.phases[0].name, "warmup");
    }

    /// A verdict written before the cross-checks and KVBM v2 fields existed
    /// reads into the typed field, the new figures empty.
    #[test]
    fn an_older_verdict_reads_typed() {
        let s: SummaryDoc = serde_json::from_value(serde_json::json!({
            "verdict": {
                "run_valid": true,
                "decision_grade": false,
                "invalid_reason": null,
                "reason_codes": ["DISK_TIER_NO_DISK_IO"],
                "details": ["disk tier configured, but ..."],
                "signals": {"kv_mode": "cpu_disk", "kvbm_metrics_available": true, "onboard_d2d_total": 3.0}
            }
        }))
        .unwrap();
        let v = s.verdict.unwrap();
        assert_eq!(
            v.reason_codes,
            [sparkhost_collectors::ReasonCode::DiskTierNoDiskIo]
        );
        assert_eq!(v.signals.onboard_d2d_total, Some(3.0));
        assert_eq!(v.signals.onboard_d2h_total, None);
        assert!(v.cross_checks.phases.is_empty());
    }

    #[test]
    fn known_reasons_round_trip_typed() {
        let r: ReasonName = serde_json::from_str("\"model_dropped\"").unwrap();
        assert_eq!(r, ReasonName::Known(InvalidReason::ModelDropped));
        assert_eq!(serde_json::to_string(&r).unwrap(), "\"model_dropped\"");
    }
}
