//! `diff OLD NEW`: what changed between two snapshots.
//!
//! Owns the verb's contract: both folders read through the snapshot reader
//! (JSONL or CSV, in any mix), refused when their manifests name different
//! sites unless `--across-sites`; the four kinds merged in turn by
//! [`merge`](super::merge); one report row per difference with the columns
//! `kind,change,organization,organization_id,target,old,new` (CSV, or JSONL
//! for a `.jsonl` report; CSV on the given writer, normally stdout, without
//! `--report`); and the counts per kind. It must not talk to the network.
//! Memory stays flat for snapshots of one site: one record per side per
//! kind is held at a time.

use std::fmt;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::merge::{self, Change, Entry, Found, OutOfOrder};
use super::read::{ReadError, SnapshotDir, SnapshotRecord};
use crate::model::{escape_formula, DeskLinkRecord, MemberRecord, OrgRecord, PropertyRecord, DATA_FILES};

/// What to compare and where the report goes.
#[derive(Debug, Clone)]
pub struct DiffOptions {
    pub old: PathBuf,
    pub new: PathBuf,
    /// Report file (CSV, or JSONL when it ends in `.jsonl`); `None` writes
    /// CSV to the writer passed to [`diff`].
    pub report: Option<PathBuf>,
    /// Match organizations by name and desks by project key.
    pub across_sites: bool,
}

/// Added, removed and changed counts of one kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub added: u64,
    pub removed: u64,
    pub changed: u64,
}

impl Counts {
    fn total(&self) -> u64 {
        self.added + self.removed + self.changed
    }
}

/// The outcome of a diff.
#[derive(Debug, Clone, PartialEq)]
pub struct DiffSummary {
    pub old: PathBuf,
    pub new: PathBuf,
    /// Per kind, in [`DATA_FILES`] order.
    pub kinds: Vec<(&'static str, Counts)>,
    pub report: Option<PathBuf>,
}

impl DiffSummary {
    pub fn identical(&self) -> bool {
        self.kinds.iter().all(|(_, c)| c.total() == 0)
    }

    pub fn to_json(&self, exit_code: u8) -> serde_json::Value {
        let mut m = serde_json::Map::new();
        m.insert("command".into(), "diff".into());
        m.insert("exit_code".into(), exit_code.into());
        m.insert("old".into(), self.old.display().to_string().into());
        m.insert("new".into(), self.new.display().to_string().into());
        m.insert("identical".into(), self.identical().into());
        for (kind, counts) in &self.kinds {
            m.insert((*kind).into(), serde_json::to_value(counts).expect("counts serialize"));
        }
        m.insert("report".into(), self.report.as_ref().map(|p| p.display().to_string()).into());
        serde_json::Value::Object(m)
    }
}

impl fmt::Display for DiffSummary {
    /// Every line ends with a newline.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = if self.identical() { "identical" } else { "different" };
        writeln!(f, "diff {} -> {}: {verdict}", self.old.display(), self.new.display())?;
        for (kind, c) in &self.kinds {
            writeln!(f, "  {kind}: {} added, {} removed, {} changed", c.added, c.removed, c.changed)?;
        }
        if let Some(report) = &self.report {
            writeln!(f, "  report: {}", report.display())?;
        }
        Ok(())
    }
}

/// Why a diff could not be made (exit 2).
#[derive(Debug, thiserror::Error)]
pub enum DiffError {
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error(
        "{} is a snapshot of {} but {} is of {}: to compare two sites (organizations by name, desks by project key) add --across-sites",
        .old.display(), .old_site, .new.display(), .new_site
    )]
    DifferentSites { old: PathBuf, old_site: String, new: PathBuf, new_site: String },
    #[error(
        "{}: {kind} are not in the order export writes them (after record {after}): diff compares snapshots as export wrote them",
        .dir.display()
    )]
    OutOfOrder { dir: PathBuf, kind: &'static str, after: usize },
    #[error("{}: {}", .0.display(), .1)]
    Io(PathBuf, #[source] io::Error),
}

/// One report row.
#[derive(Debug, Serialize)]
struct Row<'a> {
    kind: &'static str,
    change: &'static str,
    organization: &'a str,
    organization_id: &'a str,
    target: &'a str,
    old: &'a str,
    new: &'a str,
}

const COLUMNS: [&str; 7] = ["kind", "change", "organization", "organization_id", "target", "old", "new"];

enum Report<'w> {
    Csv(Box<csv::Writer<Box<dyn Write + 'w>>>),
    Jsonl(Box<dyn Write + 'w>),
}

impl Report<'_> {
    fn write(&mut self, row: &Row<'_>) -> io::Result<()> {
        match self {
            Report::Csv(w) => {
                let cells = [row.kind, row.change, row.organization, row.organization_id, row.target, row.old, row.new];
                w.write_record(cells.map(|c| escape_formula(c).into_owned())).map_err(io::Error::from)
            }
            Report::Jsonl(w) => {
                serde_json::to_writer(&mut *w, row)?;
                w.write_all(b"\n")
            }
        }
    }

    fn finish(self) -> io::Result<()> {
        match self {
            Report::Csv(mut w) => w.flush(),
            Report::Jsonl(mut w) => w.flush(),
        }
    }
}

