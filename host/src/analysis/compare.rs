//! Paired comparisons between two groups of runs (A = baseline, B =
//! treatment), with bootstrap confidence intervals and an order-effect check.
//!
//! Method (also written into every `compare.json`):
//! - **Pairs.** When every run carries a `pair=<id>` variant tag, runs with
//!   the same id form a pair; otherwise each group is sorted by creation time
//!   and the i-th A run is paired with the i-th B run. Invalid runs and runs
//!   without a partner are left out and listed.
//! - **Differences** are B − A per pair (the seed's phase70 convention), of
//!   each run's own statistic from `summary.json` (TTFT p95 of the run, …).
//! - **Interval.** With N ≥ 2 pairs: the N differences are resampled with
//!   replacement (default 10,000 resamples), the mean difference of each
//!   resample taken, and the 2.5th and 97.5th percentiles of those means form
//!   the 95 % interval (percentile bootstrap; ChaCha8 seeded with `--seed`,
//!   so reruns give the same interval). With one pair, latency percentiles
//!   fall back to resampling requests within each run (`requests.jsonl`),
//!   which says how precisely that one pair was measured, not how much runs
//!   vary; throughput then has no interval.
//! - **Verdict.** A difference is called when its interval excludes 0.
//! - **Order effect.** Each pair's order is `AB` (A ran first) or `BA`, from
//!   an `order=AB|BA` tag or the runs' creation times. If running first adds
//!   e to a run, AB pairs show Δ − e and BA pairs Δ + e, so
//!   e = (mean BA − mean AB) / 2, with an interval from resampling each order
//!   class separately; an interval excluding 0 flags `ORDER_EFFECT_SUSPECT`.
//!   Fewer than 2 pairs of either order: `ORDER_EFFECT_INSUFFICIENT_PAIRS`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::str::FromStr;

use anyhow::bail;
use serde::Serialize;

use super::html;
use super::rundoc::RunRecord;
use super::slo::{SloRow, read_rows};
use super::stats::{Interval, Statistic, bootstrap_one, bootstrap_two, mean};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupBy {
    KvMode,
    TierMode,
    /// A `key=value` variant tag, else the workload param `key`.
    Label(String),
}

impl FromStr for GroupBy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "kv_mode" | "kv-mode" => Ok(GroupBy::KvMode),
            "tier_mode" | "tier-mode" | "tier" => Ok(GroupBy::TierMode),
            _ => match s.strip_prefix("label:") {
                Some(k) if !k.trim().is_empty() => Ok(GroupBy::Label(k.trim().to_owned())),
                _ => Err(format!("{s:?}: group by kv_mode, tier_mode or label:<key>")),
            },
        }
    }
}

impl std::fmt::Display for GroupBy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GroupBy::KvMode => f.write_str("kv_mode"),
            GroupBy::TierMode => f.write_str("tier_mode"),
            GroupBy::Label(k) => write!(f, "label:{k}"),
        }
    }
}

impl GroupBy {
    pub fn value(&self, r: &RunRecord) -> Option<String> {
        let v = match self {
            GroupBy::KvMode => r.kv_mode.clone(),
            GroupBy::TierMode => r.tier_mode.clone(),
            GroupBy::Label(k) => r.label(k)?,
        };
        (!v.is_empty()).then_some(v)
    }

    /// Known baselines come first: no KV tier before CPU before CPU+disk.
    fn rank(&self, v: &str) -> usize {
        let known: &[&str] = match self {
            GroupBy::KvMode => &["off", "cpu_only", "cpu_disk"],
            GroupBy::TierMode => &["B0", "B1", "B2", "B3"],
            GroupBy::Label(_) => &[],
        };
        known.iter().position(|k| *k == v).unwrap_or(known.len())
    }
}

pub const DEFAULT_METRICS: [&str; 8] = [
    "ttft_p50",
    "ttft_p95",
    "ttft_p99",
    "tpot_p50",
    "tpot_p95",
    "tpot_p99",
    "output_tok_s",
    "req_s",
];

