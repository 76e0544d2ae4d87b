//! `verdict.json`: whether a run is valid, whether it is decision-grade, why
//! not, and what mechanism the evidence shows. A pure function of the KV mode,
//! per-phase evidence, the run's error counts and the reuse opportunity in its
//! request manifest; the caller gathers those and writes the result.
//!
//! Hard failures (`run_valid: false`) follow the test plan's P6: the run was
//! already invalid for the host (model dropped, …), the error rate is above the
//! gate, KVBM metrics are missing while a KV tier is on, or the server did
//! what another tier mode does (`TIER_MODE_MISMATCH`: KVBM moved blocks in
//! B0, or moved blocks to or from disk in B1; see [`tier_mode_mismatch`]). Soft failures leave
//! the run valid but not decision-grade: errors present, disk tier configured
//! but no disk I/O, disk I/O that KVBM's counters do not account for, high reuse
//! opportunity but no matched tokens.
//!
//! Mechanism signals never treat host-tier reuse as disk rehydration. Disk
//! rehydration is claimed from disk→device onboarding (`onboard_blocks_d2d`),
//! KVBM v2's disk→host staging (`onboard_blocks_d2h`, whose blocks reach the
//! GPU through `onboard_blocks_h2d`, so host-only reuse is `h2d − d2h`), a
//! non-zero disk-tier hit rate whose request window lies inside the run, or
//! replay-phase reads on the KV disk well above the baseline phase's.
//!
//! No source is trusted alone: per phase, reuse is set out from the client
//! (`usage.cached_tokens`), the frontend (Δ cached ÷ Δ input tokens) and KVBM
//! (matched tokens, onboarded blocks × block bytes), and disk traffic from
//! KVBM (blocks × disk block bytes) beside the KV device's bytes and the
//! worker's process and cgroup I/O; every disagreement beyond the stated
//! tolerance is a [`ReasonCode`] in `cross_checks`.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::path::Path;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::common::MIB;
use crate::kvbm::Naming;

/// The KV tiers a run was configured with. `DiskOnly` (Dynamo's experimental
/// GPU + disk) is gone: no flag could select it, so no verdict ever judged it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum KvMode {
    /// B0: no KVBM.
    Off,
    /// B1: GPU + CPU tier.
    CpuOnly,
    /// B2: GPU + CPU + disk tiers.
    CpuDisk,
    /// No mode was given (no `--kv-mode`, `--tier-mode` or stack profile):
    /// the tiers are unknown, so nothing is required of the server and no
    /// tier claim is made. KVBM metrics are scraped and recorded if they answer.
    Unspecified,
}

impl KvMode {
    pub const ALL: [KvMode; 4] = [
        KvMode::Off,
        KvMode::CpuOnly,
        KvMode::CpuDisk,
        KvMode::Unspecified,
    ];

    /// The `--kv-mode` spelling, also the serde name.
    pub const fn as_str(self) -> &'static str {
        match self {
            KvMode::Off => "off",
            KvMode::CpuOnly => "cpu_only",
            KvMode::CpuDisk => "cpu_disk",
            KvMode::Unspecified => "unspecified",
        }
    }

    /// The seed harness's tier label (`--tier-mode`); `unspecified` has none
    /// of the seed's and keeps its own name.
    pub const fn tier_mode(self) -> &'static str {
        match self {
            KvMode::Off => "B0",
            KvMode::CpuOnly => "B1",
            KvMode::CpuDisk => "B2",
            KvMode::Unspecified => "unspecified",
        }
    }

    /// The mode claims a KVBM tier (B1, B2): a run without KVBM metrics is
    /// then invalid, as in the seed.
    pub fn kvbm_enabled(self) -> bool {
        matches!(self, KvMode::CpuOnly | KvMode::CpuDisk)
    }

    /// KVBM is worth asking: a claimed tier, or an unknown one (recorded
    /// when it answers, never required).
    pub fn scrapes_kvbm(self) -> bool {
        self != KvMode::Off
    }

    /// A mode the user (or a stack profile) named.
    pub fn is_specified(self) -> bool {
        self != KvMode::Unspecified
    }

    pub fn disk_tier_on(self) -> bool {
        self == KvMode::CpuDisk
    }
}

impl fmt::Display for KvMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string that is neither a KV mode nor a tier label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownKvMode(pub String);

impl fmt::Display for UnknownKvMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<&str> = Vec::new();
        for n in KvMode::ALL
            .iter()
            .map(|m| m.as_str())
            .chain(KvMode::ALL.iter().map(|m| m.tier_mode()))
        {
            if !names.contains(&n) {
                names.push(n);
            }
        }
        write!(
            f,
            "{:?} is not a KV mode (one of: {})",
            self.0,
            names.join(", ")
        )
    }
}

impl std::error::Error for UnknownKvMode {}

/// Accepts the mode names and the tier labels, in any case.
impl FromStr for KvMode {
    type Err = UnknownKvMode;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        KvMode::ALL
            .into_iter()
            .find(|m| t.eq_ignore_ascii_case(m.as_str()) || t.eq_ignore_ascii_case(m.tier_mode()))
            .ok_or_else(|| UnknownKvMode(s.to_string()))
    }
}

/// What one phase showed. Every field is `None` when its source was unavailable,
/// so "not measured" is never mistaken for "nothing happened".
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PhaseEvidence {
    pub phase: String,
    pub kvbm_available: bool,
    pub offload_d2h: Option<f64>,
    pub offload_h2d: Option<f64>,
    pub offload_d2d: Option<f64>,
    pub onboard_h2d: Option<f64>,
    pub onboard_d2d: Option<f64>,
    /// KVBM v2's disk → host staging; `None` in v1.
    #[serde(default)]
    pub onboard_d2h: Option<f64>,
    #[serde(default)]
    pub naming: Option<Naming>,
    pub matched_tokens: Option<f64>,
    /// Gauges over KVBM's last N requests (see [`HitRateWindow`]).
    pub host_hit_rate_after: Option<f64>,
    pub disk_hit_rate_after: Option<f64>,
    /// Bytes read/written on the KV cache's block device(s) (`/proc/diskstats`).
    pub device_read_bytes: Option<u64>,
    pub device_write_bytes: Option<u64>,
    /// Bytes from NVMe SMART data units (±512,000 per reading).
    pub nvme_read_bytes: Option<u128>,
    pub nvme_write_bytes: Option<u128>,
    /// The worker's storage I/O (`/proc/<pid>/io` of the matched processes).
    #[serde(default)]
    pub process_read_bytes: Option<u64>,
    #[serde(default)]
    pub process_write_bytes: Option<u64>,
    /// The worker's cgroup I/O (`io.stat` / `blkio`).
    #[serde(default)]
    pub cgroup_read_bytes: Option<u64>,
    #[serde(default)]
    pub cgroup_write_bytes: Option<u64>,
    /// Frontend histogram Δsums (`dynamo_frontend_{cached,input_sequence}_tokens`).
    #[serde(default)]
    pub frontend_cached_tokens: Option<f64>,
    #[serde(default)]
    pub frontend_input_tokens: Option<f64>,
    /// `dynamo_frontend_model_kv_cache_block_size` at the phase end.
    #[serde(default)]
    pub kv_block_size_tokens: Option<f64>,
    /// What the client saw (filled by the host from its per-request usage).
    #[serde(default)]
    pub client: Option<ClientReuse>,
}

/// A phase's requests as the client recorded them in `requests.jsonl`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ClientReuse {
    pub requests: u64,
    /// Requests whose response carried no `usage` (their tokens are unknown).
    pub requests_without_usage: u64,
    /// Σ `usage.prompt_tokens` and Σ `usage.prompt_tokens_details.cached_tokens`.
    pub prompt_tokens: u64,
    pub cached_tokens: u64,
}

impl PhaseEvidence {
    fn disk_offload(&self) -> f64 {
        self.offload_h2d.unwrap_or(0.0) + self.offload_d2d.unwrap_or(0.0)
    }

    /// Blocks read back from disk: direct (d2d) or staged through host (d2h).
    fn disk_onboard(&self) -> Option<f64> {
        (self.onboard_d2d.is_some() || self.onboard_d2h.is_some())
            .then(|| self.onboard_d2d.unwrap_or(0.0) + self.onboard_d2h.unwrap_or(0.0))
    }

    fn host_only_onboard(&self) -> Option<f64> {
        crate::kvbm::host_only(self.onboard_h2d, self.onboard_d2h)
    }

    /// Disk reads and writes from the best source: block device, else SMART.
    fn disk_io(&self) -> Option<(u64, u64)> {
        match (self.device_read_bytes, self.device_write_bytes) {
            (Some(r), Some(w)) => Some((r, w)),
            _ => match (self.nvme_read_bytes, self.nvme_write_bytes) {
                (Some(r), Some(w)) => Some((
                    r.min(u64::MAX as u128) as u64,
                    w.min(u64::MAX as u128) as u64,
                )),
                _ => None,
            },
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunErrors {
    pub total_requests: u64,
    pub failed_requests: u64,
    #[serde(default)]
    pub by_kind: BTreeMap<String, u64>,
    /// Requests that asked to stream but were answered with one JSON body:
    /// they succeeded, with no TTFT, TTFC or ITL to report.
    #[serde(default)]
    pub unary_answers_to_stream: u64,
}

impl RunErrors {
    pub fn error_rate(&self) -> Option<f64> {
        (self.total_requests > 0).then(|| self.failed_requests as f64 / self.total_requests as f64)
    }
}

/// How many requests could have reused KV from an earlier request of the run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default)]
pub struct ReuseOpportunity {
    pub requests: u64,
    pub with_prefix_hash: u64,
    /// Requests whose `prefix_hash` an earlier request already had.
    pub repeated_prefix: u64,
    /// Requests identical to an earlier one (`request_identity_sha256`, else `prompt_sha256`).
    pub repeated_identity: u64,
    /// Requests with either kind of repeat.
    pub opportunities: u64,
    /// `opportunities / requests`.
    pub rate: f64,
    pub unique_prefix_hashes: u64,
    /// What the requests' hash ids predict, block by block, when the
    /// workload labelled them (trace replays); a request with a reusable
    /// block also counts as an opportunity.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hash_ids: Option<crate::hash_reuse::HashReuse>,
}

/// Counts [`ReuseOpportunity`] one manifest row at a time, in planned order.
#[derive(Debug, Default)]
struct ReuseCounter {
    seen_prefix: HashSet<String>,
    seen_identity: HashSet<String>,
    hashes: crate::hash_reuse::HashReuseCounter,
    r: ReuseOpportunity,
}

impl ReuseCounter {
    fn add(&mut self, prefix: Option<&str>, identity: Option<&str>, hashes: HashLabels<'_>) {
        let mut opp = self
            .hashes
            .add(
                hashes.phase,
                hashes.ids,
                hashes.block_tokens,
                hashes.prompt_tokens,
            )
            .unwrap_or(false);
        let r = &mut self.r;
        r.requests += 1;
        if let Some(p) = prefix.filter(|s| !s.is_empty()) {
            r.with_prefix_hash += 1;
            if !self.seen_prefix.contains(p) {
                self.seen_prefix.insert(p.to_owned());
            } else {
                r.repeated_prefix += 1;
                opp = true;
            }
        }
        if let Some(i) = identity {
            if !self.seen_identity.contains(i) {
                self.seen_identity.insert(i.to_owned());
            } else {
                r.repeated_identity += 1;
                opp = true;
            }
        }
        r.opportunities += u64::from(opp);
    }

    fn finish(self) -> ReuseOpportunity {
        let mut r = self.r;
        r.hash_ids = self.hashes.finish();
        r.unique_prefix_hashes = self.seen_prefix.len() as u64;
        r.rate = if r.requests > 0 {
            crate::common::round6(r.opportunities as f64 / r.requests as f64)
        } else {
            0.0
        };
        r
    }
}

/// The manifest fields reuse is judged on; the rest of a row is skipped unparsed.
#[derive(Deserialize)]
struct ReuseFields<'a> {
    #[serde(default, borrow)]
    prefix_hash: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, borrow)]
    request_identity_sha256: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, borrow)]
    prompt_sha256: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, borrow)]
    phase: Option<std::borrow::Cow<'a, str>>,
    #[serde(default)]
    prompt_tokens_est: Option<u64>,
    #[serde(default, borrow)]
    prompt_metadata: Option<HashLabelFields<'a>>,
}

