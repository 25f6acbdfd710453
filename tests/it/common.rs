//! Shared test helpers: clients with fast retry policies pointed at a
//! wiremock server or an in-process sandbox.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use jsm_orgs::api::RetryPolicy;
use jsm_orgs::api::{Auth, Client, ClientConfig};
use jsm_orgs::sandbox::SiteState;
use jsm_orgs::throttle::{MethodRates, Throttle, ThrottleConfig};
use serde_json::Value;

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

/// A throttle whose every endpoint starts at `rate` (the tests' sites are
/// fast) under a total ceiling of `rate`, with `concurrency` in flight.
pub fn throttle(rate: f64, concurrency: usize) -> Arc<Throttle> {
    Arc::new(Throttle::new(&ThrottleConfig {
        ceiling: Some(rate),
        concurrency: Some(concurrency),
        start: MethodRates::uniform(rate),
    }))
}

/// A client for `site` with Basic auth (the sandbox's default credentials).
pub fn client(site: &str) -> Client {
    client_with(site, Auth::Basic { email: EMAIL.into(), token: TOKEN.into() }, fast_retry(4), Duration::from_secs(5))
}

pub fn client_with(site: &str, auth: Auth, retry: RetryPolicy, timeout: Duration) -> Client {
    Client::new(ClientConfig { site: url::Url::parse(site).unwrap(), auth, timeout, retry }, throttle(10_000.0, 16))
        .unwrap()
}

/// A site's content with ids aside: organization names, and members,
/// properties and desk links keyed by organization name.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Content {
    pub orgs: BTreeSet<String>,
    pub members: BTreeSet<(String, String)>,
    pub properties: BTreeMap<(String, String), Value>,
    pub links: BTreeSet<(String, String)>,
}

pub fn content_of(state: &SiteState) -> Content {
    let names: HashMap<u64, &str> = state.organizations.iter().map(|o| (o.id, o.name.as_str())).collect();
    let name = |id: u64| names.get(&id).unwrap_or_else(|| panic!("no org {id}")).to_string();
    Content {
        orgs: state.organizations.iter().map(|o| o.name.clone()).collect(),
        members: state.members.iter().map(|m| (name(m.organization_id), m.account_id.clone())).collect(),
        properties: state
            .properties
            .iter()
            .map(|p| ((name(p.organization_id), p.key.clone()), p.value.clone()))
            .collect(),
        links: state.service_desks.iter().map(|l| (name(l.organization_id), l.service_desk_id.clone())).collect(),
    }
}

pub fn assert_no_duplicate_orgs(state: &SiteState) {
    let mut count: HashMap<&str, usize> = HashMap::new();
    for o in &state.organizations {
        *count.entry(&o.name).or_default() += 1;
    }
    let dups: Vec<_> = count.into_iter().filter(|(_, n)| *n > 1).collect();
    assert!(dups.is_empty(), "duplicate organizations: {dups:?}");
}

/// `jsm-orgs ARGS` as a child process: a clean environment holding only the
/// sandbox's Basic credentials, no stdin, output discarded (pipe it to read it).
pub fn cli<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> std::process::Command {
    use std::process::Stdio;
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_jsm-orgs"));
    c.args(args)
        .env_clear()
        .env("JSM_EMAIL", EMAIL)
        .env("JSM_API_TOKEN", TOKEN)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    c
}

/// Options of an export of `site` into `out`, as the tests use them.
pub fn export_options(
    out: &std::path::Path,
    format: jsm_orgs::snapshot::Format,
    site: &str,
) -> jsm_orgs::snapshot::ExportOptions {
    jsm_orgs::snapshot::ExportOptions {
        out: out.to_path_buf(),
        format,
        service_desks: Vec::new(),
        overwrite: false,
        site: site.to_string(),
        progress: false,
        excel: false,
        keep: None,
    }
}

/// The header and the rows of a CSV file, each row as header -> raw cell.
pub fn csv_maps(path: &std::path::Path) -> (Vec<String>, Vec<BTreeMap<String, String>>) {
    let mut reader = csv::Reader::from_path(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let header: Vec<String> = reader.headers().unwrap().iter().map(String::from).collect();
    let rows = reader
        .records()
        .map(|rec| header.iter().cloned().zip(rec.unwrap().iter().map(String::from)).collect())
        .collect();
    (header, rows)
}

/// A desk link as the sandbox reports it: a desk seeded or named by id only
/// gets the project key `SD<id>` and the name `Service desk <id>`.
pub fn sandbox_link(
    organization: impl Into<String>,
    organization_id: u64,
    desk: &str,
) -> jsm_orgs::model::DeskLinkRecord {
    jsm_orgs::model::DeskLinkRecord {
        project_key: Some(format!("SD{}", desk.to_ascii_uppercase())),
        project_name: Some(format!("Service desk {desk}")),
        ..jsm_orgs::model::DeskLinkRecord::by_id(organization, organization_id, desk)
    }
}

/// Organizations as a CSV snapshot holds them: `created` is its ISO text.
pub fn csv_created(orgs: &[jsm_orgs::model::OrgRecord]) -> Vec<jsm_orgs::model::OrgRecord> {
    orgs.iter()
        .cloned()
        .map(|mut o| {
            o.created = o.created.map(|c| Value::String(jsm_orgs::model::created_text(&c)));
            o
        })
        .collect()
}

/// The sandbox's Basic credentials as an environment.
pub fn env() -> jsm_orgs::Env {
    jsm_orgs::Env::from_pairs([("JSM_EMAIL", EMAIL), ("JSM_API_TOKEN", TOKEN)])
}

pub fn s(p: &std::path::Path) -> String {
    p.to_str().expect("utf-8 path").to_string()
}

/// `jsm-orgs ARGS` in process, with `env`.
pub async fn run_with(args: &[String], env: &jsm_orgs::Env) -> u8 {
    use clap::Parser;
    let mut argv = vec!["jsm-orgs".to_string()];
    argv.extend(args.iter().cloned());
    let cli = jsm_orgs::cli::Cli::try_parse_from(argv).expect("valid command line");
    jsm_orgs::run(cli, env, false).await
}

/// `jsm-orgs import INPUT --site SITE --report REPORT [EXTRA]` in process,
/// with a fast rate ceiling and the sandbox credentials.
pub async fn import(site: &str, input: &std::path::Path, report: &std::path::Path, extra: &[&str]) -> u8 {
    let mut args: Vec<String> =
        vec!["import".into(), s(input), "--site".into(), site.into(), "--report".into(), s(report)];
    args.extend(["--rate", "2000", "--quiet"].iter().map(|a| a.to_string()));
    args.extend(extra.iter().map(|a| a.to_string()));
    run_with(&args, &env()).await
}

/// A 200 answer holding one last page of `values`.
pub fn page(values: Value) -> wiremock::ResponseTemplate {
    let n = values.as_array().map_or(0, Vec::len);
    wiremock::ResponseTemplate::new(200).set_body_json(serde_json::json!({
        "start": 0, "limit": 50, "size": n, "isLastPage": true, "values": values,
    }))
}
