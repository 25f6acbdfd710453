//! The sandbox as a client written against JSM Cloud sees it: every
//! operation's status codes and JSON shapes (field names embedded below from
//! the official OpenAPI schemas), paging, limits, auth, rate limiting, fault
//! injection, seeding and stats. Plain reqwest on 127.0.0.1 only.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use jsm_orgs::model::{MemberRecord, OrgRecord, PropertyRecord};
use jsm_orgs::sandbox::{Faults, Sandbox, SandboxConfig, SandboxCredentials, SandboxStats};
use reqwest::header::HeaderMap;
use reqwest::{Client, Method, RequestBuilder};
use serde_json::{json, Value};

// Field names of the OpenAPI schemas (components.schemas), all
// `additionalProperties: false`: a response may omit optional fields but
// must not invent others.
const ORGANIZATION_DTO: &[&str] = &["_links", "created", "id", "name", "scimManaged", "uuid"];
const DATE_DTO: &[&str] = &["epochMillis", "friendly", "iso8601", "jira"];
const SELF_LINK_DTO: &[&str] = &["self"];
const PAGED_DTO: &[&str] = &["_expands", "_links", "isLastPage", "limit", "size", "start", "values"];
const PAGED_LINK_DTO: &[&str] = &["base", "context", "next", "prev", "self"];
const USER_DTO: &[&str] = &["_links", "accountId", "active", "displayName", "emailAddress", "key", "name", "timeZone"];
const USER_LINK_DTO: &[&str] = &["avatarUrls", "jiraRest", "self"];
const SERVICE_DESK_DTO: &[&str] = &["_links", "id", "projectId", "projectKey", "projectName", "projectTypeKey"];
const ENTITY_PROPERTY: &[&str] = &["key", "value"];
const PROPERTY_KEYS: &[&str] = &["keys"];
const PROPERTY_KEY: &[&str] = &["key", "self"];
const ERROR_RESPONSE: &[&str] = &["errorMessage", "i18nErrorMessage"];
const I18N_ERROR_MESSAGE: &[&str] = &["i18nKey", "parameters"];

const API: &str = "/rest/servicedeskapi";

/// A running sandbox plus a client that authenticates with its default
/// credentials.
struct Site {
    sb: Sandbox,
    http: Client,
}

/// One response, read completely.
#[derive(Debug)]
struct Resp {
    status: u16,
    headers: HeaderMap,
    text: String,
}

impl Resp {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("status {} body {:?} is not JSON: {e}", self.status, self.text))
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

impl Site {
    async fn start(cfg: SandboxConfig) -> Site {
        let sb = Sandbox::start(cfg).await.expect("sandbox starts");
        assert!(sb.url().starts_with("http://127.0.0.1:"), "{}", sb.url());
        Site { sb, http: Client::builder().timeout(Duration::from_secs(10)).build().unwrap() }
    }

    async fn new() -> Site {
        Site::start(SandboxConfig::default()).await
    }

    fn url(&self, path: &str) -> String {
        format!("{}{API}{path}", self.sb.url())
    }

    /// An authenticated request to an API path.
    fn req(&self, method: Method, path: &str) -> RequestBuilder {
        let c = SandboxCredentials::default();
        self.http.request(method, self.url(path)).basic_auth(c.email, Some(c.api_token))
    }

    async fn send(rb: RequestBuilder) -> Resp {
        let r = rb.send().await.expect("request completes");
        Resp { status: r.status().as_u16(), headers: r.headers().clone(), text: r.text().await.expect("body") }
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Resp {
        let mut rb = self.req(method, path);
        if let Some(body) = body {
            rb = rb.json(&body);
        }
        Site::send(rb).await
    }

    async fn get(&self, path: &str) -> Resp {
        self.call(Method::GET, path, None).await
    }

    async fn create_org(&self, name: &str) -> Value {
        let r = self.call(Method::POST, "/organization", Some(json!({ "name": name }))).await;
        assert_eq!(r.status, 201, "{}", r.text);
        r.json()
    }

    async fn create_org_id(&self, name: &str) -> u64 {
        self.create_org(name).await["id"].as_str().unwrap().parse().unwrap()
    }

    async fn put_property(&self, org: u64, key: &str, body: &str) -> Resp {
        let path = format!("/organization/{org}/property/{}", encode(key));
        Site::send(self.req(Method::PUT, &path).header("content-type", "application/json").body(body.to_string())).await
    }
}

/// Percent-encodes a path segment.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn keys(v: &Value) -> BTreeSet<&str> {
    v.as_object().unwrap_or_else(|| panic!("{v} is not an object")).keys().map(String::as_str).collect()
}

/// `v` has only fields of `schema`, and at least `required`.
fn assert_shape(v: &Value, schema: &[&str], required: &[&str]) {
    let have = keys(v);
    let allowed: BTreeSet<&str> = schema.iter().copied().collect();
    let extra: Vec<_> = have.difference(&allowed).collect();
    assert!(extra.is_empty(), "fields {extra:?} are not in the schema: {v}");
    for f in required {
        assert!(have.contains(f), "missing {f}: {v}");
    }
}

fn assert_error(r: &Resp, status: u16) {
    assert_eq!(r.status, status, "{}", r.text);
    assert!(r.header("content-type").unwrap_or("").starts_with("application/json"), "{:?}", r.headers);
    let v = r.json();
    assert_shape(&v, ERROR_RESPONSE, ERROR_RESPONSE);
    assert!(!v["errorMessage"].as_str().unwrap().is_empty());
    assert_shape(&v["i18nErrorMessage"], I18N_ERROR_MESSAGE, I18N_ERROR_MESSAGE);
    assert!(v["i18nErrorMessage"]["i18nKey"].is_string());
    assert!(v["i18nErrorMessage"]["parameters"].is_array());
}

fn assert_org_dto(v: &Value, base: &str) {
    assert_shape(v, ORGANIZATION_DTO, &["id", "name", "_links"]);
    let id = v["id"].as_str().expect("id is a JSON string");
    id.parse::<u64>().expect("id is an integer in a string");
    assert!(v["name"].is_string());
    assert_shape(&v["_links"], SELF_LINK_DTO, SELF_LINK_DTO);
    assert_eq!(v["_links"]["self"], format!("{base}{API}/organization/{id}"));
    if let Some(scim) = v.get("scimManaged") {
        assert!(scim.is_boolean());
    }
    if let Some(uuid) = v.get("uuid") {
        assert!(uuid.is_string());
    }
    if let Some(created) = v.get("created") {
        assert_shape(created, DATE_DTO, &[]);
    }
}

