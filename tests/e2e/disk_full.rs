//! A results disk that fills during a run: dispatch stops at once, the run
//! ends `results_write_failed` with its closing documents written (from the
//! space kept for them), and every row on disk is whole. The disk is a small
//! tmpfs the test mounts (CI runs as root) and unmounts.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::{dirs, read_json, sparkhost, synthetic, text};

/// A tmpfs of `size` at a fresh directory; unmounted on drop.
/// The mount point, and the directory holding it (removed after the unmount).
struct SmallDisk(PathBuf, #[allow(dead_code)] tempfile::TempDir);

impl SmallDisk {
    fn mount(size: &str) -> Option<SmallDisk> {
        let dir = tempfile::tempdir().unwrap();
        let mnt = dir.path().join("disk");
        std::fs::create_dir(&mnt).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&mnt)
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(SmallDisk(mnt, dir))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// `sparkhost run` of `synthetic` against the in-process tiny simulator
/// (B0: no disk tier, whose O_DIRECT files a tmpfs could not hold), into
/// `<disk>/<run_id>`.
fn run_on(disk: &SmallDisk, run_id: &str, extra: &[&str]) -> std::process::Output {
    let d = dirs();
    let root = disk.path().display().to_string();
    let wasm = synthetic();
    let mut args = vec![
        "run",
        wasm.to_str().unwrap(),
        "--endpoint",
        "sim:tiny",
        "--tier-mode",
        "B0",
        "--results-root",
        &root,
        "--run-id",
        run_id,
    ];
    args.extend_from_slice(extra);
    sparkhost(&args, d.cache.path())
}

#[test]
fn a_full_results_disk_stops_the_run_and_keeps_whole_rows() {
    let Some(disk) = SmallDisk::mount("24m") else {
        eprintln!("SKIPPED: cannot mount a tmpfs here (needs root)");
        return;
    };
    let out = run_on(
        &disk,
        "full",
        &[
            "--requests",
            "200000",
            "--warmup",
            "0",
            "--max-tokens",
            "32",
            // Prompts the tiny profile's context holds.
            "--param",
            "short-range=20:40",
            "--concurrency",
            "16",
            "--no-telemetry",
            "--quiet",
        ],
    );
    let dir = disk.path().join("full");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let summary = read_json(&dir.join("summary.json"));
    assert_eq!(
        summary["invalid_reason"], "results_write_failed",
        "{summary:#}"
    );
    let details = summary["invalid_details"].to_string();
    assert!(details.contains("No space left"), "{details}");
    // Stopped at once: most of the 200,000 were never planned or sent.
    let dispatch = &summary["dispatch"];
    assert!(
        dispatch["planned"].as_u64().unwrap() < 100_000,
        "{dispatch}"
    );
    assert_eq!(dispatch["phases_completed"], 0, "{dispatch}");
    // Every line on disk is a whole row, and the summary counts exactly them.
    let body = std::fs::read_to_string(dir.join("requests.jsonl")).unwrap();
    assert!(body.is_empty() || body.ends_with('\n'), "no torn last line");
    let mut lines = 0u64;
    for l in body.lines() {
        serde_json::from_str::<serde_json::Value>(l)
            .unwrap_or_else(|e| panic!("torn row {l:?}: {e}"));
        lines += 1;
    }
    assert_eq!(dispatch["recorded"].as_u64(), Some(lines), "{dispatch}");
    for l in std::fs::read_to_string(dir.join("request_manifest.jsonl"))
        .unwrap()
        .lines()
    {
        serde_json::from_str::<serde_json::Value>(l).expect("whole manifest rows");
    }
    assert!(
        dir.join("verdict.json").is_file(),
        "closing documents written"
    );
    assert!(!dir.join(".closing-space-reserve").exists());
    drop(disk);
}

#[test]
fn a_results_disk_without_room_is_refused_before_the_run() {
    let Some(disk) = SmallDisk::mount("4m") else {
        eprintln!("SKIPPED: cannot mount a tmpfs here (needs root)");
        return;
    };
    let out = run_on(&disk, "tiny", &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("KiB free"), "{}", text(&out));
    assert!(!disk.path().join("tiny").exists(), "no half-made run");
}
