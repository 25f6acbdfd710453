//! `import` end to end: through `jsm_orgs::run` (and the real binary for the
//! crash test) against the in-process sandbox for state, and against
//! wiremock for exact requests. Every test talks to 127.0.0.1 only.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jsm_orgs::model::{unescape_formula, DeskLinkRecord, MemberRecord, OrgRecord, PropertyRecord};
use jsm_orgs::sandbox::{Sandbox, SandboxConfig, SiteState};
use jsm_orgs::Env;
use serde_json::{json, Value};
use wiremock::matchers::{any, body_json, method, path, query_param};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

use crate::common::{assert_no_duplicate_orgs, cli, content_of, env, import, page, run_with, s, Content, EMAIL, TOKEN};

const API: &str = "/rest/servicedeskapi";
const DESKS: [&str; 2] = ["10001", "10002"];

// ----- helpers ---------------------------------------------------------------

async fn sandbox(seed: Option<&Path>, latency_ms: u64) -> Sandbox {
    Sandbox::start(SandboxConfig {
        seed: seed.map(Path::to_path_buf),
        service_desks: DESKS.iter().map(|d| d.to_string()).collect(),
        latency: Duration::from_millis(latency_ms),
        ..SandboxConfig::default()
    })
    .await
    .expect("sandbox starts")
}

async fn export(site: &str, out: &Path, extra: &[&str]) -> u8 {
    let mut args: Vec<String> = vec!["export".into(), "--out".into(), s(out), "--site".into(), site.into()];
    args.extend(["--rate", "2000", "--quiet"].iter().map(|a| a.to_string()));
    args.extend(extra.iter().map(|a| a.to_string()));
    run_with(&args, &env()).await
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn jsonl<T: serde::Serialize>(records: &[T]) -> String {
    records.iter().map(|r| serde_json::to_string(r).unwrap() + "\n").collect()
}

/// One report row, as read back from a CSV or JSONL report.
#[derive(Debug, Clone, PartialEq)]
struct Rep {
    source: String,
    kind: String,
    action: String,
    organization: String,
    organization_id: String,
    target: String,
    outcome: String,
    http_status: Option<u16>,
    attempts: u32,
    message: String,
}

fn rep_from_json(v: &Value) -> Rep {
    let t = |k: &str| v[k].as_str().unwrap_or_else(|| panic!("report field {k} missing in {v}")).to_string();
    Rep {
        source: t("source"),
        kind: t("kind"),
        action: t("action"),
        organization: t("organization"),
        organization_id: t("organization_id"),
        target: t("target"),
        outcome: t("outcome"),
        http_status: v["http_status"].as_u64().map(|n| n as u16),
        attempts: v["attempts"].as_u64().expect("attempts") as u32,
        message: t("message"),
    }
}

/// Read a report (CSV: formula-escaped cells restored; JSONL).
fn read_report(path: &Path) -> Vec<Rep> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    if path.to_string_lossy().contains(".jsonl") {
        return text
            .lines()
            .map(|l| rep_from_json(&serde_json::from_str(l).unwrap_or_else(|e| panic!("bad line {l:?}: {e}"))))
            .collect();
    }
    let mut r = csv::Reader::from_reader(text.as_bytes());
    let header: Vec<String> = r.headers().unwrap().iter().map(str::to_string).collect();
    assert_eq!(
        header,
        [
            "source",
            "kind",
            "action",
            "organization",
            "organization_id",
            "target",
            "outcome",
            "http_status",
            "attempts",
            "message"
        ]
    );
    r.records()
        .map(|rec| {
            let rec = rec.unwrap();
            let c = |i: usize| unescape_formula(&rec[i]).to_string();
            Rep {
                source: c(0),
                kind: c(1),
                action: c(2),
                organization: c(3),
                organization_id: c(4),
                target: c(5),
                outcome: c(6),
                http_status: if rec[7].is_empty() { None } else { Some(rec[7].parse().unwrap()) },
                attempts: rec[8].parse().unwrap(),
                message: c(9),
            }
        })
        .collect()
}

fn outcomes(rows: &[Rep]) -> Vec<&str> {
    rows.iter().map(|r| r.outcome.as_str()).collect()
}

fn partial_of(report: &Path) -> PathBuf {
    let mut s = report.as_os_str().to_owned();
    s.push(".partial");
    PathBuf::from(s)
}

/// An input row as the test reads it, independently of the crate's readers.
#[derive(Debug, Clone, PartialEq)]
struct In {
    source: String,
    kind: &'static str,
    org: String,
    target: String,
    value: Option<Value>,
}

fn read_csv_input(path: &Path, kind: &'static str) -> Vec<In> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut r = csv::Reader::from_reader(text.as_bytes());
    let header: Vec<String> = r.headers().unwrap().iter().map(str::to_string).collect();
    let col = |name: &str| header.iter().position(|h| h == name);
    // The physical line where a record starts, from its byte offset.
    // (After a CRLF the csv crate places the next record at the LF.)
    let line_at = |byte: u64| {
        let mut byte = byte as usize;
        if text.as_bytes().get(byte) == Some(&b'\n') {
            byte += 1;
        }
        1 + text.as_bytes()[..byte].iter().filter(|b| **b == b'\n').count()
    };
    let (org_col, target_col) = match kind {
        "organizations" => (col("name").unwrap(), None),
        "members" => (col("organization").unwrap(), col("account_id")),
        "service_desks" => (col("organization").unwrap(), col("service_desk_id")),
        other => panic!("{other}"),
    };
    r.records()
        .map(|rec| {
            let rec = rec.unwrap();
            In {
                source: format!("{}:{}", path.display(), line_at(rec.position().unwrap().byte())),
                kind,
                org: rec[org_col].to_string(),
                target: target_col.map(|c| rec[c].to_string()).unwrap_or_default(),
                value: None,
            }
        })
        .collect()
}

fn read_jsonl_properties(path: &Path) -> Vec<In> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .enumerate()
        .map(|(i, l)| {
            let v: Value = serde_json::from_str(l).unwrap();
            In {
                source: format!("{}:{}", path.display(), i + 1),
                kind: "properties",
                org: v["organization"].as_str().unwrap().to_string(),
                target: v["key"].as_str().unwrap().to_string(),
                value: Some(v["value"].clone()),
            }
        })
        .collect()
}

/// The bundled samples, in the order `import DIR` reads them.
fn sample_rows(dir: &Path) -> Vec<In> {
    let mut rows = read_csv_input(&dir.join("organizations.csv"), "organizations");
    rows.extend(read_csv_input(&dir.join("members.csv"), "members"));
    rows.extend(read_jsonl_properties(&dir.join("properties.jsonl")));
    rows.extend(read_csv_input(&dir.join("service_desks.csv"), "service_desks"));
    rows
}

fn org_id_of(state: &SiteState, name: &str) -> u64 {
    state.organizations.iter().find(|o| o.name == name).unwrap_or_else(|| panic!("no org {name:?}")).id
}

fn routes(sb: &Sandbox) -> BTreeMap<String, u64> {
    sb.stats().by_route
}

fn route_map(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
    pairs.iter().filter(|(_, n)| *n > 0).map(|(k, n)| (k.to_string(), *n)).collect()
}

