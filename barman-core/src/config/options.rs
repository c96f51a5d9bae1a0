//! The table of every option Barman 3.17 knows: name, scope, value kind and default.
//!
//! Transcribed from `ServerConfig.KEYS`, `BARMAN_KEYS`, `DEFAULTS`, `FIXED` and `PARSERS` in
//! Barman's `barman/config.py`, plus the global-only keys of `Config.validate_global_config`.
//! [`SERVER_OPTIONS`] keeps Barman's order on purpose: a server's options are computed in that
//! order, and a default such as `wals_directory = %(backup_directory)s/wals` may only refer to
//! options computed before it.

use super::values::{self, Parsed};

/// Where an option may be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Only in `[barman]`.
    Global,
    /// Only in a server section. Barman accepts it silently in `[barman]` but does not pass it
    /// on to servers.
    Server,
    /// In a server section, or in `[barman]` as a default for every server.
    GlobalAndServer,
}

/// How an option's text is parsed (each maps to one Barman parser).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Free text, no parser in Barman: an empty value means unset.
    Text,
    /// A directory path (Barman: free text; we refuse an empty one, see `mod.rs`).
    Directory,
    /// `parse_boolean`.
    Bool,
    /// Python `int`.
    Int,
    /// `parse_time_interval`.
    Interval,
    /// `parse_si_suffix`.
    Size,
    /// `parse_backup_method`.
    BackupMethod,
    /// `parse_backup_compression`.
    BackupCompression,
    /// `parse_backup_compression_format`.
    BackupCompressionFormat,
    /// `parse_backup_compression_location`.
    BackupCompressionLocation,
    /// `parse_compression`.
    Compression,
    /// `parse_compression_level`.
    CompressionLevel,
    /// `BackupOptions` CSV.
    BackupOptions,
    /// `RecoveryOptions` CSV.
    RecoveryOptions,
    /// `parse_reuse_backup`.
    ReuseBackup,
    /// `parse_create_slot`.
    CreateSlot,
    /// `parse_combine_mode`.
    CombineMode,
    /// `parse_encryption`.
    Encryption,
    /// `parse_staging_location`.
    StagingLocation,
    /// `parse_staging_path`.
    AbsolutePath,
    /// `parse_slot_name`.
    SlotName,
    /// `parse_snapshot_disks`.
    NameList,
}

/// One option of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptionSpec {
    /// Lowercase key.
    pub name: &'static str,
    /// Where it may be written.
    pub scope: Scope,
    /// How it is parsed.
    pub kind: Kind,
    /// Barman's default text, `%(name)s` referring to the server's earlier options.
    pub default: Option<&'static str>,
    /// Listed but not settable (Barman's `FIXED`): a written value is ignored.
    pub fixed: bool,
}

/// A parsed value of any [`Kind`].
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    Text(String),
    Bool(bool),
    Int(i64),
    Interval(values::TimeInterval),
    Size(u64),
    BackupMethod(values::BackupMethod),
    BackupCompression(values::BackupCompression),
    BackupCompressionFormat(values::BackupCompressionFormat),
    BackupCompressionLocation(values::BackupCompressionLocation),
    Compression(values::Compression),
    CompressionLevel(values::CompressionLevel),
    BackupOptions(values::BackupOptions),
    RecoveryOptions(values::RecoveryOptions),
    ReuseBackup(values::ReuseBackup),
    CreateSlot(values::CreateSlot),
    CombineMode(values::CombineMode),
    Encryption(values::Encryption),
    StagingLocation(values::StagingLocation),
    NameList(Vec<String>),
}

impl Value {
    /// The text Python's `str()` gives, used when a later option interpolates this one.
    pub(crate) fn python_text(&self, written: &str) -> String {
        match self {
            Value::Bool(true) => "True".to_owned(),
            Value::Bool(false) => "False".to_owned(),
            Value::Int(n) => n.to_string(),
            Value::Text(t) => t.clone(),
            _ => written.to_owned(),
        }
    }
}

