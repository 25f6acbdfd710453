//! The per-row report and the run summary.
//!
//! Owns the report's columns, its two formats (CSV, JSONL), the file
//! permissions (0600: reports name customers) and the summary printed to
//! stderr. It does not decide outcomes and does no network I/O; the executor's
//! single consumer feeds it rows.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::model::escape_formula;
use crate::throttle::{CounterSnapshot, EndpointLoad};

/// A row's outcome, as the README names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Created,
    Added,
    Removed,
    Set,
    Deleted,
    Linked,
    Unlinked,
    Unchanged,
    Planned,
    Failed,
    /// The run stopped (abort, Ctrl-C) before the row's call was sent.
    NotSent,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Created => "created",
            Outcome::Added => "added",
            Outcome::Removed => "removed",
            Outcome::Set => "set",
            Outcome::Deleted => "deleted",
            Outcome::Linked => "linked",
            Outcome::Unlinked => "unlinked",
            Outcome::Unchanged => "unchanged",
            Outcome::Planned => "planned",
            Outcome::Failed => "failed",
            Outcome::NotSent => "not_sent",
        }
    }

    pub const ALL: [Outcome; 11] = [
        Outcome::Created,
        Outcome::Added,
        Outcome::Removed,
        Outcome::Set,
        Outcome::Deleted,
        Outcome::Linked,
        Outcome::Unlinked,
        Outcome::Unchanged,
        Outcome::Planned,
        Outcome::Failed,
        Outcome::NotSent,
    ];
}

/// The result of one input row, kept compactly (one per input row in memory).
#[derive(Debug, Clone, PartialEq)]
pub struct RowOutcome {
    pub outcome: Outcome,
    pub http_status: Option<u16>,
    pub attempts: u32,
    /// Shared between the rows of one call (a chunk's error, a conflict).
    pub message: Option<Arc<str>>,
}

impl RowOutcome {
    pub fn new(outcome: Outcome) -> RowOutcome {
        RowOutcome { outcome, http_status: None, attempts: 0, message: None }
    }
    pub fn failed(message: impl Into<Arc<str>>) -> RowOutcome {
        RowOutcome { outcome: Outcome::Failed, http_status: None, attempts: 0, message: Some(message.into()) }
    }
    /// Interrupted before its call was sent.
    pub fn not_sent(message: impl Into<Arc<str>>) -> RowOutcome {
        RowOutcome { outcome: Outcome::NotSent, http_status: None, attempts: 0, message: Some(message.into()) }
    }
    pub fn with_message(mut self, message: impl Into<Arc<str>>) -> RowOutcome {
        self.message = Some(message.into());
        self
    }
}

/// One line of the report, in the column order the README documents.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReportRow {
    pub source: String,
    pub kind: String,
    pub action: String,
    pub organization: String,
    pub organization_id: String,
    pub target: String,
    pub outcome: Outcome,
    pub http_status: Option<u16>,
    pub attempts: u32,
    pub message: String,
}

