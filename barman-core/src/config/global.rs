//! The `[barman]` section's own settings (the ones that are not per-server).

use std::path::PathBuf;

use super::ini::Location;

/// Settings that only exist in `[barman]`, with Barman's fallbacks applied
/// (`Config._parse_global_config`).
///
/// Server options written in `[barman]` are not here: they are inherited by each
/// [`ServerConfig`](super::ServerConfig), which is where they are typed. [`raw`](Self::raw)
/// keeps every `[barman]` key as written (after interpolation), for `barman diagnose`-style
/// reporting.
#[derive(Debug, Clone, PartialEq)]
pub struct GlobalSettings {
    /// `barman_home`: required; the root of every server's default directories.
    pub barman_home: PathBuf,
    /// `barman_user` (default `barman`): the system user Barman must run as.
    pub barman_user: String,
    /// `barman_lock_directory` (default `barman_home`): where `.<server>-*.lock` files live.
    pub barman_lock_directory: PathBuf,
    /// `lock_directory_cleanup` (default on): remove stale lock files during `cron`.
    pub lock_directory_cleanup: bool,
    /// `config_changes_queue` (default `<barman_home>/cfg_changes.queue`).
    pub config_changes_queue: PathBuf,
    /// `configuration_files_directory`, as written (`~` not expanded); `None` when unset.
    pub configuration_files_directory: Option<PathBuf>,
    /// `log_file`; `None` logs nowhere but the console.
    pub log_file: Option<PathBuf>,
    /// `log_format` (read by Barman although its own validation calls it unknown).
    pub log_format: String,
    /// `log_level` (default `INFO`), as written; the CLI maps it to a level.
    pub log_level: String,
    /// Every key of `[barman]`: value after interpolation and quote removal, and where it is.
    pub raw: Vec<(String, String, Location)>,
}

/// Barman's default `log_format`.
pub const DEFAULT_LOG_FORMAT: &str = "%(asctime)s [%(process)s] %(name)s %(levelname)s: %(message)s";
