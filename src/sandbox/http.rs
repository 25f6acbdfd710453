//! The sandbox's HTTP face: the routes (mounted on the shared route
//! templates) and JSM's JSON shapes. Every API request first passes the
//! gate (`gate`: count, auth, rate limits, injected faults, latency).
//!
//! Owns the wire contract of the 15 organization operations under
//! `/rest/servicedeskapi` plus the unauthenticated `/__sandbox/*` control
//! routes. It must not hold the site lock across an await or keep any rule
//! about the data itself (those live in `store`), so handlers are thin:
//! parse, lock, call the site, unlock, render.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use serde_json::{json, Map, Value};

use super::customers;
use super::error::ApiError;
use super::gate::{gate, unrouted};
use super::limits::Limiter;
use super::store::{self, DeskId, Membership, Org, PropertyWrite, Site, User};
use super::{Faults, SandboxCredentials, SandboxStats};
use crate::routes::{self, Route, Verb};

/// Where the API lives under the site base.
pub(crate) const API_PREFIX: &str = "/rest/servicedeskapi";
/// Default `limit` of paged lists.
const DEFAULT_LIMIT: usize = 50;

/// Everything the server shares between requests.
pub(crate) struct App {
    pub site: Mutex<Site>,
    pub stats: Mutex<SandboxStats>,
    pub faults: RwLock<Faults>,
    /// What is left of `Faults::fail_burst`.
    burst_left: AtomicU64,
    pub(super) limits: Limiter,
    credentials: SandboxCredentials,
    /// `http://127.0.0.1:PORT`, the site base that links are built on.
    base: String,
    page_cap: usize,
}

impl App {
    pub fn new(site: Site, faults: Faults, credentials: SandboxCredentials, base: String, page_cap: usize) -> App {
        App {
            site: Mutex::new(site),
            stats: Mutex::new(SandboxStats::default()),
            burst_left: AtomicU64::new(faults.fail_burst),
            faults: RwLock::new(faults),
            limits: Limiter::default(),
            credentials,
            base,
            page_cap: page_cap.max(1),
        }
    }

    pub fn site(&self) -> std::sync::MutexGuard<'_, Site> {
        self.site.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn stats(&self) -> std::sync::MutexGuard<'_, SandboxStats> {
        self.stats.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The knobs, with `fail_burst` as what is left of the burst.
    pub fn current_faults(&self) -> Faults {
        let mut faults = self.faults.read().unwrap_or_else(|e| e.into_inner()).clone();
        faults.fail_burst = self.burst_left.load(Ordering::Acquire);
        faults
    }

    pub fn set_faults(&self, faults: Faults) {
        let mut current = self.faults.write().unwrap_or_else(|e| e.into_inner());
        self.burst_left.store(faults.fail_burst, Ordering::Release);
        *current = faults;
    }

    /// Takes one request of the 503 burst, if any is left.
    pub(super) fn take_burst(&self) -> bool {
        self.burst_left.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1)).is_ok()
    }

    pub fn snapshot_stats(&self) -> SandboxStats {
        self.stats().clone()
    }

    pub fn reset_stats(&self) {
        *self.stats() = SandboxStats::default();
    }

    /// Counts a request that reached the handler of `route` ("METHOD /template").
    pub(super) fn hit(&self, route: Route) {
        let mut stats = self.stats();
        *stats.by_route.entry(route.to_string()).or_insert(0) += 1;
        if route.verb == Verb::Get {
            stats.reads += 1;
        } else {
            stats.writes += 1;
        }
    }

    pub(super) fn count(&self, field: fn(&mut SandboxStats) -> &mut u64) {
        *field(&mut self.stats()) += 1;
    }

    /// The site base, `http://127.0.0.1:PORT`.
    pub(super) fn base(&self) -> &str {
        &self.base
    }

    fn api_base(&self) -> String {
        format!("{}{API_PREFIX}", self.base)
    }

    pub(super) fn authorized(&self, headers: &HeaderMap) -> bool {
        let Some(value) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) else {
            return false;
        };
        let (scheme, rest) = value.trim().split_once(' ').unwrap_or((value, ""));
        let rest = rest.trim();
        if scheme.eq_ignore_ascii_case("basic") {
            let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(rest) else {
                return false;
            };
            let Ok(decoded) = String::from_utf8(decoded) else {
                return false;
            };
            decoded.split_once(':') == Some((self.credentials.email.as_str(), self.credentials.api_token.as_str()))
        } else if scheme.eq_ignore_ascii_case("bearer") {
            self.credentials.bearer.as_deref() == Some(rest) && !rest.is_empty()
        } else {
            false
        }
    }
}

