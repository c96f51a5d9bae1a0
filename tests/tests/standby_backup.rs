//! Backups from a standby (`backup_method = postgres`), as Barman 3 takes them: barman points at
//! the standby (`conninfo`, `streaming_conninfo`, WAL streamed from it) and, with
//! `primary_conninfo`, switches WAL on the primary so that the backup's last WAL file is
//! archived at once. The backup recovers into a cluster that has the primary's rows. Without
//! `primary_conninfo` the backup is taken too, says that its last WAL waits for the primary, and
//! becomes DONE once the primary switches.
//!
//! `backup_method = rsync` from a standby too, with `archive_mode = always` there: the
//! standby's `pg_backup_stop` waits until the WAL file holding the backup's end is archived,
//! which only the WAL switches barman makes on the primary bring.

use anyhow::{ensure, Context as _};
use barman_core::catalog::BackupStatus;
use barman_tests::{pg_test, wait_for, BarmanSite, Cluster, ClusterOptions, Sshd, BARMAN_USER, PASSWORD};

use crate::backup::statuses;

/// The standby has replayed everything the primary wrote so far.
fn caught_up(primary: &Cluster, standby: &Cluster) -> anyhow::Result<()> {
    let lsn = primary.sql("SELECT pg_current_wal_lsn()")?;
    wait_for("the standby to replay the primary's WAL", || {
        Ok(standby.sql(&format!("SELECT pg_last_wal_replay_lsn() >= '{lsn}'::pg_lsn"))? == "t")
    })
}

/// A site on `standby` streaming its WAL, with at least one WAL file archived (a standby
/// cannot switch: the primary does).
fn standby_site(primary: &Cluster, standby: &Cluster, extra: &[&str]) -> anyhow::Result<(BarmanSite, barman_tests::BackgroundBarman)> {
    let site = BarmanSite::new(standby, extra)?;
    let r = site.run(&["receive-wal", "--create-slot", "pg"])?;
    ensure!(r.code == 0, "{r}");
    let receiver = site.spawn(&["receive-wal", "pg"])?;
    wait_for("receive-wal to stream from the standby", || {
        Ok(standby.sql("SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'")? == "1")
    })?;
    let xlogdb = site.server_dir().join("wals/pg-xlog.db");
    // The streaming archiver keeps the newest complete file back until the next one starts:
    // WAL after the switch starts it.
    primary.sql("CREATE TABLE traffic (n int)")?;
    wait_for("a first WAL file archived from the standby", || {
        primary.switch_wal()?;
        primary.sql("INSERT INTO traffic VALUES (1)")?;
        site.run(&["archive-wal", "pg"])?;
        Ok(std::fs::read_to_string(&xlogdb).is_ok_and(|t| !t.is_empty()))
    })?;
    Ok((site, receiver))
}

/// Runs `f` while the primary has some traffic (a row every 100 ms), as a live primary does:
/// the WAL that follows a switch is what lets the switched file be archived.
fn with_traffic<T>(primary: &Cluster, f: impl FnOnce() -> T) -> T {
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = primary.sql("INSERT INTO traffic VALUES (1)");
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
        });
        let out = f();
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        out
    })
}

