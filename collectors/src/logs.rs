//! Best-effort captures that explain a run afterwards: the worker container's
//! logs and inspect output, cuFile logs (they say whether cuFile ran in POSIX
//! compat mode or GDS), and the KV cache directory (size, file count, listing).
//! Each capture returns a record of what worked; none of them can fail a run.
//! Two sources live here: `logs` (the captures, at run end) and
//! `kv-cache-dir` (the directory at every phase boundary).

use std::fs;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::common::Reading;
use crate::docker::docker;
use crate::session::Config;
use crate::source::{At, Fill, Finish, Opened, Probe, Source, SourceId};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Capture {
    pub what: String,
    pub path: Option<String>,
    pub ok: bool,
    pub error: Option<String>,
    pub bytes: u64,
}

fn write_capture(what: &str, out: &Path, r: Result<Vec<u8>, String>) -> Capture {
    match r {
        Ok(data) => {
            let res = out
                .parent()
                .map(fs::create_dir_all)
                .transpose()
                .and_then(|_| fs::write(out, &data));
            match res {
                Ok(_) => Capture {
                    what: what.into(),
                    path: Some(out.display().to_string()),
                    ok: true,
                    error: None,
                    bytes: data.len() as u64,
                },
                Err(e) => Capture {
                    what: what.into(),
                    error: Some(format!("{}: {e}", out.display())),
                    ..Default::default()
                },
            }
        }
        Err(e) => Capture {
            what: what.into(),
            error: Some(e),
            ..Default::default()
        },
    }
}

/// `docker logs --timestamps` and `docker inspect` of `container` into `dir`.
pub fn capture_docker(container: &str, dir: &Path, timeout: Duration) -> Vec<Capture> {
    let safe = crate::common::file_safe(container);
    // The container's stdout and stderr come back on ours; kept apart, since
    // interleaving them again would need the timestamps anyway.
    let logs = crate::docker::run_output("docker", &["logs", "--timestamps", container], timeout);
    let (out, err) = match logs {
        Ok((o, e)) => (Ok(o), Ok(e)),
        Err(e) => (Err(e.clone()), Err(e)),
    };
    let mut v = vec![
        write_capture(
            &format!("docker logs {container} (stdout)"),
            &dir.join(format!("docker_{safe}_logs.txt")),
            out,
        ),
        write_capture(
            &format!("docker logs {container} (stderr)"),
            &dir.join(format!("docker_{safe}_logs_stderr.txt")),
            err,
        ),
    ];
    v.push(write_capture(
        &format!("docker inspect {container}"),
        &dir.join(format!("docker_{safe}_inspect.json")),
        docker(&["inspect", container], timeout),
    ));
    v
}

/// Copies cuFile log directories: host paths as is, and the container's
/// `/var/log/cufile` via `docker cp`; then greps the lines that tell the mode.
pub fn capture_cufile(
    host_dirs: &[PathBuf],
    container: Option<&str>,
    dir: &Path,
    timeout: Duration,
) -> Vec<Capture> {
    let mut v = Vec::new();
    let root = dir.join("cufile_logs");
    for h in host_dirs {
        let dest = root
            .join("host")
            .join(crate::common::file_safe(&h.display().to_string()));
        v.push(match copy_tree(h, &dest, 200) {
            Ok(bytes) => Capture {
                what: format!("cufile logs {}", h.display()),
                path: Some(dest.display().to_string()),
                ok: true,
                error: None,
                bytes,
            },
            Err(e) => Capture {
                what: format!("cufile logs {}", h.display()),
                error: Some(e),
                ..Default::default()
            },
        });
    }
    if let Some(c) = container {
        let dest = root.join(format!("container_{}", crate::common::file_safe(c)));
        let _ = fs::create_dir_all(&dest);
        let src = format!("{c}:/var/log/cufile/.");
        let r = docker(&["cp", &src, &dest.display().to_string()], timeout);
        v.push(Capture {
            what: format!("cufile logs in container {c}"),
            path: r.is_ok().then(|| dest.display().to_string()),
            ok: r.is_ok(),
            error: r.err(),
            bytes: dir_size(&dest),
        });
    }
    let mut hits = Vec::new();
    grep_tree(&root, &mut hits);
    if !hits.is_empty() {
        let keep = hits.len().saturating_sub(200);
        let text = hits[keep..].join("\n") + "\n";
        v.push(write_capture(
            "cufile grep",
            &dir.join("cufile_grep.txt"),
            Ok(text.into_bytes()),
        ));
    }
    v
}

