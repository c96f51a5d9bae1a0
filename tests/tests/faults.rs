//! Faults a WAL archive meets in production, injected on purpose: the network between
//! `receive-wal` and the server cut or frozen (through the harness's [`Proxy`]), the catalog's
//! disk full (a small tmpfs mounted over `wals/` or `streaming/`), and files in `incoming/` that
//! are not this server's valid WAL. After each, what ends up in the archive is compared with
//! the server's own `pg_wal` segments byte for byte, and must have no gap.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{bail, ensure, Context as _};
use barman_core::catalog::{CatalogLock, LockKind, ServerIdentity};
use barman_replication::{Lsn, SystemId};
use barman_tests::{
    barman_bin, pg_test, wait_for, BarmanSite, Cluster, ClusterOptions, CommandOutput, Proxy, RunCommand as _,
};

/// A site whose `streaming_conninfo` goes through `proxy` (the `conninfo` stays direct, so
/// `switch-wal` and `check` work whatever the proxy does).
fn site_through(pg: &Cluster, proxy: &Proxy, extra: &[&str]) -> anyhow::Result<BarmanSite> {
    let site = BarmanSite::new(pg, extra)?;
    let text = fs::read_to_string(&site.config)?;
    let direct = format!("port={} user=streaming_barman", pg.port());
    ensure!(text.matches(&direct).count() == 1, "one streaming_conninfo in {text}");
    fs::write(&site.config, text.replace(&direct, &format!("port={} user=streaming_barman", proxy.port())))?;
    Ok(site)
}

fn receiver_pid(site: &BarmanSite) -> anyhow::Result<Option<u32>> {
    Ok(CatalogLock::owner_pid(site.home.path(), "pg", &LockKind::ServerReceiveWal)?)
}

fn create_slot(site: &BarmanSite) -> anyhow::Result<()> {
    let r = site.run(&["receive-wal", "--create-slot", "pg"])?;
    ensure!(r.code == 0, "{r}");
    Ok(())
}

fn log_text(site: &BarmanSite) -> String {
    fs::read_to_string(site.home.path().join("barman.log")).unwrap_or_default()
}

fn names_in(dir: &Path) -> anyhow::Result<Vec<String>> {
    let mut v: Vec<String> = match fs::read_dir(dir) {
        Ok(d) => d.filter_map(|e| e.ok()?.file_name().into_string().ok()).collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e).with_context(|| dir.display().to_string()),
    };
    v.sort();
    Ok(v)
}

fn xlogdb_names(site: &BarmanSite) -> anyhow::Result<Vec<String>> {
    let text = fs::read_to_string(site.server_dir().join("wals/pg-xlog.db")).unwrap_or_default();
    Ok(text.lines().filter_map(|l| l.split('\t').next()).map(str::to_owned).collect())
}

/// Segment number of a 1 MiB-segment WAL file name (256 × 16 segments per "log" with 1 MiB:
/// 4096 per log).
fn segno_1mb(name: &str) -> anyhow::Result<u64> {
    let log = u64::from_str_radix(&name[8..16], 16)?;
    let seg = u64::from_str_radix(&name[16..24], 16)?;
    Ok(log * 4096 + seg)
}

