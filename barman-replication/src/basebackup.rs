//! BASE_BACKUP: the command for each server major, and the decoding of its answer into one
//! event stream whatever the wire format (reference §3).
//!
//! * Servers 13/14 answer with result sets and one COPY OUT per tablespace holding a raw tar
//!   stream without its end-of-archive blocks, then a COPY OUT with the manifest.
//! * Servers 15+ answer with a single COPY OUT whose CopyData payloads are typed: `n` new
//!   archive, `d` data, `p` progress, `m` manifest follows.
//!
//! [`BaseBackupDecoder`] turns either into the same [`BaseBackupEvent`]s, and normalises the
//! archives: every archive it emits is a complete tar stream (on 13/14 the decoder appends
//! the two 512-byte zero blocks the server leaves out). It is sans-I/O: feed it each backend
//! message, take the events out. [`BaseBackupReader`] drives it on a [`Connection`].

use std::collections::VecDeque;

use bytes::{Buf, Bytes};

use crate::codec::{BackendMessage, DataRow, DbError};
use crate::commands::quote_literal;
use crate::conn::Connection;
use crate::error::Error;
use crate::lsn::{Lsn, TimelineId};

/// What to ask of BASE_BACKUP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseBackupOptions {
    /// LABEL, written into backup_label (Barman uses `barman_<backup id>`).
    pub label: String,
    /// PROGRESS: the server estimates tablespace sizes first.
    pub progress: bool,
    /// An immediate checkpoint (`FAST` / `CHECKPOINT 'fast'`) rather than a spread one.
    pub fast_checkpoint: bool,
    /// Include the WAL needed for consistency in the base archive (`-X fetch`).
    pub wal: bool,
    /// Wait for the last WAL segment to be archived before returning.
    pub wait: bool,
    /// MAX_RATE in kB/s (32 … 1 048 576).
    pub max_rate: Option<u32>,
    /// Send a tablespace_map file instead of pg_tblspc symlinks.
    pub tablespace_map: bool,
    /// Ask for a backup_manifest.
    pub manifest: bool,
    /// Manifest file checksum algorithm (`crc32c`, `sha256`, …); `None` = server default.
    pub manifest_checksums: Option<String>,
    /// Verify data checksums while reading pages (server default: yes).
    pub verify_checksums: bool,
    /// Server-side compression (15+): method (`gzip`, `lz4`, `zstd`) and optional detail
    /// (`level=3,workers=2`).
    pub compression: Option<(String, Option<String>)>,
    /// INCREMENTAL (17+): only what changed since the backup whose manifest this session
    /// uploaded first ([`Connection::upload_manifest`]).
    pub incremental: bool,
}

impl Default for BaseBackupOptions {
    fn default() -> Self {
        BaseBackupOptions {
            label: "barman-rs base backup".into(),
            progress: false,
            fast_checkpoint: false,
            wal: false,
            wait: true,
            max_rate: None,
            tablespace_map: false,
            manifest: true,
            manifest_checksums: None,
            verify_checksums: true,
            compression: None,
            incremental: false,
        }
    }
}

