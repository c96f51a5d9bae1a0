//! `barman receive-wal`, `switch-wal --archive`, `archive-wal` and `cron` as a user runs them:
//! WAL streamed from the server ends up in the archive compressed, decompressing to exactly
//! the bytes of the server's own `pg_wal` segments, and listed in xlog.db.

use std::io::Read as _;
use std::path::Path;
use std::time::Duration;

use anyhow::{ensure, Context as _};
use barman_core::catalog::{CatalogLock, LockKind};
use barman_core::compression::{Compression, WalCompression};
use barman_tests::{wait_for, pg_test, run_barman, BarmanSite, Cluster, ClusterOptions};


/// The PID holding `pg`'s receive-wal lock, if a receiver runs.
fn receiver_pid(site: &BarmanSite) -> anyhow::Result<Option<u32>> {
    Ok(CatalogLock::owner_pid(site.home.path(), "pg", &LockKind::ServerReceiveWal)?)
}

fn create_slot(site: &BarmanSite) -> anyhow::Result<()> {
    let r = site.run(&["receive-wal", "--create-slot", "pg"])?;
    ensure!(
        r.code == 0
            && r.stdout == "Creating physical replication slot 'barman' on server 'pg'\nReplication slot 'barman' created\n",
        "create-slot, as Barman's commands/02-receive-wal-create-slot.txt: {r}"
    );
    Ok(())
}

/// Runs `switch-wal --archive` while keeping the server busy, so that the segment after the
/// switched one starts at once: the streaming archiver archives a segment only once the
/// receiver has moved on to the next (Barman's rule, to let pg_receivewal resume).
fn switch_wal_archive(pg: &Cluster, site: &BarmanSite) -> anyhow::Result<barman_tests::BarmanRun> {
    let config = site.config.clone();
    let switch = std::thread::spawn(move || {
        run_barman(&config, &["switch-wal", "--archive", "--archive-timeout", "120", "pg"])
    });
    while !switch.is_finished() {
        pg.sql("INSERT INTO harness_load (payload) VALUES ('tick')")?;
        std::thread::sleep(Duration::from_millis(200));
    }
    switch.join().map_err(|_| anyhow::anyhow!("switch-wal thread panicked"))?
}

/// Every xlog.db line's file, decompressed, against the server's `pg_wal` copy.
fn check_archive_against_pg_wal(pg: &Cluster, site: &BarmanSite) -> anyhow::Result<Vec<String>> {
    let wals = site.server_dir().join("wals");
    let xlogdb = std::fs::read_to_string(wals.join("pg-xlog.db")).context("xlog.db")?;
    let mut names = Vec::new();
    for line in xlogdb.lines() {
        let cols: Vec<&str> = line.split('\t').collect();
        ensure!(cols.len() == 5, "xlog.db line {line:?}");
        let name = cols[0];
        let stored = wals.join(&name[..16]).join(name);
        let raw = std::fs::read(&stored).with_context(|| stored.display().to_string())?;
        ensure!(cols[1] == raw.len().to_string(), "{name}: xlog.db size {} vs {} on disk", cols[1], raw.len());
        ensure!(cols[3] == "gzip" && cols[4] == "None", "{name}: compression columns {line:?}");
        ensure!(raw.starts_with(b"\x1f\x8b\x08"), "{name}: stored gzip-compressed");
        let mut plain = Vec::new();
        WalCompression::with(Compression::Gzip).decoder(Some(Compression::Gzip), std::io::Cursor::new(raw))?.read_to_end(&mut plain)?;
        let server = pg.read_data_file(&format!("pg_wal/{name}"))?;
        ensure!(plain == server, "{name}: archived WAL differs from the server's pg_wal copy");
        names.push(name.to_owned());
    }
    Ok(names)
}

