//! Live facts about a PostgreSQL server, read the way Barman's `fetch_remote_status` reads
//! them (`barman/postgres.py`, `barman/wal_archiver.py`): one normal SQL session on
//! `conninfo` and one physical replication session on `streaming_conninfo`.
//!
//! Nothing here fails: a fact that cannot be read is `None` and the reason of a failed
//! connection is kept in `connection_error`, because `status`, `check` and `show-servers`
//! must still report everything else (Barman does the same).
//!
//! Both sessions use barman-rs' own client (`barman-replication`); there is no libpq or
//! pg_basebackup involved.

use std::collections::BTreeMap;
use std::time::Duration;

use barman_replication::{ConnConfig, Connection, SessionKind};

use crate::config::{BackupMethod, ServerConfig};

/// The oldest PostgreSQL Barman 3 talks to (`PostgreSQL.MINIMAL_VERSION`).
pub const MINIMAL_VERSION: u32 = 90600;

/// A physical replication slot as `pg_replication_slots` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotState {
    /// Its name.
    pub slot_name: String,
    /// Whether a WAL receiver is attached.
    pub active: bool,
    /// Where it retains WAL from (`None` until first used).
    pub restart_lsn: Option<String>,
}

/// `pg_stat_archiver`, plus Barman's two computed columns.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ArchiverStats {
    /// Every column of the view as text (`None` for NULL), by name.
    pub columns: BTreeMap<String, Option<String>>,
    /// Barman's `is_archiving`: archive_mode on and no failure since the last success.
    pub is_archiving: Option<bool>,
    /// `archived_count / seconds since stats_reset`, as PostgreSQL's numeric text.
    pub current_archived_wals_per_second: Option<String>,
    /// `last_archived_time` as a Unix time.
    pub last_archived_epoch: Option<f64>,
    /// `last_failed_time` as a Unix time.
    pub last_failed_epoch: Option<f64>,
}

impl ArchiverStats {
    /// One column's text.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.columns.get(name).and_then(|v| v.as_deref())
    }
}

/// What the normal SQL session learned (Barman's `PostgreSQLConnection.fetch_remote_status`
/// merged with `FileWalArchiver.fetch_remote_status`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PostgresFacts {
    /// Why the session could not be opened, if it could not.
    pub connection_error: Option<String>,
    /// `server_version_num` reported at start-up (e.g. 150018).
    pub server_version: Option<u32>,
    /// The second word of `version()` (e.g. `15.18`).
    pub server_txt_version: Option<String>,
    /// `usesuper` of the current user.
    pub is_superuser: Option<bool>,
    /// Superuser, or the roles and function grants a backup needs.
    pub has_backup_privileges: Option<bool>,
    /// Superuser, `pg_monitor`, or `pg_read_all_settings` + `pg_read_all_stats`.
    pub has_monitoring_privileges: Option<bool>,
    /// `pg_is_in_recovery()`.
    pub is_in_recovery: Option<bool>,
    /// Settings as `SHOW` prints them: data_directory (privileged), wal_level, hot_standby,
    /// max_wal_senders, data_checksums, max_replication_slots, wal_compression,
    /// wal_keep_size, archive_mode, archive_command, synchronous_standby_names.
    pub settings: BTreeMap<&'static str, Option<String>>,
    /// `pg_current_wal_lsn()` (or the last replayed LSN on a standby).
    pub current_lsn: Option<String>,
    /// The WAL file of `current_lsn` (`None` on a standby).
    pub current_xlog: Option<String>,
    /// Sum of the tablespace sizes, in bytes (needs backup privileges).
    pub current_size: Option<u64>,
    /// `archive_timeout` in seconds.
    pub archive_timeout: Option<i64>,
    /// `checkpoint_timeout` in seconds.
    pub checkpoint_timeout: Option<i64>,
    /// `wal_segment_size` in bytes.
    pub xlog_segment_size: Option<u64>,
    /// `config_file`, `hba_file`, `ident_file`.
    pub config_files: BTreeMap<String, String>,
    /// Other files settings come from (`included_files`), when any.
    pub included_files: Vec<String>,
    /// The configured `slot_name`, if set and present on the server.
    pub replication_slot: Option<SlotState>,
    /// The names in `synchronous_standby_names`, as Barman normalises them.
    pub synchronous_standby_names: Option<Vec<String>>,
    /// `pg_control_system().system_identifier`.
    pub postgres_systemid: Option<String>,
    /// `pg_stat_archiver` (only when `archiver = on`).
    pub archiver: Option<ArchiverStats>,
}

