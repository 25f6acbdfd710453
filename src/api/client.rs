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
use super::breaker::{self, Breaker, Verdict};
use super::error::{parse_reset, parse_retry_after, ApiError, ErrorKind};
use super::models::*;
use super::path;
use super::retry::RetryPolicy;
use crate::routes::{self, Route, Verb};
use crate::throttle::{Scope, Signal, Throttle};

/// Page size asked for; servers cap it silently anyway (50 on JSM Cloud).
pub const PAGE_LIMIT: u64 = 50;

/// Credentials. `Debug` never shows the secret.
#[derive(Clone)]
pub enum Auth {
    /// Cloud API token: `Basic base64(email:token)`.
    Basic { email: String, token: String },
    /// OAuth 2.0 access token or Data Center personal access token.
    Bearer { token: String },
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Auth::Basic { email, .. } => write!(f, "Basic({email}, token: [redacted])"),
            Auth::Bearer { .. } => write!(f, "Bearer([redacted])"),
        }
    }
}

impl Auth {
    /// Every form in which this credential could be echoed back by a server
    /// or a proxy: the token itself and the encoded Basic pair.
    fn secrets(&self) -> Vec<String> {
        use base64::Engine as _;
        let (token, pair) = match self {
            Auth::Basic { email, token } => (token, Some(format!("{email}:{token}"))),
            Auth::Bearer { token } => (token, None),
        };
        let mut raw = vec![token.clone()];
        raw.extend(pair.clone());
        // Base64 of the token and of the Basic pair, in every alphabet and
        // padding a server or a proxy might print.
        let engines = [
            base64::engine::general_purpose::STANDARD,
            base64::engine::general_purpose::STANDARD_NO_PAD,
            base64::engine::general_purpose::URL_SAFE,
            base64::engine::general_purpose::URL_SAFE_NO_PAD,
        ];
        for text in std::iter::once(token).chain(pair.as_ref()) {
            raw.extend(engines.iter().map(|e| e.encode(text)));
        }
        // Each of those as it appears percent-encoded (upper or lower hex,
        // reserved characters or every non-alphanumeric) or JSON-escaped.
        let mut v = Vec::new();
        for s in raw {
            for set in [percent_encoding::NON_ALPHANUMERIC, path::SEGMENT] {
                let enc = percent_encoding::utf8_percent_encode(&s, set).to_string();
                v.push(lower_hex(&enc));
                v.push(enc);
            }
            let json = serde_json::to_string(&s).expect("a string serializes");
            let json = json[1..json.len() - 1].to_string();
            v.push(json.replace('/', "\\/"));
            v.push(json);
            v.push(s);
        }
        // Too short to search for without mangling ordinary text; longest
        // first, so that no form is left half-replaced.
        v.retain(|s| s.len() >= 4);
        v.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        v.dedup();
        v
    }

    fn header(&self) -> Result<HeaderValue, ErrorKind> {
        use base64::Engine as _;
        let raw = match self {
            Auth::Basic { email, token } => {
                let b64 = base64::engine::general_purpose::STANDARD.encode(format!("{email}:{token}"));
                format!("Basic {b64}")
            }
            Auth::Bearer { token } => format!("Bearer {token}"),
        };
        let mut v = HeaderValue::from_str(&raw)
            .map_err(|_| ErrorKind::Local("the credential contains characters not allowed in an HTTP header".into()))?;
        v.set_sensitive(true);
        Ok(v)
    }
}

/// Replace every listed form of the credential with `[redacted]`.
fn redact(secrets: &[String], mut text: String) -> String {
    for secret in secrets {
        if text.contains(secret.as_str()) {
            text = text.replace(secret.as_str(), "[redacted]");
        }
    }
    text
}

