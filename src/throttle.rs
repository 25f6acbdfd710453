//! The one shared place every request passes through: the rate pacer, the
//! concurrency cap, the cooldown after a 429, the adaptive rate, the abort
//! switch and the request counters; plus the retry policy as a pure function.
//!
//! It owns *when* a request may go, never *what* it is: it knows nothing of
//! URLs, CSV or progress bars. The retry policy is pure (attempt, error,
//! jitter) → delay so it is unit-tested without clocks; sleeping happens in
//! [`Throttle::acquire`] and in the API client's retry loop.
//!
//! Why not `governor`: its quota is fixed when the limiter is built, and this
//! tool must lower its rate on a 429 and recover it slowly (a `--rate` above the
//! site's real limit has to converge without a storm of 429s). The pacer below
//! is a GCRA with a burst of one whose interval can change at run time.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::api::error::ErrorKind;

/// How early a request may start before its exact slot (see `acquire`).
const BURST: Duration = Duration::from_millis(20);

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

/// Counters for the run summary.
#[derive(Debug, Default)]
pub struct Counters {
    pub requests: AtomicU64,
    pub retries: AtomicU64,
    pub rate_limited: AtomicU64,
    pub transient_errors: AtomicU64,
}

/// A snapshot of [`Counters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CounterSnapshot {
    pub requests: u64,
    pub retries: u64,
    pub rate_limited: u64,
    pub transient_errors: u64,
}

impl CounterSnapshot {
    /// What was counted since `earlier` (one run of a shared client).
    pub fn since(&self, earlier: &CounterSnapshot) -> CounterSnapshot {
        CounterSnapshot {
            requests: self.requests.saturating_sub(earlier.requests),
            retries: self.retries.saturating_sub(earlier.retries),
            rate_limited: self.rate_limited.saturating_sub(earlier.rate_limited),
            transient_errors: self.transient_errors.saturating_sub(earlier.transient_errors),
        }
    }
}

/// Settings of the throttle.
#[derive(Debug, Clone)]
pub struct ThrottleConfig {
    /// Ceiling in requests per second (`--rate`).
    pub rate: f64,
    /// Requests in flight at most (`--concurrency`).
    pub concurrency: usize,
    /// Lowest rate the adaptive control may fall to.
    pub min_rate: f64,
}

#[derive(Debug)]
struct Pace {
    /// Earliest instant the next request may start.
    next: Instant,
    /// Current (adaptive) rate, ≤ the ceiling.
    rate: f64,
    /// Rate at which the last 429 arrived: recovery is quick below it and
    /// cautious above it.
    rate_at_429: f64,
    /// No request starts before this instant (shared 429 cooldown).
    cooldown_until: Instant,
    /// Last time the rate was raised.
    last_raise: Instant,
    /// A 429 that arrives before this instant belongs to the same burst as
    /// the previous one and does not cut the rate again.
    epoch_end: Instant,
    /// When traffic resumed after the last cooldown (the start of the run
    /// before any 429).
    resumed_at: Instant,
}

/// Shared by every worker of a run (wrap in `Arc`).
#[derive(Debug)]
pub struct Throttle {
    ceiling: f64,
    concurrency: usize,
    min_rate: f64,
    pace: Mutex<Pace>,
    permits: std::sync::Arc<Semaphore>,
    aborted: AtomicBool,
    abort_reason: Mutex<Option<String>>,
    pub counters: Counters,
}

/// Held while a request is in flight; dropping it frees a concurrency slot.
pub struct Permit {
    _permit: OwnedSemaphorePermit,
}

impl Throttle {
    pub fn new(cfg: &ThrottleConfig) -> Throttle {
        let ceiling = cfg.rate.max(0.001);
        let now = Instant::now();
        Throttle {
            ceiling,
            concurrency: cfg.concurrency.max(1),
            min_rate: cfg.min_rate.clamp(0.001, ceiling),
            pace: Mutex::new(Pace {
                next: now,
                rate: ceiling,
                rate_at_429: f64::INFINITY,
                cooldown_until: now,
                last_raise: now,
                epoch_end: now,
                resumed_at: now,
            }),
            permits: std::sync::Arc::new(Semaphore::new(cfg.concurrency.max(1))),
            aborted: AtomicBool::new(false),
            abort_reason: Mutex::new(None),
            counters: Counters::default(),
        }
    }

