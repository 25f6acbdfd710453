//! The sandbox site's data: organizations with their members and properties,
//! the known service desks with their linked organizations, and the user
//! directory.
//!
//! Owns every rule about what the site contains (name uniqueness, sequential
//! ids, which account ids exist, cascade on delete) and nothing about HTTP:
//! operations return [`ApiError`] values that the router turns into responses,
//! so the rules can be read and tested without a server. Lookups by id, name
//! and desk are map lookups, so one request costs the same on a site of ten
//! organizations as on one of ten thousand.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, HashMap};

use rand::Rng;
use serde_json::{json, Value};

use super::error::ApiError;
use super::SiteState;
use crate::model::{DeskLinkRecord, MemberRecord, OrgRecord, PropertyRecord};

/// Longest organization name, in characters.
pub(crate) const MAX_NAME_CHARS: usize = 200;
/// Longest property key, in bytes.
pub(crate) const MAX_KEY_BYTES: usize = 255;
/// Largest property value, in bytes of JSON text.
pub(crate) const MAX_VALUE_BYTES: usize = 32_768;
/// Longest synthesized (unseeded) account id.
const MAX_ACCOUNT_ID_CHARS: usize = 128;

/// One organization and everything that hangs off it.
#[derive(Debug, Clone)]
pub(crate) struct Org {
    pub id: u64,
    pub name: String,
    pub uuid: Option<String>,
    pub scim_managed: Option<bool>,
    pub created: Option<Value>,
    pub members: BTreeSet<String>,
    pub properties: BTreeMap<String, Value>,
}

/// A service desk id, ordered numerically when both sides are numeric, with
/// numeric ids before any others.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct DeskId(pub String);

impl Ord for DeskId {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self.0.parse::<u64>(), other.0.parse::<u64>()) {
            (Ok(a), Ok(b)) => a.cmp(&b).then_with(|| self.0.cmp(&other.0)),
            (Ok(_), Err(_)) => Ordering::Less,
            (Err(_), Ok(_)) => Ordering::Greater,
            (Err(_), Err(_)) => self.0.cmp(&other.0),
        }
    }
}

impl PartialOrd for DeskId {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// What the site knows about one customer.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct User {
    /// `None` when the seed hid it (privacy settings): the API then omits it.
    pub email: Option<String>,
    pub display_name: String,
}

/// Whether a membership change adds or removes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Membership {
    Add,
    Remove,
}

/// Whether `PUT .../property/{key}` created or replaced the value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PropertyWrite {
    Created,
    Updated,
}

/// The whole site. Kept behind one mutex by the server; every method is
/// synchronous so the lock is never held across an await.
#[derive(Debug, Default)]
pub(crate) struct Site {
    orgs: BTreeMap<u64, Org>,
    by_name: HashMap<String, u64>,
    last_id: u64,
    /// Users named by the seed, the customer list and created customers;
    /// any other well-formed id is synthesized unless the directory is closed.
    pub(super) users: HashMap<String, User>,
    /// People by email (see `customers`).
    pub(super) directory: super::customers::Directory,
    desks: BTreeMap<DeskId, BTreeSet<u64>>,
    /// Project key and name of each desk.
    desk_info: HashMap<DeskId, DeskInfo>,
    /// Project key (upper case) -> desk id, for `{sdId}` given as a key.
    desk_keys: HashMap<String, DeskId>,
}

/// A desk's project key and name (`SD<id>` and `Service desk <id>` unless
/// the seed or `--service-desks ID=KEY:NAME` says otherwise).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DeskInfo {
    pub key: String,
    pub name: String,
}

