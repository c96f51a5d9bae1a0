//! What an operator must be able to rely on about secrets and files: the catalog is private
//! to the Barman user, passwords never leave the configuration, TLS and SCRAM channel
//! binding hold when asked for, and names coming from outside never reach a path outside
//! the catalog.
//!
//! TLS verification against the right and a wrong CA is tested in `connection::tls_modes`.

use std::fs;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{ensure, Context as _};
use barman_core::catalog::{CatalogLock, LockKind};
use barman_core::put_wal::ChecksumAlgorithm;
use barman_core::error_chain;
use barman_replication::{ConnConfig, Connection, Error, SessionKind};
use barman_tests::{
    barman_bin, pg_test, wait_for, AuthMethod, BarmanRun, BarmanSite, Cluster, ClusterOptions, PASSWORD,
    STREAMING_USER, SUPERUSER,
};

use crate::wal_helpers::put_wal;

fn block_on<T>(f: impl std::future::Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(f)
}

fn receiver_pid(site: &BarmanSite) -> anyhow::Result<Option<u32>> {
    Ok(CatalogLock::owner_pid(site.home.path(), "pg", &LockKind::ServerReceiveWal)?)
}

/// Every entry under `dir` (not `dir` itself), depth first.
fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    for entry in fs::read_dir(dir).with_context(|| dir.display().to_string())? {
        let path = entry?.path();
        let meta = fs::symlink_metadata(&path)?;
        out.push(path.clone());
        if meta.is_dir() {
            walk(&path, out)?;
        }
    }
    Ok(())
}

pg_test!(catalog_is_private_after_backup_and_archiving, |major| {
    let pg = Cluster::start(ClusterOptions::new(major).wal_segsize_mb(1))?;
    let site = BarmanSite::new(&pg, &["compression = gzip", "immediate_checkpoint = true"])?;
    let r = site.run(&["receive-wal", "--create-slot", "pg"])?;
    ensure!(r.code == 0, "{r}");
    let _receiver = site.spawn(&["receive-wal", "pg"])?;
    wait_for("the receiver", || Ok(receiver_pid(&site)?.is_some()))?;
    let r = site.run(&["switch-wal", "--force", "--archive", "--archive-timeout", "60", "pg"])?;
    ensure!(r.code == 0, "{r}");
    pg.generate_load(500)?;
    let r = site.run(&["backup", "--wait", "--wait-timeout", "60", "pg"])?;
    ensure!(r.code == 0, "{r}");
    let r = site.run(&["cron"])?;
    ensure!(r.code == 0, "{r}");
    let r = site.run(&["archive-wal", "pg"])?;
    ensure!(r.code == 0, "{r}");

    let mut entries = Vec::new();
    walk(site.home.path(), &mut entries)?;
    let has = |suffix: &str| entries.iter().any(|p| p.to_string_lossy().ends_with(suffix));
    ensure!(has("wals/pg-xlog.db") && has("-backup.info") && has("/data/PG_VERSION"), "the cycle wrote a catalog and a backup");
    let mut wrong = Vec::new();
    for path in &entries {
        // The configuration file is the test's, not barman's.
        if *path == site.config {
            continue;
        }
        let meta = fs::symlink_metadata(path)?;
        let mode = meta.mode() & 0o7777;
        let want = if meta.is_dir() { 0o700 } else { 0o600 };
        if meta.file_type().is_symlink() {
            continue;
        }
        if mode != want {
            wrong.push(format!("{} {:o} (want {want:o})", path.display(), mode));
        }
    }
    ensure!(wrong.is_empty(), "catalog entries readable by others:\n{}", wrong.join("\n"));
    Ok(())
});

/// Runs `barman receive-wal pg` and returns the process (stdout/stderr discarded).
fn spawn_receiver(site: &BarmanSite) -> anyhow::Result<std::process::Child> {
    let mut cmd = Command::new(barman_bin()?);
    cmd.arg("-c").arg(&site.config).args(["receive-wal", "pg"]).env_remove("BARMAN_CONFIG_FILE");
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("PG") {
            cmd.env_remove(&k);
        }
    }
    Ok(cmd.env("PGPASSFILE", "/nonexistent/pgpass").stdout(Stdio::null()).stderr(Stdio::null()).spawn()?)
}

