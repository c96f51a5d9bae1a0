//! BASE_BACKUP with barman-rs's own decoder, on every major: the archives it yields extract to
//! a data directory that pg_verifybackup accepts and PostgreSQL starts from.

use std::collections::BTreeMap;

use anyhow::{ensure, Context};
use barman_replication::{BaseBackupEvent, BaseBackupOptions, ConnConfig, Connection, SessionKind};
use barman_tests::{pg_test, Cluster, ClusterOptions, RunCommand, STREAMING_USER};

fn block_on<T>(f: impl std::future::Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(f)
}

/// Everything one BASE_BACKUP produced.
#[derive(Default)]
struct Received {
    archives: BTreeMap<String, (String, Vec<u8>)>,
    manifest: Vec<u8>,
    start: Option<barman_replication::Lsn>,
    end: Option<barman_replication::Lsn>,
    progress_seen: bool,
}

async fn take_backup(pg: &Cluster, opts: &BaseBackupOptions) -> anyhow::Result<Received> {
    let cfg = ConnConfig::parse_with_env(&pg.conninfo(STREAMING_USER), |_| None)?;
    let mut conn = Connection::connect(&cfg, SessionKind::Physical).await?;
    let mut got = Received::default();
    let mut current: Option<String> = None;
    let mut in_manifest = false;
    {
        let mut reader = conn.base_backup(opts).await?;
        while let Some(event) = reader.next_event().await? {
            match event {
                BaseBackupEvent::Started { lsn, .. } => got.start = Some(lsn),
                BaseBackupEvent::Tablespaces(t) => ensure!(t.last().is_some_and(|t| t.oid.is_none()), "tablespaces {t:?}"),
                BaseBackupEvent::ArchiveStart { name, tablespace_path } => {
                    ensure!(current.is_none(), "archive {name} started inside another");
                    got.archives.insert(name.clone(), (tablespace_path, Vec::new()));
                    current = Some(name);
                }
                BaseBackupEvent::ArchiveData(d) => {
                    let name = current.as_ref().context("archive data outside an archive")?;
                    got.archives.get_mut(name).expect("started").1.extend_from_slice(&d);
                }
                BaseBackupEvent::ArchiveEnd => ensure!(current.take().is_some(), "archive end without start"),
                BaseBackupEvent::Progress(_) => got.progress_seen = true,
                BaseBackupEvent::ManifestStart => in_manifest = true,
                BaseBackupEvent::ManifestData(d) => {
                    ensure!(in_manifest);
                    got.manifest.extend_from_slice(&d)
                }
                BaseBackupEvent::ManifestEnd => in_manifest = false,
                BaseBackupEvent::Finished { lsn, .. } => got.end = Some(lsn),
            }
        }
    }
    // The session is reusable after the backup.
    conn.identify_system().await?;
    conn.close().await?;
    Ok(got)
}

pg_test!(base_backup_restores_and_verifies, |major| {
    let pg = Cluster::start(ClusterOptions::new(major))?;
    pg.sql("CREATE TABLE t AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 20000) g")?;
    let opts = BaseBackupOptions {
        label: "barman_e2e".into(),
        progress: true,
        fast_checkpoint: true,
        wal: true,
        wait: false,
        manifest: true,
        manifest_checksums: Some("SHA256".into()),
        ..Default::default()
    };
    let got = block_on(take_backup(&pg, &opts))?;
    ensure!(got.archives.keys().collect::<Vec<_>>() == vec!["base.tar"], "archives {:?}", got.archives.keys());
    let (start, end) = (got.start.context("no start")?, got.end.context("no end")?);
    ensure!(end > start, "end {end} not after start {start}");
    if major >= 15 {
        ensure!(got.progress_seen, "15+ always sends progress");
    }
    let tar = &got.archives["base.tar"].1;
    ensure!(tar.len() % 512 == 0 && tar[tar.len() - 1024..].iter().all(|&b| b == 0), "base.tar is not a complete tar stream");

    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    std::fs::create_dir(&data)?;
    tar::Archive::new(&tar[..]).unpack(&data).context("extracting base.tar")?;
    std::fs::write(data.join("backup_manifest"), &got.manifest)?;
    let label = std::fs::read_to_string(data.join("backup_label"))?;
    ensure!(label.contains(&format!("START WAL LOCATION: {start} ")), "backup_label: {label}");
    ensure!(label.contains("LABEL: barman_e2e"), "backup_label: {label}");

    let manifest: String = String::from_utf8(got.manifest.clone())?;
    ensure!(manifest.contains("\"Checksum-Algorithm\": \"SHA256\""), "manifest without SHA256 checksums");
    pg.command("pg_verifybackup").arg(&data).run().context("pg_verifybackup on the extracted backup")?;

    // PostgreSQL starts from it (crash recovery from backup_label with the included WAL).
    let restored = Cluster::start_on_data_dir(ClusterOptions::new(major), &data)?;
    ensure!(restored.sql("SELECT count(*), sum(id) FROM t")? == "20000|200010000", "restored data differs");
    Ok(())
});

pg_test!(base_backup_with_a_tablespace, |major| {
    let pg = Cluster::start(ClusterOptions::new(major))?;
    let location = pg.root_dir().join("ts1");
    std::fs::create_dir(&location)?;
    if let Some(user) = pg.server_user() {
        std::os::unix::fs::chown(&location, Some(user.uid), Some(user.gid))?;
    }
    pg.sql(&format!("CREATE TABLESPACE ts1 LOCATION '{}'", location.display()))?;
    pg.sql("CREATE TABLE in_ts TABLESPACE ts1 AS SELECT g FROM generate_series(1, 1000) g")?;
    let oid = pg.sql("SELECT oid FROM pg_tablespace WHERE spcname = 'ts1'")?;
    let opts = BaseBackupOptions { fast_checkpoint: true, tablespace_map: true, wait: false, ..Default::default() };
    let got = block_on(take_backup(&pg, &opts))?;
    let names: Vec<_> = got.archives.keys().cloned().collect();
    ensure!(names == vec![format!("{oid}.tar"), "base.tar".to_owned()], "archives {names:?}");
    let (path, ts_tar) = &got.archives[&format!("{oid}.tar")];
    ensure!(path == &location.display().to_string(), "tablespace path {path}");
    let mut entries = Vec::new();
    for e in tar::Archive::new(&ts_tar[..]).entries()? {
        entries.push(e?.path()?.display().to_string());
    }
    ensure!(entries.iter().all(|p| p.starts_with(&format!("PG_{major}_"))), "tablespace tar entries {entries:?}");
    let mut base = tar::Archive::new(&got.archives["base.tar"].1[..]);
    let mut map = String::new();
    for e in base.entries()? {
        let mut e = e?;
        if e.path()?.to_str() == Some("tablespace_map") {
            std::io::Read::read_to_string(&mut e, &mut map)?;
        }
    }
    ensure!(map.trim() == format!("{oid} {}", location.display()), "tablespace_map: {map:?}");
    Ok(())
});
