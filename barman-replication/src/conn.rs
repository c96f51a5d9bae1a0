//! A connection to PostgreSQL: socket, TLS negotiation, start-up, authentication, and the
//! simple query protocol — for physical replication sessions and for normal SQL sessions.
//!
//! Call order: [`Connection::connect`], then any number of [`Connection::simple_query`] (or
//! the typed commands in [`crate::commands`]), then [`Connection::close`]. Streaming
//! commands (START_REPLICATION, BASE_BACKUP) use the lower-level [`Connection::send_query`],
//! [`Connection::next_message`] and [`Connection::send`].
//!
//! This is the async shell around [`crate::codec`]: it reads bytes, decodes frames and writes
//! encoded messages; protocol decisions are made on typed messages.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use bytes::BytesMut;
use postgres_protocol::authentication::md5_hash;
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};

use crate::codec::{
    decode_backend, frontend, AuthRequest, BackendMessage, ColumnDescription, DataRow, DbError, FrontendMessage,
    DEFAULT_MAX_FRAME,
};
use crate::conninfo::{ChannelBindingMode, ConnConfig, Host, SslMode};
use crate::error::{hint_for, Error, Target};
use crate::{pgpass, tls};

/// What kind of session to start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionKind {
    /// `replication=true`: a physical WAL sender, which accepts only replication commands.
    Physical,
    /// A normal backend for SQL.
    Normal,
}

/// Anything we can speak the protocol over: TCP, a Unix socket, or TLS over TCP.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// One result set of a simple query.
#[derive(Debug, Clone, Default)]
pub struct QueryResult {
    /// The columns (empty for commands without a result set).
    pub columns: Vec<ColumnDescription>,
    /// The rows.
    pub rows: Vec<DataRow>,
    /// The CommandComplete tag, if one arrived.
    pub tag: Option<String>,
}

impl QueryResult {
    /// The text value of `row`'s column `col`, `None` for NULL or out of range.
    pub fn text(&self, row: usize, col: usize) -> Option<&str> {
        let v = self.rows.get(row)?.values.get(col)?.as_ref()?;
        std::str::from_utf8(v).ok()
    }

    /// The index of the column named `name`.
    pub fn column(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == name)
    }
}

/// An open, authenticated connection.
pub struct Connection {
    io: Box<dyn Io>,
    rbuf: BytesMut,
    wbuf: BytesMut,
    target: Target,
    kind: SessionKind,
    tls: bool,
    params: HashMap<String, String>,
    backend_pid: i32,
    /// Bytes read from the socket so far (after TLS): how a caller waiting on a long message
    /// tells a slow link, where bytes still trickle in, from a dead one.
    bytes_received: u64,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("target", &self.target)
            .field("kind", &self.kind)
            .field("tls", &self.tls)
            .field("backend_pid", &self.backend_pid)
            .finish_non_exhaustive()
    }
}

/// How one connection attempt transports its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transport {
    Plain,
    Tls,
}

impl Connection {
    /// Connects to the first host of `config` that accepts us, as libpq does.
    ///
    /// With several hosts, each is tried in turn and the last error is returned. Within one
    /// host, `sslmode=prefer` tries TLS and then plain text, `allow` the reverse; a refused
    /// password ends the attempt at once rather than being tried twice.
    pub async fn connect(config: &ConnConfig, kind: SessionKind) -> Result<Connection, Error> {
        let user = config.user.clone().unwrap_or_else(os_user);
        let mut last = None;
        for (host, port) in config.targets() {
            let target = Target { host: host.to_string(), port, user: user.clone() };
            let transports: &[Transport] = match (&host, config.sslmode) {
                // libpq never uses TLS over Unix sockets, whatever sslmode says.
                (Host::Unix(_), _) | (_, SslMode::Disable) => &[Transport::Plain],
                (_, SslMode::Allow) => &[Transport::Plain, Transport::Tls],
                (_, SslMode::Prefer) => &[Transport::Tls, Transport::Plain],
                _ => &[Transport::Tls],
            };
            for &transport in transports {
                let attempt = Self::connect_one(config, kind, &host, port, &target, transport);
                let result = match config.connect_timeout {
                    Some(after) => tokio::time::timeout(after, attempt)
                        .await
                        .unwrap_or_else(|_| Err(Error::Timeout { target: target.clone(), after })),
                    None => attempt.await,
                };
                match result {
                    Ok(conn) => return Ok(conn),
                    // A wrong password or a missing one will not improve on another transport.
                    Err(e @ (Error::NoPassword { .. } | Error::Scram { .. } | Error::ChannelBindingRequired { .. })) => {
                        return Err(e)
                    }
                    Err(e) if e.sqlstate() == Some("28P01") => return Err(e),
                    Err(e) => last = Some(e),
                }
            }
        }
        Err(last.expect("targets() always yields at least one host"))
    }

