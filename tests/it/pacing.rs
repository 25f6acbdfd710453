//! Per-endpoint pacing against wiremock: the scope of a 429 decides who
//! waits (`RateLimit-Reason: jira-burst-based` = its endpoint × method only;
//! a quota reason or none = everything), and an abort ends those waits at
//! once with the unsent calls reporting 0 attempts. Assertions are on the
//! requests the server received, never on wall time; the pauses are 60 s so
//! that nothing can slip through them while a test runs.

use std::sync::Arc;
use std::time::Duration;

use jsm_orgs::api::{Auth, Client, ClientConfig, ErrorKind, RetryPolicy};
use jsm_orgs::throttle::{MethodRates, Throttle, ThrottleConfig};
use serde_json::json;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::common::{EMAIL, TOKEN};

const API: &str = "/rest/servicedeskapi";

/// A client that honours a 60 s `Retry-After` (the tests abort it instead).
fn patient_client(site: &str) -> Client {
    client_paced(site, ThrottleConfig { start: MethodRates::uniform(1000.0), ..Default::default() })
}

fn client_paced(site: &str, pacing: ThrottleConfig) -> Client {
    let retry = RetryPolicy { max_retries: 3, max_retry_after: Duration::from_secs(120), ..RetryPolicy::default() };
    let throttle = Arc::new(Throttle::new(&pacing));
    let cfg = ClientConfig {
        site: url::Url::parse(site).unwrap(),
        auth: Auth::Basic { email: EMAIL.into(), token: TOKEN.into() },
        timeout: Duration::from_secs(5),
        retry,
    };
    Client::new(cfg, throttle).unwrap()
}

/// A last page without values.
fn empty_page() -> ResponseTemplate {
    ResponseTemplate::new(200)
        .set_body_json(json!({"start": 0, "limit": 50, "size": 0, "isLastPage": true, "values": []}))
}

fn too_many(reason: Option<&str>) -> ResponseTemplate {
    let t = ResponseTemplate::new(429)
        .insert_header("retry-after", "60")
        .insert_header("x-ratelimit-limit", "50")
        .insert_header("x-ratelimit-remaining", "0");
    match reason {
        Some(r) => t.insert_header("ratelimit-reason", r),
        None => t,
    }
}

async fn received(server: &MockServer, verb: &str, p: &str) -> usize {
    let requests = server.received_requests().await.unwrap_or_default();
    requests.iter().filter(|r| r.method.as_str() == verb && r.url.path() == format!("{API}{p}")).count()
}