fn copy_tree(src: &Path, dest: &Path, max_files: usize) -> Result<u64, String> {
    if !src.is_dir() {
        return Err(format!("{}: missing", src.display()));
    }
    let mut bytes = 0;
    let mut n = 0;
    let mut stack = vec![src.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d)
            .map_err(|e| crate::common::describe_io_error(&d, &e))?
            .flatten()
        {
            let p = e.path();
            let rel = p.strip_prefix(src).unwrap_or(&p);
            if p.is_dir() {
                stack.push(p.clone());
            } else if n < max_files {
                let to = dest.join(rel);
                if let Some(parent) = to.parent() {
                    fs::create_dir_all(parent).map_err(|e| e.to_string())?;
                }
                bytes += fs::copy(&p, &to).map_err(|e| format!("{}: {e}", p.display()))?;
                n += 1;
            }
        }
    }
    Ok(bytes)
}

fn dir_size(p: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![p.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).into_iter().flatten().flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => stack.push(e.path()),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
}

fn grep_tree(root: &Path, hits: &mut Vec<String>) {
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let mut entries: Vec<_> = fs::read_dir(&d)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .collect();
        entries.sort();
        for p in entries {
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(text) = fs::read(&p) {
                for line in String::from_utf8_lossy(&text).lines() {
                    let u = line.to_ascii_uppercase();
                    if ["COMPAT", "POSIX", "GDS", "ERROR", "WARN"]
                        .iter()
                        .any(|k| u.contains(k))
                    {
                        hits.push(format!("{}: {line}", p.display()));
                    }
                }
            }
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DirSummary {
    pub path: String,
    pub exists: bool,
    pub file_count: u64,
    pub dir_count: u64,
    /// Sum of file lengths.
    pub apparent_bytes: u64,
    /// Sum of allocated blocks (what `du` reports; differs for sparse or
    /// preallocated cache files).
    pub allocated_bytes: u64,
    /// The walk stopped at `max_depth` or `max_entries`.
    pub truncated: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileEntry {
    pub path: String,
    pub size: u64,
    pub allocated: u64,
    pub mtime_unix: i64,
}

/// Walks `root` to `max_depth` levels (the seed used 5), keeping at most `max_entries` entries.
pub fn dir_snapshot(
    root: &Path,
    max_depth: usize,
    max_entries: usize,
) -> (DirSummary, Vec<FileEntry>) {
    let mut s = DirSummary {
        path: root.display().to_string(),
        exists: root.is_dir(),
        ..Default::default()
    };
    let mut files = Vec::new();
    if !s.exists {
        return (s, files);
    }
    let mut stack = vec![(root.to_path_buf(), 0usize)];
    while let Some((d, depth)) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let Ok(m) = e.metadata() else { continue };
            if m.is_dir() {
                s.dir_count += 1;
                if depth + 1 < max_depth {
                    stack.push((e.path(), depth + 1));
                } else {
                    s.truncated = true;
                }
                continue;
            }
            s.file_count += 1;
            s.apparent_bytes += m.len();
            s.allocated_bytes += m.blocks() * 512;
            if files.len() < max_entries {
                files.push(FileEntry {
                    path: e
                        .path()
                        .strip_prefix(root)
                        .unwrap_or(&e.path())
                        .display()
                        .to_string(),
                    size: m.len(),
                    allocated: m.blocks() * 512,
                    mtime_unix: m.mtime(),
                });
            } else {
                s.truncated = true;
            }
        }
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    (s, files)
}

/// Writes a listing as `mtime size allocated path` lines (the seed's `find -printf` shape).
pub fn write_listing(
    path: &Path,
    summary: &DirSummary,
    files: &[FileEntry],
) -> std::io::Result<()> {
    if let Some(d) = path.parent() {
        fs::create_dir_all(d)?;
    }
    let mut f = std::io::BufWriter::new(fs::File::create(path)?);
    writeln!(
        f,
        "# {} files={} dirs={} apparent_bytes={} allocated_bytes={} truncated={}",
        summary.path,
        summary.file_count,
        summary.dir_count,
        summary.apparent_bytes,
        summary.allocated_bytes,
        summary.truncated
    )?;
    for e in files {
        writeln!(f, "{} {} {} {}", e.mtime_unix, e.size, e.allocated, e.path)?;
    }
    f.flush()
}

// ---------------------------------------------------------------- sources

/// Docker and cuFile logs, captured once at run end.
struct Logs {
    on: bool,
}

pub(crate) fn probe_logs(p: &Probe<'_>) -> Opened {
    let on = p.on(SourceId::Logs);
    Opened::new(Logs { on }, on, Ok(()))
}

impl Source for Logs {
    fn id(&self) -> SourceId {
        SourceId::Logs
    }

    fn read(&self, _at: &At<'_>) -> Fill {
        Box::new(|_| {})
    }

    fn finish(&self, cfg: &Config, out: &mut Finish) {
        if !self.on {
            return;
        }
        let tdir = cfg.telemetry_dir();
        if let Some(cname) = &cfg.container {
            out.captures
                .extend(capture_docker(cname, &tdir, cfg.docker_timeout));
        }
        out.captures.extend(capture_cufile(
            &cfg.cufile_log_dirs,
            cfg.container.as_deref(),
            &tdir,
            cfg.docker_timeout,
        ));
    }
}

/// The KVBM disk cache directory: a summary in each snapshot and a listing
/// per boundary under `telemetry/kvbm_dir_<label>.txt`.
struct KvCacheDir {
    dir: Option<PathBuf>,
    reason: String,
}

pub(crate) fn probe_kv_cache_dir(p: &Probe<'_>) -> Opened {
    let on = p.on(SourceId::KvCacheDir);
    let dir = &p.cfg.kv_cache_dir;
    let result = match dir {
        Some(d) if d.is_dir() => Ok(()),
        Some(d) => Err(format!("{}: missing", d.display())),
        None => Err("no KV cache dir given".into()),
    };
    let source = KvCacheDir {
        // Looked at again at every boundary: KVBM may create it after the harness starts.
        dir: dir.clone().filter(|_| on),
        reason: Opened::reason(on, &result),
    };
    Opened::new(source, on, result)
}

impl Source for KvCacheDir {
    fn id(&self) -> SourceId {
        SourceId::KvCacheDir
    }

    fn read(&self, at: &At<'_>) -> Fill {
        let r = match &self.dir {
            Some(d) if d.is_dir() => {
                let (summary, files) = dir_snapshot(d, 5, 100_000);
                let out = at.cfg.telemetry_dir().join(format!(
                    "kvbm_dir_{}.txt",
                    crate::common::file_safe(at.label)
                ));
                if let Err(e) = write_listing(&out, &summary, &files) {
                    at.warn(format!("{}: {e}", out.display()));
                }
                Reading::ok(summary)
            }
            _ => Reading::unavailable(self.reason.clone()),
        };
        Box::new(move |s| s.kv_cache_dir = r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dir_snapshot_counts_and_lists() {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir_all(d.path().join("a/b")).unwrap();
        fs::write(d.path().join("x.bin"), vec![0u8; 5000]).unwrap();
        fs::write(d.path().join("a/b/y.bin"), vec![1u8; 100]).unwrap();
        let (s, files) = dir_snapshot(d.path(), 5, 100);
        assert!(s.exists);
        assert_eq!((s.file_count, s.dir_count, s.apparent_bytes), (2, 2, 5100));
        assert!(s.allocated_bytes >= 5000);
        assert_eq!(
            files.iter().map(|f| f.path.as_str()).collect::<Vec<_>>(),
            vec!["a/b/y.bin", "x.bin"]
        );
        let (shallow, _) = dir_snapshot(d.path(), 1, 100);
        assert!(shallow.truncated);
        assert_eq!(shallow.file_count, 1);
        let (missing, none) = dir_snapshot(&d.path().join("nope"), 5, 100);
        assert!(!missing.exists && none.is_empty());
        let out = d.path().join("listing.txt");
        write_listing(&out, &s, &files).unwrap();
        assert_eq!(fs::read_to_string(&out).unwrap().lines().count(), 3);
    }

    #[test]
    fn docker_capture_fails_soft() {
        let d = tempfile::tempdir().unwrap();
        let caps = capture_docker(
            "sparkhost-no-such-container",
            d.path(),
            Duration::from_secs(20),
        );
        assert_eq!(caps.len(), 3);
        assert!(caps.iter().all(|c| !c.ok && c.error.is_some()));
    }

    #[test]
    fn cufile_host_dir_copy_and_grep() {
        let d = tempfile::tempdir().unwrap();
        let logs = d.path().join("cufile");
        fs::create_dir_all(&logs).unwrap();
        fs::write(
            logs.join("cufile_1.log"),
            "info\nWARN cuFile running in compat mode (POSIX)\n",
        )
        .unwrap();
        let out = d.path().join("out");
        let caps = capture_cufile(
            &[logs, d.path().join("absent")],
            None,
            &out,
            Duration::from_secs(1),
        );
        assert!(caps[0].ok);
        assert!(!caps[1].ok);
        let grep = fs::read_to_string(out.join("cufile_grep.txt")).unwrap();
        assert!(grep.contains("compat mode"));
    }
}
