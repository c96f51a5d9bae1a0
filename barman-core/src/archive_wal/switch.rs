//! `barman switch-wal [--force] [--archive]`: close the server's current WAL segment
//! (Barman's `PostgreSQLConnection.switch_wal`, `barman/postgres.py`) and wait until a WAL file
//! is in the archive, archiving meanwhile (Barman's `Server.wait_for_wal`, `barman/server.py`).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use barman_replication::{Connection, Error as PgError};

use crate::catalog::ServerCatalog;
use crate::diagnostics::facts::previous_segment_name;
use crate::wal::WalFileName;

use super::{archive_wal, latest_archived_segments, ArchiveError, ArchiveEvent, ArchiverSettings};

/// What a switch did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SwitchOutcome {
    /// The segment that was current was closed: its name.
    Closed(String),
    /// The current segment holds no WAL yet: nothing to switch.
    NotNeeded,
    /// The server is a standby: nothing done.
    InRecovery,
}

/// Why a switch failed.
#[derive(Debug, thiserror::Error)]
pub enum SwitchError {
    /// `CHECKPOINT` was refused (`--force` needs superuser or `pg_checkpoint`).
    #[error("Barman switch-wal --force requires superuser rights or the 'pg_checkpoint' role")]
    CheckpointPrivileges,
    /// A query failed.
    #[error(transparent)]
    Query(#[from] PgError),
    /// The server answered something unexpected.
    #[error("unexpected answer to {0}")]
    Unexpected(&'static str),
}

async fn one_value(conn: &mut Connection, sql: &'static str) -> Result<Vec<Option<String>>, SwitchError> {
    let results = conn.simple_query(sql).await?;
    let r = results.into_iter().find(|r| !r.columns.is_empty()).ok_or(SwitchError::Unexpected(sql))?;
    if r.rows.is_empty() {
        return Err(SwitchError::Unexpected(sql));
    }
    Ok((0..r.columns.len()).map(|c| r.text(0, c).map(str::to_owned)).collect())
}

/// Switches WAL on the server `conn` (a normal SQL session) is connected to, after a
/// `CHECKPOINT` when `force` (so that an idle server has WAL to switch away from).
///
/// The closed segment's name is read before the switch and compared with the name after it,
/// as Barman does; on PostgreSQL 17+, whose `pg_walfile_name` names the *next* segment on a
/// boundary, the previous name is taken then, so every major reports the same segment.
pub async fn switch_wal(conn: &mut Connection, force: bool) -> Result<SwitchOutcome, SwitchError> {
    let recovery = one_value(conn, "SELECT pg_catalog.pg_is_in_recovery()").await?;
    if recovery.first().and_then(|v| v.as_deref()) == Some("t") {
        return Ok(SwitchOutcome::InRecovery);
    }
    if force {
        tracing::info!("forcing a CHECKPOINT before pg_switch_wal()");
        match conn.simple_query("CHECKPOINT").await {
            Ok(_) => {}
            Err(PgError::Server { error, .. }) if error.code == "42501" => return Err(SwitchError::CheckpointPrivileges),
            Err(e) => return Err(e.into()),
        }
    }
    const PRE: &str = "SELECT (pg_catalog.pg_walfile_name_offset(l)).*, \
                       pg_catalog.current_setting('wal_segment_size'), \
                       pg_catalog.current_setting('server_version_num') \
                       FROM pg_catalog.pg_current_wal_insert_lsn() AS l";
    let pre = one_value(conn, PRE).await?;
    let (Some(Some(mut pre_name)), Some(Some(offset)), Some(Some(seg_size)), Some(Some(version))) =
        (pre.first().cloned(), pre.get(1).cloned(), pre.get(2).cloned(), pre.get(3).cloned())
    else {
        return Err(SwitchError::Unexpected("pg_walfile_name_offset"));
    };
    one_value(conn, "SELECT pg_catalog.pg_walfile_name(pg_catalog.pg_switch_wal())").await?;
    let post = one_value(conn, "SELECT pg_catalog.pg_walfile_name(pg_catalog.pg_current_wal_insert_lsn())").await?;
    let post_name = post.first().cloned().flatten().ok_or(SwitchError::Unexpected("pg_walfile_name"))?;
    if pre_name >= post_name {
        return Ok(SwitchOutcome::NotNeeded);
    }
    let version: u32 = version.parse().map_err(|_| SwitchError::Unexpected("server_version_num"))?;
    // `wal_segment_size` shows as e.g. `16MB` (a number of bytes on some builds).
    let seg_bytes = crate::receive_wal::parse_server_size(&seg_size).ok_or(SwitchError::Unexpected("wal_segment_size"))?;
    if version >= 170_000 && offset == "0" {
        pre_name = previous_segment_name(&pre_name, seg_bytes).ok_or(SwitchError::Unexpected("pg_walfile_name"))?;
    }
    Ok(SwitchOutcome::Closed(pre_name))
}

/// What [`wait_for_wal`] waits for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WaitTarget {
    /// This file in the archive.
    File(WalFileName),
    /// Any file archived after the call, on any timeline (the switch was not needed).
    AnyNew,
}

/// Runs the archiver (not verbose, as Barman's `wait_for_wal`) every 100 ms until `target` is
/// in the archive or `timeout` (`None`: forever) passes. Returns whether it arrived.
///
/// Another archiver holding the lock is not an error — it may be the one archiving the file;
/// `on_busy` is told once, where Barman prints its "already running" line on every try.
pub fn wait_for_wal(
    catalog: &ServerCatalog,
    settings: &ArchiverSettings,
    target: &WaitTarget,
    timeout: Option<Duration>,
    on_event: &mut dyn FnMut(&ArchiveEvent),
    on_busy: &mut dyn FnMut(&ArchiveError),
) -> Result<bool, ArchiveError> {
    let quiet = ArchiverSettings { verbose: false, ..settings.clone() };
    let initial: BTreeMap<String, String> = match target {
        WaitTarget::AnyNew => latest_archived_segments(catalog)?,
        WaitTarget::File(_) => BTreeMap::new(),
    };
    let deadline = timeout.map(|t| Instant::now() + t);
    let mut told = false;
    loop {
        match archive_wal(catalog, &quiet, on_event) {
            Ok(_) => {}
            Err(e @ ArchiveError::AlreadyRunning { .. }) => {
                if !told {
                    on_busy(&e);
                    told = true;
                }
            }
            Err(e) => return Err(e),
        }
        let arrived = match target {
            WaitTarget::File(name) => crate::storage::fs::exists(&catalog.wal_path(name))?,
            WaitTarget::AnyNew => latest_archived_segments(catalog)? != initial,
        };
        if arrived {
            return Ok(true);
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Ok(false);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
