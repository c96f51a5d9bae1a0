//! A TCP proxy between barman-rs and a [`Cluster`], for fault-injection tests: what a flaky
//! network does to a connection, done on purpose and on cue.
//!
//! [`Proxy::start`] listens on `127.0.0.1:<ephemeral port>` and forwards every connection it
//! accepts to the cluster's TCP port, one pair of plain threads per connection. The test then
//! switches it between modes at any time; the switch applies to every current and future
//! connection:
//!
//! | call | what the connections see |
//! |---|---|
//! | [`Proxy::pass`] | bytes flow both ways (the initial mode) |
//! | [`Proxy::freeze`] | nothing flows, but every socket stays open: a hung peer or a stuck middlebox. New connections are accepted and frozen too. Bytes already read are held and delivered after [`pass`](Proxy::pass) |
//! | [`Proxy::drop_connections`] | every current connection is closed at once, on both sides (FIN); new ones work as before |
//! | [`Proxy::slow`] | each direction of each connection is throttled to `bytes_per_sec` |
//!
//! TLS, authentication and the replication protocol pass through untouched: the proxy only
//! sees bytes. [`Proxy::conninfo`] is [`Cluster::conninfo`] with the proxy's port.
//!
//! ```no_run
//! # fn main() -> anyhow::Result<()> {
//! use barman_tests::{Cluster, ClusterOptions, Proxy, STREAMING_USER};
//! let pg = Cluster::start(ClusterOptions::new(16))?;
//! let proxy = Proxy::start(&pg)?;
//! let conninfo = proxy.conninfo(STREAMING_USER); // give this to barman-rs
//! proxy.freeze(); // ... barman-rs must notice ...
//! proxy.pass();
//! proxy.drop_connections(); // ... and reconnect ...
//! assert!(proxy.accepted() >= 2);
//! # Ok(()) }
//! ```
//!
//! Dropping the proxy stops accepting and closes every connection.

use std::io::{ErrorKind, Read as _, Write as _};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context as _;

use crate::cluster::Cluster;

/// How often a blocked pump looks at the mode again (a read's timeout).
const POLL: Duration = Duration::from_millis(50);

/// What the proxy does with the bytes of its connections; see the [module docs](self).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyMode {
    /// Forward everything.
    Pass,
    /// Forward nothing; keep every socket open.
    Freeze,
    /// Forward at most this many bytes per second in each direction of each connection.
    Slow {
        /// The rate (at least 1).
        bytes_per_sec: u64,
    },
}

/// A running proxy in front of one cluster. See the [module docs](self).
pub struct Proxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

struct Shared {
    upstream: SocketAddr,
    state: Mutex<State>,
    /// Signalled on every mode change, so frozen pumps wake up at once.
    changed: Condvar,
    accepted: AtomicUsize,
    next_id: AtomicU64,
    closing: AtomicBool,
}

struct State {
    mode: ProxyMode,
    /// The open connections: id → (client side, server side), clones used to shut them.
    conns: Vec<(u64, TcpStream, TcpStream)>,
}

impl Proxy {
    /// Starts a proxy in front of `pg`'s TCP port.
    pub fn start(pg: &Cluster) -> anyhow::Result<Proxy> {
        let upstream: SocketAddr = format!("{}:{}", pg.host(), pg.port()).parse().context("the cluster's address")?;
        Proxy::to(upstream)
    }

