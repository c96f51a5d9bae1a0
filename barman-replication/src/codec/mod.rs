//! Sans-I/O codec for the PostgreSQL frontend/backend protocol, version 3.0.
//!
//! Bytes in, typed messages out, and back. Nothing here owns a socket, a clock or a random
//! source, so every function can be fuzzed and property-tested directly.
//!
//! * [`decode_backend`] splits one backend frame off the caller's buffer, in the style of
//!   `postgres_protocol::message::backend::Message::parse`: a partial frame is left untouched
//!   and `Ok(None)` returned, so the caller reads more bytes and calls again.
//! * [`BackendMessage`] is the typed frame. Bodies hold [`Bytes`] slices of the frame, so
//!   nothing is copied; fields are decoded when the frame is parsed and checked for trailing
//!   garbage.
//! * [`BackendMessage::encode`] writes a frame back; it exists for round-trip tests and fuzzing,
//!   and is what a test server would send.
//! * [`frontend`] builds the client's messages (start-up, SSLRequest, queries, passwords).
//! * [`DbError`] is a decoded ErrorResponse or NoticeResponse.
//!
//! Layouts: `../shared/reference/replication-protocol.md` §1 (framing, authentication, error
//! fields, result sets). The replication-only CopyBoth sub-messages live in their own modules.

mod backend;
pub mod copy_both;
mod error_fields;
pub mod frontend;

pub use backend::{
    decode_backend, AuthRequest, BackendMessage, ColumnDescription, CopyFormat, DataRow,
    FrameHeader, ReadyStatus,
};
pub use copy_both::{pg_timestamp, StandbyStatusUpdate, WalSenderMessage};
pub use error_fields::{DbError, Severity};
pub use frontend::FrontendMessage;

/// The largest backend frame the decoder accepts, in bytes (type byte excluded).
///
/// The server never sends a CopyData larger than a WAL sender's buffer or a tar chunk of
/// BASE_BACKUP (both well under 1 MiB), nor a DataRow of a replication command larger than a
/// timeline history file. 64 MiB leaves room for oversized history files and bounds what a
/// hostile peer can make us buffer.
pub const DEFAULT_MAX_FRAME: usize = 64 << 20;

/// A frame could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// The length field is below the minimum of 4 (it counts itself).
    #[error("message '{tag}' has an invalid length {len}")]
    InvalidLength {
        /// The frame's type byte, as a character.
        tag: char,
        /// The length field as received.
        len: u32,
    },
    /// The frame is larger than the configured limit.
    #[error("message '{tag}' of {len} bytes exceeds the limit of {max} bytes")]
    FrameTooLarge {
        /// The frame's type byte.
        tag: char,
        /// Its body length.
        len: usize,
        /// The limit it broke.
        max: usize,
    },
    /// The frame's type byte is not one the backend sends.
    #[error("unknown message type {tag:?} (0x{byte:02x}) from server")]
    UnknownTag {
        /// The byte as a character.
        tag: char,
        /// The raw byte.
        byte: u8,
    },
    /// The body ended before a field it announced.
    #[error("message '{tag}' is truncated: {what}")]
    Truncated {
        /// The frame's type byte.
        tag: char,
        /// Which field was cut.
        what: &'static str,
    },
    /// The body has bytes after its last field.
    #[error("message '{tag}' has {extra} unexpected trailing bytes")]
    TrailingBytes {
        /// The frame's type byte.
        tag: char,
        /// How many bytes were left over.
        extra: usize,
    },
    /// A field holds a value the protocol does not allow.
    #[error("message '{tag}': {what}")]
    Invalid {
        /// The frame's type byte.
        tag: char,
        /// What was wrong.
        what: String,
    },
}
