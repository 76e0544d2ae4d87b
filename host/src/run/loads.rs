//! Which load each phase runs, and why: the rule that keeps `--concurrency`
//! and `--rate` from silently doing nothing.
//!
//! 1. A phase that leaves its load to the command line (`load: none`) runs
//!    at the flag's load, or at the default (closed loop, 1) without one.
//! 2. A workload that takes its loads from a `concurrency` param (its phases
//!    derive their own closed-loop loads from it, as the seed's scenarios
//!    took every concurrency from the global flag) gets `--concurrency` as
//!    that param; its phases' loads are the ones it then declares.
//! 3. Any other phase with a load of its own refuses a load flag, naming the
//!    phase, unless `--override-phase-loads` replaces every phase's load.
//!
//! Pure, so the rule is unit-tested without a workload.

use crate::dispatch::runner::PhaseRun;
use crate::plan::{LoadModel, PhasePlan};
pub use crate::results::documents::LoadSource;

/// The param a workload declares when its phase loads follow `--concurrency`.
pub const CONCURRENCY_PARAM: &str = "concurrency";

/// What the command line asked for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LoadFlags {
    /// `--concurrency`/`--rate` as given; `None` when neither was.
    pub given: Option<LoadModel>,
    /// Used when nothing was given.
    pub default: LoadModel,
    pub override_phase_loads: bool,
    /// The workload declares a [`CONCURRENCY_PARAM`] param.
    pub has_concurrency_param: bool,
}

impl LoadFlags {
    /// The value `--concurrency` hands to the workload's `concurrency`
    /// param: a closed-loop flag and such a param, without
    /// `--override-phase-loads` (which takes the loads away from it).
    pub fn param_value(&self) -> Option<u32> {
        match self.given {
            Some(LoadModel::Closed { concurrency })
                if !self.override_phase_loads && self.has_concurrency_param =>
            {
                Some(concurrency)
            }
            _ => None,
        }
    }
}

/// One load per phase, in order, or the message that refuses the run.
pub fn phase_loads(
    phases: &[PhasePlan],
    flags: &LoadFlags,
    workload: &str,
) -> Result<Vec<(LoadModel, LoadSource)>, String> {
    if flags.override_phase_loads && flags.given.is_none() {
        return Err(
            "--override-phase-loads needs --concurrency or --rate: the load to run every phase at"
                .into(),
        );
    }
    let went_to_param = flags.param_value().is_some();
    phases
        .iter()
        .map(|p| match (p.load, flags.given) {
            (None, Some(l)) => Ok((l, LoadSource::CommandLine)),
            (None, None) => Ok((flags.default, LoadSource::Default)),
            (Some(own), None) => Ok((own, LoadSource::Workload)),
            (Some(_), Some(l)) if flags.override_phase_loads => Ok((l, LoadSource::Override)),
            (Some(own), Some(_)) if went_to_param => Ok((own, LoadSource::WorkloadParam)),
            (Some(own), Some(l)) => Err(format!(
                "{} cannot apply: phase {:?} of workload {workload} sets its own load ({}){}; \
                 pass --override-phase-loads to run every phase at {}, or leave the flag out",
                flag_name(&l),
                p.name,
                describe(&own),
                if flags.has_concurrency_param {
                    format!(" and its `{CONCURRENCY_PARAM}` param takes only a closed-loop load")
                } else {
                    String::new()
                },
                describe(&l),
            )),
        })
        .collect()
}

fn flag_name(l: &LoadModel) -> String {
    match l {
        LoadModel::Closed { concurrency } => format!("--concurrency {concurrency}"),
        LoadModel::Constant { rate }
        | LoadModel::Poisson { rate }
        | LoadModel::Gamma { rate, .. } => {
            format!("--rate {rate}")
        }
    }
}

/// The phases whose load is not the flag's (nor the default), with where
/// it came from, for the one line `run` prints; `None` when there are none.
pub fn announcement(phases: &[PhaseRun], sources: &[LoadSource]) -> Option<String> {
    let own: Vec<String> = phases
        .iter()
        .zip(sources)
        .filter(|(_, s)| !matches!(s, LoadSource::CommandLine | LoadSource::Default))
        .map(|(p, s)| {
            format!(
                "{} {} ({})",
                crate::terminal::safe(&p.name),
                describe(&p.load),
                match s {
                    LoadSource::Workload => "the workload's own",
                    LoadSource::WorkloadParam => "from its concurrency param",
                    _ => "--override-phase-loads",
                }
            )
        })
        .collect();
    (!own.is_empty()).then(|| own.join("; "))
}

