//! The typed client against wiremock: every call's exact method, path,
//! headers and body; paging over capped pages; retries, rate limits, fatal
//! statuses, timeouts and the shared 429 cooldown. Every mock carries
//! `.expect(n)`, so the number of requests sent is asserted when the server
//! is dropped. Only 127.0.0.1 is contacted.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use jsm_orgs::api::{ApiError, Auth, Client, ClientConfig, ErrorKind, PropertyWrite};
use serde_json::{json, Value};
use std::time::Instant;
use wiremock::matchers::{any, body_string, header, header_regex, method, path, query_param};
use wiremock::{Match, Mock, MockBuilder, MockServer, Request, Respond, ResponseTemplate};

use crate::common::{client, client_with, fast_retry, throttle, EMAIL, TOKEN};

const API: &str = "/rest/servicedeskapi";

// ----- helpers -------------------------------------------------------------

fn basic_value() -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(format!("{EMAIL}:{TOKEN}"));
    format!("Basic {b64}")
}

/// No error text may carry the secret, in clear or inside the Basic header.
fn assert_no_secret(e: &ApiError) {
    let b64 = base64::engine::general_purpose::STANDARD.encode(format!("{EMAIL}:{TOKEN}"));
    for text in [e.to_string(), format!("{e:?}"), e.kind.to_string()] {
        assert!(!text.contains(TOKEN), "token leaked in {text:?}");
        assert!(!text.contains(&b64), "basic credential leaked in {text:?}");
    }
}

/// The request has no body and no `Content-Type`.
struct NoBody;
impl Match for NoBody {
    fn matches(&self, r: &Request) -> bool {
        r.body.is_empty() && !r.headers.contains_key("content-type")
    }
}

/// The request carries no query string at all.
struct NoQuery;
impl Match for NoQuery {
    fn matches(&self, r: &Request) -> bool {
        r.url.query().is_none()
    }
}

/// `method` + `SITE_PATH/rest/servicedeskapi{p}` with the headers every call
/// must carry (Basic auth, Accept, User-Agent).
fn api_at(prefix: &str, m: &str, p: &str) -> MockBuilder {
    Mock::given(method(m))
        .and(path(format!("{prefix}{API}{p}")))
        .and(header("authorization", basic_value().as_str()))
        .and(header("accept", "application/json"))
        .and(header_regex("user-agent", "^jsm-orgs/"))
}

fn api(m: &str, p: &str) -> MockBuilder {
    api_at("", m, p)
}

/// A call without a body (GET, DELETE of a resource).
fn api_nobody(m: &str, p: &str) -> MockBuilder {
    api(m, p).and(NoBody)
}

/// A call with a JSON body that must be exactly `body`.
fn api_json(m: &str, p: &str, body: &str) -> MockBuilder {
    api(m, p).and(header("content-type", "application/json")).and(body_string(body))
}

fn paged(m: MockBuilder, start: u64) -> MockBuilder {
    m.and(query_param("start", start.to_string())).and(query_param("limit", "50"))
}

fn page(start: u64, last: bool, values: Value) -> ResponseTemplate {
    let n = values.as_array().map_or(0, |v| v.len());
    ResponseTemplate::new(200).set_body_json(json!({
        "_expands": [],
        "start": start,
        "limit": 2,
        "size": n,
        "isLastPage": last,
        "_links": {},
        "values": values,
    }))
}

fn org(id: Value, name: &str) -> Value {
    json!({"id": id, "name": name, "_links": {"self": "x"}})
}

fn error_body(msg: &str) -> Value {
    json!({"errorMessage": msg, "i18nErrorMessage": {"i18nKey": "k", "parameters": []}})
}

/// A responder that records when each request arrived.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<(String, Instant)>>>);

impl Log {
    fn at(&self, label: &str) -> Instant {
        let log = self.0.lock().unwrap();
        log.iter().find(|(l, _)| l == label).unwrap_or_else(|| panic!("no request {label:?} in {:?}", *log)).1
    }
    fn respond(&self, label: &str, t: ResponseTemplate) -> Recorded {
        Recorded { log: self.clone(), label: label.to_string(), template: t }
    }
}

struct Recorded {
    log: Log,
    label: String,
    template: ResponseTemplate,
}

impl Respond for Recorded {
    fn respond(&self, _: &Request) -> ResponseTemplate {
        self.log.0.lock().unwrap().push((self.label.clone(), Instant::now()));
        self.template.clone()
    }
}

// ----- the 15 calls: exact requests ------------------------------------------

#[tokio::test]
async fn organizations_page_sends_paging_and_parses_string_and_integer_ids() {
    let server = MockServer::start().await;
    paged(api_nobody("GET", "/organization"), 10)
        .respond_with(page(
            10,
            false,
            json!([
                {"id": "1", "name": "Charlie Cakes", "uuid": "u-1", "scimManaged": false,
                 "created": {"epochMillis": 1, "iso8601": "2020-01-01T00:00:00Z"},
                 "_links": {"self": "x"}},
                {"id": 2, "name": "Delta"},
            ]),
        ))
        .expect(1)
        .mount(&server)
        .await;
    let c = client(&server.uri());
    let got = c.organizations_page(10, 50).await.unwrap();
    assert_eq!((got.status, got.attempts), (200, 1));
    let p = got.value;
    assert!(!p.is_last_page);
    assert_eq!(p.start, 10);
    let ids: Vec<u64> = p.values.iter().map(|o| o.id).collect();
    assert_eq!(ids, [1, 2]);
    assert_eq!(p.values[0].name, "Charlie Cakes");
    assert_eq!(p.values[0].uuid.as_deref(), Some("u-1"));
    assert_eq!(p.values[0].scim_managed, Some(false));
    assert_eq!(p.values[1].uuid, None);
    assert_eq!(p.values[1].created, None);
}

