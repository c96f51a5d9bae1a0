//! Barman's process management through lock files: `list-processes`, `terminate-process`,
//! `lock-directory-cleanup`, and a second `backup` refused while one runs.

use anyhow::{ensure, Context as _};
use barman_core::catalog::{CatalogLock, LockKind};
use barman_tests::{pg_test, wait_for, BarmanSite, Cluster, ClusterOptions};

pg_test!(list_terminate_and_clean_up, |major| {
    let pg = Cluster::start(ClusterOptions::new(major))?;
    let site = BarmanSite::new(&pg, &[])?;
    let r = site.run(&["list-processes", "pg"])?;
    ensure!(r.code == 0 && r.stdout == "No active subprocesses found for server pg.\n", "{r}");

    ensure!(site.run(&["receive-wal", "--create-slot", "pg"])?.code == 0);
    let mut receiver = site.spawn(&["receive-wal", "pg"])?;
    let pid = receiver.pid();
    let listed = format!("Active subprocesses for server pg:\n{pid} receive-wal\n");
    wait_for("receive-wal to show up", || Ok(site.run(&["list-processes", "pg"])?.stdout == listed))?;
    let j = site.run(&["-f", "json", "list-processes", "pg"])?.json()?;
    ensure!(j["pg"] == serde_json::json!([{"pid": pid, "name": "receive-wal"}]), "{j}");

    // A backup in progress (its lock held here) makes a second one refuse, clearly.
    let r = site.run(&["switch-wal", "--force", "--archive", "--archive-timeout", "60", "pg"])?;
    ensure!(r.code == 0, "{r}");
    let lock_dir = site.home.path();
    let held = CatalogLock::acquire(lock_dir, "pg", LockKind::ServerBackup)?;
    let r = site.run(&["backup", "pg"])?;
    ensure!(r.code == 1 && r.stderr.contains("Another backup process is running"), "{r}");
    let r = site.run(&["list-processes", "pg"])?;
    ensure!(r.stdout.contains(&format!("{} backup", std::process::id())), "{r}");
    drop(held);

    let r = site.run(&["terminate-process", "pg", "receive-wal"])?;
    ensure!(r.code == 0 && r.stdout == format!("Stopped process receive-wal({pid})\n"), "{r}");
    ensure!(receiver.terminate()?.success(), "receive-wal exits cleanly on SIGINT");
    let r = site.run(&["terminate-process", "pg", "receive-wal"])?;
    ensure!(r.code == 1 && r.stderr.contains("Termination of receive-wal failed: no such process for server pg"), "{r}");

    // Lock files nobody holds are removed; a held one stays.
    let held = CatalogLock::acquire(lock_dir, "pg", LockKind::ServerArchiveWal)?;
    ensure!(lock_dir.join(".pg-receive-wal.lock").exists() && lock_dir.join(".pg-backup.lock").exists());
    let r = site.run(&["lock-directory-cleanup"])?;
    ensure!(r.code == 0, "{r}");
    ensure!(!lock_dir.join(".pg-receive-wal.lock").exists() && !lock_dir.join(".pg-backup.lock").exists());
    ensure!(held.path().exists());
    Ok(())
});

pg_test!(a_killed_backup_ends_failed, |major| {
    let pg = Cluster::start(ClusterOptions::new(major))?;
    let site = BarmanSite::new(&pg, &[])?;
    ensure!(site.run(&["receive-wal", "--create-slot", "pg"])?.code == 0);
    let _receiver = site.spawn(&["receive-wal", "pg"])?;
    let r = site.run(&["switch-wal", "--force", "--archive", "--archive-timeout", "60", "pg"])?;
    ensure!(r.code == 0, "{r}");
    // Throttled to 1 MB/s, the copy takes long enough to be killed in the middle.
    let mut backup = site.spawn(&["backup", "--bwlimit", "1024", "pg"])?;
    let meta = site.server_dir().join("meta");
    let started = || -> anyhow::Result<Option<std::path::PathBuf>> {
        let Ok(entries) = std::fs::read_dir(&meta) else { return Ok(None) };
        for e in entries {
            let path = e?.path();
            // backup.info itself, not the temporary file it is written through (which a kill
            // between write and rename leaves behind).
            if !path.to_string_lossy().ends_with("-backup.info") {
                continue;
            }
            if std::fs::read_to_string(&path).is_ok_and(|t| t.contains("\nstatus=STARTED\n")) {
                return Ok(Some(path));
            }
        }
        Ok(None)
    };
    wait_for("the backup to start copying", || Ok(started()?.is_some()))?;
    let info = started()?.context("backup.info")?;
    backup.kill()?;
    ensure!(std::fs::read_to_string(&info)?.contains("\nstatus=STARTED\n"), "killed mid-copy");

    let r = site.run(&["cron"])?;
    ensure!(r.stderr.contains("marked FAILED: its backup process ended without finishing it"), "{r}");
    let text = std::fs::read_to_string(&info)?;
    ensure!(text.contains("\nstatus=FAILED\n") && text.contains("error=failure during backup"), "{text}");
    let r = site.run(&["list-backups", "pg"])?;
    ensure!(r.stdout.contains("FAILED"), "{r}");
    Ok(())
});

pg_test!(an_interrupted_backup_is_failed_at_once, |major| {
    let pg = Cluster::start(ClusterOptions::new(major))?;
    let site = BarmanSite::new(&pg, &[])?;
    ensure!(site.run(&["receive-wal", "--create-slot", "pg"])?.code == 0);
    let _receiver = site.spawn(&["receive-wal", "pg"])?;
    let r = site.run(&["switch-wal", "--force", "--archive", "--archive-timeout", "60", "pg"])?;
    ensure!(r.code == 0, "{r}");
    let mut backup = site.spawn(&["backup", "--bwlimit", "1024", "pg"])?;
    let meta = site.server_dir().join("meta");
    let info = || -> Option<std::path::PathBuf> {
        std::fs::read_dir(&meta).ok()?.filter_map(Result::ok).map(|e| e.path()).find(|p| p.to_string_lossy().ends_with("-backup.info"))
    };
    wait_for("the backup to start copying", || {
        Ok(info().is_some_and(|p| std::fs::read_to_string(p).is_ok_and(|t| t.contains("\nstatus=STARTED\n"))))
    })?;
    let status = backup.terminate()?;
    ensure!(status.code() == Some(1), "a stopped backup exits 1: {status:?}");
    let text = std::fs::read_to_string(info().context("backup.info")?)?;
    ensure!(text.contains("\nstatus=FAILED\n") && text.contains("KeyboardInterrupt"), "{text}");
    let r = site.run(&["list-processes", "pg"])?;
    ensure!(!r.stdout.contains("backup"), "the lock is free: {r}");
    Ok(())
});
