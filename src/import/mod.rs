//! `import`: make the site match the input files.
//!
//! Owns the order of a run — open and check the input, list the site's
//! organizations, fold the rows into the wanted state, read only the live
//! state the plan needs, plan, create/delete organizations, run everything
//! else, write the ordered report — and is the single consumer of every
//! stream of finished work: it alone touches the progress bar, the
//! `FILE.partial` writer and the per-row outcomes. It sends nothing itself
//! (the executor does) and decides nothing about what to change (the plan
//! does).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;

mod reads;

use crate::api::{ApiError, Client};
use crate::executor::{ExecContext, Fallback, OpDone};
use crate::input::{InputError, InputSet, InvalidRow, OrgRef, RowData};
use crate::lanes::Lanes;
use crate::plan::{self, Desired, Live, RowIdx, Settled};
use crate::progress::Progress;
use crate::report::{partial_path, Outcome, ReportFormat, ReportRow, ReportWriter, RowOutcome, Summary};
use crate::report_path::{self, ReportTarget};
use crate::report_rebuild::{write_rebuilt, write_report};
use crate::resolve::Resolver;
use crate::settings::ImportOptions;
use crate::snapshot::{self, manifest::MANIFEST};
use crate::throttle::CounterSnapshot;

/// Invalid rows named on stderr as they are read; the rest are in the report.
const SHOWN_INVALID: u64 = 20;

/// Why an import ended without running to completion.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// Unreadable or malformed input: nothing was sent (exit 2).
    #[error(transparent)]
    Input(#[from] InputError),
    /// A snapshot folder failed verification: nothing was sent (exit 2).
    #[error("{0}")]
    Snapshot(String),
    /// `--report` names a file it must not replace: nothing was sent (exit 2).
    #[error("{0}")]
    Report(String),
    /// `--strict` found invalid rows: nothing was sent (exit 2).
    #[error("--strict: {0} invalid rows, nothing was sent (see the report {1})")]
    Strict(u64, PathBuf),
    /// A local file could not be written (exit 3).
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    /// The run stopped early: bad credentials, missing permission, site
    /// unreachable (exit 3). The report still has one row per input row.
    #[error("{message}")]
    Aborted { message: String, summary: Box<Summary> },
}

pub(crate) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ImportError + '_ {
    move |source| ImportError::Io { path: path.to_path_buf(), source }
}

/// State of the single consumer.
struct Run<'a> {
    opts: &'a ImportOptions,
    target: ReportTarget,
    partial: ReportWriter,
    partial_path: PathBuf,
    outcomes: Vec<Option<RowOutcome>>,
    /// Report targets of rows that name a person by email: the account id used.
    targets: HashMap<RowIdx, Arc<str>>,
    org_ids: Vec<Option<u64>>,
    summary: Summary,
    progress: Progress,
    /// Failed rows so far, and where the 429 count comes from (live in the progress display).
    failed: u64,
    throttle: Arc<crate::throttle::Throttle>,
}

impl Run<'_> {
    fn record(&mut self, d: &Desired, mut s: Settled) -> Result<(), ImportError> {
        if let Some(person) = d.people.get(&s.row) {
            s.target = person.target.clone();
            s.outcome.message = Some(match &s.outcome.message {
                Some(m) => format!("{}; {m}", person.note).into(),
                None => person.note.clone(),
            });
        }
        if let Some(note) = d.notes.get(&s.row) {
            s.outcome.message = Some(match &s.outcome.message {
                Some(m) => format!("{note}; {m}").into(),
                None => note.clone(),
            });
        }
        if d.meta[s.row as usize].email {
            self.targets.insert(s.row, s.target.clone());
        }
        let row = settled_row(d, &self.org_ids, &s);
        self.partial.write(&row).map_err(io_err(&self.partial_path))?;
        if s.outcome.outcome == Outcome::Failed {
            self.failed += 1;
            self.progress.counts(self.failed, self.throttle.snapshot().rate_limited);
        }
        let slot = &mut self.outcomes[s.row as usize];
        debug_assert!(slot.is_none(), "row {} settled twice", s.row);
        *slot = Some(s.outcome);
        Ok(())
    }

    fn record_done(&mut self, d: &Desired, done: OpDone) -> Result<(), ImportError> {
        self.summary.pruned_members += done.pruned.members;
        self.summary.pruned_properties += done.pruned.properties;
        self.summary.pruned_links += done.pruned.links;
        self.summary.prune_failures += done.pruned.failed;
        if let Some(id) = done.created {
            self.org_ids[done.org as usize] = Some(id);
        }
        for s in done.rows {
            self.record(d, s)?;
        }
        self.partial.flush().map_err(io_err(&self.partial_path))?;
        self.progress.inc(1);
        self.progress.counts(self.failed, self.throttle.snapshot().rate_limited);
        Ok(())
    }
}

