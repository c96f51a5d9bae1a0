//! Where each file of a server's catalog lives, as Barman 3.x lays it out
//! (`shared/reference/barman-formats.md` §1.1; `barman/config.py` defaults, `barman/xlog.py`
//! `hash_dir`, `Server.move_wal_file_to_errors_directory`).
//!
//! ```text
//! <backup_directory>/                 default <barman_home>/<server>
//!   identity.json
//!   meta/<ID>-backup.info, meta/<ID>-<annotation>   (e.g. <ID>-keep)
//!   base/<ID>/…                       basebackups_directory
//!   wals/<TLI+LOG>/<name>             wals_directory; .history files at its top
//!   wals/<server>-xlog.db             xlogdb_directory (defaults to wals_directory)
//!   incoming/  streaming/  errors/
//! <lock_directory>/.<server>-*.lock   barman_lock_directory (default barman_home)
//! ```
//!
//! [`ServerCatalog`] is built from plain paths; the configuration module fills in the
//! configurable directories with the `with_*` methods. It computes paths only — except
//! [`ServerCatalog::create_skeleton`] and [`ServerCatalog::backup_ids`].

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::path::{Path, PathBuf};

use time::OffsetDateTime;

use super::backup_id::BackupId;
use super::lock::{CatalogLock, LockKind};
use super::CatalogError;
use crate::storage::{self, create_dir_all_durable, safe_file_name, StorageError, DIR_MODE};
use crate::config::{GlobalSettings, ServerConfig};
use crate::wal::WalFileName;

/// Why a file was moved to `errors/`: the last part of its new name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ErrorReason {
    /// Same name already archived with different content (`.duplicate`).
    Duplicate,
    /// Not a WAL file name, or not a regular file (`.unknown`).
    Unknown,
    /// Failed processing (`.error`; `check` counts these as "not relevant").
    Error,
    /// Another suffix (barman-rs uses e.g. `corrupt`, `foreign` for validator rejections;
    /// Barman's `check` counts those as "unknown failure").
    Other(String),
}

impl fmt::Display for ErrorReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ErrorReason::Duplicate => "duplicate",
            ErrorReason::Unknown => "unknown",
            ErrorReason::Error => "error",
            ErrorReason::Other(s) => s,
        })
    }
}

/// The paths of one server's catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerCatalog {
    server_name: String,
    backup_directory: PathBuf,
    basebackups_directory: PathBuf,
    wals_directory: PathBuf,
    xlogdb_directory: PathBuf,
    incoming_directory: PathBuf,
    streaming_directory: PathBuf,
    errors_directory: PathBuf,
    lock_directory: PathBuf,
}

impl ServerCatalog {
    /// The layout with Barman's defaults under `backup_directory` (normally
    /// `<barman_home>/<server>`), with locks in `lock_directory` (normally `barman_home`).
    pub fn new(
        server_name: impl Into<String>,
        backup_directory: impl Into<PathBuf>,
        lock_directory: impl Into<PathBuf>,
    ) -> Self {
        let backup_directory = backup_directory.into();
        let wals = backup_directory.join("wals");
        ServerCatalog {
            server_name: server_name.into(),
            basebackups_directory: backup_directory.join("base"),
            xlogdb_directory: wals.clone(),
            wals_directory: wals,
            incoming_directory: backup_directory.join("incoming"),
            streaming_directory: backup_directory.join("streaming"),
            errors_directory: backup_directory.join("errors"),
            lock_directory: lock_directory.into(),
            backup_directory,
        }
    }

    /// The layout a server's configuration describes: every `*_directory` option as resolved
    /// by the configuration loader (which applies Barman's defaults under
    /// `backup_directory`), locks in the global `barman_lock_directory`.
    pub fn from_config(server: &ServerConfig, global: &GlobalSettings) -> Self {
        ServerCatalog::new(server.name.clone(), &server.backup_directory, &global.barman_lock_directory)
            .with_basebackups_directory(&server.basebackups_directory)
            .with_wals_directory(&server.wals_directory)
            .with_xlogdb_directory(&server.xlogdb_directory)
            .with_incoming_directory(&server.incoming_wals_directory)
            .with_streaming_directory(&server.streaming_wals_directory)
            .with_errors_directory(&server.errors_directory)
    }