/// The labels of a manifest row that [`crate::hash_reuse`] reads.
#[derive(Deserialize, Default)]
struct HashLabelFields<'a> {
    #[serde(default, borrow)]
    hash_ids: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, borrow)]
    hash_block_tokens: Option<std::borrow::Cow<'a, str>>,
}

#[derive(Clone, Copy, Default)]
struct HashLabels<'a> {
    phase: &'a str,
    ids: Option<&'a str>,
    block_tokens: Option<&'a str>,
    prompt_tokens: Option<u64>,
}

impl ReuseOpportunity {
    /// From `request_manifest.jsonl` rows, in file (planned) order.
    pub fn from_rows<'a>(rows: impl IntoIterator<Item = &'a serde_json::Value>) -> Self {
        let mut c = ReuseCounter::default();
        for row in rows {
            let prefix = row.get("prefix_hash").and_then(|v| v.as_str());
            let identity = row
                .get("request_identity_sha256")
                .or_else(|| row.get("prompt_sha256"))
                .and_then(|v| v.as_str());
            let meta = |k: &str| row.get("prompt_metadata")?.get(k)?.as_str();
            let hashes = HashLabels {
                phase: row.get("phase").and_then(|v| v.as_str()).unwrap_or(""),
                ids: meta("hash_ids"),
                block_tokens: meta("hash_block_tokens"),
                prompt_tokens: row.get("prompt_tokens_est").and_then(|v| v.as_u64()),
            };
            c.add(prefix, identity, hashes);
        }
        c.finish()
    }

    /// Streams the file: a long run's manifest is tens of megabytes, and
    /// holding it parsed would dwarf the harness's own memory.
    pub fn from_manifest_file(path: &Path) -> Result<Self, String> {
        use std::io::BufRead;
        let f =
            std::fs::File::open(path).map_err(|e| crate::common::describe_io_error(path, &e))?;
        let mut c = ReuseCounter::default();
        for (i, line) in std::io::BufReader::new(f).lines().enumerate() {
            let line = line.map_err(|e| format!("{} line {}: {e}", path.display(), i + 1))?;
            if line.trim().is_empty() {
                continue;
            }
            let row: ReuseFields<'_> = serde_json::from_str(&line)
                .map_err(|e| format!("{} line {}: {e}", path.display(), i + 1))?;
            let identity = row.request_identity_sha256.or(row.prompt_sha256);
            let meta = row.prompt_metadata.unwrap_or_default();
            let hashes = HashLabels {
                phase: row.phase.as_deref().unwrap_or(""),
                ids: meta.hash_ids.as_deref(),
                block_tokens: meta.hash_block_tokens.as_deref(),
                prompt_tokens: row.prompt_tokens_est,
            };
            c.add(row.prefix_hash.as_deref(), identity.as_deref(), hashes);
        }
        Ok(c.finish())
    }
}

/// Errors above 5% of requests invalidate a run (the CLI's `--max-error-rate` default).
pub const DEFAULT_MAX_ERROR_RATE: f64 = 0.05;

/// Thresholds. Defaults are the seed's where it had one (1 MiB replay read,
/// 1.2× baseline), otherwise chosen to flag clear cases only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Policy {
    /// Error rate above which the run is invalid.
    pub max_error_rate: f64,
    /// Disk I/O below this (bytes, per direction) counts as none.
    pub min_disk_io_bytes: u64,
    /// Reuse opportunity rate at or above which matched tokens are expected.
    pub high_reuse_rate: f64,
    /// With missing KVBM metrics, only demote (the seed's `--allow-missing-kvbm-metrics`).
    pub allow_missing_kvbm_metrics: bool,
    /// Phase-name substrings marking replay and baseline phases.
    pub replay_markers: Vec<String>,
    pub baseline_markers: Vec<String>,
    /// Replay reads must exceed this × baseline reads (and `min_disk_io_bytes`).
    pub replay_read_factor: f64,
    /// KVBM's hit-rate window in requests (`DYN_KVBM_CACHE_STATS_MAX_REQUESTS`).
    pub hit_rate_window_requests: u64,
    /// Bytes of one KV block in GPU/host memory; `None`: bytes are not derived.
    pub kv_block_bytes: Option<u64>,
    /// Bytes KVBM writes to or reads from disk per block (the simulator may
    /// scale its disk I/O down); `None`: `kv_block_bytes`.
    pub kv_disk_block_bytes: Option<u64>,
    /// Two figures agree when they differ by at most
    /// `max(absolute, relative × the larger)`; this is the relative part.
    pub cross_check_relative: f64,
    /// The absolute part for token figures (bytes use `min_disk_io_bytes`).
    pub cross_check_tokens: f64,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            max_error_rate: DEFAULT_MAX_ERROR_RATE,
            min_disk_io_bytes: MIB as u64,
            high_reuse_rate: 0.25,
            allow_missing_kvbm_metrics: false,
            replay_markers: vec!["replay".into(), "rehydrate".into()],
            baseline_markers: vec!["warm".into(), "populate".into(), "baseline".into()],
            replay_read_factor: 1.2,
            hit_rate_window_requests: DEFAULT_HIT_RATE_WINDOW,
            kv_block_bytes: None,
            kv_disk_block_bytes: None,
            cross_check_relative: 0.10,
            cross_check_tokens: 64.0,
        }
    }
}

/// KVBM's own default for `DYN_KVBM_CACHE_STATS_MAX_REQUESTS`.
pub const DEFAULT_HIT_RATE_WINDOW: u64 = 1000;

#[derive(Debug, Clone, PartialEq)]
pub struct VerdictInput<'a> {
    pub kv_mode: KvMode,
    pub phases: &'a [PhaseEvidence],
    pub errors: RunErrors,
    pub reuse: Option<ReuseOpportunity>,
    /// The host already found the run invalid (its reason stays the host's).
    pub host_invalid: bool,
    pub policy: Policy,
}

/// Whether a finding invalidates the run or only keeps it from being decision-grade.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Hard,
    Soft,
}

/// A verdict finding. The serde names are the stable codes in `verdict.json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ReasonCode {
    /// The host had already found the run invalid.
    RunInvalid,
    ErrorRateAboveThreshold,
    /// A KV tier is on but no phase had KVBM metrics.
    KvbmMetricsMissing,
    RunErrorsPresent,
    DiskTierNoDiskIo,
    DiskTierNoKvbmDiskActivity,
    DiskIoUnavailable,
    IoWithoutKvbmDeltas,
    ReuseWithoutMatchedTokens,
    ReuseOpportunityUnknown,
    /// A tier onboarded blocks in a phase while its hit-rate gauge read 0.
    HitRateGaugeStale,
    /// The client's Σ `cached_tokens` and the frontend's Δ cached tokens differ.
    ReuseClientFrontendMismatch,
    /// KVBM matched more tokens than the client or frontend saw cached.
    KvbmMatchedExceedsCached,
    /// KVBM's matched tokens and its onboarded blocks × block size differ.
    KvbmMatchedOnboardMismatch,
    /// KVBM's disk blocks × block bytes exceed what the KV device moved.
    KvbmDiskBytesNotOnDevice,
    /// The KV device moved more than KVBM's disk blocks account for.
    DeviceBytesNotFromKvbm,
    /// The worker's process or cgroup I/O is below what KVBM claims it moved.
    WorkerIoBelowKvbm,
    /// The server did what another tier mode does: KVBM moved blocks in
    /// B0, or offloaded to (or onboarded from) disk in B1.
    TierModeMismatch,
    /// No KV mode was given: the run is valid but makes no tier claim.
    KvModeUnspecified,
    /// Streamed requests were answered with one JSON body: the run's
    /// per-token figures (TTFT, ITL, TPOT) leave them out.
    StreamAnsweredUnary,
}

impl ReasonCode {
    pub const ALL: [ReasonCode; 20] = [
        ReasonCode::RunInvalid,
        ReasonCode::ErrorRateAboveThreshold,
        ReasonCode::KvbmMetricsMissing,
        ReasonCode::RunErrorsPresent,
        ReasonCode::DiskTierNoDiskIo,
        ReasonCode::DiskTierNoKvbmDiskActivity,
        ReasonCode::DiskIoUnavailable,
        ReasonCode::IoWithoutKvbmDeltas,
        ReasonCode::ReuseWithoutMatchedTokens,
        ReasonCode::ReuseOpportunityUnknown,
        ReasonCode::HitRateGaugeStale,
        ReasonCode::ReuseClientFrontendMismatch,
        ReasonCode::KvbmMatchedExceedsCached,
        ReasonCode::KvbmMatchedOnboardMismatch,
        ReasonCode::KvbmDiskBytesNotOnDevice,
        ReasonCode::DeviceBytesNotFromKvbm,
        ReasonCode::WorkerIoBelowKvbm,
        ReasonCode::TierModeMismatch,
        ReasonCode::KvModeUnspecified,
        ReasonCode::StreamAnsweredUnary,
    ];

    /// As [`Policy`] leaves it; `allow_missing_kvbm_metrics` demotes
    /// [`ReasonCode::KvbmMetricsMissing`] to soft.
    pub fn severity(self) -> Severity {
        match self {
            ReasonCode::RunInvalid
            | ReasonCode::ErrorRateAboveThreshold
            | ReasonCode::KvbmMetricsMissing
            | ReasonCode::TierModeMismatch => Severity::Hard,
            _ => Severity::Soft,
        }
    }

    /// The seed's `invalid_reason` name, for the hard codes that had one.
    /// `RunInvalid` has none: the host keeps its own reason.
    pub fn seed_name(self) -> Option<&'static str> {
        match self {
            ReasonCode::KvbmMetricsMissing => Some("kvbm_metrics_unavailable"),
            ReasonCode::ErrorRateAboveThreshold => Some("error_rate_above_threshold"),
            ReasonCode::TierModeMismatch => Some("tier_mode_mismatch"),
            _ => None,
        }
    }
}

