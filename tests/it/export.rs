//! `export` end to end: snapshots of an in-process sandbox (awkward names,
//! small page caps, rate limits and injected 503s) compared with the seed
//! they came from, byte-identical repeats, re-seeding round trips, the exact
//! request count on a quiet site, `--out` handling, failures that must leave
//! nothing behind, file modes, and concurrent deletions; wiremock for the
//! exact paging requests. Every server listens on 127.0.0.1.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use jsm_orgs::api::{Auth, Client, ClientConfig};
use jsm_orgs::model::{
    unescape_formula, DeskLinkRecord, MemberRecord, OrgRecord, PropertyRecord, CSV_FORMULA_ESCAPE, FORMAT_NAME,
    FORMAT_VERSION,
};
use jsm_orgs::sandbox::{Sandbox, SandboxConfig};
use jsm_orgs::snapshot::{export, ExportError, ExportSummary, Format};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use wiremock::matchers::{method, path, path_regex, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::common;

// ----- seed data -------------------------------------------------------------

/// Snapshot records, each list in snapshot order.
#[derive(Debug, Clone, Default, PartialEq)]
struct Records {
    orgs: Vec<OrgRecord>,
    members: Vec<MemberRecord>,
    properties: Vec<PropertyRecord>,
    links: Vec<DeskLinkRecord>,
}

const AWKWARD_NAMES: &[&str] = &[
    "Acme, Inc.",
    "\"Quoted\" Org",
    "Line one\nLine two",
    "Crlf\r\nOrg",
    "Ünïcødé 組織 🚀",
    "=SUM(A1:A9)",
    "-minus",
    "+plus",
    "@at",
    "\tTabbed",
    "'apostrophe",
    "''two apostrophes",
    "=HYPERLINK(\"http://example.invalid\",\"x\")",
    "semi;colon, and \"both\"",
    "  padded  ",
];

const AWKWARD_ACCOUNTS: &[&str] = &["-leading-dash", "@at-account", "=formula-account"];

fn property_values() -> Vec<Value> {
    vec![
        json!({"tier": "gold", "nested": {"list": [1, 2, {"x": null}]}}),
        json!("=1+1"),
        json!(-5),
        json!(true),
        json!("multi\nline, \"quoted\", ünïcødé"),
        json!([]),
        json!({"b": 1, "a": 2}),
        json!("@mention"),
    ]
}

fn desk_order(d: &str) -> (u64, String) {
    (d.parse().unwrap_or(u64::MAX), d.to_string())
}

fn sort_records(r: &mut Records) {
    r.orgs.sort_by_key(|o| o.id);
    r.members.sort_by(|a, b| (a.organization_id, &a.account_id).cmp(&(b.organization_id, &b.account_id)));
    r.properties.sort_by(|a, b| (a.organization_id, &a.key).cmp(&(b.organization_id, &b.key)));
    r.links.sort_by(|a, b| {
        (a.organization_id, desk_order(&a.service_desk_id)).cmp(&(b.organization_id, desk_order(&b.service_desk_id)))
    });
}

/// 45 organizations with awkward names, ids with gaps (3, 10, 17, …: their
/// text order differs from their numeric order), 0..16 members each, 0..3
/// properties, links to desks 1, 2 and 10.
fn awkward_site() -> Records {
    let accounts: Vec<String> =
        AWKWARD_ACCOUNTS.iter().map(|s| s.to_string()).chain((0..37).map(|j| format!("acct-{j:03}"))).collect();
    let user = |j: usize| -> (Option<String>, Option<String>) {
        let email = match j {
            0 => Some("=cmd@example.com".to_string()),
            j if j % 5 == 1 => None, // hidden by privacy settings
            j => Some(format!("user{j}@example.com")),
        };
        let name = match j % 3 {
            0 => format!("User {j}, \"the\" one"),
            1 => format!("Ünï {j}"),
            _ => format!("-neg {j}"),
        };
        (email, Some(name))
    };
    let keys = ["=formula-key", "plain", "ключ", "a,b"];
    let values = property_values();
    let mut r = Records::default();
    for i in 0..45usize {
        let id = 3 + 7 * i as u64;
        let name = AWKWARD_NAMES.get(i).map(|s| s.to_string()).unwrap_or_else(|| format!("Org {i:03}"));
        r.orgs.push(OrgRecord {
            id,
            name: name.clone(),
            uuid: (i % 3 != 0).then(|| format!("00000000-0000-4000-8000-{i:012}")),
            scim_managed: match i % 3 {
                0 => None,
                1 => Some(false),
                _ => Some(true),
            },
            created: (i % 2 == 0).then(|| {
                json!({"epochMillis": 1_600_000_000_000u64 + i as u64, "friendly": "x", "iso8601": "2020-09-13T12:26:40+0000"})
            }),
        });
        let count = (i * 5) % 17;
        let mut picked = BTreeSet::new();
        for k in 0..count {
            picked.insert((i + k * 3) % accounts.len());
        }
        for j in picked {
            let (email, display_name) = user(j);
            r.members.push(MemberRecord {
                organization: name.clone(),
                organization_id: id,
                account_id: accounts[j].clone(),
                email,
                display_name,
            });
        }
        for (k, key) in keys.iter().enumerate().take(i % 4) {
            r.properties.push(PropertyRecord {
                organization: name.clone(),
                organization_id: id,
                key: key.to_string(),
                value: values[(i + k) % values.len()].clone(),
            });
        }
        for (desk, every) in [("1", 2), ("2", 3), ("10", 5)] {
            if i % every == 0 {
                r.links.push(common::sandbox_link(name.clone(), id, desk));
            }
        }
    }
    sort_records(&mut r);
    r
}

fn write_jsonl<T: Serialize>(path: &Path, rows: &[T]) {
    let mut text = String::new();
    for row in rows {
        text.push_str(&serde_json::to_string(row).unwrap());
        text.push('\n');
    }
    fs::write(path, text).unwrap();
}

/// A seed snapshot directory (JSONL, no manifest) for `records`.
fn write_seed(dir: &Path, r: &Records) {
    fs::create_dir_all(dir).unwrap();
    write_jsonl(&dir.join("organizations.jsonl"), &r.orgs);
    write_jsonl(&dir.join("members.jsonl"), &r.members);
    write_jsonl(&dir.join("properties.jsonl"), &r.properties);
    write_jsonl(&dir.join("service_desks.jsonl"), &r.links);
}

async fn sandbox_from(seed: &Path, cfg: SandboxConfig) -> Sandbox {
    Sandbox::start(SandboxConfig { seed: Some(seed.to_path_buf()), ..cfg }).await.unwrap()
}

/// A client with its own throttle (`rate` per second, `concurrency`).
fn client_for(site: &str, rate: f64, concurrency: usize, retries: u32) -> Client {
    Client::new(
        ClientConfig {
            site: url::Url::parse(site).unwrap(),
            auth: Auth::Basic { email: common::EMAIL.into(), token: common::TOKEN.into() },
            timeout: Duration::from_secs(5),
            retry: common::fast_retry(retries),
        },
        common::throttle(rate, concurrency),
    )
    .unwrap()
}

// ----- reading a snapshot back ----------------------------------------------

#[derive(Debug)]
struct Snapshot {
    records: Records,
    manifest: Value,
}

fn read_jsonl<T: DeserializeOwned>(path: &Path) -> Vec<T> {
    let text = fs::read_to_string(path).unwrap();
    assert!(text.is_empty() || text.ends_with('\n'), "{}", path.display());
    text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}"))).collect()
}

