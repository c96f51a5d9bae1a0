//! `barman recover`: a backup brought back into a directory, with the WAL and the recovery
//! configuration PostgreSQL 12+ needs to replay to the chosen target.
//!
//! The steps, in Barman's order (formats §2.18):
//!
//! 1. check the backup is `DONE`; create the destination (0700);
//! 2. copy `base/<ID>/data` into it on `jobs` threads, each tablespace into its location
//!    (`--tablespace NAME:LOCATION` or where it was), and point `pg_tblspc/<oid>` there; the
//!    manifest is kept as `backup_manifest.<ID>` so PostgreSQL ignores it. A compressed
//!    (tar-format) backup is decompressed and unpacked instead, one archive per thread:
//!    `data/<oid>.tar.*` into each tablespace's location, `data/base.tar.*` into the
//!    destination without `recovery.conf` and `tablespace_map` (Barman's
//!    `DecompressOperation`), every name checked on the way;
//! 3. copy the WAL the target needs, decompressed, into `<dest>/barman_wal/` (or `pg_wal/`
//!    for a standby); when the newest WAL exists only as the receiver's `streaming/*.partial`
//!    and the target reaches past the archive, that segment is supplied too, with every byte
//!    the receiver had fsynced — so a synchronous (RPO=0) setup loses no commit;
//! 4. comment out what is dangerous in the restored configuration, append the recovery
//!    settings to `postgresql.auto.conf`, remove the signal files that came with the backup (a
//!    standby's `standby.signal`; Barman keeps it), create `recovery.signal` (or
//!    `standby.signal` with `--standby-mode`), and keep a copy of backup.info as
//!    `.barman-recover.info`.
//!
//! [`recover_with`] adds what [`RecoverySetup`] asks for:
//!
//! - a remote destination (`--remote-ssh-command`, [`remote`]): the base backup is sent with
//!   rsync over the ssh command (a compressed backup is first unpacked into
//!   `<staging_path>/barman-decompress<pid>`, or, with `staging_location = remote`, sent
//!   as it is and unpacked by the recovery host's `tar`), the WAL is decompressed into a local scratch
//!   directory and sent, and the configuration files are fetched from the destination,
//!   edited here and sent back with `recovery.signal` and `.barman-recover.info` — Barman's
//!   `MainRecoveryExecutor`. Everything on the remote host is written by the ssh user;
//!   PGDATA ends up 0700;
//! - get-wal ([`WalSource::GetWal`]): no WAL is copied; `restore_command` fetches it from the
//!   archive (`barman get-wal` locally, `barman-wal-restore` from a remote host);
//! - `--recovery-conf-filename`: the recovery settings go to that file instead of
//!   `postgresql.auto.conf` (which is still made safe);
//! - delta mode ([`RecoverySetup::delta`], `recovery_options = delta-restore`, `--delta-restore`):
//!   the destination may hold a data directory already (stopped); only what differs from the
//!   backup is rewritten and what the backup does not have is removed ([`delta`]), locally for
//!   a plain backup, remotely with rsync for any backup staged here. Without it the destination
//!   and every tablespace location must be empty or absent, as in Barman.
//!
//! An incremental backup (PostgreSQL 17+, `parent_backup_id` set) is restored through its
//! chain ([`combine`]): checked, and `pg_combinebackup` found, before anything is written;
//! combined straight into the destination (locally), or into
//! `<staging_path>/barman-combine<pid>/<ID>/` and sent from there (remotely, with
//! `staging_location = local`; `staging_location = remote` is refused for a chain).

pub mod combine;
pub mod copy;
pub mod delta;
pub mod pgconf;
pub mod remote;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::backup::compressed::{extract_archive, ArchiveCompression, ArchiveError};
use crate::compression::{Compression, WalCompression};
use crate::config::StagingLocation;
use crate::catalog::{xlogdb, BackupId, BackupInfo, BackupStatus, CatalogError, LockKind, ServerCatalog, XlogDbEntry};
use crate::storage::durable::{atomic_write, durable_rename, fsync_dir, FILE_MODE};
use crate::storage::{StorageError, StorageOp};
use crate::wal::{TimelineHistory, WalFileName, WalSegmentName};

pub use combine::{CombineError, CombineOptions};
pub use pgconf::{ConfLine, ConfReport};
pub use remote::RemoteOptions;

/// `--target-tli`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetTimeline {
    /// A number.
    Id(u32),
    /// `current`: the backup's timeline.
    Current,
    /// `latest`: the newest timeline in the archive.
    Latest,
}

/// Where recovery should stop.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryTarget {
    /// `--target-time`.
    pub time: Option<String>,
    /// `--target-xid`.
    pub xid: Option<String>,
    /// `--target-lsn`.
    pub lsn: Option<String>,
    /// `--target-name`.
    pub name: Option<String>,
    /// `--target-immediate`.
    pub immediate: bool,
    /// `--exclusive`: stop just before the target rather than after.
    pub exclusive: bool,
    /// `--target-tli`.
    pub timeline: Option<TargetTimeline>,
    /// `--target-action pause|shutdown|promote`.
    pub action: Option<String>,
}

impl RecoveryTarget {
    /// Whether any point-in-time target is set.
    pub fn is_pitr(&self) -> bool {
        self.time.is_some() || self.xid.is_some() || self.lsn.is_some() || self.name.is_some() || self.immediate
    }
}

/// What to restore and where.
#[derive(Debug, Clone)]
pub struct RecoveryRequest {
    /// The server's catalog.
    pub catalog: ServerCatalog,
    /// The backup.
    pub backup_id: BackupId,
    /// The destination directory.
    pub destination: PathBuf,
    /// `--tablespace NAME:LOCATION` relocations.
    pub tablespaces: BTreeMap<String, PathBuf>,
    /// The recovery target.
    pub target: RecoveryTarget,
    /// `--standby-mode`.
    pub standby_mode: bool,
    /// Parallel copy threads (`--jobs`).
    pub jobs: usize,
    /// Whether to supply the receiver's `.partial` segment when the target needs it
    /// (default on; Barman's `--partial-wal` turns it on there).
    pub partial_wal: bool,
    /// The server's WAL compression settings: archived WAL is decompressed with them
    /// (`custom` needs the configured filters; the others are recognised by name).
    pub compression: WalCompression,
}

/// Where the restored server gets its WAL from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum WalSource {
    /// The WAL the target needs is copied into the destination (`barman_wal/`, or `pg_wal/`
    /// for a standby) and `restore_command` is a `cp` from there.
    #[default]
    Copy,
    /// No WAL is copied: `restore_command` fetches each segment from the archive
    /// (`--get-wal`, `recovery_options = 'get-wal'`). Build it with
    /// [`WalSource::local_get_wal`] or [`WalSource::remote_get_wal`].
    GetWal {
        /// The comment line Barman writes above it.
        comment: String,
        /// The command, unquoted.
        restore_command: String,
    },
}

impl WalSource {
    /// Barman's local get-wal restore command, `barman get-wal -P SERVER %f > %p`:
    /// `program` is how the server can run barman (`barman`, or a path), `config` the
    /// configuration file to name with `-c` when PostgreSQL's user would not find it in a
    /// default location; `-P` (a partial segment may be served) unless in standby mode.
    pub fn local_get_wal(program: &str, config: Option<&Path>, server: &str, barman_user: &str, standby_mode: bool) -> WalSource {
        let mut cmd = remote::shell_quote(program);
        if let Some(config) = config {
            cmd.push_str(&format!(" -c {}", remote::shell_quote(&config.to_string_lossy())));
        }
        cmd.push_str(" get-wal");
        if !standby_mode {
            cmd.push_str(" -P");
        }
        cmd.push_str(&format!(" {} %f > %p", remote::shell_quote(server)));
        WalSource::GetWal { comment: format!("# The 'barman get-wal' command must run as '{barman_user}' user"), restore_command: cmd }
    }

