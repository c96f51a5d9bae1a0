//! Commands that read the backup catalog: list-backups, show-backup, list-files; the two
//! that maintain it: rebuild-xlogdb (its WAL index) and check-backup (a backup's status from
//! the WAL archived so far); and check-wal-archive (whether the WAL index leaves the archive
//! usable by a new server).
//!
//! The reading commands work on inactive and disabled servers too, as Barman's do
//! (`skip_inactive=False, skip_disabled=False`): the catalog is there even when the server
//! is not.

use std::collections::BTreeMap;

use barman_core::catalog::query::{self, BackupCatalog, FilesTarget, RetentionStatus};
use barman_core::catalog::{BackupId, BackupInfo, BackupStatus, CatalogError, CatalogLock, LockKind, XlogDbEntry};
use barman_core::compression::WalCompression;
use barman_core::config::{Config, ServerConfig};
use barman_core::output::catalog as render;
use barman_core::wal::check_archive_usable;
use serde_json::Value;

use super::{find_backup, one_server, select, server_catalog};
use crate::cli::{Cli, Command, ListFilesArgs, ServerBackup};
use crate::output::{Mode, Output};

/// Whether `cmd` belongs here and is built.
pub fn implemented(cmd: &Command) -> bool {
    matches!(
        cmd,
        Command::ListBackups { .. }
            | Command::ShowBackup(_)
            | Command::ListFiles(_)
            | Command::RebuildXlogdb(_)
            | Command::CheckBackup(_)
            | Command::CheckWalArchive { .. }
    )
}

/// Runs one of this group's commands.
pub fn run(cli: &Cli, config: &Config, out: &mut Output) -> anyhow::Result<Option<u8>> {
    match &cli.command {
        Command::ListBackups { servers, minimal } => list_backups(config, &servers.server_name, *minimal, out),
        Command::ShowBackup(args) => show_backup(config, args, out),
        Command::ListFiles(args) => list_files(config, args, out),
        Command::RebuildXlogdb(s) => rebuild_xlogdb(config, &s.server_name, out),
        Command::CheckBackup(args) => {
            if let Some(cfg) = one_server(config, &args.server_name, out) {
                check_backup(config, cfg, &args.backup_id, out)?;
            }
        }
        Command::CheckWalArchive { server_name, timeline } => {
            if let Some(cfg) = default_server(config, server_name, out) {
                check_wal_archive(config, cfg, *timeline, out)?;
            }
        }
        _ => unreachable!("filtered by implemented()"),
    }
    Ok(None)
}

/// Barman's `get_server` for commands that read a catalog: any configured server, inactive
/// or disabled included; `None` once the problem is reported.
fn any_server<'a>(config: &'a Config, name: &str, out: &mut Output) -> Option<&'a ServerConfig> {
    if name == "all" {
        out.error("You cannot use 'all' in a single server context");
        return None;
    }
    if !config.path_conflicts.is_empty() {
        for e in &config.path_conflicts {
            out.error(e);
        }
        return None;
    }
    let server = config.server(name);
    if server.is_none() {
        out.error(&format!("Unknown server '{name}'"));
    }
    server
}

/// Barman's `get_server` with its defaults: `all` refused, an inactive server skipped with a
/// notice (exit 0), then [`one_server`]'s checks.
fn default_server<'a>(config: &'a Config, name: &str, out: &mut Output) -> Option<&'a ServerConfig> {
    if name == "all" {
        out.error("You cannot use 'all' in a single server context");
        return None;
    }
    if config.path_conflicts.is_empty() && config.server(name).is_some_and(|s| !s.active) {
        out.info(&format!("Skipping inactive server '{name}'"));
        return None;
    }
    one_server(config, name, out)
}

/// The settings used to tell how archived files are compressed. A configuration the archiver
/// would refuse still identifies the built-in formats.
fn compression(cfg: &ServerConfig) -> WalCompression {
    WalCompression::from_config(cfg).unwrap_or_default()
}