impl PostgresFacts {
    /// One setting's text.
    pub fn setting(&self, name: &str) -> Option<&str> {
        self.settings.get(name).and_then(|v| v.as_deref())
    }

    /// Barman's `version_supported`.
    pub fn version_supported(&self) -> Option<bool> {
        self.server_version.map(|v| v >= MINIMAL_VERSION)
    }
}

/// What the replication session learned (`StreamingConnection.fetch_remote_status`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamingFacts {
    /// Why the session could not be opened, if it could not.
    pub connection_error: Option<String>,
    /// `true` once the server answered (every supported version streams).
    pub streaming_supported: Option<bool>,
    /// `true` when IDENTIFY_SYSTEM answered.
    pub streaming: Option<bool>,
    /// IDENTIFY_SYSTEM's system identifier.
    pub streaming_systemid: Option<String>,
    /// IDENTIFY_SYSTEM's timeline.
    pub timeline: Option<u32>,
    /// IDENTIFY_SYSTEM's flush position.
    pub xlogpos: Option<String>,
    /// `server_version_num` of the replication session.
    pub server_version: Option<u32>,
    /// `server_version` text of the replication session (e.g. `15.18`).
    pub server_txt_version: Option<String>,
}

impl StreamingFacts {
    /// Barman's `version_supported` for the streaming connection.
    pub fn version_supported(&self) -> Option<bool> {
        self.server_version.map(|v| v >= MINIMAL_VERSION)
    }
}

/// What a session on `primary_conninfo` learned (Barman's `StandbyPostgreSQLConnection.primary`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PrimaryFacts {
    /// Why the session could not be opened, if it could not.
    pub connection_error: Option<String>,
    /// `pg_is_in_recovery()` on the primary.
    pub is_in_recovery: Option<bool>,
    /// `pg_control_system().system_identifier` of the primary.
    pub systemid: Option<String>,
}

/// Everything known live about one server.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LiveFacts {
    /// The SQL session's facts (`None` on a passive node, which has no PostgreSQL).
    pub postgres: Option<PostgresFacts>,
    /// The replication session's facts (only for `backup_method = postgres` or
    /// `streaming_archiver = on`, as in Barman).
    pub streaming: Option<StreamingFacts>,
    /// The primary's facts (only with `primary_conninfo`).
    pub primary: Option<PrimaryFacts>,
}

/// How to read a conninfo: the environment lookup for `PG*` variables.
pub type EnvLookup<'a> = &'a (dyn Fn(&str) -> Option<String> + Sync);

/// Reads every live fact of `cfg`'s server, giving up on a session after `timeout`.
pub async fn gather(cfg: &ServerConfig, env: EnvLookup<'_>, timeout: Duration) -> LiveFacts {
    if cfg.is_passive() {
        return LiveFacts::default();
    }
    let postgres = match &cfg.conninfo {
        Some(conninfo) => Some(bounded(timeout, postgres_facts(cfg, conninfo, env)).await.unwrap_or_else(|| {
            PostgresFacts { connection_error: Some(timed_out(timeout)), ..Default::default() }
        })),
        None => None,
    };
    let wants_streaming = cfg.backup_method == BackupMethod::Postgres || cfg.streaming_archiver;
    let streaming = match (&cfg.streaming_conninfo, wants_streaming) {
        (Some(conninfo), true) => Some(bounded(timeout, streaming_facts(conninfo, env)).await.unwrap_or_else(|| {
            StreamingFacts { connection_error: Some(timed_out(timeout)), ..Default::default() }
        })),
        _ => None,
    };
    let primary = match &cfg.primary_conninfo {
        Some(conninfo) => Some(bounded(timeout, primary_facts(conninfo, env)).await.unwrap_or_else(|| {
            PrimaryFacts { connection_error: Some(timed_out(timeout)), ..Default::default() }
        })),
        None => None,
    };
    LiveFacts { postgres, streaming, primary }
}

