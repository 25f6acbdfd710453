//! Runs reads and planned operations through the API client, concurrently.
//!
//! Owns how one operation becomes calls (member chunks bisected on a 400,
//! 404 after a retried delete counted as done, dry-run short-cuts) and turns
//! every call result into per-row outcomes. It returns *streams* of finished
//! work: the single consumer in `import` owns the progress bar and the report
//! writer, so no lock ever guards a writer. It never reads input files and
//! never decides what to change (that is `plan`).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use futures::stream::{Stream, StreamExt};

use crate::api::{ApiError, Called, Client, ErrorKind, PropertyWrite};
use crate::plan::{Contact, MemberChange, Op, OrgIdx, Resolved, RowIdx, Settled};
use crate::report::{Outcome, RowOutcome};
use crate::resolve::Resolver;

/// One read of the live site.
#[derive(Debug, Clone, PartialEq)]
pub enum ReadTask {
    Members(OrgIdx, u64),
    PropertyKeys(OrgIdx, u64),
    PropertyValue(OrgIdx, u64, String),
    Desk(String),
}

/// The answer to a [`ReadTask`].
#[derive(Debug)]
pub enum ReadDone {
    /// Account ids, and visible emails (lowercase) → account id.
    Members(OrgIdx, Result<LiveMembers, ApiError>),
    PropertyKeys(OrgIdx, Result<BTreeSet<String>, ApiError>),
    /// `Ok(None)`: the property vanished between listing and reading.
    PropertyValue(OrgIdx, String, Result<Option<serde_json::Value>, ApiError>),
    Desk(String, Result<HashSet<u64>, ApiError>),
}

/// An organization's members as read: account ids, and the visible emails
/// (lowercase) with the account id that has each.
pub type LiveMembers = (HashSet<Box<str>>, HashMap<Box<str>, Box<str>>);

/// Run reads concurrently as `tasks` yields them; results arrive as they
/// finish.
pub fn read(client: Client, tasks: impl Stream<Item = ReadTask>, concurrency: usize) -> impl Stream<Item = ReadDone> {
    tasks
        .map(move |t| {
            let c = client.clone();
            async move { read_one(&c, t).await }
        })
        .buffer_unordered(concurrency.max(1) * 2)
}

async fn read_one(c: &Client, t: ReadTask) -> ReadDone {
    match t {
        ReadTask::Members(i, id) => ReadDone::Members(
            i,
            c.all_users(id).await.map(|u| {
                let mut ids = HashSet::with_capacity(u.value.len());
                let mut emails = HashMap::new();
                for user in u.value {
                    let id = user.account_id.into_boxed_str();
                    if let Some(email) = user.email_address.filter(|e| !e.is_empty()) {
                        emails.insert(email.to_lowercase().into_boxed_str(), id.clone());
                    }
                    ids.insert(id);
                }
                (ids, emails)
            }),
        ),
        ReadTask::PropertyKeys(i, id) => {
            ReadDone::PropertyKeys(i, c.property_keys(id).await.map(|k| k.value.into_iter().collect()))
        }
        ReadTask::PropertyValue(i, id, key) => {
            let r = match c.property(id, &key).await {
                Ok(p) => Ok(Some(p.value.value)),
                Err(e) if e.is_not_found() => Ok(None),
                Err(e) => Err(e),
            };
            ReadDone::PropertyValue(i, key, r)
        }
        ReadTask::Desk(desk) => {
            let r = c.all_desk_organizations(&desk).await.map(|o| o.value.into_iter().map(|o| o.id).collect());
            ReadDone::Desk(desk, r)
        }
    }
}

/// What the executor needs besides the client.
#[derive(Debug, Clone)]
pub struct ExecContext {
    /// Organization names by [`OrgIdx`].
    pub names: Arc<Vec<String>>,
    pub dry_run: bool,
    /// People to fall back to by email when the site does not know an id.
    pub fallback: Option<Arc<Fallback>>,
}

/// The emails behind the account ids of member operations, and the
/// resolver that looks them up (see [`members_op`]).
pub struct Fallback {
    pub resolver: Arc<Resolver>,
    pub contacts: HashMap<(OrgIdx, Box<str>), Contact>,
}

