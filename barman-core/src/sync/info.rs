//! `barman sync-info SERVER [LAST_WAL [LAST_POSITION]]` on the primary: what a passive node
//! needs to copy, as Barman's `Server.sync_status` prints it (formats §4).
//!
//! The document holds, in this order: `last_position` (the byte offset in xlog.db where its
//! last line starts) and `last_name` (that line's WAL), the `DONE` backups (each
//! `BackupInfo.to_json()`), the xlog.db entries the node lacks, the Barman version, and the
//! server's configuration (`ServerConfig.to_json()`, whose `basebackups_directory` and
//! `wals_directory` tell the node where to rsync from).
//!
//! The node sends back `last_name` and `last_position`; reading resumes at that offset when
//! the 24 characters found there are that name, otherwise (the file was rewritten) from the
//! start, keeping only the entries after that name. Without them, only WAL from the oldest
//! backup's `begin_wal` on is listed.
//!
//! Deliberate differences: the backups are listed by ID, where Barman lists them in the order
//! its catalog cache read the directory (which carries no meaning); passwords in the
//! configuration's connection strings are redacted (`password=*REDACTED*`), as everywhere
//! barman-rs prints them — a passive node has no use for them.

use crate::catalog::pyjson::Json;
use super::SyncError;
use crate::catalog::pyliteral::PyValue;
use crate::catalog::{BackupInfo, LockKind, ServerCatalog, XlogDbEntry};
use crate::config::ServerConfig;

/// `last_wal` and `last_position` of a `sync-info` call: where the passive node stopped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncPoint {
    /// The last WAL name the node read.
    pub last_wal: Option<String>,
    /// The byte offset in xlog.db of the line holding it.
    pub last_position: Option<u64>,
}

/// The sync-info document of `cfg`'s catalog, as text (Python's `json.dump(indent=4)`, no
/// trailing newline). `version` is the Barman version to announce.
pub fn sync_status(cfg: &ServerConfig, catalog: &ServerCatalog, from: &SyncPoint, version: &str) -> Result<String, SyncError> {
    let mut backups = Vec::new();
    for id in catalog.backup_ids()? {
        let info = BackupInfo::read(catalog, id)?;
        // Barman's `get_available_backups()`: copy done (DONE or WAITING_FOR_WALS).
        if info.status.is_copy_done() {
            backups.push(info);
        }
    }
    // The oldest backup's first WAL: older entries are of no use to a node.
    let first_useful_wal = backups.first().and_then(|b| b.begin_wal).map(|w| w.to_string());

    let lock = catalog.lock(LockKind::ServerXlogDb)?;
    let bytes = crate::storage::fs::read_if_exists(&catalog.xlogdb_path())?.unwrap_or_default();
    drop(lock);
    let scan = scan_xlogdb(&bytes, from, first_useful_wal.as_deref())?;

    let doc = Json::Object(vec![
        ("last_position".into(), Json::int(scan.last_position)),
        ("last_name".into(), Json::Str(scan.last_name)),
        ("backups".into(), Json::Object(backups.iter().map(|b| Ok((b.backup_id.to_string(), backup_json(b)?))).collect::<Result<_, SyncError>>()?)),
        ("wals".into(), Json::Array(scan.wals.iter().map(wal_json).collect())),
        ("version".into(), Json::Str(version.to_owned())),
        ("config".into(), config_json(cfg)),
    ]);
    Ok(doc.dumps(Some(4)))
}

/// What [`scan_xlogdb`] found.
#[derive(Debug, Clone, PartialEq)]
struct Scan {
    last_position: u64,
    last_name: String,
    wals: Vec<XlogDbEntry>,
}

