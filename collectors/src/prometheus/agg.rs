//! Explicit aggregation. Each helper's name says what it adds up, so a reader
//! of the results knows whether a number is one series or a sum over workers,
//! models or endpoints.

use std::collections::BTreeMap;

use super::{Exposition, Histogram, Sample};

/// Sum of every series with this sample name, whatever its labels; `None` when
/// there is no such series (absent differs from zero).
pub fn sum_by_name(expo: &Exposition, sample_name: &str) -> Option<f64> {
    let mut it = expo.series(sample_name).peekable();
    it.peek()?;
    Some(it.map(|s| s.value).sum())
}

/// Sums grouped by one label's value; series without the label group under "".
pub fn sum_by_label(expo: &Exposition, sample_name: &str, label: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for s in expo.series(sample_name) {
        *out.entry(s.labels.get(label).unwrap_or("").to_string())
            .or_insert(0.0) += s.value;
    }
    out
}

/// Series with this sample name whose labels include every `(name, value)`.
pub fn select<'a>(
    expo: &'a Exposition,
    sample_name: &'a str,
    want: &'a [(&'a str, &'a str)],
) -> Vec<&'a Sample> {
    expo.series(sample_name)
        .filter(|s| s.labels.matches(want))
        .collect()
}

/// Adds histograms bucket by bucket. Series must share bucket bounds (they do
/// when one exporter registers them); otherwise the sum has no meaning and an
/// error says which differ.
pub fn merge_histograms(hs: &[Histogram]) -> Result<Option<Histogram>, String> {
    let Some(first) = hs.first() else {
        return Ok(None);
    };
    let mut out = Histogram {
        name: first.name.clone(),
        labels: Default::default(),
        buckets: first.buckets.iter().map(|&(le, _)| (le, 0.0)).collect(),
        sum: Some(0.0),
        count: Some(0.0),
    };
    for h in hs {
        if h.buckets.len() != out.buckets.len()
            || h.buckets.iter().zip(&out.buckets).any(|(a, b)| a.0 != b.0)
        {
            return Err(format!(
                "{}: series {{{}}} has different bucket bounds",
                h.name,
                h.labels.key()
            ));
        }
        for (o, b) in out.buckets.iter_mut().zip(&h.buckets) {
            o.1 += b.1;
        }
        out.sum = match (out.sum, h.sum) {
            (Some(a), Some(b)) => Some(a + b),
            _ => None,
        };
        out.count = match (out.count, h.count) {
            (Some(a), Some(b)) => Some(a + b),
            _ => None,
        };
    }
    Ok(Some(out))
}
