//! `barman-wal-restore`: PostgreSQL's `restore_command` helper. It fetches one WAL file
//! from `barman get-wal` on the Barman host over ssh and writes it to WAL_DEST; with
//! `--parallel N` it also prefetches the next files (`get-wal --peek`) into a spool
//! directory, from which the following calls are served without a round trip.
//!
//! WAL_DEST is written under a temporary name in its directory, fsynced and renamed, so
//! PostgreSQL never reads half a segment, and a failed fetch leaves no file behind (Barman's
//! client truncates WAL_DEST first and leaves it empty on failure). Spool files are written
//! the same way, so a prefetch cut short is never served.
//!
//! Exit statuses, as Barman's `walrestore.py`: 0 when WAL_DEST holds the file; the remote
//! `barman get-wal` status when it failed (1 for a file it does not have); 2 for a usage
//! error, an ssh failure (its status 255), or — with `--parallel` — a file the peek did not
//! find; 3 when WAL_DEST cannot be written.

mod wal_client;

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::Duration;

use anyhow::Context as _;
use barman_core::compression::{self, WalCompression};
use barman_core::storage::{durable_rename, AtomicFile, StorageError, FILE_MODE};
use clap::{ArgGroup, Parser};

use wal_client::{connectivity_test, exit_code, fail, ssh_command};

/// Where prefetched files wait by default, as Barman's.
const DEFAULT_SPOOL_DIR: &str = "/var/tmp/walrestore";

/// The arguments of Barman's `barman-wal-restore`.
#[derive(Debug, Parser)]
#[command(
    name = "barman-wal-restore",
    version,
    about = "This script will be used as a 'restore_command' based on the get-wal feature of Barman. \
             A ssh connection will be opened to the Barman host.",
    group(ArgGroup::new("compression").multiple(false))
)]
struct Args {
    /// The user used for the ssh connection to the Barman server.
    #[arg(short = 'U', long, default_value = "barman")]
    user: String,
    /// The port used for the ssh connection to the Barman server.
    #[arg(long)]
    port: Option<String>,
    /// Sleep for SECONDS after a failure of get-wal request.
    #[arg(short = 's', long, value_name = "SECONDS", default_value_t = 0)]
    sleep: u64,
    /// Specifies the number of files to peek and transfer in parallel (0: disabled).
    #[arg(short = 'p', long, value_name = "JOBS", default_value_t = 0)]
    parallel: u32,
    /// Specifies spool directory for WAL files.
    #[arg(long, value_name = "SPOOL_DIR", default_value = DEFAULT_SPOOL_DIR)]
    spool_dir: PathBuf,
    /// Retrieve also partial WAL files (.partial).
    #[arg(short = 'P', long)]
    partial: bool,
    /// Transfer the WAL files compressed with gzip.
    #[arg(short = 'z', long, group = "compression")]
    gzip: bool,
    /// Transfer the WAL files compressed with bzip2.
    #[arg(short = 'j', long, group = "compression")]
    bzip2: bool,
    /// Preserve compression during transfer, decompress once received.
    #[arg(long, group = "compression")]
    keep_compression: bool,
    /// Configuration file on the Barman server.
    #[arg(short = 'c', long, value_name = "CONFIG")]
    config: Option<String>,
    /// Test both the connection and the configuration of the requested PostgreSQL server in
    /// Barman to make sure it is ready to receive WAL files. With this option, the
    /// 'wal_name' and 'wal_dest' mandatory arguments are ignored.
    #[arg(short = 't', long)]
    test: bool,
    /// The host of the Barman server.
    #[arg(value_name = "BARMAN_HOST")]
    barman_host: String,
    /// The server name configured in Barman from which WALs are taken.
    #[arg(value_name = "SERVER_NAME")]
    server_name: String,
    /// The value of the '%f' keyword (according to 'restore_command').
    #[arg(value_name = "WAL_NAME")]
    wal_name: String,
    /// The value of the '%p' keyword (according to 'restore_command').
    #[arg(value_name = "WAL_DEST")]
    wal_dest: PathBuf,
}

