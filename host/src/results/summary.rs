//! Per-phase and overall statistics from HdrHistograms.
//!
//! Values are recorded in microseconds (3 significant digits, so 0.1 % error
//! at any magnitude); histograms merge losslessly, which is how the overall
//! summary is built and why they are also written as a V2 interval log.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use hdrhistogram::Histogram;
use hdrhistogram::serialization::V2DeflateSerializer;
use hdrhistogram::serialization::interval_log::{IntervalLogWriterBuilder, Tag};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::plan::ErrorKey;

/// Latency metrics kept per phase, in the order they are reported.
pub const METRICS: [&str; 8] = [
    "ttft",
    "ttfc",
    "itl",
    "tpot",
    "e2e",
    "ttft_from_intended",
    "e2e_from_intended",
    "schedule_lateness",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    Ttft = 0,
    Ttfc,
    Itl,
    Tpot,
    E2e,
    TtftFromIntended,
    E2eFromIntended,
    ScheduleLateness,
}

fn new_hist() -> Histogram<u64> {
    // Grown as values come (auto-resize): allocated for 1 µs .. 1 h up
    // front, the nine histograms of a phase took ~1.7 MB before its first
    // request (now ~150 KB), so a guest declaring many phases cost memory
    // for nothing.
    let mut h = Histogram::new_with_bounds(1, 2, 3).expect("static bounds are valid");
    h.auto(true);
    h
}

/// Counts and histograms of one phase (or the merged overall).
#[derive(Debug, Clone)]
pub struct Accumulator {
    hists: Vec<Histogram<u64>>,
    /// Parser time minus kernel arrival, per kernel-stamped content chunk.
    read_path_delay: Histogram<u64>,
    /// Content chunks stamped by the kernel, and those sharing a read.
    pub chunks_kernel_stamped: u64,
    pub chunks_sharing_a_read: u64,
    /// Requests whose reported arrivals are the parser's clock, not the kernel's.
    pub requests_application_timed: u64,
    pub requests_kernel_timed: u64,
    pub requests: u64,
    pub ok: u64,
    /// Failed requests by what they failed as; named only in documents.
    pub errors: BTreeMap<ErrorKey, u64>,
    pub prompt_tokens: u64,
    pub output_tokens: u64,
    pub cached_tokens: u64,
    pub requests_with_cache_hit: u64,
    pub requests_without_usage: u64,
    /// Output tokens of successful requests counted by the host.
    pub output_tokens_counted: u64,
    /// Successful requests that asked to stream and got one JSON body.
    pub unary_answers_to_stream: u64,
    pub duration: Duration,
}

impl Default for Accumulator {
    fn default() -> Self {
        Accumulator {
            hists: (0..METRICS.len()).map(|_| new_hist()).collect(),
            read_path_delay: new_hist(),
            chunks_kernel_stamped: 0,
            chunks_sharing_a_read: 0,
            requests_application_timed: 0,
            requests_kernel_timed: 0,
            requests: 0,
            ok: 0,
            errors: BTreeMap::new(),
            prompt_tokens: 0,
            output_tokens: 0,
            cached_tokens: 0,
            requests_with_cache_hit: 0,
            requests_without_usage: 0,
            output_tokens_counted: 0,
            unary_answers_to_stream: 0,
            duration: Duration::ZERO,
        }
    }
}

/// What one finished request adds to its phase's [`Accumulator`]: built
/// from the live outcome by the recorder, and from its `requests.jsonl`
/// row by `recover`, so both count the same way.
#[derive(Debug, Clone, Default)]
pub struct RequestFacts {
    pub ok: bool,
    pub error: Option<ErrorKey>,
    pub schedule_lateness_ns: u64,
    pub e2e_ns: u64,
    pub e2e_from_intended_ns: u64,
    pub ttft_ns: Option<u64>,
    pub ttft_from_intended_ns: Option<u64>,
    pub ttfc_ns: Option<u64>,
    pub itl_ns: Vec<u64>,
    pub tpot_ns: Option<u64>,
    /// Kernel-stamped content chunks: the parser's delay (µs) and whether
    /// the chunk shared its read with the one before.
    pub read_delays: Vec<(u32, bool)>,
    /// The clock of a request that had content chunks.
    pub timed_by: Option<crate::dispatch::stamp::RxClock>,
    pub tokens_counted: u32,
    pub usage: Option<crate::dispatch::openai::Usage>,
    /// It asked to stream and was answered with one JSON body.
    pub unary_answer_to_stream: bool,
}