/// The report row of a settled row, while the run goes (the partial report).
fn settled_row(d: &Desired, org_ids: &[Option<u64>], s: &Settled) -> ReportRow {
    let meta = &d.meta[s.row as usize];
    let (organization, organization_id) = match s.org {
        Some(o) => (
            d.orgs[o as usize].name.clone(),
            org_ids.get(o as usize).copied().flatten().map(|i| i.to_string()).unwrap_or_default(),
        ),
        None => (String::new(), String::new()),
    };
    ReportRow {
        source: d.source(s.row),
        kind: meta.kind.map(|k| k.as_str().to_string()).unwrap_or_default(),
        action: meta.action.map(|a| a.as_str().to_string()).unwrap_or_default(),
        organization,
        organization_id,
        target: s.target.to_string(),
        outcome: s.outcome.outcome,
        http_status: s.outcome.http_status,
        attempts: s.outcome.attempts,
        message: s.outcome.message.as_deref().unwrap_or("").to_string(),
    }
}

fn invalid_row(inv: &InvalidRow) -> ReportRow {
    ReportRow {
        source: inv.source.to_string(),
        kind: inv.kind.map(|k| k.as_str().to_string()).unwrap_or_default(),
        action: inv.action.clone().unwrap_or_default(),
        organization: inv.organization.clone().unwrap_or_default(),
        organization_id: inv.organization_id.clone().unwrap_or_default(),
        target: inv.target.clone().unwrap_or_default(),
        outcome: Outcome::Failed,
        http_status: None,
        attempts: 0,
        message: inv.message.clone(),
    }
}

/// Run an import. Returns the summary of a run that went to the end (some
/// rows may have failed: see [`Summary::failed`]).
pub async fn import(client: &Client, opts: &ImportOptions) -> Result<Summary, ImportError> {
    let started = Instant::now();
    let counted_from = client.throttle().snapshot();
    let counters = || client.throttle().snapshot().since(&counted_from);
    verify_snapshots(&opts.paths, opts.allow_edited)?;
    let routes_from = client.throttle().route_counts();
    let (input, mut run) = open(client, opts)?;

    // 1. The site's organizations (needed to resolve names and ids).
    let live_orgs = match client.all_organizations().await {
        Ok(o) => o.value,
        Err(e) => return abort_before_rows(&input, &mut run, &e, counters(), started),
    };

    // 2. Fold the rows into the wanted state.
    let mut d = Desired::new(&live_orgs);
    d.same_site = snapshot_of_this_site(&opts.paths, client);
    drop(live_orgs);
    fold_rows(&input, &mut d, &mut run)?;

    // 2b. People named by email: looked up (or created) once per email.
    let resolver = Arc::new(Resolver::new(client.clone(), opts.create_customers, opts.dry_run));
    reads::resolve_people(client, &resolver, &mut d, &mut run).await?;

    // 3. Desks named by rows (key or id) become the site's ids; rows naming
    //    a desk the site lacks fail now, in a dry run as in the real run.
    let site_desks = match reads::resolve_desks(client, &mut d, &mut run).await? {
        Ok(desks) => desks,
        Err(e) => return finish_aborted(&input, &d, run, &e, counters(), started),
    };

    // 4. Read only the live state the plan needs.
    let live = match reads::read_live(client, &d, &mut run, site_desks).await {
        Ok(live) => live,
        Err(e) => return finish_aborted(&input, &d, run, &e, counters(), started),
    };

    // 5. Plan; rows that need no call are settled now (and on disk).
    let plan = plan_rows(&mut d, &live, &mut run)?;
    drop(live);
    // An input edited while the site was read is not applied half old, half new.
    if let Err(changed) = input.check_unchanged() {
        fill_not_sent(&mut run, &format!("not sent: {changed}"));
        return write_final(&input, &d, run, counters(), started);
    }

    // 6. The writes, one lane per endpoint.
    write_all(client, &d, &mut run, plan, &resolver).await?;
    run.summary.customers_created = resolver.created();
    let aborted = client.throttle().abort_reason();
    let mut summary = write_final(&input, &d, run, counters(), started)?;
    summary.busiest = client.throttle().busiest_since(&routes_from);
    match aborted {
        Some(message) => Err(ImportError::Aborted { message, summary: Box::new(summary) }),
        None => Ok(summary),
    }
}

