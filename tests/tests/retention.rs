//! Retention through the `barman` command line on a real cluster: three backups taken with
//! `backup --wait` while `receive-wal` streams, then `delete oldest` (files and the WAL before
//! the new oldest backup gone, xlog.db still matching `wals/`), `keep --target standalone`
//! refusing a delete, `cron` applying `REDUNDANCY 1`, and the one backup left restored,
//! started and queried.

use std::path::Path;

use anyhow::{ensure, Context as _};
use barman_tests::{pg_test, wait_for, BarmanSite, Cluster, ClusterOptions};

/// The backup IDs in `meta/`, oldest first.
fn backup_ids(server_dir: &Path) -> anyhow::Result<Vec<String>> {
    let mut ids: Vec<String> = std::fs::read_dir(server_dir.join("meta"))?
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.strip_suffix("-backup.info")).map(str::to_owned))
        .collect();
    ids.sort();
    Ok(ids)
}

/// A backup.info value.
fn info_field(server_dir: &Path, id: &str, key: &str) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(server_dir.join("meta").join(format!("{id}-backup.info")))?;
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .map(str::to_owned)
        .with_context(|| format!("{id}: no {key}"))
}

/// Checks that xlog.db lists exactly the WAL files in `wals/` and that none is older than
/// `oldest_begin` (history files aside); returns how many segments it lists.
fn check_archive(server_dir: &Path, oldest_begin: &str) -> anyhow::Result<usize> {
    let wals = server_dir.join("wals");
    let xlogdb = std::fs::read_to_string(wals.join("pg-xlog.db"))?;
    let listed: Vec<&str> = xlogdb.lines().filter_map(|l| l.split('\t').next()).collect();
    let mut on_disk = Vec::new();
    for entry in std::fs::read_dir(&wals)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if entry.file_type()?.is_dir() {
            for f in std::fs::read_dir(entry.path())? {
                on_disk.push(f?.file_name().to_string_lossy().into_owned());
            }
        } else if name.ends_with(".history") {
            on_disk.push(name);
        }
    }
    let mut sorted_listed: Vec<String> = listed.iter().map(|s| (*s).to_owned()).collect();
    sorted_listed.sort();
    on_disk.sort();
    ensure!(sorted_listed == on_disk, "xlog.db lists {sorted_listed:?}, wals/ holds {on_disk:?}");
    for name in &listed {
        ensure!(name.ends_with(".history") || *name >= oldest_begin, "{name} precedes the oldest backup's {oldest_begin}");
    }
    Ok(listed.iter().filter(|n| n.len() == 24).count())
}

