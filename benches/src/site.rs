//! One benchmark site: the running cluster (a copy of the cached dataset), a barman-rs catalog
//! streaming its WAL, a pgBackRest stanza archiving the same WAL, a real Barman catalog
//! streaming it too ([`BarmanPy`]), and the tools' paths.
//!
//! The WAL paths run for the whole run, for every tool, as they would in production: barman-rs
//! `receive-wal` and real Barman's (asynchronous; both stopped during the synchronous-standby
//! work) and PostgreSQL's `archive_command = pgbackrest archive-push`. pgBackRest runs as the server user (its repo
//! is written by `archive-push`, which the server runs); barman-rs and pg_basebackup run as the
//! current user, over TCP to 127.0.0.1 with `trust`.

use std::cell::RefCell;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{bail, ensure, Context as _};
use barman_tests::{
    server_user, wait_for, Cluster, RunCommand as _, ServerUser, BARMAN_USER, STREAMING_USER,
    SUPERUSER,
};

use crate::barman_py::BarmanPy;
use crate::dataset::{self, Size};
use crate::measure::{CachePolicy, Job};

/// The barman-rs binaries of this build.
#[derive(Debug, Clone)]
pub struct Bins {
    /// `barman`.
    pub barman: PathBuf,
    /// `barman-wal-restore`.
    pub wal_restore: PathBuf,
}

/// Everything one run measures against.
pub struct Site {
    /// The server.
    pub pg: Cluster,
    /// Scratch directory (mode 0755): catalogs, repos, outputs; removed at the end.
    pub scratch: tempfile::TempDir,
    /// The user pgBackRest runs as (the server user), `None` when not root.
    pub user: Option<ServerUser>,
    /// barman-rs binaries.
    pub bins: Bins,
    /// `barman.conf`.
    pub barman_conf: PathBuf,
    /// `barman_home`.
    pub barman_home: PathBuf,
    /// Directory with `barman` and a stand-in `ssh` (for barman-wal-restore).
    pub tools_dir: PathBuf,
    /// pgBackRest configuration (`None` when pgBackRest is not installed).
    pub pgbr_conf: Option<PathBuf>,
    /// pgBackRest configuration of the separate archive-push stanza (archive-wal work).
    pub pgbr_arch_conf: Option<PathBuf>,
    /// Real Barman's site, or why there is none (not installed, set-up failed).
    pub barman_py: Result<BarmanPy, String>,
    /// Cache policy before each measured run.
    pub cache: CachePolicy,
    /// The run's size.
    pub size: Size,
    /// Extra `[pg]` lines (backup_compression) currently in barman.conf.
    barman_extra: RefCell<Vec<String>>,
    receiver: RefCell<Option<Child>>,
    /// The WAL segments made for get-wal / archive-wal, and a plain copy of each.
    pub wal: RefCell<Option<WalSet>>,
}

/// Full WAL segments present in both archives, with plain copies in `stage`.
#[derive(Debug, Clone)]
pub struct WalSet {
    /// Segment names, in order.
    pub names: Vec<String>,
    /// Directory holding a plain (decompressed) copy of each, readable by the server user.
    pub stage: PathBuf,
    /// Whether real Barman's archive holds them too, or why not.
    pub barman_py: Result<(), String>,
}