async fn primary_facts(conninfo: &str, env: EnvLookup<'_>) -> PrimaryFacts {
    let mut conn = match connect_sql(conninfo, env).await {
        Ok(c) => c,
        Err(e) => return PrimaryFacts { connection_error: Some(e), ..Default::default() },
    };
    let row = row(&mut conn, "SELECT pg_is_in_recovery(), system_identifier::text FROM pg_control_system()").await;
    let _ = conn.close().await;
    match row {
        Some(mut r) => PrimaryFacts { connection_error: None, systemid: r.pop().flatten(), is_in_recovery: pg_bool(r.pop().flatten()) },
        None => PrimaryFacts { connection_error: Some("cannot read pg_is_in_recovery() and the system identifier".into()), ..Default::default() },
    }
}

fn timed_out(timeout: Duration) -> String {
    format!("no answer within {} seconds", timeout.as_secs())
}

async fn bounded<T>(timeout: Duration, f: impl std::future::Future<Output = T>) -> Option<T> {
    if timeout.is_zero() {
        return Some(f.await);
    }
    tokio::time::timeout(timeout, f).await.ok()
}

/// Parses a conninfo; the error names the problem but never the password.
pub fn conn_config(conninfo: &str, env: EnvLookup<'_>) -> Result<ConnConfig, String> {
    let mut c = ConnConfig::parse_with_env(conninfo, env).map_err(|e| e.to_string())?;
    if c.application_name.is_none() {
        // Barman runs `SET application_name TO barman` on its SQL sessions.
        c.application_name = Some("barman".to_owned());
    }
    Ok(c)
}


/// Opens a normal SQL session on `conninfo`.
pub async fn connect_sql(conninfo: &str, env: EnvLookup<'_>) -> Result<Connection, String> {
    let cfg = conn_config(conninfo, env)?;
    Connection::connect(&cfg, SessionKind::Normal).await.map_err(|e| crate::error_chain(&e))
}

/// Runs a query and returns the first row's columns as text (`None` on any error, as
/// Barman's properties return `None`).
async fn row(conn: &mut Connection, sql: &str) -> Option<Vec<Option<String>>> {
    let results = conn.simple_query(sql).await.ok()?;
    let r = results.into_iter().find(|r| !r.columns.is_empty())?;
    if r.rows.is_empty() {
        return None;
    }
    Some((0..r.columns.len()).map(|c| r.text(0, c).map(str::to_owned)).collect())
}

async fn rows(conn: &mut Connection, sql: &str) -> Option<Vec<Vec<Option<String>>>> {
    let results = conn.simple_query(sql).await.ok()?;
    let r = results.into_iter().find(|r| !r.columns.is_empty())?;
    Some((0..r.rows.len()).map(|i| (0..r.columns.len()).map(|c| r.text(i, c).map(str::to_owned)).collect()).collect())
}

async fn value(conn: &mut Connection, sql: &str) -> Option<String> {
    row(conn, sql).await?.into_iter().next().flatten()
}

fn pg_bool(v: Option<String>) -> Option<bool> {
    match v.as_deref() {
        Some("t") => Some(true),
        Some("f") => Some(false),
        _ => None,
    }
}

/// The settings `show-servers` lists, in Barman's order.
const SETTINGS: [&str; 10] = [
    "wal_level",
    "hot_standby",
    "max_wal_senders",
    "data_checksums",
    "max_replication_slots",
    "wal_compression",
    "wal_keep_size",
    "archive_mode",
    "archive_command",
    "synchronous_standby_names",
];