/// CSV rows as header -> cell maps, every cell unescaped when `unescape`.
fn read_csv(path: &Path, columns: &[&str], unescape: bool) -> Vec<BTreeMap<String, String>> {
    let (header, mut rows) = common::csv_maps(path);
    assert_eq!(header, columns, "{}", path.display());
    if unescape {
        for cell in rows.iter_mut().flat_map(|r| r.values_mut()) {
            *cell = unescape_formula(cell).to_string();
        }
    }
    rows
}

fn opt(row: &BTreeMap<String, String>, col: &str) -> Option<String> {
    Some(row[col].clone()).filter(|s| !s.is_empty())
}

fn read_snapshot(dir: &Path) -> Snapshot {
    let manifest: Value = serde_json::from_slice(&fs::read(dir.join("manifest.json")).unwrap()).unwrap();
    let records = match manifest["data_format"].as_str().unwrap() {
        "jsonl" => Records {
            orgs: read_jsonl(&dir.join("organizations.jsonl")),
            members: read_jsonl(&dir.join("members.jsonl")),
            properties: read_jsonl(&dir.join("properties.jsonl")),
            links: read_jsonl(&dir.join("service_desks.jsonl")),
        },
        "csv" => {
            let un = manifest["csv_formula_escape"] == CSV_FORMULA_ESCAPE;
            let id = |row: &BTreeMap<String, String>, col: &str| row[col].parse::<u64>().unwrap();
            Records {
                orgs: read_csv(&dir.join("organizations.csv"), &["id", "name", "uuid", "scim_managed", "created"], un)
                    .iter()
                    .map(|r| OrgRecord {
                        id: id(r, "id"),
                        name: r["name"].clone(),
                        uuid: opt(r, "uuid"),
                        scim_managed: opt(r, "scim_managed").map(|s| s.parse().unwrap()),
                        // ISO-8601 text in CSV (spreadsheets sort it).
                        created: opt(r, "created").map(Value::String),
                    })
                    .collect(),
                members: read_csv(
                    &dir.join("members.csv"),
                    &["organization", "organization_id", "account_id", "email", "display_name"],
                    un,
                )
                .iter()
                .map(|r| MemberRecord {
                    organization: r["organization"].clone(),
                    organization_id: id(r, "organization_id"),
                    account_id: r["account_id"].clone(),
                    email: opt(r, "email"),
                    display_name: opt(r, "display_name"),
                })
                .collect(),
                properties: read_csv(
                    &dir.join("properties.csv"),
                    &["organization", "organization_id", "key", "value"],
                    un,
                )
                .iter()
                .map(|r| PropertyRecord {
                    organization: r["organization"].clone(),
                    organization_id: id(r, "organization_id"),
                    key: r["key"].clone(),
                    value: serde_json::from_str(&r["value"]).unwrap(),
                })
                .collect(),
                links: read_csv(
                    &dir.join("service_desks.csv"),
                    &["organization", "organization_id", "service_desk_id", "project_key", "project_name"],
                    un,
                )
                .iter()
                .map(|r| DeskLinkRecord {
                    organization: r["organization"].clone(),
                    organization_id: id(r, "organization_id"),
                    service_desk_id: r["service_desk_id"].clone(),
                    project_key: opt(r, "project_key"),
                    project_name: opt(r, "project_name"),
                })
                .collect(),
            }
        }
        other => panic!("unknown data_format {other}"),
    };
    Snapshot { records, manifest }
}