/// `Verdict.invalid_reason` is written under the seed's name.
mod seed_name {
    use super::ReasonCode;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(c: &Option<ReasonCode>, s: S) -> Result<S::Ok, S::Error> {
        match c.and_then(ReasonCode::seed_name) {
            Some(n) => s.serialize_some(n),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<ReasonCode>, D::Error> {
        let Some(name) = Option::<std::borrow::Cow<'de, str>>::deserialize(d)? else {
            return Ok(None);
        };
        ReasonCode::ALL
            .into_iter()
            .find(|c| c.seed_name() == Some(&*name))
            .map(Some)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown invalid_reason {name:?}")))
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default)]
pub struct ReplayReads {
    /// `possible_readback` | `weak_read_signal` | `no_clear_readback` | `no_replay_phase` | `unmeasured`.
    pub classification: String,
    pub replay_phases: Vec<String>,
    pub baseline_phases: Vec<String>,
    pub replay_read_bytes: Option<u64>,
    pub baseline_read_bytes: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default)]
pub struct Signals {
    pub kv_mode: Option<KvMode>,
    pub kvbm_metrics_available: bool,
    /// `None` when no phase measured it (not the same as zero).
    pub offload_d2h_total: Option<f64>,
    pub offload_to_disk_total: Option<f64>,
    pub onboard_h2d_total: Option<f64>,
    pub onboard_d2d_total: Option<f64>,
    /// KVBM v2's disk → host staging, summed; `None` in v1.
    #[serde(default)]
    pub onboard_d2h_total: Option<f64>,
    /// Host-tier reuse alone: Σ (`onboard_h2d − onboard_d2h`).
    #[serde(default)]
    pub host_only_onboard_total: Option<f64>,
    pub matched_tokens_total: Option<f64>,
    pub disk_hit_rate_max: Option<f64>,
    pub host_hit_rate_max: Option<f64>,
    /// KVBM wrote blocks to the disk tier (offload h2d or d2d).
    pub ssd_write_signal: bool,
    /// KV came back from disk; `ssd_rehydrate_sources` says from which evidence.
    pub ssd_rehydrate_signal: bool,
    pub ssd_rehydrate_sources: Vec<String>,
    /// KV came back from CPU memory (host-only onboards). Not disk rehydration.
    pub host_onboard_signal: bool,
    /// KVBM matched tokens in its tiers.
    pub reuse_signal: bool,
    pub disk_read_bytes: Option<u64>,
    pub disk_write_bytes: Option<u64>,
    pub replay_reads: ReplayReads,
    pub error_rate: Option<f64>,
    pub reuse_opportunity: Option<ReuseOpportunity>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default)]
pub struct Verdict {
    pub run_valid: bool,
    pub decision_grade: bool,
    /// The first hard failure that has a seed name, written under that name.
    #[serde(default, with = "seed_name")]
    #[schemars(with = "Option<String>")]
    pub invalid_reason: Option<ReasonCode>,
    pub reason_codes: Vec<ReasonCode>,
    /// One line per code, in the same order, saying what was seen.
    pub details: Vec<String>,
    pub signals: Signals,
    /// The three-way figures per phase and every disagreement found.
    #[serde(default)]
    pub cross_checks: CrossChecks,
}

/// How far apart two figures may be and still agree.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Tolerance {
    pub relative: f64,
    pub absolute: f64,
}

impl Tolerance {
    fn slack(&self, a: f64, b: f64) -> f64 {
        self.absolute.max(self.relative * a.abs().max(b.abs()))
    }

    /// `a` is above `b` by more than the tolerance.
    fn exceeds(&self, a: f64, b: f64) -> bool {
        a - b > self.slack(a, b)
    }
}

/// What a hit-rate gauge covers: KVBM's last `window_requests` requests,
/// whatever phase they were in. A gauge is never a phase's rate by itself.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct HitRateWindow {
    pub window_requests: u64,
    /// Requests of this phase and of the run up to its end (client counts).
    pub phase_requests: Option<u64>,
    pub run_requests_through_phase: Option<u64>,
    /// Every request of the phase is inside the window (so a tier that
    /// onboarded blocks in the phase cannot read 0).
    pub phase_inside_window: Option<bool>,
    /// The window holds only this run's requests (so a non-zero rate is this run's).
    pub window_inside_run: Option<bool>,
}

/// Reuse of one phase, from each source.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ReuseFigures {
    pub client_requests: Option<u64>,
    pub client_prompt_tokens: Option<u64>,
    pub client_cached_tokens: Option<u64>,
    /// Σ cached ÷ Σ prompt tokens.
    pub client_reuse_ratio: Option<f64>,
    pub frontend_input_tokens: Option<f64>,
    pub frontend_cached_tokens: Option<f64>,
    pub frontend_reuse_ratio: Option<f64>,
    pub kvbm_matched_tokens: Option<f64>,
    /// Matched tokens ÷ frontend input tokens (else client prompt tokens):
    /// the share reused from KVBM's host/disk tiers, not from GPU memory.
    pub kvbm_matched_ratio: Option<f64>,
    /// Blocks that reached the GPU from KVBM's tiers (h2d + d2d + o2d).
    pub kvbm_onboarded_blocks: Option<f64>,
    pub host_only_onboarded_blocks: Option<f64>,
    pub disk_onboarded_blocks: Option<f64>,
    pub kv_block_size_tokens: Option<f64>,
    pub kvbm_onboarded_tokens: Option<f64>,
    pub kvbm_onboarded_bytes: Option<f64>,
    pub host_hit_rate_after: Option<f64>,
    pub disk_hit_rate_after: Option<f64>,
    pub hit_rate_window: HitRateWindow,
}

/// Disk traffic of one phase, from each source (bytes).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct DiskFigures {
    pub disk_block_bytes: Option<u64>,
    pub kvbm_write_blocks: Option<f64>,
    pub kvbm_read_blocks: Option<f64>,
    pub kvbm_write_bytes: Option<f64>,
    pub kvbm_read_bytes: Option<f64>,
    pub device_read_bytes: Option<u64>,
    pub device_write_bytes: Option<u64>,
    pub process_read_bytes: Option<u64>,
    pub process_write_bytes: Option<u64>,
    pub cgroup_read_bytes: Option<u64>,
    pub cgroup_write_bytes: Option<u64>,
}

