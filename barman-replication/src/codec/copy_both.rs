//! The CopyData sub-messages of START_REPLICATION (reference §4.1, identical in 13–18).
//!
//! Server → client: XLogData `w` and primary keepalive `k`. Client → server: standby status
//! update `r`. All integers big-endian; timestamps are PostgreSQL's `TimestampTz`,
//! microseconds since 2000-01-01 00:00:00 UTC ([`pg_timestamp`]).

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::CodecError;
use crate::lsn::Lsn;

/// Seconds from the Unix epoch to PostgreSQL's (2000-01-01): 10 957 days.
const PG_EPOCH_OFFSET_SECS: i64 = 946_684_800;

/// Converts a wall-clock time to PostgreSQL's `TimestampTz`.
pub fn pg_timestamp(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => (d.as_secs() as i64 - PG_EPOCH_OFFSET_SECS) * 1_000_000 + i64::from(d.subsec_micros()),
        Err(e) => -(e.duration().as_micros() as i64) - PG_EPOCH_OFFSET_SECS * 1_000_000,
    }
}

/// A CopyData payload from a WAL sender.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WalSenderMessage {
    /// `w`: WAL bytes, exactly as in the segment files from `start`.
    XLogData {
        /// LSN of the first byte of `data`.
        start: Lsn,
        /// The server's end of WAL available to send (not the end of this message).
        wal_end: Lsn,
        /// The server's clock.
        send_time: i64,
        /// The WAL bytes (at most 16 pages; may cross a segment boundary).
        data: Bytes,
    },
    /// `k`: a keepalive; when `reply_requested`, answer with a status update at once or be
    /// disconnected after `wal_sender_timeout`.
    Keepalive {
        /// What the server has sent so far.
        wal_end: Lsn,
        /// The server's clock.
        send_time: i64,
        /// Whether the server wants a status update now.
        reply_requested: bool,
    },
}

impl WalSenderMessage {
    /// Decodes a CopyData payload.
    pub fn parse(mut payload: Bytes) -> Result<WalSenderMessage, CodecError> {
        let trunc = |what| CodecError::Truncated { tag: 'd', what };
        if payload.is_empty() {
            return Err(trunc("replication message type"));
        }
        match payload.get_u8() {
            b'w' => {
                if payload.remaining() < 24 {
                    return Err(trunc("XLogData header"));
                }
                let start = Lsn(payload.get_u64());
                let wal_end = Lsn(payload.get_u64());
                let send_time = payload.get_i64();
                if start.checked_add(payload.len() as u64).is_none() {
                    return Err(CodecError::Invalid { tag: 'd', what: format!("XLogData at {start} runs past the end of the WAL address space") });
                }
                Ok(WalSenderMessage::XLogData { start, wal_end, send_time, data: payload })
            }
            b'k' => {
                if payload.remaining() != 17 {
                    return Err(CodecError::Invalid { tag: 'd', what: format!("keepalive of {} bytes, expected 18", payload.remaining() + 1) });
                }
                let wal_end = Lsn(payload.get_u64());
                let send_time = payload.get_i64();
                let reply_requested = payload.get_u8() != 0;
                Ok(WalSenderMessage::Keepalive { wal_end, send_time, reply_requested })
            }
            other => Err(CodecError::Invalid { tag: 'd', what: format!("unknown replication message type 0x{other:02x}") }),
        }
    }

    /// Encodes the payload (what a WAL sender would put in a CopyData).
    pub fn encode(&self, out: &mut BytesMut) {
        match self {
            WalSenderMessage::XLogData { start, wal_end, send_time, data } => {
                out.put_u8(b'w');
                out.put_u64(start.0);
                out.put_u64(wal_end.0);
                out.put_i64(*send_time);
                out.put_slice(data);
            }
            WalSenderMessage::Keepalive { wal_end, send_time, reply_requested } => {
                out.put_u8(b'k');
                out.put_u64(wal_end.0);
                out.put_i64(*send_time);
                out.put_u8(u8::from(*reply_requested));
            }
        }
    }
}

/// `r`: what the receiver has written, flushed and applied.
///
/// A non-zero `flush` advances a physical slot's `restart_lsn` and is what synchronous
/// replication waits for, so it must only ever cover fsynced bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StandbyStatusUpdate {
    /// Received and written up to here.
    pub write: Lsn,
    /// Durably flushed up to here (0 = not reported).
    pub flush: Lsn,
    /// Applied up to here (a WAL archiver applies nothing: 0).
    pub apply: Lsn,
    /// The client's clock.
    pub send_time: i64,
    /// Ask the server to answer with a keepalive.
    pub reply_requested: bool,
}