fn assert_page(v: &Value) {
    assert_shape(v, PAGED_DTO, PAGED_DTO);
    assert_eq!(v["_expands"], json!([]));
    for f in ["size", "start", "limit"] {
        assert!(v[f].is_u64(), "{f}: {v}");
    }
    assert!(v["isLastPage"].is_boolean());
    assert_eq!(v["size"].as_u64().unwrap() as usize, v["values"].as_array().unwrap().len());
    assert_shape(&v["_links"], PAGED_LINK_DTO, &["base", "context", "self"]);
}

fn ids_of(page: &Value) -> Vec<String> {
    page["values"].as_array().unwrap().iter().map(|o| o["id"].as_str().unwrap().to_string()).collect()
}

// ---------------------------------------------------------------- organizations

#[tokio::test]
async fn organization_create_get_delete_and_shapes() {
    let s = Site::new().await;
    let base = s.sb.url();
    let org = s.create_org("Charlie Cakes Franchises").await;
    assert_org_dto(&org, &base);
    assert_eq!(org["name"], "Charlie Cakes Franchises");
    assert_eq!(org["id"], "1");
    assert_eq!(org["scimManaged"], false);
    let uuid = org["uuid"].as_str().unwrap();
    assert_eq!(uuid.len(), 36, "{uuid}");
    let created = &org["created"];
    assert_shape(created, DATE_DTO, DATE_DTO);
    assert!(created["epochMillis"].is_i64());
    for f in ["friendly", "iso8601", "jira"] {
        assert!(created[f].is_string());
    }

    let got = s.get("/organization/1").await;
    assert_eq!(got.status, 200);
    assert_eq!(got.json(), org);

    let second = s.create_org("Atlas Coffee Co").await;
    assert_eq!(second["id"], "2");
    assert_ne!(second["uuid"], org["uuid"]);

    assert_error(&s.get("/organization/99").await, 404);
    assert_error(&s.get("/organization/abc").await, 400);

    let del = s.call(Method::DELETE, "/organization/1", None).await;
    assert_eq!(del.status, 204);
    assert!(del.text.is_empty());
    assert_error(&s.get("/organization/1").await, 404);
    assert_error(&s.call(Method::DELETE, "/organization/1", None).await, 404);

    // Ids are never reused.
    assert_eq!(s.create_org("Charlie Cakes Franchises").await["id"], "3");
}

#[tokio::test]
async fn create_is_idempotent_by_exact_name() {
    let s = Site::new().await;
    let first = s.create_org("Acme").await;
    let again = s.create_org("Acme").await;
    assert_eq!(first, again, "the existing organization comes back");
    let other = s.create_org("acme").await;
    assert_ne!(other["id"], first["id"], "names match exactly, case included");
    assert_eq!(s.sb.state().organizations.len(), 2);
}

#[tokio::test]
async fn organization_name_limits_count_chars() {
    let s = Site::new().await;
    s.create_org(&"a".repeat(200)).await;
    // 200 two-byte chars: 400 bytes, still 200 chars.
    s.create_org(&"é".repeat(200)).await;
    s.create_org(&"🙂".repeat(200)).await;
    for name in ["a".repeat(201), "é".repeat(201), String::new()] {
        let r = s.call(Method::POST, "/organization", Some(json!({ "name": name }))).await;
        assert_error(&r, 400);
    }
    assert_error(&s.call(Method::POST, "/organization", Some(json!({ "nom": "x" }))).await, 400);
    assert_error(&s.call(Method::POST, "/organization", Some(json!({ "name": 5 }))).await, 400);
    let malformed = Site::send(
        s.req(Method::POST, "/organization").header("content-type", "application/json").body("{\"name\": \"x\""),
    )
    .await;
    assert_error(&malformed, 400);
    assert_eq!(s.sb.state().organizations.len(), 3);
}

#[tokio::test]
async fn organization_list_pages_with_a_silent_cap() {
    let s = Site::new().await;
    let base = s.sb.url();
    for i in 0..120 {
        s.create_org(&format!("Org {i:03}")).await;
    }
    let first = s.get("/organization?limit=100").await;
    assert_eq!(first.status, 200);
    let p = first.json();
    assert_page(&p);
    assert_eq!(p["limit"], 50);
    assert_eq!(p["size"], 50);
    assert_eq!(p["start"], 0);
    assert_eq!(p["isLastPage"], false);
    assert_eq!(p["_links"]["base"], format!("{base}{API}"));
    assert_eq!(p["_links"]["next"], format!("{base}{API}/organization?start=50&limit=50"));
    assert!(p["_links"].get("prev").is_none());
    for org in p["values"].as_array().unwrap() {
        assert_org_dto(org, &base);
    }
    let expected: Vec<String> = (1..=50).map(|i| i.to_string()).collect();
    assert_eq!(ids_of(&p), expected, "id order");

    // Default limit is 50 too.
    assert_eq!(s.get("/organization").await.json()["limit"], 50);

    let last = s.get("/organization?start=100&limit=100").await.json();
    assert_page(&last);
    assert_eq!(last["size"], 20);
    assert_eq!(last["isLastPage"], true);
    assert!(last["_links"].get("next").is_none());
    assert_eq!(last["_links"]["prev"], format!("{base}{API}/organization?start=50&limit=50"));

    // Exactly at the end: empty last page.
    let empty = s.get("/organization?start=120").await.json();
    assert_eq!((empty["size"].as_u64(), empty["isLastPage"].as_bool()), (Some(0), Some(true)));

    // A small limit.
    let small = s.get("/organization?start=3&limit=2").await.json();
    assert_eq!(ids_of(&small), ["4", "5"]);
    assert_eq!(small["limit"], 2);

    // Walking the pages as a client does sees every org once.
    let mut seen = Vec::new();
    let mut start = 0;
    loop {
        let page = s.get(&format!("/organization?start={start}&limit=7")).await.json();
        let ids = ids_of(&page);
        start += ids.len();
        seen.extend(ids);
        if page["isLastPage"] == true {
            break;
        }
    }
    assert_eq!(seen.len(), 120);

    for bad in ["start=-1", "limit=-1", "limit=abc", "start=1.5"] {
        assert_error(&s.get(&format!("/organization?{bad}")).await, 400);
    }
}