/// Every file of the snapshot but the manifest, by name.
fn data_files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name() != "manifest.json")
        .map(|e| (e.file_name().to_string_lossy().into_owned(), fs::read(e.path()).unwrap()))
        .collect()
}

/// The names in `dir`, sorted.
fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

/// The manifest is complete and agrees with the files beside it.
fn check_manifest(dir: &Path, format: Format, site: &str, desks: &[&str], r: &Records) {
    let m = read_snapshot(dir).manifest;
    let ext = match format {
        Format::Jsonl => "jsonl",
        Format::Csv => "csv",
    };
    assert_eq!(m["format"], FORMAT_NAME);
    assert_eq!(m["format_version"], FORMAT_VERSION);
    assert_eq!(m["tool"], "jsm-orgs");
    assert_eq!(m["tool_version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(m["site"], site);
    assert_eq!(m["data_format"], ext);
    match format {
        Format::Csv => assert_eq!(m["csv_formula_escape"], "apostrophe"),
        Format::Jsonl => assert!(m.get("csv_formula_escape").is_none()),
    }
    assert_eq!(m["service_desks"], json!(desks));
    for key in ["started_at", "finished_at"] {
        let t = m[key].as_str().unwrap();
        assert!(chrono::DateTime::parse_from_rfc3339(t).is_ok() && t.ends_with('Z'), "{key}: {t}");
    }
    assert!(m["started_at"].as_str() <= m["finished_at"].as_str());
    let rows = [
        ("organizations", r.orgs.len()),
        ("members", r.members.len()),
        ("properties", r.properties.len()),
        ("service_desks", r.links.len()),
    ];
    let files = m["files"].as_object().unwrap();
    let names: Vec<&String> = files.keys().collect();
    let expected: Vec<String> = rows.iter().map(|(k, _)| format!("{k}.{ext}")).collect();
    assert_eq!(names, expected.iter().collect::<Vec<_>>());
    for (kind, n) in rows {
        let name = format!("{kind}.{ext}");
        let bytes = fs::read(dir.join(&name)).unwrap();
        assert_eq!(files[&name]["rows"], n as u64, "{name}");
        assert_eq!(files[&name]["sha256"], hex::encode(Sha256::digest(&bytes)), "{name}");
    }
    let mut on_disk = expected.clone();
    on_disk.push("manifest.json".into());
    on_disk.sort();
    assert_eq!(entries(dir), on_disk);
}

#[cfg(unix)]
fn check_private(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(dir), 0o700, "{}", dir.display());
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        assert_eq!(mode(&p), 0o600, "{}", p.display());
    }
}

#[cfg(not(unix))]
fn check_private(_: &Path) {}

// ----- sandbox, end to end ---------------------------------------------------

/// The awkward site behind a page cap of 7, a rate limit and 10 % injected
/// 503s: both formats give back exactly the seed, the manifest agrees with
/// the files, and the files are private.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn snapshot_of_an_awkward_faulty_site_equals_its_seed_in_jsonl_and_csv() {
    let tmp = tempfile::tempdir().unwrap();
    let seed = awkward_site();
    write_seed(&tmp.path().join("seed"), &seed);
    let sb = sandbox_from(
        &tmp.path().join("seed"),
        SandboxConfig {
            page_cap: 7,
            rate_limit: Some(120.0),
            fail_rate: 0.1,
            service_desks: vec!["30".into()],
            ..SandboxConfig::default()
        },
    )
    .await;
    let client = client_for(&sb.url(), 300.0, 8, 10);
    let desks = ["1", "2", "10", "30"];

    let mut summaries = Vec::new();
    for (format, name) in [(Format::Jsonl, "snap-jsonl"), (Format::Csv, "snap-csv")] {
        let out = tmp.path().join(name);
        let summary = export(&client, &common::export_options(&out, format, &sb.url()))
            .await
            .unwrap_or_else(|e| panic!("{format:?}: {e}"));
        let snap = read_snapshot(&out);
        let orgs = if format == Format::Csv { common::csv_created(&seed.orgs) } else { seed.orgs.clone() };
        assert_eq!(snap.records.orgs, orgs, "{format:?}");
        assert_eq!(snap.records.members, seed.members, "{format:?}");
        assert_eq!(snap.records.properties, seed.properties, "{format:?}");
        assert_eq!(snap.records.links, seed.links, "{format:?}");
        check_manifest(&out, format, &sb.url(), &desks, &seed);
        check_private(&out);
        assert_eq!(summary.organizations, seed.orgs.len() as u64);
        assert_eq!(summary.members, seed.members.len() as u64);
        assert_eq!(summary.properties, seed.properties.len() as u64);
        assert_eq!(summary.service_desk_links, seed.links.len() as u64);
        assert!(summary.vanished_organizations.is_empty());
        assert_eq!(summary.out, out);
        summaries.push(summary);
    }
    // The CSV cells a spreadsheet would run are escaped on disk.
    let csv = fs::read_to_string(tmp.path().join("snap-csv/organizations.csv")).unwrap();
    assert!(csv.contains(",'=SUM(A1:A9),"), "{csv}");
    assert!(csv.contains(",'-minus,") && csv.contains(",'@at,") && csv.contains(",'+plus,"));
    assert!(csv.contains(",''apostrophe,") && csv.contains(",'''two apostrophes,"));
    let members = fs::read_to_string(tmp.path().join("snap-csv/members.csv")).unwrap();
    assert!(members.contains(",'=cmd@example.com,") && members.contains(",'-leading-dash,"));
    let props = fs::read_to_string(tmp.path().join("snap-csv/properties.csv")).unwrap();
    assert!(props.contains(",'-5\n") && props.contains(",'=formula-key,"));
    // No staging directory left beside the snapshots.
    assert_eq!(entries(tmp.path()), ["seed", "snap-csv", "snap-jsonl"]);

    // The faults were real, and the summary counted them.
    let stats = sb.stats();
    assert!(stats.injected_failures > 0, "{stats:?}");
    assert!(stats.rate_limited > 0, "{stats:?}");
    let retries: u64 = summaries.iter().map(|s| s.retries).sum();
    let requests: u64 = summaries.iter().map(|s| s.requests).sum();
    assert!(retries >= stats.injected_failures + stats.rate_limited, "{summaries:?} {stats:?}");
    assert_eq!(requests, stats.total, "{summaries:?} {stats:?}");
    assert!(summaries.iter().map(|s| s.rate_limited).sum::<u64>() > 0);
}

