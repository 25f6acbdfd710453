//! `verify DIR`: is this snapshot exactly what the export wrote?
//!
//! Owns the check a backup needs before anyone trusts it: the manifest is
//! readable and of a known format version, it lists one file of each of the
//! four kinds, every listed file is present, its sha256 and row count are
//! what the manifest says and every record parses, and no other data file
//! sits in the folder (an `import` of the folder would read it). Each file is
//! read once, hashing the very bytes that are parsed. It must not change
//! anything; `import` calls it before its first request.

use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::manifest::{Manifest, ManifestError, ManifestFile};
use super::read::{is_file_of, Records, SnapshotRecord, Unescape};
use crate::input::read_as_input;
use crate::model::{DeskLinkRecord, MemberRecord, OrgRecord, PropertyRecord, DATA_FILES};

/// What `verify` found in one file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileCheck {
    pub name: String,
    /// Rows the manifest promises (`None` for a file it does not list).
    pub expected_rows: Option<u64>,
    /// Records read (up to the first that does not parse).
    pub rows: u64,
    /// What is wrong with it; `None` when it is intact.
    pub problem: Option<String>,
}

/// The outcome of verifying a snapshot directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    pub snapshot: PathBuf,
    pub format_version: u64,
    pub site: String,
    pub data_format: String,
    pub files: Vec<FileCheck>,
}

impl VerifyReport {
    /// The files that are not as the manifest says.
    pub fn damaged(&self) -> impl Iterator<Item = &FileCheck> {
        self.files.iter().filter(|f| f.problem.is_some())
    }

    pub fn is_intact(&self) -> bool {
        self.damaged().next().is_none()
    }

    /// 0 intact, 1 damaged.
    pub fn exit_code(&self) -> u8 {
        if self.is_intact() {
            0
        } else {
            1
        }
    }

    /// One line per file, then a verdict; every line ends with a newline.
    pub fn human(&self) -> String {
        let mut out = String::new();
        for f in &self.files {
            match &f.problem {
                None => out.push_str(&format!("  ok       {} ({} rows)\n", f.name, f.rows)),
                Some(p) => out.push_str(&format!("  DAMAGED  {}: {p}\n", f.name)),
            }
        }
        let damaged = self.damaged().count();
        if damaged == 0 {
            out.push_str(&format!("{}: intact snapshot of {}\n", self.snapshot.display(), self.site));
        } else {
            let names: Vec<&str> = self.damaged().map(|f| f.name.as_str()).collect();
            out.push_str(&format!(
                "{}: damaged: {} ({} of {} files)\n",
                self.snapshot.display(),
                names.join(", "),
                damaged,
                self.files.len()
            ));
        }
        out
    }
}

/// Verify the snapshot in `dir`. `Err` means it is not a snapshot at all
/// (no or unreadable manifest, unknown format version): exit 2.
pub fn verify(dir: &Path) -> Result<VerifyReport, ManifestError> {
    let manifest = Manifest::read(dir)?;
    let unescape = if manifest.formula_escaped { Unescape::Every } else { Unescape::Marker };
    let mut files = Vec::new();
    for kind in DATA_FILES {
        let listed: Vec<(&String, &ManifestFile)> =
            manifest.files.iter().filter(|(name, _)| is_file_of(name, kind)).collect();
        match listed.as_slice() {
            [] => files.push(FileCheck {
                name: format!("{kind}.{}", manifest.data_format),
                expected_rows: None,
                rows: 0,
                problem: Some("manifest.json lists no such file".into()),
            }),
            [(name, entry)] => files.push(check_file(dir, name, entry, kind, unescape)),
            _ => files.push(FileCheck {
                name: kind.to_string(),
                expected_rows: None,
                rows: 0,
                problem: Some(format!("manifest.json lists {} files of this kind", listed.len())),
            }),
        }
    }
    files.extend(unlisted_files(dir, &manifest));
    Ok(VerifyReport {
        snapshot: dir.to_path_buf(),
        format_version: manifest.format_version,
        site: manifest.site,
        data_format: manifest.data_format,
        files,
    })
}

/// Data files in the folder that the manifest does not list.
fn unlisted_files(dir: &Path, manifest: &Manifest) -> Vec<FileCheck> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<FileCheck> = entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        // What `import DIR` would read (not hidden files, not its reports).
        .filter(|name| read_as_input(Path::new(name)))
        .filter(|name| !manifest.files.contains_key(name))
        .map(|name| FileCheck {
            name,
            expected_rows: None,
            rows: 0,
            problem: Some("not listed in manifest.json (an import of this folder would read it)".into()),
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

fn check_file(dir: &Path, name: &str, entry: &ManifestFile, kind: &str, unescape: Unescape) -> FileCheck {
    let path = dir.join(name);
    let (rows, sha256, parse_problem) = match kind {
        "organizations" => read_hashed::<OrgRecord>(&path, unescape),
        "members" => read_hashed::<MemberRecord>(&path, unescape),
        "properties" => read_hashed::<PropertyRecord>(&path, unescape),
        _ => read_hashed::<DeskLinkRecord>(&path, unescape),
    };
    let problem = parse_problem.or_else(|| {
        if rows != entry.rows {
            Some(format!("{rows} rows, manifest.json says {} (cut short or appended to)", entry.rows))
        } else if sha256.as_deref() != Some(entry.sha256.as_str()) {
            Some("sha256 differs from manifest.json (the file was changed after the export)".into())
        } else {
            None
        }
    });
    FileCheck { name: name.to_string(), expected_rows: Some(entry.rows), rows, problem }
}

/// Parse every record of `path`, hashing every byte; returns the records
/// read, the sha256 (when the file could be read to its end) and the first
/// problem.
fn read_hashed<T: SnapshotRecord>(path: &Path, unescape: Unescape) -> (u64, Option<String>, Option<String>) {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return (0, None, Some("missing".into())),
        Err(e) => return (0, None, Some(format!("cannot read: {e}"))),
    };
    let hashing = Hashing { inner: file, hasher: Sha256::new() };
    let mut records = match Records::<T, _>::new(path, hashing, unescape) {
        Ok(r) => r,
        Err(e) => return (0, None, Some(short(e.to_string(), path))),
    };
    let mut rows = 0u64;
    let mut problem = None;
    for r in records.by_ref() {
        match r {
            Ok(_) => rows += 1,
            Err(e) => {
                problem = Some(short(e.to_string(), path));
                break;
            }
        }
    }
    let Some(mut rest) = records.into_reader() else {
        return (rows, None, problem);
    };
    if let Err(e) = io::copy(&mut rest, &mut io::sink()) {
        return (rows, None, Some(format!("cannot read: {e}")));
    }
    (rows, Some(hex::encode(rest.hasher.finalize())), problem)
}

/// `DIR/NAME:LINE: what` → `line LINE: what` (the file is named already).
fn short(message: String, path: &Path) -> String {
    let prefix = format!("{}:", path.display());
    match message.strip_prefix(&prefix) {
        Some(rest) => format!("line {rest}"),
        None => message,
    }
}

/// A reader that hashes every byte it passes on.
struct Hashing<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}
