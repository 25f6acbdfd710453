//! The HTTP client: URL building from the route templates, auth header,
//! per-request timeout, and the retry loop (policy from [`RetryPolicy`],
//! pacing from the [`Throttle`], which it tells what each answer said about
//! the rate limit: `X-RateLimit-Limit`, `X-RateLimit-NearLimit` and the scope
//! of a 429 from `RateLimit-Reason`).
//!
//! Must not log or format headers: the `Authorization` value is marked
//! sensitive and never leaves this file.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE, LOCATION, USER_AGENT};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use tokio::time::Instant;
use url::Url;

use super::answer::{self, Answer, Expect};
use super::auth::Auth;
use super::breaker::{self, Breaker, Verdict};
use super::error::{parse_reset, parse_retry_after, ApiError, ErrorKind};
use super::models::*;
use super::path;
use super::retry::RetryPolicy;
use crate::routes::{Route, Verb};
use crate::throttle::{Scope, Signal, Throttle};

/// Longest wait for a connection (TCP and TLS) to the site.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Page size asked for; servers cap it silently anyway (50 on JSM Cloud).
pub const PAGE_LIMIT: u64 = 50;

/// What the client needs to talk to one site.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Site base: `https://x.atlassian.net`, `https://api.atlassian.com/ex/jira/{cloudId}`
    /// or a Data Center base with its context path.
    pub site: Url,
    pub auth: Auth,
    pub timeout: Duration,
    pub retry: RetryPolicy,
}

/// A successful call: its value, final status and the attempts it took.
#[derive(Debug, Clone, PartialEq)]
pub struct Called<T> {
    pub value: T,
    pub status: u16,
    pub attempts: u32,
}

impl<T> Called<T> {
    pub(super) fn map<U>(self, f: impl FnOnce(T) -> U) -> Called<U> {
        Called { value: f(self.value), status: self.status, attempts: self.attempts }
    }
}

/// Whether `PUT .../property/{key}` created or replaced the property.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PropertyWrite {
    Created,
    Updated,
}

/// The typed JSM client. Cheap to clone; all clones share one throttle.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    api: Url,
    auth: HeaderValue,
    timeout: Duration,
    retry: RetryPolicy,
    throttle: Arc<Throttle>,
    /// Forms of the credential to cut out of anything the server says.
    secrets: Arc<[String]>,
    /// Shared by all clones: stops the run when the site stays unreachable.
    breaker: Arc<Breaker>,
}

pub(super) enum Body {
    None,
    Json(Vec<u8>),
}

impl Client {
    /// Build a client. The site must be `https://`, or `http://` to a
    /// loopback address (Basic auth over plain HTTP would leak the token).
    pub fn new(cfg: ClientConfig, throttle: Arc<Throttle>) -> Result<Client, ErrorKind> {
        check_site(&cfg.site).map_err(ErrorKind::Local)?;
        let mut api = cfg.site.clone();
        api.set_query(None);
        api.set_fragment(None);
        {
            let mut segs =
                api.path_segments_mut().map_err(|_| ErrorKind::Local("the site URL cannot be a base".into()))?;
            segs.pop_if_empty().push("rest").push("servicedeskapi");
        }
        let mut headers = HeaderMap::new();
        headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
        headers.insert(USER_AGENT, HeaderValue::from_static(concat!("jsm-orgs/", env!("CARGO_PKG_VERSION"))));
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .redirect(reqwest::redirect::Policy::none())
            .pool_max_idle_per_host(64)
            .tcp_nodelay(true)
            // A site that drops packets (a firewall) is unreachable, not
            // slow: it counts toward the circuit breaker's window.
            .connect_timeout(cfg.timeout.min(CONNECT_TIMEOUT))
            .build()
            .map_err(|e| ErrorKind::Local(format!("cannot build the HTTP client: {e}")))?;
        Ok(Client {
            http,
            api,
            auth: cfg.auth.header()?,
            timeout: cfg.timeout,
            retry: cfg.retry,
            throttle,
            secrets: cfg.auth.secrets().into(),
            breaker: Arc::new(Breaker::new(breaker::DEFAULT_WINDOW)),
        })
    }