    /// Overrides `basebackups_directory`.
    pub fn with_basebackups_directory(mut self, dir: impl Into<PathBuf>) -> Self {
        self.basebackups_directory = dir.into();
        self
    }

    /// Overrides `wals_directory` (and `xlogdb_directory` unless set afterwards, as in
    /// Barman where it defaults to the WAL directory).
    pub fn with_wals_directory(mut self, dir: impl Into<PathBuf>) -> Self {
        self.wals_directory = dir.into();
        self.xlogdb_directory = self.wals_directory.clone();
        self
    }

    /// Overrides `xlogdb_directory`.
    pub fn with_xlogdb_directory(mut self, dir: impl Into<PathBuf>) -> Self {
        self.xlogdb_directory = dir.into();
        self
    }

    /// Overrides `incoming_wals_directory`.
    pub fn with_incoming_directory(mut self, dir: impl Into<PathBuf>) -> Self {
        self.incoming_directory = dir.into();
        self
    }

    /// Overrides `streaming_wals_directory`.
    pub fn with_streaming_directory(mut self, dir: impl Into<PathBuf>) -> Self {
        self.streaming_directory = dir.into();
        self
    }

    /// Overrides `errors_directory`.
    pub fn with_errors_directory(mut self, dir: impl Into<PathBuf>) -> Self {
        self.errors_directory = dir.into();
        self
    }

    /// The server (configuration section) name.
    pub fn server_name(&self) -> &str {
        &self.server_name
    }

    /// `backup_directory`.
    pub fn backup_directory(&self) -> &Path {
        &self.backup_directory
    }

    /// `basebackups_directory` (`base/`).
    pub fn basebackups_directory(&self) -> &Path {
        &self.basebackups_directory
    }

    /// `wals_directory`.
    pub fn wals_directory(&self) -> &Path {
        &self.wals_directory
    }

    /// `incoming_wals_directory`, where `archive_command`/`put-wal` deliver.
    pub fn incoming_directory(&self) -> &Path {
        &self.incoming_directory
    }

    /// `streaming_wals_directory`, where the WAL receiver writes.
    pub fn streaming_directory(&self) -> &Path {
        &self.streaming_directory
    }

    /// `errors_directory`.
    pub fn errors_directory(&self) -> &Path {
        &self.errors_directory
    }

    /// `barman_lock_directory`.
    pub fn lock_directory(&self) -> &Path {
        &self.lock_directory
    }

    /// `identity.json` (fixed name in `backup_directory`).
    pub fn identity_path(&self) -> PathBuf {
        self.backup_directory.join("identity.json")
    }

    /// `meta/` (not configurable in Barman).
    pub fn meta_dir(&self) -> PathBuf {
        self.backup_directory.join("meta")
    }

    /// `meta/<ID>-backup.info`, where backup.info lives since Barman 3.13.2.
    pub fn backup_info_path(&self, id: BackupId) -> PathBuf {
        self.meta_dir().join(format!("{id}-backup.info"))
    }

    /// `base/<ID>/backup.info`, where Barman < 3.13.2 kept it.
    pub fn legacy_backup_info_path(&self, id: BackupId) -> PathBuf {
        self.backup_dir(id).join("backup.info")
    }

    /// `meta/<ID>-<key>`: an annotation such as `keep` (Barman ≥ 3.13.3; before, it was
    /// `base/<ID>/annotations/<key>`). `key` is a fixed word chosen by code, never user input.
    pub fn annotation_path(&self, id: BackupId, key: &str) -> PathBuf {
        self.meta_dir().join(format!("{id}-{key}"))
    }

    /// `meta/<ID>-keep`: contains `full` or `standalone`, no newline.
    pub fn keep_path(&self, id: BackupId) -> PathBuf {
        self.annotation_path(id, "keep")
    }

    /// `base/<ID>/`.
    pub fn backup_dir(&self, id: BackupId) -> PathBuf {
        self.basebackups_directory.join(id.as_str())
    }

    /// `base/<ID>/data/`: PGDATA of a plain backup, or the tars of a compressed one.
    pub fn backup_data_dir(&self, id: BackupId) -> PathBuf {
        self.backup_dir(id).join("data")
    }

    /// `<xlogdb_directory>/<server>-xlog.db` (named `xlog.db` before Barman 3.13).
    pub fn xlogdb_path(&self) -> PathBuf {
        self.xlogdb_directory.join(format!("{}-xlog.db", self.server_name))
    }

