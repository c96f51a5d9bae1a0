//! START_REPLICATION: receiving WAL as a physical standby does (reference §4).
//!
//! [`WalStream`] is the protocol state, sans I/O: feed it what the server sends with the
//! current time, take [`StreamEvent`]s out, tell it what was written and what was fsynced, and
//! poll it for the status updates to send. It never reads a clock or a socket, so every
//! timing rule is unit-tested with a simulated clock.
//!
//! [`WalReceiver`] is the async shell: it drives a [`Connection`] in COPY BOTH mode, sleeps
//! until the next status update is due, and hands WAL to the caller.
//!
//! The one rule that makes RPO = 0 true lives here: the flush position reported to the server
//! is exactly what the caller passed to [`WalStream::flushed`], which it must call only once
//! those bytes are fsynced. With `synchronous` set, each flush is reported at once, so a
//! commit waiting on this receiver is released as soon as, and not before, its WAL is on disk.
//!
//! A connection that goes silent is noticed, as PostgreSQL's own walreceiver notices it
//! (`wal_receiver_timeout`): with [`StreamOptions::receive_timeout`] set, a status update
//! asking for a reply goes out once half of it has passed without a message from the server
//! (the WAL sender answers it with a keepalive at once, even on an idle server), and
//! [`WalReceiver::next_event`] fails with [`Error::ReceiveTimeout`] once all of it has. Unlike
//! the walreceiver, [`WalReceiver`] also counts the bytes of a message still arriving: a link
//! too slow to bring a whole message within the timeout is slow, not dead. TCP
//! keepalives cannot do this: a peer that is alive but stuck (a frozen proxy, a hung NAT)
//! still acknowledges them.

use std::time::{Duration, Instant, SystemTime};

use bytes::{Bytes, BytesMut};

use crate::codec::{pg_timestamp, BackendMessage, FrontendMessage, StandbyStatusUpdate, WalSenderMessage};
use crate::commands::validate_slot_name;
use crate::conn::Connection;
use crate::error::Error;
use crate::lsn::{Lsn, TimelineId};

/// How a receiver reports progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamOptions {
    /// How often to send a status update unasked (pg_receivewal's `--status-interval`, 10 s).
    pub status_interval: Duration,
    /// Report the flush position. Needed to advance a slot and to be a synchronous standby;
    /// pg_receivewal does it when it uses a slot or runs `--synchronous`.
    pub report_flush: bool,
    /// Send a status update as soon as the flush position moves (`--synchronous`).
    pub synchronous: bool,
    /// Give up on a connection from which nothing at all arrived for this long; a reply is
    /// requested at half of it. `None` waits forever (pg_receivewal's behaviour).
    pub receive_timeout: Option<Duration>,
}

impl Default for StreamOptions {
    fn default() -> Self {
        StreamOptions { status_interval: Duration::from_secs(10), report_flush: true, synchronous: false, receive_timeout: None }
    }
}

/// What the stream produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamEvent {
    /// WAL bytes starting at `start`, contiguous with the previous event's.
    WalData {
        /// LSN of the first byte.
        start: Lsn,
        /// The bytes, as in the segment files; they may cross a segment boundary.
        data: Bytes,
    },
    /// The WAL sender asked for a status reply and waits for our flush position: it does so
    /// when idle (every half `wal_sender_timeout`) and, at a shutdown, before it can exit —
    /// a server stop waits until the receiver confirms every byte sent as flushed. Make what
    /// was written durable and call [`flushed`](WalStream::flushed); the reply goes out then
    /// (or at the next [`next_event`](WalStream::next_event) with the flush position as it is).
    ReplyRequested,
    /// The server's COPY ended: see [`StreamEnd`].
    End(StreamEnd),
}

/// Why streaming stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamEnd {
    /// The timeline streamed has ended (the client asked for a historic timeline, or the
    /// server, a standby, was promoted or switched). Continue on `next_tli` from `next_start`
    /// rounded down to its segment — after fetching that timeline's history file.
    TimelineEnded {
        /// The next timeline.
        next_tli: TimelineId,
        /// Where it starts.
        next_start: Lsn,
    },
    /// The server is shutting down (it sent `COPY 0` after all WAL was confirmed).
    ServerShutdown,
    /// We asked to stop (CopyDone) and the server agreed.
    Stopped,
}

