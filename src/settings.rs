//! Validated settings: the CLI and the environment turned, once, into plain
//! structs that the rest of the tool consumes.
//!
//! Owns every check of flag values and combinations, and where credentials
//! come from. Code below this module never sees clap types, and no error here
//! ever quotes a secret (it names the variable or file instead).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::time::Duration;

use url::Url;

use crate::api::client::check_site;
use crate::api::RetryPolicy;
use crate::api::{Auth, ClientConfig};
use crate::cli::{Cli, Command, CompletionShell, ConnArgs, ExportArgs, FormatArg, ImportArgs, SandboxArgs};
use crate::sandbox::{SandboxConfig, SandboxCredentials};
use crate::snapshot::{DiffOptions, ExportOptions, Format};
use crate::throttle::ThrottleConfig;

/// The process environment, passed in so tests can run in-process without
/// touching global state.
#[derive(Debug, Clone, Default)]
pub struct Env {
    vars: HashMap<String, String>,
}

impl Env {
    pub fn from_process() -> Env {
        Env { vars: std::env::vars().collect() }
    }

    pub fn from_pairs<K: Into<String>, V: Into<String>>(pairs: impl IntoIterator<Item = (K, V)>) -> Env {
        Env { vars: pairs.into_iter().map(|(k, v)| (k.into(), v.into())).collect() }
    }

    /// A non-empty value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars.get(name).map(String::as_str).filter(|v| !v.trim().is_empty())
    }
}

/// Bad usage: exit 2, nothing sent.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

fn usage<T>(msg: impl Into<String>) -> Result<T, UsageError> {
    Err(UsageError(msg.into()))
}

/// How to reach and pace one site.
#[derive(Debug, Clone)]
pub struct Connection {
    pub client: ClientConfig,
    pub throttle: ThrottleConfig,
    /// The site URL as it may be shown (never carries credentials).
    pub site_display: String,
    /// How long every attempt may fail to connect before the run stops.
    pub unreachable_after: Duration,
}

/// A request rate in requests per second: finite, at least
/// [`Rate::MIN`] and at most [`Rate::MAX`] (checked once, here).
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
pub struct Rate(f64);

impl Rate {
    /// Slower than one request every 10 s would make any real job hang.
    pub const MIN: f64 = 0.1;
    pub const MAX: f64 = 100_000.0;

    pub fn new(flag: &str, value: f64) -> Result<Rate, UsageError> {
        if value.is_finite() && (Rate::MIN..=Rate::MAX).contains(&value) {
            Ok(Rate(value))
        } else {
            usage(format!("{flag} must be between {} and {} requests per second, got {value}", Rate::MIN, Rate::MAX))
        }
    }

    pub fn get(self) -> f64 {
        self.0
    }
}

/// Account ids per add/remove-members call: 1..=50 (JSM's limit).
pub const MAX_CHUNK_SIZE: usize = 50;

/// Options of `import`.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    pub paths: Vec<PathBuf>,
    pub dry_run: bool,
    pub report: PathBuf,
    pub prune: bool,
    pub strict: bool,
    /// Import a snapshot folder that fails verification (edited on purpose).
    pub allow_edited: bool,
    /// 1..=[`MAX_CHUNK_SIZE`].
    pub chunk_size: NonZeroUsize,
    pub progress: bool,
    /// Create portal-only customers for emails the site does not have.
    pub create_customers: bool,
}

/// What `completions` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompletionTarget {
    Shell(clap_complete::Shell),
    Man,
}

#[derive(Debug)]
pub enum Task {
    Export { conn: Connection, opts: ExportOptions },
    Import { conn: Connection, opts: ImportOptions },
    Sandbox(SandboxConfig),
    Demo { dir: Option<PathBuf>, progress: bool },
    Completions(CompletionTarget),
    Verify { dir: PathBuf },
    Diff(DiffOptions),
}

#[derive(Debug)]
pub struct Settings {
    pub task: Task,
    /// 0 = warnings, 1 = info (default), 2 = debug, 3+ = trace.
    pub verbosity: u8,
    pub quiet: bool,
    /// One JSON summary object on stdout (`--json`).
    pub json: bool,
}

