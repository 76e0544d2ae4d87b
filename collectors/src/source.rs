//! What every telemetry source is to a [`Session`](crate::Session): a stable
//! id, a probe at start, a read at each phase boundary, optionally a timeline
//! sampler, and optionally some run-end work. Each source implements
//! [`Source`] in its own module; the session only loops over them.

use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::common::Cell;
use crate::gpu::GpuSample;
use crate::logs::Capture;
use crate::nvme::{Identity, SmartDelta};
use crate::phase::Snapshot;
use crate::session::Config;

/// A telemetry source, by the name `--no-collector` and the reports use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SourceId {
    Diskstats,
    Processes,
    Cgroup,
    Memory,
    Gpu,
    Nvme,
    Kvbm,
    Frontend,
    Worker,
    Logs,
    KvCacheDir,
}

impl SourceId {
    pub const ALL: [SourceId; 11] = [
        SourceId::Diskstats,
        SourceId::Processes,
        SourceId::Cgroup,
        SourceId::Memory,
        SourceId::Gpu,
        SourceId::Nvme,
        SourceId::Kvbm,
        SourceId::Frontend,
        SourceId::Worker,
        SourceId::Logs,
        SourceId::KvCacheDir,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            SourceId::Diskstats => "diskstats",
            SourceId::Processes => "processes",
            SourceId::Cgroup => "cgroup",
            SourceId::Memory => "memory",
            SourceId::Gpu => "gpu",
            SourceId::Nvme => "nvme",
            SourceId::Kvbm => "kvbm",
            SourceId::Frontend => "frontend",
            SourceId::Worker => "worker",
            SourceId::Logs => "logs",
            SourceId::KvCacheDir => "kv-cache-dir",
        }
    }

    /// Every name, in [`SourceId::ALL`] order, for help texts and errors.
    pub fn names() -> impl Iterator<Item = &'static str> {
        SourceId::ALL.into_iter().map(SourceId::as_str)
    }
}

impl fmt::Display for SourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Ordered by name, so maps keyed by id serialize in the order the
/// string-keyed maps of earlier versions did.
impl Ord for SourceId {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl PartialOrd for SourceId {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// A name that is not a [`SourceId`]; says which names are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownSource(pub String);

impl fmt::Display for UnknownSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} is not a collector (one of: {})",
            self.0,
            SourceId::names().collect::<Vec<_>>().join(", ")
        )
    }
}

impl std::error::Error for UnknownSource {}

impl FromStr for SourceId {
    type Err = UnknownSource;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SourceId::ALL
            .into_iter()
            .find(|id| id.as_str() == s)
            .ok_or_else(|| UnknownSource(s.to_string()))
    }
}

impl Serialize for SourceId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// Versions before the id enum wrote `kv_cache_dir` in `telemetry_report.json`.
const LEGACY_KV_CACHE_DIR: &str = "kv_cache_dir";

impl<'de> Deserialize<'de> for SourceId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = std::borrow::Cow::<'de, str>::deserialize(d)?;
        if s == LEGACY_KV_CACHE_DIR {
            return Ok(SourceId::KvCacheDir);
        }
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Why a source has nothing, when it was turned off.
pub const DISABLED: &str = "disabled";

/// One timeline column: its header and how its cell is read from a row value.
/// Keeping both in one entry is what makes a column a one-line change.
pub type Column<T> = (&'static str, fn(&T) -> Cell);

pub fn column_names<T>(cols: &[Column<T>]) -> Vec<&'static str> {
    cols.iter().map(|(n, _)| *n).collect()
}

pub fn cells<T>(cols: &[Column<T>], v: &T) -> Vec<Cell> {
    cols.iter().map(|(_, f)| f(v)).collect()
}

/// One CSV timeline under `telemetry/`. The session prepends
/// `timestamp_utc,elapsed_s` to the header and to every row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timeline {
    pub file: &'static str,
    pub columns: Vec<&'static str>,
}

impl Timeline {
    pub fn new<T>(file: &'static str, cols: &[Column<T>]) -> Self {
        Timeline {
            file,
            columns: column_names(cols),
        }
    }
}

/// Rows one tick produced, each for the timeline at that index in
/// [`Sampler::timelines`].
pub type Rows = Vec<(usize, Vec<Cell>)>;

/// The part of a source that runs on the sampling thread and owns the
/// previous reading its rates are computed from.
pub trait Sampler: Send {
    fn timelines(&self) -> Vec<Timeline>;
    /// `elapsed_s` is the row's time since the session started.
    fn sample(&mut self, cfg: &Config, elapsed_s: f64, rows: &mut Rows) -> Result<(), String>;
}

