//! Planning: input rows + the live state of the site → the fewest operations.
//!
//! Pure: no I/O, no clocks, no randomness. [`Desired`] folds the rows into
//! one wanted state per organization (merging identical duplicate rows and
//! failing contradictory ones), [`reads`] says which parts of the live site
//! must be read, and [`plan`] turns wanted + live into operations and the
//! outcomes of rows that need no call. Keeping this pure makes the re-run
//! guarantee ("a re-run after success makes no writes") a unit-testable
//! property rather than an accident of the executor.
//!
//! Memory: one compact [`RowMeta`] per input row and one map entry per wanted
//! membership, so a 1M-row members file stays far below the row text's size.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::num::NonZeroUsize;
use std::sync::Arc;

use serde_json::Value;

use crate::api::Organization;
use crate::input::{Action, InvalidRow, Kind, OrgRef, Row, RowData};
use crate::report::{Outcome, RowOutcome};

/// Index of an input row (its global 0-based position).
pub type RowIdx = u32;
/// Index of an organization in [`Desired::orgs`].
pub type OrgIdx = u32;

/// The input rows behind one wanted change: usually one, more for identical
/// duplicates. Kept small because there is one per wanted membership.
#[derive(Debug, Clone, PartialEq)]
pub struct Rows {
    first: RowIdx,
    // Boxed on purpose: 8 bytes instead of 24 for the common single row,
    // multiplied by one per wanted membership.
    #[allow(clippy::box_collection)]
    more: Option<Box<Vec<RowIdx>>>,
}

impl Rows {
    pub fn one(r: RowIdx) -> Rows {
        Rows { first: r, more: None }
    }
    pub fn push(&mut self, r: RowIdx) {
        self.more.get_or_insert_with(Default::default).push(r);
    }
    pub fn iter(&self) -> impl Iterator<Item = RowIdx> + '_ {
        std::iter::once(self.first).chain(self.more.iter().flat_map(|m| m.iter().copied()))
    }
}

/// A wanted member or desk link.
#[derive(Debug, Clone, PartialEq)]
pub struct Want {
    pub action: Action,
    pub rows: Rows,
    /// Rows disagree about this target: all of them fail.
    pub conflict: bool,
}

/// A wanted property.
#[derive(Debug, Clone, PartialEq)]
pub struct PropWant {
    pub action: Action,
    pub value: Value,
    pub rows: Rows,
    pub conflict: bool,
}

/// Everything the input wants of one organization.
#[derive(Debug, Clone, Default)]
pub struct OrgEntry {
    pub name: String,
    /// Its id on the site when the site already had it.
    pub live_id: Option<u64>,
    pub upsert_rows: Vec<RowIdx>,
    pub delete_rows: Vec<RowIdx>,
    /// Wanted members in input order; sorted and merged by [`merge_members`]
    /// when planned (a Vec costs a third of a HashMap at 1M memberships).
    pub members: Vec<(Box<str>, Want)>,
    pub properties: BTreeMap<String, PropWant>,
    pub desks: BTreeMap<String, Want>,
    /// Members named by email only (lowercase), until
    /// [`Desired::apply_emails`] turns them into account ids.
    pub by_email: Vec<(Box<str>, Want)>,
    /// The email of members named by account id and email: the org may
    /// hold the person under another id, and the site may not know the id.
    pub contacts: Vec<(Box<str>, Contact)>,
}

impl OrgEntry {
    fn is_used(&self) -> bool {
        !self.upsert_rows.is_empty()
            || !self.members.is_empty()
            || !self.by_email.is_empty()
            || !self.properties.is_empty()
            || !self.desks.is_empty()
    }
}

/// A person's email (lowercase) and the name to give a created customer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contact {
    pub email: Box<str>,
    pub display_name: Option<Box<str>>,
}

/// An email the input names a person by: the name to create the customer
/// with (the first row's), and whether any row adds the person (only adds
/// may create a customer).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EmailNeed {
    pub display_name: Option<Box<str>>,
    pub adds: bool,
}

/// How an email resolved on the site (looked up by `resolve`, applied here).
#[derive(Debug, Clone, PartialEq)]
pub enum Resolved {
    /// The person's account id; `created`: a customer was created for it.
    Id { account_id: Arc<str>, created: bool },
    /// Dry run: a customer would be created.
    WouldCreate,
    /// The rows naming this email fail with this message.
    Failed(Arc<str>),
}

/// What the report says of a row that named a person by email: the account
/// id it resolved to (its `target`) and how.
#[derive(Debug, Clone, PartialEq)]
pub struct PersonNote {
    pub target: Arc<str>,
    pub note: Arc<str>,
}

/// Where a row came from, compactly.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RowMeta {
    pub file: u16,
    pub line: u32,
    pub kind: Option<Kind>,
    pub action: Option<Action>,
    /// A member row that gives an email: its report target may become the
    /// account id the email resolved to.
    pub email: bool,
}

/// The input folded into a wanted state, resolved against the site's
/// organization list.
#[derive(Debug, Default)]
pub struct Desired {
    pub orgs: Vec<OrgEntry>,
    by_name: HashMap<String, OrgIdx>,
    live_by_name: HashMap<String, u64>,
    live_by_id: HashMap<u64, String>,
    /// Names the site holds more than once, with their ids (ascending):
    /// rows naming them fail; `organization_id` picks one.
    ambiguous: HashMap<String, Vec<u64>>,
    /// Entries of organizations with an ambiguous name, by live id.
    by_id: HashMap<u64, OrgIdx>,
    /// The input is a snapshot of this same site: an `organization_id` that
    /// disagrees with `organization` fails the row instead of being ignored.
    pub same_site: bool,
    /// Rows whose `organization_id` was ignored (the name won), and why.
    pub notes: HashMap<RowIdx, Arc<str>>,
    pub meta: Vec<RowMeta>,
    pub files: Vec<Arc<str>>,
    /// Kinds that have at least one row: `--prune` only touches these.
    pub kinds: BTreeSet<Kind>,
    /// Emails that rows name people by (lowercase), to resolve before planning.
    pub emails: BTreeMap<Box<str>, EmailNeed>,
    /// Rows whose person was resolved by email.
    pub people: HashMap<RowIdx, PersonNote>,
}

