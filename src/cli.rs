//! Command-line syntax (clap derive) and the help texts, nothing else.
//!
//! Owns flag names, help texts (examples, exit codes, input columns, the
//! environment variables each flag reads) and nothing that checks values:
//! `settings` turns this into a checked `Settings`, so code below the CLI never
//! sees clap types. Secrets (`JSM_API_TOKEN`, `JSM_BEARER_TOKEN`) are
//! deliberately not clap `env` fields, so their values can never show up in
//! `--help` or errors.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// The exit codes, shared by every command's `--help`.
macro_rules! exit_codes {
    () => {
        "Exit codes:
  0  every row succeeded or was already in place; export complete
  1  the run finished but some rows failed (see the report)
  2  bad usage or unreadable input: nothing was sent
  3  aborted: bad credentials or permission, site unreachable, local I/O error, or
     interrupted (Ctrl-C, SIGTERM, SIGHUP: the report is still written)"
    };
}

/// Credentials and the environment, shared by the commands that talk to a site.
macro_rules! environment {
    () => {
        "Environment:
  JSM_SITE          the site, as --site
  JSM_EMAIL         Basic auth: the account's email, with JSM_API_TOKEN or --token-file
  JSM_API_TOKEN     Basic auth: a Cloud API token
  JSM_BEARER_TOKEN  Bearer auth: an OAuth 2.0 access token or a Data Center personal access token
  JSM_RATE          as --rate;  JSM_CONCURRENCY  as --concurrency
Secrets come only from the environment or --token-file: never from the command line, and
never printed, logged or written to a report."
    };
}

#[derive(Debug, Parser)]
#[command(
    name = "jsm-orgs",
    version,
    about = "Bulk import and export of Jira Service Management customer organizations",
    long_about = "Bulk import and export of Jira Service Management customer organizations: the \
                  organizations, their members (customers), their entity properties and their links to \
                  service desks, through the JSM REST API.",
    after_help = concat!(
        "Examples:
  jsm-orgs demo                                      # try it against the built-in sandbox
  jsm-orgs export --out backups/2026-12-06           # nightly backup
  jsm-orgs import customers/ --dry-run --report plan.csv
  jsm-orgs import crm.csv --create-customers         # members by email, from a CRM export
  jsm-orgs completions bash > ~/.local/share/bash-completion/completions/jsm-orgs

`jsm-orgs help COMMAND` shows a command's flags, input columns and examples.

",
        exit_codes!(),
        "\n\n",
        environment!()
    ),
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,

    /// Warnings and errors only; no progress display.
    #[arg(long, short, global = true, conflicts_with = "verbose", help_heading = "Global options")]
    pub quiet: bool,

    /// More log output (-v debug, -vv trace). Never shows secrets.
    #[arg(long, short, global = true, action = clap::ArgAction::Count, help_heading = "Global options")]
    pub verbose: u8,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write a complete, deterministic snapshot of the site's organizations.
    #[command(after_help = concat!(
        "Examples:
  jsm-orgs export --out backups/$(date +%F)                  # JSONL snapshot
  jsm-orgs export --out backups/$(date +%F)-csv --format csv
  jsm-orgs export --out snap --service-desk 10001,10002 --overwrite

A snapshot is a directory: organizations, members, properties, service_desks (.jsonl or
.csv) and manifest.json (row counts and sha256 of every file). It is written to a temporary
directory beside --out and renamed into place only when complete.

",
        exit_codes!(),
        "\n\n",
        environment!()
    ))]
    Export(ExportArgs),
    /// Make the site match the input files (organizations, members, properties, desk links).
    #[command(after_help = concat!(
        "Examples:
  jsm-orgs import customers/ --dry-run --report plan.csv    # read-only: what would change
  jsm-orgs import customers/ --report result.csv            # apply
  jsm-orgs import crm.csv --create-customers                # members by email
  jsm-orgs import backups/2026-11-28                        # restore a snapshot

Input (CSV with a header row, or JSONL); a row's kind comes from its columns:
  organizations   name                                      action: upsert | delete
  members         organization, account_id or email         action: add | remove
                  (+ display_name)
  properties      organization, key, value (JSON)           action: set | delete
  service_desks   organization, service_desk_id             action: link | unlink
`organization_id` may replace `organization`. The first action is the default.

Report: one row per input row, in input order (CSV, or JSONL when FILE ends in .jsonl),
columns source,kind,action,organization,organization_id,target,outcome,http_status,attempts,
message. Without --report it is jsm-orgs-report-<UTC time>.csv in the current directory.
An existing report file is replaced. Finished rows are appended to FILE.partial while the
run goes, so a killed run keeps them.

