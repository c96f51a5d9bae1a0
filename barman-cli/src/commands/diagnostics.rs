//! Commands that look at servers without changing them: list-servers, show-servers, status,
//! check, diagnose, replication-status.

use std::time::Duration;

use anyhow::Context as _;
use barman_core::config::{Config, ServerConfig};
use barman_core::diagnostics::{checks, diagnose, facts, replication, status, CatalogView};
use barman_core::output::{python_json_pretty, render};

use super::{env_lookup, select};
use crate::cli::{Cli, Command, ReplicationStatusArgs};
use crate::output::{println_out, Mode, Output};

/// Whether `cmd` belongs here.
pub fn implemented(cmd: &Command) -> bool {
    matches!(
        cmd,
        Command::ListServers { .. }
            | Command::ShowServers(_)
            | Command::Status(_)
            | Command::Check(_)
            | Command::Diagnose { .. }
            | Command::ReplicationStatus(_)
    )
}

/// Runs one of this group's commands; `Ok(Some(code))` forces the exit status (Nagios).
pub fn run(cli: &Cli, config: &Config, out: &mut Output) -> anyhow::Result<Option<u8>> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the async runtime")?;
    match &cli.command {
        Command::ListServers { minimal } => list_servers(config, *minimal, out),
        Command::ShowServers(s) => rt.block_on(show_servers(config, &s.server_name, out)),
        Command::Status(s) => rt.block_on(status(config, &s.server_name, out)),
        Command::Check(c) => return Ok(rt.block_on(check(config, &c.servers.server_name, c.nagios, c.check_timeout, out))),
        Command::Diagnose { .. } => rt.block_on(diagnose(config, out)),
        Command::ReplicationStatus(args) => rt.block_on(replication_status(config, args, out)),
        _ => unreachable!("filtered by implemented()"),
    }
    Ok(None)
}

fn check_timeout(cfg: &ServerConfig) -> Duration {
    Duration::from_secs(u64::try_from(cfg.check_timeout).unwrap_or(0))
}

fn list_servers(config: &Config, minimal: bool, out: &mut Output) {
    if !config.path_conflicts.is_empty() {
        for e in &config.path_conflicts {
            out.error(e);
        }
        return;
    }
    for (name, cfg) in &config.servers {
        let mut description = cfg.description.clone().unwrap_or_default();
        if !cfg.active {
            description.push_str(" (inactive)");
        } else if cfg.disabled {
            description.push_str(" (WARNING: disabled)");
        }
        if cfg.is_passive() {
            description.push_str(" (Passive)");
        }
        match out.mode() {
            Mode::Json => out.result(name.as_str(), serde_json::json!({ "description": description })),
            _ if minimal || description.is_empty() => out.info(name.as_str()),
            _ => out.info(&format!("{name} - {description}")),
        }
    }
}

async fn show_servers(config: &Config, names: &[String], out: &mut Output) {
    let Some(servers) = select(config, names, out, true) else { return };
    for cfg in servers {
        let live = facts::gather(cfg, &env_lookup, check_timeout(cfg)).await;
        let catalog = CatalogView::read(&config.global, cfg);
        let values = status::show_values(cfg, &live, &catalog, std::time::SystemTime::now());
        let suffix = render::show_suffix(cfg.active, cfg.disabled);
        match out.mode() {
            Mode::Json => out.result(&cfg.name, render::show_json(suffix, &values)),
            _ => render::show_console(&cfg.name, suffix, &values).iter().for_each(|l| out.info(l)),
        }
    }
}

async fn status(config: &Config, names: &[String], out: &mut Output) {
    let Some(servers) = select(config, names, out, true) else { return };
    for cfg in servers {
        let live = facts::gather(cfg, &env_lookup, check_timeout(cfg)).await;
        let catalog = CatalogView::read(&config.global, cfg);
        let rows = status::status_rows(cfg, &live, &catalog);
        match out.mode() {
            Mode::Json => out.result(&cfg.name, render::status_json(&rows)),
            _ => render::status_console(&cfg.name, &rows).iter().for_each(|l| out.info(l)),
        }
    }
}