impl Args {
    fn compression_flag(&self) -> Option<&'static str> {
        match () {
            _ if self.gzip => Some("gzip"),
            _ if self.bzip2 => Some("bzip2"),
            _ => None,
        }
    }

    /// The remote `barman [--config CONFIG] "get-wal [options] 'SERVER' 'WAL'"`, one
    /// argument for the remote shell, built as Barman's client builds it.
    fn ssh(&self, wal_name: &str, peek: u32) -> Command {
        let mut cmd = ssh_command(self.port.as_deref(), &self.user, &self.barman_host);
        if let Some(config) = &self.config {
            cmd.arg(format!("--config {config}"));
        }
        let mut options = Vec::new();
        if self.test {
            options.push("--test".to_owned());
        }
        if peek > 0 {
            options.push(format!("--peek '{peek}'"));
        }
        if let Some(c) = self.compression_flag() {
            options.push(format!("--{c}"));
        }
        if self.keep_compression {
            options.push("--keep-compression".to_owned());
        }
        if self.partial {
            options.push("--partial".to_owned());
        }
        let mut get_wal = String::from("get-wal ");
        for o in &options {
            get_wal.push_str(o);
            get_wal.push(' ');
        }
        get_wal.push_str(&format!("'{}' '{wal_name}'", self.server_name));
        cmd.arg(get_wal);
        cmd
    }

    /// Reports a failure of the main fetch, sleeping first when `--sleep` asks for it (so a
    /// standby does not hammer a Barman host that is down).
    fn fail_after_sleep(&self, message: &str, status: u8) -> ExitCode {
        let code = fail(message, status);
        if self.sleep > 0 {
            eprintln!("Sleeping for {} seconds.", self.sleep);
            std::thread::sleep(Duration::from_secs(self.sleep));
        }
        code
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.test {
        return connectivity_test(args.ssh("dummy_wal_name", 0));
    }
    if let Some(c) = args.compression_flag() {
        println!(
            "WARNING: `{c}` option is deprecated and will be removed in future versions. For WAL compression, \
             please make sure to enable it directly on the Barman server via the `compression` configuration option"
        );
    }
    // The name goes into the remote shell command and is joined to the spool directory:
    // anything but a WAL file name (`../x`, a quote) is refused before either happens.
    if !is_wal_name(&args.wal_name) {
        return fail(&format!("'{}' is not a WAL file name", args.wal_name), 2);
    }
    if args.wal_dest.is_dir() {
        return fail(&format!("WAL_DEST cannot be a directory: {}", args.wal_dest.display()), 3);
    }
    // Opened first, as Barman does, so that an unwritable destination is reported as such
    // (status 3) before anything is fetched.
    let dest = match AtomicFile::create(&args.wal_dest, FILE_MODE) {
        Ok(f) => f,
        Err(e) => {
            return fail(&format!("Cannot open '{}' (WAL_DEST) for writing: {e}", args.wal_dest.display()), 3)
        }
    };

    let spooled = args.spool_dir.join(&args.wal_name);
    if spooled.exists() {
        drop(dest);
        return match move_into_place(&spooled, &args.wal_dest) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(
                &format!("Failure moving {} to {}: {e:#}", spooled.display(), args.wal_dest.display()),
                2,
            ),
        };
    }

    let additional = if args.parallel > 0 {
        if let Err(e) = std::fs::create_dir(&args.spool_dir) {
            if e.kind() != io::ErrorKind::AlreadyExists {
                return fail(&format!("Cannot create '{}' directory: {e}", args.spool_dir.display()), 2);
            }
        }
        let listed = match peek(&args) {
            Ok(l) => l,
            Err(e) => return fail(&format!("Impossible to invoke remote get-wal --peek: {e}"), 2),
        };
        match listed.split_first() {
            Some((first, rest)) if *first == args.wal_name => {
                // Names from the Barman host become spool paths: only WAL names.
                rest.iter().filter(|n| is_wal_name(n)).cloned().collect()
            }
            _ => return fail(&format!("The required file is not available: {}", args.wal_name), 2),
        }
    } else {
        Vec::new()
    };

    // Prefetches run beside the main fetch; each either lands whole in the spool or not at
    // all, so a failed one needs no cleanup.
    let workers: Vec<_> = additional
        .into_iter()
        .map(|name| {
            let cmd = args.ssh(&name, 0);
            let target = args.spool_dir.join(&name);
            std::thread::spawn(move || {
                if let Err(e) = prefetch(cmd, &target) {
                    warn(&format!("prefetch of {} failed: {e:#}", target.display()));
                }
            })
        })
        .collect();

    let result = fetch(args.ssh(&args.wal_name, 0), dest);
    for w in workers {
        let _ = w.join();
    }
    match result {
        Ok(Fetched::Done) => ExitCode::SUCCESS,
        Ok(Fetched::RemoteFailed(255)) => args.fail_after_sleep("Connection problem with ssh", 2),
        Ok(Fetched::RemoteFailed(code)) => args.fail_after_sleep("Remote 'barman get-wal' command has failed!", code),
        Err(FetchError::Spawn(e)) => args.fail_after_sleep(&format!("Error executing \"ssh\": {e}"), 2),
        Err(FetchError::Write(e)) => {
            fail(&format!("Cannot write '{}' (WAL_DEST): {e:#}", args.wal_dest.display()), 3)
        }
    }
}

