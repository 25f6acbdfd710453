//! Hostile input end to end: one directory holding every kind of bad file and
//! row the proof issue lists, imported into the sandbox. Each bad row fails
//! with a `file:line` message naming its field; every other row is applied;
//! the report has one row per input row, in input order.

use std::path::Path;

use jsm_orgs::import::import;
use jsm_orgs::sandbox::{Sandbox, SandboxConfig};
use jsm_orgs::settings::ImportOptions;
use serde_json::{json, Value};

use crate::common::{client, content_of};

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join(name), bytes).unwrap();
}

/// (source, outcome, message fragment) of each JSONL report line.
fn report(path: &Path) -> Vec<(String, String, String)> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            let s = |k: &str| v[k].as_str().unwrap_or_default().to_string();
            (s("source"), s("outcome"), s("message"))
        })
        .collect()
}

#[tokio::test]
async fn every_hostile_row_fails_alone_and_the_rest_is_applied() {
    let sb = Sandbox::start(SandboxConfig { service_desks: vec!["10001".into()], ..Default::default() }).await.unwrap();
    let c = client(&sb.url());
    let existing = c.create_organization("Existing").await.unwrap().value.id;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("in");

    // a: BOM, CRLF, a quoted name with a comma, a quote and a newline; a 201-char name.
    let long = "N".repeat(201);
    write(&dir, "a_orgs.csv", format!("\u{feff}name\r\n\"Acme, \"\"Q\"\"\nLine 2\"\r\n{long}\r\n").as_bytes());
    // b: invalid UTF-8 in one row; unknown column (warning); identical duplicates;
    //    add and remove of one member (contradiction); unknown action.
    let mut members = b"organization,account_id,nickname\n".to_vec();
    members.extend_from_slice(b"Existing,m-1,x\nExisting,m-\xff,x\nExisting,m-2,x\nExisting,m-2,x\n");
    members.extend_from_slice(b"Existing,m-3,x\n");
    write(&dir, "b_members.csv", &members);
    write(&dir, "c_more.csv", b"organization,account_id,action\nExisting,m-3,remove\nExisting,m-4,promote\n");
    // d: empty file and header-only file.
    write(&dir, "d_empty.csv", b"");
    write(&dir, "e_header.csv", b"organization,key,value\n");
    // f: mixed kinds in one JSONL file; a 40 KB value; a 300-byte key; invalid JSON in
    //    CSV; an organization_id that does not exist; a desk that does not exist; unknown
    //    account ids inside one chunk with good ones.
    let big = json!({"blob": "x".repeat(40_000)});
    let jsonl = [
        json!({"organization": "Existing", "key": "ok", "value": {"n": 1}}),
        json!({"organization": "Existing", "key": "big", "value": big}),
        json!({"organization": "Existing", "key": "k".repeat(300), "value": 1}),
        json!({"organization": "Existing", "service_desk_id": "10001"}),
        json!({"organization": "Existing", "service_desk_id": "424242"}),
        json!({"organization_id": 999_999, "account_id": "m-9"}),
        json!({"organization": "Existing", "account_id": "unknown-a"}),
        json!({"organization": "Existing", "account_id": "m-5"}),
        json!({"organization": "Existing", "account_id": "unknown-b"}),
        json!({"name": "Second Org"}),
    ];
    let text: String = jsonl.iter().map(|v| format!("{v}\n")).collect();
    write(&dir, "f_mixed.jsonl", text.as_bytes());
    write(&dir, "g_props.csv", b"organization,key,value\nExisting,bad,{nope\n");

    let report_path = tmp.path().join("report.jsonl");
    let opts = ImportOptions {
        paths: vec![dir.clone()],
        dry_run: false,
        report: report_path.clone(),
        prune: false,
        strict: false,
        allow_edited: false,
        chunk_size: std::num::NonZeroUsize::new(50).unwrap(),
        progress: false,
        create_customers: false,
    };
    let summary = import(&c, &opts).await.unwrap();
    let warnings = summary.warnings.join("\n");
    assert!(warnings.contains("nickname"), "unknown column named: {warnings}");
    assert!(warnings.contains("d_empty.csv") && warnings.contains("e_header.csv"), "{warnings}");

    let rows = report(&report_path);
    let f = |name: &str, line: u32| format!("{}:{line}", dir.join(name).display());
    let expect: Vec<(String, &str, &str)> = vec![
        (f("a_orgs.csv", 2), "created", ""),
        (f("a_orgs.csv", 4), "failed", "field `name`"),
        (f("b_members.csv", 2), "added", ""),
        (f("b_members.csv", 3), "failed", "field `account_id`"),
        (f("b_members.csv", 4), "added", ""),
        (f("b_members.csv", 5), "added", ""),
        (f("b_members.csv", 6), "failed", "contradictory rows for member m-3"),
        (f("c_more.csv", 2), "failed", "contradictory rows for member m-3"),
        (f("c_more.csv", 3), "failed", "field `action`"),
        (f("f_mixed.jsonl", 1), "set", ""),
        (f("f_mixed.jsonl", 2), "failed", "field `value`"),
        (f("f_mixed.jsonl", 3), "failed", "field `key`"),
        (f("f_mixed.jsonl", 4), "linked", ""),
        (f("f_mixed.jsonl", 5), "failed", "service desk 424242 does not exist on the site"),
        (f("f_mixed.jsonl", 6), "failed", "organization_id 999999 does not exist"),
        (f("f_mixed.jsonl", 7), "failed", "unknown-a"),
        (f("f_mixed.jsonl", 8), "added", ""),
        (f("f_mixed.jsonl", 9), "failed", "unknown-b"),
        (f("f_mixed.jsonl", 10), "created", ""),
        (f("g_props.csv", 2), "failed", "field `value`"),
    ];
    assert_eq!(rows.len(), expect.len(), "{rows:#?}");
    for ((source, outcome, message), (want_source, want_outcome, fragment)) in rows.iter().zip(&expect) {
        assert_eq!((source, outcome.as_str()), (want_source, *want_outcome), "{message}");
        assert!(message.contains(fragment), "{source}: {message:?} lacks {fragment:?}");
        if outcome == "failed" && fragment.starts_with("field") {
            assert!(message.starts_with(&format!("{source}: ")), "{message}");
        }
    }

    let content = content_of(&sb.state());
    let orgs: Vec<&str> = content.orgs.iter().map(String::as_str).collect();
    assert_eq!(orgs, ["Acme, \"Q\"\nLine 2", "Existing", "Second Org"]);
    let members: Vec<&str> = content.members.iter().map(|(_, m)| m.as_str()).collect();
    assert_eq!(members, ["m-1", "m-2", "m-5"], "good ids of the rejected chunk were added");
    assert_eq!(content.properties.len(), 1);
    assert_eq!(content.links.len(), 1);
    assert_eq!(sb.state().organizations.iter().find(|o| o.name == "Existing").unwrap().id, existing);
    sb.shutdown().await;
}
