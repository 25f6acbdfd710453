//! The read plan of an export and the collection of its results.
//!
//! Reads the organization pages (streamed: each page starts its
//! organizations' work at once), every organization's member pages, property
//! keys and property values, and every service desk's organization pages,
//! all concurrently through one `buffer_unordered` whose single consumer owns
//! the progress bar and the collected data (no locks around results, nothing
//! held across an await). Follow-ups (the next page of a list, the values of
//! listed property keys) jump the queue, so paging never waits behind the
//! work it feeds and started organizations finish before new ones begin.
//!
//! It must not speak HTTP or pace requests itself: every read goes through
//! the typed [`Client`], hence through the shared throttle, its retries and
//! its abort switch. It must not write files: it returns sorted records.
//!
//! Concurrent changes are tolerated, not hidden: an organization that answers
//! 404 mid-read, and 404 again to `GET /organization/{id}`, is left out
//! entirely and reported (one that still exists fails the export); a property deleted between
//! its key list and its value is absent; the [`pager`](super::pager) notices
//! lists that shift under deletions and re-reads just enough to miss no
//! survivor.

use std::cmp::Ordering;
use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use crate::progress::Progress;
use crate::routes;
use futures::channel::mpsc;
use futures::stream::{self, PollNext, StreamExt};
use serde_json::Value;

use super::export::{ExportError, ExportOptions};
use super::pager::{Pager, Unstable};
use crate::api::client::PAGE_LIMIT;
use crate::api::{ApiError, Client, ErrorKind, Organization, Page, ServiceDesk, User};

/// Calls kept in flight by the export per slot of the throttle's
/// concurrency. The throttle (`--concurrency`, `--rate`) is the real limit;
/// this only keeps it fed without queueing so many calls at its semaphore
/// that the next organization page waits long behind them.
const IN_FLIGHT_PER_SLOT: usize = 4;

/// One organization with everything read for it, sorted.
#[derive(Debug)]
pub(super) struct OrgData {
    pub(super) org: Organization,
    pub(super) members: Vec<User>,
    pub(super) properties: Vec<(String, Value)>,
}

/// Everything an export read, sorted for writing.
#[derive(Debug)]
pub(super) struct SiteData {
    /// By numeric id.
    pub(super) orgs: Vec<OrgData>,
    /// (index into `orgs`, desk id), by (org id, desk id).
    pub(super) links: Vec<(usize, String)>,
    /// Desks exported, in desk order.
    pub(super) desks: Vec<String>,
    /// Organizations that answered 404 mid-read, ascending.
    pub(super) vanished: Vec<u64>,
    /// Project key and name of each desk the site listed, by desk id.
    pub(super) desk_info: HashMap<String, DeskInfo>,
}

/// What the desk list says of one desk, written beside its links.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct DeskInfo {
    pub(super) project_key: Option<String>,
    pub(super) project_name: Option<String>,
}

/// One call of the read plan.
#[derive(Debug)]
enum Job {
    OrgPage { start: u64 },
    Members { org: u64, start: u64 },
    PropertyKeys { org: u64 },
    Property { org: u64, key: String },
    DeskList { start: u64 },
    DeskPage { desk: usize, id: String, start: u64 },
}

/// The result of one job, 404s already sorted into their meaning.
enum Done {
    OrgPage {
        start: u64,
        page: Page<Organization>,
    },
    Members {
        org: u64,
        start: u64,
        page: Page<User>,
    },
    PropertyKeys {
        org: u64,
        keys: Vec<String>,
    },
    Property {
        org: u64,
        key: String,
        value: Option<Value>,
    },
    /// The organization answered 404: deleted while we read it.
    OrgGone {
        org: u64,
    },
    /// Not sent: the organization already vanished.
    Skipped,
    DeskList {
        start: u64,
        page: Page<ServiceDesk>,
    },
    DeskPage {
        desk: usize,
        start: u64,
        page: Page<Organization>,
    },
    DeskGone {
        desk: usize,
    },
}

