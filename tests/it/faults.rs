//! The fault matrix of the "proof" issue: imports and exports against an
//! in-process sandbox that drops answers to committed writes, storms 429s
//! (with `Retry-After`, with only `X-RateLimit-Reset`, with no hint at all),
//! bursts 503s, answers later than the client's timeout, garbles JSON bodies,
//! and changes under an export; plus crash safety of the real binary killed
//! (SIGKILL) at several points of an import.
//!
//! Every import must end in the exact input state with no duplicate
//! organization and one report row per input row (in input order, with the
//! outcome a quiet site gives); every export must equal the site or fail
//! loudly (exit 3) leaving no directory behind. In-process runs use
//! millisecond backoffs (the CLI's are half a second). Only 127.0.0.1.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use jsm_orgs::api::{Auth, Client, ClientConfig};
use jsm_orgs::model::{DeskLinkRecord, MemberRecord, OrgRecord, PropertyRecord};
use jsm_orgs::report::Summary;
use jsm_orgs::sandbox::{Faults, RateLimitHint, Sandbox, SandboxConfig, SiteState};
use jsm_orgs::settings::ImportOptions;
use jsm_orgs::snapshot::{ExportSummary, Format};
use serde_json::{json, Value};

use crate::common::{assert_no_duplicate_orgs, cli, content_of, export_options, fast_retry, Content, EMAIL, TOKEN};

pub(crate) const DESKS: [&str; 2] = ["10001", "10002"];

// ----- shared helpers (also used by `security`) -------------------------------

pub(crate) fn s(p: &Path) -> String {
    p.to_str().expect("utf-8 path").to_string()
}

pub(crate) fn partial_of(report: &Path) -> PathBuf {
    let mut s = report.as_os_str().to_owned();
    s.push(".partial");
    PathBuf::from(s)
}

/// A sandbox knowing [`DESKS`], seeded from `seed` when given.
pub(crate) async fn sandbox(seed: Option<&Path>, cfg: SandboxConfig) -> Sandbox {
    Sandbox::start(SandboxConfig {
        seed: seed.map(Path::to_path_buf),
        service_desks: DESKS.iter().map(|d| d.to_string()).collect(),
        ..cfg
    })
    .await
    .expect("sandbox starts")
}

/// How an in-process client paces and retries.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Pace {
    pub rate: f64,
    pub concurrency: usize,
    pub retries: u32,
    pub timeout: Duration,
}

impl Default for Pace {
    fn default() -> Self {
        Pace { rate: 10_000.0, concurrency: 8, retries: 12, timeout: Duration::from_secs(5) }
    }
}

/// A client with millisecond backoffs and its own throttle.
pub(crate) fn client(site: &str, pace: Pace) -> Client {
    let throttle = crate::common::throttle(pace.rate, pace.concurrency);
    Client::new(
        ClientConfig {
            site: url::Url::parse(site).unwrap(),
            auth: Auth::Basic { email: EMAIL.into(), token: TOKEN.into() },
            timeout: pace.timeout,
            retry: fast_retry(pace.retries),
        },
        throttle,
    )
    .unwrap()
}

pub(crate) fn import_options(input: &Path, report: &Path) -> ImportOptions {
    ImportOptions {
        paths: vec![input.to_path_buf()],
        dry_run: false,
        report: report.to_path_buf(),
        prune: false,
        strict: false,
        allow_edited: false,
        chunk_size: std::num::NonZeroUsize::new(50).unwrap(),
        progress: false,
        create_customers: false,
    }
}

/// The entries of a directory, sorted.
pub(crate) fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

/// One report row as read back (JSONL reports).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Rep {
    pub source: String,
    pub kind: String,
    pub organization: String,
    pub target: String,
    pub outcome: String,
    pub attempts: u64,
    pub message: String,
}

pub(crate) fn rep_from_json(line: &str) -> Rep {
    let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not a whole JSON row {line:?}: {e}"));
    let t = |k: &str| v[k].as_str().unwrap_or_else(|| panic!("report field {k} missing in {v}")).to_string();
    Rep {
        source: t("source"),
        kind: t("kind"),
        organization: t("organization"),
        target: t("target"),
        outcome: t("outcome"),
        attempts: v["attempts"].as_u64().expect("attempts"),
        message: t("message"),
    }
}

pub(crate) fn read_jsonl_report(path: &Path) -> Vec<Rep> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines().map(rep_from_json).collect()
}

fn write_jsonl<T: serde::Serialize>(path: &Path, rows: &[T]) {
    let text: String = rows.iter().map(|r| serde_json::to_string(r).unwrap() + "\n").collect();
    std::fs::write(path, text).unwrap();
}

fn write_csv(path: &Path, header: &[&str], rows: &[Vec<String>]) {
    let mut w = csv::Writer::from_path(path).unwrap();
    w.write_record(header).unwrap();
    for r in rows {
        w.write_record(r).unwrap();
    }
    w.flush().unwrap();
}

/// The matrix input: a seeded site and input files that create, update and
/// delete a bit of everything. `sources` and `outcomes` are per input row, in
/// input order, as a run against a quiet site reports them.
pub(crate) struct Matrix {
    pub input: PathBuf,
    pub seed: PathBuf,
    pub sources: Vec<String>,
    pub outcomes: Vec<&'static str>,
    /// The content the site must hold after a complete run.
    pub want: Content,
    /// What the input deletes (must be absent after a complete run).
    pub unwanted: Content,
}

