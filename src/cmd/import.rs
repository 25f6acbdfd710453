//! `jsm-orgs import`: connect, run [`crate::import::import`] under the
//! signal handler, print the summary, and say how the run ended.

use crate::error::{Error, Exit};
use crate::import::ImportError;
use crate::report::Summary;
use crate::settings::{Connection, ImportOptions};

pub async fn run(conn: Connection, opts: ImportOptions, json: bool) -> Result<Exit, Error> {
    super::log_start("import", &conn);
    let client = super::connect(&conn)?;
    let _signals = super::stop_on_signals(client.throttle().clone());
    finish(crate::import::import(&client, &opts).await, json)
}

/// Print an import's summary (stderr; with `json`, also one JSON object on
/// stdout) and turn its result into an [`Exit`].
pub fn finish(result: Result<Summary, ImportError>, json: bool) -> Result<Exit, Error> {
    let (summary, exit) = match &result {
        Ok(summary) => (Some(summary), if summary.incomplete() { Exit::Failed } else { Exit::Ok }),
        Err(ImportError::Aborted { summary, .. }) => (Some(&**summary), Exit::Aborted),
        Err(e) => (None, e.exit()),
    };
    if let Some(summary) = summary {
        eprint!("{summary}");
    }
    if json {
        let message = result.as_ref().err().map(|e| e.to_string());
        let value = match summary {
            Some(s) => s.to_json(exit, message.as_deref()),
            None => serde_json::json!({"command": "import", "exit_code": exit.code(), "error": message}),
        };
        println!("{value}");
    }
    match result {
        Ok(_) => Ok(exit),
        Err(e) => Err(e.into()),
    }
}