impl Job {
    fn org(&self) -> Option<u64> {
        match self {
            Job::Members { org, .. } | Job::PropertyKeys { org } | Job::Property { org, .. } => Some(*org),
            _ => None,
        }
    }

    fn describe(&self) -> String {
        match self {
            Job::OrgPage { start } => format!("{}?start={start}", routes::LIST_ORGS.describe(&[])),
            Job::Members { org, start } => format!("{}?start={start}", routes::LIST_MEMBERS.describe(&[org])),
            Job::PropertyKeys { org } => routes::LIST_PROPERTY_KEYS.describe(&[org]),
            Job::Property { org, key } => routes::GET_PROPERTY.describe(&[org, key]),
            Job::DeskList { start } => format!("{}?start={start}", routes::LIST_DESKS.describe(&[])),
            Job::DeskPage { id, start, .. } => format!("{}?start={start}", routes::LIST_DESK_ORGS.describe(&[id])),
        }
    }
}

/// Run one job; a job of an organization already known to be gone is
/// answered without a request.
async fn run_job(client: &Client, job: Job, vanished: &Mutex<HashSet<u64>>) -> (Job, Result<Done, ApiError>) {
    if let Some(org) = job.org() {
        let gone = vanished.lock().expect("vanished lock").contains(&org);
        if gone {
            return (job, Ok(Done::Skipped));
        }
    }
    let result = match &job {
        Job::OrgPage { start } => {
            client.organizations_page(*start, PAGE_LIMIT).await.map(|c| Done::OrgPage { start: *start, page: c.value })
        }
        Job::Members { org, start } => match client.users_page(*org, *start, PAGE_LIMIT).await {
            Ok(c) => Ok(Done::Members { org: *org, start: *start, page: c.value }),
            Err(e) if e.is_not_found() => confirm_gone(client, *org, &job).await,
            Err(e) => Err(e),
        },
        Job::PropertyKeys { org } => match client.property_keys(*org).await {
            Ok(c) => Ok(Done::PropertyKeys { org: *org, keys: c.value }),
            Err(e) if e.is_not_found() => confirm_gone(client, *org, &job).await,
            Err(e) => Err(e),
        },
        Job::Property { org, key } => match client.property(*org, key).await {
            Ok(c) => Ok(Done::Property { org: *org, key: key.clone(), value: Some(c.value.value) }),
            Err(e) if e.is_not_found() => Ok(Done::Property { org: *org, key: key.clone(), value: None }),
            Err(e) => Err(e),
        },
        Job::DeskList { start } => {
            client.service_desks_page(*start, PAGE_LIMIT).await.map(|c| Done::DeskList { start: *start, page: c.value })
        }
        Job::DeskPage { desk, id, start } => match client.desk_organizations_page(id, *start, PAGE_LIMIT).await {
            Ok(c) => Ok(Done::DeskPage { desk: *desk, start: *start, page: c.value }),
            Err(e) if e.is_not_found() => Ok(Done::DeskGone { desk: *desk }),
            Err(e) => Err(e),
        },
    };
    (job, result)
}

/// A 404 under a listed organization means it was deleted only when
/// `GET /organization/{id}` says so too; an organization that still exists
/// fails the export (a smaller snapshot must never pass for complete).
async fn confirm_gone(client: &Client, org: u64, job: &Job) -> Result<Done, ApiError> {
    match client.organization(org).await {
        Err(e) if e.is_not_found() => Ok(Done::OrgGone { org }),
        Err(e) => Err(e),
        Ok(c) => Err(ApiError {
            kind: ErrorKind::Unexpected {
                status: 404,
                call: job.describe(),
                detail: format!("a 404 for organization {org}, which GET /organization/{org} shows still exists"),
            },
            attempts: c.attempts,
        }),
    }
}

