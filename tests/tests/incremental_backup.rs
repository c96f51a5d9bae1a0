//! `backup --incremental` (PostgreSQL 17+, `summarize_wal = on`) through the `barman` command
//! line: a full backup, an incremental on it and a second incremental on that one (a chain),
//! shown by list-backups and show-backup as Barman shows them, each passing verify-backup; the
//! chain then combined by the server's own pg_combinebackup, started and queried. And Barman's
//! refusals: a server before 17, `summarize_wal = off`, a parent taken without WAL summaries,
//! `backup_method = rsync`, an unknown parent.

use std::path::{Path, PathBuf};

use anyhow::{ensure, Context as _};
use barman_tests::{pg_test, run_pg_test, BarmanSite, Cluster, ClusterOptions, RunCommand};

use super::backup::streaming_site;

/// `backup --wait [args…] pg`, which must end DONE; returns the backup's ID.
fn backup(site: &BarmanSite, args: &[&str]) -> anyhow::Result<String> {
    crate::backup_compression::backup_with(site, args)
}

/// The backup.info files of the catalog (none before the first backup made `meta/`).
fn backup_infos(site: &BarmanSite) -> anyhow::Result<Vec<String>> {
    let mut names: Vec<String> = match std::fs::read_dir(site.server_dir().join("meta")) {
        Ok(rd) => rd.filter_map(|e| e.ok()?.file_name().into_string().ok()).filter(|n| n.ends_with("-backup.info")).collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e.into()),
    };
    names.sort();
    Ok(names)
}

/// A `backup` that Barman refuses before it starts: exit 1, `message` reported, no new backup.
fn refused(site: &BarmanSite, args: &[&str], message: &str) -> anyhow::Result<()> {
    let before = backup_infos(site)?;
    let r = site.run(args)?;
    ensure!(r.code != 0 && r.stderr.contains(message), "expected {message:?}: {r}");
    ensure!(backup_infos(site)? == before, "a refused backup leaves no backup behind: {r}");
    Ok(())
}

fn backup_info(site: &BarmanSite, id: &str) -> anyhow::Result<String> {
    Ok(std::fs::read_to_string(site.server_dir().join(format!("meta/{id}-backup.info")))?)
}

fn field<'a>(info: &'a str, key: &str) -> Option<&'a str> {
    info.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
}

/// A show-backup row, as Barman formats it (`    {:<21}: {}`).
fn row(name: &str, value: &str) -> String {
    format!("    {name:<21}: {value}")
}

/// Every file under `dir` whose name starts with `INCREMENTAL.`.
fn incremental_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d)? {
            let entry = entry?;
            let path = entry.path();
            if entry.file_type()?.is_dir() {
                stack.push(path);
            } else if entry.file_name().to_string_lossy().starts_with("INCREMENTAL.") {
                found.push(path);
            }
        }
    }
    Ok(found)
}

/// Copies the archived WAL segments `begin`…`end` (names on one timeline) from the catalog's
/// `wals/` into `pg_wal`.
fn copy_wal(site: &BarmanSite, begin: &str, end: &str, pg_wal: &Path) -> anyhow::Result<usize> {
    let mut copied = 0;
    for dir in std::fs::read_dir(site.server_dir().join("wals"))? {
        let dir = dir?;
        if !dir.file_type()?.is_dir() {
            continue;
        }
        for file in std::fs::read_dir(dir.path())? {
            let name = file?.file_name().into_string().unwrap_or_default();
            if name.len() == 24 && name[..8] == begin[..8] && name.as_str() >= begin && name.as_str() <= end {
                std::fs::copy(dir.path().join(&name), pg_wal.join(&name))?;
                copied += 1;
            }
        }
    }
    Ok(copied)
}

/// What the restored cluster must hold: every row of both tables, in one line.
const STATE: &str = "SELECT (SELECT count(*) || ':' || md5(string_agg(id || v, ',' ORDER BY id)) FROM t), \
                     (SELECT count(*) FROM u)";