pg_test!(a_standby_backup_with_primary_conninfo_recovers, |major| {
    let primary = Cluster::start(ClusterOptions::new(major))?;
    primary.sql("CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 1000) g")?;
    let standby = primary.create_standby()?;
    let primary_conninfo = format!("primary_conninfo = {} password={PASSWORD}", primary.conninfo(BARMAN_USER));
    let (site, _receiver) = standby_site(&primary, &standby, &[&primary_conninfo, "immediate_checkpoint = true"])?;

    let r = site.run(&["check", "pg"])?;
    for line in ["PostgreSQL server is standby: OK", "Primary server is not a standby: OK", "Primary and standby have same system ID: OK"] {
        ensure!(r.stdout.contains(line), "{line}: {r}");
    }
    ensure!(!r.stdout.contains("unsupported options"), "{r}");

    primary.sql("INSERT INTO t SELECT g FROM generate_series(1001, 2000) g")?;
    caught_up(&primary, &standby)?;
    let r = with_traffic(&primary, || site.run(&["backup", "--wait", "--wait-timeout", "120", "pg"]))?;
    ensure!(r.code == 0 && r.stdout.contains("Backup completed"), "{r}");
    ensure!(!r.stderr.contains("WAITING_FOR_WALS") && !r.stderr.contains("primary_conninfo"), "{r}");
    let backups = statuses(&site)?;
    ensure!(backups.len() == 1 && backups[0].1 == BackupStatus::Done, "{backups:?}");
    let id = &backups[0].0;
    let info = std::fs::read_to_string(site.server_dir().join(format!("meta/{id}-backup.info")))?;
    ensure!(info.contains("BACKUP FROM: standby"), "the standby was copied: {info}");
    let r = site.run(&["verify-backup", "pg", "latest"])?;
    ensure!(r.code == 0, "{r}");

    // Written after the backup: in the archive through the standby, so recovered too.
    primary.sql("INSERT INTO t SELECT g FROM generate_series(2001, 2500) g")?;
    archive_through_now(&primary, &standby, &site)?;
    let restored = Cluster::reserve(ClusterOptions::new(major))?;
    let dest = restored.data_dir();
    let r = site.run(&["recover", "pg", "latest", dest.to_str().context("utf-8")?])?;
    ensure!(r.code == 0, "{r}");
    // The standby's copy holds its standby.signal (BASE_BACKUP copies it; Barman's recover keeps
    // it, and the restored cluster would follow the live primary): recover removes it and
    // writes recovery.signal, so the cluster recovers to the end of the archive and promotes.
    ensure!(r.stdout.contains("Removed standby.signal found in the backup"), "{r}");
    ensure!(dest.join("recovery.signal").exists() && !dest.join("standby.signal").exists(), "only recovery.signal: {r}");
    restored.start_existing()?;
    wait_for("the restored cluster to finish recovery", || Ok(restored.sql("SELECT pg_is_in_recovery()")? == "f"))
        .with_context(|| restored.log_tail())?;
    let rows = restored.sql("SELECT count(*) FROM t")?;
    ensure!(rows == "2500", "the restored standby backup has {rows} rows, the primary 2500");
    Ok(())
});

pg_test!(a_standby_backup_without_primary_conninfo_waits_for_the_primary, |major| {
    let primary = Cluster::start(ClusterOptions::new(major))?;
    let standby = primary.create_standby()?;
    let (site, _receiver) = standby_site(&primary, &standby, &[])?;
    // What primary_conninfo would do: a recent checkpoint for the standby to start from.
    primary.checkpoint()?;
    caught_up(&primary, &standby)?;
    let r = site.run(&["backup", "pg"])?;
    ensure!(r.code == 0 && r.stdout.contains("Backup completed"), "{r}");
    ensure!(
        r.stderr.contains(
            "WARNING: server 'pg' is a standby and 'primary_conninfo' is not set: the backup's last WAL file is archived \
             only once the primary switches to a new WAL file"
        ),
        "{r}"
    );
    let backups = statuses(&site)?;
    ensure!(backups.len() == 1 && backups[0].1 == BackupStatus::WaitingForWals, "{backups:?}");
    // The primary switches (archive_timeout, traffic, or the operator): the backup completes.
    wait_for("the backup to become DONE", || {
        primary.switch_wal()?;
        primary.sql("INSERT INTO traffic VALUES (1)")?;
        site.run(&["cron"])?;
        Ok(statuses(&site)?[0].1 == BackupStatus::Done)
    })?;
    Ok(())
});

/// Waits until `site`'s archive holds the WAL the primary has written so far (through the
/// standby), so that a recovery replays every row.
fn archive_through_now(primary: &Cluster, standby: &Cluster, site: &BarmanSite) -> anyhow::Result<()> {
    caught_up(primary, standby)?;
    let end = primary.sql("SELECT pg_walfile_name(pg_current_wal_lsn())")?;
    primary.switch_wal()?;
    let xlogdb = site.server_dir().join("wals/pg-xlog.db");
    wait_for("the last WAL file archived from the standby", || {
        primary.sql("INSERT INTO traffic VALUES (1)")?;
        site.run(&["archive-wal", "pg"])?;
        Ok(std::fs::read_to_string(&xlogdb).is_ok_and(|t| t.contains(&end)))
    })
}

