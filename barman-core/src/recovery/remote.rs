//! `recover --remote-ssh-command`: the destination is on another host, reached as Barman
//! reaches it — shell commands through the ssh command (`<ssh command> '<script>'`, run by
//! the local shell like Barman's `UnixRemoteCommand`) and files through
//! `rsync -rLKpts --delete-excluded --inplace -e '<ssh command>' … :<path>` (Barman's
//! `RsyncPgData`; `-z` with `network_compression`, `--bwlimit` when limited). The remote
//! rsync runs as the ssh user and copies no owner or group, so everything written belongs to
//! that user.
//!
//! A tree is sent in two passes, like Barman's copy controller: the directories first
//! (`--dirs`, no recursion), then the files, shared out biggest first to `jobs` rsync
//! processes running at once, each given its list on stdin (`--files-from=-`). Running the
//! ssh and rsync commands is [`crate::ssh`]'s, shared with the rsync backup.
//!
//! A delta restore ([`Remote::sync_tree`]) runs Barman's copy controller passes instead:
//! first the directories, with `--delete` and a filter that hides every file on this side
//! and protects each of them (and the protected paths) on the other, so that what the backup
//! does not have is removed there; then the files, those older than the safe horizon with
//! rsync's size-and-mtime check, the others with `--checksum` (see [`super::delta`]).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::RecoveryError;
use crate::backup::compressed::ArchiveCompression;
use crate::storage::{StorageError, StorageOp};

/// How to reach the destination host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteOptions {
    /// `--remote-ssh-command`, e.g. `ssh postgres@pg2`.
    pub ssh_command: String,
    /// KB/s for the data directory, the WAL and the configuration (`--bwlimit`,
    /// `bandwidth_limit`); `None` or 0: unlimited.
    pub bwlimit: Option<u64>,
    /// KB/s per tablespace name (`tablespace_bandwidth_limit`); others use `bwlimit`.
    pub tablespace_bwlimit: std::collections::BTreeMap<String, u64>,
    /// `network_compression`: rsync `-z`.
    pub network_compression: bool,
    /// Where a compressed backup is unpacked (`staging_path`, or the deprecated
    /// `recovery_staging_path`; Barman's default `/tmp`): a directory made there and
    /// removed afterwards, `barman-decompress<pid>` on this host, or
    /// `barman-rsync-copy<pid>` on the recovery host (see `staging_location`).
    pub staging_path: PathBuf,
    /// `staging_location`: where `staging_path` is. `Local`: a compressed backup is
    /// unpacked here and the files are sent; `Remote`: the archives are sent into the
    /// staging path on the recovery host and unpacked there with its `tar` (Barman's
    /// pipeline with the rsync copy first).
    pub staging_location: crate::config::StagingLocation,
    /// Extra attempts for a failed rsync (`basebackup_retry_times`, `--retry-times`).
    pub retry_times: u32,
    /// Pause between attempts (`basebackup_retry_sleep`, `--retry-sleep`).
    pub retry_sleep: Duration,
}

pub use crate::ssh::shell_quote;

/// The state of the destination directory on the remote host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoteDir {
    /// Does not exist.
    Absent,
    /// Exists and is empty.
    Empty,
    /// Holds files.
    NotEmpty,
    /// Holds a `postmaster.pid`.
    Running,
    /// Exists but is not a directory.
    NotADirectory,
}

/// A connection, as far as there is one: the ssh command and the rsync settings.
pub struct Remote<'a> {
    opts: &'a RemoteOptions,
}

