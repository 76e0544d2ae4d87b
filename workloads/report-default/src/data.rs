//! The run directory, read into what the reports need.
//!
//! `summary.json` is required; everything else is optional and its absence
//! is recorded so the reports can say "not collected". The JSONL files are
//! streamed line by line and reduced as they are read (log-binned histograms,
//! one point per request, hash sets), so memory stays bounded by the number
//! of requests, not their size.

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::Options;

/// Log-binned histogram of milliseconds: 200 bins per decade from 1 µs to
/// ~3 h, plus a count of exact zeros (extra tokens of a first chunk).
#[derive(Debug, Clone)]
pub struct LogHist {
    bins: Vec<u64>,
    pub zeros: u64,
    pub count: u64,
    pub min: f64,
    pub max: f64,
}

const BINS_PER_DECADE: f64 = 200.0;
const LOG_MIN: f64 = -3.0;
const DECADES: f64 = 10.0;

impl Default for LogHist {
    fn default() -> Self {
        LogHist {
            bins: vec![0; (BINS_PER_DECADE * DECADES) as usize],
            zeros: 0,
            count: 0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
        }
    }
}

impl LogHist {
    pub fn record(&mut self, ms: f64) {
        if !ms.is_finite() || ms < 0.0 {
            return;
        }
        self.count += 1;
        self.min = self.min.min(ms);
        self.max = self.max.max(ms);
        if ms <= 0.0 {
            self.zeros += 1;
            return;
        }
        let i = ((ms.log10() - LOG_MIN) * BINS_PER_DECADE).floor();
        let i = i.clamp(0.0, (self.bins.len() - 1) as f64) as usize;
        self.bins[i] += 1;
    }

    fn bin_value(i: usize) -> f64 {
        10f64.powf(LOG_MIN + (i as f64 + 0.5) / BINS_PER_DECADE)
    }

    /// The value below which a fraction `q` of samples fall (0.6 % bin error).
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        if q <= 0.0 {
            return Some(self.min);
        }
        if q >= 1.0 {
            return Some(self.max);
        }
        let rank = (q * self.count as f64).ceil().max(1.0) as u64;
        if rank <= self.zeros {
            return Some(0.0);
        }
        let mut seen = self.zeros;
        for (i, &c) in self.bins.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(Self::bin_value(i).clamp(self.min, self.max));
            }
        }
        Some(self.max)
    }
}

/// One finished request, for the latency-over-time chart.
#[derive(Debug, Clone, Copy)]
pub struct Point {
    /// Seconds from the run's start to the actual send.
    pub t_s: f64,
    pub latency_ms: f64,
    pub ttft_ms: Option<f64>,
    pub ok: bool,
    pub phase: usize,
}

#[derive(Debug, Clone, Default)]
pub struct PhaseData {
    pub name: String,
    pub include: bool,
    /// `phase_summaries[i]` of `summary.json` (Null if missing).
    pub summary: Value,
    pub ttft: LogHist,
    pub itl: LogHist,
    /// First send and last end, seconds from the run's start.
    pub span_s: Option<(f64, f64)>,
    pub kvbm: Option<Value>,
    pub io: Option<Value>,
}

#[derive(Debug, Clone, Default)]
pub struct IdentityPhase {
    pub requests: u64,
    pub prompts: HashSet<String>,
    pub identities: HashSet<String>,
}

#[derive(Debug, Clone, Default)]
pub struct Identity {
    pub available: bool,
    pub requests: u64,
    pub prompts: usize,
    pub params: usize,
    pub identities: usize,
    pub payloads: usize,
    pub prefix_hashes: usize,
    pub with_prefix: u64,
    pub prefix_repeats: u64,
    pub prompt_repeats: u64,
    pub sessions: usize,
    pub phases: Vec<(String, u64, usize, usize)>,
}

/// One numeric column of a GPU telemetry CSV.
#[derive(Debug, Clone)]
pub struct Series {
    pub name: String,
    /// (seconds from the run's start or the first sample, value).
    pub points: Vec<(f64, f64)>,
}

