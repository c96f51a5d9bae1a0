//! Python's `repr()` of a `LocalBackupInfo`, which Barman prints when a `delete` is refused
//! (`Cannot delete backup (pg LocalBackupInfo(backup_label=..., ...))`, sample
//! 26a-delete-kept-refused): `FieldListFile.__repr__` lists every field sorted by name,
//! `name=repr(value)`, where fields with a dump function show the dumped text (so lists and
//! dicts appear as quoted strings) and times show as `datetime.datetime(...)`.

use std::fmt::Write as _;

use crate::catalog::pyliteral::str_repr;
use crate::catalog::{BackupInfo, BarmanTimestamp, PyValue, Tablespace};

/// `LocalBackupInfo(backup_label=..., ..., xlog_segment_size=16777216)`.
pub fn backup_info_repr(info: &BackupInfo) -> String {
    let s = |v: Option<String>| v.map_or("None".to_owned(), |t| str_repr(&t));
    let n = |v: Option<u64>| v.map_or("None".to_owned(), |x| x.to_string());
    let dumped = |v: Option<PyValue>| s(v.filter(PyValue::is_truthy).map(|v| v.to_string()));
    let mut fields: Vec<(&str, String)> = vec![
        ("backup_label", dumped(info.backup_label.clone().map(PyValue::Str))),
        ("begin_offset", n(info.begin_offset)),
        ("begin_time", time_repr(info.begin_time)),
        ("begin_wal", s(info.begin_wal.map(|w| w.to_string()))),
        ("begin_xlog", s(info.begin_xlog.map(|l| l.to_string()))),
        (
            "children_backup_ids",
            s(info.children_backup_ids.as_ref().filter(|c| !c.is_empty()).map(|c| {
                c.iter().map(|i| i.as_str()).collect::<Vec<_>>().join(",")
            })),
        ),
        ("cluster_size", n(info.cluster_size)),
        ("compression", s(info.compression.clone())),
        ("config_file", s(info.config_file.clone())),
        ("copy_stats", dumped(info.copy_stats.clone().map(PyValue::Dict))),
        ("data_checksums", s(info.data_checksums.clone())),
        ("deduplicated_size", n(info.deduplicated_size)),
        ("encryption", s(info.encryption.clone())),
        ("end_offset", n(info.end_offset)),
        ("end_time", time_repr(info.end_time)),
        ("end_wal", s(info.end_wal.map(|w| w.to_string()))),
        ("end_xlog", s(info.end_xlog.map(|l| l.to_string()))),
        ("error", s(info.error.clone())),
        ("hba_file", s(info.hba_file.clone())),
        ("ident_file", s(info.ident_file.clone())),
        (
            "included_files",
            dumped(info.included_files.as_ref().map(|f| PyValue::List(f.iter().cloned().map(PyValue::Str).collect()))),
        ),
        ("mode", s(info.mode.clone())),
        ("parent_backup_id", s(info.parent_backup_id.map(|i| i.to_string()))),
        ("pgdata", s(info.pgdata.clone())),
        ("server_name", s(info.server_name.clone())),
        ("size", n(info.size)),
        ("status", str_repr(info.status.as_str())),
        ("summarize_wal", s(info.summarize_wal.clone())),
        ("systemid", s(info.systemid.map(|i| i.to_string()))),
        (
            "tablespaces",
            dumped(info.tablespaces.as_deref().map(Tablespace::py_list)),
        ),
        ("timeline", n(info.timeline.map(|t| u64::from(t.0)))),
        ("version", n(info.version.map(u64::from))),
        ("xlog_segment_size", n(info.xlog_segment_size.map(|z| z.bytes()))),
    ];
    // Hidden when unset (`_hide_if_null`).
    if let Some(name) = &info.backup_name {
        fields.push(("backup_name", str_repr(name)));
    }
    if let Some(snap) = info.snapshots_info.as_ref().filter(|v| v.is_truthy()) {
        fields.push(("snapshots_info", str_repr(&snap.to_string())));
    }
    fields.sort_by(|a, b| a.0.cmp(b.0));
    let body: Vec<String> = fields.into_iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("LocalBackupInfo({})", body.join(", "))
}

