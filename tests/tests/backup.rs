//! `backup_method = postgres` into a Barman catalog: the backup.info Barman would write, a
//! plain data directory that pg_verifybackup accepts and PostgreSQL starts from, tablespaces
//! where Barman puts them, and a clean FAILED when the server cannot be reached.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::{ensure, Context};
use barman_core::backup::streaming::{take_streaming_backup, BackupError, StreamingBackupRequest};
use barman_core::catalog::{BackupInfo, BackupStatus, ServerCatalog, ServerIdentity};
use barman_tests::{pg_test, Cluster, ClusterOptions, RunCommand, BARMAN_USER, STREAMING_USER};

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
