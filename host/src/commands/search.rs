//! `sparkhost search`: the highest concurrency (or rate) whose run meets the
//! SLOs, by bracketing and bisection; every run is kept under the results
//! root with `search.json` (each step, its checks and the answer) and
//! `summary.csv`.
//!
//! A step passes when its run is valid and every SLO check holds
//! ([`crate::analysis::slo::goodput_for_run`]). Exit status: 0 when a load
//! meeting the SLOs was found, 2 when none was, 1 when a run could not be
//! made at all (bad flags or workload).

use std::path::PathBuf;
use std::sync::atomic::Ordering;

use anyhow::{Context, bail};
use serde::Serialize;

use super::Exit;
use crate::analysis::launch::{RunLaunch, interrupt_flag, launch, sparkhost_exe};
use crate::analysis::rundoc::RunRecord;
use crate::analysis::search::{Axis, Outcome, SearchPlan, Searcher};
use crate::analysis::slo::{GoodputSummary, goodput_for_run};
use crate::analysis::summarize::{render_text, table, write_csv};
use crate::cli::{SearchArgs, SearchAxis};

#[derive(Debug, Serialize)]
struct Step {
    step: usize,
    value: f64,
    run_dir: String,
    exit_code: Option<i32>,
    valid: bool,
    invalid_reason: Option<String>,
    pass: bool,
    goodput: Option<GoodputSummary>,
}

#[derive(Debug, Serialize)]
struct SearchReport {
    workload: String,
    axis: Axis,
    slo: String,
    plan: serde_json::Value,
    run_args: Vec<String>,
    steps: Vec<Step>,
    outcome: Option<Outcome>,
    /// Highest load that met the SLOs.
    best: Option<f64>,
    /// Lowest load that did not.
    first_failing: Option<f64>,
    verdict: String,
}

fn fmt_value(axis: Axis, v: f64) -> String {
    match axis {
        Axis::Concurrency => format!("{v:.0}"),
        Axis::Rate => format!("{v}"),
    }
}

