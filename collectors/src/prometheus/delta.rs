//! Deltas between two scrapes: counters with reset detection, and histograms
//! turned into the distribution of what happened between them.
//!
//! A counter that went down was reset (the process restarted); what it counts
//! since the reset is its value after, so that is the delta — clamping to zero,
//! as the seed did, would drop it. A series that appears only in the later
//! scrape started from zero during the interval.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::{Exposition, Histogram, Labels, MetricType, ser_f64};
use crate::common::round6;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeriesDelta {
    pub name: String,
    pub labels: Labels,
    pub before: Option<f64>,
    #[serde(serialize_with = "ser_f64")]
    pub after: f64,
    #[serde(serialize_with = "ser_f64")]
    pub delta: f64,
    pub reset: bool,
}

pub fn counter_value_delta(before: Option<f64>, after: f64) -> (f64, bool) {
    match before {
        None => (after, false),
        Some(b) if after >= b => (after - b, false),
        // NaN compares false: treat as no information rather than a reset.
        Some(b) if b.is_nan() || after.is_nan() => (f64::NAN, false),
        Some(_) => (after, true),
    }
}

/// Deltas of every counter series present in `after` (samples of families
/// typed `counter`, including OpenMetrics `_total` samples; `_created` excluded).
pub fn counter_deltas(before: &Exposition, after: &Exposition) -> Vec<SeriesDelta> {
    let prev: HashMap<(String, String), f64> = before
        .samples()
        .filter(|(f, s)| f.kind == MetricType::Counter && !s.name.ends_with("_created"))
        .map(|(_, s)| ((s.name.clone(), s.labels.key()), s.value))
        .collect();
    after
        .samples()
        .filter(|(f, s)| f.kind == MetricType::Counter && !s.name.ends_with("_created"))
        .map(|(_, s)| {
            let b = prev.get(&(s.name.clone(), s.labels.key())).copied();
            let (delta, reset) = counter_value_delta(b, s.value);
            SeriesDelta {
                name: s.name.clone(),
                labels: s.labels.clone(),
                before: b,
                after: s.value,
                delta,
                reset,
            }
        })
        .collect()
}

/// What a histogram series accumulated between two scrapes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HistogramDelta {
    pub name: String,
    pub labels: Labels,
    /// Cumulative bucket count deltas `(le, count)`.
    pub buckets: Vec<(f64, f64)>,
    pub sum: Option<f64>,
    pub count: Option<f64>,
    pub reset: bool,
}

pub fn histogram_delta(before: Option<&Histogram>, after: &Histogram) -> HistogramDelta {
    let mut out = HistogramDelta {
        name: after.name.clone(),
        labels: after.labels.clone(),
        buckets: after.buckets.clone(),
        sum: after.sum,
        count: after.count,
        reset: false,
    };
    let Some(b) = before else { return out };
    let same_bounds = b.buckets.len() == after.buckets.len()
        && b.buckets
            .iter()
            .zip(&after.buckets)
            .all(|(x, y)| x.0 == y.0);
    let went_down = match (b.count, after.count) {
        (Some(x), Some(y)) => y < x,
        _ => false,
    } || (same_bounds
        && b.buckets.iter().zip(&after.buckets).any(|(x, y)| y.1 < x.1));
    if went_down || !same_bounds {
        // Reset (or re-registered with new bounds): everything after is new.
        out.reset = went_down;
        return out;
    }
    out.buckets = after
        .buckets
        .iter()
        .zip(&b.buckets)
        .map(|(a, bb)| (a.0, a.1 - bb.1))
        .collect();
    out.sum = match (b.sum, after.sum) {
        (Some(x), Some(y)) => Some(y - x),
        (None, y) => y,
        (Some(_), None) => None,
    };
    out.count = match (b.count, after.count) {
        (Some(x), Some(y)) => Some(y - x),
        (None, y) => y,
        (Some(_), None) => None,
    };
    out
}

/// Deltas for every series of a histogram family in `after`.
pub fn histogram_family_delta(
    before: &Exposition,
    after: &Exposition,
    family: &str,
) -> Vec<HistogramDelta> {
    let prev: HashMap<String, Histogram> = before
        .histograms(family)
        .into_iter()
        .map(|h| (h.labels.key(), h))
        .collect();
    after
        .histograms(family)
        .iter()
        .map(|h| histogram_delta(prev.get(&h.labels.key()), h))
        .collect()
}

