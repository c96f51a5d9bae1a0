//! Backend (server → client) frames: `byte1 tag`, `int32 length` (counting itself), body.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::{CodecError, DbError};

/// The five bytes in front of every backend frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// The message type byte.
    pub tag: u8,
    /// The body length: the length field minus its own four bytes.
    pub body_len: usize,
}

impl FrameHeader {
    /// Size of the header on the wire.
    pub const LEN: usize = 5;

    /// Reads the header at the front of `buf` without consuming it; `Ok(None)` if fewer than
    /// five bytes are there.
    pub fn peek(buf: &[u8]) -> Result<Option<FrameHeader>, CodecError> {
        let Some(head) = buf.get(..Self::LEN) else { return Ok(None) };
        let tag = head[0];
        let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]);
        if len < 4 {
            return Err(CodecError::InvalidLength { tag: char::from(tag), len });
        }
        Ok(Some(FrameHeader { tag, body_len: len as usize - 4 }))
    }

    /// The whole frame's size: header plus body.
    pub fn total_len(&self) -> usize {
        Self::LEN + self.body_len
    }
}

/// Splits one backend frame off the front of `buf`.
///
/// Returns `Ok(None)` and leaves `buf` untouched (but with room reserved for the rest) while the
/// frame is incomplete. A frame whose body exceeds `max_frame` is refused before it is buffered.
/// On success exactly one frame is consumed. A malformed frame is consumed too and reported;
/// the connection should then be dropped, since the stream can no longer be trusted.
pub fn decode_backend(buf: &mut BytesMut, max_frame: usize) -> Result<Option<BackendMessage>, CodecError> {
    let Some(head) = FrameHeader::peek(buf)? else { return Ok(None) };
    if head.body_len > max_frame {
        return Err(CodecError::FrameTooLarge { tag: char::from(head.tag), len: head.body_len, max: max_frame });
    }
    if buf.len() < head.total_len() {
        buf.reserve(head.total_len() - buf.len());
        return Ok(None);
    }
    // Bodies below hold slices of this frame: no copy.
    let frame = buf.split_to(head.total_len()).freeze();
    BackendMessage::parse(head.tag, frame.slice(FrameHeader::LEN..)).map(Some)
}

/// An `R` message: what the server asks of the client to authenticate, or that it is done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthRequest {
    /// Code 0: authenticated.
    Ok,
    /// Code 3: send the password in clear text.
    CleartextPassword,
    /// Code 5: send `md5(md5(password || user) || salt)`.
    Md5Password {
        /// The four-byte salt.
        salt: [u8; 4],
    },
    /// Code 10: start SASL with one of these mechanisms.
    Sasl {
        /// Mechanism names, e.g. `SCRAM-SHA-256`, `SCRAM-SHA-256-PLUS`.
        mechanisms: Vec<String>,
    },
    /// Code 11: the server's SASL challenge.
    SaslContinue(Bytes),
    /// Code 12: the server's final SASL message.
    SaslFinal(Bytes),
    /// Any other method (Kerberos 2, SCM 6, GSSAPI 7/8, SSPI 9), which barman-rs does not
    /// speak, with whatever data followed the code.
    Unsupported {
        /// The authentication code.
        code: u32,
        /// The rest of the body.
        data: Bytes,
    },
}

/// The transaction status carried by ReadyForQuery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadyStatus {
    /// `I`: not in a transaction block.
    Idle,
    /// `T`: in a transaction block.
    InTransaction,
    /// `E`: in a failed transaction block.
    Failed,
}

/// One column of a RowDescription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnDescription {
    /// The column name.
    pub name: String,
    /// The table OID, or 0.
    pub table_oid: u32,
    /// The attribute number, or 0.
    pub attnum: i16,
    /// The data type OID (16 bool, 17 bytea, 20 int8, 23 int4, 25 text, 26 oid …).
    pub type_oid: u32,
    /// The type's size (negative for variable length).
    pub typlen: i16,
    /// The type modifier.
    pub typmod: i32,
    /// 0 for text, 1 for binary.
    pub format: i16,
}

