//! `recover` end to end on real servers: a streamed backup plus the WAL the native receiver
//! wrote, restored to a restore point and to the latest WAL — including the commits that only
//! the receiver's `.partial` segment holds — then started and queried.

use std::time::Duration;

use anyhow::{ensure, Context};
use barman_core::backup::streaming::{take_streaming_backup, StreamingBackupRequest};
use barman_core::catalog::{xlogdb, BackupInfo, BackupStatus, LockKind, ServerCatalog, XlogDbEntry};
use barman_core::receive_wal::{run, ReceiverSettings};
use barman_core::recovery::{recover, RecoveryRequest, RecoveryTarget};
use barman_core::wal::WalFileName;
use barman_replication::{ConnConfig, Connection, Lsn, SessionKind};
use barman_tests::{wait_for, pg_test, Cluster, ClusterOptions, BARMAN_USER, STREAMING_USER};
use tokio::sync::watch;


/// Moves the complete segments the receiver wrote into wals/ and xlog.db, as archive-wal does
/// (uncompressed).
fn archive_streamed(catalog: &ServerCatalog) -> anyhow::Result<usize> {
    let mut names: Vec<String> = std::fs::read_dir(catalog.streaming_directory())?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.len() == 24 || n.ends_with(".history"))
        .collect();
    names.sort();
    let lock = catalog.lock(LockKind::ServerXlogDb)?;
    let mut entries = Vec::new();
    for n in &names {
        let name: WalFileName = n.parse()?;
        let dest = catalog.wal_path(&name);
        std::fs::create_dir_all(dest.parent().context("wal dir")?)?;
        std::fs::rename(catalog.streaming_directory().join(n), &dest)?;
        let size = std::fs::metadata(&dest)?.len();
        let time = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs_f64();
        entries.push(XlogDbEntry { name, size, time, compression: None, encryption: None });
    }
    xlogdb::append(&catalog.xlogdb_path(), &lock, &entries)?;
    Ok(names.len())
}

fn recover_into(catalog: &ServerCatalog, info: &BackupInfo, major: u32, target: RecoveryTarget, partial_wal: bool) -> anyhow::Result<Cluster> {
    let restored = Cluster::reserve(ClusterOptions::new(major))?;
    let req = RecoveryRequest {
        catalog: catalog.clone(),
        backup_id: info.backup_id,
        destination: restored.data_dir(),
        tablespaces: Default::default(),
        target,
        standby_mode: false,
        jobs: 2,
        partial_wal,
        compression: barman_core::compression::WalCompression::none(),
    };
    let report = recover(&req, &mut |_| {})?;
    ensure!(report.changes.iter().any(|c| c.key == "archive_command"), "archive_command neutralised: {:?}", report.changes);
    let auto = std::fs::read_to_string(restored.data_dir().join("postgresql.auto.conf"))?;
    ensure!(auto.contains("restore_command = 'cp ") && restored.data_dir().join("recovery.signal").exists(), "{auto}");
    ensure!(restored.data_dir().join(format!("backup_manifest.{}", info.backup_id)).exists());
    ensure!(restored.data_dir().join(".barman-recover.info").exists());
    restored.start_existing()?;
    Ok(restored)
}

