//! `barman status` and `barman show-servers`, as data.
//!
//! [`status_rows`] gives Barman's `(key, description, message)` triples in its order
//! (`Server.status`, `FileWalArchiver.status`, `BackupManager.status`); [`show_values`] the
//! merged configuration and live facts of `Server.show`, each value keeping the Python type
//! Barman would print (so the console shows `True`/`None` and JSON `true`/`null`).

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use super::catalog_view::CatalogView;
use super::checks::{BUILT_IN, SUPPORTED_MAJORS};
use super::facts::LiveFacts;
use crate::config::{CompressionLevel, RetentionPolicy, ServerConfig};
use crate::output::{ctime, human_age, human_duration, pretty_size, python_timestamp};

/// One line of `status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusRow {
    /// The JSON key.
    pub key: &'static str,
    /// The console label.
    pub description: &'static str,
    /// The value, as Barman's `str()` makes it.
    pub message: String,
}

fn py_bool(b: bool) -> String {
    if b { "True" } else { "False" }.to_owned()
}

/// Barman's text of a retention policy (`RECOVERY WINDOW OF 7 DAYS`, `REDUNDANCY 2`).
fn policy_text(p: &RetentionPolicy) -> String {
    p.to_string()
}

/// The rows of `barman status` for one server, in Barman's order.
pub fn status_rows(cfg: &ServerConfig, live: &LiveFacts, catalog: &CatalogView) -> Vec<StatusRow> {
    let mut rows = Vec::new();
    let mut push = |key, description, message: String| rows.push(StatusRow { key, description, message });
    if let Some(d) = &cfg.description {
        push("description", "Description", d.clone());
    }
    push("active", "Active", py_bool(cfg.active));
    push("disabled", "Disabled", py_bool(cfg.disabled));
    push("active_model", "Active configuration model", cfg.active_model.clone().unwrap_or_else(|| "None".to_owned()));
    if !cfg.is_passive() {
        if let Some(pg) = &live.postgres {
            match &pg.server_txt_version {
                None => push("pg_version", "PostgreSQL version", "FAILED trying to get PostgreSQL version".to_owned()),
                Some(v) => {
                    push("pg_version", "PostgreSQL version", v.clone());
                    let state = if pg.is_in_recovery == Some(true) { "in archive recovery" } else { "in production" };
                    push("is_in_recovery", "Cluster state", state.to_owned());
                    if let Some(size) = pg.current_size {
                        push("current_size", "Current data size", pretty_size(size as f64));
                    }
                    if let Some(d) = pg.setting("data_directory").filter(|d| !d.is_empty()) {
                        push("data_directory", "PostgreSQL Data directory", d.to_owned());
                    }
                    if let Some(x) = &pg.current_xlog {
                        push("current_xlog", "Current WAL segment", x.clone());
                    }
                }
            }
            if cfg.archiver && pg.setting("archive_mode").is_some() {
                let cmd = pg.setting("archive_command").filter(|c| !c.is_empty());
                push(
                    "archive_command",
                    "PostgreSQL 'archive_command' setting",
                    cmd.map_or_else(|| "FAILED (please set it accordingly to documentation)".to_owned(), str::to_owned),
                );
                let stats = pg.archiver.clone().unwrap_or_default();
                let last = match (stats.get("last_archived_wal"), stats.last_archived_epoch) {
                    (Some(w), Some(t)) => format!("{w}, at {}", ctime(t)),
                    (Some(w), None) => w.to_owned(),
                    (None, _) => "No WAL segment shipped yet".to_owned(),
                };
                push("last_archived_wal", "Last archived WAL", last);
                if let Some(failed) = stats.get("failed_count") {
                    let mut text = failed.to_owned();
                    if failed.parse::<u64>().unwrap_or(0) > 0 {
                        text.push_str(&format!(
                            " ({} at {})",
                            stats.get("last_failed_wal").unwrap_or("None"),
                            stats.last_failed_epoch.map_or_else(|| "None".to_owned(), ctime)
                        ));
                    }
                    push("failed_count", "Failures of WAL archiver", text);
                }
                if let Some(rate) = stats.current_archived_wals_per_second.as_deref().and_then(|r| r.parse::<f64>().ok()) {
                    if rate != 0.0 {
                        push("server_archived_wals_per_hour", "Server WAL archiving rate", format!("{:.2}/hour", 3600.0 * rate));
                    }
                }
            }
        }
    }
    push("passive_node", "Passive node", py_bool(cfg.is_passive()));
    let retention = match &cfg.retention_policy {
        Some(p) => format!(
            "enforced (mode: {}, retention: {}, WAL retention: {})",
            cfg.retention_policy_mode,
            policy_text(p),
            cfg.wal_retention_policy.to_uppercase()
        ),
        None => "not enforced".to_owned(),
    };
    push("retention_policies", "Retention policies", retention);
    let done: Vec<_> = catalog.done().collect();
    push("backups_number", "No. of available backups", done.len().to_string());
    push("first_backup", "First available backup", done.first().map_or("None".to_owned(), |b| b.id.clone()));
    push("last_backup", "Last available backup", done.last().map_or("None".to_owned(), |b| b.id.clone()));
    let full = done.iter().filter(|b| b.is_full_kind()).count();
    let min = cfg.minimum_redundancy;
    let verdict = if full < min as usize { "FAILED" } else { "satisfied" };
    push("minimum_redundancy", "Minimum redundancy requirements", format!("{verdict} ({full}/{min})"));
    rows
}

