//! People named by email: which account id an email stands for on the site,
//! creating a portal-only customer where the run may.
//!
//! Owns the resolution rule — the user search's one user whose
//! `emailAddress` equals the email ignoring case; none: create with
//! `--create-customers` (adds only, never in a dry run), 409 on create =
//! the person exists but hides the email; several: ambiguous — and the
//! once-per-email cache shared by the up-front pass (before planning) and
//! the executor's fallback for ids the site does not know. It decides no
//! membership and writes no report: results go back as
//! [`Resolved`] values for `plan` to apply.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures::stream::{self, StreamExt};
use tokio::sync::OnceCell;

use crate::api::{Client, User};
use crate::executor::describe;
use crate::plan::{EmailNeed, Resolved};

/// Whether a lookup may end in creating a customer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Create {
    /// `--create-customers` and an `add` row: create when nobody has the email.
    Yes,
    /// An `add` row without `--create-customers`: say how to create.
    NotAsked,
    /// Only `remove` rows name the email: look up, never create.
    Never,
}

/// The one answer for an email, filled by the first lookup.
type Answer = Arc<OnceCell<Resolved>>;

/// Resolves emails through one client; cheap to share (`Arc`).
pub struct Resolver {
    client: Client,
    create_customers: bool,
    dry_run: bool,
    cache: Mutex<HashMap<(Box<str>, Create), Answer>>,
    created: AtomicU64,
    /// The user search answered 404: the site has no Cloud platform API.
    no_search: AtomicBool,
}

impl Resolver {
    pub fn new(client: Client, create_customers: bool, dry_run: bool) -> Resolver {
        Resolver {
            client,
            create_customers,
            dry_run,
            cache: Mutex::new(HashMap::new()),
            created: AtomicU64::new(0),
            no_search: AtomicBool::new(false),
        }
    }

    /// Customers this run created.
    pub fn created(&self) -> u64 {
        self.created.load(Ordering::Relaxed)
    }

    /// How a lookup for a row of this kind may end.
    pub fn create_for(&self, adds: bool) -> Create {
        match (adds, self.create_customers) {
            (false, _) => Create::Never,
            (true, true) => Create::Yes,
            (true, false) => Create::NotAsked,
        }
    }

    /// Resolve every email the input names, concurrently (the throttle
    /// paces the requests); one entry per email, keyed as given.
    pub async fn resolve_all(
        self: &Arc<Self>,
        emails: &std::collections::BTreeMap<Box<str>, EmailNeed>,
        concurrency: usize,
        mut progress: impl FnMut(),
    ) -> HashMap<Box<str>, Resolved> {
        let mut out = HashMap::with_capacity(emails.len());
        // The first email alone: a site without the user search (Data
        // Center) then answers one 404, not one per email.
        let mut emails = emails.iter();
        if let Some((email, need)) = emails.next() {
            let r = self.resolve(email, need.display_name.as_deref(), self.create_for(need.adds)).await;
            progress();
            out.insert(email.clone(), r);
        }
        let mut done = stream::iter(emails)
            .map(|(email, need)| {
                let this = Arc::clone(self);
                let create = self.create_for(need.adds);
                async move {
                    let r = this.resolve(email, need.display_name.as_deref(), create).await;
                    (email.clone(), r)
                }
            })
            .buffer_unordered(concurrency.max(1) * 2);
        while let Some((email, r)) = done.next().await {
            progress();
            out.insert(email, r);
        }
        out
    }

    /// The account id `email` names on the site (once per email and
    /// [`Create`] per run; later calls get the first answer).
    pub async fn resolve(&self, email: &str, display_name: Option<&str>, create: Create) -> Resolved {
        let cell = {
            let mut cache = self.cache.lock().expect("resolver cache");
            Arc::clone(cache.entry((email.to_lowercase().into_boxed_str(), create)).or_default())
        };
        cell.get_or_init(|| self.lookup(email, display_name, create)).await.clone()
    }

