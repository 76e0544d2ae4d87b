//! KVBM metrics: which names exist in KVBM v1 (the released 1.6.1 wheel)
//! and v2 (repo main: `lib/kvbm-engine`), what they mean, and the seed's
//! per-phase delta file without the seed's fictional metrics.
//!
//! Names are accepted as `kvbm_*` (the standalone registry on
//! `DYN_KVBM_METRICS_PORT`, default 6880), `dynamo_kvbm_*` (one doc revision)
//! and `dynamo_component_*kvbm*` (kept for compatibility; no known release
//! registers such a name), and mapped to the canonical `kvbm_*` name. A
//! `_total` suffix is dropped only when the name without it is not itself a
//! catalogue name: v1 counters have none, v2's `kvbm_transfer_failures_total`
//! and `kvbm_cache_blocks_hit_total` really end in it. Only names in
//! [`CATALOGUE`] are given meaning; any other `kvbm` series is kept, raw,
//! under `other_*`. See `kvbm/metric-catalogue.md`.
//!
//! Seed fields dropped from `phase_*_kvbm_metrics_delta.json`, because Dynamo
//! never exports them (the seed always wrote 0 or null for them, which reads as
//! "measured, nothing happened"): `kvbm_disk_bytes_read_delta`,
//! `kvbm_disk_bytes_written_delta`, `kvbm_cache_evictions_delta`,
//! `kvbm_cache_prefetches_delta`, `kvbm_disk_fetch_p50_ms_after`,
//! `kvbm_disk_fetch_p95_ms_after`, `kvbm_disk_fetch_p99_ms_after`, and the
//! derived `disk_read_mib_delta` / `disk_write_mib_delta`. Disk bytes come from
//! the OS (`os_io`) and NVMe SMART files instead.
//!
//! Seed field redefined: `disk_rehydrate_counter_positive` was
//! `onboard_h2d + onboard_d2d > 0`, which calls host→device onboarding a disk
//! rehydration. It is now disk→device (`onboard_d2d`) or, in KVBM v2 without
//! GPUDirect Storage, the disk→host staging step (`onboard_d2h`), whose
//! blocks then reach the GPU through `onboard_h2d`. Host onboarding has its
//! own `host_onboard_counter_positive`, from `onboard_h2d − onboard_d2h`.
//!
//! A counter absent from both snapshots has a `null` delta, not 0.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::common::{Cell, append_jsonl};
use crate::prometheus::delta::{Distribution, counter_value_delta, histogram_delta};
use crate::prometheus::endpoint::NO_URL;
use crate::prometheus::http::scrape;
use crate::prometheus::{Exposition, MetricType, Sample};
use crate::session::Config;
use crate::source::{At, Fill, Opened, Probe, Rows, Sampler, Source, SourceId, Timeline};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// Which KVBM exports a name, as far as the sources in
/// `kvbm/metric-catalogue.md` show.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Exporter {
    /// The released line (1.6.1 wheel) and v2's compat set.
    V1,
    /// KVBM v2 (repo main, not yet released): `CompatMetrics`/`TransferMetrics`.
    V2,
    /// Registered by older releases (≈1.1) only; absent in 1.6.1.
    OlderOnly,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct MetricInfo {
    pub name: &'static str,
    pub kind: Kind,
    /// Label names; empty for v1's unlabelled registry.
    pub labels: &'static [&'static str],
    pub exporter: Exporter,
    pub meaning: &'static str,
}

pub const OFFLOAD_D2H: &str = "kvbm_offload_blocks_d2h";
pub const OFFLOAD_H2D: &str = "kvbm_offload_blocks_h2d";
pub const OFFLOAD_D2D: &str = "kvbm_offload_blocks_d2d";
pub const OFFLOAD_D2O: &str = "kvbm_offload_blocks_d2o";
pub const ONBOARD_H2D: &str = "kvbm_onboard_blocks_h2d";
pub const ONBOARD_D2D: &str = "kvbm_onboard_blocks_d2d";
pub const ONBOARD_D2H: &str = "kvbm_onboard_blocks_d2h";
pub const ONBOARD_O2D: &str = "kvbm_onboard_blocks_o2d";
pub const MATCHED_TOKENS: &str = "kvbm_matched_tokens";
pub const HOST_HIT_RATE: &str = "kvbm_host_cache_hit_rate";
pub const DISK_HIT_RATE: &str = "kvbm_disk_cache_hit_rate";
pub const OBJECT_HIT_RATE: &str = "kvbm_object_cache_hit_rate";
pub const INFLIGHT_ONBOARD_HASHES: &str = "kvbm_inflight_onboard_hashes";
pub const TRANSFER_DURATION: &str = "kvbm_transfer_duration_seconds";
pub const TRANSFER_FAILURES: &str = "kvbm_transfer_failures_total";
pub const TRANSFER_INFLIGHT: &str = "kvbm_transfer_inflight";
pub const CACHE_BLOCKS_HIT: &str = "kvbm_cache_blocks_hit_total";

const fn m(
    name: &'static str,
    kind: Kind,
    labels: &'static [&'static str],
    exporter: Exporter,
    meaning: &'static str,
) -> MetricInfo {
    MetricInfo {
        name,
        kind,
        labels,
        exporter,
        meaning,
    }
}

