//! The highest load that meets an SLO: bracketing, then bisection.
//!
//! Starting at `start`, the load is multiplied by `factor` while runs pass
//! (or divided while they fail) until a passing and a failing load bracket
//! the answer; then the bracket is halved until it is within `tolerance`
//! (one for concurrency; a fraction of the failing rate for rates). This
//! assumes that meeting the SLO is monotone in load; a noisy run can break
//! that, which is why every run is kept and listed: a reader can see a
//! non-monotone step in `search.json`.

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Axis {
    Concurrency,
    Rate,
}

#[derive(Debug, Clone, Copy)]
pub struct SearchPlan {
    pub axis: Axis,
    pub min: f64,
    pub max: f64,
    pub start: f64,
    pub factor: f64,
    /// Concurrency: the bracket width to stop at (≥ 1). Rate: the width as
    /// a fraction of the failing rate.
    pub tolerance: f64,
    pub max_runs: usize,
}

#[derive(Debug, Clone)]
pub struct Searcher {
    plan: SearchPlan,
    /// Highest load that passed.
    pub lo: Option<f64>,
    /// Lowest load that failed.
    pub hi: Option<f64>,
    pub runs: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// A passing and a failing load within tolerance of each other.
    Found,
    /// Even the maximum passes.
    MaxMeets,
    /// Even the minimum fails.
    NoneMeets,
    /// `max_runs` were spent before the bracket closed.
    BudgetExhausted,
}

impl Searcher {
    pub fn new(plan: SearchPlan) -> Self {
        Searcher {
            plan,
            lo: None,
            hi: None,
            runs: 0,
        }
    }

    fn snap(&self, v: f64) -> f64 {
        let v = v.clamp(self.plan.min, self.plan.max);
        match self.plan.axis {
            Axis::Concurrency => v.round().max(1.0),
            Axis::Rate => (v * 1000.0).round() / 1000.0,
        }
    }

    fn converged(&self, lo: f64, hi: f64) -> bool {
        match self.plan.axis {
            Axis::Concurrency => hi - lo <= self.plan.tolerance.max(1.0),
            Axis::Rate => hi - lo <= self.plan.tolerance * hi,
        }
    }

    /// The next load to try, or `None` when done.
    pub fn next(&self) -> Option<f64> {
        if self.runs >= self.plan.max_runs {
            return None;
        }
        match (self.lo, self.hi) {
            (None, None) => Some(self.snap(self.plan.start)),
            (Some(lo), None) => {
                if lo >= self.plan.max {
                    return None;
                }
                let mut v = self.snap(lo * self.plan.factor);
                if v <= lo {
                    v = self.snap(lo + 1.0);
                }
                (v > lo).then_some(v)
            }
            (None, Some(hi)) => {
                if hi <= self.plan.min {
                    return None;
                }
                let mut v = self.snap(hi / self.plan.factor);
                if v >= hi {
                    v = self.snap(hi - 1.0);
                }
                (v < hi).then_some(v)
            }
            (Some(lo), Some(hi)) => {
                if self.converged(lo, hi) {
                    return None;
                }
                let mid = match self.plan.axis {
                    Axis::Concurrency => ((lo + hi) / 2.0).floor(),
                    Axis::Rate => self.snap((lo + hi) / 2.0),
                };
                (mid > lo && mid < hi).then_some(mid)
            }
        }
    }

    pub fn record(&mut self, value: f64, pass: bool) {
        self.runs += 1;
        if pass {
            self.lo = Some(self.lo.map_or(value, |l| l.max(value)));
        } else {
            self.hi = Some(self.hi.map_or(value, |h| h.min(value)));
        }
    }

    pub fn outcome(&self) -> Outcome {
        match (self.lo, self.hi) {
            (Some(lo), None) if lo >= self.plan.max => Outcome::MaxMeets,
            (None, Some(hi)) if hi <= self.plan.min => Outcome::NoneMeets,
            (Some(_), Some(_)) if self.next().is_none() && self.runs < self.plan.max_runs => {
                Outcome::Found
            }
            (Some(lo), Some(hi)) if self.converged(lo, hi) => Outcome::Found,
            _ => Outcome::BudgetExhausted,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drive(plan: SearchPlan, pass: impl Fn(f64) -> bool) -> (Searcher, Vec<f64>) {
        let mut s = Searcher::new(plan);
        let mut tried = Vec::new();
        while let Some(v) = s.next() {
            tried.push(v);
            s.record(v, pass(v));
        }
        (s, tried)
    }

    fn conc(start: f64) -> SearchPlan {
        SearchPlan {
            axis: Axis::Concurrency,
            min: 1.0,
            max: 256.0,
            start,
            factor: 2.0,
            tolerance: 1.0,
            max_runs: 20,
        }
    }

    #[test]
    fn brackets_up_then_bisects() {
        let (s, tried) = drive(conc(1.0), |v| v <= 13.0);
        assert_eq!(tried, vec![1.0, 2.0, 4.0, 8.0, 16.0, 12.0, 14.0, 13.0]);
        assert_eq!((s.lo, s.hi), (Some(13.0), Some(14.0)));
        assert_eq!(s.outcome(), Outcome::Found);
    }

    #[test]
    fn brackets_down_from_a_failing_start() {
        let (s, tried) = drive(conc(64.0), |v| v <= 5.0);
        assert_eq!(tried, vec![64.0, 32.0, 16.0, 8.0, 4.0, 6.0, 5.0]);
        assert_eq!((s.lo, s.hi), (Some(5.0), Some(6.0)));
    }

    #[test]
    fn edges_and_budget() {
        let (s, _) = drive(conc(1.0), |_| true);
        assert_eq!((s.lo, s.outcome()), (Some(256.0), Outcome::MaxMeets));
        let (s, _) = drive(conc(4.0), |_| false);
        assert_eq!((s.hi, s.outcome()), (Some(1.0), Outcome::NoneMeets));
        let mut p = conc(1.0);
        p.max_runs = 3;
        let (s, tried) = drive(p, |v| v <= 100.0);
        assert_eq!(tried.len(), 3);
        assert_eq!(s.outcome(), Outcome::BudgetExhausted);
    }

    #[test]
    fn rates_bisect_to_a_relative_tolerance() {
        let plan = SearchPlan {
            axis: Axis::Rate,
            min: 0.5,
            max: 1000.0,
            start: 1.0,
            factor: 2.0,
            tolerance: 0.05,
            max_runs: 30,
        };
        let (s, _) = drive(plan, |v| v <= 37.3);
        let (lo, hi) = (s.lo.unwrap(), s.hi.unwrap());
        assert!(lo <= 37.3 && hi > 37.3, "{lo} {hi}");
        assert!(hi - lo <= 0.05 * hi);
        assert_eq!(s.outcome(), Outcome::Found);
    }
}