pub(crate) fn new_org_name(i: usize) -> String {
    match i {
        1 => "Acme, \"Quoted\" 01".to_string(),
        2 => "=Formula 02".to_string(),
        3 => "Ünïcødé 組織 03".to_string(),
        i => format!("Matrix Org {i:02}"),
    }
}

/// `n` new organizations with 1..=4 members each, a property on every other
/// one and one or two desk links; plus, on the seeded site, an organization
/// to delete, a member to keep, add and remove, a property to update and one
/// to delete, and a link to drop.
pub(crate) fn matrix(dir: &Path, n: usize) -> Matrix {
    let seed = dir.join("seed");
    let input = dir.join("input");
    std::fs::create_dir_all(&seed).unwrap();
    std::fs::create_dir_all(&input).unwrap();
    // The seed: "Old 1" (id 1) to delete, "Keep A" (id 2) to edit.
    let org = |id: u64, name: &str| OrgRecord { id, name: name.into(), uuid: None, scim_managed: None, created: None };
    let member = |id: u64, name: &str, a: &str| MemberRecord {
        organization: name.into(),
        organization_id: id,
        account_id: a.into(),
        email: Some(format!("{a}@seed.example")),
        display_name: Some(format!("Seeded {a}")),
    };
    let prop = |id: u64, name: &str, k: &str, v: Value| PropertyRecord {
        organization: name.into(),
        organization_id: id,
        key: k.into(),
        value: v,
    };
    let link = |id: u64, name: &str, d: &str| crate::common::sandbox_link(name, id, d);
    write_jsonl(&seed.join("organizations.jsonl"), &[org(1, "Old 1"), org(2, "Keep A")]);
    write_jsonl(
        &seed.join("members.jsonl"),
        &[member(1, "Old 1", "o1"), member(2, "Keep A", "k1"), member(2, "Keep A", "k2")],
    );
    write_jsonl(
        &seed.join("properties.jsonl"),
        &[
            prop(1, "Old 1", "x", json!(1)),
            prop(2, "Keep A", "stale", json!("old")),
            prop(2, "Keep A", "tier", json!(1)),
        ],
    );
    write_jsonl(
        &seed.join("service_desks.jsonl"),
        &[link(1, "Old 1", "10001"), link(2, "Keep A", "10001"), link(2, "Keep A", "10002")],
    );

    let mut sources = Vec::new();
    let mut outcomes = Vec::new();
    let mut want = Content::default();
    let mut unwanted = Content::default();
    let ka = || "Keep A".to_string();

    // organizations.csv
    let file = input.join("organizations.csv");
    let mut rows = Vec::new();
    for i in 0..n {
        rows.push(vec![new_org_name(i), String::new()]);
        outcomes.push("created");
        want.orgs.insert(new_org_name(i));
    }
    rows.push(vec![ka(), "upsert".into()]);
    outcomes.push("unchanged");
    want.orgs.insert(ka());
    rows.push(vec!["Old 1".into(), "delete".into()]);
    outcomes.push("deleted");
    unwanted.orgs.insert("Old 1".into());
    sources.extend((0..rows.len()).map(|l| format!("{}:{}", file.display(), l + 2)));
    write_csv(&file, &["name", "action"], &rows);

    // members.csv
    let file = input.join("members.csv");
    let mut rows = Vec::new();
    for i in 0..n {
        for j in 0..=(i % 4) {
            let acct = format!("acct-{i:02}-{j}");
            rows.push(vec![new_org_name(i), acct.clone(), String::new()]);
            outcomes.push("added");
            want.members.insert((new_org_name(i), acct));
        }
    }
    for (acct, action, outcome) in [("k1", "add", "unchanged"), ("k3", "add", "added"), ("k2", "remove", "removed")] {
        rows.push(vec![ka(), acct.into(), action.into()]);
        outcomes.push(outcome);
        if action == "add" {
            want.members.insert((ka(), acct.into()));
        } else {
            unwanted.members.insert((ka(), acct.into()));
        }
    }
    sources.extend((0..rows.len()).map(|l| format!("{}:{}", file.display(), l + 2)));
    write_csv(&file, &["organization", "account_id", "action"], &rows);

    // properties.jsonl
    let file = input.join("properties.jsonl");
    let mut lines = Vec::new();
    for i in (0..n).step_by(2) {
        let value = json!({"n": i, "tags": ["a", "b"], "note": "=not a formula"});
        lines.push(json!({"organization": new_org_name(i), "key": "tier", "value": value}));
        outcomes.push("set");
        want.properties.insert((new_org_name(i), "tier".into()), value);
    }
    lines.push(json!({"organization": "Keep A", "key": "tier", "value": 2}));
    outcomes.push("set");
    want.properties.insert((ka(), "tier".into()), json!(2));
    lines.push(json!({"organization": "Keep A", "key": "stale", "action": "delete"}));
    outcomes.push("deleted");
    unwanted.properties.insert((ka(), "stale".into()), json!("old"));
    sources.extend((0..lines.len()).map(|l| format!("{}:{}", file.display(), l + 1)));
    write_jsonl(&file, &lines);

    // service_desks.csv
    let file = input.join("service_desks.csv");
    let mut rows = Vec::new();
    for i in 0..n {
        for desk in DESKS.iter().take(1 + i % 2) {
            rows.push(vec![new_org_name(i), desk.to_string(), String::new()]);
            outcomes.push("linked");
            want.links.insert((new_org_name(i), desk.to_string()));
        }
    }
    rows.push(vec![ka(), "10001".into(), "unlink".into()]);
    outcomes.push("unlinked");
    unwanted.links.insert((ka(), "10001".into()));
    // Keep A's link to 10002 is not in the input: it stays.
    want.links.insert((ka(), "10002".into()));
    sources.extend((0..rows.len()).map(|l| format!("{}:{}", file.display(), l + 2)));
    write_csv(&file, &["organization", "service_desk_id", "action"], &rows);

    assert_eq!(sources.len(), outcomes.len());
    Matrix { input, seed, sources, outcomes, want, unwanted }
}

