//! Service-level objectives and goodput.
//!
//! `--slo ttft_p95=500ms,tpot_p99=50ms,error_rate=0.01` is read two ways,
//! both reported:
//! - **run level** (`slo_met`): the run's p95 TTFT over successful requests
//!   is at most 500 ms, its p99 TPOT at most 50 ms, and at most 1 % of its
//!   requests failed;
//! - **request level** (goodput, as in vLLM and DistServe): a request is
//!   *good* when it succeeded and each of its own latencies is within the
//!   threshold (TTFT ≤ 500 ms, TPOT ≤ 50 ms; for ITL, the request's own
//!   percentile of its token gaps). Goodput is good requests per second of
//!   the measured phases.
//!
//! Percentiles are exact over the rows (linear interpolation), not read from
//! the HdrHistograms, so they may differ from `summary.json` in the third
//! significant digit.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::stats::{mean, percentile};
use crate::results::documents::SummaryDoc;
use crate::results::summary::PhaseSummary;
use crate::results::tokens::token_gaps;

/// Per-request latencies an SLO can bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LatencyMetric {
    Ttft,
    Ttfc,
    Tpot,
    Itl,
    E2e,
    TtftFromIntended,
    E2eFromIntended,
}

impl LatencyMetric {
    const ALL: [(&'static str, LatencyMetric); 7] = [
        ("ttft", LatencyMetric::Ttft),
        ("ttfc", LatencyMetric::Ttfc),
        ("tpot", LatencyMetric::Tpot),
        ("itl", LatencyMetric::Itl),
        ("e2e", LatencyMetric::E2e),
        ("ttft_from_intended", LatencyMetric::TtftFromIntended),
        ("e2e_from_intended", LatencyMetric::E2eFromIntended),
    ];

    /// Measured per token or chunk of a stream: unary answers have none.
    pub fn needs_stream(self) -> bool {
        matches!(
            self,
            LatencyMetric::Ttft
                | LatencyMetric::Ttfc
                | LatencyMetric::Tpot
                | LatencyMetric::Itl
                | LatencyMetric::TtftFromIntended
        )
    }

    pub fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, m)| *m == self)
            .map(|(n, _)| *n)
            .unwrap_or("?")
    }
}

/// Which statistic of the distribution is bounded.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SloStat {
    Percentile(f64),
    Mean,
    Max,
}

impl fmt::Display for SloStat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SloStat::Percentile(p) => write!(f, "p{p}"),
            SloStat::Mean => f.write_str("mean"),
            SloStat::Max => f.write_str("max"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SloTerm {
    Latency {
        metric: LatencyMetric,
        stat: SloStat,
        threshold_ms: f64,
    },
    /// Failed requests over all requests, 0–1.
    ErrorRate { max: f64 },
}

impl SloTerm {
    pub fn name(&self) -> String {
        match self {
            SloTerm::Latency { metric, stat, .. } => format!("{}_{stat}", metric.name()),
            SloTerm::ErrorRate { .. } => "error_rate".into(),
        }
    }
}

impl fmt::Display for SloTerm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SloTerm::Latency { threshold_ms, .. } => write!(f, "{}={threshold_ms}ms", self.name()),
            SloTerm::ErrorRate { max } => write!(f, "error_rate={max}"),
        }
    }
}

/// A set of objectives, all of which must hold.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Slo {
    pub terms: Vec<SloTerm>,
}

impl fmt::Display for Slo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.terms.iter().map(ToString::to_string).collect();
        f.write_str(&parts.join(","))
    }
}

fn parse_stat(s: &str) -> Option<SloStat> {
    match s {
        "mean" | "avg" => Some(SloStat::Mean),
        "max" => Some(SloStat::Max),
        "median" => Some(SloStat::Percentile(50.0)),
        "p999" => Some(SloStat::Percentile(99.9)),
        _ => {
            let p: f64 = s.strip_prefix('p')?.parse().ok()?;
            (p > 0.0 && p <= 100.0).then_some(SloStat::Percentile(p))
        }
    }
}

