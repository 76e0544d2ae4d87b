//! Block devices from `/proc/diskstats`: raw counters, `iostat -x` rates between
//! two samples, and byte deltas over a phase.
//!
//! The kernel counts sectors in 512-byte units whatever the device's logical
//! block size (Documentation/admin-guide/iostats.rst), so bytes are always
//! `sectors × 512`. Rates follow sysstat's `iostat -x` formulas; "MB" is iostat's
//! MB, 2^20 bytes.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::common::{Reading, counter_delta, mib, read_text, round3};
use crate::session::Config;
use crate::source::{
    At, Column, Fill, Opened, Probe, Rows, Sampler, Source, SourceId, Timeline, cells,
};

pub const SECTOR_BYTES: u64 = 512;

/// One line of `/proc/diskstats`. Fields added in later kernels are optional
/// (discards since 4.18, flushes since 5.5).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DiskStat {
    pub major: u32,
    pub minor: u32,
    pub name: String,
    pub reads_completed: u64,
    pub reads_merged: u64,
    pub sectors_read: u64,
    pub read_ms: u64,
    pub writes_completed: u64,
    pub writes_merged: u64,
    pub sectors_written: u64,
    pub write_ms: u64,
    pub in_flight: u64,
    pub io_ms: u64,
    pub weighted_io_ms: u64,
    #[serde(default)]
    pub discards_completed: Option<u64>,
    #[serde(default)]
    pub discards_merged: Option<u64>,
    #[serde(default)]
    pub sectors_discarded: Option<u64>,
    #[serde(default)]
    pub discard_ms: Option<u64>,
    #[serde(default)]
    pub flushes_completed: Option<u64>,
    #[serde(default)]
    pub flush_ms: Option<u64>,
}

impl DiskStat {
    pub fn read_bytes(&self) -> u64 {
        self.sectors_read.saturating_mul(SECTOR_BYTES)
    }

    pub fn write_bytes(&self) -> u64 {
        self.sectors_written.saturating_mul(SECTOR_BYTES)
    }
}

/// Parses the whole file; malformed lines are skipped (a kernel never writes them,
/// and one bad line must not hide every device).
pub fn parse(text: &str) -> BTreeMap<String, DiskStat> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 14 {
            continue;
        }
        let n = |i: usize| -> Option<u64> { f.get(i).and_then(|s| s.parse().ok()) };
        let (Some(major), Some(minor)) = (f[0].parse().ok(), f[1].parse().ok()) else {
            continue;
        };
        let nums: Option<Vec<u64>> = (3..14).map(n).collect();
        let Some(v) = nums else { continue };
        let s = DiskStat {
            major,
            minor,
            name: f[2].to_string(),
            reads_completed: v[0],
            reads_merged: v[1],
            sectors_read: v[2],
            read_ms: v[3],
            writes_completed: v[4],
            writes_merged: v[5],
            sectors_written: v[6],
            write_ms: v[7],
            in_flight: v[8],
            io_ms: v[9],
            weighted_io_ms: v[10],
            discards_completed: n(14),
            discards_merged: n(15),
            sectors_discarded: n(16),
            discard_ms: n(17),
            flushes_completed: n(18),
            flush_ms: n(19),
        };
        out.insert(s.name.clone(), s);
    }
    out
}

pub fn read(proc_root: &Path) -> Result<BTreeMap<String, DiskStat>, String> {
    read_text(&proc_root.join("diskstats")).map(|t| parse(&t))
}

/// Keeps only `names`, recording each missing one as a reason instead of failing.
pub fn select(
    all: &BTreeMap<String, DiskStat>,
    names: &[String],
) -> (BTreeMap<String, DiskStat>, Vec<String>) {
    let mut found = BTreeMap::new();
    let mut missing = Vec::new();
    for n in names {
        match all.get(n) {
            Some(s) => {
                found.insert(n.clone(), s.clone());
            }
            None => missing.push(format!("block device {n} is not in /proc/diskstats")),
        }
    }
    (found, missing)
}

