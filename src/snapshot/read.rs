//! Reading a snapshot's data files as typed records, one at a time.
//!
//! Owns the reading half of the data formats: for each of the four kinds the
//! file the manifest lists (or, in a folder without a manifest,
//! `KIND.jsonl`, else `KIND.csv`; a missing one is empty), JSONL through
//! serde and CSV by header name (BOM dropped; a property `value` is JSON
//! text; `created` is ISO text or, in older snapshots, JSON text), and the
//! formula escape: with a manifest that declares it every CSV cell loses one
//! leading `'`, without one only the export's marker (`'` before `=`, `+`,
//! `-`, `@`, tab or CR) is undone. Records stream from any reader, so
//! [`verify`](super::verify) can hash the very bytes it parses, and memory
//! stays flat for `diff`. It must not write anything or talk to the network;
//! a malformed record is an error naming its file and line, never skipped.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::marker::PhantomData;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde_json::Value;

use super::manifest::{Manifest, ManifestError};
use crate::model::{unescape_formula, unescape_formula_marker};
use crate::model::{DeskLinkRecord, MemberRecord, OrgRecord, PropertyRecord};

const READ_BUFFER: usize = 1 << 16;

/// Why a snapshot could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{}: not a directory", .0.display())]
    NotADirectory(PathBuf),
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error("{}: {}", .path.display(), .source)]
    Io { path: PathBuf, source: io::Error },
    #[error("{file}:{line}: {message}")]
    Record { file: String, line: u64, message: String },
}

/// How CSV cells are unescaped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unescape {
    /// The manifest declares the escape: every cell loses one leading `'`.
    Every,
    /// No such declaration: only the export's marker is undone.
    Marker,
}

impl Unescape {
    fn apply(self, cell: &str) -> &str {
        match self {
            Unescape::Every => unescape_formula(cell),
            Unescape::Marker => unescape_formula_marker(cell),
        }
    }
}

/// Data format of one file, by its extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFormat {
    Jsonl,
    Csv,
}

impl FileFormat {
    pub fn of(path: &Path) -> Option<FileFormat> {
        match path.extension()?.to_str()? {
            e if e.eq_ignore_ascii_case("jsonl") => Some(FileFormat::Jsonl),
            e if e.eq_ignore_ascii_case("csv") => Some(FileFormat::Csv),
            _ => None,
        }
    }
}

/// A snapshot directory opened for reading.
#[derive(Debug)]
pub struct SnapshotDir {
    dir: PathBuf,
    manifest: Option<Manifest>,
}

impl SnapshotDir {
    /// Open `dir`; its manifest, when there is one, must be readable.
    pub fn open(dir: &Path) -> Result<SnapshotDir, ReadError> {
        if !dir.is_dir() {
            return Err(ReadError::NotADirectory(dir.to_path_buf()));
        }
        Ok(SnapshotDir { dir: dir.to_path_buf(), manifest: Manifest::read_if_present(dir)? })
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    pub fn manifest(&self) -> Option<&Manifest> {
        self.manifest.as_ref()
    }

    pub fn unescape(&self) -> Unescape {
        match &self.manifest {
            Some(m) if m.formula_escaped => Unescape::Every,
            _ => Unescape::Marker,
        }
    }

    /// The data file of `kind`: the one the manifest lists, else
    /// `KIND.jsonl`, else `KIND.csv`; `None` when there is none (`verify`
    /// is what insists on the manifest's list).
    pub fn data_file(&self, kind: &str) -> Option<PathBuf> {
        let listed = self.manifest.as_ref().and_then(|m| m.files.keys().find(|name| is_file_of(name, kind)));
        if let Some(name) = listed {
            return Some(self.dir.join(name));
        }
        ["jsonl", "csv"].iter().map(|ext| self.dir.join(format!("{kind}.{ext}"))).find(|p| p.is_file())
    }

    /// Stream the records of `T`'s file (none when the snapshot has no such
    /// file).
    pub fn records<T: SnapshotRecord>(&self) -> Result<Records<T, File>, ReadError> {
        let Some(path) = self.data_file(T::KIND) else {
            return Ok(Records::empty());
        };
        let file = File::open(&path).map_err(|source| ReadError::Io { path: path.clone(), source })?;
        Records::new(&path, file, self.unescape())
    }

    /// Every record of `T`, in file order.
    pub fn read_all<T: SnapshotRecord>(&self) -> Result<Vec<T>, ReadError> {
        self.records::<T>()?.collect()
    }
}

/// Whether `name` is the data file of `kind` (`kind.jsonl` / `kind.csv`).
pub(crate) fn is_file_of(name: &str, kind: &str) -> bool {
    name.strip_prefix(kind)
        .and_then(|rest| rest.strip_prefix('.'))
        .is_some_and(|ext| ext.eq_ignore_ascii_case("jsonl") || ext.eq_ignore_ascii_case("csv"))
}

/// A record of one of the four data files.
pub trait SnapshotRecord: DeserializeOwned + Sized {
    /// The file's kind (`organizations`...).
    const KIND: &'static str;
    /// Build the record from a CSV row (cells already unescaped).
    fn from_csv(row: &CsvRow) -> Result<Self, String>;
}

/// One CSV data row, cells looked up by header name.
pub struct CsvRow<'a> {
    columns: &'a HashMap<String, usize>,
    record: &'a csv::StringRecord,
    unescape: Unescape,
}

