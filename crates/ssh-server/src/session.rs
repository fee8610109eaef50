//! One connection: authentication policy and session channels (PTY, shell, exec, env,
//! signals, window changes, SFTP), each channel's child process and the tasks that move bytes
//! between it and the client.
//!
//! Authentication never touches users' files here: the account (passwd entry, shell check,
//! `authorized_keys`) is loaded by the `account` module, as the user, off the runtime.
//!
//! Teardown: every channel owns a `watch` sender that is dropped when the channel closes or the
//! connection ends; its tasks see that, send `SIGHUP` to the child's process group (every child
//! leads its own session), `SIGKILL` after a grace period, and reap the child. Children are held
//! by pidfds ([`SessionProcess`]): no signal ever goes to a pid after its child was reaped.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use russh::keys::{Algorithm, HashAlg, PublicKey};
use russh::server::{Auth, Handle, Msg, PublicKeyOffer, Session, VerifiedPublicKey};
use russh::{Channel, ChannelId, ChannelOpenFailure, Pty, Sig};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::sync::{mpsc, watch};

use crate::account::{self, LoadRequest};
use crate::authorized_keys::{self, AuthorizedKey, KeyOptions};
use crate::config::SftpSubsystem;
use crate::process::{self, Exit, Program, SessionProcess, SpawnRequest};
use crate::pty::{self, PtyPair, WindowSize};
use crate::server::{InputGate, Shared, StartupSlot};
use crate::users::User;

/// Output is read from children in chunks of this size (the SSH packet size).
const CHUNK: usize = 32 * 1024;
/// After a PTY session's process exits, output still arriving is forwarded until the
/// terminal has been quiet this long (or is closed by all its holders).
const PTY_DRAIN_QUIET: Duration = Duration::from_millis(100);
/// …but not longer than this.
const PTY_DRAIN_MAX: Duration = Duration::from_secs(2);

/// The authenticated user and the options of the key that let them in.
struct Authed {
    user: User,
    options: KeyOptions,
}

struct PendingPty {
    pair: PtyPair,
    term: String,
}

struct ChannelState {
    /// Dropped when the channel goes away: tells its tasks to stop.
    _closed: watch::Sender<()>,
    closed_rx: watch::Receiver<()>,
    env: Vec<(String, String)>,
    pty: Option<PendingPty>,
    master: Option<Arc<AsyncFd<OwnedFd>>>,
    stdin: Option<mpsc::UnboundedSender<Vec<u8>>>,
    process: Option<Arc<SessionProcess>>,
    started: bool,
}

impl ChannelState {
    fn new() -> ChannelState {
        let (tx, rx) = watch::channel(());
        ChannelState {
            _closed: tx,
            closed_rx: rx,
            env: Vec::new(),
            pty: None,
            master: None,
            stdin: None,
            process: None,
            started: false,
        }
    }
}

enum Start {
    Shell,
    Exec(Vec<u8>),
    Subsystem(String),
}

/// russh handler for one connection.
pub(crate) struct ConnHandler {
    shared: Arc<Shared>,
    peer: SocketAddr,
    local: Option<SocketAddr>,
    authenticated: Arc<AtomicBool>,
    gate: Arc<InputGate>,
    /// Held until authentication succeeds (counts towards MaxStartups).
    unauth_slot: Option<StartupSlot>,
    failures: usize,
    authed: Option<Authed>,
    channels: HashMap<ChannelId, ChannelState>,
}

impl ConnHandler {
    pub fn new(
        shared: Arc<Shared>,
        peer: SocketAddr,
        local: Option<SocketAddr>,
        authenticated: Arc<AtomicBool>,
        gate: Arc<InputGate>,
        unauth_slot: StartupSlot,
    ) -> ConnHandler {
        ConnHandler {
            shared,
            peer,
            local,
            authenticated,
            gate,
            unauth_slot: Some(unauth_slot),
            failures: 0,
            authed: None,
            channels: HashMap::new(),
        }
    }