/// One service desk being read.
#[derive(Debug)]
struct DeskState {
    id: String,
    /// Named by `--service-desk` (a 404 is then an error, not a vanished desk).
    named: bool,
    pager: Pager<u64>,
    orgs: Vec<u64>,
    gone: bool,
}

/// One organization being read.
#[derive(Debug)]
struct OrgEntry {
    org: Organization,
    members: Vec<User>,
    properties: Vec<(String, Value)>,
    /// Jobs of this organization not finished yet (the member chain counts
    /// as one).
    pending: usize,
}

/// The two job lanes and the count of jobs not yet answered.
struct Queue {
    chains: mpsc::UnboundedSender<Job>,
    work: mpsc::UnboundedSender<Job>,
    outstanding: usize,
}

impl Queue {
    /// A follow-up (a list's next page, a listed key's value): goes before
    /// new per-organization work.
    fn chain(&mut self, job: Job) {
        self.outstanding += 1;
        self.chains.unbounded_send(job).expect("the job stream outlives the queue");
    }

    fn work(&mut self, job: Job) {
        self.outstanding += 1;
        self.work.unbounded_send(job).expect("the job stream outlives the queue");
    }
}

/// The consumer's state: everything collected so far.
struct Reader {
    orgs: HashMap<u64, OrgEntry>,
    org_pager: Pager<u64>,
    member_pagers: HashMap<u64, Pager<String>>,
    desk_pager: Pager<String>,
    desks: Vec<DeskState>,
    /// Desks were named by `--service-desk`: the desk list only gives
    /// their project keys and names.
    named_desks: bool,
    desk_info: HashMap<String, DeskInfo>,
    vanished: Vec<u64>,
    progress: Progress,
}

impl Reader {
    fn new(progress: Progress) -> Reader {
        Reader {
            orgs: HashMap::new(),
            org_pager: Pager::new(),
            member_pagers: HashMap::new(),
            desk_pager: Pager::new(),
            desks: Vec::new(),
            named_desks: false,
            desk_info: HashMap::new(),
            vanished: Vec::new(),
            progress,
        }
    }

    fn org_done(&mut self, org: u64) {
        if let Some(entry) = self.orgs.get_mut(&org) {
            entry.pending -= 1;
            if entry.pending == 0 {
                self.progress.inc(1);
            }
        }
    }

    fn vanish(&mut self, org: u64, shared: &Mutex<HashSet<u64>>) {
        if let Some(entry) = self.orgs.remove(&org) {
            // The summary carries the warning; this is for the log.
            tracing::info!(organization = org, name = %entry.org.name, "organization deleted while the export ran: left out");
            shared.lock().expect("vanished lock").insert(org);
            self.member_pagers.remove(&org);
            self.vanished.push(org);
            if entry.pending > 0 {
                self.progress.inc(1);
            }
        }
    }

    fn add_desk(&mut self, id: String, named: bool, q: &mut Queue) {
        let desk = self.desks.len();
        q.chain(Job::DeskPage { desk, id: id.clone(), start: 0 });
        self.desks.push(DeskState { id, named, pager: Pager::new(), orgs: Vec::new(), gone: false });
    }

    /// Take one finished job, queueing what it leads to.
    fn take(&mut self, done: Done, q: &mut Queue, shared: &Mutex<HashSet<u64>>) -> Result<(), ExportError> {
        match done {
            Done::OrgPage { start, page } => self.take_org_page(start, page, q),
            Done::Members { org, start, page } => self.take_members(org, start, page, q),
            Done::PropertyKeys { org, keys } => {
                self.take_property_keys(org, keys, q);
                Ok(())
            }
            Done::Property { org, key, value } => {
                if let (Some(entry), Some(value)) = (self.orgs.get_mut(&org), value) {
                    entry.properties.push((key, value));
                }
                self.org_done(org);
                Ok(())
            }
            Done::OrgGone { org } => {
                self.vanish(org, shared);
                Ok(())
            }
            Done::Skipped => Ok(()),
            Done::DeskList { start, page } => self.take_desk_list(start, page, q),
            Done::DeskPage { desk, start, page } => self.take_desk_page(desk, start, page, q),
            Done::DeskGone { desk } => self.desk_gone(desk),
        }
    }

