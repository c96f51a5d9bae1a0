//! `barman backup`: a base backup into the catalog, as Barman's `Server.backup` runs it —
//! a silent `check` first, the backup under the server's backup lock, then one archiver pass
//! and, with `--wait`, archiving until the backup's last WAL file is in the archive.
//!
//! `--incremental PARENT` (an ID, a name or a shortcut: `latest`, `latest-full`, …) takes a
//! PostgreSQL 17+ incremental backup on top of PARENT, after Barman's checks of the server
//! (version, `backup_method = postgres`, `summarize_wal`) and of the parent.
//!
//! Several servers (`backup all`, `backup pg1 pg2`) are backed up at the same time, one thread
//! each, where Barman takes them one after the other: their lines then carry the server's name
//! (`[pg1] …`), and the command fails if any backup failed.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use barman_core::archive_wal::{self, ArchiverSettings};
use barman_core::backup::compressed::BackupCompressionSettings;
use barman_core::backup::standby::PrimaryOptions;
use barman_core::backup::streaming::{
    check_incremental_server, check_parent, take_streaming_backup_with, BackupError, BackupNotice, BackupOptions, CopyRetry,
    StreamingBackupRequest,
};
use barman_core::catalog::query::BackupCatalog;
use barman_core::catalog::{BackupId, BackupInfo, BackupStatus, CatalogError, ServerCatalog};
use barman_core::backup::rsync::{take_rsync_backup, RsyncBackupRequest, RsyncOverrides};
use barman_core::config::{BackupMethod, Config, ReuseBackup, ServerConfig};
use barman_core::diagnostics::checks;
use barman_core::hooks::{HookKind, HookSet};
use barman_core::output::{human_duration, local_now, pretty_size};
use barman_replication::{ConnConfig, Connection, SessionKind};

use super::{env_lookup, find_backup, one_server, runtime, select, server_catalog};
use crate::cli::{BackupArgs, Cli, Command};
use crate::output::{Output, Progress};

/// Whether `cmd` belongs here and is built.
pub fn implemented(cmd: &Command) -> bool {
    matches!(cmd, Command::Backup(_) | Command::VerifyBackup(_) | Command::GenerateManifest(_))
}