impl CsvRow<'_> {
    /// The cell, `None` when the column is absent or the cell empty.
    pub fn get(&self, column: &str) -> Option<&str> {
        let cell = self.columns.get(column).and_then(|i| self.record.get(*i))?;
        Some(self.unescape.apply(cell)).filter(|s| !s.is_empty())
    }

    pub fn required(&self, column: &str) -> Result<&str, String> {
        self.get(column).ok_or_else(|| format!("field `{column}`: missing"))
    }

    pub fn id(&self, column: &str) -> Result<u64, String> {
        let raw = self.required(column)?;
        raw.trim().parse().map_err(|_| format!("field `{column}`: {raw:?} is not an integer"))
    }

    fn text(&self, column: &str) -> String {
        self.get(column).unwrap_or_default().to_string()
    }

    fn opt(&self, column: &str) -> Option<String> {
        self.get(column).map(str::to_string)
    }
}

impl SnapshotRecord for OrgRecord {
    const KIND: &'static str = "organizations";
    fn from_csv(row: &CsvRow) -> Result<Self, String> {
        let scim_managed = match row.get("scim_managed") {
            None => None,
            Some(s) => Some(
                s.trim().parse::<bool>().map_err(|_| format!("field `scim_managed`: {s:?} is not true or false"))?,
            ),
        };
        Ok(OrgRecord {
            id: row.id("id")?,
            name: row.required("name")?.to_string(),
            uuid: row.opt("uuid"),
            scim_managed,
            // ISO text; older snapshots hold the DateDTO as JSON text.
            created: row.get("created").map(|s| match serde_json::from_str::<Value>(s) {
                Ok(v @ Value::Object(_)) => v,
                _ => Value::String(s.to_string()),
            }),
        })
    }
}

impl SnapshotRecord for MemberRecord {
    const KIND: &'static str = "members";
    fn from_csv(row: &CsvRow) -> Result<Self, String> {
        Ok(MemberRecord {
            organization: row.text("organization"),
            organization_id: row.id("organization_id")?,
            account_id: row.required("account_id")?.to_string(),
            email: row.opt("email"),
            display_name: row.opt("display_name"),
        })
    }
}

impl SnapshotRecord for PropertyRecord {
    const KIND: &'static str = "properties";
    fn from_csv(row: &CsvRow) -> Result<Self, String> {
        let raw = row.required("value")?;
        Ok(PropertyRecord {
            organization: row.text("organization"),
            organization_id: row.id("organization_id")?,
            key: row.required("key")?.to_string(),
            value: serde_json::from_str(raw).map_err(|e| format!("field `value`: not JSON ({e})"))?,
        })
    }
}

impl SnapshotRecord for DeskLinkRecord {
    const KIND: &'static str = "service_desks";
    fn from_csv(row: &CsvRow) -> Result<Self, String> {
        Ok(DeskLinkRecord {
            organization: row.text("organization"),
            organization_id: row.id("organization_id")?,
            service_desk_id: row.required("service_desk_id")?.to_string(),
            project_key: row.opt("project_key"),
            project_name: row.opt("project_name"),
        })
    }
}

enum Inner<R: Read> {
    Empty,
    Jsonl { reader: BufReader<R>, line: u64, buf: Vec<u8> },
    Csv { reader: csv::Reader<R>, columns: HashMap<String, usize>, record: csv::StringRecord },
}

/// The records of one data file, streamed.
pub struct Records<T, R: Read> {
    inner: Inner<R>,
    file: String,
    unescape: Unescape,
    done: bool,
    _t: PhantomData<T>,
}

impl<T: SnapshotRecord, R: Read> Records<T, R> {
    fn empty() -> Self {
        Records { inner: Inner::Empty, file: String::new(), unescape: Unescape::Marker, done: true, _t: PhantomData }
    }

    /// Records of `path`'s format read from `reader` (a CSV header is read
    /// at once).
    pub fn new(path: &Path, reader: R, unescape: Unescape) -> Result<Self, ReadError> {
        let file = path.display().to_string();
        let inner = match FileFormat::of(path) {
            Some(FileFormat::Jsonl) => {
                Inner::Jsonl { reader: BufReader::with_capacity(READ_BUFFER, reader), line: 0, buf: Vec::new() }
            }
            Some(FileFormat::Csv) => {
                let mut reader =
                    csv::ReaderBuilder::new().flexible(true).buffer_capacity(READ_BUFFER).from_reader(reader);
                let columns = reader
                    .headers()
                    .map_err(|e| ReadError::Record { file: file.clone(), line: 1, message: format!("header: {e}") })?
                    .iter()
                    .enumerate()
                    .map(|(i, h)| (h.trim_start_matches('\u{feff}').trim().to_lowercase(), i))
                    .collect();
                Inner::Csv { reader, columns, record: csv::StringRecord::new() }
            }
            None => {
                let message = "not a .jsonl or .csv file".to_string();
                return Err(ReadError::Record { file, line: 0, message });
            }
        };
        Ok(Records { inner, file, unescape, done: false, _t: PhantomData })
    }

