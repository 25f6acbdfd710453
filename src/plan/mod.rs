//! Planning: input rows + the live state of the site → the fewest operations.
//!
//! Pure: no I/O, no clocks, no randomness. [`Desired`] (`desired.rs`) folds
//! the rows into one wanted state per organization, [`reads`] (`reads.rs`)
//! says which parts of the live site must be read, and [`plan`] turns wanted +
//! live into operations and the outcomes of rows that need no call, one kind
//! at a time (`kinds.rs`). Keeping this pure makes the re-run guarantee ("a
//! re-run after success makes no writes") a unit-testable property rather
//! than an accident of the executor.

mod desired;
mod kinds;
mod reads;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::Arc;

use serde_json::Value;

pub use desired::*;
pub use reads::*;

use crate::input::{Kind, RowData};
use crate::report::{Outcome, RowOutcome};

/// Index of an input row (its global 0-based position).
pub type RowIdx = u32;
/// Index of an organization in [`Desired::orgs`].
pub type OrgIdx = u32;

/// A row that needs no call (unchanged, or failed while planning), handed
/// to the caller's sink as soon as it is known so that nothing accumulates.
#[derive(Debug, Clone, PartialEq)]
pub struct Settled {
    pub row: RowIdx,
    pub org: Option<OrgIdx>,
    /// Account id, property key or desk id (empty for organization rows).
    pub target: Arc<str>,
    pub outcome: RowOutcome,
}

/// One write to the site.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    CreateOrg {
        org: OrgIdx,
        rows: Vec<RowIdx>,
    },
    DeleteOrg {
        org: OrgIdx,
        id: u64,
        rows: Vec<RowIdx>,
    },
    /// Add (or remove) up to `--chunk-size` members in one call.
    Members {
        org: OrgIdx,
        add: bool,
        members: Vec<MemberChange>,
    },
    SetProperty {
        org: OrgIdx,
        key: String,
        value: Value,
        rows: Rows,
    },
    /// `rows: None` = removed by `--prune`.
    DeleteProperty {
        org: OrgIdx,
        key: String,
        rows: Option<Rows>,
    },
    /// Link (or unlink) an organization and a service desk.
    Link {
        org: OrgIdx,
        desk: String,
        link: bool,
        rows: Option<Rows>,
    },
}

impl Op {
    pub fn org(&self) -> OrgIdx {
        match self {
            Op::CreateOrg { org, .. }
            | Op::DeleteOrg { org, .. }
            | Op::Members { org, .. }
            | Op::SetProperty { org, .. }
            | Op::DeleteProperty { org, .. }
            | Op::Link { org, .. } => *org,
        }
    }
}

/// One account id of a members call, with the rows it serves
/// (`None` = removed by `--prune`).
#[derive(Debug, Clone, PartialEq)]
pub struct MemberChange {
    pub account_id: Box<str>,
    pub rows: Option<Rows>,
}

/// The operations of a run, in two phases: organizations first (creates
/// give the ids that everything else needs), then the rest.
#[derive(Debug, Default)]
pub struct Plan {
    pub org_ops: Vec<Op>,
    pub ops: Vec<Op>,
    /// The email behind account ids that member operations send, for the
    /// executor to fall back to when the site does not know the id.
    pub contacts: HashMap<(OrgIdx, Box<str>), Contact>,
}

impl Plan {
    pub fn writes(&self) -> usize {
        self.org_ops.len() + self.ops.len()
    }
}

/// Settles rows into the caller's sink.
struct Out<'s> {
    sink: &'s mut dyn FnMut(&Desired, Settled),
    d: &'s Desired,
    org: OrgIdx,
}

impl Out<'_> {
    fn rows(&mut self, rows: impl IntoIterator<Item = RowIdx>, target: &str, outcome: RowOutcome) {
        let target: Arc<str> = target.into();
        for row in rows {
            (self.sink)(self.d, Settled { row, org: Some(self.org), target: target.clone(), outcome: outcome.clone() });
        }
    }
    fn unchanged(&mut self, rows: &Rows, target: &str, msg: &str) {
        self.rows(rows.iter(), target, RowOutcome::new(Outcome::Unchanged).with_message(msg));
    }
    fn read_failed(&mut self, rows: &Rows, target: &str, e: &ReadError) {
        self.rows(rows.iter(), target, RowOutcome::failed(format!("could not read the site's current state: {e}")));
    }
    fn conflict(&mut self, rows: &Rows, target: &str, what: &str) {
        let sources: Vec<String> = rows.iter().map(|r| self.d.source(r)).collect();
        let msg = format!("contradictory rows for {what}: {}", sources.join(", "));
        self.rows(rows.iter(), target, RowOutcome::failed(msg));
    }
}

/// What every organization's planning shares.
struct Ctx<'a> {
    live: &'a Live,
    chunk_size: usize,
    prune_members: bool,
    prune_props: bool,
    prune_desks: bool,
}

/// Turn the wanted state and the live state into operations; rows that need
/// no call go to `sink` (with `d`, for names and sources) as soon as they are
/// known. Drains the wants out of `d` (afterwards the report needs only its
/// names, ids and row sources).
pub fn plan(
    d: &mut Desired,
    live: &Live,
    prune: bool,
    chunk_size: NonZeroUsize,
    sink: &mut dyn FnMut(&Desired, Settled),
) -> Plan {
    let ctx = Ctx {
        live,
        chunk_size: chunk_size.get(),
        prune_members: prune && d.kinds.contains(&Kind::Members),
        prune_props: prune && d.kinds.contains(&Kind::Properties),
        prune_desks: prune && d.kinds.contains(&Kind::ServiceDesks),
    };
    let mut p = Plan::default();
    for i in 0..d.orgs.len() {
        let idx = i as OrgIdx;
        let w = kinds::Wants::take(&mut d.orgs[i]);
        let d: &Desired = d;
        let mut out = Out { sink: &mut *sink, d, org: idx };
        if !kinds::organization(&mut p, &mut out, &d.orgs[i], &w) {
            continue;
        }
        let live_id = d.orgs[i].live_id;
        kinds::members(&mut p, &mut out, &ctx, live_id, w.members, &w.contacts);
        kinds::properties(&mut p, &mut out, &ctx, live_id, &w.props);
        kinds::desks(&mut p, &mut out, &ctx, live_id, &w.desks);
    }
    p
}

/// The report's `target` of a row: account id, property key or desk id.
pub fn target_of(data: &RowData) -> &str {
    match data {
        RowData::Organization { .. } => "",
        RowData::Member { account_id, email, .. } => account_id.as_deref().or(email.as_deref()).unwrap_or(""),
        RowData::Property { key, .. } => key,
        RowData::ServiceDesk { service_desk_id, .. } => service_desk_id,
    }
}