/// Runs one of this group's commands.
pub fn run(cli: &Cli, config: &Config, out: &mut Output) -> anyhow::Result<Option<u8>> {
    if let Command::VerifyBackup(args) = &cli.command {
        verify_backup(config, &args.server_name, &args.backup_id, out)?;
        return Ok(None);
    }
    if let Command::GenerateManifest(args) = &cli.command {
        generate_manifest(config, &args.server_name, &args.backup_id, out)?;
        return Ok(None);
    }
    let Command::Backup(args) = &cli.command else { unreachable!("filtered by implemented()") };
    let Some(servers) = select(config, &args.servers.server_name, out, true) else { return Ok(None) };
    let rt = runtime()?;
    // `select` reported unknown names; inactive or disabled servers are refused here.
    let servers: Vec<&ServerConfig> = servers.into_iter().filter(|s| one_server(config, &s.name, out).is_some()).collect();
    // A passive node copies its backups from its primary (Barman's `skip_passive`).
    let servers: Vec<&ServerConfig> = servers
        .into_iter()
        .filter(|s| {
            if s.is_passive() {
                out.info(&format!("Skipping passive server '{}'", s.name));
            }
            !s.is_passive()
        })
        .collect();
    if let [server] = servers.as_slice() {
        backup_one(&rt, config, server, args, out)?;
        return Ok(None);
    }
    let channels: Vec<Output> = std::thread::scope(|scope| {
        let threads: Vec<_> = servers
            .iter()
            .map(|server| {
                let mut channel = out.labelled(&server.name);
                let rt = &rt;
                scope.spawn(move || {
                    if let Err(e) = backup_one(rt, config, server, args, &mut channel) {
                        channel.error(&format!("{e:#}"));
                    }
                    channel
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))).collect()
    });
    for channel in channels {
        out.absorb(channel);
    }
    Ok(None)
}

/// `verify-backup`: the backup against its `backup_manifest`, natively (Barman calls the
/// server's pg_verifybackup, which cannot read every compressed format).
fn verify_backup(config: &Config, server: &str, typed: &str, out: &mut Output) -> anyhow::Result<()> {
    let Some(cfg) = one_server(config, server, out) else { return Ok(()) };
    let catalog = server_catalog(config, cfg);
    let (backups, _) = BackupCatalog::load(&catalog)?;
    let Some(info) = find_backup(&backups, &cfg.name, typed, out) else { return Ok(()) };
    if !info.status.is_copy_done() {
        out.error(&format!("The backup {} of server {} is not complete (status {}): nothing to verify", info.backup_id, cfg.name, info.status));
        return Ok(());
    }
    out.info(&format!("Verifying backup {} of server {} against its backup_manifest", info.backup_id, cfg.name));
    match barman_core::backup::manifest::verify_backup(&catalog, info) {
        Ok(report) if report.ok() => {
            out.info(&format!("{} files, {} checked", report.files, pretty_size(report.bytes as f64)));
            out.info(&report.to_string());
        }
        Ok(report) => {
            for problem in &report.problems {
                out.error(problem);
            }
            out.error(&format!("backup {} of server {} failed verification: {report}", info.backup_id, cfg.name));
        }
        Err(e) => out.error(&format!("cannot verify backup {} of server {}: {e}", info.backup_id, cfg.name)),
    }
    Ok(())
}

/// `generate-manifest`: a `backup_manifest` for a plain backup that has none (Barman's).
fn generate_manifest(config: &Config, server: &str, typed: &str, out: &mut Output) -> anyhow::Result<()> {
    let Some(cfg) = one_server(config, server, out) else { return Ok(()) };
    let catalog = server_catalog(config, cfg);
    let (backups, _) = BackupCatalog::load(&catalog)?;
    let Some(info) = find_backup(&backups, &cfg.name, typed, out) else { return Ok(()) };
    match barman_core::backup::manifest::generate_manifest(&catalog, info) {
        Ok(_) => out.info(&format!("Backup manifest for backup '{typed}' successfully generated for server {}", cfg.name)),
        Err(e) => out.error(&format!("Cannot generate the manifest of backup {} of server {}: {e}", info.backup_id, cfg.name)),
    }
    Ok(())
}

/// Barman's `parse_backup_id` and `validate_backup_args` for `--incremental`: the parent that
/// `typed` designates, once the server and the parent pass Barman's checks; `None` after the
/// refusal was reported (`failed to start backup: …`).
fn incremental_parent(
    rt: &tokio::runtime::Runtime,
    config: &Config,
    server: &ServerConfig,
    typed: &str,
    out: &mut Output,
) -> anyhow::Result<Option<BackupId>> {
    let catalog = server_catalog(config, server);
    let (backups, _) = BackupCatalog::load(&catalog)?;
    let Some(parent) = find_backup(&backups, &server.name, typed, out) else { return Ok(None) };
    // Without a conninfo the backup is refused below, with its own message.
    let Some(conninfo) = server.conninfo.as_deref() else { return Ok(Some(parent.backup_id)) };
    let (version, summarize_wal) = match rt.block_on(incremental_settings(conninfo)) {
        Ok(settings) => settings,
        Err(e) => {
            out.error(&format!("failed to start backup: {e:#}"));
            return Ok(None);
        }
    };
    let postgres_method = matches!(server.backup_method, BackupMethod::Postgres);
    let checked = check_incremental_server(version, postgres_method, summarize_wal.as_deref()).and_then(|()| check_parent(&catalog, parent));
    match checked {
        Ok(()) => Ok(Some(parent.backup_id)),
        Err(refusal) => {
            out.error(&format!("failed to start backup: {refusal}"));
            Ok(None)
        }
    }
}

/// `server_version_num` and `summarize_wal` (absent before 17), from a normal session.
async fn incremental_settings(conninfo: &str) -> anyhow::Result<(u32, Option<String>)> {
    let cfg: ConnConfig = conninfo.parse()?;
    let mut conn = Connection::connect(&cfg, SessionKind::Normal).await?;
    let sql = "SELECT current_setting('server_version_num'), current_setting('summarize_wal', true)";
    let results = conn.simple_query(sql).await?;
    let _ = conn.close().await;
    let r = results.into_iter().find(|r| !r.columns.is_empty()).context("no answer to the server_version_num query")?;
    let version = r.text(0, 0).context("server_version_num is NULL")?;
    let version = version.parse().with_context(|| format!("server_version_num {version:?}"))?;
    Ok((version, r.text(0, 1).map(str::to_owned)))
}

/// Barman's `is_checksum_consistent`: false when `info` was taken with data checksums on and a
/// backup up its chain with them off.
fn checksums_consistent(catalog: &ServerCatalog, info: &BackupInfo) -> bool {
    if info.data_checksums.as_deref() != Some("on") {
        return true;
    }
    let mut next = info.parent_backup_id;
    let mut seen = 0;
    while let Some(id) = next {
        let Ok(parent) = BackupInfo::read(catalog, id) else { break };
        if parent.data_checksums.as_deref() == Some("off") {
            return false;
        }
        next = parent.parent_backup_id;
        seen += 1;
        if seen > 10_000 {
            break; // a cycle in a damaged catalog
        }
    }
    true
}

fn backup_one(
    rt: &tokio::runtime::Runtime,
    config: &Config,
    server: &ServerConfig,
    args: &BackupArgs,
    out: &mut Output,
) -> anyhow::Result<()> {
    let name = &server.name;
    // Barman resolves and checks the parent before anything else.
    let parent = match &args.incremental {
        None => None,
        Some(typed) => match incremental_parent(rt, config, server, typed, out)? {
            Some(id) => Some(id),
            None => return Ok(()),
        },
    };
    if !matches!(server.backup_method, BackupMethod::Postgres | BackupMethod::Rsync | BackupMethod::LocalRsync) {
        out.error(&format!(
            "backup_method = {} is not implemented yet in barman-rs (server '{name}'); use backup_method = postgres, rsync or local-rsync",
            server.backup_method
        ));
        return Ok(());
    }
    // Barman validates these in its checks and starts no backup when they are wrong.
    let compression = match BackupCompressionSettings::from_config(server) {
        Ok(c) => c,
        Err(e) => {
            out.error(&format!("Impossible to start the backup: invalid backup_compression settings for server '{name}':\n{e}"));
            return Ok(());
        }
    };
    let Some(conninfo) = server.conninfo.clone() else {
        out.error(&format!("failed to start backup: missing 'conninfo' for server '{name}'"));
        return Ok(());
    };

    // Barman's CheckStrategy: the checks run silently and a failure of any but the
    // non-critical ones (an earlier FAILED backup, say) stops the backup. barman-rs also
    // names the failed checks, so the operator need not run check to know.
    let check = rt.block_on(checks::run(&config.global, server, &env_lookup, args.check_timeout));
    let failed: Vec<String> = check
        .critical_failures()
        .map(|r| match &r.hint {
            Some(h) => format!("{} ({h})", r.name),
            // `configuration` carries its messages as detail lines (Barman prints them as
            // errors before refusing a disabled server).
            None if !r.details.is_empty() => format!("{} ({})", r.name, r.details.join("; ")),
            None => r.name.clone(),
        })
        .collect();
    if check.active && !failed.is_empty() {
        out.error(&format!(
            "Impossible to start the backup. Check the log for more details, or run 'barman check {name}'\nFailed checks: {}",
            failed.join(", ")
        ));
        return Ok(());
    }

    let catalog = server_catalog(config, server);
    let immediate_checkpoint = if args.no_immediate_checkpoint {
        false
    } else {
        args.immediate_checkpoint || server.immediate_checkpoint
    };
    let bandwidth_limit = args
        .bwlimit
        .map(|b| b as i64)
        .or(server.bandwidth_limit)
        .filter(|b| *b > 0)
        .map(|b| u32::try_from(b).unwrap_or(u32::MAX));
    let req = StreamingBackupRequest {
        server: name.clone(),
        conninfo: conninfo.clone(),
        streaming_conninfo: server.streaming_conninfo.clone().unwrap_or(conninfo),
        application_name: server.streaming_backup_name.clone().unwrap_or_else(|| "barman_streaming_backup".into()),
        catalog: catalog.clone(),
        name: args.name.clone(),
        immediate_checkpoint,
        bandwidth_limit,
    };
    let rsync = match server.backup_method {
        BackupMethod::Rsync | BackupMethod::LocalRsync => match RsyncBackupRequest::from_config(server, catalog.clone(), &rsync_overrides(args)?) {
            Ok(r) => Some(r),
            Err(e) => {
                out.error(&format!("Impossible to start the backup: {e}"));
                return Ok(());
            }
        },
        _ => None,
    };
    // Barman prints the copy's transport and jobs, and the deduplication with `reuse_backup = link`.
    let rsync_copy = rsync.as_ref().map(|r| (r.copy_via(), r.jobs));
    let deduplication_line = rsync.as_ref().is_some_and(|r| r.reuse == ReuseBackup::Link);
    let primary = PrimaryOptions::from_config(server);

    let started_wall = local_now();
    let started = Instant::now();
    // Barman purges the WAL older than a server's first backup between "Finalising the
    // backup." and "Backup size:". The purge needs the backup's begin_wal, known once the
    // backup returns, so the lines after "Finalising" wait until then.
    let mut held: Vec<String> = Vec::new();
    let hooks = HookSet::configured(server, &config.main_file, HookKind::Backup);
    let mut progress: Option<Progress> = None;
    let mut on_notice = |notice: BackupNotice| {
        if let BackupNotice::Progress { done, total } = notice {
            progress.get_or_insert_with(|| Progress::new(out, &format!("backup of {name}"))).update(done, total);
            return;
        }
        if !matches!(notice, BackupNotice::CopyStarted(_)) {
            if let Some(mut p) = progress.take() {
                p.finish();
            }
        }
        match &notice {
            BackupNotice::Warning(text) => return out.warning(text),
            // Barman's `_retry_handler` lines, with the reason, which Barman leaves to its log.
            BackupNotice::CopyRetry { attempt, reason, sleep } => {
                out.warning(&format!("Failure executing a backup using native streaming (attempt {attempt}): {reason}"));
                return out.warning(&format!(
                    "The files copied so far will be removed and the backup process will restart in {} seconds",
                    sleep.as_secs()
                ));
            }
            _ => {}
        }
        if deduplication_line && matches!(notice, BackupNotice::Size { .. }) {
            return; // printed with the on-disk size once the backup returns
        }
        let line = notice_line(name, rsync_copy, &notice);
        if held.is_empty() && !matches!(notice, BackupNotice::Size { .. } | BackupNotice::EndLsn { .. }) {
            out.info(&line);
        } else {
            held.push(line);
        }
    };
    let retry = CopyRetry {
        times: if args.no_retry {
            0
        } else {
            args.retry_times.map_or(u32::try_from(server.basebackup_retry_times).unwrap_or(0), |n| u32::try_from(n).unwrap_or(u32::MAX))
        },
        sleep: Duration::from_secs(args.retry_sleep.unwrap_or(u64::try_from(server.basebackup_retry_sleep).unwrap_or(0))),
    };
    // Barman's heartbeat interval for rsync backups; for a streaming copy, how long a silence
    // lasts before barman-rs asks the server whether the stream is stalled.
    let stall_check = args
        .keepalive_interval
        .or_else(|| u64::try_from(server.keepalive_interval).ok())
        .filter(|s| *s > 0)
        .map(Duration::from_secs);
    let options = BackupOptions {
        compression: compression.as_ref(),
        hooks: hooks.as_ref(),
        retry,
        primary: primary.as_ref(),
        stall_check,
        parent,
    };
    let backup = async {
        match &rsync {
            Some(r) => take_rsync_backup(r, hooks.as_ref(), &mut on_notice).await,
            None => take_streaming_backup_with(&req, &options, &mut on_notice).await,
        }
    };
    // Ctrl-C (SIGINT) or SIGTERM stops the copy; the backup is marked FAILED at once, as
    // Barman does on KeyboardInterrupt, rather than left STARTED for the next command to find.
    let interrupted = rt.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        anyhow::Ok(tokio::select! {
            r = backup => Some(r),
            _ = tokio::signal::ctrl_c() => None,
            _ = term.recv() => None,
        })
    })?;
    if let Some(mut p) = progress.take() {
        p.finish();
    }
    let Some(result) = interrupted else {
        let lock = catalog.lock(barman_core::catalog::LockKind::ServerBackup)?;
        barman_core::backup::streaming::fail_unfinished(&catalog, &lock, "failure copying files (KeyboardInterrupt)")?;
        out.error("Backup failed copying files.\nDETAILS: KeyboardInterrupt");
        return Ok(());
    };
    if let Ok(info) = &result {
        let settings = barman_core::retention::RetentionSettings::from_config(server).with_hooks(server, &config.main_file);
        let purged = barman_core::retention::purge_before_first_backup(&catalog, &settings, info, &mut |n| {
            super::retention::print_notice(out, n)
        });
        if let Err(e) = purged {
            out.error(&format!("{:#}", anyhow::Error::new(e).context("removing the WAL that precedes the first backup")));
        }
    }
    if let (Ok(info), true) = (&result, deduplication_line) {
        out.info(&size_on_disk_line(info));
    }
    held.iter().for_each(|line| out.info(line));
    let info = match result {
        Ok(info) => info,
        Err(BackupError::Catalog(CatalogError::LockBusy { .. })) => {
            out.error("Another backup process is running");
            return Ok(());
        }
        Err(BackupError::Failed { id, reason }) => {
            // Barman: "Backup failed <action>.\nDETAILS: <message>"; our reason is
            // "failure <action> (<message>)".
            let (action, details) = split_failure(&reason);
            out.error(&format!("Backup failed {action}.\nDETAILS: {details}"));
            run_post_hooks(hooks.as_ref(), &catalog, id);
            return Ok(());
        }
        Err(e) => {
            out.error(&format!("failed to start backup: {e}"));
            return Ok(());
        }
    };
    out.info(&format!(
        "Backup completed (start time: {}, elapsed time: {})",
        started_wall,
        human_duration(started.elapsed(), false)
    ));

    let settings = ArchiverSettings::from_config(server)
        .context("the server's WAL compression settings")?
        .with_hooks(server, &config.main_file);
    // The post hooks run when Barman's BackupManager.backup ends: after --wait (the backup is
    // then DONE), before the archiver pass otherwise (it is then WAITING_FOR_WALS).
    let status = if args.wait {
        let end_wal = info.end_wal.context("the backup recorded no end_wal")?;
        let wait_timeout = args.wait_timeout.filter(|t| *t > 0).map(Duration::from_secs);
        wait_for_wal(&catalog, &settings, &end_wal.to_string(), wait_timeout, out)?;
        let status = complete(&catalog, &info)?;
        run_post_hooks(hooks.as_ref(), &catalog, info.backup_id);
        status
    } else {
        run_post_hooks(hooks.as_ref(), &catalog, info.backup_id);
        archive_pass(&catalog, &ArchiverSettings { verbose: false, ..settings }, out)?;
        complete(&catalog, &info)?
    };
    // Barman's Server.backup purges again, silently, once the archiver has run: WAL older
    // than the first backup may have reached the archive during the backup.
    let settings = barman_core::retention::RetentionSettings::from_config(server).with_hooks(server, &config.main_file);
    let purged = barman_core::retention::purge_before_first_backup(&catalog, &settings, &info, &mut |n| {
        if matches!(n.level, barman_core::retention::Level::Warning | barman_core::retention::Level::Error) {
            super::retention::print_notice(out, n)
        }
    });
    if let Err(e) = purged {
        out.error(&format!("{:#}", anyhow::Error::new(e).context("removing the WAL that precedes the first backup")));
    }
    if !checksums_consistent(&catalog, &info) {
        out.warning(
            "This is an incremental backup taken with `data_checksums = on` whereas some previous backups in the \
             chain were taken with `data_checksums = off`. This can lead to potential recovery issues. Consider \
             taking a new full backup to avoid having inconsistent backup chains.",
        );
    }
    if status == BackupStatus::WaitingForWals {
        out.warning(
            "IMPORTANT: this backup is classified as WAITING_FOR_WALS, meaning that Barman has not received \
             yet all the required WAL files for the backup consistency.\n\
             This is a common behaviour in concurrent backup scenarios, and Barman automatically set the \
             backup as DONE once all the required WAL files have been archived.\n\
             Hint: execute the backup command with '--wait'",
        );
    }
    Ok(())
}

