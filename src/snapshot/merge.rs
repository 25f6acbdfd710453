//! The merge at the heart of `diff`: two sorted streams of keyed entries in,
//! `added` / `removed` / `changed` rows out.
//!
//! Owns how records become comparable entries (the key a record is matched
//! by, the fields compared, the text a report shows) and the streaming merge
//! itself, which holds one entry per side at a time: export writes every file
//! sorted by organization id and then by account id, property key or desk, so
//! two snapshots of one site merge in a single pass whatever their size.
//! Across sites organizations match by name and desks by project key; those
//! orders are not the files' own, so the entries are sorted in memory first.
//! It must not read files or write the report: [`diff`](super::diff) does.

use std::cmp::Ordering;

use crate::model::{created_text, DeskLinkRecord, MemberRecord, OrgRecord, PropertyRecord};

use super::pipeline::desk_order;

/// How the organization of an entry is matched.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum OrgKey {
    /// By id: snapshots of one site.
    Id(u64),
    /// By name: snapshots of two sites (`--across-sites`).
    Name(String),
}

/// The second part of a key: an account id or property key in byte order,
/// or a desk in export's desk order (numeric ids numerically).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Target {
    text: String,
    desk: bool,
}

impl Ord for Target {
    fn cmp(&self, other: &Self) -> Ordering {
        if self.desk && other.desk {
            desk_order(&self.text, &other.text)
        } else {
            self.text.cmp(&other.text)
        }
    }
}

impl PartialOrd for Target {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

pub(super) type Key = (OrgKey, Target);

/// One record, ready to compare.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Entry {
    pub key: Key,
    pub organization: String,
    pub organization_id: String,
    /// What `added` / `removed` rows show.
    pub shown: String,
    /// Compared field by field. For organizations each field is its own
    /// `target` when it changes; for the rest there is at most one field and
    /// the target is the key's.
    pub fields: Vec<(&'static str, String)>,
}

impl Entry {
    pub fn target(&self) -> &str {
        &self.key.1.text
    }

    pub fn shown(&self) -> &str {
        &self.shown
    }
}

fn org_key(id: u64, name: &str, across_sites: bool) -> OrgKey {
    if across_sites {
        OrgKey::Name(name.to_string())
    } else {
        OrgKey::Id(id)
    }
}

fn text_target(text: String) -> Target {
    Target { text, desk: false }
}

pub(super) fn org_entry(r: OrgRecord, across_sites: bool) -> Entry {
    let mut fields = vec![("name", r.name.clone())];
    if !across_sites {
        // Across sites only the name is comparable: ids, uuids and creation
        // times differ by nature.
        let scim = r.scim_managed.map(|b| b.to_string()).unwrap_or_default();
        fields.push(("uuid", r.uuid.unwrap_or_default()));
        fields.push(("scim_managed", scim));
        fields.push(("created", r.created.as_ref().map(created_text).unwrap_or_default()));
    }
    Entry {
        key: (org_key(r.id, &r.name, across_sites), text_target(String::new())),
        organization_id: r.id.to_string(),
        shown: r.name.clone(),
        organization: r.name,
        fields,
    }
}

pub(super) fn member_entry(r: MemberRecord, across_sites: bool) -> Entry {
    let shown = match (r.display_name, r.email) {
        (Some(name), Some(email)) => format!("{name} <{email}>"),
        (Some(name), None) => name,
        (None, Some(email)) => format!("<{email}>"),
        (None, None) => String::new(),
    };
    Entry {
        key: (org_key(r.organization_id, &r.organization, across_sites), text_target(r.account_id)),
        organization_id: r.organization_id.to_string(),
        organization: r.organization,
        // Across sites a person's name and email come from each site's own
        // directory (portal-only customers differ): membership alone counts.
        fields: if across_sites { Vec::new() } else { vec![("member", shown.clone())] },
        shown,
    }
}

pub(super) fn property_entry(r: PropertyRecord, across_sites: bool) -> Entry {
    let value = serde_json::to_string(&r.value).expect("a JSON value serializes");
    Entry {
        key: (org_key(r.organization_id, &r.organization, across_sites), text_target(r.key)),
        organization_id: r.organization_id.to_string(),
        organization: r.organization,
        shown: value.clone(),
        fields: vec![("value", value)],
    }
}

pub(super) fn link_entry(r: DeskLinkRecord, across_sites: bool) -> Entry {
    let shown = match (&r.project_key, &r.project_name) {
        (Some(key), Some(name)) => format!("{key} ({name})"),
        (Some(key), None) => key.clone(),
        _ => r.service_desk_id.clone(),
    };
    // Across sites a desk is its project key (ids differ); snapshots older
    // than project keys fall back to the id.
    let desk = match (&r.project_key, across_sites) {
        (Some(key), true) => Target { text: key.to_ascii_uppercase(), desk: false },
        _ => Target { text: r.service_desk_id, desk: true },
    };
    Entry {
        key: (org_key(r.organization_id, &r.organization, across_sites), desk),
        organization_id: r.organization_id.to_string(),
        organization: r.organization,
        shown,
        fields: Vec::new(),
    }
}

/// One difference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Added,
    Removed,
    Changed,
}

impl Change {
    pub fn as_str(self) -> &'static str {
        match self {
            Change::Added => "added",
            Change::Removed => "removed",
            Change::Changed => "changed",
        }
    }
}