/// Metrics KVBM registers (v1: lib/llm/src/block_manager/metrics_kvbm.rs and
/// prometheus_names.rs `kvbm`; v2: `CompatMetrics` and `TransferMetrics`),
/// with the direction each block count measures. In v1 "d2d" means
/// device→disk for offload but disk→device for onboard; v2 keeps the names
/// and narrows `onboard_blocks_d2d` to the direct (GPUDirect Storage) path.
pub const CATALOGUE: &[MetricInfo] = &[
    m(
        OFFLOAD_D2H,
        Kind::Counter,
        &[],
        Exporter::V1,
        "blocks offloaded GPU → host (CPU) memory",
    ),
    m(
        OFFLOAD_H2D,
        Kind::Counter,
        &[],
        Exporter::V1,
        "blocks offloaded host memory → disk",
    ),
    m(
        OFFLOAD_D2D,
        Kind::Counter,
        &[],
        Exporter::V1,
        "blocks offloaded GPU → disk, bypassing host memory",
    ),
    m(
        OFFLOAD_D2O,
        Kind::Counter,
        &[],
        Exporter::V1,
        "blocks offloaded GPU → object storage",
    ),
    m(
        ONBOARD_H2D,
        Kind::Counter,
        &[],
        Exporter::V1,
        "blocks onboarded host memory → GPU (CPU-tier reuse; in v2 without GDS also the last leg of a staged disk hit)",
    ),
    m(
        ONBOARD_D2D,
        Kind::Counter,
        &[],
        Exporter::V1,
        "blocks onboarded disk → GPU (v1: every disk hit; v2: the direct GDS path only)",
    ),
    m(
        ONBOARD_D2H,
        Kind::Counter,
        &[],
        Exporter::V2,
        "blocks onboarded disk → host, the staging step of a disk hit without GDS (disk rehydration)",
    ),
    m(
        ONBOARD_O2D,
        Kind::Counter,
        &[],
        Exporter::V1,
        "blocks onboarded object storage → GPU",
    ),
    m(
        MATCHED_TOKENS,
        Kind::Counter,
        &[],
        Exporter::V1,
        "tokens KVBM matched in its host/disk/object tiers (no denominator: pair with frontend input tokens)",
    ),
    m(
        "kvbm_offload_bytes_object",
        Kind::Counter,
        &[],
        Exporter::OlderOnly,
        "bytes offloaded to object storage (≈1.1 only; not registered in 1.6.1)",
    ),
    m(
        "kvbm_onboard_bytes_object",
        Kind::Counter,
        &[],
        Exporter::OlderOnly,
        "bytes onboarded from object storage (≈1.1 only; not registered in 1.6.1)",
    ),
    m(
        "kvbm_object_read_failures",
        Kind::Counter,
        &[],
        Exporter::V1,
        "object storage read failures, in blocks",
    ),
    m(
        "kvbm_object_write_failures",
        Kind::Counter,
        &[],
        Exporter::V1,
        "object storage write failures, in blocks",
    ),
    m(
        HOST_HIT_RATE,
        Kind::Gauge,
        &[],
        Exporter::V1,
        "host-hit blocks ÷ blocks over the last DYN_KVBM_CACHE_STATS_MAX_REQUESTS requests (default 1000), not a per-phase rate",
    ),
    m(
        DISK_HIT_RATE,
        Kind::Gauge,
        &[],
        Exporter::V1,
        "disk-hit blocks ÷ blocks over the last DYN_KVBM_CACHE_STATS_MAX_REQUESTS requests (default 1000), not a per-phase rate",
    ),
    m(
        OBJECT_HIT_RATE,
        Kind::Gauge,
        &[],
        Exporter::V1,
        "object-hit blocks ÷ blocks over the same request window",
    ),
    m(
        INFLIGHT_ONBOARD_HASHES,
        Kind::Gauge,
        &[],
        Exporter::V2,
        "onboard dedup guards held now; stuck above 0 when idle means a leaked guard",
    ),
    m(
        TRANSFER_DURATION,
        Kind::Histogram,
        &["operation", "route", "outcome"],
        Exporter::V2,
        "duration of each transfer, by operation, route (g2_to_g1, g3_to_g2, …) and outcome",
    ),
    m(
        TRANSFER_FAILURES,
        Kind::Counter,
        &["operation", "route", "reason"],
        Exporter::V2,
        "failed transfers (the name really ends in _total)",
    ),
    m(
        TRANSFER_INFLIGHT,
        Kind::Gauge,
        &["operation"],
        Exporter::V2,
        "transfers in flight",
    ),
    m(
        CACHE_BLOCKS_HIT,
        Kind::Counter,
        &["tier"],
        Exporter::V2,
        "blocks found per tier (g1 GPU, g2 host, g3 disk; the name really ends in _total)",
    ),
];

pub fn info(canonical: &str) -> Option<&'static MetricInfo> {
    CATALOGUE.iter().find(|m| m.name == canonical)
}