#[tokio::test]
async fn create_organization_posts_the_name() {
    let server = MockServer::start().await;
    api_json("POST", "/organization", r#"{"name":"Charlie Cakes \"Franchises\""}"#)
        .and(NoQuery)
        .respond_with(ResponseTemplate::new(201).set_body_json(org(json!("31"), "Charlie Cakes \"Franchises\"")))
        .expect(1)
        .mount(&server)
        .await;
    let got = client(&server.uri()).create_organization("Charlie Cakes \"Franchises\"").await.unwrap();
    assert_eq!((got.status, got.attempts), (201, 1));
    assert_eq!(got.value.id, 31);
    assert_eq!(got.value.name, "Charlie Cakes \"Franchises\"");
}

#[tokio::test]
async fn organization_gets_by_id() {
    let server = MockServer::start().await;
    api_nobody("GET", "/organization/4242")
        .and(NoQuery)
        .respond_with(ResponseTemplate::new(200).set_body_json(org(json!(4242), "Acme")))
        .expect(1)
        .mount(&server)
        .await;
    let got = client(&server.uri()).organization(4242).await.unwrap();
    assert_eq!(got.value.id, 4242);
    assert_eq!(got.value.name, "Acme");
}

#[tokio::test]
async fn delete_organization_sends_delete_without_body() {
    let server = MockServer::start().await;
    api_nobody("DELETE", "/organization/7").respond_with(ResponseTemplate::new(204)).expect(1).mount(&server).await;
    let got = client(&server.uri()).delete_organization(7).await.unwrap();
    assert_eq!((got.value, got.status, got.attempts), ((), 204, 1));
}

#[tokio::test]
async fn property_keys_accepts_keys_and_entity_property_key_beans() {
    let server = MockServer::start().await;
    api_nobody("GET", "/organization/1/property")
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "keys": [
                {"self": "/rest/servicedeskapi/organization/1/property/a", "key": "a"},
                {"self": "/rest/servicedeskapi/organization/1/property/b", "key": "organization.attributes"},
            ]
        })))
        .expect(1)
        .mount(&server)
        .await;
    api_nobody("GET", "/organization/2/property")
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "entityPropertyKeyBeans": [{"self": "s", "key": "from.spec.example"}]
        })))
        .expect(1)
        .mount(&server)
        .await;
    let c = client(&server.uri());
    assert_eq!(c.property_keys(1).await.unwrap().value, ["a", "organization.attributes"]);
    assert_eq!(c.property_keys(2).await.unwrap().value, ["from.spec.example"]);
}

#[tokio::test]
async fn property_gets_key_and_value() {
    let server = MockServer::start().await;
    api_nobody("GET", "/organization/1/property/organization.attributes")
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "key": "organization.attributes",
            "value": {"phone": "0800-1233456789", "mail": "charlie@example.com"}
        })))
        .expect(1)
        .mount(&server)
        .await;
    let got = client(&server.uri()).property(1, "organization.attributes").await.unwrap();
    assert_eq!(got.value.key, "organization.attributes");
    assert_eq!(got.value.value, json!({"phone": "0800-1233456789", "mail": "charlie@example.com"}));
}

#[tokio::test]
async fn set_property_puts_the_raw_value_201_created_200_updated() {
    let server = MockServer::start().await;
    api_json("PUT", "/organization/5/property/org.meta", r#"{"phone":"0800-1","tags":["a","b"],"n":1}"#)
        .respond_with(ResponseTemplate::new(201))
        .expect(1)
        .mount(&server)
        .await;
    api_json("PUT", "/organization/5/property/plain", r#""just text""#)
        .respond_with(ResponseTemplate::new(200))
        .expect(1)
        .mount(&server)
        .await;
    let c = client(&server.uri());
    let created = c.set_property(5, "org.meta", &json!({"phone": "0800-1", "tags": ["a", "b"], "n": 1})).await.unwrap();
    assert_eq!((created.value, created.status), (PropertyWrite::Created, 201));
    let updated = c.set_property(5, "plain", &json!("just text")).await.unwrap();
    assert_eq!((updated.value, updated.status), (PropertyWrite::Updated, 200));
}

#[tokio::test]
async fn property_keys_are_percent_encoded_as_one_segment() {
    let server = MockServer::start().await;
    let cases = [
        ("with space", "with%20space"),
        ("a/b", "a%2Fb"),
        ("ключ", "%D0%BA%D0%BB%D1%8E%D1%87"),
        ("ü", "%C3%BC"),
        ("50%", "50%25"),
        ("q?x#y", "q%3Fx%23y"),
    ];
    for (_, encoded) in cases {
        api_nobody("DELETE", &format!("/organization/3/property/{encoded}"))
            .and(NoQuery)
            .respond_with(ResponseTemplate::new(204))
            .expect(1)
            .mount(&server)
            .await;
    }
    // The other property calls build the same path.
    api_nobody("GET", "/organization/3/property/a%2Fb%20c")
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"key": "a/b c", "value": 1})))
        .expect(1)
        .mount(&server)
        .await;
    api_json("PUT", "/organization/3/property/a%2Fb%20c", "true")
        .respond_with(ResponseTemplate::new(201))
        .expect(1)
        .mount(&server)
        .await;
    let c = client(&server.uri());
    for (key, _) in cases {
        let got = c.delete_property(3, key).await.unwrap();
        assert_eq!((got.status, got.attempts), (204, 1), "{key}");
    }
    assert_eq!(c.property(3, "a/b c").await.unwrap().value.value, json!(1));
    assert_eq!(c.set_property(3, "a/b c", &json!(true)).await.unwrap().value, PropertyWrite::Created);
}

