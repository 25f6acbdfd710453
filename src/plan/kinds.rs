//! Planning one organization, one kind at a time: the organization itself
//! (create, delete, or a contradiction), its members, its properties and its
//! desk links. Each function compares the wanted state with the live state,
//! pushes the operations that change something and settles every other row.
//! Pure, like the rest of `plan`.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use super::{
    merge_members, sorted_contacts, Contact, Ctx, MemberChange, Op, OrgEntry, OrgIdx, Out, Plan, PropWant, ReadError,
    RowIdx, Rows, Want,
};
use crate::input::Action;
use crate::report::RowOutcome;

/// The wants of one organization, taken out of [`super::Desired`] to plan.
pub(super) struct Wants {
    /// Sorted by account id, duplicates merged.
    pub members: Vec<(Box<str>, Want)>,
    /// Sorted by account id.
    pub contacts: Vec<(Box<str>, Contact)>,
    pub props: BTreeMap<String, PropWant>,
    pub desks: BTreeMap<String, Want>,
}

impl Wants {
    pub fn take(o: &mut OrgEntry) -> Wants {
        Wants {
            members: merge_members(std::mem::take(&mut o.members)),
            contacts: sorted_contacts(std::mem::take(&mut o.contacts)),
            props: std::mem::take(&mut o.properties),
            desks: std::mem::take(&mut o.desks),
        }
    }

    fn is_empty(&self) -> bool {
        self.members.is_empty() && self.props.is_empty() && self.desks.is_empty()
    }
}

/// The organization's own rows. Returns whether its members, properties and
/// links are to be planned (not when it is deleted, or deleted and used).
pub(super) fn organization(p: &mut Plan, out: &mut Out<'_>, o: &OrgEntry, w: &Wants) -> bool {
    let idx = out.org;
    if !o.delete_rows.is_empty() && (!o.upsert_rows.is_empty() || !w.is_empty()) {
        contradiction(out, o, w);
        return false;
    }
    if !o.delete_rows.is_empty() {
        match o.live_id {
            Some(id) => p.org_ops.push(Op::DeleteOrg { org: idx, id, rows: o.delete_rows.clone() }),
            None => out.unchanged(&rows_of(&o.delete_rows), "", "not on the site"),
        }
        return false;
    }
    match o.live_id {
        Some(_) if !o.upsert_rows.is_empty() => out.unchanged(&rows_of(&o.upsert_rows), "", "already on the site"),
        Some(_) => {}
        None => p.org_ops.push(Op::CreateOrg { org: idx, rows: o.upsert_rows.clone() }),
    }
    true
}

/// An organization both deleted and used: every row involved fails.
fn contradiction(out: &mut Out<'_>, o: &OrgEntry, w: &Wants) {
    let d = out.d;
    let deleted: Vec<String> = o.delete_rows.iter().map(|&r| d.source(r)).collect();
    let mut used: Vec<(RowIdx, String)> = o.upsert_rows.iter().map(|&r| (r, String::new())).collect();
    used.extend(w.members.iter().flat_map(|(k, w)| w.rows.iter().map(move |r| (r, k.to_string()))));
    used.extend(w.props.iter().flat_map(|(k, w)| w.rows.iter().map(move |r| (r, k.clone()))));
    used.extend(w.desks.iter().flat_map(|(k, w)| w.rows.iter().map(move |r| (r, k.clone()))));
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
}

/// Members: adds and removes in chunks of `--chunk-size`. A row's person is
/// already a member when the organization holds their account id, or (for
/// rows that give an email) a member with that email: portal-only customers
/// have another id on every site.
pub(super) fn members(
    p: &mut Plan,
    out: &mut Out<'_>,
    ctx: &Ctx<'_>,
    live_id: Option<u64>,
    members: Vec<(Box<str>, Want)>,
    contacts: &[(Box<str>, Contact)],
) {
    let idx = out.org;
    let is_new = live_id.is_none();
    let prune = ctx.prune_members && !is_new;
    if members.is_empty() && !prune {
        return;
    }
    let wants = members.iter().map(|(id, w)| (&**id, &w.rows));
    let Some(current) = live_or_fail(out, &ctx.live.members, is_new, wants) else { return };
    let empty = HashSet::new();
    let current = current.unwrap_or(&empty);
    let no_emails = HashMap::new();
    let emails = ctx.live.member_emails.get(&idx).unwrap_or(&no_emails);
    let contact = |id: &str| contacts.binary_search_by(|(k, _)| (**k).cmp(id)).ok().map(|at| &contacts[at].1);
    // The member that holds an input row's person: by account id, else by
    // the email the row gives.
    let holder = |id: &str| -> Option<Box<str>> {
        if current.contains(id) {
            return Some(id.into());
        }
        contact(id).and_then(|c| emails.get(&c.email)).cloned()
    };
    let mut removes = Vec::new();
    if ctx.prune_members {
        let by_email: HashSet<Box<str>> = members.iter().filter_map(|(id, _)| holder(id)).collect();
        let listed = |m: &str| members.binary_search_by(|(k, _)| (**k).cmp(m)).is_ok() || by_email.contains(m);
        let mut extra: Vec<&Box<str>> = current.iter().filter(|m| !listed(m)).collect();
        extra.sort();
        removes.extend(extra.into_iter().map(|m| MemberChange { account_id: m.clone(), rows: None }));
    }
    // The account ids move into the operations instead of being copied (1M
    // memberships = 1M strings). `members` is sorted, so `adds` is too.
    let mut adds = Vec::new();
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
            (Action::Remove, Some(held)) => removes.push(MemberChange { account_id: held, rows: Some(w.rows) }),
            (Action::Add, Some(held)) if held == id => out.unchanged(&w.rows, &id, "already a member"),
            (Action::Add, Some(held)) => out.unchanged(
                &w.rows,
                &held,
                &format!("already a member as account id {held} (same email; {id} is another site's id)"),
            ),
            _ => out.unchanged(&w.rows, &id, "not a member"),
        }
    }
    removes.sort_by(|a, b| a.account_id.cmp(&b.account_id));
    chunk(&mut p.ops, idx, true, adds, ctx.chunk_size);
    chunk(&mut p.ops, idx, false, removes, ctx.chunk_size);
}