/// Two exports of an unchanged site are byte-identical; a sandbox seeded
/// from a snapshot exports the same bytes again, in both formats.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exports_are_deterministic_and_reseeding_round_trips() {
    let tmp = tempfile::tempdir().unwrap();
    write_seed(&tmp.path().join("seed"), &awkward_site());
    let sb = sandbox_from(
        &tmp.path().join("seed"),
        SandboxConfig { page_cap: 7, fail_rate: 0.05, ..SandboxConfig::default() },
    )
    .await;
    let client = client_for(&sb.url(), 10_000.0, 16, 10);
    for format in [Format::Jsonl, Format::Csv] {
        let a = tmp.path().join(format!("{format:?}-a"));
        let b = tmp.path().join(format!("{format:?}-b"));
        export(&client, &common::export_options(&a, format, &sb.url())).await.unwrap();
        export(&client, &common::export_options(&b, format, &sb.url())).await.unwrap();
        assert_eq!(data_files(&a), data_files(&b), "{format:?}");
        assert_eq!(data_files(&a).len(), 4);
        let strip = |dir: &Path| {
            let mut m = read_snapshot(dir).manifest;
            let o = m.as_object_mut().unwrap();
            o.remove("started_at");
            o.remove("finished_at");
            m
        };
        assert_eq!(strip(&a), strip(&b), "manifests differ beyond their times");

        // A new site seeded from the snapshot exports the same bytes.
        let again = sandbox_from(&a, SandboxConfig { page_cap: 7, ..SandboxConfig::default() }).await;
        let c = tmp.path().join(format!("{format:?}-c"));
        let client2 = client_for(&again.url(), 10_000.0, 16, 4);
        export(&client2, &common::export_options(&c, format, &again.url())).await.unwrap();
        assert_eq!(data_files(&a), data_files(&c), "{format:?} round trip");
        let (mut got, mut want) = (again.state(), sb.state());
        if format == Format::Csv {
            // CSV keeps `created` as ISO text only.
            got.organizations = common::csv_created(&got.organizations);
            want.organizations = common::csv_created(&want.organizations);
        }
        assert_eq!(got, want, "{format:?} round trip");
        again.shutdown().await;
    }
}

/// Pages needed for `n` items at page cap `cap`: the first page, then pages
/// asked from one position early (the overlap item that detects shifts), so
/// each later page brings `cap - 1` new items.
fn pages(n: u64, cap: u64) -> u64 {
    if n <= cap {
        1
    } else {
        1 + (n - cap).div_ceil(cap - 1)
    }
}

