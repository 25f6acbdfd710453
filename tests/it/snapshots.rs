//! Backups you can trust and migrations between sites: `diff` of a known
//! night of changes, a restore into a site whose desks have other ids, and
//! `verify` (and `import`) refusing damaged snapshots before any request.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};

use jsm_orgs::model::{DeskLinkRecord, MemberRecord, OrgRecord, PropertyRecord};
use jsm_orgs::sandbox::{Sandbox, SandboxConfig};
use jsm_orgs::snapshot::{export, Format};
use serde::Serialize;
use serde_json::{json, Value};

use crate::common::{self, cli, csv_maps};

const DESKS: [&str; 3] = ["10001=SUP:Support", "10002=ITS:IT help", "10003=OPS:Operations"];

fn write_jsonl<T: Serialize>(path: &Path, rows: &[T]) {
    let text: String = rows.iter().map(|r| serde_json::to_string(r).unwrap() + "\n").collect();
    fs::write(path, text).unwrap();
}

fn org(id: u64, name: &str) -> OrgRecord {
    OrgRecord { id, name: name.into(), uuid: Some(format!("uuid-{id}")), scim_managed: Some(false), created: None }
}

fn member(org: &str, id: u64, account: &str, name: &str) -> MemberRecord {
    MemberRecord {
        organization: org.into(),
        organization_id: id,
        account_id: account.into(),
        email: Some(format!("{account}@example.com")),
        display_name: Some(name.into()),
    }
}

fn prop(org: &str, id: u64, key: &str, value: Value) -> PropertyRecord {
    PropertyRecord { organization: org.into(), organization_id: id, key: key.into(), value }
}

/// Acme (1), Beta (2), Gamma (3) and `=Formula Industries` (4), linked to
/// SUP (10001), ITS (10002) and OPS (10003).
fn write_site(dir: &Path) {
    fs::create_dir_all(dir).unwrap();
    write_jsonl(
        &dir.join("organizations.jsonl"),
        &[
            // A DateDTO: CSV keeps its ISO text, and diff compares that.
            OrgRecord {
                created: Some(json!({"epochMillis": 1704164645000u64, "iso8601": "2024-01-02T03:04:05+0000"})),
                ..org(1, "Acme")
            },
            org(2, "Beta"),
            org(3, "Gamma"),
            org(4, "=Formula Industries"),
        ],
    );
    write_jsonl(
        &dir.join("members.jsonl"),
        &[
            member("Acme", 1, "acct-a1", "Ann"),
            member("Acme", 1, "acct-a2", "Al"),
            member("Beta", 2, "acct-b1", "Bo"),
            member("Gamma", 3, "acct-g1", "Gil"),
        ],
    );
    write_jsonl(
        &dir.join("properties.jsonl"),
        &[
            prop("Acme", 1, "legacy", json!(true)),
            prop("Acme", 1, "tier", json!("gold")),
            prop("Gamma", 3, "note", json!("x")),
        ],
    );
    write_jsonl(
        &dir.join("service_desks.jsonl"),
        &[
            DeskLinkRecord::by_id("Acme", 1, "10001"),
            DeskLinkRecord::by_id("Beta", 2, "10001"),
            DeskLinkRecord::by_id("Gamma", 3, "10002"),
            DeskLinkRecord::by_id("=Formula Industries", 4, "10003"),
        ],
    );
}

async fn site_a(tmp: &Path) -> Sandbox {
    write_site(&tmp.join("seed"));
    let desks = DESKS.iter().map(|d| d.to_string()).collect();
    Sandbox::start(SandboxConfig { seed: Some(tmp.join("seed")), service_desks: desks, ..SandboxConfig::default() })
        .await
        .unwrap()
}

async fn export_to(sb: &Sandbox, out: &Path, format: Format, excel: bool) {
    let mut opts = common::export_options(out, format, &sb.url());
    opts.excel = excel;
    export(&common::client(&sb.url()), &opts).await.unwrap();
}

/// Run the binary; returns its output (stdout and stderr captured).
fn run<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Output {
    cli(args).stdout(Stdio::piped()).stderr(Stdio::piped()).output().unwrap()
}

trait ToStrings {
    fn map_to_strings(self) -> Vec<String>;
}