pg_test!(receive_switch_and_archive, |major| {
    let pg = Cluster::start(ClusterOptions::new(major).wal_segsize_mb(1))?;
    pg.generate_load(10)?;
    let site = BarmanSite::new(&pg, &["compression = gzip"])?;
    create_slot(&site)?;
    let again = site.run(&["receive-wal", "--create-slot", "pg"])?;
    ensure!(
        again.code == 1
            && again.stdout == "Creating physical replication slot 'barman' on server 'pg'\n"
            && again.stderr.contains("ERROR: Replication slot 'barman' already exists"),
        "as commands/02b-receive-wal-create-slot-again.txt: {again}"
    );

    let r = site.run(&["archive-wal", "pg"])?;
    ensure!(r.code == 0 && r.stdout == "Processing xlog segments from streaming for pg\n\tno file found\n", "{r}");

    let mut receiver = site.spawn(&["receive-wal", "pg"])?;
    wait_for("the receiver's lock", || Ok(receiver_pid(&site)? == Some(receiver.pid())))?;

    let second = site.run(&["receive-wal", "pg"])?;
    ensure!(
        second.code == 1
            && second.stdout == "Starting receive-wal for server pg\n"
            && second.stderr.contains("ERROR: Another receive-wal process is already running for server pg."),
        "a second receiver is refused: {second}"
    );

    pg.generate_load(15000)?; // a few MiB of WAL: several 1 MiB segments
    let switched = switch_wal_archive(&pg, &site)?;
    let lines: Vec<&str> = switched.stdout.lines().collect();
    ensure!(switched.code == 0 && lines.len() >= 4, "{switched}");
    let closed = lines[0]
        .strip_prefix("The WAL file ")
        .and_then(|l| l.strip_suffix(" has been closed on server 'pg'"))
        .with_context(|| format!("first line: {switched}"))?
        .to_owned();
    ensure!(lines[1] == format!("Waiting for the WAL file {closed} from server 'pg' (max: 120 seconds)"), "{switched}");
    ensure!(lines[2].starts_with("Processing xlog segments from streaming for pg"), "{switched}");
    ensure!(lines.contains(&format!("\t{closed}").as_str()), "the closed segment was archived: {switched}");
    ensure!(site.server_dir().join("wals").join(&closed[..16]).join(&closed).is_file(), "{closed} in wals/");

    let archived = check_archive_against_pg_wal(&pg, &site)?;
    ensure!(archived.contains(&closed), "xlog.db lists {closed}: {archived:?}");
    ensure!(archived.len() >= 2, "the load spans several 1 MiB segments: {archived:?}");

    let stop = site.run(&["receive-wal", "--stop", "pg"])?;
    ensure!(stop.code == 0 && stop.stdout == format!("Stopped process receive-wal({})\n", receiver.pid()), "{stop}");
    ensure!(receiver_pid(&site)?.is_none(), "the receiver let its lock go");
    let status = receiver.terminate()?;
    ensure!(status.success(), "receive-wal ended cleanly after --stop: {status:?}");
    let none = site.run(&["receive-wal", "--stop", "pg"])?;
    ensure!(
        none.code == 1 && none.stderr.contains("ERROR: Termination of receive-wal failed: no such process for server pg"),
        "{none}"
    );
    // What the receiver left in streaming/ (the open segment) is still there for the next run.
    ensure!(std::fs::read_dir(site.server_dir().join("streaming"))?.count() >= 1, "streaming/ keeps the receiver's position");
    Ok(())
});

pg_test!(cron_starts_the_receiver_and_archives, |major| {
    let pg = Cluster::start(ClusterOptions::new(major).wal_segsize_mb(1))?;
    let site = BarmanSite::new(&pg, &["compression = gzip"])?;
    create_slot(&site)?;
    let r = site.run(&["cron"])?;
    ensure!(
        r.code == 0 && r.stdout == "Starting WAL archiving for server pg\nStarting streaming archiver for server pg\n",
        "{r}"
    );
    wait_for("the receiver started by cron", || Ok(receiver_pid(&site)?.is_some()))?;
    // A second cron finds the receiver running and says nothing about it.
    pg.generate_load(2000)?;
    pg.switch_wal()?;
    pg.generate_load(10)?;
    let streaming = site.server_dir().join("streaming");
    wait_for("a complete segment and the next one", || Ok(count_complete(&streaming)? >= 1 && has_partial(&streaming)?))?;
    let r = site.run(&["cron"])?;
    ensure!(r.code == 0 && r.stdout == "Starting WAL archiving for server pg\n", "{r}");
    let archived = check_archive_against_pg_wal(&pg, &site)?;
    ensure!(!archived.is_empty(), "cron archived what the receiver streamed");
    let stop = site.run(&["receive-wal", "--stop", "pg"])?;
    ensure!(stop.code == 0, "{stop}");
    Ok(())
});

fn count_complete(dir: &Path) -> anyhow::Result<usize> {
    Ok(std::fs::read_dir(dir)?.filter_map(|e| e.ok()?.file_name().into_string().ok()).filter(|n| n.len() == 24).count())
}

fn has_partial(dir: &Path) -> anyhow::Result<bool> {
    Ok(std::fs::read_dir(dir)?.filter_map(|e| e.ok()?.file_name().into_string().ok()).any(|n| n.ends_with(".partial")))
}

