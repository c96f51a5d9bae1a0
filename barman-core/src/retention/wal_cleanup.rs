//! Removing WAL no backup needs any more: Barman's `should_remove_wals`,
//! `get_timelines_to_protect` and `remove_wal_before_backup` (`barman/backup.py`).
//!
//! [`plan`] is pure: given xlog.db, the oldest backup that remains and what must be protected,
//! it splits the entries into those kept and those removed. [`remove_wal_before_backup`] does
//! it on disk under the xlog.db lock.
//!
//! What is always kept: `.history` files; WAL on a timeline another remaining backup is on;
//! WAL inside a protected range (the `begin_wal..=end_wal` of a `keep: standalone` backup
//! older than the one deleted); and everything from the remaining backup's `begin_wal` on.
//! Names compare as text, as in Barman (`.backup` files by their first 24 characters for the
//! ranges).
//!
//! Crash safety, a deliberate difference from Barman: Barman unlinks the files first and then
//! rewrites xlog.db, so a crash in between leaves xlog.db listing WAL that is gone. barman-rs
//! rewrites xlog.db first (atomically) and then unlinks, both under the lock: a crash in
//! between leaves unlisted files that `rebuild-xlogdb` would index again, never an index that
//! lists a missing file (DESIGN.md §3).

use std::collections::BTreeSet;
use std::path::PathBuf;

use barman_replication::TimelineId;

use super::RetentionError;
use crate::catalog::query::BackupCatalog;
use crate::catalog::{xlogdb, BackupId, BackupInfo, BackupStatus, LockKind, ServerCatalog, XlogDbEntry};
use crate::hooks::HookSet;
use crate::storage::{self, fsync_dir, StorageError, StorageOp};
use crate::wal::{WalFileName, WalSegmentName};

use super::policy::KeepTarget;

/// An inclusive range of WAL names a `keep: standalone` backup needs.
pub type ProtectedRange = (WalSegmentName, WalSegmentName);

/// Barman's `should_remove_wals`: whether deleting `backup` may remove WAL, and which ranges
/// must survive. WAL goes only when every older done backup is a `standalone`-kept one (their
/// `begin_wal..=end_wal` are then protected) or there is none. `skip_if_standalone` (the
/// `delete` command) refuses as soon as one older backup is standalone-kept; retention
/// passes `false`.
pub fn should_remove_wals(
    catalog: &BackupCatalog,
    backup: BackupId,
    keep: &dyn Fn(BackupId) -> Result<Option<KeepTarget>, RetentionError>,
    skip_if_standalone: bool,
) -> Result<(bool, Vec<ProtectedRange>), RetentionError> {
    let mut ranges = Vec::new();
    let mut cursor = catalog.previous(backup);
    while let Some(prev) = cursor {
        if keep(prev.backup_id)? != Some(KeepTarget::Standalone) || skip_if_standalone {
            return Ok((false, Vec::new()));
        }
        if let (Some(b), Some(e)) = (prev.begin_wal, prev.end_wal) {
            ranges.push((b, e));
        }
        cursor = catalog.previous(prev.backup_id);
    }
    Ok((true, ranges))
}

/// Barman's `get_timelines_to_protect`: the timelines of every other backup that is archiving
/// or done (STARTED, WAITING_FOR_WALS, DONE, SYNCING), except the timeline of the backup WAL
/// is removed up to. With no such backup (`remove_until` is `None`) nothing is protected.
pub fn timelines_to_protect(
    backups: &[BackupInfo],
    deleted: BackupId,
    remove_until: Option<&BackupInfo>,
) -> BTreeSet<TimelineId> {
    let Some(until) = remove_until else { return BTreeSet::new() };
    let mut set: BTreeSet<TimelineId> = backups
        .iter()
        .filter(|b| b.backup_id != deleted)
        .filter(|b| {
            matches!(
                b.status,
                BackupStatus::Started | BackupStatus::WaitingForWals | BackupStatus::Done | BackupStatus::Syncing
            )
        })
        .filter_map(|b| b.timeline)
        .collect();
    if let Some(t) = until.timeline {
        set.remove(&t);
    }
    set
}