/// The command lines of `pid` and of all its descendants.
fn cmdlines(pid: u32) -> Vec<String> {
    let mut out = Vec::new();
    let mut todo = vec![pid];
    while let Some(pid) = todo.pop() {
        if let Ok(raw) = fs::read(format!("/proc/{pid}/cmdline")) {
            out.push(String::from_utf8_lossy(&raw).replace('\0', " "));
        }
        if let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) {
            for task in tasks.flatten() {
                if let Ok(children) = fs::read_to_string(task.path().join("children")) {
                    todo.extend(children.split_whitespace().filter_map(|c| c.parse::<u32>().ok()));
                }
            }
        }
    }
    out
}

fn ensure_hidden(what: &str, text: &str, secrets: &[&str]) -> anyhow::Result<()> {
    for secret in secrets {
        ensure!(!text.contains(secret), "{what} shows the password {secret:?}:\n{text}");
    }
    Ok(())
}

pg_test!(passwords_never_leak, |major| {
    let pg = Cluster::start(ClusterOptions::new(major).auth(AuthMethod::ScramSha256))?;
    let site = BarmanSite::new(&pg, &[])?;
    // The barman user's password in its conninfo, the streaming user's in a passfile only;
    // logging at DEBUG so that nothing is left out of the log.
    let passfile = site.home.path().join("pgpass");
    fs::write(&passfile, format!("127.0.0.1:{}:*:{STREAMING_USER}:{PASSWORD}\n", pg.port()))?;
    fs::set_permissions(&passfile, fs::Permissions::from_mode(0o600))?;
    let text = fs::read_to_string(&site.config)?;
    let stream_line = text.lines().find(|l| l.starts_with("streaming_conninfo")).context("streaming_conninfo")?.to_owned();
    let text = text
        .replace(&stream_line, &format!("streaming_conninfo = {} passfile={}", pg.conninfo(STREAMING_USER), passfile.display()))
        .replace("log_level = INFO", "log_level = DEBUG");
    fs::write(&site.config, &text)?;
    ensure!(text.contains(&format!("password={PASSWORD}")), "the password is in the conninfo: {text}");

    let r = site.run(&["receive-wal", "--create-slot", "pg"])?;
    ensure!(r.code == 0, "{r}");
    let mut receiver = spawn_receiver(&site)?;
    wait_for("the receiver to stream", || {
        Ok(pg.sql("SELECT count(*) FROM pg_stat_replication WHERE application_name = 'barman_receive_wal'")? == "1")
    })?;
    let lines = cmdlines(receiver.id());
    ensure!(!lines.is_empty(), "read /proc/{}/cmdline", receiver.id());
    ensure_hidden("the command line of receive-wal or a child", &lines.join("\n"), &[PASSWORD])?;

    let mut outputs: Vec<(String, BarmanRun)> = Vec::new();
    for args in [
        &["check", "pg"][..],
        &["diagnose"],
        &["show-servers", "pg"],
        &["show-servers", "pg", "-f", "json"],
        &["status", "pg"],
        &["replication-status", "pg"],
    ] {
        outputs.push((args.join(" "), site.run(args)?));
    }
    let _ = Command::new("kill").arg("-TERM").arg(receiver.id().to_string()).status();
    receiver.wait()?;

    // A wrong password, in the conninfo and in the passfile: the errors say who and where,
    // never what was tried.
    let wrong = "wr0ng-pa55word-xyz";
    fs::write(&passfile, format!("127.0.0.1:{}:*:{STREAMING_USER}:{wrong}\n", pg.port()))?;
    fs::write(&site.config, text.replace(&format!("password={PASSWORD}"), &format!("password={wrong}")))?;
    for args in [&["check", "pg"][..], &["receive-wal", "pg"], &["switch-wal", "--force", "pg"], &["backup", "pg"]] {
        let r = site.run(args)?;
        ensure!(r.code != 0 || args[0] == "check", "{args:?} with a wrong password fails: {r}");
        outputs.push((format!("{} (wrong password)", args.join(" ")), r));
    }
    for (what, r) in &outputs {
        ensure_hidden(what, &format!("{}{}", r.stdout, r.stderr), &[PASSWORD, wrong])?;
    }
    let wrong_check = outputs.iter().find(|(w, _)| w == "check pg (wrong password)").context("check")?;
    ensure!(
        wrong_check.1.stdout.contains("FAILED"),
        "check reports the failed connection: {}",
        wrong_check.1
    );
    let log = fs::read_to_string(site.home.path().join("barman.log")).context("barman.log")?;
    ensure!(log.contains("password authentication failed"), "the log has the reason:\n{log}");
    ensure_hidden("barman.log", &log, &[PASSWORD, wrong])?;
    Ok(())
});

