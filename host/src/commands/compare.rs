//! `sparkhost compare`: paired differences between two groups of runs;
//! writes `compare.json` and `compare.html` into `--out`.

use anyhow::{Context, bail};

use super::Exit;
use crate::analysis::compare::{
    CompareConfig, DEFAULT_METRICS, compare as run_compare, render_html, render_text,
};
use crate::analysis::rundoc::load_all;
use crate::cli::CompareArgs;

pub fn compare(args: CompareArgs) -> anyhow::Result<Exit> {
    if !(0.5..1.0).contains(&args.level) {
        bail!("--level must be in [0.5, 1), e.g. 0.95");
    }
    if args.resamples < 100 {
        bail!("--resamples must be at least 100");
    }
    let runs = load_all(&args.runs)?;
    if runs.is_empty() {
        bail!(
            "no run directory (one with summary.json) found in {:?}",
            args.runs
        );
    }
    let cfg = CompareConfig {
        group_by: args.group_by.clone(),
        baseline: args.baseline.clone(),
        treatment: args.treatment.clone(),
        phase: args.phase.clone(),
        metrics: if args.metrics.is_empty() {
            DEFAULT_METRICS.iter().map(|s| (*s).to_owned()).collect()
        } else {
            args.metrics.clone()
        },
        primary: args.primary.clone(),
        resamples: args.resamples,
        seed: args.seed,
        level: args.level,
    };
    let report = run_compare(&runs, &cfg)?;
    print!("{}", render_text(&report));
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let json_path = args.out.join("compare.json");
    let mut bytes = serde_json::to_vec_pretty(&report)?;
    bytes.push(b'\n');
    std::fs::write(&json_path, bytes)
        .with_context(|| format!("writing {}", json_path.display()))?;
    let html_path = args.out.join("compare.html");
    std::fs::write(&html_path, render_html(&report))
        .with_context(|| format!("writing {}", html_path.display()))?;
    println!("wrote {} and {}", json_path.display(), html_path.display());
    Ok(Exit::Ok)
}
