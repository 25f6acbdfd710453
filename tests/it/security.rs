//! Security of the "proof" issue, mostly through the real binary: no
//! credential (token, `base64(email:token)`, bearer, `Authorization` header)
//! in stdout/stderr at any verbosity, in reports, `FILE.partial`, snapshots
//! or error messages; plain `http://` to a non-loopback host refused before
//! anything is sent; private file modes; CSV formula cells escaped in reports
//! and snapshots and restored exactly; bad credentials stopping a run at
//! once. Every server listens on 127.0.0.1.

use std::io::{BufRead, Read};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use jsm_orgs::model::unescape_formula;
use jsm_orgs::sandbox::{Faults, Sandbox, SandboxConfig, SandboxCredentials};
use serde_json::json;

use crate::common::{content_of, Content};
use crate::faults::{entries, matrix, partial_of, read_jsonl_report, s, sandbox};

const EMAIL: &str = "proof@example.com";
const TOKEN: &str = "tok-SECRET-123";
const BEARER: &str = "bear-SECRET-456";
const WRONG: &str = "tok-SECRET-999";

fn credentials() -> SandboxCredentials {
    SandboxCredentials { email: EMAIL.into(), api_token: TOKEN.into(), bearer: Some(BEARER.into()) }
}

async fn secured(seed: Option<&Path>, cfg: SandboxConfig) -> Sandbox {
    sandbox(seed, SandboxConfig { credentials: credentials(), ..cfg }).await
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// Every form a credential could leak in.
fn secrets() -> Vec<String> {
    let mut v = vec![TOKEN.to_string(), BEARER.to_string(), WRONG.to_string(), "SECRET".to_string()];
    for t in [TOKEN, WRONG] {
        v.push(b64(&format!("{EMAIL}:{t}")));
        v.push(b64(t));
    }
    v.push(b64(BEARER));
    v
}

/// No credential value, in any encoding.
fn assert_no_secret(text: &str, what: &str) {
    for secret in secrets() {
        assert!(!text.contains(&secret), "{what} contains {secret:?}:\n{text}");
    }
}

/// No credential value and no trace of an auth header.
fn assert_clean(text: &str, what: &str) {
    assert_no_secret(text, what);
    let lower = text.to_ascii_lowercase();
    assert!(!lower.contains("authorization"), "{what} mentions an Authorization header:\n{text}");
    assert!(!lower.contains("basic "), "{what} shows a Basic credential:\n{text}");
    assert!(!lower.contains("bearer "), "{what} shows a Bearer credential:\n{text}");
}

fn assert_file_clean(path: &Path) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_clean(&String::from_utf8_lossy(&bytes), &path.display().to_string());
}

fn assert_dir_clean(dir: &Path) {
    for e in std::fs::read_dir(dir).unwrap() {
        assert_file_clean(&e.unwrap().path());
    }
}

#[cfg(unix)]
fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[cfg(unix)]
fn assert_private_snapshot(dir: &Path) {
    assert_eq!(mode(dir), 0o700, "{}", dir.display());
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        assert_eq!(mode(&p), 0o600, "{}", p.display());
    }
}

#[cfg(not(unix))]
fn assert_private_snapshot(_: &Path) {}

/// `jsm-orgs ARGS` with a clean environment plus `env`.
fn command(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_jsm-orgs"));
    c.args(args).env_clear().stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    for (k, v) in env {
        c.env(k, v);
    }
    c
}

/// Run the binary to its end without blocking the runtime that serves the sandbox.
async fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = command(args, env);
    tokio::task::spawn_blocking(move || c.output().expect("run jsm-orgs")).await.unwrap()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

const BASIC: [(&str, &str); 2] = [("JSM_EMAIL", EMAIL), ("JSM_API_TOKEN", TOKEN)];

// ----- no credential anywhere ----------------------------------------------------

