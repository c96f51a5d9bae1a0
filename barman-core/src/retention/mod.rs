//! Retention: which backups a policy keeps, deleting backups and the WAL nobody needs any
//! more, and the `keep` annotations that protect backups — as Barman 3.x does it
//! (`barman/retention_policies.py`, `barman/backup.py`, `barman/annotations.py`).
//!
//! * [`policy`] — [`report`](policy::report), the pure retention report
//!   (`REDUNDANCY n`, `RECOVERY WINDOW OF n DAYS|WEEKS|MONTHS`, `minimum_redundancy`, keep
//!   annotations, FAILED backups not counted), property-tested; [`RetentionStatus`],
//!   [`KeepTarget`].
//! * [`annotations`] — `meta/<ID>-keep` and `meta/<ID>-delete_this`.
//! * [`wal_cleanup`] — which WAL a deletion may remove, and removing it with xlog.db kept
//!   consistent.
//! * [`delete`] — the `delete` command, `cron`'s retention step and the purge after a
//!   server's first backup, with Barman's messages as [`Notice`]s.
//! * [`repr`] — Python's `repr()` of a backup, which Barman prints when it refuses a delete.
//!
//! Reading the catalog is `crate::catalog`; this module decides and removes. Hook scripts
//! (`pre_delete_script`, `wal_delete_script`, …) are not run here yet.

pub mod annotations;
pub mod delete;
pub mod policy;
pub mod repr;
pub mod wal_cleanup;

pub use delete::{apply_retention, delete_backup, purge_before_first_backup, Level, Notice, RetentionSettings};
pub use policy::{BackupFacts, KeepTarget, RetentionStatus};

use crate::catalog::query::QueryError;
use crate::catalog::CatalogError;
use crate::storage::StorageError;

/// Why a retention operation stopped. Refusals Barman reports as messages (a kept backup,
/// minimum redundancy, a busy lock) are [`Notice`]s, not errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RetentionError {
    /// The catalog files (backup.info, xlog.db, locks).
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    /// A filesystem operation.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// A catalog question (history files, xlog.db rebuild).
    #[error(transparent)]
    Query(#[from] QueryError),
}

