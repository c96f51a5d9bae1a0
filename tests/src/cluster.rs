//! One PostgreSQL server in its own temporary directory.
//!
//! # Layout
//!
//! [`Cluster::start`] makes `/tmp/barman-pg-XXXXXX/` (mode 0755, owned by the server user) with:
//!
//! | path | what |
//! |---|---|
//! | `data/` | the data directory (`initdb -U postgres -k --locale=C`) |
//! | `data/harness.conf` | every setting the harness makes, included at the end of `postgresql.conf` |
//! | `data/server.crt`, `data/server.key` | TLS certificate and key (when `tls`) |
//! | `sock/` | `unix_socket_directories`: the harness's own connections (`local ... trust`) |
//! | `postgresql.log` | the server log (`pg_ctl -l`); its tail is shown when a start fails |
//! | `ca.crt`, `wrong-ca.crt` | the CA that signed `server.crt`, and an unrelated one (when `tls`) |
//!
//! Settings written with `ALTER SYSTEM` ([`Cluster::set_conf`]) go to `postgresql.auto.conf` and
//! override `harness.conf`.
//!
//! # Roles and authentication
//!
//! - `postgres` ([`SUPERUSER`]): the bootstrap superuser; the harness connects as it over the
//!   Unix socket with `trust`.
//! - `barman` ([`BARMAN_USER`]): `LOGIN SUPERUSER REPLICATION`, password [`PASSWORD`].
//! - `streaming_barman` ([`STREAMING_USER`]): `LOGIN REPLICATION`, password [`PASSWORD`].
//!
//! Over TCP (127.0.0.1 only) `pg_hba.conf` asks for [`ClusterOptions::auth`]. With `tls` the TCP
//! lines are `hostssl` and there is no `host` line, so a connection without TLS is refused
//! ("no pg_hba.conf entry ... no encryption"). Passwords are stored as MD5 hashes when the
//! method is [`AuthMethod::Md5`] (so the server really runs the MD5 exchange: with a SCRAM
//! verifier it would silently switch to SCRAM), as SCRAM verifiers otherwise.
//!
//! # Drop
//!
//! Dropping a `Cluster` stops its server (`pg_ctl stop -m immediate`) and removes the directory;
//! with `BARMAN_TEST_KEEP=1` the directory is kept and its path printed.

use std::fs;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _};

use crate::command::RunCommand as _;
use crate::pg_bin::pg_bin_dir;
use crate::server_user::{server_user, ServerUser};
use crate::tls::TestPki;

/// The bootstrap superuser (`initdb -U postgres`).
pub const SUPERUSER: &str = "postgres";
/// A `LOGIN SUPERUSER REPLICATION` role with password [`PASSWORD`], as Barman's docs suggest.
pub const BARMAN_USER: &str = "barman";
/// A `LOGIN REPLICATION` role with password [`PASSWORD`], for streaming connections.
pub const STREAMING_USER: &str = "streaming_barman";
/// The password of [`BARMAN_USER`] and [`STREAMING_USER`].
pub const PASSWORD: &str = "barman-secret-pw";

/// How long to wait for a server to start, stop, stream or promote.
const TIMEOUT: Duration = Duration::from_secs(60);
/// How many free ports to try when another process grabs ours between probe and bind.
const PORT_ATTEMPTS: usize = 5;

/// The `pg_hba.conf` method for TCP connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AuthMethod {
    /// No password asked.
    #[default]
    Trust,
    /// MD5 challenge; the passwords are stored as MD5 hashes (PostgreSQL 18 warns that MD5 is
    /// deprecated but still accepts it).
    Md5,
    /// SCRAM-SHA-256.
    ScramSha256,
    /// Cleartext password (`password` method); pair it with TLS outside tests.
    Password,
}

impl AuthMethod {
    /// The method's name in `pg_hba.conf`.
    pub fn hba_name(self) -> &'static str {
        match self {
            AuthMethod::Trust => "trust",
            AuthMethod::Md5 => "md5",
            AuthMethod::ScramSha256 => "scram-sha-256",
            AuthMethod::Password => "password",
        }
    }

    /// The `password_encryption` that makes this method run as named.
    fn password_encryption(self) -> &'static str {
        match self {
            AuthMethod::Md5 => "md5",
            _ => "scram-sha-256",
        }
    }
}