/// Archives until `last` is in xlog.db (keeping the server busy so the receiver moves past
/// it), then checks the archive: every segment from one at or before `first` to `last`, none
/// missing, none twice, each equal to the server's `pg_wal` copy (no compression configured),
/// and nothing in `errors/`.
fn archive_is_complete(pg: &Cluster, site: &BarmanSite, first: &str, last: &str) -> anyhow::Result<()> {
    wait_for(&format!("{last} to be archived"), || {
        let r = site.run(&["archive-wal", "pg"])?;
        ensure!(r.code == 0, "{r}");
        pg.generate_load(10)?;
        Ok(xlogdb_names(site)?.iter().any(|n| n == last))
    })
    .with_context(|| format!("streaming/: {:?}", names_in(&site.server_dir().join("streaming"))))?;
    let names = xlogdb_names(site)?;
    let unique: BTreeSet<&String> = names.iter().collect();
    ensure!(unique.len() == names.len(), "each segment once in xlog.db: {names:?}");
    let segments: Vec<&String> = names.iter().filter(|n| n.len() == 24).collect();
    ensure!(segments.first().is_some_and(|s| s.as_str() <= first), "the archive starts by {first}: {segments:?}");
    let numbers = segments.iter().map(|s| segno_1mb(s)).collect::<anyhow::Result<Vec<u64>>>()?;
    ensure!(numbers.windows(2).all(|w| w[1] == w[0] + 1), "no gap: {segments:?}");
    for seg in &segments {
        let ours = fs::read(site.server_dir().join("wals").join(&seg[..16]).join(seg))?;
        let theirs = pg.read_data_file(&format!("pg_wal/{seg}"))?;
        ensure!(ours == theirs, "archived {seg} differs from the server's pg_wal/{seg}");
    }
    let errors = names_in(&site.server_dir().join("errors"))?;
    ensure!(errors.is_empty(), "nothing went to errors/: {errors:?}");
    Ok(())
}

/// A 1 MiB-segment cluster that keeps its WAL (so every archived segment can be compared).
fn keeping_cluster(major: u32) -> anyhow::Result<Cluster> {
    let pg = Cluster::start(ClusterOptions::new(major).wal_segsize_mb(1))?;
    pg.set_conf("wal_keep_size", "256MB")?;
    Ok(pg)
}

fn streaming_started(pg: &Cluster) -> anyhow::Result<bool> {
    Ok(pg.sql("SELECT count(*) FROM pg_stat_replication WHERE application_name = 'barman_receive_wal' AND state = 'streaming'")? == "1")
}

pg_test!(receive_wal_reconnects_after_the_connection_is_cut, |major| {
    let pg = keeping_cluster(major)?;
    let proxy = Proxy::start(&pg)?;
    let site = site_through(&pg, &proxy, &[])?;
    create_slot(&site)?;
    let first = pg.sql("SELECT pg_walfile_name(pg_current_wal_lsn())")?;
    let receiver = site.spawn(&["receive-wal", "pg"])?;
    wait_for("the receiver to stream", || streaming_started(&pg))?;

    for _ in 0..3 {
        pg.generate_load(2000)?;
        let before = proxy.accepted();
        proxy.drop_connections();
        pg.generate_load(1000)?;
        wait_for("the receiver to reconnect through the proxy", || {
            Ok(proxy.accepted() > before && streaming_started(&pg)?)
        })?;
    }
    let last = pg.sql("SELECT pg_walfile_name(pg_switch_wal())")?;
    archive_is_complete(&pg, &site, &first, &last)?;
    ensure!(receiver_pid(&site)? == Some(receiver.pid()), "the same receive-wal process is still running");
    let log = log_text(&site);
    ensure!(
        log.lines().any(|l| l.contains("WAL streaming interrupted; reconnecting") && l.contains("server=pg")),
        "the log says the server and that it reconnects:\n{log}"
    );
    Ok(())
});

pg_test!(receive_wal_gives_up_on_a_frozen_connection_and_resumes, |major| {
    let pg = keeping_cluster(major)?;
    let proxy = Proxy::start(&pg)?;
    // keepalive_interval bounds a silent streaming connection (PostgreSQL's
    // wal_receiver_timeout); 2 s keeps the test short.
    let site = site_through(&pg, &proxy, &["keepalive_interval = 2"])?;
    create_slot(&site)?;
    let first = pg.sql("SELECT pg_walfile_name(pg_current_wal_lsn())")?;
    let receiver = site.spawn(&["receive-wal", "pg"])?;
    wait_for("the receiver to stream", || streaming_started(&pg))?;
    pg.generate_load(1000)?;

    proxy.freeze();
    pg.generate_load(2000)?; // WAL the receiver cannot get while frozen
    let timed_out = |l: &&str| {
        l.contains("WAL streaming interrupted") && l.contains("server=pg") && l.contains("timed out: nothing received for 2s")
    };
    wait_for("receive-wal to notice the frozen connection", || Ok(log_text(&site).lines().any(|l| timed_out(&l))))
        .with_context(|| log_text(&site))?;
    ensure!(receiver_pid(&site)? == Some(receiver.pid()), "receive-wal keeps running after a timeout");

    let before = proxy.accepted();
    proxy.pass();
    wait_for("the receiver to reconnect", || Ok(proxy.accepted() > before && streaming_started(&pg)?))?;
    let last = pg.sql("SELECT pg_walfile_name(pg_switch_wal())")?;
    archive_is_complete(&pg, &site, &first, &last)?;
    ensure!(receiver_pid(&site)? == Some(receiver.pid()), "the same receive-wal process is still running");
    Ok(())
});