/// `url::PathSegmentsMut::extend` silently drops the segments "." and "..",
/// so a property key ".." would address `/organization/{id}/property` (another
/// resource): the client refuses such keys before sending anything.
#[tokio::test]
async fn dot_segment_property_keys_are_refused_not_sent_elsewhere() {
    let server = MockServer::start().await;
    Mock::given(any()).respond_with(ResponseTemplate::new(204)).expect(0).mount(&server).await;
    let c = client(&server.uri());
    for key in [".", ".."] {
        let res = c.delete_property(1, key).await;
        let sent: Vec<String> = server
            .received_requests()
            .await
            .unwrap()
            .iter()
            .map(|r| format!("{} {}", r.method, r.url.path()))
            .collect();
        assert!(sent.is_empty(), "key {key:?} was sent as {sent:?}");
        let err = res.expect_err("a dot-segment key must not be sent");
        assert!(!err.is_transient(), "{key}: {err}");
    }
}

#[tokio::test]
async fn users_page_sends_paging_and_parses_users() {
    let server = MockServer::start().await;
    paged(api_nobody("GET", "/organization/9/user"), 0)
        .respond_with(page(
            0,
            true,
            json!([
                {"accountId": "557058:a", "emailAddress": "a@x.com", "displayName": "A",
                 "active": true, "timeZone": "UTC", "_links": {}},
                {"accountId": "qm:b"},
            ]),
        ))
        .expect(1)
        .mount(&server)
        .await;
    let got = client(&server.uri()).users_page(9, 0, 50).await.unwrap();
    let p = got.value;
    assert!(p.is_last_page);
    assert_eq!(p.values.len(), 2);
    assert_eq!(p.values[0].account_id, "557058:a");
    assert_eq!(p.values[0].email_address.as_deref(), Some("a@x.com"));
    assert_eq!(p.values[0].display_name.as_deref(), Some("A"));
    assert_eq!(p.values[1].account_id, "qm:b");
    assert_eq!(p.values[1].email_address, None);
}

#[tokio::test]
async fn add_users_posts_exactly_account_ids() {
    let server = MockServer::start().await;
    api_json("POST", "/organization/9/user", r#"{"accountIds":["557058:aaa","qm:bbb"]}"#)
        .and(NoQuery)
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&server)
        .await;
    let got = client(&server.uri()).add_users(9, &["557058:aaa".into(), "qm:bbb".into()]).await.unwrap();
    assert_eq!((got.status, got.attempts), (204, 1));
}

#[tokio::test]
async fn remove_users_deletes_with_a_json_body() {
    let server = MockServer::start().await;
    api_json("DELETE", "/organization/9/user", r#"{"accountIds":["qm:bbb"]}"#)
        .and(NoQuery)
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&server)
        .await;
    let got = client(&server.uri()).remove_users(9, &["qm:bbb".into()]).await.unwrap();
    assert_eq!((got.status, got.attempts), (204, 1));
}

#[tokio::test]
async fn service_desks_page_sends_paging_and_parses_string_and_integer_ids() {
    let server = MockServer::start().await;
    paged(api_nobody("GET", "/servicedesk"), 0)
        .respond_with(page(
            0,
            true,
            json!([
                {"id": "10", "projectId": "11", "projectKey": "HELP", "projectName": "Help desk"},
                {"id": 12, "projectKey": "IT"},
            ]),
        ))
        .expect(1)
        .mount(&server)
        .await;
    let got = client(&server.uri()).service_desks_page(0, 50).await.unwrap();
    let d = got.value.values;
    assert_eq!(d.len(), 2);
    assert_eq!(d[0].id, "10");
    assert_eq!(d[0].project_key.as_deref(), Some("HELP"));
    assert_eq!(d[0].project_name.as_deref(), Some("Help desk"));
    assert_eq!(d[1].id, "12");
    assert_eq!(d[1].project_name, None);
}

#[tokio::test]
async fn desk_organizations_page_by_id_or_project_key() {
    let server = MockServer::start().await;
    paged(api_nobody("GET", "/servicedesk/HELP/organization"), 50)
        .respond_with(page(50, true, json!([org(json!("3"), "C")])))
        .expect(1)
        .mount(&server)
        .await;
    paged(api_nobody("GET", "/servicedesk/10/organization"), 0)
        .respond_with(page(0, true, json!([org(json!(4), "D")])))
        .expect(1)
        .mount(&server)
        .await;
    let c = client(&server.uri());
    let a = c.desk_organizations_page("HELP", 50, 50).await.unwrap();
    assert_eq!(a.value.values[0].id, 3);
    let b = c.desk_organizations_page("10", 0, 50).await.unwrap();
    assert_eq!(b.value.values[0].id, 4);
}

#[tokio::test]
async fn link_organization_posts_integer_organization_id() {
    let server = MockServer::start().await;
    api_json("POST", "/servicedesk/10/organization", r#"{"organizationId":42}"#)
        .and(NoQuery)
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&server)
        .await;
    let got = client(&server.uri()).link_organization("10", 42).await.unwrap();
    assert_eq!((got.status, got.attempts), (204, 1));
}