impl Site {
    /// Builds a site from snapshot records plus extra desks (`ID`,
    /// `ID=KEY` or `ID=KEY:NAME`). Fails on
    /// records that contradict each other (duplicate ids or names, links to
    /// organizations the snapshot does not contain).
    pub fn from_records(seed: SeedRecords, extra_desks: &[String]) -> Result<Site, String> {
        let mut site = Site::default();
        for rec in seed.organizations {
            if site.orgs.contains_key(&rec.id) {
                return Err(format!("organization id {} appears twice", rec.id));
            }
            if site.by_name.contains_key(&rec.name) {
                return Err(format!("organization name {:?} appears twice", rec.name));
            }
            site.last_id = site.last_id.max(rec.id);
            site.by_name.insert(rec.name.clone(), rec.id);
            site.orgs.insert(
                rec.id,
                Org {
                    id: rec.id,
                    name: rec.name,
                    uuid: rec.uuid,
                    scim_managed: rec.scim_managed,
                    created: rec.created.map(date_from_snapshot),
                    members: BTreeSet::new(),
                    properties: BTreeMap::new(),
                },
            );
        }
        for rec in seed.members {
            let org =
                site.orgs.get_mut(&rec.organization_id).ok_or_else(|| missing_org("member", rec.organization_id))?;
            org.members.insert(rec.account_id.clone());
            let user = site
                .users
                .entry(rec.account_id.clone())
                .or_insert_with(|| User { email: None, display_name: String::new() });
            if user.email.is_none() {
                user.email = rec.email;
            }
            if user.display_name.is_empty() {
                user.display_name = rec.display_name.unwrap_or_default();
            }
        }
        for (id, user) in site.users.iter_mut() {
            if user.display_name.is_empty() {
                user.display_name = synthetic_display_name(id);
            }
        }
        site.index_emails();
        for rec in seed.properties {
            let org =
                site.orgs.get_mut(&rec.organization_id).ok_or_else(|| missing_org("property", rec.organization_id))?;
            org.properties.insert(rec.key, rec.value);
        }
        for spec in extra_desks {
            let (id, key, name) = parse_desk_spec(spec)?;
            site.add_desk(id, key, name)?;
        }
        for rec in seed.service_desks {
            if !site.orgs.contains_key(&rec.organization_id) {
                return Err(missing_org("service desk link", rec.organization_id));
            }
            site.add_desk(&rec.service_desk_id, rec.project_key.as_deref(), rec.project_name.as_deref())?
                .insert(rec.organization_id);
        }
        Ok(site)
    }

    /// Add a desk (or return a known one). Its key defaults to `SD<id>` and
    /// its name to `Service desk <id>`; a key already used by another desk
    /// is an error.
    fn add_desk(&mut self, id: &str, key: Option<&str>, name: Option<&str>) -> Result<&mut BTreeSet<u64>, String> {
        let id = DeskId(id.trim().to_string());
        if !self.desk_info.contains_key(&id) {
            let key = key.map(|k| k.trim().to_ascii_uppercase()).unwrap_or_else(|| project_key(&id.0));
            if let Some(other) = self.desk_keys.get(&key).filter(|other| **other != id) {
                return Err(format!("project key {key} names both service desk {} and {}", other.0, id.0));
            }
            let name = name.map(str::to_string).unwrap_or_else(|| format!("Service desk {}", id.0));
            self.desk_keys.insert(key.clone(), id.clone());
            self.desk_info.insert(id.clone(), DeskInfo { key, name });
        }
        Ok(self.desks.entry(id).or_default())
    }

    fn info(&self, desk: &DeskId) -> DeskInfo {
        self.desk_info
            .get(desk)
            .cloned()
            .unwrap_or_else(|| DeskInfo { key: project_key(&desk.0), name: format!("Service desk {}", desk.0) })
    }

    pub fn org(&self, id: u64) -> Result<&Org, ApiError> {
        self.orgs.get(&id).ok_or_else(|| ApiError::org_not_found(id))
    }

    fn org_mut(&mut self, id: u64) -> Result<&mut Org, ApiError> {
        self.orgs.get_mut(&id).ok_or_else(|| ApiError::org_not_found(id))
    }

