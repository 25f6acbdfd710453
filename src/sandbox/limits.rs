//! The sandbox's rate limits, modelled on Jira Cloud's: a token bucket per
//! endpoint × method (`RateLimit-Reason: jira-burst-based`; defaults GET and
//! POST 100, PUT and DELETE 50 requests/s), and the optional site-wide bucket
//! of `--rate-limit` standing for a tenant quota
//! (`RateLimit-Reason: jira-quota-tenant-based`).
//!
//! Owns the buckets and the rate-limit headers: a refusal is a 429 with
//! `Retry-After` (whole seconds, as Jira sends), `X-RateLimit-Limit`,
//! `-Remaining`, `-Reset` and `RateLimit-Reason`; an accepted request of a
//! limited endpoint carries `X-RateLimit-Limit`, `X-RateLimit-Remaining` and,
//! under 20 % of its bucket left, `X-RateLimit-NearLimit: true`. It knows
//! nothing of the site's data or of the other faults.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::error::ApiError;
use super::RateLimitHint;
use crate::routes::{Route, Verb};

/// Share of a bucket under which answers warn `X-RateLimit-NearLimit`.
const NEAR_LIMIT: f64 = 0.2;

/// Token bucket: capacity `max(1, ceil(rate / 5))` (a fifth of a second of
/// burst), refilled continuously at `rate` tokens per second. Reset whenever
/// the configured rate changes.
#[derive(Debug, Default)]
pub(crate) struct Bucket {
    rate: f64,
    tokens: f64,
    last: Option<Instant>,
}

impl Bucket {
    fn capacity(rate: f64) -> f64 {
        (rate / 5.0).ceil().max(1.0)
    }

    /// Takes one token and returns the share of the bucket left, or how
    /// long until a token is available.
    pub(crate) fn take(&mut self, rate: f64, now: Instant) -> Result<f64, Duration> {
        let capacity = Self::capacity(rate);
        match self.last {
            Some(last) if self.rate == rate => {
                let refill = now.saturating_duration_since(last).as_secs_f64() * rate;
                self.tokens = (self.tokens + refill).min(capacity);
            }
            _ => {
                self.rate = rate;
                self.tokens = capacity;
            }
        }
        self.last = Some(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(self.tokens / capacity)
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / rate))
        }
    }

    fn remaining(&self) -> u64 {
        self.tokens.max(0.0).floor() as u64
    }
}

/// Limits per endpoint × method: keys are a method (`"PUT"`) or a route
/// (`"PUT /organization/{id}/property/{key}"`, which wins over its method);
/// values are requests per second. Empty = no per-endpoint limit.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(transparent)]
pub struct EndpointLimits(pub BTreeMap<String, f64>);

impl EndpointLimits {
    /// Jira Cloud's documented burst defaults.
    pub fn jira() -> EndpointLimits {
        EndpointLimits(
            [("GET", 100.0), ("POST", 100.0), ("PUT", 50.0), ("DELETE", 50.0)]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
        )
    }

    /// `jira`, `off`, or `KEY=RPS,...` with a method or a route as key
    /// (`GET=100,PUT=50,PUT /organization/{id}/property/{key}=20`).
    pub fn parse(text: &str) -> Result<EndpointLimits, String> {
        match text.trim() {
            "jira" => return Ok(EndpointLimits::jira()),
            "off" | "none" | "" => return Ok(EndpointLimits::default()),
            _ => {}
        }
        let mut out = BTreeMap::new();
        for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (key, rate) = item.rsplit_once('=').ok_or_else(|| format!("{item:?} is not KEY=RPS"))?;
            let rate: f64 = rate.trim().parse().map_err(|_| format!("{item:?}: {rate:?} is not a number"))?;
            if !(rate.is_finite() && rate > 0.0) {
                return Err(format!("{item:?}: the rate must be positive"));
            }
            let key = key.trim();
            let known = match key.split_once(' ') {
                None => Verb::parse(key).map(|v| v.as_str().to_string()),
                Some((verb, path)) => Verb::parse(verb)
                    .and_then(|v| crate::routes::ALL.iter().find(|r| r.verb == v && r.path == path.trim()))
                    .map(Route::to_string),
            };
            let key = known.ok_or_else(|| format!("{key:?} is neither GET/POST/PUT/DELETE nor a known route"))?;
            out.insert(key, rate);
        }
        Ok(EndpointLimits(out))
    }

    /// The limit of `route`: its own, else its method's.
    pub fn of(&self, route: Route) -> Option<f64> {
        self.0
            .get(&route.to_string())
            .or_else(|| self.0.get(route.verb.as_str()))
            .copied()
            .filter(|r| r.is_finite() && *r > 0.0)
    }
}

/// What an accepted request of a limited endpoint tells the client.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Advice {
    limit: f64,
    remaining: u64,
    near: bool,
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Refusal {
    limit: f64,
    wait: Duration,
    reason: &'static str,
}

/// The buckets of one sandbox.
#[derive(Debug, Default)]
pub(crate) struct Limiter {
    site: Mutex<Bucket>,
    routes: Mutex<HashMap<Route, Bucket>>,
}

