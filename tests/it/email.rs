//! Members by email: a CRM file onboarded into the sandbox (known people in
//! any letter case, hidden emails, new customers created with
//! `--create-customers`), a snapshot restored into another site whose
//! portal-only customers have other ids, and the exact requests of the user
//! search and the create-customer call (wiremock).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use jsm_orgs::sandbox::{Sandbox, SandboxConfig, SiteState};
use serde_json::{json, Value};
use wiremock::matchers::{any, body_json, method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::common::{csv_maps, env, import, page, run_with, s};

const API: &str = "/rest/servicedeskapi";
const SEARCH: &str = "/rest/api/3/user/search";

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// A sandbox whose customer directory is `customers` (a CSV text).
async fn site_with(dir: &Path, name: &str, customers: &str) -> Sandbox {
    let file = write(dir, name, customers);
    Sandbox::start(SandboxConfig { customers: Some(file), ..SandboxConfig::default() }).await.expect("sandbox starts")
}

/// Memberships as (organization, lowercase email) → (account id, display name).
fn members_by_email(state: &SiteState) -> BTreeMap<(String, String), (String, String)> {
    state
        .members
        .iter()
        .map(|m| {
            let email = m.email.clone().unwrap_or_else(|| format!("(hidden {})", m.account_id)).to_lowercase();
            ((m.organization.clone(), email), (m.account_id.clone(), m.display_name.clone().unwrap_or_default()))
        })
        .collect()
}

fn route(sb: &Sandbox, r: &str) -> u64 {
    sb.stats().by_route.get(r).copied().unwrap_or(0)
}

fn report(path: &Path) -> Vec<BTreeMap<String, String>> {
    csv_maps(path).1
}

fn count(rows: &[BTreeMap<String, String>], outcome: &str) -> usize {
    rows.iter().filter(|r| r["outcome"] == outcome).count()
}

// ----- onboarding a CRM file ----------------------------------------------------

/// 200 people: 0..100 known to the site (odd ones written in upper case in
/// the CRM file), 100..105 known but with hidden emails, 105..200 unknown.
struct Crm {
    customers: String,
    file: String,
}

fn crm() -> Crm {
    let mut customers = String::from("account_id,email,display_name,hidden\n");
    let mut file = String::from("Organization,Email,Full name\n");
    for i in 0..200 {
        let email = format!("person{i}@crm.example");
        if i < 105 {
            customers.push_str(&format!("known-{i},{email},Known {i},{}\n", i >= 100));
        }
        let written = if i % 2 == 1 && i < 100 { email.to_uppercase() } else { email };
        file.push_str(&format!("CRM Org {},{written},Person {i}\n", i % 4));
    }
    Crm { customers, file }
}

/// A site that knows the CRM's first 105 people, and the CRM file imported
/// into it with `flags`: the run's directory, site, input, report and exit code.
async fn onboard(flags: &[&str]) -> (tempfile::TempDir, Sandbox, PathBuf, PathBuf, u8) {
    let tmp = tempfile::tempdir().unwrap();
    let crm = crm();
    let sb = site_with(tmp.path(), "customers.csv", &crm.customers).await;
    let input = write(tmp.path(), "crm.csv", &crm.file);
    let rep = tmp.path().join("report.csv");
    let code = import(&sb.url(), &input, &rep, flags).await;
    (tmp, sb, input, rep, code)
}

#[tokio::test]
async fn a_crm_file_onboards_known_and_new_customers_and_a_rerun_creates_nothing() {
    let (tmp, sb, input, rep, code) = onboard(&["--create-customers"]).await;
    assert_eq!(code, 1, "5 rows fail: exit 1");
    let state = sb.state();
    let got = members_by_email(&state);
    assert_eq!(got.len(), 195);
    for i in (0..200).filter(|i| !(100..105).contains(i)) {
        let (id, name) = &got[&(format!("CRM Org {}", i % 4), format!("person{i}@crm.example"))];
        if i < 100 {
            assert_eq!((id.as_str(), name.as_str()), (format!("known-{i}").as_str(), format!("Known {i}").as_str()));
        } else {
            assert!(id.starts_with("qm:"), "{id}");
            assert_eq!(name, &format!("Person {i}"), "created with the CRM's name");
        }
    }
    assert_eq!(route(&sb, "POST /customer"), 100, "95 created + 5 refused as hidden");
    assert_eq!(route(&sb, "GET /rest/api/3/user/search"), 200, "one search per distinct email");

    let rows = report(&rep);
    assert_eq!(rows.len(), 200, "one report row per input row");
    let sources: Vec<String> = rows.iter().map(|r| r["source"].clone()).collect();
    assert_eq!(sources, (2..202).map(|l| format!("{}:{l}", input.display())).collect::<Vec<_>>());
    assert_eq!((count(&rows, "added"), count(&rows, "failed")), (195, 5));
    for (i, r) in rows.iter().enumerate() {
        match i {
            0..100 => {
                assert_eq!(r["target"], format!("known-{i}"));
                assert!(r["message"].contains(&format!("found, account id known-{i}")), "{}", r["message"]);
            }
            100..105 => {
                assert_eq!(r["target"], format!("person{i}@crm.example"), "no id known: the email");
                assert!(r["message"].contains("hidden") && r["message"].contains("`account_id`"), "{}", r["message"]);
            }
            _ => {
                assert!(r["target"].starts_with("qm:"));
                assert!(r["message"].contains("customer created"), "{}", r["message"]);
            }
        }
    }

    // The re-run creates nothing and writes nothing but the failing rows' attempts.
    sb.reset_stats();
    let rerun = tmp.path().join("rerun.csv");
    assert_eq!(import(&sb.url(), &input, &rerun, &["--create-customers"]).await, 1);
    let stats = sb.stats();
    assert_eq!(stats.writes, 5, "{:?}", stats.by_route);
    assert_eq!(route(&sb, "POST /customer"), 5);
    assert_eq!(sb.state(), state, "nothing changed");
    let rows = report(&rerun);
    assert_eq!((count(&rows, "unchanged"), count(&rows, "failed")), (195, 5));
}

#[tokio::test]
async fn without_create_customers_unknown_emails_fail_saying_how_and_nothing_is_created() {
    let (_tmp, sb, _, rep, code) = onboard(&[]).await;
    assert_eq!(code, 1);
    assert_eq!(route(&sb, "POST /customer"), 0, "nothing is created without the flag");
    assert_eq!(members_by_email(&sb.state()).len(), 100);
    let rows = report(&rep);
    assert_eq!((count(&rows, "added"), count(&rows, "failed")), (100, 100));
    for r in &rows[100..] {
        assert_eq!(
            r["message"],
            format!("no customer with email {} on the site; pass `--create-customers` to create it", r["target"])
        );
    }
}

#[tokio::test]
async fn a_dry_run_looks_emails_up_but_never_creates() {
    let (_tmp, sb, _, rep, code) = onboard(&["--create-customers", "--dry-run"]).await;
    assert_eq!(code, 0);
    assert_eq!(sb.stats().writes, 0);
    let rows = report(&rep);
    assert_eq!(count(&rows, "planned"), 200);
    assert!(rows[150]["message"].contains("one would be created"), "{}", rows[150]["message"]);
    assert_eq!(rows[3]["target"], "known-3");
}

// ----- spreadsheet files ----------------------------------------------------------

#[tokio::test]
async fn spreadsheet_files_import_semicolons_utf16_and_aliased_headers() {
    let tmp = tempfile::tempdir().unwrap();
    let sb = Sandbox::start(SandboxConfig::default()).await.unwrap();
    let dir = tmp.path().join("in");
    std::fs::create_dir(&dir).unwrap();
    // Excel in most of Europe: semicolons.
    write(&dir, "a_semicolons.csv", "Organization;E-Mail;Full Name\n\"Semi; Colon AG\";ann@x.example;Ann\n");
    // Excel's "Unicode text": UTF-16 LE with a BOM, tab-delimited, CRLF.
    let text = "organization\tEmail Address\tdisplay name\r\nTab GmbH\tbö@x.example\tBö\r\n";
    let mut bytes = vec![0xFF, 0xFE];
    bytes.extend(text.encode_utf16().flat_map(u16::to_le_bytes));
    std::fs::write(dir.join("b_unicode.csv"), bytes).unwrap();
    // Mixed case and spaces in a by-id file.
    write(&dir, "c_mixed.csv", "ORGANIZATION,Account ID\nMixed Ltd,acct-mixed-1\n");
    let rep = tmp.path().join("r.csv");
    assert_eq!(import(&sb.url(), &dir, &rep, &["--create-customers"]).await, 0, "{:#?}", report(&rep));
    let got: BTreeSet<(String, String)> = members_by_email(&sb.state()).into_keys().collect();
    let want: BTreeSet<(String, String)> = [
        ("Semi; Colon AG", "ann@x.example"),
        ("Tab GmbH", "bö@x.example"),
        ("Mixed Ltd", "acct-mixed-1@customers.example"),
    ]
    .into_iter()
    .map(|(o, e)| (o.to_string(), e.to_string()))
    .collect();
    assert_eq!(got, want);
}

#[tokio::test]
async fn a_typo_in_a_required_column_exits_2_naming_file_and_column_before_any_request() {
    let server = MockServer::start().await;
    Mock::given(any()).respond_with(ResponseTemplate::new(500)).expect(0).mount(&server).await;
    let tmp = tempfile::tempdir().unwrap();
    let input = write(tmp.path(), "m.csv", "organization,acount_id\nAcme,a1\n");
    assert_eq!(import(&server.uri(), &input, &tmp.path().join("r.csv"), &[]).await, 2);
    let out = crate::common::cli(&["import", &s(&input), "--site", &server.uri()])
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("{}: unknown column `acount_id`: did you mean `account_id`?", input.display())),
        "{err}"
    );
}