pg_test!(receive_wal_keeps_streaming_through_a_slow_link, |major| {
    let pg = keeping_cluster(major)?;
    let proxy = Proxy::start(&pg)?;
    // The shortest receive timeout there is, 1 s: a slow link mistaken for a dead one would
    // show here as "timed out" and a reconnection.
    let site = site_through(&pg, &proxy, &["keepalive_interval = 1"])?;
    create_slot(&site)?;
    let first = pg.sql("SELECT pg_walfile_name(pg_current_wal_lsn())")?;
    let receiver = site.spawn(&["receive-wal", "pg"])?;
    wait_for("the receiver to stream", || streaming_started(&pg))?;
    pg.generate_load(1000)?;
    let connections = proxy.accepted();

    // 64 kB/s each way: one of the WAL sender's largest messages (128 kB) takes 2 s to get
    // through, twice the timeout. PostgreSQL's walreceiver, which times whole messages, would
    // give up on this link; receive-wal counts the bytes still arriving.
    proxy.slow(64 * 1024);
    pg.generate_load(2000)?; // a few hundred kB of WAL, several seconds through the link
    let target = pg.sql("SELECT pg_current_wal_lsn()")?;
    let lagging = pg.sql(&format!(
        "SELECT count(*) FROM pg_stat_replication WHERE application_name = 'barman_receive_wal' AND flush_lsn < '{target}'"
    ))?;
    ensure!(lagging == "1", "the link is slow: the receiver has not flushed {target} right after the load");
    wait_for(&format!("the receiver to flush {target} through the slow link"), || {
        Ok(pg.sql(&format!(
            "SELECT count(*) FROM pg_stat_replication WHERE application_name = 'barman_receive_wal' AND flush_lsn >= '{target}'"
        ))? == "1")
    })
    .with_context(|| log_text(&site))?;
    ensure!(proxy.accepted() == connections, "the same connection all along: no reconnection while slow");

    proxy.pass();
    let last = pg.sql("SELECT pg_walfile_name(pg_switch_wal())")?;
    archive_is_complete(&pg, &site, &first, &last)?;
    ensure!(receiver_pid(&site)? == Some(receiver.pid()), "the same receive-wal process is still running");
    let log = log_text(&site);
    ensure!(
        !log.lines().any(|l| l.contains("timed out") || l.contains("interrupted")),
        "a slow link is not a dead one: no timeout, no reconnection:\n{log}"
    );
    Ok(())
});

// ------------------------------------------------------------------ full disk

/// A tmpfs mounted over a catalog directory; unmounted on drop, also when the test fails.
struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    /// Mounts `size_mb` of tmpfs at `path` (created if needed, mode 0700). `None`, after
    /// printing why, when this machine does not let us mount (not root, no CAP_SYS_ADMIN, no
    /// `mount`): the caller then skips its test.
    fn mount(path: &Path, size_mb: u32) -> anyhow::Result<Option<Tmpfs>> {
        fs::create_dir_all(path)?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_mb}m,mode=0700"), "tmpfs"])
            .arg(path)
            .output_any();
        match out {
            Ok(CommandOutput { success: true, .. }) => Ok(Some(Tmpfs { path: path.to_owned() })),
            Ok(o) => {
                println!(
                    "skipped: cannot mount a tmpfs at {} to fill a disk ({}): {} — run the tests as root \
                     with CAP_SYS_ADMIN to run this one",
                    path.display(),
                    o.status,
                    o.stderr.trim()
                );
                Ok(None)
            }
            Err(e) => {
                println!("skipped: cannot run mount to fill a disk: {e:#}");
                Ok(None)
            }
        }
    }

    fn filler(&self) -> PathBuf {
        self.path.join("filler")
    }

    /// Writes a filler file until the filesystem is full.
    fn fill(&self) -> anyhow::Result<()> {
        use std::io::Write as _;
        let mut f = fs::File::create(self.filler())?;
        let block = vec![0xa5u8; 64 * 1024];
        loop {
            match f.write(&block) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
                Err(e) => return Err(e).context("filling the tmpfs"),
            }
        }
        // Whatever small space is left (less than a block) goes too.
        loop {
            match f.write(&[0u8; 512]) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
        Ok(())
    }

    /// Removes the filler: space is back.
    fn free(&self) -> anyhow::Result<()> {
        fs::remove_file(self.filler()).context("removing the filler")
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).output_any();
    }
}

