//! Phases whose requests are produced lazily, one at a time, in order.
//!
//! Most workloads know their whole plan up front but should not hold it in
//! memory (thousands of long prompts), and should not call the host from
//! `create`. A [`Sequence`] keeps one [`Source`] per phase and asks them in
//! phase order, so `next_batch` becomes one call and prompts are built only
//! when the host asks for them.
//!
//! A workload whose whole plan is one [`Sequence`] implements
//! [`SequenceWorkload`] and exports [`Sequenced`], which supplies the
//! [`Workload`] methods.

use std::marker::PhantomData;

use crate::tokens::{HostTokenizer, Tokenizer};
use crate::{Batch, LoadModel, Params, Phase, RequestSpec, Result, Workload, WorkloadInfo};

/// Produces the next request of a phase, or `None` once the phase is fully
/// planned. Gets the tokenizer to fit texts with.
pub type Source = Box<dyn FnMut(&dyn Tokenizer) -> Result<Option<RequestSpec>>>;

/// A [`Source`] of exactly `count` requests: `make(i, tokenizer)` for
/// `i = 0..count`, in order.
pub fn counted<F>(count: u32, mut make: F) -> Source
where
    F: FnMut(u32, &dyn Tokenizer) -> Result<RequestSpec> + 'static,
{
    let mut next = 0;
    Box::new(move |tok| {
        if next == count {
            return Ok(None);
        }
        let spec = make(next, tok)?;
        next += 1;
        Ok(Some(spec))
    })
}

/// A phase that sets its own closed-loop load of `concurrency` requests in
/// flight.
pub fn closed_phase(name: &str, include_in_summary: bool, concurrency: u32) -> Phase {
    Phase {
        name: name.to_string(),
        include_in_summary,
        load: Some(LoadModel::Closed(concurrency)),
    }
}

/// The phases of a run, each with its source, planned in order.
#[derive(Default)]
pub struct Sequence {
    phases: Vec<(Phase, Source)>,
    current: usize,
}

impl Sequence {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a phase; phases run in the order they are pushed.
    pub fn push(&mut self, phase: Phase, source: Source) {
        self.phases.push((phase, source));
    }

    /// The phases, for [`Workload::phases`](crate::Workload::phases).
    pub fn phases(&self) -> Vec<Phase> {
        self.phases.iter().map(|(p, _)| p.clone()).collect()
    }

    /// Up to `max` further requests, in phase order; `done` once every
    /// source is exhausted (possibly in a later, empty batch when the last
    /// source ends exactly at `max`).
    pub fn next_batch(&mut self, max: u32, tok: &dyn Tokenizer) -> Result<Batch> {
        let mut requests = Vec::new();
        while requests.len() < max as usize && self.current < self.phases.len() {
            match (self.phases[self.current].1)(tok)? {
                Some(spec) => requests.push(spec),
                None => self.current += 1,
            }
        }
        Ok(Batch {
            requests,
            done: self.current == self.phases.len(),
        })
    }

    /// Every remaining request; for tests.
    pub fn drain(&mut self, tok: &dyn Tokenizer) -> Result<Vec<RequestSpec>> {
        let mut all = Vec::new();
        loop {
            let batch = self.next_batch(1024, tok)?;
            all.extend(batch.requests);
            if batch.done {
                return Ok(all);
            }
        }
    }
}

/// A workload planned as one [`Sequence`], built from the params in
/// `create` and fitted with the host's tokenizer. Export it as
/// `export_workload!(Sequenced<MyWorkload>)`.
pub trait SequenceWorkload: 'static {
    /// As [`Workload::describe`].
    fn describe() -> WorkloadInfo;

    /// The run's phases and their sources, as [`Workload::create`] would
    /// build them.
    fn plan(params: &Params, seed: u64) -> Result<Sequence>;
}