impl ToStrings for Vec<&str> {
    fn map_to_strings(self) -> Vec<String> {
        self.into_iter().map(String::from).collect()
    }
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

type ReportRow = (String, String, String, String, String, String, String);

fn diff_rows(report: &Path) -> BTreeSet<ReportRow> {
    let (header, rows) = csv_maps(report);
    assert_eq!(header, ["kind", "change", "organization", "organization_id", "target", "old", "new"]);
    let c = |r: &std::collections::BTreeMap<String, String>, k: &str| r[k].clone();
    rows.iter()
        .map(|r| {
            (
                c(r, "kind"),
                c(r, "change"),
                c(r, "organization"),
                c(r, "organization_id"),
                c(r, "target"),
                c(r, "old"),
                c(r, "new"),
            )
        })
        .collect()
}

fn row(kind: &str, change: &str, org: &str, id: u64, target: &str, old: &str, new: &str) -> ReportRow {
    (kind.into(), change.into(), org.into(), id.to_string(), target.into(), old.into(), new.into())
}

/// One night on a site: an organization removed, one added, one renamed;
/// members joined and left; a property changed and one removed; desk links
/// added and removed. `diff` reports exactly that, and a JSONL and a CSV
/// snapshot of one site are identical.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diff_reports_exactly_a_night_of_changes() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let sb = site_a(t).await;
    export_to(&sb, &t.join("mon"), Format::Jsonl, false).await;
    export_to(&sb, &t.join("mon-csv"), Format::Csv, true).await;
    assert!(fs::read(t.join("mon-csv/organizations.csv")).unwrap().starts_with(b"\xEF\xBB\xBFid,name"));

    let c = common::client(&sb.url());
    c.delete_organization(3).await.unwrap();
    let delta = c.create_organization("Delta").await.unwrap().value.id;
    c.add_users(delta, &["acct-d1".into()]).await.unwrap();
    c.set_property(delta, "tier", &json!("silver")).await.unwrap();
    c.link_organization("10001", delta).await.unwrap();
    sb.rename_organization(2, "Beta GmbH").unwrap();
    c.add_users(1, &["acct-new".into()]).await.unwrap();
    c.remove_users(1, &["acct-a2".into()]).await.unwrap();
    c.set_property(1, "tier", &json!("platinum")).await.unwrap();
    c.delete_property(1, "legacy").await.unwrap();
    c.link_organization("ITS", 1).await.unwrap();
    c.unlink_organization("10001", 2).await.unwrap();
    export_to(&sb, &t.join("tue"), Format::Jsonl, false).await;

    let report = t.join("night.csv");
    let out = run(&["diff", s(&t.join("mon")), s(&t.join("tue")), "--report", s(&report)]);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    let state = sb.state();
    let shown = |account: &str| {
        let m = state.members.iter().find(|m| m.account_id == account).unwrap();
        format!("{} <{}>", m.display_name.as_deref().unwrap(), m.email.as_deref().unwrap())
    };
    let expected: BTreeSet<ReportRow> = [
        row("organizations", "changed", "Beta GmbH", 2, "name", "Beta", "Beta GmbH"),
        row("organizations", "removed", "Gamma", 3, "", "Gamma", ""),
        row("organizations", "added", "Delta", delta, "", "", "Delta"),
        row("members", "removed", "Acme", 1, "acct-a2", "Al <acct-a2@example.com>", ""),
        row("members", "added", "Acme", 1, "acct-new", "", &shown("acct-new")),
        row("members", "removed", "Gamma", 3, "acct-g1", "Gil <acct-g1@example.com>", ""),
        row("members", "added", "Delta", delta, "acct-d1", "", &shown("acct-d1")),
        row("properties", "removed", "Acme", 1, "legacy", "true", ""),
        row("properties", "changed", "Acme", 1, "tier", "\"gold\"", "\"platinum\""),
        row("properties", "removed", "Gamma", 3, "note", "\"x\"", ""),
        row("properties", "added", "Delta", delta, "tier", "", "\"silver\""),
        row("service_desks", "added", "Acme", 1, "10002", "", "ITS (IT help)"),
        row("service_desks", "removed", "Beta", 2, "10001", "SUP (Support)", ""),
        row("service_desks", "removed", "Gamma", 3, "10002", "ITS (IT help)", ""),
        row("service_desks", "added", "Delta", delta, "10001", "", "SUP (Support)"),
    ]
    .into_iter()
    .collect();
    assert_eq!(diff_rows(&report), expected);
    let stderr = String::from_utf8_lossy(&out.stderr);
    for line in [
        "organizations: 1 added, 1 removed, 1 changed",
        "members: 2 added, 2 removed, 0 changed",
        "properties: 1 added, 2 removed, 1 changed",
        "service_desks: 2 added, 2 removed, 0 changed",
    ] {
        assert!(stderr.contains(line), "{line:?} not in {stderr}");
    }

