//! Backups that go wrong end FAILED, cleanly, and the next backup works: a full disk, a
//! connection cut in the middle of the copy, the server restarted in the middle of it, and `barman backup` killed (SIGKILL) at seeded
//! random points during and after the copy.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{ensure, Context as _};
use barman_core::catalog::BackupStatus;
use barman_tests::{pg_test, wait_for, BarmanSite, Cluster, ClusterOptions, RunCommand, ALL_MAJORS};

use crate::backup::{cut_reason, cut_the_backup_connection, statuses, streaming_site};

/// What must hold once a backup failed: nothing STARTED or EMPTY, the backup lock free, and
/// no replication slot but receive-wal's and no base backup left on the server.
fn clean_after_failure(site: &BarmanSite, pg: &Cluster) -> anyhow::Result<()> {
    let backups = statuses(site)?;
    ensure!(
        backups.iter().all(|(_, s)| !matches!(s, BackupStatus::Started | BackupStatus::Empty)),
        "no backup is left running: {backups:?}"
    );
    let r = site.run(&["list-processes", "pg"])?;
    ensure!(r.code == 0 && !r.stdout.contains("backup"), "the backup lock is free: {r}");
    ensure!(pg.sql("SELECT count(*) FROM pg_replication_slots WHERE slot_name <> 'barman'")? == "0", "no slot left behind");
    wait_for("the base backup's walsender to go", || Ok(pg.sql("SELECT count(*) FROM pg_stat_replication WHERE state = 'backup'")? == "0"))
}

/// A tmpfs mounted on a directory for the life of the value (unmounted on drop).
struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Mounts a tmpfs of `megabytes` on `dir`, or says why it cannot (no privilege, say).
    fn mount(dir: &Path, megabytes: u32) -> anyhow::Result<Tmpfs> {
        std::fs::create_dir_all(dir)?;
        Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={megabytes}m,mode=0700"), "tmpfs"]).arg(dir).run()?;
        Ok(Tmpfs(dir.to_owned()))
    }

    fn resize(&self, megabytes: u32) -> anyhow::Result<()> {
        Command::new("mount").args(["-o", &format!("remount,size={megabytes}m")]).arg(&self.0).run()?;
        Ok(())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).output();
    }
}

pg_test!(a_full_disk_fails_the_backup_and_the_next_one_is_done, |major| {
    let pg = Cluster::start(ClusterOptions::new(major))?;
    let base = tempfile::tempdir()?;
    let dir = base.path().join("base");
    // A few MB: the cluster (more than 20 MB) does not fit.
    let tmpfs = match Tmpfs::mount(&dir, 4) {
        Ok(t) => t,
        Err(e) => {
            println!("skipped: cannot mount a tmpfs to fill ({e:#}); this test needs root with CAP_SYS_ADMIN");
            return Ok(());
        }
    };
    let (site, _receiver) = streaming_site(&pg, &[&format!("basebackups_directory = {}", dir.display())])?;
    let r = site.run(&["backup", "pg"])?;
    ensure!(r.code == 1 && r.stderr.contains("ERROR: Backup failed copying files.\nDETAILS: "), "{r}");
    ensure!(
        r.stderr.contains("No space left on device") && r.stderr.contains(&dir.display().to_string()),
        "the error names ENOSPC and the path: {r}"
    );
    let backups = statuses(&site)?;
    ensure!(backups.len() == 1 && backups[0].1 == BackupStatus::Failed, "{backups:?}");
    let r = site.run(&["show-backup", "pg", &backups[0].0])?;
    ensure!(r.stdout.contains("No space left on device"), "backup.info keeps the reason: {r}");
    clean_after_failure(&site, &pg)?;

    // Room again: the next backup is DONE and whole.
    tmpfs.resize(512)?;
    let r = site.run(&["backup", "--wait", "--wait-timeout", "60", "pg"])?;
    ensure!(r.code == 0 && r.stdout.contains("Backup completed"), "{r}");
    let backups = statuses(&site)?;
    ensure!(backups.len() == 2 && backups[1].1 == BackupStatus::Done, "{backups:?}");
    let r = site.run(&["verify-backup", "pg", "latest"])?;
    ensure!(r.code == 0, "{r}");
    Ok(())
});

pg_test!(a_connection_cut_mid_copy_fails_the_backup, |major| {
    let pg = Cluster::start(ClusterOptions::new(major))?;
    let (site, _receiver) = streaming_site(&pg, &["bandwidth_limit = 10240"])?;
    let r = std::thread::scope(|s| {
        let cut = s.spawn(|| cut_the_backup_connection(&pg));
        let r = site.run(&["backup", "pg"]);
        cut.join().map_err(|_| anyhow::anyhow!("the cutting thread panicked"))??;
        r
    })?;
    ensure!(r.code == 1, "{r}");
    ensure!(
        r.stderr.contains("ERROR: Backup failed copying files.\nDETAILS: ")
            && cut_reason(&r.stderr),
        "the reason is the server's: {r}"
    );
    ensure!(!r.stderr.contains("attempt 0"), "no retries unless configured: {r}");
    let backups = statuses(&site)?;
    ensure!(backups.len() == 1 && backups[0].1 == BackupStatus::Failed, "{backups:?}");
    clean_after_failure(&site, &pg)?;
    let r = site.run(&["backup", "--wait", "--wait-timeout", "60", "pg"])?;
    ensure!(r.code == 0 && r.stdout.contains("Backup completed"), "{r}");
    Ok(())
});

