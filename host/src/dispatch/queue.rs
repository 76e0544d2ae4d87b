//! The pacing decision as a pure state machine: what the scheduler should do
//! next, as a function of the time it is given and what it was told so far.
//!
//! Nothing here reads a clock or touches a socket, so every rule (closed-loop
//! slots, open-loop schedules, timed arrivals, parked session turns, the
//! in-flight cap, the look-ahead window, requests carried into the next
//! phase) is unit-tested with made-up instants. [`super::runner`] owns the
//! clock, the channels and the request tasks, and executes the decisions.
//!
//! Intended send times come from the phase's load model (the time a
//! closed-loop slot became free, or the open-loop schedule's offset), the
//! request's own arrival rule, and its session's previous turn; a request is
//! never intended earlier than the slot it takes.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Prepared;
use super::pacer::Schedule;
use super::runner::{FeedItem, PhaseRun};
use crate::plan::{Arrival, LoadModel, PlanError};

/// What the scheduler should do now.
#[derive(Debug)]
pub enum Decision {
    /// Send `request` now; its schedule wanted it sent at `intended` (≤ now).
    SendNow {
        intended: Instant,
        request: Prepared,
    },
    /// The next request is due then; nothing is due before.
    SleepUntil(Instant),
    /// Nothing can go until a request finishes or the feed brings more.
    Idle,
}

/// Every phase's queues, one phase at a time, plus what the feed sent ahead
/// for a later phase.
pub struct Queue<'a> {
    phases: &'a [PhaseRun],
    index_of: HashMap<&'a str, usize>,
    /// Most requests buffered here ahead of their send time.
    lookahead: usize,
    /// Cap on requests in flight in open loop (protects the client machine).
    max_in_flight: usize,
    phase: PhaseState,
    /// A request for a later phase, read while the current one was running.
    carry: Option<Prepared>,
    feed_closed: bool,
    workload_error: Option<Arc<PlanError>>,
}

impl<'a> Queue<'a> {
    /// Ready to run phase 0 from `start`; [`Queue::start_phase`] (re)starts a
    /// phase from when it really began (after its boundary snapshot).
    pub fn new(
        phases: &'a [PhaseRun],
        lookahead: usize,
        max_in_flight: usize,
        start: Instant,
    ) -> Self {
        let mut q = Queue {
            phases,
            index_of: phases
                .iter()
                .enumerate()
                .map(|(i, p)| (p.name.as_str(), i))
                .collect(),
            lookahead,
            max_in_flight,
            phase: PhaseState::new(0, start, LoadModel::Closed { concurrency: 0 }, None),
            carry: None,
            feed_closed: false,
            workload_error: None,
        };
        if !phases.is_empty() {
            q.start_phase(0, start);
        }
        q
    }

    /// Makes phase `index` current from `start`; a request already read for
    /// it is placed now.
    pub fn start_phase(&mut self, index: usize, start: Instant) {
        let run = &self.phases[index];
        self.phase = PhaseState::new(index, start, run.load, Schedule::new(run.load, run.seed));
        // The current phase has all its requests once a later phase's
        // request or the end of the feed has been read.
        self.phase.fed = self.feed_closed;
        if let Some(p) = self.carry.take() {
            match self.index_of.get(p.meta.phase.as_str()) {
                Some(&i) if i == index => self.phase.place(p, start),
                _ => {
                    self.carry = Some(p);
                    self.phase.fed = true;
                }
            }
        }
    }

    /// Whether the scheduler should read the feed: the phase may still get
    /// requests and the look-ahead window has room.
    pub fn wants_feed(&self) -> bool {
        !self.phase.fed && self.phase.buffered() < self.lookahead
    }

    /// Takes what the feed sent; `now` is the base of a session's first turn
    /// that waits for a previous turn it never had.
    pub fn intake(&mut self, item: FeedItem, now: Instant) {
        match item {
            FeedItem::Request(p) => match self.index_of.get(p.meta.phase.as_str()) {
                Some(&i) if i == self.phase.index => self.phase.place(p, now),
                Some(&i) if i > self.phase.index => {
                    self.carry = Some(p);
                    self.phase.fed = true;
                }
                // The feed validates phase order; anything else is dropped loudly.
                _ => {
                    let message = format!(
                        "request {} names phase {:?} after phase {:?} had started",
                        p.meta.id,
                        p.meta.phase,
                        self.phase_name()
                    );
                    self.workload_error
                        .get_or_insert_with(|| Arc::new(PlanError::Invalid(message)));
                }
            },
            FeedItem::Done => self.feed_closed(),
            FeedItem::Failed(e) => {
                self.workload_error.get_or_insert(e);
                self.feed_closed();
            }
        }
    }