fn chain(major: u32) -> anyhow::Result<()> {
    let pg = Cluster::start(ClusterOptions::new(major).conf("summarize_wal", "on"))?;
    let (site, _receiver) = streaming_site(&pg, &["immediate_checkpoint = true"])?;
    pg.sql("CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 20000) g")?;
    let full = backup(&site, &[])?;

    // Some blocks of t change, a new table appears.
    pg.sql("UPDATE t SET v = 'changed-1' WHERE id % 1000 = 0; CREATE TABLE u AS SELECT g FROM generate_series(1, 500) g")?;
    let first = backup(&site, &["--incremental", "latest"])?;
    pg.sql("UPDATE t SET v = 'changed-2' WHERE id % 700 = 0; DELETE FROM t WHERE id > 19900; INSERT INTO u SELECT 1000")?;
    let expected = pg.sql(STATE)?;
    // A chain: the parent is itself incremental (the shortcut's twin, by ID).
    let second = backup(&site, &["--incremental", &first])?;

    // backup.info: parents and children, as Barman records them.
    let (f, i1, i2) = (backup_info(&site, &full)?, backup_info(&site, &first)?, backup_info(&site, &second)?);
    ensure!(field(&f, "parent_backup_id") == Some("None") && field(&f, "children_backup_ids") == Some(first.as_str()), "{f}");
    ensure!(field(&i1, "parent_backup_id") == Some(full.as_str()) && field(&i1, "children_backup_ids") == Some(second.as_str()), "{i1}");
    ensure!(field(&i2, "parent_backup_id") == Some(first.as_str()) && field(&i2, "children_backup_ids") == Some("None"), "{i2}");
    for info in [&f, &i1, &i2] {
        ensure!(field(info, "summarize_wal") == Some("on") && field(info, "status") == Some("DONE"), "{info}");
    }
    let data = |id: &str| site.server_dir().join("base").join(id).join("data");
    ensure!(incremental_files(&data(&full))?.is_empty(), "a full backup has no incremental files");
    for id in [&first, &second] {
        ensure!(!incremental_files(&data(id))?.is_empty(), "{id} holds INCREMENTAL.* files");
        let label = std::fs::read_to_string(data(id).join("backup_label"))?;
        ensure!(label.contains("INCREMENTAL FROM LSN: ") && label.contains("INCREMENTAL FROM TLI: 1"), "{label}");
    }
    ensure!(
        field(&i1, "size").and_then(|s| s.parse::<u64>().ok()) < field(&f, "size").and_then(|s| s.parse::<u64>().ok()),
        "the incremental backup is smaller than the full one"
    );

    // list-backups: `I` for incremental, `F` for full.
    let r = site.run(&["list-backups", "pg"])?;
    ensure!(r.code == 0, "{r}");
    for (id, kind) in [(&second, "I"), (&first, "I"), (&full, "F")] {
        ensure!(r.stdout.lines().any(|l| l.starts_with(&format!("pg {id} - {kind} - "))), "{id} as {kind}: {r}");
    }

    // show-backup: type, root, parent, chain size and children.
    let show = |id: &str| -> anyhow::Result<String> {
        let r = site.run(&["show-backup", "pg", id])?;
        ensure!(r.code == 0, "{r}");
        Ok(r.stdout)
    };
    let out = show(&full)?;
    ensure!(out.contains(&row("Backup Type", "full")) && out.contains(&row("Children Backup(s)", &first)), "{out}");
    ensure!(!out.contains("Parent Backup"), "{out}");
    let out = show(&first)?;
    for want in [
        row("Backup Type", "incremental"),
        row("Root Backup", &full),
        row("Parent Backup", &full),
        row("Backup chain size", "2"),
        row("Children Backup(s)", &second),
    ] {
        ensure!(out.contains(&want), "{want:?} in {out}");
    }
    let out = show(&second)?;
    for want in [row("Backup Type", "incremental"), row("Root Backup", &full), row("Parent Backup", &first), row("Backup chain size", "3")] {
        ensure!(out.contains(&want), "{want:?} in {out}");
    }
    ensure!(!out.contains("Children Backup(s)"), "{out}");
    let json = site.run(&["-f", "json", "show-backup", "pg", &first])?.json()?;
    let catalog = &json["pg"]["catalog_information"];
    ensure!(json["pg"]["backup_type"] == "incremental", "{json}");
    ensure!(catalog["parent_backup_id"] == full.as_str() && catalog["children_backup_ids"] == serde_json::json!([second]), "{json}");

    for id in [&full, &first, &second] {
        let r = site.run(&["verify-backup", "pg", id])?;
        ensure!(r.code == 0 && !r.stderr.contains("ERROR"), "verify-backup {id}: {r}");
    }

    // The server's own pg_combinebackup rebuilds a full backup from the chain, which starts
    // with the WAL of the last backup and holds what was written before it.
    let work = tempfile::tempdir()?;
    let combined = work.path().join("combined");
    pg.command("pg_combinebackup")
        .arg(data(&full))
        .arg(data(&first))
        .arg(data(&second))
        .arg("-o")
        .arg(&combined)
        .run()
        .context("pg_combinebackup on the chain")?;
    ensure!(incremental_files(&combined)?.is_empty(), "the combined backup is complete");
    let (begin, end) = (field(&i2, "begin_wal").context("begin_wal")?, field(&i2, "end_wal").context("end_wal")?);
    let copied = copy_wal(&site, begin, end, &combined.join("pg_wal"))?;
    ensure!(copied >= 1, "no archived WAL from {begin} to {end}");
    let restored = Cluster::start_on_data_dir(ClusterOptions::new(major), &combined)?;
    let got = restored.sql(STATE)?;
    ensure!(got == expected, "restored {got}, expected {expected}");
    ensure!(restored.sql("SELECT v FROM t WHERE id = 1400")? == "changed-2", "the second incremental's change");
    ensure!(restored.sql("SELECT v FROM t WHERE id = 1000")? == "changed-1", "the first incremental's change");
    Ok(())
}

