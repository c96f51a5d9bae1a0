//! Frontend (client → server) messages.
//!
//! Encoders append to the caller's buffer. Where postgres-protocol already has a writer we
//! call it; [`FrontendMessage`] additionally decodes the tagged messages we send, so tests and
//! the fuzzer can check that what we write is what we meant.

use bytes::{Buf, Bytes, BytesMut};
use postgres_protocol::message::frontend as pg;

use super::CodecError;

/// Protocol version 3.0, the only one servers 13–17 accept and the one libpq 18 still uses.
pub const PROTOCOL_3_0: u32 = 0x0003_0000;

/// Appends a StartupMessage (untagged) with the given parameters, e.g. `user`, `replication`.
pub fn startup(params: &[(&str, &str)], out: &mut BytesMut) -> Result<(), CodecError> {
    for (k, v) in params {
        if k.contains('\0') || v.contains('\0') {
            return Err(CodecError::Invalid { tag: '0', what: format!("start-up parameter {k:?} contains a NUL byte") });
        }
    }
    pg::startup_message(params.iter().copied(), out)
        .map_err(|e| CodecError::Invalid { tag: '0', what: e.to_string() })
}

/// Appends an SSLRequest (8 bytes: length 8, code 80877103).
pub fn ssl_request(out: &mut BytesMut) {
    pg::ssl_request(out);
}

/// Encodes one tagged message, appending it to `out`.
pub fn encode(msg: &FrontendMessage, out: &mut BytesMut) -> Result<(), CodecError> {
    let invalid = |tag: char, e: std::io::Error| CodecError::Invalid { tag, what: e.to_string() };
    match msg {
        FrontendMessage::Query(q) => pg::query(q, out).map_err(|e| invalid('Q', e)),
        FrontendMessage::Password(p) => pg::password_message(p, out).map_err(|e| invalid('p', e)),
        FrontendMessage::SaslInitialResponse { mechanism, data } => {
            pg::sasl_initial_response(mechanism, data, out).map_err(|e| invalid('p', e))
        }
        FrontendMessage::SaslResponse(d) => pg::sasl_response(d, out).map_err(|e| invalid('p', e)),
        FrontendMessage::CopyData(d) => {
            pg::CopyData::new(d.clone()).map_err(|e| invalid('d', e))?.write(out);
            Ok(())
        }
        FrontendMessage::CopyDone => {
            pg::copy_done(out);
            Ok(())
        }
        FrontendMessage::CopyFail(m) => pg::copy_fail(m, out).map_err(|e| invalid('f', e)),
        FrontendMessage::Terminate => {
            pg::terminate(out);
            Ok(())
        }
    }
}

/// The tagged messages barman-rs sends.
///
/// The `p` tag is shared by PasswordMessage, SASLInitialResponse and SASLResponse; which one a
/// `p` frame is depends on the authentication exchange, so [`FrontendMessage::decode`] takes
/// a hint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrontendMessage {
    /// `Q`: a simple query; in a walsender, one replication command.
    Query(String),
    /// `p`: a cleartext or md5 password, NUL-terminated on the wire.
    Password(Vec<u8>),
    /// `p`: the first SASL message.
    SaslInitialResponse {
        /// The chosen mechanism.
        mechanism: String,
        /// The client-first-message.
        data: Vec<u8>,
    },
    /// `p`: a later SASL message.
    SaslResponse(Vec<u8>),
    /// `d`
    CopyData(Bytes),
    /// `c`
    CopyDone,
    /// `f`
    CopyFail(String),
    /// `X`
    Terminate,
}

/// What a `p` frame holds, which only the sender's state can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasswordKind {
    /// PasswordMessage.
    Password,
    /// SASLInitialResponse.
    SaslInitial,
    /// SASLResponse.
    Sasl,
}