/// The [`Workload`] of a [`SequenceWorkload`]: phases and batches come from
/// its [`Sequence`], with the [`HostTokenizer`].
pub struct Sequenced<W> {
    seq: Sequence,
    workload: PhantomData<W>,
}

impl<W: SequenceWorkload> Workload for Sequenced<W> {
    fn describe() -> WorkloadInfo {
        W::describe()
    }

    fn create(params: &Params, seed: u64) -> Result<Self> {
        Ok(Self {
            seq: W::plan(params, seed)?,
            workload: PhantomData,
        })
    }

    fn phases(&self) -> Vec<Phase> {
        self.seq.phases()
    }

    fn next_batch(&mut self, max: u32) -> Result<Batch> {
        self.seq.next_batch(max, &HostTokenizer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokens::WordTokenizer;
    use crate::{Arrival, Generation, Prompt};

    fn spec(id: String, phase: &str) -> RequestSpec {
        RequestSpec {
            id,
            phase: phase.to_string(),
            session_id: None,
            prefix_hash: None,
            prompt: Prompt::Text(String::new()),
            generation: Generation {
                max_tokens: 1,
                temperature: None,
                top_p: None,
                stop: vec![],
                seed: None,
                ignore_eos: false,
            },
            arrival: Arrival::Asap,
            labels: vec![],
        }
    }

    fn phase(name: &str) -> Phase {
        Phase {
            name: name.to_string(),
            include_in_summary: true,
            load: None,
        }
    }

    #[test]
    fn phases_are_planned_in_order_across_batches() {
        let mut seq = Sequence::new();
        seq.push(
            phase("a"),
            counted(3, |i, _| Ok(spec(format!("a{i}"), "a"))),
        );
        seq.push(phase("empty"), counted(0, |_, _| unreachable!()));
        seq.push(
            phase("b"),
            counted(2, |i, _| Ok(spec(format!("b{i}"), "b"))),
        );
        assert_eq!(seq.phases().len(), 3);
        let first = seq.next_batch(2, &WordTokenizer).unwrap();
        assert_eq!(first.requests.len(), 2);
        assert!(!first.done);
        let rest = seq.drain(&WordTokenizer).unwrap();
        let ids: Vec<&str> = rest.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["a2", "b0", "b1"]);
        assert!(seq.next_batch(5, &WordTokenizer).unwrap().done);
    }

    /// `n` requests (param, default 2) in one closed-loop phase.
    struct Counted;

    impl SequenceWorkload for Counted {
        fn describe() -> WorkloadInfo {
            WorkloadInfo {
                name: "counted".to_string(),
                version: "0.1.0".to_string(),
                description: String::new(),
                params: vec![crate::param("n", "Requests.", "2")],
            }
        }

        fn plan(params: &Params, _seed: u64) -> Result<Sequence> {
            let n = params.get_u32("n")?;
            let mut seq = Sequence::new();
            seq.push(
                closed_phase("a", true, 3),
                counted(n, |i, _| Ok(spec(format!("a{i}"), "a"))),
            );
            Ok(seq)
        }
    }

    #[test]
    fn sequenced_takes_describe_and_phases_from_the_plan() {
        let info = Sequenced::<Counted>::describe();
        assert_eq!(info.name, "counted");
        let params = |n| Params::from_pairs(&info.params, &[("n", n)]).unwrap();
        let w = Sequenced::<Counted>::create(&params("1"), 0).unwrap();
        assert_eq!(
            w.phases(),
            [Phase {
                name: "a".to_string(),
                include_in_summary: true,
                load: Some(LoadModel::Closed(3)),
            }]
        );
        assert!(Sequenced::<Counted>::create(&params("x"), 0).is_err());
    }

    #[test]
    fn errors_stop_the_batch() {
        let mut seq = Sequence::new();
        seq.push(
            phase("a"),
            counted(2, |_, _| {
                Err(crate::WorkloadError::Internal("boom".to_string()))
            }),
        );
        assert!(seq.next_batch(5, &WordTokenizer).is_err());
    }
}
