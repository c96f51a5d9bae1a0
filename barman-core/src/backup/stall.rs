//! Telling a stalled BASE_BACKUP stream from a server that is busy saying nothing.
//!
//! A base backup's stream has long silences that are normal: the checkpoint it starts with
//! (minutes, when spread), the size estimate of a large cluster, the wait for the last WAL to
//! be archived at its end. A network path that freezes (a hung middlebox, a half-dead peer
//! whose TCP keepalives still answer) looks the same from the receiving end: no bytes. A plain
//! read timeout would abort good backups; no timeout leaves a frozen one holding the backup
//! lock forever, and every later backup of the server skipped.
//!
//! So after `keepalive_interval` seconds without a single byte, barman-rs asks the server, on
//! a new normal session, what the backup's WAL sender is doing (`pg_stat_activity` joined with
//! `pg_stat_progress_basebackup`, both in PostgreSQL 13+), and judges with [`judge`]:
//!
//! | the server says | verdict |
//! |---|---|
//! | waiting to send to us (wait event `ClientWrite`) | stalled: bytes leave the server and never arrive |
//! | no backup in progress on that WAL sender | stalled: it finished (or never got the command) and we have not seen it |
//! | the WAL sender is gone | stalled |
//! | no answer on a new connection either | stalled: the server cannot be reached |
//! | any other wait (checkpoint, archiving, reading files) | busy: keep waiting |
//! | columns hidden (no `pg_read_all_stats`) | unknown: keep waiting, and say why in the log |
//!
//! A stall must be seen twice in a row, a few seconds apart with still no byte in between,
//! before the copy fails: bytes the server sent just before the first look are then read, and
//! the race is gone. A slow link never gets this far: every byte restarts the clock.

use std::time::Duration;

use barman_replication::{ConnConfig, Connection, SessionKind};

/// How long after a first "stalled" verdict the server is asked again.
const CONFIRM_AFTER: Duration = Duration::from_secs(5);

/// The server's view of the backup's WAL sender: `pg_stat_activity.state`, its wait event,
/// and `pg_stat_progress_basebackup.phase`, each `None` when NULL.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct SenderView {
    pub state: Option<String>,
    pub wait_event: Option<String>,
    pub phase: Option<String>,
}

/// What a silent stream means; see the [module docs](self).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// The server is working on the backup and has nothing to send yet; what it is doing.
    Busy(String),
    /// The server cannot tell us (its activity is hidden from the `conninfo` user).
    Unknown,
    /// The connection is dead or frozen; why.
    Stalled(String),
}

/// Judges the WAL sender `pid` from what the server shows of it (`None`: no such backend).
pub(crate) fn judge(pid: i32, view: Option<&SenderView>) -> Verdict {
    let Some(view) = view else {
        return Verdict::Stalled(format!("the server's WAL sender for this backup (pid {pid}) has gone"));
    };
    if view.state.is_none() {
        return Verdict::Unknown;
    }
    match (view.wait_event.as_deref(), view.phase.as_deref()) {
        (Some("ClientWrite"), _) => Verdict::Stalled(format!(
            "the server's WAL sender (pid {pid}) is waiting to send to barman-rs, so the connection between them is stalled"
        )),
        (_, None) => Verdict::Stalled(format!(
            "the server's WAL sender (pid {pid}) has no backup in progress, so what it sent never arrived"
        )),
        (wait, Some(phase)) => Verdict::Busy(match wait {
            Some(w) => format!("{phase} (wait event {w})"),
            None => phase.to_owned(),
        }),
    }
}

/// Watches one BASE_BACKUP stream: fed with the connection's byte count each time the stream
/// has been silent for [`every`](Self::every), it says whether to keep waiting.
pub(crate) struct StallWatch {
    every: Duration,
    conninfo: String,
    pid: i32,
    /// The byte count at the last look.
    seen: u64,
    /// A first "stalled" verdict, waiting for its confirmation.
    suspect: bool,
    /// Said once: the server hides its activity from the `conninfo` user.
    told_unknown: bool,
}

impl StallWatch {
    /// A watch over the WAL sender `pid`, looking after `every` of silence, asking the server
    /// through `conninfo`.
    pub(crate) fn new(every: Duration, conninfo: &str, pid: i32, bytes_received: u64) -> StallWatch {
        StallWatch { every, conninfo: conninfo.to_owned(), pid, seen: bytes_received, suspect: false, told_unknown: false }
    }

    /// Before each wait for the stream: any byte since the last look clears a suspicion.
    pub(crate) fn arm(&mut self, bytes_received: u64) {
        if bytes_received != self.seen {
            self.seen = bytes_received;
            self.suspect = false;
        }
    }

    /// How long to wait for the next event before [`look`](Self::look)ing.
    pub(crate) fn wait(&self) -> Duration {
        if self.suspect {
            CONFIRM_AFTER.min(self.every)
        } else {
            self.every
        }
    }