    // JSONL and (Excel) CSV snapshots of one site: identical, exit 0, and
    // the default report (CSV on stdout) is only the header.
    let out = run(&["diff", s(&t.join("mon")), s(&t.join("mon-csv"))]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8(out.stdout).unwrap(), "kind,change,organization,organization_id,target,old,new\n");

    // --json: one object on stdout, counts per kind; a .jsonl report.
    let jsonl = t.join("night.jsonl");
    let out = run(&["diff", s(&t.join("mon-csv")), s(&t.join("tue")), "--json", "--report", s(&jsonl)]);
    assert_eq!(out.status.code(), Some(1));
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["members"], json!({"added": 2, "removed": 2, "changed": 0}));
    assert_eq!(summary["identical"], json!(false));
    assert_eq!(fs::read_to_string(&jsonl).unwrap().lines().count(), 15);
    sb.shutdown().await;
}

/// Snapshots of two sites are refused unless --across-sites, which matches
/// organizations by name and desks by project key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diff_across_sites_matches_names_and_project_keys() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let a = site_a(t).await;
    export_to(&a, &t.join("a"), Format::Jsonl, false).await;
    // Site B: the same content under other ids (orgs and desks).
    let b = Sandbox::start(SandboxConfig {
        service_desks: vec!["501=SUP:Support".into(), "502=ITS:IT help".into(), "503=OPS:Operations".into()],
        ..SandboxConfig::default()
    })
    .await
    .unwrap();
    let out = run(&["import", s(&t.join("a")), "--site", &b.url(), "--report", s(&t.join("restore.csv"))]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    export_to(&b, &t.join("b"), Format::Csv, false).await;

    let out = run(&["diff", s(&t.join("a")), s(&t.join("b"))]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--across-sites"));
    let out = run(&["diff", s(&t.join("a")), s(&t.join("b")), "--across-sites"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");

    // One membership gone on B: one row, whatever the ids.
    let acme = b.state().organizations.iter().find(|o| o.name == "Acme").unwrap().id;
    common::client(&b.url()).remove_users(acme, &["acct-a1".into()]).await.unwrap();
    export_to(&b, &t.join("b2"), Format::Jsonl, false).await;
    let out = run(&["diff", s(&t.join("a")), s(&t.join("b2")), "--across-sites"]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let rows: Vec<&str> = stdout.lines().skip(1).collect();
    assert_eq!(rows, ["members,removed,Acme,1,acct-a1,Ann <acct-a1@example.com>,"]);
    a.shutdown().await;
    b.shutdown().await;
}

/// A restore into a site whose desks have other ids (same project keys),
/// with a trap desk holding the first site's id: links land by key, the trap
/// desk is untouched, a desk the site lacks fails its row, and the dry run
/// predicted every row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_links_desks_by_project_key_and_the_dry_run_predicts_it() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let a = site_a(t).await;
    export_to(&a, &t.join("snap"), Format::Csv, false).await;
    // B: SUP and ITS under other ids, a TRAP desk with A's SUP id, no OPS.
    let b = Sandbox::start(SandboxConfig {
        service_desks: vec!["501=SUP:Support".into(), "502=ITS:IT help".into(), "10001=TRAP:Trap".into()],
        ..SandboxConfig::default()
    })
    .await
    .unwrap();
    let import = |report: &Path, dry: bool| {
        let snap = t.join("snap");
        let mut args = vec!["import", s(&snap), "--site", &b.url(), "--report", s(report)].map_to_strings();
        if dry {
            args.push("--dry-run".into());
        }
        run(&args)
    };
    let dry = import(&t.join("dry.csv"), true);
    assert_eq!(dry.status.code(), Some(1), "{}", String::from_utf8_lossy(&dry.stderr));
    assert_eq!(b.stats().writes, 0);
    let real = import(&t.join("real.csv"), false);
    assert_eq!(real.status.code(), Some(1), "{}", String::from_utf8_lossy(&real.stderr));

    let (_, dry_rows) = csv_maps(&t.join("dry.csv"));
    let (_, real_rows) = csv_maps(&t.join("real.csv"));
    assert_eq!(dry_rows.len(), real_rows.len());
    for (d, r) in dry_rows.iter().zip(&real_rows) {
        assert_eq!(d["source"], r["source"]);
        if d["outcome"] == "failed" {
            assert_eq!((r["outcome"].as_str(), &r["message"]), ("failed", &d["message"]), "{d:?} {r:?}");
        } else {
            assert_eq!(d["outcome"], "planned", "{d:?}");
            assert_ne!(r["outcome"], "failed", "{r:?}");
        }
    }
    let failed: Vec<_> = real_rows.iter().filter(|r| r["outcome"] == "failed").collect();
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0]["organization"], "'=Formula Industries", "the report escapes formulas too");
    assert!(failed[0]["message"].ends_with("field `service_desk_id`: service desk OPS does not exist on the site"));

    let state = b.state();
    let id = |name: &str| state.organizations.iter().find(|o| o.name == name).unwrap().id;
    let links: BTreeSet<(u64, String)> =
        state.service_desks.iter().map(|l| (l.organization_id, l.service_desk_id.clone())).collect();
    let expected: BTreeSet<(u64, String)> =
        [(id("Acme"), "501"), (id("Beta"), "501"), (id("Gamma"), "502")].map(|(o, d)| (o, d.to_string())).into();
    assert_eq!(links, expected, "links land by project key; the TRAP desk 10001 stays empty");
    assert!(state.organizations.iter().any(|o| o.name == "=Formula Industries"), "the CSV escape was undone");
    a.shutdown().await;
    b.shutdown().await;
}

fn copy_dir(from: &Path, to: &Path) -> PathBuf {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
    to.to_path_buf()
}

/// `verify` names a truncated file, a changed byte and a missing file; an
/// import of each exits 2 without a single request; `--allow-edited`
/// imports the edited one on purpose.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_catches_damage_and_import_refuses_it_before_any_request() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let sb = site_a(t).await;
    let good = t.join("good");
    export_to(&sb, &good, Format::Jsonl, false).await;

    let truncated = copy_dir(&good, &t.join("truncated"));
    let members = fs::read_to_string(truncated.join("members.jsonl")).unwrap();
    fs::write(truncated.join("members.jsonl"), members.lines().take(2).map(|l| format!("{l}\n")).collect::<String>())
        .unwrap();
    let byte = copy_dir(&good, &t.join("byte"));
    let orgs = fs::read_to_string(byte.join("organizations.jsonl")).unwrap();
    fs::write(byte.join("organizations.jsonl"), orgs.replacen("\"Acme\"", "\"Acmf\"", 1)).unwrap();
    let missing = copy_dir(&good, &t.join("missing"));
    fs::remove_file(missing.join("properties.jsonl")).unwrap();

    let out = run(&["verify", s(&good)]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    for (dir, file, why) in [
        (&truncated, "members.jsonl", "2 rows, manifest.json says 4"),
        (&byte, "organizations.jsonl", "sha256 differs"),
        (&missing, "properties.jsonl", "missing"),
    ] {
        let out = run(&["verify", s(dir), "--json"]);
        assert_eq!(out.status.code(), Some(1), "{}", dir.display());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(&format!("DAMAGED  {file}: {why}")), "{stderr}");
        let report: Value = serde_json::from_slice(&out.stdout).unwrap();
        let damaged: Vec<&Value> =
            report["files"].as_array().unwrap().iter().filter(|f| !f["problem"].is_null()).collect();
        assert_eq!(damaged.len(), 1, "{report}");
        assert_eq!(damaged[0]["name"], file);

        sb.reset_stats();
        let out = run(&["import", s(dir), "--site", &sb.url(), "--report", s(&t.join("r.csv"))]);
        assert_eq!(out.status.code(), Some(2), "{}", dir.display());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(file) && stderr.contains("--allow-edited"), "{stderr}");
        assert_eq!(sb.stats().total, 0, "nothing was sent for {}", dir.display());
    }
    let out = run(&["verify", s(&t.join("seed"))]);
    assert_eq!(out.status.code(), Some(2), "a folder without manifest.json is not a snapshot");

    // Edited on purpose: imported with --allow-edited (the rename lands).
    let out = run(&["import", s(&byte), "--site", &sb.url(), "--allow-edited", "--report", s(&t.join("r.csv"))]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(sb.state().organizations.iter().any(|o| o.name == "Acmf"));
    sb.shutdown().await;
}