impl Matrix {
    /// The site holds exactly the wanted content, nothing unwanted, and no
    /// organization twice.
    pub fn assert_site(&self, sb: &Sandbox) {
        let state = sb.state();
        assert_no_duplicate_orgs(&state);
        let got = content_of(&state);
        assert_eq!(got, self.want, "the site differs from the input");
        assert!(got.orgs.is_disjoint(&self.unwanted.orgs));
        assert!(got.members.is_disjoint(&self.unwanted.members));
        assert!(got.links.is_disjoint(&self.unwanted.links));
    }

    /// The final report: one row per input row, in input order, each with
    /// the outcome of a quiet run (or `unchanged`, when `rerun`).
    pub fn assert_report(&self, report: &Path, rerun: bool) -> Vec<Rep> {
        assert!(!partial_of(report).exists(), "the final report replaces FILE.partial");
        let rows = read_jsonl_report(report);
        assert_eq!(rows.iter().map(|r| r.source.as_str()).collect::<Vec<_>>(), self.sources, "one row per input row");
        for (row, want) in rows.iter().zip(&self.outcomes) {
            let want = if rerun { "unchanged" } else { want };
            assert_eq!(row.outcome, want, "{row:?}");
        }
        rows
    }

    /// The writes a run still has to make on a site holding `have`.
    pub fn remaining_writes(&self, have: &Content) -> u64 {
        let mut n = 0;
        n += self.want.orgs.difference(&have.orgs).count() as u64;
        n += self.unwanted.orgs.intersection(&have.orgs).count() as u64;
        // One add call per organization missing members (chunks of 50), one
        // remove call per organization with members to remove.
        let adds: BTreeSet<&String> =
            self.want.members.iter().filter(|m| !have.members.contains(*m)).map(|m| &m.0).collect();
        let removes: BTreeSet<&String> =
            self.unwanted.members.iter().filter(|m| have.members.contains(*m)).map(|m| &m.0).collect();
        n += (adds.len() + removes.len()) as u64;
        n += self.want.properties.iter().filter(|(k, v)| have.properties.get(*k) != Some(*v)).count() as u64;
        n += self.unwanted.properties.keys().filter(|k| have.properties.contains_key(*k)).count() as u64;
        n += self.want.links.difference(&have.links).count() as u64;
        n += self.unwanted.links.intersection(&have.links).count() as u64;
        n
    }
}

/// Import the matrix in process; the run must go to the end.
async fn import_in_process(client: &Client, m: &Matrix, report: &Path) -> Summary {
    jsm_orgs::import::import(client, &import_options(&m.input, report)).await.unwrap_or_else(|e| panic!("{e}"))
}