/// A rule of the protocol was broken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamError {
    /// WAL did not continue where the previous message ended.
    #[error("WAL data at {got}, expected {expected}: the stream has a gap or an overlap")]
    Gap {
        /// Where the next byte should have started.
        expected: Lsn,
        /// Where it did.
        got: Lsn,
    },
    /// A CopyData payload was malformed.
    #[error("malformed replication message: {0}")]
    Codec(#[from] crate::codec::CodecError),
    /// Nothing arrived from the server for [`StreamOptions::receive_timeout`].
    #[error("nothing received for {}s", .0.as_secs_f64())]
    Silent(Duration),
}

/// The protocol state of one START_REPLICATION.
///
/// Call order: [`feed`](Self::feed) each CopyData payload, then [`written`](Self::written) /
/// [`flushed`](Self::flushed) as the caller's file catches up, then
/// [`poll_transmit`](Self::poll_transmit) until it returns false, and sleep until
/// [`poll_timeout`](Self::poll_timeout).
#[derive(Debug)]
pub struct WalStream {
    opts: StreamOptions,
    /// The end of the last WAL byte received: where the next XLogData must start.
    received: Lsn,
    written: Lsn,
    flushed: Lsn,
    /// The flush position last reported.
    reported_flush: Lsn,
    server_wal_end: Lsn,
    reply_now: bool,
    next_status: Option<Instant>,
    /// When the server last sent anything (`None` until the caller says the stream started).
    last_heard: Option<Instant>,
    /// A status update asking for a reply went out since `last_heard`.
    ping_sent: bool,
}

impl WalStream {
    /// A stream that will start at `start` (a segment boundary, by convention).
    pub fn new(start: Lsn, opts: StreamOptions) -> WalStream {
        WalStream {
            opts,
            received: start,
            written: start,
            flushed: start,
            reported_flush: Lsn::INVALID,
            server_wal_end: Lsn::INVALID,
            reply_now: false,
            next_status: None,
            last_heard: None,
            ping_sent: false,
        }
    }

    /// The server was heard from at `now` (any message). [`feed`](Self::feed) calls it; call
    /// it when COPY mode starts, so that a server silent from the start is timed too.
    pub fn heard(&mut self, now: Instant) {
        self.last_heard = Some(now);
        self.ping_sent = false;
    }

    /// When to ask the server for a reply: half the receive timeout after it was last heard.
    fn ping_at(&self) -> Option<Instant> {
        match (self.opts.receive_timeout, self.last_heard) {
            (Some(t), Some(at)) if !self.ping_sent => Some(at + t / 2),
            _ => None,
        }
    }

    /// When the connection counts as dead if nothing arrives before.
    pub fn deadline(&self) -> Option<Instant> {
        Some(self.last_heard? + self.opts.receive_timeout?)
    }

    /// Fails once nothing has arrived for the receive timeout.
    pub fn check_timeout(&self, now: Instant) -> Result<(), StreamError> {
        match (self.deadline(), self.opts.receive_timeout) {
            (Some(d), Some(t)) if now >= d => Err(StreamError::Silent(t)),
            _ => Ok(()),
        }
    }

    /// Feeds one CopyData payload. Returns the WAL it carried, if any.
    pub fn feed(&mut self, payload: Bytes, now: Instant) -> Result<Option<StreamEvent>, StreamError> {
        self.heard(now);
        if self.next_status.is_none() {
            // The first status goes out at once, so the server learns our position early.
            self.next_status = Some(now);
        }
        match WalSenderMessage::parse(payload)? {
            WalSenderMessage::XLogData { start, wal_end, data, .. } => {
                if start != self.received {
                    return Err(StreamError::Gap { expected: self.received, got: start });
                }
                self.server_wal_end = self.server_wal_end.max(wal_end);
                self.received = Lsn(start.0 + data.len() as u64);
                Ok((!data.is_empty()).then_some(StreamEvent::WalData { start, data }))
            }
            WalSenderMessage::Keepalive { wal_end, reply_requested, .. } => {
                self.server_wal_end = self.server_wal_end.max(wal_end);
                self.reply_now |= reply_requested;
                Ok(reply_requested.then_some(StreamEvent::ReplyRequested))
            }
        }
    }

