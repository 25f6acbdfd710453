//! The resolved input of one import: PATHs expanded into an ordered list of
//! files, checked once up front, and streamed as rows as often as needed.
//!
//! It owns path resolution (a directory means its `*.csv` / `*.jsonl`,
//! snapshot files first), the snapshot manifest's formula escape, the
//! warnings, global row indices and the guarantee that every pass over the
//! rows is identical (a file that changes between passes is an error, not a
//! different report). It must not read a whole file into memory or judge
//! rows itself: the format modules and `validate` do that, one row at a
//! time.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::iter::FusedIterator;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::SystemTime;

use sha2::Digest as _;

use super::csv_file::{self, CsvRows, CsvSchema};
use super::jsonl_file::{self, JsonlRows};
use super::{InputError, RowResult};
use crate::model::DATA_FILES;

/// Prefix of the default report file name: such files in an input
/// directory are earlier reports, not input.
const REPORT_PREFIX: &str = "jsm-orgs-report-";

/// The files of one import, in the order their rows are numbered.
#[derive(Debug)]
pub struct InputSet {
    files: Vec<PathBuf>,
    specs: Vec<FileSpec>,
    warnings: Vec<String>,
}

#[derive(Debug)]
struct FileSpec {
    path: PathBuf,
    display: Arc<str>,
    format: Format,
    stamp: Stamp,
    /// sha256 of the bytes the first complete pass read; every later pass
    /// must read the same (size and mtime miss a same-size rewrite within
    /// one clock tick).
    digest: OnceLock<[u8; 32]>,
}

#[derive(Debug)]
enum Format {
    Csv(CsvSchema),
    Jsonl,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ext {
    Csv,
    Jsonl,
}

/// Size and modification time, to notice a file that changes between passes.
#[derive(Debug, PartialEq, Eq)]
struct Stamp {
    len: u64,
    modified: Option<SystemTime>,
}

impl Stamp {
    fn of(meta: &fs::Metadata) -> Self {
        Stamp { len: meta.len(), modified: meta.modified().ok() }
    }
}

impl InputSet {
    /// Resolve PATHs: a file, or a directory = every `*.csv` / `*.jsonl`
    /// directly in it (snapshot files `organizations`, `members`,
    /// `properties`, `service_desks` first, then by name). CSV headers are
    /// checked here; a directory's `manifest.json` saying
    /// `"csv_formula_escape": "apostrophe"` makes its CSV cells unescaped.
    pub fn open(paths: &[PathBuf]) -> Result<InputSet, InputError> {
        if paths.is_empty() {
            return Err(InputError::NoPaths);
        }
        let mut warnings = Vec::new();
        let mut candidates = Vec::new();
        for path in paths {
            if path.as_os_str().is_empty() {
                return Err(InputError::EmptyPath);
            }
            let meta = fs::metadata(path).map_err(|e| InputError::io(path, e))?;
            if meta.is_dir() {
                let found = list_dir(path, &mut warnings)?;
                if found.is_empty() {
                    return Err(InputError::NoInputFiles(path.clone()));
                }
                candidates.extend(found);
            } else {
                candidates.push(path.clone());
            }
        }

        let mut set = InputSet { files: Vec::new(), specs: Vec::new(), warnings };
        let mut seen = HashSet::new();
        let mut escaped_dirs = HashMap::new();
        for path in candidates {
            let ext = ext_of(&path).ok_or_else(|| InputError::UnsupportedFormat { path: path.clone() })?;
            let meta = fs::metadata(&path).map_err(|e| InputError::io(&path, e))?;
            if !meta.is_file() {
                return Err(InputError::NotAFile { path });
            }
            let display: Arc<str> = path.to_string_lossy().into();
            let canonical = fs::canonicalize(&path).map_err(|e| InputError::io(&path, e))?;
            if !seen.insert(canonical) {
                set.warnings.push(format!("{display}: named more than once; read once"));
                continue;
            }
            let stamp = Stamp::of(&meta);
            let format = match ext {
                Ext::Csv => {
                    let unescape = formula_escaped(dir_of(&path), &mut escaped_dirs)?;
                    let (schema, warnings) = csv_file::inspect(&path, &display, unescape)?;
                    set.warnings.extend(warnings);
                    Format::Csv(schema)
                }
                Ext::Jsonl => {
                    set.warnings.extend(jsonl_file::inspect(&path, &display)?);
                    Format::Jsonl
                }
            };
            set.files.push(path.clone());
            set.specs.push(FileSpec { path, display, format, stamp, digest: OnceLock::new() });
        }
        Ok(set)
    }

