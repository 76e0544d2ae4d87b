//! Runs phases: decides when each prepared request goes out and hands every
//! finished request to the recorder.
//!
//! One scheduler task owns all queues, so streams share no scheduling lock
//! (only the connection pool's, once per request); request tasks report back
//! over a channel. Intended send times come
//! from the phase's load model (free slot or open-loop schedule), the
//! request's own arrival rule, and its session's previous turn.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};

use super::Prepared;
use super::client::{Client, Outcome};
use super::pacer::Schedule;
use super::timer::PreciseTimer;
use crate::plan::{Arrival, LoadModel};

/// What the planner sends the dispatcher.
#[derive(Debug)]
pub enum FeedItem {
    Request(Prepared),
    /// No more requests will come.
    Done,
    /// The workload failed; already-planned requests still run.
    Failed(String),
}

/// A phase as the dispatcher runs it.
#[derive(Debug, Clone)]
pub struct PhaseRun {
    pub name: String,
    pub load: LoadModel,
    /// Seed of the open-loop schedule.
    pub seed: u64,
}

/// What the dispatcher tells the recorder, in order.
#[derive(Debug)]
pub enum Event {
    PhaseStart { index: usize, at: Instant },
    Finished(Box<Finished>),
    PhaseEnd { index: usize, at: Instant },
}

#[derive(Debug)]
pub struct Finished {
    pub phase_index: usize,
    pub request: Prepared,
    pub outcome: Outcome,
}

/// Why a run stopped early.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    ModelDropped(String),
    Interrupted,
}

/// How the dispatch ended.
#[derive(Debug, Default)]
pub struct DispatchEnd {
    pub phases_completed: usize,
    pub stopped: Option<StopReason>,
    pub workload_error: Option<String>,
    /// Planned requests never sent because the run stopped.
    pub unsent: u64,
}

/// A phase boundary; the dispatcher waits for the acknowledgement before
/// going on, so snapshots taken there bracket the phase exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Boundary {
    Before(usize),
    After(usize),
}

pub type BoundaryHook = mpsc::UnboundedSender<(Boundary, tokio::sync::oneshot::Sender<()>)>;

pub struct Runner {
    pub client: Client,
    /// Wakes the scheduler at send times with sub-millisecond precision.
    pub timer: PreciseTimer,
    /// Told about phase boundaries (telemetry snapshots); `None` skips them.
    pub boundaries: Option<BoundaryHook>,
    /// Most requests buffered ahead of their send time.
    pub lookahead: usize,
    /// Cap on in-flight requests in open loop (protects the client machine).
    pub max_in_flight: usize,
}

struct Timed {
    due: Instant,
    request: Prepared,
}

impl PartialEq for Timed {
    fn eq(&self, o: &Self) -> bool {
        (self.due, self.request.seq) == (o.due, o.request.seq)
    }
}
impl Eq for Timed {}
impl PartialOrd for Timed {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Timed {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.due, self.request.seq).cmp(&(o.due, o.request.seq))
    }
}

#[derive(Default)]
struct Session {
    /// Requests of the session queued or in flight.
    busy: u32,
    last_end: Option<Instant>,
    parked: VecDeque<(Prepared, f64)>,
}

struct PhaseState<'a> {
    index: usize,
    start: Instant,
    load: LoadModel,
    schedule: Option<Schedule>,
    asap: VecDeque<Prepared>,
    timed: BinaryHeap<Reverse<Timed>>,
    sessions: HashMap<String, Session>,
    /// When each free closed-loop slot became free (its intended send time).
    free_slots: VecDeque<Instant>,
    in_flight: usize,
    asap_sent: u64,
    name: &'a str,
}

