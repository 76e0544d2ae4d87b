//! Per-process I/O, CPU and RSS for processes matched by a cmdline regex or a PID
//! list, and cgroup I/O (`io.stat` on v2, `blkio` on v1) for a cgroup path or a
//! container.
//!
//! Why both: `/proc/<pid>/io` counts bytes a task submitted to the block layer,
//! which misses I/O done by kernel threads or helper processes on its behalf,
//! and container workers are easier to pin down by cgroup than by cmdline. The
//! seed's later tooling accepted cgroup as the attribution method for this
//! reason. Processes are keyed by (pid, start time) so a reused PID is never
//! diffed against a different process.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Instant;

use procfs::process::Process;
use regex::Regex;
use serde::{Deserialize, Serialize};

use crate::common::{Reading, counter_delta, mib, mib_cell, read_text};
use crate::session::Config;
use crate::source::{
    At, Column, DISABLED, Fill, Opened, Probe, Rows, Sampler, Source, SourceId, Timeline, cells,
};

/// Which processes to watch.
#[derive(Debug, Clone, Default)]
pub struct Matcher {
    pub pattern: Option<Regex>,
    pub pids: Vec<u32>,
}

impl Matcher {
    pub fn new(pattern: Option<&str>, pids: &[u32]) -> Result<Self, String> {
        let pattern = pattern
            .map(|p| Regex::new(p).map_err(|e| format!("process pattern {p:?}: {e}")))
            .transpose()?;
        Ok(Matcher {
            pattern,
            pids: pids.to_vec(),
        })
    }

    pub fn is_empty(&self) -> bool {
        self.pattern.is_none() && self.pids.is_empty()
    }

