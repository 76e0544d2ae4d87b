//! One row per run: the terminal table and `summary.csv` of `sparkhost
//! summarize` (and of `matrix` when it finishes).

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;

use super::rundoc::{KVBM_COUNTERS, RunRecord};
use super::slo::{Slo, goodput_for_run};

/// Fixed columns, in order; replay-phase columns follow.
const FIXED: [&str; 22] = [
    "run_dir",
    "run_id",
    "created_utc",
    "valid",
    "invalid_reason",
    "workload",
    "workload_version",
    "kv_mode",
    "tier_mode",
    "variant_tags",
    "load",
    "requests",
    "error_rate",
    "req_per_s",
    "output_tok_s",
    "ttft_p50_ms",
    "ttft_p95_ms",
    "ttft_p99_ms",
    "itl_p50_ms",
    "tpot_p50_ms",
    "e2e_p95_ms",
    "schedule_lateness_p99_ms",
];

/// Per replay phase, after the KVBM deltas ([`KVBM_COUNTERS`]): disk I/O.
const IO_COLS: [&str; 4] = [
    "disk_read_mib",
    "disk_write_mib",
    "proc_read_mib",
    "proc_write_mib",
];

const GOODPUT_COLS: [&str; 3] = ["slo", "slo_met", "goodput_req_per_s"];

pub struct Table {
    pub header: Vec<String>,
    pub rows: Vec<Vec<String>>,
    /// Replay phases that got columns.
    pub replay_phases: Vec<String>,
}

fn num(x: Option<f64>) -> String {
    match x {
        Some(v) if v.fract() == 0.0 && v.abs() < 1e15 => format!("{v:.0}"),
        Some(v) => format!("{}", (v * 1000.0).round() / 1000.0),
        None => String::new(),
    }
}

/// Builds the table; with `slo`, goodput is computed from each run's rows
/// (a `goodput` already in `summary.json` is used when there is no `slo`).
pub fn table(runs: &[RunRecord], slo: Option<&Slo>) -> Table {
    let replay: BTreeSet<String> = runs
        .iter()
        .flat_map(|r| {
            r.replay_phases()
                .filter(|p| p.kvbm.is_some() || p.io.is_some())
                .map(|p| p.name.clone())
        })
        .collect();
    let any_goodput = slo.is_some() || runs.iter().any(|r| r.goodput.is_some());
    let mut header: Vec<String> = FIXED.iter().map(|s| (*s).to_owned()).collect();
    for ph in &replay {
        for c in KVBM_COUNTERS.iter().chain(&IO_COLS) {
            header.push(format!("{ph}.{c}"));
        }
    }
    if any_goodput {
        header.extend(GOODPUT_COLS.iter().map(|s| (*s).to_owned()));
    }
    let mut rows = Vec::with_capacity(runs.len());
    for r in runs {
        let o = &r.overall;
        let mut row = vec![
            r.dir.display().to_string(),
            r.run_id.clone(),
            r.created_utc.clone(),
            r.valid.to_string(),
            r.invalid_reason.clone().unwrap_or_default(),
            r.workload.clone(),
            r.workload_version.clone(),
            r.kv_mode.clone(),
            r.tier_mode.clone(),
            r.variant_tags.join(" "),
            r.load.clone(),
            o.requests.to_string(),
            num(Some(o.error_rate)),
            num(Some(o.req_per_s)),
            num(Some(o.output_tokens_per_s)),
            num(o.metric("ttft_p50")),
            num(o.metric("ttft_p95")),
            num(o.metric("ttft_p99")),
            num(o.metric("itl_p50")),
            num(o.metric("tpot_p50")),
            num(o.metric("e2e_p95")),
            num(o.metric("schedule_lateness_p99")),
        ];
        for ph in &replay {
            let p = r.phases.iter().find(|p| &p.name == ph);
            let k = p.and_then(|p| p.kvbm.as_ref());
            let io = p.and_then(|p| p.io.as_ref());
            for c in KVBM_COUNTERS {
                row.push(num(k.and_then(|k| k.get(c))));
            }
            row.push(num(io.and_then(|i| i.device_read_mib)));
            row.push(num(io.and_then(|i| i.device_write_mib)));
            row.push(num(io.and_then(|i| i.process_read_mib)));
            row.push(num(io.and_then(|i| i.process_write_mib)));
        }
        if any_goodput {
            let g = match slo {
                Some(s) => goodput_for_run(&r.dir, s)
                    .ok()
                    .and_then(|g| serde_json::to_value(g).ok()),
                None => r
                    .goodput
                    .as_ref()
                    .and_then(|g| serde_json::to_value(g).ok()),
            };
            let f = |k: &str| g.as_ref().and_then(|g| g.get(k)).cloned();
            row.push(
                f("slo")
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default(),
            );
            row.push(f("slo_met").map(|v| v.to_string()).unwrap_or_default());
            row.push(num(f("goodput_req_per_s").and_then(|v| v.as_f64())));
        }
        rows.push(row);
    }
    Table {
        header,
        rows,
        replay_phases: replay.into_iter().collect(),
    }
}