/// Open and check the input and the report path (`--strict` checks every
/// row here), and set up the run's single consumer.
fn open<'a>(client: &Client, opts: &'a ImportOptions) -> Result<(InputSet, Run<'a>), ImportError> {
    let input = InputSet::open(&opts.paths)?;
    for w in input.warnings() {
        tracing::warn!("{w}");
    }
    let target = report_path::check(&opts.report, &opts.paths, input.files()).map_err(ImportError::Report)?;
    let format = ReportFormat::for_path(&opts.report);
    if opts.strict {
        strict_check(&input, opts, format, target)?;
    }
    let partial_path = partial_path(&opts.report);
    let partial = match target {
        ReportTarget::File => ReportWriter::create(&partial_path, format).map_err(io_err(&partial_path))?,
        ReportTarget::Direct => ReportWriter::disabled(format),
    };
    let summary = Summary { dry_run: opts.dry_run, warnings: input.warnings().to_vec(), ..Summary::default() };
    let run = Run {
        opts,
        target,
        partial,
        partial_path,
        outcomes: Vec::new(),
        targets: HashMap::new(),
        org_ids: Vec::new(),
        summary,
        progress: Progress::new(opts.progress, "tasks"),
        failed: 0,
        throttle: client.throttle().clone(),
    };
    Ok((input, run))
}

/// Fold every row into `d`; invalid rows (and rows naming an unknown
/// organization id) are settled at once and on disk before the site is read.
fn fold_rows(input: &InputSet, d: &mut Desired, run: &mut Run<'_>) -> Result<(), ImportError> {
    let mut invalid = 0u64;
    for r in input.rows() {
        match r? {
            Ok(row) => {
                run.outcomes.push(None);
                if let Err(settled) = d.add(row) {
                    run.record(d, settled)?;
                }
            }
            Err(inv) => {
                invalid += 1;
                if invalid <= SHOWN_INVALID {
                    tracing::warn!("{}", inv.message);
                }
                d.add_invalid(&inv);
                run.partial.write(&invalid_row(&inv)).map_err(io_err(&run.partial_path))?;
                run.outcomes.push(Some(RowOutcome::failed(inv.message)));
            }
        }
    }
    if invalid > SHOWN_INVALID {
        tracing::warn!("{} more invalid rows: see the report", invalid - SHOWN_INVALID);
    }
    run.org_ids = d.orgs.iter().map(|o| o.live_id).collect();
    run.partial.flush().map_err(io_err(&run.partial_path))
}

/// Plan, settling the rows that need no call; they are on disk before the
/// first write.
fn plan_rows(d: &mut Desired, live: &Live, run: &mut Run<'_>) -> Result<plan::Plan, ImportError> {
    let mut settle_err = None;
    let (prune, chunk_size) = (run.opts.prune, run.opts.chunk_size);
    let plan = plan::plan(d, live, prune, chunk_size, &mut |d, s| {
        if settle_err.is_none() {
            settle_err = run.record(d, s).err();
        }
    });
    if let Some(e) = settle_err {
        return Err(e);
    }
    run.partial.flush().map_err(io_err(&run.partial_path))?;
    tracing::debug!(org_ops = plan.org_ops.len(), ops = plan.ops.len(), "planned");
    Ok(plan)
}

/// The writes, one lane per endpoint: an organization's members, properties
/// and links go as soon as it exists, while the next ones are created.
async fn write_all(
    client: &Client,
    d: &Desired,
    run: &mut Run<'_>,
    mut plan: plan::Plan,
    resolver: &Arc<Resolver>,
) -> Result<(), ImportError> {
    let ctx = ExecContext {
        names: Arc::new(d.orgs.iter().map(|o| o.name.clone()).collect()),
        dry_run: run.opts.dry_run,
        fallback: (!plan.contacts.is_empty())
            .then(|| Arc::new(Fallback { resolver: resolver.clone(), contacts: std::mem::take(&mut plan.contacts) })),
    };
    run.progress.phase("writing");
    run.progress.add_work(plan.writes() as u64);
    let ids = run.org_ids.clone();
    let (mut lanes, mut stream, settled) = Lanes::start(client.clone(), ctx, plan, ids, conc(client));
    for done in settled {
        run.record_done(d, done)?;
    }
    while let Some(done) = stream.next().await {
        for settled in lanes.finished(&done) {
            run.record_done(d, settled)?;
        }
        run.record_done(d, done)?;
    }
    drop(stream);
    run.progress.finish();
    Ok(())
}