/// A row of the diff report, borrowed from the entries it compares.
#[derive(Debug)]
pub(super) struct Found<'a> {
    pub change: Change,
    pub entry: &'a Entry,
    pub target: &'a str,
    pub old: &'a str,
    pub new: &'a str,
}

/// Where an out-of-order stream was noticed.
#[derive(Debug)]
pub(super) struct OutOfOrder {
    pub new_side: bool,
    pub after: usize,
}

/// Merge two streams sorted by key; every difference goes to `sink` (which
/// may fail, e.g. writing the report). A stream whose keys do not strictly
/// increase ends the merge with `OutOfOrder`.
pub(super) fn merge<E>(
    old: impl Iterator<Item = Result<Entry, E>>,
    new: impl Iterator<Item = Result<Entry, E>>,
    sink: &mut dyn FnMut(Found<'_>) -> Result<(), E>,
) -> Result<Result<(), OutOfOrder>, E> {
    let mut old = Side::new(old, false);
    let mut new = Side::new(new, true);
    let (mut a, mut b) = (old.next()?, new.next()?);
    loop {
        let order = match (&a, &b) {
            (None, None) => return Ok(Ok(())),
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (Some(x), Some(y)) => x.key.cmp(&y.key),
        };
        match order {
            Ordering::Less => {
                let x = a.as_ref().expect("old entry");
                sink(Found { change: Change::Removed, entry: x, target: x.target(), old: x.shown(), new: "" })?;
            }
            Ordering::Greater => {
                let y = b.as_ref().expect("new entry");
                sink(Found { change: Change::Added, entry: y, target: y.target(), old: "", new: y.shown() })?;
            }
            Ordering::Equal => {
                let (x, y) = (a.as_ref().expect("old entry"), b.as_ref().expect("new entry"));
                for ((field, was), (_, now)) in x.fields.iter().zip(&y.fields) {
                    if was != now {
                        let target = if x.fields.len() > 1 { *field } else { y.target() };
                        sink(Found { change: Change::Changed, entry: y, target, old: was, new: now })?;
                    }
                }
            }
        }
        if order != Ordering::Greater {
            a = old.next()?;
        }
        if order != Ordering::Less {
            b = new.next()?;
        }
        if let Some(e) = old.disorder.take().or_else(|| new.disorder.take()) {
            return Ok(Err(e));
        }
    }
}

/// One side of the merge: checks that keys strictly increase.
struct Side<I> {
    inner: I,
    last: Option<Key>,
    count: usize,
    new_side: bool,
    disorder: Option<OutOfOrder>,
}

impl<E, I: Iterator<Item = Result<Entry, E>>> Side<I> {
    fn new(inner: I, new_side: bool) -> Self {
        Side { inner, last: None, count: 0, new_side, disorder: None }
    }

    fn next(&mut self) -> Result<Option<Entry>, E> {
        let Some(entry) = self.inner.next().transpose()? else {
            return Ok(None);
        };
        if self.last.as_ref().is_some_and(|last| *last >= entry.key) {
            self.disorder = Some(OutOfOrder { new_side: self.new_side, after: self.count });
            return Ok(None);
        }
        self.count += 1;
        self.last = Some(entry.key.clone());
        Ok(Some(entry))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(org: u64, account: &str, name: &str) -> Entry {
        let r = MemberRecord {
            organization: format!("O{org}"),
            organization_id: org,
            account_id: account.into(),
            email: None,
            display_name: Some(name.into()),
        };
        member_entry(r, false)
    }

    fn run(old: Vec<Entry>, new: Vec<Entry>) -> (Vec<String>, Result<(), OutOfOrder>) {
        let mut rows = Vec::new();
        let ok = |v: Vec<Entry>| v.into_iter().map(Ok::<_, ()>);
        let result = merge(ok(old), ok(new), &mut |f| {
            rows.push(format!("{} {} {} {}>{}", f.change.as_str(), f.entry.organization, f.target, f.old, f.new));
            Ok(())
        })
        .unwrap();
        (rows, result)
    }

    #[test]
    fn merges_sorted_streams_into_changes() {
        let old = vec![member(1, "a", "A"), member(1, "b", "B"), member(2, "a", "A")];
        let new = vec![member(1, "b", "Bee"), member(1, "c", "C"), member(3, "a", "A")];
        let (rows, result) = run(old, new);
        assert!(result.is_ok());
        assert_eq!(
            rows,
            ["removed O1 a A>", "changed O1 b B>Bee", "added O1 c >C", "removed O2 a A>", "added O3 a >A",]
        );
    }

    #[test]
    fn desks_follow_export_order_and_disorder_is_caught() {
        let link = |desk: &str| link_entry(DeskLinkRecord::by_id("O", 1, desk), false);
        let (rows, result) = run(vec![link("2"), link("10")], vec![link("2"), link("10"), link("HR")]);
        assert!(result.is_ok());
        assert_eq!(rows, ["added O HR >HR"]);
        let (_, result) = run(vec![member(2, "a", "A"), member(1, "a", "A")], vec![]);
        assert!(matches!(result, Err(OutOfOrder { new_side: false, after: 1 })));
    }

    #[test]
    fn an_organization_change_names_the_field() {
        let org = |name: &str| OrgRecord { id: 5, name: name.into(), uuid: None, scim_managed: None, created: None };
        let (rows, _) = run(vec![org_entry(org("Old"), false)], vec![org_entry(org("New"), false)]);
        assert_eq!(rows, ["changed New name Old>New"]);
    }
}
