//! The ordered final report when the input cannot be read again.
//!
//! The final report is normally written by re-streaming the input next to
//! each row's outcome. When an input file changed during the run, re-reading
//! it would pair outcomes with other rows; this module instead rebuilds the
//! report from what the run itself recorded: `FILE.partial` (every settled
//! row with all its columns) and the compact per-row metadata and outcomes.
//! Rows the run never settled keep their source, kind and action. It does no
//! network I/O and decides no outcome.

use std::collections::HashMap;
use std::path::Path;

use crate::model::unescape_formula;
use crate::plan::{Desired, RowIdx};
use crate::report::{ReportFormat, ReportRow, RowOutcome};

/// Rows of a `FILE.partial` (either format), by source.
pub fn read_partial(path: &Path, format: ReportFormat) -> std::io::Result<HashMap<String, ReportRow>> {
    let text = match std::fs::read_to_string(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(HashMap::new()),
        other => other?,
    };
    let rows: Vec<ReportRow> = match format {
        // A killed writer can leave at most one torn last line: skip it.
        ReportFormat::Jsonl => text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect(),
        ReportFormat::Csv => {
            let mut reader = csv::Reader::from_reader(text.as_bytes());
            reader
                .deserialize::<ReportRow>()
                .filter_map(Result::ok)
                .map(|mut r| {
                    for cell in [&mut r.source, &mut r.organization, &mut r.target, &mut r.message] {
                        *cell = unescape_formula(cell).to_string();
                    }
                    r
                })
                .collect()
        }
    };
    Ok(rows.into_iter().map(|r| (r.source.clone(), r)).collect())
}

/// The report row of input row `i`: its partial row when there is one, else
/// what the metadata knows; the outcome is always the run's own.
pub fn row(d: &Desired, i: RowIdx, outcome: &RowOutcome, partial: &mut HashMap<String, ReportRow>) -> ReportRow {
    let source = d.source(i);
    let meta = &d.meta[i as usize];
    let mut row = partial.remove(&source).unwrap_or_else(|| ReportRow {
        source,
        kind: meta.kind.map(|k| k.as_str().to_string()).unwrap_or_default(),
        action: meta.action.map(|a| a.as_str().to_string()).unwrap_or_default(),
        organization: String::new(),
        organization_id: String::new(),
        target: String::new(),
        outcome: outcome.outcome,
        http_status: None,
        attempts: 0,
        message: String::new(),
    });
    row.outcome = outcome.outcome;
    row.http_status = outcome.http_status;
    row.attempts = outcome.attempts;
    if let Some(m) = &outcome.message {
        if row.message.is_empty() {
            row.message = m.to_string();
        }
    }
    row
}
