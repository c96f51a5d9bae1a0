//! `backup_compression` end to end through the `barman` command line: compressed tar backups
//! (client side with gzip, lz4 and zstd; server side on PostgreSQL 15+), checked on disk the
//! way Barman lays them out (`data/base.tar.gz|.lz4|.zst`, `data/<oid>.tar.*`,
//! `data/backup_manifest`, backup.info `compression`), then restored with `recover`, started
//! and queried.

use std::path::{Path, PathBuf};

use anyhow::{ensure, Context as _};
use barman_tests::{pg_test, wait_for, BarmanSite, BackgroundBarman, Cluster, ClusterOptions};

/// A site streaming WAL from `pg` (slot, receiver running, first WAL archived), as a user sets
/// one up before the first backup.
fn streaming_site(pg: &Cluster, extra: &[&str]) -> anyhow::Result<(BarmanSite, BackgroundBarman)> {
    let site = BarmanSite::new(pg, extra)?;
    let r = site.run(&["receive-wal", "--create-slot", "pg"])?;
    ensure!(r.code == 0, "{r}");
    let receiver = site.spawn(&["receive-wal", "pg"])?;
    let r = site.run(&["switch-wal", "--force", "--archive", "--archive-timeout", "60", "pg"])?;
    ensure!(r.code == 0, "{r}");
    Ok((site, receiver))
}

/// Replaces the server's `backup_compression*` lines with `lines` ([pg] is the file's last
/// section, so appended lines belong to it).
fn set_backup_compression(site: &BarmanSite, lines: &[&str]) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&site.config)?;
    let mut kept: Vec<&str> = text.lines().filter(|l| !l.starts_with("backup_compression")).collect();
    kept.extend_from_slice(lines);
    std::fs::write(&site.config, kept.join("\n") + "\n")?;
    Ok(())
}

/// `backup --wait`, which must end DONE; returns the backup's ID.
fn backup(site: &BarmanSite) -> anyhow::Result<String> {
    backup_with(site, &[])
}

/// `backup --wait [args…] pg`, which must end DONE; returns the backup's ID.
pub(crate) fn backup_with(site: &BarmanSite, args: &[&str]) -> anyhow::Result<String> {
    let mut all = vec!["backup", "--wait", "--wait-timeout", "60"];
    all.extend_from_slice(args);
    all.push("pg");
    let r = site.run(&all)?;
    ensure!(r.code == 0 && r.stdout.contains("Backup completed"), "{r}");
    ensure!(!r.stderr.contains("WAITING_FOR_WALS"), "backup --wait must end DONE: {r}");
    let dir = r
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("Starting backup using postgres method for server pg in "))
        .context("no backup directory in the output")?;
    Ok(Path::new(dir).file_name().and_then(|n| n.to_str()).context("backup ID")?.to_owned())
}

fn backup_info(site: &BarmanSite, id: &str) -> anyhow::Result<String> {
    Ok(std::fs::read_to_string(site.server_dir().join(format!("meta/{id}-backup.info")))?)
}

/// Checks `file` starts with the magic bytes of `algorithm` and returns its size.
fn assert_magic(file: &Path, algorithm: &str) -> anyhow::Result<u64> {
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let magic: &[u8] = match algorithm {
        "gzip" => b"\x1f\x8b\x08",
        "lz4" => b"\x04\x22\x4d\x18",
        "zstd" => b"\x28\xb5\x2f\xfd",
        other => anyhow::bail!("no magic for {other}"),
    };
    ensure!(bytes.starts_with(magic), "{} starts with {:02x?}, not {algorithm}'s magic", file.display(), &bytes[..bytes.len().min(8)]);
    Ok(bytes.len() as u64)
}

/// Lists `file` with GNU tar and the algorithm's own tool, as Barman's restore unpacks it
/// (`tar --use-compress-program lz4 -xf …`), when those tools are installed; returns the member
/// names.
fn list_with_system_tar(file: &Path, algorithm: &str) -> anyhow::Result<Option<Vec<String>>> {
    let program = match algorithm {
        "zstd" => "zstd",
        "lz4" => "lz4",
        _ => "gzip",
    };
    let have = |p: &str| std::process::Command::new(p).arg("--version").output().is_ok_and(|o| o.status.success());
    if !have("tar") || !have(program) {
        eprintln!("{program} or tar not installed: {} not checked with them", file.display());
        return Ok(None);
    }
    let out = std::process::Command::new("tar").arg("--use-compress-program").arg(program).arg("-tf").arg(file).output()?;
    ensure!(out.status.success(), "tar -tf {}: {}", file.display(), String::from_utf8_lossy(&out.stderr));
    Ok(Some(String::from_utf8(out.stdout)?.lines().map(str::to_owned).collect()))
}