/// Barman's reading of xlog.db for sync-info (`set_sync_starting_point` and the loop of
/// `sync_status`), over the file's bytes.
fn scan_xlogdb(bytes: &[u8], from: &SyncPoint, first_useful_wal: Option<&str>) -> Result<Scan, SyncError> {
    let last_wal = from.last_wal.as_deref();
    // Resume at last_position when that is where last_wal's line is.
    let position = from.last_position.and_then(|p| usize::try_from(p).ok()).unwrap_or(0);
    let start = match (last_wal, bytes.get(position..position.saturating_add(24))) {
        (Some(w), Some(name)) if name == w.as_bytes() => position,
        _ => 0,
    };
    let mut check_first_wal = start == 0 && last_wal.is_some();
    let mut wals = Vec::new();
    let mut last: Option<(usize, String)> = None;
    let mut offset = start;
    while offset < bytes.len() {
        let end = bytes[offset..].iter().position(|&b| b == b'\n').map_or(bytes.len(), |i| offset + i + 1);
        let text = String::from_utf8_lossy(&bytes[offset..end]);
        let line_start = offset;
        offset = end;
        let entry = XlogDbEntry::parse_line(text.trim_end_matches(['\n', '\r']))
            .map_err(|problem| SyncError::Failed(format!("xlog.db line at byte {line_start}: {problem}")))?;
        let name = entry.name.to_string();
        if let (true, Some(w)) = (check_first_wal, last_wal) {
            if w < name.as_str() {
                return Err(SyncError::Failed(format!("last_wal '{w}' is older than the first available wal '{name}'")));
            }
            check_first_wal = false;
        }
        last = Some((line_start, name.clone()));
        match last_wal {
            Some(w) if name.as_str() <= w => continue,
            None if first_useful_wal.is_some_and(|f| name.as_str() < f) => continue,
            _ => wals.push(entry),
        }
    }
    let Some((last_position, last_name)) = last else {
        return Ok(Scan { last_position: 0, last_name: String::new(), wals });
    };
    if let Some(w) = last_wal.filter(|w| *w > last_name.as_str()) {
        // Two spaces, as Barman's message has them.
        return Err(SyncError::Failed(format!("last_wal '{w}' is newer than the last available wal  '{last_name}'")));
    }
    Ok(Scan { last_position: last_position as u64, last_name, wals })
}

/// One xlog.db entry as Barman's `WalFileInfo.to_json()`.
fn wal_json(e: &XlogDbEntry) -> Json {
    Json::Object(vec![
        ("compression".into(), Json::opt_str(e.compression.clone())),
        ("encryption".into(), Json::opt_str(e.encryption.clone())),
        ("name".into(), Json::Str(e.name.to_string())),
        ("size".into(), Json::int(e.size)),
        ("time".into(), Json::float(e.time)),
    ])
}

/// Fields of backup.info that Barman reads as integers.
const INT_FIELDS: [&str; 8] =
    ["begin_offset", "cluster_size", "deduplicated_size", "end_offset", "size", "timeline", "version", "xlog_segment_size"];

/// One backup as Barman's `BackupInfo.to_json()`: the fields in name order (`backup_name`
/// only when set), numbers as numbers, `tablespaces` as lists, `copy_stats` and
/// `included_files` as JSON, `backup_label` as the Python literal backup.info holds, the
/// times as `ctime()`; then `backup_id`, `begin_time_iso` and `end_time_iso`.
pub fn backup_json(info: &BackupInfo) -> Result<Json, SyncError> {
    let bytes = info.to_bytes()?;
    let text = String::from_utf8_lossy(&bytes);
    let mut fields = Vec::new();
    for line in text.lines() {
        let Some((key, value)) = line.split_once('=') else { continue };
        if info.extra.contains_key(key) {
            continue;
        }
        let json = match key {
            _ if value == "None" => Json::Null,
            "begin_time" => Json::opt_str(info.begin_time.and_then(ctime)),
            "end_time" => Json::opt_str(info.end_time.and_then(ctime)),
            "tablespaces" => Json::Array(
                info.tablespaces
                    .iter()
                    .flatten()
                    .map(|t| Json::Array(vec![Json::Str(t.name.clone()), Json::int(t.oid), Json::Str(t.location.clone())]))
                    .collect(),
            ),
            "copy_stats" | "included_files" => match PyValue::parse(value) {
                Ok(v) => py_json(&v),
                Err(_) => Json::Str(value.to_owned()),
            },
            k if INT_FIELDS.contains(&k) => match value.parse::<i128>() {
                Ok(n) => Json::int(n),
                Err(_) => Json::Str(value.to_owned()),
            },
            _ => Json::Str(value.to_owned()),
        };
        fields.push((key.to_owned(), json));
    }
    fields.push(("backup_id".into(), Json::Str(info.backup_id.to_string())));
    if let Some(t) = info.begin_time {
        fields.push(("begin_time_iso".into(), Json::Str(t.to_string().replacen(' ', "T", 1))));
    }
    if let Some(t) = info.end_time {
        fields.push(("end_time_iso".into(), Json::Str(t.to_string().replacen(' ', "T", 1))));
    }
    Ok(Json::Object(fields))
}

/// Python's `datetime.ctime()`: `Wed Nov 25 12:33:54 2026`, the day padded with a space.
fn ctime(t: crate::catalog::BarmanTimestamp) -> Option<String> {
    let d = t.datetime;
    let weekday = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"][usize::from(d.weekday().number_days_from_monday())];
    let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let month = months[usize::from(u8::from(d.month())) - 1];
    Some(format!("{weekday} {month} {:2} {:02}:{:02}:{:02} {}", d.day(), d.hour(), d.minute(), d.second(), d.year()))
}

