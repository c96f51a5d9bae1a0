//! The command tree: Barman 3.x's commands, aliases, positional arguments and options, with
//! the same names and value checks (`barman/cli.py`). Help texts are our own.

use clap::{ArgAction, Args, Parser, Subcommand, ValueEnum};

/// barman-rs: Backup and Recovery Manager for PostgreSQL, compatible with Barman 3.x.
#[derive(Debug, Parser)]
#[command(name = "barman", version, disable_version_flag = true, subcommand_required = true)]
pub struct Cli {
    /// Print the version and exit.
    #[arg(short = 'v', long = "version", action = ArgAction::Version)]
    pub version: Option<bool>,
    /// Use this configuration file (default: $BARMAN_CONFIG_FILE, ~/.barman.conf,
    /// /etc/barman.conf, /etc/barman/barman.conf).
    #[arg(short = 'c', long = "config", value_name = "CONFIG", global = true)]
    pub config: Option<std::path::PathBuf>,
    /// Whether to colour the output.
    #[arg(long = "color", visible_alias = "colour", value_enum, default_value_t = Color::Auto, global = true)]
    pub color: Color,
    /// Override the log level of the configuration.
    #[arg(long = "log-level", value_enum, global = true)]
    pub log_level: Option<LogLevel>,
    /// Do not print informational messages.
    #[arg(short = 'q', long = "quiet", global = true)]
    pub quiet: bool,
    /// Print debug messages on standard error.
    #[arg(short = 'd', long = "debug", global = true)]
    pub debug: bool,
    /// Output format.
    #[arg(short = 'f', long = "format", value_enum, default_value_t = Format::Console, global = true)]
    pub format: Format,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// `--color`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Color {
    /// Never colour.
    Never,
    /// Always colour.
    Always,
    /// Colour when stdout and stderr are terminals.
    Auto,
}

/// `--log-level`, Python's level names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "UPPER")]
#[allow(missing_docs, clippy::upper_case_acronyms)]
pub enum LogLevel {
    NOTSET,
    DEBUG,
    INFO,
    WARNING,
    ERROR,
    CRITICAL,
}

/// `-f`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Human-readable text.
    Console,
    /// One JSON document on standard output.
    Json,
}

fn positive(s: &str) -> Result<u64, String> {
    match s.parse::<i64>() {
        Ok(n) if n > 0 => Ok(n as u64),
        Ok(_) => Err(format!("{s} is not a positive integer")),
        Err(_) => Err(format!("{s} is not a valid integer")),
    }
}

fn non_negative(s: &str) -> Result<u64, String> {
    match s.parse::<i64>() {
        Ok(n) if n >= 0 => Ok(n as u64),
        Ok(_) => Err(format!("{s} is not a non-negative integer")),
        Err(_) => Err(format!("{s} is not a valid integer")),
    }
}

fn target_tli(s: &str) -> Result<String, String> {
    if s == "current" || s == "latest" || positive(s).is_ok() {
        Ok(s.to_owned())
    } else {
        Err(format!("{s} is not a valid timeline keyword"))
    }
}

fn target_action(s: &str) -> Result<String, String> {
    match s {
        "pause" | "shutdown" | "promote" => Ok(s.to_owned()),
        _ => Err(format!("'{s}' is not a valid recovery target action")),
    }
}

fn backup_name(s: &str) -> Result<String, String> {
    const RESERVED: [&str; 8] = ["latest", "last", "oldest", "first", "last-failed", "latest-full", "last-full", "auto"];
    if RESERVED.contains(&s) {
        return Err(format!("backup name '{s}' is reserved"));
    }
    if s.len() == 15 && s.as_bytes()[8] == b'T' && s.bytes().enumerate().all(|(i, b)| i == 8 || b.is_ascii_digit()) {
        return Err(format!("backup name '{s}' is not allowed: backup ID"));
    }
    Ok(s.to_owned())
}

/// Server names, where `all` means every server.
#[derive(Debug, Clone, Args)]
pub struct ServerNames {
    /// Server names, or 'all'.
    #[arg(value_name = "SERVER_NAME", required = true)]
    pub server_name: Vec<String>,
}

