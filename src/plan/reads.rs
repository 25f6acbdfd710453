//! Read planning: which parts of the live site the plan needs, and the
//! shape they come back in.
//!
//! Owns [`Reads`] (members, property keys, desks to read — only of
//! organizations that exist and have rows of that kind, or every named one
//! with `--prune`) and [`Live`] (what was read). Pure: the executor does the
//! reading; a read that failed is kept as a [`ReadError`] so that only the
//! rows depending on it fail.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use serde_json::Value;

use super::{Desired, OrgIdx};
use crate::input::{Action, Kind};

/// What must be read of the live site before planning.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Reads {
    /// Existing organizations whose members must be read.
    pub members: Vec<(OrgIdx, u64)>,
    /// Existing organizations whose property keys must be read.
    pub property_keys: Vec<(OrgIdx, u64)>,
    /// Service desks whose organization lists must be read.
    pub desks: Vec<String>,
    /// Also list every desk of the site (prune of desk links).
    pub all_desks: bool,
}

/// Which live state the plan needs: only of organizations that already
/// exist and have rows of that kind (or every named one with `--prune`);
/// organizations created by this run need no reads.
pub fn reads(d: &Desired, prune: bool) -> Reads {
    let mut out = Reads::default();
    let mut desks = BTreeSet::new();
    for (i, o) in d.orgs.iter().enumerate() {
        let Some(id) = o.live_id else { continue };
        if !o.delete_rows.is_empty() || !o.is_used() {
            continue;
        }
        let i = i as OrgIdx;
        if !o.members.is_empty() || (prune && d.kinds.contains(&Kind::Members)) {
            out.members.push((i, id));
        }
        if !o.properties.is_empty() || (prune && d.kinds.contains(&Kind::Properties)) {
            out.property_keys.push((i, id));
        }
        desks.extend(o.desks.keys().cloned());
    }
    out.all_desks = prune
        && d.kinds.contains(&Kind::ServiceDesks)
        && d.orgs.iter().any(|o| o.live_id.is_some() && o.delete_rows.is_empty() && o.is_used());
    out.desks = desks.into_iter().collect();
    out
}

/// A read that failed: the rows depending on it fail with this message.
pub type ReadError = Arc<str>;

/// The parts of the live site that were read.
#[derive(Debug, Clone, Default)]
pub struct Live {
    pub members: HashMap<OrgIdx, Result<HashSet<Box<str>>, ReadError>>,
    /// Members' visible emails (lowercase) → account id, of the organizations
    /// whose members were read.
    pub member_emails: HashMap<OrgIdx, HashMap<Box<str>, Box<str>>>,
    pub property_keys: HashMap<OrgIdx, Result<BTreeSet<String>, ReadError>>,
    /// Values of keys the input wants to `set` that exist (None = vanished).
    pub property_values: HashMap<(OrgIdx, String), Result<Option<Value>, ReadError>>,
    /// Organization ids linked to each desk read.
    pub desks: BTreeMap<String, Result<HashSet<u64>, ReadError>>,
    /// Project key of each desk id, when every desk was listed (`--prune`):
    /// input rows may name a desk by either, and the same desk must not be
    /// pruned under one name while linked under the other.
    pub desk_keys: HashMap<String, String>,
}

/// Property values to read: keys the input wants to `set` that the site has.
pub fn value_reads(d: &Desired, live: &Live) -> Vec<(OrgIdx, u64, String)> {
    let mut out = Vec::new();
    for (&i, keys) in &live.property_keys {
        let Ok(keys) = keys else { continue };
        out.extend(value_reads_of(d, i, keys));
    }
    out.sort();
    out
}

/// The property values to read of organization `i`, once the site listed
/// its `keys` (so that the reads can start as soon as the keys arrive).
pub fn value_reads_of(d: &Desired, i: OrgIdx, keys: &BTreeSet<String>) -> Vec<(OrgIdx, u64, String)> {
    let o = &d.orgs[i as usize];
    let Some(id) = o.live_id else { return Vec::new() };
    o.properties
        .iter()
        .filter(|(k, w)| w.action == Action::Set && !w.conflict && keys.contains(*k))
        .map(|(k, _)| (i, id, k.clone()))
        .collect()
}
