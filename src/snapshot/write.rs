//! The on-disk half of `export`: the staging directory beside `--out`, the
//! four data files (JSONL or CSV) with their row counts and sha256, the
//! manifest, fsync, and the final rename into place.
//!
//! Owns every byte and every file mode of a snapshot, and the rule that a
//! directory with a manifest only ever appears complete: files are written
//! into a hidden temporary directory (0700, files 0600: they hold customer
//! emails), fsynced, the manifest written last, and the directory renamed
//! onto `--out`. It must not talk to the network or decide *what* to export
//! (it gets sorted records from the read side), and it must never delete a
//! directory it cannot recognise as a snapshot.

use std::borrow::Cow;
use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::manifest::is_snapshot;
use super::{ExportError, Format};
use crate::model::{
    created_text, escape_formula, DeskLinkRecord, MemberRecord, OrgRecord, PropertyRecord, CSV_FORMULA_ESCAPE,
    FORMAT_NAME, FORMAT_VERSION,
};

const WRITE_BUFFER: usize = 1 << 16;

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> ExportError {
    let context = context.into();
    move |e| ExportError::Io(context, e)
}

/// A record that can be written as a snapshot row: JSONL through serde (the
/// struct's field order), CSV as cells under `COLUMNS` (same names, same
/// order; JSON values as compact JSON text; missing optionals empty; every
/// cell formula-escaped).
pub(crate) trait SnapshotRow: Serialize {
    const COLUMNS: &'static [&'static str];
    fn write_csv<W: Write>(&self, w: &mut csv::Writer<W>) -> csv::Result<()>;
}

/// One CSV cell, formula-escaped.
struct Cell<'a>(Cow<'a, str>);

impl AsRef<[u8]> for Cell<'_> {
    fn as_ref(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

fn cell(s: &str) -> Cell<'_> {
    Cell(escape_formula(s))
}

fn opt_cell(s: &Option<String>) -> Cell<'_> {
    cell(s.as_deref().unwrap_or(""))
}

fn json_text(v: &Value) -> String {
    serde_json::to_string(v).expect("a JSON value always serializes")
}

impl SnapshotRow for OrgRecord {
    const COLUMNS: &'static [&'static str] = &["id", "name", "uuid", "scim_managed", "created"];
    fn write_csv<W: Write>(&self, w: &mut csv::Writer<W>) -> csv::Result<()> {
        let id = self.id.to_string();
        let scim = match self.scim_managed {
            Some(true) => "true",
            Some(false) => "false",
            None => "",
        };
        let created = self.created.as_ref().map(created_text).unwrap_or_default();
        w.write_record([cell(&id), cell(&self.name), opt_cell(&self.uuid), cell(scim), cell(&created)])
    }
}

impl SnapshotRow for MemberRecord {
    const COLUMNS: &'static [&'static str] =
        &["organization", "organization_id", "account_id", "email", "display_name"];
    fn write_csv<W: Write>(&self, w: &mut csv::Writer<W>) -> csv::Result<()> {
        let id = self.organization_id.to_string();
        w.write_record([
            cell(&self.organization),
            cell(&id),
            cell(&self.account_id),
            opt_cell(&self.email),
            opt_cell(&self.display_name),
        ])
    }
}

impl SnapshotRow for PropertyRecord {
    const COLUMNS: &'static [&'static str] = &["organization", "organization_id", "key", "value"];
    fn write_csv<W: Write>(&self, w: &mut csv::Writer<W>) -> csv::Result<()> {
        let id = self.organization_id.to_string();
        let value = json_text(&self.value);
        w.write_record([cell(&self.organization), cell(&id), cell(&self.key), cell(&value)])
    }
}

impl SnapshotRow for DeskLinkRecord {
    const COLUMNS: &'static [&'static str] =
        &["organization", "organization_id", "service_desk_id", "project_key", "project_name"];
    fn write_csv<W: Write>(&self, w: &mut csv::Writer<W>) -> csv::Result<()> {
        let id = self.organization_id.to_string();
        w.write_record([
            cell(&self.organization),
            cell(&id),
            cell(&self.service_desk_id),
            opt_cell(&self.project_key),
            opt_cell(&self.project_name),
        ])
    }
}