    /// An explicit PID always matches; the pattern never matches our own
    /// process, whose argv holds the pattern the user typed.
    fn matches(&self, pid: u32, cmdline: &str) -> bool {
        self.pids.contains(&pid)
            || (pid != std::process::id()
                && self.pattern.as_ref().is_some_and(|r| r.is_match(cmdline)))
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProcIo {
    pub pid: u32,
    /// Start time in clock ticks since boot: with `pid`, identifies the process.
    pub starttime: u64,
    pub comm: String,
    pub cmdline: String,
    pub read_bytes: Option<u64>,
    pub write_bytes: Option<u64>,
    pub cancelled_write_bytes: Option<u64>,
    pub rchar: Option<u64>,
    pub wchar: Option<u64>,
    pub syscr: Option<u64>,
    pub syscw: Option<u64>,
    pub cpu_ticks: Option<u64>,
    pub rss_bytes: Option<u64>,
    pub num_threads: Option<i64>,
    /// Why `/proc/<pid>/io` could not be read (another user's process without root).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub io_error: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProcSnapshot {
    pub pattern: Option<String>,
    pub pids_requested: Vec<u32>,
    pub matched_pids: Vec<u32>,
    pub processes: Vec<ProcIo>,
    pub ticks_per_second: u64,
}

const CMDLINE_MAX: usize = 512;

fn read_process(p: &Process, with_cmdline: bool) -> Option<ProcIo> {
    // A process can exit between listing and reading: then it is simply gone.
    let stat = p.stat().ok()?;
    let cmdline = if with_cmdline {
        let mut c = p.cmdline().map(|v| v.join(" ")).unwrap_or_default();
        if c.len() > CMDLINE_MAX {
            let mut cut = CMDLINE_MAX;
            while !c.is_char_boundary(cut) {
                cut -= 1;
            }
            c.truncate(cut);
        }
        c
    } else {
        String::new()
    };
    let mut out = ProcIo {
        pid: p.pid() as u32,
        starttime: stat.starttime,
        comm: stat.comm.clone(),
        cmdline,
        cpu_ticks: Some(stat.utime + stat.stime),
        rss_bytes: Some(stat.rss.saturating_mul(procfs::page_size())),
        num_threads: Some(stat.num_threads),
        ..Default::default()
    };
    match p.io() {
        Ok(io) => {
            out.read_bytes = Some(io.read_bytes);
            out.write_bytes = Some(io.write_bytes);
            out.cancelled_write_bytes = Some(io.cancelled_write_bytes);
            out.rchar = Some(io.rchar);
            out.wchar = Some(io.wchar);
            out.syscr = Some(io.syscr);
            out.syscw = Some(io.syscw);
        }
        Err(e) => out.io_error = Some(e.to_string()),
    }
    Some(out)
}

fn cmdline_of(p: &Process) -> String {
    p.cmdline().map(|v| v.join(" ")).unwrap_or_default()
}

/// Reads the matched processes.
pub fn scan(proc_root: &Path, matcher: &Matcher) -> Result<ProcSnapshot, String> {
    let mut snap = ProcSnapshot {
        pattern: matcher.pattern.as_ref().map(|r| r.as_str().to_string()),
        pids_requested: matcher.pids.clone(),
        ticks_per_second: procfs::ticks_per_second(),
        ..Default::default()
    };
    let iter = procfs::process::all_processes_with_root(proc_root)
        .map_err(|e| format!("{}: {e}", proc_root.display()))?;
    for p in iter.flatten() {
        let pid = p.pid() as u32;
        if !matcher.matches(pid, &cmdline_of(&p)) {
            continue;
        }
        if let Some(io) = read_process(&p, true) {
            snap.matched_pids.push(pid);
            snap.processes.push(io);
        }
    }
    Ok(snap)
}

/// Every process's I/O counters (no cmdline until it makes a top list), for the
/// host-wide top readers/writers that reveal I/O the worker did not do.
pub fn scan_all(proc_root: &Path) -> Result<Vec<ProcIo>, String> {
    let iter = procfs::process::all_processes_with_root(proc_root)
        .map_err(|e| format!("{}: {e}", proc_root.display()))?;
    Ok(iter
        .flatten()
        .filter_map(|p| read_process(&p, false))
        .collect())
}

pub fn fill_cmdlines(proc_root: &Path, list: &mut [TopEntry]) {
    for e in list.iter_mut().filter(|e| e.cmdline.is_empty()) {
        if let Ok(p) = Process::new_with_root(proc_root.join(e.pid.to_string())) {
            e.cmdline = cmdline_of(&p);
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TopEntry {
    pub pid: u32,
    pub comm: String,
    pub cmdline: String,
    pub read_bytes_delta: u64,
    pub write_bytes_delta: u64,
}

/// The seed's `worker_process_io_delta`, plus CPU and the processes that came and went.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProcIoDelta {
    pub available: bool,
    pub matched_pids_before: Vec<u32>,
    pub matched_pids_after: Vec<u32>,
    /// Summed over processes alive at the end; one that started during the phase
    /// counts from zero. A process that exited during the phase is lost (its
    /// counters went with it), which is one reason cgroup I/O is kept too.
    pub read_bytes_delta: u64,
    pub write_bytes_delta: u64,
    pub read_mib_delta: f64,
    pub write_mib_delta: f64,
    pub rchar_delta: u64,
    pub wchar_delta: u64,
    pub cpu_seconds_delta: f64,
    pub started_pids: Vec<u32>,
    pub exited_pids: Vec<u32>,
    /// Processes whose `/proc/<pid>/io` was unreadable (counted as zero).
    pub unreadable_pids: Vec<u32>,
    pub top_writers: Vec<TopEntry>,
    pub top_readers: Vec<TopEntry>,
}

type Key = (u32, u64);

fn by_key(list: &[ProcIo]) -> HashMap<Key, &ProcIo> {
    list.iter().map(|p| ((p.pid, p.starttime), p)).collect()
}

fn io_delta(before: Option<&ProcIo>, after: &ProcIo) -> (u64, u64, u64, u64, u64) {
    let d = |f: fn(&ProcIo) -> Option<u64>| {
        let a = f(after).unwrap_or(0);
        let b = before.and_then(f).unwrap_or(0);
        counter_delta(b, a).0
    };
    (
        d(|p| p.read_bytes),
        d(|p| p.write_bytes),
        d(|p| p.rchar),
        d(|p| p.wchar),
        d(|p| p.cpu_ticks),
    )
}

/// Per-process deltas between two lists, sorted into top-N tables.
pub fn top_tables(before: &[ProcIo], after: &[ProcIo], n: usize) -> (Vec<TopEntry>, Vec<TopEntry>) {
    let b = by_key(before);
    let entries: Vec<TopEntry> = after
        .iter()
        .map(|a| {
            let (r, w, ..) = io_delta(b.get(&(a.pid, a.starttime)).copied(), a);
            TopEntry {
                pid: a.pid,
                comm: a.comm.clone(),
                cmdline: a.cmdline.clone(),
                read_bytes_delta: r,
                write_bytes_delta: w,
            }
        })
        .collect();
    let top = |key: fn(&TopEntry) -> u64| {
        let mut v: Vec<TopEntry> = entries.iter().filter(|e| key(e) > 0).cloned().collect();
        v.sort_by(|x, y| key(y).cmp(&key(x)).then(x.pid.cmp(&y.pid)));
        v.truncate(n);
        v
    };
    (top(|e| e.write_bytes_delta), top(|e| e.read_bytes_delta))
}

pub fn delta(before: &ProcSnapshot, after: &ProcSnapshot, top_n: usize) -> ProcIoDelta {
    let b = by_key(&before.processes);
    let a = by_key(&after.processes);
    let mut out = ProcIoDelta {
        available: true,
        matched_pids_before: before.matched_pids.clone(),
        matched_pids_after: after.matched_pids.clone(),
        ..Default::default()
    };
    let mut ticks = 0u64;
    for p in &after.processes {
        let prev = b.get(&(p.pid, p.starttime)).copied();
        if prev.is_none() {
            out.started_pids.push(p.pid);
        }
        if p.io_error.is_some() {
            out.unreadable_pids.push(p.pid);
        }
        let (r, w, rc, wc, t) = io_delta(prev, p);
        out.read_bytes_delta += r;
        out.write_bytes_delta += w;
        out.rchar_delta += rc;
        out.wchar_delta += wc;
        ticks += t;
    }
    out.exited_pids = before
        .processes
        .iter()
        .filter(|p| !a.contains_key(&(p.pid, p.starttime)))
        .map(|p| p.pid)
        .collect();
    let tps = after.ticks_per_second.max(1) as f64;
    out.cpu_seconds_delta = crate::common::round3(ticks as f64 / tps);
    out.read_mib_delta = mib(out.read_bytes_delta);
    out.write_mib_delta = mib(out.write_bytes_delta);
    (out.top_writers, out.top_readers) = top_tables(&before.processes, &after.processes, top_n);
    out
}

/// One process's rates between two timeline samples.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProcRate {
    pub pid: u32,
    pub comm: String,
    pub read_bytes_s: Option<f64>,
    pub write_bytes_s: Option<f64>,
    pub rchar_s: Option<f64>,
    pub wchar_s: Option<f64>,
    pub cpu_pct: Option<f64>,
    pub rss_bytes: Option<u64>,
}

pub fn rates(before: &ProcSnapshot, after: &ProcSnapshot, interval_s: f64) -> Vec<ProcRate> {
    let b = by_key(&before.processes);
    let tps = after.ticks_per_second.max(1) as f64;
    after
        .processes
        .iter()
        .map(|p| {
            let prev = b.get(&(p.pid, p.starttime)).copied();
            let rate = |f: fn(&ProcIo) -> Option<u64>| -> Option<f64> {
                let (a, bb) = (f(p)?, f(prev?)?);
                (interval_s > 0.0)
                    .then(|| crate::common::round3(counter_delta(bb, a).0 as f64 / interval_s))
            };
            ProcRate {
                pid: p.pid,
                comm: p.comm.clone(),
                read_bytes_s: rate(|x| x.read_bytes),
                write_bytes_s: rate(|x| x.write_bytes),
                rchar_s: rate(|x| x.rchar),
                wchar_s: rate(|x| x.wchar),
                cpu_pct: rate(|x| x.cpu_ticks).map(|t| crate::common::round3(t / tps * 100.0)),
                rss_bytes: p.rss_bytes,
            }
        })
        .collect()
}

// ---------------------------------------------------------------- cgroups

/// Where to read cgroup I/O from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CgroupTarget {
    /// A cgroup path: absolute under the cgroup mount, or relative to it.
    Path(PathBuf),
    /// The cgroup of a process (a container's init PID, say).
    Pid(u32),
    /// A docker container, resolved to its init PID with `docker inspect`.
    Container(String),
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CgroupDevIo {
    pub rbytes: u64,
    pub wbytes: u64,
    pub rios: u64,
    pub wios: u64,
    pub dbytes: u64,
    pub dios: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CgroupIo {
    /// The file read (`…/io.stat` or `…/blkio.throttle.io_service_bytes`).
    pub source: String,
    pub version: u8,
    /// Keyed by `MAJ:MIN`.
    pub devices: BTreeMap<String, CgroupDevIo>,
    pub rbytes: u64,
    pub wbytes: u64,
}

/// `io.stat`: `MAJ:MIN rbytes=… wbytes=… rios=… wios=… dbytes=… dios=…`.
pub fn parse_io_stat(text: &str) -> BTreeMap<String, CgroupDevIo> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let mut it = line.split_whitespace();
        let Some(dev) = it.next() else { continue };
        let mut d = CgroupDevIo::default();
        for kv in it {
            let Some((k, v)) = kv.split_once('=') else {
                continue;
            };
            let Ok(v) = v.parse::<u64>() else { continue };
            match k {
                "rbytes" => d.rbytes = v,
                "wbytes" => d.wbytes = v,
                "rios" => d.rios = v,
                "wios" => d.wios = v,
                "dbytes" => d.dbytes = v,
                "dios" => d.dios = v,
                _ => {}
            }
        }
        out.insert(dev.to_string(), d);
    }
    out
}

/// v1 `blkio.throttle.io_service_bytes` / `…_serviced`: `MAJ:MIN Read N` lines.
pub fn parse_blkio(bytes: &str, ios: Option<&str>) -> BTreeMap<String, CgroupDevIo> {
    let mut out: BTreeMap<String, CgroupDevIo> = BTreeMap::new();
    let mut apply = |text: &str, is_bytes: bool| {
        for line in text.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            let [dev, op, v] = f[..] else { continue };
            let Ok(v) = v.parse::<u64>() else { continue };
            let d = out.entry(dev.to_string()).or_default();
            match (op, is_bytes) {
                ("Read", true) => d.rbytes = v,
                ("Write", true) => d.wbytes = v,
                ("Discard", true) => d.dbytes = v,
                ("Read", false) => d.rios = v,
                ("Write", false) => d.wios = v,
                ("Discard", false) => d.dios = v,
                _ => {}
            }
        }
    };
    apply(bytes, true);
    if let Some(t) = ios {
        apply(t, false);
    }
    out
}

/// The cgroup directories of a process: (v2 unified path, v1 blkio path).
pub fn cgroup_paths_of_pid(
    proc_root: &Path,
    pid: u32,
) -> Result<(Option<String>, Option<String>), String> {
    let text = read_text(&proc_root.join(pid.to_string()).join("cgroup"))?;
    let mut v2 = None;
    let mut v1 = None;
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_id), Some(ctrls), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if ctrls.is_empty() {
            v2 = Some(path.to_string());
        } else if ctrls.split(',').any(|c| c == "blkio" || c == "io") {
            v1 = Some(path.to_string());
        }
    }
    Ok((v2, v1))
}