impl BaseBackupOptions {
    /// The command text for a server of `major`: the legacy keyword syntax for 13/14, the
    /// parenthesised option list for 15+ (where the legacy form no longer parses).
    pub fn command(&self, major: u32) -> Result<String, String> {
        let label = quote_literal(&self.label);
        if let Some(rate) = self.max_rate {
            if !(32..=1_048_576).contains(&rate) {
                return Err(format!("MAX_RATE {rate} kB/s is outside 32 … 1048576"));
            }
        }
        let checksums = match &self.manifest_checksums {
            Some(alg) if !alg.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') => {
                return Err(format!("invalid manifest checksum algorithm {alg:?}"))
            }
            Some(_) if !self.manifest => return Err("manifest checksums need a manifest".into()),
            other => other.clone(),
        };
        if self.incremental && major < 17 {
            return Err(format!("incremental backups need PostgreSQL 17 or later (server is {major})"));
        }
        if major < 15 {
            if self.compression.is_some() {
                return Err(format!("server-side compression needs PostgreSQL 15 or later (server is {major})"));
            }
            let mut cmd = format!("BASE_BACKUP LABEL {label}");
            for (on, word) in [
                (self.progress, " PROGRESS"),
                (self.fast_checkpoint, " FAST"),
                (self.wal, " WAL"),
                (!self.wait, " NOWAIT"),
                (self.tablespace_map, " TABLESPACE_MAP"),
                (!self.verify_checksums, " NOVERIFY_CHECKSUMS"),
            ] {
                if on {
                    cmd.push_str(word);
                }
            }
            if let Some(rate) = self.max_rate {
                cmd.push_str(&format!(" MAX_RATE {rate}"));
            }
            if self.manifest {
                cmd.push_str(" MANIFEST 'yes'");
                if let Some(alg) = checksums {
                    cmd.push_str(&format!(" MANIFEST_CHECKSUMS {}", quote_literal(&alg)));
                }
            }
            return Ok(cmd);
        }
        let mut opts = Vec::new();
        // First, as pg_basebackup puts it.
        if self.incremental {
            opts.push("INCREMENTAL".to_owned());
        }
        opts.push(format!("LABEL {label}"));
        if self.progress {
            opts.push("PROGRESS".into());
        }
        opts.push(format!("CHECKPOINT '{}'", if self.fast_checkpoint { "fast" } else { "spread" }));
        if self.wal {
            opts.push("WAL".into());
        }
        opts.push(format!("WAIT {}", u8::from(self.wait)));
        if let Some(rate) = self.max_rate {
            opts.push(format!("MAX_RATE {rate}"));
        }
        if self.tablespace_map {
            opts.push("TABLESPACE_MAP".into());
        }
        if !self.verify_checksums {
            opts.push("VERIFY_CHECKSUMS 0".into());
        }
        if self.manifest {
            opts.push("MANIFEST 'yes'".into());
            if let Some(alg) = checksums {
                opts.push(format!("MANIFEST_CHECKSUMS {}", quote_literal(&alg)));
            }
        }
        opts.push("TARGET 'client'".into());
        if let Some((method, detail)) = &self.compression {
            opts.push(format!("COMPRESSION {}", quote_literal(method)));
            if let Some(d) = detail {
                opts.push(format!("COMPRESSION_DETAIL {}", quote_literal(d)));
            }
        }
        Ok(format!("BASE_BACKUP ( {} )", opts.join(", ")))
    }
}

/// A row of the tablespace list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TablespaceEntry {
    /// The tablespace OID; `None` for the main data directory (always the last row).
    pub oid: Option<u32>,
    /// Its location as the server sees it; `None` for the main data directory.
    pub location: Option<String>,
    /// Estimated size in kB (with PROGRESS only).
    pub size_kb: Option<u64>,
}

/// What a BASE_BACKUP produces, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BaseBackupEvent {
    /// The start checkpoint is done: the backup starts at `lsn` on `timeline`.
    Started {
        /// The backup start LSN (REDO of the start checkpoint).
        lsn: Lsn,
        /// Its timeline.
        timeline: TimelineId,
    },
    /// The tablespaces, user tablespaces first, the data directory last.
    Tablespaces(Vec<TablespaceEntry>),
    /// A new archive begins. `name` is `base.tar` or `<oid>.tar` (plus `.gz`/`.lz4`/`.zst`
    /// with server compression), checked to be a plain file name.
    ArchiveStart {
        /// The archive's file name.
        name: String,
        /// The tablespace location, `""` for the data directory.
        tablespace_path: String,
    },
    /// Bytes of the current archive.
    ArchiveData(Bytes),
    /// The current archive is complete.
    ArchiveEnd,
    /// Archive bytes produced so far (15+ only, uncompressed).
    Progress(u64),
    /// The backup_manifest follows.
    ManifestStart,
    /// Bytes of the manifest.
    ManifestData(Bytes),
    /// The manifest is complete.
    ManifestEnd,
    /// The backup ended at `lsn` on `timeline`.
    Finished {
        /// The backup end LSN.
        lsn: Lsn,
        /// Its timeline.
        timeline: TimelineId,
    },
}

/// The BASE_BACKUP answer broke the protocol, or the server reported an error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BaseBackupError {
    /// A message arrived where it has no place.
    #[error("unexpected {what} in the BASE_BACKUP stream")]
    Unexpected {
        /// What arrived, and where.
        what: String,
    },
    /// A field had a value the protocol does not allow.
    #[error("invalid BASE_BACKUP stream: {0}")]
    Invalid(String),
    /// The server reported an error (XX001: data checksum failures, after the full stream).
    #[error("{0}")]
    Server(Box<DbError>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    StartPosition,
    Tablespaces,
    /// Between COPYs (13/14) or before the single COPY (15+).
    BeforeCopy,
    /// 13/14: inside the COPY of archive `n` of the tablespace list.
    LegacyArchive(usize),
    LegacyManifest,
    /// 15+: inside the single COPY.
    Copy { archive_open: bool, manifest: bool },
    EndPosition,
    Done,
}