/// One disagreement: which figures, their values, the tolerance applied.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Disagreement {
    pub code: ReasonCode,
    pub phase: String,
    pub figure: String,
    pub value: f64,
    pub against: String,
    pub against_value: f64,
    pub tolerance: Tolerance,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct PhaseCrossCheck {
    pub phase: String,
    pub reuse: ReuseFigures,
    pub disk: DiskFigures,
    pub disagreements: Vec<Disagreement>,
    /// Comparisons that could not be made, and why (a missing figure is not a
    /// disagreement, but it is said).
    pub unchecked: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CrossChecks {
    pub tokens_tolerance: Tolerance,
    pub bytes_tolerance: Tolerance,
    pub phases: Vec<PhaseCrossCheck>,
}

impl Verdict {
    /// Records `code` once, with the first detail; a hard one invalidates the run.
    fn flag(&mut self, code: ReasonCode, severity: Severity, detail: String) {
        self.decision_grade = false;
        if severity == Severity::Hard {
            self.run_valid = false;
            if self.invalid_reason.is_none() && code.seed_name().is_some() {
                self.invalid_reason = Some(code);
            }
        }
        if !self.reason_codes.contains(&code) {
            self.reason_codes.push(code);
            self.details.push(detail);
        }
    }

    fn add(&mut self, code: ReasonCode, detail: String) {
        self.flag(code, code.severity(), detail);
    }
}

fn has_marker(phase: &str, markers: &[String]) -> bool {
    let p = phase.to_ascii_lowercase();
    markers.iter().any(|m| p.contains(&m.to_ascii_lowercase()))
}

fn sum_opt(it: impl Iterator<Item = Option<u64>>) -> Option<u64> {
    let v: Vec<u64> = it.flatten().collect();
    (!v.is_empty()).then(|| v.iter().sum())
}

fn replay_reads(phases: &[PhaseEvidence], p: &Policy) -> ReplayReads {
    let replay: Vec<&PhaseEvidence> = phases
        .iter()
        .filter(|e| has_marker(&e.phase, &p.replay_markers))
        .collect();
    let base: Vec<&PhaseEvidence> = phases
        .iter()
        .filter(|e| has_marker(&e.phase, &p.baseline_markers))
        .collect();
    let mut r = ReplayReads {
        replay_phases: replay.iter().map(|e| e.phase.clone()).collect(),
        baseline_phases: base.iter().map(|e| e.phase.clone()).collect(),
        replay_read_bytes: sum_opt(replay.iter().map(|e| e.disk_io().map(|x| x.0))),
        baseline_read_bytes: sum_opt(base.iter().map(|e| e.disk_io().map(|x| x.0))),
        ..Default::default()
    };
    r.classification = if replay.is_empty() {
        "no_replay_phase"
    } else {
        match r.replay_read_bytes {
            None => "unmeasured",
            Some(rb) => {
                let floor = (p.min_disk_io_bytes as f64)
                    .max(p.replay_read_factor * r.baseline_read_bytes.unwrap_or(0) as f64);
                if rb as f64 > floor {
                    "possible_readback"
                } else if rb > 0 {
                    "weak_read_signal"
                } else {
                    "no_clear_readback"
                }
            }
        }
    }
    .to_string();
    r
}

pub fn evaluate(input: &VerdictInput<'_>) -> Verdict {
    let p = &input.policy;
    let mode = input.kv_mode;
    let phases = input.phases;
    let mut v = Verdict {
        run_valid: true,
        decision_grade: true,
        ..Default::default()
    };

    // ---- signals
    let s = &mut v.signals;
    s.kv_mode = Some(mode);
    s.kvbm_metrics_available = phases.iter().any(|e| e.kvbm_available);
    let total = |f: fn(&PhaseEvidence) -> Option<f64>| {
        let seen: Vec<f64> = phases.iter().filter_map(f).collect();
        (!seen.is_empty()).then(|| seen.iter().sum::<f64>())
    };
    s.offload_d2h_total = total(|e| e.offload_d2h);
    s.offload_to_disk_total = phases
        .iter()
        .any(|e| e.offload_h2d.is_some() || e.offload_d2d.is_some())
        .then(|| phases.iter().map(PhaseEvidence::disk_offload).sum());
    s.onboard_h2d_total = total(|e| e.onboard_h2d);
    s.onboard_d2d_total = total(|e| e.onboard_d2d);
    s.onboard_d2h_total = total(|e| e.onboard_d2h);
    s.host_only_onboard_total = total(PhaseEvidence::host_only_onboard);
    s.matched_tokens_total = total(|e| e.matched_tokens);
    s.disk_hit_rate_max = phases
        .iter()
        .filter_map(|e| e.disk_hit_rate_after)
        .reduce(f64::max);
    s.host_hit_rate_max = phases
        .iter()
        .filter_map(|e| e.host_hit_rate_after)
        .reduce(f64::max);
    s.ssd_write_signal = s.offload_to_disk_total.is_some_and(|v| v > 0.0);
    s.host_onboard_signal = s.host_only_onboard_total.is_some_and(|v| v > 0.0);
    s.reuse_signal = s.matched_tokens_total.is_some_and(|v| v > 0.0);
    s.disk_read_bytes = sum_opt(phases.iter().map(|e| e.disk_io().map(|x| x.0)));
    s.disk_write_bytes = sum_opt(phases.iter().map(|e| e.disk_io().map(|x| x.1)));
    s.replay_reads = replay_reads(phases, p);
    if s.onboard_d2d_total.is_some_and(|v| v > 0.0) {
        s.ssd_rehydrate_sources
            .push("kvbm_onboard_blocks_d2d".into());
    }
    if s.onboard_d2h_total.is_some_and(|v| v > 0.0) {
        s.ssd_rehydrate_sources
            .push("kvbm_onboard_blocks_d2h".into());
    }
    let checks = cross_checks(phases, p, mode);
    // A gauge whose window reaches back before the run may be showing an
    // earlier run's hits, so it is evidence only once the run fills it.
    if checks.phases.iter().any(|c| {
        c.reuse.disk_hit_rate_after.is_some_and(|r| r > 0.0)
            && c.reuse.hit_rate_window.window_inside_run == Some(true)
    }) {
        s.ssd_rehydrate_sources
            .push("kvbm_disk_cache_hit_rate".into());
    }
    // Without a disk tier, replay reads are someone else's I/O, not KV.
    if mode.disk_tier_on() && s.replay_reads.classification == "possible_readback" {
        s.ssd_rehydrate_sources.push("replay_disk_reads".into());
    }
    s.ssd_rehydrate_signal = !s.ssd_rehydrate_sources.is_empty();
    s.error_rate = input.errors.error_rate();
    s.reuse_opportunity = input.reuse.clone();
    let signals = v.signals.clone();

    // ---- hard failures
    if input.host_invalid {
        v.add(
            ReasonCode::RunInvalid,
            "the run is invalid for the host (summary.json says why)".into(),
        );
    }
    if let Some(rate) = signals.error_rate
        && rate > p.max_error_rate
    {
        v.add(
            ReasonCode::ErrorRateAboveThreshold,
            format!(
                "{} of {} requests failed ({:.2}% > {:.2}%)",
                input.errors.failed_requests,
                input.errors.total_requests,
                rate * 100.0,
                p.max_error_rate * 100.0
            ),
        );
    }
    if let Some(d) = tier_mode_mismatch(mode, phases) {
        v.add(ReasonCode::TierModeMismatch, d);
    }
    if !mode.is_specified() {
        v.add(
            ReasonCode::KvModeUnspecified,
            format!(
                "no --kv-mode, --tier-mode or stack profile: the run makes no KV-tier claim (KVBM metrics {})",
                if signals.kvbm_metrics_available {
                    "answered and are recorded"
                } else {
                    "did not answer"
                }
            ),
        );
    }
    if mode.kvbm_enabled() && !signals.kvbm_metrics_available {
        let d = format!("kv mode {mode:?} has a KV tier but no phase had kvbm_* metrics");
        let severity = if p.allow_missing_kvbm_metrics {
            Severity::Soft
        } else {
            ReasonCode::KvbmMetricsMissing.severity()
        };
        v.flag(ReasonCode::KvbmMetricsMissing, severity, d);
    }

    // ---- soft failures
    if input.errors.unary_answers_to_stream > 0 {
        v.add(
            ReasonCode::StreamAnsweredUnary,
            format!(
                "{} of {} requests asked to stream and were answered with one JSON body: \
                 they have no TTFT, TTFC or ITL, which the run's figures leave out",
                input.errors.unary_answers_to_stream, input.errors.total_requests
            ),
        );
    }
    if input.errors.failed_requests > 0 {
        let kinds: Vec<String> = input
            .errors
            .by_kind
            .iter()
            .map(|(k, n)| format!("{k}={n}"))
            .collect();
        v.add(
            ReasonCode::RunErrorsPresent,
            format!(
                "{} failed requests ({})",
                input.errors.failed_requests,
                kinds.join(", ")
            ),
        );
    }
    if mode.disk_tier_on() {
        match (signals.disk_read_bytes, signals.disk_write_bytes) {
            (Some(r), Some(w)) if r < p.min_disk_io_bytes && w < p.min_disk_io_bytes => v.add(ReasonCode::DiskTierNoDiskIo,
                format!("disk tier configured, but the KV disk read {r} and wrote {w} bytes in all phases"),
            ),
            (None, _) | (_, None) => v.add(ReasonCode::DiskIoUnavailable,
                "disk tier configured, but no phase has block-device or SMART I/O for the KV disk".into(),
            ),
            _ => {}
        }
        if signals.kvbm_metrics_available
            && !signals.ssd_write_signal
            && signals.onboard_d2d_total.unwrap_or(0.0) == 0.0
            && signals.onboard_d2h_total.unwrap_or(0.0) == 0.0
        {
            v.add(ReasonCode::DiskTierNoKvbmDiskActivity,
                "disk tier configured, but KVBM offloaded nothing to disk and onboarded nothing from it".into(),
            );
        }
        let mut unexplained = Vec::new();
        for e in phases.iter().filter(|e| e.kvbm_available) {
            let Some((r, w)) = e.disk_io() else { continue };
            if w >= p.min_disk_io_bytes && e.disk_offload() == 0.0 {
                unexplained.push(format!("{}: wrote {w} bytes with no disk offload", e.phase));
            }
            if r >= p.min_disk_io_bytes && e.disk_onboard().unwrap_or(0.0) == 0.0 {
                unexplained.push(format!("{}: read {r} bytes with no disk onboard", e.phase));
            }
        }
        if !unexplained.is_empty() {
            v.add(ReasonCode::IoWithoutKvbmDeltas, unexplained.join("; "));
        }
    }
    // A tier that onboarded blocks in a phase had hits among the phase's
    // requests; when every one of them is inside KVBM's request window the
    // gauge after the phase cannot read 0. With a phase longer than the
    // window the hits may have left it, so nothing is concluded.
    let stale: Vec<String> = phases
        .iter()
        .zip(&checks.phases)
        .filter(|(e, c)| e.kvbm_available && c.reuse.hit_rate_window.phase_inside_window == Some(true))
        .flat_map(|(e, c)| {
            [
                ("host", e.host_only_onboard(), e.host_hit_rate_after),
                ("disk", e.disk_onboard(), e.disk_hit_rate_after),
            ]
            .into_iter()
            .filter(|(_, n, r)| n.is_some_and(|n| n > 0.0) && *r == Some(0.0))
            .map(|(tier, n, _)| {
                format!(
                    "{}: {} {tier} onboards in {} requests, {tier} hit rate 0 over the last {} requests",
                    e.phase,
                    n.unwrap_or(0.0),
                    c.reuse.hit_rate_window.phase_requests.unwrap_or(0),
                    c.reuse.hit_rate_window.window_requests
                )
            })
            .collect::<Vec<_>>()
        })
        .collect();
    if !stale.is_empty() {
        v.add(
            ReasonCode::HitRateGaugeStale,
            format!(
                "hit-rate gauges did not move while blocks were onboarded ({}); every request of those phases is inside the DYN_KVBM_CACHE_STATS_MAX_REQUESTS window, so the gauges are stale",
                stale.join("; ")
            ),
        );
    }
    let mut found: Vec<(ReasonCode, Vec<String>)> = Vec::new();
    for d in checks.phases.iter().flat_map(|c| &c.disagreements) {
        let line = format!(
            "{}: {} {} vs {} {} (tolerance max({}, {} × the larger))",
            d.phase,
            d.figure,
            d.value,
            d.against,
            d.against_value,
            d.tolerance.absolute,
            d.tolerance.relative
        );
        match found.iter_mut().find(|(c, _)| *c == d.code) {
            Some((_, lines)) => lines.push(line),
            None => found.push((d.code, vec![line])),
        }
    }
    for (code, lines) in found {
        v.add(code, lines.join("; "));
    }
    v.cross_checks = checks;
    if mode.kvbm_enabled() {
        match &input.reuse {
            Some(r) if r.rate >= p.high_reuse_rate && signals.kvbm_metrics_available && !signals.reuse_signal => v.add(ReasonCode::ReuseWithoutMatchedTokens,
                format!(
                    "{} of {} requests could reuse earlier KV ({:.0}%), but kvbm_matched_tokens did not move",
                    r.opportunities,
                    r.requests,
                    r.rate * 100.0
                ),
            ),
            None => v.add(ReasonCode::ReuseOpportunityUnknown, "no request manifest to measure reuse opportunity".into()),
            _ => {}
        }
    }
    v
}

fn ratio(a: f64, b: f64) -> Option<f64> {
    (b > 0.0).then(|| crate::common::round6(a / b))
}

fn times(blocks: Option<f64>, per_block: Option<f64>) -> Option<f64> {
    Some(blocks? * per_block?)
}

/// The per-phase figures and their disagreements. Disk comparisons need a
/// disk tier: without one the device's I/O is not KV's and nothing is expected.
fn cross_checks(phases: &[PhaseEvidence], p: &Policy, mode: KvMode) -> CrossChecks {
    let tok = Tolerance {
        relative: p.cross_check_relative,
        absolute: p.cross_check_tokens,
    };
    let byt = Tolerance {
        relative: p.cross_check_relative,
        absolute: p.min_disk_io_bytes as f64,
    };
    let mut out = CrossChecks {
        tokens_tolerance: tok,
        bytes_tolerance: byt,
        phases: Vec::new(),
    };
    let mut run_requests = Some(0u64);
    let block_bytes = p.kv_block_bytes.map(|b| b as f64);
    let disk_block_bytes = p.kv_disk_block_bytes.or(p.kv_block_bytes);
    for e in phases {
        let mut x = PhaseCrossCheck {
            phase: e.phase.clone(),
            ..Default::default()
        };
        let c = e.client.as_ref();
        run_requests = run_requests.zip(c).map(|(n, c)| n + c.requests);
        // ---- reuse figures
        let r = &mut x.reuse;
        if let Some(c) = c {
            r.client_requests = Some(c.requests);
            if c.requests_without_usage == 0 {
                r.client_prompt_tokens = Some(c.prompt_tokens);
                r.client_cached_tokens = Some(c.cached_tokens);
                r.client_reuse_ratio = ratio(c.cached_tokens as f64, c.prompt_tokens as f64);
            } else {
                x.unchecked.push(format!(
                    "client: {} of {} requests had no usage, so its token sums are partial",
                    c.requests_without_usage, c.requests
                ));
            }
        }
        r.frontend_input_tokens = e.frontend_input_tokens;
        r.frontend_cached_tokens = e.frontend_cached_tokens;
        r.frontend_reuse_ratio = e
            .frontend_cached_tokens
            .zip(e.frontend_input_tokens)
            .and_then(|(a, b)| ratio(a, b));
        if e.kvbm_available {
            r.kvbm_matched_tokens = e.matched_tokens;
            let input = e
                .frontend_input_tokens
                .or(r.client_prompt_tokens.map(|t| t as f64));
            r.kvbm_matched_ratio = e.matched_tokens.zip(input).and_then(|(a, b)| ratio(a, b));
            r.kvbm_onboarded_blocks = (e.onboard_h2d.is_some() || e.onboard_d2d.is_some())
                .then(|| e.onboard_h2d.unwrap_or(0.0) + e.onboard_d2d.unwrap_or(0.0));
            r.host_only_onboarded_blocks = e.host_only_onboard();
            r.disk_onboarded_blocks = e.disk_onboard();
            r.host_hit_rate_after = e.host_hit_rate_after;
            r.disk_hit_rate_after = e.disk_hit_rate_after;
        }
        r.kv_block_size_tokens = e.kv_block_size_tokens;
        r.kvbm_onboarded_tokens = times(r.kvbm_onboarded_blocks, e.kv_block_size_tokens);
        r.kvbm_onboarded_bytes = times(r.kvbm_onboarded_blocks, block_bytes);
        let w = p.hit_rate_window_requests;
        r.hit_rate_window = HitRateWindow {
            window_requests: w,
            phase_requests: c.map(|c| c.requests),
            run_requests_through_phase: run_requests,
            phase_inside_window: c.map(|c| c.requests <= w),
            window_inside_run: run_requests.map(|n| n >= w),
        };
        // ---- reuse comparisons
        let mut dis = Vec::new();
        let mut disagree =
            |code, figure: &str, value: f64, against: &str, against_value: f64, tolerance| {
                dis.push(Disagreement {
                    code,
                    phase: e.phase.clone(),
                    figure: figure.into(),
                    value,
                    against: against.into(),
                    against_value,
                    tolerance,
                });
            };
        let client_cached = r.client_cached_tokens.map(|t| t as f64);
        if let (Some(a), Some(b)) = (client_cached, r.frontend_cached_tokens)
            && (tok.exceeds(a, b) || tok.exceeds(b, a))
        {
            disagree(
                ReasonCode::ReuseClientFrontendMismatch,
                "client_cached_tokens",
                a,
                "frontend_cached_tokens",
                b,
                tok,
            );
        }
        // GPU prefix hits are cached tokens KVBM never sees, so KVBM's
        // matches can only be a part of the cached tokens.
        let cached = [
            ("frontend_cached_tokens", r.frontend_cached_tokens),
            ("client_cached_tokens", client_cached),
        ]
        .into_iter()
        .filter_map(|(n, v)| v.map(|v| (n, v)))
        .max_by(|a, b| a.1.total_cmp(&b.1));
        if let (Some(m), Some((name, c))) = (r.kvbm_matched_tokens, cached)
            && tok.exceeds(m, c)
        {
            disagree(
                ReasonCode::KvbmMatchedExceedsCached,
                "kvbm_matched_tokens",
                m,
                name,
                c,
                tok,
            );
        }
        match (r.kvbm_matched_tokens, r.kvbm_onboarded_tokens) {
            (Some(m), Some(o)) if tok.exceeds(m, o) || tok.exceeds(o, m) => disagree(
                ReasonCode::KvbmMatchedOnboardMismatch,
                "kvbm_matched_tokens",
                m,
                "kvbm_onboarded_tokens",
                o,
                tok,
            ),
            (Some(_), None) => x.unchecked.push(
                "kvbm: matched vs onboarded tokens needs the frontend's kv_cache_block_size".into(),
            ),
            _ => {}
        }
        // ---- disk figures
        let d = &mut x.disk;
        d.disk_block_bytes = disk_block_bytes;
        if e.kvbm_available {
            d.kvbm_write_blocks =
                (e.offload_h2d.is_some() || e.offload_d2d.is_some()).then(|| e.disk_offload());
            d.kvbm_read_blocks = e.disk_onboard();
        }
        let per = disk_block_bytes.map(|b| b as f64);
        d.kvbm_write_bytes = times(d.kvbm_write_blocks, per);
        d.kvbm_read_bytes = times(d.kvbm_read_blocks, per);
        d.device_read_bytes = e.device_read_bytes;
        d.device_write_bytes = e.device_write_bytes;
        d.process_read_bytes = e.process_read_bytes;
        d.process_write_bytes = e.process_write_bytes;
        d.cgroup_read_bytes = e.cgroup_read_bytes;
        d.cgroup_write_bytes = e.cgroup_write_bytes;
        // ---- disk comparisons
        if mode == KvMode::Unspecified {
            x.unchecked
                .push("disk: the KV mode is unspecified, so the disk's I/O may not be KV's".into());
        } else if !mode.disk_tier_on() {
            x.unchecked
                .push("disk: no disk tier in this KV mode".into());
        } else if !e.kvbm_available {
            x.unchecked
                .push("disk: no KVBM metrics in this phase".into());
        } else if per.is_none() {
            x.unchecked
                .push("disk: the KV block size in bytes is unknown (--kv-block-bytes)".into());
        } else {
            let d = &x.disk;
            for (dir, kvbm, device, process, cgroup) in [
                (
                    "read",
                    d.kvbm_read_bytes,
                    d.device_read_bytes,
                    d.process_read_bytes,
                    d.cgroup_read_bytes,
                ),
                (
                    "write",
                    d.kvbm_write_bytes,
                    d.device_write_bytes,
                    d.process_write_bytes,
                    d.cgroup_write_bytes,
                ),
            ] {
                let Some(k) = kvbm else { continue };
                let kname = format!("kvbm_{dir}_bytes");
                match device {
                    Some(dv) => {
                        let dv = dv as f64;
                        if byt.exceeds(k, dv) {
                            disagree(
                                ReasonCode::KvbmDiskBytesNotOnDevice,
                                &kname,
                                k,
                                &format!("device_{dir}_bytes"),
                                dv,
                                byt,
                            );
                        }
                        if byt.exceeds(dv, k) {
                            disagree(
                                ReasonCode::DeviceBytesNotFromKvbm,
                                &format!("device_{dir}_bytes"),
                                dv,
                                &kname,
                                k,
                                byt,
                            );
                        }
                    }
                    None => x.unchecked.push(format!(
                        "disk {dir}: no block-device figure for the KV disk"
                    )),
                }
                // The worker does other I/O too (its own files), so only
                // KVBM claiming more than the worker moved is a disagreement.
                for (src, v) in [("process", process), ("cgroup", cgroup)] {
                    if let Some(v) = v
                        && byt.exceeds(k, v as f64)
                    {
                        disagree(
                            ReasonCode::WorkerIoBelowKvbm,
                            &kname,
                            k,
                            &format!("{src}_{dir}_bytes"),
                            v as f64,
                            byt,
                        );
                    }
                }
            }
        }
        x.disagreements = dis;
        out.phases.push(x);
    }
    out
}

/// What the phases show that the run's tier mode rules out, naming the
/// counters and phases; `None` when they agree. Only block movement counts:
/// a KVBM port serving zeros in B0 says nothing about the engine's tiers (the
/// stack's own check, `sparkhost stack status`, judges the port).
pub fn tier_mode_mismatch(mode: KvMode, phases: &[PhaseEvidence]) -> Option<String> {
    let mut seen = Vec::new();
    for e in phases.iter().filter(|e| e.kvbm_available) {
        let counters: &[(&str, Option<f64>)] = match mode {
            KvMode::Off => &[
                ("kvbm_offload_blocks_d2h", e.offload_d2h),
                ("kvbm_offload_blocks_h2d", e.offload_h2d),
                ("kvbm_offload_blocks_d2d", e.offload_d2d),
                ("kvbm_onboard_blocks_h2d", e.onboard_h2d),
                ("kvbm_onboard_blocks_d2d", e.onboard_d2d),
                ("kvbm_onboard_blocks_d2h", e.onboard_d2h),
            ],
            // v2 stages a disk hit through the host (`d2h`): disk use too.
            KvMode::CpuOnly => &[
                ("kvbm_offload_blocks_h2d", e.offload_h2d),
                ("kvbm_offload_blocks_d2d", e.offload_d2d),
                ("kvbm_onboard_blocks_d2d", e.onboard_d2d),
                ("kvbm_onboard_blocks_d2h", e.onboard_d2h),
            ],
            // B2 allows every movement; an unknown mode rules nothing out.
            KvMode::CpuDisk | KvMode::Unspecified => &[],
        };
        for (name, v) in counters {
            if let Some(v) = v.filter(|v| *v > 0.0) {
                seen.push(format!("{name} +{v} in phase {}", e.phase));
            }
        }
    }
    if seen.is_empty() {
        return None;
    }
    let what = match mode {
        KvMode::Off => "B0 runs no KVBM, but KVBM moved blocks",
        KvMode::CpuOnly => "B1 has the disk tier off, but KVBM moved blocks to or from disk",
        // B2 and an unknown mode list no counters above, so `seen` is empty
        // and this is not reached.
        KvMode::CpuDisk | KvMode::Unspecified => return None,
    };
    Some(format!("tier_mode_mismatch: {what}: {}", seen.join(", ")))
}

/// Writes `<run_dir>/verdict.json`.
pub fn write(run_dir: &Path, v: &Verdict) -> std::io::Result<std::path::PathBuf> {
    let p = run_dir.join("verdict.json");
    crate::common::write_json(&p, v)?;
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ph(name: &str) -> PhaseEvidence {
        PhaseEvidence {
            phase: name.into(),
            kvbm_available: true,
            offload_d2h: Some(0.0),
            offload_h2d: Some(0.0),
            offload_d2d: Some(0.0),
            onboard_h2d: Some(0.0),
            onboard_d2d: Some(0.0),
            matched_tokens: Some(0.0),
            device_read_bytes: Some(0),
            device_write_bytes: Some(0),
            ..Default::default()
        }
    }

    /// What the client saw in a phase; usage on every request.
    fn client(requests: u64, prompt_tokens: u64, cached_tokens: u64) -> ClientReuse {
        ClientReuse {
            requests,
            requests_without_usage: 0,
            prompt_tokens,
            cached_tokens,
        }
    }

    fn input(mode: KvMode, phases: &[PhaseEvidence]) -> VerdictInput<'_> {
        VerdictInput {
            kv_mode: mode,
            phases,
            errors: RunErrors {
                total_requests: 100,
                failed_requests: 0,
                by_kind: BTreeMap::new(),
                unary_answers_to_stream: 0,
            },
            reuse: Some(ReuseOpportunity {
                requests: 100,
                ..Default::default()
            }),
            host_invalid: false,
            policy: Policy::default(),
        }
    }

    /// A healthy B2 run: writes to disk during pressure, reads back in replay.
    fn good_b2() -> Vec<PhaseEvidence> {
        let mut warm = ph("warm_A");
        warm.offload_d2h = Some(100.0);
        warm.device_read_bytes = Some(0);
        let mut pressure = ph("pressure_B");
        pressure.offload_d2h = Some(500.0);
        pressure.offload_h2d = Some(200.0);
        pressure.device_write_bytes = Some(400 << 20);
        let mut replay = ph("replay_A");
        replay.onboard_d2d = Some(50.0);
        replay.matched_tokens = Some(4096.0);
        replay.device_read_bytes = Some(100 << 20);
        replay.disk_hit_rate_after = Some(0.4);
        vec![warm, pressure, replay]
    }

    #[test]
    fn healthy_b2_run_is_valid_and_decision_grade() {
        let p = good_b2();
        let v = evaluate(&input(KvMode::CpuDisk, &p));
        assert!(v.run_valid && v.decision_grade, "{:?}", v.reason_codes);
        assert!(v.signals.ssd_write_signal);
        assert!(v.signals.ssd_rehydrate_signal);
        assert_eq!(
            v.signals.ssd_rehydrate_sources,
            vec!["kvbm_onboard_blocks_d2d", "replay_disk_reads"],
            "the disk hit rate is no source while its window may reach before the run"
        );
        assert_eq!(v.signals.replay_reads.classification, "possible_readback");
        assert!(v.signals.reuse_signal);
        assert!(!v.signals.host_onboard_signal);
    }

    #[test]
    fn host_onboarding_is_never_disk_rehydration() {
        let mut p = vec![ph("warm"), ph("replay")];
        p[1].onboard_h2d = Some(1000.0);
        p[1].matched_tokens = Some(8192.0);
        p[1].host_hit_rate_after = Some(0.9);
        let v = evaluate(&input(KvMode::CpuDisk, &p));
        assert!(v.signals.host_onboard_signal);
        assert!(
            !v.signals.ssd_rehydrate_signal,
            "{:?}",
            v.signals.ssd_rehydrate_sources
        );
        assert!(v.signals.ssd_rehydrate_sources.is_empty());
    }

    #[test]
    fn each_rehydration_source_alone() {
        let mut a = vec![ph("replay")];
        a[0].onboard_d2d = Some(1.0);
        assert_eq!(
            evaluate(&input(KvMode::CpuDisk, &a))
                .signals
                .ssd_rehydrate_sources,
            vec!["kvbm_onboard_blocks_d2d"]
        );
        let mut b = vec![ph("replay")];
        b[0].disk_hit_rate_after = Some(0.01);
        b[0].client = Some(client(20, 0, 0));
        let mut i = input(KvMode::CpuDisk, &b);
        assert!(evaluate(&i).signals.ssd_rehydrate_sources.is_empty());
        // Once the run has filled KVBM's request window, the gauge is the run's.
        i.policy.hit_rate_window_requests = 20;
        assert_eq!(
            evaluate(&i).signals.ssd_rehydrate_sources,
            vec!["kvbm_disk_cache_hit_rate"]
        );
        let mut c = vec![ph("warm"), ph("replay")];
        c[0].device_read_bytes = Some(10 << 20);
        c[1].device_read_bytes = Some(13 << 20);
        assert_eq!(
            evaluate(&input(KvMode::CpuDisk, &c))
                .signals
                .ssd_rehydrate_sources,
            vec!["replay_disk_reads"]
        );
    }

    #[test]
    fn replay_reads_need_to_beat_baseline_and_a_disk_tier() {
        let mut p = vec![ph("populate"), ph("rehydrate_replay")];
        p[0].device_read_bytes = Some(10 << 20);
        p[1].device_read_bytes = Some(11 << 20); // < 1.2 × baseline
        let v = evaluate(&input(KvMode::CpuDisk, &p));
        assert_eq!(v.signals.replay_reads.classification, "weak_read_signal");
        assert!(!v.signals.ssd_rehydrate_signal);
        p[1].device_read_bytes = Some(0);
        assert_eq!(
            evaluate(&input(KvMode::CpuDisk, &p))
                .signals
                .replay_reads
                .classification,
            "no_clear_readback"
        );
        p[1].device_read_bytes = Some(100 << 20);
        let b1 = evaluate(&input(KvMode::CpuOnly, &p));
        assert_eq!(b1.signals.replay_reads.classification, "possible_readback");
        assert!(
            !b1.signals.ssd_rehydrate_signal,
            "no disk tier: reads are not KV"
        );
        let none = [ph("steady")];
        assert_eq!(
            evaluate(&input(KvMode::CpuDisk, &none))
                .signals
                .replay_reads
                .classification,
            "no_replay_phase"
        );
        let mut unmeasured = [ph("replay")];
        unmeasured[0].device_read_bytes = None;
        unmeasured[0].device_write_bytes = None;
        assert_eq!(
            evaluate(&input(KvMode::CpuDisk, &unmeasured))
                .signals
                .replay_reads
                .classification,
            "unmeasured"
        );
    }

    #[test]
    fn kvbm_missing_with_a_kv_tier_is_invalid_unless_allowed() {
        let mut p = good_b2();
        for e in &mut p {
            *e = PhaseEvidence {
                phase: e.phase.clone(),
                device_read_bytes: e.device_read_bytes,
                device_write_bytes: e.device_write_bytes,
                ..Default::default()
            };
        }
        for mode in [KvMode::CpuOnly, KvMode::CpuDisk] {
            let v = evaluate(&input(mode, &p));
            assert!(!v.run_valid);
            assert!(v.reason_codes.contains(&ReasonCode::KvbmMetricsMissing));
            assert_eq!(v.invalid_reason, Some(ReasonCode::KvbmMetricsMissing));
        }
        let mut i = input(KvMode::CpuOnly, &p);
        i.policy.allow_missing_kvbm_metrics = true;
        let v = evaluate(&i);
        assert!(v.run_valid && !v.decision_grade);
        assert!(v.reason_codes.contains(&ReasonCode::KvbmMetricsMissing));
        // B0 never needs KVBM.
        let v = evaluate(&input(KvMode::Off, &p));
        assert!(v.run_valid && v.decision_grade, "{:?}", v.reason_codes);
    }

    #[test]
    fn disk_tier_without_disk_io() {
        let mut p = vec![ph("warm"), ph("replay")];
        p[0].offload_h2d = Some(5.0);
        p[1].device_write_bytes = Some(4096);
        let v = evaluate(&input(KvMode::CpuDisk, &p));
        assert!(v.run_valid && !v.decision_grade);
        assert!(
            v.reason_codes.contains(&ReasonCode::DiskTierNoDiskIo),
            "{:?}",
            v.reason_codes
        );
        // The same I/O in B1 is fine: no disk tier, nothing expected. KVBM
        // offloading to disk in B1 is not: that is another tier mode.
        let v = evaluate(&input(KvMode::CpuOnly, &p));
        assert_eq!(v.reason_codes, [ReasonCode::TierModeMismatch]);
        let mut b1 = p.clone();
        b1[0].offload_h2d = Some(0.0);
        assert!(evaluate(&input(KvMode::CpuOnly, &b1)).decision_grade);
        // SMART stands in when diskstats is unavailable.
        let mut q = p.clone();
        for e in &mut q {
            e.device_read_bytes = None;
            e.device_write_bytes = None;
            e.nvme_read_bytes = Some(0);
            e.nvme_write_bytes = Some(512_000);
        }
        assert!(
            evaluate(&input(KvMode::CpuDisk, &q))
                .reason_codes
                .contains(&ReasonCode::DiskTierNoDiskIo)
        );
        for e in &mut q {
            e.nvme_read_bytes = None;
            e.nvme_write_bytes = None;
        }
        assert!(
            evaluate(&input(KvMode::CpuDisk, &q))
                .reason_codes
                .contains(&ReasonCode::DiskIoUnavailable)
        );
    }

    #[test]
    fn disk_tier_without_kvbm_disk_activity() {
        let mut p = vec![ph("steady")];
        p[0].device_write_bytes = Some(50 << 20);
        p[0].offload_d2h = Some(10.0);
        let v = evaluate(&input(KvMode::CpuDisk, &p));
        assert!(
            v.reason_codes
                .contains(&ReasonCode::DiskTierNoKvbmDiskActivity)
        );
        assert!(v.reason_codes.contains(&ReasonCode::IoWithoutKvbmDeltas));
    }

    #[test]
    fn io_without_matching_kvbm_deltas_per_direction() {
        let mut p = good_b2();
        // Replay reads happen but nothing was onboarded from disk in that phase.
        p[2].onboard_d2d = Some(0.0);
        p[2].disk_hit_rate_after = None;
        let v = evaluate(&input(KvMode::CpuDisk, &p));
        let i = v
            .reason_codes
            .iter()
            .position(|&c| c == ReasonCode::IoWithoutKvbmDeltas)
            .expect("flagged");
        assert!(v.details[i].contains("replay_A: read"), "{}", v.details[i]);
        assert!(
            !v.details[i].contains("pressure_B"),
            "pressure writes are explained by offload_h2d"
        );
        // Writes with no disk offload in the warm phase.
        let mut q = good_b2();
        q[0].device_write_bytes = Some(8 << 20);
        let v = evaluate(&input(KvMode::CpuDisk, &q));
        let i = v
            .reason_codes
            .iter()
            .position(|&c| c == ReasonCode::IoWithoutKvbmDeltas)
            .unwrap();
        assert!(v.details[i].contains("warm_A: wrote"));
        // Small I/O below the floor is noise, not a finding.
        let mut r = good_b2();
        r[0].device_write_bytes = Some(4096);
        assert!(evaluate(&input(KvMode::CpuDisk, &r)).decision_grade);
    }

    #[test]
    fn onboards_with_a_zero_hit_rate_are_stale_gauges() {
        let mut phases = good_b2();
        for e in &mut phases {
            e.disk_hit_rate_after = e.disk_hit_rate_after.map(|_| 0.0);
        }
        // Without the phase's request count the window cannot be placed.
        let v = evaluate(&input(KvMode::CpuDisk, &phases));
        assert!(!v.reason_codes.contains(&ReasonCode::HitRateGaugeStale));
        for e in &mut phases {
            e.client = Some(client(10, 0, 0));
        }
        // A phase longer than the window: its hits may have left it.
        let mut long = input(KvMode::CpuDisk, &phases);
        long.policy.hit_rate_window_requests = 5;
        assert!(
            !evaluate(&long)
                .reason_codes
                .contains(&ReasonCode::HitRateGaugeStale)
        );
        let v = evaluate(&input(KvMode::CpuDisk, &phases));
        assert!(
            v.reason_codes.contains(&ReasonCode::HitRateGaugeStale),
            "{:?}",
            v.reason_codes
        );
        assert!(v.run_valid && !v.decision_grade);
        let v = evaluate(&input(KvMode::CpuDisk, &good_b2()));
        assert!(!v.reason_codes.contains(&ReasonCode::HitRateGaugeStale));
    }

    #[test]
    fn high_reuse_without_matched_tokens() {
        let mut p = good_b2();
        p[2].matched_tokens = Some(0.0);
        let mut i = input(KvMode::CpuDisk, &p);
        i.reuse = Some(ReuseOpportunity {
            requests: 10,
            opportunities: 8,
            rate: 0.8,
            ..Default::default()
        });
        let v = evaluate(&i);
        assert!(v.run_valid && !v.decision_grade);
        assert!(
            v.reason_codes
                .contains(&ReasonCode::ReuseWithoutMatchedTokens)
        );
        // Low opportunity: nothing expected.
        i.reuse.as_mut().unwrap().rate = 0.1;
        assert!(evaluate(&i).decision_grade);
        // Unknown opportunity is said, not assumed.
        i.reuse = None;
        assert!(
            evaluate(&i)
                .reason_codes
                .contains(&ReasonCode::ReuseOpportunityUnknown)
        );
        // B0 has no KVBM to match anything (nor to move blocks: good_b2's
        // counters in B0 would be a tier_mode_mismatch).
        let quiet = [ph("warm"), ph("replay")];
        let mut off = input(KvMode::Off, &quiet);
        off.reuse = None;
        assert!(evaluate(&off).decision_grade);
    }

    #[test]
    fn errors_present_and_error_rate_gate() {
        let p = good_b2();
        let mut i = input(KvMode::CpuDisk, &p);
        i.errors.failed_requests = 2;
        i.errors.by_kind.insert("http_5xx".into(), 2);
        let v = evaluate(&i);
        assert!(v.run_valid && !v.decision_grade);
        assert_eq!(v.reason_codes, vec![ReasonCode::RunErrorsPresent]);
        assert!(v.details[0].contains("http_5xx=2"));
        i.errors.failed_requests = 6;
        let v = evaluate(&i);
        assert!(!v.run_valid);
        assert_eq!(
            v.reason_codes,
            vec![
                ReasonCode::ErrorRateAboveThreshold,
                ReasonCode::RunErrorsPresent
            ]
        );
        assert_eq!(v.invalid_reason, Some(ReasonCode::ErrorRateAboveThreshold));
        assert_eq!(v.signals.error_rate, Some(0.06));
    }

    #[test]
    fn unary_answers_to_a_streamed_run_are_a_soft_warning() {
        let p = good_b2();
        let mut i = input(KvMode::CpuDisk, &p);
        i.errors.unary_answers_to_stream = 3;
        let v = evaluate(&i);
        assert!(v.run_valid && !v.decision_grade);
        assert_eq!(v.reason_codes, vec![ReasonCode::StreamAnsweredUnary]);
        assert!(
            v.details[0].starts_with("3 of 100 requests"),
            "{:?}",
            v.details
        );
    }

    #[test]
    fn host_invalid_reason_carries_over() {
        let p = good_b2();
        let mut i = input(KvMode::CpuDisk, &p);
        i.host_invalid = true;
        let v = evaluate(&i);
        assert!(!v.run_valid && !v.decision_grade);
        assert_eq!(v.reason_codes, vec![ReasonCode::RunInvalid]);
        assert_eq!(v.invalid_reason, None, "the host keeps its own reason");
    }

    #[test]
    fn reuse_opportunity_from_manifest_rows() {
        let rows = [
            json!({"prefix_hash": "p1", "request_identity_sha256": "a"}),
            json!({"prefix_hash": "p1", "request_identity_sha256": "b"}),
            json!({"prefix_hash": "p2", "request_identity_sha256": "c"}),
            json!({"prefix_hash": null, "request_identity_sha256": "a"}),
            json!({"prompt_sha256": "z"}),
        ];
        let r = ReuseOpportunity::from_rows(&rows);
        assert_eq!(r.requests, 5);
        assert_eq!(r.with_prefix_hash, 3);
        assert_eq!(r.repeated_prefix, 1);
        assert_eq!(r.repeated_identity, 1);
        assert_eq!(r.opportunities, 2);
        assert_eq!(r.rate, 0.4);
        assert_eq!(r.unique_prefix_hashes, 2);
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("request_manifest.jsonl");
        std::fs::write(
            &path,
            rows.iter()
                .map(|r| r.to_string() + "\n")
                .collect::<String>(),
        )
        .unwrap();
        assert_eq!(ReuseOpportunity::from_manifest_file(&path).unwrap(), r);
        assert_eq!(r.hash_ids, None, "no row had hash ids");
    }

    /// Hash ids make a request an opportunity and are counted per phase,
    /// the same from parsed rows and from the streamed file.
    #[test]
    fn reuse_opportunity_from_hash_id_labels() {
        let row = |phase: &str, ids: &str, tokens: u64| {
            json!({"phase": phase, "prompt_sha256": format!("{phase}{ids}"), "prompt_tokens_est": tokens,
                   "prompt_metadata": {"hash_ids": ids, "hash_block_tokens": "16", "other": "x"}})
        };
        let rows = [
            row("a", "7,8", 32),
            row("a", "7,8,9", 40),
            row("b", "7", 16),
            row("b", "5", 16),
        ];
        let r = ReuseOpportunity::from_rows(&rows);
        assert_eq!((r.requests, r.opportunities), (4, 2));
        let h = r.hash_ids.clone().unwrap();
        assert_eq!(h.block_tokens, Some(16));
        assert_eq!(
            (h.run.blocks, h.run.reusable_blocks, h.run.reusable_tokens),
            (7, 3, 48)
        );
        assert_eq!(h.phases["a"].reusable_tokens, 32);
        assert_eq!(h.phases["b"].requests_with_reuse, 1);
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("request_manifest.jsonl");
        let text: String = rows.iter().map(|r| r.to_string() + "\n").collect();
        std::fs::write(&path, text).unwrap();
        assert_eq!(ReuseOpportunity::from_manifest_file(&path).unwrap(), r);
    }

    /// KVBM v2 without GDS: a disk hit is d2h then h2d. Disk evidence, and
    /// host-only reuse is what h2d carries beyond the staged blocks.
    #[test]
    fn staged_disk_onboarding_is_disk_rehydration_not_host_reuse() {
        let mut p = vec![ph("warm"), ph("replay")];
        p[1].naming = Some(Naming::V2);
        p[1].onboard_d2d = Some(0.0);
        p[1].onboard_d2h = Some(30.0);
        p[1].onboard_h2d = Some(30.0);
        p[1].matched_tokens = Some(480.0);
        let v = evaluate(&input(KvMode::CpuDisk, &p));
        assert!(v.signals.ssd_rehydrate_signal);
        assert_eq!(
            v.signals.ssd_rehydrate_sources,
            vec!["kvbm_onboard_blocks_d2h"]
        );
        assert!(
            !v.signals.host_onboard_signal,
            "every h2d block was a staged disk hit"
        );
        assert_eq!(v.signals.host_only_onboard_total, Some(0.0));
        // Both paths in one phase: 12 host hits, 30 staged disk hits.
        p[1].onboard_h2d = Some(42.0);
        let v = evaluate(&input(KvMode::CpuDisk, &p));
        assert!(v.signals.host_onboard_signal);
        assert_eq!(v.signals.host_only_onboard_total, Some(12.0));
        let r = &v.cross_checks.phases[1].reuse;
        assert_eq!(r.host_only_onboarded_blocks, Some(12.0));
        assert_eq!(r.disk_onboarded_blocks, Some(30.0));
        assert_eq!(
            r.kvbm_onboarded_blocks,
            Some(42.0),
            "d2h is not a GPU arrival"
        );
        // Disk reads with only staged onboards are explained.
        p[1].device_read_bytes = Some(8 << 20);
        assert!(
            !evaluate(&input(KvMode::CpuDisk, &p))
                .reason_codes
                .contains(&ReasonCode::IoWithoutKvbmDeltas)
        );
    }

    /// One phase with every source agreeing: client, frontend and KVBM
    /// reuse; KVBM disk blocks, device, process and cgroup bytes.
    fn agreeing() -> (Vec<PhaseEvidence>, Policy) {
        let mut e = ph("replay");
        e.client = Some(client(4, 2048, 1984));
        e.frontend_input_tokens = Some(2048.0);
        e.frontend_cached_tokens = Some(1984.0);
        e.kv_block_size_tokens = Some(16.0);
        e.matched_tokens = Some(1920.0);
        e.onboard_d2d = Some(120.0);
        e.offload_h2d = Some(64.0);
        e.device_read_bytes = Some(120 << 15);
        e.device_write_bytes = Some(64 << 15);
        e.process_read_bytes = Some(120 << 15);
        e.process_write_bytes = Some((64 << 15) + 4096);
        e.cgroup_read_bytes = Some(120 << 15);
        e.cgroup_write_bytes = Some(64 << 15);
        let policy = Policy {
            kv_block_bytes: Some(1 << 15),
            ..Policy::default()
        };
        (vec![e], policy)
    }

    fn codes_of(p: &[PhaseEvidence], policy: &Policy) -> Vec<ReasonCode> {
        let mut i = input(KvMode::CpuDisk, p);
        i.policy = policy.clone();
        evaluate(&i).reason_codes
    }

    #[test]
    fn three_way_figures_agree_and_are_all_written() {
        let (p, policy) = agreeing();
        let mut i = input(KvMode::CpuDisk, &p);
        i.policy = policy;
        let v = evaluate(&i);
        assert!(v.decision_grade, "{:?} {:?}", v.reason_codes, v.details);
        let c = &v.cross_checks.phases[0];
        assert!(
            c.disagreements.is_empty() && c.unchecked.is_empty(),
            "{c:?}"
        );
        assert_eq!(c.reuse.client_reuse_ratio, Some(0.96875));
        assert_eq!(c.reuse.frontend_reuse_ratio, Some(0.96875));
        assert_eq!(c.reuse.kvbm_matched_ratio, Some(0.9375));
        assert_eq!(c.reuse.kvbm_onboarded_tokens, Some(1920.0));
        assert_eq!(c.reuse.kvbm_onboarded_bytes, Some(120.0 * 32768.0));
        assert_eq!(c.disk.kvbm_read_bytes, Some(120.0 * 32768.0));
        assert_eq!(c.disk.kvbm_write_bytes, Some(64.0 * 32768.0));
        assert_eq!(c.reuse.hit_rate_window.window_requests, 1000);
        assert_eq!(c.reuse.hit_rate_window.phase_inside_window, Some(true));
        assert_eq!(c.reuse.hit_rate_window.window_inside_run, Some(false));
        assert_eq!(v.cross_checks.bytes_tolerance.absolute, MIB);
        let j = serde_json::to_value(&v).unwrap();
        assert_eq!(
            j["cross_checks"]["phases"][0]["disk"]["device_read_bytes"],
            120 << 15
        );
    }

    #[test]
    fn each_disagreement_has_its_code_figures_and_tolerance() {
        let (base, policy) = agreeing();
        type Change = fn(&mut PhaseEvidence);
        let cases: [(Change, ReasonCode); 6] = [
            (
                |e| e.frontend_cached_tokens = Some(1000.0),
                ReasonCode::ReuseClientFrontendMismatch,
            ),
            (
                |e| {
                    e.matched_tokens = Some(4000.0);
                    e.onboard_d2d = Some(250.0);
                    e.device_read_bytes = Some(250 << 15);
                    e.process_read_bytes = Some(250 << 15);
                    e.cgroup_read_bytes = Some(250 << 15);
                },
                ReasonCode::KvbmMatchedExceedsCached,
            ),
            (
                |e| e.matched_tokens = Some(960.0),
                ReasonCode::KvbmMatchedOnboardMismatch,
            ),
            (
                |e| e.device_read_bytes = Some(0),
                ReasonCode::KvbmDiskBytesNotOnDevice,
            ),
            (
                |e| e.device_write_bytes = Some(64 << 20),
                ReasonCode::DeviceBytesNotFromKvbm,
            ),
            (
                |e| e.cgroup_read_bytes = Some(0),
                ReasonCode::WorkerIoBelowKvbm,
            ),
        ];
        for (change, code) in cases {
            let mut p = base.clone();
            change(&mut p[0]);
            let mut i = input(KvMode::CpuDisk, &p);
            i.policy = policy.clone();
            let v = evaluate(&i);
            assert_eq!(v.reason_codes, vec![code], "{:?}", v.details);
            assert!(v.run_valid && !v.decision_grade);
            let d = &v.cross_checks.phases[0].disagreements[0];
            assert_eq!(d.code, code);
            assert_eq!(d.phase, "replay");
            assert!(d.tolerance.relative > 0.0 && d.tolerance.absolute > 0.0);
            assert!(v.details[0].contains(&d.figure) && v.details[0].contains(&d.against));
        }
        // Within tolerance is agreement: 5% apart, 10% allowed.
        let mut p = base.clone();
        p[0].frontend_cached_tokens = Some(1984.0 * 1.05);
        assert!(codes_of(&p, &policy).is_empty());
        // The worker writing more than KVBM (its own files) is no disagreement.
        p[0].process_write_bytes = Some(512 << 20);
        assert!(codes_of(&p, &policy).is_empty());
    }

    #[test]
    fn missing_figures_are_unchecked_not_disagreements() {
        let (mut p, _) = agreeing();
        p[0].kv_block_size_tokens = None;
        p[0].client.as_mut().unwrap().requests_without_usage = 1;
        let v = evaluate(&input(KvMode::CpuDisk, &p));
        assert!(v.decision_grade, "{:?}", v.details);
        let u = &v.cross_checks.phases[0].unchecked;
        assert!(u.iter().any(|m| m.contains("no usage")), "{u:?}");
        assert!(u.iter().any(|m| m.contains("kv_cache_block_size")), "{u:?}");
        assert!(u.iter().any(|m| m.contains("--kv-block-bytes")), "{u:?}");
        assert_eq!(v.cross_checks.phases[0].reuse.client_cached_tokens, None);
        let b1 = evaluate(&input(KvMode::CpuOnly, &p));
        assert!(
            b1.cross_checks.phases[0]
                .unchecked
                .iter()
                .any(|m| m.contains("no disk tier"))
        );
    }

    #[test]
    fn kv_mode_names_and_tier_labels() {
        for (s, m) in [
            ("off", KvMode::Off),
            ("cpu_only", KvMode::CpuOnly),
            ("cpu_disk", KvMode::CpuDisk),
            ("B0", KvMode::Off),
            ("b1", KvMode::CpuOnly),
            (" B2 ", KvMode::CpuDisk),
            ("CPU_DISK", KvMode::CpuDisk),
        ] {
            assert_eq!(s.parse::<KvMode>(), Ok(m), "{s}");
        }
        for m in KvMode::ALL {
            assert_eq!(m.as_str().parse::<KvMode>(), Ok(m));
            assert_eq!(m.tier_mode().parse::<KvMode>(), Ok(m));
            assert_eq!(serde_json::to_value(m).unwrap(), m.as_str());
        }
        assert_eq!(
            [KvMode::Off, KvMode::CpuOnly, KvMode::CpuDisk].map(KvMode::tier_mode),
            ["B0", "B1", "B2"]
        );
        assert!(!KvMode::Off.kvbm_enabled() && KvMode::CpuOnly.kvbm_enabled());
        assert!(KvMode::CpuDisk.disk_tier_on() && !KvMode::CpuOnly.disk_tier_on());
        let u = KvMode::Unspecified;
        assert!(!u.kvbm_enabled() && !u.disk_tier_on() && u.scrapes_kvbm() && !u.is_specified());
        assert!(!KvMode::Off.scrapes_kvbm());
        assert_eq!("unspecified".parse::<KvMode>(), Ok(u));
        assert_eq!(
            "b3".parse::<KvMode>().unwrap_err().to_string(),
            "\"b3\" is not a KV mode (one of: off, cpu_only, cpu_disk, unspecified, B0, B1, B2)"
        );
    }

    #[test]
    fn reason_codes_keep_their_stable_names() {
        let old = [
            "RUN_INVALID",
            "ERROR_RATE_ABOVE_THRESHOLD",
            "KVBM_METRICS_MISSING",
            "RUN_ERRORS_PRESENT",
            "DISK_TIER_NO_DISK_IO",
            "DISK_TIER_NO_KVBM_DISK_ACTIVITY",
            "DISK_IO_UNAVAILABLE",
            "IO_WITHOUT_KVBM_DELTAS",
            "REUSE_WITHOUT_MATCHED_TOKENS",
            "REUSE_OPPORTUNITY_UNKNOWN",
        ];
        for (c, name) in ReasonCode::ALL.into_iter().zip(old) {
            assert_eq!(serde_json::to_value(c).unwrap(), name);
            assert_eq!(
                serde_json::from_value::<ReasonCode>(name.into()).unwrap(),
                c
            );
        }
        let hard: Vec<ReasonCode> = ReasonCode::ALL
            .into_iter()
            .filter(|c| c.severity() == Severity::Hard)
            .collect();
        assert_eq!(
            hard,
            [
                ReasonCode::RunInvalid,
                ReasonCode::ErrorRateAboveThreshold,
                ReasonCode::KvbmMetricsMissing,
                ReasonCode::TierModeMismatch
            ]
        );
    }

    #[test]
    fn invalid_reason_is_written_and_read_under_the_seed_name() {
        for (code, seed) in [
            (
                ReasonCode::ErrorRateAboveThreshold,
                "error_rate_above_threshold",
            ),
            (ReasonCode::KvbmMetricsMissing, "kvbm_metrics_unavailable"),
        ] {
            let v = Verdict {
                invalid_reason: Some(code),
                ..Default::default()
            };
            let j = serde_json::to_value(&v).unwrap();
            assert_eq!(j["invalid_reason"], seed);
            assert_eq!(serde_json::from_value::<Verdict>(j).unwrap(), v);
        }
        let j = serde_json::to_value(Verdict::default()).unwrap();
        assert!(j["invalid_reason"].is_null());
        assert_eq!(
            serde_json::from_value::<Verdict>(j).unwrap().invalid_reason,
            None
        );
    }

    #[test]
    fn verdict_json_shape() {
        let p = good_b2();
        let d = tempfile::tempdir().unwrap();
        let path = write(d.path(), &evaluate(&input(KvMode::CpuDisk, &p))).unwrap();
        let j: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        for k in ["run_valid", "decision_grade", "reason_codes", "signals"] {
            assert!(j.get(k).is_some(), "{k}");
        }
        assert_eq!(j["signals"]["kv_mode"], "cpu_disk");
    }

    #[test]
    fn a_mislabelled_tier_mode_is_a_hard_tier_mode_mismatch() {
        let phase = |name: &str, h2d: f64, d2d_on: f64| PhaseEvidence {
            phase: name.into(),
            kvbm_available: true,
            offload_d2h: Some(10.0),
            offload_h2d: Some(h2d),
            offload_d2d: Some(0.0),
            onboard_h2d: Some(2.0),
            onboard_d2d: Some(d2d_on),
            ..Default::default()
        };
        let phases = [phase("warm", 0.0, 0.0), phase("replay", 6.0, 3.0)];
        let d = tier_mode_mismatch(KvMode::CpuOnly, &phases).unwrap();
        assert_eq!(
            d,
            "tier_mode_mismatch: B1 has the disk tier off, but KVBM moved blocks to or from disk: \
             kvbm_offload_blocks_h2d +6 in phase replay, kvbm_onboard_blocks_d2d +3 in phase replay"
        );
        assert!(tier_mode_mismatch(KvMode::CpuDisk, &phases).is_none());
        assert!(tier_mode_mismatch(KvMode::CpuOnly, &phases[..1]).is_none());
        let b0 = tier_mode_mismatch(KvMode::Off, &phases[..1]).unwrap();
        assert!(
            b0.contains("B0 runs no KVBM")
                && b0.contains("kvbm_offload_blocks_d2h +10 in phase warm"),
            "{b0}"
        );
        let quiet = PhaseEvidence {
            phase: "p".into(),
            kvbm_available: true,
            offload_d2h: Some(0.0),
            ..Default::default()
        };
        assert!(tier_mode_mismatch(KvMode::Off, &[quiet]).is_none());

        let v = evaluate(&VerdictInput {
            kv_mode: KvMode::CpuOnly,
            phases: &phases,
            errors: RunErrors::default(),
            reuse: None,
            host_invalid: false,
            policy: Policy::default(),
        });
        assert!(!v.run_valid);
        assert_eq!(v.invalid_reason, Some(ReasonCode::TierModeMismatch));
        assert_eq!(
            serde_json::to_value(&v).unwrap()["invalid_reason"],
            "tier_mode_mismatch"
        );
        assert!(v.reason_codes.contains(&ReasonCode::TierModeMismatch));
    }

    /// The first run against a server without KVBM (vLLM, the mocker) and
    /// no mode given: valid, no tier claim, whatever KVBM shows is recorded.
    #[test]
    fn an_unspecified_mode_is_valid_without_kvbm_and_claims_no_tier() {
        let quiet = PhaseEvidence {
            phase: "main".into(),
            ..Default::default()
        };
        let none = evaluate(&input(KvMode::Unspecified, std::slice::from_ref(&quiet)));
        assert!(none.run_valid, "{:?}", none.details);
        assert!(!none.decision_grade);
        assert_eq!(none.reason_codes, vec![ReasonCode::KvModeUnspecified]);
        assert!(
            none.details[0].contains("did not answer"),
            "{:?}",
            none.details
        );

        let moving = PhaseEvidence {
            phase: "replay".into(),
            kvbm_available: true,
            offload_d2h: Some(10.0),
            offload_d2d: Some(4.0),
            onboard_d2d: Some(3.0),
            ..Default::default()
        };
        let v = evaluate(&input(KvMode::Unspecified, std::slice::from_ref(&moving)));
        assert!(v.run_valid, "{:?}", v.details);
        assert!(!v.reason_codes.contains(&ReasonCode::TierModeMismatch));
        assert!(v.details[0].contains("answered and are recorded"));
        assert_eq!(v.signals.onboard_d2d_total, Some(3.0));
        assert!(
            v.cross_checks.phases[0]
                .unchecked
                .iter()
                .any(|m| m.contains("unspecified"))
        );
        assert_eq!(
            serde_json::to_value(&v).unwrap()["signals"]["kv_mode"],
            "unspecified"
        );
    }
}
