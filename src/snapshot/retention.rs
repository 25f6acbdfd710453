//! Housekeeping beside `--out`: `--keep N` and stale staging folders.
//!
//! Owns what an export removes besides its own staging folder: the oldest
//! snapshots of the same site beside `--out` beyond `--keep N`, and staging
//! or set-aside folders (`.NAME.jsm-orgs-tmp-*`, `.NAME.jsm-orgs-old-*`) left
//! by an export that was killed more than a day ago. It must never remove
//! anything else: a folder is a snapshot only when its manifest names this
//! tool's format, and a leftover only by its exact hidden-name pattern.
//! Failures are logged, never fatal: the new snapshot is already in place.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::manifest::{is_snapshot, Manifest};

/// Leftover staging folders younger than this may belong to an export that
/// is still running (another cron job); they are left alone.
const STALE_AFTER: Duration = Duration::from_secs(24 * 60 * 60);

/// Markers in the hidden names of staging and set-aside folders.
const LEFTOVER_MARKERS: [&str; 2] = [".jsm-orgs-tmp-", ".jsm-orgs-old-"];

fn parent_of(out: &Path) -> PathBuf {
    match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Remove staging and set-aside folders beside `out` older than a day.
/// Returns what was removed.
pub(crate) fn remove_stale_staging(out: &Path) -> Vec<PathBuf> {
    let parent = parent_of(out);
    let Ok(entries) = fs::read_dir(&parent) else {
        return Vec::new();
    };
    let now = SystemTime::now();
    let mut removed = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with('.') || !LEFTOVER_MARKERS.iter().any(|m| name.contains(m)) {
            continue;
        }
        let Ok(meta) = entry.path().symlink_metadata() else { continue };
        let age = meta.modified().ok().and_then(|m| now.duration_since(m).ok());
        if !meta.is_dir() || !matches!(age, Some(a) if a >= STALE_AFTER) {
            continue;
        }
        match fs::remove_dir_all(entry.path()) {
            Ok(()) => {
                tracing::info!(folder = %entry.path().display(), "removed a staging folder left by an interrupted export");
                removed.push(entry.path());
            }
            Err(e) => tracing::warn!("cannot remove the stale staging folder {}: {e}", entry.path().display()),
        }
    }
    removed
}

/// After an export into `out`: keep the newest `keep` snapshots of the same
/// site beside it (by the manifest's `finished_at`; `out` always counts as
/// the newest) and remove the rest. Returns what was removed.
pub(crate) fn keep_newest(out: &Path, keep: usize) -> Vec<PathBuf> {
    let Ok(ours) = Manifest::read(out) else {
        return Vec::new();
    };
    let site = ours.site_key();
    let Ok(entries) = fs::read_dir(parent_of(out)) else {
        return Vec::new();
    };
    let out_name = out.file_name();
    let mut older: Vec<(String, PathBuf)> = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        let hidden = entry.file_name().to_string_lossy().starts_with('.');
        let is_dir = path.symlink_metadata().is_ok_and(|m| m.is_dir());
        if hidden || !is_dir || Some(entry.file_name().as_os_str()) == out_name || !is_snapshot(&path) {
            continue;
        }
        match Manifest::read(&path) {
            Ok(m) if m.site_key() == site => older.push((m.finished_at, path)),
            _ => {}
        }
    }
    // Newest first; `out` itself is the first of the `keep`.
    older.sort_by(|a, b| b.cmp(a));
    let mut removed = Vec::new();
    for (_, path) in older.into_iter().skip(keep.saturating_sub(1)) {
        match fs::remove_dir_all(&path) {
            Ok(()) => removed.push(path),
            Err(e) => tracing::warn!("--keep: cannot remove the older snapshot {}: {e}", path.display()),
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(dir: &Path, name: &str, site: &str, finished: &str) -> PathBuf {
        let path = dir.join(name);
        fs::create_dir(&path).unwrap();
        let manifest = format!(
            r#"{{"format":"jsm-orgs-snapshot","format_version":1,"site":"{site}","finished_at":"{finished}","data_format":"jsonl","files":{{}}}}"#
        );
        fs::write(path.join("manifest.json"), manifest).unwrap();
        path
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> =
            fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        v.sort();
        v
    }

    #[test]
    fn keep_removes_only_older_snapshots_of_the_same_site() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        let out = snapshot(d, "d4", "https://a.example", "2024-01-04T00:00:00.000Z");
        snapshot(d, "d1", "https://a.example", "2024-01-01T00:00:00.000Z");
        snapshot(d, "d3", "https://a.example/", "2024-01-03T00:00:00.000Z");
        snapshot(d, "d2", "https://a.example", "2024-01-02T00:00:00.000Z");
        snapshot(d, "other-site", "https://b.example", "2023-01-01T00:00:00.000Z");
        fs::create_dir(d.join("mine")).unwrap();
        fs::write(d.join("mine/manifest.json"), r#"{"format":"something-else"}"#).unwrap();
        fs::write(d.join("notes.txt"), "x").unwrap();
        let removed = keep_newest(&out, 2);
        assert_eq!(removed.len(), 2);
        assert_eq!(names(d), ["d3", "d4", "mine", "notes.txt", "other-site"]);
        assert!(keep_newest(&out, 1).iter().all(|p| p.ends_with("d3")));
        assert_eq!(names(d), ["d4", "mine", "notes.txt", "other-site"]);
    }

    #[test]
    fn only_old_leftovers_of_the_exact_pattern_are_removed() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        for name in [
            ".snap.jsm-orgs-tmp-abc",
            ".snap.jsm-orgs-old-1234",
            ".snap.jsm-orgs-tmp-new",
            ".keep-me",
            "x.jsm-orgs-tmp-1",
        ] {
            fs::create_dir(d.join(name)).unwrap();
        }
        let day_ago = SystemTime::now() - STALE_AFTER - Duration::from_secs(60);
        for name in [".snap.jsm-orgs-tmp-abc", ".snap.jsm-orgs-old-1234", ".keep-me", "x.jsm-orgs-tmp-1"] {
            fs::File::open(d.join(name)).unwrap().set_modified(day_ago).unwrap();
        }
        let removed = remove_stale_staging(&d.join("snap"));
        assert_eq!(removed.len(), 2);
        assert_eq!(names(d), [".keep-me", ".snap.jsm-orgs-tmp-new", "x.jsm-orgs-tmp-1"]);
    }
}
