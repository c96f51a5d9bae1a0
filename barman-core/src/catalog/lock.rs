//! Barman's lock files (`barman/lockfile.py`), so that barman-rs and Barman exclude each other
//! when both run against one catalog.
//!
//! A lock is an exclusive `flock` on a file in `barman_lock_directory`, created with mode
//! 0600. Once acquired, the holder replaces the file's content with its PID and a newline
//! (`"16423\n"`). Releasing unlocks and closes but does **not** delete the file, so a PID in
//! an unlocked file is stale: whether a lock is held is decided by trying to `flock` it, never
//! by the PID. The PID is read only to tell the user who holds a busy lock (and by
//! `receive-wal --stop`, which signals it).
//!
//! `flock` locks belong to the open file description, so two [`CatalogLock`]s on the same file
//! exclude each other even inside one process.
//!
//! Most locks are tried once (`LOCK_NB`) and fail with [`CatalogError::LockBusy`]; the
//! xlog.db and sync-wal locks wait, as in Barman ([`LockKind::waits`]).

use std::fs::{File, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::backup_id::BackupId;
use super::CatalogError;
use crate::storage::{self, StorageError, StorageOp, FILE_MODE};

/// Which of Barman's locks.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LockKind {
    /// `.cron.lock`: the global part of `cron` (not per server).
    GlobalCron,
    /// `.config-update.lock`: `config-update` / cron processing `cfg_changes.queue`.
    ConfigUpdate,
    /// `.<server>-backup.lock`: `backup` and `delete`.
    ServerBackup,
    /// `.<server>-cron.lock`: the per-server part of `cron`.
    ServerCron,
    /// `.<server>-xlogdb.lock`: every xlog.db access (waits).
    ServerXlogDb,
    /// `.<server>-archive-wal.lock`: `archive-wal` (and briefly `cron`, `check`).
    ServerArchiveWal,
    /// `.<server>-receive-wal.lock`: `receive-wal` for its whole life.
    ServerReceiveWal,
    /// `.<server>-sync-wal.lock`: passive node WAL sync (waits).
    ServerWalSync,
    /// `.<server>-<ID>.lock`: operations on one backup (`delete`, retention, `check-backup`).
    Backup(BackupId),
    /// `.<server>-<ID>-sync-backup.lock`: passive node copying one backup.
    BackupSync(BackupId),
}

impl LockKind {
    /// The lock file's name for `server` (ignored by the two global locks).
    pub fn file_name(&self, server: &str) -> String {
        match self {
            LockKind::GlobalCron => ".cron.lock".to_owned(),
            LockKind::ConfigUpdate => ".config-update.lock".to_owned(),
            LockKind::ServerBackup => format!(".{server}-backup.lock"),
            LockKind::ServerCron => format!(".{server}-cron.lock"),
            LockKind::ServerXlogDb => format!(".{server}-xlogdb.lock"),
            LockKind::ServerArchiveWal => format!(".{server}-archive-wal.lock"),
            LockKind::ServerReceiveWal => format!(".{server}-receive-wal.lock"),
            LockKind::ServerWalSync => format!(".{server}-sync-wal.lock"),
            LockKind::Backup(id) => format!(".{server}-{id}.lock"),
            LockKind::BackupSync(id) => format!(".{server}-{id}-sync-backup.lock"),
        }
    }

    /// Whether Barman blocks until the lock is free (`wait=True`) rather than failing.
    pub fn waits(&self) -> bool {
        matches!(self, LockKind::ServerXlogDb | LockKind::ServerWalSync)
    }
}

/// A held lock; released when dropped (the file stays, as with Barman).
#[derive(Debug)]
pub struct CatalogLock {
    file: File,
    path: PathBuf,
    kind: LockKind,
}

impl CatalogLock {
    /// Takes `kind` for `server` in `lock_dir` with Barman's policy: waits for the xlog.db
    /// and sync-wal locks, fails at once with [`CatalogError::LockBusy`] for the others.
    pub fn acquire(lock_dir: &Path, server: &str, kind: LockKind) -> Result<Self, CatalogError> {
        if kind.waits() {
            Self::acquire_blocking(lock_dir, server, kind)
        } else {
            Self::try_acquire(lock_dir, server, kind)
        }
    }