const COLUMNS: [&str; 10] = [
    "source",
    "kind",
    "action",
    "organization",
    "organization_id",
    "target",
    "outcome",
    "http_status",
    "attempts",
    "message",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportFormat {
    Csv,
    Jsonl,
}

impl ReportFormat {
    pub fn for_path(path: &Path) -> ReportFormat {
        match path.extension().and_then(|e| e.to_str()) {
            Some(e) if e.eq_ignore_ascii_case("jsonl") => ReportFormat::Jsonl,
            _ => ReportFormat::Csv,
        }
    }
}

/// Writes report rows to a file created with mode 0600.
///
/// Each row is formatted whole in memory first and then handed to the file
/// buffer in one piece, so the buffer never spills half a row to disk: a run
/// killed at any moment leaves `FILE.partial` ending on a row boundary.
pub struct ReportWriter {
    /// `None`: rows are dropped (no `FILE.partial` beside a device).
    out: Option<BufWriter<File>>,
    format: ReportFormat,
    /// fsync on finish (a regular file; a device may refuse it).
    sync: bool,
}

impl ReportWriter {
    /// Create (truncate) `path`. `format` decides CSV or JSONL.
    pub fn create(path: &Path, format: ReportFormat) -> std::io::Result<ReportWriter> {
        ReportWriter::over(create_private(path)?, format, true)
    }

    /// Write to an existing device or pipe (`/dev/stdout`, `/dev/null`, a
    /// FIFO) as it is: never created, truncated, replaced or chmod-ed.
    pub fn direct(path: &Path, format: ReportFormat) -> std::io::Result<ReportWriter> {
        ReportWriter::over(std::fs::OpenOptions::new().write(true).open(path)?, format, false)
    }

    /// A writer that keeps nothing.
    pub fn disabled(format: ReportFormat) -> ReportWriter {
        ReportWriter { out: None, format, sync: false }
    }

    pub fn is_enabled(&self) -> bool {
        self.out.is_some()
    }

    fn over(file: File, format: ReportFormat, sync: bool) -> std::io::Result<ReportWriter> {
        // Reports of million-row inputs run to hundreds of MB: large writes.
        let mut out = BufWriter::with_capacity(64 * 1024, file);
        if format == ReportFormat::Csv {
            out.write_all(&csv_record(COLUMNS)?)?;
        }
        Ok(ReportWriter { out: Some(out), format, sync })
    }

    pub fn write(&mut self, row: &ReportRow) -> std::io::Result<()> {
        if self.out.is_none() {
            return Ok(());
        }
        let bytes = match self.format {
            ReportFormat::Jsonl => {
                let mut line = serde_json::to_vec(row)?;
                line.push(b'\n');
                line
            }
            ReportFormat::Csv => {
                // Spreadsheets run cells starting with = + - @; names come
                // from customers' data, so every text cell is escaped.
                let status = row.http_status.map(|s| s.to_string()).unwrap_or_default();
                let attempts = row.attempts.to_string();
                csv_record([
                    &*escape_formula(&row.source),
                    &row.kind,
                    &row.action,
                    &escape_formula(&row.organization),
                    &row.organization_id,
                    &escape_formula(&row.target),
                    row.outcome.as_str(),
                    &status,
                    &attempts,
                    &escape_formula(&row.message),
                ])?
            }
        };
        // One piece: the buffer spills whole rows only.
        match &mut self.out {
            Some(out) => out.write_all(&bytes),
            None => Ok(()),
        }
    }

    /// Flush buffers so an interrupted run keeps what was written.
    pub fn flush(&mut self) -> std::io::Result<()> {
        self.out.as_mut().map_or(Ok(()), |out| out.flush())
    }

    /// Flush, and fsync a regular file.
    pub fn finish(mut self) -> std::io::Result<()> {
        self.flush()?;
        match &self.out {
            Some(out) if self.sync => out.get_ref().sync_all(),
            _ => Ok(()),
        }
    }
}

/// One CSV record, formatted in memory.
fn csv_record<I, T>(cells: I) -> std::io::Result<Vec<u8>>
where
    I: IntoIterator<Item = T>,
    T: AsRef<[u8]>,
{
    let mut w = csv::WriterBuilder::new().buffer_capacity(512).from_writer(Vec::with_capacity(256));
    w.write_record(cells)?;
    w.into_inner().map_err(|e| e.into_error())
}

/// Create a file only the owner can read (0600 on Unix).
pub fn create_private(path: &Path) -> std::io::Result<File> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let f = opts.open(path)?;
    #[cfg(unix)]
    {
        // An existing file keeps its old mode with `mode()`: set it.
        use std::os::unix::fs::PermissionsExt;
        f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(f)
}

/// `FILE.partial`, where finished rows are appended while the run goes.
pub fn partial_path(report: &Path) -> PathBuf {
    let mut s = report.as_os_str().to_owned();
    s.push(".partial");
    PathBuf::from(s)
}

/// Failed rows the summary lists by `file:line`; the rest are in the report.
pub const LISTED_FAILURES: usize = 20;

/// Counts for the summary printed at the end of an import.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    pub outcomes: BTreeMap<Outcome, u64>,
    /// Outcomes by row kind (`organizations`, `members`, ...).
    pub by_kind: BTreeMap<String, BTreeMap<Outcome, u64>>,
    /// Planned rows by kind and action (what a dry run would do).
    pub planned: BTreeMap<(String, String), u64>,
    /// The first [`LISTED_FAILURES`] failed rows: (`file:line`, message).
    pub failures: Vec<(String, String)>,
    pub rows: u64,
    pub pruned_members: u64,
    pub pruned_properties: u64,
    pub pruned_links: u64,
    /// `--prune` removals that failed (see the log); the run exits 1.
    pub prune_failures: u64,
    /// Portal-only customers created for rows that named people by email.
    pub customers_created: u64,
    pub counters: CounterSnapshot,
    /// The endpoint whose requests needed the most time at its rate.
    pub busiest: Option<EndpointLoad>,
    pub elapsed: Duration,
    pub dry_run: bool,
    pub report: Option<PathBuf>,
    pub warnings: Vec<String>,
    pub aborted: Option<String>,
}