#[tokio::test]
async fn unlink_organization_deletes_with_integer_organization_id() {
    let server = MockServer::start().await;
    api_json("DELETE", "/servicedesk/HELP/organization", r#"{"organizationId":42}"#)
        .and(NoQuery)
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&server)
        .await;
    let got = client(&server.uri()).unlink_organization("HELP", 42).await.unwrap();
    assert_eq!((got.status, got.attempts), (204, 1));
}

// ----- auth and site bases ---------------------------------------------------

#[tokio::test]
async fn bearer_auth_sends_the_bearer_header() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(format!("{API}/organization/1")))
        .and(header("authorization", "Bearer oauth-access-token"))
        .and(header("accept", "application/json"))
        .and(header_regex("user-agent", "^jsm-orgs/"))
        .respond_with(ResponseTemplate::new(200).set_body_json(org(json!("1"), "A")))
        .expect(1)
        .mount(&server)
        .await;
    let c = client_with(
        &server.uri(),
        Auth::Bearer { token: "oauth-access-token".into() },
        fast_retry(0),
        Duration::from_secs(5),
    );
    assert_eq!(c.organization(1).await.unwrap().value.id, 1);
}

#[tokio::test]
async fn data_center_context_path_is_kept_before_the_api() {
    let server = MockServer::start().await;
    api_at("/jira", "GET", "/organization/5")
        .respond_with(ResponseTemplate::new(200).set_body_json(org(json!("5"), "E")))
        .expect(2)
        .mount(&server)
        .await;
    for site in [format!("{}/jira", server.uri()), format!("{}/jira/?q=dropped#frag", server.uri())] {
        let c = client(&site);
        assert_eq!(c.api_base().path(), "/jira/rest/servicedeskapi", "{site}");
        assert_eq!(c.organization(5).await.unwrap().value.id, 5, "{site}");
    }
}

#[tokio::test]
async fn cloud_id_gateway_path_is_kept_before_the_api() {
    let server = MockServer::start().await;
    let prefix = "/ex/jira/11111111-2222-3333-4444-555555555555";
    api_at(prefix, "POST", "/servicedesk/10/organization")
        .and(header("content-type", "application/json"))
        .and(body_string(r#"{"organizationId":5}"#))
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&server)
        .await;
    let c = client(&format!("{}{prefix}", server.uri()));
    c.link_organization("10", 5).await.unwrap();
}

#[test]
fn plain_http_to_a_non_loopback_host_is_refused() {
    let build = |site: &str| {
        Client::new(
            ClientConfig {
                site: url::Url::parse(site).unwrap(),
                auth: Auth::Basic { email: EMAIL.into(), token: TOKEN.into() },
                timeout: Duration::from_secs(1),
                retry: fast_retry(0),
            },
            throttle(10.0, 1),
        )
    };
    for bad in ["http://acme.atlassian.net", "http://jira.example.com/jira", "http://10.0.0.1:8080"] {
        match build(bad) {
            Ok(_) => panic!("{bad} must be refused"),
            Err(e) => {
                assert!(matches!(e, ErrorKind::Local(_)), "{bad}: {e:?}");
                assert!(e.to_string().contains("https://"), "{bad}: {e}");
                assert!(!e.to_string().contains(TOKEN));
            }
        }
    }
    for ok in ["https://acme.atlassian.net", "https://api.atlassian.com/ex/jira/abc", "http://127.0.0.1:1"] {
        assert!(build(ok).is_ok(), "{ok}");
    }
}

// ----- paging helpers over capped pages --------------------------------------

#[tokio::test]
async fn all_organizations_advances_start_by_values_received() {
    let server = MockServer::start().await;
    let pages = [
        (0, false, json!([org(json!("1"), "a"), org(json!(2), "b")])),
        (2, false, json!([org(json!("3"), "c"), org(json!("4"), "d")])),
        (4, true, json!([org(json!(5), "e")])),
    ];
    for (start, last, values) in pages {
        paged(api_nobody("GET", "/organization"), start)
            .respond_with(page(start, last, values))
            .expect(1)
            .mount(&server)
            .await;
    }
    let got = client(&server.uri()).all_organizations().await.unwrap();
    let ids: Vec<u64> = got.value.iter().map(|o| o.id).collect();
    assert_eq!(ids, [1, 2, 3, 4, 5]);
    assert_eq!(got.attempts, 3);
}

#[tokio::test]
async fn all_users_advances_start_by_values_received() {
    let server = MockServer::start().await;
    let pages = [
        (0, false, json!([{"accountId": "a"}, {"accountId": "b"}, {"accountId": "c"}])),
        (3, true, json!([{"accountId": "d"}])),
    ];
    for (start, last, values) in pages {
        paged(api_nobody("GET", "/organization/8/user"), start)
            .respond_with(page(start, last, values))
            .expect(1)
            .mount(&server)
            .await;
    }
    let got = client(&server.uri()).all_users(8).await.unwrap();
    let ids: Vec<&str> = got.value.iter().map(|u| u.account_id.as_str()).collect();
    assert_eq!(ids, ["a", "b", "c", "d"]);
    assert_eq!(got.attempts, 2);
}

#[tokio::test]
async fn all_desk_organizations_advances_start_by_values_received() {
    let server = MockServer::start().await;
    let pages = [
        (0, false, json!([org(json!("1"), "a")])),
        (1, false, json!([org(json!("2"), "b"), org(json!(3), "c")])),
        (3, true, json!([])),
    ];
    for (start, last, values) in pages {
        paged(api_nobody("GET", "/servicedesk/HELP/organization"), start)
            .respond_with(page(start, last, values))
            .expect(1)
            .mount(&server)
            .await;
    }
    let got = client(&server.uri()).all_desk_organizations("HELP").await.unwrap();
    let ids: Vec<u64> = got.value.iter().map(|o| o.id).collect();
    assert_eq!(ids, [1, 2, 3]);
    assert_eq!(got.attempts, 3);
}

#[tokio::test]
async fn an_empty_page_that_claims_more_is_an_error_naming_the_endpoint() {
    let server = MockServer::start().await;
    paged(api_nobody("GET", "/organization"), 0)
        .respond_with(page(0, false, json!([org(json!("1"), "a")])))
        .expect(1)
        .mount(&server)
        .await;
    paged(api_nobody("GET", "/organization"), 1).respond_with(page(1, false, json!([]))).expect(1).mount(&server).await;
    let err = client(&server.uri()).all_organizations().await.unwrap_err();
    assert!(!err.is_transient(), "{err}");
    assert_eq!(err.attempts, 2);
    let msg = err.to_string();
    assert!(
        msg.contains("GET /rest/servicedeskapi/organization?start=1&limit=50") && msg.contains("empty page"),
        "{msg}"
    );
}

#[tokio::test]
async fn paging_retries_inside_a_page_and_sums_attempts() {
    let server = MockServer::start().await;
    paged(api_nobody("GET", "/organization"), 0)
        .respond_with(page(0, false, json!([org(json!("1"), "a")])))
        .expect(1)
        .mount(&server)
        .await;
    paged(api_nobody("GET", "/organization"), 1)
        .respond_with(ResponseTemplate::new(502))
        .up_to_n_times(1)
        .expect(1)
        .mount(&server)
        .await;
    paged(api_nobody("GET", "/organization"), 1)
        .respond_with(page(1, true, json!([org(json!("2"), "b")])))
        .expect(1)
        .mount(&server)
        .await;
    let got = client(&server.uri()).all_organizations().await.unwrap();
    assert_eq!(got.value.len(), 2);
    assert_eq!(got.attempts, 3);
}

// ----- rate limits and retries -----------------------------------------------

#[tokio::test]
async fn a_429_with_retry_after_is_retried_after_that_long() {
    let server = MockServer::start().await;
    api_nobody("GET", "/organization/1")
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("retry-after", "1")
                .set_body_json(error_body("Rate limit exceeded")),
        )
        .up_to_n_times(1)
        .expect(1)
        .mount(&server)
        .await;
    api_nobody("GET", "/organization/1")
        .respond_with(ResponseTemplate::new(200).set_body_json(org(json!("1"), "A")))
        .expect(1)
        .mount(&server)
        .await;
    let c = client(&server.uri());
    let t0 = Instant::now();
    let got = c.organization(1).await.unwrap();
    let elapsed = t0.elapsed();
    assert!(elapsed >= Duration::from_secs(1), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(4), "{elapsed:?}");
    assert_eq!((got.status, got.attempts), (200, 2));
    let s = c.throttle().snapshot();
    assert_eq!((s.rate_limited, s.retries, s.requests), (1, 1, 2));
}