/// `%2F` → `%2f`: percent-encoded text as servers that print lower hex show it.
fn lower_hex(encoded: &str) -> String {
    let mut out = String::with_capacity(encoded.len());
    let mut rest = encoded;
    while let Some(i) = rest.find('%') {
        out.push_str(&rest[..i]);
        let end = (i + 3).min(rest.len());
        out.push_str(&rest[i..end].to_ascii_lowercase());
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

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
    fn map<U>(self, f: impl FnOnce(T) -> U) -> Called<U> {
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
        redact(&self.secrets, text)
    }

    fn transport_error(&self, e: reqwest::Error) -> ErrorKind {
        if e.is_timeout() {
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

    async fn send_no_content(&self, route: Route, url: Url, body: Body) -> Result<Called<()>, ApiError> {
        self.call(route, url, body, Expect::NO_CONTENT, |_, _| Ok(())).await
    }

    // ----- organizations -----------------------------------------------

    /// `GET /organization?start&limit`.
    pub async fn organizations_page(&self, start: u64, limit: u64) -> Result<Called<Page<Organization>>, ApiError> {
        self.get_json(routes::LIST_ORGS, self.url(routes::LIST_ORGS, &[], &paging(start, limit))?).await
    }

    /// Every organization, following `isLastPage`.
    pub async fn all_organizations(&self) -> Result<Called<Vec<Organization>>, ApiError> {
        collect_pages(|o: &Organization| o.id, |start| self.page_at(routes::LIST_ORGS, &[], start)).await
    }

    /// `GET API/segments?start&limit`, with the URL it asked (for errors).
    fn page_at<T: DeserializeOwned>(
        &self,
        route: Route,
        args: &[&str],
        start: u64,
    ) -> impl std::future::Future<Output = Result<(Url, Called<Page<T>>), ApiError>> + '_ {
        let url = self.url(route, args, &paging(start, PAGE_LIMIT));
        async move {
            let url = url?;
            Ok((url.clone(), self.get_json(route, url).await?))
        }
    }

    /// `POST /organization` — idempotent by name on JSM Cloud.
    pub async fn create_organization(&self, name: &str) -> Result<Called<Organization>, ApiError> {
        let body = serde_json::to_vec(&CreateOrganization { name }).expect("serializable");
        let url = self.url(routes::CREATE_ORG, &[], &[])?;
        self.call(routes::CREATE_ORG, url, Body::Json(body), Expect::CREATE, |_, b| json(b)).await
    }

    /// `GET /organization/{id}`.
    pub async fn organization(&self, id: u64) -> Result<Called<Organization>, ApiError> {
        self.get_json(routes::GET_ORG, self.url(routes::GET_ORG, &[&id.to_string()], &[])?).await
    }

    /// `DELETE /organization/{id}`.
    pub async fn delete_organization(&self, id: u64) -> Result<Called<()>, ApiError> {
        let url = self.url(routes::DELETE_ORG, &[&id.to_string()], &[])?;
        self.send_no_content(routes::DELETE_ORG, url, Body::None).await
    }

    // ----- properties ---------------------------------------------------

    /// `GET /organization/{id}/property`.
    pub async fn property_keys(&self, id: u64) -> Result<Called<Vec<String>>, ApiError> {
        let url = self.url(routes::LIST_PROPERTY_KEYS, &[&id.to_string()], &[])?;
        let keys: Called<PropertyKeys> = self.get_json(routes::LIST_PROPERTY_KEYS, url).await?;
        Ok(keys.map(|k| k.keys.into_iter().map(|k| k.key).collect()))
    }

    /// `GET /organization/{id}/property/{key}`.
    pub async fn property(&self, id: u64, key: &str) -> Result<Called<EntityProperty>, ApiError> {
        self.get_json(routes::GET_PROPERTY, self.url(routes::GET_PROPERTY, &[&id.to_string(), key], &[])?).await
    }

    /// `PUT /organization/{id}/property/{key}` with the raw JSON value as body.
    pub async fn set_property(
        &self,
        id: u64,
        key: &str,
        value: &serde_json::Value,
    ) -> Result<Called<PropertyWrite>, ApiError> {
        let url = self.url(routes::SET_PROPERTY, &[&id.to_string(), key], &[])?;
        let body = serde_json::to_vec(value).expect("serializable");
        self.call(routes::SET_PROPERTY, url, Body::Json(body), Expect::PUT, |status, _| {
            Ok(if status == StatusCode::CREATED { PropertyWrite::Created } else { PropertyWrite::Updated })
        })
        .await
    }

    /// `DELETE /organization/{id}/property/{key}`.
    pub async fn delete_property(&self, id: u64, key: &str) -> Result<Called<()>, ApiError> {
        let url = self.url(routes::DELETE_PROPERTY, &[&id.to_string(), key], &[])?;
        self.send_no_content(routes::DELETE_PROPERTY, url, Body::None).await
    }

    // ----- members ------------------------------------------------------

    /// `GET /organization/{id}/user?start&limit` (ordered by accountId).
    pub async fn users_page(&self, id: u64, start: u64, limit: u64) -> Result<Called<Page<User>>, ApiError> {
        let url = self.url(routes::LIST_MEMBERS, &[&id.to_string()], &paging(start, limit))?;
        self.get_json(routes::LIST_MEMBERS, url).await
    }

    /// Every member of an organization.
    pub async fn all_users(&self, id: u64) -> Result<Called<Vec<User>>, ApiError> {
        let id = id.to_string();
        collect_pages(|u: &User| u.account_id.clone(), |start| self.page_at(routes::LIST_MEMBERS, &[&id], start)).await
    }

    /// `POST /organization/{id}/user {"accountIds": [...]}`.
    pub async fn add_users(&self, id: u64, account_ids: &[String]) -> Result<Called<()>, ApiError> {
        let body = serde_json::to_vec(&AccountIds { account_ids }).expect("serializable");
        let url = self.url(routes::ADD_MEMBERS, &[&id.to_string()], &[])?;
        self.send_no_content(routes::ADD_MEMBERS, url, Body::Json(body)).await
    }

    /// `DELETE /organization/{id}/user {"accountIds": [...]}`.
    pub async fn remove_users(&self, id: u64, account_ids: &[String]) -> Result<Called<()>, ApiError> {
        let body = serde_json::to_vec(&AccountIds { account_ids }).expect("serializable");
        let url = self.url(routes::REMOVE_MEMBERS, &[&id.to_string()], &[])?;
        self.send_no_content(routes::REMOVE_MEMBERS, url, Body::Json(body)).await
    }

    // ----- service desks ------------------------------------------------

    /// `GET /servicedesk?start&limit`.
    pub async fn service_desks_page(&self, start: u64, limit: u64) -> Result<Called<Page<ServiceDesk>>, ApiError> {
        self.get_json(routes::LIST_DESKS, self.url(routes::LIST_DESKS, &[], &paging(start, limit))?).await
    }

    /// Every service desk.
    pub async fn all_service_desks(&self) -> Result<Called<Vec<ServiceDesk>>, ApiError> {
        collect_pages(|d: &ServiceDesk| d.id.clone(), |start| self.page_at(routes::LIST_DESKS, &[], start)).await
    }

    /// `GET /servicedesk/{sd}/organization?start&limit`.
    pub async fn desk_organizations_page(
        &self,
        desk: &str,
        start: u64,
        limit: u64,
    ) -> Result<Called<Page<Organization>>, ApiError> {
        let url = self.url(routes::LIST_DESK_ORGS, &[desk], &paging(start, limit))?;
        self.get_json(routes::LIST_DESK_ORGS, url).await
    }

    /// Every organization linked to a service desk.
    pub async fn all_desk_organizations(&self, desk: &str) -> Result<Called<Vec<Organization>>, ApiError> {
        collect_pages(|o: &Organization| o.id, |start| self.page_at(routes::LIST_DESK_ORGS, &[desk], start)).await
    }

    /// `POST /servicedesk/{sd}/organization {"organizationId": id}`.
    pub async fn link_organization(&self, desk: &str, id: u64) -> Result<Called<()>, ApiError> {
        let body = serde_json::to_vec(&OrganizationIdBody { organization_id: id }).expect("serializable");
        let url = self.url(routes::LINK_ORG, &[desk], &[])?;
        self.send_no_content(routes::LINK_ORG, url, Body::Json(body)).await
    }

    /// `DELETE /servicedesk/{sd}/organization {"organizationId": id}`.
    pub async fn unlink_organization(&self, desk: &str, id: u64) -> Result<Called<()>, ApiError> {
        let body = serde_json::to_vec(&OrganizationIdBody { organization_id: id }).expect("serializable");
        let url = self.url(routes::UNLINK_ORG, &[desk], &[])?;
        self.send_no_content(routes::UNLINK_ORG, url, Body::Json(body)).await
    }
}

/// Follow pages until `isLastPage`, advancing `start` by the number of values
/// received (servers cap `limit` silently). Attempts are summed. Paging must
/// make progress: an empty page that is not the last, or a page that brings
/// nothing new (`key` names an item; a server ignoring `start` repeats its
/// first page), is an error naming the endpoint, never a short or endless
/// list. An item listed twice (the list shifted) is kept once.
pub async fn collect_pages<T, K, F, Fut>(key: impl Fn(&T) -> K, mut fetch: F) -> Result<Called<Vec<T>>, ApiError>
where
    K: std::hash::Hash + Eq,
    F: FnMut(u64) -> Fut,
    Fut: std::future::Future<Output = Result<(Url, Called<Page<T>>), ApiError>>,
{
    let mut all = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut start = 0u64;
    let mut attempts = 0u32;
    loop {
        let (url, page) = fetch(start).await.map_err(|e| ApiError { attempts: attempts + e.attempts, ..e })?;
        attempts += page.attempts;
        let n = page.value.values.len() as u64;
        let last = page.value.is_last_page;
        let before = all.len();
        all.extend(page.value.values.into_iter().filter(|v| seen.insert(key(v))));
        if last {
            return Ok(Called { value: all, status: page.status, attempts });
        }
        let stuck = match (n, all.len() == before) {
            (0, _) => "an empty page that says it is not the last (isLastPage false)",
            (_, true) => "a page of items already read: the site ignores `start`?",
            _ => {
                start += n;
                continue;
            }
        };
        let call = format!("GET {}?{}", url.path(), url.query().unwrap_or(""));
        let detail = format!("{stuck}; the list cannot be read to its end");
        return Err(ApiError { kind: ErrorKind::Unexpected { status: page.status, call, detail }, attempts });
    }
}

fn paging(start: u64, limit: u64) -> [(&'static str, String); 2] {
    [("start", start.to_string()), ("limit", limit.to_string())]
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

    #[test]
    fn echoes_of_the_credential_are_redacted_in_every_encoding() {
        use base64::Engine as _;
        let token = "t/k+n=1\"é x";
        let auth = Auth::Basic { email: "a@b.c".into(), token: token.into() };
        let secrets = auth.secrets();
        let b64 = base64::engine::general_purpose::STANDARD.encode(format!("a@b.c:{token}"));
        let url_b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(token);
        let pct = percent_encoding::utf8_percent_encode(token, percent_encoding::NON_ALPHANUMERIC).to_string();
        let json = serde_json::to_string(token).unwrap();
        let forms = [
            token.to_string(),
            b64.clone(),
            url_b64,
            pct.clone(),
            pct.to_ascii_lowercase(),
            json[1..json.len() - 1].to_string(),
            serde_json::to_string(&b64).unwrap().replace('/', "\\/"),
            percent_encoding::utf8_percent_encode(&b64, percent_encoding::NON_ALPHANUMERIC).to_string(),
        ];
        for form in forms {
            let out = redact(&secrets, format!("echo: <{form}> end"));
            assert_eq!(out.matches("[redacted]").count(), 1, "{form:?} -> {out}");
            assert!(!out.contains("t/k") && !out.contains("1%22") && !out.contains(&b64[..8]), "{form:?} -> {out}");
        }
        assert_eq!(redact(&secrets, "nothing here".into()), "nothing here");
    }

    #[test]
    fn auth_debug_hides_secrets() {
        let a = Auth::Basic { email: "a@b.c".into(), token: "s3cr3t".into() };
        let b = Auth::Bearer { token: "t0k3n".into() };
        assert!(!format!("{a:?}{b:?}").contains("s3cr3t"));
        assert!(!format!("{a:?}{b:?}").contains("t0k3n"));
    }
}