/// The snapshot's records as written (JSONL).
fn read_snapshot(dir: &Path) -> (Vec<OrgRecord>, Vec<MemberRecord>, Vec<PropertyRecord>, Vec<DeskLinkRecord>) {
    fn read<T: serde::de::DeserializeOwned>(p: PathBuf) -> Vec<T> {
        std::fs::read_to_string(&p)
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
    (
        read(dir.join("organizations.jsonl")),
        read(dir.join("members.jsonl")),
        read(dir.join("properties.jsonl")),
        read(dir.join("service_desks.jsonl")),
    )
}

/// The snapshot at `out` holds exactly the site's records.
fn assert_snapshot_equals_site(out: &Path, state: &SiteState) {
    let (orgs, members, properties, links) = read_snapshot(out);
    assert_eq!(orgs, state.organizations, "organizations");
    assert_eq!(members, state.members, "members");
    assert_eq!(properties, state.properties, "properties");
    assert_eq!(links, state.service_desks, "service desk links");
    let manifest: Value = serde_json::from_str(&std::fs::read_to_string(out.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["files"]["organizations.jsonl"]["rows"], orgs.len());
}

/// Import the matrix under `faults`, check the exact result, then re-import
/// under the same faults (no write needed, every row unchanged), then export
/// under the same faults and compare with the site. Returns the summaries.
async fn matrix_under(faults: Faults, pace: Pace, n: usize) -> (Sandbox, Summary, Summary, ExportSummary) {
    let tmp = tempfile::tempdir().unwrap();
    let m = matrix(tmp.path(), n);
    let sb = sandbox(Some(&m.seed), SandboxConfig::default()).await;
    sb.set_faults(faults.clone());
    let c = client(&sb.url(), pace);

    let report = tmp.path().join("first.jsonl");
    let first = import_in_process(&c, &m, &report).await;
    assert_eq!(first.failed(), 0);
    m.assert_site(&sb);
    m.assert_report(&report, false);

    // The re-run reads, finds nothing to do and writes nothing.
    sb.set_faults(Faults { fail_burst: 0, ..faults.clone() });
    let writes = sb.stats().writes;
    let report = tmp.path().join("again.jsonl");
    let again = import_in_process(&client(&sb.url(), pace), &m, &report).await;
    assert_eq!(sb.stats().writes, writes, "a re-run after success writes nothing: {:?}", sb.stats().by_route);
    m.assert_site(&sb);
    m.assert_report(&report, true);

    sb.set_faults(Faults { fail_burst: 0, ..faults });
    let out = tmp.path().join("snap");
    let exported =
        jsm_orgs::snapshot::export(&client(&sb.url(), pace), &export_options(&out, Format::Jsonl, &sb.url()))
            .await
            .unwrap_or_else(|e| panic!("export: {e}"));
    assert_snapshot_equals_site(&out, &sb.state());
    assert_eq!(entries(tmp.path()), ["again.jsonl", "first.jsonl", "input", "seed", "snap"]);
    (sb, first, again, exported)
}

// ----- the sandbox's fault knobs themselves -----------------------------------

async fn raw_get(http: &reqwest::Client, sb: &Sandbox, path: &str) -> reqwest::Response {
    http.get(format!("{}/rest/servicedeskapi{path}", sb.url())).basic_auth(EMAIL, Some(TOKEN)).send().await.unwrap()
}

/// The knobs the matrix relies on do what they say: 429 hints, 503 bursts
/// counted down, faults limited to some methods, late answers after commit.
#[tokio::test]
async fn sandbox_fault_knobs_behave_as_documented() {
    let sb = sandbox(None, SandboxConfig::default()).await;
    let http = reqwest::Client::new();

    for (hint, retry_after, reset) in [
        (RateLimitHint::RetryAfter, true, true),
        (RateLimitHint::ResetOnly, false, true),
        (RateLimitHint::NoHint, false, false),
    ] {
        sb.set_faults(Faults { rate_limit: Some(1.0), rate_limit_hint: hint, ..Faults::default() });
        let _ = raw_get(&http, &sb, "/organization").await;
        let r = raw_get(&http, &sb, "/organization").await;
        assert_eq!(r.status(), 429, "{hint:?}");
        assert_eq!(r.headers().contains_key("retry-after"), retry_after, "{hint:?}");
        assert_eq!(r.headers().contains_key("x-ratelimit-reset"), reset, "{hint:?}");
    }

    sb.set_faults(Faults { fail_burst: 3, ..Faults::default() });
    for _ in 0..3 {
        assert_eq!(raw_get(&http, &sb, "/organization").await.status(), 503);
    }
    assert_eq!(sb.faults().fail_burst, 0, "the burst is counted down");
    assert_eq!(raw_get(&http, &sb, "/organization").await.status(), 200);

    // Faults limited to POST leave reads alone.
    sb.set_faults(Faults { fail_rate: 1.0, only_methods: vec!["post".into()], ..Faults::default() });
    assert_eq!(raw_get(&http, &sb, "/organization").await.status(), 200);
    let r = http
        .post(format!("{}/rest/servicedeskapi/organization", sb.url()))
        .basic_auth(EMAIL, Some(TOKEN))
        .json(&json!({"name": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);

    // A late answer after the write was committed.
    sb.set_faults(Faults { slow_rate: 1.0, slow_ms: 300, slow_after_handler: true, ..Faults::default() });
    let quick = reqwest::Client::builder().timeout(Duration::from_millis(100)).build().unwrap();
    let r = quick
        .post(format!("{}/rest/servicedeskapi/organization", sb.url()))
        .basic_auth(EMAIL, Some(TOKEN))
        .json(&json!({"name": "Late"}))
        .send()
        .await;
    assert!(r.unwrap_err().is_timeout());
    assert_eq!(sb.state().organizations.len(), 1, "committed before the answer");
    let stats = sb.stats();
    assert_eq!((stats.injected_failures, stats.slowed), (4, 1), "{stats:?}");
}

// ----- the fault matrix ---------------------------------------------------------

/// Half of all writes are applied and then answered by a dropped
/// connection (reads are never dropped); the re-run under the same faults
/// finds nothing to do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_answers_to_committed_writes_end_in_the_exact_state() {
    let tmp = tempfile::tempdir().unwrap();
    let m = matrix(tmp.path(), 12);
    let sb = sandbox(Some(&m.seed), SandboxConfig::default()).await;
    sb.set_faults(Faults { drop_rate: 0.5, ..Faults::default() });
    let pace = Pace { retries: 25, ..Pace::default() };
    let report = tmp.path().join("first.jsonl");
    let first = import_in_process(&client(&sb.url(), pace), &m, &report).await;
    m.assert_site(&sb);
    let rows = m.assert_report(&report, false);
    let stats = sb.stats();
    assert!(stats.dropped > 5, "{stats:?}");
    assert_eq!(first.counters.retries, stats.dropped, "every dropped write was retried once more");
    // Creates whose answer was lost were sent again and found their
    // organization by name: more POSTs than organizations, one of each.
    let creates = stats.by_route["POST /organization"];
    assert!(creates > 12, "no create was dropped: {stats:?}");
    let retried: u64 = rows.iter().filter(|r| r.outcome == "created").map(|r| r.attempts - 1).sum();
    assert_eq!(retried, creates - 12, "the report counts the attempts of each create");

    let writes = stats.writes;
    let again = tmp.path().join("again.jsonl");
    import_in_process(&client(&sb.url(), pace), &m, &again).await;
    assert_eq!(sb.stats().writes, writes, "a re-run after success writes nothing");
    m.assert_report(&again, true);
}

async fn rate_limit_storm(hint: RateLimitHint) {
    // The site allows 80 requests/s (bursts of 16); the client starts at 400.
    let pace = Pace { rate: 400.0, concurrency: 8, retries: 40, timeout: Duration::from_secs(5) };
    let faults = Faults { rate_limit: Some(80.0), rate_limit_hint: hint, ..Faults::default() };
    let (sb, first, again, exported) = matrix_under(faults, pace, 12).await;
    let stats = sb.stats();
    eprintln!("{hint:?}: {stats:?}\nimport {first}\nexport {exported}");
    assert!(stats.rate_limited > 0, "no storm: {stats:?}");
    assert!(first.counters.rate_limited > 0, "{:?}", first.counters);
    // Every 429 the site sent was seen and counted by exactly one run.
    let counted = first.counters.rate_limited + again.counters.rate_limited + exported.rate_limited;
    assert_eq!(counted, stats.rate_limited, "{hint:?}: {stats:?}");
    let requests = first.counters.requests + again.counters.requests + exported.requests;
    assert_eq!(requests, stats.total, "{hint:?}");
    assert!(first.to_string().contains(&format!("{} rate limited (429)", first.counters.rate_limited)), "{first}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_storm_with_retry_after_converges_and_is_counted() {
    rate_limit_storm(RateLimitHint::RetryAfter).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_storm_with_only_a_reset_header_converges_and_is_counted() {
    rate_limit_storm(RateLimitHint::ResetOnly).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_storm_without_any_hint_converges_and_is_counted() {
    rate_limit_storm(RateLimitHint::NoHint).await;
}

/// The number before `label` in `text` (e.g. "7 rate limited" → 7).
fn number_before(text: &str, label: &str) -> u64 {
    let at = text.find(label).unwrap_or_else(|| panic!("{label:?} not in {text}"));
    let digits: String = text[..at].trim_end().chars().rev().take_while(char::is_ascii_digit).collect();
    digits.chars().rev().collect::<String>().parse().unwrap_or_else(|_| panic!("no number before {label:?} in {text}"))
}

/// The real binary (the CLI's own retry policy) against a site that
/// rate-limits far below `--rate`: import and export converge, and the
/// summaries on stderr count every 429 the site sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_summaries_count_every_429_of_a_storm() {
    let tmp = tempfile::tempdir().unwrap();
    let m = matrix(tmp.path(), 12);
    let sb = sandbox(Some(&m.seed), SandboxConfig::default()).await;
    sb.set_faults(Faults { rate_limit: Some(40.0), ..Faults::default() });
    let run = |args: Vec<String>| {
        let mut c = cli(&args);
        c.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
        tokio::task::spawn_blocking(move || c.output().unwrap())
    };
    let report = tmp.path().join("r.jsonl");
    let args = ["import", &s(&m.input), "--site", &sb.url(), "--report", &s(&report), "--rate", "100"];
    let o = run(args.iter().map(|a| a.to_string()).collect()).await.unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(0), "{stderr}");
    m.assert_site(&sb);
    m.assert_report(&report, false);
    let stats = sb.stats();
    eprintln!("{stderr}{stats:?}");
    assert!(stats.rate_limited > 0, "no storm: {stats:?}");
    assert_eq!(number_before(&stderr, "rate limited (429)"), stats.rate_limited, "{stderr}");
    assert_eq!(number_before(&stderr, "requests ("), stats.total, "{stderr}");
    let retries = if stderr.contains(" retries,") { "retries," } else { "retry," };
    assert!(number_before(&stderr, retries) >= stats.rate_limited, "{stderr}");

    sb.reset_stats();
    let out = tmp.path().join("snap");
    let args = ["export", "--out", &s(&out), "--site", &sb.url(), "--rate", "100"];
    let o = run(args.iter().map(|a| a.to_string()).collect()).await.unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(0), "{stderr}");
    assert_snapshot_equals_site(&out, &sb.state());
    let stats = sb.stats();
    eprintln!("{stderr}{stats:?}");
    assert_eq!(number_before(&stderr, "rate limited (429)"), stats.rate_limited, "{stderr}");
    assert_eq!(number_before(&stderr, "requests ("), stats.total, "{stderr}");
}

/// Mid-import, a burst of 40 consecutive 503s and then half of all
/// requests failing for a while; then an export through a burst.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_503_burst_is_ridden_out() {
    let tmp = tempfile::tempdir().unwrap();
    let m = matrix(tmp.path(), 40);
    let sb = Arc::new(
        sandbox(Some(&m.seed), SandboxConfig { latency: Duration::from_millis(5), ..SandboxConfig::default() }).await,
    );
    let storm = tokio::spawn({
        let sb = sb.clone();
        async move {
            let started = Instant::now();
            while sb.stats().writes < 20 {
                assert!(started.elapsed() < Duration::from_secs(20), "no writes: {:?}", sb.stats());
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            let writes = sb.stats().writes;
            sb.set_faults(Faults { fail_burst: 40, fail_rate: 0.5, ..Faults::default() });
            let started = Instant::now();
            while sb.stats().injected_failures < 40 {
                assert!(started.elapsed() < Duration::from_secs(20), "the burst was not consumed: {:?}", sb.stats());
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            sb.set_faults(Faults::default());
            writes
        }
    });
    let pace = Pace { retries: 20, ..Pace::default() };
    let report = tmp.path().join("r.jsonl");
    let summary = import_in_process(&client(&sb.url(), pace), &m, &report).await;
    let writes_before_storm = storm.await.unwrap();
    m.assert_site(&sb);
    let rows = m.assert_report(&report, false);
    let stats = sb.stats();
    assert!(stats.injected_failures >= 40, "{stats:?}");
    assert!(stats.writes > writes_before_storm + 20, "the storm came mid-import: {stats:?}");
    assert_eq!(summary.counters.transient_errors, stats.injected_failures, "{:?}", summary.counters);
    assert!(rows.iter().any(|r| r.attempts > 1));

    // An export through a burst.
    sb.set_faults(Faults { fail_burst: 10, ..Faults::default() });
    let out = tmp.path().join("snap");
    let exported =
        jsm_orgs::snapshot::export(&client(&sb.url(), pace), &export_options(&out, Format::Jsonl, &sb.url()))
            .await
            .unwrap();
    assert_eq!(exported.retries, 10, "{exported:?}");
    assert_snapshot_equals_site(&out, &sb.state());
}

/// Answers slower than the client's timeout, both before the handler ran
/// (the write may or may not happen later) and after it committed the write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_slower_than_the_timeout_are_retried_to_the_exact_state() {
    for after in [false, true] {
        let faults = Faults { slow_rate: 0.2, slow_ms: 600, slow_after_handler: after, ..Faults::default() };
        let pace = Pace { retries: 12, timeout: Duration::from_millis(150), ..Pace::default() };
        let (sb, first, again, exported) = matrix_under(faults, pace, 12).await;
        let stats = sb.stats();
        eprintln!("after={after}: {stats:?}\nimport {first}\nexport {exported}");
        assert!(stats.slowed > 3, "after={after}: {stats:?}");
        // Every late answer timed out and was retried (the export's retries
        // are its transient errors: none of its reads gave up).
        let timed_out = first.counters.transient_errors + again.counters.transient_errors + exported.retries;
        assert!(timed_out >= stats.slowed, "after={after}: {timed_out} retried, {stats:?}");
    }
}

/// Success bodies cut short: on creates (the organization exists, the client
/// cannot read its id) and on every read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_bodies_on_creates_and_reads_are_retried_without_duplicates() {
    let faults = Faults { malformed_rate: 0.5, only_methods: vec!["POST".into()], ..Faults::default() };
    let (sb, first, _, _) = matrix_under(faults, Pace::default(), 12).await;
    let stats = sb.stats();
    // Only POST /organization answers a JSON body among the writes.
    assert!(stats.malformed > 0, "{stats:?}");
    assert_eq!(stats.by_route["POST /organization"], 12 + stats.malformed, "one retry per garbled create");
    assert!(first.counters.retries >= stats.malformed);

    let faults = Faults { malformed_rate: 0.3, ..Faults::default() };
    let (sb, _, again, exported) = matrix_under(faults, Pace::default(), 12).await;
    let stats = sb.stats();
    assert!(stats.malformed > 5, "{stats:?}");
    assert!(again.counters.retries > 0 && exported.retries > 0, "reads were garbled too");
}

/// Organizations created and deleted by another client while an export
/// pages a slow site: no failure, no organization twice, every organization
/// that existed throughout is in the snapshot with its members and links,
/// and nothing that never existed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_under_concurrent_creates_and_deletes_keeps_every_survivor_once() {
    let tmp = tempfile::tempdir().unwrap();
    let seed_dir = tmp.path().join("seed");
    std::fs::create_dir_all(&seed_dir).unwrap();
    let n = 200u64;
    let name = |id: u64| format!("Org {id:03}");
    let orgs: Vec<OrgRecord> =
        (1..=n).map(|id| OrgRecord { id, name: name(id), uuid: None, scim_managed: None, created: None }).collect();
    let members: Vec<MemberRecord> = (1..=n)
        .map(|id| MemberRecord {
            organization: name(id),
            organization_id: id,
            account_id: format!("acct-{id:03}"),
            email: Some(format!("u{id}@example.com")),
            display_name: Some(format!("User {id}")),
        })
        .collect();
    let links: Vec<DeskLinkRecord> = (1..=n).map(|id| crate::common::sandbox_link(name(id), id, "10001")).collect();
    write_jsonl(&seed_dir.join("organizations.jsonl"), &orgs);
    write_jsonl(&seed_dir.join("members.jsonl"), &members);
    write_jsonl(&seed_dir.join("properties.jsonl"), &Vec::<PropertyRecord>::new());
    write_jsonl(&seed_dir.join("service_desks.jsonl"), &links);
    let sb = sandbox(
        Some(&seed_dir),
        SandboxConfig { page_cap: 7, latency: Duration::from_millis(3), ..SandboxConfig::default() },
    )
    .await;
    let before = sb.state();
    let reader = client(&sb.url(), Pace { concurrency: 4, ..Pace::default() });
    let writer = client(&sb.url(), Pace::default());
    let out = tmp.path().join("snap");
    let done = AtomicBool::new(false);
    let mut deleted = BTreeSet::new();
    let mut created = BTreeMap::new();

    let run = async {
        let r = jsm_orgs::snapshot::export(&reader, &export_options(&out, Format::Jsonl, &sb.url())).await;
        done.store(true, Ordering::SeqCst);
        r
    };
    let mutate = async {
        // Every few organization pages: delete organizations around and
        // ahead of the reader, create new ones (they sort last), and link one.
        let pages = || sb.stats().by_route.get("GET /organization").copied().unwrap_or(0);
        let mut k = 0u64;
        while !done.load(Ordering::SeqCst) && k < 25 {
            k += 1;
            while pages() < 1 + k && !done.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            for id in [k * 6, k * 6 + 1, n - k * 3] {
                if deleted.insert(id) {
                    writer.delete_organization(id).await.unwrap();
                }
            }
            let new = writer.create_organization(&format!("New {k:02}")).await.unwrap().value;
            writer.link_organization("10001", new.id).await.unwrap();
            created.insert(new.id, new.name);
        }
    };
    let (result, ()) = tokio::join!(run, mutate);
    let summary = result.unwrap_or_else(|e| panic!("the export failed: {e}"));
    eprintln!("{summary}deleted {deleted:?}\ncreated {created:?}\n{:?}", sb.stats());
    assert!(deleted.len() >= 6 && !created.is_empty(), "the site did not change during the export");

    let (snap_orgs, snap_members, _, snap_links) = read_snapshot(&out);
    let ids: Vec<u64> = snap_orgs.iter().map(|o| o.id).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "sorted by id, none twice: {ids:?}");
    let names: BTreeSet<&str> = snap_orgs.iter().map(|o| o.name.as_str()).collect();
    assert_eq!(names.len(), snap_orgs.len(), "no name twice");
    for o in &before.organizations {
        if !deleted.contains(&o.id) {
            assert!(ids.contains(&o.id), "organization {} existed throughout but is missing", o.id);
        }
    }
    for o in &snap_orgs {
        let known = before.organizations.iter().any(|b| b == o) || created.get(&o.id) == Some(&o.name);
        assert!(known, "{o:?} never existed");
    }
    for id in &summary.vanished_organizations {
        assert!(deleted.contains(id) && !ids.contains(id), "{id}");
    }
    // Survivors come with their member and their link. (An organization
    // deleted mid-export may be in the snapshot with part of its data: it
    // was read before it went.)
    for id in ids.iter().filter(|id| **id <= n && !deleted.contains(id)) {
        assert!(snap_members.iter().any(|m| m.organization_id == *id && m.account_id == format!("acct-{id:03}")));
        assert!(snap_links.iter().any(|l| l.organization_id == *id), "link of {id}");
    }
    assert!(snap_members.iter().all(|m| ids.contains(&m.organization_id)));
    assert!(snap_links.iter().all(|l| ids.contains(&l.organization_id)));
}