#[derive(Debug, Clone, Default)]
pub struct Gpu {
    pub files: Vec<String>,
    /// Charts by unit group (utilization, memory, power, temperature, clocks, other).
    pub groups: Vec<(String, Vec<Series>)>,
    /// Whether x is aligned to the run's start (else to the first sample).
    pub aligned: bool,
}

pub struct Run {
    pub run_id: String,
    pub files: Vec<String>,
    pub summary: Value,
    pub config: Value,
    pub manifest: Value,
    pub verdict: Option<Value>,
    pub phases: Vec<PhaseData>,
    pub points: Vec<Point>,
    pub rows: u64,
    /// Unix time (ms) of the run's start: a row's `start_ts` minus its `sent_offset_ms`.
    pub start_epoch_ms: Option<f64>,
    pub identity: Identity,
    pub gpu: Option<Gpu>,
    pub kvbm_collected: bool,
    pub io_collected: bool,
    pub opts: Options,
}

fn read_json(p: &Path) -> Option<Value> {
    let text = std::fs::read_to_string(p).ok()?;
    serde_json::from_str(&text).ok()
}

fn lines(p: &Path) -> Option<impl Iterator<Item = Value>> {
    let f = File::open(p).ok()?;
    Some(
        BufReader::new(f)
            .lines()
            .map_while(Result::ok)
            .filter_map(|l| serde_json::from_str::<Value>(&l).ok()),
    )
}

/// `2026-11-27T21:41:22.781Z` → Unix milliseconds (UTC only, as written by sparkhost).
pub fn parse_utc_ms(s: &str) -> Option<f64> {
    let s = s
        .trim()
        .strip_suffix('Z')
        .or_else(|| s.trim().strip_suffix("+00:00"))?;
    let (date, time) = s.split_once(['T', ' '])?;
    let mut d = date.split('-');
    let y: i64 = d.next()?.parse().ok()?;
    let m: i64 = d.next()?.parse().ok()?;
    let day: i64 = d.next()?.parse().ok()?;
    let mut t = time.split(':');
    let hh: f64 = t.next()?.parse().ok()?;
    let mm: f64 = t.next()?.parse().ok()?;
    let ss: f64 = t.next()?.parse().ok()?;
    // Days from civil (Howard Hinnant's algorithm).
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days as f64 * 86_400_000.0 + (hh * 3600.0 + mm * 60.0 + ss) * 1000.0)
}

fn itl_into(h: &mut LogHist, offsets: &[f64], tokens: &[u64]) {
    let mut prev: Option<f64> = None;
    for (i, &t) in offsets.iter().enumerate() {
        let k = tokens.get(i).copied().unwrap_or(1);
        if k == 0 {
            continue;
        }
        match prev {
            None => {
                for _ in 1..k {
                    h.record(0.0);
                }
            }
            Some(p) => {
                let each = (t - p) / k as f64;
                for _ in 0..k {
                    h.record(each);
                }
            }
        }
        prev = Some(t);
    }
}

fn f64s(v: Option<&Value>) -> Vec<f64> {
    v.and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_f64).collect())
        .unwrap_or_default()
}

