//! The run directory: created once, never overwritten; JSON documents are
//! replaced atomically and JSONL rows are flushed line by line, so a crash
//! keeps everything measured up to it.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum RunDirError {
    #[error(
        "run directory {0} already exists; pick another --run-id (results are never overwritten)"
    )]
    Exists(PathBuf),
    #[error("cannot create run directory {path}: {source}")]
    Create { path: PathBuf, source: io::Error },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
}

/// Replaces `path` with `bytes` so a reader (or a crash) sees the old file
/// or the new one, never a torn one: a temporary file in the same directory,
/// synced, then renamed over the target. A rename replaces a symbolic link
/// itself, never the file it points to. The one atomic write of the host.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir)?;
    // The PID keeps two processes writing the same file (a shared compile
    // cache) from renaming each other's half-written temporary.
    let tmp = dir.join(format!(
        ".{}.tmp{}",
        path.file_name().unwrap_or_default().to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[derive(Debug, Clone)]
pub struct RunDir {
    path: PathBuf,
}

impl RunDir {
    /// Creates `<root>/<run_id>`; fails if it exists.
    pub fn create(root: &Path, run_id: &str) -> Result<Self, RunDirError> {
        fs::create_dir_all(root).map_err(|source| RunDirError::Create {
            path: root.to_owned(),
            source,
        })?;
        let path = root.join(run_id);
        match fs::create_dir(&path) {
            Ok(()) => Ok(RunDir { path }),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(RunDirError::Exists(path)),
            Err(source) => Err(RunDirError::Create { path, source }),
        }
    }

    /// Opens an existing run directory (for offline readers).
    pub fn open(path: &Path) -> Self {
        RunDir {
            path: path.to_owned(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes pretty JSON via a temporary file and a rename.
    pub fn write_json<T: Serialize + ?Sized>(
        &self,
        name: &str,
        value: &T,
    ) -> Result<(), RunDirError> {
        let mut bytes = serde_json::to_vec_pretty(value).map_err(|e| RunDirError::Write {
            path: self.path.join(name),
            source: io::Error::other(e),
        })?;
        bytes.push(b'\n');
        self.write_bytes(name, &bytes)
    }

    pub fn write_bytes(&self, name: &str, bytes: &[u8]) -> Result<(), RunDirError> {
        let path = self.path.join(name);
        write_atomic(&path, bytes).map_err(|source| RunDirError::Write { path, source })
    }

    /// Opens a JSONL file for appending rows.
    pub fn jsonl(&self, name: &str) -> Result<JsonlWriter, RunDirError> {
        let path = self.path.join(name);
        let err = |source| RunDirError::Write {
            path: path.clone(),
            source,
        };
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(err)?;
        let durable = file.metadata().map_err(err)?.len();
        Ok(JsonlWriter {
            file,
            pending: Vec::with_capacity(PENDING_FLUSH_BYTES),
            line: Vec::with_capacity(4096),
            durable,
            pending_lines: 0,
            durable_lines: 0,
            failed: false,
            path,
        })
    }

    /// Checks that the results disk has room for a run and sets aside
    /// [`CLOSING_RESERVE_BYTES`] for its closing documents (summary, verdict,
    /// histograms, report), so a disk that fills during the run still gets
    /// them. Written, not just sized: a sparse file reserves nothing.
    pub fn reserve_closing_space(&self) -> Result<(), RunDirError> {
        let path = self.path.join(RESERVE_FILE);
        let err = |source| RunDirError::Write {
            path: path.clone(),
            source,
        };
        let st = rustix::fs::statvfs(&self.path).map_err(|e| err(io::Error::from(e)))?;
        let free = st.f_bavail.saturating_mul(st.f_frsize);
        let need = 2 * CLOSING_RESERVE_BYTES;
        if free < need {
            return Err(err(io::Error::other(format!(
                "the results disk has {} KiB free; a run needs at least {} KiB (rows, and {} KiB kept for the closing documents)",
                free >> 10,
                need >> 10,
                CLOSING_RESERVE_BYTES >> 10
            ))));
        }
        let mut f = File::create(&path).map_err(err)?;
        let zeros = vec![0u8; 1 << 20];
        let mut left = CLOSING_RESERVE_BYTES;
        while left > 0 {
            let n = left.min(zeros.len() as u64) as usize;
            f.write_all(&zeros[..n]).map_err(err)?;
            left -= n as u64;
        }
        f.sync_all().map_err(err)
    }

    /// Gives the reserved space back, for the closing documents.
    pub fn release_closing_space(&self) {
        let _ = fs::remove_file(self.path.join(RESERVE_FILE));
    }
}

/// Space kept for the documents written after the last row.
pub const CLOSING_RESERVE_BYTES: u64 = 8 << 20;
const RESERVE_FILE: &str = ".closing-space-reserve";
/// Rows buffered before a write even when the recorder has not caught up:
/// bounds the memory and the rows a crash can lose.
const PENDING_FLUSH_BYTES: usize = 256 << 10;

/// Appends one JSON object per line. Only whole lines reach the file: a
/// write that fails part-way (a full disk) is cut back to the last whole
/// line, and the writer refuses every later row, so what is on disk is a
/// prefix of what was recorded, never a torn or gapped one.
pub struct JsonlWriter {
    file: File,
    pending: Vec<u8>,
    line: Vec<u8>,
    /// File length after the last successful write: always a line boundary.
    durable: u64,
    pending_lines: u64,
    durable_lines: u64,
    failed: bool,
    path: PathBuf,
}

impl JsonlWriter {
    pub fn append<T: Serialize + ?Sized>(&mut self, row: &T) -> Result<(), RunDirError> {
        self.append_unflushed(row)?;
        self.flush()
    }

    /// Buffers a whole line; [`JsonlWriter::flush`] makes it durable.
    pub fn append_unflushed<T: Serialize + ?Sized>(&mut self, row: &T) -> Result<(), RunDirError> {
        if self.failed {
            return Err(self.err(io::Error::other("an earlier write to this file failed")));
        }
        self.line.clear();
        serde_json::to_writer(&mut self.line, row).map_err(|e| self.err(io::Error::other(e)))?;
        self.line.push(b'\n');
        self.pending.extend_from_slice(&self.line);
        self.pending_lines += 1;
        if self.pending.len() >= PENDING_FLUSH_BYTES {
            self.flush()?;
        }
        Ok(())
    }

    pub fn flush(&mut self) -> Result<(), RunDirError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        if self.failed {
            return Err(self.err(io::Error::other("an earlier write to this file failed")));
        }
        match self.file.write_all(&self.pending) {
            Ok(()) => {
                self.durable += self.pending.len() as u64;
                self.durable_lines += self.pending_lines;
                self.pending.clear();
                self.pending_lines = 0;
                Ok(())
            }
            Err(e) => {
                self.failed = true;
                self.pending.clear();
                self.pending_lines = 0;
                // Cut the torn tail off: the file ends at a whole line.
                let _ = self.file.set_len(self.durable);
                Err(self.err(e))
            }
        }
    }

    /// Lines this writer has put on disk whole.
    pub fn durable_lines(&self) -> u64 {
        self.durable_lines
    }

    fn err(&self, source: io::Error) -> RunDirError {
        RunDirError::Write {
            path: self.path.clone(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_write_keeps_whole_lines_and_refuses_more() {
        // /dev/full answers every write with ENOSPC.
        let Ok(file) = OpenOptions::new().append(true).open("/dev/full") else {
            return;
        };
        let mut w = JsonlWriter {
            file,
            pending: Vec::new(),
            line: Vec::new(),
            durable: 0,
            pending_lines: 0,
            durable_lines: 0,
            failed: false,
            path: "/dev/full".into(),
        };
        w.append_unflushed(&serde_json::json!({"a": 1})).unwrap();
        let e = w.flush().unwrap_err().to_string();
        assert!(e.contains("/dev/full"), "{e}");
        assert_eq!(w.durable_lines(), 0);
        assert!(
            w.append(&serde_json::json!({"a": 2})).is_err(),
            "no row after a failure"
        );
    }

    #[test]
    fn never_overwrites_and_writes_whole_lines() {
        let root = tempfile::tempdir().unwrap();
        let rd = RunDir::create(root.path(), "r1").unwrap();
        assert!(matches!(
            RunDir::create(root.path(), "r1"),
            Err(RunDirError::Exists(_))
        ));
        rd.write_json("a.json", &serde_json::json!({"x": 1}))
            .unwrap();
        rd.write_json("a.json", &serde_json::json!({"x": 2}))
            .unwrap();
        let mut w = rd.jsonl("rows.jsonl").unwrap();
        w.append(&serde_json::json!({"n": 1})).unwrap();
        // Readable before the writer is dropped: rows are flushed as written.
        let text = fs::read_to_string(rd.path().join("rows.jsonl")).unwrap();
        assert_eq!(text, "{\"n\":1}\n");
        let a: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(rd.path().join("a.json")).unwrap()).unwrap();
        assert_eq!(a["x"], 2);
        assert!(!rd.path().join(".a.json.tmp").exists());
    }
}