/// Maps an exposed name to its canonical `kvbm_*` name, or `None` when it is
/// not a KVBM metric.
pub fn canonical_name(raw: &str) -> Option<String> {
    let tail = if let Some(t) = raw.strip_prefix("kvbm_") {
        t
    } else if let Some(t) = raw.strip_prefix("dynamo_kvbm_") {
        t
    } else if let Some(rest) = raw.strip_prefix("dynamo_component_") {
        let i = rest.find("kvbm_")?;
        &rest[i + "kvbm_".len()..]
    } else {
        return None;
    };
    if tail.is_empty() {
        return None;
    }
    let full = format!("kvbm_{tail}");
    if info(&full).is_some() {
        return Some(full);
    }
    Some(match tail.strip_suffix("_total") {
        Some(t) if !t.is_empty() => format!("kvbm_{t}"),
        _ => full,
    })
}

/// The KVBM series of one scrape.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct KvbmView {
    /// Canonical name → value summed over label sets (the seed's `metrics`;
    /// KVBM's own registry has no labels, so the sum is the one series).
    pub metrics: BTreeMap<String, f64>,
    /// Canonical name → names as exposed, when they differ (`dynamo_kvbm_…`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub exposed_names: BTreeMap<String, Vec<String>>,
    /// Every KVBM series as exposed, labels kept.
    pub series: Vec<Sample>,
    /// Canonical names of counters (by the exposition's TYPE or the catalogue).
    pub counters: Vec<String>,
}

impl KvbmView {
    pub fn from_exposition(expo: &Exposition) -> Self {
        let mut v = KvbmView::default();
        for (fam, s) in expo.samples() {
            // Histogram/summary parts are kept as series but not summed as values.
            if matches!(
                fam.kind,
                MetricType::Histogram | MetricType::Summary | MetricType::GaugeHistogram
            ) {
                if canonical_name(&fam.name).is_some() {
                    v.series.push(s.clone());
                }
                continue;
            }
            let Some(c) = canonical_name(&s.name) else {
                continue;
            };
            *v.metrics.entry(c.clone()).or_insert(0.0) += s.value;
            if s.name != c {
                let names = v.exposed_names.entry(c.clone()).or_default();
                if !names.contains(&s.name) {
                    names.push(s.name.clone());
                }
            }
            let is_counter = fam.kind == MetricType::Counter
                || info(&c).is_some_and(|i| i.kind == Kind::Counter);
            if is_counter && !v.counters.contains(&c) {
                v.counters.push(c.clone());
            }
            v.series.push(s.clone());
        }
        v
    }

    pub fn is_empty(&self) -> bool {
        self.metrics.is_empty()
    }

    pub fn get(&self, canonical: &str) -> Option<f64> {
        self.metrics.get(canonical).copied()
    }
}

/// `phase_<name>_kvbm_metrics_{start,end}.json` (and each row of
/// `kvbm_metrics_snapshots.jsonl`): the seed's fields plus the URL and series.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct KvbmSnapshot {
    pub label: String,
    pub timestamp_utc: String,
    pub url: Option<String>,
    pub success: bool,
    pub error: Option<String>,
    pub metrics: BTreeMap<String, f64>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub exposed_names: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    pub series: Vec<Sample>,
    #[serde(skip)]
    pub counters: Vec<String>,
    /// Transfer-time histograms when this Dynamo exports them (newer branches).
    #[serde(skip)]
    pub histograms: Vec<crate::prometheus::Histogram>,
    /// The scrape as received, for raw captures.
    #[serde(skip)]
    pub raw: Option<String>,
}

impl KvbmSnapshot {
    pub fn from_scrape(label: &str, scrape: &crate::prometheus::http::Scrape) -> Self {
        let mut s = KvbmSnapshot {
            label: label.to_string(),
            timestamp_utc: scrape.timestamp_utc.clone(),
            url: Some(scrape.url.clone()),
            success: scrape.success,
            error: scrape.error.clone(),
            raw: scrape.body.clone(),
            ..Default::default()
        };
        if let Some(expo) = &scrape.expo {
            let v = KvbmView::from_exposition(expo);
            s.metrics = v.metrics;
            s.exposed_names = v.exposed_names;
            s.series = v.series;
            s.counters = v.counters;
            s.histograms = expo
                .families
                .iter()
                .filter(|f| f.kind == MetricType::Histogram && canonical_name(&f.name).is_some())
                .flat_map(|f| expo.histograms(&f.name))
                .collect();
            if s.success && s.metrics.is_empty() && s.histograms.is_empty() {
                // Reachable, but not KVBM: the seed's "reachable_but_no_matching_counters".
                s.error = Some("endpoint reachable but exposes no kvbm_* metrics".into());
            }
        }
        s
    }

    pub fn unavailable(label: &str, reason: &str) -> Self {
        KvbmSnapshot {
            label: label.to_string(),
            timestamp_utc: crate::common::utc_now(),
            error: Some(reason.to_string()),
            ..Default::default()
        }
    }

    /// Has at least one KVBM series: the seed's test for "metrics available".
    pub fn has_metrics(&self) -> bool {
        self.success && !self.metrics.is_empty()
    }
}

