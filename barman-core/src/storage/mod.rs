//! Local filesystem access: the one place where barman-rs touches files and directories.
//!
//! * [`durable`] — writes that survive a crash: [`atomic_write`], [`durable_rename`],
//!   [`fsync_dir`], [`create_dir_all_durable`], [`append_durable`] and the streaming
//!   [`AtomicFile`]. DESIGN.md §3: temporary name in the same directory, fsync the file,
//!   rename, fsync the directory. Every catalog file (backup.info, xlog.db, identity.json,
//!   manifests, WAL entering `wals/`) goes through here.
//! * [`safe_path`] — [`safe_join`] and [`safe_join_no_symlink_escape`], the only way a name
//!   that came from outside (tar entry, manifest path, WAL name) becomes a path.
//! * [`fs`] — plain reads, listings and removals that name their path in every error.
//!
//! Every `io::Error` is wrapped here, where the syscall happens, into a [`StorageError`] that
//! says which operation failed on which path, so callers never pass a bare `io::Error` up.
//! Object storage may come later behind the same functions; nothing here knows about Barman's
//! catalog layout (that is `catalog`).

pub mod durable;
pub mod fs;
pub mod safe_path;

use std::fmt;
use std::io;
use std::path::PathBuf;

pub use durable::{
    append_durable, atomic_write, create_dir_all_durable, durable_rename, fsync_dir, sync_filesystem_of,
    AtomicFile, DIR_MODE, FILE_MODE,
};
pub use safe_path::{safe_file_name, safe_join, safe_join_no_symlink_escape, UnsafePathReason};

/// The filesystem operation that failed, named in [`StorageError::Io`]'s message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StorageOp {
    /// Opening an existing file or directory.
    Open,
    /// Creating a new file.
    Create,
    /// Reading bytes or a directory listing.
    Read,
    /// Writing bytes.
    Write,
    /// `fsync` of a file.
    SyncFile,
    /// `fsync` of a directory, which makes a rename or creation in it durable.
    SyncDir,
    /// Creating a directory.
    CreateDir,
    /// Changing permission bits.
    SetPermissions,
    /// Removing a file.
    Remove,
    /// `stat`/`lstat`.
    Metadata,
    /// Reading a symbolic link.
    ReadLink,
    /// Taking or releasing an advisory lock (`flock`).
    Lock,
}

impl fmt::Display for StorageOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StorageOp::Open => "open",
            StorageOp::Create => "create",
            StorageOp::Read => "read",
            StorageOp::Write => "write",
            StorageOp::SyncFile => "fsync",
            StorageOp::SyncDir => "fsync directory",
            StorageOp::CreateDir => "create directory",
            StorageOp::SetPermissions => "set permissions of",
            StorageOp::Remove => "remove",
            StorageOp::Metadata => "stat",
            StorageOp::ReadLink => "read symbolic link",
            StorageOp::Lock => "lock",
        })
    }
}

/// A filesystem failure, always naming the path (and the operation) it happened on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// A syscall on `path` failed.
    #[error("cannot {op} {}", path.display())]
    Io {
        /// What was being done.
        op: StorageOp,
        /// The file or directory it was done to.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// `rename(from, to)` failed.
    #[error("cannot rename {} to {}", from.display(), to.display())]
    Rename {
        /// The existing name.
        from: PathBuf,
        /// The new name.
        to: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// A name from outside would leave its base directory or is not a plain relative path.
    #[error("refusing path {relative:?} under {}: {reason}", base.display())]
    UnsafePath {
        /// The directory the name was meant to stay inside.
        base: PathBuf,
        /// The name as received.
        relative: PathBuf,
        /// Why it was refused.
        reason: UnsafePathReason,
    },
}

impl StorageError {
    /// Wraps `source` as a failure of `op` on `path`.
    pub fn io(op: StorageOp, path: impl Into<PathBuf>, source: io::Error) -> Self {
        StorageError::Io { op, path: path.into(), source }
    }

    /// The `io::ErrorKind` behind this error, when there is one (to test for `NotFound`,
    /// `AlreadyExists`, `WouldBlock`…).
    pub fn io_kind(&self) -> Option<io::ErrorKind> {
        match self {
            StorageError::Io { source, .. } | StorageError::Rename { source, .. } => {
                Some(source.kind())
            }
            StorageError::UnsafePath { .. } => None,
        }
    }

    /// True when the error is the operating system's "no such file or directory".
    pub fn is_not_found(&self) -> bool {
        self.io_kind() == Some(io::ErrorKind::NotFound)
    }
}