    /// Things worth telling the user that do not stop the import.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// The files, in the order their rows are read.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// Every file is still as it was when opened (size and modification
    /// time); checked before the first write is sent.
    pub fn check_unchanged(&self) -> Result<(), InputError> {
        for spec in &self.specs {
            let meta = fs::metadata(&spec.path).map_err(|e| InputError::io(&spec.path, e))?;
            if Stamp::of(&meta) != spec.stamp {
                return Err(InputError::Changed { path: spec.path.clone() });
            }
        }
        Ok(())
    }

    /// Stream every row of every file in order, with global indices from 0.
    /// Each call starts a new, identical pass. The outer `Err` is for a file
    /// that cannot be read (or changed since [`InputSet::open`]); the
    /// iterator ends after it.
    pub fn rows(&self) -> Rows<'_> {
        Rows { set: self, next_file: 0, current: None, index: 0, done: false }
    }
}

/// One pass over the rows of an [`InputSet`].
pub struct Rows<'a> {
    set: &'a InputSet,
    next_file: usize,
    current: Option<(&'a FileSpec, Reader<'a>, Digest)>,
    index: u64,
    done: bool,
}

enum Reader<'a> {
    Csv(CsvRows, &'a CsvSchema),
    Jsonl(JsonlRows),
}

impl<'a> Reader<'a> {
    fn open(spec: &'a FileSpec, digest: &Digest) -> Result<Self, InputError> {
        let io = |e| InputError::io(&spec.path, e);
        let meta = fs::metadata(&spec.path).map_err(io)?;
        if Stamp::of(&meta) != spec.stamp {
            return Err(InputError::Changed { path: spec.path.clone() });
        }
        let d = Some(digest.clone());
        Ok(match &spec.format {
            Format::Csv(schema) => Reader::Csv(CsvRows::open_hashed(&spec.path, schema, d).map_err(io)?, schema),
            Format::Jsonl => Reader::Jsonl(JsonlRows::open_hashed(&spec.path, d).map_err(io)?),
        })
    }
}

type Digest = Arc<Mutex<sha2::Sha256>>;

/// A file read to its end: its bytes must be those of the first pass.
fn check_digest(spec: &FileSpec, digest: &Digest) -> Result<(), InputError> {
    let got: [u8; 32] = std::mem::take(&mut *digest.lock().expect("digest lock")).finalize().into();
    match spec.digest.get() {
        Some(first) if *first != got => Err(InputError::Changed { path: spec.path.clone() }),
        Some(_) => Ok(()),
        None => {
            let _ = spec.digest.set(got);
            Ok(())
        }
    }
}

impl Iterator for Rows<'_> {
    type Item = Result<RowResult, InputError>;

    fn next(&mut self) -> Option<Self::Item> {
        while !self.done {
            let (spec, reader, digest) = match &mut self.current {
                Some(current) => current,
                None => {
                    let Some(spec) = self.set.specs.get(self.next_file) else {
                        self.done = true;
                        break;
                    };
                    self.next_file += 1;
                    let digest = Digest::default();
                    match Reader::open(spec, &digest) {
                        Ok(reader) => self.current.insert((spec, reader, digest)),
                        Err(e) => {
                            self.done = true;
                            return Some(Err(e));
                        }
                    }
                }
            };
            let next = match reader {
                Reader::Csv(rows, schema) => rows.next_row(schema, &spec.display, self.index),
                Reader::Jsonl(rows) => rows.next_row(&spec.display, self.index),
            };
            match next {
                None => {
                    let checked = check_digest(spec, digest);
                    self.current = None;
                    if let Err(e) = checked {
                        self.done = true;
                        return Some(Err(e));
                    }
                }
                Some(Ok(row)) => {
                    self.index += 1;
                    return Some(Ok(row));
                }
                Some(Err(e)) => {
                    self.done = true;
                    return Some(Err(InputError::io(&spec.path, e)));
                }
            }
        }
        None
    }
}