/// A DataRow: one value per column, `None` for SQL NULL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataRow {
    /// The values in column order.
    pub values: Vec<Option<Bytes>>,
}

/// The body of CopyInResponse, CopyOutResponse and CopyBothResponse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyFormat {
    /// 0 = text, 1 = binary (always 0 in a walsender).
    pub overall: u8,
    /// Per-column format codes (none in a walsender).
    pub columns: Vec<i16>,
}

/// A decoded backend message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendMessage {
    /// `R`
    Authentication(AuthRequest),
    /// `S`: a run-time parameter's current value.
    ParameterStatus {
        /// The parameter name, e.g. `server_version`.
        name: String,
        /// Its value.
        value: String,
    },
    /// `K`: what a CancelRequest needs. The key is 4 bytes in protocol 3.0, up to 256 in 3.2.
    BackendKeyData {
        /// The backend's process ID.
        pid: i32,
        /// The secret key.
        key: Bytes,
    },
    /// `Z`
    ReadyForQuery(ReadyStatus),
    /// `T`
    RowDescription(Vec<ColumnDescription>),
    /// `D`
    DataRow(DataRow),
    /// `C`: the command tag, e.g. `IDENTIFY_SYSTEM` or `SELECT 1`.
    CommandComplete(String),
    /// `I`: the query string was empty.
    EmptyQueryResponse,
    /// `E`
    ErrorResponse(DbError),
    /// `N`
    NoticeResponse(DbError),
    /// `A`: a LISTEN/NOTIFY notification.
    NotificationResponse {
        /// The notifying backend's PID.
        pid: i32,
        /// The channel name.
        channel: String,
        /// The payload.
        payload: String,
    },
    /// `G`
    CopyInResponse(CopyFormat),
    /// `H`
    CopyOutResponse(CopyFormat),
    /// `W`: START_REPLICATION entered COPY BOTH mode. postgres-protocol has no arm for it.
    CopyBothResponse(CopyFormat),
    /// `d`: a chunk of COPY data; for replication, a sub-message decoded elsewhere.
    CopyData(Bytes),
    /// `c`
    CopyDone,
    /// `v`: the server supports an older minor protocol version or not all `_pq_` options.
    NegotiateProtocolVersion {
        /// The newest minor version the server supports.
        newest_minor: u32,
        /// The start-up options it did not recognise.
        unrecognized: Vec<String>,
    },
}

/// A cursor over a frame body that reports truncation in protocol terms.
struct Body {
    tag: char,
    buf: Bytes,
}

impl Body {
    fn need(&self, n: usize, what: &'static str) -> Result<(), CodecError> {
        if self.buf.remaining() < n {
            return Err(CodecError::Truncated { tag: self.tag, what });
        }
        Ok(())
    }
    fn u8(&mut self, what: &'static str) -> Result<u8, CodecError> {
        self.need(1, what)?;
        Ok(self.buf.get_u8())
    }
    fn i16(&mut self, what: &'static str) -> Result<i16, CodecError> {
        self.need(2, what)?;
        Ok(self.buf.get_i16())
    }
    fn i32(&mut self, what: &'static str) -> Result<i32, CodecError> {
        self.need(4, what)?;
        Ok(self.buf.get_i32())
    }
    fn u32(&mut self, what: &'static str) -> Result<u32, CodecError> {
        self.need(4, what)?;
        Ok(self.buf.get_u32())
    }
    fn bytes(&mut self, n: usize, what: &'static str) -> Result<Bytes, CodecError> {
        self.need(n, what)?;
        Ok(self.buf.split_to(n))
    }
    /// A NUL-terminated string; invalid UTF-8 is replaced, since server messages follow the
    /// client encoding and a diagnostic must never be lost over one bad byte.
    fn cstr(&mut self, what: &'static str) -> Result<String, CodecError> {
        let nul = self.buf.iter().position(|&b| b == 0).ok_or(CodecError::Truncated { tag: self.tag, what })?;
        let s = String::from_utf8_lossy(&self.buf[..nul]).into_owned();
        self.buf.advance(nul + 1);
        Ok(s)
    }
    fn rest(&mut self) -> Bytes {
        std::mem::take(&mut self.buf)
    }
    fn finish<T>(self, value: T) -> Result<T, CodecError> {
        if self.buf.is_empty() {
            Ok(value)
        } else {
            Err(CodecError::TrailingBytes { tag: self.tag, extra: self.buf.len() })
        }
    }
    fn count(&mut self, what: &'static str) -> Result<usize, CodecError> {
        let n = self.i16(what)?;
        usize::try_from(n).map_err(|_| CodecError::Invalid { tag: self.tag, what: format!("negative {what} {n}") })
    }
}