pub fn write_csv(t: &Table, path: &Path) -> anyhow::Result<()> {
    if let Some(d) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    let mut w =
        csv::Writer::from_path(path).with_context(|| format!("writing {}", path.display()))?;
    w.write_record(&t.header)?;
    for r in &t.rows {
        w.write_record(r)?;
    }
    w.flush()?;
    Ok(())
}

/// The terminal view: a narrow selection of the CSV's columns.
pub fn render_text(t: &Table) -> String {
    let mut cols: Vec<(&str, &str)> = vec![
        ("run_id", "run"),
        ("valid", "valid"),
        ("invalid_reason", "reason"),
        ("workload", "workload"),
        ("kv_mode", "kv"),
        ("load", "load"),
        ("ttft_p50_ms", "ttft p50"),
        ("ttft_p95_ms", "ttft p95"),
        ("ttft_p99_ms", "ttft p99"),
        ("itl_p50_ms", "itl p50"),
        ("output_tok_s", "tok/s"),
        ("error_rate", "err rate"),
    ];
    let replay_cols: Vec<(String, String)> = t
        .replay_phases
        .iter()
        .flat_map(|p| {
            [
                ("onboard_blocks_d2d", "d2d"),
                ("matched_tokens", "matched"),
                ("disk_read_mib", "rd MiB"),
                ("disk_write_mib", "wr MiB"),
            ]
            .map(|(c, short)| (format!("{p}.{c}"), format!("{p} {short}")))
        })
        .collect();
    for (c, s) in &replay_cols {
        cols.push((c.as_str(), s.as_str()));
    }
    if t.header.iter().any(|h| h == "slo_met") {
        cols.push(("slo_met", "slo met"));
        cols.push(("goodput_req_per_s", "goodput/s"));
    }
    let idx: Vec<(usize, &str)> = cols
        .iter()
        .filter_map(|(c, s)| t.header.iter().position(|h| h == c).map(|i| (i, *s)))
        .collect();
    let mut widths: Vec<usize> = idx.iter().map(|(_, s)| s.chars().count()).collect();
    for r in &t.rows {
        for (j, (i, _)) in idx.iter().enumerate() {
            widths[j] = widths[j].max(r[*i].chars().count().min(40));
        }
    }
    let mut out = String::new();
    let line = |cells: Vec<String>, out: &mut String| {
        let parts: Vec<String> = cells
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(j, (c, w))| {
                let c: String = c.chars().take(40).collect();
                if j < 6 {
                    format!("{c:<w$}")
                } else {
                    format!("{c:>w$}")
                }
            })
            .collect();
        let _ = writeln!(out, "{}", parts.join("  ").trim_end());
    };
    line(idx.iter().map(|(_, s)| (*s).to_owned()).collect(), &mut out);
    for r in &t.rows {
        line(idx.iter().map(|(i, _)| r[*i].clone()).collect(), &mut out);
    }
    let _ = writeln!(
        out,
        "latencies in ms over the measured phases; {} runs",
        t.rows.len()
    );
    out
}