/// One server and one backup.
#[derive(Debug, Clone, Args)]
pub struct ServerBackup {
    /// The server.
    pub server_name: String,
    /// A backup ID, name or shortcut (latest, oldest, last-failed, …).
    pub backup_id: String,
}

/// Every Barman command.
#[derive(Debug, Subcommand)]
#[allow(missing_docs)]
pub enum Command {
    /// Move the WAL files waiting in incoming/ and streaming/ into the archive.
    ArchiveWal { server_name: String },
    /// Take a base backup of one or more servers ('all' for every one).
    Backup(BackupArgs),
    /// Check the configuration and connections of one or more servers.
    Check(CheckArgs),
    /// Check that the WAL a backup needs is all in the archive.
    CheckBackup(ServerBackup),
    /// Check that the WAL archive can safely be used by a new server.
    CheckWalArchive {
        server_name: String,
        /// Only check this timeline.
        #[arg(long, value_parser = positive)]
        timeline: Option<u64>,
    },
    /// Apply a configuration model to a server.
    ConfigSwitch {
        server_name: String,
        model_name: Option<String>,
        /// Remove the active model.
        #[arg(long)]
        reset: bool,
    },
    /// Create or update configurations from a JSON document.
    ConfigUpdate { json_changes: String },
    /// Run the periodic maintenance tasks of every server.
    Cron {
        /// Keep stdout and stderr attached to the processes started.
        #[arg(long)]
        keep_descriptors: bool,
    },
    /// Delete a backup.
    Delete(ServerBackup),
    /// Print diagnostic information as JSON.
    Diagnose {
        /// Add the file each configuration value comes from.
        #[arg(long)]
        show_config_source: bool,
    },
    /// Write a backup_manifest for a backup.
    GenerateManifest(ServerBackup),
    /// Fetch a WAL file from the archive.
    GetWal(GetWalArgs),
    /// Keep a backup beyond the retention policy, or release it.
    Keep(KeepArgs),
    /// List the backups of one or more servers.
    #[command(visible_alias = "list-backup")]
    ListBackups {
        #[command(flatten)]
        servers: ServerNames,
        /// Machine-readable output.
        #[arg(long)]
        minimal: bool,
    },
    /// List the files of a backup.
    ListFiles(ListFilesArgs),
    /// List the barman processes of a server.
    #[command(visible_alias = "list-process")]
    ListProcesses { server_name: String },
    /// List the configured servers.
    #[command(visible_alias = "list-server")]
    ListServers {
        /// Machine-readable output (names only).
        #[arg(long)]
        minimal: bool,
    },
    /// Remove lock files nobody holds.
    LockDirectoryCleanup,
    /// Receive a WAL file on standard input from barman-wal-archive.
    PutWal {
        server_name: String,
        /// Only test the connection.
        #[arg(short = 't', long)]
        test: bool,
    },
    /// Rebuild the WAL index from the archive's content.
    RebuildXlogdb(ServerNames),
    /// Stream WAL from a server, or manage its replication slot.
    ReceiveWal(ReceiveWalArgs),
    /// Restore a backup, optionally to a point in time.
    #[command(visible_alias = "restore")]
    Recover(Box<RecoverArgs>),
    /// Show the streaming clients of one or more servers.
    ReplicationStatus(ReplicationStatusArgs),
    /// Show the details of a backup.
    #[command(visible_alias = "show-backups")]
    ShowBackup(ServerBackup),
    /// Show the configuration and live state of one or more servers.
    #[command(visible_alias = "show-server")]
    ShowServers(ServerNames),
    /// Show the status of one or more servers.
    Status(ServerNames),
    /// Make the server switch to a new WAL file.
    #[command(visible_alias = "switch-xlog")]
    SwitchWal(SwitchWalArgs),
    /// Copy a backup from the primary Barman (passive node).
    SyncBackup(ServerBackup),
    /// Print what a passive node needs to synchronise.
    SyncInfo {
        /// Run on the primary node.
        #[arg(long)]
        primary: bool,
        server_name: String,
        last_wal: Option<String>,
        #[arg(value_parser = positive)]
        last_position: Option<u64>,
    },
    /// Copy WAL from the primary Barman (passive node).
    SyncWals { server_name: String },
    /// Terminate a barman process of a server.
    TerminateProcess {
        server_name: String,
        /// The task (backup, receive-wal, …).
        task: String,
    },
    /// Verify a backup with pg_verifybackup.
    #[command(visible_alias = "verify")]
    VerifyBackup(ServerBackup),
    /// Print shell completions (barman-rs addition).
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write man pages, barman(1) and one per command, into a directory (barman-rs addition).
    #[command(hide = true)]
    Man {
        /// Where to write them (created if missing).
        directory: std::path::PathBuf,
    },
}