/// On a quiet site every call is made exactly once: no per-organization
/// GET, no property read twice, paging stops on `isLastPage`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn export_makes_the_minimal_number_of_requests() {
    let tmp = tempfile::tempdir().unwrap();
    let member_counts: BTreeMap<u64, u64> = [(1, 120), (2, 50), (3, 51), (4, 99), (5, 100)].into();
    let mut r = Records::default();
    for id in 1..=120u64 {
        let name = format!("Org {id}");
        r.orgs.push(OrgRecord { id, name: name.clone(), uuid: None, scim_managed: None, created: None });
        let m = member_counts.get(&id).copied().unwrap_or(id % 4);
        for j in 0..m {
            r.members.push(MemberRecord {
                organization: name.clone(),
                organization_id: id,
                account_id: format!("acct-{j:04}"),
                email: Some(format!("u{j}@example.com")),
                display_name: Some(format!("User {j}")),
            });
        }
        for k in 0..(id % 3) {
            r.properties.push(PropertyRecord {
                organization: name.clone(),
                organization_id: id,
                key: format!("key-{k}"),
                value: json!(k),
            });
        }
        for (desk, on) in [("1", true), ("2", id <= 5)] {
            if on {
                r.links.push(common::sandbox_link(name.clone(), id, desk));
            }
        }
    }
    sort_records(&mut r);
    write_seed(&tmp.path().join("seed"), &r);
    let sb = sandbox_from(
        &tmp.path().join("seed"),
        SandboxConfig { service_desks: vec!["3".into()], ..SandboxConfig::default() },
    )
    .await;
    let client = client_for(&sb.url(), 10_000.0, 8, 0);
    let out = tmp.path().join("snap");
    let summary = export(&client, &common::export_options(&out, Format::Jsonl, &sb.url())).await.unwrap();
    assert_eq!(read_snapshot(&out).records, r);

    let member_pages: u64 = (1..=120u64).map(|id| pages(member_counts.get(&id).copied().unwrap_or(id % 4), 50)).sum();
    // 3 + 1 + 2 + 2 + 3 for the big ones, 1 for each of the other 115.
    assert_eq!(member_pages, 126);
    let expected: BTreeMap<String, u64> = [
        ("GET /organization", pages(120, 50)),
        ("GET /organization/{id}/user", member_pages),
        ("GET /organization/{id}/property", 120),
        ("GET /organization/{id}/property/{key}", r.properties.len() as u64),
        ("GET /servicedesk", 1),
        ("GET /servicedesk/{id}/organization", pages(120, 50) + pages(5, 50) + pages(0, 50)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    assert_eq!(expected["GET /organization"], 3);
    let stats = sb.stats();
    assert_eq!(stats.by_route, expected);
    assert_eq!(stats.total, expected.values().sum::<u64>());
    assert_eq!(summary.requests, stats.total);
    assert_eq!((summary.retries, summary.rate_limited), (0, 0));
}

/// `--service-desk` limits the links (and the manifest) to the named desks.
#[tokio::test]
async fn named_service_desks_limit_the_links() {
    let tmp = tempfile::tempdir().unwrap();
    let seed = awkward_site();
    write_seed(&tmp.path().join("seed"), &seed);
    let sb = sandbox_from(&tmp.path().join("seed"), SandboxConfig::default()).await;
    let client = common::client(&sb.url());
    let out = tmp.path().join("snap");
    let mut opts = common::export_options(&out, Format::Jsonl, &sb.url());
    opts.service_desks = vec!["10".into(), "2".into(), "10".into()];
    export(&client, &opts).await.unwrap();
    let snap = read_snapshot(&out);
    let expected: Vec<DeskLinkRecord> = seed.links.iter().filter(|l| l.service_desk_id != "1").cloned().collect();
    assert_eq!(snap.records.links, expected);
    assert_eq!(snap.manifest["service_desks"], json!(["2", "10"]));
    // The desk list is read once, only for the desks' project keys and names.
    assert_eq!(sb.stats().by_route.get("GET /servicedesk").copied(), Some(1));

    // A named desk that does not exist fails the export, leaving nothing.
    let bad = tmp.path().join("bad");
    opts.out = bad.clone();
    opts.service_desks = vec!["404".into()];
    let err = export(&client, &opts).await.unwrap_err();
    assert!(matches!(err, ExportError::UnknownServiceDesk(ref d) if d == "404"), "{err}");
    assert_eq!(err.exit().code(), 3);
    assert_eq!(entries(tmp.path()), ["seed", "snap"]);
}

#[tokio::test]
async fn an_existing_out_is_refused_and_overwrite_replaces_it() {
    let tmp = tempfile::tempdir().unwrap();
    let seed = awkward_site();
    write_seed(&tmp.path().join("seed"), &seed);
    let sb = sandbox_from(&tmp.path().join("seed"), SandboxConfig::default()).await;
    let client = common::client(&sb.url());
    let out = tmp.path().join("snap");
    export(&client, &common::export_options(&out, Format::Jsonl, &sb.url())).await.unwrap();
    fs::write(out.join("stale.txt"), "from the old snapshot").unwrap();

    // Refused before a single request.
    sb.reset_stats();
    let err = export(&client, &common::export_options(&out, Format::Csv, &sb.url())).await.unwrap_err();
    assert!(matches!(err, ExportError::OutExists(ref p) if p == &out), "{err}");
    assert_eq!(err.exit().code(), 2);
    assert!(err.to_string().contains("--overwrite"), "{err}");
    assert_eq!(sb.stats().total, 0);
    assert!(out.join("stale.txt").exists());

    // --overwrite swaps the new snapshot in and removes the old one.
    let mut opts = common::export_options(&out, Format::Csv, &sb.url());
    opts.overwrite = true;
    export(&client, &opts).await.unwrap();
    assert!(!out.join("stale.txt").exists());
    let csv_seed = Records { orgs: common::csv_created(&seed.orgs), ..seed };
    assert_eq!(read_snapshot(&out).records, csv_seed);
    check_private(&out);
    assert_eq!(entries(tmp.path()), ["seed", "snap"]);

    // --overwrite never replaces a directory that is not a snapshot.
    let mine = tmp.path().join("mine");
    fs::create_dir(&mine).unwrap();
    fs::write(mine.join("thesis.tex"), "precious").unwrap();
    let mut opts = common::export_options(&mine, Format::Jsonl, &sb.url());
    opts.overwrite = true;
    let err = export(&client, &opts).await.unwrap_err();
    assert_eq!(err.exit().code(), 2, "{err}");
    assert_eq!(fs::read_to_string(mine.join("thesis.tex")).unwrap(), "precious");
    // Nor a file.
    let file = tmp.path().join("file");
    fs::write(&file, "x").unwrap();
    let err = export(&client, &common::export_options(&file, Format::Jsonl, &sb.url())).await.unwrap_err();
    assert!(matches!(err, ExportError::OutExists(_)));
    assert_eq!(entries(tmp.path()), ["file", "mine", "seed", "snap"]);
}

/// Reads that keep failing, bad credentials: an error with exit code 3, no
/// snapshot, no staging directory.
#[tokio::test]
async fn a_failed_export_leaves_nothing_behind() {
    let tmp = tempfile::tempdir().unwrap();
    write_seed(&tmp.path().join("seed"), &awkward_site());
    let parent = tmp.path().join("backups");
    fs::create_dir(&parent).unwrap();
    let sb = sandbox_from(&tmp.path().join("seed"), SandboxConfig::default()).await;

    // Every request answers 503; one retry each.
    sb.set_faults(jsm_orgs::sandbox::Faults { fail_rate: 1.0, ..Default::default() });
    let client = client_for(&sb.url(), 10_000.0, 8, 1);
    let out = parent.join("snap");
    let err = export(&client, &common::export_options(&out, Format::Jsonl, &sb.url())).await.unwrap_err();
    match &err {
        ExportError::Api(e) => assert_eq!((e.status(), e.attempts), (Some(503), 2)),
        other => panic!("{other}"),
    }
    assert_eq!(err.exit().code(), 3);
    assert!(entries(&parent).is_empty(), "{:?}", entries(&parent));

    // Fails after part of the site was read: org pages fine, then 503s.
    sb.set_faults(jsm_orgs::sandbox::Faults::default());
    let partial = tokio::spawn({
        let url = sb.url();
        let out = out.clone();
        async move {
            let client = client_for(&url, 400.0, 4, 1);
            export(&client, &common::export_options(&out, Format::Csv, &url)).await
        }
    });
    let member_reads = || sb.stats().by_route.get("GET /organization/{id}/user").copied().unwrap_or(0);
    while member_reads() < 5 && !partial.is_finished() {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    sb.set_faults(jsm_orgs::sandbox::Faults { fail_rate: 1.0, ..Default::default() });
    let err = partial.await.unwrap().unwrap_err();
    assert_eq!(err.exit().code(), 3, "{err}");
    assert!(entries(&parent).is_empty(), "{:?}", entries(&parent));
    assert!(member_reads() >= 5);

    // Bad credentials: fatal, stops at once.
    sb.set_faults(jsm_orgs::sandbox::Faults::default());
    sb.reset_stats();
    let bad = common::client_with(
        &sb.url(),
        Auth::Basic { email: common::EMAIL.into(), token: "wrong".into() },
        common::fast_retry(8),
        Duration::from_secs(5),
    );
    let started = std::time::Instant::now();
    let err = export(&bad, &common::export_options(&out, Format::Jsonl, &sb.url())).await.unwrap_err();
    match &err {
        ExportError::Api(e) => assert!(e.is_fatal() && e.attempts == 1, "{e:?}"),
        other => panic!("{other}"),
    }
    assert_eq!(err.exit().code(), 3);
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(sb.stats().total <= 2, "{:?}", sb.stats());
    assert!(entries(&parent).is_empty(), "{:?}", entries(&parent));
}

/// Organizations deleted (by another client) while the export pages the
/// list: deletions before the reader's position shift the pages, and no
/// surviving organization may be missed or duplicated.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_deletions_never_hide_a_surviving_organization() {
    let tmp = tempfile::tempdir().unwrap();
    let mut r = Records::default();
    for id in 1..=300u64 {
        let name = format!("Org {id}");
        r.orgs.push(OrgRecord { id, name: name.clone(), uuid: None, scim_managed: None, created: None });
        r.members.push(MemberRecord {
            organization: name.clone(),
            organization_id: id,
            account_id: format!("acct-{id}"),
            email: None,
            display_name: Some(format!("User {id}")),
        });
        r.links.push(common::sandbox_link(name, id, "1"));
    }
    write_seed(&tmp.path().join("seed"), &r);
    let sb = sandbox_from(
        &tmp.path().join("seed"),
        SandboxConfig { page_cap: 7, latency: Duration::from_millis(3), ..SandboxConfig::default() },
    )
    .await;
    let client = common::client(&sb.url());
    let deleter = common::client(&sb.url());
    let out = tmp.path().join("snap");
    let done = AtomicBool::new(false);
    let mut deleted = BTreeSet::new();

    let run = async {
        let result = export(&client, &common::export_options(&out, Format::Jsonl, &sb.url())).await;
        done.store(true, Ordering::SeqCst);
        result
    };
    let delete = async {
        // After the k-th organization page, delete organizations that page
        // k-1 already listed (shifting what follows) and one far ahead.
        for k in (2..=30u64).step_by(2) {
            while sb.stats().by_route.get("GET /organization").copied().unwrap_or(0) < k {
                if done.load(Ordering::SeqCst) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            // Several at once: the overlap item alone absorbs a single
            // shift, several between two page reads must be detected.
            let ids = [k * 3, k * 3 + 1, k * 3 + 2, 300 - k];
            let calls = ids.iter().map(|id| deleter.delete_organization(*id));
            for result in futures::future::join_all(calls).await {
                result.unwrap();
            }
            deleted.extend(ids);
        }
    };
    let (result, ()) = tokio::join!(run, delete);
    let summary = result.unwrap();
    assert!(!deleted.is_empty());

    let snap = read_snapshot(&out).records;
    let ids: Vec<u64> = snap.orgs.iter().map(|o| o.id).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "sorted, no duplicates");
    let after = sb.state();
    for org in &after.organizations {
        assert!(ids.contains(&org.id), "surviving organization {} missed", org.id);
    }
    for id in &ids {
        assert!(
            after.organizations.iter().any(|o| o.id == *id) || deleted.contains(id),
            "{id} neither on the site nor deleted"
        );
    }
    for id in &summary.vanished_organizations {
        assert!(deleted.contains(id) && !ids.contains(id), "{id}");
    }
    // Every organization in the snapshot comes with its member and link
    // (none of them was changed), and nothing refers to a missing one.
    let expect_members: Vec<&MemberRecord> = r.members.iter().filter(|m| ids.contains(&m.organization_id)).collect();
    assert_eq!(snap.members.iter().collect::<Vec<_>>(), expect_members);
    let link_ids: Vec<u64> = snap.links.iter().map(|l| l.organization_id).collect();
    assert!(link_ids.iter().all(|id| ids.contains(id)));
    // Re-reading the shifted pages cost fewer pages than were deleted.
    let org_pages = sb.stats().by_route["GET /organization"];
    let quiet = pages(300, 7);
    assert!(org_pages <= quiet + deleted.len() as u64, "{org_pages} vs {quiet}");
}

// ----- wiremock: exact requests ---------------------------------------------

fn org_json(id: u64) -> Value {
    json!({"id": id.to_string(), "name": format!("Org {id}"), "_links": {"self": "x"}})
}

fn page_json(start: u64, ids: &[u64], last: bool) -> Value {
    json!({
        "start": start,
        "limit": 3,
        "size": ids.len(),
        "isLastPage": last,
        "values": ids.iter().map(|i| org_json(*i)).collect::<Vec<_>>(),
    })
}

/// The per-organization endpoints of a quiet site with no members,
/// properties or desks.
async fn mount_empty_org_details(server: &MockServer) {
    Mock::given(method("GET"))
        .and(path_regex(r"^/rest/servicedeskapi/organization/\d+/user$"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "start": 0, "limit": 50, "size": 0, "isLastPage": true, "values": []
        })))
        .mount(server)
        .await;
    Mock::given(method("GET"))
        .and(path_regex(r"^/rest/servicedeskapi/organization/\d+/property$"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"keys": []})))
        .mount(server)
        .await;
    Mock::given(method("GET"))
        .and(path("/rest/servicedeskapi/servicedesk"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "start": 0, "limit": 50, "size": 1, "isLastPage": true, "values": [{"id": "7"}]
        })))
        .mount(server)
        .await;
}

