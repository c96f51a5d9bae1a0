//! `barman replication-status`: the streaming clients of a server, from
//! `pg_stat_replication` joined with `pg_replication_slots` (Barman's
//! `PostgreSQLConnection.get_replication_stats`).

use super::facts::{connect_sql, EnvLookup};

/// Which clients to list (`--target`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplicationTarget {
    /// Every client.
    All,
    /// Standbys (clients that replay WAL).
    HotStandby,
    /// WAL streamers such as `receive-wal` (no replay position).
    WalStreamer,
}

impl ReplicationTarget {
    /// Barman's heading word for the clients.
    pub fn title(self) -> &'static str {
        match self {
            ReplicationTarget::All => "streaming clients",
            ReplicationTarget::HotStandby => "hot standby servers",
            ReplicationTarget::WalStreamer => "WAL streamers",
        }
    }
}

/// One row of `pg_stat_replication` (text values, `None` for NULL).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[allow(missing_docs)] // the columns of pg_stat_replication, same names
pub struct ReplicationClient {
    pub pid: Option<String>,
    pub usename: Option<String>,
    pub application_name: Option<String>,
    pub client_addr: Option<String>,
    pub client_hostname: Option<String>,
    pub client_port: Option<String>,
    pub backend_start: Option<String>,
    pub backend_xmin: Option<String>,
    pub state: Option<String>,
    pub sent_lsn: Option<String>,
    pub write_lsn: Option<String>,
    pub flush_lsn: Option<String>,
    pub replay_lsn: Option<String>,
    pub sync_priority: i64,
    pub sync_state: Option<String>,
    /// The physical slot the sender uses.
    pub slot_name: Option<String>,
    /// The server's position when the row was read.
    pub current_lsn: Option<String>,
}

/// What `replication-status` shows for one server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicationStatus {
    /// The server's current LSN (`None` on a standby without receive position).
    pub server_lsn: Option<String>,
    /// The clients, synchronous first.
    pub clients: Vec<ReplicationClient>,
}

/// Why replication-status could not be shown.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplicationStatusError {
    /// The SQL session failed (Barman: `Unable to connect to server <name>`).
    #[error("{0}")]
    Connect(String),
    /// The role may not read other sessions' replication state.
    #[error("Postgres user '{user}' is missing required privileges (see \"Preliminary steps\" in the Barman manual)")]
    Privileges {
        /// The role.
        user: String,
    },
}

/// Reads the replication clients of the server at `conninfo`.
pub async fn replication_status(
    conninfo: &str,
    env: EnvLookup<'_>,
    target: ReplicationTarget,
) -> Result<ReplicationStatus, ReplicationStatusError> {
    let mut conn = connect_sql(conninfo, env).await.map_err(ReplicationStatusError::Connect)?;
    let q = |e: barman_replication::Error| ReplicationStatusError::Connect(crate::error_chain(&e));
    let user = conn.target().user.clone();
    let privileged = conn
        .simple_query(
            "SELECT usesuper OR pg_has_role(CURRENT_USER, 'pg_monitor', 'USAGE') OR \
             (pg_has_role(CURRENT_USER, 'pg_read_all_settings', 'USAGE') AND pg_has_role(CURRENT_USER, 'pg_read_all_stats', 'USAGE')) \
             FROM pg_user WHERE usename = CURRENT_USER",
        )
        .await
        .map_err(q)?;
    if privileged.first().and_then(|r| r.text(0, 0)) != Some("t") {
        return Err(ReplicationStatusError::Privileges { user });
    }
    let filter = match target {
        ReplicationTarget::All => "",
        ReplicationTarget::HotStandby => " AND replay_lsn IS NOT NULL",
        ReplicationTarget::WalStreamer => " AND replay_lsn IS NULL",
    };
    let sql = format!(
        "SELECT r.pid, r.usename, r.application_name, r.client_addr, r.client_hostname, r.client_port, \
         r.backend_start, r.backend_xmin, r.state, r.sent_lsn, r.write_lsn, r.flush_lsn, r.replay_lsn, \
         r.sync_priority, r.sync_state, rs.slot_name, \
         CASE WHEN pg_is_in_recovery() THEN pg_last_wal_receive_lsn() ELSE pg_current_wal_lsn() END AS current_lsn \
         FROM pg_stat_replication r LEFT JOIN pg_replication_slots rs ON (r.pid = rs.active_pid) \
         WHERE (rs.slot_type IS NULL OR rs.slot_type = 'physical'){filter} ORDER BY sync_state DESC, sync_priority"
    );
    let results = conn.simple_query(&sql).await.map_err(q)?;
    let r = results.into_iter().find(|r| !r.columns.is_empty()).unwrap_or_default();
    let clients = (0..r.rows.len())
        .map(|i| {
            let t = |c: usize| r.text(i, c).map(str::to_owned);
            ReplicationClient {
                pid: t(0),
                usename: t(1),
                application_name: t(2),
                client_addr: t(3),
                client_hostname: t(4),
                client_port: t(5),
                backend_start: t(6).map(|s| crate::output::python_timestamp(&s)),
                backend_xmin: t(7),
                state: t(8),
                sent_lsn: t(9),
                write_lsn: t(10),
                flush_lsn: t(11),
                replay_lsn: t(12),
                sync_priority: t(13).and_then(|s| s.parse().ok()).unwrap_or(0),
                sync_state: t(14),
                slot_name: t(15),
                current_lsn: t(16),
            }
        })
        .collect();
    let lsn = conn
        .simple_query("SELECT CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END")
        .await
        .map_err(q)?;
    let server_lsn = lsn.first().and_then(|r| r.text(0, 0)).map(str::to_owned);
    let _ = conn.close().await;
    Ok(ReplicationStatus { server_lsn, clients })
}

/// `a - b` in bytes for two LSNs in text form (Barman's `diff_lsn`).
pub fn diff_lsn(a: Option<&str>, b: Option<&str>) -> Option<i64> {
    let parse = |s: &str| s.parse::<barman_replication::Lsn>().ok().map(|l| l.0 as i128);
    let d = parse(a?)? - parse(b?)?;
    i64::try_from(d).ok()
}
