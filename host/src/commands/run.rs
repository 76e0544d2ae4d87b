//! `sparkhost run`: resolve the plan, create the run directory, run, finish.
//!
//! Order matters for the evidence: user errors (flags, params, workload) stop
//! before a run directory exists; from the run directory on, every failure is
//! recorded in it and the run is labelled invalid instead of vanishing.

use super::Exit;
use crate::cli::RunArgs;
use crate::results::rundir::RunDir;
use crate::run::{Resolved, RunPlan, execute, finish};

pub async fn run(args: RunArgs) -> anyhow::Result<Exit> {
    if let Some(why) = args.seed_flags.refusal() {
        anyhow::bail!(why);
    }
    let Resolved {
        plan,
        sandbox,
        workload,
        checker,
        client,
        tokens,
    } = RunPlan::resolve(args)?;
    let rd = RunDir::create(&plan.results_root, &plan.run_id)?;
    if let Err(e) = rd.reserve_closing_space() {
        // Nothing was measured: leave no half-made run behind.
        let _ = std::fs::remove_dir_all(rd.path());
        return Err(e.into());
    }
    let outcome = execute::execute(&plan, workload, checker, client, tokens, &rd).await;
    // Whatever happened, the closing documents get the space kept for them.
    rd.release_closing_space();
    let outcome = outcome?;
    let finished = finish::finish(&plan, &rd, outcome).await?;
    drop(sandbox);
    Ok(if finished.validity.is_valid() {
        Exit::Ok
    } else {
        Exit::Invalid
    })
}
