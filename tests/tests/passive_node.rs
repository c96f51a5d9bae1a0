//! Geo-redundancy: a passive node copying a primary Barman's catalog, then recovering from it.
//!
//! The primary node is a barman site with streaming backups of a cluster. It runs as the
//! server user (`barman_user`, owner of its `barman_home`), because the passive node reaches
//! it through the harness's sshd, which logs in as that user. The passive node is a second
//! configuration whose `primary_ssh_command` is the sshd's ssh command followed by
//! `env BARMAN_CONFIG_FILE=<primary config> PATH=<dir of this barman>:…`: Barman appends
//! `barman sync-info …` to `primary_ssh_command`, so the remote `barman` runs with the
//! primary's configuration; rsync's remote side is started through the same `env`.
//!
//! The ssh command goes through a small wrapper that holds any rsync while a `hold` file
//! exists, so the test can look at the backup while it is being copied (`SYNCING`, and the
//! sync-backup lock held) without depending on how long the copy takes.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{ensure, Context as _};
use barman_tests::{barman_bin, pg_test, run_barman, server_user, wait_for, BarmanRun, BarmanSite, Cluster, ClusterOptions, Sshd};

use crate::remote_recovery::{barman_as_server_user, Background};

/// The `<name>\t…` lines of an xlog.db, names only.
fn xlog_names(path: &Path) -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    Ok(text.lines().filter_map(|l| l.split('\t').next()).map(str::to_owned).collect())
}

/// A backup's status in `list-backups -f json` output.
fn status_of(r: &BarmanRun, id: &str) -> anyhow::Result<Option<String>> {
    let doc = r.json()?;
    let list = doc["pg"].as_array().context("a list of backups")?;
    Ok(list.iter().find(|b| b["backup_id"] == id).and_then(|b| b["status"].as_str()).map(str::to_owned))
}