    /// Organizations in id order, optionally only those `account_id` belongs
    /// to, from index `start`; at most `take` of them.
    pub fn orgs_page(&self, member: Option<&str>, start: usize, take: usize) -> Vec<&Org> {
        let all = self.orgs.values();
        match member {
            Some(account) => all.filter(|o| o.members.contains(account)).skip(start).take(take).collect(),
            None => all.skip(start).take(take).collect(),
        }
    }

    /// Creates the organization, or returns the existing one of that exact
    /// name (the create is idempotent by name, as on JSM Cloud).
    pub fn create_org(&mut self, name: &str) -> Result<&Org, ApiError> {
        let chars = name.chars().count();
        if chars == 0 || chars > MAX_NAME_CHARS {
            return Err(ApiError::bad_request(
                format!("The organization name must be between 1 and {MAX_NAME_CHARS} characters long (got {chars})."),
                "sd.organization.error.name.length",
            ));
        }
        if let Some(id) = self.by_name.get(name) {
            return self.org(*id);
        }
        self.last_id += 1;
        let id = self.last_id;
        self.by_name.insert(name.to_string(), id);
        let org = Org {
            id,
            name: name.to_string(),
            uuid: Some(random_uuid()),
            scim_managed: Some(false),
            created: Some(date_dto(chrono::Utc::now())),
            members: BTreeSet::new(),
            properties: BTreeMap::new(),
        };
        Ok(self.orgs.entry(id).or_insert(org))
    }

    /// Renames an organization (a UI action: the API has none). The new
    /// name must be free.
    pub fn rename_org(&mut self, id: u64, name: &str) -> Result<(), String> {
        if self.by_name.get(name).is_some_and(|other| *other != id) {
            return Err(format!("an organization named {name:?} exists already"));
        }
        let org = self.orgs.get_mut(&id).ok_or_else(|| format!("no organization {id}"))?;
        self.by_name.remove(&org.name);
        org.name = name.to_string();
        self.by_name.insert(name.to_string(), id);
        Ok(())
    }

    /// Deletes the organization with its members, properties and links.
    pub fn delete_org(&mut self, id: u64) -> Result<(), ApiError> {
        let org = self.orgs.remove(&id).ok_or_else(|| ApiError::org_not_found(id))?;
        self.by_name.remove(&org.name);
        for linked in self.desks.values_mut() {
            linked.remove(&id);
        }
        Ok(())
    }

    /// The user behind an account id, if that id exists on the site.
    pub fn user(&self, account_id: &str) -> Option<User> {
        if let Some(user) = self.users.get(account_id) {
            return Some(user.clone());
        }
        (!self.directory.closed && synthetic_account_exists(account_id)).then(|| User {
            email: Some(synthetic_email(account_id)),
            display_name: synthetic_display_name(account_id),
        })
    }

    /// Members of an organization in accountId order, from `start`, at most `take`.
    pub fn members_page(&self, org: u64, start: usize, take: usize) -> Result<Vec<(String, User)>, ApiError> {
        let org = self.org(org)?;
        Ok(org
            .members
            .iter()
            .skip(start)
            .take(take)
            .map(|id| {
                let user =
                    self.user(id).unwrap_or_else(|| User { email: None, display_name: synthetic_display_name(id) });
                (id.clone(), user)
            })
            .collect())
    }

    /// Adds or removes members. All-or-nothing: when any id is unknown to
    /// the site the call fails and changes nothing.
    pub fn change_members(&mut self, org: u64, ids: &[String], change: Membership) -> Result<(), ApiError> {
        self.org(org)?;
        let mut unknown: Vec<&str> = ids.iter().filter(|id| self.user(id).is_none()).map(String::as_str).collect();
        if !unknown.is_empty() {
            unknown.sort_unstable();
            unknown.dedup();
            return Err(ApiError::unknown_users(&unknown));
        }
        let org = self.org_mut(org)?;
        for id in ids {
            match change {
                Membership::Add => {
                    org.members.insert(id.clone());
                }
                Membership::Remove => {
                    org.members.remove(id);
                }
            }
        }
        Ok(())
    }

