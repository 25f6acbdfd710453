//! The circuit breaker: a site that has not been reachable at all for a
//! whole window ends the run instead of being retried for hours.
//!
//! Owns one fact shared by every call of a client — since when every attempt
//! has failed to connect (refused, reset, DNS, TLS) without a single answer
//! in between — and the verdict drawn from it. Any answer, even an error
//! status, closes the window: the site is there. It never sleeps, sends or
//! aborts anything itself; the client's retry loop asks it and acts.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Default window: an unreachable site ends a run within about 10 s.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(10);

/// What to do after an attempt that could not connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Retry, but no later than this instant (when the window closes), so
    /// that the verdict does not wait for a long backoff.
    RetryBy(Instant),
    /// Unreachable on every attempt for the whole window: stop the run.
    Trip,
}

#[derive(Debug)]
pub struct Breaker {
    window: Duration,
    /// The first connection failure since the last answer.
    since: Mutex<Option<Instant>>,
}

impl Breaker {
    pub fn new(window: Duration) -> Breaker {
        Breaker { window, since: Mutex::new(None) }
    }

    pub fn window(&self) -> Duration {
        self.window
    }

    /// The site answered (any status): it is reachable.
    pub fn answered(&self) {
        *self.since.lock().expect("breaker lock") = None;
    }

    /// An attempt at `now` could not connect.
    pub fn unreachable(&self, now: Instant) -> Verdict {
        let mut since = self.since.lock().expect("breaker lock");
        let first = *since.get_or_insert(now);
        if now.saturating_duration_since(first) >= self.window {
            Verdict::Trip
        } else {
            Verdict::RetryBy(first + self.window)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn trips_only_when_every_attempt_failed_for_the_whole_window() {
        let b = Breaker::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(b.unreachable(t0), Verdict::RetryBy(t0 + Duration::from_secs(10)));
        assert_eq!(b.unreachable(t0 + Duration::from_secs(9)), Verdict::RetryBy(t0 + Duration::from_secs(10)));
        // One answer in between restarts the window.
        b.answered();
        let t1 = t0 + Duration::from_secs(11);
        assert_eq!(b.unreachable(t1), Verdict::RetryBy(t1 + Duration::from_secs(10)));
        assert_eq!(b.unreachable(t1 + Duration::from_secs(10)), Verdict::Trip);
    }
}