pg_test!(passive_node_syncs_a_primary_and_recovers_from_its_copy, |major| {
    let pg = Cluster::start(ClusterOptions::new(major))?;

    // The primary Barman, owned and run by the server user.
    let primary = BarmanSite::new(&pg, &["compression = gzip"])?;
    let user_name = match server_user()? {
        Some(u) => u.name,
        None => String::from_utf8(Command::new("id").arg("-un").output()?.stdout)?.trim().to_owned(),
    };
    let text = std::fs::read_to_string(&primary.config)?.replace("barman_user = root", &format!("barman_user = {user_name}"));
    std::fs::write(&primary.config, text)?;
    if server_user()?.is_some() {
        ensure!(Command::new("chown").arg("-R").arg(&user_name).arg(primary.home.path()).status()?.success(), "chown");
    }
    let prun = |args: &[&str]| -> anyhow::Result<BarmanRun> {
        let out = barman_as_server_user(&primary.config, args)?.output()?;
        Ok(BarmanRun {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    };
    let r = prun(&["receive-wal", "--create-slot", "pg"])?;
    ensure!(r.code == 0, "{r}");
    let mut receiver = barman_as_server_user(&primary.config, &["receive-wal", "pg"])?;
    let _receiver = Background(receiver.stdout(Stdio::null()).stderr(Stdio::null()).spawn()?);
    let switch = || -> anyhow::Result<()> {
        let r = prun(&["switch-wal", "--force", "--archive", "--archive-timeout", "60", "pg"])?;
        ensure!(r.code == 0, "{r}");
        Ok(())
    };
    let backup = || -> anyhow::Result<String> {
        let r = prun(&["backup", "--wait", "--wait-timeout", "60", "pg"])?;
        ensure!(r.code == 0 && r.stdout.contains("Backup completed"), "{r}");
        let mut backups: Vec<String> = std::fs::read_dir(primary.server_dir().join("base"))?
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .collect();
        backups.sort();
        backups.pop().context("a backup")
    };
    switch()?;
    pg.sql("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t SELECT generate_series(1, 100)")?;
    let first = backup()?;
    pg.sql("INSERT INTO t SELECT generate_series(101, 200)")?;
    switch()?;

    // The passive node: its own catalog, the primary reached through sshd.
    let sshd = Sshd::start()?;
    let scripts = tempfile::tempdir()?;
    let hold = scripts.path().join("hold");
    let wrapper = scripts.path().join("ssh");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\ncase \"$*\" in *'rsync --server'*) while [ -e {hold} ]; do sleep 0.1; done ;; esac\nexec ssh \"$@\"\n",
            hold = hold.display()
        ),
    )?;
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755))?;
    let bin_dir = barman_bin()?.parent().context("the barman binary's directory")?.to_path_buf();
    let ssh = sshd.ssh_command();
    let primary_ssh = format!(
        "{} {} env BARMAN_CONFIG_FILE={} PATH={}:/usr/bin:/bin",
        wrapper.display(),
        ssh.strip_prefix("ssh ").context("an ssh command")?,
        primary.config.display(),
        bin_dir.display()
    );
    let home = tempfile::tempdir()?;
    let config = home.path().join("barman.conf");
    std::fs::write(
        &config,
        format!(
            "[barman]\nbarman_home = {h}\nbarman_user = root\nlog_level = INFO\nlog_file = {h}/barman.log\n\n\
             [pg]\ndescription = \"passive copy\"\nprimary_ssh_command = {primary_ssh}\ncompression = gzip\n",
            h = home.path().display()
        ),
    )?;
    let run = |args: &[&str]| run_barman(&config, args);

    let r = run(&["check", "pg"])?;
    ensure!(r.stdout.contains("\tssh: OK (Barman primary node)\n"), "{r}");
    ensure!(!r.stdout.contains("unsupported options") && !r.stdout.contains("PostgreSQL"), "{r}");
    let r = run(&["backup", "pg"])?;
    ensure!(r.code == 0 && r.stdout.contains("Skipping passive server 'pg'"), "{r}");

    // sync-info: the primary's catalog as JSON, fetched and kept as primary.info.
    let direct = prun(&["sync-info", "pg"])?;
    ensure!(direct.code == 0 && direct.stdout.starts_with("{\n    \"last_position\": ") && direct.stdout.ends_with('}'), "{direct}");
    let r = run(&["sync-info", "--primary", "pg"])?;
    ensure!(r.code == 0, "{r}");
    let differs = r.stdout.trim_end().lines().zip(direct.stdout.lines()).find(|(a, b)| a != b);
    ensure!(r.stdout.trim_end() == direct.stdout, "the node got what the primary prints: first difference {differs:?}");
    let info = r.json()?;
    let keys: Vec<&str> = info.as_object().context("an object")?.keys().map(String::as_str).collect();
    ensure!(keys.len() == 6, "{keys:?}");
    ensure!(info["backups"][&first]["status"] == "DONE" && info["config"]["name"] == "pg", "{info}");
    ensure!(info["backups"][&first]["backup_id"] == first.as_str() && info["version"] == "3.19.1", "{info}");
    let primary_xlog = xlog_names(&primary.server_dir().join("wals/pg-xlog.db"))?;
    ensure!(info["last_name"] == primary_xlog.last().context("WAL")?.as_str(), "{info}");
    let kept = std::fs::read_to_string(home.path().join("pg/primary.info"))?;
    ensure!(kept == direct.stdout, "primary.info keeps the answer");
    // A resume point past the end is refused in Barman's words.
    let r = prun(&["sync-info", "pg", "0000000100000000000000FF", "1"])?;
    ensure!(r.code == 1 && r.stderr.contains("is newer than the last available wal  '"), "{r}");
    let last_position = info["last_position"].as_u64().context("last_position")?.to_string();
    let last_name = info["last_name"].as_str().context("last_name")?;
    let r = prun(&["sync-info", "pg", last_name, &last_position])?;
    ensure!(r.code == 0 && r.json()?["wals"].as_array().is_some_and(|w| w.is_empty()), "nothing after the last WAL: {r}");

    // sync-backup: SYNCING while the copy runs, under the sync-backup lock; DONE after.
    std::fs::write(&hold, b"")?;
    let copying = Command::new(barman_bin()?)
        .arg("-c")
        .arg(&config)
        .args(["sync-backup", "pg", &first])
        .env_remove("BARMAN_CONFIG_FILE")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let syncing = wait_for("the backup to be SYNCING", || {
        Ok(status_of(&run(&["-f", "json", "list-backups", "pg"])?, &first)?.as_deref() == Some("SYNCING"))
    });
    if let Err(e) = syncing {
        let _ = std::fs::remove_file(&hold);
        let out = copying.wait_with_output()?;
        anyhow::bail!("{e:#}; sync-backup: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    }
    let r = run(&["list-backups", "pg"])?;
    ensure!(r.stdout.contains(&format!("pg {first} ")) && r.stdout.contains("SYNCING"), "{r}");
    let r = run(&["list-processes", "pg"])?;
    ensure!(r.stdout.contains("sync-backup"), "the sync lock is held: {r}");
    ensure!(home.path().join(format!(".pg-{first}-sync-backup.lock")).exists());
    std::fs::remove_file(&hold)?;
    let out = copying.wait_with_output()?;
    ensure!(out.status.success(), "sync-backup: {}", String::from_utf8_lossy(&out.stderr));
    ensure!(status_of(&run(&["-f", "json", "list-backups", "pg"])?, &first)?.as_deref() == Some("DONE"));
    let r = run(&["sync-backup", "pg", &first])?;
    ensure!(r.code == 0 && r.stdout.contains(&format!("Backup {first} is already synced with pg server")), "{r}");

    // sync-wals: the WAL from the backup on, into wals/ and xlog.db, with the resume point.
    let r = run(&["sync-wals", "pg"])?;
    ensure!(r.code == 0, "{r}");
    let synced = xlog_names(&home.path().join("pg/wals/pg-xlog.db"))?;
    ensure!(!synced.is_empty() && primary_xlog.ends_with(&synced), "{synced:?} is the tail of {primary_xlog:?}");
    let resume = std::fs::read_to_string(home.path().join("pg/wals/sync-wals.info"))?;
    ensure!(resume == format!("{last_name}\t{last_position}"), "{resume}");

    // More on the primary; cron on the node starts sync-backup and sync-wals.
    pg.sql("INSERT INTO t SELECT generate_series(201, 300)")?;
    let second = backup()?;
    pg.sql("INSERT INTO t SELECT generate_series(301, 350)")?;
    switch()?;
    let primary_xlog = xlog_names(&primary.server_dir().join("wals/pg-xlog.db"))?;
    let r = run(&["cron"])?;
    ensure!(r.code == 0, "{r}");
    ensure!(r.stdout.contains(&format!("Starting copy of backup {second} for server pg")), "{r}");
    ensure!(r.stdout.contains("Started copy of WAL files for server pg"), "{r}");
    wait_for("cron's sync-backup and sync-wals", || {
        let done = status_of(&run(&["-f", "json", "list-backups", "pg"])?, &second)?.as_deref() == Some("DONE");
        Ok(done && xlog_names(&home.path().join("pg/wals/pg-xlog.db"))?.last() == primary_xlog.last())
    })?;

    // Recovery from the passive node's catalog.
    let restored = Cluster::reserve(ClusterOptions::new(major))?;
    let dest = restored.data_dir();
    let r = run(&["recover", "pg", "latest", dest.to_str().context("utf-8")?])?;
    ensure!(r.code == 0 && r.stdout.contains(&format!("using backup {second}")), "{r}");
    restored.start_existing()?;
    wait_for("the restored cluster to finish recovery", || Ok(restored.sql("SELECT pg_is_in_recovery()")? == "f"))?;
    ensure!(restored.sql("SELECT count(*) FROM t")? == "350", "every row the primary archived");

    // A WAL file corrupted in the primary's archive (stored plain, one byte of its first
    // record's CRC flipped) is refused by sync-wals; the one before it is synced.
    pg.sql("INSERT INTO t SELECT generate_series(351, 400)")?;
    switch()?;
    pg.sql("INSERT INTO t SELECT generate_series(401, 450)")?;
    switch()?;
    let primary_xlog = xlog_names(&primary.server_dir().join("wals/pg-xlog.db"))?;
    let [.., good, bad] = primary_xlog.as_slice() else { anyhow::bail!("two new WAL files: {primary_xlog:?}") };
    ensure!(bad.len() == 24, "a segment: {bad}");
    let bad_path = primary.server_dir().join("wals").join(&bad[..16]).join(bad);
    let out = Command::new("gzip").arg("-dc").arg(&bad_path).output()?;
    ensure!(out.status.success(), "gzip -dc {}", bad_path.display());
    let mut bytes = out.stdout;
    // The segment follows an XLOG_SWITCH: its first record starts after the 40-byte long
    // page header, and bytes 20..24 of a record are its CRC.
    bytes[40 + 21] ^= 0xFF;
    std::fs::write(&bad_path, &bytes)?;
    let r = run(&["sync-info", "--primary", "pg"])?;
    ensure!(r.code == 0, "{r}");
    let r = run(&["sync-wals", "pg"])?;
    ensure!(r.code == 1, "{r}");
    ensure!(r.stderr.contains(&format!("WAL synchronisation for server pg failed with: {bad} refused (corrupt)")), "{r}");
    ensure!(r.stderr.contains("CRC"), "{r}");
    let synced = xlog_names(&home.path().join("pg/wals/pg-xlog.db"))?;
    ensure!(synced.last() == Some(good) && !synced.contains(bad), "{synced:?}");
    ensure!(!home.path().join("pg/wals").join(&bad[..16]).join(bad).exists(), "not left in wals/");
    let errors: Vec<String> = std::fs::read_dir(home.path().join("pg/errors"))?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    ensure!(errors.iter().any(|e| e.starts_with(bad.as_str()) && e.ends_with(".corrupt")), "{errors:?}");
    Ok(())
});