impl Desired {
    /// Start from the site's organizations. Names are matched exactly; a
    /// name the site holds twice is ambiguous and never guessed.
    pub fn new(live: &[Organization]) -> Desired {
        let mut d = Desired::default();
        for o in live {
            d.live_by_id.insert(o.id, o.name.clone());
            if let Some(&first) = d.live_by_name.get(&o.name) {
                let ids = d.ambiguous.entry(o.name.clone()).or_insert_with(|| vec![first]);
                ids.push(o.id);
                ids.sort_unstable();
            } else {
                d.live_by_name.insert(o.name.clone(), o.id);
            }
        }
        d
    }

    /// Why a name cannot pick one organization, if it cannot.
    fn ambiguity(&self, name: &str) -> Option<String> {
        let ids = self.ambiguous.get(name)?;
        let list: Vec<String> = ids.iter().map(u64::to_string).collect();
        Some(format!(
            "the site has {} organizations named {name:?} (ids {}): give `organization_id` to pick one",
            ids.len(),
            list.join(", ")
        ))
    }

    /// The entry of the live organization `id` whose name is ambiguous.
    fn org_by_live_id(&mut self, id: u64, name: &str) -> OrgIdx {
        if let Some(&i) = self.by_id.get(&id) {
            return i;
        }
        let idx = self.orgs.len() as OrgIdx;
        self.orgs.push(OrgEntry { name: name.to_string(), live_id: Some(id), ..OrgEntry::default() });
        self.by_id.insert(id, idx);
        idx
    }

    pub fn source(&self, r: RowIdx) -> String {
        let m = &self.meta[r as usize];
        format!("{}:{}", self.files[m.file as usize], m.line)
    }

    fn file_index(&mut self, file: &Arc<str>) -> u16 {
        if let Some(i) = self.files.iter().rposition(|f| Arc::ptr_eq(f, file) || f == file) {
            return i as u16;
        }
        self.files.push(file.clone());
        (self.files.len() - 1) as u16
    }

    fn push_meta(
        &mut self,
        index: u64,
        file: &Arc<str>,
        line: u64,
        kind: Option<Kind>,
        action: Option<Action>,
    ) -> RowIdx {
        assert_eq!(index as usize, self.meta.len(), "rows must arrive in input order");
        let file = self.file_index(file);
        self.meta.push(RowMeta { file, line: line.min(u32::MAX as u64) as u32, kind, action, email: false });
        index as RowIdx
    }

    /// Record an invalid row (its failure is reported by the caller).
    pub fn add_invalid(&mut self, row: &InvalidRow) -> RowIdx {
        let action = None;
        self.push_meta(row.index, &row.source.file, row.source.line, row.kind, action)
    }

    /// The organization index for a name, creating the entry on first use.
    fn org_by_name(&mut self, name: &str) -> OrgIdx {
        if let Some(&i) = self.by_name.get(name) {
            return i;
        }
        let idx = self.orgs.len() as OrgIdx;
        self.orgs.push(OrgEntry {
            name: name.to_string(),
            live_id: self.live_by_name.get(name).copied(),
            ..OrgEntry::default()
        });
        self.by_name.insert(name.to_string(), idx);
        idx
    }

    /// Resolve an [`OrgRef`]: names resolve unless the site holds them
    /// twice (missing ones get created); ids must exist on the site. With
    /// both, the name wins; when the id is another live organization the
    /// note says it was ignored (ids differ between sites), or, in a
    /// snapshot of this very site, the row fails.
    /// An error names the field at fault.
    pub fn resolve(&mut self, org: &OrgRef) -> Result<(OrgIdx, Option<String>), (&'static str, String)> {
        match org {
            OrgRef::Name(n) => match self.ambiguity(n) {
                Some(why) => Err(("organization", why)),
                None => Ok((self.org_by_name(n), None)),
            },
            OrgRef::Id(id) => match self.live_by_id.get(id).cloned() {
                Some(name) if self.ambiguous.contains_key(&name) => Ok((self.org_by_live_id(*id, &name), None)),
                Some(name) => Ok((self.org_by_name(&name), None)),
                None => Err(("organization_id", format!("organization_id {id} does not exist on the site"))),
            },
            OrgRef::NameAndId(name, id) => {
                let what = match self.live_by_id.get(id) {
                    Some(live) if live == name => return self.resolve(&OrgRef::Id(*id)),
                    Some(live) => format!("organization {id} is named {live:?}"),
                    // Another site's id, or an organization deleted since:
                    // restoring by name is the point.
                    None => return self.resolve(&OrgRef::Name(name.clone())),
                };
                if self.same_site {
                    return Err((
                        "organization_id",
                        format!(
                            "`organization` {name:?} and `organization_id` {id} disagree ({what}) and the input is \
                             a snapshot of this site: the row is not guessed"
                        ),
                    ));
                }
                let (idx, _) = self.resolve(&OrgRef::Name(name.clone()))?;
                Ok((idx, Some(format!("organization_id {id} ignored ({what}): the name wins"))))
            }
        }
    }