/// Whole disks worth watching when none are named: not loop, ram, zram or partitions.
pub fn default_devices(all: &BTreeMap<String, DiskStat>, sys_root: &Path) -> Vec<String> {
    all.keys()
        .filter(|n| {
            let virtual_dev = ["loop", "ram", "zram"].iter().any(|p| n.starts_with(p));
            let partition = sys_root
                .join("class/block")
                .join(n)
                .join("partition")
                .exists();
            !virtual_dev && !partition
        })
        .cloned()
        .collect()
}

/// `iostat -x` for one device over one interval.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct IoStat {
    pub device: String,
    pub interval_s: f64,
    pub r_s: f64,
    pub w_s: f64,
    pub d_s: f64,
    pub f_s: f64,
    pub rkb_s: f64,
    pub wkb_s: f64,
    pub rmb_s: f64,
    pub wmb_s: f64,
    pub rrqm_s: f64,
    pub wrqm_s: f64,
    /// Mean ms per read, `None` when nothing was read (iostat prints 0.00).
    pub r_await_ms: Option<f64>,
    pub w_await_ms: Option<f64>,
    /// Mean ms per read or write, the pre-2018 iostat `await`.
    pub await_ms: Option<f64>,
    pub rareq_sz_kb: Option<f64>,
    pub wareq_sz_kb: Option<f64>,
    pub aqu_sz: f64,
    pub util_pct: f64,
}

pub fn iostat(before: &DiskStat, after: &DiskStat, interval_s: f64) -> IoStat {
    let d = |b: u64, a: u64| counter_delta(b, a).0 as f64;
    let dt = if interval_s > 0.0 {
        interval_s
    } else {
        f64::NAN
    };
    let rd = d(before.reads_completed, after.reads_completed);
    let wr = d(before.writes_completed, after.writes_completed);
    let dc = d(
        before.discards_completed.unwrap_or(0),
        after.discards_completed.unwrap_or(0),
    );
    let fl = d(
        before.flushes_completed.unwrap_or(0),
        after.flushes_completed.unwrap_or(0),
    );
    let rsec = d(before.sectors_read, after.sectors_read);
    let wsec = d(before.sectors_written, after.sectors_written);
    let rms = d(before.read_ms, after.read_ms);
    let wms = d(before.write_ms, after.write_ms);
    let per = |num: f64, den: f64| {
        if den > 0.0 {
            Some(round3(num / den))
        } else {
            None
        }
    };
    IoStat {
        device: after.name.clone(),
        interval_s: round3(interval_s),
        r_s: round3(rd / dt),
        w_s: round3(wr / dt),
        d_s: round3(dc / dt),
        f_s: round3(fl / dt),
        rkb_s: round3(rsec / 2.0 / dt),
        wkb_s: round3(wsec / 2.0 / dt),
        rmb_s: round3(rsec / 2048.0 / dt),
        wmb_s: round3(wsec / 2048.0 / dt),
        rrqm_s: round3(d(before.reads_merged, after.reads_merged) / dt),
        wrqm_s: round3(d(before.writes_merged, after.writes_merged) / dt),
        r_await_ms: per(rms, rd),
        w_await_ms: per(wms, wr),
        await_ms: per(rms + wms, rd + wr),
        rareq_sz_kb: per(rsec / 2.0, rd),
        wareq_sz_kb: per(wsec / 2.0, wr),
        aqu_sz: round3(d(before.weighted_io_ms, after.weighted_io_ms) / (dt * 1000.0)),
        util_pct: round3((d(before.io_ms, after.io_ms) / (dt * 1000.0) * 100.0).min(100.0)),
    }
}

/// Counter deltas over a phase, in the units the seed reported.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DiskDelta {
    pub read_ios_delta: u64,
    pub write_ios_delta: u64,
    pub read_sectors_delta: u64,
    pub write_sectors_delta: u64,
    pub read_bytes_delta: u64,
    pub write_bytes_delta: u64,
    pub read_mib_delta: f64,
    pub write_mib_delta: f64,
    pub read_ms_delta: u64,
    pub write_ms_delta: u64,
    pub io_ms_delta: u64,
    pub discard_sectors_delta: u64,
    /// A counter went backwards (device removed and re-added); deltas count from zero.
    pub counter_reset: bool,
}

