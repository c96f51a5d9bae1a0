//! A read-only look at one server's catalog, just what `check` and `status` need.
//!
//! TEMPORARY, minimal reading: `crate::catalog` (backup.info, xlog.db, identity.json, locks)
//! is being written in parallel; once it lands, [`CatalogView::read`] should be rebuilt on
//! it and the parsing below removed. Until then this reads the files of Barman 3.x's layout
//! (DESIGN.md §2) leniently: a file that cannot be parsed is skipped, never fatal, because a
//! diagnostics command must still report everything else.

use std::fs;
use std::path::{Path, PathBuf};

use crate::config::{GlobalSettings, ServerConfig};

/// What a backup.info says that the diagnostics use.
#[derive(Debug, Clone, PartialEq)]
pub struct BackupSummary {
    /// The backup ID (`%Y%m%dT%H%M%S`).
    pub id: String,
    /// `status=` (DONE, FAILED, WAITING_FOR_WALS, …).
    pub status: String,
    /// `full`, `incremental`, `rsync` or `snapshot`, derived as Barman's `backup_type`.
    pub backup_type: String,
    /// `end_time=` as a Unix time.
    pub end_time: Option<f64>,
    /// `size=` in bytes.
    pub size: Option<u64>,
    /// `end_wal=`.
    pub end_wal: Option<String>,
}

impl BackupSummary {
    /// Not incremental (what minimum redundancy counts).
    pub fn is_full_kind(&self) -> bool {
        self.backup_type != "incremental"
    }
}

/// One line of `<server>-xlog.db`.
#[derive(Debug, Clone, PartialEq)]
pub struct XlogEntry {
    /// File name.
    pub name: String,
    /// Size on disk.
    pub size: u64,
    /// Archival time (Unix).
    pub time: f64,
    /// Compression (`None` text kept as `None`).
    pub compression: Option<String>,
}

/// The catalog facts of one server.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CatalogView {
    /// Every backup found, sorted by ID.
    pub backups: Vec<BackupSummary>,
    /// xlog.db entries in file order.
    pub xlog: Vec<XlogEntry>,
    /// Whether xlog.db exists and is not empty.
    pub xlogdb_nonempty: bool,
    /// `identity.json` path.
    pub identity_path: PathBuf,
    /// `Some(systemid)` when identity.json exists (`None` inside when it has none).
    pub identity_systemid: Option<Option<String>>,
    /// Names of the files in `errors/`.
    pub error_files: Vec<String>,
    /// Files waiting in `incoming/` (`.tmp` ignored).
    pub incoming_count: usize,
    /// Files waiting in `streaming/` (`.tmp` ignored).
    pub streaming_count: usize,
    /// Whether a `receive-wal` process holds its lock.
    pub receive_wal_running: bool,
}

impl CatalogView {
    /// Reads `cfg`'s catalog; missing pieces read as empty.
    pub fn read(global: &GlobalSettings, cfg: &ServerConfig) -> CatalogView {
        let xlogdb = cfg.xlogdb_directory.join(format!("{}-xlog.db", cfg.name));
        let xlog_text = fs::read_to_string(&xlogdb).unwrap_or_default();
        let identity_path = cfg.backup_directory.join("identity.json");
        let identity_systemid = fs::read_to_string(&identity_path).ok().map(|t| {
            serde_json::from_str::<serde_json::Value>(&t).ok().and_then(|v| match v.get("systemid") {
                Some(serde_json::Value::String(s)) => Some(s.clone()),
                Some(serde_json::Value::Number(n)) => Some(n.to_string()),
                _ => None,
            })
        });
        CatalogView {
            backups: read_backups(&cfg.backup_directory, &cfg.basebackups_directory),
            xlog: xlog_text.lines().filter_map(parse_xlog_line).collect(),
            xlogdb_nonempty: fs::metadata(&xlogdb).map(|m| m.len() > 0).unwrap_or(false),
            identity_path,
            identity_systemid,
            error_files: names_in(&cfg.errors_directory),
            incoming_count: names_in(&cfg.incoming_wals_directory).iter().filter(|n| !n.ends_with(".tmp")).count(),
            streaming_count: names_in(&cfg.streaming_wals_directory).iter().filter(|n| !n.ends_with(".tmp")).count(),
            receive_wal_running: lock_is_held(
                &global.barman_lock_directory.join(format!(".{}-receive-wal.lock", cfg.name)),
            ),
        }
    }

    /// Backups with status DONE, oldest first.
    pub fn done(&self) -> impl Iterator<Item = &BackupSummary> {
        self.backups.iter().filter(|b| b.status == "DONE")
    }