impl Settings {
    /// `progress_tty`: whether stderr is a terminal (progress bars only then).
    pub fn from_cli(cli: Cli, env: &Env, progress_tty: bool) -> Result<Settings, UsageError> {
        let progress = progress_tty && !cli.quiet;
        let verbosity = if cli.quiet { 0 } else { 1 + cli.verbose };
        let (task, json) = match cli.command {
            Command::Export(a) => {
                let json = a.conn.json;
                (export_task(a, env, progress)?, json)
            }
            Command::Import(a) => {
                let json = a.conn.json;
                (import_task(a, env, progress)?, json)
            }
            Command::Sandbox(a) => (Task::Sandbox(sandbox_config(a)?), false),
            Command::Demo(a) => (Task::Demo { dir: a.dir, progress }, false),
            Command::Verify(a) => (Task::Verify { dir: a.dir }, a.json),
            Command::Diff(a) => {
                let opts = DiffOptions { old: a.old, new: a.new, report: a.report, across_sites: a.across_sites };
                (Task::Diff(opts), a.json)
            }
            Command::Completions(a) => (Task::Completions(completion_target(a.shell)), false),
        };
        Ok(Settings { task, verbosity, quiet: cli.quiet, json })
    }
}

fn export_task(a: ExportArgs, env: &Env, progress: bool) -> Result<Task, UsageError> {
    let conn = connection(&a.conn, env)?;
    if a.service_desks.iter().any(|d| d.trim().is_empty()) {
        return usage("--service-desk needs a service desk id");
    }
    if a.keep == Some(0) {
        return usage("--keep must be at least 1 (the new snapshot)");
    }
    let format = match a.format {
        FormatArg::Jsonl => Format::Jsonl,
        FormatArg::Csv => Format::Csv,
    };
    if a.excel && format != Format::Csv {
        return usage("--excel needs --format csv");
    }
    let opts = ExportOptions {
        out: a.out,
        format,
        service_desks: a.service_desks,
        overwrite: a.overwrite,
        site: conn.site_display.clone(),
        progress,
        excel: a.excel,
        keep: a.keep,
    };
    Ok(Task::Export { conn, opts })
}

fn import_task(a: ImportArgs, env: &Env, progress: bool) -> Result<Task, UsageError> {
    let conn = connection(&a.conn, env)?;
    let chunk_size = NonZeroUsize::new(a.chunk_size)
        .filter(|n| n.get() <= MAX_CHUNK_SIZE)
        .ok_or_else(|| UsageError(format!("--chunk-size must be 1..={MAX_CHUNK_SIZE}, got {}", a.chunk_size)))?;
    let opts = ImportOptions {
        paths: a.paths,
        dry_run: a.dry_run,
        report: a.report.unwrap_or_else(default_report_path),
        prune: a.prune,
        strict: a.strict,
        allow_edited: a.allow_edited,
        chunk_size,
        progress,
        create_customers: a.create_customers,
    };
    Ok(Task::Import { conn, opts })
}

fn sandbox_config(a: SandboxArgs) -> Result<SandboxConfig, UsageError> {
    let listen: SocketAddr = a
        .listen
        .parse()
        .map_err(|_| UsageError(format!("--listen {:?} is not an address like 127.0.0.1:8080", a.listen)))?;
    if !listen.ip().is_loopback() {
        return usage("the sandbox only listens on loopback addresses (127.0.0.0/8 or ::1)");
    }
    if !(0.0..=1.0).contains(&a.fail_rate) {
        return usage("--fail-rate must be between 0 and 1");
    }
    if a.rate_limit.is_some_and(|r| !(r.is_finite() && r > 0.0)) {
        return usage("--rate-limit must be a positive number");
    }
    if a.page_cap == 0 {
        return usage("--page-cap must be at least 1");
    }
    let endpoint_limits = crate::sandbox::EndpointLimits::parse(&a.endpoint_limits)
        .map_err(|e| UsageError(format!("--endpoint-limits: {e}")))?;
    Ok(SandboxConfig {
        listen,
        seed: a.seed,
        service_desks: a.service_desks.into_iter().filter(|d| !d.trim().is_empty()).collect(),
        latency: Duration::from_millis(a.latency_ms),
        rate_limit: a.rate_limit,
        endpoint_limits,
        fail_rate: a.fail_rate,
        page_cap: a.page_cap,
        credentials: SandboxCredentials::from_env(),
        customers: a.customers,
    })
}