    /// The feed ended (it said so, or hung up): no phase gets more requests.
    pub fn feed_closed(&mut self) {
        self.phase.fed = true;
        self.feed_closed = true;
    }

    /// A request of phase `phase_index` ended at `end`: its slot and its
    /// session's next turn become free from then.
    pub fn finished(&mut self, phase_index: usize, session: Option<&str>, end: Instant) {
        if phase_index == self.phase.index {
            self.phase.finished(session, end);
        }
    }

    /// The decision at `now`; a request it returns counts as in flight.
    pub fn next(&mut self, now: Instant) -> Decision {
        match self.phase.next_due(self.max_in_flight) {
            None => Decision::Idle,
            Some((due, _)) if due > now => Decision::SleepUntil(due),
            Some((intended, from_asap)) => Decision::SendNow {
                intended,
                request: self.phase.take(from_asap),
            },
        }
    }

    /// The phase has all its requests, and every one has finished.
    pub fn phase_done(&self) -> bool {
        self.phase.fed && self.phase.buffered() == 0 && self.phase.in_flight == 0
    }

    pub fn in_flight(&self) -> usize {
        self.phase.in_flight
    }

    /// Requests read from the feed but not sent (when a run stops early).
    pub fn unsent(&self) -> u64 {
        self.phase.buffered() as u64 + u64::from(self.carry.is_some())
    }

    pub fn phase_name(&self) -> &'a str {
        self.phases
            .get(self.phase.index)
            .map_or("", |p| p.name.as_str())
    }

    /// The first way the workload failed, as the feed reported it.
    pub fn workload_error(&mut self) -> Option<Arc<PlanError>> {
        self.workload_error.take()
    }
}

struct Timed {
    due: Instant,
    request: Prepared,
}

impl Timed {
    fn key(&self) -> (Instant, u64) {
        (self.due, self.request.seq)
    }
}

impl PartialEq for Timed {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}
impl Eq for Timed {}
impl PartialOrd for Timed {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Timed {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.key().cmp(&other.key())
    }
}

#[derive(Default)]
struct Session {
    /// Requests of the session queued or in flight.
    busy: u32,
    last_end: Option<Instant>,
    parked: VecDeque<(Prepared, f64)>,
}

/// One phase's queues.
struct PhaseState {
    index: usize,
    start: Instant,
    load: LoadModel,
    schedule: Option<Schedule>,
    asap: VecDeque<Prepared>,
    timed: BinaryHeap<Reverse<Timed>>,
    sessions: HashMap<String, Session>,
    /// Turns parked behind their session's previous turn, over all sessions.
    parked: usize,
    /// When each free closed-loop slot became free (its intended send time).
    free_slots: VecDeque<Instant>,
    in_flight: usize,
    asap_sent: u64,
    /// Every request of the phase has been read.
    fed: bool,
}

fn after(base: Instant, ms: f64) -> Instant {
    base + Duration::from_secs_f64(ms.max(0.0) / 1e3)
}

impl PhaseState {
    fn new(index: usize, start: Instant, load: LoadModel, schedule: Option<Schedule>) -> Self {
        PhaseState {
            index,
            start,
            load,
            schedule,
            asap: VecDeque::new(),
            timed: BinaryHeap::new(),
            sessions: HashMap::new(),
            parked: 0,
            free_slots: match load {
                LoadModel::Closed { concurrency } => {
                    std::iter::repeat_n(start, concurrency as usize).collect()
                }
                _ => VecDeque::new(),
            },
            in_flight: 0,
            asap_sent: 0,
            fed: false,
        }
    }

    fn buffered(&self) -> usize {
        self.asap.len() + self.timed.len() + self.parked
    }

