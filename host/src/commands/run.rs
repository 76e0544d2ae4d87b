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
    let Resolved {
        plan,
        sandbox,
        workload,
        checker,
        client,
        tokens,
    } = RunPlan::resolve(args)?;
    let rd = RunDir::create(&plan.results_root, &plan.run_id)?;
    let outcome = execute::execute(&plan, workload, checker, client, tokens, &rd).await?;
    let finished = finish::finish(&plan, &rd, outcome).await?;
    drop(sandbox);
    Ok(if finished.validity.is_valid() {
        Exit::Ok
    } else {
        Exit::Invalid
    })
}