fn completion_target(shell: CompletionShell) -> CompletionTarget {
    match shell {
        CompletionShell::Bash => CompletionTarget::Shell(clap_complete::Shell::Bash),
        CompletionShell::Zsh => CompletionTarget::Shell(clap_complete::Shell::Zsh),
        CompletionShell::Fish => CompletionTarget::Shell(clap_complete::Shell::Fish),
        CompletionShell::Powershell => CompletionTarget::Shell(clap_complete::Shell::PowerShell),
        CompletionShell::Elvish => CompletionTarget::Shell(clap_complete::Shell::Elvish),
        CompletionShell::Man => CompletionTarget::Man,
    }
}

fn default_report_path() -> PathBuf {
    PathBuf::from(format!("jsm-orgs-report-{}.csv", chrono::Utc::now().format("%Y%m%dT%H%M%SZ")))
}

/// Check the connection flags and find the credentials.
pub fn connection(a: &ConnArgs, env: &Env) -> Result<Connection, UsageError> {
    let Some(site) = a.site.as_deref().filter(|s| !s.trim().is_empty()) else {
        return usage("--site (or JSM_SITE) is required: e.g. https://acme.atlassian.net");
    };
    let mut url = Url::parse(site.trim())
        .map_err(|e| UsageError(format!("--site is not a valid URL ({e}): e.g. https://acme.atlassian.net")))?;
    if !url.username().is_empty() || url.password().is_some() {
        return usage(
            "--site must not carry credentials; use JSM_EMAIL + JSM_API_TOKEN, JSM_BEARER_TOKEN or --token-file",
        );
    }
    if url.query().is_some() || url.fragment().is_some() {
        return usage("--site must be a base URL without ?query or #fragment");
    }
    check_site(&url).map_err(UsageError)?;
    // A trailing "/rest/servicedeskapi" pasted from the docs is the API, not the site.
    if let Some(stripped) = url.path().trim_end_matches('/').strip_suffix("/rest/servicedeskapi") {
        let p = stripped.to_string();
        url.set_path(&p);
    }
    check_not_a_page(&url)?;
    let rate = a.rate.map(|r| Rate::new("--rate", r)).transpose()?;
    let concurrency = match a.concurrency {
        None => None,
        Some(n) => Some(
            NonZeroUsize::new(n)
                .filter(|n| n.get() <= MAX_CONCURRENCY)
                .ok_or_else(|| UsageError(format!("--concurrency must be 1..={MAX_CONCURRENCY}, got {n}")))?,
        ),
    };
    if a.max_retries > 100 {
        return usage(format!("--max-retries must be at most 100, got {}", a.max_retries));
    }
    if !(a.timeout.is_finite() && a.timeout > 0.0 && a.timeout <= 3600.0) {
        return usage(format!("--timeout must be greater than 0 and at most 3600 seconds, got {}", a.timeout));
    }
    if !(a.unreachable_after.is_finite() && a.unreachable_after >= 1.0 && a.unreachable_after <= 86_400.0) {
        return usage(format!("--unreachable-after must be between 1 and 86400 seconds, got {}", a.unreachable_after));
    }
    let auth = credentials(a, env)?;
    let site_display = url.as_str().trim_end_matches('/').to_string();
    Ok(Connection {
        client: ClientConfig {
            site: url,
            auth,
            timeout: Duration::from_secs_f64(a.timeout),
            retry: RetryPolicy { max_retries: a.max_retries, ..RetryPolicy::default() },
        },
        throttle: ThrottleConfig {
            ceiling: rate.map(Rate::get),
            concurrency: concurrency.map(NonZeroUsize::get),
            ..ThrottleConfig::default()
        },
        site_display,
        unreachable_after: Duration::from_secs_f64(a.unreachable_after),
    })
}