impl std::fmt::Debug for Fallback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Fallback({} contacts)", self.contacts.len())
    }
}

/// Removals that `--prune` made (no input row reports them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    pub members: u64,
    pub properties: u64,
    pub links: u64,
    /// Removals that failed: the site still has something the input does not list.
    pub failed: u64,
}

/// A finished operation.
#[derive(Debug)]
pub struct OpDone {
    pub org: OrgIdx,
    pub rows: Vec<Settled>,
    /// The id a `CreateOrg` obtained.
    pub created: Option<u64>,
    /// Why a `CreateOrg` failed.
    pub create_error: Option<RowOutcome>,
    pub pruned: Pruned,
    /// Calls this operation sent (bisection can send several).
    pub calls: u32,
}

fn done(org: OrgIdx) -> OpDone {
    OpDone { org, rows: Vec::new(), created: None, create_error: None, pruned: Pruned::default(), calls: 0 }
}

fn push_rows(out: &mut OpDone, rows: impl IntoIterator<Item = RowIdx>, target: &Arc<str>, outcome: &RowOutcome) {
    for row in rows {
        out.rows.push(Settled { row, org: Some(out.org), target: target.clone(), outcome: outcome.clone() });
    }
}

fn success<T>(outcome: Outcome, c: &Called<T>) -> RowOutcome {
    RowOutcome { outcome, http_status: Some(c.status), attempts: c.attempts, message: None }
}

/// A call that succeeded on the wire but did not do what was asked.
fn failure_of<T>(c: &Called<T>, message: String) -> RowOutcome {
    RowOutcome {
        outcome: Outcome::Failed,
        http_status: Some(c.status),
        attempts: c.attempts,
        message: Some(message.into()),
    }
}

/// An error as a report message: what to fix for fatal statuses, how
/// often a transient one was tried.
pub(crate) fn describe(e: &ApiError) -> String {
    match &e.kind {
        // Sent, refused or unanswered, then stopped before the next attempt.
        ErrorKind::Aborted(why) if e.attempts > 0 => {
            format!("stopped before a retry ({why}) after {} attempt(s)", e.attempts)
        }
        ErrorKind::Aborted(why) => format!("not sent: {why}"),
        _ => match e.fatal_hint() {
            Some(h) => format!("{e}; {h}"),
            None if e.is_transient() => format!("{e} (gave up after {} attempts)", e.attempts),
            None => e.to_string(),
        },
    }
}

fn failure(e: &ApiError) -> RowOutcome {
    if let (ErrorKind::Aborted(why), 0) = (&e.kind, e.attempts) {
        return RowOutcome::not_sent(format!("not sent: {why}"));
    }
    RowOutcome {
        outcome: Outcome::Failed,
        http_status: e.status(),
        attempts: e.attempts,
        message: Some(describe(e).into()),
    }
}

/// A 404 on a delete: gone already. After a retry it was most likely our own
/// earlier attempt whose response was lost.
fn delete_outcome(r: Result<Called<()>, ApiError>, done_outcome: Outcome) -> RowOutcome {
    match r {
        Ok(c) => success(done_outcome, &c),
        Err(e) if e.is_not_found() && e.attempts > 1 => {
            RowOutcome { outcome: done_outcome, http_status: Some(404), attempts: e.attempts, message: None }
        }
        Err(e) if e.is_not_found() => RowOutcome {
            outcome: Outcome::Unchanged,
            http_status: Some(404),
            attempts: e.attempts,
            message: Some("already gone".into()),
        },
        Err(e) => failure(&e),
    }
}

/// The rows of an operation whose organization could not be created: not
/// sent when its create was not sent, failed otherwise.
pub fn not_created(op: &Op, create: &RowOutcome) -> OpDone {
    let mut out = done(op.org());
    let why = create.message.as_deref().unwrap_or("unknown id");
    let outcome = RowOutcome {
        outcome: if create.outcome == Outcome::NotSent { Outcome::NotSent } else { Outcome::Failed },
        ..RowOutcome::failed(format!("organization was not created: {why}"))
    };
    for_each_row(op, |rows, target| push_rows(&mut out, rows, target, &outcome));
    out
}

