//! The writes of an import, one lane per endpoint × method, so that every
//! endpoint works at its own rate at the same time (Jira paces each one
//! separately: a run takes as long as its busiest endpoint needs, not the
//! sum of all).
//!
//! Owns *when* each planned operation is handed to the executor: operations
//! of organizations the site has go to their endpoint's lane at once; those
//! of an organization being created wait for its create and go the moment it
//! answers, while the next organizations are still being created — so the
//! slowest endpoint (often property PUTs at 50/s) starts with the first
//! organization instead of after the last. When a create fails, the
//! operations that waited for it are settled here without a request. It
//! never decides what to change (`plan`) nor how an operation becomes calls
//! (`executor`), and it returns one stream of finished operations for the
//! import's single consumer.

use std::collections::{HashMap, HashSet};

use futures::channel::mpsc::{self, UnboundedSender};
use futures::stream::{self, BoxStream, StreamExt};

use crate::api::Client;
use crate::executor::{self, ExecContext, OpDone};
use crate::plan::{Op, OrgIdx, Plan};
use crate::report::RowOutcome;
use crate::routes::{self, Route};

/// The endpoint an operation calls.
pub fn route_of(op: &Op) -> Route {
    match op {
        Op::CreateOrg { .. } => routes::CREATE_ORG,
        Op::DeleteOrg { .. } => routes::DELETE_ORG,
        Op::Members { add: true, .. } => routes::ADD_MEMBERS,
        Op::Members { add: false, .. } => routes::REMOVE_MEMBERS,
        Op::SetProperty { .. } => routes::SET_PROPERTY,
        Op::DeleteProperty { .. } => routes::DELETE_PROPERTY,
        Op::Link { link: true, .. } => routes::LINK_ORG,
        Op::Link { link: false, .. } => routes::UNLINK_ORG,
    }
}

/// The routes that operations use, each with its own lane.
const WRITE_ROUTES: [Route; 8] = [
    routes::CREATE_ORG,
    routes::DELETE_ORG,
    routes::ADD_MEMBERS,
    routes::REMOVE_MEMBERS,
    routes::SET_PROPERTY,
    routes::DELETE_PROPERTY,
    routes::LINK_ORG,
    routes::UNLINK_ORG,
];

type Job = (Op, Option<u64>);

/// The scheduler side of the lanes (the consumer keeps it and reports every
/// finished operation back through [`Lanes::finished`]).
pub struct Lanes {
    senders: HashMap<Route, UnboundedSender<Job>>,
    /// Operations waiting for their organization's create.
    waiting: HashMap<OrgIdx, Vec<Op>>,
    /// Creates not answered yet.
    creating: usize,
    ids: Vec<Option<u64>>,
}

impl Lanes {
    /// Start the lanes and queue `plan`. `ids` are the organizations' live
    /// ids by index; `width` is how many operations one lane keeps going
    /// (they wait at the endpoint's pacer, so the in-flight cap still holds).
    /// Also returns operations settled at once: those of an organization
    /// that has no id and no create (a plan never makes one; nothing is
    /// dropped silently all the same).
    pub fn start(
        client: Client,
        ctx: ExecContext,
        plan: Plan,
        ids: Vec<Option<u64>>,
        width: usize,
    ) -> (Lanes, BoxStream<'static, OpDone>, Vec<OpDone>) {
        let mut senders = HashMap::new();
        let mut lanes = Vec::new();
        for route in WRITE_ROUTES {
            let (tx, rx) = mpsc::unbounded::<Job>();
            senders.insert(route, tx);
            let (client, ctx) = (client.clone(), ctx.clone());
            let lane = rx
                .map(move |(op, id)| {
                    let (c, ctx) = (client.clone(), ctx.clone());
                    async move { executor::run_op(&c, &ctx, op, id).await }
                })
                .buffer_unordered(width.max(1));
            lanes.push(lane.boxed());
        }
        let mut me = Lanes { senders, waiting: HashMap::new(), creating: 0, ids };
        let dry_run = ctx.dry_run;
        let mut created = HashSet::new();
        for op in plan.org_ops {
            if let Op::CreateOrg { org, .. } = op {
                created.insert(org);
                me.creating += usize::from(!dry_run);
            }
            me.send(op);
        }
        let mut settled = Vec::new();
        let unknown = RowOutcome::failed("no id and no create planned");
        for op in plan.ops {
            let org = op.org();
            match me.ids.get(org as usize).copied().flatten() {
                Some(_) => me.send(op),
                None if dry_run => me.send(op),
                None if created.contains(&org) => me.waiting.entry(org).or_default().push(op),
                None => settled.push(executor::not_created(&op, &unknown)),
            }
        }
        me.close_when_idle();
        (me, stream::select_all(lanes).boxed(), settled)
    }

    fn send(&mut self, op: Op) {
        let id = self.ids.get(op.org() as usize).copied().flatten();
        let lane = self.senders.get(&route_of(&op)).expect("a lane per write route");
        lane.unbounded_send((op, id)).expect("the lanes outlive their senders");
    }

    /// Tell the lanes that `done` finished. A create releases the operations
    /// that waited for it, or settles them (returned) when it failed.
    pub fn finished(&mut self, done: &OpDone) -> Vec<OpDone> {
        let mut settled = Vec::new();
        let waiting_for_create = done.created.is_some() || done.create_error.is_some();
        if waiting_for_create {
            self.creating = self.creating.saturating_sub(1);
            if let Some(id) = done.created {
                if let Some(slot) = self.ids.get_mut(done.org as usize) {
                    *slot = Some(id);
                }
            }
            let ops = self.waiting.remove(&done.org).unwrap_or_default();
            match &done.create_error {
                None => ops.into_iter().for_each(|op| self.send(op)),
                Some(why) => settled.extend(ops.iter().map(|op| executor::not_created(op, why))),
            }
        }
        self.close_when_idle();
        settled
    }

    /// With no create outstanding nothing more can be queued: close the
    /// lanes so the stream ends once they drain.
    fn close_when_idle(&mut self) {
        if self.creating == 0 {
            debug_assert!(self.waiting.is_empty(), "every waiting operation has a create outstanding");
            self.senders.clear();
        }
    }

    /// The organizations' ids, including those created so far.
    pub fn ids(&self) -> &[Option<u64>] {
        &self.ids
    }
}
