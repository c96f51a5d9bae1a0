//! Deleting backups: the `delete` command (Barman's `Server.delete_backup` and
//! `perform_delete_backup`), the deletion itself (`BackupManager.delete_backup`), retention
//! applied by `cron` (`cron_retention_policy`) and the WAL purge after a server's first
//! backup (`_purge_unused_wal_files`).
//!
//! The order of a deletion is Barman's, so that an interruption at any point is finished by
//! the next `cron` or `delete` and never leaves a catalog that lists data it lacks without
//! saying so:
//!
//! 1. `meta/<ID>-delete_this` is written: from here on the backup is marked as being deleted
//!    and `cron` completes the job if this process dies;
//! 2. the data (`base/<ID>/data`, tablespaces) is removed;
//! 3. WAL nobody needs any more goes, xlog.db rewritten first (see [`super::wal_cleanup`]);
//! 4. the marker is removed, then `base/<ID>/`, and **last** `meta/<ID>-backup.info`.
//!
//! Messages are Barman's, handed to the caller as [`Notice`]s; nothing here prints.

use std::path::Path;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use time::OffsetDateTime;

use super::annotations::{self, DELETE_THIS};
use super::policy::{self, RetentionStatus};
use super::wal_cleanup;
use super::RetentionError;
use crate::catalog::query::BackupCatalog;
use crate::catalog::{BackupId, BackupInfo, BackupStatus, CatalogError, LockKind, ServerCatalog};
use crate::config::{BackupMethod, RetentionPolicy, ServerConfig};
use crate::hooks::{HookKind, HookSet};
use crate::output::{ctime, human_duration};
use crate::storage::{self, fsync_dir, StorageError, StorageOp};

/// How loud a [`Notice`] is (Barman's `output.info` / `warning` / `error` / `debug`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// stdout.
    Info,
    /// `WARNING:` on stderr.
    Warning,
    /// `ERROR:` on stderr; the command exits 1.
    Error,
    /// Only with `--debug`.
    Debug,
}

/// One line Barman prints during a deletion or a retention run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    /// Where it goes.
    pub level: Level,
    /// The text, as Barman words it.
    pub text: String,
}

impl Notice {
    fn info(text: String) -> Self {
        Notice { level: Level::Info, text }
    }
    fn warning(text: String) -> Self {
        Notice { level: Level::Warning, text }
    }
    fn error(text: String) -> Self {
        Notice { level: Level::Error, text }
    }
}

/// What deleting and retention need from a server's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionSettings {
    /// The server's name, as messages print it.
    pub server: String,
    /// `retention_policy`; `None` when unset or invalid (nothing is enforced).
    pub policy: Option<RetentionPolicy>,
    /// `minimum_redundancy`.
    pub minimum_redundancy: u32,
    /// `retention_policy_mode = auto` (the only mode Barman has).
    pub auto: bool,
    /// Whether backups are concurrent: then deleting the last backup keeps the WAL from its
    /// start, which a backup starting right after may need. True for `backup_method =
    /// postgres` (Barman forces it) and unless `exclusive_backup` is set.
    pub concurrent_backup: bool,
    /// `worm_mode`: WAL storage is immutable, so the first backup purges nothing.
    pub worm_mode: bool,
    /// `pre`/`post` `delete_script` and `delete_retry_script`, around each backup deleted.
    pub delete_hooks: Option<HookSet>,
    /// `pre`/`post` `wal_delete_script` and `wal_delete_retry_script`, around each WAL file.
    pub wal_delete_hooks: Option<HookSet>,
}

impl RetentionSettings {
    /// The settings of `server`.
    pub fn from_config(server: &ServerConfig) -> Self {
        RetentionSettings {
            server: server.name.clone(),
            policy: server.retention_policy,
            minimum_redundancy: server.minimum_redundancy,
            auto: server.retention_policy_mode.is_empty() || server.retention_policy_mode == "auto",
            concurrent_backup: server.backup_method == BackupMethod::Postgres || !server.backup_options.exclusive_backup,
            worm_mode: server.worm_mode,
            delete_hooks: None,
            wal_delete_hooks: None,
        }
    }