impl FusedIterator for Rows<'_> {}

fn ext_of(path: &Path) -> Option<Ext> {
    let ext = path.extension()?.to_str()?;
    if ext.eq_ignore_ascii_case("csv") {
        Some(Ext::Csv)
    } else if ext.eq_ignore_ascii_case("jsonl") {
        Some(Ext::Jsonl)
    } else {
        None
    }
}

/// Whether a file of this name inside an input folder is read as input
/// (`--report` must not be, or the next run would import the report).
pub fn read_as_input(path: &Path) -> bool {
    let name = path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default();
    !name.starts_with('.') && !name.starts_with(REPORT_PREFIX) && ext_of(path).is_some()
}

/// The input files directly in `dir`: snapshot data files first (in
/// snapshot order), then the rest by name. Hidden files and earlier
/// reports are skipped.
fn list_dir(dir: &Path, warnings: &mut Vec<String>) -> Result<Vec<PathBuf>, InputError> {
    let io = |e| InputError::io(dir, e);
    let mut found = Vec::new();
    for entry in fs::read_dir(dir).map_err(io)? {
        let name = entry.map_err(io)?.file_name();
        let path = dir.join(&name);
        let name = name.to_string_lossy().into_owned();
        if name.starts_with('.') || ext_of(&path).is_none() {
            continue;
        }
        if !fs::metadata(&path).map_err(|e| InputError::io(&path, e))?.is_file() {
            continue;
        }
        if name.starts_with(REPORT_PREFIX) {
            warnings.push(format!("{}: skipped (an import report, not input)", path.display()));
            continue;
        }
        let stem = path.file_stem().map(|s| s.to_string_lossy());
        let rank = DATA_FILES.iter().position(|d| stem.as_deref() == Some(*d)).unwrap_or(DATA_FILES.len());
        found.push((rank, name, path));
    }
    found.sort();
    Ok(found.into_iter().map(|(_, _, path)| path).collect())
}

fn dir_of(path: &Path) -> &Path {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    }
}