    fn place(&mut self, p: Prepared, now: Instant) {
        let session = p.meta.session_id.clone();
        match p.arrival {
            Arrival::Asap => self.asap.push_back(p),
            Arrival::AtOffsetMs(ms) => {
                let due = after(self.start, ms);
                self.timed.push(Reverse(Timed { due, request: p }));
            }
            Arrival::AfterPreviousTurn(think) => {
                let s = self
                    .sessions
                    .entry(session.unwrap_or_default())
                    .or_default();
                if s.busy > 0 {
                    s.parked.push_back((p, think));
                    self.parked += 1;
                    return;
                }
                let due = after(s.last_end.unwrap_or(now), think);
                s.busy += 1;
                self.timed.push(Reverse(Timed { due, request: p }));
                return;
            }
        }
        if let Some(id) = session {
            self.sessions.entry(id).or_default().busy += 1;
        }
    }

    fn finished(&mut self, session: Option<&str>, end: Instant) {
        self.in_flight -= 1;
        if matches!(self.load, LoadModel::Closed { .. }) {
            self.free_slots.push_back(end);
        }
        let Some(s) = session.and_then(|id| self.sessions.get_mut(id)) else {
            return;
        };
        s.busy = s.busy.saturating_sub(1);
        s.last_end = Some(end);
        if s.busy == 0
            && let Some((p, think)) = s.parked.pop_front()
        {
            s.busy += 1;
            self.parked -= 1;
            self.timed.push(Reverse(Timed {
                due: after(end, think),
                request: p,
            }));
        }
    }

    /// The next request's intended time, and whether it is the head of the
    /// as-soon-as-possible queue (else of the timed heap), if one is eligible.
    fn next_due(&mut self, max_in_flight: usize) -> Option<(Instant, bool)> {
        let slot = match self.load {
            LoadModel::Closed { .. } => self.free_slots.front().copied(),
            _ if self.in_flight >= max_in_flight => None,
            _ => Some(self.start),
        }?;
        let asap_due = if self.asap.is_empty() {
            None
        } else {
            Some(match &mut self.schedule {
                Some(s) => self.start + s.offset(self.asap_sent),
                None => slot,
            })
        };
        let timed_due = self.timed.peek().map(|Reverse(t)| t.due.max(slot));
        match (asap_due, timed_due) {
            (Some(a), Some(t)) if t < a => Some((t, false)),
            (Some(a), _) => Some((a, true)),
            (None, Some(t)) => Some((t, false)),
            (None, None) => None,
        }
    }