    /// Runs `server`'s delete and WAL-delete hooks; `config_file` is the main configuration
    /// file (the hooks' `BARMAN_CONFIGURATION`).
    pub fn with_hooks(mut self, server: &ServerConfig, config_file: &Path) -> Self {
        self.delete_hooks = HookSet::configured(server, config_file, HookKind::Delete);
        self.wal_delete_hooks = HookSet::configured(server, config_file, HookKind::WalDelete);
        self
    }
}

/// The `delete` command on one backup: refuses a kept backup and one that would leave fewer
/// than `minimum_redundancy` done backups, takes the server's backup lock, then deletes the
/// backup and every incremental backup depending on it (children first), each under its own
/// lock. Returns whether the backup was deleted; refusals are reported as notices.
pub fn delete_backup(
    catalog: &ServerCatalog,
    settings: &RetentionSettings,
    backup: &BackupInfo,
    notify: &mut dyn FnMut(Notice),
) -> Result<bool, RetentionError> {
    let id = backup.backup_id;
    let name = &settings.server;
    if annotations::has_keep(catalog, id)? {
        notify(Notice::warning(format!(
            "Skipping delete of backup {id} for server {name} as it has a current keep request. \
             If you really want to delete this backup please remove the keep and try again."
        )));
        return Ok(false);
    }
    let (backups, _) = BackupCatalog::load(catalog)?;
    let redundancy = backups
        .backups()
        .iter()
        .filter(|b| b.status == BackupStatus::Done && b.parent_backup_id.is_none())
        .count();
    if backup.status == BackupStatus::Done
        && backup.parent_backup_id.is_none()
        && settings.minimum_redundancy as usize >= redundancy
    {
        notify(Notice::warning(format!(
            "Skipping delete of backup {id} for server {name} due to minimum redundancy requirements \
             (minimum redundancy = {}, current redundancy = {redundancy})",
            settings.minimum_redundancy
        )));
        return Ok(false);
    }
    if backup.children_backup_ids.as_ref().is_some_and(|c| !c.is_empty()) {
        notify(Notice::warning(format!(
            "Backup {id} has incremental backups which depend on it. Deleting all backups in the tree"
        )));
    }
    let _server_lock = match catalog.lock(LockKind::ServerBackup) {
        Ok(l) => l,
        Err(CatalogError::LockBusy { .. }) => {
            // Barman's wording, typo included.
            notify(Notice::error(format!(
                "Another process in running on server {name}. Impossible to delete the backup."
            )));
            return Ok(false);
        }
        Err(e) => return Err(e.into()),
    };
    let mut deleted = false;
    for member in tree_bottom_up(&backups, backup) {
        deleted = perform_delete(catalog, settings, &member, notify)?;
        if !deleted && member.backup_id != id {
            notify(Notice::error(
                "Failed to delete one of its incremental backups. Make sure all its dependent backups \
                 are deletable and try again."
                    .to_owned(),
            ));
            break;
        }
    }
    Ok(deleted)
}

/// Barman's `walk_backups_tree`: the children's trees first, the backup last.
fn tree_bottom_up(backups: &BackupCatalog, root: &BackupInfo) -> Vec<BackupInfo> {
    fn walk(backups: &BackupCatalog, b: &BackupInfo, out: &mut Vec<BackupInfo>, depth: usize) {
        if depth <= backups.backups().len() {
            for child in b.children_backup_ids.iter().flatten() {
                if let Some(c) = backups.get(*child) {
                    walk(backups, c, out, depth + 1);
                }
            }
        }
        out.push(b.clone());
    }
    let mut out = Vec::new();
    walk(backups, root, &mut out, 0);
    out
}

