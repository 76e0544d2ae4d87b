//! Live progress on a terminal: requests done / planned, current req/s,
//! running TTFT p50/p99, errors and the phase.
//!
//! Hidden when stderr is not a terminal or with `--quiet`, so logs, pipes
//! and CI output stay clean. Updates are cheap (a counter, a histogram
//! record) and the line is redrawn at most every 200 ms; the recorder calls
//! it per finished request without slowing down.

use std::collections::VecDeque;
use std::io::IsTerminal;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Finished requests inside this window give the current rate.
const RATE_WINDOW: Duration = Duration::from_secs(5);
const REDRAW: Duration = Duration::from_millis(200);

struct State {
    planned: u64,
    done: u64,
    errors: u64,
    phase: String,
    /// TTFT of the current phase, µs.
    ttft: Histogram<u64>,
    recent: VecDeque<Instant>,
    last_draw: Option<Instant>,
}

/// Cloneable handle; every clone drives the same line.
#[derive(Clone)]
pub struct Progress {
    bar: Option<ProgressBar>,
    state: Arc<Mutex<State>>,
}

impl Progress {
    /// `planned_hint` is the number of requests expected (0 if unknown; it
    /// can grow later with [`Progress::set_planned`]).
    pub fn new(planned_hint: u64, quiet: bool) -> Progress {
        let visible = !quiet && std::io::stderr().is_terminal();
        Self::with_target(planned_hint, visible.then(ProgressDrawTarget::stderr))
    }

    fn with_target(planned_hint: u64, target: Option<ProgressDrawTarget>) -> Progress {
        let bar = target.map(|t| {
            let b = ProgressBar::with_draw_target(Some(planned_hint), t);
            b.set_style(
                ProgressStyle::with_template(
                    "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} {msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            b.enable_steady_tick(Duration::from_millis(250));
            b
        });
        let mut ttft = Histogram::new_with_bounds(1, 3_600_000_000, 2)
            .unwrap_or_else(|_| Histogram::new(2).expect("2 significant digits are valid"));
        ttft.auto(true);
        Progress {
            bar,
            state: Arc::new(Mutex::new(State {
                planned: planned_hint,
                done: 0,
                errors: 0,
                phase: String::new(),
                ttft,
                recent: VecDeque::new(),
                last_draw: None,
            })),
        }
    }

    /// A progress that never draws (tests, library use).
    pub fn hidden() -> Progress {
        Self::with_target(0, None)
    }

    pub fn is_visible(&self) -> bool {
        self.bar.is_some()
    }

    pub fn set_planned(&self, planned: u64) {
        if let Ok(mut s) = self.state.lock() {
            s.planned = planned;
        }
        if let Some(b) = &self.bar {
            b.set_length(planned);
        }
    }

    /// A new phase: TTFT percentiles restart for it.
    pub fn set_phase(&self, name: &str) {
        if let Ok(mut s) = self.state.lock() {
            s.phase = name.to_owned();
            s.ttft.reset();
            s.last_draw = None;
            self.draw(&mut s, Instant::now());
        }
    }

    /// One request finished.
    pub fn on_finished(&self, ok: bool, ttft_ms: Option<f64>) {
        let now = Instant::now();
        let Ok(mut s) = self.state.lock() else {
            return;
        };
        s.done += 1;
        if !ok {
            s.errors += 1;
        }
        if let Some(t) = ttft_ms.filter(|t| t.is_finite() && *t >= 0.0) {
            let _ = s.ttft.record(((t * 1000.0) as u64).max(1));
        }
        s.recent.push_back(now);
        while s
            .recent
            .front()
            .is_some_and(|t| now.duration_since(*t) > RATE_WINDOW)
        {
            s.recent.pop_front();
        }
        if s.planned < s.done {
            s.planned = s.done;
            if let Some(b) = &self.bar {
                b.set_length(s.done);
            }
        }
        if let Some(b) = &self.bar {
            b.set_position(s.done);
        }
        if s.last_draw.is_none_or(|t| now.duration_since(t) >= REDRAW) {
            self.draw(&mut s, now);
        }
    }

    fn draw(&self, s: &mut State, now: Instant) {
        s.last_draw = Some(now);
        if let Some(b) = &self.bar {
            b.set_message(message(s, now));
        }
    }

    /// The status line as text (what the bar shows after the counts).
    pub fn message(&self) -> String {
        self.state
            .lock()
            .map(|s| message(&s, Instant::now()))
            .unwrap_or_default()
    }

    /// Clears the line; the run's own summary follows.
    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

fn message(s: &State, now: Instant) -> String {
    let rate = match (s.recent.front(), s.recent.len()) {
        (Some(first), n) if n >= 2 => {
            let span = now.duration_since(*first).as_secs_f64().max(1e-3);
            n as f64 / span
        }
        _ => 0.0,
    };
    let ttft = if s.ttft.is_empty() {
        "ttft -".to_owned()
    } else {
        format!(
            "ttft p50 {:.1} ms p99 {:.1} ms",
            s.ttft.value_at_quantile(0.5) as f64 / 1000.0,
            s.ttft.value_at_quantile(0.99) as f64 / 1000.0
        )
    };
    let phase = if s.phase.is_empty() {
        String::new()
    } else {
        format!("[{}] ", s.phase)
    };
    format!("{phase}{rate:.1} req/s  {ttft}  errors {}", s.errors)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_rates_and_percentiles() {
        let p = Progress::hidden();
        assert!(!p.is_visible());
        p.set_phase("main");
        for i in 0..100 {
            p.on_finished(i % 10 != 0, Some(f64::from(i + 1)));
        }
        let m = p.message();
        assert!(m.starts_with("[main] "), "{m}");
        assert!(m.contains("errors 10"), "{m}");
        assert!(m.contains("ttft p50 50"), "{m}");
        assert!(m.contains("p99 99"), "{m}");
        p.set_phase("replay");
        assert!(p.message().contains("ttft -"));
        p.finish();
    }

    #[test]
    fn quiet_or_not_a_terminal_is_hidden() {
        assert!(!Progress::new(10, true).is_visible());
        // Test harnesses capture stderr, so it is not a terminal here.
        if !std::io::stderr().is_terminal() {
            assert!(!Progress::new(10, false).is_visible());
        }
    }
}
