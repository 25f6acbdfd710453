//! What each call accepts as an answer, checked before any answer counts.
//!
//! Owns the rule that a response is success only when its status *and* its
//! body are what the operation returns: a 200 HTML login page from an SSO
//! proxy or a captive portal is never "done". It classifies, it does not
//! retry or decode (the client does); it never sees request headers.

use super::error::ErrorKind;

/// The success a call expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// A JSON body, with one of these statuses.
    Json(&'static [u16]),
    /// No body (empty, or at most a JSON document), with one of these statuses.
    Empty(&'static [u16]),
    /// Like `Json`, on a route that a site may lack altogether (the Jira
    /// Cloud platform API on Data Center): a 404 of any body, HTML
    /// included, is that absence, a plain status error.
    Probe(&'static [u16]),
}

impl Expect {
    pub const GET: Expect = Expect::Json(&[200]);
    pub const CREATE: Expect = Expect::Json(&[200, 201]);
    pub const PUT: Expect = Expect::Empty(&[200, 201]);
    pub const NO_CONTENT: Expect = Expect::Empty(&[200, 204]);

    fn statuses(self) -> &'static [u16] {
        match self {
            Expect::Json(s) | Expect::Empty(s) | Expect::Probe(s) => s,
        }
    }
}

/// An answer's status line and body, as far as checking needs them.
pub struct Answer<'a> {
    pub status: u16,
    pub content_type: Option<&'a str>,
    pub location: Option<&'a str>,
    pub body: &'a [u8],
}

/// Check an answer against what `call` ("PUT /rest/...") expects. `Ok` only
/// for an expected success status with an acceptable body; `Err(None)` for a
/// non-success status that the caller classifies itself (error body,
/// `Retry-After`); `Err(Some(kind))` for everything this module decides.
pub fn check(expect: Expect, call: &str, a: &Answer<'_>) -> Result<(), Option<ErrorKind>> {
    let status = a.status;
    if (300..=399).contains(&status) {
        let location = a.location.unwrap_or("nowhere (no Location header)").to_string();
        return Err(Some(ErrorKind::Redirect { status, location, call: call.to_string() }));
    }
    // 401/403 keep their hint and 429/5xx their retry: an HTML page there
    // is a gateway's error page, which the status already says.
    let own_status =
        matches!(status, 401 | 403 | 429 | 500..=599) || (status == 404 && matches!(expect, Expect::Probe(_)));
    if !own_status && looks_like_html(a.content_type, a.body) {
        return Err(Some(ErrorKind::Html { status, call: call.to_string() }));
    }
    if !(200..=299).contains(&status) {
        return Err(None);
    }
    let unexpected = |detail: String| Err(Some(ErrorKind::Unexpected { status, call: call.to_string(), detail }));
    if !expect.statuses().contains(&status) {
        let want: Vec<String> = expect.statuses().iter().map(u16::to_string).collect();
        return unexpected(format!("the call answers HTTP {}", want.join(" or ")));
    }
    if let Expect::Empty(_) = expect {
        let body = a.body.trim_ascii();
        if !body.is_empty() && serde_json::from_slice::<serde::de::IgnoredAny>(body).is_err() {
            let ct = a.content_type.unwrap_or("no content type");
            return unexpected(format!("a {}-byte body ({ct}) where the call answers no body", a.body.len()));
        }
    }
    Ok(())
}

/// An HTML document, by content type or by its first bytes.
pub fn looks_like_html(content_type: Option<&str>, body: &[u8]) -> bool {
    if content_type.is_some_and(|ct| ct.to_ascii_lowercase().contains("html")) {
        return true;
    }
    let body = body.strip_prefix(b"\xef\xbb\xbf").unwrap_or(body).trim_ascii_start();
    let head = &body[..body.len().min(16)];
    let lower = head.to_ascii_lowercase();
    [&b"<!doctype html"[..], b"<html", b"<head", b"<body", b"<!--"].iter().any(|p| lower.starts_with(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer<'a>(status: u16, ct: Option<&'a str>, body: &'a [u8]) -> Answer<'a> {
        Answer { status, content_type: ct, location: None, body }
    }

    #[test]
    fn a_200_html_page_is_never_success() {
        let page = b"  <!DOCTYPE html><html><body>Sign in</body></html>";
        for expect in [Expect::GET, Expect::CREATE, Expect::PUT, Expect::NO_CONTENT] {
            let e = check(expect, "PUT /x", &answer(200, Some("text/html; charset=utf-8"), page)).unwrap_err();
            assert!(matches!(e, Some(ErrorKind::Html { status: 200, .. })), "{e:?}");
            // Sniffed without a content type too.
            let e = check(expect, "PUT /x", &answer(200, None, page)).unwrap_err();
            assert!(matches!(e, Some(ErrorKind::Html { .. })), "{e:?}");
        }
        let e = check(Expect::PUT, "PUT /rest/x", &answer(200, Some("text/html"), b"")).unwrap_err().unwrap();
        assert_eq!(e.to_string(), "the site answered an HTML page (a login or proxy page?) to PUT /rest/x (HTTP 200)");
        assert!(e.is_fatal() && !e.is_transient());
    }

    #[test]
    fn no_content_calls_accept_nothing_but_nothing_or_json() {
        assert!(check(Expect::NO_CONTENT, "c", &answer(204, None, b"")).is_ok());
        assert!(check(Expect::NO_CONTENT, "c", &answer(200, Some("application/json"), b"{}")).is_ok());
        let e = check(Expect::NO_CONTENT, "c", &answer(200, Some("text/plain"), b"OK")).unwrap_err().unwrap();
        assert!(matches!(e, ErrorKind::Unexpected { .. }) && !e.is_transient(), "{e:?}");
        let e = check(Expect::NO_CONTENT, "c", &answer(202, None, b"")).unwrap_err().unwrap();
        assert!(e.to_string().contains("answers HTTP 200 or 204"), "{e}");
    }

    #[test]
    fn redirects_name_their_location_and_errors_are_left_to_the_caller() {
        let a = Answer { status: 302, content_type: None, location: Some("https://sso.example/login"), body: b"" };
        let e = check(Expect::GET, "GET /x", &a).unwrap_err().unwrap();
        assert!(e.to_string().contains("https://sso.example/login"), "{e}");
        assert!(e.is_fatal());
        assert_eq!(check(Expect::GET, "c", &answer(404, Some("application/json"), b"{}")), Err(None));
        assert_eq!(check(Expect::GET, "c", &answer(502, Some("text/html"), b"<html>")), Err(None));
        assert_eq!(check(Expect::Probe(&[200]), "c", &answer(404, Some("text/html"), b"<html>")), Err(None));
        let e = check(Expect::GET, "c", &answer(404, Some("text/html"), b"<html>")).unwrap_err().unwrap();
        assert!(matches!(e, ErrorKind::Html { status: 404, .. }), "an HTML 404 is not 'not found'");
    }
}