    /// Barman's remote restore command, run on the PostgreSQL host:
    /// `barman-wal-restore -P -U BARMAN_USER [--port P] FQDN SERVER %f %p [-p JOBS]`.
    pub fn remote_get_wal(
        barman_user: &str,
        port: Option<&str>,
        fqdn: &str,
        server: &str,
        parallel_jobs: u64,
        standby_mode: bool,
    ) -> WalSource {
        let mut parts = vec!["barman-wal-restore".to_owned()];
        if !standby_mode {
            parts.push("-P".into());
        }
        parts.extend(["-U".to_owned(), barman_user.to_owned()]);
        if let Some(port) = port {
            parts.push(format!("--port {port}"));
        }
        parts.extend([fqdn.to_owned(), server.to_owned(), "%f".into(), "%p".into()]);
        if parallel_jobs > 1 {
            parts.push(format!("-p {parallel_jobs}"));
        }
        WalSource::GetWal {
            comment: "# The 'barman-wal-restore' command is provided in the 'barman-cli' package".into(),
            restore_command: parts.join(" "),
        }
    }
}

/// How a recovery reaches its destination, beyond [`RecoveryRequest`]; the default is a
/// local restore with the WAL copied and the settings in `postgresql.auto.conf`.
#[derive(Debug, Clone, Default)]
pub struct RecoverySetup {
    /// `--remote-ssh-command`: the destination is on another host.
    pub remote: Option<RemoteOptions>,
    /// Where the WAL comes from.
    pub wal: WalSource,
    /// `--recovery-conf-filename`: the file (relative to the destination) that receives
    /// the recovery settings instead of `postgresql.auto.conf`.
    pub recovery_conf_filename: Option<String>,
    /// How the chain of an incremental backup is combined.
    pub combine: CombineOptions,
    /// Delta restore: rewrite only what differs in a destination that holds a data directory
    /// already (see [`delta`]); refused, in Barman's words, where Barman refuses it
    /// ([`delta::refusal`]).
    pub delta: bool,
}

/// What the operator should hear, in Barman's words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecoveryNotice {
    /// `Starting local restore for server pg using backup <ID>` + `Destination directory: …`.
    Starting {
        /// The server.
        server: String,
        /// The backup.
        id: BackupId,
        /// The destination.
        destination: PathBuf,
        /// `--remote-ssh-command` (`Starting remote restore …`, `Remote command: …`).
        remote: Option<String>,
    },
    /// `Doing PITR. Recovery target …`.
    Pitr(String),
    /// `Copying the base backup.`
    CopyingBase,
    /// `Start combining backup via pg_combinebackup for backup <ID> on <output>`.
    CombineStarted {
        /// The backup restored (the last of its chain).
        id: BackupId,
        /// Where pg_combinebackup writes.
        output: PathBuf,
    },
    /// `End combining backup via pg_combinebackup for backup <ID>`.
    CombineEnded {
        /// The backup restored.
        id: BackupId,
    },
    /// A warning in Barman's words (`WARNING: …`): the combine mode fell back, checksums
    /// differ along the chain.
    Warning(String),
    /// `Using safe horizon time for smart rsync copy: <time>` (delta restore).
    SafeHorizon(crate::catalog::BarmanTimestamp),
    /// What a local delta restore did in one directory (the data directory or a tablespace's).
    DeltaCopied {
        /// The directory.
        directory: PathBuf,
        /// Files left as they were, written, removed.
        stats: delta::DeltaStats,
    },
    /// `\t<oid>, <name>, <location>`.
    Tablespace {
        /// OID.
        oid: u32,
        /// Name.
        name: String,
        /// New location.
        location: PathBuf,
    },
    /// `Copying required WAL segments.`
    CopyingWal,
    /// The receiver's partial segment was supplied as the last WAL.
    PartialWal(String),
    /// `Generating recovery configuration`
    GeneratingConfig,
    /// `Identify dangerous settings in destination directory.`
    IdentifyDangerous,
    /// Signal files that came with the backup were removed (a standby's `standby.signal`),
    /// so that the restored server starts in the requested mode.
    SignalFilesRemoved {
        /// The files removed from the destination, other than `written`.
        removed: Vec<String>,
        /// The signal file written for the requested mode.
        written: String,
    },
}

/// The result of a recovery.
#[derive(Debug, Clone, PartialEq)]
pub struct RecoveryReport {
    /// Settings changed to prevent data loss.
    pub changes: Vec<ConfLine>,
    /// Settings to review.
    pub warnings: Vec<ConfLine>,
    /// Configuration files that were not in the backup.
    pub missing_files: Vec<String>,
    /// WAL files copied.
    pub wal_files: usize,
    /// Whether the restore_command fetches WAL from the archive (`get-wal`).
    pub get_wal: bool,
    /// Where the recovery settings went (`postgresql.auto.conf` unless
    /// `--recovery-conf-filename` said otherwise).
    pub recovery_configuration_file: String,
    /// Seconds it took.
    pub elapsed: f64,
}

/// Recovery failed.
#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    /// Catalog trouble (unknown backup, unreadable backup.info, lock).
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    /// A file operation failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// An archive of a compressed backup could not be unpacked.
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    /// The chain of an incremental backup cannot be combined.
    #[error(transparent)]
    Combine(#[from] CombineError),
    /// The backup cannot be recovered.
    #[error("cannot recover from backup {id} of server {server} (status: {status})")]
    NotDone {
        /// The backup.
        id: BackupId,
        /// The server.
        server: String,
        /// Its status.
        status: BackupStatus,
    },
    /// The request does not make sense.
    #[error("{0}")]
    Invalid(String),
    /// Barman refuses this restore, and says why in these words (a destination that is not
    /// empty, a delta restore of a backup that is not plain).
    #[error("{0}")]
    Refused(String),
    /// The remote host could not be reached, or a transfer to it failed.
    #[error("{what}: {why}")]
    Remote {
        /// What was being done.
        what: String,
        /// What went wrong.
        why: String,
    },
    /// A WAL file needed is missing or unusable.
    #[error("WAL file {name}: {why}")]
    Wal {
        /// The file.
        name: String,
        /// What is wrong.
        why: String,
    },
}

/// Restores the backup as requested: locally, with the WAL copied (see [`recover_with`]).
pub fn recover(req: &RecoveryRequest, notify: &mut dyn FnMut(RecoveryNotice)) -> Result<RecoveryReport, RecoveryError> {
    recover_with(req, &RecoverySetup::default(), notify)
}

