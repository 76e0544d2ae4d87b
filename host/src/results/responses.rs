//! `--store-responses`: each response's text as `responses/<phase>_<index>_<id>.txt`,
//! the seed harness's layout (`<index>` is the 1-based index within the
//! phase, six digits). Off by default: a run's answers can be large and are
//! the server's text, not measurements.
//!
//! Bounded: the store keeps at most [`RESPONSES_MAX_BYTES`] and
//! [`RESPONSES_MAX_FILES`] per run. A response past either, or one whose file
//! cannot be written, gets no file; its row's `response_path` is null and
//! the store's [`ResponseStore::skipped`] count (and first reason) says why.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::limits::{RESPONSES_MAX_BYTES, RESPONSES_MAX_FILES};
use crate::prepare::RequestMeta;

/// Longest file-name part taken from a phase name or a request id.
const NAME_PART_MAX: usize = 80;

pub struct ResponseStore {
    dir: PathBuf,
    bytes: u64,
    files: u64,
    max_bytes: u64,
    max_files: u64,
    /// Responses that got no file.
    pub skipped: u64,
    /// Why the first of them got none.
    pub first_skip: Option<String>,
}

/// Phase names and request ids come from the workload: only `[A-Za-z0-9._-]`
/// reaches a file name, and at most [`NAME_PART_MAX`] bytes of it.
fn file_part(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .take(NAME_PART_MAX)
        .collect();
    if out.is_empty() || out.chars().all(|c| c == '.') {
        out = "_".into();
    }
    out
}

impl ResponseStore {
    /// Creates `<run_dir>/responses/`.
    pub fn create(run_dir: &Path) -> std::io::Result<Self> {
        let dir = run_dir.join("responses");
        std::fs::create_dir(&dir)?;
        Ok(ResponseStore {
            dir,
            bytes: 0,
            files: 0,
            max_bytes: RESPONSES_MAX_BYTES,
            max_files: RESPONSES_MAX_FILES,
            skipped: 0,
            first_skip: None,
        })
    }

    fn skip(&mut self, why: String) -> Option<String> {
        self.skipped += 1;
        self.first_skip.get_or_insert(why);
        None
    }

    /// Writes one response; returns its path relative to the run directory
    /// (`responses/…`), or `None` when it got no file.
    pub fn store(&mut self, meta: &RequestMeta, text: &str) -> Option<String> {
        let key = Key {
            phase: &meta.phase,
            phase_index: meta.phase_request_index,
            id: &meta.id,
            run_index: meta.request_index,
        };
        self.store_as(&key, text)
    }

    fn store_as(&mut self, k: &Key<'_>, text: &str) -> Option<String> {
        let len = text.len() as u64;
        if self.files >= self.max_files {
            return self.skip(format!(
                "{} of {}: more than {} responses",
                k.phase, k.id, self.max_files
            ));
        }
        if self.bytes + len > self.max_bytes {
            return self.skip(format!(
                "{} of {}: the stored responses would pass {} bytes",
                k.phase, k.id, self.max_bytes
            ));
        }
        let (phase, id) = (file_part(k.phase), file_part(k.id));
        let name = format!("{phase}_{:06}_{id}.txt", k.phase_index);
        // Two phase names can map to one file name; the run-wide index
        // tells those apart, and nothing is overwritten.
        let alt = format!("{phase}_{:06}_{id}-r{}.txt", k.phase_index, k.run_index);
        let mut last_err = None;
        for name in [name, alt] {
            let opened = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(self.dir.join(&name));
            match opened {
                Ok(mut f) => {
                    if let Err(e) = f.write_all(text.as_bytes()) {
                        return self.skip(format!("writing responses/{name}: {e}"));
                    }
                    self.files += 1;
                    self.bytes += len;
                    return Some(format!("responses/{name}"));
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last_err = Some(e),
                Err(e) => return self.skip(format!("creating responses/{name}: {e}")),
            }
        }
        let e = last_err.map(|e| e.to_string()).unwrap_or_default();
        self.skip(format!("{} of {}: {e}", k.phase, k.id))
    }
}

/// What names a response's file.
struct Key<'a> {
    phase: &'a str,
    phase_index: u64,
    id: &'a str,
    run_index: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_parts_keep_only_safe_characters() {
        assert_eq!(file_part("copilot_main-00001"), "copilot_main-00001");
        assert_eq!(file_part("../etc/passwd"), ".._etc_passwd");
        assert_eq!(file_part(".."), "_");
        assert_eq!(file_part(""), "_");
        assert_eq!(file_part("a b/ü"), "a_b__");
        assert_eq!(file_part(&"x".repeat(500)).len(), NAME_PART_MAX);
    }

    fn key<'a>(phase: &'a str, i: u64, id: &'a str, run: u64) -> Key<'a> {
        Key {
            phase,
            phase_index: i,
            id,
            run_index: run,
        }
    }

    #[test]
    fn the_store_never_overwrites_and_stops_at_its_bounds() {
        let tmp = tempfile::tempdir().unwrap();
        let mut s = ResponseStore::create(tmp.path()).unwrap();
        s.max_bytes = 10;
        s.max_files = 3;
        let a = s.store_as(&key("a/b", 1, "x", 0), "1234").unwrap();
        assert_eq!(a, "responses/a_b_000001_x.txt");
        // "a b" files under the same name: the run-wide index tells it apart.
        let b = s.store_as(&key("a b", 1, "x", 7), "5678").unwrap();
        assert_eq!(b, "responses/a_b_000001_x-r7.txt");
        assert_eq!(
            std::fs::read_to_string(tmp.path().join(&a)).unwrap(),
            "1234"
        );
        assert_eq!(
            std::fs::read_to_string(tmp.path().join(&b)).unwrap(),
            "5678"
        );
        // 8 of 10 bytes used: 3 more would pass the bound.
        assert_eq!(s.store_as(&key("p", 2, "y", 1), "abc"), None);
        assert!(s.first_skip.as_deref().unwrap().contains("10 bytes"));
        assert!(s.store_as(&key("p", 3, "z", 2), "ab").is_some());
        assert_eq!(s.store_as(&key("p", 4, "w", 3), ""), None);
        assert_eq!(s.skipped, 2);
        assert_eq!(
            std::fs::read_dir(tmp.path().join("responses"))
                .unwrap()
                .count(),
            3
        );
    }
}
