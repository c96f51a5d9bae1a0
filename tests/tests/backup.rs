//! `backup_method = postgres` into a Barman catalog: the backup.info Barman would write, a
//! plain data directory that pg_verifybackup accepts and PostgreSQL starts from, tablespaces
//! where Barman puts them, and a clean FAILED when the server cannot be reached. A copy cut in
//! the middle is retried as `basebackup_retry_times` says; `backup all` backs up every server
//! at once, each line labelled.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::{ensure, Context};
use barman_core::backup::streaming::{take_streaming_backup, BackupError, StreamingBackupRequest};
use barman_core::catalog::{BackupInfo, BackupStatus, ServerCatalog, ServerIdentity};
use barman_tests::{
    barman_bin, pg_test, run_barman, wait_for, BackgroundBarman, BarmanSite, Cluster, ClusterOptions, RunCommand, BARMAN_USER,
    PASSWORD, STREAMING_USER,
};

fn request(pg: &Cluster, home: &Path) -> StreamingBackupRequest {
    StreamingBackupRequest {
        server: "pg".into(),
        conninfo: format!("{} passfile=/nonexistent", pg.conninfo(BARMAN_USER)),
        streaming_conninfo: format!("{} passfile=/nonexistent", pg.conninfo(STREAMING_USER)),
        application_name: "barman_streaming_backup".into(),
        catalog: ServerCatalog::new("pg", home.join("pg"), home),
        name: Some("first".into()),
        immediate_checkpoint: true,
        bandwidth_limit: None,
    }
}

fn block_on<T>(f: impl std::future::Future<Output = T>) -> anyhow::Result<T> {
    Ok(tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(f))
}

