//! `config-switch` and `config-update` (Barman's `cli.config_switch` / `cli.config_update`),
//! and the queue pass `cron` makes first.
//!
//! After a switch or an update, Barman's `restart_processes`: the server's `receive-wal` is
//! stopped, and started again when `streaming_archiver` is on, so WAL streams with the new
//! settings at once rather than at the next `cron`. Unlike Barman, which decides from the
//! settings it had in memory before the change, we decide from the configuration as it now
//! loads (a change that turns `streaming_archiver` off does not start a receiver the new
//! settings refuse), and only for an active, enabled server, as `cron` would.

use anyhow::Context as _;
use barman_core::config::changes::{self, ChangeError, Notice};
use barman_core::config::models::{self, Switch};
use barman_core::config::{Config, ServerConfig};
use barman_core::diagnostics::status::config_values;

use super::{server_catalog, wal};
use crate::cli::{Cli, Command};
use crate::output::Output;

/// Whether `cmd` belongs here.
pub fn implemented(cmd: &Command) -> bool {
    matches!(cmd, Command::ConfigSwitch { .. } | Command::ConfigUpdate { .. })
}

/// Runs one of this group's commands.
pub fn run(cli: &Cli, config: &Config, out: &mut Output) -> anyhow::Result<Option<u8>> {
    match &cli.command {
        Command::ConfigSwitch { server_name, model_name, reset } => {
            config_switch(config, server_name, model_name.as_deref(), *reset, out)?
        }
        Command::ConfigUpdate { json_changes } => config_update(config, json_changes, out)?,
        _ => unreachable!("filtered by implemented()"),
    }
    Ok(None)
}

fn config_switch(config: &Config, name: &str, model: Option<&str>, reset: bool, out: &mut Output) -> anyhow::Result<()> {
    if model.is_none() && !reset {
        out.error("Either a model name or '--reset' flag need to be given");
        return Ok(());
    }
    if !config.path_conflicts.is_empty() {
        config.path_conflicts.iter().for_each(|e| out.error(e));
        return Ok(());
    }
    // Inactive and disabled servers too: a switch may be what makes one usable again.
    let Some(server) = config.server(name) else {
        out.error(&format!("Unknown server '{name}'"));
        return Ok(());
    };
    match model {
        Some(model) if !reset => {
            let Some(m) = config.model(model) else {
                out.error(&format!("Unknown model '{model}'"));
                return Ok(());
            };
            match m.check_switch(server) {
                Err(e) => out.error(&e.to_string()),
                Ok(Switch::AlreadyActive) => {
                    out.info(&format!("Model '{model}' is already active for server '{name}', skipping..."))
                }
                Ok(Switch::Apply) => {
                    out.info(&format!("Applying model '{model}' to server '{name}'"));
                    models::write_active_model(server, model)
                        .with_context(|| format!("server {name}: recording the active model"))?;
                    let fresh = reload(config)?;
                    if let Some(after) = fresh.server(name) {
                        report_model_changes(server, after, m.override_keys(), model, out);
                    }
                }
            }
        }
        _ => {
            out.info(&format!("Resetting the active model for the server {name}"));
            models::remove_active_model(server).with_context(|| format!("server {name}: removing the active model"))?;
        }
    }
    restart_processes(&reload(config)?, name, out);
    Ok(())
}

/// Barman's per-option lines of `apply_model`, for the options whose value changes.
fn report_model_changes<'k>(
    before: &ServerConfig,
    after: &ServerConfig,
    keys: impl Iterator<Item = &'k str>,
    model: &str,
    out: &mut Output,
) {
    let (old, new) = (config_values(before), config_values(after));
    for key in keys {
        let (Some(from), Some(to)) = (old.get(key), new.get(key)) else { continue };
        let (from, to) = (from.python_str(), to.python_str());
        if from != to {
            out.info(&format!(
                "Changing value of option '{key}' for server '{}' from '{from}' to '{to}' through the model '{model}'",
                before.name
            ));
        }
    }
}

fn config_update(config: &Config, json: &str, out: &mut Output) -> anyhow::Result<()> {
    let result = {
        let mut notify = |n: Notice| report(&n, out);
        changes::update(config, json, &mut notify)
    };
    let applied = match result {
        Ok(applied) => applied,
        Err(e) => {
            report_error(&e, out);
            return Ok(());
        }
    };
    // Barman restarts the servers the configuration knew before the change (a new section is
    // not restarted), each once.
    let mut names: Vec<&str> = Vec::new();
    for set in &applied {
        if config.server(&set.section).is_some_and(|s| s.active) && !names.contains(&set.section.as_str()) {
            names.push(&set.section);
        }
    }
    if !names.is_empty() {
        let fresh = reload(config)?;
        for name in names {
            restart_processes(&fresh, name, out);
        }
    }
    Ok(())
}

/// `cron`'s first step: apply what the changes queue holds (no restart, as in Barman).
///
/// As in Barman, only a set that fails to apply is an error; a queue that cannot be read or
/// written is reported and `cron` goes on (Barman logs it).
pub fn process_pending(config: &Config, out: &mut Output) {
    let result = {
        let mut notify = |n: Notice| report(&n, out);
        changes::process_pending(config, &mut notify)
    };
    match result {
        Ok(_) => {}
        Err(ChangeError::Busy) => out.warning("another process is updating barman configuration files"),
        Err(e @ ChangeError::Apply { .. }) => report_error(&e, out),
        Err(e) => {
            tracing::error!(error = %barman_core::error_chain(&e), "cannot process the configuration changes queue");
            out.warning(&format!("configuration changes queue: {}", barman_core::error_chain(&e)));
        }
    }
}

fn report(n: &Notice, out: &mut Output) {
    match n {
        Notice::Changed { .. } => out.info(&n.to_string()),
        Notice::MalformedQueue { .. } => out.warning(&n.to_string()),
    }
}

fn report_error(e: &ChangeError, out: &mut Output) {
    match e {
        ChangeError::InvalidSection { section, problem } => {
            out.error(problem);
            // Barman's text, with its U+2010 hyphen.
            out.error(&format!("Aborting config\u{2010}update: invalid section {section}"));
        }
        ChangeError::Apply { .. } => {
            out.error("Unable to process a set of changes. Exiting.");
            out.error(&barman_core::error_chain(e));
        }
        other => out.error(&barman_core::error_chain(other)),
    }
}

/// The configuration as the next command will load it.
fn reload(config: &Config) -> anyhow::Result<Config> {
    Config::load(&config.main_file).with_context(|| format!("reloading {}", config.main_file.display()))
}

/// Barman's `Server.restart_processes` (see the module doc).
fn restart_processes(fresh: &Config, name: &str, out: &mut Output) {
    let Some(cfg) = fresh.server(name) else { return };
    let catalog = server_catalog(fresh, cfg);
    wal::stop_process(&catalog, "receive-wal", false, out);
    if cfg.streaming_archiver && cfg.active && !cfg.disabled {
        wal::background_receive_wal(fresh, cfg, &catalog, false, out);
    }
}