    /// Takes the lock or fails at once, naming the holder's PID.
    pub fn try_acquire(lock_dir: &Path, server: &str, kind: LockKind) -> Result<Self, CatalogError> {
        let path = lock_dir.join(kind.file_name(server));
        loop {
            let file = storage::fs::open_or_create_rw(&path, FILE_MODE)?;
            match file.try_lock() {
                Ok(()) => {}
                Err(TryLockError::WouldBlock) => {
                    let pid = read_pid(&path);
                    return Err(CatalogError::LockBusy { path, pid });
                }
                Err(TryLockError::Error(e)) => return Err(StorageError::io(StorageOp::Lock, path, e).into()),
            }
            if still_at(&file, &path)? {
                return Self::hold(file, path, kind);
            }
        }
    }

    /// Takes the lock, waiting for the holder to release it.
    pub fn acquire_blocking(lock_dir: &Path, server: &str, kind: LockKind) -> Result<Self, CatalogError> {
        let path = lock_dir.join(kind.file_name(server));
        loop {
            let file = storage::fs::open_or_create_rw(&path, FILE_MODE)?;
            file.lock().map_err(|e| StorageError::io(StorageOp::Lock, &path, e))?;
            if still_at(&file, &path)? {
                return Self::hold(file, path, kind);
            }
        }
    }

    /// Writes our PID as Barman does: from offset 0, then truncate to what was written.
    fn hold(mut file: File, path: PathBuf, kind: LockKind) -> Result<Self, CatalogError> {
        let pid = format!("{}\n", std::process::id());
        let io = |e| StorageError::io(StorageOp::Write, &path, e);
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        file.write_all(pid.as_bytes()).map_err(io)?;
        file.set_len(pid.len() as u64).map_err(io)?;
        Ok(CatalogLock { file, path, kind })
    }

