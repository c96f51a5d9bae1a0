//! libpq-style connection strings: `host=pg1 port=5432 user=barman dbname=postgres`, or the
//! URI form `postgresql://barman@pg1:5432/postgres?sslmode=verify-full`.
//!
//! Barman's `conninfo` and `streaming_conninfo` options hold these strings, so the same
//! keywords, quoting (`'...'` with `\'` and `\\`), environment fallbacks (`PGHOST`, `PGPORT`,
//! `PGUSER`, `PGPASSWORD`, `PGDATABASE`, `PGSSLMODE`, `PGSSLROOTCERT`, `PGAPPNAME`,
//! `PGCONNECT_TIMEOUT`, `PGPASSFILE`) and defaults as libpq apply. Keywords libpq knows but
//! barman-rs has no use for are accepted and ignored; unknown keywords are an error, as in
//! libpq.
//!
//! A [`ConnConfig`] never prints its password: `Debug` redacts it.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

/// How hard to insist on TLS, and how much of the server's certificate to check
/// (libpq's `sslmode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SslMode {
    /// Never use TLS.
    Disable,
    /// Try without TLS first. barman-rs treats it as `prefer`'s mirror: plain, then TLS.
    Allow,
    /// Try TLS, fall back to plain when the server has none (libpq's default).
    #[default]
    Prefer,
    /// TLS or nothing; the certificate is checked against `sslrootcert` only if that file
    /// exists (libpq's rule), otherwise not at all.
    Require,
    /// TLS, and the certificate must chain to `sslrootcert`.
    VerifyCa,
    /// As `verify-ca`, and the certificate must name the host connected to.
    VerifyFull,
}

impl SslMode {
    /// libpq's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Allow => "allow",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

impl FromStr for SslMode {
    type Err = ConninfoError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "disable" => SslMode::Disable,
            "allow" => SslMode::Allow,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            other => {
                return Err(ConninfoError::InvalidValue {
                    key: "sslmode".into(),
                    value: other.into(),
                    expected: "disable, allow, prefer, require, verify-ca or verify-full",
                })
            }
        })
    }
}

/// Whether SCRAM must bind itself to the TLS channel (libpq's `channel_binding`, PGCHANNELBINDING).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ChannelBindingMode {
    /// Never bind, even when the server offers SCRAM-SHA-256-PLUS.
    Disable,
    /// Bind when the connection is TLS and the server offers it (libpq's default).
    #[default]
    Prefer,
    /// Bind, or refuse the connection: no TLS, no SCRAM-SHA-256-PLUS offered, or a server
    /// that authenticates without SCRAM at all (trust, md5, password) ends the attempt. This
    /// is what protects a password from a man in the middle holding a certificate the
    /// client trusts.
    Require,
}

impl FromStr for ChannelBindingMode {
    type Err = ConninfoError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "disable" => ChannelBindingMode::Disable,
            "prefer" => ChannelBindingMode::Prefer,
            "require" => ChannelBindingMode::Require,
            other => {
                return Err(ConninfoError::InvalidValue {
                    key: "channel_binding".into(),
                    value: other.into(),
                    expected: "disable, prefer or require",
                })
            }
        })
    }
}

/// Where to connect: a TCP host name or address, or a directory holding a Unix socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    /// A host name or IP address.
    Tcp(String),
    /// A directory containing `.s.PGSQL.<port>`.
    Unix(PathBuf),
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Tcp(h) => f.write_str(h),
            Host::Unix(p) => write!(f, "{}", p.display()),
        }
    }
}

/// A connection string, parsed.
#[derive(Clone, PartialEq, Eq)]
pub struct ConnConfig {
    /// Hosts to try in order (libpq accepts a comma-separated list).
    pub hosts: Vec<Host>,
    /// Ports, one per host or one for all.
    pub ports: Vec<u16>,
    /// The role to log in as; defaults to the OS user.
    pub user: Option<String>,
    /// The password; also taken from `PGPASSWORD` or the password file at connect time.
    pub password: Option<String>,
    /// The database for normal sessions (defaults to the user name).
    pub dbname: Option<String>,
    /// TLS policy.
    pub sslmode: SslMode,
    /// The CA bundle for `verify-ca`/`verify-full` (default `~/.postgresql/root.crt`).
    pub sslrootcert: Option<PathBuf>,
    /// SCRAM channel binding policy; `None` = not set (`prefer`, or PGCHANNELBINDING).
    pub channel_binding: Option<ChannelBindingMode>,
    /// The name shown in `pg_stat_replication` and matched against
    /// `synchronous_standby_names`.
    pub application_name: Option<String>,
    /// Used when `application_name` is not set.
    pub fallback_application_name: Option<String>,
    /// Gives up connecting to one host after this long (libpq: at least 2 s; 0 = wait forever).
    pub connect_timeout: Option<Duration>,
    /// The password file (default `~/.pgpass`).
    pub passfile: Option<PathBuf>,
    /// Command-line options for the server (`-c name=value`).
    pub options: Option<String>,
}