async fn postgres_facts(cfg: &ServerConfig, conninfo: &str, env: EnvLookup<'_>) -> PostgresFacts {
    let mut f = PostgresFacts::default();
    let mut conn = match connect_sql(conninfo, env).await {
        Ok(c) => c,
        Err(e) => {
            f.connection_error = Some(e);
            return f;
        }
    };
    let version = conn.server_version_num();
    f.server_version = Some(version);
    f.server_txt_version = value(&mut conn, "SELECT version()")
        .await
        .and_then(|v| v.split_whitespace().nth(1).map(str::to_owned));
    f.is_superuser = pg_bool(value(&mut conn, "SELECT usesuper FROM pg_user WHERE usename = CURRENT_USER").await);
    f.has_backup_privileges = pg_bool(value(&mut conn, &backup_privileges_query(version)).await);
    f.has_monitoring_privileges = if f.is_superuser == Some(true) {
        Some(true)
    } else {
        pg_bool(value(&mut conn, MONITORING_QUERY).await)
    };
    if f.has_backup_privileges == Some(true) {
        f.settings.insert("data_directory", value(&mut conn, "SHOW data_directory").await);
    } else {
        f.settings.insert("data_directory", None);
    }
    for name in SETTINGS {
        f.settings.insert(name, value(&mut conn, &format!("SHOW \"{name}\"")).await);
    }
    f.is_in_recovery = pg_bool(value(&mut conn, "SELECT pg_is_in_recovery()").await);

    let numbers = rows(
        &mut conn,
        "SELECT name, setting FROM pg_settings WHERE name IN ('archive_timeout', 'checkpoint_timeout', 'wal_segment_size')",
    )
    .await
    .unwrap_or_default();
    let number = |n: &str| {
        numbers.iter().find(|r| r[0].as_deref() == Some(n)).and_then(|r| r[1].as_deref()).and_then(|v| v.parse::<i64>().ok())
    };
    f.archive_timeout = number("archive_timeout");
    f.checkpoint_timeout = number("checkpoint_timeout");
    f.xlog_segment_size = number("wal_segment_size").and_then(|n| u64::try_from(n).ok());

    if f.is_in_recovery == Some(false) {
        if let Some(r) = row(
            &mut conn,
            "SELECT location, (pg_walfile_name_offset(location)).* FROM pg_current_wal_lsn() AS location",
        )
        .await
        {
            f.current_lsn = r[0].clone();
            f.current_xlog = r[1].clone();
            // PostgreSQL 17 names the new segment at a boundary; Barman keeps the old rule
            // (the boundary belongs to the previous segment) on every version.
            if version >= 170000 && r[2].as_deref() == Some("0") {
                if let (Some(name), Some(size)) = (&f.current_xlog, f.xlog_segment_size) {
                    f.current_xlog = previous_segment_name(name, size);
                }
            }
        }
    } else if f.is_in_recovery == Some(true) {
        f.current_lsn = value(&mut conn, "SELECT pg_last_wal_replay_lsn()").await;
    }
    if f.has_backup_privileges == Some(true) {
        f.current_size = value(&mut conn, "SELECT sum(pg_tablespace_size(oid)) FROM pg_tablespace")
            .await
            .and_then(|v| v.parse().ok());
    }
    for r in rows(&mut conn, "SELECT name, setting FROM pg_settings WHERE name IN ('config_file', 'hba_file', 'ident_file')")
        .await
        .unwrap_or_default()
    {
        if let (Some(k), Some(v)) = (&r[0], &r[1]) {
            f.config_files.insert(k.clone(), v.clone());
        }
    }
    f.included_files = rows(
        &mut conn,
        "SELECT DISTINCT sourcefile FROM pg_settings WHERE sourcefile IS NOT NULL \
         AND sourcefile NOT IN (SELECT setting FROM pg_settings WHERE name = 'config_file') ORDER BY 1",
    )
    .await
    .unwrap_or_default()
    .into_iter()
    .filter_map(|r| r.into_iter().next().flatten())
    .collect();
    if let Some(slot) = &cfg.slot_name {
        let sql = format!(
            "SELECT slot_name, active, restart_lsn FROM pg_replication_slots WHERE slot_type = 'physical' AND slot_name = {}",
            barman_replication::commands::quote_literal(slot)
        );
        f.replication_slot = row(&mut conn, &sql).await.map(|r| SlotState {
            slot_name: r[0].clone().unwrap_or_default(),
            active: r[1].as_deref() == Some("t"),
            restart_lsn: r[2].clone(),
        });
    }
    f.synchronous_standby_names = f.setting("synchronous_standby_names").map(parse_sync_names);
    f.postgres_systemid = value(&mut conn, "SELECT system_identifier::text FROM pg_control_system()").await;
    if cfg.archiver {
        f.archiver = archiver_stats(&mut conn).await;
    }
    let _ = conn.close().await;
    f
}