/// Restores the backup as requested, to the host and with the WAL source `setup` says.
pub fn recover_with(
    req: &RecoveryRequest,
    setup: &RecoverySetup,
    notify: &mut dyn FnMut(RecoveryNotice),
) -> Result<RecoveryReport, RecoveryError> {
    let started = Instant::now();
    let catalog = &req.catalog;
    let mut info = BackupInfo::read(catalog, req.backup_id)?;
    if info.status != BackupStatus::Done {
        return Err(RecoveryError::NotDone { id: info.backup_id, server: catalog.server_name().into(), status: info.status });
    }
    let conf_name = recovery_conf_name(setup.recovery_conf_filename.as_deref())?;
    // An incremental backup's chain and pg_combinebackup, checked before anything is done.
    if info.parent_backup_id.is_some() && setup.remote.as_ref().is_some_and(|r| r.staging_location == StagingLocation::Remote) {
        return Err(RecoveryError::Invalid(format!(
            "backup {} is incremental: barman-rs cannot combine its chain on the recovery host \
             (staging_location = remote) yet; use staging_location = local, so that it is combined \
             in the staging path on this host and sent",
            info.backup_id
        )));
    }
    if setup.delta {
        if let Some(why) = delta::refusal(&info, setup.remote.as_ref().map(|r| r.staging_location)) {
            return Err(RecoveryError::Refused(why.into()));
        }
    }
    let plan = combine::CombinePlan::prepare(catalog, &info, &setup.combine)?;
    let remote = setup.remote.as_ref().map(remote::Remote::connect).transpose()?;
    let locations: Vec<(&crate::catalog::Tablespace, PathBuf)> = info
        .tablespaces
        .iter()
        .flatten()
        .map(|ts| (ts, req.tablespaces.get(&ts.name).cloned().unwrap_or_else(|| PathBuf::from(&ts.location))))
        .collect();
    match &remote {
        None => check_destination(&req.destination, &locations, setup.delta)?,
        Some(r) => check_remote_destination(r, &req.destination, &locations, setup.delta)?,
    }
    check_target(&info, &req.target)?;
    notify(RecoveryNotice::Starting {
        server: catalog.server_name().into(),
        id: info.backup_id,
        destination: req.destination.clone(),
        remote: setup.remote.as_ref().map(|r| r.ssh_command.clone()),
    });
    if let Some(what) = describe_target(&req.target) {
        notify(RecoveryNotice::Pitr(what));
    }
    let dest = &req.destination;
    // Delta mode: Barman's safe horizon, from what the destination says was restored there.
    let mode = if setup.delta {
        let recover_info = dest.join(delta::RECOVER_INFO);
        let previous = match &remote {
            None => std::fs::read(&recover_info).ok(),
            Some(r) => {
                let f = remote::shell_quote(&recover_info.to_string_lossy());
                Some(r.shell(&format!("if [ -f {f} ]; then cat {f}; fi"))?.into_bytes())
            }
        };
        let horizon = delta::safe_horizon(&info, previous.and_then(|b| delta::previous_restore(&info, &b)).as_ref());
        if let Some(h) = horizon {
            notify(RecoveryNotice::SafeHorizon(h.begin_time));
        }
        CopyMode::Delta(horizon.map(|h| h.at))
    } else {
        CopyMode::Fresh
    };

    // 2. The base backup and its tablespaces.
    notify(RecoveryNotice::CopyingBase);
    let id = info.backup_id;
    let archived = match info.compression.as_deref() {
        None | Some("None") => None,
        Some(name) => Some(ArchiveCompression::from_name(name).ok_or_else(|| {
            RecoveryError::Invalid(format!("backup {id} has compression {name:?}, which barman-rs cannot restore"))
        })?),
    };
    // Remote: what is prepared here before it is sent (WAL, configuration), removed at the end.
    let mut combine_time = None;
    let scratch = match (&remote, &setup.remote) {
        (Some(r), Some(opts)) => {
            combine_time = restore_base_remote(r, opts, req, archived, &locations, plan.as_ref(), &setup.combine, mode, notify)?;
            Some(remote::ScratchDir::temporary("barman_recovery-")?)
        }
        _ => {
            match &plan {
                Some(plan) => combine_time = Some(restore_combined_local(plan, req, &locations, &setup.combine, notify)?),
                None => restore_base_local(req, archived, &locations, mode, notify)?,
            }
            None
        }
    };
    // pg_combinebackup made the links of a local restore itself; Barman lists the
    // tablespaces when it makes them.
    if remote.is_some() || plan.is_none() {
        for (ts, location) in &locations {
            notify(RecoveryNotice::Tablespace { oid: ts.oid, name: ts.name.clone(), location: location.clone() });
        }
    }
    // Barman records how long the combine took in the copy of backup.info it leaves behind.
    if let Some(took) = combine_time {
        info.copy_stats =
            Some(vec![(crate::catalog::PyValue::Str("combine_time".into()), crate::catalog::PyValue::Float(took.as_secs_f64()))]);
    }

    // 3. WAL: copied, unless the restore_command fetches it from the archive (get-wal).
    let get_wal = matches!(setup.wal, WalSource::GetWal { .. });
    let wal_dest = if req.standby_mode || get_wal { dest.join("pg_wal") } else { dest.join("barman_wal") };
    let mut wal_files = 0;
    if get_wal {
        match &remote {
            None => std::fs::create_dir_all(wal_dest.join("archive_status"))
                .map_err(|e| StorageError::io(StorageOp::CreateDir, &wal_dest, e))?,
            Some(r) => r.make_dirs(&[&wal_dest.join("archive_status")])?,
        }
    } else {
        notify(RecoveryNotice::CopyingWal);
        let local_wal = match &scratch {
            Some(s) => s.path().join("wal"),
            None => wal_dest.clone(),
        };
        wal_files = collect_wal(req, &info, &local_wal, notify)?;
        if let (Some(r), Some(opts)) = (&remote, &setup.remote) {
            r.make_dirs(&[&wal_dest])?;
            r.push_tree(&local_wal, &wal_dest, &|_| false, req.jobs, opts.bwlimit)?;
        }
    }

    // 4. Configuration: edited here (remote: on copies fetched from the destination, sent back).
    notify(RecoveryNotice::GeneratingConfig);
    let mut lines: Vec<String> = Vec::new();
    match &setup.wal {
        WalSource::GetWal { comment, restore_command } => {
            lines.push(comment.clone());
            lines.push(pgconf::setting_line("restore_command", restore_command));
        }
        WalSource::Copy => {
            if !req.standby_mode || wal_files > 0 {
                lines.push(pgconf::setting_line("restore_command", &format!("cp {}/%f %p", wal_dest.display())));
            }
            if !req.standby_mode {
                lines.push(pgconf::setting_line("recovery_end_command", &format!("rm -fr {}", wal_dest.display())));
            }
        }
    }
    lines.extend(target_settings(&req.target).iter().map(|(k, v)| pgconf::setting_line(k, v)));
    notify(RecoveryNotice::IdentifyDangerous);
    let signal = if req.standby_mode { "standby.signal" } else { "recovery.signal" };
    // A standby's backup holds its standby.signal: left there, the restored server would follow
    // the live primary instead of recovering to the target (see `pgconf::remove_signal_files`).
    let removed = match &remote {
        None => pgconf::remove_signal_files(dest)?,
        Some(r) => r.remove_files(dest, &pgconf::SIGNAL_FILES)?,
    };
    let removed: Vec<String> = removed.into_iter().filter(|f| f != signal).collect();
    if !removed.is_empty() {
        notify(RecoveryNotice::SignalFilesRemoved { removed, written: signal.to_owned() });
    }
    let conf_dir = match &scratch {
        Some(s) => s.path().join("conf"),
        None => dest.clone(),
    };
    let mut wanted: Vec<String> = ["postgresql.conf", "postgresql.auto.conf", "pg_hba.conf", "pg_ident.conf"].map(String::from).into();
    if !wanted.contains(&conf_name) {
        wanted.push(conf_name.clone());
    }
    if let Some(r) = &remote {
        std::fs::create_dir_all(&conf_dir).map_err(|e| StorageError::io(StorageOp::CreateDir, &conf_dir, e))?;
        r.fetch_files(dest, &wanted, &conf_dir)?;
    }
    let (mut report, missing_files) = pgconf::secure_configuration(&conf_dir)?;
    // A file of the user's choice is analysed like the others, or made.
    let custom = conf_name != "postgresql.conf" && conf_name != "postgresql.auto.conf";
    if custom && !pgconf::secure_file(&conf_dir, &conf_name, &mut report)? {
        if let Some(parent) = conf_dir.join(&conf_name).parent() {
            std::fs::create_dir_all(parent).map_err(|e| StorageError::io(StorageOp::CreateDir, parent, e))?;
        }
    }
    pgconf::append_lines(&conf_dir.join(&conf_name), &lines)?;
    atomic_write(&conf_dir.join(signal), b"", 0o644)?;
    atomic_write(&conf_dir.join(".barman-recover.info"), &info.to_bytes()?, FILE_MODE)?;
    match (&remote, &setup.remote) {
        (Some(r), Some(opts)) => {
            let mut send: Vec<String> = Vec::new();
            for name in wanted.iter().filter(|n| !n.starts_with("pg_hba.conf") && !n.starts_with("pg_ident.conf")) {
                for candidate in [name.clone(), format!("{name}.origin")] {
                    if conf_dir.join(&candidate).exists() && !send.contains(&candidate) {
                        send.push(candidate);
                    }
                }
            }
            send.extend([signal.to_owned(), ".barman-recover.info".to_owned()]);
            r.push_files(&conf_dir, &send, dest, opts.bwlimit)?;
            // rsync -p gave the destination the mode of the local source directory.
            r.shell(&format!("chmod 700 {}", remote::shell_quote(&dest.to_string_lossy())))?;
        }
        _ => fsync_dir(dest)?,
    }
    drop(scratch);
    Ok(RecoveryReport {
        changes: report.changes,
        warnings: report.warnings,
        missing_files,
        wal_files,
        get_wal,
        recovery_configuration_file: conf_name,
        elapsed: started.elapsed().as_secs_f64(),
    })
}

