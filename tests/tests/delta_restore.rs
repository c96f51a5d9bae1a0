//! `recover --delta-restore` and `recovery_options = delta-restore`: a backup restored over a
//! data directory that a server has used since — rows changed, a table added in the
//! tablespace, stray files next to the data — locally and through `--remote-ssh-command` (the
//! harness's real sshd). Each time the server is started on the result and must hold exactly
//! the backup's rows (recovery stops at consistency, `--target-immediate`), the stray table
//! and files gone; files nobody touched are left as they were. Then Barman's refusals: a
//! destination or tablespace location that is not empty without delta mode, a running
//! server, a compressed backup locally, `staging_location = remote`.

use std::os::unix::fs::MetadataExt as _;
use std::path::Path;

use anyhow::{ensure, Context as _};
use barman_tests::{pg_test, wait_for, BarmanRun, BarmanSite, Cluster, ClusterOptions, Sshd};

/// The backup's rows: `count/sum of t.v`, rows of `u`, whether the stray table is absent.
const FIRST: &str = "100/5050 100 true";
const SECOND: &str = "200/20100 200 true";

/// `recover pg <id> <restored's data>`, the tablespace `tbs` relocated to `<root>/tbs`,
/// recovery to consistency only, with `extra` options.
fn recover(site: &BarmanSite, id: &str, restored: &Cluster, extra: &[&str]) -> anyhow::Result<BarmanRun> {
    let dest = restored.data_dir();
    let ts_rule = format!("tbs:{}", restored.root_dir().join("tbs").display());
    let mut args = vec![
        "recover", "pg", id, dest.to_str().context("utf-8")?, "--tablespace", &ts_rule, "--target-immediate", "--target-action", "promote",
    ];
    args.extend_from_slice(extra);
    site.run(&args)
}

/// Starts the restored cluster (its tablespace handed to the server user first), waits for
/// the end of recovery and reads what [`FIRST`] and [`SECOND`] describe.
fn start_and_read(restored: &Cluster) -> anyhow::Result<String> {
    if let Some(user) = restored.server_user() {
        let tbs = restored.root_dir().join("tbs");
        let ok = std::process::Command::new("chown").arg("-R").arg(format!("{}:{}", user.uid, user.gid)).arg(&tbs).status()?.success();
        ensure!(ok, "chown {}", tbs.display());
    }
    restored.start_existing()?;
    wait_for("the restored cluster to finish recovery", || Ok(restored.sql("SELECT pg_is_in_recovery()")? == "f"))?;
    restored.sql(
        "SELECT (SELECT count(*) || '/' || sum(v) FROM t) || ' ' || (SELECT count(*) FROM u) || ' ' || (to_regclass('stray') IS NULL)",
    )
}

/// What a DBA does to a restored cluster before restoring over it: rows changed and deleted,
/// a table in the tablespace, a file next to the data and one in the tablespace; then stops it.
fn use_and_stop(restored: &Cluster) -> anyhow::Result<()> {
    restored.sql("UPDATE t SET v = v + 1000")?;
    restored.sql("DELETE FROM u WHERE id % 2 = 0")?;
    restored.sql("CREATE TABLE stray TABLESPACE tbs AS SELECT generate_series(1, 1000) AS id")?;
    restored.checkpoint()?;
    ensure!(restored.sql("SELECT to_regclass('stray') IS NULL")? == "f");
    restored.stop()?;
    std::fs::write(restored.data_dir().join("stray.txt"), "not in the backup")?;
    std::fs::write(restored.root_dir().join("tbs/stray.txt"), "not in the backup")?;
    Ok(())
}

fn strays_gone(restored: &Cluster) -> bool {
    !restored.data_dir().join("stray.txt").exists() && !restored.root_dir().join("tbs/stray.txt").exists()
}

fn ctime(path: &Path) -> anyhow::Result<(i64, i64)> {
    let m = std::fs::metadata(path)?;
    Ok((m.ctime(), m.ctime_nsec()))
}

fn append_config(site: &BarmanSite, line: &str) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&site.config)?;
    std::fs::write(&site.config, format!("{text}{line}\n"))?;
    Ok(())
}