    pub fn property(&self, org: u64, key: &str) -> Result<&Value, ApiError> {
        self.org(org)?.properties.get(key).ok_or_else(|| ApiError::property_not_found(org, key))
    }

    pub fn set_property(&mut self, org: u64, key: &str, value: Value) -> Result<PropertyWrite, ApiError> {
        check_property_key(key)?;
        let org = self.org_mut(org)?;
        Ok(match org.properties.insert(key.to_string(), value) {
            Some(_) => PropertyWrite::Updated,
            None => PropertyWrite::Created,
        })
    }

    pub fn delete_property(&mut self, org: u64, key: &str) -> Result<(), ApiError> {
        self.org_mut(org)?.properties.remove(key).map(|_| ()).ok_or_else(|| ApiError::property_not_found(org, key))
    }

    /// Resolves `{sdId}`: a desk id, or a desk's project key.
    pub fn desk(&self, id_or_key: &str) -> Result<DeskId, ApiError> {
        let id = DeskId(id_or_key.to_string());
        if self.desks.contains_key(&id) {
            return Ok(id);
        }
        self.desk_keys
            .get(id_or_key)
            .or_else(|| self.desk_keys.get(&id_or_key.to_ascii_uppercase()))
            .cloned()
            .ok_or_else(|| ApiError::desk_not_found(id_or_key))
    }

    /// Desks in id order with their key and name, from `start`, at most `take`.
    pub fn desks_page(&self, start: usize, take: usize) -> Vec<(&DeskId, DeskInfo)> {
        self.desks.keys().skip(start).take(take).map(|d| (d, self.info(d))).collect()
    }

    /// Organizations linked to a desk, in id order, from `start`, at most `take`.
    pub fn desk_orgs_page(&self, desk: &DeskId, start: usize, take: usize) -> Vec<&Org> {
        self.desks.get(desk).into_iter().flatten().skip(start).take(take).filter_map(|id| self.orgs.get(id)).collect()
    }

    /// Links an organization to a desk; linking twice is a no-op.
    pub fn link(&mut self, desk: &DeskId, org: u64) -> Result<(), ApiError> {
        self.org(org)?;
        self.desks.get_mut(desk).ok_or_else(|| ApiError::desk_not_found(&desk.0))?.insert(org);
        Ok(())
    }

    /// Unlinks an organization from a desk; unlinking what is not linked is a no-op.
    pub fn unlink(&mut self, desk: &DeskId, org: u64) -> Result<(), ApiError> {
        self.desks.get_mut(desk).ok_or_else(|| ApiError::desk_not_found(&desk.0))?.remove(&org);
        Ok(())
    }

    /// The whole site as sorted snapshot records.
    pub fn dump(&self) -> SiteState {
        let mut state = SiteState::default();
        for org in self.orgs.values() {
            state.organizations.push(OrgRecord {
                id: org.id,
                name: org.name.clone(),
                uuid: org.uuid.clone(),
                scim_managed: org.scim_managed,
                created: org.created.clone(),
            });
            for account in &org.members {
                let user = self.user(account);
                state.members.push(MemberRecord {
                    organization: org.name.clone(),
                    organization_id: org.id,
                    account_id: account.clone(),
                    email: user.as_ref().and_then(|u| u.email.clone()),
                    display_name: user.map(|u| u.display_name),
                });
            }
            for (key, value) in &org.properties {
                state.properties.push(PropertyRecord {
                    organization: org.name.clone(),
                    organization_id: org.id,
                    key: key.clone(),
                    value: value.clone(),
                });
            }
        }
        let mut links: Vec<(u64, &DeskId)> =
            self.desks.iter().flat_map(|(desk, orgs)| orgs.iter().map(move |org| (*org, desk))).collect();
        links.sort();
        state.service_desks = links
            .into_iter()
            .map(|(org, desk)| {
                let info = self.info(desk);
                DeskLinkRecord {
                    organization: self.orgs.get(&org).map(|o| o.name.clone()).unwrap_or_default(),
                    organization_id: org,
                    service_desk_id: desk.0.clone(),
                    project_key: Some(info.key),
                    project_name: Some(info.name),
                }
            })
            .collect();
        state.desks = self.desks.keys().map(|d| d.0.clone()).collect();
        state
    }
}

