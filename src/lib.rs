//! jsm-orgs: bulk import and export of Jira Service Management customer
//! organizations. The binary is a thin shell over [`run`], which tests call
//! in process; [`run`] is the one place where a run's result becomes an exit
//! code (0 ok, 1 some rows failed, 2 bad usage or input, 3 aborted).

pub mod api;
pub mod cli;
pub mod demo;
pub mod executor;
pub mod import;
pub mod input;
pub mod model;
pub mod plan;
pub mod report;
pub mod sandbox;
pub mod settings;
pub mod snapshot;
pub mod throttle;

use std::sync::Arc;

pub use settings::{Env, Settings};

use api::Client;
use import::ImportError;
use settings::{Connection, Task};
use throttle::Throttle;

/// Every row succeeded or was already in place; export complete.
pub const EXIT_OK: u8 = 0;
/// The run finished but some rows failed (see the report).
pub const EXIT_ROWS_FAILED: u8 = 1;
/// Bad usage or unreadable input: nothing was sent.
pub const EXIT_USAGE: u8 = 2;
/// Aborted: authentication/permission failure, site unreachable, local I/O.
pub const EXIT_ABORTED: u8 = 3;

/// Run one command. `tty`: whether stderr is a terminal (progress bars).
pub async fn run(cli: cli::Cli, env: &Env, tty: bool) -> u8 {
    let settings = match Settings::from_cli(cli, env, tty) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_USAGE;
        }
    };
    match settings.task {
        Task::Export { conn, opts } => {
            let client = match connect(&conn) {
                Ok(c) => c,
                Err(code) => return code,
            };
            let _ctrl_c = abort_on_ctrl_c(client.throttle().clone());
            match snapshot::export(&client, &opts).await {
                Ok(summary) => {
                    eprintln!("{}", summary.to_string().trim_end());
                    EXIT_OK
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    e.exit_code()
                }
            }
        }
        Task::Import { conn, opts } => {
            let client = match connect(&conn) {
                Ok(c) => c,
                Err(code) => return code,
            };
            let _ctrl_c = abort_on_ctrl_c(client.throttle().clone());
            import_exit(import::import(&client, &opts).await)
        }
        Task::Sandbox(cfg) => match sandbox::serve_until_ctrl_c(cfg).await {
            Ok(()) => EXIT_OK,
            Err(e) => {
                eprintln!("error: {e:#}");
                EXIT_ABORTED
            }
        },
        Task::Demo { dir, progress } => demo::run(dir, progress).await,
    }
}

/// Print an import's summary and map its result to an exit code.
pub fn import_exit(result: Result<report::Summary, ImportError>) -> u8 {
    match result {
        Ok(summary) => {
            eprint!("{summary}");
            if summary.incomplete() {
                EXIT_ROWS_FAILED
            } else {
                EXIT_OK
            }
        }
        Err(ImportError::Aborted { message, summary }) => {
            eprint!("{summary}");
            eprintln!("error: {message}");
            EXIT_ABORTED
        }
        Err(e) => {
            eprintln!("error: {e}");
            e.exit_code()
        }
    }
}

/// Build the throttle and the client of a connection.
pub fn connect(conn: &Connection) -> Result<Client, u8> {
    let throttle = Arc::new(Throttle::new(&conn.throttle));
    Client::new(conn.client.clone(), throttle).map_err(|e| {
        eprintln!("error: {e}");
        EXIT_USAGE
    })
}

/// First Ctrl-C: stop sending (rows not yet sent fail as "not sent:
/// interrupted") so the report and summary are still written; a second
/// Ctrl-C exits at once.
fn abort_on_ctrl_c(throttle: Arc<Throttle>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("interrupted: stopping after the requests in flight (Ctrl-C again to quit at once)");
            throttle.abort("interrupted (Ctrl-C)");
            if tokio::signal::ctrl_c().await.is_ok() {
                std::process::exit(130);
            }
        }
    })
}

/// Install the stderr logger: warnings with `--quiet`, info by default,
/// debug/trace with `-v`/`-vv`. Only this crate logs below warn, so no
/// dependency's trace output (which could include request details) appears.
pub fn init_logging(verbosity: u8, ansi: bool) {
    let level = match verbosity {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::new(format!("warn,jsm_orgs={level}"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .with_target(false)
        .without_time()
        .try_init();
}
