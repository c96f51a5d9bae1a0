//! One function per implemented command: load the configuration, pick the servers as Barman
//! does (`get_server_list` / `manage_server_command`), call barman-core, render.
//!
//! Commands are grouped by what they work on, one file each: [`diagnostics`] (check, status,
//! show-servers, …), [`backup`] (backup), [`wal`] (receive-wal, archive-wal, switch-wal,
//! put-wal, …), [`get_wal`], [`catalog`] (list-backups, show-backup, …), [`recover`], [`sync`]
//! (sync-info, sync-backup, sync-wals), [`config`] (config-switch, config-update). Each group
//! says which of its commands are built with its own `implemented`.

mod backup;
mod catalog;
mod config;
mod diagnostics;
mod get_wal;
mod processes;
mod put_wal;
mod recover;
mod retention;
mod sync;
mod wal;

use std::path::PathBuf;

use anyhow::Context as _;
use barman_core::catalog::query::BackupCatalog;
use barman_core::catalog::{BackupInfo, BackupSelector, CatalogError, ServerCatalog};
use barman_core::config::{self as core_config, Config, ConfigWarning, ServerConfig};
use clap::CommandFactory as _;

use crate::cli::{Cli, Command};
use crate::output::Output;

/// Whether the command has an engine in this build.
pub fn implemented(cmd: &Command) -> bool {
    matches!(cmd, Command::Completions { .. } | Command::Man { .. })
        || diagnostics::implemented(cmd)
        || backup::implemented(cmd)
        || wal::implemented(cmd)
        || catalog::implemented(cmd)
        || recover::implemented(cmd)
        || get_wal::implemented(cmd)
        || put_wal::implemented(cmd)
        || retention::implemented(cmd)
        || processes::implemented(cmd)
        || sync::implemented(cmd)
        || config::implemented(cmd)
}

/// Prints completions for `shell`.
pub fn completions(shell: clap_complete::Shell) {
    use std::io::Write as _;
    let mut cmd = Cli::command();
    let mut text = Vec::new();
    clap_complete::generate(shell, &mut cmd, "barman", &mut text);
    // A closed pipe (`| head`) is not an error.
    let _ = std::io::stdout().lock().write_all(&text);
}

/// Writes `barman.1` and `barman-<command>.1` for every visible command into `dir`, from the
/// same definitions the parser uses (so they cannot drift). Returns how many.
pub fn man_pages(dir: &std::path::Path) -> anyhow::Result<usize> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let cmd = Cli::command();
    let mut written = 0;
    let mut write = |name: &str, page: clap::Command| -> anyhow::Result<()> {
        let path = dir.join(format!("{name}.1"));
        let mut text = Vec::new();
        clap_mangen::Man::new(page).render(&mut text).with_context(|| format!("rendering {name}"))?;
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        written += 1;
        Ok(())
    };
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("barman-{}", sub.get_name());
        write(&name, sub.clone().display_name(name.clone()).bin_name(format!("barman {}", sub.get_name())))?;
    }
    write("barman", cmd)?;
    Ok(written)
}

/// Runs an implemented command; `Ok(Some(code))` forces the exit status (Nagios).
pub fn run(cli: &Cli, out: &mut Output) -> anyhow::Result<Option<u8>> {
    let config = load_config(cli)?;
    crate::logging::init(&config, cli.log_level);
    report_warnings(&config, out);
    if diagnostics::implemented(&cli.command) {
        return diagnostics::run(cli, &config, out);
    }
    if backup::implemented(&cli.command) {
        return backup::run(cli, &config, out);
    }
    if wal::implemented(&cli.command) {
        return wal::run(cli, &config, out);
    }
    if catalog::implemented(&cli.command) {
        return catalog::run(cli, &config, out);
    }
    if recover::implemented(&cli.command) {
        return recover::run(cli, &config, out);
    }
    if get_wal::implemented(&cli.command) {
        return get_wal::run(cli, &config, out);
    }
    if put_wal::implemented(&cli.command) {
        return put_wal::run(cli, &config, out);
    }
    if retention::implemented(&cli.command) {
        return retention::run(cli, &config, out);
    }
    if processes::implemented(&cli.command) {
        return processes::run(cli, &config, out);
    }
    if sync::implemented(&cli.command) {
        return sync::run(cli, &config, out);
    }
    if config::implemented(&cli.command) {
        return config::run(cli, &config, out);
    }
    unreachable!("filtered by implemented()")
}

/// A runtime for the async engines; commands that need one build it.
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")
}

fn env_lookup(k: &str) -> Option<String> {
    std::env::var(k).ok()
}