/// Barman's normalisation of `synchronous_standby_names`: the names between the first `(`
/// and the last `)` (or the whole value), split on commas, blanks and `"` stripped.
pub fn parse_sync_names(value: &str) -> Vec<String> {
    let start = value.find('(').map_or(0, |i| i + 1);
    let end = value.rfind(')').unwrap_or(value.len()).max(start);
    value[start..end].split(',').map(|x| x.trim().trim_matches('"').to_owned()).collect()
}

/// The WAL file name before `name` for segments of `segment_size` bytes.
pub fn previous_segment_name(name: &str, segment_size: u64) -> Option<String> {
    if name.len() != 24 || segment_size == 0 {
        return None;
    }
    let tli = u32::from_str_radix(&name[0..8], 16).ok()?;
    let log = u32::from_str_radix(&name[8..16], 16).ok()?;
    let seg = u32::from_str_radix(&name[16..24], 16).ok()?;
    let per_log = u32::try_from(0x1_0000_0000_u64 / segment_size).ok()?;
    let (log, seg) = if seg > 0 { (log, seg - 1) } else { (log.checked_sub(1)?, per_log - 1) };
    Some(format!("{tli:08X}{log:08X}{seg:08X}"))
}

fn backup_privileges_query(version: u32) -> String {
    let (start, stop) = if version >= 150000 {
        (
            "has_function_privilege(CURRENT_USER, 'pg_backup_start(text,bool)', 'EXECUTE')",
            "has_function_privilege(CURRENT_USER, 'pg_backup_stop(bool)', 'EXECUTE')".to_owned(),
        )
    } else {
        (
            "has_function_privilege(CURRENT_USER, 'pg_start_backup(text,bool,bool)', 'EXECUTE')",
            "has_function_privilege(CURRENT_USER, 'pg_stop_backup()', 'EXECUTE') OR \
             has_function_privilege(CURRENT_USER, 'pg_stop_backup(bool,bool)', 'EXECUTE')"
                .to_owned(),
        )
    };
    format!(
        "SELECT usesuper OR ((pg_has_role(CURRENT_USER, 'pg_monitor', 'USAGE') OR \
         (pg_has_role(CURRENT_USER, 'pg_read_all_settings', 'USAGE') AND pg_has_role(CURRENT_USER, 'pg_read_all_stats', 'USAGE'))) \
         AND ({start}) AND ({stop}) \
         AND has_function_privilege(CURRENT_USER, 'pg_switch_wal()', 'EXECUTE') \
         AND has_function_privilege(CURRENT_USER, 'pg_create_restore_point(text)', 'EXECUTE')) \
         FROM pg_user WHERE usename = CURRENT_USER"
    )
}

const MONITORING_QUERY: &str = "SELECT pg_has_role(CURRENT_USER, 'pg_monitor', 'USAGE') OR \
     (pg_has_role(CURRENT_USER, 'pg_read_all_settings', 'USAGE') AND pg_has_role(CURRENT_USER, 'pg_read_all_stats', 'USAGE'))";