/// A value of `show-servers`, keeping the Python type Barman would print.
#[derive(Debug, Clone, PartialEq)]
pub enum ShowValue {
    /// `None` / `null`.
    None,
    /// `True` / `true`.
    Bool(bool),
    /// A number.
    Int(i64),
    /// Text (also what Barman stringifies: reprs, datetimes, decimals).
    Text(String),
    /// A list of strings (`['a', 'b']` on the console).
    List(Vec<String>),
    /// A name → number map (`{'tbs1': 100}` on the console).
    Map(BTreeMap<String, i64>),
}

impl ShowValue {
    fn text(s: impl Into<String>) -> ShowValue {
        ShowValue::Text(s.into())
    }
    fn opt_text(s: Option<impl Into<String>>) -> ShowValue {
        s.map_or(ShowValue::None, |s| ShowValue::Text(s.into()))
    }
    fn opt_bool(b: Option<bool>) -> ShowValue {
        b.map_or(ShowValue::None, ShowValue::Bool)
    }
    fn opt_int(n: Option<i64>) -> ShowValue {
        n.map_or(ShowValue::None, ShowValue::Int)
    }

    /// Python's `str()` of the value, as the console prints it.
    pub fn python_str(&self) -> String {
        match self {
            ShowValue::None => "None".to_owned(),
            ShowValue::Bool(b) => py_bool(*b),
            ShowValue::Int(n) => n.to_string(),
            ShowValue::Text(s) => s.clone(),
            ShowValue::List(l) => format!("[{}]", l.iter().map(|s| py_repr(s)).collect::<Vec<_>>().join(", ")),
            ShowValue::Map(m) => {
                format!("{{{}}}", m.iter().map(|(k, v)| format!("{}: {v}", py_repr(k))).collect::<Vec<_>>().join(", "))
            }
        }
    }

    /// The JSON form.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match self {
            ShowValue::None => J::Null,
            ShowValue::Bool(b) => J::Bool(*b),
            ShowValue::Int(n) => J::from(*n),
            ShowValue::Text(s) => J::String(s.clone()),
            ShowValue::List(l) => J::Array(l.iter().map(|s| J::String(s.clone())).collect()),
            ShowValue::Map(m) => J::Object(m.iter().map(|(k, v)| (k.clone(), J::from(*v))).collect()),
        }
    }
}

