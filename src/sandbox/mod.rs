//! The sandbox: a local, stateful fake of the JSM Cloud organization REST API
//! (`/rest/servicedeskapi`), for rehearsals, the demo, tests and benchmarks.
//!
//! It owns an in-memory site (organizations, members, properties, service
//! desk links) seeded from a snapshot directory, served on a loopback port
//! with JSM's semantics: paging with `start`/`limit` and a silent page cap,
//! create returning the existing organization for a known name, property
//! limits, the `ErrorResponse` body, an auth check, a token-bucket rate limit
//! answered with 429 + `Retry-After` (or, as some proxies and sites do, with
//! only `X-RateLimit-Reset`, or no hint at all), and injectable faults
//! (latency, random 503s and bursts of them, slow answers before or after a
//! write is committed, writes whose response is lost, malformed JSON),
//! optionally limited to some HTTP methods. It must not
//! call out to any real site, persist anything, or share code paths with the
//! client under test: it is the independent party that the client's retry,
//! paging and idempotency logic is checked against, so it has to behave like
//! the real server, not like the client expects.
//!
//! Which account ids exist: every account id in the seed's members, plus any
//! id of 1..=128 characters from `[A-Za-z0-9:_-]` that does not contain the
//! substring `unknown` (case-sensitive). So `acct-unknown-7` is refused by
//! add/remove-members with a 400 that fails the whole call, which lets
//! rehearsals and tests exercise rejected chunks. Unseeded users get a
//! synthesized display name (`Customer <last 6 chars>`) and email
//! (`<id with other chars as '-'>@customers.example`); a seeded user whose
//! email the snapshot lacks has it hidden, as privacy settings do.
//!
//! Control routes (no auth, not counted): `GET /__sandbox/stats`,
//! `POST /__sandbox/stats/reset`, `GET /__sandbox/state`,
//! `GET|PUT /__sandbox/faults`.

mod conn;
mod customers;
mod error;
mod gate;
mod http;
mod limits;
mod seed;
mod store;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::model;
pub use limits::EndpointLimits;

/// Default Basic-auth email of the sandbox.
pub const DEFAULT_EMAIL: &str = "sandbox@example.com";
/// Default Basic-auth API token of the sandbox.
pub const DEFAULT_API_TOKEN: &str = "sandbox-token";
/// Default Bearer token of the sandbox.
pub const DEFAULT_BEARER: &str = "sandbox-bearer";

/// How long [`Sandbox::shutdown`] lets in-flight requests finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// How to run a sandbox.
#[derive(Clone, Debug)]
pub struct SandboxConfig {
    /// Address to bind; port 0 picks a free one.
    pub listen: SocketAddr,
    /// Snapshot directory to seed the site from.
    pub seed: Option<PathBuf>,
    /// Service desk ids known to the site besides those of the seed.
    pub service_desks: Vec<String>,
    /// Added to every API request.
    pub latency: Duration,
    /// Requests per second for the whole site (token bucket, answered as a
    /// tenant quota); `None` for no limit.
    pub rate_limit: Option<f64>,
    /// Requests per second per endpoint × method (empty: none).
    pub endpoint_limits: EndpointLimits,
    /// Probability (0..=1) of an injected 503.
    pub fail_rate: f64,
    /// Largest page any list returns, whatever `limit` asks.
    pub page_cap: usize,
    /// The credentials the sandbox accepts.
    pub credentials: SandboxCredentials,
    /// A customer list (CSV: `email`, `display_name`, `account_id`,
    /// `hidden`). With one, only known people exist: account ids the site
    /// has never seen are rejected, as on a real site.
    pub customers: Option<PathBuf>,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            seed: None,
            service_desks: Vec::new(),
            latency: Duration::ZERO,
            rate_limit: None,
            endpoint_limits: EndpointLimits::default(),
            fail_rate: 0.0,
            page_cap: 50,
            credentials: SandboxCredentials::default(),
            customers: None,
        }
    }
}

/// The credentials the sandbox accepts: Basic `email:api_token`, and Bearer
/// `bearer` when set.
#[derive(Clone, PartialEq, Eq)]
pub struct SandboxCredentials {
    pub email: String,
    pub api_token: String,
    pub bearer: Option<String>,
}