/// `check`.
#[derive(Debug, Clone, Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub servers: ServerNames,
    /// Nagios plugin output.
    #[arg(long)]
    pub nagios: bool,
    /// Time limit of the checks in seconds (0: none).
    #[arg(long, value_name = "TIMEOUT", value_parser = non_negative)]
    pub check_timeout: Option<u64>,
}

/// `replication-status`.
#[derive(Debug, Clone, Args)]
pub struct ReplicationStatusArgs {
    #[command(flatten)]
    pub servers: ServerNames,
    /// Machine-readable output.
    #[arg(long)]
    pub minimal: bool,
    /// Which clients to list.
    #[arg(long, value_parser = ["all", "hot-standby", "wal-streamer"], default_value = "all")]
    pub target: String,
    /// Which connection to ask: the backup one or the WAL streaming one.
    #[arg(long, value_parser = ["backup-host", "wal-host"], default_value = "backup-host")]
    pub source: String,
}

/// `backup`.
#[derive(Debug, Clone, Args)]
#[allow(missing_docs)]
pub struct BackupArgs {
    #[command(flatten)]
    pub servers: ServerNames,
    /// Make the first checkpoint as fast as possible.
    #[arg(long, overrides_with = "no_immediate_checkpoint")]
    pub immediate_checkpoint: bool,
    /// Spread the first checkpoint.
    #[arg(long)]
    pub no_immediate_checkpoint: bool,
    /// Take an incremental backup on top of this one.
    #[arg(long, value_name = "BACKUP_ID")]
    pub incremental: Option<String>,
    /// Reuse the previous backup (rsync).
    #[arg(long, num_args = 0..=1, default_missing_value = "link", value_parser = ["off", "copy", "link"])]
    pub reuse_backup: Option<String>,
    #[arg(long, value_parser = non_negative)]
    pub retry_times: Option<u64>,
    #[arg(long, value_parser = non_negative)]
    pub retry_sleep: Option<u64>,
    #[arg(long)]
    pub no_retry: bool,
    #[arg(short = 'j', long, value_name = "NJOBS", value_parser = positive)]
    pub jobs: Option<u64>,
    #[arg(long, value_parser = positive)]
    pub jobs_start_batch_period: Option<u64>,
    #[arg(long, value_parser = positive)]
    pub jobs_start_batch_size: Option<u64>,
    #[arg(long, value_name = "KBPS", value_parser = non_negative)]
    pub bwlimit: Option<u64>,
    /// Wait for the WAL the backup needs to be archived.
    #[arg(short = 'w', long)]
    pub wait: bool,
    #[arg(long, value_name = "TIMEOUT", value_parser = non_negative)]
    pub wait_timeout: Option<u64>,
    #[arg(long, value_parser = non_negative)]
    pub keepalive_interval: Option<u64>,
    /// A name for the backup.
    #[arg(long, value_parser = backup_name)]
    pub name: Option<String>,
    #[arg(long, overrides_with = "no_manifest")]
    pub manifest: bool,
    #[arg(long)]
    pub no_manifest: bool,
    #[arg(long, value_name = "CHECK_TIMEOUT", value_parser = non_negative)]
    pub check_timeout: Option<u64>,
}