/// The sans-I/O decoder of one BASE_BACKUP answer.
#[derive(Debug)]
pub struct BaseBackupDecoder {
    legacy: bool,
    phase: Phase,
    tablespaces: Vec<TablespaceEntry>,
    copies_seen: usize,
    row: Option<DataRow>,
    events: VecDeque<BaseBackupEvent>,
    finished: bool,
}

/// The two 512-byte zero blocks that end a tar archive.
static TAR_TRAILER: [u8; 1024] = [0; 1024];

impl BaseBackupDecoder {
    /// A decoder for a server of `major`.
    pub fn new(major: u32) -> BaseBackupDecoder {
        BaseBackupDecoder {
            legacy: major < 15,
            phase: Phase::StartPosition,
            tablespaces: Vec::new(),
            copies_seen: 0,
            row: None,
            events: VecDeque::new(),
            finished: false,
        }
    }

    /// The next decoded event.
    pub fn next_event(&mut self) -> Option<BaseBackupEvent> {
        self.events.pop_front()
    }

    /// Whether the server has confirmed the whole backup (`C BASE_BACKUP` then `Z`).
    pub fn is_done(&self) -> bool {
        self.phase == Phase::Done
    }

    /// Feeds one backend message (ParameterStatus and notices are the connection's business).
    pub fn feed(&mut self, msg: BackendMessage) -> Result<(), BaseBackupError> {
        let unexpected = |phase: Phase, m: &BackendMessage| BaseBackupError::Unexpected {
            what: format!("message '{}' in phase {phase:?}", char::from(m.tag())),
        };
        match (self.phase, msg) {
            (_, BackendMessage::ErrorResponse(e)) => {
                self.phase = Phase::Done;
                return Err(BaseBackupError::Server(Box::new(e)));
            }
            (Phase::StartPosition | Phase::EndPosition | Phase::Tablespaces, BackendMessage::RowDescription(_)) => {}
            (Phase::StartPosition | Phase::EndPosition, BackendMessage::DataRow(row)) => self.row = Some(row),
            (Phase::StartPosition, BackendMessage::CommandComplete(_)) => {
                let (lsn, timeline) = self.position()?;
                self.events.push_back(BaseBackupEvent::Started { lsn, timeline });
                self.phase = Phase::Tablespaces;
            }
            (Phase::Tablespaces, BackendMessage::DataRow(row)) => {
                let entry = TablespaceEntry {
                    oid: text(&row, 0).map(|s| s.parse().map_err(|_| invalid(format!("tablespace oid {s:?}")))).transpose()?,
                    location: text(&row, 1).map(str::to_owned),
                    size_kb: text(&row, 2).map(|s| s.parse().map_err(|_| invalid(format!("tablespace size {s:?}")))).transpose()?,
                };
                self.tablespaces.push(entry);
            }
            (Phase::Tablespaces, BackendMessage::CommandComplete(_)) => {
                if self.tablespaces.last().is_none_or(|t| t.oid.is_some()) {
                    return Err(invalid("the tablespace list does not end with the data directory".into()));
                }
                self.events.push_back(BaseBackupEvent::Tablespaces(self.tablespaces.clone()));
                self.phase = Phase::BeforeCopy;
            }
            (Phase::BeforeCopy, BackendMessage::CopyOutResponse(_)) if self.legacy => {
                let n = self.copies_seen;
                self.copies_seen += 1;
                if let Some(ts) = self.tablespaces.get(n) {
                    let name = match ts.oid {
                        Some(oid) => format!("{oid}.tar"),
                        None => "base.tar".to_owned(),
                    };
                    let tablespace_path = ts.location.clone().unwrap_or_default();
                    self.events.push_back(BaseBackupEvent::ArchiveStart { name, tablespace_path });
                    self.phase = Phase::LegacyArchive(n);
                } else if n == self.tablespaces.len() {
                    self.events.push_back(BaseBackupEvent::ManifestStart);
                    self.phase = Phase::LegacyManifest;
                } else {
                    return Err(invalid("more COPY streams than tablespaces plus a manifest".into()));
                }
            }
            (Phase::LegacyArchive(_), BackendMessage::CopyData(d)) => self.events.push_back(BaseBackupEvent::ArchiveData(d)),
            (Phase::LegacyArchive(_), BackendMessage::CopyDone) => {
                // 13/14 leave the end-of-archive blocks to the client.
                self.events.push_back(BaseBackupEvent::ArchiveData(Bytes::from_static(&TAR_TRAILER)));
                self.events.push_back(BaseBackupEvent::ArchiveEnd);
                self.phase = Phase::BeforeCopy;
            }
            (Phase::LegacyManifest, BackendMessage::CopyData(d)) => self.events.push_back(BaseBackupEvent::ManifestData(d)),
            (Phase::LegacyManifest, BackendMessage::CopyDone) => {
                self.events.push_back(BaseBackupEvent::ManifestEnd);
                self.phase = Phase::EndPosition;
            }
            (Phase::BeforeCopy, BackendMessage::RowDescription(_)) if self.legacy => {
                if self.copies_seen < self.tablespaces.len() {
                    return Err(invalid(format!("{} archives for {} tablespaces", self.copies_seen, self.tablespaces.len())));
                }
                self.phase = Phase::EndPosition;
            }
            (Phase::BeforeCopy, BackendMessage::CopyOutResponse(_)) => {
                self.phase = Phase::Copy { archive_open: false, manifest: false };
            }
            (Phase::Copy { archive_open, manifest }, BackendMessage::CopyData(payload)) => {
                self.feed_typed(archive_open, manifest, payload)?;
            }
            (Phase::Copy { archive_open, manifest }, BackendMessage::CopyDone) => {
                if archive_open {
                    self.events.push_back(BaseBackupEvent::ArchiveEnd);
                }
                if manifest {
                    self.events.push_back(BaseBackupEvent::ManifestEnd);
                }
                self.phase = Phase::EndPosition;
            }
            (Phase::EndPosition, BackendMessage::CommandComplete(tag)) => {
                if self.row.is_some() && !self.finished {
                    let (lsn, timeline) = self.position()?;
                    self.events.push_back(BaseBackupEvent::Finished { lsn, timeline });
                    self.finished = true;
                } else if tag != "BASE_BACKUP" || !self.finished {
                    return Err(invalid(format!("command tag {tag:?} before the end position")));
                }
            }
            (Phase::EndPosition, BackendMessage::ReadyForQuery(_)) if self.finished => self.phase = Phase::Done,
            (phase, m) => return Err(unexpected(phase, &m)),
        }
        Ok(())
    }

