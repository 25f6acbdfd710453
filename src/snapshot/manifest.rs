//! Reading `manifest.json`: what a snapshot says about itself.
//!
//! Owns the reading half of the manifest ([`write`](super::write) owns the
//! writing half): the format name and version, the site, the data format,
//! the CSV formula escape and each data file's row count and sha256. It
//! must not open the data files (that is [`read`](super::read) and
//! [`verify`](super::verify)); an unreadable manifest is an error here, never
//! "no manifest", so that nothing downstream guesses what a snapshot holds.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::model::{CSV_FORMULA_ESCAPE, FORMAT_NAME, FORMAT_VERSION};

/// The manifest's file name inside a snapshot directory.
pub const MANIFEST: &str = "manifest.json";

/// One data file as the manifest lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestFile {
    pub rows: u64,
    pub sha256: String,
}

/// A parsed `manifest.json`.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    pub format_version: u64,
    pub site: String,
    pub started_at: String,
    pub finished_at: String,
    /// `jsonl` or `csv`.
    pub data_format: String,
    /// CSV cells went through the export's formula escape.
    pub formula_escaped: bool,
    /// Data files by name (`members.csv`...).
    pub files: BTreeMap<String, ManifestFile>,
}

/// Why a directory's manifest cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("{}: no {MANIFEST}: not a jsm-orgs snapshot", .0.display())]
    Missing(PathBuf),
    #[error("{}: {}", .0.display(), .1)]
    Io(PathBuf, #[source] io::Error),
    #[error("{}: {}: not a jsm-orgs snapshot manifest", .0.display(), .1)]
    Invalid(PathBuf, String),
    #[error(
        "{}: snapshot format version {} is newer than this jsm-orgs reads (up to {FORMAT_VERSION}): use a newer jsm-orgs",
        .0.display(), .1
    )]
    NewerVersion(PathBuf, u64),
}

impl Manifest {
    /// Read `dir/manifest.json`.
    pub fn read(dir: &Path) -> Result<Manifest, ManifestError> {
        let path = dir.join(MANIFEST);
        let text = match fs::read_to_string(&path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(ManifestError::Missing(dir.to_path_buf())),
            Err(e) => return Err(ManifestError::Io(path, e)),
            Ok(t) => t,
        };
        Manifest::parse(&text).map_err(|why| match why {
            Why::Invalid(msg) => ManifestError::Invalid(path, msg),
            Why::Newer(v) => ManifestError::NewerVersion(path, v),
        })
    }