async fn mount_org_page(server: &MockServer, route: &str, start: u64, ids: &[u64], last: bool) {
    Mock::given(method("GET"))
        .and(path(format!("/rest/servicedeskapi{route}")))
        .and(query_param("start", start.to_string()))
        .and(query_param("limit", "50"))
        .respond_with(ResponseTemplate::new(200).set_body_json(page_json(start, ids, last)))
        .expect(1)
        .mount(server)
        .await;
}

/// The `start` of every request to `route`, in order.
async fn starts(server: &MockServer, route: &str) -> Vec<u64> {
    let full = format!("/rest/servicedeskapi{route}");
    server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .filter(|r| r.url.path() == full)
        .map(|r| r.url.query_pairs().find(|(k, _)| k == "start").unwrap().1.parse().unwrap())
        .collect()
}

/// A server that caps pages at 3 whatever `limit` asks: `start` advances by
/// the values received (less the one overlap item), and paging stops on
/// `isLastPage`, for the organization list and a desk's list alike.
#[tokio::test]
async fn pages_advance_by_values_received_when_the_server_caps_them() {
    let server = MockServer::start().await;
    mount_empty_org_details(&server).await;
    mount_org_page(&server, "/organization", 0, &[1, 2, 3], false).await;
    mount_org_page(&server, "/organization", 2, &[3, 4, 5], false).await;
    mount_org_page(&server, "/organization", 4, &[5, 6], true).await;
    mount_org_page(&server, "/servicedesk/7/organization", 0, &[2, 4, 6], false).await;
    mount_org_page(&server, "/servicedesk/7/organization", 2, &[6], true).await;
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("snap");
    let summary = export(&common::client(&server.uri()), &common::export_options(&out, Format::Jsonl, &server.uri()))
        .await
        .unwrap();
    assert_eq!(starts(&server, "/organization").await, [0, 2, 4]);
    assert_eq!(starts(&server, "/servicedesk/7/organization").await, [0, 2]);
    let snap = read_snapshot(&out).records;
    let ids: Vec<u64> = snap.orgs.iter().map(|o| o.id).collect();
    assert_eq!(ids, [1, 2, 3, 4, 5, 6]);
    let links: Vec<(u64, &str)> = snap.links.iter().map(|l| (l.organization_id, l.service_desk_id.as_str())).collect();
    assert_eq!(links, [(2, "7"), (4, "7"), (6, "7")]);
    // 3 org pages + 6 × (members + property keys) + 1 desk list + 2 desk pages.
    assert_eq!(summary.requests, 3 + 12 + 1 + 2);
    server.verify().await;
}

