//! Running one measured command: wall time, CPU time and peak RSS of the whole process tree.
//!
//! Every measured program runs under GNU `time` (`/usr/bin/time -f '%U %S %M' -o FILE`), which
//! reads the child's `rusage` from `wait4`: user + system CPU of the child and every descendant
//! it waited for, and the largest resident set among them (not their sum: pgBackRest's
//! `process-max` workers are reported one at a time). Wall time is taken here around the run
//! (GNU time's own clock has 10 ms steps). Server-side CPU (the walsender, PostgreSQL's own
//! compression with `server-zstd`) is not in these numbers: it is the same server for every tool.
//!
//! This avoids `unsafe` (`getrusage`/`wait4` through `libc`) and any new dependency; the
//! `time` package is installed when missing.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _};
use barman_tests::ServerUser;

/// GNU time.
const GNU_TIME: &str = "/usr/bin/time";

/// One program invocation, described so that it can be run plainly or under GNU time.
#[derive(Debug, Clone)]
pub struct Job {
    program: PathBuf,
    args: Vec<OsString>,
    envs: Vec<(OsString, OsString)>,
    user: Option<ServerUser>,
}

impl Job {
    /// `program` with no arguments, run as the current user.
    pub fn new(program: impl Into<PathBuf>) -> Job {
        Job {
            program: program.into(),
            args: Vec::new(),
            envs: Vec::new(),
            user: None,
        }
    }

    /// Appends arguments.
    pub fn args<I, S>(mut self, args: I) -> Job
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Sets one environment variable.
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Job {
        self.envs.push((key.into(), value.into()));
        self
    }

    /// Runs as `user` (the unprivileged server user, for pgBackRest) when given.
    pub fn user(mut self, user: Option<ServerUser>) -> Job {
        self.user = user;
        self
    }

    /// `program args…` for messages.
    pub fn describe(&self) -> String {
        let mut text = self.program.display().to_string();
        for a in &self.args {
            text.push(' ');
            text.push_str(&a.to_string_lossy());
        }
        text
    }

    /// The plain command.
    pub fn command(&self) -> Command {
        self.build(None)
    }

    fn build(&self, time_out: Option<&Path>) -> Command {
        let mut cmd = match time_out {
            Some(out) => {
                let mut c = Command::new(GNU_TIME);
                c.args(["-f", "%U %S %M", "-o"]).arg(out).arg(&self.program);
                c
            }
            None => Command::new(&self.program),
        };
        cmd.args(&self.args);
        for (k, v) in &self.envs {
            cmd.env(k, v);
        }
        // No developer PG* variable may change what a tool connects to.
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("PG") && !self.envs.iter().any(|(e, _)| *e == k) {
                cmd.env_remove(&k);
            }
        }
        if let Some(u) = &self.user {
            use std::os::unix::process::CommandExt as _;
            cmd.uid(u.uid).gid(u.gid);
        }
        cmd
    }

    /// Runs to completion, untimed; `Ok(stdout)` on exit 0.
    pub fn run(&self) -> anyhow::Result<String> {
        let out = self
            .command()
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("cannot start {}", self.describe()))?;
        if !out.status.success() {
            bail!(
                "{} failed ({}): {}\n{}",
                self.describe(),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim(),
                String::from_utf8_lossy(&out.stdout).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs to completion under GNU time; fails unless it exits 0.
    pub fn measure(&self, scratch: &Path) -> anyhow::Result<Sample> {
        let out_file = time_file(scratch)?;
        let start = Instant::now();
        let out = self
            .build(Some(&out_file))
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("cannot start {}", self.describe()))?;
        let wall = start.elapsed();
        if !out.status.success() {
            bail!(
                "{} failed ({}): {}\n{}",
                self.describe(),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim(),
                String::from_utf8_lossy(&out.stdout).trim()
            );
        }
        let mut sample = read_time_file(&out_file, wall)?;
        sample.stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        Ok(sample)
    }

    /// Starts under GNU time in the background (a receiver); stop it with [`Running::stop`].
    pub fn spawn_measured(&self, scratch: &Path) -> anyhow::Result<Running> {
        let out_file = time_file(scratch)?;
        let child = self
            .build(Some(&out_file))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start {}", self.describe()))?;
        Ok(Running {
            child,
            out_file,
            start: Instant::now(),
            what: self.describe(),
        })
    }
}

/// A measured program running in the background.
pub struct Running {
    child: Child,
    out_file: PathBuf,
    start: Instant,
    what: String,
}