/// `500ms`, `0.5s`, `2m`, or a bare number of milliseconds.
fn parse_ms(v: &str) -> Result<f64, String> {
    let v = v.trim();
    let (num, mult) = if let Some(n) = v.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = v.strip_suffix("us") {
        (n, 0.001)
    } else if let Some(n) = v.strip_suffix('s') {
        (n, 1000.0)
    } else if let Some(n) = v.strip_suffix('m') {
        (n, 60_000.0)
    } else {
        (v, 1.0)
    };
    let x: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("{v:?} is not a duration like 500ms or 1.5s"))?;
    if !x.is_finite() || x < 0.0 {
        return Err(format!("{v:?} must be a non-negative duration"));
    }
    Ok(x * mult)
}

impl Slo {
    /// Parses `name=value[,name=value…]`: latency terms `<metric>_<stat>`
    /// with metric ttft, ttfc, tpot, itl, e2e, ttft_from_intended,
    /// e2e_from_intended and stat p50…p99.9, mean, max, valued as a duration
    /// (bare numbers are ms); and `error_rate` as a fraction (`0.01`) or a
    /// percentage (`1%`).
    pub fn parse(s: &str) -> Result<Slo, String> {
        let mut terms = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| format!("{part:?} is not NAME=VALUE"))?;
            let k = k.trim().to_ascii_lowercase();
            let term = if k == "error_rate" {
                let v = v.trim();
                let max = match v.strip_suffix('%') {
                    Some(p) => p.trim().parse::<f64>().map(|x| x / 100.0),
                    None => v.parse::<f64>(),
                }
                .map_err(|_| format!("error_rate={v:?} is not a fraction like 0.01 or 1%"))?;
                if !(0.0..=1.0).contains(&max) {
                    return Err(format!(
                        "error_rate={v} must be between 0 and 1 (or 0% and 100%)"
                    ));
                }
                SloTerm::ErrorRate { max }
            } else {
                let (m, st) = k
                    .rsplit_once('_')
                    .ok_or_else(|| format!("{k:?} is not <metric>_<stat>, e.g. ttft_p95"))?;
                let metric = LatencyMetric::ALL
                    .iter()
                    .find(|(n, _)| *n == m)
                    .map(|(_, m)| *m)
                    .ok_or_else(|| {
                        format!(
                            "unknown SLO metric {m:?} (known: {}, error_rate)",
                            LatencyMetric::ALL.map(|(n, _)| n).join(", ")
                        )
                    })?;
                let stat = parse_stat(st).ok_or_else(|| {
                    format!(
                        "unknown SLO statistic {st:?} (use p50, p90, p95, p99, p99.9, mean or max)"
                    )
                })?;
                SloTerm::Latency {
                    metric,
                    stat,
                    threshold_ms: parse_ms(v)?,
                }
            };
            if terms.iter().any(|t: &SloTerm| t.name() == term.name()) {
                return Err(format!("{} is given twice", term.name()));
            }
            terms.push(term);
        }
        if terms.is_empty() {
            return Err("an SLO needs at least one term, e.g. ttft_p95=500ms".into());
        }
        Ok(Slo { terms })
    }
}

impl FromStr for Slo {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Slo::parse(s)
    }
}

/// The per-request facts goodput needs (one `requests.jsonl` row).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SloRow {
    pub ok: bool,
    pub ttft_ms: Option<f64>,
    pub ttfc_ms: Option<f64>,
    pub tpot_ms: Option<f64>,
    pub e2e_ms: Option<f64>,
    pub ttft_from_intended_ms: Option<f64>,
    pub e2e_from_intended_ms: Option<f64>,
    /// One gap per token after the first (a chunk of k tokens counts k).
    pub itl_ms: Vec<f64>,
}

