//! `jsm-orgs demo`: the newcomer's first run. Starts a sandbox in-process,
//! imports the bundled samples, re-runs the import to show it makes no
//! writes, exports a snapshot and verifies it, applies a night of changes,
//! exports again and diffs the two, and says where everything is.
//!
//! The samples are embedded in the binary so the demo runs from any
//! directory. It only wires together `sandbox`, `import` and `snapshot`; it
//! adds no behaviour of its own that the real commands lack.

use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use crate::api::RetryPolicy;
use crate::api::{Auth, Client, ClientConfig};
use crate::cmd::import::finish;
use crate::error::Exit;
use crate::sandbox::{Sandbox, SandboxConfig, SandboxCredentials};
use crate::settings::ImportOptions;
use crate::snapshot::{DiffOptions, ExportOptions, Format};
use crate::throttle::{Throttle, ThrottleConfig};

/// The bundled samples: (file name, contents).
pub const SAMPLES: [(&str, &str); 5] = [
    ("organizations.csv", include_str!("../samples/organizations.csv")),
    ("members.csv", include_str!("../samples/members.csv")),
    ("properties.jsonl", include_str!("../samples/properties.jsonl")),
    ("service_desks.csv", include_str!("../samples/service_desks.csv")),
    (CRM_SAMPLE, include_str!("../samples/crm/customers.csv")),
];

/// A CRM export naming people by email (`Organization,Email,Full name`), in
/// its own folder: importing `samples/` alone leaves it out.
pub const CRM_SAMPLE: &str = "crm/customers.csv";

/// The service desks the samples link organizations to.
pub const SAMPLE_DESKS: [&str; 2] = ["10001", "10002"];

/// The sample desks with their project keys and names (`ID=KEY:NAME`).
const SAMPLE_DESK_SPECS: [&str; 2] = ["10001=SUP:Customer Support", "10002=ITS:IT Help"];

/// The night of changes the demo applies between its two exports.
const NIGHT: [(&str, &str); 2] = [
    (
        "members.csv",
        "organization,account_id,action\n\"Acme, Inc.\",712020:6e27858f-0c4d-8877-c743-b4d96e27858f,remove\n",
    ),
    (
        "properties.jsonl",
        "{\"organization\": \"Acme, Inc.\", \"key\": \"crm.account\", \"value\": {\"tier\": \"platinum\"}}\n",
    ),
];

/// Run the demo. Without `dir` its files go to a temporary directory that is
/// removed at the end; with `dir` they are kept there.
pub async fn run(dir: Option<PathBuf>, progress: bool) -> anyhow::Result<Exit> {
    match dir {
        Some(d) => {
            std::fs::create_dir_all(&d).with_context(|| format!("cannot create {}", d.display()))?;
            demo(&d, true, progress).await
        }
        None => {
            let tmp = tempfile::Builder::new().prefix("jsm-orgs-demo-").tempdir()?;
            let exit = demo(tmp.path(), false, progress).await;
            let path = tmp.path().to_path_buf();
            tmp.close().with_context(|| format!("cannot remove {}", path.display()))?;
            exit
        }
    }
}

/// Write the embedded samples into `dir`.
pub fn write_samples(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    for (name, text) in SAMPLES {
        let path = dir.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(path, text)?;
    }
    Ok(())
}

