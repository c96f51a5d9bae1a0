//! `meta/<ID>-backup.info`: everything Barman knows about one backup, in the exact format
//! of Barman 3.x's `FieldListFile` (`barman/infofile.py`), so that a file written by either
//! tool reads back identically in the other.
//!
//! The format, as Barman writes it (`FieldListFile.save`):
//!
//! * one `key=value\n` line per field, **keys sorted** (Python `sorted()` of the field names),
//!   UTF-8, no spaces around `=`;
//! * every known field is written even when unset, as the literal `None` — except
//!   `backup_name` and `snapshots_info`, which are omitted when unset (`_hide_if_null`);
//! * value formats per field: plain text, decimal ints, `str(datetime)`
//!   ([`BarmanTimestamp`]), LSNs as `X/X`, comma-joined backup IDs
//!   (`children_backup_ids`), and Python `repr()` literals for `backup_label`,
//!   `copy_stats`, `included_files`, `tablespaces` and `snapshots_info` ([`PyValue`]). A
//!   falsy `repr` value (empty list, dict or string) is written as `None` (`null_repr`), so
//!   barman-rs reads those back as unset too.
//!
//! Reading (`FieldListFile.load`): lines are split on `\n`; blank lines and lines starting
//! with `#` are skipped; a line splits on its first `=`, both sides stripped of whitespace;
//! the literal `None` means unset. Deliberate difference: Barman aborts on an unknown key
//! (`Unsupported field … found in backup metadata`); barman-rs keeps unknown keys with their
//! raw values and writes them back in sorted position, so a file from a newer Barman survives
//! a round trip. Values that do not fit their field are errors with the line number.
//!
//! Location: `meta/<ID>-backup.info` since Barman 3.13.2; older catalogs have
//! `base/<ID>/backup.info`. [`BackupInfo::read`] tries both (meta first); writes always go
//! to `meta/`, atomically.

use std::collections::BTreeMap;
use std::path::Path;

use barman_replication::{Lsn, SystemId, TimelineId};

use super::backup_id::{BackupId, BackupStatus, BackupSummary};
use super::layout::ServerCatalog;
use super::pyliteral::PyValue;
use super::timestamp::BarmanTimestamp;
use super::{CatalogError, ParseError, ParseProblem};
use crate::storage::{self, atomic_write, create_dir_all_durable, DIR_MODE, FILE_MODE};
use crate::wal::{WalSegmentName, WalSegmentSize};

/// A user tablespace at backup time: `(name, oid, location)` in `tablespaces=`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Tablespace {
    /// `spcname`.
    pub name: String,
    /// The tablespace OID, also the name of its directory in the backup.
    pub oid: u32,
    /// Its location on the PostgreSQL host.
    pub location: String,
}

impl Tablespace {
    /// The Python value Barman stores: a list of `(name, oid, location)` tuples.
    pub fn py_list(tablespaces: &[Tablespace]) -> PyValue {
        PyValue::List(
            tablespaces
                .iter()
                .map(|ts| {
                    PyValue::Tuple(vec![
                        PyValue::Str(ts.name.clone()),
                        PyValue::Int(ts.oid.into()),
                        PyValue::Str(ts.location.clone()),
                    ])
                })
                .collect(),
        )
    }
}