impl std::fmt::Debug for SandboxCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SandboxCredentials")
            .field("email", &self.email)
            .field("api_token", &"<redacted>")
            .field("bearer", &self.bearer.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl Default for SandboxCredentials {
    fn default() -> Self {
        SandboxCredentials {
            email: DEFAULT_EMAIL.to_string(),
            api_token: DEFAULT_API_TOKEN.to_string(),
            bearer: Some(DEFAULT_BEARER.to_string()),
        }
    }
}

impl SandboxCredentials {
    /// `JSM_EMAIL` + `JSM_API_TOKEN` when both are set (else the default
    /// pair), and `JSM_BEARER_TOKEN` when set (else the default bearer).
    pub fn from_env() -> Self {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Self {
        let var = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let mut creds = SandboxCredentials::default();
        if let (Some(email), Some(token)) = (var("JSM_EMAIL"), var("JSM_API_TOKEN")) {
            creds.email = email;
            creds.api_token = token;
        }
        if let Some(bearer) = var("JSM_BEARER_TOKEN") {
            creds.bearer = Some(bearer);
        }
        creds
    }
}

/// Fault knobs, changeable while the sandbox runs.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Faults {
    /// Added to every API request (`latency_ms` in JSON).
    #[serde(rename = "latency_ms", with = "millis")]
    pub latency: Duration,
    /// Requests per second for the whole site (token bucket answered with
    /// `RateLimit-Reason: jira-quota-tenant-based`); `None` (or a
    /// non-positive rate) for no limit.
    pub rate_limit: Option<f64>,
    /// Requests per second per endpoint × method (`jira-burst-based`).
    pub endpoint_limits: EndpointLimits,
    /// Probability of an injected 503.
    pub fail_rate: f64,
    /// Probability that a write is applied and then the connection is
    /// closed without a response.
    pub drop_rate: f64,
    /// Probability that a request is delayed by `slow_ms` more.
    pub slow_rate: f64,
    pub slow_ms: u64,
    /// Probability that a 200/201 JSON body is replaced by truncated JSON.
    pub malformed_rate: f64,
    /// What a 429 of the rate limit says about when to come back.
    pub rate_limit_hint: RateLimitHint,
    /// The next `fail_burst` API requests (that pass auth and the rate
    /// limit) answer 503, before `fail_rate` is consulted. Counted down by
    /// the server: [`Sandbox::faults`] reports how many are left.
    pub fail_burst: u64,
    /// With `slow_rate`: delay the response *after* the handler ran (a write
    /// is committed, its answer comes late) instead of before it.
    pub slow_after_handler: bool,
    /// HTTP methods (e.g. `["POST"]`) that the injected faults (`fail_rate`,
    /// `fail_burst`, `drop_rate`, `slow_rate`, `malformed_rate`) apply to;
    /// empty for every method. Latency and the rate limit apply to all.
    pub only_methods: Vec<String>,
}

/// How a rate-limited answer (429) hints at the wait.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RateLimitHint {
    /// `Retry-After` (whole seconds) and `X-RateLimit-Reset`, as JSM Cloud sends.
    #[default]
    RetryAfter,
    /// Only `X-RateLimit-Reset` (an ISO 8601 instant).
    ResetOnly,
    /// Neither header: the client has to back off on its own.
    NoHint,
}

mod millis {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

/// Request counters.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct SandboxStats {
    /// Every API request received (not `/__sandbox/*`).
    pub total: u64,
    /// Requests that reached a handler, keyed `"METHOD /template"`, e.g.
    /// `"GET /organization/{id}/user"`.
    pub by_route: BTreeMap<String, u64>,
    /// GET requests that reached a handler.
    pub reads: u64,
    /// Other requests that reached a handler.
    pub writes: u64,
    pub unauthorized: u64,
    pub rate_limited: u64,
    pub injected_failures: u64,
    pub dropped: u64,
    /// Success bodies replaced by truncated JSON (`malformed_rate`).
    #[serde(default)]
    pub malformed: u64,
    /// Requests delayed by `slow_ms` (`slow_rate`).
    #[serde(default)]
    pub slowed: u64,
}

/// A full, deterministic dump of the site.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct SiteState {
    /// Sorted by id.
    pub organizations: Vec<model::OrgRecord>,
    /// Sorted by organization id, then account id.
    pub members: Vec<model::MemberRecord>,
    /// Sorted by organization id, then key.
    pub properties: Vec<model::PropertyRecord>,
    /// Sorted by organization id, then desk id (numerically when numeric).
    pub service_desks: Vec<model::DeskLinkRecord>,
    /// Every known desk id, in desk order.
    pub desks: Vec<String>,
}