    /// The reader, once the records are read (to finish hashing it).
    pub fn into_reader(self) -> Option<R> {
        match self.inner {
            Inner::Empty => None,
            Inner::Jsonl { reader, .. } => Some(reader.into_inner()),
            Inner::Csv { reader, .. } => Some(reader.into_inner()),
        }
    }

    fn error(&mut self, line: u64, message: String) -> Option<Result<T, ReadError>> {
        self.done = true;
        Some(Err(ReadError::Record { file: self.file.clone(), line, message }))
    }

    fn next_jsonl(&mut self) -> Option<Result<T, ReadError>> {
        let Inner::Jsonl { reader, line, buf } = &mut self.inner else { unreachable!("jsonl state") };
        loop {
            buf.clear();
            *line += 1;
            let at = *line;
            match reader.read_until(b'\n', buf) {
                Err(e) => return self.error(at, e.to_string()),
                Ok(0) => return None,
                Ok(_) => {}
            }
            let mut bytes: &[u8] = buf;
            if at == 1 {
                bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
            }
            if bytes.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            return match serde_json::from_slice::<T>(bytes) {
                Ok(t) => Some(Ok(t)),
                Err(e) => self.error(at, format!("invalid record: {e}")),
            };
        }
    }

    fn next_csv(&mut self) -> Option<Result<T, ReadError>> {
        let unescape = self.unescape;
        let Inner::Csv { reader, columns, record } = &mut self.inner else { unreachable!("csv state") };
        match reader.read_record(record) {
            Err(e) => {
                let line = e.position().map_or(0, |p| p.line());
                self.error(line, e.to_string())
            }
            Ok(false) => None,
            Ok(true) => {
                let line = record.position().map_or(0, |p| p.line());
                let row = CsvRow { columns, record, unescape };
                match T::from_csv(&row) {
                    Ok(t) => Some(Ok(t)),
                    Err(message) => self.error(line, message),
                }
            }
        }
    }
}

impl<T: SnapshotRecord, R: Read> Iterator for Records<T, R> {
    type Item = Result<T, ReadError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let next = match self.inner {
            Inner::Empty => None,
            Inner::Jsonl { .. } => self.next_jsonl(),
            Inner::Csv { .. } => self.next_csv(),
        };
        if next.is_none() {
            self.done = true;
        }
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn csv_with_manifest_escape_and_bom() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            dir.path().join("manifest.json"),
            r#"{"format":"jsm-orgs-snapshot","format_version":1,"data_format":"csv","csv_formula_escape":"apostrophe",
                "files":{"organizations.csv":{"rows":2,"sha256":""},"properties.csv":{"rows":1,"sha256":""}}}"#,
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
        let snap = SnapshotDir::open(dir.path()).unwrap();
        let orgs: Vec<OrgRecord> = snap.read_all().unwrap();
        assert_eq!(orgs.len(), 2);
        assert_eq!(orgs[0].name, "=SUM(A1)");
        assert_eq!(orgs[0].uuid, None);
        assert_eq!(orgs[1].name, "'quoted");
        assert_eq!(orgs[1].scim_managed, Some(false));
        assert_eq!(orgs[1].created, Some(serde_json::json!({"epochMillis": 1})));
        let props: Vec<PropertyRecord> = snap.read_all().unwrap();
        assert_eq!(props[0].value, serde_json::json!({"a": [1, 2]}));
        assert!(snap.read_all::<MemberRecord>().unwrap().is_empty());
    }

    #[test]
    fn without_a_manifest_only_the_marker_is_undone() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            dir.path().join("organizations.csv"),
            "id,name,created\n1,'=Formula Industries,2024-01-02T03:04:05+0000\n2,'quoted,\n",
        )
        .unwrap();
        let orgs: Vec<OrgRecord> = SnapshotDir::open(dir.path()).unwrap().read_all().unwrap();
        assert_eq!(orgs[0].name, "=Formula Industries");
        assert_eq!(orgs[0].created, Some(Value::String("2024-01-02T03:04:05+0000".into())));
        assert_eq!(orgs[1].name, "'quoted");
    }

    #[test]
    fn a_bad_line_or_manifest_is_named() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("organizations.jsonl"), "{\"id\":1,\"name\":\"A\"}\n\n{\"id\":\"x\"}\n").unwrap();
        let snap = SnapshotDir::open(dir.path()).unwrap();
        let err = snap.read_all::<OrgRecord>().unwrap_err().to_string();
        assert!(err.contains("organizations.jsonl:3"), "{err}");
        fs::write(dir.path().join("manifest.json"), "{not json").unwrap();
        let err = SnapshotDir::open(dir.path()).unwrap_err().to_string();
        assert!(err.contains("manifest.json") && err.contains("not valid JSON"), "{err}");
    }
}