/// Barman's `perform_delete_backup`: the deletion under the backup's own lock, whose file is
/// removed afterwards (nobody waits on it).
fn perform_delete(
    catalog: &ServerCatalog,
    settings: &RetentionSettings,
    backup: &BackupInfo,
    notify: &mut dyn FnMut(Notice),
) -> Result<bool, RetentionError> {
    let id = backup.backup_id;
    let lock = match catalog.lock(LockKind::Backup(id)) {
        Ok(l) => l,
        Err(CatalogError::LockBusy { .. }) => {
            notify(Notice::error(format!(
                "Another process is holding the lock for backup {id} of server {}.",
                settings.server
            )));
            return Ok(false);
        }
        Err(e) => return Err(e.into()),
    };
    if let Some(hooks) = &settings.delete_hooks {
        if let Err(abort) = hooks.run_pre(&|h| h.env_from_catalog_backup(catalog, backup)) {
            notify(Notice::error(format!("Backup {id} of server {} not deleted: {abort}", settings.server)));
            return Ok(false);
        }
    }
    let deleted = delete_unlocked(catalog, settings, backup, true, notify);
    if let Some(hooks) = &settings.delete_hooks {
        // The backup as it was (its files are gone); the error, if the deletion failed.
        let error = match &deleted {
            Ok(true) => None,
            Ok(false) => Some("the deletion did not complete".to_owned()),
            Err(e) => Some(crate::error_chain(e)),
        };
        let mut info = backup.clone();
        if error.is_some() {
            info.error = error;
        }
        hooks.run_post(&|h, _| h.env_from_catalog_backup(catalog, &info));
    }
    let deleted = deleted?;
    let path = lock.path().to_path_buf();
    drop(lock);
    if deleted {
        storage::fs::remove_file_if_exists(&path)?;
    }
    Ok(deleted)
}

/// Barman's `BackupManager.delete_backup`, for a caller holding the backup's lock.
/// `skip_wal_cleanup_if_standalone` is true for `delete`, false for retention.
fn delete_unlocked(
    catalog: &ServerCatalog,
    settings: &RetentionSettings,
    backup: &BackupInfo,
    skip_wal_cleanup_if_standalone: bool,
    notify: &mut dyn FnMut(Notice),
) -> Result<bool, RetentionError> {
    let id = backup.backup_id;
    let name = &settings.server;
    annotations::put(catalog, id, DELETE_THIS, "delete")?;
    let start_wall = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
    let started = Instant::now();
    notify(Notice::info(format!("Deleting backup {id} for server {name}")));

    let (backups, _) = BackupCatalog::load(catalog)?;
    let keep = |b: BackupId| Ok(annotations::keep_target(catalog, b)?);
    let (remove_wals, ranges) =
        wal_cleanup::should_remove_wals(&backups, id, &keep, skip_wal_cleanup_if_standalone)?;
    let next = backups.next(id).cloned();

    if let Err(e) = delete_backup_data(catalog, backup) {
        notify(Notice::error(format!("Failure deleting backup {id} for server {name}.\n{}", crate::error_chain(&e))));
        return Ok(false);
    }

    if remove_wals {
        // With a next backup, WAL before its start goes. Without one, a concurrent backup
        // keeps the WAL from the deleted backup's start (a backup starting right now may need
        // it); an exclusive one leaves nothing to keep.
        let until = match &next {
            Some(n) => Some(n),
            None if settings.concurrent_backup => Some(backup),
            None => None,
        };
        let timelines = wal_cleanup::timelines_to_protect(backups.backups(), id, until);
        notify(Notice::info("Delete associated WAL segments:".to_owned()));
        let mut warnings = Vec::new();
        let removed = wal_cleanup::remove_wal_before_backup(
            catalog,
            until.and_then(|b| b.begin_wal),
            &timelines,
            &ranges,
            settings.wal_delete_hooks.as_ref(),
            &mut |w| warnings.push(w),
        )?;
        warnings.into_iter().for_each(|w| notify(Notice::warning(w)));
        for wal in removed {
            notify(Notice::info(format!("\t{wal}")));
        }
    }

    annotations::remove(catalog, id, DELETE_THIS)?;

    let base = catalog.backup_dir(id);
    if let Err(e) = remove_tree(&base) {
        notify(Notice::error(format!(
            "Failure deleting backup {id} for server {name}.\n{}\nPlease manually remove the '{}' directory",
            crate::error_chain(&e),
            base.display()
        )));
        return Ok(false);
    }
    let info_path = catalog.backup_info_path(id);
    if let Err(e) = storage::fs::remove_file_if_exists(&info_path).and_then(|()| fsync_dir(&catalog.meta_dir())) {
        notify(Notice::error(format!(
            "Failure deleting file {} for server {name}.\n{}\nPlease manually remove the file",
            info_path.display(),
            crate::error_chain(&e)
        )));
        return Ok(false);
    }
    notify(Notice::info(format!(
        "Deleted backup {id} (start time: {}, elapsed time: {})",
        ctime(start_wall),
        human_duration(started.elapsed(), false)
    )));

    // An incremental backup is no longer its parent's child.
    if let Some(parent_id) = backup.parent_backup_id {
        if let Ok(mut parent) = BackupInfo::read(catalog, parent_id) {
            if let Some(children) = parent.children_backup_ids.as_mut() {
                children.retain(|c| *c != id);
                if children.is_empty() {
                    parent.children_backup_ids = None;
                }
                parent.write(catalog)?;
            }
        }
    }
    // A passive node's copy lock of this backup has nothing left to protect.
    storage::fs::remove_file_if_exists(&catalog.lock_path(&LockKind::BackupSync(id)))?;
    Ok(true)
}