/// The contents of one backup.info file. Field names are Barman's keys.
///
/// `backup_id` is not in the file: it comes from the file name (`<ID>-backup.info`) or, for
/// the legacy location, the directory name.
#[derive(Debug, Clone, PartialEq)]
pub struct BackupInfo {
    /// The backup this describes.
    pub backup_id: BackupId,
    /// Content of the backup's `backup_label`.
    pub backup_label: Option<String>,
    /// `backup --name`; omitted from the file when unset.
    pub backup_name: Option<String>,
    /// Offset of `begin_xlog` in its segment.
    pub begin_offset: Option<u64>,
    /// When the backup started (`CURRENT_TIMESTAMP` before the copy).
    pub begin_time: Option<BarmanTimestamp>,
    /// The segment holding `begin_xlog`.
    pub begin_wal: Option<WalSegmentName>,
    /// The backup's start LSN.
    pub begin_xlog: Option<Lsn>,
    /// PostgreSQL 17 incremental backups that have this one as parent.
    pub children_backup_ids: Option<Vec<BackupId>>,
    /// Size of the cluster at start (sum of tablespace sizes).
    pub cluster_size: Option<u64>,
    /// `gzip`, `lz4`, `zstd`, `none` for tar backups; unset for plain ones.
    pub compression: Option<String>,
    /// `SHOW config_file`.
    pub config_file: Option<String>,
    /// Timings, a Python dict (`{'copy_time': 2.2, 'total_time': 2.2}` for postgres backups).
    pub copy_stats: Option<Vec<(PyValue, PyValue)>>,
    /// `on` / `off`.
    pub data_checksums: Option<String>,
    /// Bytes not shared with other backups through hard links.
    pub deduplicated_size: Option<u64>,
    /// `gpg` when encrypted.
    pub encryption: Option<String>,
    /// Offset of `end_xlog` in its segment.
    pub end_offset: Option<u64>,
    /// When the copy ended.
    pub end_time: Option<BarmanTimestamp>,
    /// The segment holding `end_xlog` (the previous one when on a boundary).
    pub end_wal: Option<WalSegmentName>,
    /// The backup's end LSN as Barman records it.
    pub end_xlog: Option<Lsn>,
    /// Why the backup failed (one line).
    pub error: Option<String>,
    /// `SHOW hba_file`.
    pub hba_file: Option<String>,
    /// `SHOW ident_file`.
    pub ident_file: Option<String>,
    /// Configuration files included besides `config_file`.
    pub included_files: Option<Vec<String>>,
    /// `postgres`, `rsync-concurrent`, `snapshot-concurrent`, …
    pub mode: Option<String>,
    /// The parent of an incremental backup.
    pub parent_backup_id: Option<BackupId>,
    /// `SHOW data_directory`.
    pub pgdata: Option<String>,
    /// The configuration section name.
    pub server_name: Option<String>,
    /// Bytes of the backup on disk.
    pub size: Option<u64>,
    /// Snapshot backups' metadata (a Python dict); omitted from the file when unset.
    pub snapshots_info: Option<PyValue>,
    /// Where the backup is in its life.
    pub status: BackupStatus,
    /// `on` / `off` (PostgreSQL 17+).
    pub summarize_wal: Option<String>,
    /// The cluster's system identifier.
    pub systemid: Option<SystemId>,
    /// User tablespaces.
    pub tablespaces: Option<Vec<Tablespace>>,
    /// Timeline of `begin_wal`.
    pub timeline: Option<TimelineId>,
    /// `server_version_num`, e.g. 150018.
    pub version: Option<u32>,
    /// `wal_segment_size` (Barman's default when the line is absent: 16 MiB).
    pub xlog_segment_size: Option<WalSegmentSize>,
    /// Keys this version does not know, with their raw values, kept for the round trip.
    pub extra: BTreeMap<String, String>,
}

/// The keys barman-rs knows, in the sorted order they are written.
const KNOWN_KEYS: [&str; 35] = [
    "backup_label",
    "backup_name",
    "begin_offset",
    "begin_time",
    "begin_wal",
    "begin_xlog",
    "children_backup_ids",
    "cluster_size",
    "compression",
    "config_file",
    "copy_stats",
    "data_checksums",
    "deduplicated_size",
    "encryption",
    "end_offset",
    "end_time",
    "end_wal",
    "end_xlog",
    "error",
    "hba_file",
    "ident_file",
    "included_files",
    "mode",
    "parent_backup_id",
    "pgdata",
    "server_name",
    "size",
    "snapshots_info",
    "status",
    "summarize_wal",
    "systemid",
    "tablespaces",
    "timeline",
    "version",
    "xlog_segment_size",
];

/// Python's `str.isspace` for one character (Rust's `is_whitespace` plus `\x1c`–`\x1f`).
pub(crate) fn py_is_space(c: char) -> bool {
    c.is_whitespace() || ('\x1c'..='\x1f').contains(&c)
}

/// Python's `str.strip()`.
pub(crate) fn py_strip(s: &str) -> &str {
    s.trim_matches(py_is_space)
}

impl BackupInfo {
    /// A fresh info for `backup_id` with Barman's defaults: status `EMPTY`, 16 MiB segments,
    /// everything else unset.
    pub fn new(backup_id: BackupId) -> Self {
        BackupInfo {
            backup_id,
            backup_label: None,
            backup_name: None,
            begin_offset: None,
            begin_time: None,
            begin_wal: None,
            begin_xlog: None,
            children_backup_ids: None,
            cluster_size: None,
            compression: None,
            config_file: None,
            copy_stats: None,
            data_checksums: None,
            deduplicated_size: None,
            encryption: None,
            end_offset: None,
            end_time: None,
            end_wal: None,
            end_xlog: None,
            error: None,
            hba_file: None,
            ident_file: None,
            included_files: None,
            mode: None,
            parent_backup_id: None,
            pgdata: None,
            server_name: None,
            size: None,
            snapshots_info: None,
            status: BackupStatus::Empty,
            summarize_wal: None,
            systemid: None,
            tablespaces: None,
            timeline: None,
            version: None,
            xlog_segment_size: Some(WalSegmentSize::DEFAULT),
            extra: BTreeMap::new(),
        }
    }

    /// A number from `copy_stats` (`copy_time`, `total_time`, …), in seconds.
    pub fn copy_stat(&self, key: &str) -> Option<f64> {
        self.copy_stats
            .as_ref()?
            .iter()
            .find(|(k, _)| k.as_str() == Some(key))
            .and_then(|(_, v)| v.as_f64())
    }