/// Quantile from cumulative buckets with Prometheus' `histogram_quantile`
/// rules: linear interpolation inside the bucket, the first bucket starting at
/// 0 (when its bound is positive), and a rank in the `+Inf` bucket answered with
/// the highest finite bound. `None` with no observations or no `+Inf` bucket.
pub fn quantile(buckets: &[(f64, f64)], q: f64) -> Option<f64> {
    if buckets.is_empty() || !(0.0..=1.0).contains(&q) {
        return None;
    }
    let total = buckets.last()?.1;
    if buckets.last()?.0 != f64::INFINITY || total.is_nan() || total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let i = buckets.iter().position(|b| b.1 >= rank)?;
    let (upper, cum) = buckets[i];
    if upper == f64::INFINITY {
        return (i > 0).then(|| buckets[i - 1].0);
    }
    let (lower, prev_cum) = if i == 0 {
        (if upper > 0.0 { 0.0 } else { return Some(upper) }, 0.0)
    } else {
        buckets[i - 1]
    };
    let in_bucket = cum - prev_cum;
    if in_bucket <= 0.0 {
        return Some(upper);
    }
    Some(lower + (upper - lower) * ((rank - prev_cum) / in_bucket))
}

/// A distribution reconstructed from bucket counts, in the unit chosen by `scale`
/// (1000 turns seconds into ms). Quantiles are bucket-interpolated estimates,
/// accurate to the bucket width; the mean is exact (from `_sum`/`_count`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Distribution {
    pub count: f64,
    pub sum: Option<f64>,
    pub mean: Option<f64>,
    pub p50: Option<f64>,
    pub p90: Option<f64>,
    pub p95: Option<f64>,
    pub p99: Option<f64>,
    /// Upper bound of the highest non-empty finite bucket: the max is at most this
    /// (or above the last bound when observations fell into `+Inf`).
    pub max_bucket_bound: Option<f64>,
    /// Observations above the highest finite bound (in `+Inf` only).
    pub overflow_count: f64,
}

pub fn distribution(
    buckets: &[(f64, f64)],
    sum: Option<f64>,
    count: Option<f64>,
    scale: f64,
) -> Distribution {
    let total = count.or_else(|| buckets.last().map(|b| b.1)).unwrap_or(0.0);
    let q = |p: f64| quantile(buckets, p).map(|v| round6(v * scale));
    let mut max_bound = None;
    let mut prev = 0.0;
    let mut finite_cum = 0.0;
    for &(le, c) in buckets {
        if le.is_finite() {
            if c > prev {
                max_bound = Some(round6(le * scale));
            }
            finite_cum = c;
        }
        prev = c;
    }
    let inf = buckets
        .last()
        .filter(|b| b.0 == f64::INFINITY)
        .map(|b| b.1)
        .unwrap_or(0.0);
    Distribution {
        count: total,
        sum: sum.map(|s| round6(s * scale)),
        mean: match sum {
            Some(s) if total > 0.0 => Some(round6(s / total * scale)),
            _ => None,
        },
        p50: q(0.5),
        p90: q(0.9),
        p95: q(0.95),
        p99: q(0.99),
        max_bucket_bound: max_bound,
        overflow_count: (inf - finite_cum).max(0.0),
    }
}

impl HistogramDelta {
    pub fn distribution(&self, scale: f64) -> Distribution {
        distribution(&self.buckets, self.sum, self.count, scale)
    }
}

/// Sums deltas of one family's series that share bucket bounds (e.g. over the
/// `model` label); `None` when there are none.
pub fn merge_deltas(ds: &[HistogramDelta]) -> Result<Option<HistogramDelta>, String> {
    let hs: Vec<Histogram> = ds
        .iter()
        .map(|d| Histogram {
            name: d.name.clone(),
            labels: d.labels.clone(),
            buckets: d.buckets.clone(),
            sum: d.sum,
            count: d.count,
        })
        .collect();
    Ok(super::agg::merge_histograms(&hs)?.map(|h| HistogramDelta {
        name: h.name,
        labels: h.labels,
        buckets: h.buckets,
        sum: h.sum,
        count: h.count,
        reset: ds.iter().any(|d| d.reset),
    }))
}
