//! Reading a snapshot directory into seed records for `sandbox --seed DIR`.
//!
//! Owns the tolerant reading of what `export` writes: for each of the four
//! data files, `NAME.jsonl` or else `NAME.csv` (a missing file is an empty
//! one); in CSV a property `value` and an organization `created` are JSON
//! text, and when `manifest.json` says `"csv_formula_escape": "apostrophe"`
//! every cell that starts with `'` loses that one quote. It must not write
//! anything or talk to the network, and it refuses a malformed line with its
//! file and line number rather than seeding a site that differs from the
//! snapshot.

use std::collections::HashMap;
use std::fs;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::store::SeedRecords;
use crate::model::{self, DeskLinkRecord, MemberRecord, OrgRecord, PropertyRecord};

/// Reads every data file of a snapshot directory.
pub(crate) fn load(dir: &Path) -> Result<SeedRecords> {
    if !dir.is_dir() {
        bail!("seed directory {} does not exist", dir.display());
    }
    let unescape = apostrophe_escaped(dir)?;
    Ok(SeedRecords {
        organizations: load_kind(dir, "organizations", unescape, org_from_csv)?,
        members: load_kind(dir, "members", unescape, member_from_csv)?,
        properties: load_kind(dir, "properties", unescape, property_from_csv)?,
        service_desks: load_kind(dir, "service_desks", unescape, link_from_csv)?,
    })
}

/// Whether the manifest declares apostrophe-escaped CSV formulas.
fn apostrophe_escaped(dir: &Path) -> Result<bool> {
    let path = dir.join("manifest.json");
    let Ok(text) = fs::read_to_string(&path) else {
        return Ok(false);
    };
    model::manifest_escapes_formulas(&text).with_context(|| format!("{} is not valid JSON", path.display()))
}

fn strip_bom(s: &str) -> &str {
    s.strip_prefix('\u{feff}').unwrap_or(s)
}

type FromCsv<T> = fn(&Row) -> Result<T>;

fn load_kind<T: DeserializeOwned>(dir: &Path, name: &str, unescape: bool, from_csv: FromCsv<T>) -> Result<Vec<T>> {
    let jsonl = dir.join(format!("{name}.jsonl"));
    if jsonl.is_file() {
        return read_jsonl(&jsonl);
    }
    let csv = dir.join(format!("{name}.csv"));
    if csv.is_file() {
        return read_csv(&csv, unescape, from_csv);
    }
    Ok(Vec::new())
}

fn read_jsonl<T: DeserializeOwned>(path: &Path) -> Result<Vec<T>> {
    let text = fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    strip_bom(&text)
        .lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(i, line)| {
            serde_json::from_str(line).with_context(|| format!("{}:{}: invalid record", path.display(), i + 1))
        })
        .collect()
}

/// One CSV data row, cells looked up by header name.
struct Row<'a> {
    columns: &'a HashMap<String, usize>,
    cells: Vec<String>,
}

impl Row<'_> {
    /// The cell, `None` when the column is absent or the cell empty.
    fn get(&self, column: &str) -> Option<&str> {
        self.columns.get(column).and_then(|i| self.cells.get(*i)).map(String::as_str).filter(|s| !s.is_empty())
    }

    fn required(&self, column: &str) -> Result<&str> {
        self.get(column).ok_or_else(|| anyhow!("missing {column}"))
    }

    fn id(&self, column: &str) -> Result<u64> {
        let raw = self.required(column)?;
        raw.trim().parse().map_err(|_| anyhow!("{column} {raw:?} is not an integer"))
    }
}