impl BackendMessage {
    /// Parses a frame body whose type byte is `tag`.
    pub fn parse(tag: u8, body: Bytes) -> Result<BackendMessage, CodecError> {
        let mut b = Body { tag: char::from(tag), buf: body };
        let msg = match tag {
            b'R' => {
                let code = b.u32("authentication code")?;
                let req = match code {
                    0 => AuthRequest::Ok,
                    3 => AuthRequest::CleartextPassword,
                    5 => {
                        let s = b.bytes(4, "md5 salt")?;
                        AuthRequest::Md5Password { salt: [s[0], s[1], s[2], s[3]] }
                    }
                    10 => {
                        let mut mechanisms = Vec::new();
                        loop {
                            let m = b.cstr("SASL mechanism list")?;
                            if m.is_empty() {
                                break;
                            }
                            mechanisms.push(m);
                        }
                        AuthRequest::Sasl { mechanisms }
                    }
                    11 => AuthRequest::SaslContinue(b.rest()),
                    12 => AuthRequest::SaslFinal(b.rest()),
                    code => AuthRequest::Unsupported { code, data: b.rest() },
                };
                BackendMessage::Authentication(req)
            }
            b'S' => {
                let name = b.cstr("parameter name")?;
                let value = b.cstr("parameter value")?;
                BackendMessage::ParameterStatus { name, value }
            }
            b'K' => {
                let pid = b.i32("process id")?;
                BackendMessage::BackendKeyData { pid, key: b.rest() }
            }
            b'Z' => BackendMessage::ReadyForQuery(match b.u8("transaction status")? {
                b'I' => ReadyStatus::Idle,
                b'T' => ReadyStatus::InTransaction,
                b'E' => ReadyStatus::Failed,
                other => {
                    return Err(CodecError::Invalid { tag: 'Z', what: format!("unknown transaction status 0x{other:02x}") })
                }
            }),
            b'T' => {
                let n = b.count("column count")?;
                let mut cols = Vec::with_capacity(n.min(1024));
                for _ in 0..n {
                    cols.push(ColumnDescription {
                        name: b.cstr("column name")?,
                        table_oid: b.u32("table oid")?,
                        attnum: b.i16("column number")?,
                        type_oid: b.u32("type oid")?,
                        typlen: b.i16("type length")?,
                        typmod: b.i32("type modifier")?,
                        format: b.i16("format code")?,
                    });
                }
                BackendMessage::RowDescription(cols)
            }
            b'D' => {
                let n = b.count("value count")?;
                let mut values = Vec::with_capacity(n.min(1024));
                for _ in 0..n {
                    let len = b.i32("value length")?;
                    values.push(match len {
                        -1 => None,
                        len if len < 0 => {
                            return Err(CodecError::Invalid { tag: 'D', what: format!("value length {len}") })
                        }
                        len => Some(b.bytes(len as usize, "value")?),
                    });
                }
                BackendMessage::DataRow(DataRow { values })
            }
            b'C' => BackendMessage::CommandComplete(b.cstr("command tag")?),
            b'I' => BackendMessage::EmptyQueryResponse,
            b'E' => BackendMessage::ErrorResponse(DbError::parse(&mut b.buf).map_err(|what| CodecError::Truncated { tag: 'E', what })?),
            b'N' => BackendMessage::NoticeResponse(DbError::parse(&mut b.buf).map_err(|what| CodecError::Truncated { tag: 'N', what })?),
            b'A' => {
                let pid = b.i32("process id")?;
                let channel = b.cstr("channel")?;
                let payload = b.cstr("payload")?;
                BackendMessage::NotificationResponse { pid, channel, payload }
            }
            b'G' | b'H' | b'W' => {
                let overall = b.u8("copy format")?;
                let n = b.count("column count")?;
                let mut columns = Vec::with_capacity(n.min(1024));
                for _ in 0..n {
                    columns.push(b.i16("column format")?);
                }
                let f = CopyFormat { overall, columns };
                match tag {
                    b'G' => BackendMessage::CopyInResponse(f),
                    b'H' => BackendMessage::CopyOutResponse(f),
                    _ => BackendMessage::CopyBothResponse(f),
                }
            }
            b'd' => BackendMessage::CopyData(b.rest()),
            b'c' => BackendMessage::CopyDone,
            b'v' => {
                let newest_minor = b.u32("minor version")?;
                let n = b.u32("option count")?;
                let mut unrecognized = Vec::new();
                for _ in 0..n {
                    unrecognized.push(b.cstr("option name")?);
                }
                BackendMessage::NegotiateProtocolVersion { newest_minor, unrecognized }
            }
            byte => return Err(CodecError::UnknownTag { tag: char::from(byte), byte }),
        };
        b.finish(msg)
    }