fn load_config(cli: &Cli) -> anyhow::Result<Config> {
    let explicit = cli.config.clone().or_else(|| std::env::var_os("BARMAN_CONFIG_FILE").map(PathBuf::from));
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let main = core_config::locate_main_file(&core_config::RealFs, explicit.as_deref(), &core_config::DEFAULT_LOCATIONS, home.as_deref())?;
    Ok(Config::load(&main)?)
}

fn report_warnings(config: &Config, out: &mut Output) {
    for w in &config.warnings {
        match w {
            // Barman prints this one on every command (server.py, ARCHIVER_OFF_BACKCOMPATIBILITY).
            ConfigWarning::Server { server, message } if message.starts_with("No archiver enabled") => {
                out.warning(&format!(
                    "No archiver enabled for server '{server}'. Please turn on 'archiver', 'streaming_archiver' or both"
                ));
                out.warning("Forcing 'archiver = on'");
            }
            other => out.debug(&other.to_string()),
        }
    }
}

/// Barman's `get_server_list`: `None` when global errors stop the command; unknown servers
/// are reported and left out.
fn select<'a>(config: &'a Config, names: &[String], out: &mut Output, stop_on_global: bool) -> Option<Vec<&'a ServerConfig>> {
    if !config.path_conflicts.is_empty() {
        for e in &config.path_conflicts {
            out.error(e);
        }
        if stop_on_global {
            return None;
        }
    }
    let mut wanted: Vec<String> = if names.iter().any(|n| n == "all") {
        if names.len() != 1 {
            out.error("You cannot use 'all' with other server names");
        }
        config.servers.keys().map(|n| n.as_str().to_owned()).collect()
    } else {
        names.to_vec()
    };
    wanted.sort();
    wanted.dedup();
    let mut found = Vec::new();
    for name in wanted {
        match config.server(&name) {
            Some(s) => found.push(s),
            None => out.error(&format!("Unknown server '{name}'")),
        }
    }
    Some(found)
}

/// Barman's `get_server` + `manage_server_command` for a command on one server that changes
/// or reads its catalog: the server, or `None` after the error was reported (unknown,
/// inactive, or disabled by configuration errors, each listed).
fn one_server<'a>(config: &'a Config, name: &str, out: &mut Output) -> Option<&'a ServerConfig> {
    if !config.path_conflicts.is_empty() {
        for e in &config.path_conflicts {
            out.error(e);
        }
        return None;
    }
    let Some(server) = config.server(name) else {
        out.error(&format!("Unknown server '{name}'"));
        return None;
    };
    if !server.active {
        out.error(&format!("Inactive server: {name}"));
        return None;
    }
    if server.disabled {
        for m in &server.messages {
            out.error(m);
        }
        out.error(&format!("Configuration errors for server '{name}'"));
        return None;
    }
    Some(server)
}

/// The server's catalog paths, from its configuration.
fn server_catalog(config: &Config, server: &ServerConfig) -> ServerCatalog {
    ServerCatalog::from_config(server, &config.global)
}

/// Barman's `parse_backup_id`: the backup an ID, shortcut or name designates among
/// `catalog`'s, or `None` after Barman's message was reported.
fn find_backup<'c>(catalog: &'c BackupCatalog, server: &str, typed: &str, out: &mut Output) -> Option<&'c BackupInfo> {
    let selector: BackupSelector = typed.parse().unwrap_or_else(|e| match e {});
    match catalog.resolve(&selector) {
        Ok(info) => Some(info),
        Err(CatalogError::AmbiguousBackupName { name, ids }) => {
            let ids: Vec<&str> = ids.iter().map(|i| i.as_str()).collect();
            out.error(&format!(
                "Multiple backups found matching name '{name}' (try using backup ID instead): {}",
                ids.join(" ")
            ));
            None
        }
        Err(_) => {
            out.error(&format!("Unknown backup '{typed}' for server '{server}'"));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn man_pages_come_from_the_parser() {
        let dir = tempfile::tempdir().unwrap();
        let n = super::man_pages(dir.path()).unwrap();
        assert!(n > 30, "one page per command: {n}");
        let main = std::fs::read_to_string(dir.path().join("barman.1")).unwrap();
        assert!(main.starts_with(".ie") && main.contains(".TH barman 1"), "{main}");
        let recover = std::fs::read_to_string(dir.path().join("barman-recover.1")).unwrap();
        assert!(recover.contains("target\\-time") && recover.contains("barman recover"), "{recover}");
        assert!(!dir.path().join("barman-man.1").exists(), "hidden commands have no page");
    }
}