/// The recovery target settings, in Barman's order.
fn target_settings(t: &RecoveryTarget) -> Vec<(&'static str, String)> {
    let mut settings = Vec::new();
    if let Some(v) = &t.time {
        settings.push(("recovery_target_time", v.clone()));
    }
    if let Some(v) = &t.xid {
        settings.push(("recovery_target_xid", v.clone()));
    }
    if let Some(v) = &t.lsn {
        settings.push(("recovery_target_lsn", v.clone()));
    }
    if let Some(v) = &t.name {
        settings.push(("recovery_target_name", v.clone()));
    }
    if t.immediate {
        settings.push(("recovery_target", "immediate".into()));
    }
    if t.exclusive {
        settings.push(("recovery_target_inclusive", "false".into()));
    }
    match t.timeline {
        Some(TargetTimeline::Id(n)) => settings.push(("recovery_target_timeline", n.to_string())),
        Some(TargetTimeline::Current) => settings.push(("recovery_target_timeline", "current".into())),
        Some(TargetTimeline::Latest) => settings.push(("recovery_target_timeline", "latest".into())),
        None => {}
    }
    if let Some(a) = &t.action {
        settings.push(("recovery_target_action", a.clone()));
    }
    settings
}

/// `--recovery-conf-filename`, checked: a name relative to the destination, without `..`
/// (default `postgresql.auto.conf`).
fn recovery_conf_name(name: Option<&str>) -> Result<String, RecoveryError> {
    let Some(name) = name else { return Ok("postgresql.auto.conf".into()) };
    let path = Path::new(name);
    if name.is_empty() || !path.components().all(|c| matches!(c, std::path::Component::Normal(_))) {
        return Err(RecoveryError::Invalid(format!(
            "invalid recovery configuration file name {name:?}: give a path relative to the destination directory, without '..'"
        )));
    }
    Ok(name.to_owned())
}

/// An incremental backup into a local destination: its chain combined straight into it by
/// pg_combinebackup, each tablespace into its location; then what Barman's
/// `_post_recovery_cleanup` removes is removed, and the new manifest, written by
/// pg_combinebackup for the synthetic backup, is kept as `backup_manifest.<ID>`.
fn restore_combined_local(
    plan: &combine::CombinePlan,
    req: &RecoveryRequest,
    locations: &[(&crate::catalog::Tablespace, PathBuf)],
    opts: &CombineOptions,
    notify: &mut dyn FnMut(RecoveryNotice),
) -> Result<std::time::Duration, RecoveryError> {
    let dest = &req.destination;
    let took = plan.combine(dest, locations, false, opts, req.jobs, notify)?;
    combine::post_combine_cleanup(dest)?;
    let manifest = dest.join("backup_manifest");
    if manifest.exists() {
        durable_rename(&manifest, &dest.join(format!("backup_manifest.{}", req.backup_id)))?;
    }
    Ok(took)
}

/// How the base backup's files reach the destination.
#[derive(Debug, Clone, Copy)]
enum CopyMode {
    /// Into an empty (or new) destination.
    Fresh,
    /// Over what the destination holds, rewriting only what differs ([`delta`]), with the safe
    /// horizon, if any.
    Delta(Option<std::time::SystemTime>),
}

/// What a local copy of a plain backup's data directory leaves out, as Barman's does: the
/// links (made afterwards, to the new locations), the manifest (restored as
/// `backup_manifest.<ID>`), and `recovery.conf` / `tablespace_map`, which PostgreSQL would act
/// on at start-up.
fn excluded_from_local_copy(rel: &Path) -> bool {
    rel.starts_with("pg_tblspc") && rel != Path::new("pg_tblspc")
        || ["backup_manifest", "recovery.conf", "tablespace_map"].iter().any(|f| rel == Path::new(f))
}

/// What a delta restore into `dest` must not remove (Barman's `exclude_and_protect`): the
/// links `pg_tblspc/<oid>` of the backup's tablespaces, and the tablespace locations inside
/// `dest`, which are synced on their own. Relative to `dest`.
fn protected_in_pgdata(dest: &Path, locations: &[(&crate::catalog::Tablespace, PathBuf)]) -> Vec<PathBuf> {
    let mut protected = Vec::new();
    for (ts, location) in locations {
        protected.push(Path::new("pg_tblspc").join(ts.oid.to_string()));
        if let Ok(rel) = location.strip_prefix(dest) {
            if !rel.as_os_str().is_empty() {
                protected.push(rel.to_path_buf());
            }
        }
    }
    protected
}

