//! Sub-millisecond sleeps for the scheduler.
//!
//! tokio's timer wheel has 1 ms granularity, so a send due in 0.3 ms would go
//! out up to a millisecond late; spinning instead burns a core at any rate
//! above 1,000 requests/s. One OS thread waits on a futex with a timeout
//! (hrtimer precision, ~50 µs slack) and wakes the scheduler through a
//! oneshot: precise and nearly free.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::mpsc;
use std::time::Instant;

use tokio::sync::oneshot;

struct Entry(Instant, u64, oneshot::Sender<()>);

impl PartialEq for Entry {
    fn eq(&self, o: &Self) -> bool {
        (self.0, self.1) == (o.0, o.1)
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Entry {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.0, self.1).cmp(&(o.0, o.1))
    }
}

#[derive(Clone)]
pub struct PreciseTimer {
    tx: mpsc::Sender<(Instant, oneshot::Sender<()>)>,
}

impl PreciseTimer {
    /// Starts the timer thread; it ends when every handle is dropped.
    pub fn new() -> Self {
        let (tx, rx) = mpsc::channel::<(Instant, oneshot::Sender<()>)>();
        std::thread::Builder::new()
            .name("precise-timer".into())
            .spawn(move || {
                let mut heap: BinaryHeap<Reverse<Entry>> = BinaryHeap::new();
                let mut n = 0u64;
                loop {
                    let next = match heap.peek() {
                        None => rx.recv().ok(),
                        Some(Reverse(Entry(due, ..))) => {
                            let now = Instant::now();
                            if *due <= now {
                                None
                            } else {
                                match rx.recv_timeout(*due - now) {
                                    Ok(v) => Some(v),
                                    Err(mpsc::RecvTimeoutError::Timeout) => None,
                                    Err(mpsc::RecvTimeoutError::Disconnected) => return,
                                }
                            }
                        }
                    };
                    match next {
                        Some((due, tx)) => {
                            n += 1;
                            heap.push(Reverse(Entry(due, n, tx)));
                        }
                        None if heap.is_empty() => return,
                        None => {}
                    }
                    let now = Instant::now();
                    while heap.peek().is_some_and(|Reverse(e)| e.0 <= now) {
                        if let Some(Reverse(Entry(_, _, tx))) = heap.pop() {
                            let _ = tx.send(());
                        }
                    }
                }
            })
            .expect("spawning the timer thread");
        PreciseTimer { tx }
    }

    /// Completes at `due` (or at once if it has passed).
    pub async fn sleep_until(&self, due: Instant) {
        if due <= Instant::now() {
            return;
        }
        let (tx, rx) = oneshot::channel();
        if self.tx.send((due, tx)).is_ok() {
            let _ = rx.await;
        }
    }
}

impl Default for PreciseTimer {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn wakes_at_or_after_the_deadline_in_order() {
        let t = PreciseTimer::new();
        let start = Instant::now();
        let a = t.sleep_until(start + Duration::from_millis(3));
        let b = t.sleep_until(start + Duration::from_millis(1));
        tokio::join!(a, b);
        assert!(start.elapsed() >= Duration::from_millis(3));
        // A deadline in the past returns at once.
        t.sleep_until(start).await;
    }
}