/// Import and export at trace level (`-vv`), with `RUST_LOG=trace` in the
/// environment too, through retried requests: neither output nor any file
/// written holds a credential, and the dependencies' request logs stay off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_credential_in_output_reports_or_snapshots_at_any_verbosity() {
    let tmp = tempfile::tempdir().unwrap();
    let m = matrix(tmp.path(), 12);
    let sb = secured(Some(&m.seed), SandboxConfig::default()).await;
    // A few retried writes, so that the retry path logs too.
    sb.set_faults(Faults { fail_burst: 2, only_methods: vec!["POST".into()], ..Faults::default() });
    let url = sb.url();
    let mut env: Vec<(&str, &str)> = BASIC.to_vec();
    env.extend([("RUST_LOG", "trace"), ("RUST_BACKTRACE", "1")]);

    let report = tmp.path().join("report.csv");
    let o =
        run(&["import", &s(&m.input), "--site", &url, "--report", &s(&report), "--rate", "2000", "-vv"], &env).await;
    let out = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(out.contains("response") && out.contains("/rest/servicedeskapi/organization"), "trace is on: {out}");
    assert!(out.contains("retrying"), "a retry was logged: {out}");
    assert!(!out.contains("hyper") && !out.contains("reqwest"), "dependency logs are filtered: {out}");
    assert_clean(&out, "import -vv output");
    assert_file_clean(&report);
    m.assert_site(&sb);

    for (flag, format) in [("-v", "csv"), ("-vv", "jsonl")] {
        let snap = tmp.path().join(format!("snap-{format}"));
        let o = run(&["export", "--out", &s(&snap), "--site", &url, "--format", format, "--rate", "2000", flag], &env)
            .await;
        let out = text(&o);
        assert_eq!(o.status.code(), Some(0), "{out}");
        assert_clean(&out, &format!("export {flag} output"));
        assert_dir_clean(&snap);
        assert_private_snapshot(&snap);
    }

    // Bearer and --token-file credentials at trace level.
    let file = tmp.path().join("token");
    std::fs::write(&file, format!("{TOKEN}\n")).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let bearer_env = [("JSM_BEARER_TOKEN", BEARER), ("RUST_LOG", "trace")];
    let file_env = [("JSM_EMAIL", EMAIL), ("RUST_LOG", "trace")];
    let token_file = s(&file);
    for (name, env, extra) in [
        ("bearer", &bearer_env[..], &[][..]),
        ("token-file", &file_env[..], &["--token-file", token_file.as_str()][..]),
    ] {
        let report = tmp.path().join(format!("{name}.jsonl"));
        let mut args = vec!["import", m.input.to_str().unwrap(), "--site", &url, "--report"];
        let report_s = s(&report);
        args.extend([report_s.as_str(), "--rate", "2000", "-vv"]);
        args.extend(extra);
        let o = run(&args, env).await;
        let out = text(&o);
        assert_eq!(o.status.code(), Some(0), "{name}: {out}");
        assert!(out.contains("response"), "{name}: trace is on");
        assert_clean(&out, name);
        assert_file_clean(&report);
    }
}

/// `FILE.partial` of an import killed mid-run holds no credential, and is
/// private like the report.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_partial_report_of_a_killed_run_is_private_and_holds_no_credential() {
    let tmp = tempfile::tempdir().unwrap();
    let m = matrix(tmp.path(), 40);
    let sb =
        secured(Some(&m.seed), SandboxConfig { latency: Duration::from_millis(20), ..SandboxConfig::default() }).await;
    let report = tmp.path().join("report.csv");
    // Output goes to files: a full pipe must not stall the run.
    let log = tmp.path().join("log.txt");
    let mut child = command(
        &["import", &s(&m.input), "--site", &sb.url(), "--report", &s(&report), "--rate", "2000", "-vv"],
        &BASIC,
    )
    .stdout(std::fs::File::create(&log).unwrap())
    .stderr(std::fs::File::create(tmp.path().join("err.txt")).unwrap())
    .spawn()
    .unwrap();
    let started = Instant::now();
    while sb.stats().writes < 60 {
        assert!(child.try_wait().unwrap().is_none(), "ended too early");
        assert!(started.elapsed() < Duration::from_secs(20), "{:?}", sb.stats());
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let err = std::fs::read_to_string(tmp.path().join("err.txt")).unwrap();
    assert!(err.contains("response"), "trace is on: {err}");
    assert_clean(&err, "stderr of the killed run");
    assert_file_clean(&log);
    let partial = partial_of(&report);
    assert!(std::fs::metadata(&partial).unwrap().len() > 100, "rows were written");
    assert_file_clean(&partial);
    #[cfg(unix)]
    assert_eq!(mode(&partial), 0o600);
}

