//! Listening sockets, connection admission (connection limit, per-source failure rate limit,
//! MaxStartups per source and overall, login grace) and the per-connection input gate. One
//! tokio current-thread runtime runs everything; blocking work on users' files runs on
//! throwaway threads (see the `account` module).

use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsFd;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use russh::keys::{Algorithm, EcdsaCurve, HashAlg};
use russh::{MethodKind, MethodSet, Preferred, SshId};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

use crate::SshError;
use crate::account::InFlight;
use crate::config::SshConfig;
use crate::hostkeys::{HostKeyInfo, HostKeys, ensure_host_keys};
use crate::ratelimit::RateLimiter;
use crate::session::ConnHandler;
use crate::startups::{Refusal, Startups};

/// State shared by all connections.
pub(crate) struct Shared {
    pub config: SshConfig,
    pub russh: Arc<russh::server::Config>,
    pub limiter: Mutex<RateLimiter>,
    pub started: Instant,
    pub active: Arc<AtomicUsize>,
    /// Unauthenticated connections, per source and overall.
    pub startups: Mutex<Startups>,
    /// Account loads (passwd, shell, authorized_keys) not finished yet.
    pub accounts: Arc<InFlight>,
    /// Refusals at `accept` are logged at most once a second (a flood must not turn into a
    /// flood of console lines on the runtime thread).
    refusal_log: Mutex<LogThrottle>,
}

impl Shared {
    /// Milliseconds since the server started (the rate limiter's clock).
    pub fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Counts one failure of `ip` in the rate limiter; whether it may go on trying.
    pub fn record_failure(&self, ip: IpAddr) -> bool {
        match self.limiter.lock() {
            Ok(mut l) => l.record_failure(ip, self.now_ms()),
            Err(_) => true,
        }
    }

    /// Logs a refused connection, unless one was logged less than a second ago.
    fn log_refusal(&self, peer: SocketAddr, why: std::fmt::Arguments<'_>) {
        let now = self.now_ms();
        let Ok(mut t) = self.refusal_log.lock() else {
            return;
        };
        if let Some(suppressed) = t.allow(now) {
            tracing::warn!(%peer, suppressed, "connection refused: {why}");
        }
    }
}

/// At most one log line a second; counts what it held back.
#[derive(Debug, Default)]
struct LogThrottle {
    last_ms: Option<u64>,
    suppressed: u64,
}

