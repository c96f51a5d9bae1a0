//! The server commands of the real `barman` binary against real servers: `check` (console,
//! JSON, Nagios) green on a good server and red, with a clear reason, when something is
//! broken; `status`, `show-servers`, `list-servers`, `replication-status`, `diagnose`.
//!
//! One cluster per major serves several server sections of one configuration, each broken in
//! one way, so the whole matrix stays fast.
//!
//! "Unwritable directory" as root: root ignores permission bits, so the broken server puts its
//! `backup_directory` under a regular file; creating a directory there fails with ENOTDIR for
//! every user.

use std::fs;
use std::path::Path;
use std::process::{Child, Command};

use anyhow::{ensure, Context as _};
use barman_tests::{pg_test, run_barman, AuthMethod, Cluster, ClusterOptions, BARMAN_USER, PASSWORD, STREAMING_USER};

/// Kills the process we started (a `pg_receivewal`) when the test ends.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn write_config(home: &Path, pg: &Cluster) -> anyhow::Result<std::path::PathBuf> {
    let conn = format!("{} password={PASSWORD}", pg.conninfo(BARMAN_USER));
    let stream = format!("{} password={PASSWORD}", pg.conninfo(STREAMING_USER));
    let port = pg.port();
    let blocker = home.join("not-a-directory");
    fs::write(&blocker, "a file")?;
    let text = format!(
        "[barman]\nbarman_home = {home}\nbarman_user = root\nlog_level = INFO\n\
         backup_method = postgres\narchiver = on\nstreaming_archiver = on\n\n\
         [pg]\ndescription = \"Good server\"\nconninfo = {conn}\nstreaming_conninfo = {stream}\nslot_name = barman\n\n\
         [wrongport]\nconninfo = host=127.0.0.1 port=1 user=barman dbname=postgres connect_timeout=5\n\
         streaming_conninfo = host=127.0.0.1 port=1 user=barman connect_timeout=5\nslot_name = barman\n\n\
         [wrongpw]\nconninfo = host=127.0.0.1 port={port} user=barman dbname=postgres password=not-the-pw-77\n\
         streaming_conninfo = {stream}\nslot_name = barman\n\n\
         [noslot]\nconninfo = {conn}\nstreaming_conninfo = {stream}\nslot_name = nosuchslot\n\n\
         [unwritable]\nconninfo = {conn}\nstreaming_conninfo = {stream}\nslot_name = barman\nbackup_directory = {blocker}/unwritable\n",
        home = home.display(),
        blocker = blocker.display(),
    );
    let path = home.join("barman.conf");
    fs::write(&path, text)?;
    Ok(path)
}

/// Makes `server`'s catalog look like one that already archived WAL (barman-rs has no
/// archiver yet, so `WAL archive` would fail on an empty catalog, as Barman's does when
/// archiving does not work).
fn seed_xlogdb(home: &Path, server: &str) -> anyhow::Result<()> {
    let wals = home.join(server).join("wals");
    fs::create_dir_all(&wals)?;
    fs::write(wals.join(format!("{server}-xlog.db")), "000000010000000000000001\t16777216\t1700000000.0\tNone\tNone\n")?;
    Ok(())
}

fn line_of<'a>(out: &'a str, check: &str) -> anyhow::Result<&'a str> {
    out.lines()
        .find(|l| l.trim_start().starts_with(&format!("{check}:")))
        .with_context(|| format!("no '{check}' line in:\n{out}"))
}

