//! Geo-redundancy (`barman_core::sync`): `sync-info` (on the primary, or `--primary` from a
//! passive node), `sync-backup` and `sync-wals` (on a passive node), and what `cron` runs for
//! a passive node.

use barman_core::catalog::{BackupId, ServerCatalog};
use barman_core::config::{Config, ServerConfig};
use barman_core::hooks::BARMAN_COMPAT_VERSION;
use barman_core::sync::passive::{self, CronPlan};
use barman_core::sync::{sync_status, Notice, SyncError, SyncPoint};

use super::{one_server, server_catalog};
use crate::cli::{Cli, Command};
use crate::output::Output;

/// Whether `cmd` belongs here.
pub fn implemented(cmd: &Command) -> bool {
    matches!(cmd, Command::SyncInfo { .. } | Command::SyncBackup(_) | Command::SyncWals { .. })
}

/// Runs one of this group's commands.
pub fn run(cli: &Cli, config: &Config, out: &mut Output) -> anyhow::Result<Option<u8>> {
    match &cli.command {
        Command::SyncInfo { primary, server_name, last_wal, last_position } => {
            let Some(cfg) = one_server(config, server_name, out) else { return Ok(None) };
            let catalog = server_catalog(config, cfg);
            let from = SyncPoint { last_wal: last_wal.clone(), last_position: *last_position };
            if *primary {
                let info = passive::primary_node_info(cfg, &catalog, &config.main_file, from, &mut |n| notice(out, n));
                match info {
                    Ok(info) => out.info(&info.text),
                    Err(e) => out.error(&barman_core::error_chain(&e)),
                }
            } else {
                match sync_status(cfg, &catalog, &from, BARMAN_COMPAT_VERSION) {
                    // As Barman's json.dump: on stdout, without a final newline.
                    Ok(text) => print_raw(&text),
                    Err(e) => out.error(&barman_core::error_chain(&e)),
                }
            }
        }
        Command::SyncBackup(args) => {
            let Some(cfg) = passive_server(config, &args.server_name, out) else { return Ok(None) };
            let catalog = server_catalog(config, cfg);
            let Ok(id) = args.backup_id.parse::<BackupId>() else {
                out.error(&format!("Backup {} is absent on {} server", args.backup_id, cfg.name));
                return Ok(None);
            };
            if let Err(e) = passive::sync_backup(cfg, &catalog, id, &mut |n| notice(out, n)) {
                out.error(&barman_core::error_chain(&e));
            }
        }
        Command::SyncWals { server_name } => {
            let Some(cfg) = passive_server(config, server_name, out) else { return Ok(None) };
            let catalog = server_catalog(config, cfg);
            match passive::sync_wals(cfg, &catalog, &mut |n| notice(out, n)) {
                Ok(()) => {}
                // Barman's two wordings: a failed copy command, and anything else.
                Err(e @ SyncError::Ssh(_)) => {
                    out.error(&format!("WAL synchronisation for server {} failed: {}", cfg.name, barman_core::error_chain(&e)))
                }
                Err(e) => {
                    out.error(&format!("WAL synchronisation for server {} failed with: {}", cfg.name, barman_core::error_chain(&e)))
                }
            }
        }
        _ => unreachable!("filtered by implemented()"),
    }
    Ok(None)
}

/// The server, when it is a passive node (Barman's `server %s is not passive` otherwise).
fn passive_server<'a>(config: &'a Config, name: &str, out: &mut Output) -> Option<&'a ServerConfig> {
    let cfg = one_server(config, name, out)?;
    if !cfg.is_passive() {
        out.error(&format!("server {} is not passive", cfg.name));
        return None;
    }
    Some(cfg)
}

/// `cron` for a passive node (Barman's `sync_cron`): asks the primary for its state from the
/// last WAL synced, then starts `sync-backup` for the oldest backup missing here and
/// `sync-wals` when there is WAL to copy, each as a detached `barman` through `spawn`.
pub fn cron(
    config: &Config,
    cfg: &ServerConfig,
    catalog: &ServerCatalog,
    out: &mut Output,
    spawn: &dyn Fn(&[&str]) -> anyhow::Result<()>,
) {
    let name = &cfg.name;
    let from = match passive::load_sync_wals_info(cfg, catalog) {
        Ok(from) => from,
        Err(e) => {
            out.error(&barman_core::error_chain(&e));
            return;
        }
    };
    let primary = match passive::primary_node_info(cfg, catalog, &config.main_file, from, &mut |n| notice(out, n)) {
        Ok(p) => p,
        Err(e) => {
            out.error(&format!("Failed to retrieve the primary node status: {}", barman_core::error_chain(&e)));
            return;
        }
    };
    let plan = match passive::cron_plan(cfg, catalog, &primary, &mut |n| notice(out, n)) {
        Ok(plan) => plan,
        Err(e) => {
            out.error(&format!("server {name}: {}", barman_core::error_chain(&e)));
            CronPlan { backup: None, wals: false }
        }
    };
    if let Some(id) = plan.backup {
        if let Err(e) = spawn(&["sync-backup", name, id.as_str()]) {
            out.error(&format!("server {name}: cannot start sync-backup: {e:#}"));
        }
    }
    if plan.wals {
        if let Err(e) = spawn(&["sync-wals", name]) {
            out.error(&format!("server {name}: cannot start sync-wals: {e:#}"));
        }
    }
}

fn notice(out: &mut Output, n: Notice) {
    match n {
        Notice::Info(t) => out.info(&t),
        Notice::Warning(t) => out.warning(&t),
        Notice::Error(t) => out.error(&t),
    }
}

/// Writes `text` to stdout as it is; a closed pipe is not an error.
fn print_raw(text: &str) {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(text.as_bytes());
    let _ = stdout.flush();
}