/// What kind of cluster [`Cluster::start`] makes. Build with [`ClusterOptions::new`] and the
/// chained setters; the fields are public for reading and for struct-update syntax.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// PostgreSQL major, 13–18.
    pub major: u32,
    /// Method for TCP connections (default [`AuthMethod::Trust`]).
    pub auth: AuthMethod,
    /// `ssl = on` with a fresh test CA, and `hostssl`-only TCP lines (default off).
    pub tls: bool,
    /// Whether `pg_hba.conf` has a TCP `replication` line (default true). `false` makes
    /// replication connections over TCP fail with "no pg_hba.conf entry for replication
    /// connection", while ordinary ones still work.
    pub replication_hba: bool,
    /// `max_wal_senders` (default 10). 0 is allowed: `wal_level = replica` and
    /// `archive_mode = on` do not need WAL senders; replication connections are then refused
    /// with "number of requested standby connections exceeds max_wal_senders".
    pub max_wal_senders: u32,
    /// More `postgresql.conf` settings, written after the harness's own (so they win). Values
    /// are quoted by the harness: pass `("archive_command", "cp %p /x/%f")`, not `"'cp ...'"`.
    pub extra_conf: Vec<(String, String)>,
    /// `initdb --wal-segsize` in MB (power of two, 1–1024); `None` = 16.
    pub wal_segsize_mb: Option<u32>,
    /// `initdb --data-checksums` (default true; PostgreSQL 18 enables them by default anyway,
    /// so `false` passes `--no-data-checksums` there).
    pub data_checksums: bool,
}

impl ClusterOptions {
    /// Defaults for `major`: trust, no TLS, replication line present, 10 WAL senders, checksums.
    pub fn new(major: u32) -> ClusterOptions {
        ClusterOptions {
            major,
            auth: AuthMethod::Trust,
            tls: false,
            replication_hba: true,
            max_wal_senders: 10,
            extra_conf: Vec::new(),
            wal_segsize_mb: None,
            data_checksums: true,
        }
    }

    /// Sets [`auth`](Self::auth).
    pub fn auth(mut self, auth: AuthMethod) -> Self {
        self.auth = auth;
        self
    }

    /// Sets [`tls`](Self::tls).
    pub fn tls(mut self, tls: bool) -> Self {
        self.tls = tls;
        self
    }

    /// Sets [`replication_hba`](Self::replication_hba).
    pub fn replication_hba(mut self, replication_hba: bool) -> Self {
        self.replication_hba = replication_hba;
        self
    }

    /// Sets [`max_wal_senders`](Self::max_wal_senders).
    pub fn max_wal_senders(mut self, n: u32) -> Self {
        self.max_wal_senders = n;
        self
    }

    /// Adds one [`extra_conf`](Self::extra_conf) setting.
    pub fn conf(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.extra_conf.push((name.into(), value.into()));
        self
    }

    /// Sets [`wal_segsize_mb`](Self::wal_segsize_mb).
    pub fn wal_segsize_mb(mut self, mb: u32) -> Self {
        self.wal_segsize_mb = Some(mb);
        self
    }

    /// Sets [`data_checksums`](Self::data_checksums).
    pub fn data_checksums(mut self, on: bool) -> Self {
        self.data_checksums = on;
        self
    }
}

/// A running PostgreSQL server, stopped and deleted on drop. See the [module docs](self).
///
/// Methods take `&self`: the server is an outside process, and a test may hold the cluster in
/// several places (e.g. a primary borrowed by a standby check).
#[derive(Debug)]
pub struct Cluster {
    opts: ClusterOptions,
    bin_dir: PathBuf,
    user: Option<ServerUser>,
    /// `None` only while dropping with `BARMAN_TEST_KEEP=1`.
    dir: Option<tempfile::TempDir>,
    root: PathBuf,
    /// Chosen (and changed on a bind conflict) only inside `launch`, before `start` returns.
    port: AtomicU16,
}

impl Cluster {
    /// Creates, configures and starts a new cluster; see the [module docs](self) for what it
    /// holds. On failure the error includes the tail of the server log.
    pub fn start(opts: ClusterOptions) -> anyhow::Result<Cluster> {
        let major = opts.major;
        let cluster = Cluster::new_empty(opts)?;
        cluster
            .init()
            .with_context(|| format!("initdb of PostgreSQL {major}"))?;
        cluster.launch()?;
        cluster
            .sql(&format!(
                "CREATE ROLE {BARMAN_USER} LOGIN SUPERUSER REPLICATION PASSWORD '{PASSWORD}';\n\
                 CREATE ROLE {STREAMING_USER} LOGIN REPLICATION PASSWORD '{PASSWORD}';"
            ))
            .context("creating roles")?;
        Ok(cluster)
    }