pub async fn search(args: SearchArgs) -> anyhow::Result<Exit> {
    for a in &args.run_args {
        for r in [
            "--concurrency",
            "-c",
            "--rate",
            "--results-root",
            "--run-id",
        ] {
            if a == r || a.starts_with(&format!("{r}=")) {
                bail!("{a} is set by the search itself; leave it out of the run flags");
            }
        }
    }
    // An oci:// workload is resolved by each run (give `--plain-http` after `--`).
    let is_oci = args.workload.to_str().is_some_and(crate::share::is_oci);
    if !is_oci && !args.workload.is_file() {
        bail!("workload {} does not exist", args.workload.display());
    }
    let axis = match args.axis {
        SearchAxis::Concurrency => Axis::Concurrency,
        SearchAxis::Rate => Axis::Rate,
    };
    if !(args.min > 0.0 && args.min <= args.start && args.start <= args.max && args.factor > 1.0) {
        bail!("need 0 < --min <= --start <= --max and --factor > 1");
    }
    let plan = SearchPlan {
        axis,
        min: args.min,
        max: args.max,
        start: args.start,
        factor: args.factor,
        tolerance: args.tolerance.unwrap_or(match axis {
            Axis::Concurrency => 1.0,
            Axis::Rate => 0.05,
        }),
        max_runs: args.max_runs.max(1),
    };
    let root: PathBuf = args.results_root.clone().unwrap_or_else(|| {
        PathBuf::from("bench/search").join(chrono::Utc::now().format("%Y%m%dT%H%M%SZ").to_string())
    });
    std::fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
    let exe = sparkhost_exe()?;
    let interrupted = interrupt_flag();
    let mut searcher = Searcher::new(plan);
    let mut report = SearchReport {
        workload: args.workload.display().to_string(),
        axis,
        slo: args.slo.to_string(),
        plan: serde_json::json!({
            "min": plan.min, "max": plan.max, "start": plan.start,
            "factor": plan.factor, "tolerance": plan.tolerance, "max_runs": plan.max_runs,
        }),
        run_args: args.run_args.clone(),
        steps: Vec::new(),
        outcome: None,
        best: None,
        first_failing: None,
        verdict: String::new(),
    };
    let write = |r: &SearchReport| -> anyhow::Result<()> {
        let mut b = serde_json::to_vec_pretty(r)?;
        b.push(b'\n');
        let p = root.join("search.json");
        std::fs::write(&p, b).with_context(|| format!("writing {}", p.display()))
    };
    println!(
        "search: {} meeting {} (runs under {})",
        match axis {
            Axis::Concurrency => "highest concurrency",
            Axis::Rate => "highest rate",
        },
        args.slo,
        root.display()
    );
    while let Some(v) = searcher.next() {
        if interrupted.load(Ordering::SeqCst) {
            break;
        }
        let step = report.steps.len() + 1;
        let vs = fmt_value(axis, v);
        let (flag, tag) = match axis {
            Axis::Concurrency => ("--concurrency", "c"),
            Axis::Rate => ("--rate", "r"),
        };
        let mut run_args = vec![flag.to_owned(), vs.clone()];
        run_args.extend(args.run_args.iter().cloned());
        run_args.extend(["--variant-tag".to_owned(), format!("search_step={step}")]);
        let mut run_id = format!("step{step:02}-{tag}{vs}");
        let mut k = 1;
        while root.join(&run_id).exists() {
            k += 1;
            run_id = format!("step{step:02}-{tag}{vs}-{k}");
        }
        let l = RunLaunch {
            workload: args.workload.clone(),
            results_root: root.clone(),
            run_id,
            args: run_args,
        };
        let exe2 = exe.clone();
        let l2 = l.clone();
        let out = tokio::task::spawn_blocking(move || launch(&exe2, &l2))
            .await
            .context("the run launcher panicked")??;
        if !out.has_summary {
            write(&report)?;
            bail!(
                "the run at {axis:?} {vs} failed before producing results (exit {:?}):\n{}",
                out.exit_code,
                out.stderr_tail
            );
        }
        let rec = RunRecord::load(&out.run_dir)?;
        if rec.invalid_reason.as_deref() == Some("interrupted") {
            interrupted.store(true, Ordering::SeqCst);
            break;
        }
        let g = goodput_for_run(&out.run_dir, &args.slo).ok();
        let pass = rec.valid && g.as_ref().is_some_and(|g| g.slo_met);
        searcher.record(v, pass);
        let checks = g
            .as_ref()
            .map(|g| {
                g.checks
                    .iter()
                    .map(|c| {
                        format!(
                            "{} {}{}",
                            c.name,
                            c.observed
                                .map(|o| format!("{o}"))
                                .unwrap_or_else(|| "-".into()),
                            match (c.applicable, c.pass) {
                                (false, _) => " n/a",
                                (true, true) => "",
                                (true, false) => " ✗",
                            }
                        )
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default();
        println!(
            "step {step:>2}: {tag}={vs:<8} {}  {}{}",
            if pass { "meets" } else { "misses" },
            checks,
            rec.invalid_reason
                .as_ref()
                .map(|r| format!(" (invalid: {r})"))
                .unwrap_or_default()
        );
        report.steps.push(Step {
            step,
            value: v,
            run_dir: out.run_dir.display().to_string(),
            exit_code: out.exit_code,
            valid: rec.valid,
            invalid_reason: rec.invalid_reason.clone(),
            pass,
            goodput: g,
        });
        write(&report)?;
    }
    let outcome = if interrupted.load(Ordering::SeqCst) {
        None
    } else {
        Some(searcher.outcome())
    };
    report.outcome = outcome;
    report.best = searcher.lo;
    report.first_failing = searcher.hi;
    let what = match axis {
        Axis::Concurrency => "concurrency",
        Axis::Rate => "rate (req/s)",
    };
    let n = report.steps.len();
    report.verdict = match (outcome, searcher.lo, searcher.hi) {
        (None, _, _) => format!("interrupted after {n} runs"),
        (Some(Outcome::NoneMeets), _, _) => format!(
            "no {what} meets {}: even {} misses ({n} runs)",
            args.slo,
            fmt_value(axis, plan.min)
        ),
        (Some(Outcome::MaxMeets), _, _) => format!(
            "{what} {} (the maximum searched) meets {}; raise --max to look further ({n} runs)",
            fmt_value(axis, plan.max),
            args.slo
        ),
        (Some(o), Some(lo), hi) => format!(
            "highest {what} meeting {}: {}{}{} ({n} runs)",
            args.slo,
            fmt_value(axis, lo),
            hi.map(|h| format!("; {} misses", fmt_value(axis, h)))
                .unwrap_or_default(),
            if o == Outcome::BudgetExhausted {
                "; the run budget ran out before the bracket closed"
            } else {
                ""
            }
        ),
        (Some(_), None, _) => format!("no {what} meeting {} found in {n} runs", args.slo),
    };
    write(&report)?;
    let runs: Vec<RunRecord> = report
        .steps
        .iter()
        .filter_map(|s| RunRecord::load(std::path::Path::new(&s.run_dir)).ok())
        .collect();
    if !runs.is_empty() {
        let t = table(&runs, Some(&args.slo));
        write_csv(&t, &root.join("summary.csv"))?;
    }
    println!("{}", report.verdict);
    println!("evidence: {}", root.join("search.json").display());
    if !runs.is_empty() && std::env::var_os("SPARKHOST_SEARCH_TABLE").is_some() {
        print!("{}", render_text(&table(&runs, Some(&args.slo))));
    }
    Ok(if searcher.lo.is_some() && outcome.is_some() {
        Exit::Ok
    } else {
        Exit::Invalid
    })
}