impl Accumulator {
    /// Counts one finished request; latencies only when it succeeded.
    pub fn record_request(&mut self, f: &RequestFacts) {
        use crate::dispatch::stamp::RxClock;
        self.requests += 1;
        match f.error {
            None => self.ok += 1,
            Some(k) => *self.errors.entry(k).or_default() += 1,
        }
        self.record_ns(Metric::ScheduleLateness, f.schedule_lateness_ns);
        if f.ok {
            self.record_ns(Metric::E2e, f.e2e_ns);
            self.record_ns(Metric::E2eFromIntended, f.e2e_from_intended_ns);
            if let Some(t) = f.ttft_ns {
                self.record_ns(Metric::Ttft, t);
            }
            if let Some(t) = f.ttft_from_intended_ns {
                self.record_ns(Metric::TtftFromIntended, t);
            }
            if let Some(t) = f.ttfc_ns {
                self.record_ns(Metric::Ttfc, t);
            }
            for &v in &f.itl_ns {
                self.record_ns(Metric::Itl, v);
            }
            for &(us, shared) in &f.read_delays {
                self.record_read_delay_us(us, shared);
            }
            match f.timed_by {
                Some(RxClock::Kernel) => self.requests_kernel_timed += 1,
                Some(RxClock::Application) => self.requests_application_timed += 1,
                None => {}
            }
            if let Some(v) = f.tpot_ns {
                self.record_ns(Metric::Tpot, v);
            }
            self.output_tokens_counted += u64::from(f.tokens_counted);
            self.unary_answers_to_stream += u64::from(f.unary_answer_to_stream);
        }
        match f.usage {
            Some(u) => {
                self.prompt_tokens += u64::from(u.prompt_tokens.unwrap_or(0));
                self.output_tokens += u64::from(u.completion_tokens.unwrap_or(0));
                let cached = u.cached_tokens.unwrap_or(0);
                self.cached_tokens += u64::from(cached);
                if cached > 0 {
                    self.requests_with_cache_hit += 1;
                }
            }
            None => self.requests_without_usage += 1,
        }
    }

    pub fn record_ns(&mut self, m: Metric, ns: u64) {
        // Sub-microsecond values round up to 1 µs rather than vanish.
        let us = ns.div_ceil(1000).max(1);
        let _ = self.hists[m as usize].record(us);
    }

    /// One kernel-stamped content chunk and how late the parser saw it.
    pub fn record_read_delay_us(&mut self, us: u32, shared_read: bool) {
        let _ = self.read_path_delay.record(u64::from(us).max(1));
        self.chunks_kernel_stamped += 1;
        self.chunks_sharing_a_read += u64::from(shared_read);
    }

    pub fn hist(&self, m: Metric) -> &Histogram<u64> {
        &self.hists[m as usize]
    }

    pub fn merge(&mut self, o: &Accumulator) {
        for (a, b) in self.hists.iter_mut().zip(&o.hists) {
            let _ = a.add(b);
        }
        let _ = self.read_path_delay.add(&o.read_path_delay);
        self.chunks_kernel_stamped += o.chunks_kernel_stamped;
        self.chunks_sharing_a_read += o.chunks_sharing_a_read;
        self.requests_application_timed += o.requests_application_timed;
        self.requests_kernel_timed += o.requests_kernel_timed;
        self.requests += o.requests;
        self.ok += o.ok;
        for (k, v) in &o.errors {
            *self.errors.entry(*k).or_default() += v;
        }
        self.prompt_tokens += o.prompt_tokens;
        self.output_tokens += o.output_tokens;
        self.cached_tokens += o.cached_tokens;
        self.requests_with_cache_hit += o.requests_with_cache_hit;
        self.requests_without_usage += o.requests_without_usage;
        self.output_tokens_counted += o.output_tokens_counted;
        self.unary_answers_to_stream += o.unary_answers_to_stream;
        self.duration += o.duration;
    }