/// Compare two snapshots; the report goes to `opts.report` (written to a
/// temporary file, then renamed) or, without one, as CSV to `stdout`.
pub fn diff(opts: &DiffOptions, stdout: &mut dyn Write) -> Result<DiffSummary, DiffError> {
    let old = SnapshotDir::open(&opts.old)?;
    let new = SnapshotDir::open(&opts.new)?;
    if !opts.across_sites {
        if let (Some(a), Some(b)) = (old.manifest(), new.manifest()) {
            if a.site_key() != b.site_key() {
                return Err(DiffError::DifferentSites {
                    old: opts.old.clone(),
                    old_site: a.site.clone(),
                    new: opts.new.clone(),
                    new_site: b.site.clone(),
                });
            }
        }
    }
    let mut summary = DiffSummary { old: opts.old.clone(), new: opts.new.clone(), kinds: Vec::new(), report: None };
    match &opts.report {
        None => {
            let report = open_report(Box::new(BufWriter::new(stdout)), false).map_err(io_at(Path::new("stdout")))?;
            summary.kinds = diff_all(&old, &new, opts.across_sites, report, Path::new("stdout"))?;
        }
        Some(path) => {
            let dir = match path.parent() {
                Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                _ => PathBuf::from("."),
            };
            let tmp = tempfile::Builder::new().prefix(".jsm-orgs-diff-").tempfile_in(&dir).map_err(io_at(&dir))?;
            let file = tmp.reopen().map_err(io_at(tmp.path()))?;
            let jsonl = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("jsonl"));
            let report = open_report(Box::new(BufWriter::new(file)), jsonl).map_err(io_at(path))?;
            summary.kinds = diff_all(&old, &new, opts.across_sites, report, path)?;
            tmp.persist(path).map_err(|e| DiffError::Io(path.clone(), e.error))?;
            summary.report = Some(path.clone());
        }
    }
    Ok(summary)
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> DiffError + '_ {
    move |e| DiffError::Io(path.to_path_buf(), e)
}

fn open_report<'w>(out: Box<dyn Write + 'w>, jsonl: bool) -> io::Result<Report<'w>> {
    if jsonl {
        return Ok(Report::Jsonl(out));
    }
    let mut w = csv::Writer::from_writer(out);
    w.write_record(COLUMNS)?;
    Ok(Report::Csv(Box::new(w)))
}

/// Diff the four kinds in turn into `report`.
fn diff_all(
    old: &SnapshotDir,
    new: &SnapshotDir,
    across: bool,
    mut report: Report<'_>,
    report_path: &Path,
) -> Result<Vec<(&'static str, Counts)>, DiffError> {
    let mut kinds = Vec::new();
    for kind in DATA_FILES {
        let counts = match kind {
            "organizations" => diff_kind::<OrgRecord>(old, new, across, merge::org_entry, &mut report, report_path)?,
            "members" => diff_kind::<MemberRecord>(old, new, across, merge::member_entry, &mut report, report_path)?,
            "properties" => {
                diff_kind::<PropertyRecord>(old, new, across, merge::property_entry, &mut report, report_path)?
            }
            _ => diff_kind::<DeskLinkRecord>(old, new, across, merge::link_entry, &mut report, report_path)?,
        };
        kinds.push((kind, counts));
    }
    report.finish().map_err(io_at(report_path))?;
    Ok(kinds)
}

type Entries<'a> = Box<dyn Iterator<Item = Result<Entry, DiffError>> + 'a>;

/// The entries of one side: streamed in file order for one site, sorted in
/// memory across sites (where the match keys are not the files' order).
fn entries<T: SnapshotRecord + 'static>(
    snap: &SnapshotDir,
    across: bool,
    to_entry: fn(T, bool) -> Entry,
) -> Result<Entries<'static>, DiffError> {
    let records = snap.records::<T>()?;
    let stream = records.map(move |r| r.map(|r| to_entry(r, across)).map_err(DiffError::from));
    if !across {
        return Ok(Box::new(stream));
    }
    let mut all = stream.collect::<Result<Vec<Entry>, DiffError>>()?;
    all.sort_by(|a, b| a.key.cmp(&b.key));
    // One name twice on a site (possible on JSM): the first of each key.
    all.dedup_by(|b, a| a.key == b.key);
    Ok(Box::new(all.into_iter().map(Ok)))
}

fn diff_kind<T: SnapshotRecord + 'static>(
    old: &SnapshotDir,
    new: &SnapshotDir,
    across: bool,
    to_entry: fn(T, bool) -> Entry,
    report: &mut Report<'_>,
    report_path: &Path,
) -> Result<Counts, DiffError> {
    let mut counts = Counts::default();
    let mut sink = |found: Found<'_>| -> Result<(), DiffError> {
        match found.change {
            Change::Added => counts.added += 1,
            Change::Removed => counts.removed += 1,
            Change::Changed => counts.changed += 1,
        }
        let row = Row {
            kind: T::KIND,
            change: found.change.as_str(),
            organization: &found.entry.organization,
            organization_id: &found.entry.organization_id,
            target: found.target,
            old: found.old,
            new: found.new,
        };
        report.write(&row).map_err(io_at(report_path))
    };
    let merged = merge::merge(entries(old, across, to_entry)?, entries(new, across, to_entry)?, &mut sink)?;
    match merged {
        Ok(()) => Ok(counts),
        Err(OutOfOrder { new_side, after }) => Err(DiffError::OutOfOrder {
            dir: if new_side { new.path().to_path_buf() } else { old.path().to_path_buf() },
            kind: T::KIND,
            after,
        }),
    }
}