impl SloRow {
    pub fn from_json(v: &Value) -> SloRow {
        let f = |k: &str| v.get(k).and_then(Value::as_f64);
        let offsets: Vec<f64> = v
            .get("chunk_offsets_ms")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_f64).collect())
            .unwrap_or_default();
        let tokens: Vec<u32> = v
            .get("chunk_tokens")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_u64)
                    .map(|k| u32::try_from(k).unwrap_or(u32::MAX))
                    .collect()
            })
            .unwrap_or_default();
        // Rows without counts (older runs) count one token per chunk.
        let counts = tokens.into_iter().chain(std::iter::repeat(1));
        let mut itl_ms = Vec::new();
        token_gaps(offsets.into_iter().zip(counts), &mut itl_ms);
        SloRow {
            ok: v.get("ok").and_then(Value::as_bool).unwrap_or(false),
            ttft_ms: f("ttft_ms"),
            ttfc_ms: f("ttfc_ms"),
            tpot_ms: f("tpot_ms"),
            e2e_ms: f("latency_ms"),
            ttft_from_intended_ms: f("ttft_from_intended_ms"),
            e2e_from_intended_ms: f("latency_from_intended_ms"),
            itl_ms,
        }
    }

    fn values(&self, m: LatencyMetric) -> Vec<f64> {
        let one = |x: Option<f64>| x.into_iter().collect();
        match m {
            LatencyMetric::Ttft => one(self.ttft_ms),
            LatencyMetric::Ttfc => one(self.ttfc_ms),
            LatencyMetric::Tpot => one(self.tpot_ms),
            LatencyMetric::E2e => one(self.e2e_ms),
            LatencyMetric::TtftFromIntended => one(self.ttft_from_intended_ms),
            LatencyMetric::E2eFromIntended => one(self.e2e_from_intended_ms),
            LatencyMetric::Itl => self.itl_ms.clone(),
        }
    }
}

/// One objective against what the run did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct SloCheck {
    pub name: String,
    pub threshold: f64,
    pub observed: Option<f64>,
    /// `ms` or `ratio`.
    pub unit: String,
    /// Met. False too when not applicable: see `applicable`.
    pub pass: bool,
    /// False for a per-token bound (TTFT, TTFC, ITL, TPOT) over requests
    /// that had no tokens timed, e.g. a run that did not stream: neither met
    /// nor missed, and left out of `slo_met` and `good_requests`.
    #[serde(default = "applicable_default")]
    pub applicable: bool,
}

fn applicable_default() -> bool {
    true
}

/// What `summary.json`'s `goodput` holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct GoodputSummary {
    pub slo: String,
    pub terms: Vec<SloTerm>,
    pub requests: u64,
    pub ok_requests: u64,
    /// Succeeded and within every per-request threshold.
    pub good_requests: u64,
    pub good_fraction: f64,
    pub duration_s: f64,
    pub goodput_req_per_s: f64,
    pub checks: Vec<SloCheck>,
    /// Every run-level check passed.
    pub slo_met: bool,
}