/// A seed directory for the sandbox.
struct Seed {
    orgs: Vec<(u64, &'static str)>,
    members: Vec<(u64, &'static str)>,
    properties: Vec<(u64, &'static str, Value)>,
    links: Vec<(u64, &'static str)>,
}

impl Seed {
    fn write(&self, dir: &Path) {
        let name = |id: u64| self.orgs.iter().find(|o| o.0 == id).unwrap().1.to_string();
        let orgs: Vec<OrgRecord> = self
            .orgs
            .iter()
            .map(|&(id, n)| OrgRecord { id, name: n.into(), uuid: None, scim_managed: None, created: None })
            .collect();
        let members: Vec<MemberRecord> = self
            .members
            .iter()
            .map(|&(id, a)| MemberRecord {
                organization: name(id),
                organization_id: id,
                account_id: a.into(),
                email: Some(format!("{}@seed.example", a.replace(':', "-"))),
                display_name: Some(format!("Seeded {a}")),
            })
            .collect();
        let props: Vec<PropertyRecord> = self
            .properties
            .iter()
            .map(|(id, k, v)| PropertyRecord {
                organization: name(*id),
                organization_id: *id,
                key: k.to_string(),
                value: v.clone(),
            })
            .collect();
        let links: Vec<DeskLinkRecord> =
            self.links.iter().map(|&(id, d)| crate::common::sandbox_link(name(id), id, d)).collect();
        write(dir, "organizations.jsonl", &jsonl(&orgs));
        write(dir, "members.jsonl", &jsonl(&members));
        write(dir, "properties.jsonl", &jsonl(&props));
        write(dir, "service_desks.jsonl", &jsonl(&links));
    }
}

// ----- 1. the bundled samples end to end ------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn samples_import_exactly_and_a_rerun_makes_no_writes() {
    let sb = sandbox(None, 0).await;
    let tmp = tempfile::tempdir().unwrap();
    let samples = tmp.path().join("samples");
    jsm_orgs::demo::write_samples(&samples).unwrap();
    let input = sample_rows(&samples);
    assert_eq!(input.len(), 10 + 60 + 15 + 14);

    let report = tmp.path().join("report.csv");
    assert_eq!(import(&sb.url(), &samples, &report, &[]).await, 0);

    // The site holds exactly the input.
    let state = sb.state();
    assert_no_duplicate_orgs(&state);
    let got = content_of(&state);
    let want = Content {
        orgs: input.iter().map(|r| r.org.clone()).collect(),
        members: input.iter().filter(|r| r.kind == "members").map(|r| (r.org.clone(), r.target.clone())).collect(),
        properties: input
            .iter()
            .filter(|r| r.kind == "properties")
            .map(|r| ((r.org.clone(), r.target.clone()), r.value.clone().unwrap()))
            .collect(),
        links: input.iter().filter(|r| r.kind == "service_desks").map(|r| (r.org.clone(), r.target.clone())).collect(),
    };
    assert_eq!(got.orgs.len(), 10);
    assert_eq!(state.organizations.len(), 10);
    assert_eq!(got, want);

    // One report row per input row, in input order, with the right outcome.
    assert!(!partial_of(&report).exists(), "the ordered report replaces FILE.partial");
    let rows = read_report(&report);
    assert_eq!(rows.len(), input.len());
    for (row, inp) in rows.iter().zip(&input) {
        let (outcome, action, status) = match inp.kind {
            "organizations" => ("created", "upsert", 201),
            "members" => ("added", "add", 204),
            "properties" => ("set", "set", 201),
            "service_desks" => ("linked", "link", 204),
            _ => unreachable!(),
        };
        assert_eq!(row.source, inp.source);
        assert_eq!((row.kind.as_str(), row.action.as_str()), (inp.kind, action), "{row:?}");
        assert_eq!(row.organization, inp.org, "{row:?}");
        assert_eq!(row.organization_id, org_id_of(&state, &inp.org).to_string(), "{row:?}");
        assert_eq!(row.target, inp.target, "{row:?}");
        assert_eq!(row.outcome, outcome, "{row:?}");
        assert_eq!(row.http_status, Some(status), "{row:?}");
        assert_eq!(row.attempts, 1, "{row:?}");
    }

    // A re-run: no writes, every row unchanged, only the reads the plan needs.
    sb.reset_stats();
    let report2 = tmp.path().join("rerun.csv");
    assert_eq!(import(&sb.url(), &samples, &report2, &[]).await, 0);
    let stats = sb.stats();
    assert_eq!(stats.writes, 0, "{:?}", stats.by_route);
    let rows2 = read_report(&report2);
    assert_eq!(rows2.len(), input.len());
    for (row, inp) in rows2.iter().zip(&input) {
        assert_eq!((row.source.as_str(), row.outcome.as_str()), (inp.source.as_str(), "unchanged"), "{row:?}");
        assert_eq!(row.organization_id, org_id_of(&state, &inp.org).to_string());
        assert_eq!(row.http_status, None);
    }
    let orgs_with = |kind: &str| input.iter().filter(|r| r.kind == kind).map(|r| &r.org).collect::<BTreeSet<_>>().len();
    let desks: BTreeSet<_> = input.iter().filter(|r| r.kind == "service_desks").map(|r| &r.target).collect();
    assert_eq!(
        stats.by_route,
        route_map(&[
            ("GET /organization", 1),
            ("GET /organization/{id}/user", orgs_with("members") as u64),
            ("GET /organization/{id}/property", orgs_with("properties") as u64),
            ("GET /organization/{id}/property/{key}", 15),
            ("GET /servicedesk", 1),
            ("GET /servicedesk/{id}/organization", desks.len() as u64),
        ])
    );
    assert_eq!(stats.total, stats.reads);
    assert_eq!(sb.state(), state, "a re-run changes nothing");
}

// ----- 2. crash safety with the real binary ---------------------------------

const ORGS: usize = 200;
const MEMBERS: usize = 5;

/// ORGS organizations of MEMBERS members each; returns the row sources in
/// input order and the wanted memberships.
fn crash_input(input: &Path) -> (Vec<String>, BTreeSet<(String, String)>) {
    let mut orgs = String::from("name\n");
    let mut members = String::from("organization,account_id\n");
    for i in 0..ORGS {
        orgs.push_str(&format!("Crash Org {i:03}\n"));
        for j in 0..MEMBERS {
            members.push_str(&format!("Crash Org {i:03},acct-{i:03}-{j}\n"));
        }
    }
    write(input, "organizations.csv", &orgs);
    write(input, "members.csv", &members);
    let mut sources: Vec<String> =
        (0..ORGS).map(|i| format!("{}:{}", input.join("organizations.csv").display(), i + 2)).collect();
    sources.extend((0..ORGS * MEMBERS).map(|i| format!("{}:{}", input.join("members.csv").display(), i + 2)));
    let want_members = (0..ORGS)
        .flat_map(|i| (0..MEMBERS).map(move |j| (format!("Crash Org {i:03}"), format!("acct-{i:03}-{j}"))))
        .collect();
    (sources, want_members)
}

/// The real binary importing `input` into `site`.
fn spawn_import(input: &Path, site: &str, report: &Path) -> std::process::Child {
    cli(&["import", &s(input), "--site", site, "--report", &s(report), "--rate", "2000", "--concurrency", "8"])
        .arg("--quiet")
        .spawn()
        .expect("spawn jsm-orgs")
}

/// Wait until the sandbox has seen `writes` writes while `child` runs.
async fn wait_for_writes(sb: &Sandbox, child: &mut std::process::Child, writes: u64) {
    let started = Instant::now();
    while sb.stats().writes < writes {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the import finished ({status}) before it could be stopped");
        }
        assert!(started.elapsed() < Duration::from_secs(20), "no progress: {:?}", sb.stats());
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_import_resumes_to_the_exact_state_without_duplicates() {
    let sb = sandbox(None, 20).await;
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("input");
    let (sources, want_members) = crash_input(&input);
    let report = tmp.path().join("report.jsonl");
    let spawn = || spawn_import(&input, &sb.url(), &report);

    // Kill it once the organizations exist and member adds have begun.
    let mut child = spawn();
    wait_for_writes(&sb, &mut child, (ORGS + 30) as u64).await;
    child.kill().unwrap();
    child.wait().unwrap();
    // Let requests already received finish on the sandbox.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after_kill = sb.state();
    assert_no_duplicate_orgs(&after_kill);
    let content = content_of(&after_kill);
    assert!(content.members.len() < want_members.len(), "killed too late to test anything");

    // FILE.partial holds complete rows only, each true of the site.
    assert!(!report.exists(), "a killed run writes no final report");
    let partial = std::fs::read_to_string(partial_of(&report)).expect("FILE.partial of the killed run");
    assert!(
        partial.is_empty() || partial.ends_with('\n'),
        "partial ends mid-row: {:?}",
        &partial[partial.len().saturating_sub(200)..]
    );
    let mut seen = BTreeSet::new();
    let partial_rows: Vec<Rep> = partial
        .lines()
        .map(|l| rep_from_json(&serde_json::from_str(l).unwrap_or_else(|e| panic!("incomplete row {l:?}: {e}"))))
        .collect();
    assert!(partial_rows.len() >= ORGS, "{} rows", partial_rows.len());
    for row in &partial_rows {
        assert!(sources.contains(&row.source), "{row:?}");
        assert!(seen.insert(row.source.clone()), "row reported twice: {row:?}");
        match row.outcome.as_str() {
            "created" => assert!(content.orgs.contains(&row.organization), "{row:?}"),
            "added" => assert!(content.members.contains(&(row.organization.clone(), row.target.clone())), "{row:?}"),
            other => panic!("unexpected outcome {other} in {row:?}"),
        }
    }

    // The re-run does only what is left.
    let missing_orgs = ORGS - after_kill.organizations.len();
    let incomplete = (0..ORGS)
        .filter(|i| {
            (0..MEMBERS).any(|j| !content.members.contains(&(format!("Crash Org {i:03}"), format!("acct-{i:03}-{j}"))))
        })
        .count();
    sb.reset_stats();
    let status = spawn().wait().unwrap();
    assert_eq!(status.code(), Some(0));
    let stats = sb.stats();
    assert_eq!(stats.by_route.get("POST /organization").copied().unwrap_or(0), missing_orgs as u64);
    assert_eq!(stats.by_route.get("POST /organization/{id}/user").copied().unwrap_or(0), incomplete as u64);
    assert_eq!(stats.writes, (missing_orgs + incomplete) as u64, "{:?}", stats.by_route);

    let state = sb.state();
    assert_no_duplicate_orgs(&state);
    let content = content_of(&state);
    assert_eq!(content.orgs, (0..ORGS).map(|i| format!("Crash Org {i:03}")).collect());
    assert_eq!(state.organizations.len(), ORGS);
    assert_eq!(content.members, want_members);

    let rows = read_report(&report);
    assert!(!partial_of(&report).exists());
    assert_eq!(rows.iter().map(|r| r.source.clone()).collect::<Vec<_>>(), sources);
    assert_eq!(rows.iter().filter(|r| r.outcome == "created").count(), missing_orgs);
    for row in &rows {
        assert!(["created", "added", "unchanged"].contains(&row.outcome.as_str()), "{row:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_stops_sending_writes_a_truthful_report_and_exits_3() {
    let sb = sandbox(None, 20).await;
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("input");
    let (sources, want_members) = crash_input(&input);
    let report = tmp.path().join("report.csv");
    let mut child = spawn_import(&input, &sb.url(), &report);
    wait_for_writes(&sb, &mut child, 100).await;
    let sent = std::process::Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(sent.success());
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(10) {
            child.kill().unwrap();
            panic!("still running 10 s after Ctrl-C");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(status.code(), Some(3));
    let writes_at_exit = sb.stats().writes;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(sb.stats().writes, writes_at_exit, "nothing is sent after exit");

    // The final report: every input row, in order, and true of the site.
    assert!(!partial_of(&report).exists());
    let rows = read_report(&report);
    assert_eq!(rows.iter().map(|r| r.source.clone()).collect::<Vec<_>>(), sources);
    let state = sb.state();
    assert_no_duplicate_orgs(&state);
    let c = content_of(&state);
    let created: BTreeSet<String> =
        rows.iter().filter(|r| r.outcome == "created").map(|r| r.organization.clone()).collect();
    let added: BTreeSet<(String, String)> =
        rows.iter().filter(|r| r.outcome == "added").map(|r| (r.organization.clone(), r.target.clone())).collect();
    assert_eq!(created, c.orgs, "created rows are exactly the organizations on the site");
    assert_eq!(added, c.members, "added rows are exactly the memberships on the site");
    assert!(c.members.len() < want_members.len(), "stopped too late to test anything");
    for row in rows.iter().filter(|r| r.outcome != "created" && r.outcome != "added") {
        // Stopped before sending, or stopped between retries of a sent call.
        assert!(row.outcome == "not_sent" || (row.outcome == "failed" && row.attempts > 0), "{row:?}");
        assert!(row.message.contains("interrupted"), "{row:?}");
    }

    // A re-run finishes the job.
    let again = tmp.path().join("again.csv");
    let status = spawn_import(&input, &sb.url(), &again).wait().unwrap();
    assert_eq!(status.code(), Some(0));
    let c = content_of(&sb.state());
    assert_eq!(c.orgs.len(), ORGS);
    assert_eq!(c.members, want_members);
}

/// Pages of the members of org 7: `ids`, honouring `start` and `limit`.
struct MemberPages(Vec<String>);

impl Respond for MemberPages {
    fn respond(&self, r: &Request) -> ResponseTemplate {
        let q: HashMap<String, String> = r.url.query_pairs().into_owned().collect();
        let start: usize = q["start"].parse().unwrap();
        let limit: usize = q["limit"].parse().unwrap();
        let values: Vec<Value> = self
            .0
            .iter()
            .skip(start)
            .take(limit)
            .map(|id| json!({"accountId": id, "displayName": id, "active": true}))
            .collect();
        ResponseTemplate::new(200).set_body_json(json!({
            "start": start, "limit": limit, "size": values.len(),
            "isLastPage": start + limit >= self.0.len(), "values": values,
        }))
    }
}

/// Kill the real binary while its only write hangs: by then ~1000 rows were
/// settled as `unchanged`, and `FILE.partial` must hold them as whole rows.
async fn killed_while_a_write_hangs(report_name: &str) {
    const N: usize = 1000;
    let server = MockServer::start().await;
    let ids: Vec<String> = (0..N).map(|i| format!("acct-{i:04}")).collect();
    Mock::given(method("GET"))
        .and(path(format!("{API}/organization")))
        .respond_with(page(json!([{"id": "7", "name": "Big \"quoted\", org"}])))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(format!("{API}/organization/7/user")))
        .respond_with(MemberPages(ids[..N - 1].to_vec()))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(format!("{API}/organization/7/user")))
        .and(body_json(json!({"accountIds": [ids[N - 1]]})))
        .respond_with(ResponseTemplate::new(204).set_delay(Duration::from_secs(30)))
        .expect(1)
        .mount(&server)
        .await;
    let tmp = tempfile::tempdir().unwrap();
    let mut text = String::from("organization,account_id\n");
    for id in &ids {
        text.push_str(&format!("\"Big \"\"quoted\"\", org\",{id}\n"));
    }
    let file = write(tmp.path(), "members.csv", &text);
    let report = tmp.path().join(report_name);
    let mut child = cli(&["import", &s(&file), "--site", &server.uri(), "--report", &s(&report), "--rate", "2000"])
        .arg("--quiet")
        .spawn()
        .expect("spawn jsm-orgs");
    let started = Instant::now();
    while !server.received_requests().await.unwrap().iter().any(|r| r.method.as_str() == "POST") {
        assert!(child.try_wait().unwrap().is_none(), "the import ended early");
        assert!(started.elapsed() < Duration::from_secs(20), "the write never came");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    child.kill().unwrap();
    child.wait().unwrap();

    let partial = std::fs::read_to_string(partial_of(&report)).expect("FILE.partial");
    assert!(
        partial.ends_with('\n'),
        "FILE.partial ends inside a row: ...{:?}",
        &partial[partial.len().saturating_sub(80)..]
    );
    let mut rows: Vec<Rep> = if report_name.ends_with(".jsonl") {
        partial
            .lines()
            .map(|l| rep_from_json(&serde_json::from_str(l).unwrap_or_else(|e| panic!("incomplete row {l:?}: {e}"))))
            .collect()
    } else {
        read_report(&partial_of(&report))
    };
    // Every row the run had finished is there, whole (FILE.partial is unordered).
    assert_eq!(rows.len(), N - 1, "rows settled before the hanging write");
    rows.sort_by(|a, b| a.target.cmp(&b.target));
    for (row, id) in rows.iter().zip(&ids) {
        assert_eq!((row.target.as_str(), row.outcome.as_str()), (id.as_str(), "unchanged"), "{row:?}");
        assert_eq!(row.organization, "Big \"quoted\", org");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_run_leaves_whole_jsonl_rows_in_the_partial_report() {
    killed_while_a_write_hangs("report.jsonl").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_run_leaves_whole_csv_rows_in_the_partial_report() {
    killed_while_a_write_hangs("report.csv").await;
}

// ----- 3. restore a snapshot into an empty site -----------------------------

fn awkward_seed() -> Seed {
    Seed {
        orgs: vec![
            (3, "=SUM(1)"),
            (5, "-x"),
            (8, "@y"),
            (9, "+1"),
            (11, "'quoted"),
            (12, "Acme, \"Inc\"\nSecond line"),
            (14, "\tTabbed"),
            (15, "Ünïcödé 日本 Straße"),
            (16, "  padded  "),
            (20, "Empty Org"),
        ],
        members: vec![
            (3, "-dash-1"),
            (3, "qm:abc"),
            (5, "plain_2"),
            (12, "712020:c6867cf9-b1b9"),
            (15, "u-15"),
            (16, "_under_16"),
        ],
        properties: vec![
            (3, "-k", json!(-5)),
            (3, "=k", json!("=1+1")),
            (5, "crm.account", json!({"a": [1, {"b": null}], "s": "'x", "n": "line\nbreak"})),
            (8, "ключ", json!(true)),
            (8, "a b", json!([])),
            (9, "empty", json!({})),
            (11, "float", json!(1.5)),
            (12, "@at", json!("@at")),
            (14, "+plus", json!("+1")),
            (15, "path/like?q=1#frag%20", json!({"k": "v"})),
        ],
        links: vec![(3, "10001"), (3, "10002"), (8, "10002"), (12, "10001"), (15, "10001")],
    }
}

/// A snapshot's content with ids aside (JSONL or CSV).
fn snapshot_content(dir: &Path) -> Content {
    let manifest: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json")).unwrap()).unwrap();
    let csv = dir.join("organizations.csv").exists();
    let records = |name: &str| -> Vec<serde_json::Map<String, Value>> {
        if csv {
            assert!(manifest.to_string().contains("apostrophe"), "CSV manifest declares the escape: {manifest}");
            let mut r = csv::Reader::from_path(dir.join(format!("{name}.csv"))).unwrap();
            let header: Vec<String> = r.headers().unwrap().iter().map(str::to_string).collect();
            r.records()
                .map(|rec| {
                    let rec = rec.unwrap();
                    header
                        .iter()
                        .zip(rec.iter())
                        .map(|(h, c)| {
                            let c = unescape_formula(c);
                            let v = if h == "value" { serde_json::from_str(c).unwrap() } else { Value::from(c) };
                            (h.clone(), v)
                        })
                        .collect()
                })
                .collect()
        } else {
            std::fs::read_to_string(dir.join(format!("{name}.jsonl")))
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect()
        }
    };
    let t = |m: &serde_json::Map<String, Value>, k: &str| m[k].as_str().unwrap().to_string();
    Content {
        orgs: records("organizations").iter().map(|m| t(m, "name")).collect(),
        members: records("members").iter().map(|m| (t(m, "organization"), t(m, "account_id"))).collect(),
        properties: records("properties")
            .iter()
            .map(|m| ((t(m, "organization"), t(m, "key")), m["value"].clone()))
            .collect(),
        links: records("service_desks").iter().map(|m| (t(m, "organization"), t(m, "service_desk_id"))).collect(),
    }
}

async fn restore_round_trip(format: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let seed_dir = tmp.path().join("seed");
    let seed = awkward_seed();
    seed.write(&seed_dir);
    let source = sandbox(Some(&seed_dir), 0).await;
    let truth = content_of(&source.state());
    assert_eq!(truth.orgs.len(), seed.orgs.len());

    let snap1 = tmp.path().join("snap1");
    assert_eq!(export(&source.url(), &snap1, &["--format", format]).await, 0);
    assert_eq!(snapshot_content(&snap1), truth);

    let target = sandbox(None, 0).await;
    let report = tmp.path().join("restore.jsonl");
    assert_eq!(import(&target.url(), &snap1, &report, &[]).await, 0, "{:#?}", read_report(&report));
    let rows = read_report(&report);
    let n = seed.orgs.len() + seed.members.len() + seed.properties.len() + seed.links.len();
    assert_eq!(rows.len(), n);
    for row in &rows {
        assert!(["created", "added", "set", "linked"].contains(&row.outcome.as_str()), "{row:?}");
    }
    let state = target.state();
    assert_no_duplicate_orgs(&state);
    assert_eq!(content_of(&state), truth, "restored site ({format})");

    let snap2 = tmp.path().join("snap2");
    assert_eq!(export(&target.url(), &snap2, &["--format", format]).await, 0);
    assert_eq!(snapshot_content(&snap2), snapshot_content(&snap1), "{format} snapshots differ");

    // Restoring the same snapshot again changes nothing.
    target.reset_stats();
    let again = tmp.path().join("again.jsonl");
    assert_eq!(import(&target.url(), &snap1, &again, &[]).await, 0);
    assert_eq!(target.stats().writes, 0);
    assert!(read_report(&again).iter().all(|r| r.outcome == "unchanged"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jsonl_snapshot_restores_into_an_empty_site() {
    restore_round_trip("jsonl").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_csv_snapshot_restores_formula_escaped_names_exactly() {
    restore_round_trip("csv").await;
}

// ----- 4. --dry-run ------------------------------------------------------------

fn mixed_seed() -> Seed {
    Seed {
        orgs: vec![(1, "Keep"), (2, "Other"), (3, "Gone")],
        members: vec![(1, "m1"), (1, "m4"), (3, "g1")],
        properties: vec![(1, "p1", json!(1)), (1, "p2", json!(2)), (1, "p4", json!("x"))],
        links: vec![(1, "10001"), (2, "10002")],
    }
}

/// Input over [`mixed_seed`] and the outcome a real run must report per row.
fn mixed_input(dir: &Path) -> Vec<&'static str> {
    write(dir, "organizations.csv", "name,action\nKeep,\nNew,\nGone,delete\nNever,delete\n");
    write(
        dir,
        "members.csv",
        "organization,account_id,action\nKeep,m1,\nKeep,m2,add\nKeep,m3,remove\nKeep,m4,remove\nNew,n1,\nKeep,,\n",
    );
    write(
        dir,
        "properties.jsonl",
        concat!(
            "{\"organization\":\"Keep\",\"key\":\"p1\",\"value\":1}\n",
            "{\"organization\":\"Keep\",\"key\":\"p2\",\"value\":3}\n",
            "{\"organization\":\"Keep\",\"key\":\"p3\",\"value\":{\"a\":1}}\n",
            "{\"organization\":\"Keep\",\"key\":\"p4\",\"action\":\"delete\"}\n",
            "{\"organization\":\"Keep\",\"key\":\"p5\",\"action\":\"delete\"}\n",
            "{\"organization\":\"New\",\"key\":\"q\",\"value\":\"v\"}\n",
        ),
    );
    write(
        dir,
        "service_desks.csv",
        "organization,service_desk_id,action\nKeep,10001,\nKeep,10002,\nNew,10001,\nOther,10002,unlink\nOther,10001,unlink\n",
    );
    vec![
        "unchanged",
        "created",
        "deleted",
        "unchanged", // organizations
        "unchanged",
        "added",
        "unchanged",
        "removed",
        "added",
        "failed", // members
        "unchanged",
        "set",
        "set",
        "deleted",
        "unchanged",
        "set", // properties
        "unchanged",
        "linked",
        "linked",
        "unlinked",
        "unchanged", // desk links
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_writes_nothing_and_predicts_the_real_run_row_by_row() {
    let tmp = tempfile::tempdir().unwrap();
    let seed_dir = tmp.path().join("seed");
    mixed_seed().write(&seed_dir);
    let sb = sandbox(Some(&seed_dir), 0).await;
    let input = tmp.path().join("input");
    let expected = mixed_input(&input);
    let before = sb.state();

    let dry = tmp.path().join("dry.csv");
    assert_eq!(import(&sb.url(), &input, &dry, &["--dry-run"]).await, 1, "one row is invalid");
    assert_eq!(sb.stats().writes, 0, "{:?}", sb.stats().by_route);
    assert_eq!(sb.state(), before);
    let dry_rows = read_report(&dry);

    let real = tmp.path().join("real.csv");
    assert_eq!(import(&sb.url(), &input, &real, &[]).await, 1);
    let real_rows = read_report(&real);
    assert_eq!(outcomes(&real_rows), expected, "{real_rows:#?}");
    assert_eq!(dry_rows.len(), real_rows.len());
    for (d, r) in dry_rows.iter().zip(&real_rows) {
        assert_eq!(d.source, r.source);
        let predicted = match r.outcome.as_str() {
            "unchanged" => "unchanged",
            "failed" => "failed",
            _ => "planned",
        };
        assert_eq!(d.outcome, predicted, "dry {d:?} vs real {r:?}");
        assert_eq!((&d.kind, &d.action, &d.organization, &d.target), (&r.kind, &r.action, &r.organization, &r.target));
    }
    let failed = &real_rows[9];
    assert!(failed.message.contains(&format!("{}:7", input.join("members.csv").display())), "{failed:?}");
    assert!(failed.message.contains("account_id"), "{failed:?}");

    // The real run did what it reported.
    let c = content_of(&sb.state());
    assert_eq!(c.orgs, ["Keep", "New", "Other"].map(String::from).into());
    assert_eq!(c.members, [("Keep", "m1"), ("Keep", "m2"), ("New", "n1")].map(|(a, b)| (a.into(), b.into())).into());
    assert_eq!(
        c.properties,
        [
            (("Keep", "p1"), json!(1)),
            (("Keep", "p2"), json!(3)),
            (("Keep", "p3"), json!({"a": 1})),
            (("New", "q"), json!("v"))
        ]
        .map(|((o, k), v)| ((o.to_string(), k.to_string()), v))
        .into()
    );
    assert_eq!(
        c.links,
        [("Keep", "10001"), ("Keep", "10002"), ("New", "10001")].map(|(a, b)| (a.into(), b.into())).into()
    );

    // Now a dry run predicts nothing to do.
    sb.reset_stats();
    let dry2 = tmp.path().join("dry2.csv");
    assert_eq!(import(&sb.url(), &input, &dry2, &["--dry-run"]).await, 1);
    assert_eq!(sb.stats().writes, 0);
    let rows = read_report(&dry2);
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(row.outcome, if i == 9 { "failed" } else { "unchanged" }, "{row:?}");
    }
}

// ----- 5. --prune ----------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_removes_exactly_the_unlisted_items_of_named_organizations() {
    let tmp = tempfile::tempdir().unwrap();
    let seed_dir = tmp.path().join("seed");
    Seed {
        orgs: vec![(1, "A"), (2, "B"), (3, "C")],
        members: vec![(1, "a1"), (1, "a2"), (1, "a3"), (2, "b1"), (3, "c1"), (3, "c2")],
        properties: vec![
            (1, "k1", json!(1)),
            (1, "k2", json!(2)),
            (1, "k3", json!(3)),
            (2, "kb", json!(1)),
            (3, "kc", json!(1)),
        ],
        links: vec![(1, "10001"), (1, "10002"), (2, "10001"), (2, "10002"), (3, "10002")],
    }
    .write(&seed_dir);
    let sb = sandbox(Some(&seed_dir), 0).await;
    let before = content_of(&sb.state());
    let input = tmp.path().join("input");
    write(&input, "organizations.csv", "name\nC\n");
    write(&input, "members.csv", "organization,account_id\nA,a1\nA,a4\n");
    write(&input, "properties.jsonl", "{\"organization\":\"A\",\"key\":\"k1\",\"value\":1}\n");
    write(&input, "service_desks.csv", "organization,service_desk_id\nA,10001\n");

    // A dry run of the prune touches nothing.
    let dry = tmp.path().join("dry.jsonl");
    assert_eq!(import(&sb.url(), &input, &dry, &["--prune", "--dry-run"]).await, 0);
    assert_eq!(sb.stats().writes, 0);
    assert_eq!(content_of(&sb.state()), before);
    assert_eq!(outcomes(&read_report(&dry)), ["unchanged", "unchanged", "planned", "unchanged", "unchanged"]);
    sb.reset_stats();

    let report = tmp.path().join("prune.jsonl");
    assert_eq!(import(&sb.url(), &input, &report, &["--prune"]).await, 0);
    let rows = read_report(&report);
    assert_eq!(outcomes(&rows), ["unchanged", "unchanged", "added", "unchanged", "unchanged"]);

    let after = content_of(&sb.state());
    let only = |c: &Content, org: &str| Content {
        orgs: c.orgs.iter().filter(|o| *o == org).cloned().collect(),
        members: c.members.iter().filter(|m| m.0 == org).cloned().collect(),
        properties: c.properties.iter().filter(|p| p.0 .0 == org).map(|(k, v)| (k.clone(), v.clone())).collect(),
        links: c.links.iter().filter(|l| l.0 == org).cloned().collect(),
    };
    assert_eq!(after.orgs, before.orgs, "organizations are never pruned");
    // B is not named: untouched.
    assert_eq!(only(&after, "B"), only(&before, "B"));
    // A keeps what the input lists, and gains a4.
    assert_eq!(after.members.iter().filter(|m| m.0 == "A").map(|m| m.1.as_str()).collect::<Vec<_>>(), ["a1", "a4"]);
    assert_eq!(only(&after, "A").properties, [(("A".to_string(), "k1".to_string()), json!(1))].into());
    assert_eq!(only(&after, "A").links, [("A".to_string(), "10001".to_string())].into());
    // C is named (organizations.csv) and the input lists nothing of it.
    assert_eq!(only(&after, "C"), Content { orgs: ["C".to_string()].into(), ..Content::default() });

    let r = routes(&sb);
    let writes: BTreeMap<String, u64> = r.into_iter().filter(|(k, _)| !k.starts_with("GET ")).collect();
    assert_eq!(
        writes,
        route_map(&[
            ("POST /organization/{id}/user", 1),
            ("DELETE /organization/{id}/user", 2),
            ("DELETE /organization/{id}/property/{key}", 3),
            ("DELETE /servicedesk/{id}/organization", 2),
        ])
    );
}

// ----- 6. exact requests (wiremock) --------------------------------------------

/// A site with one organization "Acme" (id 7) and no members; every other
/// request is answered 500 and must not happen.
async fn mock_site() -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(format!("{API}/organization")))
        .and(query_param("start", "0"))
        .respond_with(page(json!([{"id": "7", "name": "Acme"}])))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(format!("{API}/organization/7/user")))
        .and(query_param("start", "0"))
        .respond_with(page(json!([])))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(any()).respond_with(ResponseTemplate::new(500)).expect(0).with_priority(100).mount(&server).await;
    server
}

fn members_csv(dir: &Path, ids: &[String]) -> PathBuf {
    let mut text = String::from("organization,account_id\n");
    for id in ids {
        text.push_str(&format!("Acme,{id}\n"));
    }
    write(dir, "members.csv", &text)
}

fn account_ids(r: &Request) -> Vec<String> {
    let v: Value = serde_json::from_slice(&r.body).expect("JSON body");
    assert_eq!(v.as_object().unwrap().len(), 1, "only accountIds: {v}");
    v["accountIds"].as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_string()).collect()
}

async fn member_posts(server: &MockServer) -> Vec<Vec<String>> {
    server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .filter(|r| r.method.as_str() == "POST" && r.url.path() == format!("{API}/organization/7/user"))
        .map(account_ids)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_go_in_chunks_of_fifty() {
    let server = mock_site().await;
    Mock::given(method("POST"))
        .and(path(format!("{API}/organization/7/user")))
        .respond_with(ResponseTemplate::new(204))
        .expect(3)
        .mount(&server)
        .await;
    let tmp = tempfile::tempdir().unwrap();
    let ids: Vec<String> = (0..120).rev().map(|i| format!("acc-{i:03}")).collect();
    let file = members_csv(tmp.path(), &ids);
    let report = tmp.path().join("r.jsonl");
    assert_eq!(import(&server.uri(), &file, &report, &[]).await, 0);

    let mut chunks = member_posts(&server).await;
    chunks.sort_by_key(|c| c.first().cloned());
    let sizes: Vec<usize> = chunks.iter().map(Vec::len).collect();
    assert_eq!(sizes, [50, 50, 20]);
    let sent: Vec<String> = chunks.concat();
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(sent, sorted, "every id once, in sorted chunks");

    let rows = read_report(&report);
    assert_eq!(rows.len(), 120);
    for (row, id) in rows.iter().zip(&ids) {
        assert_eq!((row.target.as_str(), row.outcome.as_str(), row.http_status), (id.as_str(), "added", Some(204)));
        assert_eq!((row.organization.as_str(), row.organization_id.as_str()), ("Acme", "7"));
    }
}

/// 400 with the server's message for any body naming `bad`, else 204.
struct RejectBad {
    bad: &'static str,
    calls: Arc<AtomicUsize>,
}

impl Respond for RejectBad {
    fn respond(&self, r: &Request) -> ResponseTemplate {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if account_ids(r).iter().any(|id| id == self.bad) {
            ResponseTemplate::new(400).set_body_json(json!({
                "errorMessage": format!("The following users do not exist: {}", self.bad),
                "i18nErrorMessage": {"i18nKey": "sd.admin.users.error", "parameters": []},
            }))
        } else {
            ResponseTemplate::new(204)
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_chunk_is_bisected_and_only_the_bad_row_fails() {
    let server = mock_site().await;
    let calls = Arc::new(AtomicUsize::new(0));
    // The isolated bad id: sent once (a 400 is not retried).
    Mock::given(method("POST"))
        .and(path(format!("{API}/organization/7/user")))
        .and(body_json(json!({"accountIds": ["acc-05"]})))
        .respond_with(RejectBad { bad: "acc-05", calls: calls.clone() })
        .expect(1)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(format!("{API}/organization/7/user")))
        .respond_with(RejectBad { bad: "acc-05", calls: calls.clone() })
        .mount(&server)
        .await;
    let tmp = tempfile::tempdir().unwrap();
    let ids: Vec<String> = (0..10).map(|i| format!("acc-{i:02}")).collect();
    let file = members_csv(tmp.path(), &ids);
    let report = tmp.path().join("r.csv");
    assert_eq!(import(&server.uri(), &file, &report, &[]).await, 1);

    let posts = member_posts(&server).await;
    assert_eq!(posts.len(), calls.load(Ordering::SeqCst));
    // 10 -> 5 ok + 5 rejected -> 2 rejected + 3 ok -> 1 rejected + 1 ok
    assert_eq!(posts.len(), 7, "{posts:?}");
    assert_eq!(posts[0], ids, "the whole chunk first");
    let mut added: Vec<String> =
        posts.iter().filter(|p| !p.contains(&"acc-05".to_string())).flat_map(|p| p.iter().cloned()).collect();
    added.sort();
    let good: Vec<String> = ids.iter().filter(|i| *i != "acc-05").cloned().collect();
    assert_eq!(added, good, "each good id added exactly once");

    let rows = read_report(&report);
    assert_eq!(rows.len(), 10);
    for (row, id) in rows.iter().zip(&ids) {
        assert_eq!(&row.target, id);
        if id == "acc-05" {
            assert_eq!((row.outcome.as_str(), row.http_status, row.attempts), ("failed", Some(400), 1), "{row:?}");
            assert!(row.message.contains("The following users do not exist: acc-05"), "{row:?}");
        } else {
            assert_eq!((row.outcome.as_str(), row.http_status), ("added", Some(204)), "{row:?}");
            assert!(row.message.is_empty(), "{row:?}");
        }
    }
}

/// 429 + `Retry-After: 1` on the first call, then 204; records arrival times.
struct LimitedOnce(Arc<Mutex<Vec<Instant>>>);

impl Respond for LimitedOnce {
    fn respond(&self, _: &Request) -> ResponseTemplate {
        let mut log = self.0.lock().unwrap();
        log.push(Instant::now());
        if log.len() == 1 {
            ResponseTemplate::new(429)
                .insert_header("Retry-After", "1")
                .set_body_json(json!({"errorMessage": "Rate limit exceeded."}))
        } else {
            ResponseTemplate::new(204)
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_with_retry_after_is_honoured() {
    let server = mock_site().await;
    let log = Arc::new(Mutex::new(Vec::new()));
    Mock::given(method("POST"))
        .and(path(format!("{API}/organization/7/user")))
        .and(body_json(json!({"accountIds": ["acc-1"]})))
        .respond_with(LimitedOnce(log.clone()))
        .expect(2)
        .mount(&server)
        .await;
    let tmp = tempfile::tempdir().unwrap();
    let file = members_csv(tmp.path(), &["acc-1".to_string()]);
    let report = tmp.path().join("r.jsonl");
    assert_eq!(import(&server.uri(), &file, &report, &[]).await, 0);
    let times = log.lock().unwrap().clone();
    assert_eq!(times.len(), 2);
    let waited = times[1] - times[0];
    assert!(waited >= Duration::from_millis(1000), "retried after {waited:?}, before Retry-After");
    assert!(waited < Duration::from_secs(3), "waited {waited:?}");
    let rows = read_report(&report);
    assert_eq!(rows.len(), 1);
    assert_eq!((rows[0].outcome.as_str(), rows[0].http_status, rows[0].attempts), ("added", Some(204), 2));
}

// ----- 7. exit codes and hostile input -------------------------------------------

/// Valid rows mixed with invalid ones; returns (line source, field) of the
/// invalid rows, in input order.
fn hostile_input(dir: &Path) -> Vec<(String, Option<&'static str>)> {
    let long_name = "N".repeat(201);
    let long_key = "k".repeat(256);
    let orgs = write(dir, "organizations.csv", &format!("name\nGood Org\n{long_name}\n\"   \"\n"));
    let members = write(
        dir,
        "members.csv",
        "organization,account_id,action\nGood Org,m1,\nGood Org,,\n,m2,\nGood Org,m 3,\nGood Org,m4,promote\n",
    );
    let props = write(
        dir,
        "properties.jsonl",
        &format!(
            "{{\"organization\":\"Good Org\",\"key\":\"k\",\"value\":{{\"x\":1}}}}\n{{\"organization\":\"Good Org\",\"key\":\"{long_key}\",\"value\":1}}\n{{not json\n"
        ),
    );
    let props_csv = write(dir, "zprops.csv", "organization,key,value\nGood Org,k2,{bad\nGood Org,k3,\"[1,2]\"\n");
    let at = |p: &Path, l: u32| format!("{}:{l}", p.display());
    vec![
        (at(&orgs, 3), Some("name")),
        (at(&orgs, 4), Some("name")),
        (at(&members, 3), Some("account_id")),
        (at(&members, 4), Some("organization")),
        (at(&members, 5), Some("account_id")),
        (at(&members, 6), Some("action")),
        (at(&props, 2), Some("key")),
        (at(&props, 3), None),
        (at(&props_csv, 2), Some("value")),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_rows_fail_with_file_line_and_field_while_the_rest_is_applied() {
    let sb = sandbox(None, 0).await;
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("input");
    let invalid = hostile_input(&input);
    let report = tmp.path().join("r.csv");
    assert_eq!(import(&sb.url(), &input, &report, &[]).await, 1);

    let rows = read_report(&report);
    assert_eq!(rows.len(), 13);
    let failed: Vec<&Rep> = rows.iter().filter(|r| r.outcome == "failed").collect();
    assert_eq!(failed.len(), invalid.len(), "{rows:#?}");
    for (row, (source, field)) in failed.iter().zip(&invalid) {
        assert_eq!(&row.source, source);
        assert!(row.message.starts_with(&format!("{source}: ")), "{row:?}");
        if let Some(field) = field {
            assert!(row.message.contains(&format!("field `{field}`")), "{row:?}");
        }
        assert_eq!((row.http_status, row.attempts), (None, 0));
    }
    let ok: Vec<(&str, &str)> =
        rows.iter().filter(|r| r.outcome != "failed").map(|r| (r.target.as_str(), r.outcome.as_str())).collect();
    assert_eq!(ok, [("", "created"), ("m1", "added"), ("k", "set"), ("k3", "set")]);

    let c = content_of(&sb.state());
    assert_eq!(c.orgs, ["Good Org".to_string()].into());
    assert_eq!(c.members, [("Good Org".to_string(), "m1".to_string())].into());
    assert_eq!(
        c.properties,
        [
            (("Good Org".to_string(), "k".to_string()), json!({"x": 1})),
            (("Good Org".to_string(), "k3".to_string()), json!([1, 2]))
        ]
        .into()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_with_an_invalid_row_sends_nothing_and_exits_2() {
    let sb = sandbox(None, 0).await;
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("input");
    let invalid = hostile_input(&input);
    let report = tmp.path().join("r.jsonl");
    assert_eq!(import(&sb.url(), &input, &report, &["--strict"]).await, 2);
    let stats = sb.stats();
    assert_eq!((stats.writes, stats.total), (0, 0), "{:?}", stats.by_route);
    assert_eq!(sb.state().organizations.len(), 0);
    // The report still says what each row is.
    let rows = read_report(&report);
    assert_eq!(rows.len(), 13);
    assert_eq!(rows.iter().filter(|r| r.outcome == "failed").count(), invalid.len());
    assert!(rows.iter().all(|r| r.outcome == "failed" || (r.outcome == "planned" && r.message.contains("not sent"))));

    // --strict with valid input runs as usual.
    let valid = tmp.path().join("valid");
    write(&valid, "members.csv", "organization,account_id\nStrict Org,m1\n");
    assert_eq!(import(&sb.url(), &valid, &report, &["--strict"]).await, 0);
    assert_eq!(outcomes(&read_report(&report)), ["added"]);
    assert_eq!(content_of(&sb.state()).members, [("Strict Org".to_string(), "m1".to_string())].into());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_required_column_exits_2_and_sends_nothing() {
    let sb = sandbox(None, 0).await;
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("input");
    write(&input, "organizations.csv", "name\nAcme\n");
    write(&input, "properties.csv", "organization,key\nAcme,k\n");
    let report = tmp.path().join("r.csv");
    assert_eq!(import(&sb.url(), &input, &report, &[]).await, 2);
    assert_eq!(sb.stats().total, 0);
    assert!(sb.state().organizations.is_empty());
    // a file without any known column
    let other = write(tmp.path(), "other.csv", "colour\nred\n");
    assert_eq!(import(&sb.url(), &other, &report, &[]).await, 2);
    assert_eq!(sb.stats().total, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_credentials_abort_quickly_with_exit_3_and_no_token_in_the_report() {
    let sb = sandbox(None, 0).await;
    let tmp = tempfile::tempdir().unwrap();
    let samples = tmp.path().join("samples");
    jsm_orgs::demo::write_samples(&samples).unwrap();
    let report = tmp.path().join("r.csv");
    let secret = "wrong-SECRET-token-4711";
    let args: Vec<String> = ["import", &s(&samples), "--site", &sb.url(), "--report", &s(&report), "--quiet"]
        .iter()
        .map(|a| a.to_string())
        .collect();
    let started = Instant::now();
    let code = run_with(&args, &Env::from_pairs([("JSM_EMAIL", EMAIL), ("JSM_API_TOKEN", secret)])).await;
    assert_eq!(code, 3);
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    let stats = sb.stats();
    assert!(stats.total <= 3, "{stats:?}");
    assert_eq!(stats.writes, 0);
    assert!(stats.unauthorized >= 1);
    assert!(sb.state().organizations.is_empty());

    let text = std::fs::read_to_string(&report).unwrap();
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(format!("{EMAIL}:{secret}"));
    assert!(!text.contains(secret) && !text.contains(&b64) && !text.contains("SECRET"));
    let rows = read_report(&report);
    assert_eq!(rows.len(), sample_rows(&samples).len());
    for row in &rows {
        assert!(row.outcome == "failed" || (row.outcome == "not_sent" && row.attempts == 0), "{row:?}");
        assert!(row.message.contains("401"), "{row:?}");
    }
}

// ----- 8. contradictory and duplicate rows -----------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contradictions_fail_naming_both_lines_and_duplicates_make_one_call() {
    let tmp = tempfile::tempdir().unwrap();
    let seed_dir = tmp.path().join("seed");
    Seed { orgs: vec![(1, "Acme")], members: vec![], properties: vec![], links: vec![] }.write(&seed_dir);
    let sb = sandbox(Some(&seed_dir), 0).await;
    let input = tmp.path().join("input");
    let orgs = write(&input, "organizations.csv", "name,action\nNewCo,\nNewCo,upsert\nDoomed,delete\nDoomed,\n");
    let members = write(
        &input,
        "members.csv",
        "organization,account_id,action\nAcme,a1,\nAcme,a1,add\nAcme,a2,add\nAcme,a2,remove\n",
    );
    let props = write(
        &input,
        "properties.jsonl",
        "{\"organization\":\"Acme\",\"key\":\"k\",\"value\":1}\n{\"organization\":\"Acme\",\"key\":\"k\",\"value\":2}\n",
    );
    write(&input, "service_desks.csv", "organization,service_desk_id\nAcme,10001\nAcme,10001\n");
    let report = tmp.path().join("r.jsonl");
    assert_eq!(import(&sb.url(), &input, &report, &[]).await, 1);

    let rows = read_report(&report);
    assert_eq!(
        outcomes(&rows),
        [
            "created", "created", "failed", "failed", // organizations
            "added", "added", "failed", "failed", // members
            "failed", "failed", // properties
            "linked", "linked", // desk links
        ]
    );
    let at = |p: &Path, l: u32| format!("{}:{l}", p.display());
    assert_eq!(rows[0].organization_id, rows[1].organization_id);
    for row in &rows[2..4] {
        assert!(row.message.contains(&at(&orgs, 4)) && row.message.contains(&at(&orgs, 5)), "{row:?}");
    }
    for row in &rows[6..8] {
        assert!(row.message.contains(&at(&members, 4)) && row.message.contains(&at(&members, 5)), "{row:?}");
    }
    for row in &rows[8..10] {
        assert!(row.message.contains(&at(&props, 1)) && row.message.contains(&at(&props, 2)), "{row:?}");
    }
    let writes: BTreeMap<String, u64> = routes(&sb).into_iter().filter(|(k, _)| !k.starts_with("GET ")).collect();
    assert_eq!(
        writes,
        route_map(&[
            ("POST /organization", 1),
            ("POST /organization/{id}/user", 1),
            ("POST /servicedesk/{id}/organization", 1)
        ])
    );
    let c = content_of(&sb.state());
    assert_eq!(c.orgs, ["Acme".to_string(), "NewCo".to_string()].into());
    assert_eq!(c.members, [("Acme".to_string(), "a1".to_string())].into());
    assert!(c.properties.is_empty());
    assert_eq!(c.links, [("Acme".to_string(), "10001".to_string())].into());
}

// ----- more: a flaky site, aborts, failed creates, ids ------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flaky_site_still_ends_in_the_exact_state_without_duplicates() {
    let sb = sandbox(None, 0).await;
    sb.set_faults(jsm_orgs::sandbox::Faults {
        fail_rate: 0.1,
        drop_rate: 0.15,
        malformed_rate: 0.1,
        ..Default::default()
    });
    let tmp = tempfile::tempdir().unwrap();
    let samples = tmp.path().join("samples");
    jsm_orgs::demo::write_samples(&samples).unwrap();
    let input = sample_rows(&samples);
    // In process with millisecond backoffs (the CLI's are half a second).
    let client = crate::common::client_with(
        &sb.url(),
        jsm_orgs::api::Auth::Basic { email: EMAIL.into(), token: TOKEN.into() },
        crate::common::fast_retry(12),
        Duration::from_secs(5),
    );
    let report = tmp.path().join("r.jsonl");
    let opts = jsm_orgs::settings::ImportOptions {
        paths: vec![samples.clone()],
        dry_run: false,
        report: report.clone(),
        prune: false,
        strict: false,
        allow_edited: false,
        chunk_size: std::num::NonZeroUsize::new(50).unwrap(),
        progress: false,
        create_customers: true,
    };
    let summary = jsm_orgs::import::import(&client, &opts).await.expect("the import runs to the end");
    assert_eq!(summary.failed(), 0, "{:#?}", read_report(&report));
    assert!(summary.counters.retries > 0);
    let stats = sb.stats();
    assert!(stats.injected_failures + stats.dropped > 0, "no fault was injected: {stats:?}");

    let state = sb.state();
    assert_no_duplicate_orgs(&state);
    assert_eq!(state.organizations.len(), 10);
    let c = content_of(&state);
    assert_eq!(c.members.len(), 60);
    assert_eq!(c.properties.len(), 15);
    assert_eq!(c.links.len(), 14);
    for r in input.iter().filter(|r| r.kind == "properties") {
        assert_eq!(c.properties.get(&(r.org.clone(), r.target.clone())), r.value.as_ref());
    }
    let rows = read_report(&report);
    assert_eq!(
        rows.iter().map(|r| r.source.clone()).collect::<Vec<_>>(),
        input.iter().map(|r| r.source.clone()).collect::<Vec<_>>()
    );
    assert!(rows.iter().all(|r| ["created", "added", "set", "linked"].contains(&r.outcome.as_str())), "{rows:#?}");
    assert!(rows.iter().any(|r| r.attempts > 1), "some row needed a retry");

    sb.set_faults(jsm_orgs::sandbox::Faults::default());
    sb.reset_stats();
    let again = tmp.path().join("again.jsonl");
    assert_eq!(import(&sb.url(), &samples, &again, &[]).await, 0);
    assert_eq!(sb.stats().writes, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permission_failure_mid_run_aborts_with_exit_3_and_reports_every_row() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(format!("{API}/organization")))
        .respond_with(page(json!([{"id": "7", "name": "Acme"}, {"id": "8", "name": "Old"}])))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(format!("{API}/organization/7/user")))
        .respond_with(page(json!([])))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("DELETE"))
        .and(path(format!("{API}/organization/8")))
        .respond_with(ResponseTemplate::new(403).set_body_json(json!({"errorMessage": "You are not a Jira admin."})))
        .expect(1)
        .mount(&server)
        .await;
    // Each endpoint has its own lane, so the members call may already be on
    // the wire when the 403 of the delete comes back: at most that one.
    Mock::given(method("POST"))
        .and(path(format!("{API}/organization/7/user")))
        .respond_with(ResponseTemplate::new(204).set_delay(Duration::from_millis(200)))
        .expect(0..=1)
        .mount(&server)
        .await;
    Mock::given(any()).respond_with(ResponseTemplate::new(500)).expect(0).with_priority(100).mount(&server).await;
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("input");
    write(&input, "organizations.csv", "name,action\nOld,delete\n");
    write(&input, "members.csv", "organization,account_id\nAcme,a1\nAcme,a2\n");
    let report = tmp.path().join("r.csv");
    assert_eq!(import(&server.uri(), &input, &report, &[]).await, 3);
    let rows = read_report(&report);
    assert_eq!(rows[0].outcome, "failed");
    assert_eq!(rows[0].http_status, Some(403));
    assert!(rows[0].message.contains("You are not a Jira admin."), "{:?}", rows[0]);
    // Either sent before the abort (and done), or not sent at all.
    let added = server.received_requests().await.unwrap().iter().any(|r| r.method.as_str() == "POST");
    for row in &rows[1..] {
        if added {
            assert_eq!((row.outcome.as_str(), row.attempts), ("added", 1), "{row:?}");
        } else {
            assert_eq!((row.outcome.as_str(), row.attempts), ("not_sent", 0), "{row:?}");
            assert!(row.message.starts_with("not sent"), "{row:?}");
        }
    }
    assert!(!partial_of(&report).exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_of_an_organization_that_could_not_be_created_fail_with_the_reason() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(format!("{API}/organization")))
        .respond_with(page(json!([])))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(format!("{API}/organization")))
        .and(body_json(json!({"name": "Refused"})))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({"errorMessage": "Name not allowed."})))
        .expect(1)
        .mount(&server)
        .await;
    // The desk list: the link row's desk exists (the dry run checks it too).
    Mock::given(method("GET"))
        .and(path(format!("{API}/servicedesk")))
        .respond_with(page(json!([{"id": "10001", "projectKey": "SUP"}])))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(any()).respond_with(ResponseTemplate::new(500)).expect(0).with_priority(100).mount(&server).await;
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("input");
    write(&input, "organizations.csv", "name\nRefused\n");
    write(&input, "members.csv", "organization,account_id\nRefused,a1\n");
    write(&input, "properties.jsonl", "{\"organization\":\"Refused\",\"key\":\"k\",\"value\":1}\n");
    write(&input, "service_desks.csv", "organization,service_desk_id\nRefused,10001\n");
    let report = tmp.path().join("r.jsonl");
    assert_eq!(import(&server.uri(), &input, &report, &[]).await, 1);
    let rows = read_report(&report);
    assert_eq!(outcomes(&rows), ["failed"; 4]);
    assert_eq!((rows[0].http_status, rows[0].message.as_str()), (Some(400), "HTTP 400: Name not allowed."));
    for row in &rows[1..] {
        assert_eq!(row.message, "organization was not created: HTTP 400: Name not allowed.", "{row:?}");
        assert_eq!(row.http_status, None);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_may_name_the_organization_by_id_and_chunk_size_is_honoured() {
    let tmp = tempfile::tempdir().unwrap();
    let seed_dir = tmp.path().join("seed");
    Seed { orgs: vec![(41, "By Id")], members: vec![], properties: vec![], links: vec![] }.write(&seed_dir);
    let sb = sandbox(Some(&seed_dir), 0).await;
    let mut text = String::from("organization_id,account_id\n999,ghost\n");
    for i in 0..45 {
        text.push_str(&format!("41,m{i:02}\n"));
    }
    let file = write(tmp.path(), "members.csv", &text);
    let report = tmp.path().join("r.jsonl");
    assert_eq!(import(&sb.url(), &file, &report, &["--chunk-size", "20"]).await, 1);
    let rows = read_report(&report);
    assert_eq!(rows.len(), 46);
    assert_eq!(rows[0].outcome, "failed");
    assert!(
        rows[0].message.contains(&format!("{}:2", file.display()))
            && rows[0].message.contains("organization_id 999 does not exist"),
        "{:?}",
        rows[0]
    );
    for row in &rows[1..] {
        assert_eq!(
            (row.outcome.as_str(), row.organization.as_str(), row.organization_id.as_str()),
            ("added", "By Id", "41")
        );
    }
    assert_eq!(routes(&sb).get("POST /organization/{id}/user"), Some(&3), "45 ids in chunks of 20");
    assert_eq!(content_of(&sb.state()).members.len(), 45);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_site_aborts_with_exit_3() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let tmp = tempfile::tempdir().unwrap();
    let file = write(tmp.path(), "orgs.csv", "name\nA\nB\n");
    let report = tmp.path().join("r.csv");
    let site = format!("http://127.0.0.1:{port}");
    assert_eq!(import(&site, &file, &report, &["--max-retries", "1"]).await, 3);
    let rows = read_report(&report);
    assert_eq!(outcomes(&rows), ["not_sent", "not_sent"]);
    for row in &rows {
        assert!(row.message.starts_with("not sent: could not read the site"), "{row:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_in_a_missing_folder_is_a_usage_error_before_sending_anything() {
    let sb = sandbox(None, 0).await;
    let tmp = tempfile::tempdir().unwrap();
    let file = write(tmp.path(), "orgs.csv", "name\nA\n");
    let report = tmp.path().join("no-such-dir").join("r.csv");
    assert_eq!(import(&sb.url(), &file, &report, &[]).await, 2);
    assert_eq!(sb.stats().total, 0);
}

/// A `--prune` removal has no input row, so its failure would vanish from
/// the report: it is logged, counted, and makes the run exit 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_prune_removal_makes_the_run_exit_1() {
    let server = MockServer::start().await;
    let page = |values: Value| json!({"start": 0, "limit": 50, "size": 1, "isLastPage": true, "values": values});
    Mock::given(method("GET"))
        .and(path("/rest/servicedeskapi/organization"))
        .respond_with(ResponseTemplate::new(200).set_body_json(page(json!([{"id": "7", "name": "Acme"}]))))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/rest/servicedeskapi/organization/7/user"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(page(json!([{"accountId": "keep"}, {"accountId": "extra"}]))),
        )
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("DELETE"))
        .and(path("/rest/servicedeskapi/organization/7/user"))
        .and(body_json(json!({"accountIds": ["extra"]})))
        .respond_with(ResponseTemplate::new(500).set_body_json(json!({"errorMessage": "boom"})))
        .expect(1)
        .mount(&server)
        .await;
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    write(&input, "members.csv", "organization,account_id\nAcme,keep\n");
    let report = tmp.path().join("r.csv");
    assert_eq!(import(&server.uri(), &input, &report, &["--prune", "--max-retries", "0"]).await, 1);
    // The one input row is in place; the failure is the prune's.
    assert_eq!(outcomes(&read_report(&report)), ["unchanged"]);
}

/// A desk named by its project key is the same desk as its numeric id:
/// `--prune` keeps that link and removes only the other one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_matches_desks_named_by_project_key() {
    let sb = sandbox(None, 0).await;
    let c = crate::common::client(&sb.url());
    let id = c.create_organization("Acme").await.unwrap().value.id;
    for desk in DESKS {
        c.link_organization(desk, id).await.unwrap();
    }
    let key = format!("SD{}", DESKS[0]);
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    write(&input, "desks.csv", &format!("organization,service_desk_id\nAcme,{key}\n"));
    let report = tmp.path().join("r.csv");
    assert_eq!(import(&sb.url(), &input, &report, &["--prune"]).await, 0);
    assert_eq!(outcomes(&read_report(&report)), ["unchanged"]);
    let links: Vec<String> = sb.state().service_desks.into_iter().map(|l| l.service_desk_id).collect();
    assert_eq!(links, [DESKS[0].to_string()]);
}