/// Reports are 0600 even when the file existed before with a wider mode.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_are_private_even_over_an_existing_file() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let m = matrix(tmp.path(), 3);
    let sb = secured(Some(&m.seed), SandboxConfig::default()).await;
    for name in ["r.csv", "r.jsonl"] {
        let report = tmp.path().join(name);
        std::fs::write(&report, "old").unwrap();
        std::fs::set_permissions(&report, std::fs::Permissions::from_mode(0o644)).unwrap();
        let o = run(&["import", &s(&m.input), "--site", &sb.url(), "--report", &s(&report), "--quiet"], &BASIC).await;
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
        assert_eq!(mode(&report), 0o600, "{name}");
    }
}

// ----- credentials that fail -------------------------------------------------------

/// A wrong token: import and export stop at once with exit 3, after a handful
/// of requests, and no output or file shows either token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_credentials_stop_import_and_export_at_once_with_exit_3() {
    let tmp = tempfile::tempdir().unwrap();
    let m = matrix(tmp.path(), 12);
    let sb = secured(Some(&m.seed), SandboxConfig::default()).await;
    let url = sb.url();
    let before = sb.state();
    let wrong_basic = [("JSM_EMAIL", EMAIL), ("JSM_API_TOKEN", WRONG)];
    let wrong_bearer = [("JSM_BEARER_TOKEN", WRONG)];
    for (name, env) in [("basic", &wrong_basic[..]), ("bearer", &wrong_bearer[..])] {
        sb.reset_stats();
        let report = tmp.path().join(format!("{name}.csv"));
        let started = Instant::now();
        let o = run(&["import", &s(&m.input), "--site", &url, "--report", &s(&report), "-vv"], env).await;
        let out = text(&o);
        assert_eq!(o.status.code(), Some(3), "{name}: {out}");
        assert!(started.elapsed() < Duration::from_secs(5), "{name}: {:?}", started.elapsed());
        assert!(out.contains("401"), "{name}: the error names the status: {out}");
        assert_clean(&out, &format!("{name} import output"));
        assert_file_clean(&report);
        let stats = sb.stats();
        assert!(stats.unauthorized >= 1 && stats.total <= 10, "{name}: {stats:?}");
        assert_eq!(stats.writes, 0);

        sb.reset_stats();
        let parent = tmp.path().join(format!("backups-{name}"));
        std::fs::create_dir(&parent).unwrap();
        let started = Instant::now();
        let o = run(&["export", "--out", &s(&parent.join("snap")), "--site", &url, "-vv"], env).await;
        let out = text(&o);
        assert_eq!(o.status.code(), Some(3), "{name}: {out}");
        assert!(started.elapsed() < Duration::from_secs(5), "{name}: {:?}", started.elapsed());
        assert_clean(&out, &format!("{name} export output"));
        assert!(entries(&parent).is_empty(), "{:?}", entries(&parent));
        let stats = sb.stats();
        assert!(stats.unauthorized >= 1 && stats.total <= 10, "{name}: {stats:?}");
    }
    assert_eq!(sb.state(), before, "nothing changed");

    // A bearer token that cannot go into a header: refused, without quoting it.
    let o = run(&["export", "--out", "x", "--site", &url], &[("JSM_BEARER_TOKEN", "bear-SECRET-456\u{7}")]).await;
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert_clean(&text(&o), "bad bearer error");

    // A token file that is not one line: refused, without quoting it.
    let file = tmp.path().join("token");
    std::fs::write(&file, format!("{TOKEN}\n{WRONG}\n")).unwrap();
    let o = run(&["export", "--out", "x", "--site", &url, "--token-file", &s(&file)], &[("JSM_EMAIL", EMAIL)]).await;
    assert_eq!(o.status.code(), Some(2));
    assert_clean(&text(&o), "token file error");
}