/// Builds the whole router: the API behind the gate, and the control routes.
pub(crate) fn router(app: Arc<App>) -> Router {
    let path = |route: Route| format!("{API_PREFIX}{}", route.path);
    let api = Router::new()
        .route(&path(routes::LIST_ORGS), get(list_orgs).post(create_org))
        .route(&path(routes::GET_ORG), get(get_org).delete(delete_org))
        .route(&path(routes::LIST_PROPERTY_KEYS), get(list_properties))
        .route(&path(routes::GET_PROPERTY), get(get_property).put(put_property).delete(delete_property))
        .route(&path(routes::LIST_MEMBERS), get(list_users).post(add_users).delete(remove_users))
        .route(&path(routes::LIST_DESKS), get(list_desks))
        .route(&path(routes::LIST_DESK_ORGS), get(list_desk_orgs).post(link_org).delete(unlink_org))
        .route(&path(routes::CREATE_CUSTOMER), post(customers::create_customer))
        .route(routes::SEARCH_USERS.path, get(customers::search_users))
        .fallback(no_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(app.clone(), gate));
    let control = Router::new()
        .route("/__sandbox/stats", get(control_stats))
        .route("/__sandbox/stats/reset", post(control_reset_stats))
        .route("/__sandbox/state", get(control_state))
        .route("/__sandbox/faults", get(control_faults).put(control_set_faults));
    api.merge(control).with_state(app)
}

async fn no_route(method: Method, uri: axum::http::Uri) -> Response {
    unrouted(ApiError::no_route(method.as_str(), uri.path()))
}

async fn method_not_allowed(method: Method, uri: axum::http::Uri) -> Response {
    unrouted(ApiError::method_not_allowed(method.as_str(), uri.path()))
}

// ---------------------------------------------------------------- helpers

type ApiResult = Result<Response, ApiError>;

/// `start` and `limit` of a list request, `limit` already capped.
struct PageRequest {
    start: usize,
    limit: usize,
    /// Other query pairs, e.g. `accountId`.
    extra: BTreeMap<String, String>,
}

impl PageRequest {
    fn parse(query: Option<&str>, cap: usize) -> Result<PageRequest, ApiError> {
        let mut start = 0;
        let mut limit = DEFAULT_LIMIT;
        let mut extra = BTreeMap::new();
        for (k, v) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
            match k.as_ref() {
                "start" => start = parse_index(&k, &v, 0)?,
                "limit" => limit = parse_index(&k, &v, 1)?,
                _ => {
                    extra.insert(k.into_owned(), v.into_owned());
                }
            }
        }
        Ok(PageRequest { start, limit: limit.min(cap), extra })
    }
}

fn parse_index(name: &str, raw: &str, min: usize) -> Result<usize, ApiError> {
    raw.trim().parse::<u64>().ok().and_then(|n| usize::try_from(n).ok()).filter(|n| *n >= min).ok_or_else(|| {
        ApiError::bad_request(
            format!("The query parameter {name}={raw:?} must be an integer of at least {min}."),
            "sd.rest.error.invalid.paging",
        )
    })
}

/// Renders a `PagedDTO`. `fetched` holds up to `limit + 1` items; the extra
/// one only tells whether another page follows.
fn paged(app: &App, path: &str, page: &PageRequest, mut fetched: Vec<Value>) -> Response {
    let is_last = fetched.len() <= page.limit;
    fetched.truncate(page.limit);
    let api = app.api_base();
    let link = |start: usize| {
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in &page.extra {
            q.append_pair(k, v);
        }
        q.append_pair("start", &start.to_string());
        q.append_pair("limit", &page.limit.to_string());
        format!("{api}{path}?{}", q.finish())
    };
    let mut links = Map::new();
    links.insert("base".into(), json!(api));
    links.insert("context".into(), json!(""));
    if !is_last {
        links.insert("next".into(), json!(link(page.start + page.limit)));
    }
    if page.start > 0 {
        links.insert("prev".into(), json!(link(page.start.saturating_sub(page.limit))));
    }
    links.insert("self".into(), json!(link(page.start)));
    Json(json!({
        "_expands": [],
        "size": fetched.len(),
        "start": page.start,
        "limit": page.limit,
        "isLastPage": is_last,
        "_links": links,
        "values": fetched,
    }))
    .into_response()
}