    /// The PID of the process holding `kind`, or `None` when nobody does (Barman's
    /// `get_owner_pid`: try the lock without writing our PID). Also `None` when the holder's
    /// file has no readable PID.
    pub fn owner_pid(lock_dir: &Path, server: &str, kind: &LockKind) -> Result<Option<u32>, CatalogError> {
        let path = lock_dir.join(kind.file_name(server));
        if !storage::fs::exists(&path)? {
            return Ok(None);
        }
        let file = storage::fs::open_or_create_rw(&path, FILE_MODE)?;
        match file.try_lock() {
            Ok(()) => Ok(None), // free; dropping the handle unlocks
            Err(TryLockError::WouldBlock) => Ok(read_pid(&path)),
            Err(TryLockError::Error(e)) => Err(StorageError::io(StorageOp::Lock, path, e).into()),
        }
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Which lock this is.
    pub fn kind(&self) -> &LockKind {
        &self.kind
    }
}

impl Drop for CatalogLock {
    fn drop(&mut self) {
        // Closing releases the flock too; unlocking first mirrors Barman's release().
        let _ = self.file.unlock();
    }
}

/// The first line of a lock file as a PID, as Barman's `int(readline().strip())`.
fn read_pid(path: &Path) -> Option<u32> {
    let mut text = String::new();
    File::open(path).ok()?.take(64).read_to_string(&mut text).ok()?;
    text.lines().next()?.trim().parse().ok()
}

/// Whether the file we locked is still the one at `path`: `lock-directory-cleanup` (or a
/// `cron`) may have removed it between our open and our lock, and a lock on an unlinked file
/// excludes nobody — the next process would create a new file and lock that too.
fn still_at(file: &File, path: &Path) -> Result<bool, StorageError> {
    use std::os::unix::fs::MetadataExt as _;
    let held = file.metadata().map_err(|e| StorageError::io(StorageOp::Metadata, path, e))?;
    match std::fs::metadata(path) {
        Ok(now) => Ok(now.ino() == held.ino() && now.dev() == held.dev()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(StorageError::io(StorageOp::Metadata, path, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lock_file_removed_under_us_is_not_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".pg-backup.lock");
        let file = storage::fs::open_or_create_rw(&path, FILE_MODE).unwrap();
        assert!(still_at(&file, &path).unwrap());
        std::fs::remove_file(&path).unwrap();
        assert!(!still_at(&file, &path).unwrap(), "removed");
        let _other = storage::fs::open_or_create_rw(&path, FILE_MODE).unwrap();
        assert!(!still_at(&file, &path).unwrap(), "replaced by another file");
        // Taking the lock opens the file that is there now.
        let lock = CatalogLock::try_acquire(dir.path(), "pg", LockKind::ServerBackup).unwrap();
        assert!(still_at(&lock.file, &path).unwrap());
    }
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn names_match_barman() {
        let id: BackupId = "20261125T123233".parse().unwrap();
        let cases = [
            (LockKind::GlobalCron, ".cron.lock"),
            (LockKind::ConfigUpdate, ".config-update.lock"),
            (LockKind::ServerBackup, ".pg-backup.lock"),
            (LockKind::ServerCron, ".pg-cron.lock"),
            (LockKind::ServerXlogDb, ".pg-xlogdb.lock"),
            (LockKind::ServerArchiveWal, ".pg-archive-wal.lock"),
            (LockKind::ServerReceiveWal, ".pg-receive-wal.lock"),
            (LockKind::ServerWalSync, ".pg-sync-wal.lock"),
            (LockKind::Backup(id), ".pg-20261125T123233.lock"),
            (LockKind::BackupSync(id), ".pg-20261125T123233-sync-backup.lock"),
        ];
        for (kind, name) in cases {
            assert_eq!(kind.file_name("pg"), name);
        }
        assert!(LockKind::ServerXlogDb.waits() && !LockKind::ServerBackup.waits());
    }

    #[test]
    fn contention_between_two_handles_names_the_pid() {
        let dir = tempfile::tempdir().unwrap();
        let held = CatalogLock::acquire(dir.path(), "pg", LockKind::ServerBackup).unwrap();
        let path = dir.path().join(".pg-backup.lock");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), format!("{}\n", std::process::id()));
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);

        let err = CatalogLock::acquire(dir.path(), "pg", LockKind::ServerBackup).unwrap_err();
        match &err {
            CatalogError::LockBusy { pid, path: p } => {
                assert_eq!(*pid, Some(std::process::id()));
                assert_eq!(p, &path);
            }
            other => panic!("{other:?}"),
        }
        assert!(err.to_string().contains(&format!("held by process {}", std::process::id())), "{err}");
        assert_eq!(
            CatalogLock::owner_pid(dir.path(), "pg", &LockKind::ServerBackup).unwrap(),
            Some(std::process::id())
        );
        // Another kind is independent.
        let _other = CatalogLock::acquire(dir.path(), "pg", LockKind::ServerCron).unwrap();

        drop(held);
        assert!(path.exists(), "released locks keep their file");
        assert_eq!(CatalogLock::owner_pid(dir.path(), "pg", &LockKind::ServerBackup).unwrap(), None);
        let again = CatalogLock::try_acquire(dir.path(), "pg", LockKind::ServerBackup).unwrap();
        assert_eq!(again.kind(), &LockKind::ServerBackup);
    }

    #[test]
    fn stale_pid_is_replaced_and_garbage_is_tolerated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".pg-archive-wal.lock");
        std::fs::write(&path, "999999999999\nleftover text").unwrap();
        let lock = CatalogLock::acquire(dir.path(), "pg", LockKind::ServerArchiveWal).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), format!("{}\n", std::process::id()));
        drop(lock);
        std::fs::write(&path, "garbage").unwrap();
        let _held = CatalogLock::acquire(dir.path(), "pg", LockKind::ServerArchiveWal).unwrap();
        std::fs::write(&path, "garbage").unwrap();
        match CatalogLock::try_acquire(dir.path(), "pg", LockKind::ServerArchiveWal) {
            Err(CatalogError::LockBusy { pid: None, .. }) => {}
            other => panic!("{other:?}"),
        }
        assert_eq!(CatalogLock::owner_pid(dir.path(), "nobody", &LockKind::ServerBackup).unwrap(), None);
    }

    #[test]
    fn waiting_lock_blocks_until_release() {
        let dir = tempfile::tempdir().unwrap();
        let held = CatalogLock::acquire(dir.path(), "pg", LockKind::ServerXlogDb).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let lock_dir = dir.path().to_path_buf();
        let waiter = std::thread::spawn(move || {
            let lock = CatalogLock::acquire(&lock_dir, "pg", LockKind::ServerXlogDb).unwrap();
            tx.send(()).unwrap();
            drop(lock);
        });
        // The waiter cannot get through while we hold it.
        assert!(rx.try_recv().is_err());
        drop(held);
        rx.recv().unwrap();
        waiter.join().unwrap();
    }
}