    fn take_org_page(&mut self, start: u64, page: Page<Organization>, q: &mut Queue) -> Result<(), ExportError> {
        let fresh = self
            .org_pager
            .accept(start, page.values, page.is_last_page, |o| o.id)
            .map_err(|u| unstable("the organization list (GET /organization)", u))?;
        for org in fresh {
            let id = org.id;
            // A list that fits one page is not deduplicated by the
            // pager; an id listed twice is still read once.
            if let Entry::Vacant(slot) = self.orgs.entry(id) {
                slot.insert(OrgEntry { org, members: Vec::new(), properties: Vec::new(), pending: 2 });
                self.progress.add_work(1);
                q.work(Job::Members { org: id, start: 0 });
                q.work(Job::PropertyKeys { org: id });
            }
        }
        if let Some(start) = self.org_pager.next_start() {
            q.chain(Job::OrgPage { start });
        }
        Ok(())
    }

    fn take_members(&mut self, org: u64, start: u64, page: Page<User>, q: &mut Queue) -> Result<(), ExportError> {
        let Some(entry) = self.orgs.get_mut(&org) else {
            return Ok(());
        };
        let mut pager = if start == 0 { Pager::new() } else { self.member_pagers.remove(&org).unwrap_or_default() };
        let fresh = pager
            .accept(start, page.values, page.is_last_page, |u| u.account_id.clone())
            .map_err(|u| unstable(&format!("the members of organization {org} (GET /organization/{org}/user)"), u))?;
        entry.members.extend(fresh);
        match pager.next_start() {
            Some(start) => {
                self.member_pagers.insert(org, pager);
                q.chain(Job::Members { org, start });
            }
            None => self.org_done(org),
        }
        Ok(())
    }

    fn take_property_keys(&mut self, org: u64, mut keys: Vec<String>, q: &mut Queue) {
        let Some(entry) = self.orgs.get_mut(&org) else {
            return;
        };
        keys.sort_unstable();
        keys.dedup();
        entry.pending += keys.len();
        // Values finish an organization already started: they go
        // ahead of new organizations' first reads, so organizations
        // complete (and the progress bar moves) steadily.
        for key in keys {
            q.chain(Job::Property { org, key });
        }
        self.org_done(org);
    }

    fn take_desk_list(&mut self, start: u64, page: Page<ServiceDesk>, q: &mut Queue) -> Result<(), ExportError> {
        let fresh = self
            .desk_pager
            .accept(start, page.values, page.is_last_page, |d| d.id.clone())
            .map_err(|u| unstable("the service desk list (GET /servicedesk)", u))?;
        for desk in fresh {
            let info = DeskInfo { project_key: desk.project_key, project_name: desk.project_name };
            self.desk_info.insert(desk.id.clone(), info);
            if !self.named_desks {
                self.add_desk(desk.id, false, q);
            }
        }
        if let Some(start) = self.desk_pager.next_start() {
            q.chain(Job::DeskList { start });
        }
        Ok(())
    }

    fn take_desk_page(
        &mut self,
        desk: usize,
        start: u64,
        page: Page<Organization>,
        q: &mut Queue,
    ) -> Result<(), ExportError> {
        let state = &mut self.desks[desk];
        let fresh = state.pager.accept(start, page.values, page.is_last_page, |o| o.id).map_err(|u| {
            let id = &state.id;
            unstable(&format!("the organizations of service desk {id} (GET /servicedesk/{id}/organization)"), u)
        })?;
        state.orgs.extend(fresh.into_iter().map(|o| o.id));
        if let Some(start) = state.pager.next_start() {
            q.chain(Job::DeskPage { desk, id: state.id.clone(), start });
        }
        Ok(())
    }