/// A server's catalog, with backups that cannot be read reported as warnings.
fn load(config: &Config, cfg: &ServerConfig, out: &mut Output) -> anyhow::Result<BackupCatalog> {
    let (catalog, problems) = BackupCatalog::load(&server_catalog(config, cfg))?;
    for p in problems {
        out.warning(&format!("skipping an unreadable backup: {p}"));
    }
    Ok(catalog)
}

/// The retention status of every backup, when the server has a retention policy.
fn retention(cfg: &ServerConfig, catalog: &BackupCatalog) -> anyhow::Result<Option<BTreeMap<BackupId, RetentionStatus>>> {
    Ok(catalog.retention_now(cfg)?)
}

fn list_backups(config: &Config, names: &[String], minimal: bool, out: &mut Output) {
    let Some(servers) = select(config, names, out, true) else { return };
    for cfg in servers {
        if let Err(e) = list_one(config, cfg, minimal, out) {
            out.error(&format!("{e:#}"));
        }
    }
}

fn list_one(config: &Config, cfg: &ServerConfig, minimal: bool, out: &mut Output) -> anyhow::Result<()> {
    if out.mode() == Mode::Json {
        out.result(&cfg.name, Value::Array(Vec::new()));
    }
    let catalog = load(config, cfg, out)?;
    let xlog = catalog.read_xlogdb(&compression(cfg))?;
    let report = retention(cfg, &catalog)?;
    let rows = catalog.listing(&xlog, report.as_ref());
    match out.mode() {
        Mode::Json => {
            let items = rows.iter().map(|r| render::list_backup_json(r, minimal)).collect();
            out.result(&cfg.name, Value::Array(items));
        }
        _ => rows.iter().for_each(|r| out.info(&render::list_backup_console(&cfg.name, r, minimal))),
    }
    Ok(())
}

fn show_backup(config: &Config, args: &ServerBackup, out: &mut Output) {
    let Some(cfg) = any_server(config, &args.server_name, out) else { return };
    if let Err(e) = show_one(config, cfg, &args.backup_id, out) {
        out.error(&format!("{e:#}"));
    }
}

fn show_one(config: &Config, cfg: &ServerConfig, typed: &str, out: &mut Output) -> anyhow::Result<()> {
    let catalog = load(config, cfg, out)?;
    let Some(info) = find_backup(&catalog, &cfg.name, typed, out) else { return Ok(()) };
    let comp = compression(cfg);
    // Barman reads xlog.db (and the retention report) only for backups whose copy is done.
    let (xlog, report) = if info.status.is_copy_done() {
        (catalog.read_xlogdb(&comp)?, retention(cfg, &catalog)?)
    } else {
        (Vec::<XlogDbEntry>::new(), None)
    };
    let details = catalog.details(info.backup_id, &cfg.name, &xlog, report.as_ref(), &comp)?;
    match out.mode() {
        Mode::Json => out.result(&cfg.name, render::show_backup_json(&details)),
        _ => render::show_backup_console(&details).iter().for_each(|l| out.info(l)),
    }
    Ok(())
}

fn list_files(config: &Config, args: &ListFilesArgs, out: &mut Output) {
    let Some(cfg) = any_server(config, &args.server_name, out) else { return };
    if let Err(e) = list_files_one(config, cfg, args, out) {
        out.error(&format!("{e:#}"));
    }
}

fn list_files_one(config: &Config, cfg: &ServerConfig, args: &ListFilesArgs, out: &mut Output) -> anyhow::Result<()> {
    let target: FilesTarget = args.target.parse().map_err(anyhow::Error::msg)?;
    let catalog = load(config, cfg, out)?;
    let Some(info) = find_backup(&catalog, &cfg.name, &args.backup_id, out) else { return Ok(()) };
    let xlog = match target {
        FilesTarget::Wal | FilesTarget::Full => catalog.read_xlogdb(&compression(cfg))?,
        FilesTarget::Data | FilesTarget::Standalone => Vec::new(),
    };
    for path in catalog.directory_entries(info, target, args.list_empty_directories, &xlog)? {
        out.info(&path.to_string_lossy());
    }
    Ok(())
}