    /// Parses the text of a backup.info file describing `backup_id`.
    pub fn parse(backup_id: BackupId, bytes: &[u8]) -> Result<Self, ParseError> {
        let mut info = BackupInfo::new(backup_id);
        let mut pieces = bytes.split(|&b| b == b'\n').peekable();
        let mut line_no = 0;
        while let Some(raw) = pieces.next() {
            line_no += 1;
            if raw.is_empty() && pieces.peek().is_none() {
                break; // after the final newline
            }
            let err = |problem| ParseError { line: line_no, problem };
            let line = std::str::from_utf8(raw).map_err(|_| err(ParseProblem::NotUtf8))?;
            if line.chars().all(py_is_space) || line.starts_with('#') {
                continue;
            }
            let (key, value) = line.split_once('=').ok_or_else(|| err(ParseProblem::MissingEquals))?;
            let (key, value) = (py_strip(key), py_strip(value));
            if key.is_empty() {
                return Err(err(ParseProblem::EmptyKey));
            }
            if key.starts_with('#') {
                return Err(err(ParseProblem::UnwritableKey(key.to_owned())));
            }
            info.set_field(key, value).map_err(|expected| {
                err(ParseProblem::BadValue {
                    field: key.to_owned(),
                    value: value.to_owned(),
                    expected,
                })
            })?;
        }
        Ok(info)
    }

