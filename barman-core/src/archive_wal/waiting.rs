//! WAITING_FOR_WALS → DONE (or FAILED): whether the WAL a backup needs to be consistent —
//! every segment from its `begin_wal` to its `end_wal` — is in the archive. Barman's
//! `BackupManager.check_backup` (`barman/backup.py`), run by `cron` (through `check-backup`)
//! and at the end of `backup --wait`.
//!
//! Barman's rules, in order, with `last` the newest complete segment archived on the backup's
//! timeline (Barman's `get_latest_archived_wals_info`: the last hash directory of the
//! timeline, its last plain segment name; `.partial`, `.backup` and `.history` files do not
//! count):
//!
//! 0. no `end_wal` (the copy is still running): nothing to decide;
//! 1. nothing archived on the backup's timeline yet: WAITING_FOR_WALS;
//! 2. `last` older than `begin_wal`: WAITING_FOR_WALS;
//! 3. a segment between `begin_wal` and `min(end_wal, last)` missing from `wals/`: FAILED,
//!    `error=At least one WAL file is missing. The first missing WAL file is <name>` — the
//!    archive moved past it, so it will never arrive;
//! 4. `end_wal <= last`: DONE;
//! 5. otherwise WAITING_FOR_WALS.
//!
//! Names are compared as text, as Barman does (WAL names are fixed-width upper-case hex).
//!
//! Deliberate differences: Barman's `cron` checks only the oldest WAITING_FOR_WALS backup per
//! run; [`complete_waiting_backups`] checks them all, oldest first. Barman rewrites
//! backup.info even when the status stays the same; here it is rewritten (durably, through
//! [`BackupInfo::write`]) only when something changed.

use std::collections::BTreeMap;

use crate::catalog::{BackupId, BackupInfo, BackupStatus, CatalogError, LockKind, ServerCatalog};
use crate::storage::{self, StorageError};
use crate::wal::{WalFileName, WalSegmentName, WalSegmentSize};

/// The newest complete segment archived on each timeline, keyed by the timeline's 8 hex
/// digits, as Barman's `get_latest_archived_wals_info` finds it: the hash directories of
/// `wals/` in reverse name order, the first per timeline, and in it the last name (in
/// reverse order) that is a plain segment.
pub fn latest_archived_segments(catalog: &ServerCatalog) -> Result<BTreeMap<String, String>, StorageError> {
    let root = catalog.wals_directory();
    let mut timelines = BTreeMap::new();
    if !root.is_dir() {
        return Ok(timelines);
    }
    let mut dirs: Vec<String> = storage::fs::list_dir(root)?.into_iter().filter_map(|n| n.into_string().ok()).collect();
    dirs.sort_unstable_by(|a, b| b.cmp(a));
    for dir in dirs {
        let path = root.join(&dir);
        if !path.is_dir() {
            continue;
        }
        let Some(timeline) = dir.get(..8).filter(|t| t.bytes().all(|b| b.is_ascii_hexdigit())) else {
            continue;
        };
        if timelines.contains_key(timeline) {
            continue;
        }
        let mut names: Vec<String> =
            storage::fs::list_dir(&path)?.into_iter().filter_map(|n| n.into_string().ok()).collect();
        names.sort_unstable_by(|a, b| b.cmp(a));
        let newest = names.into_iter().find(|name| {
            matches!(name.parse::<WalFileName>(), Ok(WalFileName::Segment(_))) && !path.join(name).is_dir()
        });
        if let Some(name) = newest {
            timelines.insert(timeline.to_owned(), name);
        }
    }
    Ok(timelines)
}