impl Run {
    pub fn load(dir: &Path, run_id: &str, files: &[String], opts: &Options) -> Result<Run, String> {
        let summary = read_json(&dir.join("summary.json")).ok_or_else(|| {
            "summary.json is missing or not JSON: the run did not finish writing its results"
                .to_owned()
        })?;
        let config = read_json(&dir.join("config.json")).unwrap_or(Value::Null);
        let manifest = read_json(&dir.join("manifest.json")).unwrap_or(Value::Null);
        let verdict = read_json(&dir.join("verdict.json"));
        let run_id = summary
            .get("run_id")
            .and_then(Value::as_str)
            .unwrap_or(run_id)
            .to_owned();
        let mut phases: Vec<PhaseData> = summary
            .get("phase_summaries")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .map(|p| PhaseData {
                        name: p
                            .get("phase")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_owned(),
                        include: p
                            .get("include_in_summary")
                            .and_then(Value::as_bool)
                            .unwrap_or(true),
                        summary: p.clone(),
                        ..Default::default()
                    })
                    .collect()
            })
            .unwrap_or_default();

        let mut points = Vec::new();
        let mut rows = 0u64;
        let mut start_epoch_ms = None;
        if let Some(it) = lines(&dir.join("requests.jsonl")) {
            for v in it {
                rows += 1;
                let name = v.get("phase").and_then(Value::as_str).unwrap_or_default();
                let idx = match phases.iter().position(|p| p.name == name) {
                    Some(i) => i,
                    None => {
                        phases.push(PhaseData {
                            name: name.to_owned(),
                            include: true,
                            summary: Value::Null,
                            ..Default::default()
                        });
                        phases.len() - 1
                    }
                };
                let f = |k: &str| v.get(k).and_then(Value::as_f64);
                let ok = v.get("ok").and_then(Value::as_bool).unwrap_or(false);
                let sent = f("sent_offset_ms").unwrap_or(0.0);
                let latency = f("latency_ms").unwrap_or(0.0);
                if start_epoch_ms.is_none()
                    && let Some(ts) = v
                        .get("start_ts")
                        .and_then(Value::as_str)
                        .and_then(parse_utc_ms)
                {
                    start_epoch_ms = Some(ts - sent);
                }
                let p = &mut phases[idx];
                if ok {
                    if let Some(t) = f("ttft_ms") {
                        p.ttft.record(t);
                    }
                    itl_into(
                        &mut p.itl,
                        &f64s(v.get("chunk_offsets_ms")),
                        &v.get("chunk_tokens")
                            .and_then(Value::as_array)
                            .map(|a| a.iter().filter_map(Value::as_u64).collect::<Vec<_>>())
                            .unwrap_or_default(),
                    );
                }
                let (s0, e0) = p.span_s.unwrap_or((f64::INFINITY, f64::NEG_INFINITY));
                p.span_s = Some((s0.min(sent / 1000.0), e0.max((sent + latency) / 1000.0)));
                points.push(Point {
                    t_s: sent / 1000.0,
                    latency_ms: latency,
                    ttft_ms: f("ttft_ms"),
                    ok,
                    phase: idx,
                });
            }
        }

        let mut kvbm_collected = false;
        let mut io_collected = false;
        for p in &mut phases {
            // Where the host wrote this phase's files; older runs used the name.
            let stem = p
                .summary
                .get("phase_deltas_stem")
                .and_then(|v| v.as_str())
                .unwrap_or(&p.name)
                .to_owned();
            let from_summary = p
                .summary
                .get("kvbm_metrics_delta")
                .filter(|v| v.is_object())
                .cloned();
            p.kvbm = from_summary.or_else(|| {
                read_json(
                    &dir.join("phase_deltas")
                        .join(format!("phase_{stem}_kvbm_metrics_delta.json")),
                )
            });
            p.io = read_json(
                &dir.join("phase_deltas")
                    .join(format!("phase_{stem}_os_io_delta.json")),
            );
            kvbm_collected |= p.kvbm.is_some();
            io_collected |= p.io.is_some();
        }

        let identity = identity(&dir.join("request_manifest.jsonl"));
        let gpu = gpu(dir, files, start_epoch_ms);
        Ok(Run {
            run_id,
            files: files.to_vec(),
            summary,
            config,
            manifest,
            verdict,
            phases,
            points,
            rows,
            start_epoch_ms,
            identity,
            gpu,
            kvbm_collected,
            io_collected,
            opts: opts.clone(),
        })
    }

    /// `summary.json` at a path of keys.
    pub fn s(&self, path: &[&str]) -> Option<&Value> {
        let mut cur = &self.summary;
        for k in path {
            cur = cur.get(k)?;
        }
        (!cur.is_null()).then_some(cur)
    }

    /// The overall statistics, measured even when the run is invalid.
    pub fn overall(&self) -> &Value {
        self.summary
            .get("overall_measured")
            .filter(|v| v.is_object())
            .or_else(|| {
                self.summary
                    .get("overall_summary")
                    .filter(|v| v.get("excluded").is_none())
            })
            .unwrap_or(&Value::Null)
    }

    pub fn valid(&self) -> bool {
        self.summary
            .get("run_valid")
            .and_then(Value::as_bool)
            .unwrap_or(false)
    }
}