impl LogThrottle {
    /// `Some(n)`: log now, `n` lines were held back since the last one.
    fn allow(&mut self, now_ms: u64) -> Option<u64> {
        match self.last_ms {
            Some(last) if now_ms.saturating_sub(last) < 1000 => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last_ms = Some(now_ms);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

/// A taken place in a counted pool; gives it back when dropped.
#[derive(Debug)]
pub(crate) struct Slot(Arc<AtomicUsize>);

impl Slot {
    fn take(counter: &Arc<AtomicUsize>) -> Slot {
        counter.fetch_add(1, Ordering::AcqRel);
        Slot(counter.clone())
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// An unauthenticated connection counted in [`Shared::startups`]; released when dropped (at
/// authentication or when the connection ends).
pub(crate) struct StartupSlot {
    shared: Arc<Shared>,
    ip: IpAddr,
}

impl std::fmt::Debug for StartupSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StartupSlot").field("ip", &self.ip).finish()
    }
}

impl Drop for StartupSlot {
    fn drop(&mut self) {
        if let Ok(mut s) = self.shared.startups.lock() {
            s.release(self.ip);
        }
    }
}

/// Client input waiting to be written to children, per connection. Above the high-water mark
/// the connection's socket is not read (TCP pushes back on the client) until the children
/// have consumed it down to the low-water mark. russh re-opens SSH channel windows as soon as
/// data arrives, so this is what bounds the memory a fast sender can make us hold.
#[derive(Debug)]
pub(crate) struct InputGate {
    queued: AtomicUsize,
    high: usize,
    waker: Mutex<Option<Waker>>,
}

impl InputGate {
    pub fn new(high: usize) -> InputGate {
        InputGate {
            queued: AtomicUsize::new(0),
            high: high.max(1),
            waker: Mutex::new(None),
        }
    }

    /// `n` bytes were queued for a child.
    pub fn add(&self, n: usize) {
        self.queued.fetch_add(n, Ordering::AcqRel);
    }

    /// `n` queued bytes were written (or discarded).
    pub fn consumed(&self, n: usize) {
        let before = self.queued.fetch_sub(n, Ordering::AcqRel);
        if before.saturating_sub(n) <= self.high / 2 {
            let waker = self.waker.lock().ok().and_then(|mut w| w.take());
            if let Some(w) = waker {
                w.wake();
            }
        }
    }

    fn paused(&self) -> bool {
        self.queued.load(Ordering::Acquire) > self.high
    }
}

/// Reads during which the socket is kept in TCP quick-ACK mode (the handshake).
const QUICKACK_READS: u8 = 16;

/// The TCP stream as russh sees it: reads pause while the gate is closed.
struct GatedStream {
    inner: TcpStream,
    gate: Arc<InputGate>,
    /// Quick-ACK re-arms left. The OpenSSH client sends its key exchange packets back to back
    /// with Nagle's algorithm on, so its second packet waits for our ACK of the first; a
    /// delayed ACK made about half of all logins 40 ms slower. Linux leaves quick-ACK mode by
    /// itself, so it is set again after every read until the handshake is done.
    quickack: u8,
}

impl GatedStream {
    fn new(inner: TcpStream, gate: Arc<InputGate>) -> GatedStream {
        let mut s = GatedStream {
            inner,
            gate,
            quickack: QUICKACK_READS,
        };
        s.rearm_quickack();
        s
    }

    fn rearm_quickack(&mut self) {
        if self.quickack > 0 {
            self.quickack -= 1;
            let _ = rustix::net::sockopt::set_tcp_quickack(&self.inner, true);
        }
    }
}

impl AsyncRead for GatedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.gate.paused() {
            if let Ok(mut w) = self.gate.waker.lock() {
                *w = Some(cx.waker().clone());
            }
            // Re-check: the consumer may have drained the queue before the waker was stored.
            if self.gate.paused() {
                return Poll::Pending;
            }
        }
        let filled = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > filled {
            self.rearm_quickack();
        }
        r
    }
}

impl AsyncWrite for GatedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A bound server, ready to [`Server::run`].
pub struct Server {
    shared: Arc<Shared>,
    listeners: Vec<std::net::TcpListener>,
    host_keys: Vec<HostKeyInfo>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("listen", &self.local_addrs())
            .field("host_keys", &self.host_keys)
            .finish_non_exhaustive()
    }
}

/// Public key algorithms accepted for client authentication and host keys, strongest first.
/// `ssh-rsa` (RSA with SHA-1) is left out on purpose; RSA keys sign with SHA-2.
pub const KEY_ALGORITHMS: &[Algorithm] = &[
    Algorithm::Ed25519,
    Algorithm::Ecdsa {
        curve: EcdsaCurve::NistP256,
    },
    Algorithm::Ecdsa {
        curve: EcdsaCurve::NistP384,
    },
    Algorithm::Ecdsa {
        curve: EcdsaCurve::NistP521,
    },
    Algorithm::Rsa {
        hash: Some(HashAlg::Sha512),
    },
    Algorithm::Rsa {
        hash: Some(HashAlg::Sha256),
    },
];

fn russh_config(config: &SshConfig, keys: HostKeys) -> russh::server::Config {
    let limits = &config.limits;
    russh::server::Config {
        server_id: SshId::Standard(Cow::Owned(format!(
            "SSH-2.0-virga_{}",
            env!("CARGO_PKG_VERSION")
        ))),
        methods: MethodSet::from(&[MethodKind::PublicKey][..]),
        // Refusals take a constant second (timing must not tell keys or users apart), but the
        // client's opening "none" probe is answered at once: it is not a guess.
        auth_rejection_time: Duration::from_secs(1),
        auth_rejection_time_initial: Some(Duration::ZERO),
        keys: keys.keys,
        max_auth_attempts: limits.max_auth_attempts,
        inactivity_timeout: limits.idle_timeout,
        keepalive_interval: limits.keepalive_interval,
        keepalive_max: limits.keepalive_max,
        preferred: Preferred {
            key: Cow::Borrowed(KEY_ALGORITHMS),
            ..Preferred::default()
        },
        ..russh::server::Config::default()
    }
}

