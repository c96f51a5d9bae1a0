//! `barman recover` (alias `restore`): a backup into a new data directory, prepared for
//! (point-in-time) recovery, as Barman's `Server.recover` — one archiver pass first, so the
//! WAL received until now can be replayed.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Context as _;
use barman_core::archive_wal::{self, ArchiverSettings};
use barman_core::catalog::query::BackupCatalog;
use barman_core::catalog::{BackupInfo, BackupStatus};
use barman_core::compression::WalCompression;
use barman_core::config::{Config, ServerConfig};
use barman_core::hooks::{HookKind, HookSet};
use barman_core::output::{human_duration, local_now_with_offset};
use barman_core::config::StagingLocation;
use barman_core::recovery::remote::fqdn;
use barman_core::recovery::{
    recover_with, CombineOptions, ConfLine, RecoveryError, RecoveryNotice, RecoveryRequest, RecoverySetup, RecoveryTarget,
    RemoteOptions, TargetTimeline, WalSource,
};
use serde_json::{json, Value};

use super::{find_backup, one_server, server_catalog};
use crate::cli::{Cli, Command, RecoverArgs};
use crate::output::{Mode, Output};

/// Whether `cmd` belongs here and is built.
pub fn implemented(cmd: &Command) -> bool {
    matches!(cmd, Command::Recover(_))
}