    /// No event for [`wait`](Self::wait) since [`arm`](Self::arm) — though bytes of a message not
    /// yet complete may have arrived. `Err` with the reason once a stall is confirmed.
    pub(crate) async fn look(&mut self, bytes_received: u64) -> Result<(), String> {
        if bytes_received != self.seen {
            // A slow link, or a long message: bytes are arriving.
            self.seen = bytes_received;
            self.suspect = false;
            return Ok(());
        }
        let verdict = match self.ask().await {
            Ok(view) => judge(self.pid, view.as_ref()),
            Err(e) => Verdict::Stalled(format!("the server does not answer a new connection either ({e})")),
        };
        let silent = if self.suspect { self.every + CONFIRM_AFTER.min(self.every) } else { self.every };
        match verdict {
            Verdict::Stalled(why) if self.suspect => {
                Err(format!("nothing received from the server for {} s: {why}", silent.as_secs().max(1)))
            }
            Verdict::Stalled(why) => {
                // Not yet a problem: bytes the server sent while it was being asked are read
                // before the second look.
                tracing::info!(pid = self.pid, "no data from the server for {} s: {why}; looking again to be sure", silent.as_secs());
                self.suspect = true;
                Ok(())
            }
            Verdict::Busy(what) => {
                tracing::info!(pid = self.pid, "no data from the server for {} s: it is busy: {what}", silent.as_secs());
                self.suspect = false;
                Ok(())
            }
            Verdict::Unknown => {
                if !self.told_unknown {
                    self.told_unknown = true;
                    tracing::warn!(
                        pid = self.pid,
                        "no data from the server for {} s, and the conninfo user cannot see what its WAL sender \
                         is doing (grant it pg_read_all_stats): waiting on without a limit",
                        silent.as_secs()
                    );
                }
                self.suspect = false;
                Ok(())
            }
        }
    }

    /// The WAL sender's row, on a new session bounded by [`every`](Self::every) (at least a
    /// second) for the connection and the query alike.
    async fn ask(&self) -> Result<Option<SenderView>, String> {
        let limit = self.every.max(Duration::from_secs(1));
        let mut cfg: ConnConfig = self.conninfo.parse().map_err(|e| format!("{e}"))?;
        cfg.connect_timeout = Some(cfg.connect_timeout.map_or(limit, |t| t.min(limit)));
        let query = format!(
            "SELECT a.state, a.wait_event, p.phase FROM pg_stat_activity a \
             LEFT JOIN pg_stat_progress_basebackup p ON p.pid = a.pid WHERE a.pid = {}",
            self.pid
        );
        let asked = async {
            let mut conn = Connection::connect(&cfg, SessionKind::Normal).await.map_err(|e| e.to_string())?;
            let results = conn.simple_query(&query).await.map_err(|e| e.to_string())?;
            let _ = conn.close().await;
            Ok(results.into_iter().find(|r| !r.columns.is_empty()).filter(|r| !r.rows.is_empty()).map(|r| {
                let text = |i: usize| r.text(0, i).map(str::to_owned);
                SenderView { state: text(0), wait_event: text(1), phase: text(2) }
            }))
        };
        tokio::time::timeout(limit * 2, asked)
            .await
            .unwrap_or_else(|_| Err(format!("no answer within {} s", (limit * 2).as_secs())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(state: Option<&str>, wait: Option<&str>, phase: Option<&str>) -> SenderView {
        SenderView { state: state.map(Into::into), wait_event: wait.map(Into::into), phase: phase.map(Into::into) }
    }

    #[test]
    fn a_sender_blocked_on_the_socket_is_a_stall() {
        let v = view(Some("active"), Some("ClientWrite"), Some("streaming database files"));
        assert!(matches!(judge(7, Some(&v)), Verdict::Stalled(w) if w.contains("pid 7") && w.contains("waiting to send")));
    }

    #[test]
    fn legitimate_waits_are_busy() {
        for (wait, phase) in [
            (Some("CheckpointDone"), "waiting for checkpoint to finish"),
            (Some("BackupWaitWalArchive"), "waiting for wal archiving to finish"),
            (Some("DataFileRead"), "streaming database files"),
            (None, "estimating backup size"),
        ] {
            let v = view(Some("active"), wait, Some(phase));
            assert!(matches!(judge(1, Some(&v)), Verdict::Busy(w) if w.starts_with(phase)), "{phase}");
        }
    }

    #[test]
    fn a_sender_without_a_backup_or_gone_is_a_stall() {
        assert!(matches!(judge(1, Some(&view(Some("idle"), Some("WalSenderMain"), None))), Verdict::Stalled(_)));
        assert!(matches!(judge(1, None), Verdict::Stalled(w) if w.contains("gone")));
    }

    #[test]
    fn hidden_activity_is_unknown_not_a_stall() {
        assert_eq!(judge(1, Some(&view(None, None, None))), Verdict::Unknown);
    }
}
