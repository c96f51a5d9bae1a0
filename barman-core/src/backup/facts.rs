//! What a backup records about the server from a normal SQL session, and the small SQL helpers
//! it is read with, for both executors ([`super::streaming`], [`super::rsync`]).

use barman_replication::Connection;

use super::streaming::BackupError;
use crate::catalog::{BackupId, BarmanTimestamp, Tablespace};
use crate::wal::WalSegmentSize;

/// The facts recorded at the start of a backup (Barman's `BackupStrategy._pg_get_metadata`).
#[derive(Debug, Clone)]
pub(crate) struct ServerFacts {
    /// `data_directory`.
    pub pgdata: String,
    /// `config_file`.
    pub config_file: String,
    /// `hba_file`.
    pub hba_file: String,
    /// `ident_file`.
    pub ident_file: String,
    /// `server_version_num`.
    pub version: u32,
    /// `data_checksums`.
    pub data_checksums: String,
    /// `summarize_wal` (17+).
    pub summarize_wal: Option<String>,
    /// Sum of the tablespaces' sizes.
    pub cluster_size: Option<u64>,
    /// User tablespaces.
    pub tablespaces: Vec<Tablespace>,
    /// Configuration files other than `config_file` that set something.
    pub included_files: Vec<String>,
    /// `wal_segment_size`.
    pub segment_size: WalSegmentSize,
}

/// The local wall-clock time now, for the backup ID (Barman uses the host's zone).
pub(crate) fn local_now() -> Result<time::PrimitiveDateTime, BackupError> {
    let now = chrono::Local::now().naive_local();
    let s = now.format("%Y%m%dT%H%M%S").to_string();
    let id: BackupId = s.parse()?;
    id.to_datetime().ok_or_else(|| BackupError::Invalid(format!("local time {s} is not a valid backup ID")))
}

/// The first row of `sql`'s first result, every column required (not NULL).
pub(crate) async fn sql_row(conn: &mut Connection, sql: &str) -> Result<Vec<String>, BackupError> {
    let r = conn.simple_query(sql).await?;
    let r = r.into_iter().find(|r| !r.columns.is_empty()).ok_or_else(|| BackupError::Invalid(format!("no result from {sql}")))?;
    (0..r.columns.len())
        .map(|i| r.text(0, i).map(str::to_owned).ok_or_else(|| BackupError::Invalid(format!("NULL in the result of {sql}"))))
        .collect()
}

/// The first column of [`sql_row`].
pub(crate) async fn sql_one(conn: &mut Connection, sql: &str) -> Result<String, BackupError> {
    Ok(sql_row(conn, sql).await?.remove(0))
}

/// PostgreSQL's `timestamptz` text with `DateStyle = ISO`: `2026-11-25 12:36:10.949613+00`.
pub(crate) fn parse_pg_timestamp(s: &str) -> Result<BarmanTimestamp, BackupError> {
    let fixed = match s.rfind(['+', '-']) {
        Some(i) if i > 10 && s[i + 1..].len() == 2 => format!("{s}:00"),
        _ => s.to_owned(),
    };
    fixed.parse().map_err(|e| BackupError::Invalid(format!("timestamp {s:?}: {e}")))
}

/// Reads the [`ServerFacts`]; sets `DateStyle = ISO` on the session first, so that the
/// timestamps it returns afterwards (`now()`) parse with [`parse_pg_timestamp`].
pub(crate) async fn read_facts(sql: &mut Connection) -> Result<ServerFacts, BackupError> {
    sql.simple_query("SET DateStyle = ISO").await?;
    let r = sql_row(
        sql,
        "SELECT current_setting('data_directory'), current_setting('config_file'), current_setting('hba_file'), \
         current_setting('ident_file'), current_setting('server_version_num'), current_setting('data_checksums'), \
         COALESCE((SELECT sum(pg_tablespace_size(oid)) FROM pg_tablespace), 0)::bigint, \
         current_setting('wal_segment_size'), COALESCE(current_setting('summarize_wal', true), '')",
    )
    .await?;
    let version: u32 = r[4].parse().map_err(|_| BackupError::Invalid(format!("server_version_num {:?}", r[4])))?;
    let seg_bytes = crate::receive_wal::parse_server_size(&r[7])
        .ok_or_else(|| BackupError::Invalid(format!("wal_segment_size {:?}", r[7])))?;
    let segment_size = WalSegmentSize::new(seg_bytes).map_err(|e| BackupError::Invalid(e.to_string()))?;
    let ts = sql
        .simple_query("SELECT spcname, oid, pg_tablespace_location(oid) FROM pg_tablespace WHERE pg_tablespace_location(oid) <> '' ORDER BY oid")
        .await?;
    let mut tablespaces = Vec::new();
    if let Some(t) = ts.first() {
        for i in 0..t.rows.len() {
            tablespaces.push(Tablespace {
                name: t.text(i, 0).unwrap_or_default().to_owned(),
                oid: t.text(i, 1).and_then(|o| o.parse().ok()).ok_or_else(|| BackupError::Invalid("tablespace oid".into()))?,
                location: t.text(i, 2).unwrap_or_default().to_owned(),
            });
        }
    }
    let inc = sql
        .simple_query(
            "SELECT DISTINCT sourcefile FROM pg_settings WHERE sourcefile IS NOT NULL \
             AND sourcefile <> current_setting('config_file') ORDER BY 1",
        )
        .await?;
    let included_files = inc.first().map(|r| (0..r.rows.len()).filter_map(|i| r.text(i, 0).map(str::to_owned)).collect()).unwrap_or_default();
    Ok(ServerFacts {
        pgdata: r[0].clone(),
        config_file: r[1].clone(),
        hba_file: r[2].clone(),
        ident_file: r[3].clone(),
        version,
        data_checksums: r[5].clone(),
        summarize_wal: (version >= 170000 && !r[8].is_empty()).then(|| r[8].clone()),
        cluster_size: r[6].parse().ok(),
        tablespaces,
        included_files,
        segment_size,
    })
}

/// A SQL string literal (`'it''s'`), for the values barman-rs puts in queries it sends with
/// the simple-query protocol (the backup label holds the server's name).
pub(crate) fn sql_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pg_timestamps() {
        assert_eq!(parse_pg_timestamp("2026-11-25 12:36:10.949613+00").unwrap().to_string(), "2026-11-25 12:36:10.949613+00:00");
        assert_eq!(parse_pg_timestamp("2026-11-25 12:36:10+05:30").unwrap().to_string(), "2026-11-25 12:36:10+05:30");
    }

    #[test]
    fn literals() {
        assert_eq!(sql_literal("Barman backup pg 20260101T000000"), "'Barman backup pg 20260101T000000'");
        assert_eq!(sql_literal("it's"), "'it''s'");
    }
}