    async fn lookup(&self, email: &str, display_name: Option<&str>, create: Create) -> Resolved {
        if self.no_search.load(Ordering::Relaxed) {
            return Resolved::Failed(NO_SEARCH.into());
        }
        let found = match self.search(email).await {
            Ok(found) => found,
            Err(failed) => return failed,
        };
        match found.as_slice() {
            [one] => return Resolved::Id { account_id: one.as_str().into(), created: false },
            [] => {}
            many => {
                return Resolved::Failed(
                    format!(
                        "email {email} is ambiguous: {} accounts on the site have it ({}); give the `account_id`",
                        many.len(),
                        many.join(", ")
                    )
                    .into(),
                )
            }
        }
        match create {
            Create::Never => Resolved::Failed(
                format!(
                    "no customer with email {email} on the site (or the site hides that email); give the `account_id`"
                )
                .into(),
            ),
            Create::NotAsked => Resolved::Failed(
                format!("no customer with email {email} on the site; pass `--create-customers` to create it").into(),
            ),
            Create::Yes if self.dry_run => Resolved::WouldCreate,
            Create::Yes => self.create(email, display_name.unwrap_or(email)).await,
        }
    }

    /// The account ids of the users whose email is `email` (any case).
    async fn search(&self, email: &str) -> Result<Vec<String>, Resolved> {
        match self.client.search_users(email).await {
            Ok(users) => Ok(matching(&users.value, email)),
            // An HTML 404 page counts too: Data Center has no /rest/api/3.
            Err(e) if e.status() == Some(404) => {
                self.no_search.store(true, Ordering::Relaxed);
                Err(Resolved::Failed(NO_SEARCH.into()))
            }
            Err(e) => Err(Resolved::Failed(format!("could not look up email {email}: {}", describe(&e)).into())),
        }
    }

    async fn create(&self, email: &str, display_name: &str) -> Resolved {
        match self.client.create_customer(email, display_name).await {
            Ok(c) => {
                self.created.fetch_add(1, Ordering::Relaxed);
                Resolved::Id { account_id: c.value.account_id.into(), created: true }
            }
            Err(e) if e.status() == Some(409) => {
                // A retried create whose first answer was lost also meets a
                // 409: then the search finds the customer it made.
                if e.attempts > 1 {
                    if let Ok([one]) = self.search(email).await.as_deref() {
                        self.created.fetch_add(1, Ordering::Relaxed);
                        return Resolved::Id { account_id: one.as_str().into(), created: true };
                    }
                }
                Resolved::Failed(
                    format!(
                        "an account with email {email} exists but its email is hidden by the person's privacy \
                         settings; give its `account_id`"
                    )
                    .into(),
                )
            }
            Err(e) => Resolved::Failed(format!("could not create customer {email}: {}", describe(&e)).into()),
        }
    }
}

const NO_SEARCH: &str = "this site has no Jira Cloud user search (GET /rest/api/3/user/search answered 404, as \
                         Data Center does): name people by `account_id` (on Data Center, the username)";

/// The distinct account ids among `users` whose email equals `email`
/// ignoring case, in the order found.
fn matching(users: &[User], email: &str) -> Vec<String> {
    let mut ids: Vec<String> = Vec::new();
    for u in users {
        let same = u.email_address.as_deref().is_some_and(|e| e.trim().to_lowercase() == email.trim().to_lowercase());
        if same && !ids.contains(&u.account_id) {
            ids.push(u.account_id.clone());
        }
    }
    ids
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(id: &str, email: Option<&str>) -> User {
        User { account_id: id.into(), email_address: email.map(Into::into), display_name: Some("X".into()) }
    }

    #[test]
    fn only_exact_emails_match_ignoring_case() {
        let users = [
            user("a", Some("Ann@Example.com")),
            user("b", Some("ann@example.community")),
            user("c", None),
            user("a", Some("ann@example.com")),
            user("ü", Some("ÜLLA@example.com")),
        ];
        assert_eq!(matching(&users, "ann@EXAMPLE.com"), vec!["a".to_string()]);
        assert_eq!(matching(&users, "ülla@example.com"), vec!["ü".to_string()]);
        assert!(matching(&users, "ann@example.co").is_empty());
    }
}