impl fmt::Debug for ConnConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnConfig")
            .field("hosts", &self.hosts)
            .field("ports", &self.ports)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("dbname", &self.dbname)
            .field("sslmode", &self.sslmode)
            .field("sslrootcert", &self.sslrootcert)
            .field("channel_binding", &self.channel_binding)
            .field("application_name", &self.application_name)
            .field("connect_timeout", &self.connect_timeout)
            .finish_non_exhaustive()
    }
}

/// The connection string is malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConninfoError {
    /// A `key` without `=value`.
    #[error("missing \"=\" after \"{0}\" in connection info string")]
    MissingEquals(String),
    /// A quoted value without its closing quote.
    #[error("unterminated quoted string in connection info string")]
    Unterminated,
    /// A keyword libpq does not know.
    #[error("invalid connection option \"{0}\"")]
    UnknownKey(String),
    /// A value of the wrong shape.
    #[error("invalid value \"{value}\" for connection option \"{key}\": expected {expected}")]
    InvalidValue {
        /// The keyword.
        key: String,
        /// What was given (never a password).
        value: String,
        /// What would have been accepted.
        expected: &'static str,
    },
    /// A malformed `postgresql://` URI.
    #[error("invalid URI {uri:?}: {why}")]
    InvalidUri {
        /// The URI with any password removed.
        uri: String,
        /// What was wrong.
        why: &'static str,
    },
}

/// libpq keywords that barman-rs accepts but does not act on.
const IGNORED_KEYS: &[&str] = &[
    "hostaddr", "client_encoding", "keepalives", "keepalives_idle", "keepalives_interval",
    "keepalives_count", "tcp_user_timeout", "sslcompression", "sslcert", "sslkey", "sslpassword",
    "sslcrl", "sslcrldir", "sslsni", "requirepeer", "ssl_min_protocol_version",
    "ssl_max_protocol_version", "gssencmode", "krbsrvname", "gsslib", "gssdelegation",
    "service", "target_session_attrs", "load_balance_hosts", "replication",
    "require_auth", "sslnegotiation", "sslcertmode", "min_protocol_version", "max_protocol_version",
];

impl ConnConfig {
    /// An empty configuration: everything from the environment and libpq's defaults.
    pub fn empty() -> ConnConfig {
        ConnConfig {
            hosts: Vec::new(),
            ports: Vec::new(),
            user: None,
            password: None,
            dbname: None,
            sslmode: SslMode::default(),
            sslrootcert: None,
            channel_binding: None,
            application_name: None,
            fallback_application_name: None,
            connect_timeout: None,
            passfile: None,
            options: None,
        }
    }

    /// Parses a key=value string or a `postgresql://` / `postgres://` URI, then fills what it
    /// leaves out from `env` (a lookup such as `|k| std::env::var(k).ok()`).
    pub fn parse_with_env(s: &str, env: impl Fn(&str) -> Option<String>) -> Result<ConnConfig, ConninfoError> {
        let pairs = if s.starts_with("postgresql://") || s.starts_with("postgres://") {
            parse_uri(s)?
        } else {
            parse_keywords(s)?
        };
        let mut cfg = ConnConfig::empty();
        let mut sslmode_set = false;
        for (k, v) in pairs {
            cfg.set(&k, v, &mut sslmode_set)?;
        }
        cfg.apply_env(env, sslmode_set)?;
        Ok(cfg)
    }