/// `get-wal`.
#[derive(Debug, Clone, Args)]
#[allow(missing_docs)]
pub struct GetWalArgs {
    pub server_name: String,
    pub wal_name: String,
    #[arg(short = 'o', long)]
    pub output_directory: Option<String>,
    #[arg(short = 'P', long)]
    pub partial: bool,
    #[arg(short = 'z', short_alias = 'x', long)]
    pub gzip: bool,
    #[arg(short = 'j', long)]
    pub bzip2: bool,
    #[arg(long)]
    pub keep_compression: bool,
    #[arg(short = 'p', long, value_name = "SIZE", value_parser = positive)]
    pub peek: Option<u64>,
    #[arg(short = 't', long)]
    pub test: bool,
}

/// `keep`.
#[derive(Debug, Clone, Args)]
#[allow(missing_docs)]
pub struct KeepArgs {
    pub server_name: String,
    pub backup_id: String,
    #[arg(short = 'r', long)]
    pub release: bool,
    #[arg(short = 's', long)]
    pub status: bool,
    #[arg(long, value_parser = ["full", "standalone"])]
    pub target: Option<String>,
}

/// `list-files`.
#[derive(Debug, Clone, Args)]
#[allow(missing_docs)]
pub struct ListFilesArgs {
    pub server_name: String,
    pub backup_id: String,
    #[arg(long, value_parser = ["standalone", "data", "wal", "full"], default_value = "standalone")]
    pub target: String,
    #[arg(long)]
    pub list_empty_directories: bool,
}

/// `receive-wal`.
#[derive(Debug, Clone, Args)]
#[allow(missing_docs)]
pub struct ReceiveWalArgs {
    #[arg(long)]
    pub stop: bool,
    #[arg(long)]
    pub reset: bool,
    #[arg(long)]
    pub create_slot: bool,
    #[arg(long)]
    pub if_not_exists: bool,
    #[arg(long)]
    pub drop_slot: bool,
    pub server_name: String,
}

/// `switch-wal`.
#[derive(Debug, Clone, Args)]
#[allow(missing_docs)]
pub struct SwitchWalArgs {
    #[command(flatten)]
    pub servers: ServerNames,
    #[arg(long)]
    pub force: bool,
    #[arg(long)]
    pub archive: bool,
    #[arg(long, value_name = "TIMEOUT", value_parser = non_negative, default_value = "30")]
    pub archive_timeout: u64,
}

/// `recover` / `restore`.
#[derive(Debug, Clone, Args)]
#[allow(missing_docs)]
pub struct RecoverArgs {
    pub server_name: String,
    pub backup_id: String,
    pub destination_directory: String,
    #[arg(long, value_parser = target_tli)]
    pub target_tli: Option<String>,
    #[arg(long)]
    pub target_time: Option<String>,
    #[arg(long)]
    pub target_xid: Option<String>,
    #[arg(long)]
    pub target_lsn: Option<String>,
    #[arg(long)]
    pub target_name: Option<String>,
    #[arg(long)]
    pub target_immediate: bool,
    #[arg(long)]
    pub exclusive: bool,
    #[arg(long, value_name = "NAME:LOCATION", action = ArgAction::Append)]
    pub tablespace: Vec<String>,
    #[arg(long, value_name = "SSH_COMMAND")]
    pub remote_ssh_command: Option<String>,
    #[arg(long)]
    pub staging_wal_directory: Option<String>,
    #[arg(long, value_name = "KBPS", value_parser = non_negative)]
    pub bwlimit: Option<u64>,
    #[arg(long, value_parser = non_negative)]
    pub retry_times: Option<u64>,
    #[arg(long, value_parser = non_negative)]
    pub retry_sleep: Option<u64>,
    #[arg(long)]
    pub no_retry: bool,
    #[arg(short = 'j', long, value_name = "NJOBS", value_parser = positive)]
    pub jobs: Option<u64>,
    #[arg(long, value_parser = positive)]
    pub jobs_start_batch_period: Option<u64>,
    #[arg(long, value_parser = positive)]
    pub jobs_start_batch_size: Option<u64>,
    #[arg(long, overrides_with = "no_get_wal")]
    pub get_wal: bool,
    #[arg(long)]
    pub no_get_wal: bool,
    /// Supply the WAL receiver's `.partial` segment when the target needs it (the default in
    /// barman-rs: an RPO=0 setup loses nothing).
    #[arg(long, overrides_with = "no_partial_wal")]
    pub partial_wal: bool,
    /// Leave the receiver's `.partial` segment out, as Barman before 3.19 does.
    #[arg(long)]
    pub no_partial_wal: bool,
    #[arg(long, overrides_with = "no_network_compression")]
    pub network_compression: bool,
    #[arg(long)]
    pub no_network_compression: bool,
    #[arg(long, value_parser = target_action)]
    pub target_action: Option<String>,
    #[arg(long)]
    pub standby_mode: bool,
    #[arg(long)]
    pub recovery_staging_path: Option<String>,
    #[arg(long)]
    pub local_staging_path: Option<String>,
    #[arg(long)]
    pub staging_path: Option<String>,
    #[arg(long, value_parser = ["local", "remote"])]
    pub staging_location: Option<String>,
    #[arg(long, value_parser = ["copy", "link", "clone", "copy-file-range"])]
    pub combine_mode: Option<String>,
    #[arg(long)]
    pub recovery_conf_filename: Option<String>,
    #[arg(long)]
    pub recovery_option_port: Option<String>,
    #[arg(long, overrides_with = "no_delta_restore")]
    pub delta_restore: bool,
    #[arg(long)]
    pub no_delta_restore: bool,
    #[arg(long)]
    pub snapshot_recovery_instance: Option<String>,
    #[arg(long)]
    pub snapshot_recovery_zone: Option<String>,
    #[arg(long)]
    pub gcp_zone: Option<String>,
    #[arg(long)]
    pub azure_resource_group: Option<String>,
    #[arg(long)]
    pub aws_region: Option<String>,
}