async fn demo(base: &Path, keep: bool, progress: bool) -> anyhow::Result<Exit> {
    let samples = base.join("samples");
    write_samples(&samples).with_context(|| format!("cannot write samples to {}", samples.display()))?;

    let creds = SandboxCredentials::default();
    let sandbox = Sandbox::start(SandboxConfig {
        service_desks: SAMPLE_DESK_SPECS.iter().map(|s| s.to_string()).collect(),
        latency: Duration::from_millis(5),
        credentials: creds.clone(),
        ..SandboxConfig::default()
    })
    .await
    .context("cannot start the sandbox")?;
    eprintln!("sandbox site: {} (in-process, service desks {})", sandbox.url(), SAMPLE_DESKS.join(", "));

    let client = Client::new(
        ClientConfig {
            site: url::Url::parse(&sandbox.url())?,
            auth: Auth::Basic { email: creds.email.clone(), token: creds.api_token.clone() },
            timeout: Duration::from_secs(30),
            retry: RetryPolicy::default(),
        },
        Arc::new(Throttle::new(&ThrottleConfig::default())),
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;

    let crm = samples.join(CRM_SAMPLE);
    let opts = ImportOptions {
        paths: vec![samples.clone(), crm.clone()],
        dry_run: false,
        report: base.join("report.csv"),
        prune: false,
        strict: false,
        allow_edited: false,
        chunk_size: NonZeroUsize::new(crate::settings::MAX_CHUNK_SIZE).expect("non-zero"),
        progress,
        create_customers: true,
    };
    eprintln!("\n== import {} and {} (people by email, --create-customers)", samples.display(), crm.display());
    let first = outcome(finish(crate::import::import(&client, &opts).await, false));

    eprintln!("\n== import again (a re-run must change nothing)");
    let writes_before = sandbox.stats().writes;
    let rerun_opts = ImportOptions { report: base.join("report-rerun.csv"), ..opts.clone() };
    let second = outcome(finish(crate::import::import(&client, &rerun_opts).await, false));
    let rerun_writes = sandbox.stats().writes - writes_before;
    eprintln!("  writes made by the re-run: {rerun_writes}");

    let out = base.join("snapshot");
    let export = export_and_verify(&client, &sandbox, &out, progress).await;
    let night = night_and_diff(&client, &sandbox, base, &out, &opts, progress).await;
    sandbox.shutdown().await;

    if keep {
        eprintln!("\nfiles:");
        eprintln!("  samples   {}", samples.display());
        eprintln!("  report    {}", opts.report.display());
        eprintln!("  re-run    {}", rerun_opts.report.display());
        eprintln!("  snapshot  {}", out.display());
        eprintln!("  changes   {}", base.join("changes.csv").display());
        eprintln!(
            "\nnext: `{} sandbox --seed {}` serves that snapshot; point `import`/`export` at it with \
             --site http://127.0.0.1:8080 and JSM_EMAIL={} JSM_API_TOKEN=<the sandbox token it prints>",
            this_program(),
            out.display(),
            creds.email
        );
    } else {
        eprintln!(
            "\nThe demo's files were in a temporary directory, now removed; `{} demo --dir DIR` keeps them.",
            this_program()
        );
    }
    let exit = [first, second, export, night].into_iter().max().unwrap_or(Exit::Ok);
    if rerun_writes > 0 && exit == Exit::Ok {
        eprintln!("error: the re-run made {rerun_writes} writes; it should make none");
        return Ok(Exit::Failed);
    }
    Ok(exit)
}

/// Export the site into `out`, then verify the snapshot.
async fn export_and_verify(client: &Client, sandbox: &Sandbox, out: &Path, progress: bool) -> Exit {
    eprintln!("\n== export to {}", out.display());
    let opts = ExportOptions {
        out: out.to_path_buf(),
        format: Format::Jsonl,
        service_desks: Vec::new(),
        overwrite: true,
        site: sandbox.url(),
        progress,
        excel: false,
        keep: None,
    };
    match crate::snapshot::export(client, &opts).await {
        Ok(s) => eprint!("{s}"),
        Err(e) => {
            eprintln!("error: {e}");
            return e.exit();
        }
    }
    eprintln!("\n== verify {}", out.display());
    match crate::snapshot::verify(out) {
        Ok(report) => {
            eprint!("{}", report.human());
            if report.is_intact() {
                Exit::Ok
            } else {
                Exit::Failed
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            Exit::Usage
        }
    }
}

/// A night on the site (a member leaves, a property changes, an
/// organization is renamed in the UI), a second export, and `diff`.
async fn night_and_diff(
    client: &Client,
    sandbox: &Sandbox,
    base: &Path,
    before: &Path,
    opts: &ImportOptions,
    progress: bool,
) -> Exit {
    eprintln!("\n== a night of changes: a member leaves, a property changes, an organization is renamed");
    let night = base.join("night");
    let written = std::fs::create_dir_all(&night)
        .and_then(|()| NIGHT.iter().try_for_each(|(name, text)| std::fs::write(night.join(name), text)));
    if let Err(e) = written {
        eprintln!("error: cannot write {}: {e}", night.display());
        return Exit::Aborted;
    }
    let night_opts = ImportOptions { paths: vec![night], report: base.join("report-night.csv"), ..opts.clone() };
    let changed = outcome(finish(crate::import::import(client, &night_opts).await, false));
    let renamed = sandbox.state().organizations.iter().find(|o| o.name.starts_with("O'Brien")).map(|o| o.id);
    if let Some(id) = renamed {
        let _ = sandbox.rename_organization(id, "O'Brien & Sons Plumbing Ltd");
    }
    let after = base.join("snapshot-next");
    let exported = export_and_verify(client, sandbox, &after, progress).await;

    let changes = base.join("changes.csv");
    eprintln!("\n== diff {} {} --report {}", before.display(), after.display(), changes.display());
    let diffed =
        DiffOptions { old: before.to_path_buf(), new: after, report: Some(changes.clone()), across_sites: false };
    let diff = match crate::snapshot::diff(&diffed, &mut std::io::sink()) {
        Ok(summary) => {
            eprint!("{summary}");
            std::fs::read_to_string(&changes).unwrap_or_default().lines().for_each(|l| eprintln!("  | {l}"));
            // Different is what a night of changes should give.
            if summary.identical() {
                Exit::Failed
            } else {
                Exit::Ok
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            Exit::Usage
        }
    };
    [changed, exported, diff].into_iter().max().unwrap_or(Exit::Ok)
}

/// An import's exit, its error (if any) already printed.
fn outcome(r: Result<Exit, crate::Error>) -> Exit {
    r.unwrap_or_else(|e| {
        eprintln!("error: {e}");
        e.exit()
    })
}

/// How to run this very binary again: `jsm-orgs` when it is installed on the
/// PATH, else its path (after `cargo run`, `target/debug/jsm-orgs`).
fn this_program() -> String {
    let Ok(exe) = std::env::current_exe() else { return "jsm-orgs".into() };
    let on_path =
        std::env::var_os("PATH").map(|p| std::env::split_paths(&p).any(|d| d.join("jsm-orgs") == exe)).unwrap_or(false);
    if on_path {
        return "jsm-orgs".into();
    }
    let shown = std::env::current_dir().ok().and_then(|cwd| exe.strip_prefix(cwd).ok().map(Path::to_path_buf));
    shown.unwrap_or(exe).display().to_string()
}
