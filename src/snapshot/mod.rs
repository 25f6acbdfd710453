//! The snapshot format: what `export` writes and what `import`,
//! `sandbox --seed`, `verify` and `diff` read.
//!
//! Owns the four data files (JSONL or CSV) and the manifest with their sha256
//! and row counts, the CSV formula escape, the 0600/0700 files and the atomic
//! install ([`write`]); reading them back as typed records ([`read`],
//! [`manifest`]); checking them ([`verify`]); comparing two snapshots
//! ([`diff`], whose streaming merge is [`merge`]); housekeeping beside
//! `--out` ([`retention`]); and the export verb that fills a snapshot from a
//! site ([`export`], whose concurrent read plan is [`pipeline`]). Nothing
//! outside this module parses or writes snapshot files on its own, so the
//! format can change in one place.

pub mod diff;
mod export;
pub mod manifest;
mod merge;
mod pager;
mod pipeline;
pub mod read;
mod retention;
pub mod verify;
mod write;

pub use diff::{diff, DiffError, DiffOptions, DiffSummary};
pub use export::{export, ExportError, ExportOptions, ExportSummary};
pub use verify::{verify, VerifyReport};

/// Data format of the snapshot files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Jsonl,
    Csv,
}

impl Format {
    /// File extension, also the manifest's `data_format`.
    pub fn extension(self) -> &'static str {
        match self {
            Format::Jsonl => "jsonl",
            Format::Csv => "csv",
        }
    }
}
