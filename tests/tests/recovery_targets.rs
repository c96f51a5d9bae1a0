//! Point-in-time recovery through the command line to each kind of target — immediate, an xid,
//! an LSN, a timestamp — each checked against the rows committed just before and just after
//! it; and the RPO=0 promise: with barman-rs's receiver as the synchronous standby, every
//! committed row survives the loss of the primary, including the ones only in the receiver's
//! `.partial` segment; timeline targets after a failover; a standby-mode restore that then
//! streams from its primary.

use anyhow::{ensure, Context as _};
use barman_tests::{pg_test, wait_for, BarmanSite, Cluster, ClusterOptions};

/// Restores `latest` with `target` into a new cluster, starts it, waits for it to leave
/// recovery (`--target-action promote`), and returns the ids in `t`.
fn restore_ids(site: &BarmanSite, major: u32, target: &[&str]) -> anyhow::Result<Vec<String>> {
    let restored = Cluster::reserve(ClusterOptions::new(major))?;
    let dest = restored.data_dir();
    let mut args = vec!["recover", "pg", "latest", dest.to_str().context("utf-8")?];
    args.extend_from_slice(target);
    // A target action needs a point-in-time target (a timeline alone is not one).
    if target.iter().any(|a| a.starts_with("--target-") && *a != "--target-tli") {
        args.extend_from_slice(&["--target-action", "promote"]);
    }
    let r = site.run(&args)?;
    ensure!(r.code == 0, "{r}");
    restored.start_existing()?;
    wait_for("the restored cluster to finish recovery", || Ok(restored.sql("SELECT pg_is_in_recovery()")? == "f"))?;
    Ok(restored.sql("SELECT string_agg(id::text, ',' ORDER BY id) FROM t")?.split(',').map(str::to_owned).collect())
}

fn start_site(pg: &Cluster) -> anyhow::Result<(BarmanSite, barman_tests::BackgroundBarman)> {
    let site = BarmanSite::new(pg, &["compression = zstd"])?;
    let r = site.run(&["receive-wal", "--create-slot", "pg"])?;
    ensure!(r.code == 0, "{r}");
    let receiver = site.spawn(&["receive-wal", "pg"])?;
    let r = site.run(&["switch-wal", "--force", "--archive", "--archive-timeout", "60", "pg"])?;
    ensure!(r.code == 0, "{r}");
    Ok((site, receiver))
}

pg_test!(each_kind_of_target_stops_exactly_there, |major| {
    let pg = Cluster::start(ClusterOptions::new(major))?;
    let (site, _receiver) = start_site(&pg)?;
    pg.sql("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1)")?;
    let r = site.run(&["backup", "--wait", "--wait-timeout", "60", "pg"])?;
    ensure!(r.code == 0, "{r}");

    // Row 2, then an xid target on the transaction that adds row 3, row 4, an LSN, row 5, a
    // time, row 6. Sleeps keep the timestamps of the commits apart.
    pg.sql("INSERT INTO t VALUES (2)")?;
    let xid = pg.sql("BEGIN; INSERT INTO t VALUES (3); SELECT txid_current(); COMMIT;")?;
    pg.sql("INSERT INTO t VALUES (4)")?;
    let lsn = pg.sql("SELECT pg_current_wal_lsn()")?;
    pg.sql("INSERT INTO t VALUES (5)")?;
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let time = pg.sql("SELECT now()::timestamptz(0)::text")?;
    std::thread::sleep(std::time::Duration::from_millis(1100));
    pg.sql("INSERT INTO t VALUES (6)")?;
    let r = site.run(&["switch-wal", "--force", "--archive", "--archive-timeout", "60", "pg"])?;
    ensure!(r.code == 0, "{r}");

    ensure!(restore_ids(&site, major, &["--target-immediate"])? == ["1"], "immediate: the backup's own rows");
    ensure!(restore_ids(&site, major, &["--target-xid", &xid])? == ["1", "2", "3"], "xid {xid}, inclusive");
    ensure!(
        restore_ids(&site, major, &["--target-xid", &xid, "--exclusive"])? == ["1", "2"],
        "xid {xid}, exclusive"
    );
    ensure!(restore_ids(&site, major, &["--target-lsn", &lsn])? == ["1", "2", "3", "4"], "lsn {lsn}");
    ensure!(restore_ids(&site, major, &["--target-time", &time])? == ["1", "2", "3", "4", "5"], "time {time}");
    Ok(())
});

pg_test!(synchronous_receiver_loses_no_committed_row, |major| {
    let pg = Cluster::start(ClusterOptions::new(major))?;
    // The receiver decides at start whether it is a synchronous standby (as Barman's
    // receive-wal does): from then on a commit returns only once barman-rs has fsynced it.
    pg.set_conf("synchronous_standby_names", "barman_receive_wal")?;
    let (site, _receiver) = start_site(&pg)?;
    ensure!(
        pg.sql("SELECT sync_state FROM pg_stat_replication WHERE application_name = 'barman_receive_wal'")? == "sync",
        "the receiver is the synchronous standby"
    );
    pg.sql("CREATE TABLE t (id int PRIMARY KEY)")?;
    let r = site.run(&["backup", "--wait", "--wait-timeout", "60", "pg"])?;
    ensure!(r.code == 0, "{r}");
    for id in 1..=50 {
        pg.sql(&format!("INSERT INTO t VALUES ({id})"))?;
    }
    // The primary is lost: nothing of it is used again.
    pg.stop()?;
    std::fs::remove_dir_all(pg.data_dir())?;

    let ids = restore_ids(&site, major, &[])?;
    ensure!(ids.len() == 50 && ids.last().map(String::as_str) == Some("50"), "every committed row is back: {ids:?}");
    Ok(())
});