    /// The caller has written WAL up to `upto` (not necessarily durable).
    pub fn written(&mut self, upto: Lsn) {
        self.written = self.written.max(upto.min(self.received));
    }

    /// The caller has fsynced WAL up to `upto`. Only call this once those bytes are durable:
    /// the server will trust it (slot advance, synchronous commit).
    pub fn flushed(&mut self, upto: Lsn) {
        self.written(upto);
        self.flushed = self.flushed.max(upto.min(self.written));
        if self.opts.synchronous && self.opts.report_flush && self.flushed > self.reported_flush {
            self.reply_now = true;
        }
    }

    /// Where the next WAL byte is expected.
    pub fn received(&self) -> Lsn {
        self.received
    }

    /// The durable position as last told by the caller.
    pub fn flushed_lsn(&self) -> Lsn {
        self.flushed
    }

    /// The server's reported end of WAL.
    pub fn server_wal_end(&self) -> Lsn {
        self.server_wal_end
    }

    /// Appends a status update to `out` (as a CopyData payload) if one is due; returns whether
    /// it did.
    pub fn poll_transmit(&mut self, now: Instant, out: &mut BytesMut) -> bool {
        let ping = self.ping_at().is_some_and(|t| now >= t);
        let due = ping || self.reply_now || self.next_status.is_some_and(|t| now >= t);
        if !due {
            return false;
        }
        let flush = if self.opts.report_flush { self.flushed } else { Lsn::INVALID };
        StandbyStatusUpdate {
            write: self.written,
            flush,
            apply: Lsn::INVALID,
            send_time: pg_timestamp(SystemTime::now()),
            reply_requested: ping,
        }
        .encode(out);
        self.ping_sent |= ping;
        self.reported_flush = flush;
        self.reply_now = false;
        self.next_status = Some(now + self.opts.status_interval);
        true
    }

    /// When [`poll_transmit`](Self::poll_transmit) will next have something to send, or
    /// [`check_timeout`](Self::check_timeout) will fail.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [self.next_status, self.ping_at(), self.deadline()].into_iter().flatten().min()
    }
}

/// A START_REPLICATION in progress on a connection.
#[derive(Debug)]
pub struct WalReceiver<'c> {
    conn: &'c mut Connection,
    state: WalStream,
    done: bool,
    /// The connection's byte count when the server was last heard from.
    bytes_heard: u64,
}

impl Connection {
    /// START_REPLICATION [SLOT slot] PHYSICAL start [TIMELINE tli]: enters COPY BOTH mode.
    ///
    /// Errors found before COPY mode (slot missing or busy) are returned here. Those the server
    /// finds after entering COPY mode (start ahead of the flush position, WAL already removed:
    /// it sends `W`, then `E`) come from the first [`WalReceiver::next_event`]. Either way the
    /// connection stays usable afterwards.
    pub async fn start_replication(
        &mut self,
        slot: Option<&str>,
        start: Lsn,
        timeline: Option<TimelineId>,
        opts: StreamOptions,
    ) -> Result<WalReceiver<'_>, Error> {
        let mut cmd = String::from("START_REPLICATION");
        if let Some(slot) = slot {
            validate_slot_name(slot).map_err(|what| Error::InvalidResult {
                target: self.target().clone(),
                command: "START_REPLICATION".into(),
                what,
            })?;
            cmd.push_str(&format!(" SLOT \"{slot}\""));
        }
        cmd.push_str(&format!(" PHYSICAL {start}"));
        if let Some(tli) = timeline {
            cmd.push_str(&format!(" TIMELINE {}", tli.0));
        }
        self.send_query(&cmd).await?;
        let mut error = None;
        loop {
            match self.next_message().await? {
                BackendMessage::CopyBothResponse(_) => {
                    let mut state = WalStream::new(start, opts);
                    state.heard(Instant::now());
                    let bytes_heard = self.bytes_received();
                    return Ok(WalReceiver { conn: self, state, done: false, bytes_heard })
                }
                BackendMessage::ErrorResponse(e) => error = Some(e),
                BackendMessage::ReadyForQuery(_) => {
                    let e = error.take().ok_or_else(|| self.unexpected("end of START_REPLICATION without COPY"))?;
                    return Err(self.server_error(e));
                }
                // A historic timeline already ended before `start`: the next-timeline result
                // set arrives without COPY; report it as an immediately ended stream.
                BackendMessage::RowDescription(_) => {
                    let bytes_heard = self.bytes_received();
                    let mut r = WalReceiver { conn: self, state: WalStream::new(start, opts), done: true, bytes_heard };
                    let end = r.read_end_of_copy().await?;
                    return Err(Error::Unexpected {
                        target: r.conn.target().clone(),
                        what: format!("timeline already ended before {start}: {end:?}"),
                    });
                }
                other => return Err(self.unexpected(&format!("message '{}' after START_REPLICATION", char::from(other.tag())))),
            }
        }
    }
}