    /// Starts a server on a data directory made elsewhere, e.g. one that barman-rs restored.
    ///
    /// The directory is moved into a new cluster directory (so it is removed on drop), handed to
    /// the server user (`chown -R`, mode 0700), and given this harness's `harness.conf` (new
    /// port, socket directory, `opts` settings); `pg_hba.conf`, `postgresql.auto.conf` and any
    /// `recovery.signal` are left as found. `pg_ctl -w` returns once the server accepts
    /// connections: for a recovery that pauses or stays in standby, that is when it is
    /// consistent, so poll for the state the test expects.
    pub fn start_on_data_dir(opts: ClusterOptions, data: &Path) -> anyhow::Result<Cluster> {
        let cluster = Cluster::new_empty(opts)?;
        let target = cluster.data_dir();
        if fs::rename(data, &target).is_err() {
            Command::new("cp")
                .arg("-a")
                .arg(data)
                .arg(&target)
                .run()
                .context("copying the data directory into the cluster directory")?;
        }
        cluster.start_existing()?;
        Ok(cluster)
    }

    /// A cluster directory whose `data/` does not exist yet: restore into
    /// [`data_dir`](Self::data_dir) in place (so paths the restore writes into the
    /// configuration, such as `restore_command`'s, stay valid), then call
    /// [`start_existing`](Self::start_existing).
    pub fn reserve(opts: ClusterOptions) -> anyhow::Result<Cluster> {
        Cluster::new_empty(opts)
    }

    /// Starts the server on what is in [`data_dir`](Self::data_dir): hands it to the server
    /// user (`chown -R`, mode 0700), adds this harness's `harness.conf` (port, sockets,
    /// options) and runs `pg_ctl start -w`.
    pub fn start_existing(&self) -> anyhow::Result<()> {
        let target = self.data_dir();
        if let Some(user) = &self.user {
            Command::new("chown")
                .arg("-R")
                .arg(format!("{}:{}", user.uid, user.gid))
                .arg(&target)
                .run()?;
        }
        fs::set_permissions(&target, fs::Permissions::from_mode(0o700))
            .with_context(|| format!("chmod 0700 {}", target.display()))?;
        self.include_harness_conf()?;
        self.launch()
    }

    /// Makes the cluster directory (with `sock/`) and the value; nothing is started yet.
    fn new_empty(opts: ClusterOptions) -> anyhow::Result<Cluster> {
        let bin_dir = pg_bin_dir(opts.major)?;
        let user = server_user()?;
        let dir = tempfile::Builder::new()
            .prefix("barman-pg-")
            .tempdir_in("/tmp")
            .context("creating a temporary directory under /tmp")?;
        let root = dir.path().to_path_buf();
        let cluster = Cluster {
            opts,
            bin_dir,
            user,
            dir: Some(dir),
            root,
            port: AtomicU16::new(0),
        };
        cluster.prepare_dir(&cluster.root, 0o755)?;
        cluster.prepare_dir(&cluster.socket_dir(), 0o755)?;
        Ok(cluster)
    }

    // ------------------------------------------------------------------ accessors

    /// The PostgreSQL major.
    pub fn major(&self) -> u32 {
        self.opts.major
    }

    /// The options this cluster was made with.
    pub fn options(&self) -> &ClusterOptions {
        &self.opts
    }

    /// TCP port on [`host`](Self::host).
    pub fn port(&self) -> u16 {
        self.port.load(Ordering::Relaxed)
    }