// The server restarted in the middle of the copy (`pg_ctl restart -m fast`, as an
// administrator or a failover script would): the backup ends FAILED with the reason, nothing
// is left running, and once the server is back the next backup is DONE.
pg_test!(a_server_restarted_mid_copy_fails_the_backup_and_the_next_one_is_done, |major| {
    let pg = Cluster::start(ClusterOptions::new(major))?;
    let (site, _receiver) = streaming_site(&pg, &["bandwidth_limit = 10240"])?;
    let r = std::thread::scope(|s| {
        let restart = s.spawn(|| {
            wait_for("a base backup in progress", || {
                Ok(pg.sql("SELECT count(*) FROM pg_stat_replication WHERE state = 'backup'")? == "1")
            })?;
            pg.restart()
        });
        let r = site.run(&["backup", "pg"]);
        restart.join().map_err(|_| anyhow::anyhow!("the restarting thread panicked"))??;
        r
    })?;
    ensure!(r.code == 1, "{r}");
    ensure!(r.stderr.contains("ERROR: Backup failed copying files.\nDETAILS: "), "{r}");
    let backups = statuses(&site)?;
    ensure!(backups.len() == 1 && backups[0].1 == BackupStatus::Failed, "{backups:?}");
    clean_after_failure(&site, &pg)?;
    // receive-wal reconnects by itself (with backoff); until it has, `backup`'s check of
    // the slot refuses to start, as Barman's does.
    wait_for("receive-wal back on its slot", || {
        Ok(pg.sql("SELECT active FROM pg_replication_slots WHERE slot_name = 'barman'")? == "t")
    })?;
    let r = site.run(&["backup", "--wait", "--wait-timeout", "90", "pg"])?;
    ensure!(r.code == 0 && r.stdout.contains("Backup completed"), "{r}");
    Ok(())
});

/// SIGKILL points over the whole run (all six majors): spread as evenly as they go.
const KILL_POINTS: usize = 20;

/// A small deterministic generator (SplitMix64): the same seed gives the same kill points.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

pg_test!(backups_killed_at_random_points_end_failed_and_the_catalog_stays_sound, |major| {
    let index = ALL_MAJORS.iter().position(|m| *m == major).context("a known major")?;
    let points = KILL_POINTS / ALL_MAJORS.len() + usize::from(index < KILL_POINTS % ALL_MAJORS.len());
    let seed = std::env::var("BARMAN_TEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x5EED_u64) ^ u64::from(major);
    println!("kill points: {points}, seed {seed:#x} (BARMAN_TEST_SEED changes it)");
    let mut rng = SplitMix(seed);

    let pg = Cluster::start(ClusterOptions::new(major))?;
    // Throttled: the copy of the small cluster lasts a few seconds, so the points fall in it
    // as well as in what follows (finalising, archiving, waiting for the WAL).
    let (site, _receiver) = streaming_site(&pg, &["bandwidth_limit = 16384"])?;
    for point in 0..points {
        let delay = Duration::from_millis(rng.next() % 2500);
        let mut backup = site.spawn(&["backup", "--wait", "--wait-timeout", "60", "pg"])?;
        std::thread::sleep(delay);
        backup.kill()?;
        let before = statuses(&site)?;
        // The next command that takes the backup lock finds the killed backup and fails it.
        let r = site.run(&["cron"])?;
        ensure!(r.code == 0, "point {point} ({delay:?}): {r}");
        let after = statuses(&site)?;
        for ((id, was), (_, now)) in before.iter().zip(&after) {
            let expected = match was {
                BackupStatus::Started | BackupStatus::Empty => BackupStatus::Failed,
                // A WAITING_FOR_WALS backup may have become DONE since.
                other => *other,
            };
            ensure!(
                *now == expected || (*was == BackupStatus::WaitingForWals && *now == BackupStatus::Done),
                "point {point} ({delay:?}): backup {id} was {was}, is {now}"
            );
        }
        clean_after_failure(&site, &pg).with_context(|| format!("point {point} ({delay:?})"))?;
        let r = site.run(&["list-backups", "pg"])?;
        ensure!(r.code == 0 && !r.stdout.contains("STARTED"), "point {point}: {r}");
    }
    // The locks were recovered: a backup runs to DONE.
    let r = site.run(&["backup", "--wait", "--wait-timeout", "60", "pg"])?;
    ensure!(r.code == 0 && r.stdout.contains("Backup completed"), "{r}");
    ensure!(!r.stderr.contains("WAITING_FOR_WALS"), "{r}");
    let r = site.run(&["cron"])?;
    ensure!(r.code == 0, "{r}");
    let backups = statuses(&site)?;
    println!("backups: {backups:?}");
    ensure!(backups.last().is_some_and(|(_, s)| *s == BackupStatus::Done), "{backups:?}");
    for (id, status) in &backups {
        ensure!(matches!(status, BackupStatus::Done | BackupStatus::Failed | BackupStatus::WaitingForWals), "{id}: {status}");
        if *status == BackupStatus::Done {
            let r = site.run(&["verify-backup", "pg", id])?;
            ensure!(r.code == 0, "DONE backup {id} verifies: {r}");
        }
    }
    Ok(())
});