    /// Look up an organization without creating an entry (for the report).
    pub fn lookup(&self, org: &OrgRef) -> Option<OrgIdx> {
        match org {
            OrgRef::Name(n) => self.by_name.get(n).copied(),
            OrgRef::Id(id) => {
                self.by_id.get(id).or_else(|| self.live_by_id.get(id).and_then(|n| self.by_name.get(n))).copied()
            }
            OrgRef::NameAndId(n, id) => {
                self.by_id.get(id).filter(|_| self.ambiguous.contains_key(n)).or_else(|| self.by_name.get(n)).copied()
            }
        }
    }

    /// Fold one valid row in. A row naming an `organization_id` the site
    /// does not have is settled at once: it fails.
    pub fn add(&mut self, row: Row) -> Result<(), Settled> {
        let r = self.push_meta(row.index, &row.source.file, row.source.line, Some(row.kind), Some(row.action));
        self.kinds.insert(row.kind);
        self.meta[r as usize].email = matches!(row.data, RowData::Member { email: Some(_), .. });
        let action = row.action;
        let (org_ref, name) = match &row.data {
            RowData::Organization { name } => (None, Some(name)),
            RowData::Member { org, .. } | RowData::Property { org, .. } | RowData::ServiceDesk { org, .. } => {
                (Some(org), None)
            }
        };
        let resolved = match (org_ref, name) {
            (_, Some(name)) => self.resolve(&OrgRef::Name(name.clone())).map_err(|(_, why)| ("name", why)),
            (Some(org), _) => self.resolve(org),
            (None, None) => unreachable!("every row names an organization"),
        };
        let idx = match resolved {
            Ok((i, note)) => {
                if let Some(note) = note {
                    self.notes.insert(r, note.into());
                }
                i
            }
            Err((field, msg)) => {
                let msg = format!("{}: field `{field}`: {msg}", self.source(r));
                let target = target_of(&row.data).into();
                return Err(Settled { row: r, org: None, target, outcome: RowOutcome::failed(msg) });
            }
        };
        let org = &mut self.orgs[idx as usize];
        match row.data {
            RowData::Organization { .. } => match action {
                Action::Delete => org.delete_rows.push(r),
                _ => org.upsert_rows.push(r),
            },
            RowData::Member { account_id, email, display_name, .. } => {
                let want = Want { action, rows: Rows::one(r), conflict: false };
                let email = email.map(|e| e.to_lowercase().into_boxed_str());
                let display_name = display_name.map(String::into_boxed_str);
                match (account_id, email) {
                    (Some(id), email) => {
                        let id = id.into_boxed_str();
                        if let Some(email) = email {
                            org.contacts.push((id.clone(), Contact { email, display_name }));
                        }
                        org.members.push((id, want));
                    }
                    (None, Some(email)) => {
                        org.by_email.push((email.clone(), want));
                        let need = self.emails.entry(email).or_default();
                        need.adds |= action == Action::Add;
                        if need.display_name.is_none() {
                            need.display_name = display_name;
                        }
                    }
                    (None, None) => unreachable!("validation gives a member an account id or an email"),
                }
            }
            RowData::ServiceDesk { service_desk_id, .. } => want(&mut org.desks, service_desk_id, action, r),
            RowData::Property { key, value, .. } => match org.properties.get_mut(&key) {
                None => {
                    org.properties.insert(key, PropWant { action, value, rows: Rows::one(r), conflict: false });
                }
                Some(w) => {
                    w.conflict |= w.action != action || (action == Action::Set && w.value != value);
                    w.rows.push(r);
                }
            },
        }
        Ok(())
    }
}

impl Desired {
    /// Replace the members named by email with the account ids they
    /// resolved to (`resolved` is keyed by lowercase email). Rows whose
    /// email did not resolve are settled into `sink`: failed, or planned in
    /// a dry run that would create the customer.
    pub fn apply_emails(&mut self, resolved: &HashMap<Box<str>, Resolved>, sink: &mut dyn FnMut(&Desired, Settled)) {
        let mut settled = Vec::new();
        for (i, o) in self.orgs.iter_mut().enumerate() {
            for (email, want) in std::mem::take(&mut o.by_email) {
                let target: Arc<str> = Arc::from(&*email);
                let outcome = match resolved.get(&email) {
                    Some(Resolved::Id { account_id, created }) => {
                        let how = if *created { "customer created" } else { "found" };
                        let note: Arc<str> = format!("email {email}: {how}, account id {account_id}").into();
                        for r in want.rows.iter() {
                            self.people.insert(r, PersonNote { target: account_id.clone(), note: note.clone() });
                        }
                        o.members.push((Box::from(&**account_id), want));
                        continue;
                    }
                    Some(Resolved::WouldCreate) => RowOutcome::new(Outcome::Planned)
                        .with_message(format!("email {email}: no customer on the site; one would be created")),
                    Some(Resolved::Failed(why)) => RowOutcome::failed(why.clone()),
                    None => RowOutcome::failed(format!("email {email} was not looked up")),
                };
                for row in want.rows.iter() {
                    settled.push(Settled {
                        row,
                        org: Some(i as OrgIdx),
                        target: target.clone(),
                        outcome: outcome.clone(),
                    });
                }
            }
        }
        self.emails.clear();
        for s in settled {
            sink(self, s);
        }
    }
}