pg_test!(delta_restore_over_a_used_data_directory, |major| {
    let pg = Cluster::start(ClusterOptions::new(major))?;
    let site = BarmanSite::new(&pg, &["immediate_checkpoint = true"])?;
    let r = site.run(&["receive-wal", "--create-slot", "pg"])?;
    ensure!(r.code == 0, "{r}");
    let _receiver = site.spawn(&["receive-wal", "pg"])?;
    let switch_wal = || -> anyhow::Result<()> {
        let r = site.run(&["switch-wal", "--force", "--archive", "--archive-timeout", "60", "pg"])?;
        ensure!(r.code == 0, "{r}");
        Ok(())
    };
    switch_wal()?;
    let backup = || -> anyhow::Result<()> {
        let r = site.run(&["backup", "--wait", "--wait-timeout", "60", "pg"])?;
        ensure!(r.code == 0 && r.stdout.contains("Backup completed"), "{r}");
        Ok(())
    };
    pg.create_tablespace("tbs")?;
    pg.sql("CREATE TABLE t (id int PRIMARY KEY, v int) TABLESPACE tbs; INSERT INTO t SELECT g, g FROM generate_series(1, 100) g")?;
    pg.sql("CREATE TABLE u (id int); INSERT INTO u SELECT generate_series(1, 100)")?;
    backup()?;
    pg.sql("INSERT INTO t SELECT g, g FROM generate_series(101, 200) g; INSERT INTO u SELECT generate_series(101, 200)")?;
    backup()?;
    pg.sql("UPDATE t SET v = 0 WHERE id <= 10")?;
    switch_wal()?;
    let ids = site.backup_ids()?;
    ensure!(ids.len() == 2, "{ids:?}");
    let (first, second) = (&ids[0], &ids[1]);

    // A plain restore, then a server that changes it.
    let restored = Cluster::reserve(ClusterOptions::new(major))?;
    let dest = restored.data_dir();
    let r = recover(&site, second, &restored, &[])?;
    ensure!(r.code == 0 && !r.stdout.contains("safe horizon"), "{r}");
    let got = start_and_read(&restored)?;
    ensure!(got == SECOND, "the second backup's rows: {got}");
    use_and_stop(&restored)?;

    // Without delta mode, in Barman's words — also when `--no-delta-restore` overrides
    // `recovery_options = delta-restore`.
    let not_empty = format!(
        "ERROR: The restore operation cannot proceed because the destination folder '{}' is not empty. To prevent \
         accidental data loss, the destination must be empty. Please choose a different location or manually empty \
         the folder.",
        dest.display()
    );
    let r = recover(&site, second, &restored, &[])?;
    ensure!(r.code == 1 && r.stderr.contains(&not_empty), "{r}");
    append_config(&site, "recovery_options = delta-restore")?;
    let r = recover(&site, second, &restored, &["--no-delta-restore"])?;
    ensure!(r.code == 1 && r.stderr.contains(&not_empty), "{r}");
    // A tablespace location that is not empty, for a destination that is.
    let empty = tempfile::tempdir()?;
    let ts_rule = format!("tbs:{}", restored.root_dir().join("tbs").display());
    let new_dest = empty.path().join("data");
    let r = site.run(&["recover", "pg", second, new_dest.to_str().context("utf-8")?, "--tablespace", &ts_rule, "--no-delta-restore"])?;
    let ts_not_empty = format!(
        "ERROR: The restore operation cannot proceed. The destination path '{}' for the tablespace 'tbs' is not empty.",
        restored.root_dir().join("tbs").display()
    );
    ensure!(r.code == 1 && r.stderr.contains(&ts_not_empty) && !new_dest.exists(), "{r}");

    // The same backup again, in delta mode: the changed rows are back, the strays gone, and a
    // file nobody wrote is left as it was (its inode untouched: same ctime).
    let untouched = ctime(&dest.join("PG_VERSION"))?;
    let r = recover(&site, second, &restored, &["--delta-restore"])?;
    ensure!(r.code == 0 && r.stdout.contains("Using safe horizon time for smart rsync copy: "), "{r}");
    let summary = format!("\tdelta restore of {}: ", dest.display());
    let line = r.stdout.lines().find(|l| l.starts_with(&summary)).with_context(|| format!("a delta summary: {r}"))?;
    ensure!(!line.contains(": 0 files unchanged") && !line.contains(" 0 removed"), "{line}");
    ensure!(ctime(&dest.join("PG_VERSION"))? == untouched, "PG_VERSION was rewritten: {r}");
    ensure!(strays_gone(&restored) && dest.join("barman_wal").read_dir()?.count() > 0, "{r}");
    ensure!(dest.join(format!("backup_manifest.{second}")).exists() && dest.join("recovery.signal").exists());
    // Not under a running server.
    let got = start_and_read(&restored)?;
    ensure!(got == SECOND, "the second backup's rows, not the changed ones: {got}");
    let r = recover(&site, second, &restored, &["--delta-restore"])?;
    ensure!(r.code == 1 && r.stderr.contains("holds a running PostgreSQL (postmaster.pid)"), "{r}");
    use_and_stop(&restored)?;

    // The older backup, through `recovery_options = delta-restore`.
    let r = recover(&site, first, &restored, &[])?;
    ensure!(r.code == 0 && r.stdout.contains(&summary) && !dest.join(format!("backup_manifest.{second}")).exists(), "{r}");
    ensure!(strays_gone(&restored), "{r}");
    let got = start_and_read(&restored)?;
    ensure!(got == FIRST, "the first backup's rows: {got}");
    use_and_stop(&restored)?;

    // Through ssh, the newer backup over it (as the ssh user, the server user).
    let sshd = Sshd::start()?;
    let ssh = sshd.ssh_command();
    if let Some(user) = restored.server_user() {
        let ok = std::process::Command::new("chown").arg("-R").arg(format!("{}:{}", user.uid, user.gid)).arg(restored.root_dir()).status()?.success();
        ensure!(ok, "chown {}", restored.root_dir().display());
    }
    let remote = ["--remote-ssh-command", ssh.as_str(), "-j", "2"];
    let r = recover(&site, second, &restored, &remote)?;
    ensure!(r.code == 0 && r.stdout.contains("Starting remote restore") && r.stdout.contains("safe horizon"), "{r}");
    ensure!(strays_gone(&restored) && !dest.join(format!("backup_manifest.{first}")).exists(), "{r}");
    let got = start_and_read(&restored)?;
    ensure!(got == SECOND, "the second backup's rows, restored remotely: {got}");
    let r = recover(&site, first, &restored, &[&remote[..], &["--delta-restore", "--staging-location", "remote"]].concat())?;
    ensure!(r.code == 1 && r.stderr.contains("ERROR: Cannot restore a backup remotely with delta mode when 'staging_location=remote'."), "{r}");

    // A compressed backup: not locally in delta mode, before anything is written.
    append_config(&site, "backup_compression = gzip")?;
    backup()?;
    let third = site.backup_ids()?.pop().context("a third backup")?;
    let r = recover(&site, &third, &restored, &[])?;
    ensure!(r.code == 1 && r.stderr.contains("ERROR: Cannot restore a backup locally with delta mode when the backup is not plain."), "{r}");
    ensure!(!r.stdout.contains("Starting local restore"), "{r}");
    Ok(())
});