/// `phase_<name>_kvbm_metrics_delta.json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct KvbmDelta {
    pub available: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub before_success: bool,
    pub after_success: bool,
    pub before_error: Option<String>,
    pub after_error: Option<String>,
    pub kvbm_offload_blocks_d2h_delta: Option<f64>,
    pub kvbm_offload_blocks_h2d_delta: Option<f64>,
    pub kvbm_offload_blocks_d2d_delta: Option<f64>,
    pub kvbm_offload_blocks_d2o_delta: Option<f64>,
    pub kvbm_onboard_blocks_h2d_delta: Option<f64>,
    pub kvbm_onboard_blocks_d2d_delta: Option<f64>,
    /// KVBM v2 only: disk → host staging (absent, so `null`, in v1).
    #[serde(default)]
    pub kvbm_onboard_blocks_d2h_delta: Option<f64>,
    pub kvbm_onboard_blocks_o2d_delta: Option<f64>,
    pub kvbm_matched_tokens_delta: Option<f64>,
    pub kvbm_offload_bytes_object_delta: Option<f64>,
    pub kvbm_onboard_bytes_object_delta: Option<f64>,
    pub kvbm_object_read_failures_delta: Option<f64>,
    pub kvbm_object_write_failures_delta: Option<f64>,
    pub kvbm_host_cache_hit_rate_before: Option<f64>,
    pub kvbm_host_cache_hit_rate_after: Option<f64>,
    pub kvbm_disk_cache_hit_rate_before: Option<f64>,
    pub kvbm_disk_cache_hit_rate_after: Option<f64>,
    pub kvbm_object_cache_hit_rate_before: Option<f64>,
    pub kvbm_object_cache_hit_rate_after: Option<f64>,
    /// v2's dedup-guard gauge at the phase end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kvbm_inflight_onboard_hashes_after: Option<f64>,
    /// Which naming the endpoint spoke: `v2` when any v2-only name is present.
    #[serde(default)]
    pub naming: Option<Naming>,
    /// v2's `kvbm_cache_blocks_hit_total` delta by `tier` (g1, g2, g3).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub cache_blocks_hit_delta: BTreeMap<String, f64>,
    /// v2's `kvbm_transfer_failures_total` delta by `operation,reason,route`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub transfer_failures_delta: BTreeMap<String, f64>,
    /// d2h + h2d + d2d + d2o offloads (blocks; present counters only).
    pub offload_blocks_total_delta: f64,
    /// h2d + d2d + o2d onboards (blocks that reached the GPU; v2's d2h is
    /// a staging step whose blocks are counted again by h2d).
    pub onboard_blocks_total_delta: f64,
    /// Blocks read back from disk: `onboard_d2d + onboard_d2h`.
    #[serde(default)]
    pub disk_onboard_blocks_delta: f64,
    /// Host-tier reuse alone: `onboard_h2d − onboard_d2h` (v2 stages disk
    /// hits through host memory, so h2d also carries them), else `onboard_h2d`.
    #[serde(default)]
    pub host_only_onboard_blocks_delta: Option<f64>,
    /// Disk rehydration happened: disk → GPU (`onboard_d2d`) or disk → host
    /// staging (`onboard_d2h`, v2 without GPUDirect Storage).
    pub disk_rehydrate_counter_positive: bool,
    /// Host-tier reuse happened (host-only onboards > 0; says nothing about disk).
    pub host_onboard_counter_positive: bool,
    /// Blocks written to the disk tier: `offload_h2d + offload_d2d`.
    pub disk_offload_blocks_delta: f64,
    /// Counters that went backwards (worker restarted during the phase).
    pub counter_resets: Vec<String>,
    /// Deltas of KVBM counters not in the catalogue, kept without interpretation.
    pub other_counter_deltas: BTreeMap<String, f64>,
    /// Transfer-time distributions (ms) from `kvbm_*_seconds` histograms, when
    /// exported: keyed `name{labels}` per label set (v2's
    /// `kvbm_transfer_duration_seconds{operation,outcome,route}`), merged over
    /// `worker_id` only.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub transfer_ms: BTreeMap<String, Distribution>,
}