/// Snapshot records to seed a site with.
#[derive(Debug, Default)]
pub(crate) struct SeedRecords {
    pub organizations: Vec<OrgRecord>,
    pub members: Vec<MemberRecord>,
    pub properties: Vec<PropertyRecord>,
    pub service_desks: Vec<DeskLinkRecord>,
}

fn missing_org(what: &str, id: u64) -> String {
    format!("a {what} refers to organization_id {id}, which is not among the organizations")
}

/// Rejects property keys the real API rejects.
pub(crate) fn check_property_key(key: &str) -> Result<(), ApiError> {
    if key.is_empty() || key.len() > MAX_KEY_BYTES {
        return Err(ApiError::bad_request(
            format!("The property key must be between 1 and {MAX_KEY_BYTES} bytes long (got {}).", key.len()),
            "jira.properties.service.key.too.long",
        ));
    }
    Ok(())
}

/// A `--service-desks` entry: `ID`, `ID=KEY` or `ID=KEY:NAME`.
fn parse_desk_spec(spec: &str) -> Result<(&str, Option<&str>, Option<&str>), String> {
    let (id, rest) = match spec.split_once('=') {
        None => return Ok((spec.trim(), None, None)),
        Some((id, rest)) => (id.trim(), rest),
    };
    let (key, name) = match rest.split_once(':') {
        Some((key, name)) => (key.trim(), Some(name.trim()).filter(|n| !n.is_empty())),
        None => (rest.trim(), None),
    };
    let valid_key = !key.is_empty() && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if id.is_empty() || !valid_key {
        return Err(format!("service desk {spec:?}: expected ID, ID=KEY or ID=KEY:NAME (a key is letters, digits, _)"));
    }
    Ok((id, Some(key), name))
}

/// The default project key of a desk: `SD<id>`.
pub(crate) fn project_key(desk_id: &str) -> String {
    format!("SD{}", desk_id.to_ascii_uppercase())
}

/// The existence rule for account ids the seed does not name: 1..=128 chars
/// of `[A-Za-z0-9:_-]` that do not contain `unknown`.
pub(crate) fn synthetic_account_exists(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ACCOUNT_ID_CHARS
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b':' | b'_' | b'-'))
        && !id.contains("unknown")
}

fn synthetic_display_name(id: &str) -> String {
    let tail: String = {
        let chars: Vec<char> = id.chars().collect();
        chars[chars.len().saturating_sub(6)..].iter().collect()
    };
    format!("Customer {tail}")
}

fn synthetic_email(id: &str) -> String {
    let local: String =
        id.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '-' }).collect();
    format!("{local}@customers.example")
}

/// A random RFC 4122 version-4 uuid in its usual text form.
pub(crate) fn random_uuid() -> String {
    let mut b: [u8; 16] = rand::thread_rng().gen();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &hex[0..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..32])
}

/// A `DateDTO` as JSM renders it.
/// A snapshot's `created`: a DateDTO as it is; ISO text (a CSV snapshot)
/// becomes the DateDTO the API serves.
fn date_from_snapshot(created: Value) -> Value {
    let parsed = match &created {
        Value::String(s) => chrono::DateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%z")
            .or_else(|_| chrono::DateTime::parse_from_rfc3339(s))
            .ok(),
        _ => None,
    };
    match parsed {
        Some(t) => date_dto(t.with_timezone(&chrono::Utc)),
        None => created,
    }
}

