//! `backup_method = rsync`: concurrent backups copied with rsync over a real sshd (logging in
//! as the PostgreSQL server user, as a Barman site's `ssh postgres@pg` does), their WAL from
//! `receive-wal`, restored and started.
//!
//! One test per major: a backup taken while rows are being written, with a tablespace and two
//! rsync jobs; then a second one with `reuse_backup = link`, which must share the inodes of the
//! unchanged files with the first; both restored (the second with its tablespace relocated) and
//! started, their tablespace relocated, with every row written before the end of the archived WAL.
//!
//! `backup_method = local-rsync` (Barman on the database host: rsync reads the cluster's
//! directories directly, no sshd): `check` without `ssh`, two backups (the second linked to
//! the first), the second restored and started; and the refusal of an `ssh_command`.

use std::os::unix::fs::MetadataExt as _;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{ensure, Context as _};
use barman_tests::{pg_test, wait_for, BarmanSite, Cluster, ClusterOptions, Sshd};

fn backup_info(site: &BarmanSite, id: &str) -> anyhow::Result<String> {
    Ok(std::fs::read_to_string(site.server_dir().join(format!("meta/{id}-backup.info")))?)
}

fn field<'a>(info: &'a str, key: &str) -> Option<&'a str> {
    info.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
}

/// Restores `id` into a new cluster, its tablespace relocated beside it, starts it once
/// recovery replayed all the archived WAL, and returns it.
fn restore(site: &BarmanSite, major: u32, id: &str) -> anyhow::Result<Cluster> {
    let restored = Cluster::reserve(ClusterOptions::new(major))?;
    let dest = restored.data_dir();
    let tbs = format!("tbs:{}", restored.root_dir().join("tbs-restored").display());
    let r = site.run(&["recover", "pg", id, dest.to_str().context("utf-8")?, "--tablespace", &tbs])?;
    ensure!(r.code == 0, "{r}");
    if let Some(user) = restored.server_user() {
        let owner = format!("{}:{}", user.uid, user.gid);
        let ok = std::process::Command::new("chown").arg("-R").arg(owner).arg(restored.root_dir().join("tbs-restored")).status()?.success();
        ensure!(ok, "chown of the restored tablespace");
    }
    ensure!(!dest.join("tablespace_map").exists() && dest.join("backup_label").exists(), "backup_label, no tablespace_map");
    restored.start_existing()?;
    wait_for("the restored cluster to finish recovery", || Ok(restored.sql("SELECT pg_is_in_recovery()")? == "f"))?;
    Ok(restored)
}