impl Site {
    /// Starts a cluster on a copy of the dataset and sets the catalogs up: barman-rs,
    /// pgBackRest when `pgbackrest`, real Barman when `barman_py` is its program (else why not).
    /// A real Barman that fails to set up is reported in its rows; the run goes on.
    pub fn start(
        major: u32,
        dataset: &Path,
        bins: Bins,
        cache: CachePolicy,
        size: Size,
        pgbackrest: bool,
        barman_py: Result<PathBuf, String>,
    ) -> anyhow::Result<Site> {
        let scratch = tempfile::Builder::new()
            .prefix("barman-bench-")
            .tempdir_in("/tmp")
            .context("scratch directory")?;
        std::fs::set_permissions(scratch.path(), std::fs::Permissions::from_mode(0o755))?;
        let copy = scratch.path().join("dataset-copy");
        Command::new("cp")
            .arg("-a")
            .arg(dataset)
            .arg(&copy)
            .run()
            .context("copying the cached dataset")?;
        let pg = Cluster::start_on_data_dir(dataset::cluster_options(major), &copy)?;
        let user = server_user()?;

        let barman_home = scratch.path().join("barman");
        std::fs::create_dir_all(&barman_home)?;
        let tools_dir = scratch.path().join("tools");
        std::fs::create_dir_all(&tools_dir)?;
        std::os::unix::fs::symlink(&bins.barman, tools_dir.join("barman"))?;
        // Stand-in for ssh (no sshd here): drop ssh's options and user@host, run the rest with
        // sh as the remote shell would — the same script the e2e tests use.
        let ssh = tools_dir.join("ssh");
        std::fs::write(
            &ssh,
            format!(
                "#!/bin/sh\n\
                 while [ $# -gt 0 ]; do\n  case \"$1\" in\n    -p) shift 2 ;;\n    -q|-T) shift ;;\n    *) break ;;\n  esac\ndone\n\
                 shift\nPATH={}:$PATH\nexport PATH\nexec sh -c \"$*\"\n",
                tools_dir.display()
            ),
        )?;
        std::fs::set_permissions(&ssh, std::fs::Permissions::from_mode(0o755))?;

        let mut site = Site {
            barman_conf: barman_home.join("barman.conf"),
            barman_home,
            tools_dir,
            pg,
            scratch,
            user,
            bins,
            pgbr_conf: None,
            pgbr_arch_conf: None,
            barman_py: Err("not set up".into()),
            cache,
            size,
            barman_extra: RefCell::new(Vec::new()),
            receiver: RefCell::new(None),
            wal: RefCell::new(None),
        };
        site.write_barman_conf()?;
        if pgbackrest {
            site.setup_pgbackrest()?;
        }
        site.setup_barman()?;
        site.barman_py = match barman_py {
            Ok(exe) => {
                let dir = site.fresh_dir("barman-py", false)?;
                BarmanPy::setup(exe, &site.pg, &dir).map_err(|e| {
                    eprintln!("real Barman could not be set up ({e:#}): its rows say so");
                    format!("set-up failed: {}", crate::barman_py::reason(&e))
                })
            }
            Err(why) => Err(why),
        };
        Ok(site)
    }