/// The post backup retry script and post backup script, with the backup as it now stands.
fn run_post_hooks(hooks: Option<&HookSet>, catalog: &ServerCatalog, id: barman_core::catalog::BackupId) {
    let Some(hooks) = hooks else { return };
    match BackupInfo::read(catalog, id) {
        Ok(info) => hooks.run_post(&|h, _| h.env_from_catalog_backup(catalog, &info)),
        Err(e) => tracing::warn!(backup = %id, error = %e, "cannot read the backup for its post hooks"),
    }
}

/// Marks the backup DONE if its WAL is all archived (Barman's `check_backup`) and returns its
/// status as it now stands.
fn complete(catalog: &ServerCatalog, info: &BackupInfo) -> anyhow::Result<BackupStatus> {
    let changed = archive_wal::complete_waiting_backups(catalog)?;
    Ok(changed.iter().find(|(id, _)| *id == info.backup_id).map(|(_, s)| *s).unwrap_or(info.status))
}

/// One archiver pass, its lines printed (Barman's `archive_wal(verbose=False)`). A running
/// `archive-wal` (lock busy) is not an error: it is doing the same work.
fn archive_pass(catalog: &ServerCatalog, settings: &ArchiverSettings, out: &mut Output) -> anyhow::Result<()> {
    let mut lines = Vec::new();
    let result = archive_wal::archive_wal(catalog, settings, &mut |e| lines.push(e.console_line()));
    for line in &lines {
        out.info(line);
    }
    match result {
        Ok(_) | Err(archive_wal::ArchiveError::AlreadyRunning { .. }) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Barman's `Server.wait_for_wal`: archive until `wal` is in the archive, or the timeout.
fn wait_for_wal(
    catalog: &ServerCatalog,
    settings: &ArchiverSettings,
    wal: &str,
    timeout: Option<Duration>,
    out: &mut Output,
) -> anyhow::Result<()> {
    let max = timeout.map(|t| format!(" (max: {} seconds)", t.as_secs())).unwrap_or_default();
    out.info(&format!("Waiting for the WAL file {wal} from server '{}'{max}", catalog.server_name()));
    let name = wal.parse().with_context(|| format!("WAL name {wal}"))?;
    let deadline = timeout.map(|t| Instant::now() + t);
    let quiet = ArchiverSettings { verbose: false, ..settings.clone() };
    loop {
        archive_pass(catalog, &quiet, out)?;
        if catalog.wal_path(&name).exists() {
            return Ok(());
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            out.error(&format!(
                "The WAL file {wal} has not been received in {} seconds",
                timeout.map(|t| t.as_secs()).unwrap_or(0)
            ));
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `failure copying files (connection reset)` → (`copying files`, `connection reset`).
fn split_failure(reason: &str) -> (&str, &str) {
    let rest = reason.strip_prefix("failure ").unwrap_or(reason);
    match rest.find(" (") {
        Some(i) if rest.ends_with(')') => (&rest[..i], &rest[i + 2..rest.len() - 1]),
        _ => (rest, rest),
    }
}

/// The line Barman prints for each step.
/// `rsync_copy` is how the copy goes (`rsync/SSH`, `local rsync`) and `parallel_jobs` for
/// `backup_method = rsync` or `local-rsync`, `None` for postgres.
fn notice_line(server: &str, rsync_copy: Option<(&str, usize)>, notice: &BackupNotice) -> String {
    match notice {
        BackupNotice::Starting { dir, .. } => {
            let mode = if rsync_copy.is_some() { barman_core::backup::rsync::MODE } else { "postgres" };
            format!("Starting backup using {mode} method for server {server} in {}", dir.display())
        }
        BackupNotice::StartLsn { lsn, wal, offset } => format!("Backup start at LSN: {lsn} ({wal}, {offset:08X})"),
        BackupNotice::CopyStarted(id) => match rsync_copy {
            None => format!("Starting backup copy via native streaming for {id}"),
            Some((via, 1)) => format!("Starting backup copy via {via} for {id}"),
            Some((via, n)) => format!("Starting backup copy via {via} for {id} ({n} jobs)"),
        },
        BackupNotice::Finalising if rsync_copy.is_some() => "Asking PostgreSQL server to finalize the backup.".into(),
        BackupNotice::CopyDone { seconds } => {
            format!("Copy done (time: {})", human_duration(Duration::from_secs_f64(seconds.max(0.0)), false))
        }
        BackupNotice::Finalising => "Finalising the backup.".into(),
        BackupNotice::Progress { .. } | BackupNotice::Warning(_) | BackupNotice::CopyRetry { .. } => String::new(),
        BackupNotice::Size { bytes } => format!("Backup size: {}", pretty_size(*bytes as f64)),
        BackupNotice::EndLsn { lsn, wal, offset } => format!("Backup end at LSN: {lsn} ({wal}, {offset:08X})"),
    }
}

/// Barman's size line with `reuse_backup = link`: `Backup size: X. Actual size on disk: Y
/// (-NN.NN% deduplication ratio).`
fn size_on_disk_line(info: &BackupInfo) -> String {
    let (size, on_disk) = (info.size.unwrap_or(0), info.deduplicated_size.unwrap_or(0));
    let ratio = if size > 0 { 1.0 - on_disk as f64 / size as f64 } else { 0.0 };
    format!(
        "Backup size: {}. Actual size on disk: {} (-{:.2}% deduplication ratio).",
        pretty_size(size as f64),
        pretty_size(on_disk as f64),
        ratio * 100.0
    )
}

/// `barman backup`'s options that an rsync backup takes (Barman's `cli.backup` overrides).
fn rsync_overrides(args: &BackupArgs) -> anyhow::Result<RsyncOverrides> {
    let reuse = args.reuse_backup.as_deref().map(str::parse::<ReuseBackup>).transpose().map_err(anyhow::Error::msg)?;
    Ok(RsyncOverrides {
        name: args.name.clone(),
        immediate_checkpoint: if args.no_immediate_checkpoint { Some(false) } else { args.immediate_checkpoint.then_some(true) },
        reuse,
        jobs: args.jobs,
        bwlimit: args.bwlimit,
        retry_times: if args.no_retry { Some(0) } else { args.retry_times },
        retry_sleep: args.retry_sleep,
        keepalive_interval: args.keepalive_interval,
    })
}

#[cfg(test)]
mod tests {
    use super::split_failure;

    #[test]
    fn failure_reason_splits_like_barmans_message() {
        assert_eq!(split_failure("failure copying files (connection reset)"), ("copying files", "connection reset"));
        assert_eq!(
            split_failure("failure starting backup (could not connect (server x))"),
            ("starting backup", "could not connect (server x)")
        );
        assert_eq!(split_failure("odd"), ("odd", "odd"));
    }
}