fn rebuild_xlogdb(config: &Config, names: &[String], out: &mut Output) {
    let Some(servers) = select(config, names, out, true) else { return };
    for cfg in servers {
        // Barman's default manage_server_command: inactive servers are skipped quietly,
        // disabled ones are errors.
        if !cfg.active {
            continue;
        }
        if cfg.disabled {
            for m in &cfg.messages {
                out.error(m);
            }
            continue;
        }
        out.info(&format!("Rebuilding xlogdb for server {}", cfg.name));
        match query::rebuild_xlogdb(&server_catalog(config, cfg), &compression(cfg)) {
            Ok(c) => out.info(&format!(
                "Done rebuilding xlogdb for server {} (history: {}, backup_labels: {}, wal_file: {})",
                cfg.name, c.history, c.backup_labels, c.wal_files
            )),
            Err(e) => out.error(&format!("{e:#}")),
        }
    }
}

/// Barman's `Server.check_backup`: decides a backup's status from the archived WAL (a
/// WAITING_FOR_WALS backup whose WAL is all there becomes DONE; one with a gap, FAILED),
/// under the backup's lock, which it does not wait for.
fn check_backup(config: &Config, cfg: &ServerConfig, typed: &str, out: &mut Output) -> anyhow::Result<()> {
    let catalog = load(config, cfg, out)?;
    let Some(info) = find_backup(&catalog, &cfg.name, typed, out) else { return Ok(()) };
    let id = info.backup_id;
    out.debug(&format!("Checking backup {id} of server {}", cfg.name));
    if info.status == BackupStatus::Failed {
        out.error("The validity of a failed backup cannot be checked");
        return Ok(());
    }
    let server = server_catalog(config, cfg);
    let _lock = match CatalogLock::try_acquire(server.lock_directory(), &cfg.name, LockKind::Backup(id)) {
        Ok(lock) => lock,
        Err(CatalogError::LockBusy { .. }) => {
            out.info(&format!("Another process is holding the lock for backup {id} of server {}.", cfg.name));
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    };
    // Read again under the lock: its holder may have just changed it.
    let mut info = BackupInfo::read(&server, id)?;
    let before = info.status;
    barman_core::archive_wal::check_backup(&server, &mut info)?;
    if before == info.status {
        out.debug(&format!("Check finished: the status of backup {id} of server {} remains {before}", cfg.name));
    } else {
        out.debug(&format!(
            "Check finished: the status of backup {id} of server {} changed from {before} to {}",
            cfg.name, info.status
        ));
    }
    Ok(())
}

/// Barman's `check_wal_archive`: `Server <name>:`, then whether xlog.db leaves the archive
/// usable by a new server ([`check_archive_usable`]); a failure is an error (exit 1), logged.
fn check_wal_archive(config: &Config, cfg: &ServerConfig, timeline: Option<u64>, out: &mut Output) -> anyhow::Result<()> {
    match out.mode() {
        Mode::Json => out.result(&cfg.name, Value::Object(serde_json::Map::new())),
        _ => out.info(&format!("Server {}:", cfg.name)),
    }
    // Only xlog.db is needed, not the backups (Barman reads none either).
    let xlog = BackupCatalog::from_backups(server_catalog(config, cfg), Vec::new()).read_xlogdb(&compression(cfg))?;
    match check_archive_usable(xlog.iter().map(|e| &e.name), timeline) {
        Ok(()) => {
            let passed = format!("WAL archive check for server {} passed", cfg.name);
            match out.mode() {
                Mode::Json => out.result(&cfg.name, Value::String(passed)),
                _ => out.info(&format!(" - {passed}")),
            }
        }
        Err(e) => {
            let msg = format!("WAL archive check failed for server {}: {e}", cfg.name);
            tracing::error!("{msg}");
            out.error(&msg);
        }
    }
    Ok(())
}