pg_test!(timeline_targets_after_a_failover, |major| {
    let primary = Cluster::start(ClusterOptions::new(major))?;
    let (site, mut receiver) = start_site(&primary)?;
    primary.sql("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t SELECT generate_series(1, 100)")?;
    let r = site.run(&["backup", "--wait", "--wait-timeout", "60", "pg"])?;
    ensure!(r.code == 0, "{r}");

    // A standby of the primary takes over: barman is pointed at it, its receiver continues
    // from where the primary's stopped, follows the promotion, and archives timeline 2.
    let standby = primary.create_standby()?;
    primary.sql("INSERT INTO t SELECT generate_series(101, 200)")?;
    let lsn = primary.sql("SELECT pg_current_wal_lsn()")?;
    wait_for("the standby to replay rows 101-200", || {
        Ok(standby.sql(&format!("SELECT pg_last_wal_replay_lsn() >= '{lsn}'"))? == "t")
    })?;
    receiver.terminate()?;
    let conf = std::fs::read_to_string(&site.config)?;
    std::fs::write(&site.config, conf.replace(&format!("port={}", primary.port()), &format!("port={}", standby.port())))?;
    let r = site.run(&["receive-wal", "--create-slot", "pg"])?;
    ensure!(r.code == 0, "{r}");
    let _receiver = site.spawn(&["receive-wal", "pg"])?;
    ensure!(standby.promote()? == 2);
    primary.stop()?;
    standby.sql("INSERT INTO t SELECT generate_series(201, 300)")?;
    let last = standby.sql("SELECT pg_walfile_name(pg_switch_wal())")?;
    let archived = wait_for("timeline 2 to be archived", || {
        site.run(&["archive-wal", "pg"])?;
        standby.sql("SELECT txid_current()")?;
        let xlogdb = std::fs::read_to_string(site.server_dir().join("wals/pg-xlog.db")).unwrap_or_default();
        Ok(xlogdb.contains(&last))
    });
    if let Err(e) = archived {
        let streaming: Vec<String> = std::fs::read_dir(site.server_dir().join("streaming"))?
            .map(|e| Ok(e?.file_name().to_string_lossy().into_owned()))
            .collect::<anyhow::Result<_>>()?;
        let xlogdb = std::fs::read_to_string(site.server_dir().join("wals/pg-xlog.db")).unwrap_or_default();
        let log = std::fs::read_to_string(site.home.path().join("barman.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().filter(|l| !l.contains("archiving WAL")).rev().take(25).collect();
        anyhow::bail!(
            "{e}: last={last} streaming={streaming:?} xlogdb={xlogdb} repl={} log={tail:#?}",
            standby.sql("SELECT application_name, state, sent_lsn, flush_lsn FROM pg_stat_replication")?
        );
    }

    let latest = restore_ids(&site, major, &["--target-tli", "latest"])?;
    ensure!(latest.len() == 300, "timeline 2's rows: {}", latest.len());
    let current = restore_ids(&site, major, &["--target-tli", "current"])?;
    ensure!(current.len() == 200, "the backup's timeline ends before the promotion: {}", current.len());
    Ok(())
});

pg_test!(standby_mode_restore_streams_from_the_primary, |major| {
    let primary = Cluster::start(ClusterOptions::new(major))?;
    let (site, _receiver) = start_site(&primary)?;
    primary.sql("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t SELECT generate_series(1, 100)")?;
    let r = site.run(&["backup", "--wait", "--wait-timeout", "60", "pg"])?;
    ensure!(r.code == 0, "{r}");
    primary.sql("INSERT INTO t SELECT generate_series(101, 200)")?;
    let r = site.run(&["switch-wal", "--force", "--archive", "--archive-timeout", "60", "pg"])?;
    ensure!(r.code == 0, "{r}");

    let standby = Cluster::reserve(ClusterOptions::new(major))?;
    let dest = standby.data_dir();
    let r = site.run(&["recover", "pg", "latest", dest.to_str().context("utf-8")?, "--standby-mode"])?;
    ensure!(r.code == 0, "{r}");
    ensure!(dest.join("standby.signal").exists() && !dest.join("recovery.signal").exists());
    // The DBA points the standby at its primary, as after any standby-mode restore.
    let conninfo = format!("{} password={}", primary.conninfo(barman_tests::STREAMING_USER), barman_tests::PASSWORD);
    let auto = dest.join("postgresql.auto.conf");
    let mut text = std::fs::read_to_string(&auto)?;
    text.push_str(&format!("primary_conninfo = '{conninfo}'\n"));
    std::fs::write(&auto, text)?;
    standby.start_existing()?;
    ensure!(standby.in_recovery()?, "a standby stays in recovery");
    wait_for("the restored WAL to be replayed", || Ok(standby.sql("SELECT count(*) FROM t")? == "200"))?;
    primary.sql("INSERT INTO t SELECT generate_series(201, 300)")?;
    wait_for("rows streamed from the primary", || Ok(standby.sql("SELECT count(*) FROM t")? == "300"))?;
    ensure!(standby.sql("SELECT status FROM pg_stat_wal_receiver")? == "streaming");
    Ok(())
});
