//! `recover --remote-ssh-command` and `recover --get-wal` through the `barman` command line.
//!
//! Remote recovery goes through a real sshd on localhost ([`Sshd`]) that logs in as the
//! harness's unprivileged server user: shell commands run through the ssh command, files go
//! through `rsync -e <ssh command>`, so everything on the "remote" side is written by that
//! user into directories of its own. The restored directories must belong to it, PGDATA 0700,
//! with the configuration edited on the remote side; PostgreSQL is then started on them and
//! queried. A compressed backup is restored both ways Barman knows: unpacked in a local
//! staging path and sent (`staging_location = local`), and sent as it is into a staging path
//! on the recovery host and unpacked there by its `tar` (`staging_location = remote`).
//!
//! Local get-wal recovery copies no WAL: the restored server's `restore_command` runs
//! `barman get-wal` itself. The server runs as the unprivileged user, so this site is set up
//! the way a real one is for that: barman runs as that user (`barman_user`) and owns
//! `barman_home`, so the server can run barman and read the catalog.

use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::Command;

use anyhow::{ensure, Context as _};
use barman_tests::{barman_bin, pg_test, server_user, wait_for, BarmanRun, BarmanSite, Cluster, ClusterOptions, Sshd};

/// Every file under `dir` (links not followed) belongs to the server user, and `dir` is 0700.
fn assert_owned_by_server_user(dir: &Path) -> anyhow::Result<()> {
    let mode = std::fs::metadata(dir)?.permissions().mode() & 0o777;
    ensure!(mode == 0o700, "{} has mode {mode:o}, not 0700", dir.display());
    let Some(user) = server_user()? else { return Ok(()) };
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d)? {
            let path = entry?.path();
            let meta = std::fs::symlink_metadata(&path)?;
            ensure!(meta.uid() == user.uid, "{} belongs to uid {}, not {} ({})", path.display(), meta.uid(), user.uid, user.name);
            if meta.is_dir() {
                stack.push(path);
            }
        }
    }
    Ok(())
}

/// `backup --wait`, which must end DONE.
fn backup(run: &dyn Fn(&[&str]) -> anyhow::Result<BarmanRun>) -> anyhow::Result<()> {
    let r = run(&["backup", "--wait", "--wait-timeout", "60", "pg"])?;
    ensure!(r.code == 0 && r.stdout.contains("Backup completed") && !r.stderr.contains("WAITING_FOR_WALS"), "{r}");
    Ok(())
}

fn switch_wal(run: &dyn Fn(&[&str]) -> anyhow::Result<BarmanRun>) -> anyhow::Result<()> {
    let r = run(&["switch-wal", "--force", "--archive", "--archive-timeout", "60", "pg"])?;
    ensure!(r.code == 0, "{r}");
    Ok(())
}

/// `recover pg <id>` into `restored`'s data directory through `ssh`, the tablespace `tbs`
/// relocated to `<restored's root>/tbs`, with `extra` options.
fn recover_remotely(site: &BarmanSite, id: &str, restored: &Cluster, ssh: &str, extra: &[&str]) -> anyhow::Result<BarmanRun> {
    let dest = restored.data_dir();
    let ts_rule = format!("tbs:{}", restored.root_dir().join("tbs").display());
    let mut args = vec!["recover", "pg", id, dest.to_str().context("utf-8")?, "--remote-ssh-command", ssh, "--tablespace", &ts_rule];
    args.extend_from_slice(extra);
    site.run(&args)
}

/// Starts the restored cluster, waits for the end of its recovery and counts the rows of `t`.
fn start_and_count(restored: &Cluster) -> anyhow::Result<String> {
    restored.start_existing()?;
    wait_for("the restored cluster to finish recovery", || Ok(restored.sql("SELECT pg_is_in_recovery()")? == "f"))?;
    restored.sql("SELECT count(*) FROM t")
}