    /// [`Accumulator::errors`] under the names the documents use.
    pub fn errors_by_kind(&self) -> BTreeMap<String, u64> {
        self.errors
            .iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect()
    }

    pub fn summarize(&self, phase: &str, include_in_summary: bool) -> PhaseSummary {
        let secs = self.duration.as_secs_f64();
        let rate = |n: u64| if secs > 0.0 { n as f64 / secs } else { 0.0 };
        let errors: u64 = self.errors.values().sum();
        let latency = METRICS
            .iter()
            .zip(&self.hists)
            .map(|(name, h)| ((*name).to_owned(), Stats::from_hist(h)))
            .collect();
        PhaseSummary {
            phase: phase.to_owned(),
            include_in_summary,
            duration_s: round3(secs),
            total_requests: self.requests,
            ok_requests: self.ok,
            error_requests: errors,
            error_rate: if self.requests > 0 {
                round6(errors as f64 / self.requests as f64)
            } else {
                0.0
            },
            errors_by_kind: self.errors_by_kind(),
            req_per_s: round3(rate(self.requests)),
            input_tokens_per_s: round3(rate(self.prompt_tokens)),
            output_tokens_per_s: round3(rate(self.output_tokens)),
            output_tokens_per_s_counted: round3(rate(self.output_tokens_counted)),
            prompt_tokens_total: self.prompt_tokens,
            output_tokens_total: self.output_tokens,
            cached_tokens_total: self.cached_tokens,
            requests_with_cache_hit: self.requests_with_cache_hit,
            requests_without_usage: self.requests_without_usage,
            latency_ms: latency,
            timing_error_budget: TimingBudget {
                schedule_lateness_ms: Stats::from_hist(self.hist(Metric::ScheduleLateness)),
                arrival_clock:
                    match (self.requests_kernel_timed, self.requests_application_timed) {
                        (0, _) => "application",
                        (_, 0) => "kernel",
                        _ => "mixed",
                    }
                    .into(),
                read_path_delay_ms: Stats::from_hist(&self.read_path_delay),
                chunks_kernel_stamped: self.chunks_kernel_stamped,
                chunks_sharing_a_read: self.chunks_sharing_a_read,
            },
            seed_ttft_ms: None,
        }
    }
}

/// Distribution statistics in milliseconds.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(default)]
pub struct Stats {
    pub count: u64,
    pub min: Option<f64>,
    pub p50: Option<f64>,
    pub p90: Option<f64>,
    pub p95: Option<f64>,
    pub p99: Option<f64>,
    #[serde(rename = "p99.9")]
    pub p99_9: Option<f64>,
    pub max: Option<f64>,
    pub mean: Option<f64>,
}

impl Stats {
    /// `p50`, `p90`, `p95`, `p99`, `p99.9` (or `p999`), `mean`, `max`, `min`.
    pub fn stat(&self, s: &str) -> Option<f64> {
        match s {
            "p50" | "median" => self.p50,
            "p90" => self.p90,
            "p95" => self.p95,
            "p99" => self.p99,
            "p99.9" | "p999" => self.p99_9,
            "mean" => self.mean,
            "max" => self.max,
            "min" => self.min,
            _ => None,
        }
    }

    pub fn from_hist(h: &Histogram<u64>) -> Stats {
        let n = h.len();
        let ms = |us: u64| Some(round3(us as f64 / 1000.0));
        if n == 0 {
            return Stats {
                count: 0,
                min: None,
                p50: None,
                p90: None,
                p95: None,
                p99: None,
                p99_9: None,
                max: None,
                mean: None,
            };
        }
        let q = |p: f64| ms(h.value_at_quantile(p));
        Stats {
            count: n,
            min: ms(h.min()),
            p50: q(0.5),
            p90: q(0.9),
            p95: q(0.95),
            p99: q(0.99),
            p99_9: q(0.999),
            max: ms(h.max()),
            mean: Some(round3(h.mean() / 1000.0)),
        }
    }
}