// ----- restoring a snapshot into another site --------------------------------

#[tokio::test]
async fn a_snapshot_restores_portal_customers_into_another_site_by_email() {
    let tmp = tempfile::tempdir().unwrap();
    // Site A: Atlassian accounts (same id everywhere) and portal-only customers.
    let mut a_people = String::from("account_id,email,display_name\n");
    let mut b_people = String::from("account_id,email,display_name\n");
    let mut members = String::from("organization,email\n");
    for i in 0..60 {
        let email = format!("c{i}@restore.example");
        let (a_id, b_id) = match i % 3 {
            0 => (format!("5b10ac8d82e05b22cc7d{i:04}"), Some(format!("5b10ac8d82e05b22cc7d{i:04}"))),
            1 => (format!("qm:site-a-{i}"), Some(format!("qm:site-b-{i}"))),
            _ => (format!("qm:site-a-{i}"), None),
        };
        a_people.push_str(&format!("{a_id},{email},Customer {i}\n"));
        if let Some(b_id) = b_id {
            b_people.push_str(&format!("{b_id},{email},Customer {i}\n"));
        }
        members.push_str(&format!("Org {},{email}\n", i % 5));
    }
    let a = site_with(tmp.path(), "a.csv", &a_people).await;
    let b = site_with(tmp.path(), "b.csv", &b_people).await;
    let input = write(tmp.path(), "members.csv", &members);
    assert_eq!(import(&a.url(), &input, &tmp.path().join("a-report.csv"), &[]).await, 0);
    let snap = tmp.path().join("snap");
    let args: Vec<String> =
        ["export", "--out", &s(&snap), "--site", &a.url(), "--quiet"].iter().map(|x| x.to_string()).collect();
    assert_eq!(run_with(&args, &env()).await, 0);

    let rep = tmp.path().join("restore.csv");
    assert_eq!(import(&b.url(), &snap, &rep, &["--create-customers"]).await, 0, "{:#?}", report(&rep));
    let want: BTreeSet<(String, String)> = members_by_email(&a.state()).into_keys().collect();
    let got = members_by_email(&b.state());
    assert_eq!(got.keys().cloned().collect::<BTreeSet<_>>(), want, "members exact by email");
    assert_eq!(got[&("Org 1".to_string(), "c1@restore.example".to_string())].0, "qm:site-b-1", "B's own id");
    assert_eq!(route(&b, "POST /customer"), 20, "only the people B never had are created");
    let rows = report(&rep);
    let fell_back = rows.iter().filter(|r| r["message"].contains("is not on this site")).count();
    assert_eq!(fell_back, 40, "every portal-only customer's row says it fell back to the email");

    // The re-run sends no writes at all.
    b.reset_stats();
    let rerun = tmp.path().join("rerun.csv");
    assert_eq!(import(&b.url(), &snap, &rerun, &["--create-customers"]).await, 0);
    assert_eq!(b.stats().writes, 0, "{:?}", b.stats().by_route);
    assert_eq!(route(&b, "GET /rest/api/3/user/search"), 0, "members matched by email need no lookup");
}

