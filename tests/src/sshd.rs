//! A real OpenSSH server on localhost, for the tests whose files and commands cross ssh
//! (`backup_method = rsync`, `recover --remote-ssh-command`, a passive node's
//! `primary_ssh_command`).
//!
//! [`Sshd::start`] runs `/usr/sbin/sshd -D` on a free loopback port with everything of its own
//! in a temporary directory: a fresh host key, a client key pair, an `authorized_keys` holding
//! that client key, its configuration and its log. Only the PostgreSQL side's account may log
//! in: the harness's [`ServerUser`](crate::ServerUser) when the tests run as root (the one that
//! owns the clusters' files), the current user otherwise. [`Sshd::ssh_command`] is the command
//! line to put in `ssh_command`, `--remote-ssh-command` or `primary_ssh_command`: it names the
//! key, the port and that account, and trusts the host key without a `known_hosts` file. The
//! server is killed on drop.
//!
//! Two details make this work on a stock Debian image:
//!
//! - `UsePAM yes` when root: the `postgres` account Debian creates has a locked password (`!`),
//!   which sshd without PAM treats as a locked account and refuses even for key logins.
//! - The account needs a real shell, since sshd runs every command through it. The harness's
//!   own `barman-test` user is given `/bin/sh` if an older run created it with `nologin`;
//!   any other account without a shell is an error that says so.
//!
//! `sshd` comes from Debian's `openssh-server` (`scripts/test` installs it when missing).

use std::fmt::Write as _;
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _};

use crate::{is_root, server_user, CommandOutput, RunCommand as _};

/// Where Debian's `openssh-server` installs the daemon.
const SSHD: &str = "/usr/sbin/sshd";
/// sshd's privilege-separation directory; it must exist, root-owned and not writable by others.
const PRIVSEP_DIR: &str = "/run/sshd";
/// How long sshd may take to accept a first login.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How many free ports to try when another process takes ours between probe and bind.
const PORT_ATTEMPTS: usize = 5;

/// A running sshd that lets one account log in with the harness's key; killed on drop.
#[derive(Debug)]
pub struct Sshd {
    dir: tempfile::TempDir,
    child: Child,
    port: u16,
    user: String,
}