impl WalReceiver<'_> {
    /// The protocol state (positions received, written, flushed).
    pub fn state(&self) -> &WalStream {
        &self.state
    }

    /// The connection streaming.
    pub fn connection(&self) -> &Connection {
        self.conn
    }

    /// Waits for the next WAL or the end of the stream, sending status updates as they fall
    /// due. Cancel-safe: dropping the future loses no received byte.
    ///
    /// Fails with [`Error::ReceiveTimeout`] when the server stays silent for the
    /// [`StreamOptions::receive_timeout`] (see the [module docs](self)); the connection is
    /// then unusable.
    pub async fn next_event(&mut self) -> Result<StreamEvent, Error> {
        loop {
            // Part of a message counts: on a link so slow that one 128 kB message takes
            // longer than the timeout, bytes still arrive, and the link is alive.
            let bytes = self.conn.bytes_received();
            if bytes != self.bytes_heard {
                self.bytes_heard = bytes;
                self.state.heard(Instant::now());
            }
            self.check_timeout()?;
            self.send_due_status_bounded().await?;
            let deadline = self.state.poll_timeout();
            let msg = match deadline {
                Some(at) => {
                    tokio::select! {
                        m = self.conn.next_message() => m?,
                        _ = tokio::time::sleep_until(at.into()) => continue,
                    }
                }
                None => self.conn.next_message().await?,
            };
            match msg {
                BackendMessage::CopyData(payload) => {
                    let target = self.conn.target().clone();
                    let event = self
                        .state
                        .feed(payload, Instant::now())
                        .map_err(|e| Error::Unexpected { target, what: e.to_string() })?;
                    if let Some(e) = event {
                        return Ok(e);
                    }
                }
                BackendMessage::CopyDone => {
                    // The server ended the timeline: answer with our CopyDone, then read the
                    // next-timeline result set.
                    self.conn.send(&FrontendMessage::CopyDone)?;
                    self.conn.flush().await?;
                    let end = self.read_end_of_copy().await?;
                    self.done = true;
                    return Ok(StreamEvent::End(end));
                }
                BackendMessage::CommandComplete(_) => {
                    // `COPY 0` without CopyDone: a controlled server shutdown.
                    self.drain_until_ready().await?;
                    self.done = true;
                    return Ok(StreamEvent::End(StreamEnd::ServerShutdown));
                }
                BackendMessage::ErrorResponse(e) => {
                    let err = self.conn.server_error(e);
                    let _ = self.drain_until_ready().await;
                    self.done = true;
                    return Err(err);
                }
                other => {
                    return Err(self.conn.unexpected(&format!("message '{}' while streaming", char::from(other.tag()))))
                }
            }
        }
    }

    /// The caller wrote WAL up to `upto`.
    pub fn written(&mut self, upto: Lsn) {
        self.state.written(upto);
    }

    /// The caller fsynced WAL up to `upto`; in synchronous mode the server hears of it now.
    pub async fn flushed(&mut self, upto: Lsn) -> Result<(), Error> {
        self.state.flushed(upto);
        self.send_due_status_bounded().await
    }

    fn check_timeout(&self) -> Result<(), Error> {
        self.state.check_timeout(Instant::now()).map_err(|e| match e {
            StreamError::Silent(after) => Error::ReceiveTimeout { target: self.conn.target().clone(), after },
            other => Error::Unexpected { target: self.conn.target().clone(), what: other.to_string() },
        })
    }

    /// [`send_due_status`](Self::send_due_status) until the receive deadline at most: once
    /// the socket buffers are full, a stuck peer would block the write forever.
    async fn send_due_status_bounded(&mut self) -> Result<(), Error> {
        match (self.state.deadline(), self.state.opts.receive_timeout) {
            (Some(deadline), Some(after)) => {
                let target = self.conn.target().clone();
                tokio::time::timeout_at(deadline.into(), self.send_due_status())
                    .await
                    .unwrap_or(Err(Error::ReceiveTimeout { target, after }))
            }
            _ => self.send_due_status().await,
        }
    }

    /// Sends a final status update, ends COPY mode, and waits for the server to agree — for
    /// the [`StreamOptions::receive_timeout`] at most, if one is set.
    pub async fn stop(self) -> Result<StreamEnd, Error> {
        match self.state.opts.receive_timeout {
            Some(after) => {
                let target = self.conn.target().clone();
                tokio::time::timeout(after, self.stop_inner())
                    .await
                    .unwrap_or(Err(Error::ReceiveTimeout { target, after }))
            }
            None => self.stop_inner().await,
        }
    }

    async fn stop_inner(mut self) -> Result<StreamEnd, Error> {
        if self.done {
            return Ok(StreamEnd::Stopped);
        }
        let mut out = BytesMut::new();
        self.state.reply_now = true;
        if self.state.poll_transmit(Instant::now(), &mut out) {
            self.conn.send(&FrontendMessage::CopyData(out.freeze()))?;
        }
        self.conn.send(&FrontendMessage::CopyDone)?;
        self.conn.flush().await?;
        // WAL that still arrives before the server's CopyDone is dropped, as libpq does.
        loop {
            match self.conn.next_message().await? {
                BackendMessage::CopyData(_) => {}
                BackendMessage::CopyDone => return self.read_end_of_copy().await.map(|_| StreamEnd::Stopped),
                BackendMessage::CommandComplete(_) => {
                    self.drain_until_ready().await?;
                    return Ok(StreamEnd::Stopped);
                }
                BackendMessage::ErrorResponse(e) => return Err(self.conn.server_error(e)),
                other => {
                    return Err(self.conn.unexpected(&format!("message '{}' after CopyDone", char::from(other.tag()))))
                }
            }
        }
    }

    async fn send_due_status(&mut self) -> Result<(), Error> {
        let mut out = BytesMut::new();
        if self.state.poll_transmit(Instant::now(), &mut out) {
            self.conn.send(&FrontendMessage::CopyData(out.freeze()))?;
            self.conn.flush().await?;
        }
        Ok(())
    }

    /// After COPY: an optional result set (next_tli, next_tli_startpos), command tags, `Z`.
    async fn read_end_of_copy(&mut self) -> Result<StreamEnd, Error> {
        let mut next = None;
        let mut error = None;
        loop {
            match self.conn.next_message().await? {
                BackendMessage::RowDescription(_) | BackendMessage::CommandComplete(_) | BackendMessage::CopyData(_) => {}
                BackendMessage::DataRow(row) => {
                    let text = |i: usize| row.values.get(i).and_then(|v| v.as_ref()).and_then(|v| std::str::from_utf8(v).ok());
                    let tli = text(0).and_then(|t| t.parse::<u32>().ok());
                    let pos = text(1).and_then(|p| p.parse::<Lsn>().ok());
                    match (tli, pos) {
                        (Some(t), Some(p)) => next = Some((TimelineId(t), p)),
                        _ => return Err(self.conn.unexpected("malformed next-timeline row")),
                    }
                }
                BackendMessage::ErrorResponse(e) => error = Some(e),
                BackendMessage::ReadyForQuery(_) => break,
                other => {
                    return Err(self.conn.unexpected(&format!("message '{}' at the end of streaming", char::from(other.tag()))))
                }
            }
        }
        if let Some(e) = error {
            return Err(self.conn.server_error(e));
        }
        Ok(match next {
            Some((next_tli, next_start)) => StreamEnd::TimelineEnded { next_tli, next_start },
            None => StreamEnd::Stopped,
        })
    }

    async fn drain_until_ready(&mut self) -> Result<(), Error> {
        loop {
            if let BackendMessage::ReadyForQuery(_) = self.conn.next_message().await? {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn xlog(start: u64, data: &[u8]) -> Bytes {
        let mut out = BytesMut::new();
        WalSenderMessage::XLogData { start: Lsn(start), wal_end: Lsn(start + data.len() as u64), send_time: 0, data: Bytes::copy_from_slice(data) }
            .encode(&mut out);
        out.freeze()
    }

    fn keepalive(reply: bool) -> Bytes {
        let mut out = BytesMut::new();
        WalSenderMessage::Keepalive { wal_end: Lsn(0), send_time: 0, reply_requested: reply }.encode(&mut out);
        out.freeze()
    }

    fn status(out: &BytesMut) -> StandbyStatusUpdate {
        StandbyStatusUpdate::parse(out).unwrap()
    }

    #[test]
    fn contiguous_wal_and_gaps() {
        let t0 = Instant::now();
        let mut s = WalStream::new(Lsn(0x100), StreamOptions::default());
        assert_eq!(s.feed(xlog(0x100, b"abc"), t0).unwrap(), Some(StreamEvent::WalData { start: Lsn(0x100), data: Bytes::from_static(b"abc") }));
        assert_eq!(s.received(), Lsn(0x103));
        assert_eq!(s.feed(xlog(0x105, b"x"), t0), Err(StreamError::Gap { expected: Lsn(0x103), got: Lsn(0x105) }));
        assert_eq!(s.feed(xlog(0x103, b""), t0).unwrap(), None);
    }

    #[test]
    fn flush_is_reported_only_after_flushed_and_never_beyond_received() {
        let t0 = Instant::now();
        let mut s = WalStream::new(Lsn(0), StreamOptions::default());
        s.feed(xlog(0, &[0; 100]), t0).unwrap();
        s.written(Lsn(100));
        let mut out = BytesMut::new();
        assert!(s.poll_transmit(t0, &mut out), "first status goes out at once");
        assert_eq!((status(&out).write, status(&out).flush), (Lsn(100), Lsn(0)));
        // Claims past what was received are clamped.
        s.flushed(Lsn(1000));
        out.clear();
        assert!(!s.poll_transmit(t0 + Duration::from_secs(1), &mut out), "not synchronous: waits for the interval");
        assert!(s.poll_transmit(t0 + Duration::from_secs(10), &mut out));
        assert_eq!(status(&out).flush, Lsn(100));
        assert_eq!(status(&out).apply, Lsn(0));
    }

    #[test]
    fn synchronous_reports_each_flush_at_once() {
        let t0 = Instant::now();
        let mut s = WalStream::new(Lsn(0), StreamOptions { synchronous: true, ..Default::default() });
        s.feed(xlog(0, &[0; 10]), t0).unwrap();
        let mut out = BytesMut::new();
        assert!(s.poll_transmit(t0, &mut out));
        out.clear();
        assert!(!s.poll_transmit(t0, &mut out));
        s.written(Lsn(10));
        assert!(!s.poll_transmit(t0, &mut out), "written but not flushed: nothing to tell yet");
        s.flushed(Lsn(10));
        assert!(s.poll_transmit(t0, &mut out));
        assert_eq!(status(&out).flush, Lsn(10));
    }

    #[test]
    fn a_silent_server_is_pinged_at_half_the_timeout_and_given_up_at_all_of_it() {
        let t0 = Instant::now();
        let opts = StreamOptions { receive_timeout: Some(Duration::from_secs(60)), ..Default::default() };
        let mut s = WalStream::new(Lsn(0), opts);
        assert_eq!(s.poll_timeout(), None, "not started: nothing to time");
        s.heard(t0);
        let mut out = BytesMut::new();
        assert_eq!(s.poll_timeout(), Some(t0 + Duration::from_secs(30)));
        assert!(!s.poll_transmit(t0 + Duration::from_secs(29), &mut out));
        assert!(s.poll_transmit(t0 + Duration::from_secs(30), &mut out));
        assert!(status(&out).reply_requested, "the ping asks the WAL sender to answer");
        out.clear();
        assert!(!s.poll_transmit(t0 + Duration::from_secs(31), &mut out), "one ping per silence");
        assert_eq!(s.poll_timeout(), Some(t0 + Duration::from_secs(40)), "the regular status");
        assert!(s.poll_transmit(t0 + Duration::from_secs(40), &mut out));
        assert!(!status(&out).reply_requested);
        assert_eq!(s.poll_timeout(), Some(t0 + Duration::from_secs(50)));
        assert!(s.check_timeout(t0 + Duration::from_secs(59)).is_ok());
        assert_eq!(s.check_timeout(t0 + Duration::from_secs(60)), Err(StreamError::Silent(Duration::from_secs(60))));

        // Any message (a keepalive too) restarts the clock and re-arms the ping.
        s.feed(keepalive(false), t0 + Duration::from_secs(45)).unwrap();
        assert!(s.check_timeout(t0 + Duration::from_secs(100)).is_ok());
        assert_eq!(s.poll_timeout(), Some(t0 + Duration::from_secs(50)));
        out.clear();
        assert!(s.poll_transmit(t0 + Duration::from_secs(75), &mut out));
        assert!(status(&out).reply_requested);
    }

    #[test]
    fn without_a_receive_timeout_silence_is_never_an_error() {
        let t0 = Instant::now();
        let mut s = WalStream::new(Lsn(0), StreamOptions::default());
        s.feed(keepalive(false), t0).unwrap();
        assert!(s.check_timeout(t0 + Duration::from_secs(86_400)).is_ok());
        let mut out = BytesMut::new();
        assert!(s.poll_transmit(t0, &mut out));
        assert!(!status(&out).reply_requested);
    }

    #[test]
    fn keepalive_reply_and_no_flush_reporting() {
        let t0 = Instant::now();
        let mut s = WalStream::new(Lsn(0), StreamOptions { report_flush: false, ..Default::default() });
        s.feed(keepalive(false), t0).unwrap();
        let mut out = BytesMut::new();
        assert!(s.poll_transmit(t0, &mut out));
        out.clear();
        s.feed(keepalive(true), t0 + Duration::from_secs(1)).unwrap();
        assert!(s.poll_transmit(t0 + Duration::from_secs(1), &mut out), "reply requested");
        s.flushed(Lsn(0));
        assert_eq!(status(&out).flush, Lsn(0), "flush not reported without report_flush");
        assert_eq!(s.poll_timeout(), Some(t0 + Duration::from_secs(11)));
    }

    #[test]
    fn a_requested_reply_is_surfaced_so_the_flush_can_catch_up_first() {
        let t0 = Instant::now();
        let mut s = WalStream::new(Lsn(0), StreamOptions::default());
        s.feed(xlog(0, &[0; 100]), t0).unwrap();
        s.written(Lsn(100));
        let mut out = BytesMut::new();
        assert!(s.poll_transmit(t0, &mut out));
        assert_eq!(s.feed(keepalive(false), t0).unwrap(), None, "no reply asked: nothing to do");
        assert_eq!(s.feed(keepalive(true), t0).unwrap(), Some(StreamEvent::ReplyRequested));
        // The caller makes the 100 bytes durable before the reply is built.
        s.flushed(Lsn(100));
        out.clear();
        assert!(s.poll_transmit(t0, &mut out));
        assert_eq!(status(&out).flush, Lsn(100), "the reply carries the caught-up flush");
    }
}