    fn desk_gone(&mut self, desk: usize) -> Result<(), ExportError> {
        let state = &mut self.desks[desk];
        if state.named {
            return Err(ExportError::UnknownServiceDesk(state.id.clone()));
        }
        tracing::warn!(
            service_desk = %state.id,
            "service desk deleted while the export ran: its links are left out"
        );
        state.gone = true;
        Ok(())
    }

    /// Sort everything into the snapshot's order.
    fn finish(self) -> SiteData {
        let mut orgs: Vec<OrgData> = self
            .orgs
            .into_values()
            .map(|e| {
                let mut members = e.members;
                members.sort_unstable_by(|a, b| a.account_id.cmp(&b.account_id));
                members.dedup_by(|a, b| a.account_id == b.account_id);
                let mut properties = e.properties;
                properties.sort_unstable_by(|a, b| a.0.cmp(&b.0));
                properties.dedup_by(|a, b| a.0 == b.0);
                OrgData { org: e.org, members, properties }
            })
            .collect();
        orgs.sort_unstable_by_key(|o| o.org.id);
        let index: HashMap<u64, usize> = orgs.iter().enumerate().map(|(i, o)| (o.org.id, i)).collect();

        let mut desks: Vec<DeskState> = self.desks.into_iter().filter(|d| !d.gone).collect();
        desks.sort_by(|a, b| desk_order(&a.id, &b.id));
        desks.dedup_by(|a, b| a.id == b.id);
        let mut links: Vec<(usize, String)> = Vec::new();
        let mut unknown = 0usize;
        for desk in &desks {
            for org in &desk.orgs {
                match index.get(org) {
                    Some(&i) => links.push((i, desk.id.clone())),
                    // Created (or deleted) while the export ran: the
                    // organization list does not have it.
                    None => unknown += 1,
                }
            }
        }
        if unknown > 0 {
            tracing::info!(
                links = unknown,
                "service desk links to organizations not in the snapshot (created or deleted during the export) left out"
            );
        }
        links.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| desk_order(&a.1, &b.1)));
        links.dedup();
        let mut vanished = self.vanished;
        vanished.sort_unstable();
        let desks = desks.into_iter().map(|d| d.id).collect();
        SiteData { orgs, links, desks, vanished, desk_info: self.desk_info }
    }
}

fn unstable(what: &str, u: Unstable) -> ExportError {
    match u {
        Unstable::Shifting { resyncs } => ExportError::Unstable(what.to_string(), resyncs),
        Unstable::Stuck(why) => ExportError::Paging(format!("{what}: {why}")),
    }
}

/// Desk ids in numeric order when both are numeric, numeric ones first,
/// others by text.
pub(super) fn desk_order(a: &str, b: &str) -> Ordering {
    match (a.parse::<u64>(), b.parse::<u64>()) {
        (Ok(x), Ok(y)) => x.cmp(&y).then_with(|| a.cmp(b)),
        (Ok(_), Err(_)) => Ordering::Less,
        (Err(_), Ok(_)) => Ordering::Greater,
        (Err(_), Err(_)) => a.cmp(b),
    }
}

