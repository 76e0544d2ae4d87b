//! The engine model: continuous batching over a GPU block pool (G1) with
//! KVBM-style host (G2) and disk (G3) tiers.
//!
//! Pure and deterministic given time: [`Engine::step`] takes "now" in ns
//! since the simulator started and returns when the step ends and which
//! tokens it produced. The real-time driver (`driver.rs`) sleeps between
//! steps; tests drive it with a virtual clock. The only side effect is the
//! disk tier's [`BlockStore`], which a test replaces with [`NullStore`].

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Duration;

use serde::Serialize;

use crate::disk::BlockStore;
use crate::metrics::{Histogram, TRANSFER_BUCKETS};
use crate::profile::Profile;
use crate::tokens::block_hash;

/// Nanoseconds since the simulator started.
pub type Ns = u64;

/// Which KV tiers exist.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    serde::Deserialize,
    schemars::JsonSchema,
)]
pub enum TierMode {
    /// GPU only.
    B0,
    /// GPU + host.
    B1,
    /// GPU + host + disk.
    B2,
}

impl std::str::FromStr for TierMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_uppercase().as_str() {
            "B0" => Ok(TierMode::B0),
            "B1" => Ok(TierMode::B1),
            "B2" => Ok(TierMode::B2),
            _ => Err(format!("tier mode {s:?}: expected B0, B1 or B2")),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Finish {
    Length,
    Stop,
}

impl Finish {
    pub fn as_str(self) -> &'static str {
        match self {
            Finish::Length => "length",
            Finish::Stop => "stop",
        }
    }
}

/// One request as the engine sees it.
#[derive(Debug, Clone)]
pub struct Request {
    pub id: u64,
    pub prompt: Vec<u32>,
    /// Tokens to generate (already capped by the caller).
    pub max_tokens: u32,
    /// Stop early with `finish_reason: stop` after this many tokens.
    pub stop_after: Option<u32>,
    pub arrival: Ns,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Token `index` (0-based) of request `req` is emitted at `at`.
    Token { req: u64, index: u32, at: Ns },
    Done {
        req: u64,
        at: Ns,
        finish: Finish,
        prompt_tokens: u32,
        cached_tokens: u32,
        completion_tokens: u32,
    },
}

#[derive(Debug)]
pub enum StepResult {
    /// A step ran from `now` to `end`; its events happen at `end`.
    Ran { end: Ns, events: Vec<Event> },
    /// Work is waiting on something (an arrival after `now`, or G1 space
    /// held by in-flight offloads) that happens at this time.
    WaitUntil(Ns),
    /// Nothing to do until a request arrives.
    Idle,
}

/// Cumulative transfer counts, in blocks (tokens for `matched_tokens`),
/// named by what physically moved. `metrics.rs` maps them to KVBM v1 or v2.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Counters {
    /// G1 → G2.
    pub offload_gpu_to_host: u64,
    /// G2 → G3.
    pub offload_host_to_disk: u64,
    /// G1 → G3 (disk-only mode: a disk tier with no host tier).
    pub offload_gpu_to_disk: u64,
    /// G2 → G1.
    pub onboard_host_to_gpu: u64,
    /// G3 → G1 (direct, or the last leg of a staged onboard).
    pub onboard_disk_to_gpu: u64,
    /// G3 → G2, staged onboarding only.
    pub onboard_disk_to_host: u64,
    /// Tokens matched in the host and disk tiers (not G1).
    pub matched_tokens: u64,
    pub gpu_hit_blocks: u64,
    pub host_hit_blocks: u64,
    pub disk_hit_blocks: u64,
    /// Offloads that found no room (every target block pinned) and were dropped.
    pub offload_dropped: u64,
    pub disk_write_failures: u64,
    pub disk_read_failures: u64,
    pub requests_finished: u64,
}

/// Block counts per tier right now.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Occupancy {
    pub gpu_capacity: u64,
    pub gpu_used: u64,
    pub gpu_registered: u64,
    pub host_capacity: u64,
    pub host_used: u64,
    pub disk_capacity: u64,
    pub disk_used: u64,
    pub offloads_in_flight: u64,
    pub running: u64,
    pub waiting: u64,
}

/// KVBM's hit-rate window: the last N requests with at least one block;
/// rate = Σ tier-hit blocks ÷ Σ request blocks (`cache_stats.rs`).
#[derive(Debug, Clone)]
pub struct HitWindow {
    cap: usize,
    items: VecDeque<(u64, u64, u64)>,
    host: u64,
    disk: u64,
    total: u64,
}

impl HitWindow {
    pub fn new(cap: usize) -> Self {
        HitWindow {
            cap: cap.max(1),
            items: VecDeque::new(),
            host: 0,
            disk: 0,
            total: 0,
        }
    }

    pub fn record(&mut self, host: u64, disk: u64, total: u64) {
        if total == 0 {
            return;
        }
        if self.items.len() == self.cap
            && let Some((h, d, t)) = self.items.pop_front()
        {
            self.host -= h;
            self.disk -= d;
            self.total -= t;
        }
        self.items.push_back((host, disk, total));
        self.host += host;
        self.disk += disk;
        self.total += total;
    }

    /// (host rate, disk rate), each 0–1; 0 with an empty window.
    pub fn rates(&self) -> (f64, f64) {
        if self.total == 0 {
            return (0.0, 0.0);
        }
        let t = self.total as f64;
        (self.host as f64 / t, self.disk as f64 / t)
    }
}