pg_test!(rsync_backup_under_writes_and_reuse_link, |major| {
    let pg = Cluster::start(ClusterOptions::new(major))?;
    let sshd = Sshd::start()?;
    let ssh = format!("ssh_command = {}", sshd.ssh_command());
    let site = BarmanSite::new(&pg, &["backup_method = rsync", &ssh, "parallel_jobs = 2", "reuse_backup = link", "immediate_checkpoint = true"])?;
    let r = site.run(&["receive-wal", "--create-slot", "pg"])?;
    ensure!(r.code == 0, "{r}");
    let _receiver = site.spawn(&["receive-wal", "pg"])?;
    // A first WAL file for the archive (the checks `backup` runs want one): what is written
    // below closes it.
    pg.switch_wal()?;

    let tbs = pg.create_tablespace("tbs")?;
    pg.sql("CREATE TABLE t (id serial PRIMARY KEY, v text) TABLESPACE tbs; CREATE TABLE u (id serial PRIMARY KEY, v text)")?;
    pg.sql("INSERT INTO u (v) SELECT repeat('x', 100) FROM generate_series(1, 5000)")?;
    wait_for("barman check to pass", || Ok(site.run(&["archive-wal", "pg"])?.code == 0 && site.run(&["check", "pg"])?.code == 0))?;
    let r = site.run(&["check", "pg"])?;
    ensure!(r.stdout.contains("\tssh: OK") && !r.stdout.contains("unsupported options"), "{r}");

    // The first backup while rows keep arriving in both tablespaces.
    let writing = AtomicBool::new(true);
    let first = std::thread::scope(|s| {
        let writer = s.spawn(|| -> anyhow::Result<u32> {
            let mut batches = 0;
            while writing.load(Ordering::Relaxed) || batches < 3 {
                pg.sql("INSERT INTO t (v) SELECT md5(g::text) FROM generate_series(1, 200) g; INSERT INTO u (v) VALUES ('w')")?;
                batches += 1;
            }
            Ok(batches)
        });
        let r = site.run(&["backup", "--wait", "--wait-timeout", "60", "pg"]);
        writing.store(false, Ordering::Relaxed);
        let batches = writer.join().expect("the writer does not panic")?;
        ensure!(batches >= 3, "rows were written during the backup");
        r
    })?;
    ensure!(first.code == 0, "{first}");
    for line in [
        "Starting backup using rsync-concurrent method for server pg in ",
        "Starting backup copy via rsync/SSH for ",
        " (2 jobs)",
        "Asking PostgreSQL server to finalize the backup.",
        "Backup size: ",
        "Backup completed",
    ] {
        ensure!(first.stdout.contains(line), "{line:?} in\n{first}");
    }
    let warning = "No backup strategy set for server 'pg' (using default 'concurrent_backup').";
    ensure!(first.stdout.contains(warning) || first.stderr.contains(warning), "{first}");
    let ids = site.backup_ids()?;
    ensure!(ids.len() == 1, "{ids:?}");
    let info = backup_info(&site, &ids[0])?;
    ensure!(field(&info, "status") == Some("DONE") && field(&info, "mode") == Some("rsync-concurrent"), "{info}");
    ensure!(field(&info, "backup_label").is_some_and(|l| l.contains("LABEL: Barman backup pg ")), "{info}");
    ensure!(field(&info, "copy_stats").is_some_and(|c| c.contains("'number_of_workers': 2") && c.contains("'copy_time': ")), "{info}");
    let oid = pg.sql("SELECT oid FROM pg_tablespace WHERE spcname = 'tbs'")?;
    ensure!(info.contains(&format!("tablespaces=[('tbs', {oid}, '{}')]", tbs.display())), "{info}");

    // Barman's layout: data/ without the WAL, the links or what PostgreSQL excludes; the
    // tablespace's PG_<major>_* directory beside it.
    let b1 = site.server_dir().join("base").join(&ids[0]);
    let data = b1.join("data");
    ensure!(data.join("backup_label").exists() && data.join("global/pg_control").exists() && data.join("PG_VERSION").exists());
    // pg_backup_stop's tablespace map is kept in the backup (recover leaves it out).
    let map = std::fs::read_to_string(data.join("tablespace_map")).context("data/tablespace_map")?;
    ensure!(map.starts_with(&format!("{oid} ")), "tablespace_map names the tablespace: {map:?}");
    ensure!(!data.join("postmaster.pid").exists() && !data.join("postmaster.opts").exists());
    for empty in ["pg_wal", "pg_tblspc", "pg_replslot"] {
        ensure!(std::fs::read_dir(data.join(empty))?.next().is_none(), "{empty} is empty");
    }
    let ts_dirs: Vec<String> = std::fs::read_dir(b1.join(&oid))?.filter_map(|e| e.ok()?.file_name().into_string().ok()).collect();
    ensure!(ts_dirs.len() == 1 && ts_dirs[0].starts_with(&format!("PG_{major}_")), "{ts_dirs:?}");

    // The second backup, linked to the first for what did not change.
    pg.sql("INSERT INTO t (v) VALUES ('after the first backup')")?;
    let second = site.run(&["backup", "--wait", "--wait-timeout", "60", "-j", "3", "pg"])?;
    ensure!(second.code == 0, "{second}");
    ensure!(second.stdout.contains(" (3 jobs)") && second.stdout.contains("deduplication ratio)."), "{second}");
    let ids = site.backup_ids()?;
    ensure!(ids.len() == 2, "{ids:?}");
    let info2 = backup_info(&site, &ids[1])?;
    let size: u64 = field(&info2, "size").context("size")?.parse()?;
    let dedup: u64 = field(&info2, "deduplicated_size").context("deduplicated_size")?.parse()?;
    ensure!(field(&info2, "status") == Some("DONE") && dedup < size, "{info2}");
    let b2 = site.server_dir().join("base").join(&ids[1]);
    let inode = |p: &Path| -> anyhow::Result<u64> { Ok(std::fs::metadata(p)?.ino()) };
    ensure!(inode(&data.join("PG_VERSION"))? == inode(&b2.join("data/PG_VERSION"))?, "PG_VERSION is shared");
    ensure!(inode(&data.join("backup_label"))? != inode(&b2.join("data/backup_label"))?, "each backup has its own label");
    let r = site.run(&["show-backup", "pg", &ids[1]])?;
    ensure!(r.code == 0 && r.stdout.contains("Backup Method        : rsync-concurrent") && r.stdout.contains("Resources saved"), "{r}");

    // `--reuse-backup off` copies everything again. Its `--wait` also brings the WAL of the
    // last row into the archive.
    pg.sql("INSERT INTO t (v) VALUES ('last')")?;
    let third = site.run(&["backup", "--wait", "--wait-timeout", "60", "--reuse-backup", "off", "pg"])?;
    ensure!(third.code == 0 && !third.stdout.contains("deduplication ratio"), "{third}");
    let ids = site.backup_ids()?;
    let b3 = site.server_dir().join("base").join(&ids[2]);
    ensure!(inode(&b2.join("data/PG_VERSION"))? != inode(&b3.join("data/PG_VERSION"))?, "nothing shared without reuse");

    let expected_t = pg.sql("SELECT count(*) FROM t")?;
    let expected_u = pg.sql("SELECT count(*) FROM u")?;

    // Both rsync backups restore, replay to the end of the archive and hold every row.
    for id in &ids[..2] {
        let restored = restore(&site, major, id)?;
        ensure!(restored.sql("SELECT count(*) FROM t")? == expected_t, "rows of t from {id}");
        ensure!(restored.sql("SELECT count(*) FROM u")? == expected_u, "rows of u from {id}");
        ensure!(restored.sql("SELECT v FROM t ORDER BY id DESC LIMIT 1")? == "last");
        let location = restored.sql("SELECT pg_tablespace_location(oid) FROM pg_tablespace WHERE spcname = 'tbs'")?;
        ensure!(location == restored.root_dir().join("tbs-restored").display().to_string(), "{location}");
    }
    Ok(())
});