impl<'a> Remote<'a> {
    /// Checks that the ssh command works (`true` runs remotely), as Barman does first.
    pub fn connect(opts: &'a RemoteOptions) -> Result<Remote<'a>, RecoveryError> {
        let remote = Remote { opts };
        remote.shell("true").map_err(|e| RecoveryError::Remote {
            what: format!("Unable to connect to the target host using the command '{}'", opts.ssh_command),
            why: e.to_string(),
        })?;
        Ok(remote)
    }

    /// Runs `script` on the remote host; returns its standard output.
    pub fn shell(&self, script: &str) -> Result<String, RecoveryError> {
        crate::ssh::remote_shell(&self.opts.ssh_command, script)
            .map_err(|e| RecoveryError::Remote { what: "remote command failed".into(), why: crate::error_chain(&e) })
    }

    /// What is at `dir` on the remote host.
    pub fn inspect(&self, dir: &Path) -> Result<RemoteDir, RecoveryError> {
        let d = shell_quote(&dir.to_string_lossy());
        let script = format!(
            "if [ ! -e {d} ]; then echo absent; elif [ ! -d {d} ]; then echo notdir; \
             elif [ -e {d}/postmaster.pid ]; then echo running; \
             elif [ -n \"$(ls -A {d})\" ]; then echo nonempty; else echo empty; fi"
        );
        Ok(match self.shell(&script)?.trim() {
            "absent" => RemoteDir::Absent,
            "empty" => RemoteDir::Empty,
            "running" => RemoteDir::Running,
            "notdir" => RemoteDir::NotADirectory,
            _ => RemoteDir::NotEmpty,
        })
    }

    /// `mkdir -p <dir> -m 700` for each, as Barman prepares destinations.
    pub fn make_dirs(&self, dirs: &[&Path]) -> Result<(), RecoveryError> {
        let script: Vec<String> =
            dirs.iter().map(|d| format!("mkdir -p -m 700 {}", shell_quote(&d.to_string_lossy()))).collect();
        self.shell(&script.join(" && ")).map(drop)
    }

    /// Removes those of `names` (plain file names) that are in the remote `dir`; returns the
    /// ones that were there.
    pub fn remove_files(&self, dir: &Path, names: &[&str]) -> Result<Vec<String>, RecoveryError> {
        let d = shell_quote(&dir.to_string_lossy());
        let script: Vec<String> = names
            .iter()
            .map(|n| {
                let f = shell_quote(n);
                format!("if [ -e {d}/{f} ] || [ -L {d}/{f} ]; then rm -f {d}/{f} && echo {f}; fi")
            })
            .collect();
        let out = self.shell(&script.join("; "))?;
        Ok(names.iter().filter(|n| out.lines().any(|l| l.trim() == **n)).map(|n| (*n).to_owned()).collect())
    }

    /// Sends the tree at local `src` into remote `dst` (created; its mode becomes `src`'s),
    /// leaving out what `skip` (given the path relative to `src`) names. Symbolic links are
    /// followed (`-L`).
    pub fn push_tree(
        &self,
        src: &Path,
        dst: &Path,
        skip: &dyn Fn(&Path) -> bool,
        jobs: usize,
        bwlimit: Option<u64>,
    ) -> Result<(), RecoveryError> {
        let listing = walk(src, skip)?;
        let src_arg = format!("{}/", src.display());
        let dst_arg = format!(":{}/", dst.display());
        self.rsync(&["--no-recursive", "--dirs", "--files-from=-"], &src_arg, &dst_arg, Some(&dir_list(&listing)), bwlimit)?;
        let files = listing.files.into_iter().map(|f| (f.size, f.rel)).collect();
        self.push_files_parallel(files, &[], &src_arg, &dst_arg, jobs, bwlimit)
    }

    /// [`push_tree`](Self::push_tree) for a delta restore: the remote `dst` is made to hold
    /// what local `src` holds (less what `skip` names), its `protected` paths (relative to
    /// `dst`) left alone and everything else the backup does not have removed; files older
    /// than `horizon` are sent when their size or mtime differ, the others when their content
    /// does (rsync `--checksum`). Barman's `RsyncCopyController` with a `safe_horizon`.
    #[allow(clippy::too_many_arguments)]
    pub fn sync_tree(
        &self,
        src: &Path,
        dst: &Path,
        skip: &dyn Fn(&Path) -> bool,
        protected: &[PathBuf],
        horizon: Option<std::time::SystemTime>,
        jobs: usize,
        bwlimit: Option<u64>,
    ) -> Result<(), RecoveryError> {
        let listing = walk(src, skip)?;
        let src_arg = format!("{}/", src.display());
        let dst_arg = format!(":{}/", dst.display());
        // Pass 1: directories made, and what is not the backup's removed (`--delete`, with
        // `--delete-excluded` from the common options). Every file is hidden here, so none is
        // sent, and protected there, so none of the backup's is removed; what `skip` left out
        // is hidden too, so that it is removed there (`pg_wal/*`, as Barman's excludes).
        let scratch = ScratchDir::temporary("barman-delta-")?;
        let rules_file = scratch.path().join("rules");
        let mut rules = String::new();
        for rel in protected.iter().chain(listing.files.iter().map(|f| &f.rel)) {
            let pattern = super::delta::filter_pattern(rel);
            rules.push_str(&format!("P {pattern}\n- {pattern}\n"));
        }
        for rel in &listing.skipped {
            rules.push_str(&format!("- {}\n", super::delta::filter_pattern(rel)));
        }
        std::fs::write(&rules_file, rules).map_err(|e| StorageError::io(StorageOp::Write, &rules_file, e))?;
        let merge = format!("--filter=merge {}", rules_file.display());
        self.rsync(&["--delete", "--files-from=-", &merge], &src_arg, &dst_arg, Some(&dir_list(&listing)), bwlimit)?;
        // Pass 2: the files.
        let (safe, check): (Vec<WalkedFile>, Vec<WalkedFile>) =
            listing.files.into_iter().partition(|f| horizon.is_some_and(|h| f.mtime < h));
        self.push_files_parallel(safe.into_iter().map(|f| (f.size, f.rel)).collect(), &[], &src_arg, &dst_arg, jobs, bwlimit)?;
        let check = check.into_iter().map(|f| (f.size, f.rel)).collect();
        self.push_files_parallel(check, &["--checksum"], &src_arg, &dst_arg, jobs, bwlimit)
    }

    /// Sends `files` (relative to `src_arg`), shared out biggest first to at most `jobs` rsync
    /// runs at once, each with `extra` options.
    fn push_files_parallel(
        &self,
        files: Vec<(u64, PathBuf)>,
        extra: &[&str],
        src_arg: &str,
        dst_arg: &str,
        jobs: usize,
        bwlimit: Option<u64>,
    ) -> Result<(), RecoveryError> {
        let lists: Vec<String> = crate::ssh::share_out(files, jobs)
            .into_iter()
            .map(|bucket| bucket.iter().map(|rel| format!("{}\n", rel.to_string_lossy())).collect())
            .collect();
        let mut args = vec!["--files-from=-"];
        args.extend_from_slice(extra);
        let failure: std::sync::Mutex<Option<RecoveryError>> = std::sync::Mutex::new(None);
        std::thread::scope(|s| {
            for list in &lists {
                let (args, failure) = (&args, &failure);
                s.spawn(move || {
                    if let Err(e) = self.rsync(args, src_arg, dst_arg, Some(list), bwlimit) {
                        failure.lock().expect("no panics while held").get_or_insert(e);
                    }
                });
            }
        });
        match failure.into_inner().expect("threads joined") {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Sends one local file to the remote path `dst`.
    pub fn push_file(&self, src: &Path, dst: &Path, bwlimit: Option<u64>) -> Result<(), RecoveryError> {
        self.rsync(&[], &src.to_string_lossy(), &format!(":{}", dst.display()), None, bwlimit)
    }

    /// Sends the files `names` (relative to local `src_dir`) into the remote `dst_dir`.
    pub fn push_files(&self, src_dir: &Path, names: &[String], dst_dir: &Path, bwlimit: Option<u64>) -> Result<(), RecoveryError> {
        let list: String = names.iter().map(|n| format!("{n}\n")).collect();
        let (src, dst) = (format!("{}/", src_dir.display()), format!(":{}/", dst_dir.display()));
        self.rsync(&["--files-from=-"], &src, &dst, Some(&list), bwlimit)
    }

    /// Fails with a clear message unless each of `programs` is on the remote PATH.
    pub fn require_programs(&self, programs: &[&str], why: &str) -> Result<(), RecoveryError> {
        let script: Vec<String> = programs
            .iter()
            .map(|p| format!("command -v {q} >/dev/null 2>&1 || echo {q}", q = shell_quote(p)))
            .collect();
        let missing: Vec<String> = self.shell(&script.join("; "))?.split_whitespace().map(str::to_owned).collect();
        if missing.is_empty() {
            return Ok(());
        }
        Err(RecoveryError::Remote {
            what: format!("the recovery host cannot {why}"),
            why: format!("{} not found on its PATH (ssh command: {})", missing.join(", "), self.opts.ssh_command),
        })
    }

    /// Fetches those of `names` (relative to the remote `src_dir`) that exist into the local
    /// `dst_dir`.
    pub fn fetch_files(&self, src_dir: &Path, names: &[String], dst_dir: &Path) -> Result<(), RecoveryError> {
        let list: String = names.iter().map(|n| format!("{n}\n")).collect();
        let (src, dst) = (format!(":{}/", src_dir.display()), format!("{}/", dst_dir.display()));
        self.rsync(&["--ignore-missing-args", "--files-from=-"], &src, &dst, Some(&list), self.opts.bwlimit)
    }

    /// One rsync run (retried as configured; vanished files are not failures, as in Barman).
    fn rsync(&self, extra: &[&str], src: &str, dst: &str, stdin: Option<&str>, bwlimit: Option<u64>) -> Result<(), RecoveryError> {
        let o = self.opts;
        let rsync = crate::ssh::Rsync::new(&o.ssh_command, o.network_compression, o.retry_times, o.retry_sleep);
        let args: Vec<String> = extra.iter().map(|a| a.to_string()).chain([src.to_owned(), dst.to_owned()]).collect();
        rsync.run(&args, stdin, bwlimit).map(drop).map_err(|e| RecoveryError::Remote {
            what: format!("data transfer failure (rsync {src} {dst})"),
            why: crate::error_chain(&e),
        })
    }
}

/// A regular file found by [`walk`].
struct WalkedFile {
    rel: PathBuf,
    size: u64,
    mtime: std::time::SystemTime,
}

/// What [`walk`] found, relative to the tree's root.
struct Listing {
    dirs: Vec<PathBuf>,
    files: Vec<WalkedFile>,
    /// What `skip` left out (not looked into).
    skipped: Vec<PathBuf>,
}

/// The `--files-from` list of a tree's directories, the root (`.`) first.
fn dir_list(listing: &Listing) -> String {
    let mut list = String::from(".\n");
    for d in &listing.dirs {
        list.push_str(&d.to_string_lossy());
        list.push('\n');
    }
    list
}

/// The directories and the regular files under `src`, relative to it, in walk order;
/// symbolic links are followed.
fn walk(src: &Path, skip: &dyn Fn(&Path) -> bool) -> Result<Listing, StorageError> {
    let (mut dirs, mut files, mut skipped) = (Vec::new(), Vec::new(), Vec::new());
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let dir = src.join(&rel);
        let entries = std::fs::read_dir(&dir).map_err(|e| StorageError::io(StorageOp::Read, &dir, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| StorageError::io(StorageOp::Read, &dir, e))?;
            let rel = rel.join(entry.file_name());
            if skip(&rel) {
                skipped.push(rel);
                continue;
            }
            let path = src.join(&rel);
            let meta = std::fs::metadata(&path).map_err(|e| StorageError::io(StorageOp::Metadata, &path, e))?;
            if meta.is_dir() {
                dirs.push(rel.clone());
                stack.push(rel);
            } else if meta.is_file() {
                let mtime = meta.modified().map_err(|e| StorageError::io(StorageOp::Metadata, &path, e))?;
                files.push(WalkedFile { rel, size: meta.len(), mtime });
            }
        }
    }
    Ok(Listing { dirs, files, skipped })
}

/// The program `tar` needs on the recovery host to read an archive of `algorithm`
/// (`tar -z` runs `gzip`), if any.
pub fn decompressor(algorithm: ArchiveCompression) -> Option<&'static str> {
    match algorithm {
        ArchiveCompression::Gzip => Some("gzip"),
        ArchiveCompression::Lz4 => Some("lz4"),
        ArchiveCompression::Zstd => Some("zstd"),
        ArchiveCompression::None => None,
    }
}

/// The shell command that unpacks `archive` into `dir` on the recovery host, leaving out
/// the members `exclude` names: Barman's `GZipCompression`/`LZ4Compression`/
/// `ZSTDCompression.decompress` (`tar -xzf`, `tar --use-compress-program lz4|zstd -xf`).
pub fn untar_command(algorithm: ArchiveCompression, archive: &Path, dir: &Path, exclude: &[&str]) -> String {
    let mode = match decompressor(algorithm) {
        None => "-xf".to_owned(),
        Some("gzip") => "-xzf".to_owned(),
        Some(program) => format!("--use-compress-program {program} -xf"),
    };
    let mut cmd = format!(
        "tar {mode} {} --directory {}",
        shell_quote(&archive.to_string_lossy()),
        shell_quote(&dir.to_string_lossy())
    );
    for name in exclude {
        cmd.push_str(&format!(" --exclude {}", shell_quote(name)));
    }
    cmd
}

/// This host's fully qualified name, for `barman-wal-restore` on the remote host (Python's
/// `socket.getfqdn()` in Barman): `hostname -f`, else the kernel's host name.
pub fn fqdn() -> String {
    if let Ok(out) = Command::new("hostname").arg("-f").stderr(Stdio::null()).output() {
        let name = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        if out.status.success() && !name.is_empty() {
            return name;
        }
    }
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|s| s.trim().to_owned()).unwrap_or_else(|_| "localhost".into())
}