    /// The directory an archived WAL file goes to: `wals/<TLI+LOG>/` for segments, `.partial`
    /// and `.backup` files; `wals/` itself for `.history` files (Barman's `hash_dir` is empty
    /// for them).
    pub fn wal_dir(&self, name: &WalFileName) -> PathBuf {
        match name.segment() {
            Some(segment) => self.wals_directory.join(segment.hash_dir()),
            None => self.wals_directory.clone(),
        }
    }

    /// Where an archived WAL file is stored. The name never carries a compression suffix.
    pub fn wal_path(&self, name: &WalFileName) -> PathBuf {
        self.wal_dir(name).join(name.to_string())
    }

    /// `errors/<name>.<UTC %Y%m%dT%H%M%SZ>.<reason>` for a file rejected at `when` — the
    /// reason last, as Barman names them. `name` comes from outside (a file found in
    /// `incoming/`), so it goes through the checked join and may not contain `/`.
    pub fn error_file_path(
        &self,
        name: &OsStr,
        when: OffsetDateTime,
        reason: &ErrorReason,
    ) -> Result<PathBuf, StorageError> {
        let utc = when.to_offset(time::UtcOffset::UTC);
        let mut file = OsString::from(name);
        file.push(format!(
            ".{:04}{:02}{:02}T{:02}{:02}{:02}Z.{reason}",
            utc.year(),
            u8::from(utc.month()),
            utc.day(),
            utc.hour(),
            utc.minute(),
            utc.second()
        ));
        safe_file_name(&self.errors_directory, name)?;
        Ok(self.errors_directory.join(file))
    }

    /// `<lock_directory>/.<server>-….lock` for `kind`.
    pub fn lock_path(&self, kind: &LockKind) -> PathBuf {
        self.lock_directory.join(kind.file_name(&self.server_name))
    }

    /// Takes a lock of this server with Barman's waiting policy for its kind.
    pub fn lock(&self, kind: LockKind) -> Result<CatalogLock, CatalogError> {
        CatalogLock::acquire(&self.lock_directory, &self.server_name, kind)
    }

    /// Creates every directory of the layout that is missing (mode 0700), as Barman's
    /// commands do on first touching a server.
    pub fn create_skeleton(&self) -> Result<(), StorageError> {
        for dir in [
            &self.backup_directory,
            &self.basebackups_directory,
            &self.meta_dir(),
            &self.wals_directory,
            &self.xlogdb_directory,
            &self.incoming_directory,
            &self.streaming_directory,
            &self.errors_directory,
        ] {
            create_dir_all_durable(dir, DIR_MODE)?;
        }
        Ok(())
    }

