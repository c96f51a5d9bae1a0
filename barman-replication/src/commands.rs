//! Typed replication commands: IDENTIFY_SYSTEM, SHOW, TIMELINE_HISTORY, the slot commands,
//! and UPLOAD_MANIFEST (17+), with the syntax each server major expects (reference §2).
//!
//! Results are decoded from their text form whatever type the server declares: the timeline
//! of IDENTIFY_SYSTEM is int4 up to 15 and int8 from 16, TIMELINE_HISTORY's content is
//! bytea on 13 and text later, and in every case the bytes on the wire are the same.

use bytes::Bytes;

use crate::codec::{BackendMessage, DbError, FrontendMessage};
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

/// The largest CopyData message [`ManifestUpload`] sends: the server accepts up to 1 GB, but
/// small messages keep the copy held in the write buffer small.
pub const MANIFEST_CHUNK: usize = 64 * 1024;

/// What to do next in an UPLOAD_MANIFEST exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UploadStep {
    /// Send these messages, in order, then read the server's next message.
    Send(Vec<FrontendMessage>),
    /// Read the server's next message.
    Read,
    /// The server has the manifest and is ready for the next command (BASE_BACKUP with
    /// INCREMENTAL, on this same session).
    Done,
}

/// The server refused the upload, or broke the protocol.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UploadError {
    /// The server's ErrorResponse (a manifest of another system, version 1, a bad checksum…).
    /// It is followed by ReadyForQuery, which the caller reads before reusing the session.
    #[error("{0}")]
    Server(Box<DbError>),
    /// A message that has no place in the exchange.
    #[error("unexpected {0} in answer to UPLOAD_MANIFEST")]
    Unexpected(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum UploadPhase {
    NotStarted,
    AwaitCopyIn,
    AwaitComplete,
    AwaitReady,
    Done,
}

/// UPLOAD_MANIFEST (PostgreSQL 17+), sans I/O: the prior backup's `backup_manifest` handed to
/// the WAL sender, which keeps it for the next `BASE_BACKUP ( INCREMENTAL )` of the session
/// (reference §2.10).
///
/// `Q UPLOAD_MANIFEST` → `G` CopyInResponse → the manifest as CopyData chunks, then CopyDone →
/// `C UPLOAD_MANIFEST`, `Z`. The data waits for the CopyInResponse, as pg_basebackup's does, so
/// a server that refuses the command at once is never sent it.
#[derive(Debug)]
pub struct ManifestUpload {
    manifest: Bytes,
    phase: UploadPhase,
}

impl ManifestUpload {
    /// An upload of `manifest` (the file's bytes, unchanged).
    pub fn new(manifest: Bytes) -> ManifestUpload {
        ManifestUpload { manifest, phase: UploadPhase::NotStarted }
    }

    /// The command that starts the exchange.
    pub fn start(&mut self) -> FrontendMessage {
        self.phase = UploadPhase::AwaitCopyIn;
        FrontendMessage::Query("UPLOAD_MANIFEST".into())
    }

    /// Feeds the server's next message (ParameterStatus and notices are the connection's).
    pub fn feed(&mut self, msg: BackendMessage) -> Result<UploadStep, UploadError> {
        let step = match (self.phase, msg) {
            (UploadPhase::NotStarted | UploadPhase::Done, m) => {
                return Err(UploadError::Unexpected(format!("message '{}' outside the exchange", char::from(m.tag()))))
            }
            (_, BackendMessage::ErrorResponse(e)) => {
                self.phase = UploadPhase::Done;
                return Err(UploadError::Server(Box::new(e)));
            }
            (UploadPhase::AwaitCopyIn, BackendMessage::CopyInResponse(_)) => {
                self.phase = UploadPhase::AwaitComplete;
                let mut msgs: Vec<FrontendMessage> = (0..self.manifest.len())
                    .step_by(MANIFEST_CHUNK)
                    .map(|at| FrontendMessage::CopyData(self.manifest.slice(at..(at + MANIFEST_CHUNK).min(self.manifest.len()))))
                    .collect();
                msgs.push(FrontendMessage::CopyDone);
                UploadStep::Send(msgs)
            }
            (UploadPhase::AwaitComplete, BackendMessage::CommandComplete(tag)) if tag == "UPLOAD_MANIFEST" => {
                self.phase = UploadPhase::AwaitReady;
                UploadStep::Read
            }
            (UploadPhase::AwaitReady, BackendMessage::ReadyForQuery(_)) => {
                self.phase = UploadPhase::Done;
                UploadStep::Done
            }
            (phase, BackendMessage::CommandComplete(tag)) => {
                return Err(UploadError::Unexpected(format!("command tag {tag:?} ({phase:?})")))
            }
            (phase, m) => return Err(UploadError::Unexpected(format!("message '{}' ({phase:?})", char::from(m.tag())))),
        };
        Ok(step)
    }
}

impl Connection {
    /// UPLOAD_MANIFEST (servers 17+): hands `manifest`, a prior backup's `backup_manifest`, to
    /// this session's WAL sender for an incremental BASE_BACKUP on the same session. The
    /// server checks it at once (version 2, this system's identifier, its checksum); a refusal
    /// is returned once the server is ready again, the session still usable.
    pub async fn upload_manifest(&mut self, manifest: Bytes) -> Result<(), Error> {
        if self.server_major() < 17 {
            return Err(Error::UnsupportedByServer {
                target: self.target().clone(),
                what: "UPLOAD_MANIFEST (incremental backup)",
                needs: 17,
                server_version: self.parameter("server_version").unwrap_or("unknown").to_owned(),
            });
        }
        let mut upload = ManifestUpload::new(manifest);
        let start = upload.start();
        self.send(&start)?;
        self.flush().await?;
        loop {
            let msg = self.next_message().await?;
            match upload.feed(msg) {
                Ok(UploadStep::Send(msgs)) => {
                    // One message at a time: the write buffer never holds the whole manifest.
                    for m in &msgs {
                        self.send(m)?;
                        self.flush().await?;
                    }
                }
                Ok(UploadStep::Read) => {}
                Ok(UploadStep::Done) => return Ok(()),
                Err(UploadError::Server(db)) => {
                    // The server ignores what we still send of the copy; it ends with `Z`.
                    while !matches!(self.next_message().await?, BackendMessage::ReadyForQuery(_)) {}
                    return Err(self.server_error(*db));
                }
                Err(e @ UploadError::Unexpected(_)) => return Err(self.unexpected(&e.to_string())),
            }
        }
    }

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

    use crate::codec::{CopyFormat, ReadyStatus};

    fn copy_in() -> BackendMessage {
        BackendMessage::CopyInResponse(CopyFormat { overall: 0, columns: vec![] })
    }

    #[test]
    fn upload_manifest_sequence() {
        // Two full chunks and a partial one, then CopyDone.
        let manifest = Bytes::from(vec![b'x'; 2 * MANIFEST_CHUNK + 10]);
        let mut up = ManifestUpload::new(manifest.clone());
        assert_eq!(up.start(), FrontendMessage::Query("UPLOAD_MANIFEST".into()));
        let UploadStep::Send(msgs) = up.feed(copy_in()).unwrap() else { panic!("no data to send") };
        let sizes: Vec<usize> = msgs
            .iter()
            .map(|m| match m {
                FrontendMessage::CopyData(d) => d.len(),
                FrontendMessage::CopyDone => 0,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(sizes, vec![MANIFEST_CHUNK, MANIFEST_CHUNK, 10, 0]);
        assert_eq!(msgs.last(), Some(&FrontendMessage::CopyDone));
        let sent: Vec<u8> = msgs
            .iter()
            .flat_map(|m| match m {
                FrontendMessage::CopyData(d) => d.to_vec(),
                _ => vec![],
            })
            .collect();
        assert_eq!(sent, manifest);
        assert_eq!(up.feed(BackendMessage::CommandComplete("UPLOAD_MANIFEST".into())).unwrap(), UploadStep::Read);
        assert_eq!(up.feed(BackendMessage::ReadyForQuery(ReadyStatus::Idle)).unwrap(), UploadStep::Done);
        assert!(up.feed(BackendMessage::ReadyForQuery(ReadyStatus::Idle)).is_err(), "nothing after the end");

        // An empty manifest is just CopyDone (the server then refuses it).
        let mut empty = ManifestUpload::new(Bytes::new());
        empty.start();
        assert_eq!(empty.feed(copy_in()).unwrap(), UploadStep::Send(vec![FrontendMessage::CopyDone]));
    }

    #[test]
    fn upload_manifest_refusals() {
        // The server refuses the manifest after the copy.
        let mut up = ManifestUpload::new(Bytes::from_static(b"{}"));
        up.start();
        up.feed(copy_in()).unwrap();
        let err = up.feed(BackendMessage::ErrorResponse(DbError::new("ERROR", "XX000", "manifest system identifier differs")));
        assert!(matches!(err, Err(UploadError::Server(e)) if e.message.contains("system identifier")));

        // A server that does not know the command refuses it before any copy.
        let mut up = ManifestUpload::new(Bytes::from_static(b"{}"));
        up.start();
        assert!(matches!(up.feed(BackendMessage::ErrorResponse(DbError::new("ERROR", "42601", "syntax error"))), Err(UploadError::Server(_))));

        // What has no place in the exchange.
        for (before, bad) in [
            (0, BackendMessage::CopyOutResponse(CopyFormat { overall: 0, columns: vec![] })),
            (0, BackendMessage::CommandComplete("UPLOAD_MANIFEST".into())),
            (1, BackendMessage::CommandComplete("SELECT".into())),
            (1, copy_in()),
            (1, BackendMessage::ReadyForQuery(ReadyStatus::Idle)),
        ] {
            let mut up = ManifestUpload::new(Bytes::from_static(b"{}"));
            up.start();
            if before == 1 {
                up.feed(copy_in()).unwrap();
            }
            assert!(matches!(up.feed(bad.clone()), Err(UploadError::Unexpected(_))), "{bad:?} accepted");
        }
        let mut not_started = ManifestUpload::new(Bytes::new());
        assert!(not_started.feed(copy_in()).is_err());
    }
}