impl Kind {
    /// Runs the parser. `Err` carries what was expected.
    pub(crate) fn parse(self, text: &str) -> Result<Parsed<Value>, String> {
        fn word<T: std::str::FromStr<Err = String>>(t: &str, f: fn(T) -> Value) -> Result<Parsed<Value>, String> {
            t.parse::<T>().map(|v| Parsed::Value(f(v)))
        }
        fn map<T>(p: Result<Parsed<T>, String>, f: fn(T) -> Value) -> Result<Parsed<Value>, String> {
            p.map(|p| match p {
                Parsed::Value(v) => Parsed::Value(f(v)),
                Parsed::Unset => Parsed::Unset,
                Parsed::Inherit => Parsed::Inherit,
            })
        }
        match self {
            Kind::Text if text.is_empty() => Ok(Parsed::Unset),
            Kind::Text => Ok(Parsed::Value(Value::Text(text.to_owned()))),
            Kind::Directory if text.is_empty() => Err("expected a directory path, not an empty value".to_owned()),
            Kind::Directory => Ok(Parsed::Value(Value::Text(text.to_owned()))),
            Kind::Bool => values::parse_bool(text).map(|b| Parsed::Value(Value::Bool(b))),
            Kind::Int => values::parse_int(text).map(|n| Parsed::Value(Value::Int(n))),
            Kind::Interval => map(values::parse_time_interval(text), Value::Interval),
            Kind::Size => map(values::parse_si_size(text), Value::Size),
            Kind::BackupMethod => word(text, Value::BackupMethod),
            Kind::BackupCompression => word(text, Value::BackupCompression),
            Kind::BackupCompressionFormat => word(text, Value::BackupCompressionFormat),
            Kind::BackupCompressionLocation => word(text, Value::BackupCompressionLocation),
            Kind::Compression => map(values::parse_compression(text), Value::Compression),
            Kind::CompressionLevel => map(values::parse_compression_level(text), Value::CompressionLevel),
            Kind::BackupOptions => values::parse_backup_options(text).map(|o| Parsed::Value(Value::BackupOptions(o))),
            Kind::RecoveryOptions => {
                values::parse_recovery_options(text).map(|o| Parsed::Value(Value::RecoveryOptions(o)))
            }
            Kind::ReuseBackup => word(text, Value::ReuseBackup),
            Kind::CreateSlot => word(text, Value::CreateSlot),
            Kind::CombineMode => word(text, Value::CombineMode),
            Kind::Encryption => map(values::parse_encryption(text), Value::Encryption),
            Kind::StagingLocation => {
                // Barman compares without lowercasing here.
                if text == "local" || text == "remote" {
                    word(text, Value::StagingLocation)
                } else {
                    Err("expected a staging location (one of: local, remote)".to_owned())
                }
            }
            Kind::AbsolutePath => values::parse_absolute_path(text).map(|p| Parsed::Value(Value::Text(p))),
            Kind::SlotName => values::parse_slot_name(text).map(|s| Parsed::Value(Value::Text(s))),
            Kind::NameList => values::parse_name_list(text).map(|l| Parsed::Value(Value::NameList(l))),
        }
    }
}

const fn opt(name: &'static str, scope: Scope, kind: Kind, default: Option<&'static str>) -> OptionSpec {
    OptionSpec { name, scope, kind, default, fixed: false }
}

use Kind as K;
use Scope::{GlobalAndServer as B, Server as S};

/// Options of the `[barman]` section only, with Barman's fallbacks (applied in `global.rs`).
pub const GLOBAL_OPTIONS: &[OptionSpec] = &[
    opt("barman_home", Scope::Global, K::Directory, None),
    opt("barman_lock_directory", Scope::Global, K::Directory, Some("%(barman_home)s")),
    opt("barman_user", Scope::Global, K::Text, Some("barman")),
    opt("config_changes_queue", Scope::Global, K::Text, Some("%(barman_home)s/cfg_changes.queue")),
    opt("configuration_files_directory", Scope::Global, K::Text, None),
    opt("lock_directory_cleanup", Scope::Global, K::Bool, Some("true")),
    opt("log_file", Scope::Global, K::Text, None),
    opt("log_level", Scope::Global, K::Text, Some("INFO")),
];

