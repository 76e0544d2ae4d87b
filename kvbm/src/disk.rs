//! The disk tier's bytes: one cache file of fixed-size slots, written and
//! read with O_DIRECT so block-device counters, cgroup `io.stat` and
//! `/proc/<pid>/io` all see them (the page cache would hide reads).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::profile::DISK_ALIGN;

/// Where the disk tier's blocks go. The engine calls it when a block lands
/// on disk and when disk-hit blocks are onboarded.
pub trait BlockStore: Send {
    fn write(&mut self, slot: u64, hash: u64) -> io::Result<()>;
    /// Reads `(slot, hash)` blocks back; returns how long the reads took.
    fn read(&mut self, blocks: &[(u64, u64)]) -> io::Result<Duration>;
}

/// No I/O at all: B0/B1, pure tests, and the `metrics_without_io` lie.
#[derive(Debug, Default)]
pub struct NullStore;

impl BlockStore for NullStore {
    fn write(&mut self, _: u64, _: u64) -> io::Result<()> {
        Ok(())
    }
    fn read(&mut self, _: &[(u64, u64)]) -> io::Result<Duration> {
        Ok(Duration::ZERO)
    }
}

/// How the cache file was opened, recorded with results.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum IoMode {
    Direct,
    /// The filesystem refused O_DIRECT (e.g. tmpfs) and the config allowed
    /// buffered I/O: the page cache may absorb reads.
    Buffered,
}

#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error(
        "the filesystem of {dir} refuses O_DIRECT ({source}); put the cache dir on a real disk, \
         or allow buffered I/O (allow_buffered_disk) knowing the page cache may hide the reads"
    )]
    NoDirect { dir: String, source: io::Error },
    #[error("disk cache {path}: {source}")]
    Io { path: String, source: io::Error },
}

/// Bytes moved by this store, so a run can check the OS saw at least these.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct DiskStats {
    pub bytes_written: u64,
    pub bytes_read: u64,
    pub blocks_written: u64,
    pub blocks_read: u64,
}

/// The cache file. It is removed when the store is dropped.
pub struct DiskStore {
    file: File,
    path: PathBuf,
    slot: usize,
    mode: IoMode,
    buf: Vec<u8>,
    off: usize,
    stats: std::sync::Arc<std::sync::Mutex<DiskStats>>,
}

/// A buffer of `len` bytes whose start is 4 KiB-aligned (O_DIRECT needs it),
/// without unsafe code: over-allocate and start at the aligned offset.
fn aligned(len: usize) -> (Vec<u8>, usize) {
    let a = DISK_ALIGN as usize;
    let mut v = vec![0u8; len + a];
    let off = v.as_ptr().align_offset(a);
    v.truncate(off + len);
    (v, off)
}