fn want(map: &mut BTreeMap<String, Want>, key: String, action: Action, r: RowIdx) {
    match map.get_mut(&key) {
        None => {
            map.insert(key, Want { action, rows: Rows::one(r), conflict: false });
        }
        Some(w) => {
            w.conflict |= w.action != action;
            w.rows.push(r);
        }
    }
}

/// Sort wanted members by account id and merge rows naming the same one:
/// identical rows become one change, disagreeing rows a conflict. The sort is
/// stable, so merged rows stay in input order.
pub fn merge_members(mut v: Vec<(Box<str>, Want)>) -> Vec<(Box<str>, Want)> {
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v.dedup_by(|later, kept| {
        if later.0 != kept.0 {
            return false;
        }
        kept.1.conflict |= kept.1.action != later.1.action || later.1.conflict;
        for r in later.1.rows.iter() {
            kept.1.rows.push(r);
        }
        true
    });
    v
}

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
    let chunk_size = chunk_size.get();
    let mut p = Plan::default();
    let prune_members = prune && d.kinds.contains(&Kind::Members);
    let prune_props = prune && d.kinds.contains(&Kind::Properties);
    let prune_desks = prune && d.kinds.contains(&Kind::ServiceDesks);

    for i in 0..d.orgs.len() {
        let idx = i as OrgIdx;
        let o = &mut d.orgs[i];
        let members = merge_members(std::mem::take(&mut o.members));
        let contacts = sorted_contacts(std::mem::take(&mut o.contacts));
        let props = std::mem::take(&mut o.properties);
        let desks = std::mem::take(&mut o.desks);
        let d: &Desired = d;
        let mut out = Out { sink: &mut *sink, d, org: idx };
        let o = &d.orgs[i];

        // An organization both deleted and used: every row involved fails.
        if !o.delete_rows.is_empty()
            && (!o.upsert_rows.is_empty() || !members.is_empty() || !props.is_empty() || !desks.is_empty())
        {
            let deleted: Vec<String> = o.delete_rows.iter().map(|&r| d.source(r)).collect();
            let mut used: Vec<(RowIdx, String)> = o.upsert_rows.iter().map(|&r| (r, String::new())).collect();
            used.extend(members.iter().flat_map(|(k, w)| w.rows.iter().map(move |r| (r, k.to_string()))));
            used.extend(props.iter().flat_map(|(k, w)| w.rows.iter().map(move |r| (r, k.clone()))));
            used.extend(desks.iter().flat_map(|(k, w)| w.rows.iter().map(move |r| (r, k.clone()))));
            used.sort();
            let msg = RowOutcome::failed(format!(
                "contradictory rows: organization {:?} is deleted at {} and used at {}{}",
                o.name,
                deleted.join(", "),
                d.source(used[0].0),
                if used.len() > 1 { format!(" and {} more rows", used.len() - 1) } else { String::new() }
            ));
            out.rows(o.delete_rows.iter().copied(), "", msg.clone());
            for (r, target) in used {
                out.rows([r], &target, msg.clone());
            }
            continue;
        }
        if !o.delete_rows.is_empty() {
            match o.live_id {
                Some(id) => p.org_ops.push(Op::DeleteOrg { org: idx, id, rows: o.delete_rows.clone() }),
                None => out.unchanged(&rows_of(&o.delete_rows), "", "not on the site"),
            }
            continue;
        }
        match o.live_id {
            Some(_) if !o.upsert_rows.is_empty() => out.unchanged(&rows_of(&o.upsert_rows), "", "already on the site"),
            Some(_) => {}
            None => p.org_ops.push(Op::CreateOrg { org: idx, rows: o.upsert_rows.clone() }),
        }
        let live_id = o.live_id;
        let is_new = live_id.is_none();

        // ----- members
        if !members.is_empty() || (prune_members && !is_new) {
            let current = if is_new { Ok(None) } else { lookup(&live.members, idx).map(Some) };
            match current {
                Err(e) => {
                    for (id, w) in &members {
                        out.read_failed(&w.rows, id, &e);
                    }
                }
                Ok(current) => {
                    let empty = HashSet::new();
                    let current = current.unwrap_or(&empty);
                    let no_emails = HashMap::new();
                    let emails = live.member_emails.get(&idx).unwrap_or(&no_emails);
                    let contact =
                        |id: &str| contacts.binary_search_by(|(k, _)| (**k).cmp(id)).ok().map(|at| &contacts[at].1);
                    // The member that holds an input row's person: by account
                    // id, else by the email the row gives (portal-only
                    // customers have another id on every site).
                    let holder = |id: &str| -> Option<Box<str>> {
                        if current.contains(id) {
                            return Some(id.into());
                        }
                        contact(id).and_then(|c| emails.get(&c.email)).cloned()
                    };
                    let mut adds = Vec::new();
                    let mut removes = Vec::new();
                    if prune_members {
                        let by_email: HashSet<Box<str>> = members.iter().filter_map(|(id, _)| holder(id)).collect();
                        let listed =
                            |m: &str| members.binary_search_by(|(k, _)| (**k).cmp(m)).is_ok() || by_email.contains(m);
                        let mut extra: Vec<&Box<str>> = current.iter().filter(|m| !listed(m)).collect();
                        extra.sort();
                        removes.extend(extra.into_iter().map(|m| MemberChange { account_id: m.clone(), rows: None }));
                    }
                    // The account ids move into the operations instead of
                    // being copied (1M memberships = 1M strings). `members`
                    // is sorted, so `adds` is too.
                    for (id, w) in members {
                        if w.conflict {
                            out.conflict(&w.rows, &id, &format!("member {id}"));
                            continue;
                        }
                        match (w.action, holder(&id)) {
                            (Action::Add, None) => {
                                if let Some(c) = contact(&id) {
                                    p.contacts.insert((idx, id.clone()), c.clone());
                                }
                                adds.push(MemberChange { account_id: id, rows: Some(w.rows) })
                            }
                            (Action::Remove, Some(held)) => {
                                removes.push(MemberChange { account_id: held, rows: Some(w.rows) })
                            }
                            (Action::Add, Some(held)) if held == id => out.unchanged(&w.rows, &id, "already a member"),
                            (Action::Add, Some(held)) => out.unchanged(
                                &w.rows,
                                &held,
                                &format!(
                                    "already a member as account id {held} (same email; {id} is another site's id)"
                                ),
                            ),
                            _ => out.unchanged(&w.rows, &id, "not a member"),
                        }
                    }
                    removes.sort_by(|a, b| a.account_id.cmp(&b.account_id));
                    chunk(&mut p.ops, idx, true, adds, chunk_size);
                    chunk(&mut p.ops, idx, false, removes, chunk_size);
                }
            }
        }

        // ----- properties
        if !props.is_empty() || (prune_props && !is_new) {
            let keys = if is_new { Ok(None) } else { lookup(&live.property_keys, idx).map(Some) };
            match keys {
                Err(e) => {
                    for (k, w) in &props {
                        out.read_failed(&w.rows, k, &e);
                    }
                }
                Ok(keys) => {
                    let empty = BTreeSet::new();
                    let keys = keys.unwrap_or(&empty);
                    for (key, w) in props.iter() {
                        if w.conflict {
                            out.conflict(&w.rows, key, &format!("property {key:?}"));
                            continue;
                        }
                        let set = Op::SetProperty {
                            org: idx,
                            key: key.clone(),
                            value: w.value.clone(),
                            rows: w.rows.clone(),
                        };
                        match (w.action, keys.contains(key)) {
                            (Action::Set, false) => p.ops.push(set),
                            (Action::Set, true) => match live.property_values.get(&(idx, key.clone())) {
                                Some(Ok(Some(v))) if *v == w.value => out.unchanged(&w.rows, key, "same value"),
                                Some(Err(e)) => out.read_failed(&w.rows, key, e),
                                _ => p.ops.push(set),
                            },
                            (_, true) => p.ops.push(Op::DeleteProperty {
                                org: idx,
                                key: key.clone(),
                                rows: Some(w.rows.clone()),
                            }),
                            (_, false) => out.unchanged(&w.rows, key, "no such property"),
                        }
                    }
                    if prune_props {
                        for k in keys.iter().filter(|k| !props.contains_key(*k)) {
                            p.ops.push(Op::DeleteProperty { org: idx, key: k.clone(), rows: None });
                        }
                    }
                }
            }
        }

        // ----- service desk links
        for (desk, w) in &desks {
            if w.conflict {
                out.conflict(&w.rows, desk, &format!("service desk {desk}"));
                continue;
            }
            let linked = match (live.desks.get(desk), live_id) {
                (_, None) => false,
                (Some(Err(e)), _) => {
                    out.read_failed(&w.rows, desk, e);
                    continue;
                }
                (Some(Ok(set)), Some(id)) => set.contains(&id),
                (None, Some(_)) => {
                    out.read_failed(&w.rows, desk, &"the desk's organizations were not read".into());
                    continue;
                }
            };
            let link = w.action == Action::Link;
            if link == linked {
                out.unchanged(&w.rows, desk, if link { "already linked" } else { "not linked" });
            } else {
                p.ops.push(Op::Link { org: idx, desk: desk.clone(), link, rows: Some(w.rows.clone()) });
            }
        }
        if let (true, Some(id)) = (prune_desks, live_id) {
            let listed = |desk: &String| {
                desks.contains_key(desk) || live.desk_keys.get(desk).is_some_and(|key| desks.contains_key(key))
            };
            for (desk, set) in &live.desks {
                if matches!(set, Ok(set) if set.contains(&id)) && !listed(desk) {
                    p.ops.push(Op::Link { org: idx, desk: desk.clone(), link: false, rows: None });
                }
            }
        }
    }
    p
}