#[tokio::test]
async fn page_cap_is_configurable() {
    let s = Site::start(SandboxConfig { page_cap: 3, ..SandboxConfig::default() }).await;
    for name in ["a", "b", "c", "d"] {
        s.create_org(name).await;
    }
    let p = s.get("/organization?limit=50").await.json();
    assert_eq!((p["limit"].as_u64(), p["size"].as_u64()), (Some(3), Some(3)));
    assert_eq!(p["isLastPage"], false);
}

#[tokio::test]
async fn organizations_filter_by_account_id() {
    let s = Site::new().await;
    let a = s.create_org_id("A").await;
    let _b = s.create_org_id("B").await;
    let c = s.create_org_id("C").await;
    for org in [a, c] {
        let r =
            s.call(Method::POST, &format!("/organization/{org}/user"), Some(json!({ "accountIds": ["acct-1"] }))).await;
        assert_eq!(r.status, 204);
    }
    let p = s.get("/organization?accountId=acct-1").await.json();
    assert_eq!(ids_of(&p), [a.to_string(), c.to_string()]);
}

#[tokio::test]
async fn delete_organization_removes_members_properties_and_links() {
    let s = Site::start(SandboxConfig { service_desks: vec!["1".into()], ..SandboxConfig::default() }).await;
    let keep = s.create_org_id("Keep").await;
    let gone = s.create_org_id("Gone").await;
    for org in [keep, gone] {
        s.call(Method::POST, &format!("/organization/{org}/user"), Some(json!({ "accountIds": ["u1"] }))).await;
        s.put_property(org, "k", "1").await;
        s.call(Method::POST, "/servicedesk/1/organization", Some(json!({ "organizationId": org }))).await;
    }
    assert_eq!(s.call(Method::DELETE, &format!("/organization/{gone}"), None).await.status, 204);
    let state = s.sb.state();
    assert_eq!(state.organizations.len(), 1);
    assert!(state.members.iter().all(|m| m.organization_id == keep));
    assert!(state.properties.iter().all(|p| p.organization_id == keep));
    assert_eq!(state.service_desks, vec![crate::common::sandbox_link("Keep", keep, "1")]);
    let desk = s.get("/servicedesk/1/organization").await.json();
    assert_eq!(ids_of(&desk), [keep.to_string()]);
    // The name is free again.
    assert_ne!(s.create_org_id("Gone").await, gone);
}

// ---------------------------------------------------------------- properties

