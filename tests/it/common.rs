//! Shared test helpers: clients with fast retry policies pointed at a
//! wiremock server or an in-process sandbox.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use jsm_orgs::api::{Auth, Client, ClientConfig};
use jsm_orgs::throttle::{RetryPolicy, Throttle, ThrottleConfig};

pub const EMAIL: &str = "sandbox@example.com";
pub const TOKEN: &str = "sandbox-token";

/// A retry policy with millisecond backoffs so tests stay fast.
pub fn fast_retry(max_retries: u32) -> RetryPolicy {
    RetryPolicy {
        max_retries,
        base: Duration::from_millis(5),
        max_backoff: Duration::from_millis(50),
        max_retry_after: Duration::from_secs(5),
    }
}

pub fn throttle(rate: f64, concurrency: usize) -> Arc<Throttle> {
    Arc::new(Throttle::new(&ThrottleConfig { rate, concurrency, min_rate: 1.0 }))
}

/// A client for `site` with Basic auth (the sandbox's default credentials).
pub fn client(site: &str) -> Client {
    client_with(site, Auth::Basic { email: EMAIL.into(), token: TOKEN.into() }, fast_retry(4), Duration::from_secs(5))
}

pub fn client_with(site: &str, auth: Auth, retry: RetryPolicy, timeout: Duration) -> Client {
    Client::new(ClientConfig { site: url::Url::parse(site).unwrap(), auth, timeout, retry }, throttle(10_000.0, 16))
        .unwrap()
}
