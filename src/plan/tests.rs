use super::*;
use std::collections::{BTreeSet, HashMap, HashSet};

use crate::api::Organization;
use crate::input::{Action, OrgRef, Row, Source};
use serde_json::Value;

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
    let early: Vec<(RowIdx, &str, Outcome)> = early.iter().map(|s| (s.row, &*s.target, s.outcome.outcome)).collect();
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