pub fn delta(before: Option<&KvbmSnapshot>, after: Option<&KvbmSnapshot>) -> KvbmDelta {
    let (Some(b), Some(a)) = (before, after) else {
        return KvbmDelta {
            reason: Some("snapshot_missing".into()),
            before_success: before.is_some_and(|s| s.success),
            after_success: after.is_some_and(|s| s.success),
            before_error: before.and_then(|s| s.error.clone()),
            after_error: after.and_then(|s| s.error.clone()),
            ..Default::default()
        };
    };
    let mut d = KvbmDelta {
        before_success: b.success,
        after_success: a.success,
        before_error: b.error.clone(),
        after_error: a.error.clone(),
        ..Default::default()
    };
    if !b.success || !a.success {
        d.reason = Some("snapshot_failed".into());
        return d;
    }
    if a.metrics.is_empty() {
        d.reason = Some("no_kvbm_metrics".into());
        return d;
    }
    d.available = true;
    let mut resets = Vec::new();
    let mut cdelta = |name: &str| -> Option<f64> {
        let after = a.metrics.get(name).copied()?;
        let (v, reset) = counter_value_delta(b.metrics.get(name).copied(), after);
        if reset {
            resets.push(name.to_string());
        }
        Some(v)
    };
    d.kvbm_offload_blocks_d2h_delta = cdelta(OFFLOAD_D2H);
    d.kvbm_offload_blocks_h2d_delta = cdelta(OFFLOAD_H2D);
    d.kvbm_offload_blocks_d2d_delta = cdelta(OFFLOAD_D2D);
    d.kvbm_offload_blocks_d2o_delta = cdelta(OFFLOAD_D2O);
    d.kvbm_onboard_blocks_h2d_delta = cdelta(ONBOARD_H2D);
    d.kvbm_onboard_blocks_d2d_delta = cdelta(ONBOARD_D2D);
    d.kvbm_onboard_blocks_d2h_delta = cdelta(ONBOARD_D2H);
    d.kvbm_onboard_blocks_o2d_delta = cdelta(ONBOARD_O2D);
    d.kvbm_matched_tokens_delta = cdelta(MATCHED_TOKENS);
    d.kvbm_offload_bytes_object_delta = cdelta("kvbm_offload_bytes_object");
    d.kvbm_onboard_bytes_object_delta = cdelta("kvbm_onboard_bytes_object");
    d.kvbm_object_read_failures_delta = cdelta("kvbm_object_read_failures");
    d.kvbm_object_write_failures_delta = cdelta("kvbm_object_write_failures");
    for name in &a.counters {
        if info(name).is_none()
            && let Some(v) = cdelta(name)
        {
            d.other_counter_deltas.insert(name.clone(), v);
        }
    }
    for (name, label, out) in [
        (CACHE_BLOCKS_HIT, "tier", &mut d.cache_blocks_hit_delta),
        (TRANSFER_FAILURES, "", &mut d.transfer_failures_delta),
    ] {
        let before = labelled(b, name, label);
        for (k, after) in labelled(a, name, label) {
            let (v, reset) = counter_value_delta(before.get(&k).copied(), after);
            if reset {
                resets.push(format!("{name}{{{k}}}"));
            }
            out.insert(k, v);
        }
    }
    d.counter_resets = resets;
    d.kvbm_inflight_onboard_hashes_after = a.metrics.get(INFLIGHT_ONBOARD_HASHES).copied();
    d.naming = Some(naming_of(a));
    d.kvbm_host_cache_hit_rate_before = b.metrics.get(HOST_HIT_RATE).copied();
    d.kvbm_host_cache_hit_rate_after = a.metrics.get(HOST_HIT_RATE).copied();
    d.kvbm_disk_cache_hit_rate_before = b.metrics.get(DISK_HIT_RATE).copied();
    d.kvbm_disk_cache_hit_rate_after = a.metrics.get(DISK_HIT_RATE).copied();
    d.kvbm_object_cache_hit_rate_before = b.metrics.get(OBJECT_HIT_RATE).copied();
    d.kvbm_object_cache_hit_rate_after = a.metrics.get(OBJECT_HIT_RATE).copied();
    let z = |v: Option<f64>| v.unwrap_or(0.0);
    d.offload_blocks_total_delta = z(d.kvbm_offload_blocks_d2h_delta)
        + z(d.kvbm_offload_blocks_h2d_delta)
        + z(d.kvbm_offload_blocks_d2d_delta)
        + z(d.kvbm_offload_blocks_d2o_delta);
    d.onboard_blocks_total_delta = z(d.kvbm_onboard_blocks_h2d_delta)
        + z(d.kvbm_onboard_blocks_d2d_delta)
        + z(d.kvbm_onboard_blocks_o2d_delta);
    d.disk_offload_blocks_delta =
        z(d.kvbm_offload_blocks_h2d_delta) + z(d.kvbm_offload_blocks_d2d_delta);
    d.disk_onboard_blocks_delta =
        z(d.kvbm_onboard_blocks_d2d_delta) + z(d.kvbm_onboard_blocks_d2h_delta);
    d.host_only_onboard_blocks_delta = host_only(
        d.kvbm_onboard_blocks_h2d_delta,
        d.kvbm_onboard_blocks_d2h_delta,
    );
    d.disk_rehydrate_counter_positive = d.disk_onboard_blocks_delta > 0.0;
    d.host_onboard_counter_positive = d.host_only_onboard_blocks_delta.is_some_and(|v| v > 0.0);
    // Transfer histograms per label set, merged over worker_id only: v2's
    // operation/route/outcome say which path a transfer took.
    let mut by_key: BTreeMap<String, Vec<crate::prometheus::delta::HistogramDelta>> =
        BTreeMap::new();
    for h in &a.histograms {
        let prev = b
            .histograms
            .iter()
            .find(|x| x.name == h.name && x.labels.key() == h.labels.key());
        let name = canonical_name(&h.name).unwrap_or_else(|| h.name.clone());
        let labels = h.labels.key_without(&["worker_id"]);
        let key = if labels.is_empty() {
            name
        } else {
            format!("{name}{{{labels}}}")
        };
        by_key
            .entry(key)
            .or_default()
            .push(histogram_delta(prev, h));
    }
    for (key, ds) in by_key {
        if let Ok(Some(m)) = crate::prometheus::delta::merge_deltas(&ds) {
            d.transfer_ms.insert(key, m.distribution(1000.0));
        }
    }
    d
}

