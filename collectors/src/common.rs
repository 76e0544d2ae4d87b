//! Shared plumbing: soft failure, timestamps, JSON and CSV output.

use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// What one source produced: a value, or the reason there is none.
///
/// Collectors never abort a run; a missing device, a permission error or an
/// absent driver becomes `available: false` with a reason a person can act on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reading<T> {
    pub available: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<T>,
}

impl<T> Reading<T> {
    pub fn ok(data: T) -> Self {
        Reading {
            available: true,
            reason: None,
            data: Some(data),
        }
    }

    pub fn unavailable(reason: impl Into<String>) -> Self {
        Reading {
            available: false,
            reason: Some(reason.into()),
            data: None,
        }
    }

    pub fn from_result<E: std::fmt::Display>(r: Result<T, E>) -> Self {
        match r {
            Ok(v) => Reading::ok(v),
            Err(e) => Reading::unavailable(e.to_string()),
        }
    }

    pub fn get(&self) -> Option<&T> {
        self.data.as_ref()
    }

    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Reading<U> {
        Reading {
            available: self.available,
            reason: self.reason,
            data: self.data.map(f),
        }
    }
}

impl<T> Default for Reading<T> {
    fn default() -> Self {
        Reading::unavailable("not collected")
    }
}

/// Turns an I/O error on `path` into a reason that names the likely cause.
pub fn describe_io_error(path: &Path, e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::NotFound => format!("{}: missing", path.display()),
        io::ErrorKind::PermissionDenied => {
            format!(
                "{}: permission denied (run as root or grant access)",
                path.display()
            )
        }
        _ => format!("{}: {e}", path.display()),
    }
}

pub fn read_text(path: &Path) -> Result<String, String> {
    fs::read_to_string(path).map_err(|e| describe_io_error(path, &e))
}

/// UTC wall-clock time with milliseconds, the seed's `timestamp_utc` format.
pub fn utc_now() -> String {
    chrono::Utc::now()
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string()
}

/// Writes pretty JSON atomically enough for readers that poll: temp file, then rename.
pub fn write_json<T: Serialize + ?Sized>(path: &Path, value: &T) -> io::Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("json.tmp");
    {
        let mut w = BufWriter::new(File::create(&tmp)?);
        serde_json::to_writer_pretty(&mut w, value).map_err(io::Error::other)?;
        w.write_all(b"\n")?;
        w.flush()?;
    }
    fs::rename(&tmp, path)
}

/// Appends one JSON value as a line.
pub fn append_jsonl<T: Serialize + ?Sized>(path: &Path, value: &T) -> io::Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    let mut f = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    let mut line = serde_json::to_vec(value).map_err(io::Error::other)?;
    line.push(b'\n');
    f.write_all(&line)
}

/// A CSV file with a fixed header, flushed per row so a killed run keeps its timeline.
pub struct CsvWriter {
    path: PathBuf,
    out: BufWriter<File>,
    columns: usize,
}