pg_test!(remote_recovery_of_plain_and_zstd_backups, |major| {
    let pg = Cluster::start(ClusterOptions::new(major))?;
    let site = BarmanSite::new(&pg, &["compression = gzip"])?;
    let run = |args: &[&str]| site.run(args);
    let r = site.run(&["receive-wal", "--create-slot", "pg"])?;
    ensure!(r.code == 0, "{r}");
    let _receiver = site.spawn(&["receive-wal", "pg"])?;
    switch_wal(&run)?;

    // A setting Barman neutralises, and a tablespace to send elsewhere.
    pg.sql("ALTER SYSTEM SET archive_command = '/bin/true'")?;
    pg.create_tablespace("tbs")?;
    pg.sql("CREATE TABLE t (id int PRIMARY KEY) TABLESPACE tbs; INSERT INTO t SELECT generate_series(1, 100)")?;
    backup(&run)?;
    let text = std::fs::read_to_string(&site.config)?;
    std::fs::write(&site.config, format!("{text}backup_compression = zstd\n"))?;
    pg.sql("INSERT INTO t SELECT generate_series(101, 200)")?;
    backup(&run)?;
    pg.sql("INSERT INTO t SELECT generate_series(201, 250); SELECT pg_create_restore_point('rp')")?;
    pg.sql("INSERT INTO t SELECT generate_series(251, 300)")?;
    switch_wal(&run)?;
    let ids = site.backup_ids()?;
    ensure!(ids.len() == 2, "two backups: {ids:?}");
    let info = std::fs::read_to_string(site.server_dir().join(format!("meta/{}-backup.info", ids[1])))?;
    ensure!(info.contains("compression=zstd"), "the second backup is zstd-compressed:\n{info}");

    let sshd = Sshd::start()?;
    let ssh = sshd.ssh_command();
    let staging = tempfile::tempdir()?;

    // The plain backup, all the WAL: every row.
    let restored = Cluster::reserve(ClusterOptions::new(major))?;
    let dest = restored.data_dir();
    let ts_dest = restored.root_dir().join("tbs");
    let extra = ["--bwlimit", "100000", "-j", "2"];
    // What a standby's backup holds (standby_backup.rs takes a real one): removed on the remote
    // side before recovery.signal is sent.
    std::fs::write(site.server_dir().join(format!("base/{}/data/standby.signal", ids[0])), "")?;
    let r = recover_remotely(&site, &ids[0], &restored, &ssh, &extra)?;
    ensure!(r.code == 0, "{r}");
    ensure!(r.stdout.contains("Removed standby.signal found in the backup") && !dest.join("standby.signal").exists(), "{r}");
    ensure!(r.stdout.contains("Starting remote restore for server pg") && r.stdout.contains(&format!("Remote command: {ssh}")), "{r}");
    ensure!(r.stdout.contains("Copying required WAL segments."), "{r}");
    assert_owned_by_server_user(&dest)?;
    assert_owned_by_server_user(&ts_dest)?;
    ensure!(std::fs::read_link(dest.join("pg_tblspc").read_dir()?.next().context("a tablespace link")??.path())? == ts_dest);
    let auto = std::fs::read_to_string(dest.join("postgresql.auto.conf"))?;
    ensure!(auto.contains("#BARMAN#archive_command = '/bin/true'\narchive_command = false\n"), "edited on the remote side:\n{auto}");
    ensure!(auto.contains(&format!("restore_command = 'cp {}/barman_wal/%f %p'", dest.display())), "{auto}");
    ensure!(dest.join("postgresql.auto.conf.origin").exists() && dest.join("recovery.signal").exists());
    ensure!(dest.join(".barman-recover.info").exists() && dest.join(format!("backup_manifest.{}", ids[0])).exists());
    ensure!(dest.join("barman_wal").read_dir()?.count() > 1, "WAL sent");
    // A second restore into the same directory is refused.
    let r = recover_remotely(&site, &ids[0], &restored, &ssh, &extra)?;
    ensure!(r.code == 1 && r.stderr.contains("is not empty. To prevent accidental data loss"), "{r}");
    ensure!(start_and_count(&restored)? == "300", "all rows");

    // The zstd backup, unpacked in the staging path, sent, recovered to the restore point.
    let restored = Cluster::reserve(ClusterOptions::new(major))?;
    let to_rp = ["--target-name", "rp", "--target-action", "promote"];
    let staging_arg = ["--staging-path", staging.path().to_str().context("utf-8")?];
    let r = recover_remotely(&site, &ids[1], &restored, &ssh, &[&staging_arg[..], &to_rp].concat())?;
    ensure!(r.code == 0, "{r}");
    ensure!(staging.path().read_dir()?.count() == 0, "the staging directory is removed");
    assert_owned_by_server_user(&restored.data_dir())?;
    assert_owned_by_server_user(&restored.root_dir().join("tbs"))?;
    ensure!(start_and_count(&restored)? == "250", "the rows up to the restore point");

    // The zstd backup again, with staging_location = remote: the archives are sent into a
    // staging path on the recovery host (a directory of the ssh user's) and unpacked there.
    let remote_staging = tempfile::tempdir()?;
    if let Some(user) = server_user()? {
        std::os::unix::fs::chown(remote_staging.path(), Some(user.uid), Some(user.gid))?;
    }
    let text = std::fs::read_to_string(&site.config)?;
    std::fs::write(&site.config, format!("{text}staging_location = remote\nstaging_path = {}\n", remote_staging.path().display()))?;
    let restored = Cluster::reserve(ClusterOptions::new(major))?;
    let dest = restored.data_dir();
    let ts_dest = restored.root_dir().join("tbs");
    let r = recover_remotely(&site, &ids[1], &restored, &ssh, &[&to_rp[..], &["-j", "2"]].concat())?;
    ensure!(r.code == 0, "{r}");
    ensure!(remote_staging.path().read_dir()?.count() == 0, "the remote staging directory is removed");
    let log = std::fs::read_to_string(site.home.path().join("barman.log"))?;
    ensure!(log.contains("on the recovery host, to be unpacked there"), "unpacked remotely:\n{log}");
    ensure!(dest.join(format!("backup_manifest.{}", ids[1])).exists() && !dest.join("tablespace_map").exists());
    assert_owned_by_server_user(&dest)?;
    assert_owned_by_server_user(&ts_dest)?;
    ensure!(start_and_count(&restored)? == "250", "the rows up to the restore point");
    // Not without a remote host to stage on.
    let r = site.run(&["recover", "pg", &ids[1], "/nonexistent/x", "--staging-location", "remote"])?;
    ensure!(r.code == 1 && r.stderr.contains("--staging-location as remote requires --remote-ssh-command to be set"), "{r}");
    std::fs::write(&site.config, text)?;

    // get-wal on a remote host: barman-wal-restore, called back to this host.
    let restored = Cluster::reserve(ClusterOptions::new(major))?;
    let dest = restored.data_dir();
    let r = recover_remotely(&site, &ids[0], &restored, &ssh, &["--get-wal", "-j", "3", "--recovery-conf-filename", "barman-recovery.conf"])?;
    ensure!(r.code == 0 && r.stdout.contains("WARNING: 'get-wal' is in the specified 'recovery_options'."), "{r}");
    ensure!(r.stdout.contains("please review the barman-recovery.conf file"), "{r}");
    ensure!(!r.stdout.contains("Copying required WAL segments."), "{r}");
    // The settings go to the file asked for; postgresql.auto.conf is still made safe.
    let conf = std::fs::read_to_string(dest.join("barman-recovery.conf"))?;
    let line = conf.lines().find(|l| l.starts_with("restore_command = ")).context("a restore_command")?;
    ensure!(line.starts_with("restore_command = 'barman-wal-restore -P -U root ") && line.ends_with(" pg %f %p -p 3'"), "{conf}");
    ensure!(conf.contains("# The 'barman-wal-restore' command is provided in the 'barman-cli' package"), "{conf}");
    let auto = std::fs::read_to_string(dest.join("postgresql.auto.conf"))?;
    ensure!(!auto.contains("restore_command") && auto.contains("archive_command = false"), "{auto}");
    ensure!(!dest.join("barman_wal").exists() && dest.join("recovery.signal").exists());
    assert_owned_by_server_user(&dest)?;
    Ok(())
});

