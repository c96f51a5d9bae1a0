//! Geo-redundancy: a *passive node* is a Barman server whose backups and WAL come from
//! another Barman (the primary node) instead of PostgreSQL. A server is passive when its
//! configuration sets `primary_ssh_command`, an ssh command line that reaches the primary
//! Barman host (Barman's `barman/server.py`, `sync_*`).
//!
//! - [`info`]: `barman sync-info` on the primary — its catalog state as JSON;
//! - [`passive`]: the node's side — fetching that JSON over ssh (`sync-info --primary`, kept
//!   as `<backup_directory>/primary.info`), copying a backup (`sync-backup`, `SYNCING` while it
//!   runs) and WAL (`sync-wals`, resuming from `wals/sync-wals.info`) with rsync through the
//!   same ssh command, deciding what `cron` starts, and the `ssh` check;
//! - [`verify`]: what `sync-wals` checks before a copied WAL file is trusted.
//!
//! The passive node's catalog is an ordinary catalog afterwards: it is recovered from, listed
//! and retained as any other.

pub mod info;
pub mod passive;
pub mod verify;

pub use info::{sync_status, SyncPoint};

use crate::catalog::CatalogError;
use crate::storage::StorageError;

/// A synchronisation step failed.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// Catalog trouble (backup.info, xlog.db, locks).
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    /// A file operation failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// A command over ssh (or rsync) failed.
    #[error(transparent)]
    Ssh(#[from] crate::ssh::SshError),
    /// Barman's `SyncError`: the request cannot be served, in Barman's words (exit 1).
    #[error("{0}")]
    Failed(String),
}

/// A message for the operator, in Barman's words and at Barman's level.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// stdout.
    Info(String),
    /// `WARNING:`.
    Warning(String),
    /// `ERROR:` (the command exits 1).
    Error(String),
}