    /// Wait for a concurrency slot, the end of any cooldown and a rate slot.
    /// Fails once the run has been aborted.
    pub async fn acquire(&self) -> Result<Permit, ErrorKind> {
        let permit =
            self.permits.clone().acquire_owned().await.map_err(|_| ErrorKind::Aborted("throttle closed".into()))?;
        loop {
            self.check_aborted()?;
            let now = Instant::now();
            let (wait_until, granted) = {
                let mut p = self.pace.lock().expect("pace lock");
                if p.cooldown_until > now {
                    (p.cooldown_until, false)
                } else {
                    self.raise(&mut p, now);
                    // GCRA: `tat` is when this request is due at the exact
                    // rate; it may start up to BURST earlier, so that a few
                    // requests share one timer wake-up. The long-run rate is
                    // unchanged (`next` advances one interval per request).
                    let tat = p.next.max(now);
                    p.next = tat + Duration::from_secs_f64(1.0 / p.rate);
                    (tat.checked_sub(BURST).unwrap_or(now).max(now), true)
                }
            };
            if wait_until > now {
                tokio::time::sleep_until(wait_until).await;
            }
            if granted {
                // A cooldown that began while we waited for our slot wins.
                let cooling = self.pace.lock().expect("pace lock").cooldown_until > Instant::now();
                if cooling {
                    continue;
                }
                self.check_aborted()?;
                self.counters.requests.fetch_add(1, Ordering::Relaxed);
                return Ok(Permit { _permit: permit });
            }
        }
    }

    /// Additive recovery: quick up to 95 % of the rate that last met a 429,
    /// 2 %/s of probing above it, never above the ceiling.
    /// Recovery after a cut: back to 90 % of the rate that met the last 429
    /// with a 2 s time constant, then a slow linear probe (0.5 % of that rate
    /// per second) so that the bucket of a site just below our rate drains
    /// rarely; never above the ceiling.
    fn raise(&self, p: &mut Pace, now: Instant) {
        let dt = now.saturating_duration_since(p.last_raise).as_secs_f64();
        p.last_raise = now;
        if dt <= 0.0 || now < p.epoch_end || p.rate >= self.ceiling {
            return;
        }
        let knee = 0.9 * p.rate_at_429;
        let probe = 0.005 * p.rate_at_429.min(self.ceiling) * dt;
        let step = if p.rate < knee { ((knee - p.rate) * (1.0 - (-dt / 2.0).exp())).max(probe) } else { probe };
        p.rate = (p.rate + step).min(self.ceiling);
    }

    /// Record a failed attempt. A 429 pauses every worker for `delay`
    /// (cooldown) and cuts the rate once per burst of 429s.
    pub fn on_error(&self, kind: &ErrorKind, delay: Option<Duration>) {
        if kind.is_transient() {
            self.counters.transient_errors.fetch_add(1, Ordering::Relaxed);
        }
        if !kind.is_rate_limited() {
            return;
        }
        self.counters.rate_limited.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        let delay = delay.unwrap_or(Duration::from_secs(1));
        let mut p = self.pace.lock().expect("pace lock");
        p.cooldown_until = p.cooldown_until.max(now + delay);
        if now >= p.epoch_end {
            // A 429 soon after the last pause ended means the rate is still
            // far above the site's: halve it. Otherwise the probe just
            // crossed the limit: step down a little.
            let far_above = now.saturating_duration_since(p.resumed_at) < Duration::from_secs(2);
            p.rate_at_429 = p.rate;
            p.rate = (p.rate * if far_above { 0.5 } else { 0.85 }).max(self.min_rate);
            // 429s of requests already in flight belong to this burst.
            p.epoch_end = p.cooldown_until + Duration::from_millis(500);
            p.resumed_at = p.cooldown_until;
        }
        p.last_raise = p.epoch_end;
        p.next = p.next.max(p.cooldown_until);
    }

    /// Count a retry about to be made.
    pub fn on_retry(&self) {
        self.counters.retries.fetch_add(1, Ordering::Relaxed);
    }

    /// Stop the run: every later `acquire` fails with `Aborted(reason)`.
    pub fn abort(&self, reason: &str) {
        let mut r = self.abort_reason.lock().expect("abort lock");
        if r.is_none() {
            *r = Some(reason.to_string());
        }
        self.aborted.store(true, Ordering::SeqCst);
    }

    pub fn is_aborted(&self) -> bool {
        self.aborted.load(Ordering::SeqCst)
    }

    pub fn abort_reason(&self) -> Option<String> {
        self.abort_reason.lock().expect("abort lock").clone()
    }

    fn check_aborted(&self) -> Result<(), ErrorKind> {
        if self.is_aborted() {
            Err(ErrorKind::Aborted(self.abort_reason().unwrap_or_else(|| "run aborted".into())))
        } else {
            Ok(())
        }
    }