/// The real binary: an export whose reads keep failing beyond
/// `--max-retries` exits 3, leaving neither a snapshot nor a staging
/// directory; from the first request, and after part of the site was read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_whose_reads_keep_failing_exits_3_and_leaves_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let m = matrix(tmp.path(), 40);
    let sb =
        sandbox(Some(&m.seed), SandboxConfig { latency: Duration::from_millis(5), ..SandboxConfig::default() }).await;
    let report = tmp.path().join("r.jsonl");
    import_in_process(&client(&sb.url(), Pace::default()), &m, &report).await;
    let parent = tmp.path().join("backups");
    std::fs::create_dir(&parent).unwrap();
    let out = parent.join("nightly");
    let spawn = || {
        let (out, site) = (s(&out), sb.url());
        cli(&["export", "--out", &out, "--site", &site, "--max-retries", "1", "--rate", "2000", "--concurrency", "2"])
            .arg("--quiet")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn jsm-orgs")
    };
    let finish = |child: std::process::Child| tokio::task::spawn_blocking(move || child.wait_with_output().unwrap());

    // Every read fails.
    sb.set_faults(Faults { fail_rate: 1.0, ..Faults::default() });
    sb.reset_stats();
    let started = Instant::now();
    let output = finish(spawn()).await.unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("error:") && stderr.contains("503"), "{stderr}");
    assert!(entries(&parent).is_empty(), "{:?}", entries(&parent));
    assert!(started.elapsed() < Duration::from_secs(10));
    let stats = sb.stats();
    assert!(stats.injected_failures >= 2 && stats.total <= 20, "one retry per read: {stats:?}");

    // Reads fail after part of the site was read.
    sb.set_faults(Faults::default());
    sb.reset_stats();
    let child = spawn();
    let member_reads = || sb.stats().by_route.get("GET /organization/{id}/user").copied().unwrap_or(0);
    let started = Instant::now();
    while member_reads() < 10 {
        assert!(started.elapsed() < Duration::from_secs(10), "no progress: {:?}", sb.stats());
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    sb.set_faults(Faults { fail_rate: 1.0, ..Faults::default() });
    let output = finish(child).await.unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    assert!(entries(&parent).is_empty(), "{:?}", entries(&parent));
    assert!(member_reads() < 40, "stopped before the end");
}

