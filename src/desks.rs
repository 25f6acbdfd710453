//! Service desks named by input rows, resolved against the site's desk list.
//!
//! Desk ids differ between sites, so a snapshot's link row names its desk by
//! project key when it can, and `service_desk_id` may itself be a key. This
//! module turns every row's desk into the id the site uses, before anything
//! is read or planned: a key (any case) that the site lists, else an id it
//! lists. A desk the site does not have fails its rows here, in the dry run
//! and the real run alike, with the same message; rows that name one desk
//! two ways become one change (or a conflict). Pure: no I/O, the caller
//! passes the listed desks.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::api::ServiceDesk;
use crate::plan::{Desired, Settled, Want};
use crate::report::RowOutcome;

/// The site's desks: id by id, and id by upper-case project key.
#[derive(Debug, Default, Clone)]
pub struct DeskDirectory {
    ids: HashMap<String, String>,
    keys: HashMap<String, String>,
}

impl DeskDirectory {
    pub fn new(desks: &[ServiceDesk]) -> DeskDirectory {
        let mut dir = DeskDirectory::default();
        for d in desks {
            dir.ids.insert(d.id.clone(), d.id.clone());
            if let Some(key) = &d.project_key {
                dir.keys.insert(key.to_ascii_uppercase(), d.id.clone());
            }
        }
        dir
    }

    /// The site's id of a desk named by project key or id (a key wins: a
    /// small id may be another desk on this site).
    pub fn resolve(&self, name: &str) -> Option<&str> {
        self.keys.get(&name.to_ascii_uppercase()).or_else(|| self.ids.get(name)).map(String::as_str)
    }
}

/// Rewrite every organization's wanted desks to the site's ids; rows whose
/// desk the site does not list are settled as failed through `sink`.
pub fn resolve_desks(d: &mut Desired, site: &DeskDirectory, sink: &mut dyn FnMut(&Desired, Settled)) {
    for org in 0..d.orgs.len() {
        if d.orgs[org].desks.is_empty() {
            continue;
        }
        let wanted = std::mem::take(&mut d.orgs[org].desks);
        let mut resolved: BTreeMap<String, Want> = BTreeMap::new();
        for (name, want) in wanted {
            let Some(id) = site.resolve(&name) else {
                let target: Arc<str> = name.as_str().into();
                for row in want.rows.iter() {
                    let msg = format!(
                        "{}: field `service_desk_id`: service desk {name} does not exist on the site",
                        d.source(row)
                    );
                    let settled = Settled {
                        row,
                        org: Some(org as u32),
                        target: target.clone(),
                        outcome: RowOutcome::failed(msg),
                    };
                    sink(d, settled);
                }
                continue;
            };
            match resolved.get_mut(id) {
                None => {
                    resolved.insert(id.to_string(), want);
                }
                Some(kept) => {
                    kept.conflict |= kept.action != want.action || want.conflict;
                    for row in want.rows.iter() {
                        kept.rows.push(row);
                    }
                }
            }
        }
        d.orgs[org].desks = resolved;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Organization;
    use crate::input::{Action, Kind, OrgRef, Row, RowData, Source};
    use crate::report::Outcome;

    fn desk(id: &str, key: &str) -> ServiceDesk {
        serde_json::from_value(serde_json::json!({"id": id, "projectKey": key})).unwrap()
    }

    fn row(index: u64, desk: &str, action: Action) -> Row {
        Row {
            index,
            source: Source { file: "l.csv".into(), line: index + 2 },
            kind: Kind::ServiceDesks,
            action,
            data: RowData::ServiceDesk { org: OrgRef::Name("Acme".into()), service_desk_id: desk.into() },
        }
    }

    #[test]
    fn keys_win_over_ids_and_unknown_desks_fail() {
        let live = [Organization { id: 7, name: "Acme".into(), uuid: None, scim_managed: None, created: None }];
        let mut d = Desired::new(&live);
        d.add(row(0, "sup", Action::Link)).unwrap();
        d.add(row(1, "1", Action::Link)).unwrap();
        d.add(row(2, "NOPE", Action::Link)).unwrap();
        d.add(row(3, "55", Action::Unlink)).unwrap();
        // "1" is this site's TRAP desk; "SUP" is 55 here.
        let site = DeskDirectory::new(&[desk("1", "TRAP"), desk("55", "SUP")]);
        let mut settled = Vec::new();
        resolve_desks(&mut d, &site, &mut |_, s| settled.push(s));
        assert_eq!(settled.len(), 1);
        assert_eq!(settled[0].row, 2);
        assert_eq!(settled[0].outcome.outcome, Outcome::Failed);
        let msg = settled[0].outcome.message.as_deref().unwrap();
        assert_eq!(msg, "l.csv:4: field `service_desk_id`: service desk NOPE does not exist on the site");
        let desks: Vec<(&String, bool)> = d.orgs[0].desks.iter().map(|(k, w)| (k, w.conflict)).collect();
        // "sup" (link) and "55" (unlink) are one desk: a conflict.
        assert_eq!(desks, [(&"1".to_string(), false), (&"55".to_string(), true)]);
    }
}
