//! No false success: hostile servers, odd keys and exact numbers. Each case
//! is a server that answers something other than what the call expects; each
//! ends in a report whose every row is true of the site, and in the
//! contract's exit code. Everything talks to 127.0.0.1.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderValue, Request, Response};
use jsm_orgs::import::{import, ImportError};
use jsm_orgs::sandbox::{Sandbox, SandboxConfig};
use jsm_orgs::snapshot::{export, Format};
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::common::{client, content_of, export_options};
use crate::faults::{import_options, matrix, read_jsonl_report, row_holds, sandbox};

const API: &str = "/rest/servicedeskapi";

// ----- a proxy in front of the sandbox that turns into a login page -----------

struct ProxyState {
    upstream: String,
    http: reqwest::Client,
    /// Requests forwarded before the proxy answers HTML instead.
    html_after: u64,
    seen: AtomicU64,
    html_answers: AtomicU64,
    /// Called with "METHOD /path" before each request is forwarded.
    hook: Option<Hook>,
}

type Hook = Box<dyn Fn(&str) + Send + Sync>;

const LOGIN_PAGE: &str = "<!DOCTYPE html>\n<html><head><title>Sign in</title></head><body>SSO</body></html>";

async fn forward(State(st): State<Arc<ProxyState>>, req: Request<Body>) -> Response<Body> {
    if st.seen.fetch_add(1, Ordering::SeqCst) >= st.html_after {
        st.html_answers.fetch_add(1, Ordering::SeqCst);
        let mut r = Response::new(Body::from(LOGIN_PAGE));
        r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
        return r;
    }
    let (parts, body) = req.into_parts();
    if let Some(hook) = &st.hook {
        hook(&format!("{} {}", parts.method, parts.uri.path()));
    }
    let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
    let target = format!("{}{}", st.upstream, parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"));
    let mut out = st.http.request(parts.method, target).body(body);
    for (k, v) in &parts.headers {
        if k != header::HOST {
            out = out.header(k, v);
        }
    }
    let resp = out.send().await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let mut r = Response::new(Body::from(resp.bytes().await.unwrap()));
    *r.status_mut() = status;
    for name in [header::CONTENT_TYPE, header::RETRY_AFTER] {
        if let Some(v) = headers.get(&name) {
            r.headers_mut().insert(name, v.clone());
        }
    }
    r
}

/// Start a proxy to `upstream` on 127.0.0.1 that answers a 200 HTML login
/// page to every request after the first `html_after`.
async fn login_proxy(upstream: &str, html_after: u64) -> (String, Arc<ProxyState>) {
    proxy(upstream, html_after, None).await
}

async fn proxy(upstream: &str, html_after: u64, hook: Option<Hook>) -> (String, Arc<ProxyState>) {
    let st = Arc::new(ProxyState {
        upstream: upstream.trim_end_matches('/').to_string(),
        http: reqwest::Client::new(),
        html_after,
        seen: AtomicU64::new(0),
        html_answers: AtomicU64::new(0),
        hook,
    });
    let app = axum::Router::new().fallback(forward).with_state(st.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, st)
}

/// Every row of a run that stopped claims only what the site holds, and
/// rows that were not sent say so.
fn assert_truthful(report: &Path, sb: &Sandbox) -> Vec<crate::faults::Rep> {
    let have = content_of(&sb.state());
    let rows = read_jsonl_report(report);
    for row in &rows {
        match row.outcome.as_str() {
            "failed" => assert!(!row.message.is_empty(), "{row:?}"),
            "not_sent" => assert_eq!(row.attempts, 0, "{row:?}"),
            _ => assert!(row_holds(row, &have), "the report says {row:?}, the site disagrees"),
        }
    }
    rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_page_mid_import_aborts_with_a_truthful_report_and_the_rerun_finishes() {
    let tmp = tempfile::tempdir().unwrap();
    let m = matrix(tmp.path(), 30);
    let sb = sandbox(Some(&m.seed), SandboxConfig::default()).await;
    let (proxy, st) = login_proxy(&sb.url(), 40).await;
    let report = tmp.path().join("r.jsonl");
    let c = crate::faults::client(&proxy, crate::faults::Pace { concurrency: 4, ..Default::default() });
    let err = import(&c, &import_options(&m.input, &report)).await.expect_err("the run must not succeed");
    let ImportError::Aborted { message, summary } = &err else { panic!("{err}") };
    assert_eq!(err.exit().code(), 3);
    assert!(message.contains("HTML page (a login or proxy page?)"), "{message}");
    // Stopped at once: at most the requests already in flight met the page.
    let html = st.html_answers.load(Ordering::SeqCst);
    assert!((1..=4).contains(&html), "{html} HTML answers");
    let rows = assert_truthful(&report, &sb);
    assert_eq!(rows.len(), m.sources.len());
    // Rows whose call met the page fail naming it (a members call serves
    // several rows), and so do the rows of an organization whose create met
    // it (never sent themselves); the others were not sent.
    let failed: Vec<_> = rows.iter().filter(|r| r.outcome == "failed").collect();
    assert!(!failed.is_empty());
    for row in failed {
        let own = row.attempts == 1;
        let of_create = row.attempts == 0 && row.message.starts_with("organization was not created");
        assert!(row.message.contains("HTML page") && (own || of_create), "{row:?}");
    }
    assert!(rows.iter().any(|r| r.outcome == "not_sent"));
    let undone = rows.iter().filter(|r| r.outcome == "failed" || r.outcome == "not_sent").count() as u64;
    assert_eq!(summary.failed() + summary.not_sent(), undone);

    // The re-run against the real site does what is left.
    let again = tmp.path().join("again.jsonl");
    let c = crate::faults::client(&sb.url(), Default::default());
    let summary = import(&c, &import_options(&m.input, &again)).await.unwrap();
    assert!(!summary.incomplete());
    m.assert_site(&sb);
}

// ----- wiremock: answers that are not what the call expects ------------------

fn org_page(orgs: Value) -> ResponseTemplate {
    ResponseTemplate::new(200)
        .set_body_json(json!({"start": 0, "limit": 50, "size": 1, "isLastPage": true, "values": orgs}))
}

async fn mock(server: &MockServer, m: &str, p: &str, r: ResponseTemplate, times: u64) {
    Mock::given(method(m)).and(path(format!("{API}{p}"))).respond_with(r).expect(times).mount(server).await;
}

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[tokio::test]
async fn a_redirect_aborts_and_names_its_location() {
    let server = MockServer::start().await;
    let to = "https://sso.example.com/login?next=%2Frest";
    mock(&server, "GET", "/organization", ResponseTemplate::new(302).insert_header("location", to), 1).await;
    let tmp = tempfile::tempdir().unwrap();
    let input = write(tmp.path(), "orgs.csv", "name\nAcme\n");
    let report = tmp.path().join("r.jsonl");
    let err = import(&client(&server.uri()), &import_options(&input, &report)).await.unwrap_err();
    assert_eq!(err.exit().code(), 3);
    assert!(err.to_string().contains(to), "{err}");
    let rows = read_jsonl_report(&report);
    assert_eq!(rows.iter().map(|r| r.outcome.as_str()).collect::<Vec<_>>(), ["not_sent"]);
    assert!(rows[0].message.contains(to), "{:?}", rows[0]);
}

#[tokio::test]
async fn a_body_where_no_body_belongs_fails_the_row_not_the_run() {
    let server = MockServer::start().await;
    mock(&server, "GET", "/organization", org_page(json!([{"id": "1", "name": "Acme"}])), 1).await;
    let empty = json!({"start": 0, "limit": 50, "size": 0, "isLastPage": true, "values": []});
    mock(&server, "GET", "/organization/1/user", ResponseTemplate::new(200).set_body_json(empty), 1).await;
    let ok = ResponseTemplate::new(200).set_body_raw("OK", "text/plain");
    mock(&server, "POST", "/organization/1/user", ok, 1).await;
    let tmp = tempfile::tempdir().unwrap();
    let input = write(tmp.path(), "members.csv", "organization,account_id\nAcme,a1\n");
    let report = tmp.path().join("r.jsonl");
    let summary = import(&client(&server.uri()), &import_options(&input, &report)).await.unwrap();
    assert_eq!(summary.failed(), 1);
    let rows = read_jsonl_report(&report);
    assert_eq!(rows[0].outcome, "failed");
    assert!(rows[0].message.contains("where the call answers no body"), "{:?}", rows[0]);
}

#[tokio::test]
async fn a_create_that_changes_the_name_fails_saying_how() {
    let server = MockServer::start().await;
    mock(&server, "GET", "/organization", org_page(json!([])), 1).await;
    let trimmed = ResponseTemplate::new(201).set_body_json(json!({"id": "5", "name": "Acme"}));
    mock(&server, "POST", "/organization", trimmed, 1).await;
    // No members call: the organization named in the input does not exist.
    mock(&server, "POST", "/organization/5/user", ResponseTemplate::new(204), 0).await;
    let tmp = tempfile::tempdir().unwrap();
    let input = write(tmp.path(), "members.csv", "organization,account_id\n\" Acme \",a1\n");
    let report = tmp.path().join("r.jsonl");
    let summary = import(&client(&server.uri()), &import_options(&input, &report)).await.unwrap();
    assert_eq!(summary.failed(), 1);
    let rows = read_jsonl_report(&report);
    assert_eq!(rows[0].outcome, "failed");
    assert!(
        rows[0].message.contains(r#"named "Acme""#) && rows[0].message.contains("changed the name"),
        "{:?}",
        rows[0]
    );
}

// ----- property keys that URL parsing would alter ----------------------------

/// Keys with every ASCII control, `%`, `/`, `?`, `#`, dots in disguise, and
/// random characters.
fn hostile_keys() -> Vec<String> {
    let mut keys: Vec<String> = (0u8..0x20).chain([0x7f]).map(|b| format!("c{}{b:02x}", b as char)).collect();
    keys.extend(
        ["..\n", "\n..", ".\t", "%2e%2e", "%", "a/b", "a?b", "a#b", "a\\b", "...", " ", "a b"].map(String::from),
    );
    let mut rng = rand::rngs::StdRng::seed_from_u64(10);
    for _ in 0..40 {
        let len = rng.gen_range(1..12);
        let key: String = (0..len)
            .map(|_| match rng.gen_range(0..4) {
                0 => char::from(rng.gen_range(0u8..0x20)),
                1 => char::from(rng.gen_range(0x20u8..0x7f)),
                2 => ['é', '組', '\u{2028}', '\u{feff}'][rng.gen_range(0..4)],
                _ => char::from(rng.gen_range(b'a'..=b'z')),
            })
            .collect();
        if key != "." && key != ".." {
            keys.push(key);
        }
    }
    keys.sort();
    keys.dedup();
    keys
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn property_keys_with_every_control_round_trip_and_export_exactly() {
    let sb = Sandbox::start(SandboxConfig::default()).await.unwrap();
    let c = client(&sb.url());
    let id = c.create_organization("Keys").await.unwrap().value.id;
    let keys = hostile_keys();
    for (i, k) in keys.iter().enumerate() {
        c.set_property(id, k, &json!(i)).await.unwrap_or_else(|e| panic!("{k:?}: {e}"));
    }
    let stored: Vec<String> = content_of(&sb.state()).properties.keys().map(|(_, k)| k.clone()).collect();
    assert_eq!(stored, keys, "the site holds exactly the keys sent");
    let mut listed = c.property_keys(id).await.unwrap().value;
    listed.sort();
    assert_eq!(listed, keys);
    for (i, k) in keys.iter().enumerate() {
        assert_eq!(c.property(id, k).await.unwrap().value.value, json!(i), "{k:?}");
    }

    // Export (JSONL and CSV) holds every key exactly, and restores exactly.
    let tmp = tempfile::tempdir().unwrap();
    for (format, name) in [(Format::Jsonl, "jsonl"), (Format::Csv, "csv")] {
        let out = tmp.path().join(name);
        export(&c, &export_options(&out, format, &sb.url())).await.unwrap();
        let fresh = Sandbox::start(SandboxConfig::default()).await.unwrap();
        let report = tmp.path().join(format!("{name}.jsonl"));
        let summary = import(&client(&fresh.url()), &import_options(&out, &report)).await.unwrap();
        assert!(!summary.incomplete(), "{format:?}: {:?}", read_jsonl_report(&report));
        assert_eq!(content_of(&fresh.state()), content_of(&sb.state()), "{format:?} restore");
        fresh.shutdown().await;
    }

    // And they delete exactly: nothing else goes.
    for k in &keys[..keys.len() / 2] {
        c.delete_property(id, k).await.unwrap_or_else(|e| panic!("{k:?}: {e}"));
    }
    let left: Vec<String> = content_of(&sb.state()).properties.keys().map(|(_, k)| k.clone()).collect();
    assert_eq!(left, keys[keys.len() / 2..]);
    sb.shutdown().await;
}

// ----- exact numbers -----------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn numbers_beyond_64_bits_and_long_decimals_round_trip_exactly() {
    let text = r#"{"big":12345678901234567890123,"neg":-98765432109876543210987654321,"dec":0.1000000000000000055511151231257827021181583404541015625,"exp":1.5e+400,"list":[18446744073709551616,3.14159265358979323846264338327950288]}"#;
    let value: Value = serde_json::from_str(text).unwrap();
    assert_eq!(value.to_string(), text, "serde_json keeps numbers as written");
    let tmp = tempfile::tempdir().unwrap();
    let input = write(
        tmp.path(),
        "props.jsonl",
        &format!("{{\"organization\":\"Numbers\",\"key\":\"n\",\"value\":{text}}}\n{{\"organization\":\"Numbers\",\"key\":\"e\",\"value\":\"\"}}\n"),
    );
    let csv_input = write(
        tmp.path(),
        "props.csv",
        &format!("organization,key,value\nNumbers,c,\"{}\"\n", text.replace('"', "\"\"")),
    );
    let sb = Sandbox::start(SandboxConfig::default()).await.unwrap();
    let c = client(&sb.url());
    for (i, input) in [input, csv_input].iter().enumerate() {
        let report = tmp.path().join(format!("r{i}.jsonl"));
        let summary = import(&c, &import_options(input, &report)).await.unwrap();
        assert!(!summary.incomplete(), "{:?}", read_jsonl_report(&report));
    }
    let site = content_of(&sb.state()).properties;
    for k in ["n", "c"] {
        assert_eq!(site[&("Numbers".to_string(), k.to_string())].to_string(), text, "{k} on the site");
    }
    assert_eq!(site[&("Numbers".to_string(), "e".to_string())], json!(""), "JSONL \"\" restores");

    for (format, name) in [(Format::Jsonl, "properties.jsonl"), (Format::Csv, "properties.csv")] {
        let out = tmp.path().join(format!("snap-{name}"));
        export(&c, &export_options(&out, format, &sb.url())).await.unwrap();
        let written = std::fs::read_to_string(out.join(name)).unwrap();
        let exact = if format == Format::Csv { text.replace('"', "\"\"") } else { text.to_string() };
        assert!(written.contains(&exact), "{name} keeps the digits: {written}");
        let fresh = Sandbox::start(SandboxConfig::default()).await.unwrap();
        let report = tmp.path().join(format!("restore-{name}.jsonl"));
        let summary = import(&client(&fresh.url()), &import_options(&out, &report)).await.unwrap();
        assert!(!summary.incomplete(), "{:?}", read_jsonl_report(&report));
        assert_eq!(content_of(&fresh.state()).properties, site, "{name} restores exactly");
        // A re-run against the restored site sees equal values: no writes.
        fresh.reset_stats();
        let again = tmp.path().join(format!("again-{name}.jsonl"));
        import(&client(&fresh.url()), &import_options(&out, &again)).await.unwrap();
        assert_eq!(fresh.stats().writes, 0, "{name}: {:?}", fresh.stats().by_route);
        fresh.shutdown().await;
    }
    sb.shutdown().await;
}

// ----- paging that does not advance, 404s that are not deletions --------------

fn page_of(values: Value, last: bool) -> ResponseTemplate {
    let n = values.as_array().map_or(0, Vec::len);
    ResponseTemplate::new(200)
        .set_body_json(json!({"start": 0, "limit": 50, "size": n, "isLastPage": last, "values": values}))
}

/// A site whose organization list is `orgs` forever (it ignores `start`),
/// or an empty page that claims more; organizations have no members,
/// properties or desks.
async fn bad_paging_site(orgs: Value) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(format!("{API}/organization")))
        .respond_with(page_of(orgs, false))
        .mount(&server)
        .await;
    let empty = page_of(json!([]), true);
    Mock::given(method("GET")).and(path(format!("{API}/servicedesk"))).respond_with(empty.clone()).mount(&server).await;
    for id in 1..=2 {
        let users = path(format!("{API}/organization/{id}/user"));
        Mock::given(method("GET")).and(users).respond_with(empty.clone()).mount(&server).await;
        let props = ResponseTemplate::new(200).set_body_json(json!({"keys": []}));
        Mock::given(method("GET"))
            .and(path(format!("{API}/organization/{id}/property")))
            .respond_with(props)
            .mount(&server)
            .await;
    }
    server
}

#[tokio::test]
async fn paging_that_does_not_advance_fails_import_and_export_naming_the_endpoint() {
    for orgs in [json!([{"id": "1", "name": "A"}, {"id": "2", "name": "B"}]), json!([])] {
        let server = bad_paging_site(orgs.clone()).await;
        let tmp = tempfile::tempdir().unwrap();
        let input = write(tmp.path(), "orgs.csv", "name\nA\n");
        let report = tmp.path().join("r.jsonl");
        let err = import(&client(&server.uri()), &import_options(&input, &report)).await.unwrap_err();
        assert_eq!(err.exit().code(), 3, "{orgs}");
        assert!(err.to_string().contains("/rest/servicedeskapi/organization?start="), "{err}");
        assert_eq!(read_jsonl_report(&report)[0].outcome, "not_sent");
        let gets = server.received_requests().await.unwrap().len();
        assert!(gets <= 4, "{gets} requests: stopped at once");

        let out = tmp.path().join("snap");
        let err =
            export(&client(&server.uri()), &export_options(&out, Format::Jsonl, &server.uri())).await.unwrap_err();
        assert_eq!(err.exit().code(), 3);
        assert!(err.to_string().contains("GET /organization"), "{err}");
        assert!(!out.exists(), "no snapshot from a list that was not read to its end");
        assert!(server.received_requests().await.unwrap().len() < gets + 20, "the export stopped");
    }
}

#[tokio::test]
async fn a_404_under_a_live_organization_fails_the_export_instead_of_dropping_it() {
    let server = MockServer::start().await;
    let orgs = page_of(json!([{"id": "1", "name": "A"}, {"id": "2", "name": "Gone"}]), true);
    mock(&server, "GET", "/organization", orgs, 1).await;
    let empty = page_of(json!([]), true);
    Mock::given(method("GET")).and(path(format!("{API}/servicedesk"))).respond_with(empty.clone()).mount(&server).await;
    let not_found = ResponseTemplate::new(404).set_body_json(json!({"errorMessage": "no such organization"}));
    for id in 1..=2 {
        mock(&server, "GET", &format!("/organization/{id}/user"), not_found.clone(), 1).await;
        let props = ResponseTemplate::new(200).set_body_json(json!({"keys": []}));
        Mock::given(method("GET"))
            .and(path(format!("{API}/organization/{id}/property")))
            .respond_with(props)
            .mount(&server)
            .await;
    }
    // Organization 1 still exists; 2 is really gone.
    mock(
        &server,
        "GET",
        "/organization/1",
        ResponseTemplate::new(200).set_body_json(json!({"id": "1", "name": "A"})),
        1,
    )
    .await;
    Mock::given(method("GET")).and(path(format!("{API}/organization/2"))).respond_with(not_found).mount(&server).await;
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("snap");
    let err = export(&client(&server.uri()), &export_options(&out, Format::Jsonl, &server.uri())).await.unwrap_err();
    assert_eq!(err.exit().code(), 3);
    assert!(err.to_string().contains("still exists"), "{err}");
    assert!(!out.exists());
}

// ----- a site that is unreachable, or dies mid-import ------------------------

/// A TCP proxy to `upstream` that can be killed: the listener closes (new
/// connections are refused) and open connections are cut.
struct TcpProxy {
    url: String,
    tasks: Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl TcpProxy {
    async fn start(upstream: &str) -> TcpProxy {
        let upstream = upstream.trim_start_matches("http://").trim_end_matches('/').to_string();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let tasks: Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
        let conns = tasks.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let upstream = upstream.clone();
                let conn = tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(&upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                conns.lock().unwrap().push(conn.abort_handle());
            }
        });
        tasks.lock().unwrap().push(accept.abort_handle());
        TcpProxy { url, tasks }
    }

    fn kill(&self) {
        for t in self.tasks.lock().unwrap().drain(..) {
            t.abort();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_that_dies_mid_import_aborts_as_unreachable_and_the_rerun_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    let m = matrix(tmp.path(), 30);
    let sb =
        sandbox(Some(&m.seed), SandboxConfig { latency: std::time::Duration::from_millis(5), ..Default::default() })
            .await;
    let proxy = TcpProxy::start(&sb.url()).await;
    let report = tmp.path().join("r.jsonl");
    let c = crate::faults::client(&proxy.url, crate::faults::Pace { concurrency: 4, ..Default::default() })
        .with_unreachable_after(std::time::Duration::from_secs(1));
    let opts = import_options(&m.input, &report);
    let run = import(&c, &opts);
    tokio::pin!(run);
    let mut killed = false;
    let result = loop {
        tokio::select! {
            r = &mut run => break r,
            _ = tokio::time::sleep(std::time::Duration::from_millis(1)) => {
                if !killed && sb.stats().writes >= 20 {
                    proxy.kill();
                    killed = true;
                }
            }
        }
    };
    assert!(killed, "the import ended before the site died");
    let err = result.expect_err("a dead site is no success");
    assert_eq!(err.exit().code(), 3);
    assert!(err.to_string().contains("site unreachable"), "{err}");
    let rows = assert_truthful(&report, &sb);
    assert!(rows.iter().any(|r| r.outcome == "not_sent"), "stopped, not retried row by row");

    let again = tmp.path().join("again.jsonl");
    let summary =
        import(&crate::faults::client(&sb.url(), Default::default()), &import_options(&m.input, &again)).await.unwrap();
    assert!(!summary.incomplete());
    m.assert_site(&sb);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_site_exits_3_within_15_seconds() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let tmp = tempfile::tempdir().unwrap();
    let input = write(tmp.path(), "orgs.csv", "name\nA\nB\n");
    let report = tmp.path().join("r.jsonl");
    let site = format!("http://127.0.0.1:{port}");
    let started = std::time::Instant::now();
    let mut child =
        crate::common::cli(&["import", input.to_str().unwrap(), "--site", &site, "--report", report.to_str().unwrap()])
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        // A bound, not a timing assertion: the default window is 10 s.
        if started.elapsed() > std::time::Duration::from_secs(60) {
            child.kill().unwrap();
            panic!("still retrying an unreachable site after 60 s");
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("site unreachable"), "{stderr}");
    let rows = read_jsonl_report(&report);
    assert_eq!(rows.iter().map(|r| r.outcome.as_str()).collect::<Vec<_>>(), ["not_sent", "not_sent"]);
}

// ----- --report paths ------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_paths_that_would_destroy_or_pollute_input_are_refused_before_any_request() {
    let sb = sandbox(None, SandboxConfig::default()).await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("in");
    std::fs::create_dir(&dir).unwrap();
    let input = write(&dir, "orgs.csv", "name\nA\n");
    let c = client(&sb.url());
    let cases = [
        (input.clone(), vec![input.clone()], "is an input file"),
        (input.clone(), vec![dir.clone()], "is an input file"),
        (dir.join("report.csv"), vec![dir.clone()], "inside the input folder"),
        (tmp.path().join("missing").join("r.csv"), vec![input.clone()], "does not exist"),
        (dir.clone(), vec![input.clone()], "is a folder"),
    ];
    for (report, paths, why) in cases {
        let opts = jsm_orgs::settings::ImportOptions { paths, ..import_options(&input, &report) };
        let err = import(&c, &opts).await.expect_err(why);
        assert_eq!(err.exit().code(), 2, "{err}");
        assert!(err.to_string().contains("--report") && err.to_string().contains(why), "{err}");
    }
    assert_eq!(sb.stats().total, 0, "nothing was sent");
    assert_eq!(std::fs::read_to_string(&input).unwrap(), "name\nA\n", "the input is intact");
    assert_eq!(crate::faults::entries(&dir), ["orgs.csv"], "nothing was written beside the input");
    // A report name that a later run skips is fine inside the input folder.
    let fine = dir.join("jsm-orgs-report-1.csv");
    import(&c, &import_options(&dir, &fine)).await.unwrap();
    assert!(fine.is_file());
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_or_pipe_report_is_written_directly_never_replaced() {
    use std::os::unix::fs::FileTypeExt;
    let sb = sandbox(None, SandboxConfig::default()).await;
    let tmp = tempfile::tempdir().unwrap();
    let input = write(tmp.path(), "orgs.csv", "name\nA\nB\n");
    let c = client(&sb.url());
    import(&c, &import_options(&input, Path::new("/dev/null"))).await.unwrap();
    assert!(std::fs::metadata("/dev/null").unwrap().file_type().is_char_device());
    assert!(!Path::new("/dev/null.partial").exists());

    // A FIFO: the report arrives through it, and it stays a FIFO.
    let fifo = tmp.path().join("report.fifo");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status();
    if !made.is_ok_and(|s| s.success()) {
        eprintln!("mkfifo unavailable: FIFO case skipped");
        return;
    }
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || std::fs::read_to_string(fifo).unwrap())
    };
    import(&c, &import_options(&input, &fifo)).await.unwrap();
    let text = reader.join().unwrap();
    assert!(text.starts_with("source,kind,action"), "{text}");
    assert_eq!(text.lines().count(), 3, "{text}");
    assert!(std::fs::metadata(&fifo).unwrap().file_type().is_fifo());
    assert_eq!(crate::faults::entries(tmp.path()), ["orgs.csv", "report.fifo"], "no .partial, no temp file");
}