impl Limiter {
    /// Take a token from the site's bucket (`site_rate`) and from `route`'s.
    pub(crate) fn check(
        &self,
        route: Option<Route>,
        site_rate: Option<f64>,
        limits: &EndpointLimits,
        now: Instant,
    ) -> Result<Option<Advice>, Refusal> {
        if let Some(rate) = site_rate.filter(|r| r.is_finite() && *r > 0.0) {
            let taken = self.site.lock().unwrap_or_else(|e| e.into_inner()).take(rate, now);
            if let Err(wait) = taken {
                return Err(Refusal { limit: rate, wait, reason: "jira-quota-tenant-based" });
            }
        }
        let Some((route, rate)) = route.and_then(|r| limits.of(r).map(|l| (r, l))) else {
            return Ok(None);
        };
        let mut routes = self.routes.lock().unwrap_or_else(|e| e.into_inner());
        let bucket = routes.entry(route).or_default();
        match bucket.take(rate, now) {
            Ok(left) => Ok(Some(Advice { limit: rate, remaining: bucket.remaining(), near: left < NEAR_LIMIT })),
            Err(wait) => Err(Refusal { limit: rate, wait, reason: "jira-burst-based" }),
        }
    }
}

fn number(rate: f64) -> String {
    if rate.fract() == 0.0 {
        format!("{rate:.0}")
    } else {
        format!("{rate}")
    }
}

fn set(response: &mut Response, name: &'static str, value: String) {
    if let Ok(v) = HeaderValue::from_str(&value) {
        response.headers_mut().insert(name, v);
    }
}

/// The 429 of a refusal, with the hint `hint` asks for.
pub(crate) fn refuse(r: Refusal, hint: RateLimitHint) -> Response {
    let retry_after = r.wait.as_secs_f64().ceil().max(1.0) as u64;
    let reset =
        chrono::Utc::now() + chrono::Duration::from_std(r.wait).unwrap_or_else(|_| chrono::Duration::seconds(1));
    let mut response = ApiError::rate_limited().into_response();
    if hint == RateLimitHint::RetryAfter {
        set(&mut response, "retry-after", retry_after.to_string());
    }
    set(&mut response, "x-ratelimit-limit", number(r.limit));
    set(&mut response, "x-ratelimit-remaining", "0".to_string());
    if hint != RateLimitHint::NoHint {
        set(&mut response, "x-ratelimit-reset", reset.to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
    }
    set(&mut response, "ratelimit-reason", r.reason.to_string());
    response
}

/// Add an accepted request's rate-limit headers to its answer.
pub(crate) fn advise(response: &mut Response, a: Advice) {
    set(response, "x-ratelimit-limit", number(a.limit));
    set(response, "x-ratelimit-remaining", a.remaining.to_string());
    if a.near {
        set(response, "x-ratelimit-nearlimit", "true".to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routes;

    #[test]
    fn bucket_allows_its_capacity_then_refills() {
        let mut b = Bucket::default();
        let t0 = Instant::now();
        // 10 rps: capacity 2.
        assert!(b.take(10.0, t0).is_ok());
        assert!(b.take(10.0, t0).is_ok());
        let wait = b.take(10.0, t0).unwrap_err();
        assert!(wait <= Duration::from_millis(100) && wait > Duration::ZERO);
        assert!(b.take(10.0, t0 + Duration::from_millis(100)).is_ok());
        // A changed rate starts a full bucket.
        assert!(b.take(1.0, t0 + Duration::from_millis(100)).is_ok());
        assert!(b.take(1.0, t0 + Duration::from_millis(100)).is_err());
    }

    #[test]
    fn limits_parse_methods_routes_and_presets() {
        let l = EndpointLimits::parse("GET=100, put=50,PUT /organization/{id}/property/{key}=20").unwrap();
        assert_eq!(l.of(routes::GET_PROPERTY), Some(100.0));
        assert_eq!(l.of(routes::SET_PROPERTY), Some(20.0));
        assert_eq!(l.of(routes::DELETE_ORG), None);
        assert_eq!(EndpointLimits::parse("jira").unwrap(), EndpointLimits::jira());
        assert_eq!(EndpointLimits::parse("off").unwrap(), EndpointLimits::default());
        for bad in ["GET", "GET=x", "GET=0", "PATCH=5", "PUT /nowhere=5"] {
            assert!(EndpointLimits::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn each_endpoint_has_its_own_bucket_and_the_site_bucket_is_a_quota() {
        let lim = Limiter::default();
        let jira = EndpointLimits::jira();
        let t0 = Instant::now();
        // PUT at 50/s: a bucket of 10.
        for i in 0..10 {
            let advice = lim.check(Some(routes::SET_PROPERTY), None, &jira, t0).unwrap().unwrap();
            assert_eq!(advice.near, i >= 8, "{i}");
        }
        let refused = lim.check(Some(routes::SET_PROPERTY), None, &jira, t0).unwrap_err();
        assert_eq!((refused.reason, refused.limit), ("jira-burst-based", 50.0));
        // Another endpoint is not affected.
        assert!(lim.check(Some(routes::ADD_MEMBERS), None, &jira, t0).is_ok());
        let quota = lim.check(Some(routes::ADD_MEMBERS), Some(1.0), &jira, t0);
        assert!(quota.is_ok());
        let quota = lim.check(Some(routes::ADD_MEMBERS), Some(1.0), &jira, t0).unwrap_err();
        assert_eq!(quota.reason, "jira-quota-tenant-based");
    }
}