/// Read the whole site concurrently and return it sorted.
pub(super) async fn read_site(client: &Client, opts: &ExportOptions) -> Result<SiteData, ExportError> {
    let (chains_tx, chains_rx) = mpsc::unbounded::<Job>();
    let (work_tx, work_rx) = mpsc::unbounded::<Job>();
    let mut q = Queue { chains: chains_tx, work: work_tx, outstanding: 0 };
    let shared_vanished = Mutex::new(HashSet::new());
    let progress = Progress::new(opts.progress, "organizations");
    progress.phase("exporting");
    let mut reader = Reader::new(progress);

    q.chain(Job::OrgPage { start: 0 });
    // The desk list gives every desk's project key and name (written beside
    // its links); without named desks it is also the list of desks to read.
    q.chain(Job::DeskList { start: 0 });
    if !opts.service_desks.is_empty() {
        reader.named_desks = true;
        let mut named: Vec<String> = Vec::new();
        for id in &opts.service_desks {
            let id = id.trim();
            if !id.is_empty() && !named.iter().any(|n| n == id) {
                named.push(id.to_string());
            }
        }
        for id in named {
            reader.add_desk(id, true, &mut q);
        }
    }

    let in_flight = (client.throttle().concurrency() * IN_FLIGHT_PER_SLOT).clamp(8, 512);
    let mut replies = stream::select_with_strategy(chains_rx, work_rx, |_: &mut ()| PollNext::Left)
        .map(|job| run_job(client, job, &shared_vanished))
        .buffer_unordered(in_flight);

    let result: Result<(), ExportError> = async {
        while q.outstanding > 0 {
            let Some((job, result)) = replies.next().await else {
                break;
            };
            q.outstanding -= 1;
            match result {
                Ok(done) => reader.take(done, &mut q, &shared_vanished)?,
                Err(e) => {
                    // The error itself goes to the caller; this names the call.
                    tracing::error!(call = %job.describe(), attempts = e.attempts, "export read failed");
                    return Err(ExportError::Api(e));
                }
            }
        }
        Ok(())
    }
    .await;
    reader.progress.finish();
    result?;
    if reader.org_pager.resyncs() > 0 {
        tracing::info!(
            resyncs = reader.org_pager.resyncs(),
            "the organization list shifted while it was read (deletions); re-read the shifted pages"
        );
    }
    Ok(reader.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn desks_order_numerically_then_by_text() {
        let mut ids = vec!["10", "HR", "2", "1", "ABC", "02"];
        ids.sort_by(|a, b| desk_order(a, b));
        assert_eq!(ids, ["1", "02", "2", "10", "ABC", "HR"]);
    }

    #[test]
    fn a_property_read_twice_or_out_of_order_is_written_once_in_key_order() {
        let (tx, _rx1) = mpsc::unbounded();
        let (tx2, _rx2) = mpsc::unbounded();
        let mut q = Queue { chains: tx, work: tx2, outstanding: 0 };
        let shared = Mutex::new(HashSet::new());
        let mut reader = Reader::new(Progress::new(false, "organizations"));
        let org = |id: u64| Organization { id, name: format!("O{id}"), uuid: None, scim_managed: None, created: None };
        let page = |values: Vec<Organization>| Page { start: 0, limit: 50, size: 0, is_last_page: true, values };
        reader.take(Done::OrgPage { start: 0, page: page(vec![org(10), org(2), org(10)]) }, &mut q, &shared).unwrap();
        // members + keys for 10 and 2 (the duplicate 10 is not read twice)
        assert_eq!(q.outstanding, 4);
        reader
            .take(Done::PropertyKeys { org: 2, keys: vec!["b".into(), "a".into(), "b".into()] }, &mut q, &shared)
            .unwrap();
        assert_eq!(q.outstanding, 6, "one read per distinct key");
        for key in ["b", "a"] {
            reader.take(Done::Property { org: 2, key: key.into(), value: Some(key.into()) }, &mut q, &shared).unwrap();
        }
        reader.take(Done::OrgGone { org: 10 }, &mut q, &shared).unwrap();
        assert!(shared.lock().unwrap().contains(&10));
        let site = reader.finish();
        let ids: Vec<u64> = site.orgs.iter().map(|o| o.org.id).collect();
        assert_eq!(ids, [2]);
        let keys: Vec<&str> = site.orgs[0].properties.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["a", "b"]);
        assert_eq!(site.vanished, [10]);
    }
}