    /// Counts a failed attempt; `Err` disconnects when a limit is reached.
    fn failed(&mut self, user: &str, method: &str, why: &str) -> Result<Auth, russh::Error> {
        self.failures += 1;
        let may_go_on = self.shared.record_failure(self.peer.ip());
        // `?user`: the name comes from the network; Debug escapes control characters.
        tracing::warn!(peer = %self.peer, user = ?user, method, "authentication refused: {why}");
        if !may_go_on {
            tracing::warn!(peer = %self.peer, "too many authentication failures from this source; disconnecting");
            return Err(russh::Error::Disconnect);
        }
        if self.failures >= self.shared.config.limits.max_auth_attempts {
            tracing::warn!(peer = %self.peer, failures = self.failures,
                "too many authentication failures on this connection; disconnecting");
            return Err(russh::Error::Disconnect);
        }
        Ok(Auth::reject())
    }

    /// Checks the offered key and algorithm, then loads the account (off the runtime, as the
    /// user: see the `account` module) and finds the key in its files or the provider.
    async fn check(
        &self,
        user: &str,
        key: &PublicKey,
        algorithm: &Algorithm,
    ) -> Result<(User, AuthorizedKey), String> {
        match algorithm {
            Algorithm::Ed25519 | Algorithm::Ecdsa { .. } => {}
            Algorithm::Rsa {
                hash: Some(HashAlg::Sha256 | HashAlg::Sha512),
            } => {}
            other => {
                return Err(format!(
                    "signature algorithm {} not accepted",
                    other.as_str()
                ));
            }
        }
        authorized_keys::check_key(key.key_data()).map_err(|e| e.to_string())?;
        let cfg = &self.shared.config;
        let req = LoadRequest {
            name: user.to_string(),
            passwd_path: cfg.passwd_path.clone(),
            group_path: cfg.group_path.clone(),
            shell_override: cfg.shell_override.clone(),
            authorized_keys_files: cfg.authorized_keys_files.clone(),
        };
        let acct = account::load(req, &self.shared.accounts)
            .await
            .map_err(|e| crate::error_chain(&e))?;
        let found = acct.keys.into_iter().find(|k| k.matches(key)).or_else(|| {
            let provider = cfg.authorized_keys_provider.as_ref()?;
            authorized_keys::keys_from_text(&provider(&acct.user), "provider")
                .into_iter()
                .find(|k| k.matches(key))
        });
        match found {
            Some(k) => Ok((acct.user, k)),
            None => Err(format!(
                "key {} not authorized",
                key.fingerprint(HashAlg::Sha256)
            )),
        }
    }

    fn connection_string(&self) -> String {
        let (lip, lport) = match self.local {
            Some(l) => (l.ip().to_string(), l.port()),
            None => ("0.0.0.0".into(), 0),
        };
        format!("{} {} {} {}", self.peer.ip(), self.peer.port(), lip, lport)
    }

    fn start(
        &mut self,
        ch: ChannelId,
        what: Start,
        session: &mut Session,
    ) -> Result<(), russh::Error> {
        let handle = session.handle();
        match self.try_start(ch, what, handle) {
            Ok(()) => session.channel_success(ch),
            Err(why) => {
                tracing::warn!(peer = %self.peer, "session request refused: {why}");
                session.channel_failure(ch)
            }
        }
    }

