//! Errors of the client side: what failed, against which server and as which user.
//!
//! Every variant names the target (host, port, user) so an operator reading a log line knows
//! where to look. No variant ever holds a password. Variants stay matchable: a caller decides
//! from the kind whether to retry (connection lost), stop (authentication, configuration) or
//! report a server-side refusal.

use std::fmt;
use std::time::Duration;

use crate::codec::{CodecError, DbError};
use crate::conninfo::ConninfoError;
use crate::tls::TlsSetupError;

/// Where a connection went: host (or socket directory), port and user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The host name, address or socket directory.
    pub host: String,
    /// The port.
    pub port: u16,
    /// The role.
    pub user: String,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "server \"{}\" port {} as user \"{}\"", self.host, self.port, self.user)
    }
}

/// A connection or command failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The connection string is malformed.
    #[error("invalid connection string: {0}")]
    Conninfo(#[from] ConninfoError),
    /// TLS could not be configured (missing or unreadable root certificate).
    #[error("{target}: {source}")]
    TlsSetup {
        /// Where we were going.
        target: Target,
        /// Why.
        #[source]
        source: TlsSetupError,
    },
    /// The socket could not be opened.
    #[error("cannot connect to {target}")]
    Connect {
        /// Where.
        target: Target,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Connecting took longer than `connect_timeout`.
    #[error("connection to {target} timed out after {}s", after.as_secs())]
    Timeout {
        /// Where.
        target: Target,
        /// The limit.
        after: Duration,
    },
    /// The server does not accept TLS but sslmode demands it.
    #[error("{target} does not support TLS, but sslmode={mode} requires it")]
    TlsRefused {
        /// Where.
        target: Target,
        /// The sslmode in force.
        mode: &'static str,
    },
    /// The TLS handshake failed (e.g. certificate not signed by the expected CA, or not
    /// valid for the host name).
    #[error("TLS handshake with {target} failed")]
    TlsHandshake {
        /// Where.
        target: Target,
        /// rustls' reason.
        #[source]
        source: std::io::Error,
    },
    /// The server wants a password and none was given.
    #[error("{target}: the server asks for a password and none was supplied (set password in the connection string, PGPASSWORD, or a ~/.pgpass line)")]
    NoPassword {
        /// Where.
        target: Target,
    },
    /// `channel_binding=require`, and the authentication would not be bound to the TLS
    /// channel.
    #[error("{target}: channel_binding=require, but {why}")]
    ChannelBindingRequired {
        /// Where.
        target: Target,
        /// What was missing.
        why: &'static str,
    },
    /// The server asks for an authentication method barman-rs does not implement.
    #[error("{target}: authentication method {method} is not supported")]
    UnsupportedAuth {
        /// Where.
        target: Target,
        /// Its name.
        method: String,
    },
    /// SCRAM failed on our side, e.g. the server's signature did not verify.
    #[error("{target}: SCRAM authentication failed: {why}")]
    Scram {
        /// Where.
        target: Target,
        /// What went wrong.
        why: String,
    },
    /// The server answered with an ErrorResponse.
    #[error("{target}: {error}{}", hint.map(|h| format!(" ({h})")).unwrap_or_default())]
    Server {
        /// Where.
        target: Target,
        /// The server's error, with SQLSTATE (boxed: it is large and errors travel by value).
        error: Box<DbError>,
        /// Advice of ours for errors with a well-known cause.
        hint: Option<&'static str>,
    },
    /// The server sent bytes that are not valid protocol.
    #[error("{target}: protocol violation")]
    Protocol {
        /// Where.
        target: Target,
        /// What the decoder found.
        #[source]
        source: CodecError,
    },
    /// The server sent a valid message we did not expect at this point.
    #[error("{target}: unexpected {what}")]
    Unexpected {
        /// Where.
        target: Target,
        /// What arrived.
        what: String,
    },
    /// A result had the wrong shape for its command.
    #[error("{target}: unexpected result from {command}: {what}")]
    InvalidResult {
        /// Where.
        target: Target,
        /// The command.
        command: String,
        /// What was wrong.
        what: String,
    },
    /// The command needs a newer server.
    #[error("{target}: {what} needs PostgreSQL {needs} or later (server is {server_version})")]
    UnsupportedByServer {
        /// Where.
        target: Target,
        /// The feature.
        what: &'static str,
        /// The minimum major.
        needs: u32,
        /// The server's version string.
        server_version: String,
    },
    /// Reading from or writing to the connection failed.
    #[error("connection to {target} lost")]
    Io {
        /// Where.
        target: Target,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The server closed the connection.
    #[error("{target} closed the connection unexpectedly")]
    Closed {
        /// Where.
        target: Target,
    },
    /// While streaming, nothing at all arrived for the receive timeout, not even an answer
    /// to a status update that asked for one: the peer or the path to it is stuck.
    #[error("connection to {target} timed out: nothing received for {}s", after.as_secs_f64())]
    ReceiveTimeout {
        /// Where.
        target: Target,
        /// The limit.
        after: Duration,
    },
}

impl Error {
    /// The server's error, if that is what this is.
    pub fn db_error(&self) -> Option<&DbError> {
        match self {
            Error::Server { error, .. } => Some(&**error),
            _ => None,
        }
    }

    /// The SQLSTATE of a server error.
    pub fn sqlstate(&self) -> Option<&str> {
        self.db_error().map(|e| e.code.as_str())
    }
}

/// Advice for server errors whose cause is well known, shown after the server's own text.
pub(crate) fn hint_for(error: &DbError) -> Option<&'static str> {
    let m = error.message.as_str();
    match error.code.as_str() {
        "53300" if m.contains("max_wal_senders") => Some(
            "the server allows no more WAL senders: raise max_wal_senders in postgresql.conf and restart it",
        ),
        "28000" if m.contains("pg_hba.conf") && m.contains("replication") => Some(
            "add a 'host replication <user> <address>/<mask> <method>' line to pg_hba.conf and reload the server",
        ),
        "42501" if m.contains("WAL sender") || m.contains("walsender") => {
            Some("the role needs the REPLICATION attribute: ALTER ROLE <user> REPLICATION")
        }
        _ => None,
    }
}