    /// 15+: one typed CopyData payload.
    fn feed_typed(&mut self, archive_open: bool, manifest: bool, mut payload: Bytes) -> Result<(), BaseBackupError> {
        if payload.is_empty() {
            return Err(invalid("empty CopyData".into()));
        }
        let kind = payload.get_u8();
        match kind {
            b'n' => {
                if manifest {
                    return Err(invalid("a new archive after the manifest".into()));
                }
                let name = cstr(&mut payload, "archive name")?;
                let tablespace_path = cstr(&mut payload, "tablespace path")?;
                if !payload.is_empty() {
                    return Err(invalid("trailing bytes after a new-archive message".into()));
                }
                if name.is_empty() || name.starts_with('.') || name.contains(['/', '\\']) {
                    return Err(invalid(format!("archive name {name:?} is not a plain file name")));
                }
                if archive_open {
                    self.events.push_back(BaseBackupEvent::ArchiveEnd);
                }
                self.events.push_back(BaseBackupEvent::ArchiveStart { name, tablespace_path });
                self.phase = Phase::Copy { archive_open: true, manifest: false };
            }
            b'd' if manifest => self.events.push_back(BaseBackupEvent::ManifestData(payload)),
            b'd' if archive_open => self.events.push_back(BaseBackupEvent::ArchiveData(payload)),
            b'd' => return Err(invalid("archive data before any archive started".into())),
            b'p' => {
                if payload.len() != 8 {
                    return Err(invalid(format!("progress message of {} bytes", payload.len() + 1)));
                }
                self.events.push_back(BaseBackupEvent::Progress(payload.get_u64()));
            }
            b'm' => {
                if !payload.is_empty() || manifest {
                    return Err(invalid("malformed or repeated manifest marker".into()));
                }
                if archive_open {
                    self.events.push_back(BaseBackupEvent::ArchiveEnd);
                }
                self.events.push_back(BaseBackupEvent::ManifestStart);
                self.phase = Phase::Copy { archive_open: false, manifest: true };
            }
            other => return Err(invalid(format!("unknown BASE_BACKUP message type 0x{other:02x}"))),
        }
        Ok(())
    }