pg_test!(delete_keep_and_cron_retention_leave_a_recoverable_catalog, |major| {
    let pg = Cluster::start(ClusterOptions::new(major))?;
    let site = BarmanSite::new(&pg, &[])?;
    let dir = site.server_dir();

    let r = site.run(&["receive-wal", "--create-slot", "pg"])?;
    ensure!(r.code == 0, "{r}");
    let _receiver = site.spawn(&["receive-wal", "pg"])?;
    // The first backup's checks want WAL in the archive.
    let r = site.run(&["switch-wal", "--force", "--archive", "--archive-timeout", "60", "pg"])?;
    ensure!(r.code == 0, "{r}");

    pg.sql("CREATE TABLE t (id int PRIMARY KEY)")?;
    for round in 0..3 {
        pg.sql(&format!("INSERT INTO t SELECT g FROM generate_series({0} * 1000 + 1, {0} * 1000 + 1000) g", round))?;
        let r = site.run(&["backup", "--wait", "--wait-timeout", "60", "pg"])?;
        ensure!(r.code == 0 && r.stdout.contains("Backup completed"), "{r}");
        ensure!(r.stdout.contains("This is the first backup for server pg") == (round == 0), "{r}");
    }
    let ids = backup_ids(&dir)?;
    ensure!(ids.len() == 3, "three backups: {ids:?}");
    for id in &ids {
        ensure!(info_field(&dir, id, "status")? == "DONE", "{id} is DONE");
    }
    // The first backup purged the WAL archived before it.
    check_archive(&dir, &info_field(&dir, &ids[0], "begin_wal")?)?;

    // delete oldest: its files go, then the WAL before the new oldest backup.
    let r = site.run(&["delete", "pg", "oldest"])?;
    ensure!(r.code == 0, "{r}");
    ensure!(r.stdout.starts_with(&format!("Deleting backup {} for server pg\nDelete associated WAL segments:\n", ids[0])), "{r}");
    ensure!(r.stdout.contains(&format!("Deleted backup {} (start time: ", ids[0])), "{r}");
    ensure!(!dir.join("base").join(&ids[0]).exists() && !dir.join("meta").join(format!("{}-backup.info", ids[0])).exists());
    ensure!(backup_ids(&dir)? == ids[1..], "two left");
    let begin_second = info_field(&dir, &ids[1], "begin_wal")?;
    check_archive(&dir, &begin_second)?;
    let r = site.run(&["delete", "pg", &ids[0]])?;
    ensure!(r.code == 1 && r.stderr.contains(&format!("Unknown backup '{}' for server 'pg'", ids[0])), "{r}");

    // keep --target standalone protects a backup from delete.
    let r = site.run(&["keep", "pg", &ids[1], "--target", "standalone"])?;
    ensure!(r.code == 0 && r.stdout.is_empty(), "{r}");
    ensure!(std::fs::read(dir.join("meta").join(format!("{}-keep", ids[1])))? == b"standalone");
    let r = site.run(&["keep", "--status", "pg", &ids[1]])?;
    ensure!(r.code == 0 && r.stdout == "Server pg:\n\tKeep: standalone\n", "{r}");
    let r = site.run(&["delete", "pg", "oldest"])?;
    ensure!(r.code == 1, "{r}");
    ensure!(
        r.stderr.contains(&format!("WARNING: Skipping delete of backup {} for server pg as it has a current keep request.", ids[1])),
        "{r}"
    );
    ensure!(r.stderr.contains("ERROR: Cannot delete backup (pg LocalBackupInfo(backup_label="), "{r}");
    ensure!(dir.join("base").join(&ids[1]).join("data").exists(), "the kept backup's data is still there");
    let r = site.run(&["-f", "json", "keep", "--status", "pg", &ids[1]])?;
    ensure!(r.json()?["pg"]["keep_status"]["message"] == "standalone", "{r}");
    let r = site.run(&["keep", "--release", "pg", &ids[1]])?;
    ensure!(r.code == 0, "{r}");
    let r = site.run(&["keep", "--status", "pg", &ids[1]])?;
    ensure!(r.stdout.ends_with("\tKeep: nokeep\n"), "{r}");

    // cron applies REDUNDANCY 1 (retention_policy_mode defaults to auto).
    let mut conf = std::fs::read_to_string(&site.config)?;
    conf.push_str("retention_policy = REDUNDANCY 1\n");
    std::fs::write(&site.config, conf)?;
    let r = site.run(&["list-backups", "pg"])?;
    ensure!(r.stdout.lines().any(|l| l.contains(&ids[1]) && l.ends_with("OBSOLETE")), "{r}");
    let r = site.run(&["cron"])?;
    ensure!(r.code == 0, "{r}");
    ensure!(r.stdout.contains(&format!("Enforcing retention policy: removing backup {} for server pg", ids[1])), "{r}");
    ensure!(backup_ids(&dir)? == ids[2..], "one backup left");
    check_archive(&dir, &info_field(&dir, &ids[2], "begin_wal")?)?;

    // The backup left, with the WAL retention kept, still restores and starts.
    let restored = Cluster::reserve(ClusterOptions::new(major))?;
    let dest = restored.data_dir();
    let r = site.run(&["recover", "pg", "latest", dest.to_str().context("utf-8")?])?;
    ensure!(r.code == 0, "{r}");
    restored.start_existing()?;
    wait_for("the restored cluster to accept queries", || Ok(restored.sql("SELECT 1").is_ok()))?;
    let rows: u32 = restored.sql("SELECT count(*) FROM t")?.parse()?;
    ensure!(rows == 3000, "the restored cluster has {rows} rows, the remaining backup holds 3000");
    Ok(())
});