    /// The type byte this message is sent with.
    pub fn tag(&self) -> u8 {
        match self {
            BackendMessage::Authentication(_) => b'R',
            BackendMessage::ParameterStatus { .. } => b'S',
            BackendMessage::BackendKeyData { .. } => b'K',
            BackendMessage::ReadyForQuery(_) => b'Z',
            BackendMessage::RowDescription(_) => b'T',
            BackendMessage::DataRow(_) => b'D',
            BackendMessage::CommandComplete(_) => b'C',
            BackendMessage::EmptyQueryResponse => b'I',
            BackendMessage::ErrorResponse(_) => b'E',
            BackendMessage::NoticeResponse(_) => b'N',
            BackendMessage::NotificationResponse { .. } => b'A',
            BackendMessage::CopyInResponse(_) => b'G',
            BackendMessage::CopyOutResponse(_) => b'H',
            BackendMessage::CopyBothResponse(_) => b'W',
            BackendMessage::CopyData(_) => b'd',
            BackendMessage::CopyDone => b'c',
            BackendMessage::NegotiateProtocolVersion { .. } => b'v',
        }
    }

    /// Appends this message as a frame to `out`, as a server would send it.
    pub fn encode(&self, out: &mut BytesMut) {
        out.put_u8(self.tag());
        let len_at = out.len();
        out.put_u32(0);
        let cstr = |out: &mut BytesMut, s: &str| {
            out.put_slice(s.as_bytes());
            out.put_u8(0);
        };
        match self {
            BackendMessage::Authentication(req) => match req {
                AuthRequest::Ok => out.put_u32(0),
                AuthRequest::CleartextPassword => out.put_u32(3),
                AuthRequest::Md5Password { salt } => {
                    out.put_u32(5);
                    out.put_slice(salt);
                }
                AuthRequest::Sasl { mechanisms } => {
                    out.put_u32(10);
                    for m in mechanisms {
                        cstr(out, m);
                    }
                    out.put_u8(0);
                }
                AuthRequest::SaslContinue(d) => {
                    out.put_u32(11);
                    out.put_slice(d);
                }
                AuthRequest::SaslFinal(d) => {
                    out.put_u32(12);
                    out.put_slice(d);
                }
                AuthRequest::Unsupported { code, data } => {
                    out.put_u32(*code);
                    out.put_slice(data);
                }
            },
            BackendMessage::ParameterStatus { name, value } => {
                cstr(out, name);
                cstr(out, value);
            }
            BackendMessage::BackendKeyData { pid, key } => {
                out.put_i32(*pid);
                out.put_slice(key);
            }
            BackendMessage::ReadyForQuery(s) => out.put_u8(match s {
                ReadyStatus::Idle => b'I',
                ReadyStatus::InTransaction => b'T',
                ReadyStatus::Failed => b'E',
            }),
            BackendMessage::RowDescription(cols) => {
                out.put_i16(cols.len() as i16);
                for c in cols {
                    cstr(out, &c.name);
                    out.put_u32(c.table_oid);
                    out.put_i16(c.attnum);
                    out.put_u32(c.type_oid);
                    out.put_i16(c.typlen);
                    out.put_i32(c.typmod);
                    out.put_i16(c.format);
                }
            }
            BackendMessage::DataRow(row) => {
                out.put_i16(row.values.len() as i16);
                for v in &row.values {
                    match v {
                        None => out.put_i32(-1),
                        Some(v) => {
                            out.put_i32(v.len() as i32);
                            out.put_slice(v);
                        }
                    }
                }
            }
            BackendMessage::CommandComplete(tag) => cstr(out, tag),
            BackendMessage::EmptyQueryResponse | BackendMessage::CopyDone => {}
            BackendMessage::ErrorResponse(e) | BackendMessage::NoticeResponse(e) => e.encode(out),
            BackendMessage::NotificationResponse { pid, channel, payload } => {
                out.put_i32(*pid);
                cstr(out, channel);
                cstr(out, payload);
            }
            BackendMessage::CopyInResponse(f) | BackendMessage::CopyOutResponse(f) | BackendMessage::CopyBothResponse(f) => {
                out.put_u8(f.overall);
                out.put_i16(f.columns.len() as i16);
                for c in &f.columns {
                    out.put_i16(*c);
                }
            }
            BackendMessage::CopyData(d) => out.put_slice(d),
            BackendMessage::NegotiateProtocolVersion { newest_minor, unrecognized } => {
                out.put_u32(*newest_minor);
                out.put_u32(unrecognized.len() as u32);
                for o in unrecognized {
                    cstr(out, o);
                }
            }
        }
        let len = (out.len() - len_at) as u32;
        out[len_at..len_at + 4].copy_from_slice(&len.to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real start-up exchange of a 16.x walsender (trust), as captured on the wire:
    /// AuthenticationOk, two ParameterStatus, BackendKeyData, ReadyForQuery.
    fn startup_capture() -> Vec<u8> {
        let mut out = BytesMut::new();
        for m in [
            BackendMessage::Authentication(AuthRequest::Ok),
            BackendMessage::ParameterStatus { name: "server_version".into(), value: "16.15".into() },
            BackendMessage::ParameterStatus { name: "in_hot_standby".into(), value: "off".into() },
            BackendMessage::BackendKeyData { pid: 4242, key: Bytes::from_static(&[1, 2, 3, 4]) },
            BackendMessage::ReadyForQuery(ReadyStatus::Idle),
        ] {
            m.encode(&mut out);
        }
        out.to_vec()
    }

    #[test]
    fn hex_literals() {
        // ReadyForQuery(Idle) and AuthenticationMD5Password with salt 01020304.
        let mut buf = BytesMut::from(&b"Z\x00\x00\x00\x05IR\x00\x00\x00\x0c\x00\x00\x00\x05\x01\x02\x03\x04"[..]);
        assert_eq!(decode_backend(&mut buf, 1024).unwrap(), Some(BackendMessage::ReadyForQuery(ReadyStatus::Idle)));
        assert_eq!(
            decode_backend(&mut buf, 1024).unwrap(),
            Some(BackendMessage::Authentication(AuthRequest::Md5Password { salt: [1, 2, 3, 4] }))
        );
        assert!(buf.is_empty());
    }

    #[test]
    fn every_split_yields_the_same_messages() {
        let wire = startup_capture();
        let whole = {
            let mut b = BytesMut::from(&wire[..]);
            std::iter::from_fn(|| decode_backend(&mut b, 1024).unwrap()).collect::<Vec<_>>()
        };
        assert_eq!(whole.len(), 5);
        for cut in 0..=wire.len() {
            let mut b = BytesMut::from(&wire[..cut]);
            let mut got = Vec::new();
            while let Some(m) = decode_backend(&mut b, 1024).unwrap() {
                got.push(m);
            }
            b.extend_from_slice(&wire[cut..]);
            while let Some(m) = decode_backend(&mut b, 1024).unwrap() {
                got.push(m);
            }
            assert_eq!(got, whole, "split at {cut}");
            assert!(b.is_empty());
        }
    }

    #[test]
    fn limits_and_malformed_frames() {
        let mut big = BytesMut::from(&b"d\x00\x10\x00\x00"[..]);
        assert!(matches!(decode_backend(&mut big, 1024), Err(CodecError::FrameTooLarge { tag: 'd', .. })));
        let mut short = BytesMut::from(&b"Z\x00\x00\x00\x03"[..]);
        assert!(matches!(decode_backend(&mut short, 1024), Err(CodecError::InvalidLength { len: 3, .. })));
        let mut trailing = BytesMut::from(&b"Z\x00\x00\x00\x06II"[..]);
        assert!(matches!(decode_backend(&mut trailing, 1024), Err(CodecError::TrailingBytes { tag: 'Z', extra: 1 })));
        let mut unknown = BytesMut::from(&b"!\x00\x00\x00\x04"[..]);
        assert!(matches!(decode_backend(&mut unknown, 1024), Err(CodecError::UnknownTag { byte: b'!', .. })));
        let mut neg = BytesMut::from(&b"D\x00\x00\x00\x0a\x00\x01\xff\xff\xff\xfe"[..]);
        assert!(matches!(decode_backend(&mut neg, 1024), Err(CodecError::Invalid { tag: 'D', .. })));
    }

    #[test]
    fn error_response_fields() {
        let body = b"SFATAL\0VFATAL\0C28P01\0Mpassword authentication failed for user \"barman\"\0Fauth.c\0\0";
        let mut frame = BytesMut::new();
        frame.put_u8(b'E');
        frame.put_u32(4 + body.len() as u32);
        frame.put_slice(body);
        let Some(BackendMessage::ErrorResponse(e)) = decode_backend(&mut frame, 1024).unwrap() else { panic!() };
        assert_eq!(e.code, "28P01");
        assert_eq!(e.severity(), crate::codec::Severity::Fatal);
        assert_eq!(e.to_string(), "FATAL: password authentication failed for user \"barman\" (SQLSTATE 28P01)");
    }

    mod proptests {
        use super::super::*;
        use proptest::prelude::*;

        fn text() -> impl Strategy<Value = String> {
            "[^\0]{0,12}"
        }

        fn bytes() -> impl Strategy<Value = Bytes> {
            proptest::collection::vec(any::<u8>(), 0..24).prop_map(Bytes::from)
        }

        fn db_error() -> impl Strategy<Value = DbError> {
            proptest::collection::vec((prop::sample::select(b"SVCMDHWFLRP".to_vec()), text()), 0..6).prop_map(|fields| {
                let mut wire = BytesMut::new();
                for (c, v) in &fields {
                    wire.put_u8(*c);
                    wire.put_slice(v.as_bytes());
                    wire.put_u8(0);
                }
                wire.put_u8(0);
                DbError::parse(&mut wire.freeze()).expect("well-formed")
            })
        }

        fn copy_format() -> impl Strategy<Value = CopyFormat> {
            (any::<u8>(), proptest::collection::vec(any::<i16>(), 0..4)).prop_map(|(overall, columns)| CopyFormat { overall, columns })
        }

        fn message() -> impl Strategy<Value = BackendMessage> {
            prop_oneof![
                Just(BackendMessage::Authentication(AuthRequest::Ok)),
                Just(BackendMessage::Authentication(AuthRequest::CleartextPassword)),
                any::<[u8; 4]>().prop_map(|salt| BackendMessage::Authentication(AuthRequest::Md5Password { salt })),
                proptest::collection::vec("[^\0]{1,20}", 0..3)
                    .prop_map(|mechanisms| BackendMessage::Authentication(AuthRequest::Sasl { mechanisms })),
                bytes().prop_map(|d| BackendMessage::Authentication(AuthRequest::SaslContinue(d))),
                bytes().prop_map(|d| BackendMessage::Authentication(AuthRequest::SaslFinal(d))),
                (text(), text()).prop_map(|(name, value)| BackendMessage::ParameterStatus { name, value }),
                (any::<i32>(), bytes()).prop_map(|(pid, key)| BackendMessage::BackendKeyData { pid, key }),
                prop_oneof![Just(ReadyStatus::Idle), Just(ReadyStatus::InTransaction), Just(ReadyStatus::Failed)]
                    .prop_map(BackendMessage::ReadyForQuery),
                proptest::collection::vec(
                    (text(), any::<u32>(), any::<i16>(), any::<u32>(), any::<i16>(), any::<i32>(), any::<i16>()),
                    0..4
                )
                .prop_map(|cols| BackendMessage::RowDescription(
                    cols.into_iter()
                        .map(|(name, table_oid, attnum, type_oid, typlen, typmod, format)| ColumnDescription {
                            name, table_oid, attnum, type_oid, typlen, typmod, format
                        })
                        .collect()
                )),
                proptest::collection::vec(proptest::option::of(bytes()), 0..5)
                    .prop_map(|values| BackendMessage::DataRow(DataRow { values })),
                text().prop_map(BackendMessage::CommandComplete),
                Just(BackendMessage::EmptyQueryResponse),
                db_error().prop_map(BackendMessage::ErrorResponse),
                db_error().prop_map(BackendMessage::NoticeResponse),
                (any::<i32>(), text(), text()).prop_map(|(pid, channel, payload)| BackendMessage::NotificationResponse { pid, channel, payload }),
                copy_format().prop_map(BackendMessage::CopyInResponse),
                copy_format().prop_map(BackendMessage::CopyOutResponse),
                copy_format().prop_map(BackendMessage::CopyBothResponse),
                bytes().prop_map(BackendMessage::CopyData),
                Just(BackendMessage::CopyDone),
                (any::<u32>(), proptest::collection::vec(text(), 0..3))
                    .prop_map(|(newest_minor, unrecognized)| BackendMessage::NegotiateProtocolVersion { newest_minor, unrecognized }),
            ]
        }

        proptest! {
            #[test]
            fn encode_decode_round_trip(msgs in proptest::collection::vec(message(), 1..6), cut in any::<prop::sample::Index>()) {
                let mut wire = BytesMut::new();
                for m in &msgs {
                    m.encode(&mut wire);
                }
                // Deliver the bytes in two pieces split anywhere.
                let cut = cut.index(wire.len() + 1);
                let mut buf = BytesMut::from(&wire[..cut]);
                let mut got = Vec::new();
                while let Some(m) = decode_backend(&mut buf, 1 << 20).unwrap() { got.push(m); }
                buf.extend_from_slice(&wire[cut..]);
                while let Some(m) = decode_backend(&mut buf, 1 << 20).unwrap() { got.push(m); }
                prop_assert_eq!(got, msgs);
                prop_assert!(buf.is_empty());
            }

            #[test]
            fn arbitrary_bytes_never_panic_nor_overconsume(data in proptest::collection::vec(any::<u8>(), 0..256)) {
                let mut buf = BytesMut::from(&data[..]);
                let mut consumed = 0;
                loop {
                    let before = buf.len();
                    match decode_backend(&mut buf, 1 << 16) {
                        Ok(Some(_)) => { prop_assert!(buf.len() < before); consumed += before - buf.len(); }
                        Ok(None) | Err(_) => break,
                    }
                }
                prop_assert!(consumed <= data.len());
            }
        }
    }
}
