//! The operations of the JSM organization API, one typed method each, and
//! the paging that reads a whole list.
//!
//! Each method names its route template (`routes`) and what a success looks
//! like; sending, retrying, pacing and checking the answer are
//! [`Client::call`]'s job (`client.rs`), so nothing here touches HTTP headers,
//! the throttle or credentials.

use reqwest::StatusCode;
use serde::de::DeserializeOwned;
use url::Url;

use super::answer::Expect;
use super::client::{json, Body, Called, Client, PropertyWrite, PAGE_LIMIT};
use super::error::{ApiError, ErrorKind};
use super::models::*;
use crate::routes::{self, Route};

impl Client {
    // ----- organizations -----------------------------------------------

    /// `GET /organization?start&limit`.
    pub async fn organizations_page(&self, start: u64, limit: u64) -> Result<Called<Page<Organization>>, ApiError> {
        self.get_json(routes::LIST_ORGS, self.url(routes::LIST_ORGS, &[], &paging(start, limit))?).await
    }

    /// Every organization, following `isLastPage`.
    pub async fn all_organizations(&self) -> Result<Called<Vec<Organization>>, ApiError> {
        collect_pages(|o: &Organization| o.id, |start| self.page_at(routes::LIST_ORGS, &[], start)).await
    }

    /// `GET API/segments?start&limit`, with the URL it asked (for errors).
    fn page_at<T: DeserializeOwned>(
        &self,
        route: Route,
        args: &[&str],
        start: u64,
    ) -> impl std::future::Future<Output = Result<(Url, Called<Page<T>>), ApiError>> + '_ {
        let url = self.url(route, args, &paging(start, PAGE_LIMIT));
        async move {
            let url = url?;
            Ok((url.clone(), self.get_json(route, url).await?))
        }
    }

    /// `POST /organization` — idempotent by name on JSM Cloud.
    pub async fn create_organization(&self, name: &str) -> Result<Called<Organization>, ApiError> {
        let body = serde_json::to_vec(&CreateOrganization { name }).expect("serializable");
        let url = self.url(routes::CREATE_ORG, &[], &[])?;
        self.call(routes::CREATE_ORG, url, Body::Json(body), Expect::CREATE, |_, b| json(b)).await
    }

    /// `GET /organization/{id}`.
    pub async fn organization(&self, id: u64) -> Result<Called<Organization>, ApiError> {
        self.get_json(routes::GET_ORG, self.url(routes::GET_ORG, &[&id.to_string()], &[])?).await
    }

    /// `DELETE /organization/{id}`.
    pub async fn delete_organization(&self, id: u64) -> Result<Called<()>, ApiError> {
        let url = self.url(routes::DELETE_ORG, &[&id.to_string()], &[])?;
        self.send_no_content(routes::DELETE_ORG, url, Body::None).await
    }

    // ----- properties ---------------------------------------------------

    /// `GET /organization/{id}/property`.
    pub async fn property_keys(&self, id: u64) -> Result<Called<Vec<String>>, ApiError> {
        let url = self.url(routes::LIST_PROPERTY_KEYS, &[&id.to_string()], &[])?;
        let keys: Called<PropertyKeys> = self.get_json(routes::LIST_PROPERTY_KEYS, url).await?;
        Ok(keys.map(|k| k.keys.into_iter().map(|k| k.key).collect()))
    }

    /// `GET /organization/{id}/property/{key}`.
    pub async fn property(&self, id: u64, key: &str) -> Result<Called<EntityProperty>, ApiError> {
        self.get_json(routes::GET_PROPERTY, self.url(routes::GET_PROPERTY, &[&id.to_string(), key], &[])?).await
    }

    /// `PUT /organization/{id}/property/{key}` with the raw JSON value as body.
    pub async fn set_property(
        &self,
        id: u64,
        key: &str,
        value: &serde_json::Value,
    ) -> Result<Called<PropertyWrite>, ApiError> {
        let url = self.url(routes::SET_PROPERTY, &[&id.to_string(), key], &[])?;
        let body = serde_json::to_vec(value).expect("serializable");
        self.call(routes::SET_PROPERTY, url, Body::Json(body), Expect::PUT, |status, _| {
            Ok(if status == StatusCode::CREATED { PropertyWrite::Created } else { PropertyWrite::Updated })
        })
        .await
    }

    /// `DELETE /organization/{id}/property/{key}`.
    pub async fn delete_property(&self, id: u64, key: &str) -> Result<Called<()>, ApiError> {
        let url = self.url(routes::DELETE_PROPERTY, &[&id.to_string(), key], &[])?;
        self.send_no_content(routes::DELETE_PROPERTY, url, Body::None).await
    }

    // ----- members ------------------------------------------------------

    /// `GET /organization/{id}/user?start&limit` (ordered by accountId).
    pub async fn users_page(&self, id: u64, start: u64, limit: u64) -> Result<Called<Page<User>>, ApiError> {
        let url = self.url(routes::LIST_MEMBERS, &[&id.to_string()], &paging(start, limit))?;
        self.get_json(routes::LIST_MEMBERS, url).await
    }

    /// Every member of an organization.
    pub async fn all_users(&self, id: u64) -> Result<Called<Vec<User>>, ApiError> {
        let id = id.to_string();
        collect_pages(|u: &User| u.account_id.clone(), |start| self.page_at(routes::LIST_MEMBERS, &[&id], start)).await
    }

    /// `POST /organization/{id}/user {"accountIds": [...]}`.
    pub async fn add_users(&self, id: u64, account_ids: &[String]) -> Result<Called<()>, ApiError> {
        let body = serde_json::to_vec(&AccountIds { account_ids }).expect("serializable");
        let url = self.url(routes::ADD_MEMBERS, &[&id.to_string()], &[])?;
        self.send_no_content(routes::ADD_MEMBERS, url, Body::Json(body)).await
    }

    /// `DELETE /organization/{id}/user {"accountIds": [...]}`.
    pub async fn remove_users(&self, id: u64, account_ids: &[String]) -> Result<Called<()>, ApiError> {
        let body = serde_json::to_vec(&AccountIds { account_ids }).expect("serializable");
        let url = self.url(routes::REMOVE_MEMBERS, &[&id.to_string()], &[])?;
        self.send_no_content(routes::REMOVE_MEMBERS, url, Body::Json(body)).await
    }

    // ----- service desks ------------------------------------------------

    /// `GET /servicedesk?start&limit`.
    pub async fn service_desks_page(&self, start: u64, limit: u64) -> Result<Called<Page<ServiceDesk>>, ApiError> {
        self.get_json(routes::LIST_DESKS, self.url(routes::LIST_DESKS, &[], &paging(start, limit))?).await
    }

    /// Every service desk.
    pub async fn all_service_desks(&self) -> Result<Called<Vec<ServiceDesk>>, ApiError> {
        collect_pages(|d: &ServiceDesk| d.id.clone(), |start| self.page_at(routes::LIST_DESKS, &[], start)).await
    }

    /// `GET /servicedesk/{sd}/organization?start&limit`.
    pub async fn desk_organizations_page(
        &self,
        desk: &str,
        start: u64,
        limit: u64,
    ) -> Result<Called<Page<Organization>>, ApiError> {
        let url = self.url(routes::LIST_DESK_ORGS, &[desk], &paging(start, limit))?;
        self.get_json(routes::LIST_DESK_ORGS, url).await
    }

    /// Every organization linked to a service desk.
    pub async fn all_desk_organizations(&self, desk: &str) -> Result<Called<Vec<Organization>>, ApiError> {
        collect_pages(|o: &Organization| o.id, |start| self.page_at(routes::LIST_DESK_ORGS, &[desk], start)).await
    }

    /// `POST /servicedesk/{sd}/organization {"organizationId": id}`.
    pub async fn link_organization(&self, desk: &str, id: u64) -> Result<Called<()>, ApiError> {
        let body = serde_json::to_vec(&OrganizationIdBody { organization_id: id }).expect("serializable");
        let url = self.url(routes::LINK_ORG, &[desk], &[])?;
        self.send_no_content(routes::LINK_ORG, url, Body::Json(body)).await
    }

    /// `DELETE /servicedesk/{sd}/organization {"organizationId": id}`.
    pub async fn unlink_organization(&self, desk: &str, id: u64) -> Result<Called<()>, ApiError> {
        let body = serde_json::to_vec(&OrganizationIdBody { organization_id: id }).expect("serializable");
        let url = self.url(routes::UNLINK_ORG, &[desk], &[])?;
        self.send_no_content(routes::UNLINK_ORG, url, Body::Json(body)).await
    }
}