/// A local directory of ours, removed (with what it holds) when dropped.
pub struct ScratchDir {
    path: PathBuf,
}

impl ScratchDir {
    /// Makes `path` afresh (mode 0700), removing what a previous run may have left there.
    pub fn create(path: PathBuf) -> Result<ScratchDir, StorageError> {
        use std::os::unix::fs::DirBuilderExt as _;
        if path.exists() {
            std::fs::remove_dir_all(&path).map_err(|e| StorageError::io(StorageOp::Remove, &path, e))?;
        }
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&path)
            .map_err(|e| StorageError::io(StorageOp::CreateDir, &path, e))?;
        Ok(ScratchDir { path })
    }

    /// A new directory `<prefix><pid>-<n>` in the system's temporary directory.
    pub fn temporary(prefix: &str) -> Result<ScratchDir, StorageError> {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        ScratchDir::create(std::env::temp_dir().join(format!("{prefix}{}-{n}", std::process::id())))
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.path) {
            tracing::warn!("cannot remove {}: {e}", self.path.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(ssh_command: &str) -> RemoteOptions {
        RemoteOptions {
            ssh_command: ssh_command.into(),
            bwlimit: None,
            tablespace_bwlimit: Default::default(),
            network_compression: false,
            staging_path: "/tmp".into(),
            staging_location: crate::config::StagingLocation::Remote,
            retry_times: 0,
            retry_sleep: Duration::ZERO,
        }
    }

    #[test]
    fn names_the_programs_missing_on_the_remote_path() {
        // A "remote" shell on this host whose PATH holds nothing: only builtins work.
        let opts = options("env PATH=/nonexistent /bin/sh -c");
        let remote = Remote::connect(&opts).unwrap();
        let err = remote.require_programs(&["tar", "zstd"], "unpack a zstd backup").unwrap_err().to_string();
        assert!(err.starts_with("the recovery host cannot unpack a zstd backup: tar, zstd not found on its PATH"), "{err}");
        let opts = options("/bin/sh -c");
        Remote::connect(&opts).unwrap().require_programs(&["sh"], "run a shell").unwrap();
    }

    #[test]
    fn untars_as_barman_does() {
        let (a, d) = (Path::new("/stage/1/data/base.tar.gz"), Path::new("/var/lib/pg data"));
        assert_eq!(
            untar_command(ArchiveCompression::Gzip, a, d, &["recovery.conf", "tablespace_map"]),
            "tar -xzf /stage/1/data/base.tar.gz --directory '/var/lib/pg data' --exclude recovery.conf --exclude tablespace_map"
        );
        let a = Path::new("/s/16384.tar.zst");
        assert_eq!(untar_command(ArchiveCompression::Zstd, a, d, &[]), "tar --use-compress-program zstd -xf /s/16384.tar.zst --directory '/var/lib/pg data'");
        assert_eq!(untar_command(ArchiveCompression::None, Path::new("/s/base.tar"), Path::new("/d"), &[]), "tar -xf /s/base.tar --directory /d");
        assert_eq!(decompressor(ArchiveCompression::Lz4), Some("lz4"));
    }

    #[test]
    fn walks_following_links_and_skipping() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::create_dir_all(src.join("base/1")).unwrap();
        std::fs::create_dir_all(src.join("pg_wal")).unwrap();
        std::fs::write(src.join("base/1/a"), b"abc").unwrap();
        std::fs::write(src.join("pg_wal/x"), b"x").unwrap();
        std::fs::write(src.join("PG_VERSION"), b"16").unwrap();
        let listing = walk(&src, &|p| p.starts_with("pg_wal") && p != Path::new("pg_wal")).unwrap();
        let mut dirs = listing.dirs;
        dirs.sort();
        let mut files: Vec<(u64, PathBuf)> = listing.files.into_iter().map(|f| (f.size, f.rel)).collect();
        files.sort();
        assert_eq!(dirs, [PathBuf::from("base"), PathBuf::from("base/1"), PathBuf::from("pg_wal")]);
        assert_eq!(files, [(2, PathBuf::from("PG_VERSION")), (3, PathBuf::from("base/1/a"))]);
        assert_eq!(listing.skipped, [PathBuf::from("pg_wal/x")]);
    }
}