/// A KVBM delta by short counter name, under the seed's or a shorter key.
pub fn kv(delta: &Value, short: &str) -> Option<f64> {
    if delta.get("available").and_then(Value::as_bool) == Some(false) {
        return None;
    }
    [
        format!("kvbm_{short}_delta"),
        format!("{short}_delta"),
        short.to_owned(),
    ]
    .iter()
    .find_map(|k| delta.get(k).and_then(Value::as_f64))
}

/// MiB read/written by the block device and by the worker processes.
pub fn io_mib(io: &Value) -> [Option<f64>; 4] {
    let get = |obj: &str, key: &str, bytes: &str| {
        let o = io.get(obj).filter(|o| o.is_object())?;
        o.get(key)
            .and_then(Value::as_f64)
            .or_else(|| o.get(bytes)?.as_f64().map(|b| b / 1_048_576.0))
    };
    [
        get("block_device_delta", "read_mib_delta", "read_bytes_delta"),
        get("block_device_delta", "write_mib_delta", "write_bytes_delta"),
        get(
            "worker_process_io_delta",
            "read_mib_delta",
            "read_bytes_delta",
        ),
        get(
            "worker_process_io_delta",
            "write_mib_delta",
            "write_bytes_delta",
        ),
    ]
}

fn identity(path: &Path) -> Identity {
    let Some(it) = lines(path) else {
        return Identity::default();
    };
    let mut id = Identity {
        available: true,
        ..Default::default()
    };
    let mut prompts = HashSet::new();
    let mut params = HashSet::new();
    let mut identities = HashSet::new();
    let mut payloads = HashSet::new();
    let mut prefixes = HashSet::new();
    let mut sessions = HashSet::new();
    let mut per_phase: BTreeMap<usize, (String, IdentityPhase)> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    for v in it {
        id.requests += 1;
        let g = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
        if let Some(p) = g("prompt_sha256")
            && !prompts.insert(p)
        {
            id.prompt_repeats += 1;
        }
        if let Some(p) = g("generation_params_sha256") {
            params.insert(p);
        }
        if let Some(p) = g("request_identity_sha256") {
            identities.insert(p);
        }
        if let Some(p) = g("request_payload_sha256") {
            payloads.insert(p);
        }
        if let Some(p) = g("prefix_hash") {
            id.with_prefix += 1;
            if !prefixes.insert(p) {
                id.prefix_repeats += 1;
            }
        }
        if let Some(s) = g("session_id") {
            sessions.insert(s);
        }
        let phase = g("phase").unwrap_or_default();
        let idx = match order.iter().position(|p| *p == phase) {
            Some(i) => i,
            None => {
                order.push(phase.clone());
                order.len() - 1
            }
        };
        let e = per_phase
            .entry(idx)
            .or_insert_with(|| (phase, IdentityPhase::default()));
        e.1.requests += 1;
        if let Some(p) = g("prompt_sha256") {
            e.1.prompts.insert(p);
        }
        if let Some(p) = g("request_identity_sha256") {
            e.1.identities.insert(p);
        }
    }
    id.prompts = prompts.len();
    id.params = params.len();
    id.identities = identities.len();
    id.payloads = payloads.len();
    id.prefix_hashes = prefixes.len();
    id.sessions = sessions.len();
    id.phases = per_phase
        .into_values()
        .map(|(n, p)| (n, p.requests, p.prompts.len(), p.identities.len()))
        .collect();
    id
}

const TIME_COLUMNS: [&str; 9] = [
    "timestamp_utc",
    "timestamp",
    "time_utc",
    "ts",
    "time",
    "unix_time",
    "t_s",
    "elapsed_s",
    "offset_s",
];

