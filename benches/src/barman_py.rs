//! Real Barman (PyPI `barman`), the program barman-rs replaces, as an anchor.
//!
//! It is installed into a private virtual environment in the bench cache
//! (`<cache>/barman-py-<version>`), never system-wide, and reused by later runs. Its site has
//! its own `barman.conf` and `barman_home` in the run's scratch directory and one server, `pg`,
//! on the same cluster as barman-rs: `backup_method = postgres`, WAL streamed through its own
//! slot (`barman_py`) and compressed with zstd like barman-rs's, backups taken with
//! `backup_compression = zstd` (tar, level 3: client-side `pg_basebackup --compress=zstd:3`).
//! `path_prefix` points at the harness's PostgreSQL bin directory, so Barman's
//! `pg_basebackup` and `pg_receivewal` are the very binaries the other rows use.
//!
//! Its receiver has its own `streaming_archiver_name`, so it never takes the place of the
//! synchronous standby that the `sync` work names.

use std::cell::RefCell;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, ensure, Context as _};
use barman_tests::{wait_for, Cluster, RunCommand as _, BARMAN_USER, STREAMING_USER};

use crate::measure::{tree_bytes, Job};

/// The Barman release measured (the one `shared/reference` describes, byte for byte).
pub const VERSION: &str = "3.19.1";

/// Its row in the tables.
pub const TOOL: &str = "Barman 3.19.1 (PyPI)";

/// What Barman needs besides itself. `psycopg2-binary` stands in for its declared `psycopg2`
/// (which builds from source against libpq headers), hence `--no-deps` for Barman itself;
/// `zstandard` is its zstd WAL compressor.
const DEPENDENCIES: [&str; 3] = ["psycopg2-binary", "python-dateutil", "zstandard"];

/// Installs Barman [`VERSION`] into `<cache>/barman-py-<version>` unless it is already there;
/// returns the path of its `barman` program.
pub fn install(cache: &Path) -> anyhow::Result<PathBuf> {
    let venv = cache.join(format!("barman-py-{VERSION}"));
    let barman = venv.join("bin/barman");
    if version_of(&barman).is_ok_and(|v| v.starts_with(VERSION)) {
        return Ok(barman);
    }
    eprintln!("installing Barman {VERSION} from PyPI into {}", venv.display());
    if venv.exists() {
        std::fs::remove_dir_all(&venv).with_context(|| format!("removing {}", venv.display()))?;
    }
    std::fs::create_dir_all(cache)?;
    Command::new("python3")
        .args(["-m", "venv"])
        .arg(&venv)
        .run()
        .context("python3 -m venv")?;
    let pip = venv.join("bin/pip");
    let quiet = ["install", "--quiet", "--disable-pip-version-check"];
    Command::new(&pip)
        .args(quiet)
        .args(DEPENDENCIES)
        .run()
        .with_context(|| format!("pip install {}", DEPENDENCIES.join(" ")))?;
    // Barman last: its program exists only once everything it needs does.
    Command::new(&pip)
        .args(quiet)
        .args(["--no-deps", &format!("barman=={VERSION}")])
        .run()
        .with_context(|| format!("pip install barman=={VERSION}"))?;
    let version = version_of(&barman)?;
    ensure!(version.starts_with(VERSION), "installed Barman says {version:?}");
    Ok(barman)
}

/// Why Barman is not measured, in one line for a table cell: what failed (the outermost
/// context) and what the failing program said: its first `ERROR` line (Barman's and pip's
/// way to say it), else its last line.
pub fn reason(e: &anyhow::Error) -> String {
    let cause = e.root_cause().to_string();
    let last = cause
        .lines()
        .find(|l| l.contains("ERROR"))
        .or_else(|| cause.lines().rev().find(|l| !l.trim().is_empty()))
        .unwrap_or("")
        .trim();
    let text = if e.chain().count() > 1 { format!("{e}: {last}") } else { last.to_owned() };
    text.chars().take(200).collect()
}