/// Python's `repr()` of a string.
pub fn py_repr(s: &str) -> String {
    let quote = if s.contains('\'') && !s.contains('"') { '"' } else { '\'' };
    let mut out = String::from(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

/// Python's `str(timedelta)` for whole seconds: `1 day, 0:00:00`, `3:00:00`.
fn py_timedelta(secs: u64) -> String {
    let days = secs / 86_400;
    let rest = secs % 86_400;
    let clock = format!("{}:{:02}:{:02}", rest / 3600, (rest / 60) % 60, rest % 60);
    match days {
        0 => clock,
        1 => format!("1 day, {clock}"),
        n => format!("{n} days, {clock}"),
    }
}

fn path(p: &std::path::Path) -> ShowValue {
    ShowValue::text(p.display().to_string())
}

/// Every configuration option of `cfg` as Barman's `ServerConfig.to_json` gives it.
pub fn config_values(cfg: &ServerConfig) -> BTreeMap<String, ShowValue> {
    use ShowValue as V;
    let t = |s: &Option<String>| V::opt_text(s.clone());
    let d = |x: Option<String>| V::opt_text(x);
    let mut m: BTreeMap<String, ShowValue> = BTreeMap::new();
    let mut set = |k: &str, v: ShowValue| {
        m.insert(k.to_owned(), v);
    };
    set("active", V::Bool(cfg.active));
    set("archiver", V::Bool(cfg.archiver));
    set("archiver_batch_size", V::Int(cfg.archiver_batch_size));
    set("autogenerate_manifest", V::Bool(cfg.autogenerate_manifest));
    set("aws_await_snapshots_timeout", V::Int(cfg.aws_await_snapshots_timeout));
    set("aws_profile", t(&cfg.aws_profile));
    set("aws_region", t(&cfg.aws_region));
    set("aws_snapshot_lock_cool_off_period", V::opt_int(cfg.aws_snapshot_lock_cool_off_period));
    set("aws_snapshot_lock_duration", V::opt_int(cfg.aws_snapshot_lock_duration));
    set("aws_snapshot_lock_expiration_date", t(&cfg.aws_snapshot_lock_expiration_date));
    set("aws_snapshot_lock_mode", t(&cfg.aws_snapshot_lock_mode));
    set("azure_credential", t(&cfg.azure_credential));
    set("azure_resource_group", t(&cfg.azure_resource_group));
    set("azure_subscription_id", t(&cfg.azure_subscription_id));
    set("backup_compression", d(cfg.backup_compression.map(|x| x.to_string())));
    set("backup_compression_format", d(cfg.backup_compression_format.map(|x| x.to_string())));
    set("backup_compression_level", V::opt_int(cfg.backup_compression_level));
    set("backup_compression_location", d(cfg.backup_compression_location.map(|x| x.to_string())));
    set("backup_compression_workers", V::opt_int(cfg.backup_compression_workers));
    set("backup_directory", path(&cfg.backup_directory));
    set("backup_method", V::text(cfg.backup_method.to_string()));
    let mut opts: Vec<String> = cfg.backup_options.to_string().split(',').filter(|s| !s.is_empty()).map(py_repr).collect();
    opts.sort();
    set(
        "backup_options",
        V::text(if opts.is_empty() { "BackupOptions()".to_owned() } else { format!("BackupOptions({{{}}})", opts.join(", ")) }),
    );
    set("bandwidth_limit", V::opt_int(cfg.bandwidth_limit));
    set("basebackup_retry_sleep", V::Int(cfg.basebackup_retry_sleep));
    set("basebackup_retry_times", V::Int(cfg.basebackup_retry_times));
    set("basebackups_directory", path(&cfg.basebackups_directory));
    set("check_timeout", V::Int(cfg.check_timeout));
    set("cluster", t(&cfg.cluster));
    set("combine_mode", V::text(cfg.combine_mode.to_string()));
    set("compression", d(cfg.compression.map(|x| x.to_string())));
    set(
        "compression_level",
        match cfg.compression_level {
            None => V::None,
            Some(CompressionLevel::Level(n)) => V::Int(n),
            Some(l) => V::text(l.to_string()),
        },
    );
    set("conninfo", t(&cfg.conninfo));
    set("create_slot", V::text(cfg.create_slot.to_string()));
    set("custom_compression_filter", t(&cfg.custom_compression_filter));
    set("custom_compression_magic", t(&cfg.custom_compression_magic));
    set("custom_decompression_filter", t(&cfg.custom_decompression_filter));
    set("description", t(&cfg.description));
    set("disabled", V::Bool(cfg.disabled));
    set("encryption", d(cfg.encryption.map(|x| x.to_string())));
    set("encryption_key_id", t(&cfg.encryption_key_id));
    set("encryption_passphrase_command", t(&cfg.encryption_passphrase_command));
    set("errors_directory", path(&cfg.errors_directory));
    set("forward_config_path", V::Bool(cfg.forward_config_path));
    set("gcp_project", t(&cfg.gcp_project));
    set("gcp_zone", t(&cfg.gcp_zone));
    set("immediate_checkpoint", V::Bool(cfg.immediate_checkpoint));
    set("incoming_wals_directory", path(&cfg.incoming_wals_directory));
    set("keepalive_interval", V::Int(cfg.keepalive_interval));
    set(
        "last_backup_maximum_age",
        d(cfg.last_backup_maximum_age.map(|i| py_timedelta(i.as_duration().as_secs()))),
    );
    set("last_backup_minimum_size", V::opt_int(cfg.last_backup_minimum_size.and_then(|n| i64::try_from(n).ok())));
    set("last_wal_maximum_age", d(cfg.last_wal_maximum_age.map(|i| py_timedelta(i.as_duration().as_secs()))));
    set("local_staging_path", t(&cfg.local_staging_path));
    set("max_incoming_wals_queue", V::opt_int(cfg.max_incoming_wals_queue));
    set("minimum_redundancy", V::Int(i64::from(cfg.minimum_redundancy)));
    set("name", V::text(cfg.name.clone()));
    set("network_compression", V::Bool(cfg.network_compression));
    set("parallel_jobs", V::Int(cfg.parallel_jobs));
    set("parallel_jobs_start_batch_period", V::Int(cfg.parallel_jobs_start_batch_period));
    set("parallel_jobs_start_batch_size", V::Int(cfg.parallel_jobs_start_batch_size));
    set("path_prefix", t(&cfg.path_prefix));
    for (k, v) in [
        ("post_archive_retry_script", &cfg.post_archive_retry_script),
        ("post_archive_script", &cfg.post_archive_script),
        ("post_backup_retry_script", &cfg.post_backup_retry_script),
        ("post_backup_script", &cfg.post_backup_script),
        ("post_delete_retry_script", &cfg.post_delete_retry_script),
        ("post_delete_script", &cfg.post_delete_script),
        ("post_recovery_retry_script", &cfg.post_recovery_retry_script),
        ("post_recovery_script", &cfg.post_recovery_script),
        ("post_wal_delete_retry_script", &cfg.post_wal_delete_retry_script),
        ("post_wal_delete_script", &cfg.post_wal_delete_script),
        ("pre_archive_retry_script", &cfg.pre_archive_retry_script),
        ("pre_archive_script", &cfg.pre_archive_script),
        ("pre_backup_retry_script", &cfg.pre_backup_retry_script),
        ("pre_backup_script", &cfg.pre_backup_script),
        ("pre_delete_retry_script", &cfg.pre_delete_retry_script),
        ("pre_delete_script", &cfg.pre_delete_script),
        ("pre_recovery_retry_script", &cfg.pre_recovery_retry_script),
        ("pre_recovery_script", &cfg.pre_recovery_script),
        ("pre_wal_delete_retry_script", &cfg.pre_wal_delete_retry_script),
        ("pre_wal_delete_script", &cfg.pre_wal_delete_script),
    ] {
        set(k, t(v));
    }
    set("primary_checkpoint_timeout", V::Int(cfg.primary_checkpoint_timeout));
    set("primary_conninfo", t(&cfg.primary_conninfo));
    set("primary_ssh_command", t(&cfg.primary_ssh_command));
    let mut rec = Vec::new();
    if cfg.recovery_options.get_wal {
        rec.push(py_repr("get-wal"));
    }
    if cfg.recovery_options.delta_restore {
        rec.push(py_repr("delta-restore"));
    }
    rec.sort();
    set(
        "recovery_options",
        V::text(if rec.is_empty() { "RecoveryOptions()".to_owned() } else { format!("RecoveryOptions({{{}}})", rec.join(", ")) }),
    );
    set("recovery_staging_path", t(&cfg.recovery_staging_path));
    set("retention_policy", d(cfg.retention_policy.as_ref().map(policy_text)));
    set("retention_policy_mode", V::text(cfg.retention_policy_mode.clone()));
    set("reuse_backup", d(cfg.reuse_backup.map(|x| x.to_string())));
    set("slot_name", t(&cfg.slot_name));
    set("snapshot_disks", cfg.snapshot_disks.clone().map_or(V::None, V::List));
    set("snapshot_gcp_project", t(&cfg.snapshot_gcp_project));
    set("snapshot_instance", t(&cfg.snapshot_instance));
    set("snapshot_provider", t(&cfg.snapshot_provider));
    set("snapshot_zone", t(&cfg.snapshot_zone));
    set("ssh_command", t(&cfg.ssh_command));
    set("staging_location", V::text(cfg.staging_location.to_string()));
    set("staging_path", t(&cfg.staging_path));
    set("streaming_archiver", V::Bool(cfg.streaming_archiver));
    set("streaming_archiver_batch_size", V::Int(cfg.streaming_archiver_batch_size));
    set("streaming_archiver_name", t(&cfg.streaming_archiver_name));
    set("streaming_backup_name", t(&cfg.streaming_backup_name));
    set("streaming_conninfo", t(&cfg.streaming_conninfo));
    set("streaming_wals_directory", path(&cfg.streaming_wals_directory));
    set("tablespace_bandwidth_limit", cfg.tablespace_bandwidth_limit.clone().map_or(V::None, V::Map));
    set("wal_conninfo", t(&cfg.wal_conninfo));
    let wal_policy = if cfg.retention_policy.is_some() { cfg.wal_retention_policy.to_uppercase() } else { cfg.wal_retention_policy.clone() };
    set("wal_retention_policy", V::text(wal_policy));
    set("wal_streaming_conninfo", t(&cfg.wal_streaming_conninfo));
    set("wals_directory", path(&cfg.wals_directory));
    set("worm_mode", V::Bool(cfg.worm_mode));
    set("xlogdb_directory", path(&cfg.xlogdb_directory));
    m
}

/// Barman's `get_remote_status()` as key → value (postgres, streaming, archivers, executor).
pub fn remote_values(cfg: &ServerConfig, live: &LiveFacts) -> BTreeMap<String, ShowValue> {
    use ShowValue as V;
    let mut m: BTreeMap<String, ShowValue> = BTreeMap::new();
    if cfg.is_passive() {
        return m;
    }
    let mut set = |k: &str, v: ShowValue| {
        m.insert(k.to_owned(), v);
    };
    if let Some(pg) = &live.postgres {
        for k in [
            "data_directory",
            "wal_level",
            "hot_standby",
            "max_wal_senders",
            "data_checksums",
            "max_replication_slots",
            "wal_compression",
            "wal_keep_size",
        ] {
            set(k, V::opt_text(pg.setting(k)));
        }
        set("server_txt_version", V::opt_text(pg.server_txt_version.clone()));
        set("is_superuser", V::opt_bool(pg.is_superuser));
        set("is_in_recovery", V::opt_bool(pg.is_in_recovery));
        set("current_xlog", V::opt_text(pg.current_xlog.clone()));
        set("replication_slot_support", if pg.server_version.is_some() { V::Bool(true) } else { V::None });
        set(
            "replication_slot",
            pg.replication_slot.as_ref().map_or(V::None, |s| {
                V::text(format!(
                    "Record(slot_name={}, active={}, restart_lsn={})",
                    py_repr(&s.slot_name),
                    py_bool(s.active),
                    s.restart_lsn.as_deref().map_or("None".to_owned(), py_repr)
                ))
            }),
        );
        set("synchronous_standby_names", pg.synchronous_standby_names.clone().map_or(V::None, V::List));
        set("postgres_systemid", V::opt_text(pg.postgres_systemid.clone()));
        set("version_supported", V::opt_bool(pg.version_supported()));
        if pg.server_version.is_some() {
            set("has_backup_privileges", V::opt_bool(pg.has_backup_privileges));
            set("has_monitoring_privileges", V::opt_bool(pg.has_monitoring_privileges));
            set("current_lsn", V::opt_text(pg.current_lsn.clone()));
            set("current_size", V::opt_text(pg.current_size.map(|n| n.to_string())));
            set("archive_timeout", V::opt_int(pg.archive_timeout));
            set("checkpoint_timeout", V::opt_int(pg.checkpoint_timeout));
            set("xlog_segment_size", V::opt_int(pg.xlog_segment_size.and_then(|n| i64::try_from(n).ok())));
            for (k, v) in &pg.config_files {
                set(k, V::text(v.clone()));
            }
            if !pg.included_files.is_empty() {
                set("included_files", V::List(pg.included_files.clone()));
            }
        }
        if cfg.archiver {
            set("archive_mode", V::opt_text(pg.setting("archive_mode")));
            set("archive_command", V::opt_text(pg.setting("archive_command")));
            if let Some(a) = &pg.archiver {
                for (k, v) in &a.columns {
                    let value = match (k.as_str(), v) {
                        (_, None) => V::None,
                        ("archived_count" | "failed_count", Some(n)) => n.parse().map_or_else(|_| V::text(n.clone()), V::Int),
                        (k, Some(t)) if k.ends_with("_time") || k == "stats_reset" => V::text(python_timestamp(t)),
                        (_, Some(t)) => V::text(t.clone()),
                    };
                    set(k, value);
                }
                set("is_archiving", V::opt_bool(a.is_archiving));
                set("current_archived_wals_per_second", V::opt_text(a.current_archived_wals_per_second.clone()));
            }
        }
    }
    let streaming = live.streaming.clone();
    if let Some(s) = &streaming {
        set("connection_error", V::opt_text(s.connection_error.clone()));
        set("streaming_supported", V::opt_bool(s.streaming_supported));
        set("streaming", V::opt_bool(s.streaming));
        set("streaming_systemid", V::opt_text(s.streaming_systemid.clone()));
        set("timeline", V::opt_int(s.timeline.map(i64::from)));
        set("xlogpos", V::opt_text(s.xlogpos.clone()));
        set("version_supported", V::opt_bool(s.version_supported()));
    }
    let compatible = streaming.as_ref().and_then(|s| s.server_version).map(|v| SUPPORTED_MAJORS.contains(&(v / 10000)));
    if cfg.streaming_archiver {
        set("pg_receivexlog_installed", V::Bool(true));
        set("pg_receivexlog_path", V::text(BUILT_IN));
        set("pg_receivexlog_version", V::text(BUILT_IN));
        set("pg_receivexlog_compatible", V::opt_bool(compatible));
        set("pg_receivexlog_supports_slots", V::opt_bool(compatible));
        let sync = live.postgres.as_ref().and_then(|p| p.synchronous_standby_names.clone()).map(|names| {
            let me = cfg.streaming_archiver_name.clone().unwrap_or_default();
            names.iter().any(|n| n == "*" || *n == me)
        });
        set("pg_receivexlog_synchronous", V::opt_bool(compatible.and(sync)));
    }
    if cfg.backup_method == crate::config::BackupMethod::Postgres {
        set("pg_basebackup_installed", V::Bool(true));
        set("pg_basebackup_path", V::text(BUILT_IN));
        set("pg_basebackup_version", V::text(BUILT_IN));
        set("pg_basebackup_compatible", V::opt_bool(compatible));
        set("pg_basebackup_bwlimit", V::Bool(true));
        set("pg_basebackup_tbls_mapping", V::Bool(true));
    }
    m
}

/// Everything `show-servers` prints for one server (`Server.show`).
pub fn show_values(cfg: &ServerConfig, live: &LiveFacts, catalog: &CatalogView, now: SystemTime) -> BTreeMap<String, ShowValue> {
    let mut m = config_values(cfg);
    m.insert("passive_node".to_owned(), ShowValue::Bool(cfg.is_passive()));
    m.extend(remote_values(cfg, live));
    let age = match &cfg.last_backup_maximum_age {
        Some(max) => {
            let now = now.duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0);
            let limit = human_duration(max.as_duration(), false);
            match catalog.last_done().and_then(|b| b.end_time) {
                Some(end) if end >= now - max.as_duration().as_secs_f64() => {
                    format!("{limit} (latest backup: {} )", human_age(now - end))
                }
                Some(end) => format!("{limit} (WARNING! latest backup is {} old)", human_age(now - end)),
                None => format!("{limit} (WARNING! latest backup is No available backups old)"),
            }
        }
        None => "None".to_owned(),
    };
    m.insert("last_backup_maximum_age".to_owned(), ShowValue::Text(age));
    m.insert("active_model".to_owned(), ShowValue::opt_text(cfg.active_model.clone()));
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_reprs() {
        assert_eq!(py_repr("barman"), "'barman'");
        assert_eq!(py_repr("it's"), "\"it's\"");
        assert_eq!(ShowValue::List(vec![String::new()]).python_str(), "['']");
        assert_eq!(py_timedelta(86_400), "1 day, 0:00:00");
        assert_eq!(py_timedelta(3 * 3600), "3:00:00");
        assert_eq!(py_timedelta(14 * 86_400), "14 days, 0:00:00");
    }
}