/// Wait (without a deadline on a loaded machine, bounded loosely) until the
/// server has seen `n` requests of `verb p`.
async fn until_received(server: &MockServer, verb: &str, p: &str, n: usize) {
    for _ in 0..3000 {
        if received(server, verb, p).await >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{verb} {p} never received {n} requests");
}

#[tokio::test]
async fn a_burst_429_on_one_endpoint_does_not_slow_the_others() {
    let server = MockServer::start().await;
    Mock::given(method("PUT"))
        .and(path(format!("{API}/organization/1/property/k")))
        .respond_with(too_many(Some("jira-burst-based")))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(format!("{API}/organization/1/user")))
        .respond_with(empty_page())
        .expect(30)
        .mount(&server)
        .await;
    let c = patient_client(&server.uri());
    let put = {
        let c = c.clone();
        tokio::spawn(async move { c.set_property(1, "k", &json!(1)).await })
    };
    until_received(&server, "PUT", "/organization/1/property/k", 1).await;
    // The PUT endpoint now pauses for 60 s; another endpoint goes on.
    for _ in 0..30 {
        let page = c.users_page(1, 0, 50).await.unwrap();
        assert_eq!(page.attempts, 1);
    }
    assert_eq!(c.throttle().current_rate(jsm_orgs::routes::ADD_MEMBERS), 1000.0, "other endpoints keep their rate");
    assert_eq!(c.throttle().current_rate(jsm_orgs::routes::SET_PROPERTY), 50.0, "the stated limit is learned");
    // A second PUT to the paused endpoint waits too; stop the run.
    let second = {
        let c = c.clone();
        tokio::spawn(async move { c.set_property(1, "k", &json!(2)).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!put.is_finished() && !second.is_finished(), "the paused endpoint still waits");
    c.throttle().abort("interrupted (test)");
    let first = put.await.unwrap().unwrap_err();
    assert!(matches!(first.kind, ErrorKind::Aborted(_)) && first.attempts == 1, "{first:?}");
    let second = second.await.unwrap().unwrap_err();
    assert!(matches!(second.kind, ErrorKind::Aborted(_)) && second.attempts == 0, "{second:?}");
    assert_eq!(received(&server, "PUT", "/organization/1/property/k").await, 1);
}

async fn quota_429_pauses_every_endpoint(reason: Option<&str>) {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(format!("{API}/organization/1/user")))
        .respond_with(too_many(reason))
        .expect(1)
        .mount(&server)
        .await;
    // Nothing else may be sent while the site is paused.
    Mock::given(wiremock::matchers::any()).respond_with(ResponseTemplate::new(500)).expect(0).mount(&server).await;
    let c = patient_client(&server.uri());
    let first = {
        let c = c.clone();
        tokio::spawn(async move { c.users_page(1, 0, 50).await })
    };
    until_received(&server, "GET", "/organization/1/user", 1).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let others: Vec<_> = (0..3)
        .map(|i| {
            let c = c.clone();
            tokio::spawn(async move {
                match i {
                    0 => c.create_organization("A").await.map(|_| ()),
                    1 => c.set_property(1, "k", &json!(1)).await.map(|_| ()),
                    _ => c.link_organization("10001", 1).await.map(|_| ()),
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(others.iter().all(|t| !t.is_finished()), "{reason:?}: every endpoint waits");
    c.throttle().abort("interrupted (test)");
    for t in others {
        let e = t.await.unwrap().unwrap_err();
        assert!(matches!(e.kind, ErrorKind::Aborted(_)) && e.attempts == 0, "{reason:?}: {e:?}");
    }
    let e = first.await.unwrap().unwrap_err();
    assert_eq!(e.attempts, 1, "{e:?}");
    assert_eq!(c.throttle().site_rate(), 50.0, "{reason:?}: the stated limit caps the whole site");
    assert_eq!(c.throttle().snapshot().requests, 1);
}

#[tokio::test]
async fn a_tenant_quota_429_pauses_every_endpoint() {
    quota_429_pauses_every_endpoint(Some("jira-quota-tenant-based")).await;
}

#[tokio::test]
async fn a_global_quota_429_pauses_every_endpoint() {
    quota_429_pauses_every_endpoint(Some("jira-quota-global-based")).await;
}

#[tokio::test]
async fn a_429_without_a_reason_pauses_every_endpoint() {
    quota_429_pauses_every_endpoint(None).await;
}

/// Ctrl-C while every request waits out a 60 s `Retry-After`: the binary
/// ends at once (exit 3) with the final report, in which the rows never sent
/// say `not_sent` with 0 attempts and the sent ones count their request.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_during_a_long_retry_after_ends_the_run_at_once() {
    let server = MockServer::start().await;
    Mock::given(method("GET")).and(path(format!("{API}/organization"))).respond_with(empty_page()).mount(&server).await;
    Mock::given(method("POST"))
        .and(path(format!("{API}/organization")))
        .respond_with(too_many(Some("jira-quota-tenant-based")))
        .mount(&server)
        .await;
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("orgs.csv");
    let names: Vec<String> = (0..20).map(|i| format!("Org {i:02}")).collect();
    std::fs::write(&input, format!("name\n{}\n", names.join("\n"))).unwrap();
    let report = tmp.path().join("r.csv");
    let args = ["import", &crate::faults::s(&input), "--site", &server.uri(), "--report", &crate::faults::s(&report)];
    let child = crate::common::cli(&args).spawn().unwrap();
    until_received(&server, "POST", "/organization", 1).await;
    // Let the 429 come back and the pause begin.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = std::time::Instant::now();
    let sent = std::process::Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(sent.success());
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap()).await.unwrap();
    // Loose bound: the pause had ~60 s left; an ignored Ctrl-C would wait it out.
    assert!(started.elapsed() < Duration::from_secs(30), "{:?}", started.elapsed());
    assert_eq!(out.status.code(), Some(3));
    let posts = received(&server, "POST", "/organization").await;
    let (_, rows) = crate::common::csv_maps(&report);
    assert_eq!(rows.len(), 20);
    let attempts: usize = rows.iter().map(|r| r["attempts"].parse::<usize>().unwrap()).sum();
    assert_eq!(attempts, posts, "attempts count exactly the requests the site received");
    let unsent: Vec<_> = rows.iter().filter(|r| r["outcome"] == "not_sent").collect();
    assert!(!unsent.is_empty(), "{rows:?}");
    assert!(unsent.iter().all(|r| r["attempts"] == "0"), "{unsent:?}");
    assert_eq!(unsent.len() + posts, 20, "every row was either sent once or not at all");
}

/// Answers a create with the next id and the name asked for.
struct Creates(std::sync::atomic::AtomicU64);

impl wiremock::Respond for Creates {
    fn respond(&self, r: &wiremock::Request) -> ResponseTemplate {
        let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        let id = self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        ResponseTemplate::new(201).set_body_json(json!({"id": id.to_string(), "name": body["name"]}))
    }
}

/// An import's members and properties go out as soon as their organization
/// exists, while later organizations are still being created (each endpoint
/// has its own lane): the first property PUT comes before the last create.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_of_an_organization_start_while_the_next_ones_are_created() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(format!("{API}/organization")))
        .respond_with(empty_page())
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(format!("{API}/organization")))
        .respond_with(Creates(Default::default()))
        .expect(60)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(wiremock::matchers::path_regex(format!("^{API}/organization/[0-9]+/user$")))
        .respond_with(ResponseTemplate::new(204))
        .expect(60)
        .mount(&server)
        .await;
    Mock::given(method("PUT"))
        .and(wiremock::matchers::path_regex(format!("^{API}/organization/[0-9]+/property/tier$")))
        .respond_with(ResponseTemplate::new(201))
        .expect(60)
        .mount(&server)
        .await;
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    std::fs::create_dir(&input).unwrap();
    let (mut members, mut props) =
        (String::from("organization,account_id\n"), String::from("organization,key,value\n"));
    for i in 0..60 {
        members.push_str(&format!("Org {i:02},acct-{i}\n"));
        props.push_str(&format!("Org {i:02},tier,\"\"\"gold\"\"\"\n"));
    }
    std::fs::write(input.join("members.csv"), members).unwrap();
    std::fs::write(input.join("properties.csv"), props).unwrap();
    let report = tmp.path().join("r.csv");
    // Jira's default rates: 60 creates take 0.6 s at 100/s.
    let c = client_paced(&server.uri(), ThrottleConfig::default());
    let summary = jsm_orgs::import::import(&c, &crate::faults::import_options(&input, &report)).await.unwrap();
    assert!(!summary.incomplete(), "{summary}");
    let order: Vec<(String, String)> = server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .map(|r| (r.method.to_string(), r.url.path().trim_start_matches(API).to_string()))
        .collect();
    let last_create = order.iter().rposition(|(m, p)| m == "POST" && p == "/organization").unwrap();
    let first_put = order.iter().position(|(m, _)| m == "PUT").unwrap();
    let first_add = order.iter().position(|(m, p)| m == "POST" && p.ends_with("/user")).unwrap();
    assert!(first_put < last_create && first_add < last_create, "{order:?}");
    let busiest = summary.busiest.expect("a busiest endpoint");
    assert_eq!(
        (busiest.route, busiest.requests),
        (jsm_orgs::routes::SET_PROPERTY, 60),
        "PUTs at 50/s need the longest"
    );
}
