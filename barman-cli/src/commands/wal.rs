//! WAL commands: archive-wal, receive-wal, switch-wal, cron (get-wal and put-wal are not built
//! yet). Messages and exit codes are Barman's (`barman/cli.py`, `barman/server.py`).

use std::cell::RefCell;
use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use barman_core::archive_wal::switch::{self, SwitchOutcome, WaitTarget};
use barman_core::archive_wal::{self, ArchiveError, ArchiverSettings};
use barman_core::catalog::{BackupInfo, BackupStatus, CatalogError, LockKind, ServerCatalog, ServerIdentity};
use barman_core::config::{Config, ServerConfig};
use barman_core::diagnostics::facts;
use barman_core::receive_wal::{self, ReceiverNotice, ReceiverSettings};
use barman_core::storage::{create_dir_all_durable, DIR_MODE};
use barman_core::wal::WalFileName;
use barman_replication::{Connection, Lsn, SessionKind};

use super::{env_lookup, one_server, runtime, select, server_catalog};
use crate::cli::{Cli, Command, ReceiveWalArgs, SwitchWalArgs};
use crate::output::Output;

/// Whether `cmd` belongs here and is built.
pub fn implemented(cmd: &Command) -> bool {
    matches!(cmd, Command::ArchiveWal { .. } | Command::ReceiveWal(_) | Command::SwitchWal(_) | Command::Cron { .. })
}

/// Runs one of this group's commands.
pub fn run(cli: &Cli, config: &Config, out: &mut Output) -> anyhow::Result<Option<u8>> {
    match &cli.command {
        Command::ArchiveWal { server_name } => archive_wal_command(config, server_name, out),
        Command::ReceiveWal(args) => receive_wal_command(config, args, out)?,
        Command::SwitchWal(args) => switch_wal_command(config, args, out)?,
        Command::Cron { keep_descriptors } => cron(config, *keep_descriptors, out)?,
        _ => unreachable!("filtered by implemented()"),
    }
    Ok(None)
}


/// The server's archiver settings with its archive hooks; `None` after the error was shown.
fn archiver_settings(config: &Config, cfg: &ServerConfig, out: &mut Output) -> Option<ArchiverSettings> {
    match ArchiverSettings::from_config(cfg) {
        Ok(s) => Some(s.with_hooks(cfg, &config.main_file)),
        Err(e) => {
            out.error(&format!("server {}: {}", cfg.name, barman_core::error_chain(&e)));
            None
        }
    }
}

// ---------------------------------------------------------------------------------------------
// archive-wal

fn archive_wal_command(config: &Config, name: &str, out: &mut Output) {
    let Some(cfg) = one_server(config, name, out) else { return };
    let Some(settings) = archiver_settings(config, cfg, out) else { return };
    let catalog = server_catalog(config, cfg);
    out.debug(&format!("Starting archive-wal for server {name}"));
    match archive_wal::archive_wal(&catalog, &settings, &mut |e| out.info(&e.console_line())) {
        Ok(_) => {}
        // Barman reports a busy archiver as information, exit 0.
        Err(e @ ArchiveError::AlreadyRunning { .. }) => out.info(&e.to_string()),
        Err(e) => out.error(&format!("server {name}: archive-wal failed: {}", barman_core::error_chain(&e))),
    }
}

// ---------------------------------------------------------------------------------------------
// receive-wal

fn receive_wal_command(config: &Config, args: &ReceiveWalArgs, out: &mut Output) -> anyhow::Result<()> {
    let Some(cfg) = one_server(config, &args.server_name, out) else { return Ok(()) };
    let catalog = server_catalog(config, cfg);
    if args.stop && args.reset {
        out.error("--stop and --reset options are not compatible");
    } else if args.stop {
        stop_process(&catalog, "receive-wal", true, out);
    } else if args.create_slot {
        runtime()?.block_on(create_slot(cfg, args.if_not_exists, out));
    } else if args.drop_slot {
        runtime()?.block_on(drop_slot(cfg, out));
    } else {
        runtime()?.block_on(receive_wal(cfg, &catalog, args.reset, out))?;
    }
    Ok(())
}

