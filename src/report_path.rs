//! Where `--report` may be written, decided before any request is sent.
//!
//! Owns the rules that keep a report from destroying or polluting what it
//! reports on: it is never an input file, never a file inside an input
//! folder that a later run would read as input, never a folder; a device or
//! pipe (`/dev/null`, `/dev/stdout`, a FIFO) is written to as it is — never
//! replaced by a regular file, never chmod-ed, and without a `FILE.partial`
//! beside it; a missing parent folder is a usage error naming `--report`.
//! It only inspects the file system; the import writes.

use std::path::{Path, PathBuf};

use crate::input::read_as_input;

/// How the report is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportTarget {
    /// A regular file (or none yet): `FILE.partial` while the run goes, then
    /// a temporary file renamed over it.
    File,
    /// A device or pipe: written directly at the end, no `FILE.partial`.
    Direct,
}

/// Check `report` against the inputs: `paths` as given on the command line
/// and `files`, the input files they resolved to.
pub fn check(report: &Path, paths: &[PathBuf], files: &[PathBuf]) -> Result<ReportTarget, String> {
    let shown = report.display();
    if let Some(parent) = report.parent().filter(|p| !p.as_os_str().is_empty()) {
        if !parent.is_dir() {
            return Err(format!("--report {shown}: the folder {} does not exist", parent.display()));
        }
    }
    let under_dev = [Path::new("/dev"), Path::new("/proc")].iter().any(|d| report.starts_with(d));
    match std::fs::metadata(report) {
        Ok(m) if m.is_dir() => return Err(format!("--report {shown} is a folder: name a file")),
        Ok(m) if !m.is_file() || under_dev => return Ok(ReportTarget::Direct),
        Ok(_) => {
            let canonical = report.canonicalize().map_err(|e| format!("--report {shown}: {e}"))?;
            if files.iter().chain(paths).any(|f| f.canonicalize().is_ok_and(|f| f == canonical)) {
                return Err(format!("--report {shown} is an input file: it would be overwritten"));
            }
        }
        Err(_) if under_dev => return Err(format!("--report {shown}: no such device")),
        Err(_) => {}
    }
    let parent = match report.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(p) => p.to_path_buf(),
        None => PathBuf::from("."),
    };
    let parent = parent.canonicalize().map_err(|e| format!("--report {shown}: {e}"))?;
    for dir in paths.iter().filter(|p| p.is_dir()) {
        if dir.canonicalize().is_ok_and(|d| d == parent) && read_as_input(report) {
            return Err(format!(
                "--report {shown} is inside the input folder {}: the next run would read it as input \
                 (write it elsewhere, or name it jsm-orgs-report-….csv)",
                dir.display()
            ));
        }
    }
    Ok(ReportTarget::File)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_folders_and_missing_parents_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("in");
        std::fs::create_dir(&dir).unwrap();
        let input = dir.join("orgs.csv");
        std::fs::write(&input, "name\nA\n").unwrap();
        let paths = vec![dir.clone()];
        let files = vec![input.clone()];
        let err = |p: &Path| check(p, &paths, &files).unwrap_err();
        assert!(err(&input).contains("is an input file"));
        assert!(err(&dir.join("report.csv")).contains("inside the input folder"));
        assert!(err(&dir.join("REPORT.JSONL")).contains("inside the input folder"));
        assert!(err(&dir).contains("is a folder"));
        let missing = tmp.path().join("nope").join("r.csv");
        assert!(err(&missing).contains("--report") && err(&missing).contains("does not exist"));
        for ok in ["report.txt", "jsm-orgs-report-1.csv", ".report.csv"] {
            assert_eq!(check(&dir.join(ok), &paths, &files), Ok(ReportTarget::File), "{ok}");
        }
        assert_eq!(check(&tmp.path().join("r.csv"), &paths, &files), Ok(ReportTarget::File));
        // The input file given by another spelling is still the input.
        let other = dir.join(".").join("orgs.csv");
        assert!(check(&other, std::slice::from_ref(&input), &files).is_err());
    }

    #[cfg(unix)]
    #[test]
    fn devices_are_written_directly() {
        assert_eq!(check(Path::new("/dev/null"), &[], &[]), Ok(ReportTarget::Direct));
        assert_eq!(check(Path::new("/dev/stdout"), &[], &[]), Ok(ReportTarget::Direct));
    }
}