/// Runs one of this group's commands.
pub fn run(cli: &Cli, config: &Config, out: &mut Output) -> anyhow::Result<Option<u8>> {
    let Command::Recover(args) = &cli.command else { unreachable!("filtered by implemented()") };
    let Some(server) = one_server(config, &args.server_name, out) else { return Ok(None) };
    if args.network_compression && args.remote_ssh_command.is_none() {
        out.error(
            "Network compression can only be used with remote recovery.\n\
             HINT: If you want to do a remote recovery you have to use the --remote-ssh-command option",
        );
        return Ok(None);
    }
    if args.staging_location.as_deref() == Some("remote") && args.remote_ssh_command.is_none() {
        out.error("--staging-location as remote requires --remote-ssh-command to be set");
        return Ok(None);
    }
    if args.destination_directory.contains(':') {
        out.error(
            "The destination directory parameter cannot contain the ':' character\n\
             HINT: If you want to do a remote recovery you have to use the --remote-ssh-command option",
        );
        return Ok(None);
    }
    let catalog = server_catalog(config, server);
    let (backups, problems) = BackupCatalog::load(&catalog)?;
    problems.iter().for_each(|p| out.warning(&format!("skipping a backup: {p}")));
    let Some(backup) = find_backup(&backups, &server.name, &args.backup_id, out).cloned() else { return Ok(None) };
    if backup.status != BackupStatus::Done {
        out.error(&format!(
            "Cannot recover from backup '{}' of server '{}': backup status is not DONE",
            backup.backup_id, server.name
        ));
        return Ok(None);
    }
    // Barman's staging rules come before anything else is done (cli.py, `recover`).
    let jobs = args.jobs.map(|j| j as usize).unwrap_or_else(|| usize::try_from(server.parallel_jobs).unwrap_or(1)).max(1);
    let setup = match setup_of(args, config, server, &backup, jobs, out) {
        Ok(s) => s,
        Err(e) => {
            out.error(&format!("{e:#}"));
            return Ok(None);
        }
    };
    // Barman's delta-restore refusals, judged on `staging_location` as configured or given
    // (not as the deprecated staging options force it for the copy).
    if setup.delta {
        let staging_location = match args.staging_location.as_deref() {
            Some("remote") => StagingLocation::Remote,
            Some(_) => StagingLocation::Local,
            None => server.staging_location,
        };
        let remote = args.remote_ssh_command.as_ref().map(|_| staging_location);
        if let Some(why) = barman_core::recovery::delta::refusal(&backup, remote) {
            out.error(why);
            return Ok(None);
        }
    }
    // Barman's tablespace relocation rules: NAME:LOCATION, NAME one of the backup's.
    let mut tablespaces = BTreeMap::new();
    for spec in &args.tablespace {
        let Some((name, location)) = spec.split_once(':') else {
            out.error(&format!(
                "Invalid tablespace relocation rule '{spec}'\nHINT: The valid syntax for a relocation rule is NAME:LOCATION"
            ));
            return Ok(None);
        };
        tablespaces.insert(name.to_owned(), PathBuf::from(location));
    }
    let valid: Vec<&str> = backup.tablespaces.iter().flatten().map(|t| t.name.as_str()).collect();
    if let Some(unknown) = tablespaces.keys().find(|n| !valid.contains(&n.as_str())) {
        out.error(&format!(
            "Invalid tablespace name '{unknown}'\nHINT: Please use any of the following tablespaces: {}",
            valid.join(", ")
        ));
        return Ok(None);
    }
    let target = target_of(args)?;
    if target.action.is_some() && !target.is_pitr() {
        out.error("Can't enable recovery target action when PITR is not required");
        return Ok(None);
    }

    // Barman archives what has arrived before it restores (`archive_wal(verbose=False)`).
    let settings = ArchiverSettings::from_config(server)
        .context("the server's WAL compression settings")?
        .with_hooks(server, &config.main_file);
    let mut lines = Vec::new();
    match archive_wal::archive_wal(&catalog, &ArchiverSettings { verbose: false, ..settings }, &mut |e| {
        lines.push(e.console_line())
    }) {
        Ok(_) | Err(archive_wal::ArchiveError::AlreadyRunning { .. }) => {}
        Err(e) => out.warning(&format!("archiving the WAL received so far failed: {e}")),
    }
    for line in &lines {
        out.info(line);
    }

    let req = RecoveryRequest {
        catalog,
        backup_id: backup.backup_id,
        destination: absolute(&args.destination_directory)?,
        tablespaces,
        target,
        standby_mode: args.standby_mode,
        jobs,
        partial_wal: !args.no_partial_wal,
        compression: WalCompression::from_config(server).context("the server's WAL compression settings")?,
    };
    // Hooks: Barman's kwargs of recover, the truthy ones, as BARMAN_RECOVER_OPTIONS.
    let hooks = HookSet::configured(server, &config.main_file, HookKind::Recovery);
    let hook_options = recover_options(args);
    let relocations: BTreeMap<String, String> =
        req.tablespaces.iter().map(|(k, v)| (k.clone(), v.display().to_string())).collect();
    let hook_env = |h: &mut barman_core::hooks::Hook, error: Option<&str>| {
        h.env_from_catalog_backup(&req.catalog, &backup);
        h.env_from_recover(&req.destination, &relocations, args.remote_ssh_command.as_deref(), &hook_options, error);
    };
    if let Some(hooks) = &hooks {
        if let Err(abort) = hooks.run_pre(&|h| hook_env(h, None)) {
            out.error(&format!("Recovery of backup {} stopped: {abort}", backup.backup_id));
            return Ok(None);
        }
    }
    let start_time = local_now_with_offset();
    let start_epoch = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let result = recover_with(&req, &setup, &mut |n| notice(out, &n));
    if let Some(hooks) = &hooks {
        let error = result.as_ref().err().map(ToString::to_string);
        hooks.run_post(&|h, _| hook_env(h, error.as_deref()));
    }
    let report = match result {
        Ok(r) => r,
        // Barman's own texts (pg_combinebackup missing, of another major, failed), or a broken
        // chain named with its backups.
        Err(RecoveryError::Combine(e)) => {
            out.error(&e.to_string());
            return Ok(None);
        }
        // Barman's refusals (a destination that is not empty), as it prints them.
        Err(RecoveryError::Refused(why)) => {
            out.error(&why);
            return Ok(None);
        }
        Err(e) => {
            out.error(&format!("Recovery of backup {} failed: {e}", backup.backup_id));
            return Ok(None);
        }
    };
    let elapsed = human_duration(std::time::Duration::from_secs_f64(report.elapsed.max(0.0)), false);
    match out.mode() {
        Mode::Json => {
            if !report.changes.is_empty() {
                out.warning("IMPORTANT! Some settings have been modified to prevent data losses. See 'changes' key.");
            }
            if !report.warnings.is_empty() {
                out.warning("WARNING! You are required to review the options as potentially dangerous. See 'warnings' key.");
            }
            let rows = |v: &[ConfLine]| Value::Array(v.iter().map(|c| json!([c.file, c.line, c.key, c.value])).collect());
            out.result("changes", rows(&report.changes));
            out.result("changes_count", json!(report.changes.len()));
            out.result("warnings", rows(&report.warnings));
            out.result("warnings_count", json!(report.warnings.len()));
            out.result("missing_files", json!(report.missing_files));
            if report.get_wal {
                out.warning(
                    "WARNING: 'get-wal' is in the specified 'recovery_options'. Before you start up the PostgreSQL \
                     server, please review the recovery configuration inside the target directory. Make sure that \
                     'restore_command' can be executed by the PostgreSQL user.",
                );
            }
            out.result("recovery_start_time", json!(start_time));
            out.result("recovery_start_time_timestamp", json!(start_epoch.to_string()));
            out.result("recovery_elapsed_time", json!(elapsed));
            out.result("recovery_elapsed_time_seconds", json!(report.elapsed));
        }
        _ => {
            let block = |out: &mut Output, title: &str, text: &str, rows: &[ConfLine]| {
                if rows.is_empty() {
                    return;
                }
                out.info("");
                out.info(title);
                out.info(text);
                out.info("");
                for c in rows {
                    out.info(&format!("{} line {}: {} = {}", c.file, c.line, c.key, c.value));
                }
            };
            block(out, "IMPORTANT", "These settings have been modified to prevent data losses", &report.changes);
            block(out, "WARNING", "You are required to review the following options as potentially dangerous", &report.warnings);
            if !report.missing_files.is_empty() {
                out.info("");
                out.info("WARNING");
                out.info("The following configuration files have not been saved during backup, hence they have not been restored.");
                out.info("You need to manually restore them in order to start the recovered PostgreSQL instance:");
                out.info("");
                for f in &report.missing_files {
                    out.info(&format!("    {f}"));
                }
            }
            if report.get_wal {
                out.info("");
                out.info("WARNING: 'get-wal' is in the specified 'recovery_options'.");
                out.info(&format!(
                    "Before you start up the PostgreSQL server, please review the {} file",
                    report.recovery_configuration_file
                ));
                out.info("inside the target directory. Make sure that 'restore_command' can be executed by the PostgreSQL user.");
            }
            out.info("");
            out.info(&format!("Restore operation completed (start time: {start_time}, elapsed time: {elapsed})"));
            out.info("Your PostgreSQL server has been successfully prepared for recovery!");
        }
    }
    Ok(None)
}