/// A running sandbox. Dropping it stops the server too; [`Sandbox::shutdown`]
/// also waits for it.
pub struct Sandbox {
    addr: SocketAddr,
    url: String,
    app: Arc<http::App>,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Sandbox {
    /// Seeds the site, binds `cfg.listen` and serves in a background task.
    pub async fn start(cfg: SandboxConfig) -> anyhow::Result<Sandbox> {
        let records = match &cfg.seed {
            Some(dir) => seed::load(dir).with_context(|| format!("cannot seed the sandbox from {}", dir.display()))?,
            None => store::SeedRecords::default(),
        };
        let mut site = store::Site::from_records(records, &cfg.service_desks)
            .map_err(|e| anyhow::anyhow!("cannot seed the sandbox: {e}"))?;
        if let Some(path) = &cfg.customers {
            let people = customers::load(path)?;
            site.add_customers(people).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        }
        let listener = tokio::net::TcpListener::bind(cfg.listen)
            .await
            .with_context(|| format!("cannot listen on {}", cfg.listen))?;
        let addr = listener.local_addr()?;
        let url = base_url(addr);
        let faults = Faults {
            latency: cfg.latency,
            rate_limit: cfg.rate_limit,
            endpoint_limits: cfg.endpoint_limits,
            fail_rate: cfg.fail_rate,
            ..Faults::default()
        };
        let app = Arc::new(http::App::new(site, faults, cfg.credentials, url.clone(), cfg.page_cap));
        let service = http::router(app.clone()).into_make_service_with_connect_info::<conn::ConnHandle>();
        let (stop, stopped) = oneshot::channel::<()>();
        let server = axum::serve(conn::KillableListener(listener), service).with_graceful_shutdown(async move {
            // Resolves on an explicit stop and when the Sandbox is dropped.
            let _ = stopped.await;
        });
        let task = tokio::spawn(async move {
            if let Err(e) = server.await {
                tracing::error!("sandbox server stopped: {e}");
            }
        });
        Ok(Sandbox { addr, url, app, stop, task })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The site base, e.g. `http://127.0.0.1:PORT`; the API lives under
    /// `/rest/servicedeskapi`.
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// The request counters so far.
    pub fn stats(&self) -> SandboxStats {
        self.app.snapshot_stats()
    }

    /// Zeroes the request counters.
    pub fn reset_stats(&self) {
        self.app.reset_stats();
    }

    /// A full dump of the site.
    pub fn state(&self) -> SiteState {
        self.app.site().dump()
    }

    /// Renames an organization, as an admin does in the JSM UI (the REST API
    /// has no rename): for rehearsing `diff` and restores.
    pub fn rename_organization(&self, id: u64, name: &str) -> Result<(), String> {
        self.app.site().rename_org(id, name)
    }

    /// Replaces the fault knobs.
    pub fn set_faults(&self, f: Faults) {
        self.app.set_faults(f);
    }

    /// The current fault knobs.
    pub fn faults(&self) -> Faults {
        self.app.current_faults()
    }

    /// Stops accepting connections, lets in-flight requests finish (for a
    /// few seconds at most) and returns when the server is gone.
    pub async fn shutdown(self) {
        let Sandbox { stop, mut task, .. } = self;
        let _ = stop.send(());
        if tokio::time::timeout(SHUTDOWN_GRACE, &mut task).await.is_err() {
            task.abort();
            let _ = task.await;
        }
    }
}

/// The URL clients use: an unspecified bind address is reached via loopback.
fn base_url(addr: SocketAddr) -> String {
    let ip = match addr.ip() {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    format!("http://{}", SocketAddr::new(ip, addr.port()))
}

/// For `jsm-orgs sandbox`: starts the sandbox, prints its URL and the
/// credentials it accepts (a token is printed only when it is the built-in
/// default, never one that came from the environment), then serves until
/// Ctrl-C.
pub async fn serve_until_ctrl_c(cfg: SandboxConfig) -> anyhow::Result<()> {
    let creds = cfg.credentials.clone();
    let sandbox = Sandbox::start(cfg).await?;
    let state = sandbox.state();
    println!("JSM sandbox listening on {}", sandbox.url());
    println!("  API base:  {}{}", sandbox.url(), http::API_PREFIX);
    println!(
        "  site:      {} organizations, {} memberships, {} properties, {} service desks",
        state.organizations.len(),
        state.members.len(),
        state.properties.len(),
        state.desks.len()
    );
    let token = if creds.api_token == DEFAULT_API_TOKEN {
        format!("API token {DEFAULT_API_TOKEN:?}")
    } else {
        "the API token in JSM_API_TOKEN".to_string()
    };
    println!("  auth:      Basic with email {:?} and {token}", creds.email);
    match creds.bearer.as_deref() {
        Some(DEFAULT_BEARER) => println!("             or Bearer {DEFAULT_BEARER:?}"),
        Some(_) => println!("             or Bearer with the token in JSM_BEARER_TOKEN"),
        None => {}
    }
    // What a client needs in its environment; a token that came from the
    // environment is already there and is never echoed.
    let token_env = if creds.api_token == DEFAULT_API_TOKEN {
        format!(" JSM_API_TOKEN={DEFAULT_API_TOKEN}")
    } else {
        String::new()
    };
    println!(
        "  try:       JSM_SITE={} JSM_EMAIL={}{token_env} jsm-orgs export --out snapshot",
        sandbox.url(),
        creds.email
    );
    println!("Press Ctrl-C to stop.");
    tokio::signal::ctrl_c().await.context("cannot listen for Ctrl-C")?;
    println!("Stopping the sandbox.");
    sandbox.shutdown().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_from_env_fall_back_per_scheme() {
        let none = SandboxCredentials::from_lookup(|_| None);
        assert_eq!(none, SandboxCredentials::default());

        let basic = SandboxCredentials::from_lookup(|n| match n {
            "JSM_EMAIL" => Some("me@corp.example".into()),
            "JSM_API_TOKEN" => Some("t0k".into()),
            _ => None,
        });
        assert_eq!((basic.email.as_str(), basic.api_token.as_str()), ("me@corp.example", "t0k"));
        assert_eq!(basic.bearer.as_deref(), Some(DEFAULT_BEARER));

        let half = SandboxCredentials::from_lookup(|n| match n {
            "JSM_EMAIL" => Some("me@corp.example".into()),
            "JSM_BEARER_TOKEN" => Some("b".into()),
            _ => None,
        });
        assert_eq!(half.email, DEFAULT_EMAIL);
        assert_eq!(half.bearer.as_deref(), Some("b"));
    }

    #[test]
    fn credentials_debug_hides_tokens() {
        let text = format!("{:?}", SandboxCredentials::default());
        assert!(!text.contains(DEFAULT_API_TOKEN) && !text.contains(DEFAULT_BEARER));
    }

    #[test]
    fn faults_serialize_latency_in_millis() {
        let f = Faults { latency: Duration::from_millis(250), ..Faults::default() };
        let v = serde_json::to_value(&f).unwrap();
        assert_eq!(v["latency_ms"], 250);
        let back: Faults = serde_json::from_value(serde_json::json!({"latency_ms": 7, "fail_rate": 0.5})).unwrap();
        assert_eq!(back.latency, Duration::from_millis(7));
        assert_eq!(back.fail_rate, 0.5);
    }

    #[test]
    fn faults_take_hints_bursts_and_methods_from_json() {
        let f: Faults = serde_json::from_value(serde_json::json!({
            "rate_limit_hint": "reset_only", "fail_burst": 3, "slow_after_handler": true, "only_methods": ["POST"]
        }))
        .unwrap();
        assert_eq!(f.rate_limit_hint, RateLimitHint::ResetOnly);
        assert_eq!((f.fail_burst, f.slow_after_handler), (3, true));
        assert_eq!(f.only_methods, ["POST"]);
        assert_eq!(Faults::default().rate_limit_hint, RateLimitHint::RetryAfter);
        assert_eq!(serde_json::to_value(RateLimitHint::NoHint).unwrap(), "no_hint");
    }

    #[test]
    fn base_url_uses_loopback_for_unspecified() {
        assert_eq!(base_url("0.0.0.0:81".parse().unwrap()), "http://127.0.0.1:81");
        assert_eq!(base_url("[::]:82".parse().unwrap()), "http://[::1]:82");
        assert_eq!(base_url("127.0.0.1:83".parse().unwrap()), "http://127.0.0.1:83");
    }
}
