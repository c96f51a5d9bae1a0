//! `barman recover` (alias `restore`): a backup into a new data directory, prepared for
//! (point-in-time) recovery, as Barman's `Server.recover` — one archiver pass first, so the
//! WAL received until now can be replayed.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Context as _;
use barman_core::archive_wal::{self, ArchiverSettings};
use barman_core::catalog::query::BackupCatalog;
use barman_core::catalog::BackupStatus;
use barman_core::compression::WalCompression;
use barman_core::config::{Config, ServerConfig};
use barman_core::hooks::{HookKind, HookSet};
use barman_core::output::{human_duration, local_now_with_offset};
use barman_core::recovery::{recover, ConfLine, RecoveryNotice, RecoveryRequest, RecoveryTarget, TargetTimeline};
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
    refuse_unsupported(args, server)?;
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

    let mut tablespaces = BTreeMap::new();
    for spec in &args.tablespace {
        let (name, location) = spec
            .split_once(':')
            .with_context(|| format!("Invalid tablespace relocation rule '{spec}' (NAME:LOCATION expected)"))?;
        tablespaces.insert(name.to_owned(), PathBuf::from(location));
    }
    let jobs = args.jobs.map(|j| j as usize).unwrap_or_else(|| usize::try_from(server.parallel_jobs).unwrap_or(1)).max(1);
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
        h.env_from_recover(&req.destination, &relocations, None, &hook_options, error);
    };
    if let Some(hooks) = &hooks {
        if let Err(abort) = hooks.run_pre(&|h| hook_env(h, None)) {
            out.error(&format!("Recovery of backup {} stopped: {abort}", backup.backup_id));
            return Ok(None);
        }
    }
    let start_time = local_now_with_offset();
    let start_epoch = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let result = recover(&req, &mut |n| notice(out, &n));
    if let Some(hooks) = &hooks {
        let error = result.as_ref().err().map(ToString::to_string);
        hooks.run_post(&|h, _| hook_env(h, error.as_deref()));
    }
    let report = match result {
        Ok(r) => r,
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
            out.info("");
            out.info(&format!("Restore operation completed (start time: {start_time}, elapsed time: {elapsed})"));
            out.info("Your PostgreSQL server has been successfully prepared for recovery!");
        }
    }
    Ok(None)
}

/// What barman-rs cannot do yet: said and refused, never silently ignored.
fn refuse_unsupported(args: &RecoverArgs, server: &ServerConfig) -> anyhow::Result<()> {
    if args.remote_ssh_command.is_some() {
        anyhow::bail!("recover --remote-ssh-command is not implemented yet in barman-rs; restore locally");
    }
    let get_wal = if args.no_get_wal {
        false
    } else {
        args.get_wal || server.recovery_options.get_wal
    };
    if get_wal {
        anyhow::bail!(
            "recover --get-wal (or recovery_options = get-wal) is not implemented yet in barman-rs; \
             use --no-get-wal: the WAL is then copied into the destination"
        );
    }
    if args.recovery_conf_filename.is_some() {
        anyhow::bail!("recover --recovery-conf-filename is not implemented yet in barman-rs");
    }
    Ok(())
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
        RecoveryNotice::Starting { server, id, destination } => {
            out.info(&format!("Starting local restore for server {server} using backup {id}"));
            out.info(&format!("Destination directory: {}", destination.display()));
        }
        RecoveryNotice::Pitr(text) => out.info(text),
        RecoveryNotice::CopyingBase => out.info("Copying the base backup."),
        RecoveryNotice::Tablespace { oid, name, location } => out.info(&format!("\t{oid}, {name}, {}", location.display())),
        RecoveryNotice::CopyingWal => out.info("Copying required WAL segments."),
        RecoveryNotice::PartialWal(name) => {
            out.info(&format!("\t{name} (the WAL receiver's partial segment: its last fsynced bytes)"))
        }
        RecoveryNotice::GeneratingConfig => out.info("Generating recovery configuration"),
        RecoveryNotice::IdentifyDangerous => out.info("Identify dangerous settings in destination directory."),
    }
}
