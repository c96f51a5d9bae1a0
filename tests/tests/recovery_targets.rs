//! Point-in-time recovery through the command line to each kind of target — immediate, an xid,
//! an LSN, a timestamp — each checked against the rows committed just before and just after
//! it; and the RPO=0 promise: with barman-rs's receiver as the synchronous standby, every
//! committed row survives the loss of the primary, including the ones only in the receiver's
//! `.partial` segment.

use anyhow::{ensure, Context as _};
use barman_tests::{pg_test, wait_for, BarmanSite, Cluster, ClusterOptions};

/// Restores `latest` with `target` into a new cluster, starts it, waits for it to leave
/// recovery (`--target-action promote`), and returns the ids in `t`.
fn restore_ids(site: &BarmanSite, major: u32, target: &[&str]) -> anyhow::Result<Vec<String>> {
    let restored = Cluster::reserve(ClusterOptions::new(major))?;
    let dest = restored.data_dir();
    let mut args = vec!["recover", "pg", "latest", dest.to_str().context("utf-8")?];
    args.extend_from_slice(target);
    if !target.is_empty() {
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