/// First line of `barman --version` (`3.19.1 Barman by EnterpriseDB (www.enterprisedb.com)`).
fn version_of(barman: &Path) -> anyhow::Result<String> {
    let out = Command::new(barman).arg("--version").run()?;
    Ok(out.lines().next().unwrap_or("").trim().to_owned())
}

/// `application_name` of Barman's `pg_receivewal` (`streaming_archiver_name`).
const RECEIVER_NAME: &str = "barman_py_receive_wal";

/// A Barman site: configuration, catalog and background receiver.
pub struct BarmanPy {
    /// The venv's `barman`.
    exe: PathBuf,
    /// Its `barman.conf`.
    conf: PathBuf,
    /// Its `barman_home`.
    home: PathBuf,
    /// `barman --version`.
    pub version: String,
    receiver: RefCell<Option<Child>>,
}

impl BarmanPy {
    /// Writes the configuration under `dir`, creates the slot, starts the receiver and
    /// archives a first WAL segment; fails unless `barman check pg` then passes.
    pub fn setup(exe: PathBuf, pg: &Cluster, dir: &Path) -> anyhow::Result<BarmanPy> {
        let home = dir.join("home");
        std::fs::create_dir_all(&home)?;
        let user = Command::new("id").arg("-un").run().context("id -un")?;
        let conf = dir.join("barman.conf");
        let text = format!(
            "[barman]\nbarman_home = {home}\nbarman_user = {user}\nlog_file = {home}/barman.log\n\
             log_level = WARNING\n\n\
             [pg]\ndescription = \"benchmark (real Barman)\"\nconninfo = {conn}\n\
             streaming_conninfo = {stream}\nbackup_method = postgres\nstreaming_archiver = on\n\
             streaming_archiver_name = {RECEIVER_NAME}\narchiver = off\nslot_name = barman_py\n\
             path_prefix = {bin}\ncompression = zstd\nimmediate_checkpoint = true\n\
             backup_compression = zstd\nbackup_compression_format = tar\nbackup_compression_level = 3\n",
            home = home.display(),
            user = user.trim(),
            conn = pg.conninfo(BARMAN_USER),
            stream = pg.conninfo(STREAMING_USER),
            bin = pg.bin_dir().display(),
        );
        std::fs::write(&conf, text).context("writing Barman's barman.conf")?;
        std::fs::set_permissions(&conf, std::fs::Permissions::from_mode(0o644))?;
        let version = version_of(&exe)?;
        let site = BarmanPy {
            exe,
            conf,
            home,
            version,
            receiver: RefCell::new(None),
        };
        site.job(&["receive-wal", "--create-slot", "pg"])
            .run()
            .context("barman receive-wal --create-slot")?;
        site.start_receiver()?;
        // Barman creates its slot without reserving WAL: a segment switched before its
        // pg_receivewal is up would never reach it.
        site.wait_streaming(pg)?;
        let first = site
            .job(&["switch-wal", "--force", "--archive", "--archive-timeout", "120", "pg"])
            .run();
        if let Err(e) = first {
            let log = std::fs::read_to_string(site.home.join("receive-wal.log")).unwrap_or_default();
            eprintln!("Barman's receive-wal.log:\n{log}");
            return Err(e.context("barman switch-wal --archive (first WAL)"));
        }
        let check = site.job(&["check", "pg"]).command().output().context("barman check")?;
        if !check.status.success() {
            let text = String::from_utf8_lossy(&check.stdout);
            let failed: Vec<&str> = text.lines().filter(|l| l.contains("FAILED")).map(str::trim).collect();
            bail!("barman check: {}", failed.join("; "));
        }
        Ok(site)
    }

    /// `barman -c CONF args…` as a job.
    pub fn job(&self, args: &[&str]) -> Job {
        Job::new(&self.exe)
            .args(["-c".as_ref(), self.conf.as_os_str()])
            .args(args.iter().copied())
    }