pg_test!(an_rsync_backup_from_a_standby_with_primary_conninfo_recovers, |major| {
    // The standby archives (the harness's archive_command is /bin/true) with archive_mode =
    // always, so its pg_backup_stop waits for the WAL file of the backup's end to be archived.
    let primary = Cluster::start(ClusterOptions::new(major).conf("archive_mode", "always"))?;
    primary.sql("CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 1000) g")?;
    let standby = primary.create_standby()?;
    ensure!(standby.sql("SHOW archive_mode")? == "always");
    let sshd = Sshd::start()?;
    let ssh = format!("ssh_command = {}", sshd.ssh_command());
    let primary_conninfo = format!("primary_conninfo = {} password={PASSWORD}", primary.conninfo(BARMAN_USER));
    let (site, _receiver) = standby_site(
        &primary,
        &standby,
        &["backup_method = rsync", "backup_options = concurrent_backup", &ssh, &primary_conninfo, "immediate_checkpoint = true"],
    )?;
    let r = site.run(&["check", "pg"])?;
    for line in ["\tssh: OK", "PostgreSQL server is standby: OK", "Primary server is not a standby: OK", "Primary and standby have same system ID: OK"] {
        ensure!(r.stdout.contains(line), "{line}: {r}");
    }

    primary.sql("INSERT INTO t SELECT g FROM generate_series(1001, 2000) g")?;
    caught_up(&primary, &standby)?;
    let r = with_traffic(&primary, || site.run(&["backup", "--wait", "--wait-timeout", "120", "pg"]))?;
    ensure!(r.code == 0 && r.stdout.contains("Backup completed"), "{r}");
    ensure!(r.stdout.contains("Starting backup copy via rsync/SSH for "), "{r}");
    ensure!(!r.stderr.contains("WAITING_FOR_WALS") && !r.stderr.contains("primary_conninfo"), "{r}");
    let backups = statuses(&site)?;
    ensure!(backups.len() == 1 && backups[0].1 == BackupStatus::Done, "{backups:?}");
    let id = &backups[0].0;
    let info = std::fs::read_to_string(site.server_dir().join(format!("meta/{id}-backup.info")))?;
    ensure!(info.contains("BACKUP FROM: standby") && info.contains("\nmode=rsync-concurrent\n"), "the standby was copied with rsync: {info}");
    // The standby's stop returned once its archiver had the end WAL file: a switch on the
    // primary completed it.
    let end_wal = info.lines().find_map(|l| l.strip_prefix("end_wal=")).context("end_wal")?.to_owned();
    let archived = standby.sql("SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver")?;
    ensure!(archived.as_str() >= end_wal.as_str(), "the standby archived {archived:?}, the backup ends in {end_wal}");

    // Written after the backup: in the archive through the standby, so recovered too.
    primary.sql("INSERT INTO t SELECT g FROM generate_series(2001, 2500) g")?;
    archive_through_now(&primary, &standby, &site)?;
    let restored = Cluster::reserve(ClusterOptions::new(major))?;
    let dest = restored.data_dir();
    let r = site.run(&["recover", "pg", id, dest.to_str().context("utf-8")?])?;
    ensure!(r.code == 0, "{r}");
    // rsync leaves standby.signal out, as Barman's exclude list does: the copy recovers to the
    // end of the archive and promotes.
    ensure!(dest.join("recovery.signal").exists() && !dest.join("standby.signal").exists(), "only recovery.signal: {r}");
    restored.start_existing()?;
    wait_for("the restored cluster to finish recovery", || Ok(restored.sql("SELECT pg_is_in_recovery()")? == "f"))
        .with_context(|| restored.log_tail())?;
    let rows = restored.sql("SELECT count(*) FROM t")?;
    ensure!(rows == "2500", "the restored rsync standby backup has {rows} rows, the primary 2500");

    // Without primary_conninfo the backup is taken, as Barman takes it, with a warning: the
    // standby's stop returns once the primary switches WAL by itself (here, the test does).
    let conf = std::fs::read_to_string(&site.config)?;
    let conf: String = conf.lines().filter(|l| !l.starts_with("primary_conninfo")).map(|l| format!("{l}\n")).collect();
    std::fs::write(&site.config, conf)?;
    let done = std::sync::atomic::AtomicBool::new(false);
    let r = std::thread::scope(|s| {
        s.spawn(|| {
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = primary.sql("INSERT INTO traffic VALUES (1)");
                let _ = primary.switch_wal();
                std::thread::sleep(std::time::Duration::from_millis(500));
            }
        });
        let r = site.run(&["backup", "pg"]);
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        r
    })?;
    ensure!(r.code == 0 && r.stdout.contains("Backup completed"), "{r}");
    ensure!(r.stderr.contains("WARNING: server 'pg' is a standby and 'primary_conninfo' is not set"), "{r}");
    wait_for("the second backup to become DONE", || {
        primary.sql("INSERT INTO traffic VALUES (1)")?;
        primary.switch_wal()?;
        site.run(&["cron"])?;
        Ok(statuses(&site)?.get(1).is_some_and(|b| b.1 == BackupStatus::Done))
    })?;
    Ok(())
});
