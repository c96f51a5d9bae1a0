//! Console and JSON renderings of `list-backups` and `show-backup`, after Barman's
//! `ConsoleOutputWriter.result_list_backup` / `render_show_backup` and the `JsonOutputWriter`
//! counterparts (`barman/output.py`). The data comes from [`crate::catalog::query`]; these
//! functions only format it (Python's `str()` of each value, `ctime()`, `pretty_size`,
//! `"{:.2%}"`), so the text is byte for byte what Barman prints.

use serde_json::{json, Map, Value};
use time::PrimitiveDateTime;

use super::{human_duration, pretty_size};
use crate::catalog::query::{instant, BackupDetails, BackupListing, RetentionStatus};
use crate::catalog::{BarmanTimestamp, BackupInfo, PyValue};

/// Python's `datetime.ctime()` of the wall-clock time as stored (`Wed Nov 25 12:33:56 2026`):
/// Barman prints `end_time` in the offset it was recorded with, not converted to local time.
pub fn ctime(t: PrimitiveDateTime) -> String {
    const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    format!(
        "{} {} {:>2} {:02}:{:02}:{:02} {}",
        DAYS[usize::from(t.weekday().number_days_from_monday())],
        MONTHS[usize::from(u8::from(t.month()) - 1)],
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.year()
    )
}

/// `str(int(timestamp(t)))`: the Unix time, as text, Barman's JSON puts next to dates.
fn epoch_text(t: BarmanTimestamp) -> String {
    instant(t).unix_timestamp().to_string()
}

/// Python's `str()` of an optional value: `None` when unset.
fn py<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(|| "None".to_owned(), |v| v.to_string())
}

/// Python's `"{:.2%}"`.
fn percent(ratio: f64) -> String {
    format!("{:.2}%", ratio * 100.0)
}

fn opt_json<T: Into<Value>>(v: Option<T>) -> Value {
    v.map_or(Value::Null, Into::into)
}

fn server_of<'a>(info: &'a BackupInfo, fallback: &'a str) -> &'a str {
    info.server_name.as_deref().unwrap_or(fallback)
}

/// The console line of one backup in `list-backups` (`server` names the configuration
/// section; Barman prints the backup.info's `server_name`, which is the same).
pub fn list_backup_console(server: &str, row: &BackupListing, minimal: bool) -> String {
    let info = &row.info;
    if minimal {
        return info.backup_id.to_string();
    }
    let mut line = format!("{} {}", server_of(info, server), info.backup_id);
    if let Some(name) = &info.backup_name {
        line.push_str(&format!(" '{name}'"));
    }
    let kind = crate::catalog::query::backup_type(info);
    line.push_str(&format!(" - {} - ", kind[..1].to_uppercase()));
    if info.status.is_copy_done() {
        line.push_str(&format!(
            "{} - Size: {} - WAL Size: {}",
            py(info.end_time.map(|t| ctime(t.datetime))),
            pretty_size(row.size_with_wals as f64),
            pretty_size(row.wal_size as f64)
        ));
        if info.status == crate::catalog::BackupStatus::WaitingForWals {
            line.push_str(" - WAITING_FOR_WALS");
        }
        if let Some(r) = row.retention.filter(|r| *r != RetentionStatus::None) {
            line.push_str(&format!(" - {}", r.as_str()));
        }
    } else {
        line.push_str(info.status.as_str());
    }
    line
}

/// The JSON item of one backup in `list-backups` (a bare ID with `--minimal`).
pub fn list_backup_json(row: &BackupListing, minimal: bool) -> Value {
    let info = &row.info;
    if minimal {
        return Value::String(info.backup_id.to_string());
    }
    let mut m = Map::new();
    m.insert("backup_id".into(), json!(info.backup_id.to_string()));
    if let Some(name) = &info.backup_name {
        m.insert("backup_name".into(), json!(name));
    }
    m.insert("backup_type".into(), json!(crate::catalog::query::backup_type(info)));
    m.insert("status".into(), json!(info.status.as_str()));
    if info.status.is_copy_done() {
        m.insert("end_time_timestamp".into(), opt_json(info.end_time.map(epoch_text)));
        m.insert("end_time".into(), opt_json(info.end_time.map(|t| ctime(t.datetime))));
        m.insert("size_bytes".into(), json!(row.size_with_wals));
        m.insert("wal_size_bytes".into(), json!(row.wal_size));
        m.insert("size".into(), json!(pretty_size(row.size_with_wals as f64)));
        m.insert("wal_size".into(), json!(pretty_size(row.wal_size as f64)));
        m.insert("retention_status".into(), json!(row.retention.unwrap_or(RetentionStatus::None).as_str()));
    }
    Value::Object(m)
}

