//! `recover` of an incremental backup (PostgreSQL 17+) through the `barman` command line: a
//! chain made by `backup --incremental latest` (a full backup and two incrementals, with data
//! changed between them and a tablespace), combined with pg_combinebackup as Barman 3.19 does,
//! restored, started and queried:
//!
//! - the last incremental, locally, to a transaction in between (`--target-xid`): every row
//!   committed up to it is there, none after; the tablespace is where `--tablespace` put it;
//! - the middle incremental, locally, to the end of the WAL: every row;
//! - the last incremental through `--remote-ssh-command` (a real sshd): combined in the
//!   staging path here, sent, the staging directory removed;
//! - a gzip-compressed incremental on top (a mixed chain): unpacked in the staging path,
//!   combined with the plain members;
//! - and the refusals: pg_combinebackup missing, or of another major than the backup, a
//!   chain with a missing parent, `staging_location = remote`; none of them leaves a
//!   destination behind.
//!
//! Before 17 there are no incremental backups to restore (`backup --incremental` refuses,
//! incremental_backup.rs): those majors are skipped with the reason printed.

use std::path::Path;
use std::process::Command;

use anyhow::{ensure, Context as _};
use barman_tests::{barman_bin, pg_bin_dir, pg_test, server_user, wait_for, BarmanRun, BarmanSite, Cluster, ClusterOptions, Sshd};

use super::backup::streaming_site;

/// `backup --wait [args…] pg`, which must end DONE; returns the new backup's ID.
fn backup(site: &BarmanSite, args: &[&str]) -> anyhow::Result<String> {
    let before = if site.server_dir().join("base").exists() { site.backup_ids()? } else { Vec::new() };
    let mut all = vec!["backup", "--wait", "--wait-timeout", "60"];
    all.extend_from_slice(args);
    all.push("pg");
    let r = site.run(&all)?;
    ensure!(r.code == 0 && r.stdout.contains("Backup completed") && !r.stderr.contains("WAITING_FOR_WALS"), "{r}");
    site.backup_ids()?.into_iter().find(|id| !before.contains(id)).context("a new backup")
}

/// `barman -c <config> recover pg <args…>` with `PATH` set to `path` (so that only
/// `path_prefix` can provide pg_combinebackup).
fn recover_with_path(config: &Path, path: &Path, args: &[&str]) -> anyhow::Result<BarmanRun> {
    let out = Command::new(barman_bin()?)
        .arg("-c")
        .arg(config)
        .arg("recover")
        .arg("pg")
        .args(args)
        .env("PATH", path)
        .env("PGPASSFILE", "/nonexistent/pgpass")
        .output()?;
    Ok(BarmanRun {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// Hands `dir` to the server user, as an administrator does with a tablespace restored by root.
fn give_to_server_user(dir: &Path) -> anyhow::Result<()> {
    if let Some(user) = server_user()? {
        let status = Command::new("chown").arg("-R").arg(format!("{}:{}", user.uid, user.gid)).arg(dir).status()?;
        ensure!(status.success(), "chown {}", dir.display());
    }
    Ok(())
}

/// Starts the restored cluster, waits for the end of its recovery and returns the rows of `t`
/// (count, max) and of `s` (in the tablespace).
fn start_and_count(restored: &Cluster) -> anyhow::Result<(String, String)> {
    restored.start_existing()?;
    wait_for("the restored cluster to finish recovery", || Ok(restored.sql("SELECT pg_is_in_recovery()")? == "f"))?;
    Ok((restored.sql("SELECT count(*) || ' ' || max(id) FROM t")?, restored.sql("SELECT count(*) FROM s")?))
}

/// Files named `INCREMENTAL.*` under `dir`.
fn incremental_files(dir: &Path) -> anyhow::Result<usize> {
    let mut found = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d)? {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                stack.push(entry.path());
            } else if entry.file_name().to_string_lossy().starts_with("INCREMENTAL.") {
                found += 1;
            }
        }
    }
    Ok(found)
}

