//! Memory and page cache from `/proc/meminfo` and `/proc/vmstat`.
//!
//! Every key is kept (kernels differ in what they have); the timeline picks the
//! few that tell whether KV traffic went through the page cache: `Cached`,
//! `Dirty`, `Writeback`, and the paging rates `pgpgin`/`pgpgout` (KiB/s).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::common::{Reading, counter_delta, mib_cell, read_text, round3};
use crate::session::Config;
use crate::source::{
    At, Column, DISABLED, Fill, Opened, Probe, Rows, Sampler, Source, SourceId, Timeline, cells,
};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MemorySnapshot {
    /// `/proc/meminfo` in bytes (the kernel's "kB" is KiB); page counts (HugePages_*) as is.
    pub meminfo: BTreeMap<String, u64>,
    /// `/proc/vmstat` as is (pages or events).
    pub vmstat: BTreeMap<String, u64>,
}

impl MemorySnapshot {
    pub fn mem(&self, key: &str) -> Option<u64> {
        self.meminfo.get(key).copied()
    }
    pub fn vm(&self, key: &str) -> Option<u64> {
        self.vmstat.get(key).copied()
    }
}

pub fn parse_meminfo(text: &str) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let Some((k, rest)) = line.split_once(':') else {
            continue;
        };
        let mut it = rest.split_whitespace();
        let Some(v) = it.next().and_then(|v| v.parse::<u64>().ok()) else {
            continue;
        };
        let v = match it.next() {
            Some("kB") => v.saturating_mul(1024),
            _ => v,
        };
        out.insert(k.trim().to_string(), v);
    }
    out
}

pub fn parse_vmstat(text: &str) -> BTreeMap<String, u64> {
    text.lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(' ')?;
            Some((k.to_string(), v.trim().parse().ok()?))
        })
        .collect()
}

pub fn read(proc_root: &Path) -> Result<MemorySnapshot, String> {
    let meminfo = parse_meminfo(&read_text(&proc_root.join("meminfo"))?);
    // vmstat can be absent in minimal containers; meminfo alone is still useful.
    let vmstat = read_text(&proc_root.join("vmstat"))
        .map(|t| parse_vmstat(&t))
        .unwrap_or_default();
    Ok(MemorySnapshot { meminfo, vmstat })
}

/// Gauges reported before/after a phase (bytes).
pub const PHASE_GAUGES: &[&str] = &[
    "MemTotal",
    "MemFree",
    "MemAvailable",
    "Buffers",
    "Cached",
    "Dirty",
    "Writeback",
    "Mlocked",
    "SwapTotal",
    "SwapFree",
    "Shmem",
];

/// vmstat event counters whose phase deltas say how much paging happened.
pub const PHASE_COUNTERS: &[&str] = &[
    "pgpgin",
    "pgpgout",
    "pswpin",
    "pswpout",
    "pgfault",
    "pgmajfault",
    "nr_dirtied",
    "nr_written",
    "pgsteal_kswapd",
    "pgsteal_direct",
    "pgscan_kswapd",
    "pgscan_direct",
    "workingset_refault_file",
    "allocstall_normal",
    "allocstall_movable",
];

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MemoryDelta {
    pub before: BTreeMap<String, u64>,
    pub after: BTreeMap<String, u64>,
    /// vmstat counter deltas; a missing key on either side is left out.
    pub vmstat_delta: BTreeMap<String, u64>,
}

pub fn delta(before: &MemorySnapshot, after: &MemorySnapshot) -> MemoryDelta {
    let pick = |m: &MemorySnapshot| {
        PHASE_GAUGES
            .iter()
            .filter_map(|k| Some((k.to_string(), m.mem(k)?)))
            .collect()
    };
    let vmstat_delta = PHASE_COUNTERS
        .iter()
        .filter_map(|k| Some((k.to_string(), counter_delta(before.vm(k)?, after.vm(k)?).0)))
        .collect();
    MemoryDelta {
        before: pick(before),
        after: pick(after),
        vmstat_delta,
    }
}

/// One timeline row's rates between two samples.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct MemoryRates {
    pub pgpgin_kib_s: Option<f64>,
    pub pgpgout_kib_s: Option<f64>,
    pub pswpin_s: Option<f64>,
    pub pswpout_s: Option<f64>,
    pub pgmajfault_s: Option<f64>,
}

pub fn rates(before: &MemorySnapshot, after: &MemorySnapshot, interval_s: f64) -> MemoryRates {
    let r = |k: &str| {
        let (b, a) = (before.vm(k)?, after.vm(k)?);
        (interval_s > 0.0).then(|| round3(counter_delta(b, a).0 as f64 / interval_s))
    };
    MemoryRates {
        pgpgin_kib_s: r("pgpgin"),
        pgpgout_kib_s: r("pgpgout"),
        pswpin_s: r("pswpin"),
        pswpout_s: r("pswpout"),
        pgmajfault_s: r("pgmajfault"),
    }
}