/// A path extractor whose rejection becomes an `ErrorResponse` in the handler.
type PathArg<T> = Result<Path<T>, PathRejection>;

fn path_arg<T>(arg: PathArg<T>) -> Result<T, ApiError> {
    arg.map(|Path(t)| t).map_err(|e| ApiError::bad_request(e.body_text(), "sd.rest.error.invalid.path"))
}

fn org_id(raw: &str) -> Result<u64, ApiError> {
    raw.trim().parse::<u64>().map_err(|_| ApiError::invalid_org_id(raw))
}

fn parse_body(body: &Bytes) -> Result<Value, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::invalid_body("it is empty"));
    }
    serde_json::from_slice(body).map_err(ApiError::invalid_body)
}

/// Percent-encodes one path segment (everything but RFC 3986 unreserved).
fn encode_segment(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn org_dto(api: &str, org: &Org) -> Value {
    let mut m = Map::new();
    m.insert("id".into(), json!(org.id.to_string()));
    m.insert("name".into(), json!(org.name));
    if let Some(uuid) = &org.uuid {
        m.insert("uuid".into(), json!(uuid));
    }
    if let Some(scim) = org.scim_managed {
        m.insert("scimManaged".into(), json!(scim));
    }
    if let Some(created) = &org.created {
        m.insert("created".into(), created.clone());
    }
    m.insert("_links".into(), json!({ "self": format!("{api}/organization/{}", org.id) }));
    Value::Object(m)
}

pub(super) fn user_dto(base: &str, account_id: &str, user: &User) -> Value {
    let enc = encode_segment(account_id);
    let rest = format!("{base}/rest/api/2/user?accountId={enc}");
    let avatar = |size: u32| format!("{base}/secure/useravatar?size={size}&ownerId={enc}");
    let mut m = Map::new();
    m.insert("accountId".into(), json!(account_id));
    if let Some(email) = &user.email {
        m.insert("emailAddress".into(), json!(email));
    }
    m.insert("displayName".into(), json!(user.display_name));
    m.insert("active".into(), json!(true));
    m.insert("timeZone".into(), json!("UTC"));
    m.insert(
        "_links".into(),
        json!({
            "jiraRest": rest,
            "avatarUrls": {
                "48x48": avatar(48),
                "24x24": avatar(24),
                "16x16": avatar(16),
                "32x32": avatar(32),
            },
            "self": rest,
        }),
    );
    Value::Object(m)
}

fn desk_dto(api: &str, desk: &DeskId, info: store::DeskInfo) -> Value {
    let project_id = match desk.0.parse::<u64>() {
        Ok(n) => n.saturating_add(10_000).to_string(),
        Err(_) => desk.0.clone(),
    };
    json!({
        "id": desk.0,
        "projectId": project_id,
        "projectName": info.name,
        "projectKey": info.key,
        "projectTypeKey": "service_desk",
        "_links": { "self": format!("{api}/servicedesk/{}", encode_segment(&desk.0)) },
    })
}

fn no_content() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

/// The account ids of a member change body (`accountIds`; the retired
/// `usernames` field is tolerated but ignored).
fn account_ids(body: &Bytes) -> Result<Vec<String>, ApiError> {
    let value = parse_body(body)?;
    let ids = value
        .get("accountIds")
        .and_then(Value::as_array)
        .ok_or_else(|| ApiError::invalid_body("accountIds must be a non-empty array of strings"))?;
    let ids: Vec<String> = ids
        .iter()
        .map(|v| v.as_str().map(str::to_string))
        .collect::<Option<_>>()
        .ok_or_else(|| ApiError::invalid_body("accountIds must contain strings only"))?;
    if ids.is_empty() {
        return Err(ApiError::invalid_body("accountIds must not be empty"));
    }
    Ok(ids)
}

/// The `organizationId` of a desk link body: an integer or a numeric string.
fn organization_id(body: &Bytes) -> Result<u64, ApiError> {
    let value = parse_body(body)?;
    match value.get("organizationId") {
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(s)) => s.trim().parse().ok(),
        _ => None,
    }
    .ok_or_else(|| ApiError::invalid_body("organizationId must be an integer"))
}

// ---------------------------------------------------------------- organizations