#[tokio::test]
async fn a_429_with_only_x_ratelimit_reset_waits_until_the_reset() {
    let server = MockServer::start().await;
    let t0 = Instant::now();
    let reset = chrono::Utc::now() + chrono::TimeDelta::milliseconds(1200);
    api_json("POST", "/organization", r#"{"name":"A"}"#)
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("x-ratelimit-reset", reset.to_rfc3339_opts(chrono::SecondsFormat::Millis, true).as_str())
                .insert_header("x-ratelimit-limit", "100")
                .insert_header("x-ratelimit-remaining", "0"),
        )
        .up_to_n_times(1)
        .expect(1)
        .mount(&server)
        .await;
    api_json("POST", "/organization", r#"{"name":"A"}"#)
        .respond_with(ResponseTemplate::new(201).set_body_json(org(json!("1"), "A")))
        .expect(1)
        .mount(&server)
        .await;
    let c = client(&server.uri());
    let got = c.create_organization("A").await.unwrap();
    let elapsed = t0.elapsed();
    // The reset was 1.2 s ahead when mounted; 200 ms slack for clock reads.
    assert!(elapsed >= Duration::from_secs(1), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(4), "{elapsed:?}");
    assert_eq!((got.status, got.attempts), (201, 2));
    assert_eq!(c.throttle().snapshot().rate_limited, 1);
}

#[tokio::test]
async fn a_429_without_any_hint_backs_off_and_retries() {
    let server = MockServer::start().await;
    api_nobody("GET", "/organization/1")
        .respond_with(ResponseTemplate::new(429))
        .up_to_n_times(2)
        .expect(2)
        .mount(&server)
        .await;
    api_nobody("GET", "/organization/1")
        .respond_with(ResponseTemplate::new(200).set_body_json(org(json!("1"), "A")))
        .expect(1)
        .mount(&server)
        .await;
    let c = client(&server.uri());
    let t0 = Instant::now();
    let got = c.organization(1).await.unwrap();
    // fast_retry backs off in milliseconds; a fixed 1 s pause would be wrong.
    assert!(t0.elapsed() < Duration::from_millis(900), "{:?}", t0.elapsed());
    assert_eq!(got.attempts, 3);
    assert_eq!(c.throttle().snapshot().rate_limited, 2);
}

#[tokio::test]
async fn a_429_on_every_attempt_gives_up_after_max_retries() {
    let server = MockServer::start().await;
    api_nobody("GET", "/organization/1")
        .respond_with(ResponseTemplate::new(429).set_body_json(error_body("slow down")))
        .expect(3)
        .mount(&server)
        .await;
    let c = client_with(
        &server.uri(),
        Auth::Basic { email: EMAIL.into(), token: TOKEN.into() },
        fast_retry(2),
        Duration::from_secs(5),
    );
    let err = c.organization(1).await.unwrap_err();
    assert_no_secret(&err);
    assert_eq!((err.status(), err.attempts), (Some(429), 3));
    assert!(err.is_transient() && !err.is_fatal());
    assert_eq!(err.to_string(), "HTTP 429: slow down");
}

#[tokio::test]
async fn a_503_then_success_takes_two_attempts() {
    let server = MockServer::start().await;
    api_json("PUT", "/organization/2/property/k", r#"{"a":1}"#)
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(1)
        .expect(1)
        .mount(&server)
        .await;
    api_json("PUT", "/organization/2/property/k", r#"{"a":1}"#)
        .respond_with(ResponseTemplate::new(200))
        .expect(1)
        .mount(&server)
        .await;
    let c = client(&server.uri());
    let got = c.set_property(2, "k", &json!({"a": 1})).await.unwrap();
    assert_eq!((got.value, got.status, got.attempts), (PropertyWrite::Updated, 200, 2));
    let s = c.throttle().snapshot();
    assert_eq!((s.retries, s.transient_errors, s.rate_limited), (1, 1, 0));
}

#[tokio::test]
async fn server_errors_exhaust_max_retries() {
    let server = MockServer::start().await;
    api_nobody("DELETE", "/organization/2")
        .respond_with(ResponseTemplate::new(500).set_body_string("<html>oops</html>"))
        .expect(4)
        .mount(&server)
        .await;
    let c = client_with(
        &server.uri(),
        Auth::Basic { email: EMAIL.into(), token: TOKEN.into() },
        fast_retry(3),
        Duration::from_secs(5),
    );
    let err = c.delete_organization(2).await.unwrap_err();
    assert_no_secret(&err);
    assert_eq!((err.status(), err.attempts), (Some(500), 4));
    assert!(err.is_transient());
    assert_eq!(err.to_string(), "HTTP 500: Internal Server Error");
}

#[tokio::test]
async fn a_400_is_not_retried_and_shows_the_server_message() {
    let server = MockServer::start().await;
    api_json("POST", "/organization/9/user", r#"{"accountIds":["nope"]}"#)
        .respond_with(ResponseTemplate::new(400).set_body_json(error_body("one or more usernames are unknown")))
        .expect(1)
        .mount(&server)
        .await;
    let c = client(&server.uri());
    let err = c.add_users(9, &["nope".into()]).await.unwrap_err();
    assert_no_secret(&err);
    assert_eq!((err.status(), err.attempts), (Some(400), 1));
    assert!(!err.is_transient() && !err.is_fatal() && !err.is_not_found());
    assert!(err.to_string().contains("one or more usernames are unknown"), "{err}");
    assert_eq!(err.to_string(), "HTTP 400: one or more usernames are unknown");
    assert!(!c.throttle().is_aborted());
}

#[tokio::test]
async fn a_404_is_not_retried_and_shows_the_server_message() {
    let server = MockServer::start().await;
    api_nobody("GET", "/organization/404/property/missing")
        .respond_with(ResponseTemplate::new(404).set_body_json(error_body("The property 'missing' does not exist.")))
        .expect(1)
        .mount(&server)
        .await;
    let c = client(&server.uri());
    let err = c.property(404, "missing").await.unwrap_err();
    assert_no_secret(&err);
    assert!(err.is_not_found() && !err.is_transient() && !err.is_fatal());
    assert_eq!(err.attempts, 1);
    assert!(err.to_string().contains("The property 'missing' does not exist."), "{err}");
    // The client still works afterwards.
    assert!(!c.throttle().is_aborted());
}

#[tokio::test]
async fn a_401_is_fatal_and_aborts_every_later_call() {
    let server = MockServer::start().await;
    Mock::given(any())
        .respond_with(
            ResponseTemplate::new(401)
                .set_body_json(error_body("Client must be authenticated to access this resource.")),
        )
        .expect(1)
        .mount(&server)
        .await;
    let c = client(&server.uri());
    let err = c.organization(1).await.unwrap_err();
    assert_no_secret(&err);
    assert!(err.is_fatal() && !err.is_transient());
    assert_eq!((err.status(), err.attempts), (Some(401), 1));
    assert!(err.to_string().contains("authenticated"), "{err}");
    assert!(c.throttle().is_aborted());
    assert!(c.throttle().abort_reason().unwrap().contains("401"));
    // A clone shares the throttle: nothing more is sent.
    let other = c.clone();
    let err2 = other.create_organization("x").await.unwrap_err();
    assert_no_secret(&err2);
    assert!(matches!(err2.kind, ErrorKind::Aborted(_)), "{err2:?}");
    assert!(!err2.is_transient());
    assert_eq!(server.received_requests().await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_403_is_fatal_and_aborts_every_later_call() {
    let server = MockServer::start().await;
    Mock::given(any())
        .respond_with(
            ResponseTemplate::new(403).set_body_json(error_body("You do not have permission to delete organizations.")),
        )
        .expect(1)
        .mount(&server)
        .await;
    let c = client(&server.uri());
    let err = c.delete_organization(3).await.unwrap_err();
    assert_no_secret(&err);
    assert!(err.is_fatal() && !err.is_transient());
    assert_eq!((err.status(), err.attempts), (Some(403), 1));
    assert!(err.to_string().contains("permission"), "{err}");
    assert!(c.throttle().abort_reason().unwrap().contains("403"));
    let err2 = c.all_organizations().await.unwrap_err();
    assert!(matches!(err2.kind, ErrorKind::Aborted(_)), "{err2:?}");
    let err3 = c.link_organization("1", 3).await.unwrap_err();
    assert!(matches!(err3.kind, ErrorKind::Aborted(_)), "{err3:?}");
}

#[tokio::test]
async fn a_response_slower_than_the_timeout_is_retried() {
    let server = MockServer::start().await;
    api_nobody("GET", "/organization/1")
        .respond_with(
            ResponseTemplate::new(200).set_body_json(org(json!("1"), "slow")).set_delay(Duration::from_millis(1500)),
        )
        .up_to_n_times(1)
        .expect(1)
        .mount(&server)
        .await;
    api_nobody("GET", "/organization/1")
        .respond_with(ResponseTemplate::new(200).set_body_json(org(json!("1"), "fast")))
        .expect(1)
        .mount(&server)
        .await;
    let c = client_with(
        &server.uri(),
        Auth::Basic { email: EMAIL.into(), token: TOKEN.into() },
        fast_retry(2),
        Duration::from_millis(200),
    );
    let t0 = Instant::now();
    let got = c.organization(1).await.unwrap();
    assert_eq!((got.value.name.as_str(), got.attempts), ("fast", 2));
    let elapsed = t0.elapsed();
    assert!(elapsed >= Duration::from_millis(200), "{elapsed:?}");
    assert!(elapsed < Duration::from_millis(1400), "{elapsed:?}");
}

#[tokio::test]
async fn timeouts_on_every_attempt_end_in_a_timeout_error() {
    let server = MockServer::start().await;
    api_nobody("GET", "/organization/1")
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_millis(1500)))
        .expect(2)
        .mount(&server)
        .await;
    let c = client_with(
        &server.uri(),
        Auth::Basic { email: EMAIL.into(), token: TOKEN.into() },
        fast_retry(1),
        Duration::from_millis(200),
    );
    let err = c.organization(1).await.unwrap_err();
    assert_no_secret(&err);
    assert_eq!(err.kind, ErrorKind::Timeout(Duration::from_millis(200)));
    assert!(err.is_transient());
    assert_eq!(err.attempts, 2);
}

#[tokio::test]
async fn a_malformed_json_200_is_retried() {
    let server = MockServer::start().await;
    api_nobody("GET", "/organization/1/property")
        .respond_with(ResponseTemplate::new(200).set_body_raw(r#"{"keys":[{"key":"a"#, "application/json"))
        .up_to_n_times(1)
        .expect(1)
        .mount(&server)
        .await;
    api_nobody("GET", "/organization/1/property")
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"keys": [{"key": "a"}]})))
        .expect(1)
        .mount(&server)
        .await;
    let c = client(&server.uri());
    let got = c.property_keys(1).await.unwrap();
    assert_eq!((got.value, got.attempts), (vec!["a".to_string()], 2));
}

#[tokio::test]
async fn a_body_that_never_parses_ends_in_a_decode_error() {
    let server = MockServer::start().await;
    api_nobody("GET", "/organization/1")
        .respond_with(ResponseTemplate::new(200).set_body_raw("{\"id\": \"1\", \"na", "application/json"))
        .expect(2)
        .mount(&server)
        .await;
    let c = client_with(
        &server.uri(),
        Auth::Basic { email: EMAIL.into(), token: TOKEN.into() },
        fast_retry(1),
        Duration::from_secs(5),
    );
    let err = c.organization(1).await.unwrap_err();
    assert_no_secret(&err);
    assert!(matches!(err.kind, ErrorKind::Decode { status: 200, .. }), "{err:?}");
    assert_eq!(err.attempts, 2);
}

#[tokio::test]
async fn a_closed_port_is_a_transient_connection_error_retried_max_retries() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let c = client_with(
        &format!("http://127.0.0.1:{port}"),
        Auth::Basic { email: EMAIL.into(), token: TOKEN.into() },
        fast_retry(3),
        Duration::from_secs(2),
    );
    let err = c.organization(1).await.unwrap_err();
    assert_no_secret(&err);
    assert!(matches!(err.kind, ErrorKind::Connection(_)), "{err:?}");
    assert!(err.is_transient() && !err.is_fatal());
    assert_eq!(err.attempts, 4);
    assert!(err.to_string().starts_with("connection failed"), "{err}");
    let s = c.throttle().snapshot();
    assert_eq!((s.requests, s.retries), (4, 3));
    // Bearer tokens stay out of the text too.
    let b = client_with(
        &format!("http://127.0.0.1:{port}"),
        Auth::Bearer { token: TOKEN.into() },
        fast_retry(0),
        Duration::from_secs(2),
    );
    let err = b.remove_users(1, &["x".into()]).await.unwrap_err();
    assert_no_secret(&err);
    assert_eq!(err.attempts, 1);
}

#[tokio::test]
async fn a_429_cooldown_delays_other_calls_in_flight() {
    let server = MockServer::start().await;
    let log = Log::default();
    // Call A meets a 429 with Retry-After: 1 right away.
    api_nobody("GET", "/organization/1")
        .respond_with(log.respond("a1", ResponseTemplate::new(429).insert_header("retry-after", "1")))
        .up_to_n_times(1)
        .expect(1)
        .mount(&server)
        .await;
    api_nobody("GET", "/organization/1")
        .respond_with(log.respond("a2", ResponseTemplate::new(200).set_body_json(org(json!("1"), "A"))))
        .expect(1)
        .mount(&server)
        .await;
    // Call B is a paged listing whose first page is still in flight when A's
    // 429 arrives; its second page must wait for the shared cooldown.
    paged(api_nobody("GET", "/organization"), 0)
        .respond_with(
            log.respond("b1", page(0, false, json!([org(json!("7"), "x")])).set_delay(Duration::from_millis(600))),
        )
        .expect(1)
        .mount(&server)
        .await;
    paged(api_nobody("GET", "/organization"), 1)
        .respond_with(log.respond("b2", page(1, true, json!([org(json!("8"), "y")]))))
        .expect(1)
        .mount(&server)
        .await;
    let c = client(&server.uri());
    let (a, b) = tokio::join!(c.organization(1), c.all_organizations());
    assert_eq!(a.unwrap().attempts, 2);
    assert_eq!(b.unwrap().value.len(), 2);
    let a1 = log.at("a1");
    assert!(log.at("b1") < a1 + Duration::from_millis(500), "B started late");
    let a_wait = log.at("a2") - a1;
    let b_wait = log.at("b2") - a1;
    assert!(a_wait >= Duration::from_secs(1), "A retried after {a_wait:?}");
    assert!(b_wait >= Duration::from_secs(1), "B's next request went {b_wait:?} after A's 429, inside the cooldown");
    assert!(b_wait < Duration::from_secs(4), "{b_wait:?}");
}

// ----- the client against the sandbox --------------------------------------

/// Every operation through the typed client against the in-process sandbox,
/// checking the site's state after each write.
#[tokio::test]
async fn every_operation_through_the_client_against_the_sandbox() {
    use jsm_orgs::sandbox::{Sandbox, SandboxConfig};
    let sb = Sandbox::start(SandboxConfig { service_desks: vec!["10001".into()], page_cap: 2, ..Default::default() })
        .await
        .unwrap();
    let c = client(&sb.url());

    // organizations: create is idempotent by name; paging over a cap of 2
    let a = c.create_organization("Acme, \"Inc\"").await.unwrap().value;
    let again = c.create_organization("Acme, \"Inc\"").await.unwrap().value;
    assert_eq!(a.id, again.id);
    for n in ["B", "C", "D", "E"] {
        c.create_organization(n).await.unwrap();
    }
    let all = c.all_organizations().await.unwrap();
    assert_eq!(all.value.iter().map(|o| o.name.as_str()).collect::<Vec<_>>(), ["Acme, \"Inc\"", "B", "C", "D", "E"]);
    assert_eq!(all.attempts, 3, "5 orgs in pages of 2");
    assert_eq!(c.organization(a.id).await.unwrap().value.name, "Acme, \"Inc\"");

    // members: added, listed in accountId order, removed; an unknown id fails the whole call
    let ids: Vec<String> = ["acc-c", "acc-a", "acc-b"].iter().map(|s| s.to_string()).collect();
    c.add_users(a.id, &ids).await.unwrap();
    let users = c.all_users(a.id).await.unwrap().value;
    assert_eq!(users.iter().map(|u| u.account_id.as_str()).collect::<Vec<_>>(), ["acc-a", "acc-b", "acc-c"]);
    let bad = c.add_users(a.id, &["acc-d".to_string(), "unknown-1".to_string()]).await.unwrap_err();
    assert_eq!((bad.status(), bad.attempts), (Some(400), 1));
    c.remove_users(a.id, &["acc-b".to_string(), "never-a-member".to_string()]).await.unwrap();
    let left: Vec<String> = sb.state().members.into_iter().map(|m| m.account_id).collect();
    assert_eq!(left, ["acc-a", "acc-c"]);

    // properties: created then updated, listed, read, deleted; 404 afterwards
    let key = "crm/tier ü";
    assert_eq!(c.set_property(a.id, key, &json!({"t": 1})).await.unwrap().value, PropertyWrite::Created);
    assert_eq!(c.set_property(a.id, key, &json!([1, 2])).await.unwrap().value, PropertyWrite::Updated);
    assert_eq!(c.property_keys(a.id).await.unwrap().value, [key]);
    assert_eq!(c.property(a.id, key).await.unwrap().value.value, json!([1, 2]));
    c.delete_property(a.id, key).await.unwrap();
    assert!(c.property(a.id, key).await.unwrap_err().is_not_found());

    // service desks: listed, linked (twice is fine), listed per desk, unlinked
    let desks = c.all_service_desks().await.unwrap().value;
    assert_eq!(desks.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(), ["10001"]);
    c.link_organization("10001", a.id).await.unwrap();
    c.link_organization("10001", a.id).await.unwrap();
    let linked = c.all_desk_organizations("10001").await.unwrap().value;
    assert_eq!(linked.iter().map(|o| o.id).collect::<Vec<_>>(), [a.id]);
    assert!(c.link_organization("999", a.id).await.unwrap_err().is_not_found());
    c.unlink_organization("10001", a.id).await.unwrap();
    assert!(sb.state().service_desks.is_empty());

    // delete: the organization and what hung on it are gone; a second delete is a 404
    c.delete_organization(a.id).await.unwrap();
    assert!(c.delete_organization(a.id).await.unwrap_err().is_not_found());
    let st = sb.state();
    assert_eq!(st.organizations.len(), 4);
    assert!(st.members.is_empty());
    assert_eq!(sb.stats().by_route.get("DELETE /organization/{id}"), Some(&2));
    sb.shutdown().await;
}
