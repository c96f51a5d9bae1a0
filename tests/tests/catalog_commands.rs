//! The catalog-reading commands of the real `barman` binary on a catalog built from a real
//! server: `list-backups` (console, `--minimal`, JSON), `show-backup` (IDs, names and
//! shortcuts, unknown IDs), `list-files` (every target names files that exist) and
//! `rebuild-xlogdb` (the same index rebuilt from `wals/`), before and after the backup's WAL
//! is archived and `check-backup` completes it (WAITING_FOR_WALS, then DONE).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{ensure, Context as _};
use barman_core::backup::streaming::{take_streaming_backup, StreamingBackupRequest};
use barman_core::catalog::{xlogdb, BackupInfo, BackupStatus, LockKind, ServerCatalog};
use barman_tests::{pg_test, BarmanSite, Cluster, ClusterOptions, BARMAN_USER, STREAMING_USER};

fn block_on<T>(f: impl std::future::Future<Output = T>) -> anyhow::Result<T> {
    Ok(tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(f))
}

/// Every regular file under `dir`, recursively.
fn files_under(dir: &Path, out: &mut BTreeSet<PathBuf>) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        if kind.is_dir() {
            files_under(&entry.path(), out)?;
        } else {
            out.insert(entry.path());
        }
    }
    Ok(())
}

fn lines(text: &str) -> Vec<&str> {
    text.lines().collect()
}

