//! jsm-orgs: bulk import and export of Jira Service Management customer
//! organizations. The binary is a thin shell over [`run`], which tests call
//! in process: it validates the command line into [`Settings`], hands them to
//! the verb in [`cmd`], and turns the verb's result into an exit code through
//! [`error`] (0 ok, 1 some rows failed, 2 bad usage or input, 3 aborted).

pub mod api;
pub mod cli;
pub mod cmd;
pub mod demo;
pub mod desks;
pub mod error;
pub mod executor;
pub mod import;
pub mod input;
pub mod lanes;
pub mod model;
pub mod plan;
pub mod progress;
pub mod report;
pub mod report_path;
pub mod report_rebuild;
pub mod resolve;
pub mod routes;
pub mod sandbox;
pub mod settings;
pub mod snapshot;
pub mod throttle;

pub use error::{Error, Exit};
pub use settings::{Env, Settings};

/// Run one command and return the process exit code. `tty`: whether stderr
/// is a terminal (progress display only then).
pub async fn run(cli: cli::Cli, env: &Env, tty: bool) -> u8 {
    let result = match Settings::from_cli(cli, env, tty) {
        Ok(settings) => cmd::run(settings).await,
        Err(e) => Err(e.into()),
    };
    match result {
        Ok(exit) => exit.code(),
        Err(e) => {
            eprintln!("error: {e}");
            e.exit_code()
        }
    }
}

/// Install the stderr logger: warnings with `--quiet`, info by default,
/// debug/trace with `-v`/`-vv`. Only this crate logs below warn, so no
/// dependency's trace output (which could include request details) appears.
/// `tty`: on a terminal lines are coloured and untimed; elsewhere (cron,
/// systemd, CI logs) they are plain and carry an RFC 3339 UTC timestamp.
pub fn init_logging(verbosity: u8, tty: bool) {
    let level = match verbosity {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::new(format!("warn,jsm_orgs={level}"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(tty)
        .with_target(false);
    let _ = if tty {
        builder.without_time().try_init()
    } else {
        builder.with_timer(tracing_subscriber::fmt::time::SystemTime).try_init()
    };
}