/// KVBM generation, as detected from the names a scrape exposes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Naming {
    V1,
    V2,
}

/// `v2` when any name only KVBM v2 exports is present.
pub fn naming_of(s: &KvbmSnapshot) -> Naming {
    let v2 = CATALOGUE
        .iter()
        .filter(|m| m.exporter == Exporter::V2)
        .any(|m| {
            s.metrics.contains_key(m.name)
                || s.histograms
                    .iter()
                    .any(|h| canonical_name(&h.name).as_deref() == Some(m.name))
        });
    if v2 { Naming::V2 } else { Naming::V1 }
}

/// Host-tier reuse without the staged disk hits v2 also counts in h2d.
/// Clamped at 0: the two counters are read a moment apart.
pub fn host_only(onboard_h2d: Option<f64>, onboard_d2h: Option<f64>) -> Option<f64> {
    onboard_h2d.map(|h| (h - onboard_d2h.unwrap_or(0.0)).max(0.0))
}

/// Values of one labelled family by the value of `label` (or, with `label`
/// empty, by the whole label key), summed over any other labels.
fn labelled(s: &KvbmSnapshot, canonical: &str, label: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for x in s
        .series
        .iter()
        .filter(|x| canonical_name(&x.name).as_deref() == Some(canonical))
    {
        let k = if label.is_empty() {
            x.labels.key()
        } else {
            x.labels.get(label).unwrap_or("").to_string()
        };
        *out.entry(k).or_insert(0.0) += x.value;
    }
    out
}

// ---------------------------------------------------------------- source

/// KVBM's metrics endpoint; `url` is `None` when it is off or not given.
struct Kvbm {
    on: bool,
    url: Option<String>,
}

pub(crate) fn probe(p: &Probe<'_>) -> Opened {
    let cfg = p.cfg;
    let on = p.on(SourceId::Kvbm);
    let result = match (&cfg.kvbm_metrics_url, on) {
        (_, false) => Ok(()),
        (None, true) => Err(NO_URL.to_string()),
        (Some(u), true) => {
            let k = KvbmSnapshot::from_scrape("probe", &scrape(u, cfg.metrics_timeout));
            if k.has_metrics() {
                Ok(())
            } else {
                Err(k.error.unwrap_or_else(|| "no kvbm_* metrics".into()))
            }
        }
    };
    let source = Kvbm {
        on,
        url: cfg.kvbm_metrics_url.clone().filter(|_| on),
    };
    Opened::new(source, on, result)
}

impl Source for Kvbm {
    fn id(&self) -> SourceId {
        SourceId::Kvbm
    }

    /// Also appends the reading to `kvbm_metrics_snapshots.jsonl`.
    fn read(&self, at: &At<'_>) -> Fill {
        let k = match (&self.url, self.on) {
            (_, false) => None,
            (Some(u), true) => Some(KvbmSnapshot::from_scrape(
                at.label,
                &scrape(u, at.cfg.metrics_timeout),
            )),
            (None, true) => Some(KvbmSnapshot::unavailable(
                at.label,
                "no KVBM metrics URL given",
            )),
        };
        if let Some(k) = &k
            && let Err(e) = append_jsonl(&at.cfg.run_dir.join("kvbm_metrics_snapshots.jsonl"), k)
        {
            at.warn(format!("kvbm_metrics_snapshots.jsonl: {e}"));
        }
        Box::new(move |s| s.kvbm = k)
    }

    fn sampler(&self) -> Option<Box<dyn Sampler>> {
        let url = self.url.clone()?;
        Some(Box::new(KvbmSampler { url }))
    }
}

struct KvbmSampler {
    url: String,
}

/// Histograms have no single value to plot; every other name is a column.
fn timeline_metrics() -> impl Iterator<Item = &'static MetricInfo> {
    CATALOGUE.iter().filter(|m| m.kind != Kind::Histogram)
}

impl Sampler for KvbmSampler {
    /// `success` and then every catalogue metric, so a metric added to the
    /// catalogue is a column without touching this.
    fn timelines(&self) -> Vec<Timeline> {
        vec![Timeline {
            file: "kvbm_metrics.csv",
            columns: std::iter::once("success")
                .chain(timeline_metrics().map(|m| m.name))
                .collect(),
        }]
    }

