//! Backups that go wrong end FAILED, cleanly, and the next backup works: a full disk, a
//! connection cut in the middle of the copy, a connection frozen in the middle of it (through
//! the harness's [`Proxy`]), the server restarted in the middle of it, and `barman backup`
//! killed (SIGKILL) at seeded random points during and after the copy. And a server that is
//! silent for a good reason (waiting for WAL archiving) is not mistaken for a frozen one.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{ensure, Context as _};
use barman_core::catalog::BackupStatus;
use barman_tests::{pg_test, wait_for, BarmanSite, Cluster, ClusterOptions, Proxy, RunCommand, ALL_MAJORS};

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

/// Sends `user`'s connections of `site` (`barman` for `conninfo`, `streaming_barman` for
/// `streaming_conninfo`) through `proxy`. Commands started before keep their connections.
fn route_through(site: &BarmanSite, pg: &Cluster, proxy: &Proxy, user: &str) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&site.config)?;
    let direct = format!("port={} user={user} ", pg.port());
    ensure!(text.matches(&direct).count() == 1, "one {direct:?} in {text}");
    std::fs::write(&site.config, text.replace(&direct, &format!("port={} user={user} ", proxy.port())))?;
    Ok(())
}

fn log_text(site: &BarmanSite) -> String {
    std::fs::read_to_string(site.home.path().join("barman.log")).unwrap_or_default()
}

/// Waits until `pg` streams a base backup's files, then freezes `proxy`.
fn freeze_mid_copy(pg: &Cluster, proxy: &Proxy) -> anyhow::Result<()> {
    wait_for("the backup to stream files", || {
        Ok(pg.sql(
            "SELECT count(*) FROM pg_stat_progress_basebackup WHERE phase = 'streaming database files' AND backup_streamed > 0",
        )? == "1")
    })?;
    proxy.freeze();
    Ok(())
}

// The backup's stream freezes in the middle of the copy (the sockets stay open, nothing
// arrives): after `keepalive_interval` the server is asked, says its WAL sender is waiting to
// send, and the copy fails with that reason; the retry, once the network is back, is DONE.
pg_test!(a_frozen_backup_stream_is_detected_and_the_retry_completes, |major| {
    let pg = Cluster::start(ClusterOptions::new(major))?;
    let (site, _receiver) = streaming_site(
        &pg,
        &["keepalive_interval = 1", "basebackup_retry_times = 1", "basebackup_retry_sleep = 3", "bandwidth_limit = 10240"],
    )?;
    // Only the backup's replication session goes through the proxy: receive-wal, already
    // running, and the `conninfo` session the server is asked on stay direct.
    let proxy = Proxy::start(&pg)?;
    route_through(&site, &pg, &proxy, "streaming_barman")?;
    let r = std::thread::scope(|s| {
        let network = s.spawn(|| -> anyhow::Result<()> {
            freeze_mid_copy(&pg, &proxy)?;
            wait_for("barman-rs to give up on the frozen copy", || Ok(log_text(&site).contains("copy failed")))?;
            proxy.pass();
            Ok(())
        });
        let r = site.run(&["backup", "--wait", "--wait-timeout", "60", "pg"]);
        network.join().map_err(|_| anyhow::anyhow!("the network thread panicked"))??;
        r
    })?;
    ensure!(r.code == 0 && r.stdout.contains("Backup completed"), "{r}");
    ensure!(
        r.stderr.contains("WARNING: Failure executing a backup using native streaming (attempt 0): nothing received from the server for ")
            && r.stderr.contains("is waiting to send to barman-rs, so the connection between them is stalled"),
        "the stall is reported with what the server said: {r}"
    );
    ensure!(proxy.accepted() >= 2, "the retry connected again");
    let r = site.run(&["verify-backup", "pg", "latest"])?;
    ensure!(r.code == 0, "{r}");
    Ok(())
});