    pub fn throttle(&self) -> &Arc<Throttle> {
        &self.throttle
    }

    /// The API base this client calls (`SITE/rest/servicedeskapi`).
    pub fn api_base(&self) -> &Url {
        &self.api
    }

    /// Build `API/route?query` with the route's placeholders filled by
    /// `args` in order, each segment percent-encoded so that URL parsing
    /// cannot alter it (see [`path::join`]).
    pub(super) fn url(&self, route: Route, args: &[&str], query: &[(&str, String)]) -> Result<Url, ApiError> {
        let mut args = args.iter();
        let segments: Vec<&str> = route
            .segments()
            .map(|seg| seg.unwrap_or_else(|_| args.next().expect("one argument per placeholder")))
            .collect();
        debug_assert!(args.next().is_none(), "{route}: more arguments than placeholders");
        let mut u =
            path::join(&self.api, &segments).map_err(|e| ApiError { kind: ErrorKind::Local(e), attempts: 0 })?;
        if !query.is_empty() {
            let mut q = u.query_pairs_mut();
            for (k, v) in query {
                q.append_pair(k, v);
            }
        }
        Ok(u)
    }

    /// Send one logical call, retrying transient failures per the policy.
    /// An answer counts only when it is what `expect` says the call answers;
    /// `decode` then turns it (status, body) into the value, and a decode
    /// failure counts as a transient error (truncated bodies happen).
    /// `attempts` counts requests actually sent: a call stopped before its
    /// first request left (an abort) reports 0.
    pub(super) async fn call<T>(
        &self,
        route: Route,
        url: Url,
        body: Body,
        expect: Expect,
        decode: impl Fn(StatusCode, &Bytes) -> Result<T, String>,
    ) -> Result<Called<T>, ApiError> {
        let mut sent: u32 = 0;
        let mut retry_by = None;
        loop {
            let permit = self.throttle.acquire(route).await.map_err(|a| aborted(a, sent))?;
            sent += 1;
            let sent_at = permit.sent_at;
            let (result, signal, scope) = self.attempt(route, &url, &body, expect, permit).await;
            let kind = match result {
                Ok((status, bytes)) => match decode(status, &bytes) {
                    Ok(value) => {
                        self.breaker.answered();
                        self.throttle.on_answer(route, sent_at, signal);
                        return Ok(Called { value, status: status.as_u16(), attempts: sent });
                    }
                    Err(detail) => ErrorKind::Decode { status: status.as_u16(), detail: self.redact(detail) },
                },
                Err(kind) => kind,
            };
            let kind = self.breaker_verdict(kind, &mut retry_by);
            if kind.is_fatal() {
                let err = ApiError { kind, attempts: sent };
                self.throttle.abort(&err.abort_reason());
                return Err(err);
            }
            let delay = self.retry.next_delay(sent, &kind, rand::random::<f64>());
            if kind.is_rate_limited() {
                // The delay is served as a pause of the 429's scope, in acquire().
                let pause = delay.unwrap_or(Duration::from_secs(1));
                self.throttle.on_rate_limited(route, sent_at, scope, pause, signal);
            } else {
                if kind.status().is_some() {
                    self.throttle.on_answer(route, sent_at, signal);
                }
                if kind.is_transient() {
                    self.throttle.on_transient();
                }
            }
            let Some(d) = delay else {
                return Err(ApiError { kind, attempts: sent });
            };
            // While the site is unreachable, retry by the end of the window.
            let d = retry_by.take().map_or(d, |by: Instant| d.min(by.saturating_duration_since(Instant::now())));
            tracing::debug!(%route, attempt = sent, error = %kind, ?d, "retrying");
            self.throttle.on_retry();
            if !kind.is_rate_limited() {
                self.throttle.sleep(d).await.map_err(|a| aborted(a, sent))?;
            }
        }
    }