/// A scripted site where organization 1 is deleted right after the first
/// page (so later pages shift left), another organization appears at the
/// front later (shifting right), and a property vanishes between its key
/// list and its value. Organization 1 is left out with a warning, the shift
/// is re-read, nothing is duplicated, the missing property is just absent.
#[tokio::test]
async fn deletions_mid_export_are_detected_left_out_and_reported() {
    let server = MockServer::start().await;
    // Organization 1 is gone by the time its details are read.
    for tail in ["user", "property"] {
        Mock::given(method("GET"))
            .and(path(format!("/rest/servicedeskapi/organization/1/{tail}")))
            .respond_with(ResponseTemplate::new(404).set_body_json(json!({
                "errorMessage": "The organization with id 1 does not exist.",
                "i18nErrorMessage": {"i18nKey": "sd.organization.error.not.found", "parameters": []}
            })))
            .with_priority(1)
            .mount(&server)
            .await;
    }
    Mock::given(method("GET"))
        .and(path("/rest/servicedeskapi/organization/3/property"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "keys": [{"key": "kept", "self": "x"}, {"key": "gone", "self": "x"}]
        })))
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/rest/servicedeskapi/organization/3/property/kept"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"key": "kept", "value": {"v": [1]}})))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/rest/servicedeskapi/organization/3/property/gone"))
        .respond_with(ResponseTemplate::new(404).set_body_json(json!({"errorMessage": "gone"})))
        .expect(1)
        .mount(&server)
        .await;
    mount_empty_org_details(&server).await;
    // The list is [1..=9] for the first page, [2..=9] after 1 is deleted,
    // and [10, 2..=9] once 10 appears at the front.
    mount_org_page(&server, "/organization", 0, &[1, 2, 3], false).await;
    mount_org_page(&server, "/organization", 2, &[4, 5, 6], false).await; // shifted: 4 unseen
    mount_org_page(&server, "/organization", 1, &[3, 4, 5], false).await; // back up one: 3 seen
    mount_org_page(&server, "/organization", 3, &[5, 6, 7], false).await;
    mount_org_page(&server, "/organization", 5, &[6, 7, 8], false).await; // 10 arrived in front
    mount_org_page(&server, "/organization", 7, &[8, 9], true).await;
    mount_org_page(&server, "/servicedesk/7/organization", 0, &[1, 3], true).await;

    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("snap");
    let summary = export(&common::client(&server.uri()), &common::export_options(&out, Format::Csv, &server.uri()))
        .await
        .unwrap();
    assert_eq!(starts(&server, "/organization").await, [0, 2, 1, 3, 5, 7]);
    assert_eq!(summary.vanished_organizations, [1]);
    let text = summary.to_string();
    assert!(
        text.contains("warning") && text.contains("deleted while the export ran") && text.contains(": 1"),
        "{text}"
    );
    let snap = read_snapshot(&out).records;
    let ids: Vec<u64> = snap.orgs.iter().map(|o| o.id).collect();
    assert_eq!(ids, [2, 3, 4, 5, 6, 7, 8, 9]);
    assert_eq!(
        snap.properties,
        [PropertyRecord {
            organization: "Org 3".into(),
            organization_id: 3,
            key: "kept".into(),
            value: json!({"v": [1]}),
        }]
    );
    assert_eq!(snap.links, [DeskLinkRecord::by_id("Org 3", 3, "7")]);
    assert_eq!(summary.organizations, 8);
    server.verify().await;
}

