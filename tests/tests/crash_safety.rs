//! kill -9 of `receive-wal` and `archive-wal` while WAL is being written loses nothing and
//! duplicates nothing: after restarts, the archive holds every segment from the first one
//! received to the last one closed, each byte-identical to the server's, each once in xlog.db,
//! and nothing went to `errors/`. And a receiver attached to a standby follows its promotion onto
//! the new timeline, history file included.

use std::collections::BTreeSet;

use anyhow::{ensure, Context as _};
use barman_tests::{pg_test, wait_for, BarmanSite, Cluster, ClusterOptions};

fn xlogdb_names(site: &BarmanSite) -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(site.server_dir().join("wals/pg-xlog.db")).unwrap_or_default();
    Ok(text.lines().filter_map(|l| l.split('\t').next()).map(str::to_owned).collect())
}

pg_test!(killed_receiver_and_archiver_lose_and_duplicate_nothing, |major| {
    // 1 MB segments: many segment boundaries in little WAL.
    let pg = Cluster::start(ClusterOptions::new(major).wal_segsize_mb(1))?;
    pg.set_conf("wal_keep_size", "256MB")?;
    let site = BarmanSite::new(&pg, &["compression = zstd"])?;
    ensure!(site.run(&["receive-wal", "--create-slot", "pg"])?.code == 0);
    let mut receiver = site.spawn(&["receive-wal", "pg"])?;
    let first = pg.sql("SELECT pg_walfile_name(pg_current_wal_lsn())")?;

    for round in 0..4 {
        pg.generate_load(3000)?;
        // An archiver killed at some point of its pass.
        let mut archiver = site.spawn(&["archive-wal", "pg"])?;
        std::thread::sleep(std::time::Duration::from_millis(30 + 40 * round));
        archiver.kill()?;
        pg.generate_load(3000)?;
        // The receiver killed in the middle of a segment, then started again.
        receiver.kill()?;
        pg.generate_load(2000)?;
        receiver = site.spawn(&["receive-wal", "pg"])?;
    }
    let last = pg.sql("SELECT pg_walfile_name(pg_switch_wal())")?;
    pg.generate_load(100)?;
    let waited = wait_for("the receiver to close the last segment", || {
        site.run(&["archive-wal", "pg"])?;
        pg.generate_load(10)?;
        Ok(xlogdb_names(&site)?.contains(&last))
    });
    if let Err(e) = waited {
        let streaming: Vec<String> = std::fs::read_dir(site.server_dir().join("streaming"))?
            .map(|e| Ok(e?.file_name().to_string_lossy().into_owned()))
            .collect::<anyhow::Result<_>>()?;
        let names = xlogdb_names(&site)?;
        let r = site.run(&["archive-wal", "pg"])?;
        let log = std::fs::read_to_string(site.home.path().join("barman.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(30).collect();
        anyhow::bail!(
            "{e}\nlast={last}\nstreaming/: {streaming:?}\nxlog.db tail: {:?}\narchive-wal: {r}\nstat: {}\nlog tail: {tail:#?}",
            &names[names.len().saturating_sub(5)..],
            pg.sql("SELECT application_name, state, sent_lsn, flush_lsn FROM pg_stat_replication")?
        );
    }

    let names = xlogdb_names(&site)?;
    let unique: BTreeSet<&String> = names.iter().collect();
    ensure!(unique.len() == names.len(), "each segment once in xlog.db: {names:?}");
    let segments: Vec<&String> = names.iter().filter(|n| n.len() == 24).collect();
    ensure!(segments.first().is_some_and(|s| **s <= first), "the archive starts at the slot, by {first}: {segments:?}");
    // Contiguous: 1 MB segments, all on timeline 1, so the names count up by one.
    let numbers: Vec<u64> = segments.iter().map(|s| u64::from_str_radix(&s[8..], 16).map(|n| (n >> 32) * 4096 + (n & 0xffff_ffff))).collect::<Result<_, _>>()?;
    ensure!(numbers.windows(2).all(|w| w[1] == w[0] + 1), "no gap: {segments:?}");
    ensure!(segments.iter().any(|s| **s == last), "reached {last}");
    let errors = std::fs::read_dir(site.server_dir().join("errors")).map(|d| d.count()).unwrap_or(0);
    ensure!(errors == 0, "nothing went to errors/");

    let fetched = site.home.path().join("fetched");
    std::fs::create_dir(&fetched)?;
    for seg in &segments {
        let r = site.run(&["get-wal", "-o", fetched.to_str().context("utf-8")?, "pg", seg])?;
        ensure!(r.code == 0, "{r}");
        let ours = std::fs::read(fetched.join(seg))?;
        let theirs = pg.read_data_file(&format!("pg_wal/{seg}"))?;
        ensure!(ours == theirs, "{seg} differs from the server's");
    }
    Ok(())
});

pg_test!(receiver_follows_a_promotion_onto_the_new_timeline, |major| {
    let primary = Cluster::start(ClusterOptions::new(major).wal_segsize_mb(1))?;
    primary.generate_load(100)?;
    let standby = primary.create_standby()?;
    standby.set_conf("wal_keep_size", "256MB")?;
    // barman follows the standby, as for a backup-from-standby setup.
    let site = BarmanSite::new(&standby, &["compression = gzip"])?;
    ensure!(site.run(&["receive-wal", "--create-slot", "pg"])?.code == 0);
    let _receiver = site.spawn(&["receive-wal", "pg"])?;
    primary.generate_load(3000)?;
    primary.switch_wal()?;
    primary.generate_load(1000)?;

    let tli = standby.promote()?;
    ensure!(tli == 2);
    primary.stop()?;
    standby.generate_load(3000)?;
    let last = standby.sql("SELECT pg_walfile_name(pg_switch_wal())")?;
    ensure!(last.starts_with("00000002"), "{last}");
    wait_for("the new timeline's segments to be archived", || {
        site.run(&["archive-wal", "pg"])?;
        standby.generate_load(10)?;
        Ok(xlogdb_names(&site)?.contains(&last))
    })?;
    let names = xlogdb_names(&site)?;
    ensure!(names.iter().any(|n| n == "00000002.history"), "the history file is archived: {names:?}");
    ensure!(names.iter().any(|n| n.starts_with("00000001") && n.len() == 24), "{names:?}");
    let errors = std::fs::read_dir(site.server_dir().join("errors")).map(|d| d.count()).unwrap_or(0);
    ensure!(errors == 0, "nothing went to errors/");
    // Timeline 2's segments equal the promoted server's.
    let fetched = site.home.path().join("fetched");
    std::fs::create_dir(&fetched)?;
    for seg in names.iter().filter(|n| n.starts_with("00000002") && n.len() == 24) {
        let r = site.run(&["get-wal", "-o", fetched.to_str().context("utf-8")?, "pg", seg])?;
        ensure!(r.code == 0, "{r}");
        ensure!(std::fs::read(fetched.join(seg))? == standby.read_data_file(&format!("pg_wal/{seg}"))?, "{seg} differs");
    }
    Ok(())
});