async fn check(config: &Config, names: &[String], nagios: bool, timeout: Option<u64>, out: &mut Output) -> Option<u8> {
    if nagios {
        out.set_nagios();
    }
    let Some(servers) = select(config, names, out, true) else {
        return nagios.then(|| nagios_report(&[], out));
    };
    let mut results = Vec::new();
    for cfg in servers {
        let result = checks::run(&config.global, cfg, &env_lookup, timeout).await;
        if result.counts_as_failure() {
            out.set_error();
        }
        match out.mode() {
            Mode::Json => out.result(&cfg.name, render::check_json(&result)),
            Mode::Console => render::check_console(&result, out.colors).iter().for_each(|l| out.info(l)),
            Mode::Nagios => {}
        }
        results.push(result);
    }
    nagios.then(|| nagios_report(&results, out))
}

fn nagios_report(results: &[checks::ServerCheck], out: &Output) -> u8 {
    let global_error = out.error_occurred() && !results.iter().any(checks::ServerCheck::counts_as_failure);
    let (lines, code) = render::check_nagios(results, global_error);
    lines.iter().for_each(|l| println_out(l));
    code
}

async fn diagnose(config: &Config, out: &mut Output) {
    let mut servers = Vec::new();
    for cfg in config.servers.values() {
        let live = facts::gather(cfg, &env_lookup, check_timeout(cfg)).await;
        let catalog = CatalogView::read(&config.global, cfg);
        servers.push(diagnose::ServerDiagnosis { config: cfg, live, catalog });
    }
    let now = chrono_like_now();
    let doc = diagnose::diagnose(config, &servers, env!("CARGO_PKG_VERSION"), &now);
    out.info(&python_json_pretty(&doc));
}

/// The local time in ISO-8601 with offset, microseconds included.
fn chrono_like_now() -> String {
    barman_core::output::iso_now()
}

async fn replication_status(config: &Config, args: &ReplicationStatusArgs, out: &mut Output) {
    let Some(servers) = select(config, &args.servers.server_name, out, true) else { return };
    let target = match args.target.as_str() {
        "hot-standby" => replication::ReplicationTarget::HotStandby,
        "wal-streamer" => replication::ReplicationTarget::WalStreamer,
        _ => replication::ReplicationTarget::All,
    };
    for cfg in servers {
        if !cfg.active {
            out.info(&format!("Skipping inactive server '{}'", cfg.name));
            continue;
        }
        if cfg.is_passive() {
            out.info(&format!("Skipping passive server '{}'", cfg.name));
            continue;
        }
        if cfg.disabled {
            if let Some(m) = cfg.messages.first() {
                out.error(m);
            }
            continue;
        }
        let conninfo = if args.source == "wal-host" { cfg.wal_conninfo.clone().or(cfg.conninfo.clone()) } else { cfg.conninfo.clone() };
        let Some(conninfo) = conninfo else {
            out.error(&format!("Unable to connect to server {}", cfg.name));
            continue;
        };
        let read = tokio::time::timeout(check_timeout(cfg).max(Duration::from_secs(1)), replication::replication_status(&conninfo, &env_lookup, target)).await;
        match read {
            Ok(Ok(st)) => match out.mode() {
                Mode::Json => out.result(&cfg.name, render::replication_json(target, args.minimal, &st)),
                _ => render::replication_console(&cfg.name, target, args.minimal, &st).iter().for_each(|l| out.info(l)),
            },
            Ok(Err(replication::ReplicationStatusError::Connect(why))) => {
                out.debug(&why);
                out.error(&format!("Unable to connect to server {}", cfg.name));
            }
            Ok(Err(e)) => out.error(&e.to_string()),
            Err(_) => out.error(&format!("Unable to connect to server {}", cfg.name)),
        }
    }
}