impl Sshd {
    /// Starts sshd on a free port of 127.0.0.1 and waits until a login through
    /// [`ssh_command`](Self::ssh_command) works.
    pub fn start() -> anyhow::Result<Sshd> {
        ensure!(
            Path::new(SSHD).exists(),
            "{SSHD} not found: install Debian's openssh-server (scripts/test does)"
        );
        let user = login_user()?;
        if is_root() {
            std::fs::create_dir_all(PRIVSEP_DIR).with_context(|| format!("creating {PRIVSEP_DIR}"))?;
            std::fs::set_permissions(PRIVSEP_DIR, std::fs::Permissions::from_mode(0o755))?;
        }

        let mut last_error = String::new();
        for _ in 0..PORT_ATTEMPTS {
            // Each attempt gets a fresh directory: a failed one is removed with its sshd.
            let dir = new_dir()?;
            let port = free_port()?;
            let config = dir.path().join("sshd_config");
            std::fs::write(&config, sshd_config(dir.path(), port, &user))?;
            let child = Command::new(SSHD)
                .arg("-D")
                .arg("-f")
                .arg(&config)
                .arg("-E")
                .arg(dir.path().join("sshd.log"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .with_context(|| format!("starting {SSHD}"))?;
            let mut sshd = Sshd { dir, child, port, user: user.clone() };
            let Err(e) = sshd.wait_ready() else {
                return Ok(sshd);
            };
            last_error = format!("{e:#}\n{}", sshd.log_tail());
            // Only a lost port race is worth another try.
            if !last_error.contains("Address already in use") {
                bail!("sshd on port {port} did not start: {last_error}");
            }
            drop(sshd);
        }
        bail!("sshd did not start after {PORT_ATTEMPTS} ports: {last_error}")
    }

    /// The TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The account that may log in (it owns the clusters' files when the tests run as root).
    pub fn user(&self) -> &str {
        &self.user
    }

    /// The private key that logs in as [`user`](Self::user) (0600, owned by the current user).
    pub fn client_key(&self) -> PathBuf {
        self.dir.path().join("client_key")
    }

    /// `ssh -p PORT -i KEY -o … USER@127.0.0.1`: a complete ssh command line, to which a
    /// remote command may be appended, as Barman's `ssh_command` and `--remote-ssh-command`
    /// expect. Host keys are accepted without a `known_hosts` file and nothing is prompted.
    pub fn ssh_command(&self) -> String {
        format!("{} {}@127.0.0.1", self.ssh_transport(), self.user)
    }

    /// [`ssh_command`](Self::ssh_command) without the destination: what `rsync -e` takes.
    pub fn ssh_transport(&self) -> String {
        format!(
            "ssh -p {} -i {} -o BatchMode=yes -o StrictHostKeyChecking=no \
             -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR",
            self.port,
            self.client_key().display(),
        )
    }

    /// Runs `remote` (a shell command line) on the other side, as [`user`](Self::user).
    pub fn run(&self, remote: &str) -> anyhow::Result<CommandOutput> {
        let line = self.ssh_command();
        let mut words = line.split_whitespace();
        let program = words.next().unwrap_or("ssh");
        let mut cmd = Command::new(program);
        cmd.args(words).arg(remote);
        cmd.output_any()
            .with_context(|| format!("ssh to {}@127.0.0.1:{}: {remote}", self.user, self.port))
    }

    /// The end of sshd's log, for error messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let mut out = String::from("--- sshd log (tail) ---\n");
        for line in &lines[lines.len().saturating_sub(20)..] {
            let _ = writeln!(out, "{line}");
        }
        out
    }

    /// Polls until `ssh … true` succeeds, failing early if sshd exits.
    fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("sshd exited ({status})");
            }
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                match self.run("true") {
                    Ok(out) if out.success => return Ok(()),
                    Ok(out) if Instant::now() >= deadline => {
                        bail!("ssh login as {} fails: {}", self.user, out.stderr.trim())
                    }
                    Err(e) if Instant::now() >= deadline => return Err(e),
                    _ => {}
                }
            } else if Instant::now() >= deadline {
                bail!("sshd does not listen on port {} after {START_TIMEOUT:?}", self.port);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A new directory with a host key, a client key pair and `authorized_keys` holding its
/// public half.
fn new_dir() -> anyhow::Result<tempfile::TempDir> {
    let dir = tempfile::Builder::new()
        .prefix("barman-sshd-")
        .tempdir()
        .context("creating the sshd directory")?;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
    keygen(&dir.path().join("host_key"))?;
    keygen(&dir.path().join("client_key"))?;
    let authorized = dir.path().join("authorized_keys");
    std::fs::copy(dir.path().join("client_key.pub"), &authorized)?;
    std::fs::set_permissions(&authorized, std::fs::Permissions::from_mode(0o644))?;
    Ok(dir)
}

/// The configuration: loopback only, keys only, one account, everything in `dir`.
///
/// `StrictModes no` because `dir` lives under the world-writable `/tmp`, which sshd's
/// ownership checks of the `authorized_keys` path would reject.
fn sshd_config(dir: &Path, port: u16, user: &str) -> String {
    let d = dir.display();
    format!(
        "Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host_key\nPidFile {d}/sshd.pid\n\
         AuthorizedKeysFile {d}/authorized_keys\nStrictModes no\nUsePAM {pam}\n\
         PubkeyAuthentication yes\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
         AllowUsers {user}\nPermitRootLogin no\nMaxStartups 50\nMaxSessions 50\nLogLevel VERBOSE\n",
        pam = if is_root() { "yes" } else { "no" },
    )
}

/// The account sshd lets in: the server user as root, the current user otherwise; made able to
/// run commands (a real login shell) when it is the harness's own account.
fn login_user() -> anyhow::Result<String> {
    let Some(user) = server_user()? else {
        let name = Command::new("id").arg("-un").run()?;
        return Ok(name.trim().to_owned());
    };
    let entry = Command::new("getent").args(["passwd", &user.name]).run()?;
    let shell = entry.trim().rsplit(':').next().unwrap_or("").to_owned();
    if shell.ends_with("nologin") || shell.ends_with("/false") || shell.is_empty() {
        ensure!(
            user.name == crate::server_user::FALLBACK_USER,
            "{} has no login shell ({shell:?}); sshd could not run commands as it",
            user.name
        );
        Command::new("usermod")
            .args(["--shell", "/bin/sh", &user.name])
            .run()?;
    }
    Ok(user.name)
}

/// Writes an ed25519 key pair without passphrase at `path` and `path.pub`.
fn keygen(path: &Path) -> anyhow::Result<()> {
    Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "barman-tests", "-f"])
        .arg(path)
        .run()
        .context("running ssh-keygen (Debian's openssh-client)")?;
    Ok(())
}

fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0")?;
    Ok(listener.local_addr().context("local address")?.port())
}