// ---------------------------------------------------------------- source

/// The swap in use, when the kernel reports swap at all.
fn swap_used(m: &MemorySnapshot) -> Option<u64> {
    Some(m.mem("SwapTotal")?.saturating_sub(m.mem("SwapFree")?))
}

/// The `memory.csv` columns after the timestamp: one reading and the paging
/// rates since the one before.
const COLUMNS: &[Column<(MemorySnapshot, MemoryRates)>] = &[
    ("mem_total_mib", |(m, _)| mib_cell(m.mem("MemTotal"))),
    ("mem_available_mib", |(m, _)| {
        mib_cell(m.mem("MemAvailable"))
    }),
    ("cached_mib", |(m, _)| mib_cell(m.mem("Cached"))),
    ("dirty_mib", |(m, _)| mib_cell(m.mem("Dirty"))),
    ("writeback_mib", |(m, _)| mib_cell(m.mem("Writeback"))),
    ("buffers_mib", |(m, _)| mib_cell(m.mem("Buffers"))),
    ("swap_used_mib", |(m, _)| mib_cell(swap_used(m))),
    ("pgpgin_kib_s", |(_, r)| r.pgpgin_kib_s.into()),
    ("pgpgout_kib_s", |(_, r)| r.pgpgout_kib_s.into()),
    ("pswpin_s", |(_, r)| r.pswpin_s.into()),
    ("pswpout_s", |(_, r)| r.pswpout_s.into()),
    ("pgmajfault_s", |(_, r)| r.pgmajfault_s.into()),
];

/// Memory is read whenever it is on: a failed probe is most likely to fail again,
/// and then the snapshot says why.
struct Memory {
    on: bool,
}

pub(crate) fn probe(p: &Probe<'_>) -> Opened {
    let on = p.on(SourceId::Memory);
    let result = if on {
        read(&p.cfg.roots.proc).map(|_| ())
    } else {
        Ok(())
    };
    Opened::new(Memory { on }, on, result)
}

impl Source for Memory {
    fn id(&self) -> SourceId {
        SourceId::Memory
    }

    fn read(&self, at: &At<'_>) -> Fill {
        let r = if self.on {
            Reading::from_result(read(&at.cfg.roots.proc))
        } else {
            Reading::unavailable(DISABLED)
        };
        Box::new(move |s| s.memory = r)
    }

    fn sampler(&self) -> Option<Box<dyn Sampler>> {
        self.on
            .then(|| Box::new(MemorySampler { prev: None }) as Box<dyn Sampler>)
    }
}

struct MemorySampler {
    prev: Option<(Instant, MemorySnapshot)>,
}

impl Sampler for MemorySampler {
    fn timelines(&self) -> Vec<Timeline> {
        vec![Timeline::new("memory.csv", COLUMNS)]
    }

    fn sample(&mut self, cfg: &Config, _elapsed_s: f64, rows: &mut Rows) -> Result<(), String> {
        let m = read(&cfg.roots.proc)?;
        let now = Instant::now();
        let r = self
            .prev
            .as_ref()
            .map(|(t0, b)| rates(b, &m, now.duration_since(*t0).as_secs_f64()))
            .unwrap_or_default();
        let row = (m, r);
        rows.push((0, cells(COLUMNS, &row)));
        self.prev = Some((now, row.0));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_in_bytes_and_hugepage_counts_as_is() {
        let m = parse_meminfo(
            "MemTotal:       24576000 kB\nDirty:               12 kB\nHugePages_Total:       4\nbad\n",
        );
        assert_eq!(m["MemTotal"], 24576000 * 1024);
        assert_eq!(m["Dirty"], 12 * 1024);
        assert_eq!(m["HugePages_Total"], 4);
        assert_eq!(m.len(), 3);
    }

    #[test]
    fn vmstat_deltas_and_rates() {
        let a = MemorySnapshot {
            meminfo: parse_meminfo("Cached: 100 kB\n"),
            vmstat: parse_vmstat("pgpgin 100\npgpgout 50\n"),
        };
        let b = MemorySnapshot {
            meminfo: parse_meminfo("Cached: 300 kB\n"),
            vmstat: parse_vmstat("pgpgin 300\npgpgout 40\n"),
        };
        let d = delta(&a, &b);
        assert_eq!(d.before["Cached"], 100 * 1024);
        assert_eq!(d.after["Cached"], 300 * 1024);
        assert_eq!(d.vmstat_delta["pgpgin"], 200);
        assert_eq!(d.vmstat_delta["pgpgout"], 40); // reset: counts from zero
        let r = rates(&a, &b, 2.0);
        assert_eq!(r.pgpgin_kib_s, Some(100.0));
        assert_eq!(r.pswpin_s, None);
    }
}