    fn try_start(&mut self, ch: ChannelId, what: Start, handle: Handle) -> Result<(), String> {
        let Some(auth) = &self.authed else {
            return Err("not authenticated".into());
        };
        let connection = self.connection_string();
        let cfg = &self.shared.config;
        let Some(state) = self.channels.get_mut(&ch) else {
            return Err("no such channel".into());
        };
        if state.started {
            return Err("channel already runs a program".into());
        }
        let (program, original) = match (&auth.options.command, what) {
            (Some(forced), Start::Exec(cmd)) => (
                Program::ShellCommand(forced.into()),
                Some(process::command_from_bytes(&cmd)),
            ),
            (Some(forced), Start::Subsystem(name)) => {
                (Program::ShellCommand(forced.into()), Some(name.into()))
            }
            (Some(forced), Start::Shell) => (Program::ShellCommand(forced.into()), None),
            (None, Start::Exec(cmd)) => (
                Program::ShellCommand(process::command_from_bytes(&cmd)),
                None,
            ),
            (None, Start::Shell) => (Program::LoginShell, None),
            (None, Start::Subsystem(name)) => match (&cfg.sftp, name.as_str()) {
                (
                    SftpSubsystem::Command {
                        program,
                        args,
                        argv0,
                    },
                    "sftp",
                ) => (
                    Program::Direct {
                        program: program.clone(),
                        args: args.clone(),
                        argv0: argv0.clone(),
                    },
                    None,
                ),
                (_, other) => return Err(format!("subsystem {other:?} not available")),
            },
        };
        let shell = account::session_shell(&auth.user, cfg.shell_override.as_deref());
        let mut master = None;
        let tty = state.pty.take().map(|p| {
            master = Some(p.pair.master);
            process::ChildTty {
                term: p.term,
                name: p.pair.name,
                slave: p.pair.slave,
            }
        });
        let spawned = process::build_command(SpawnRequest {
            user: &auth.user,
            shell: &shell,
            program: program.clone(),
            client_env: &state.env,
            pty: tty,
            connection,
            original_command: original,
        })
        .and_then(|mut cmd| {
            // `cmd` is dropped on return: that closes our copies of the pty's slave side, so
            // the master sees end-of-file once the child's are closed too.
            SessionProcess::spawn(&mut cmd)
        });
        let (proc, mut child) = spawned.map_err(|e| {
            let exe = match &program {
                Program::Direct { program, .. } => program.display().to_string(),
                _ => shell.display().to_string(),
            };
            format!("cannot start {exe} as {}: {e}", auth.user.name)
        })?;
        let proc = Arc::new(proc);
        let pid = proc.pid();
        // Command lines may carry secrets: only their kind at info level.
        let kind = match &program {
            Program::LoginShell => "shell",
            Program::ShellCommand(_) if auth.options.command.is_some() => "forced-command",
            Program::ShellCommand(_) => "exec",
            Program::Direct { .. } => "sftp",
        };
        tracing::info!(peer = %self.peer, user = %auth.user.name, pid, kind,
            pty = master.is_some(), "session started");
        tracing::debug!(pid, program = ?program, "session program");
        state.started = true;
        state.process = Some(proc.clone());
        let (tx, rx) = mpsc::unbounded_channel();
        state.stdin = Some(tx);
        let closed = state.closed_rx.clone();
        let gate = self.gate.clone();
        match master {
            Some(m) => {
                let m = match crate::sys::register_fd(m) {
                    Ok(m) => Arc::new(m),
                    Err(e) => {
                        hang_up(proc);
                        return Err(format!("pty registration: {e}"));
                    }
                };
                state.master = Some(m.clone());
                tokio::spawn(pump_stdin(rx, Sink::Pty(m.clone()), gate, closed.clone()));
                tokio::spawn(run_pty(handle, ch, proc, m, closed));
            }
            None => {
                let pipes = (child.stdin.take(), child.stdout.take(), child.stderr.take());
                let (Some(stdin), Some(stdout), Some(stderr)) = pipes else {
                    hang_up(proc);
                    return Err("child without pipes".into());
                };
                let registered = (|| {
                    Ok::<_, std::io::Error>((
                        process::async_fd(stdin.into(), Interest::WRITABLE)?,
                        process::async_fd(stdout.into(), Interest::READABLE)?,
                        process::async_fd(stderr.into(), Interest::READABLE)?,
                    ))
                })();
                let (stdin, stdout, stderr) = match registered {
                    Ok(p) => p,
                    Err(e) => {
                        hang_up(proc);
                        return Err(format!("pipe registration: {e}"));
                    }
                };
                tokio::spawn(pump_stdin(rx, Sink::Pipe(stdin), gate, closed.clone()));
                tokio::spawn(run_pipes(handle, ch, proc, stdout, stderr, closed));
            }
        }
        Ok(())
    }
}

