//! The engine's real-time thread: runs [`Engine::step`] back to back,
//! sleeps precisely to each step's end, then writes that step's streamed
//! chunks to the sockets itself, and keeps the schedule record a benchmark
//! checks against.
//!
//! A plain thread rather than a task: disk-tier reads and writes are
//! blocking O_DIRECT syscalls, and tokio's timer wheel ticks in 1 ms, too
//! coarse for a schedule that should hold to well under a millisecond.
//!
//! Writing from this thread (rather than waking one connection task per
//! token through a channel) is what lets one core keep a 256-stream
//! schedule: a token costs one non-blocking `write` here, no task wake-up,
//! no allocation. A connection task only runs when a socket's buffer was
//! full (it then flushes what the engine queued, in order) and at the end
//! of its request.

use std::collections::{HashMap, VecDeque};
use std::io::Write;
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::{Notify, oneshot};

use crate::engine::{Engine, Event, Finish, Ns, Occupancy, Request, StepResult};
use crate::metrics::KvbmView;
use crate::tokens::filler_text;

pub(crate) enum Cmd {
    Submit { req: Request, sink: EngineSink },
    Reset { ack: oneshot::Sender<()> },
    Shutdown,
}

/// How a request's streamed chunks are framed: `head` + token text + `"` +
/// (chat, first token: the role) + `tail`, as one HTTP chunk.
pub(crate) struct ChunkFormat {
    pub sock: Arc<std::net::TcpStream>,
    pub head: Vec<u8>,
    pub tail: Vec<u8>,
    pub chat: bool,
}

/// How a request ended, as the engine reported it.
#[derive(Clone, Copy)]
pub(crate) struct Done {
    pub at: Ns,
    pub finish: Finish,
    pub prompt_tokens: u32,
    pub cached_tokens: u32,
    pub completion_tokens: u32,
}

#[derive(Default)]
pub(crate) struct SinkState {
    /// None for a unary response, or once the connection gave up.
    pub out: Option<ChunkFormat>,
    /// Bytes not yet handed to the socket, in order. While this is
    /// non-empty or the task is writing, the engine appends here instead of
    /// writing, so chunks never overtake each other.
    pub pending: Vec<u8>,
    /// Tokens in `pending` (or being written by the task) whose write time
    /// is still to be recorded.
    pub pending_tokens: usize,
    pub task_writing: bool,
    /// Chunks the engine rendered but holds back while it is behind
    /// schedule, to write several steps' tokens in one syscall.
    outbox: Vec<u8>,
    outbox_tokens: usize,
    /// In the engine's list of sinks with a non-empty outbox.
    queued: bool,
    pub scheduled: Vec<Ns>,
    pub written: Vec<Ns>,
    pub done: Option<Done>,
    /// The engine dropped the request without finishing it (it stopped).
    pub engine_gone: bool,
}

/// Where the engine delivers one request's tokens; shared by the engine
/// thread and the connection task.
#[derive(Default)]
pub(crate) struct Sink {
    state: Mutex<SinkState>,
    pub notify: Notify,
}

