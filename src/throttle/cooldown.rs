//! The adaptive policy of one pacing scope (an endpoint × method, or the
//! whole site): what rate to send at, learned from what the site says.
//!
//! Pure state driven by the caller's clock (`now` is passed in), so it is
//! unit-tested without sleeping. It owns the rules, not the waiting:
//! - start at the scope's default (Jira's documented limit for the method, or
//!   no limit for the site as a whole unless `--rate` sets one);
//! - `X-RateLimit-Limit`, when the site states it, is the rate (the site's
//!   word beats any guess, up or down); `--rate` still caps it;
//! - a 429 without a stated limit sets the rate to what the site *accepted*
//!   just before it (successes per second since the last pause), rather than
//!   a blind multiplicative step, so one 429 is usually enough to converge;
//! - `X-RateLimit-NearLimit: true` slows the scope by 5 %, at most once a
//!   second, before a 429 happens;
//! - afterwards the rate probes back up by 1 % of its cap per second, never
//!   above the stated limit (or, unstated, the default).
//!
//! Answers that arrive before `epoch_end` belong to the same event (the
//! requests already in flight when the first 429 came) and change nothing.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

/// How far back successes count towards the accepted rate.
const WINDOW: Duration = Duration::from_secs(1);
/// The shortest window an accepted rate is measured over.
const MIN_WINDOW: Duration = Duration::from_millis(100);
/// Slow-down on `X-RateLimit-NearLimit`.
const NEAR_LIMIT_FACTOR: f64 = 0.95;
/// Probe speed: this share of the cap per second.
const PROBE_PER_SEC: f64 = 0.01;
/// Answers within this time after a pause ends still belong to it.
const SETTLE: Duration = Duration::from_millis(500);

/// The rate control of one scope.
#[derive(Debug, Clone)]
pub struct Adaptive {
    /// Current rate (requests per second); `f64::INFINITY` = unpaced.
    rate: f64,
    /// Where the rate starts and, with no stated limit, the probe's cap.
    default: f64,
    /// Hard ceiling (`--rate` for the site scope).
    max: f64,
    /// Lowest rate a cut may reach.
    min: f64,
    /// The limit the site stated (`X-RateLimit-Limit`).
    stated: Option<f64>,
    /// Last time the probe raised the rate.
    last_probe: Instant,
    /// Events before this instant belong to the previous one.
    epoch_end: Instant,
    /// Start of the current accepted-rate window (after the last pause).
    resumed: Instant,
    /// When recent successes arrived (within `WINDOW`).
    accepted: VecDeque<Instant>,
}

impl Adaptive {
    pub fn new(default: f64, max: f64, now: Instant) -> Adaptive {
        let max = if max > 0.0 { max } else { f64::INFINITY };
        let default = default.min(max);
        Adaptive {
            rate: default,
            default,
            max,
            min: (default / 100.0).clamp(0.05, 1.0),
            stated: None,
            last_probe: now,
            epoch_end: now,
            resumed: now,
            accepted: VecDeque::new(),
        }
    }

    /// The rate to pace at now, after any probing due.
    pub fn rate(&mut self, now: Instant) -> f64 {
        let cap = self.stated.unwrap_or(self.default).min(self.max);
        if now < self.epoch_end {
            return self.rate;
        }
        if self.rate >= cap {
            self.last_probe = now;
            self.rate = cap;
            return self.rate;
        }
        let dt = now.saturating_duration_since(self.last_probe).as_secs_f64();
        self.last_probe = now;
        self.rate = (self.rate + PROBE_PER_SEC * cap * dt).min(cap);
        self.rate
    }

    /// The current rate without probing (for reports).
    pub fn current(&self) -> f64 {
        self.rate
    }

    /// The limit the site stated, if it did.
    pub fn stated(&self) -> Option<f64> {
        self.stated
    }

    /// A stated `X-RateLimit-Limit` (any answer).
    pub fn on_stated_limit(&mut self, limit: f64, now: Instant) {
        if !(limit.is_finite() && limit > 0.0) || self.stated == Some(limit) {
            return;
        }
        self.stated = Some(limit);
        self.rate = limit.min(self.max);
        self.last_probe = now;
    }

    /// An accepted answer (anything but a 429).
    pub fn on_accepted(&mut self, now: Instant, near_limit: bool) {
        self.accepted.push_back(now);
        while self.accepted.front().is_some_and(|t| now.saturating_duration_since(*t) > WINDOW) {
            self.accepted.pop_front();
        }
        if near_limit && now >= self.epoch_end && self.rate.is_finite() {
            self.rate = (self.rate * NEAR_LIMIT_FACTOR).max(self.min);
            self.epoch_end = now + WINDOW;
            self.last_probe = self.epoch_end;
        }
    }

    /// What the site accepted per second since the last pause (at most the
    /// last `WINDOW`).
    pub fn accepted_rate(&self, now: Instant) -> Option<f64> {
        let from = self.resumed.max(now.checked_sub(WINDOW).unwrap_or(self.resumed));
        let span = now.saturating_duration_since(from).max(MIN_WINDOW);
        let n = self.accepted.iter().filter(|t| **t >= from).count();
        (n > 0).then(|| n as f64 / span.as_secs_f64())
    }

