//! The API's route templates, spelled once: `GET /organization/{id}/property/{key}`.
//!
//! Owns the list of (method, path template) pairs the tool calls under
//! `SITE/rest/servicedeskapi`. The client fills a template to build a URL, the
//! throttle keys one pacer per route (Jira's burst limit is per endpoint ×
//! method), the sandbox mounts its handlers and counts its statistics on the
//! same values, and tests name them. It must not know how a call is made or
//! paced; it depends on nothing else in the crate, so every module can use it.

use std::fmt;

/// An HTTP method of the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Verb {
    Get,
    Post,
    Put,
    Delete,
}

impl Verb {
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Get => "GET",
            Verb::Post => "POST",
            Verb::Put => "PUT",
            Verb::Delete => "DELETE",
        }
    }

    /// The method named `s` (any case), if the API uses it.
    pub fn parse(s: &str) -> Option<Verb> {
        [Verb::Get, Verb::Post, Verb::Put, Verb::Delete].into_iter().find(|v| v.as_str().eq_ignore_ascii_case(s))
    }
}

/// One endpoint × method: what Jira's burst limit counts separately.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Route {
    pub verb: Verb,
    /// Path template under the API base; placeholders are `{name}`.
    pub path: &'static str,
}

impl Route {
    const fn new(verb: Verb, path: &'static str) -> Route {
        Route { verb, path }
    }

    /// The template's segments: `Ok(literal)` or `Err(placeholder name)`.
    pub fn segments(self) -> impl Iterator<Item = Result<&'static str, &'static str>> {
        self.path.split('/').filter(|s| !s.is_empty()).map(|s| match s.strip_prefix('{') {
            Some(name) => Err(name.trim_end_matches('}')),
            None => Ok(s),
        })
    }

    /// The request line of a concrete call, for messages: the method and the
    /// template with `args` in place of its placeholders, in order
    /// (`GET /organization/7/user`). Not for sending (nothing is encoded).
    pub fn describe(self, args: &[&dyn fmt::Display]) -> String {
        let mut args = args.iter();
        let mut out = String::from(self.verb.as_str());
        out.push(' ');
        for seg in self.segments() {
            out.push('/');
            match seg {
                Ok(literal) => out.push_str(literal),
                Err(name) => match args.next() {
                    Some(arg) => out.push_str(&arg.to_string()),
                    None => out.push_str(&format!("{{{name}}}")),
                },
            }
        }
        out
    }

    /// The route a request of `verb` to the concrete `path` (under the API
    /// base) belongs to, if any.
    pub fn matching(verb: Verb, path: &str) -> Option<Route> {
        let parts: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        ALL.iter().copied().find(|r| {
            r.verb == verb
                && r.segments().count() == parts.len()
                && r.segments().zip(&parts).all(|(t, p)| t.is_err() || t == Ok(*p))
        })
    }
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.verb.as_str(), self.path)
    }
}

pub const LIST_ORGS: Route = Route::new(Verb::Get, "/organization");
pub const CREATE_ORG: Route = Route::new(Verb::Post, "/organization");
pub const GET_ORG: Route = Route::new(Verb::Get, "/organization/{id}");
pub const DELETE_ORG: Route = Route::new(Verb::Delete, "/organization/{id}");
pub const LIST_PROPERTY_KEYS: Route = Route::new(Verb::Get, "/organization/{id}/property");
pub const GET_PROPERTY: Route = Route::new(Verb::Get, "/organization/{id}/property/{key}");
pub const SET_PROPERTY: Route = Route::new(Verb::Put, "/organization/{id}/property/{key}");
pub const DELETE_PROPERTY: Route = Route::new(Verb::Delete, "/organization/{id}/property/{key}");
pub const LIST_MEMBERS: Route = Route::new(Verb::Get, "/organization/{id}/user");
pub const ADD_MEMBERS: Route = Route::new(Verb::Post, "/organization/{id}/user");
pub const REMOVE_MEMBERS: Route = Route::new(Verb::Delete, "/organization/{id}/user");
pub const LIST_DESKS: Route = Route::new(Verb::Get, "/servicedesk");
pub const LIST_DESK_ORGS: Route = Route::new(Verb::Get, "/servicedesk/{id}/organization");
pub const LINK_ORG: Route = Route::new(Verb::Post, "/servicedesk/{id}/organization");
pub const UNLINK_ORG: Route = Route::new(Verb::Delete, "/servicedesk/{id}/organization");
pub const CREATE_CUSTOMER: Route = Route::new(Verb::Post, "/customer");

/// The Jira platform's user search. Unlike every other route it is not under
/// the JSM API base but beside it: `SITE/rest/api/3/user/search`.
pub const SEARCH_USERS: Route = Route::new(Verb::Get, "/rest/api/3/user/search");

/// Every route the tool calls.
pub const ALL: [Route; 16] = [
    LIST_ORGS,
    CREATE_ORG,
    GET_ORG,
    DELETE_ORG,
    LIST_PROPERTY_KEYS,
    GET_PROPERTY,
    SET_PROPERTY,
    DELETE_PROPERTY,
    LIST_MEMBERS,
    ADD_MEMBERS,
    REMOVE_MEMBERS,
    LIST_DESKS,
    LIST_DESK_ORGS,
    LINK_ORG,
    UNLINK_ORG,
    CREATE_CUSTOMER,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_display_and_match_concrete_paths() {
        assert_eq!(SET_PROPERTY.to_string(), "PUT /organization/{id}/property/{key}");
        assert_eq!(Route::matching(Verb::Put, "/organization/7/property/a.b"), Some(SET_PROPERTY));
        assert_eq!(Route::matching(Verb::Get, "/organization"), Some(LIST_ORGS));
        assert_eq!(Route::matching(Verb::Post, "/servicedesk/SD/organization/"), Some(LINK_ORG));
        assert_eq!(Route::matching(Verb::Put, "/organization/7"), None);
        assert_eq!(GET_PROPERTY.describe(&[&7, &"a b"]), "GET /organization/7/property/a b");
        assert_eq!(LIST_DESKS.describe(&[]), "GET /servicedesk");
        let segs: Vec<_> = GET_PROPERTY.segments().collect();
        assert_eq!(segs, [Ok("organization"), Err("id"), Ok("property"), Err("key")]);
    }

    #[test]
    fn every_route_is_listed_once() {
        let mut seen = std::collections::HashSet::new();
        assert!(ALL.iter().all(|r| seen.insert(*r)));
        assert_eq!(Verb::parse("put"), Some(Verb::Put));
    }
}