/// SIGTERM during an export (cron's `timeout`, systemd): exit 3, no
/// snapshot, and no staging folder left beside `--out`.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_stopped_by_sigterm_leaves_no_staging_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let seed = tmp.path().join("seed");
    fs::create_dir_all(&seed).unwrap();
    let orgs: Vec<OrgRecord> = (1..=300).map(|i| org(i, &format!("Org {i}"))).collect();
    write_jsonl(&seed.join("organizations.jsonl"), &orgs);
    let sb = Sandbox::start(SandboxConfig { seed: Some(seed), ..SandboxConfig::default() }).await.unwrap();
    let backups = tmp.path().join("backups");
    fs::create_dir(&backups).unwrap();
    let out = backups.join("night");
    let args = ["export", "--out", s(&out), "--site", &sb.url(), "--rate", "40"].map(String::from);
    let child = cli(&args).stderr(Stdio::piped()).spawn().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while sb.stats().total < 20 {
        assert!(std::time::Instant::now() < deadline, "the export never started reading");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let staging: Vec<_> = fs::read_dir(&backups).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(staging.len(), 1, "the staging folder exists while the export runs: {staging:?}");
    let killed = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(killed.success());
    let done = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap()).await.unwrap();
    assert_eq!(done.status.code(), Some(3), "{}", String::from_utf8_lossy(&done.stderr));
    assert_eq!(fs::read_dir(&backups).unwrap().count(), 0, "no snapshot and no staging folder left");
    sb.shutdown().await;
}