    /// The IDs of every backup with an info file, in either place (`meta/*-backup.info`, or
    /// legacy `base/*/backup.info`), sorted. Names that are not backup IDs are skipped with a
    /// warning.
    pub fn backup_ids(&self) -> Result<Vec<BackupId>, StorageError> {
        let mut ids = Vec::new();
        for name in storage::fs::list_dir(&self.meta_dir())? {
            let Some(id) = name.to_str().and_then(|n| n.strip_suffix("-backup.info")) else {
                continue;
            };
            match id.parse() {
                Ok(id) => ids.push(id),
                Err(_) => tracing::warn!(file = ?name, "ignoring backup.info with a malformed backup ID"),
            }
        }
        for name in storage::fs::list_dir(&self.basebackups_directory)? {
            let Some(id) = name.to_str().and_then(|n| n.parse::<BackupId>().ok()) else {
                continue;
            };
            if storage::fs::exists(&self.legacy_backup_info_path(id))? {
                ids.push(id);
            }
        }
        ids.sort();
        ids.dedup();
        Ok(ids)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::UnsafePathReason;

    fn catalog() -> ServerCatalog {
        ServerCatalog::new("pg", "/var/lib/barman-sample/pg", "/var/lib/barman-sample")
    }

    #[test]
    fn paths_match_barman() {
        let c = catalog();
        let id: BackupId = "20261125T123233".parse().unwrap();
        let p = |p: PathBuf| p.to_str().unwrap().to_owned();
        assert_eq!(p(c.identity_path()), "/var/lib/barman-sample/pg/identity.json");
        assert_eq!(p(c.backup_info_path(id)), "/var/lib/barman-sample/pg/meta/20261125T123233-backup.info");
        assert_eq!(p(c.legacy_backup_info_path(id)), "/var/lib/barman-sample/pg/base/20261125T123233/backup.info");
        assert_eq!(p(c.keep_path(id)), "/var/lib/barman-sample/pg/meta/20261125T123233-keep");
        assert_eq!(p(c.backup_data_dir(id)), "/var/lib/barman-sample/pg/base/20261125T123233/data");
        assert_eq!(p(c.xlogdb_path()), "/var/lib/barman-sample/pg/wals/pg-xlog.db");
        let wal = |n: &str| p(c.wal_path(&n.parse().unwrap()));
        assert_eq!(wal("000000010000000000000007"), "/var/lib/barman-sample/pg/wals/0000000100000000/000000010000000000000007");
        assert_eq!(wal("000000010000000000000006.00000028.backup"), "/var/lib/barman-sample/pg/wals/0000000100000000/000000010000000000000006.00000028.backup");
        assert_eq!(wal("000000020000000100000003.partial"), "/var/lib/barman-sample/pg/wals/0000000200000001/000000020000000100000003.partial");
        assert_eq!(wal("00000002.history"), "/var/lib/barman-sample/pg/wals/00000002.history");
        assert_eq!(p(c.lock_path(&LockKind::ServerXlogDb)), "/var/lib/barman-sample/.pg-xlogdb.lock");
        let moved = c.clone().with_wals_directory("/w");
        assert_eq!(p(moved.xlogdb_path()), "/w/pg-xlog.db");
        assert_eq!(p(moved.with_xlogdb_directory("/x").xlogdb_path()), "/x/pg-xlog.db");
    }

    #[test]
    fn error_file_names_put_the_reason_last() {
        let c = catalog();
        let when = OffsetDateTime::from_unix_timestamp(1795610077).unwrap()
            .to_offset(time::UtcOffset::from_hms(2, 0, 0).unwrap());
        let p = c.error_file_path(OsStr::new("000000010000000000000005"), when, &ErrorReason::Duplicate).unwrap();
        assert_eq!(p.to_str().unwrap(), "/var/lib/barman-sample/pg/errors/000000010000000000000005.20261125T123437Z.duplicate");
        let p = c.error_file_path(OsStr::new("garbage.txt"), when, &ErrorReason::Unknown).unwrap();
        assert!(p.ends_with("garbage.txt.20261125T123437Z.unknown"));
        for hostile in ["../x", "a/b", "", ".."] {
            let err = c.error_file_path(OsStr::new(hostile), when, &ErrorReason::Unknown);
            assert!(matches!(err, Err(StorageError::UnsafePath { .. })), "{hostile:?} {err:?}");
        }
        let err = c.error_file_path(OsStr::new("a/b"), when, &ErrorReason::Unknown).unwrap_err();
        assert!(matches!(err, StorageError::UnsafePath { reason: UnsafePathReason::Separator, .. }));
    }

    #[test]
    fn skeleton_and_backup_listing() {
        let dir = tempfile::tempdir().unwrap();
        let c = ServerCatalog::new("pg", dir.path().join("pg"), dir.path());
        c.create_skeleton().unwrap();
        for sub in ["base", "meta", "wals", "incoming", "streaming", "errors"] {
            assert!(dir.path().join("pg").join(sub).is_dir(), "{sub}");
        }
        assert!(c.backup_ids().unwrap().is_empty());
        std::fs::write(c.meta_dir().join("20261125T123610-backup.info"), b"").unwrap();
        std::fs::write(c.meta_dir().join("20261125T123233-keep"), b"standalone").unwrap();
        std::fs::write(c.meta_dir().join("junk-backup.info"), b"").unwrap();
        std::fs::create_dir_all(c.backup_dir("20261125T123210".parse().unwrap())).unwrap();
        std::fs::write(c.legacy_backup_info_path("20261125T123210".parse().unwrap()), b"").unwrap();
        std::fs::create_dir_all(c.backup_dir("20261125T123233".parse().unwrap())).unwrap();
        let ids: Vec<String> = c.backup_ids().unwrap().iter().map(|i| i.to_string()).collect();
        assert_eq!(ids, ["20261125T123210", "20261125T123610"]);
    }
}