/// Writes `rows` rows, closes the current segment and returns its name and the server's bytes.
fn close_segment(pg: &Cluster, rows: u64) -> anyhow::Result<(String, Vec<u8>)> {
    pg.generate_load(rows)?;
    let name = pg.sql("SELECT pg_walfile_name(pg_current_wal_lsn())")?;
    pg.switch_wal()?;
    let bytes = pg.read_data_file(&format!("pg_wal/{name}"))?;
    Ok((name, bytes))
}

fn write_identity(pg: &Cluster, site: &BarmanSite) -> anyhow::Result<()> {
    let identity = ServerIdentity {
        systemid: SystemId(pg.system_identifier()?),
        version: pg.major().to_string(),
        extra: Default::default(),
    };
    identity.write(&site.server_dir().join("identity.json"))?;
    Ok(())
}

fn incoming(site: &BarmanSite) -> anyhow::Result<PathBuf> {
    let dir = site.server_dir().join("incoming");
    fs::create_dir_all(&dir)?;
    Ok(dir)
}

pg_test!(archive_wal_on_a_full_disk_keeps_the_segment_and_retries, |major| {
    let pg = Cluster::start(ClusterOptions::new(major).wal_segsize_mb(1))?;
    let site = BarmanSite::new(&pg, &["archiver = on", "streaming_archiver = off"])?;
    let wals = site.server_dir().join("wals");
    let Some(disk) = Tmpfs::mount(&wals, 4)? else { return Ok(()) };
    let incoming = incoming(&site)?;
    let (seg1, bytes1) = close_segment(&pg, 100)?;
    fs::write(incoming.join(&seg1), &bytes1)?;
    let r = site.run(&["archive-wal", "pg"])?;
    ensure!(r.code == 0 && r.stdout.contains(&format!("\t{seg1}\n")), "{r}");
    let xlogdb_before = fs::read(wals.join("pg-xlog.db"))?;

    let (seg2, bytes2) = close_segment(&pg, 100)?;
    fs::write(incoming.join(&seg2), &bytes2)?;
    disk.fill()?;
    let r = site.run(&["archive-wal", "pg"])?;
    ensure!(r.code != 0, "archive-wal on a full disk fails: {r}");
    let err = format!("{}{}", r.stderr, r.stdout);
    ensure!(
        err.contains(&wals.display().to_string()) && err.contains("No space left on device"),
        "the error names the path and ENOSPC: {r}"
    );
    ensure!(fs::read(incoming.join(&seg2))? == bytes2, "{seg2} stays in incoming/ for the next run");
    ensure!(fs::read(wals.join("pg-xlog.db"))? == xlogdb_before, "xlog.db unchanged");
    let leftovers: Vec<String> = walk(&wals)?.into_iter().filter(|p| !p.ends_with("/filler")).filter(|p| !p.ends_with("pg-xlog.db") && !p.ends_with(&seg1)).collect();
    ensure!(leftovers.is_empty(), "no half-written file left in wals/: {leftovers:?}");
    ensure!(names_in(&site.server_dir().join("errors"))?.is_empty(), "a full disk is not the file's fault: nothing in errors/");

    disk.free()?;
    let r = site.run(&["archive-wal", "pg"])?;
    ensure!(r.code == 0 && r.stdout.contains(&format!("\t{seg2}\n")), "archived once space is back: {r}");
    ensure!(xlogdb_names(&site)? == [seg1.clone(), seg2.clone()], "xlog.db: {:?}", xlogdb_names(&site)?);
    for (seg, bytes) in [(&seg1, &bytes1), (&seg2, &bytes2)] {
        ensure!(fs::read(wals.join(&seg[..16]).join(seg))? == *bytes, "{seg} archived byte for byte");
    }
    ensure!(!incoming.join(&seg2).exists());
    drop(disk);
    Ok(())
});

