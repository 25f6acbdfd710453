//! The sandbox's error answers, always in JSM's `ErrorResponse` shape:
//! `{"errorMessage": "...", "i18nErrorMessage": {"i18nKey": "...", "parameters": []}}`.
//!
//! Owns the status, message and i18n key of every refusal so that handlers
//! and the site model speak one vocabulary; it must not decide *when* to
//! refuse (that is `store` and `http`).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

/// One refusal, rendered as an `ErrorResponse`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ApiError {
    pub status: StatusCode,
    pub message: String,
    pub i18n_key: &'static str,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>, i18n_key: &'static str) -> Self {
        ApiError { status, message: message.into(), i18n_key }
    }

    pub fn bad_request(message: impl Into<String>, i18n_key: &'static str) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message, i18n_key)
    }

    pub fn org_not_found(id: u64) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            format!("The organization with id {id} does not exist."),
            "sd.organization.error.not.found",
        )
    }

    pub fn invalid_org_id(raw: &str) -> Self {
        Self::bad_request(
            format!("The organization id {raw:?} is invalid: it must be an integer."),
            "sd.organization.error.invalid.id",
        )
    }

    pub fn property_not_found(org: u64, key: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            format!("The property {key:?} does not exist on organization {org}."),
            "jira.properties.service.property.not.found",
        )
    }

    pub fn desk_not_found(id: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            format!("The service desk {id:?} does not exist."),
            "sd.servicedesk.error.not.found",
        )
    }

    pub fn unknown_users(ids: &[&str]) -> Self {
        Self::bad_request(
            format!("One or more usernames are unknown: {}. No user was added or removed.", ids.join(", ")),
            "sd.customer.organization.error.unknown.users",
        )
    }

    pub fn invalid_body(detail: impl std::fmt::Display) -> Self {
        Self::bad_request(format!("The request body is invalid: {detail}"), "sd.request.error.invalid.body")
    }

    pub fn no_route(method: &str, path: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, format!("No resource matches {method} {path}."), "sd.rest.error.not.found")
    }

    pub fn method_not_allowed(method: &str, path: &str) -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{method} is not supported on {path}."),
            "sd.rest.error.method.not.allowed",
        )
    }

    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "You are not logged in: the credentials are missing or wrong.",
            "sd.rest.error.not.authenticated",
        )
    }

    pub fn rate_limited() -> Self {
        Self::new(StatusCode::TOO_MANY_REQUESTS, "Rate limit exceeded.", "sd.rest.error.rate.limited")
    }

    pub fn injected_failure() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "The service is temporarily unavailable (injected by the sandbox).",
            "sd.rest.error.unavailable",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({
            "errorMessage": self.message,
            "i18nErrorMessage": { "i18nKey": self.i18n_key, "parameters": [] },
        });
        (self.status, Json(body)).into_response()
    }
}