pg_test!(incremental_recovery_of_a_chain, |major| {
    if major < 17 {
        println!("skipped: PostgreSQL {major} has no incremental backups (17+), so there is no chain to recover");
        return Ok(());
    }
    let pg = Cluster::start(ClusterOptions::new(major).conf("summarize_wal", "on"))?;
    let path_prefix = format!("path_prefix = {}", pg.bin_dir().display());
    let (site, _receiver) = streaming_site(&pg, &["immediate_checkpoint = true", &path_prefix])?;
    let base_config = std::fs::read_to_string(&site.config)?;
    pg.create_tablespace("tbs")?;
    pg.sql("CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t SELECT g, 'full' FROM generate_series(1, 1000) g")?;
    pg.sql("CREATE TABLE s (id int) TABLESPACE tbs; INSERT INTO s SELECT generate_series(1, 100)")?;
    let full = backup(&site, &[])?;
    pg.sql("INSERT INTO t SELECT g, 'inc1' FROM generate_series(1001, 2000) g; UPDATE t SET v = 'changed' WHERE id % 10 = 0")?;
    pg.sql("INSERT INTO s SELECT generate_series(101, 200)")?;
    let first = backup(&site, &["--incremental", "latest"])?;
    pg.sql("INSERT INTO t SELECT g, 'inc2' FROM generate_series(2001, 3000) g; DELETE FROM t WHERE id <= 100")?;
    let second = backup(&site, &["--incremental", "latest"])?;
    let info = std::fs::read_to_string(site.server_dir().join(format!("meta/{second}-backup.info")))?;
    ensure!(info.contains(&format!("parent_backup_id={first}")), "a chain of three:\n{info}");
    // After the last backup: a transaction to stop at, then rows past it.
    let xid = pg.sql("BEGIN; INSERT INTO t SELECT g, 'target' FROM generate_series(3001, 3500) g; SELECT txid_current(); COMMIT;")?;
    pg.sql("INSERT INTO t SELECT g, 'after' FROM generate_series(3501, 4000) g; INSERT INTO s SELECT generate_series(201, 300)")?;
    let r = site.run(&["switch-wal", "--force", "--archive", "--archive-timeout", "60", "pg"])?;
    ensure!(r.code == 0, "{r}");

    // The last incremental, locally, to the transaction: the chain combined into the destination.
    let restored = Cluster::reserve(ClusterOptions::new(major))?;
    let dest = restored.data_dir();
    let ts_dest = restored.root_dir().join("tbs");
    let ts_rule = format!("tbs:{}", ts_dest.display());
    let dest_arg = dest.to_str().context("utf-8")?;
    let to_xid = ["--target-xid", xid.as_str(), "--target-action", "promote"];
    let args = [&["recover", "pg", second.as_str(), dest_arg, "--tablespace", ts_rule.as_str()][..], &to_xid[..]].concat();
    let r = site.run(&args)?;
    ensure!(r.code == 0, "{r}");
    for line in [
        format!("Starting local restore for server pg using backup {second}"),
        "Copying the base backup.".into(),
        format!("Start combining backup via pg_combinebackup for backup {second} on {}", dest.display()),
        format!("End combining backup via pg_combinebackup for backup {second}"),
        "Copying required WAL segments.".into(),
        "Your PostgreSQL server has been successfully prepared for recovery!".into(),
    ] {
        ensure!(r.stdout.lines().any(|l| l == line), "{line:?} in {r}");
    }
    ensure!(incremental_files(&dest)? == 0, "the destination holds a full backup");
    ensure!(dest.join(format!("backup_manifest.{second}")).exists() && !dest.join("backup_manifest").exists(), "{r}");
    let recover_info = std::fs::read_to_string(dest.join(".barman-recover.info"))?;
    ensure!(recover_info.contains("copy_stats={'combine_time': "), "{recover_info}");
    let link = dest.join("pg_tblspc").read_dir()?.next().context("a tablespace link")??.path();
    ensure!(std::fs::read_link(link)? == ts_dest, "the tablespace is where --tablespace put it");
    give_to_server_user(&ts_dest)?;
    ensure!(start_and_count(&restored)? == ("3400 3500".into(), "200".into()), "rows up to the target xid");
    drop(restored);

    // The middle incremental, to the end of the WAL: every row; `link` asked for, `copy` used.
    let restored = Cluster::reserve(ClusterOptions::new(major))?;
    let ts_rule = format!("tbs:{}", restored.root_dir().join("tbs").display());
    let r = site.run(&[
        "recover", "pg", &first, restored.data_dir().to_str().context("utf-8")?, "--tablespace", &ts_rule, "--combine-mode", "link",
    ])?;
    ensure!(r.code == 0 && r.stdout.contains(&format!("End combining backup via pg_combinebackup for backup {first}")), "{r}");
    let fallback = "WARNING: 'link' mode is not supported for local restore. Falling back to 'copy' mode to prevent \
                    modification of original backup files through hard-links.";
    ensure!(r.stderr.contains(fallback), "no hard links into the catalog: {r}");
    give_to_server_user(&restored.root_dir().join("tbs"))?;
    ensure!(start_and_count(&restored)? == ("3900 4000".into(), "300".into()), "every row");
    drop(restored);

    // Refusals, before anything is written. pg_combinebackup nowhere (no path_prefix, an
    // empty PATH):
    let empty = tempfile::tempdir()?;
    let nowhere = site.home.path().join("no-prefix.conf");
    std::fs::write(&nowhere, base_config.replace(&path_prefix, ""))?;
    let dest = empty.path().join("dest");
    let dest_arg = dest.to_str().context("utf-8")?;
    let r = recover_with_path(&nowhere, empty.path(), &[&second, dest_arg])?;
    ensure!(r.code == 1 && r.stderr.contains("ERROR: pg_combinebackup could not be found on the target server"), "{r}");
    ensure!(!dest.exists(), "nothing written: {r}");
    // …of another major:
    let other = if major == 17 { 18 } else { 17 };
    let wrong = site.home.path().join("wrong-major.conf");
    std::fs::write(&wrong, format!("{base_config}path_prefix = {}\n", pg_bin_dir(other)?.display()))?;
    let r = recover_with_path(&wrong, empty.path(), &[&second, dest_arg])?;
    let mismatch = format!(
        "ERROR: Postgres version mismatch: The backup '{second}' was taken from Postgres version '{major}', but \
         pg_combinebackup version is '{other}'. To restore successfully is necessary to use pg_combinebackup with the \
         same version used when the backup was taken ({major})."
    );
    ensure!(r.code == 1 && r.stderr.contains(&mismatch), "{r}");
    ensure!(!dest.exists(), "nothing written: {r}");
    // Barman's staging rules: with only the deprecated options, the one for combining is needed.
    let r = site.run(&["recover", "pg", &second, dest_arg, "--recovery-staging-path", "/tmp"])?;
    let rule = format!(
        "ERROR: Cannot restore from backup '{second}' of server 'pg': backup has to be combined with pg_combinebackup in a \
         staging area but no staging path and location was provided. Please set staging_path and staging_location in the \
         server configuration file, or use their equivalent CLI options --staging-path and --staging-location"
    );
    ensure!(r.code == 1 && r.stderr.contains(&rule), "{r}");
    let r = site.run(&["recover", "pg", &second, dest_arg, "--staging-path", "relative"])?;
    ensure!(r.code == 1 && r.stderr.contains("Cannot parse staging path: Invalid value : 'relative' (must be an absolute path)"), "{r}");
    ensure!(!dest.exists(), "nothing written: {r}");
    // staging_location = remote: not combined on the recovery host (yet).
    let r = site.run(&["recover", "pg", &second, dest_arg, "--remote-ssh-command", "ssh nowhere", "--staging-location", "remote"])?;
    ensure!(r.code == 1 && r.stderr.contains("cannot combine its chain on the recovery host (staging_location = remote)"), "{r}");

    // Remotely, through a real sshd: combined in the staging path here, then sent.
    let sshd = Sshd::start()?;
    let ssh = sshd.ssh_command();
    let staging = tempfile::tempdir()?;
    let restored = Cluster::reserve(ClusterOptions::new(major))?;
    let dest = restored.data_dir();
    let ts_rule = format!("tbs:{}", restored.root_dir().join("tbs").display());
    let staging_arg = staging.path().to_str().context("utf-8")?;
    let dest_arg = dest.to_str().context("utf-8")?;
    let r = site.run(&[
        "recover", "pg", &second, dest_arg, "--remote-ssh-command", &ssh, "--staging-path", staging_arg, "--tablespace", &ts_rule,
    ])?;
    ensure!(r.code == 0, "{r}");
    let staged = staging.path().join("barman-combine").display().to_string();
    ensure!(
        r.stdout.lines().any(|l| l.starts_with(&format!("Start combining backup via pg_combinebackup for backup {second} on {staged}"))
            && l.ends_with(&format!("/{second}/data"))),
        "{r}"
    );
    ensure!(r.stdout.contains("Starting remote restore for server pg") && r.stdout.contains("Copying required WAL segments."), "{r}");
    ensure!(staging.path().read_dir()?.next().is_none(), "the staging directory is removed");
    ensure!(dest.join(format!("backup_manifest.{second}")).exists() && incremental_files(&dest)? == 0, "{r}");
    ensure!(start_and_count(&restored)? == ("3900 4000".into(), "300".into()), "every row, remotely");
    drop(restored);

    // A compressed incremental on top of the plain chain (a mixed chain, as Barman allows): its
    // archives unpacked in the staging path first, then combined with the plain members.
    std::fs::write(&site.config, format!("{base_config}backup_compression = gzip\n"))?;
    pg.sql("INSERT INTO t SELECT g, 'gz' FROM generate_series(4001, 4100) g")?;
    let third = backup(&site, &["--incremental", "latest"])?;
    let info = std::fs::read_to_string(site.server_dir().join(format!("meta/{third}-backup.info")))?;
    ensure!(info.contains("compression=gzip") && info.contains(&format!("parent_backup_id={second}")), "{info}");
    let restored = Cluster::reserve(ClusterOptions::new(major))?;
    let ts_dest = restored.root_dir().join("tbs");
    let ts_rule = format!("tbs:{}", ts_dest.display());
    let staging_arg = staging.path().to_str().context("utf-8")?;
    let r = site.run(&["recover", "pg", &third, restored.data_dir().to_str().context("utf-8")?, "--tablespace", &ts_rule, "--staging-path", staging_arg])?;
    ensure!(r.code == 0 && r.stdout.contains(&format!("End combining backup via pg_combinebackup for backup {third}")), "{r}");
    ensure!(staging.path().read_dir()?.next().is_none(), "the unpacked archives are removed");
    give_to_server_user(&ts_dest)?;
    ensure!(start_and_count(&restored)? == ("4000 4100".into(), "300".into()), "every row, through the compressed member");
    drop(restored);
    std::fs::write(&site.config, &base_config)?;

    // A chain with a missing parent: refused, naming it.
    let meta = site.server_dir().join("meta");
    std::fs::rename(meta.join(format!("{full}-backup.info")), site.home.path().join("full-backup.info"))?;
    let dest = empty.path().join("broken");
    let r = site.run(&["recover", "pg", &second, dest.to_str().context("utf-8")?])?;
    ensure!(
        r.code == 1
            && r.stderr.contains(&format!(
                "Cannot restore from backup '{second}': it is an incremental backup and its chain is broken: the parent \
                 {full} of backup {first} is not in the catalog"
            )),
        "{r}"
    );
    ensure!(!dest.exists(), "nothing written: {r}");
    Ok(())
});