",
        exit_codes!(),
        "\n\n",
        environment!()
    ))]
    Import(ImportArgs),
    /// Check that a snapshot is exactly what the export wrote (sha256, row counts, records).
    #[command(after_help = "Examples:
  jsm-orgs verify backups/2026-12-06
  jsm-orgs verify backups/2026-12-06 --json

Checks manifest.json (format and version), that each of the four data files it lists is
present with the sha256 and row count it records and that every record parses, and that
no other data file sits in the folder. `import` of a snapshot folder does this first.

Exit codes:
  0  intact
  1  damaged: each damaged file is named
  2  not a snapshot (no or unreadable manifest.json, unknown format version)")]
    Verify(VerifyArgs),
    /// What changed between two snapshots (JSONL or CSV, in any mix).
    #[command(after_help = "Examples:
  jsm-orgs diff backups/2026-12-05 backups/2026-12-06              # CSV rows on stdout
  jsm-orgs diff backups/2026-12-05 backups/2026-12-06 --report night.csv
  jsm-orgs diff prod-snap staging-snap --across-sites --json

Records match by organization id, so a rename is one `changed` row. Report columns:
kind,change,organization,organization_id,target,old,new with kind one of organizations,
members, properties, service_desks and change one of added, removed, changed; an
organization's removal also lists its members, properties and desk links as removed.
The counts per kind go to stderr. Snapshots of two sites are refused unless
--across-sites (organizations then match by name, desks by project key).

Exit codes:
  0  identical
  1  different
  2  unreadable snapshot, records out of export order, or two sites without --across-sites")]
    Diff(DiffArgs),
    /// Run the local sandbox site (the embedded default) until Ctrl-C.
    #[command(after_help = "Examples:
  jsm-orgs sandbox                                            # empty site on 127.0.0.1:8080
  jsm-orgs sandbox --seed backups/2026-11-28 --service-desks 10001=SUP,10002=ITS:IT
  jsm-orgs sandbox --latency-ms 150 --rate-limit 100 --fail-rate 0.02

It prints its URL and the credentials it accepts.")]
    Sandbox(SandboxArgs),
    /// Import the bundled samples into an in-process sandbox, then export it.
    Demo(DemoArgs),
    /// Print a shell completion script (or `man` for the man page) on stdout.
    #[command(after_help = "Examples:
  jsm-orgs completions bash > ~/.local/share/bash-completion/completions/jsm-orgs
  jsm-orgs completions zsh > \"${fpath[1]}/_jsm-orgs\"
  jsm-orgs completions fish > ~/.config/fish/completions/jsm-orgs.fish
  jsm-orgs completions man > /usr/local/share/man/man1/jsm-orgs.1")]
    Completions(CompletionsArgs),
}

/// Connection options shared by `export` and `import`.
#[derive(Debug, Args, Clone)]
pub struct ConnArgs {
    /// Site base URL: https://acme.atlassian.net, https://api.atlassian.com/ex/jira/{cloudId}
    /// (scoped tokens, OAuth), or a Data Center base.
    #[arg(long, env = "JSM_SITE", help_heading = "Site")]
    pub site: Option<String>,

    /// Read the API token (with JSM_EMAIL) or bearer token (without) from this file.
    #[arg(long, value_name = "PATH", help_heading = "Site")]
    pub token_file: Option<PathBuf>,

    /// Optional ceiling on total requests per second (a shared tenant). Without it each endpoint × method is
    /// paced on its own at the site's limit (Jira's defaults GET/POST 100, PUT/DELETE 50, learned from the site).
    #[arg(long, env = "JSM_RATE", value_name = "N", help_heading = "Pacing")]
    pub rate: Option<f64>,

    /// Optional cap on requests in flight (default: enough to keep every endpoint at its rate at the observed latency).
    #[arg(long, env = "JSM_CONCURRENCY", value_name = "N", help_heading = "Pacing")]
    pub concurrency: Option<usize>,

    /// Retries of one call on 429, 5xx, timeouts and connection errors.
    #[arg(long, default_value_t = 8, help_heading = "Pacing")]
    pub max_retries: u32,

    /// Per-request timeout in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 30.0, help_heading = "Pacing")]
    pub timeout: f64,

    /// Stop the run (exit 3, "site unreachable") when no request could
    /// connect for this many seconds.
    #[arg(long, value_name = "SECS", default_value_t = 10.0, help_heading = "Pacing")]
    pub unreachable_after: f64,

    /// Print one JSON summary object on stdout (human summary stays on stderr).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The snapshot directory.
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,