/// A Python literal as `json` encodes it (tuples become lists, keys strings).
fn py_json(v: &PyValue) -> Json {
    match v {
        PyValue::None => Json::Null,
        PyValue::Bool(b) => Json::Bool(*b),
        PyValue::Int(n) => Json::int(*n),
        PyValue::Float(x) => Json::float(*x),
        PyValue::Str(s) => Json::Str(s.clone()),
        PyValue::List(items) | PyValue::Tuple(items) => Json::Array(items.iter().map(py_json).collect()),
        PyValue::Dict(items) => Json::Object(
            items
                .iter()
                .map(|(k, v)| {
                    let key = match k {
                        PyValue::Str(s) => s.clone(),
                        PyValue::None => "null".to_owned(),
                        PyValue::Bool(b) => b.to_string(),
                        other => other.to_string(),
                    };
                    (key, py_json(v))
                })
                .collect(),
        ),
    }
}

/// The configuration keys in the order of Barman's `ServerConfig.to_json()` (its `KEYS` list,
/// then `name`), as `commands/18-sync-info.txt` shows them.
const CONFIG_KEYS: [&str; 122] = [
    "active", "archiver", "archiver_batch_size", "autogenerate_manifest", "aws_check_object_lock", "aws_encryption",
    "aws_read_timeout", "aws_await_snapshots_timeout", "aws_snapshot_lock_mode", "aws_snapshot_lock_duration",
    "aws_snapshot_lock_cool_off_period", "aws_snapshot_lock_expiration_date", "aws_profile", "aws_region",
    "aws_sse_kms_key_id", "azure_credential", "azure_resource_group", "azure_subscription_id", "backup_compression",
    "backup_compression_format", "backup_compression_level", "backup_compression_location",
    "backup_compression_workers", "backup_directory", "backup_method", "backup_options", "bandwidth_limit",
    "basebackup_retry_sleep", "basebackup_retry_times", "basebackups_directory", "check_timeout",
    "cloud_delete_batch_size", "cloud_staging_directory", "cloud_staging_max_size", "cloud_upload_max_archive_size",
    "cloud_upload_min_chunk_size", "cloud_wal_archive_parallel", "cloud_wal_restore_parallel", "cluster",
    "compression", "compression_level", "conninfo", "custom_compression_filter", "custom_decompression_filter",
    "custom_compression_magic", "description", "disabled", "encryption", "encryption_key_id",
    "encryption_passphrase_command", "errors_directory", "forward_config_path", "gcp_project", "gcp_zone",
    "immediate_checkpoint", "incoming_wals_directory", "keepalive_interval", "last_backup_maximum_age",
    "last_backup_minimum_size", "last_wal_maximum_age", "combine_mode", "local_staging_path",
    "max_incoming_wals_queue", "minimum_redundancy", "network_compression", "parallel_jobs",
    "parallel_jobs_start_batch_period", "parallel_jobs_start_batch_size", "path_prefix", "post_archive_retry_script",
    "post_archive_script", "post_backup_retry_script", "post_backup_script", "post_delete_script",
    "post_delete_retry_script", "post_recovery_retry_script", "post_recovery_script", "post_wal_delete_script",
    "post_wal_delete_retry_script", "pre_archive_retry_script", "pre_archive_script", "pre_backup_retry_script",
    "pre_backup_script", "pre_delete_script", "pre_delete_retry_script", "pre_recovery_retry_script",
    "pre_recovery_script", "pre_wal_delete_script", "pre_wal_delete_retry_script", "primary_checkpoint_timeout",
    "primary_conninfo", "primary_ssh_command", "recovery_options", "recovery_staging_path", "create_slot",
    "retention_policy", "retention_policy_mode", "reuse_backup", "slot_name", "snapshot_disks",
    "snapshot_gcp_project", "snapshot_instance", "snapshot_provider", "snapshot_zone", "ssh_command", "staging_path",
    "staging_location", "streaming_archiver", "streaming_archiver_batch_size", "streaming_archiver_name",
    "streaming_backup_name", "streaming_conninfo", "streaming_wals_directory", "tablespace_bandwidth_limit",
    "wal_conninfo", "wal_retention_policy", "wal_streaming_conninfo", "wals_directory", "warehousepg_dbid",
    "worm_mode", "xlogdb_directory", "name",
];