/// Reads cgroup I/O for `dir` (a directory under the cgroup mount), trying v2 then v1.
pub fn read_cgroup_dir(dir: &Path) -> Result<CgroupIo, String> {
    let v2 = dir.join("io.stat");
    if v2.exists() {
        let devices = parse_io_stat(&read_text(&v2)?);
        return Ok(totals(CgroupIo {
            source: v2.display().to_string(),
            version: 2,
            devices,
            ..Default::default()
        }));
    }
    for (bytes, ios) in [
        (
            "blkio.throttle.io_service_bytes",
            "blkio.throttle.io_serviced",
        ),
        ("blkio.io_service_bytes", "blkio.io_serviced"),
    ] {
        let p = dir.join(bytes);
        if p.exists() {
            let b = read_text(&p)?;
            let i = read_text(&dir.join(ios)).ok();
            return Ok(totals(CgroupIo {
                source: p.display().to_string(),
                version: 1,
                devices: parse_blkio(&b, i.as_deref()),
                ..Default::default()
            }));
        }
    }
    Err(format!(
        "{}: no io.stat (cgroup v2) or blkio files (cgroup v1)",
        dir.display()
    ))
}

fn totals(mut c: CgroupIo) -> CgroupIo {
    c.rbytes = c.devices.values().map(|d| d.rbytes).sum();
    c.wbytes = c.devices.values().map(|d| d.wbytes).sum();
    c
}