/// A writer that hashes every byte it passes on.
struct Hashing<W> {
    inner: W,
    hasher: Sha256,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Row count and digest of one written data file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FileEntry {
    pub name: String,
    pub rows: u64,
    pub sha256: String,
}

/// A new file readable by its owner only.
fn create_private(path: &Path) -> io::Result<File> {
    let mut o = OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    o.open(path)
}

/// The UTF-8 byte order mark `--excel` puts before a CSV file's header, so
/// that Excel reads the file as UTF-8 rather than the system code page.
pub(crate) const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// Write one data file (`{kind}.{ext}`) into `dir`, fsync it, and return
/// its row count and sha256 (of every byte, a BOM included).
pub(crate) fn write_data_file<R: SnapshotRow>(
    dir: &Path,
    kind: &str,
    format: Format,
    bom: bool,
    rows: impl Iterator<Item = R>,
) -> Result<FileEntry, ExportError> {
    let name = format!("{kind}.{}", format.extension());
    let path = dir.join(&name);
    let ctx = || format!("cannot write {}", path.display());
    let file = create_private(&path).map_err(io_err(ctx()))?;
    let hashing = Hashing { inner: file, hasher: Sha256::new() };
    let mut count = 0u64;
    let hashing = match format {
        Format::Jsonl => {
            let mut w = BufWriter::with_capacity(WRITE_BUFFER, hashing);
            for row in rows {
                serde_json::to_writer(&mut w, &row).map_err(|e| io_err(ctx())(e.into()))?;
                w.write_all(b"\n").map_err(io_err(ctx()))?;
                count += 1;
            }
            w.into_inner().map_err(|e| io_err(ctx())(e.into_error()))?
        }
        Format::Csv => {
            let mut hashing = hashing;
            if bom {
                hashing.write_all(UTF8_BOM).map_err(io_err(ctx()))?;
            }
            let mut w = csv::WriterBuilder::new().buffer_capacity(WRITE_BUFFER).from_writer(hashing);
            let csv_err = |e: csv::Error| io_err(ctx())(e.into());
            w.write_record(R::COLUMNS).map_err(csv_err)?;
            for row in rows {
                row.write_csv(&mut w).map_err(csv_err)?;
                count += 1;
            }
            w.into_inner().map_err(|e| io_err(ctx())(e.into_error()))?
        }
    };
    let Hashing { inner, hasher } = hashing;
    inner.sync_all().map_err(io_err(ctx()))?;
    Ok(FileEntry { name, rows: count, sha256: hex::encode(hasher.finalize()) })
}

/// What the manifest says beyond the files.
#[derive(Debug, Clone)]
pub(crate) struct ManifestInfo {
    pub site: String,
    pub started_at: String,
    pub finished_at: String,
    pub format: Format,
    pub service_desks: Vec<String>,
}

/// The manifest as JSON, keys in the documented order.
pub(crate) fn manifest(info: &ManifestInfo, files: &[FileEntry]) -> Value {
    let mut m = Map::new();
    m.insert("format".into(), FORMAT_NAME.into());
    m.insert("format_version".into(), FORMAT_VERSION.into());
    m.insert("tool".into(), "jsm-orgs".into());
    m.insert("tool_version".into(), env!("CARGO_PKG_VERSION").into());
    m.insert("site".into(), info.site.clone().into());
    m.insert("started_at".into(), info.started_at.clone().into());
    m.insert("finished_at".into(), info.finished_at.clone().into());
    m.insert("data_format".into(), info.format.extension().into());
    if info.format == Format::Csv {
        m.insert("csv_formula_escape".into(), CSV_FORMULA_ESCAPE.into());
    }
    m.insert("service_desks".into(), Value::Array(info.service_desks.iter().cloned().map(Value::from).collect()));
    let mut f = Map::new();
    for file in files {
        let mut entry = Map::new();
        entry.insert("rows".into(), file.rows.into());
        entry.insert("sha256".into(), file.sha256.clone().into());
        f.insert(file.name.clone(), Value::Object(entry));
    }
    m.insert("files".into(), Value::Object(f));
    Value::Object(m)
}

/// The staging directory of one export and where it goes at the end.
/// Dropping it (error, panic, cancelled export) removes the directory.
pub(crate) struct Staging {
    tmp: tempfile::TempDir,
    out: PathBuf,
    parent: PathBuf,
    name: OsString,
    overwrite: bool,
}

impl Staging {
    /// Check `--out` and create the hidden staging directory beside it.
    /// Refuses an existing `--out` without `overwrite`, and with it anything
    /// but an empty directory or a jsm-orgs snapshot.
    pub fn prepare(out: &Path, overwrite: bool) -> Result<Staging, ExportError> {
        let name = out
            .file_name()
            .ok_or_else(|| ExportError::BadOut(out.to_path_buf(), "it names no directory"))?
            .to_os_string();
        let parent = match out.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        check_replaceable(out, overwrite)?;
        super::retention::remove_stale_staging(out);
        fs::create_dir_all(&parent).map_err(io_err(format!("cannot create {}", parent.display())))?;
        let prefix = format!(".{}.jsm-orgs-tmp-", name.to_string_lossy());
        let mut builder = tempfile::Builder::new();
        builder.prefix(&prefix);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            builder.permissions(fs::Permissions::from_mode(0o700));
        }
        let tmp = builder
            .tempdir_in(&parent)
            .map_err(io_err(format!("cannot create a staging directory in {}", parent.display())))?;
        Ok(Staging { tmp, out: out.to_path_buf(), parent, name, overwrite })
    }

