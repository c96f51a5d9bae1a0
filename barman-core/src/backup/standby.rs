//! Backups from a standby, as Barman 3's `StandbyPostgreSQLConnection` takes them
//! (`barman/postgres.py`): the standby is copied with BASE_BACKUP like a primary, and the
//! primary named by `primary_conninfo` is where WAL switches happen.
//!
//! Why the primary: a standby cannot switch WAL (`pg_switch_wal()` fails during recovery), so
//! the WAL file holding the backup's end stays open — and unarchived, whether the standby
//! archives it (`archive_mode = always`) or barman-rs streams it from the standby — until the
//! primary moves to a new file. [`Primary`] does what Barman does on the primary:
//!
//! * a WAL switch once the copy is done ([`Primary::switch_wal`], Barman's `stop_backup`);
//! * while the standby stops the backup — where it waits for its WAL to be archived when
//!   `archive_mode = always` — a WAL switch after 1 second and then every 10 seconds, 10 times
//!   at most, then, with `primary_checkpoint_timeout`, a checkpoint and a switch after that
//!   many seconds ([`Primary::spawn_switcher`], Barman's `switch_wal_in_background`).
//!
//! One deliberate addition: with `immediate_checkpoint`, barman-rs runs a `CHECKPOINT` on the
//! primary and waits (30 s at most) for the standby to replay it before BASE_BACKUP
//! ([`Primary::checkpoint_and_wait_for_replay`]). A standby's backup starts at its last
//! restartpoint, which can only be at a checkpoint replayed from the primary; without a fresh
//! one the backup may start far back, in WAL the archive never received, and end FAILED.
//!
//! Like Barman, no restore point is created for a standby's backup, and a standby without
//! `primary_conninfo` is still backed up: its end WAL is then archived whenever the primary
//! switches on its own, which [`no_primary_warning`] tells the operator.

use std::time::{Duration, Instant};

use barman_replication::{ConnConfig, Connection, SessionKind, SystemId};

use super::streaming::BackupNotice;

/// Barman's warning when `primary_conninfo` is set and `conninfo` is not a standby (a
/// promoted standby, say): the backup goes on as a primary's.
pub const PRIMARY_CONNINFO_IGNORED: &str =
    "'primary_conninfo' is set but 'conninfo' does not point to a standby server. Ignoring 'primary_conninfo'.";

/// How long the standby may take to replay the primary's checkpoint before the backup starts
/// anyway.
const REPLAY_WAIT: Duration = Duration::from_secs(30);

/// Barman's WAL switching while a standby stops its backup: first switch after
/// `SWITCH_FIRST`, then every `SWITCH_EVERY`, `SWITCH_TIMES` times.
const SWITCH_FIRST: Duration = Duration::from_secs(1);
const SWITCH_EVERY: Duration = Duration::from_secs(10);
const SWITCH_TIMES: u32 = 10;

/// What the operator is told when a standby is backed up without `primary_conninfo` (Barman
/// says nothing and the backup waits for WAL it cannot make the primary send).
pub fn no_primary_warning(server: &str) -> String {
    format!(
        "server '{server}' is a standby and 'primary_conninfo' is not set: the backup's last WAL file is \
         archived only once the primary switches to a new WAL file (set 'primary_conninfo' so that barman \
         switches it on the primary)"
    )
}

/// `primary_conninfo` and `primary_checkpoint_timeout`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrimaryOptions {
    /// The primary's connection string (a normal session).
    pub conninfo: String,
    /// `primary_checkpoint_timeout`: after the 10 WAL switches, how long to wait before
    /// forcing a checkpoint on the primary (zero: never).
    pub checkpoint_timeout: Duration,
}