/// Per-(operation, route) transfer durations, for KVBM v2's
/// `kvbm_transfer_duration_seconds`.
pub type TransferHists = BTreeMap<(&'static str, &'static str), Histogram>;

#[derive(Debug)]
struct GpuBlock {
    refs: u32,
    lru: u64,
    /// An offload out of G1 is in flight: the block cannot be evicted.
    pinned: bool,
}

/// G1: registered blocks by hash, an LRU of evictable ones, and a count of
/// reserved-but-unregistered blocks held by running sequences.
#[derive(Debug, Default)]
struct GpuPool {
    capacity: u64,
    /// LRU order; every insertion gets a fresh value so none collide.
    clock: u64,
    private: u64,
    blocks: HashMap<u64, GpuBlock>,
    free: BTreeMap<u64, u64>,
}

impl GpuPool {
    fn used(&self) -> u64 {
        self.private + self.blocks.len() as u64
    }

    fn evictable(b: &GpuBlock) -> bool {
        b.refs == 0 && !b.pinned
    }

    /// Makes room for `n` more blocks by evicting LRU free blocks; false (and
    /// nothing evicted) if it cannot.
    fn make_room(&mut self, n: u64) -> bool {
        let free_now = self.capacity.saturating_sub(self.used());
        if free_now >= n {
            return true;
        }
        if free_now + (self.free.len() as u64) < n {
            return false;
        }
        while self.capacity.saturating_sub(self.used()) < n {
            let Some((_, h)) = self.free.pop_first() else {
                return false;
            };
            self.blocks.remove(&h);
        }
        true
    }

    fn acquire(&mut self, h: u64) {
        if let Some(b) = self.blocks.get_mut(&h) {
            if Self::evictable(b) {
                self.free.remove(&b.lru);
            }
            b.refs += 1;
        }
    }

    fn release(&mut self, h: u64) {
        self.clock += 1;
        let tick = self.clock;
        if let Some(b) = self.blocks.get_mut(&h) {
            b.refs = b.refs.saturating_sub(1);
            if Self::evictable(b) {
                b.lru = tick;
                self.free.insert(tick, h);
            }
        }
    }

    fn set_pinned(&mut self, h: u64, pinned: bool) {
        self.clock += 1;
        let tick = self.clock;
        if let Some(b) = self.blocks.get_mut(&h) {
            let was = Self::evictable(b);
            b.pinned = pinned;
            let now = Self::evictable(b);
            if was && !now {
                self.free.remove(&b.lru);
            } else if !was && now {
                b.lru = tick;
                self.free.insert(tick, h);
            }
        }
    }
}

#[derive(Debug)]
struct TierBlock {
    lru: u64,
    /// An offload out of this tier is in flight.
    pinned: bool,
    slot: u64,
}

/// G2 or G3: an LRU of blocks by hash; on disk, each block has a file slot.
#[derive(Debug, Default)]
struct Tier {
    capacity: u64,
    clock: u64,
    blocks: HashMap<u64, TierBlock>,
    lru: BTreeMap<u64, u64>,
    free_slots: Vec<u64>,
}

impl Tier {
    fn new(capacity: u64) -> Self {
        Tier {
            capacity,
            clock: 0,
            blocks: HashMap::new(),
            lru: BTreeMap::new(),
            free_slots: (0..capacity).rev().collect(),
        }
    }

    fn touch(&mut self, h: u64) {
        self.clock += 1;
        let tick = self.clock;
        if let Some(b) = self.blocks.get_mut(&h) {
            if !b.pinned {
                self.lru.remove(&b.lru);
                self.lru.insert(tick, h);
            }
            b.lru = tick;
        }
    }

    /// Inserts `h`, evicting the LRU unpinned block if full. Returns its slot,
    /// or None when every block is pinned.
    fn insert(&mut self, h: u64) -> Option<u64> {
        if let Some(b) = self.blocks.get(&h) {
            let s = b.slot;
            self.touch(h);
            return Some(s);
        }
        self.clock += 1;
        let tick = self.clock;
        if self.capacity == 0 {
            return None;
        }
        if self.free_slots.is_empty() {
            let (_, victim) = self.lru.pop_first()?;
            if let Some(b) = self.blocks.remove(&victim) {
                self.free_slots.push(b.slot);
            }
        }
        let slot = self.free_slots.pop()?;
        self.blocks.insert(
            h,
            TierBlock {
                lru: tick,
                pinned: false,
                slot,
            },
        );
        self.lru.insert(tick, h);
        Some(slot)
    }

    fn set_pinned(&mut self, h: u64, pinned: bool) {
        if let Some(b) = self.blocks.get_mut(&h)
            && b.pinned != pinned
        {
            b.pinned = pinned;
            if pinned {
                self.lru.remove(&b.lru);
            } else {
                self.lru.insert(b.lru, h);
            }
        }
    }

