//! ErrorResponse and NoticeResponse bodies: a list of `byte1 code` + `string\0` fields ended
//! by a zero byte (reference §1.6).

use std::fmt;

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// How bad a server message is, from the never-localised `V` field (or `S` before 9.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// ERROR: the command failed; the session goes on.
    Error,
    /// FATAL: the session is over.
    Fatal,
    /// PANIC: the server is restarting.
    Panic,
    /// WARNING, NOTICE, DEBUG, INFO, LOG, or anything else: informational.
    Notice,
}

/// A server-reported error or notice, with the fields an operator needs to act on.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DbError {
    /// Severity as sent (`V`, falling back to the localised `S`).
    pub severity: String,
    /// The five-character SQLSTATE (`C`), e.g. `28P01` for a wrong password.
    pub code: String,
    /// The primary message (`M`).
    pub message: String,
    /// Detail (`D`).
    pub detail: Option<String>,
    /// Hint (`H`).
    pub hint: Option<String>,
    /// Every field as received, code and value, in order, so nothing is lost.
    pub fields: Vec<(u8, String)>,
}

impl DbError {
    /// Decodes a field list, consuming it. Returns the name of the missing part on truncation.
    pub(crate) fn parse(buf: &mut Bytes) -> Result<DbError, &'static str> {
        let mut e = DbError::default();
        let mut localized_severity = String::new();
        loop {
            if !buf.has_remaining() {
                return Err("error field list has no terminator");
            }
            let code = buf.get_u8();
            if code == 0 {
                break;
            }
            let nul = buf.iter().position(|&b| b == 0).ok_or("error field value has no terminator")?;
            let value = String::from_utf8_lossy(&buf[..nul]).into_owned();
            buf.advance(nul + 1);
            match code {
                b'V' => e.severity = value.clone(),
                b'S' => localized_severity = value.clone(),
                b'C' => e.code = value.clone(),
                b'M' => e.message = value.clone(),
                b'D' => e.detail = Some(value.clone()),
                b'H' => e.hint = Some(value.clone()),
                _ => {}
            }
            e.fields.push((code, value));
        }
        if e.severity.is_empty() {
            e.severity = localized_severity;
        }
        Ok(e)
    }

    /// Appends the field list, as the server sends it.
    pub(crate) fn encode(&self, out: &mut BytesMut) {
        for (code, value) in &self.fields {
            out.put_u8(*code);
            out.put_slice(value.as_bytes());
            out.put_u8(0);
        }
        out.put_u8(0);
    }

    /// Builds an error from its main fields, as a server would send it (for tests).
    pub fn new(severity: &str, code: &str, message: &str) -> DbError {
        DbError {
            severity: severity.into(),
            code: code.into(),
            message: message.into(),
            detail: None,
            hint: None,
            fields: vec![(b'S', severity.into()), (b'V', severity.into()), (b'C', code.into()), (b'M', message.into())],
        }
    }

    /// The severity class.
    pub fn severity(&self) -> Severity {
        match self.severity.as_str() {
            "ERROR" => Severity::Error,
            "FATAL" => Severity::Fatal,
            "PANIC" => Severity::Panic,
            _ => Severity::Notice,
        }
    }
}

impl fmt::Display for DbError {
    /// `FATAL:  message (SQLSTATE 28P01)`, then `DETAIL:` and `HINT:` lines when present.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.severity, self.message)?;
        if !self.code.is_empty() {
            write!(f, " (SQLSTATE {})", self.code)?;
        }
        if let Some(d) = &self.detail {
            write!(f, "; DETAIL: {d}")?;
        }
        if let Some(h) = &self.hint {
            write!(f, "; HINT: {h}")?;
        }
        Ok(())
    }
}

impl std::error::Error for DbError {}