pg_test!(check_status_show_on_real_servers, |major| {
    let pg = Cluster::start(ClusterOptions::new(major).auth(AuthMethod::ScramSha256))?;
    let home_dir = tempfile::tempdir()?;
    let home = home_dir.path();
    let config = write_config(home, &pg)?;
    for s in ["pg", "wrongport", "wrongpw", "noslot"] {
        seed_xlogdb(home, s)?;
    }
    let conf = config.as_path();

    // Before the slot exists: the good server's slot check fails with Barman's hint.
    let r = run_barman(conf, &["check", "pg"])?;
    ensure!(r.code == 1, "check without slot must fail: {r}");
    ensure!(
        line_of(&r.stdout, "replication slot")?.contains("replication slot 'barman' doesn't exist. Please execute 'barman receive-wal --create-slot pg'"),
        "{r}"
    );

    // A slot, a WAL streamer on it, and the receive-wal lock held (as `barman receive-wal`
    // would hold it): now every check passes.
    pg.sql("SELECT pg_create_physical_replication_slot('barman', true)")?;
    let r = run_barman(conf, &["check", "pg"])?;
    ensure!(line_of(&r.stdout, "replication slot")?.contains("slot 'barman' not active: is 'receive-wal' running?"), "{r}");
    let wal_dir = home.join("receivewal");
    fs::create_dir_all(&wal_dir)?;
    let receiver = Command::new(pg.bin_dir().join("pg_receivewal"))
        .arg("-D")
        .arg(&wal_dir)
        .args(["--slot", "barman", "-n", "-d"])
        .arg(pg.conninfo(STREAMING_USER))
        .env("PGPASSWORD", PASSWORD)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .context("starting pg_receivewal")?;
    let _receiver = Killed(receiver);
    let mut active = false;
    for _ in 0..100 {
        if pg.sql("SELECT active FROM pg_replication_slots WHERE slot_name = 'barman'")? == "t" {
            active = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    ensure!(active, "pg_receivewal did not attach to the slot");
    let lock = fs::File::create(home.join(".pg-receive-wal.lock"))?;
    let held = lock.try_lock();
    held.context("holding the receive-wal lock")?;

    let r = run_barman(conf, &["check", "pg"])?;
    ensure!(r.code == 0, "a good server passes every check: {r}");
    ensure!(r.stdout.starts_with("Server pg:\n\tPostgreSQL: OK\n"), "{r}");
    for name in [
        "superuser or standard user with backup privileges",
        "PostgreSQL streaming",
        "wal_level",
        "replication slot",
        "directories",
        "systemid coherence",
        "receive-wal running",
        "archive_mode",
        "archive_command",
        "continuous archiving",
        "archiver errors",
    ] {
        ensure!(line_of(&r.stdout, name)?.ends_with(": OK") || line_of(&r.stdout, name)?.contains(": OK ("), "{name}: {r}");
    }
    ensure!(!r.stdout.contains("FAILED"), "{r}");
    for dir in ["base", "errors", "incoming", "streaming", "wals"] {
        ensure!(home.join("pg").join(dir).is_dir(), "check creates {dir}/");
    }

    let r = run_barman(conf, &["check", "--nagios", "pg"])?;
    ensure!(r.code == 0 && r.stdout == "BARMAN OK - Ready to serve the Espresso backup for pg|pg=0B pg_wals=0B\n", "{r}");
    let r = run_barman(conf, &["-f", "json", "check", "pg"])?;
    ensure!(r.code == 0 && !r.stdout.ends_with('\n'), "{r}");
    let j = r.json()?;
    ensure!(j["pg"]["wal_level"] == serde_json::json!({"hint": "", "status": "OK"}), "{r}");
    ensure!(j["pg"]["superuser_or_standard_user_with_backup_privileges"]["status"] == "OK", "{r}");

    // systemid coherence against identity.json.
    fs::write(home.join("pg/identity.json"), "{\"systemid\": \"1\", \"version\": \"15\"}\n")?;
    let r = run_barman(conf, &["check", "pg"])?;
    ensure!(r.code == 1 && line_of(&r.stdout, "systemid coherence")?.contains("the system Id of the connected PostgreSQL server changed"), "{r}");
    fs::write(home.join("pg/identity.json"), format!("{{\"systemid\": \"{}\", \"version\": \"{major}\"}}\n", pg.system_identifier()?))?;

    // Broken servers: each fails with a reason an operator can act on.
    let r = run_barman(conf, &["check", "wrongport"])?;
    ensure!(r.code == 1, "{r}");
    let l = line_of(&r.stdout, "PostgreSQL")?;
    ensure!(l.contains("FAILED (cannot connect to server \"127.0.0.1\" port 1 as user \"barman\""), "{r}");
    let r = run_barman(conf, &["check", "wrongpw"])?;
    let l = line_of(&r.stdout, "PostgreSQL")?;
    ensure!(r.code == 1 && l.contains("FAILED") && l.contains("password authentication failed for user \"barman\""), "{r}");
    ensure!(!r.stdout.contains("not-the-pw-77") && !r.stderr.contains("not-the-pw-77"), "password leaked: {r}");
    let r = run_barman(conf, &["check", "noslot"])?;
    ensure!(line_of(&r.stdout, "replication slot")?.contains("replication slot 'nosuchslot' doesn't exist"), "{r}");
    let r = run_barman(conf, &["check", "unwritable"])?;
    let l = line_of(&r.stdout, "directories")?;
    ensure!(r.code == 1 && l.contains("FAILED (") && l.contains("not-a-directory") && l.contains("Not a directory"), "{r}");

    // Archiver errors.
    fs::write(home.join("pg/errors/000000010000000000000002.20260101T000000Z.unknown"), "")?;
    let r = run_barman(conf, &["check", "--nagios", "pg"])?;
    ensure!(r.code == 2, "{r}");
    ensure!(
        r.stdout == "BARMAN CRITICAL - server pg has issues * pg FAILED: archiver errors|pg=0B pg_wals=0B\npg.archiver errors: FAILED (unknown: 1)\n",
        "{r}"
    );
    fs::remove_file(home.join("pg/errors/000000010000000000000002.20260101T000000Z.unknown"))?;

    let r = run_barman(conf, &["check", "--nagios", "all"])?;
    ensure!(r.code == 2 && r.stdout.starts_with("BARMAN CRITICAL - 4 server out of 5 have issues * noslot FAILED: replication slot"), "{r}");
    let r = run_barman(conf, &["check", "--nagios", "nosuch"])?;
    ensure!(r.code == 2 && r.stdout == "BARMAN CRITICAL - Global configuration errors\n", "{r}");
    let r = run_barman(conf, &["check", "nosuch"])?;
    ensure!(r.code == 1 && r.stderr == "ERROR: Unknown server 'nosuch'\n", "{r}");

    // list-servers, status, show-servers.
    let r = run_barman(conf, &["list-servers"])?;
    ensure!(r.code == 0 && r.stdout == "noslot\npg - Good server\nunwritable\nwrongport\nwrongpw\n", "{r}");
    let r = run_barman(conf, &["-f", "json", "list-servers", "--minimal"])?;
    ensure!(r.json()?["pg"] == serde_json::json!({"description": "Good server"}), "{r}");
    let r = run_barman(conf, &["status", "pg"])?;
    ensure!(r.code == 0, "{r}");
    let version = pg.sql("SELECT split_part(version(), ' ', 2)")?;
    ensure!(r.stdout.contains(&format!("\tPostgreSQL version: {version}\n\tCluster state: in production\n")), "{r}");
    ensure!(r.stdout.contains(&format!("\tPostgreSQL Data directory: {}\n", pg.data_dir().display())), "{r}");
    ensure!(r.stdout.contains("\tNo. of available backups: 0\n\tFirst available backup: None\n"), "{r}");
    let r = run_barman(conf, &["status", "wrongport"])?;
    ensure!(r.code == 0 && r.stdout.contains("\tPostgreSQL version: FAILED trying to get PostgreSQL version\n"), "{r}");
    let j = run_barman(conf, &["-f", "json", "status", "pg"])?.json()?;
    ensure!(j["pg"]["pg_version"]["message"] == version.as_str(), "{j}");
    let r = run_barman(conf, &["show-servers", "pg"])?;
    ensure!(r.code == 0 && r.stdout.starts_with("Server pg:\n\tactive: True\n"), "{r}");
    ensure!(r.stdout.contains("\twal_level: replica\n") && r.stdout.contains("\tarchive_mode: on\n"), "{r}");
    ensure!(r.stdout.contains("Record(slot_name='barman', active=True, restart_lsn="), "{r}");
    ensure!(r.stdout.contains("password=*REDACTED*") && !r.stdout.contains(PASSWORD), "password not redacted: {r}");
    let j = run_barman(conf, &["-f", "json", "show-servers", "pg"])?.json()?;
    ensure!(j["pg"]["streaming"] == true && j["pg"]["xlog_segment_size"] == 16_777_216, "{j}");
    ensure!(!j.to_string().contains(PASSWORD), "password in JSON");

    // replication-status sees the WAL streamer; diagnose is JSON without passwords.
    let r = run_barman(conf, &["replication-status", "pg"])?;
    ensure!(r.code == 0 && r.stdout.contains("  1. Async WAL streamer\n") && r.stdout.contains("Replication slot: barman"), "{r}");
    let r = run_barman(conf, &["replication-status", "wrongport"])?;
    ensure!(r.code == 1 && r.stderr == "ERROR: Unable to connect to server wrongport\n", "{r}");
    let r = run_barman(conf, &["diagnose"])?;
    ensure!(r.code == 0 && !r.stdout.contains(PASSWORD), "{r}");
    let j = r.json()?;
    ensure!(j["servers"]["pg"]["status"]["wal_level"] == "replica", "{r}");

    // wal_level = minimal (needs no WAL senders and no archiving).
    drop(_receiver);
    let mut dropped = false;
    for _ in 0..100 {
        if pg.sql("SELECT count(*) FROM pg_replication_slots WHERE active")? == "0" {
            pg.sql("SELECT pg_drop_replication_slot('barman')")?;
            dropped = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    ensure!(dropped, "the slot stayed active after pg_receivewal ended");
    pg.sql("ALTER SYSTEM SET wal_level = 'minimal'")?;
    pg.sql("ALTER SYSTEM SET max_wal_senders = 0")?;
    pg.sql("ALTER SYSTEM SET archive_mode = 'off'")?;
    pg.restart()?;
    let r = run_barman(conf, &["check", "pg"])?;
    ensure!(r.code == 1, "{r}");
    ensure!(line_of(&r.stdout, "wal_level")?.contains("FAILED (please set it to a higher level than 'minimal')"), "{r}");
    ensure!(line_of(&r.stdout, "archive_mode")?.contains("FAILED (please set it to 'on' or 'always')"), "{r}");
    ensure!(line_of(&r.stdout, "PostgreSQL streaming")?.contains("FAILED"), "{r}");
    Ok(())
});
