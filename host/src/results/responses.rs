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
        let len = text.len() as u64;
        if self.files >= RESPONSES_MAX_FILES {
            return self.skip(format!(
                "{} of {}: more than {RESPONSES_MAX_FILES} responses",
                meta.phase, meta.id
            ));
        }
        if self.bytes + len > RESPONSES_MAX_BYTES {
            return self.skip(format!(
                "{} of {}: the stored responses would pass {RESPONSES_MAX_BYTES} bytes",
                meta.phase, meta.id
            ));
        }
        let name = format!(
            "{}_{:06}_{}.txt",
            file_part(&meta.phase),
            meta.phase_request_index,
            file_part(&meta.id)
        );
        // Two phase names can map to one file name; the run-wide index
        // tells those apart, and nothing is overwritten.
        let alt = format!(
            "{}_{:06}_{}-r{}.txt",
            file_part(&meta.phase),
            meta.phase_request_index,
            file_part(&meta.id),
            meta.request_index
        );
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
        self.skip(format!("{} of {}: {e}", meta.phase, meta.id))
    }
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
}
