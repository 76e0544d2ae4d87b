//! Percentiles and seeded bootstrap confidence intervals.
//!
//! Percentiles interpolate linearly between closest ranks (k = (n−1)·p), the
//! seed harness's definition, so numbers computed here from raw rows agree
//! with its reports. Bootstrap intervals use the percentile method over a
//! ChaCha8 stream seeded by the caller: the same inputs and seed always give
//! the same interval.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The `p`-th percentile (0–100) of `sorted` (ascending), or `None` if empty.
pub fn percentile_sorted(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let k = (sorted.len() - 1) as f64 * (p / 100.0).clamp(0.0, 1.0);
    let lo = k.floor() as usize;
    let hi = k.ceil() as usize;
    Some(sorted[lo] + (sorted[hi] - sorted[lo]) * (k - lo as f64))
}

/// Sorts a copy and takes the percentile; NaNs are dropped.
pub fn percentile(values: &[f64], p: f64) -> Option<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
    v.sort_by(f64::total_cmp);
    percentile_sorted(&v, p)
}

pub fn mean(values: &[f64]) -> Option<f64> {
    (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
}

/// A statistic of a sample, computed on a scratch buffer it may reorder.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Statistic {
    Mean,
    Percentile(f64),
}

impl Statistic {
    pub fn of(self, scratch: &mut [f64]) -> Option<f64> {
        match self {
            Statistic::Mean => mean(scratch),
            Statistic::Percentile(p) => {
                scratch.sort_by(f64::total_cmp);
                percentile_sorted(scratch, p)
            }
        }
    }
}

/// A two-sided interval at `level` (e.g. 0.95).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Interval {
    pub low: f64,
    pub high: f64,
    pub level: f64,
}

impl Interval {
    pub fn contains(&self, x: f64) -> bool {
        self.low <= x && x <= self.high
    }
}

fn interval(mut estimates: Vec<f64>, level: f64) -> Option<Interval> {
    if estimates.is_empty() {
        return None;
    }
    estimates.sort_by(f64::total_cmp);
    let a = (1.0 - level) / 2.0 * 100.0;
    Some(Interval {
        low: percentile_sorted(&estimates, a)?,
        high: percentile_sorted(&estimates, 100.0 - a)?,
        level,
    })
}

/// Bootstrap interval of `stat` over one sample (e.g. the mean of paired
/// differences): `resamples` draws of n values with replacement.
pub fn bootstrap_one(
    sample: &[f64],
    stat: Statistic,
    resamples: usize,
    level: f64,
    seed: u64,
) -> Option<Interval> {
    if sample.is_empty() {
        return None;
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let n = sample.len();
    let mut scratch = vec![0.0; n];
    let mut est = Vec::with_capacity(resamples);
    for _ in 0..resamples {
        for s in scratch.iter_mut() {
            *s = sample[rng.random_range(0..n)];
        }
        if let Some(v) = stat.of(&mut scratch) {
            est.push(v);
        }
    }
    interval(est, level)
}

/// Bootstrap interval of `stat(b) − stat(a)` for two independent samples,
/// each resampled with replacement within itself.
pub fn bootstrap_two(
    a: &[f64],
    b: &[f64],
    stat: Statistic,
    resamples: usize,
    level: f64,
    seed: u64,
) -> Option<Interval> {
    if a.is_empty() || b.is_empty() {
        return None;
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut sa = vec![0.0; a.len()];
    let mut sb = vec![0.0; b.len()];
    let mut est = Vec::with_capacity(resamples);
    for _ in 0..resamples {
        for s in sa.iter_mut() {
            *s = a[rng.random_range(0..a.len())];
        }
        for s in sb.iter_mut() {
            *s = b[rng.random_range(0..b.len())];
        }
        if let (Some(x), Some(y)) = (stat.of(&mut sa), stat.of(&mut sb)) {
            est.push(y - x);
        }
    }
    interval(est, level)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_interpolate_between_ranks() {
        let v = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(percentile(&v, 0.0), Some(1.0));
        assert_eq!(percentile(&v, 50.0), Some(2.5));
        assert_eq!(percentile(&v, 100.0), Some(4.0));
        assert!((percentile(&v, 95.0).unwrap() - 3.85).abs() < 1e-9);
        assert_eq!(percentile(&[], 50.0), None);
        assert_eq!(percentile(&[7.0], 99.0), Some(7.0));
    }

    #[test]
    fn bootstrap_is_seeded_and_covers_the_mean() {
        let d: Vec<f64> = (0..20).map(|i| -10.0 + (i % 5) as f64 - 2.0).collect();
        let a = bootstrap_one(&d, Statistic::Mean, 2000, 0.95, 7).unwrap();
        let b = bootstrap_one(&d, Statistic::Mean, 2000, 0.95, 7).unwrap();
        assert_eq!(a, b);
        assert!(a.contains(mean(&d).unwrap()), "{a:?}");
        assert!(a.high < 0.0, "{a:?}");
        let zero = bootstrap_one(&[0.0; 6], Statistic::Mean, 500, 0.95, 1).unwrap();
        assert_eq!((zero.low, zero.high), (0.0, 0.0));
    }

    #[test]
    fn two_sample_bootstrap_recovers_a_shift() {
        let a: Vec<f64> = (0..200).map(|i| 100.0 + (i % 17) as f64).collect();
        let b: Vec<f64> = a.iter().map(|x| x - 20.0).collect();
        let ci = bootstrap_two(&a, &b, Statistic::Percentile(95.0), 1000, 0.95, 3).unwrap();
        assert!(ci.contains(-20.0), "{ci:?}");
        assert!(ci.high < 0.0);
    }
}