const ROW_WIDTH: usize = 23;
const NESTED_WIDTH: usize = 21;

fn row(key: &str, value: impl std::fmt::Display) -> String {
    format!("  {key:<ROW_WIDTH$}: {value}")
}

fn nested(key: &str, value: impl std::fmt::Display) -> String {
    format!("    {key:<NESTED_WIDTH$}: {value}")
}

fn header(title: &str) -> String {
    format!("  {title}:")
}

/// What Barman's JSON writer adds under `wal_information` when other timelines fork from the
/// backup's (the odd spacing is Barman's: a string continued across source lines).
pub const TIMELINES_JSON_WARNING: &str = "WAL information is inaccurate                     due to multiple timelines interacting with                     this backup";

/// The console lines of `show-backup`.
pub fn show_backup_console(d: &BackupDetails) -> Vec<String> {
    let info = &d.info;
    let mut out = vec![format!("Backup {}:", info.backup_id)];
    // General.
    if let Some(name) = info.backup_name.as_deref().filter(|n| !n.is_empty()) {
        out.push(row("Backup Name", name));
    }
    out.push(row("Server Name", server_of(info, &d.server_name)));
    if let Some(systemid) = info.systemid {
        out.push(row("System Id", systemid));
    }
    out.push(row("Status", info.status));
    if info.status.is_copy_done() {
        out.push(row("PostgreSQL Version", py(info.version)));
        out.push(row("PGDATA directory", py(info.pgdata.as_deref())));
        if let Some(size) = info.cluster_size.filter(|s| *s > 0) {
            out.push(row("Estimated Cluster Size", pretty_size(size as f64)));
        }
    }
    out.push(String::new());
    // Server.
    let checksums = info.data_checksums.as_deref().filter(|s| !s.is_empty());
    let summarize = info.summarize_wal.as_deref().filter(|s| !s.is_empty());
    if checksums.is_some() || summarize.is_some() {
        out.push(header("Server information"));
        if let Some(c) = checksums {
            out.push(nested("Checksums", c));
        }
        if let Some(s) = summarize {
            out.push(nested("WAL summarizer", s));
        }
        out.push(String::new());
    }
    let Some(c) = &d.copy_done else {
        if let Some(error) = info.error.as_deref().filter(|e| !e.is_empty()) {
            out.push(row("Error", error));
        }
        return out;
    };
    // Tablespaces.
    if let Some(ts) = info.tablespaces.as_ref().filter(|t| !t.is_empty()) {
        out.push(header("Tablespaces"));
        for t in ts {
            out.push(nested(&t.name, format!("{} (oid: {})", t.location, t.oid)));
        }
        out.push(String::new());
    }
    // Base backup.
    let kind = d.backup_type();
    let mode = info.mode.as_deref();
    out.push(header("Base backup information"));
    if let Some(m) = mode.filter(|m| !m.is_empty()) {
        out.push(nested("Backup Method", m));
    }
    if let Some(e) = info.encryption.as_deref().filter(|e| !e.is_empty()) {
        out.push(nested("Encryption", e));
    }
    if mode == Some("postgres") {
        out.push(nested("Backup Type", kind));
    }
    let wal_size = c.wal.wal_size;
    if let Some(size) = info.deduplicated_size.filter(|s| *s > 0) {
        let mut text = pretty_size(size as f64);
        if wal_size > 0 {
            text.push_str(&format!(" ({} with WALs)", pretty_size((size + wal_size) as f64)));
        }
        out.push(nested("Backup Size", text));
    }
    if let Some(comp) = info.compression.as_deref().filter(|c| !c.is_empty() && *c != "none") {
        out.push(nested("Backup Compression", comp));
    }
    if wal_size > 0 {
        out.push(nested("WAL Size", pretty_size(wal_size as f64)));
    }
    if matches!(kind, "rsync" | "incremental") {
        out.push(nested(
            "Resources saved",
            format!("{} ({})", pretty_size(c.est_dedup_size), percent(c.deduplication_ratio)),
        ));
    }
    out.push(nested("Timeline", py(info.timeline.map(|t| t.0))));
    out.push(nested("Begin WAL", py(info.begin_wal)));
    out.push(nested("End WAL", py(info.end_wal)));
    if c.wal.wal_num > 0 {
        out.push(nested("Number of WALs", c.wal.wal_num));
    }
    if c.wal.compression_ratio > 0.0 {
        out.push(nested("WAL compression ratio", percent(c.wal.compression_ratio)));
    }
    out.push(nested("Begin time", py(info.begin_time)));
    out.push(nested("End time", py(info.end_time)));
    if let Some(copy_time) = c.copy_time {
        let mut text = human_duration(std::time::Duration::from_secs_f64(copy_time), false);
        if let Some(analysis) = c.analysis_time {
            text.push_str(&format!(" + {} startup", human_duration(std::time::Duration::from_secs_f64(analysis), false)));
        }
        out.push(nested("Copy time", text));
        if let Some(throughput) = c.estimated_throughput.filter(|t| *t != 0.0) {
            let mut text = format!("{}/s", pretty_size(throughput));
            if let Some(n) = c.number_of_workers {
                text.push_str(&format!(" ({} jobs)", PyNumber(n)));
            }
            out.push(nested("Estimated throughput", text));
        }
    }
    out.push(nested("Begin Offset", py(info.begin_offset)));
    out.push(nested("End Offset", py(info.end_offset)));
    out.push(nested("Begin LSN", py(info.begin_xlog)));
    out.push(nested("End LSN", py(info.end_xlog)));
    out.push(String::new());
    // WAL.
    out.push(header("WAL information"));
    out.push(nested("Number of files", c.wal.until_next_num));
    out.push(nested("Disk usage", pretty_size(c.wal.until_next_size as f64)));
    if c.wal.wals_per_second > 0.0 {
        out.push(nested("WAL rate", format!("{:.2}/hour", c.wal.wals_per_second * 3600.0)));
    }
    if c.wal.until_next_compression_ratio > 0.0 {
        out.push(nested("Compression ratio", percent(c.wal.until_next_compression_ratio)));
    }
    out.push(nested("Last available", py(c.wal.last.as_deref())));
    if !c.children_timelines.is_empty() {
        let tlis: Vec<String> = c.children_timelines.iter().map(|t| t.0.to_string()).collect();
        out.push(nested("Reachable timelines", tlis.join(", ")));
    }
    out.push(String::new());
    // Catalog.
    out.push(header("Catalog information"));
    out.push(nested("Retention Policy", c.retention.map_or("not enforced", RetentionStatus::as_str)));
    out.push(nested(
        "Previous Backup",
        c.previous.map_or_else(|| "- (this is the oldest base backup)".to_owned(), |b| b.to_string()),
    ));
    out.push(nested(
        "Next Backup",
        c.next.map_or_else(|| "- (this is the latest base backup)".to_owned(), |b| b.to_string()),
    ));
    if !c.children_timelines.is_empty() {
        out.push(String::new());
        out.push("WARNING: WAL information is inaccurate due to multiple timelines interacting with this backup".to_owned());
    }
    if kind == "incremental" {
        out.push(nested("Root Backup", c.root_backup_id));
        out.push(nested("Parent Backup", py(info.parent_backup_id)));
        out.push(nested("Backup chain size", c.chain_size));
    }
    if mode == Some("postgres") {
        if let Some(children) = &info.children_backup_ids {
            let ids: Vec<&str> = children.iter().map(|b| b.as_str()).collect();
            out.push(nested("Children Backup(s)", ids.join(",")));
        }
    }
    out
}