    /// A 429 of this scope; traffic resumes at `resume`. Returns whether it
    /// changed the rate (the first 429 of an event does).
    pub fn on_rate_limited(&mut self, now: Instant, resume: Instant, stated: Option<f64>) -> bool {
        if now < self.epoch_end {
            return false;
        }
        let learned = match stated.filter(|l| l.is_finite() && *l > 0.0) {
            Some(limit) => {
                self.stated = Some(limit);
                // Already at the stated limit and still refused: the budget
                // is shared with someone else; take what was accepted.
                if self.rate > limit * 1.01 {
                    limit
                } else {
                    self.accepted_rate(now).unwrap_or(limit * 0.9).min(limit * 0.95)
                }
            }
            None => match self.accepted_rate(now) {
                Some(a) if a < self.rate => a,
                _ if self.rate.is_finite() => self.rate * 0.9,
                _ => self.accepted_rate(now).unwrap_or(self.default),
            },
        };
        self.rate = learned.clamp(self.min, self.max);
        self.epoch_end = resume + SETTLE;
        self.resumed = resume;
        self.last_probe = self.epoch_end;
        self.accepted.clear();
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    #[tokio::test(start_paused = true)]
    async fn starts_at_the_default_and_never_probes_above_it_unasked() {
        let t0 = Instant::now();
        let mut a = Adaptive::new(50.0, f64::INFINITY, t0);
        assert_eq!(a.rate(at(t0, 60_000)), 50.0);
        let mut capped = Adaptive::new(100.0, 20.0, t0);
        assert_eq!(capped.rate(t0), 20.0, "--rate caps the default");
    }

    #[tokio::test(start_paused = true)]
    async fn a_stated_limit_is_the_rate_up_or_down_but_never_above_the_ceiling() {
        let t0 = Instant::now();
        let mut a = Adaptive::new(100.0, f64::INFINITY, t0);
        a.on_stated_limit(30.0, t0);
        assert_eq!(a.rate(t0), 30.0);
        a.on_stated_limit(400.0, t0);
        assert_eq!(a.rate(t0), 400.0);
        let mut c = Adaptive::new(100.0, 250.0, t0);
        c.on_stated_limit(400.0, t0);
        assert_eq!(c.rate(t0), 250.0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_429_without_a_limit_learns_the_accepted_rate_once_per_event() {
        let t0 = Instant::now();
        let mut a = Adaptive::new(100.0, f64::INFINITY, t0);
        // 40 successes in the first 800 ms: the site took 50/s.
        for i in 0..40 {
            a.on_accepted(at(t0, i * 20), false);
        }
        let now = at(t0, 800);
        assert!(a.on_rate_limited(now, at(t0, 1800), None));
        assert!((a.rate(now) - 50.0).abs() < 1e-9, "{}", a.rate(now));
        // The in-flight requests' 429s belong to the same event.
        assert!(!a.on_rate_limited(at(t0, 900), at(t0, 1900), None));
        assert!((a.current() - 50.0).abs() < 1e-9);
    }

    #[tokio::test(start_paused = true)]
    async fn a_429_with_a_stated_limit_takes_it() {
        let t0 = Instant::now();
        let mut a = Adaptive::new(f64::INFINITY, 500.0, t0);
        assert_eq!(a.rate(t0), 500.0);
        a.on_rate_limited(at(t0, 100), at(t0, 1100), Some(100.0));
        assert_eq!(a.rate(at(t0, 100)), 100.0);
        assert_eq!(a.stated(), Some(100.0));
        // Refused again at the stated limit: a shared budget, take less.
        for i in 0..20 {
            a.on_accepted(at(t0, 1700 + i * 10), false);
        }
        a.on_rate_limited(at(t0, 2000), at(t0, 3000), Some(100.0));
        assert!(a.current() <= 95.0, "{}", a.current());
    }

    #[tokio::test(start_paused = true)]
    async fn near_limit_slows_a_little_then_the_rate_probes_back() {
        let t0 = Instant::now();
        let mut a = Adaptive::new(100.0, f64::INFINITY, t0);
        a.on_accepted(t0, true);
        assert!((a.rate(t0) - 95.0).abs() < 1e-9);
        // A second warning within the second changes nothing.
        a.on_accepted(at(t0, 500), true);
        assert!((a.current() - 95.0).abs() < 1e-9);
        // 1 % of the cap per second: 5 more seconds back to 100.
        assert!((a.rate(at(t0, 3000)) - 97.0).abs() < 1e-6, "{}", a.current());
        assert_eq!(a.rate(at(t0, 10_000)), 100.0);
    }

    #[tokio::test(start_paused = true)]
    async fn probing_waits_for_the_pause_to_settle() {
        let t0 = Instant::now();
        let mut a = Adaptive::new(100.0, f64::INFINITY, t0);
        a.on_rate_limited(t0, at(t0, 2000), None);
        let cut = a.current();
        assert!(cut < 100.0);
        assert_eq!(a.rate(at(t0, 2400)), cut, "no probing before the pause settles");
        assert!(a.rate(at(t0, 4500)) > cut);
    }
}