async fn list_orgs(State(app): State<Arc<App>>, RawQuery(q): RawQuery) -> ApiResult {
    app.hit(routes::LIST_ORGS);
    let page = PageRequest::parse(q.as_deref(), app.page_cap)?;
    let api = app.api_base();
    let values: Vec<Value> = {
        let site = app.site();
        let member = page.extra.get("accountId").map(String::as_str);
        site.orgs_page(member, page.start, page.limit + 1).into_iter().map(|o| org_dto(&api, o)).collect()
    };
    Ok(paged(&app, "/organization", &page, values))
}

async fn create_org(State(app): State<Arc<App>>, body: Bytes) -> ApiResult {
    app.hit(routes::CREATE_ORG);
    let value = parse_body(&body)?;
    let name =
        value.get("name").and_then(Value::as_str).ok_or_else(|| ApiError::invalid_body("name must be a string"))?;
    let dto = {
        let mut site = app.site();
        org_dto(&app.api_base(), site.create_org(name)?)
    };
    Ok((StatusCode::CREATED, Json(dto)).into_response())
}

async fn get_org(State(app): State<Arc<App>>, id: PathArg<String>) -> ApiResult {
    app.hit(routes::GET_ORG);
    let id = path_arg(id)?;
    let id = org_id(&id)?;
    let dto = org_dto(&app.api_base(), app.site().org(id)?);
    Ok(Json(dto).into_response())
}

async fn delete_org(State(app): State<Arc<App>>, id: PathArg<String>) -> ApiResult {
    app.hit(routes::DELETE_ORG);
    let id = path_arg(id)?;
    let id = org_id(&id)?;
    app.site().delete_org(id)?;
    Ok(no_content())
}

// ---------------------------------------------------------------- properties

async fn list_properties(State(app): State<Arc<App>>, id: PathArg<String>) -> ApiResult {
    app.hit(routes::LIST_PROPERTY_KEYS);
    let id = path_arg(id)?;
    let id = org_id(&id)?;
    let api = app.api_base();
    let keys: Vec<Value> = {
        let site = app.site();
        site.org(id)?
            .properties
            .keys()
            .map(|k| {
                json!({
                    "self": format!("{api}/organization/{id}/property/{}", encode_segment(k)),
                    "key": k,
                })
            })
            .collect()
    };
    Ok(Json(json!({ "keys": keys })).into_response())
}

async fn get_property(State(app): State<Arc<App>>, args: PathArg<(String, String)>) -> ApiResult {
    app.hit(routes::GET_PROPERTY);
    let (id, key) = path_arg(args)?;
    let id = org_id(&id)?;
    let value = app.site().property(id, &key)?.clone();
    Ok(Json(json!({ "key": key, "value": value })).into_response())
}

async fn put_property(State(app): State<Arc<App>>, args: PathArg<(String, String)>, body: Bytes) -> ApiResult {
    app.hit(routes::SET_PROPERTY);
    let (id, key) = path_arg(args)?;
    let id = org_id(&id)?;
    store::check_property_key(&key)?;
    if body.len() > store::MAX_VALUE_BYTES {
        return Err(ApiError::bad_request(
            format!("The property value must not exceed {} bytes (got {}).", store::MAX_VALUE_BYTES, body.len()),
            "jira.properties.service.too.long.value",
        ));
    }
    let value = parse_body(&body)?;
    let outcome = app.site().set_property(id, &key, value)?;
    Ok(match outcome {
        PropertyWrite::Created => StatusCode::CREATED,
        PropertyWrite::Updated => StatusCode::OK,
    }
    .into_response())
}

async fn delete_property(State(app): State<Arc<App>>, args: PathArg<(String, String)>) -> ApiResult {
    app.hit(routes::DELETE_PROPERTY);
    let (id, key) = path_arg(args)?;
    let id = org_id(&id)?;
    app.site().delete_property(id, &key)?;
    Ok(no_content())
}

// ---------------------------------------------------------------- members

async fn list_users(State(app): State<Arc<App>>, id: PathArg<String>, RawQuery(q): RawQuery) -> ApiResult {
    app.hit(routes::LIST_MEMBERS);
    let id = path_arg(id)?;
    let id = org_id(&id)?;
    let page = PageRequest::parse(q.as_deref(), app.page_cap)?;
    let members = app.site().members_page(id, page.start, page.limit + 1)?;
    let values = members.iter().map(|(account, user)| user_dto(&app.base, account, user)).collect();
    Ok(paged(&app, &format!("/organization/{id}/user"), &page, values))
}

