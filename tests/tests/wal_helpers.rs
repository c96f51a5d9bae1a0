//! `barman-wal-archive` as PostgreSQL's `archive_command` and `barman-wal-restore` as a
//! `restore_command`, talking to `barman put-wal` / `get-wal` through a stand-in `ssh`.
//!
//! There is no sshd here, so `ssh` is a script placed first on `PATH`: it drops ssh's options
//! and `user@host` and runs the remote command line with `sh`, as the remote shell would.
//! Everything but the network is the real thing: the server's archiver runs the helper, the
//! tar stream crosses a pipe, `barman put-wal` checks it, `archive-wal` archives it, and
//! `get-wal` sends it back.
//!
//! When the tests run as root, PostgreSQL (and so its `archive_command`) runs as an
//! unprivileged user: the binaries are copied to a world-readable directory and the catalog's
//! `incoming/` is opened to that user, as an installation would give the Barman user's
//! account the rights it needs.

use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use anyhow::{ensure, Context as _};
use barman_core::put_wal::ChecksumAlgorithm;
use barman_tests::{barman_bin, pg_test, wait_for, BarmanRun, BarmanSite, Cluster, ClusterOptions};

/// The helper binary `name`, next to `barman`; built once per process when missing (as
/// `barman_bin` does for `barman`).
fn helper_bin(name: &str) -> anyhow::Result<PathBuf> {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    let barman = barman_bin()?;
    let bin = barman.with_file_name(name);
    if !bin.is_file() {
        BUILT
            .get_or_init(|| {
                let target_dir = barman.parent().and_then(Path::parent).ok_or("no target directory")?;
                let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
                let mut build = Command::new(cargo);
                build.args(["build", "-p", "barman-cli", "--bins"]).env("CARGO_TARGET_DIR", target_dir);
                if barman.parent().and_then(Path::file_name).is_some_and(|n| n == "release") {
                    build.arg("--release");
                }
                match build.status() {
                    Ok(s) if s.success() => Ok(()),
                    other => Err(format!("cargo build -p barman-cli --bins: {other:?}")),
                }
            })
            .clone()
            .map_err(anyhow::Error::msg)?;
    }
    ensure!(bin.is_file(), "{} was not built", bin.display());
    Ok(bin)
}

/// A directory holding `barman`, the two helpers and the fake `ssh`, readable by everyone.
struct Tools {
    dir: tempfile::TempDir,
}