/// An unreachable site: exit 3 naming the problem, no credential in the
/// message or the report, no snapshot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_site_exits_3_without_leaking_a_credential() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let site = format!("http://127.0.0.1:{port}");
    let tmp = tempfile::tempdir().unwrap();
    let m = matrix(tmp.path(), 2);
    let report = tmp.path().join("r.csv");
    let o =
        run(&["import", &s(&m.input), "--site", &site, "--report", &s(&report), "--max-retries", "1", "-vv"], &BASIC)
            .await;
    let out = text(&o);
    assert_eq!(o.status.code(), Some(3), "{out}");
    assert!(out.contains("error:"), "{out}");
    assert_clean(&out, "unreachable import output");
    assert_file_clean(&report);

    let parent = tmp.path().join("backups");
    std::fs::create_dir(&parent).unwrap();
    let o =
        run(&["export", "--out", &s(&parent.join("snap")), "--site", &site, "--max-retries", "1", "-vv"], &BASIC).await;
    let out = text(&o);
    assert_eq!(o.status.code(), Some(3), "{out}");
    assert_clean(&out, "unreachable export output");
    assert!(entries(&parent).is_empty(), "{:?}", entries(&parent));
}

/// Accept connections on 127.0.0.1 and keep the first bytes of each: a
/// stand-in for any proxy or host a request could reach.
fn listener() -> (String, std::sync::mpsc::Receiver<String>) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = format!("http://{}", l.local_addr().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut conn) = conn else { return };
            let _ = conn.set_read_timeout(Some(Duration::from_millis(500)));
            let mut buf = [0u8; 2048];
            let n = conn.read(&mut buf).unwrap_or(0);
            if tx.send(String::from_utf8_lossy(&buf[..n]).into_owned()).is_err() {
                return;
            }
        }
    });
    (addr, rx)
}

/// `http://` to anything but loopback: exit 2 before any connection. The
/// proxy variables point at a local listener, so any request the binary
/// made would arrive there; a positive control (https through the same
/// proxy) shows that it would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_to_a_remote_host_is_refused_with_exit_2_and_nothing_sent() {
    let (proxy, seen) = listener();
    let proxy_env = |creds: &[(&'static str, &'static str)]| -> Vec<(&'static str, String)> {
        let mut v: Vec<(&'static str, String)> = creds.iter().map(|(k, v)| (*k, v.to_string())).collect();
        for k in ["HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"] {
            v.push((k, proxy.clone()));
        }
        v
    };
    let tmp = tempfile::tempdir().unwrap();
    let m = matrix(tmp.path(), 2);
    let report = tmp.path().join("r.csv");
    let bearer = [("JSM_BEARER_TOKEN", BEARER)];
    for site in [
        "http://acme.atlassian.net",
        "http://10.1.2.3:8080",
        "http://[2001:db8::1]/jira",
        "HTTP://Jsm.Example.com",
        "http://127.0.0.1.nip.io",
        "http://localhost.attacker.example",
    ] {
        for creds in [&BASIC[..], &bearer[..]] {
            let env = proxy_env(creds);
            let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
            for args in [
                vec!["import", m.input.to_str().unwrap(), "--site", site, "--report", report.to_str().unwrap(), "-vv"],
                vec!["export", "--out", "never", "--site", site, "-vv"],
            ] {
                let o = run(&args, &env).await;
                let out = text(&o);
                assert_eq!(o.status.code(), Some(2), "{site}: {out}");
                assert!(out.contains("refusing plain http://"), "{site}: {out}");
                assert_clean(&out, site);
                assert!(!report.exists(), "nothing written");
            }
        }
    }
    assert!(!tmp.path().join("never").exists());
    std::thread::sleep(Duration::from_millis(100));
    assert!(seen.try_recv().is_err(), "a refused run connected somewhere");

    // The positive control: https goes through the proxy (a CONNECT that
    // carries no credential either).
    let env = proxy_env(&BASIC);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let o =
        run(&["export", "--out", "never", "--site", "https://acme.atlassian.net", "--max-retries", "0"], &env).await;
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert_clean(&text(&o), "https via proxy");
    let first = seen.recv_timeout(Duration::from_secs(5)).expect("the https run reached the proxy");
    assert!(first.starts_with("CONNECT acme.atlassian.net:443"), "{first:?}");
    assert_clean(&first, "the CONNECT request");
}