    /// Always `127.0.0.1`: the server listens nowhere else.
    pub fn host(&self) -> &'static str {
        "127.0.0.1"
    }

    /// The cluster's temporary directory (parent of `data/`, `sock/`, the log).
    pub fn root_dir(&self) -> &Path {
        &self.root
    }

    /// The data directory (`PGDATA`).
    pub fn data_dir(&self) -> PathBuf {
        self.root.join("data")
    }

    /// The Unix socket directory; `host=<this>` connects through it with `trust`.
    pub fn socket_dir(&self) -> PathBuf {
        self.root.join("sock")
    }

    /// The server log file.
    pub fn log_file(&self) -> PathBuf {
        self.root.join("postgresql.log")
    }

    /// The directory of this major's binaries (`psql`, `pg_waldump`, `pg_verifybackup`, ...).
    pub fn bin_dir(&self) -> &Path {
        &self.bin_dir
    }

    /// The user the server runs as (`None`: the current user).
    pub fn server_user(&self) -> Option<&ServerUser> {
        self.user.as_ref()
    }

    /// libpq conninfo for TCP: `host=127.0.0.1 port=N user=U dbname=postgres`. No password and
    /// no `sslmode`: append what the test needs, pass the password separately ([`password`](Self::password)).
    pub fn conninfo(&self, user: &str) -> String {
        format!(
            "host={} port={} user={user} dbname=postgres",
            self.host(),
            self.port()
        )
    }

    /// libpq conninfo through the Unix socket (trust): `host=<sock> port=N user=U dbname=postgres`.
    pub fn socket_conninfo(&self, user: &str) -> String {
        format!(
            "host={} port={} user={user} dbname=postgres",
            self.socket_dir().display(),
            self.port()
        )
    }

    /// The password of [`BARMAN_USER`] and [`STREAMING_USER`].
    pub fn password(&self) -> &'static str {
        PASSWORD
    }

    /// PEM file of the CA that signed the server certificate (`sslrootcert` for `verify-full`).
    /// Readable by everyone. Only meaningful with [`ClusterOptions::tls`].
    pub fn ca_cert_path(&self) -> PathBuf {
        self.root.join("ca.crt")
    }

    /// PEM file of an unrelated CA: verification against it must fail.
    pub fn wrong_ca_cert_path(&self) -> PathBuf {
        self.root.join("wrong-ca.crt")
    }

    // ------------------------------------------------------------------ commands

    /// A command for a client program of this major (`psql`, `pg_waldump`, ...), run as the
    /// current user, with an environment that cannot leak the developer's settings: no `PG*`
    /// variables, `HOME` = the cluster directory (so no `~/.pgpass`, `~/.psqlrc`,
    /// `~/.postgresql/root.crt`), `PGPASSFILE` pointing at nothing, `PGCONNECT_TIMEOUT=10`.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(self.bin_dir.join(program));
        cmd.env_clear();
        for keep in ["PATH", "LD_LIBRARY_PATH", "TMPDIR"] {
            if let Some(v) = std::env::var_os(keep) {
                cmd.env(keep, v);
            }
        }
        cmd.env("HOME", &self.root)
            .env("PGPASSFILE", self.root.join("no-such-pgpass"))
            .env("PGSYSCONFDIR", &self.root)
            .env("PGCONNECT_TIMEOUT", "10")
            .env("LC_ALL", "C")
            .current_dir(&self.root);
        cmd
    }

    /// Like [`command`](Self::command), but run as the server user (for programs that write
    /// files the server must own, or that refuse root: `initdb`, `pg_ctl`, `pg_basebackup`).
    ///
    /// When the install has its own `lib/libpq.so.5` (the PyPI builds of 14–18), it is put first
    /// in `LD_LIBRARY_PATH`: their `libpqwalreceiver.so` has a RUNPATH that does not exist
    /// (`/opt/postgresql/lib`), so a standby's WAL receiver would otherwise load the system's
    /// libpq (another major, or none at all).
    pub fn server_command(&self, program: &str) -> Command {
        let mut cmd = self.command(program);
        if let Some(lib) = self.bin_dir.parent().map(|p| p.join("lib")) {
            if lib.join("libpq.so.5").exists() {
                let mut path = lib.into_os_string();
                if let Some(old) = std::env::var_os("LD_LIBRARY_PATH").filter(|v| !v.is_empty()) {
                    path.push(":");
                    path.push(old);
                }
                cmd.env("LD_LIBRARY_PATH", path);
            }
        }
        if let Some(user) = &self.user {
            cmd.uid(user.uid).gid(user.gid);
        }
        cmd
    }

    fn pg_ctl(&self) -> Command {
        let mut cmd = self.server_command("pg_ctl");
        cmd.arg("-D").arg(self.data_dir());
        cmd
    }

    // ------------------------------------------------------------------ SQL

    /// Runs SQL as `postgres` through the Unix socket with `psql -X -A -t -q -v ON_ERROR_STOP=1`
    /// and returns its trimmed output: one line per row, columns separated by `|`.
    ///
    /// The text goes to psql's stdin, so several statements run one by one, each outside a
    /// transaction block (`CREATE DATABASE` works), and every result is printed on every
    /// major (with `-c`, psql before 15 printed only the last one).
    pub fn sql(&self, query: &str) -> anyhow::Result<String> {
        let out = self
            .command("psql")
            .args([
                "-X",
                "-A",
                "-t",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "-f",
                "-",
                "-d",
            ])
            .arg(self.socket_conninfo(SUPERUSER))
            .run_with_stdin(query.as_bytes())
            .with_context(|| {
                format!(
                    "SQL on PostgreSQL {} port {}: {query}",
                    self.major(),
                    self.port()
                )
            })?;
        Ok(out.trim().to_owned())
    }

    /// [`sql`](Self::sql) split into rows and `|`-separated columns (empty output = no rows).
    pub fn sql_rows(&self, query: &str) -> anyhow::Result<Vec<Vec<String>>> {
        Ok(self
            .sql(query)?
            .lines()
            .map(|line| line.split('|').map(str::to_owned).collect())
            .collect())
    }

    /// Runs `query` with psql over TCP as `user`, with `extra_conninfo` appended to
    /// [`conninfo`](Self::conninfo) (e.g. `sslmode=verify-full sslrootcert=/x/ca.crt`) and
    /// `PGPASSWORD` set when `password` is given. psql never prompts (`-w`). Returns the trimmed
    /// output; a refused connection is an `Err` whose text has psql's message.
    pub fn psql_tcp(
        &self,
        user: &str,
        password: Option<&str>,
        extra_conninfo: &str,
        query: &str,
    ) -> anyhow::Result<String> {
        let mut cmd = self.command("psql");
        cmd.args([
            "-X",
            "-A",
            "-t",
            "-q",
            "-w",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            query,
            "-d",
        ])
        .arg(format!("{} {extra_conninfo}", self.conninfo(user)));
        if let Some(pw) = password {
            cmd.env("PGPASSWORD", pw);
        }
        Ok(cmd.run()?.trim().to_owned())
    }

    /// `CREATE TABLESPACE <name>` in a new directory `<root>/<name>` that the server user owns;
    /// returns the directory.
    pub fn create_tablespace(&self, name: &str) -> anyhow::Result<PathBuf> {
        let location = self.root_dir().join(name);
        fs::create_dir(&location).with_context(|| format!("creating {}", location.display()))?;
        if let Some(user) = self.server_user() {
            std::os::unix::fs::chown(&location, Some(user.uid), Some(user.gid))
                .with_context(|| format!("chown {}", location.display()))?;
        }
        self.sql(&format!("CREATE TABLESPACE {name} LOCATION '{}'", location.display()))?;
        Ok(location)
    }

    /// `SELECT pg_switch_wal()`: closes the current segment; returns the switch LSN as text.
    pub fn switch_wal(&self) -> anyhow::Result<String> {
        self.sql("SELECT pg_switch_wal()")
    }

    /// `CHECKPOINT` (a restartpoint on a standby).
    pub fn checkpoint(&self) -> anyhow::Result<()> {
        self.sql("CHECKPOINT").map(drop)
    }

    /// Inserts `rows` rows into `harness_load` (created if missing: `id bigserial`, `payload
    /// text` of 32 hex chars), about 60 bytes of heap and some WAL per row.
    pub fn generate_load(&self, rows: u64) -> anyhow::Result<()> {
        self.sql(&format!(
            "CREATE TABLE IF NOT EXISTS harness_load (id bigserial PRIMARY KEY, payload text NOT NULL);\n\
             INSERT INTO harness_load (payload) SELECT md5(g::text) FROM generate_series(1, {rows}) g;"
        ))
        .map(drop)
    }

    /// `pgbench -i -s scale` in database `postgres` (scale 1 = 100 000 accounts, ~15 MB).
    pub fn pgbench_init(&self, scale: u32) -> anyhow::Result<()> {
        self.command("pgbench")
            .args(["-i", "-q", "-s", &scale.to_string(), "-h"])
            .arg(self.socket_dir())
            .args(["-p", &self.port().to_string(), "-U", SUPERUSER, "postgres"])
            .run()
            .map(drop)
    }

    /// `pgbench -n -c clients -t transactions` (TPC-B-like) after [`pgbench_init`](Self::pgbench_init);
    /// returns pgbench's report.
    pub fn pgbench(&self, clients: u32, transactions: u32) -> anyhow::Result<String> {
        self.command("pgbench")
            .args([
                "-n",
                "-c",
                &clients.to_string(),
                "-t",
                &transactions.to_string(),
                "-h",
            ])
            .arg(self.socket_dir())
            .args(["-p", &self.port().to_string(), "-U", SUPERUSER, "postgres"])
            .run()
    }

    /// Reads a file of the data directory, e.g. `pg_wal/00000002.history`.
    pub fn read_data_file(&self, rel_path: &str) -> anyhow::Result<Vec<u8>> {
        let path = self.data_dir().join(rel_path);
        fs::read(&path).with_context(|| format!("cannot read {}", path.display()))
    }

    /// The database system identifier (`pg_control_system()`).
    pub fn system_identifier(&self) -> anyhow::Result<u64> {
        let text = self.sql("SELECT system_identifier FROM pg_control_system()")?;
        text.parse()
            .with_context(|| format!("system identifier {text:?}"))
    }

    /// The timeline being written. On a primary: the timeline of the segment holding
    /// `pg_current_wal_lsn()` (current at once after a promotion). On a standby, where that
    /// function fails: the timeline of the last restartpoint (`pg_control_checkpoint()`).
    pub fn timeline(&self) -> anyhow::Result<u32> {
        if self.in_recovery()? {
            let text = self.sql("SELECT timeline_id FROM pg_control_checkpoint()")?;
            return text.parse().with_context(|| format!("timeline {text:?}"));
        }
        let name = self.sql("SELECT pg_walfile_name(pg_current_wal_lsn())")?;
        u32::from_str_radix(name.get(..8).unwrap_or_default(), 16)
            .with_context(|| format!("timeline of WAL file name {name:?}"))
    }

    /// `pg_is_in_recovery()`.
    pub fn in_recovery(&self) -> anyhow::Result<bool> {
        Ok(self.sql("SELECT pg_is_in_recovery()")? == "t")
    }

    // ------------------------------------------------------------------ life cycle

    /// `pg_ctl stop -m fast`. Start again with [`restart`](Self::restart).
    pub fn stop(&self) -> anyhow::Result<()> {
        self.pg_ctl()
            .args([
                "stop",
                "-m",
                "fast",
                "-w",
                "-t",
                &TIMEOUT.as_secs().to_string(),
            ])
            .run()
            .map(drop)
            .with_context(|| self.log_tail())
    }

    /// `pg_ctl restart -m fast`; also starts a stopped server.
    pub fn restart(&self) -> anyhow::Result<()> {
        self.pg_ctl()
            .args([
                "restart",
                "-m",
                "fast",
                "-w",
                "-t",
                &TIMEOUT.as_secs().to_string(),
                "-l",
            ])
            .arg(self.log_file())
            .run()
            .map(drop)
            .with_context(|| self.log_tail())
    }

    /// Reloads the configuration and waits until new connections see it.
    ///
    /// `pg_reload_conf()` only signals the postmaster; this waits until `pg_conf_load_time()`
    /// (which new backends inherit from the postmaster) changes.
    pub fn reload(&self) -> anyhow::Result<()> {
        let before = self.sql("SELECT pg_conf_load_time()")?;
        self.sql("SELECT pg_reload_conf()")?;
        wait_for("the configuration reload", || {
            Ok(self.sql("SELECT pg_conf_load_time()")? != before)
        })
    }

    /// `ALTER SYSTEM SET name = 'value'`, then a restart when the setting has `postmaster`
    /// context (e.g. `max_wal_senders`), a reload otherwise. `value` is quoted by the harness.
    pub fn set_conf(&self, name: &str, value: &str) -> anyhow::Result<()> {
        ensure!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.'),
            "not a setting name: {name:?}"
        );
        self.sql(&format!("ALTER SYSTEM SET {name} = {}", quote(value)))?;
        let context = self.sql(&format!(
            "SELECT context FROM pg_settings WHERE name = {}",
            quote(name)
        ))?;
        if context == "postmaster" {
            self.restart()
        } else {
            self.reload()
        }
    }

    /// Clones this running primary into a streaming standby and starts it.
    ///
    /// The copy is made with `pg_basebackup -R -X stream -c fast` over this cluster's Unix
    /// socket (so it works whatever the TCP `pg_hba.conf` lines say; it needs
    /// `max_wal_senders >= 2`). The standby gets its own directory, port and socket, the same
    /// options, roles and certificates, and streams from this server through its socket. Returns
    /// once `pg_stat_wal_receiver` on the standby reports `streaming`.
    pub fn create_standby(&self) -> anyhow::Result<Cluster> {
        let standby = Cluster::new_empty(self.opts.clone())?;
        self.server_command("pg_basebackup")
            .arg("-D")
            .arg(standby.data_dir())
            .args(["-R", "-X", "stream", "-c", "fast", "--no-sync", "-h"])
            .arg(self.socket_dir())
            .args(["-p", &self.port().to_string(), "-U", SUPERUSER])
            .run()
            .context("pg_basebackup for the standby")?;
        // pg_basebackup -R writes every option its own libpq knows (e.g. `sslcertmode`, 16+);
        // a later line with just what is needed keeps the standby independent of that.
        let auto_conf = standby.data_dir().join("postgresql.auto.conf");
        let mut text = fs::read_to_string(&auto_conf)
            .with_context(|| format!("cannot read {}", auto_conf.display()))?;
        text.push_str(&format!(
            "# barman-rs test harness\nprimary_conninfo = {}\n",
            quote(&format!(
                "{} application_name=harness_standby",
                self.socket_conninfo(SUPERUSER)
            ))
        ));
        standby.write_server_file(&auto_conf, &text, 0o600)?;
        if self.opts.tls {
            for (from, to) in [
                (self.ca_cert_path(), standby.ca_cert_path()),
                (self.wrong_ca_cert_path(), standby.wrong_ca_cert_path()),
            ] {
                fs::copy(&from, &to).with_context(|| format!("copying {}", from.display()))?;
            }
        }
        standby.launch()?;
        wait_for("the standby to stream", || {
            Ok(standby.sql("SELECT status FROM pg_stat_wal_receiver")? == "streaming")
        })
        .with_context(|| standby.log_tail())?;
        Ok(standby)
    }

    /// Promotes this standby (`pg_ctl promote -w`) and waits until it accepts writes on a new
    /// timeline whose history file (`pg_wal/0000000N.history`) exists. Returns that timeline.
    pub fn promote(&self) -> anyhow::Result<u32> {
        ensure!(
            self.in_recovery()?,
            "promote: PostgreSQL on port {} is not a standby",
            self.port()
        );
        self.pg_ctl()
            .args(["promote", "-w", "-t", &TIMEOUT.as_secs().to_string()])
            .run()
            .with_context(|| self.log_tail())?;
        wait_for("the promoted server to leave recovery", || {
            Ok(!self.in_recovery()?)
        })?;
        let timeline = self.timeline()?;
        let history = format!("pg_wal/{timeline:08X}.history");
        ensure!(
            timeline >= 2 && self.data_dir().join(&history).is_file(),
            "after promotion: timeline {timeline}, {history} missing"
        );
        Ok(timeline)
    }

    // ------------------------------------------------------------------ set-up steps

    fn init(&self) -> anyhow::Result<()> {
        let mut initdb = self.server_command("initdb");
        initdb
            .arg("-D")
            .arg(self.data_dir())
            .args([
                "-U",
                SUPERUSER,
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
            ])
            // Durability of initdb's own files is not under test; the server keeps fsync on.
            .arg("--no-sync");
        if self.opts.data_checksums {
            initdb.arg("--data-checksums");
        } else if self.opts.major >= 18 {
            initdb.arg("--no-data-checksums");
        }
        if let Some(mb) = self.opts.wal_segsize_mb {
            initdb.arg(format!("--wal-segsize={mb}"));
        }
        initdb.run()?;

        if self.opts.tls {
            let pki = TestPki::generate()?;
            self.write_server_file(
                &self.data_dir().join("server.crt"),
                &pki.server_cert_pem,
                0o644,
            )?;
            self.write_server_file(
                &self.data_dir().join("server.key"),
                &pki.server_key_pem,
                0o600,
            )?;
            write_file(&self.ca_cert_path(), &pki.ca_pem, 0o644)?;
            write_file(&self.wrong_ca_cert_path(), &pki.wrong_ca_pem, 0o644)?;
        }
        self.write_server_file(
            &self.data_dir().join("pg_hba.conf"),
            &self.hba_conf(),
            0o600,
        )?;
        self.include_harness_conf()
    }

    /// `pg_hba.conf`: the socket is trusted (harness only); TCP per [`ClusterOptions`].
    fn hba_conf(&self) -> String {
        let kind = if self.opts.tls { "hostssl" } else { "host" };
        let method = self.opts.auth.hba_name();
        let mut hba = String::from(
            "# barman-rs test harness\n\
             local   all          all                  trust\n\
             local   replication  all                  trust\n",
        );
        if self.opts.replication_hba {
            hba.push_str(&format!(
                "{kind:<7} replication  all  127.0.0.1/32  {method}\n"
            ));
        }
        hba.push_str(&format!(
            "{kind:<7} all          all  127.0.0.1/32  {method}\n"
        ));
        hba
    }

    /// Appends `include_if_exists = 'harness.conf'` to `postgresql.conf` unless it is there.
    fn include_harness_conf(&self) -> anyhow::Result<()> {
        let path = self.data_dir().join("postgresql.conf");
        let text =
            fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
        let line = "include_if_exists = 'harness.conf'";
        if !text.lines().any(|l| l.trim() == line) {
            self.write_server_file(
                &path,
                &format!("{text}\n# barman-rs test harness\n{line}\n"),
                0o600,
            )?;
        }
        Ok(())
    }

    /// `harness.conf` for the current port.
    fn harness_conf(&self) -> String {
        let mut settings: Vec<(&str, String)> = vec![
            ("listen_addresses", "127.0.0.1".into()),
            ("port", self.port().to_string()),
            (
                "unix_socket_directories",
                self.socket_dir().display().to_string(),
            ),
            ("wal_level", "replica".into()),
            ("max_wal_senders", self.opts.max_wal_senders.to_string()),
            ("max_replication_slots", "10".into()),
            ("archive_mode", "on".into()),
            ("archive_command", "/bin/true".into()),
            ("max_connections", "30".into()),
            ("shared_buffers", "32MB".into()),
            (
                "password_encryption",
                self.opts.auth.password_encryption().into(),
            ),
            ("logging_collector", "off".into()),
        ];
        if self.opts.tls {
            settings.push(("ssl", "on".into()));
            settings.push(("ssl_cert_file", "server.crt".into()));
            settings.push(("ssl_key_file", "server.key".into()));
        }
        let mut text =
            String::from("# written by the barman-rs test harness; rewritten on each start\n");
        for (name, value) in settings {
            text.push_str(&format!("{name} = {}\n", quote(&value)));
        }
        for (name, value) in &self.opts.extra_conf {
            text.push_str(&format!("{name} = {}\n", quote(value)));
        }
        text
    }

    /// Picks a free port, writes `harness.conf`, `pg_ctl start`; retries with another port when
    /// another process bound ours in between.
    fn launch(&self) -> anyhow::Result<()> {
        let mut last = None;
        for _ in 0..PORT_ATTEMPTS {
            let port = free_port()?;
            self.port.store(port, Ordering::Relaxed);
            self.write_server_file(
                &self.data_dir().join("harness.conf"),
                &self.harness_conf(),
                0o600,
            )?;
            let log_before = fs::metadata(self.log_file()).map(|m| m.len()).unwrap_or(0);
            let result = self
                .pg_ctl()
                .args(["start", "-w", "-t", &TIMEOUT.as_secs().to_string(), "-l"])
                .arg(self.log_file())
                .run();
            match result {
                Ok(_) => return Ok(()),
                Err(e) => {
                    let log = fs::read(self.log_file()).unwrap_or_default();
                    let new =
                        String::from_utf8_lossy(log.get(log_before as usize..).unwrap_or_default());
                    if !new.contains("Address already in use") {
                        return Err(e.context(format!(
                            "starting PostgreSQL {} on port {port}\n{}",
                            self.major(),
                            self.log_tail()
                        )));
                    }
                    last = Some(e);
                }
            }
        }
        Err(last.expect("at least one attempt").context(format!(
            "no free port after {PORT_ATTEMPTS} attempts\n{}",
            self.log_tail()
        )))
    }

    /// Creates `path` (if needed) with `mode`, owned by the server user.
    fn prepare_dir(&self, path: &Path, mode: u32) -> anyhow::Result<()> {
        fs::create_dir_all(path).with_context(|| format!("cannot create {}", path.display()))?;
        fs::set_permissions(path, fs::Permissions::from_mode(mode))
            .with_context(|| format!("chmod {mode:o} {}", path.display()))?;
        self.give_to_server(path)
    }

    /// Writes a file the server reads, owned by the server user.
    fn write_server_file(&self, path: &Path, contents: &str, mode: u32) -> anyhow::Result<()> {
        write_file(path, contents, mode)?;
        self.give_to_server(path)
    }

    fn give_to_server(&self, path: &Path) -> anyhow::Result<()> {
        if let Some(user) = &self.user {
            std::os::unix::fs::chown(path, Some(user.uid), Some(user.gid))
                .with_context(|| format!("chown {} {}", user.name, path.display()))?;
        }
        Ok(())
    }

    /// The last lines of the server log, for error messages.
    pub fn log_tail(&self) -> String {
        let path = self.log_file();
        match fs::read(&path) {
            Ok(bytes) => {
                let text = String::from_utf8_lossy(&bytes);
                let lines: Vec<&str> = text.lines().collect();
                let tail = lines[lines.len().saturating_sub(30)..].join("\n");
                format!("--- last lines of {} ---\n{tail}", path.display())
            }
            Err(e) => format!("(no server log at {}: {e})", path.display()),
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.data_dir().join("postmaster.pid").exists() {
            let _ = self
                .pg_ctl()
                .args(["stop", "-m", "immediate", "-w", "-t", "30"])
                .output_any();
        }
        if std::env::var_os("BARMAN_TEST_KEEP").is_some_and(|v| v == "1") {
            if let Some(dir) = self.dir.take() {
                let path = dir.keep();
                eprintln!(
                    "BARMAN_TEST_KEEP=1: kept PostgreSQL {} cluster in {} (stopped; start with \
                     `pg_ctl -D {}/data start`)",
                    self.opts.major,
                    path.display(),
                    path.display()
                );
            }
        }
    }
}

fn write_file(path: &Path, contents: &str, mode: u32) -> anyhow::Result<()> {
    fs::write(path, contents).with_context(|| format!("cannot write {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {mode:o} {}", path.display()))
}

/// A port that was free a moment ago on 127.0.0.1 (bind port 0, read it, close).
fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0")?;
    Ok(listener.local_addr().context("local address")?.port())
}

/// A single-quoted SQL / postgresql.conf literal.
fn quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// Polls `check` every 100 ms until it returns true, for at most [`TIMEOUT`]. Errors from
/// `check` count as "not yet" (the server may be restarting); the last one is reported.
pub fn wait_for(what: &str, mut check: impl FnMut() -> anyhow::Result<bool>) -> anyhow::Result<()> {
    let deadline = Instant::now() + TIMEOUT;
    let mut last_error = None;
    loop {
        match check() {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(e) => last_error = Some(e),
        }
        if Instant::now() >= deadline {
            let why = last_error
                .map(|e| format!(" (last error: {e:#})"))
                .unwrap_or_default();
            bail!(
                "timed out after {}s waiting for {what}{why}",
                TIMEOUT.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