/// Columns that identify rather than measure.
fn is_id_column(name: &str) -> bool {
    matches!(
        name,
        "gpu" | "index" | "gpu_index" | "device" | "pid" | "uuid" | "name" | "bus_id"
    )
}

fn is_time_column(name: &str) -> bool {
    TIME_COLUMNS.contains(&name.to_ascii_lowercase().as_str())
}

// Clocks before memory: `clock_mem_mhz` is a frequency and would otherwise
// be drawn on the MiB axis.
fn group_of(col: &str) -> &'static str {
    let c = col.to_ascii_lowercase();
    if c.contains("util") {
        "utilization (%)"
    } else if c.contains("clock") || c.contains("mhz") {
        "clocks (MHz)"
    } else if c.contains("energy") || c.ends_with("_j") {
        "energy (J)"
    } else if c.contains("mem") || c.ends_with("_mib") || c.ends_with("_bytes") {
        "memory"
    } else if c.contains("power") || c.contains("watt") {
        "power (W)"
    } else if c.contains("temp") {
        "temperature (°C)"
    } else {
        "other"
    }
}

fn parse_time(s: &str) -> Option<(f64, bool)> {
    if let Ok(x) = s.trim().parse::<f64>() {
        // Unix ms, Unix seconds, or seconds relative to something.
        return Some(if x > 1e11 {
            (x, true)
        } else if x > 1e8 {
            (x * 1000.0, true)
        } else {
            (x * 1000.0, false)
        });
    }
    parse_utc_ms(s).map(|ms| (ms, true))
}