/// `closed loop, concurrency 4`, `poisson 5/s`.
pub fn describe(l: &LoadModel) -> String {
    match l {
        LoadModel::Closed { concurrency } => format!("closed loop, concurrency {concurrency}"),
        LoadModel::Constant { rate } => format!("constant {rate}/s"),
        LoadModel::Poisson { rate } => format!("poisson {rate}/s"),
        LoadModel::Gamma { rate, shape } => format!("gamma {rate}/s shape {shape}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn phase(name: &str, load: Option<LoadModel>) -> PhasePlan {
        PhasePlan {
            name: name.into(),
            include_in_summary: true,
            load,
        }
    }

    const C1: LoadModel = LoadModel::Closed { concurrency: 1 };
    const C4: LoadModel = LoadModel::Closed { concurrency: 4 };
    const C8: LoadModel = LoadModel::Closed { concurrency: 8 };
    const R5: LoadModel = LoadModel::Poisson { rate: 5.0 };

    fn flags(given: Option<LoadModel>, over: bool, param: bool) -> LoadFlags {
        LoadFlags {
            given,
            default: C1,
            override_phase_loads: over,
            has_concurrency_param: param,
        }
    }

    #[test]
    fn phases_that_leave_their_load_to_the_flag_take_it() {
        let p = [phase("warmup", None), phase("main", None)];
        assert_eq!(
            phase_loads(&p, &flags(Some(R5), false, false), "w").unwrap(),
            vec![(R5, LoadSource::CommandLine); 2]
        );
        assert_eq!(
            phase_loads(&p, &flags(None, false, false), "w").unwrap(),
            vec![(C1, LoadSource::Default); 2]
        );
    }

    #[test]
    fn a_fixed_phase_load_refuses_a_flag_by_phase_name_unless_overridden() {
        let p = [phase("sequential", Some(C1)), phase("free", None)];
        let e = phase_loads(&p, &flags(Some(C4), false, false), "reuse_verify 0.1.0").unwrap_err();
        assert!(
            e.contains("--concurrency 4 cannot apply")
                && e.contains("\"sequential\"")
                && e.contains("reuse_verify 0.1.0")
                && e.contains("--override-phase-loads"),
            "{e}"
        );
        assert_eq!(
            phase_loads(&p, &flags(Some(C4), true, false), "w").unwrap(),
            vec![(C4, LoadSource::Override), (C4, LoadSource::CommandLine)]
        );
        assert_eq!(
            phase_loads(&p, &flags(None, false, false), "w").unwrap(),
            vec![(C1, LoadSource::Workload), (C1, LoadSource::Default)]
        );
        let e = phase_loads(&p, &flags(None, true, false), "w").unwrap_err();
        assert!(e.contains("needs --concurrency or --rate"), "{e}");
    }

    #[test]
    fn a_concurrency_param_takes_the_flag_and_the_workload_derives_its_loads() {
        let p = [phase("warm_A", Some(C4)), phase("pressure_B", Some(C8))];
        let f = flags(Some(C4), false, true);
        assert_eq!(
            phase_loads(&p, &f, "w").unwrap(),
            vec![
                (C4, LoadSource::WorkloadParam),
                (C8, LoadSource::WorkloadParam)
            ]
        );
        // A rate cannot go to a concurrency param.
        let e = phase_loads(&p, &flags(Some(R5), false, true), "w").unwrap_err();
        assert!(
            e.contains("--rate 5 cannot apply") && e.contains("warm_A"),
            "{e}"
        );
        assert!(e.contains("closed-loop load"), "{e}");
    }

    #[test]
    fn the_param_gets_only_a_closed_loop_flag_and_not_under_override() {
        assert_eq!(flags(Some(C4), false, true).param_value(), Some(4));
        assert_eq!(flags(Some(C4), true, true).param_value(), None);
        assert_eq!(flags(Some(R5), false, true).param_value(), None);
        assert_eq!(flags(Some(C4), false, false).param_value(), None);
        assert_eq!(flags(None, false, true).param_value(), None);
        // Under override the param keeps its default and every phase runs at the flag.
        let p = [phase("warm_A", Some(C8))];
        assert_eq!(
            phase_loads(&p, &flags(Some(C4), true, true), "w").unwrap(),
            vec![(C4, LoadSource::Override)]
        );
    }
}
