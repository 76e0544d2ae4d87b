//! Prometheus text for the two scrape targets: the endpoint's `/metrics`
//! with the Dynamo frontend's names, and the separate KVBM port with KVBM
//! v1's or v2's names. Bucket bounds of the frontend histograms are copied
//! from a live Dynamo 1.6 scrape (`tests/fixtures/dynamo/frontend_metrics.prom`).

use std::collections::BTreeMap;
use std::fmt::Write;

use serde::{Deserialize, Serialize};

use crate::engine::{Counters, TransferHists};

pub const TTFT_BUCKETS: &[f64] = &[
    0.0, 0.0022, 0.0047, 0.01, 0.022, 0.047, 0.1, 0.22, 0.47, 1.0, 2.2, 4.7, 10.0, 22.0, 48.0,
    100.0, 220.0, 480.0,
];
pub const ITL_BUCKETS: &[f64] = &[
    0.0, 0.0018, 0.0033, 0.0059, 0.011, 0.02, 0.035, 0.064, 0.12, 0.21, 0.38, 0.69, 1.2, 2.3, 4.1,
    7.4, 13.0, 24.0, 44.0, 80.0,
];
pub const INPUT_BUCKETS: &[f64] = &[
    0.0, 100.0, 210.0, 430.0, 870.0, 1800.0, 3600.0, 7400.0, 15000.0, 31000.0, 63000.0, 130000.0,
];
pub const OUTPUT_BUCKETS: &[f64] = &[
    0.0, 100.0, 210.0, 430.0, 880.0, 1800.0, 3700.0, 7600.0, 16000.0, 32000.0,
];
pub const DURATION_BUCKETS: &[f64] = &[0.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 130.0, 260.0, 510.0];
/// KVBM v2's buckets were not found (peers-2026 §3.2); these span 10 µs–10 s.
pub const TRANSFER_BUCKETS: &[f64] = &[
    0.00001, 0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0,
];

/// Which KVBM generation's names the metrics port speaks.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Naming {
    #[default]
    V1,
    V2,
}

/// Deliberate lies, for testing that a verdict catches them.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, schemars::JsonSchema,
)]
#[serde(deny_unknown_fields, default)]
pub struct Lies {
    /// KVBM disk counters advance but no disk I/O happens.
    pub metrics_without_io: bool,
    /// Disk I/O happens but every KVBM counter stays 0.
    pub io_without_metrics: bool,
    /// The hit-rate gauges stay at their start value (0).
    pub stale_gauges: bool,
    /// Responses' `usage` reports 0 cached tokens; the frontend's
    /// `dynamo_frontend_cached_tokens` still counts them.
    pub usage_without_cached_tokens: bool,
}

impl Lies {
    pub fn any(&self) -> bool {
        self.metrics_without_io
            || self.io_without_metrics
            || self.stale_gauges
            || self.usage_without_cached_tokens
    }
}

#[derive(Debug, Clone)]
pub struct Histogram {
    bounds: &'static [f64],
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            counts: vec![0; bounds.len()],
            sum: 0.0,
            count: 0,
        }
    }

    pub fn observe(&mut self, v: f64) {
        if let Some(i) = self.bounds.iter().position(|b| v <= *b) {
            self.counts[i] += 1;
        }
        self.sum += v;
        self.count += 1;
    }

    pub fn count(&self) -> u64 {
        self.count
    }
    pub fn sum(&self) -> f64 {
        self.sum
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cum = 0;
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            cum += c;
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {cum}");
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}",
            self.count
        );
        let l = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{l} {}", self.sum);
        let _ = writeln!(out, "{name}_count{l} {}", self.count);
    }
}