/// Contacts sorted by account id, the first row's kept for an id given twice.
fn sorted_contacts(mut v: Vec<(Box<str>, Contact)>) -> Vec<(Box<str>, Contact)> {
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v.dedup_by(|later, kept| later.0 == kept.0);
    v
}

fn rows_of(v: &[RowIdx]) -> Rows {
    let mut rows = Rows::one(v[0]);
    for &r in &v[1..] {
        rows.push(r);
    }
    rows
}

fn lookup<T>(m: &HashMap<OrgIdx, Result<T, ReadError>>, idx: OrgIdx) -> Result<&T, ReadError> {
    match m.get(&idx) {
        Some(Ok(v)) => Ok(v),
        Some(Err(e)) => Err(e.clone()),
        None => Err("the site's current state was not read".into()),
    }
}

fn chunk(ops: &mut Vec<Op>, org: OrgIdx, add: bool, changes: Vec<MemberChange>, size: usize) {
    let mut it = changes.into_iter().peekable();
    while it.peek().is_some() {
        let members: Vec<MemberChange> = it.by_ref().take(size).collect();
        ops.push(Op::Members { org, add, members });
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::Source;

    fn org(id: u64, name: &str) -> Organization {
        Organization { id, name: name.into(), uuid: None, scim_managed: None, created: None }
    }

    struct Rows_ {
        file: Arc<str>,
        next: u64,
    }

    impl Rows_ {
        fn new() -> Self {
            Rows_ { file: Arc::from("in.csv"), next: 0 }
        }
        fn row(&mut self, kind: Kind, action: Action, data: RowData) -> Row {
            let index = self.next;
            self.next += 1;
            Row { index, source: Source { file: self.file.clone(), line: index + 2 }, kind, action, data }
        }
        fn member(&mut self, org: &str, acc: &str, action: Action) -> Row {
            let data = RowData::member(OrgRef::Name(org.into()), acc);
            self.row(Kind::Members, action, data)
        }
        fn prop(&mut self, org: &str, key: &str, value: Value) -> Row {
            let data = RowData::Property { org: OrgRef::Name(org.into()), key: key.into(), value };
            self.row(Kind::Properties, Action::Set, data)
        }
        fn desk(&mut self, org: &str, desk: &str, action: Action) -> Row {
            let data = RowData::ServiceDesk { org: OrgRef::Name(org.into()), service_desk_id: desk.into() };
            self.row(Kind::ServiceDesks, action, data)
        }
        fn org(&mut self, name: &str, action: Action) -> Row {
            self.row(Kind::Organizations, action, RowData::Organization { name: name.into() })
        }
    }

    fn run_plan(d: &mut Desired, live: &Live, prune: bool, chunk: usize) -> (Plan, Vec<Settled>) {
        let mut settled = Vec::new();
        let p = plan(d, live, prune, NonZeroUsize::new(chunk).unwrap(), &mut |_, s| settled.push(s));
        settled.sort_by_key(|s| s.row);
        (p, settled)
    }

    #[test]
    fn new_orgs_are_created_and_need_no_reads() {
        let mut r = Rows_::new();
        let mut d = Desired::new(&[]);
        d.add(r.org("Acme", Action::Upsert)).unwrap();
        d.add(r.member("Acme", "a1", Action::Add)).unwrap();
        d.add(r.member("Beta", "b1", Action::Add)).unwrap();
        d.add(r.prop("Beta", "k", serde_json::json!({"x": 1}))).unwrap();
        assert_eq!(reads(&d, false), Reads::default());
        let (p, settled) = run_plan(&mut d, &Live::default(), false, 50);
        assert!(settled.is_empty());
        assert_eq!(p.org_ops, vec![Op::CreateOrg { org: 0, rows: vec![0] }, Op::CreateOrg { org: 1, rows: vec![] }]);
        assert_eq!(p.ops.len(), 3);
    }

    #[test]
    fn members_are_chunked_sorted_and_unchanged_ones_skipped() {
        let mut r = Rows_::new();
        let mut d = Desired::new(&[org(7, "Acme")]);
        for i in (0..120).rev() {
            d.add(r.member("Acme", &format!("acc-{i:03}"), Action::Add)).unwrap();
        }
        assert_eq!(reads(&d, false).members, vec![(0, 7)]);
        let mut live = Live::default();
        live.members.insert(0, Ok(["acc-000".into(), "acc-001".into()].into_iter().collect()));
        let (p, settled) = run_plan(&mut d, &live, false, 50);
        assert_eq!(settled.len(), 2);
        assert!(settled.iter().all(|s| s.outcome.outcome == Outcome::Unchanged));
        let sizes: Vec<usize> = p
            .ops
            .iter()
            .map(|op| match op {
                Op::Members { add: true, members, .. } => members.len(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(sizes, vec![50, 50, 18]);
        let Op::Members { members, .. } = &p.ops[0] else { unreachable!() };
        assert_eq!(&*members[0].account_id, "acc-002");
    }

    #[test]
    fn identical_duplicates_merge_and_contradictions_fail_naming_both_lines() {
        let mut r = Rows_::new();
        let mut d = Desired::new(&[org(7, "Acme")]);
        d.add(r.member("Acme", "a1", Action::Add)).unwrap();
        d.add(r.member("Acme", "a1", Action::Add)).unwrap();
        d.add(r.member("Acme", "a2", Action::Add)).unwrap();
        d.add(r.member("Acme", "a2", Action::Remove)).unwrap();
        d.add(r.prop("Acme", "k", serde_json::json!(1))).unwrap();
        d.add(r.prop("Acme", "k", serde_json::json!(2))).unwrap();
        let mut live = Live::default();
        live.members.insert(0, Ok(HashSet::new()));
        live.property_keys.insert(0, Ok(BTreeSet::new()));
        let (p, settled) = run_plan(&mut d, &live, false, 50);
        // a1: one call serving rows 0 and 1
        assert_eq!(p.ops.len(), 1);
        let Op::Members { members, .. } = &p.ops[0] else { panic!() };
        assert_eq!(members[0].rows.as_ref().unwrap().iter().collect::<Vec<_>>(), vec![0, 1]);
        // a2 and k: all four rows fail, each naming both lines
        assert_eq!(settled.iter().map(|s| s.row).collect::<Vec<_>>(), vec![2, 3, 4, 5]);
        for s in &settled {
            assert_eq!(s.outcome.outcome, Outcome::Failed);
        }
        let msg = settled[0].outcome.message.as_deref().unwrap();
        assert!(msg.contains("in.csv:4") && msg.contains("in.csv:5"), "{msg}");
        assert!(settled[2].outcome.message.as_deref().unwrap().contains("in.csv:6, in.csv:7"));
    }

    #[test]
    fn a_rerun_against_the_state_it_produced_plans_no_writes() {
        let mut r = Rows_::new();
        let mut d = Desired::new(&[org(7, "Acme")]);
        d.add(r.org("Acme", Action::Upsert)).unwrap();
        d.add(r.member("Acme", "a1", Action::Add)).unwrap();
        d.add(r.member("Acme", "gone", Action::Remove)).unwrap();
        d.add(r.prop("Acme", "k", serde_json::json!({"b": 2, "a": [1]}))).unwrap();
        d.add(r.desk("Acme", "10001", Action::Link)).unwrap();
        d.add(r.desk("Acme", "10002", Action::Unlink)).unwrap();
        let rd = reads(&d, false);
        assert_eq!(rd.desks, vec!["10001".to_string(), "10002".to_string()]);
        let mut live = Live::default();
        live.members.insert(0, Ok(["a1".into()].into_iter().collect()));
        live.property_keys.insert(0, Ok(["k".to_string()].into_iter().collect()));
        assert_eq!(value_reads(&d, &live), vec![(0, 7, "k".to_string())]);
        live.property_values.insert((0, "k".into()), Ok(Some(serde_json::json!({"a": [1], "b": 2}))));
        live.desks.insert("10001".into(), Ok([7].into_iter().collect()));
        live.desks.insert("10002".into(), Ok(HashSet::new()));
        let (p, settled) = run_plan(&mut d, &live, false, 50);
        assert_eq!(p.writes(), 0, "{p:?}");
        assert_eq!(settled.len(), 6);
        assert!(settled.iter().all(|s| s.outcome.outcome == Outcome::Unchanged));
    }

    #[test]
    fn prune_touches_only_named_orgs_and_kinds_present() {
        let mut r = Rows_::new();
        let mut d = Desired::new(&[org(7, "Acme"), org(8, "Other")]);
        d.add(r.member("Acme", "keep", Action::Add)).unwrap();
        d.add(r.desk("Acme", "1", Action::Link)).unwrap();
        let rd = reads(&d, true);
        assert_eq!(rd.members, vec![(0, 7)]);
        assert!(rd.property_keys.is_empty(), "no property rows: properties are left alone");
        assert!(rd.all_desks);
        let mut live = Live::default();
        live.members.insert(0, Ok(["keep".into(), "drop1".into(), "drop2".into()].into_iter().collect()));
        live.desks.insert("1".into(), Ok([7, 8].into_iter().collect()));
        live.desks.insert("2".into(), Ok([7].into_iter().collect()));
        let (p, settled) = run_plan(&mut d, &live, true, 50);
        assert_eq!(settled.len(), 2);
        assert_eq!(
            p.ops,
            vec![
                Op::Members {
                    org: 0,
                    add: false,
                    members: vec![
                        MemberChange { account_id: "drop1".into(), rows: None },
                        MemberChange { account_id: "drop2".into(), rows: None }
                    ]
                },
                Op::Link { org: 0, desk: "2".into(), link: false, rows: None },
            ]
        );
    }

    #[test]
    fn prune_keeps_a_link_the_input_names_by_project_key() {
        let mut r = Rows_::new();
        let mut d = Desired::new(&[org(7, "Acme")]);
        d.add(r.desk("Acme", "SUP", Action::Link)).unwrap();
        let mut live = Live::default();
        live.desks.insert("SUP".into(), Ok([7].into_iter().collect()));
        live.desks.insert("10001".into(), Ok([7].into_iter().collect()));
        live.desks.insert("10002".into(), Ok([7].into_iter().collect()));
        live.desk_keys.insert("10001".into(), "SUP".into());
        live.desk_keys.insert("10002".into(), "OPS".into());
        let (p, settled) = run_plan(&mut d, &live, true, 50);
        assert_eq!(settled.len(), 1, "the SUP row is unchanged");
        assert_eq!(p.ops, vec![Op::Link { org: 0, desk: "10002".into(), link: false, rows: None }]);
    }

    #[test]
    fn delete_and_use_of_one_org_is_a_contradiction() {
        let mut r = Rows_::new();
        let mut d = Desired::new(&[org(7, "Acme"), org(9, "Old")]);
        d.add(r.org("Acme", Action::Delete)).unwrap();
        d.add(r.member("Acme", "a1", Action::Add)).unwrap();
        d.add(r.org("Old", Action::Delete)).unwrap();
        d.add(r.org("Never", Action::Delete)).unwrap();
        let (p, settled) = run_plan(&mut d, &Live::default(), false, 50);
        assert_eq!(p.org_ops, vec![Op::DeleteOrg { org: 1, id: 9, rows: vec![2] }]);
        let outcomes: Vec<(RowIdx, Outcome)> = settled.iter().map(|s| (s.row, s.outcome.outcome)).collect();
        assert_eq!(outcomes, vec![(0, Outcome::Failed), (1, Outcome::Failed), (3, Outcome::Unchanged)]);
        assert!(settled[0].outcome.message.as_deref().unwrap().contains("deleted at in.csv:2 and used at in.csv:3"));
    }

    fn person(r: &mut Rows_, id: Option<&str>, email: &str, action: Action) -> Row {
        let data = RowData::Member {
            org: OrgRef::Name("Acme".into()),
            account_id: id.map(Into::into),
            email: Some(email.into()),
            display_name: Some("P".into()),
        };
        r.row(Kind::Members, action, data)
    }

    #[test]
    fn emails_resolve_into_account_ids_or_settle_their_rows() {
        let mut r = Rows_::new();
        let mut d = Desired::new(&[org(7, "Acme")]);
        d.add(person(&mut r, None, "Ann@X.io", Action::Add)).unwrap();
        d.add(person(&mut r, None, "ann@x.io", Action::Add)).unwrap();
        d.add(person(&mut r, None, "bo@x.io", Action::Remove)).unwrap();
        d.add(person(&mut r, None, "cy@x.io", Action::Add)).unwrap();
        d.add(person(&mut r, None, "di@x.io", Action::Add)).unwrap();
        let needs: Vec<(&str, bool)> = d.emails.iter().map(|(e, n)| (&**e, n.adds)).collect();
        assert_eq!(needs, [("ann@x.io", true), ("bo@x.io", false), ("cy@x.io", true), ("di@x.io", true)]);
        let resolved: HashMap<Box<str>, Resolved> = [
            ("ann@x.io", Resolved::Id { account_id: "a1".into(), created: true }),
            ("bo@x.io", Resolved::Id { account_id: "b1".into(), created: false }),
            ("cy@x.io", Resolved::Failed("no customer".into())),
            ("di@x.io", Resolved::WouldCreate),
        ]
        .into_iter()
        .map(|(e, r)| (Box::from(e), r))
        .collect();
        let mut early = Vec::new();
        d.apply_emails(&resolved, &mut |_, s| early.push(s));
        let early: Vec<(RowIdx, &str, Outcome)> =
            early.iter().map(|s| (s.row, &*s.target, s.outcome.outcome)).collect();
        assert_eq!(early, [(3, "cy@x.io", Outcome::Failed), (4, "di@x.io", Outcome::Planned)]);
        assert_eq!(d.people[&0].target.as_ref(), "a1");
        assert!(d.people[&1].note.contains("customer created"), "{:?}", d.people[&1]);
        let mut live = Live::default();
        live.members.insert(0, Ok(["b1".into()].into_iter().collect()));
        let (p, settled) = run_plan(&mut d, &live, false, 50);
        // The two spellings of Ann are one add; Bo is removed by the id found.
        let calls: Vec<(bool, Vec<&str>)> = p
            .ops
            .iter()
            .map(|op| match op {
                Op::Members { add, members, .. } => (*add, members.iter().map(|m| &*m.account_id).collect()),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(calls, [(true, vec!["a1"]), (false, vec!["b1"])]);
        assert!(settled.is_empty());
    }

    #[test]
    fn a_member_held_under_another_id_with_the_same_email_is_in_place() {
        let mut r = Rows_::new();
        let mut d = Desired::new(&[org(7, "Acme")]);
        d.add(person(&mut r, Some("site-a-1"), "Held@x.io", Action::Add)).unwrap();
        d.add(person(&mut r, Some("site-a-2"), "new@x.io", Action::Add)).unwrap();
        let mut live = Live::default();
        live.members.insert(0, Ok(["site-b-1".into(), "other".into()].into_iter().collect()));
        live.member_emails.insert(0, [("held@x.io".into(), "site-b-1".into())].into_iter().collect());
        let (p, settled) = run_plan(&mut d, &live, true, 50);
        assert_eq!(settled.len(), 1);
        assert_eq!((settled[0].row, &*settled[0].target), (0, "site-b-1"));
        assert_eq!(settled[0].outcome.outcome, Outcome::Unchanged);
        // Only the new person is added (with its email for the fallback);
        // prune keeps the member held by email and removes the unlisted one.
        let Op::Members { add: true, members, .. } = &p.ops[0] else { panic!("{:?}", p.ops) };
        assert_eq!(&*members[0].account_id, "site-a-2");
        assert_eq!(p.contacts[&(0, "site-a-2".into())].email.as_ref(), "new@x.io");
        let Op::Members { add: false, members, .. } = &p.ops[1] else { panic!("{:?}", p.ops) };
        assert_eq!(members.iter().map(|m| &*m.account_id).collect::<Vec<_>>(), ["other"]);
    }

    #[test]
    fn a_name_the_site_holds_twice_fails_and_an_id_picks_one() {
        let mut r = Rows_::new();
        let mut d = Desired::new(&[org(9, "Twin"), org(4, "Twin"), org(5, "Solo")]);
        for row in [r.member("Twin", "a", Action::Add), r.org("Twin", Action::Delete)] {
            let s = d.add(row).unwrap_err();
            let msg = s.outcome.message.as_deref().unwrap();
            assert!(msg.contains("2 organizations named \"Twin\" (ids 4, 9)"), "{msg}");
            assert!(msg.contains("organization_id"), "{msg}");
        }
        let pick =
            |id| RowData::Member { org: OrgRef::Id(id), account_id: Some("a".into()), email: None, display_name: None };
        d.add(r.row(Kind::Members, Action::Add, pick(9))).unwrap();
        d.add(r.row(Kind::Members, Action::Add, pick(4))).unwrap();
        d.add(r.row(Kind::Members, Action::Add, pick(9))).unwrap();
        let ids: Vec<Option<u64>> = d.orgs.iter().map(|o| o.live_id).collect();
        assert_eq!(ids, [Some(9), Some(4)], "one entry per live organization");
        assert_eq!(d.orgs[0].members.len(), 2);
        assert_eq!(d.lookup(&OrgRef::Id(4)), Some(1));
        d.add(r.member("Solo", "b", Action::Add)).unwrap();
    }

    #[test]
    fn unknown_organization_id_fails_at_once() {
        let mut r = Rows_::new();
        let mut d = Desired::new(&[org(7, "Acme")]);
        let row = r.row(Kind::Members, Action::Add, RowData::member(OrgRef::Id(99), "a"));
        let s = d.add(row).unwrap_err();
        assert!(s.outcome.message.as_deref().unwrap().contains("organization_id 99 does not exist"));
        let ok = r.row(Kind::Members, Action::Add, RowData::member(OrgRef::Id(7), "a"));
        d.add(ok).unwrap();
        assert_eq!(d.orgs[0].name, "Acme");
    }
}