/// Fills this source's part of a [`Snapshot`]. Reads run in parallel (a hung
/// metrics port may take the whole timeout); the fills are applied in order.
pub type Fill = Box<dyn FnOnce(&mut Snapshot) + Send>;

/// What a read at a phase boundary knows.
pub struct At<'a> {
    pub cfg: &'a Config,
    pub label: &'a str,
    /// Problems worth reporting that are not the source's own reading.
    pub warnings: &'a Mutex<Vec<String>>,
}

impl At<'_> {
    pub fn warn(&self, w: String) {
        if let Ok(mut v) = self.warnings.lock() {
            v.push(w);
        }
    }
}

/// What sources contribute to the report at run end.
#[derive(Debug, Default)]
pub struct Finish {
    pub nvme_identity: Option<Identity>,
    pub nvme_run_delta: Option<SmartDelta>,
    pub captures: Vec<Capture>,
    pub warnings: Vec<String>,
}

pub trait Source: Send + Sync {
    fn id(&self) -> SourceId;
    fn read(&self, at: &At<'_>) -> Fill;
    /// The timeline sampler, when the source has a timeline and can feed it.
    fn sampler(&self) -> Option<Box<dyn Sampler>> {
        None
    }
    /// Run-end work after the last snapshot (post-run SMART, log captures).
    fn finish(&self, _cfg: &Config, _out: &mut Finish) {}
}

/// What the session hands every probe.
pub struct Probe<'a> {
    pub cfg: &'a Config,
    /// GPU samples the timeline keeps for per-phase GPU stats.
    pub gpu_timeline: &'a GpuTimeline,
}

impl Probe<'_> {
    pub fn on(&self, id: SourceId) -> bool {
        self.cfg.collectors.enabled(id)
    }
}

pub type GpuTimeline = Arc<Mutex<Vec<(f64, GpuSample)>>>;

/// A probed source: the source itself, whether it works, and what the probe noticed.
pub struct Opened {
    pub source: Box<dyn Source>,
    pub enabled: bool,
    pub result: Result<(), String>,
    pub warnings: Vec<String>,
}

impl Opened {
    pub fn new(source: impl Source + 'static, enabled: bool, result: Result<(), String>) -> Self {
        Opened {
            source: Box::new(source),
            enabled,
            result,
            warnings: Vec::new(),
        }
    }

    /// The reason to record in the snapshot when the source has no reading.
    pub fn reason(enabled: bool, result: &Result<(), String>) -> String {
        match (enabled, result) {
            (false, _) => DISABLED.into(),
            (true, Err(e)) => e.clone(),
            (true, Ok(())) => "unavailable".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_ids_round_trip_through_their_names() {
        for id in SourceId::ALL {
            assert_eq!(id.as_str().parse::<SourceId>(), Ok(id));
            assert_eq!(id.to_string(), id.as_str());
            let j = serde_json::to_value(id).unwrap();
            assert_eq!(j, id.as_str());
            assert_eq!(serde_json::from_value::<SourceId>(j).unwrap(), id);
        }
        assert_eq!(
            SourceId::names().collect::<Vec<_>>(),
            [
                "diskstats",
                "processes",
                "cgroup",
                "memory",
                "gpu",
                "nvme",
                "kvbm",
                "frontend",
                "worker",
                "logs",
                "kv-cache-dir"
            ]
        );
    }

    #[test]
    fn an_unknown_name_lists_the_known_ones() {
        let e = "disk".parse::<SourceId>().unwrap_err();
        assert_eq!(
            e.to_string(),
            "\"disk\" is not a collector (one of: diskstats, processes, cgroup, memory, gpu, nvme, kvbm, frontend, worker, logs, kv-cache-dir)"
        );
        // The old key is only for reading old documents, not a second CLI spelling.
        assert!("kv_cache_dir".parse::<SourceId>().is_err());
        assert_eq!(
            serde_json::from_str::<SourceId>("\"kv_cache_dir\"").unwrap(),
            SourceId::KvCacheDir
        );
        assert!(serde_json::from_str::<SourceId>("\"disk\"").is_err());
    }

    #[test]
    fn maps_keyed_by_id_keep_the_name_order() {
        let m: std::collections::BTreeMap<SourceId, u8> =
            SourceId::ALL.into_iter().map(|id| (id, 0)).collect();
        let keys: Vec<&str> = m.keys().map(|k| k.as_str()).collect();
        let mut sorted = keys.clone();
        sorted.sort_unstable();
        assert_eq!(keys, sorted);
    }
}