/// A number from `copy_stats` as Python prints it: `4` for an int, `2.5` for a float.
struct PyNumber(f64);

impl std::fmt::Display for PyNumber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.fract() == 0.0 && self.0.abs() < 1e15 {
            write!(f, "{}", self.0 as i64)
        } else {
            f.write_str(&crate::catalog::pyliteral::float_repr(self.0))
        }
    }
}

/// A `copy_stats` entry as JSON, keeping Python's int/float distinction.
fn copy_stat_json(info: &BackupInfo, key: &str, fallback: f64) -> Value {
    let raw = info.copy_stats.as_ref().and_then(|d| d.iter().find(|(k, _)| k.as_str() == Some(key)).map(|(_, v)| v));
    match raw {
        Some(PyValue::Int(i)) => i64::try_from(*i).map_or(Value::Null, Value::from),
        Some(PyValue::Float(f)) => json!(f),
        _ => json!(fallback),
    }
}

/// The JSON object of `show-backup` (put under the server's name).
pub fn show_backup_json(d: &BackupDetails) -> Value {
    let info = &d.info;
    let mut m = Map::new();
    m.insert("backup_id".into(), json!(info.backup_id.to_string()));
    m.insert("status".into(), json!(info.status.as_str()));
    if let Some(name) = info.backup_name.as_deref().filter(|n| !n.is_empty()) {
        m.insert("backup_name".into(), json!(name));
    }
    if let Some(systemid) = info.systemid {
        m.insert("system_id".into(), json!(systemid.to_string()));
    }
    m.insert(
        "server_information".into(),
        json!({"data_checksums": info.data_checksums, "summarize_wal": info.summarize_wal}),
    );
    let Some(c) = &d.copy_done else {
        if let Some(error) = info.error.as_deref().filter(|e| !e.is_empty()) {
            m.insert("error".into(), json!(error));
        }
        return Value::Object(m);
    };
    let kind = d.backup_type();
    m.insert("backup_type".into(), json!(kind));
    if let Some(size) = info.cluster_size.filter(|s| *s > 0) {
        m.insert("cluster_size".into(), json!(pretty_size(size as f64)));
        m.insert("cluster_size_bytes".into(), json!(size));
    }
    m.insert("postgresql_version".into(), opt_json(info.version));
    m.insert("pgdata_directory".into(), opt_json(info.pgdata.clone()));
    let tablespaces: Vec<Value> = info
        .tablespaces
        .iter()
        .flatten()
        .map(|t| json!({"name": t.name, "location": t.location, "oid": t.oid}))
        .collect();
    m.insert("tablespaces".into(), Value::Array(tablespaces));

    let dedup = info.deduplicated_size.unwrap_or(0);
    let wal_size = c.wal.wal_size;
    let mut base = Map::new();
    base.insert("backup_method".into(), opt_json(info.mode.clone()));
    base.insert("encryption".into(), opt_json(info.encryption.clone()));
    base.insert("compression".into(), opt_json(info.compression.clone()));
    base.insert("backup_size".into(), json!(pretty_size(dedup as f64)));
    base.insert("backup_size_bytes".into(), json!(dedup));
    base.insert("backup_size_with_wals".into(), json!(pretty_size((dedup + wal_size) as f64)));
    base.insert("backup_size_with_wals_bytes".into(), json!(dedup + wal_size));
    base.insert("wal_size".into(), json!(pretty_size(wal_size as f64)));
    base.insert("wal_size_bytes".into(), json!(wal_size));
    base.insert("timeline".into(), opt_json(info.timeline.map(|t| t.0)));
    base.insert("begin_wal".into(), opt_json(info.begin_wal.map(|w| w.to_string())));
    base.insert("end_wal".into(), opt_json(info.end_wal.map(|w| w.to_string())));
    base.insert("wal_num".into(), json!(c.wal.wal_num));
    base.insert("begin_time_timestamp".into(), opt_json(info.begin_time.map(epoch_text)));
    base.insert("begin_time".into(), opt_json(info.begin_time.map(|t| t.to_string())));
    base.insert("end_time_timestamp".into(), opt_json(info.end_time.map(epoch_text)));
    base.insert("end_time".into(), opt_json(info.end_time.map(|t| t.to_string())));
    base.insert("begin_offset".into(), opt_json(info.begin_offset));
    base.insert("end_offset".into(), opt_json(info.end_offset));
    base.insert("begin_lsn".into(), opt_json(info.begin_xlog.map(|l| l.to_string())));
    base.insert("end_lsn".into(), opt_json(info.end_xlog.map(|l| l.to_string())));
    if matches!(kind, "rsync" | "incremental") {
        base.insert("resources_saved".into(), json!(pretty_size(c.est_dedup_size)));
        base.insert("resources_saved_bytes".into(), json!(c.est_dedup_size as i64));
        base.insert("resources_saved_percentage".into(), json!(percent(c.deduplication_ratio)));
    }
    if c.wal.compression_ratio > 0.0 {
        base.insert("wal_compression_ratio".into(), json!(percent(c.wal.compression_ratio)));
    }
    if let Some(copy_time) = c.copy_time {
        base.insert("copy_time".into(), json!(human_duration(std::time::Duration::from_secs_f64(copy_time), false)));
        base.insert("copy_time_seconds".into(), copy_stat_json(info, "copy_time", copy_time));
        if let Some(analysis) = c.analysis_time {
            base.insert("analysis_time".into(), json!(human_duration(std::time::Duration::from_secs_f64(analysis), false)));
            base.insert("analysis_time_seconds".into(), copy_stat_json(info, "analysis_time", analysis));
        }
        let throughput = c.estimated_throughput.unwrap_or(dedup as f64 / copy_time);
        base.insert("throughput".into(), json!(format!("{}/s", pretty_size(throughput))));
        base.insert("throughput_bytes".into(), json!(throughput as i64));
        let workers = match c.number_of_workers {
            Some(_) => copy_stat_json(info, "number_of_workers", 1.0),
            None => json!(1),
        };
        base.insert("number_of_workers".into(), workers);
    }
    m.insert("base_backup_information".into(), Value::Object(base));

    let mut catalog = Map::new();
    catalog.insert("retention_policy".into(), json!(c.retention.map_or("not enforced", RetentionStatus::as_str)));
    catalog.insert(
        "previous_backup".into(),
        json!(c.previous.map_or_else(|| "- (this is the oldest base backup)".to_owned(), |b| b.to_string())),
    );
    catalog.insert(
        "next_backup".into(),
        json!(c.next.map_or_else(|| "- (this is the latest base backup)".to_owned(), |b| b.to_string())),
    );
    if kind == "incremental" {
        catalog.insert("root_backup_id".into(), json!(c.root_backup_id.to_string()));
        catalog.insert("parent_backup_id".into(), opt_json(info.parent_backup_id.map(|p| p.to_string())));
        catalog.insert("chain_size".into(), json!(c.chain_size));
    }
    if info.mode.as_deref() == Some("postgres") {
        let children = info
            .children_backup_ids
            .as_ref()
            .map(|ids| Value::Array(ids.iter().map(|i| json!(i.to_string())).collect()));
        catalog.insert("children_backup_ids".into(), children.unwrap_or(Value::Null));
    }
    m.insert("catalog_information".into(), Value::Object(catalog));

    let mut wal = Map::new();
    wal.insert("no_of_files".into(), json!(c.wal.until_next_num));
    wal.insert("disk_usage".into(), json!(pretty_size(c.wal.until_next_size as f64)));
    wal.insert("disk_usage_bytes".into(), json!(c.wal.until_next_size));
    wal.insert("wal_rate".into(), json!(0));
    wal.insert("wal_rate_per_second".into(), json!(0));
    wal.insert("compression_ratio".into(), json!(0));
    wal.insert("last_available".into(), opt_json(c.wal.last.clone()));
    if c.wal.wals_per_second > 0.0 {
        wal.insert("wal_rate".into(), json!(format!("{:.2}/hour", c.wal.wals_per_second * 3600.0)));
        wal.insert("wal_rate_per_second".into(), json!(c.wal.wals_per_second));
    }
    if c.wal.until_next_compression_ratio > 0.0 {
        wal.insert("compression_ratio".into(), json!(percent(c.wal.until_next_compression_ratio)));
    }
    let timelines: Vec<Value> = c.children_timelines.iter().map(|t| json!(t.0.to_string())).collect();
    if !timelines.is_empty() {
        wal.insert("_WARNING".into(), json!(TIMELINES_JSON_WARNING));
    }
    wal.insert("timelines".into(), Value::Array(timelines));
    m.insert("wal_information".into(), Value::Object(wal));
    Value::Object(m)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::{Path, PathBuf};

    use super::*;
    use crate::catalog::query::{BackupCatalog, RetentionStatus};
    use crate::catalog::{xlogdb, BackupId, BackupSelector, ServerCatalog, XlogDbEntry};
    use crate::compression::WalCompression;
    use crate::config::{RetentionPolicy, WindowUnit};
    use crate::output::python_json;

    fn testdata() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/catalog")
    }

    /// The output of a sample command file: without the `$ barman …` line and the
    /// `[exit code: N]` trailer the capture added.
    fn sample(name: &str) -> String {
        let text = std::fs::read_to_string(testdata().join("output").join(name)).unwrap();
        let body = text.split_once('\n').unwrap().1;
        body.rsplit_once("[exit code: ").unwrap().0.to_owned()
    }

    const PLAIN_FIRST: &str = "20261125T123210-backup.info.plain-first";
    const GZIP_KEPT: &str = "20261125T123233-backup.info.gzip-kept";
    const ZSTD_TAR: &str = "20261125T123345-backup.info.zstd-tar";
    const NAMED: &str = "20261125T123353-backup.info.named-plain";
    const PLAIN: &str = "20261125T123610-backup.info.plain";
    const FAILED: &str = "20261125T123714-backup.info.failed";

    /// The WAL of the first backup, deleted with it before any xlog.db sample was taken;
    /// the mtime of `…04` is the one Barman's WAL rate of that backup implies.
    const FIRST_WAL: &str = "000000010000000000000004\t16777216\t1795609930.903503\tNone\tNone\n\
        000000010000000000000004.00000028.backup\t338\t1795609930.91\tNone\tNone\n\
        000000010000000000000005\t16777216\t1795609990.5\tNone\tNone\n";

    struct Site {
        _dir: tempfile::TempDir,
        catalog: BackupCatalog,
        xlog: Vec<XlogDbEntry>,
    }

    /// A catalog of the sample backups `infos`, `keep` annotations, and xlog.db `xlog` (with
    /// timeline 2's history file when `xlog` lists it).
    fn site(infos: &[&str], keep: &[(&str, &str)], xlog: &str) -> Site {
        let dir = tempfile::tempdir().unwrap();
        let server = ServerCatalog::new("pg", dir.path().join("pg"), dir.path());
        server.create_skeleton().unwrap();
        for name in infos {
            let id: BackupId = name[..15].parse().unwrap();
            std::fs::copy(testdata().join(name), server.backup_info_path(id)).unwrap();
        }
        for (id, target) in keep {
            std::fs::write(server.keep_path(id.parse().unwrap()), target).unwrap();
        }
        if xlog.contains("00000002.history") {
            // Stored uncompressed here (Barman's is zstd): the reader goes by magic bytes.
            std::fs::copy(testdata().join("00000002.history.uncompressed"), server.wals_directory().join("00000002.history")).unwrap();
        }
        let (catalog, problems) = BackupCatalog::load(&server).unwrap();
        assert!(problems.is_empty(), "{problems:?}");
        Site { _dir: dir, catalog, xlog: xlogdb::parse(xlog.as_bytes()).unwrap() }
    }

    fn xlog_sample(name: &str) -> String {
        std::fs::read_to_string(testdata().join(name)).unwrap()
    }

    /// The xlog.db when the first four backups existed (before the WAL of 20261125T123610).
    fn early_xlog() -> String {
        let lines: Vec<&str> = include_str!("../../testdata/catalog/pg-xlog.db").lines().take(8).collect();
        format!("{FIRST_WAL}{}\n", lines.join("\n"))
    }

    /// The sample configuration's `RECOVERY WINDOW OF 7 DAYS`, seen minutes after the run.
    fn report(s: &Site) -> BTreeMap<BackupId, RetentionStatus> {
        let now = time::macros::datetime!(2026-11-25 12:40:00 UTC);
        let policy = RetentionPolicy::RecoveryWindow { count: 7, unit: WindowUnit::Days };
        s.catalog.retention_report(policy, 1, now).unwrap()
    }

    fn list_console(s: &Site, minimal: bool) -> String {
        let r = report(s);
        s.catalog.listing(&s.xlog, Some(&r)).iter().map(|row| list_backup_console("pg", row, minimal) + "\n").collect()
    }

    fn list_json(s: &Site) -> String {
        let r = report(s);
        let rows: Vec<Value> = s.catalog.listing(&s.xlog, Some(&r)).iter().map(|row| list_backup_json(row, false)).collect();
        python_json(&json!({ "pg": rows }))
    }

    fn details(s: &Site, selector: &str) -> BackupDetails {
        let selector: BackupSelector = selector.parse().unwrap();
        let id = s.catalog.resolve(&selector).unwrap().backup_id;
        let r = report(s);
        s.catalog.details(id, "pg", &s.xlog, Some(&r), &WalCompression::none()).unwrap()
    }

    fn show_console(s: &Site, selector: &str) -> String {
        show_backup_console(&details(s, selector)).iter().map(|l| format!("{l}\n")).collect()
    }

    fn show_json(s: &Site, selector: &str) -> String {
        python_json(&json!({ "pg": show_backup_json(&details(s, selector)) }))
    }

    #[test]
    fn list_backups_like_barman() {
        let first = site(&[PLAIN_FIRST, GZIP_KEPT, ZSTD_TAR, NAMED], &[("20261125T123233", "standalone")], &early_xlog());
        assert_eq!(list_console(&first, false), sample("14-list-backups.txt"));
        assert_eq!(list_console(&first, true), sample("14-list-backups-minimal.txt"));
        assert_eq!(list_json(&first), sample("14-list-backups-json.txt"));

        let full = xlog_sample("pg-xlog.db");
        let without_f: String = full.lines().filter(|l| !l.starts_with("00000001000000000000000F")).map(|l| format!("{l}\n")).collect();
        let later = site(&[GZIP_KEPT, ZSTD_TAR, NAMED, PLAIN], &[("20261125T123233", "standalone")], &without_f);
        assert_eq!(list_console(&later, false), sample("28b-list-backups.txt"));

        let failed = site(&[GZIP_KEPT, ZSTD_TAR, NAMED, PLAIN, FAILED], &[("20261125T123233", "standalone")], &full);
        assert_eq!(list_console(&failed, false), sample("34b-list-backups-with-failed.txt"));

        let last = site(&[GZIP_KEPT, NAMED, PLAIN], &[("20261125T123233", "standalone")], &full);
        assert_eq!(list_console(&last, false), sample("36-list-backups-final.txt"));
        assert_eq!(list_json(&last), sample("36-list-backups-final-json.txt"));
        let kept = site(&[GZIP_KEPT, NAMED, PLAIN], &[("20261125T123233", "standalone"), ("20261125T123353", "full")], &full);
        assert_eq!(list_console(&kept, false), sample("38c-list-backups-keep-full.txt"));
    }

    #[test]
    fn show_backup_like_barman() {
        let s = site(&[PLAIN_FIRST, GZIP_KEPT, ZSTD_TAR, NAMED], &[("20261125T123233", "standalone")], &early_xlog());
        assert_eq!(show_console(&s, "20261125T123210"), sample("15-show-backup-plain.txt"));
        assert_eq!(show_json(&s, "20261125T123210"), sample("15-show-backup-plain-json.txt"));
        assert_eq!(show_console(&s, "20261125T123233"), sample("15-show-backup-gzip-kept.txt"));
        assert_eq!(show_console(&s, "20261125T123345"), sample("15-show-backup-zstd-tar.txt"));
        assert_eq!(show_console(&s, "before-upgrade"), sample("15-show-backup-named.txt"));
        assert_eq!(show_json(&s, "before-upgrade"), sample("15-show-backup-named-json.txt"));

        // After the first backup was deleted and timeline 2 appeared.
        let later = site(&[GZIP_KEPT, NAMED, PLAIN, FAILED], &[("20261125T123233", "standalone")], &xlog_sample("pg-xlog.db.final"));
        assert_eq!(show_console(&later, "oldest"), sample("43e-show-backup-shortcuts.txt"));
        assert_eq!(show_console(&later, "last-failed"), sample("34c-show-backup-failed.txt"));
        let json = show_json(&later, "oldest");
        assert!(json.contains(&format!("\"_WARNING\": \"{TIMELINES_JSON_WARNING}\"")), "{json}");
        assert!(json.contains("\"timelines\": [\"2\"]"), "{json}");
        assert_eq!(
            show_json(&later, "last-failed"),
            r#"{"pg": {"backup_id": "20261125T123714", "error": "failure starting backup (Abort 'pre_backup_retry_script' retry hook script (/etc/barman-sample/hooks/abort63.sh, exit code: 63))", "server_information": {"data_checksums": null, "summarize_wal": null}, "status": "FAILED", "system_id": "7712085579849293106"}}"#
        );
    }

    #[test]
    fn without_retention_policy_and_waiting_for_wals() {
        let s = site(&[PLAIN_FIRST, GZIP_KEPT], &[("20261125T123233", "standalone")], &early_xlog());
        // No policy: nothing in the list, "not enforced" in show-backup, "-" in JSON.
        let rows = s.catalog.listing(&s.xlog, None);
        assert!(list_backup_console("pg", &rows[0], false).ends_with("WAL Size: 3.2 MiB"), "no next backup: all the WAL after it");
        assert_eq!(list_backup_json(&rows[0], false)["retention_status"], "-");
        let d = s.catalog.details("20261125T123233".parse().unwrap(), "pg", &s.xlog, None, &WalCompression::none()).unwrap();
        assert!(show_backup_console(&d).contains(&"    Retention Policy     : not enforced".to_owned()));
        assert_eq!(show_backup_json(&d)["catalog_information"]["retention_policy"], "not enforced");

        let mut waiting = s.catalog.backups()[1].clone();
        waiting.status = crate::catalog::BackupStatus::WaitingForWals;
        let cat = BackupCatalog::from_backups(s.catalog.server().clone(), vec![s.catalog.backups()[0].clone(), waiting]);
        let r = report(&Site { _dir: tempfile::tempdir().unwrap(), catalog: cat.clone(), xlog: vec![] });
        let rows = cat.listing(&s.xlog, Some(&r));
        assert_eq!(
            list_backup_console("pg", &rows[0], false),
            "pg 20261125T123233 - F - Wed Nov 25 12:33:31 2026 - Size: 21.6 MiB - WAL Size: 3.2 MiB - WAITING_FOR_WALS"
        );
        // A WAITING_FOR_WALS backup is not DONE: retention says "-", and it is still a
        // neighbour (its copy is done).
        let d = cat.details("20261125T123233".parse().unwrap(), "pg", &s.xlog, Some(&r), &WalCompression::none()).unwrap();
        assert_eq!(d.copy_done.as_ref().unwrap().retention, Some(RetentionStatus::None));
        assert_eq!(cat.next("20261125T123210".parse().unwrap()).unwrap().backup_id.as_str(), "20261125T123233");
    }

    #[test]
    fn ctime_pads_the_day() {
        assert_eq!(ctime(time::macros::datetime!(2026-03-01 09:05:07)), "Sun Mar  1 09:05:07 2026");
    }
}