    fn set(&mut self, key: &str, value: String, sslmode_set: &mut bool) -> Result<(), ConninfoError> {
        let opt = |v: String| if v.is_empty() { None } else { Some(v) };
        match key {
            "host" => self.hosts = parse_hosts(&value),
            "port" => self.ports = parse_ports(&value)?,
            "user" => self.user = opt(value),
            "password" => self.password = Some(value),
            "dbname" => self.dbname = opt(value),
            "sslmode" => {
                self.sslmode = value.parse()?;
                *sslmode_set = true;
            }
            "sslrootcert" => self.sslrootcert = opt(value).map(PathBuf::from),
            "channel_binding" => self.channel_binding = Some(value.parse()?),
            "application_name" => self.application_name = opt(value),
            "fallback_application_name" => self.fallback_application_name = opt(value),
            "connect_timeout" => self.connect_timeout = parse_timeout(&value)?,
            "passfile" => self.passfile = opt(value).map(PathBuf::from),
            "options" => self.options = opt(value),
            k if IGNORED_KEYS.contains(&k) => {}
            k => return Err(ConninfoError::UnknownKey(k.to_owned())),
        }
        Ok(())
    }

    fn apply_env(&mut self, env: impl Fn(&str) -> Option<String>, sslmode_set: bool) -> Result<(), ConninfoError> {
        let get = |k: &str| env(k).filter(|v| !v.is_empty());
        if self.hosts.is_empty() {
            if let Some(h) = get("PGHOST") {
                self.hosts = parse_hosts(&h);
            }
        }
        if self.ports.is_empty() {
            if let Some(p) = get("PGPORT") {
                self.ports = parse_ports(&p)?;
            }
        }
        if self.user.is_none() {
            self.user = get("PGUSER");
        }
        if self.password.is_none() {
            self.password = env("PGPASSWORD");
        }
        if self.dbname.is_none() {
            self.dbname = get("PGDATABASE");
        }
        if !sslmode_set {
            if let Some(m) = get("PGSSLMODE") {
                self.sslmode = m.parse()?;
            }
        }
        if self.sslrootcert.is_none() {
            self.sslrootcert = get("PGSSLROOTCERT").map(PathBuf::from);
        }
        if self.channel_binding.is_none() {
            if let Some(m) = get("PGCHANNELBINDING") {
                self.channel_binding = Some(m.parse()?);
            }
        }
        if self.application_name.is_none() {
            self.application_name = get("PGAPPNAME");
        }
        if self.connect_timeout.is_none() {
            if let Some(t) = get("PGCONNECT_TIMEOUT") {
                self.connect_timeout = parse_timeout(&t)?;
            }
        }
        if self.passfile.is_none() {
            self.passfile = get("PGPASSFILE").map(PathBuf::from);
        }
        if self.options.is_none() {
            self.options = get("PGOPTIONS");
        }
        Ok(())
    }

    /// The (host, port) pairs to try, in order, with libpq's defaults: the Unix socket
    /// directory `/var/run/postgresql` (Debian's; `/tmp` if that does not exist) and port 5432.
    pub fn targets(&self) -> Vec<(Host, u16)> {
        let hosts = if self.hosts.is_empty() {
            let dir = ["/var/run/postgresql", "/tmp"]
                .into_iter()
                .map(PathBuf::from)
                .find(|d| d.is_dir())
                .unwrap_or_else(|| PathBuf::from("/tmp"));
            vec![Host::Unix(dir)]
        } else {
            self.hosts.clone()
        };
        hosts
            .into_iter()
            .enumerate()
            .map(|(i, h)| {
                let port = match self.ports.len() {
                    0 => 5432,
                    1 => self.ports[0],
                    _ => self.ports.get(i).copied().unwrap_or(5432),
                };
                (h, port)
            })
            .collect()
    }
}

impl FromStr for ConnConfig {
    type Err = ConninfoError;
    /// Parses with the process environment as fallback.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ConnConfig::parse_with_env(s, |k| std::env::var(k).ok())
    }
}

fn parse_hosts(v: &str) -> Vec<Host> {
    v.split(',')
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .map(|h| if h.starts_with('/') || h.starts_with('@') { Host::Unix(PathBuf::from(h)) } else { Host::Tcp(h.to_owned()) })
        .collect()
}

fn parse_ports(v: &str) -> Result<Vec<u16>, ConninfoError> {
    v.split(',')
        .map(|p| {
            p.trim().parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(|| ConninfoError::InvalidValue {
                key: "port".into(),
                value: v.into(),
                expected: "a port number between 1 and 65535",
            })
        })
        .collect()
}

fn parse_timeout(v: &str) -> Result<Option<Duration>, ConninfoError> {
    let secs: i64 = v.trim().parse().map_err(|_| ConninfoError::InvalidValue {
        key: "connect_timeout".into(),
        value: v.into(),
        expected: "a whole number of seconds",
    })?;
    // libpq: zero or negative means wait forever; 1 is raised to 2.
    Ok((secs > 0).then(|| Duration::from_secs(secs.max(2) as u64)))
}