pub fn delta(before: &DiskStat, after: &DiskStat) -> DiskDelta {
    let mut reset = false;
    let mut d = |b: u64, a: u64| {
        let (v, r) = counter_delta(b, a);
        reset |= r;
        v
    };
    let read_sectors = d(before.sectors_read, after.sectors_read);
    let write_sectors = d(before.sectors_written, after.sectors_written);
    let read_ios = d(before.reads_completed, after.reads_completed);
    let write_ios = d(before.writes_completed, after.writes_completed);
    let read_ms = d(before.read_ms, after.read_ms);
    let write_ms = d(before.write_ms, after.write_ms);
    let io_ms = d(before.io_ms, after.io_ms);
    let discard = d(
        before.sectors_discarded.unwrap_or(0),
        after.sectors_discarded.unwrap_or(0),
    );
    DiskDelta {
        read_ios_delta: read_ios,
        write_ios_delta: write_ios,
        read_sectors_delta: read_sectors,
        write_sectors_delta: write_sectors,
        read_bytes_delta: read_sectors * SECTOR_BYTES,
        write_bytes_delta: write_sectors * SECTOR_BYTES,
        read_mib_delta: mib(read_sectors * SECTOR_BYTES),
        write_mib_delta: mib(write_sectors * SECTOR_BYTES),
        read_ms_delta: read_ms,
        write_ms_delta: write_ms,
        io_ms_delta: io_ms,
        discard_sectors_delta: discard,
        counter_reset: reset,
    }
}

/// The block device holding `path`, as named in `/proc/diskstats`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackingDevice {
    /// The device itself (a partition when the filesystem is on one).
    pub name: String,
    /// The whole disk the partition belongs to (same as `name` for a whole disk).
    pub disk: String,
    pub major: u32,
    pub minor: u32,
}

/// Resolves `path` → `st_dev` → `/sys/dev/block/MAJ:MIN`. Overlay, tmpfs and
/// other device-less filesystems have no such entry and give a reason instead.
pub fn device_for_path(path: &Path, sys_root: &Path) -> Result<BackingDevice, String> {
    let meta = fs::metadata(path).map_err(|e| crate::common::describe_io_error(path, &e))?;
    let dev = meta.dev();
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    let link = sys_root.join(format!("dev/block/{major}:{minor}"));
    let real = fs::canonicalize(&link).map_err(|_| {
        format!(
            "{} is on device {major}:{minor}, which is not a block device (overlay, tmpfs, network fs?)",
            path.display()
        )
    })?;
    let name = file_name(&real)?;
    let disk = if real.join("partition").exists() {
        real.parent()
            .map(file_name)
            .transpose()?
            .unwrap_or_else(|| name.clone())
    } else {
        name.clone()
    };
    Ok(BackingDevice {
        name,
        disk,
        major,
        minor,
    })
}

fn file_name(p: &Path) -> Result<String, String> {
    p.file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .ok_or_else(|| format!("{}: no device name", p.display()))
}

// ---------------------------------------------------------------- source

/// The `os_iostat.csv` columns after the timestamp.
const IOSTAT_COLUMNS: &[Column<IoStat>] = &[
    ("device", |s| s.device.as_str().into()),
    ("r_s", |s| s.r_s.into()),
    ("w_s", |s| s.w_s.into()),
    ("rmb_s", |s| s.rmb_s.into()),
    ("wmb_s", |s| s.wmb_s.into()),
    ("rkb_s", |s| s.rkb_s.into()),
    ("wkb_s", |s| s.wkb_s.into()),
    ("rrqm_s", |s| s.rrqm_s.into()),
    ("wrqm_s", |s| s.wrqm_s.into()),
    ("r_await_ms", |s| s.r_await_ms.into()),
    ("w_await_ms", |s| s.w_await_ms.into()),
    ("await_ms", |s| s.await_ms.into()),
    ("rareq_sz_kb", |s| s.rareq_sz_kb.into()),
    ("wareq_sz_kb", |s| s.wareq_sz_kb.into()),
    ("aqu_sz", |s| s.aqu_sz.into()),
    ("util_pct", |s| s.util_pct.into()),
];