/// Run one operation. `org_id` is its organization's id (needed by all but
/// `CreateOrg`; the caller holds an operation back until its organization
/// exists).
pub async fn run_op(c: &Client, ctx: &ExecContext, op: Op, org_id: Option<u64>) -> OpDone {
    let mut out = done(op.org());
    let empty: Arc<str> = Arc::from("");
    if ctx.dry_run {
        dry_run(&mut out, op);
        return out;
    }
    let org_id = match &op {
        Op::DeleteOrg { id, .. } => Some(*id),
        _ => org_id,
    };
    match op {
        Op::CreateOrg { org, rows } => {
            out.calls = 1;
            let asked = &ctx.names[org as usize];
            match c.create_organization(asked).await {
                Ok(called) if called.value.name != *asked => {
                    let got = &called.value;
                    let why = format!(
                        "the site answered the create of {asked:?} with organization {} named {:?}: \
                         it changed the name, so rows naming {asked:?} cannot be applied",
                        got.id, got.name
                    );
                    let outcome = failure_of(&called, why);
                    out.create_error = Some(outcome.clone());
                    push_rows(&mut out, rows, &empty, &outcome);
                }
                Ok(called) => {
                    out.created = Some(called.value.id);
                    push_rows(&mut out, rows, &empty, &success(Outcome::Created, &called));
                }
                Err(e) => {
                    let outcome = failure(&e);
                    out.create_error = Some(outcome.clone());
                    push_rows(&mut out, rows, &empty, &outcome);
                }
            }
        }
        Op::DeleteOrg { id, rows, .. } => {
            out.calls = 1;
            let outcome = delete_outcome(c.delete_organization(id).await, Outcome::Deleted);
            push_rows(&mut out, rows, &empty, &outcome);
        }
        Op::SetProperty { key, value, rows, .. } => {
            out.calls = 1;
            let id = org_id.expect("id");
            let outcome = match c.set_property(id, &key, &value).await {
                Ok(called) => {
                    let msg = match called.value {
                        PropertyWrite::Created => "created",
                        PropertyWrite::Updated => "updated",
                    };
                    success(Outcome::Set, &called).with_message(msg)
                }
                Err(e) => failure(&e),
            };
            push_rows(&mut out, rows.iter(), &Arc::from(key.as_str()), &outcome);
        }
        Op::DeleteProperty { key, rows, .. } => {
            out.calls = 1;
            let outcome = delete_outcome(c.delete_property(org_id.expect("id"), &key).await, Outcome::Deleted);
            match rows {
                Some(rows) => push_rows(&mut out, rows.iter(), &Arc::from(key.as_str()), &outcome),
                None => pruned(&mut out, &outcome, |p| p.properties += 1, &format!("property {key:?}"), org_id),
            }
        }
        Op::Link { desk, link, rows, .. } => {
            out.calls = 1;
            let id = org_id.expect("id");
            let r = if link { c.link_organization(&desk, id).await } else { c.unlink_organization(&desk, id).await };
            let outcome = match r {
                Ok(called) => success(if link { Outcome::Linked } else { Outcome::Unlinked }, &called),
                Err(e) => failure(&e),
            };
            match rows {
                Some(rows) => push_rows(&mut out, rows.iter(), &Arc::from(desk.as_str()), &outcome),
                None => pruned(&mut out, &outcome, |p| p.links += 1, &format!("link to service desk {desk}"), org_id),
            }
        }
        Op::Members { add, members, .. } => {
            members_op(c, ctx, &mut out, org_id.expect("id"), add, members).await;
        }
    }
    out
}

/// Account for one `--prune` removal. No input row reports it, so each one is
/// logged, and a failure is counted (it makes the run exit 1).
fn pruned(out: &mut OpDone, outcome: &RowOutcome, count: impl FnOnce(&mut Pruned), what: &str, org_id: Option<u64>) {
    let org = org_id.map(|id| id.to_string()).unwrap_or_default();
    if matches!(outcome.outcome, Outcome::Failed | Outcome::NotSent) {
        out.pruned.failed += 1;
        let why = outcome.message.as_deref().unwrap_or("");
        tracing::warn!(target: "jsm_orgs::prune", "--prune could not remove {what} of organization {org}: {why}");
    } else {
        count(&mut out.pruned);
        tracing::info!(target: "jsm_orgs::prune", "--prune removed {what} of organization {org}");
    }
}