    pub fn path(&self) -> &Path {
        self.tmp.path()
    }

    /// Write the manifest (last), fsync the directory and rename it onto
    /// `--out`; an existing snapshot there is swapped out and removed.
    pub fn install(self, manifest: &Value) -> Result<(), ExportError> {
        let path = self.tmp.path().join("manifest.json");
        let ctx = || format!("cannot write {}", path.display());
        let mut file = create_private(&path).map_err(io_err(ctx()))?;
        let mut text = serde_json::to_vec_pretty(manifest).expect("a JSON value serializes");
        text.push(b'\n');
        file.write_all(&text).map_err(io_err(ctx()))?;
        file.sync_all().map_err(io_err(ctx()))?;
        drop(file);
        sync_dir(self.tmp.path())?;

        // Re-check: --out may have appeared while the export ran.
        check_replaceable(&self.out, self.overwrite)?;
        let rename_err =
            |e| ExportError::Io(format!("cannot rename {} to {}", self.tmp.path().display(), self.out.display()), e);
        if fs::symlink_metadata(&self.out).is_ok() {
            let old = self.aside_name();
            fs::rename(&self.out, &old).map_err(io_err(format!("cannot move the old {} aside", self.out.display())))?;
            if let Err(e) = fs::rename(self.tmp.path(), &self.out) {
                // Put the old snapshot back; the staging dir is removed on drop.
                let _ = fs::rename(&old, &self.out);
                return Err(rename_err(e));
            }
            // Renamed away: nothing left for the guard to remove.
            let _ = self.tmp.keep();
            sync_dir(&self.parent)?;
            if let Err(e) = fs::remove_dir_all(&old) {
                tracing::warn!(
                    "the new snapshot is in place, but the old one could not be removed from {}: {e}",
                    old.display()
                );
            }
        } else {
            fs::rename(self.tmp.path(), &self.out).map_err(rename_err)?;
            let _ = self.tmp.keep();
            sync_dir(&self.parent)?;
        }
        Ok(())
    }

    /// A free hidden name beside `--out` for the snapshot being replaced.
    fn aside_name(&self) -> PathBuf {
        loop {
            let candidate = self.parent.join(format!(
                ".{}.jsm-orgs-old-{:08x}",
                self.name.to_string_lossy(),
                rand::random::<u32>()
            ));
            if fs::symlink_metadata(&candidate).is_err() {
                return candidate;
            }
        }
    }
}

/// `Ok` when `out` is absent, or present and `overwrite` allows replacing it.
fn check_replaceable(out: &Path, overwrite: bool) -> Result<(), ExportError> {
    let meta = match fs::symlink_metadata(out) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(ExportError::Io(format!("cannot inspect {}", out.display()), e)),
        Ok(meta) => meta,
    };
    if !overwrite {
        return Err(ExportError::OutExists(out.to_path_buf()));
    }
    if !meta.is_dir() {
        return Err(ExportError::BadOut(out.to_path_buf(), "it exists and is not a directory"));
    }
    let empty = fs::read_dir(out).map_err(io_err(format!("cannot read {}", out.display())))?.next().is_none();
    if empty || is_snapshot(out) {
        Ok(())
    } else {
        Err(ExportError::BadOut(
            out.to_path_buf(),
            "it exists and is neither empty nor a jsm-orgs snapshot, so --overwrite will not replace it",
        ))
    }
}