pg_test!(point_in_time_and_latest_recovery, |major| {
    let pg = Cluster::start(ClusterOptions::new(major))?;
    // In postgresql.auto.conf, where recover must neutralise it (included files it leaves
    // alone, as Barman does).
    pg.set_conf("archive_command", "/bin/true")?;
    pg.sql("CREATE TABLE t (id int)")?;
    pg.sql("INSERT INTO t SELECT generate_series(1, 1000)")?;
    let home = tempfile::tempdir()?;
    let catalog = ServerCatalog::new("pg", home.path().join("pg"), home.path());
    catalog.create_skeleton()?;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;

    // The receiver streams into the catalog for the whole test.
    rt.block_on(async {
        let cfg = ConnConfig::parse_with_env(&pg.conninfo(STREAMING_USER), |_| None)?;
        let mut c = Connection::connect(&cfg, SessionKind::Physical).await?;
        c.create_physical_slot("barman", false, true).await?;
        c.close().await?;
        anyhow::Ok(())
    })?;
    let settings = ReceiverSettings {
        server: "pg".into(),
        conninfo: format!("{} passfile=/nonexistent", pg.conninfo(STREAMING_USER)),
        application_name: "barman_receive_wal".into(),
        slot: Some("barman".into()),
        streaming_dir: catalog.streaming_directory().to_owned(),
        system_id: None,
        status_interval: Duration::from_millis(500),
        receive_timeout: Some(Duration::from_secs(60)),
        reconnect: true,
    };
    let (stop, rx) = watch::channel(false);
    let receiver = rt.spawn(async move { run(&settings, rx, &mut |_| {}).await });

    let req = StreamingBackupRequest {
        server: "pg".into(),
        conninfo: format!("{} passfile=/nonexistent", pg.conninfo(BARMAN_USER)),
        streaming_conninfo: format!("{} passfile=/nonexistent", pg.conninfo(STREAMING_USER)),
        application_name: "barman_streaming_backup".into(),
        catalog: catalog.clone(),
        name: None,
        immediate_checkpoint: true,
        bandwidth_limit: None,
    };
    let mut info = rt.block_on(take_streaming_backup(&req, &mut |_| {}))?;
    pg.sql("INSERT INTO t SELECT generate_series(1001, 2000)")?;
    pg.sql("SELECT pg_create_restore_point('rp1')")?;
    pg.sql("INSERT INTO t SELECT generate_series(2001, 3000)")?;
    pg.switch_wal()?;
    // Committed after the last switch: only the receiver's .partial has these.
    pg.sql("INSERT INTO t SELECT generate_series(3001, 3500)")?;
    let last: Lsn = pg.sql("SELECT pg_current_wal_lsn()")?.parse()?;
    wait_for("the receiver to flush everything", || {
        let f = pg.sql("SELECT flush_lsn FROM pg_stat_replication WHERE application_name = 'barman_receive_wal'")?;
        Ok(!f.is_empty() && f.parse::<Lsn>()? >= last)
    })?;
    stop.send(true)?;
    rt.block_on(receiver)??;

    let archived = archive_streamed(&catalog)?;
    ensure!(archived >= 2, "archived {archived} files");
    info.status = BackupStatus::Done;
    info.write(&catalog)?;

    // To the restore point: recovery pauses there with exactly the rows before it.
    let at_rp = recover_into(&catalog, &info, major, RecoveryTarget { name: Some("rp1".into()), ..Default::default() }, true)?;
    wait_for("recovery to pause at rp1", || Ok(at_rp.sql("SELECT pg_is_wal_replay_paused()")? == "t"))?;
    ensure!(at_rp.sql("SELECT count(*) FROM t")? == "2000", "rows at rp1");
    drop(at_rp);

    // Latest, with the receiver's partial segment: every committed row is back.
    let latest = recover_into(&catalog, &info, major, RecoveryTarget::default(), true)?;
    wait_for("recovery to finish", || Ok(latest.sql("SELECT pg_is_in_recovery()")? == "f"))?;
    ensure!(latest.sql("SELECT count(*) FROM t")? == "3500", "rows after latest recovery: {}", latest.sql("SELECT count(*) FROM t")?);
    drop(latest);

    // Without it, the commits after the last complete segment are missing: that is what the
    // partial segment is for.
    let without = recover_into(&catalog, &info, major, RecoveryTarget::default(), false)?;
    wait_for("recovery to finish", || Ok(without.sql("SELECT pg_is_in_recovery()")? == "f"))?;
    ensure!(without.sql("SELECT count(*) FROM t")? == "3000");
    Ok(())
});