fn stat_of(values: &[f64], stat: SloStat) -> Option<f64> {
    match stat {
        SloStat::Percentile(p) => percentile(values, p),
        SloStat::Mean => mean(values),
        SloStat::Max => values.iter().copied().reduce(f64::max),
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Goodput and SLO attainment of `rows` (the measured phases' requests)
/// over `duration_s` seconds of measured time. Pure: no I/O.
pub fn goodput(rows: &[SloRow], slo: &Slo, duration_s: f64) -> GoodputSummary {
    let requests = rows.len() as u64;
    let ok: Vec<&SloRow> = rows.iter().filter(|r| r.ok).collect();
    let mut checks = Vec::with_capacity(slo.terms.len());
    for term in &slo.terms {
        match term {
            SloTerm::Latency {
                metric,
                stat,
                threshold_ms,
            } => {
                let all: Vec<f64> = ok.iter().flat_map(|r| r.values(*metric)).collect();
                let observed = stat_of(&all, *stat).map(round3);
                checks.push(SloCheck {
                    name: term.name(),
                    threshold: *threshold_ms,
                    observed,
                    unit: "ms".into(),
                    pass: observed.is_some_and(|o| o <= *threshold_ms),
                    applicable: !(metric.needs_stream() && all.is_empty() && !ok.is_empty()),
                });
            }
            SloTerm::ErrorRate { max } => {
                let rate = if requests > 0 {
                    (requests - ok.len() as u64) as f64 / requests as f64
                } else {
                    0.0
                };
                checks.push(SloCheck {
                    name: term.name(),
                    threshold: *max,
                    observed: (requests > 0).then_some(round3_6(rate)),
                    unit: "ratio".into(),
                    pass: requests > 0 && rate <= *max,
                    applicable: true,
                });
            }
        }
    }
    let good = ok
        .iter()
        .filter(|r| {
            slo.terms.iter().zip(&checks).all(|(t, c)| match t {
                _ if !c.applicable => true,
                SloTerm::Latency {
                    metric,
                    stat,
                    threshold_ms,
                } => {
                    let v = r.values(*metric);
                    match metric {
                        // A request without tokens after the first has no gaps to bound.
                        LatencyMetric::Itl | LatencyMetric::Tpot if v.is_empty() => true,
                        LatencyMetric::Itl => {
                            stat_of(&v, *stat).is_some_and(|x| x <= *threshold_ms)
                        }
                        _ => v.first().is_some_and(|x| *x <= *threshold_ms),
                    }
                }
                SloTerm::ErrorRate { .. } => true,
            })
        })
        .count() as u64;
    GoodputSummary {
        slo: slo.to_string(),
        terms: slo.terms.clone(),
        requests,
        ok_requests: ok.len() as u64,
        good_requests: good,
        good_fraction: if requests > 0 {
            round3_6(good as f64 / requests as f64)
        } else {
            0.0
        },
        duration_s,
        goodput_req_per_s: if duration_s > 0.0 {
            round3(good as f64 / duration_s)
        } else {
            0.0
        },
        slo_met: requests > 0 && checks.iter().filter(|c| c.applicable).all(|c| c.pass),
        checks,
    }
}

fn round3_6(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

/// Reads `requests.jsonl`, keeping the rows whose phase `include` accepts.
pub fn read_rows(path: &Path, include: &dyn Fn(&str) -> bool) -> std::io::Result<Vec<SloRow>> {
    use std::io::BufRead;
    let f = std::fs::File::open(path)?;
    let mut rows = Vec::new();
    for line in std::io::BufReader::new(f).lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        // A torn last line (a killed run) is skipped, not fatal.
        let Ok(v) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        let phase = v.get("phase").and_then(Value::as_str).unwrap_or_default();
        if include(phase) {
            rows.push(SloRow::from_json(&v));
        }
    }
    Ok(rows)
}

/// Goodput of a finished run directory: its measured phases (those with
/// `include_in_summary`) and their summed duration, from `summary.json`.
pub fn goodput_for_run(run_dir: &Path, slo: &Slo) -> anyhow::Result<GoodputSummary> {
    let summary: SummaryDoc = crate::results::documents::read(&run_dir.join("summary.json"))?;
    let included: Vec<&PhaseSummary> = summary
        .phase_summaries
        .iter()
        .map(|p| &p.stats)
        .filter(|p| p.include_in_summary)
        .collect();
    goodput_of_rows(run_dir, slo, &included)
}

/// Goodput of the `included` phases' rows in `run_dir/requests.jsonl`, over
/// those phases' measured time.
pub fn goodput_of_rows(
    run_dir: &Path,
    slo: &Slo,
    included: &[&PhaseSummary],
) -> anyhow::Result<GoodputSummary> {
    use anyhow::Context;
    let duration: f64 = included.iter().map(|p| p.duration_s).sum();
    let rows = read_rows(&run_dir.join("requests.jsonl"), &|p| {
        included.iter().any(|i| i.phase == p)
    })
    .with_context(|| format!("reading {}/requests.jsonl", run_dir.display()))?;
    Ok(goodput(&rows, slo, duration))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(ok: bool, ttft: f64, tpot: f64) -> SloRow {
        SloRow {
            ok,
            ttft_ms: Some(ttft),
            tpot_ms: Some(tpot),
            e2e_ms: Some(ttft + 10.0 * tpot),
            ..Default::default()
        }
    }

    #[test]
    fn parses_the_documented_form() {
        let s = Slo::parse("ttft_p95=500ms,tpot_p99=50ms,error_rate=0.01").unwrap();
        assert_eq!(s.terms.len(), 3);
        assert_eq!(
            s.terms[0],
            SloTerm::Latency {
                metric: LatencyMetric::Ttft,
                stat: SloStat::Percentile(95.0),
                threshold_ms: 500.0
            }
        );
        assert_eq!(s.terms[2], SloTerm::ErrorRate { max: 0.01 });
        assert_eq!(
            s.to_string(),
            "ttft_p95=500ms,tpot_p99=50ms,error_rate=0.01"
        );
        let s = Slo::parse("e2e_from_intended_p99.9=1.5s, itl_max=80, error_rate=2%").unwrap();
        assert_eq!(s.terms[0].name(), "e2e_from_intended_p99.9");
        assert!(
            matches!(s.terms[0], SloTerm::Latency { threshold_ms, .. } if threshold_ms == 1500.0)
        );
        assert_eq!(s.terms[2], SloTerm::ErrorRate { max: 0.02 });
        for bad in [
            "",
            "ttft=5",
            "ttft_p101=5",
            "foo_p95=5",
            "ttft_p95=soon",
            "error_rate=2",
            "ttft_p95=1,ttft_p95=2",
        ] {
            assert!(Slo::parse(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn goodput_counts_requests_within_every_threshold() {
        let slo = Slo::parse("ttft_p95=100ms,tpot_p99=10ms,error_rate=0.25").unwrap();
        let rows = vec![
            row(true, 50.0, 5.0),
            row(true, 90.0, 9.0),
            row(true, 150.0, 5.0), // TTFT too slow
            row(true, 60.0, 12.0), // TPOT too slow
            row(false, 10.0, 1.0), // failed
        ];
        let g = goodput(&rows, &slo, 2.0);
        assert_eq!((g.requests, g.ok_requests, g.good_requests), (5, 4, 2));
        assert_eq!(g.goodput_req_per_s, 1.0);
        assert_eq!(g.good_fraction, 0.4);
        let ttft = &g.checks[0];
        // p95 of 50, 60, 90, 150 (ok rows only) = 141.0
        assert_eq!(ttft.observed, Some(141.0));
        assert!(!ttft.pass);
        assert_eq!(g.checks[2].observed, Some(0.2));
        assert!(g.checks[2].pass);
        assert!(!g.slo_met);
        let easy = Slo::parse("ttft_p95=1s").unwrap();
        assert!(goodput(&rows, &easy, 2.0).slo_met);
        assert!(!goodput(&[], &easy, 0.0).slo_met);
    }

    /// A run that did not stream has no TTFT: its TTFT bound is neither
    /// met nor missed, and the other terms still decide.
    #[test]
    fn a_ttft_bound_over_unary_requests_is_not_applicable() {
        let unary = |ok: bool, e2e: f64| SloRow {
            ttft_ms: None,
            tpot_ms: None,
            e2e_ms: Some(e2e),
            ..row(ok, 0.0, 0.0)
        };
        let rows = vec![unary(true, 40.0), unary(true, 60.0), unary(false, 1.0)];
        let slo = Slo::parse("ttft_p95=100ms,e2e_p50=100ms").unwrap();
        let g = goodput(&rows, &slo, 1.0);
        let ttft = &g.checks[0];
        assert_eq!(
            (ttft.applicable, ttft.pass, ttft.observed),
            (false, false, None)
        );
        assert!(g.checks[1].applicable && g.checks[1].pass);
        assert!(g.slo_met, "not missed: {g:#?}");
        assert_eq!(g.good_requests, 2);
        // A streamed run with a slow TTFT still misses it.
        let streamed = vec![row(true, 150.0, 5.0)];
        let g = goodput(&streamed, &slo, 1.0);
        assert!(g.checks[0].applicable && !g.checks[0].pass && !g.slo_met);
    }

    #[test]
    fn itl_follows_the_host_rule() {
        let row = |tokens: Value| {
            SloRow::from_json(&serde_json::json!({
                "chunk_offsets_ms": [5.0, 15.0, 45.0],
                "chunk_tokens": tokens,
            }))
            .itl_ms
        };
        assert_eq!(
            row(serde_json::json!([2, 1, 3])),
            vec![0.0, 10.0, 10.0, 10.0, 10.0]
        );
        assert_eq!(
            row(Value::Null),
            vec![10.0, 30.0],
            "one token per chunk without counts"
        );
        assert!(SloRow::from_json(&serde_json::json!({})).itl_ms.is_empty());
    }
}