    /// Decodes the `(recptr, tli)` row of a start or end position.
    fn position(&mut self) -> Result<(Lsn, TimelineId), BaseBackupError> {
        let row = self.row.take().ok_or_else(|| invalid("a position result without a row".into()))?;
        let lsn = text(&row, 0)
            .ok_or_else(|| invalid("NULL backup position".into()))?
            .parse::<Lsn>()
            .map_err(|e| invalid(e.to_string()))?;
        let tli = text(&row, 1)
            .ok_or_else(|| invalid("NULL backup timeline".into()))?
            .parse::<u32>()
            .map_err(|e| invalid(format!("timeline: {e}")))?;
        Ok((lsn, TimelineId(tli)))
    }
}

fn invalid(what: String) -> BaseBackupError {
    BaseBackupError::Invalid(what)
}

fn text(row: &DataRow, i: usize) -> Option<&str> {
    row.values.get(i)?.as_ref().and_then(|v| std::str::from_utf8(v).ok())
}

fn cstr(b: &mut Bytes, what: &str) -> Result<String, BaseBackupError> {
    let nul = b.iter().position(|&c| c == 0).ok_or_else(|| invalid(format!("{what} has no terminator")))?;
    let s = std::str::from_utf8(&b[..nul]).map_err(|_| invalid(format!("{what} is not UTF-8")))?.to_owned();
    b.advance(nul + 1);
    Ok(s)
}

/// A BASE_BACKUP in progress on a connection.
#[derive(Debug)]
pub struct BaseBackupReader<'c> {
    conn: &'c mut Connection,
    decoder: BaseBackupDecoder,
    /// The server's error, held while the rest of its answer is read up to ReadyForQuery.
    draining: Option<DbError>,
}

impl Connection {
    /// Sends BASE_BACKUP with `opts` in the syntax of this server's major.
    pub async fn base_backup(&mut self, opts: &BaseBackupOptions) -> Result<BaseBackupReader<'_>, Error> {
        let major = self.server_major();
        let cmd = opts.command(major).map_err(|what| Error::InvalidResult {
            target: self.target().clone(),
            command: "BASE_BACKUP".into(),
            what,
        })?;
        self.send_query(&cmd).await?;
        Ok(BaseBackupReader { conn: self, decoder: BaseBackupDecoder::new(major), draining: None })
    }
}