    fn clear(&mut self) {
        let clock = self.clock;
        *self = Tier::new(self.capacity);
        self.clock = clock;
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Leg {
    GpuToHost,
    HostToDisk,
    GpuToDisk,
}

/// One bandwidth-bounded transfer engine: batches queue behind each other.
#[derive(Debug, Default)]
struct Lane {
    busy_until: Ns,
    /// (completion time, block hashes), in completion order.
    inflight: VecDeque<(Ns, Vec<u64>)>,
}

impl Lane {
    fn blocks(&self) -> u64 {
        self.inflight.iter().map(|(_, v)| v.len() as u64).sum()
    }
}

#[derive(Debug)]
struct Seq {
    id: u64,
    tokens: Vec<u32>,
    prompt_len: u32,
    target: u32,
    finish: Finish,
    computed: u32,
    cached: u32,
    generated: u32,
    /// Chained hashes of this sequence's registered full blocks, in order.
    hashes: Vec<u64>,
    /// Reserved G1 blocks not yet registered.
    private: u64,
    /// Onboard time this sequence adds to its first step.
    onboard_ns: Ns,
}

/// Options that change the model rather than the profile.
#[derive(Debug, Clone, Copy)]
pub struct EngineOptions {
    pub mode: TierMode,
    /// KVBM v2 without GPUDirect Storage: a disk hit is staged G3 → G2 → G1.
    pub staged_disk_onboard: bool,
    /// Time disk onboarding by the real reads instead of the model.
    pub measured_disk_timing: bool,
}

pub struct Engine {
    p: Profile,
    opt: EngineOptions,
    block_bytes: f64,
    bs: usize,
    gpu: GpuPool,
    host: Tier,
    disk: Tier,
    /// How often each block was registered in G1: the disk offload filter.
    freq: HashMap<u64, u32>,
    lanes: [Lane; 3],
    /// Offloads decided this step, queued as one batch per leg at its end.
    pending: [Vec<u64>; 3],
    waiting: VecDeque<Request>,
    running: Vec<Seq>,
    counters: Counters,
    window: HitWindow,
    transfers: TransferHists,
    /// Transfers observed so far, so the driver copies the histograms
    /// only when they changed.
    transfers_observed: u64,
    store: Box<dyn BlockStore>,
}

/// Bound on the filter's memory: well above every tier's blocks together.
const FREQ_FACTOR: u64 = 4;

impl Engine {
    pub fn new(p: Profile, opt: EngineOptions, store: Box<dyn BlockStore>) -> Self {
        let (host_cap, disk_cap) = match opt.mode {
            TierMode::B0 => (0, 0),
            TierMode::B1 => (p.cpu_blocks(), 0),
            TierMode::B2 => (p.cpu_blocks(), p.disk_blocks()),
        };
        let window = HitWindow::new(p.cache_stats_max_requests as usize);
        Engine {
            block_bytes: p.block_bytes() as f64,
            bs: p.block_size as usize,
            gpu: GpuPool {
                capacity: p.gpu_blocks(),
                ..GpuPool::default()
            },
            host: Tier::new(host_cap),
            disk: Tier::new(disk_cap),
            freq: HashMap::new(),
            lanes: Default::default(),
            pending: Default::default(),
            waiting: VecDeque::new(),
            running: Vec::new(),
            counters: Counters::default(),
            window,
            transfers: BTreeMap::new(),
            transfers_observed: 0,
            store,
            opt,
            p,
        }
    }

    pub fn profile(&self) -> &Profile {
        &self.p
    }
    pub fn counters(&self) -> &Counters {
        &self.counters
    }
    pub fn hit_rates(&self) -> (f64, f64) {
        self.window.rates()
    }
    pub fn transfers(&self) -> &TransferHists {
        &self.transfers
    }
    /// How many transfers [`Engine::transfers`] has observed: changes
    /// whenever the histograms do.
    pub fn transfers_observed(&self) -> u64 {
        self.transfers_observed
    }
    pub fn occupancy(&self) -> Occupancy {
        Occupancy {
            gpu_capacity: self.gpu.capacity,
            gpu_used: self.gpu.used(),
            gpu_registered: self.gpu.blocks.len() as u64,
            host_capacity: self.host.capacity,
            host_used: self.host.blocks.len() as u64,
            disk_capacity: self.disk.capacity,
            disk_used: self.disk.blocks.len() as u64,
            offloads_in_flight: self.lanes.iter().map(Lane::blocks).sum(),
            running: self.running.len() as u64,
            waiting: self.waiting.len() as u64,
        }
    }

    pub fn submit(&mut self, r: Request) {
        self.waiting.push_back(r);
    }

    /// Empties every tier. Blocks held by running sequences stay in G1 (they
    /// are in use) but are forgotten when those sequences finish; counters
    /// are monotonic and are kept.
    pub fn reset(&mut self) {
        let held: std::collections::HashSet<u64> = self
            .running
            .iter()
            .flat_map(|s| s.hashes.iter().copied())
            .collect();
        self.gpu.blocks.retain(|h, _| held.contains(h));
        self.gpu.free.clear();
        for b in self.gpu.blocks.values_mut() {
            b.pinned = false;
        }
        self.host.clear();
        self.disk.clear();
        self.freq.clear();
        self.lanes = Default::default();
        self.pending = Default::default();
    }

    fn ns(us: f64) -> Ns {
        (us * 1000.0).round().max(0.0) as Ns
    }

    fn xfer_ns(&self, blocks: u64, gbps: f64, latency_us: f64) -> Ns {
        if blocks == 0 {
            return 0;
        }
        let s = blocks as f64 * self.block_bytes / (gbps * 1e9);
        (s * 1e9).round() as Ns + Self::ns(latency_us)
    }

    fn observe(&mut self, op: &'static str, route: &'static str, ns: Ns) {
        self.transfers_observed += 1;
        self.transfers
            .entry((op, route))
            .or_insert_with(|| Histogram::new(TRANSFER_BUCKETS))
            .observe(ns as f64 / 1e9);
    }

    /// Lands every offload that completed by `now`.
    fn complete_offloads(&mut self, now: Ns) {
        for lane in [Leg::GpuToHost, Leg::HostToDisk, Leg::GpuToDisk] {
            loop {
                let l = &mut self.lanes[lane as usize];
                match l.inflight.front() {
                    Some((t, _)) if *t <= now => {}
                    _ => break,
                }
                let Some((_, hashes)) = l.inflight.pop_front() else {
                    break;
                };
                for h in hashes {
                    self.land(lane, h);
                }
            }
        }
    }

    fn land(&mut self, leg: Leg, h: u64) {
        match leg {
            Leg::GpuToHost => {
                self.gpu.set_pinned(h, false);
                if self.host.insert(h).is_some() {
                    self.counters.offload_gpu_to_host += 1;
                } else {
                    self.counters.offload_dropped += 1;
                }
            }
            Leg::HostToDisk | Leg::GpuToDisk => {
                if leg == Leg::HostToDisk {
                    self.host.set_pinned(h, false);
                } else {
                    self.gpu.set_pinned(h, false);
                }
                match self.disk.insert(h) {
                    Some(slot) => {
                        if self.store.write(slot, h).is_err() {
                            self.counters.disk_write_failures += 1;
                            if let Some(b) = self.disk.blocks.remove(&h) {
                                self.disk.lru.remove(&b.lru);
                                self.disk.free_slots.push(b.slot);
                            }
                        } else if leg == Leg::HostToDisk {
                            self.counters.offload_host_to_disk += 1;
                        } else {
                            self.counters.offload_gpu_to_disk += 1;
                        }
                    }
                    None => self.counters.offload_dropped += 1,
                }
            }
        }
        if leg == Leg::GpuToHost {
            self.maybe_offload_to_disk(h);
        }
    }

    fn disk_only(&self) -> bool {
        self.host.capacity == 0 && self.disk.capacity > 0
    }

    fn enqueue(&mut self, leg: Leg, now: Ns, hashes: Vec<u64>) {
        if hashes.is_empty() {
            return;
        }
        let (gbps, lat, route) = match leg {
            Leg::GpuToHost => (self.p.d2h_gbps, self.p.host_latency_us, "g1_to_g2"),
            Leg::HostToDisk => (self.p.disk_write_gbps, self.p.disk_latency_us, "g2_to_g3"),
            Leg::GpuToDisk => (self.p.disk_write_gbps, self.p.disk_latency_us, "g1_to_g3"),
        };
        let d = self.xfer_ns(hashes.len() as u64, gbps, lat);
        self.observe("offload", route, d);
        for &h in &hashes {
            match leg {
                Leg::GpuToHost | Leg::GpuToDisk => self.gpu.set_pinned(h, true),
                Leg::HostToDisk => self.host.set_pinned(h, true),
            }
        }
        let l = &mut self.lanes[leg as usize];
        let end = l.busy_until.max(now) + d;
        l.busy_until = end;
        l.inflight.push_back((end, hashes));
    }

    fn in_flight(&self, leg: Leg, h: u64) -> bool {
        self.pending[leg as usize].contains(&h)
            || self.lanes[leg as usize]
                .inflight
                .iter()
                .any(|(_, v)| v.contains(&h))
    }

    /// KVBM v1: host → disk only for blocks seen at least twice, unless
    /// `DYN_KVBM_DISABLE_DISK_OFFLOAD_FILTER` is set.
    fn maybe_offload_to_disk(&mut self, h: u64) {
        if self.disk.capacity == 0
            || !self.host.blocks.contains_key(&h)
            || self.disk.blocks.contains_key(&h)
            || self.in_flight(Leg::HostToDisk, h)
        {
            return;
        }
        let seen = self.freq.get(&h).copied().unwrap_or(0);
        if self.p.disable_disk_offload_filter || seen >= 2 {
            self.pending[Leg::HostToDisk as usize].push(h);
        }
    }

    fn bump_freq(&mut self, h: u64) {
        let limit = FREQ_FACTOR * (self.gpu.capacity + self.host.capacity + self.disk.capacity);
        if self.freq.len() as u64 > limit {
            self.freq.clear();
        }
        *self.freq.entry(h).or_insert(0) += 1;
    }

    /// A block became resident in G1 (computed, or onboarded): KVBM offloads
    /// newly registered blocks to the next tier.
    fn on_registered(&mut self, h: u64) {
        self.bump_freq(h);
        if self.disk_only() {
            // Disk-only mode is experimental in KVBM and has no filter.
            if !self.disk.blocks.contains_key(&h) && !self.in_flight(Leg::GpuToDisk, h) {
                self.pending[Leg::GpuToDisk as usize].push(h);
            }
            return;
        }
        if self.host.capacity == 0 {
            return;
        }
        if self.host.blocks.contains_key(&h) {
            self.host.touch(h);
            self.maybe_offload_to_disk(h);
        } else if !self.in_flight(Leg::GpuToHost, h) {
            self.pending[Leg::GpuToHost as usize].push(h);
        }
    }

    fn flush(&mut self, now: Ns) {
        for leg in [Leg::GpuToHost, Leg::HostToDisk, Leg::GpuToDisk] {
            let v = std::mem::take(&mut self.pending[leg as usize]);
            // A block evicted from G1 before its batch left cannot be sent.
            let v: Vec<u64> = match leg {
                Leg::HostToDisk => v
                    .into_iter()
                    .filter(|h| self.host.blocks.contains_key(h))
                    .collect(),
                _ => v
                    .into_iter()
                    .filter(|h| self.gpu.blocks.contains_key(h))
                    .collect(),
            };
            self.enqueue(leg, now, v);
        }
    }

    /// Registers sequence block `j` once it is full; a block another
    /// sequence already registered is shared instead.
    fn register(&mut self, si: usize, j: usize) {
        let s = &self.running[si];
        if s.hashes.len() != j {
            return;
        }
        let parent = if j == 0 { 0 } else { s.hashes[j - 1] };
        let h = block_hash(parent, &s.tokens[j * self.bs..(j + 1) * self.bs]);
        let s = &mut self.running[si];
        s.hashes.push(h);
        s.private = s.private.saturating_sub(1);
        self.gpu.private = self.gpu.private.saturating_sub(1);
        if let std::collections::hash_map::Entry::Vacant(v) = self.gpu.blocks.entry(h) {
            v.insert(GpuBlock {
                refs: 1,
                lru: 0,
                pinned: false,
            });
        } else {
            self.gpu.acquire(h);
        }
        self.on_registered(h);
    }

    /// Tries to admit the head of the queue: prefix match in G1, then the
    /// host and disk tiers; reserves the sequence's blocks. None when G1 has
    /// no room (the request waits; FCFS keeps the order).
    fn admit(&mut self, now: Ns) -> Option<Seq> {
        let r = self.waiting.front()?;
        if r.arrival > now {
            return None;
        }
        let bs = self.bs;
        let n = r.prompt.len();
        // At least one prompt token is always computed, so the last block of
        // a fully cached prompt is recomputed (as vLLM does).
        let matchable = n.saturating_sub(1) / bs;
        let target = match r.stop_after {
            Some(k) if k < r.max_tokens => k.max(1),
            _ => r.max_tokens.max(1),
        };
        let finish = if target < r.max_tokens {
            Finish::Stop
        } else {
            Finish::Length
        };
        let total_blocks = (n + target as usize).div_ceil(bs) as u64;
        let mut hashes = Vec::with_capacity(matchable);
        let mut parent = 0u64;
        let (mut g, mut hst, mut dsk) = (0usize, 0usize, 0usize);
        for j in 0..matchable {
            let h = block_hash(parent, &r.prompt[j * bs..(j + 1) * bs]);
            let tier = if hst + dsk == 0 && self.gpu.blocks.contains_key(&h) {
                0
            } else if self.host.blocks.contains_key(&h) {
                1
            } else if self.disk.blocks.contains_key(&h) {
                2
            } else {
                break;
            };
            match tier {
                0 => g += 1,
                1 => hst += 1,
                _ => dsk += 1,
            }
            hashes.push(h);
            parent = h;
        }
        // Blocks to allocate: everything but the G1 hits.
        let new_blocks = total_blocks - g as u64;
        // G1 hits must not be evicted to make room for their own sequence.
        for h in &hashes[..g] {
            self.gpu.acquire(*h);
        }
        if !self.gpu.make_room(new_blocks) {
            for h in &hashes[..g] {
                self.gpu.release(*h);
            }
            return None;
        }
        let r = self.waiting.pop_front()?;
        // Disk reads are real: read every hit block back before using it.
        let mut onboard_ns = 0;
        if hst > 0 {
            onboard_ns += self.xfer_ns(hst as u64, self.p.h2d_gbps, self.p.host_latency_us);
            self.observe("onboard", "g2_to_g1", onboard_ns);
        }
        if dsk > 0 {
            let slots: Vec<(u64, u64)> = hashes[g + hst..]
                .iter()
                .filter_map(|h| self.disk.blocks.get(h).map(|b| (b.slot, *h)))
                .collect();
            let modelled = self.xfer_ns(dsk as u64, self.p.disk_read_gbps, self.p.disk_latency_us);
            let read = match self.store.read(&slots) {
                Ok(took) => Some(took),
                Err(_) => {
                    self.counters.disk_read_failures += 1;
                    None
                }
            };
            let disk_ns = match read {
                Some(took) if self.opt.measured_disk_timing => Duration::as_nanos(&took) as Ns,
                _ => modelled,
            };
            if self.opt.staged_disk_onboard {
                let h2d = self.xfer_ns(dsk as u64, self.p.h2d_gbps, self.p.host_latency_us);
                self.observe("onboard", "g3_to_g2", disk_ns);
                self.observe("onboard", "g2_to_g1", h2d);
                onboard_ns += disk_ns + h2d;
            } else {
                self.observe("onboard", "g3_to_g1", disk_ns);
                onboard_ns += disk_ns;
            }
        }
        for h in &hashes[g..g + hst] {
            self.host.touch(*h);
        }
        for h in &hashes[g + hst..] {
            self.disk.touch(*h);
            if self.opt.staged_disk_onboard {
                // The block passes through host memory whether or not the
                // host tier keeps it (every block there may be pinned).
                let _ = self.host.insert(*h);
                self.counters.onboard_disk_to_host += 1;
            }
        }
        let c = &mut self.counters;
        c.gpu_hit_blocks += g as u64;
        c.host_hit_blocks += hst as u64;
        c.disk_hit_blocks += dsk as u64;
        c.onboard_host_to_gpu += hst as u64;
        c.onboard_disk_to_gpu += dsk as u64;
        c.matched_tokens += ((hst + dsk) * bs) as u64;
        self.window.record(hst as u64, dsk as u64, (n / bs) as u64);
        for h in &hashes[..g] {
            self.bump_freq(*h);
            // A reuse can be what makes a host block pass the disk filter.
            self.maybe_offload_to_disk(*h);
        }
        self.gpu.private += new_blocks;
        let cached = (hashes.len() * bs) as u32;
        let mut seq = Seq {
            id: r.id,
            tokens: r.prompt,
            prompt_len: n as u32,
            target,
            finish,
            computed: cached,
            cached,
            generated: 0,
            hashes: hashes[..g].to_vec(),
            private: new_blocks,
            onboard_ns,
        };
        // Onboarded blocks become G1 blocks of this sequence.
        seq.tokens.reserve(target as usize);
        self.running.push(seq);
        let si = self.running.len() - 1;
        for j in g..hashes.len() {
            self.register(si, j);
        }
        self.running.pop()
    }

    /// Runs one engine step starting at `now`.
    pub fn step(&mut self, now: Ns) -> StepResult {
        self.complete_offloads(now);
        self.flush(now);
        while self.running.len() < self.p.max_num_seqs as usize {
            match self.admit(now) {
                Some(s) => self.running.push(s),
                None => break,
            }
        }
        self.flush(now);
        if self.running.is_empty() {
            return match self.waiting.front() {
                None => StepResult::Idle,
                Some(r) if r.arrival > now => StepResult::WaitUntil(r.arrival),
                Some(_) => match self
                    .lanes
                    .iter()
                    .filter_map(|l| l.inflight.front())
                    .map(|x| x.0)
                    .min()
                {
                    // G1 is full of blocks waiting for their offload to land.
                    Some(t) => StepResult::WaitUntil(t.max(now + 1)),
                    None => {
                        StepResult::WaitUntil(now + Self::ns(self.p.step_overhead_us).max(1000))
                    }
                },
            };
        }
        let p = &self.p;
        let mut budget = p.max_num_batched_tokens as u64;
        let mut us = p.step_overhead_us;
        let mut decode_n = 0u64;
        let mut decode_ctx = 0u64;
        let mut onboard_ns: Ns = 0;
        // Decodes first (vLLM v1 schedules running decodes before prefill
        // chunks), then prefills in admission order, chunked to the budget.
        let mut chunks = vec![0u32; self.running.len()];
        for (i, s) in self.running.iter().enumerate() {
            if s.computed >= s.prompt_len && budget > 0 {
                decode_n += 1;
                decode_ctx += s.tokens.len() as u64;
                budget -= 1;
                chunks[i] = 1;
            }
        }
        for (i, s) in self.running.iter_mut().enumerate() {
            if s.computed < s.prompt_len && budget > 0 {
                let u = u64::from(s.prompt_len - s.computed).min(budget);
                budget -= u;
                chunks[i] = u as u32;
                let c0 = f64::from(s.computed);
                let uf = u as f64;
                us += uf * p.prefill_us_per_token
                    + uf * (c0 + uf / 2.0) * p.prefill_ns_per_token_ctx / 1000.0;
                onboard_ns += s.onboard_ns;
                s.onboard_ns = 0;
            }
        }
        if decode_n > 0 {
            us += p.decode_base_us
                + decode_n as f64 * p.decode_us_per_seq
                + decode_ctx as f64 * p.decode_ns_per_ctx_token / 1000.0;
        }
        let end = now + Self::ns(us).max(1) + onboard_ns;
        let mut events = Vec::new();
        let bs = self.bs;
        for (i, &chunk) in chunks.iter().enumerate() {
            if chunk == 0 {
                continue;
            }
            let s = &mut self.running[i];
            let emit = if s.computed < s.prompt_len {
                s.computed += chunk;
                s.computed >= s.prompt_len
            } else {
                true
            };
            if emit {
                let index = s.generated;
                s.generated += 1;
                s.tokens.push(crate::tokens::filler_token(index));
                events.push(Event::Token {
                    req: s.id,
                    index,
                    at: end,
                });
            }
            // Register every block that is now full (prefill or decode).
            // The newest generated token's KV is computed by the next step.
            let s = &self.running[i];
            let kv_len = if s.computed < s.prompt_len {
                s.computed as usize
            } else {
                s.tokens.len() - 1
            };
            for j in s.hashes.len()..kv_len / bs {
                self.register(i, j);
            }
        }
        // Finished sequences release their blocks at the end of the step.
        let mut i = 0;
        while i < self.running.len() {
            if self.running[i].generated >= self.running[i].target {
                let s = self.running.remove(i);
                for h in &s.hashes {
                    self.gpu.release(*h);
                }
                self.gpu.private = self.gpu.private.saturating_sub(s.private);
                self.counters.requests_finished += 1;
                events.push(Event::Done {
                    req: s.id,
                    at: end,
                    finish: s.finish,
                    prompt_tokens: s.prompt_len,
                    cached_tokens: s.cached,
                    completion_tokens: s.generated,
                });
            } else {
                i += 1;
            }
        }
        self.flush(now);
        StepResult::Ran { end, events }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::NullStore;

    const S: Ns = 1_000_000_000;

    fn engine(mode: TierMode, toml: &str) -> Engine {
        let p = Profile::builtin("tiny").unwrap().with_toml(toml).unwrap();
        let opt = EngineOptions {
            mode,
            staged_disk_onboard: false,
            measured_disk_timing: false,
        };
        Engine::new(p, opt, Box::new(NullStore))
    }

    /// A prompt of `n` tokens unique to `seed`.
    fn prompt(seed: u32, n: u32) -> Vec<u32> {
        (0..n).map(|i| seed * 100_000 + i).collect()
    }

    struct Run {
        now: Ns,
        next: u64,
        waited: bool,
    }

    impl Run {
        fn new() -> Self {
            Run {
                now: 0,
                next: 1,
                waited: false,
            }
        }

        /// Submits one request a second after the last activity (so
        /// offloads land) and runs to idle; returns its Done event.
        fn one(&mut self, e: &mut Engine, p: Vec<u32>, max_tokens: u32) -> (u32, Ns, Ns) {
            let arrival = self.now + S;
            let id = self.next;
            self.next += 1;
            e.submit(Request {
                id,
                prompt: p,
                max_tokens,
                stop_after: None,
                arrival,
            });
            let ev = self.drain(e);
            let first = ev
                .iter()
                .find_map(|x| match x {
                    Event::Token { req, at, .. } if *req == id => Some(*at),
                    _ => None,
                })
                .unwrap();
            let cached = ev
                .iter()
                .find_map(|x| match x {
                    Event::Done {
                        req, cached_tokens, ..
                    } if *req == id => Some(*cached_tokens),
                    _ => None,
                })
                .unwrap();
            (cached, first - arrival, arrival)
        }

        fn drain(&mut self, e: &mut Engine) -> Vec<Event> {
            let mut out = Vec::new();
            for _ in 0..1_000_000 {
                match e.step(self.now) {
                    StepResult::Ran { end, events } => {
                        self.now = end;
                        out.extend(events);
                    }
                    StepResult::WaitUntil(t) => {
                        self.waited = true;
                        self.now = t;
                    }
                    StepResult::Idle => return out,
                }
            }
            panic!("engine never went idle");
        }
    }

    #[test]
    fn hit_window_is_per_request_and_skips_empty_requests() {
        let mut w = HitWindow::new(2);
        w.record(1, 0, 4);
        w.record(5, 5, 0);
        assert_eq!(w.rates(), (0.25, 0.0));
        w.record(0, 2, 4);
        w.record(0, 4, 4);
        // The first request left the window.
        assert_eq!(w.rates(), (0.0, 0.75));
    }

    #[test]
    fn a_repeated_prompt_reuses_its_prefix() {
        let mut e = engine(TierMode::B0, "");
        let mut r = Run::new();
        let (c1, t1, _) = r.one(&mut e, prompt(1, 100), 4);
        let (c2, t2, _) = r.one(&mut e, prompt(1, 100), 4);
        assert_eq!(c1, 0);
        // 6 full blocks, the last token always recomputed: (100-1)/16 = 6.
        assert_eq!(c2, 96);
        assert!(t2 < t1, "cached TTFT {t2} must beat cold {t1}");
        assert_eq!(e.counters().gpu_hit_blocks, 6);
        assert_eq!(
            e.counters().matched_tokens,
            0,
            "G1 hits are not KVBM matches"
        );
    }

    #[test]
    fn a_block_matches_only_with_its_whole_prefix() {
        let mut e = engine(TierMode::B0, "");
        let mut r = Run::new();
        let a = prompt(1, 100);
        r.one(&mut e, a.clone(), 2);
        let mut b = a.clone();
        b[20] = 7; // block 1 differs, so blocks 1.. miss even if equal after
        let (c, _, _) = r.one(&mut e, b, 2);
        assert_eq!(c, 16);
    }

    /// A, then enough other prompts to flush A out of G1 (64 blocks), then A.
    fn overflow_replay(e: &mut Engine, r: &mut Run, warm_runs: u32) -> u32 {
        for _ in 0..warm_runs {
            r.one(e, prompt(1, 200), 2);
        }
        for k in 2..10 {
            r.one(e, prompt(k, 200), 2);
        }
        r.one(e, prompt(1, 200), 2).0
    }

    #[test]
    fn b0_replay_after_gpu_overflow_misses() {
        let mut e = engine(TierMode::B0, "");
        let mut r = Run::new();
        assert_eq!(overflow_replay(&mut e, &mut r, 1), 0);
        let c = e.counters();
        assert_eq!(c.offload_gpu_to_host + c.onboard_host_to_gpu, 0);
    }

    #[test]
    fn b1_replay_is_served_from_host() {
        let mut e = engine(TierMode::B1, "");
        let mut r = Run::new();
        let cached = overflow_replay(&mut e, &mut r, 1);
        assert_eq!(cached, 192);
        let c = e.counters().clone();
        assert_eq!(c.onboard_host_to_gpu, 12);
        assert_eq!(c.matched_tokens, 192);
        assert!(c.offload_gpu_to_host >= 12 * 9);
        assert_eq!(c.onboard_disk_to_gpu + c.offload_host_to_disk, 0);
        assert!(e.hit_rates().0 > 0.0);
    }

    #[test]
    fn b2_disk_needs_two_sightings_unless_the_filter_is_off() {
        // Host holds 16 blocks: less than the working set.
        let small_host = "cpu_num_blocks = 16";
        let mut e = engine(TierMode::B2, small_host);
        let mut r = Run::new();
        assert_eq!(
            overflow_replay(&mut e, &mut r, 1),
            0,
            "seen once: not on disk"
        );
        assert_eq!(e.counters().onboard_disk_to_gpu, 0);

        let mut e = engine(TierMode::B2, small_host);
        let mut r = Run::new();
        assert_eq!(overflow_replay(&mut e, &mut r, 2), 192);
        let c = e.counters();
        assert_eq!(c.onboard_disk_to_gpu, 12);
        assert!(c.offload_host_to_disk >= 12);
        assert!(e.hit_rates().1 > 0.0);

        let off = format!("{small_host}\ndisable_disk_offload_filter = true");
        let mut e = engine(TierMode::B2, &off);
        let mut r = Run::new();
        assert_eq!(overflow_replay(&mut e, &mut r, 1), 192);
        assert_eq!(e.counters().onboard_disk_to_gpu, 12);
    }

    #[test]
    fn disk_only_mode_offloads_gpu_to_disk() {
        let mut e = engine(TierMode::B2, "cpu_num_blocks = 0");
        let mut r = Run::new();
        assert_eq!(overflow_replay(&mut e, &mut r, 1), 192);
        let c = e.counters();
        assert!(c.offload_gpu_to_disk >= 12);
        assert_eq!(c.offload_gpu_to_host, 0);
        assert_eq!(c.onboard_disk_to_gpu, 12);
    }

    #[test]
    fn staged_onboarding_lands_disk_blocks_in_host() {
        let p = Profile::builtin("tiny")
            .unwrap()
            .with_toml("cpu_num_blocks = 16\ndisable_disk_offload_filter = true")
            .unwrap();
        let opt = EngineOptions {
            mode: TierMode::B2,
            staged_disk_onboard: true,
            measured_disk_timing: false,
        };
        let mut e = Engine::new(p, opt, Box::new(NullStore));
        let mut r = Run::new();
        assert_eq!(overflow_replay(&mut e, &mut r, 1), 192);
        assert_eq!(e.counters().onboard_disk_to_host, 12);
    }

    #[test]
    fn reset_empties_every_tier() {
        let mut e = engine(TierMode::B2, "disable_disk_offload_filter = true");
        let mut r = Run::new();
        r.one(&mut e, prompt(1, 200), 2);
        r.one(&mut e, prompt(2, 10), 2); // lets the offloads land
        let o = e.occupancy();
        assert!(
            o.gpu_registered > 0 && o.host_used > 0 && o.disk_used > 0,
            "{o:?}"
        );
        e.reset();
        let o = e.occupancy();
        assert_eq!((o.gpu_registered, o.host_used, o.disk_used), (0, 0, 0));
        assert_eq!(r.one(&mut e, prompt(1, 200), 2).0, 0);
    }

    #[test]
    fn batching_respects_max_num_seqs_and_the_token_budget() {
        let mut e = engine(
            TierMode::B0,
            "max_num_seqs = 3\nmax_num_batched_tokens = 64",
        );
        for id in 0..6 {
            e.submit(Request {
                id,
                prompt: prompt(id as u32 + 1, 100),
                max_tokens: 3,
                stop_after: None,
                arrival: 0,
            });
        }
        let StepResult::Ran { events, .. } = e.step(0) else {
            panic!("should run");
        };
        assert!(events.is_empty(), "100-token prompts need 2 steps of 64");
        assert_eq!(e.occupancy().running, 3);
        assert_eq!(e.occupancy().waiting, 3);
        let mut r = Run::new();
        let ev = r.drain(&mut e);
        let done = ev
            .iter()
            .filter(|x| matches!(x, Event::Done { .. }))
            .count();
        assert_eq!(done, 6);
    }

    #[test]
    fn decode_steps_slow_down_with_batch_and_context() {
        let e = engine(TierMode::B0, "");
        let p = e.profile().clone();
        let one = |n: u32, ctx: u32| {
            let mut e = engine(TierMode::B0, "");
            for id in 0..n as u64 {
                e.submit(Request {
                    id,
                    prompt: prompt(id as u32 + 1, ctx),
                    max_tokens: 3,
                    stop_after: None,
                    arrival: 0,
                });
            }
            let mut r = Run::new();
            let ev = r.drain(&mut e);
            let t: Vec<Ns> = ev
                .iter()
                .filter_map(|x| match x {
                    Event::Token { req: 0, at, .. } => Some(*at),
                    _ => None,
                })
                .collect();
            t[2] - t[1]
        };
        let base = one(1, 20);
        assert_eq!(
            base,
            Engine::ns(
                p.step_overhead_us
                    + p.decode_base_us
                    + p.decode_us_per_seq
                    + 22.0 * p.decode_ns_per_ctx_token / 1000.0
            )
        );
        assert!(one(8, 20) > base);
        assert!(one(1, 400) > base);
    }

    #[test]
    fn slow_offload_back_pressures_admission() {
        // ~8 ms per block to host: G1 fills with blocks waiting to leave.
        let mut e = engine(TierMode::B1, "d2h_gbps = 0.001");
        let mut r = Run::new();
        for id in 0..8u64 {
            e.submit(Request {
                id,
                prompt: prompt(id as u32 + 1, 200),
                max_tokens: 2,
                stop_after: None,
                arrival: 0,
            });
        }
        let ev = r.drain(&mut e);
        assert_eq!(
            ev.iter()
                .filter(|x| matches!(x, Event::Done { .. }))
                .count(),
            8
        );
        assert!(r.waited, "admission should have waited for offloads");
        // 8 × 13 reserved blocks in a 64-block pool: at least 40 had to be
        // offloaded (and so evictable) before the last admissions.
        let per_block = e.block_bytes / (0.001 * 1e9) * 1e9;
        let floor = ((8 * 13 - 64) as f64 * per_block) as Ns;
        assert!(
            r.now > floor,
            "bounded by offload bandwidth: {} <= {floor}",
            r.now
        );
    }

    #[test]
    fn natural_stop_ends_early_with_stop() {
        let mut e = engine(TierMode::B0, "");
        e.submit(Request {
            id: 9,
            prompt: prompt(1, 10),
            max_tokens: 8,
            stop_after: Some(3),
            arrival: 0,
        });
        let ev = Run::new().drain(&mut e);
        assert!(ev.iter().any(|x| matches!(
            x,
            Event::Done {
                finish: Finish::Stop,
                completion_tokens: 3,
                ..
            }
        )));
    }
}