/// Barman's `Server.kill` for `task` (see [`barman_core::catalog::process::terminate`]).
pub(super) fn stop_process(catalog: &ServerCatalog, task: &str, fail_if_not_present: bool, out: &mut Output) {
    match barman_core::catalog::process::terminate(catalog.lock_directory(), catalog.server_name(), task, Duration::from_secs(10)) {
        Ok(outcome) => super::processes::report_termination(&outcome, task, catalog.server_name(), fail_if_not_present, out),
        Err(e) => out.error(&barman_core::error_chain(&e)),
    }
}

/// A replication connection on `streaming_conninfo`, or the error already reported.
async fn streaming_connection(cfg: &ServerConfig, what: &str, out: &mut Output) -> Option<Connection> {
    let Some(conninfo) = &cfg.streaming_conninfo else {
        out.error(&format!("Unable to {what} a physical replication slot: streaming connection not configured"));
        return None;
    };
    let connected = match facts::conn_config(conninfo, &env_lookup) {
        Ok(c) => Connection::connect(&c, SessionKind::Physical).await.map_err(|e| barman_core::error_chain(&e)),
        Err(e) => Err(e),
    };
    match connected {
        Ok(c) => Some(c),
        Err(why) => {
            out.error(&format!("Cannot connect to server '{}'", cfg.name));
            out.debug(&why);
            tracing::error!(server = %cfg.name, error = %why, "cannot connect");
            None
        }
    }
}

fn sqlstate(e: &barman_replication::Error) -> Option<&str> {
    match e {
        barman_replication::Error::Server { error, .. } => Some(error.code.as_str()),
        _ => None,
    }
}

async fn create_slot(cfg: &ServerConfig, if_not_exists: bool, out: &mut Output) {
    let Some(mut conn) = streaming_connection(cfg, "create", out).await else { return };
    let Some(slot) = &cfg.slot_name else {
        out.error("Unable to create a physical replication slot: slot_name configuration option required");
        return;
    };
    out.info(&format!("Creating physical replication slot '{slot}' on server '{}'", cfg.name));
    // Barman's create_physical_repslot: reserve WAL at once, so the slot holds WAL from now.
    match conn.create_physical_slot(slot, false, true).await {
        Ok(_) => out.info(&format!("Replication slot '{slot}' created")),
        Err(e) if sqlstate(&e) == Some("42710") => {
            if if_not_exists {
                out.info(&format!(
                    "Replication slot '{slot}' already exists and --if-not-exists was specified. Skipping creation"
                ));
            } else {
                out.error(&format!("Replication slot '{slot}' already exists"));
            }
        }
        Err(e) if sqlstate(&e) == Some("53400") => out.error(&format!(
            "All replication slots for server '{}' are in use\nFree one or increase the max_replication_slots value on your PostgreSQL server.",
            cfg.name
        )),
        Err(e) => out.error(&format!("Cannot create replication slot '{slot}' on server '{}': {}", cfg.name, server_message(&e))),
    }
    let _ = conn.close().await;
}

/// The server's own message for an error it sent, else the whole chain.
fn server_message(e: &barman_replication::Error) -> String {
    match e {
        barman_replication::Error::Server { error, .. } => error.message.clone(),
        other => barman_core::error_chain(other),
    }
}

async fn drop_slot(cfg: &ServerConfig, out: &mut Output) {
    let Some(mut conn) = streaming_connection(cfg, "drop", out).await else { return };
    let Some(slot) = &cfg.slot_name else {
        out.error("Unable to drop a physical replication slot: slot_name configuration option required");
        return;
    };
    out.info(&format!("Dropping physical replication slot '{slot}' on server '{}'", cfg.name));
    match conn.drop_replication_slot(slot, false).await {
        Ok(()) => out.info(&format!("Replication slot '{slot}' dropped")),
        Err(e) if sqlstate(&e) == Some("42704") => out.error(&format!("Replication slot '{slot}' does not exist")),
        Err(e) if sqlstate(&e) == Some("55006") => out.error(&format!(
            "Cannot drop replication slot '{slot}' on server '{}' because it is in use.",
            cfg.name
        )),
        Err(e) => out.error(&format!("Cannot drop replication slot '{slot}' on server '{}': {}", cfg.name, server_message(&e))),
    }
    let _ = conn.close().await;
}

