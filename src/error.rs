//! The one map from a run's result to the process exit code.
//!
//! Owns the exit-code contract (0 ok, 1 some rows failed / snapshots differ or
//! are damaged, 2 bad usage or unreadable input and nothing was sent, 3
//! aborted) and decides the code of every error type of the crate here, in one
//! file, so that no verb picks a number of its own. It must not print or log:
//! `cmd` reports the error, this module only classifies it.

use crate::import::ImportError;
use crate::settings::UsageError;
use crate::snapshot::manifest::ManifestError;
use crate::snapshot::{DiffError, ExportError};

/// How a finished command ends the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Exit {
    /// Every row succeeded or was already in place; export complete;
    /// snapshots identical; snapshot intact.
    Ok,
    /// The run finished but some rows failed (see the report); snapshots
    /// differ; a snapshot is damaged.
    Failed,
    /// Bad usage or unreadable input: nothing was sent.
    Usage,
    /// Aborted: credentials or permission, site unreachable, local I/O,
    /// interrupted (Ctrl-C, SIGTERM, SIGHUP).
    Aborted,
}

impl Exit {
    pub fn code(self) -> u8 {
        match self {
            Exit::Ok => 0,
            Exit::Failed => 1,
            Exit::Usage => 2,
            Exit::Aborted => 3,
        }
    }
}

/// Every way a command can fail, so that [`Error::exit`] is the only place
/// that turns a failure into a code.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Usage(#[from] UsageError),
    #[error(transparent)]
    Import(#[from] ImportError),
    #[error(transparent)]
    Export(#[from] ExportError),
    /// `verify`: not a snapshot.
    #[error(transparent)]
    NotASnapshot(#[from] ManifestError),
    /// `diff`: a snapshot could not be read or compared.
    #[error(transparent)]
    Diff(#[from] DiffError),
    /// The sandbox or the demo could not run (bind, seed, runtime).
    #[error("{0:#}")]
    Setup(anyhow::Error),
    /// A local file could not be read or written.
    #[error("{0}")]
    Io(String),
}

impl Error {
    pub fn exit(&self) -> Exit {
        match self {
            Error::Usage(_) | Error::NotASnapshot(_) | Error::Diff(_) => Exit::Usage,
            Error::Import(e) => e.exit(),
            Error::Export(e) => e.exit(),
            Error::Setup(_) | Error::Io(_) => Exit::Aborted,
        }
    }

    pub fn exit_code(&self) -> u8 {
        self.exit().code()
    }
}

impl ImportError {
    pub fn exit(&self) -> Exit {
        match self {
            ImportError::Input(_) | ImportError::Report(_) | ImportError::Strict(..) | ImportError::Snapshot(_) => {
                Exit::Usage
            }
            ImportError::Io { .. } | ImportError::Aborted { .. } => Exit::Aborted,
        }
    }
}

impl ExportError {
    /// Usage for a bad `--out` (nothing was read), aborted for the rest.
    pub fn exit(&self) -> Exit {
        match self {
            ExportError::OutExists(_) | ExportError::BadOut(..) => Exit::Usage,
            _ => Exit::Aborted,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_follow_the_contract() {
        assert_eq!([Exit::Ok, Exit::Failed, Exit::Usage, Exit::Aborted].map(Exit::code), [0, 1, 2, 3]);
        let io = || std::io::Error::other("disk full");
        assert_eq!(Error::from(UsageError("x".into())).exit_code(), 2);
        assert_eq!(Error::from(ExportError::OutExists("x".into())).exit_code(), 2);
        assert_eq!(ExportError::BadOut("x".into(), "why").exit().code(), 2);
        assert_eq!(ExportError::Io("write".into(), io()).exit().code(), 3);
        assert_eq!(ExportError::UnknownServiceDesk("9".into()).exit().code(), 3);
        assert_eq!(ImportError::Strict(3, "r.csv".into()).exit().code(), 2);
        assert_eq!(ImportError::Io { path: "r.csv".into(), source: io() }.exit().code(), 3);
        assert_eq!(Error::Setup(anyhow::anyhow!("bind")).exit_code(), 3);
        // The worst outcome of several runs is the max.
        assert_eq!(Exit::Ok.max(Exit::Failed), Exit::Failed);
    }
}