impl Sink {
    pub fn lock(&self) -> MutexGuard<'_, SinkState> {
        // A poisoned sink only means a panic elsewhere; its data is plain.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The engine's end of a [`Sink`]. Dropping it (request finished, engine
/// stopped, or the command never delivered) always wakes the task, so a
/// connection never waits on an engine that is gone.
pub(crate) struct EngineSink(pub Arc<Sink>);

impl Drop for EngineSink {
    fn drop(&mut self) {
        {
            let mut g = self.0.lock();
            if g.done.is_none() {
                g.engine_gone = true;
            }
        }
        self.0.notify.notify_one();
    }
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

/// Behind schedule by more than this when a step's tokens are due, the
/// engine holds them to write with the next steps' (see the main loop).
const COALESCE_NS: Ns = 200_000;
/// At most this many steps' chunks are held before they are written.
const MAX_HELD_STEPS: u32 = 32;

/// Kernel sleep ends this long before a step's end; the rest is spun.
/// With a 1 ns timer slack (see [`tight_timer_slack`]) the wake-up lands
/// within a few µs, so the spin is short and steals little from the server
/// when both share one core.
const SPIN_NS: Ns = 30_000;

/// Sleeps in the kernel until just before `t`, then spins until `t`. It
/// never returns before `t`: a token is never written before its time.
fn sleep_until(shared: &Shared, t: Ns) {
    loop {
        let now = shared.now_ns();
        if now >= t {
            return;
        }
        let left = t - now;
        if left > SPIN_NS + 10_000 {
            std::thread::sleep(Duration::from_nanos(left - SPIN_NS));
        } else {
            std::hint::spin_loop();
        }
    }
}

/// Linux rounds a sleeping thread's timer up by its timer slack, 50 µs by
/// default; 1 ns makes `nanosleep` wake when asked. Best effort: on failure
/// the spin simply runs longer.
#[allow(unsafe_code)]
fn tight_timer_slack() {
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_TIMERSLACK takes an integer and touches no memory of ours.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong, 0, 0, 0);
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
            tight_timer_slack();
            // Dropped on every exit path: each EngineSink's drop wakes its task.
            let mut sinks: HashMap<u64, EngineSink> = HashMap::new();
            let mut prev_end: Option<Ns> = None;
            let mut published_transfers = u64::MAX;
            // Sinks holding chunks not yet written, and for how many steps.
            let mut touched: Vec<Arc<Sink>> = Vec::new();
            let mut held_steps = 0u32;
            let mut publish = |e: &Engine| {
                let (h, d) = e.hit_rates();
                let occ = e.occupancy();
                let mut g = shared.view.lock().unwrap_or_else(|p| p.into_inner());
                g.0.counters.clone_from(e.counters());
                g.0.host_rate = h;
                g.0.disk_rate = d;
                g.0.offloads_in_flight = occ.offloads_in_flight;
                // The histograms are the only heap data: copy them only
                // when a transfer was observed since the last copy.
                if e.transfers_observed() != published_transfers {
                    published_transfers = e.transfers_observed();
                    g.0.transfers.clone_from(e.transfers());
                }
                g.1 = occ;
            };
            // Returns false on shutdown.
            let handle = |c: Cmd,
                          e: &mut Engine,
                          s: &mut HashMap<u64, EngineSink>,
                          publish: &mut dyn FnMut(&Engine)|
             -> bool {
                match c {
                    Cmd::Submit { req, sink } => {
                        s.insert(req.id, sink);
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
                            if !handle(c, &mut engine, &mut sinks, &mut publish) {
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
                        if end > shared.now_ns() {
                            // Held chunks are overdue: out before we sleep.
                            flush_all(&shared, &mut touched);
                            held_steps = 0;
                        }
                        sleep_until(&shared, end);
                        // Before the tokens leave, so a client that has its
                        // answer never scrapes counters older than it.
                        publish(&engine);
                        dispatch(&shared, &mut sinks, events, &mut touched);
                        // On time, every step's chunks leave at once. Behind
                        // schedule, the next steps are due already: holding
                        // their chunks to write several per syscall is how
                        // the thread catches up rather than falling further
                        // behind with one write per token.
                        held_steps += 1;
                        if shared.now_ns().saturating_sub(end) < COALESCE_NS
                            || held_steps >= MAX_HELD_STEPS
                        {
                            flush_all(&shared, &mut touched);
                            held_steps = 0;
                        }
                        prev_end = Some(end);
                    }
                    StepResult::WaitUntil(t) => {
                        flush_all(&shared, &mut touched);
                        held_steps = 0;
                        publish(&engine);
                        prev_end = None;
                        let wait = Duration::from_nanos(t.saturating_sub(shared.now_ns()));
                        match rx.recv_timeout(wait) {
                            Ok(c) => {
                                if !handle(c, &mut engine, &mut sinks, &mut publish) {
                                    return;
                                }
                            }
                            Err(RecvTimeoutError::Timeout) => {}
                            Err(RecvTimeoutError::Disconnected) => return,
                        }
                    }
                    StepResult::Idle => {
                        flush_all(&shared, &mut touched);
                        held_steps = 0;
                        publish(&engine);
                        prev_end = None;
                        match rx.recv() {
                            Ok(c) => {
                                if !handle(c, &mut engine, &mut sinks, &mut publish) {
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

/// Appends one streamed token's HTTP chunk to `buf`.
fn render_chunk(f: &ChunkFormat, index: u32, buf: &mut Vec<u8>) {
    let text = filler_text(index).as_bytes();
    let role: &[u8] = if f.chat && index == 0 {
        b",\"role\":\"assistant\""
    } else {
        b""
    };
    let len = f.head.len() + text.len() + 1 + role.len() + f.tail.len();
    // Chunk sizes are hex; writing into a Vec cannot fail.
    let _ = write!(buf, "{len:x}\r\n");
    buf.extend_from_slice(&f.head);
    buf.extend_from_slice(text);
    buf.push(b'"');
    buf.extend_from_slice(role);
    buf.extend_from_slice(&f.tail);
    buf.extend_from_slice(b"\r\n");
}

/// Renders one token's chunk into its sink's outbox. True when the sink
/// was not yet in the engine's list of sinks to flush.
fn queue(sink: &Sink, index: u32, at: Ns) -> bool {
    let mut g = sink.lock();
    g.scheduled.push(at);
    let st = &mut *g;
    let Some(f) = &st.out else {
        return false;
    };
    render_chunk(f, index, &mut st.outbox);
    st.outbox_tokens += 1;
    !std::mem::replace(&mut st.queued, true)
}

/// Writes a sink's outbox to its socket at once when nothing is queued
/// ahead of it; otherwise (a full socket buffer, a flush under way) hands
/// it to the connection's task, which writes it in order.
fn flush_sink(shared: &Shared, sink: &Sink) {
    let mut g = sink.lock();
    let st = &mut *g;
    st.queued = false;
    if st.outbox.is_empty() {
        return;
    }
    let Some(f) = &st.out else {
        st.outbox.clear();
        st.outbox_tokens = 0;
        return;
    };
    let mut sent = 0;
    if !st.task_writing && st.pending.is_empty() {
        loop {
            match (&*f.sock).write(&st.outbox[sent..]) {
                Ok(n) => {
                    sent += n;
                    if sent == st.outbox.len() || n == 0 {
                        break;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(_) => {
                    // The client went away; the sequence still runs to
                    // completion (no cancellation), its chunks go nowhere.
                    st.out = None;
                    st.outbox.clear();
                    st.outbox_tokens = 0;
                    return;
                }
            }
        }
        if sent == st.outbox.len() {
            let now = shared.now_ns();
            st.written.extend(std::iter::repeat_n(
                now,
                std::mem::take(&mut st.outbox_tokens),
            ));
            st.outbox.clear();
            return;
        }
    }
    // Tokens only partly written count as written when the task finishes
    // them: a later time, never an earlier one.
    st.pending.extend_from_slice(&st.outbox[sent..]);
    st.outbox.clear();
    st.pending_tokens += std::mem::take(&mut st.outbox_tokens);
    drop(g);
    sink.notify.notify_one();
}

fn flush_all(shared: &Shared, touched: &mut Vec<Arc<Sink>>) {
    for s in touched.drain(..) {
        flush_sink(shared, &s);
    }
}

/// Queues a step's tokens on their sinks (the caller flushes them) and
/// closes finished requests, whose last chunks are written first.
fn dispatch(
    shared: &Shared,
    sinks: &mut HashMap<u64, EngineSink>,
    events: Vec<Event>,
    touched: &mut Vec<Arc<Sink>>,
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
            Event::Token { req, index, at } => {
                if let Some(s) = sinks.get(&req)
                    && queue(&s.0, index, at)
                {
                    touched.push(s.0.clone());
                }
            }
            Event::Done {
                req,
                at,
                finish,
                prompt_tokens,
                cached_tokens,
                completion_tokens,
            } => {
                if let Some(s) = sinks.remove(&req) {
                    flush_sink(shared, &s.0);
                    s.0.lock().done = Some(Done {
                        at,
                        finish,
                        prompt_tokens,
                        cached_tokens,
                        completion_tokens,
                    });
                    // Dropping `s` wakes the task.
                }
            }
        }
    }
}