    fn take(&mut self, from_asap: bool) -> Prepared {
        if matches!(self.load, LoadModel::Closed { .. }) {
            self.free_slots.pop_front();
        }
        self.in_flight += 1;
        if from_asap {
            self.asap_sent += 1;
            if let Some(s) = &mut self.schedule {
                s.forget_before(self.asap_sent);
            }
            self.asap.pop_front().expect("asap head exists")
        } else {
            self.timed.pop().expect("timed head exists").0.request
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::plan::{Api, Generation};
    use crate::prepare::{RequestIdentity, RequestMeta};
    use crate::sandbox::SandboxError;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    fn phase(name: &str, load: LoadModel) -> PhaseRun {
        PhaseRun {
            name: name.into(),
            load,
            seed: 7,
        }
    }

    fn request(seq: u64, phase: &str, arrival: Arrival, session: Option<&str>) -> Prepared {
        Prepared {
            seq,
            api: Api::Completions,
            stream: true,
            body: Bytes::new(),
            arrival,
            meta: Arc::new(RequestMeta {
                request_index: seq,
                phase: phase.into(),
                phase_request_index: seq + 1,
                id: format!("r{seq}"),
                prompt_set: None,
                prompt_target_tokens: None,
                prompt_tokens_est: 1,
                prompt_chars: 1,
                identity: RequestIdentity::compute("m", b"p", &().into(), &().into()),
                generation_params: Generation {
                    max_tokens: 1,
                    temperature: None,
                    top_p: None,
                    stop: vec![],
                    seed: None,
                    ignore_eos: false,
                },
                api: Api::Completions,
                stream: true,
                arrival,
                prefix_hash: None,
                session_id: session.map(Into::into),
                prompt_metadata: Default::default(),
                planned_after_start: false,
            }),
        }
    }

    fn feed(q: &mut Queue<'_>, p: Prepared, now: Instant) {
        q.intake(FeedItem::Request(p), now);
    }

    /// The id and intended time of a `SendNow`; panics on anything else.
    fn sent(d: Decision) -> (String, Instant) {
        match d {
            Decision::SendNow { intended, request } => (request.meta.id.clone(), intended),
            other => panic!("expected a send, got {other:?}"),
        }
    }

    const OPEN: LoadModel = LoadModel::Constant { rate: 1e9 };

    #[test]
    fn a_freed_closed_slot_is_the_next_requests_intended_time() {
        let t0 = Instant::now();
        let phases = [phase("p", LoadModel::Closed { concurrency: 2 })];
        let mut q = Queue::new(&phases, 16, 100, t0);
        for seq in 0..3 {
            feed(&mut q, request(seq, "p", Arrival::Asap, None), t0);
        }
        assert_eq!(sent(q.next(t0)), ("r0".into(), t0));
        assert_eq!(sent(q.next(t0)), ("r1".into(), t0));
        assert!(matches!(q.next(t0 + ms(5)), Decision::Idle));
        q.finished(0, None, t0 + ms(40));
        // Sent late, at 55 ms, but intended when the slot freed.
        assert_eq!(sent(q.next(t0 + ms(55))), ("r2".into(), t0 + ms(40)));
        assert_eq!(q.in_flight(), 2);
    }

    #[test]
    fn open_loop_follows_the_schedule_and_timed_arrivals_their_offsets_in_order() {
        let t0 = Instant::now();
        let phases = [phase("p", LoadModel::Constant { rate: 100.0 })];
        let mut q = Queue::new(&phases, 16, 100, t0);
        let at = |seq, off| request(seq, "p", Arrival::AtOffsetMs(off), None);
        feed(&mut q, at(0, 30.0), t0);
        feed(&mut q, at(1, 10.0), t0);
        feed(&mut q, at(2, 20.0), t0);
        assert!(matches!(q.next(t0), Decision::SleepUntil(t) if t == t0 + ms(10)));
        assert_eq!(sent(q.next(t0 + ms(10))), ("r1".into(), t0 + ms(10)));
        // Late: both overdue ones go at once, each with its own intended time.
        assert_eq!(sent(q.next(t0 + ms(35))), ("r2".into(), t0 + ms(20)));
        assert_eq!(sent(q.next(t0 + ms(35))), ("r0".into(), t0 + ms(30)));

        // As-soon-as-possible requests take the schedule's offsets (100/s).
        feed(&mut q, request(3, "p", Arrival::Asap, None), t0);
        feed(&mut q, request(4, "p", Arrival::Asap, None), t0);
        assert_eq!(sent(q.next(t0 + ms(35))), ("r3".into(), t0));
        assert!(matches!(q.next(t0 + ms(5)), Decision::SleepUntil(t) if t == t0 + ms(10)));
        assert_eq!(sent(q.next(t0 + ms(35))), ("r4".into(), t0 + ms(10)));
    }

    #[test]
    fn a_sessions_next_turn_waits_for_the_previous_turns_end_plus_think_time() {
        let t0 = Instant::now();
        let phases = [phase("p", OPEN)];
        let mut q = Queue::new(&phases, 16, 100, t0);
        feed(&mut q, request(0, "p", Arrival::Asap, Some("s")), t0);
        feed(
            &mut q,
            request(1, "p", Arrival::AfterPreviousTurn(50.0), Some("s")),
            t0,
        );
        // Another session's first turn counts its think time from now.
        feed(
            &mut q,
            request(2, "p", Arrival::AfterPreviousTurn(5.0), Some("t")),
            t0 + ms(1),
        );
        assert_eq!(sent(q.next(t0)), ("r0".into(), t0));
        assert!(matches!(q.next(t0), Decision::SleepUntil(t) if t == t0 + ms(6)));
        assert_eq!(sent(q.next(t0 + ms(6))), ("r2".into(), t0 + ms(6)));
        // Turn 1 is parked: it has no time until turn 0 ends.
        assert!(matches!(q.next(t0 + ms(500)), Decision::Idle));
        assert!(!q.phase_done());
        q.finished(0, Some("s"), t0 + ms(100));
        assert!(matches!(q.next(t0 + ms(120)), Decision::SleepUntil(t) if t == t0 + ms(150)));
        assert_eq!(sent(q.next(t0 + ms(150))), ("r1".into(), t0 + ms(150)));
    }

    #[test]
    fn a_request_for_a_later_phase_ends_the_feed_of_this_one_and_carries_over() {
        let t0 = Instant::now();
        let phases = [phase("a", OPEN), phase("b", OPEN), phase("c", OPEN)];
        let mut q = Queue::new(&phases, 16, 100, t0);
        feed(&mut q, request(0, "a", Arrival::Asap, None), t0);
        assert!(q.wants_feed());
        feed(&mut q, request(1, "c", Arrival::Asap, None), t0);
        assert!(!q.wants_feed(), "phase a has all its requests");
        assert_eq!(sent(q.next(t0)).0, "r0");
        assert!(!q.phase_done());
        q.finished(0, None, t0 + ms(3));
        assert!(q.phase_done());
        // Phase b got nothing: the carried request belongs to c.
        q.start_phase(1, t0 + ms(4));
        assert!(q.phase_done());
        assert_eq!(q.unsent(), 1);
        let t2 = t0 + ms(5);
        q.start_phase(2, t2);
        assert!(q.wants_feed());
        assert_eq!(sent(q.next(t2)), ("r1".into(), t2));
        q.intake(FeedItem::Done, t2);
        q.finished(2, None, t2 + ms(1));
        assert!(q.phase_done());
    }

    #[test]
    fn the_look_ahead_window_bounds_what_is_read_from_the_feed() {
        let t0 = Instant::now();
        let phases = [phase("p", LoadModel::Closed { concurrency: 1 })];
        let mut q = Queue::new(&phases, 3, 100, t0);
        for seq in 0..3 {
            assert!(q.wants_feed());
            feed(&mut q, request(seq, "p", Arrival::Asap, Some("s")), t0);
        }
        assert!(!q.wants_feed());
        sent(q.next(t0));
        assert!(q.wants_feed(), "a send makes room");
        // Parked turns count against the window too.
        feed(
            &mut q,
            request(3, "p", Arrival::AfterPreviousTurn(0.0), Some("s")),
            t0,
        );
        assert!(!q.wants_feed());
        assert_eq!(q.unsent(), 3);
    }

    #[test]
    fn open_loop_sends_wait_at_the_in_flight_cap() {
        let t0 = Instant::now();
        let phases = [phase("p", OPEN)];
        let mut q = Queue::new(&phases, 16, 2, t0);
        for seq in 0..3 {
            feed(&mut q, request(seq, "p", Arrival::Asap, None), t0);
        }
        sent(q.next(t0 + ms(1)));
        sent(q.next(t0 + ms(1)));
        assert!(matches!(q.next(t0 + ms(1)), Decision::Idle));
        q.finished(0, None, t0 + ms(2));
        // The schedule's time stands; the wait shows as lateness.
        assert_eq!(sent(q.next(t0 + ms(2))).0, "r2");
    }

    #[test]
    fn a_workload_failure_keeps_what_was_planned_and_ends_the_feed() {
        let t0 = Instant::now();
        let phases = [phase("a", OPEN), phase("b", OPEN)];
        let mut q = Queue::new(&phases, 16, 100, t0);
        feed(&mut q, request(0, "a", Arrival::Asap, None), t0);
        let trap = SandboxError::Poisoned {
            workload: "w".into(),
        };
        q.intake(FeedItem::Failed(Arc::new(trap.into())), t0);
        assert!(!q.wants_feed());
        assert_eq!(sent(q.next(t0)).0, "r0");
        q.finished(0, None, t0 + ms(1));
        assert!(q.phase_done());
        q.start_phase(1, t0 + ms(2));
        assert!(q.phase_done(), "later phases get nothing more");
        assert!(matches!(
            q.workload_error().as_deref(),
            Some(PlanError::Sandbox(SandboxError::Poisoned { .. }))
        ));
    }

    #[test]
    fn a_request_for_an_earlier_phase_is_refused() {
        let t0 = Instant::now();
        let phases = [phase("a", OPEN), phase("b", OPEN)];
        let mut q = Queue::new(&phases, 16, 100, t0);
        q.start_phase(1, t0);
        feed(&mut q, request(0, "a", Arrival::Asap, None), t0);
        assert_eq!(q.unsent(), 0);
        let e = q.workload_error().expect("refused");
        assert_eq!(
            e.to_string(),
            r#"request r0 names phase "a" after phase "b" had started"#
        );
    }
}