/// Every server option, in Barman's `ServerConfig.KEYS` order.
///
/// Scope follows `BARMAN_KEYS`, including its spelling mistake `keepalive_internval`: in
/// Barman 3.17 a `keepalive_interval` written in `[barman]` is accepted but not inherited, so
/// it is [`Scope::Server`] here too.
pub const SERVER_OPTIONS: &[OptionSpec] = &[
    opt("active", S, K::Bool, Some("true")),
    opt("archiver", B, K::Bool, Some("off")),
    opt("archiver_batch_size", B, K::Int, Some("0")),
    opt("autogenerate_manifest", B, K::Bool, Some("false")),
    opt("aws_await_snapshots_timeout", B, K::Int, Some("3600")),
    opt("aws_snapshot_lock_mode", B, K::Text, None),
    opt("aws_snapshot_lock_duration", B, K::Int, None),
    opt("aws_snapshot_lock_cool_off_period", B, K::Int, None),
    opt("aws_snapshot_lock_expiration_date", B, K::Text, None),
    opt("aws_profile", B, K::Text, None),
    opt("aws_region", B, K::Text, None),
    opt("azure_credential", B, K::Text, None),
    opt("azure_resource_group", B, K::Text, None),
    opt("azure_subscription_id", B, K::Text, None),
    opt("backup_compression", B, K::BackupCompression, None),
    opt("backup_compression_format", B, K::BackupCompressionFormat, None),
    opt("backup_compression_level", B, K::Int, None),
    opt("backup_compression_location", B, K::BackupCompressionLocation, None),
    opt("backup_compression_workers", B, K::Int, None),
    opt("backup_directory", S, K::Directory, Some("%(barman_home)s/%(name)s")),
    opt("backup_method", B, K::BackupMethod, Some("rsync")),
    opt("backup_options", B, K::BackupOptions, Some("")),
    opt("bandwidth_limit", B, K::Text, None),
    opt("basebackup_retry_sleep", B, K::Int, Some("30")),
    opt("basebackup_retry_times", B, K::Int, Some("0")),
    opt("basebackups_directory", S, K::Directory, Some("%(backup_directory)s/base")),
    opt("check_timeout", B, K::Int, Some("30")),
    opt("cluster", S, K::Text, Some("%(name)s")),
    opt("compression", B, K::Compression, None),
    opt("compression_level", B, K::CompressionLevel, Some("medium")),
    opt("conninfo", S, K::Text, None),
    opt("custom_compression_filter", B, K::Text, None),
    opt("custom_decompression_filter", B, K::Text, None),
    opt("custom_compression_magic", B, K::Text, None),
    opt("description", S, K::Text, None),
    OptionSpec { name: "disabled", scope: S, kind: K::Bool, default: Some("false"), fixed: true },
    opt("encryption", B, K::Encryption, Some("none")),
    opt("encryption_key_id", B, K::Text, None),
    opt("encryption_passphrase_command", B, K::Text, None),
    opt("errors_directory", S, K::Directory, Some("%(backup_directory)s/errors")),
    opt("forward_config_path", B, K::Bool, Some("false")),
    opt("gcp_project", B, K::Text, None),
    opt("gcp_zone", S, K::Text, None),
    opt("immediate_checkpoint", B, K::Bool, Some("false")),
    opt("incoming_wals_directory", S, K::Directory, Some("%(backup_directory)s/incoming")),
    opt("keepalive_interval", S, K::Int, Some("60")),
    opt("last_backup_maximum_age", B, K::Interval, None),
    opt("last_backup_minimum_size", B, K::Size, None),
    opt("last_wal_maximum_age", B, K::Interval, None),
    opt("combine_mode", B, K::CombineMode, Some("copy")),
    opt("local_staging_path", B, K::AbsolutePath, None),
    opt("max_incoming_wals_queue", B, K::Int, None),
    opt("minimum_redundancy", B, K::Text, Some("0")),
    opt("network_compression", B, K::Bool, Some("false")),
    opt("parallel_jobs", B, K::Int, Some("1")),
    opt("parallel_jobs_start_batch_period", B, K::Int, Some("1")),
    opt("parallel_jobs_start_batch_size", B, K::Int, Some("10")),
    opt("path_prefix", B, K::Text, None),
    opt("post_archive_retry_script", B, K::Text, None),
    opt("post_archive_script", B, K::Text, None),
    opt("post_backup_retry_script", B, K::Text, None),
    opt("post_backup_script", B, K::Text, None),
    opt("post_delete_script", B, K::Text, None),
    opt("post_delete_retry_script", B, K::Text, None),
    opt("post_recovery_retry_script", B, K::Text, None),
    opt("post_recovery_script", B, K::Text, None),
    opt("post_wal_delete_script", B, K::Text, None),
    opt("post_wal_delete_retry_script", B, K::Text, None),
    opt("pre_archive_retry_script", B, K::Text, None),
    opt("pre_archive_script", B, K::Text, None),
    opt("pre_backup_retry_script", B, K::Text, None),
    opt("pre_backup_script", B, K::Text, None),
    opt("pre_delete_script", B, K::Text, None),
    opt("pre_delete_retry_script", B, K::Text, None),
    opt("pre_recovery_retry_script", B, K::Text, None),
    opt("pre_recovery_script", B, K::Text, None),
    opt("pre_wal_delete_script", B, K::Text, None),
    opt("pre_wal_delete_retry_script", B, K::Text, None),
    opt("primary_checkpoint_timeout", S, K::Int, Some("0")),
    opt("primary_conninfo", S, K::Text, None),
    opt("primary_ssh_command", B, K::Text, None),
    opt("recovery_options", B, K::RecoveryOptions, Some("")),
    opt("recovery_staging_path", B, K::AbsolutePath, None),
    opt("create_slot", B, K::CreateSlot, Some("manual")),
    opt("retention_policy", B, K::Text, None),
    opt("retention_policy_mode", B, K::Text, Some("auto")),
    opt("reuse_backup", B, K::ReuseBackup, None),
    opt("slot_name", B, K::SlotName, None),
    opt("snapshot_disks", S, K::NameList, None),
    opt("snapshot_gcp_project", B, K::Text, None),
    opt("snapshot_instance", S, K::Text, None),
    opt("snapshot_provider", B, K::Text, None),
    opt("snapshot_zone", S, K::Text, None),
    opt("ssh_command", S, K::Text, None),
    opt("staging_path", B, K::AbsolutePath, None),
    opt("staging_location", B, K::StagingLocation, Some("local")),
    opt("streaming_archiver", B, K::Bool, Some("off")),
    opt("streaming_archiver_batch_size", B, K::Int, Some("0")),
    opt("streaming_archiver_name", B, K::Text, Some("barman_receive_wal")),
    opt("streaming_backup_name", B, K::Text, Some("barman_streaming_backup")),
    opt("streaming_conninfo", S, K::Text, Some("%(conninfo)s")),
    opt("streaming_wals_directory", S, K::Directory, Some("%(backup_directory)s/streaming")),
    opt("tablespace_bandwidth_limit", B, K::Text, None),
    opt("wal_conninfo", S, K::Text, None),
    opt("wal_retention_policy", B, K::Text, Some("main")),
    opt("wal_streaming_conninfo", S, K::Text, None),
    opt("wals_directory", S, K::Directory, Some("%(backup_directory)s/wals")),
    opt("worm_mode", B, K::Bool, Some("off")),
    opt("xlogdb_directory", B, K::Directory, Some("%(wals_directory)s")),
];

