//! Stop signals through the real CLI: SIGTERM and SIGHUP end a run the way
//! SIGINT does (drain, summarize, exit 2 `interrupted`, every finished row
//! kept), and a second signal stops waiting for what is in flight.
//!
//! The endpoint is the in-process simulator with the 8B profile, whose
//! requests take long enough to be in flight when the signal lands.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sparkhost::signals::Stop;

use super::{Dirs, dirs, read_json, read_jsonl, synthetic};

/// Killed on any failure, so no run outlives its test.
struct Run(Child);

impl Drop for Run {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(d: &Dirs, max_tokens: &str) -> Run {
    let root = d.results.path().display().to_string();
    let child = Command::new(env!("CARGO_BIN_EXE_sparkhost"))
        .args([
            "run",
            synthetic().to_str().unwrap(),
            "--endpoint",
            "sim:spark-llama31-8b-fp8",
            "--tier-mode",
            "B0",
            "--requests",
            "400",
            "--warmup",
            "0",
            "--max-tokens",
            max_tokens,
            "--concurrency",
            "2",
            "--results-root",
            &root,
            "--run-id",
            "sig",
            "--quiet",
        ])
        .env("SPARKHOST_CACHE_DIR", d.cache.path())
        .env("SPARKHOST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    Run(child)
}

/// Waits until `file` in the run directory has at least `lines` lines.
fn wait_for_lines(dir: &Path, file: &str, lines: usize) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let n = std::fs::read_to_string(dir.join(file))
            .map(|s| s.lines().count())
            .unwrap_or(0);
        if n >= lines {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{file} never reached {lines} lines"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits for the exit; `None` if it is still running after `within`.
fn wait_exit(run: &mut Run, within: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Some(st) = run.0.try_wait().unwrap() {
            return Some(st);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

fn stderr_of(run: &mut Run) -> String {
    use std::io::Read;
    let mut s = String::new();
    if let Some(mut e) = run.0.stderr.take() {
        let _ = e.read_to_string(&mut s);
    }
    s
}

#[test]
fn sigterm_and_sighup_drain_like_sigint() {
    for stop in [Stop::Term, Stop::Hup] {
        let d = dirs();
        let dir = d.results.path().join("sig");
        let mut run = start(&d, "16");
        // Two rows on disk: the run is measuring, with more in flight.
        wait_for_lines(&dir, "requests.jsonl", 2);
        stop.forward(run.0.id()).unwrap();
        let status = wait_exit(&mut run, Duration::from_secs(60))
            .unwrap_or_else(|| panic!("{} did not end the run", stop.name()));
        let err = stderr_of(&mut run);
        assert_eq!(status.code(), Some(2), "{}: {err}", stop.name());
        let summary = read_json(&dir.join("summary.json"));
        assert_eq!(summary["invalid_reason"], "interrupted", "{summary:#}");
        let details = summary["invalid_details"].to_string();
        assert!(details.contains(stop.name()), "{details}");
        assert!(details.contains("requests in flight finished"), "{details}");
        let dispatch = &summary["dispatch"];
        assert_eq!(dispatch["abandoned_in_flight"], 0, "{dispatch}");
        assert!(
            dispatch["unsent"].as_u64().unwrap() > 0,
            "it stopped early: {dispatch}"
        );
        // Every request that was sent finished and has a whole row.
        let rows = read_jsonl(&dir.join("requests.jsonl"));
        assert_eq!(dispatch["recorded"].as_u64(), Some(rows.len() as u64));
        assert!(rows.len() >= 2);
        assert!(
            rows.iter().all(|r| r["ok"] == true),
            "drained, not cut: {rows:#?}"
        );
        assert!(dir.join("verdict.json").is_file() && dir.join("histograms.hlog").is_file());
    }
}

#[test]
fn a_second_signal_stops_waiting() {
    let d = dirs();
    let dir = d.results.path().join("sig");
    // 4,000 tokens at the 8B profile's decode pace: requests that would stay
    // in flight for minutes.
    let mut run = start(&d, "4000");
    wait_for_lines(&dir, "request_manifest.jsonl", 2);
    std::thread::sleep(Duration::from_millis(500));
    Stop::Term.forward(run.0.id()).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        run.0.try_wait().unwrap().is_none(),
        "the first signal drains"
    );
    Stop::Int.forward(run.0.id()).unwrap();
    // Generous: the process promises under a second; this only says it
    // does not wait for the minutes its requests would take.
    let status = wait_exit(&mut run, Duration::from_secs(15))
        .expect("the second signal ends the run without waiting for in-flight requests");
    let err = stderr_of(&mut run);
    assert_eq!(status.code(), Some(2), "{err}");
    let summary = read_json(&dir.join("summary.json"));
    assert_eq!(summary["invalid_reason"], "interrupted", "{summary:#}");
    assert_eq!(summary["dispatch"]["abandoned_in_flight"], 2, "{summary:#}");
    let details = summary["invalid_details"].to_string();
    assert!(
        details.contains("gave up on 2 requests in flight"),
        "{details}"
    );
}

/// kill -9 leaves rows and no summary; `recover` rebuilds the closing
/// documents from the rows, labelled interrupted, and refuses a run that
/// already has them unless forced.
#[test]
fn kill_9_then_recover_rebuilds_the_summary_from_the_rows() {
    let d = dirs();
    let dir = d.results.path().join("sig");
    let mut run = start(&d, "16");
    wait_for_lines(&dir, "requests.jsonl", 3);
    run.0.kill().unwrap();
    let status = run.0.wait().unwrap();
    assert_eq!(status.code(), None, "SIGKILL");
    assert!(!dir.join("summary.json").exists());
    let text = std::fs::read_to_string(dir.join("requests.jsonl")).unwrap();
    // Whole lines only: the recorder writes each row in one piece.
    let rows = text.lines().filter(|l| !l.is_empty()).count();
    let torn = u64::from(!text.is_empty() && !text.ends_with('\n'));

    let dir_s = dir.to_str().unwrap();
    let out = super::sparkhost(&["recover", dir_s], d.cache.path());
    assert_eq!(out.status.code(), Some(2), "{}", super::text(&out));
    let summary = read_json(&dir.join("summary.json"));
    assert_eq!(summary["run_valid"], false);
    assert_eq!(summary["invalid_reason"], "interrupted", "{summary:#}");
    let details = summary["invalid_details"].to_string();
    assert!(details.contains("sparkhost recover"), "{details}");
    let recorded: u64 = summary["phase_summaries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["total_requests"].as_u64().unwrap())
        .sum();
    assert_eq!(recorded, rows as u64 - torn, "{summary:#}");
    assert_eq!(summary["dispatch"]["recorded"], recorded);
    let ok: u64 = summary["phase_summaries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["ok_requests"].as_u64().unwrap())
        .sum();
    assert!(ok >= 3 - torn, "{summary:#}");
    // Every successful row's latency is back in the histograms.
    let e2e: u64 = summary["phase_summaries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["latency_ms"]["e2e"]["count"].as_u64().unwrap())
        .sum();
    assert_eq!(e2e, ok, "{summary:#}");
    for f in ["verdict.json", "histograms.hlog", "report.md"] {
        assert!(dir.join(f).is_file(), "{f} not rebuilt");
    }

    // A finished run is not recovered again by accident.
    let again = super::sparkhost(&["recover", dir_s, "--no-report"], d.cache.path());
    assert_eq!(again.status.code(), Some(1), "{}", super::text(&again));
    assert!(super::text(&again).contains("--force"));
    let forced = super::sparkhost(
        &["recover", dir_s, "--force", "--no-report", "--quiet"],
        d.cache.path(),
    );
    assert_eq!(forced.status.code(), Some(2), "{}", super::text(&forced));

    // summarize lists it as any other run, with its reason.
    let out = super::sparkhost(&["summarize", dir_s, "--no-csv"], d.cache.path());
    assert_eq!(out.status.code(), Some(0), "{}", super::text(&out));
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("interrupted"), "{table}");
}
