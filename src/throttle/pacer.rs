//! One pacer: requests leave one at a time, `1 / rate` apart, in arrival
//! order, and never while a pause holds.
//!
//! Waiters queue on a fair (FIFO) async mutex; only the one at the head
//! sleeps on a timer, so a rate or a pause that changes while requests wait
//! applies to the very next request (nothing is booked ahead at an old rate).
//! A wait ends early when the run is cancelled. It knows nothing of routes or
//! of how the rate is chosen: the caller passes both as closures.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How early a request may leave before its exact slot, so that a timer
/// wake-up a little late (tokio's timer rounds up to the millisecond) does
/// not cost throughput. The long-run rate is
/// exact: `next` advances one interval per request.
pub const EARLY: Duration = Duration::from_millis(5);

/// The run was cancelled while waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cancelled;

#[derive(Debug)]
pub struct Pacer {
    turn: tokio::sync::Mutex<()>,
    next: Mutex<Option<Instant>>,
}

impl Default for Pacer {
    fn default() -> Self {
        Pacer { turn: tokio::sync::Mutex::new(()), next: Mutex::new(None) }
    }
}

impl Pacer {
    /// Wait for this pacer's next slot. `rate(now)` is read when the slot
    /// is taken (infinite = no spacing); `hold()` is the instant before which
    /// nothing may leave (a pause), re-read after every wake-up.
    pub async fn take(
        &self,
        mut rate: impl FnMut(Instant) -> f64,
        hold: impl Fn() -> Instant,
        cancel: &CancellationToken,
    ) -> Result<(), Cancelled> {
        let _turn = tokio::select! {
            biased;
            _ = cancel.cancelled() => return Err(Cancelled),
            turn = self.turn.lock() => turn,
        };
        loop {
            if cancel.is_cancelled() {
                return Err(Cancelled);
            }
            let now = Instant::now();
            let next = self.next.lock().expect("pacer lock").unwrap_or(now);
            let hold = hold();
            let due = next.max(hold);
            // Early for a rate slot, never for a pause (a Retry-After is a minimum).
            let leave = next.checked_sub(EARLY).unwrap_or(now).max(hold);
            if leave > now {
                tokio::select! {
                    biased;
                    _ = cancel.cancelled() => return Err(Cancelled),
                    _ = tokio::time::sleep_until(leave) => continue,
                }
            }
            let r = rate(now);
            let interval = if r.is_finite() && r > 0.0 { Duration::from_secs_f64(1.0 / r) } else { Duration::ZERO };
            *self.next.lock().expect("pacer lock") = Some(due.max(now) + interval);
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test(start_paused = true)]
    async fn spaces_requests_at_the_rate_and_honours_a_hold() {
        let p = Pacer::default();
        let cancel = CancellationToken::new();
        let start = Instant::now();
        for _ in 0..5 {
            p.take(|_| 10.0, || start, &cancel).await.unwrap();
        }
        // The 5th leaves 400 ms after the first (EARLY at most sooner).
        let e = start.elapsed();
        assert!(e >= Duration::from_millis(400) - EARLY && e <= Duration::from_millis(400), "{e:?}");
        let hold = Instant::now() + Duration::from_secs(3);
        p.take(|_| 10.0, || hold, &cancel).await.unwrap();
        assert!(Instant::now() >= hold, "a pause is never cut short");
        // After one more (due 100 ms after the last at 10/s), 1,000 more at
        // 100/s take 10 s.
        p.take(|_| 100.0, || hold, &cancel).await.unwrap();
        let start = Instant::now();
        for _ in 0..1000 {
            p.take(|_| 100.0, || start, &cancel).await.unwrap();
        }
        let e = start.elapsed();
        assert!(e >= Duration::from_millis(9990) - EARLY && e <= Duration::from_millis(10_000), "{e:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn cancelling_ends_the_wait_of_the_head_and_of_the_queue() {
        let p = Arc::new(Pacer::default());
        let cancel = CancellationToken::new();
        let far = Instant::now() + Duration::from_secs(3600);
        let waiters: Vec<_> = (0..3)
            .map(|_| {
                let (p, c) = (p.clone(), cancel.clone());
                tokio::spawn(async move { p.take(|_| 1.0, || far, &c).await })
            })
            .collect();
        tokio::time::sleep(Duration::from_secs(1)).await;
        cancel.cancel();
        for w in waiters {
            assert_eq!(w.await.unwrap(), Err(Cancelled));
        }
        assert!(Instant::now() < far);
    }
}