/// Properties: set what differs (a value read equal is unchanged), delete
/// what exists; with `--prune`, delete the keys the input does not list.
pub(super) fn properties(
    p: &mut Plan,
    out: &mut Out<'_>,
    ctx: &Ctx<'_>,
    live_id: Option<u64>,
    props: &BTreeMap<String, PropWant>,
) {
    let idx = out.org;
    let is_new = live_id.is_none();
    let prune = ctx.prune_props && !is_new;
    if props.is_empty() && !prune {
        return;
    }
    let wants = props.iter().map(|(k, w)| (k.as_str(), &w.rows));
    let Some(keys) = live_or_fail(out, &ctx.live.property_keys, is_new, wants) else { return };
    let empty = BTreeSet::new();
    let keys = keys.unwrap_or(&empty);
    for (key, w) in props {
        if w.conflict {
            out.conflict(&w.rows, key, &format!("property {key:?}"));
            continue;
        }
        // Built only when sent: an unchanged value is not copied.
        let set = || Op::SetProperty { org: idx, key: key.clone(), value: w.value.clone(), rows: w.rows.clone() };
        match (w.action, keys.contains(key)) {
            (Action::Set, false) => p.ops.push(set()),
            (Action::Set, true) => match ctx.live.property_values.get(&(idx, key.clone())) {
                Some(Ok(Some(v))) if *v == w.value => out.unchanged(&w.rows, key, "same value"),
                Some(Err(e)) => out.read_failed(&w.rows, key, e),
                _ => p.ops.push(set()),
            },
            (_, true) => p.ops.push(Op::DeleteProperty { org: idx, key: key.clone(), rows: Some(w.rows.clone()) }),
            (_, false) => out.unchanged(&w.rows, key, "no such property"),
        }
    }
    if ctx.prune_props {
        for k in keys.iter().filter(|k| !props.contains_key(*k)) {
            p.ops.push(Op::DeleteProperty { org: idx, key: k.clone(), rows: None });
        }
    }
}

/// Desk links: link or unlink what differs; with `--prune`, unlink the desks
/// the input does not list (a desk named by its project key is the same desk
/// as its id).
pub(super) fn desks(
    p: &mut Plan,
    out: &mut Out<'_>,
    ctx: &Ctx<'_>,
    live_id: Option<u64>,
    desks: &BTreeMap<String, Want>,
) {
    let idx = out.org;
    let live = ctx.live;
    for (desk, w) in desks {
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
    if let (true, Some(id)) = (ctx.prune_desks, live_id) {
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

fn rows_of(v: &[RowIdx]) -> Rows {
    let mut rows = Rows::one(v[0]);
    for &r in &v[1..] {
        rows.push(r);
    }
    rows
}

/// The live state read for this organization: `Some(None)` for one this run
/// creates (nothing to read), `Some(Some(..))` when read. When the read
/// failed (or never happened), every wanted row fails with why, and `None`
/// says there is nothing left to plan.
fn live_or_fail<'l, 'w, T>(
    out: &mut Out<'_>,
    read: &'l HashMap<OrgIdx, Result<T, ReadError>>,
    is_new: bool,
    wants: impl IntoIterator<Item = (&'w str, &'w Rows)>,
) -> Option<Option<&'l T>> {
    if is_new {
        return Some(None);
    }
    let e = match read.get(&out.org) {
        Some(Ok(v)) => return Some(Some(v)),
        Some(Err(e)) => e.clone(),
        None => ReadError::from("the site's current state was not read"),
    };
    for (target, rows) in wants {
        out.read_failed(rows, target, &e);
    }
    None
}

fn chunk(ops: &mut Vec<Op>, org: OrgIdx, add: bool, changes: Vec<MemberChange>, size: usize) {
    let mut it = changes.into_iter().peekable();
    while it.peek().is_some() {
        let members: Vec<MemberChange> = it.by_ref().take(size).collect();
        ops.push(Op::Members { org, add, members });
    }
}