/// Follow pages until `isLastPage`, advancing `start` by the number of values
/// received (servers cap `limit` silently). Attempts are summed. Paging must
/// make progress: an empty page that is not the last, or a page that brings
/// nothing new (`key` names an item; a server ignoring `start` repeats its
/// first page), is an error naming the endpoint, never a short or endless
/// list. An item listed twice (the list shifted) is kept once.
pub async fn collect_pages<T, K, F, Fut>(key: impl Fn(&T) -> K, mut fetch: F) -> Result<Called<Vec<T>>, ApiError>
where
    K: std::hash::Hash + Eq,
    F: FnMut(u64) -> Fut,
    Fut: std::future::Future<Output = Result<(Url, Called<Page<T>>), ApiError>>,
{
    let mut all = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut start = 0u64;
    let mut attempts = 0u32;
    loop {
        let (url, page) = fetch(start).await.map_err(|e| ApiError { attempts: attempts + e.attempts, ..e })?;
        attempts += page.attempts;
        let n = page.value.values.len() as u64;
        let last = page.value.is_last_page;
        let before = all.len();
        all.extend(page.value.values.into_iter().filter(|v| seen.insert(key(v))));
        if last {
            return Ok(Called { value: all, status: page.status, attempts });
        }
        let stuck = match (n, all.len() == before) {
            (0, _) => "an empty page that says it is not the last (isLastPage false)",
            (_, true) => "a page of items already read: the site ignores `start`?",
            _ => {
                start += n;
                continue;
            }
        };
        let call = format!("GET {}?{}", url.path(), url.query().unwrap_or(""));
        let detail = format!("{stuck}; the list cannot be read to its end");
        return Err(ApiError { kind: ErrorKind::Unexpected { status: page.status, call, detail }, attempts });
    }
}

fn paging(start: u64, limit: u64) -> [(&'static str, String); 2] {
    [("start", start.to_string()), ("limit", limit.to_string())]
}