    /// A path in the scratch directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.scratch.path().join(name)
    }

    /// A fresh empty directory in scratch, owned by the server user when `for_server`.
    pub fn fresh_dir(&self, name: &str, for_server: bool) -> anyhow::Result<PathBuf> {
        let dir = self.path(name);
        if dir.exists() {
            std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
        }
        std::fs::create_dir_all(&dir)?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
        if for_server {
            self.give(&dir)?;
        }
        Ok(dir)
    }

    /// Hands `path` to the server user.
    pub fn give(&self, path: &Path) -> anyhow::Result<()> {
        if let Some(u) = &self.user {
            Command::new("chown")
                .arg("-R")
                .arg(format!("{}:{}", u.uid, u.gid))
                .arg(path)
                .run()?;
        }
        Ok(())
    }

    fn write_barman_conf(&self) -> anyhow::Result<()> {
        let conn = self.pg.conninfo(BARMAN_USER);
        let stream = self.pg.conninfo(STREAMING_USER);
        let mut text = format!(
            "[barman]\nbarman_home = {home}\nbarman_user = root\nlog_level = WARNING\n\n\
             [arch]\ndescription = \"archive-wal benchmark\"\nconninfo = {conn}\n\
             backup_method = postgres\nstreaming_archiver = off\narchiver = on\ncompression = zstd\n\n\
             [pg]\ndescription = \"benchmark\"\nconninfo = {conn}\nstreaming_conninfo = {stream}\n\
             backup_method = postgres\nstreaming_archiver = on\narchiver = off\nslot_name = barman\n\
             compression = zstd\nimmediate_checkpoint = true\n",
            home = self.barman_home.display(),
        );
        for line in self.barman_extra.borrow().iter() {
            text.push_str(line);
            text.push('\n');
        }
        std::fs::write(&self.barman_conf, text).context("writing barman.conf")?;
        std::fs::set_permissions(&self.barman_conf, std::fs::Permissions::from_mode(0o644))?;
        Ok(())
    }

    /// Replaces the extra `[pg]` lines (e.g. `backup_compression = zstd`).
    pub fn set_barman_extra(&self, lines: &[&str]) -> anyhow::Result<()> {
        *self.barman_extra.borrow_mut() = lines.iter().map(|s| (*s).to_owned()).collect();
        self.write_barman_conf()
    }

    /// `barman -c CONF args…` as a job.
    pub fn barman(&self, args: &[&str]) -> Job {
        Job::new(&self.bins.barman)
            .args(["-c".as_ref(), self.barman_conf.as_os_str()])
            .args(args.iter().copied())
    }

    /// `pgbackrest --config=CONF args…` as the server user.
    pub fn pgbackrest(&self, args: &[&str]) -> anyhow::Result<Job> {
        let conf = self
            .pgbr_conf
            .as_ref()
            .context("pgBackRest is not installed")?;
        Ok(Job::new("/usr/bin/pgbackrest")
            .arg_conf(conf)
            .args(args.iter().copied())
            .user(self.user.clone()))
    }

    /// A job of this server's bin directory (pg_basebackup, pg_receivewal), as the current user.
    pub fn pg_tool(&self, name: &str) -> Job {
        Job::new(self.pg.bin_dir().join(name))
    }

    fn setup_barman(&self) -> anyhow::Result<()> {
        let out = self.barman(&["receive-wal", "--create-slot", "pg"]).run();
        out.context("barman receive-wal --create-slot")?;
        self.start_receiver()?;
        self.barman(&[
            "switch-wal",
            "--force",
            "--archive",
            "--archive-timeout",
            "120",
            "pg",
        ])
        .run()
        .context("barman switch-wal --archive (first WAL)")?;
        Ok(())
    }

    /// Starts the background `barman receive-wal pg` of barman-rs (asynchronous unless the
    /// server names it) and real Barman's.
    pub fn start_receiver(&self) -> anyhow::Result<()> {
        if let Ok(b) = &self.barman_py {
            b.start_receiver()?;
            // Up and streaming before anything may stop it again.
            b.wait_streaming(&self.pg)?;
        }
        if self.receiver.borrow().is_some() {
            return Ok(());
        }
        let log = std::fs::File::create(self.path("receive-wal.log"))?;
        let child = self
            .barman(&["receive-wal", "pg"])
            .command()
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting barman receive-wal")?;
        *self.receiver.borrow_mut() = Some(child);
        Ok(())
    }

    /// Stops the background receivers: barman-rs's (SIGTERM, by its process ID) and real
    /// Barman's.
    pub fn stop_receiver(&self) -> anyhow::Result<()> {
        let barman_py = self.barman_py.as_ref().map_or(Ok(()), BarmanPy::stop_receiver);
        self.stop_rs_receiver()?;
        barman_py
    }

    /// barman-rs's receiver: SIGTERM by its process ID, SIGKILL after 10 s.
    fn stop_rs_receiver(&self) -> anyhow::Result<()> {
        if let Some(mut child) = self.receiver.borrow_mut().take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            for _ in 0..200 {
                if child.try_wait()?.is_some() {
                    return Ok(());
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        Ok(())
    }

    fn setup_pgbackrest(&mut self) -> anyhow::Result<()> {
        let base = self.fresh_dir("pgbackrest", true)?;
        let conf = self.write_pgbr_conf(&base, "repo", "bench")?;
        let arch_conf = self.write_pgbr_conf(&base, "repo-arch", "bench")?;
        self.pgbr_conf = Some(conf.clone());
        self.pgbr_arch_conf = Some(arch_conf.clone());
        for c in [&conf, &arch_conf] {
            Job::new("/usr/bin/pgbackrest")
                .arg_conf(c)
                .args(["--stanza=bench", "stanza-create"])
                .user(self.user.clone())
                .run()
                .context("pgbackrest stanza-create")?;
        }
        self.pg.set_conf(
            "archive_command",
            &format!(
                "/usr/bin/pgbackrest --config={} --stanza=bench archive-push %p",
                conf.display()
            ),
        )?;
        self.pgbackrest(&["--stanza=bench", "check"])?
            .run()
            .context("pgbackrest check")?;
        Ok(())
    }

    fn write_pgbr_conf(&self, base: &Path, repo: &str, stanza: &str) -> anyhow::Result<PathBuf> {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let text = format!(
            "[global]\nrepo1-path={base}/{repo}\nrepo1-retention-full=3\nprocess-max={cores}\n\
             compress-type=zst\ncompress-level=3\nstart-fast=y\nlog-level-console=warn\n\
             log-level-file=off\nlock-path={base}/lock\nspool-path={base}/spool\n\
             log-path={base}/log\n\n[{stanza}]\npg1-path={data}\npg1-port={port}\n\
             pg1-socket-path={sock}\npg1-user={su}\n",
            base = base.display(),
            data = self.pg.data_dir().display(),
            port = self.pg.port(),
            sock = self.pg.socket_dir().display(),
            su = SUPERUSER,
        );
        let path = base.join(format!("{repo}.conf"));
        std::fs::write(&path, text)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))?;
        self.give(base)?;
        Ok(path)
    }

    /// Runs SQL as the superuser.
    pub fn sql(&self, q: &str) -> anyhow::Result<String> {
        self.pg.sql(q)
    }

    /// The entries of `dir` (names), for spotting what a tool added.
    pub fn entries(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .map(|it| {
                it.filter_map(Result::ok)
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    /// The barman-rs backup IDs in the catalog, oldest first.
    pub fn barman_backups(&self) -> Vec<String> {
        Site::entries(&self.barman_home.join("pg/meta"))
            .into_iter()
            .filter_map(|n| n.strip_suffix("-backup.info").map(str::to_owned))
            .collect()
    }

    /// Removes a barman-rs backup from the catalog by hand (base/ and meta/), to save disk.
    pub fn drop_barman_backup(&self, id: &str) {
        let _ = std::fs::remove_dir_all(self.barman_home.join("pg/base").join(id));
        let _ = std::fs::remove_file(
            self.barman_home
                .join("pg/meta")
                .join(format!("{id}-backup.info")),
        );
    }

    /// The pgBackRest backup labels, oldest first.
    pub fn pgbr_backups(&self) -> Vec<String> {
        Site::entries(&self.path("pgbackrest/repo/backup/bench"))
            .into_iter()
            .filter(|n| n.len() >= 16 && n.as_bytes()[8] == b'-' && n.ends_with('F'))
            .collect()
    }

    /// Makes `count` full WAL segments (bulk inserts of random text), waits until the barman-rs
    /// archive, pgBackRest's and real Barman's hold them (the same bytes), and stages a plain
    /// copy of each. Real Barman failing here only takes it out of the WAL works.
    pub fn ensure_wal(&self, count: usize) -> anyhow::Result<WalSet> {
        if let Some(w) = self.wal.borrow().as_ref() {
            return Ok(w.clone());
        }
        eprintln!("wal: making {count} full WAL segments");
        self.sql("CREATE TABLE IF NOT EXISTS bench_walgen (body text)")?;
        let first = self.sql("SELECT pg_walfile_name(pg_current_wal_lsn())")?;
        let mut names;
        loop {
            self.sql(
                "INSERT INTO bench_walgen SELECT md5(random()::text) || md5(random()::text) \
                 FROM generate_series(1, 100000)",
            )?;
            let now = self.sql("SELECT pg_walfile_name(pg_current_wal_lsn())")?;
            names = segments_between(&first, &now)?;
            // Drop the first (partly older WAL) and the current (still open) segment.
            if names.len() >= count + 2 {
                break;
            }
        }
        let names: Vec<String> = names[1..=count].to_vec();
        self.sql("SELECT pg_switch_wal()")?;
        self.sql("DROP TABLE bench_walgen")?;
        let last = names.last().context("no segment")?.clone();
        let wals = self.barman_home.join("pg/wals").join(&last[..16]).join(&last);
        wait_for(&format!("barman-rs to archive {last}"), || {
            self.barman(&["archive-wal", "pg"]).run()?;
            Ok(wals.is_file())
        })?;
        let stage = self.fresh_dir("wal-stage", true)?;
        for n in &names {
            let out = std::fs::File::create(stage.join(n))?;
            let status = self
                .barman(&["get-wal", "pg", n])
                .command()
                .stdout(out)
                .status()?;
            ensure!(status.success(), "barman get-wal {n} failed");
            let len = std::fs::metadata(stage.join(n))?.len();
            ensure!(len == 16 * 1024 * 1024, "{n}: get-wal gave {len} bytes");
        }
        self.give(&stage)?;
        if self.pgbr_conf.is_some() {
            let probe = self.fresh_dir("wal-probe", true)?;
            let target = probe.join(&last);
            let job = self.pgbackrest(&[
                "--stanza=bench",
                "archive-get",
                &last,
                target.to_str().context("utf-8 path")?,
            ])?;
            wait_for(&format!("pgBackRest to archive {last}"), || {
                Ok(job.command().output()?.status.success())
            })?;
            let same = std::fs::read(&target)? == std::fs::read(stage.join(&last))?;
            if !same {
                bail!("{last}: pgBackRest and barman-rs archives disagree");
            }
        }
        let barman_py = self.ensure_barman_py_wal(&last, &stage);
        let set = WalSet { names, stage, barman_py };
        *self.wal.borrow_mut() = Some(set.clone());
        Ok(set)
    }

    /// Waits until real Barman's archive holds `last` (running its `archive-wal`, as its cron
    /// would) and checks that its `get-wal` gives the staged bytes.
    fn ensure_barman_py_wal(&self, last: &str, stage: &Path) -> Result<(), String> {
        let b = self.barman_py.as_ref().map_err(Clone::clone)?;
        wait_for(&format!("real Barman to archive {last}"), || {
            b.job(&["archive-wal", "pg"]).run()?;
            Ok(b.has_wal(last))
        })
        .and_then(|()| {
            let out = b.job(&["get-wal", "pg", last]).command().output()?;
            ensure!(out.status.success(), "barman get-wal {last}: {}", String::from_utf8_lossy(&out.stderr).trim());
            ensure!(out.stdout == std::fs::read(stage.join(last))?, "{last}: real Barman's and barman-rs's archives disagree");
            Ok(())
        })
        .map_err(|e| {
            eprintln!("real Barman: {e:#}");
            format!("WAL not archived: {}", crate::barman_py::reason(&e))
        })
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        let _ = self.stop_receiver();
    }
}

trait ArgConf {
    fn arg_conf(self, conf: &Path) -> Self;
}

impl ArgConf for Job {
    fn arg_conf(self, conf: &Path) -> Job {
        self.args([format!("--config={}", conf.display())])
    }
}

/// Segment names from `a` to `b` inclusive (16 MB segments, one timeline).
pub fn segments_between(a: &str, b: &str) -> anyhow::Result<Vec<String>> {
    let parse = |s: &str| -> anyhow::Result<(u32, u64)> {
        ensure!(s.len() == 24, "not a WAL segment name: {s:?}");
        let tli = u32::from_str_radix(&s[..8], 16)?;
        let log = u64::from_str_radix(&s[8..16], 16)?;
        let seg = u64::from_str_radix(&s[16..], 16)?;
        Ok((tli, log * 256 + seg))
    };
    let (tli, from) = parse(a)?;
    let (tli_b, to) = parse(b)?;
    ensure!(tli == tli_b, "timeline changed from {a} to {b}");
    Ok((from..=to)
        .map(|n| format!("{tli:08X}{:08X}{:08X}", n / 256, n % 256))
        .collect())
}