fn head(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// The frontend's request-level metrics.
#[derive(Debug, Clone)]
pub struct Frontend {
    /// (endpoint, request_type, status, error_type) → count.
    pub requests: BTreeMap<(&'static str, &'static str, &'static str, &'static str), u64>,
    pub started: BTreeMap<(&'static str, &'static str), u64>,
    pub inflight: u64,
    pub output_tokens: u64,
    pub ttft: Histogram,
    pub itl: Histogram,
    pub input: Histogram,
    pub output: Histogram,
    pub cached: Histogram,
    pub duration: Histogram,
}

impl Default for Frontend {
    fn default() -> Self {
        Frontend {
            requests: BTreeMap::new(),
            started: BTreeMap::new(),
            inflight: 0,
            output_tokens: 0,
            ttft: Histogram::new(TTFT_BUCKETS),
            itl: Histogram::new(ITL_BUCKETS),
            input: Histogram::new(INPUT_BUCKETS),
            output: Histogram::new(OUTPUT_BUCKETS),
            cached: Histogram::new(INPUT_BUCKETS),
            duration: Histogram::new(DURATION_BUCKETS),
        }
    }
}

/// What the endpoint's static model gauges report.
#[derive(Debug, Clone)]
pub struct ModelInfo {
    pub model: String,
    pub total_kv_blocks: u64,
    pub block_size: u32,
    pub context_length: u32,
    pub max_num_seqs: u32,
    pub max_num_batched_tokens: u32,
    /// `sparkhost_sim_info` labels, so every scrape says it is simulated.
    pub sim_labels: String,
}

pub fn render_frontend(f: &Frontend, m: &ModelInfo, queued: u64) -> String {
    let mut o = String::with_capacity(8192);
    let model = format!("model=\"{}\"", m.model);
    sim_info(&mut o, &m.sim_labels);
    head(
        &mut o,
        "dynamo_frontend_requests_total",
        "counter",
        "Total number of LLM requests processed",
    );
    for ((ep, rt, st, et), n) in &f.requests {
        let _ = writeln!(
            o,
            "dynamo_frontend_requests_total{{endpoint=\"{ep}\",error_type=\"{et}\",{model},request_type=\"{rt}\",status=\"{st}\"}} {n}"
        );
    }
    head(
        &mut o,
        "dynamo_frontend_requests_started_total",
        "counter",
        "Total number of LLM requests started",
    );
    for ((ep, rt), n) in &f.started {
        let _ = writeln!(
            o,
            "dynamo_frontend_requests_started_total{{endpoint=\"{ep}\",{model},request_type=\"{rt}\"}} {n}"
        );
    }
    let gauges: [(&str, &str, u64); 8] = [
        (
            "inflight_requests",
            "Number of inflight requests",
            f.inflight,
        ),
        (
            "queued_requests",
            "Number of requests waiting for the engine",
            queued,
        ),
        (
            "model_total_kv_blocks",
            "Total KV cache blocks available for a worker serving the model",
            m.total_kv_blocks,
        ),
        (
            "model_kv_cache_block_size",
            "KV cache block size in tokens for a worker serving the model",
            m.block_size.into(),
        ),
        (
            "model_context_length",
            "Maximum context length in tokens for a worker serving the model",
            m.context_length.into(),
        ),
        (
            "model_max_num_seqs",
            "Maximum number of sequences for a worker serving the model",
            m.max_num_seqs.into(),
        ),
        (
            "model_max_num_batched_tokens",
            "Maximum number of batched tokens for a worker serving the model",
            m.max_num_batched_tokens.into(),
        ),
        (
            "model_ready",
            "Whether the frontend can route at least one inference request for the model (1 = ready, 0 = not ready)",
            1,
        ),
    ];
    for (n, help, v) in gauges {
        let name = format!("dynamo_frontend_{n}");
        head(&mut o, &name, "gauge", help);
        let _ = writeln!(o, "{name}{{{model}}} {v}");
    }
    head(
        &mut o,
        "dynamo_frontend_output_tokens_total",
        "counter",
        "Total number of output tokens generated (updates in real-time)",
    );
    let _ = writeln!(
        o,
        "dynamo_frontend_output_tokens_total{{{model}}} {}",
        f.output_tokens
    );
    let hists: [(&str, &str, &Histogram); 6] = [
        (
            "time_to_first_token_seconds",
            "Time to first token in seconds",
            &f.ttft,
        ),
        (
            "inter_token_latency_seconds",
            "Inter-token latency in seconds",
            &f.itl,
        ),
        (
            "input_sequence_tokens",
            "Input sequence length in tokens",
            &f.input,
        ),
        (
            "output_sequence_tokens",
            "Output sequence length in tokens",
            &f.output,
        ),
        (
            "cached_tokens",
            "Number of cached tokens (prefix cache hits) per request",
            &f.cached,
        ),
        (
            "request_duration_seconds",
            "Duration of LLM requests",
            &f.duration,
        ),
    ];
    for (n, help, h) in hists {
        let name = format!("dynamo_frontend_{n}");
        head(&mut o, &name, "histogram", help);
        h.render(&mut o, &name, &model);
    }
    o
}

fn sim_info(o: &mut String, labels: &str) {
    head(
        o,
        "sparkhost_sim_info",
        "gauge",
        "Present only on the sparkhost simulator: every figure here is simulated",
    );
    let _ = writeln!(o, "sparkhost_sim_info{{{labels}}} 1");
}

/// What the KVBM port reports, taken from the engine after each step.
#[derive(Debug, Clone, Default)]
pub struct KvbmView {
    pub counters: Counters,
    pub host_rate: f64,
    pub disk_rate: f64,
    pub transfers: TransferHists,
    pub offloads_in_flight: u64,
}

pub fn render_kvbm(
    v: &KvbmView,
    naming: Naming,
    lies: Lies,
    staged: bool,
    sim_labels: &str,
) -> String {
    let zero = KvbmView::default();
    let v = if lies.io_without_metrics { &zero } else { v };
    let (host_rate, disk_rate) = if lies.stale_gauges {
        (0.0, 0.0)
    } else {
        (v.host_rate, v.disk_rate)
    };
    let c = &v.counters;
    let mut o = String::with_capacity(4096);
    sim_info(&mut o, sim_labels);
    let (on_h2d, on_d2d, on_d2h) = match naming {
        Naming::V1 => (c.onboard_host_to_gpu, c.onboard_disk_to_gpu, None),
        Naming::V2 if staged => (
            c.onboard_host_to_gpu + c.onboard_disk_to_gpu,
            0,
            Some(c.onboard_disk_to_host),
        ),
        Naming::V2 => (c.onboard_host_to_gpu, c.onboard_disk_to_gpu, Some(0)),
    };
    let mut counters: Vec<(&str, &str, u64)> = vec![
        (
            "kvbm_offload_blocks_d2h",
            "The number of offload blocks from device to host",
            c.offload_gpu_to_host,
        ),
        (
            "kvbm_offload_blocks_h2d",
            "The number of offload blocks from host to disk",
            c.offload_host_to_disk,
        ),
        (
            "kvbm_offload_blocks_d2d",
            "The number of offload blocks from device to disk (bypassing host memory)",
            c.offload_gpu_to_disk,
        ),
        (
            "kvbm_offload_blocks_d2o",
            "The number of offload blocks from device to object storage",
            0,
        ),
        (
            "kvbm_onboard_blocks_h2d",
            "The number of onboard blocks from host to device",
            on_h2d,
        ),
        (
            "kvbm_onboard_blocks_d2d",
            "The number of onboard blocks from disk to device",
            on_d2d,
        ),
        (
            "kvbm_onboard_blocks_o2d",
            "The number of onboard blocks from object storage to device",
            0,
        ),
        (
            "kvbm_matched_tokens",
            "The number of matched tokens",
            c.matched_tokens,
        ),
        (
            "kvbm_object_read_failures",
            "The number of failed object storage reads (blocks)",
            0,
        ),
        (
            "kvbm_object_write_failures",
            "The number of failed object storage writes (blocks)",
            0,
        ),
    ];
    if let Some(d2h) = on_d2h {
        counters.push((
            "kvbm_onboard_blocks_d2h",
            "The number of onboard blocks from disk to host (G3->G2 staging)",
            d2h,
        ));
    }
    for (n, help, val) in counters {
        head(&mut o, n, "counter", help);
        let _ = writeln!(o, "{n} {val}");
    }
    for (n, help, val) in [
        (
            "kvbm_host_cache_hit_rate",
            "Host cache hit rate (0.0-1.0) from the sliding window",
            host_rate,
        ),
        (
            "kvbm_disk_cache_hit_rate",
            "Disk cache hit rate (0.0-1.0) from the sliding window",
            disk_rate,
        ),
        (
            "kvbm_object_cache_hit_rate",
            "Object storage cache hit rate (0.0-1.0) from the sliding window",
            0.0,
        ),
    ] {
        head(&mut o, n, "gauge", help);
        let _ = writeln!(o, "{n} {val}");
    }
    if naming == Naming::V1 {
        return o;
    }
    head(
        &mut o,
        "kvbm_inflight_onboard_hashes",
        "gauge",
        "Onboard dedup guards currently held",
    );
    let _ = writeln!(o, "kvbm_inflight_onboard_hashes 0");
    head(
        &mut o,
        "kvbm_transfer_duration_seconds",
        "histogram",
        "Duration of KVBM transfers",
    );
    for ((op, route), h) in &v.transfers {
        h.render(
            &mut o,
            "kvbm_transfer_duration_seconds",
            &format!("operation=\"{op}\",outcome=\"success\",route=\"{route}\""),
        );
    }
    head(
        &mut o,
        "kvbm_transfer_failures_total",
        "counter",
        "Failed KVBM transfers",
    );
    for (op, route, n) in [
        ("offload", "g2_to_g3", c.disk_write_failures),
        (
            "onboard",
            if staged { "g3_to_g2" } else { "g3_to_g1" },
            c.disk_read_failures,
        ),
    ] {
        let _ = writeln!(
            o,
            "kvbm_transfer_failures_total{{operation=\"{op}\",reason=\"io\",route=\"{route}\"}} {n}"
        );
    }
    head(
        &mut o,
        "kvbm_transfer_inflight",
        "gauge",
        "KVBM transfers in flight, in blocks",
    );
    let _ = writeln!(
        o,
        "kvbm_transfer_inflight{{operation=\"offload\"}} {}",
        v.offloads_in_flight
    );
    // Onboarding completes inside the step that needs it.
    let _ = writeln!(o, "kvbm_transfer_inflight{{operation=\"onboard\"}} 0");
    head(
        &mut o,
        "kvbm_cache_blocks_hit_total",
        "counter",
        "Blocks found in each cache tier",
    );
    for (t, n) in [
        ("g1", c.gpu_hit_blocks),
        ("g2", c.host_hit_blocks),
        ("g3", c.disk_hit_blocks),
    ] {
        let _ = writeln!(o, "kvbm_cache_blocks_hit_total{{tier=\"{t}\"}} {n}");
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view() -> KvbmView {
        KvbmView {
            counters: Counters {
                offload_gpu_to_host: 5,
                offload_host_to_disk: 3,
                onboard_host_to_gpu: 2,
                onboard_disk_to_gpu: 4,
                onboard_disk_to_host: 4,
                matched_tokens: 96,
                ..Counters::default()
            },
            host_rate: 0.25,
            disk_rate: 0.5,
            ..KvbmView::default()
        }
    }

    #[test]
    fn v1_counters_have_no_total_suffix() {
        let t = render_kvbm(&view(), Naming::V1, Lies::default(), false, "x=\"1\"");
        assert!(t.contains("\nkvbm_onboard_blocks_d2d 4\n"), "{t}");
        assert!(t.contains("\nkvbm_disk_cache_hit_rate 0.5\n"));
        assert!(!t.contains("_total"), "{t}");
        assert!(!t.contains("kvbm_onboard_blocks_d2h"));
    }

    #[test]
    fn v2_stages_disk_onboarding_through_host() {
        let t = render_kvbm(&view(), Naming::V2, Lies::default(), true, "x=\"1\"");
        assert!(t.contains("\nkvbm_onboard_blocks_d2h 4\n"), "{t}");
        assert!(t.contains("\nkvbm_onboard_blocks_h2d 6\n"), "{t}");
        assert!(t.contains("\nkvbm_onboard_blocks_d2d 0\n"), "{t}");
        assert!(t.contains("kvbm_cache_blocks_hit_total{tier=\"g3\"}"));
    }

    #[test]
    fn lies_zero_counters_or_freeze_gauges() {
        let lie = Lies {
            io_without_metrics: true,
            ..Lies::default()
        };
        let t = render_kvbm(&view(), Naming::V1, lie, false, "x=\"1\"");
        assert!(t.contains("\nkvbm_onboard_blocks_d2d 0\n"));
        let lie = Lies {
            stale_gauges: true,
            ..Lies::default()
        };
        let t = render_kvbm(&view(), Naming::V1, lie, false, "x=\"1\"");
        assert!(t.contains("\nkvbm_disk_cache_hit_rate 0\n"), "{t}");
        assert!(t.contains("\nkvbm_onboard_blocks_d2d 4\n"));
    }

    #[test]
    fn histogram_buckets_are_cumulative() {
        let mut h = Histogram::new(&[1.0, 2.0]);
        h.observe(0.5);
        h.observe(1.5);
        h.observe(9.0);
        let mut s = String::new();
        h.render(&mut s, "m", "a=\"b\"");
        assert!(s.contains("m_bucket{a=\"b\",le=\"2\"} 2"), "{s}");
        assert!(s.contains("m_bucket{a=\"b\",le=\"+Inf\"} 3"));
        assert!(s.contains("m_count{a=\"b\"} 3"));
    }
}