impl DiskStore {
    /// Creates `sparkhost-kvbm-disk-cache-<pid>-<n>.bin` in `dir`, sized
    /// `slots × slot_bytes` (sparse: only written slots take space).
    pub fn create(
        dir: &Path,
        slots: u64,
        slot_bytes: u64,
        allow_buffered: bool,
    ) -> Result<Self, DiskError> {
        static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = dir.join(format!(
            "sparkhost-kvbm-disk-cache-{}-{n}.bin",
            std::process::id()
        ));
        let io_err = |source| DiskError::Io {
            path: path.display().to_string(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io_err)?;
        let open = |direct: bool| {
            let mut o = OpenOptions::new();
            o.read(true).write(true).create(true).truncate(true);
            if direct {
                o.custom_flags(libc::O_DIRECT);
            }
            o.open(&path)
        };
        let slot = slot_bytes as usize;
        let (mut buf, off) = aligned(slot);
        let (file, mode) = match open(true) {
            Ok(f) => {
                // Some filesystems accept the flag and fail the first I/O.
                match f.write_all_at(&buf[off..off + slot], 0) {
                    Ok(()) => (f, IoMode::Direct),
                    Err(e) if allow_buffered => {
                        tracing::warn!("O_DIRECT write failed ({e}); using buffered I/O");
                        drop(f);
                        (open(false).map_err(io_err)?, IoMode::Buffered)
                    }
                    Err(source) => {
                        let _ = std::fs::remove_file(&path);
                        return Err(DiskError::NoDirect {
                            dir: dir.display().to_string(),
                            source,
                        });
                    }
                }
            }
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) && allow_buffered => {
                tracing::warn!("O_DIRECT refused ({e}); using buffered I/O");
                (open(false).map_err(io_err)?, IoMode::Buffered)
            }
            Err(source) if source.raw_os_error() == Some(libc::EINVAL) => {
                let _ = std::fs::remove_file(&path);
                return Err(DiskError::NoDirect {
                    dir: dir.display().to_string(),
                    source,
                });
            }
            Err(source) => return Err(io_err(source)),
        };
        // The probe write above is not a block: start from an empty file.
        file.set_len(0).map_err(io_err)?;
        file.set_len(slots * slot_bytes).map_err(io_err)?;
        buf[off..].fill(0xA5);
        Ok(DiskStore {
            file,
            path,
            slot,
            mode,
            buf,
            off,
            stats: Default::default(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
    pub fn mode(&self) -> IoMode {
        self.mode
    }
    /// A live view of the bytes moved, readable while the engine owns the store.
    pub fn stats_handle(&self) -> std::sync::Arc<std::sync::Mutex<DiskStats>> {
        self.stats.clone()
    }
}

impl Drop for DiskStore {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

impl BlockStore for DiskStore {
    fn write(&mut self, slot: u64, hash: u64) -> io::Result<()> {
        // The block's hash heads the slot, so a read can check it got the
        // block it asked for.
        let b = &mut self.buf[self.off..self.off + self.slot];
        b[..8].copy_from_slice(&hash.to_le_bytes());
        self.file.write_all_at(b, slot * self.slot as u64)?;
        if let Ok(mut s) = self.stats.lock() {
            s.bytes_written += self.slot as u64;
            s.blocks_written += 1;
        }
        Ok(())
    }

    fn read(&mut self, blocks: &[(u64, u64)]) -> io::Result<Duration> {
        let t = Instant::now();
        for &(slot, hash) in blocks {
            let b = &mut self.buf[self.off..self.off + self.slot];
            self.file.read_exact_at(b, slot * self.slot as u64)?;
            if b[..8] != hash.to_le_bytes() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("disk slot {slot} does not hold block {hash:016x}"),
                ));
            }
        }
        let took = t.elapsed();
        if let Ok(mut s) = self.stats.lock() {
            s.bytes_read += (blocks.len() * self.slot) as u64;
            s.blocks_read += blocks.len() as u64;
        }
        Ok(took)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffer_is_aligned() {
        let (v, off) = aligned(8192);
        assert_eq!(v[off..].len(), 8192);
        assert_eq!((v[off..].as_ptr() as usize) % DISK_ALIGN as usize, 0);
    }

    #[test]
    fn blocks_round_trip_and_the_file_is_removed() {
        let dir = tempfile::Builder::new()
            .prefix("kvbm-disk-")
            .tempdir_in(concat!(env!("CARGO_MANIFEST_DIR"), "/../target"))
            .unwrap();
        let mut s = DiskStore::create(dir.path(), 4, 8192, true).unwrap();
        s.write(2, 0xabc).unwrap();
        s.read(&[(2, 0xabc)]).unwrap();
        assert!(s.read(&[(2, 0xdef)]).is_err());
        let st = *s.stats_handle().lock().unwrap();
        assert_eq!(st.bytes_written, 8192);
        assert_eq!(st.bytes_read, 8192);
        let p = s.path().to_owned();
        assert!(p.exists());
        drop(s);
        assert!(!p.exists());
    }
}