fn conf(conninfo: &str) -> anyhow::Result<ConnConfig> {
    let mut c = ConnConfig::parse_with_env(conninfo, |_| None)?;
    c.passfile = Some("/nonexistent/pgpass".into());
    Ok(c)
}


pg_test!(scram_channel_binding_required, |major| {
    let tls = Cluster::start(ClusterOptions::new(major).auth(AuthMethod::ScramSha256).tls(true))?;
    let plain = Cluster::start(ClusterOptions::new(major).auth(AuthMethod::ScramSha256))?;
    block_on(async {
        // Over TLS: SCRAM-SHA-256-PLUS, or the connection would have been refused.
        let ok = format!(
            "{} password={PASSWORD} sslmode=verify-full sslrootcert={} channel_binding=require",
            tls.conninfo(STREAMING_USER),
            tls.ca_cert_path().display()
        );
        let mut c = Connection::connect(&conf(&ok)?, SessionKind::Physical).await?;
        ensure!(c.is_tls(), "channel binding over TLS");
        c.identify_system().await?;
        c.close().await?;

        // Without TLS there is nothing to bind to.
        let no_tls = format!("{} password={PASSWORD} sslmode=disable channel_binding=require", plain.conninfo(STREAMING_USER));
        let e = Connection::connect(&conf(&no_tls)?, SessionKind::Physical).await.expect_err("no TLS");
        let msg = error_chain(&e);
        ensure!(matches!(e, Error::ChannelBindingRequired { .. }), "{msg}");
        ensure!(msg.contains("channel_binding=require") && msg.contains("not TLS") && msg.contains("127.0.0.1"), "{msg}");
        ensure!(!msg.contains(PASSWORD), "{msg}");

        // A server that lets us in without SCRAM (trust over its socket) is refused too.
        let trust = format!("{} channel_binding=require", plain.socket_conninfo(SUPERUSER));
        let e = Connection::connect(&conf(&trust)?, SessionKind::Normal).await.expect_err("trust");
        ensure!(matches!(e, Error::ChannelBindingRequired { .. }) && error_chain(&e).contains("without channel binding"), "{}", error_chain(&e));

        // channel_binding=disable still logs in over TLS, without binding.
        let off = ok.replace("channel_binding=require", "channel_binding=disable");
        Connection::connect(&conf(&off)?, SessionKind::Physical).await?.close().await?;
        Ok(())
    })?;

    // The same through barman: receive-wal --create-slot with channel_binding=require and no TLS.
    let site = BarmanSite::new(&plain, &[])?;
    let text = fs::read_to_string(&site.config)?;
    fs::write(&site.config, text.replace("dbname=postgres password=", "dbname=postgres channel_binding=require password="))?;
    let r = site.run(&["receive-wal", "--create-slot", "pg"])?;
    ensure!(r.code != 0, "{r}");
    let r = site.run(&["check", "pg"])?;
    ensure!(r.code != 0 && r.stdout.contains("FAILED"), "{r}");
    let log = fs::read_to_string(site.home.path().join("barman.log")).unwrap_or_default();
    ensure!(log.contains("channel_binding=require, but"), "the log says why:\n{log}");
    Ok(())
});

// ------------------------------------------------------------------ names from outside

/// The helper binary `name`, next to `barman` (built by `cargo build -p barman-cli --bins`,
/// as `wal_helpers` does when missing).
fn helper_bin(name: &str) -> anyhow::Result<PathBuf> {
    let bin = barman_bin()?.with_file_name(name);
    if !bin.is_file() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let status = Command::new(cargo).args(["build", "-p", "barman-cli", "--bins"]).status()?;
        ensure!(status.success() && bin.is_file(), "{} was not built", bin.display());
    }
    Ok(bin)
}