/// Whether `dir/manifest.json` declares apostrophe-escaped CSV cells
/// (looked up once per directory).
fn formula_escaped(dir: &Path, cache: &mut HashMap<PathBuf, bool>) -> Result<bool, InputError> {
    if let Some(&escaped) = cache.get(dir) {
        return Ok(escaped);
    }
    let path = dir.join("manifest.json");
    let escaped = match fs::read_to_string(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => return Err(InputError::io(&path, e)),
        Ok(text) => crate::snapshot::manifest::escapes_formulas(&text)
            .map_err(|e| InputError::Manifest { path: path.clone(), message: format!("not valid JSON: {e}") })?,
    };
    cache.insert(dir.to_path_buf(), escaped);
    Ok(escaped)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::{Action, Kind, OrgRef, Row, RowData};
    use crate::model::{escape_formula, DeskLinkRecord, MemberRecord, OrgRecord, PropertyRecord};
    use serde_json::json;
    use std::fmt::Write as _;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        fs::write(&path, text).unwrap();
        path
    }

    fn collect(set: &InputSet) -> Vec<RowResult> {
        set.rows().map(|r| r.expect("readable input")).collect()
    }

    fn valid(set: &InputSet) -> Vec<Row> {
        collect(set).into_iter().map(|r| r.expect("valid row")).collect()
    }

    fn jsonl<T: serde::Serialize>(records: &[T]) -> String {
        records.iter().map(|r| serde_json::to_string(r).unwrap() + "\n").collect()
    }

    #[test]
    fn jsonl_snapshot_dir_restores_as_is() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        // written in a scrambled order: the snapshot order must win
        write(d, "service_desks.jsonl", &jsonl(&[DeskLinkRecord::by_id("Acme", 10, "2")]));
        write(
            d,
            "properties.jsonl",
            &jsonl(&[PropertyRecord {
                organization: "Acme".into(),
                organization_id: 10,
                key: "tier".into(),
                value: json!({"level": "gold", "seats": [1, 2]}),
            }]),
        );
        write(
            d,
            "members.jsonl",
            &jsonl(&[MemberRecord {
                organization: "Acme".into(),
                organization_id: 10,
                account_id: "5b10ac8d82e05b22cc7d4ef5".into(),
                email: Some("ann@example.com".into()),
                display_name: Some("Ann".into()),
            }]),
        );
        write(
            d,
            "organizations.jsonl",
            &jsonl(&[
                OrgRecord {
                    id: 10,
                    name: "Acme".into(),
                    uuid: Some("8e1b".into()),
                    scim_managed: Some(false),
                    created: Some(json!({"iso8601": "2024-01-02T03:04:05+0000", "epochMillis": 1704164645000u64})),
                },
                OrgRecord { id: 11, name: "=cmd".into(), uuid: None, scim_managed: None, created: None },
            ]),
        );
        write(d, "manifest.json", r#"{"format":"jsm-orgs-snapshot","version":1,"files":{}}"#);

        let set = InputSet::open(&[d.to_path_buf()]).unwrap();
        assert!(set.warnings().is_empty(), "{:?}", set.warnings());
        let names: Vec<_> = set.files().iter().map(|p| p.file_name().unwrap().to_str().unwrap()).collect();
        assert_eq!(names, ["organizations.jsonl", "members.jsonl", "properties.jsonl", "service_desks.jsonl"]);
        let rows = valid(&set);
        let summary: Vec<_> = rows.iter().map(|r| (r.index, r.kind, r.action, r.data.clone())).collect();
        let acme = || OrgRef::NameAndId("Acme".into(), 10);
        assert_eq!(
            summary,
            vec![
                (0, Kind::Organizations, Action::Upsert, RowData::Organization { name: "Acme".into() }),
                (1, Kind::Organizations, Action::Upsert, RowData::Organization { name: "=cmd".into() }),
                (
                    2,
                    Kind::Members,
                    Action::Add,
                    RowData::Member {
                        org: acme(),
                        account_id: Some("5b10ac8d82e05b22cc7d4ef5".into()),
                        email: Some("ann@example.com".into()),
                        display_name: Some("Ann".into())
                    }
                ),
                (
                    3,
                    Kind::Properties,
                    Action::Set,
                    RowData::Property {
                        org: acme(),
                        key: "tier".into(),
                        value: json!({"level": "gold", "seats": [1, 2]})
                    }
                ),
                (
                    4,
                    Kind::ServiceDesks,
                    Action::Link,
                    RowData::ServiceDesk { org: acme(), service_desk_id: "2".into() }
                ),
            ]
        );
        let first = d.join("organizations.jsonl");
        assert_eq!(rows[0].source.to_string(), format!("{}:1", first.display()));
        assert_eq!(rows[1].source.line, 2);
    }

    #[test]
    fn csv_snapshot_dir_unescapes_every_cell_elsewhere_only_the_marker() {
        let dir = tempfile::tempdir().unwrap();
        let snap = dir.path().join("snap");
        fs::create_dir(&snap).unwrap();
        let cell = |s: &str| escape_formula(s).into_owned();
        write(
            &snap,
            "organizations.csv",
            &format!("id,name,uuid,scim_managed,created\n1,{},,,\n2,{},,,\n", cell("=SUM(1)"), cell("'quoted"),),
        );
        write(
            &snap,
            "properties.csv",
            &format!("organization,organization_id,key,value\n{},1,{},{}\n", cell("=SUM(1)"), cell("-k"), cell("-5"),),
        );
        write(&snap, "manifest.json", r#"{"format":"jsm-orgs-snapshot","csv_formula_escape":"apostrophe"}"#);
        let plain = write(dir.path(), "orgs.csv", "name\n'=SUM(1)\n'quoted\n");

        let set = InputSet::open(&[snap.clone(), plain]).unwrap();
        let rows = valid(&set);
        let data: Vec<_> = rows.iter().map(|r| r.data.clone()).collect();
        assert_eq!(
            data,
            vec![
                RowData::Organization { name: "=SUM(1)".into() },
                RowData::Organization { name: "'quoted".into() },
                RowData::Property { org: OrgRef::NameAndId("=SUM(1)".into(), 1), key: "-k".into(), value: json!(-5) },
                // outside a snapshot only the export's marker is undone
                RowData::Organization { name: "=SUM(1)".into() },
                RowData::Organization { name: "'quoted".into() },
            ]
        );
        // a file of the snapshot named on its own is still unescaped
        let single = InputSet::open(&[snap.join("organizations.csv")]).unwrap();
        assert_eq!(valid(&single)[0].data, RowData::Organization { name: "=SUM(1)".into() });
    }

    #[test]
    fn directory_order_and_skipped_files() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for name in [
            "zeta.csv",
            "alpha.jsonl",
            "service_desks.csv",
            "members.jsonl",
            "organizations.csv",
            "Beta.CSV",
            "notes.txt",
            ".hidden.csv",
            "jsm-orgs-report-20240101T000000Z.csv",
        ] {
            write(d, name, "name\nX\n");
        }
        fs::create_dir(d.join("sub.csv")).unwrap();
        let set = InputSet::open(&[d.to_path_buf()]).unwrap();
        let names: Vec<_> = set.files().iter().map(|p| p.file_name().unwrap().to_str().unwrap()).collect();
        assert_eq!(
            names,
            ["organizations.csv", "members.jsonl", "service_desks.csv", "Beta.CSV", "alpha.jsonl", "zeta.csv"]
        );
        assert_eq!(set.warnings().len(), 1, "{:?}", set.warnings());
        assert!(set.warnings()[0].contains("jsm-orgs-report-"));
        // four CSV files of one row; two JSONL files of two lines that are not JSON
        let rows = collect(&set);
        let indices: Vec<u64> = rows.iter().map(|r| r.as_ref().map_or_else(|e| e.index, |r| r.index)).collect();
        assert_eq!(indices, (0..8).collect::<Vec<_>>());
        let sources: Vec<String> =
            rows.iter().map(|r| r.as_ref().map_or_else(|e| e.source.to_string(), |r| r.source.to_string())).collect();
        let at = |name: &str, line: u64| format!("{}:{line}", d.join(name).display());
        assert_eq!(
            sources,
            [
                at("organizations.csv", 2),
                at("members.jsonl", 1),
                at("members.jsonl", 2),
                at("service_desks.csv", 2),
                at("Beta.CSV", 2),
                at("alpha.jsonl", 1),
                at("alpha.jsonl", 2),
                at("zeta.csv", 2),
            ]
        );
    }

    #[test]
    fn rows_twice_are_identical() {
        let dir = tempfile::tempdir().unwrap();
        let a = write(dir.path(), "a.csv", "organization,account_id,action\nAcme,a1,\nAcme,,add\nAcme,a3,nope\n");
        let b = write(
            dir.path(),
            "b.jsonl",
            "{\"name\":\"Acme\"}\nnot json\n{\"organization\":\"Acme\",\"key\":\"k\",\"value\":[1]}\n",
        );
        let set = InputSet::open(&[a.clone(), b, a]).unwrap();
        assert_eq!(set.files().len(), 2);
        assert!(set.warnings()[0].contains("named more than once"), "{:?}", set.warnings());
        let first = collect(&set);
        let second = collect(&set);
        assert_eq!(first.len(), 6);
        assert_eq!(first, second);
        assert_eq!(first.iter().filter(|r| r.is_err()).count(), 3);
        let unknown = first[2].as_ref().unwrap_err();
        assert_eq!(unknown.field.as_deref(), Some("action"));
        assert!(
            unknown.message.ends_with("unknown action `nope` for members; expected one of add, remove"),
            "{}",
            unknown.message
        );
    }

    #[test]
    fn input_can_move_between_threads() {
        fn send_sync<T: Send + Sync>() {}
        fn send<T: Send>() {}
        send_sync::<InputSet>();
        send::<Rows<'static>>();
        send_sync::<InputError>();
    }

    #[test]
    fn a_same_size_rewrite_with_the_same_mtime_is_caught_by_the_fingerprint() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("orgs.csv");
        fs::write(&path, "name\nAcme\n").unwrap();
        let mtime = fs::metadata(&path).unwrap().modified().unwrap();
        let set = InputSet::open(std::slice::from_ref(&path)).unwrap();
        assert_eq!(set.rows().count(), 1);
        fs::write(&path, "name\nAcne\n").unwrap();
        fs::File::options().write(true).open(&path).unwrap().set_modified(mtime).unwrap();
        let last = set.rows().last().unwrap();
        assert!(matches!(last, Err(InputError::Changed { .. })), "{last:?}");
    }

    #[test]
    fn a_file_changed_between_passes_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "o.csv", "name\nA\n");
        let set = InputSet::open(std::slice::from_ref(&path)).unwrap();
        assert_eq!(collect(&set).len(), 1);
        fs::write(&path, "name\nA\nB\n").unwrap();
        let mut rows = set.rows();
        assert!(matches!(rows.next(), Some(Err(InputError::Changed { .. }))));
        assert!(rows.next().is_none());
    }

    #[test]
    fn path_errors() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        assert!(matches!(InputSet::open(&[]), Err(InputError::NoPaths)));
        assert!(matches!(InputSet::open(&[PathBuf::new()]), Err(InputError::EmptyPath)));
        assert!(matches!(InputSet::open(&[d.join("missing.csv")]), Err(InputError::Io { .. })));
        assert!(matches!(InputSet::open(&[d.to_path_buf()]), Err(InputError::NoInputFiles(_))));
        let txt = write(d, "x.txt", "name\nA\n");
        assert!(matches!(InputSet::open(&[txt]), Err(InputError::UnsupportedFormat { .. })));
        let bad_header = write(d, "bad.csv", "account_id\n");
        let good = write(d, "good.csv", "name\nA\n");
        let err = InputSet::open(&[good, bad_header]).unwrap_err();
        assert!(matches!(err, InputError::MissingColumn { kind: Kind::Members, .. }), "{err}");
        assert!(err.to_string().contains("bad.csv: missing column `organization`"), "{err}");
        write(d, "manifest.json", "{not json");
        assert!(matches!(InputSet::open(&[d.join("good.csv")]), Err(InputError::Manifest { .. })));
    }

    #[test]
    fn large_csv_streams() {
        const ROWS: usize = 200_000;
        let dir = tempfile::tempdir().unwrap();
        let mut text = String::with_capacity(ROWS * 40);
        text.push_str("organization,account_id,email\n");
        for i in 0..ROWS {
            write!(text, "Org {},acct-{i:08},user{i}@example.com\r\n", i % 1000).unwrap();
        }
        let path = write(dir.path(), "members.csv", &text);
        drop(text);
        let set = InputSet::open(&[path]).unwrap();
        let mut count = 0u64;
        for row in set.rows() {
            let row = row.unwrap().unwrap();
            assert_eq!(row.index, count);
            assert_eq!(row.source.line, count + 2);
            count += 1;
        }
        assert_eq!(count, ROWS as u64);
    }
}