    /// Starts a proxy in front of any TCP address.
    pub fn to(upstream: SocketAddr) -> anyhow::Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0").context("binding the proxy to 127.0.0.1:0")?;
        let addr = listener.local_addr().context("the proxy's address")?;
        let shared = Arc::new(Shared {
            upstream,
            state: Mutex::new(State { mode: ProxyMode::Pass, conns: Vec::new() }),
            changed: Condvar::new(),
            accepted: AtomicUsize::new(0),
            next_id: AtomicU64::new(0),
            closing: AtomicBool::new(false),
        });
        let acceptor = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name(format!("proxy-{}", addr.port()))
                .spawn(move || accept_loop(listener, shared))
                .context("starting the proxy's thread")?
        };
        Ok(Proxy { addr, shared, acceptor: Some(acceptor) })
    }

    /// Always `127.0.0.1`.
    pub fn host(&self) -> &'static str {
        "127.0.0.1"
    }

    /// The port to connect to instead of the cluster's.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `host=127.0.0.1 port=<proxy> user=U dbname=postgres`, as [`Cluster::conninfo`].
    pub fn conninfo(&self, user: &str) -> String {
        format!("host={} port={} user={user} dbname=postgres", self.host(), self.port())
    }

    /// Forwards everything again; frozen connections resume where they stopped.
    pub fn pass(&self) {
        self.set_mode(ProxyMode::Pass);
    }

    /// Stops forwarding in both directions while keeping every socket open.
    pub fn freeze(&self) {
        self.set_mode(ProxyMode::Freeze);
    }

    /// Throttles every connection to `bytes_per_sec` in each direction.
    pub fn slow(&self, bytes_per_sec: u64) {
        self.set_mode(ProxyMode::Slow { bytes_per_sec: bytes_per_sec.max(1) });
    }

    /// The current mode.
    pub fn mode(&self) -> ProxyMode {
        self.shared.lock().mode
    }

    /// Closes every current connection on both sides, as a network cut that both ends
    /// notice; the mode is unchanged and new connections are served.
    pub fn drop_connections(&self) {
        let conns = std::mem::take(&mut self.shared.lock().conns);
        for (_, client, server) in conns {
            let _ = client.shutdown(Shutdown::Both);
            let _ = server.shutdown(Shutdown::Both);
        }
        self.shared.changed.notify_all();
    }

    /// How many connections the proxy has accepted so far (a reconnection shows as one more).
    pub fn accepted(&self) -> usize {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// How many connections are open now.
    pub fn open_connections(&self) -> usize {
        self.shared.lock().conns.len()
    }

    fn set_mode(&self, mode: ProxyMode) {
        self.shared.lock().mode = mode;
        self.shared.changed.notify_all();
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.closing.store(true, Ordering::SeqCst);
        // Wake the acceptor, blocked in accept().
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        self.drop_connections();
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panicking pump cannot leave the state half-changed: every update is one assignment.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn forget(&self, id: u64) {
        self.lock().conns.retain(|(i, _, _)| *i != id);
    }

    /// The mode once it is not [`ProxyMode::Freeze`]; `None` if the connection was closed or
    /// the proxy is going away meanwhile.
    fn wait_unfrozen(&self, id: u64) -> Option<ProxyMode> {
        let mut state = self.lock();
        loop {
            if self.closing.load(Ordering::SeqCst) || !state.conns.iter().any(|(i, _, _)| *i == id) {
                return None;
            }
            if state.mode != ProxyMode::Freeze {
                return Some(state.mode);
            }
            state = self.changed.wait_timeout(state, POLL).unwrap_or_else(|e| e.into_inner()).0;
        }
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    for client in listener.incoming() {
        if shared.closing.load(Ordering::SeqCst) {
            return;
        }
        let Ok(client) = client else { continue };
        shared.accepted.fetch_add(1, Ordering::SeqCst);
        let Ok(server) = TcpStream::connect(shared.upstream) else {
            // Nothing to forward to: close, as a refused connection would be.
            continue;
        };
        let _ = client.set_nodelay(true);
        let _ = server.set_nodelay(true);
        let id = shared.next_id.fetch_add(1, Ordering::SeqCst);
        let clones = (client.try_clone(), server.try_clone(), client.try_clone(), server.try_clone());
        let (Ok(c_reg), Ok(s_reg), Ok(c2), Ok(s2)) = clones else { continue };
        shared.lock().conns.push((id, c_reg, s_reg));
        let live = Arc::new(AtomicUsize::new(2));
        for (from, to) in [(client, server), (s2, c2)] {
            let (shared, pump_live) = (shared.clone(), live.clone());
            let spawned = std::thread::Builder::new()
                .name(format!("proxy-conn-{id}"))
                .spawn(move || pump(id, from, to, &shared, &pump_live));
            if spawned.is_err() {
                live.fetch_sub(1, Ordering::SeqCst);
            }
        }
    }
}

/// Copies `from` → `to` under the current mode until either side closes; a closed read side
/// is passed on as a closed write side (the peer sees EOF), an error closes the connection.
/// `live` counts the connection's pumps still running: the last one out forgets it.
fn pump(id: u64, mut from: TcpStream, mut to: TcpStream, shared: &Shared, live: &AtomicUsize) {
    let _ = from.set_read_timeout(Some(POLL));
    let mut buf = vec![0u8; 64 * 1024];
    let close_all = |from: &TcpStream, to: &TcpStream| {
        let _ = from.shutdown(Shutdown::Both);
        let _ = to.shutdown(Shutdown::Both);
        shared.forget(id);
    };
    loop {
        // Frozen: stop reading, so the sender's buffers fill as with a stuck peer.
        if shared.wait_unfrozen(id).is_none() {
            return close_all(&from, &to);
        }
        let n = match from.read(&mut buf) {
            Ok(0) => {
                // Half-closed: the other direction may still have bytes to deliver.
                let _ = to.shutdown(Shutdown::Write);
                if live.fetch_sub(1, Ordering::SeqCst) == 1 {
                    shared.forget(id);
                }
                return;
            }
            Ok(n) => n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted) => continue,
            Err(_) => return close_all(&from, &to),
        };
        let mut rest = &buf[..n];
        while !rest.is_empty() {
            let Some(mode) = shared.wait_unfrozen(id) else { return close_all(&from, &to) };
            let chunk = match mode {
                ProxyMode::Slow { bytes_per_sec } => {
                    // Tenths of a second's worth at a time, so a mode change applies quickly.
                    let take = rest.len().min((bytes_per_sec / 10).max(1) as usize);
                    let started = Instant::now();
                    if to.write_all(&rest[..take]).is_err() {
                        return close_all(&from, &to);
                    }
                    let due = Duration::from_secs_f64(take as f64 / bytes_per_sec as f64);
                    std::thread::sleep(due.saturating_sub(started.elapsed()));
                    take
                }
                _ => {
                    if to.write_all(rest).is_err() {
                        return close_all(&from, &to);
                    }
                    rest.len()
                }
            };
            rest = &rest[chunk..];
        }
    }
}