/// Applies Barman's rules (module documentation) to `info`, setting its `status` (and `error`
/// when FAILED) in memory. Returns whether anything changed; the caller writes the file.
/// `latest` is [`latest_archived_segments`].
pub fn decide(
    catalog: &ServerCatalog,
    info: &mut BackupInfo,
    latest: &BTreeMap<String, String>,
) -> Result<bool, StorageError> {
    let (Some(begin), Some(end)) = (info.begin_wal, info.end_wal) else {
        return Ok(false); // Case 0: still being copied (or not a backup with WAL).
    };
    let begin_name = begin.to_string();
    let end_name = end.to_string();
    let before = (info.status, info.error.clone());
    let last = match latest.get(&begin_name[..8]) {
        Some(last) if *last >= begin_name => last,
        // Cases 1 and 2.
        _ => {
            info.status = BackupStatus::WaitingForWals;
            return Ok(before != (info.status, info.error.clone()));
        }
    };
    let size = info.xlog_segment_size.unwrap_or(WalSegmentSize::DEFAULT);
    let mut segment: Option<WalSegmentName> = Some(begin);
    while let Some(s) = segment {
        let name = s.to_string();
        if name > *last || name > end_name {
            break;
        }
        if !storage::fs::exists(&catalog.wal_path(&WalFileName::Segment(s)))? {
            // Case 3.
            info.error = Some(format!("At least one WAL file is missing. The first missing WAL file is {name}"));
            info.status = BackupStatus::Failed;
            return Ok(true);
        }
        segment = s.next(size);
    }
    // Cases 4 and 5.
    info.status = if end_name <= *last { BackupStatus::Done } else { BackupStatus::WaitingForWals };
    Ok(before != (info.status, info.error.clone()))
}

/// Barman's `check_backup` on one backup: decides its status from the archive and, when it
/// changed, writes its backup.info durably. A FAILED backup is left alone (Barman refuses to
/// check it: it could turn a backup whose copy failed into DONE). The caller holds the
/// backup's lock if it needs one (`backup --wait` checks the backup it just took).
pub fn check_backup(catalog: &ServerCatalog, info: &mut BackupInfo) -> Result<bool, CatalogError> {
    if info.status == BackupStatus::Failed {
        return Ok(false);
    }
    let latest = latest_archived_segments(catalog)?;
    let changed = decide(catalog, info, &latest)?;
    if changed {
        info.write(catalog)?;
        tracing::info!(server = catalog.server_name(), backup = %info.backup_id, status = %info.status, error = ?info.error, "backup status changed after checking its WAL");
    }
    Ok(changed)
}

/// Checks every WAITING_FOR_WALS backup of the server, oldest first, under each backup's
/// `.<server>-<ID>.lock` (a backup whose lock is busy is skipped: another process is checking
/// or deleting it). Returns each backup whose status changed, with its new status; a FAILED
/// one has the reason in its backup.info `error`.
pub fn complete_waiting_backups(catalog: &ServerCatalog) -> Result<Vec<(BackupId, BackupStatus)>, CatalogError> {
    let mut changed = Vec::new();
    let mut latest = None;
    for id in catalog.backup_ids()? {
        let info = BackupInfo::read(catalog, id)?;
        if info.status != BackupStatus::WaitingForWals {
            continue;
        }
        let _lock = match catalog.lock(LockKind::Backup(id)) {
            Ok(lock) => lock,
            Err(CatalogError::LockBusy { .. }) => {
                tracing::info!(server = catalog.server_name(), backup = %id, "backup locked by another process; not checked");
                continue;
            }
            Err(e) => return Err(e),
        };
        // Read again under the lock: the holder we waited for may have changed it.
        let mut info = BackupInfo::read(catalog, id)?;
        if info.status != BackupStatus::WaitingForWals {
            continue;
        }
        let latest = match &latest {
            Some(l) => l,
            None => latest.insert(latest_archived_segments(catalog)?),
        };
        if decide(catalog, &mut info, latest)? {
            info.write(catalog)?;
            tracing::info!(server = catalog.server_name(), backup = %id, status = %info.status, error = ?info.error, "backup status changed after checking its WAL");
            changed.push((id, info.status));
        }
    }
    Ok(changed)
}