impl Command {
    /// The command's name as typed (`list-servers`, …).
    pub fn name(&self) -> String {
        let dbg = format!("{self:?}");
        let variant = dbg.split([' ', '(', '{']).next().unwrap_or_default();
        let mut out = String::new();
        for (i, c) in variant.chars().enumerate() {
            if c.is_ascii_uppercase() {
                if i > 0 {
                    out.push('-');
                }
                out.push(c.to_ascii_lowercase());
            } else {
                out.push(c);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory as _;

    #[test]
    fn tree_is_valid() {
        Cli::command().debug_assert();
    }

    #[test]
    fn aliases_and_options_parse() {
        let ok = [
            vec!["barman", "restore", "pg", "latest", "/tmp/x", "--target-time", "2026-01-01", "-j", "2"],
            vec!["barman", "-c", "/x.conf", "-f", "json", "check", "--nagios", "all"],
            vec!["barman", "switch-xlog", "--force", "--archive", "pg"],
            vec!["barman", "list-server", "--minimal"],
            vec!["barman", "show-server", "pg", "other"],
            vec!["barman", "backup", "--reuse-backup", "--name", "x", "all"],
            vec!["barman", "get-wal", "-P", "-z", "pg", "000000010000000000000001"],
            vec!["barman", "replication-status", "--target", "wal-streamer", "--source", "wal-host", "pg"],
            vec!["barman", "--colour", "never", "--log-level", "DEBUG", "status", "pg"],
            vec!["barman", "receive-wal", "--create-slot", "--if-not-exists", "pg"],
            vec!["barman", "verify", "pg", "latest"],
            vec!["barman", "completions", "bash"],
        ];
        for args in ok {
            Cli::try_parse_from(&args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
        }
        let bad = [
            vec!["barman", "frobnicate", "pg"],
            vec!["barman", "check"],
            vec!["barman", "backup", "-j", "0", "pg"],
            vec!["barman", "-f", "yaml", "status", "pg"],
            vec!["barman", "recover", "pg", "latest", "/x", "--target-action", "explode"],
            vec!["barman", "backup", "--name", "latest", "pg"],
        ];
        for args in bad {
            assert!(Cli::try_parse_from(&args).is_err(), "{args:?} should be refused");
        }
        let m = Cli::try_parse_from(["barman", "recover", "pg", "latest", "/x"]).expect("valid");
        assert_eq!(m.command.name(), "recover");
        let m = Cli::try_parse_from(["barman", "list-servers"]).expect("valid");
        assert_eq!(m.command.name(), "list-servers");
    }
}