    /// Tell the breaker how an attempt ended. A connection failure when no
    /// attempt has connected for the whole window becomes `Unreachable`
    /// (fatal: the run stops); before that, `retry_by` is when to retry.
    fn breaker_verdict(&self, kind: ErrorKind, retry_by: &mut Option<Instant>) -> ErrorKind {
        match kind {
            ErrorKind::Connection(last) => match self.breaker.unreachable(Instant::now()) {
                Verdict::Trip => ErrorKind::Unreachable { secs: self.breaker.window().as_secs(), last },
                Verdict::RetryBy(by) => {
                    *retry_by = Some(by);
                    ErrorKind::Connection(last)
                }
            },
            kind => {
                if kind.status().is_some() {
                    self.breaker.answered();
                }
                kind
            }
        }
    }

    /// How long the site may be unreachable on every attempt before the run
    /// stops (default 10 s).
    pub fn with_unreachable_after(mut self, window: Duration) -> Client {
        self.breaker = Arc::new(Breaker::new(window));
        self
    }

    /// One HTTP exchange with a throttle slot: the request, the full body,
    /// and what the answer said about the rate limit.
    async fn attempt(
        &self,
        route: Route,
        url: &Url,
        body: &Body,
        expect: Expect,
        _permit: crate::throttle::Permit,
    ) -> (Result<(StatusCode, Bytes), ErrorKind>, Signal, Scope) {
        let method = method(route.verb);
        let mut req = self
            .http
            .request(method.clone(), url.clone())
            .header(AUTHORIZATION, self.auth.clone())
            .timeout(self.timeout);
        if let Body::Json(bytes) = body {
            req = req.header(CONTENT_TYPE, "application/json").body(bytes.clone());
        }
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => return (Err(self.transport_error(e)), Signal::default(), Scope::Site),
        };
        let status = resp.status();
        let retry_after = retry_hint(resp.headers());
        let (signal, scope) = rate_signal(resp.headers());
        let header = |name| resp.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
        let (content_type, location) = (header(CONTENT_TYPE), header(LOCATION));
        let bytes = match resp.bytes().await {
            Ok(b) => b,
            Err(e) => return (Err(self.transport_error(e)), signal, scope),
        };
        tracing::trace!(%method, path = url.path(), status = status.as_u16(), "response");
        let location = location.map(|l| truncate(&self.redact(l), 300));
        let answer = Answer {
            status: status.as_u16(),
            content_type: content_type.as_deref(),
            location: location.as_deref(),
            body: &bytes,
        };
        match answer::check(expect, &format!("{method} {}", url.path()), &answer) {
            Ok(()) => return (Ok((status, bytes)), signal, scope),
            Err(Some(kind)) => return (Err(kind), signal, scope),
            Err(None) => {}
        }
        let message = serde_json::from_slice::<ErrorBody>(&bytes)
            .ok()
            .and_then(|b| b.text())
            .unwrap_or_else(|| status.canonical_reason().unwrap_or("").to_string());
        let message = truncate(&self.redact(message), 500);
        (Err(ErrorKind::Status { status: status.as_u16(), message, retry_after }), signal, scope)
    }

    /// Cut every form of the credential out of text that came from the
    /// server or the network stack: a gateway that echoes the request's
    /// headers in its error body must not put the token into logs, reports
    /// or error messages.
    fn redact(&self, text: String) -> String {
        super::auth::redact(&self.secrets, text)
    }

    fn transport_error(&self, e: reqwest::Error) -> ErrorKind {
        // A connect timeout is a connection failure (the site is not
        // reachable); only a started exchange that runs out of time is slow.
        if e.is_timeout() && !e.is_connect() {
            ErrorKind::Timeout(self.timeout)
        } else {
            // reqwest's Display names the URL but never headers.
            let mut msg = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                msg.push_str(": ");
                msg.push_str(&s.to_string());
                src = s.source();
            }
            ErrorKind::Connection(truncate(&self.redact(msg), 300))
        }
    }

    pub(super) async fn get_json<T: DeserializeOwned>(&self, route: Route, url: Url) -> Result<Called<T>, ApiError> {
        self.call(route, url, Body::None, Expect::GET, |_, b| json(b)).await
    }

    pub(super) async fn send_no_content(&self, route: Route, url: Url, body: Body) -> Result<Called<()>, ApiError> {
        self.call(route, url, body, Expect::NO_CONTENT, |_, _| Ok(())).await
    }
}