fn date_dto(t: chrono::DateTime<chrono::Utc>) -> Value {
    json!({
        "epochMillis": t.timestamp_millis(),
        "friendly": t.format("%d/%b/%y %-I:%M %p").to_string(),
        "iso8601": t.format("%Y-%m-%dT%H:%M:%S%z").to_string(),
        "jira": t.format("%Y-%m-%dT%H:%M:%S%.3f%z").to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn desks_take_keys_and_names_from_specs_and_seed() {
        let mut seed = SeedRecords::default();
        seed.organizations.push(OrgRecord { id: 1, name: "A".into(), uuid: None, scim_managed: None, created: None });
        let mut link = DeskLinkRecord::by_id("A", 1, "7");
        link.project_key = Some("HR".into());
        link.project_name = Some("People".into());
        seed.service_desks.push(link);
        let site =
            Site::from_records(seed, &["10001=SUP:Customer Support".into(), "10002=its".into(), "3".into()]).unwrap();
        let page: Vec<(String, String, String)> =
            site.desks_page(0, 10).into_iter().map(|(d, i)| (d.0.clone(), i.key, i.name)).collect();
        assert_eq!(
            page,
            [
                ("3".into(), "SD3".into(), "Service desk 3".into()),
                ("7".into(), "HR".into(), "People".into()),
                ("10001".into(), "SUP".into(), "Customer Support".into()),
                ("10002".into(), "ITS".into(), "Service desk 10002".into()),
            ]
        );
        assert_eq!(site.desk("sup").unwrap().0, "10001");
        assert_eq!(site.desk("HR").unwrap().0, "7");
        assert!(Site::from_records(SeedRecords::default(), &["1=A".into(), "2=A".into()]).is_err());
        assert!(Site::from_records(SeedRecords::default(), &["1=".into()]).is_err());
    }

    #[test]
    fn desk_ids_order_numerically_then_textually() {
        let mut ids: Vec<DeskId> = ["10", "2", "HR", "1", "ABC"].iter().map(|s| DeskId(s.to_string())).collect();
        ids.sort();
        let got: Vec<&str> = ids.iter().map(|d| d.0.as_str()).collect();
        assert_eq!(got, ["1", "2", "10", "ABC", "HR"]);
    }

    #[test]
    fn synthetic_account_rule() {
        assert!(synthetic_account_exists("qm:a713c8ea-1075:5ad6d3581db05e2a66fa80b"));
        assert!(synthetic_account_exists("5b10ac8d82e05b22cc7d4ef5"));
        assert!(!synthetic_account_exists(""));
        assert!(!synthetic_account_exists("has space"));
        assert!(!synthetic_account_exists("user-unknown-1"));
        assert!(!synthetic_account_exists(&"a".repeat(129)));
        assert!(synthetic_account_exists(&"a".repeat(128)));
    }

    #[test]
    fn uuid_and_date_shapes() {
        let u = random_uuid();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        let d = date_dto(chrono::DateTime::from_timestamp_millis(1_700_000_000_123).unwrap());
        assert_eq!(d["epochMillis"], 1_700_000_000_123_i64);
        assert_eq!(d["iso8601"], "2023-11-14T22:13:20+0000");
        assert_eq!(d["jira"], "2023-11-14T22:13:20.123+0000");
        assert_eq!(d["friendly"], "14/Nov/23 10:13 PM");
    }

    #[test]
    fn failed_member_change_changes_nothing() {
        let mut site = Site::default();
        let id = site.create_org("A").unwrap().id;
        let ids = vec!["good-1".to_string(), "bad-unknown".to_string()];
        let err = site.change_members(id, &ids, Membership::Add).unwrap_err();
        assert_eq!(err.status.as_u16(), 400);
        assert!(site.org(id).unwrap().members.is_empty());
    }
}