/// Where a compressed backup is unpacked and an incremental one combined, and where that
/// place is: Barman's rules (cli.py, `recover`). `staging_path` (default `/tmp`) with
/// `staging_location`; a backup that needs staging (compressed or incremental) restored with
/// only the deprecated options uses `recovery_staging_path` to unpack and
/// `local_staging_path` to combine, always locally, and must have the one it needs.
struct Staging {
    /// Where a compressed backup (or a compressed member of a chain) is unpacked.
    decompress: PathBuf,
    /// Where a chain is combined before it is sent to a remote host.
    combine: PathBuf,
    /// `staging_location`.
    location: StagingLocation,
}

fn staging_of(args: &RecoverArgs, server: &ServerConfig, backup: &BackupInfo, out: &mut Output) -> anyhow::Result<Staging> {
    let absolute = |what: &str, value: &Option<String>| -> anyhow::Result<Option<String>> {
        match value {
            Some(path) if !std::path::Path::new(path).is_absolute() => {
                anyhow::bail!("Cannot parse {what}: Invalid value : '{path}' (must be an absolute path)")
            }
            other => Ok(other.clone()),
        }
    };
    let new_path = absolute("staging path", &args.staging_path)?.or_else(|| server.staging_path.clone());
    let location = match args.staging_location.as_deref() {
        Some("remote") => StagingLocation::Remote,
        Some(_) => StagingLocation::Local,
        None => server.staging_location,
    };
    let recovery_path = absolute("recovery staging path", &args.recovery_staging_path)?.or_else(|| server.recovery_staging_path.clone());
    let local_path = absolute("local staging path", &args.local_staging_path)?.or_else(|| server.local_staging_path.clone());
    let compression = backup.compression.as_deref().filter(|c| *c != "None");
    let incremental = backup.parent_backup_id.is_some();
    let (id, name) = (&args.backup_id, &server.name);
    Ok(match new_path {
        Some(path) => Staging { decompress: PathBuf::from(&path), combine: PathBuf::from(path), location },
        None if recovery_path.is_none() && local_path.is_none() => {
            Staging { decompress: PathBuf::from("/tmp"), combine: PathBuf::from("/tmp"), location }
        }
        None => {
            if let (Some(compression), None) = (compression, &recovery_path) {
                anyhow::bail!(
                    "Cannot restore from backup '{id}' of server '{name}': backup is compressed with {compression} \
                     compression and it will be decompressed in a staging area but no staging path was provided. \
                     Please set staging_path and staging_location in the server configuration file, or use their \
                     equivalent CLI options --staging-path and --staging-location"
                );
            }
            if incremental && local_path.is_none() {
                anyhow::bail!(
                    "Cannot restore from backup '{id}' of server '{name}': backup has to be combined with \
                     pg_combinebackup in a staging area but no staging path and location was provided. Please set \
                     staging_path and staging_location in the server configuration file, or use their equivalent \
                     CLI options --staging-path and --staging-location"
                );
            }
            if compression.is_some() || incremental {
                out.warning(
                    "recovery_staging_path and local_staging_path, and their equivalent CLI options \
                     --recovery-staging-path and --local-staging-path, are deprecated and will be removed in \
                     a future release. Please use staging_path and staging_location, and their equivalent \
                     CLI options --staging-path and --staging-location, instead.",
                );
            }
            Staging {
                decompress: PathBuf::from(recovery_path.as_deref().unwrap_or("/tmp")),
                combine: PathBuf::from(local_path.as_deref().unwrap_or("/tmp")),
                location: StagingLocation::Local,
            }
        }
    })
}