/// Every row not yet settled is `not_sent` with `note`.
fn fill_not_sent(run: &mut Run<'_>, note: &str) {
    let note: Arc<str> = note.into();
    for o in run.outcomes.iter_mut().filter(|o| o.is_none()) {
        *o = Some(RowOutcome::not_sent(note.clone()));
    }
}

/// Every input folder holding a `manifest.json` must be an intact
/// snapshot before anything is sent, unless `--allow-edited`.
fn verify_snapshots(paths: &[PathBuf], allow_edited: bool) -> Result<(), ImportError> {
    for dir in paths.iter().filter(|p| p.is_dir() && p.join(MANIFEST).is_file()) {
        let problem = match snapshot::verify(dir) {
            Ok(report) if report.is_intact() => continue,
            Ok(report) => {
                let damaged: Vec<String> = report
                    .damaged()
                    .map(|f| format!("{}: {}", f.name, f.problem.as_deref().unwrap_or_default()))
                    .collect();
                format!("{} is a damaged snapshot: {}", dir.display(), damaged.join("; "))
            }
            Err(e) => e.to_string(),
        };
        if allow_edited {
            tracing::warn!("{problem}; importing it anyway (--allow-edited)");
            continue;
        }
        return Err(ImportError::Snapshot(format!(
            "{problem}; nothing was sent. If it was edited on purpose, import it with --allow-edited \
             (or copy the data files out of the snapshot folder and import those)"
        )));
    }
    Ok(())
}

/// Whether an input folder is a snapshot of the site being imported into
/// (its manifest names this site): ids in it are then this site's ids.
fn snapshot_of_this_site(paths: &[PathBuf], client: &Client) -> bool {
    let api = client.api_base().as_str();
    let site = api.trim_end_matches('/').trim_end_matches("/rest/servicedeskapi");
    let here = crate::snapshot::manifest::site_key(site);
    paths.iter().filter(|p| p.is_dir()).any(
        |dir| matches!(crate::snapshot::manifest::Manifest::read_if_present(dir), Ok(Some(m)) if m.site_key() == here),
    )
}

fn conc(client: &Client) -> usize {
    client.throttle().concurrency()
}

/// `--strict`: validate every row before anything is sent.
fn strict_check(
    input: &InputSet,
    opts: &ImportOptions,
    format: ReportFormat,
    target: ReportTarget,
) -> Result<(), ImportError> {
    let mut invalid = 0u64;
    for r in input.rows() {
        if let Err(inv) = r? {
            invalid += 1;
            if invalid <= SHOWN_INVALID {
                tracing::error!("{}", inv.message);
            }
        }
    }
    if invalid == 0 {
        return Ok(());
    }
    let note: Arc<str> = format!("not sent: --strict found {invalid} invalid rows").into();
    write_report(&opts.report, (format, target), input, &mut Summary::default(), |row| match row {
        Ok(row) => (
            plain_row(row, None),
            RowOutcome { outcome: Outcome::Planned, http_status: None, attempts: 0, message: Some(note.clone()) },
        ),
        Err(inv) => (invalid_row(inv), RowOutcome::failed(inv.message.clone())),
    })?;
    Err(ImportError::Strict(invalid, opts.report.clone()))
}

/// The site could not even be listed: every row fails, exit 3.
fn abort_before_rows(
    input: &InputSet,
    run: &mut Run<'_>,
    e: &ApiError,
    counters: CounterSnapshot,
    started: Instant,
) -> Result<Summary, ImportError> {
    let message = abort_message(e);
    let note: Arc<str> = format!("not sent: {message}").into();
    let mut summary = std::mem::take(&mut run.summary);
    let spec = (ReportFormat::for_path(&run.opts.report), run.target);
    write_report(&run.opts.report, spec, input, &mut summary, |row| match row {
        Ok(row) => (plain_row(row, None), RowOutcome::not_sent(note.clone())),
        Err(inv) => (invalid_row(inv), RowOutcome::failed(inv.message.clone())),
    })?;
    let _ = std::fs::remove_file(&run.partial_path);
    summary.elapsed = started.elapsed();
    summary.counters = counters;
    summary.aborted = Some(message.clone());
    summary.report = Some(run.opts.report.clone());
    Err(ImportError::Aborted { message, summary: Box::new(summary) })
}

