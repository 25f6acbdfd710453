//! The sandbox's customer directory: who exists on the site, found by
//! email through `GET /rest/api/3/user/search` and created by
//! `POST /rest/servicedeskapi/customer`.
//!
//! Owns the people rules: emails are unique ignoring case; a person whose
//! email is hidden (privacy settings) is neither matched by email nor shown
//! with one, yet their email is taken (a create answers 409 with
//! `strictConflictStatusCode`, 400 without); a *closed* directory (loaded
//! with `sandbox --customers FILE`) knows only its people, the seed's
//! members and the customers created through the API, so any other account
//! id is unknown to member adds. Without one, well-formed synthetic ids
//! exist too (see `store`). It must not hold the site lock across an await,
//! and keeps its handlers as thin as `http`'s.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;

use anyhow::{anyhow, Context};
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::Value;

use super::error::ApiError;
use super::http::{user_dto, App};
use super::store::{Site, User};
use crate::routes;

/// Largest `maxResults` of a user search.
const MAX_SEARCH_RESULTS: usize = 1000;

/// One person of a `--customers` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CustomerRecord {
    /// Generated when the file leaves it out.
    pub account_id: Option<String>,
    pub email: String,
    pub display_name: Option<String>,
    /// The person's privacy settings hide the email.
    pub hidden: bool,
}

/// The indexes of people by email and name.
#[derive(Debug, Default)]
pub(crate) struct Directory {
    /// Lowercase email → account id, hidden emails included.
    by_email: HashMap<String, String>,
    /// Lowercase visible email → account id, for prefix search.
    visible: BTreeMap<String, String>,
    /// (Lowercase display name, account id), for prefix search.
    names: BTreeSet<(String, String)>,
    /// Only known people exist: no synthetic account ids.
    pub closed: bool,
}

impl Directory {
    /// Whether the email (any case) belongs to someone.
    fn taken(&self, email: &str) -> bool {
        self.by_email.contains_key(&email.to_lowercase())
    }

    /// Index a person: `email` is theirs (hidden or not), `user` what the
    /// API shows of them.
    fn insert(&mut self, email: &str, account_id: &str, user: &User) {
        self.by_email.entry(email.to_lowercase()).or_insert_with(|| account_id.to_string());
        if let Some(shown) = &user.email {
            self.visible.insert(shown.to_lowercase(), account_id.to_string());
        }
        self.names.insert((user.display_name.to_lowercase(), account_id.to_string()));
    }

    /// Account ids whose visible email or display name starts with `q` (lowercase).
    fn prefixed(&self, q: &str) -> BTreeSet<&str> {
        let by_email = self.visible.range(q.to_string()..).take_while(|(e, _)| e.starts_with(q)).map(|(_, id)| id);
        let start = (q.to_string(), String::new());
        let by_name = self.names.range(start..).take_while(|(n, _)| n.starts_with(q)).map(|(_, id)| id);
        by_email.chain(by_name).map(String::as_str).collect()
    }
}

/// Read a `--customers` CSV file: columns `email` (required),
/// `display_name`, `account_id` and `hidden` (`true`/`yes`/`1`).
pub(crate) fn load(path: &Path) -> anyhow::Result<Vec<CustomerRecord>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut reader =
        csv::ReaderBuilder::new().flexible(true).from_reader(text.trim_start_matches('\u{feff}').as_bytes());
    let header: Vec<String> =
        reader.headers()?.iter().map(|h| h.trim().to_lowercase().replace([' ', '-'], "_")).collect();
    let column = |name: &str| header.iter().position(|h| h == name);
    let email_at = column("email").ok_or_else(|| anyhow!("{}: no `email` column", path.display()))?;
    let (name_at, id_at, hidden_at) = (column("display_name"), column("account_id"), column("hidden"));
    let mut out = Vec::new();
    for (i, record) in reader.records().enumerate() {
        let record = record.with_context(|| format!("{}: unreadable row {}", path.display(), i + 2))?;
        let cell = |at: Option<usize>| at.and_then(|at| record.get(at)).map(str::trim).filter(|s| !s.is_empty());
        let Some(email) = cell(Some(email_at)) else { continue };
        if !plausible_email(email) {
            anyhow::bail!("{}:{}: `{email}` is not an email address", path.display(), i + 2);
        }
        out.push(CustomerRecord {
            account_id: cell(id_at).map(str::to_string),
            email: email.to_string(),
            display_name: cell(name_at).map(str::to_string),
            hidden: cell(hidden_at).is_some_and(|h| matches!(h.to_lowercase().as_str(), "true" | "yes" | "1")),
        });
    }
    Ok(out)
}

