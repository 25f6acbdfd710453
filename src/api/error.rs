//! Errors of one API call, classified by type so that callers ask
//! `is_transient()` / `is_fatal()` instead of matching strings.
//!
//! Owns the error taxonomy and the hints a response carries for retrying
//! (`Retry-After`, `X-RateLimit-Reset`). It never holds a request's headers, so
//! no credential can leak through an error's `Display` or `Debug`.

use std::time::Duration;

/// What went wrong with one attempt (or with the last attempt of a call).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ErrorKind {
    /// The server answered with a non-success status.
    #[error("HTTP {status}{}", fmt_message(message))]
    Status {
        status: u16,
        /// The server's `errorMessage` (or the body's best text).
        message: String,
        /// `Retry-After`, else `X-RateLimit-Reset`, as a delay from receipt.
        retry_after: Option<Duration>,
    },
    /// No complete response within `--timeout`.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// Connection refused/reset, or the response ended early.
    #[error("connection failed: {0}")]
    Connection(String),
    /// A success status whose body is not the JSON the operation returns.
    #[error("HTTP {status} with an unreadable body: {detail}")]
    Decode { status: u16, detail: String },
    /// An HTML page where the API answers JSON or nothing: a login page, an
    /// SSO or captive-portal proxy, or a `--site` that is not the API base.
    #[error("the site answered an HTML page (a login or proxy page?) to {call} (HTTP {status})")]
    Html { status: u16, call: String },
    /// A redirect. Never followed: the credential would go elsewhere.
    #[error("HTTP {status} redirect to {location} from {call}: redirects are not followed, check --site")]
    Redirect { status: u16, location: String, call: String },
    /// A success status or body that the call does not answer.
    #[error("unexpected answer to {call}: HTTP {status} with {detail}")]
    Unexpected { status: u16, call: String, detail: String },
    /// No attempt could connect for the breaker's whole window.
    #[error("site unreachable: no request could connect for {secs} s (last error: {last})")]
    Unreachable { secs: u64, last: String },
    /// The run was stopped (fatal credential error elsewhere, or Ctrl-C)
    /// before this call could be sent.
    #[error("not sent: {0}")]
    Aborted(String),
    /// The request could not even be built (bad URL, local I/O).
    #[error("{0}")]
    Local(String),
}

fn fmt_message(m: &str) -> String {
    if m.is_empty() {
        String::new()
    } else {
        format!(": {m}")
    }
}

impl ErrorKind {
    /// Worth retrying: 429, 5xx, timeouts, dropped connections and garbled
    /// bodies. Every JSM call is safe to repeat (api-notes.md), so a write
    /// whose response was lost is retried too.
    pub fn is_transient(&self) -> bool {
        match self {
            ErrorKind::Status { status, .. } => *status == 429 || (500..=599).contains(status),
            ErrorKind::Timeout(_) | ErrorKind::Connection(_) | ErrorKind::Decode { .. } => true,
            ErrorKind::Html { .. }
            | ErrorKind::Redirect { .. }
            | ErrorKind::Unexpected { .. }
            | ErrorKind::Unreachable { .. }
            | ErrorKind::Aborted(_)
            | ErrorKind::Local(_) => false,
        }
    }

    /// Credentials or permissions are wrong, or the site answers with a
    /// login/proxy page or a redirect: no further request can succeed, so
    /// the whole run stops (exit 3).
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            ErrorKind::Status { status: 401 | 403, .. }
                | ErrorKind::Html { .. }
                | ErrorKind::Redirect { .. }
                | ErrorKind::Unreachable { .. }
        )
    }

    pub fn is_rate_limited(&self) -> bool {
        matches!(self, ErrorKind::Status { status: 429, .. })
    }

    pub fn status(&self) -> Option<u16> {
        match self {
            ErrorKind::Status { status, .. }
            | ErrorKind::Decode { status, .. }
            | ErrorKind::Html { status, .. }
            | ErrorKind::Redirect { status, .. }
            | ErrorKind::Unexpected { status, .. } => Some(*status),
            _ => None,
        }
    }

    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ErrorKind::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// The final error of a call, with how many attempts it took.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{kind}")]
pub struct ApiError {
    pub kind: ErrorKind,
    pub attempts: u32,
}

