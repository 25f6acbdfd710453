//! When a request may go: one pacer per endpoint × method (Jira's burst limit
//! is a token bucket per tenant × endpoint × method), an optional pacer for
//! the whole site (`--rate`, or a tenant quota learned from a 429), pauses
//! after 429s scoped like the site scoped them, the cap on requests in
//! flight, the cancellation of every wait, and the counters.
//!
//! It owns *when*, never *what*: it knows route templates as keys and nothing
//! of URLs, HTTP, CSV or progress bars, and it does not import the API client
//! (the client feeds it what a response said as plain values). The retry
//! policy lives beside the client (`api::retry`).
//!
//! Parts: [`pacer`] spaces requests of one scope, [`cooldown`] is the adaptive
//! policy of a scope (pure, clock passed in), [`inflight`] sizes and holds the
//! in-flight cap, [`counters`] counts.
//!
//! Why not `governor`: its GCRA quota is fixed when a limiter is built, while
//! every scope here changes its rate at run time (a stated limit, a 429, a
//! near-limit warning, the slow probe back), and it has no pause that a 429
//! extends for everyone waiting; rebuilding limiters on each change would
//! drop their state. The pacer is a GCRA too, with a rate read per request.
//! Cancellation is `tokio-util`'s `CancellationToken`: Ctrl-C and a fatal
//! 401/403 cancel it, and every wait here (pacer, pause, in-flight slot, the
//! client's backoff via [`Throttle::sleep`]) ends at once.

pub mod cooldown;
pub mod counters;
pub mod inflight;
pub mod pacer;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::routes::{Route, Verb};
use cooldown::Adaptive;
pub use counters::{CounterSnapshot, Counters, EndpointLoad, RouteCounts};
use inflight::{InFlight, Slot};
use pacer::Pacer;

/// An endpoint counts as busy (for sizing the in-flight cap) this long after
/// its last request.
const ACTIVE: Duration = Duration::from_secs(2);
/// Weight of a new latency sample in the moving average.
const LATENCY_ALPHA: f64 = 0.1;

/// Starting rate per method, requests per second.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MethodRates {
    pub get: f64,
    pub post: f64,
    pub put: f64,
    pub delete: f64,
}

impl MethodRates {
    /// Jira Cloud's documented burst defaults (shared by JSM).
    pub const JIRA: MethodRates = MethodRates { get: 100.0, post: 100.0, put: 50.0, delete: 50.0 };

    pub fn uniform(rate: f64) -> MethodRates {
        MethodRates { get: rate, post: rate, put: rate, delete: rate }
    }

    pub fn of(&self, verb: Verb) -> f64 {
        match verb {
            Verb::Get => self.get,
            Verb::Post => self.post,
            Verb::Put => self.put,
            Verb::Delete => self.delete,
        }
    }
}

impl Default for MethodRates {
    fn default() -> Self {
        MethodRates::JIRA
    }
}

/// Settings of the throttle.
#[derive(Debug, Clone, PartialEq)]
pub struct ThrottleConfig {
    /// Ceiling on the total rate (`--rate`); `None` = only the endpoints' own.
    pub ceiling: Option<f64>,
    /// Cap on requests in flight (`--concurrency`); `None` = Little's law.
    pub concurrency: Option<usize>,
    /// Where each endpoint's rate starts, by method.
    pub start: MethodRates,
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        ThrottleConfig { ceiling: None, concurrency: None, start: MethodRates::JIRA }
    }
}

/// Which requests a 429 speaks for (from `RateLimit-Reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// `jira-burst-based`: this endpoint × method only.
    Endpoint,
    /// A tenant or global quota, or no reason given: everything.
    Site,
}

/// What a response said about the rate limit.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Signal {
    /// `X-RateLimit-Limit`.
    pub limit: Option<f64>,
    /// `X-RateLimit-NearLimit: true`.
    pub near_limit: bool,
}

/// The run was stopped; the reason is the abort's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Aborted(pub String);

/// One pacing scope: its pacer, policy, pause and count.
#[derive(Debug)]
struct Lane {
    pacer: Pacer,
    adapt: Mutex<Adaptive>,
    pause: Mutex<Instant>,
    sent: AtomicU64,
    /// Milliseconds after the throttle's start of the last request.
    last_sent_ms: AtomicU64,
}

impl Lane {
    fn new(rate: f64, max: f64, now: Instant) -> Lane {
        Lane {
            pacer: Pacer::default(),
            adapt: Mutex::new(Adaptive::new(rate, max, now)),
            pause: Mutex::new(now),
            sent: AtomicU64::new(0),
            last_sent_ms: AtomicU64::new(0),
        }
    }
    fn adapt(&self) -> std::sync::MutexGuard<'_, Adaptive> {
        self.adapt.lock().expect("adaptive lock")
    }
    fn paused_until(&self) -> Instant {
        *self.pause.lock().expect("pause lock")
    }
    fn pause_until(&self, until: Instant) {
        let mut p = self.pause.lock().expect("pause lock");
        *p = (*p).max(until);
    }
}

