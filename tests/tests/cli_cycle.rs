//! The whole cycle a DBA runs, through the `barman` command line only: WAL streamed into the
//! catalog by `receive-wal` (gzip-compressed on archiving), `backup --wait`, changes, a
//! mistake, then `recover` to a restore point before the mistake — and the restored cluster is
//! started and queried.

use anyhow::{ensure, Context as _};
use barman_tests::{wait_for, pg_test, BarmanSite, Cluster, ClusterOptions};


pg_test!(backup_then_point_in_time_recovery_from_the_command_line, |major| {
    let pg = Cluster::start(ClusterOptions::new(major))?;
    let site = BarmanSite::new(&pg, &["compression = gzip"])?;

    let r = site.run(&["receive-wal", "--create-slot", "pg"])?;
    ensure!(r.code == 0, "{r}");
    let _receiver = site.spawn(&["receive-wal", "pg"])?;
    let r = site.run(&["switch-wal", "--force", "--archive", "--archive-timeout", "60", "pg"])?;
    ensure!(r.code == 0, "{r}");

    pg.sql("CREATE TABLE accounts (id int PRIMARY KEY, balance int)")?;
    pg.sql("INSERT INTO accounts SELECT g, 100 FROM generate_series(1, 1000) g")?;
    let r = site.run(&["backup", "--wait", "--wait-timeout", "60", "pg"])?;
    ensure!(r.code == 0 && r.stdout.contains("Backup completed"), "{r}");
    ensure!(!r.stderr.contains("WAITING_FOR_WALS"), "backup --wait must end DONE: {r}");
    let r = site.run(&["verify-backup", "pg", "latest"])?;
    ensure!(r.code == 0 && r.stdout.ends_with("backup successfully verified\n"), "{r}");
    // A damaged file is found and named.
    let backup_dir = std::fs::read_dir(site.server_dir().join("base"))?.next().context("a backup")??.path();
    let pg_version = backup_dir.join("data/PG_VERSION");
    let original = std::fs::read(&pg_version)?;
    std::fs::write(&pg_version, b"99\n")?;
    let r = site.run(&["verify-backup", "pg", "latest"])?;
    ensure!(r.code == 1 && r.stderr.contains("checksum mismatch for file \"PG_VERSION\""), "{r}");
    std::fs::write(&pg_version, original)?;
    // generate-manifest refuses to replace the server's manifest; without one it writes a
    // manifest that verifies.
    let r = site.run(&["generate-manifest", "pg", "latest"])?;
    ensure!(r.code == 1 && r.stderr.contains("already exists"), "{r}");
    let manifest = backup_dir.join("data/backup_manifest");
    let server_manifest = std::fs::read(&manifest)?;
    std::fs::remove_file(&manifest)?;
    let r = site.run(&["generate-manifest", "pg", "latest"])?;
    ensure!(r.code == 0 && r.stdout.contains("Backup manifest for backup 'latest' successfully generated for server pg"), "{r}");
    let r = site.run(&["verify-backup", "pg", "latest"])?;
    ensure!(r.code == 0, "{r}");
    std::fs::write(&manifest, server_manifest)?;

    // get-wal serves what the archive holds, decompressed, for a restore_command.
    let xlogdb = std::fs::read_to_string(site.server_dir().join("wals/pg-xlog.db"))?;
    let first = xlogdb.lines().next().and_then(|l| l.split('\t').next()).context("xlog.db is empty")?.to_owned();
    ensure!(xlogdb.lines().next().is_some_and(|l| l.contains("\tgzip")), "gzip-compressed: {xlogdb}");
    let fetched = site.home.path().join("fetched");
    std::fs::create_dir(&fetched)?;
    let r = site.run(&["get-wal", "-o", fetched.to_str().context("utf-8")?, "pg", &first])?;
    ensure!(r.code == 0 && r.stdout.contains(&format!("Sending WAL '{first}' for server 'pg'")), "{r}");
    let bytes = std::fs::read(fetched.join(&first))?;
    ensure!(bytes.len() == 16 * 1024 * 1024, "a whole decompressed segment, got {} bytes", bytes.len());
    let r = site.run(&["get-wal", "--peek", "2", "pg", &first])?;
    ensure!(r.code == 0 && r.stdout.lines().count() == 2 && r.stdout.starts_with(&first), "{r}");
    let r = site.run(&["get-wal", "pg", "0000000100000000000000FF"])?;
    ensure!(r.code == 1 && r.stderr.contains("WAL file '0000000100000000000000FF' not found in server 'pg'"), "{r}");
    let r = site.run(&["get-wal", "pg", "not-a-wal"])?;
    ensure!(r.code == 3, "{r}");

    pg.sql("INSERT INTO accounts SELECT g, 200 FROM generate_series(1001, 2000) g")?;
    pg.sql("SELECT pg_create_restore_point('before_the_mistake')")?;
    pg.sql("DELETE FROM accounts WHERE id > 10")?;
    let r = site.run(&["switch-wal", "--force", "--archive", "--archive-timeout", "60", "pg"])?;
    ensure!(r.code == 0, "{r}");

    // Unknown backups and impossible requests are refused before anything is written.
    let nowhere = site.home.path().join("nowhere");
    let r = site.run(&["recover", "pg", "20000101T000000", nowhere.to_str().context("utf-8")?])?;
    ensure!(r.code == 1 && r.stderr.contains("Unknown backup '20000101T000000' for server 'pg'"), "{r}");
    let r = site.run(&["recover", "pg", "latest", nowhere.to_str().context("utf-8")?, "--target-action", "promote"])?;
    ensure!(r.code == 1 && r.stderr.contains("PITR is not required"), "{r}");
    ensure!(!nowhere.exists());
    let busy = site.home.path().join("busy");
    std::fs::create_dir(&busy)?;
    std::fs::write(busy.join("PG_VERSION"), "16\n")?;
    let r = site.run(&["recover", "pg", "latest", busy.to_str().context("utf-8")?])?;
    ensure!(r.code == 1 && r.stderr.contains("is not empty"), "a non-empty destination is refused: {r}");
    let r = site.run(&["recover", "pg", "latest", nowhere.to_str().context("utf-8")?, "--target-time", "2001-01-01 00:00:00+00"])?;
    ensure!(r.code == 1 && r.stderr.contains("is before the backup end time"), "{r}");
    ensure!(!nowhere.exists());

    let restored = Cluster::reserve(ClusterOptions::new(major))?;
    let dest = restored.data_dir();
    let r = site.run(&[
        "recover",
        "pg",
        "latest",
        dest.to_str().context("utf-8")?,
        "--target-name",
        "before_the_mistake",
        "--target-action",
        "promote",
    ])?;
    ensure!(r.code == 0, "{r}");
    ensure!(r.stdout.contains("Doing PITR. Recovery target name: 'before_the_mistake'"), "{r}");
    ensure!(r.stdout.contains("Your PostgreSQL server has been successfully prepared for recovery!"), "{r}");
    restored.start_existing()?;
    wait_for("the restored cluster to finish recovery", || Ok(restored.sql("SELECT pg_is_in_recovery()")? == "f"))?;
    let rows = restored.sql("SELECT count(*) FROM accounts")?;
    ensure!(rows == "2000", "the restore point held 2000 rows, the restored cluster has {rows}");
    Ok(())
});