/// What the sandbox accepts as an email: `local@domain.tld`, no spaces.
fn plausible_email(email: &str) -> bool {
    !email.chars().any(char::is_whitespace)
        && email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty() && domain.contains('.') && !domain.starts_with('.') && !domain.ends_with('.')
        })
}

impl Site {
    /// Index the emails of the people the seed named.
    pub(crate) fn index_emails(&mut self) {
        for (id, user) in &self.users {
            if let Some(email) = &user.email {
                self.directory.insert(email, id, user);
            }
        }
    }

    /// Load a customer list; from then on the directory is closed.
    pub(crate) fn add_customers(&mut self, people: Vec<CustomerRecord>) -> Result<(), String> {
        self.directory.closed = true;
        for p in people {
            if self.directory.taken(&p.email) {
                return Err(format!("the email {} appears twice", p.email));
            }
            let id = p.account_id.unwrap_or_else(new_account_id);
            let user = User {
                email: (!p.hidden).then(|| p.email.clone()),
                display_name: p.display_name.unwrap_or_else(|| p.email.clone()),
            };
            self.directory.insert(&p.email, &id, &user);
            self.users.insert(id, user);
        }
        Ok(())
    }

    /// `POST /customer`: a new portal-only customer. An email that anyone
    /// has (hidden or not) is a conflict: 409 with
    /// `strictConflictStatusCode=true`, else 400.
    pub(crate) fn create_customer(
        &mut self,
        email: &str,
        display_name: &str,
        strict: bool,
    ) -> Result<(String, User), ApiError> {
        if !plausible_email(email) {
            return Err(ApiError::bad_request(
                format!("The email address {email:?} is invalid."),
                "sd.customer.email.invalid",
            ));
        }
        if self.directory.taken(email) {
            let status = if strict { StatusCode::CONFLICT } else { StatusCode::BAD_REQUEST };
            return Err(ApiError::new(
                status,
                format!("An account already exists for this email: {email}"),
                "sd.customer.email.exists",
            ));
        }
        let id = new_account_id();
        let user = User { email: Some(email.to_string()), display_name: display_name.to_string() };
        self.directory.insert(email, &id, &user);
        self.users.insert(id.clone(), user.clone());
        Ok((id, user))
    }

    /// Users whose visible email or display name starts with `query`
    /// (ignoring case), ordered by display name then account id. Only
    /// people the directory knows are found (synthetic ids are not people).
    pub(crate) fn search_users(&self, query: &str, start: usize, max: usize) -> Vec<(String, User)> {
        let ids = self.directory.prefixed(&query.to_lowercase());
        let mut found: Vec<(&str, &User)> =
            ids.into_iter().filter_map(|id| self.users.get(id).map(|u| (id, u))).collect();
        found.sort_by(|a, b| (&a.1.display_name, a.0).cmp(&(&b.1.display_name, b.0)));
        found.into_iter().skip(start).take(max).map(|(id, u)| (id.to_string(), u.clone())).collect()
    }
}

/// A portal-only customer's account id, in the `qm:` form JSM uses.
fn new_account_id() -> String {
    format!("qm:{}", super::store::random_uuid())
}

