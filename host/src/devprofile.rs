//! The KV disk's physical ceiling: `sparkhost calibrate-disk` measures a
//! directory's disk with O_DIRECT (sequential and block-sized random reads
//! and writes, at a queue depth), writes a [`DeviceProfileDoc`], and a run
//! given it (`--device-profile`) reports the disk tier's achieved read
//! bandwidth as a fraction of it ([`disk_ceiling`]).
//!
//! Queue depth is the number of I/O threads, each with one synchronous
//! `pread`/`pwrite` in flight: no io_uring or libaio needed, and the depth
//! the device sees is the same. Every buffer is 4 KiB-aligned and every
//! offset a multiple of the I/O size, which O_DIRECT requires; written
//! bytes are random so a compressing controller cannot flatter the figure.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::limits;
use crate::results::documents::{
    DeviceProfileDoc, DiskCeilingDoc, DiskPhaseBandwidth, DiskTestDoc, HostInfo,
};

/// O_DIRECT's alignment for buffers, offsets and sizes on every Linux
/// filesystem and device sparkhost targets.
const ALIGN: u64 = 4096;
/// All buffers of one test together: queue depth × I/O size.
const MAX_BUFFER_BYTES: u64 = 1 << 30;

#[derive(Debug, thiserror::Error)]
pub enum DeviceProfileError {
    #[error("{field} {value} is out of range: allowed {min}..={max}")]
    Range {
        field: &'static str,
        value: u64,
        min: u64,
        max: u64,
    },
    #[error("{field} {value} is not a multiple of 4096 (O_DIRECT alignment)")]
    Unaligned { field: &'static str, value: u64 },
    #[error(
        "--queue-depth {qd} × {field} {bytes} needs {need} bytes of buffers; allowed at most {MAX_BUFFER_BYTES}"
    )]
    Buffers {
        field: &'static str,
        qd: u32,
        bytes: u64,
        need: u64,
    },
    #[error("--dir {0} is not a directory")]
    NotDir(String),
    #[error(
        "the filesystem of {dir} refuses O_DIRECT ({source}); calibrate on the disk itself (not tmpfs or overlay)"
    )]
    NoDirect { dir: String, source: io::Error },
    #[error("{path}: {source}")]
    Io { path: String, source: io::Error },
    #[error("{path}: short {op} at offset {offset}: {done} of {len} bytes")]
    Short {
        path: String,
        op: &'static str,
        offset: u64,
        done: usize,
        len: usize,
    },
    #[error("device profile {path}: {message}")]
    Invalid { path: String, message: String },
}

/// What to measure.
#[derive(Debug, Clone)]
pub struct CalibrateSpec {
    pub dir: PathBuf,
    pub file_bytes: u64,
    /// Random read and write I/O size (set it to the engine's KV block bytes).
    pub block_bytes: u64,
    pub seq_block_bytes: u64,
    pub queue_depth: u32,
    pub max_test_time: Duration,
    pub seed: u64,
}

impl CalibrateSpec {
    /// Every bound, with the flag that sets it.
    pub fn validate(&self) -> Result<(), DeviceProfileError> {
        let range = |field, value: u64, min: u64, max: u64| {
            if (min..=max).contains(&value) {
                Ok(())
            } else {
                Err(DeviceProfileError::Range {
                    field,
                    value,
                    min,
                    max,
                })
            }
        };
        range(
            "--size",
            self.file_bytes,
            limits::CALIBRATE_MIN_FILE_BYTES,
            limits::CALIBRATE_MAX_FILE_BYTES,
        )?;
        for (field, v) in [
            ("--block-size", self.block_bytes),
            ("--seq-block-size", self.seq_block_bytes),
        ] {
            range(
                field,
                v,
                limits::CALIBRATE_MIN_BLOCK_BYTES,
                limits::CALIBRATE_MAX_BLOCK_BYTES.min(self.file_bytes),
            )?;
            if v % ALIGN != 0 {
                return Err(DeviceProfileError::Unaligned { field, value: v });
            }
            let need = v.saturating_mul(u64::from(self.queue_depth));
            if need > MAX_BUFFER_BYTES {
                return Err(DeviceProfileError::Buffers {
                    field,
                    qd: self.queue_depth,
                    bytes: v,
                    need,
                });
            }
        }
        range(
            "--queue-depth",
            u64::from(self.queue_depth),
            1,
            u64::from(limits::CALIBRATE_MAX_QUEUE_DEPTH),
        )?;
        range(
            "--max-test-time (s)",
            self.max_test_time.as_secs(),
            1,
            limits::CALIBRATE_MAX_TEST_SECS,
        )?;
        if !self.dir.is_dir() {
            return Err(DeviceProfileError::NotDir(self.dir.display().to_string()));
        }
        Ok(())
    }
}

