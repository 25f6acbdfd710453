//! Seeding the sandbox from a snapshot directory (`sandbox --seed DIR`).
//!
//! Reads the four data files through the snapshot module's reader (the one
//! `import`, `verify` and `diff` use), so the sandbox understands exactly
//! the snapshots the tool writes: JSONL or CSV, the formula escape, an
//! unreadable manifest refused rather than guessed around. It must not
//! write anything or talk to the network.

use std::path::Path;

use anyhow::Result;

use super::store::SeedRecords;
use crate::snapshot::read::SnapshotDir;

/// Reads every data file of a snapshot directory.
pub(crate) fn load(dir: &Path) -> Result<SeedRecords> {
    let snap = SnapshotDir::open(dir)?;
    Ok(SeedRecords {
        organizations: snap.read_all()?,
        members: snap.read_all()?,
        properties: snap.read_all()?,
        service_desks: snap.read_all()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn a_missing_directory_or_broken_manifest_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load(&dir.path().join("absent")).is_err());
        fs::write(dir.path().join("manifest.json"), "{not json").unwrap();
        let err = format!("{:#}", load(dir.path()).unwrap_err());
        assert!(err.contains("manifest.json"), "{err}");
    }
}