impl Drop for ConnHandler {
    fn drop(&mut self) {
        if !self.channels.is_empty() {
            tracing::debug!(peer = %self.peer, channels = self.channels.len(), "connection teardown");
        }
    }
}

impl russh::server::Handler for ConnHandler {
    type Error = russh::Error;

    async fn auth_none(&mut self, _user: &str) -> Result<Auth, Self::Error> {
        Ok(Auth::reject())
    }

    async fn auth_password(&mut self, user: &str, _password: &str) -> Result<Auth, Self::Error> {
        self.failed(user, "password", "password authentication is disabled")
    }

    async fn auth_keyboard_interactive<'a>(
        &'a mut self,
        user: &str,
        _submethods: &str,
        _response: Option<russh::server::Response<'a>>,
    ) -> Result<Auth, Self::Error> {
        self.failed(
            user,
            "keyboard-interactive",
            "keyboard-interactive authentication is disabled",
        )
    }

    async fn auth_publickey_offered(
        &mut self,
        user: &str,
        offer: PublicKeyOffer<'_>,
    ) -> Result<Auth, Self::Error> {
        match self.check(user, offer.public_key, offer.algorithm).await {
            Ok(_) => Ok(Auth::Accept),
            Err(why) => self.failed(user, "publickey", &why),
        }
    }

    async fn auth_publickey(
        &mut self,
        user: &str,
        key: VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        match self.check(user, key.public_key, key.algorithm).await {
            Ok((u, k)) => {
                tracing::info!(peer = %self.peer, user = %u.name, algorithm = key.algorithm.as_str(),
                    fingerprint = %key.public_key.fingerprint(HashAlg::Sha256),
                    forced_command = k.options.command.is_some(), "accepted publickey");
                self.authed = Some(Authed {
                    user: u,
                    options: k.options,
                });
                Ok(Auth::Accept)
            }
            Err(why) => self.failed(user, "publickey", &why),
        }
    }

    async fn auth_openssh_certificate(
        &mut self,
        user: &str,
        _certificate: &russh::keys::Certificate,
    ) -> Result<Auth, Self::Error> {
        self.failed(user, "publickey", "certificates are not accepted")
    }

    async fn auth_succeeded(&mut self, _session: &mut Session) -> Result<(), Self::Error> {
        self.authenticated.store(true, Ordering::Release);
        self.unauth_slot = None;
        Ok(())
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: russh::server::ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        let max = self.shared.config.limits.max_sessions_per_connection;
        if self.authed.is_none() || self.channels.len() >= max {
            tracing::warn!(peer = %self.peer, open = self.channels.len(), "session channel refused");
            reply.reject(ChannelOpenFailure::ResourceShortage).await;
            return Ok(());
        }
        self.channels.insert(channel.id(), ChannelState::new());
        // The handler callbacks carry everything; the stream-style Channel is not used.
        drop(channel);
        reply.accept().await;
        Ok(())
    }

    async fn channel_close(
        &mut self,
        ch: ChannelId,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.channels.remove(&ch);
        Ok(())
    }

    async fn channel_eof(
        &mut self,
        ch: ChannelId,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        if let Some(state) = self.channels.get_mut(&ch) {
            // Closing the queue: the writer finishes what is queued, then closes the child's stdin.
            state.stdin = None;
        }
        Ok(())
    }

    async fn data(
        &mut self,
        ch: ChannelId,
        data: &[u8],
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        if let Some(tx) = self.channels.get(&ch).and_then(|s| s.stdin.as_ref()) {
            self.gate.add(data.len());
            if tx.send(data.to_vec()).is_err() {
                self.gate.consumed(data.len());
            }
        }
        Ok(())
    }

    async fn pty_request(
        &mut self,
        ch: ChannelId,
        term: &str,
        col_width: u32,
        row_height: u32,
        pix_width: u32,
        pix_height: u32,
        modes: &[(Pty, u32)],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let no_pty = self
            .authed
            .as_ref()
            .map(|a| a.options.no_pty)
            .unwrap_or(true);
        let Some(state) = self.channels.get_mut(&ch) else {
            return session.channel_failure(ch);
        };
        if no_pty || state.started || state.pty.is_some() || term.len() > 256 {
            tracing::info!(peer = %self.peer, no_pty, "pty request refused");
            return session.channel_failure(ch);
        }
        let size = WindowSize {
            cols: col_width,
            rows: row_height,
            px_width: pix_width,
            px_height: pix_height,
        };
        match pty::open_pty(size) {
            Ok(pair) => {
                if let Err(e) = pty::apply_modes(&pair.slave, modes) {
                    tracing::debug!(error = %e, "terminal modes not applied");
                }
                state.pty = Some(PendingPty {
                    pair,
                    term: term.to_string(),
                });
                session.channel_success(ch)
            }
            Err(e) => {
                tracing::warn!(peer = %self.peer, error = %e, "cannot allocate a pty");
                session.channel_failure(ch)
            }
        }
    }

    async fn x11_request(
        &mut self,
        ch: ChannelId,
        _single: bool,
        _proto: &str,
        _cookie: &str,
        _screen: u32,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_failure(ch)
    }

    async fn env_request(
        &mut self,
        ch: ChannelId,
        name: &str,
        value: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let accepted = self.shared.config.env_accepted(name);
        let Some(state) = self.channels.get_mut(&ch) else {
            return session.channel_failure(ch);
        };
        if !accepted
            || state.started
            || state.env.len() >= process::MAX_ENV_VARS
            || value.len() > process::MAX_ENV_VALUE
            || value.contains('\0')
        {
            tracing::debug!(peer = %self.peer, name, "environment variable refused");
            return session.channel_failure(ch);
        }
        state.env.retain(|(n, _)| n != name);
        state.env.push((name.to_string(), value.to_string()));
        session.channel_success(ch)
    }

    async fn shell_request(
        &mut self,
        ch: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.start(ch, Start::Shell, session)
    }

    async fn exec_request(
        &mut self,
        ch: ChannelId,
        data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        if data.len() > process::MAX_COMMAND || data.contains(&0) {
            tracing::warn!(peer = %self.peer, len = data.len(), "exec request refused");
            return session.channel_failure(ch);
        }
        self.start(ch, Start::Exec(data.to_vec()), session)
    }

    async fn subsystem_request(
        &mut self,
        ch: ChannelId,
        name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.start(ch, Start::Subsystem(name.to_string()), session)
    }

    async fn window_change_request(
        &mut self,
        ch: ChannelId,
        col_width: u32,
        row_height: u32,
        pix_width: u32,
        pix_height: u32,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let size = WindowSize {
            cols: col_width,
            rows: row_height,
            px_width: pix_width,
            px_height: pix_height,
        };
        let Some(state) = self.channels.get(&ch) else {
            return session.channel_failure(ch);
        };
        let result = match (&state.master, &state.pty) {
            (Some(m), _) => pty::set_window_size(m.get_ref(), size),
            (None, Some(p)) => pty::set_window_size(&p.pair.master, size),
            (None, None) => return session.channel_failure(ch),
        };
        match result {
            Ok(()) => session.channel_success(ch),
            Err(e) => {
                tracing::debug!(error = %e, "window change failed");
                session.channel_failure(ch)
            }
        }
    }

    async fn signal(
        &mut self,
        ch: ChannelId,
        signal: Sig,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        let process = self.channels.get(&ch).and_then(|s| s.process.clone());
        if let (Some(p), Some(sig)) = (process, process::signal_of(&signal)) {
            // Through the pidfd: once the child is reaped this reaches nobody (ESRCH).
            if let Err(e) = p.signal(sig) {
                tracing::debug!(pid = p.pid(), error = %e, "signal not delivered");
            }
        }
        Ok(())
    }
}