/// Call `f` with each row group of an operation and its report target.
fn for_each_row(op: &Op, mut f: impl FnMut(Vec<RowIdx>, &Arc<str>)) {
    match op {
        Op::CreateOrg { rows, .. } | Op::DeleteOrg { rows, .. } => f(rows.clone(), &Arc::from("")),
        Op::Members { members, .. } => {
            for m in members {
                if let Some(rows) = &m.rows {
                    f(rows.iter().collect(), &Arc::from(&*m.account_id));
                }
            }
        }
        Op::SetProperty { key, rows, .. } => f(rows.iter().collect(), &Arc::from(key.as_str())),
        Op::DeleteProperty { key, rows, .. } => {
            if let Some(rows) = rows {
                f(rows.iter().collect(), &Arc::from(key.as_str()));
            }
        }
        Op::Link { desk, rows, .. } => {
            if let Some(rows) = rows {
                f(rows.iter().collect(), &Arc::from(desk.as_str()));
            }
        }
    }
}

fn dry_run(out: &mut OpDone, op: Op) {
    let outcome = RowOutcome::new(Outcome::Planned);
    match &op {
        Op::Members { add: false, members, .. } => {
            out.pruned.members += members.iter().filter(|m| m.rows.is_none()).count() as u64
        }
        Op::DeleteProperty { rows: None, .. } => out.pruned.properties += 1,
        Op::Link { rows: None, .. } => out.pruned.links += 1,
        _ => {}
    }
    for_each_row(&op, |rows, target| push_rows(out, rows, target, &outcome));
}

/// Add or remove a chunk of members. A 400 ("one or more usernames are
/// unknown") fails the whole call on JSM, so the chunk is bisected until the
/// bad ids are isolated: the good ones are applied and only the bad rows fail
/// with the server's message. Add and remove have set semantics, so sending an
/// id twice is harmless. A row whose id the site rejects but that gives an
/// email falls back to the person with that email (see [`by_email`]).
async fn members_op(
    c: &Client,
    ctx: &ExecContext,
    out: &mut OpDone,
    org_id: u64,
    add: bool,
    members: Vec<MemberChange>,
) {
    let ok_outcome = if add { Outcome::Added } else { Outcome::Removed };
    let mut stack: Vec<std::ops::Range<usize>> = Vec::with_capacity(8);
    stack.push(0..members.len());
    while let Some(range) = stack.pop() {
        let ids: Vec<String> = members[range.clone()].iter().map(|m| m.account_id.to_string()).collect();
        out.calls += 1;
        let r = if add { c.add_users(org_id, &ids).await } else { c.remove_users(org_id, &ids).await };
        let outcome = match r {
            Ok(called) => success(ok_outcome, &called),
            Err(e) if e.status() == Some(400) && range.len() > 1 => {
                let mid = range.start + range.len() / 2;
                // Pop the first half first, keeping the report's call order natural.
                stack.push(mid..range.end);
                stack.push(range.start..mid);
                continue;
            }
            Err(e) if e.status() == Some(400) && members[range.start].rows.is_some() => {
                let m = &members[range.start];
                match by_email(c, ctx, out, org_id, add, m, &e).await {
                    Some((target, outcome)) => {
                        push_rows(out, m.rows.iter().flat_map(|r| r.iter()), &target, &outcome);
                        continue;
                    }
                    None => failure(&e),
                }
            }
            Err(e) => failure(&e),
        };
        for m in &members[range] {
            let target: Arc<str> = Arc::from(&*m.account_id);
            match &m.rows {
                Some(rows) => push_rows(out, rows.iter(), &target, &outcome),
                None => pruned(out, &outcome, |p| p.members += 1, &format!("member {}", m.account_id), Some(org_id)),
            }
        }
    }
}