/// The server's configuration as Barman's `ServerConfig.to_json()`: the values `show-servers`
/// gives, in Barman's key order, except where `to_json` differs from `str()` — option sets
/// as comma lists (`CsvOption.to_json`), intervals as `human_readable_timedelta` — and with
/// connection string passwords redacted.
pub fn config_json(cfg: &ServerConfig) -> Json {
    let values = crate::diagnostics::status::config_values(cfg);
    let interval = |i: Option<&crate::config::TimeInterval>| {
        Json::opt_str(i.map(|i| crate::output::human_duration(i.as_duration(), false)))
    };
    // The backup executors add `concurrent_backup` unless `exclusive_backup` is set (a
    // passive node has none).
    let mut backup_options = cfg.backup_options;
    if !cfg.is_passive() && !backup_options.exclusive_backup {
        backup_options.concurrent_backup = true;
    }
    let mut recovery = Vec::new();
    if cfg.recovery_options.get_wal {
        recovery.push("get-wal");
    }
    if cfg.recovery_options.delta_restore {
        recovery.push("delta-restore");
    }
    let fields = CONFIG_KEYS
        .iter()
        .map(|&key| {
            let value = match key {
                "backup_options" => Json::Str(backup_options.to_string()),
                "recovery_options" => Json::Str(recovery.join(",")),
                "last_backup_maximum_age" => interval(cfg.last_backup_maximum_age.as_ref()),
                "last_wal_maximum_age" => interval(cfg.last_wal_maximum_age.as_ref()),
                _ => values.get(key).map_or_else(|| unlisted_default(key), |v| Json::from_value(&v.to_json())),
            };
            let value = match value {
                Json::Str(s) => Json::Str(crate::output::redact_passwords(&s)),
                other => other,
            };
            (key.to_owned(), value)
        })
        .collect();
    Json::Object(fields)
}