/// Splits `key = value` pairs; values may be single-quoted with backslash escapes.
fn parse_keywords(s: &str) -> Result<Vec<(String, String)>, ConninfoError> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            return Ok(out);
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c.is_whitespace() {
                break;
            }
            key.push(c);
            chars.next();
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.next() != Some('=') {
            return Err(ConninfoError::MissingEquals(key));
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut value = String::new();
        if chars.peek() == Some(&'\'') {
            chars.next();
            loop {
                match chars.next() {
                    None => return Err(ConninfoError::Unterminated),
                    Some('\'') => break,
                    Some('\\') => value.push(chars.next().ok_or(ConninfoError::Unterminated)?),
                    Some(c) => value.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                chars.next();
                if c == '\\' {
                    if let Some(n) = chars.next() {
                        value.push(n);
                    }
                } else {
                    value.push(c);
                }
            }
        }
        out.push((key, value));
    }
}

/// `postgresql://[user[:password]@][host][:port][,...][/dbname][?param=value&...]`
fn parse_uri(uri: &str) -> Result<Vec<(String, String)>, ConninfoError> {
    let redacted = || {
        // Never echo a password back: drop everything between "://" and "@".
        match (uri.find("://"), uri.find('@')) {
            (Some(a), Some(b)) if b > a => format!("{}<redacted>{}", &uri[..a + 3], &uri[b..]),
            _ => uri.to_owned(),
        }
    };
    let bad = |why| ConninfoError::InvalidUri { uri: redacted(), why };
    let rest = uri.split_once("://").map(|(_, r)| r).ok_or_else(|| bad("no scheme"))?;
    let (rest, query) = match rest.split_once('?') {
        Some((r, q)) => (r, Some(q)),
        None => (rest, None),
    };
    let (authority, path) = match rest.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (rest, None),
    };
    let mut out = Vec::new();
    let hostpart = match authority.rsplit_once('@') {
        Some((userinfo, h)) => {
            let (u, p) = match userinfo.split_once(':') {
                Some((u, p)) => (u, Some(p)),
                None => (userinfo, None),
            };
            if !u.is_empty() {
                out.push(("user".into(), percent_decode(u).ok_or_else(|| bad("bad percent-encoding in user"))?));
            }
            if let Some(p) = p {
                out.push(("password".into(), percent_decode(p).ok_or_else(|| bad("bad percent-encoding in password"))?));
            }
            h
        }
        None => authority,
    };
    let mut hosts = Vec::new();
    let mut ports = Vec::new();
    for hp in hostpart.split(',').filter(|s| !s.is_empty()) {
        let (h, p) = if let Some(stripped) = hp.strip_prefix('[') {
            let (h, after) = stripped.split_once(']').ok_or_else(|| bad("unterminated [ in host"))?;
            (h.to_owned(), after.strip_prefix(':'))
        } else {
            match hp.rsplit_once(':') {
                Some((h, p)) => (h.to_owned(), Some(p)),
                None => (hp.to_owned(), None),
            }
        };
        hosts.push(percent_decode(&h).ok_or_else(|| bad("bad percent-encoding in host"))?);
        if let Some(p) = p {
            ports.push(p.to_owned());
        }
    }
    if !hosts.is_empty() && hosts.iter().any(|h| !h.is_empty()) {
        out.push(("host".into(), hosts.join(",")));
    }
    if !ports.is_empty() {
        out.push(("port".into(), ports.join(",")));
    }
    if let Some(db) = path.filter(|p| !p.is_empty()) {
        out.push(("dbname".into(), percent_decode(db).ok_or_else(|| bad("bad percent-encoding in dbname"))?));
    }
    for kv in query.into_iter().flat_map(|q| q.split('&')).filter(|s| !s.is_empty()) {
        let (k, v) = kv.split_once('=').ok_or_else(|| bad("query parameter without '='"))?;
        let k = percent_decode(k).ok_or_else(|| bad("bad percent-encoding in parameter"))?;
        let v = percent_decode(v).ok_or_else(|| bad("bad percent-encoding in parameter"))?;
        out.push((k, v));
    }
    Ok(out)
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<ConnConfig, ConninfoError> {
        ConnConfig::parse_with_env(s, |_| None)
    }

    #[test]
    fn keywords() {
        let c = parse("host=pg1 port=5433 user=barman dbname=postgres application_name=barman_receive_wal sslmode=verify-full sslrootcert=/etc/ca.crt connect_timeout=1").unwrap();
        assert_eq!(c.hosts, vec![Host::Tcp("pg1".into())]);
        assert_eq!(c.ports, vec![5433]);
        assert_eq!(c.user.as_deref(), Some("barman"));
        assert_eq!(c.sslmode, SslMode::VerifyFull);
        assert_eq!(c.sslrootcert, Some(PathBuf::from("/etc/ca.crt")));
        assert_eq!(c.connect_timeout, Some(Duration::from_secs(2)));
        assert_eq!(c.application_name.as_deref(), Some("barman_receive_wal"));
    }

    #[test]
    fn quoting_and_spaces() {
        let c = parse(r"host = /var/run/postgresql password='it\'s a \\secret' user=x\ y").unwrap();
        assert_eq!(c.hosts, vec![Host::Unix("/var/run/postgresql".into())]);
        assert_eq!(c.password.as_deref(), Some(r"it's a \secret"));
        assert_eq!(c.user.as_deref(), Some("x y"));
    }

    #[test]
    fn errors() {
        assert_eq!(parse("host").unwrap_err(), ConninfoError::MissingEquals("host".into()));
        assert_eq!(parse("password='abc").unwrap_err(), ConninfoError::Unterminated);
        assert_eq!(parse("hots=x").unwrap_err(), ConninfoError::UnknownKey("hots".into()));
        assert!(parse("port=70000").unwrap_err().to_string().contains("port"));
        assert!(parse("sslmode=maybe").unwrap_err().to_string().contains("verify-full"));
    }

    #[test]
    fn uri() {
        let c = parse("postgresql://bar%40man:s3cr%3At@[::1]:5433,pg2/db?sslmode=require&application_name=x").unwrap();
        assert_eq!(c.user.as_deref(), Some("bar@man"));
        assert_eq!(c.password.as_deref(), Some("s3cr:t"));
        assert_eq!(c.hosts, vec![Host::Tcp("::1".into()), Host::Tcp("pg2".into())]);
        assert_eq!(c.ports, vec![5433]);
        assert_eq!(c.dbname.as_deref(), Some("db"));
        assert_eq!(c.sslmode, SslMode::Require);
        let err = parse("postgresql://u:hunter2@h/db?x").unwrap_err().to_string();
        assert!(!err.contains("hunter2"), "{err}");
    }

    #[test]
    fn environment_fills_gaps_only() {
        let env = |k: &str| match k {
            "PGHOST" => Some("envhost".to_owned()),
            "PGPORT" => Some("6000".to_owned()),
            "PGPASSWORD" => Some("envpw".to_owned()),
            "PGSSLMODE" => Some("require".to_owned()),
            _ => None,
        };
        let c = ConnConfig::parse_with_env("host=h sslmode=disable", env).unwrap();
        assert_eq!(c.hosts, vec![Host::Tcp("h".into())]);
        assert_eq!(c.ports, vec![6000]);
        assert_eq!(c.password.as_deref(), Some("envpw"));
        assert_eq!(c.sslmode, SslMode::Disable);
        assert_eq!(c.targets(), vec![(Host::Tcp("h".into()), 6000)]);
    }

    #[test]
    fn channel_binding_from_the_string_or_the_environment() {
        assert_eq!(parse("host=h").unwrap().channel_binding, None);
        assert_eq!(parse("channel_binding=require").unwrap().channel_binding, Some(ChannelBindingMode::Require));
        assert_eq!(parse("channel_binding=disable").unwrap().channel_binding, Some(ChannelBindingMode::Disable));
        assert!(parse("channel_binding=always").unwrap_err().to_string().contains("disable, prefer or require"));
        let env = |k: &str| (k == "PGCHANNELBINDING").then(|| "require".to_owned());
        assert_eq!(ConnConfig::parse_with_env("host=h", env).unwrap().channel_binding, Some(ChannelBindingMode::Require));
        let c = ConnConfig::parse_with_env("host=h channel_binding=prefer", env).unwrap();
        assert_eq!(c.channel_binding, Some(ChannelBindingMode::Prefer), "the string wins over the environment");
    }

    #[test]
    fn debug_redacts_password() {
        let c = parse("password=hunter2").unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