fn abort_message(e: &ApiError) -> String {
    match e.fatal_hint() {
        Some(h) => format!("{e}: {h}"),
        None => format!("could not read the site: {e}"),
    }
}

fn finish_aborted(
    input: &InputSet,
    d: &Desired,
    mut run: Run<'_>,
    e: &ApiError,
    counters: CounterSnapshot,
    started: Instant,
) -> Result<Summary, ImportError> {
    let message = abort_message(e);
    fill_not_sent(&mut run, &format!("not sent: {message}"));
    let summary = write_final(input, d, run, counters, started)?;
    Err(ImportError::Aborted { message, summary: Box::new(summary) })
}

/// The ordered report: re-stream the input (so memory stays bounded) and
/// pair each row with its outcome; then replace `FILE.partial`.
fn write_final(
    input: &InputSet,
    d: &Desired,
    run: Run<'_>,
    counters: CounterSnapshot,
    started: Instant,
) -> Result<Summary, ImportError> {
    let Run { opts, target, partial, partial_path, outcomes, targets, org_ids, mut summary, .. } = run;
    partial.finish().map_err(io_err(&partial_path))?;
    let format = ReportFormat::for_path(&opts.report);
    let mut idx = 0usize;
    let before = summary.clone();
    let written = write_report(&opts.report, (format, target), input, &mut summary, |row| {
        let outcome = outcomes
            .get(idx)
            .cloned()
            .flatten()
            .unwrap_or_else(|| RowOutcome::failed("internal error: row was never run"));
        idx += 1;
        let target = targets.get(&((idx - 1) as RowIdx));
        match row {
            Ok(row) => {
                let mut report = plain_row(row, Some((d, &org_ids)));
                if let Some(t) = target {
                    report.target = t.to_string();
                }
                (report, outcome)
            }
            Err(inv) => (invalid_row(inv), outcome),
        }
    });
    // The input changed under the run: the report is rebuilt from what the
    // run recorded, and the run ends as aborted ("input changed"), never as
    // bad input (exit 2 would say nothing was sent).
    let changed = match written {
        Err(ImportError::Input(InputError::Changed { path })) => Some(path),
        other => other.map(|()| None)?,
    };
    if changed.is_some() {
        summary = before;
        write_rebuilt(d, &outcomes, &partial_path, &opts.report, (format, target), &mut summary)?;
    }
    if target == ReportTarget::File {
        std::fs::remove_file(&partial_path).map_err(io_err(&partial_path))?;
    }
    summary.counters = counters;
    summary.elapsed = started.elapsed();
    summary.report = Some(opts.report.clone());
    match changed {
        None => Ok(summary),
        Some(path) => {
            let message = format!(
                "input changed: {} was modified during the run; the report says what was done, run again to finish",
                path.display()
            );
            summary.aborted = Some(message.clone());
            Err(ImportError::Aborted { message, summary: Box::new(summary) })
        }
    }
}

/// Report columns of a valid row; organization names/ids resolved through
/// the run's tables when given.
fn plain_row(row: &crate::input::Row, tables: Option<(&Desired, &Vec<Option<u64>>)>) -> ReportRow {
    let (mut organization, mut organization_id) = match &row.data {
        RowData::Organization { name } => (name.clone(), String::new()),
        RowData::Member { org, .. } | RowData::Property { org, .. } | RowData::ServiceDesk { org, .. } => match org {
            OrgRef::Name(n) => (n.clone(), String::new()),
            OrgRef::NameAndId(n, id) => (n.clone(), id.to_string()),
            OrgRef::Id(id) => (String::new(), id.to_string()),
        },
    };
    if let Some((d, ids)) = tables {
        let org_ref = match &row.data {
            RowData::Organization { name } => OrgRef::Name(name.clone()),
            RowData::Member { org, .. } | RowData::Property { org, .. } | RowData::ServiceDesk { org, .. } => {
                org.clone()
            }
        };
        if let Some(i) = d.lookup(&org_ref) {
            organization = d.orgs[i as usize].name.clone();
            if let Some(id) = ids.get(i as usize).copied().flatten() {
                organization_id = id.to_string();
            }
        }
    }
    ReportRow {
        source: row.source.to_string(),
        kind: row.kind.as_str().to_string(),
        action: row.action.as_str().to_string(),
        organization,
        organization_id,
        target: plan::target_of(&row.data).to_string(),
        outcome: Outcome::Planned,
        http_status: None,
        attempts: 0,
        message: String::new(),
    }
}
