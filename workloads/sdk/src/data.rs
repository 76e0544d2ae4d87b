//! Reading a data file the user handed to the workload.
//!
//! The sandbox has no filesystem except what the user grants explicitly with
//! `--data FILE` or `--param NAME=@FILE`: one file, read-only, at
//! `/data/<file name>` (the `@` form also sets the parameter to that path).
//! Workloads read it with `std::fs`; this module only turns failures into a
//! message that tells the user how to grant the file.

use crate::{Result, WorkloadError};

/// The whole file at `path` as UTF-8 text; `param` names the parameter that
/// gave the path, for the error message.
///
/// Errors are [`WorkloadError::InvalidConfig`]: an empty path, a file that
/// cannot be read (usually: not granted), or bytes that are not UTF-8.
pub fn read_text(param: &str, path: &str) -> Result<String> {
    let bytes = read_bytes(param, path, u64::MAX)?;
    String::from_utf8(bytes).map_err(|e| {
        WorkloadError::InvalidConfig(format!(
            "parameter `{param}`: {path:?} is not UTF-8 text (invalid byte at offset {})",
            e.utf8_error().valid_up_to()
        ))
    })
}

/// The whole file at `path` as bytes, refused when it is larger than
/// `max_bytes` (checked before reading, so a huge grant cannot exhaust the
/// guest's memory). Errors as [`read_text`]'s.
pub fn read_bytes(param: &str, path: &str, max_bytes: u64) -> Result<Vec<u8>> {
    if path.is_empty() {
        return Err(WorkloadError::InvalidConfig(format!(
            "parameter `{param}` is empty; pass a file with `--param {param}=@FILE`, which \
             grants the workload read access to that one file"
        )));
    }
    let unreadable = |e: std::io::Error| {
        WorkloadError::InvalidConfig(format!(
            "parameter `{param}`: cannot read {path:?}: {e}; workloads see only files granted \
             with `--param {param}=@FILE` or `--data FILE` (mounted read-only at /data/<name>)"
        ))
    };
    let len = std::fs::metadata(path).map_err(unreadable)?.len();
    if len > max_bytes {
        return Err(WorkloadError::InvalidConfig(format!(
            "parameter `{param}`: {path:?} is {len} bytes; at most {max_bytes} are allowed"
        )));
    }
    std::fs::read(path).map_err(unreadable)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(r: Result<String>) -> String {
        match r {
            Err(WorkloadError::InvalidConfig(m)) => m,
            other => panic!("expected InvalidConfig, got {other:?}"),
        }
    }

    #[test]
    fn reads_a_file_and_explains_failures() {
        let dir = std::env::temp_dir().join(format!("sparkhost-sdk-data-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("good.txt");
        std::fs::write(&good, "héllo\n").unwrap();
        assert_eq!(
            read_text("trace", good.to_str().unwrap()).unwrap(),
            "héllo\n"
        );

        let bad = dir.join("bad.bin");
        std::fs::write(&bad, [b'a', 0xff]).unwrap();
        let m = message(read_text("trace", bad.to_str().unwrap()));
        assert!(m.contains("not UTF-8") && m.contains("offset 1"), "{m}");

        let m = message(read_text("trace", dir.join("missing").to_str().unwrap()));
        assert!(m.contains("--param trace=@FILE"), "{m}");
        let m = message(read_text("trace", ""));
        assert!(m.contains("is empty"), "{m}");
        assert_eq!(
            read_bytes("trace", good.to_str().unwrap(), 7)
                .unwrap()
                .len(),
            7
        );
        let m = match read_bytes("trace", good.to_str().unwrap(), 6) {
            Err(WorkloadError::InvalidConfig(m)) => m,
            other => panic!("{other:?}"),
        };
        assert!(m.contains("is 7 bytes; at most 6"), "{m}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
