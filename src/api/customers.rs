//! People: the Jira platform's user search (`GET /rest/api/3/user/search`)
//! and JSM's create-customer call (`POST /rest/servicedeskapi/customer`).
//!
//! Owns their URLs and request shapes (both answer with [`User`]s, whose
//! `emailAddress` is absent where privacy settings hide it). The user
//! search is the platform API on the same site base as the JSM API
//! (`SITE/rest/api/3`, also under `https://api.atlassian.com/ex/jira/{cloudId}`). It must not decide what a
//! search result means (which user an email names, when to create one):
//! that is `resolve`'s business.

use serde::Serialize;
use url::Url;

use super::answer::Expect;
use super::client::{json, Body, Called, Client};
use super::error::{ApiError, ErrorKind};
use super::models::User;
use crate::routes::{CREATE_CUSTOMER, SEARCH_USERS};

/// Users asked for per search page.
pub const SEARCH_PAGE: u64 = 50;
/// Pages of one search followed at most (an email query matches few people).
const MAX_SEARCH_PAGES: u64 = 20;

/// Body of `POST /customer`.
#[derive(Debug, Serialize)]
pub struct CustomerCreate<'a> {
    pub email: &'a str,
    #[serde(rename = "displayName")]
    pub display_name: &'a str,
}

impl Client {
    /// `SITE/SEGMENTS?QUERY`: a route beside the JSM API (whose base is
    /// `SITE/rest/servicedeskapi`).
    fn platform_url(&self, segments: &[&str], query: &[(&str, String)]) -> Result<Url, ApiError> {
        let mut url = self.api_base().clone();
        {
            let mut path = url.path_segments_mut().map_err(|_| ApiError {
                kind: ErrorKind::Local("the site URL cannot be a base".into()),
                attempts: 0,
            })?;
            path.pop().pop().extend(segments);
        }
        if !query.is_empty() {
            let mut q = url.query_pairs_mut();
            for (k, v) in query {
                q.append_pair(k, v);
            }
        }
        Ok(url)
    }

    /// `GET /rest/api/3/user/search?query&startAt&maxResults`: users whose
    /// display name or email starts with `query`.
    pub async fn search_users_page(&self, query: &str, start: u64, max: u64) -> Result<Called<Vec<User>>, ApiError> {
        let params = [("query", query.to_string()), ("startAt", start.to_string()), ("maxResults", max.to_string())];
        let segments: Vec<&str> = SEARCH_USERS.segments().filter_map(Result::ok).collect();
        let url = self.platform_url(&segments, &params)?;
        self.call(SEARCH_USERS, url, Body::None, Expect::Probe(&[200]), |_, b| json(b)).await
    }

    /// Every user the search finds for `query`: pages are followed while
    /// they come back full (the search has no `isLastPage`). Attempts are
    /// summed.
    pub async fn search_users(&self, query: &str) -> Result<Called<Vec<User>>, ApiError> {
        let mut all = Vec::new();
        let mut attempts = 0;
        for page in 0..MAX_SEARCH_PAGES {
            let got = self
                .search_users_page(query, page * SEARCH_PAGE, SEARCH_PAGE)
                .await
                .map_err(|e| ApiError { attempts: attempts + e.attempts, ..e })?;
            attempts += got.attempts;
            let n = got.value.len() as u64;
            all.extend(got.value);
            if n < SEARCH_PAGE {
                return Ok(Called { value: all, status: got.status, attempts });
            }
        }
        Ok(Called { value: all, status: 200, attempts })
    }

    /// `POST /rest/servicedeskapi/customer?strictConflictStatusCode=true`
    /// `{email, displayName}`: a new portal-only customer (201). An email
    /// the site already has answers 409.
    pub async fn create_customer(&self, email: &str, display_name: &str) -> Result<Called<User>, ApiError> {
        let url = self.url(CREATE_CUSTOMER, &[], &[("strictConflictStatusCode", "true".to_string())])?;
        let body = serde_json::to_vec(&CustomerCreate { email, display_name }).expect("serializable");
        self.call(CREATE_CUSTOMER, url, Body::Json(body), Expect::Json(&[201]), |_, b| json(b)).await
    }
}
