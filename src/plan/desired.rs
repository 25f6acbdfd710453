//! Folding: the input rows into one wanted state per organization.
//!
//! Owns [`Desired`] — the organizations the input names, resolved against the
//! site's organization list (names exactly, ids when given, ambiguous names
//! refused), each with its wanted members, properties and desk links —
//! merging identical duplicate rows and marking contradictory ones, and the
//! compact per-row metadata the report needs. Pure: no I/O; it must not look
//! at the live members, properties or links (that is `reads` and `plan`).
//!
//! Memory: one compact [`RowMeta`] per input row and one entry per wanted
//! membership, so a 1M-row members file stays far below the row text's size.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use serde_json::Value;

use super::{target_of, OrgIdx, RowIdx, Settled};
use crate::api::Organization;
use crate::input::{Action, InvalidRow, Kind, OrgRef, Row, RowData};
use crate::report::{Outcome, RowOutcome};

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
    pub(super) fn is_used(&self) -> bool {
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

/// Contacts sorted by account id, the first row's kept for an id given twice.
pub(super) fn sorted_contacts(mut v: Vec<(Box<str>, Contact)>) -> Vec<(Box<str>, Contact)> {
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v.dedup_by(|later, kept| later.0 == kept.0);
    v
}
