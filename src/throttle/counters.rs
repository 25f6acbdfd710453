//! What the throttle counts for the run summary: requests sent, retries,
//! 429s and other transient errors, and requests per endpoint (to name the
//! busiest endpoint and how much of the wall time it needed).
//!
//! Plain counters and the arithmetic on their snapshots; no waiting here.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::routes::Route;

/// Counters for the run summary.
#[derive(Debug, Default)]
pub struct Counters {
    pub requests: AtomicU64,
    pub retries: AtomicU64,
    pub rate_limited: AtomicU64,
    pub transient_errors: AtomicU64,
}

impl Counters {
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> CounterSnapshot {
        CounterSnapshot {
            requests: self.requests.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
            rate_limited: self.rate_limited.load(Ordering::Relaxed),
            transient_errors: self.transient_errors.load(Ordering::Relaxed),
        }
    }
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

/// Requests sent per endpoint at one instant.
pub type RouteCounts = BTreeMap<Route, u64>;

/// One endpoint's share of a run: the requests it sent and the time they
/// need at its rate (the run cannot be shorter than its busiest endpoint's).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EndpointLoad {
    pub route: Route,
    pub requests: u64,
    /// The endpoint's rate at the end of the run (requests per second).
    pub rate: f64,
}

impl EndpointLoad {
    /// `requests / rate`; zero when the endpoint was not paced.
    pub fn busy(&self) -> Duration {
        if self.rate.is_finite() && self.rate > 0.0 {
            Duration::from_secs_f64(self.requests as f64 / self.rate)
        } else {
            Duration::ZERO
        }
    }

    /// The endpoint that needed the most time between `before` and `now`.
    pub fn busiest(before: &RouteCounts, now: &[(Route, u64, f64)]) -> Option<EndpointLoad> {
        now.iter()
            .map(|&(route, n, rate)| EndpointLoad {
                route,
                requests: n.saturating_sub(before.get(&route).copied().unwrap_or(0)),
                rate,
            })
            .filter(|l| l.requests > 0)
            .max_by(|a, b| a.busy().cmp(&b.busy()).then(a.requests.cmp(&b.requests)))
    }

    /// One summary line: "busiest endpoint PUT /… : 400 requests at 50/s =
    /// 8.0 s, 91 % of the wall time".
    pub fn describe(&self, wall: Duration) -> String {
        let busy = self.busy();
        if busy.is_zero() {
            return format!("busiest endpoint {}: {} requests (unpaced)", self.route, self.requests);
        }
        let share = 100.0 * busy.as_secs_f64() / wall.as_secs_f64().max(1e-9);
        format!(
            "busiest endpoint {}: {} requests at {}/s = {:.1}s, {:.0} % of the wall time",
            self.route,
            self.requests,
            Rate(self.rate),
            busy.as_secs_f64(),
            share.min(100.0)
        )
    }
}

impl EndpointLoad {
    /// For `--json` summaries.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "endpoint": self.route.to_string(),
            "requests": self.requests,
            "rate": if self.rate.is_finite() { Some(self.rate) } else { None },
            "busy_seconds": self.busy().as_secs_f64(),
        })
    }
}

/// A rate printed without needless decimals.
struct Rate(f64);

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if (self.0 - self.0.round()).abs() < 0.05 {
            write!(f, "{:.0}", self.0)
        } else {
            write!(f, "{:.1}", self.0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routes;

    #[test]
    fn counters_since_an_earlier_snapshot() {
        let a = CounterSnapshot { requests: 10, retries: 2, rate_limited: 1, transient_errors: 3 };
        let b = CounterSnapshot { requests: 25, retries: 2, rate_limited: 4, transient_errors: 3 };
        assert_eq!(b.since(&a), CounterSnapshot { requests: 15, retries: 0, rate_limited: 3, transient_errors: 0 });
    }

    #[test]
    fn the_busiest_endpoint_is_the_one_needing_most_time() {
        let before: RouteCounts = [(routes::ADD_MEMBERS, 100)].into_iter().collect();
        let now = [(routes::ADD_MEMBERS, 700, 100.0), (routes::SET_PROPERTY, 400, 50.0), (routes::LIST_ORGS, 1, 100.0)];
        let b = EndpointLoad::busiest(&before, &now).unwrap();
        assert_eq!((b.route, b.requests), (routes::SET_PROPERTY, 400));
        assert_eq!(b.busy(), Duration::from_secs(8));
        let line = b.describe(Duration::from_secs(10));
        assert_eq!(
            line,
            "busiest endpoint PUT /organization/{id}/property/{key}: 400 requests at 50/s = 8.0s, 80 % of the wall time"
        );
        assert_eq!(EndpointLoad::busiest(&RouteCounts::new(), &[]), None);
    }
}