    /// Sets one field from its on-disk text; `Err` says what the text should have been.
    fn set_field(&mut self, key: &str, value: &str) -> Result<(), &'static str> {
        let v = (value != "None").then_some(value);
        fn text(v: Option<&str>) -> Option<String> {
            v.map(str::to_owned)
        }
        fn int<T: std::str::FromStr>(v: Option<&str>) -> Result<Option<T>, &'static str> {
            v.map(|s| {
                let digits = s.strip_prefix('+').unwrap_or(s);
                if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                    return Err("a non-negative decimal integer");
                }
                digits.parse().map_err(|_| "a non-negative decimal integer in range")
            })
            .transpose()
        }
        fn literal(v: Option<&str>) -> Result<Option<PyValue>, &'static str> {
            match v {
                None => Ok(None),
                Some(s) => {
                    let value = PyValue::parse(s).map_err(|_| "a Python literal")?;
                    Ok(value.is_truthy().then_some(value))
                }
            }
        }
        match key {
            "backup_label" => {
                self.backup_label = match literal(v)? {
                    None => None,
                    Some(PyValue::Str(s)) => Some(s),
                    Some(_) => return Err("a Python string literal"),
                }
            }
            "backup_name" => self.backup_name = text(v),
            "begin_offset" => self.begin_offset = int(v)?,
            "begin_time" => {
                self.begin_time = v.map(str::parse).transpose().map_err(|_| "a timestamp")?
            }
            "begin_wal" => {
                self.begin_wal = v.map(str::parse).transpose().map_err(|_| "a WAL segment name")?
            }
            "begin_xlog" => self.begin_xlog = v.map(str::parse).transpose().map_err(|_| "an LSN")?,
            "children_backup_ids" => {
                self.children_backup_ids = match v {
                    None | Some("") => None,
                    Some(s) => Some(
                        s.split(',')
                            .map(str::parse)
                            .collect::<Result<_, _>>()
                            .map_err(|_| "comma-separated backup IDs")?,
                    ),
                }
            }
            "cluster_size" => self.cluster_size = int(v)?,
            "compression" => self.compression = text(v),
            "config_file" => self.config_file = text(v),
            "copy_stats" => {
                self.copy_stats = match literal(v)? {
                    None => None,
                    Some(PyValue::Dict(d)) => Some(d),
                    Some(_) => return Err("a Python dict literal"),
                }
            }
            "data_checksums" => self.data_checksums = text(v),
            "deduplicated_size" => self.deduplicated_size = int(v)?,
            "encryption" => self.encryption = text(v),
            "end_offset" => self.end_offset = int(v)?,
            "end_time" => {
                self.end_time = v.map(str::parse).transpose().map_err(|_| "a timestamp")?
            }
            "end_wal" => {
                self.end_wal = v.map(str::parse).transpose().map_err(|_| "a WAL segment name")?
            }
            "end_xlog" => self.end_xlog = v.map(str::parse).transpose().map_err(|_| "an LSN")?,
            "error" => self.error = text(v),
            "hba_file" => self.hba_file = text(v),
            "ident_file" => self.ident_file = text(v),
            "included_files" => {
                self.included_files = match literal(v)? {
                    None => None,
                    Some(PyValue::List(items) | PyValue::Tuple(items)) => Some(
                        items
                            .into_iter()
                            .map(|i| match i {
                                PyValue::Str(s) => Ok(s),
                                _ => Err("a Python list of strings"),
                            })
                            .collect::<Result<_, _>>()?,
                    ),
                    Some(_) => return Err("a Python list of strings"),
                }
            }
            "mode" => self.mode = text(v),
            "parent_backup_id" => {
                self.parent_backup_id =
                    v.map(str::parse).transpose().map_err(|_| "a backup ID")?
            }
            "pgdata" => self.pgdata = text(v),
            "server_name" => self.server_name = text(v),
            "size" => self.size = int(v)?,
            "snapshots_info" => self.snapshots_info = literal(v)?,
            "status" => {
                self.status = value.parse().map_err(|_| "a backup status")?;
            }
            "summarize_wal" => self.summarize_wal = text(v),
            "systemid" => self.systemid = int::<u64>(v)?.map(SystemId),
            "tablespaces" => {
                const WANT: &str = "a Python list of (name, oid, location) tuples";
                self.tablespaces = match literal(v)? {
                    None => None,
                    Some(PyValue::List(items) | PyValue::Tuple(items)) => Some(
                        items
                            .into_iter()
                            .map(|item| match item {
                                PyValue::List(t) | PyValue::Tuple(t) => match t.as_slice() {
                                    [PyValue::Str(name), PyValue::Int(oid), PyValue::Str(loc)] => {
                                        Ok(Tablespace {
                                            name: name.clone(),
                                            oid: u32::try_from(*oid).map_err(|_| WANT)?,
                                            location: loc.clone(),
                                        })
                                    }
                                    _ => Err(WANT),
                                },
                                _ => Err(WANT),
                            })
                            .collect::<Result<_, _>>()?,
                    ),
                    Some(_) => return Err(WANT),
                }
            }
            "timeline" => self.timeline = int::<u32>(v)?.map(TimelineId),
            "version" => self.version = int(v)?,
            "xlog_segment_size" => {
                self.xlog_segment_size = int::<u64>(v)?
                    .map(WalSegmentSize::new)
                    .transpose()
                    .map_err(|_| "a power of two between 1 MiB and 1 GiB")?
            }
            _ => {
                self.extra.insert(key.to_owned(), value.to_owned());
            }
        }
        Ok(())
    }

    /// The on-disk value of a known key (`None` → the literal `None`), or `None` when the
    /// line is omitted.
    fn render_field(&self, key: &str) -> Option<Option<String>> {
        fn s<T: ToString>(v: &Option<T>) -> Option<String> {
            v.as_ref().map(ToString::to_string)
        }
        let value = match key {
            "backup_label" => self
                .backup_label
                .as_ref()
                .filter(|l| !l.is_empty())
                .map(|l| PyValue::Str(l.clone()).to_string()),
            "backup_name" => return self.backup_name.clone().map(Some),
            "begin_offset" => s(&self.begin_offset),
            "begin_time" => s(&self.begin_time),
            "begin_wal" => s(&self.begin_wal),
            "begin_xlog" => s(&self.begin_xlog),
            "children_backup_ids" => self
                .children_backup_ids
                .as_ref()
                .filter(|ids| !ids.is_empty())
                .map(|ids| ids.iter().map(BackupId::as_str).collect::<Vec<_>>().join(",")),
            "cluster_size" => s(&self.cluster_size),
            "compression" => self.compression.clone(),
            "config_file" => self.config_file.clone(),
            "copy_stats" => self
                .copy_stats
                .as_ref()
                .filter(|d| !d.is_empty())
                .map(|d| PyValue::Dict(d.clone()).to_string()),
            "data_checksums" => self.data_checksums.clone(),
            "deduplicated_size" => s(&self.deduplicated_size),
            "encryption" => self.encryption.clone(),
            "end_offset" => s(&self.end_offset),
            "end_time" => s(&self.end_time),
            "end_wal" => s(&self.end_wal),
            "end_xlog" => s(&self.end_xlog),
            "error" => self.error.clone(),
            "hba_file" => self.hba_file.clone(),
            "ident_file" => self.ident_file.clone(),
            "included_files" => self.included_files.as_ref().filter(|f| !f.is_empty()).map(|f| {
                PyValue::List(f.iter().cloned().map(PyValue::Str).collect()).to_string()
            }),
            "mode" => self.mode.clone(),
            "parent_backup_id" => s(&self.parent_backup_id),
            "pgdata" => self.pgdata.clone(),
            "server_name" => self.server_name.clone(),
            "size" => s(&self.size),
            "snapshots_info" => {
                return self
                    .snapshots_info
                    .as_ref()
                    .filter(|v| v.is_truthy())
                    .map(|v| Some(v.to_string()))
            }
            "status" => Some(self.status.to_string()),
            "summarize_wal" => self.summarize_wal.clone(),
            "systemid" => s(&self.systemid),
            "tablespaces" => {
                self.tablespaces.as_ref().filter(|t| !t.is_empty()).map(|t| Tablespace::py_list(t).to_string())
            }
            "timeline" => s(&self.timeline),
            "version" => s(&self.version),
            "xlog_segment_size" => self.xlog_segment_size.map(|z| z.bytes().to_string()),
            _ => unreachable!("render_field is called with known keys only"),
        };
        Some(value)
    }

    /// The file's bytes, exactly as Barman 3.x would write them.
    ///
    /// Fails when a plain-text value could not be read back as written: containing a newline,
    /// starting or ending with whitespace, or being the text `None`; or when an unknown key
    /// in [`extra`](Self::extra) is malformed or shadows a known one.
    pub fn to_bytes(&self) -> Result<Vec<u8>, CatalogError> {
        let mut lines: Vec<(&str, String)> = Vec::with_capacity(KNOWN_KEYS.len() + self.extra.len());
        for key in KNOWN_KEYS {
            match self.render_field(key) {
                None => {}
                Some(None) => lines.push((key, "None".to_owned())),
                Some(Some(value)) => {
                    check_plain(key, &value)?;
                    lines.push((key, value));
                }
            }
        }
        for (key, value) in &self.extra {
            let bad = |reason| CatalogError::Unrepresentable {
                field: key.clone(),
                value: value.clone(),
                reason,
            };
            if KNOWN_KEYS.contains(&key.as_str()) {
                return Err(bad("an extra key must not repeat a known key"));
            }
            if key.is_empty() || key.contains(['=', '\n']) || key.starts_with('#') || py_strip(key) != key {
                return Err(bad("not a key that reads back (empty, '=', newline, '#' or whitespace)"));
            }
            if value.contains('\n') || py_strip(value) != value {
                return Err(bad("a newline or surrounding whitespace would not read back"));
            }
            lines.push((key, value.clone()));
        }
        lines.sort_by(|a, b| a.0.cmp(b.0));
        let mut out = Vec::with_capacity(1200);
        for (key, value) in lines {
            out.extend_from_slice(key.as_bytes());
            out.push(b'=');
            out.extend_from_slice(value.as_bytes());
            out.push(b'\n');
        }
        Ok(out)
    }

    /// Reads the info of backup `id`: `meta/<ID>-backup.info`, or for catalogs written by
    /// Barman < 3.13.2, `base/<ID>/backup.info`.
    pub fn read(catalog: &ServerCatalog, id: BackupId) -> Result<Self, CatalogError> {
        let meta = catalog.backup_info_path(id);
        if let Some(bytes) = storage::fs::read_if_exists(&meta)? {
            return Self::parse(id, &bytes).map_err(|e| e.in_file(meta));
        }
        let legacy = catalog.legacy_backup_info_path(id);
        match storage::fs::read_if_exists(&legacy)? {
            Some(bytes) => Self::parse(id, &bytes).map_err(|e| e.in_file(legacy)),
            None => Err(CatalogError::BackupInfoMissing { id, meta, legacy }),
        }
    }

    /// Reads a backup.info from an explicit path.
    pub fn read_file(path: &Path, id: BackupId) -> Result<Self, CatalogError> {
        let bytes = storage::fs::read(path)?;
        Self::parse(id, &bytes).map_err(|e| e.in_file(path))
    }

    /// Writes `meta/<ID>-backup.info` atomically and durably (creating `meta/` if needed).
    /// A legacy `base/<ID>/backup.info` is left alone; the new file takes precedence.
    pub fn write(&self, catalog: &ServerCatalog) -> Result<(), CatalogError> {
        create_dir_all_durable(&catalog.meta_dir(), DIR_MODE)?;
        self.write_file(&catalog.backup_info_path(self.backup_id))
    }

    /// Writes this info to an explicit path, atomically and durably.
    pub fn write_file(&self, path: &Path) -> Result<(), CatalogError> {
        let bytes = self.to_bytes()?;
        atomic_write(path, &bytes, FILE_MODE)?;
        Ok(())
    }
}