/// The harness's own timing error for the run.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct TimingBudget {
    /// Actual (first byte to the socket) minus intended send time, all requests.
    pub schedule_lateness_ms: Stats,
    /// Where chunk arrival times came from: `kernel` receive timestamps,
    /// the `application` parser's clock, or `mixed`.
    pub arrival_clock: String,
    /// How much later than its kernel arrival the parser saw each content
    /// chunk: with the `application` clock, the error the reported figures
    /// carry; with `kernel`, the error removed from them.
    pub read_path_delay_ms: Stats,
    pub chunks_kernel_stamped: u64,
    /// Chunks that arrived in one read with the chunk before them: their
    /// kernel stamp is the read's last segment, late by up to the gap between them.
    pub chunks_sharing_a_read: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct PhaseSummary {
    pub phase: String,
    /// Absent in some seed documents, where every phase counted.
    #[serde(default = "included_by_default")]
    pub include_in_summary: bool,
    pub duration_s: f64,
    pub total_requests: u64,
    pub ok_requests: u64,
    pub error_requests: u64,
    pub error_rate: f64,
    pub errors_by_kind: BTreeMap<String, u64>,
    /// All requests (including failed ones) per second of phase time.
    pub req_per_s: f64,
    /// From the server's `usage.prompt_tokens`.
    #[serde(alias = "input_tokens_per_s_est")]
    pub input_tokens_per_s: f64,
    /// From the server's `usage.completion_tokens`.
    #[serde(alias = "output_tokens_per_s_est")]
    pub output_tokens_per_s: f64,
    /// From the host's own token counting, for servers without usage.
    pub output_tokens_per_s_counted: f64,
    pub prompt_tokens_total: u64,
    pub output_tokens_total: u64,
    pub cached_tokens_total: u64,
    pub requests_with_cache_hit: u64,
    pub requests_without_usage: u64,
    /// By metric: `ttft`, `itl`, `e2e`, …; the seed's bare end-to-end
    /// statistics read as `e2e`.
    #[serde(deserialize_with = "latency_map")]
    pub latency_ms: BTreeMap<String, Stats>,
    pub timing_error_budget: TimingBudget,
    /// The seed's TTFT statistics (`ttft_ms`), read but never written.
    #[serde(rename = "ttft_ms", skip_serializing)]
    pub seed_ttft_ms: Option<Stats>,
}

/// `latency_ms` as a map of metrics, or (the seed) one bare distribution.
fn latency_map<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<String, Stats>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Latency {
        Map(BTreeMap<String, Stats>),
        Seed(Stats),
    }
    Ok(match Latency::deserialize(d)? {
        Latency::Map(m) => m,
        Latency::Seed(s) => BTreeMap::from([("e2e".to_owned(), s)]),
    })
}

fn included_by_default() -> bool {
    true
}

pub fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

fn round6(v: f64) -> f64 {
    (v * 1e6).round() / 1e6
}

/// One histogram destined for the interval log.
pub struct LogEntry<'a> {
    pub phase: &'a str,
    pub start: Duration,
    pub acc: &'a Accumulator,
}