/// Credentials in the site URL (flag or `JSM_SITE`) are refused without
/// being echoed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_in_the_site_url_are_refused_without_echo() {
    let site = format!("https://{}:{TOKEN}@acme.atlassian.net", EMAIL.replace('@', "%40"));
    let o = run(&["export", "--out", "never", "--site", &site], &BASIC).await;
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert_clean(&text(&o), "--site with credentials");
    let mut env = BASIC.to_vec();
    env.push(("JSM_SITE", &site));
    let o = run(&["import", "nothing.csv", "--report", "never.csv"], &env).await;
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert_clean(&text(&o), "JSM_SITE with credentials");
}

/// A redirect (here to a remote plain-http host) is never followed: the
/// credential stays with the site it was meant for, and the run fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_are_never_followed() {
    use wiremock::{matchers::any, Mock, MockServer, ResponseTemplate};
    let (proxy, seen) = listener();
    let server = MockServer::start().await;
    Mock::given(any())
        .respond_with(ResponseTemplate::new(307).insert_header("location", "http://collector.example/steal"))
        .mount(&server)
        .await;
    let tmp = tempfile::tempdir().unwrap();
    let m = matrix(tmp.path(), 2);
    let report = tmp.path().join("r.csv");
    let mut env: Vec<(&str, &str)> = BASIC.to_vec();
    for k in ["HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"] {
        env.push((k, &proxy));
    }
    env.extend([("NO_PROXY", "127.0.0.1,localhost"), ("no_proxy", "127.0.0.1,localhost")]);
    let uri = server.uri();
    let o = run(&["import", &s(&m.input), "--site", &uri, "--report", &s(&report), "--max-retries", "0", "-vv"], &env)
        .await;
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert_clean(&text(&o), "import output");
    assert_file_clean(&report);
    let o = run(&["export", "--out", &s(&tmp.path().join("snap")), "--site", &uri, "--max-retries", "0"], &env).await;
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(!tmp.path().join("snap").exists());
    let requests = server.received_requests().await.unwrap();
    assert!(!requests.is_empty(), "the site was asked");
    assert!(requests.iter().all(|r| r.url.path().starts_with("/rest/servicedeskapi/")), "no redirect was followed");
    std::thread::sleep(Duration::from_millis(100));
    assert!(seen.try_recv().is_err(), "a request left for the redirect target");
}

/// `jsm-orgs sandbox` prints how to connect, but never a token that came
/// from the environment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sandbox_command_never_echoes_a_token_from_the_environment() {
    let mut child = command(
        &["sandbox", "--listen", "127.0.0.1:0"],
        &[("JSM_EMAIL", EMAIL), ("JSM_API_TOKEN", TOKEN), ("JSM_BEARER_TOKEN", BEARER)],
    )
    .spawn()
    .unwrap();
    let stdout = child.stdout.take().unwrap();
    let banner = tokio::task::spawn_blocking(move || {
        let mut text = String::new();
        for line in std::io::BufReader::new(stdout).lines() {
            let line = line.unwrap();
            text.push_str(&line);
            text.push('\n');
            if line.contains("Press Ctrl-C") {
                break;
            }
        }
        text
    });
    let banner = tokio::time::timeout(Duration::from_secs(10), banner).await.expect("banner").unwrap();
    child.kill().unwrap();
    let rest = child.wait_with_output().unwrap();
    assert!(banner.contains(EMAIL) && banner.contains("JSM_API_TOKEN"), "{banner}");
    assert_no_secret(&banner, "sandbox banner");
    assert_clean(&String::from_utf8_lossy(&rest.stderr), "sandbox stderr");
}