// A slow link is not a frozen one: throttled so that one 32 kB message of the stream takes
// two seconds to arrive, twice `keepalive_interval`, the copy goes on — bytes still arrive —
// and the backup is DONE without a stall ever suspected.
pg_test!(a_backup_through_a_slow_link_is_not_taken_for_a_stall, |major| {
    let pg = Cluster::start(ClusterOptions::new(major))?;
    let (site, _receiver) = streaming_site(&pg, &["keepalive_interval = 1", "bandwidth_limit = 10240"])?;
    let proxy = Proxy::start(&pg)?;
    route_through(&site, &pg, &proxy, "streaming_barman")?;
    let r = std::thread::scope(|s| {
        let network = s.spawn(|| -> anyhow::Result<()> {
            wait_for("the backup to stream files", || {
                Ok(pg.sql("SELECT count(*) FROM pg_stat_progress_basebackup WHERE phase = 'streaming database files'")? == "1")
            })?;
            proxy.slow(16 * 1024);
            std::thread::sleep(Duration::from_secs(5));
            proxy.pass();
            Ok(())
        });
        let r = site.run(&["backup", "--wait", "--wait-timeout", "60", "pg"]);
        network.join().map_err(|_| anyhow::anyhow!("the network thread panicked"))??;
        r
    })?;
    ensure!(r.code == 0 && r.stdout.contains("Backup completed") && !r.stderr.contains("Failure"), "{r}");
    let log = log_text(&site);
    // While the link is slow the server waits to send; barman-rs must not hold that against
    // it. (The server may still be asked at the end, while it waits for its archiver, and if
    // it finishes while being asked, say it has no backup in progress: the second look clears
    // that.)
    ensure!(!log.contains("waiting to send"), "bytes kept arriving, so no stall was suspected:\n{log}");
    let r = site.run(&["verify-backup", "pg", "latest"])?;
    ensure!(r.code == 0, "{r}");
    Ok(())
});

// The whole server becomes unreachable in the middle of the copy (both sessions go through
// the frozen proxy): the question on a new connection gets no answer either, and the backup
// ends FAILED with that reason, the lock free for the next one.
pg_test!(a_backup_from_a_server_that_stops_answering_fails_clearly, |major| {
    let pg = Cluster::start(ClusterOptions::new(major))?;
    let (site, _receiver) = streaming_site(&pg, &["keepalive_interval = 1", "bandwidth_limit = 10240"])?;
    let proxy = Proxy::start(&pg)?;
    route_through(&site, &pg, &proxy, "streaming_barman")?;
    route_through(&site, &pg, &proxy, "barman")?;
    let r = std::thread::scope(|s| {
        let network = s.spawn(|| freeze_mid_copy(&pg, &proxy));
        let r = site.run(&["backup", "pg"]);
        network.join().map_err(|_| anyhow::anyhow!("the network thread panicked"))??;
        r
    })?;
    ensure!(r.code == 1, "{r}");
    ensure!(
        r.stderr.contains("ERROR: Backup failed copying files.\nDETAILS: ")
            && r.stderr.contains("nothing received from the server for ")
            && r.stderr.contains("the server does not answer a new connection either"),
        "the reason says the server cannot be reached: {r}"
    );
    let backups = statuses(&site)?;
    ensure!(backups.len() == 1 && backups[0].1 == BackupStatus::Failed, "{backups:?}");
    let r = site.run(&["show-backup", "pg", &backups[0].0])?;
    ensure!(r.stdout.contains("does not answer a new connection either"), "backup.info keeps the reason: {r}");
    proxy.pass();
    clean_after_failure(&site, &pg)?;
    Ok(())
});

// A server silent for longer than `keepalive_interval` because it is busy — here waiting for
// its archiver (`archive_mode = on` and a slow `archive_command`) before it ends the backup —
// is asked, says so, and the backup goes on to DONE.
pg_test!(a_backup_waiting_for_the_servers_archiver_is_not_taken_for_a_stall, |major| {
    let pg = Cluster::start(ClusterOptions::new(major))?;
    pg.set_conf("archive_command", "sleep 2")?;
    pg.set_conf("archive_mode", "on")?;
    let (site, _receiver) = streaming_site(&pg, &["keepalive_interval = 1"])?;
    let r = site.run(&["backup", "--wait", "--wait-timeout", "60", "pg"])?;
    ensure!(r.code == 0 && r.stdout.contains("Backup completed"), "{r}");
    let log = log_text(&site);
    ensure!(
        log.lines().any(|l| l.contains("no data from the server for 1 s: it is busy: waiting for wal archiving to finish")),
        "the log says what the server was doing:\n{log}"
    );
    let r = site.run(&["verify-backup", "pg", "latest"])?;
    ensure!(r.code == 0, "{r}");
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
