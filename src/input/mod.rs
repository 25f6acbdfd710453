//! Input of `jsm-orgs import`: resolves the PATHs into an ordered list of
//! CSV/JSONL files, checks their headers up front, and streams their rows,
//! each validated into a [`Row`] (with `file:line`) or an [`InvalidRow`].
//!
//! It owns the file formats (CSV with a header, JSONL), the column
//! vocabulary, a row's kind and action, and every per-row validation rule
//! of the README, so that the planner only ever sees well-formed rows and the
//! report can name file, line and field for the rest. It must not talk to
//! the site, hold a whole file in memory, or keep state between two passes:
//! [`InputSet::rows`] is streamed once for planning and again for the ordered
//! report, and both passes must see the same rows with the same indices.

// `RowResult` carries an `InvalidRow` by value (the report's columns) as the
// planner's contract; rows are produced one at a time, so its size costs
// nothing worth a box.
#![allow(clippy::result_large_err)]

mod csv_file;
mod fields;
mod jsonl_file;
mod set;
mod text;
mod validate;

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use set::{read_as_input, InputSet, Rows};

/// What a row describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Organizations,
    Members,
    Properties,
    ServiceDesks,
}

impl Kind {
    /// The name used in files, reports and messages.
    pub fn as_str(&self) -> &'static str {
        match self {
            Kind::Organizations => "organizations",
            Kind::Members => "members",
            Kind::Properties => "properties",
            Kind::ServiceDesks => "service_desks",
        }
    }

    /// The actions a row of this kind may ask for; the first is the default.
    pub fn actions(&self) -> &'static [Action] {
        match self {
            Kind::Organizations => &[Action::Upsert, Action::Delete],
            Kind::Members => &[Action::Add, Action::Remove],
            Kind::Properties => &[Action::Set, Action::Delete],
            Kind::ServiceDesks => &[Action::Link, Action::Unlink],
        }
    }

    /// The action of a row that names none.
    pub fn default_action(&self) -> Action {
        self.actions()[0]
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a row asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    Upsert,
    Delete,
    Add,
    Remove,
    Set,
    Link,
    Unlink,
}

impl Action {
    /// The name used in files, reports and messages.
    pub fn as_str(&self) -> &'static str {
        match self {
            Action::Upsert => "upsert",
            Action::Delete => "delete",
            Action::Add => "add",
            Action::Remove => "remove",
            Action::Set => "set",
            Action::Link => "link",
            Action::Unlink => "unlink",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a row names its organization: by name (preferred, portable between
/// sites) or by the site's numeric id, or both (the name wins; the plan says
/// when the id names another organization).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum OrgRef {
    Name(String),
    Id(u64),
    NameAndId(String, u64),
}

impl OrgRef {
    /// The name, when the row gives one.
    pub fn name(&self) -> Option<&str> {
        match self {
            OrgRef::Name(n) | OrgRef::NameAndId(n, _) => Some(n),
            OrgRef::Id(_) => None,
        }
    }
}

/// Where a row came from; `line` is the 1-based physical line where the
/// record starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// The file as the user named it (a directory's files are `DIR/NAME`).
    pub file: Arc<str>,
    pub line: u64,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

/// The payload of a valid row.
#[derive(Debug, Clone, PartialEq)]
pub enum RowData {
    Organization {
        name: String,
    },
    /// A person named by account id, by email, or both (the id is tried
    /// first; the email is the fallback where the site does not know it).
    Member {
        org: OrgRef,
        account_id: Option<String>,
        email: Option<String>,
        display_name: Option<String>,
    },
    /// `value` is `Null` when a `delete` row leaves it out.
    Property {
        org: OrgRef,
        key: String,
        value: serde_json::Value,
    },
    ServiceDesk {
        org: OrgRef,
        service_desk_id: String,
    },
}

impl RowData {
    /// A member row naming the person by account id only.
    pub fn member(org: OrgRef, account_id: &str) -> RowData {
        RowData::Member { org, account_id: Some(account_id.to_owned()), email: None, display_name: None }
    }
}

/// A valid input row.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// 0-based position in the input, across all files.
    pub index: u64,
    pub source: Source,
    pub kind: Kind,
    pub action: Action,
    pub data: RowData,
}

/// An invalid row: it still gets exactly one report row, with as many of the
/// report's columns as could be read.
#[derive(Debug, Clone, PartialEq)]
pub struct InvalidRow {
    pub index: u64,
    pub source: Source,
    pub kind: Option<Kind>,
    /// The row's action (its default when none is given), or the text given
    /// when it is not a valid action.
    pub action: Option<String>,
    /// The organization's name (for organization rows: `name`).
    pub organization: Option<String>,
    pub organization_id: Option<String>,
    /// Account id, property key or service desk id.
    pub target: Option<String>,
    /// The column at fault, when the problem is one column's.
    pub field: Option<String>,
    /// `FILE:LINE: field `FIELD`: WHAT` (or `FILE:LINE: WHAT`).
    pub message: String,
}

/// One row of input, valid or not.
pub type RowResult = Result<Row, InvalidRow>;

/// A problem with the input as a whole: the run stops before sending
/// anything (exit code 2).
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("no input: name at least one file or directory")]
    NoPaths,
    #[error("an input path is empty")]
    EmptyPath,
    #[error("{}: {}", .path.display(), .source)]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{}: no *.csv or *.jsonl file in this directory", .0.display())]
    NoInputFiles(PathBuf),
    #[error("{}: not a .csv or .jsonl file", .path.display())]
    UnsupportedFormat { path: PathBuf },
    #[error("{}: not a regular file (the input is read twice, so pipes cannot be used)", .path.display())]
    NotAFile { path: PathBuf },
    #[error(
        "{}: cannot tell what the file holds from its columns ({}): expected `name` (organizations), \
         `account_id` (members), `key` (properties) or `service_desk_id` (service desks)",
        .path.display(),
        .columns.join(", ")
    )]
    UnknownKind { path: PathBuf, columns: Vec<String> },
    #[error(
        "{}: missing column `{}`{}, required for {}",
        .path.display(),
        .column,
        if *.column == "organization" { " (or `organization_id`)" } else { "" },
        .kind
    )]
    MissingColumn { path: PathBuf, kind: Kind, column: &'static str },
    #[error("{}: unknown column `{}`: did you mean `{}`?", .path.display(), .column, .suggestion)]
    NearMiss { path: PathBuf, column: String, suggestion: &'static str },
    #[error("{}: column `{}` appears more than once", .path.display(), .column)]
    DuplicateColumn { path: PathBuf, column: String },
    #[error("{}: header: {}", .path.display(), .message)]
    BadHeader { path: PathBuf, message: String },
    #[error("{}: {}", .path.display(), .message)]
    Manifest { path: PathBuf, message: String },
    #[error("{}: the file changed since the import started; run again", .path.display())]
    Changed { path: PathBuf },
}

impl InputError {
    fn io(path: &Path, source: io::Error) -> Self {
        InputError::Io { path: path.to_path_buf(), source }
    }
}