enum Sink {
    Pipe(AsyncFd<OwnedFd>),
    Pty(Arc<AsyncFd<OwnedFd>>),
}

/// Client data → child. Stops (discarding, so the gate reopens) when the child stops taking
/// input or the channel closes; ends when the client sends EOF.
async fn pump_stdin(
    mut rx: mpsc::UnboundedReceiver<Vec<u8>>,
    sink: Sink,
    gate: Arc<InputGate>,
    mut closed: watch::Receiver<()>,
) {
    let mut broken = false;
    loop {
        let chunk = tokio::select! {
            c = rx.recv() => c,
            _ = closed.changed(), if !broken => { broken = true; continue; }
        };
        let Some(chunk) = chunk else { break };
        if !broken {
            let write = async {
                match &sink {
                    Sink::Pipe(p) => pty::write_all_fd(p, &chunk).await,
                    Sink::Pty(m) => pty::write_all_fd(m, &chunk).await,
                }
            };
            let ok = tokio::select! {
                r = write => r.is_ok(),
                _ = closed.changed() => false,
            };
            broken = !ok;
        }
        gate.consumed(chunk.len());
        if broken {
            rx.close();
        }
    }
    // Dropping the sink closes the child's stdin (pipes); the pty master stays with the reader.
}

/// Sends data unless the channel closes first. `false`: stop (channel or connection gone).
async fn send(
    handle: &Handle,
    ch: ChannelId,
    ext: Option<u32>,
    data: &[u8],
    closed: &mut watch::Receiver<()>,
) -> bool {
    let send = async {
        match ext {
            None => handle.data(ch, data.to_vec()).await.is_ok(),
            Some(code) => handle.extended_data(ch, code, data.to_vec()).await.is_ok(),
        }
    };
    tokio::select! {
        ok = send => ok,
        _ = closed.changed() => false,
    }
}