    /// The shell words running `barman -c CONF` (for loop scripts).
    pub fn shell_prefix(&self) -> String {
        format!("{} -c {}", self.exe.display(), self.conf.display())
    }

    /// Starts `barman receive-wal pg` in the background (streaming as
    /// [`RECEIVER_NAME`] once it is up).
    pub fn start_receiver(&self) -> anyhow::Result<()> {
        if self.receiver.borrow().is_some() {
            return Ok(());
        }
        let log = std::fs::File::create(self.home.join("receive-wal.log"))?;
        let child = self
            .job(&["receive-wal", "pg"])
            .command()
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting Barman's receive-wal")?;
        *self.receiver.borrow_mut() = Some(child);
        Ok(())
    }

    /// Waits until the receiver streams from `pg` (its `pg_receivewal` is connected).
    pub fn wait_streaming(&self, pg: &Cluster) -> anyhow::Result<()> {
        wait_for("real Barman's receive-wal to stream", || {
            Ok(pg.sql(&format!(
                "SELECT count(*) FROM pg_stat_replication WHERE application_name = '{RECEIVER_NAME}'"
            ))? == "1")
        })
    }

    /// Stops the receiver with SIGTERM to its process ID, as `barman receive-wal --stop` does
    /// (Barman forwards it to its `pg_receivewal`); if it is still there after 10 s, its
    /// `pg_receivewal` gets SIGTERM and Barman SIGKILL.
    pub fn stop_receiver(&self) -> anyhow::Result<()> {
        let Some(mut child) = self.receiver.borrow_mut().take() else {
            return Ok(());
        };
        let pid = child.id();
        let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).status();
        for _ in 0..200 {
            if child.try_wait()?.is_some() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
        for c in children.split_whitespace() {
            let _ = Command::new("kill").args(["-TERM", c]).status();
        }
        let _ = child.kill();
        let _ = child.wait();
        bail!("Barman's receive-wal did not stop within 10 s of SIGTERM")
    }

    /// The backup IDs in the catalog (`meta/<ID>-backup.info`), oldest first.
    pub fn backups(&self) -> Vec<String> {
        crate::site::Site::entries(&self.home.join("pg/meta"))
            .into_iter()
            .filter_map(|n| n.strip_suffix("-backup.info").map(str::to_owned))
            .collect()
    }

    /// Fails unless backup `id` is DONE and is a zstd tar (`data/base.tar.zst`); returns its size.
    pub fn check_zstd_backup(&self, id: &str) -> anyhow::Result<u64> {
        let info_path = self.home.join("pg/meta").join(format!("{id}-backup.info"));
        let info = std::fs::read_to_string(&info_path)
            .with_context(|| format!("reading {}", info_path.display()))?;
        ensure!(
            info.lines().any(|l| l == "status=DONE"),
            "Barman backup {id} is not DONE:\n{info}"
        );
        let dir = self.home.join("pg/base").join(id);
        if !dir.join("data/base.tar.zst").is_file() {
            bail!("Barman backup {id} has no data/base.tar.zst (not a zstd tar backup)");
        }
        Ok(tree_bytes(&dir))
    }

    /// Deletes backup `id` with `barman delete` (not timed).
    pub fn delete_backup(&self, id: &str) -> anyhow::Result<()> {
        self.job(&["delete", "pg", id])
            .run()
            .map(drop)
            .with_context(|| format!("barman delete pg {id}"))
    }

    /// Whether WAL segment `name` is in the archive (`wals/`).
    pub fn has_wal(&self, name: &str) -> bool {
        self.home
            .join("pg/wals")
            .join(&name[..16])
            .join(name)
            .is_file()
    }
}

impl Drop for BarmanPy {
    fn drop(&mut self) {
        let _ = self.stop_receiver();
    }
}