fn is_wal_name(name: &str) -> bool {
    name.parse::<barman_core::wal::WalFileName>().is_ok()
}

/// A prefetch failure is not the main file's failure: Barman's workers fail silently too
/// (their spool file is removed). barman-rs says why on stderr, which PostgreSQL logs.
fn warn(message: &str) {
    eprintln!("WARNING: {message}");
}

/// `get-wal --peek N`: the requested name and the ones after it that Barman has.
fn peek(args: &Args) -> io::Result<Vec<String>> {
    let out = args.ssh(&args.wal_name, args.parallel).stderr(Stdio::inherit()).output()?;
    Ok(String::from_utf8_lossy(&out.stdout).lines().map(str::to_owned).collect())
}

enum Fetched {
    Done,
    RemoteFailed(u8),
}

enum FetchError {
    Spawn(io::Error),
    Write(anyhow::Error),
}

/// Runs one remote get-wal into `dest`, decompressing on the way when what arrives is
/// compressed (`-z`, `-j`, `--keep-compression`; Barman tells the algorithm by its magic
/// bytes). `dest` is committed only when the remote command succeeded.
fn fetch(mut cmd: Command, mut dest: AtomicFile) -> Result<Fetched, FetchError> {
    cmd.stdout(Stdio::piped());
    let mut child = cmd.spawn().map_err(FetchError::Spawn)?;
    let stdout = child.stdout.take().expect("stdout was piped");
    let copied = decompress_into(stdout, &mut dest);
    let status = child.wait().map_err(FetchError::Spawn)?;
    match exit_code(status) {
        0 => {
            copied.map_err(FetchError::Write)?;
            dest.commit().context("committing").map_err(FetchError::Write)?;
            Ok(Fetched::Done)
        }
        // `dest` drops here: its temporary file goes, nothing half-written remains.
        code => Ok(Fetched::RemoteFailed(code)),
    }
}

/// A prefetch into the spool directory.
fn prefetch(cmd: Command, target: &Path) -> anyhow::Result<()> {
    let dest = AtomicFile::create(target, FILE_MODE)?;
    match fetch(cmd, dest) {
        Ok(Fetched::Done) => Ok(()),
        Ok(Fetched::RemoteFailed(code)) => anyhow::bail!("remote get-wal exited with status {code}"),
        Err(FetchError::Spawn(e)) => Err(anyhow::Error::new(e).context("running ssh")),
        Err(FetchError::Write(e)) => Err(e),
    }
}

/// Copies `input` into `out`, decompressing it when its first bytes are a compressor's magic.
fn decompress_into(mut input: impl Read + Send + 'static, out: &mut AtomicFile) -> anyhow::Result<()> {
    let mut head = Vec::with_capacity(compression::BUILTIN_MAGIC_MAX_LEN);
    (&mut input)
        .take(compression::BUILTIN_MAGIC_MAX_LEN as u64)
        .read_to_end(&mut head)
        .context("reading from ssh")?;
    let algorithm = compression::identify(&head, None);
    let joined = io::Cursor::new(head).chain(input);
    let mut reader = WalCompression::none()
        .decoder(algorithm, joined)
        .context("starting decompression")?;
    io::copy(&mut reader, out).context("receiving the WAL file")?;
    Ok(())
}

/// Moves a spooled file to WAL_DEST: a rename when both are on one filesystem, a durable
/// copy otherwise.
fn move_into_place(spooled: &Path, dest: &Path) -> anyhow::Result<()> {
    match durable_rename(spooled, dest) {
        Ok(()) => Ok(()),
        Err(StorageError::Rename { source, .. }) if source.kind() == io::ErrorKind::CrossesDevices => {
            let mut out = AtomicFile::create(dest, FILE_MODE)?;
            let mut src = File::open(spooled).with_context(|| format!("cannot open {}", spooled.display()))?;
            io::copy(&mut src, &mut out).with_context(|| format!("copying {}", spooled.display()))?;
            out.commit()?;
            barman_core::storage::fs::remove_file_if_exists(spooled)?;
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}
