//! The gate every API request of the sandbox passes before and after its
//! handler: the count, the auth check, the rate limits (see [`limits`]),
//! the injected faults (503s, latency, slow, dropped and malformed answers).
//!
//! It owns the order of those checks and nothing of the data or the routes'
//! shapes (`http`), nor of the buckets themselves (`limits`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rand::Rng;

use super::conn::ConnHandle;
use super::error::ApiError;
use super::http::{App, API_PREFIX};
use super::limits;
use crate::routes::{self, Route, Verb};

/// The body that replaces a JSON success body when `malformed_rate` fires.
const MALFORMED_BODY: &str = "{\"values\": [";

/// The route template a request addresses, if it is one of the API's.
fn route_of(method: &Method, path: &str) -> Option<Route> {
    let verb = Verb::parse(method.as_str())?;
    // The user search lives beside the JSM API, not under it.
    if verb == routes::SEARCH_USERS.verb && path.trim_end_matches('/') == routes::SEARCH_USERS.path {
        return Some(routes::SEARCH_USERS);
    }
    Route::matching(verb, path.strip_prefix(API_PREFIX)?)
}

/// Marks a response that no route handler produced (unknown path or
/// method), so the fault layer leaves it alone.
#[derive(Clone, Copy)]
pub(super) struct Unrouted;

fn chance(p: f64) -> bool {
    p > 0.0 && (p >= 1.0 || rand::thread_rng().gen::<f64>() < p)
}

/// The checks every API request passes, in order: count, auth, rate limits
/// (the site's quota, then the endpoint's bucket),
/// injected 503 (burst, then rate), latency and slowness; then the handler;
/// then late answers (`slow_after_handler`), dropped connections and
/// malformed bodies. Injected faults only hit the methods of `only_methods`
/// (all when empty).
pub(super) async fn gate(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    if req.uri().path().starts_with("/__sandbox") {
        return unrouted(ApiError::no_route(req.method().as_str(), req.uri().path()));
    }
    app.count(|s| &mut s.total);
    if !app.authorized(req.headers()) {
        app.count(|s| &mut s.unauthorized);
        return ApiError::unauthorized().into_response();
    }
    let faults = app.current_faults();
    let route = route_of(req.method(), req.uri().path());
    let advice = match app.limits.check(route, faults.rate_limit, &faults.endpoint_limits, Instant::now()) {
        Ok(advice) => advice,
        Err(refusal) => {
            app.count(|s| &mut s.rate_limited);
            return limits::refuse(refusal, faults.rate_limit_hint);
        }
    };
    let targeted = faults.only_methods.is_empty()
        || faults.only_methods.iter().any(|m| m.eq_ignore_ascii_case(req.method().as_str()));
    if targeted && (app.take_burst() || chance(faults.fail_rate)) {
        app.count(|s| &mut s.injected_failures);
        return ApiError::injected_failure().into_response();
    }
    let slow = targeted && chance(faults.slow_rate);
    if slow {
        app.count(|s| &mut s.slowed);
    }
    let slow_delay = Duration::from_millis(if slow { faults.slow_ms } else { 0 });
    let mut delay = faults.latency;
    if !faults.slow_after_handler {
        delay += slow_delay;
    }
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }

    let is_write = !matches!(*req.method(), Method::GET | Method::HEAD);
    let conn = req.extensions().get::<ConnectInfo<ConnHandle>>().map(|c| c.0.clone());
    let mut response = next.run(req).await;
    if response.extensions().get::<Unrouted>().is_some() {
        return response;
    }
    if let Some(advice) = advice {
        limits::advise(&mut response, advice);
    }
    if faults.slow_after_handler && !slow_delay.is_zero() {
        tokio::time::sleep(slow_delay).await;
    }
    if targeted && is_write && chance(faults.drop_rate) {
        if let Some(conn) = conn {
            conn.kill();
            app.count(|s| &mut s.dropped);
            return response;
        }
    }
    let json_success = matches!(response.status(), StatusCode::OK | StatusCode::CREATED)
        && response.headers().get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if targeted && json_success && chance(faults.malformed_rate) {
        app.count(|s| &mut s.malformed);
        let (mut parts, _) = response.into_parts();
        parts.headers.remove(header::CONTENT_LENGTH);
        return Response::from_parts(parts, Body::from(MALFORMED_BODY));
    }
    response
}

pub(super) fn unrouted(err: ApiError) -> Response {
    let mut response = err.into_response();
    response.extensions_mut().insert(Unrouted);
    response
}