/// Grace a hung-up session gets before its process group is killed.
const HANGUP_GRACE: Duration = Duration::from_secs(5);

/// The channel or connection went away while the child runs: `SIGHUP` to its process group,
/// `SIGKILL` if it is still there after [`HANGUP_GRACE`], and reap it either way. The group
/// signals are only sent while the child is not reaped (see [`SessionProcess`]).
fn hang_up(proc: Arc<SessionProcess>) {
    proc.signal_group(rustix::process::Signal::HUP);
    tokio::spawn(async move {
        if tokio::time::timeout(HANGUP_GRACE, proc.wait())
            .await
            .is_err()
        {
            proc.signal_group(rustix::process::Signal::KILL);
            let _ = proc.signal(rustix::process::Signal::KILL);
            let _ = proc.wait().await;
        }
    });
}

/// How a session's I/O loop ended.
enum Ended {
    /// The child exited (and was reaped).
    Exited(std::io::Result<Exit>),
    /// The channel closed or the connection went away first.
    Gone,
}

async fn finish(handle: &Handle, ch: ChannelId, exit: std::io::Result<Exit>) {
    let _ = handle.eof(ch).await;
    match exit {
        Ok(Exit::Status(code)) => {
            let _ = handle.exit_status_request(ch, code).await;
        }
        Ok(Exit::Signal(name, core)) => {
            let _ = handle
                .exit_signal_request(ch, process::sig_of(&name), core, String::new(), "en".into())
                .await;
        }
        Err(e) => tracing::warn!(error = %e, "cannot get the exit status"),
    }
    let _ = handle.close(ch).await;
}

