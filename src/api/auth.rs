//! Credentials: the two schemes (Basic with a Cloud API token, Bearer with an
//! OAuth 2.0 token or a Data Center PAT), the `Authorization` header built
//! from them, and the redaction of every form in which a server or proxy could
//! echo the credential back.
//!
//! Owns the secret and never lets it out: `Debug` hides it, the header value is
//! marked sensitive, and [`redact`] cuts the token (raw, base64, percent- and
//! JSON-escaped) out of any text that came from the network before it can
//! reach a log, a report or an error message. It must not log anything.

use reqwest::header::HeaderValue;

use super::error::ErrorKind;
use super::path;

/// Credentials. `Debug` never shows the secret.
#[derive(Clone)]
pub enum Auth {
    /// Cloud API token: `Basic base64(email:token)`.
    Basic { email: String, token: String },
    /// OAuth 2.0 access token or Data Center personal access token.
    Bearer { token: String },
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Auth::Basic { email, .. } => write!(f, "Basic({email}, token: [redacted])"),
            Auth::Bearer { .. } => write!(f, "Bearer([redacted])"),
        }
    }
}

impl Auth {
    /// Every form in which this credential could be echoed back by a server
    /// or a proxy: the token itself and the encoded Basic pair.
    pub(super) fn secrets(&self) -> Vec<String> {
        use base64::Engine as _;
        let (token, pair) = match self {
            Auth::Basic { email, token } => (token, Some(format!("{email}:{token}"))),
            Auth::Bearer { token } => (token, None),
        };
        let mut raw = vec![token.clone()];
        raw.extend(pair.clone());
        // Base64 of the token and of the Basic pair, in every alphabet and
        // padding a server or a proxy might print.
        let engines = [
            base64::engine::general_purpose::STANDARD,
            base64::engine::general_purpose::STANDARD_NO_PAD,
            base64::engine::general_purpose::URL_SAFE,
            base64::engine::general_purpose::URL_SAFE_NO_PAD,
        ];
        for text in std::iter::once(token).chain(pair.as_ref()) {
            raw.extend(engines.iter().map(|e| e.encode(text)));
        }
        // Each of those as it appears percent-encoded (upper or lower hex,
        // reserved characters or every non-alphanumeric) or JSON-escaped.
        let mut v = Vec::new();
        for s in raw {
            for set in [percent_encoding::NON_ALPHANUMERIC, path::SEGMENT] {
                let enc = percent_encoding::utf8_percent_encode(&s, set).to_string();
                v.push(lower_hex(&enc));
                v.push(enc);
            }
            let json = serde_json::to_string(&s).expect("a string serializes");
            let json = json[1..json.len() - 1].to_string();
            v.push(json.replace('/', "\\/"));
            v.push(json);
            v.push(s);
        }
        // Too short to search for without mangling ordinary text; longest
        // first, so that no form is left half-replaced.
        v.retain(|s| s.len() >= 4);
        v.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        v.dedup();
        v
    }

    pub(super) fn header(&self) -> Result<HeaderValue, ErrorKind> {
        use base64::Engine as _;
        let raw = match self {
            Auth::Basic { email, token } => {
                let b64 = base64::engine::general_purpose::STANDARD.encode(format!("{email}:{token}"));
                format!("Basic {b64}")
            }
            Auth::Bearer { token } => format!("Bearer {token}"),
        };
        let mut v = HeaderValue::from_str(&raw)
            .map_err(|_| ErrorKind::Local("the credential contains characters not allowed in an HTTP header".into()))?;
        v.set_sensitive(true);
        Ok(v)
    }
}

/// Replace every listed form of the credential with `[redacted]`.
pub(super) fn redact(secrets: &[String], mut text: String) -> String {
    for secret in secrets {
        if text.contains(secret.as_str()) {
            text = text.replace(secret.as_str(), "[redacted]");
        }
    }
    text
}

/// `%2F` → `%2f`: percent-encoded text as servers that print lower hex show it.
fn lower_hex(encoded: &str) -> String {
    let mut out = String::with_capacity(encoded.len());
    let mut rest = encoded;
    while let Some(i) = rest.find('%') {
        out.push_str(&rest[..i]);
        let end = (i + 3).min(rest.len());
        out.push_str(&rest[i..end].to_ascii_lowercase());
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echoes_of_the_credential_are_redacted_in_every_encoding() {
        use base64::Engine as _;
        let token = "t/k+n=1\"é x";
        let auth = Auth::Basic { email: "a@b.c".into(), token: token.into() };
        let secrets = auth.secrets();
        let b64 = base64::engine::general_purpose::STANDARD.encode(format!("a@b.c:{token}"));
        let url_b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(token);
        let pct = percent_encoding::utf8_percent_encode(token, percent_encoding::NON_ALPHANUMERIC).to_string();
        let json = serde_json::to_string(token).unwrap();
        let forms = [
            token.to_string(),
            b64.clone(),
            url_b64,
            pct.clone(),
            pct.to_ascii_lowercase(),
            json[1..json.len() - 1].to_string(),
            serde_json::to_string(&b64).unwrap().replace('/', "\\/"),
            percent_encoding::utf8_percent_encode(&b64, percent_encoding::NON_ALPHANUMERIC).to_string(),
        ];
        for form in forms {
            let out = redact(&secrets, format!("echo: <{form}> end"));
            assert_eq!(out.matches("[redacted]").count(), 1, "{form:?} -> {out}");
            assert!(!out.contains("t/k") && !out.contains("1%22") && !out.contains(&b64[..8]), "{form:?} -> {out}");
        }
        assert_eq!(redact(&secrets, "nothing here".into()), "nothing here");
    }

    #[test]
    fn auth_debug_hides_secrets() {
        let a = Auth::Basic { email: "a@b.c".into(), token: "s3cr3t".into() };
        let b = Auth::Bearer { token: "t0k3n".into() };
        assert!(!format!("{a:?}{b:?}").contains("s3cr3t"));
        assert!(!format!("{a:?}{b:?}").contains("t0k3n"));
    }
}
