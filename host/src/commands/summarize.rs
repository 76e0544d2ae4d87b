//! `sparkhost summarize`: one row per run as a terminal table, and
//! `summary.csv` in `--out` (the current directory by default).

use anyhow::bail;

use super::Exit;
use crate::analysis::rundoc::load_all;
use crate::analysis::summarize::{render_text, table, write_csv};
use crate::cli::SummarizeArgs;

pub fn summarize(args: SummarizeArgs) -> anyhow::Result<Exit> {
    let runs = load_all(&args.runs)?;
    if runs.is_empty() {
        bail!(
            "no run directory (one with summary.json) found in {:?}",
            args.runs
        );
    }
    let t = table(&runs, args.slo.as_ref());
    print!("{}", render_text(&t));
    if !args.no_csv {
        let path = args.out.join("summary.csv");
        write_csv(&t, &path)?;
        println!("wrote {}", path.display());
    }
    Ok(Exit::Ok)
}