/// Requests in flight at most.
pub const MAX_CONCURRENCY: usize = 256;

/// A URL copied from the browser (a queue, a portal, an issue) is a page of
/// the site, not its base: the API calls would all answer 404.
fn check_not_a_page(url: &Url) -> Result<(), UsageError> {
    const UI_SEGMENTS: [&str; 8] =
        ["servicedesk", "projects", "queues", "portal", "browse", "secure", "plugins", "wiki"];
    let host = url.host_str().unwrap_or("");
    let path = url.path().trim_matches('/');
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let cloud = host.ends_with(".atlassian.net") || host.ends_with(".jira.com");
    let gateway = host == "api.atlassian.com";
    let page = if cloud {
        !segments.is_empty()
    } else if gateway {
        !(segments.len() == 3 && segments[0] == "ex" && segments[1] == "jira")
    } else {
        segments.iter().any(|s| UI_SEGMENTS.contains(&s.to_ascii_lowercase().as_str()))
    };
    if !page {
        return Ok(());
    }
    let root = if gateway {
        "https://api.atlassian.com/ex/jira/{cloudId}".to_string()
    } else if cloud {
        format!("{}://{host}", url.scheme())
    } else {
        "the Data Center base, e.g. https://jira.example.com or https://example.com/jira".to_string()
    };
    usage(format!(
        "--site {url} is a page of the site, not its base URL: use the site root, e.g. {root} \
         (the tool appends /rest/servicedeskapi/... itself)"
    ))
}

/// `--token-file` (Basic with JSM_EMAIL, else Bearer), then JSM_BEARER_TOKEN,
/// then JSM_EMAIL + JSM_API_TOKEN. Both tokens in the environment is
/// ambiguous and refused.
fn credentials(a: &ConnArgs, env: &Env) -> Result<Auth, UsageError> {
    let email = env.get("JSM_EMAIL").map(|e| e.trim().to_string());
    if let Some(path) = &a.token_file {
        warn_if_readable_by_others(path);
        let text = std::fs::read_to_string(path)
            .map_err(|e| UsageError(format!("cannot read --token-file {}: {e}", path.display())))?;
        let token = text.trim().to_string();
        if token.is_empty() {
            return usage(format!("--token-file {} is empty", path.display()));
        }
        if token.contains(['\n', '\r']) {
            return usage(format!("--token-file {} must hold one token on one line", path.display()));
        }
        return Ok(match email {
            Some(email) => Auth::Basic { email, token },
            None => Auth::Bearer { token },
        });
    }
    if env.get("JSM_BEARER_TOKEN").is_some() && env.get("JSM_API_TOKEN").is_some() {
        return usage(
            "both JSM_API_TOKEN and JSM_BEARER_TOKEN are set: unset the one you do not mean \
             (Basic auth uses JSM_EMAIL + JSM_API_TOKEN, Bearer uses JSM_BEARER_TOKEN)",
        );
    }
    if let Some(token) = env.get("JSM_BEARER_TOKEN") {
        return Ok(Auth::Bearer { token: token.trim().to_string() });
    }
    match (email, env.get("JSM_API_TOKEN")) {
        (Some(email), Some(token)) => Ok(Auth::Basic { email, token: token.trim().to_string() }),
        (None, Some(_)) => usage("JSM_API_TOKEN is set but JSM_EMAIL is not: Basic auth needs both"),
        (Some(_), None) => usage("JSM_EMAIL is set but JSM_API_TOKEN is not (or use --token-file)"),
        (None, None) => usage(
            "no credentials: set JSM_EMAIL + JSM_API_TOKEN (Cloud API token), JSM_BEARER_TOKEN \
             (OAuth or Data Center PAT), or pass --token-file",
        ),
    }
}

