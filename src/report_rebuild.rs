//! Writing the ordered final report of an import.
//!
//! The final report is normally written by re-streaming the input next to
//! each row's outcome (memory stays bounded), into a temporary file renamed
//! over `--report` (a device is written directly). When an input file
//! changed during the run, re-reading it would pair outcomes with other
//! rows; the report is then rebuilt from what the run itself recorded:
//! `FILE.partial` (every settled row with all its columns) and the compact
//! per-row metadata and outcomes. Rows the run never settled keep their
//! source, kind and action. It does no network I/O and decides no outcome.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::import::{io_err, ImportError};
use crate::input::{InputSet, InvalidRow};
use crate::model::unescape_formula;
use crate::plan::{Desired, RowIdx};
use crate::report::{ReportFormat, ReportRow, ReportWriter, RowOutcome, Summary};
use crate::report_path::ReportTarget;

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

/// The ordered report rebuilt from `FILE.partial` and the run's outcomes,
/// for an input that cannot be read again.
pub(crate) fn write_rebuilt(
    d: &Desired,
    outcomes: &[Option<RowOutcome>],
    partial_path: &Path,
    path: &Path,
    spec: (ReportFormat, ReportTarget),
    summary: &mut Summary,
) -> Result<(), ImportError> {
    let mut partial = read_partial(partial_path, spec.0).map_err(io_err(partial_path))?;
    let (tmp, mut w, written) = open_report(path, spec)?;
    for i in 0..d.meta.len() {
        let outcome = outcomes
            .get(i)
            .cloned()
            .flatten()
            .unwrap_or_else(|| RowOutcome::failed("internal error: row was never run"));
        let row = row(d, i as RowIdx, &outcome, &mut partial);
        w.write(&row).map_err(io_err(&written))?;
        summary.tally(&row);
    }
    close_report(tmp, w, &written, path)
}

/// Write a whole report atomically (temp file beside it, then rename; a
/// device is written directly), one row per input row in input order,
/// counting each into `summary`.
pub(crate) fn write_report(
    path: &Path,
    (format, target): (ReportFormat, ReportTarget),
    input: &InputSet,
    summary: &mut Summary,
    mut row_for: impl FnMut(&Result<crate::input::Row, InvalidRow>) -> (ReportRow, RowOutcome),
) -> Result<(), ImportError> {
    let (tmp, mut w, written) = open_report(path, (format, target))?;
    for r in input.rows() {
        let r = r?;
        let (mut row, o) = row_for(&r);
        row.outcome = o.outcome;
        row.http_status = o.http_status;
        row.attempts = o.attempts;
        row.message = o.message.as_deref().unwrap_or("").to_string();
        w.write(&row).map_err(io_err(&written))?;
        summary.tally(&row);
    }
    close_report(tmp, w, &written, path)
}

/// The writer of a final report: a temporary file beside `path` (renamed
/// over it by [`close_report`]) or, for a device, `path` itself.
fn open_report(
    path: &Path,
    (format, target): (ReportFormat, ReportTarget),
) -> Result<(Option<tempfile::NamedTempFile>, ReportWriter, PathBuf), ImportError> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    Ok(match target {
        ReportTarget::File => {
            let tmp = tempfile::Builder::new().prefix(".jsm-orgs-report-").tempfile_in(&dir).map_err(io_err(&dir))?;
            let w = ReportWriter::create(tmp.path(), format).map_err(io_err(tmp.path()))?;
            let written = tmp.path().to_path_buf();
            (Some(tmp), w, written)
        }
        ReportTarget::Direct => (None, ReportWriter::direct(path, format).map_err(io_err(path))?, path.to_path_buf()),
    })
}

fn close_report(
    tmp: Option<tempfile::NamedTempFile>,
    w: ReportWriter,
    written: &Path,
    path: &Path,
) -> Result<(), ImportError> {
    w.finish().map_err(io_err(written))?;
    if let Some(tmp) = tmp {
        tmp.persist(path).map_err(|e| ImportError::Io { path: path.to_path_buf(), source: e.error })?;
    }
    Ok(())
}