/// HdrHistogram V2 interval log (`histograms.hlog`): one interval per phase
/// and metric, tagged `<phase>.<metric>`, values in microseconds.
pub fn interval_log(start_time: SystemTime, entries: &[LogEntry<'_>]) -> Result<Vec<u8>, String> {
    let mut buf = Vec::new();
    let mut ser = V2DeflateSerializer::new();
    {
        let mut w = IntervalLogWriterBuilder::new()
            .add_comment("sparkhost latency histograms; values in microseconds")
            .with_start_time(start_time)
            .with_base_time(start_time)
            .with_max_value_divisor(1000.0)
            .begin_log_with(&mut buf, &mut ser)
            .map_err(|e| e.to_string())?;
        for e in entries {
            for (i, name) in METRICS.iter().enumerate() {
                let tag_text = format!("{}.{}", sanitize_tag(e.phase), name);
                let tag = Tag::new(&tag_text);
                w.write_histogram(&e.acc.hists[i], e.start, e.acc.duration, tag)
                    .map_err(|e| format!("{e:?}"))?;
            }
        }
    }
    Ok(buf)
}

/// Interval-log tags may not contain separators or whitespace.
fn sanitize_tag(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    /// Histograms start small and grow with what they record, so a phase
    /// that records nothing costs next to nothing; values up to an hour
    /// and past it stay exact to 3 digits.
    #[test]
    fn histograms_grow_with_use() {
        let acc = Accumulator::default();
        let empty: usize = acc.hists.iter().map(|h| h.distinct_values()).sum();
        // One bucket of 2,048 counts each (3 significant digits need that
        // much); allocated for 1 µs..1 h they were ~23,000 each.
        assert_eq!(
            empty,
            METRICS.len() * 2048,
            "{empty} counts before any value"
        );
        let mut acc = Accumulator::default();
        acc.record_ns(Metric::E2e, 5_000);
        acc.record_ns(Metric::E2e, 3_600_000_000_000);
        acc.record_ns(Metric::E2e, 7_200_000_000_000);
        let h = acc.hist(Metric::E2e);
        assert_eq!(h.len(), 3);
        assert_eq!(h.value_at_quantile(0.0), 5);
        let top = h.value_at_quantile(1.0) as f64;
        assert!((top / 7.2e9 - 1.0).abs() < 1e-3, "{top}");
        let mut all = Accumulator::default();
        all.merge(&acc);
        assert_eq!(all.hist(Metric::E2e).len(), 3);
    }

    use super::*;
    use base64::Engine as _;
    use hdrhistogram::serialization::Deserializer;
    use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry as HLogEntry};

    fn acc_with(values_ms: &[u64]) -> Accumulator {
        let mut a = Accumulator::default();
        for &v in values_ms {
            a.record_ns(Metric::Ttft, v * 1_000_000);
            a.requests += 1;
            a.ok += 1;
        }
        a.duration = Duration::from_secs(2);
        a
    }

    #[test]
    fn stats_match_known_distribution() {
        let a = acc_with(&(1..=1000).collect::<Vec<_>>());
        let s = a.summarize("main", true);
        let t = &s.latency_ms["ttft"];
        assert_eq!(t.count, 1000);
        assert_eq!(t.min, Some(1.0));
        assert!((t.p50.unwrap() - 500.0).abs() <= 0.5, "{t:?}");
        assert!((t.p99.unwrap() - 990.0).abs() <= 1.0, "{t:?}");
        assert!((t.max.unwrap() - 1000.0).abs() <= 0.5, "{t:?}");
        assert!((t.mean.unwrap() - 500.5).abs() <= 0.5, "{t:?}");
        assert_eq!(s.req_per_s, 500.0);
        assert_eq!(s.latency_ms["itl"].count, 0);
        assert_eq!(s.latency_ms["itl"].p50, None);
    }

    #[test]
    fn merge_is_lossless() {
        let mut a = acc_with(&[1, 2, 3]);
        let b = acc_with(&[4, 5]);
        a.merge(&b);
        let all = acc_with(&[1, 2, 3, 4, 5]);
        assert_eq!(a.hist(Metric::Ttft), all.hist(Metric::Ttft));
        assert_eq!(a.requests, 5);
        assert_eq!(a.duration, Duration::from_secs(4));
    }

    #[test]
    fn interval_log_round_trips() {
        let a = acc_with(&[10, 20, 30]);
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let log = interval_log(
            start,
            &[LogEntry {
                phase: "warm up",
                start: Duration::ZERO,
                acc: &a,
            }],
        )
        .unwrap();
        let mut found = 0;
        for entry in IntervalLogIterator::new(&log) {
            if let Ok(HLogEntry::Interval(i)) = entry
                && i.tag().map(|t| t.as_str()) == Some("warm_up.ttft")
            {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(i.encoded_histogram())
                    .unwrap();
                let h: Histogram<u64> = Deserializer::new().deserialize(&mut &bytes[..]).unwrap();
                assert_eq!(h.len(), 3);
                found += 1;
            }
        }
        assert_eq!(found, 1);
    }
}
