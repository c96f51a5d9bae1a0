//! The barman processes working on a server, found through their lock files (Barman's
//! `ProcessManager`): `list-processes`, `terminate-process`, `receive-wal --stop`, and the
//! removal of lock files nobody holds (`lock-directory-cleanup`, `cron`).
//!
//! A lock file records its holder's PID, but only the flock says whether the holder is alive:
//! a file left by a killed process is free and is never reported as running.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rustix::process::{kill_process, test_kill_process, Pid, Signal};

use super::lock::{CatalogLock, LockKind};
use super::{BackupId, CatalogError};
use crate::storage::{self, StorageError};

/// One running barman process of a server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessInfo {
    /// Its PID, from the lock file.
    pub pid: u32,
    /// Barman's task name: `receive-wal`, `sync-backup`, `backup`, `cron`, `archive-wal`,
    /// `sync-wal`.
    pub task: &'static str,
}

/// The task a lock file of `server` belongs to, in Barman's matching order (`sync-backup`
/// before `backup`: both end in `-backup.lock`).
fn task_of(file_name: &str, server: &str) -> Option<(&'static str, LockKind)> {
    let rest = file_name.strip_prefix('.')?.strip_prefix(server)?.strip_prefix('-')?;
    let fixed = [
        ("receive-wal", LockKind::ServerReceiveWal),
        ("backup", LockKind::ServerBackup),
        ("cron", LockKind::ServerCron),
        ("archive-wal", LockKind::ServerArchiveWal),
        ("sync-wal", LockKind::ServerWalSync),
    ];
    if let Some(id) = rest.strip_suffix("-sync-backup.lock").and_then(|id| id.parse::<BackupId>().ok()) {
        return Some(("sync-backup", LockKind::BackupSync(id)));
    }
    fixed.into_iter().find(|(task, _)| rest == format!("{task}.lock"))
}

/// The processes holding one of `server`'s task locks in `lock_dir`.
pub fn list_processes(lock_dir: &Path, server: &str) -> Result<Vec<ProcessInfo>, CatalogError> {
    let mut found = Vec::new();
    let mut names = storage::fs::list_dir(lock_dir).or_else(|e| if e.is_not_found() { Ok(Vec::new()) } else { Err(e) })?;
    names.sort();
    for name in names {
        let Some((task, kind)) = name.to_str().and_then(|n| task_of(n, server)) else { continue };
        match CatalogLock::owner_pid(lock_dir, server, &kind) {
            Ok(Some(pid)) => found.push(ProcessInfo { pid, task }),
            Ok(None) => {}
            // Barman skips a lock whose PID it cannot read, with a warning.
            Err(e) => tracing::warn!(server, task, error = %e, "skipping a process whose lock file cannot be read"),
        }
    }
    Ok(found)
}

/// How a termination ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Terminated {
    /// The process is gone: `Stopped process <task>(<pid>)`.
    Stopped(ProcessInfo),
    /// It still runs after the grace period, or could not be signalled.
    StillRunning(ProcessInfo),
    /// No process of that task: `Termination of <task> failed: no such process for server <s>`.
    NotRunning,
}

/// Barman's `Server.kill`: SIGINT to the first process of `task`, then up to `grace` for it to
/// exit (checked with signal 0, as Barman does).
pub fn terminate(lock_dir: &Path, server: &str, task: &str, grace: Duration) -> Result<Terminated, CatalogError> {
    let Some(process) = list_processes(lock_dir, server)?.into_iter().find(|p| p.task == task) else {
        return Ok(Terminated::NotRunning);
    };
    let Some(pid) = i32::try_from(process.pid).ok().and_then(Pid::from_raw) else {
        return Ok(Terminated::StillRunning(process));
    };
    match kill_process(pid, Signal::INT) {
        Ok(()) => {}
        // Gone already.
        Err(rustix::io::Errno::SRCH) => return Ok(Terminated::Stopped(process)),
        Err(e) => {
            tracing::warn!(server, task, pid = process.pid, error = %e, "cannot signal the process");
            return Ok(Terminated::StillRunning(process));
        }
    }
    // Stopped once the process is gone or has let its lock go (an exited child whose parent
    // has not reaped it yet still answers signal 0).
    let still_holds = || {
        list_processes(lock_dir, server).map(|l| l.iter().any(|p| p.task == process.task && p.pid == process.pid))
    };
    let deadline = Instant::now() + grace;
    loop {
        if test_kill_process(pid).is_err() || !still_holds()? {
            return Ok(Terminated::Stopped(process));
        }
        if Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(Terminated::StillRunning(process))
}

/// Removes every `.*.lock` file in `lock_dir` that no process holds (Barman's
/// `lock_files_cleanup`); returns the removed paths. A lock taken between our check and the
/// removal is safe: we hold it ourselves while removing the file.
pub fn cleanup_lock_directory(lock_dir: &Path) -> Result<Vec<PathBuf>, StorageError> {
    let mut removed = Vec::new();
    for name in storage::fs::list_dir(lock_dir)? {
        let Some(text) = name.to_str() else { continue };
        if !(text.starts_with('.') && text.ends_with(".lock")) {
            continue;
        }
        let path = lock_dir.join(&name);
        let Ok(file) = std::fs::OpenOptions::new().read(true).open(&path) else { continue };
        if file.try_lock().is_ok() {
            storage::fs::remove_file_if_exists(&path)?;
            removed.push(path);
        }
    }
    if !removed.is_empty() {
        storage::fsync_dir(lock_dir)?;
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_files_map_to_barmans_tasks() {
        assert_eq!(task_of(".pg-receive-wal.lock", "pg").map(|t| t.0), Some("receive-wal"));
        assert_eq!(task_of(".pg-backup.lock", "pg").map(|t| t.0), Some("backup"));
        assert_eq!(task_of(".pg-20261125T123210-sync-backup.lock", "pg").map(|t| t.0), Some("sync-backup"));
        assert_eq!(task_of(".pg-archive-wal.lock", "pg").map(|t| t.0), Some("archive-wal"));
        assert_eq!(task_of(".pg-xlogdb.lock", "pg"), None, "not a task");
        assert_eq!(task_of(".pg-20261125T123210.lock", "pg"), None, "a backup's lock is not a task");
        assert_eq!(task_of(".pg2-backup.lock", "pg"), None, "another server");
    }

    #[test]
    fn held_locks_are_listed_and_kept_free_ones_are_cleaned() {
        let dir = tempfile::tempdir().unwrap();
        let held = CatalogLock::acquire(dir.path(), "pg", LockKind::ServerArchiveWal).unwrap();
        drop(CatalogLock::acquire(dir.path(), "pg", LockKind::ServerBackup).unwrap());
        let listed = list_processes(dir.path(), "pg").unwrap();
        assert_eq!(listed, [ProcessInfo { pid: std::process::id(), task: "archive-wal" }]);
        assert_eq!(terminate(dir.path(), "pg", "backup", Duration::ZERO).unwrap(), Terminated::NotRunning);
        let removed = cleanup_lock_directory(dir.path()).unwrap();
        assert_eq!(removed, [dir.path().join(".pg-backup.lock")]);
        assert!(held.path().exists(), "a held lock file stays");
    }
}