/// `--keep 2`: after each export only the two newest snapshots of this site
/// stay beside it; another site's snapshot and a folder of one's own stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_removes_only_older_snapshots_of_the_same_site() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let sb = site_a(t).await;
    let other = Sandbox::start(SandboxConfig::default()).await.unwrap();
    let backups = t.join("backups");
    export_to(&other, &backups.join("other-site"), Format::Jsonl, false).await;
    fs::create_dir_all(backups.join("notes")).unwrap();
    fs::write(backups.join("notes/manifest.json"), r#"{"format":"mine"}"#).unwrap();
    let mut removed = Vec::new();
    for day in ["d1", "d2", "d3", "d4"] {
        let mut opts = common::export_options(&backups.join(day), Format::Jsonl, &sb.url());
        opts.keep = Some(2);
        removed.extend(export(&common::client(&sb.url()), &opts).await.unwrap().removed_snapshots);
    }
    assert_eq!(removed, [backups.join("d1"), backups.join("d2")]);
    let mut left: Vec<String> =
        fs::read_dir(&backups).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    left.sort();
    assert_eq!(left, ["d3", "d4", "notes", "other-site"]);
    sb.shutdown().await;
    other.shutdown().await;
}

/// `--excel` needs CSV and `--keep` at least 1: usage errors, exit 2.
#[test]
fn excel_and_keep_are_checked_before_anything_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("snap");
    for (extra, message) in
        [(vec!["--excel"], "--excel needs --format csv"), (vec!["--keep", "0"], "--keep must be at least 1")]
    {
        let mut args = vec!["export", "--out", s(&out), "--site", "http://127.0.0.1:9"];
        args.extend(extra);
        let o = run(&args);
        assert_eq!(o.status.code(), Some(2));
        assert!(String::from_utf8_lossy(&o.stderr).contains(message), "{}", String::from_utf8_lossy(&o.stderr));
    }
    assert!(!out.exists());
}