/// Every file below `dir`, as paths.
fn walk(dir: &Path) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            out.extend(walk(&path)?);
        } else {
            out.push(path.display().to_string());
        }
    }
    Ok(out)
}

/// `barman receive-wal pg` with its stdout and stderr going to files, so a test can read what
/// it printed after it ended.
struct LoggedReceiver {
    child: Child,
    out: tempfile::NamedTempFile,
}

impl LoggedReceiver {
    fn start(site: &BarmanSite) -> anyhow::Result<LoggedReceiver> {
        let out = tempfile::NamedTempFile::new()?;
        let mut cmd = Command::new(barman_bin()?);
        cmd.arg("-c").arg(&site.config).args(["receive-wal", "pg"]).env_remove("BARMAN_CONFIG_FILE");
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("PG") {
                cmd.env_remove(&k);
            }
        }
        cmd.env("PGPASSFILE", "/nonexistent/pgpass")
            .stdin(Stdio::null())
            .stdout(out.reopen()?)
            .stderr(out.reopen()?);
        Ok(LoggedReceiver { child: cmd.spawn().context("starting receive-wal")?, out })
    }

    fn output(&self) -> String {
        fs::read_to_string(self.out.path()).unwrap_or_default()
    }
}

impl Drop for LoggedReceiver {
    fn drop(&mut self) {
        if !matches!(self.child.try_wait(), Ok(None)) {
            return;
        }
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        for _ in 0..100 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pg_test!(receive_wal_on_a_full_disk_stops_clearly_and_resumes_without_a_gap, |major| {
    let pg = keeping_cluster(major)?;
    let site = BarmanSite::new(&pg, &[])?;
    let streaming = site.server_dir().join("streaming");
    let Some(disk) = Tmpfs::mount(&streaming, 6)? else { return Ok(()) };
    create_slot(&site)?;
    let first = pg.sql("SELECT pg_walfile_name(pg_current_wal_lsn())")?;
    let mut receiver = LoggedReceiver::start(&site)?;
    wait_for("the receiver to stream", || streaming_started(&pg))?;
    wait_for("a .partial", || Ok(names_in(&streaming)?.iter().any(|n| n.ends_with(".partial"))))?;

    // No room for the next segment: the receiver can finish the one it has preallocated, and
    // stops when it cannot create the next.
    disk.fill()?;
    let mut status = None;
    wait_for("receive-wal to stop on the full disk", || {
        pg.generate_load(500)?;
        status = receiver.child.try_wait()?;
        Ok(status.is_some())
    })
    .with_context(|| receiver.output())?;
    let status = status.context("exited")?;
    let out = receiver.output();
    ensure!(!status.success(), "receive-wal exits non-zero on a full disk: {status:?}\n{out}");
    ensure!(
        out.contains("ERROR") && out.contains(&streaming.display().to_string()) && out.contains("No space left on device"),
        "the error names the path and ENOSPC:\n{out}"
    );

    // Nothing claimed that is not on disk: every complete file is a whole, true segment, and
    // the slot (which follows the flush position reported) is not past what was kept.
    let files = names_in(&streaming)?;
    let complete: Vec<&String> = files.iter().filter(|n| n.len() == 24).collect();
    for seg in &complete {
        ensure!(fs::read(streaming.join(seg))? == pg.read_data_file(&format!("pg_wal/{seg}"))?, "streaming/{seg} differs from the server's");
    }
    let kept = complete.last().with_context(|| format!("the preallocated segment was completed: {files:?}"))?;
    let restart: Lsn = pg.sql("SELECT restart_lsn FROM pg_replication_slots WHERE slot_name = 'barman'")?.parse()?;
    let kept_end = (segno_1mb(kept)? + 1) << 20;
    ensure!(restart.0 <= kept_end, "the slot was told up to {restart}, but streaming/ is complete only up to {kept}: {files:?}");

    disk.free()?;
    drop(receiver);
    let receiver = LoggedReceiver::start(&site)?;
    wait_for("the receiver to stream again", || streaming_started(&pg))?;
    pg.generate_load(1000)?;
    let last = pg.sql("SELECT pg_walfile_name(pg_switch_wal())")?;
    archive_is_complete(&pg, &site, &first, &last).with_context(|| receiver.output())?;
    drop(receiver);
    drop(disk);
    Ok(())
});

// ------------------------------------------------------------------ refused WAL

pg_test!(corrupt_truncated_and_foreign_wal_go_to_errors_with_the_reason, |major| {
    let pg = Cluster::start(ClusterOptions::new(major).wal_segsize_mb(1))?;
    let other = Cluster::start(ClusterOptions::new(major).wal_segsize_mb(1))?;
    let site = BarmanSite::new(&pg, &["archiver = on", "streaming_archiver = off"])?;
    let incoming = incoming(&site)?;
    write_identity(&pg, &site)?;

    let (good, good_bytes) = close_segment(&pg, 100)?;
    // Sixteen bytes flipped halfway through the segment's WAL, away from a page header: the
    // record holding them fails its CRC (or no longer parses).
    let (flipped, mut flipped_bytes) = close_segment(&pg, 1000)?;
    let wal_end = flipped_bytes.iter().rposition(|&b| b != 0).context("a segment with WAL")?;
    let mut at = wal_end / 2;
    if at % 8192 < 64 {
        at += 100;
    }
    flipped_bytes[at..at + 16].iter_mut().for_each(|b| *b ^= 0x5a);
    let (short, short_bytes) = close_segment(&pg, 100)?;
    // Another cluster's segment under a name this server has not archived.
    let (foreign, foreign_bytes) = loop {
        let (name, bytes) = close_segment(&other, 100)?;
        if ![&good, &flipped, &short].contains(&&name) {
            break (name, bytes);
        }
    };
    fs::write(incoming.join(&good), &good_bytes)?;
    fs::write(incoming.join(&flipped), &flipped_bytes)?;
    fs::write(incoming.join(&short), &short_bytes[..short_bytes.len() / 3])?;
    fs::write(incoming.join(&foreign), &foreign_bytes)?;

    let r = site.run(&["archive-wal", "pg"])?;
    ensure!(r.code == 0, "{r}");
    for (name, reason) in [(&flipped, "corrupt"), (&short, "corrupt"), (&foreign, "foreign")] {
        ensure!(
            r.stdout.contains(&format!("\tError: {name} is not valid WAL ({reason}: ")),
            "{name} refused as {reason}: {r}"
        );
    }
    ensure!(
        r.stdout.contains(&format!("system identifier {} is not this server's ({})", other.system_identifier()?, pg.system_identifier()?)),
        "the foreign file's reason names both systems: {r}"
    );
    ensure!(xlogdb_names(&site)? == [good.clone()], "only the valid segment is archived: {:?}", xlogdb_names(&site)?);
    let errors = names_in(&site.server_dir().join("errors"))?;
    for (name, reason) in [(&flipped, "corrupt"), (&short, "corrupt"), (&foreign, "foreign")] {
        ensure!(
            errors.iter().any(|e| e.starts_with(&format!("{name}.")) && e.ends_with(&format!(".{reason}"))),
            "errors/ has {name} as {reason}: {errors:?}"
        );
    }
    ensure!(names_in(&incoming)?.is_empty(), "incoming/ is empty: {:?}", names_in(&incoming)?);
    let log = log_text(&site);
    ensure!(log.contains("refusing WAL") && log.contains(&flipped), "the log has the details:\n{log}");
    if let Some(e) = errors.iter().find(|e| e.starts_with(&format!("{flipped}."))) {
        ensure!(fs::read(site.server_dir().join("errors").join(e))? == flipped_bytes, "the refused file is kept as it came");
    } else {
        bail!("no error file for {flipped}");
    }
    Ok(())
});
