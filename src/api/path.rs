//! Request URLs built from path segments that URL parsing cannot alter.
//!
//! Owns the one rule for turning a property key or a service desk id into a
//! path segment. `url::PathSegmentsMut` strips TAB, CR and LF, drops `.` and
//! `..` and resolves a segment that *becomes* `..` once stripped (`"..\n"`),
//! so a key `a<TAB>b` would be written to key `ab` and `"..\n"` would address
//! another resource. Here every byte but `A-Z a-z 0-9 - . _ ~` is
//! percent-encoded, the segments `.` and `..` (which no encoding can carry:
//! servers resolve `%2E%2E` too) are refused, and the built URL is parsed
//! back and its segments compared with the intended ones before anything is
//! sent. It knows nothing of HTTP, retries or credentials.

use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use url::Url;

/// Everything but the RFC 3986 unreserved characters.
pub(crate) const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// `base` + one path segment per item of `segments`, percent-encoded.
/// Errors name the segment that cannot be sent unaltered.
pub fn join(base: &Url, segments: &[&str]) -> Result<Url, String> {
    if let Some(bad) = segments.iter().find(|s| matches!(**s, "" | "." | "..")) {
        return Err(format!("{bad:?} cannot be sent as a property key or service desk id"));
    }
    let mut path = base.path().trim_end_matches('/').to_string();
    for s in segments {
        path.push('/');
        path.extend(utf8_percent_encode(s, SEGMENT));
    }
    let mut url = base.clone();
    url.set_path(&path);
    check(&url, segments)?;
    Ok(url)
}

/// The last segments of `url`, decoded, must be exactly `segments`.
fn check(url: &Url, segments: &[&str]) -> Result<(), String> {
    let got: Vec<&str> = url.path_segments().map(|s| s.collect()).unwrap_or_default();
    let tail = got.len().checked_sub(segments.len()).map(|start| &got[start..]);
    let same = tail.is_some_and(|tail| {
        tail.iter().zip(segments).all(|(g, want)| percent_decode_str(g).collect::<Vec<u8>>() == want.as_bytes())
    });
    if same {
        Ok(())
    } else {
        let want: Vec<String> = segments.iter().map(|s| format!("{s:?}")).collect();
        Err(format!("the path {} would not address {} exactly: not sent", url.path(), want.join("/")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Url {
        Url::parse("https://x.example/ctx/rest/servicedeskapi").unwrap()
    }

    #[test]
    fn controls_percent_and_separators_are_encoded_not_stripped() {
        for key in ["a\tb", "line\nkey", "cr\rx", "..\n", "\n..", "%2e%2E", "a/b", "a?b#c", "a\\b", "sp ace", "é", "\0"]
        {
            let u = join(&base(), &["organization", "1", "property", key]).unwrap_or_else(|e| panic!("{key:?}: {e}"));
            let last = u.path_segments().unwrap().next_back().unwrap().to_string();
            assert_eq!(percent_decode_str(&last).decode_utf8().unwrap(), key, "{}", u);
            assert!(u.path().starts_with("/ctx/rest/servicedeskapi/organization/1/property/"), "{u}");
        }
    }

    #[test]
    fn every_ascii_byte_round_trips() {
        for b in 0u8..=127 {
            let key = format!("k{}k", b as char);
            let u = join(&base(), &["organization", "1", "property", &key]).unwrap();
            let last = u.path_segments().unwrap().next_back().unwrap();
            assert_eq!(percent_decode_str(last).decode_utf8().unwrap(), key, "byte {b}");
        }
    }

    #[test]
    fn dot_segments_and_empty_segments_are_refused() {
        for key in [".", "..", ""] {
            assert!(join(&base(), &["organization", "1", "property", key]).is_err(), "{key:?}");
        }
        assert!(join(&base(), &["organization", "1", "property", "..."]).is_ok());
    }
}