impl Server {
    /// Makes sure the host keys exist (generating them once) and binds the listening sockets.
    pub fn bind(config: SshConfig) -> Result<Server, SshError> {
        if config.listen.is_empty() {
            return Err(SshError::Config("no listen address".into()));
        }
        let keys = ensure_host_keys(&config.host_key_dir, &config.host_keys)?;
        let host_keys = keys.info.clone();
        let mut listeners = Vec::new();
        for addr in &config.listen {
            let l = std::net::TcpListener::bind(addr).map_err(|source| SshError::Bind {
                addr: *addr,
                source,
            })?;
            l.set_nonblocking(true).map_err(|source| SshError::Bind {
                addr: *addr,
                source,
            })?;
            listeners.push(l);
        }
        let shared = Arc::new(Shared {
            russh: Arc::new(russh_config(&config, keys)),
            limiter: Mutex::new(RateLimiter::new(config.limits.auth_rate)),
            started: Instant::now(),
            active: Arc::new(AtomicUsize::new(0)),
            startups: Mutex::new(Startups::new(
                config.limits.max_startups_per_source,
                config.limits.max_startups,
            )),
            accounts: Arc::new(InFlight::default()),
            refusal_log: Mutex::new(LogThrottle::default()),
            config,
        });
        Ok(Server {
            shared,
            listeners,
            host_keys,
        })
    }

    /// The addresses actually bound (useful with port 0).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listeners
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .collect()
    }

    /// The host keys in use, for the console blocks.
    pub fn host_keys(&self) -> &[HostKeyInfo] {
        &self.host_keys
    }

    /// Serves until the process ends. Blocks the calling thread, which runs a tokio
    /// current-thread runtime.
    pub fn run(self) -> Result<(), SshError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .map_err(SshError::Runtime)?;
        rt.block_on(async move {
            let mut tasks = tokio::task::JoinSet::new();
            for l in self.listeners {
                let addr = l.local_addr().ok();
                let listener = TcpListener::from_std(l).map_err(SshError::Runtime)?;
                tracing::info!(addr = ?addr, "sshd listening");
                tasks.spawn(accept_loop(self.shared.clone(), listener));
            }
            while let Some(done) = tasks.join_next().await {
                if let Err(e) = done {
                    tracing::error!(error = %e, "listener task failed");
                }
            }
            Ok(())
        })
    }
}

async fn accept_loop(shared: Arc<Shared>, listener: TcpListener) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning, keep serving.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // Refused connections are closed here, before any byte is sent.
        if let Some(startup) = admit(&shared, peer) {
            let active_slot = Slot::take(&shared.active);
            tokio::spawn(connection(
                shared.clone(),
                stream,
                peer,
                active_slot,
                startup,
            ));
        }
    }
}

/// Connection admission: the connection limit, the source's failure budget, then MaxStartups
/// per source and overall.
fn admit(shared: &Arc<Shared>, peer: SocketAddr) -> Option<StartupSlot> {
    let limits = &shared.config.limits;
    let active = shared.active.load(Ordering::Acquire);
    if active >= limits.max_connections {
        shared.log_refusal(peer, format_args!("max_connections reached ({active})"));
        return None;
    }
    let allowed = match shared.limiter.lock() {
        Ok(mut l) => l.allowed(peer.ip(), shared.now_ms()),
        Err(_) => true,
    };
    if !allowed {
        shared.log_refusal(
            peer,
            format_args!("too many authentication failures from this source"),
        );
        return None;
    }
    let rolls = [rand::random_range(0..100), rand::random_range(0..100)];
    let admitted = match shared.startups.lock() {
        Ok(mut s) => s.admit(peer.ip(), rolls),
        Err(_) => Err(Refusal::Global { current: 0 }),
    };
    match admitted {
        Ok(()) => Some(StartupSlot {
            shared: shared.clone(),
            ip: peer.ip(),
        }),
        Err(Refusal::PerSource { current }) => {
            shared.log_refusal(
                peer,
                format_args!(
                    "MaxStartups per source ({}): {current} unauthenticated from this source",
                    limits.max_startups_per_source
                ),
            );
            None
        }
        Err(Refusal::Global { current }) => {
            shared.log_refusal(
                peer,
                format_args!(
                    "MaxStartups ({}): {current} unauthenticated connections",
                    limits.max_startups
                ),
            );
            None
        }
    }
}