async fn add_users(State(app): State<Arc<App>>, id: PathArg<String>, body: Bytes) -> ApiResult {
    app.hit(routes::ADD_MEMBERS);
    let id = path_arg(id)?;
    change_users(&app, &id, &body, Membership::Add)
}

async fn remove_users(State(app): State<Arc<App>>, id: PathArg<String>, body: Bytes) -> ApiResult {
    app.hit(routes::REMOVE_MEMBERS);
    let id = path_arg(id)?;
    change_users(&app, &id, &body, Membership::Remove)
}

fn change_users(app: &App, id: &str, body: &Bytes, change: Membership) -> ApiResult {
    let id = org_id(id)?;
    app.site().org(id)?;
    let ids = account_ids(body)?;
    app.site().change_members(id, &ids, change)?;
    Ok(no_content())
}

// ---------------------------------------------------------------- service desks

async fn list_desks(State(app): State<Arc<App>>, RawQuery(q): RawQuery) -> ApiResult {
    app.hit(routes::LIST_DESKS);
    let page = PageRequest::parse(q.as_deref(), app.page_cap)?;
    let api = app.api_base();
    let values = app
        .site()
        .desks_page(page.start, page.limit + 1)
        .into_iter()
        .map(|(d, info)| desk_dto(&api, d, info))
        .collect();
    Ok(paged(&app, "/servicedesk", &page, values))
}

async fn list_desk_orgs(State(app): State<Arc<App>>, sd: PathArg<String>, RawQuery(q): RawQuery) -> ApiResult {
    app.hit(routes::LIST_DESK_ORGS);
    let sd = path_arg(sd)?;
    let page = PageRequest::parse(q.as_deref(), app.page_cap)?;
    let api = app.api_base();
    let values = {
        let site = app.site();
        let desk = site.desk(&sd)?;
        site.desk_orgs_page(&desk, page.start, page.limit + 1).into_iter().map(|o| org_dto(&api, o)).collect()
    };
    let path = format!("/servicedesk/{}/organization", encode_segment(&sd));
    Ok(paged(&app, &path, &page, values))
}

async fn link_org(State(app): State<Arc<App>>, sd: PathArg<String>, body: Bytes) -> ApiResult {
    app.hit(routes::LINK_ORG);
    let sd = path_arg(sd)?;
    let desk = app.site().desk(&sd)?;
    let org = organization_id(&body)?;
    app.site().link(&desk, org)?;
    Ok(no_content())
}

async fn unlink_org(State(app): State<Arc<App>>, sd: PathArg<String>, body: Bytes) -> ApiResult {
    app.hit(routes::UNLINK_ORG);
    let sd = path_arg(sd)?;
    let desk = app.site().desk(&sd)?;
    let org = organization_id(&body)?;
    app.site().unlink(&desk, org)?;
    Ok(no_content())
}

// ---------------------------------------------------------------- control

async fn control_stats(State(app): State<Arc<App>>) -> Json<SandboxStats> {
    Json(app.snapshot_stats())
}

async fn control_reset_stats(State(app): State<Arc<App>>) -> StatusCode {
    app.reset_stats();
    StatusCode::NO_CONTENT
}

async fn control_state(State(app): State<Arc<App>>) -> Json<super::SiteState> {
    Json(app.site().dump())
}

async fn control_faults(State(app): State<Arc<App>>) -> Json<Faults> {
    Json(app.current_faults())
}

async fn control_set_faults(State(app): State<Arc<App>>, body: Bytes) -> Response {
    match serde_json::from_slice::<Faults>(&body) {
        Ok(faults) => {
            app.set_faults(faults.clone());
            Json(faults).into_response()
        }
        Err(e) => ApiError::invalid_body(e).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_request_caps_and_rejects_garbage() {
        let p = PageRequest::parse(Some("start=5&limit=100&accountId=a"), 50).unwrap();
        assert_eq!((p.start, p.limit), (5, 50));
        assert_eq!(p.extra.get("accountId").map(String::as_str), Some("a"));
        let d = PageRequest::parse(None, 50).unwrap();
        assert_eq!((d.start, d.limit), (0, 50));
        for bad in ["start=-1", "limit=-5", "limit=abc", "limit=0", "start="] {
            assert!(PageRequest::parse(Some(bad), 50).is_err(), "{bad}");
        }
    }

    #[test]
    fn segments_are_percent_encoded() {
        assert_eq!(encode_segment("a b/c~é"), "a%20b%2Fc~%C3%A9");
    }
}
