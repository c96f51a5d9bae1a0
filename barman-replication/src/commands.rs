//! Typed replication commands: IDENTIFY_SYSTEM, SHOW, TIMELINE_HISTORY, and the slot
//! commands, with the syntax each server major expects (reference §2).
//!
//! Results are decoded from their text form whatever type the server declares: the timeline
//! of IDENTIFY_SYSTEM is int4 up to 15 and int8 from 16, TIMELINE_HISTORY's content is
//! bytea on 13 and text later, and in every case the bytes on the wire are the same.

use bytes::Bytes;

use crate::conn::{Connection, QueryResult};
use crate::error::Error;
use crate::lsn::{Lsn, SystemId, TimelineId};

/// The answer to IDENTIFY_SYSTEM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentifySystem {
    /// The cluster's system identifier.
    pub system_id: SystemId,
    /// The current timeline (on a standby: that of the last replayed WAL).
    pub timeline: TimelineId,
    /// The current WAL flush position.
    pub xlogpos: Lsn,
    /// The database (NULL for physical sessions).
    pub dbname: Option<String>,
}

/// A timeline history file as TIMELINE_HISTORY returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimelineHistoryFile {
    /// `%08X.history`, checked against the timeline asked for.
    pub filename: String,
    /// The file's bytes, exactly as on the server.
    pub content: Bytes,
}

/// The answer to CREATE_REPLICATION_SLOT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedSlot {
    /// The slot's name.
    pub name: String,
    /// `consistent_point` (always 0/0 for physical slots).
    pub consistent_point: Option<Lsn>,
}

/// A slot as READ_REPLICATION_SLOT (15+) or `pg_replication_slots` (13/14) shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicationSlot {
    /// `physical` or `logical`.
    pub slot_type: String,
    /// Where the slot retains WAL from, if it reserved any.
    pub restart_lsn: Option<Lsn>,
    /// The timeline of `restart_lsn` (READ_REPLICATION_SLOT only).
    pub restart_tli: Option<TimelineId>,
}

/// Checks a replication slot name as the server does: `[a-z0-9_]`, 1 to 63 bytes. Checking
/// first gives a clear message and keeps the name safe to put in a command.
pub fn validate_slot_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 63 {
        return Err(format!("replication slot name \"{name}\" must be 1 to 63 characters long"));
    }
    if !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_') {
        return Err(format!(
            "replication slot name \"{name}\" may contain only lower case letters, numbers and the underscore"
        ));
    }
    Ok(())
}

/// Quotes `s` as an SQL string literal (standard-conforming: `'` doubled, no backslash
/// escapes), for the few places where a value must go into a simple query.
pub fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

impl Connection {
    /// IDENTIFY_SYSTEM.
    pub async fn identify_system(&mut self) -> Result<IdentifySystem, Error> {
        let r = self.single_row("IDENTIFY_SYSTEM", 4).await?;
        let system_id = self.field(&r, "IDENTIFY_SYSTEM", 0)?;
        let system_id = system_id
            .parse::<u64>()
            .map_err(|_| self.invalid("IDENTIFY_SYSTEM", format!("system identifier {system_id:?}")))?;
        let timeline = self.field(&r, "IDENTIFY_SYSTEM", 1)?;
        let timeline = timeline
            .parse::<u32>()
            .map_err(|_| self.invalid("IDENTIFY_SYSTEM", format!("timeline {timeline:?}")))?;
        let xlogpos = self.field(&r, "IDENTIFY_SYSTEM", 2)?;
        let xlogpos = xlogpos.parse::<Lsn>().map_err(|e| self.invalid("IDENTIFY_SYSTEM", e.to_string()))?;
        Ok(IdentifySystem {
            system_id: SystemId(system_id),
            timeline: TimelineId(timeline),
            xlogpos,
            dbname: r.text(0, 3).map(str::to_owned),
        })
    }

