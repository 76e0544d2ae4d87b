//! Stop signals. SIGINT, SIGTERM and SIGHUP mean the same thing: stop
//! sending, let what is in flight finish, write what was measured and end
//! as `interrupted`. A second one means "stop waiting": the dispatcher gives
//! up on in-flight requests, and whatever still blocks the exit (a spinning
//! guest, a slow scrape) gets [`LAST_RESORT`] before the process exits.
//!
//! Why all three: a service manager, `timeout(1)`, `kubectl delete` and a
//! closed terminal send SIGTERM or SIGHUP, never SIGINT, and each used to
//! end a run at once with no summary.

use std::time::Duration;

use tokio::signal::unix::{Signal, SignalKind, signal};

/// How long the process may take to exit after the second signal.
pub const LAST_RESORT: Duration = Duration::from_secs(1);

/// The three stop signals, listened to together.
pub struct StopSignals {
    int: Signal,
    term: Signal,
    hup: Signal,
}

impl StopSignals {
    /// Installs the handlers. From here on the signals no longer kill the
    /// process by default, so a listener must stay alive until it exits.
    pub fn install() -> std::io::Result<Self> {
        Ok(StopSignals {
            int: signal(SignalKind::interrupt())?,
            term: signal(SignalKind::terminate())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    /// The next stop signal; `None` once no more can arrive.
    pub async fn next(&mut self) -> Option<Stop> {
        tokio::select! {
            s = self.int.recv() => s.map(|()| Stop::Int),
            s = self.term.recv() => s.map(|()| Stop::Term),
            s = self.hup.recv() => s.map(|()| Stop::Hup),
        }
    }
}

/// One of the stop signals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    Int,
    Term,
    Hup,
}

impl Stop {
    pub fn name(self) -> &'static str {
        match self {
            Stop::Int => "SIGINT",
            Stop::Term => "SIGTERM",
            Stop::Hup => "SIGHUP",
        }
    }

    /// Sends the same signal to `pid` (a child run of `matrix`/`search`).
    pub fn forward(self, pid: u32) -> std::io::Result<()> {
        use rustix::process::{Pid, Signal, kill_process};
        let sig = match self {
            Stop::Int => Signal::INT,
            Stop::Term => Signal::TERM,
            Stop::Hup => Signal::HUP,
        };
        let pid = i32::try_from(pid)
            .ok()
            .and_then(Pid::from_raw)
            .ok_or_else(|| std::io::Error::other(format!("{pid} is not a process id")))?;
        kill_process(pid, sig).map_err(std::io::Error::from)
    }
}

/// Exits with `code` after [`LAST_RESORT`] unless the process ended first.
/// A thread, not a task: it must fire even when the runtime is blocked.
pub fn exit_after_last_resort(code: u8) {
    let _ = std::thread::Builder::new()
        .name("last-resort-exit".into())
        .spawn(move || {
            std::thread::sleep(LAST_RESORT);
            eprintln!(
                "sparkhost: still not finished {LAST_RESORT:?} after the second stop signal; exiting \
                 (rows already recorded are on disk; `sparkhost recover` rebuilds the summary)"
            );
            std::process::exit(i32::from(code));
        });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn each_stop_signal_is_named() {
        let mut s = StopSignals::install().unwrap();
        // The handlers are installed first, so these cannot kill the test process.
        for stop in [Stop::Hup, Stop::Term, Stop::Int] {
            stop.forward(std::process::id()).unwrap();
            let got = tokio::time::timeout(Duration::from_secs(5), s.next())
                .await
                .expect("the signal arrives");
            assert_eq!(got, Some(stop));
        }
    }
}
