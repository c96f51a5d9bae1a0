//! A read-only look at one server's catalog, just what `check`, `status`, `show-servers` and
//! `diagnose` need, read through [`crate::catalog`].
//!
//! Reading is lenient: a backup.info, an xlog.db line or an identity.json that cannot be
//! parsed is left out, never fatal, because a diagnostics command must still report
//! everything else.

use std::path::PathBuf;

use crate::catalog::query::{self, BackupCatalog};
use crate::catalog::{xlogdb, BackupInfo, LockKind, ServerCatalog, ServerIdentity, XlogDbEntry};
use crate::config::{GlobalSettings, ServerConfig};
use crate::storage;

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
        let catalog = ServerCatalog::from_config(cfg, global);
        let backups = match BackupCatalog::load(&catalog) {
            Ok((c, _unreadable)) => c.backups().iter().map(BackupSummary::of).collect(),
            Err(_) => Vec::new(),
        };
        let xlog_bytes = read_xlogdb_bytes(&catalog);
        let identity_path = catalog.identity_path();
        let identity_systemid = match storage::fs::exists(&identity_path) {
            Ok(true) => Some(ServerIdentity::read(&identity_path).ok().flatten().map(|i| i.systemid.to_string())),
            _ => None,
        };
        let names = |dir: &std::path::Path| -> Vec<String> {
            storage::fs::list_dir(dir)
                .unwrap_or_default()
                .into_iter()
                .map(|n| n.to_string_lossy().into_owned())
                .collect()
        };
        let waiting = |dir: &std::path::Path| names(dir).iter().filter(|n| !n.ends_with(".tmp")).count();
        CatalogView {
            backups,
            xlog: lenient_xlog(&xlog_bytes).iter().map(XlogEntry::of).collect(),
            xlogdb_nonempty: !xlog_bytes.is_empty(),
            identity_path,
            identity_systemid,
            error_files: names(catalog.errors_directory()),
            incoming_count: waiting(catalog.incoming_directory()),
            streaming_count: waiting(catalog.streaming_directory()),
            receive_wal_running: lock_is_held(&catalog.lock_path(&LockKind::ServerReceiveWal)),
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

impl BackupSummary {
    fn of(info: &BackupInfo) -> Self {
        BackupSummary {
            id: info.backup_id.to_string(),
            status: info.status.to_string(),
            backup_type: query::backup_type(info).to_owned(),
            end_time: info.end_time.map(|t| {
                let at = query::instant(t);
                at.unix_timestamp() as f64 + f64::from(at.microsecond()) / 1e6
            }),
            size: info.size,
            end_wal: info.end_wal.map(|w| w.to_string()),
        }
    }
}

impl XlogEntry {
    fn of(e: &XlogDbEntry) -> Self {
        XlogEntry { name: e.name.to_string(), size: e.size, time: e.time, compression: e.compression.clone() }
    }
}

/// Whether a process holds the flock on `path`, PID written or not (so a holder caught
/// between locking and writing its PID still counts; `CatalogLock::owner_pid` needs the PID).
fn lock_is_held(path: &std::path::Path) -> bool {
    let Ok(file) = std::fs::OpenOptions::new().read(true).write(true).open(path) else { return false };
    matches!(file.try_lock(), Err(std::fs::TryLockError::WouldBlock))
}

/// The bytes of xlog.db (empty when missing), read under its lock as every xlog.db reader
/// must; when the lock cannot be taken (an unusable lock directory is itself reported by the
/// checks) the file is read without it rather than not at all.
fn read_xlogdb_bytes(catalog: &ServerCatalog) -> Vec<u8> {
    let _lock = catalog.lock(LockKind::ServerXlogDb).ok();
    storage::fs::read_if_exists(&catalog.xlogdb_path()).ok().flatten().unwrap_or_default()
}

/// The xlog.db lines that parse; a malformed line is skipped, not fatal, here.
fn lenient_xlog(bytes: &[u8]) -> Vec<XlogDbEntry> {
    if let Ok(all) = xlogdb::parse(bytes) {
        return all;
    }
    String::from_utf8_lossy(bytes).lines().filter_map(|l| XlogDbEntry::parse_line(l).ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_come_from_the_catalog() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/catalog");
        let bytes = std::fs::read(dir.join("20261125T123233-backup.info.gzip-kept")).unwrap();
        let info = BackupInfo::parse("20261125T123233".parse().unwrap(), &bytes).unwrap();
        let s = BackupSummary::of(&info);
        assert_eq!((s.status.as_str(), s.backup_type.as_str()), ("DONE", "full"));
        assert_eq!(s.end_time, Some(1_795_610_011.782075));
        assert_eq!(s.end_wal.as_deref(), Some("000000010000000000000006"));
        let xlog = lenient_xlog(b"000000010000000000000007\t2978078\t1795610025.863507\tgzip\tNone\ngarbage\n");
        assert_eq!(xlog.len(), 1);
        let e = XlogEntry::of(&xlog[0]);
        assert_eq!((e.size, e.compression.as_deref()), (2_978_078, Some("gzip")));
    }
}