/// `datetime.datetime(2026, 11, 25, 12, 32, 33, 76415, tzinfo=tzlocal())`: trailing zero
/// microseconds, then seconds, are left out, as Python does. The zone is `tzlocal()` when the
/// value has no offset or the local zone's, else `tzutc()` / `tzoffset(None, seconds)`.
fn time_repr(t: Option<BarmanTimestamp>) -> String {
    let Some(t) = t else { return "None".to_owned() };
    let d = t.datetime;
    let mut parts = vec![
        d.year().to_string(),
        u8::from(d.month()).to_string(),
        d.day().to_string(),
        d.hour().to_string(),
        d.minute().to_string(),
    ];
    if d.second() != 0 || d.microsecond() != 0 {
        parts.push(d.second().to_string());
    }
    if d.microsecond() != 0 {
        parts.push(d.microsecond().to_string());
    }
    let instant = crate::catalog::query::instant(t);
    let local = {
        use chrono::{Offset as _, TimeZone as _};
        chrono::Local
            .timestamp_opt(instant.unix_timestamp(), 0)
            .single()
            .map(|l| l.offset().fix().local_minus_utc())
    };
    let zone = match t.offset {
        None => "tzlocal()".to_owned(),
        Some(o) if Some(o.whole_seconds()) == local => "tzlocal()".to_owned(),
        Some(o) if o.is_utc() => "tzutc()".to_owned(),
        Some(o) => format!("tzoffset(None, {})", o.whole_seconds()),
    };
    let mut out = format!("datetime.datetime({}", parts.join(", "));
    let _ = write!(out, ", tzinfo={zone})");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_barmans_refusal_sample_on_a_utc_machine() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/catalog/20261125T123233-backup.info.gzip-kept");
        let info = BackupInfo::parse("20261125T123233".parse().unwrap(), &std::fs::read(path).unwrap()).unwrap();
        let repr = backup_info_repr(&info);
        // Sample 26a-delete-kept-refused, whose machine ran in UTC; the zone name depends on
        // the local zone, so compare with it normalised.
        let expected = "LocalBackupInfo(backup_label=\"'START WAL LOCATION: 0/6000028 (file 000000010000000000000006)\\\\nCHECKPOINT LOCATION: 0/6046C90\\\\nBACKUP METHOD: streamed\\\\nBACKUP FROM: primary\\\\nSTART TIME: 2026-11-25 12:33:29 UTC\\\\nLABEL: pg_basebackup base backup\\\\nSTART TIMELINE: 1\\\\n'\", begin_offset=40, begin_time=datetime.datetime(2026, 11, 25, 12, 32, 33, 76415, tzinfo=tzlocal()), begin_wal='000000010000000000000006', begin_xlog='0/6000028', children_backup_ids=None, cluster_size=35367984, compression='gzip', config_file='/tmp/bsample/pg/postgresql.conf', copy_stats=\"{'copy_time': 58.692069, 'total_time': 58.692069}\", data_checksums='off', deduplicated_size=5892918, encryption=None, end_offset=0, end_time=datetime.datetime(2026, 11, 25, 12, 33, 31, 782075, tzinfo=tzlocal()), end_wal='000000010000000000000006', end_xlog='0/7000000', error=None, hba_file='/tmp/bsample/pg/pg_hba.conf', ident_file='/tmp/bsample/pg/pg_ident.conf', included_files=None, mode='postgres', parent_backup_id=None, pgdata='/tmp/bsample/pg', server_name='pg', size=5892918, status='DONE', summarize_wal=None, systemid='7712085579849293106', tablespaces=\"[('tbs1', 16384, '/tmp/bsample/tbs1')]\", timeline=1, version=150018, xlog_segment_size=16777216)";
        assert_eq!(repr.replace("tzinfo=tzutc()", "tzinfo=tzlocal()"), expected);
    }
}