/// A plain-text value must read back as written.
fn check_plain(key: &str, value: &str) -> Result<(), CatalogError> {
    let reason = if value.contains('\n') {
        "contains a newline"
    } else if py_strip(value) != value {
        "starts or ends with whitespace, which the reader strips"
    } else if value == "None" {
        "the text None reads back as unset"
    } else {
        return Ok(());
    };
    Err(CatalogError::Unrepresentable { field: key.to_owned(), value: value.to_owned(), reason })
}

impl BackupSummary for BackupInfo {
    fn backup_id(&self) -> BackupId {
        self.backup_id
    }
    fn status(&self) -> BackupStatus {
        self.status
    }
    /// Barman's `is_full`: not a snapshot (`mode` starting with `snapshot`) and not
    /// incremental (no `parent_backup_id`).
    fn is_full(&self) -> bool {
        let snapshot = self.mode.as_deref().is_some_and(|m| m.starts_with("snapshot"));
        !snapshot && self.parent_backup_id.is_none()
    }
    fn backup_name(&self) -> Option<&str> {
        self.backup_name.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn testdata() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/catalog")
    }

    fn samples() -> Vec<(BackupId, Vec<u8>, String)> {
        let mut out = Vec::new();
        for name in storage::fs::list_dir(&testdata()).unwrap() {
            let name = name.into_string().unwrap();
            if let Some((id, _)) = name.split_once("-backup.info") {
                let bytes = std::fs::read(testdata().join(&name)).unwrap();
                out.push((id.parse().unwrap(), bytes, name));
            }
        }
        assert_eq!(out.len(), 7);
        out
    }

