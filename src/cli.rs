//! Command-line syntax (clap derive) and nothing else.
//!
//! Owns flag names, help texts and the environment variables that feed flags.
//! It must not validate combinations or read secrets: `settings` turns this
//! into a checked `Settings`, so code below the CLI never sees clap types.
//! Secrets (`JSM_API_TOKEN`, `JSM_BEARER_TOKEN`) are deliberately not clap
//! `env` fields, so their values can never show up in `--help` or errors.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "jsm-orgs",
    version,
    about = "Bulk import and export of Jira Service Management customer organizations",
    after_help = "Credentials come from JSM_EMAIL + JSM_API_TOKEN (Basic), JSM_BEARER_TOKEN (OAuth / Data Center PAT) \
                  or --token-file; never from the command line."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,

    /// No progress bars; warnings and errors only.
    #[arg(long, short, global = true, conflicts_with = "verbose")]
    pub quiet: bool,

    /// More log output (repeat for trace).
    #[arg(long, short, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write a complete, deterministic snapshot of the site's organizations.
    Export(ExportArgs),
    /// Make the site match the input files (organizations, members, properties, desk links).
    Import(ImportArgs),
    /// Run the local sandbox site (the embedded default) until Ctrl-C.
    Sandbox(SandboxArgs),
    /// Import the bundled samples into an in-process sandbox, then export it.
    Demo(DemoArgs),
}

/// Connection options shared by `export` and `import`.
#[derive(Debug, Args, Clone)]
pub struct ConnArgs {
    /// Site base URL (https://acme.atlassian.net, https://api.atlassian.com/ex/jira/{cloudId}, or a Data Center base).
    #[arg(long, env = "JSM_SITE")]
    pub site: Option<String>,

    /// Read the API token (with JSM_EMAIL) or bearer token (without) from this file.
    #[arg(long, value_name = "PATH")]
    pub token_file: Option<PathBuf>,

    /// Ceiling on requests per second, shared by all workers.
    #[arg(long, env = "JSM_RATE", default_value_t = 20.0)]
    pub rate: f64,

    /// Ceiling on requests in flight.
    #[arg(long, env = "JSM_CONCURRENCY", default_value_t = 8)]
    pub concurrency: usize,

    /// Retries of one call on 429, 5xx, timeouts and connection errors.
    #[arg(long, default_value_t = 8)]
    pub max_retries: u32,

    /// Per-request timeout in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 30.0)]
    pub timeout: f64,
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

    /// Export only the links of these service desks (repeatable; default: every desk).
    #[arg(long = "service-desk", value_name = "ID")]
    pub service_desks: Vec<String>,

    /// Replace an existing --out directory.
    #[arg(long)]
    pub overwrite: bool,

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

    /// Report file (CSV, or JSONL when it ends in .jsonl).
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,

    /// Also remove members, properties and desk links of named organizations that the input does not list.
    #[arg(long)]
    pub prune: bool,

    /// Validate every row first and send nothing if any row is invalid.
    #[arg(long)]
    pub strict: bool,

    /// Account ids per add/remove-members call (1..=50).
    #[arg(long, default_value_t = 50)]
    pub chunk_size: usize,

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

    /// Service desk ids the site knows besides those in the seed.
    #[arg(long, value_delimiter = ',', value_name = "ID,...")]
    pub service_desks: Vec<String>,

    /// Added latency per request, in milliseconds.
    #[arg(long, default_value_t = 0)]
    pub latency_ms: u64,

    /// Requests per second before answering 429 + Retry-After.
    #[arg(long, value_name = "RPS")]
    pub rate_limit: Option<f64>,

    /// Probability (0..=1) of an injected 503.
    #[arg(long, default_value_t = 0.0)]
    pub fail_rate: f64,

    /// Page size cap of list calls.
    #[arg(long, default_value_t = 50)]
    pub page_cap: usize,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Where to write the report and snapshot (default: a new temporary directory).
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}