    /// The newest DONE backup.
    pub fn last_done(&self) -> Option<&BackupSummary> {
        self.done().last()
    }

    /// WAL archived after `backup`'s end WAL: total size on disk and newest archival time
    /// (Barman's `wal_until_next_size` / `wal_last_timestamp` for the newest backup).
    pub fn wal_after(&self, backup: &BackupSummary) -> (u64, Option<f64>) {
        let Some(end) = &backup.end_wal else { return (0, None) };
        let mut size = 0;
        let mut last = None::<f64>;
        for e in &self.xlog {
            let is_segment = e.name.len() == 24 && e.name.bytes().all(|b| b.is_ascii_hexdigit());
            if is_segment && e.name.as_str() > end.as_str() {
                size += e.size;
                last = Some(last.map_or(e.time, |t| t.max(e.time)));
            }
        }
        (size, last)
    }
}

fn names_in(dir: &Path) -> Vec<String> {
    let Ok(entries) = fs::read_dir(dir) else { return Vec::new() };
    let mut names: Vec<String> = entries.filter_map(Result::ok).map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

/// Whether another process holds an flock on `path` (Barman's `LockFile.get_owner_pid`).
#[allow(clippy::incompatible_msrv)] // File::try_lock is in the toolchain CI uses
fn lock_is_held(path: &Path) -> bool {
    let Ok(file) = fs::OpenOptions::new().read(true).write(true).open(path) else { return false };
    match file.try_lock() {
        Ok(()) => {
            let _ = file.unlock();
            false
        }
        Err(std::fs::TryLockError::WouldBlock) => true,
        Err(_) => false,
    }
}

fn parse_xlog_line(line: &str) -> Option<XlogEntry> {
    let mut parts = line.split('\t');
    let name = parts.next()?.to_owned();
    let size = parts.next()?.parse().ok()?;
    let time = parts.next()?.parse().ok()?;
    let compression = parts.next().filter(|c| *c != "None").map(str::to_owned);
    Some(XlogEntry { name, size, time, compression })
}

fn read_backups(backup_dir: &Path, base_dir: &Path) -> Vec<BackupSummary> {
    let mut found = std::collections::BTreeMap::new();
    // Barman < 3.13.2 kept backup.info in base/<ID>/; meta/ wins when both exist.
    for entry in fs::read_dir(base_dir).into_iter().flatten().filter_map(Result::ok) {
        let id = entry.file_name().to_string_lossy().into_owned();
        if let Some(b) = read_backup_info(&entry.path().join("backup.info"), &id) {
            found.insert(id, b);
        }
    }
    for entry in fs::read_dir(backup_dir.join("meta")).into_iter().flatten().filter_map(Result::ok) {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(id) = name.strip_suffix("-backup.info") {
            if let Some(b) = read_backup_info(&entry.path(), id) {
                found.insert(id.to_owned(), b);
            }
        }
    }
    found.into_values().collect()
}

fn read_backup_info(path: &Path, id: &str) -> Option<BackupSummary> {
    let text = fs::read_to_string(path).ok()?;
    let get = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
            .filter(|v| *v != "None")
            .map(str::to_owned)
    };
    let mode = get("mode").unwrap_or_default();
    let backup_type = if get("parent_backup_id").is_some() {
        "incremental"
    } else if get("snapshots_info").is_some() {
        "snapshot"
    } else if mode.contains("rsync") {
        "rsync"
    } else {
        "full"
    };
    Some(BackupSummary {
        id: id.to_owned(),
        status: get("status")?,
        backup_type: backup_type.to_owned(),
        end_time: get("end_time").and_then(|t| parse_info_time(&t)),
        size: get("size").and_then(|s| s.parse().ok()),
        end_wal: get("end_wal"),
    })
}

/// `2026-11-25 12:33:56.246206+00:00` (Python's `str(datetime)`) as a Unix time.
pub fn parse_info_time(text: &str) -> Option<f64> {
    let t = chrono::DateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f%:z").ok()?;
    Some(t.timestamp() as f64 + f64::from(t.timestamp_subsec_micros()) / 1e6)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_times_and_xlog_lines() {
        assert_eq!(parse_info_time("2026-11-25 12:33:56+00:00"), Some(1_795_610_036.0));
        assert!(parse_info_time("None").is_none());
        let e = parse_xlog_line("000000010000000000000007\t2978078\t1795610025.863507\tgzip\tNone").expect("valid");
        assert_eq!((e.size, e.compression.as_deref()), (2_978_078, Some("gzip")));
        assert!(parse_xlog_line("garbage").is_none());
    }
}