/// The base backup into a local destination: copied (plain) or unpacked (compressed) on
/// `jobs` threads, tablespaces in their locations and linked from `pg_tblspc`. In delta mode
/// (a plain backup only: [`delta::refusal`]), each tree is synced instead of copied.
fn restore_base_local(
    req: &RecoveryRequest,
    archived: Option<ArchiveCompression>,
    locations: &[(&crate::catalog::Tablespace, PathBuf)],
    mode: CopyMode,
    notify: &mut dyn FnMut(RecoveryNotice),
) -> Result<(), RecoveryError> {
    let (catalog, dest, id) = (&req.catalog, &req.destination, req.backup_id);
    let data = catalog.backup_data_dir(id);
    let manifest = data.join("backup_manifest");
    match (archived, mode) {
        (None, CopyMode::Fresh) => {
            copy::copy_tree(&data, dest, req.jobs, &excluded_from_local_copy)?;
            if manifest.exists() {
                copy::copy_file(&manifest, &dest.join(format!("backup_manifest.{id}")))?;
            }
        }
        (None, CopyMode::Delta(horizon)) => {
            let protected = protected_in_pgdata(dest, locations).into_iter().collect();
            let extra: Vec<(PathBuf, PathBuf)> =
                if manifest.exists() { vec![(PathBuf::from(format!("backup_manifest.{id}")), manifest)] } else { Vec::new() };
            let stats = delta::sync_tree(&data, dest, &excluded_from_local_copy, &extra, &protected, horizon, req.jobs)?;
            notify(RecoveryNotice::DeltaCopied { directory: dest.clone(), stats });
        }
        (Some(algorithm), _) => {
            unpack_archives(&data, algorithm, dest, locations, req.jobs)?;
            if manifest.exists() {
                copy::copy_file(&manifest, &dest.join(format!("backup_manifest.{id}")))?;
            }
        }
    }
    for (ts, location) in locations {
        let ts_src = catalog.backup_dir(id).join(ts.oid.to_string());
        match (archived, mode) {
            (None, CopyMode::Fresh) => {
                copy::copy_tree(&ts_src, location, req.jobs, &|_| false)?;
            }
            (None, CopyMode::Delta(horizon)) => {
                let stats = delta::sync_tree(&ts_src, location, &|_| false, &[], &Default::default(), horizon, req.jobs)?;
                notify(RecoveryNotice::DeltaCopied { directory: location.clone(), stats });
            }
            (Some(_), _) => {}
        }
        let link = dest.join("pg_tblspc").join(ts.oid.to_string());
        std::fs::create_dir_all(dest.join("pg_tblspc")).map_err(|e| StorageError::io(StorageOp::CreateDir, dest.join("pg_tblspc"), e))?;
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(location, &link).map_err(|e| StorageError::io(StorageOp::Create, &link, e))?;
    }
    fsync_dir(&dest.join("pg_tblspc")).or_else(|e| if e.is_not_found() { Ok(()) } else { Err(e) })?;
    Ok(())
}

/// The base backup onto the remote host, as Barman's `RsyncCopyOperation`: the destination
/// and the tablespace locations made (`mkdir -p -m 700`), each tablespace and then the data
/// directory sent with rsync (leaving out `pg_wal/*`, `pg_log/*`, `log/*`, `postmaster.pid`,
/// `recovery.conf`, `tablespace_map` and the `pg_tblspc` links; in delta mode synced, see
/// [`remote::Remote::sync_tree`]), the manifest sent as
/// `backup_manifest.<ID>`, the links made remotely. A compressed backup is unpacked into
/// `<staging_path>/barman-decompress<pid>` here first (Barman's `DecompressOperation` with
/// `staging_location = local`), which is removed afterwards; with `staging_location =
/// remote` it is unpacked on the recovery host instead ([`unpack_on_remote`]). An incremental
/// backup (`plan`) is combined with its chain into `<staging_path>/barman-combine<pid>/<ID>/`
/// here first (Barman's `CombineOperation` followed by `RsyncCopyOperation`), which is sent
/// as a plain backup with the manifest pg_combinebackup wrote, then removed; returns how long
/// the combine took.
#[allow(clippy::too_many_arguments)]
fn restore_base_remote(
    r: &remote::Remote<'_>,
    opts: &RemoteOptions,
    req: &RecoveryRequest,
    archived: Option<ArchiveCompression>,
    locations: &[(&crate::catalog::Tablespace, PathBuf)],
    plan: Option<&combine::CombinePlan>,
    combine_opts: &CombineOptions,
    mode: CopyMode,
    notify: &mut dyn FnMut(RecoveryNotice),
) -> Result<Option<std::time::Duration>, RecoveryError> {
    let (catalog, dest, id) = (&req.catalog, &req.destination, req.backup_id);
    let data = catalog.backup_data_dir(id);
    let mut manifest = data.join("backup_manifest");
    let mut combine_time = None;
    let mut dirs: Vec<&Path> = vec![dest.as_path()];
    dirs.extend(locations.iter().map(|(_, l)| l.as_path()));
    // Where the chain was combined or the backup unpacked: kept until everything is sent.
    let staging;
    match archived {
        Some(algorithm) if plan.is_none() && opts.staging_location == StagingLocation::Remote => {
            unpack_on_remote(r, opts, req, algorithm, locations, &dirs)?;
        }
        _ => {
            let (pgdata_src, ts_src): (PathBuf, Vec<PathBuf>) = match (plan, archived) {
                (Some(plan), _) => {
                    staging = remote::ScratchDir::create(
                        combine_opts.staging_path.join(format!("barman-combine{}", std::process::id())),
                    )?;
                    let root = staging.path().join(id.to_string());
                    let staged: Vec<(&crate::catalog::Tablespace, PathBuf)> =
                        locations.iter().map(|(ts, _)| (*ts, root.join(ts.oid.to_string()))).collect();
                    combine_time = Some(plan.combine(&root.join("data"), &staged, true, combine_opts, req.jobs, notify)?);
                    manifest = root.join("data").join("backup_manifest");
                    (root.join("data"), staged.into_iter().map(|(_, p)| p).collect())
                }
                (None, None) => {
                    (data.clone(), locations.iter().map(|(ts, _)| catalog.backup_dir(id).join(ts.oid.to_string())).collect())
                }
                (None, Some(algorithm)) => {
                    staging = remote::ScratchDir::create(opts.staging_path.join(format!("barman-decompress{}", std::process::id())))?;
                    let staged: Vec<(&crate::catalog::Tablespace, PathBuf)> =
                        locations.iter().map(|(ts, _)| (*ts, staging.path().join(ts.oid.to_string()))).collect();
                    unpack_archives(&data, algorithm, &staging.path().join("data"), &staged, req.jobs)?;
                    (staging.path().join("data"), staged.into_iter().map(|(_, p)| p).collect())
                }
            };
            r.make_dirs(&dirs)?;
            for ((ts, location), src) in locations.iter().zip(&ts_src) {
                let bwlimit = opts.tablespace_bwlimit.get(&ts.name).copied().or(opts.bwlimit);
                match mode {
                    CopyMode::Fresh => r.push_tree(src, location, &|_| false, req.jobs, bwlimit)?,
                    CopyMode::Delta(horizon) => r.sync_tree(src, location, &|_| false, &[], horizon, req.jobs, bwlimit)?,
                }
            }
            match mode {
                CopyMode::Fresh => r.push_tree(&pgdata_src, dest, &excluded_from_pgdata, req.jobs, opts.bwlimit)?,
                CopyMode::Delta(horizon) => {
                    let protected = protected_in_pgdata(dest, locations);
                    r.sync_tree(&pgdata_src, dest, &excluded_from_pgdata, &protected, horizon, req.jobs, opts.bwlimit)?
                }
            }
        }
    }
    if manifest.exists() {
        r.push_file(&manifest, &dest.join(format!("backup_manifest.{id}")), opts.bwlimit)?;
    }
    let q = |p: &Path| remote::shell_quote(&p.to_string_lossy());
    let mut script = vec![format!("mkdir -p {} {}", q(&dest.join("pg_wal/archive_status")), q(&dest.join("pg_tblspc")))];
    for (ts, location) in locations {
        let link = dest.join("pg_tblspc").join(ts.oid.to_string());
        script.push(format!("rm -f {} && ln -s {} {}", q(&link), q(location), q(&link)));
    }
    r.shell(&script.join(" && "))?;
    Ok(combine_time)
}