/// A token file that other users can read is a leaked token waiting to happen.
fn warn_if_readable_by_others(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path) {
            let mode = meta.permissions().mode();
            if mode & 0o077 != 0 {
                tracing::warn!(
                    "--token-file {} is readable by other users (mode {:o}): run `chmod 600 {}`",
                    path.display(),
                    mode & 0o777,
                    path.display()
                );
            }
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn parse(args: &[&str], env: &Env) -> Result<Settings, UsageError> {
        let mut argv = vec!["jsm-orgs"];
        argv.extend_from_slice(args);
        Settings::from_cli(Cli::try_parse_from(argv).unwrap(), env, false)
    }

    fn basic_env() -> Env {
        Env::from_pairs([("JSM_EMAIL", "a@example.com"), ("JSM_API_TOKEN", "tok-SECRET")])
    }

    #[test]
    fn import_settings_are_validated() {
        let s = parse(&["import", "x.csv", "--site", "https://acme.atlassian.net", "--chunk-size", "20"], &basic_env())
            .unwrap();
        match s.task {
            Task::Import { conn, opts } => {
                assert_eq!(opts.chunk_size.get(), 20);
                assert!(opts.report.to_string_lossy().starts_with("jsm-orgs-report-"));
                assert_eq!(conn.site_display, "https://acme.atlassian.net");
                assert!(matches!(conn.client.auth, Auth::Basic { .. }));
                // No ceiling, no cap: each endpoint at Jira's default, Little's law in flight.
                assert_eq!(conn.throttle, crate::throttle::ThrottleConfig::default());
            }
            other => panic!("{other:?}"),
        }
        let s = parse(
            &["import", "x.csv", "--site", "https://acme.atlassian.net", "--rate", "30", "--concurrency", "4"],
            &basic_env(),
        )
        .unwrap();
        let Task::Import { conn, .. } = s.task else { panic!() };
        assert_eq!((conn.throttle.ceiling, conn.throttle.concurrency), (Some(30.0), Some(4)));
        for bad in [
            &["--chunk-size", "51"][..],
            &["--chunk-size", "0"],
            &["--rate", "0"],
            &["--rate", "1e-9"],
            &["--rate", "NaN"],
            &["--concurrency", "0"],
            &["--concurrency", "257"],
            &["--timeout", "0"],
        ] {
            let mut args = vec!["import", "x.csv", "--site", "https://acme.atlassian.net"];
            args.extend_from_slice(bad);
            assert!(parse(&args, &basic_env()).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn messages_name_the_bounds() {
        let site = ["import", "x.csv", "--site", "https://acme.atlassian.net"];
        let e = parse(&[&site[..], &["--timeout", "0"]].concat(), &basic_env()).unwrap_err();
        assert!(e.0.contains("greater than 0"), "{e}");
        let e = parse(&[&site[..], &["--rate", "1e-9"]].concat(), &basic_env()).unwrap_err();
        assert!(e.0.contains("between 0.1 and"), "{e}");
    }

    #[test]
    fn a_page_url_from_the_browser_gets_the_site_root_hint() {
        for page in [
            "https://acme.atlassian.net/jira/servicedesk/projects/SD/queues",
            "https://acme.atlassian.net/servicedesk/customer/portal/1",
            "https://jira.example.com/jira/browse/SD-1",
            "https://api.atlassian.com/ex/jira/abc/servicedesk/projects",
        ] {
            let e = parse(&["export", "--out", "o", "--site", page], &basic_env()).unwrap_err();
            assert!(e.0.contains("use the site root"), "{page}: {e}");
        }
        for base in
            ["https://acme.atlassian.net/", "https://jira.example.com/jira", "https://api.atlassian.com/ex/jira/abc"]
        {
            assert!(parse(&["export", "--out", "o", "--site", base], &basic_env()).is_ok(), "{base}");
        }
    }

    #[test]
    fn both_tokens_in_the_environment_is_refused() {
        let env = Env::from_pairs([
            ("JSM_EMAIL", "a@example.com"),
            ("JSM_API_TOKEN", "tok-SECRET"),
            ("JSM_BEARER_TOKEN", "bear-SECRET"),
        ]);
        let e = parse(&["export", "--out", "o", "--site", "https://x.atlassian.net"], &env).unwrap_err();
        assert!(e.0.contains("both JSM_API_TOKEN and JSM_BEARER_TOKEN") && !e.0.contains("SECRET"), "{e}");
    }

    #[test]
    fn lists_are_repeatable_and_comma_separated() {
        let s = parse(
            &[
                "export",
                "--out",
                "o",
                "--site",
                "https://x.atlassian.net",
                "--service-desk",
                "1,2",
                "--service-desk",
                "3",
            ],
            &basic_env(),
        )
        .unwrap();
        let Task::Export { opts, .. } = s.task else { panic!() };
        assert_eq!(opts.service_desks, ["1", "2", "3"]);
    }

    #[test]
    fn plain_http_is_refused_except_loopback() {
        let e = parse(&["export", "--out", "o", "--site", "http://acme.example.com"], &basic_env()).unwrap_err();
        assert!(e.0.contains("refusing plain http://"), "{e}");
        assert!(parse(&["export", "--out", "o", "--site", "http://127.0.0.1:9"], &basic_env()).is_ok());
    }

    #[test]
    fn credentials_precedence_and_errors_never_quote_secrets() {
        let bearer = Env::from_pairs([("JSM_BEARER_TOKEN", "bear-SECRET")]);
        let s = parse(&["export", "--out", "o", "--site", "https://x.atlassian.net"], &bearer).unwrap();
        let Task::Export { conn, .. } = s.task else { panic!() };
        assert!(matches!(conn.client.auth, Auth::Bearer { .. }));

        let only_token = Env::from_pairs([("JSM_API_TOKEN", "tok-SECRET")]);
        let e = parse(&["export", "--out", "o", "--site", "https://x.atlassian.net"], &only_token).unwrap_err();
        assert!(e.0.contains("JSM_EMAIL") && !e.0.contains("SECRET"), "{e}");
        let none = parse(&["export", "--out", "o", "--site", "https://x.atlassian.net"], &Env::default()).unwrap_err();
        assert!(none.0.contains("no credentials"));

        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("tok");
        std::fs::write(&f, "file-SECRET\n").unwrap();
        let fp = f.to_str().unwrap();
        let s = parse(&["export", "--out", "o", "--site", "https://x.atlassian.net", "--token-file", fp], &basic_env())
            .unwrap();
        let Task::Export { conn, .. } = s.task else { panic!() };
        match conn.client.auth {
            Auth::Basic { token, .. } => assert_eq!(token, "file-SECRET"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn site_with_credentials_or_api_suffix() {
        let e = parse(&["export", "--out", "o", "--site", "https://u:p@x.atlassian.net"], &basic_env()).unwrap_err();
        assert!(!e.0.contains(":p@"));
        let s = parse(
            &["export", "--out", "o", "--site", "https://jira.example.com/jira/rest/servicedeskapi/"],
            &basic_env(),
        )
        .unwrap();
        let Task::Export { conn, .. } = s.task else { panic!() };
        assert_eq!(conn.client.site.path(), "/jira");
    }

    #[test]
    fn sandbox_listens_on_loopback_only() {
        assert!(parse(&["sandbox", "--listen", "0.0.0.0:8080"], &Env::default()).is_err());
        assert!(parse(&["sandbox", "--listen", "127.0.0.1:0", "--fail-rate", "2"], &Env::default()).is_err());
        let s = parse(
            &["sandbox", "--listen", "127.0.0.1:0", "--service-desks", "1,2", "--rate-limit", "50"],
            &Env::default(),
        )
        .unwrap();
        let Task::Sandbox(cfg) = s.task else { panic!() };
        assert_eq!(cfg.service_desks, vec!["1", "2"]);
        assert_eq!(cfg.rate_limit, Some(50.0));
    }
}