impl Tools {
    fn new() -> anyhow::Result<Tools> {
        let dir = tempfile::tempdir()?;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
        std::fs::copy(barman_bin()?, dir.path().join("barman"))?;
        for name in ["barman-wal-archive", "barman-wal-restore"] {
            std::fs::copy(helper_bin(name)?, dir.path().join(name))?;
        }
        let ssh = dir.path().join("ssh");
        std::fs::write(
            &ssh,
            format!(
                "#!/bin/sh\n\
                 # Stand-in for ssh: skip its options and user@host, run the rest as the remote shell would.\n\
                 while [ $# -gt 0 ]; do\n  case \"$1\" in\n    -p) shift 2 ;;\n    -q|-T) shift ;;\n    *) break ;;\n  esac\ndone\n\
                 shift\nPATH={}:$PATH\nexport PATH\nexec sh -c \"$*\"\n",
                dir.path().display()
            ),
        )?;
        for name in ["barman", "barman-wal-archive", "barman-wal-restore", "ssh"] {
            std::fs::set_permissions(dir.path().join(name), std::fs::Permissions::from_mode(0o755))?;
        }
        Ok(Tools { dir })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Runs a helper with the fake ssh first on `PATH`.
    fn run(&self, name: &str, args: &[&str]) -> anyhow::Result<BarmanRun> {
        let path = format!("{}:{}", self.dir.path().display(), std::env::var("PATH").unwrap_or_default());
        let out = Command::new(self.path(name))
            .args(args)
            .env("PATH", path)
            .output()
            .with_context(|| format!("running {name}"))?;
        Ok(BarmanRun {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }
}

/// Lets the server's user (when the tests run as root) read the configuration and write
/// into `incoming/`.
fn open_incoming(site: &BarmanSite) -> anyhow::Result<()> {
    std::fs::set_permissions(site.home.path(), std::fs::Permissions::from_mode(0o755))?;
    std::fs::set_permissions(&site.config, std::fs::Permissions::from_mode(0o644))?;
    for dir in [site.server_dir(), site.server_dir().join("incoming")] {
        std::fs::create_dir_all(&dir)?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777))?;
    }
    Ok(())
}

/// `barman put-wal pg` fed `stream` on stdin.
pub(crate) fn put_wal(site: &BarmanSite, stream: &[u8]) -> anyhow::Result<BarmanRun> {
    let mut child = Command::new(barman_bin()?)
        .arg("-c")
        .arg(&site.config)
        .args(["put-wal", "pg"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    child.stdin.take().context("stdin")?.write_all(stream)?;
    let out = child.wait_with_output()?;
    Ok(BarmanRun {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// A tar stream of one file and a SHA256SUMS line with `checksum`; the name is written raw
/// so that hostile names can be sent.
fn stream(name: &str, data: &[u8], checksum: &str) -> anyhow::Result<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::new());
    let sums = format!("{checksum} *{name}\n");
    for (n, d) in [(name, data), ("SHA256SUMS", sums.as_bytes())] {
        let mut h = tar::Header::new_ustar();
        h.set_size(d.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        h.as_old_mut().name[..n.len()].copy_from_slice(n.as_bytes());
        h.set_cksum();
        b.append(&h, d)?;
    }
    Ok(b.into_inner()?)
}

fn sha256(data: &[u8]) -> String {
    let mut h = ChecksumAlgorithm::Sha256.hasher();
    h.update(data);
    h.finish_hex()
}

/// Writes a little WAL and switches: returns the name of the segment that was closed and its
/// bytes as the server wrote them.
fn close_segment(pg: &Cluster) -> anyhow::Result<(String, Vec<u8>)> {
    pg.generate_load(100)?;
    let name = pg.sql("SELECT pg_walfile_name(pg_current_wal_lsn())")?;
    pg.switch_wal()?;
    let bytes = pg.read_data_file(&format!("pg_wal/{name}"))?;
    Ok((name, bytes))
}

pg_test!(archive_and_restore_through_ssh, |major| {
    let pg = Cluster::start(ClusterOptions::new(major).wal_segsize_mb(1))?;
    let site = BarmanSite::new(&pg, &["archiver = on", "compression = gzip"])?;
    open_incoming(&site)?;
    let tools = Tools::new()?;
    let config = site.config.display().to_string();

    // The connectivity test, as Barman's commands/01-barman-wal-archive-test.txt.
    let t = tools.run("barman-wal-archive", &["--port", "22", "-U", "barman", "-c", &config, "--test", "127.0.0.1", "pg", "DUMMY"])?;
    ensure!(t.code == 0 && t.stdout == "Ready to accept WAL files for the server pg\n\n", "{t}");

    // PostgreSQL's archiver ships two segments through barman-wal-archive.
    pg.set_conf(
        "archive_command",
        &format!(
            "PATH={tools}:$PATH {archive} -U barman -c {config} 127.0.0.1 pg %p",
            tools = tools.dir.path().display(),
            archive = tools.path("barman-wal-archive").display(),
        ),
    )?;
    let (seg1, bytes1) = close_segment(&pg)?;
    let (seg2, bytes2) = close_segment(&pg)?;
    let incoming = site.server_dir().join("incoming");
    for (seg, bytes) in [(&seg1, &bytes1), (&seg2, &bytes2)] {
        wait_for(&format!("{seg} in incoming/"), || Ok(incoming.join(seg).is_file()))?;
        ensure!(std::fs::read(incoming.join(seg))? == *bytes, "{seg}: incoming copy differs from pg_wal");
    }
    let archived = site.run(&["archive-wal", "pg"])?;
    ensure!(archived.code == 0, "{archived}");
    for seg in [&seg1, &seg2] {
        ensure!(archived.stdout.contains(&format!("\t{seg}\n")), "{seg} archived: {archived}");
        ensure!(site.server_dir().join("wals").join(&seg[..16]).join(seg).is_file(), "{seg} in wals/");
    }

    // put-wal refuses a damaged file and a name that is not WAL, storing nothing.
    let name = "0000000100000000000000F0";
    let bad = put_wal(&site, &stream(name, b"not what was sent", &"0".repeat(64))?)?;
    ensure!(
        bad.code == 1
            && bad.stderr.contains(&format!(
                "ERROR: Bad file checksum '{}' (should be {}) for file '{name}' in put-wal for server 'pg'",
                sha256(b"not what was sent"),
                "0".repeat(64)
            )),
        "as Barman's commands/24-put-wal-bad-checksum.txt: {bad}"
    );
    ensure!(!incoming.join(name).exists(), "a refused file is not stored");
    let escape = put_wal(&site, &stream("../escape", b"x", &sha256(b"x"))?)?;
    ensure!(
        escape.code == 1 && escape.stderr.contains("ERROR: Unsupported filename '../escape' in put-wal for server 'pg'"),
        "{escape}"
    );
    ensure!(!site.server_dir().join("escape").exists(), "nothing written outside incoming/");

    // barman-wal-restore: plain, -z (recompressed for the trip), --keep-compression (stored gzip).
    let dest = tempfile::tempdir()?;
    let common = ["-U", "barman", "-c", &config, "127.0.0.1", "pg"];
    for (extra, file) in [(None, "plain"), (Some("-z"), "gzip"), (Some("--keep-compression"), "kept")] {
        let target = dest.path().join(file);
        let mut args: Vec<&str> = extra.into_iter().collect();
        args.extend(common);
        let target_text = target.display().to_string();
        args.extend([seg1.as_str(), target_text.as_str()]);
        let r = tools.run("barman-wal-restore", &args)?;
        ensure!(r.code == 0, "{extra:?}: {r}");
        ensure!(std::fs::read(&target)? == bytes1, "{extra:?}: restored {seg1} differs from the server's");
    }

    let t = tools.run("barman-wal-restore", &[&["--test"][..], &common[..], &["DUMMY", "DUMMY"]].concat())?;
    ensure!(t.code == 0 && t.stdout == "Ready to retrieve WAL files from the server pg\n\n", "{t}");

    // A file Barman does not have: exit 1, and no WAL_DEST left behind.
    let missing = dest.path().join("missing");
    let r = tools.run("barman-wal-restore", &[&common[..], &["0000000100000000000000FE", &missing.display().to_string()]].concat())?;
    ensure!(
        r.code == 1
            && r.stderr.contains("ERROR: WAL file '0000000100000000000000FE' not found in server 'pg'")
            && r.stderr.contains("ERROR: Remote 'barman get-wal' command has failed!"),
        "{r}"
    );
    ensure!(!missing.exists(), "a failed fetch leaves no file");

    // --parallel: fetching seg1 prefetches seg2 into the spool, from which the next call is served.
    let spool = dest.path().join("spool");
    let spool_text = spool.display().to_string();
    let out1 = dest.path().join("p1").display().to_string();
    let out2 = dest.path().join("p2").display().to_string();
    let parallel = ["-p", "3", "--spool-dir", spool_text.as_str()];
    let r = tools.run("barman-wal-restore", &[&parallel[..], &common[..], &[seg1.as_str(), out1.as_str()]].concat())?;
    ensure!(r.code == 0 && std::fs::read(&out1)? == bytes1, "{r}");
    ensure!(std::fs::read(spool.join(&seg2))? == bytes2, "{seg2} prefetched into the spool");
    // Served from the spool: it works even with a wrong configuration path.
    let r = tools.run(
        "barman-wal-restore",
        &[&parallel[..], &["-U", "barman", "-c", "/nonexistent", "127.0.0.1", "pg", &seg2, &out2]].concat(),
    )?;
    ensure!(r.code == 0 && std::fs::read(&out2)? == bytes2, "{r}");
    ensure!(!spool.join(&seg2).exists(), "the spooled file was moved, not copied");
    Ok(())
});
