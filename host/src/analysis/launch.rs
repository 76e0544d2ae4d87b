//! Runs `sparkhost run` as a child process for `matrix` and `search`.
//!
//! A child per run, rather than the run function in-process: each run gets a
//! fresh runtime, sandbox and memory, a crash or leak in one cannot affect
//! the next, and the command line recorded in every run's `config.json` is
//! the one a person could type to repeat that run alone.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use anyhow::Context;

/// One `sparkhost run` to make.
#[derive(Debug, Clone)]
pub struct RunLaunch {
    pub workload: PathBuf,
    pub results_root: PathBuf,
    pub run_id: String,
    /// Everything else on the command line, after the workload.
    pub args: Vec<String>,
}

impl RunLaunch {
    pub fn run_dir(&self) -> PathBuf {
        self.results_root.join(&self.run_id)
    }

    pub fn argv(&self) -> Vec<String> {
        let mut v = vec![
            "run".to_owned(),
            self.workload.display().to_string(),
            "--results-root".to_owned(),
            self.results_root.display().to_string(),
            "--run-id".to_owned(),
            self.run_id.clone(),
            "--quiet".to_owned(),
        ];
        v.extend(self.args.iter().cloned());
        v
    }
}

#[derive(Debug, Clone)]
pub struct LaunchOutcome {
    /// `None` when the child was killed by a signal.
    pub exit_code: Option<i32>,
    pub run_dir: PathBuf,
    pub has_summary: bool,
    /// The end of the child's stderr, for failures.
    pub stderr_tail: String,
}

/// The binary to launch: this one.
pub fn sparkhost_exe() -> anyhow::Result<PathBuf> {
    std::env::current_exe().context("cannot find the sparkhost binary to launch runs with")
}

/// The child run in progress (0: none), for forwarding stop signals.
static CURRENT_CHILD: AtomicU32 = AtomicU32::new(0);

/// Runs the child to completion (blocking). The child gets its own process
/// group, so a terminal's Ctrl-C reaches it once, forwarded by this process,
/// instead of twice (which it would read as "stop waiting").
pub fn launch(exe: &Path, l: &RunLaunch) -> anyhow::Result<LaunchOutcome> {
    use std::os::unix::process::CommandExt;
    let child = Command::new(exe)
        .args(l.argv())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .with_context(|| format!("starting {}", exe.display()))?;
    CURRENT_CHILD.store(child.id(), Ordering::SeqCst);
    let out = child.wait_with_output();
    CURRENT_CHILD.store(0, Ordering::SeqCst);
    let out = out.with_context(|| format!("waiting for {}", exe.display()))?;
    let err = String::from_utf8_lossy(&out.stderr);
    let tail: Vec<&str> = err.lines().rev().take(12).collect();
    let run_dir = l.run_dir();
    Ok(LaunchOutcome {
        exit_code: out.status.code(),
        has_summary: run_dir.join("summary.json").is_file(),
        run_dir,
        stderr_tail: tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
    })
}

/// Set once a stop signal (SIGINT, SIGTERM, SIGHUP) arrived. Each one is
/// forwarded to the child run in progress, which ends its run as
/// `interrupted` (a second one makes it stop waiting); this process only has
/// to stop starting new ones.
pub fn interrupt_flag() -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    let f = flag.clone();
    if tokio::runtime::Handle::try_current().is_ok() {
        match crate::signals::StopSignals::install() {
            Ok(mut signals) => {
                tokio::spawn(async move {
                    while let Some(stop) = signals.next().await {
                        f.store(true, Ordering::SeqCst);
                        let pid = CURRENT_CHILD.load(Ordering::SeqCst);
                        if pid != 0
                            && let Err(e) = stop.forward(pid)
                        {
                            tracing::warn!("forwarding {} to run {pid}: {e}", stop.name());
                        }
                    }
                });
            }
            Err(e) => tracing::warn!("cannot listen for stop signals: {e}"),
        }
    }
    flag
}

/// Keeps only `[A-Za-z0-9._-]`, so ids are safe as directory names.
pub fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect()
}