/// Barman's `delete_backup_data`: tablespaces kept beside `data/`, then `data/` (and the
/// `pgdata/` of the oldest layout). The backup directory itself goes later.
fn delete_backup_data(catalog: &ServerCatalog, backup: &BackupInfo) -> Result<(), StorageError> {
    let base = catalog.backup_dir(backup.backup_id);
    for ts in backup.tablespaces.iter().flatten() {
        remove_tree(&base.join(ts.oid.to_string()))?;
    }
    remove_tree(&base.join("data"))?;
    remove_tree(&base.join("pgdata"))?;
    Ok(())
}

/// Removes a directory tree if it exists (symlinks are removed, never followed) and makes the
/// removal durable in its parent.
fn remove_tree(path: &Path) -> Result<(), StorageError> {
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(StorageError::io(StorageOp::Metadata, path, e)),
        Ok(_) => {}
    }
    std::fs::remove_dir_all(path).map_err(|e| StorageError::io(StorageOp::Remove, path, e))?;
    if let Some(parent) = path.parent() {
        fsync_dir(parent)?;
    }
    Ok(())
}

/// Barman's `is_orphan`: a backup.info whose backup directory is gone (or, in the layout
/// before 3.13.2, holds nothing else) — what an interrupted deletion leaves.
pub fn is_orphan(catalog: &ServerCatalog, backup: &BackupInfo) -> bool {
    if backup.status == BackupStatus::Empty {
        return false;
    }
    let dir = catalog.backup_dir(backup.backup_id);
    if catalog.backup_info_path(backup.backup_id).exists() && !dir.exists() {
        return true;
    }
    match storage::fs::list_dir(&dir) {
        Ok(entries) => entries.len() == 1 && entries[0] == "backup.info",
        Err(_) => false,
    }
}