/// `--remote-ssh-command`, `--get-wal`, `--recovery-conf-filename`, `--delta-restore` and how
/// a chain is combined, with Barman's rules: the options override the configuration
/// (`recovery_options`, `bandwidth_limit`, `network_compression`, `staging_path`,
/// `basebackup_retry_*`, `combine_mode`).
fn setup_of(
    args: &RecoverArgs,
    config: &Config,
    server: &ServerConfig,
    backup: &BackupInfo,
    jobs: usize,
    out: &mut Output,
) -> anyhow::Result<RecoverySetup> {
    let staging = staging_of(args, server, backup, out)?;
    let remote = match &args.remote_ssh_command {
        None => None,
        Some(ssh_command) => {
            let bwlimit = args.bwlimit.or_else(|| server.bandwidth_limit.and_then(|b| u64::try_from(b).ok()));
            let tablespace_bwlimit = server
                .tablespace_bandwidth_limit
                .iter()
                .flatten()
                .filter_map(|(k, v)| Some((k.clone(), u64::try_from(*v).ok()?)))
                .collect();
            let retry_times = if args.no_retry { 0 } else { args.retry_times.unwrap_or(server.basebackup_retry_times.max(0) as u64) };
            Some(RemoteOptions {
                ssh_command: ssh_command.clone(),
                bwlimit,
                tablespace_bwlimit,
                network_compression: if args.no_network_compression {
                    false
                } else {
                    args.network_compression || server.network_compression
                },
                staging_path: staging.decompress.clone(),
                staging_location: staging.location,
                retry_times: u32::try_from(retry_times).unwrap_or(u32::MAX),
                retry_sleep: std::time::Duration::from_secs(args.retry_sleep.unwrap_or(server.basebackup_retry_sleep.max(0) as u64)),
            })
        }
    };
    let combine = CombineOptions {
        path_prefix: server.path_prefix.clone(),
        mode: match args.combine_mode.as_deref() {
            Some(mode) => mode.parse().map_err(anyhow::Error::msg)?,
            None => server.combine_mode,
        },
        staging_path: staging.combine,
        decompress_staging_path: staging.decompress,
    };
    let get_wal = if args.no_get_wal { false } else { args.get_wal || server.recovery_options.get_wal };
    let barman_user = &config.global.barman_user;
    let wal = match (get_wal, &args.remote_ssh_command) {
        (false, _) => WalSource::Copy,
        (true, Some(_)) => WalSource::remote_get_wal(
            barman_user,
            args.recovery_option_port.as_deref(),
            &fqdn(),
            &server.name,
            jobs as u64,
            args.standby_mode,
        ),
        (true, None) => {
            let (program, config_file) = get_wal_invocation(&config.main_file);
            WalSource::local_get_wal(&program, config_file.as_deref(), &server.name, barman_user, args.standby_mode)
        }
    };
    // `--delta-restore` / `--no-delta-restore` override `recovery_options = delta-restore`.
    let delta = if args.delta_restore {
        true
    } else if args.no_delta_restore {
        false
    } else {
        server.recovery_options.delta_restore
    };
    Ok(RecoverySetup { remote, wal, recovery_conf_filename: args.recovery_conf_filename.clone(), combine, delta })
}

/// How the restored server's `restore_command` runs this barman locally: Barman writes
/// `barman get-wal …` and counts on PostgreSQL's user finding the same configuration. Two
/// additions so that the command works as written:
/// - `barman` when that name on PATH is this executable, else this executable's path (a
///   build not installed on PATH);
/// - `-c <file>` unless the configuration is the one a user without `~/.barman.conf` finds
///   by default (`/etc/barman.conf`, or `/etc/barman/barman.conf` when the former does not
///   exist): PostgreSQL's user has another home, and no `-c` of ours.
fn get_wal_invocation(main_file: &std::path::Path) -> (String, Option<PathBuf>) {
    let me = std::env::current_exe().ok().and_then(|p| p.canonicalize().ok());
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path).map(|d| d.join("barman")).find(|p| p.is_file()).and_then(|p| p.canonicalize().ok())
    });
    let program = match (&me, &on_path) {
        (Some(me), Some(found)) if me == found => "barman".to_owned(),
        (Some(me), _) => me.display().to_string(),
        (None, _) => "barman".to_owned(),
    };
    let main = main_file.canonicalize().unwrap_or_else(|_| main_file.to_path_buf());
    let etc = std::path::Path::new("/etc/barman.conf");
    let default = main == etc || (main == std::path::Path::new("/etc/barman/barman.conf") && !etc.exists());
    (program, (!default).then_some(main))
}