    /// The concurrency cap (`--concurrency`).
    pub fn concurrency(&self) -> usize {
        self.concurrency
    }

    /// The current adaptive rate (requests per second).
    pub fn current_rate(&self) -> f64 {
        self.pace.lock().expect("pace lock").rate
    }

    pub fn snapshot(&self) -> CounterSnapshot {
        CounterSnapshot {
            requests: self.counters.requests.load(Ordering::Relaxed),
            retries: self.counters.retries.load(Ordering::Relaxed),
            rate_limited: self.counters.rate_limited.load(Ordering::Relaxed),
            transient_errors: self.counters.transient_errors.load(Ordering::Relaxed),
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

    #[tokio::test(start_paused = true)]
    async fn pacer_spaces_requests_at_the_rate() {
        let t = Throttle::new(&ThrottleConfig { rate: 10.0, concurrency: 4, min_rate: 1.0 });
        let start = Instant::now();
        for _ in 0..5 {
            drop(t.acquire().await.unwrap());
        }
        // 5 requests at 10/s: the 5th is due 400 ms after the first and may
        // start BURST early.
        assert_eq!(start.elapsed(), Duration::from_millis(400) - BURST);
        assert_eq!(t.snapshot().requests, 5);
        // The long-run rate is exact: 1,000 more take 100 s.
        let start = Instant::now();
        for _ in 0..1000 {
            drop(t.acquire().await.unwrap());
        }
        let e = start.elapsed();
        assert!(e >= Duration::from_secs(100) - BURST && e <= Duration::from_secs(100), "{e:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_429_pauses_everyone_and_cuts_the_rate_once_per_burst() {
        let t = Throttle::new(&ThrottleConfig { rate: 100.0, concurrency: 8, min_rate: 1.0 });
        drop(t.acquire().await.unwrap());
        let e = status(429, Some(Duration::from_secs(2)));
        t.on_error(&e, Some(Duration::from_secs(2)));
        t.on_error(&e, Some(Duration::from_secs(2)));
        // Right at the start: far above the site's limit, so halved (once).
        assert!((t.current_rate() - 50.0).abs() < 1e-9, "{}", t.current_rate());
        let before = Instant::now();
        drop(t.acquire().await.unwrap());
        assert!(before.elapsed() >= Duration::from_secs(2));
        assert_eq!(t.snapshot().rate_limited, 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_429_long_after_the_last_pause_cuts_gently() {
        let t = Throttle::new(&ThrottleConfig { rate: 100.0, concurrency: 8, min_rate: 1.0 });
        tokio::time::sleep(Duration::from_secs(10)).await;
        t.on_error(&status(429, None), Some(Duration::from_secs(1)));
        assert!((t.current_rate() - 85.0).abs() < 1e-9, "{}", t.current_rate());
        // Another 429 within 2 s of resuming: still far above, halve.
        tokio::time::sleep(Duration::from_millis(2600)).await;
        t.on_error(&status(429, None), Some(Duration::from_secs(1)));
        assert!((t.current_rate() - 42.5).abs() < 1e-9, "{}", t.current_rate());
    }

    #[tokio::test(start_paused = true)]
    async fn rate_recovers_after_the_burst() {
        let t = Throttle::new(&ThrottleConfig { rate: 100.0, concurrency: 8, min_rate: 1.0 });
        t.on_error(&status(429, None), Some(Duration::from_millis(100)));
        assert!(t.current_rate() < 100.0);
        tokio::time::sleep(Duration::from_secs(30)).await;
        drop(t.acquire().await.unwrap());
        tokio::time::sleep(Duration::from_secs(30)).await;
        drop(t.acquire().await.unwrap());
        assert!(t.current_rate() > 94.0, "{}", t.current_rate());
    }

    #[test]
    fn counters_since_an_earlier_snapshot() {
        let a = CounterSnapshot { requests: 10, retries: 2, rate_limited: 1, transient_errors: 3 };
        let b = CounterSnapshot { requests: 25, retries: 2, rate_limited: 4, transient_errors: 3 };
        assert_eq!(b.since(&a), CounterSnapshot { requests: 15, retries: 0, rate_limited: 3, transient_errors: 0 });
    }

    #[tokio::test]
    async fn abort_stops_later_acquires() {
        let t = Throttle::new(&ThrottleConfig { rate: 1000.0, concurrency: 2, min_rate: 1.0 });
        t.abort("bad credentials");
        t.abort("second reason is ignored");
        match t.acquire().await {
            Err(ErrorKind::Aborted(r)) => assert_eq!(r, "bad credentials"),
            other => panic!("expected abort, got {:?}", other.is_ok()),
        }
    }
}
