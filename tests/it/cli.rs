//! The operator's surface of the real binary: `--help` texts, shell
//! completions and the man page, `--json` summaries, the site-URL hint, and
//! SIGTERM / SIGHUP ending a run like Ctrl-C. Every test talks to 127.0.0.1.

use std::path::Path;
use std::process::{Output, Stdio};
use std::time::Duration;

use jsm_orgs::sandbox::{Sandbox, SandboxConfig};
use serde_json::Value;

use crate::common::cli;

fn s(p: &Path) -> String {
    p.to_str().expect("utf-8 path").to_string()
}

/// Run the binary to the end, capturing stdout and stderr.
async fn output(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        let mut c = cli(&args);
        c.stdout(Stdio::piped()).stderr(Stdio::piped());
        c.output().expect("the binary runs")
    })
    .await
    .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

async fn sandbox(latency_ms: u64) -> Sandbox {
    Sandbox::start(SandboxConfig {
        service_desks: vec!["10001".into()],
        latency: Duration::from_millis(latency_ms),
        ..SandboxConfig::default()
    })
    .await
    .expect("sandbox starts")
}

/// `orgs` organizations with `per_org` members each: one row per membership.
fn members_file(dir: &Path, orgs: usize, per_org: usize) -> std::path::PathBuf {
    let mut csv = String::from("organization,account_id\n");
    for i in 0..orgs {
        for j in 0..per_org {
            csv.push_str(&format!("Org {i:03},acct-{i:03}-{j}\n"));
        }
    }
    let p = dir.join("members.csv");
    std::fs::write(&p, csv).unwrap();
    p
}

#[tokio::test]
async fn help_shows_examples_exit_codes_columns_and_environment() {
    let o = output(vec!["import".into(), "--help".into()]).await;
    assert_eq!(o.status.code(), Some(0));
    let help = text(&o.stdout);
    for needle in [
        "Examples:",
        "jsm-orgs import customers/ --dry-run",
        "Exit codes:",
        "3  aborted",
        "account_id or email",
        "action: link | unlink",
        "JSM_BEARER_TOKEN",
        "jsm-orgs-report-<UTC time>.csv in the current directory",
        "An existing report file is replaced",
        "Global options:",
    ] {
        assert!(help.contains(needle), "{needle:?} not in import --help:\n{help}");
    }
    let o = output(vec!["--help".into()]).await;
    let top = text(&o.stdout);
    assert!(top.contains("Examples:") && top.contains("Exit codes:") && top.contains("completions"), "{top}");
    // Global flags appear once, under their own heading, in a verb's help.
    assert_eq!(help.matches("--quiet").count(), 1, "{help}");
}

#[tokio::test]
async fn completions_and_man_page_are_generated_from_the_real_flags() {
    let o = output(vec!["completions".into(), "bash".into()]).await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let bash = text(&o.stdout);
    assert!(bash.contains("complete -F") && bash.contains("--dry-run") && bash.contains("--chunk-size"), "{bash}");
    for shell in ["zsh", "fish", "powershell", "elvish"] {
        let o = output(vec!["completions".into(), shell.into()]).await;
        assert_eq!(o.status.code(), Some(0), "{shell}");
        assert!(text(&o.stdout).contains("dry-run"), "{shell}");
    }
    let o = output(vec!["completions".into(), "man".into()]).await;
    assert_eq!(o.status.code(), Some(0));
    let man = text(&o.stdout);
    assert!(man.contains(".TH") && man.contains("jsm\\-orgs"), "{man}");
    let o = output(vec!["completions".into(), "tcsh".into()]).await;
    assert_eq!(o.status.code(), Some(2), "an unknown shell is bad usage");
}

#[tokio::test]
async fn a_page_url_pasted_from_the_browser_is_refused_with_the_site_root() {
    let tmp = tempfile::tempdir().unwrap();
    let input = members_file(tmp.path(), 1, 1);
    let o = output(vec![
        "import".into(),
        s(&input),
        "--site".into(),
        "https://acme.atlassian.net/jira/servicedesk/projects/SD/queues".into(),
    ])
    .await;
    assert_eq!(o.status.code(), Some(2));
    let err = text(&o.stderr);
    assert!(err.contains("use the site root, e.g. https://acme.atlassian.net"), "{err}");
}