impl BaseBackupReader<'_> {
    /// The next event, or `None` once the server has confirmed the backup. A server error
    /// (e.g. XX001 checksum failures, reported after the complete stream) is returned after
    /// the server is ready again.
    ///
    /// Cancel-safe, as [`Connection::next_message`]: a caller may race it against a timer and
    /// call it again later without losing an event.
    pub async fn next_event(&mut self) -> Result<Option<BaseBackupEvent>, Error> {
        loop {
            if self.draining.is_some() {
                // Drain to ReadyForQuery so the connection can be reused.
                if matches!(self.conn.next_message().await?, BackendMessage::ReadyForQuery(_)) {
                    let db = self.draining.take().expect("checked above");
                    return Err(self.conn.server_error(db));
                }
                continue;
            }
            if let Some(e) = self.decoder.next_event() {
                return Ok(Some(e));
            }
            if self.decoder.is_done() {
                return Ok(None);
            }
            let msg = self.conn.next_message().await?;
            match self.decoder.feed(msg) {
                Ok(()) => {}
                Err(BaseBackupError::Server(db)) => self.draining = Some(*db),
                Err(other) => return Err(Error::Unexpected { target: self.conn.target().clone(), what: other.to_string() }),
            }
        }
    }

    /// Bytes read from the server so far on this connection ([`Connection::bytes_received`]):
    /// while [`next_event`](Self::next_event) waits, whether anything at all is arriving.
    pub fn bytes_received(&self) -> u64 {
        self.conn.bytes_received()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{ColumnDescription, CopyFormat, ReadyStatus};
    use bytes::{BufMut, BytesMut};

    #[test]
    fn commands_per_major() {
        let opts = BaseBackupOptions {
            label: "barman_20261125T120000".into(),
            fast_checkpoint: true,
            max_rate: Some(1024),
            manifest_checksums: Some("SHA256".into()),
            ..Default::default()
        };
        assert_eq!(
            opts.command(14).unwrap(),
            "BASE_BACKUP LABEL 'barman_20261125T120000' FAST MAX_RATE 1024 MANIFEST 'yes' MANIFEST_CHECKSUMS 'SHA256'"
        );
        assert_eq!(
            opts.command(15).unwrap(),
            "BASE_BACKUP ( LABEL 'barman_20261125T120000', CHECKPOINT 'fast', WAIT 1, MAX_RATE 1024, MANIFEST 'yes', MANIFEST_CHECKSUMS 'SHA256', TARGET 'client' )"
        );
        let compressed = BaseBackupOptions { compression: Some(("zstd".into(), Some("level=3".into()))), ..Default::default() };
        assert!(compressed.command(14).is_err());
        assert!(compressed.command(16).unwrap().ends_with("COMPRESSION 'zstd', COMPRESSION_DETAIL 'level=3' )"));
        assert!(BaseBackupOptions { max_rate: Some(1), ..Default::default() }.command(16).is_err());
        assert!(BaseBackupOptions { label: "it's".into(), ..Default::default() }.command(13).unwrap().contains("LABEL 'it''s'"));
    }

    #[test]
    fn incremental_command() {
        let opts = BaseBackupOptions {
            label: "barman_20261130T153000".into(),
            progress: true,
            fast_checkpoint: true,
            manifest_checksums: Some("SHA256".into()),
            incremental: true,
            ..Default::default()
        };
        let want = "BASE_BACKUP ( INCREMENTAL, LABEL 'barman_20261130T153000', PROGRESS, CHECKPOINT 'fast', WAIT 1, \
                    MANIFEST 'yes', MANIFEST_CHECKSUMS 'SHA256', TARGET 'client' )";
        assert_eq!(opts.command(17).unwrap(), want);
        assert_eq!(opts.command(18).unwrap(), want);
        for major in 13..=16 {
            assert!(opts.command(major).unwrap_err().contains("PostgreSQL 17"), "{major}");
        }
        let zstd = BaseBackupOptions { compression: Some(("zstd".into(), None)), ..opts };
        assert!(zstd.command(17).unwrap().starts_with("BASE_BACKUP ( INCREMENTAL, LABEL"));
    }

    fn rows(values: &[&[Option<&str>]]) -> Vec<BackendMessage> {
        let mut out = vec![BackendMessage::RowDescription(vec![ColumnDescription {
            name: "x".into(),
            table_oid: 0,
            attnum: 0,
            type_oid: 25,
            typlen: -1,
            typmod: -1,
            format: 0,
        }])];
        for r in values {
            out.push(BackendMessage::DataRow(DataRow {
                values: r.iter().map(|v| v.map(|s| Bytes::copy_from_slice(s.as_bytes()))).collect(),
            }));
        }
        out.push(BackendMessage::CommandComplete("SELECT".into()));
        out
    }

    fn typed(kind: u8, body: &[u8]) -> BackendMessage {
        let mut b = BytesMut::new();
        b.put_u8(kind);
        b.put_slice(body);
        BackendMessage::CopyData(b.freeze())
    }

    fn decode(major: u32, msgs: Vec<BackendMessage>) -> Result<Vec<BaseBackupEvent>, BaseBackupError> {
        let mut d = BaseBackupDecoder::new(major);
        let mut events = Vec::new();
        for m in msgs {
            d.feed(m)?;
            while let Some(e) = d.next_event() {
                events.push(e);
            }
        }
        assert!(d.is_done());
        Ok(events)
    }

    fn expected(tar: &[u8], trailer: bool) -> Vec<BaseBackupEvent> {
        let mut v = vec![
            BaseBackupEvent::Started { lsn: Lsn(0x2000028), timeline: TimelineId(1) },
            BaseBackupEvent::Tablespaces(vec![
                TablespaceEntry { oid: Some(16385), location: Some("/ts".into()), size_kb: None },
                TablespaceEntry { oid: None, location: None, size_kb: None },
            ]),
            BaseBackupEvent::ArchiveStart { name: "16385.tar".into(), tablespace_path: "/ts".into() },
            BaseBackupEvent::ArchiveData(Bytes::copy_from_slice(tar)),
        ];
        if trailer {
            v.push(BaseBackupEvent::ArchiveData(Bytes::from_static(&TAR_TRAILER)));
        }
        v.push(BaseBackupEvent::ArchiveEnd);
        v.push(BaseBackupEvent::ArchiveStart { name: "base.tar".into(), tablespace_path: "".into() });
        v.push(BaseBackupEvent::ArchiveData(Bytes::copy_from_slice(tar)));
        if trailer {
            v.push(BaseBackupEvent::ArchiveData(Bytes::from_static(&TAR_TRAILER)));
        }
        v.push(BaseBackupEvent::ArchiveEnd);
        v
    }

    fn preamble() -> Vec<BackendMessage> {
        let mut m = rows(&[&[Some("0/2000028"), Some("1")]]);
        m.extend(rows(&[&[Some("16385"), Some("/ts"), None], &[None, None, None]]));
        m
    }

    fn epilogue() -> Vec<BackendMessage> {
        let mut m = rows(&[&[Some("0/2000100"), Some("1")]]);
        m.push(BackendMessage::CommandComplete("BASE_BACKUP".into()));
        m.push(BackendMessage::ReadyForQuery(ReadyStatus::Idle));
        m
    }

    #[test]
    fn legacy_stream() {
        let h = || BackendMessage::CopyOutResponse(CopyFormat { overall: 0, columns: vec![] });
        let mut msgs = preamble();
        for _ in 0..2 {
            msgs.extend([h(), BackendMessage::CopyData(Bytes::from_static(b"TAR")), BackendMessage::CopyDone]);
        }
        msgs.extend([h(), BackendMessage::CopyData(Bytes::from_static(b"{}")), BackendMessage::CopyDone]);
        msgs.extend(epilogue());
        let mut want = expected(b"TAR", true);
        want.extend([
            BaseBackupEvent::ManifestStart,
            BaseBackupEvent::ManifestData(Bytes::from_static(b"{}")),
            BaseBackupEvent::ManifestEnd,
            BaseBackupEvent::Finished { lsn: Lsn(0x2000100), timeline: TimelineId(1) },
        ]);
        assert_eq!(decode(14, msgs).unwrap(), want);
    }

    #[test]
    fn typed_stream() {
        let mut msgs = preamble();
        msgs.push(BackendMessage::CopyOutResponse(CopyFormat { overall: 0, columns: vec![] }));
        msgs.extend([
            typed(b'n', b"16385.tar\0/ts\0"),
            typed(b'd', b"TAR"),
            typed(b'p', &3u64.to_be_bytes()),
            typed(b'n', b"base.tar\0\0"),
            typed(b'd', b"TAR"),
            typed(b'm', b""),
            typed(b'd', b"{}"),
            BackendMessage::CopyDone,
        ]);
        msgs.extend(epilogue());
        let mut want = expected(b"TAR", false);
        want.insert(4, BaseBackupEvent::Progress(3));
        want.extend([
            BaseBackupEvent::ManifestStart,
            BaseBackupEvent::ManifestData(Bytes::from_static(b"{}")),
            BaseBackupEvent::ManifestEnd,
            BaseBackupEvent::Finished { lsn: Lsn(0x2000100), timeline: TimelineId(1) },
        ]);
        assert_eq!(decode(16, msgs).unwrap(), want);
    }

    #[test]
    fn hostile_streams_are_refused() {
        for bad in [&b"n../x\0\0"[..], b"n.hidden\0\0", b"na/b\0\0", b"n\0\0", b"dDATA", b"p\0\0", b"z", b"m!"] {
            let mut msgs = preamble();
            msgs.push(BackendMessage::CopyOutResponse(CopyFormat { overall: 0, columns: vec![] }));
            msgs.push(typed(bad[0], &bad[1..]));
            let mut d = BaseBackupDecoder::new(16);
            let r: Result<(), _> = msgs.into_iter().try_for_each(|m| d.feed(m));
            assert!(r.is_err(), "{:?} accepted", String::from_utf8_lossy(bad));
        }
        // An error mid-stream surfaces as the server's error.
        let mut d = BaseBackupDecoder::new(16);
        let e = d.feed(BackendMessage::ErrorResponse(DbError::new("ERROR", "XX001", "checksum verification failure during base backup")));
        assert!(matches!(e, Err(BaseBackupError::Server(_))));
    }
}
