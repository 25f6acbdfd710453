//! The read phase of an import: people by email, desks by key or id, and
//! the live members, property keys and values, and desk links the plan needs.
//!
//! Owns the order and overlap of the reads (each kind is its own endpoint,
//! interleaved so they all go at once; property values follow their keys at
//! once) and the rule that only a fatal error or an abort ends the run while
//! any other failed read fails just the rows that depend on it. It writes
//! nothing to the site and decides nothing: `resolve`, `desks` and `plan`
//! do.

use std::sync::Arc;

use futures::StreamExt;

use super::{conc, ImportError, Run};
use crate::api::{ApiError, Client, ErrorKind, ServiceDesk};
use crate::desks::{self, DeskDirectory};
use crate::executor::{self, ReadDone, ReadTask};
use crate::input::Kind;
use crate::plan::{self, Desired, Live};
use crate::progress::Progress;
use crate::resolve::Resolver;

/// Resolve the emails that rows name people by (before planning, so the
/// plan sees account ids); rows whose email does not resolve are settled.
pub(super) async fn resolve_people(
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

/// List the site's desks when rows name desks (or `--prune` may unlink
/// any), and resolve every row's desk to the site's id. Returns the list.
pub(super) async fn resolve_desks(
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
pub(super) async fn read_live(
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
