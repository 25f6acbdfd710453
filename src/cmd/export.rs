//! `jsm-orgs export`: connect, run [`crate::snapshot::export`] under the
//! signal handler, print the summary.

use crate::error::{Error, Exit};
use crate::settings::Connection;
use crate::snapshot::{ExportOptions, ExportSummary};

pub async fn run(conn: Connection, opts: ExportOptions, json: bool) -> Result<Exit, Error> {
    super::log_start("export", &conn);
    let client = super::connect(&conn)?;
    let _signals = super::stop_on_signals(client.throttle().clone());
    let result = crate::snapshot::export(&client, &opts).await;
    if let Ok(summary) = &result {
        eprint!("{summary}");
    }
    let result = result.map_err(Error::from);
    if json {
        match &result {
            Ok(summary) => println!("{}", summary_json(summary)),
            Err(e) => super::print_failure_json("export", e, serde_json::json!({"out": opts.out})),
        }
    }
    result.map(|_| Exit::Ok)
}

/// The `--json` object of a complete export.
fn summary_json(s: &ExportSummary) -> serde_json::Value {
    serde_json::json!({
        "command": "export",
        "exit_code": Exit::Ok.code(),
        "out": s.out,
        "organizations": s.organizations,
        "members": s.members,
        "properties": s.properties,
        "service_desk_links": s.service_desk_links,
        "vanished_organizations": s.vanished_organizations,
        "removed_snapshots": s.removed_snapshots,
        "requests": s.requests,
        "retries": s.retries,
        "rate_limited": s.rate_limited,
        "busiest_endpoint": s.busiest.as_ref().map(crate::throttle::EndpointLoad::to_json),
        "elapsed_seconds": s.elapsed.as_secs_f64(),
    })
}