/// The test file; removed however the calibration ends.
struct TestFile {
    path: PathBuf,
    file: File,
}

impl Drop for TestFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// A zeroed buffer whose slice starts on a 4 KiB boundary.
struct Aligned {
    raw: Vec<u8>,
    off: usize,
    len: usize,
}

impl Aligned {
    fn new(len: usize) -> Self {
        let raw = vec![0u8; len + ALIGN as usize];
        let off = raw.as_ptr().align_offset(ALIGN as usize);
        Aligned { raw, off, len }
    }

    fn buf(&mut self) -> &mut [u8] {
        &mut self.raw[self.off..self.off + self.len]
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Op {
    Read,
    Write,
}

#[derive(Clone, Copy, PartialEq)]
enum Pattern {
    Sequential,
    Random,
}

/// Measures `spec.dir`'s disk; the test file is gone when this returns.
pub fn calibrate(spec: &CalibrateSpec) -> Result<DeviceProfileDoc, DeviceProfileError> {
    spec.validate()?;
    // Whole I/Os of both sizes only: O_DIRECT cannot do a partial block.
    let unit = spec.block_bytes.max(spec.seq_block_bytes);
    let file_bytes = spec.file_bytes / unit * unit;
    let path = spec
        .dir
        .join(format!(".sparkhost-calibrate-{}.bin", std::process::id()));
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_DIRECT)
        .open(&path)
        .map_err(|source| {
            if source.raw_os_error() == Some(libc::EINVAL) {
                DeviceProfileError::NoDirect {
                    dir: spec.dir.display().to_string(),
                    source,
                }
            } else {
                DeviceProfileError::Io {
                    path: path.display().to_string(),
                    source,
                }
            }
        })?;
    let tf = TestFile { path, file };
    // Sequential write first: it also fills the file every later test reads.
    let plan = [
        (
            "seq_write",
            Op::Write,
            Pattern::Sequential,
            spec.seq_block_bytes,
        ),
        (
            "seq_read",
            Op::Read,
            Pattern::Sequential,
            spec.seq_block_bytes,
        ),
        ("rand_read", Op::Read, Pattern::Random, spec.block_bytes),
        ("rand_write", Op::Write, Pattern::Random, spec.block_bytes),
    ];
    let mut tests = Vec::with_capacity(plan.len());
    for (i, (name, op, pattern, bs)) in plan.into_iter().enumerate() {
        let t = run_test(&tf, spec, file_bytes, name, op, pattern, bs, i as u64)?;
        // A sequential write stopped early leaves the rest of the file
        // unwritten (a hole): later reads of it would never reach the disk.
        let short_fill = name == "seq_write" && t.stopped_early;
        let covered = t.bytes;
        tests.push(t);
        if short_fill {
            return Err(DeviceProfileError::Invalid {
                path: tf.path.display().to_string(),
                message: format!(
                    "the sequential write covered {covered} of {file_bytes} bytes within --max-test-time; \
                     lower --size or raise --max-test-time"
                ),
            });
        }
    }
    let (block_device, disk, block_device_error) =
        match sparkhost_collectors::diskstats::device_for_path(&spec.dir, Path::new("/sys")) {
            Ok(d) => (Some(d.name), Some(d.disk), None),
            Err(e) => (None, None, Some(e)),
        };
    Ok(DeviceProfileDoc {
        kind: DeviceProfileDoc::KIND.into(),
        version: DeviceProfileDoc::VERSION,
        created_utc: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        sparkhost_version: env!("CARGO_PKG_VERSION").into(),
        sparkhost_git_sha: GIT_SHA.into(),
        host: HostInfo::current(),
        dir: spec.dir.display().to_string(),
        block_device,
        disk,
        block_device_error,
        o_direct: true,
        file_bytes,
        seed: spec.seed,
        tests,
    })
}

/// The commit this binary was built from (`build.rs`), or `unknown`.
pub const GIT_SHA: &str = env!("SPARKHOST_GIT_SHA");

#[allow(clippy::too_many_arguments)]
fn run_test(
    tf: &TestFile,
    spec: &CalibrateSpec,
    file_bytes: u64,
    name: &str,
    op: Op,
    pattern: Pattern,
    bs: u64,
    salt: u64,
) -> Result<DiskTestDoc, DeviceProfileError> {
    let blocks = file_bytes / bs;
    let issued = AtomicU64::new(0);
    let done = AtomicU64::new(0);
    let timed_out = AtomicBool::new(false);
    let start = Instant::now();
    let deadline = start + spec.max_test_time;
    let path = tf.path.display().to_string();
    let result: Result<(), DeviceProfileError> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..spec.queue_depth)
            .map(|t| {
                let (issued, done, timed_out, path) = (&issued, &done, &timed_out, &path);
                s.spawn(move || -> Result<(), DeviceProfileError> {
                    let mut rng = ChaCha8Rng::seed_from_u64(
                        spec.seed ^ (salt << 32) ^ u64::from(t).wrapping_mul(0x9E37_79B9),
                    );
                    let mut buf = Aligned::new(bs as usize);
                    if op == Op::Write {
                        rng.fill_bytes(buf.buf());
                    }
                    loop {
                        let i = issued.fetch_add(1, Ordering::Relaxed);
                        if i >= blocks {
                            return Ok(());
                        }
                        if Instant::now() >= deadline {
                            timed_out.store(true, Ordering::Relaxed);
                            return Ok(());
                        }
                        let block = match pattern {
                            Pattern::Sequential => i,
                            Pattern::Random => rng.random_range(0..blocks),
                        };
                        let offset = block * bs;
                        let b = buf.buf();
                        let n = match op {
                            Op::Read => tf.file.read_at(b, offset),
                            Op::Write => tf.file.write_at(b, offset),
                        }
                        .map_err(|source| DeviceProfileError::Io {
                            path: path.clone(),
                            source,
                        })?;
                        if n != b.len() {
                            return Err(DeviceProfileError::Short {
                                path: path.clone(),
                                op: if op == Op::Read { "read" } else { "write" },
                                offset,
                                done: n,
                                len: b.len(),
                            });
                        }
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        for w in workers {
            match w.join() {
                Ok(r) => r?,
                Err(_) => {
                    return Err(DeviceProfileError::Io {
                        path: path.clone(),
                        source: io::Error::other("an I/O thread panicked"),
                    });
                }
            }
        }
        Ok(())
    });
    result?;
    if op == Op::Write {
        // O_DIRECT bypasses the page cache, not the drive's write cache.
        tf.file
            .sync_data()
            .map_err(|source| DeviceProfileError::Io {
                path: path.clone(),
                source,
            })?;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let ios = done.load(Ordering::Relaxed);
    let bytes = ios * bs;
    Ok(DiskTestDoc {
        name: name.into(),
        block_size_bytes: bs,
        queue_depth: spec.queue_depth,
        bytes,
        ios,
        elapsed_s: elapsed,
        gbps: if elapsed > 0.0 {
            bytes as f64 / elapsed / 1e9
        } else {
            0.0
        },
        iops: if elapsed > 0.0 {
            ios as f64 / elapsed
        } else {
            0.0
        },
        stopped_early: timed_out.load(Ordering::Relaxed) && ios < blocks,
    })
}

/// A device profile read for a run, with the digest of its bytes.
#[derive(Debug, Clone)]
pub struct DeviceProfile {
    pub doc: DeviceProfileDoc,
    pub sha256: String,
    pub path: PathBuf,
}

impl DeviceProfile {
    /// Reads and checks a profile: its kind and version, and that both read
    /// tests exist with finite, positive bandwidths.
    pub fn load(path: &Path) -> Result<Self, DeviceProfileError> {
        let p = path.display().to_string();
        let invalid = |message: String| DeviceProfileError::Invalid {
            path: p.clone(),
            message,
        };
        let meta = std::fs::metadata(path).map_err(|source| DeviceProfileError::Io {
            path: p.clone(),
            source,
        })?;
        if meta.len() > limits::DEVICE_PROFILE_MAX_BYTES {
            return Err(invalid(format!(
                "{} bytes; a device profile is at most {} bytes",
                meta.len(),
                limits::DEVICE_PROFILE_MAX_BYTES
            )));
        }
        let bytes = std::fs::read(path).map_err(|source| DeviceProfileError::Io {
            path: p.clone(),
            source,
        })?;
        let doc: DeviceProfileDoc = serde_json::from_slice(&bytes)
            .map_err(|e| invalid(format!("not a device profile: {e}")))?;
        if doc.kind != DeviceProfileDoc::KIND || doc.version != DeviceProfileDoc::VERSION {
            return Err(invalid(format!(
                "kind {:?} version {}; expected {:?} version {} (written by `sparkhost calibrate-disk`)",
                doc.kind,
                doc.version,
                DeviceProfileDoc::KIND,
                DeviceProfileDoc::VERSION
            )));
        }
        for name in ["seq_read", "rand_read"] {
            let t = doc
                .test(name)
                .ok_or_else(|| invalid(format!("test {name:?} is missing")))?;
            // 1000 GB/s is far past any storage a KV tier sits on.
            if !(t.gbps.is_finite() && t.gbps > 0.0 && t.gbps <= 1000.0) {
                return Err(invalid(format!(
                    "tests[{name}].gbps {} is out of range: allowed (0, 1000]",
                    t.gbps
                )));
            }
        }
        for t in &doc.tests {
            if !(t.gbps.is_finite() && (0.0..=1000.0).contains(&t.gbps)) {
                return Err(invalid(format!(
                    "tests[{}].gbps {} is out of range: allowed [0, 1000]",
                    t.name, t.gbps
                )));
            }
        }
        Ok(DeviceProfile {
            doc,
            sha256: crate::digest::sha256_hex(&bytes),
            path: path.to_path_buf(),
        })
    }

    /// The simulator's disk bandwidths from this profile: block-sized
    /// random reads and writes, how a KV tier uses a disk.
    pub fn sim_sets(&self) -> Vec<(String, String)> {
        let mut sets = Vec::new();
        if let Some(t) = self.doc.test("rand_read") {
            sets.push(("disk_read_gbps".into(), format!("{:?}", t.gbps)));
        }
        if let Some(t) = self.doc.test("rand_write").filter(|t| t.gbps > 0.0) {
            sets.push(("disk_write_gbps".into(), format!("{:?}", t.gbps)));
        }
        sets
    }
}

/// The host tier on a DGX Spark, stated with every disk ceiling so that
/// a host-tier figure is never read as a second memory's.
pub const SPARK_HOST_TIER_NOTE: &str = "On a DGX Spark (GB10) the host tier (KVBM's CPU memory, G2) lives in the same 128 GB LPDDR5x as GPU memory (unified, 273 GB/s): host-to-GPU onboarding is a copy within one memory (about 273 / 2 = 136 GB/s at best, inferred), shared with the GPU's own traffic, and host-tier capacity comes out of the GPU's (peers-2026 §6).";

/// One phase's disk figures, as the run's telemetry saw them.
pub struct PhaseDisk<'a> {
    pub phase: &'a str,
    pub block_device: Option<&'a str>,
    pub read_bytes: u64,
    pub busy_ms: u64,
}

/// The disk tier's achieved read bandwidth per phase against the profile.
pub fn disk_ceiling(
    profile: &DeviceProfile,
    phases: &[PhaseDisk<'_>],
    run_device: Option<&str>,
    simulated: bool,
) -> DiskCeilingDoc {
    let rand = profile.doc.test("rand_read");
    let random_read_gbps = rand.map_or(0.0, |t| t.gbps);
    let sequential_read_gbps = profile.doc.test("seq_read").map_or(0.0, |t| t.gbps);
    let frac = |a: Option<f64>, c: f64| a.filter(|_| c > 0.0).map(|a| a / c);
    let rows: Vec<DiskPhaseBandwidth> = phases
        .iter()
        .filter(|p| p.read_bytes > 0)
        .map(|p| {
            let busy_s = p.busy_ms as f64 / 1000.0;
            // No busy time with bytes read: the counters are too coarse
            // (1 ms ticks) for a figure; say none rather than divide by 0.
            let achieved = (busy_s > 0.0).then(|| p.read_bytes as f64 / busy_s / 1e9);
            DiskPhaseBandwidth {
                phase: p.phase.to_owned(),
                block_device: p.block_device.unwrap_or_default().to_owned(),
                read_bytes: p.read_bytes,
                busy_s,
                achieved_read_gbps: achieved,
                fraction_of_random_read: frac(achieved, random_read_gbps),
                fraction_of_sequential_read: frac(achieved, sequential_read_gbps),
            }
        })
        .collect();
    let best = rows
        .iter()
        .filter(|r| r.achieved_read_gbps.is_some())
        .max_by(|a, b| {
            let g = |r: &DiskPhaseBandwidth| r.achieved_read_gbps.unwrap_or(0.0);
            g(a).total_cmp(&g(b))
        })
        .cloned();
    let profile_dev = profile.doc.block_device.clone();
    let same_device = match (profile_dev.as_deref(), run_device) {
        (Some(a), Some(b)) => Some(a == b),
        _ => None,
    };
    let bs = rand.map_or(0, |t| t.block_size_bytes);
    let qd = rand.map_or(0, |t| t.queue_depth);
    let measured = format!(
        "{random_read_gbps:.2} GB/s measured ({} KiB random reads at queue depth {qd}; {sequential_read_gbps:.2} GB/s sequential)",
        bs / 1024
    );
    let mut statement = match &best {
        Some(b) => format!(
            "the SSD tier delivered {:.2} GB/s of {measured}, {:.0} %, in phase {} (disk reads per device-busy second on {})",
            b.achieved_read_gbps.unwrap_or_default(),
            b.fraction_of_random_read.unwrap_or_default() * 100.0,
            b.phase,
            b.block_device
        ),
        None if rows.is_empty() => format!(
            "the SSD tier read nothing from {} in any phase: no onboarding bandwidth to set against the {measured}",
            run_device.unwrap_or("the KV disk")
        ),
        None => format!(
            "the SSD tier read {} bytes, too briefly for the device's busy-time counter to give a bandwidth; the ceiling is {measured}",
            rows.iter().map(|r| r.read_bytes).sum::<u64>()
        ),
    };
    if same_device == Some(false) {
        statement.push_str(&format!(
            "; WARNING: the profile measured {}, the run's disk is {}",
            profile_dev.as_deref().unwrap_or("?"),
            run_device.unwrap_or("?")
        ));
    }
    if simulated {
        statement.push_str(" (SIMULATED engine: the disk reads are real, the engine is modelled)");
    }
    DiskCeilingDoc {
        device_profile_sha256: profile.sha256.clone(),
        profile_block_device: profile_dev,
        run_block_device: run_device.map(str::to_owned),
        same_device,
        random_read_gbps,
        random_read_block_bytes: bs,
        sequential_read_gbps,
        queue_depth: qd,
        phases: rows,
        best,
        statement,
        host_tier_note: SPARK_HOST_TIER_NOTE.into(),
        simulated,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(dir: &Path) -> CalibrateSpec {
        CalibrateSpec {
            dir: dir.to_path_buf(),
            file_bytes: 4 << 20,
            block_bytes: 64 << 10,
            seq_block_bytes: 1 << 20,
            queue_depth: 2,
            max_test_time: Duration::from_secs(30),
            seed: 1,
        }
    }

    #[test]
    fn bounds_name_the_flag_and_the_range() {
        let d = tempfile::tempdir().unwrap();
        let mut s = spec(d.path());
        s.block_bytes = 5000;
        let e = s.validate().unwrap_err().to_string();
        assert!(e.contains("--block-size 5000") && e.contains("4096"), "{e}");
        let mut s = spec(d.path());
        s.queue_depth = 0;
        let e = s.validate().unwrap_err().to_string();
        assert!(
            e.contains("--queue-depth 0") && e.contains("1..=256"),
            "{e}"
        );
        let mut s = spec(d.path());
        s.file_bytes = 1;
        let e = s.validate().unwrap_err().to_string();
        assert!(e.contains("--size 1 is out of range"), "{e}");
        let mut s = spec(d.path());
        s.queue_depth = 256;
        s.block_bytes = 64 << 20;
        s.file_bytes = 1 << 30;
        let e = s.validate().unwrap_err().to_string();
        assert!(e.contains("buffers"), "{e}");
        let mut s = spec(d.path());
        s.dir = d.path().join("missing");
        assert!(s.validate().unwrap_err().to_string().contains("--dir"));
    }

    /// On whatever filesystem the temp dir is: a real O_DIRECT measurement
    /// where it is allowed, the named refusal where it is not (tmpfs).
    #[test]
    fn calibrates_a_small_file_and_removes_it() {
        let d = tempfile::tempdir().unwrap();
        match calibrate(&spec(d.path())) {
            Ok(p) => {
                let names: Vec<&str> = p.tests.iter().map(|t| t.name.as_str()).collect();
                assert_eq!(names, ["seq_write", "seq_read", "rand_read", "rand_write"]);
                for t in &p.tests {
                    assert!(t.gbps > 0.0 && t.ios > 0 && t.bytes == t.ios * t.block_size_bytes);
                }
                assert_eq!(p.test("rand_read").unwrap().block_size_bytes, 64 << 10);
                assert_eq!(p.file_bytes, 4 << 20);
            }
            Err(DeviceProfileError::NoDirect { .. }) => {
                eprintln!("SKIPPED: the temp dir's filesystem refuses O_DIRECT");
            }
            Err(e) => panic!("{e}"),
        }
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 0);
    }

    fn profile(rand: f64, seq: f64, dev: &str) -> DeviceProfile {
        let t = |name: &str, gbps, bs| DiskTestDoc {
            name: name.into(),
            block_size_bytes: bs,
            queue_depth: 8,
            gbps,
            ..Default::default()
        };
        DeviceProfile {
            doc: DeviceProfileDoc {
                kind: DeviceProfileDoc::KIND.into(),
                version: 1,
                block_device: Some(dev.into()),
                tests: vec![t("seq_read", seq, 1 << 20), t("rand_read", rand, 1 << 16)],
                ..Default::default()
            },
            sha256: "ab".into(),
            path: "p".into(),
        }
    }

    #[test]
    fn ceiling_is_reads_per_busy_second_over_the_measured_figure() {
        let p = profile(2.0, 4.0, "loop3");
        let phases = [
            PhaseDisk {
                phase: "populate",
                block_device: Some("loop3"),
                read_bytes: 0,
                busy_ms: 900,
            },
            PhaseDisk {
                phase: "replay",
                block_device: Some("loop3"),
                read_bytes: 500_000_000,
                busy_ms: 500,
            },
        ];
        let c = disk_ceiling(&p, &phases, Some("loop3"), false);
        assert_eq!(c.phases.len(), 1, "phases without reads are left out");
        let b = c.best.unwrap();
        assert_eq!(b.phase, "replay");
        assert!((b.achieved_read_gbps.unwrap() - 1.0).abs() < 1e-9);
        assert!((b.fraction_of_random_read.unwrap() - 0.5).abs() < 1e-9);
        assert!((b.fraction_of_sequential_read.unwrap() - 0.25).abs() < 1e-9);
        assert!(
            c.statement
                .starts_with("the SSD tier delivered 1.00 GB/s of 2.00 GB/s measured"),
            "{}",
            c.statement
        );
        assert_eq!(c.same_device, Some(true));
        assert!(c.host_tier_note.contains("LPDDR5x"));

        let c = disk_ceiling(&p, &phases[..1], Some("nvme0n1"), true);
        assert!(c.best.is_none());
        assert!(c.statement.contains("read nothing"), "{}", c.statement);
        assert!(c.statement.contains("WARNING") && c.statement.contains("SIMULATED"));
    }

    #[test]
    fn a_bad_profile_is_refused_by_field() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("p.json");
        let mut p = profile(0.0, 4.0, "x").doc;
        std::fs::write(&f, serde_json::to_vec(&p).unwrap()).unwrap();
        let e = DeviceProfile::load(&f).unwrap_err().to_string();
        assert!(
            e.contains("tests[rand_read].gbps") && e.contains("(0, 1000]"),
            "{e}"
        );
        p.kind = "other".into();
        std::fs::write(&f, serde_json::to_vec(&p).unwrap()).unwrap();
        let e = DeviceProfile::load(&f).unwrap_err().to_string();
        assert!(e.contains("calibrate-disk"), "{e}");
        let p = profile(2.0, 4.0, "x").doc;
        std::fs::write(&f, serde_json::to_vec(&p).unwrap()).unwrap();
        let loaded = DeviceProfile::load(&f).unwrap();
        assert_eq!(loaded.sha256.len(), 64);
        assert_eq!(
            loaded.sim_sets(),
            [("disk_read_gbps".to_string(), "2.0".to_string())]
        );
    }
}
