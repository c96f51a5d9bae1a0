//! One server's settings: how each option is looked up, and the typed result.
//!
//! Lookup order for every option, as `ServerConfig.__init__` in Barman's `config.py`:
//!
//! 1. the server's own section;
//! 2. `[barman]`, if the option has [`Scope::GlobalAndServer`];
//! 3. the default of [`SERVER_OPTIONS`], whose `%(name)s` refers to the server name, the
//!    global `barman_home`, or an option computed earlier.
//!
//! Then the server's active model, if any, replaces the options it sets (see [`super::models`]).
//!
//! A value that its parser refuses is *ignored with a warning* and the search goes on (so a bad
//! `compression` in `[pg]` falls back to `[barman]`'s): that is Barman's behaviour and a bad value
//! never stops other servers from working. An empty value (or the literal `None`) stops the
//! search and leaves the option unset for free-text options; a few parsers (time intervals,
//! sizes, `encryption = none`) treat it as "not written" instead.
//!
//! After that, `ServerConfig::apply_server_rules` performs the checks Barman's `Server.__init__`
//! makes from configuration alone (`local-rsync` with an `ssh_command`, missing `conninfo`,
//! streaming-only without `slot_name`, forcing `archiver = on`, `minimum_redundancy`, bandwidth
//! limits, retention policies).
//! Those that Barman reports in `barman check` go to [`ServerConfig::messages`] and disable the
//! server; the others are warnings.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use super::ini::Location;
use super::options::{Kind, Scope, Value, SERVER_OPTIONS};
use super::values::{
    BackupCompression, BackupCompressionFormat, BackupCompressionLocation, BackupMethod, BackupOptions,
    CombineMode, Compression, CompressionLevel, CreateSlot, Encryption, RecoveryOptions, RetentionPolicy,
    ReuseBackup, StagingLocation, TimeInterval,
};
use super::ConfigWarning;

/// Where an effective value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Written in the server's section.
    Server(Location),
    /// Inherited from `[barman]`.
    Global(Location),
    /// Barman's default.
    Default,
    /// Put in place by the server's active model (see [`super::models`]).
    Model {
        /// The model.
        model: String,
        /// Where the model writes it.
        location: Location,
    },
}

/// One option after lookup: the typed value (`None` = unset) and its origin.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Setting {
    pub(crate) value: Option<Value>,
    pub(crate) source: Source,
}

