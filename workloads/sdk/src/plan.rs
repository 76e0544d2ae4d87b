//! Phases whose requests are produced lazily, one at a time, in order.
//!
//! Most workloads know their whole plan up front but should not hold it in
//! memory (thousands of long prompts), and should not call the host from
//! `create`. A [`Sequence`] keeps one [`Source`] per phase and asks them in
//! phase order, so `next_batch` becomes one call and prompts are built only
//! when the host asks for them.

use crate::tokens::Tokenizer;
use crate::{Batch, Phase, RequestSpec, Result};

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