impl Running {
    /// Sends SIGTERM to the measured program (GNU time's child, found in
    /// `/proc/<time pid>/task/<time pid>/children`), waits, and returns its usage.
    pub fn stop(mut self) -> anyhow::Result<Sample> {
        let pid = self.child.id();
        let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
            .unwrap_or_default();
        for child in children.split_whitespace() {
            let _ = Command::new("kill").args(["-TERM", child]).status();
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if self.child.try_wait()?.is_some() {
                break;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                bail!("{} did not stop within 20 s of SIGTERM", self.what);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        read_time_file(&self.out_file, self.start.elapsed())
    }

    /// Whether the program already ended (it should not while measured).
    pub fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let pid = self.child.id();
            let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
                .unwrap_or_default();
            for child in children.split_whitespace() {
                let _ = Command::new("kill").args(["-TERM", child]).status();
            }
            let _ = self.child.wait();
        }
    }
}

fn time_file(scratch: &Path) -> anyhow::Result<PathBuf> {
    let file = tempfile::Builder::new()
        .prefix("time-")
        .tempfile_in(scratch)
        .context("GNU time output file")?;
    let (_, path) = file.keep().context("keeping the GNU time output file")?;
    // GNU time may run as the server user (pgBackRest): let it write the file.
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666))?;
    Ok(path)
}

/// Parses `%U %S %M` (the last line: earlier ones may say "Command terminated by signal 15").
fn read_time_file(path: &Path, wall: Duration) -> anyhow::Result<Sample> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let _ = std::fs::remove_file(path);
    let line = text
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .with_context(|| format!("GNU time wrote nothing: {text:?}"))?;
    let fields: Vec<&str> = line.split_whitespace().collect();
    ensure!(fields.len() == 3, "unexpected GNU time output {text:?}");
    let user: f64 = fields[0].parse().context("user time")?;
    let sys: f64 = fields[1].parse().context("system time")?;
    let rss_kib: u64 = fields[2].parse().context("max RSS")?;
    Ok(Sample {
        wall_s: wall.as_secs_f64(),
        cpu_s: user + sys,
        rss_mib: rss_kib as f64 / 1024.0,
        value: None,
        stdout: String::new(),
    })
}

/// One measured run.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Elapsed seconds.
    pub wall_s: f64,
    /// User + system CPU seconds of the process tree.
    pub cpu_s: f64,
    /// Largest resident set of one process of the tree, MiB.
    pub rss_mib: f64,
    /// The work's own figure when it is not a time (TPS, segments/s, ms per segment).
    pub value: Option<f64>,
    /// What the program printed (pgbench's report).
    pub stdout: String,
}

/// Median of a non-empty list (mean of the middle two for an even count).
pub fn median(values: &[f64]) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// How caches are treated before each measured run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CachePolicy {
    /// `sync; echo 3 > /proc/sys/vm/drop_caches` before every measured run (root only).
    Drop,
    /// Nothing dropped: the dataset fits in RAM and every tool reads it warm.
    Warm,
}

impl CachePolicy {
    /// Drops the page cache when the policy says so.
    pub fn before_run(self) -> anyhow::Result<()> {
        if self == CachePolicy::Drop {
            let status = Command::new("sync").status().context("sync")?;
            ensure!(status.success(), "sync failed");
            std::fs::write("/proc/sys/vm/drop_caches", "3\n")
                .context("writing /proc/sys/vm/drop_caches")?;
        }
        Ok(())
    }

    /// Whether this machine lets us drop caches.
    pub fn detect() -> CachePolicy {
        if barman_tests::is_root() && std::fs::write("/proc/sys/vm/drop_caches", "3\n").is_ok() {
            CachePolicy::Drop
        } else {
            CachePolicy::Warm
        }
    }

    /// For the report.
    pub fn describe(self) -> &'static str {
        match self {
            CachePolicy::Drop => "page cache dropped (sync; drop_caches=3) before every measured run",
            CachePolicy::Warm => "warm: caches not dropped (not root or not permitted); the dataset fits in RAM",
        }
    }
}

/// Total bytes of the regular files under `path` (what a tool produced), symlinks not followed.
pub fn tree_bytes(path: &Path) -> u64 {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return 0;
    };
    if meta.is_file() {
        return meta.len();
    }
    if !meta.is_dir() {
        return 0;
    }
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .map(|e| tree_bytes(&e.path()))
        .sum()
}