/// Whether the slot exists: READ_REPLICATION_SLOT on 15+, `pg_replication_slots` through the
/// SQL connection before (13/14 WAL senders run no SQL). `None` when it cannot be told.
async fn slot_exists(cfg: &ServerConfig, conn: &mut Connection, slot: &str) -> Option<(bool, Option<Lsn>)> {
    if conn.server_major() >= 15 {
        return conn.read_replication_slot(slot).await.ok().map(|s| (s.is_some(), s.and_then(|s| s.restart_lsn)));
    }
    let mut sql = facts::connect_sql(cfg.conninfo.as_deref()?, &env_lookup).await.ok()?;
    let found = sql.replication_slot_via_sql(slot).await.ok();
    let _ = sql.close().await;
    found.map(|s| (s.is_some(), s.and_then(|s| s.restart_lsn)))
}

async fn receive_wal(cfg: &ServerConfig, catalog: &ServerCatalog, reset: bool, out: &mut Output) -> anyhow::Result<()> {
    if !cfg.streaming_archiver {
        out.error(
            "Unable to start receive-wal process: streaming_archiver option set to 'off' in barman configuration file",
        );
        return Ok(());
    }
    let Some(conninfo) = cfg.streaming_conninfo.clone() else {
        out.error(&format!(
            "Impossible to start WAL streaming. Check the log for more details, or run 'barman check {}'",
            cfg.name
        ));
        return Ok(());
    };
    if !reset {
        out.info(&format!("Starting receive-wal for server {}", cfg.name));
    }
    let _lock = match catalog.lock(LockKind::ServerReceiveWal) {
        Ok(l) => l,
        Err(CatalogError::LockBusy { .. }) => {
            if reset {
                out.error(&format!(
                    "Unable to reset the status of receive-wal for server {}. Process is still running",
                    cfg.name
                ));
            } else {
                out.error(&format!("Another receive-wal process is already running for server {}.", cfg.name));
            }
            return Ok(());
        }
        Err(e) => return Err(e).context("taking the receive-wal lock"),
    };
    create_dir_all_durable(catalog.streaming_directory(), DIR_MODE)?;
    let failure = |out: &mut Output, msg: String| out.error(&format!("ArchiverFailure:{msg}"));

    let connected = match facts::conn_config(&conninfo, &env_lookup) {
        Ok(c) => Connection::connect(&c, SessionKind::Physical).await.map_err(|e| barman_core::error_chain(&e)),
        Err(e) => Err(e),
    };
    let mut conn = match connected {
        Ok(c) => c,
        Err(why) => {
            out.debug(&why);
            failure(out, format!("failed opening the PostgreSQL streaming connection for server {}", cfg.name));
            return Ok(());
        }
    };
    let mut slot_restart = None;
    if let Some(slot) = &cfg.slot_name {
        match slot_exists(cfg, &mut conn, slot).await {
            Some((true, restart)) => slot_restart = restart,
            Some((false, _)) if cfg.create_slot == barman_core::config::CreateSlot::Auto && !reset => {
                out.info(&format!("Creating replication slot '{slot}'"));
                create_slot(cfg, false, out).await;
            }
            Some((false, _)) if cfg.create_slot == barman_core::config::CreateSlot::Auto => {}
            Some((false, _)) => {
                failure(
                    out,
                    format!(
                        "replication slot '{slot}' doesn't exist. Please execute 'barman receive-wal --create-slot {}'",
                        cfg.name
                    ),
                );
                return Ok(());
            }
            // Unknown: streaming will say what is wrong.
            None => {}
        }
    }
    if reset {
        reset_streaming_status(catalog, &mut conn, slot_restart, out).await?;
        let _ = conn.close().await;
        return Ok(());
    }
    let _ = conn.close().await;

    let system_id = ServerIdentity::read(&catalog.identity_path())?.map(|i| i.systemid);
    let settings = ReceiverSettings {
        server: cfg.name.clone(),
        conninfo,
        application_name: cfg.streaming_archiver_name.clone().unwrap_or_else(|| "barman_receive_wal".to_owned()),
        slot: cfg.slot_name.clone(),
        streaming_dir: catalog.streaming_directory().to_path_buf(),
        system_id,
        // pg_receivewal's default --status-interval.
        status_interval: Duration::from_secs(10),
        // Barman's `keepalive_interval` (default 60 s, 0 = off), the heartbeat of its
        // connections, is also how long a silent streaming connection is kept: PostgreSQL's
        // default wal_receiver_timeout. pg_receivewal has no such limit and hangs on a stuck
        // network path until TCP gives up, which a stuck middlebox can postpone forever.
        receive_timeout: u64::try_from(cfg.keepalive_interval).ok().filter(|&s| s > 0).map(Duration::from_secs),
        // Barman runs pg_receivewal with --no-loop: an error ends receive-wal until the next
        // `cron` (a minute later) starts it again, and a synchronous primary waits all that
        // time. barman-rs reconnects at once, with backoff, from where it stopped (a server
        // restart, a promotion that closes the connection, a network cut); errors that
        // retrying cannot cure (authentication, a foreign system) still end it.
        reconnect: true,
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let interrupted = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let signals = {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
        let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
        let interrupted = interrupted.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => interrupted.store(true, std::sync::atomic::Ordering::SeqCst),
            }
            let _ = stop_tx.send(true);
        })
    };
    let name = cfg.name.clone();
    let result = {
        let mut notify = |n: ReceiverNotice| out.info(&format!("{name}: {}", notice_line(&n)));
        receive_wal::run(&settings, stop_rx, &mut notify).await
    };
    signals.abort();
    if interrupted.load(std::sync::atomic::Ordering::SeqCst) {
        out.info("SIGINT received. Terminate gracefully.");
    }
    if let Err(e) = result {
        failure(out, barman_core::error_chain(&e));
    }
    Ok(())
}

