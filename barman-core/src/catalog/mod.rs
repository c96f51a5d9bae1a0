//! The catalog on disk, byte-compatible with Barman 3.x so either tool can take over a
//! server's directory from the other (DESIGN.md §2; samples in
//! `shared/reference/barman-formats.md` §1 and `testdata/catalog/`).
//!
//! * [`layout`] — [`ServerCatalog`]: where each file of a server lives (`base/`, `meta/`,
//!   `wals/<hash>/`, `<server>-xlog.db`, `incoming/`, `streaming/`, `errors/`, locks).
//! * [`backup_id`] — [`BackupId`], [`BackupStatus`], [`BackupSelector`] (`latest`,
//!   `oldest`, `last-failed`, `latest-full`, names).
//! * [`backup_info`] — [`BackupInfo`], `meta/<ID>-backup.info` (`barman/infofile.py`).
//! * [`xlogdb`] — [`XlogDbEntry`], the `<server>-xlog.db` WAL index.
//! * [`identity`] — [`ServerIdentity`], `identity.json`.
//! * [`lock`] — [`CatalogLock`], Barman's `.<server>-*.lock` files (`barman/lockfile.py`).
//! * [`pyliteral`] and [`timestamp`] — the Python `repr()` and `str(datetime)` formats
//!   Barman's files are made of; [`pyjson`] — Python's `json.dumps`, for identity.json and
//!   every JSON text Barman prints.
//!
//! Reading is lenient where Barman is (comments and blank lines, 3/4/5-column xlog.db
//! lines, the pre-3.13.2 `base/<ID>/backup.info` location) and strict elsewhere, with
//! `file:line` errors. Writing always goes through `storage::durable`. What happens to the
//! files (backups, archiving, retention) is left to other modules.

pub mod backup_id;
pub mod backup_info;
pub mod identity;
pub mod layout;
pub mod lock;
pub mod process;
pub mod pyjson;
pub mod pyliteral;
pub mod query;
pub mod timestamp;
pub mod xlogdb;

use std::fmt;
use std::path::PathBuf;

pub use backup_id::{BackupId, BackupSelector, BackupStatus, BackupSummary};
pub use backup_info::{BackupInfo, Tablespace};
pub use identity::ServerIdentity;
pub use layout::{ErrorReason, ServerCatalog};
pub use lock::{CatalogLock, LockKind};
pub use pyliteral::PyValue;
pub use timestamp::BarmanTimestamp;
pub use xlogdb::XlogDbEntry;

use crate::storage::StorageError;

/// What is wrong with one line of a catalog file.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ParseProblem {
    /// The line is not valid UTF-8.
    NotUtf8,
    /// A backup.info line without `=`.
    MissingEquals,
    /// A backup.info line whose key is empty.
    EmptyKey,
    /// An unknown backup.info key that could not be written back as read (it starts with
    /// `#` once its leading spaces are stripped).
    UnwritableKey(String),
    /// A value that does not have its field's format.
    BadValue {
        /// The key (backup.info) or column name (xlog.db).
        field: String,
        /// The value as found.
        value: String,
        /// What was expected instead.
        expected: &'static str,
    },
    /// An xlog.db line with a column count other than 3, 4 or 5.
    ColumnCount {
        /// How many whitespace-separated columns were found.
        found: usize,
    },
}

impl fmt::Display for ParseProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseProblem::NotUtf8 => f.write_str("not valid UTF-8"),
            ParseProblem::MissingEquals => f.write_str("expected key=value"),
            ParseProblem::EmptyKey => f.write_str("empty key before '='"),
            ParseProblem::UnwritableKey(key) => write!(f, "unsupported key {key:?}"),
            ParseProblem::BadValue { field, value, expected } => {
                write!(f, "{field}: {value:?} is not {expected}")
            }
            ParseProblem::ColumnCount { found } => write!(
                f,
                "expected 3 to 5 columns (name, size, time[, compression[, encryption]]), found {found}"
            ),
        }
    }
}

/// A malformed line, before the file it came from is known.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {problem}")]
pub struct ParseError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong with it.
    pub problem: ParseProblem,
}

impl ParseError {
    /// Attaches the file the line came from.
    pub fn in_file(self, path: impl Into<PathBuf>) -> CatalogError {
        CatalogError::Malformed { path: path.into(), line: self.line, problem: self.problem }
    }
}

/// Errors of the catalog: I/O (with its path), malformed files (with `file:line`), IDs and
/// selectors that name nothing, and busy locks (with the holder's PID).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CatalogError {
    /// A filesystem operation failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// A catalog file has a line barman-rs cannot read.
    #[error("{}:{line}: {problem}", path.display())]
    Malformed {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        problem: ParseProblem,
    },
    /// Not `YYYYMMDDTHHMMSS`.
    #[error("{0:?} is not a backup ID (expected YYYYMMDDTHHMMSS)")]
    InvalidBackupId(String),
    /// Not one of Barman's statuses.
    #[error("{0:?} is not a backup status (EMPTY, STARTED, WAITING_FOR_WALS, DONE, FAILED, SYNCING)")]
    InvalidBackupStatus(String),
    /// No backup matches the ID, shortcut or name.
    #[error("unknown backup '{selector}'")]
    UnknownBackup {
        /// What the user typed.
        selector: String,
    },
    /// A `backup_name` shared by several backups.
    #[error("multiple backups found matching name '{name}' (try using backup ID instead): {}",
        ids.iter().map(|i| i.as_str()).collect::<Vec<_>>().join(" "))]
    AmbiguousBackupName {
        /// The name.
        name: String,
        /// The matching backups.
        ids: Vec<BackupId>,
    },
    /// Neither `meta/<ID>-backup.info` nor the legacy `base/<ID>/backup.info` exists.
    #[error("backup {id}: no {} nor {}", meta.display(), legacy.display())]
    BackupInfoMissing {
        /// The backup.
        id: BackupId,
        /// Where barman-rs (and Barman ≥ 3.13.2) keeps it.
        meta: PathBuf,
        /// Where Barman < 3.13.2 kept it.
        legacy: PathBuf,
    },
    /// A value that cannot be written so that it reads back the same (a newline in a plain
    /// text field, the text `None`, whitespace in an xlog.db column…).
    #[error("cannot write {field}={value:?}: {reason}")]
    Unrepresentable {
        /// The key or column.
        field: String,
        /// The value.
        value: String,
        /// Why.
        reason: &'static str,
    },
    /// identity.json is not JSON of the expected shape.
    #[error("{}: {problem}", path.display())]
    Identity {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// The xlog.db does not end with a newline (a torn append); appending would glue the new
    /// line onto the broken one.
    #[error("{} does not end with a newline (interrupted write?); rebuild it before appending", path.display())]
    XlogDbTornTail {
        /// The file.
        path: PathBuf,
    },
    /// Another process (or another handle in this one) holds the lock.
    #[error("{} is held by {}", path.display(), match pid { Some(p) => format!("process {p}"), None => "another process (PID unknown)".to_owned() })]
    LockBusy {
        /// The lock file.
        path: PathBuf,
        /// The PID written in it by the holder, when readable.
        pid: Option<u32>,
    },
}