/// `staging_location = remote`, Barman's pipeline with the rsync copy first: the backup
/// directory, as it is in the catalog, sent to `<staging_path>/barman-rsync-copy<pid>/<ID>/`
/// on the recovery host (`staging_path` is a path there), then each archive unpacked by that
/// host's `tar` straight into its final place (`DecompressOperation` as the last step, run
/// through the ssh command), at most `jobs` at once; the staging directory is removed
/// afterwards, also when a step failed. `tar` and the decompressor must be on the remote
/// PATH: checked first, so a missing one is named before anything is sent.
fn unpack_on_remote(
    r: &remote::Remote<'_>,
    opts: &RemoteOptions,
    req: &RecoveryRequest,
    algorithm: ArchiveCompression,
    locations: &[(&crate::catalog::Tablespace, PathBuf)],
    dirs: &[&Path],
) -> Result<(), RecoveryError> {
    let (catalog, dest, id) = (&req.catalog, &req.destination, req.backup_id);
    let mut programs = vec!["tar"];
    programs.extend(remote::decompressor(algorithm));
    r.require_programs(
        &programs,
        &format!("unpack a {}-compressed backup in its staging path (staging_location = remote)", algorithm.name()),
    )?;
    let q = |p: &Path| remote::shell_quote(&p.to_string_lossy());
    let staging = opts.staging_path.join(format!("barman-rsync-copy{}", std::process::id()));
    tracing::info!(
        "staging_location = remote: sending backup {id} to {} on the recovery host, to be unpacked there",
        staging.display()
    );
    r.shell(&format!("rm -rf {s} && mkdir -p -m 700 {s}", s = q(&staging)))?;
    let result = (|| {
        let copy = staging.join(id.to_string());
        r.push_tree(&catalog.backup_dir(id), &copy, &|_| false, req.jobs, opts.bwlimit)?;
        r.make_dirs(dirs)?;
        let data = copy.join("data");
        let mut work =
            vec![(data.join(algorithm.archive_file("base.tar")), dest.clone(), &["recovery.conf", "tablespace_map"][..])];
        for (ts, location) in locations {
            work.push((data.join(algorithm.archive_file(&format!("{}.tar", ts.oid))), location.clone(), &[][..]));
        }
        let next = std::sync::atomic::AtomicUsize::new(0);
        let failure: std::sync::Mutex<Option<RecoveryError>> = std::sync::Mutex::new(None);
        std::thread::scope(|s| {
            for _ in 0..req.jobs.clamp(1, work.len()) {
                s.spawn(|| loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some((archive, target, exclude)) = work.get(i) else { break };
                    if failure.lock().expect("no panics while held").is_some() {
                        break;
                    }
                    if let Err(e) = r.shell(&remote::untar_command(algorithm, archive, target, exclude)) {
                        let why = match e {
                            RecoveryError::Remote { why, .. } => why,
                            other => other.to_string(),
                        };
                        let what = format!("Error decompressing {} into {} on the recovery host", archive.display(), target.display());
                        failure.lock().expect("no panics while held").get_or_insert(RecoveryError::Remote { what, why });
                        break;
                    }
                });
            }
        });
        match failure.into_inner().expect("threads joined") {
            Some(e) => Err(e),
            None => Ok(()),
        }
    })();
    if let Err(e) = r.shell(&format!("rm -rf {}", q(&staging))) {
        tracing::warn!("Staging path cleanup operation failed to delete {}: {e}", staging.display());
    }
    result
}

/// What Barman leaves out of a data directory it sends (relative paths).
fn excluded_from_pgdata(rel: &Path) -> bool {
    let mut parts = rel.components();
    let first = parts.next().map(|c| c.as_os_str().to_string_lossy().into_owned()).unwrap_or_default();
    let inside = parts.next().is_some();
    match first.as_str() {
        "pg_log" | "log" | "pg_xlog" | "pg_wal" | "pg_tblspc" => inside,
        "postmaster.pid" | "recovery.conf" | "tablespace_map" | "backup_manifest" => !inside,
        _ => false,
    }
}

/// [`check_destination`] on the remote host.
fn check_remote_destination(
    r: &remote::Remote<'_>,
    dest: &Path,
    locations: &[(&crate::catalog::Tablespace, PathBuf)],
    delta: bool,
) -> Result<(), RecoveryError> {
    let d = dest.display();
    match r.inspect(dest)? {
        remote::RemoteDir::NotADirectory => {
            return Err(RecoveryError::Invalid(format!("destination {d} on the remote host exists and is not a directory")))
        }
        remote::RemoteDir::Running if delta => {
            return Err(RecoveryError::Invalid(format!(
                "destination directory {d} on the remote host holds a running PostgreSQL (postmaster.pid): stop it \
                 before a delta restore (or remove postmaster.pid if a crash left it behind)"
            )))
        }
        remote::RemoteDir::Running | remote::RemoteDir::NotEmpty if !delta => {
            return Err(RecoveryError::Refused(not_empty_message(dest)))
        }
        _ => {}
    }
    if !delta {
        for (ts, location) in locations {
            if matches!(r.inspect(location)?, remote::RemoteDir::Running | remote::RemoteDir::NotEmpty) {
                return Err(RecoveryError::Refused(tablespace_not_empty_message(location, &ts.name)));
            }
        }
    }
    Ok(())
}

/// Copies the WAL the target needs, decompressed, into the local directory `into` (made,
/// with `archive_status/`), the receiver's partial segment too when wanted; returns how many.
fn collect_wal(
    req: &RecoveryRequest,
    info: &BackupInfo,
    into: &Path,
    notify: &mut dyn FnMut(RecoveryNotice),
) -> Result<usize, RecoveryError> {
    let catalog = &req.catalog;
    std::fs::create_dir_all(into.join("archive_status")).map_err(|e| StorageError::io(StorageOp::CreateDir, into, e))?;
    let mut wal_files = 0;
    let wals = required_wal(catalog, info, &req.target)?;
    let last_archived = wals.iter().filter_map(|e| e.name.segment()).max_by_key(|s| (s.timeline(), s.log(), s.seg()));
    for entry in &wals {
        restore_wal_file(catalog, &req.compression, entry, &into.join(restored_name(&entry.name)))?;
        wal_files += 1;
    }
    if req.partial_wal && !req.target.immediate {
        if let Some(name) = supply_partial(catalog, info, last_archived, into)? {
            notify(RecoveryNotice::PartialWal(name));
            wal_files += 1;
        }
    }
    fsync_dir(into)?;
    Ok(wal_files)
}