impl PrimaryOptions {
    /// `server`'s `primary_conninfo` and `primary_checkpoint_timeout`, if it has the former.
    pub fn from_config(server: &crate::config::ServerConfig) -> Option<PrimaryOptions> {
        server.primary_conninfo.clone().map(|conninfo| PrimaryOptions {
            conninfo,
            checkpoint_timeout: Duration::from_secs(u64::try_from(server.primary_checkpoint_timeout).unwrap_or(0)),
        })
    }
}

/// The primary a backup of `server` switches WAL on, as Barman decides it: when the server is
/// a standby (`in_recovery`) and `primary_conninfo` names its primary, that primary (checked to
/// be a primary of the standby's `system`); otherwise none, with a warning when
/// `primary_conninfo` is missing on a standby or set on a primary.
pub(crate) async fn primary_for_backup(
    server: &str,
    in_recovery: bool,
    opts: Option<&PrimaryOptions>,
    system: SystemId,
    notify: &mut (dyn FnMut(BackupNotice) + Send),
) -> Result<Option<Primary>, PrimaryError> {
    match (in_recovery, opts) {
        (true, Some(p)) => Ok(Some(Primary::connect(p, system).await?)),
        (true, None) => {
            notify(BackupNotice::Warning(no_primary_warning(server)));
            Ok(None)
        }
        (false, Some(_)) => {
            notify(BackupNotice::Warning(PRIMARY_CONNINFO_IGNORED.into()));
            Ok(None)
        }
        (false, None) => Ok(None),
    }
}

/// The primary of a standby could not be used.
#[derive(Debug, thiserror::Error)]
pub enum PrimaryError {
    /// `primary_conninfo` does not parse.
    #[error("primary_conninfo")]
    Conninfo(#[source] barman_replication::conninfo::ConninfoError),
    /// The primary did not answer.
    #[error("cannot query the primary (primary_conninfo)")]
    Connection(#[source] barman_replication::Error),
    /// `primary_conninfo` leads to another standby (Barman's check hint).
    #[error("primary_conninfo should point to a primary server, not a standby")]
    InRecovery,
    /// The primary is another cluster (Barman's check hint).
    #[error(
        "primary_conninfo and conninfo should point to primary and standby servers which share the same \
         system identifier (primary {primary}, standby {standby})"
    )]
    ForeignSystem {
        /// The primary's.
        primary: String,
        /// The standby's.
        standby: String,
    },
    /// An answer barman-rs cannot read.
    #[error("the primary answered {0}")]
    Invalid(String),
}

/// A normal session on the primary of the standby being backed up.
pub struct Primary {
    conn: Connection,
    config: ConnConfig,
    checkpoint_timeout: Duration,
}

impl Primary {
    /// Connects to the primary and checks that it is one, of the standby's cluster
    /// (`standby`, its system identifier).
    pub async fn connect(opts: &PrimaryOptions, standby: SystemId) -> Result<Primary, PrimaryError> {
        let mut config: ConnConfig = opts.conninfo.parse().map_err(PrimaryError::Conninfo)?;
        if config.application_name.is_none() {
            config.application_name = Some("barman".to_owned());
        }
        let mut conn = Connection::connect(&config, SessionKind::Normal).await.map_err(PrimaryError::Connection)?;
        let row = query(&mut conn, "SELECT pg_is_in_recovery(), system_identifier::text FROM pg_control_system()").await?;
        if row[0] != "f" {
            return Err(PrimaryError::InRecovery);
        }
        if row[1] != standby.to_string() {
            return Err(PrimaryError::ForeignSystem { primary: row[1].clone(), standby: standby.to_string() });
        }
        Ok(Primary { conn, config, checkpoint_timeout: opts.checkpoint_timeout })
    }