impl StandbyStatusUpdate {
    /// Size of the payload.
    pub const LEN: usize = 34;

    /// Encodes the payload.
    pub fn encode(&self, out: &mut BytesMut) {
        out.put_u8(b'r');
        out.put_u64(self.write.0);
        out.put_u64(self.flush.0);
        out.put_u64(self.apply.0);
        out.put_i64(self.send_time);
        out.put_u8(u8::from(self.reply_requested));
    }

    /// Decodes a payload (as a WAL sender would).
    pub fn parse(mut p: &[u8]) -> Result<StandbyStatusUpdate, CodecError> {
        if p.len() != Self::LEN || p[0] != b'r' {
            return Err(CodecError::Invalid { tag: 'd', what: "not a standby status update".into() });
        }
        p.advance(1);
        Ok(StandbyStatusUpdate {
            write: Lsn(p.get_u64()),
            flush: Lsn(p.get_u64()),
            apply: Lsn(p.get_u64()),
            send_time: p.get_i64(),
            reply_requested: p.get_u8() != 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn timestamps() {
        assert_eq!(pg_timestamp(UNIX_EPOCH + std::time::Duration::from_secs(946_684_800)), 0);
        assert_eq!(pg_timestamp(UNIX_EPOCH + std::time::Duration::from_micros(946_684_801_000_002)), 1_000_002);
    }

    #[test]
    fn keepalive_hex() {
        let wire = b"k\x00\x00\x00\x00\x03\x00\x00\x28\x00\x00\x00\x00\x00\x00\x00\x01\x01";
        assert_eq!(
            WalSenderMessage::parse(Bytes::from_static(wire)).unwrap(),
            WalSenderMessage::Keepalive { wal_end: Lsn(0x3000028), send_time: 1, reply_requested: true }
        );
        assert!(WalSenderMessage::parse(Bytes::from_static(&wire[..17])).is_err());
        assert!(WalSenderMessage::parse(Bytes::from_static(b"w\x00")).is_err());
        assert!(WalSenderMessage::parse(Bytes::from_static(b"")).is_err());
        assert!(WalSenderMessage::parse(Bytes::from_static(b"?")).is_err());
    }

    /// fuzz/fuzz_targets/copy_both.rs (artifact crash-0b6b06af…): a keepalive's reply flag of
    /// 0x11 did not re-encode byte for byte. Kept as it is: any non-zero byte asks for a reply,
    /// as pg_receivewal reads it, and is written back as 1.
    #[test]
    fn keepalive_reply_flag_is_any_non_zero_byte() {
        let wire = b"k\x00\x00\x00\x00\x03\x00\x00\x28\x00\x00\x00\x00\x00\x00\x00\x01\x11";
        let msg = WalSenderMessage::parse(Bytes::from_static(wire)).unwrap();
        assert!(matches!(msg, WalSenderMessage::Keepalive { reply_requested: true, .. }));
        let mut out = BytesMut::new();
        msg.encode(&mut out);
        assert_eq!(out[..17], wire[..17]);
        assert_eq!(out[17], 1);
    }

    proptest! {
        #[test]
        fn round_trips(start in 0u64..u64::MAX / 2, end: u64, t: i64, data in proptest::collection::vec(any::<u8>(), 0..64), r: bool,
                       w: u64, f: u64, a: u64) {
            for m in [
                WalSenderMessage::XLogData { start: Lsn(start), wal_end: Lsn(end), send_time: t, data: Bytes::from(data.clone()) },
                WalSenderMessage::Keepalive { wal_end: Lsn(end), send_time: t, reply_requested: r },
            ] {
                let mut out = BytesMut::new();
                m.encode(&mut out);
                prop_assert_eq!(WalSenderMessage::parse(out.freeze()).unwrap(), m);
            }
            let s = StandbyStatusUpdate { write: Lsn(w), flush: Lsn(f), apply: Lsn(a), send_time: t, reply_requested: r };
            let mut out = BytesMut::new();
            s.encode(&mut out);
            prop_assert_eq!(out.len(), StandbyStatusUpdate::LEN);
            prop_assert_eq!(StandbyStatusUpdate::parse(&out).unwrap(), s);
        }

        #[test]
        fn never_panics(data in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = WalSenderMessage::parse(Bytes::from(data));
        }
    }
}