/// Child without a terminal: stdout → data, stderr → extended data 1, then exit status.
async fn run_pipes(
    handle: Handle,
    ch: ChannelId,
    proc: Arc<SessionProcess>,
    stdout: AsyncFd<OwnedFd>,
    stderr: AsyncFd<OwnedFd>,
    mut closed: watch::Receiver<()>,
) {
    let ended = pipes_loop(&handle, ch, &proc, &stdout, &stderr, &mut closed).await;
    drop((stdout, stderr));
    match ended {
        Ended::Exited(status) => finish(&handle, ch, status).await,
        Ended::Gone => hang_up(proc),
    }
}

async fn pipes_loop(
    handle: &Handle,
    ch: ChannelId,
    proc: &SessionProcess,
    stdout: &AsyncFd<OwnedFd>,
    stderr: &AsyncFd<OwnedFd>,
    closed: &mut watch::Receiver<()>,
) -> Ended {
    let mut out_buf = vec![0u8; CHUNK];
    let mut err_buf = vec![0u8; CHUNK];
    let (mut out_open, mut err_open) = (true, true);
    // The child is not reaped before its output ends: until then its process group (background
    // jobs holding the pipes) can still be hung up safely.
    while out_open || err_open {
        tokio::select! {
            r = pty::read_fd(stdout, &mut out_buf), if out_open => match r {
                Ok(0) | Err(_) => out_open = false,
                Ok(n) => if !send(handle, ch, None, &out_buf[..n], closed).await {
                    return Ended::Gone;
                },
            },
            r = pty::read_fd(stderr, &mut err_buf), if err_open => match r {
                Ok(0) | Err(_) => err_open = false,
                Ok(n) => if !send(handle, ch, Some(1), &err_buf[..n], closed).await {
                    return Ended::Gone;
                },
            },
            _ = closed.changed() => return Ended::Gone,
        }
    }
    tokio::select! {
        s = proc.wait() => Ended::Exited(s),
        _ = closed.changed() => Ended::Gone,
    }
}

/// Child on a terminal: master → data until the child exits and the terminal goes quiet.
async fn run_pty(
    handle: Handle,
    ch: ChannelId,
    proc: Arc<SessionProcess>,
    master: Arc<AsyncFd<OwnedFd>>,
    mut closed: watch::Receiver<()>,
) {
    match pty_loop(&handle, ch, &proc, &master, &mut closed).await {
        Ended::Exited(status) => finish(&handle, ch, status).await,
        Ended::Gone => hang_up(proc),
    }
    // Whatever still holds the terminal gets a hangup when the last `master` reference (here
    // or in the channel state) is dropped.
}

async fn pty_loop(
    handle: &Handle,
    ch: ChannelId,
    proc: &SessionProcess,
    master: &AsyncFd<OwnedFd>,
    closed: &mut watch::Receiver<()>,
) -> Ended {
    let mut buf = vec![0u8; CHUNK];
    let mut status = None;
    let mut exited_at: Option<tokio::time::Instant> = None;
    loop {
        let drain_left = exited_at.map(|t| {
            PTY_DRAIN_MAX
                .saturating_sub(t.elapsed())
                .min(PTY_DRAIN_QUIET)
        });
        tokio::select! {
            r = pty::read_fd(master, &mut buf) => match r {
                Ok(0) | Err(_) => break,
                Ok(n) => if !send(handle, ch, None, &buf[..n], closed).await {
                    return Ended::Gone;
                },
            },
            s = proc.wait(), if status.is_none() => {
                status = Some(s);
                exited_at = Some(tokio::time::Instant::now());
            }
            () = tokio::time::sleep(drain_left.unwrap_or(Duration::ZERO)), if drain_left.is_some() => break,
            _ = closed.changed() => return Ended::Gone,
        }
    }
    match status {
        Some(s) => Ended::Exited(s),
        None => tokio::select! {
            s = proc.wait() => Ended::Exited(s),
            _ = closed.changed() => Ended::Gone,
        },
    }
}