impl ApiError {
    pub fn is_transient(&self) -> bool {
        self.kind.is_transient()
    }
    pub fn is_fatal(&self) -> bool {
        self.kind.is_fatal()
    }
    pub fn status(&self) -> Option<u16> {
        self.kind.status()
    }
    /// True for an API 404: the organization, property or desk does not
    /// exist (an HTML 404 page is a wrong route, not "not found").
    pub fn is_not_found(&self) -> bool {
        matches!(self.kind, ErrorKind::Status { status: 404, .. })
    }

    /// Why a fatal error stops the run, for the summary and every row not sent.
    pub fn abort_reason(&self) -> String {
        match self.fatal_hint() {
            Some(h) => h.to_string(),
            None => self.kind.to_string(),
        }
    }
    /// A human explanation for the fatal statuses, naming what to fix.
    pub fn fatal_hint(&self) -> Option<&'static str> {
        if !matches!(self.kind, ErrorKind::Status { .. }) {
            return None;
        }
        match self.status() {
            Some(401) => Some(
                "the site rejected the credentials (401): check JSM_EMAIL + JSM_API_TOKEN, \
                 JSM_BEARER_TOKEN or --token-file, and that --site is the base the token is for \
                 (scoped tokens and OAuth need https://api.atlassian.com/ex/jira/{cloudId})",
            ),
            Some(403) => Some(
                "the account lacks a permission for this call (403): organization changes need \
                 a service desk agent or admin, deleting organizations needs Jira administrator",
            ),
            _ => None,
        }
    }
}

/// Parse a `Retry-After` value: delta-seconds or an HTTP date.
pub fn parse_retry_after(value: &str, now: std::time::SystemTime) -> Option<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<f64>() {
        if secs.is_finite() && secs >= 0.0 {
            return Some(Duration::from_secs_f64(secs.min(86_400.0)));
        }
        return None;
    }
    let when = httpdate::parse_http_date(v).ok()?;
    Some(when.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Parse `X-RateLimit-Reset` (ISO 8601 / RFC 3339) into a delay from `now`.
pub fn parse_reset(value: &str, now: chrono::DateTime<chrono::Utc>) -> Option<Duration> {
    let when = chrono::DateTime::parse_from_rfc3339(value.trim()).ok()?;
    let delta = when.with_timezone(&chrono::Utc) - now;
    Some(delta.to_std().unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(s: u16) -> ErrorKind {
        ErrorKind::Status { status: s, message: String::new(), retry_after: None }
    }

    #[test]
    fn transient_classification_is_by_type() {
        for s in [429, 500, 502, 503, 504] {
            assert!(status(s).is_transient(), "{s}");
        }
        for s in [400, 401, 403, 404, 409, 413] {
            assert!(!status(s).is_transient(), "{s}");
        }
        assert!(ErrorKind::Timeout(Duration::from_secs(1)).is_transient());
        assert!(ErrorKind::Connection("reset".into()).is_transient());
        assert!(ErrorKind::Decode { status: 200, detail: "eof".into() }.is_transient());
        assert!(!ErrorKind::Aborted("x".into()).is_transient());
        assert!(status(401).is_fatal() && status(403).is_fatal() && !status(404).is_fatal());
    }

    #[test]
    fn retry_after_parses_seconds_and_dates() {
        let now = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert_eq!(parse_retry_after("3", now), Some(Duration::from_secs(3)));
        assert_eq!(parse_retry_after(" 0.5 ", now), Some(Duration::from_millis(500)));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(7));
        assert_eq!(parse_retry_after(&later, now), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-1", now), None);
    }

    #[test]
    fn reset_parses_iso8601() {
        let now = chrono::DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z").unwrap().to_utc();
        assert_eq!(parse_reset("2026-01-01T00:00:02.5Z", now), Some(Duration::from_millis(2500)));
        assert_eq!(parse_reset("2025-12-31T23:59:00Z", now), Some(Duration::ZERO));
        assert_eq!(parse_reset("tomorrow", now), None);
    }

    #[test]
    fn display_carries_status_and_message_only() {
        let e = ApiError {
            kind: ErrorKind::Status { status: 400, message: "name too long".into(), retry_after: None },
            attempts: 1,
        };
        assert_eq!(e.to_string(), "HTTP 400: name too long");
    }
}