/// `--json`: exactly one JSON object on stdout, whose counts are those of
/// the report and whose exit code is the process's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_summary_parses_and_matches_the_report() {
    let tmp = tempfile::tempdir().unwrap();
    let sb = sandbox(0).await;
    let mut csv = String::from("organization,account_id\n");
    for i in 0..6 {
        csv.push_str(&format!("Acme,acct-{i}\n"));
    }
    csv.push_str("Acme,acct-unknown-1\n"); // refused by the site: one failed row
    csv.push_str("Acme,\n"); // invalid: no account id
    let input = tmp.path().join("m.csv");
    std::fs::write(&input, csv).unwrap();
    let report = tmp.path().join("r.jsonl");
    let o = output(vec![
        "import".into(),
        s(&input),
        "--site".into(),
        sb.url(),
        "--report".into(),
        s(&report),
        "--json".into(),
        "--rate".into(),
        "1000".into(),
    ])
    .await;
    let stdout = text(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o.stderr));
    assert_eq!(stdout.lines().count(), 1, "one object on one line: {stdout}");
    let v: Value = serde_json::from_str(&stdout).expect("stdout is JSON");
    let rows: Vec<Value> =
        std::fs::read_to_string(&report).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(v["command"], "import");
    assert_eq!(v["exit_code"], 1);
    assert_eq!(v["rows"], rows.len() as u64);
    assert_eq!(v["report"], s(&report));
    let count = |outcome: &str| rows.iter().filter(|r| r["outcome"] == outcome).count() as u64;
    assert_eq!(v["outcomes"]["added"], count("added"));
    assert_eq!(v["outcomes"]["failed"], count("failed"));
    assert_eq!((count("added"), count("failed")), (6, 2));
    assert_eq!(v["by_kind"]["members"]["added"], 6);
    assert_eq!(v["requests"], sb.stats().total);
    let failed: Vec<&str> =
        v["failed_rows"].as_array().unwrap().iter().map(|f| f["source"].as_str().unwrap()).collect();
    assert_eq!(failed.len(), 2);
    assert!(failed.iter().all(|f| f.contains("m.csv:")), "{failed:?}");
    // The human summary stays on stderr and lists the failed rows.
    let err = text(&o.stderr);
    assert!(err.contains("failed rows:") && err.contains("m.csv:9"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_summary_of_a_dry_run_splits_the_plan_by_action() {
    let tmp = tempfile::tempdir().unwrap();
    let sb = sandbox(0).await;
    let input = members_file(tmp.path(), 3, 1);
    let o = output(vec![
        "import".into(),
        s(&input),
        "--site".into(),
        sb.url(),
        "--report".into(),
        s(&tmp.path().join("plan.csv")),
        "--dry-run".into(),
        "--json".into(),
    ])
    .await;
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let v: Value = serde_json::from_str(&text(&o.stdout)).unwrap();
    assert_eq!(v["dry_run"], true);
    assert_eq!(v["planned"], serde_json::json!([{"kind": "members", "action": "add", "rows": 3}]));
    assert_eq!(sb.stats().writes, 0);
    let err = text(&o.stderr);
    assert!(err.contains("would      add 3 members"), "{err}");
}

/// SIGTERM (cron, systemd, `timeout`) and SIGHUP end a run like Ctrl-C:
/// exit 3, the final ordered report with one row per input row (no
/// `.partial` left), and the rows never sent say so.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_and_sighup_stop_the_run_with_a_final_report() {
    for signal in ["TERM", "HUP"] {
        let tmp = tempfile::tempdir().unwrap();
        let sb = sandbox(40).await;
        let input = members_file(tmp.path(), 40, 5);
        let report = tmp.path().join("r.csv");
        let partial = tmp.path().join("r.csv.partial");
        let args = vec![
            "import".to_string(),
            s(&input),
            "--site".into(),
            sb.url(),
            "--report".into(),
            s(&report),
            "--rate".into(),
            "50".into(),
        ];
        let child = {
            let mut c = cli(&args);
            c.stderr(Stdio::piped());
            c.spawn().unwrap()
        };
        // Wait until some member chunks are in (40 creates come first), then signal it.
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while sb.stats().writes < 45 {
            assert!(std::time::Instant::now() < deadline, "the import never started writing");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let pid = child.id().to_string();
        let killed = std::process::Command::new("kill").args([&format!("-{signal}"), &pid]).status().unwrap();
        assert!(killed.success());
        let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap()).await.unwrap();
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "SIG{signal}: {err}");
        assert!(err.contains(&format!("interrupted (SIG{signal})")), "{err}");
        assert!(!partial.exists(), "the ordered report replaced the .partial");
        let mut rd = csv::Reader::from_path(&report).unwrap();
        let rows: Vec<csv::StringRecord> = rd.records().map(|r| r.unwrap()).collect();
        assert_eq!(rows.len(), 200, "one row per input row");
        let done = rows.iter().filter(|r| matches!(&r[6], "created" | "added")).count();
        let unsent: Vec<&csv::StringRecord> = rows.iter().filter(|r| r[9].contains("not sent")).collect();
        assert!(done > 0 && !unsent.is_empty(), "SIG{signal}: {done} done, {} unsent", unsent.len());
        assert!(unsent.iter().all(|r| &r[8] == "0"), "unsent rows made no attempt");
        // Whatever the report says was done is on the site.
        let state = sb.state();
        let members: std::collections::HashSet<&str> = state.members.iter().map(|m| m.account_id.as_str()).collect();
        for r in rows.iter().filter(|r| &r[6] == "added") {
            assert!(members.contains(&r[5]), "{:?} reported added but not on the site", &r[5]);
        }
    }
}