    /// SHOW `name`: the setting's value as text, with units (`16MB`).
    pub async fn show(&mut self, name: &str) -> Result<String, Error> {
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.') {
            return Err(self.invalid("SHOW", format!("invalid parameter name {name:?}")));
        }
        let cmd = format!("SHOW {name}");
        let r = self.single_row(&cmd, 1).await?;
        Ok(self.field(&r, &cmd, 0)?.to_owned())
    }

    /// TIMELINE_HISTORY `tli`: the history file of a timeline after the first.
    pub async fn timeline_history(&mut self, tli: TimelineId) -> Result<TimelineHistoryFile, Error> {
        let cmd = format!("TIMELINE_HISTORY {}", tli.0);
        let r = self.single_row(&cmd, 2).await?;
        let filename = self.field(&r, &cmd, 0)?.to_owned();
        let expected = format!("{:08X}.history", tli.0);
        if filename != expected {
            return Err(self.invalid(&cmd, format!("file name {filename:?}, expected {expected:?}")));
        }
        let content = r.rows[0].values[1].clone().ok_or_else(|| self.invalid(&cmd, "NULL content".into()))?;
        Ok(TimelineHistoryFile { filename, content })
    }

    /// CREATE_REPLICATION_SLOT `name` [TEMPORARY] PHYSICAL, reserving WAL at once when asked.
    pub async fn create_physical_slot(&mut self, name: &str, temporary: bool, reserve_wal: bool) -> Result<CreatedSlot, Error> {
        validate_slot_name(name).map_err(|e| self.invalid("CREATE_REPLICATION_SLOT", e))?;
        let temp = if temporary { " TEMPORARY" } else { "" };
        let reserve = match (reserve_wal, self.server_major()) {
            (false, _) => "",
            // 13/14 know only the bare keyword; 15+ prefer the option list.
            (true, 0..=14) => " RESERVE_WAL",
            (true, _) => " (RESERVE_WAL)",
        };
        let cmd = format!("CREATE_REPLICATION_SLOT \"{name}\"{temp} PHYSICAL{reserve}");
        let r = self.single_row(&cmd, 2).await?;
        Ok(CreatedSlot {
            name: self.field(&r, &cmd, 0)?.to_owned(),
            consistent_point: r.text(0, 1).and_then(|s| s.parse().ok()),
        })
    }

    /// DROP_REPLICATION_SLOT `name` [WAIT]. Without `wait`, a slot in use fails with 55006.
    pub async fn drop_replication_slot(&mut self, name: &str, wait: bool) -> Result<(), Error> {
        validate_slot_name(name).map_err(|e| self.invalid("DROP_REPLICATION_SLOT", e))?;
        let cmd = format!("DROP_REPLICATION_SLOT \"{name}\"{}", if wait { " WAIT" } else { "" });
        self.simple_query(&cmd).await.map(drop)
    }

    /// READ_REPLICATION_SLOT `name` (servers 15+); `None` when the slot does not exist.
    /// On 13/14 use [`Connection::replication_slot_via_sql`] on a normal session instead.
    pub async fn read_replication_slot(&mut self, name: &str) -> Result<Option<ReplicationSlot>, Error> {
        if self.server_major() < 15 {
            return Err(Error::UnsupportedByServer {
                target: self.target().clone(),
                what: "READ_REPLICATION_SLOT",
                needs: 15,
                server_version: self.parameter("server_version").unwrap_or("unknown").to_owned(),
            });
        }
        validate_slot_name(name).map_err(|e| self.invalid("READ_REPLICATION_SLOT", e))?;
        let cmd = format!("READ_REPLICATION_SLOT \"{name}\"");
        let r = self.single_row(&cmd, 3).await?;
        let Some(slot_type) = r.text(0, 0) else { return Ok(None) };
        Ok(Some(ReplicationSlot {
            slot_type: slot_type.to_owned(),
            restart_lsn: self.optional(&r, &cmd, 1)?,
            restart_tli: r.text(0, 2).and_then(|t| t.parse().ok()).map(TimelineId),
        }))
    }

    /// Reads a slot from `pg_replication_slots`, on a normal (SQL) session: the way to learn
    /// a slot's position on servers 13 and 14, whose WAL senders cannot run SQL.
    pub async fn replication_slot_via_sql(&mut self, name: &str) -> Result<Option<ReplicationSlot>, Error> {
        let cmd = format!(
            "SELECT slot_type, restart_lsn FROM pg_catalog.pg_replication_slots WHERE slot_name = {}",
            quote_literal(name)
        );
        let results = self.simple_query(&cmd).await?;
        let Some(r) = results.into_iter().next() else { return Ok(None) };
        let Some(slot_type) = r.text(0, 0) else { return Ok(None) };
        Ok(Some(ReplicationSlot {
            slot_type: slot_type.to_owned(),
            restart_lsn: self.optional(&r, &cmd, 1)?,
            restart_tli: None,
        }))
    }

    /// Runs `cmd`, which must return exactly one row of at least `min_cols` columns.
    async fn single_row(&mut self, cmd: &str, min_cols: usize) -> Result<QueryResult, Error> {
        let mut results = self.simple_query(cmd).await?;
        let r = results.drain(..).find(|r| !r.columns.is_empty()).ok_or_else(|| self.invalid(cmd, "no result set".into()))?;
        if r.rows.len() != 1 {
            return Err(self.invalid(cmd, format!("{} rows, expected 1", r.rows.len())));
        }
        if r.rows[0].values.len() < min_cols {
            return Err(self.invalid(cmd, format!("{} columns, expected {min_cols}", r.rows[0].values.len())));
        }
        Ok(r)
    }

    fn field<'r>(&self, r: &'r QueryResult, cmd: &str, col: usize) -> Result<&'r str, Error> {
        r.text(0, col).ok_or_else(|| self.invalid(cmd, format!("column {} is NULL or not text", col + 1)))
    }

    fn optional(&self, r: &QueryResult, cmd: &str, col: usize) -> Result<Option<Lsn>, Error> {
        r.text(0, col).map(|s| s.parse::<Lsn>().map_err(|e| self.invalid(cmd, e.to_string()))).transpose()
    }

    fn invalid(&self, command: &str, what: String) -> Error {
        Error::InvalidResult { target: self.target().clone(), command: command.to_owned(), what }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_names() {
        assert!(validate_slot_name("barman").is_ok());
        assert!(validate_slot_name("barman_2").is_ok());
        assert!(validate_slot_name("").is_err());
        assert!(validate_slot_name("Barman").is_err());
        assert!(validate_slot_name("a\"; DROP").is_err());
        assert!(validate_slot_name(&"a".repeat(64)).is_err());
    }

    #[test]
    fn literals() {
        assert_eq!(quote_literal("it's"), "'it''s'");
    }
}