impl Summary {
    /// Count one outcome (a row whose kind and source are not known).
    pub fn count(&mut self, outcome: Outcome) {
        *self.outcomes.entry(outcome).or_default() += 1;
        self.rows += 1;
    }

    /// Count one finished report row.
    pub fn tally(&mut self, row: &ReportRow) {
        self.count(row.outcome);
        if !row.kind.is_empty() {
            // One entry per kind: the kind's name is copied once, not per row.
            if !self.by_kind.contains_key(&row.kind) {
                self.by_kind.insert(row.kind.clone(), BTreeMap::new());
            }
            let counts = self.by_kind.get_mut(&row.kind).expect("inserted above");
            *counts.entry(row.outcome).or_default() += 1;
        }
        match row.outcome {
            Outcome::Planned => *self.planned.entry((row.kind.clone(), row.action.clone())).or_default() += 1,
            Outcome::Failed if self.failures.len() < LISTED_FAILURES => {
                self.failures.push((row.source.clone(), row.message.clone()))
            }
            _ => {}
        }
    }

    pub fn failed(&self) -> u64 {
        self.outcomes.get(&Outcome::Failed).copied().unwrap_or(0)
    }

    /// Rows the run stopped before sending.
    pub fn not_sent(&self) -> u64 {
        self.outcomes.get(&Outcome::NotSent).copied().unwrap_or(0)
    }
    /// Anything left undone: failed or unsent rows, failed `--prune` removals.
    pub fn incomplete(&self) -> bool {
        self.failed() > 0 || self.not_sent() > 0 || self.prune_failures > 0
    }

    /// The `--json` summary: counts by outcome and kind, requests, 429s,
    /// retries, elapsed, exit code, report path.
    pub fn to_json(&self, exit: crate::error::Exit, error: Option<&str>) -> serde_json::Value {
        let counts = |m: &BTreeMap<Outcome, u64>| -> serde_json::Map<String, serde_json::Value> {
            m.iter().map(|(o, n)| (o.as_str().to_string(), (*n).into())).collect()
        };
        let by_kind: serde_json::Map<String, serde_json::Value> =
            self.by_kind.iter().map(|(k, m)| (k.clone(), counts(m).into())).collect();
        let planned: Vec<serde_json::Value> = self
            .planned
            .iter()
            .map(|((kind, action), n)| serde_json::json!({"kind": kind, "action": action, "rows": n}))
            .collect();
        let failures: Vec<serde_json::Value> =
            self.failures.iter().map(|(s, m)| serde_json::json!({"source": s, "message": m})).collect();
        serde_json::json!({
            "command": "import",
            "dry_run": self.dry_run,
            "exit_code": exit.code(),
            "rows": self.rows,
            "outcomes": counts(&self.outcomes),
            "by_kind": by_kind,
            "planned": planned,
            "pruned": {
                "members": self.pruned_members,
                "properties": self.pruned_properties,
                "service_desk_links": self.pruned_links,
                "failed": self.prune_failures,
            },
            "customers_created": self.customers_created,
            "requests": self.counters.requests,
            "retries": self.counters.retries,
            "rate_limited": self.counters.rate_limited,
            "elapsed_seconds": self.elapsed.as_secs_f64(),
            "busiest_endpoint": self.busiest.as_ref().map(EndpointLoad::to_json),
            "report": self.report,
            "failed_rows": failures,
            "warnings": self.warnings,
            "aborted": self.aborted,
            "error": error,
        })
    }
}