/// `barman -c <config> <args…>` as the server user (the current user when not root).
pub(crate) fn barman_as_server_user(config: &Path, args: &[&str]) -> anyhow::Result<Command> {
    let mut cmd = Command::new(barman_bin()?);
    cmd.arg("-c").arg(config).args(args).env_remove("BARMAN_CONFIG_FILE").env("PGPASSFILE", "/nonexistent/pgpass");
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("PG") && k != "PGPASSFILE" {
            cmd.env_remove(&k);
        }
    }
    if let Some(user) = server_user()? {
        cmd.uid(user.uid).gid(user.gid);
    }
    Ok(cmd)
}

/// Kills a background barman when dropped.
pub(crate) struct Background(pub(crate) std::process::Child);

impl Drop for Background {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(self.0.id().to_string()).status();
        let _ = self.0.wait();
    }
}

pg_test!(local_get_wal_recovery_fetches_wal_through_barman, |major| {
    let pg = Cluster::start(ClusterOptions::new(major))?;
    let site = BarmanSite::new(&pg, &["compression = gzip", "recovery_options = get-wal"])?;
    let user = server_user()?;
    let user_name = match &user {
        Some(u) => u.name.clone(),
        None => String::from_utf8(Command::new("id").arg("-un").output()?.stdout)?.trim().to_owned(),
    };
    // barman_user is the server user, who owns barman_home.
    let text = std::fs::read_to_string(&site.config)?.replace("barman_user = root", &format!("barman_user = {user_name}"));
    std::fs::write(&site.config, text)?;
    if user.is_some() {
        let status = Command::new("chown").arg("-R").arg(&user_name).arg(site.home.path()).status()?;
        ensure!(status.success(), "chown barman_home");
    }
    let run = |args: &[&str]| -> anyhow::Result<BarmanRun> {
        let out = barman_as_server_user(&site.config, args)?.output()?;
        Ok(BarmanRun {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    };
    let r = run(&["receive-wal", "--create-slot", "pg"])?;
    ensure!(r.code == 0, "{r}");
    let mut receiver = barman_as_server_user(&site.config, &["receive-wal", "pg"])?;
    let _receiver = Background(receiver.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null()).spawn()?);
    switch_wal(&run)?;
    pg.sql("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t SELECT generate_series(1, 100)")?;
    backup(&run)?;
    pg.sql("INSERT INTO t SELECT generate_series(101, 200); SELECT pg_create_restore_point('rp')")?;
    pg.sql("INSERT INTO t SELECT generate_series(201, 300)")?;
    switch_wal(&run)?;

    let restored = Cluster::reserve(ClusterOptions::new(major))?;
    let dest = restored.data_dir();
    let r = run(&["recover", "pg", "latest", dest.to_str().context("utf-8")?, "--target-name", "rp", "--target-action", "promote"])?;
    ensure!(r.code == 0, "{r}");
    ensure!(!r.stdout.contains("Copying required WAL segments.") && !dest.join("barman_wal").exists(), "no WAL copied: {r}");
    ensure!(r.stdout.contains("please review the postgresql.auto.conf file"), "{r}");
    let auto = std::fs::read_to_string(dest.join("postgresql.auto.conf"))?;
    ensure!(auto.contains(&format!("# The 'barman get-wal' command must run as '{user_name}' user\n")), "{auto}");
    // Not on PATH and not in a default location: the command names the binary and the file.
    let expected = format!(
        "restore_command = '{} -c {} get-wal -P pg %f > %p'",
        barman_bin()?.canonicalize()?.display(),
        site.config.canonicalize()?.display()
    );
    ensure!(auto.contains(&expected), "{expected} in\n{auto}");
    let wal_in_dest = std::fs::read_dir(dest.join("pg_wal"))?.filter(|e| e.as_ref().is_ok_and(|e| e.file_name().len() == 24)).count();
    ensure!(wal_in_dest == 0, "no segment in pg_wal before the start");

    restored.start_existing()?;
    wait_for("the restored cluster to finish recovery", || Ok(restored.sql("SELECT pg_is_in_recovery()")? == "f"))?;
    ensure!(restored.sql("SELECT count(*) FROM t")? == "200", "the rows up to the restore point, replayed from WAL fetched by get-wal");
    Ok(())
});