/// The chain, on the majors that have incremental backups.
mod incremental_backup_chain {
    #[test]
    fn pg17() {
        super::run_pg_test(17, super::chain);
    }

    #[test]
    fn pg18() {
        super::run_pg_test(18, super::chain);
    }
}

pg_test!(incremental_backup_refusals, |major| {
    let pg = Cluster::start(ClusterOptions::new(major))?;
    let (site, _receiver) = streaming_site(&pg, &["immediate_checkpoint = true"])?;
    refused(&site, &["backup", "--incremental", "latest", "pg"], "Unknown backup 'latest' for server 'pg'")?;
    let full = backup(&site, &[])?;
    refused(&site, &["backup", "--incremental", "nope", "pg"], "Unknown backup 'nope' for server 'pg'")?;
    if major < 17 {
        return refused(
            &site,
            &["backup", "--incremental", "latest", "pg"],
            "ERROR: failed to start backup: Postgres version 17 or greater is required for incremental backups using the Postgres backup method",
        );
    }
    refused(
        &site,
        &["backup", "--incremental", "latest", "pg"],
        "ERROR: failed to start backup: 'summarize_wal' option has to be enabled in the Postgres server to perform an \
         incremental backup using the Postgres backup method",
    )?;
    // WAL summaries on now, but not when the parent was taken.
    pg.set_conf("summarize_wal", "on")?;
    pg.reload()?;
    refused(
        &site,
        &["backup", "--incremental", "latest-full", "pg"],
        &format!(
            "ERROR: failed to start backup: Backup ID {full} is not eligible as a parent for an incremental backup because \
             WAL summaries were not enabled when that backup was taken."
        ),
    )?;
    // The same catalog with backup_method = rsync (appended lines win).
    let text = std::fs::read_to_string(&site.config)?;
    std::fs::write(&site.config, format!("{text}backup_method = rsync\nssh_command = ssh -o BatchMode=yes postgres@127.0.0.1\n"))?;
    refused(
        &site,
        &["backup", "--incremental", &full, "pg"],
        "ERROR: failed to start backup: Backup using the `--incremental` flag is available only for 'backup_method = postgres'. \
         Check Barman's documentation for more help on this topic.",
    )?;
    Ok(())
});