/// The real binary: Ctrl-C (SIGINT) in the middle of an export stops it
/// with a non-zero exit, and no snapshot or staging directory is left.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_export_exits_non_zero_and_leaves_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let m = matrix(tmp.path(), 40);
    let sb = sandbox(Some(&m.seed), SandboxConfig::default()).await;
    import_in_process(&client(&sb.url(), Pace::default()), &m, &tmp.path().join("r.jsonl")).await;
    sb.set_faults(Faults { latency: Duration::from_millis(20), ..Faults::default() });
    sb.reset_stats();
    let parent = tmp.path().join("backups");
    std::fs::create_dir(&parent).unwrap();
    let mut child =
        cli(&["export", "--out", &s(&parent.join("nightly")), "--site", &sb.url(), "--rate", "2000", "--quiet"])
            .spawn()
            .unwrap();
    let started = Instant::now();
    while sb.stats().reads < 20 {
        assert!(child.try_wait().unwrap().is_none(), "the export ended too early");
        assert!(started.elapsed() < Duration::from_secs(10), "{:?}", sb.stats());
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let sent = std::process::Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(sent.success());
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap()).await.unwrap();
    assert_eq!(status.code(), Some(3));
    assert!(entries(&parent).is_empty(), "{:?}", entries(&parent));
}

