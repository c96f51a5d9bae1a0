//! `barman receive-wal`: WAL streamed over barman-rs's own replication client into the
//! server's `streaming/` directory, the way pg_receivewal fills it for Barman.
//!
//! * The segment being received is `<segment>.partial`, preallocated; a complete segment is
//!   validated (every record's CRC), fsynced and renamed to `<segment>`, where `archive-wal`
//!   picks it up.
//! * The flush position reported to the server covers fsynced bytes only. In synchronous mode
//!   (our `application_name` is listed in the server's `synchronous_standby_names`) every
//!   batch is fsynced and reported at once: a commit waiting for us returns only when its WAL
//!   is on our disk — RPO = 0.
//! * Where to start is decided as pg_receivewal does ([`start_position`]): after the newest
//!   complete segment, or at the start of the newest `.partial`, else at the slot's
//!   `restart_lsn`, else at the server's current position.
//! * A timeline switch is followed like a standby: the old timeline's `.partial` is left as
//!   is, the new timeline's history file is fetched into `streaming/`, and streaming resumes.
//! * A lost connection or a restarting server is retried with backoff; stopping (SIGTERM,
//!   `receive-wal --stop`) fsyncs and ends COPY cleanly.
//! * A connection that goes silent (a stuck proxy or NAT, a hung server) is given up after
//!   [`ReceiverSettings::receive_timeout`] and retried like a lost one: the WAL sender is asked
//!   for a reply at half of it ([`barman_replication::stream`]), and connecting, the commands
//!   before streaming and the final handshake are bounded by it too.
//! * A full disk is not retried: the error names the file and ENOSPC, nothing beyond what
//!   is fsynced has been reported flushed, and the next run resumes from `streaming/`.

mod partial;
mod start;

use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use barman_replication::{
    ConnConfig, Connection, Lsn, SessionKind, StreamEnd, StreamEvent, StreamOptions, SystemId, Target, TimelineId,
};
use tokio::sync::watch;

use crate::storage::durable::{atomic_write, FILE_MODE};
use crate::storage::StorageError;
use crate::wal::{WalError, WalSegmentName, WalSegmentSize};

pub use partial::PartialSegment;
pub use start::{start_position, StartPoint};

/// What the receiver needs to know, taken from the server's configuration.
#[derive(Debug, Clone)]
pub struct ReceiverSettings {
    /// The server's name (for messages).
    pub server: String,
    /// `streaming_conninfo`.
    pub conninfo: String,
    /// `streaming_archiver_name`: our `application_name`.
    pub application_name: String,
    /// `slot_name`.
    pub slot: Option<String>,
    /// `streaming_wals_directory`.
    pub streaming_dir: PathBuf,
    /// The system identifier the catalog belongs to, if known: WAL of another system is refused.
    pub system_id: Option<SystemId>,
    /// How often to send status updates unasked.
    pub status_interval: Duration,
    /// Give up on a connection from which nothing arrived for this long (PostgreSQL's
    /// `wal_receiver_timeout`); it also bounds connecting when `connect_timeout` is unset.
    /// The CLI takes it from `keepalive_interval`. `None`: wait forever.
    pub receive_timeout: Option<Duration>,
    /// Keep reconnecting after errors (with backoff) instead of returning them.
    pub reconnect: bool,
}

/// What the receiver tells its caller as it goes (the CLI prints these).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReceiverNotice {
    /// Streaming (re)started.
    Started {
        /// Where.
        lsn: Lsn,
        /// On which timeline.
        timeline: TimelineId,
        /// Whether flushes are reported synchronously.
        synchronous: bool,
    },
    /// A segment was completed, validated and renamed.
    FinishedSegment {
        /// The segment's end.
        lsn: Lsn,
        /// Its timeline.
        timeline: TimelineId,
    },
    /// The timeline ended; streaming continues on the next.
    TimelineSwitch {
        /// The new timeline.
        next: TimelineId,
        /// Where it starts.
        start: Lsn,
    },
    /// The connection failed; retrying after a pause.
    Retrying {
        /// Why.
        error: String,
        /// How long until the next attempt.
        after: Duration,
    },
}

