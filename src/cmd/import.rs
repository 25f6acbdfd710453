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
    let result = result.map_err(Error::from);
    let (summary, exit) = match &result {
        Ok(s) => (Some(s), if s.incomplete() { Exit::Failed } else { Exit::Ok }),
        Err(e @ Error::Import(ImportError::Aborted { summary, .. })) => (Some(&**summary), e.exit()),
        Err(e) => (None, e.exit()),
    };
    if let Some(s) = summary {
        eprint!("{s}");
    }
    if json {
        match (summary, &result) {
            (Some(s), _) => println!("{}", s.to_json(exit, result.as_ref().err().map(Error::to_string).as_deref())),
            (None, Err(e)) => super::print_failure_json("import", e, serde_json::Value::Null),
            (None, Ok(_)) => unreachable!("a finished import has a summary"),
        }
    }
    result.map(|_| exit)
}
