//! The verbs: one thin entry point per command (`import`, `export`,
//! `verify`, `diff`, `sandbox`, `demo`, `completions`), each taking validated settings and
//! returning how the process should end.
//!
//! Owns the wiring a verb needs around its library function — the client and
//! its throttle, the signal handler, printing the summary — and nothing else:
//! what a verb does lives in its module (`import`, `snapshot`, `sandbox`,
//! `demo`), and which exit code a result means lives in `error`. Verbs never
//! see clap types and never pick an exit code themselves.

pub mod completions;
pub mod demo;
pub mod diff;
pub mod export;
pub mod import;
pub mod sandbox;
pub mod verify;

use std::sync::Arc;

use crate::api::Client;
use crate::error::{Error, Exit};
use crate::settings::{Connection, Settings, Task, UsageError};
use crate::throttle::Throttle;

/// Run the command the settings describe.
pub async fn run(settings: Settings) -> Result<Exit, Error> {
    let json = settings.json;
    match settings.task {
        Task::Export { conn, opts } => export::run(conn, opts, json).await,
        Task::Import { conn, opts } => import::run(conn, opts, json).await,
        Task::Sandbox(cfg) => sandbox::run(cfg).await,
        Task::Demo { dir, progress } => demo::run(dir, progress).await,
        Task::Completions(target) => completions::run(target),
        Task::Verify { dir } => verify::run(&dir, json),
        Task::Diff(opts) => diff::run(&opts, json),
    }
}

/// Print the `--json` object of a command that failed without a summary:
/// its name, the exit code the error maps to, the error, and `context`
/// (the paths it was given).
pub fn print_failure_json(command: &str, err: &Error, context: serde_json::Value) {
    let mut value = serde_json::json!({"command": command, "exit_code": err.exit_code(), "error": err.to_string()});
    if let (Some(v), serde_json::Value::Object(extra)) = (value.as_object_mut(), context) {
        v.extend(extra);
    }
    println!("{value}");
}

/// Build the throttle and the client of a connection.
pub fn connect(conn: &Connection) -> Result<Client, Error> {
    let throttle = Arc::new(Throttle::new(&conn.throttle));
    let client = Client::new(conn.client.clone(), throttle).map_err(|e| UsageError(e.to_string()))?;
    Ok(client.with_unreachable_after(conn.unreachable_after))
}

/// The first log line of a run: what, where, which version (a cron log then
/// says which job it belongs to).
pub fn log_start(command: &str, conn: &Connection) {
    tracing::info!("jsm-orgs {} {command} --site {}", env!("CARGO_PKG_VERSION"), conn.site_display);
}

/// Ctrl-C, SIGTERM (cron, systemd, `timeout`) and SIGHUP (a closed terminal)
/// all stop the run the same way: nothing new is sent, the requests in flight
/// finish, the report and summary are written, and the run exits 3. A second
/// signal exits at once, also with 3 (the report is then the `.partial`).
pub fn stop_on_signals(throttle: Arc<Throttle>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let Some(name) = next_signal().await else { return };
        eprintln!("interrupted ({name}): stopping after the requests in flight (again to quit at once)");
        throttle.abort(&format!("interrupted ({name})"));
        if next_signal().await.is_some() {
            std::process::exit(i32::from(Exit::Aborted.code()));
        }
    })
}

/// The next stop signal, by name; `None` when signals cannot be listened to.
#[cfg(unix)]
async fn next_signal() -> Option<&'static str> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).ok()?;
    let mut hup = signal(SignalKind::hangup()).ok()?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.ok().map(|_| "Ctrl-C"),
        _ = term.recv() => Some("SIGTERM"),
        _ = hup.recv() => Some("SIGHUP"),
    }
}

#[cfg(not(unix))]
async fn next_signal() -> Option<&'static str> {
    tokio::signal::ctrl_c().await.ok().map(|_| "Ctrl-C")
}