/// `GET /rest/api/3/user/search?query&startAt&maxResults`: an array of users,
/// each with `accountType` (`customer` for portal-only ones).
pub(crate) async fn search_users(State(app): State<Arc<App>>, RawQuery(q): RawQuery) -> Result<Response, ApiError> {
    app.hit(routes::SEARCH_USERS);
    let (mut query, mut start, mut max) = (String::new(), 0usize, 50usize);
    for (k, v) in url::form_urlencoded::parse(q.unwrap_or_default().as_bytes()) {
        let number = || {
            v.trim().parse::<usize>().map_err(|_| {
                ApiError::bad_request(format!("The query parameter {k}={v:?} is not a number."), "user.search.param")
            })
        };
        match k.as_ref() {
            "query" => query = v.trim().to_string(),
            "startAt" => start = number()?,
            "maxResults" => max = number()?.min(MAX_SEARCH_RESULTS),
            _ => {}
        }
    }
    if query.is_empty() {
        return Err(ApiError::bad_request("The query parameter 'query' is required.", "user.search.query.required"));
    }
    let found = app.site().search_users(&query, start, max);
    let base = app.base();
    let users: Vec<Value> = found
        .iter()
        .map(|(id, u)| {
            let mut dto = user_dto(base, id, u);
            let kind = if id.starts_with("qm:") { "customer" } else { "atlassian" };
            dto["accountType"] = Value::from(kind);
            dto
        })
        .collect();
    Ok(Json(users).into_response())
}

/// `POST /rest/servicedeskapi/customer {email, displayName}` → 201 and the user.
pub(crate) async fn create_customer(
    State(app): State<Arc<App>>,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Result<Response, ApiError> {
    app.hit(routes::CREATE_CUSTOMER);
    let strict = url::form_urlencoded::parse(q.unwrap_or_default().as_bytes())
        .any(|(k, v)| k == "strictConflictStatusCode" && v.eq_ignore_ascii_case("true"));
    let body: Value = serde_json::from_slice(&body).map_err(ApiError::invalid_body)?;
    let text = |key: &str| body.get(key).and_then(Value::as_str).map(str::trim).filter(|s| !s.is_empty());
    let email = text("email").ok_or_else(|| ApiError::bad_request("The email is required.", "sd.customer.email"))?;
    let name = text("displayName").or_else(|| text("fullName")).unwrap_or(email);
    let (id, user) = app.site().create_customer(email, name, strict)?;
    let mut dto = user_dto(app.base(), &id, &user);
    dto["accountType"] = Value::from("customer");
    Ok((StatusCode::CREATED, Json(dto)).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn person(email: &str, hidden: bool) -> CustomerRecord {
        CustomerRecord { account_id: None, email: email.into(), display_name: Some("P".into()), hidden }
    }

    #[test]
    fn hidden_emails_are_taken_but_never_found() {
        let mut site = Site::default();
        site.add_customers(vec![person("Ann@Example.com", false), person("hid@example.com", true)]).unwrap();
        assert!(site.directory.closed);
        assert_eq!(site.search_users("ann@example", 0, 50).len(), 1);
        assert!(site.search_users("hid@", 0, 50).is_empty());
        assert_eq!(site.create_customer("HID@example.com", "H", true).unwrap_err().status, StatusCode::CONFLICT);
        assert_eq!(site.create_customer("ann@example.com", "A", false).unwrap_err().status, StatusCode::BAD_REQUEST);
        assert_eq!(site.create_customer("not an email", "A", true).unwrap_err().status, StatusCode::BAD_REQUEST);
        let (id, user) = site.create_customer("new@example.com", "New Person", true).unwrap();
        assert!(id.starts_with("qm:"));
        assert_eq!(site.search_users("new person", 0, 50), vec![(id.clone(), user)]);
        assert!(site.user(&id).is_some());
        assert!(site.user("acct-never-seen").is_none(), "a closed directory has no synthetic ids");
        assert!(site.add_customers(vec![person("NEW@example.com", false)]).is_err());
    }

    #[test]
    fn customer_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.csv");
        std::fs::write(&path, "Email,Display Name,account_id,hidden\nann@x.io,Ann,,\nbo@x.io,,id-bo,yes\n,,,\n")
            .unwrap();
        let people = load(&path).unwrap();
        assert_eq!(
            people,
            vec![
                CustomerRecord {
                    account_id: None,
                    email: "ann@x.io".into(),
                    display_name: Some("Ann".into()),
                    hidden: false
                },
                CustomerRecord {
                    account_id: Some("id-bo".into()),
                    email: "bo@x.io".into(),
                    display_name: None,
                    hidden: true
                },
            ]
        );
        std::fs::write(&path, "email\nnope\n").unwrap();
        assert!(load(&path).unwrap_err().to_string().contains("c.csv:2"));
    }
}
