//! `sparkhost recover`: a killed run's closing documents, from its rows.

use super::Exit;
use crate::cli::RecoverArgs;
use crate::run::recover::{RecoverOptions, recover as rebuild};

pub fn recover(args: RecoverArgs) -> anyhow::Result<Exit> {
    let opts = RecoverOptions {
        force: args.force,
        no_report: args.no_report,
        quiet: args.quiet,
        cache_dir: args.cache_dir,
    };
    let (finished, read) = rebuild(&args.run_dir, &opts)?;
    eprintln!(
        "recovered {}: {} rows, {} torn, {} unreadable; labelled {}",
        args.run_dir.display(),
        read.rows,
        read.torn,
        read.unreadable,
        finished
            .validity
            .invalid_reason
            .map_or("valid", |r| r.as_str())
    );
    // A recovered run is interrupted, so never valid: exit 2, as the run
    // itself would have.
    Ok(if finished.validity.is_valid() {
        Exit::Ok
    } else {
        Exit::Invalid
    })
}