impl CsvWriter {
    pub fn create(path: &Path, header: &[&str]) -> io::Result<Self> {
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir)?;
        }
        let mut out = BufWriter::new(File::create(path)?);
        writeln!(out, "{}", header.join(","))?;
        out.flush()?;
        Ok(CsvWriter {
            path: path.to_path_buf(),
            out,
            columns: header.len(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn row(&mut self, cells: &[Cell]) -> io::Result<()> {
        debug_assert_eq!(cells.len(), self.columns, "{}", self.path.display());
        let mut line = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i > 0 {
                line.push(',');
            }
            c.render(&mut line);
        }
        line.push('\n');
        self.out.write_all(line.as_bytes())?;
        self.out.flush()
    }
}

/// One CSV cell; `None` numbers render empty so that "not measured" differs from zero.
pub enum Cell {
    Str(String),
    F(Option<f64>),
    U(Option<u64>),
    I(Option<i64>),
}

impl Cell {
    fn render(&self, out: &mut String) {
        match self {
            Cell::Str(s) => {
                if s.contains([',', '"', '\n', '\r']) {
                    out.push('"');
                    out.push_str(&s.replace('"', "\"\""));
                    out.push('"');
                } else {
                    out.push_str(s);
                }
            }
            Cell::F(Some(v)) if v.is_finite() => {
                let _ = write!(out, "{}", round6(*v));
            }
            Cell::U(Some(v)) => {
                let _ = write!(out, "{v}");
            }
            Cell::I(Some(v)) => {
                let _ = write!(out, "{v}");
            }
            _ => {}
        }
    }
}

impl From<&str> for Cell {
    fn from(s: &str) -> Self {
        Cell::Str(s.to_string())
    }
}
impl From<String> for Cell {
    fn from(s: String) -> Self {
        Cell::Str(s)
    }
}
impl From<f64> for Cell {
    fn from(v: f64) -> Self {
        Cell::F(Some(v))
    }
}
impl From<Option<f64>> for Cell {
    fn from(v: Option<f64>) -> Self {
        Cell::F(v)
    }
}
impl From<u64> for Cell {
    fn from(v: u64) -> Self {
        Cell::U(Some(v))
    }
}
impl From<Option<u64>> for Cell {
    fn from(v: Option<u64>) -> Self {
        Cell::U(v)
    }
}
impl From<Option<u32>> for Cell {
    fn from(v: Option<u32>) -> Self {
        Cell::U(v.map(u64::from))
    }
}
impl From<i64> for Cell {
    fn from(v: i64) -> Self {
        Cell::I(Some(v))
    }
}

/// Six decimals keep CSVs readable without losing anything a rate needs.
pub fn round6(v: f64) -> f64 {
    (v * 1e6).round() / 1e6
}

pub fn round3(v: f64) -> f64 {
    (v * 1e3).round() / 1e3
}

pub const MIB: f64 = 1024.0 * 1024.0;

pub fn mib(bytes: u64) -> f64 {
    round6(bytes as f64 / MIB)
}

/// MiB to three decimals for timelines, where a kilobyte is below notice.
pub fn mib_cell(bytes: Option<u64>) -> Cell {
    Cell::F(bytes.map(|v| round3(v as f64 / MIB)))
}

/// Counter delta that treats a decrease as a restart from zero (the value after is
/// what accumulated since), rather than clamping to zero and losing it.
pub fn counter_delta(before: u64, after: u64) -> (u64, bool) {
    if after >= before {
        (after - before, false)
    } else {
        (after, true)
    }
}

/// Waits for `child` until `timeout`; past it the child is killed and
/// `Ok(None)` returned. On a wait error the child is killed too.
pub fn wait_with_deadline(
    child: &mut std::process::Child,
    timeout: std::time::Duration,
) -> std::io::Result<Option<std::process::ExitStatus>> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(s)) => return Ok(Some(s)),
            Ok(None) if std::time::Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Ok(None);
            }
            Ok(None) => std::thread::sleep(std::time::Duration::from_millis(20)),
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(e);
            }
        }
    }
}

/// Makes a name (a phase, a container) safe for a file name. Ordinary names
/// (`[A-Za-z0-9._-]`) are kept as they are; any other name is sanitized and
/// gets a digest of the original, so `a/b`, `a b` and `a_b` (which sanitize
/// alike) still name three different files.
pub fn file_safe(name: &str) -> String {
    let ordinary = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if !name.is_empty() && name.chars().all(ordinary) && name != "." && name != ".." {
        return name.to_owned();
    }
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(name.as_bytes());
    // At most 64 kept characters: a guest controls the name, the file system caps its length.
    let kept: String = name
        .chars()
        .take(64)
        .map(|c| if ordinary(c) { c } else { '_' })
        .collect();
    format!("{kept}-{}", hex_prefix(&digest[..6]))
}

fn hex_prefix(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reading_serializes_reason_only_when_unavailable() {
        let ok = serde_json::to_value(Reading::ok(3)).unwrap();
        assert_eq!(ok, serde_json::json!({"available": true, "data": 3}));
        let bad = serde_json::to_value(Reading::<u32>::unavailable("no NVML")).unwrap();
        assert_eq!(
            bad,
            serde_json::json!({"available": false, "reason": "no NVML"})
        );
    }

    #[test]
    fn counter_delta_detects_reset() {
        assert_eq!(counter_delta(10, 15), (5, false));
        assert_eq!(counter_delta(10, 4), (4, true));
    }

    #[test]
    fn csv_quotes_and_blanks() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.csv");
        let mut w = CsvWriter::create(&p, &["a", "b", "c"]).unwrap();
        w.row(&["x,y".into(), Cell::F(None), 1.5.into()]).unwrap();
        drop(w);
        assert_eq!(fs::read_to_string(&p).unwrap(), "a,b,c\n\"x,y\",,1.5\n");
    }

    #[test]
    fn file_safe_keeps_ordinary_names() {
        assert_eq!(file_safe("replay_A"), "replay_A");
        let odd = file_safe("a/b c");
        assert!(
            odd.starts_with("a_b_c-") && odd.len() == "a_b_c-".len() + 12,
            "{odd}"
        );
    }

    #[test]
    fn file_safe_never_maps_two_names_to_one_file() {
        let names = ["a/b", "a_b", "a b", "a\\b", "..", ".", "", "a\u{1b}[31mb"];
        let files: std::collections::BTreeSet<String> =
            names.iter().map(|n| file_safe(n)).collect();
        assert_eq!(files.len(), names.len(), "{files:?}");
        for f in &files {
            assert!(
                !f.contains('/') && f != "." && f != ".." && !f.is_empty(),
                "{f:?}"
            );
            assert!(
                f.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)),
                "{f:?}"
            );
        }
        assert!(file_safe(&"x/".repeat(1000)).len() <= 64 + 13);
    }
}
