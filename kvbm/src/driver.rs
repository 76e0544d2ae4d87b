//! The engine's real-time thread: runs [`Engine::step`] back to back,
//! sleeps precisely to each step's end, then hands that step's tokens to the
//! connections, and keeps the schedule record a benchmark checks against.
//!
//! A plain thread rather than a task: disk-tier reads and writes are
//! blocking O_DIRECT syscalls, and tokio's timer wheel ticks in 1 ms, too
//! coarse for a schedule that should hold to well under a millisecond.

use std::collections::{HashMap, VecDeque};
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use crate::engine::{Engine, Event, Ns, Occupancy, Request, StepResult};
use crate::metrics::KvbmView;

pub(crate) enum Cmd {
    Submit {
        req: Request,
        tx: mpsc::UnboundedSender<Event>,
    },
    Reset {
        ack: oneshot::Sender<()>,
    },
    Shutdown,
}

/// What the simulator planned and did for one request.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct ScheduleRecord {
    /// The response `id` clients see.
    pub id: String,
    pub stream: bool,
    /// When the request was fully read, ns since the simulator started.
    pub arrival_ns: u64,
    /// When the engine's model says each token is emitted.
    pub scheduled_ns: Vec<u64>,
    /// When each chunk was handed to the socket (one entry for a unary
    /// response: when the whole body was).
    pub written_ns: Vec<u64>,
    pub prompt_tokens: u32,
    pub cached_tokens: u32,
}

/// Records kept, oldest dropped first, so a long run cannot grow without bound.
pub const MAX_SCHEDULE_RECORDS: usize = 100_000;

#[derive(Default)]
pub(crate) struct ScheduleLog {
    order: VecDeque<u64>,
    recs: HashMap<u64, ScheduleRecord>,
}

impl ScheduleLog {
    pub fn open(&mut self, req: u64, rec: ScheduleRecord) {
        if self.order.len() >= MAX_SCHEDULE_RECORDS
            && let Some(old) = self.order.pop_front()
        {
            self.recs.remove(&old);
        }
        self.order.push_back(req);
        self.recs.insert(req, rec);
    }
    pub fn get_mut(&mut self, req: u64) -> Option<&mut ScheduleRecord> {
        self.recs.get_mut(&req)
    }
    pub fn all(&self) -> Vec<ScheduleRecord> {
        self.order
            .iter()
            .filter_map(|r| self.recs.get(r).cloned())
            .collect()
    }
    pub fn clear(&mut self) {
        self.order.clear();
        self.recs.clear();
    }
}

pub(crate) struct Shared {
    pub epoch: Instant,
    pub view: Mutex<(KvbmView, Occupancy)>,
    pub schedule: Mutex<ScheduleLog>,
}

impl Shared {
    pub fn now_ns(&self) -> Ns {
        self.epoch.elapsed().as_nanos() as Ns
    }
}

/// Beyond this much lateness the engine re-anchors to real time instead of
/// chaining steps end to start (its thread was starved, say).
const SLIP_NS: Ns = 5_000_000;

/// Sleeps in the kernel until just before `t`, then yields until `t`:
/// nanosleep alone overshoots by the timer slack (~50 µs).
fn sleep_until(shared: &Shared, t: Ns) {
    loop {
        let now = shared.now_ns();
        if now >= t {
            return;
        }
        let left = t - now;
        if left > 150_000 {
            std::thread::sleep(Duration::from_nanos(left - 100_000));
        } else {
            std::thread::yield_now();
        }
    }
}

pub(crate) fn spawn(
    mut engine: Engine,
    shared: Arc<Shared>,
    rx: Receiver<Cmd>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("kvbm-sim-engine".into())
        .spawn(move || {
            let mut senders: HashMap<u64, mpsc::UnboundedSender<Event>> = HashMap::new();
            let mut prev_end: Option<Ns> = None;
            let publish = |e: &Engine| {
                let (h, d) = e.hit_rates();
                let occ = e.occupancy();
                let v = KvbmView {
                    counters: e.counters().clone(),
                    host_rate: h,
                    disk_rate: d,
                    transfers: e.transfers().clone(),
                    offloads_in_flight: occ.offloads_in_flight,
                };
                if let Ok(mut g) = shared.view.lock() {
                    *g = (v, occ);
                }
            };
            // Returns false on shutdown.
            let handle = |c: Cmd, e: &mut Engine, s: &mut HashMap<_, _>| -> bool {
                match c {
                    Cmd::Submit { req, tx } => {
                        s.insert(req.id, tx);
                        e.submit(req);
                    }
                    Cmd::Reset { ack } => {
                        e.reset();
                        publish(e);
                        let _ = ack.send(());
                    }
                    Cmd::Shutdown => return false,
                }
                true
            };
            publish(&engine);
            loop {
                loop {
                    match rx.try_recv() {
                        Ok(c) => {
                            if !handle(c, &mut engine, &mut senders) {
                                return;
                            }
                        }
                        Err(TryRecvError::Empty) => break,
                        Err(TryRecvError::Disconnected) => return,
                    }
                }
                let real = shared.now_ns();
                let now = match prev_end {
                    Some(e) if real.saturating_sub(e) < SLIP_NS => e,
                    _ => real,
                };
                match engine.step(now) {
                    StepResult::Ran { end, events } => {
                        sleep_until(&shared, end);
                        dispatch(&shared, &mut senders, events);
                        publish(&engine);
                        prev_end = Some(end);
                    }
                    StepResult::WaitUntil(t) => {
                        publish(&engine);
                        prev_end = None;
                        let wait = Duration::from_nanos(t.saturating_sub(shared.now_ns()));
                        match rx.recv_timeout(wait) {
                            Ok(c) => {
                                if !handle(c, &mut engine, &mut senders) {
                                    return;
                                }
                            }
                            Err(RecvTimeoutError::Timeout) => {}
                            Err(RecvTimeoutError::Disconnected) => return,
                        }
                    }
                    StepResult::Idle => {
                        publish(&engine);
                        prev_end = None;
                        match rx.recv() {
                            Ok(c) => {
                                if !handle(c, &mut engine, &mut senders) {
                                    return;
                                }
                            }
                            Err(_) => return,
                        }
                    }
                }
            }
        })
}

fn dispatch(
    shared: &Shared,
    senders: &mut HashMap<u64, mpsc::UnboundedSender<Event>>,
    events: Vec<Event>,
) {
    if let Ok(mut log) = shared.schedule.lock() {
        for e in &events {
            match e {
                Event::Token { req, at, .. } => {
                    if let Some(r) = log.get_mut(*req) {
                        r.scheduled_ns.push(*at);
                    }
                }
                Event::Done {
                    req, cached_tokens, ..
                } => {
                    if let Some(r) = log.get_mut(*req) {
                        r.cached_tokens = *cached_tokens;
                    }
                }
            }
        }
    }
    for e in events {
        match e {
            Event::Token { req, .. } => {
                if let Some(tx) = senders.get(&req) {
                    let _ = tx.send(e);
                }
            }
            Event::Done { req, .. } => {
                if let Some(tx) = senders.remove(&req) {
                    let _ = tx.send(e);
                }
            }
        }
    }
}