async fn archiver_stats(conn: &mut Connection) -> Option<ArchiverStats> {
    let sql = "SELECT *, current_setting('archive_mode') IN ('on', 'always') \
         AND (last_failed_wal IS NULL OR last_failed_wal LIKE '%.history' \
         AND substring(last_failed_wal from 1 for 8) <= substring(last_archived_wal from 1 for 8) \
         OR last_failed_time <= last_archived_time) AS is_archiving, \
         CAST (archived_count AS NUMERIC) / EXTRACT (EPOCH FROM age(now(), stats_reset)) AS current_archived_wals_per_second, \
         EXTRACT (EPOCH FROM last_archived_time) AS barman_rs_last_archived_epoch, \
         EXTRACT (EPOCH FROM last_failed_time) AS barman_rs_last_failed_epoch \
         FROM pg_stat_archiver";
    let results = conn.simple_query(sql).await.ok()?;
    let r = results.into_iter().find(|r| !r.columns.is_empty())?;
    if r.rows.is_empty() {
        return None;
    }
    let mut stats = ArchiverStats::default();
    for (i, col) in r.columns.iter().enumerate() {
        let v = r.text(0, i).map(str::to_owned);
        match col.name.as_str() {
            "is_archiving" => stats.is_archiving = pg_bool(v),
            "current_archived_wals_per_second" => stats.current_archived_wals_per_second = v,
            "barman_rs_last_archived_epoch" => stats.last_archived_epoch = v.and_then(|t| t.parse().ok()),
            "barman_rs_last_failed_epoch" => stats.last_failed_epoch = v.and_then(|t| t.parse().ok()),
            name => {
                stats.columns.insert(name.to_owned(), v);
            }
        }
    }
    Some(stats)
}

async fn streaming_facts(conninfo: &str, env: EnvLookup<'_>) -> StreamingFacts {
    let mut f = StreamingFacts::default();
    let cfg = match ConnConfig::parse_with_env(conninfo, env) {
        Ok(c) => c,
        Err(e) => {
            f.connection_error = Some(e.to_string());
            return f;
        }
    };
    let mut conn = match Connection::connect(&cfg, SessionKind::Physical).await {
        Ok(c) => c,
        Err(e) => {
            f.connection_error = Some(crate::error_chain(&e));
            return f;
        }
    };
    let version = conn.server_version_num();
    f.server_version = Some(version);
    f.server_txt_version = conn.parameter("server_version").map(|v| v.split_whitespace().next().unwrap_or(v).to_owned());
    if version < MINIMAL_VERSION {
        return f;
    }
    f.streaming_supported = Some(true);
    match conn.identify_system().await {
        Ok(sys) => {
            f.streaming = Some(true);
            f.streaming_systemid = Some(sys.system_id.0.to_string());
            f.timeline = Some(sys.timeline.0);
            f.xlogpos = Some(sys.xlogpos.to_string());
        }
        Err(e) => {
            f.streaming = Some(false);
            f.connection_error = Some(crate::error_chain(&e));
        }
    }
    let _ = conn.close().await;
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sync_names_as_barman_normalises_them() {
        assert_eq!(parse_sync_names(""), vec![String::new()]);
        assert_eq!(parse_sync_names("2 (a, \"b\")"), vec!["a".to_owned(), "b".to_owned()]);
        assert_eq!(parse_sync_names("ANY 1 (barman_receive_wal)"), vec!["barman_receive_wal".to_owned()]);
        assert_eq!(parse_sync_names("*"), vec!["*".to_owned()]);
    }

    #[test]
    fn previous_segments() {
        let mb16 = 16 << 20;
        assert_eq!(previous_segment_name("00000001000000000000000B", mb16).as_deref(), Some("00000001000000000000000A"));
        assert_eq!(previous_segment_name("000000010000000100000000", mb16).as_deref(), Some("0000000100000000000000FF"));
        assert_eq!(previous_segment_name("000000010000000000000000", mb16), None);
    }
}