/// The block device whose bytes count as KV disk I/O, and how it was chosen.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KvDisk {
    pub device: Option<String>,
    pub source: String,
}

/// The watched block devices (empty when none can be read).
struct Disks {
    devices: Vec<String>,
    reason: String,
}

/// Probes `/proc/diskstats`. The KV disk is the disk under the KV cache dir
/// when that resolves, and is watched even when not configured.
pub(crate) fn probe(p: &Probe<'_>) -> (Opened, KvDisk) {
    let cfg = p.cfg;
    let mut warnings = Vec::new();
    let all_disks = read(&cfg.roots.proc);
    let mut devices = if cfg.block_devices.is_empty() {
        all_disks
            .as_ref()
            .map(|m| default_devices(m, &cfg.roots.sys))
            .unwrap_or_default()
    } else {
        cfg.block_devices.clone()
    };
    let backing = cfg
        .kv_cache_dir
        .as_ref()
        .map(|d| device_for_path(d, &cfg.roots.sys));
    let kv = match backing {
        Some(Ok(b)) => {
            if !devices.contains(&b.disk) {
                devices.push(b.disk.clone());
            }
            KvDisk {
                device: Some(b.disk),
                source: format!("backs the KV cache dir ({})", b.name),
            }
        }
        other => {
            if let Some(Err(e)) = other {
                warnings.push(format!("KV cache dir: {e}"));
            }
            KvDisk {
                device: devices.first().cloned(),
                source: "first configured block device".into(),
            }
        }
    };
    let check = all_disks.and_then(|m| {
        let (_, missing) = select(&m, &devices);
        if missing.len() == devices.len() && !devices.is_empty() {
            Err(missing.join("; "))
        } else {
            warnings.extend(missing);
            Ok(())
        }
    });
    let on = p.on(SourceId::Diskstats);
    let usable = on && check.is_ok();
    let disks = Disks {
        devices: if usable { devices } else { Vec::new() },
        reason: Opened::reason(on, &check),
    };
    let mut opened = Opened::new(disks, on, check);
    opened.warnings = warnings;
    (opened, kv)
}

impl Source for Disks {
    fn id(&self) -> SourceId {
        SourceId::Diskstats
    }

    fn read(&self, at: &At<'_>) -> Fill {
        if self.devices.is_empty() {
            let r = Reading::unavailable(self.reason.clone());
            return Box::new(move |s| s.block_devices = r);
        }
        match read(&at.cfg.roots.proc) {
            Ok(all) => {
                let (found, missing) = select(&all, &self.devices);
                let names = all
                    .values()
                    .map(|d| (format!("{}:{}", d.major, d.minor), d.name.clone()))
                    .collect();
                Box::new(move |s| {
                    s.block_devices = Reading::ok(found);
                    s.block_device_errors = missing;
                    s.device_names = names;
                })
            }
            Err(e) => Box::new(move |s| s.block_devices = Reading::unavailable(e)),
        }
    }

    fn sampler(&self) -> Option<Box<dyn Sampler>> {
        (!self.devices.is_empty()).then(|| {
            Box::new(IostatSampler {
                devices: self.devices.clone(),
                prev: None,
            }) as Box<dyn Sampler>
        })
    }
}

struct IostatSampler {
    devices: Vec<String>,
    prev: Option<(Instant, BTreeMap<String, DiskStat>)>,
}

impl Sampler for IostatSampler {
    fn timelines(&self) -> Vec<Timeline> {
        vec![Timeline::new("os_iostat.csv", IOSTAT_COLUMNS)]
    }

