//! Runs phases: sends each prepared request when [`Queue`] decides it is
//! due, and hands every finished request to the recorder.
//!
//! One scheduler task owns all queues, so streams share no scheduling lock
//! (only the connection pool's, once per request); request tasks own their
//! sockets and report back over a channel. The decisions themselves are
//! pure and tested in [`super::queue`]; this task owns the clock, the timer
//! and the channels.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};

use super::Prepared;
use super::client::{Client, Outcome};
use super::queue::{Decision, Queue};
use super::timer::PreciseTimer;
use crate::plan::{LoadModel, PlanError};

/// What the planner sends the dispatcher.
#[derive(Debug)]
pub enum FeedItem {
    Request(Prepared),
    /// No more requests will come.
    Done,
    /// The workload failed; already-planned requests still run.
    Failed(Arc<PlanError>),
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
    /// A stop signal (its name): in-flight requests finish.
    Interrupted(&'static str),
    /// A second stop signal: in-flight requests are given up.
    Abandoned(&'static str),
    /// The results could not be written (a full disk): measuring on would
    /// only lose what is measured.
    WriteFailed(String),
    /// `--duration` ran out: sending stopped, in-flight requests finished.
    /// Not a failure.
    DurationReached,
}

/// How the dispatch ended.
#[derive(Debug, Default)]
pub struct DispatchEnd {
    pub phases_completed: usize,
    pub stopped: Option<StopReason>,
    pub workload_error: Option<Arc<PlanError>>,
    /// Planned requests never sent because the run stopped.
    pub unsent: u64,
    /// Requests in flight when a second stop signal gave up on them: sent,
    /// never answered in time, and without a row.
    pub abandoned: u64,
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
    /// Most requests this task buffers ahead of their send time. The feed's
    /// channel holds up to as many again, so that the whole initial window
    /// is planned before the first send: `--lookahead` documents the sum.
    pub lookahead: usize,
    /// Cap on in-flight requests in open loop (protects the client machine).
    pub max_in_flight: usize,
    /// `--duration`: no send later than this after the first phase starts.
    pub duration: Option<Duration>,
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
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Completion>();
        let mut end = DispatchEnd::default();
        let mut queue = Queue::new(phases, self.lookahead, self.max_in_flight, Instant::now());
        let mut deadline: Option<Instant> = None;

        for index in 0..phases.len() {
            self.boundary(Boundary::Before(index)).await;
            let start = Instant::now();
            if deadline.is_none() {
                deadline = self.duration.map(|d| start + d);
            }
            let _ = events.send(Event::PhaseStart { index, at: start });
            queue.start_phase(index, start);

            loop {
                // Intake without waiting: completions first, then the feed.
                while let Ok(done) = done_rx.try_recv() {
                    complete(&mut queue, done, events);
                }
                if queue.wants_feed() {
                    let now = Instant::now();
                    while queue.wants_feed() {
                        match feed.try_recv() {
                            Ok(item) => queue.intake(item, now),
                            Err(mpsc::error::TryRecvError::Empty) => break,
                            Err(mpsc::error::TryRecvError::Disconnected) => queue.feed_closed(),
                        }
                    }
                }
                if stop.borrow().is_some() {
                    end.stopped = stop.borrow().clone();
                    break;
                }
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    end.stopped = Some(StopReason::DurationReached);
                    break;
                }
                if queue.phase_done() {
                    end.phases_completed += 1;
                    break;
                }

                let sleep_until = match queue.next(Instant::now()) {
                    Decision::SendNow { intended, request } => {
                        let client = self.client.clone();
                        let tx = done_tx.clone();
                        tokio::spawn(async move {
                            let outcome = client.execute(&request, intended).await;
                            let _ = tx.send(Completion {
                                phase_index: index,
                                request,
                                outcome,
                            });
                        });
                        continue;
                    }
                    Decision::SleepUntil(due) => Some(due),
                    Decision::Idle => None,
                };
                // Wake at the deadline too, so a send planned past it never goes.
                let sleep_until = match (sleep_until, deadline) {
                    (Some(s), Some(d)) => Some(s.min(d)),
                    (s, d) => s.or(d),
                };
                let want_feed = queue.wants_feed();
                tokio::select! {
                    biased;
                    Some(done) = done_rx.recv() => complete(&mut queue, done, events),
                    item = feed.recv(), if want_feed => match item {
                        Some(item) => queue.intake(item, Instant::now()),
                        None => queue.feed_closed(),
                    },
                    _ = stop.changed() => {}
                    _ = sleep_opt(&self.timer, sleep_until) => {}
                }
            }

            if end.stopped.is_some() {
                end.unsent += queue.unsent();
                // Requests already sent finish on their own timeouts; keep
                // their results, unless a second signal says not to wait.
                while queue.in_flight() > 0 {
                    if matches!(*stop.borrow(), Some(StopReason::Abandoned(_))) {
                        end.abandoned = queue.in_flight() as u64;
                        break;
                    }
                    tokio::select! {
                        done = done_rx.recv() => match done {
                            Some(done) => complete(&mut queue, done, events),
                            None => break,
                        },
                        changed = stop.changed() => if changed.is_err() {
                            // No one can escalate any more: wait for the rest.
                            while let Some(done) = done_rx.recv().await {
                                complete(&mut queue, done, events);
                                if queue.in_flight() == 0 {
                                    break;
                                }
                            }
                            break;
                        },
                    }
                }
                let _ = events.send(Event::PhaseEnd {
                    index,
                    at: Instant::now(),
                });
                // Even past a second signal: the phase's evidence needs its
                // closing snapshot, and a slow one meets the last-resort exit.
                self.boundary(Boundary::After(index)).await;
                if end.stopped == Some(StopReason::DurationReached) {
                    tracing::info!(phase = %queue.phase_name(), "--duration reached");
                } else {
                    tracing::warn!(phase = %queue.phase_name(), "run stopped: {:?}", end.stopped);
                }
                break;
            }
            let _ = events.send(Event::PhaseEnd {
                index,
                at: Instant::now(),
            });
            self.boundary(Boundary::After(index)).await;
        }
        end.workload_error = queue.workload_error();
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
}

/// A request task's report: which phase sent it, and what happened.
struct Completion {
    phase_index: usize,
    request: Prepared,
    outcome: Outcome,
}

fn complete(queue: &mut Queue<'_>, done: Completion, events: &mpsc::UnboundedSender<Event>) {
    let Completion {
        phase_index,
        request,
        outcome,
    } = done;
    queue.finished(phase_index, request.meta.session_id.as_deref(), outcome.end);
    let _ = events.send(Event::Finished(Box::new(Finished {
        phase_index,
        request,
        outcome,
    })));
}

async fn sleep_opt(timer: &PreciseTimer, until: Option<Instant>) {
    match until {
        Some(t) => timer.sleep_until(t).await,
        None => std::future::pending().await,
    }
}