#[derive(Debug, Clone)]
pub struct CompareConfig {
    pub group_by: GroupBy,
    pub baseline: Option<String>,
    pub treatment: Option<String>,
    /// A phase name; `None` compares the overall (measured phases) summary.
    pub phase: Option<String>,
    pub metrics: Vec<String>,
    /// The metric the verdict sentence is about.
    pub primary: String,
    pub resamples: usize,
    pub seed: u64,
    pub level: f64,
}

impl Default for CompareConfig {
    fn default() -> Self {
        CompareConfig {
            group_by: GroupBy::KvMode,
            baseline: None,
            treatment: None,
            phase: None,
            metrics: DEFAULT_METRICS.iter().map(|s| (*s).to_owned()).collect(),
            primary: "ttft_p95".into(),
            resamples: 10_000,
            seed: 20_260_210,
            level: 0.95,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Pair {
    pub id: String,
    pub baseline_run: String,
    pub treatment_run: String,
    /// `AB` (baseline ran first), `BA`, or `unknown`.
    pub order: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Excluded {
    pub run: String,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct OrderEffect {
    /// `ok`, `suspect`, `insufficient_pairs` or `not_counterbalanced`.
    pub status: &'static str,
    pub ab_pairs: usize,
    pub ba_pairs: usize,
    pub mean_diff_ab: Option<f64>,
    pub mean_diff_ba: Option<f64>,
    /// How much running first adds to a run: (mean BA − mean AB) / 2.
    pub first_run_penalty: Option<f64>,
    pub ci: Option<Interval>,
}

#[derive(Debug, Clone, Serialize)]
pub struct MetricResult {
    pub metric: String,
    pub label: String,
    pub unit: &'static str,
    pub lower_is_better: bool,
    pub pairs: usize,
    pub baseline_mean: Option<f64>,
    pub treatment_mean: Option<f64>,
    /// Mean of the per-pair differences B − A.
    pub mean_diff: Option<f64>,
    /// `mean_diff` over the baseline mean.
    pub rel_diff: Option<f64>,
    pub ci: Option<Interval>,
    /// `paired_bootstrap`, `request_bootstrap` or `none`.
    pub ci_method: &'static str,
    /// The interval excludes 0.
    pub significant: bool,
    /// `better`, `worse` or `none` for the treatment.
    pub effect: &'static str,
    pub pair_diffs: Vec<Option<f64>>,
    pub order_effect: Option<OrderEffect>,
    pub sentence: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct CompareReport {
    pub group_by: String,
    pub baseline: String,
    pub treatment: String,
    pub phase: String,
    /// `pair_tag` or `creation_order`.
    pub pairing: &'static str,
    pub pairs: Vec<Pair>,
    pub excluded: Vec<Excluded>,
    pub resamples: usize,
    pub seed: u64,
    pub level: f64,
    pub method: String,
    pub primary: String,
    pub metrics: Vec<MetricResult>,
    pub reason_codes: Vec<String>,
    pub verdict: String,
    /// Prompts a later run resent after an earlier one (cache hits that
    /// come from run order); flagged → `PROMPT_REUSED_ACROSS_RUNS`.
    pub prompt_reuse_across_runs: super::reuse::CrossRunReuse,
}

pub fn metric_label(m: &str) -> String {
    match m {
        "output_tok_s" | "tok_s" => "output tok/s".into(),
        "input_tok_s" => "input tok/s".into(),
        "req_s" => "req/s".into(),
        "error_rate" => "error rate".into(),
        _ => match m.rsplit_once('_') {
            Some((base, stat)) => format!("{} {stat}", base.replace('_', " ").to_uppercase()),
            None => m.to_owned(),
        },
    }
}

fn metric_unit(m: &str) -> &'static str {
    match m {
        "output_tok_s" | "tok_s" | "input_tok_s" => "tok/s",
        "req_s" => "req/s",
        "error_rate" | "requests" => "",
        _ => "ms",
    }
}

fn lower_is_better(m: &str) -> bool {
    !matches!(m, "output_tok_s" | "tok_s" | "input_tok_s" | "req_s")
}

/// `12.3`, `0.456`, `1234`: enough digits for a sentence.
pub fn fmt_num(x: f64) -> String {
    let a = x.abs();
    if a >= 100.0 {
        format!("{x:.0}")
    } else if a >= 10.0 {
        format!("{x:.1}")
    } else if a >= 1.0 {
        format!("{x:.2}")
    } else {
        format!("{x:.3}")
    }
}

fn signed(x: f64) -> String {
    if x > 0.0 {
        format!("+{}", fmt_num(x))
    } else {
        fmt_num(x)
    }
}

/// The request-level samples behind a latency metric (`ttft_p95` → TTFT of
/// every successful request of the compared phase).
fn request_samples(run: &RunRecord, metric: &str, phase: Option<&str>) -> Option<(Vec<f64>, f64)> {
    let (base, stat) = metric.rsplit_once('_')?;
    let stat = match stat {
        "mean" => Statistic::Mean,
        s => Statistic::Percentile(match s {
            "p999" | "p99.9" => 99.9,
            s => s.strip_prefix('p')?.parse().ok()?,
        }),
    };
    let included: Vec<String> = match phase {
        Some(p) => vec![p.to_owned()],
        None => run
            .phases
            .iter()
            .filter(|p| p.include)
            .map(|p| p.name.clone())
            .collect(),
    };
    let rows = read_rows(&run.dir.join("requests.jsonl"), &|p| {
        included.iter().any(|i| i == p)
    })
    .ok()?;
    let pick = |r: &SloRow| -> Vec<f64> {
        match base {
            "ttft" => r.ttft_ms.into_iter().collect(),
            "ttfc" => r.ttfc_ms.into_iter().collect(),
            "tpot" => r.tpot_ms.into_iter().collect(),
            "e2e" => r.e2e_ms.into_iter().collect(),
            "itl" => r.itl_ms.clone(),
            _ => Vec::new(),
        }
    };
    let v: Vec<f64> = rows.iter().filter(|r| r.ok).flat_map(pick).collect();
    let p = match stat {
        Statistic::Percentile(p) => p,
        Statistic::Mean => -1.0,
    };
    (!v.is_empty()).then_some((v, p))
}

fn order_of(a: &RunRecord, b: &RunRecord) -> String {
    for r in [a, b] {
        if let Some(o) = r.label("order") {
            let o = o.to_ascii_uppercase();
            if o == "AB" || o == "BA" {
                return o;
            }
        }
    }
    if a.created_utc.is_empty() || b.created_utc.is_empty() {
        return "unknown".into();
    }
    if a.created_utc <= b.created_utc {
        "AB".into()
    } else {
        "BA".into()
    }
}

pub fn compare(runs: &[RunRecord], cfg: &CompareConfig) -> anyhow::Result<CompareReport> {
    let mut groups: BTreeMap<String, Vec<&RunRecord>> = BTreeMap::new();
    let mut excluded = Vec::new();
    for r in runs {
        match cfg.group_by.value(r) {
            Some(g) => groups.entry(g).or_default().push(r),
            None => excluded.push(Excluded {
                run: r.dir.display().to_string(),
                reason: format!("no value for {}", cfg.group_by),
            }),
        }
    }
    let mut names: Vec<String> = groups.keys().cloned().collect();
    names.sort_by_key(|n| (cfg.group_by.rank(n), n.clone()));
    let (baseline, treatment) = match (&cfg.baseline, &cfg.treatment) {
        (Some(a), Some(b)) => (a.clone(), b.clone()),
        (Some(a), None) => {
            let others: Vec<&String> = names.iter().filter(|n| *n != a).collect();
            if others.len() != 1 {
                bail!(
                    "with --baseline {a}, exactly one other group is needed; found {names:?} (pick one with --treatment)"
                );
            }
            (a.clone(), others[0].clone())
        }
        (None, Some(b)) => {
            let others: Vec<&String> = names.iter().filter(|n| *n != b).collect();
            if others.len() != 1 {
                bail!(
                    "with --treatment {b}, exactly one other group is needed; found {names:?} (pick one with --baseline)"
                );
            }
            (others[0].clone(), b.clone())
        }
        (None, None) => {
            if names.len() != 2 {
                bail!(
                    "grouping by {} gives {} groups {names:?}; compare needs exactly two (or --baseline and --treatment)",
                    cfg.group_by,
                    names.len()
                );
            }
            (names[0].clone(), names[1].clone())
        }
    };
    for (g, what) in [(&baseline, "baseline"), (&treatment, "treatment")] {
        if !groups.contains_key(g) {
            bail!(
                "no run has {} = {g:?} (the {what}); groups found: {names:?}",
                cfg.group_by
            );
        }
    }
    for (g, rs) in &groups {
        if g != &baseline && g != &treatment {
            for r in rs {
                excluded.push(Excluded {
                    run: r.dir.display().to_string(),
                    reason: format!("in group {g:?}, neither baseline nor treatment"),
                });
            }
        }
    }
    let mut pick = |g: &str| -> Vec<&RunRecord> {
        let mut v: Vec<&RunRecord> = Vec::new();
        for r in &groups[g] {
            if r.valid {
                v.push(r);
            } else {
                excluded.push(Excluded {
                    run: r.dir.display().to_string(),
                    reason: format!(
                        "invalid run ({})",
                        r.invalid_reason.as_deref().unwrap_or("unknown reason")
                    ),
                });
            }
        }
        v.sort_by(|a, b| (&a.created_utc, &a.run_id).cmp(&(&b.created_utc, &b.run_id)));
        v
    };
    let a_runs = pick(&baseline);
    let b_runs = pick(&treatment);
    let invalid_excluded = excluded.iter().any(|e| e.reason.starts_with("invalid"));

    let tagged = a_runs
        .iter()
        .chain(&b_runs)
        .all(|r| r.label("pair").is_some())
        && !a_runs.is_empty();
    let mut pairs_runs: Vec<(String, &RunRecord, &RunRecord)> = Vec::new();
    let mut unpaired = false;
    if tagged {
        let mut by_id: BTreeMap<String, (Vec<&RunRecord>, Vec<&RunRecord>)> = BTreeMap::new();
        for r in &a_runs {
            by_id
                .entry(r.label("pair").unwrap_or_default())
                .or_default()
                .0
                .push(r);
        }
        for r in &b_runs {
            by_id
                .entry(r.label("pair").unwrap_or_default())
                .or_default()
                .1
                .push(r);
        }
        for (id, (a, b)) in by_id {
            if a.len() == 1 && b.len() == 1 {
                pairs_runs.push((id, a[0], b[0]));
            } else {
                unpaired = true;
                for r in a.iter().chain(&b) {
                    excluded.push(Excluded {
                        run: r.dir.display().to_string(),
                        reason: format!(
                            "pair {id:?} has {} baseline and {} treatment runs",
                            a.len(),
                            b.len()
                        ),
                    });
                }
            }
        }
    } else {
        let n = a_runs.len().min(b_runs.len());
        for i in 0..n {
            pairs_runs.push(((i + 1).to_string(), a_runs[i], b_runs[i]));
        }
        for r in a_runs.iter().skip(n).chain(b_runs.iter().skip(n)) {
            unpaired = true;
            excluded.push(Excluded {
                run: r.dir.display().to_string(),
                reason: "no partner run in the other group".into(),
            });
        }
    }
    let pairs: Vec<Pair> = pairs_runs
        .iter()
        .map(|(id, a, b)| Pair {
            id: id.clone(),
            baseline_run: a.dir.display().to_string(),
            treatment_run: b.dir.display().to_string(),
            order: order_of(a, b),
        })
        .collect();
    let phase = cfg.phase.as_deref();
    let phase_label = phase.unwrap_or("overall").to_owned();
    let n = pairs.len();

    let mut metrics = Vec::new();
    for (mi, m) in cfg.metrics.iter().enumerate() {
        let seed = cfg.seed.wrapping_add(mi as u64 * 1_000_003);
        let vals: Vec<(Option<f64>, Option<f64>)> = pairs_runs
            .iter()
            .map(|(_, a, b)| {
                (
                    a.phase(phase).and_then(|p| p.metric(m)),
                    b.phase(phase).and_then(|p| p.metric(m)),
                )
            })
            .collect();
        let pair_diffs: Vec<Option<f64>> = vals.iter().map(|(a, b)| Some((*b)? - (*a)?)).collect();
        let diffs: Vec<f64> = pair_diffs.iter().flatten().copied().collect();
        let a_vals: Vec<f64> = vals.iter().filter_map(|v| v.0).collect();
        let b_vals: Vec<f64> = vals.iter().filter_map(|v| v.1).collect();
        let mean_diff = mean(&diffs);
        let baseline_mean = mean(&a_vals);
        let rel_diff = match (mean_diff, baseline_mean) {
            (Some(d), Some(a)) if a != 0.0 => Some(d / a),
            _ => None,
        };
        let (ci, ci_method) = if diffs.len() >= 2 {
            (
                bootstrap_one(&diffs, Statistic::Mean, cfg.resamples, cfg.level, seed),
                "paired_bootstrap",
            )
        } else if diffs.len() == 1 {
            let (_, a, b) = &pairs_runs[0];
            match (request_samples(a, m, phase), request_samples(b, m, phase)) {
                (Some((sa, p)), Some((sb, _))) => {
                    let stat = if p < 0.0 {
                        Statistic::Mean
                    } else {
                        Statistic::Percentile(p)
                    };
                    (
                        bootstrap_two(&sa, &sb, stat, cfg.resamples, cfg.level, seed),
                        "request_bootstrap",
                    )
                }
                _ => (None, "none"),
            }
        } else {
            (None, "none")
        };
        let significant = ci.is_some_and(|c| !c.contains(0.0));
        let lib = lower_is_better(m);
        let effect = match (significant, mean_diff) {
            (true, Some(d)) if (d < 0.0) == lib => "better",
            (true, Some(_)) => "worse",
            _ => "none",
        };
        let order_effect =
            order_effect(&pairs, &pair_diffs, cfg.resamples, cfg.level, seed ^ 0x5eed);
        let mut r = MetricResult {
            metric: m.clone(),
            label: metric_label(m),
            unit: metric_unit(m),
            lower_is_better: lib,
            pairs: diffs.len(),
            baseline_mean,
            treatment_mean: mean(&b_vals),
            mean_diff,
            rel_diff,
            ci,
            ci_method,
            significant,
            effect,
            pair_diffs,
            order_effect,
            sentence: String::new(),
        };
        r.sentence = sentence(&r, &baseline, &treatment, phase);
        metrics.push(r);
    }

    let mut reason_codes: Vec<String> = Vec::new();
    if n < 2 {
        reason_codes.push("INSUFFICIENT_PAIRS".into());
    }
    if pairs_runs
        .iter()
        .any(|(_, a, b)| a.overall.errors > 0 || b.overall.errors > 0)
    {
        reason_codes.push("RUN_ERRORS_PRESENT".into());
    }
    if invalid_excluded {
        reason_codes.push("INVALID_RUNS_EXCLUDED".into());
    }
    if unpaired {
        reason_codes.push("UNPAIRED_RUNS_EXCLUDED".into());
    }
    let reuse = super::reuse::cross_run_prompt_reuse(runs);
    if reuse.flagged {
        reason_codes.push(super::reuse::PROMPT_REUSED_ACROSS_RUNS.into());
    }
    let primary = metrics
        .iter()
        .find(|r| r.metric == cfg.primary)
        .or(metrics.first());
    if let Some(oe) = primary.and_then(|p| p.order_effect.as_ref()) {
        match oe.status {
            "suspect" => reason_codes.push("ORDER_EFFECT_SUSPECT".into()),
            "insufficient_pairs" => reason_codes.push("ORDER_EFFECT_INSUFFICIENT_PAIRS".into()),
            "not_counterbalanced" => reason_codes.push("ORDER_NOT_COUNTERBALANCED".into()),
            _ => {}
        }
    }
    let mut verdict = primary
        .map(|p| p.sentence.clone())
        .unwrap_or_else(|| "No metric to compare.".into());
    if let Some(oe) = primary.and_then(|p| p.order_effect.as_ref())
        && oe.status == "suspect"
        && let (Some(e), Some(ci)) = (oe.first_run_penalty, oe.ci)
    {
        let unit = primary.map(|p| p.unit).unwrap_or("");
        let _ = write!(
            verdict,
            " Order effect suspected: the first run of a pair is {} {unit} {} ({}% CI [{}, {}]); the AB/BA balance ({} AB, {} BA) decides how much of it cancels.",
            fmt_num(e.abs()),
            if e > 0.0 { "slower" } else { "faster" },
            (ci.level * 100.0).round(),
            fmt_num(ci.low),
            fmt_num(ci.high),
            oe.ab_pairs,
            oe.ba_pairs
        );
    }
    let method = format!(
        "B − A per pair ({}); mean of pair differences with a {}% percentile-bootstrap interval from {} resamples of the pairs (ChaCha8, seed {}); with one pair, latency percentiles resample requests within each run instead; order effect (mean BA − mean AB)/2 with each order class resampled separately",
        if tagged {
            "pairs from `pair=` tags"
        } else {
            "pairs by creation order within each group"
        },
        (cfg.level * 100.0).round(),
        cfg.resamples,
        cfg.seed
    );
    Ok(CompareReport {
        group_by: cfg.group_by.to_string(),
        baseline,
        treatment,
        phase: phase_label,
        pairing: if tagged { "pair_tag" } else { "creation_order" },
        pairs,
        excluded,
        resamples: cfg.resamples,
        seed: cfg.seed,
        level: cfg.level,
        method,
        primary: cfg.primary.clone(),
        metrics,
        reason_codes,
        verdict,
        prompt_reuse_across_runs: reuse,
    })
}

fn order_effect(
    pairs: &[Pair],
    diffs: &[Option<f64>],
    resamples: usize,
    level: f64,
    seed: u64,
) -> Option<OrderEffect> {
    let mut ab = Vec::new();
    let mut ba = Vec::new();
    for (p, d) in pairs.iter().zip(diffs) {
        match (p.order.as_str(), d) {
            ("AB", Some(d)) => ab.push(*d),
            ("BA", Some(d)) => ba.push(*d),
            _ => {}
        }
    }
    if ab.is_empty() && ba.is_empty() {
        return None;
    }
    let mut oe = OrderEffect {
        status: "ok",
        ab_pairs: ab.len(),
        ba_pairs: ba.len(),
        mean_diff_ab: mean(&ab),
        mean_diff_ba: mean(&ba),
        first_run_penalty: None,
        ci: None,
    };
    if ab.is_empty() || ba.is_empty() {
        oe.status = "not_counterbalanced";
        return Some(oe);
    }
    oe.first_run_penalty = Some((mean(&ba)? - mean(&ab)?) / 2.0);
    if ab.len() < 2 || ba.len() < 2 {
        oe.status = "insufficient_pairs";
        return Some(oe);
    }
    oe.ci = bootstrap_two(&ab, &ba, Statistic::Mean, resamples, level, seed).map(|c| Interval {
        low: c.low / 2.0,
        high: c.high / 2.0,
        level: c.level,
    });
    if oe.ci.is_some_and(|c| !c.contains(0.0)) {
        oe.status = "suspect";
    }
    Some(oe)
}

fn sentence(r: &MetricResult, a: &str, b: &str, phase: Option<&str>) -> String {
    let what = match phase {
        Some(p) => format!("{p} {}", r.label),
        None => r.label.clone(),
    };
    let unit = if r.unit.is_empty() {
        String::new()
    } else {
        format!(" {}", r.unit)
    };
    let pairs = match r.pairs {
        1 => "1 pair".to_owned(),
        n => format!("{n} pairs"),
    };
    let Some(d) = r.mean_diff else {
        return format!("{what}: no pair has this metric in both runs.");
    };
    let rel = r
        .rel_diff
        .map(|x| format!(" ({}%)", signed(x * 100.0)))
        .unwrap_or_default();
    if r.pair_diffs.iter().flatten().all(|x| *x == 0.0) {
        return format!("No difference in {what} between {b} and {a}: identical in all {pairs}.");
    }
    let Some(ci) = r.ci else {
        return format!(
            "{b} vs {a}, {what}: {}{unit}{rel} from {pairs}; no confidence interval (needs at least 2 pairs, or per-request data for a latency percentile).",
            signed(d)
        );
    };
    let ci_text = format!(
        "{}% CI [{}, {}]{unit}",
        (ci.level * 100.0).round(),
        fmt_num(ci.low),
        fmt_num(ci.high)
    );
    let basis = if r.ci_method == "request_bootstrap" {
        format!("{pairs}, interval from resampling requests")
    } else {
        pairs
    };
    if r.significant {
        let verb = if d < 0.0 { "lowers" } else { "raises" };
        format!(
            "{b} {verb} {what} by {}{unit}{rel} vs {a}, {ci_text}, {basis}.",
            fmt_num(d.abs())
        )
    } else {
        format!(
            "No clear difference in {what} between {b} and {a}: {}{unit}{rel}, {ci_text} includes 0, {basis}.",
            signed(d)
        )
    }
}

/// The terminal form of a report.
pub fn render_text(r: &CompareReport) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "compare {}: baseline {} vs treatment {}, phase {}, {} pairs ({})",
        r.group_by,
        r.baseline,
        r.treatment,
        r.phase,
        r.pairs.len(),
        r.pairing
    );
    let _ = writeln!(
        s,
        "{:<16} {:>12} {:>12} {:>12} {:>9} {:>24}  verdict",
        "metric", "A mean", "B mean", "B − A", "rel", "CI"
    );
    let o = |x: Option<f64>| x.map(fmt_num).unwrap_or_else(|| "-".into());
    for m in &r.metrics {
        let ci =
            m.ci.map(|c| format!("[{}, {}]", fmt_num(c.low), fmt_num(c.high)))
                .unwrap_or_else(|| "-".into());
        let _ = writeln!(
            s,
            "{:<16} {:>12} {:>12} {:>12} {:>9} {:>24}  {}",
            m.label,
            o(m.baseline_mean),
            o(m.treatment_mean),
            m.mean_diff.map(signed).unwrap_or_else(|| "-".into()),
            m.rel_diff
                .map(|x| format!("{}%", signed(x * 100.0)))
                .unwrap_or_else(|| "-".into()),
            ci,
            match (m.ci.is_some(), m.significant, m.effect) {
                (false, _, _) => "no interval",
                (true, true, e) => e,
                (true, false, _) => "no clear difference",
            }
        );
    }
    for e in &r.excluded {
        let _ = writeln!(s, "excluded {}: {}", e.run, e.reason);
    }
    if !r.reason_codes.is_empty() {
        let _ = writeln!(s, "reason codes: {}", r.reason_codes.join(", "));
    }
    if r.prompt_reuse_across_runs.flagged {
        let _ = writeln!(s, "prompt reuse: {}", r.prompt_reuse_across_runs.note);
    }
    let _ = writeln!(s, "verdict: {}", r.verdict);
    s
}

/// A self-contained page: verdict, table, forest plot of relative
/// differences with their intervals, and per-pair values of each metric.
pub fn render_html(r: &CompareReport) -> String {
    let e = html::escape;
    let mut s = String::new();
    let title = format!(
        "sparkhost compare: {} vs {} ({})",
        r.treatment, r.baseline, r.group_by
    );
    s.push_str(&html::page_head(&title));
    let _ = write!(
        s,
        "<h1>{}</h1><p class=\"verdict\" id=\"verdict\">{}</p>",
        e(&title),
        e(&r.verdict)
    );
    let _ = write!(
        s,
        "<p>Phase <b>{}</b>; {} pairs ({}); {} resamples; seed {}.</p>",
        e(&r.phase),
        r.pairs.len(),
        e(r.pairing),
        r.resamples,
        r.seed
    );
    if !r.reason_codes.is_empty() {
        let _ = write!(
            s,
            "<p class=\"codes\">Reason codes: {}</p>",
            e(&r.reason_codes.join(", "))
        );
    }
    s.push_str("<h2>Differences (B − A)</h2><table id=\"metrics\"><tr><th>metric</th><th>A mean</th><th>B mean</th><th>B − A</th><th>relative</th><th>CI</th><th>order effect</th><th>verdict</th></tr>");
    let o = |x: Option<f64>| x.map(fmt_num).unwrap_or_else(|| "–".into());
    for m in &r.metrics {
        let _ = write!(
            s,
            "<tr data-metric=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            e(&m.metric),
            e(&m.label),
            o(m.baseline_mean),
            o(m.treatment_mean),
            m.mean_diff.map(signed).unwrap_or_else(|| "–".into()),
            m.rel_diff
                .map(|x| format!("{}%", signed(x * 100.0)))
                .unwrap_or_else(|| "–".into()),
            m.ci.map(|c| format!("[{}, {}]", fmt_num(c.low), fmt_num(c.high)))
                .unwrap_or_else(|| "–".into()),
            m.order_effect
                .as_ref()
                .map(|oe| e(oe.status))
                .unwrap_or_else(|| "–".into()),
            e(&m.sentence)
        );
    }
    s.push_str("</table>");
    s.push_str("<h2>Relative difference with interval</h2>");
    let rows: Vec<html::ForestRow> = r
        .metrics
        .iter()
        .filter_map(|m| {
            let base = m.baseline_mean.filter(|b| *b != 0.0)?;
            Some(html::ForestRow {
                label: m.label.clone(),
                value: m.mean_diff? / base * 100.0,
                low: m.ci.map(|c| c.low / base * 100.0),
                high: m.ci.map(|c| c.high / base * 100.0),
                good: m.effect == "better",
                bad: m.effect == "worse",
            })
        })
        .collect();
    s.push_str(&html::forest_plot("forest", &rows, "% change of B vs A"));
    s.push_str("<h2>Per pair</h2><table id=\"pairs\"><tr><th>pair</th><th>order</th><th>baseline run</th><th>treatment run</th>");
    for m in &r.metrics {
        let _ = write!(s, "<th>{} B − A</th>", e(&m.label));
    }
    s.push_str("</tr>");
    for (i, p) in r.pairs.iter().enumerate() {
        let _ = write!(
            s,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td>",
            e(&p.id),
            e(&p.order),
            e(&p.baseline_run),
            e(&p.treatment_run)
        );
        for m in &r.metrics {
            let _ = write!(
                s,
                "<td>{}</td>",
                m.pair_diffs
                    .get(i)
                    .copied()
                    .flatten()
                    .map(signed)
                    .unwrap_or_else(|| "–".into())
            );
        }
        s.push_str("</tr>");
    }
    s.push_str("</table>");
    if !r.excluded.is_empty() {
        s.push_str("<h2>Left out</h2><ul>");
        for x in &r.excluded {
            let _ = write!(s, "<li>{}: {}</li>", e(&x.run), e(&x.reason));
        }
        s.push_str("</ul>");
    }
    let _ = write!(s, "<h2>Method</h2><p>{}</p>", e(&r.method));
    s.push_str("</body></html>\n");
    s
}