    /// Print one JSON object on stdout (human lines stay on stderr).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct DiffArgs {
    /// The older snapshot directory.
    #[arg(value_name = "OLD")]
    pub old: PathBuf,

    /// The newer snapshot directory.
    #[arg(value_name = "NEW")]
    pub new: PathBuf,

    /// Write the changes to FILE (CSV, or JSONL when it ends in .jsonl) instead of CSV on stdout.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,

    /// The snapshots are of two sites: match organizations by name and desks by project key.
    #[arg(long)]
    pub across_sites: bool,

    /// Print one JSON summary object on stdout (without --report, no change rows are printed).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FormatArg {
    Jsonl,
    Csv,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Snapshot directory to create.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,

    /// Data file format.
    #[arg(long, value_enum, default_value_t = FormatArg::Jsonl)]
    pub format: FormatArg,

    /// Export only the links of these service desks (repeatable or comma-separated; default: every desk).
    #[arg(long = "service-desk", value_name = "ID", value_delimiter = ',')]
    pub service_desks: Vec<String>,

    /// Replace an existing --out directory (only a snapshot or an empty directory).
    #[arg(long)]
    pub overwrite: bool,

    /// CSV files start with a UTF-8 byte order mark, so Excel reads them as UTF-8.
    #[arg(long)]
    pub excel: bool,

    /// After the export, keep only the newest N snapshots of this site beside --out (older ones this tool wrote are removed).
    #[arg(long, value_name = "N")]
    pub keep: Option<usize>,

    #[command(flatten)]
    pub conn: ConnArgs,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// Input files or directories (every *.csv / *.jsonl in a directory).
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,

    /// Read the site and report the plan without writing anything.
    #[arg(long)]
    pub dry_run: bool,

    /// Report file (CSV, or JSONL when it ends in .jsonl); replaced if it exists.
    /// [default: jsm-orgs-report-<UTC time>.csv in the current directory]
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,

    /// Also remove members, properties and desk links of named organizations that the input does not list.
    #[arg(long)]
    pub prune: bool,

    /// Validate every row first and send nothing if any row is invalid.
    #[arg(long)]
    pub strict: bool,

    /// Import a snapshot folder whose files no longer match its manifest (edited on purpose).
    #[arg(long)]
    pub allow_edited: bool,

    /// Account ids per add/remove-members call (1..=50).
    #[arg(long, default_value_t = 50)]
    pub chunk_size: usize,

    /// Create a portal-only customer for each email (members rows) the site has no account for.
    #[arg(long)]
    pub create_customers: bool,

    #[command(flatten)]
    pub conn: ConnArgs,
}

#[derive(Debug, Args)]
pub struct SandboxArgs {
    /// Address to listen on (loopback only).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: String,

    /// Seed the site from a snapshot directory.
    #[arg(long, value_name = "DIR")]
    pub seed: Option<PathBuf>,

    /// Service desks the site knows besides those in the seed: ID, ID=KEY or ID=KEY:NAME
    /// (repeatable or comma-separated; default key SD<ID>).
    #[arg(long, value_delimiter = ',', value_name = "ID[=KEY[:NAME]]")]
    pub service_desks: Vec<String>,

    /// Added latency per request, in milliseconds.
    #[arg(long, default_value_t = 0)]
    pub latency_ms: u64,

    /// Requests per second for the whole site before answering 429 (a tenant quota: jira-quota-tenant-based).
    #[arg(long, value_name = "RPS")]
    pub rate_limit: Option<f64>,

    /// Per endpoint × method limits (429 jira-burst-based): `jira` (GET=100,POST=100,PUT=50,DELETE=50), `off`,
    /// or METHOD=RPS and "METHOD /route/template=RPS" items, comma-separated.
    #[arg(long, value_name = "LIMITS", default_value = "jira")]
    pub endpoint_limits: String,

    /// Probability (0..=1) of an injected 503.
    #[arg(long, default_value_t = 0.0)]
    pub fail_rate: f64,

    /// Page size cap of list calls.
    #[arg(long, default_value_t = 50)]
    pub page_cap: usize,

    /// Customer list (CSV: email, display_name, account_id, hidden); then only known people exist.
    #[arg(long, value_name = "FILE")]
    pub customers: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Where to write the report and snapshot (default: a temporary directory, removed at the end).
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CompletionShell {
    Bash,
    Zsh,
    Fish,
    Powershell,
    Elvish,
    /// The roff man page.
    Man,
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell (or `man`).
    #[arg(value_enum)]
    pub shell: CompletionShell,
}