/// Make a directory's entries (creations, renames) durable.
fn sync_dir(dir: &Path) -> Result<(), ExportError> {
    #[cfg(unix)]
    {
        File::open(dir).and_then(|d| d.sync_all()).map_err(io_err(format!("cannot sync {}", dir.display())))?;
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn full_records() -> (OrgRecord, MemberRecord, PropertyRecord, DeskLinkRecord) {
        (
            OrgRecord {
                id: 1,
                name: "n".into(),
                uuid: Some("u".into()),
                scim_managed: Some(true),
                created: Some(json!({"epochMillis": 1})),
            },
            MemberRecord {
                organization: "n".into(),
                organization_id: 1,
                account_id: "a".into(),
                email: Some("e".into()),
                display_name: Some("d".into()),
            },
            PropertyRecord { organization: "n".into(), organization_id: 1, key: "k".into(), value: json!([1]) },
            DeskLinkRecord {
                project_key: Some("SUP".into()),
                project_name: Some("Support".into()),
                ..DeskLinkRecord::by_id("n", 1, "2")
            },
        )
    }

    fn keys<T: Serialize>(t: &T) -> Vec<String> {
        match serde_json::to_value(t).unwrap() {
            Value::Object(m) => m.keys().cloned().collect(),
            _ => unreachable!("records are structs"),
        }
    }

    #[test]
    fn csv_columns_follow_the_record_structs() {
        let (o, m, p, l) = full_records();
        assert_eq!(keys(&o), OrgRecord::COLUMNS);
        assert_eq!(keys(&m), MemberRecord::COLUMNS);
        assert_eq!(keys(&p), PropertyRecord::COLUMNS);
        assert_eq!(keys(&l), DeskLinkRecord::COLUMNS);
    }

    #[test]
    fn files_are_hashed_counted_and_escaped() {
        let dir = tempfile::tempdir().unwrap();
        let orgs = vec![
            OrgRecord { id: 2, name: "=cmd|' /C calc'!A0".into(), uuid: None, scim_managed: None, created: None },
            OrgRecord {
                id: 3,
                name: "a, \"b\"\nc".into(),
                uuid: Some("-u".into()),
                scim_managed: Some(false),
                created: Some(json!({"iso8601": "x"})),
            },
        ];
        let csv = write_data_file(dir.path(), "organizations", Format::Csv, false, orgs.clone().into_iter()).unwrap();
        let text = fs::read(dir.path().join("organizations.csv")).unwrap();
        assert_eq!(csv.rows, 2);
        assert_eq!(csv.sha256, hex::encode(Sha256::digest(&text)));
        assert_eq!(
            String::from_utf8(text).unwrap(),
            "id,name,uuid,scim_managed,created\n\
             2,'=cmd|' /C calc'!A0,,,\n\
             3,\"a, \"\"b\"\"\nc\",'-u,false,x\n"
        );
        let jsonl = write_data_file(dir.path(), "organizations", Format::Jsonl, false, orgs.into_iter()).unwrap();
        let text = fs::read_to_string(dir.path().join("organizations.jsonl")).unwrap();
        assert_eq!(jsonl.name, "organizations.jsonl");
        assert_eq!(
            text,
            "{\"id\":2,\"name\":\"=cmd|' /C calc'!A0\"}\n\
             {\"id\":3,\"name\":\"a, \\\"b\\\"\\nc\",\"uuid\":\"-u\",\"scim_managed\":false,\"created\":{\"iso8601\":\"x\"}}\n"
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(dir.path().join("organizations.jsonl")).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn manifest_keys_are_in_documented_order() {
        let info = ManifestInfo {
            site: "https://x".into(),
            started_at: "s".into(),
            finished_at: "f".into(),
            format: Format::Csv,
            service_desks: vec!["1".into()],
        };
        let files = [FileEntry { name: "organizations.csv".into(), rows: 1, sha256: "ab".into() }];
        let m = manifest(&info, &files);
        assert_eq!(
            keys(&m),
            [
                "format",
                "format_version",
                "tool",
                "tool_version",
                "site",
                "started_at",
                "finished_at",
                "data_format",
                "csv_formula_escape",
                "service_desks",
                "files"
            ]
        );
        assert_eq!(m["files"]["organizations.csv"]["rows"], 1);
        let jsonl = manifest(&ManifestInfo { format: Format::Jsonl, ..info }, &files);
        assert!(jsonl.get("csv_formula_escape").is_none());
        assert_eq!(jsonl["data_format"], "jsonl");
    }

    #[test]
    fn overwrite_refuses_what_is_not_a_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("snap");
        assert!(check_replaceable(&out, false).is_ok());
        fs::create_dir(&out).unwrap();
        assert!(matches!(check_replaceable(&out, false), Err(ExportError::OutExists(_))));
        assert!(check_replaceable(&out, true).is_ok(), "empty dir");
        fs::write(out.join("notes.txt"), "mine").unwrap();
        assert!(matches!(check_replaceable(&out, true), Err(ExportError::BadOut(..))));
        fs::write(out.join("manifest.json"), r#"{"format":"jsm-orgs-snapshot"}"#).unwrap();
        assert!(check_replaceable(&out, true).is_ok());
    }

    #[test]
    fn a_dropped_staging_directory_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("snap");
        let staging = Staging::prepare(&out, false).unwrap();
        let name = staging.path().file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.starts_with(".snap.jsm-orgs-tmp-"), "{name}");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(staging.path()).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o700);
        }
        drop(staging);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