    /// `CHECKPOINT` on the primary, then waits until `standby` (a normal session on it) has
    /// replayed it, so that the standby's restartpoint — where its backup starts — is recent.
    /// Failures are logged, not fatal: the backup is still valid, only older at its start.
    pub async fn checkpoint_and_wait_for_replay(&mut self, standby: &mut Connection) {
        let target = match async {
            query(&mut self.conn, "CHECKPOINT").await?;
            query(&mut self.conn, "SELECT pg_current_wal_lsn()::text").await
        }
        .await
        {
            Ok(row) => row[0].clone(),
            Err(e) => {
                tracing::warn!(error = %crate::error_chain(&e), "cannot run a checkpoint on the primary before the standby's backup");
                return;
            }
        };
        let deadline = Instant::now() + REPLAY_WAIT;
        let sql = format!("SELECT pg_last_wal_replay_lsn() >= '{target}'::pg_lsn");
        loop {
            match query(standby, &sql).await {
                Ok(row) if row[0] == "t" => return,
                Ok(_) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(100)).await,
                Ok(_) => {
                    tracing::warn!(%target, "the standby has not replayed the primary's checkpoint in {} seconds; backing up anyway", REPLAY_WAIT.as_secs());
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %crate::error_chain(&e), "cannot read the standby's replay position");
                    return;
                }
            }
        }
    }

    /// `pg_switch_wal()` on the primary. A failure is logged and the backup goes on, as in
    /// Barman: the WAL file is then archived with the primary's next switch.
    pub async fn switch_wal(&mut self) {
        switch_wal(&mut self.conn).await;
    }

    /// Switches WAL on the primary in the background, on a session of its own, until the
    /// returned guard is dropped (see the module documentation for the schedule).
    pub fn spawn_switcher(&self) -> Switcher {
        let config = self.config.clone();
        let checkpoint_timeout = self.checkpoint_timeout;
        Switcher(tokio::spawn(async move {
            tokio::time::sleep(SWITCH_FIRST).await;
            let mut conn = match Connection::connect(&config, SessionKind::Normal).await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %crate::error_chain(&e), "cannot connect to the primary to switch WAL");
                    return;
                }
            };
            for _ in 0..SWITCH_TIMES {
                switch_wal(&mut conn).await;
                tokio::time::sleep(SWITCH_EVERY).await;
            }
            if !checkpoint_timeout.is_zero() {
                tracing::warn!(
                    "Barman attempted to switch WALs {SWITCH_TIMES} times on the primary server, but the backup has not \
                     yet completed. A checkpoint will be forced on the primary server in {} seconds to ensure the \
                     backup can complete.",
                    checkpoint_timeout.as_secs()
                );
                tokio::time::sleep(checkpoint_timeout).await;
                if let Err(e) = query(&mut conn, "CHECKPOINT").await {
                    tracing::warn!(error = %crate::error_chain(&e), "cannot run a checkpoint on the primary");
                }
                switch_wal(&mut conn).await;
            }
        }))
    }

    /// Ends the session.
    pub async fn close(self) {
        let _ = self.conn.close().await;
    }
}

/// The background WAL switching of [`Primary::spawn_switcher`]; stops when dropped.
pub struct Switcher(tokio::task::JoinHandle<()>);

impl Drop for Switcher {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn switch_wal(conn: &mut Connection) {
    match query(conn, "SELECT pg_switch_wal()::text").await {
        Ok(row) => tracing::info!(lsn = %row[0], "WAL switched on the primary"),
        Err(e) => tracing::warn!(error = %crate::error_chain(&e), "cannot switch WAL on the primary"),
    }
}

/// The first row of `sql`'s answer as text (an empty row for a command without one).
async fn query(conn: &mut Connection, sql: &str) -> Result<Vec<String>, PrimaryError> {
    let results = conn.simple_query(sql).await.map_err(PrimaryError::Connection)?;
    let Some(r) = results.into_iter().find(|r| !r.columns.is_empty()) else { return Ok(Vec::new()) };
    (0..r.columns.len())
        .map(|i| r.text(0, i).map(str::to_owned).ok_or_else(|| PrimaryError::Invalid(format!("NULL to {sql}"))))
        .collect()
}
