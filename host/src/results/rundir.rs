//! The run directory: created once, never overwritten; JSON documents are
//! replaced atomically and JSONL rows are flushed line by line, so a crash
//! keeps everything measured up to it.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
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
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|source| RunDirError::Write {
                path: path.clone(),
                source,
            })?;
        Ok(JsonlWriter {
            out: BufWriter::new(file),
            line: Vec::with_capacity(4096),
            path,
        })
    }
}

/// Appends one JSON object per line; each line is written and flushed whole.
pub struct JsonlWriter {
    out: BufWriter<File>,
    line: Vec<u8>,
    path: PathBuf,
}

impl JsonlWriter {
    pub fn append<T: Serialize + ?Sized>(&mut self, row: &T) -> Result<(), RunDirError> {
        self.append_unflushed(row)?;
        self.flush()
    }

    /// Buffers a whole line; [`JsonlWriter::flush`] makes it durable. A line is
    /// never split across flushes, because the buffer only holds whole lines.
    pub fn append_unflushed<T: Serialize + ?Sized>(&mut self, row: &T) -> Result<(), RunDirError> {
        self.line.clear();
        serde_json::to_writer(&mut self.line, row).map_err(|e| self.err(io::Error::other(e)))?;
        self.line.push(b'\n');
        self.out.write_all(&self.line).map_err(|e| self.err(e))
    }

    pub fn flush(&mut self) -> Result<(), RunDirError> {
        self.out.flush().map_err(|e| self.err(e))
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