    /// Read `dir/manifest.json` when there is one.
    pub fn read_if_present(dir: &Path) -> Result<Option<Manifest>, ManifestError> {
        match Manifest::read(dir) {
            Ok(m) => Ok(Some(m)),
            Err(ManifestError::Missing(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn parse(text: &str) -> Result<Manifest, Why> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let v: Value = serde_json::from_str(text).map_err(|e| Why::Invalid(format!("not valid JSON ({e})")))?;
        if v.get("format").and_then(Value::as_str) != Some(FORMAT_NAME) {
            return Err(Why::Invalid(format!("`format` is not {FORMAT_NAME:?}")));
        }
        let version = v
            .get("format_version")
            .and_then(Value::as_u64)
            .ok_or_else(|| Why::Invalid("`format_version` is missing".into()))?;
        if version > u64::from(FORMAT_VERSION) {
            return Err(Why::Newer(version));
        }
        let text_of = |key: &str| v.get(key).and_then(Value::as_str).unwrap_or_default().to_string();
        let data_format = text_of("data_format");
        if data_format != "jsonl" && data_format != "csv" {
            return Err(Why::Invalid(format!("`data_format` {data_format:?} is neither jsonl nor csv")));
        }
        let mut files = BTreeMap::new();
        let listed = v.get("files").and_then(Value::as_object).ok_or_else(|| Why::Invalid("no `files`".into()))?;
        for (name, entry) in listed {
            let rows = entry.get("rows").and_then(Value::as_u64);
            let sha256 = entry.get("sha256").and_then(Value::as_str);
            let (Some(rows), Some(sha256)) = (rows, sha256) else {
                return Err(Why::Invalid(format!("`files.{name}` lacks `rows` or `sha256`")));
            };
            files.insert(name.clone(), ManifestFile { rows, sha256: sha256.to_ascii_lowercase() });
        }
        Ok(Manifest {
            format_version: version,
            site: text_of("site"),
            started_at: text_of("started_at"),
            finished_at: text_of("finished_at"),
            formula_escaped: v.get("csv_formula_escape").and_then(Value::as_str) == Some(CSV_FORMULA_ESCAPE),
            data_format,
            files,
        })
    }

    /// The site with no trailing slash and a lowercase host, to compare two
    /// snapshots' sites.
    pub fn site_key(&self) -> String {
        site_key(&self.site)
    }
}

/// A site URL with no trailing slash and a lowercase host, to compare sites.
pub fn site_key(site: &str) -> String {
    match url::Url::parse(site) {
        Ok(u) => {
            let port = u.port().map(|p| format!(":{p}")).unwrap_or_default();
            let host = u.host_str().unwrap_or("").to_lowercase();
            format!("{}://{host}{port}{}", u.scheme(), u.path().trim_end_matches('/'))
        }
        Err(_) => site.trim_end_matches('/').to_lowercase(),
    }
}

enum Why {
    Invalid(String),
    Newer(u64),
}

/// Whether the text of a `manifest.json` declares that its CSV cells went
/// through the export's formula escape (the top-level
/// `"csv_formula_escape": "apostrophe"`), however little else it holds:
/// `import` reads files of a snapshot folder named one by one with it.
pub fn escapes_formulas(manifest_text: &str) -> Result<bool, serde_json::Error> {
    let text = manifest_text.strip_prefix('\u{feff}').unwrap_or(manifest_text);
    let manifest: Value = serde_json::from_str(text)?;
    Ok(manifest.get("csv_formula_escape").and_then(Value::as_str) == Some(CSV_FORMULA_ESCAPE))
}

/// Whether `dir` holds a manifest of this tool's snapshot format (of any
/// version): the only directories `--overwrite` and `--keep` may remove.
pub fn is_snapshot(dir: &Path) -> bool {
    fs::read(dir.join(MANIFEST))
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .is_some_and(|m| m.get("format").and_then(Value::as_str) == Some(FORMAT_NAME))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, text: &str) {
        fs::write(dir.join(MANIFEST), text).unwrap();
    }

    #[test]
    fn the_escape_is_declared_at_top_level_only() {
        assert!(escapes_formulas("\u{feff}{\"csv_formula_escape\":\"apostrophe\"}").unwrap());
        assert!(!escapes_formulas(r#"{"data_format":"jsonl"}"#).unwrap());
        assert!(!escapes_formulas(r#"{"files":{"csv_formula_escape":"apostrophe"}}"#).unwrap());
        assert!(escapes_formulas("{not json").is_err());
    }

    #[test]
    fn reads_what_export_writes_and_refuses_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        assert!(matches!(Manifest::read(d), Err(ManifestError::Missing(_))));
        assert_eq!(Manifest::read_if_present(d).unwrap(), None);
        write(
            d,
            r#"{"format":"jsm-orgs-snapshot","format_version":1,"site":"https://ACME.atlassian.net/",
                "data_format":"csv","csv_formula_escape":"apostrophe",
                "files":{"members.csv":{"rows":2,"sha256":"AB"}}}"#,
        );
        let m = Manifest::read(d).unwrap();
        assert!(m.formula_escaped);
        assert_eq!(m.files["members.csv"], ManifestFile { rows: 2, sha256: "ab".into() });
        assert_eq!(m.site_key(), "https://acme.atlassian.net");
        write(d, "{not json");
        assert!(matches!(Manifest::read(d), Err(ManifestError::Invalid(..))));
        assert!(matches!(Manifest::read_if_present(d), Err(ManifestError::Invalid(..))));
        write(d, r#"{"format":"other","format_version":1}"#);
        assert!(matches!(Manifest::read(d), Err(ManifestError::Invalid(..))));
        write(d, r#"{"format":"jsm-orgs-snapshot","format_version":99,"data_format":"csv","files":{}}"#);
        assert!(matches!(Manifest::read(d), Err(ManifestError::NewerVersion(_, 99))));
        assert!(is_snapshot(d));
    }
}
