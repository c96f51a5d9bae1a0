//! Commands that remove or protect backups: delete, keep (Barman's `cli.delete` and
//! `cli.keep`). The decisions and the deletion order live in `barman_core::retention`; this
//! file picks the server and backup, and prints.

use barman_core::catalog::query::BackupCatalog;
use barman_core::catalog::BackupStatus;
use barman_core::config::{Config, ServerConfig};
use barman_core::retention::{self, annotations, repr, KeepTarget, Level, Notice, RetentionSettings};
use serde_json::json;

use super::{find_backup, one_server, server_catalog};
use crate::cli::{Cli, Command, KeepArgs, ServerBackup};
use crate::output::{Mode, Output};

/// Whether `cmd` belongs here and is built.
pub fn implemented(cmd: &Command) -> bool {
    matches!(cmd, Command::Delete(_) | Command::Keep(_))
}

/// Runs one of this group's commands.
pub fn run(cli: &Cli, config: &Config, out: &mut Output) -> anyhow::Result<Option<u8>> {
    match &cli.command {
        Command::Delete(args) => delete(config, args, out)?,
        Command::Keep(args) => keep(config, args, out)?,
        _ => unreachable!("filtered by implemented()"),
    }
    Ok(None)
}

/// Routes a core notice to the matching output channel.
pub(super) fn print_notice(out: &mut Output, n: Notice) {
    match n.level {
        Level::Info => out.info(&n.text),
        Level::Warning => out.warning(&n.text),
        Level::Error => out.error(&n.text),
        Level::Debug => out.debug(&n.text),
    }
}

/// Barman's `get_server` as `delete` calls it: inactive servers are accepted (their catalog
/// is still there), disabled ones are errors.
fn delete_server<'a>(config: &'a Config, name: &str, out: &mut Output) -> Option<&'a ServerConfig> {
    match config.server(name) {
        Some(s) if !s.active && !s.disabled && config.path_conflicts.is_empty() => Some(s),
        _ => one_server(config, name, out),
    }
}


fn delete(config: &Config, args: &ServerBackup, out: &mut Output) -> anyhow::Result<()> {
    let Some(cfg) = delete_server(config, &args.server_name, out) else { return Ok(()) };
    let catalog = server_catalog(config, cfg);
    let (backups, _) = BackupCatalog::load(&catalog)?;
    let Some(backup) = find_backup(&backups, &cfg.name, &args.backup_id, out).cloned() else { return Ok(()) };
    let settings = RetentionSettings::from_config(cfg).with_hooks(cfg, &config.main_file);
    let deleted = retention::delete_backup(&catalog, &settings, &backup, &mut |n| print_notice(out, n))?;
    if !deleted {
        // Barman formats the backup object itself into this message.
        out.error(&format!("Cannot delete backup ({} {})", cfg.name, repr::backup_info_repr(&backup)));
    }
    Ok(())
}

fn keep(config: &Config, args: &KeepArgs, out: &mut Output) -> anyhow::Result<()> {
    if !(args.release || args.status || args.target.is_some()) {
        out.error("one of the arguments -r/--release -s/--status --target is required");
        return Ok(());
    }
    let Some(cfg) = one_server(config, &args.server_name, out) else { return Ok(()) };
    let catalog = server_catalog(config, cfg);
    let (backups, _) = BackupCatalog::load(&catalog)?;
    let Some(backup) = find_backup(&backups, &cfg.name, &args.backup_id, out).cloned() else { return Ok(()) };
    let id = backup.backup_id;
    if args.status {
        let message = annotations::keep_target(&catalog, id)?.map_or("nokeep", KeepTarget::as_str);
        match out.mode() {
            Mode::Json => out.result(&cfg.name, json!({"keep_status": {"description": "Keep", "message": message}})),
            _ => {
                out.info(&format!("Server {}:", cfg.name));
                out.info(&format!("\tKeep: {message}"));
            }
        }
    } else if args.release {
        annotations::release_keep(&catalog, id)?;
    } else {
        if backup.status != BackupStatus::Done {
            out.error(&format!(
                "Cannot add keep to backup {id} because it has status {}. Only backups with status DONE can be kept.",
                backup.status
            ));
            return Ok(());
        }
        if backup.parent_backup_id.is_some() {
            out.error(&format!(
                "Unable to execute the keep command on backup {id}: is an incremental backup.\n\
                 Only full backups are eligible for the use of the keep command."
            ));
            return Ok(());
        }
        let target = match args.target.as_deref() {
            Some("standalone") => KeepTarget::Standalone,
            _ => KeepTarget::Full, // clap allows only full and standalone
        };
        annotations::keep(&catalog, id, target)?;
    }
    Ok(())
}