#[tokio::test]
async fn properties_set_get_list_delete() {
    let s = Site::new().await;
    let base = s.sb.url();
    let org = s.create_org_id("Props").await;

    let created = s.put_property(org, "organization.attributes", r#"{"phone":"0800","mail":"c@example.com"}"#).await;
    assert_eq!(created.status, 201, "{}", created.text);
    let updated = s.put_property(org, "organization.attributes", r#"{"phone":"0900"}"#).await;
    assert_eq!(updated.status, 200, "{}", updated.text);
    assert_eq!(s.put_property(org, "alpha", "[1,2,3]").await.status, 201);
    assert_eq!(s.put_property(org, "scalar", "\"text\"").await.status, 201);

    let got = s.get(&format!("/organization/{org}/property/organization.attributes")).await;
    assert_eq!(got.status, 200);
    let v = got.json();
    assert_shape(&v, ENTITY_PROPERTY, ENTITY_PROPERTY);
    assert_eq!(v, json!({"key": "organization.attributes", "value": {"phone": "0900"}}));
    assert_eq!(s.get(&format!("/organization/{org}/property/scalar")).await.json()["value"], "text");

    let list = s.get(&format!("/organization/{org}/property")).await;
    assert_eq!(list.status, 200);
    let list = list.json();
    assert_shape(&list, PROPERTY_KEYS, PROPERTY_KEYS);
    let entries = list["keys"].as_array().unwrap();
    let names: Vec<&str> = entries.iter().map(|k| k["key"].as_str().unwrap()).collect();
    assert_eq!(names, ["alpha", "organization.attributes", "scalar"]);
    for k in entries {
        assert_shape(k, PROPERTY_KEY, PROPERTY_KEY);
    }
    assert_eq!(entries[0]["self"], format!("{base}{API}/organization/{org}/property/alpha"));

    let del = s.call(Method::DELETE, &format!("/organization/{org}/property/alpha"), None).await;
    assert_eq!(del.status, 204);
    assert_error(&s.get(&format!("/organization/{org}/property/alpha")).await, 404);
    assert_error(&s.call(Method::DELETE, &format!("/organization/{org}/property/alpha"), None).await, 404);

    // Missing organization.
    assert_error(&s.get("/organization/999/property").await, 404);
    assert_error(&s.get("/organization/999/property/k").await, 404);
    assert_error(&s.put_property(999, "k", "1").await, 404);
    assert_error(&s.call(Method::DELETE, "/organization/999/property/k", None).await, 404);
}

#[tokio::test]
async fn property_keys_may_hold_any_characters() {
    let s = Site::new().await;
    let org = s.create_org_id("Keys").await;
    let odd = ["with space", "a/b", "ünï©ødé 🙂", "q?x=1&y#z", "100%"];
    for key in odd {
        assert_eq!(s.put_property(org, key, "true").await.status, 201, "{key}");
        let got = s.get(&format!("/organization/{org}/property/{}", encode(key))).await;
        assert_eq!(got.status, 200, "{key}");
        assert_eq!(got.json(), json!({"key": key, "value": true}));
    }
    let listed: BTreeSet<String> = s.get(&format!("/organization/{org}/property")).await.json()["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["key"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(listed, odd.iter().map(|k| k.to_string()).collect());
    // The listed self links lead back to the property.
    let list = s.get(&format!("/organization/{org}/property")).await.json();
    for entry in list["keys"].as_array().unwrap() {
        let r = s
            .http
            .get(entry["self"].as_str().unwrap())
            .basic_auth("sandbox@example.com", Some("sandbox-token"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{}", entry["self"]);
    }
}

#[tokio::test]
async fn property_key_and_value_limits() {
    let s = Site::new().await;
    let org = s.create_org_id("Limits").await;

    assert_eq!(s.put_property(org, &"k".repeat(255), "1").await.status, 201);
    assert_error(&s.put_property(org, &"k".repeat(256), "1").await, 400);
    // 128 two-byte chars = 256 bytes: over the limit although 128 chars.
    assert_error(&s.put_property(org, &"é".repeat(128), "1").await, 400);
    assert_eq!(s.put_property(org, &"é".repeat(127), "1").await.status, 201);

    // A JSON string literal of exactly 32768 bytes, then one byte more.
    let at_limit = format!("\"{}\"", "x".repeat(32_766));
    assert_eq!(at_limit.len(), 32_768);
    assert_eq!(s.put_property(org, "big", &at_limit).await.status, 201);
    let over = format!("\"{}\"", "x".repeat(32_767));
    assert_error(&s.put_property(org, "bigger", &over).await, 400);

    for bad in ["", "   ", "{", "not json", "{\"a\":1}}"] {
        assert_error(&s.put_property(org, "bad", bad).await, 400);
    }
    let state = s.sb.state();
    assert!(state.properties.iter().all(|p| p.key != "bad" && p.key != "bigger"));
    assert_eq!(state.properties.len(), 3);
}

// ---------------------------------------------------------------- members

#[tokio::test]
async fn members_add_list_remove() {
    let s = Site::new().await;
    let base = s.sb.url();
    let org = s.create_org_id("Members").await;
    let path = format!("/organization/{org}/user");
    let add = s
        .call(
            Method::POST,
            &path,
            Some(json!({ "accountIds": ["qm:b-2", "5b10ac8d82e05b22cc7d4ef5", "Zed", "qm:a-1"], "usernames": [] })),
        )
        .await;
    assert_eq!(add.status, 204, "{}", add.text);
    assert!(add.text.is_empty());

    let page = s.get(&path).await;
    assert_eq!(page.status, 200);
    let page = page.json();
    assert_page(&page);
    let ids: Vec<&str> = page["values"].as_array().unwrap().iter().map(|u| u["accountId"].as_str().unwrap()).collect();
    assert_eq!(ids, ["5b10ac8d82e05b22cc7d4ef5", "Zed", "qm:a-1", "qm:b-2"], "byte order");
    for user in page["values"].as_array().unwrap() {
        assert_shape(user, USER_DTO, &["accountId", "displayName", "active", "_links"]);
        assert_eq!(user["active"], true);
        assert!(user["emailAddress"].is_string());
        assert!(user["timeZone"].is_string());
        assert_shape(&user["_links"], USER_LINK_DTO, USER_LINK_DTO);
        assert!(user["_links"]["avatarUrls"].is_object());
        assert!(user["_links"]["self"].as_str().unwrap().starts_with(&base));
    }

    // A user is global: same name and email in another organization.
    let other = s.create_org_id("Other").await;
    s.call(Method::POST, &format!("/organization/{other}/user"), Some(json!({ "accountIds": ["Zed"] }))).await;
    let zed_here = page["values"][1].clone();
    let zed_there = s.get(&format!("/organization/{other}/user")).await.json()["values"][0].clone();
    assert_eq!(zed_here, zed_there);

    // Adding again is harmless.
    assert_eq!(s.call(Method::POST, &path, Some(json!({ "accountIds": ["Zed"] }))).await.status, 204);

    // Remove one member and one non-member.
    let rm = s.call(Method::DELETE, &path, Some(json!({ "accountIds": ["Zed", "never-a-member"] }))).await;
    assert_eq!(rm.status, 204, "{}", rm.text);
    let rm_again = s.call(Method::DELETE, &path, Some(json!({ "accountIds": ["Zed"] }))).await;
    assert_eq!(rm_again.status, 204);
    let left = s.get(&path).await.json();
    assert_eq!(left["size"], 3);
}

#[tokio::test]
async fn unknown_account_fails_the_whole_call() {
    let s = Site::new().await;
    let org = s.create_org_id("Strict").await;
    let path = format!("/organization/{org}/user");
    let r = s
        .call(Method::POST, &path, Some(json!({ "accountIds": ["good-1", "acct-unknown-7", "good-2", "bad id"] })))
        .await;
    assert_error(&r, 400);
    let msg = r.json()["errorMessage"].as_str().unwrap().to_string();
    assert!(msg.contains("acct-unknown-7") && msg.contains("bad id"), "{msg}");
    assert!(!msg.contains("good-1"), "{msg}");
    assert_eq!(s.get(&path).await.json()["size"], 0, "nothing was added");

    s.call(Method::POST, &path, Some(json!({ "accountIds": ["good-1"] }))).await;
    let rm = s.call(Method::DELETE, &path, Some(json!({ "accountIds": ["good-1", "unknown"] }))).await;
    assert_error(&rm, 400);
    assert_eq!(s.get(&path).await.json()["size"], 1, "nothing was removed");

    for body in [json!({ "accountIds": [] }), json!({}), json!({ "usernames": ["x"] })] {
        assert_error(&s.call(Method::POST, &path, Some(body)).await, 400);
    }
    assert_error(&s.call(Method::POST, "/organization/404/user", Some(json!({ "accountIds": ["a"] }))).await, 404);
    assert_error(&s.get("/organization/404/user").await, 404);
    assert_error(&s.call(Method::DELETE, "/organization/404/user", Some(json!({ "accountIds": ["a"] }))).await, 404);
}

#[tokio::test]
async fn member_list_pages() {
    let s = Site::new().await;
    let org = s.create_org_id("Big").await;
    let ids: Vec<String> = (0..60).map(|i| format!("acct-{i:03}")).collect();
    let path = format!("/organization/{org}/user");
    for chunk in ids.chunks(50) {
        let r = s.call(Method::POST, &path, Some(json!({ "accountIds": chunk }))).await;
        assert_eq!(r.status, 204);
    }
    let first = s.get(&format!("{path}?limit=100")).await.json();
    assert_page(&first);
    assert_eq!((first["size"].as_u64(), first["isLastPage"].as_bool()), (Some(50), Some(false)));
    assert_eq!(first["_links"]["next"], format!("{}{API}{path}?start=50&limit=50", s.sb.url()));
    let second = s.get(&format!("{path}?start=50")).await.json();
    assert_eq!((second["size"].as_u64(), second["isLastPage"].as_bool()), (Some(10), Some(true)));
    assert_eq!(second["values"][9]["accountId"], "acct-059");
}

// ---------------------------------------------------------------- service desks

#[tokio::test]
async fn service_desks_link_unlink_and_list() {
    let s =
        Site::start(SandboxConfig { service_desks: vec!["10".into(), "2".into()], ..SandboxConfig::default() }).await;
    let base = s.sb.url();
    let desks = s.get("/servicedesk").await;
    assert_eq!(desks.status, 200);
    let desks = desks.json();
    assert_page(&desks);
    assert_eq!(ids_of(&desks), ["2", "10"], "numeric order");
    for d in desks["values"].as_array().unwrap() {
        assert_shape(d, SERVICE_DESK_DTO, SERVICE_DESK_DTO);
        for f in ["id", "projectId", "projectKey", "projectName", "projectTypeKey"] {
            assert!(d[f].is_string(), "{f}: {d}");
        }
        assert_shape(&d["_links"], SELF_LINK_DTO, SELF_LINK_DTO);
    }
    assert_eq!(desks["values"][0]["projectKey"], "SD2");
    assert_eq!(desks["values"][0]["_links"]["self"], format!("{base}{API}/servicedesk/2"));

    let a = s.create_org_id("A").await;
    let b = s.create_org_id("B").await;
    let link = |org: Value| s.call(Method::POST, "/servicedesk/2/organization", Some(json!({ "organizationId": org })));
    assert_eq!(link(json!(b)).await.status, 204);
    assert_eq!(link(json!(b)).await.status, 204, "already linked is fine");
    assert_eq!(link(json!(a.to_string())).await.status, 204, "numeric string accepted");
    // By project key.
    let by_key = s.call(Method::POST, "/servicedesk/SD10/organization", Some(json!({ "organizationId": a }))).await;
    assert_eq!(by_key.status, 204);

    let linked = s.get("/servicedesk/2/organization").await;
    assert_eq!(linked.status, 200);
    let linked = linked.json();
    assert_page(&linked);
    assert_eq!(ids_of(&linked), [a.to_string(), b.to_string()]);
    for org in linked["values"].as_array().unwrap() {
        assert_org_dto(org, &base);
    }
    assert_eq!(ids_of(&s.get("/servicedesk/SD2/organization").await.json()), ids_of(&linked));
    assert_eq!(ids_of(&s.get("/servicedesk/10/organization").await.json()), [a.to_string()]);

    let unlink = s.call(Method::DELETE, "/servicedesk/2/organization", Some(json!({ "organizationId": b }))).await;
    assert_eq!(unlink.status, 204);
    let unlink_again =
        s.call(Method::DELETE, "/servicedesk/2/organization", Some(json!({ "organizationId": b }))).await;
    assert_eq!(unlink_again.status, 204, "not linked is fine");
    assert_eq!(ids_of(&s.get("/servicedesk/2/organization").await.json()), [a.to_string()]);

    // 404s: unknown desk (all operations), unknown org on link.
    assert_error(&s.get("/servicedesk/3/organization").await, 404);
    assert_error(&s.call(Method::POST, "/servicedesk/3/organization", Some(json!({ "organizationId": a }))).await, 404);
    assert_error(
        &s.call(Method::DELETE, "/servicedesk/3/organization", Some(json!({ "organizationId": a }))).await,
        404,
    );
    assert_error(&link(json!(999)).await, 404);
    assert_error(&link(json!("x")).await, 400);
    assert_error(&s.call(Method::POST, "/servicedesk/2/organization", Some(json!({}))).await, 400);

    let state = s.sb.state();
    assert_eq!(state.desks, ["2", "10"]);
    let links: Vec<(u64, &str)> =
        state.service_desks.iter().map(|l| (l.organization_id, l.service_desk_id.as_str())).collect();
    assert_eq!(links, [(a, "2"), (a, "10")]);
}

#[tokio::test]
async fn service_desk_list_pages() {
    let desks: Vec<String> = (1..=55).map(|i| i.to_string()).collect();
    let s = Site::start(SandboxConfig { service_desks: desks, ..SandboxConfig::default() }).await;
    let p = s.get("/servicedesk?limit=100").await.json();
    assert_eq!((p["size"].as_u64(), p["isLastPage"].as_bool()), (Some(50), Some(false)));
    let q = s.get("/servicedesk?start=50").await.json();
    assert_eq!(ids_of(&q), ["51", "52", "53", "54", "55"]);
    assert_eq!(q["isLastPage"], true);
}

// ---------------------------------------------------------------- auth, routes

#[tokio::test]
async fn auth_is_required_and_checked() {
    let s = Site::new().await;
    let url = s.url("/organization");
    let none = Site::send(s.http.get(&url)).await;
    assert_error(&none, 401);
    let wrong = Site::send(s.http.get(&url).basic_auth("sandbox@example.com", Some("wrong"))).await;
    assert_error(&wrong, 401);
    let wrong_email = Site::send(s.http.get(&url).basic_auth("other@example.com", Some("sandbox-token"))).await;
    assert_error(&wrong_email, 401);
    let bearer = Site::send(s.http.get(&url).bearer_auth("sandbox-bearer")).await;
    assert_eq!(bearer.status, 200);
    let bad_bearer = Site::send(s.http.get(&url).bearer_auth("nope")).await;
    assert_error(&bad_bearer, 401);
    // A write without auth changes nothing.
    let post = Site::send(s.http.post(&url).json(&json!({ "name": "x" }))).await;
    assert_error(&post, 401);
    assert!(s.sb.state().organizations.is_empty());
    let stats = s.sb.stats();
    assert_eq!(stats.unauthorized, 5);
    assert_eq!(stats.total, 6);
    assert_eq!(stats.by_route.get("GET /organization"), Some(&1));
}

#[tokio::test]
async fn custom_credentials_replace_the_defaults() {
    let s = Site::start(SandboxConfig {
        credentials: SandboxCredentials { email: "me@corp.example".into(), api_token: "s3cret".into(), bearer: None },
        ..SandboxConfig::default()
    })
    .await;
    let url = s.url("/organization");
    let ok = Site::send(s.http.get(&url).basic_auth("me@corp.example", Some("s3cret"))).await;
    assert_eq!(ok.status, 200);
    assert_error(&Site::send(s.http.get(&url).bearer_auth("sandbox-bearer")).await, 401);
    assert_error(&s.get("/organization").await, 401);
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_error_bodies() {
    let s = Site::new().await;
    assert_error(&s.get("/nothing/here").await, 404);
    assert_error(&s.get("/organization/1/unknown").await, 404);
    let r = s.call(Method::PATCH, "/organization", None).await;
    assert_error(&r, 405);
    let outside = Site::send(s.http.get(format!("{}/elsewhere", s.sb.url()))).await;
    assert_error(&outside, 401);
    assert!(s.sb.stats().by_route.is_empty(), "no handler was reached");
}

// ---------------------------------------------------------------- limits and faults

#[tokio::test]
async fn rate_limit_answers_429_with_headers() {
    let s = Site::start(SandboxConfig { rate_limit: Some(2.0), ..SandboxConfig::default() }).await;
    let mut limited = None;
    let mut ok = 0;
    for _ in 0..6 {
        let r = s.get("/organization").await;
        match r.status {
            200 => ok += 1,
            429 => limited = Some(r),
            other => panic!("unexpected {other}"),
        }
    }
    assert!(ok >= 1, "the bucket starts full");
    let r = limited.expect("a burst over the rate meets a 429");
    assert_error(&r, 429);
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!(retry >= 1);
    assert_eq!(r.header("x-ratelimit-limit"), Some("2"));
    assert_eq!(r.header("x-ratelimit-remaining"), Some("0"));
    // The site-wide limit stands for a tenant quota; per-endpoint buckets
    // (`endpoint_limits`) answer jira-burst-based.
    assert_eq!(r.header("ratelimit-reason"), Some("jira-quota-tenant-based"));
    let reset = chrono::DateTime::parse_from_rfc3339(r.header("x-ratelimit-reset").unwrap()).expect("ISO 8601 reset");
    let now = chrono::Utc::now();
    assert!(reset <= now + chrono::Duration::seconds(2), "{reset}");
    assert!(reset >= now - chrono::Duration::seconds(2), "{reset}");
    let stats = s.sb.stats();
    assert_eq!(stats.rate_limited + ok, 6);
    assert_eq!(stats.reads, ok);

    // Waiting for the reset lets the next request through.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(s.get("/organization").await.status, 200);

    // Lifting the limit at runtime.
    s.sb.set_faults(Faults::default());
    for _ in 0..10 {
        assert_eq!(s.get("/organization").await.status, 200);
    }
}

#[tokio::test]
async fn fail_rate_injects_503_before_the_handler() {
    let s = Site::start(SandboxConfig { fail_rate: 1.0, ..SandboxConfig::default() }).await;
    assert_eq!(s.sb.faults().fail_rate, 1.0);
    let r = s.call(Method::POST, "/organization", Some(json!({ "name": "never" }))).await;
    assert_error(&r, 503);
    assert_error(&s.get("/organization").await, 503);
    assert!(s.sb.state().organizations.is_empty(), "the write was not applied");
    let stats = s.sb.stats();
    assert_eq!((stats.total, stats.injected_failures, stats.writes), (2, 2, 0));

    s.sb.set_faults(Faults::default());
    assert_eq!(s.get("/organization").await.status, 200);
}

#[tokio::test]
async fn latency_delays_every_request() {
    let s = Site::start(SandboxConfig { latency: Duration::from_millis(150), ..SandboxConfig::default() }).await;
    let t = Instant::now();
    assert_eq!(s.get("/organization").await.status, 200);
    assert!(t.elapsed() >= Duration::from_millis(150), "{:?}", t.elapsed());

    s.sb.set_faults(Faults { slow_rate: 1.0, slow_ms: 200, ..Faults::default() });
    let t = Instant::now();
    assert_eq!(s.get("/organization").await.status, 200);
    assert!(t.elapsed() >= Duration::from_millis(200), "{:?}", t.elapsed());
}

#[tokio::test]
async fn dropped_write_is_applied_but_unanswered() {
    let s = Site::new().await;
    s.sb.set_faults(Faults { drop_rate: 1.0, ..Faults::default() });
    let err = s
        .req(Method::POST, "/organization")
        .json(&json!({ "name": "Lost answer" }))
        .send()
        .await
        .expect_err("the connection closes without a response");
    assert!(!err.is_status(), "{err:?}");
    let state = s.sb.state();
    assert_eq!(state.organizations.len(), 1);
    assert_eq!(state.organizations[0].name, "Lost answer");
    assert_eq!(s.sb.stats().dropped, 1);

    // Reads are never dropped.
    assert_eq!(s.get("/organization").await.status, 200);

    // The client's retry finds the organization thanks to the idempotent create.
    s.sb.set_faults(Faults::default());
    let again = s.create_org("Lost answer").await;
    assert_eq!(again["id"], state.organizations[0].id.to_string());
    assert_eq!(s.sb.state().organizations.len(), 1);

    // A dropped member add is applied too.
    s.sb.set_faults(Faults { drop_rate: 1.0, ..Faults::default() });
    let id = state.organizations[0].id;
    let res =
        s.req(Method::POST, &format!("/organization/{id}/user")).json(&json!({ "accountIds": ["a1"] })).send().await;
    assert!(res.is_err());
    assert_eq!(s.sb.state().members.len(), 1);
}

#[tokio::test]
async fn malformed_rate_garbles_success_bodies_only() {
    let s = Site::new().await;
    s.sb.set_faults(Faults { malformed_rate: 1.0, ..Faults::default() });
    let r = s.get("/organization").await;
    assert_eq!(r.status, 200);
    assert!(serde_json::from_str::<Value>(&r.text).is_err(), "{}", r.text);
    let created = s.call(Method::POST, "/organization", Some(json!({ "name": "M" }))).await;
    assert_eq!(created.status, 201);
    assert!(serde_json::from_str::<Value>(&created.text).is_err());
    assert_eq!(s.sb.state().organizations.len(), 1);
    // Errors keep their body.
    assert_error(&s.get("/organization/99").await, 404);
}

#[tokio::test]
async fn faults_can_be_changed_over_http() {
    let s = Site::new().await;
    let url = format!("{}/__sandbox/faults", s.sb.url());
    let r = s.http.put(&url).json(&json!({ "fail_rate": 1.0, "latency_ms": 5 })).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let f = s.sb.faults();
    assert_eq!((f.fail_rate, f.latency), (1.0, Duration::from_millis(5)));
    let read: Faults = s.http.get(&url).send().await.unwrap().json().await.unwrap();
    assert_eq!(read, f);
    assert_error(&s.get("/organization").await, 503);
}

// ---------------------------------------------------------------- seeding, state, stats

fn write_lines<T: serde::Serialize>(dir: &std::path::Path, name: &str, rows: &[T]) {
    let text: String = rows.iter().map(|r| serde_json::to_string(r).unwrap() + "\n").collect();
    std::fs::write(dir.join(name), text).unwrap();
}

#[tokio::test]
async fn seed_snapshot_round_trips_through_state() {
    let dir = tempfile::tempdir().unwrap();
    let created = json!({
        "epochMillis": 1_600_000_000_000_i64,
        "friendly": "13/Sep/20 12:26 PM",
        "iso8601": "2020-09-13T12:26:40+0000",
        "jira": "2020-09-13T12:26:40.000+0000"
    });
    let orgs = vec![
        OrgRecord { id: 7, name: "Old Org".into(), uuid: None, scim_managed: None, created: None },
        OrgRecord {
            id: 12,
            name: "New Org".into(),
            uuid: Some("0b8c2f3e-1111-4222-8333-444455556666".into()),
            scim_managed: Some(true),
            created: Some(created.clone()),
        },
    ];
    let members = vec![
        MemberRecord {
            organization: "Old Org".into(),
            organization_id: 7,
            account_id: "qm:seeded:1".into(),
            email: Some("fred@example.com".into()),
            display_name: Some("Fred F. User".into()),
        },
        MemberRecord {
            organization: "New Org".into(),
            organization_id: 12,
            account_id: "legacy user unknown".into(),
            email: None,
            display_name: Some("Hidden Email".into()),
        },
        MemberRecord {
            organization: "New Org".into(),
            organization_id: 12,
            account_id: "qm:seeded:1".into(),
            email: Some("fred@example.com".into()),
            display_name: Some("Fred F. User".into()),
        },
    ];
    let properties = vec![
        PropertyRecord {
            organization: "Old Org".into(),
            organization_id: 7,
            key: "attrs".into(),
            value: json!({"tier": "gold", "n": [1, 2]}),
        },
        PropertyRecord { organization: "New Org".into(), organization_id: 12, key: "flag".into(), value: json!(true) },
    ];
    let links = vec![crate::common::sandbox_link("Old Org", 7, "3"), crate::common::sandbox_link("Old Org", 7, "20")];
    write_lines(dir.path(), "organizations.jsonl", &orgs);
    write_lines(dir.path(), "members.jsonl", &members);
    write_lines(dir.path(), "properties.jsonl", &properties);
    write_lines(dir.path(), "service_desks.jsonl", &links);

    let s = Site::start(SandboxConfig {
        seed: Some(dir.path().to_path_buf()),
        service_desks: vec!["5".into()],
        ..SandboxConfig::default()
    })
    .await;
    let state = s.sb.state();
    assert_eq!(state.organizations, orgs);
    let mut sorted_members = members.clone();
    sorted_members.sort_by(|a, b| (a.organization_id, &a.account_id).cmp(&(b.organization_id, &b.account_id)));
    assert_eq!(state.members, sorted_members);
    assert_eq!(state.properties, properties);
    assert_eq!(state.service_desks, links);
    assert_eq!(state.desks, ["3", "5", "20"]);

    // The API shows seeded fields exactly; absent ones stay absent.
    let old = s.get("/organization/7").await.json();
    assert_eq!(keys(&old), ["_links", "id", "name"].into_iter().collect());
    let new = s.get("/organization/12").await.json();
    assert_eq!(new["uuid"], "0b8c2f3e-1111-4222-8333-444455556666");
    assert_eq!(new["scimManaged"], true);
    assert_eq!(new["created"], created);

    // Seeded users keep their names; a hidden email stays hidden; a seeded
    // id is valid even where the synthetic rule would refuse it.
    let users = s.get("/organization/12/user").await.json();
    let first = &users["values"][0];
    assert_eq!(first["accountId"], "legacy user unknown");
    assert!(first.get("emailAddress").is_none());
    assert_eq!(first["displayName"], "Hidden Email");
    assert_eq!(users["values"][1]["emailAddress"], "fred@example.com");
    let add =
        s.call(Method::POST, "/organization/7/user", Some(json!({ "accountIds": ["legacy user unknown"] }))).await;
    assert_eq!(add.status, 204);

    // New ids continue after the largest seeded one.
    assert_eq!(s.create_org("Next").await["id"], "13");
    assert_eq!(s.create_org("Old Org").await["id"], "7");
    assert_eq!(s.get("/organization/7/property/attrs").await.json()["value"], json!({"tier": "gold", "n": [1, 2]}));
}

#[tokio::test]
async fn seed_from_csv_snapshot_with_formula_escape() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    std::fs::write(
        p.join("manifest.json"),
        r#"{"format":"jsm-orgs-snapshot","format_version":1,"data_format":"csv","csv_formula_escape":"apostrophe","files":{}}"#,
    )
    .unwrap();
    std::fs::write(
        p.join("organizations.csv"),
        "id,name,uuid,scim_managed,created\n1,'=cmd(),,,\n2,Plain,u-2,false,\n",
    )
    .unwrap();
    std::fs::write(
        p.join("members.csv"),
        "organization,organization_id,account_id,email,display_name\n'=cmd(),1,acct-1,a@example.com,'-Ann\n",
    )
    .unwrap();
    std::fs::write(p.join("properties.csv"), "organization,organization_id,key,value\nPlain,2,cfg,\"{\"\"a\"\":1}\"\n")
        .unwrap();
    let s = Site::start(SandboxConfig { seed: Some(p.to_path_buf()), ..SandboxConfig::default() }).await;
    let state = s.sb.state();
    assert_eq!(state.organizations[0].name, "=cmd()");
    assert_eq!(state.organizations[1].uuid.as_deref(), Some("u-2"));
    assert_eq!(state.members[0].display_name.as_deref(), Some("-Ann"));
    assert_eq!(state.properties[0].value, json!({"a": 1}));
    assert!(state.service_desks.is_empty());
}

#[tokio::test]
async fn inconsistent_or_missing_seed_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("members.jsonl"), r#"{"organization":"X","organization_id":9,"account_id":"a"}"#)
        .unwrap();
    let err = Sandbox::start(SandboxConfig { seed: Some(dir.path().to_path_buf()), ..SandboxConfig::default() })
        .await
        .err()
        .expect("a member of a missing organization is refused");
    assert!(format!("{err:#}").contains("organization_id 9"), "{err:#}");

    let missing =
        Sandbox::start(SandboxConfig { seed: Some(dir.path().join("nope")), ..SandboxConfig::default() }).await;
    assert!(missing.is_err());

    // An empty directory is an empty site.
    let empty = tempfile::tempdir().unwrap();
    let sb = Sandbox::start(SandboxConfig { seed: Some(empty.path().to_path_buf()), ..SandboxConfig::default() })
        .await
        .unwrap();
    assert_eq!(sb.state(), Default::default());
    sb.shutdown().await;
}

#[tokio::test]
async fn stats_count_every_route() {
    let s = Site::start(SandboxConfig { service_desks: vec!["1".into()], ..SandboxConfig::default() }).await;
    let org = s.create_org_id("Stats").await;
    let o = format!("/organization/{org}");
    let ids = json!({ "accountIds": ["a1"] });
    let link = json!({ "organizationId": org });
    s.get("/organization").await;
    s.get(&o).await;
    s.get(&format!("{o}/property")).await;
    s.put_property(org, "k", "1").await;
    s.get(&format!("{o}/property/k")).await;
    s.call(Method::DELETE, &format!("{o}/property/k"), None).await;
    s.call(Method::POST, &format!("{o}/user"), Some(ids.clone())).await;
    s.get(&format!("{o}/user")).await;
    s.call(Method::DELETE, &format!("{o}/user"), Some(ids)).await;
    s.get("/servicedesk").await;
    s.call(Method::POST, "/servicedesk/1/organization", Some(link.clone())).await;
    s.get("/servicedesk/1/organization").await;
    s.call(Method::DELETE, "/servicedesk/1/organization", Some(link)).await;
    s.call(Method::DELETE, &o, None).await;
    // Not reaching a handler: unauthorized, unknown route.
    Site::send(s.http.get(s.url("/organization"))).await;
    s.get("/nowhere").await;

    let stats = s.sb.stats();
    let routes = [
        "GET /organization",
        "POST /organization",
        "GET /organization/{id}",
        "DELETE /organization/{id}",
        "GET /organization/{id}/property",
        "GET /organization/{id}/property/{key}",
        "PUT /organization/{id}/property/{key}",
        "DELETE /organization/{id}/property/{key}",
        "GET /organization/{id}/user",
        "POST /organization/{id}/user",
        "DELETE /organization/{id}/user",
        "GET /servicedesk",
        "GET /servicedesk/{id}/organization",
        "POST /servicedesk/{id}/organization",
        "DELETE /servicedesk/{id}/organization",
    ];
    for route in routes {
        assert_eq!(stats.by_route.get(route), Some(&1), "{route}: {stats:?}");
    }
    assert_eq!(stats.by_route.len(), 15);
    assert_eq!((stats.reads, stats.writes), (7, 8));
    assert_eq!(stats.total, 17);
    assert_eq!(stats.unauthorized, 1);

    // The same counters over HTTP, without auth and without counting themselves.
    let url = format!("{}/__sandbox/stats", s.sb.url());
    let over_http: SandboxStats = s.http.get(&url).send().await.unwrap().json().await.unwrap();
    assert_eq!(over_http, stats);
    assert_eq!(s.sb.stats(), stats);

    let state: Value =
        s.http.get(format!("{}/__sandbox/state", s.sb.url())).send().await.unwrap().json().await.unwrap();
    assert_eq!(state, serde_json::to_value(s.sb.state()).unwrap());

    let reset = s.http.post(format!("{}/__sandbox/stats/reset", s.sb.url())).send().await.unwrap();
    assert!(reset.status().is_success());
    assert_eq!(s.sb.stats(), SandboxStats::default());
    s.get("/organization").await;
    s.sb.reset_stats();
    assert_eq!(s.sb.stats(), SandboxStats::default());
}

#[tokio::test]
async fn concurrent_clients_see_consistent_state() {
    let s = Site::new().await;
    let org = s.create_org_id("Busy").await;
    let mut tasks = Vec::new();
    for w in 0..8 {
        let http = s.http.clone();
        let url = s.url(&format!("/organization/{org}/user"));
        tasks.push(tokio::spawn(async move {
            for i in 0..25 {
                let r = http
                    .post(&url)
                    .basic_auth("sandbox@example.com", Some("sandbox-token"))
                    .json(&json!({ "accountIds": [format!("w{w}-{i:02}")] }))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 204);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(s.sb.state().members.len(), 200);
    assert_eq!(s.sb.stats().writes, 201);
}

#[tokio::test]
async fn shutdown_stops_the_server() {
    let s = Site::new().await;
    assert_eq!(s.get("/organization").await.status, 200);
    let url = s.url("/organization");
    let http = s.http.clone();
    s.sb.shutdown().await;
    let after = http.get(&url).basic_auth("sandbox@example.com", Some("sandbox-token")).send().await;
    assert!(after.is_err(), "{after:?}");
}

/// Per endpoint × method buckets: a PUT burst meets a 429 `jira-burst-based`
/// while GETs of the same path go on; accepted answers state the limit, and
/// warn when the bucket is almost empty.
#[tokio::test]
async fn endpoint_limits_answer_burst_429s_per_route_and_state_the_limit() {
    let limits = jsm_orgs::sandbox::EndpointLimits::parse("GET=100,PUT=1").unwrap();
    let s = Site::start(SandboxConfig { endpoint_limits: limits, ..SandboxConfig::default() }).await;
    let org = s.call(Method::POST, "/organization", Some(json!({"name": "Acme"}))).await;
    let id = org.json()["id"].as_str().unwrap().to_string();
    let put = format!("/organization/{id}/property/k");
    // PUT at 1/s: a bucket of one token, refilled after a second.
    let first = s.call(Method::PUT, &put, Some(json!(1))).await;
    assert_eq!(first.status, 201);
    assert_eq!(first.header("x-ratelimit-limit"), Some("1"));
    assert_eq!(first.header("x-ratelimit-nearlimit"), Some("true"), "the bucket is empty now");
    let second = s.call(Method::PUT, &put, Some(json!(2))).await;
    assert_error(&second, 429);
    assert_eq!(second.header("ratelimit-reason"), Some("jira-burst-based"));
    assert_eq!(second.header("x-ratelimit-limit"), Some("1"));
    assert!(second.header("retry-after").is_some());
    // Another method of the same path has its own bucket.
    let read = s.get(&put).await;
    assert_eq!(read.status, 200);
    assert_eq!(read.header("x-ratelimit-limit"), Some("100"));
    assert_eq!(read.header("x-ratelimit-nearlimit"), None);
    // POST has no limit here: no rate-limit headers.
    assert_eq!(org.header("x-ratelimit-limit"), None);
    assert_eq!(s.sb.stats().rate_limited, 1);
}