/// Every option of one server, typed. Field names are Barman's option names.
///
/// Options Barman keeps as free text are `Option<String>`; options with a default are plain
/// values. Directories are absolute or relative exactly as written (Barman does not resolve
/// them either).
#[derive(Debug, Clone, PartialEq)]
#[allow(missing_docs)] // each field is the Barman option of the same name (see `man 5 barman`)
pub struct ServerConfig {
    pub name: String,
    pub active: bool,
    pub archiver: bool,
    pub archiver_batch_size: i64,
    pub autogenerate_manifest: bool,
    pub aws_await_snapshots_timeout: i64,
    pub aws_snapshot_lock_mode: Option<String>,
    pub aws_snapshot_lock_duration: Option<i64>,
    pub aws_snapshot_lock_cool_off_period: Option<i64>,
    pub aws_snapshot_lock_expiration_date: Option<String>,
    pub aws_profile: Option<String>,
    pub aws_region: Option<String>,
    pub azure_credential: Option<String>,
    pub azure_resource_group: Option<String>,
    pub azure_subscription_id: Option<String>,
    pub backup_compression: Option<BackupCompression>,
    pub backup_compression_format: Option<BackupCompressionFormat>,
    pub backup_compression_level: Option<i64>,
    pub backup_compression_location: Option<BackupCompressionLocation>,
    pub backup_compression_workers: Option<i64>,
    pub backup_directory: PathBuf,
    pub backup_method: BackupMethod,
    pub backup_options: BackupOptions,
    /// kbps; `None` = unlimited (an invalid value falls back to unlimited, as in Barman).
    pub bandwidth_limit: Option<i64>,
    pub basebackup_retry_sleep: i64,
    pub basebackup_retry_times: i64,
    pub basebackups_directory: PathBuf,
    pub check_timeout: i64,
    pub cluster: Option<String>,
    pub compression: Option<Compression>,
    pub compression_level: Option<CompressionLevel>,
    pub conninfo: Option<String>,
    pub custom_compression_filter: Option<String>,
    pub custom_decompression_filter: Option<String>,
    pub custom_compression_magic: Option<String>,
    pub description: Option<String>,
    /// Not settable: true when configuration problems disabled the server (see `messages`).
    pub disabled: bool,
    pub encryption: Option<Encryption>,
    pub encryption_key_id: Option<String>,
    pub encryption_passphrase_command: Option<String>,
    pub errors_directory: PathBuf,
    pub forward_config_path: bool,
    pub gcp_project: Option<String>,
    pub gcp_zone: Option<String>,
    pub immediate_checkpoint: bool,
    pub incoming_wals_directory: PathBuf,
    pub keepalive_interval: i64,
    pub last_backup_maximum_age: Option<TimeInterval>,
    /// Bytes.
    pub last_backup_minimum_size: Option<u64>,
    pub last_wal_maximum_age: Option<TimeInterval>,
    pub combine_mode: CombineMode,
    pub local_staging_path: Option<String>,
    pub max_incoming_wals_queue: Option<i64>,
    pub minimum_redundancy: u32,
    pub network_compression: bool,
    pub parallel_jobs: i64,
    pub parallel_jobs_start_batch_period: i64,
    pub parallel_jobs_start_batch_size: i64,
    pub path_prefix: Option<String>,
    pub post_archive_retry_script: Option<String>,
    pub post_archive_script: Option<String>,
    pub post_backup_retry_script: Option<String>,
    pub post_backup_script: Option<String>,
    pub post_delete_script: Option<String>,
    pub post_delete_retry_script: Option<String>,
    pub post_recovery_retry_script: Option<String>,
    pub post_recovery_script: Option<String>,
    pub post_wal_delete_script: Option<String>,
    pub post_wal_delete_retry_script: Option<String>,
    pub pre_archive_retry_script: Option<String>,
    pub pre_archive_script: Option<String>,
    pub pre_backup_retry_script: Option<String>,
    pub pre_backup_script: Option<String>,
    pub pre_delete_script: Option<String>,
    pub pre_delete_retry_script: Option<String>,
    pub pre_recovery_retry_script: Option<String>,
    pub pre_recovery_script: Option<String>,
    pub pre_wal_delete_script: Option<String>,
    pub pre_wal_delete_retry_script: Option<String>,
    pub primary_checkpoint_timeout: i64,
    pub primary_conninfo: Option<String>,
    pub primary_ssh_command: Option<String>,
    pub recovery_options: RecoveryOptions,
    pub recovery_staging_path: Option<String>,
    pub create_slot: CreateSlot,
    /// `None` when unset *or invalid* (Barman then enforces no retention; a warning says so).
    pub retention_policy: Option<RetentionPolicy>,
    /// Only `auto` exists; anything else falls back to it with a warning.
    pub retention_policy_mode: String,
    pub reuse_backup: Option<ReuseBackup>,
    pub slot_name: Option<String>,
    pub snapshot_disks: Option<Vec<String>>,
    pub snapshot_gcp_project: Option<String>,
    pub snapshot_instance: Option<String>,
    pub snapshot_provider: Option<String>,
    pub snapshot_zone: Option<String>,
    pub ssh_command: Option<String>,
    pub staging_path: Option<String>,
    pub staging_location: StagingLocation,
    pub streaming_archiver: bool,
    pub streaming_archiver_batch_size: i64,
    pub streaming_archiver_name: Option<String>,
    pub streaming_backup_name: Option<String>,
    pub streaming_conninfo: Option<String>,
    pub streaming_wals_directory: PathBuf,
    /// Per-tablespace kbps (`name:limit` rules, those equal to `bandwidth_limit` dropped).
    pub tablespace_bandwidth_limit: Option<BTreeMap<String, i64>>,
    pub wal_conninfo: Option<String>,
    /// Only `main` exists (WAL follow the base backup policy).
    pub wal_retention_policy: String,
    pub wal_streaming_conninfo: Option<String>,
    pub wals_directory: PathBuf,
    pub worm_mode: bool,
    pub xlogdb_directory: PathBuf,
    /// Problems found in the configuration that `barman check` reports; any makes `disabled`.
    pub messages: Vec<String>,
    /// The model applied at load (`<backup_directory>/.active-model.auto`), if any.
    pub active_model: Option<String>,
    /// Origin of each effective option, for `show-servers`/`diagnose`.
    pub sources: BTreeMap<&'static str, Source>,
}