// ----- exact requests ----------------------------------------------------------

/// A site with organization "Acme" (id 7), listed once; every request not
/// mounted afterwards fails the test.
async fn acme() -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path(format!("{API}/organization")))
        .respond_with(page(json!([{"id": "7", "name": "Acme"}])))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(any()).respond_with(ResponseTemplate::new(500)).expect(0).with_priority(100).mount(&server).await;
    server
}

/// [`acme`] (no members) where the search for `email` answers `users`.
async fn mock_site(email: &str, users: Value) -> MockServer {
    let server = acme().await;
    Mock::given(method("GET"))
        .and(path(format!("{API}/organization/7/user")))
        .respond_with(page(json!([])))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(SEARCH))
        .and(query_param("query", email))
        .and(query_param("startAt", "0"))
        .respond_with(ResponseTemplate::new(200).set_body_json(users))
        .expect(1)
        .mount(&server)
        .await;
    server
}

async fn add_expected(server: &MockServer, ids: &[&str], times: u64) {
    Mock::given(method("POST"))
        .and(path(format!("{API}/organization/7/user")))
        .and(body_json(json!({"accountIds": ids})))
        .respond_with(ResponseTemplate::new(204))
        .expect(times)
        .mount(server)
        .await;
}

async fn create_answers(server: &MockServer, body: Value, status: u16, answer: Value, times: u64) {
    Mock::given(method("POST"))
        .and(path(format!("{API}/customer")))
        .and(query_param("strictConflictStatusCode", "true"))
        .and(body_json(body))
        .respond_with(ResponseTemplate::new(status).set_body_json(answer))
        .expect(times)
        .mount(server)
        .await;
}