/// A receiver notice in pg_receivewal's words (Barman prints pg_receivewal's lines).
fn notice_line(n: &ReceiverNotice) -> String {
    match n {
        ReceiverNotice::Started { lsn, timeline, .. } => format!("starting log streaming at {lsn} (timeline {timeline})"),
        ReceiverNotice::FinishedSegment { lsn, timeline } => format!("finished segment at {lsn} (timeline {timeline})"),
        ReceiverNotice::TimelineSwitch { next, start } => format!("switched to timeline {next} at {start}"),
        ReceiverNotice::Retrying { error, after } => {
            format!("error: {error}; trying again in {} seconds", after.as_secs())
        }
    }
}

/// Barman's `_reset_streaming_status`: when `streaming/` is behind the server (the slot's
/// `restart_lsn`, else the current position), drop the newest `.partial` and put an empty
/// `.partial` of the restart segment in its place, so the receiver starts there.
async fn reset_streaming_status(
    catalog: &ServerCatalog,
    conn: &mut Connection,
    slot_restart: Option<Lsn>,
    out: &mut Output,
) -> anyhow::Result<()> {
    let sys = conn.identify_system().await.context("IDENTIFY_SYSTEM")?;
    let seg_text = conn.show("wal_segment_size").await.context("SHOW wal_segment_size")?;
    let size = receive_wal::parse_server_size(&seg_text)
        .and_then(|b| barman_core::wal::WalSegmentSize::new(b).ok())
        .with_context(|| format!("wal_segment_size {seg_text:?}"))?;
    let name_at = |lsn: Lsn| barman_core::wal::WalSegmentName::from_lsn(sys.timeline, lsn, size).map(|n| n.to_string());
    let current_wal = name_at(sys.xlogpos)?;
    let restart_wal = match slot_restart {
        Some(lsn) => name_at(lsn)?,
        None => current_wal.clone(),
    };
    let dir = catalog.streaming_directory();
    let mut names: Vec<String> = barman_core::storage::fs::list_dir(dir)?
        .into_iter()
        .filter_map(|n| n.into_string().ok())
        .filter(|n| !n.starts_with('.'))
        .collect();
    names.sort_unstable_by(|a, b| b.cmp(a));
    let last = names
        .into_iter()
        .find(|n| matches!(n.parse::<WalFileName>(), Ok(WalFileName::Segment(_) | WalFileName::Partial(_))));
    let restart_partial = format!("{restart_wal}.partial");
    match &last {
        None => {}
        Some(l) if *l == restart_partial || *l == restart_wal => {}
        Some(l) if l.as_str() > current_wal.as_str() => {
            out.error(&format!("The receive-wal position is ahead of PostgreSQL current WAL lsn ({l} > {current_wal})"));
            return Ok(());
        }
        Some(l) => {
            out.info("Resetting receive-wal directory status");
            if l.ends_with(".partial") {
                let path = dir.join(l);
                out.info(&format!("Removing status file {}", path.display()));
                barman_core::storage::fs::remove_file_if_exists(&path)?;
            }
            let path = dir.join(&restart_partial);
            out.info(&format!("Creating status file {}", path.display()));
            barman_core::storage::atomic_write(&path, b"", barman_core::storage::FILE_MODE)?;
            return Ok(());
        }
    }
    out.info("Nothing to do. Position of receive-wal is aligned.");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// switch-wal

fn switch_wal_command(config: &Config, args: &SwitchWalArgs, out: &mut Output) -> anyhow::Result<()> {
    let Some(servers) = select(config, &args.servers.server_name, out, true) else { return Ok(()) };
    let rt = runtime()?;
    for cfg in servers {
        if !cfg.active {
            continue;
        }
        let Some(cfg) = one_server(config, &cfg.name, out) else { continue };
        let catalog = server_catalog(config, cfg);
        let outcome = rt.block_on(async {
            let conninfo = cfg.conninfo.as_deref().unwrap_or_default();
            let mut conn = facts::connect_sql(conninfo, &env_lookup).await.map_err(|why| {
                tracing::debug!(server = %cfg.name, error = %why, "cannot connect");
                None
            })?;
            let r = switch::switch_wal(&mut conn, args.force).await.map_err(Some);
            let _ = conn.close().await;
            r
        });
        let target = match outcome {
            Ok(SwitchOutcome::Closed(wal)) => {
                out.info(&format!("The WAL file {wal} has been closed on server '{}'", cfg.name));
                Some(wal)
            }
            Ok(SwitchOutcome::NotNeeded) => {
                out.info(&format!("No switch required for server '{}'", cfg.name));
                None
            }
            Ok(SwitchOutcome::InRecovery) => {
                out.info(&format!("No switch performed because server '{}' is a standby.", cfg.name));
                None
            }
            Err(Some(e @ switch::SwitchError::CheckpointPrivileges)) => {
                out.error(&e.to_string());
                continue;
            }
            Err(e) => {
                if let Some(e) = e {
                    out.debug(&format!("Error issuing pg_switch_wal() command: {}", barman_core::error_chain(&e)));
                }
                out.error(&format!("Unable to perform pg_switch_wal for server '{}'.", cfg.name));
                continue;
            }
        };
        if args.archive {
            wait_for_wal(config, cfg, &catalog, target, args.archive_timeout, out)?;
        }
    }
    Ok(())
}

fn wait_for_wal(
    config: &Config,
    cfg: &ServerConfig,
    catalog: &ServerCatalog,
    wal: Option<String>,
    timeout_secs: u64,
    out: &mut Output,
) -> anyhow::Result<()> {
    let Some(settings) = archiver_settings(config, cfg, out) else { return Ok(()) };
    let max = if timeout_secs > 0 { format!(" (max: {timeout_secs} seconds)") } else { String::new() };
    let target = match &wal {
        Some(w) => {
            out.info(&format!("Waiting for the WAL file {w} from server '{}'{max}", cfg.name));
            WaitTarget::File(w.parse().with_context(|| format!("WAL name {w:?} from the server"))?)
        }
        None => {
            out.info(&format!("Waiting for a WAL file from server '{}' to be archived{max}", cfg.name));
            WaitTarget::AnyNew
        }
    };
    let timeout = (timeout_secs > 0).then(|| Duration::from_secs(timeout_secs));
    let out = RefCell::new(out);
    let arrived = switch::wait_for_wal(
        catalog,
        &settings,
        &target,
        timeout,
        &mut |e| out.borrow_mut().info(&e.console_line()),
        &mut |e| out.borrow_mut().info(&e.to_string()),
    );
    let out = out.into_inner();
    match arrived {
        Ok(true) => {}
        Ok(false) => match &wal {
            Some(w) => out.error(&format!("The WAL file {w} has not been received in {timeout_secs} seconds")),
            None => out.info(&format!("A WAL file has not been received in {timeout_secs} seconds")),
        },
        Err(e) => out.error(&format!("server {}: archive-wal failed: {}", cfg.name, barman_core::error_chain(&e))),
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// cron

/// Barman's `cron` for every active, enabled server, by name: archive WAL, start (or stop)
/// the WAL receiver, check the backups waiting for WAL.
///
/// Differences from Barman: archive-wal and check-backup run inside this process (quietly,
/// as Barman's subprocesses whose output is discarded) rather than as children, so that a
/// backup is checked against the WAL just archived; only `receive-wal` is a detached child.
/// A passive node runs `sync-backup` / `sync-wals` children instead (see `sync::cron`).
fn cron(config: &Config, keep_descriptors: bool, out: &mut Output) -> anyhow::Result<()> {
    // Before anything else, Barman applies what config-update left queued.
    super::config::process_pending(config, out);
    if !config.path_conflicts.is_empty() {
        for e in &config.path_conflicts {
            out.error(e);
        }
        return Ok(());
    }
    for cfg in config.servers.values() {
        if !cfg.active || cfg.disabled {
            continue;
        }
        let catalog = server_catalog(config, cfg);
        let _cron_lock = match catalog.lock(LockKind::ServerCron) {
            Ok(l) => l,
            Err(CatalogError::LockBusy { .. }) => {
                out.info(&format!(
                    "Another cron process is already running on server {}. Skipping to the next server",
                    cfg.name
                ));
                continue;
            }
            Err(e) => {
                out.error(&barman_core::error_chain(&e));
                continue;
            }
        };
        if cfg.is_passive() {
            // A passive node copies from its primary Barman instead of archiving.
            super::sync::cron(config, cfg, &catalog, out, &|args| spawn_detached(&config.main_file, args, keep_descriptors));
        } else {
            cron_archive_wal(config, cfg, &catalog, out);
            if cfg.streaming_archiver {
                background_receive_wal(config, cfg, &catalog, keep_descriptors, out);
            } else {
                stop_process(&catalog, "receive-wal", false, out);
            }
        }
        match barman_core::backup::streaming::fail_abandoned_backups(&catalog) {
            Ok(ids) => ids.iter().for_each(|id| {
                out.warning(&format!("Backup {id} of server {} marked FAILED: its backup process ended without finishing it", cfg.name))
            }),
            Err(e) => out.error(&format!("server {}: {}", cfg.name, barman_core::error_chain(&e))),
        }
        cron_check_backups(cfg, &catalog, out);
        // Barman's cron_retention_policy: deletes what the policy calls OBSOLETE when
        // retention_policy_mode = auto.
        let settings = barman_core::retention::RetentionSettings::from_config(cfg).with_hooks(cfg, &config.main_file);
        let now = time::OffsetDateTime::now_utc();
        if let Err(e) = barman_core::retention::apply_retention(&catalog, &settings, now, &mut |n| {
            super::retention::print_notice(out, n)
        }) {
            out.error(&format!("server {}: retention policy: {}", cfg.name, barman_core::error_chain(&e)));
        }
    }
    // Barman's cron ends by removing the lock files nobody holds (lock_directory_cleanup).
    if config.global.lock_directory_cleanup {
        match barman_core::catalog::process::cleanup_lock_directory(&config.global.barman_lock_directory) {
            Ok(removed) => removed.iter().for_each(|p| out.debug(&format!("{} deleted", p.display()))),
            Err(e) => out.warning(&format!("cleaning up the lock directory: {}", barman_core::error_chain(&e))),
        }
    }
    Ok(())
}

fn cron_archive_wal(config: &Config, cfg: &ServerConfig, catalog: &ServerCatalog, out: &mut Output) {
    match catalog.lock(LockKind::ServerArchiveWal) {
        Ok(lock) => drop(lock),
        Err(CatalogError::LockBusy { .. }) => {
            out.info(&format!(
                "Another archive-wal process is already running on server {}. Skipping to the next server",
                cfg.name
            ));
            return;
        }
        Err(e) => {
            out.error(&barman_core::error_chain(&e));
            return;
        }
    }
    out.info(&format!("Starting WAL archiving for server {}", cfg.name));
    let Some(mut settings) = archiver_settings(config, cfg, out) else { return };
    settings.verbose = false;
    match archive_wal::archive_wal(catalog, &settings, &mut |e| tracing::info!(server = %cfg.name, "{}", e.console_line())) {
        Ok(_) | Err(ArchiveError::AlreadyRunning { .. }) => {}
        Err(e) => out.error(&format!("server {}: archive-wal failed: {}", cfg.name, barman_core::error_chain(&e))),
    }
}

pub(super) fn background_receive_wal(config: &Config, cfg: &ServerConfig, catalog: &ServerCatalog, keep: bool, out: &mut Output) {
    match catalog.lock(LockKind::ServerReceiveWal) {
        Ok(lock) => drop(lock),
        Err(CatalogError::LockBusy { .. }) => {
            tracing::debug!(server = %cfg.name, "another streaming archiver is running");
            return;
        }
        Err(e) => {
            out.error(&barman_core::error_chain(&e));
            return;
        }
    }
    out.info(&format!("Starting streaming archiver for server {}", cfg.name));
    if let Err(e) = spawn_detached(&config.main_file, &["receive-wal", &cfg.name], keep) {
        out.error(&format!("server {}: cannot start receive-wal: {e:#}", cfg.name));
    }
}

/// Starts `barman -c CONFIG ARGS…` in its own process group (so a Ctrl-C on cron does not
/// reach it) without waiting for it, as Barman's `BarmanSubProcess`.
fn spawn_detached(config_file: &Path, args: &[&str], keep_descriptors: bool) -> anyhow::Result<()> {
    use std::os::unix::process::CommandExt as _;
    use std::process::Stdio;
    let exe = std::env::current_exe().context("locating the barman executable")?;
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("-c").arg(config_file).args(args).stdin(Stdio::null()).process_group(0);
    if !keep_descriptors {
        cmd.stdout(Stdio::null()).stderr(Stdio::null());
    }
    let child = cmd.spawn().context("spawning")?;
    // Not waited for: the child outlives cron. Dropping the handle does not kill it.
    drop(child);
    Ok(())
}

fn cron_check_backups(cfg: &ServerConfig, catalog: &ServerCatalog, out: &mut Output) {
    let waiting: Vec<_> = match catalog.backup_ids() {
        Ok(ids) => ids
            .into_iter()
            .filter(|id| BackupInfo::read(catalog, *id).is_ok_and(|i| i.status == BackupStatus::WaitingForWals))
            .collect(),
        Err(e) => {
            out.error(&barman_core::error_chain(&e));
            return;
        }
    };
    for id in &waiting {
        out.info(&format!("Starting check-backup for backup {id} of server {}", cfg.name));
    }
    if waiting.is_empty() {
        return;
    }
    match archive_wal::complete_waiting_backups(catalog) {
        Ok(changed) => {
            for (id, status) in changed {
                // Barman's check-backup child would print this; its output is discarded
                // under cron, so it goes to the log only.
                tracing::info!(server = %cfg.name, backup = %id, %status, "backup checked");
            }
        }
        Err(e) => out.error(&format!("server {}: check-backup failed: {}", cfg.name, barman_core::error_chain(&e))),
    }
}