// ----- ambiguity fails, never guesses -----------------------------------------

#[tokio::test]
async fn a_name_the_site_holds_twice_fails_listing_both_ids_and_an_id_picks_one() {
    let server = MockServer::start().await;
    let twins = json!([{"id": "3", "name": "Twin"}, {"id": "7", "name": "Twin"}]);
    mock(&server, "GET", "/organization", org_page(twins), 1).await;
    mock(&server, "GET", "/organization/7/user", page_of(json!([]), true), 1).await;
    mock(&server, "POST", "/organization/7/user", ResponseTemplate::new(204), 1).await;
    mock(&server, "POST", "/organization", ResponseTemplate::new(500), 0).await;
    mock(&server, "DELETE", "/organization/3", ResponseTemplate::new(500), 0).await;
    let tmp = tempfile::tempdir().unwrap();
    let input = write(tmp.path(), "m.csv", "organization,organization_id,account_id\nTwin,,a1\n,7,a2\n");
    let orgs = write(tmp.path(), "o.csv", "name,action\nTwin,delete\n");
    let report = tmp.path().join("r.jsonl");
    let opts =
        jsm_orgs::settings::ImportOptions { paths: vec![input.clone(), orgs], ..import_options(&input, &report) };
    let summary = import(&client(&server.uri()), &opts).await.unwrap();
    assert_eq!(summary.failed(), 2);
    let rows = read_jsonl_report(&report);
    let outcomes: Vec<&str> = rows.iter().map(|r| r.outcome.as_str()).collect();
    assert_eq!(outcomes, ["failed", "added", "failed"]);
    for i in [0, 2] {
        assert!(rows[i].message.contains("2 organizations named \"Twin\" (ids 3, 7)"), "{:?}", rows[i]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_that_names_another_organization_is_ignored_with_a_word_or_fails_in_a_snapshot_of_this_site() {
    let sb = sandbox(None, SandboxConfig::default()).await;
    let c = client(&sb.url());
    c.create_organization("A").await.unwrap();
    let b = c.create_organization("B").await.unwrap().value.id;
    let tmp = tempfile::tempdir().unwrap();
    let input = write(tmp.path(), "m.csv", &format!("organization,organization_id,account_id\nA,{b},x1\n"));
    let report = tmp.path().join("r.jsonl");
    let summary = import(&c, &import_options(&input, &report)).await.unwrap();
    assert!(!summary.incomplete());
    let row = &read_jsonl_report(&report)[0];
    assert_eq!(row.outcome, "added");
    assert!(row.message.contains(&format!("organization_id {b} ignored (organization {b} is named \"B\")")), "{row:?}");
    assert!(content_of(&sb.state()).members.contains(&("A".to_string(), "x1".to_string())), "the name won");

    // A snapshot of this very site whose name and id disagree: not guessed.
    let snap = tmp.path().join("snap");
    export(&c, &export_options(&snap, Format::Jsonl, &sb.url())).await.unwrap();
    let members = format!("{}\n", json!({"organization": "A", "organization_id": b, "account_id": "x2"}));
    std::fs::write(snap.join("members.jsonl"), members).unwrap();
    let report = tmp.path().join("snap.jsonl");
    let opts = jsm_orgs::settings::ImportOptions { allow_edited: true, ..import_options(&snap, &report) };
    let summary = import(&c, &opts).await.unwrap();
    assert_eq!(summary.failed(), 1);
    let failed: Vec<_> = read_jsonl_report(&report).into_iter().filter(|r| r.outcome == "failed").collect();
    assert!(failed[0].message.contains("snapshot of this site"), "{failed:?}");
    assert!(!content_of(&sb.state()).members.contains(&("A".to_string(), "x2".to_string())));
}

// ----- input changed during the run ------------------------------------------

/// Import the matrix through a proxy that appends a row to the members file
/// at the first request `when` matches; returns the error and the report.
async fn import_while_input_changes(when: &'static str) -> (Sandbox, ImportError, Vec<crate::faults::Rep>) {
    let tmp = tempfile::tempdir().unwrap();
    let m = matrix(tmp.path(), 10);
    let sb = sandbox(Some(&m.seed), SandboxConfig::default()).await;
    let members = m.input.join("members.csv");
    let done = std::sync::atomic::AtomicBool::new(false);
    let hook: Hook = Box::new(move |call: &str| {
        if call.starts_with(when) && !done.swap(true, Ordering::SeqCst) {
            let mut text = std::fs::read_to_string(&members).unwrap();
            text.push_str("Keep A,late-row,add\n");
            std::fs::write(&members, text).unwrap();
        }
    });
    let (url, _) = proxy(&sb.url(), u64::MAX, Some(hook)).await;
    let report = tmp.path().join("r.jsonl");
    let c = crate::faults::client(&url, crate::faults::Pace { concurrency: 2, ..Default::default() });
    let err = import(&c, &import_options(&m.input, &report)).await.expect_err("the input changed");
    let rows = assert_truthful(&report, &sb);
    assert_eq!(rows.len(), m.sources.len(), "one row per row read, in input order");
    assert_eq!(rows.iter().map(|r| r.source.as_str()).collect::<Vec<_>>(), m.sources);
    assert!(!crate::faults::partial_of(&report).exists());
    (sb, err, rows)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_input_changed_while_the_site_is_read_stops_before_any_write() {
    let (sb, err, rows) = import_while_input_changes("GET /rest/servicedeskapi/organization/").await;
    assert_eq!(err.exit().code(), 3);
    assert!(err.to_string().contains("input changed") && err.to_string().contains("members.csv"), "{err}");
    assert_eq!(sb.stats().writes, 0, "nothing was written");
    assert!(rows.iter().all(|r| r.outcome == "not_sent" || r.outcome == "unchanged" || r.outcome == "failed"));
    assert!(rows.iter().any(|r| r.outcome == "not_sent" && r.message.contains("changed")), "{rows:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_input_changed_during_the_writes_still_gets_a_truthful_final_report() {
    let (sb, err, rows) = import_while_input_changes("POST /rest/servicedeskapi/organization").await;
    assert_eq!(err.exit().code(), 3, "never 2 once writes were sent");
    assert!(err.to_string().contains("input changed"), "{err}");
    assert!(sb.stats().writes > 0);
    assert!(rows.iter().any(|r| r.outcome == "created"), "{rows:?}");
    let members = rows.iter().find(|r| r.kind == "members" && r.outcome == "added").expect("an added member");
    assert!(!members.target.is_empty() && !members.organization.is_empty(), "columns kept: {members:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_that_meets_a_login_page_fails_and_leaves_no_snapshot() {
    let tmp = tempfile::tempdir().unwrap();
    let m = matrix(tmp.path(), 20);
    let sb = sandbox(Some(&m.seed), SandboxConfig::default()).await;
    let c = client(&sb.url());
    import(&c, &import_options(&m.input, &tmp.path().join("r.jsonl"))).await.unwrap();
    let (proxy_url, st) = login_proxy(&sb.url(), 15).await;
    let out = tmp.path().join("snap");
    let err = export(&client(&proxy_url), &export_options(&out, Format::Jsonl, &proxy_url)).await.unwrap_err();
    assert_eq!(err.exit().code(), 3);
    assert!(err.to_string().contains("HTML page"), "{err}");
    assert!(!out.exists(), "no snapshot that looks complete");
    assert!(st.html_answers.load(Ordering::SeqCst) <= 16, "stopped at once");
    assert_eq!(crate::faults::entries(tmp.path()), ["input", "r.jsonl", "seed"], "no staging left");
}