async fn run_one(server: &MockServer, row: &str, extra: &[&str]) -> (u8, BTreeMap<String, String>) {
    let tmp = tempfile::tempdir().unwrap();
    let input = write(tmp.path(), "m.csv", &format!("organization,email,display_name\n{row}\n"));
    let rep = tmp.path().join("r.csv");
    let code = import(&server.uri(), &input, &rep, extra).await;
    (code, report(&rep).remove(0))
}

#[tokio::test]
async fn the_one_user_with_the_exact_email_is_added() {
    let users = json!([
        {"accountId": "a1", "emailAddress": "ANN@example.com", "displayName": "Ann", "accountType": "atlassian"},
        {"accountId": "a2", "emailAddress": "ann@example.community", "displayName": "Ann B"},
        {"accountId": "a3", "displayName": "Ann C (email hidden)"}
    ]);
    let server = mock_site("ann@example.com", users).await;
    add_expected(&server, &["a1"], 1).await;
    let (code, row) = run_one(&server, "Acme,ann@example.com,Ann", &["--create-customers"]).await;
    assert_eq!((code, row["outcome"].as_str(), row["target"].as_str()), (0, "added", "a1"));
}

#[tokio::test]
async fn an_unknown_email_is_created_with_its_name_then_added() {
    let server = mock_site("bo@example.com", json!([])).await;
    let created = json!({"accountId": "qm:new-1", "emailAddress": "bo@example.com", "displayName": "Bo"});
    create_answers(&server, json!({"email": "bo@example.com", "displayName": "Bo Smith"}), 201, created, 1).await;
    add_expected(&server, &["qm:new-1"], 1).await;
    let (code, row) = run_one(&server, "Acme,bo@example.com,Bo Smith", &["--create-customers"]).await;
    assert_eq!((code, row["outcome"].as_str(), row["target"].as_str()), (0, "added", "qm:new-1"));
    assert!(row["message"].contains("customer created"), "{}", row["message"]);
}

