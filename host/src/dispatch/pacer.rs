//! Open-loop arrival schedules.
//!
//! The intended send time of the n-th request of a phase is a pure function of
//! (load model, seed, n): the same run replays the same schedule, and a late
//! dispatcher cannot shift later arrivals (coordinated omission stays visible
//! as lateness instead of disappearing into a slower rate).

use std::collections::VecDeque;
use std::time::Duration;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Exp, Gamma};

use crate::plan::LoadModel;

/// Intended offsets (from phase start) of successive open-loop arrivals.
#[derive(Debug)]
pub struct Schedule {
    kind: Kind,
    /// Offsets computed and not yet forgotten; `offsets[i]` belongs to request `first + i`.
    offsets: VecDeque<Duration>,
    first: u64,
    /// Offset of the newest request computed so far (next gap starts here).
    last: Option<Duration>,
}

#[derive(Debug)]
enum Kind {
    Constant {
        interval_ns: f64,
    },
    Random {
        rng: Box<ChaCha8Rng>,
        dist: Interarrival,
    },
}

#[derive(Debug)]
enum Interarrival {
    Exp(Exp<f64>),
    Gamma(Gamma<f64>),
}

impl Schedule {
    /// `None` for closed-loop models, which have no schedule.
    pub fn new(load: LoadModel, seed: u64) -> Option<Self> {
        let kind = match load {
            LoadModel::Closed { .. } => return None,
            LoadModel::Constant { rate } => Kind::Constant {
                interval_ns: 1e9 / rate,
            },
            LoadModel::Poisson { rate } => Kind::Random {
                rng: Box::new(ChaCha8Rng::seed_from_u64(seed)),
                dist: Interarrival::Exp(Exp::new(rate).ok()?),
            },
            LoadModel::Gamma { rate, shape } => Kind::Random {
                rng: Box::new(ChaCha8Rng::seed_from_u64(seed)),
                // Mean inter-arrival = shape * scale = 1/rate.
                dist: Interarrival::Gamma(Gamma::new(shape, 1.0 / (rate * shape)).ok()?),
            },
        };
        Some(Schedule {
            kind,
            offsets: VecDeque::new(),
            first: 0,
            last: None,
        })
    }

    /// Intended offset of request `n` (0-based) from the phase start.
    ///
    /// Random schedules are generated in order; asking for an `n` that was
    /// already forgotten by [`Schedule::forget_before`] is a bug in the caller.
    pub fn offset(&mut self, n: u64) -> Duration {
        match &mut self.kind {
            // No accumulation, so no drift over millions of requests.
            Kind::Constant { interval_ns } => {
                Duration::from_nanos((*interval_ns * n as f64) as u64)
            }
            Kind::Random { rng, dist } => {
                // The first arrival is at 0: the phase starts with a request.
                assert!(n >= self.first, "offset {n} was already forgotten");
                while self.first + self.offsets.len() as u64 <= n {
                    let next = match self.last {
                        None => Duration::ZERO,
                        Some(prev) => {
                            let secs = match dist {
                                Interarrival::Exp(d) => d.sample(rng),
                                Interarrival::Gamma(d) => d.sample(rng),
                            };
                            prev + Duration::from_secs_f64(secs)
                        }
                    };
                    self.offsets.push_back(next);
                    self.last = Some(next);
                }
                self.offsets[(n - self.first) as usize]
            }
        }
    }

    /// Drops offsets of requests before `n`, which have been sent.
    pub fn forget_before(&mut self, n: u64) {
        while self.first < n && !self.offsets.is_empty() {
            self.offsets.pop_front();
            self.first += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn closed_loop_has_no_schedule() {
        assert!(Schedule::new(LoadModel::Closed { concurrency: 4 }, 1).is_none());
    }

    #[test]
    fn constant_rate_is_exact_and_does_not_drift() {
        let mut s = Schedule::new(LoadModel::Constant { rate: 100.0 }, 0).unwrap();
        assert_eq!(s.offset(0), Duration::ZERO);
        assert_eq!(s.offset(1), ms(10));
        assert_eq!(s.offset(1_000_000), Duration::from_secs(10_000));
    }

    #[test]
    fn offsets_do_not_depend_on_the_order_they_are_asked_in() {
        let mut a = Schedule::new(LoadModel::Poisson { rate: 50.0 }, 9).unwrap();
        let mut b = Schedule::new(LoadModel::Poisson { rate: 50.0 }, 9).unwrap();
        let late = b.offset(40);
        for n in 0..40 {
            a.offset(n);
            a.forget_before(n + 1);
        }
        assert_eq!(a.offset(40), late);
        assert_eq!(a.offsets.len(), 1, "sent offsets are forgotten");
        assert_eq!(b.offset(0), Duration::ZERO);
    }

    fn mean_and_cv(load: LoadModel, n: u64) -> (f64, f64) {
        let mut s = Schedule::new(load, 1337).unwrap();
        let gaps: Vec<f64> = (1..=n)
            .map(|i| (s.offset(i) - s.offset(i - 1)).as_secs_f64())
            .collect();
        let mean = gaps.iter().sum::<f64>() / n as f64;
        let var = gaps.iter().map(|g| (g - mean).powi(2)).sum::<f64>() / n as f64;
        (mean, var.sqrt() / mean)
    }

    #[test]
    fn poisson_has_the_requested_mean_and_unit_cv() {
        let (mean, cv) = mean_and_cv(LoadModel::Poisson { rate: 200.0 }, 50_000);
        assert!((mean - 0.005).abs() < 0.0002, "mean {mean}");
        assert!((cv - 1.0).abs() < 0.03, "cv {cv}");
    }

    #[test]
    fn gamma_shape_controls_burstiness() {
        // CV of a gamma distribution is 1/sqrt(shape).
        for shape in [0.25, 4.0] {
            let (mean, cv) = mean_and_cv(LoadModel::Gamma { rate: 100.0, shape }, 50_000);
            assert!((mean - 0.01).abs() < 0.0005, "shape {shape} mean {mean}");
            let want = 1.0 / f64::sqrt(shape);
            assert!(
                (cv - want).abs() < 0.06 * want,
                "shape {shape} cv {cv} want {want}"
            );
        }
    }

    #[test]
    fn different_seeds_give_different_schedules() {
        let mut a = Schedule::new(LoadModel::Poisson { rate: 10.0 }, 1).unwrap();
        let mut b = Schedule::new(LoadModel::Poisson { rate: 10.0 }, 2).unwrap();
        assert_ne!(a.offset(5), b.offset(5));
    }
}