    /// A failed scrape is still a row (`success` 0), so gaps show in the timeline.
    fn sample(&mut self, cfg: &Config, _elapsed_s: f64, rows: &mut Rows) -> Result<(), String> {
        // A scrape must not outlast the tick it belongs to.
        let timeout = cfg
            .metrics_timeout
            .min(cfg.interval.mul_f64(0.8))
            .max(Duration::from_millis(50));
        let k = KvbmSnapshot::from_scrape("timeline", &scrape(&self.url, timeout));
        let row = std::iter::once(Cell::U(Some(u64::from(k.has_metrics()))))
            .chain(timeline_metrics().map(|m| Cell::F(k.metrics.get(m.name).copied())))
            .collect();
        rows.push((0, row));
        k.error.map_or(Ok(()), Err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prometheus::parse;

    #[test]
    fn canonical_names() {
        assert_eq!(
            canonical_name("kvbm_offload_blocks_d2h").as_deref(),
            Some(OFFLOAD_D2H)
        );
        assert_eq!(
            canonical_name("dynamo_kvbm_onboard_blocks_d2d").as_deref(),
            Some(ONBOARD_D2D)
        );
        assert_eq!(
            canonical_name("dynamo_component_kvbm_matched_tokens").as_deref(),
            Some(MATCHED_TOKENS)
        );
        assert_eq!(
            canonical_name("dynamo_component_x_kvbm_matched_tokens_total").as_deref(),
            Some(MATCHED_TOKENS)
        );
        assert_eq!(canonical_name("dynamo_component_requests_total"), None);
        assert_eq!(canonical_name("vllm:kv_cache_usage_perc"), None);
        assert_eq!(canonical_name("kvbm_"), None);
    }

    fn snap(label: &str, text: &str) -> KvbmSnapshot {
        let scrape = crate::prometheus::http::Scrape {
            url: "http://127.0.0.1:6880/metrics".into(),
            success: true,
            expo: Some(parse(text).unwrap()),
            ..Default::default()
        };
        KvbmSnapshot::from_scrape(label, &scrape)
    }

    #[test]
    fn view_accepts_all_three_prefixes_and_sums_explicitly() {
        let s = snap(
            "x",
            "# TYPE dynamo_kvbm_offload_blocks_d2h counter\ndynamo_kvbm_offload_blocks_d2h{worker_id=\"a\"} 3\ndynamo_kvbm_offload_blocks_d2h{worker_id=\"b\"} 4\n# TYPE dynamo_component_kvbm_matched_tokens counter\ndynamo_component_kvbm_matched_tokens{dynamo_namespace=\"d\"} 64\n# TYPE kvbm_disk_cache_hit_rate gauge\nkvbm_disk_cache_hit_rate 0.25\n# TYPE unrelated counter\nunrelated 1\n",
        );
        assert_eq!(s.metrics[OFFLOAD_D2H], 7.0);
        assert_eq!(s.metrics[MATCHED_TOKENS], 64.0);
        assert_eq!(s.metrics[DISK_HIT_RATE], 0.25);
        assert_eq!(s.metrics.len(), 3);
        assert_eq!(s.series.len(), 4, "labels kept per series");
        assert_eq!(
            s.exposed_names[OFFLOAD_D2H],
            vec!["dynamo_kvbm_offload_blocks_d2h"]
        );
        assert!(s.has_metrics());
    }

    #[test]
    fn reachable_endpoint_without_kvbm_is_not_metrics() {
        let s = snap("x", "# TYPE up gauge\nup 1\n");
        assert!(!s.has_metrics());
        assert!(s.error.unwrap().contains("no kvbm_"));
    }

    #[test]
    fn delta_only_for_metrics_that_exist_and_disk_rehydration_only_from_d2d() {
        let a = snap(
            "before",
            "kvbm_offload_blocks_d2h 10\nkvbm_onboard_blocks_h2d 5\nkvbm_matched_tokens 0\nkvbm_host_cache_hit_rate 0\n",
        );
        let b = snap(
            "after",
            "kvbm_offload_blocks_d2h 30\nkvbm_onboard_blocks_h2d 9\nkvbm_matched_tokens 128\nkvbm_host_cache_hit_rate 0.5\nkvbm_future_counter_total 2\n",
        );
        let d = delta(Some(&a), Some(&b));
        assert!(d.available);
        assert_eq!(d.kvbm_offload_blocks_d2h_delta, Some(20.0));
        assert_eq!(d.kvbm_onboard_blocks_h2d_delta, Some(4.0));
        assert_eq!(
            d.kvbm_onboard_blocks_d2d_delta, None,
            "absent is null, not 0"
        );
        assert_eq!(d.kvbm_matched_tokens_delta, Some(128.0));
        assert_eq!(d.kvbm_host_cache_hit_rate_after, Some(0.5));
        assert_eq!(d.onboard_blocks_total_delta, 4.0);
        assert!(d.host_onboard_counter_positive);
        assert!(
            !d.disk_rehydrate_counter_positive,
            "host→device onboarding is not disk rehydration"
        );
        let j = serde_json::to_value(&d).unwrap();
        for dropped in [
            "kvbm_disk_bytes_read_delta",
            "kvbm_cache_evictions_delta",
            "kvbm_disk_fetch_p50_ms_after",
            "disk_read_mib_delta",
        ] {
            assert!(j.get(dropped).is_none(), "{dropped} must not be written");
        }
        let c = snap(
            "after2",
            "kvbm_onboard_blocks_d2d 3\nkvbm_offload_blocks_d2h 1\n",
        );
        let d2 = delta(Some(&b), Some(&c));
        assert!(d2.disk_rehydrate_counter_positive);
        assert_eq!(d2.kvbm_offload_blocks_d2h_delta, Some(1.0));
        assert_eq!(d2.counter_resets, vec![OFFLOAD_D2H.to_string()]);
    }

    #[test]
    fn v2_names_keep_their_real_total_suffix() {
        for n in [TRANSFER_FAILURES, CACHE_BLOCKS_HIT] {
            assert_eq!(canonical_name(n).as_deref(), Some(n));
            assert_eq!(info(n).unwrap().exporter, Exporter::V2);
        }
        assert_eq!(
            canonical_name("kvbm_onboard_blocks_d2h").as_deref(),
            Some(ONBOARD_D2H)
        );
        // A v1 counter a client suffixed is still the v1 counter.
        assert_eq!(
            canonical_name("kvbm_onboard_blocks_d2d_total").as_deref(),
            Some(ONBOARD_D2D)
        );
        assert_eq!(
            canonical_name("kvbm__total").as_deref(),
            Some("kvbm__total")
        );
    }

    fn fixture(name: &str) -> String {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/kvbm")
            .join(name);
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    }

    #[test]
    fn v1_fixture_is_v1_and_d2d_is_disk() {
        let d = delta(
            Some(&snap("b", &fixture("kvbm_metrics_before.prom"))),
            Some(&snap("a", &fixture("kvbm_metrics_after.prom"))),
        );
        assert_eq!(d.naming, Some(Naming::V1));
        assert_eq!(d.kvbm_onboard_blocks_d2h_delta, None);
        assert_eq!(d.disk_onboard_blocks_delta, 48.0);
        assert_eq!(d.host_only_onboard_blocks_delta, Some(64.0));
        assert!(d.disk_rehydrate_counter_positive && d.host_onboard_counter_positive);
    }

    #[test]
    fn v2_staged_fixture_counts_disk_hits_as_disk_and_keeps_labels() {
        let d = delta(
            Some(&snap("b", &fixture("kvbm_v2_staged_before.prom"))),
            Some(&snap("a", &fixture("kvbm_v2_staged_after.prom"))),
        );
        assert!(d.available, "{d:?}");
        assert_eq!(d.naming, Some(Naming::V2));
        assert_eq!(d.kvbm_onboard_blocks_d2d_delta, Some(0.0));
        assert_eq!(d.kvbm_onboard_blocks_d2h_delta, Some(48.0));
        assert_eq!(d.kvbm_onboard_blocks_h2d_delta, Some(64.0));
        assert!(
            d.disk_rehydrate_counter_positive,
            "staged disk hits are disk rehydration"
        );
        assert_eq!(d.disk_onboard_blocks_delta, 48.0);
        assert_eq!(d.host_only_onboard_blocks_delta, Some(16.0));
        assert_eq!(
            d.onboard_blocks_total_delta, 64.0,
            "d2h is not a GPU arrival"
        );
        assert_eq!(d.kvbm_matched_tokens_delta, Some(1024.0));
        assert_eq!(
            d.cache_blocks_hit_delta,
            BTreeMap::from([
                ("g1".into(), 80.0),
                ("g2".into(), 16.0),
                ("g3".into(), 48.0)
            ])
        );
        assert_eq!(
            d.transfer_failures_delta,
            BTreeMap::from([(
                "operation=\"onboard\",reason=\"io\",route=\"g3_to_g2\"".into(),
                1.0
            )])
        );
        assert!(
            d.other_counter_deltas.is_empty(),
            "{:?}",
            d.other_counter_deltas
        );
        assert_eq!(d.kvbm_inflight_onboard_hashes_after, Some(0.0));
        let staged = &d.transfer_ms["kvbm_transfer_duration_seconds{operation=\"onboard\",outcome=\"success\",route=\"g3_to_g2\"}"];
        assert_eq!(staged.count, 3.0);
        let host = &d.transfer_ms["kvbm_transfer_duration_seconds{operation=\"onboard\",outcome=\"success\",route=\"g2_to_g1\"}"];
        assert_eq!(host.count, 4.0);
    }

    #[test]
    fn missing_or_failed_snapshots() {
        let d = delta(None, None);
        assert!(!d.available);
        assert_eq!(d.reason.as_deref(), Some("snapshot_missing"));
        let bad = KvbmSnapshot::unavailable("x", "connect refused");
        let d = delta(Some(&bad), Some(&bad));
        assert_eq!(d.reason.as_deref(), Some("snapshot_failed"));
        assert_eq!(d.after_error.as_deref(), Some("connect refused"));
    }

    #[test]
    fn transfer_histograms_when_exported() {
        let h = |n: u32| {
            format!(
                "# TYPE kvbm_transfer_d2d_onboard_seconds histogram\nkvbm_transfer_d2d_onboard_seconds_bucket{{worker_id=\"0\",le=\"0.01\"}} {n}\nkvbm_transfer_d2d_onboard_seconds_bucket{{worker_id=\"0\",le=\"+Inf\"}} {n}\nkvbm_transfer_d2d_onboard_seconds_sum{{worker_id=\"0\"}} 0.0\nkvbm_transfer_d2d_onboard_seconds_count{{worker_id=\"0\"}} {n}\nkvbm_onboard_blocks_d2d {n}\n"
            )
        };
        let d = delta(Some(&snap("a", &h(2))), Some(&snap("b", &h(6))));
        assert_eq!(
            d.transfer_ms["kvbm_transfer_d2d_onboard_seconds"].count,
            4.0
        );
    }
}