    async fn connect_one(
        config: &ConnConfig,
        kind: SessionKind,
        host: &Host,
        port: u16,
        target: &Target,
        transport: Transport,
    ) -> Result<Connection, Error> {
        let connect_err = |source| Error::Connect { target: target.clone(), source };
        let (io, cb_hash): (Box<dyn Io>, Option<Vec<u8>>) = match host {
            Host::Unix(dir) => {
                let path = socket_path(dir, port);
                (Box::new(UnixStream::connect(&path).await.map_err(connect_err)?), None)
            }
            Host::Tcp(name) => {
                let mut tcp = TcpStream::connect((name.as_str(), port)).await.map_err(connect_err)?;
                tcp.set_nodelay(true).map_err(connect_err)?;
                if transport == Transport::Tls {
                    let tls_config = tls::client_config(config.sslmode, config.sslrootcert.as_deref())
                        .map_err(|source| Error::TlsSetup { target: target.clone(), source })?;
                    let mut req = BytesMut::new();
                    frontend::ssl_request(&mut req);
                    let io_err = |source| Error::Io { target: target.clone(), source };
                    tcp.write_all(&req).await.map_err(io_err)?;
                    let mut answer = [0u8; 1];
                    tcp.read_exact(&mut answer).await.map_err(io_err)?;
                    match answer[0] {
                        b'S' => {}
                        b'N' => return Err(Error::TlsRefused { target: target.clone(), mode: config.sslmode.as_str() }),
                        other => {
                            return Err(Error::Unexpected {
                                target: target.clone(),
                                what: format!("answer 0x{other:02x} to SSLRequest"),
                            })
                        }
                    }
                    let connector = tokio_rustls::TlsConnector::from(tls_config);
                    let stream = connector
                        .connect(tls::server_name(name), tcp)
                        .await
                        .map_err(|source| Error::TlsHandshake { target: target.clone(), source })?;
                    let cb = stream
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|c| c.first())
                        .and_then(|c| tls::channel_binding_hash(c));
                    (Box::new(stream), cb)
                } else {
                    (Box::new(tcp), None)
                }
            }
        };
        let mut conn = Connection {
            io,
            rbuf: BytesMut::with_capacity(8192),
            bytes_received: 0,
            wbuf: BytesMut::with_capacity(1024),
            target: target.clone(),
            kind,
            tls: transport == Transport::Tls,
            params: HashMap::new(),
            backend_pid: 0,
        };
        conn.startup(config, host, port, cb_hash).await?;
        Ok(conn)
    }

    async fn startup(&mut self, config: &ConnConfig, host: &Host, port: u16, cb_hash: Option<Vec<u8>>) -> Result<(), Error> {
        let user = self.target.user.clone();
        let dbname = config.dbname.clone().unwrap_or_else(|| user.clone());
        let app = config.application_name.clone().or_else(|| config.fallback_application_name.clone());
        let mut params: Vec<(&str, &str)> = vec![("user", &user), ("client_encoding", "UTF8")];
        match self.kind {
            SessionKind::Physical => params.extend([("replication", "true"), ("database", "replication")]),
            SessionKind::Normal => params.push(("database", &dbname)),
        }
        if let Some(app) = &app {
            params.push(("application_name", app));
        }
        if let Some(o) = &config.options {
            params.push(("options", o));
        }
        frontend::startup(&params, &mut self.wbuf).map_err(|source| self.protocol(source))?;
        self.flush().await?;

        // The password is looked up only when the server asks for one.
        let pg_database = match self.kind {
            SessionKind::Physical => "replication".to_owned(),
            SessionKind::Normal => dbname.clone(),
        };
        let target = self.target.clone();
        let password = || -> Result<String, Error> {
            if let Some(p) = &config.password {
                return Ok(p.clone());
            }
            let file = config.passfile.clone().or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".pgpass")));
            let host = match host {
                Host::Unix(_) => "localhost".to_owned(),
                Host::Tcp(h) => h.clone(),
            };
            file.and_then(|f| pgpass::lookup(&f, &host, port, &pg_database, &user))
                .ok_or_else(|| Error::NoPassword { target: target.clone() })
        };

        let binding_mode = config.channel_binding.unwrap_or_default();
        let require_binding = binding_mode == ChannelBindingMode::Require;
        let refuse = |why| Error::ChannelBindingRequired { target: target.clone(), why };
        let mut scram: Option<ScramSha256> = None;
        // Whether a SCRAM-SHA-256-PLUS exchange was verified (the server proved it knows the
        // password *and* saw our TLS channel).
        let mut bound = false;
        let mut plus_started = false;
        loop {
            match self.next_message().await? {
                BackendMessage::Authentication(req) => match req {
                    AuthRequest::Ok => {
                        if require_binding && !bound {
                            return Err(refuse("the server authenticated the connection without channel binding"));
                        }
                        break;
                    }
                    AuthRequest::CleartextPassword | AuthRequest::Md5Password { .. } if require_binding => {
                        return Err(refuse("the server asks for a password without SCRAM channel binding"));
                    }
                    AuthRequest::CleartextPassword => {
                        let pw = password()?;
                        self.send(&FrontendMessage::Password(pw.into_bytes()))?;
                    }
                    AuthRequest::Md5Password { salt } => {
                        let pw = password()?;
                        let hashed = md5_hash(user.as_bytes(), pw.as_bytes(), salt);
                        self.send(&FrontendMessage::Password(hashed.into_bytes()))?;
                    }
                    AuthRequest::Sasl { mechanisms } => {
                        let plus = mechanisms.iter().any(|m| m == "SCRAM-SHA-256-PLUS");
                        if require_binding {
                            if cb_hash.is_none() {
                                return Err(refuse("the connection is not TLS (channel binding needs sslmode=require or stricter)"));
                            }
                            if !plus {
                                return Err(refuse("the server does not offer SCRAM-SHA-256-PLUS"));
                            }
                        }
                        let pw = password()?;
                        let cb = if binding_mode == ChannelBindingMode::Disable { None } else { cb_hash.as_ref() };
                        let (mechanism, binding) = match (cb, plus) {
                            (Some(hash), true) => ("SCRAM-SHA-256-PLUS", ChannelBinding::tls_server_end_point(hash.clone())),
                            // We could bind but the server offers no PLUS: say so ("y"), which
                            // lets a server that did offer it detect a downgrade.
                            (Some(_), false) => ("SCRAM-SHA-256", ChannelBinding::unrequested()),
                            (None, _) => ("SCRAM-SHA-256", ChannelBinding::unsupported()),
                        };
                        if !mechanisms.iter().any(|m| m == mechanism) {
                            return Err(Error::UnsupportedAuth {
                                target: self.target.clone(),
                                method: format!("SASL ({})", mechanisms.join(", ")),
                            });
                        }
                        plus_started = mechanism == "SCRAM-SHA-256-PLUS";
                        let s = ScramSha256::new(pw.as_bytes(), binding);
                        self.send(&FrontendMessage::SaslInitialResponse {
                            mechanism: mechanism.to_owned(),
                            data: s.message().to_vec(),
                        })?;
                        scram = Some(s);
                    }
                    AuthRequest::SaslContinue(data) => {
                        let s = scram.as_mut().ok_or_else(|| self.unexpected("SASL continue without SASL start"))?;
                        s.update(&data).map_err(|e| Error::Scram { target: self.target.clone(), why: e.to_string() })?;
                        let msg = s.message().to_vec();
                        self.send(&FrontendMessage::SaslResponse(msg))?;
                    }
                    AuthRequest::SaslFinal(data) => {
                        let s = scram.as_mut().ok_or_else(|| self.unexpected("SASL final without SASL start"))?;
                        s.finish(&data).map_err(|e| Error::Scram { target: self.target.clone(), why: e.to_string() })?;
                        bound = plus_started;
                    }
                    AuthRequest::Unsupported { code, .. } => {
                        let method = match code {
                            2 => "Kerberos V5".to_owned(),
                            6 => "SCM credentials".to_owned(),
                            7 | 8 => "GSSAPI".to_owned(),
                            9 => "SSPI".to_owned(),
                            c => format!("code {c}"),
                        };
                        return Err(Error::UnsupportedAuth { target: self.target.clone(), method });
                    }
                },
                BackendMessage::ErrorResponse(error) => return Err(self.server_error(error)),
                BackendMessage::NegotiateProtocolVersion { .. } => {}
                other => return Err(self.unexpected(&format!("message '{}' during authentication", char::from(other.tag())))),
            }
            self.flush().await?;
        }
        loop {
            match self.next_message().await? {
                BackendMessage::BackendKeyData { pid, .. } => self.backend_pid = pid,
                BackendMessage::ReadyForQuery(_) => return Ok(()),
                BackendMessage::ErrorResponse(error) => return Err(self.server_error(error)),
                BackendMessage::NegotiateProtocolVersion { .. } => {}
                other => return Err(self.unexpected(&format!("message '{}' after authentication", char::from(other.tag())))),
            }
        }
    }

    /// Where this connection goes.
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// Whether the session is encrypted.
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// The kind of session.
    pub fn kind(&self) -> SessionKind {
        self.kind
    }

    /// The server process serving this session.
    pub fn backend_pid(&self) -> i32 {
        self.backend_pid
    }

    /// A run-time parameter the server reported (`server_version`, `in_hot_standby`, …).
    pub fn parameter(&self, name: &str) -> Option<&str> {
        self.params.get(name).map(String::as_str)
    }

    /// The server's version as `major * 10000 + minor` (e.g. 150018), from `server_version`.
    pub fn server_version_num(&self) -> u32 {
        self.parameter("server_version").map(parse_server_version).unwrap_or(0)
    }

    /// The server's major version (13 … 18).
    pub fn server_major(&self) -> u32 {
        self.server_version_num() / 10000
    }

    /// Runs one simple query and collects every result set. A server error is returned after
    /// the server is ready again, so the connection stays usable.
    pub async fn simple_query(&mut self, sql: &str) -> Result<Vec<QueryResult>, Error> {
        self.send_query(sql).await?;
        let mut results = Vec::new();
        let mut current: Option<QueryResult> = None;
        let mut error = None;
        loop {
            match self.next_message().await? {
                BackendMessage::RowDescription(columns) => {
                    current = Some(QueryResult { columns, ..Default::default() });
                }
                BackendMessage::DataRow(row) => {
                    current.get_or_insert_with(Default::default).rows.push(row);
                }
                BackendMessage::CommandComplete(tag) => {
                    let mut r = current.take().unwrap_or_default();
                    r.tag = Some(tag);
                    results.push(r);
                }
                BackendMessage::EmptyQueryResponse => {}
                BackendMessage::ErrorResponse(e) => error = Some(e),
                BackendMessage::ReadyForQuery(_) => break,
                BackendMessage::CopyInResponse(_) | BackendMessage::CopyOutResponse(_) | BackendMessage::CopyBothResponse(_) => {
                    return Err(self.unexpected("COPY response to a simple query"));
                }
                other => return Err(self.unexpected(&format!("message '{}' in a query result", char::from(other.tag())))),
            }
        }
        // Some result sets arrive without a CommandComplete (e.g. within BASE_BACKUP on 13/14).
        if let Some(r) = current {
            results.push(r);
        }
        match error {
            Some(e) => Err(self.server_error(e)),
            None => Ok(results),
        }
    }

    /// Sends a Query message and flushes it.
    pub async fn send_query(&mut self, sql: &str) -> Result<(), Error> {
        self.send(&FrontendMessage::Query(sql.to_owned()))?;
        self.flush().await
    }

    /// Queues a message; [`Connection::flush`] sends it.
    pub fn send(&mut self, msg: &FrontendMessage) -> Result<(), Error> {
        frontend::encode(msg, &mut self.wbuf).map_err(|source| self.protocol(source))
    }

    /// Writes every queued message to the socket.
    pub async fn flush(&mut self) -> Result<(), Error> {
        if !self.wbuf.is_empty() {
            let res = self.io.write_all(&self.wbuf).await;
            self.wbuf.clear();
            res.map_err(|source| Error::Io { target: self.target.clone(), source })?;
        }
        self.io.flush().await.map_err(|source| Error::Io { target: self.target.clone(), source })
    }

    /// How many bytes have been read from the server on this connection, including those of a
    /// message not yet complete.
    pub fn bytes_received(&self) -> u64 {
        self.bytes_received
    }

    /// The next message from the server. ParameterStatus updates are recorded and notices
    /// logged, and neither is returned.
    ///
    /// Cancel-safe: dropped before it completes (a `select!` timeout), it loses nothing — the
    /// bytes of a message read so far stay buffered for the next call.
    pub async fn next_message(&mut self) -> Result<BackendMessage, Error> {
        loop {
            match decode_backend(&mut self.rbuf, DEFAULT_MAX_FRAME).map_err(|source| self.protocol(source))? {
                Some(BackendMessage::ParameterStatus { name, value }) => {
                    self.params.insert(name, value);
                }
                Some(BackendMessage::NoticeResponse(n)) => {
                    tracing::info!(target: "barman_replication::server", "{}: {}", self.target, n);
                }
                Some(msg) => return Ok(msg),
                None => {
                    let n = self
                        .io
                        .read_buf(&mut self.rbuf)
                        .await
                        .map_err(|source| Error::Io { target: self.target.clone(), source })?;
                    if n == 0 {
                        return Err(Error::Closed { target: self.target.clone() });
                    }
                    self.bytes_received += n as u64;
                }
            }
        }
    }

    /// Says goodbye (Terminate) and closes the socket.
    pub async fn close(mut self) -> Result<(), Error> {
        self.send(&FrontendMessage::Terminate)?;
        self.flush().await?;
        let _ = self.io.shutdown().await;
        Ok(())
    }

    pub(crate) fn server_error(&self, error: DbError) -> Error {
        let hint = hint_for(&error);
        Error::Server { target: self.target.clone(), error: Box::new(error), hint }
    }

    pub(crate) fn unexpected(&self, what: &str) -> Error {
        Error::Unexpected { target: self.target.clone(), what: what.to_owned() }
    }

    pub(crate) fn protocol(&self, source: crate::codec::CodecError) -> Error {
        Error::Protocol { target: self.target.clone(), source }
    }
}

/// `<dir>/.s.PGSQL.<port>`, or an abstract socket name for a directory starting with `@`.
fn socket_path(dir: &Path, port: u16) -> PathBuf {
    dir.join(format!(".s.PGSQL.{port}"))
}

/// The OS user name, libpq's default role.
fn os_user() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "postgres".to_owned())
}

/// `15.18 (Debian 15.18-0+deb12u1)` → 150018; `18beta1` → 180000; `16.2` → 160002.
pub fn parse_server_version(v: &str) -> u32 {
    let digits = |s: &str| s.chars().take_while(char::is_ascii_digit).collect::<String>().parse::<u32>().ok();
    let mut parts = v.split('.');
    let major = parts.next().and_then(digits).unwrap_or(0);
    let minor = parts.next().and_then(digits).unwrap_or(0);
    major * 10000 + minor
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_versions() {
        assert_eq!(parse_server_version("15.18 (Debian 15.18-0+deb12u1)"), 150018);
        assert_eq!(parse_server_version("18beta1"), 180000);
        assert_eq!(parse_server_version("13.1"), 130001);
        assert_eq!(parse_server_version("garbage"), 0);
    }
}