fn run(cmd: &mut Command) -> anyhow::Result<BarmanRun> {
    let out = cmd.stdin(Stdio::null()).output()?;
    Ok(BarmanRun {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// A put-wal tar stream of one file named `name` (written raw) and its SHA256SUMS.
fn put_wal_stream(name: &str, data: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut h = ChecksumAlgorithm::Sha256.hasher();
    h.update(data);
    let sums = format!("{} *{name}\n", h.finish_hex());
    let mut b = tar::Builder::new(Vec::new());
    for (n, d) in [(name, data), ("SHA256SUMS", sums.as_bytes())] {
        let mut header = tar::Header::new_ustar();
        header.set_size(d.len() as u64);
        header.set_mode(0o644);
        header.set_entry_type(tar::EntryType::Regular);
        header.as_old_mut().name[..n.len()].copy_from_slice(n.as_bytes());
        header.set_cksum();
        b.append(&header, d)?;
    }
    Ok(b.into_inner()?)
}


/// Names that point outside the catalog, or into a shell.
const HOSTILE: &[&str] = &[
    "../../etc/passwd",
    "000000010000000000000001/../x",
    "../000000010000000000000001",
    "/tmp/000000010000000000000001",
    "000000010000000000000001'; touch pwned; '",
];

pg_test!(wal_names_from_outside_stay_inside_the_catalog, |major| {
    let pg = Cluster::start(ClusterOptions::new(major).wal_segsize_mb(1))?;
    // The catalog inside a directory of its own, so that "outside" is a place to look at.
    let site = BarmanSite::new(&pg, &["archiver = on"])?;
    let outside = site.home.path().to_path_buf();
    let incoming = site.server_dir().join("incoming");
    fs::create_dir_all(&incoming)?;
    let before = listing(&outside)?;

    for name in HOSTILE {
        let r = put_wal(&site, &put_wal_stream(name, b"not wal")?)?;
        ensure!(
            r.code == 1 && r.stderr.contains(&format!("Unsupported filename '{name}' in put-wal for server 'pg'")),
            "put-wal refuses {name:?}: {r}"
        );

        let out_dir = tempfile::tempdir()?;
        let r = site.run(&["get-wal", "-o", &out_dir.path().display().to_string(), "pg", name])?;
        ensure!(r.code != 0 && r.stderr.contains(name), "get-wal refuses {name:?} naming it: {r}");
        ensure!(fs::read_dir(out_dir.path())?.next().is_none(), "get-wal wrote nothing for {name:?}");

    }
    // barman-wal-restore: the name would become a spool path (an existing "spooled" file is
    // moved to WAL_DEST) and part of the ssh command line.
    for name in HOSTILE.iter().chain(&["../planted"]) {
        let spool = tempfile::tempdir()?;
        let planted = spool.path().join("planted");
        fs::create_dir(spool.path().join("spool"))?;
        fs::write(&planted, b"secret")?;
        let dest = spool.path().join("dest");
        let r = run(Command::new(helper_bin("barman-wal-restore")?)
            .args(["-U", "barman", "-c", "/nonexistent.conf", "--spool-dir"])
            .arg(spool.path().join("spool"))
            .args(["-p", "2", "127.0.0.1", "pg", name])
            .arg(&dest)
            .env("PATH", "/nonexistent"))?;
        ensure!(r.code != 0 && r.stderr.contains("is not a WAL file name"), "barman-wal-restore refuses {name:?}: {r}");
        ensure!(fs::read(&planted)? == b"secret", "nothing moved out of place for {name:?}");
        ensure!(!dest.exists(), "no WAL_DEST for {name:?}");
    }
    // A file put in incoming/ by hand under a name that is not WAL goes to errors/, named.
    fs::write(incoming.join("passwd"), b"root:x:0:0")?;
    let r = site.run(&["archive-wal", "pg"])?;
    ensure!(r.code == 0 && r.stdout.contains("\tpasswd\n"), "{r}");
    let errors = fs::read_dir(site.server_dir().join("errors"))?.filter_map(|e| e.ok()?.file_name().into_string().ok()).collect::<Vec<_>>();
    ensure!(errors.iter().any(|e| e.starts_with("passwd.") && e.ends_with(".unknown")), "{errors:?}");

    let after = listing(&outside)?;
    let added: Vec<&String> = after.iter().filter(|p| !before.contains(p)).collect();
    let stray: Vec<&&String> = added
        .iter()
        .filter(|p| !p.starts_with(&site.server_dir().display().to_string()) && !p.ends_with("barman.log"))
        .filter(|p| !p.contains("/.") )
        .collect();
    ensure!(stray.is_empty(), "files written outside the server's catalog: {stray:?}");
    ensure!(!Path::new("pwned").exists() && !site.home.path().join("pwned").exists(), "no shell ran the name");
    Ok(())
});

/// Every path under `dir`.
fn listing(dir: &Path) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    walk(dir, &mut out)?;
    Ok(out.into_iter().map(|p| p.display().to_string()).collect())
}