    fn sample(&mut self, cfg: &Config, _elapsed_s: f64, rows: &mut Rows) -> Result<(), String> {
        let all = read(&cfg.roots.proc)?;
        let now = Instant::now();
        let (found, _) = select(&all, &self.devices);
        if let Some((t0, before)) = &self.prev {
            let secs = now.duration_since(*t0).as_secs_f64();
            for (name, a) in &found {
                if let Some(b) = before.get(name) {
                    rows.push((0, cells(IOSTAT_COLUMNS, &iostat(b, a, secs))));
                }
            }
        }
        self.prev = Some((now, found));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Captured from a 6.1 kernel (20 fields) and a 4.4 kernel (14 fields).
    const TEXT: &str = "\
 259       0 nvme0n1 1000 10 80000 500 2000 20 262144 1500 0 1800 2000 5 0 4096 3 100 40
   8       0 sda 10 0 80 4 0 0 0 0 0 4 4
   7       0 loop0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0
garbage line
";

    #[test]
    fn parses_new_and_old_layouts() {
        let m = parse(TEXT);
        assert_eq!(m.len(), 3);
        let n = &m["nvme0n1"];
        assert_eq!((n.major, n.minor), (259, 0));
        assert_eq!(n.sectors_written, 262144);
        assert_eq!(n.write_bytes(), 262144 * 512);
        assert_eq!(n.discards_completed, Some(5));
        assert_eq!(n.sectors_discarded, Some(4096));
        assert_eq!(n.flushes_completed, Some(100));
        assert_eq!(n.flush_ms, Some(40));
        assert_eq!(m["sda"].discards_completed, None);
        assert_eq!(m["sda"].sectors_read, 80);
    }

    #[test]
    fn iostat_matches_sysstat_formulas() {
        let before = DiskStat {
            name: "nvme0n1".into(),
            ..Default::default()
        };
        let after = DiskStat {
            name: "nvme0n1".into(),
            reads_completed: 100,
            sectors_read: 100 * 256, // 128 KiB reads
            read_ms: 50,
            writes_completed: 200,
            writes_merged: 10,
            sectors_written: 200 * 1024, // 512 KiB writes
            write_ms: 400,
            io_ms: 500,
            weighted_io_ms: 900,
            ..Default::default()
        };
        let s = iostat(&before, &after, 2.0);
        assert_eq!(s.r_s, 50.0);
        assert_eq!(s.w_s, 100.0);
        assert_eq!(s.rkb_s, 100.0 * 128.0 / 2.0);
        assert_eq!(s.wmb_s, 200.0 * 0.5 / 2.0);
        assert_eq!(s.wrqm_s, 5.0);
        assert_eq!(s.r_await_ms, Some(0.5));
        assert_eq!(s.w_await_ms, Some(2.0));
        assert_eq!(s.await_ms, Some(1.5));
        assert_eq!(s.rareq_sz_kb, Some(128.0));
        assert_eq!(s.wareq_sz_kb, Some(512.0));
        assert_eq!(s.aqu_sz, 0.45);
        assert_eq!(s.util_pct, 25.0);
        let idle = iostat(&after, &after, 1.0);
        assert_eq!(idle.r_await_ms, None);
        assert_eq!(idle.util_pct, 0.0);
    }

    #[test]
    fn delta_in_bytes_and_reset() {
        let a = DiskStat {
            sectors_written: 1000,
            writes_completed: 10,
            ..Default::default()
        };
        let b = DiskStat {
            sectors_written: 3048,
            writes_completed: 12,
            ..Default::default()
        };
        let d = delta(&a, &b);
        assert_eq!(d.write_bytes_delta, 2048 * 512);
        assert_eq!(d.write_mib_delta, 1.0);
        assert_eq!(d.write_ios_delta, 2);
        assert!(!d.counter_reset);
        let r = delta(&b, &a);
        assert!(r.counter_reset);
        assert_eq!(r.write_sectors_delta, 1000);
    }

    #[test]
    fn select_reports_missing_devices() {
        let m = parse(TEXT);
        let (found, missing) = select(&m, &["sda".into(), "nvme9n1".into()]);
        assert_eq!(found.len(), 1);
        assert_eq!(
            missing,
            vec!["block device nvme9n1 is not in /proc/diskstats"]
        );
    }
}