pub(super) fn json<T: DeserializeOwned>(b: &Bytes) -> Result<T, String> {
    serde_json::from_slice(b).map_err(|e| truncate(&e.to_string(), 200))
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

fn method(verb: Verb) -> Method {
    match verb {
        Verb::Get => Method::GET,
        Verb::Post => Method::POST,
        Verb::Put => Method::PUT,
        Verb::Delete => Method::DELETE,
    }
}

fn aborted(a: crate::throttle::Aborted, sent: u32) -> ApiError {
    ApiError { kind: ErrorKind::Aborted(a.0), attempts: sent }
}

/// What an answer says about the rate limit, and the scope of a 429:
/// `RateLimit-Reason: jira-burst-based` is one endpoint × method; a quota
/// reason, any other, or none is the whole site.
fn rate_signal(h: &HeaderMap) -> (Signal, Scope) {
    let text = |name: &str| h.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
    let limit = text("x-ratelimit-limit").and_then(|v| v.parse::<f64>().ok()).filter(|l| l.is_finite() && *l > 0.0);
    let near_limit = text("x-ratelimit-nearlimit").is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let scope = match text("ratelimit-reason") {
        Some(r) if r.eq_ignore_ascii_case("jira-burst-based") => Scope::Endpoint,
        _ => Scope::Site,
    };
    (Signal { limit, near_limit }, scope)
}

/// `Retry-After` first, then `X-RateLimit-Reset`.
fn retry_hint(h: &HeaderMap) -> Option<Duration> {
    let text = |name: &str| h.get(name).and_then(|v| v.to_str().ok());
    text("retry-after")
        .and_then(|v| parse_retry_after(v, SystemTime::now()))
        .or_else(|| text("x-ratelimit-reset").and_then(|v| parse_reset(v, chrono::Utc::now())))
}

/// `https://` anywhere; `http://` only to loopback.
pub fn check_site(site: &Url) -> Result<(), String> {
    match site.scheme() {
        "https" => Ok(()),
        "http" => {
            let loopback = match site.host() {
                Some(url::Host::Ipv4(a)) => a.is_loopback(),
                Some(url::Host::Ipv6(a)) => a.is_loopback(),
                Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
                None => false,
            };
            if loopback {
                Ok(())
            } else {
                Err(format!(
                    "refusing plain http:// to {}: credentials would cross the network unencrypted; use https://",
                    site.host_str().unwrap_or("?")
                ))
            }
        }
        other => Err(format!("unsupported URL scheme {other:?}: use https://")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_only_to_loopback() {
        for ok in ["https://acme.atlassian.net", "http://127.0.0.1:8080", "http://localhost:1", "http://[::1]:9"] {
            assert!(check_site(&Url::parse(ok).unwrap()).is_ok(), "{ok}");
        }
        for bad in ["http://acme.atlassian.net", "http://10.0.0.1", "ftp://x"] {
            assert!(check_site(&Url::parse(bad).unwrap()).is_err(), "{bad}");
        }
    }

    #[test]
    fn rate_headers_give_the_limit_the_warning_and_the_scope() {
        let mut h = HeaderMap::new();
        assert_eq!(rate_signal(&h), (Signal::default(), Scope::Site));
        h.insert("x-ratelimit-limit", HeaderValue::from_static("50"));
        h.insert("x-ratelimit-nearlimit", HeaderValue::from_static("True"));
        h.insert("ratelimit-reason", HeaderValue::from_static("jira-burst-based"));
        assert_eq!(rate_signal(&h), (Signal { limit: Some(50.0), near_limit: true }, Scope::Endpoint));
        for quota in ["jira-quota-tenant-based", "jira-quota-global-based", "something-new"] {
            h.insert("ratelimit-reason", HeaderValue::from_str(quota).unwrap());
            assert_eq!(rate_signal(&h).1, Scope::Site, "{quota}");
        }
        h.insert("x-ratelimit-limit", HeaderValue::from_static("-3"));
        assert_eq!(rate_signal(&h).0.limit, None);
    }
}