/// Splits `entries` into (kept, removed), keeping xlog.db's order. `until` is the
/// `begin_wal` of the oldest remaining backup; `None` removes every unprotected file.
pub fn plan(
    entries: &[XlogDbEntry],
    until: Option<WalSegmentName>,
    timelines: &BTreeSet<TimelineId>,
    ranges: &[ProtectedRange],
) -> (Vec<XlogDbEntry>, Vec<XlogDbEntry>) {
    let until = until.map(|w| w.to_string());
    let ranges: Vec<(String, String)> = ranges.iter().map(|(b, e)| (b.to_string(), e.to_string())).collect();
    let mut kept = Vec::new();
    let mut removed = Vec::new();
    for e in entries {
        let name = e.name.to_string();
        let mut keep = matches!(e.name, WalFileName::History(_));
        keep |= timelines.contains(&e.name.timeline());
        let short = if matches!(e.name, WalFileName::Backup { .. }) { &name[..24] } else { name.as_str() };
        keep |= ranges.iter().any(|(b, end)| short >= b.as_str() && short <= end.as_str());
        keep |= until.as_ref().is_some_and(|u| name >= *u);
        if keep {
            kept.push(e.clone());
        } else {
            removed.push(e.clone());
        }
    }
    (kept, removed)
}

/// Removes the WAL older than `until` (see [`plan`]) from the archive and from xlog.db, and
/// returns the names removed, grouped by directory as Barman lists them.
///
/// Holds the xlog.db lock throughout, so archive-wal cannot add a file this is removing.
/// A missing xlog.db means nothing is indexed, so nothing is removed.
pub fn remove_wal_before_backup(
    catalog: &ServerCatalog,
    until: Option<WalSegmentName>,
    timelines: &BTreeSet<TimelineId>,
    ranges: &[ProtectedRange],
    hooks: Option<&HookSet>,
    warn: &mut dyn FnMut(String),
) -> Result<Vec<String>, RetentionError> {
    let path = catalog.xlogdb_path();
    let lock = catalog.lock(LockKind::ServerXlogDb)?;
    let Some(entries) = xlogdb::read_if_exists(&path, &lock)? else { return Ok(Vec::new()) };
    let (kept, removed) = plan(&entries, until, timelines, ranges);
    if removed.is_empty() {
        return Ok(Vec::new());
    }
    xlogdb::rewrite(&path, &lock, &kept)?;

    let mut by_dir: Vec<(PathBuf, Vec<&XlogDbEntry>)> = Vec::new();
    for e in &removed {
        let dir = catalog.wal_dir(&e.name);
        match by_dir.iter_mut().find(|(d, _)| *d == dir) {
            Some((_, list)) => list.push(e),
            None => by_dir.push((dir, vec![e])),
        }
    }
    let mut names = Vec::with_capacity(removed.len());
    for (dir, list) in &by_dir {
        for e in list {
            let file = catalog.wal_path(&e.name);
            if let Some(hooks) = hooks {
                if let Err(abort) = hooks.run_pre(&|h| h.env_from_wal(e, &file, None)) {
                    // Already out of xlog.db: the file stays on disk for rebuild-xlogdb.
                    warn(format!("WAL file {} of server {} not deleted: {abort}", e.name, catalog.server_name()));
                    continue;
                }
            }
            let removed = storage::fs::remove_file_if_exists(&file);
            if let Err(err) = &removed {
                warn(format!(
                    "Ignoring deletion of WAL file {} for server {}: {}",
                    e.name,
                    catalog.server_name(),
                    crate::error_chain(err)
                ));
            }
            if let Some(hooks) = hooks {
                let error = removed.as_ref().err().map(|e| crate::error_chain(e));
                hooks.run_post(&|h, _| h.env_from_wal(e, &file, error.as_deref()));
            }
            names.push(e.name.to_string());
        }
        // Barman removes the directory once it is empty (os.removedirs).
        if dir != catalog.wals_directory() && storage::fs::list_dir(dir).is_ok_and(|l| l.is_empty()) {
            std::fs::remove_dir(dir).map_err(|e| StorageError::io(StorageOp::Remove, dir, e))?;
        } else if storage::fs::exists(dir)? {
            fsync_dir(dir)?;
        }
    }
    fsync_dir(catalog.wals_directory())?;
    drop(lock);
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str) -> XlogDbEntry {
        XlogDbEntry { name: name.parse().unwrap(), size: 16, time: 1.0, compression: None, encryption: None }
    }

    fn seg(name: &str) -> WalSegmentName {
        name.parse().unwrap()
    }

    fn names(v: &[XlogDbEntry]) -> Vec<String> {
        v.iter().map(|e| e.name.to_string()).collect()
    }

    #[test]
    fn plan_keeps_history_ranges_timelines_and_newer() {
        let entries = [
            entry("000000010000000000000004"),
            entry("000000010000000000000004.00000028.backup"),
            entry("000000010000000000000005"),
            entry("000000010000000000000006"),
            entry("000000010000000000000006.00000028.backup"),
            entry("00000002.history"),
            entry("000000020000000000000007"),
        ];
        // Sample 26c: deleting the oldest backup removes what precedes the next one's begin_wal.
        let (kept, removed) = plan(&entries, Some(seg("000000010000000000000006")), &BTreeSet::new(), &[]);
        assert_eq!(
            names(&removed),
            ["000000010000000000000004", "000000010000000000000004.00000028.backup", "000000010000000000000005"]
        );
        assert_eq!(kept.len(), 4);
        // A standalone range survives, its .backup file included.
        let (_, removed) = plan(
            &entries,
            Some(seg("000000010000000000000006")),
            &BTreeSet::new(),
            &[(seg("000000010000000000000004"), seg("000000010000000000000004"))],
        );
        assert_eq!(names(&removed), ["000000010000000000000005"]);
        // No remaining backup: everything but history; a protected timeline stays.
        let (_, removed) = plan(&entries, None, &BTreeSet::from([TimelineId(2)]), &[]);
        assert_eq!(removed.len(), 5);
        let (_, removed) = plan(&entries, None, &BTreeSet::new(), &[]);
        assert_eq!(removed.len(), 6);
    }

    mod proptests {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            /// Nothing at or after the remaining backup's begin_wal, in a protected range or
            /// on a protected timeline, and no history file, is ever removed; everything else is.
            #[test]
            fn never_removes_needed_wal(
                segs in prop::collection::btree_set((1u32..3, 0u32..40), 0..60),
                until in prop::option::of((1u32..3, 0u32..40)),
                range in prop::option::of((0u32..40, 0u32..5)),
                protect in prop::option::of(1u32..3),
            ) {
                let mut entries: Vec<XlogDbEntry> = segs.iter()
                    .map(|(t, s)| XlogDbEntry { name: WalFileName::Segment(WalSegmentName::new(TimelineId(*t), 0, *s).unwrap()), size: 1, time: 0.0, compression: None, encryption: None })
                    .collect();
                entries.push(entry("00000002.history"));
                let until = until.map(|(t, s)| WalSegmentName::new(TimelineId(t), 0, s).unwrap());
                let ranges: Vec<ProtectedRange> = range
                    .map(|(b, len)| (WalSegmentName::new(TimelineId(1), 0, b).unwrap(), WalSegmentName::new(TimelineId(1), 0, b + len).unwrap()))
                    .into_iter()
                    .collect();
                let timelines: BTreeSet<TimelineId> = protect.map(TimelineId).into_iter().collect();
                let (kept, removed) = plan(&entries, until, &timelines, &ranges);
                prop_assert_eq!(kept.len() + removed.len(), entries.len());
                for e in &removed {
                    let WalFileName::Segment(s) = e.name else { return Err(TestCaseError::fail("history removed")) };
                    prop_assert!(!timelines.contains(&s.timeline()));
                    if let Some(u) = until { prop_assert!(s.to_string() < u.to_string()); }
                    for (b, end) in &ranges { prop_assert!(!(s >= *b && s <= *end)); }
                }
                for e in &kept {
                    if let WalFileName::Segment(s) = e.name {
                        let needed = timelines.contains(&s.timeline())
                            || until.is_some_and(|u| s.to_string() >= u.to_string())
                            || ranges.iter().any(|(b, end)| s >= *b && s <= *end);
                        prop_assert!(needed, "{} kept without a reason", s);
                    }
                }
            }
        }
    }
}