pg_test!(streaming_backup_into_the_catalog, |major| {
    let pg = Cluster::start(ClusterOptions::new(major))?;
    let location = pg.root_dir().join("ts1");
    std::fs::create_dir(&location)?;
    if let Some(u) = pg.server_user() {
        std::os::unix::fs::chown(&location, Some(u.uid), Some(u.gid))?;
    }
    pg.sql(&format!("CREATE TABLESPACE tbs1 LOCATION '{}'", location.display()))?;
    pg.sql("CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 5000) g")?;
    pg.sql("CREATE TABLE in_ts TABLESPACE tbs1 AS SELECT g FROM generate_series(1, 100) g")?;
    let ts_oid: u32 = pg.sql("SELECT oid FROM pg_tablespace WHERE spcname = 'tbs1'")?.parse()?;
    let home = tempfile::tempdir()?;
    let req = request(&pg, home.path());
    let mut notices = Vec::new();
    let info = block_on(take_streaming_backup(&req, &mut |n| notices.push(n)))??;
    let id = info.backup_id;

    // backup.info as Barman writes it, re-read from disk.
    let on_disk = BackupInfo::read(&req.catalog, id)?;
    ensure!(on_disk == info, "backup.info re-read differs");
    ensure!(info.status == BackupStatus::WaitingForWals, "status {:?}", info.status);
    ensure!(info.mode.as_deref() == Some("postgres") && info.backup_name.as_deref() == Some("first"));
    ensure!(info.systemid.map(|s| s.0) == Some(pg.system_identifier()?));
    ensure!(info.version.map(|v| v / 10000) == Some(major));
    let (begin, end) = (info.begin_xlog.context("begin_xlog")?, info.end_xlog.context("end_xlog")?);
    ensure!(end > begin, "end {end} <= begin {begin}");
    ensure!(info.begin_offset == Some(begin.0 % (16 << 20)));
    ensure!(info.begin_wal.map(|w| w.to_string()) == Some(pg.sql(&format!("SELECT pg_walfile_name('{begin}')"))?));
    let label = info.backup_label.clone().context("backup_label")?;
    ensure!(label.contains(&format!("LABEL: barman_{id}")), "label {label}");
    let ts = info.tablespaces.clone().context("tablespaces")?;
    ensure!(ts.len() == 1 && ts[0].name == "tbs1" && ts[0].oid == ts_oid && ts[0].location == location.display().to_string(), "{ts:?}");
    ensure!(info.size.unwrap_or(0) > 1 << 20 && info.size == info.deduplicated_size);
    ensure!(info.copy_stat("copy_time").is_some() && info.copy_stat("total_time").is_some());
    let meta = req.catalog.backup_info_path(id);
    ensure!(std::fs::metadata(&meta)?.permissions().mode() & 0o777 == 0o600, "backup.info mode");
    let identity = ServerIdentity::read(&req.catalog.identity_path())?.context("identity.json")?;
    ensure!(identity.systemid.0 == pg.system_identifier()?);

    // Barman's layout: data/, <oid>/, and the tablespace link pointing into the backup.
    let data = req.catalog.backup_data_dir(id);
    let backup_dir = req.catalog.backup_dir(id);
    ensure!(std::fs::read_link(data.join(format!("pg_tblspc/{ts_oid}")))? == backup_dir.join(ts_oid.to_string()));
    ensure!(backup_dir.join(ts_oid.to_string()).join(format!("PG_{major}_")).parent().is_some());
    ensure!(std::fs::read_dir(backup_dir.join(ts_oid.to_string()))?.count() == 1, "one PG_<major>_<catversion> directory");
    pg.command("pg_verifybackup").args(["-n"]).arg(&data).run().context("pg_verifybackup -n")?;

    // A copy with the WAL from begin to end starts and has the data.
    let restore = tempfile::tempdir()?;
    let copy = restore.path().join("data");
    std::process::Command::new("cp").arg("-a").arg(&data).arg(&copy).run()?;
    std::fs::remove_file(copy.join(format!("pg_tblspc/{ts_oid}")))?;
    let ts_copy = restore.path().join("ts");
    std::process::Command::new("cp").arg("-a").arg(backup_dir.join(ts_oid.to_string())).arg(&ts_copy).run()?;
    std::os::unix::fs::symlink(&ts_copy, copy.join(format!("pg_tblspc/{ts_oid}")))?;
    if let Some(u) = pg.server_user() {
        std::process::Command::new("chown").args(["-R", &format!("{}:{}", u.uid, u.gid)]).arg(&ts_copy).run()?;
    }
    pg.switch_wal()?;
    let end_wal = info.end_wal.context("end_wal")?.to_string();
    let begin_wal = info.begin_wal.context("begin_wal")?.to_string();
    for entry in std::fs::read_dir(pg.data_dir().join("pg_wal"))? {
        let name = entry?.file_name().into_string().unwrap_or_default();
        if name.len() == 24 && name[8..] >= begin_wal[8..] && name[8..] <= end_wal[8..] {
            std::fs::copy(pg.data_dir().join("pg_wal").join(&name), copy.join("pg_wal").join(&name))?;
        }
    }
    let restored = Cluster::start_on_data_dir(ClusterOptions::new(major), &copy)?;
    ensure!(restored.sql("SELECT count(*) FROM t")? == "5000");
    ensure!(restored.sql("SELECT count(*) FROM in_ts")? == "100");
    Ok(())
});

pg_test!(unreachable_server_marks_the_backup_failed, |major| {
    let pg = Cluster::start(ClusterOptions::new(major))?;
    let home = tempfile::tempdir()?;
    let mut req = request(&pg, home.path());
    req.streaming_conninfo = format!("host=127.0.0.1 port=1 user={STREAMING_USER} connect_timeout=5");
    let err = block_on(take_streaming_backup(&req, &mut |_| {}))?.expect_err("no server on port 1");
    let BackupError::Failed { id, reason } = err else { anyhow::bail!("expected a FAILED backup, got {err}") };
    ensure!(reason.starts_with("failure starting backup (") && reason.contains("port 1"), "{reason}");
    let info = BackupInfo::read(&req.catalog, id)?;
    ensure!(info.status == BackupStatus::Failed && info.error.as_deref() == Some(reason.as_str()));
    Ok(())
});

