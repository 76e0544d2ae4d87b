//! O_DIRECT reads and writes of a known size, for tests that must see bytes
//! reach a device rather than the page cache.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

const ALIGN: usize = 4096;

/// A zero-filled buffer of `len` bytes whose start is 4 KiB-aligned, as O_DIRECT needs.
fn aligned(len: usize, fill: u8) -> (Vec<u8>, usize) {
    let mut v = vec![fill; len + ALIGN];
    let off = v.as_ptr().align_offset(ALIGN);
    v.truncate(off + len);
    (v, off)
}

fn open(path: &Path, write: bool, create: bool) -> io::Result<File> {
    OpenOptions::new()
        .read(!write)
        .write(write)
        .create(create)
        .custom_flags(libc::O_DIRECT)
        .open(path)
}

/// Writes `total` bytes at `offset` in `chunk`-byte O_DIRECT writes (both
/// multiples of 4 KiB), then syncs. Returns the bytes written.
pub fn write(path: &Path, offset: u64, total: u64, chunk: usize, create: bool) -> io::Result<u64> {
    if chunk == 0
        || !chunk.is_multiple_of(ALIGN)
        || !total.is_multiple_of(ALIGN as u64)
        || !offset.is_multiple_of(ALIGN as u64)
    {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "sizes must be multiples of 4096",
        ));
    }
    let f = open(path, true, create)?;
    let (buf, off) = aligned(chunk, 0xA5);
    let mut done = 0u64;
    while done < total {
        let n = chunk.min((total - done) as usize);
        f.write_all_at(&buf[off..off + n], offset + done)?;
        done += n as u64;
    }
    f.sync_all()?;
    Ok(done)
}

/// Reads `total` bytes at `offset` with O_DIRECT. Returns the bytes read.
pub fn read(path: &Path, offset: u64, total: u64, chunk: usize) -> io::Result<u64> {
    if chunk == 0 || !chunk.is_multiple_of(ALIGN) || !offset.is_multiple_of(ALIGN as u64) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "sizes must be multiples of 4096",
        ));
    }
    let f = open(path, false, false)?;
    let (mut buf, off) = aligned(chunk, 0);
    let mut done = 0u64;
    while done < total {
        let n = chunk.min((total - done) as usize);
        let got = f.read_at(&mut buf[off..off + n], offset + done)?;
        if got == 0 {
            break;
        }
        done += got as u64;
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    #[test]
    fn buffer_is_aligned() {
        let (v, off) = super::aligned(8192, 1);
        assert_eq!(v[off..].len(), 8192);
        assert_eq!((v[off..].as_ptr() as usize) % super::ALIGN, 0);
    }
}