pg_test!(catalog_commands_on_a_real_backup, |major| {
    // Keep the backup's WAL in pg_wal until it is copied to the archive below.
    let pg = Cluster::start(ClusterOptions::new(major).conf("wal_keep_size", "256MB"))?;
    pg.sql("CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 1000) g")?;
    let site = BarmanSite::new(&pg, &[])?;
    let catalog = ServerCatalog::new("pg", site.server_dir(), site.home.path());
    let req = StreamingBackupRequest {
        server: "pg".into(),
        conninfo: format!("{} passfile=/nonexistent", pg.conninfo(BARMAN_USER)),
        streaming_conninfo: format!("{} passfile=/nonexistent", pg.conninfo(STREAMING_USER)),
        application_name: "barman_streaming_backup".into(),
        catalog: catalog.clone(),
        name: Some("nightly".into()),
        immediate_checkpoint: true,
        bandwidth_limit: None,
    };
    let info = block_on(take_streaming_backup(&req, &mut |_| {}))??;
    let id = info.backup_id.to_string();
    ensure!(info.status == BackupStatus::WaitingForWals, "{:?}", info.status);

    // Before its WAL is archived: listed as WAITING_FOR_WALS; xlog.db is created on first read.
    let run = site.run(&["list-backups", "pg"])?;
    ensure!(run.code == 0, "{run}");
    let line = format!("pg {id} 'nightly' - F - ");
    ensure!(lines(&run.stdout).len() == 1 && run.stdout.starts_with(&line), "{run}");
    ensure!(run.stdout.trim_end().ends_with(" - WAL Size: 0 B - WAITING_FOR_WALS"), "{run}");
    ensure!(catalog.xlogdb_path().is_file(), "xlog.db rebuilt on first read");

    // Archive begin..end through the streaming directory, as the WAL receiver would.
    pg.switch_wal()?;
    let (begin, end) = (info.begin_wal.context("begin_wal")?, info.end_wal.context("end_wal")?);
    let mut segment = begin;
    loop {
        let name = segment.to_string();
        std::fs::copy(pg.data_dir().join("pg_wal").join(&name), catalog.streaming_directory().join(&name))
            .with_context(|| format!("copying {name}"))?;
        segment = segment.next(info.xlog_segment_size.context("segment size")?).context("next segment")?;
        if segment.to_string() > end.to_string() {
            break;
        }
    }
    // The segment being written, which archive-wal leaves in place (without it, the newest
    // complete one would be held back instead).
    std::fs::write(catalog.streaming_directory().join(format!("{segment}.partial")), [])?;
    let run = site.run(&["archive-wal", "pg"])?;
    ensure!(run.code == 0, "{run}");
    ensure!(BackupInfo::read(&catalog, info.backup_id)?.status == BackupStatus::WaitingForWals, "archive-wal alone changes no status");
    // check-backup (which cron runs on waiting backups) completes it.
    let run = site.run(&["check-backup", "pg", "latest"])?;
    ensure!(run.code == 0 && run.stdout.is_empty(), "{run}");
    let after = BackupInfo::read(&catalog, info.backup_id)?;
    ensure!(after.status == BackupStatus::Done, "check-backup made it DONE: {:?}", after.status);
    let entries = {
        let lock = catalog.lock(LockKind::ServerXlogDb)?;
        xlogdb::read(&catalog.xlogdb_path(), &lock)?
    };
    let wal_bytes: u64 = entries.iter().filter(|e| e.name.to_string() <= end.to_string()).map(|e| e.size).sum();

    // list-backups: console, minimal, JSON.
    let run = site.run(&["list-backups", "all"])?;
    ensure!(run.code == 0 && run.stdout.starts_with(&line), "{run}");
    ensure!(!run.stdout.contains("WAITING_FOR_WALS") && run.stdout.contains(" - Size: "), "{run}");
    let run = site.run(&["list-backups", "--minimal", "pg"])?;
    ensure!(run.stdout == format!("{id}\n"), "{run}");
    let json = site.run(&["-f", "json", "list-backups", "pg"])?.json()?;
    let item = &json["pg"][0];
    ensure!(item["backup_id"] == id.as_str() && item["backup_name"] == "nightly" && item["status"] == "DONE", "{json}");
    ensure!(item["retention_status"] == "-" && item["backup_type"] == "full", "{json}");
    ensure!(item["size_bytes"] == info.size.unwrap_or(0) + wal_bytes, "{json} (WAL {wal_bytes})");

    // show-backup by ID, name and shortcut: the same backup, as Barman lays it out.
    let by_id = site.run(&["show-backup", "pg", &id])?;
    ensure!(by_id.code == 0, "{by_id}");
    for selector in ["nightly", "latest", "last", "oldest", "first"] {
        let run = site.run(&["show-backup", "pg", selector])?;
        ensure!(run.stdout == by_id.stdout, "{selector}: {run}");
    }
    let out = lines(&by_id.stdout);
    for expected in [
        format!("Backup {id}:"),
        "  Backup Name            : nightly".to_owned(),
        "  Server Name            : pg".to_owned(),
        format!("  System Id              : {}", pg.system_identifier()?),
        "  Status                 : DONE".to_owned(),
        format!("    Begin WAL            : {begin}"),
        format!("    End WAL              : {end}"),
        format!("    Begin LSN            : {}", info.begin_xlog.context("begin_xlog")?),
        "    Backup Method        : postgres".to_owned(),
        "    Retention Policy     : not enforced".to_owned(),
        "    Previous Backup      : - (this is the oldest base backup)".to_owned(),
        "    Next Backup          : - (this is the latest base backup)".to_owned(),
    ] {
        ensure!(out.contains(&expected.as_str()), "missing {expected:?} in\n{by_id}");
    }
    let json = site.run(&["-f", "json", "show-backup", "pg", "latest"])?.json()?;
    ensure!(json["pg"]["base_backup_information"]["wal_size_bytes"] == wal_bytes, "{json}");
    ensure!(json["pg"]["catalog_information"]["retention_policy"] == "not enforced", "{json}");
    let run = site.run(&["show-backup", "pg", "19990101T000000"])?;
    ensure!(run.code == 1 && run.stderr.contains("ERROR: Unknown backup '19990101T000000' for server 'pg'"), "{run}");
    let run = site.run(&["show-backup", "pg", "last-failed"])?;
    ensure!(run.code == 1 && run.stderr.contains("Unknown backup 'last-failed'"), "{run}");

    // list-files: data is exactly the backup directory's files; WAL paths exist.
    let run = site.run(&["list-files", "--target", "data", "pg", &id])?;
    ensure!(run.code == 0, "{run}");
    let listed: BTreeSet<PathBuf> = run.stdout.lines().map(PathBuf::from).collect();
    let mut on_disk = BTreeSet::new();
    files_under(&catalog.backup_dir(info.backup_id), &mut on_disk)?;
    ensure!(listed == on_disk && listed.len() == run.stdout.lines().count(), "{run}");
    ensure!(listed.contains(&catalog.backup_data_dir(info.backup_id).join("PG_VERSION")), "{run}");
    let standalone = site.run(&["list-files", "pg", &id])?; // default target: standalone
    let wal: Vec<&str> = standalone.stdout.lines().skip(listed.len()).collect();
    ensure!(!wal.is_empty() && wal.iter().all(|p| Path::new(p).is_file()), "{standalone}");
    ensure!(wal.first().is_some_and(|p| p.ends_with(&begin.to_string())), "{standalone}");
    let full = site.run(&["list-files", "--target", "full", "pg", &id])?;
    let wal_target = site.run(&["list-files", "--target", "wal", "pg", &id])?;
    ensure!(full.stdout == format!("{}{}", run.stdout, wal_target.stdout), "{full}");
    ensure!(wal_target.stdout.lines().all(|p| Path::new(p).is_file()), "{wal_target}");

    // rebuild-xlogdb: the same entries, sorted by name, counted as Barman counts them.
    let run = site.run(&["rebuild-xlogdb", "pg"])?;
    ensure!(run.code == 0, "{run}");
    let segments = entries.iter().filter(|e| matches!(e.name, barman_core::wal::WalFileName::Segment(_))).count();
    ensure!(
        run.stdout
            == format!(
                "Rebuilding xlogdb for server pg\nDone rebuilding xlogdb for server pg (history: 0, backup_labels: 0, wal_file: {segments})\n"
            ),
        "{run}"
    );
    let rebuilt = {
        let lock = catalog.lock(LockKind::ServerXlogDb)?;
        xlogdb::read(&catalog.xlogdb_path(), &lock)?
    };
    let mut before: Vec<(String, u64)> = entries.iter().map(|e| (e.name.to_string(), e.size)).collect();
    before.sort();
    let after: Vec<(String, u64)> = rebuilt.iter().map(|e| (e.name.to_string(), e.size)).collect();
    ensure!(before == after, "{before:?} != {after:?}");
    Ok(())
});