// ----- formula cells ------------------------------------------------------------------

const FORMULA_NAMES: &[&str] = &[
    "=SUM(A1:A9)",
    "+plus",
    "-minus",
    "@at",
    "\tTabbed",
    "\rCarriage",
    "'apostrophe",
    "''two apostrophes",
    "=HYPERLINK(\"http://example.invalid\",\"x\")",
    "plain, \"quoted\"",
];

/// Cells that a spreadsheet would run (first char `=`, `+`, `-`, `@`, tab,
/// CR) are never written bare; returns every cell unescaped, by column.
fn escaped_csv(path: &Path) -> Vec<std::collections::BTreeMap<String, String>> {
    let (_, mut rows) = crate::common::csv_maps(path);
    for (h, c) in rows.iter_mut().flat_map(|r| r.iter_mut()) {
        assert!(
            !c.starts_with(['=', '+', '-', '@', '\t', '\r']),
            "{}: column {h} holds a bare formula cell {c:?}",
            path.display()
        );
        *c = unescape_formula(c).to_string();
    }
    rows
}

/// A CSV of formula-like names imported by the real binary: the site holds
/// the exact names; the CSV report escapes them; a CSV snapshot escapes
/// them (and says so); importing that snapshot into an empty site restores
/// every name, member, property and link exactly; a second import of it
/// changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn formula_cells_are_escaped_in_reports_and_snapshots_and_restored_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("input");
    std::fs::create_dir(&input).unwrap();
    let mut want = Content::default();
    {
        let mut orgs = csv::Writer::from_path(input.join("organizations.csv")).unwrap();
        let mut members = csv::Writer::from_path(input.join("members.csv")).unwrap();
        let mut props = csv::Writer::from_path(input.join("properties.csv")).unwrap();
        let mut links = csv::Writer::from_path(input.join("service_desks.csv")).unwrap();
        orgs.write_record(["name"]).unwrap();
        members.write_record(["organization", "account_id"]).unwrap();
        props.write_record(["organization", "key", "value"]).unwrap();
        links.write_record(["organization", "service_desk_id"]).unwrap();
        for (i, name) in FORMULA_NAMES.iter().enumerate() {
            orgs.write_record([name]).unwrap();
            want.orgs.insert(name.to_string());
            let acct = if i % 2 == 0 { format!("-dash-{i}") } else { format!("acct-{i}") };
            members.write_record([*name, acct.as_str()]).unwrap();
            want.members.insert((name.to_string(), acct));
            for (key, value) in [("=key", json!("=1+1")), ("-n", json!(-5)), ("@v", json!({"@": "+x"}))] {
                props.write_record([name, key, &value.to_string()]).unwrap();
                want.properties.insert((name.to_string(), key.to_string()), value);
            }
            links.write_record([name, "10001"]).unwrap();
            want.links.insert((name.to_string(), "10001".into()));
        }
    }
    let source = secured(None, SandboxConfig::default()).await;
    let report = tmp.path().join("report.csv");
    let o = run(&["import", &s(&input), "--site", &source.url(), "--report", &s(&report), "--quiet"], &BASIC).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(content_of(&source.state()), want, "the site holds the exact names");
    let rows = escaped_csv(&report);
    let named: std::collections::BTreeSet<String> = rows.iter().map(|r| r["organization"].clone()).collect();
    assert_eq!(named, want.orgs, "the report names every organization exactly (once unescaped)");
    assert!(rows.iter().any(|r| r["target"] == "-dash-0"));
    let raw = std::fs::read_to_string(&report).unwrap();
    assert!(raw.contains("'=SUM(A1:A9)") && raw.contains("'''two apostrophes"), "{raw}");

    let snap = tmp.path().join("snap");
    let o = run(&["export", "--out", &s(&snap), "--site", &source.url(), "--format", "csv", "--quiet"], &BASIC).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_private_snapshot(&snap);
    let manifest = std::fs::read_to_string(snap.join("manifest.json")).unwrap();
    assert!(manifest.contains("\"csv_formula_escape\": \"apostrophe\""), "{manifest}");
    for file in ["organizations.csv", "members.csv", "properties.csv", "service_desks.csv"] {
        escaped_csv(&snap.join(file));
    }
    let orgs: std::collections::BTreeSet<String> =
        escaped_csv(&snap.join("organizations.csv")).into_iter().map(|r| r["name"].clone()).collect();
    assert_eq!(orgs, want.orgs);

    let target = secured(None, SandboxConfig::default()).await;
    let restore = tmp.path().join("restore.jsonl");
    let o = run(&["import", &s(&snap), "--site", &target.url(), "--report", &s(&restore), "--quiet"], &BASIC).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(content_of(&target.state()), want, "the snapshot restores every name exactly");
    assert!(read_jsonl_report(&restore).iter().all(|r| r.outcome != "failed"));

    target.reset_stats();
    let again = tmp.path().join("again.jsonl");
    let o = run(&["import", &s(&snap), "--site", &target.url(), "--report", &s(&again), "--quiet"], &BASIC).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(target.stats().writes, 0);
    assert!(read_jsonl_report(&again).iter().all(|r| r.outcome == "unchanged"));
}