/// Terminates (`pg_terminate_backend`) the walsender of the next base backup `pg` serves to
/// barman (application name `barman_streaming_backup`), once it is streaming: the connection
/// cut in the middle of the copy. Waits for that backup to start.
pub(crate) fn cut_the_backup_connection(pg: &Cluster) -> anyhow::Result<()> {
    wait_for("a base backup's walsender to terminate", || {
        Ok(pg.sql(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_replication \
             WHERE application_name = 'barman_streaming_backup' AND state = 'backup'",
        )? == "1")
    })
}

/// Whether `text` gives the reason of a cut connection: the server's FATAL when it arrived
/// before the socket closed, or the closed connection itself.
pub(crate) fn cut_reason(text: &str) -> bool {
    text.contains("terminating connection due to administrator command") || text.contains("closed the connection unexpectedly")
}

/// A site streaming `pg`'s WAL into its catalog (receive-wal in the background, first WAL
/// archived), so that `backup` passes its checks; `extra` goes into the `[pg]` section.
pub(crate) fn streaming_site(pg: &Cluster, extra: &[&str]) -> anyhow::Result<(BarmanSite, BackgroundBarman)> {
    let site = BarmanSite::new(pg, extra)?;
    let r = site.run(&["receive-wal", "--create-slot", "pg"])?;
    ensure!(r.code == 0, "{r}");
    let receiver = site.spawn(&["receive-wal", "pg"])?;
    let r = site.run(&["switch-wal", "--force", "--archive", "--archive-timeout", "60", "pg"])?;
    ensure!(r.code == 0, "{r}");
    Ok((site, receiver))
}

/// The site's backups and their statuses, oldest first, as `meta/` holds them.
pub(crate) fn statuses(site: &BarmanSite) -> anyhow::Result<Vec<(String, BackupStatus)>> {
    let catalog = ServerCatalog::new("pg", site.server_dir(), site.home.path());
    let mut out = Vec::new();
    for id in catalog.backup_ids()? {
        out.push((id.to_string(), BackupInfo::read(&catalog, id)?.status));
    }
    Ok(out)
}

pg_test!(a_failed_copy_is_retried_then_done, |major| {
    let pg = Cluster::start(ClusterOptions::new(major))?;
    // Throttled so that the copy lasts long enough to be cut in the middle.
    let (site, _receiver) =
        streaming_site(&pg, &["basebackup_retry_times = 1", "basebackup_retry_sleep = 1", "bandwidth_limit = 10240"])?;
    let r = std::thread::scope(|s| {
        let cut = s.spawn(|| cut_the_backup_connection(&pg));
        let r = site.run(&["backup", "--wait", "--wait-timeout", "60", "pg"]);
        cut.join().map_err(|_| anyhow::anyhow!("the cutting thread panicked"))??;
        r
    })?;
    ensure!(r.code == 0 && r.stdout.contains("Backup completed"), "{r}");
    ensure!(
        r.stderr.contains("WARNING: Failure executing a backup using native streaming (attempt 0): ")
            && cut_reason(&r.stderr)
            && r.stderr.contains("WARNING: The files copied so far will be removed and the backup process will restart in 1 seconds"),
        "the retry is reported with its reason: {r}"
    );
    ensure!(!r.stderr.contains("not implemented"), "{r}");
    let log = std::fs::read_to_string(site.home.path().join("barman.log"))?;
    ensure!(log.contains("copy failed; the files copied so far are removed"), "the log has the retry: {log}");
    let backups = statuses(&site)?;
    ensure!(backups.len() == 1 && backups[0].1 == BackupStatus::Done, "{backups:?}");
    let r = site.run(&["verify-backup", "pg", "latest"])?;
    ensure!(r.code == 0, "the retried copy is whole: {r}");

    // The command line overrides the configuration: no retry, the backup fails.
    let r = std::thread::scope(|s| {
        let cut = s.spawn(|| cut_the_backup_connection(&pg));
        let r = site.run(&["backup", "--retry-times", "0", "pg"]);
        cut.join().map_err(|_| anyhow::anyhow!("the cutting thread panicked"))??;
        r
    })?;
    ensure!(r.code == 1 && r.stderr.contains("ERROR: Backup failed copying files.\nDETAILS: "), "{r}");
    ensure!(!r.stderr.contains("attempt 0"), "{r}");
    let backups = statuses(&site)?;
    ensure!(backups.len() == 2 && backups[1].1 == BackupStatus::Failed, "{backups:?}");
    Ok(())
});