/// `cron`'s retention step (Barman's `cron_retention_policy`): with a policy and
/// `retention_policy_mode = auto`, deletes every OBSOLETE backup, oldest first, each under its
/// lock (skipped with a warning when busy), and finishes deletions a crash interrupted
/// (backups still marked `delete_this`). WAL a standalone-kept older backup does not need is
/// removed too, unlike `delete`.
pub fn apply_retention(
    catalog: &ServerCatalog,
    settings: &RetentionSettings,
    now: OffsetDateTime,
    notify: &mut dyn FnMut(Notice),
) -> Result<(), RetentionError> {
    let (Some(policy), true) = (settings.policy, settings.auto) else { return Ok(()) };
    let name = &settings.server;
    let (backups, _) = BackupCatalog::load(catalog)?;
    let mut report = backups.retention_report(policy, settings.minimum_redundancy, now)?;
    for b in backups.backups() {
        if annotations::read(catalog, b.backup_id, DELETE_THIS)?.is_some() {
            report.insert(b.backup_id, RetentionStatus::Obsolete);
            annotations::remove(catalog, b.backup_id, DELETE_THIS)?;
        } else if is_orphan(catalog, b) {
            notify(Notice::warning(format!(
                "Backup '{}' is an orphan backup, this is possibly the result of an incomplete delete operation. \
                 Please manually delete the following files or directories if present:\n* {} \n* {} \n",
                b.backup_id,
                catalog.backup_dir(b.backup_id).display(),
                catalog.backup_info_path(b.backup_id).display()
            )));
        }
    }
    for id in policy::obsolete(&report) {
        let Some(backup) = backups.get(id) else { continue };
        let _lock = match catalog.lock(LockKind::Backup(id)) {
            Ok(l) => l,
            Err(CatalogError::LockBusy { .. }) => {
                notify(Notice::warning(format!(
                    "Another action is in progress for the backup {id} of server {name}, skipping retention policy application"
                )));
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        if is_orphan(catalog, backup) {
            notify(Notice { level: Level::Debug, text: format!(
                "Skipping deletion of orphan backup: '{id}' at '{}'.",
                catalog.backup_dir(id).display()
            ) });
            continue;
        }
        notify(Notice::info(format!("Enforcing retention policy: removing backup {id} for server {name}")));
        delete_unlocked(catalog, settings, backup, false, notify)?;
    }
    Ok(())
}

/// After a backup, when it is the server's first (no older backup whose copy is done), WAL
/// archived before its start is of no use: remove it (Barman's `_purge_unused_wal_files`),
/// unless `worm_mode` makes the archive immutable.
pub fn purge_before_first_backup(
    catalog: &ServerCatalog,
    settings: &RetentionSettings,
    backup: &BackupInfo,
    notify: &mut dyn FnMut(Notice),
) -> Result<(), RetentionError> {
    let Some(begin_wal) = backup.begin_wal else { return Ok(()) };
    let (backups, _) = BackupCatalog::load(catalog)?;
    if backups.previous(backup.backup_id).is_some() {
        return Ok(());
    }
    let name = &settings.server;
    notify(Notice::info(format!("This is the first backup for server {name}")));
    if settings.worm_mode {
        notify(Notice::info("'worm_mode' is enabled, skip purging of unused WAL files.".to_owned()));
        return Ok(());
    }
    let mut warnings = Vec::new();
    let removed = wal_cleanup::remove_wal_before_backup(
        catalog,
        Some(begin_wal),
        &Default::default(),
        &[],
        settings.wal_delete_hooks.as_ref(),
        &mut |w| warnings.push(w),
    )?;
    warnings.into_iter().for_each(|w| notify(Notice::warning(w)));
    if !removed.is_empty() {
        notify(Notice::info("WAL segments preceding the current backup have been found:".to_owned()));
        for wal in removed {
            notify(Notice::info(format!("\t{wal} from server {name} has been removed")));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{xlogdb, XlogDbEntry};
    use crate::retention::annotations;
    use crate::retention::KeepTarget;
    use crate::wal::WalFileName;

    struct Site {
        _dir: tempfile::TempDir,
        catalog: ServerCatalog,
    }

    /// Three DONE backups starting in segments 4, 6 and 8 of timeline 1, WAL 3..=9, a
    /// history file, as a catalog Barman would have written.
    fn site() -> Site {
        let dir = tempfile::tempdir().unwrap();
        let catalog = ServerCatalog::new("pg", dir.path().join("pg"), dir.path());
        catalog.create_skeleton().unwrap();
        for (id, seg) in [("20260101T000001", 4), ("20260101T000002", 6), ("20260101T000003", 8)] {
            let mut info = BackupInfo::new(id.parse().unwrap());
            info.status = BackupStatus::Done;
            info.begin_wal = Some(format!("0000000100000000000000{seg:02X}").parse().unwrap());
            info.end_wal = info.begin_wal;
            info.timeline = Some(barman_replication::TimelineId(1));
            info.write(&catalog).unwrap();
            std::fs::create_dir_all(catalog.backup_data_dir(info.backup_id)).unwrap();
            std::fs::write(catalog.backup_data_dir(info.backup_id).join("PG_VERSION"), b"16\n").unwrap();
        }
        let mut entries = Vec::new();
        let mut names: Vec<String> = (3..=9).map(|s| format!("0000000100000000000000{s:02X}")).collect();
        names.push("000000010000000000000004.00000028.backup".into());
        names.push("00000002.history".into());
        for name in names {
            let name: WalFileName = name.parse().unwrap();
            let path = catalog.wal_path(&name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, b"wal").unwrap();
            entries.push(XlogDbEntry { name, size: 3, time: 1.0, compression: None, encryption: None });
        }
        let lock = catalog.lock(LockKind::ServerXlogDb).unwrap();
        xlogdb::rewrite(&catalog.xlogdb_path(), &lock, &entries).unwrap();
        Site { _dir: dir, catalog }
    }

    fn settings(min: u32) -> RetentionSettings {
        RetentionSettings {
            server: "pg".into(),
            policy: Some(RetentionPolicy::Redundancy(1)),
            minimum_redundancy: min,
            auto: true,
            concurrent_backup: true,
            worm_mode: false,
            delete_hooks: None,
            wal_delete_hooks: None,
        }
    }

    fn indexed(c: &ServerCatalog) -> Vec<String> {
        let lock = c.lock(LockKind::ServerXlogDb).unwrap();
        xlogdb::read(&c.xlogdb_path(), &lock).unwrap().iter().map(|e| e.name.to_string()).collect()
    }

    fn on_disk(c: &ServerCatalog, name: &str) -> bool {
        c.wal_path(&name.parse().unwrap()).exists()
    }

    fn info(c: &ServerCatalog, id: &str) -> BackupInfo {
        BackupInfo::read(c, id.parse().unwrap()).unwrap()
    }

    #[test]
    fn delete_oldest_removes_its_files_and_the_wal_before_the_next() {
        let s = site();
        let c = &s.catalog;
        let mut lines = Vec::new();
        assert!(delete_backup(c, &settings(0), &info(c, "20260101T000001"), &mut |n| lines.push(n)).unwrap());
        let texts: Vec<&str> = lines.iter().map(|n| n.text.as_str()).collect();
        // Sample 26c-delete-oldest.
        assert_eq!(texts[..5], [
            "Deleting backup 20260101T000001 for server pg",
            "Delete associated WAL segments:",
            "\t000000010000000000000003",
            "\t000000010000000000000004",
            "\t000000010000000000000005",
        ]);
        assert!(texts[6].starts_with("Deleted backup 20260101T000001 (start time: "), "{texts:?}");
        assert!(texts[6].ends_with(", elapsed time: less than one second)"), "{texts:?}");
        let id: BackupId = "20260101T000001".parse().unwrap();
        assert!(!c.backup_dir(id).exists());
        assert!(!c.backup_info_path(id).exists());
        assert!(!c.annotation_path(id, DELETE_THIS).exists());
        assert!(!c.lock_path(&LockKind::Backup(id)).exists());
        assert_eq!(indexed(c), [
            "000000010000000000000006",
            "000000010000000000000007",
            "000000010000000000000008",
            "000000010000000000000009",
            "00000002.history",
        ]);
        for gone in ["000000010000000000000003", "000000010000000000000005", "000000010000000000000004.00000028.backup"] {
            assert!(!on_disk(c, gone), "{gone}");
        }
        for name in indexed(c) {
            assert!(on_disk(c, &name), "{name} indexed but missing");
        }
    }

    #[test]
    fn deleting_a_middle_backup_keeps_the_wal_the_older_one_needs() {
        let s = site();
        let c = &s.catalog;
        let mut lines = Vec::new();
        assert!(delete_backup(c, &settings(0), &info(c, "20260101T000002"), &mut |n| lines.push(n)).unwrap());
        // Sample 35-delete-failed: no WAL section.
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert_eq!(indexed(c).len(), 9);
    }

    #[test]
    fn kept_backups_and_minimum_redundancy_refuse_delete() {
        let s = site();
        let c = &s.catalog;
        let id: BackupId = "20260101T000001".parse().unwrap();
        annotations::keep(c, id, KeepTarget::Standalone).unwrap();
        let mut lines = Vec::new();
        assert!(!delete_backup(c, &settings(0), &info(c, "20260101T000001"), &mut |n| lines.push(n)).unwrap());
        assert_eq!(lines[0].level, Level::Warning);
        assert!(lines[0].text.contains("as it has a current keep request"));
        assert!(c.backup_data_dir(id).exists());
        let mut lines = Vec::new();
        assert!(!delete_backup(c, &settings(3), &info(c, "20260101T000002"), &mut |n| lines.push(n)).unwrap());
        assert_eq!(
            lines[0].text,
            "Skipping delete of backup 20260101T000002 for server pg due to minimum redundancy requirements \
             (minimum redundancy = 3, current redundancy = 3)"
        );
        // The server's backup lock held elsewhere: refused, nothing removed.
        let held = c.lock(LockKind::ServerBackup).unwrap();
        let mut lines = Vec::new();
        assert!(!delete_backup(c, &settings(0), &info(c, "20260101T000002"), &mut |n| lines.push(n)).unwrap());
        assert_eq!(lines[0].level, Level::Error);
        drop(held);
        assert_eq!(indexed(c).len(), 9);
    }

    #[test]
    fn retention_keeps_the_newest_and_the_standalone_wal() {
        let s = site();
        let c = &s.catalog;
        annotations::keep(c, "20260101T000001".parse().unwrap(), KeepTarget::Standalone).unwrap();
        let mut lines = Vec::new();
        apply_retention(c, &settings(0), OffsetDateTime::now_utc(), &mut |n| lines.push(n)).unwrap();
        let (backups, _) = BackupCatalog::load(c).unwrap();
        let left: Vec<String> = backups.backups().iter().map(|b| b.backup_id.to_string()).collect();
        assert_eq!(left, ["20260101T000001", "20260101T000003"]);
        assert_eq!(lines[0].text, "Enforcing retention policy: removing backup 20260101T000002 for server pg");
        // Retention removes the WAL up to the next backup except what the standalone one needs.
        assert_eq!(indexed(c), [
            "000000010000000000000004",
            "000000010000000000000008",
            "000000010000000000000009",
            "000000010000000000000004.00000028.backup",
            "00000002.history",
        ]);
    }

    #[test]
    fn cron_finishes_an_interrupted_delete() {
        let s = site();
        let c = &s.catalog;
        let id: BackupId = "20260101T000003".parse().unwrap();
        // Interrupted after the marker and the data went: the newest backup, which the
        // policy would keep, is still deleted.
        annotations::put(c, id, DELETE_THIS, "delete").unwrap();
        std::fs::remove_dir_all(c.backup_data_dir(id)).unwrap();
        let mut lines = Vec::new();
        let mut st = settings(0);
        st.policy = Some(RetentionPolicy::Redundancy(3));
        apply_retention(c, &st, OffsetDateTime::now_utc(), &mut |n| lines.push(n)).unwrap();
        assert!(!c.backup_info_path(id).exists(), "{lines:?}");
        assert!(!c.annotation_path(id, DELETE_THIS).exists());
    }

    #[test]
    fn first_backup_purges_older_wal() {
        let s = site();
        let c = &s.catalog;
        for id in ["20260101T000002", "20260101T000003"] {
            let id: BackupId = id.parse().unwrap();
            std::fs::remove_file(c.backup_info_path(id)).unwrap();
        }
        let mut lines = Vec::new();
        purge_before_first_backup(c, &settings(0), &info(c, "20260101T000001"), &mut |n| lines.push(n)).unwrap();
        let texts: Vec<&str> = lines.iter().map(|n| n.text.as_str()).collect();
        // Sample 04-backup-plain.
        assert_eq!(texts, [
            "This is the first backup for server pg",
            "WAL segments preceding the current backup have been found:",
            "\t000000010000000000000003 from server pg has been removed",
        ]);
    }
}