fn read_csv<T>(path: &Path, unescape: bool, from_csv: FromCsv<T>) -> Result<Vec<T>> {
    let text = fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut reader = csv::ReaderBuilder::new().flexible(true).from_reader(strip_bom(&text).as_bytes());
    let columns: HashMap<String, usize> = reader
        .headers()
        .with_context(|| format!("{}: unreadable header", path.display()))?
        .iter()
        .enumerate()
        .map(|(i, h)| (h.trim().to_string(), i))
        .collect();
    let mut out = Vec::new();
    for record in reader.records() {
        let record = record.with_context(|| format!("{}: unreadable row", path.display()))?;
        let line = record.position().map_or(0, |p| p.line());
        let cells = record
            .iter()
            .map(|cell| if unescape { model::unescape_formula(cell).to_string() } else { cell.to_string() })
            .collect::<Vec<_>>();
        if cells.iter().all(String::is_empty) {
            continue;
        }
        let row = Row { columns: &columns, cells };
        out.push(from_csv(&row).with_context(|| format!("{}:{line}", path.display()))?);
    }
    Ok(out)
}

fn org_from_csv(row: &Row) -> Result<OrgRecord> {
    let scim_managed = match row.get("scim_managed") {
        None => None,
        Some(s) => Some(s.trim().parse::<bool>().map_err(|_| anyhow!("scim_managed {s:?} is not true or false"))?),
    };
    Ok(OrgRecord {
        id: row.id("id")?,
        name: row.required("name")?.to_string(),
        uuid: row.get("uuid").map(str::to_string),
        scim_managed,
        // JSON text when it parses (the DateDTO object), else the raw text.
        created: row.get("created").map(|s| serde_json::from_str(s).unwrap_or_else(|_| Value::String(s.to_string()))),
    })
}

fn member_from_csv(row: &Row) -> Result<MemberRecord> {
    Ok(MemberRecord {
        organization: row.get("organization").unwrap_or_default().to_string(),
        organization_id: row.id("organization_id")?,
        account_id: row.required("account_id")?.to_string(),
        email: row.get("email").map(str::to_string),
        display_name: row.get("display_name").map(str::to_string),
    })
}

fn property_from_csv(row: &Row) -> Result<PropertyRecord> {
    let raw = row.required("value")?;
    Ok(PropertyRecord {
        organization: row.get("organization").unwrap_or_default().to_string(),
        organization_id: row.id("organization_id")?,
        key: row.required("key")?.to_string(),
        value: serde_json::from_str(raw).map_err(|e| anyhow!("value is not JSON: {e}"))?,
    })
}

fn link_from_csv(row: &Row) -> Result<DeskLinkRecord> {
    Ok(DeskLinkRecord {
        organization: row.get("organization").unwrap_or_default().to_string(),
        organization_id: row.id("organization_id")?,
        service_desk_id: row.required("service_desk_id")?.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_with_apostrophe_escape_and_bom() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            dir.path().join("manifest.json"),
            r#"{"format":"jsm-orgs-snapshot","csv_formula_escape":"apostrophe"}"#,
        )
        .unwrap();
        fs::write(
            dir.path().join("organizations.csv"),
            "\u{feff}id,name,uuid,scim_managed,created\n3,'=SUM(A1),,,\n4,''quoted,u-4,false,\"{\"\"epochMillis\"\":1}\"\n",
        )
        .unwrap();
        fs::write(
            dir.path().join("properties.csv"),
            "organization,organization_id,key,value\n'=SUM(A1),3,k,\"{\"\"a\"\":[1,2]}\"\n",
        )
        .unwrap();
        let seed = load(dir.path()).unwrap();
        assert_eq!(seed.organizations.len(), 2);
        assert_eq!(seed.organizations[0].name, "=SUM(A1)");
        assert_eq!(seed.organizations[0].uuid, None);
        assert_eq!(seed.organizations[1].name, "'quoted");
        assert_eq!(seed.organizations[1].scim_managed, Some(false));
        assert_eq!(seed.organizations[1].created, Some(serde_json::json!({"epochMillis": 1})));
        assert_eq!(seed.properties[0].value, serde_json::json!({"a": [1, 2]}));
        assert!(seed.members.is_empty() && seed.service_desks.is_empty());
    }

    #[test]
    fn bad_jsonl_line_is_named() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("organizations.jsonl"), "{\"id\":1,\"name\":\"A\"}\n\n{\"id\":\"x\"}\n").unwrap();
        let err = format!("{:#}", load(dir.path()).unwrap_err());
        assert!(err.contains("organizations.jsonl:3"), "{err}");
    }
}