/// `[barman]` plus one section per cluster, `pg1`, `pg2`, …, as [`BarmanSite`] writes `[pg]`.
fn multi_server_config(home: &Path, clusters: &[&Cluster]) -> anyhow::Result<std::path::PathBuf> {
    let mut text = format!(
        "[barman]\nbarman_home = {home}\nbarman_user = root\nlog_level = INFO\nlog_file = {home}/barman.log\n",
        home = home.display()
    );
    for (i, pg) in clusters.iter().enumerate() {
        text.push_str(&format!(
            "\n[pg{n}]\nconninfo = {c} password={PASSWORD}\nstreaming_conninfo = {s} password={PASSWORD}\n\
             backup_method = postgres\nstreaming_archiver = on\narchiver = off\nslot_name = barman\n",
            n = i + 1,
            c = pg.conninfo(BARMAN_USER),
            s = pg.conninfo(STREAMING_USER),
        ));
    }
    let config = home.join("barman.conf");
    std::fs::write(&config, text)?;
    Ok(config)
}

pg_test!(backup_all_backs_up_every_server_at_once, |major| {
    let pg1 = Cluster::start(ClusterOptions::new(major))?;
    let pg2 = Cluster::start(ClusterOptions::new(major))?;
    let home = tempfile::tempdir()?;
    let config = multi_server_config(home.path(), &[&pg1, &pg2])?;
    let mut receivers = Vec::new();
    for server in ["pg1", "pg2"] {
        let r = run_barman(&config, &["receive-wal", "--create-slot", server])?;
        ensure!(r.code == 0, "{r}");
        let mut receiver = std::process::Command::new(barman_bin()?);
        receiver.arg("-c").arg(&config).args(["receive-wal", server]).env("PGPASSFILE", "/nonexistent");
        receivers.push(KillOnDrop(receiver.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null()).spawn()?));
        let r = run_barman(&config, &["switch-wal", "--force", "--archive", "--archive-timeout", "60", server])?;
        ensure!(r.code == 0, "{r}");
    }

    let r = run_barman(&config, &["backup", "all"])?;
    ensure!(r.code == 0, "{r}");
    // Every line says whose it is; each is whole.
    for line in r.stdout.lines().chain(r.stderr.lines()) {
        let text = line.strip_prefix("WARNING: ").unwrap_or(line);
        ensure!(text.starts_with("[pg1] ") || text.starts_with("[pg2] "), "unlabelled line {line:?} in {r}");
    }
    for server in ["pg1", "pg2"] {
        ensure!(r.stdout.contains(&format!("[{server}] Starting backup using postgres method for server {server} in ")), "{r}");
        ensure!(r.stdout.contains(&format!("[{server}] Backup completed")), "{r}");
        let r = run_barman(&config, &["list-backups", "-f", "json", server])?;
        let listed = r.json()?;
        let backups = listed[server].as_array().context("a list")?;
        ensure!(backups.len() == 1 && (backups[0]["status"] == "DONE" || backups[0]["status"] == "WAITING_FOR_WALS"), "{r}");
    }

    // One server down: the other is still backed up, and the command fails.
    drop(receivers.pop());
    pg2.stop()?;
    let r = run_barman(&config, &["backup", "pg1", "pg2"])?;
    ensure!(r.code == 1, "{r}");
    ensure!(r.stdout.contains("[pg1] Backup completed"), "{r}");
    ensure!(r.stderr.contains("ERROR: [pg2] Impossible to start the backup"), "{r}");
    Ok(())
});

/// A child process killed (SIGKILL) and reaped when dropped.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