/// The options Barman passes to the recovery hooks (`BARMAN_RECOVER_OPTIONS`): those set.
fn recover_options(args: &RecoverArgs) -> BTreeMap<String, Value> {
    let mut o = BTreeMap::new();
    let mut text = |k: &str, v: &Option<String>| {
        if let Some(v) = v.as_ref().filter(|v| !v.is_empty()) {
            o.insert(k.to_owned(), Value::from(v.as_str()));
        }
    };
    text("target_tli", &args.target_tli);
    text("target_time", &args.target_time);
    text("target_xid", &args.target_xid);
    text("target_lsn", &args.target_lsn);
    text("target_name", &args.target_name);
    text("target_action", &args.target_action);
    for (k, on) in [("target_immediate", args.target_immediate), ("exclusive", args.exclusive), ("standby_mode", args.standby_mode)] {
        if on {
            o.insert(k.to_owned(), Value::Bool(true));
        }
    }
    o
}

fn target_of(args: &RecoverArgs) -> anyhow::Result<RecoveryTarget> {
    let timeline = match args.target_tli.as_deref() {
        None => None,
        Some("current") => Some(TargetTimeline::Current),
        Some("latest") => Some(TargetTimeline::Latest),
        Some(n) => Some(TargetTimeline::Id(n.parse().with_context(|| format!("--target-tli {n}"))?)),
    };
    Ok(RecoveryTarget {
        time: args.target_time.clone(),
        xid: args.target_xid.clone(),
        lsn: args.target_lsn.clone(),
        name: args.target_name.clone(),
        immediate: args.target_immediate,
        exclusive: args.exclusive,
        timeline,
        action: args.target_action.clone(),
    })
}


fn absolute(dir: &str) -> anyhow::Result<PathBuf> {
    let p = PathBuf::from(dir);
    Ok(if p.is_absolute() { p } else { std::env::current_dir().context("the current directory")?.join(p) })
}

fn notice(out: &mut Output, n: &RecoveryNotice) {
    match n {
        RecoveryNotice::Starting { server, id, destination, remote } => {
            let place = if remote.is_some() { "remote" } else { "local" };
            out.info(&format!("Starting {place} restore for server {server} using backup {id}"));
            out.info(&format!("Destination directory: {}", destination.display()));
            if let Some(command) = remote {
                out.info(&format!("Remote command: {command}"));
            }
        }
        RecoveryNotice::Pitr(text) => out.info(text),
        RecoveryNotice::CopyingBase => out.info("Copying the base backup."),
        RecoveryNotice::SafeHorizon(time) => out.info(&format!("Using safe horizon time for smart rsync copy: {time}")),
        RecoveryNotice::DeltaCopied { directory, stats } => out.info(&format!(
            "\tdelta restore of {}: {} files unchanged, {} written ({}), {} removed",
            directory.display(),
            stats.unchanged,
            stats.written,
            barman_core::output::pretty_size(stats.written_bytes as f64),
            stats.removed
        )),
        RecoveryNotice::CombineStarted { id, output } => {
            out.info(&format!("Start combining backup via pg_combinebackup for backup {id} on {}", output.display()))
        }
        RecoveryNotice::CombineEnded { id } => out.info(&format!("End combining backup via pg_combinebackup for backup {id}")),
        RecoveryNotice::Warning(text) => out.warning(text),
        RecoveryNotice::Tablespace { oid, name, location } => out.info(&format!("\t{oid}, {name}, {}", location.display())),
        RecoveryNotice::CopyingWal => out.info("Copying required WAL segments."),
        RecoveryNotice::PartialWal(name) => {
            out.info(&format!("\t{name} (the WAL receiver's partial segment: its last fsynced bytes)"))
        }
        RecoveryNotice::GeneratingConfig => out.info("Generating recovery configuration"),
        RecoveryNotice::IdentifyDangerous => out.info("Identify dangerous settings in destination directory."),
        RecoveryNotice::SignalFilesRemoved { removed, written } => out.info(&format!(
            "Removed {} found in the backup: the server starts with {written} only, as this recovery asks",
            removed.join(" and ")
        )),
    }
}