impl PhaseState<'_> {
    fn buffered(&self) -> usize {
        self.asap.len()
            + self.timed.len()
            + self
                .sessions
                .values()
                .map(|s| s.parked.len())
                .sum::<usize>()
    }

    fn place(&mut self, p: Prepared) {
        let session = p.meta.session_id.clone();
        match p.arrival {
            Arrival::Asap => self.asap.push_back(p),
            Arrival::AtOffsetMs(ms) => {
                let due = self.start + Duration::from_secs_f64(ms.max(0.0) / 1e3);
                self.timed.push(Reverse(Timed { due, request: p }));
            }
            Arrival::AfterPreviousTurn(think) => {
                let s = self
                    .sessions
                    .entry(session.clone().unwrap_or_default())
                    .or_default();
                if s.busy > 0 {
                    s.parked.push_back((p, think));
                    return;
                }
                let base = s.last_end.unwrap_or_else(Instant::now);
                let due = base + Duration::from_secs_f64(think.max(0.0) / 1e3);
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
        let Some(id) = session else { return };
        let Some(s) = self.sessions.get_mut(id) else {
            return;
        };
        s.busy = s.busy.saturating_sub(1);
        s.last_end = Some(end);
        if s.busy == 0
            && let Some((p, think)) = s.parked.pop_front()
        {
            s.busy += 1;
            let due = end + Duration::from_secs_f64(think.max(0.0) / 1e3);
            self.timed.push(Reverse(Timed { due, request: p }));
        }
    }

    /// The next request to send and its intended time, if one is eligible.
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

impl Runner {
    /// Runs `phases` in order, pulling requests from `feed`, until every phase
    /// is done or `stop` says otherwise.
    pub async fn run(
        &self,
        phases: &[PhaseRun],
        feed: &mut mpsc::Receiver<FeedItem>,
        events: &mpsc::UnboundedSender<Event>,
        mut stop: watch::Receiver<Option<StopReason>>,
    ) -> DispatchEnd {
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<(usize, Prepared, Outcome)>();
        let mut end = DispatchEnd::default();
        let index_of: HashMap<&str, usize> = phases
            .iter()
            .enumerate()
            .map(|(i, p)| (p.name.as_str(), i))
            .collect();
        // A request for a later phase, read while the current one was running.
        let mut carry: Option<Prepared> = None;
        let mut feed_closed = false;

        for (index, phase) in phases.iter().enumerate() {
            self.boundary(Boundary::Before(index)).await;
            let start = Instant::now();
            let _ = events.send(Event::PhaseStart { index, at: start });
            let mut st = PhaseState {
                index,
                start,
                load: phase.load,
                schedule: Schedule::new(phase.load, phase.seed),
                asap: VecDeque::new(),
                timed: BinaryHeap::new(),
                sessions: HashMap::new(),
                free_slots: match phase.load {
                    LoadModel::Closed { concurrency } => {
                        std::iter::repeat_n(start, concurrency as usize).collect()
                    }
                    _ => VecDeque::new(),
                },
                in_flight: 0,
                asap_sent: 0,
                name: &phase.name,
            };
            // The current phase has all its requests once a later phase's request or the end arrives.
            let mut phase_fed = feed_closed;
            if let Some(p) = carry.take() {
                match index_of.get(p.meta.phase.as_str()) {
                    Some(&i) if i == index => st.place(p),
                    _ => {
                        carry = Some(p);
                        phase_fed = true;
                    }
                }
            }

            loop {
                // Intake without waiting: completions first, then the feed.
                while let Ok((pi, p, o)) = done_rx.try_recv() {
                    self.complete(&mut st, pi, p, o, events);
                }
                while !phase_fed && st.buffered() < self.lookahead {
                    match feed.try_recv() {
                        Ok(item) => self.intake(
                            item,
                            &mut st,
                            &index_of,
                            &mut carry,
                            &mut phase_fed,
                            &mut feed_closed,
                            &mut end,
                        ),
                        Err(mpsc::error::TryRecvError::Empty) => break,
                        Err(mpsc::error::TryRecvError::Disconnected) => {
                            phase_fed = true;
                            feed_closed = true;
                        }
                    }
                }
                if stop.borrow().is_some() {
                    end.stopped = stop.borrow().clone();
                    break;
                }
                if phase_fed && st.buffered() == 0 && st.in_flight == 0 {
                    end.phases_completed += 1;
                    break;
                }

                let now = Instant::now();
                let next = st.next_due(self.max_in_flight);
                if let Some((due, from_asap)) = next
                    && due <= now
                {
                    let p = st.take(from_asap);
                    let client = self.client.clone();
                    let tx = done_tx.clone();
                    let pi = st.index;
                    tokio::spawn(async move {
                        let o = client.execute(&p, due).await;
                        let _ = tx.send((pi, p, o));
                    });
                    continue;
                }
                let sleep_until = next.map(|(due, _)| due);
                let want_feed = !phase_fed && st.buffered() < self.lookahead;
                tokio::select! {
                    biased;
                    Some((pi, p, o)) = done_rx.recv() => self.complete(&mut st, pi, p, o, events),
                    item = feed.recv(), if want_feed => match item {
                        Some(item) => self.intake(item, &mut st, &index_of, &mut carry, &mut phase_fed, &mut feed_closed, &mut end),
                        None => { phase_fed = true; feed_closed = true; }
                    },
                    _ = stop.changed() => {}
                    _ = sleep_opt(&self.timer, sleep_until) => {}
                }
            }

            if end.stopped.is_some() {
                end.unsent += st.buffered() as u64 + u64::from(carry.is_some());
                // Requests already sent finish on their own timeouts; keep their results.
                while st.in_flight > 0 {
                    match done_rx.recv().await {
                        Some((pi, p, o)) => self.complete(&mut st, pi, p, o, events),
                        None => break,
                    }
                }
                let _ = events.send(Event::PhaseEnd {
                    index,
                    at: Instant::now(),
                });
                self.boundary(Boundary::After(index)).await;
                tracing::warn!(phase = %st.name, "run stopped: {:?}", end.stopped);
                break;
            }
            let _ = events.send(Event::PhaseEnd {
                index,
                at: Instant::now(),
            });
            self.boundary(Boundary::After(index)).await;
        }
        end
    }

    async fn boundary(&self, b: Boundary) {
        if let Some(hook) = &self.boundaries {
            let (tx, rx) = tokio::sync::oneshot::channel();
            if hook.send((b, tx)).is_ok() {
                let _ = rx.await;
            }
        }
    }

    fn complete(
        &self,
        st: &mut PhaseState<'_>,
        phase_index: usize,
        request: Prepared,
        outcome: Outcome,
        events: &mpsc::UnboundedSender<Event>,
    ) {
        if phase_index == st.index {
            st.finished(request.meta.session_id.as_deref(), outcome.end);
        }
        let _ = events.send(Event::Finished(Box::new(Finished {
            phase_index,
            request,
            outcome,
        })));
    }

    #[allow(clippy::too_many_arguments)]
    fn intake(
        &self,
        item: FeedItem,
        st: &mut PhaseState<'_>,
        index_of: &HashMap<&str, usize>,
        carry: &mut Option<Prepared>,
        phase_fed: &mut bool,
        feed_closed: &mut bool,
        end: &mut DispatchEnd,
    ) {
        match item {
            FeedItem::Request(p) => match index_of.get(p.meta.phase.as_str()) {
                Some(&i) if i == st.index => st.place(p),
                Some(&i) if i > st.index => {
                    *carry = Some(p);
                    *phase_fed = true;
                }
                // The feed validates phase order; anything else is dropped loudly.
                _ => {
                    end.workload_error.get_or_insert(format!(
                        "request {} names phase {:?} after phase {:?} had started",
                        p.meta.id, p.meta.phase, st.name
                    ));
                }
            },
            FeedItem::Done => {
                *phase_fed = true;
                *feed_closed = true;
            }
            FeedItem::Failed(e) => {
                end.workload_error.get_or_insert(e);
                *phase_fed = true;
                *feed_closed = true;
            }
        }
    }
}

async fn sleep_opt(timer: &PreciseTimer, until: Option<Instant>) {
    match until {
        Some(t) => timer.sleep_until(t).await,
        None => std::future::pending().await,
    }
}