/// Unpacks a tar-format backup: every archive on its own thread, at most `jobs` at once
/// (the base archive, usually the biggest, first). Stops at the first failure.
fn unpack_archives(
    data: &Path,
    algorithm: ArchiveCompression,
    dest: &Path,
    locations: &[(&crate::catalog::Tablespace, PathBuf)],
    jobs: usize,
) -> Result<(), RecoveryError> {
    // (archive, where it goes, members left out)
    let mut work: Vec<(PathBuf, PathBuf, &[&str])> =
        vec![(data.join(algorithm.archive_file("base.tar")), dest.to_owned(), &["recovery.conf", "tablespace_map"])];
    for (ts, location) in locations {
        work.push((data.join(algorithm.archive_file(&format!("{}.tar", ts.oid))), location.clone(), &[]));
    }
    for (archive, _, _) in &work {
        if !archive.exists() {
            return Err(RecoveryError::Invalid(format!("the backup has no archive {}", archive.display())));
        }
    }
    // The base archive holds no links (tablespace_map replaces them); should one come, it may
    // only be a tablespace's and point where that tablespace is restored.
    let links: std::collections::BTreeMap<String, PathBuf> =
        locations.iter().map(|(ts, l)| (ts.oid.to_string(), l.clone())).collect();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let failure: std::sync::Mutex<Option<RecoveryError>> = std::sync::Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..jobs.clamp(1, work.len()) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some((archive, target, exclude)) = work.get(i) else { break };
                if failure.lock().expect("no panics while held").is_some() {
                    break;
                }
                if let Err(e) = extract_archive(archive, algorithm, target, links.clone(), exclude) {
                    failure.lock().expect("no panics while held").get_or_insert(e.into());
                    break;
                }
            });
        }
    });
    match failure.into_inner().expect("threads joined") {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Barman's checks before a restore (backup.py, `recover`): without delta mode the destination
/// and every tablespace location must be empty or absent, as restoring over files would mix
/// two clusters. In delta mode files are expected there; but not a running server (a
/// `postmaster.pid`), whose files would change under the restore — Barman would remove the
/// pid file and go on; barman-rs stops.
fn check_destination(dest: &Path, locations: &[(&crate::catalog::Tablespace, PathBuf)], delta: bool) -> Result<(), RecoveryError> {
    if delta {
        if dest.exists() && !dest.is_dir() {
            return Err(RecoveryError::Invalid(format!("destination {} exists and is not a directory", dest.display())));
        }
        if dest.join("postmaster.pid").exists() {
            return Err(RecoveryError::Invalid(format!(
                "destination directory {} holds a running PostgreSQL (postmaster.pid): stop it before a delta restore \
                 (or remove postmaster.pid if a crash left it behind)",
                dest.display()
            )));
        }
        return Ok(());
    }
    if !dir_is_empty(dest)? {
        return Err(RecoveryError::Refused(not_empty_message(dest)));
    }
    for (ts, location) in locations {
        if !dir_is_empty(location)? {
            return Err(RecoveryError::Refused(tablespace_not_empty_message(location, &ts.name)));
        }
    }
    Ok(())
}

/// Barman's refusal of a destination that holds files.
fn not_empty_message(dest: &Path) -> String {
    format!(
        "The restore operation cannot proceed because the destination folder '{}' is not empty. To prevent \
         accidental data loss, the destination must be empty. Please choose a different location or manually \
         empty the folder.",
        dest.display()
    )
}

/// Barman's refusal of a tablespace location that holds files.
fn tablespace_not_empty_message(location: &Path, name: &str) -> String {
    format!(
        "The restore operation cannot proceed. The destination path '{}' for the tablespace '{name}' is not \
         empty. To prevent accidental data loss, the tablespace destination must be empty. Please choose a \
         different location or manually empty the folder.",
        location.display()
    )
}

/// Whether `dir` is absent or an empty directory.
fn dir_is_empty(dir: &Path) -> Result<bool, RecoveryError> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => Ok(entries.next().is_none()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(StorageError::io(StorageOp::Read, dir, e).into()),
    }
}

/// A target the backup cannot reach: a time before the backup ended (Barman's message), an
/// LSN before its end.
fn check_target(info: &BackupInfo, target: &RecoveryTarget) -> Result<(), RecoveryError> {
    if let (Some(time), Some(end)) = (target.time.as_deref(), info.end_time) {
        let end_epoch = end.to_offset_datetime().map(|t| t.unix_timestamp() as f64);
        if let (Some(t), Some(e)) = (parse_target_epoch(time), end_epoch) {
            if t < e.floor() {
                return Err(RecoveryError::Invalid(format!(
                    "The requested target time {time} is before the backup end time {end}"
                )));
            }
        }
    }
    if let (Some(lsn), Some(end)) = (target.lsn.as_deref(), info.end_xlog) {
        if let Ok(l) = lsn.parse::<barman_replication::Lsn>() {
            if l < end {
                return Err(RecoveryError::Invalid(format!(
                    "The requested target LSN {lsn} is before the backup end LSN {end}"
                )));
            }
        }
    }
    Ok(())
}

fn describe_target(t: &RecoveryTarget) -> Option<String> {
    let mut parts = Vec::new();
    if let Some(v) = &t.time {
        parts.push(format!("Recovery target time: '{v}'"));
    }
    if let Some(v) = &t.xid {
        parts.push(format!("Recovery target xid: '{v}'"));
    }
    if let Some(v) = &t.lsn {
        parts.push(format!("Recovery target LSN: '{v}'"));
    }
    if let Some(v) = &t.name {
        parts.push(format!("Recovery target name: '{v}'"));
    }
    if t.immediate {
        parts.push("Recovery target: 'immediate'".into());
    }
    (!parts.is_empty()).then(|| format!("Doing PITR. {}", parts.join(", ")))
}

/// The WAL to copy, as Barman's `get_required_xlog_files`: every `.history` file; segments
/// from the backup's `begin_wal` on, on timelines up to the target one; with a target time,
/// up to the first segment archived after it.
fn required_wal(catalog: &ServerCatalog, info: &BackupInfo, target: &RecoveryTarget) -> Result<Vec<XlogDbEntry>, RecoveryError> {
    let begin = info.begin_wal.ok_or_else(|| RecoveryError::Invalid(format!("backup {} has no begin_wal", info.backup_id)))?;
    let end = info.end_wal.ok_or_else(|| RecoveryError::Invalid(format!("backup {} has no end_wal", info.backup_id)))?;
    let lock = catalog.lock(LockKind::ServerXlogDb)?;
    let entries = xlogdb::read_if_exists(&catalog.xlogdb_path(), &lock)?.unwrap_or_default();
    drop(lock);
    let max_tli = entries.iter().map(|e| e.name.timeline().0).max().unwrap_or(1);
    let target_tli = match target.timeline {
        Some(TargetTimeline::Id(n)) => n,
        Some(TargetTimeline::Current) => end.timeline().0,
        Some(TargetTimeline::Latest) | None => max_tli.max(end.timeline().0),
    };
    // A history file tells which older timelines lead to the target one.
    let history = entries
        .iter()
        .find(|e| matches!(e.name, WalFileName::History(t) if t.0 == target_tli))
        .map(|e| std::fs::read(catalog.wal_path(&e.name)).map_err(|err| StorageError::io(StorageOp::Read, catalog.wal_path(&e.name), err)))
        .transpose()?
        .and_then(|bytes| TimelineHistory::parse(barman_replication::TimelineId(target_tli), &bytes).ok());
    let target_time = target.time.as_deref().and_then(parse_target_epoch);
    let mut out = Vec::new();
    let mut partials = Vec::new();
    let mut reached_target = false;
    for e in entries {
        match e.name {
            // The last, incomplete segment of a timeline that ended (a promotion): archived as
            // `<segment>.partial` because its rest belongs to the next timeline.
            WalFileName::Partial(s) if s.timeline().0 == target_tli && (s.log(), s.seg()) >= (begin.log(), begin.seg()) => {
                partials.push(e)
            }
            WalFileName::History(_) => out.push(e),
            WalFileName::Segment(s) => {
                if (s.log(), s.seg()) < (begin.log(), begin.seg()) || s.timeline().0 > target_tli {
                    continue;
                }
                if let Some(h) = &history {
                    if s.timeline().0 != target_tli && !h.contains(s.timeline()) {
                        continue;
                    }
                }
                let past_target = target_time.is_some_and(|t| e.time > t) && (s.log(), s.seg()) > (end.log(), end.seg());
                out.push(e);
                if past_target {
                    reached_target = true;
                    break;
                }
            }
            _ => {}
        }
    }
    // Recovering along a timeline that later ended (`--target-tli current` or a number after a
    // failover): its WAL goes on in that partial segment, which PostgreSQL asks for under the
    // segment's own name. Barman leaves it out, and the rows written just before the
    // promotion with it; barman-rs supplies it when it directly follows the archived segments.
    if !reached_target {
        let last = out
            .iter()
            .filter_map(|e| match e.name {
                WalFileName::Segment(s) if s.timeline().0 == target_tli => Some((s.log(), s.seg())),
                _ => None,
            })
            .max();
        let newest_partial = partials.into_iter().max_by_key(|e| e.name.segment().map(|s| (s.log(), s.seg())));
        if let Some(p) = newest_partial {
            let seg = p.name.segment().map(|s| (s.log(), s.seg()));
            if last.is_none_or(|l| seg > Some(l)) {
                out.push(p);
            }
        }
    }
    Ok(out)
}