/// What resolution needs from the loader: raw lookups and the global values Barman copies in.
pub(crate) struct Lookup<'a> {
    /// The server section: key → (value after the per-file pass, location).
    pub(crate) section: &'a [(String, String, Location)],
    /// `[barman]`, likewise.
    pub(crate) global: &'a [(String, String, Location)],
    /// `name`, `barman_home`, `barman_lock_directory`, ... as Barman's `self.__dict__` has them.
    pub(crate) vars: HashMap<String, String>,
}

/// An interpolation failure while reading an option; the loader turns it into a `ConfigError`.
pub(crate) struct ReadFailure {
    pub(crate) location: Location,
    pub(crate) section: String,
    pub(crate) key: String,
    pub(crate) problem: super::interpolate::InterpolationProblem,
}

fn get<'a>(entries: &'a [(String, String, Location)], key: &str) -> Option<&'a (String, String, Location)> {
    entries.iter().find(|(k, _, _)| k == key)
}

/// Barman's `Config.get` for a server: interpolate (computed values first, then the section),
/// map a literal `None` to empty, strip one pair of matching quotes.
fn read(
    lookup: &Lookup<'_>,
    in_global: bool,
    key: &str,
    server: &str,
) -> Result<Option<(String, Location)>, ReadFailure> {
    let (entries, section_name) =
        if in_global { (lookup.global, "barman") } else { (lookup.section, server) };
    let Some((_, raw, location)) = get(entries, key) else { return Ok(None) };
    let resolve = |name: &str| -> Option<&str> {
        lookup.vars.get(name).map(String::as_str).or_else(|| get(entries, name).map(|e| e.1.as_str()))
    };
    let text = super::interpolate::interpolate(raw, &resolve).map_err(|problem| ReadFailure {
        location: location.clone(),
        section: section_name.to_owned(),
        key: key.to_owned(),
        problem,
    })?;
    let text = if text == "None" { String::new() } else { strip_quotes(&text).to_owned() };
    Ok(Some((text, location.clone())))
}

/// Barman's `^(["'])(.*)\1$`: one pair of matching quotes around a single-line value.
pub(crate) fn strip_quotes(text: &str) -> &str {
    for quote in ['"', '\''] {
        if let Some(body) = text.strip_prefix(quote).and_then(|t| t.strip_suffix(quote)) {
            if !body.contains('\n') {
                return body;
            }
        }
    }
    text
}

/// Resolves every option of server `name` (steps 1–3 of the module doc).
pub(crate) fn resolve(
    name: &str,
    mut lookup: Lookup<'_>,
    warnings: &mut Vec<ConfigWarning>,
) -> Result<BTreeMap<&'static str, Setting>, ReadFailure> {
    let mut out = BTreeMap::new();
    for spec in SERVER_OPTIONS {
        let mut found: Option<Setting> = None;
        if !spec.fixed {
            let mut places = vec![false];
            if spec.scope == Scope::GlobalAndServer {
                places.push(true);
            }
            for in_global in places {
                let Some((text, location)) = read(&lookup, in_global, spec.name, name)? else { continue };
                let source =
                    if in_global { Source::Global(location.clone()) } else { Source::Server(location.clone()) };
                if let Some(setting) = parse_one(spec.kind, spec.name, &text, source, Some(location), name, in_global, warnings) {
                    found = Some(setting);
                    break;
                }
            }
        }
        if found.is_none() {
            if let Some(default) = spec.default {
                let text = python_format(default, &lookup.vars);
                found = parse_one(spec.kind, spec.name, &text, Source::Default, None, name, false, warnings);
            }
        }
        let mut setting = found.unwrap_or(Setting { value: None, source: Source::Default });
        // Barman's last step: the text `None` (e.g. `%(conninfo)s` of an unset conninfo) is unset.
        if matches!(&setting.value, Some(Value::Text(t)) if t == "None") {
            setting.value = None;
        }
        let text = match &setting.value {
            None => "None".to_owned(),
            Some(v) => v.python_text(&display_text(v)),
        };
        lookup.vars.insert(spec.name.to_owned(), text);
        out.insert(spec.name, setting);
    }
    Ok(out)
}

