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

use crate::api::{ApiError, Client, ErrorKind, ServiceDesk};
use crate::desks::{self, DeskDirectory};
use crate::executor::{self, ExecContext, Fallback, OpDone, ReadDone, ReadTask};
use crate::input::{InputError, InputSet, InvalidRow, Kind, OrgRef, RowData};
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
    verify_snapshots(&opts.paths, opts.allow_edited)?;
    let routes_from = client.throttle().route_counts();
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
    let mut run = Run {
        opts,
        target,
        partial,
        partial_path,
        outcomes: Vec::new(),
        targets: HashMap::new(),
        org_ids: Vec::new(),
        summary: Summary { dry_run: opts.dry_run, warnings: input.warnings().to_vec(), ..Summary::default() },
        progress: Progress::new(opts.progress, "tasks"),
        failed: 0,
        throttle: client.throttle().clone(),
    };

    // 1. The site's organizations (needed to resolve names and ids).
    let live_orgs = match client.all_organizations().await {
        Ok(o) => o.value,
        Err(e) => {
            let counters = client.throttle().snapshot().since(&counted_from);
            return abort_before_rows(&input, &mut run, &e, counters, started);
        }
    };

    // 2. Fold the rows into the wanted state.
    let mut d = Desired::new(&live_orgs);
    d.same_site = snapshot_of_this_site(&opts.paths, client);
    drop(live_orgs);
    let mut invalid = 0u64;
    for r in input.rows() {
        match r? {
            Ok(row) => {
                run.outcomes.push(None);
                if let Err(settled) = d.add(row) {
                    run.record(&d, settled)?;
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
    // Rows settled so far (invalid ones) are on disk before the site is read.
    run.partial.flush().map_err(io_err(&run.partial_path))?;

    // 2b. People named by email: looked up (or created) once per email.
    let resolver = Arc::new(Resolver::new(client.clone(), opts.create_customers, opts.dry_run));
    resolve_people(client, &resolver, &mut d, &mut run).await?;

    // 3. Desks named by rows (key or id) become the site's ids; rows naming
    //    a desk the site lacks fail now, in a dry run as in the real run.
    let site_desks = match resolve_desks(client, &mut d, &mut run).await? {
        Ok(desks) => desks,
        Err(e) => {
            return finish_aborted(&input, &d, run, &e, client.throttle().snapshot().since(&counted_from), started)
        }
    };

    // 4. Read only the live state the plan needs.
    let live = match read_live(client, &d, &mut run, site_desks).await {
        Ok(live) => live,
        Err(e) => {
            return finish_aborted(&input, &d, run, &e, client.throttle().snapshot().since(&counted_from), started)
        }
    };

    // 5. Plan; rows that need no call are settled now.
    let mut settle_err = None;
    let mut plan = {
        let run = &mut run;
        plan::plan(&mut d, &live, opts.prune, opts.chunk_size, &mut |d, s| {
            if settle_err.is_none() {
                settle_err = run.record(d, s).err();
            }
        })
    };
    if let Some(e) = settle_err {
        return Err(e);
    }
    // Rows that need no call are finished: on disk before the first write.
    run.partial.flush().map_err(io_err(&run.partial_path))?;
    drop(live);
    // An input edited while the site was read is not applied half old, half new.
    if let Err(changed) = input.check_unchanged() {
        let note: Arc<str> = format!("not sent: {changed}").into();
        for o in run.outcomes.iter_mut().filter(|o| o.is_none()) {
            *o = Some(RowOutcome::not_sent(note.clone()));
        }
        let counters = client.throttle().snapshot().since(&counted_from);
        return write_final(&input, &d, run, counters, started);
    }
    tracing::debug!(org_ops = plan.org_ops.len(), ops = plan.ops.len(), "planned");

    // 6. The writes, one lane per endpoint: an organization's members,
    //    properties and links go as soon as it exists.
    let ctx = ExecContext {
        names: Arc::new(d.orgs.iter().map(|o| o.name.clone()).collect()),
        dry_run: opts.dry_run,
        fallback: (!plan.contacts.is_empty())
            .then(|| Arc::new(Fallback { resolver: resolver.clone(), contacts: std::mem::take(&mut plan.contacts) })),
    };
    run.progress.phase("writing");
    run.progress.add_work(plan.writes() as u64);
    let ids = run.org_ids.clone();
    let (mut lanes, mut stream, settled) = Lanes::start(client.clone(), ctx, plan, ids, conc(client));
    for done in settled {
        run.record_done(&d, done)?;
    }
    while let Some(done) = stream.next().await {
        for settled in lanes.finished(&done) {
            run.record_done(&d, settled)?;
        }
        run.record_done(&d, done)?;
    }
    drop(stream);
    run.progress.finish();

    run.summary.customers_created = resolver.created();
    let aborted = client.throttle().abort_reason();
    let mut summary = write_final(&input, &d, run, client.throttle().snapshot().since(&counted_from), started)?;
    summary.busiest = client.throttle().busiest_since(&routes_from);
    match aborted {
        Some(message) => Err(ImportError::Aborted { message, summary: Box::new(summary) }),
        None => Ok(summary),
    }
}

/// Resolve the emails that rows name people by (before planning, so the
/// plan sees account ids); rows whose email does not resolve are settled.
async fn resolve_people(
    client: &Client,
    resolver: &Arc<Resolver>,
    d: &mut Desired,
    run: &mut Run<'_>,
) -> Result<(), ImportError> {
    if d.emails.is_empty() {
        return Ok(());
    }
    run.progress.phase("looking up emails");
    run.progress.add_work(d.emails.len() as u64);
    let progress = &run.progress;
    let resolved = resolver.resolve_all(&d.emails, conc(client), || progress.inc(1)).await;
    let mut settle_err = None;
    d.apply_emails(&resolved, &mut |d, s| {
        if settle_err.is_none() {
            settle_err = run.record(d, s).err();
        }
    });
    settle_err.map_or(Ok(()), Err)
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

/// List the site's desks when rows name desks (or `--prune` may unlink
/// any), and resolve every row's desk to the site's id. Returns the list.
async fn resolve_desks(
    client: &Client,
    d: &mut Desired,
    run: &mut Run<'_>,
) -> Result<Result<Option<Vec<ServiceDesk>>, ApiError>, ImportError> {
    let named = d.orgs.iter().any(|o| !o.desks.is_empty());
    let pruning = run.opts.prune && d.kinds.contains(&Kind::ServiceDesks);
    if !named && !pruning {
        return Ok(Ok(None));
    }
    let listed = match client.all_service_desks().await {
        Ok(listed) => listed.value,
        Err(e) => return Ok(Err(e)),
    };
    let directory = DeskDirectory::new(&listed);
    let mut settle_err = None;
    desks::resolve_desks(d, &directory, &mut |d, s| {
        if settle_err.is_none() {
            settle_err = run.record(d, s).err();
        }
    });
    if let Some(e) = settle_err {
        return Err(e);
    }
    Ok(Ok(Some(listed)))
}

/// Read members, property keys and values, and desk links as the plan needs.
async fn read_live(
    client: &Client,
    d: &Desired,
    run: &mut Run<'_>,
    site_desks: Option<Vec<ServiceDesk>>,
) -> Result<Live, ApiError> {
    let reads = plan::reads(d, run.opts.prune);
    let members: Vec<ReadTask> = reads.members.iter().map(|&(i, id)| ReadTask::Members(i, id)).collect();
    let keys: Vec<ReadTask> = reads.property_keys.iter().map(|&(i, id)| ReadTask::PropertyKeys(i, id)).collect();
    let mut desks = reads.desks.clone();
    let mut live = Live::default();
    if reads.all_desks {
        let all = match site_desks {
            Some(listed) => listed,
            None => client.all_service_desks().await?.value,
        };
        for desk in all {
            if let Some(key) = desk.project_key {
                live.desk_keys.insert(desk.id.clone(), key);
            }
            if !desks.contains(&desk.id) {
                desks.push(desk.id);
            }
        }
    }
    let desks: Vec<ReadTask> = desks.into_iter().map(ReadTask::Desk).collect();
    // Each kind of read is its own endpoint, paced on its own: interleaved,
    // they all go at once instead of one endpoint after the other.
    let tasks = interleave(vec![members, keys, desks]);
    run.progress.phase("reading site");
    run.progress.add_work(tasks.len() as u64);
    fold_reads(client, d, tasks, &mut live, &run.progress).await?;
    Ok(live)
}

/// Round-robin over `lists`: one of each in turn while any is left.
fn interleave(lists: Vec<Vec<ReadTask>>) -> Vec<ReadTask> {
    let total = lists.iter().map(Vec::len).sum();
    let mut iters: Vec<_> = lists.into_iter().map(Vec::into_iter).collect();
    let mut out = Vec::with_capacity(total);
    while out.len() < total {
        out.extend(iters.iter_mut().filter_map(Iterator::next));
    }
    out
}

/// Run `tasks` and fold their answers into `live`. The values of an
/// organization's listed keys are read as soon as its keys arrive, ahead of
/// the remaining first reads (a follow-up lane), so that the value endpoint
/// works alongside the others.
async fn fold_reads(
    client: &Client,
    d: &Desired,
    tasks: Vec<ReadTask>,
    live: &mut Live,
    progress: &Progress,
) -> Result<(), ApiError> {
    use futures::stream::{self, PollNext};
    let mut outstanding = tasks.len();
    let (follow, follow_ups) = futures::channel::mpsc::unbounded::<ReadTask>();
    let tasks = stream::select_with_strategy(follow_ups, stream::iter(tasks), |_: &mut ()| PollNext::Left);
    let mut stream = Box::pin(executor::read(client.clone(), tasks, conc(client)));
    while outstanding > 0 {
        let Some(done) = stream.next().await else { break };
        outstanding -= 1;
        progress.inc(1);
        if let ReadDone::PropertyKeys(i, Ok(keys)) = &done {
            for (i, id, key) in plan::value_reads_of(d, *i, keys) {
                follow.unbounded_send(ReadTask::PropertyValue(i, id, key)).expect("the reads outlive the follow-ups");
                outstanding += 1;
                progress.add_work(1);
            }
        }
        match done {
            ReadDone::Members(i, r) => {
                let r = classify(r)?.map(|(ids, emails)| {
                    live.member_emails.insert(i, emails);
                    ids
                });
                live.members.insert(i, r);
            }
            ReadDone::PropertyKeys(i, r) => {
                live.property_keys.insert(i, classify(r)?);
            }
            ReadDone::PropertyValue(i, key, r) => {
                live.property_values.insert((i, key), classify(r)?);
            }
            ReadDone::Desk(desk, Err(e)) if e.is_not_found() => {
                live.desks.insert(desk.clone(), Err(format!("service desk {desk} not found ({e})").into()));
            }
            ReadDone::Desk(desk, r) => {
                live.desks.insert(desk, classify(r)?);
            }
        }
    }
    Ok(())
}

/// A fatal error (401/403) or an abort ends the run; any other failure only
/// fails the rows that depend on that read.
fn classify<T>(r: Result<T, ApiError>) -> Result<Result<T, plan::ReadError>, ApiError> {
    match r {
        Ok(v) => Ok(Ok(v)),
        Err(e) if e.is_fatal() || matches!(e.kind, ErrorKind::Aborted(_)) => Err(e),
        Err(e) => Ok(Err(Arc::from(e.to_string()))),
    }
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
    let note: Arc<str> = format!("not sent: {message}").into();
    for o in run.outcomes.iter_mut().filter(|o| o.is_none()) {
        *o = Some(RowOutcome::not_sent(note.clone()));
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_of_each_endpoint_take_turns() {
        let m = |i| ReadTask::Members(i, u64::from(i));
        let k = |i| ReadTask::PropertyKeys(i, u64::from(i));
        let got = interleave(vec![vec![m(0), m(1), m(2)], vec![k(0)], vec![ReadTask::Desk("9".into())]]);
        assert_eq!(got, vec![m(0), k(0), ReadTask::Desk("9".into()), m(1), m(2)]);
        assert!(interleave(vec![vec![], vec![]]).is_empty());
    }
}