/// Held while a request is in flight; dropping it frees the slot.
#[derive(Debug)]
pub struct Permit {
    _slot: Slot,
    /// When the request left (for its latency).
    pub sent_at: Instant,
}

/// Shared by every worker of a run (wrap in `Arc`).
#[derive(Debug)]
pub struct Throttle {
    start: MethodRates,
    created: Instant,
    lanes: Mutex<HashMap<Route, Arc<Lane>>>,
    site: Lane,
    inflight: Arc<InFlight>,
    /// (latency EWMA in seconds, last resize)
    latency: Mutex<(Option<f64>, Instant)>,
    cancel: CancellationToken,
    abort_reason: Mutex<Option<String>>,
    pub counters: Counters,
}

impl Throttle {
    pub fn new(cfg: &ThrottleConfig) -> Throttle {
        let now = Instant::now();
        let ceiling = cfg.ceiling.filter(|r| r.is_finite() && *r > 0.0).unwrap_or(f64::INFINITY);
        Throttle {
            start: cfg.start,
            created: now,
            lanes: Mutex::new(HashMap::new()),
            site: Lane::new(ceiling, ceiling, now),
            inflight: InFlight::new(cfg.concurrency),
            latency: Mutex::new((None, now)),
            cancel: CancellationToken::new(),
            abort_reason: Mutex::new(None),
            counters: Counters::default(),
        }
    }

    fn lane(&self, route: Route) -> Arc<Lane> {
        let mut lanes = self.lanes.lock().expect("lanes lock");
        lanes
            .entry(route)
            .or_insert_with(|| Arc::new(Lane::new(self.start.of(route.verb), f64::INFINITY, Instant::now())))
            .clone()
    }

    /// Wait for `route`'s pacer, the site's pacer and pauses, and an
    /// in-flight slot. Fails at once, and ends any wait, when the run is
    /// aborted. A request that gets a permit is counted as sent.
    pub async fn acquire(&self, route: Route) -> Result<Permit, Aborted> {
        self.check_aborted()?;
        let lane = self.lane(route);
        let site = &self.site;
        let hold = || lane.paused_until().max(site.paused_until());
        lane.pacer.take(|now| lane.adapt().rate(now), hold, &self.cancel).await.map_err(|_| self.aborted())?;
        if site.adapt().rate(Instant::now()).is_finite() {
            let hold = || site.paused_until();
            site.pacer.take(|now| site.adapt().rate(now), hold, &self.cancel).await.map_err(|_| self.aborted())?;
        }
        let slot = self.inflight.acquire(&self.cancel).await.map_err(|_| self.aborted())?;
        self.check_aborted()?;
        let now = Instant::now();
        Counters::bump(&self.counters.requests);
        lane.sent.fetch_add(1, Ordering::Relaxed);
        let ms = u64::try_from(now.saturating_duration_since(self.created).as_millis()).unwrap_or(u64::MAX);
        lane.last_sent_ms.store(ms, Ordering::Relaxed);
        Ok(Permit { _slot: slot, sent_at: now })
    }

    /// An answer other than a 429 to a request of `route` sent at `sent_at`.
    pub fn on_answer(&self, route: Route, sent_at: Instant, signal: Signal) {
        let now = Instant::now();
        let lane = self.lane(route);
        {
            let mut a = lane.adapt();
            if let Some(limit) = signal.limit {
                a.on_stated_limit(limit, now);
            }
            a.on_accepted(now, signal.near_limit);
        }
        self.site.adapt().on_accepted(now, false);
        self.observe_latency(now.saturating_duration_since(sent_at));
    }

    /// A 429 to a request of `route`: pause its scope until `delay` from
    /// now and, once per event, set the scope's rate from what the site said
    /// or accepted.
    pub fn on_rate_limited(&self, route: Route, sent_at: Instant, scope: Scope, delay: Duration, signal: Signal) {
        let now = Instant::now();
        Counters::bump(&self.counters.rate_limited);
        Counters::bump(&self.counters.transient_errors);
        let lane = self.lane(route);
        let until = now + delay;
        let cut = match scope {
            Scope::Endpoint => {
                lane.pause_until(until);
                lane.adapt().on_rate_limited(now, until, signal.limit)
            }
            Scope::Site => {
                self.site.pause_until(until);
                self.site.adapt().on_rate_limited(now, until, signal.limit)
            }
        };
        if cut {
            tracing::debug!(%route, ?scope, ?delay, rate = self.rate_of(scope, route), "429: pausing and slowing down");
        }
        self.observe_latency(now.saturating_duration_since(sent_at));
    }