/// Resolves a target to a cgroup directory and reads it.
pub fn read_cgroup(
    target: &CgroupTarget,
    proc_root: &Path,
    cgroup_root: &Path,
    docker_timeout: std::time::Duration,
) -> Result<CgroupIo, String> {
    let pid = match target {
        CgroupTarget::Path(p) => {
            let dir = if p.is_absolute() && p.starts_with(cgroup_root) {
                p.clone()
            } else {
                cgroup_root.join(p.strip_prefix("/").unwrap_or(p))
            };
            return read_cgroup_dir(&dir);
        }
        CgroupTarget::Pid(pid) => *pid,
        CgroupTarget::Container(name) => crate::docker::container_pid(name, docker_timeout)?,
    };
    let (v2, v1) = cgroup_paths_of_pid(proc_root, pid)?;
    let mut tried = Vec::new();
    if let Some(p) = v2 {
        // Hybrid hosts mount the v2 hierarchy at `<root>/unified`.
        let v2_root = if !cgroup_root.join("cgroup.controllers").exists()
            && cgroup_root.join("unified").is_dir()
        {
            cgroup_root.join("unified")
        } else {
            cgroup_root.to_path_buf()
        };
        let dir = v2_root.join(p.trim_start_matches('/'));
        match read_cgroup_dir(&dir) {
            Ok(c) => return Ok(c),
            Err(e) => tried.push(e),
        }
    }
    if let Some(p) = v1 {
        let dir = cgroup_root.join("blkio").join(p.trim_start_matches('/'));
        match read_cgroup_dir(&dir) {
            Ok(c) => return Ok(c),
            Err(e) => tried.push(e),
        }
    }
    if tried.is_empty() {
        tried.push(format!("pid {pid}: no cgroup with I/O accounting"));
    }
    Err(tried.join("; "))
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CgroupDelta {
    pub source_before: String,
    pub source_after: String,
    pub read_bytes_delta: u64,
    pub write_bytes_delta: u64,
    pub read_mib_delta: f64,
    pub write_mib_delta: f64,
    /// Per device (`MAJ:MIN`, or the name when known): (read, write) bytes.
    pub devices: BTreeMap<String, (u64, u64)>,
}

pub fn cgroup_delta(
    before: &CgroupIo,
    after: &CgroupIo,
    names: &HashMap<String, String>,
) -> CgroupDelta {
    let mut devices = BTreeMap::new();
    let (mut r, mut w) = (0, 0);
    for (dev, a) in &after.devices {
        let b = before.devices.get(dev).cloned().unwrap_or_default();
        let dr = counter_delta(b.rbytes, a.rbytes).0;
        let dw = counter_delta(b.wbytes, a.wbytes).0;
        r += dr;
        w += dw;
        let key = names.get(dev).cloned().unwrap_or_else(|| dev.clone());
        devices.insert(key, (dr, dw));
    }
    CgroupDelta {
        source_before: before.source.clone(),
        source_after: after.source.clone(),
        read_bytes_delta: r,
        write_bytes_delta: w,
        read_mib_delta: mib(r),
        write_mib_delta: mib(w),
        devices,
    }
}

// ---------------------------------------------------------------- sources

/// The `os_pid_io.csv` columns after the timestamp.
const PID_COLUMNS: &[Column<ProcRate>] = &[
    ("pid", |r| u64::from(r.pid).into()),
    ("comm", |r| r.comm.as_str().into()),
    ("read_bytes_s", |r| r.read_bytes_s.into()),
    ("write_bytes_s", |r| r.write_bytes_s.into()),
    ("rchar_s", |r| r.rchar_s.into()),
    ("wchar_s", |r| r.wchar_s.into()),
    ("cpu_pct", |r| r.cpu_pct.into()),
    ("rss_mib", |r| mib_cell(r.rss_bytes)),
];

/// The worker processes (`None` when there is nothing to match).
struct Processes {
    matcher: Option<Matcher>,
    on: bool,
    reason: String,
}

pub(crate) fn probe_processes(p: &Probe<'_>) -> Opened {
    let on = p.on(SourceId::Processes);
    let matcher = if on {
        Matcher::new(p.cfg.process_pattern.as_deref(), &p.cfg.pids).and_then(|m| {
            if m.is_empty() {
                Err("no process pattern or PIDs given".to_string())
            } else {
                Ok(m)
            }
        })
    } else {
        Err(DISABLED.to_string())
    };
    let result = matcher.as_ref().map(|_| ()).map_err(Clone::clone);
    let source = Processes {
        reason: Opened::reason(on, &result),
        matcher: matcher.ok(),
        on,
    };
    Opened::new(source, on, if on { result } else { Ok(()) })
}

impl Source for Processes {
    fn id(&self) -> SourceId {
        SourceId::Processes
    }

    fn read(&self, at: &At<'_>) -> Fill {
        let proc_root = &at.cfg.roots.proc;
        let matched = match &self.matcher {
            Some(m) => Reading::from_result(scan(proc_root, m)),
            None => Reading::unavailable(self.reason.clone()),
        };
        // Host-wide, for the top readers/writers: on whenever the source is.
        let host = self.on.then(|| Reading::from_result(scan_all(proc_root)));
        Box::new(move |s| {
            s.processes = matched;
            if let Some(h) = host {
                s.host_processes = h;
            }
        })
    }

    fn sampler(&self) -> Option<Box<dyn Sampler>> {
        let matcher = self.matcher.clone()?;
        Some(Box::new(PidSampler {
            matcher,
            prev: None,
        }))
    }
}

struct PidSampler {
    matcher: Matcher,
    prev: Option<(Instant, ProcSnapshot)>,
}

impl Sampler for PidSampler {
    fn timelines(&self) -> Vec<Timeline> {
        vec![Timeline::new("os_pid_io.csv", PID_COLUMNS)]
    }

    fn sample(&mut self, cfg: &Config, _elapsed_s: f64, rows: &mut Rows) -> Result<(), String> {
        let snap = scan(&cfg.roots.proc, &self.matcher)?;
        let now = Instant::now();
        if let Some((t0, before)) = &self.prev {
            for r in rates(before, &snap, now.duration_since(*t0).as_secs_f64()) {
                rows.push((0, cells(PID_COLUMNS, &r)));
            }
        }
        self.prev = Some((now, snap));
        Ok(())
    }
}

/// One cgroup device's rates between two timeline samples.
#[derive(Debug, Clone, PartialEq)]
pub struct CgroupRate {
    pub device: String,
    pub read_bytes_s: f64,
    pub write_bytes_s: f64,
    pub read_ios_s: f64,
    pub write_ios_s: f64,
}

/// A device absent before counts from zero: it appeared during the interval.
pub fn cgroup_rates(before: &CgroupIo, after: &CgroupIo, interval_s: f64) -> Vec<CgroupRate> {
    let secs = interval_s.max(1e-9);
    let r = |x: u64, y: u64| crate::common::round3(counter_delta(x, y).0 as f64 / secs);
    after
        .devices
        .iter()
        .map(|(dev, a)| {
            let b = before.devices.get(dev).cloned().unwrap_or_default();
            CgroupRate {
                device: dev.clone(),
                read_bytes_s: r(b.rbytes, a.rbytes),
                write_bytes_s: r(b.wbytes, a.wbytes),
                read_ios_s: r(b.rios, a.rios),
                write_ios_s: r(b.wios, a.wios),
            }
        })
        .collect()
}

/// The `cgroup_io.csv` columns after the timestamp.
const CGROUP_COLUMNS: &[Column<CgroupRate>] = &[
    ("device", |r| r.device.as_str().into()),
    ("read_bytes_s", |r| r.read_bytes_s.into()),
    ("write_bytes_s", |r| r.write_bytes_s.into()),
    ("read_ios_s", |r| r.read_ios_s.into()),
    ("write_ios_s", |r| r.write_ios_s.into()),
];

/// The worker's cgroup (`None` when it cannot be read).
struct Cgroup {
    target: Option<CgroupTarget>,
    reason: String,
}

/// Without `--cgroup`, a container's own cgroup stands in.
pub(crate) fn probe_cgroup(p: &Probe<'_>) -> Opened {
    let cfg = p.cfg;
    let on = p.on(SourceId::Cgroup);
    let target = cfg
        .cgroup
        .clone()
        .or_else(|| cfg.container.clone().map(CgroupTarget::Container));
    let result = match (&target, on) {
        (None, _) => Err("no cgroup path, PID or container given".to_string()),
        (Some(t), true) => {
            read_cgroup(t, &cfg.roots.proc, &cfg.roots.cgroup, cfg.docker_timeout).map(|_| ())
        }
        (Some(_), false) => Ok(()),
    };
    let usable = on && result.is_ok();
    let source = Cgroup {
        target: target.filter(|_| usable),
        reason: Opened::reason(on, &result),
    };
    Opened::new(source, on, result)
}

impl Source for Cgroup {
    fn id(&self) -> SourceId {
        SourceId::Cgroup
    }

    fn read(&self, at: &At<'_>) -> Fill {
        let cfg = at.cfg;
        let r = match &self.target {
            Some(t) => Reading::from_result(read_cgroup(
                t,
                &cfg.roots.proc,
                &cfg.roots.cgroup,
                cfg.docker_timeout,
            )),
            None => Reading::unavailable(self.reason.clone()),
        };
        Box::new(move |s| s.cgroup = r)
    }

    fn sampler(&self) -> Option<Box<dyn Sampler>> {
        let target = self.target.clone()?;
        Some(Box::new(CgroupSampler { target, prev: None }))
    }
}

struct CgroupSampler {
    target: CgroupTarget,
    prev: Option<(Instant, CgroupIo)>,
}

impl Sampler for CgroupSampler {
    fn timelines(&self) -> Vec<Timeline> {
        vec![Timeline::new("cgroup_io.csv", CGROUP_COLUMNS)]
    }

    fn sample(&mut self, cfg: &Config, _elapsed_s: f64, rows: &mut Rows) -> Result<(), String> {
        let cg = read_cgroup(
            &self.target,
            &cfg.roots.proc,
            &cfg.roots.cgroup,
            cfg.docker_timeout,
        )?;
        let now = Instant::now();
        if let Some((t0, before)) = &self.prev {
            let secs = now.duration_since(*t0).as_secs_f64();
            for r in cgroup_rates(before, &cg, secs) {
                rows.push((0, cells(CGROUP_COLUMNS, &r)));
            }
        }
        self.prev = Some((now, cg));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pid: u32, start: u64, r: u64, w: u64, cpu: u64) -> ProcIo {
        ProcIo {
            pid,
            starttime: start,
            comm: format!("p{pid}"),
            read_bytes: Some(r),
            write_bytes: Some(w),
            rchar: Some(r),
            wchar: Some(w),
            cpu_ticks: Some(cpu),
            ..Default::default()
        }
    }

    fn snap(ps: Vec<ProcIo>) -> ProcSnapshot {
        ProcSnapshot {
            matched_pids: ps.iter().map(|p| p.pid).collect(),
            processes: ps,
            ticks_per_second: 100,
            ..Default::default()
        }
    }

    #[test]
    fn delta_sums_survivors_counts_new_from_zero_and_never_diffs_a_reused_pid() {
        let before = snap(vec![
            p(1, 10, 100, 1000, 50),
            p(2, 20, 0, 0, 0),
            p(3, 30, 5, 5, 0),
        ]);
        // pid 2 was reused by a new process (start 99); pid 3 exited; pid 4 started.
        let after = snap(vec![
            p(1, 10, 300, 1500, 150),
            p(2, 99, 7, 70, 0),
            p(4, 40, 1, 2, 100),
        ]);
        let d = delta(&before, &after, 5);
        assert_eq!(d.read_bytes_delta, 200 + 7 + 1);
        assert_eq!(d.write_bytes_delta, 500 + 70 + 2);
        assert_eq!(d.cpu_seconds_delta, 2.0);
        assert_eq!(d.started_pids, vec![2, 4]);
        assert_eq!(d.exited_pids, vec![2, 3]);
        assert_eq!(d.top_writers[0].pid, 1);
        assert_eq!(d.top_writers[0].write_bytes_delta, 500);
        assert_eq!(
            d.top_readers.iter().map(|e| e.pid).collect::<Vec<_>>(),
            vec![1, 2, 4]
        );
    }

    #[test]
    fn rates_need_a_previous_sample() {
        let a = snap(vec![p(1, 10, 0, 0, 0)]);
        let b = snap(vec![p(1, 10, 2048, 4096, 50), p(2, 5, 1, 1, 1)]);
        let r = rates(&a, &b, 2.0);
        assert_eq!(r[0].read_bytes_s, Some(1024.0));
        assert_eq!(r[0].cpu_pct, Some(25.0));
        assert_eq!(r[1].read_bytes_s, None);
    }

    #[test]
    fn io_stat_and_blkio_parse() {
        let v2 = parse_io_stat(
            "259:0 rbytes=1048576 wbytes=2097152 rios=10 wios=20 dbytes=0 dios=0\n8:0 rbytes=1 wbytes=2 rios=1 wios=1 dbytes=0 dios=0\n",
        );
        assert_eq!(v2["259:0"].wbytes, 2097152);
        assert_eq!(v2["8:0"].rios, 1);
        let v1 = parse_blkio(
            "8:0 Read 4096\n8:0 Write 8192\n8:0 Sync 0\n8:0 Total 12288\nTotal 12288\n",
            Some("8:0 Read 1\n8:0 Write 2\n"),
        );
        assert_eq!(v1["8:0"].rbytes, 4096);
        assert_eq!(v1["8:0"].wbytes, 8192);
        assert_eq!(v1["8:0"].wios, 2);
        assert_eq!(v1.len(), 1);
    }

    #[test]
    fn cgroup_tree_v2_by_pid_and_path() {
        let dir = tempfile::tempdir().unwrap();
        let proc_root = dir.path().join("proc");
        let cg = dir.path().join("cgroup");
        let scope = cg.join("system.slice/docker-abc.scope");
        std::fs::create_dir_all(&scope).unwrap();
        std::fs::create_dir_all(proc_root.join("42")).unwrap();
        std::fs::write(
            proc_root.join("42/cgroup"),
            "0::/system.slice/docker-abc.scope\n",
        )
        .unwrap();
        std::fs::write(
            scope.join("io.stat"),
            "259:0 rbytes=10 wbytes=20 rios=1 wios=2 dbytes=0 dios=0\n",
        )
        .unwrap();
        let t = std::time::Duration::from_secs(1);
        let by_pid = read_cgroup(&CgroupTarget::Pid(42), &proc_root, &cg, t).unwrap();
        assert_eq!((by_pid.version, by_pid.rbytes, by_pid.wbytes), (2, 10, 20));
        let by_path = read_cgroup(
            &CgroupTarget::Path("/system.slice/docker-abc.scope".into()),
            &proc_root,
            &cg,
            t,
        )
        .unwrap();
        assert_eq!(by_path, by_pid);
        std::fs::write(
            scope.join("io.stat"),
            "259:0 rbytes=110 wbytes=20 rios=1 wios=2 dbytes=0 dios=0\n",
        )
        .unwrap();
        let later = read_cgroup(&CgroupTarget::Pid(42), &proc_root, &cg, t).unwrap();
        let names = HashMap::from([("259:0".to_string(), "nvme0n1".to_string())]);
        let d = cgroup_delta(&by_pid, &later, &names);
        assert_eq!(d.read_bytes_delta, 100);
        assert_eq!(d.devices["nvme0n1"], (100, 0));
        let missing = read_cgroup(&CgroupTarget::Pid(7), &proc_root, &cg, t).unwrap_err();
        assert!(missing.contains("missing"), "{missing}");
    }

    #[test]
    fn cgroup_v1_blkio_by_pid() {
        let dir = tempfile::tempdir().unwrap();
        let proc_root = dir.path().join("proc");
        let cg = dir.path().join("cgroup");
        let b = cg.join("blkio/docker/abc");
        std::fs::create_dir_all(&b).unwrap();
        std::fs::create_dir_all(proc_root.join("9")).unwrap();
        std::fs::write(
            proc_root.join("9/cgroup"),
            "7:blkio:/docker/abc\n4:memory:/docker/abc\n0::/\n",
        )
        .unwrap();
        std::fs::write(
            b.join("blkio.throttle.io_service_bytes"),
            "8:0 Read 5\n8:0 Write 6\n",
        )
        .unwrap();
        let c = read_cgroup(
            &CgroupTarget::Pid(9),
            &proc_root,
            &cg,
            std::time::Duration::from_secs(1),
        )
        .unwrap();
        assert_eq!((c.version, c.rbytes, c.wbytes), (1, 5, 6));
    }
}