/// The traffic line every command's summary ends with, worded the same way:
/// `N requests (R/s), N retries, N rate limited (429), elapsed S s`.
pub fn traffic(requests: u64, retries: u64, rate_limited: u64, elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64();
    format!(
        "{} ({:.1}/s), {}, {} rate limited (429), elapsed {:.2}s",
        plural(requests, "request", "requests"),
        if secs > 0.0 { requests as f64 / secs } else { 0.0 },
        plural(retries, "retry", "retries"),
        rate_limited,
        secs
    )
}

/// `n thing` / `n things`.
pub fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// What a planned row of `kind` with `action` would do, as a verb phrase.
fn planned_phrase(kind: &str, action: &str, n: u64) -> String {
    let (verb, one, many) = match (kind, action) {
        ("organizations", "delete") => ("delete", "organization", "organizations"),
        ("organizations", _) => ("create", "organization", "organizations"),
        ("members", "remove") => ("remove", "member", "members"),
        ("members", _) => ("add", "member", "members"),
        ("properties", "delete") => ("delete", "property", "properties"),
        ("properties", _) => ("set", "property", "properties"),
        ("service_desks", "unlink") => ("unlink", "desk link", "desk links"),
        ("service_desks", _) => ("link", "desk link", "desk links"),
        (_, a) => return format!("{a} {}", plural(n, "row", "rows")),
    };
    format!("{verb} {}", plural(n, one, many))
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let title = match (&self.aborted, self.dry_run) {
            (Some(_), _) => "import ABORTED",
            (None, true) => "import (dry run)",
            (None, false) => "import",
        };
        writeln!(f, "{title}: {}", plural(self.rows, "row", "rows"))?;
        for o in Outcome::ALL {
            let Some(n) = self.outcomes.get(&o) else { continue };
            let kinds: Vec<String> =
                self.by_kind.iter().filter_map(|(k, m)| m.get(&o).map(|n| format!("{k} {n}"))).collect();
            let detail = if kinds.len() > 1 { format!("  ({})", kinds.join(", ")) } else { String::new() };
            writeln!(f, "  {:<10} {n}{detail}", o.as_str())?;
        }
        if !self.planned.is_empty() {
            let phrases: Vec<String> =
                self.planned.iter().map(|((kind, action), n)| planned_phrase(kind, action, *n)).collect();
            writeln!(f, "  would      {}", phrases.join(", "))?;
        }
        let pruned = self.pruned_members + self.pruned_properties + self.pruned_links;
        if pruned > 0 {
            writeln!(
                f,
                "  {:<10} {}, {}, {}",
                if self.dry_run { "would prune" } else { "pruned" },
                plural(self.pruned_members, "member", "members"),
                plural(self.pruned_properties, "property", "properties"),
                plural(self.pruned_links, "desk link", "desk links")
            )?;
        }
        if self.customers_created > 0 {
            writeln!(f, "  customers  {} created", self.customers_created)?;
        }
        if self.prune_failures > 0 {
            writeln!(
                f,
                "  prune      {} FAILED (see the log above)",
                plural(self.prune_failures, "removal", "removals")
            )?;
        }
        let c = &self.counters;
        writeln!(f, "  {}", traffic(c.requests, c.retries, c.rate_limited, self.elapsed))?;
        if let Some(b) = &self.busiest {
            writeln!(f, "  {}", b.describe(self.elapsed))?;
        }
        if !self.failures.is_empty() {
            let more = self.failed().saturating_sub(self.failures.len() as u64);
            writeln!(
                f,
                "  failed rows{}:",
                if more > 0 { format!(" (first {})", self.failures.len()) } else { String::new() }
            )?;
            for (source, message) in &self.failures {
                writeln!(f, "    {source}: {message}")?;
            }
            if more > 0 {
                writeln!(f, "    … and {} more in the report", plural(more, "row", "rows"))?;
            }
        }
        if let Some(p) = &self.report {
            writeln!(f, "  report: {}", p.display())?;
        }
        if let Some(a) = &self.aborted {
            writeln!(f, "  ABORTED: {a}")?;
        }
        for w in &self.warnings {
            writeln!(f, "  warning: {w}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(org: &str) -> ReportRow {
        ReportRow {
            source: "in.csv:2".into(),
            kind: "members".into(),
            action: "add".into(),
            organization: org.into(),
            organization_id: "7".into(),
            target: "acc-1".into(),
            outcome: Outcome::Added,
            http_status: Some(204),
            attempts: 1,
            message: String::new(),
        }
    }

    #[test]
    fn csv_report_has_header_escapes_formulas_and_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r.csv");
        let mut w = ReportWriter::create(&p, ReportFormat::for_path(&p)).unwrap();
        w.write(&row("=HYPERLINK(\"x\")")).unwrap();
        w.write(&row("Acme, \"Inc\"\nLine 2")).unwrap();
        w.finish().unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        let mut r = csv::Reader::from_reader(text.as_bytes());
        assert_eq!(r.headers().unwrap().iter().collect::<Vec<_>>(), COLUMNS.to_vec());
        let rows: Vec<csv::StringRecord> = r.records().map(|r| r.unwrap()).collect();
        assert_eq!(&rows[0][3], "'=HYPERLINK(\"x\")");
        assert_eq!(&rows[1][3], "Acme, \"Inc\"\nLine 2");
        assert_eq!(&rows[1][6], "added");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
        }
    }

    #[test]
    fn unflushed_rows_reach_the_file_whole() {
        for name in ["r.csv", "r.jsonl"] {
            let dir = tempfile::tempdir().unwrap();
            let p = dir.path().join(name);
            let mut w = ReportWriter::create(&p, ReportFormat::for_path(&p)).unwrap();
            let mut r = row("Acme, \"Inc\"");
            r.message = "x".repeat(300);
            // ~140 KB: more than the 64 KiB buffer holds, so it spills.
            for _ in 0..400 {
                w.write(&r).unwrap();
            }
            // No flush: whatever the buffer spilled must be whole rows.
            let text = std::fs::read_to_string(&p).unwrap();
            assert!(text.len() > 64 * 1024, "{name}: the buffer spilled");
            assert!(text.ends_with('\n'), "{name}: ends inside a row");
            let messages: Vec<String> = if name.ends_with(".jsonl") {
                text.lines()
                    .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["message"].to_string())
                    .collect()
            } else {
                let mut rd = csv::Reader::from_reader(text.as_bytes());
                rd.records().map(|rec| rec.unwrap()[9].to_string()).collect()
            };
            assert!(messages.iter().all(|m| m.contains(&"x".repeat(300))), "{name}: a row was cut");
            drop(w);
        }
    }

    #[test]
    fn jsonl_report_is_one_object_per_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r.jsonl");
        assert_eq!(ReportFormat::for_path(&p), ReportFormat::Jsonl);
        let mut w = ReportWriter::create(&p, ReportFormat::Jsonl).unwrap();
        w.write(&row("=x")).unwrap();
        w.finish().unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        let v: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(v["organization"], "=x");
        assert_eq!(v["outcome"], "added");
        assert_eq!(v["http_status"], 204);
    }
}