/// `recover <id>` to the backup's consistency point, promoted; the restored cluster, started.
fn recover(site: &BarmanSite, major: u32, id: &str, extra: &[&str], before_start: impl FnOnce(&Cluster) -> anyhow::Result<()>) -> anyhow::Result<Cluster> {
    let restored = Cluster::reserve(ClusterOptions::new(major))?;
    let dest = restored.data_dir();
    let mut args = vec!["recover", "pg", id, dest.to_str().context("utf-8")?, "--target-immediate", "--target-action", "promote"];
    args.extend_from_slice(extra);
    let r = site.run(&args)?;
    ensure!(r.code == 0 && r.stdout.contains("Your PostgreSQL server has been successfully prepared for recovery!"), "{r}");
    ensure!(dest.join(format!("backup_manifest.{id}")).exists(), "the manifest is kept");
    ensure!(!dest.join("tablespace_map").exists(), "tablespace_map must not be restored");
    before_start(&restored)?;
    restored.start_existing()?;
    wait_for("the restored cluster to finish recovery", || Ok(restored.sql("SELECT pg_is_in_recovery()")? == "f"))?;
    Ok(restored)
}

pg_test!(client_compressed_backups_restore_with_each_algorithm, |major| {
    let pg = Cluster::start(ClusterOptions::new(major))?;
    let (site, _receiver) = streaming_site(&pg, &[])?;
    pg.sql("CREATE TABLE t (id int PRIMARY KEY, note text)")?;
    let mut rows = 0;
    for (algorithm, suffix, options) in [
        ("gzip", "gz", &["backup_compression_level = 1"][..]),
        ("lz4", "lz4", &[][..]),
        ("zstd", "zst", &["backup_compression_level = 5", "backup_compression_workers = 2"][..]),
    ] {
        rows += 1000;
        pg.sql(&format!("INSERT INTO t SELECT g, md5(g::text) FROM generate_series({}, {rows}) g", rows - 999))?;
        let mut lines = vec![format!("backup_compression = {algorithm}")];
        lines.extend(options.iter().map(|s| s.to_string()));
        set_backup_compression(&site, &lines.iter().map(String::as_str).collect::<Vec<_>>())?;
        let id = backup(&site)?;

        // The layout of a Barman tar backup: the archive and the manifest, nothing unpacked.
        let data = site.server_dir().join(format!("base/{id}/data"));
        let mut names: Vec<String> = std::fs::read_dir(&data)?.map(|e| Ok(e?.file_name().to_string_lossy().into_owned())).collect::<anyhow::Result<_>>()?;
        names.sort();
        ensure!(names == vec!["backup_manifest".to_owned(), format!("base.tar.{suffix}")], "{algorithm}: data/ holds {names:?}");
        let tar_size = assert_magic(&data.join(format!("base.tar.{suffix}")), algorithm)?;
        if let Some(members) = list_with_system_tar(&data.join(format!("base.tar.{suffix}")), algorithm)? {
            ensure!(members.first().map(String::as_str) == Some("backup_label"), "{algorithm}: members start {:?}", &members[..members.len().min(3)]);
            ensure!(members.iter().any(|m| m == "global/pg_control"), "{algorithm}: no global/pg_control in {members:?}");
        }
        if major >= 18 {
            // PostgreSQL 18 verifies tar-format backups (WAL is checked elsewhere: -n).
            let out = pg.command("pg_verifybackup").arg("-n").arg(&data).output()?;
            ensure!(out.status.success(), "pg_verifybackup {algorithm}: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        }
        // barman-rs verifies every compressed format natively, on every major.
        let r = site.run(&["verify-backup", "pg", &id])?;
        ensure!(r.code == 0 && r.stdout.ends_with("backup successfully verified\n"), "{algorithm}: {r}");
        let manifest_size = std::fs::metadata(data.join("backup_manifest"))?.len();
        let info = backup_info(&site, &id)?;
        ensure!(info.contains(&format!("\ncompression={algorithm}\n")), "{algorithm}: {info}");
        ensure!(info.contains("\nstatus=DONE\n"), "{info}");
        ensure!(info.contains("backup_label='START WAL LOCATION"), "backup_label read from the archive: {info}");
        ensure!(info.contains(&format!("\nsize={}\n", tar_size + manifest_size)), "size is what is on disk: {info}");

        let restored = recover(&site, major, &id, &[], |_| Ok(()))?;
        let got = restored.sql("SELECT count(*), sum(id) FROM t")?;
        ensure!(got == format!("{rows}|{}", rows * (rows + 1) / 2), "{algorithm}: restored {got}, expected {rows} rows");
    }
    Ok(())
});

pg_test!(compressed_backup_with_a_tablespace_relocated_on_recover, |major| {
    let pg = Cluster::start(ClusterOptions::new(major))?;
    let location = pg.root_dir().join("ts1");
    std::fs::create_dir(&location)?;
    if let Some(user) = pg.server_user() {
        std::os::unix::fs::chown(&location, Some(user.uid), Some(user.gid))?;
    }
    pg.sql(&format!("CREATE TABLESPACE ts1 LOCATION '{}'", location.display()))?;
    pg.sql("CREATE TABLE in_ts TABLESPACE ts1 AS SELECT g AS id FROM generate_series(1, 5000) g")?;
    pg.sql("CREATE TABLE in_base AS SELECT g AS id FROM generate_series(1, 300) g")?;
    let oid = pg.sql("SELECT oid FROM pg_tablespace WHERE spcname = 'ts1'")?;
    let (site, _receiver) = streaming_site(&pg, &["backup_compression = zstd"])?;
    let id = backup(&site)?;

    let base = site.server_dir().join(format!("base/{id}"));
    assert_magic(&base.join("data/base.tar.zst"), "zstd")?;
    assert_magic(&base.join(format!("data/{oid}.tar.zst")), "zstd")?;
    ensure!(base.join(&oid).is_dir() && std::fs::read_dir(base.join(&oid))?.next().is_none(), "base/<ID>/<oid>/ exists, empty, as Barman leaves it");
    let info = backup_info(&site, &id)?;
    ensure!(info.contains(&format!("tablespaces=[('ts1', {oid}, '{}')]", location.display())), "{info}");
    check_catalog_commands(&site, &id, &oid, &location, &info)?;

    let relocated: PathBuf = std::env::temp_dir().join(format!("barman-ts-{}-{id}", std::process::id()));
    let _cleanup = RemoveOnDrop(relocated.clone());
    let spec = format!("ts1:{}", relocated.display());
    // Barman's checks of the relocation rules, before anything is done.
    let dest = tempfile::tempdir()?;
    let dest_arg = dest.path().join("x");
    let dest_arg = dest_arg.to_str().context("utf-8")?;
    let r = site.run(&["recover", "pg", &id, dest_arg, "--tablespace", "nosuch:/tmp/x"])?;
    ensure!(
        r.code == 1 && r.stderr.contains("ERROR: Invalid tablespace name 'nosuch'\nHINT: Please use any of the following tablespaces: ts1"),
        "{r}"
    );
    let r = site.run(&["recover", "pg", &id, dest_arg, "--tablespace", "ts1"])?;
    ensure!(
        r.code == 1
            && r.stderr.contains("ERROR: Invalid tablespace relocation rule 'ts1'\nHINT: The valid syntax for a relocation rule is NAME:LOCATION"),
        "{r}"
    );
    ensure!(!dest.path().join("x").exists(), "nothing restored");
    let restored = recover(&site, major, &id, &["--tablespace", &spec], |restored| {
        if let Some(user) = restored.server_user() {
            let ok = std::process::Command::new("chown").arg("-R").arg(format!("{}:{}", user.uid, user.gid)).arg(&relocated).status()?.success();
            ensure!(ok, "chown {}", relocated.display());
        }
        Ok(())
    })?;
    let link = std::fs::read_link(restored.data_dir().join(format!("pg_tblspc/{oid}")))?;
    ensure!(link == relocated, "pg_tblspc/{oid} -> {}", link.display());
    ensure!(restored.sql("SELECT count(*) FROM in_ts")? == "5000" && restored.sql("SELECT count(*) FROM in_base")? == "300");
    ensure!(restored.sql("SELECT pg_tablespace_location(oid) FROM pg_tablespace WHERE spcname = 'ts1'")? == relocated.display().to_string());
    Ok(())
});

pg_test!(server_side_compression_and_refused_settings, |major| {
    let pg = Cluster::start(ClusterOptions::new(major))?;
    // Barman's rule: a plain result needs the server to compress.
    let (site, _receiver) = streaming_site(&pg, &["backup_compression = gzip", "backup_compression_format = plain"])?;
    let r = site.run(&["backup", "pg"])?;
    ensure!(r.code != 0 && r.stderr.contains("backup_compression_format plain is not compatible with backup_compression_location None"), "{r}");
    ensure!(!site.server_dir().join("base").exists() || std::fs::read_dir(site.server_dir().join("base"))?.next().is_none(), "no backup started");
    // `check` reports what `backup` refuses, under Barman's `configuration` check.
    let r = site.run(&["check", "pg"])?;
    ensure!(r.code != 0 && r.stdout.contains("\tconfiguration: FAILED\n\t\tbackup_compression_format plain is not compatible with backup_compression_location None\n"), "{r}");

    pg.sql("CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 2000) g")?;
    set_backup_compression(&site, &["backup_compression = lz4", "backup_compression_location = server", "backup_compression_level = 3"])?;
    if major < 15 {
        let r = site.run(&["backup", "pg"])?;
        ensure!(r.code != 0 && r.stderr.contains("backup_compression_location = server requires PostgreSQL 15 or greater"), "{r}");
        let r = site.run(&["check", "pg"])?;
        ensure!(r.code != 0 && r.stdout.contains("\t\tbackup_compression_location = server requires PostgreSQL 15 or greater\n"), "{r}");
        return Ok(());
    }
    let id = backup(&site)?;
    assert_magic(&site.server_dir().join(format!("base/{id}/data/base.tar.lz4")), "lz4")?;
    ensure!(backup_info(&site, &id)?.contains("\ncompression=lz4\n"));
    let restored = recover(&site, major, &id, &[], |_| Ok(()))?;
    ensure!(restored.sql("SELECT count(*) FROM t")? == "2000");
    drop(restored);

    // Compressed on the wire, stored plain: backup.info says no compression.
    set_backup_compression(&site, &["backup_compression = gzip", "backup_compression_location = server", "backup_compression_format = plain"])?;
    let id = backup(&site)?;
    let data = site.server_dir().join(format!("base/{id}/data"));
    ensure!(data.join("PG_VERSION").is_file() && data.join("backup_label").is_file(), "a plain tree");
    ensure!(backup_info(&site, &id)?.contains("\ncompression=None\n"));
    let restored = recover(&site, major, &id, &[], |_| Ok(()))?;
    ensure!(restored.sql("SELECT count(*) FROM t")? == "2000");
    Ok(())
});

/// `list-files` and `show-backup` on a zstd tar backup with one tablespace, as Barman prints
/// them (reference sample 16-list-files-20261125T123345-*, 15-show-backup-zstd-tar): the
/// data target is the three files of `data/` sorted (the empty `<oid>/` directory is not
/// listed), every path printed exists, and backup.info's `size` is what they weigh.
fn check_catalog_commands(site: &BarmanSite, id: &str, oid: &str, location: &Path, info: &str) -> anyhow::Result<()> {
    let list = |target: &str| -> anyhow::Result<Vec<PathBuf>> {
        let r = site.run(&["list-files", "--target", target, "pg", id])?;
        ensure!(r.code == 0 && r.stderr.is_empty(), "list-files --target {target}: {r}");
        Ok(r.stdout.lines().map(PathBuf::from).collect())
    };
    let data_dir = site.server_dir().join(format!("base/{id}/data"));
    let data = list("data")?;
    let expected: Vec<PathBuf> =
        [format!("{oid}.tar.zst"), "backup_manifest".into(), "base.tar.zst".into()].iter().map(|f| data_dir.join(f)).collect();
    ensure!(data == expected, "list-files --target data: {data:?}");
    let mut on_disk = 0;
    for f in &data {
        on_disk += std::fs::metadata(f)?.len();
    }
    ensure!(info.contains(&format!("\nsize={on_disk}\n")), "backup.info size is not the {on_disk} bytes listed: {info}");

    let wal = list("wal")?;
    let standalone = list("standalone")?;
    let full = list("full")?;
    let wals_dir = site.server_dir().join("wals");
    ensure!(!wal.is_empty() && wal.iter().all(|w| w.starts_with(&wals_dir) && w.is_file()), "list-files --target wal: {wal:?}");
    ensure!(standalone.len() > data.len() && standalone.starts_with(&data), "standalone: {standalone:?}");
    ensure!(standalone[data.len()..].iter().all(|w| w.starts_with(&wals_dir) && w.is_file()), "standalone WAL: {standalone:?}");
    ensure!(full == [data.clone(), wal].concat(), "full is data then wal: {full:?}");

    let r = site.run(&["show-backup", "pg", id])?;
    ensure!(r.code == 0, "{r}");
    let size = barman_core::output::pretty_size(on_disk as f64);
    for want in [
        format!("Backup {id}:"),
        "  Status                 : DONE".to_owned(),
        "  Tablespaces:".to_owned(),
        format!("    {:<20} : {} (oid: {oid})", "ts1", location.display()),
        "    Backup Method        : postgres".to_owned(),
        format!("    Backup Size          : {size} ("),
        "    Backup Compression   : zstd".to_owned(),
    ] {
        ensure!(r.stdout.lines().any(|l| l.starts_with(&want)), "show-backup lacks {want:?}:\n{}", r.stdout);
    }
    let r = site.run(&["-f", "json", "show-backup", "pg", id])?;
    ensure!(r.code == 0, "{r}");
    let json: serde_json::Value = serde_json::from_str(&r.stdout)?;
    let base = &json["pg"]["base_backup_information"];
    ensure!(base["compression"] == "zstd" && base["backup_size_bytes"] == on_disk, "json: {json}");
    Ok(())
}

/// Removes a directory the test created outside any temporary directory it owns.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