// ----- crash safety: SIGKILL of the real binary ---------------------------------

/// The real binary importing the matrix into `site`, with a JSONL report.
fn spawn_import(input: &Path, site: &str, report: &Path, extra: &[&str]) -> std::process::Child {
    cli(&["import", &s(input), "--site", site, "--report", &s(report), "--rate", "2000", "--quiet"])
        .args(extra)
        .spawn()
        .expect("spawn jsm-orgs")
}

/// Whether a settled row of a killed run is true of the site.
pub(crate) fn row_holds(row: &Rep, have: &Content) -> bool {
    let org = row.organization.clone();
    let t = row.target.clone();
    match (row.kind.as_str(), row.outcome.as_str()) {
        ("organizations", "created" | "unchanged") => have.orgs.contains(&org),
        ("organizations", "deleted") => !have.orgs.contains(&org),
        ("members", "added") => have.members.contains(&(org, t)),
        ("members", "removed") => !have.members.contains(&(org, t)),
        ("members", "unchanged") => true,
        ("properties", "set") => have.properties.contains_key(&(org, t)),
        ("properties", "deleted") => !have.properties.contains_key(&(org, t)),
        ("service_desks", "linked") => have.links.contains(&(org, t)),
        ("service_desks", "unlinked") => !have.links.contains(&(org, t)),
        _ => false,
    }
}