/// The site rejected account id `m` alone: when the row also gives an
/// email, add (or remove) the person with that email instead — found by the
/// user search, or created with `--create-customers`. `None` when the row
/// gives no email. Returns the report target (the id used) and outcome.
async fn by_email(
    c: &Client,
    ctx: &ExecContext,
    out: &mut OpDone,
    org_id: u64,
    add: bool,
    m: &MemberChange,
    rejected: &ApiError,
) -> Option<(Arc<str>, RowOutcome)> {
    let fallback = ctx.fallback.as_ref()?;
    let contact = fallback.contacts.get(&(out.org, m.account_id.clone()))?;
    let create = fallback.resolver.create_for(add);
    let resolved = fallback.resolver.resolve(&contact.email, contact.display_name.as_deref(), create).await;
    let unknown = format!("account id {} is not on this site ({rejected})", m.account_id);
    let (account_id, created) = match resolved {
        Resolved::Id { account_id, created } => (account_id, created),
        Resolved::WouldCreate => return Some((Arc::from(&*m.account_id), RowOutcome::new(Outcome::Planned))),
        Resolved::Failed(why) => {
            return Some((
                Arc::from(&*m.account_id),
                failure(rejected).with_message(format!("{unknown}; by email: {why}")),
            ))
        }
    };
    let how = if created { "customer created" } else { "found" };
    let note = format!("{unknown}; email {}: {how}, account id {account_id}", contact.email);
    out.calls += 1;
    let ids = [account_id.to_string()];
    let r = if add { c.add_users(org_id, &ids).await } else { c.remove_users(org_id, &ids).await };
    let outcome = match r {
        Ok(called) => success(if add { Outcome::Added } else { Outcome::Removed }, &called).with_message(note),
        Err(e) => {
            let why = describe(&e);
            failure(&e).with_message(format!("{note}; then {why}"))
        }
    };
    Some((account_id, outcome))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Rows;

    #[test]
    fn failure_messages_explain_aborts_and_give_ups() {
        let e = ApiError { kind: ErrorKind::Aborted("bad credentials".into()), attempts: 0 };
        assert_eq!(failure(&e).message.as_deref(), Some("not sent: bad credentials"));
        assert_eq!(failure(&e).outcome, Outcome::NotSent);
        let e = ApiError { kind: ErrorKind::Aborted("interrupted".into()), attempts: 2 };
        assert_eq!(failure(&e).outcome, Outcome::Failed, "sent twice, then stopped: its effect is unknown");
        let e = ApiError { kind: ErrorKind::Timeout(std::time::Duration::from_secs(1)), attempts: 9 };
        assert!(failure(&e).message.unwrap().contains("gave up after 9 attempts"));
        let e = ApiError {
            kind: ErrorKind::Status { status: 400, message: "unknown".into(), retry_after: None },
            attempts: 1,
        };
        let f = failure(&e);
        assert_eq!((f.http_status, f.message.as_deref()), (Some(400), Some("HTTP 400: unknown")));
    }

    #[test]
    fn a_retried_delete_that_finds_nothing_counts_as_done() {
        let nf = |attempts| ApiError {
            kind: ErrorKind::Status { status: 404, message: String::new(), retry_after: None },
            attempts,
        };
        assert_eq!(delete_outcome(Err(nf(2)), Outcome::Deleted).outcome, Outcome::Deleted);
        assert_eq!(delete_outcome(Err(nf(1)), Outcome::Deleted).outcome, Outcome::Unchanged);
    }

    #[test]
    fn dry_run_plans_every_row_and_counts_prunes() {
        let mut out = done(0);
        let op = Op::Members {
            org: 0,
            add: false,
            members: vec![
                MemberChange { account_id: "a".into(), rows: Some(Rows::one(3)) },
                MemberChange { account_id: "b".into(), rows: None },
            ],
        };
        dry_run(&mut out, op);
        assert_eq!(out.rows.len(), 1);
        assert_eq!(out.rows[0].outcome.outcome, Outcome::Planned);
        assert_eq!(&*out.rows[0].target, "a");
        assert_eq!(out.pruned.members, 1);
    }
}
