//! The retry policy of one API call, as a pure function: (attempt, error,
//! jitter) → the delay before the next attempt, or give up.
//!
//! It lives beside the client that runs the retry loop; it never sleeps (the
//! client waits, through the throttle so that an abort ends the wait) and
//! knows nothing of pacing. 429s are transient like 5xx: their delay becomes
//! a pause of the 429's scope in the throttle.

use std::time::Duration;

use super::error::ErrorKind;

/// Retry knobs; see [`RetryPolicy::next_delay`].
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Retries after the first attempt (`--max-retries`).
    pub max_retries: u32,
    /// First backoff step for errors without a server hint.
    pub base: Duration,
    /// Ceiling of the exponential backoff.
    pub max_backoff: Duration,
    /// Ceiling applied to a server's `Retry-After` (a hostile or broken value
    /// must not park the run for hours).
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: 8,
            base: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            max_retry_after: Duration::from_secs(120),
        }
    }
}

impl RetryPolicy {
    /// The delay before the next attempt, or `None` to give up.
    ///
    /// `attempt` is the 1-based number of the attempt that just failed;
    /// `jitter` is a number in `[0, 1)` drawn by the caller. Transient errors
    /// are retried up to `max_retries` times with capped exponential backoff
    /// and "equal jitter" (half fixed, half random). A server hint
    /// (`Retry-After` / `X-RateLimit-Reset`) is a minimum: it is capped at
    /// `max_retry_after` and lengthened by up to 10 % jitter so that many
    /// clients told the same instant do not return in lockstep.
    pub fn next_delay(&self, attempt: u32, error: &ErrorKind, jitter: f64) -> Option<Duration> {
        if !error.is_transient() || attempt > self.max_retries {
            return None;
        }
        let jitter = jitter.clamp(0.0, 1.0);
        let exp = attempt.saturating_sub(1).min(20);
        let backoff = self.base.saturating_mul(1u32 << exp).min(self.max_backoff);
        let backoff = backoff.mul_f64(0.5 + 0.5 * jitter);
        match error.retry_after() {
            Some(hint) => {
                let hint = hint.min(self.max_retry_after);
                let hinted = hint + hint.mul_f64(0.1 * jitter);
                // A 429 with a hint of 0 still waits a little.
                Some(hinted.max(Duration::from_millis(50)))
            }
            None if error.is_rate_limited() => Some(backoff.max(self.base)),
            None => Some(backoff),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(s: u16, retry_after: Option<Duration>) -> ErrorKind {
        ErrorKind::Status { status: s, message: String::new(), retry_after }
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let p = RetryPolicy::default();
        let e = status(503, None);
        // jitter 1.0 = the full step
        assert_eq!(p.next_delay(1, &e, 1.0), Some(Duration::from_millis(500)));
        assert_eq!(p.next_delay(2, &e, 1.0), Some(Duration::from_millis(1000)));
        assert_eq!(p.next_delay(3, &e, 1.0), Some(Duration::from_millis(2000)));
        assert_eq!(p.next_delay(8, &e, 1.0), Some(Duration::from_secs(30)));
        // jitter 0 = half the step
        assert_eq!(p.next_delay(2, &e, 0.0), Some(Duration::from_millis(500)));
    }

    #[test]
    fn gives_up_after_max_retries_and_never_retries_other_4xx() {
        let p = RetryPolicy { max_retries: 3, ..RetryPolicy::default() };
        let e = ErrorKind::Timeout(Duration::from_secs(1));
        assert!(p.next_delay(3, &e, 0.5).is_some());
        assert_eq!(p.next_delay(4, &e, 0.5), None);
        for s in [400, 401, 403, 404, 409] {
            assert_eq!(p.next_delay(1, &status(s, None), 0.5), None, "{s}");
        }
        let zero = RetryPolicy { max_retries: 0, ..RetryPolicy::default() };
        assert_eq!(zero.next_delay(1, &status(503, None), 0.5), None);
    }

    #[test]
    fn retry_after_is_a_minimum_capped_and_jittered() {
        let p = RetryPolicy::default();
        let e = status(429, Some(Duration::from_secs(10)));
        assert_eq!(p.next_delay(1, &e, 0.0), Some(Duration::from_secs(10)));
        assert_eq!(p.next_delay(1, &e, 1.0), Some(Duration::from_secs(11)));
        let huge = status(429, Some(Duration::from_secs(86_400)));
        assert_eq!(p.next_delay(1, &huge, 0.0), Some(Duration::from_secs(120)));
        // 503 with Retry-After is honoured too
        let busy = status(503, Some(Duration::from_secs(2)));
        assert_eq!(p.next_delay(5, &busy, 0.0), Some(Duration::from_secs(2)));
        // 429 without any hint backs off, at least `base`
        let bare = status(429, None);
        assert_eq!(p.next_delay(1, &bare, 0.0), Some(Duration::from_millis(500)));
        assert_eq!(p.next_delay(3, &bare, 1.0), Some(Duration::from_secs(2)));
    }
}