/// Why receive-wal stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ReceiveWalError {
    /// The connection string is invalid.
    #[error("invalid streaming_conninfo: {0}")]
    Conninfo(#[from] barman_replication::conninfo::ConninfoError),
    /// The server or the connection failed.
    #[error(transparent)]
    Connection(#[from] barman_replication::Error),
    /// A file operation failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// Received WAL failed validation; the segment stays `.partial` and is received again.
    #[error("received WAL failed validation")]
    Wal(#[source] WalError),
    /// The server is not the one this catalog belongs to.
    #[error("server system identifier {found} differs from the catalog's {expected}")]
    ForeignSystem {
        /// The catalog's.
        expected: SystemId,
        /// The server's.
        found: SystemId,
    },
    /// Something else does not add up (a bad setting value, a bad name).
    #[error("{0}")]
    Invalid(String),
}

impl ReceiveWalError {
    /// Errors worth retrying: a lost connection or a server that is restarting. Everything
    /// else (authentication, configuration, foreign system, a full disk) needs an operator.
    pub fn is_transient(&self) -> bool {
        match self {
            ReceiveWalError::Connection(e) => match e {
                barman_replication::Error::Connect { .. }
                | barman_replication::Error::Timeout { .. }
                | barman_replication::Error::ReceiveTimeout { .. }
                | barman_replication::Error::Io { .. }
                | barman_replication::Error::Closed { .. } => true,
                // 57P01-57P03: admin shutdown, crash shutdown, cannot connect now (starting up).
                // 55006 "replication slot ... is active for PID n": the WAL sender of a
                // connection we gave up on has not noticed yet (it will, by its
                // wal_sender_timeout at the latest).
                barman_replication::Error::Server { error, .. } => {
                    error.code.starts_with("57P") || error.code == "55006"
                }
                _ => false,
            },
            ReceiveWalError::Wal(_) => true,
            _ => false,
        }
    }
}

/// Parses a size setting as the server shows it: `16MB`, `1GB`, `512kB`, or bytes.
pub fn parse_server_size(s: &str) -> Option<u64> {
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    let n: u64 = s[..digits].parse().ok()?;
    let mult = match &s[digits..] {
        "" | "B" => 1,
        "kB" => 1 << 10,
        "MB" => 1 << 20,
        "GB" => 1 << 30,
        "TB" => 1 << 40,
        _ => return None,
    };
    n.checked_mul(mult)
}

/// Whether `name` is one of the standbys `synchronous_standby_names` lists
/// (`FIRST n (a, b)`, `ANY n (a, b)`, or a plain list; quoted names keep their case).
pub fn is_synchronous_standby(synchronous_standby_names: &str, name: &str) -> bool {
    let s = synchronous_standby_names.trim();
    let list = match (s.find('('), s.rfind(')')) {
        (Some(a), Some(b)) if b > a => &s[a + 1..b],
        _ => s,
    };
    list.split(',').map(str::trim).any(|entry| {
        if let Some(q) = entry.strip_prefix('"').and_then(|e| e.strip_suffix('"')) {
            q == name
        } else {
            entry.eq_ignore_ascii_case(name)
        }
    })
}

/// Runs the receiver until `stop` turns true (or, without `reconnect`, until the first error).
pub async fn run(
    settings: &ReceiverSettings,
    mut stop: watch::Receiver<bool>,
    notify: &mut (dyn FnMut(ReceiverNotice) + Send),
) -> Result<(), ReceiveWalError> {
    let mut backoff = Duration::from_secs(1);
    loop {
        if *stop.borrow() {
            return Ok(());
        }
        let started = std::time::Instant::now();
        match stream_once(settings, &mut stop, notify).await {
            Ok(()) => return Ok(()),
            Err(e) if settings.reconnect && e.is_transient() => {
                // A connection that streamed for a while was healthy: start the backoff over.
                if started.elapsed() > Duration::from_secs(60) {
                    backoff = Duration::from_secs(1);
                }
                tracing::warn!(server = %settings.server, error = %crate::error_chain(&e), retry_in = ?backoff, "WAL streaming interrupted; reconnecting");
                notify(ReceiverNotice::Retrying { error: crate::error_chain(&e), after: backoff });
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.changed() => return Ok(()),
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
            Err(e) => {
                tracing::error!(server = %settings.server, error = %crate::error_chain(&e), "WAL streaming stopped");
                return Err(e);
            }
        }
    }
}


/// One connection's worth of streaming: returns `Ok` only when stopped.
async fn stream_once(
    settings: &ReceiverSettings,
    stop: &mut watch::Receiver<bool>,
    notify: &mut (dyn FnMut(ReceiverNotice) + Send),
) -> Result<(), ReceiveWalError> {
    let mut config: ConnConfig = settings.conninfo.parse()?;
    config.application_name = Some(settings.application_name.clone());
    if config.connect_timeout.is_none() {
        config.connect_timeout = settings.receive_timeout;
    }
    let mut conn = Connection::connect(&config, SessionKind::Physical).await?;
    let target = conn.target().clone();
    let (sys, size, synchronous, mut point) = within(settings, &target, async {
        let sys = conn.identify_system().await?;
        if let Some(expected) = settings.system_id {
            if sys.system_id != expected {
                return Err(ReceiveWalError::ForeignSystem { expected, found: sys.system_id });
            }
        }
        let seg_text = conn.show("wal_segment_size").await?;
        let size = parse_server_size(&seg_text)
            .and_then(|b| WalSegmentSize::new(b).ok())
            .ok_or_else(|| ReceiveWalError::Invalid(format!("wal_segment_size {seg_text:?}")))?;
        let synchronous =
            is_synchronous_standby(&conn.show("synchronous_standby_names").await?, &settings.application_name);
        let point = match start_position(&settings.streaming_dir, size)? {
            Some(p) => p,
            None => slot_or_current_position(&mut conn, &config, settings, &sys, size).await?,
        };
        Ok((sys, size, synchronous, point))
    })
    .await?;
    loop {
        let opts = StreamOptions {
            status_interval: settings.status_interval,
            report_flush: true,
            synchronous,
            receive_timeout: settings.receive_timeout,
        };
        let mut rx = within(settings, &target, async {
            if point.timeline.0 > 1 {
                let name = format!("{:08X}.history", point.timeline.0);
                let path = settings.streaming_dir.join(&name);
                if !path.exists() {
                    let h = conn.timeline_history(point.timeline).await?;
                    atomic_write(&path, &h.content, FILE_MODE)?;
                }
            }
            notify(ReceiverNotice::Started { lsn: point.lsn, timeline: point.timeline, synchronous });
            Ok(conn.start_replication(settings.slot.as_deref(), point.lsn, Some(point.timeline), opts).await?)
        })
        .await?;
        // A `.partial` left where this stream starts (a previous run's, possibly still empty)
        // is taken over at once, so that it is dealt with like our own when the timeline ends.
        let mut current: Option<PartialSegment> = None;
        let resumed = WalSegmentName::from_lsn(point.timeline, point.lsn, size)
            .map_err(|e| ReceiveWalError::Invalid(e.to_string()))?;
        if point.lsn.segment_start(size.bytes()) == point.lsn
            && settings.streaming_dir.join(format!("{resumed}.partial")).exists()
        {
            current = Some(PartialSegment::open(&settings.streaming_dir, resumed, size, settings.system_id.or(Some(sys.system_id)), None)?);
        }
        let mut last_sync = Instant::now();
        let end = loop {
            let event = tokio::select! {
                e = rx.next_event() => e,
                _ = stop.changed() => {
                    if let Some(seg) = current.as_mut() {
                        seg.sync()?;
                        rx.flushed(seg.synced_end()).await?;
                    }
                    rx.stop().await?;
                    return Ok(());
                }
            };
            match event {
                Ok(StreamEvent::WalData { start, data }) => {
                    let mut at = start;
                    let mut rest = &data[..];
                    while !rest.is_empty() {
                        if current.is_none() {
                            let name = WalSegmentName::from_lsn(point.timeline, at, size)
                                .map_err(|e| ReceiveWalError::Invalid(e.to_string()))?;
                            current = Some(PartialSegment::open(&settings.streaming_dir, name, size, settings.system_id.or(Some(sys.system_id)), None)?);
                        }
                        let seg = current.as_mut().expect("opened above");
                        let n = (seg.room() as usize).min(rest.len());
                        seg.write(&rest[..n])?;
                        rest = &rest[n..];
                        at = Lsn(at.0 + n as u64);
                        rx.written(at);
                        if seg.is_full() {
                            let seg = current.take().expect("present");
                            let end = seg.end();
                            let (_, carry) = seg.complete()?;
                            rx.flushed(end).await?;
                            last_sync = Instant::now();
                            notify(ReceiverNotice::FinishedSegment { lsn: end, timeline: point.timeline });
                            // The next `.partial` now, before its WAL: the zero-filling is off
                            // the path of the next commit, and the archiver (which keeps back
                            // the newest complete segment while no `.partial` follows it, so
                            // that a restart could resume) can take this one at once, also on
                            // an idle server after a WAL switch. It directly follows the segment
                            // just completed on this timeline, so it is validated after it: a
                            // record spanning both gets its CRC checked.
                            let next = WalSegmentName::from_lsn(point.timeline, end, size)
                                .map_err(|e| ReceiveWalError::Invalid(e.to_string()))?;
                            current = Some(PartialSegment::open(&settings.streaming_dir, next, size, settings.system_id.or(Some(sys.system_id)), carry)?);
                        }
                    }
                    // Synchronous: durable before we say so, and we say so at once. Otherwise
                    // fsync at least every status interval, so the slot keeps moving.
                    if let Some(seg) = current.as_mut() {
                        if synchronous || last_sync.elapsed() >= settings.status_interval {
                            seg.sync()?;
                            last_sync = Instant::now();
                            rx.flushed(seg.synced_end()).await?;
                        }
                    }
                }
                Ok(StreamEvent::ReplyRequested) => {
                    // The WAL sender waits for our flush position (idle, or shutting down: a
                    // server stop waits until every byte sent is confirmed flushed, so an
                    // unsynced tail would hold `pg_ctl stop` for wal_sender_timeout).
                    if let Some(seg) = current.as_mut() {
                        seg.sync()?;
                        last_sync = Instant::now();
                        rx.flushed(seg.synced_end()).await?;
                    }
                }
                Ok(StreamEvent::End(end)) => break end,
                Err(e) => {
                    if let Some(seg) = current.as_mut() {
                        seg.sync()?;
                    }
                    return Err(e.into());
                }
            }
        };
        // The segment in progress stays `.partial`, as pg_receivewal leaves it: at the end of
        // a timeline it is that timeline's last segment; after a shutdown it is where the next
        // run resumes. One exception below.
        let mut last = current.take();
        if let Some(seg) = last.as_mut() {
            seg.sync()?;
        }
        match end {
            // A WAL sender on a standby promoted under it can end the old timeline naming
            // timeline 0 as the next (PostgreSQL 13/14 read the new history too early). A
            // new session's WAL sender knows better: reconnect, and resume from the files.
            StreamEnd::TimelineEnded { next_tli, .. } if next_tli.0 <= point.timeline.0 => {
                tracing::warn!(server = %settings.server, timeline = point.timeline.0, next = next_tli.0, "the server ended the timeline without a valid next one; reconnecting");
                return Err(barman_replication::Error::Closed { target: conn.target().clone() }.into());
            }
            StreamEnd::TimelineEnded { next_tli, next_start } => {
                // A `.partial` opened ahead of WAL that never came: the timeline ended at its
                // first byte, so it holds nothing of it, and an empty file must not be
                // archived as the timeline's last segment.
                if let Some(seg) = last.take().filter(|seg| seg.end() == seg.start() && next_start <= seg.start()) {
                    seg.discard()?;
                }
                notify(ReceiverNotice::TimelineSwitch { next: next_tli, start: next_start });
                point = StartPoint { lsn: next_start.segment_start(size.bytes()), timeline: next_tli };
            }
            StreamEnd::ServerShutdown | StreamEnd::Stopped => {
                return Err(barman_replication::Error::Closed { target: conn.target().clone() }.into());
            }
        }
    }
}

/// `step` within the receive timeout: a server that accepted the connection and then went
/// silent must not hang the receiver before streaming starts either.
async fn within<T>(
    settings: &ReceiverSettings,
    target: &Target,
    step: impl Future<Output = Result<T, ReceiveWalError>>,
) -> Result<T, ReceiveWalError> {
    match settings.receive_timeout {
        Some(after) => tokio::time::timeout(after, step).await.unwrap_or_else(|_| {
            Err(barman_replication::Error::ReceiveTimeout { target: target.clone(), after }.into())
        }),
        None => step.await,
    }
}

/// With nothing in `streaming/`: the slot's `restart_lsn` if it has one, else the server's
/// current position, rounded down to a segment start.
///
/// On 15+ READ_REPLICATION_SLOT says it (as pg_receivewal does). On 13 and 14 a WAL sender
/// cannot tell, and pg_receivewal starts at the current position — losing the WAL the slot
/// kept if the server switched segments before the receiver connected. barman-rs asks
/// `pg_replication_slots` on a normal session with the same connection settings instead, and
/// only falls back to the current position when that session is refused.
async fn slot_or_current_position(
    conn: &mut Connection,
    config: &ConnConfig,
    settings: &ReceiverSettings,
    sys: &barman_replication::IdentifySystem,
    size: WalSegmentSize,
) -> Result<StartPoint, ReceiveWalError> {
    if let Some(slot) = &settings.slot {
        if conn.server_major() >= 15 {
            if let Some(s) = conn.read_replication_slot(slot).await? {
                if let (Some(lsn), Some(tli)) = (s.restart_lsn, s.restart_tli) {
                    return Ok(StartPoint { lsn: lsn.segment_start(size.bytes()), timeline: tli });
                }
            }
        } else {
            match slot_position_via_sql(config, slot).await {
                // Not past the server's position: a restart_lsn ahead of it would be odd, and
                // streaming cannot start in the future.
                Ok(Some(lsn)) if lsn <= sys.xlogpos => {
                    return Ok(StartPoint { lsn: lsn.segment_start(size.bytes()), timeline: sys.timeline });
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(
                    server = %settings.server, slot, error = %e,
                    "cannot read the slot's position on a normal session; starting at the server's current position"
                ),
            }
        }
    }
    Ok(StartPoint { lsn: sys.xlogpos.segment_start(size.bytes()), timeline: sys.timeline })
}

async fn slot_position_via_sql(config: &ConnConfig, slot: &str) -> Result<Option<Lsn>, barman_replication::Error> {
    let mut sql = Connection::connect(config, SessionKind::Normal).await?;
    let found = sql.replication_slot_via_sql(slot).await?;
    let _ = sql.close().await;
    Ok(found.and_then(|s| s.restart_lsn))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_server_size("16MB"), Some(16 << 20));
        assert_eq!(parse_server_size("1GB"), Some(1 << 30));
        assert_eq!(parse_server_size("8192"), Some(8192));
        assert_eq!(parse_server_size("16 MB"), None);
        assert_eq!(parse_server_size("MB"), None);
    }

    #[test]
    fn synchronous_names() {
        assert!(is_synchronous_standby("barman_receive_wal", "barman_receive_wal"));
        assert!(is_synchronous_standby("FIRST 1 (s1, barman_receive_wal)", "barman_receive_wal"));
        assert!(is_synchronous_standby("ANY 2 (\"Barman\", x)", "Barman"));
        assert!(!is_synchronous_standby("ANY 2 (\"Barman\", x)", "barman"));
        assert!(is_synchronous_standby("BARMAN_RECEIVE_WAL", "barman_receive_wal"));
        assert!(!is_synchronous_standby("", "barman_receive_wal"));
        assert!(!is_synchronous_standby("*", "barman_receive_wal"), "a wildcard does not make us synchronous");
    }
}