    #[test]
    fn every_sample_round_trips_byte_for_byte() {
        for (id, bytes, name) in samples() {
            let info = BackupInfo::parse(id, &bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(info.extra.is_empty(), "{name}: {:?}", info.extra);
            let written = info.to_bytes().unwrap();
            assert_eq!(
                String::from_utf8_lossy(&written),
                String::from_utf8_lossy(&bytes),
                "{name}"
            );
        }
    }

    #[test]
    fn sample_values_are_typed() {
        let bytes = std::fs::read(testdata().join("20261125T123353-backup.info.named-plain")).unwrap();
        let info = BackupInfo::parse("20261125T123353".parse().unwrap(), &bytes).unwrap();
        assert_eq!(info.backup_name.as_deref(), Some("before-upgrade"));
        assert_eq!(info.status, BackupStatus::Done);
        assert_eq!(info.begin_xlog, Some(Lsn(0xA000028)));
        assert_eq!(info.end_xlog.unwrap().to_string(), "0/B000000");
        assert_eq!(info.begin_wal.unwrap().to_string(), "00000001000000000000000A");
        assert_eq!(info.systemid, Some(SystemId(7712085579849293106)));
        assert_eq!(info.timeline, Some(TimelineId(1)));
        assert_eq!(info.version, Some(150018));
        assert_eq!(info.xlog_segment_size, Some(WalSegmentSize::DEFAULT));
        assert_eq!(info.copy_stat("copy_time"), Some(2.235245));
        assert_eq!(
            info.tablespaces.as_deref(),
            Some(&[Tablespace { name: "tbs1".into(), oid: 16384, location: "/tmp/bsample/tbs1".into() }][..])
        );
        let label = info.backup_label.as_deref().unwrap();
        assert!(label.starts_with("START WAL LOCATION: 0/A000028 (file 00000001000000000000000A)\n"));
        assert!(label.ends_with("START TIMELINE: 1\n"));
        let begin = info.begin_time.unwrap().to_offset_datetime().unwrap();
        assert_eq!(begin.microsecond(), 4487);
        assert!(info.is_full());

        let failed = std::fs::read(testdata().join("20261125T123714-backup.info.failed")).unwrap();
        let info = BackupInfo::parse("20261125T123714".parse().unwrap(), &failed).unwrap();
        assert_eq!(info.status, BackupStatus::Failed);
        assert!(info.error.as_deref().unwrap().contains("exit code: 63"));
        assert!(info.begin_time.is_none() && info.tablespaces.is_none());
    }

    #[test]
    fn unknown_keys_survive_in_sorted_position() {
        let id: BackupId = "20261125T123210".parse().unwrap();
        let text = "status=DONE\nzz_future=1\nbackup_name=x\naaa_future= {'a': 1} \n";
        let info = BackupInfo::parse(id, text.as_bytes()).unwrap();
        assert_eq!(info.extra.get("aaa_future").map(String::as_str), Some("{'a': 1}"));
        let out = String::from_utf8(info.to_bytes().unwrap()).unwrap();
        let keys: Vec<&str> = out.lines().map(|l| l.split_once('=').unwrap().0).collect();
        assert_eq!(keys.first(), Some(&"aaa_future"));
        assert_eq!(keys.last(), Some(&"zz_future"));
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
        assert_eq!(BackupInfo::parse(id, out.as_bytes()).unwrap(), info);
    }

    #[test]
    fn reader_leniency_matches_barman() {
        let id: BackupId = "20261125T123210".parse().unwrap();
        let text = "# comment\n\n   \n status = DONE \r\nbegin_offset=+40\nbackup_label='a' 'b'\n\
                    included_files=[]\ncopy_stats={}\ntablespaces=[]\nchildren_backup_ids=\nsize=1";
        let info = BackupInfo::parse(id, text.as_bytes()).unwrap();
        assert_eq!(info.status, BackupStatus::Done);
        assert_eq!(info.begin_offset, Some(40));
        assert_eq!(info.backup_label.as_deref(), Some("ab"));
        assert_eq!(info.size, Some(1));
        assert!(info.included_files.is_none() && info.copy_stats.is_none());
        assert!(info.tablespaces.is_none() && info.children_backup_ids.is_none());
        // A missing xlog_segment_size line keeps Barman's default; an explicit None clears it.
        assert_eq!(info.xlog_segment_size, Some(WalSegmentSize::DEFAULT));
        let none = BackupInfo::parse(id, b"xlog_segment_size=None\n").unwrap();
        assert_eq!(none.xlog_segment_size, None);
    }

    #[test]
    fn malformed_lines_are_reported_with_their_number() {
        let id: BackupId = "20261125T123210".parse().unwrap();
        let cases: &[(&[u8], usize, &str)] = &[
            (b"status=DONE\nno equals sign\n", 2, "expected key=value"),
            (b"status=DONE\n=x\n", 2, "empty key"),
            (b"status=DONE\n #x=1\n", 2, "unsupported key"),
            (b"\n\nstatus=OK\n", 3, "status"),
            (b"size=12a\n", 1, "size"),
            (b"size=-1\n", 1, "size"),
            (b"begin_time=yesterday\n", 1, "begin_time"),
            (b"begin_xlog=0-1\n", 1, "begin_xlog"),
            (b"begin_wal=000000010000000000000001.partial\n", 1, "begin_wal"),
            (b"tablespaces=[('a', 1)]\n", 1, "tablespaces"),
            (b"tablespaces=[('a', -1, 'b')]\n", 1, "tablespaces"),
            (b"backup_label=[1]\n", 1, "backup_label"),
            (b"copy_stats={'a': \n", 1, "copy_stats"),
            (b"children_backup_ids=20261125T123210,x\n", 1, "children_backup_ids"),
            (b"xlog_segment_size=1000\n", 1, "xlog_segment_size"),
            (b"a=1\nerror=\xff\n", 2, "UTF-8"),
        ];
        for (text, line, needle) in cases {
            let err = BackupInfo::parse(id, text).unwrap_err();
            assert_eq!(err.line, *line, "{}", String::from_utf8_lossy(text));
            assert!(err.to_string().contains(needle), "{err}");
            let in_file = err.in_file("/x/meta/20261125T123210-backup.info").to_string();
            assert!(in_file.starts_with(&format!("/x/meta/20261125T123210-backup.info:{line}: ")), "{in_file}");
        }
    }

    #[test]
    fn unrepresentable_values_are_refused() {
        let mut info = BackupInfo::new("20261125T123210".parse().unwrap());
        for bad in ["two\nlines", " padded", "None"] {
            info.error = Some(bad.to_owned());
            assert!(matches!(info.to_bytes(), Err(CatalogError::Unrepresentable { .. })), "{bad:?}");
        }
        info.error = Some("fine\r text".into());
        assert!(info.to_bytes().is_ok());
        info.extra.insert("status".into(), "x".into());
        assert!(info.to_bytes().is_err());
    }

    #[test]
    fn read_prefers_meta_and_falls_back_to_legacy() {
        let dir = tempfile::tempdir().unwrap();
        let catalog = ServerCatalog::new("pg", dir.path().join("pg"), dir.path());
        let id: BackupId = "20261125T123210".parse().unwrap();
        assert!(matches!(
            BackupInfo::read(&catalog, id),
            Err(CatalogError::BackupInfoMissing { .. })
        ));
        let (_, bytes, _) = samples().into_iter().find(|s| s.0 == id).unwrap();
        std::fs::create_dir_all(catalog.backup_dir(id)).unwrap();
        std::fs::write(catalog.legacy_backup_info_path(id), &bytes).unwrap();
        let legacy = BackupInfo::read(&catalog, id).unwrap();
        assert_eq!(legacy.status, BackupStatus::Done);

        let mut newer = legacy.clone();
        newer.status = BackupStatus::Failed;
        newer.error = Some("failure copying files".into());
        newer.write(&catalog).unwrap();
        assert_eq!(BackupInfo::read(&catalog, id).unwrap(), newer);
        assert_eq!(std::fs::read(catalog.legacy_backup_info_path(id)).unwrap(), bytes);
        assert_eq!(catalog.backup_ids().unwrap(), vec![id]);

        std::fs::write(catalog.backup_info_path(id), b"status=DONE\nsize=x\n").unwrap();
        let err = BackupInfo::read(&catalog, id).unwrap_err().to_string();
        assert!(err.contains("meta/20261125T123210-backup.info:2: size"), "{err}");
    }

    mod proptests {
        use super::super::*;
        use proptest::prelude::*;
        use proptest::option::of;

        fn plain() -> impl Strategy<Value = String> {
            "[a-zA-Z0-9/_.:=#-]([a-zA-Z0-9 /_.:=#'\"-]{0,20}[a-zA-Z0-9/_.:=#-])?"
                .prop_filter("None reads back as unset", |s| s != "None")
        }

        fn id() -> impl Strategy<Value = BackupId> {
            (2000u32..2100, 1u32..13, 1u32..29, 0u32..24, 0u32..60, 0u32..60).prop_map(
                |(y, mo, d, h, mi, s)| format!("{y:04}{mo:02}{d:02}T{h:02}{mi:02}{s:02}").parse().unwrap(),
            )
        }

        fn ts() -> impl Strategy<Value = BarmanTimestamp> {
            (0i64..4_000_000_000, 0u32..1_000_000, -50_400i32..50_400, any::<bool>()).prop_map(
                |(secs, micro, off, naive)| {
                    let offset = time::UtcOffset::from_whole_seconds(off).unwrap();
                    let t = time::OffsetDateTime::from_unix_timestamp(secs).unwrap()
                        .replace_microsecond(micro).unwrap().to_offset(offset);
                    let mut b = BarmanTimestamp::from(t);
                    if naive { b.offset = None; }
                    b
                },
            )
        }

        fn label() -> impl Strategy<Value = String> {
            "\\PC{1,40}|[\\x00-\\x7f]{1,40}"
        }

        fn stats() -> impl Strategy<Value = Vec<(PyValue, PyValue)>> {
            proptest::collection::btree_map(
                "[a-z_]{1,12}",
                any::<f64>().prop_filter("finite", |f| f.is_finite()),
                1..4,
            )
            .prop_map(|m| m.into_iter().map(|(k, v)| (PyValue::Str(k), PyValue::Float(v))).collect())
        }

        fn info() -> impl Strategy<Value = BackupInfo> {
            let a = (
                id(),
                of(label()),
                of(plain()),
                of(any::<u64>()),
                of(ts()),
                of((1u32..10, 0u32..4, 0u32..256)),
                of(any::<u64>()),
                of(proptest::collection::vec(id(), 1..4)),
                of(any::<u64>()),
                of(plain()),
                of(plain()),
            );
            let b = (
                of(stats()),
                of(plain()),
                of(ts()),
                of(any::<u64>()),
                of(proptest::collection::vec(label(), 1..3)),
                of(id()),
                proptest::sample::select(BackupStatus::ALL.to_vec()),
                of(any::<u64>()),
                of(any::<u32>()),
                of(any::<u32>()),
                of(proptest::collection::vec((plain(), any::<u32>(), label()), 1..3)),
                of(20u32..31),
            );
            let c = proptest::collection::btree_map("x_[a-z]{1,8}", plain(), 0..3);
            (a, b, c).prop_map(|(a, b, extra)| {
                let mut i = BackupInfo::new(a.0);
                i.backup_label = a.1;
                i.backup_name = a.2;
                i.begin_offset = a.3;
                i.begin_time = a.4;
                i.begin_wal = a.5.map(|(t, l, s)| WalSegmentName::new(TimelineId(t), l, s).unwrap());
                i.begin_xlog = a.6.map(Lsn);
                i.children_backup_ids = a.7;
                i.cluster_size = a.8;
                i.compression = a.9;
                i.config_file = a.10.clone();
                i.hba_file = a.10;
                i.copy_stats = b.0;
                i.error = b.1;
                i.end_time = b.2;
                i.end_offset = b.3;
                i.end_xlog = b.3.map(Lsn);
                i.end_wal = i.begin_wal;
                i.included_files = b.4;
                i.parent_backup_id = b.5;
                i.status = b.6;
                i.size = b.7;
                i.deduplicated_size = b.7;
                i.systemid = b.7.map(SystemId);
                i.version = b.8;
                i.timeline = b.9.map(TimelineId);
                i.tablespaces = b.10.map(|v| v.into_iter().map(|(name, oid, location)| Tablespace { name, oid, location }).collect());
                i.xlog_segment_size = b.11.map(|p| WalSegmentSize::new(1 << p).unwrap());
                i.snapshots_info = i.copy_stats.clone().map(PyValue::Dict);
                i.extra = extra;
                i
            })
        }

        proptest! {
            #[test]
            fn write_then_read_is_identity(info in info()) {
                let bytes = info.to_bytes().unwrap();
                let back = BackupInfo::parse(info.backup_id, &bytes).unwrap();
                prop_assert_eq!(&back.to_bytes().unwrap(), &bytes);
                // Floats compare by value; NaN is excluded by the strategy.
                prop_assert_eq!(back, info);
            }

            #[test]
            fn parse_write_parse_is_stable(text in "([a-z_]{1,12}=[ -~]{0,30}\n){0,8}") {
                let id: BackupId = "20261125T123210".parse().unwrap();
                if let Ok(info) = BackupInfo::parse(id, text.as_bytes()) {
                    let bytes = info.to_bytes().unwrap();
                    let again = BackupInfo::parse(id, &bytes).unwrap();
                    prop_assert_eq!(again.to_bytes().unwrap(), bytes);
                }
            }
        }
    }
}
