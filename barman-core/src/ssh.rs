//! Reaching the PostgreSQL host as Barman does, shared by the rsync backup (PGDATA pulled into
//! the catalog, [`crate::backup::rsync`]) and remote recovery (a backup pushed to the
//! destination, [`crate::recovery::remote`]):
//!
//! * shell commands go through the configured ssh command, run by the local shell as
//!   `<ssh command> '<script>'` (Barman's `UnixRemoteCommand`): [`remote_shell`];
//! * files go through rsync with that command as its transport (Barman's `RsyncPgData`:
//!   `rsync -rLKpts --delete-excluded --inplace -e '<ssh command>'`, `-z` with
//!   `network_compression`, `--bwlimit` when limited), retried `basebackup_retry_times` times:
//!   [`Rsync`]; or, for `backup_method = local-rsync` (Barman on the database host), with no
//!   transport at all, the source paths being local ([`Rsync::local`]). Exit 24 (files vanished) is success, and so is 23 when every error line is a
//!   file that vanished or shrank while it was read (Barman's `VANISHED_RE`): PostgreSQL drops
//!   and truncates files during a backup, and the WAL replay puts them right.
//!
//! `barman check`'s `ssh` and `ssh output clean` lines for either command are [`ssh_checks`].
//!
//! Every rsync runs as a child registered in a [`ChildSet`], so an interrupted operation can
//! stop the processes it started, and only those ([`ChildSet::cancel`]).