pg_test!(drop_slot_and_reset_then_streaming_resumes, |major| {
    let pg = Cluster::start(ClusterOptions::new(major))?;
    let site = BarmanSite::new(&pg, &[])?;
    create_slot(&site)?;
    let mut receiver = site.spawn(&["receive-wal", "pg"])?;
    let r = site.run(&["switch-wal", "--force", "--archive", "--archive-timeout", "60", "pg"])?;
    ensure!(r.code == 0, "{r}");
    receiver.terminate()?;

    let r = site.run(&["receive-wal", "--drop-slot", "pg"])?;
    ensure!(r.code == 0 && r.stdout == "Dropping physical replication slot 'barman' on server 'pg'\nReplication slot 'barman' dropped\n", "{r}");
    ensure!(pg.sql("SELECT count(*) FROM pg_replication_slots")? == "0");
    let r = site.run(&["receive-wal", "--drop-slot", "pg"])?;
    ensure!(r.code == 1 && r.stderr.contains("Replication slot 'barman' does not exist"), "{r}");

    // Without its slot the server moved on: a new slot, and --reset points the receiver at
    // the new slot's position (Barman's rule: the slot's restart_lsn, else the server's).
    pg.generate_load(1000)?;
    pg.switch_wal()?;
    pg.generate_load(1000)?;
    pg.switch_wal()?;
    create_slot(&site)?;
    let r = site.run(&["receive-wal", "--reset", "pg"])?;
    ensure!(r.code == 0 && r.stdout.starts_with("Resetting receive-wal directory status\n"), "{r}");
    let created = r.stdout.lines().find_map(|l| l.strip_prefix("Creating status file ")).context("a status file")?;
    ensure!(created.ends_with(".partial") && std::fs::metadata(created)?.len() == 0, "an empty status file: {r}");
    let r = site.run(&["receive-wal", "--reset", "pg"])?;
    ensure!(r.code == 0 && r.stdout.contains("Nothing to do. Position of receive-wal is aligned."), "{r}");

    let _receiver = site.spawn(&["receive-wal", "pg"])?;
    let r = site.run(&["switch-wal", "--force", "--archive", "--archive-timeout", "60", "pg"])?;
    ensure!(r.code == 0, "streaming resumed: {r}");
    Ok(())
});

// Segments are checked and compressed on several threads at once; what the user sees must
// not change: Barman's lines in name order, xlog.db in WAL order, a broken segment in the
// middle refused on its own while the ones after it are archived.
pg_test!(many_segments_from_incoming_are_archived_in_wal_order, |major| {
    let pg = Cluster::start(ClusterOptions::new(major).wal_segsize_mb(1))?;
    let site = BarmanSite::new(&pg, &["archiver = on", "streaming_archiver = off", "compression = zstd"])?;
    let incoming = site.server_dir().join("incoming");
    std::fs::create_dir_all(&incoming)?;
    let mut segments = Vec::new();
    for _ in 0..12 {
        pg.generate_load(300)?;
        let name = pg.sql("SELECT pg_walfile_name(pg_current_wal_lsn())")?;
        pg.switch_wal()?;
        segments.push((name.clone(), pg.read_data_file(&format!("pg_wal/{name}"))?));
    }
    let bad = segments[5].0.clone();
    for (name, bytes) in &segments {
        let mut bytes = bytes.clone();
        if *name == bad {
            // A flipped byte in the middle of the records (the load fills a third of a page
            // at least; 100 bytes in, no page header is hit).
            bytes[8192 + 100] ^= 0x5a;
        }
        std::fs::write(incoming.join(name), &bytes)?;
    }

    let r = site.run(&["archive-wal", "pg"])?;
    ensure!(r.code == 0, "{r}");
    let files: Vec<&str> = r.stdout.lines().filter_map(|l| l.strip_prefix('\t')).filter(|l| !l.starts_with("Error")).collect();
    let names: Vec<&str> = segments.iter().map(|(n, _)| n.as_str()).collect();
    ensure!(files == names, "one line per file, in name order: {r}");
    ensure!(r.stdout.contains(&format!("\tError: {bad} is not valid WAL (corrupt: ")), "{r}");

    let wals = site.server_dir().join("wals");
    let xlogdb = std::fs::read_to_string(wals.join("pg-xlog.db"))?;
    let listed: Vec<&str> = xlogdb.lines().filter_map(|l| l.split('\t').next()).collect();
    let good: Vec<&str> = names.iter().copied().filter(|n| *n != bad).collect();
    ensure!(listed == good, "xlog.db in WAL order without {bad}: {listed:?}");
    for (name, bytes) in segments.iter().filter(|(n, _)| *n != bad) {
        let raw = std::fs::read(wals.join(&name[..16]).join(name))?;
        let mut plain = Vec::new();
        WalCompression::with(Compression::Zstd).decoder(Some(Compression::Zstd), std::io::Cursor::new(raw))?.read_to_end(&mut plain)?;
        ensure!(plain == *bytes, "{name}: archived WAL differs from the server's");
    }
    let errors: Vec<String> =
        std::fs::read_dir(site.server_dir().join("errors"))?.map(|e| Ok(e?.file_name().to_string_lossy().into_owned())).collect::<std::io::Result<_>>()?;
    ensure!(errors.len() == 1 && errors[0].starts_with(&format!("{bad}.")) && errors[0].ends_with(".corrupt"), "{errors:?}");
    ensure!(std::fs::read_dir(&incoming)?.next().is_none(), "incoming/ is empty");
    Ok(())
});