/// `telemetry/gpu*.csv`: a header, a time column, numeric columns.
fn gpu(dir: &Path, files: &[String], start_epoch_ms: Option<f64>) -> Option<Gpu> {
    let csvs: Vec<&String> = files
        .iter()
        .filter(|f| {
            f.starts_with("telemetry/")
                && f.rsplit('/')
                    .next()
                    .is_some_and(|n| n.starts_with("gpu") && n.ends_with(".csv"))
        })
        .collect();
    if csvs.is_empty() {
        return None;
    }
    let mut groups: BTreeMap<&'static str, Vec<Series>> = BTreeMap::new();
    let mut aligned = start_epoch_ms.is_some();
    let mut used = Vec::new();
    for rel in &csvs {
        let path: PathBuf = dir.join(rel);
        let Ok(f) = File::open(&path) else { continue };
        let mut it = BufReader::new(f).lines().map_while(Result::ok);
        let Some(header) = it.next() else { continue };
        let cols: Vec<String> = header.split(',').map(|c| c.trim().to_owned()).collect();
        let Some(tcol) = cols.iter().position(|c| is_time_column(c)) else {
            continue;
        };
        let stem = rel
            .rsplit('/')
            .next()
            .unwrap_or(rel)
            .trim_end_matches(".csv")
            .to_owned();
        let mut series: Vec<Series> = cols
            .iter()
            .map(|c| Series {
                name: if csvs.len() > 1 {
                    format!("{stem}:{c}")
                } else {
                    c.clone()
                },
                points: Vec::new(),
            })
            .collect();
        let mut first: Option<f64> = None;
        for line in it {
            let cells: Vec<&str> = line.split(',').collect();
            let Some((t, absolute)) = cells.get(tcol).and_then(|c| parse_time(c)) else {
                continue;
            };
            let x = match (absolute, start_epoch_ms) {
                (true, Some(s)) => (t - s) / 1000.0,
                _ => {
                    aligned = aligned && !absolute && start_epoch_ms.is_some();
                    let f0 = *first.get_or_insert(t);
                    if absolute {
                        (t - f0) / 1000.0
                    } else {
                        t / 1000.0
                    }
                }
            };
            for (i, c) in cells.iter().enumerate() {
                // Every time column is an axis, not a series: gpu.csv has
                // both `timestamp_utc` and `elapsed_s`.
                if cols.get(i).is_some_and(|n| is_time_column(n))
                    || is_id_column(
                        &cols
                            .get(i)
                            .map(|s| s.to_ascii_lowercase())
                            .unwrap_or_default(),
                    )
                {
                    continue;
                }
                if let (Some(s), Ok(v)) = (series.get_mut(i), c.trim().parse::<f64>())
                    && v.is_finite()
                {
                    s.points.push((x, v));
                }
            }
        }
        for (i, s) in series.drain(..).enumerate() {
            if i == tcol || s.points.is_empty() {
                continue;
            }
            let g = group_of(cols.get(i).map(String::as_str).unwrap_or(""));
            groups.entry(g).or_default().push(s);
        }
        used.push((*rel).clone());
    }
    if groups.is_empty() {
        return None;
    }
    let order = [
        "utilization (%)",
        "memory",
        "power (W)",
        "temperature (°C)",
        "clocks (MHz)",
        "energy (J)",
        "other",
    ];
    let mut out = Vec::new();
    for g in order {
        if let Some(s) = groups.remove(g) {
            out.push((g.to_owned(), s));
        }
    }
    Some(Gpu {
        files: used,
        groups: out,
        aligned,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_parsing_matches_unix_time() {
        assert_eq!(parse_utc_ms("1970-01-01T00:00:00Z"), Some(0.0));
        assert_eq!(
            parse_utc_ms("2026-11-27T21:41:22.781Z"),
            Some(1_795_815_682_781.0)
        );
        assert_eq!(parse_utc_ms("2026-11-27"), None);
    }

    #[test]
    fn log_hist_quantiles_are_close() {
        let mut h = LogHist::default();
        for i in 1..=1000 {
            h.record(f64::from(i));
        }
        let p50 = h.quantile(0.5).unwrap();
        assert!((p50 - 500.0).abs() / 500.0 < 0.01, "{p50}");
        assert_eq!(h.quantile(1.0), Some(1000.0));
        h.record(0.0);
        assert_eq!(h.quantile(0.0), Some(0.0));
    }

    #[test]
    fn gpu_csv_time_columns_are_axes_and_units_do_not_mix() {
        // The header `sparkhost run` writes for telemetry/gpu.csv.
        let dir = std::env::temp_dir().join(format!("report-gpu-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("telemetry")).unwrap();
        std::fs::write(
            dir.join("telemetry/gpu.csv"),
            "timestamp_utc,elapsed_s,index,name,util_gpu_pct,mem_used_mib,power_w,energy_j,clock_sm_mhz,clock_mem_mhz\n\
             1970-01-01T00:00:01Z,0.0,0,GPU,0,0,80,10,345,3201\n\
             1970-01-01T00:00:02Z,1.0,0,GPU,100,8720,360,300,1980,3201\n",
        )
        .unwrap();
        let g = gpu(&dir, &["telemetry/gpu.csv".to_owned()], Some(0.0)).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        let names = |group: &str| -> Vec<String> {
            g.groups
                .iter()
                .find(|(n, _)| n == group)
                .map(|(_, s)| s.iter().map(|s| s.name.clone()).collect())
                .unwrap_or_default()
        };
        let all: Vec<String> = g
            .groups
            .iter()
            .flat_map(|(_, s)| s.iter().map(|s| s.name.clone()))
            .collect();
        assert!(
            !all.iter()
                .any(|n| n == "elapsed_s" || n == "timestamp_utc" || n == "index"),
            "{all:?}"
        );
        assert_eq!(names("memory"), ["mem_used_mib"]);
        assert_eq!(names("clocks (MHz)"), ["clock_sm_mhz", "clock_mem_mhz"]);
        assert_eq!(names("energy (J)"), ["energy_j"]);
        let util = &g.groups[0].1[0];
        assert_eq!(util.points, [(1.0, 0.0), (2.0, 100.0)]);
    }

    #[test]
    fn itl_counts_tokens_not_chunks() {
        let mut h = LogHist::default();
        itl_into(&mut h, &[5.0, 15.0, 45.0], &[2, 1, 3]);
        assert_eq!(h.count, 5);
        assert_eq!(h.zeros, 1);
    }
}