/// Options barman-rs does not read (cloud uploads, a WarehousePG ID), with Barman's
/// defaults, so the document has every key a Barman node expects.
fn unlisted_default(key: &str) -> Json {
    match key {
        "aws_check_object_lock" => Json::Bool(false),
        "cloud_staging_directory" => Json::Str("/tmp/barman/cloud-staging".into()),
        "cloud_staging_max_size" => Json::int(32_212_254_720i64),
        "cloud_upload_max_archive_size" => Json::int(107_374_182_400i64),
        "cloud_wal_archive_parallel" | "cloud_wal_restore_parallel" => Json::int(0),
        _ => Json::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(name: &str) -> String {
        format!("{name}\t16777216\t1795609930.903503\tNone\n")
    }

    fn xlogdb(names: &[&str]) -> (Vec<u8>, Vec<usize>) {
        let mut bytes = Vec::new();
        let mut starts = Vec::new();
        for n in names {
            starts.push(bytes.len());
            bytes.extend_from_slice(line(n).as_bytes());
        }
        (bytes, starts)
    }

    const W: [&str; 4] =
        ["000000010000000000000004", "000000010000000000000005", "000000010000000000000006", "000000010000000000000007"];

    fn names(scan: &Scan) -> Vec<String> {
        scan.wals.iter().map(|e| e.name.to_string()).collect()
    }

    #[test]
    fn lists_wal_from_the_oldest_backup_and_points_at_the_last_line() {
        let (bytes, starts) = xlogdb(&W);
        let scan = scan_xlogdb(&bytes, &SyncPoint::default(), Some(W[1])).unwrap();
        assert_eq!(names(&scan), &W[1..]);
        assert_eq!((scan.last_position, scan.last_name.as_str()), (starts[3] as u64, W[3]));
        let empty = scan_xlogdb(b"", &SyncPoint::default(), None).unwrap();
        assert_eq!((empty.last_position, empty.last_name.as_str(), empty.wals.len()), (0, "", 0));
    }

    #[test]
    fn resumes_where_the_node_stopped_or_rereads_a_rewritten_file() {
        let (bytes, starts) = xlogdb(&W);
        let at = |wal: &str, pos: usize| SyncPoint { last_wal: Some(wal.into()), last_position: Some(pos as u64) };
        let scan = scan_xlogdb(&bytes, &at(W[2], starts[2]), None).unwrap();
        assert_eq!(names(&scan), &W[3..]);
        // Nothing new: the same point comes back.
        let scan = scan_xlogdb(&bytes, &at(W[3], starts[3]), None).unwrap();
        assert!(scan.wals.is_empty() && scan.last_position == starts[3] as u64);
        // A position that no longer holds the name: read from the start, filter by name.
        let scan = scan_xlogdb(&bytes, &at(W[1], 7), None).unwrap();
        assert_eq!(names(&scan), &W[2..]);
    }

    #[test]
    fn refuses_points_outside_the_file_with_barmans_messages() {
        let (bytes, _) = xlogdb(&W[1..]);
        let older = SyncPoint { last_wal: Some(W[0].into()), last_position: None };
        assert_eq!(
            scan_xlogdb(&bytes, &older, None).unwrap_err().to_string(),
            "last_wal '000000010000000000000004' is older than the first available wal '000000010000000000000005'"
        );
        let newer = SyncPoint { last_wal: Some("0000000100000000000000FF".into()), last_position: None };
        assert_eq!(
            scan_xlogdb(&bytes, &newer, None).unwrap_err().to_string(),
            "last_wal '0000000100000000000000FF' is newer than the last available wal  '000000010000000000000007'"
        );
    }

    #[test]
    fn backups_as_barmans_to_json() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../shared/reference/barman-samples/commands/18-sync-info.txt"
        ));
        let Ok(text) = text else { return };
        let sample = &text[text.find('{').unwrap()..=text.rfind('}').unwrap()];
        let doc: serde_json::Value = serde_json::from_str(sample).unwrap();
        let backup = &doc["backups"]["20261125T123353"];
        // Rebuild the backup.info from the sample, then render it back.
        let mut info = String::new();
        for (k, v) in backup.as_object().unwrap() {
            let value = match (k.as_str(), v) {
                ("backup_id" | "begin_time_iso" | "end_time_iso", _) => continue,
                ("begin_time" | "end_time", _) => backup[format!("{k}_iso")].as_str().unwrap().replacen('T', " ", 1),
                ("tablespaces", _) => "[('tbs1', 16384, '/tmp/bsample/tbs1')]".into(),
                ("copy_stats", _) => "{'copy_time': 2.235245, 'total_time': 2.235245}".into(),
                (_, serde_json::Value::Null) => "None".into(),
                (_, serde_json::Value::String(s)) => s.clone(),
                (_, other) => other.to_string(),
            };
            info.push_str(&format!("{k}={value}\n"));
        }
        let parsed = BackupInfo::parse("20261125T123353".parse().unwrap(), info.as_bytes()).unwrap();
        let rendered = backup_json(&parsed).unwrap().dumps(Some(4));
        let theirs = serde_json::to_string(&serde_json::from_str::<serde_json::Value>(&rendered).unwrap()).unwrap();
        assert_eq!(theirs, serde_json::to_string(backup).unwrap());
        let keys: Vec<&str> = rendered.lines().filter(|l| l.starts_with("    \"")).map(|l| l[5..].split('"').next().unwrap()).collect();
        let sample_keys: Vec<&str> = backup.as_object().unwrap().keys().map(String::as_str).collect();
        let mut sorted_sample = sample_keys.clone();
        sorted_sample.sort();
        let mut sorted_keys = keys.clone();
        sorted_keys.sort();
        assert_eq!(sorted_keys, sorted_sample);
        assert_eq!(&keys[keys.len() - 3..], ["backup_id", "begin_time_iso", "end_time_iso"]);
    }

    #[test]
    fn ctime_pads_the_day() {
        let t: crate::catalog::BarmanTimestamp = "2026-11-05 09:03:04.5+00:00".parse().unwrap();
        assert_eq!(ctime(t).unwrap(), "Thu Nov  5 09:03:04 2026");
    }

    #[test]
    fn configuration_in_barmans_order_and_forms() {
        let text = "[barman]\nbarman_home = /srv/barman\n\n[pg]\nconninfo = host=pg\nbackup_method = postgres\n\
                    streaming_archiver = on\nslot_name = barman\nlast_backup_maximum_age = 1 DAYS\n";
        let mut fs = crate::config::MemoryFs::new();
        fs.add("/etc/barman.conf", text);
        let cfg = crate::config::Config::load_with(&fs, std::path::Path::new("/etc/barman.conf"), None).unwrap();
        let Json::Object(fields) = config_json(cfg.server("pg").unwrap()) else { panic!() };
        let keys: Vec<&str> = fields.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, CONFIG_KEYS);
        let get = |k: &str| fields.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone()).unwrap();
        assert_eq!(get("backup_options"), Json::Str("concurrent_backup".into()));
        assert_eq!(get("recovery_options"), Json::Str(String::new()));
        assert_eq!(get("last_backup_maximum_age"), Json::Str("1 day".into()));
        assert_eq!(get("wals_directory"), Json::Str("/srv/barman/pg/wals".into()));
        assert_eq!(get("name"), Json::Str("pg".into()));
        assert_eq!(get("cloud_staging_directory"), Json::Str("/tmp/barman/cloud-staging".into()));
    }
}