use std::io::{Read as _, Write as _};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Quotes `s` for a POSIX shell (left bare when it is made of safe characters only).
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"/._-+=:,@%".contains(&b)) {
        return s.to_owned();
    }
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// A command run through ssh, or rsync, failed.
#[derive(Debug, thiserror::Error)]
pub enum SshError {
    /// The program could not be started.
    #[error("cannot run {command}")]
    Spawn {
        /// The command line.
        command: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Talking to the running program (its pipes, its exit status) failed.
    #[error("{command}: lost the pipe to the process")]
    Pipe {
        /// The command line.
        command: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// It ran and failed.
    #[error("{command} failed ({status}): {stderr}")]
    Failed {
        /// The command line.
        command: String,
        /// Its exit status.
        status: ExitStatus,
        /// Its standard error, trimmed.
        stderr: String,
    },
    /// The operation was cancelled ([`ChildSet::cancel`]) before or while it ran.
    #[error("{command}: stopped, the operation was cancelled")]
    Cancelled {
        /// The command line.
        command: String,
    },
}

/// Runs `script` on the remote host through `ssh_command` (`sh -c "<ssh command> '<script>'"`);
/// returns its standard output.
pub fn remote_shell(ssh_command: &str, script: &str) -> Result<String, SshError> {
    let line = format!("{ssh_command} {}", shell_quote(script));
    let out = Command::new("sh")
        .arg("-c")
        .arg(&line)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| SshError::Spawn { command: line.clone(), source })?;
    if !out.status.success() {
        return Err(SshError::Failed {
            command: line,
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The child processes an operation started, so that they can all be stopped at once.
///
/// A child is reaped only while the set's lock is held and after it left the set, so
/// [`cancel`](Self::cancel) never signals a process ID that was already reaped (and possibly
/// reused).
#[derive(Debug, Default)]
pub struct ChildSet {
    inner: Mutex<Children>,
}

#[derive(Debug, Default)]
struct Children {
    cancelled: bool,
    next: u64,
    running: Vec<(u64, Child)>,
}

impl ChildSet {
    /// Kills every child still running and refuses new ones from now on.
    pub fn cancel(&self) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.cancelled = true;
        for (_, child) in &mut inner.running {
            // Already exited (not yet reaped) is the only failure, and harmless.
            let _ = child.kill();
        }
    }

    /// Whether [`cancel`](Self::cancel) was called.
    pub fn is_cancelled(&self) -> bool {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).cancelled
    }

    /// Starts `cmd` as a member and hands out its pipes; `None` once cancelled.
    fn spawn(&self, cmd: &mut Command) -> Option<std::io::Result<(u64, Pipes)>> {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if inner.cancelled {
            return None;
        }
        Some(cmd.spawn().map(|mut child| {
            inner.next += 1;
            let token = inner.next;
            let pipes = Pipes { stdin: child.stdin.take(), stdout: child.stdout.take(), stderr: child.stderr.take() };
            inner.running.push((token, child));
            (token, pipes)
        }))
    }

    /// Waits for the member `token` to exit and reaps it. Call once its output pipes reached
    /// their end, so the wait (under the lock) is short.
    fn wait(&self, token: u64) -> std::io::Result<ExitStatus> {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let at = inner.running.iter().position(|(t, _)| *t == token).expect("a member is waited for once");
        let (_, mut child) = inner.running.swap_remove(at);
        child.wait()
    }
}

/// The pipes of a child the [`ChildSet`] holds.
struct Pipes {
    stdin: Option<std::process::ChildStdin>,
    stdout: Option<std::process::ChildStdout>,
    stderr: Option<std::process::ChildStderr>,
}

/// How rsync reaches the other host, and what every run shares.
#[derive(Debug, Clone)]
pub struct Rsync {
    /// `ssh_command` (`-e`); `None` copies between local paths (Barman's local mode, where
    /// `RsyncPgData` gets no `ssh`).
    pub ssh_command: Option<String>,
    /// `network_compression`: `-z`.
    pub network_compression: bool,
    /// Extra attempts for a failed run (`basebackup_retry_times`).
    pub retry_times: u32,
    /// Pause between attempts (`basebackup_retry_sleep`).
    pub retry_sleep: Duration,
    /// Where its processes are registered.
    pub children: Arc<ChildSet>,
}

impl Rsync {
    /// Settings for runs over `ssh_command`, with a fresh [`ChildSet`].
    pub fn new(ssh_command: &str, network_compression: bool, retry_times: u32, retry_sleep: Duration) -> Rsync {
        Rsync {
            ssh_command: Some(ssh_command.to_owned()),
            network_compression,
            retry_times,
            retry_sleep,
            children: Arc::default(),
        }
    }

    /// Settings for runs between local paths (no `-e`), with a fresh [`ChildSet`]: Barman's
    /// local mode. `network_compression` still adds `-z`, as Barman passes it regardless.
    pub fn local(network_compression: bool, retry_times: u32, retry_sleep: Duration) -> Rsync {
        Rsync { ssh_command: None, network_compression, retry_times, retry_sleep, children: Arc::default() }
    }

    /// `path` as a source on the PostgreSQL host: `:<path>` through the ssh transport, the
    /// path itself in local mode (Barman's `RsyncBackupExecutor._format_src`).
    pub fn source(&self, path: &str) -> String {
        match self.ssh_command {
            Some(_) => format!(":{path}"),
            None => path.to_owned(),
        }
    }

    /// One rsync run, `rsync -rLKpts --delete-excluded --inplace [-e <ssh>] [-z] <args>
    /// [--bwlimit=N]`, with `stdin` fed to it (`--files-from=-`); retried as configured.
    /// Returns its standard output.
    pub fn run(&self, args: &[String], stdin: Option<&str>, bwlimit: Option<u64>) -> Result<String, SshError> {
        let mut cmd = Command::new("rsync");
        cmd.args(["-rLKpts", "--delete-excluded", "--inplace"]);
        if let Some(ssh) = &self.ssh_command {
            cmd.args(["-e", ssh]);
        }
        if self.network_compression {
            cmd.arg("-z");
        }
        cmd.args(args);
        if let Some(kbps) = bwlimit.filter(|&b| b > 0) {
            cmd.arg(format!("--bwlimit={kbps}"));
        }
        let line = format!("rsync {}", args.iter().map(|a| shell_quote(a)).collect::<Vec<_>>().join(" "));
        let mut attempt = 0;
        loop {
            match self.run_once(&mut cmd, &line, stdin) {
                Ok(out) => return Ok(out),
                Err(e @ SshError::Cancelled { .. }) => return Err(e),
                Err(e) if attempt < self.retry_times && !self.children.is_cancelled() => {
                    attempt += 1;
                    tracing::warn!(error = %crate::error_chain(&e), "rsync failed; attempt {attempt} of {} in {:?}", self.retry_times, self.retry_sleep);
                    std::thread::sleep(self.retry_sleep);
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn run_once(&self, cmd: &mut Command, line: &str, stdin: Option<&str>) -> Result<String, SshError> {
        cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() }).stdout(Stdio::piped()).stderr(Stdio::piped());
        let cancelled = || SshError::Cancelled { command: line.to_owned() };
        let pipe = |source| SshError::Pipe { command: line.to_owned(), source };
        let (token, mut pipes) = self.children.spawn(cmd).ok_or_else(cancelled)?.map_err(|source| SshError::Spawn { command: line.to_owned(), source })?;
        // stdin, stdout and stderr each on their own thread: none can fill up and stall rsync.
        let (fed, out, err) = std::thread::scope(|s| {
            let feeder = s.spawn(|| match (stdin, pipes.stdin.take()) {
                (Some(text), Some(mut p)) => p.write_all(text.as_bytes()),
                _ => Ok(()),
            });
            let errs = s.spawn(|| {
                let mut buf = Vec::new();
                pipes.stderr.take().map_or(Ok(0), |mut p| p.read_to_end(&mut buf)).map(|_| buf)
            });
            let mut buf = Vec::new();
            let out = pipes.stdout.take().map_or(Ok(0), |mut p| p.read_to_end(&mut buf)).map(|_| buf);
            (feeder.join().expect("the feeder does not panic"), out, errs.join().expect("the reader does not panic"))
        });
        let status = self.children.wait(token).map_err(pipe)?;
        let stderr = String::from_utf8_lossy(&err.map_err(pipe)?).trim().to_owned();
        let stdout = String::from_utf8_lossy(&out.map_err(pipe)?).into_owned();
        if self.children.is_cancelled() {
            return Err(cancelled());
        }
        let ok = match status.code() {
            Some(0 | 24) => true,
            Some(23) => only_vanished(&stderr),
            _ => false,
        };
        if !ok {
            return Err(SshError::Failed { command: line.to_owned(), status, stderr });
        }
        // A broken stdin pipe means rsync ended early, which its status already told.
        fed.map_err(pipe)?;
        Ok(stdout)
    }
}

/// Whether every line of rsync's standard error reports a file that vanished, or shrank while
/// read, and the summary line of exit 23 (Barman's `RsyncCopyController.VANISHED_RE`).
fn only_vanished(stderr: &str) -> bool {
    stderr.lines().map(str::trim_end).filter(|l| !l.is_empty()).all(|l| {
        let lower = l.to_ascii_lowercase();
        (lower.starts_with("rsync: link_stat \"") && lower.ends_with("failed: no such file or directory (2)"))
            || lower.starts_with("file has vanished: \"")
            || (lower.starts_with("rsync: read errors mapping \"") && lower.ends_with("no data available (61)"))
            || (lower.starts_with("rsync error: ") && lower.contains("(code 23) at main.c("))
    })
}

/// Barman's remote `ssh` check (`ExternalBackupExecutor._remote_check`, and the passive
/// node's `PassiveBackupExecutor.check`): `true` run through `ssh_command` with
/// `-o BatchMode=yes -o StrictHostKeyChecking=no` added (Barman's `UnixRemoteCommand`), the
/// check's hint naming the host (`host`, e.g. `PostgreSQL server`); and, when the remote shell
/// printed something, `ssh output clean` fails, as that output would corrupt what is sent over
/// the connection (rsync's protocol, sync-info's JSON).
pub fn ssh_checks(ssh_command: &str, host: &str) -> Vec<crate::diagnostics::CheckResult> {
    let result = |name: &str, ok: bool, hint: String| crate::diagnostics::CheckResult {
        name: name.to_owned(),
        ok,
        hint: Some(hint),
        perfdata: None,
        details: Vec::new(),
    };
    let mut words = ssh_command.split_whitespace();
    let program = words.next().unwrap_or_default();
    let options: Vec<&str> = words.collect();
    let line = format!("{program} -o BatchMode=yes -o StrictHostKeyChecking=no {}", options.join(" "));
    match remote_shell(&line, "true") {
        Ok(out) => {
            let mut checks = vec![result("ssh", true, host.to_owned())];
            if !out.is_empty() {
                checks.push(result(
                    "ssh output clean",
                    false,
                    "the configured ssh_command must not add anything to the remote command output".to_owned(),
                ));
            }
            checks
        }
        Err(e) => {
            let hint = match e {
                SshError::Failed { status, .. } => format!(
                    "Connection failed using '{program} {} -o BatchMode=yes -o StrictHostKeyChecking=no' return code {}",
                    options.join(" "),
                    status.code().unwrap_or(-1)
                ),
                _ => format!("Unable to execute {program}"),
            };
            vec![result("ssh", false, hint)]
        }
    }
}

/// Shares `items` (each with its size) out into at most `n` lists of similar total size:
/// biggest first, each to the list holding the fewest bytes so far. Empty lists are left out.
pub fn share_out<T>(mut items: Vec<(u64, T)>, n: usize) -> Vec<Vec<T>> {
    items.sort_by_key(|(size, _)| std::cmp::Reverse(*size));
    let n = n.clamp(1, items.len().max(1));
    let mut buckets: Vec<(u64, Vec<T>)> = (0..n).map(|_| (0, Vec::new())).collect();
    for (size, item) in items {
        let b = buckets.iter_mut().min_by_key(|b| b.0).expect("at least one bucket");
        b.0 += size;
        b.1.push(item);
    }
    buckets.into_iter().map(|b| b.1).filter(|b| !b.is_empty()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_for_the_shell() {
        assert_eq!(shell_quote("/var/lib/pg/data"), "/var/lib/pg/data");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
        assert_eq!(shell_quote(""), "''");
    }

    #[test]
    fn vanished_files_are_not_errors() {
        let benign = "file has vanished: \"/pg/base/5/16384\"\n\
                      rsync: link_stat \"/pg/base/5/16390\" failed: No such file or directory (2)\n\
                      rsync error: some files/attrs were not transferred (see previous errors) (code 23) at main.c(1338) [generator=3.2.7]\n";
        assert!(only_vanished(benign));
        assert!(!only_vanished("rsync: [sender] send_files failed to open \"/pg/x\": Permission denied (13)\n\
                                rsync error: some files/attrs were not transferred (see previous errors) (code 23) at main.c(1338) [generator=3.2.7]"));
    }

    #[test]
    fn shares_out_by_size() {
        let lists = share_out(vec![(1, "a"), (10, "b"), (5, "c"), (5, "d")], 2);
        assert_eq!(lists, [vec!["b", "a"], vec!["c", "d"]]);
        assert_eq!(share_out(vec![(1, "a")], 4), [vec!["a"]]);
        assert!(share_out(Vec::<(u64, ())>::new(), 3).is_empty());
    }

    #[test]
    fn runs_rsync_and_reports_failures() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a"), b"abc").unwrap();
        let rsync = Rsync::local(false, 0, Duration::ZERO);
        assert_eq!(rsync.source("/pg/data/"), "/pg/data/");
        assert_eq!(Rsync::new("ssh pg", false, 0, Duration::ZERO).source("/pg/data/"), ":/pg/data/");
        let list = rsync.run(&["--list-only".into(), format!("{}/", dir.path().display())], None, None).unwrap();
        assert!(list.lines().any(|l| l.ends_with(" a")), "{list}");
        let err = rsync.run(&["--list-only".into(), "/nonexistent/dir/".into()], None, None).unwrap_err();
        assert!(matches!(err, SshError::Failed { .. }), "{err}");
        rsync.children.cancel();
        let err = rsync.run(&["--list-only".into(), format!("{}/", dir.path().display())], None, None).unwrap_err();
        assert!(matches!(err, SshError::Cancelled { .. }), "{err}");
    }
}