/// Kill the binary (SIGKILL) once the site has seen `kill_at` writes, check
/// what it left, re-run it, and check that the re-run did exactly what was
/// left and ended in the exact state.
async fn killed_at(kill_at: impl FnOnce(u64) -> u64) {
    let tmp = tempfile::tempdir().unwrap();
    let m = matrix(tmp.path(), 40);
    // How many writes a whole run makes (on a quiet scratch site).
    let full = {
        let scratch = sandbox(Some(&m.seed), SandboxConfig::default()).await;
        let seeded = content_of(&scratch.state());
        import_in_process(&client(&scratch.url(), Pace::default()), &m, &tmp.path().join("scratch.jsonl")).await;
        let writes = scratch.stats().writes;
        assert_eq!(writes, m.remaining_writes(&seeded), "the model of what a run writes");
        writes
    };
    let target = kill_at(full);
    assert!((1..full).contains(&target), "{target} of {full}");

    let sb =
        sandbox(Some(&m.seed), SandboxConfig { latency: Duration::from_millis(20), ..SandboxConfig::default() }).await;
    let report = tmp.path().join("report.jsonl");
    let mut child = spawn_import(&m.input, &sb.url(), &report, &["--concurrency", "4"]);
    let started = Instant::now();
    while sb.stats().writes < target {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the import ended ({status}) before write {target} of {full}");
        }
        assert!(started.elapsed() < Duration::from_secs(20), "no progress: {:?}", sb.stats());
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    // Requests the sandbox already received finish.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after_kill = sb.state();
    assert_no_duplicate_orgs(&after_kill);
    let have = content_of(&after_kill);
    let left = m.remaining_writes(&have);
    assert!(left > 0, "killed too late: nothing left to do");

    // FILE.partial: whole rows of the input, none twice, each true of the site.
    assert!(!report.exists(), "a killed run leaves no final report");
    let partial = std::fs::read_to_string(partial_of(&report)).expect("FILE.partial of the killed run");
    assert!(partial.is_empty() || partial.ends_with('\n'), "FILE.partial ends inside a row");
    let mut seen = BTreeSet::new();
    for row in partial.lines().map(rep_from_json) {
        assert!(m.sources.contains(&row.source), "{row:?}");
        assert!(seen.insert(row.source.clone()), "reported twice: {row:?}");
        assert!(row_holds(&row, &have), "the partial report says {row:?}, the site disagrees");
    }

    // The re-run does exactly what is left.
    sb.reset_stats();
    let status = tokio::task::spawn_blocking({
        let (input, url, report) = (m.input.clone(), sb.url(), report.clone());
        move || spawn_import(&input, &url, &report, &["--concurrency", "4"]).wait().unwrap()
    })
    .await
    .unwrap();
    assert_eq!(status.code(), Some(0));
    let stats = sb.stats();
    assert_eq!(stats.writes, left, "the re-run does only what is left: {:?}", stats.by_route);
    let creates = m.want.orgs.difference(&have.orgs).count() as u64;
    assert_eq!(stats.by_route.get("POST /organization").copied().unwrap_or(0), creates);
    m.assert_site(&sb);
    let rows = read_jsonl_report(&report);
    assert!(!partial_of(&report).exists());
    assert_eq!(rows.iter().map(|r| r.source.as_str()).collect::<Vec<_>>(), m.sources);
    for (row, want) in rows.iter().zip(&m.outcomes) {
        assert!(row.outcome == *want || row.outcome == "unchanged", "{row:?}, wanted {want}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_killed_after_its_first_write_resumes_exactly() {
    killed_at(|_| 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_killed_mid_members_phase_resumes_exactly() {
    // 40 creates and a delete come first; then members, properties, links.
    killed_at(|full| 41 + (full - 41) / 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_killed_near_its_end_resumes_exactly() {
    killed_at(|full| full - 10).await;
}