async fn connection(
    shared: Arc<Shared>,
    stream: TcpStream,
    peer: SocketAddr,
    _active: Slot,
    unauth: StartupSlot,
) {
    tracing::debug!(%peer, "connection accepted");
    // Small packets (key exchange, auth, keystrokes) must not wait for Nagle + delayed ACK:
    // without this, about one login in two took 40 ms longer. (russh's `nodelay` setting only
    // applies to its own accept loop, not to `run_stream`.)
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(%peer, error = %e, "cannot set TCP_NODELAY");
    }
    let local = stream.local_addr().ok();
    // A second descriptor for the socket, to shut it down from outside russh.
    let killer = stream
        .as_fd()
        .try_clone_to_owned()
        .ok()
        .map(std::net::TcpStream::from);
    let authenticated = Arc::new(AtomicBool::new(false));
    let gate = Arc::new(InputGate::new(shared.config.limits.max_input_buffer));
    let handler = ConnHandler::new(
        shared.clone(),
        peer,
        local,
        authenticated.clone(),
        gate.clone(),
        unauth,
    );
    let stream = GatedStream::new(stream, gate);
    let russh_config = shared.russh.clone();
    let session = async move {
        let running = russh::server::run_stream(russh_config, stream, handler).await?;
        running.await
    };
    tokio::pin!(session);
    let grace = tokio::time::sleep(shared.config.limits.login_grace);
    let result = tokio::select! {
        r = &mut session => r,
        () = grace => {
            if authenticated.load(Ordering::Acquire) {
                session.await
            } else {
                // Holding connections open until the grace time runs out is what a client
                // does to keep others out: it costs the source like a failed attempt.
                let may_go_on = shared.record_failure(peer.ip());
                tracing::warn!(%peer, may_go_on, "login grace time expired; connection closed");
                if let Some(k) = &killer {
                    let _ = k.shutdown(std::net::Shutdown::Both);
                }
                match tokio::time::timeout(Duration::from_secs(5), &mut session).await {
                    Ok(r) => r,
                    Err(_) => Ok(()),
                }
            }
        }
    };
    match result {
        Ok(()) => tracing::debug!(%peer, "connection closed"),
        Err(russh::Error::Disconnect) => tracing::debug!(%peer, "client disconnected"),
        Err(e) if !authenticated.load(Ordering::Acquire) => {
            tracing::info!(%peer, error = %e, "connection dropped before authentication")
        }
        Err(e) => tracing::info!(%peer, error = %e, "connection ended"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gate_pauses_above_high_water_and_resumes_at_half() {
        let g = InputGate::new(100);
        g.add(100);
        assert!(!g.paused());
        g.add(1);
        assert!(g.paused());
        g.consumed(1);
        assert!(!g.paused());
        g.add(50);
        g.consumed(100);
        assert!(!g.paused());
        assert_eq!(g.queued.load(Ordering::Acquire), 50);
    }

    #[test]
    fn refusal_logs_are_throttled() {
        let mut t = LogThrottle::default();
        assert_eq!(t.allow(0), Some(0));
        assert_eq!(t.allow(10), None);
        assert_eq!(t.allow(999), None);
        assert_eq!(t.allow(1000), Some(2));
        assert_eq!(t.allow(5000), Some(0));
    }

    #[test]
    fn slots_count() {
        let c = Arc::new(AtomicUsize::new(0));
        let a = Slot::take(&c);
        let b = Slot::take(&c);
        assert_eq!(c.load(Ordering::Acquire), 2);
        drop(a);
        drop(b);
        assert_eq!(c.load(Ordering::Acquire), 0);
    }
}