/// A site (or a gateway in front of it) whose JSON error bodies echo the
/// request's credential, as some gateways do: the echo must reach neither
/// the log, the error message on stderr, nor the report ("secrets never
/// appear in logs, reports or error messages").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_body_echoing_the_credential_does_not_leak_it() {
    use wiremock::matchers::{method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};
    let echo = format!("Invalid header Authorization: Basic {} (token {TOKEN})", b64(&format!("{EMAIL}:{TOKEN}")));
    let page = ResponseTemplate::new(200).set_body_json(json!({
        "start": 0, "limit": 50, "size": 0, "isLastPage": true, "values": []
    }));
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("orgs.csv");
    std::fs::write(&input, "name\nNew Org\n").unwrap();

    // A retried 503 (debug log) whose final failure lands in the report.
    let server = MockServer::start().await;
    Mock::given(method("GET")).and(path("/rest/servicedeskapi/organization")).respond_with(page).mount(&server).await;
    Mock::given(method("POST"))
        .and(path("/rest/servicedeskapi/organization"))
        .respond_with(ResponseTemplate::new(503).set_body_json(json!({"errorMessage": echo})))
        .mount(&server)
        .await;
    let report = tmp.path().join("r.csv");
    let o = run(
        &["import", &s(&input), "--site", &server.uri(), "--report", &s(&report), "--max-retries", "1", "-vv"],
        &BASIC,
    )
    .await;
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(std::fs::read_to_string(&report).unwrap().contains("503"));
    assert_no_secret(&out, "output of a retried 503");
    assert_no_secret(&std::fs::read_to_string(&report).unwrap(), "report of a 503");

    // A 401: the abort message on stderr, and every row of the report.
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/rest/servicedeskapi/organization"))
        .respond_with(ResponseTemplate::new(401).set_body_json(json!({"errorMessage": echo})))
        .mount(&server)
        .await;
    let report = tmp.path().join("r401.csv");
    let o = run(&["import", &s(&input), "--site", &server.uri(), "--report", &s(&report)], &BASIC).await;
    let out = text(&o);
    assert_eq!(o.status.code(), Some(3), "{out}");
    assert_no_secret(&out, "the 401 error message");
    assert_no_secret(&std::fs::read_to_string(&report).unwrap(), "report of a 401");
}