    /// Another transient failure (5xx, timeout, dropped connection).
    pub fn on_transient(&self) {
        Counters::bump(&self.counters.transient_errors);
    }

    /// Count a retry about to be made.
    pub fn on_retry(&self) {
        Counters::bump(&self.counters.retries);
    }

    fn rate_of(&self, scope: Scope, route: Route) -> f64 {
        match scope {
            Scope::Endpoint => self.lane(route).adapt().current(),
            Scope::Site => self.site.adapt().current(),
        }
    }

    /// Fold a latency sample in and, at most every 50 ms, resize an
    /// automatic in-flight cap: Σ rates of the busy endpoints (at most the
    /// site's rate) × latency × headroom.
    fn observe_latency(&self, sample: Duration) {
        let now = Instant::now();
        let latency = {
            let mut l = self.latency.lock().expect("latency lock");
            let s = sample.as_secs_f64();
            let avg = l.0.map_or(s, |avg| avg + LATENCY_ALPHA * (s - avg));
            l.0 = Some(avg);
            if now.saturating_duration_since(l.1) < Duration::from_millis(50) {
                return;
            }
            l.1 = now;
            avg
        };
        let since_start = now.saturating_duration_since(self.created);
        let lanes: Vec<Arc<Lane>> = self.lanes.lock().expect("lanes lock").values().cloned().collect();
        let demand: f64 = lanes
            .iter()
            .filter(|l| {
                let last = Duration::from_millis(l.last_sent_ms.load(Ordering::Relaxed));
                since_start.saturating_sub(last) <= ACTIVE
            })
            .map(|l| l.adapt().current())
            .sum();
        let demand = demand.min(self.site.adapt().current());
        self.inflight.resize(inflight::littles_law(demand, latency));
    }

    /// Sleep `d` (a retry's backoff) unless the run is aborted first.
    pub async fn sleep(&self, d: Duration) -> Result<(), Aborted> {
        tokio::select! {
            biased;
            _ = self.cancel.cancelled() => Err(self.aborted()),
            _ = tokio::time::sleep(d) => Ok(()),
        }
    }

    /// Stop the run: every wait ends and every later `acquire` fails with
    /// `Aborted(reason)`. The first reason wins.
    pub fn abort(&self, reason: &str) {
        {
            let mut r = self.abort_reason.lock().expect("abort lock");
            if r.is_none() {
                *r = Some(reason.to_string());
            }
        }
        self.cancel.cancel();
    }

    pub fn is_aborted(&self) -> bool {
        self.cancel.is_cancelled()
    }

    pub fn abort_reason(&self) -> Option<String> {
        self.abort_reason.lock().expect("abort lock").clone()
    }

    fn aborted(&self) -> Aborted {
        Aborted(self.abort_reason().unwrap_or_else(|| "run aborted".into()))
    }

    fn check_aborted(&self) -> Result<(), Aborted> {
        if self.is_aborted() {
            Err(self.aborted())
        } else {
            Ok(())
        }
    }

    /// The most requests that can be in flight: `--concurrency`, or the
    /// automatic cap's ceiling. Pipelines size their queues by it.
    pub fn concurrency(&self) -> usize {
        self.inflight.max()
    }

    /// The in-flight cap now (Little's law, or `--concurrency`).
    pub fn in_flight_limit(&self) -> usize {
        self.inflight.limit()
    }

    /// The current rate of `route` (requests per second).
    pub fn current_rate(&self, route: Route) -> f64 {
        self.lane(route).adapt().current()
    }

    /// The current rate of the whole site (infinite when unpaced).
    pub fn site_rate(&self) -> f64 {
        self.site.adapt().current()
    }

    pub fn snapshot(&self) -> CounterSnapshot {
        self.counters.snapshot()
    }

    /// Requests sent per endpoint so far.
    pub fn route_counts(&self) -> RouteCounts {
        self.lanes.lock().expect("lanes lock").iter().map(|(r, l)| (*r, l.sent.load(Ordering::Relaxed))).collect()
    }

    /// The endpoint that needed the most time since `before`.
    pub fn busiest_since(&self, before: &RouteCounts) -> Option<EndpointLoad> {
        let lanes: Vec<(Route, Arc<Lane>)> =
            self.lanes.lock().expect("lanes lock").iter().map(|(r, l)| (*r, l.clone())).collect();
        let site = self.site.adapt().current();
        let now: Vec<(Route, u64, f64)> =
            lanes.iter().map(|(r, l)| (*r, l.sent.load(Ordering::Relaxed), l.adapt().current().min(site))).collect();
        EndpointLoad::busiest(before, &now)
    }
}

#[cfg(test)]
mod tests;