#[tokio::test]
async fn a_409_on_create_fails_the_row_naming_account_id() {
    let server = mock_site("hid@example.com", json!([])).await;
    let conflict = json!({"errorMessage": "An account already exists for this email"});
    // No display name: the email stands in for it.
    create_answers(&server, json!({"email": "hid@example.com", "displayName": "hid@example.com"}), 409, conflict, 1)
        .await;
    let (code, row) = run_one(&server, "Acme,hid@example.com,", &["--create-customers"]).await;
    assert_eq!((code, row["outcome"].as_str()), (1, "failed"));
    assert_eq!(
        row["message"],
        "an account with email hid@example.com exists but its email is hidden by the person's privacy settings; \
         give its `account_id`"
    );
}

#[tokio::test]
async fn two_accounts_with_one_email_are_ambiguous() {
    let users = json!([
        {"accountId": "a1", "emailAddress": "dup@example.com"},
        {"accountId": "a2", "emailAddress": "Dup@Example.com"}
    ]);
    let server = mock_site("dup@example.com", users).await;
    let (code, row) = run_one(&server, "Acme,dup@example.com,Dup", &["--create-customers"]).await;
    assert_eq!((code, row["outcome"].as_str(), row["target"].as_str()), (1, "failed", "dup@example.com"));
    assert!(row["message"].contains("ambiguous") && row["message"].contains("a1, a2"), "{}", row["message"]);
}

#[tokio::test]
async fn a_data_center_site_fails_email_rows_with_one_clear_message() {
    let server = acme().await;
    Mock::given(method("GET"))
        .and(path(SEARCH))
        .respond_with(ResponseTemplate::new(404).set_body_string("<html>Not Found</html>"))
        .expect(1)
        .mount(&server)
        .await;
    let tmp = tempfile::tempdir().unwrap();
    let input = write(tmp.path(), "m.csv", "organization,email\nAcme,a@example.com\nAcme,b@example.com\n");
    let rep = tmp.path().join("r.csv");
    assert_eq!(import(&server.uri(), &input, &rep, &["--create-customers"]).await, 1);
    for row in report(&rep) {
        assert_eq!(row["outcome"], "failed");
        assert!(row["message"].contains("no Jira Cloud user search") && row["message"].contains("account_id"));
    }
}

#[tokio::test]
async fn an_invalid_email_fails_its_row_before_any_request() {
    let server = acme().await;
    let (code, row) = run_one(&server, "Acme,not-an-email,X", &["--create-customers"]).await;
    assert_eq!((code, row["outcome"].as_str()), (1, "failed"));
    assert!(
        row["message"].ends_with(":2: field `email`: `not-an-email` is not an email address"),
        "{}",
        row["message"]
    );
}