/// The option called `name` in either table.
pub fn find(name: &str) -> Option<&'static OptionSpec> {
    GLOBAL_OPTIONS.iter().chain(SERVER_OPTIONS).find(|o| o.name == name)
}

/// Whether `[barman]` may contain `key` without a warning (global keys and every server key).
pub fn allowed_in_global(key: &str) -> bool {
    find(key).is_some()
}

/// Whether a server section may contain `key` without a warning.
pub fn allowed_in_server(key: &str) -> bool {
    SERVER_OPTIONS.iter().any(|o| o.name == key)
}

/// Keys a model section may set (Barman's `ModelConfig.KEYS`): server keys except paths and hook
/// scripts, plus `model`.
pub fn allowed_in_model(key: &str) -> bool {
    if key == "model" {
        return true;
    }
    let path_or_hook = key.ends_with("_directory") || key.ends_with("_script");
    allowed_in_server(key) && !path_or_hook
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_lowercase_and_defaults_parse() {
        let mut seen = std::collections::BTreeSet::new();
        for o in GLOBAL_OPTIONS.iter().chain(SERVER_OPTIONS) {
            assert!(seen.insert(o.name), "duplicate {}", o.name);
            assert_eq!(o.name, o.name.to_lowercase());
            if let Some(d) = o.default {
                if !d.contains('%') {
                    assert!(o.kind.parse(d).is_ok(), "default of {} does not parse", o.name);
                }
            }
        }
        assert_eq!(SERVER_OPTIONS.len(), 109);
    }

    #[test]
    fn derived_defaults_only_refer_to_earlier_options() {
        for (i, o) in SERVER_OPTIONS.iter().enumerate() {
            let Some(d) = o.default else { continue };
            for name in ["backup_directory", "wals_directory", "conninfo"] {
                if d.contains(&format!("%({name})s")) {
                    let j = SERVER_OPTIONS.iter().position(|p| p.name == name).expect("listed");
                    assert!(j < i, "{} refers to later {name}", o.name);
                }
            }
        }
    }

    #[test]
    fn scopes() {
        assert!(allowed_in_global("log_level") && !allowed_in_server("log_level"));
        assert!(allowed_in_global("conninfo"));
        assert!(allowed_in_model("compression") && !allowed_in_model("wals_directory"));
        assert!(!allowed_in_model("pre_backup_script") && !allowed_in_server("model"));
    }
}