#[test]
fn summary_display_names_counts_and_warnings() {
    let s = ExportSummary {
        organizations: 3,
        members: 10,
        properties: 4,
        service_desk_links: 5,
        vanished_organizations: vec![7, 9],
        requests: 40,
        retries: 2,
        rate_limited: 1,
        busiest: None,
        elapsed: Duration::from_millis(1500),
        out: PathBuf::from("/backups/x"),
        removed_snapshots: vec![PathBuf::from("/backups/w")],
    };
    let text = s.to_string();
    for needle in [
        "/backups/x",
        "3 organizations",
        "10 members",
        "4 properties",
        "5 service desk links",
        "40 requests",
        "2 retries",
        "1 rate limited",
        "elapsed 1.50s",
        "7, 9",
    ] {
        assert!(text.contains(needle), "{needle:?} not in {text}");
    }
    assert!(text.ends_with(": 7, 9\n"), "{text:?}");
    assert!(text.contains("removed the older snapshot /backups/w (--keep)\n"), "{text:?}");
    let quiet = ExportSummary { vanished_organizations: vec![], removed_snapshots: vec![], ..s };
    let quiet = quiet.to_string();
    assert!(!quiet.contains("warning") && quiet.ends_with("1.50s\n") && quiet.lines().count() == 3, "{quiet:?}");
}