impl FrontendMessage {
    /// Splits one tagged frontend frame off `buf` (`Ok(None)` if incomplete).
    pub fn decode(buf: &mut BytesMut, p_kind: PasswordKind) -> Result<Option<FrontendMessage>, CodecError> {
        let Some(head) = super::FrameHeader::peek(buf)? else { return Ok(None) };
        if buf.len() < head.total_len() {
            return Ok(None);
        }
        let tag = char::from(head.tag);
        let frame = buf.split_to(head.total_len()).freeze();
        let mut body = frame.slice(super::FrameHeader::LEN..);
        let cstr = |body: &mut Bytes, what: &'static str| -> Result<String, CodecError> {
            let nul = body.iter().position(|&b| b == 0).ok_or(CodecError::Truncated { tag, what })?;
            let s = std::str::from_utf8(&body[..nul])
                .map_err(|_| CodecError::Invalid { tag, what: format!("{what} is not UTF-8") })?
                .to_owned();
            body.advance(nul + 1);
            Ok(s)
        };
        let msg = match head.tag {
            b'Q' => FrontendMessage::Query(cstr(&mut body, "query")?),
            b'p' => match p_kind {
                PasswordKind::Password => {
                    let nul = body.iter().position(|&b| b == 0).ok_or(CodecError::Truncated { tag, what: "password" })?;
                    let p = body[..nul].to_vec();
                    body.advance(nul + 1);
                    FrontendMessage::Password(p)
                }
                PasswordKind::SaslInitial => {
                    let mechanism = cstr(&mut body, "mechanism")?;
                    if body.remaining() < 4 {
                        return Err(CodecError::Truncated { tag, what: "initial response length" });
                    }
                    let len = body.get_i32();
                    let data = if len < 0 {
                        Vec::new()
                    } else {
                        let len = len as usize;
                        if body.remaining() < len {
                            return Err(CodecError::Truncated { tag, what: "initial response" });
                        }
                        body.split_to(len).to_vec()
                    };
                    FrontendMessage::SaslInitialResponse { mechanism, data }
                }
                PasswordKind::Sasl => FrontendMessage::SaslResponse(std::mem::take(&mut body).to_vec()),
            },
            b'd' => FrontendMessage::CopyData(std::mem::take(&mut body)),
            b'c' => FrontendMessage::CopyDone,
            b'f' => FrontendMessage::CopyFail(cstr(&mut body, "message")?),
            b'X' => FrontendMessage::Terminate,
            byte => return Err(CodecError::UnknownTag { tag, byte }),
        };
        if !body.is_empty() {
            return Err(CodecError::TrailingBytes { tag, extra: body.len() });
        }
        Ok(Some(msg))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn startup_and_ssl_request_layout() {
        let mut out = BytesMut::new();
        ssl_request(&mut out);
        assert_eq!(&out[..], b"\x00\x00\x00\x08\x04\xd2\x16\x2f");
        let mut out = BytesMut::new();
        startup(&[("user", "barman"), ("replication", "true")], &mut out).unwrap();
        assert_eq!(&out[..], b"\x00\x00\x00\x26\x00\x03\x00\x00user\0barman\0replication\0true\0\0");
        assert!(startup(&[("user", "a\0b")], &mut BytesMut::new()).is_err());
    }

    fn message() -> impl Strategy<Value = (FrontendMessage, PasswordKind)> {
        let text = "[^\0]{0,16}";
        prop_oneof![
            text.prop_map(|q| (FrontendMessage::Query(q), PasswordKind::Password)),
            "[^\0]{0,16}".prop_map(|p| (FrontendMessage::Password(p.into_bytes()), PasswordKind::Password)),
            ("[^\0]{1,16}", proptest::collection::vec(any::<u8>(), 0..32))
                .prop_map(|(mechanism, data)| (FrontendMessage::SaslInitialResponse { mechanism, data }, PasswordKind::SaslInitial)),
            proptest::collection::vec(any::<u8>(), 0..32).prop_map(|d| (FrontendMessage::SaslResponse(d), PasswordKind::Sasl)),
            proptest::collection::vec(any::<u8>(), 0..32)
                .prop_map(|d| (FrontendMessage::CopyData(Bytes::from(d)), PasswordKind::Password)),
            Just((FrontendMessage::CopyDone, PasswordKind::Password)),
            "[^\0]{0,16}".prop_map(|m| (FrontendMessage::CopyFail(m), PasswordKind::Password)),
            Just((FrontendMessage::Terminate, PasswordKind::Password)),
        ]
    }

    proptest! {
        #[test]
        fn encode_decode_round_trip((msg, kind) in message()) {
            let mut out = BytesMut::new();
            encode(&msg, &mut out).unwrap();
            let decoded = FrontendMessage::decode(&mut out, kind).unwrap();
            prop_assert_eq!(decoded, Some(msg));
            prop_assert!(out.is_empty());
        }
    }
}