/// Barman's message when `local-rsync` is given an `ssh_command` (the server is disabled).
const LOCAL_WITH_SSH: &str = "Local copy requires ssh_command in barman configuration to be empty for server pg";

pg_test!(local_rsync_backup_restores, |major| {
    let pg = Cluster::start(ClusterOptions::new(major))?;

    // An ssh_command disables the server, as Barman's local mode does: check says why and no
    // backup starts.
    let refused = BarmanSite::new(&pg, &["backup_method = local-rsync", "ssh_command = ssh postgres@localhost"])?;
    let r = refused.run(&["check", "pg"])?;
    ensure!(r.code != 0 && r.stdout.contains("\tconfiguration: FAILED") && r.stdout.contains(LOCAL_WITH_SSH), "{r}");
    ensure!(!r.stdout.contains("local PGDATA") && !r.stdout.contains("\tssh"), "{r}");
    let r = refused.run(&["backup", "pg"])?;
    ensure!(r.code != 0 && r.stderr.contains(LOCAL_WITH_SSH), "{r}");
    ensure!(refused.backup_ids().map_or(true, |ids| ids.is_empty()), "no backup was started");

    let site = BarmanSite::new(
        &pg,
        &["backup_method = local-rsync", "backup_options = concurrent_backup", "reuse_backup = link", "immediate_checkpoint = true"],
    )?;
    let r = site.run(&["receive-wal", "--create-slot", "pg"])?;
    ensure!(r.code == 0, "{r}");
    let _receiver = site.spawn(&["receive-wal", "pg"])?;
    pg.switch_wal()?;
    pg.create_tablespace("tbs")?;
    pg.sql("CREATE TABLE t (id serial PRIMARY KEY, v text) TABLESPACE tbs; INSERT INTO t (v) SELECT md5(g::text) FROM generate_series(1, 1000) g")?;
    wait_for("barman check to pass", || Ok(site.run(&["archive-wal", "pg"])?.code == 0 && site.run(&["check", "pg"])?.code == 0))?;
    let r = site.run(&["check", "pg"])?;
    ensure!(r.stdout.contains("\tlocal PGDATA: OK") && !r.stdout.contains("\tssh") && !r.stdout.contains("unsupported options"), "{r}");

    let first = site.run(&["backup", "--wait", "--wait-timeout", "60", "pg"])?;
    ensure!(first.code == 0, "{first}");
    for line in ["Starting backup using rsync-concurrent method for server pg in ", "Starting backup copy via local rsync for ", "Backup completed"] {
        ensure!(first.stdout.contains(line), "{line:?} in\n{first}");
    }
    let ids = site.backup_ids()?;
    ensure!(ids.len() == 1, "{ids:?}");
    let info = backup_info(&site, &ids[0])?;
    ensure!(field(&info, "status") == Some("DONE") && field(&info, "mode") == Some("rsync-concurrent"), "{info}");

    // The second backup shares the unchanged files with the first; its --wait brings the WAL
    // of the last rows into the archive.
    pg.sql("INSERT INTO t (v) VALUES ('before the second backup')")?;
    let second = site.run(&["backup", "--wait", "--wait-timeout", "60", "pg"])?;
    ensure!(second.code == 0 && second.stdout.contains("deduplication ratio)."), "{second}");
    let ids = site.backup_ids()?;
    ensure!(ids.len() == 2, "{ids:?}");
    let base = site.server_dir().join("base");
    let inode = |p: &Path| -> anyhow::Result<u64> { Ok(std::fs::metadata(p)?.ino()) };
    ensure!(inode(&base.join(&ids[0]).join("data/PG_VERSION"))? == inode(&base.join(&ids[1]).join("data/PG_VERSION"))?, "PG_VERSION is shared");
    ensure!(field(&backup_info(&site, &ids[1])?, "status") == Some("DONE"));

    let expected = pg.sql("SELECT count(*) FROM t")?;
    let restored = restore(&site, major, &ids[1])?;
    ensure!(restored.sql("SELECT count(*) FROM t")? == expected, "rows of t");
    ensure!(restored.sql("SELECT v FROM t ORDER BY id DESC LIMIT 1")? == "before the second backup");
    Ok(())
});