/// Python's `"..." % dict` for Barman's defaults: `%(name)s` substituted once, no recursion.
fn python_format(template: &str, vars: &HashMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = template;
    while let Some(p) = rest.find("%(") {
        out.push_str(&rest[..p]);
        let after = &rest[p + 2..];
        match after.find(")s") {
            Some(end) => {
                out.push_str(vars.get(&after[..end]).map_or("None", String::as_str));
                rest = &after[end + 2..];
            }
            None => {
                out.push_str(&rest[p..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

/// Parses one candidate; `None` means "keep searching" (not written, or refused with a warning).
#[allow(clippy::too_many_arguments)]
fn parse_one(
    kind: Kind,
    key: &'static str,
    text: &str,
    source: Source,
    location: Option<Location>,
    server: &str,
    in_global: bool,
    warnings: &mut Vec<ConfigWarning>,
) -> Option<Setting> {
    use super::values::Parsed;
    match kind.parse(text) {
        Ok(Parsed::Value(v)) => Some(Setting { value: Some(v), source }),
        Ok(Parsed::Unset) => Some(Setting { value: None, source }),
        Ok(Parsed::Inherit) => None,
        Err(reason) => {
            let w = ConfigWarning::InvalidValue {
                location,
                section: if in_global { "barman".to_owned() } else { server.to_owned() },
                key: key.to_owned(),
                value: text.to_owned(),
                reason,
            };
            if !warnings.contains(&w) {
                warnings.push(w);
            }
            None
        }
    }
}

/// A value's text as the user would write it (used for interpolation of typed options).
fn display_text(v: &Value) -> String {
    match v {
        Value::Text(t) => t.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Int(n) => n.to_string(),
        Value::Interval(i) => i.to_string(),
        Value::Size(n) => n.to_string(),
        Value::BackupMethod(x) => x.to_string(),
        Value::BackupCompression(x) => x.to_string(),
        Value::BackupCompressionFormat(x) => x.to_string(),
        Value::BackupCompressionLocation(x) => x.to_string(),
        Value::Compression(x) => x.to_string(),
        Value::CompressionLevel(x) => x.to_string(),
        Value::BackupOptions(x) => x.to_string(),
        Value::RecoveryOptions(x) => {
            let mut parts = Vec::new();
            if x.get_wal {
                parts.push("get-wal");
            }
            if x.delta_restore {
                parts.push("delta-restore");
            }
            parts.join(",")
        }
        Value::ReuseBackup(x) => x.to_string(),
        Value::CreateSlot(x) => x.to_string(),
        Value::CombineMode(x) => x.to_string(),
        Value::Encryption(x) => x.to_string(),
        Value::StagingLocation(x) => x.to_string(),
        Value::NameList(l) => l.join(","),
    }
}

/// Typed access to resolved settings. Each accessor matches the [`Kind`] the table declares, so
/// a mismatch is a bug in `options.rs`, caught by the tests that load every option.
struct Resolved(BTreeMap<&'static str, Setting>);

impl Resolved {
    fn value(&self, key: &str) -> Option<&Value> {
        self.0.get(key).and_then(|s| s.value.as_ref())
    }
    fn text(&self, key: &str) -> Option<String> {
        match self.value(key) {
            Some(Value::Text(t)) => Some(t.clone()),
            _ => None,
        }
    }
    fn path(&self, key: &str) -> PathBuf {
        PathBuf::from(self.text(key).unwrap_or_else(|| "None".to_owned()))
    }
    fn bool(&self, key: &str) -> bool {
        matches!(self.value(key), Some(Value::Bool(true)))
    }
    fn int(&self, key: &str) -> Option<i64> {
        match self.value(key) {
            Some(Value::Int(n)) => Some(*n),
            _ => None,
        }
    }
}

macro_rules! typed {
    ($r:expr, $key:literal, $variant:ident) => {
        match $r.value($key) {
            Some(Value::$variant(v)) => Some(v.clone()),
            _ => None,
        }
    };
}

impl ServerConfig {
    pub(crate) fn from_settings(
        name: &str,
        settings: BTreeMap<&'static str, Setting>,
        warnings: &mut Vec<ConfigWarning>,
    ) -> ServerConfig {
        let sources = settings.iter().map(|(k, s)| (*k, s.source.clone())).collect();
        let r = Resolved(settings);
        let mut cfg = ServerConfig {
            name: name.to_owned(),
            active: r.bool("active"),
            archiver: r.bool("archiver"),
            archiver_batch_size: r.int("archiver_batch_size").unwrap_or(0),
            autogenerate_manifest: r.bool("autogenerate_manifest"),
            aws_await_snapshots_timeout: r.int("aws_await_snapshots_timeout").unwrap_or(3600),
            aws_snapshot_lock_mode: r.text("aws_snapshot_lock_mode"),
            aws_snapshot_lock_duration: r.int("aws_snapshot_lock_duration"),
            aws_snapshot_lock_cool_off_period: r.int("aws_snapshot_lock_cool_off_period"),
            aws_snapshot_lock_expiration_date: r.text("aws_snapshot_lock_expiration_date"),
            aws_profile: r.text("aws_profile"),
            aws_region: r.text("aws_region"),
            azure_credential: r.text("azure_credential"),
            azure_resource_group: r.text("azure_resource_group"),
            azure_subscription_id: r.text("azure_subscription_id"),
            backup_compression: typed!(r, "backup_compression", BackupCompression),
            backup_compression_format: typed!(r, "backup_compression_format", BackupCompressionFormat),
            backup_compression_level: r.int("backup_compression_level"),
            backup_compression_location: typed!(r, "backup_compression_location", BackupCompressionLocation),
            backup_compression_workers: r.int("backup_compression_workers"),
            backup_directory: r.path("backup_directory"),
            backup_method: typed!(r, "backup_method", BackupMethod).unwrap_or(BackupMethod::Rsync),
            backup_options: typed!(r, "backup_options", BackupOptions).unwrap_or_default(),
            bandwidth_limit: None,
            basebackup_retry_sleep: r.int("basebackup_retry_sleep").unwrap_or(30),
            basebackup_retry_times: r.int("basebackup_retry_times").unwrap_or(0),
            basebackups_directory: r.path("basebackups_directory"),
            check_timeout: r.int("check_timeout").unwrap_or(30),
            cluster: r.text("cluster"),
            compression: typed!(r, "compression", Compression),
            compression_level: typed!(r, "compression_level", CompressionLevel),
            conninfo: r.text("conninfo"),
            custom_compression_filter: r.text("custom_compression_filter"),
            custom_decompression_filter: r.text("custom_decompression_filter"),
            custom_compression_magic: r.text("custom_compression_magic"),
            description: r.text("description"),
            disabled: false,
            encryption: typed!(r, "encryption", Encryption),
            encryption_key_id: r.text("encryption_key_id"),
            encryption_passphrase_command: r.text("encryption_passphrase_command"),
            errors_directory: r.path("errors_directory"),
            forward_config_path: r.bool("forward_config_path"),
            gcp_project: r.text("gcp_project"),
            gcp_zone: r.text("gcp_zone"),
            immediate_checkpoint: r.bool("immediate_checkpoint"),
            incoming_wals_directory: r.path("incoming_wals_directory"),
            keepalive_interval: r.int("keepalive_interval").unwrap_or(60),
            last_backup_maximum_age: typed!(r, "last_backup_maximum_age", Interval),
            last_backup_minimum_size: typed!(r, "last_backup_minimum_size", Size),
            last_wal_maximum_age: typed!(r, "last_wal_maximum_age", Interval),
            combine_mode: typed!(r, "combine_mode", CombineMode).unwrap_or(CombineMode::Copy),
            local_staging_path: r.text("local_staging_path"),
            max_incoming_wals_queue: r.int("max_incoming_wals_queue"),
            minimum_redundancy: 0,
            network_compression: r.bool("network_compression"),
            parallel_jobs: r.int("parallel_jobs").unwrap_or(1),
            parallel_jobs_start_batch_period: r.int("parallel_jobs_start_batch_period").unwrap_or(1),
            parallel_jobs_start_batch_size: r.int("parallel_jobs_start_batch_size").unwrap_or(10),
            path_prefix: r.text("path_prefix"),
            post_archive_retry_script: r.text("post_archive_retry_script"),
            post_archive_script: r.text("post_archive_script"),
            post_backup_retry_script: r.text("post_backup_retry_script"),
            post_backup_script: r.text("post_backup_script"),
            post_delete_script: r.text("post_delete_script"),
            post_delete_retry_script: r.text("post_delete_retry_script"),
            post_recovery_retry_script: r.text("post_recovery_retry_script"),
            post_recovery_script: r.text("post_recovery_script"),
            post_wal_delete_script: r.text("post_wal_delete_script"),
            post_wal_delete_retry_script: r.text("post_wal_delete_retry_script"),
            pre_archive_retry_script: r.text("pre_archive_retry_script"),
            pre_archive_script: r.text("pre_archive_script"),
            pre_backup_retry_script: r.text("pre_backup_retry_script"),
            pre_backup_script: r.text("pre_backup_script"),
            pre_delete_script: r.text("pre_delete_script"),
            pre_delete_retry_script: r.text("pre_delete_retry_script"),
            pre_recovery_retry_script: r.text("pre_recovery_retry_script"),
            pre_recovery_script: r.text("pre_recovery_script"),
            pre_wal_delete_script: r.text("pre_wal_delete_script"),
            pre_wal_delete_retry_script: r.text("pre_wal_delete_retry_script"),
            primary_checkpoint_timeout: r.int("primary_checkpoint_timeout").unwrap_or(0),
            primary_conninfo: r.text("primary_conninfo"),
            primary_ssh_command: r.text("primary_ssh_command"),
            recovery_options: typed!(r, "recovery_options", RecoveryOptions).unwrap_or_default(),
            recovery_staging_path: r.text("recovery_staging_path"),
            create_slot: typed!(r, "create_slot", CreateSlot).unwrap_or(CreateSlot::Manual),
            retention_policy: None,
            retention_policy_mode: r.text("retention_policy_mode").unwrap_or_default(),
            reuse_backup: typed!(r, "reuse_backup", ReuseBackup),
            slot_name: r.text("slot_name"),
            snapshot_disks: typed!(r, "snapshot_disks", NameList),
            snapshot_gcp_project: r.text("snapshot_gcp_project"),
            snapshot_instance: r.text("snapshot_instance"),
            snapshot_provider: r.text("snapshot_provider"),
            snapshot_zone: r.text("snapshot_zone"),
            ssh_command: r.text("ssh_command"),
            staging_path: r.text("staging_path"),
            staging_location: typed!(r, "staging_location", StagingLocation).unwrap_or(StagingLocation::Local),
            streaming_archiver: r.bool("streaming_archiver"),
            streaming_archiver_batch_size: r.int("streaming_archiver_batch_size").unwrap_or(0),
            streaming_archiver_name: r.text("streaming_archiver_name"),
            streaming_backup_name: r.text("streaming_backup_name"),
            streaming_conninfo: r.text("streaming_conninfo"),
            streaming_wals_directory: r.path("streaming_wals_directory"),
            tablespace_bandwidth_limit: None,
            wal_conninfo: r.text("wal_conninfo"),
            wal_retention_policy: r.text("wal_retention_policy").unwrap_or_default(),
            wal_streaming_conninfo: r.text("wal_streaming_conninfo"),
            wals_directory: r.path("wals_directory"),
            worm_mode: r.bool("worm_mode"),
            xlogdb_directory: r.path("xlogdb_directory"),
            messages: Vec::new(),
            active_model: None,
            sources,
        };
        cfg.apply_server_rules(&r, warnings);
        cfg
    }

    /// Where the effective value of `key` came from (`None` for an unknown key).
    pub fn source(&self, key: &str) -> Option<&Source> {
        self.sources.get(key)
    }

    /// A passive node copies backups from another Barman (`primary_ssh_command` is set).
    pub fn is_passive(&self) -> bool {
        self.primary_ssh_command.is_some()
    }

    /// Records a `barman check` problem and disables the server, as Barman's
    /// `update_msg_list_and_disable_server`.
    pub fn disable_with(&mut self, message: impl Into<String>) {
        self.messages.push(message.into());
        self.disabled = true;
    }
}

impl ServerConfig {
    /// The configuration checks of Barman's `Server.__init__` (see the module doc).
    fn apply_server_rules(&mut self, r: &Resolved, warnings: &mut Vec<ConfigWarning>) {
        let name = self.name.clone();
        let mut note = |message: String| {
            warnings.push(ConfigWarning::Server { server: name.clone(), message });
        };
        if !self.is_passive() {
            // Barman's RsyncBackupExecutor in local mode refuses an ssh_command (before the
            // other rules: its BackupManager is made first).
            if self.backup_method == BackupMethod::LocalRsync
                && self.ssh_command.as_deref().is_some_and(|c| !c.trim().is_empty())
            {
                self.disable_with(format!(
                    "Local copy requires ssh_command in barman configuration to be empty for server {}",
                    self.name
                ));
            }
            if self.conninfo.is_none() {
                self.disable_with(format!(
                    "PostgreSQL connection: Missing 'conninfo' parameter for server '{}'",
                    self.name
                ));
            }
            if (self.backup_method == BackupMethod::Postgres || self.streaming_archiver)
                && self.streaming_conninfo.is_none()
            {
                self.disable_with(format!(
                    "Streaming connection: Missing 'streaming_conninfo' parameter for server '{}'",
                    self.name
                ));
            }
            if !self.archiver && self.streaming_archiver && self.slot_name.is_none() {
                self.disable_with(
                    "Streaming-only archiver requires 'streaming_conninfo' and 'slot_name' options to be properly configured",
                );
            }
            if !self.archiver && !self.streaming_archiver {
                note(format!(
                    "No archiver enabled for server '{}'. Please turn on 'archiver', 'streaming_archiver' or both; forcing 'archiver = on'",
                    self.name
                ));
                self.archiver = true;
            }
        }

        if let Some(text) = r.text("bandwidth_limit") {
            match super::values::parse_int(&text) {
                Ok(n) => self.bandwidth_limit = Some(n),
                Err(_) => note(format!(
                    "Invalid bandwidth_limit \"{text}\" for server \"{}\" (fallback to \"0\")",
                    self.name
                )),
            }
        }
        if let Some(text) = r.text("tablespace_bandwidth_limit") {
            let mut rules = BTreeMap::new();
            for rule in text.split(super::ini::is_py_space).filter(|w| !w.is_empty()) {
                let parsed = rule
                    .split_once(':')
                    .and_then(|(k, v)| super::values::parse_int(v).ok().map(|v| (k, v)));
                match parsed {
                    Some((k, v)) if Some(v) != self.bandwidth_limit => {
                        rules.insert(k.to_owned(), v);
                    }
                    Some(_) => {}
                    None => note(format!("Invalid tablespace_bandwidth_limit rule '{rule}'")),
                }
            }
            self.tablespace_bandwidth_limit = (!rules.is_empty()).then_some(rules);
        }

        let redundancy = r.text("minimum_redundancy").unwrap_or_default();
        self.minimum_redundancy = match super::values::parse_int(&redundancy) {
            Ok(n) if n < 0 => {
                note(format!(
                    "Negative value of minimum_redundancy \"{redundancy}\" for server \"{}\" (fallback to \"0\")",
                    self.name
                ));
                0
            }
            Ok(n) => u32::try_from(n).unwrap_or(u32::MAX),
            Err(_) => {
                note(format!(
                    "Invalid minimum_redundancy \"{redundancy}\" for server \"{}\" (fallback to \"0\")",
                    self.name
                ));
                0
            }
        };

        if self.retention_policy_mode != "auto" {
            note(format!(
                "Unsupported retention_policy_mode \"{}\" for server \"{}\" (fallback to \"auto\")",
                self.retention_policy_mode, self.name
            ));
            self.retention_policy_mode = "auto".to_owned();
        }
        if let Some(text) = r.text("retention_policy") {
            if self.wal_retention_policy != "main" {
                note(format!(
                    "Unsupported wal_retention_policy value \"{}\" for server \"{}\" (fallback to \"main\")",
                    self.wal_retention_policy, self.name
                ));
                self.wal_retention_policy = "main".to_owned();
            }
            match text.parse::<RetentionPolicy>() {
                Ok(policy) => self.retention_policy = Some(policy),
                Err(reason) => note(format!(
                    "Invalid retention_policy setting \"{text}\" for server \"{}\": {reason}; no retention policy is enforced",
                    self.name
                )),
            }
        }
    }
}