/// The name a WAL file is restored under: an archived `.partial` as its segment.
fn restored_name(name: &WalFileName) -> String {
    match name {
        WalFileName::Partial(s) => s.to_string(),
        other => other.to_string(),
    }
}

/// Seconds since the epoch of a `--target-time` such as `2026-11-25 12:36:30+00:00`, when it
/// carries an offset; other forms leave the WAL selection unlimited (and correct).
fn parse_target_epoch(s: &str) -> Option<f64> {
    let ts: crate::catalog::BarmanTimestamp = s.parse().ok()?;
    ts.to_offset_datetime().map(|t| t.unix_timestamp() as f64)
}

/// Copies one archived WAL file, decompressed, to `dest` (fsynced; the directory is fsynced
/// once all are copied).
fn restore_wal_file(
    catalog: &ServerCatalog,
    compression: &WalCompression,
    entry: &XlogDbEntry,
    dest: &Path,
) -> Result<(), RecoveryError> {
    let src = catalog.wal_path(&entry.name);
    let wal_err = |why: String| RecoveryError::Wal { name: entry.name.to_string(), why };
    let algorithm: Compression = match entry.compression.as_deref() {
        None | Some("None") => {
            copy::copy_file(&src, dest)?;
            return Ok(());
        }
        Some(name) => name.parse().map_err(|_| wal_err(format!("xlog.db names an unknown compression {name:?}")))?,
    };
    let input = std::fs::File::open(&src).map_err(|e| StorageError::io(StorageOp::Open, &src, e))?;
    let mut decoded = compression
        .decoder(Some(algorithm), input)
        .map_err(|e| wal_err(format!("cannot decompress {} ({algorithm}): {e}", src.display())))?;
    let mut out = crate::storage::AtomicFile::create(dest, FILE_MODE)?;
    std::io::copy(&mut decoded, &mut out).map_err(|e| wal_err(format!("cannot decompress {} ({algorithm}): {e}", src.display())))?;
    out.commit()?;
    Ok(())
}

/// The receiver's `.partial` for the segment right after the last archived one, on the same
/// timeline, copied as a complete segment name: PostgreSQL replays it up to its last valid
/// record. Returns its name when supplied.
fn supply_partial(
    catalog: &ServerCatalog,
    info: &BackupInfo,
    last_archived: Option<WalSegmentName>,
    wal_dest: &Path,
) -> Result<Option<String>, RecoveryError> {
    let size = info.xlog_segment_size.unwrap_or(crate::wal::WalSegmentSize::DEFAULT);
    let Ok(entries) = std::fs::read_dir(catalog.streaming_directory()) else { return Ok(None) };
    let mut best: Option<WalSegmentName> = None;
    for e in entries.flatten() {
        if let Some(Ok(WalFileName::Partial(s))) = e.file_name().to_str().map(str::parse::<WalFileName>) {
            if best.is_none_or(|b| (s.log(), s.seg(), s.timeline()) > (b.log(), b.seg(), b.timeline())) {
                best = Some(s);
            }
        }
    }
    let Some(partial) = best else { return Ok(None) };
    let follows = match last_archived {
        Some(last) => last.next(size).is_some_and(|n| n == partial),
        None => info.begin_wal == Some(partial),
    };
    if !follows {
        return Ok(None);
    }
    let src = catalog.streaming_directory().join(format!("{partial}.partial"));
    copy::copy_file(&src, &wal_dest.join(partial.to_string()))?;
    Ok(Some(partial.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn get_wal_commands_as_barman_writes_them() {
        let local = WalSource::local_get_wal("barman", None, "pg", "barman", false);
        assert_eq!(
            local,
            WalSource::GetWal {
                comment: "# The 'barman get-wal' command must run as 'barman' user".into(),
                restore_command: "barman get-wal -P pg %f > %p".into()
            }
        );
        let WalSource::GetWal { restore_command, .. } =
            WalSource::local_get_wal("/opt/my barman/barman", Some(Path::new("/srv/b.conf")), "pg", "barman", true)
        else {
            unreachable!()
        };
        assert_eq!(restore_command, "'/opt/my barman/barman' -c /srv/b.conf get-wal pg %f > %p");
        let WalSource::GetWal { restore_command, comment } =
            WalSource::remote_get_wal("barman", Some("2222"), "backup.example.com", "pg", 4, false)
        else {
            unreachable!()
        };
        assert_eq!(restore_command, "barman-wal-restore -P -U barman --port 2222 backup.example.com pg %f %p -p 4");
        assert_eq!(comment, "# The 'barman-wal-restore' command is provided in the 'barman-cli' package");
        let WalSource::GetWal { restore_command, .. } = WalSource::remote_get_wal("barman", None, "b", "pg", 1, true) else {
            unreachable!()
        };
        assert_eq!(restore_command, "barman-wal-restore -U barman b pg %f %p");
    }

    #[test]
    fn recovery_conf_names_stay_inside_the_destination() {
        assert_eq!(recovery_conf_name(None).unwrap(), "postgresql.auto.conf");
        assert_eq!(recovery_conf_name(Some("conf.d/recovery.conf")).unwrap(), "conf.d/recovery.conf");
        for bad in ["", "/etc/x.conf", "../x.conf", "a/../../x"] {
            assert!(recovery_conf_name(Some(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn pgdata_exclusions_are_barmans() {
        for out in ["pg_wal/000000010000000000000001", "pg_tblspc/16384", "postmaster.pid", "log/x.log", "backup_manifest", "tablespace_map"] {
            assert!(excluded_from_pgdata(Path::new(out)), "{out}");
        }
        for kept in ["pg_wal", "pg_tblspc", "base/1/1259", "postgresql.conf", "global/pg_control"] {
            assert!(!excluded_from_pgdata(Path::new(kept)), "{kept}");
        }
    }
}
