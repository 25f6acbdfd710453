//! Snapshot records: the rows of `organizations`, `members`, `properties` and
//! `service_desks` files exactly as the README documents their fields.
//!
//! Owns the on-disk shape shared by `export` (writes them), `sandbox --seed`
//! (reads them) and `import` (restores them). It must not know about HTTP or
//! the API's own JSON shapes (those live in `api::models`), so that the file
//! format can stay stable while the wire format drifts.

use serde::{Deserialize, Serialize};

/// Snapshot format name written to `manifest.json`.
pub const FORMAT_NAME: &str = "jsm-orgs-snapshot";
/// Snapshot format version written to `manifest.json`.
pub const FORMAT_VERSION: u32 = 1;

/// The four data files of a snapshot, in the order they are written.
pub const DATA_FILES: [&str; 4] = ["organizations", "members", "properties", "service_desks"];

/// One organization (`organizations.jsonl`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrgRecord {
    /// Numeric id as the site stores it (a JSON string on the wire).
    pub id: u64,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scim_managed: Option<bool>,
    /// The site's `created` DateDTO, kept verbatim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<serde_json::Value>,
}

/// One membership (`members.jsonl`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemberRecord {
    pub organization: String,
    pub organization_id: u64,
    pub account_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
}

/// One entity property (`properties.jsonl`); `value` is any JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PropertyRecord {
    pub organization: String,
    pub organization_id: u64,
    pub key: String,
    pub value: serde_json::Value,
}

/// One organization ↔ service desk link (`service_desks.jsonl`). The desk's
/// project key and name travel with its id because ids differ between
/// sites: an import resolves the desk by `project_key` first. Snapshots
/// written before they existed have neither.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeskLinkRecord {
    pub organization: String,
    pub organization_id: u64,
    pub service_desk_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project_name: Option<String>,
}

impl DeskLinkRecord {
    /// A link naming its desk by id only (no project key or name).
    pub fn by_id(organization: impl Into<String>, organization_id: u64, service_desk_id: impl Into<String>) -> Self {
        DeskLinkRecord {
            organization: organization.into(),
            organization_id,
            service_desk_id: service_desk_id.into(),
            project_key: None,
            project_name: None,
        }
    }
}

/// The `created` of an organization as ISO-8601 text: the DateDTO's
/// `iso8601` (or `jira`), a bare string as it is, else compact JSON. This is
/// the CSV column (spreadsheets sort it) and what `diff` compares, so a CSV
/// and a JSONL snapshot of one site agree.
pub fn created_text(created: &serde_json::Value) -> String {
    use serde_json::Value;
    match created {
        Value::String(s) => s.clone(),
        Value::Object(m) => match m.get("iso8601").or_else(|| m.get("jira")) {
            Some(Value::String(s)) => s.clone(),
            _ => created.to_string(),
        },
        other => other.to_string(),
    }
}

/// Value of `csv_formula_escape` in `manifest.json` for CSV snapshots whose
/// cells went through [`escape_formula`] (read by `snapshot::manifest`).
pub const CSV_FORMULA_ESCAPE: &str = "apostrophe";

/// Escape a CSV cell that a spreadsheet would run as a formula (first char
/// `=`, `+`, `-`, `@`, tab or CR) by prefixing `'`. A cell that already starts
/// with `'` gets one more, so [`unescape_formula`] restores every cell exactly.
pub fn escape_formula(cell: &str) -> std::borrow::Cow<'_, str> {
    match cell.chars().next() {
        Some('=' | '+' | '-' | '@' | '\t' | '\r' | '\'') => format!("'{cell}").into(),
        _ => cell.into(),
    }
}

/// Undo [`escape_formula`]: drop one leading `'`.
pub fn unescape_formula(cell: &str) -> &str {
    cell.strip_prefix('\'').unwrap_or(cell)
}

/// Undo the export's escape in a CSV that has no manifest beside it (a file
/// copied out of a snapshot, maybe through a spreadsheet): a cell that
/// starts with `'` followed by `=`, `+`, `-`, `@`, tab or CR loses the `'`.
/// Other cells are left as they are (`'quoted` stays `'quoted`).
pub fn unescape_formula_marker(cell: &str) -> &str {
    match cell.strip_prefix('\'') {
        Some(rest) if rest.starts_with(['=', '+', '-', '@', '\t', '\r']) => rest,
        _ => cell,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formula_escape_round_trips_every_cell() {
        for s in ["=SUM(A1)", "+1", "-2", "@x", "\tx", "\rx", "'quoted", "''", "plain", "", "a=b"] {
            assert_eq!(unescape_formula(&escape_formula(s)), s, "{s:?}");
        }
        assert_eq!(escape_formula("=1+1"), "'=1+1");
        assert_eq!(escape_formula("plain"), "plain");
        assert_eq!(escape_formula("'x"), "''x");
    }

    #[test]
    fn a_formula_marker_is_undone_without_a_manifest() {
        for s in ["=SUM(A1)", "+1", "-2", "@x", "\tx", "\rx"] {
            assert_eq!(unescape_formula_marker(&escape_formula(s)), s, "{s:?}");
        }
        for s in ["'quoted", "plain", "'", "", "a'=b"] {
            assert_eq!(unescape_formula_marker(s), s, "{s:?}");
        }
    }

    #[test]
    fn created_text_is_the_iso_string() {
        use serde_json::json;
        assert_eq!(
            created_text(&json!({"iso8601": "2024-01-02T03:04:05+0000", "epochMillis": 1})),
            "2024-01-02T03:04:05+0000"
        );
        assert_eq!(created_text(&json!("2024-01-02")), "2024-01-02");
        assert_eq!(created_text(&json!({"epochMillis": 1})), "{\"epochMillis\":1}");
    }
}
